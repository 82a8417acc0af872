"""One entry point for every benchmark: runs the scripts in bench/, prints one table of figures.

Each benchmark script prints its own tables for a human; none writes a machine-readable report,
so this runner parses their printed output. The parsers look for fixed labels and table headers
and fail loudly (naming the script) when a format changed, so a figure is never silently wrong:
a benchmark that fails, or whose output no longer parses, becomes one row with its error and the
run goes on; the exit code is 1 if any did. Targets come from the issues and docs/performance.md,
peers from docs/performance.md and ../shared/reference/anchors.md (empty where neither gives one).

The rows are also written, with the machine's CPU count, load, Python version and git commit, to
`bench/results/<UTC timestamp>.json`, and each script's full output beside it as
`<timestamp>-<name>.log` (results are machine-specific: the folder's files are not committed).

    bench/run [--quick] [--only NAME ...] [--timeout [NAME=]SECONDS ...]

`--quick` runs each benchmark with its smallest options (about 7 minutes in all on 2 CPUs, the
2-minute soak, the quick latency run and one chaos trial per platform included); the defaults
take three hours or more (the scripts' own estimates add up to 45-60 minutes on 2 CPUs: imports
at 10 000 and 100 000 products, a sweep of 100 000, downstream bulks of 10 000; then the
30-minute soak, exports of 100 000 products and 100 chaos trials, about 75 minutes).

Each script runs in its own session with a timeout (its `Benchmark.timeout`, or `--timeout`):
one that hangs is stopped with its whole process group (the agent, hub and simulators it
started) and becomes a failed row, and the run goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ADE_PEER = "Adobe Commerce SaaS Data Export: 1 000 products/min (anchors.md)"


# Figures issue 16 asks for that no script in bench/ measures yet: printed after the table (and in
# the JSON as "not_measured") so the gap stays visible until a benchmark lands for each.
NOT_MEASURED: tuple[str, ...] = ()


class FormatChanged(Exception):
    """A benchmark's printed output no longer has what its parser looks for."""


@dataclasses.dataclass
class Row:
    figure: str
    value: str
    target: str = ""
    method: str = ""
    peer: str = ""
    error: str = ""


Parser = Callable[[str], list[Row]]


@dataclasses.dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    quick: tuple[str, ...]
    full: tuple[str, ...]
    parse: Parser
    # Seconds the script may take (quick, full) before it is stopped and becomes a failed row:
    # a few times its own estimate on 2 busy CPUs, so only a hang reaches it.
    timeout: tuple[float, float] = (600.0, 1800.0)
    # Whether a non-zero exit still prints figures to read (the chaos run exits 1 when a trial
    # failed, and its summary saying which is the figure that matters most).
    figures_on_failure: bool = False


# -- parsing helpers ------------------------------------------------------------------------------


def grab(pattern: str, text: str, script: str) -> re.Match[str]:
    found = re.search(pattern, text, re.MULTILINE)
    if found is None:
        raise FormatChanged(f"{script}: output format changed (no match for {pattern!r})")
    return found


def rows_of(
    text: str, header_start: str, script: str, *, last: bool = False
) -> dict[str, dict[str, str]]:
    """A printed `common.table` whose header line starts with `header_start`: row -> col -> cell.

    The first such table, or the last with `last` (a summary printed after per-scenario tables).

    Cells are separated by two or more spaces (the table's padding), so cells may hold one space.
    """
    lines = text.splitlines()
    starts = range(len(lines) - 2, -1, -1) if last else range(len(lines) - 1)
    for i in starts:
        line = lines[i]
        if line.startswith(header_start) and set(lines[i + 1]) <= {"-", " "} and lines[i + 1]:
            header = re.split(r"\s{2,}", line.strip())
            out: dict[str, dict[str, str]] = {}
            for row in lines[i + 2 :]:
                if not row.strip():
                    break
                cells = re.split(r"\s{2,}", row.strip())
                if len(cells) != len(header):
                    continue  # a row with an empty cell: not one we read
                out[cells[0]] = dict(zip(header, cells, strict=True))
            return out
    raise FormatChanged(f"{script}: output format changed (no table headed {header_start!r})")


def cell(table_: dict[str, dict[str, str]], row: str, col: str, script: str) -> str:
    try:
        return table_[row][col]
    except KeyError:
        raise FormatChanged(f"{script}: output format changed (no cell {row!r}/{col!r})") from None


# -- one parser per script ------------------------------------------------------------------------


def parse_ship(out: str) -> list[Row]:
    s = "ship.py"
    ship = rows_of(out, "shipping", s)
    wire = rows_of(out, "patch ", s)
    rec = rows_of(out, "recording", s)
    rows = [
        Row(f"{k}, outbox -> local hub", f"{cell(ship, k, 'items/s', s)} items/s", "20 000/s")
        for k in ("ship upserts", "ship patches")
    ]
    rows.append(
        Row(
            "record changes into the outbox",
            f"{cell(rec, 'record upserts', 'changes/s', s)} changes/s",
            peer="SQLite, one transaction per row: ~5 000 rows/s (anchors.md B.4)",
        )
    )
    rows.append(
        Row(
            "price patch on the wire, per item in a batch",
            f"{cell(wire, 'price only', 'per item in 10-batch B', s)} B",
            "<= 200 B",
        )
    )
    return rows


def parse_hub(out: str) -> list[Row]:
    s = "hub.py"
    rows = []
    for mode in ("direct", "http"):
        block = grab(rf"(?s)^{mode} .*?(?=^\S|\Z)", out, s).group(0)
        for op in ("upsert", "patch"):
            m = grab(rf"^\s+{op}\s+median\s+(\d+) items/s, CPU\s+([\d.]+) µs/item", block, s)
            rows.append(
                Row(
                    f"hub alone ({mode}), {op} CPU per item",
                    f"{m.group(2)} µs ({m.group(1)} items/s)",
                    "<= 40 µs",
                )
            )
    return rows


def parse_import_woocommerce(out: str) -> list[Row]:
    s = "import.py --platform woocommerce"
    wall = rows_of(out, "scenario  latency ms", s)
    mem = rows_of(out, "scenario  agent CPU", s)
    rows = []
    for scen in wall:
        rows.append(
            Row(
                f"WooCommerce import ({scen}), run / floor",
                f"{cell(wall, scen, 'run/floor', s)}x ({cell(wall, scen, 'run s', s)} s)",
                "<= 1.3x" if scen == "import" else "",
            )
        )
        rows.append(
            Row(
                f"WooCommerce import ({scen}), rate",
                f"{cell(wall, scen, 'products/s', s)} products/s",
                peer=ADE_PEER,
            )
        )
        rows.append(
            Row(
                f"WooCommerce import ({scen}), agent peak RSS",
                f"{cell(mem, scen, 'peak RSS MB', s)} MB",
                "<= 80 MB",
            )
        )
    return rows


def parse_import_shopify(out: str) -> list[Row]:
    s = "import.py --platform shopify"
    wall = rows_of(out, "scenario  products  variants", s, last=True)
    rows = []
    for scen in wall:
        ratio = cell(wall, scen, "import/floor", s)
        rows.append(
            Row(
                f"Shopify import ({scen}), rate",
                f"{cell(wall, scen, 'products/s', s)} products/s (import/floor {ratio})",
                peer=ADE_PEER,
            )
        )
    m = re.search(r"change -> hub .*?: \d+ arrived, p50 ([\d.]+) s, p99 ([\d.]+) s", out)
    if m is not None:  # absent when --incremental-seconds 0
        rows.append(
            Row("Shopify webhook change -> hub, p99", f"{m.group(2)} s (p50 {m.group(1)} s)")
        )
    return rows


def parse_downstream(platform_: str) -> Parser:
    def parse(out: str) -> list[Row]:
        s = f"downstream.py --platform {platform_}"
        lat = rows_of(out, "ms  ", s)
        rate = grab(r"^\(a\) latency at ([\d.]+) optimisations/s", out, s).group(1)
        rows = [
            Row(
                f"{platform_} downstream at {rate}/s, {key} p99",
                f"{cell(lat, key, 'p99', s)} ms (p50 {cell(lat, key, 'p50', s)})",
                "< 1 s + store write" if "hub" in key else "",
            )
            for key in lat
        ]
        bulk = grab(r"after [\d.]+ s: (\d+) optimisations/s", out, s).group(1)
        ratio = re.search(r"ratio to the floor: ([\d.]+x|none)", out)
        rows.append(
            Row(
                f"{platform_} downstream bulk apply rate",
                f"{bulk} optimisations/s (floor ratio {ratio.group(1) if ratio else '?'})",
            )
        )
        return rows

    return parse


def parse_verify(out: str) -> list[Row]:
    s = "verify.py"
    wall = rows_of(out, "products   read", s)
    (row,) = wall.values() if len(wall) == 1 else (None,)
    if row is None:
        raise FormatChanged(f"{s}: output format changed (expected one wall-time row)")
    drift = grab(r"report.*?: drift (\d+)", out, s).group(1)
    return [
        Row(
            "verification sweep rate",
            f"{row['products/s']} products/s ({row['sweep/floor']}x the floor)",
        ),
        Row("verification sweep drift on an unchanged catalog", drift, "0"),
    ]


def parse_jsonld(out: str) -> list[Row]:
    s = "jsonld_refresh.py"
    t = rows_of(out, "ms  ", s)
    key = "change -> JSON-LD rewritten"
    return [
        Row(
            "JSON-LD freshness after a price change, p99",
            f"{cell(t, key, 'p99', s)} ms (p50 {cell(t, key, 'p50', s)})",
        )
    ]


def parse_wordpress(out: str) -> list[Row]:
    s = "wordpress_plugin.py"
    m = grab(r"its flush at shutdown median ([\d.]+) ms, p95 ([\d.]+) ms", out, s)
    diff = grab(r"difference of the medians: ([-+\d.]+) ms", out, s).group(1)
    return [
        Row("WordPress plugin flush per save", f"{m.group(1)} ms (p95 {m.group(2)})"),
        Row("WordPress plugin, end-to-end save difference", f"{diff} ms", "never slows the store"),
    ]


def parse_latency(out: str) -> list[Row]:
    s = "latency.py"
    t = rows_of(out, "ms  ", s)
    rate = grab(r"^latency at ([\d.]+) changes/s", out, s).group(1)
    rows = [
        Row(
            f"spool-to-hub-ack latency at {rate} changes/s, p99",
            f"{cell(t, 'spool hook -> hub ack', 'p99', s)} ms"
            f" (p50 {cell(t, 'spool hook -> hub ack', 'p50', s)})",
            "p99 < 1 000 ms",
        )
    ]
    key = "webhook sent -> hub ack"
    if key in t:  # absent with --skip-webhooks
        rows.append(
            Row(
                f"WooCommerce webhook-to-hub-ack latency at {rate}/s, p99",
                f"{cell(t, key, 'p99', s)} ms (p50 {cell(t, key, 'p50', s)})",
            )
        )
    return rows


def parse_soak(out: str) -> list[Row]:
    s = "soak.py"
    t = rows_of(out, "figure  ", s)
    head = grab(r"^soak: ([\d.]+) changes/s over (\d+) products for ([\d.]+) min", out, s)
    rate, products, minutes = head.groups()
    where = f"{rate}/s, {minutes} min, hub down a third"

    def fig(row: str, unit: str) -> str:
        growth = cell(t, row, "growth/min", s)
        return f"{cell(t, row, 'peak', s)}{unit} (end {cell(t, row, 'end', s)}, {growth}/min)"

    return [
        Row(f"soak ({where}): agent peak RSS", fig("agent RSS MB", " MB"), "<= 150 MB, plateau"),
        Row(f"soak ({where}): open fds, peak", fig("open fds", ""), "<= 64, plateau"),
        Row(
            f"soak ({where}): state DB + WAL, peak",
            fig("state DB + WAL MB", " MB"),
            "<= 64 MB, plateau",
        ),
        Row(
            f"soak ({where}): outbox rows, max",
            cell(t, "outbox rows", "peak", s),
            f"<= {products} (one per product)",
        ),
    ]


def parse_export(out: str) -> list[Row]:
    s = "export.py"
    t = rows_of(out, "format  ", s)
    products = grab(r"^export of (\d+) products", out, s).group(1)
    return [
        Row(
            f"export of {products} products to {fmt}",
            f"{cell(t, fmt, 'rows/s', s)} rows/s, peak RSS {cell(t, fmt, 'peak RSS MB', s)} MB,"
            f" {cell(t, fmt, 'file MB', s)} MB",
            "streaming: peak RSS flat in the catalog size",
        )
        for fmt in t
    ]


def parse_chaos(out: str) -> list[Row]:
    s = "chaos.py"
    block = grab(r"(?ms)^chaos summary\n(.*)", out, s).group(1)
    fields = dict(
        line.split(": ", 1)
        for line in block.splitlines()
        if ": " in line and not line.startswith("replay")
    )
    try:
        trials, products = fields["trials"], fields["products checked"]
        where = f"chaos, {trials} trials, {products} products checked"
        return [
            Row(f"{where}: lost", fields["lost"], "0"),
            Row(f"{where}: double writes", fields["double writes"], "0"),
            Row(f"{where}: merchant values overwritten", fields["overwrites"], "0"),
            Row(
                f"{where}: merchant edits raced into the read-write window (documented)",
                fields.get("raced in the read-write window", "n/a"),
            ),
            Row(
                f"{where}: duplicates delivered (at least once)",
                fields["duplicates delivered"],
            ),
            Row(
                f"{where}: time to converge",
                f"p50 {fields['converge p50 s']} s, max {fields['converge max s']} s",
                "within the settle limit",
            ),
            Row(
                f"{where}: faults",
                f"{fields['restarts']} SIGKILL restarts, {fields['hub outages']} hub outages",
            ),
            Row(
                f"{where}: failing seeds",
                fields["failing seeds"],
                "none",
                error=""
                if fields["failing seeds"] == "none"
                else "chaos trials failed (each replays with the `replay:` command in the log)",
            ),
        ]
    except KeyError as exc:
        raise FormatChanged(f"{s}: output format changed (no summary line {exc})") from None


BENCHMARKS = (
    Benchmark("ship", "ship.py", ("--products", "5000"), (), parse_ship, (300, 900)),
    Benchmark("hub", "hub.py", ("--products", "5000", "--rounds", "1"), (), parse_hub, (300, 900)),
    Benchmark(
        "import-woocommerce",
        "import.py",
        ("--platform", "woocommerce", "--products", "1000", "--skip-large"),
        ("--platform", "woocommerce"),
        parse_import_woocommerce,
    ),
    Benchmark(
        "import-shopify",
        "import.py",
        (
            "--platform",
            "shopify",
            "--products",
            "200",
            "--paged-products",
            "50",
            "--incremental-seconds",
            "5",
            "--change-rate",
            "10",
            "--drain-seconds",
            "60",
        ),
        ("--platform", "shopify"),
        parse_import_shopify,
        (900, 2700),
    ),
    Benchmark("verify", "verify.py", ("--products", "2000"), (), parse_verify),
    Benchmark(
        "downstream-woocommerce",
        "downstream.py",
        ("--platform", "woocommerce", "--products", "300", "--seconds", "5", "--bulk", "200"),
        ("--platform", "woocommerce"),
        parse_downstream("woocommerce"),
    ),
    Benchmark(
        "downstream-shopify",
        "downstream.py",
        ("--platform", "shopify", "--products", "300", "--seconds", "5", "--bulk", "200"),
        ("--platform", "shopify"),
        parse_downstream("shopify"),
    ),
    Benchmark("jsonld", "jsonld_refresh.py", ("--changes", "20"), (), parse_jsonld, (300, 600)),
    Benchmark(
        "wordpress-plugin",
        "wordpress_plugin.py",
        ("--rounds", "1", "--per-round", "10"),
        (),
        parse_wordpress,
    ),
    Benchmark("latency", "latency.py", ("--quick",), (), parse_latency, (600, 900)),
    Benchmark("soak", "soak.py", ("--minutes", "2"), (), parse_soak, (900, 3600)),
    Benchmark("export", "export.py", ("--products", "5000"), (), parse_export, (600, 1800)),
    Benchmark(
        "chaos",
        "chaos.py",
        ("--trials", "1", "--platform", "both", "--seed", "7"),
        ("--trials", "50", "--platform", "both"),
        parse_chaos,
        (900, 10800),
        figures_on_failure=True,
    ),
)


# -- running --------------------------------------------------------------------------------------


def rows_or_error(bench: Benchmark, done: subprocess.CompletedProcess[str]) -> list[Row]:
    if done.returncode != 0 and bench.figures_on_failure:
        with contextlib.suppress(FormatChanged):
            return bench.parse(done.stdout)
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        error = f"{bench.script} exited {done.returncode}: {tail[0][:200]}"
        return [Row(bench.name, "FAILED", error=error)]
    try:
        return bench.parse(done.stdout)
    except FormatChanged as exc:
        return [Row(bench.name, "FAILED", error=str(exc))]


class TimedOut(Exception):
    """A benchmark ran past its timeout; it and its children were stopped."""


def run_script(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run one benchmark in its own session, so that on a timeout its whole process group
    (the script and the agent, hub and simulators it started) gets SIGTERM, then SIGKILL:
    a script killed alone could leave its children running and holding the CPUs."""
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        raise TimedOut(out + err) from None
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def run_one(bench: Benchmark, quick: bool, stamp: str, timeout: float | None = None) -> list[Row]:
    args = bench.quick if quick else bench.full
    limit = timeout if timeout is not None else bench.timeout[0 if quick else 1]
    method = " ".join([f"bench/{bench.script}", *args])
    print(f"running {method} (timeout {limit:.0f} s) ...", flush=True)
    log = RESULTS / f"{stamp}-{bench.name}.log"
    t0 = time.monotonic()
    try:
        done = run_script([sys.executable, str(ROOT / "bench" / bench.script), *args], limit)
        log.write_text(done.stdout + done.stderr, encoding="utf-8")
    except TimedOut as exc:
        log.write_text(str(exc), encoding="utf-8")
        error = f"{bench.script} timed out after {limit:.0f} s (stopped; see {log.name})"
        rows = [Row(bench.name, "FAILED", error=error)]
    except OSError as exc:
        rows = [Row(bench.name, "FAILED", error=f"{bench.script}: {exc}")]
    else:
        rows = rows_or_error(bench, done)
    for r in rows:
        r.method = method
    print(f"  {time.monotonic() - t0:.0f} s", flush=True)
    return rows


def machine() -> dict[str, object]:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit, dirty = "", ""
    return {
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "git_dirty": bool(dirty),
    }


def left_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, all left-aligned (values carry their units)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(f"{c:<{w}}" for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def parse_timeouts(
    parser: argparse.ArgumentParser, values: Sequence[str], names: Sequence[str]
) -> dict[str, float]:
    """`--timeout` values: name -> seconds ("" for every benchmark)."""
    out: dict[str, float] = {}
    for value in values:
        name, _, seconds = value.rpartition("=")
        if name and name not in names:
            parser.error(f"--timeout {value}: no benchmark {name!r} (known: {', '.join(names)})")
        try:
            limit = float(seconds)
        except ValueError:
            limit = 0.0
        if not limit > 0:
            parser.error(f"--timeout {value}: expected a positive number of seconds")
        out[name] = limit
    return out


def main(argv: Sequence[str] | None = None) -> int:
    names = [b.name for b in BENCHMARKS]
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Run every benchmark, print one table of figures and write it as JSON to"
        " bench/results/. Without --quick it takes AN HOUR OR MORE (each benchmark's"
        " defaults).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smallest options: about 7 minutes on 2 CPUs"
    )
    parser.add_argument("--only", nargs="+", choices=names, metavar="NAME", help=", ".join(names))
    parser.add_argument(
        "--timeout",
        action="append",
        default=[],
        metavar="[NAME=]SECONDS",
        help="stop a benchmark after this long (it becomes a failed row and the run goes on):"
        " SECONDS for every benchmark, NAME=SECONDS for one (repeatable); default per"
        " benchmark, a few times its own estimate",
    )
    args = parser.parse_args(argv)
    timeouts = parse_timeouts(parser, args.timeout, names)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    info = machine()
    rows: list[Row] = []
    for bench in BENCHMARKS:
        if args.only is None or bench.name in args.only:
            limit = timeouts.get(bench.name, timeouts.get(""))
            rows.extend(run_one(bench, args.quick, stamp, limit))
    info["load_average_after"] = list(os.getloadavg())
    print()
    print(
        left_table(
            ["figure", "value", "target", "method", "peer"],
            [[r.figure, r.value, r.target, r.method, r.peer] for r in rows],
        )
    )
    failed = [r for r in rows if r.error]
    for r in failed:
        print(f"FAILED {r.figure}: {r.error}")
    if args.only is None and NOT_MEASURED:
        print("\nnot measured by any benchmark yet: " + "; ".join(NOT_MEASURED))
    out = RESULTS / f"{stamp}.json"
    report = {
        "when": stamp,
        "quick": args.quick,
        "machine": info,
        "rows": [dataclasses.asdict(r) for r in rows],
        "not_measured": list(NOT_MEASURED) if args.only is None else [],
    }
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten {out.relative_to(ROOT)}; machine {json.dumps(info)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
