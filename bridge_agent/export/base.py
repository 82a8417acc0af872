"""What every format writer is: `begin`, one call per product or deletion, `end`, on a stream.

A writer never holds more than the record at hand (and its own small counters): the reader
hands it products one by one, and it writes each to the output before the next comes. The
report counts what it wrote and what it could not (`ExportReport`).
"""

from __future__ import annotations

import csv
import io
from typing import BinaryIO, Protocol

from bridge_agent.export.fields import Selection
from bridge_agent.export.reader import Item
from bridge_agent.export.request import ExportReport, ExportRequest
from bridge_agent.model import Product


class Writer(Protocol):
    def begin(self) -> None: ...

    def product(self, item: Item) -> None: ...

    def deleted(self, item: Item) -> None: ...

    def end(self) -> None: ...


class WriterFactory(Protocol):
    def __call__(
        self, out: BinaryIO, request: ExportRequest, selection: Selection, report: ExportReport
    ) -> Writer: ...


def text_stream(out: BinaryIO, *, bom: bool = False) -> io.TextIOWrapper:
    """UTF-8 text over `out` for csv and json writers; `detach()` it at the end, never close
    (the caller owns `out`). The BOM is what Excel needs to read UTF-8 CSV as UTF-8."""
    return io.TextIOWrapper(
        out,
        encoding="utf-8-sig" if bom else "utf-8",
        newline="",
        write_through=False,
    )


class Counting(io.RawIOBase):
    """A write-only stream that counts the bytes it passes on (the report's file size).

    It does not seek (so zip writers stream with data descriptors) and never closes the stream
    it wraps: the caller of `export_catalog` owns that.
    """

    def __init__(self, out: BinaryIO) -> None:
        super().__init__()
        self._out = out
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._out.write(data)
        n = len(data)
        self.count += n
        return n

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        self.flush()


def option_names(product: Product) -> list[str]:
    """The names of the product's variant options (size, colour...), in first-seen order: the
    importer formats give each one a column group of its own."""
    names: list[str] = []
    for variant in product.variants:
        for name, _value in variant.options:
            if name not in names:
                names.append(name)
    return names


class ImporterCsv:
    """What the importer formats (shopify-csv, woocommerce-csv) share: RFC 4180 rows over UTF-8
    text (a BOM on request), and deletions reported, since an import file cannot delete."""

    def __init__(self, out: BinaryIO, request: ExportRequest, report: ExportReport) -> None:
        self._text = text_stream(out, bom=request.bom)
        self._csv = csv.writer(self._text, lineterminator="\r\n")
        self._report = report

    def deleted(self, item: Item) -> None:
        self._report.skip("deleted (an import file cannot delete)", item.id)

    def end(self) -> None:
        self._text.flush()
        self._text.detach()
