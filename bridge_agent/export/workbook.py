"""The `xlsx` format: the csv columns as a formatted sheet, and a summary sheet.

openpyxl's write-only mode streams each row to a temporary file as it comes (its documented
way to write large workbooks in bounded memory); the zip is assembled at the end. The sheet
`products` has a frozen header row, an auto-filter over every column, widths set per column
kind, and typed cells: money as numbers (two decimals shown), stock as integers, times as
dates (UTC, Excel has no zones). The sheet `summary` counts products by status and
availability, and the products missing each SEO field, from counters kept while streaming.

Excel refuses a cell over 32 767 characters: such a value (a long description, a JSON-LD) is
cut there and the cut counted in the summary, rather than the file being unreadable.

Store text is data, never a formula: openpyxl makes any text starting with `=` a live formula
(`=HYPERLINK(...)` in a product title would run in the merchant's Excel), and `#N/A` an error
value, so every text value is written as a string cell (its type set after its value). XML 1.0
cannot hold control characters (U+0000 to U+001F but tab and line ends), and openpyxl refuses
them rather than write a broken file: they are dropped from the cell, and the cells cleaned
counted in the summary and the report, so one stray byte in a description never aborts the
export.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, BinaryIO

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter

from bridge_agent.export.fields import (
    DELETED,
    Column,
    Kind,
    Row,
    Selection,
    cells,
    deleted_cells,
)
from bridge_agent.export.reader import Item
from bridge_agent.export.request import ExportReport, ExportRequest

CELL_MAX = 32_767
WIDTHS: dict[Kind, float] = {"text": 24, "money": 12, "int": 10, "time": 20, "json": 40}
WIDE = {"title": 40, "description_html": 60, "short_description_html": 40, "url": 40,
        "seo_title": 40, "seo_description": 60, "images": 40, "categories": 30,
        "image_link": 40}  # fmt: skip
MONEY_FORMAT, TIME_FORMAT = "#,##0.00", "yyyy-mm-dd hh:mm:ss"
SEO_FIELDS = ("seo_title", "seo_description", "image_alt")


def excel_value(kind: Kind, value: Any) -> Any:
    """The typed cell value of one column (None: empty)."""
    if value is None:
        return None
    if kind == "money":
        try:
            return Decimal(value)
        except (InvalidOperation, ValueError, TypeError):
            return str(value)
    if kind == "time":
        if isinstance(value, int):
            return datetime.fromtimestamp(value / 1000, UTC).replace(tzinfo=None)
        try:
            when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)
        return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
    if kind == "json":
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return value


class WorkbookWriter:
    def __init__(
        self, out: BinaryIO, request: ExportRequest, selection: Selection, report: ExportReport
    ) -> None:
        self._out = out
        self._selection = selection
        self._report = report
        self._book = Workbook(write_only=True)
        # Any: openpyxl binds the write-only sheet's freeze_panes, column_dimensions and
        # auto_filter at run time, which its type stubs do not declare.
        self._sheet: Any = self._book.create_sheet("products")
        self._by_status: Counter[str] = Counter()
        self._by_availability: Counter[str] = Counter()
        self._missing: Counter[str] = Counter()
        self._cut = 0
        self._cleaned = 0
        self._rows = 0

    def begin(self) -> None:
        sheet = self._sheet
        sheet.freeze_panes = "A2"
        for n, column in enumerate(self._selection.columns, start=1):
            width = WIDE.get(column.name, WIDTHS[column.kind])
            sheet.column_dimensions[get_column_letter(n)].width = width
        bold = Font(bold=True)
        header = []
        for name in self._selection.names:
            cell = WriteOnlyCell(sheet, value=name)
            cell.font = bold
            header.append(cell)
        sheet.append(header)

    def _append(self, values: list[Any]) -> None:
        row: list[Any] = []
        for column, value in zip(self._selection.columns, values, strict=True):
            row.append(self._cell(column, excel_value(column.kind, value)))
        self._sheet.append(row)
        self._rows += 1
        self._report.rows += 1

    def _cell(self, column: Column, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            return self._text(value)
        if column.kind in ("money", "time"):
            cell = WriteOnlyCell(self._sheet, value=value)
            cell.number_format = MONEY_FORMAT if column.kind == "money" else TIME_FORMAT
            return cell
        return value

    def _text(self, value: str) -> Any:
        """A string cell: control characters dropped, cut at Excel's limit, never a formula."""
        clean = ILLEGAL_CHARACTERS_RE.sub("", value)
        if clean != value:
            self._cleaned += 1
            self._report.cleaned += 1
        if len(clean) > CELL_MAX:
            clean = clean[:CELL_MAX]
            self._cut += 1
        cell = WriteOnlyCell(self._sheet, value=clean)
        cell.data_type = "s"  # after the value: openpyxl made `=...` a formula, `#N/A` an error
        return cell

    def product(self, item: Item) -> None:
        product = item.product
        assert product is not None
        row = Row(product, None, item.recorded_at, item.jsonld, item.history)
        self._append(cells(self._selection, row))
        for variant in product.variants:
            self._append(cells(self._selection, Row(product, variant, item.recorded_at)))
        self._report.products += 1
        self._report.variants += len(product.variants)
        self._by_status[product.status] += 1
        self._by_availability[product.availability or "(none)"] += 1
        image = row.image
        present = {
            "seo_title": bool(product.seo_title),
            "seo_description": bool(product.seo_description),
            "image_alt": image is not None and bool(image.alt),
        }
        for name in SEO_FIELDS:
            if not present[name]:
                self._missing[name] += 1

    def deleted(self, item: Item) -> None:
        self._append(deleted_cells(self._selection, item.id, item.recorded_at))
        self._by_status[DELETED] += 1
        self._report.deleted += 1

    def end(self) -> None:
        last = get_column_letter(len(self._selection.columns))
        self._sheet.auto_filter.ref = f"A1:{last}{self._rows + 1}"
        summary: Any = self._book.create_sheet("summary")
        summary.column_dimensions["A"].width = 28
        summary.column_dimensions["B"].width = 24
        summary.column_dimensions["C"].width = 12
        bold = Font(bold=True)

        def heading(*values: str) -> list[Any]:
            out = []
            for value in values:
                cell = WriteOnlyCell(summary, value=value)
                cell.font = bold
                out.append(cell)
            return out

        summary.append(heading("what", "value", "products"))
        summary.append(["products", "", self._report.products])
        summary.append(["variants", "", self._report.variants])
        for status, n in sorted(self._by_status.items()):
            summary.append(["status", status, n])
        for availability, n in sorted(self._by_availability.items()):
            summary.append(["availability", availability, n])
        for name in SEO_FIELDS:
            summary.append(["missing SEO field", name, self._missing[name]])
        if self._cut:
            summary.append(["cells cut at 32767 characters", "", self._cut])
        if self._cleaned:
            summary.append(["cells with control characters dropped", "", self._cleaned])
        self._book.save(self._out)  # zipfile writes to any stream, seekable or not
