"""The test suite's own rules: `until` waits for a condition, and a leaked task fails a test."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from bridge_agent.testing.waiting import until

pytest_plugins = ["pytester"]


async def test_until_returns_as_soon_as_a_plain_or_async_condition_holds() -> None:
    flag = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, flag.set)
    started = time.monotonic()
    await until(flag.is_set, 5)
    assert time.monotonic() - started < 1

    calls = 0

    async def third_time() -> bool:
        nonlocal calls
        calls += 1
        return calls == 3

    await until(third_time, 5, every=0.001)
    assert calls == 3


async def test_until_fails_after_its_bound_saying_what_it_waited_for() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"not reached within 0.1s: the moon"):
        await until(lambda: False, 0.1, what="the moon")
    assert 0.1 <= time.monotonic() - started < 1


async def test_until_checks_once_more_after_the_deadline() -> None:
    checks: list[float] = []

    def second_time() -> bool:
        checks.append(time.monotonic())
        return len(checks) == 2

    # The second check comes after the bound (the wait between checks is longer): it still counts.
    await until(second_time, 0.05, every=0.2)
    assert len(checks) == 2 and checks[1] - checks[0] >= 0.2


def test_a_test_that_leaves_a_task_running_fails(pytester: pytest.Pytester) -> None:
    conftest = Path(__file__).with_name("conftest.py").read_text(encoding="utf-8")
    pytester.makeconftest(conftest)
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(
        """
        import asyncio

        async def test_leaks():
            asyncio.create_task(asyncio.sleep(30), name="forgotten")

        async def test_cancels_without_awaiting():
            task = asyncio.create_task(asyncio.sleep(30))
            task.cancel()  # not awaited: it ends within a few turns of the loop, allowed

        async def test_awaits():
            await asyncio.create_task(asyncio.sleep(0))

        def test_sync():
            assert True
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(["*1 asyncio task(s) left running by the test: forgotten*"])
