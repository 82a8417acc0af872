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

`--platform shopify` measures the Shopify adapter instead (issue 14), where the limit is not the
latency but the store's leaky bucket of query-cost points (Shopify's standard plan: 2000 points,
restored at 100 points/s). Scenarios, each on a fresh simulator, hub and state directory:

- `bulk`: `--products` imported by bulk operation (`bulk_import = true`); the floor is the
  simulated operation (objects at 20 000 per second), a few dozen points; what bounds the import
  is the agent's own work, printed as its CPU share of the wall time;
- the incremental load, on the same agent with its webhooks registered: `--change-rate` title
  changes a second for `--incremental-seconds` through the simulator's mutation API, with the
  points/s the simulator charged per 10-s window against the restore rate (and against `bucket +
  rate x t`, as the bucket starts full), `THROTTLED` answers, and the change-to-hub latency of a
  sample read back from the hub's inspection API;
- `paged`: `--paged-products` imported by paged queries (`bulk_import = false`), whose floor is
  `(points - bucket) / restore rate`. Its catalog is smaller than the bulk one because paged
  reads are bound by the bucket alone: 10 000 products would take over half an hour at 100
  points/s, so the output extrapolates the full catalog from the measured points per product,
  and says so.

GraphQL requests are counted by operation name at a small reverse proxy between the agent and
the simulator (the simulator counts by route), with their requested and actual cost; the totals
(`points_spent`, `throttled`, `max_cost_exceeded`, `bulk_operations`) come from `/__sim/stats`.
Image URL checks are off: the simulated images are Shopify CDN addresses, not on this machine.
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
import random
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from common import (
    LoopbackProxy,
    Sim,
    agent_command,
    cpu_seconds,
    free_port,
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


def reset_peak_rss(pid: int) -> bool:
    """Reset `VmHWM` to the current RSS (Linux `clear_refs` 5); False where that is refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5", encoding="ascii")
    except OSError:
        return False
    return True


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


# -- Shopify: bulk import against paged queries, then an incremental load -------------------------

GRAPHQL = "/graphql.json"
BULK_RATE = 20_000.0  # objects/s a simulated bulk operation reads (the simulator's default)
PRODUCT_POINTS = (
    60  # a product as the adapter reads it in a paged query (docs/platforms/shopify.md)
)
WINDOW_S = 10.0  # points/s and throttling are printed per window of this length


@dataclasses.dataclass
class Operation:
    """What the agent sent under one GraphQL operation name, and what Shopify charged for it."""

    requests: int = 0
    requested: float = 0.0  # requestedQueryCost: what the bucket must hold for the query to run
    actual: float = 0.0  # actualQueryCost: what it took (the difference is refunded)
    throttled: int = 0

    def minus(self, other: Operation) -> Operation:
        return Operation(
            self.requests - other.requests,
            self.requested - other.requested,
            self.actual - other.actual,
            self.throttled - other.throttled,
        )


def operation_of(body: bytes) -> str:
    """The request's `operationName`, else the name after `query`/`mutation` in its document."""
    try:
        doc = json.loads(body)
    except ValueError:
        return "(not JSON)"
    if not isinstance(doc, dict):
        return "(not an object)"
    name = doc.get("operationName")
    if isinstance(name, str) and name:
        return name
    match = re.match(r"\s*(query|mutation)\s+(\w+)", str(doc.get("query", "")))
    return match.group(2) if match else "(anonymous)"


def find_key(value: Any, key: str) -> Any:
    """The first `key` anywhere in a decoded JSON value (a bulk operation's `objectCount`)."""
    if isinstance(value, dict):
        if key in value and value[key] is not None:
            return value[key]
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found = find_key(item, key)
            if found is not None:
                return found
    return None


class GraphQLProxy(LoopbackProxy):
    """A reverse proxy on a free loopback port in front of the Shopify simulator, counting the
    agent's GraphQL requests by operation name (the simulator counts by route only).

    It runs its own event loop in a thread, so the benchmark's blocking calls never hold up the
    agent. Bodies are read whole and forwarded unchanged; the `Host` header is the simulator's,
    so a bulk operation's result URL points at the simulator itself (a download goes to
    Shopify's storage, not the Admin API, and is counted from the simulator's routes instead).
    """

    name = "GraphQL proxy"
    max_body = 64 * 1024 * 1024

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self._ops: dict[str, Operation] = {}
        self.object_count = 0  # the last objectCount a bulk operation poll reported
        # (perf_counter, currentlyAvailable) of every answer: how full the bucket was while the
        # agent had work queued tells whether the cost limit or the agent set the pace.
        self.levels: list[tuple[float, float]] = []

    def snapshot(self) -> dict[str, Operation]:
        with self._lock:
            return {k: dataclasses.replace(v) for k, v in self._ops.items()}

    def observe(self, request: web.Request, body: bytes, reply: bytes) -> None:
        if request.path.endswith(GRAPHQL):
            self._count(operation_of(body), reply)

    def _count(self, name: str, reply: bytes) -> None:
        try:
            answer = json.loads(reply)
        except ValueError:
            answer = {}
        cost = answer.get("extensions", {}).get("cost", {}) if isinstance(answer, dict) else {}
        errors = answer.get("errors") if isinstance(answer, dict) else None
        throttled = isinstance(errors, list) and any(
            isinstance(e, dict) and e.get("extensions", {}).get("code") == "THROTTLED"
            for e in errors
        )
        objects = find_key(answer.get("data"), "objectCount") if isinstance(answer, dict) else None
        with self._lock:
            op = self._ops.setdefault(name, Operation())
            op.requests += 1
            op.requested += float(cost.get("requestedQueryCost") or 0)
            op.actual += float(cost.get("actualQueryCost") or 0)
            op.throttled += int(throttled)
            available = cost.get("throttleStatus", {}).get("currentlyAvailable")
            if available is not None:
                self.levels.append((time.perf_counter(), float(available)))
            if objects is not None:
                self.object_count = int(objects)


def operations_between(
    before: dict[str, Operation], after: dict[str, Operation]
) -> dict[str, Operation]:
    out = {}
    for name, now in after.items():
        diff = now.minus(before.get(name, Operation()))
        if diff.requests:
            out[name] = diff
    return out


@dataclasses.dataclass
class Window:
    """One window of the incremental load, from the simulator's `/__sim/stats`."""

    start_s: float  # since the first change
    seconds: float
    changes: int  # title changes sent in the window
    points: float
    throttled: int
    requests: int  # GraphQL requests the simulator answered
    level: float = math.nan  # median currentlyAvailable the answers in the window reported

    @property
    def points_per_s(self) -> float:
        return self.points / self.seconds if self.seconds else 0.0


@dataclasses.dataclass
class Incremental:
    seconds: float
    rate: float
    changes: int = 0
    patch_errors: int = 0
    windows: list[Window] = dataclasses.field(default_factory=list)
    drain_s: float = 0.0  # after the last change, until the hub held every sampled change
    drained: bool = False
    sampled: int = 0
    arrived: int = 0
    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    operations: dict[str, Operation] = dataclasses.field(default_factory=dict)
    webhooks: dict[str, Any] = dataclasses.field(default_factory=dict)
    throttled: int = 0
    points: float = 0.0
    agent_cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    sent_s: float = 0.0  # how long sending the changes took (the driver may fall behind)
    t0: float = 0.0  # perf_counter of the first change


@dataclasses.dataclass
class ShopifyResult:
    name: str
    bulk: bool
    products: int
    latency_ms: float
    concurrency: int
    bucket_max: float
    restore_rate: float
    variants: int = 0
    media: int = 0
    sim_ready_s: float = 0.0
    imported: int = 0
    start_s: float = 0.0
    import_s: float = 0.0
    run_s: float = 0.0
    shipped_s: float = 0.0
    operations: dict[str, Operation] = dataclasses.field(default_factory=dict)
    routes: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    graphql_requests: int = 0  # at the simulator, all statuses
    downloads: int = 0  # bulk result downloads (GET /bulk/...)
    points: float = 0.0  # /__sim/stats points_spent during the import
    throttled: int = 0
    max_cost_exceeded: int = 0
    bulk_operations: int = 0
    object_count: int = 0
    agent_cpu_import_s: float = 0.0
    agent_cpu_total_s: float = 0.0
    peak_rss_mb: float = 0.0
    hub_items: int = 0
    report: dict[str, Any] = dataclasses.field(default_factory=dict)
    incremental: Incremental | None = None

    @property
    def floor_s(self) -> float:
        """Paged: the points beyond the full bucket at the restore rate. Bulk: the simulated
        operation reading its objects at `BULK_RATE` (its points are negligible)."""
        if self.bulk:
            return self.object_count / BULK_RATE
        return max(0.0, self.points - self.bucket_max) / self.restore_rate

    @property
    def rate(self) -> float:
        return self.imported / self.import_s if self.import_s else 0.0


def sim_delta(before: dict[str, Any], after: dict[str, Any], key: str) -> float:
    return float(after.get(key, 0)) - float(before.get(key, 0))


def graphql_requests(stats: dict[str, Any]) -> int:
    return sum(
        n
        for route, statuses in stats.get("requests", {}).items()
        if route.endswith(GRAPHQL)
        for n in statuses.values()
    )


def read_state(state_dir: Path) -> tuple[dict[str, Any] | None, int | None]:
    """The last import run (as a row) and the outbox's pending count, through a connection of its
    own, read-only, closed at once. A connection kept open from before the agent created and
    migrated the database can keep failing (seen once: the import done, the watcher still seeing
    nothing), so each look opens afresh; (None, None) while the database cannot be read."""
    path = state_dir / "state.sqlite"
    if not path.exists():
        return None, None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None, None
    try:
        db.row_factory = sqlite3.Row
        row = db.execute(
            "SELECT state, done, started_at, finished_at, error, report FROM runs"
            " WHERE store = ? AND kind = 'import' ORDER BY id DESC LIMIT 1",
            (STORE_ID,),
        ).fetchone()
        pending = db.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
        return (dict(row) if row is not None else None), int(pending)
    except sqlite3.Error:
        return None, None
    finally:
        db.close()


def watch_shopify(
    agent: subprocess.Popen[bytes],
    state_dir: Path,
    log_path: Path,
    started: float,
    expected: int,
    deadline_s: float,
    result: ShopifyResult,
) -> None:
    """Poll the state directory until the import is done and the outbox is empty."""
    next_note = 10.0
    while True:
        now = time.perf_counter() - started
        if agent.poll() is not None:
            raise RuntimeError(
                f"the agent exited with {agent.returncode} during the import:\n{tail(log_path)}"
            )
        if now > deadline_s:
            raise RuntimeError(
                f"import not finished after {deadline_s:.0f} s (bounded wait):\n{tail(log_path)}"
            )
        run, pending = read_state(state_dir)
        if run is not None:
            if not result.start_s:
                result.start_s = now
            if run["state"] == "failed":
                raise RuntimeError(f"the import run failed: {run['error']}\n{tail(log_path)}")
            if run["state"] == "done" and not result.import_s:
                result.import_s = now
                result.agent_cpu_import_s = cpu_seconds(agent.pid) or 0.0
                if run["finished_at"] is not None:
                    result.run_s = (run["finished_at"] - run["started_at"]) / 1000
                result.imported = int(run["done"])
                result.report = json.loads(run["report"] or "{}")
                say(
                    f"  import done after {now:.1f} s ({result.imported:,} products);"
                    " waiting for the outbox to empty ..."
                )
            if result.import_s and pending == 0:
                result.shipped_s = now
                return
        if now >= next_note:
            done = int(run["done"]) if run is not None else 0
            rss = memory_mb(agent.pid).get("VmRSS", 0.0)
            say(
                f"  ... {now:.0f} s: {done:,}/{expected:,} products imported,"
                f" agent RSS {rss:.0f} MB, load {os.getloadavg()[0]:.2f}"
            )
            next_note += 10.0
        time.sleep(0.2)


def write_shopify_config(
    workdir: Path, sim: Sim, hub_url: str, concurrency: int, bulk: bool, webhook_port: int | None
) -> Path:
    # No image checks: the simulator's image URLs are Shopify CDN addresses, not on this machine,
    # and a benchmark talks to loopback only.
    store = f"""\
concurrency = {concurrency}
bulk_import = {"true" if bulk else "false"}
poll_interval = "1h"
reconcile_interval = "1h"
image_checks = false
"""
    if webhook_port is not None:
        store += f'webhook_url = "http://127.0.0.1:{webhook_port}/webhooks/shopify/{STORE_ID}"\n'
    return write_agent_config(
        workdir, sim, agent_id=AGENT_ID, store_id=STORE_ID, hub_url=hub_url, token=TOKEN,
        store=store, webhook_port=webhook_port, webhooks=webhook_port is not None,
    )  # fmt: skip


def run_shopify(
    name: str,
    workdir: Path,
    args: argparse.Namespace,
    *,
    products: int,
    bulk: bool,
    incremental: bool,
) -> ShopifyResult:
    """One import on a fresh simulator, hub and agent state; the incremental load after it on
    the same processes when `incremental` (the agent registers its webhooks then)."""
    result = ShopifyResult(
        name, bulk, products, args.latency_ms, args.concurrency, args.bucket_max,
        args.restore_rate,
    )  # fmt: skip
    workdir.mkdir()
    say(
        f"{name}: {products:,} products, {'bulk operation' if bulk else 'paged queries'},"
        f" latency {args.latency_ms:g} ms, concurrency {args.concurrency}, bucket"
        f" {args.bucket_max:g} points restored at {args.restore_rate:g}/s"
        + (", webhooks registered" if incremental else "")
    )
    say("  starting the simulator (generating the catalog), the hub and the GraphQL proxy ...")
    with (
        simulator(
            workdir, "shopify", products=products, latency_ms=args.latency_ms, seed=args.seed
        ) as sim,
        hub_process(workdir, TOKEN) as hub_proc,
        GraphQLProxy(sim.url) as proxy,
        httpx.Client(base_url=sim.url, timeout=60) as control,
    ):
        result.sim_ready_s = sim.ready_s
        faults = {
            "bucket_max": args.bucket_max,
            "restore_rate": args.restore_rate,
            "bulk_rate": BULK_RATE,
        }
        control.post("/__sim/faults", json=faults).raise_for_status()
        truth = control.get("/__sim/truth").json()["products"]
        numbers = [int(p["legacyResourceId"]) for p in truth]
        result.variants = sum(len(p.get("variants") or []) for p in truth)
        result.media = sum(len(p.get("media") or []) for p in truth)
        del truth
        say(
            f"  simulator ready after {sim.ready_s:.1f} s: {len(numbers):,} products,"
            f" {result.variants:,} variants, {result.media:,} media; starting the agent ..."
        )
        webhook_port = free_port() if incremental else None
        via_proxy = dataclasses.replace(sim, info={**sim.info, "shop_url": proxy.url})
        config = write_shopify_config(
            workdir, via_proxy, hub_proc.url, args.concurrency, bulk, webhook_port
        )
        before = control.get("/__sim/stats").json()
        ops_before = proxy.snapshot()
        log_path = workdir / "agent.log"
        # Bounded: paged reads at the restore rate (60 points a product, no refund) twice over,
        # a bulk import at 50 products/s, plus 5 minutes.
        per_product = PRODUCT_POINTS / args.restore_rate if not bulk else 0.02
        deadline = 2 * products * per_product + 300
        started = time.perf_counter()
        with process(agent_command(config), log_path) as agent:
            watch_shopify(agent, workdir / "state", log_path, started, products, deadline, result)
            result.agent_cpu_total_s = cpu_seconds(agent.pid) or 0.0
            result.peak_rss_mb = memory_mb(agent.pid).get("VmHWM", 0.0)
            after = control.get("/__sim/stats").json()
            result.operations = operations_between(ops_before, proxy.snapshot())
            result.object_count = proxy.object_count
            result.points = sim_delta(before, after, "points_spent")
            result.throttled = int(sim_delta(before, after, "throttled"))
            result.max_cost_exceeded = int(sim_delta(before, after, "max_cost_exceeded"))
            result.bulk_operations = int(sim_delta(before, after, "bulk_operations"))
            result.graphql_requests = graphql_requests(after) - graphql_requests(before)
            old = before.get("requests", {})
            for route, statuses in after.get("requests", {}).items():
                diff = {s: n - old.get(route, {}).get(s, 0) for s, n in statuses.items()}
                diff = {s: n for s, n in diff.items() if n}
                if diff and "/__sim/" not in route:
                    result.routes[route] = diff
            result.downloads = sum(
                sum(d.values()) for r, d in result.routes.items() if " /bulk/" in r
            )
            hub_stats = httpx.get(
                f"{hub_proc.url}/v1/stats", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
            )
            if hub_stats.status_code == 200:
                result.hub_items = int(hub_stats.json().get("items", 0))
            if incremental:
                result.incremental = run_incremental(
                    args, agent, control, proxy, hub_proc.url, numbers, log_path
                )
    return result


def run_incremental(
    args: argparse.Namespace,
    agent: subprocess.Popen[bytes],
    control: httpx.Client,
    proxy: GraphQLProxy,
    hub_url: str,
    numbers: list[int],
    log_path: Path,
) -> Incremental:
    """`rate` title changes a second for `seconds` through the simulator's control API, spread
    over the catalog (each product at most once while the catalog lasts), then wait (bounded)
    until the hub holds the changes sampled."""
    inc = Incremental(args.incremental_seconds, args.change_rate)
    total = round(args.incremental_seconds * args.change_rate)
    say(
        f"  incremental: {total:,} title changes at {args.change_rate:g}/s for"
        f" {args.incremental_seconds:g} s, spread over {len(numbers):,} products ..."
    )
    reset_peak_rss(agent.pid)
    cpu0 = cpu_seconds(agent.pid) or 0.0
    ops_before = proxy.snapshot()
    order = list(numbers)
    random.Random(args.seed).shuffle(order)
    sent: dict[int, tuple[str, float]] = {}  # product -> (title, wall-clock ms when sent)
    stats0 = control.get("/__sim/stats").json()
    asyncio.run(drive(args, control.base_url, order, total, sent, inc, stats0))
    # The hub's inspection API: did each sampled change arrive, and when (the hub's updated_at,
    # the same machine's clock)? Bounded wait for the tail that was still queued.
    sample = sorted(sent)[:: max(1, len(sent) // SAMPLE)]
    inc.sampled = len(sample)
    drain_deadline = time.monotonic() + args.drain_seconds
    t_end = time.monotonic()
    pending = set(sample)
    arrived: dict[int, float] = {}

    def close_window(stats: dict[str, Any], seconds: float) -> Window:
        # What the simulator counted since the load began, less the windows before this one.
        last = inc.windows[-1] if inc.windows else None
        window = Window(
            (last.start_s + last.seconds) if last else 0.0, seconds, 0,
            sim_delta(stats0, stats, "points_spent") - sum(w.points for w in inc.windows),
            int(sim_delta(stats0, stats, "throttled")) - sum(w.throttled for w in inc.windows),
            graphql_requests(stats) - graphql_requests(stats0)
            - sum(w.requests for w in inc.windows),
        )  # fmt: skip
        inc.windows.append(window)
        return window

    with httpx.Client(
        base_url=hub_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    ) as hub:
        window_start = t_end
        while True:
            if agent.poll() is not None:
                raise RuntimeError(
                    f"the agent exited during the incremental load:\n{tail(log_path)}"
                )
            for n in list(pending):
                reply = hub.get(f"/v1/stores/{STORE_ID}/products/{n}")
                if reply.status_code != 200:
                    continue
                record = reply.json()
                title, at_ms = sent[n]
                if (record.get("data") or {}).get("title") == title:
                    arrived[n] = float(record["updated_at"]) - at_ms
                    pending.discard(n)
            now = time.monotonic()
            if not pending or now >= drain_deadline:
                break
            if now - window_start >= WINDOW_S:
                # The catch-up after the last change, in windows like the load's.
                w = close_window(control.get("/__sim/stats").json(), now - window_start)
                window_start = now
                say(
                    f"  ... drain {now - t_end:.0f} s: {len(pending):,}/{len(sample):,} sampled"
                    f" changes not at the hub yet; {w.points_per_s:.1f} points/s,"
                    f" {w.throttled} throttled"
                )
            time.sleep(1.0)
    inc.drained = not pending
    inc.drain_s = time.monotonic() - t_end
    inc.arrived = len(arrived)
    inc.latencies_ms = sorted(arrived.values())
    stats1 = control.get("/__sim/stats").json()
    close_window(stats1, time.monotonic() - window_start)
    inc.points = sim_delta(stats0, stats1, "points_spent")
    inc.throttled = int(sim_delta(stats0, stats1, "throttled"))
    inc.webhooks = {
        k: int(stats1.get("webhooks", {}).get(k, 0)) - int(stats0.get("webhooks", {}).get(k, 0))
        for k in ("events", "deliveries", "failures", "retries", "duplicates", "gave_up")
    }
    inc.operations = operations_between(ops_before, proxy.snapshot())
    levels = list(proxy.levels)
    for w in inc.windows:
        start = inc.t0 + w.start_s
        inside = [level for at, level in levels if start <= at < start + w.seconds]
        if inside:
            w.level = statistics.median(inside)
    inc.agent_cpu_s = (cpu_seconds(agent.pid) or 0.0) - cpu0
    inc.peak_rss_mb = memory_mb(agent.pid).get("VmHWM", 0.0)
    return inc


SAMPLE = 300  # changes read back from the hub for the latency


async def drive(
    args: argparse.Namespace,
    base_url: httpx.URL,
    order: list[int],
    total: int,
    sent: dict[int, tuple[str, float]],
    inc: Incremental,
    stats0: dict[str, Any],
) -> None:
    """Send the changes on a fixed schedule (not one after another: a slow answer must not slow
    the rate), and read `/__sim/stats` at every window boundary."""
    interval = 1.0 / args.change_rate
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:

        async def change(i: int) -> None:
            n = order[i % len(order)]
            title = f"Bench change {i}"
            at_ms = time.time() * 1000
            try:
                reply = await client.patch(f"/__sim/products/{n}", json={"title": title})
            except httpx.HTTPError:
                inc.patch_errors += 1
                return
            if reply.status_code != 200:
                inc.patch_errors += 1
                return
            sent[n] = (title, at_ms)

        async def windows(t0: float) -> None:
            previous = stats0
            sent_before = 0
            k = 1
            # Windows of WINDOW_S over the load, the last one shorter when the load is.
            while (k - 1) * WINDOW_S < args.incremental_seconds - 1e-9:
                end = min(k * WINDOW_S, args.incremental_seconds)
                await asyncio.sleep(max(0.0, t0 + end - time.perf_counter()))
                stats = (await client.get("/__sim/stats")).json()
                changes = min(total, round(end * args.change_rate)) - sent_before
                inc.windows.append(
                    Window(
                        (k - 1) * WINDOW_S, end - (k - 1) * WINDOW_S, changes,
                        sim_delta(previous, stats, "points_spent"),
                        int(sim_delta(previous, stats, "throttled")),
                        graphql_requests(stats) - graphql_requests(previous),
                    )
                )  # fmt: skip
                w = inc.windows[-1]
                say(
                    f"  ... {w.start_s + w.seconds:.0f} s: {w.points_per_s:.1f} points/s"
                    f" (restore rate {args.restore_rate:g}), {w.throttled} throttled"
                )
                sent_before += changes
                previous = stats
                k += 1

        t0 = inc.t0 = time.perf_counter()
        watcher = asyncio.create_task(windows(t0))
        tasks = []
        for i in range(total):
            await asyncio.sleep(max(0.0, t0 + i * interval - time.perf_counter()))
            tasks.append(asyncio.create_task(change(i)))
        await asyncio.gather(*tasks)
        inc.sent_s = time.perf_counter() - t0
        inc.changes = total - inc.patch_errors
        await watcher


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def print_shopify_header(args: argparse.Namespace) -> None:
    say(
        f"bench/import.py --platform shopify: {os.cpu_count()} CPUs, Python"
        f" {platform.python_version()}, {platform.platform()}"
    )
    say(
        f"parameters: bucket {args.bucket_max:g} points, restore rate {args.restore_rate:g}"
        f" points/s (Shopify's standard plan), latency {args.latency_ms:g} ms, concurrency"
        f" {args.concurrency}, simulated bulk rate {BULK_RATE:,.0f} objects/s, seed {args.seed}"
    )
    say(
        f"scenarios: bulk import of --products ({args.products:,}), then the incremental load on"
        f" the same agent; paged import of --paged-products ({args.paged_products:,}): paged reads"
        " are bound by the bucket alone, so the full catalog would take too long (extrapolated)"
    )
    say("")


def print_shopify_report(
    results: Sequence[ShopifyResult], args: argparse.Namespace, *, details: bool = True
) -> None:
    """The import tables for `results`; with `details`, each one's operations and incremental
    load too (printed as each scenario ends, so a later failure loses nothing)."""
    say("")
    say("the import (floor: bulk = objects / bulk rate; paged = (points - bucket) / restore rate):")
    rows = []
    for r in results:
        floor = r.floor_s
        rows.append(
            [
                r.name, f"{r.products:,}", f"{r.variants:,}", f"{r.imported:,}",
                f"{r.floor_s:.1f}", f"{r.start_s:.1f}", f"{r.run_s:.1f}", f"{r.import_s:.1f}",
                f"{r.import_s / floor:.2f}" if floor else "-", f"{r.rate:,.1f}",
                f"{100 * r.agent_cpu_import_s / r.import_s:.0f}" if r.import_s else "-",
                f"{r.shipped_s:.1f}", f"{r.hub_items:,}",
            ]
        )  # fmt: skip
    say(
        table(
            [
                "scenario", "products", "variants", "imported", "floor s", "agent start s",
                "run s", "import s", "import/floor", "products/s", "agent CPU % of wall",
                "shipped s", "hub items",
            ],
            rows,
        )
    )  # fmt: skip
    say(
        "  import s: agent process start -> import run done; run s: the run's own start -> finish;"
        " shipped s: -> outbox empty too. A bulk import's floor is the simulated operation alone"
        " (its points are a few dozen): what bounds it is the agent's own work, its CPU % of wall"
        " (and on Shopify the operation's real run time, minutes for large shops)"
    )
    say("")
    say("requests and points (simulator /__sim/stats; by operation: the counting proxy):")
    rows = []
    for r in results:
        n = max(r.imported, 1)
        rows.append(
            [
                r.name, f"{r.graphql_requests:,}", f"{r.downloads:,}", f"{r.bulk_operations}",
                f"{r.points:,.0f}", f"{r.points / n:.1f}", f"{r.throttled}",
                f"{r.max_cost_exceeded}", f"{r.agent_cpu_import_s:.1f}",
                f"{r.agent_cpu_import_s * 1e6 / n:,.0f}", f"{r.peak_rss_mb:.1f}",
            ]
        )  # fmt: skip
    say(
        table(
            [
                "scenario", "GraphQL requests", "bulk downloads", "bulk ops", "points spent",
                "points/product", "THROTTLED", "MAX_COST", "agent CPU s", "us/product",
                "peak RSS MB",
            ],
            rows,
        )
    )  # fmt: skip
    for r in results if details else ():
        say("")
        say(f"{r.name}: GraphQL requests by operation")
        say(operations_table(r.operations))
        if not r.bulk:
            per = r.points / max(r.imported, 1)
            minutes = max(0.0, per * args.products - r.bucket_max) / r.restore_rate / 60
            say(
                f"  the paged fallback was charged {per:.1f} points a product; {args.products:,}"
                f" products would take about {minutes:.0f} minutes at {r.restore_rate:g}"
                " points/s (EXTRAPOLATION from this run, not measured: paged reads are bound by"
                " the bucket alone, so they scale linearly with the catalog)"
            )
        warnings = r.report.get("warnings", {})
        say(
            f"  import report: {r.imported:,} imported; {warnings.get('no_image', 0)} without"
            f" image, {warnings.get('no_price', 0)} without price; simulator ready after"
            f" {r.sim_ready_s:.1f} s"
        )
        say(f"  routes: {json.dumps(r.routes, sort_keys=True)}")
    for r in results if details else ():
        inc = r.incremental
        if inc is None:
            continue
        say("")
        say(
            f"incremental ({r.name}'s agent, webhooks registered): {inc.changes:,} title changes"
            f" at {inc.rate:g}/s for {inc.seconds:g} s (sent in {inc.sent_s:.1f} s,"
            f" {inc.patch_errors} failed), then up to {args.drain_seconds:g} s for the hub"
        )
        # The bucket starts full, so a window may spend more than the restore rate while it
        # drains; what Shopify allows is `bucket + restore rate x t` since the start, and the
        # rate itself once the bucket is empty.
        rows = []
        spent = 0.0
        for w in inc.windows:
            spent += w.points
            allowed = r.bucket_max + r.restore_rate * (w.start_s + w.seconds)
            label = f"{w.start_s:.0f}-{w.start_s + w.seconds:.0f} s"
            rows.append(
                [
                    label, f"{w.changes:,}", f"{w.requests:,}", f"{w.points:,.0f}",
                    f"{w.points_per_s:.1f}", "yes" if w.points_per_s <= r.restore_rate else "no",
                    f"{spent:,.0f}", f"{allowed:,.0f}", f"{w.throttled}",
                    "-" if math.isnan(w.level) else f"{w.level:,.0f}",
                ]
            )  # fmt: skip
        say(
            table(
                [
                    "window (after first change)", "changes", "GraphQL requests", "points",
                    "points/s", f"<= {r.restore_rate:g}/s", "points since start",
                    "bucket + rate x t", "THROTTLED", "bucket level (median)",
                ],
                rows,
            )
        )  # fmt: skip
        lat = inc.latencies_ms
        say(
            f"  points {inc.points:,.0f} ({inc.points / max(inc.changes, 1):.1f} a change),"
            f" THROTTLED {inc.throttled}, webhooks {json.dumps(inc.webhooks, sort_keys=True)}"
        )
        say(
            f"  change -> hub (sample of {inc.sampled:,}, hub updated_at - PATCH sent):"
            f" {inc.arrived:,} arrived"
            + (
                f", p50 {percentile(lat, 0.5) / 1000:.2f} s, p99 {percentile(lat, 0.99) / 1000:.2f}"
                f" s, max {lat[-1] / 1000:.2f} s"
                if lat
                else ""
            )
            + (
                f"; all within {inc.drain_s:.1f} s of the last change"
                if inc.drained
                else f"; {inc.sampled - inc.arrived:,} NOT at the hub {inc.drain_s:.0f} s after"
                " the last change (the percentiles are of those that arrived only)"
            )
        )
        say(
            f"  agent CPU {inc.agent_cpu_s:.1f} s"
            f" ({inc.agent_cpu_s * 1e3 / max(inc.changes, 1):.1f} ms a change),"
            f" peak RSS during the load {inc.peak_rss_mb:.1f} MB"
        )
        say("  GraphQL requests by operation during the load:")
        say(operations_table(inc.operations))


def operations_table(ops: dict[str, Operation]) -> str:
    rows = [
        [
            f"  {name}", f"{op.requests:,}", f"{op.requested:,.0f}", f"{op.actual:,.0f}",
            f"{op.actual / op.requests:.1f}", f"{op.throttled}",
        ]
        for name, op in sorted(ops.items(), key=lambda kv: -kv[1].actual)
    ]  # fmt: skip
    return table(
        ["  operation", "requests", "requested points", "actual points", "actual/request",
         "THROTTLED"],
        rows,
    )  # fmt: skip


def main_shopify(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    print_shopify_header(args)
    results: list[ShopifyResult] = []
    with tempfile.TemporaryDirectory(prefix="bridge-bench-import-shopify-") as tmp:
        results.append(
            run_shopify(
                "bulk", Path(tmp) / "bulk", args, products=args.products, bulk=True,
                incremental=args.incremental_seconds > 0,
            )
        )  # fmt: skip
        print_shopify_report(results[-1:], args)
        say("")
        if args.paged_products > 0:
            results.append(
                run_shopify(
                    "paged", Path(tmp) / "paged", args, products=args.paged_products,
                    bulk=False, incremental=False,
                )
            )  # fmt: skip
            print_shopify_report(results[-1:], args)
    if len(results) > 1:
        say("")
        say("bulk and paged side by side (the same run):")
        print_shopify_report(results, args, details=False)
    say("")
    say(f"total run time {time.perf_counter() - started:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--platform", choices=("woocommerce", "shopify"), default="woocommerce",
        help="the store platform (default %(default)s)",
    )  # fmt: skip
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
    shopify = parser.add_argument_group("--platform shopify")
    shopify.add_argument(
        "--paged-products", type=int, default=1000,
        help="catalog of the paged-query scenario (default %(default)s; 0 skips it)",
    )  # fmt: skip
    shopify.add_argument(
        "--bucket-max", type=float, default=2000.0, help="points (default %(default)s)"
    )
    shopify.add_argument(
        "--restore-rate", type=float, default=100.0, help="points/s (default %(default)s)"
    )
    shopify.add_argument(
        "--incremental-seconds", type=float, default=60.0,
        help="length of the incremental load (default %(default)s; 0 skips it)",
    )  # fmt: skip
    shopify.add_argument(
        "--change-rate", type=float, default=50.0, help="changes/s (default %(default)s)"
    )
    shopify.add_argument(
        "--drain-seconds", type=float, default=600.0,
        help="at most this long after the load for the hub to hold the sampled changes"
        " (default %(default)s)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.platform == "shopify":
        if args.products < 1 or args.paged_products < 0:
            parser.error("--products must be at least 1, --paged-products at least 0")
        if args.bucket_max <= 0 or args.restore_rate <= 0 or args.change_rate <= 0:
            parser.error("--bucket-max, --restore-rate and --change-rate must be positive")
        if args.incremental_seconds < 0 or args.drain_seconds < 0 or args.latency_ms < 0:
            parser.error("durations and latencies must not be negative")
        if not 1 <= args.concurrency <= 64:
            parser.error("--concurrency must be 1 to 64 (the store setting's range)")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
        return main_shopify(args)
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
