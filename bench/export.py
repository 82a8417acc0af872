"""Export benchmark: a catalog of N products (default 100 000) to every format.

What it measures, and why: issue 17 asks for rows/s, peak RSS and file size of an export of
100 000 products to each format, the RSS to show the exports stream (bounded memory, never the
catalog in memory). Printed, per format: the products and records written (rows: csv lines,
feed items, json records), the wall time and rows/s and products/s, the peak RSS of the
exporting process (`VmHWM`) beside its RSS before the export started (interpreter and imports),
and the file size.

How: the state directory is filled once through the real `StateStore.record` (pages of 1000
products of `testing.catalog.make_product`: about one in five variable with three variants, one
in seven without an image, which the xml feed reports rather than writes). Each format is then
exported by a fresh child process (`python bench/export.py --child ...`) running
`export_catalog` into a file in the same temporary folder, so each peak RSS is that format's
alone; the child prints its figures as one JSON line. The run is read-only on the state, as
`bridge-agent export` is.

    python bench/export.py [--products 100000] [--formats csv,xlsx,...] [--keep DIR]

100 000 products take about 1 minute to record and a few minutes to export in all formats on 2
CPUs (xlsx is the slowest: openpyxl writes each cell's XML in Python).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import memory_mb, say, table

from bridge_agent.export import FORMATS, SUFFIXES, ExportRequest, export_catalog
from bridge_agent.model import Change
from bridge_agent.store import StateStore
from bridge_agent.testing.catalog import make_product

PAGE = 1000


async def fill(state_dir: Path, products: int) -> None:
    async with StateStore.open(state_dir) as state:
        for start in range(0, products, PAGE):
            now = int(time.time() * 1000)
            await state.record(
                [
                    Change("main", str(i), make_product(i), "import", now)
                    for i in range(start, min(start + PAGE, products))
                ]
            )


def child(state_dir: Path, fmt: str, out: Path) -> None:
    """One export in this process; prints its figures as a JSON line."""
    before = memory_mb(os.getpid()).get("VmRSS", 0.0)
    request = ExportRequest(store="main", format=fmt, currency="EUR",  # type: ignore[arg-type]
                            store_url="https://shop.example")  # fmt: skip
    started = time.perf_counter()
    with out.open("wb") as stream:
        report = export_catalog(state_dir, request, stream)
    seconds = time.perf_counter() - started
    memory = memory_mb(os.getpid())
    print(json.dumps({
        "format": fmt, "products": report.products, "variants": report.variants,
        "rows": report.rows, "refused": report.invalid_total, "seconds": seconds,
        "bytes": out.stat().st_size, "rss_before_mb": before,
        "peak_rss_mb": memory.get("VmHWM", 0.0),
    }))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--keep", type=Path, default=None, help="keep state and files here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--format", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.state, args.format, args.out)
        return
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-export-") as temp:
        work = args.keep or Path(temp)
        work.mkdir(parents=True, exist_ok=True)
        state_dir = work / "state"
        started = time.perf_counter()
        asyncio.run(fill(state_dir, args.products))
        say(f"recorded {args.products} products in {time.perf_counter() - started:.1f} s"
            f" ({(state_dir / 'state.sqlite').stat().st_size / 1e6:.0f} MB state)")  # fmt: skip
        rows = []
        for fmt in formats:
            out = work / f"export-{fmt}{SUFFIXES[fmt]}"
            result = subprocess.run(
                [sys.executable, __file__, "--child", "--state", str(state_dir), "--format", fmt,
                 "--out", str(out)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            seconds = figures["seconds"]
            say(json.dumps(figures))
            rows.append([
                fmt, str(figures["products"]), str(figures["rows"]), str(figures["refused"]),
                f"{seconds:.1f}", f"{figures['rows'] / seconds:,.0f}",
                f"{figures['products'] / seconds:,.0f}", f"{figures['rss_before_mb']:.0f}",
                f"{figures['peak_rss_mb']:.0f}", f"{figures['bytes'] / 1e6:.1f}",
            ])  # fmt: skip
        say("")
        say(f"export of {args.products} products (one child process per format)")
        say(table(
            ["format", "products", "rows", "refused", "seconds", "rows/s", "products/s",
             "RSS before MB", "peak RSS MB", "file MB"],
            rows,
        ))  # fmt: skip


if __name__ == "__main__":
    main()
