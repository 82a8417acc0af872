"""The long chaos run: `bridge_agent/testing/chaos.py`'s trials, one after the other.

    python bench/chaos.py --trials N [--platform woocommerce|shopify|both] [--seed S]
                          [--duration SECONDS] [--products N] [--settle SECONDS] [--keep]

Trial i of a platform uses seed S + i (S defaults to a random one, printed). Each trial prints
one line as it ends; a failing trial prints its differences and the command that replays it.
At the end, a summary with fixed labels, one `label: value` per line after `chaos summary`
(bench/run.py parses them):

    chaos summary
    trials: 20
    products checked: 612
    lost: 0
    duplicates delivered: 3
    double writes: 0
    overwrites: 0
    raced in the read-write window: 1
    restarts: 97
    hub outages: 41
    converge p50 s: 3.1
    converge max s: 14.2
    failing seeds: none

`failing seeds` is `none` or `platform:seed` items separated by `, `; each is followed by a
`replay:` line. The exit code is 1 when any trial failed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import signal
import statistics
import sys
import time

from common import say

from bridge_agent import logs
from bridge_agent.testing.chaos import PLATFORMS, TrialReport, run_trial


def summary(reports: list[TrialReport]) -> list[str]:
    converged = sorted(r.converge_s for r in reports if r.converge_s is not None)
    failing = [r for r in reports if not r.ok]
    p50 = f"{statistics.median(converged):.1f}" if converged else "n/a"
    top = f"{converged[-1]:.1f}" if converged else "n/a"
    lines = [
        "chaos summary",
        f"trials: {len(reports)}",
        f"products checked: {sum(r.products_checked for r in reports)}",
        f"lost: {sum(r.lost for r in reports)}",
        f"duplicates delivered: {sum(r.duplicates for r in reports)}",
        f"double writes: {sum(r.double_writes for r in reports)}",
        f"overwrites: {sum(r.overwrites for r in reports)}",
        f"raced in the read-write window: {sum(r.raced for r in reports)}",
        f"restarts: {sum(r.restarts for r in reports)}",
        f"hub outages: {sum(r.hub_outages for r in reports)}",
        f"converge p50 s: {p50}",
        f"converge max s: {top}",
        "failing seeds: "
        + (", ".join(f"{r.platform}:{r.seed}" for r in failing) if failing else "none"),
    ]
    lines += [f"replay: {r.replay()}" for r in failing]
    return lines


async def main(args: argparse.Namespace) -> int:
    # SIGTERM (bench/run's timeout, a plain `kill`) cancels the run like Ctrl-C does, so the
    # trial in progress stops its agent, hub and simulator instead of leaving them running.
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    platforms = PLATFORMS if args.platform == "both" else (args.platform,)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    say(
        f"chaos: {args.trials} trial(s) per platform ({', '.join(platforms)}), seeds from {seed},"
        f" {args.duration:g} s of chaos each, settle limit {args.settle:g} s"
    )
    reports: list[TrialReport] = []
    started = time.monotonic()
    stopped = False
    try:
        for i in range(args.trials):
            for platform in platforms:
                report = await run_trial(
                    seed + i, platform, duration=args.duration, products=args.products,
                    settle=args.settle, keep=args.keep,
                )  # fmt: skip
                reports.append(report)
                say(report.line() if report.ok else report.failure())
                if report.ok:
                    for note in report.notes:
                        say(f"  note: {note}")
    except asyncio.CancelledError:  # SIGTERM: the trial in progress cleaned up after itself
        stopped = True
        say(f"stopped: the summary covers the {len(reports)} trial(s) that finished")
    say(f"({time.monotonic() - started:.0f} s in all)")
    for line in summary(reports):
        say(line)
    if stopped:
        return 143
    return 0 if all(r.ok for r in reports) else 1


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10, help="trials per platform")
    parser.add_argument("--platform", choices=[*PLATFORMS, "both"], default="both")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first trial")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of chaos a trial")
    parser.add_argument("--products", type=int, default=30, help="products in the store")
    parser.add_argument("--settle", type=float, default=90.0, help="settle limit in seconds")
    parser.add_argument("--keep", action="store_true", help="keep every trial's folder")
    return parser.parse_args(argv)


if __name__ == "__main__":
    logs.configure(json=False, level="error")  # the trial lines, not the oracle's adapter logs
    # The simulator's server logs every request a SIGKILLed agent left half sent: expected here.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
