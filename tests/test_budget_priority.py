"""Live work first inside one store's request budget (`platforms/http.py`: `PrioritySlots`,
`RequestBudget`, `background_work`).

A verification sweep or a refresh (background) and the hints and webhooks of the moment (live)
share one budget: the rate and the concurrency bound them together, a freed slot goes to live work
first, background work never holds the last slot, and a live request waits at most about
`(concurrency - 1) / rate` for its start however much background work is queued.

The budget's own tests run in virtual time (`VirtualTime`: the budget's injected clock and sleep,
and the requests' durations, advance only when every task waits), so they are exact and fast;
the last one sends a sweep and hints through a real WooCommerce adapter to the simulator and
measures the rate where it matters, at the store.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from bridge_agent.config import Secret, StoreSettings
from bridge_agent.platforms.http import (
    PrioritySlots,
    RequestBudget,
    background_work,
    build_platform,
    in_background,
    live_work,
)
from bridge_agent.platforms.woocommerce import WooCommerce
from bridge_agent.simulators.core.stats import RequestStats
from bridge_agent.simulators.woocommerce import WooSimulator, serve

# --- virtual time ---------------------------------------------------------------------------------


class VirtualTime:
    """A clock that moves only when every task is asleep: to the earliest wake-up time."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        waiter = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(0.0, seconds), self._seq, waiter))
        self._seq += 1
        await waiter

    async def run(self, *work: Coroutine[Any, Any, Any]) -> list[Any]:
        """Run `work` to its end, advancing the clock whenever nothing else can run."""
        tasks = [asyncio.ensure_future(w) for w in work]
        while True:
            for _ in range(50):  # let every task that can run get to its next wait
                await asyncio.sleep(0)
            if all(t.done() for t in tasks):
                return [t.result() for t in tasks]
            assert self._timers, "stuck: tasks wait for a slot nobody will free"
            self.now = max(self.now, self._timers[0][0])
            while self._timers and self._timers[0][0] <= self.now:
                _, _, waiter = heapq.heappop(self._timers)
                if not waiter.done():
                    waiter.set_result(None)


@dataclass
class Start:
    kind: str  # "live" or "background"
    asked: float
    started: float
    in_flight: int
    background_in_flight: int
    held: int


@dataclass
class Load:
    """Requests through one budget in virtual time, each taking `duration` once started."""

    budget: RequestBudget
    time: VirtualTime
    starts: list[Start] = field(default_factory=list)

    async def request(self, duration: float, at: float = 0.0) -> None:
        if at:
            await self.time.sleep(at - self.time.now)
        asked = self.time.now
        async with self.budget.slot():
            self.starts.append(
                Start(
                    "background" if in_background() else "live",
                    asked,
                    self.time.now,
                    self.budget.in_flight,
                    self.budget.background_in_flight,
                    self.budget.slots.held,
                )
            )
            await self.time.sleep(duration)

    async def sweep(self, requests: int, duration: float) -> None:
        """A run: its requests go out from tasks it creates, which inherit the background mark."""
        with background_work():
            await asyncio.gather(*(self.request(duration) for _ in range(requests)))

    async def hints(self, arrivals: Sequence[float], duration: float) -> None:
        await asyncio.gather(*(self.request(duration, at) for at in arrivals))

    def of(self, kind: str) -> list[Start]:
        return [s for s in self.starts if s.kind == kind]


def load(concurrency: int, rate: float = 0.0, burst: float = 1.0) -> Load:
    clock = VirtualTime()
    budget = RequestBudget(concurrency, rate, burst=burst, clock=clock.clock, sleep=clock.sleep)
    return Load(budget, clock)


def most_in_a_window(times: Sequence[float], window: float) -> int:
    """The most of `times` in any half-open interval [t, t + window)."""
    ordered = sorted(times)
    most, first = 0, 0
    for last, t in enumerate(ordered):
        while ordered[first] <= t - window:
            first += 1
        most = max(most, last - first + 1)
    return most


# --- the mark -------------------------------------------------------------------------------------


async def test_the_background_mark_is_inherited_by_tasks_and_ends_with_the_block() -> None:
    async def mark() -> bool:
        return in_background()

    assert not in_background()
    with background_work():
        inside = asyncio.create_task(mark())  # created inside: copies the mark
        assert await inside
        with background_work():
            assert in_background()
        assert in_background()  # an inner block leaves the outer mark as it was
        with live_work():  # a shared prerequisite live work waits for too
            assert not in_background()
        assert in_background()
    outside = asyncio.create_task(mark())
    assert not await outside
    assert not in_background()


# --- the budget in virtual time -------------------------------------------------------------------


@pytest.mark.parametrize(("concurrency", "rate", "burst"), [(4, 10.0, 1.0), (3, 20.0, 4.0)])
async def test_the_rate_and_concurrency_hold_for_live_and_background_together(
    concurrency: int, rate: float, burst: float
) -> None:
    run = load(concurrency, rate, burst)
    hints = [0.25 * i for i in range(1, 16)]  # while the sweep runs
    await run.time.run(run.sweep(80, duration=0.05), run.hints(hints, duration=0.05))
    assert len(run.of("background")) == 80 and len(run.of("live")) == 15
    starts = [s.started for s in run.starts]
    for window in (0.25, 0.5, 1.0, 3.0):
        most = most_in_a_window(starts, window)
        assert most <= rate * window + burst + 1e-9, f"{most} starts within {window} s"
    # The budget was the bound: the whole load took as long as the rate allows, no longer.
    floor = (len(starts) - burst) / rate
    assert floor - 1e-9 <= max(starts) <= floor + 0.5
    assert max(s.in_flight for s in run.starts) <= concurrency
    assert max(s.held for s in run.starts) <= concurrency
    assert run.budget.in_flight == run.budget.background_in_flight == run.budget.slots.held == 0


async def test_a_live_request_waits_at_most_the_paced_background_ahead_of_it() -> None:
    concurrency, rate = 4, 10.0
    run = load(concurrency, rate)
    hints = [1.0, 2.55, 4.0, 7.31, 12.02]
    # 200 background requests saturate the budget for 20 s; each takes 0.2 s, so three slots
    # could start 15 a second: the rate is what holds them back, and their paced starts queue.
    await run.time.run(run.sweep(200, duration=0.2), run.hints(hints, duration=0.05))
    live = run.of("live")
    assert [s.asked for s in live] == hints
    bound = (concurrency - 1) / rate + 1e-9
    for s in live:
        assert s.started - s.asked <= bound, f"live request asked at {s.asked} waited"
        assert any(b.asked <= s.asked < b.started for b in run.of("background")), (
            "background work was waiting when the live request came: it went first"
        )
    # Background work still got the rest of the budget.
    assert max(b.started for b in run.of("background")) <= (200 + len(hints)) / rate


async def test_with_one_slot_a_live_request_goes_before_queued_background_ones() -> None:
    run = load(1)
    await run.time.run(run.sweep(10, duration=1.0), run.hints([2.5], duration=1.0))
    (live,) = run.of("live")
    assert (live.asked, live.started) == (2.5, 3.0)  # after the request in flight, first
    assert [s.kind for s in run.starts][:5] == ["background"] * 3 + ["live", "background"]
    assert len(run.of("background")) == 10  # one slot: background work uses it too


async def test_background_work_never_takes_the_last_slot() -> None:
    run = load(3)
    await run.time.run(run.sweep(20, duration=1.0), run.hints([0.5, 4.25], duration=0.5))
    background = run.of("background")
    assert max(s.background_in_flight for s in background) == 2  # reached, never passed
    assert max(s.held for s in background) == 2
    for s in run.of("live"):
        assert s.started == s.asked  # the slot kept free for it
        assert s.held == 3
    assert max(s.started for s in background) == 9.0  # 20 requests, two at a time
    assert run.budget.slots.held == run.budget.slots.background_held == 0


async def test_freed_slots_go_to_waiting_live_requests_first() -> None:
    slots = PrioritySlots(2)
    order: list[str] = []

    async def take(name: str, background: bool) -> None:
        async with slots.hold(background):
            order.append(name)
            await gate.wait()

    gate = asyncio.Event()
    await slots.acquire(False)
    await slots.acquire(False)  # both slots held by live work
    tasks = [
        asyncio.create_task(take(name, background))
        for name, background in [("b1", True), ("b2", True), ("l1", False), ("l2", False)]
    ]
    for _ in range(5):
        await asyncio.sleep(0)
    assert (slots.live_waiting, slots.background_waiting) == (2, 2)
    slots.release(False)
    slots.release(False)
    for _ in range(5):
        await asyncio.sleep(0)
    assert order == ["l1", "l2"]  # although the background ones asked first
    gate.set()
    await asyncio.gather(*tasks)
    assert order == ["l1", "l2", "b1", "b2"]
    assert (slots.held, slots.background_held) == (0, 0)


async def test_a_cancelled_waiter_leaks_no_slot() -> None:
    slots = PrioritySlots(2)
    await slots.acquire(True)  # a background request holds the one slot background may use
    waiting = asyncio.create_task(slots.acquire(True))
    await asyncio.sleep(0)
    assert slots.background_waiting == 1
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert slots.background_waiting == 0

    # Handed a slot and cancelled before it could run: the slot goes on to the next waiter.
    await slots.acquire(False)  # now both slots are held
    handed = asyncio.create_task(slots.acquire(False))
    after = asyncio.create_task(slots.acquire(False))
    await asyncio.sleep(0)
    slots.release(False)  # hands the slot to `handed` ...
    handed.cancel()  # ... which is cancelled before it resumes
    await asyncio.gather(handed, return_exceptions=True)
    await asyncio.wait_for(after, 5)
    assert (slots.held, slots.background_held) == (2, 1)


async def test_the_slots_work_as_an_adapters_semaphore() -> None:
    slots = PrioritySlots(2)
    with background_work():
        async with slots:
            assert (slots.held, slots.background_held) == (1, 1)
    async with slots:
        assert (slots.held, slots.background_held) == (1, 0)
    assert slots.held == 0


# --- a sweep and hints through a real adapter, measured at the simulator --------------------------


class TimedStats(RequestStats):
    """The simulator's request counter, also noting when each request arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/wp-json/"):
            self.arrivals.append(time.monotonic())
        return await super().middleware(request, handler)


@dataclass
class Shop:
    sim: WooSimulator
    url: str
    stats: TimedStats

    def settings(self, **changes: Any) -> StoreSettings:
        base = StoreSettings(
            id="main",
            platform="woocommerce",
            url=self.url,
            secrets={
                "consumer_key": Secret(self.sim.consumer_key),
                "consumer_secret": Secret(self.sim.consumer_secret),
            },
            options={"api_prefix": "/wp-json/wc/v3", "per_page": 10},
        )
        return replace(base, **changes)


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    from bridge_agent.simulators.core.faults import Faults  # noqa: PLC0415

    # 20 ms per answer: three background requests in flight could go faster than the budget.
    sim = WooSimulator.generate(
        products=120, seed=3, variable_ratio=0.0, faults=Faults(latency_ms=20.0, jitter=0.0)
    )
    stats = sim.requests = TimedStats()  # before the app is made: its middleware counts
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(sim, "127.0.0.1", 0, ready=port.set_result))
    bound = await asyncio.wait_for(port, 30)
    try:
        yield Shop(sim, f"http://127.0.0.1:{bound}", stats)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.close()


async def test_a_sweep_and_live_hints_through_an_adapter_stay_within_the_budget(
    shop: Shop,
) -> None:
    concurrency, rate = 4, 40.0
    settings = shop.settings(concurrency=concurrency, requests_per_second=rate)
    budget = RequestBudget.for_store(settings)
    waits: list[float] = []

    async with httpx.AsyncClient(timeout=30) as http:
        adapter = build_platform(WooCommerce, settings, http, budget=budget)
        assert isinstance(adapter, WooCommerce)
        products = [doc["product"] for doc in shop.sim.truth()]
        ids = [str(p["id"]) for p in products if p["status"] != "trash"][:80]

        async def sweep() -> float:
            """A verification sweep's shape: every product read, many requests at once."""
            with background_work():
                found = await asyncio.gather(*(adapter.fetch_product(i) for i in ids))
            assert all(p is not None for p in found)
            return time.monotonic()

        async def hint(product_id: str, after: float) -> float:
            await asyncio.sleep(after)  # hints come while the sweep has the budget saturated
            asked = time.monotonic()
            assert await adapter.fetch_product(product_id) is not None
            waits.append(time.monotonic() - asked)
            return time.monotonic()

        before = shop.stats.total
        swept, *answered = await asyncio.gather(
            sweep(), *(hint(i, 0.3 + 0.15 * n) for n, i in enumerate(ids[::10]))
        )

    assert max(answered) < swept  # every hint was answered while the sweep ran
    arrivals = shop.stats.arrivals
    assert shop.stats.total - before == len(arrivals) >= len(ids) + 8
    # At the store: never more than the rate allows in any window (one more for the jitter of
    # the loopback between the budget's start and the simulator's arrival).
    for window in (0.25, 0.5, 1.0):
        most = most_in_a_window(arrivals, window)
        assert most <= rate * window + 1 + 1, f"{most} requests within {window} s at the store"
    span = max(arrivals) - min(arrivals)
    assert (len(arrivals) - 1) / span <= rate * 1.05
    # Live hints did not queue behind the sweep: a slot is kept for them, and only the paced
    # background starts ahead of them, (concurrency - 1) / rate, delay them, plus the answer.
    assert len(waits) == 8
    assert max(waits) <= (concurrency - 1) / rate + 0.5, waits
    assert budget.in_flight == budget.background_in_flight == budget.slots.held == 0


def test_the_budget_rejects_a_bad_concurrency() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        PrioritySlots(0)
