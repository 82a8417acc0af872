"""Import benchmark: a whole WooCommerce catalog through the real agent, against the latency floor.

What it measures, and why: a first start imports the store's whole catalog, and on a real host
every REST request waits for PHP. With `concurrency` requests in flight and `latency` per
request, an import cannot beat the floor `requests x latency / concurrency`; anything above it
is the agent's own work or idle request slots. Targets (from the issue): wall time within 1.3x of
the floor for 10 000 products (20 % variable) at 50 ms simulated latency, and a peak RSS of the
agent of at most 80 MB, also for 100 000 products. Printed per scenario:

- requests the store saw, from the simulator's `/__sim/stats` (route x status): listing pages,
  variation listings (one per variable product), category pages, other REST requests (the
  agent's store check), and requests outside the REST API (image URL checks, not slowed by the
  latency fault, so left out of the floor);
- the floor, the import's wall time (from starting the agent process until its import run is
  `done`, and the run's own start-to-finish from the state store) and their ratio to the floor;
  products/s; the time until the outbox is empty too (everything shipped to the hub);
- CPU time per product of the agent (`utime + stime` from `/proc/<pid>/stat`, every thread),
  at the end of the import and once shipped; CPU of the hub and of the simulator;
- the agent's peak RSS (`VmHWM` of `/proc/<pid>/status`, read before it is stopped) and its RSS
  along the way, so a growth with the catalog shows apart from the fixed cost of the imports.

How: three processes on loopback, as in production. The simulator (`python -m bridge_agent
simulate woocommerce --products N --latency-ms L --seed S`: 20 % variable products, latency
+/-10 % jitter, a JSON render cache warmed before it answers) and the reference hub (`python -m
bridge_agent hub`) are started first and waited for (`/__sim/info`, `/healthz`). Then the agent
itself, `python -m bridge_agent --config <tmp>/agent.toml --log-format json run`, with one
`woocommerce` store pointing at the simulator (the keys from `/__sim/info`, `concurrency` from
`--concurrency`, default 4 as the store default), health on a free port, no webhooks, no spool,
polls and reconciliation an hour away so only the import talks to the store. The benchmark
reads the agent's state directory read-only (`StateStore.open(dir, read_only=True)`: the import
run and the outbox depth) every 0.1 s, rather than the agent's `/status`, whose queries would
run in the agent and cost it CPU. A second scenario imports 100 000 products at a small latency
(5 ms by default, to keep the run short) for the peak RSS at scale.

Every process is stopped (SIGTERM, then SIGKILL) and the temporary directory removed at the end,
also on errors, Ctrl-C and SIGTERM. A benchmark prints, it never asserts timing. Run from the
repository root (with the defaults, about 7 minutes on 2 CPUs while the agent checks image URLs
through httpx, most of it the 100 000-product scenario; see docs/performance.md):

    uv run python bench/import.py [--products 10000] [--latency-ms 50] [--concurrency 4]
                                  [--large-products 100000] [--large-latency-ms 5]
                                  [--skip-large] [--seed 7] [--profile OUT.svg]

`--profile OUT` records the agent with py-spy during the first scenario (`uv run --with py-spy
python bench/import.py --profile /tmp/import.svg`; a `.txt` name gives collapsed stacks).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from common import (
    Sim,
    agent_command,
    cpu_seconds,
    hub_process,
    memory_mb,
    process,
    say,
    simulator,
    spy,
    table,
    tail,
    write_agent_config,
)

from bridge_agent.errors import StateStoreError
from bridge_agent.store import StateStore

TOKEN = "bench-hub-token-3be81f06"  # loopback only, a throwaway hub
AGENT_ID = "bench-import"
STORE_ID = "main"
PER_PAGE = 100  # the adapter's default (the wc/v3 maximum)
POLL_S = 0.1  # how often the state directory is read
TARGET_RATIO = 1.3
TARGET_RSS_MB = 80.0
REST = "/wp-json/"


# -- configuration -------------------------------------------------------------------------------


def write_config(workdir: Path, sim: Sim, hub_url: str, concurrency: int) -> Path:
    store = f"""\
concurrency = {concurrency}
poll_interval = "1h"
reconcile_interval = "1h"
"""
    return write_agent_config(
        workdir, sim, agent_id=AGENT_ID, store_id=STORE_ID, hub_url=hub_url, token=TOKEN,
        store=store,
    )  # fmt: skip


# -- one scenario --------------------------------------------------------------------------------


@dataclasses.dataclass
class Requests:
    """Requests the simulator answered during the run, by kind (all statuses)."""

    listing: int = 0
    variations: int = 0
    categories: int = 0
    other_rest: int = 0
    outside_rest: int = 0  # image URL checks (/wp-content/uploads): no simulated latency
    errors: int = 0  # REST answers with status >= 400 (retried by the client)
    by_route: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)

    @property
    def rest(self) -> int:
        return self.listing + self.variations + self.categories + self.other_rest


def requests_between(before: dict[str, Any], after: dict[str, Any]) -> Requests:
    out = Requests()
    old = before.get("requests", {})
    for route, statuses in after.get("requests", {}).items():
        if route.split(" ", 1)[-1].startswith("/__sim/"):
            continue
        diff = {s: n - old.get(route, {}).get(s, 0) for s, n in statuses.items()}
        diff = {s: n for s, n in diff.items() if n}
        if not diff:
            continue
        out.by_route[route] = diff
        count = sum(diff.values())
        method, _, path = route.partition(" ")
        if not path.startswith(REST):
            out.outside_rest += count
            continue
        out.errors += sum(n for s, n in diff.items() if int(s) >= 400)
        if method == "GET" and path.endswith("/products"):
            out.listing += count
        elif method == "GET" and path.endswith("/variations"):
            out.variations += count
        elif method == "GET" and path.endswith("/products/categories"):
            out.categories += count
        else:
            out.other_rest += count
    return out


@dataclasses.dataclass
class Sample:
    at_s: float  # since the agent process started
    done: int
    rss_mb: float


@dataclasses.dataclass
class Result:
    name: str
    products: int
    latency_ms: float
    concurrency: int
    sim_items: int = 0  # products + variations in the store
    sim_ready_s: float = 0.0
    requests: Requests = dataclasses.field(default_factory=Requests)
    imported: int = 0
    pages: int = 0
    start_s: float = 0.0  # agent process start -> run row created (Python imports, open, ...)
    import_s: float = 0.0  # agent process start -> run done
    run_s: float = 0.0  # run started_at -> finished_at (state store clock)
    shipped_s: float = 0.0  # agent process start -> run done and outbox empty
    agent_cpu_import_s: float = 0.0
    agent_cpu_total_s: float = 0.0
    hub_cpu_s: float | None = None
    sim_cpu_s: float | None = None
    peak_rss_mb: float = 0.0
    rss_end_mb: float = 0.0
    samples: list[Sample] = dataclasses.field(default_factory=list)
    hub_items: int = 0
    report: dict[str, Any] = dataclasses.field(default_factory=dict)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def floor_s(self) -> float:
        return self.requests.rest * self.latency_ms / 1000 / self.concurrency

    def ratio(self, wall_s: float) -> float:
        return wall_s / self.floor_s if self.floor_s else math.inf

    @property
    def rate(self) -> float:
        return self.imported / self.import_s if self.import_s else 0.0


async def watch(
    agent: subprocess.Popen[bytes],
    state_dir: Path,
    log_path: Path,
    started: float,
    expected: int,
    deadline_s: float,
    result: Result,
) -> None:
    """Poll the state directory (read-only) until the import is done and the outbox is empty."""
    pid = agent.pid
    stack = contextlib.AsyncExitStack()
    store: StateStore | None = None
    next_note = 10.0
    run_seen = False
    try:
        while True:
            now = time.perf_counter() - started
            if agent.poll() is not None:
                raise RuntimeError(
                    f"the agent exited with {agent.returncode} during the import:\n{tail(log_path)}"
                )
            if now > deadline_s:
                raise RuntimeError(
                    f"import not finished after {deadline_s:.0f} s (bounded wait):\n"
                    f"{tail(log_path)}"
                )
            if store is None:
                with contextlib.suppress(StateStoreError):  # not created or migrated yet
                    store = await stack.enter_async_context(
                        StateStore.open(state_dir, read_only=True)
                    )
            run = None
            if store is not None:
                with contextlib.suppress(StateStoreError):  # busy: try again next round
                    run = await store.last_run(STORE_ID, "import")
            rss = memory_mb(pid).get("VmRSS", 0.0)
            if run is not None:
                if not run_seen:
                    run_seen = True
                    result.start_s = now
                result.samples.append(Sample(now, run.done, rss))
                if run.state == "failed":
                    raise RuntimeError(f"the import run failed: {run.error}\n{tail(log_path)}")
                if run.state == "done" and not result.import_s:
                    result.import_s = now
                    result.agent_cpu_import_s = cpu_seconds(pid) or 0.0
                    if run.finished_at is not None:
                        result.run_s = (run.finished_at - run.started_at) / 1000
                    result.imported = run.done
                    result.report = run.report or {}
                    result.pages = int(result.report.get("pages", 0))
                    say(
                        f"  import done after {now:.1f} s ({run.done:,} products);"
                        " waiting for the outbox to empty ..."
                    )
                if result.import_s and store is not None:
                    with contextlib.suppress(StateStoreError):
                        if (await store.stats()).pending == 0:
                            result.shipped_s = now
                            return
            if now >= next_note:
                done = run.done if run is not None else 0
                say(
                    f"  ... {now:.0f} s: {done:,}/{expected:,} products imported,"
                    f" agent RSS {rss:.0f} MB, load {os.getloadavg()[0]:.2f}"
                )
                next_note += 10.0
            await asyncio.sleep(POLL_S)
    finally:
        await stack.aclose()


def run_scenario(
    name: str,
    workdir: Path,
    *,
    products: int,
    latency_ms: float,
    concurrency: int,
    seed: int,
    profile: Path | None = None,
) -> Result:
    result = Result(name, products, latency_ms, concurrency)
    workdir.mkdir()
    say(f"{name}: {products:,} products, latency {latency_ms:g} ms, concurrency {concurrency}")
    say("  starting the simulator (generating the catalog) and the hub ...")
    with (
        simulator(
            workdir, "woocommerce", products=products, latency_ms=latency_ms, seed=seed
        ) as sim,
        hub_process(workdir, TOKEN) as hub_proc,
    ):
        result.sim_ready_s = sim.ready_s
        before = httpx.get(f"{sim.url}/__sim/stats", timeout=30).json()
        result.sim_items = int(before.get("items", 0))
        say(
            f"  simulator ready after {sim.ready_s:.1f} s: {before.get('products', 0):,} products,"
            f" {result.sim_items:,} items with variations; starting the agent ..."
        )
        config = write_config(workdir, sim, hub_proc.url, concurrency)
        hub_cpu0 = cpu_seconds(hub_proc.pid)
        sim_cpu0 = cpu_seconds(sim.pid)
        result.load_before = os.getloadavg()
        command = agent_command(config)
        log_path = workdir / "agent.log"
        # Bounded: ten times the floor of a catalog with 25 % variable products, plus 2 minutes.
        floor_guess = products * 1.25 / PER_PAGE * 20 * latency_ms / 1000 / concurrency
        deadline = 10 * floor_guess + 120 + products / 200
        started = time.perf_counter()
        with (
            process(command, log_path) as agent,
            spy(profile, agent.pid, workdir, script="bench/import.py", what="the agent"),
        ):
            asyncio.run(
                watch(agent, workdir / "state", log_path, started, products, deadline, result)
            )
            result.agent_cpu_total_s = cpu_seconds(agent.pid) or 0.0
            mem = memory_mb(agent.pid)
            result.peak_rss_mb = mem.get("VmHWM", 0.0)
            result.rss_end_mb = mem.get("VmRSS", 0.0)
        hub_cpu1 = cpu_seconds(hub_proc.pid)
        sim_cpu1 = cpu_seconds(sim.pid)
        if hub_cpu0 is not None and hub_cpu1 is not None:
            result.hub_cpu_s = hub_cpu1 - hub_cpu0
        if sim_cpu0 is not None and sim_cpu1 is not None:
            result.sim_cpu_s = sim_cpu1 - sim_cpu0
        result.load_after = os.getloadavg()
        after = httpx.get(f"{sim.url}/__sim/stats", timeout=30).json()
        result.requests = requests_between(before, after)
        reply = httpx.get(
            f"{hub_proc.url}/v1/stats", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )
        if reply.status_code == 200:
            result.hub_items = int(reply.json().get("items", 0))
    return result


# -- output --------------------------------------------------------------------------------------


def _load(values: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in values)


def print_report(results: Sequence[Result], total_s: float) -> None:
    say("")
    say(
        f"bench/import.py: {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" {platform.platform()}, per_page {PER_PAGE}"
    )
    say("")
    say("requests the store answered during the run (simulator /__sim/stats):")
    rows = []
    for r in results:
        q = r.requests
        rows.append(
            [
                r.name, f"{r.products:,}", f"{r.sim_items:,}", f"{q.listing:,}",
                f"{q.variations:,}", f"{q.categories:,}", f"{q.other_rest:,}", f"{q.rest:,}",
                f"{q.rest / max(r.imported, 1):.3f}", f"{q.errors:,}", f"{q.outside_rest:,}",
            ]
        )  # fmt: skip
    say(
        table(
            [
                "scenario", "products", "items", "listing", "variations", "categories",
                "other REST", "REST total", "REST/product", "REST errors", "image checks",
            ],
            rows,
        )
    )  # fmt: skip
    say("")
    say(f"wall time against the floor (REST requests x latency / concurrency), target <= "
        f"{TARGET_RATIO}x:")  # fmt: skip
    rows = []
    for r in results:
        verdict = "ok" if r.ratio(r.import_s) <= TARGET_RATIO else f"ABOVE {TARGET_RATIO}x"
        rows.append(
            [
                r.name, f"{r.latency_ms:g}", f"{r.concurrency}", f"{r.floor_s:.1f}",
                f"{r.start_s:.1f}", f"{r.run_s:.1f}", f"{r.import_s:.1f}",
                f"{r.ratio(r.run_s):.2f}", f"{r.ratio(r.import_s):.2f}", verdict,
                f"{r.rate:,.0f}", f"{r.shipped_s:.1f}", f"{r.ratio(r.shipped_s):.2f}",
            ]
        )  # fmt: skip
    say(
        table(
            [
                "scenario", "latency ms", "conc.", "floor s", "agent start s", "run s",
                "import s", "run/floor", "import/floor", "target", "products/s",
                "shipped s", "shipped/floor",
            ],
            rows,
        )
    )  # fmt: skip
    say(
        "  import s: agent process start -> import run done; run s: the run's own start ->"
        " finish; shipped s: process start -> outbox empty"
    )
    say("")
    say(f"CPU and memory (agent peak RSS target <= {TARGET_RSS_MB:.0f} MB):")
    rows = []
    for r in results:
        n = max(r.imported, 1)
        verdict = "ok" if r.peak_rss_mb <= TARGET_RSS_MB else f"ABOVE {TARGET_RSS_MB:.0f} MB"
        hub_cpu = "-" if r.hub_cpu_s is None else f"{r.hub_cpu_s:.1f} ({r.hub_cpu_s * 1e6 / n:.0f})"
        sim_cpu = "-" if r.sim_cpu_s is None else f"{r.sim_cpu_s:.1f}"
        first = r.samples[0].rss_mb if r.samples else 0.0
        busy = f"{100 * r.agent_cpu_import_s / r.import_s:.0f}" if r.import_s else "-"
        rows.append(
            [
                r.name, f"{r.agent_cpu_import_s:.1f}", busy, f"{r.agent_cpu_total_s:.1f}",
                f"{r.agent_cpu_import_s * 1e6 / n:.0f}", f"{r.agent_cpu_total_s * 1e6 / n:.0f}",
                hub_cpu, sim_cpu, f"{first:.1f}", f"{r.rss_end_mb:.1f}", f"{r.peak_rss_mb:.1f}",
                verdict,
            ]
        )  # fmt: skip
    say(
        table(
            [
                "scenario", "agent CPU s (import)", "% of wall", "(shipped)", "us/product (import)",
                "(shipped)", "hub CPU s (us/product)", "sim CPU s", "RSS at run start MB",
                "RSS end MB", "peak RSS MB", "target",
            ],
            rows,
        )
    )  # fmt: skip
    for r in results:
        say("")
        say(f"{r.name}: agent RSS along the import (MB), by products imported:")
        marks = [0.0, 0.25, 0.5, 0.75, 1.0]
        points = []
        for mark in marks:
            want = mark * max(r.imported, 1)
            sample = next((s for s in r.samples if s.done >= want), None)
            if sample is not None:
                points.append(f"{sample.done:,} at {sample.at_s:.1f} s: {sample.rss_mb:.1f}")
        say("  " + "; ".join(points))
        warnings = r.report.get("warnings", {})
        images = warnings.get("images") or {}
        say(
            f"  import report: {r.imported:,} imported in {r.pages} pages;"
            f" {warnings.get('no_image', 0)} without image, {warnings.get('no_price', 0)}"
            f" without price, {len(warnings.get('duplicate_sku', []))} duplicate SKU(s)"
            + (
                f"; {images.get('checked', 0)} image URL(s) checked"
                f" ({images.get('unreachable', 0)} unreachable,"
                f" {images.get('oversized', 0)} oversized)"
                if images
                else ""
            )
        )
        say(
            f"  hub items received: {r.hub_items:,}; simulator ready after {r.sim_ready_s:.1f} s;"
            f" load average before {_load(r.load_before)}, after {_load(r.load_after)}"
        )
        say(f"  routes: {json.dumps(r.requests.by_route, sort_keys=True)}")
    say("")
    say(
        f"total run time {total_s:.1f} s; the machine's other work slows all three processes:"
        " compare runs side by side"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--products", type=int, default=10_000, help="default %(default)s")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="default %(default)s")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="store concurrency (default %(default)s)"
    )
    parser.add_argument("--large-products", type=int, default=100_000, help="default %(default)s")
    parser.add_argument("--large-latency-ms", type=float, default=5.0, help="default %(default)s")
    parser.add_argument("--skip-large", action="store_true", help="only the first scenario")
    parser.add_argument("--seed", type=int, default=7, help="catalog seed (default %(default)s)")
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy flame graph of the first scenario"
    )
    args = parser.parse_args(argv)
    if args.products < 1 or args.large_products < 1:
        parser.error("--products and --large-products must be at least 1")
    if not 1 <= args.concurrency <= 64:
        parser.error("--concurrency must be 1 to 64 (the store setting's range)")
    if args.latency_ms < 0 or args.large_latency_ms < 0:
        parser.error("latencies must not be negative")
    # SIGTERM unwinds like Ctrl-C, so every child process is stopped and the directory removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    started = time.perf_counter()
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bridge-bench-import-") as tmp:
        results.append(
            run_scenario(
                "import", Path(tmp) / "small",
                products=args.products, latency_ms=args.latency_ms,
                concurrency=args.concurrency, seed=args.seed, profile=args.profile,
            )
        )  # fmt: skip
        if not args.skip_large:
            results.append(
                run_scenario(
                    "large", Path(tmp) / "large",
                    products=args.large_products, latency_ms=args.large_latency_ms,
                    concurrency=args.concurrency, seed=args.seed,
                )
            )  # fmt: skip
    print_report(results, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
