"""`kill -USR1`: the task dump names where each task waits, through nested awaits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from bridge_agent.taskdump import await_chain, describe_tasks


async def _inner(event: asyncio.Event) -> None:
    await event.wait()


async def _outer(event: asyncio.Event) -> None:
    await _inner(event)


async def _ticks(event: asyncio.Event) -> AsyncIterator[int]:
    yield 1
    await event.wait()
    yield 2


async def _consumer(event: asyncio.Event) -> None:
    async for _ in _ticks(event):
        pass


async def test_the_dump_follows_nested_awaits_to_where_a_task_waits() -> None:
    event = asyncio.Event()
    waiting = asyncio.create_task(_outer(event), name="waiting-task")
    consuming = asyncio.create_task(_consumer(event), name="consuming-task")
    await asyncio.sleep(0.01)
    try:
        tasks = {t["task"]: t["awaiting"] for t in describe_tasks()}
        chain = tasks["waiting-task"]
        functions = [line.rsplit(" in ", 1)[1] for line in chain if " in " in line]
        # outermost first, down to the Event's own wait and the future it ends on
        assert functions[:3] == ["_outer", "_inner", "wait"]
        assert chain[-1] == "<FutureIter>"  # `await future` waits on its iterator
        assert all("test_taskdump.py" in line for line in chain[:2])
        # an async for ends on the generator's `asend`: the consumer's line is still named
        assert tasks["consuming-task"][0].endswith(" in _consumer")
        assert "consuming-task" in tasks and len(tasks) >= 3  # this test's own task too
    finally:
        event.set()
        await asyncio.gather(waiting, consuming)


def test_a_plain_awaitable_is_named_by_its_type() -> None:
    loop = asyncio.new_event_loop()
    try:
        assert await_chain(loop.create_future()) == ["<Future>"]
    finally:
        loop.close()
