"""The `csv` format: RFC 4180, UTF-8 (a BOM on request, for Excel), one header row.

RFC 4180's rules, as Python's csv module writes them with these settings: CRLF line ends, a
field quoted when it holds a comma, a quote or a line break, a quote inside doubled. Columns in
the stable order of `fields.COLUMNS`; a product's row is followed by one row per variant
(`variant_id` set). A deleted product (incremental exports) is a row with its id, the status
`deleted` and when the agent saw it go.

Formula injection: a spreadsheet opening the file runs a cell that starts with `=`, `+`, `-`
or `@` (and a tab or carriage return before one) as a formula, and store text is anyone's
(`=HYPERLINK(...)` in a title). So a text cell starting with one of those is written with a
`'` before it (OWASP's rule; Excel shows the text without the quote); money, counts and times
are never changed. `raw` (`--raw`) writes the text as it is, for a program reading the file.
The shopify-csv and woocommerce-csv formats never add the quote: they are for the importers,
which would keep it in the product (they are not files to open in a spreadsheet).
"""

from __future__ import annotations

import csv
from typing import BinaryIO

from bridge_agent.export.base import text_stream
from bridge_agent.export.fields import Row, Selection, cells, deleted_cells, text
from bridge_agent.export.reader import Item
from bridge_agent.export.request import ExportReport, ExportRequest

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutral(value: str) -> str:
    """`value`, with a `'` before it when a spreadsheet would take it for a formula."""
    return f"'{value}" if value.startswith(FORMULA_START) else value


class CsvWriter:
    def __init__(
        self, out: BinaryIO, request: ExportRequest, selection: Selection, report: ExportReport
    ) -> None:
        self._text = text_stream(out, bom=request.bom)
        self._csv = csv.writer(self._text, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
        self._selection = selection
        self._kinds = [c.kind for c in selection.columns]
        self._report = report
        self._raw = request.raw

    def begin(self) -> None:
        self._csv.writerow(self._selection.names)

    def _write(self, values: list[object]) -> None:
        row = [text(k, v) for k, v in zip(self._kinds, values, strict=True)]
        if not self._raw:
            row = [neutral(c) if k == "text" else c for k, c in zip(self._kinds, row, strict=True)]
        self._csv.writerow(row)
        self._report.rows += 1

    def product(self, item: Item) -> None:
        assert item.product is not None
        row = Row(item.product, None, item.recorded_at, item.jsonld, item.history)
        self._write(cells(self._selection, row))
        for variant in item.product.variants:
            self._write(cells(self._selection, Row(item.product, variant, item.recorded_at)))
        self._report.products += 1
        self._report.variants += len(item.product.variants)

    def deleted(self, item: Item) -> None:
        self._write(deleted_cells(self._selection, item.id, item.recorded_at))
        self._report.deleted += 1

    def end(self) -> None:
        self._text.flush()
        self._text.detach()
