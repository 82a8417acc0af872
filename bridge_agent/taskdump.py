"""What every asyncio task of the daemon is waiting on, for an operator asking "why is it stuck".

`kill -USR1 <pid>` makes the running agent log one `tasks_dumped` event listing each task and
the chain of coroutines it is suspended in, innermost last (`file:line in function`). Nothing is
stopped or changed: the agent goes on as before. It is the first thing to look at when the
agent is alive (health answers) but a store's work does not move.

Why a walk of `cr_await` and not `Task.get_stack()`: for a suspended task, `get_stack()` gives
only the task's outermost coroutine frame (`guard`, say), not what that coroutine awaits; the
chain of awaited coroutines, generators and async generators is what says where it waits. An
awaitable the walk cannot see into (a Future, an `asend` of an async generator) ends the chain,
named by its type.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["describe_tasks"]

MAX_DEPTH = 64  # frames per task: deeper chains are cut (recursion is not how the agent waits)


def describe_tasks(loop: asyncio.AbstractEventLoop | None = None) -> list[dict[str, Any]]:
    """Each unfinished task of `loop` (the running loop by default): name and await chain."""
    tasks = asyncio.all_tasks(loop)
    out = [{"task": t.get_name(), "awaiting": await_chain(t.get_coro())} for t in tasks]
    return sorted(out, key=lambda t: str(t["task"]))


def await_chain(awaitable: Any) -> list[str]:
    """`file:line in function` for each coroutine, generator or async generator in the chain
    that starts at `awaitable`, outermost first; the last item names what it ends on."""
    chain: list[str] = []
    current = awaitable
    while current is not None and len(chain) < MAX_DEPTH:
        frame = _frame_of(current)
        if frame is None:
            chain.append(f"<{type(current).__name__}>")
            break
        code = frame.f_code
        chain.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        current = _awaiting(current)
    return chain


def _frame_of(obj: Any) -> Any:
    for attribute in ("cr_frame", "gi_frame", "ag_frame"):
        frame = getattr(obj, attribute, None)
        if frame is not None:
            return frame
    return None


def _awaiting(obj: Any) -> Any:
    for attribute in ("cr_await", "gi_yieldfrom", "ag_await"):
        inner = getattr(obj, attribute, None)
        if inner is not None:
            return inner
    return None
