"""Verification benchmark: a sweep of an unchanged WooCommerce catalog through the real agent.

What it measures, and why: a verification run (`bridge-agent verify`, sources/verify.py) reads
every product of a store again and compares its hash with the mirror's; on an unchanged catalog
it ships nothing but compact markers (id and hash) to the hub. Like an import it is bound by the
store: with `concurrency` requests in flight and `latency` per request it cannot beat
`requests x latency / concurrency`, and with a request budget (`requests_per_second`) it cannot
beat `requests / rps`; **the floor is the larger of the two**. The issue asks for the wall time
against that floor, the agent's CPU per product, its peak RSS, and the bytes shipped to the hub
per product. Printed:

- the store requests of the sweep by route (the simulator's `/__sim/stats`, before and after);
- the floor; the sweep's wall time (from the first store request of the sweep to the run's
  `finished_at`) and its ratio to the floor; the time from queueing (`bridge-agent verify`) to
  done, which adds the agent's pick-up (it looks for queued runs every 5 s); products/s;
- the agent's CPU per product during the sweep (`utime + stime` of `/proc/<pid>/stat`, every
  thread) and its peak RSS during the sweep (`VmHWM`, reset through `/proc/<pid>/clear_refs`
  before the sweep, so the import's peak does not hide it; the peak of the whole life is printed
  too);
- the bytes the agent sent to the hub during the sweep, by route (request bodies and heads, as
  counted by a small reverse proxy between agent and hub, see below), per product, beside the
  bytes per product of the import's batches; the hub's own counters (`GET /v1/stats`:
  `verified_requests`, `verified`, `items`);
- the run's report: `drift` (0 on an unchanged catalog), `unchanged`, `markers`, `vanished`,
  `imported` (products read).

How: as `bench/import.py`, three processes on loopback: the WooCommerce simulator (`python -m
bridge_agent simulate woocommerce --products N --latency-ms L --seed S`), the reference hub, and
the agent (`python -m bridge_agent --config <tmp>/agent.toml --log-format json run`, one
`woocommerce` store, `verify_schedule = "off"`, `image_checks = false`, polls and reconciliation
an hour away, `requests_per_second` from `--rps` when not 0). The hub does not count the bytes it
receives, and the agent's `bridge_hub_bytes_sent_total` counts batch bodies only, so the agent's
hub URL points at a counting reverse proxy (aiohttp, loopback, in a thread of this process) for
the whole run: it forwards every request unchanged and counts, per route, the requests, the body
bytes and the request-head bytes (request line and headers as received). The benchmark waits for
the first import, the repair run that follows it, and an empty outbox; then queues the sweep with
`python -m bridge_agent --config ... verify --store main` and reads the state directory
read-only (`StateStore.open(dir, read_only=True)`) every 0.1 s until the run finishes. Until the
sweep's first store request is seen it also reads `/__sim/stats` every 0.1 s (so the sweep's
start is known to 0.1 s; `/__sim/...` is not slowed by the simulated latency).

Every process is stopped (SIGTERM, then SIGKILL) and the temporary directory removed at the end,
also on errors, Ctrl-C and SIGTERM. A benchmark prints, it never asserts timing. Run from the
repository root (`--products 2000` takes about 15 s; the default 100 000 6-7 minutes on 2 CPUs,
about 40 % of it the import before the sweep; see docs/performance.md):

    uv run python bench/verify.py [--products 100000] [--latency-ms 5] [--concurrency 4]
                                  [--rps 0] [--seed 7] [--profile OUT.svg]

`--profile OUT` records the agent with py-spy during the sweep (`uv run --with py-spy python
bench/verify.py --profile /tmp/verify.svg`; a `.txt` name gives collapsed stacks).
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
import re
import signal
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
from bridge_agent.store import Run, StateStore

TOKEN = "bench-hub-token-5c1f7a92"  # loopback only, a throwaway hub
AGENT_ID = "bench-verify"
STORE_ID = "main"
POLL_S = 0.1  # how often the state directory is read
REST = "/wp-json/"

# -- /proc ---------------------------------------------------------------------------------------


def reset_peak_rss(pid: int) -> bool:
    """Reset `VmHWM` to the current RSS (Linux `clear_refs` 5); False where that is refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5", encoding="ascii")
    except OSError:
        return False
    return True


# -- the counting proxy between the agent and the hub ---------------------------------------------


@dataclasses.dataclass
class Traffic:
    """What the agent sent on one route: requests, body bytes, request-head bytes."""

    requests: int = 0
    body: int = 0
    head: int = 0
    reply: int = 0  # body bytes of the hub's answers

    def minus(self, other: Traffic) -> Traffic:
        return Traffic(
            self.requests - other.requests,
            self.body - other.body,
            self.head - other.head,
            self.reply - other.reply,
        )


def route_of(method: str, path: str) -> str:
    """`POST /v1/stores/{store}/verified`: the hub's route pattern, so ids do not split it."""
    parts = path.split("/")
    if parts[1:3] == ["v1", "stores"] and len(parts) > 3:
        parts[3] = "{store}"
        if len(parts) > 5 and parts[4] in ("products", "optimizations") and parts[5] != "results":
            parts[5] = "{id}"
    return f"{method} {'/'.join(parts)}"


class CountingProxy(LoopbackProxy):
    """A reverse proxy on a free loopback port that forwards to `upstream` and counts bytes.

    It runs its own event loop in a thread, so the benchmark's blocking calls (the `verify`
    command, reading /proc) never hold up the agent's requests. Bodies are read whole and
    forwarded as they came (the hub's answers too, undecoded): the proxy adds a loopback hop to
    each hub request (one marker request per page in a sweep) and changes nothing the agent
    sends.
    """

    name = "counting proxy"

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self._counts: dict[str, Traffic] = {}

    def snapshot(self) -> dict[str, Traffic]:
        with self._lock:
            return {k: dataclasses.replace(v) for k, v in self._counts.items()}

    def observe(self, request: web.Request, body: bytes, reply: bytes) -> None:
        version = request.version
        head = len(f"{request.method} {request.raw_path} HTTP/{version.major}.{version.minor}\r\n")
        head += sum(len(k) + len(v) + 4 for k, v in request.raw_headers) + 2
        with self._lock:
            counts = self._counts.setdefault(route_of(request.method, request.path), Traffic())
            counts.requests += 1
            counts.body += len(body)
            counts.head += head
            counts.reply += len(reply)


def traffic_between(before: dict[str, Traffic], after: dict[str, Traffic]) -> dict[str, Traffic]:
    out = {}
    for route, now in after.items():
        diff = now.minus(before.get(route, Traffic()))
        if diff.requests:
            out[route] = diff
    return out


# -- configuration -------------------------------------------------------------------------------


def write_config(workdir: Path, sim: Sim, hub_url: str, concurrency: int, rps: float) -> Path:
    budget = f"requests_per_second = {rps:g}\n" if rps > 0 else ""
    store = f"""\
concurrency = {concurrency}
poll_interval = "1h"
reconcile_interval = "1h"
verify_schedule = "off"
image_checks = false
{budget}"""
    return write_agent_config(
        workdir, sim, agent_id=AGENT_ID, store_id=STORE_ID, hub_url=hub_url, token=TOKEN,
        store=store,
    )  # fmt: skip


# -- store requests ------------------------------------------------------------------------------


def rest_requests(stats: dict[str, Any]) -> dict[str, int]:
    """REST requests the simulator answered so far, by route (all statuses)."""
    return {
        route: sum(statuses.values())
        for route, statuses in stats.get("requests", {}).items()
        if route.partition(" ")[2].startswith(REST)
    }


def requests_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    old = rest_requests(before)
    return {
        route: n - old.get(route, 0)
        for route, n in sorted(rest_requests(after).items())
        if n - old.get(route, 0)
    }


def rest_errors_between(before: dict[str, Any], after: dict[str, Any]) -> int:
    def errors(stats: dict[str, Any]) -> int:
        return sum(
            n
            for route, statuses in stats.get("requests", {}).items()
            if route.partition(" ")[2].startswith(REST)
            for status, n in statuses.items()
            if int(status) >= 400
        )

    return errors(after) - errors(before)


# -- waiting on the agent ------------------------------------------------------------------------


class AgentExited(RuntimeError):
    pass


async def open_state(stack: contextlib.AsyncExitStack, state_dir: Path) -> StateStore | None:
    with contextlib.suppress(StateStoreError):  # not created or migrated yet
        return await stack.enter_async_context(StateStore.open(state_dir, read_only=True))
    return None


async def wait_imported(
    agent: subprocess.Popen[bytes], state_dir: Path, log_path: Path, products: int, deadline: float
) -> tuple[Run, Run | None]:
    """Poll the state directory until the first import and its repair are done and the outbox
    is empty; the import run and the repair run."""
    started = time.monotonic()
    next_note = 10.0
    async with contextlib.AsyncExitStack() as stack:
        state: StateStore | None = None
        while True:
            now = time.monotonic() - started
            if agent.poll() is not None:
                raise AgentExited(f"the agent exited with {agent.returncode}:\n{tail(log_path)}")
            if now > deadline:
                raise RuntimeError(f"import not settled after {deadline:.0f} s:\n{tail(log_path)}")
            if state is None:
                state = await open_state(stack, state_dir)
            imported = repair = None
            pending = -1
            if state is not None:
                with contextlib.suppress(StateStoreError):  # busy: try again next round
                    imported = await state.last_run(STORE_ID, "import")
                    repair = await state.last_run(STORE_ID, "repair")
                    pending = (await state.stats()).pending
            for run in (imported, repair):
                if run is not None and run.state == "failed":
                    raise RuntimeError(f"the {run.kind} run failed: {run.error}\n{tail(log_path)}")
            if (
                imported is not None
                and imported.state == "done"
                and (repair is None or repair.state == "done")
                and pending == 0
            ):
                return imported, repair
            if now >= next_note:
                done = imported.done if imported is not None else 0
                say(
                    f"  ... {now:.0f} s: {done:,}/{products:,} imported"
                    + (f", repair {_repair_state(imported, repair)}" if repair else "")
                    + f", outbox {max(pending, 0):,}, agent RSS"
                    f" {memory_mb(agent.pid).get('VmRSS', 0.0):.0f} MB,"
                    f" load {os.getloadavg()[0]:.2f}"
                )
                next_note += 10.0
            await asyncio.sleep(POLL_S)


def _repair_state(imported: Run | None, repair: Run) -> str:
    """`running` also means queued behind an older run (store/runs.py): say which."""
    if repair.state == "running" and (imported is None or imported.state == "running"):
        return "queued"
    return repair.state


@dataclasses.dataclass
class Sweep:
    """What the benchmark saw of the verification run."""

    run: Run | None = None
    queued_at: float = 0.0  # epoch s, before `bridge-agent verify` starts
    first_request_at: float = 0.0  # epoch s, the first poll that saw a store request of the sweep
    agent_cpu_s: float = 0.0
    rss_samples: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    pending_after: int = 0  # outbox rows left after the run (drift ships; 0 when none)

    @property
    def finished_at(self) -> float:
        return (self.run.finished_at or 0) / 1000 if self.run is not None else 0.0


async def watch_sweep(
    agent: subprocess.Popen[bytes],
    state_dir: Path,
    log_path: Path,
    sim_url: str,
    run_id: int,
    baseline: dict[str, int],
    deadline: float,
    sweep: Sweep,
) -> None:
    """Poll the state directory (and the simulator, until the sweep's first store request) until
    the verification run finishes, then until the outbox is empty (drift ships)."""
    cpu0 = cpu_seconds(agent.pid) or 0.0
    started = time.monotonic()
    next_note = 10.0
    async with (
        contextlib.AsyncExitStack() as stack,
        httpx.AsyncClient(timeout=10.0) as http,
    ):
        state = await open_state(stack, state_dir)
        while True:
            now = time.monotonic() - started
            if agent.poll() is not None:
                raise AgentExited(f"the agent exited with {agent.returncode}:\n{tail(log_path)}")
            if now > deadline:
                raise RuntimeError(
                    f"verification not finished after {deadline:.0f} s:\n{tail(log_path)}"
                )
            if not sweep.first_request_at:
                asked_at = time.time()
                stats = (await http.get(f"{sim_url}/__sim/stats")).json()
                if rest_requests(stats) != baseline:
                    sweep.first_request_at = asked_at
            if state is None:
                state = await open_state(stack, state_dir)
            run = None
            if state is not None:
                with contextlib.suppress(StateStoreError):
                    run = await state.run(run_id)
            if run is not None:
                sweep.rss_samples.append((run.done, memory_mb(agent.pid).get("VmRSS", 0.0)))
                if run.finished_at is not None and not sweep.agent_cpu_s:
                    sweep.agent_cpu_s = (cpu_seconds(agent.pid) or 0.0) - cpu0
                    sweep.run = run
                    if run.state != "done":
                        say(f"  the verification run ended {run.state}: {run.error}")
                        return
                    say(f"  verification run {run.id} done: {run.done:,} products read")
                if sweep.run is not None and state is not None:
                    with contextlib.suppress(StateStoreError):
                        sweep.pending_after = (await state.stats()).pending
                        if sweep.pending_after == 0:
                            return
            if now >= next_note:
                done = run.done if run is not None else 0
                total = f"/{run.total:,}" if run is not None and run.total else ""
                say(
                    f"  ... {now:.0f} s: {done:,}{total} verified, agent RSS"
                    f" {memory_mb(agent.pid).get('VmRSS', 0.0):.0f} MB,"
                    f" load {os.getloadavg()[0]:.2f}"
                )
                next_note += 10.0
            await asyncio.sleep(POLL_S)


# -- the scenario --------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    products: int
    latency_ms: float
    concurrency: int
    rps: float
    sim_items: int = 0
    import_run: Run | None = None
    repair_run: Run | None = None
    settled_s: float = 0.0  # agent start -> import and repair done, outbox empty
    sweep: Sweep = dataclasses.field(default_factory=Sweep)
    requests: dict[str, int] = dataclasses.field(default_factory=dict)
    rest_errors: int = 0
    hub_before: dict[str, Any] = dataclasses.field(default_factory=dict)
    hub_after: dict[str, Any] = dataclasses.field(default_factory=dict)
    traffic_import: dict[str, Traffic] = dataclasses.field(default_factory=dict)
    traffic_sweep: dict[str, Traffic] = dataclasses.field(default_factory=dict)
    peak_rss_life_mb: float = 0.0  # VmHWM before the reset: the import's peak
    peak_rss_sweep_mb: float = 0.0  # VmHWM after the reset, read when the run is done
    peak_reset: bool = False
    rss_before_mb: float = 0.0
    hub_cpu_s: float | None = None
    sim_cpu_s: float | None = None
    # The first import (and its repair), on the same processes, for comparison.
    requests_import: dict[str, int] = dataclasses.field(default_factory=dict)
    agent_cpu_import_s: float = 0.0  # agent start -> import and repair done, outbox empty
    sim_cpu_import_s: float | None = None
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    log_lines: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def rest(self) -> int:
        return sum(self.requests.values())

    @property
    def floor_latency_s(self) -> float:
        return self.rest * self.latency_ms / 1000 / self.concurrency

    @property
    def floor_budget_s(self) -> float:
        return self.rest / self.rps if self.rps > 0 else 0.0

    @property
    def floor_s(self) -> float:
        return max(self.floor_latency_s, self.floor_budget_s)

    @property
    def floor_background_s(self) -> float:
        """The floor of background work: a run never holds a store's last request slot (live
        work first, platforms/http.py), so it has `concurrency - 1` of them."""
        slots = max(self.concurrency - 1, 1)
        return max(self.rest * self.latency_ms / 1000 / slots, self.floor_budget_s)

    @property
    def read(self) -> int:
        run = self.sweep.run
        return int((run.report or {}).get("imported", run.done)) if run is not None else 0

    @property
    def sweep_s(self) -> float:
        if not self.sweep.first_request_at or self.sweep.run is None:
            return 0.0
        return self.sweep.finished_at - self.sweep.first_request_at

    @property
    def queued_s(self) -> float:
        return self.sweep.finished_at - self.sweep.queued_at if self.sweep.run is not None else 0.0


def queue_verification(config: Path, log_path: Path) -> int:
    """`bridge-agent verify --store main`: queue the run (the running agent executes it)."""
    command = [
        sys.executable, "-m", "bridge_agent", "--config", str(config),
        "verify", "--store", STORE_ID,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    log_path.write_text(done.stdout + done.stderr, encoding="utf-8")
    found = re.search(r"verify run (\d+) queued", done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(
            f"bridge-agent verify exited with {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return int(found.group(1))


def sweep_log(log_path: Path, offset: int) -> list[dict[str, Any]]:
    """The agent's JSON log records written since `offset` (the sweep's), parsed."""
    with log_path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode("utf-8", errors="replace")
    out = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                out.append(record)
    return out


def hub_stats(url: str) -> dict[str, Any]:
    reply = httpx.get(f"{url}/v1/stats", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    reply.raise_for_status()
    return dict(reply.json())


def run_benchmark(
    workdir: Path,
    *,
    products: int,
    latency_ms: float,
    concurrency: int,
    rps: float,
    seed: int,
    profile: Path | None = None,
) -> Result:
    result = Result(products, latency_ms, concurrency, rps)
    say(
        f"verification sweep: {products:,} products, latency {latency_ms:g} ms, concurrency"
        f" {concurrency}, budget {f'{rps:g} requests/s' if rps > 0 else 'none'}"
    )
    say("  starting the simulator (generating the catalog), the hub and the counting proxy ...")
    with (
        simulator(
            workdir, "woocommerce", products=products, latency_ms=latency_ms, seed=seed
        ) as sim,
        hub_process(workdir, TOKEN) as hub,
        CountingProxy(hub.url) as proxy,
    ):
        stats = httpx.get(f"{sim.url}/__sim/stats", timeout=30).json()
        result.sim_items = int(stats.get("items", 0))
        say(
            f"  simulator ready after {sim.ready_s:.1f} s: {stats.get('products', 0):,} products,"
            f" {result.sim_items:,} items with variations; starting the agent ..."
        )
        config = write_config(workdir, sim, proxy.url, concurrency, rps)
        command = agent_command(config)
        log_path = workdir / "agent.log"
        state_dir = workdir / "state"
        # Bounded: ten times the floor of a catalog with 25 % variable products, plus minutes.
        floor_guess = products * 1.25 / 100 * 20 * latency_ms / 1000 / concurrency
        floor_guess = max(floor_guess, products * 0.25 / rps if rps > 0 else 0.0)
        deadline = 10 * floor_guess + 120 + products / 100
        sim_cpu_start = cpu_seconds(sim.pid)
        started = time.monotonic()
        with process(command, log_path) as agent:
            result.import_run, result.repair_run = asyncio.run(
                wait_imported(agent, state_dir, log_path, products, deadline)
            )
            result.settled_s = time.monotonic() - started
            result.agent_cpu_import_s = cpu_seconds(agent.pid) or 0.0
            say(
                f"  import ({result.import_run.done:,} products) and repair done, outbox empty"
                f" after {result.settled_s:.1f} s; queueing the verification ..."
            )
            # The state before the sweep.
            result.traffic_import = proxy.snapshot()
            result.hub_before = hub_stats(hub.url)
            sim_before = httpx.get(f"{sim.url}/__sim/stats", timeout=30).json()
            result.requests_import = requests_between(stats, sim_before)
            memory = memory_mb(agent.pid)
            result.peak_rss_life_mb = memory.get("VmHWM", 0.0)
            result.rss_before_mb = memory.get("VmRSS", 0.0)
            result.peak_reset = reset_peak_rss(agent.pid)
            hub_cpu0, sim_cpu0 = cpu_seconds(hub.pid), cpu_seconds(sim.pid)
            if sim_cpu_start is not None and sim_cpu0 is not None:
                result.sim_cpu_import_s = sim_cpu0 - sim_cpu_start
            result.load_before = os.getloadavg()
            log_offset = log_path.stat().st_size
            result.sweep.queued_at = time.time()
            run_id = queue_verification(config, workdir / "verify.log")
            with spy(
                profile, agent.pid, workdir, script="bench/verify.py",
                what="the agent during the sweep", idle=True,
            ):  # fmt: skip
                asyncio.run(
                    watch_sweep(
                        agent, state_dir, log_path, sim.url, run_id, rest_requests(sim_before),
                        deadline, result.sweep,
                    )
                )  # fmt: skip
            result.peak_rss_sweep_mb = memory_mb(agent.pid).get("VmHWM", 0.0)
            hub_cpu1, sim_cpu1 = cpu_seconds(hub.pid), cpu_seconds(sim.pid)
            result.load_after = os.getloadavg()
            sim_after = httpx.get(f"{sim.url}/__sim/stats", timeout=30).json()
            result.requests = requests_between(sim_before, sim_after)
            result.rest_errors = rest_errors_between(sim_before, sim_after)
            result.hub_after = hub_stats(hub.url)
            result.traffic_sweep = traffic_between(result.traffic_import, proxy.snapshot())
            if hub_cpu0 is not None and hub_cpu1 is not None:
                result.hub_cpu_s = hub_cpu1 - hub_cpu0
            if sim_cpu0 is not None and sim_cpu1 is not None:
                result.sim_cpu_s = sim_cpu1 - sim_cpu0
            result.log_lines = sweep_log(log_path, log_offset)
    return result


# -- output --------------------------------------------------------------------------------------


def _load(values: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in values)


def sim_ms(cpu: float | None, requests: int) -> str:
    """Simulator CPU ms per REST request."""
    return "-" if cpu is None or not requests else f"{cpu * 1e3 / requests:.2f}"


def _ratio(wall: float, floor: float) -> str:
    return f"{wall / floor:.2f}" if floor else "inf"


def print_report(r: Result, total_s: float) -> None:
    sweep = r.sweep
    run = sweep.run
    report = (run.report or {}) if run is not None else {}
    read = max(r.read, 1)
    say("")
    say(
        f"bench/verify.py: {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" {platform.platform()}; load average before the sweep {_load(r.load_before)},"
        f" after {_load(r.load_after)}"
    )
    say("")
    say("store requests during the sweep (simulator /__sim/stats, REST, all statuses):")
    rows = [[route, f"{n:,}", f"{n / read:.3f}"] for route, n in r.requests.items()]
    rows.append(["REST total", f"{r.rest:,}", f"{r.rest / read:.3f}"])
    say(table(["route", "requests", "per product"], rows))
    say(f"  REST errors (status >= 400, retried): {r.rest_errors:,}")
    say("")
    floors = f"latency floor {r.rest:,} x {r.latency_ms:g} ms / {r.concurrency}"
    floors += f" = {r.floor_latency_s:.2f} s"
    if r.rps > 0:
        floors += f"; budget floor {r.rest:,} / {r.rps:g} rps = {r.floor_budget_s:.2f} s"
    say(f"wall time against the floor ({floors}):")
    rate = r.read / r.sweep_s if r.sweep_s else 0.0
    say(
        table(
            [
                "products", "read", "floor s", "sweep s", "sweep/floor", "queued->done s",
                "products/s", "background floor s", "sweep/bg floor",
            ],
            [[
                f"{r.products:,}", f"{r.read:,}", f"{r.floor_s:.2f}", f"{r.sweep_s:.2f}",
                _ratio(r.sweep_s, r.floor_s), f"{r.queued_s:.2f}", f"{rate:,.0f}",
                f"{r.floor_background_s:.2f}", _ratio(r.sweep_s, r.floor_background_s),
            ]],
        )
    )  # fmt: skip
    say(
        "  sweep s: the first store request of the sweep (seen within 0.1 s) -> the run's"
        " finished_at; queued->done adds the agent's pick-up of the queued run (it looks every"
        " 5 s) and the `verify` command's start-up; background floor: a run's requests never"
        " hold the store's last slot (live work first), so it has concurrency - 1 slots"
    )
    say("")
    say("CPU and memory during the sweep:")
    hub_cpu = "-" if r.hub_cpu_s is None else f"{r.hub_cpu_s:.2f} ({r.hub_cpu_s * 1e6 / read:.0f})"
    sim_cpu = "-" if r.sim_cpu_s is None else f"{r.sim_cpu_s:.2f}"
    busy = f"{100 * sweep.agent_cpu_s / r.sweep_s:.0f}" if r.sweep_s else "-"
    peak = f"{r.peak_rss_sweep_mb:.1f}" if r.peak_reset else "(not reset)"
    say(
        table(
            [
                "agent CPU s", "% of sweep", "agent CPU ms/product", "RSS before MB",
                "peak RSS in sweep MB", "peak RSS import MB", "hub CPU s (us/product)",
                "sim CPU s",
            ],
            [[
                f"{sweep.agent_cpu_s:.2f}", busy, f"{sweep.agent_cpu_s * 1e3 / read:.3f}",
                f"{r.rss_before_mb:.1f}", peak, f"{r.peak_rss_life_mb:.1f}", hub_cpu, sim_cpu,
            ]],
        )
    )  # fmt: skip
    marks = [0.0, 0.25, 0.5, 0.75, 1.0]
    points = []
    for mark in marks:
        want = mark * read
        sample = next((s for s in sweep.rss_samples if s[0] >= want), None)
        if sample is not None:
            points.append(f"{sample[0]:,}: {sample[1]:.1f}")
    say("  agent RSS along the sweep (MB, by products read): " + "; ".join(points))
    imported = r.import_run.done if r.import_run is not None else 0
    rest_import = sum(r.requests_import.values())
    floor_import = rest_import * r.latency_ms / 1e3 / r.concurrency
    say(
        f"  the first import and its repair, for comparison: {rest_import:,} REST requests,"
        f" settled in {r.settled_s:.1f} s (floor {floor_import:.2f} s),"
        f" agent CPU {r.agent_cpu_import_s:.1f} s"
        f" ({r.agent_cpu_import_s * 1e3 / max(imported, 1):.3f} ms/product); simulator CPU per REST"
        f" request: import {sim_ms(r.sim_cpu_import_s, rest_import)} ms,"
        f" sweep {sim_ms(r.sim_cpu_s, r.rest)} ms"
    )
    say("")
    say("bytes the agent sent to the hub during the sweep (counting proxy; body + request head):")
    rows = []
    for route, t in sorted(r.traffic_sweep.items()):
        rows.append(
            [
                route, f"{t.requests:,}", f"{t.body:,}", f"{t.head:,}",
                f"{t.body / read:.2f}", f"{(t.body + t.head) / read:.2f}", f"{t.reply:,}",
            ]
        )  # fmt: skip
    sent = sum(t.body + t.head for t in r.traffic_sweep.values())
    body = sum(t.body for t in r.traffic_sweep.values())
    rows.append(["total", "", f"{body:,}", f"{sent - body:,}", f"{body / read:.2f}",
                 f"{sent / read:.2f}", ""])  # fmt: skip
    say(
        table(
            ["route", "requests", "body B", "head B", "body B/product", "all B/product",
             "reply B"],
            rows,
        )
    )  # fmt: skip
    markers = next((t for k, t in r.traffic_sweep.items() if k.endswith("/verified")), Traffic())
    batches = r.traffic_import.get("POST /v1/batches", Traffic())
    confirmed = int(report.get("markers", 0))
    per_marker = f"{markers.body / confirmed:.1f}" if confirmed else "-"
    say(
        f"  markers: {markers.body / read:.2f} body bytes per product read"
        f" ({per_marker} per confirmed marker, {markers.requests:,} requests);"
        f" the import's batches: {batches.body:,} body bytes in {batches.requests:,} requests"
        f" for {imported:,} products = {batches.body / max(imported, 1):.1f} bytes per product"
        f" ({batches.body / max(markers.body, 1):.1f}x the markers)"
    )
    hb, ha = r.hub_before, r.hub_after
    say(
        "  hub /v1/stats during the sweep: "
        + ", ".join(
            f"{k} +{int(ha.get(k, 0)) - int(hb.get(k, 0)):,}"
            for k in ("verified_requests", "verified", "verified_mismatched", "batches", "items")
        )
    )
    say("")
    say(
        f"the run's report (run {run.id if run else '-'}, {run.state if run else 'not finished'}):"
        f" drift {report.get('drift', 0):,} (0 expected: the catalog is unchanged),"
        f" unchanged {report.get('unchanged', 0):,}, markers {report.get('markers', 0):,},"
        f" vanished {report.get('vanished', 0):,}, imported (read) {report.get('imported', 0):,},"
        f" failed {report.get('failed', 0):,}, mismatched {report.get('mismatched', 0):,},"
        f" pages {report.get('pages', 0):,}; outbox after the run {sweep.pending_after:,}"
    )
    levels: dict[str, int] = {}
    for record in r.log_lines:
        levels[str(record.get("level"))] = levels.get(str(record.get("level")), 0) + 1
    say(
        f"  agent log during the sweep: {len(r.log_lines)} record(s)"
        f" ({', '.join(f'{n} {k}' for k, n in sorted(levels.items())) or 'none'})"
    )
    for record in r.log_lines:
        if record.get("level") in ("warning", "error", "critical"):
            say(f"    {json.dumps(record, sort_keys=True)[:300]}")
    if report.get("markers_unsupported"):
        say("  the agent found the hub without a /verified route: no markers were sent")
    shown = {k: v for k, v in report.items() if k not in ("failures", "warnings")}
    say(f"  report: {json.dumps(shown, sort_keys=True)}")
    say("")
    say(
        f"total {total_s:.1f} s (agent start to import, repair and outbox settled:"
        f" {r.settled_s:.1f} s); the machine's other work slows all processes: compare runs"
        " side by side"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--products", type=int, default=100_000, help="default %(default)s")
    parser.add_argument("--latency-ms", type=float, default=5.0, help="default %(default)s")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="store concurrency (default %(default)s)"
    )
    parser.add_argument(
        "--rps", type=float, default=0.0, help="the store's requests_per_second (0: no budget)"
    )
    parser.add_argument("--seed", type=int, default=7, help="catalog seed (default %(default)s)")
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy profile of the agent during the sweep"
    )
    args = parser.parse_args(argv)
    if args.products < 1:
        parser.error("--products must be at least 1")
    if not 1 <= args.concurrency <= 64:
        parser.error("--concurrency must be 1 to 64 (the store setting's range)")
    if args.latency_ms < 0 or not 0 <= args.rps <= 10_000 or math.isnan(args.rps):
        parser.error("--latency-ms must not be negative, --rps must be 0 to 10000")
    # SIGTERM unwinds like Ctrl-C, so every child process is stopped and the directory removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bridge-bench-verify-") as tmp:
        result = run_benchmark(
            Path(tmp), products=args.products, latency_ms=args.latency_ms,
            concurrency=args.concurrency, rps=args.rps, seed=args.seed, profile=args.profile,
        )  # fmt: skip
    print_report(result, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
