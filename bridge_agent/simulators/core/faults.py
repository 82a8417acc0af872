"""What goes wrong between a client and a simulated store: latency, failures, slow answers.

The settings are the same for every platform; how a failure *looks* is not (WordPress answers a
fatal error in JSON and its host answers 503 in HTML, Shopify answers JSON errors), so `draw`
only decides and waits, and the platform renders the status it returns. Faults apply to the
platform's API only, never to the control API or to webhook deliveries.

Determinism: the draw takes from the simulator's RNG only for the faults that are on, so turning
one on mid-run does not shift the sequence of the others, and one seed gives one sequence for
one request order.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class Faults:
    """What goes wrong, per request to the platform API.

    - `latency_ms` (+/- `jitter` as a fraction) before every answer;
    - `fail_rate`: the fraction of requests answered by one of `fail_statuses` instead (a 429 or
      503 carries `Retry-After: retry_after`);
    - `slow_rate` of requests take `slow_ms` more (client timeouts);
    - `fail_next`: exact statuses for the next requests, in order (deterministic tests);
    - `refuse_methods`: requests with these methods are answered `refuse_status` (403, 406 and
      501 are what ModSecurity, hosts' WAFs and security plugins answer to PUT, POST or DELETE)
      by the host in front of the store, which never sees them;
    - `drop_reply_after_write`: the next N writes (POST, PUT, PATCH, DELETE) that succeed are
      applied, then the connection is closed without an answer (a proxy timeout or a reset
      after the store committed: the client cannot know whether the write happened);
    - `write_reply_delay_ms`: a write (POST, PUT, PATCH, DELETE) that succeeded is answered this
      much later (the store committed; a slow hook or proxy holds the answer): a client killed
      meanwhile never learns the outcome;
    - `batch_item_delay_ms`: a batch endpoint applies its elements one by one, this long apart
      (WordPress saving products in turn), so a client can die between two products of a batch.
    """

    latency_ms: float = 0.0
    jitter: float = 0.1
    fail_rate: float = 0.0
    fail_statuses: tuple[int, ...] = (500, 503, 429)
    retry_after: int = 1
    slow_rate: float = 0.0
    slow_ms: float = 2000.0
    fail_next: tuple[int, ...] = ()
    refuse_methods: tuple[str, ...] = ()
    refuse_status: int = 403
    drop_reply_after_write: int = 0
    write_reply_delay_ms: float = 0.0
    batch_item_delay_ms: float = 0.0

    def update(self, changes: Mapping[str, Any]) -> None:
        """Set the given fields, checking types; raises ValueError naming the bad field."""
        known = {f.name: f for f in fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(known)}")
            if name in ("fail_statuses", "fail_next"):
                if not isinstance(value, list | tuple) or not all(
                    isinstance(v, int) and 400 <= v <= 599 for v in value
                ):
                    raise ValueError(f"{name} must be a list of HTTP error statuses")
                setattr(self, name, tuple(value))
            elif name == "refuse_methods":
                if not isinstance(value, list | tuple) or not all(
                    isinstance(v, str) and v.upper() in _METHODS for v in value
                ):
                    raise ValueError(f"refuse_methods must be a list of {', '.join(_METHODS)}")
                self.refuse_methods = tuple(v.upper() for v in value)
            elif name == "refuse_status":
                if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
                    raise ValueError("refuse_status must be an HTTP error status")
                self.refuse_status = value
            elif name == "drop_reply_after_write":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError("drop_reply_after_write must be a non-negative integer")
                self.drop_reply_after_write = value
            elif name == "retry_after":
                if not isinstance(value, int) or value < 0:
                    raise ValueError("retry_after must be a non-negative integer")
                self.retry_after = value
            else:
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError(f"{name} must be a non-negative number")
                if name.endswith("_rate") and value > 1:
                    raise ValueError(f"{name} is a fraction between 0 and 1")
                setattr(self, name, float(value))

    def doc(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


async def draw(faults: Faults, rng: random.Random) -> int | None:
    """Apply the faults to one request: wait its latency, then the status to fail it with.

    None means answer normally. `fail_next` is consumed first, then `fail_rate` draws.
    """
    f = faults
    delay = f.latency_ms * (1 + rng.uniform(-f.jitter, f.jitter)) if f.latency_ms else 0.0
    if f.slow_rate and rng.random() < f.slow_rate:
        delay += f.slow_ms
    if delay > 0:
        await asyncio.sleep(delay / 1000)
    if f.fail_next:
        status, f.fail_next = f.fail_next[0], f.fail_next[1:]
        return status
    if f.fail_rate and f.fail_statuses and rng.random() < f.fail_rate:
        return rng.choice(f.fail_statuses)
    return None


def refused(faults: Faults, method: str) -> int | None:
    """The status a host in front of the store answers this `method` with, or None."""
    return faults.refuse_status if method.upper() in faults.refuse_methods else None


def drop_reply(faults: Faults, method: str, status: int) -> bool:
    """Whether the answer to this write (already applied) is lost: consumes one drop."""
    if faults.drop_reply_after_write <= 0 or method.upper() not in WRITE_METHODS:
        return False
    if not 200 <= status < 300:
        return False  # only a write that committed; a refused one is answered as usual
    faults.drop_reply_after_write -= 1
    return True


def reply_delay(faults: Faults, method: str, status: int) -> bool:
    """Whether the answer to this write (already applied) is held `write_reply_delay_ms`."""
    return (
        faults.write_reply_delay_ms > 0 and method.upper() in WRITE_METHODS and 200 <= status < 300
    )
