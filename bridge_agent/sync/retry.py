"""Retry schedule: exponential backoff with full jitter that honours the server's Retry-After.

Full jitter (AWS Architecture Blog, "Exponential Backoff and Jitter") picks the delay uniformly in
`[0, min(cap, base * 2**attempt)]`: many agents that failed together do not retry in step. When the
server says how long to wait (`Retry-After` on 429/503), it knows better than our schedule: the
delay is then at least that long, plus a small jitter so a fleet does not return on the same second,
but never longer than `retry_after_cap`: a server that asks for hours (a misconfigured proxy, a
`Retry-After` meant for browsers) must not stop us for hours after it is back. Past the cap we
simply ask again, and a server still overloaded answers with another `Retry-After`: probing at
that pace costs it one request.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays for consecutive failures: `base` seconds doubling up to `cap`; a server's
    `Retry-After` is honoured up to `retry_after_cap`."""

    base: float = 0.5
    cap: float = 60.0
    retry_after_cap: float = 300.0

    def delay(
        self,
        attempt: int,
        *,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait before try number `attempt + 1` (`attempt` counts from 0)."""
        ceiling = min(self.cap, self.base * (2 ** min(attempt, 32)))
        jittered: float = rand() * ceiling
        if retry_after is not None and retry_after >= 0:
            # The server's word wins over our schedule, even past `cap` (sending earlier only
            # earns another 429), up to `retry_after_cap`. A tenth of jitter spreads a fleet out.
            wait = min(retry_after, self.retry_after_cap)
            return wait + rand() * min(1.0, wait / 10 + 0.05)
        return jittered


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or HTTP-date); None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if math.isnan(seconds) or seconds < 0:  # in the past, or nonsense
        return 0.0
    return min(seconds, 3600.0)  # a broken server must not park us for days
