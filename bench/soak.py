"""The resource soak (issue 16 item 4): the real agent at 100 changes/s with the hub down for the
middle third, its memory, open files, state database and outbox sampled throughout.

    uv run python bench/soak.py [--minutes 30] [--rate 100] [--products 1000]
                                [--down-minutes M] [--sample-every 5] [--seed 7] [--keep]

A `jsondir` store of `--products` products fed through spool files (a steady writer changes a
random product of that fixed set `--rate` times a second, so coalescing applies), the agent
(`python -m bridge_agent run`) and the reference hub in their own processes on loopback, in a
temporary directory. The hub is stopped for the middle third of the run (`--down-minutes`,
default a third of `--minutes`) and started again on the same port and database. Every
`--sample-every` seconds: the agent's RSS (`VmRSS`), open fds (`/proc/<pid>/fd`), the state
database and its WAL, the outbox rows. After the writer stops, the hub must hold every product's
final state. Prints the samples' start/peak/end, the medians before the outage and over the last
quarter, the growth per minute over the last half, and every bound broken; exits 1 if any was.
The scenario and the bounds (with their reasons) are `bridge_agent/testing/soak.py`, shared with
the 2-minute CI version `tests/test_soak.py`. `--keep` keeps the directory (logs, samples.jsonl).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from common import say, table

from bridge_agent.testing.soak import (
    SUMMARY_HEADER,
    SoakSettings,
    dump_samples,
    run_soak,
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="the writer's run (%(default)s)")
    p.add_argument("--rate", type=float, default=100.0, help="changes a second (%(default)s)")
    p.add_argument("--products", type=int, default=1000, help="the fixed set (%(default)s)")
    p.add_argument(
        "--down-minutes", type=float, default=None, help="hub outage (default: a third of the run)"
    )
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds (%(default)s)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seconds = args.minutes * 60
    down = (args.down_minutes * 60) if args.down_minutes is not None else seconds / 3
    settings = SoakSettings(
        rate=args.rate,
        seconds=seconds,
        down_at=(seconds - down) / 2,
        down_for=down,
        products=args.products,
        sample_every=args.sample_every,
        seed=args.seed,
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    say(
        f"soak: {args.rate:g} changes/s over {args.products} products for {args.minutes:g} min,"
        f" hub down from {settings.down_at:.0f} s for {down:.0f} s; in {workdir}"
    )
    try:
        result = run_soak(workdir, settings, progress=say)
        dump_samples(result, workdir / "samples.jsonl")
    except BaseException:
        say(f"failed; logs kept in {workdir}")
        raise
    say("")
    say(
        f"changes: {result.changes} at {result.achieved_rate:.1f}/s (writer late by at most"
        f" {result.writer_lag_max * 1000:.0f} ms); first import {result.import_seconds:.1f} s;"
        f" {len(result.samples)} samples"
    )
    recovered = (
        "not seen" if result.recovered_seconds is None else f"{result.recovered_seconds:.0f} s"
    )
    say(
        f"hub back -> outbox at its steady level: {recovered};"
        f" writer stopped -> hub holds every product: {result.settle_seconds:.1f} s;"
        f" products behind: {len(result.behind)}"
    )
    say("")
    say(table(list(SUMMARY_HEADER), result.summary_rows()))
    say("")
    broken = result.violations()
    if args.keep or broken:
        say(f"kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    # Last, so that bench/run's failed row (the output's last line) names a broken bound.
    for line in broken:
        say(f"BOUND BROKEN: {line}")
    if not broken:
        say(
            f"bounds held: outbox <= {args.products} products, nothing lost, peaks, plateaus"
            " and growth within bridge_agent.testing.soak.Bounds"
        )
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
