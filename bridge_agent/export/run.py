"""`export_catalog`: one export, from the state database to a binary stream.

Synchronous on purpose: it is a loop of SQLite reads and stream writes with nothing to await,
so the CLI calls it directly and the daemon's scheduler runs it in a worker thread
(`asyncio.to_thread`), where it never holds up the event loop or the state store's own thread
(reader.py says why it reads on a connection of its own). Memory is bounded by one page of
products (reader.PAGE) and the writer's own small state, whatever the catalog size.

The caller owns `out` and what happens to it afterwards (output.py writes a file atomically;
a destination uploads it). Only once it is safe does the caller save `report.mark` (reader.py
`save_mark`), so an export that failed half way is simply done again next time.

To stdout (`export_to_pipe`): a reader that goes away early (`| head`) leaves a file cut short,
which is a failed export (unlike `status | head`, where the reader had all it wanted): the
caller exits non-zero and saves no mark. And before an export whose mark must be saved, the
CLI asks `mark_unwritable`, so a user who can read the state but not write it is told before
any file is made, not after.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO, cast

from bridge_agent.errors import InputError
from bridge_agent.export.base import Counting, Writer, WriterFactory
from bridge_agent.export.csvfile import CsvWriter
from bridge_agent.export.fields import Selection, select
from bridge_agent.export.jsonfile import JsonLinesWriter, JsonWriter
from bridge_agent.export.merchant import MerchantFeedWriter
from bridge_agent.export.reader import Reader
from bridge_agent.export.request import FORMATS, ExportReport, ExportRequest
from bridge_agent.export.shopify_csv import ShopifyCsvWriter
from bridge_agent.export.woocommerce_csv import WooCommerceCsvWriter
from bridge_agent.platforms.woocommerce.mapping import SEO_META_KEYS
from bridge_agent.store import DB_NAME


def _workbook_writer(
    out: BinaryIO, request: ExportRequest, selection: Selection, report: ExportReport
) -> Writer:
    """The xlsx writer, imported when an xlsx export runs: openpyxl takes a quarter of a second
    to import, which every start of the agent and every CLI command would otherwise pay."""
    from bridge_agent.export.workbook import WorkbookWriter  # noqa: PLC0415 - see above

    return WorkbookWriter(out, request, selection, report)


WRITERS: Mapping[str, WriterFactory] = {
    "csv": CsvWriter,
    "json": JsonWriter,
    "jsonl": JsonLinesWriter,
    "xml": MerchantFeedWriter,
    "xlsx": _workbook_writer,
    "shopify-csv": ShopifyCsvWriter,
    "woocommerce-csv": WooCommerceCsvWriter,
}
assert set(WRITERS) == set(FORMATS)


def check(request: ExportRequest) -> None:
    """Refuse a request that cannot run, before any file is opened (InputError)."""
    if request.format not in WRITERS:
        raise InputError(f"unknown format {request.format!r}: one of {', '.join(FORMATS)}")
    select(request.fields)
    if request.seo_plugin not in {p for p, _t, _d in SEO_META_KEYS}:
        raise InputError(
            f"unknown seo_plugin {request.seo_plugin!r}: one of"
            f" {', '.join(p for p, _t, _d in SEO_META_KEYS)}"
        )


def export_catalog(state: Path | str, request: ExportRequest, out: BinaryIO) -> ExportReport:
    """Write one store's products from the state in `state` (directory or file) to `out`."""
    check(request)
    started = time.monotonic()
    selection = select(request.fields)
    report = ExportReport(request.store, request.format, request.export_name)
    counting = Counting(out)
    with Reader.open(state, request) as reader:
        report.since = reader.since
        # Counting is a write-only binary stream: all a writer does with `out` is write to it.
        stream = cast(BinaryIO, counting)
        writer = WRITERS[request.format](stream, request, selection, report)
        writer.begin()
        for item in reader.items(
            jsonld=selection.wants("structured"), history=selection.wants("history")
        ):
            if item.product is None:
                writer.deleted(item)
            else:
                writer.product(item)
        writer.end()
        report.mark = reader.mark.dumps() if reader.mark is not None else None
    counting.flush()
    report.bytes = counting.count
    report.seconds = time.monotonic() - started
    return report


def export_to_pipe(state: Path | str, request: ExportRequest, out: BinaryIO) -> ExportReport | None:
    """`export_catalog` to a pipe; None when its reader closed it before the end (EPIPE)."""
    hook = sys.unraisablehook
    try:
        try:
            return export_catalog(state, request, out)
        except BrokenPipeError:
            # What the abandoned writer leaves behind complains as it is collected (openpyxl's
            # row generator writes its closing tag to a temporary file already closed): quiet,
            # since the export has failed already and says so.
            sys.unraisablehook = _ignore
        gc.collect()
        return None
    finally:
        sys.unraisablehook = hook


def _ignore(_unraisable: object) -> None:
    return None


def mark_unwritable(state: Path | str) -> str | None:
    """Why this user could not save an export's mark in the state in `state` (directory or
    file), or None. SQLite writes the database and, in WAL mode, files beside it."""
    path = Path(state)
    directory, db = (path, path / DB_NAME) if path.is_dir() else (path.parent, path)
    for what in (directory, db):
        if what.exists() and not os.access(what, os.W_OK):
            return f"{what} is not writable by this user"
    return None
