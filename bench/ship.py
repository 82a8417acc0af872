"""Shipping benchmark: outbox -> reference hub throughput, and the wire size of a price patch.

What it measures, and why:

1. **Deltas per second from the outbox to a local hub.** The agent must keep up with a full
   catalog import and with bulk edits (a sale that reprices every product). Target: at least
   20 000 deltas/s on a 2-core machine. Two phases are timed: every product shipped once as an
   `upsert` (the import), then every product given a new price and shipped as a `patch` (the bulk
   edit). Recording the changes into the outbox is timed separately ("record rate"), because it is
   a different path (sources -> `StateStore.record`, one fsync per chunk) from shipping.
2. **Bytes on the wire of a one-field price patch.** Patches exist so that a price change does not
   resend the whole product. Target: at most 200 bytes. Measured on the bodies the shipper really
   posts: a one-item batch, and the per-item cost inside a batch (10-item body minus 1-item body,
   divided by 9).

How: the reference hub runs in a separate process (`python -m bridge_agent hub` on a free loopback
port, its own SQLite file), so agent and hub do not share one event loop or one GIL, as in
production. The agent side runs here: a real `StateStore`, a real `Shipper` with `HubClient` over
`httpx.AsyncClient`, driven by `ship_all()` (up to `--in-flight` batches at the hub at once) until
the outbox is empty. The store's `due`/`settle` and the hub round trip are timed inside the run (a
cheap built-in profile), and the CPU time of both processes is read, so a slow figure says where its
time went.

`--profile DIR` adds a deterministic profile of the shipping phases (cProfile timed by each
thread's CPU clock, every thread of both processes): `DIR/agent.prof` (the event loop and the
state-store thread, only while a phase drains) and `DIR/hub.prof` (the whole hub process: its
loop, decoder and database threads; it idles while the agent records), and prints the costliest
functions per delta of both sides. CPU time per delta is far less noisy than deltas/s on a shared
machine; the profiler itself roughly doubles the CPU time, so compare profiles with profiles.

A benchmark prints, it never asserts timing. Run from the repository root:

    uv run python bench/ship.py [--products N] [--batch-items K] [--in-flight F] [--seed S]
                                [--profile DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import math
import os
import platform
import pstats
import signal
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import msgpack
from common import Hub, cpu_seconds, hub_process, say, table

from bridge_agent import wire
from bridge_agent.hublink import HubClient
from bridge_agent.metrics import Metrics
from bridge_agent.model import Change, Product
from bridge_agent.shipper import Shipper, ShipperSettings
from bridge_agent.store import DueItem, Settlement, StateStore, now_ms
from bridge_agent.testing.catalog import make_product

TOKEN = "bench-hub-token-7f3a91c2"  # loopback only, a throwaway hub
AGENT_ID = "bench-agent"
STORE_ID = "main"
WIRE_STORE_ID = "wire"  # a second store for the wire-size probe, so its rows never mix in
RECORD_CHUNK = 1000  # changes per StateStore.record() call: one transaction, one fsync
HEALTH_TIMEOUT = 30.0  # seconds to wait for the hub's /healthz
TARGET_RATE = 20_000  # deltas per second
TARGET_PATCH_BYTES = 200
WIRE_BATCH = 10  # items in the multi-item body of the wire-size probe (fixarray: <= 15)


# -- timing helpers ------------------------------------------------------------------------------


class TimedStore(StateStore):
    """The state store with the time spent in `due` and `settle` added up (wall seconds), and
    its thread's work profiled while `profiler` is set (`--profile`)."""

    due_s = 0.0
    settle_s = 0.0
    profiler: cProfile.Profile | None = None  # enabled around each call on the store's thread

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        profiler = self.profiler
        if profiler is None:
            return await super()._run(fn, *args)

        def profiled(*args: Any) -> Any:
            assert profiler is not None
            profiler.enable()
            try:
                return fn(*args)
            finally:
                profiler.disable()

        return await super()._run(profiled, *args)

    async def due(self, limit: int) -> list[DueItem]:
        started = time.perf_counter()
        try:
            return await super().due(limit)
        finally:
            self.due_s += time.perf_counter() - started

    async def settle(self, settlements: Sequence[Settlement], *, error: str | None = None) -> None:
        started = time.perf_counter()
        try:
            await super().settle(settlements, error=error)
        finally:
            self.settle_s += time.perf_counter() - started


class CapturingHubClient(HubClient):
    """`HubClient` that keeps the size of every body it posts and the time spent waiting."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        super().__init__(http, token)
        self.bodies: list[bytes] = []
        self.keep_bodies = False
        self.send_s = 0.0

    async def send(self, body: bytes) -> tuple[wire.Result, ...]:
        if self.keep_bodies:
            self.bodies.append(body)
        started = time.perf_counter()
        try:
            return await super().send(body)
        finally:
            self.send_s += time.perf_counter() - started


@dataclasses.dataclass
class HeaderProbe:
    """An httpx request hook: the size of the last request's head (request line + headers)."""

    last: int = 0

    async def __call__(self, request: httpx.Request) -> None:
        line = f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n"
        fields = sum(len(k) + len(v) + 4 for k, v in request.headers.raw)  # "k: v\r\n"
        self.last = len(line) + fields + 2  # the blank line ending the head


# -- profiles (--profile) ------------------------------------------------------------------------

# The hub process profiles itself through this `sitecustomize` (put first on its PYTHONPATH): every
# thread gets a cProfile timed by that thread's CPU clock, and the merged stats are written when
# the hub exits (SIGTERM stops it cleanly). Thread pools are joined before `atexit` runs. SIGUSR1
# starts the main thread's profile afresh, so the hub's start-up (imports) is left out.
HUB_SITECUSTOMIZE = """
import atexit, cProfile, os, pstats, signal, threading, time
_out = os.environ.pop("BRIDGE_BENCH_PROFILE", None)
if _out:
    _profiles = []
    _thread_run = threading.Thread.run

    def _profiled_run(self):
        profile = cProfile.Profile(time.thread_time_ns, 1e-9)
        _profiles.append(profile)
        profile.enable()
        try:
            _thread_run(self)
        finally:
            profile.disable()

    def _dump():
        _main.disable()
        stats = pstats.Stats(_main)
        for profile in _profiles:
            stats.add(profile)
        stats.dump_stats(_out)

    def _restart(signum, frame):
        global _main
        _main.disable()
        _main = cProfile.Profile(time.thread_time_ns, 1e-9)
        _main.enable()

    threading.Thread.run = _profiled_run
    _main = cProfile.Profile(time.thread_time_ns, 1e-9)
    atexit.register(_dump)
    signal.signal(signal.SIGUSR1, _restart)
    _main.enable()
"""

# Functions whose cumulative time is reported by name: the content hash and its parts, and the
# big steps of both sides.
WATCHED = (
    "content_hash", "canonical_json", "product_hash", "_stable", "plan_batch", "decode_batch",
    "_apply_batch_sync", "invalid_product", "invalid_patch", "apply", "diff", "_build", "_due",
    "_settle", "packb", "unpackb", "pack", "encode", "execute", "executemany",
)  # fmt: skip


@dataclasses.dataclass
class Profiling:
    """The agent's two profiles (event loop, state-store thread) and where the hub's goes."""

    out: Path
    loop: cProfile.Profile = dataclasses.field(
        default_factory=lambda: cProfile.Profile(time.thread_time_ns, 1e-9)
    )
    store: cProfile.Profile = dataclasses.field(
        default_factory=lambda: cProfile.Profile(time.thread_time_ns, 1e-9)
    )

    @property
    def hub_file(self) -> Path:
        return self.out / "hub.prof"

    @property
    def agent_file(self) -> Path:
        return self.out / "agent.prof"

    @contextlib.contextmanager
    def hub_environment(self, workdir: Path) -> Iterator[None]:
        """The environment `hub_process` starts the hub with: our sitecustomize first."""
        site = workdir / "profile-site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(HUB_SITECUSTOMIZE, encoding="utf-8")
        saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "BRIDGE_BENCH_PROFILE")}
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(site), *([saved["PYTHONPATH"]] if saved["PYTHONPATH"] else [])]
        )
        os.environ["BRIDGE_BENCH_PROFILE"] = str(self.hub_file)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def dump_agent(self) -> None:
        stats = pstats.Stats(self.loop)
        stats.add(self.store)
        stats.dump_stats(self.agent_file)


def print_profile(path: Path, side: str, deltas: int, top: int = 25) -> None:
    """The costliest functions of one side's profile, in CPU microseconds per delta."""
    if not path.exists():
        say(f"no {side} profile at {path}")
        return
    stats = pstats.Stats(str(path))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in raw.values())
    per = 1e6 / max(deltas, 1)
    say(f"{side}: {total * per:.1f} us of CPU per delta under the profiler ({path})")

    def name(key: tuple[str, int, str]) -> str:
        file, line, func = key
        short = file.split("site-packages/")[-1].split("/work/main/")[-1]
        return f"{func} ({short}:{line})" if line else func

    rows = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    say(
        table(
            ["function (by own time)", "calls/delta", "own us/delta", "cum us/delta"],
            [
                [name(k), f"{v[1] / max(deltas, 1):.2f}", f"{v[2] * per:.2f}", f"{v[3] * per:.2f}"]
                for k, v in rows
            ],
        )
    )
    watched = [(k, v) for k, v in raw.items() if k[2] in WATCHED and v[3] * per >= 0.5]
    watched.sort(key=lambda kv: kv[1][3], reverse=True)
    say(
        table(
            ["watched function", "calls/delta", "cum us/delta"],
            [[name(k), f"{v[1] / max(deltas, 1):.2f}", f"{v[3] * per:.2f}"] for k, v in watched],
        )
    )
    say("")


# -- the hub in its own process ------------------------------------------------------------------


# -- phases --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Phase:
    """One timed drain of the outbox."""

    name: str
    items: int = 0
    batches: int = 0
    body_bytes: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    hub_cpu_s: float | None = None
    due_s: float = 0.0
    send_s: float = 0.0
    settle_s: float = 0.0
    left_pending: int = 0
    rejected: int = 0

    @property
    def rate(self) -> float:
        return self.items / self.wall_s if self.wall_s else 0.0


@dataclasses.dataclass
class Recording:
    name: str
    changes: int = 0
    queued: int = 0
    wall_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.queued / self.wall_s if self.wall_s else 0.0


def reprice(product: Product, *, bump_updated_at: bool = False) -> Product:
    """`product` with only its price changed (and `updated_at`, as a platform save would)."""
    assert product.price is not None
    units, _, fraction = product.price.partition(".")
    cents = int(units) * 100 + int(fraction.ljust(2, "0")[:2]) + 100  # money stays exact
    changed = dataclasses.replace(product, price=f"{cents // 100}.{cents % 100:02d}")
    if bump_updated_at:
        changed = dataclasses.replace(changed, updated_at="2026-06-01T12:00:00Z")
    return changed


async def record(
    store: StateStore, name: str, products: Iterator[Product], store_id: str = STORE_ID
) -> Recording:
    """Record products in chunks of RECORD_CHUNK; only the `record()` calls are timed."""
    result = Recording(name)
    chunk: list[Change] = []

    async def flush() -> None:
        started = time.perf_counter()
        result.queued += await store.record(chunk)
        result.wall_s += time.perf_counter() - started
        result.changes += len(chunk)
        chunk.clear()

    for product in products:
        chunk.append(Change(store_id, product.id, product, "import", now_ms()))
        if len(chunk) >= RECORD_CHUNK:
            await flush()
    if chunk:
        await flush()
    return result


async def drain(
    name: str,
    store: TimedStore,
    shipper: Shipper,
    client: CapturingHubClient,
    metrics: Metrics,
    hub: Hub,
    expected: int,
    batch_items: int,
    profiling: Profiling | None = None,
) -> Phase:
    """`ship_all()` (pipelined) until nothing is due, timing wall and CPU time of both sides."""
    phase = Phase(name)
    if profiling is not None:
        store.profiler = profiling.store
        profiling.loop.enable()
    bytes0 = metrics.value("bridge_hub_bytes_sent_total")
    batches0 = metrics.value("bridge_hub_batches_total", outcome="ok")
    due0, send0, settle0 = store.due_s, client.send_s, store.settle_s
    hub0 = cpu_seconds(hub.pid)
    cpu0 = time.process_time()
    started = time.perf_counter()
    max_rounds = 4 * math.ceil(expected / batch_items) + 20  # a stuck outbox cannot spin forever
    for _ in range(max_rounds):  # ship_all returns when nothing is due; loop only on leftovers
        settled = await shipper.ship_all()
        if settled == 0:
            break
        phase.items += settled
    phase.wall_s = time.perf_counter() - started
    phase.cpu_s = time.process_time() - cpu0
    if profiling is not None:
        profiling.loop.disable()
        store.profiler = None
    hub1 = cpu_seconds(hub.pid)
    if hub0 is not None and hub1 is not None:
        phase.hub_cpu_s = hub1 - hub0
    phase.batches = int(metrics.value("bridge_hub_batches_total", outcome="ok") - batches0)
    phase.body_bytes = int(metrics.value("bridge_hub_bytes_sent_total") - bytes0)
    phase.due_s = store.due_s - due0
    phase.send_s = client.send_s - send0
    phase.settle_s = store.settle_s - settle0
    stats = await store.stats()
    phase.left_pending, phase.rejected = stats.pending, stats.rejected
    return phase


@dataclasses.dataclass
class WireSize:
    """Sizes of one kind of patch as the shipper posts it."""

    name: str
    single_body: int  # whole body of a one-item batch
    single_item: int  # that item alone, re-encoded from the body
    per_item: float  # (body of WIRE_BATCH items - body of 1) / (WIRE_BATCH - 1)
    headers: int  # request line + headers of the POST
    item: dict[str, Any]  # the decoded item, to show what is in it


async def wire_size(
    store: TimedStore,
    client: CapturingHubClient,
    probe: HeaderProbe,
    metrics: Metrics,
    *,
    name: str,
    first: int,
    seed: int,
    bump_updated_at: bool,
) -> WireSize:
    """Ship WIRE_BATCH + 1 products, reprice them, post one patch alone then WIRE_BATCH together."""
    # Ids of the same length as the throughput catalog's (5 digits), and no variable products
    # (i % 5 == 0 ones), whose variants carry a price of their own.
    ids = [i for i in range(first, first + 5 * WIRE_BATCH) if i % 5][: WIRE_BATCH + 1]
    originals = [make_product(i, seed=seed) for i in ids]
    await record(store, "wire", iter(originals), WIRE_STORE_ID)
    settings = ShipperSettings(agent_id=AGENT_ID, batch_max_items=500)
    await _ship_all(Shipper(store, client, settings, metrics))
    changed = (reprice(p, bump_updated_at=bump_updated_at) for p in originals)
    await record(store, "wire", changed, WIRE_STORE_ID)

    client.bodies.clear()
    client.keep_bodies = True
    try:
        one = Shipper(store, client, dataclasses.replace(settings, batch_max_items=1), metrics)
        _check(await one.ship_once() == 1, "the one-item batch did not ship one item")
        headers = probe.last
        many = Shipper(
            store, client, dataclasses.replace(settings, batch_max_items=WIRE_BATCH), metrics
        )
        _check(await many.ship_once() == WIRE_BATCH, f"the batch did not ship {WIRE_BATCH}")
    finally:
        client.keep_bodies = False
    single, batch = client.bodies
    doc = msgpack.unpackb(single, raw=False)
    item = doc["items"][0]
    _check(item["op"] == "patch", f"expected a patch, the shipper sent {item}")
    _check(len(msgpack.unpackb(batch, raw=False)["items"]) == WIRE_BATCH, "wrong batch size")
    return WireSize(
        name=name,
        single_body=len(single),
        single_item=len(wire.packb(item)),
        per_item=(len(batch) - len(single)) / (WIRE_BATCH - 1),
        headers=headers,
        item=item,
    )


def _check(condition: bool, message: str) -> None:
    """A correctness check of the benchmark's own setup (never of timing)."""
    if not condition:
        raise RuntimeError(message)


async def _ship_all(shipper: Shipper, max_rounds: int = 100) -> None:
    for _ in range(max_rounds):
        if await shipper.ship_once() == 0:
            return
    raise RuntimeError(f"outbox not empty after {max_rounds} rounds")


# -- the run -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    products: int
    batch_items: int
    recordings: list[Recording]
    phases: list[Phase]
    sizes: list[WireSize]
    hub_stats: dict[str, Any]
    total_wall_s: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


async def run(
    products: int,
    batch_items: int,
    seed: int,
    workdir: Path,
    *,
    in_flight: int = 2,
    profiling: Profiling | None = None,
) -> Report:
    started = time.perf_counter()
    load_before = os.getloadavg()
    recordings: list[Recording] = []
    phases: list[Phase] = []
    with contextlib.ExitStack() as stack:
        if profiling is not None:  # only the hub's child process reads these variables
            stack.enter_context(profiling.hub_environment(workdir))
        hub = stack.enter_context(hub_process(workdir, TOKEN, ready_timeout=HEALTH_TIMEOUT))
        if profiling is not None:
            os.kill(hub.pid, signal.SIGUSR1)  # the hub's profile starts now, after its imports
        probe = HeaderProbe()
        async with (
            TimedStore.open(workdir / "state") as opened,
            httpx.AsyncClient(
                base_url=hub.url, timeout=60.0, event_hooks={"request": [probe]}
            ) as http,
        ):
            assert isinstance(opened, TimedStore)
            store = opened
            metrics = Metrics()
            client = CapturingHubClient(http, TOKEN)
            settings = ShipperSettings(
                agent_id=AGENT_ID, batch_max_items=batch_items, max_in_flight=in_flight
            )
            shipper = Shipper(store, client, settings, metrics)

            say(f"recording {products} products (chunks of {RECORD_CHUNK}) ...")
            catalog = (make_product(i, seed=seed) for i in range(products))
            recordings.append(await record(store, "record upserts", catalog))
            say(f"  {recordings[-1].rate:,.0f} changes/s; shipping as upserts ...")
            upserts = await drain(
                "ship upserts", store, shipper, client, metrics, hub, products, batch_items,
                profiling,
            )  # fmt: skip
            phases.append(upserts)
            say(f"  {upserts.rate:,.0f} items/s; recording a new price for every product ...")
            repriced = (reprice(make_product(i, seed=seed)) for i in range(products))
            recordings.append(await record(store, "record price changes", repriced))
            say(f"  {recordings[-1].rate:,.0f} changes/s; shipping as patches ...")
            patches = await drain(
                "ship patches", store, shipper, client, metrics, hub, products, batch_items,
                profiling,
            )  # fmt: skip
            phases.append(patches)
            say(f"  {patches.rate:,.0f} items/s; measuring the wire size of price patches ...")

            sizes = [
                await wire_size(
                    store, client, probe, metrics,
                    name="price only", first=10_000, seed=seed, bump_updated_at=False,
                ),
                await wire_size(
                    store, client, probe, metrics,
                    name="price + updated_at", first=20_000, seed=seed, bump_updated_at=True,
                ),
            ]  # fmt: skip
            reply = await http.get("/v1/stats", headers={"Authorization": f"Bearer {TOKEN}"})
            reply.raise_for_status()
            hub_stats: dict[str, Any] = reply.json()
    return Report(
        products=products,
        batch_items=batch_items,
        recordings=recordings,
        phases=phases,
        sizes=sizes,
        hub_stats=hub_stats,
        total_wall_s=time.perf_counter() - started,
        load_before=load_before,
        load_after=os.getloadavg(),
    )


# -- output --------------------------------------------------------------------------------------


def _ms(seconds: float, items: int) -> str:
    return f"{seconds * 1e6 / items:.1f}" if items else "-"


def print_report(report: Report) -> None:
    say("")
    say(
        f"bench/ship.py: {report.products:,} products, batch_max_items={report.batch_items},"
        f" {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}"
    )
    say("")
    say(
        table(
            ["recording", "changes", "queued", "wall s", "changes/s"],
            [
                [r.name, f"{r.changes:,}", f"{r.queued:,}", f"{r.wall_s:.2f}", f"{r.rate:,.0f}"]
                for r in report.recordings
            ],
        )
    )
    say("")
    rows = []
    for p in report.phases:
        hub_cpu = "-" if p.hub_cpu_s is None else _ms(p.hub_cpu_s, p.items)
        verdict = "ok" if p.rate >= TARGET_RATE else f"BELOW {TARGET_RATE:,}"
        rows.append(
            [
                p.name, f"{p.items:,}", f"{p.batches:,}", f"{p.wall_s:.2f}", f"{p.rate:,.0f}",
                verdict, f"{p.body_bytes:,}", f"{p.body_bytes / max(p.items, 1):,.0f}",
                _ms(p.cpu_s, p.items), hub_cpu,
            ]
        )  # fmt: skip
    say(
        table(
            [
                "shipping", "items", "batches", "wall s", "items/s", "target", "body bytes",
                "B/item", "agent CPU us/item", "hub CPU us/item",
            ],
            rows,
        )
    )  # fmt: skip
    say("")
    say("where the shipping wall time went (agent side, per item):")
    rows = []
    for p in report.phases:
        other = p.wall_s - p.due_s - p.send_s - p.settle_s
        rows.append(
            [
                p.name, _ms(p.due_s, p.items), _ms(p.send_s, p.items), _ms(p.settle_s, p.items),
                _ms(other, p.items), _ms(p.wall_s, p.items),
            ]
        )  # fmt: skip
    say(
        table(
            ["phase", "due() us", "hub round trip us", "settle() us", "build+rest us", "total us"],
            rows,
        )
    )
    leftovers = [p for p in report.phases if p.left_pending or p.rejected]
    for p in leftovers:
        say(f"WARNING {p.name}: {p.left_pending} still pending, {p.rejected} rejected")
    say("")
    say(f"wire size of price patches (shipper's real bodies, target <= {TARGET_PATCH_BYTES} B):")
    rows = []
    for s in report.sizes:
        verdict = "ok" if s.per_item <= TARGET_PATCH_BYTES else f"ABOVE {TARGET_PATCH_BYTES}"
        rows.append(
            [
                s.name, f"{s.single_body}", f"{s.single_item}", f"{s.per_item:.1f}", verdict,
                f"{s.headers}",
            ]
        )  # fmt: skip
    say(
        table(
            [
                "patch", "1-item body B", "item alone B", f"per item in {WIRE_BATCH}-batch B",
                "target", "HTTP request head B",
            ],
            rows,
        )
    )  # fmt: skip
    for s in report.sizes:
        say(f"  {s.name}: {s.item}")
    say("")
    hub = report.hub_stats
    say(
        f"hub counters: {hub.get('batches', 0):,} batches, {hub.get('items', 0):,} items,"
        f" by op {hub.get('by_op', {})}, by status {hub.get('by_status', {})}"
    )
    best = max(p.rate for p in report.phases)
    met = "met" if best >= TARGET_RATE else "NOT met"
    say(f"throughput target {TARGET_RATE:,} deltas/s: {met} (best phase {best:,.0f}/s)")
    price = report.sizes[0].per_item
    met = "met" if price <= TARGET_PATCH_BYTES else "NOT met"
    say(
        f"price patch target <= {TARGET_PATCH_BYTES} B: {met} ({price:.0f} B per item in a batch,"
        f" {report.sizes[0].single_body} B as a one-item body)"
    )
    say(
        f"total run time {report.total_wall_s:.1f} s; load average (1/5/15 min) before"
        f" {'/'.join(f'{x:.2f}' for x in report.load_before)}, after"
        f" {'/'.join(f'{x:.2f}' for x in report.load_after)}: other work on the machine"
        " slows both processes"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--products", type=int, default=50_000, help="default %(default)s")
    parser.add_argument(
        "--batch-items", type=int, default=500, help="batch_max_items (default %(default)s)"
    )
    parser.add_argument("--seed", type=int, default=7, help="catalog seed (default %(default)s)")
    parser.add_argument(
        "--in-flight", type=int, default=2, help="max_in_flight batches (default %(default)s)"
    )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="write agent.prof and hub.prof (cProfile) here"
    )
    args = parser.parse_args(argv)
    if args.products < 1 or args.batch_items < 1:
        parser.error("--products and --batch-items must be at least 1")
    profiling = None
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        profiling = Profiling(args.profile.resolve())
    with tempfile.TemporaryDirectory(prefix="bridge-bench-ship-") as tmp:
        report = asyncio.run(
            run(
                args.products, args.batch_items, args.seed, Path(tmp),
                in_flight=args.in_flight, profiling=profiling,
            )
        )  # fmt: skip
    print_report(report)
    if profiling is not None:
        profiling.dump_agent()
        deltas = sum(p.items for p in report.phases)
        say(f"profiles of the shipping phases ({deltas:,} deltas; CPU time, profiler included):")
        print_profile(profiling.agent_file, "agent", deltas)
        print_profile(profiling.hub_file, "hub", deltas)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
