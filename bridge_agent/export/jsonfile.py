"""The `json` and `jsonl` formats: the canonical model, plus the chosen groups, per product.

A record is the product's canonical dict (`Product.to_dict`: what the agent hashes and ships,
unset fields absent, money as decimal strings, variants nested) with `recorded_at` (when the
agent recorded this state) and, when chosen, `jsonld` (structured) and `history`. Choosing only
`seo` keeps the identity and SEO keys of the model (id, sku, title, url, seo_title,
seo_description, images with their ALT); `basic` is the whole model. A deleted product is
`{"id": ..., "deleted": true, "recorded_at": ...}`.

`json` is one document written as it goes (the catalog is never held whole):
`{"export": {...about it...}, "products": [record, ...], "summary": {...counts...}}`; the summary
comes last because it is known last. `jsonl` is one record per line, nothing else, so that
`tail -n +1 | jq` and line-oriented loaders read it.
"""

from __future__ import annotations

import json
import time
from typing import Any, BinaryIO

from bridge_agent.export.base import text_stream
from bridge_agent.export.fields import Selection, iso_ms
from bridge_agent.export.reader import Item
from bridge_agent.export.request import ExportReport, ExportRequest

SEO_KEYS = ("id", "sku", "title", "url", "seo_title", "seo_description", "images")


def record(item: Item, selection: Selection) -> dict[str, Any]:
    if item.product is None:
        return {"id": item.id, "deleted": True, "recorded_at": iso_ms(item.recorded_at)}
    data = item.product.to_dict()
    if not selection.wants("basic"):
        data = {k: v for k, v in data.items() if k in SEO_KEYS}
    data["recorded_at"] = iso_ms(item.recorded_at)
    if selection.wants("structured") and item.jsonld is not None:
        data["jsonld"] = item.jsonld
    if selection.wants("history"):
        data["history"] = [c.as_dict() for c in item.history]
    return data


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class JsonLinesWriter:
    def __init__(
        self, out: BinaryIO, request: ExportRequest, selection: Selection, report: ExportReport
    ) -> None:
        self._text = text_stream(out)
        self._selection = selection
        self._report = report

    def begin(self) -> None:
        pass

    def product(self, item: Item) -> None:
        assert item.product is not None
        self._text.write(_dumps(record(item, self._selection)) + "\n")
        self._report.rows += 1
        self._report.products += 1
        self._report.variants += len(item.product.variants)

    def deleted(self, item: Item) -> None:
        self._text.write(_dumps(record(item, self._selection)) + "\n")
        self._report.rows += 1
        self._report.deleted += 1

    def end(self) -> None:
        self._text.flush()
        self._text.detach()


class JsonWriter:
    def __init__(
        self, out: BinaryIO, request: ExportRequest, selection: Selection, report: ExportReport
    ) -> None:
        self._text = text_stream(out)
        self._selection = selection
        self._report = report
        self._request = request
        self._first = True

    def begin(self) -> None:
        about = {
            "store": self._request.store,
            "name": self._request.export_name,
            "exported_at": iso_ms(int(time.time() * 1000)),
            "since": iso_ms(self._report.since) if self._report.since is not None else None,
            "fields": sorted(self._selection.groups),
        }
        self._text.write('{"export":' + _dumps(about) + ',"products":[')

    def _record(self, item: Item) -> None:
        self._text.write(("\n" if self._first else ",\n") + _dumps(record(item, self._selection)))
        self._first = False
        self._report.rows += 1

    def product(self, item: Item) -> None:
        assert item.product is not None
        self._record(item)
        self._report.products += 1
        self._report.variants += len(item.product.variants)

    def deleted(self, item: Item) -> None:
        self._record(item)
        self._report.deleted += 1

    def end(self) -> None:
        summary = {
            "products": self._report.products,
            "variants": self._report.variants,
            "deleted": self._report.deleted,
        }
        self._text.write('\n],"summary":' + _dumps(summary) + "}\n")
        self._text.flush()
        self._text.detach()
