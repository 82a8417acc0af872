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
  answer arrives (its `throttleStatus` then says the truth). Waiters are served in order.
- `throttled_wait(requested, status)` is the wait after a `THROTTLED` answer, should one come
  anyway (another app of the same shop, Shopify lowering limits): `(requested - available) /
  restoreRate`.

Before the first answer nothing is known and nothing is waited for; afterwards a request never
goes out before the bucket, as last reported and restored since, holds its cost. A report resets
the level less the requests still unanswered, even if Shopify charged them before it reported
(then they count twice: the model errs on the side of waiting).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["CostBucket", "ThrottleStatus"]

MIN_WAIT = 0.05  # seconds: below this a wait is not worth a timer
MAX_WAIT = 60.0  # a wait never exceeds this (a bucket reporting nonsense must not stall us)


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
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self.status: ThrottleStatus | None = None
        self._level = 0.0  # points at `_at`, reservations taken
        self._at = 0.0
        self.reserved = 0.0  # points of requests sent and not yet answered
        self.waited = 0.0  # seconds spent waiting for points, in total (for tests and stats)
        self._turn = asyncio.Lock()  # one waiter at a time: the order requests asked in

    def __repr__(self) -> str:
        level = self.level()
        shown = "unknown" if level is None else f"{level:.0f}"
        return f"CostBucket(level={shown}, reserved={self.reserved:.0f})"

    def observe(self, status: ThrottleStatus) -> None:
        """An answer reported the bucket: the model starts again from it, now, less what the
        requests still unanswered reserved (they may not be in the report yet)."""
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

    def wait_for(self, cost: float) -> float:
        """Seconds until the modelled bucket holds `cost` (0 when it does, or is unknown)."""
        status = self.status
        level = self.level()
        if status is None or level is None:
            return 0.0
        # A cost above the bucket's size could never be served: wait for a full bucket instead.
        need = min(cost, status.maximum) - level
        if need <= 0:
            return 0.0
        return min(MAX_WAIT, need / status.restore_rate)

    async def acquire(self, cost: float) -> None:
        """Wait until the bucket holds `cost`, then reserve it (release it with `release`)."""
        async with self._turn:
            while True:
                wait = self.wait_for(cost)
                if wait <= 0:
                    break
                # Any shortfall is waited for, at least MIN_WAIT: a request sent a few points
                # short is answered THROTTLED (the store checks available >= requested).
                wait = max(wait, MIN_WAIT)
                self.waited += wait
                await self._sleep(wait)
            self.reserved += cost
            if self.level() is not None:
                self._level -= cost

    def release(self, cost: float) -> None:
        """The request that reserved `cost` was answered (its report, observed next, includes
        it) or failed (its points stay spent in the model: the cautious side)."""
        self.reserved = max(0.0, self.reserved - cost)

    def throttled_wait(self, requested: float, status: ThrottleStatus | None) -> float:
        """How long to wait after a THROTTLED answer that asked for `requested` points."""
        if status is None:
            return 1.0  # nothing said: a short pause, then the model knows more
        need = min(requested, status.maximum) - status.available
        return min(MAX_WAIT, max(MIN_WAIT, need / status.restore_rate))
