"""The store's query-cost bucket as the adapter models it, so that Shopify never has to throttle.

Shopify limits the Admin GraphQL API per app and shop with a leaky bucket of points: each query
asks for its calculated cost up front (refunded down to its actual cost afterwards), the bucket
refills at `restoreRate` points per second up to `maximumAvailable`, and a query asking for more
than the bucket holds is answered `THROTTLED` without running. Every answer reports the bucket
(`extensions.cost.throttleStatus`).

`CostBucket` is one store's model of that bucket, shared by every request of the adapter (one
instance per adapter):

- `observe(status)` records what an answer reported and when it was read (the injected clock);
- the level at any later time is `currentlyAvailable + elapsed * restoreRate`, capped at
  `maximumAvailable`, less what the requests sent since then asked for;
- `acquire(cost)` waits until the modelled level holds `cost`, then reserves it, so concurrent
  requests do not all spend the same points; `release(cost)` returns the reservation when the
  answer arrives (its `throttleStatus` then says the truth). Background waiters are served in
  the order they asked; live ones as soon as the bucket holds their cost.
- `throttled_wait(requested, status)` is the wait after a `THROTTLED` answer, should one come
  anyway (another app of the same shop, Shopify lowering limits): `(requested - available) /
  restoreRate`.

Before the first answer nothing is known and nothing is waited for; afterwards a request never
goes out before the bucket, as last reported and restored since, holds its cost. A report resets
the level less the requests still unanswered, even if Shopify charged them before it reported
(then they count twice: the model errs on the side of waiting).

Live work first, as in the store's request budget (`platforms/http.py`): a request of a run's
background work (`in_background()`) waits its turn behind the other background requests and
goes out only when the bucket keeps `live_reserve()` points besides its cost (enough for a
webhook's re-fetch or inventory-item resolve), and not while a live request waits for points; a
live request never waits behind a background one. Live requests that must wait are served in the
order they asked: a later one may pass the waiters with points the bucket holds beyond what
every earlier waiter needs, or (a webhook's resolve, which has 3 s to answer) within an allowance
of `live_reserve()` points per first waiter, so the first waiter is delayed by that much at most.
Without the order, a steady stream of cheaper requests (a poll of 872 points each second) takes
the points every time the bucket reaches its cost, and a costlier one that waits (a re-fetch of
900) never sees its own: the chaos oracle found exactly that stall. A waiter that leaves without
its points (cancelled, refused) wakes the ones behind it, whose waits counted it. No waiter
sleeps holding a lock; the first waiter waits for nothing but its own points (and the allowance).

Every request is numbered when it reserves (`acquire` returns the number), and a report is
observed with the number of the request it answered: answers may arrive out of order, and a
report from a request sent before the one last observed is older news (Shopify produced it
before charging a later request) and ignored.

A store reporting nonsense must not stall the adapter: a `restoreRate` below `MIN_RESTORE_RATE`
is raised to it (logged once), one `acquire` gives up after `MAX_ACQUIRE_WAIT` seconds in total
(`PlatformUnavailable`, `RATE_LIMITED`), and a cost larger than the bucket could ever hold is
refused at once instead of being sent to be answered `THROTTLED`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import structlog

from bridge_agent.errors import Outcome, PlatformUnavailable
from bridge_agent.platforms.http import in_background

__all__ = ["CostBucket", "ThrottleStatus"]

log = structlog.get_logger("bridge_agent.shopify")

MIN_WAIT = 0.05  # seconds: below this a wait is not worth a timer
LONG_WAIT = 5.0  # seconds: a wait this long is logged (a full bucket refills in 20 s)
MAX_WAIT = 60.0  # one sleep never exceeds this (the model is looked at again after it)
MAX_ACQUIRE_WAIT = 300.0  # seconds one request may wait for points in total before giving up
MIN_RESTORE_RATE = 1.0  # points a second: a store reporting less is treated as broken
LIVE_RESERVE = 300.0  # points background work leaves for live work (at most a quarter bucket)


@dataclass(frozen=True, slots=True)
class ThrottleStatus:
    """`extensions.cost.throttleStatus` of one answer."""

    maximum: float
    available: float
    restore_rate: float

    @classmethod
    def parse(cls, extensions: Any) -> ThrottleStatus | None:
        """The status in an answer's `extensions`, or None when it has none (or a broken one)."""
        if not isinstance(extensions, Mapping):
            return None
        cost = extensions.get("cost")
        status = cost.get("throttleStatus") if isinstance(cost, Mapping) else None
        if not isinstance(status, Mapping):
            return None
        try:
            maximum = float(status["maximumAvailable"])
            available = float(status["currentlyAvailable"])
            rate = float(status["restoreRate"])
        except (KeyError, TypeError, ValueError):
            return None
        if not (maximum > 0 and rate > 0 and 0 <= available <= maximum * 2):
            return None
        return cls(maximum, min(available, maximum), rate)


class CostBucket:
    """One store's modelled leaky bucket; see the module docstring."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        store: str = "",
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._store = store
        self.status: ThrottleStatus | None = None
        self._level = 0.0  # points at `_at`, reservations taken
        self._at = 0.0
        self.reserved = 0.0  # points of requests sent and not yet answered
        self.waited = 0.0  # seconds spent waiting for points, in total (for tests and stats)
        self.waiting = 0  # requests asleep waiting for points now
        self._sent = 0  # the number of the last request that reserved
        self._seen = 0  # the number of the request whose report the model starts from
        self._slow_logged = False
        # Background requests wait one at a time, in the order they asked; live ones hold no
        # turn, and while any waits for points (`_live_need`) no background request takes any.
        self._background_turn = asyncio.Lock()
        self._live_need = 0.0  # the points all waiting live requests need, together
        self._live_waiters: dict[int, float] = {}  # ticket -> cost, in the order they asked
        self._tickets = 0
        self._wait_logged = float("-inf")  # when a long wait was last logged (one a minute)
        self._passed = 0.0  # points later live requests took past the first waiter
        self._queue_changed = asyncio.Event()  # set when a live waiter leaves without points

    def __repr__(self) -> str:
        level = self.level()
        shown = "unknown" if level is None else f"{level:.0f}"
        return f"CostBucket(level={shown}, reserved={self.reserved:.0f})"

    def observe(self, status: ThrottleStatus, request: int | None = None) -> None:
        """An answer reported the bucket: the model starts again from it, now, less what the
        requests still unanswered reserved (they may not be in the report yet). `request` is the
        number `acquire` gave the request answered: a report from a request sent before the one
        last observed is older than the model and ignored (None: the newest)."""
        number = self._sent if request is None else request
        if self.status is not None and number < self._seen:
            return
        self._seen = number
        if status.restore_rate < MIN_RESTORE_RATE:
            if not self._slow_logged:
                self._slow_logged = True
                log.warning(
                    "shopify_restore_rate_floored",
                    store=self._store,
                    reported=status.restore_rate,
                    assumed=MIN_RESTORE_RATE,
                )
            status = replace(status, restore_rate=MIN_RESTORE_RATE)
        self.status = status
        self._level = status.available - self.reserved
        self._at = self._clock()

    def level(self) -> float | None:
        """The points the bucket holds now, as modelled (None before any answer)."""
        status = self.status
        if status is None:
            return None
        now = self._clock()
        elapsed = max(0.0, now - self._at)
        self._level = min(status.maximum, self._level + elapsed * status.restore_rate)
        self._at = now
        return self._level

    def live_reserve(self) -> float:
        """The points background work leaves in the bucket for live work."""
        status = self.status
        return 0.0 if status is None else min(LIVE_RESERVE, status.maximum / 4)

    def wait_for(self, cost: float, *, reserve: float = 0.0, capped: bool = True) -> float:
        """Seconds until the modelled bucket holds `cost` and `reserve` besides (0 when it does,
        or is unknown); a cost and reserve above the bucket's size wait for a full bucket."""
        status = self.status
        level = self.level()
        if status is None or level is None:
            return 0.0
        need = (min(cost + reserve, status.maximum) if capped else cost + reserve) - level
        if need <= 0:
            return 0.0
        return min(MAX_WAIT, need / status.restore_rate)

    def fits(self, cost: float) -> bool:
        """Whether a request asking `cost` could ever be served (the bucket unknown: yes)."""
        return self.status is None or cost <= self.status.maximum

    async def acquire(self, cost: float) -> int:
        """Wait until the bucket holds `cost` (and, in background work, the live reserve), then
        reserve it (release it with `release`); returns the request's number for `observe`."""
        if not self.fits(cost):
            raise self._too_costly(cost)
        if in_background():
            # Background requests take their turns in order; a live one never needs this lock.
            async with self._background_turn:
                return await self._take(cost, background=True)
        return await self._take(cost, background=False)

    async def _take(self, cost: float, *, background: bool) -> int:
        waited = 0.0
        ticket: int | None = None  # a live request's place among the live waiters
        taken = False
        try:
            while True:
                if not self.fits(cost):  # the bucket shrank while we waited
                    raise self._too_costly(cost)
                if background and self._live_need > 0:
                    # A live request is waiting for points: it goes first.
                    wait = self.wait_for(self._live_need)
                elif background:
                    wait = self.wait_for(cost, reserve=self.live_reserve())
                    if wait <= 0:
                        break
                else:
                    ahead = self._ahead(ticket)
                    passing = ahead > 0 and self._passed + cost <= self.live_reserve()
                    if passing:
                        # A cheap request (a webhook's resolve, 3 s to answer) may pass the
                        # waiters: they are delayed by `live_reserve()` points at most.
                        ahead = 0.0
                    # Not capped at the maximum: behind waiters needing more than the bucket
                    # holds, a later request waits for them to go, never takes a full bucket.
                    wait = self.wait_for(cost + ahead, capped=False)
                    if wait <= 0:
                        if passing:
                            self._passed += cost
                        break
                if waited >= MAX_ACQUIRE_WAIT:
                    raise PlatformUnavailable(
                        f"Shopify's query cost bucket of store {self._store!r} did not refill "
                        f"to {cost:.0f} points in {MAX_ACQUIRE_WAIT:.0f} s: the shop reports "
                        "too slow a restore rate, or another app spends its points",
                        outcome=Outcome.RATE_LIMITED,
                        retry_after=MAX_WAIT,
                    )
                if not background and ticket is None:
                    self._tickets += 1
                    ticket = self._tickets
                    self._live_waiters[ticket] = cost
                    self._live_need += cost
                # Any shortfall is waited for, at least MIN_WAIT: a request sent a few points
                # short is answered THROTTLED (the store checks available >= requested). A live
                # request sleeps holding no lock: a webhook's 3-point resolve must not wait
                # behind a poll page's 900 (it passes within the allowance above).
                wait = max(wait, MIN_WAIT)
                if wait >= LONG_WAIT and self._clock() - self._wait_logged >= MAX_WAIT:
                    self._wait_logged = self._clock()
                    # A wait this long is news to an operator: a stalled store shows here.
                    status = self.status
                    log.warning(
                        "shopify_bucket_wait",
                        store=self._store,
                        cost=round(cost),
                        background=background,
                        wait_s=round(wait, 1),
                        waited_s=round(waited, 1),
                        modelled=round(self._level),
                        reserved=round(self.reserved),
                        live_need=round(self._live_need),
                        waiting=self.waiting + 1,
                        maximum=status.maximum if status else None,
                        restore_rate=status.restore_rate if status else None,
                    )
                waited += wait
                self.waited += wait
                self.waiting += 1
                try:
                    if ticket is None:
                        await self._sleep(wait)
                    else:
                        await self._nap(wait)
                finally:
                    self.waiting -= 1
            taken = True
        finally:
            if ticket is not None:
                if ticket == next(iter(self._live_waiters)):
                    self._passed = 0.0  # the next first waiter gets its own allowance
                del self._live_waiters[ticket]
                self._live_need = sum(self._live_waiters.values())
                if not taken:  # cancelled or refused: the waiters behind need it no more
                    self._queue_changed.set()
                    self._queue_changed = asyncio.Event()
        self.reserved += cost
        if self.level() is not None:
            self._level -= cost
        self._sent += 1
        return self._sent

    async def _nap(self, wait: float) -> None:
        """Sleep `wait`, or less if a live waiter ahead leaves without its points."""
        sleeper = asyncio.ensure_future(self._sleep(wait))
        waker = asyncio.ensure_future(self._queue_changed.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    def _ahead(self, ticket: int | None) -> float:
        """The points the live waiters before `ticket` need (all of them for a newcomer)."""
        if ticket is None:
            return sum(c for c in self._live_waiters.values() if self.fits(c))
        return sum(c for t, c in self._live_waiters.items() if t < ticket and self.fits(c))

    def release(self, cost: float) -> None:
        """The request that reserved `cost` was answered (its report, observed next, includes
        it) or failed (its points stay spent in the model: the cautious side)."""
        self.reserved = max(0.0, self.reserved - cost)

    def throttled_wait(self, requested: float, status: ThrottleStatus | None) -> float:
        """How long to wait after a THROTTLED answer that asked for `requested` points."""
        if status is None:
            return 1.0  # nothing said: a short pause, then the model knows more
        rate = max(MIN_RESTORE_RATE, status.restore_rate)
        need = min(requested, status.maximum) - status.available
        return min(MAX_WAIT, max(MIN_WAIT, need / rate))

    def _too_costly(self, cost: float) -> PlatformUnavailable:
        maximum = self.status.maximum if self.status is not None else 0.0
        return PlatformUnavailable(
            f"a query of store {self._store!r} asks for {cost:.0f} points, more than Shopify's "
            f"query cost bucket of the shop holds when full ({maximum:.0f}): Shopify would "
            "answer it THROTTLED for ever; the shop's API limits were lowered below what "
            "bridge-agent's Shopify adapter can work with",
            outcome=Outcome.RATE_LIMITED,
            retry_after=3600.0,
        )
