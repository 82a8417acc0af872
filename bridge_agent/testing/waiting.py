"""`until`: the one way a test waits for something to happen.

A test that sleeps a fixed time before looking is either slow (the sleep is long enough for the
slowest machine) or flaky (it is not); a test that waits without a bound hangs until the global
timeout, which says nothing about what did not happen. So a test waits for a *condition*, checked
often, with a bound, and when the bound passes it fails saying what it was waiting for.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

Condition = Callable[[], bool | Awaitable[bool]]


async def until(
    condition: Condition, limit: float = 10.0, *, what: str = "", every: float = 0.02
) -> None:
    """Return as soon as `condition()` is true; fail after `limit` seconds naming `what`.

    `condition` may be a plain function or a coroutine function (its result is awaited). It is
    checked at least once, and once more after the deadline, so a slow machine that reaches the
    condition just as the bound passes does not fail.
    """
    deadline = time.monotonic() + limit
    while True:
        late = time.monotonic() >= deadline
        if await _holds(condition):
            return
        if late:
            name = what or getattr(condition, "__qualname__", repr(condition))
            raise AssertionError(f"not reached within {limit:g}s: {name}")
        await asyncio.sleep(every)


async def _holds(condition: Condition) -> bool:
    result = condition()
    if inspect.isawaitable(result):
        result = await result
    return bool(result)
