"""The schedule (bridge_agent/scheduling.py): jobs only nudge, missed runs coalesce, work never
overlaps, cron expressions follow their time zone; and the schedules the stores get from it.

No test waits for wall-clock time to pass: a missed run is made by moving a job's next run time
into the past, and cron times are computed with the trigger's `get_next_fire_time`.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.events import EVENT_JOB_EXECUTED

from bridge_agent.errors import ConfigError
from bridge_agent.health import Health
from bridge_agent.metrics import Metrics
from bridge_agent.platforms.jsondir import JsonDir
from bridge_agent.scheduling import Scheduler, cron_trigger
from bridge_agent.sources import StoreContext
from bridge_agent.sources.reconcile import STREAM, Reconciler
from bridge_agent.store import StateStore
from bridge_agent.stores import StoreChecker
from bridge_agent.testing.waiting import until

HOUR = 3600.0


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def nudge(self) -> None:
        self.count += 1


def executions(scheduler: Scheduler) -> list[str]:
    """Job ids, one per execution the scheduler reports."""
    ran: list[str] = []
    scheduler._scheduler.add_listener(lambda e: ran.append(e.job_id), EVENT_JOB_EXECUTED)
    return ran


def fire_at(scheduler: Scheduler, job_id: str, when: datetime) -> None:
    """Move a job's next run time (into the past: runs it missed while the loop was busy)."""
    scheduler._scheduler.modify_job(job_id, next_run_time=when)


async def started() -> Scheduler:
    scheduler = Scheduler()
    scheduler.start()
    return scheduler


async def test_a_job_nudges_at_its_time_and_is_armed_for_the_next() -> None:
    scheduler = await started()
    try:
        counter = Counter()
        before = datetime.now(UTC)
        scheduler.every("poll:main", HOUR, counter.nudge, first=before - timedelta(days=3))
        await until(lambda: counter.count == 1, what="the first nudge")  # a past first: now
        after = scheduler.next_fire_time("poll:main")
        assert after is not None
        assert (
            before + timedelta(seconds=HOUR) <= after <= datetime.now(UTC) + timedelta(seconds=HOUR)
        )
        rules = scheduler.job_settings("poll:main")
        assert rules["coalesce"] is True and rules["max_instances"] == 1
        assert rules["misfire_grace_time"] == HOUR  # a coalesced run is never dropped

        scheduler.every("check:main", HOUR, counter.nudge)  # default: one interval from now
        first = scheduler.next_fire_time("check:main")
        assert first is not None and first >= before + timedelta(seconds=HOUR)
        assert counter.count == 1
    finally:
        await scheduler.shutdown()


async def test_missed_runs_are_coalesced_into_one_nudge() -> None:
    scheduler = await started()
    try:
        ran = executions(scheduler)
        counter = Counter()
        scheduler.every("reconcile:main", HOUR, counter.nudge)
        now = datetime.now(UTC)
        fire_at(scheduler, "reconcile:main", now - timedelta(hours=10))  # the machine slept
        job = scheduler._scheduler.get_job("reconcile:main")
        assert len(job._get_run_times(now)) == 11  # eleven run times were missed ...
        await until(lambda: ran == ["reconcile:main"], what="the coalesced run")
        assert counter.count == 1  # ... and they make one nudge, not a burst
        nxt = scheduler.next_fire_time("reconcile:main")
        assert nxt is not None and nxt > datetime.now(UTC)  # nothing more is due
        assert counter.count == 1 and ran == ["reconcile:main"]
    finally:
        await scheduler.shutdown()


class SlowCheck(JsonDir):
    """A store whose check takes until the test lets it go; it counts overlapping checks."""

    def __init__(self, root: Path) -> None:
        super().__init__("main", root)
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.running = self.most = self.checks = 0

    async def check(self) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        self.entered.set()
        try:
            await self.release.wait()
        finally:
            self.running -= 1
            self.checks += 1


async def test_nudges_during_the_work_fold_into_one_more_round_never_two_at_once(
    tmp_path: Path, state: StateStore
) -> None:
    platform = SlowCheck(tmp_path)
    checker = StoreChecker(platform, Health("store:main"), state, "main")
    scheduler = await started()
    worker = asyncio.create_task(checker.run())
    try:
        ran = executions(scheduler)
        scheduler.every("check:main", HOUR, checker.nudge, first=datetime.now(UTC))
        await asyncio.wait_for(platform.entered.wait(), 10)  # the first check is under way
        for n in range(2, 5):  # the job fires three more times while it runs
            fire_at(scheduler, "check:main", datetime.now(UTC))
            await until(lambda n=n: len(ran) == n, what=f"job run {n}")
        assert platform.running == 1 and platform.checks == 0
        platform.release.set()
        await until(lambda: platform.checks == 2, what="one more check")
        await until(lambda: platform.running == 0, what="the check finished")
        assert platform.most == 1  # never two checks at once
        assert not checker._wake.is_set()  # three nudges made one round, not three
        assert platform.checks == 2
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        await scheduler.shutdown()


@pytest.mark.parametrize(
    ("expression", "tz", "after", "expected"),
    [
        # 03:00 in Berlin: 02:00 UTC in winter (CET) ...
        ("0 3 * * *", "Europe/Berlin", datetime(2026, 1, 10, 12, tzinfo=UTC),
         datetime(2026, 1, 11, 2, tzinfo=UTC)),
        # ... and 01:00 UTC from the night clocks go forward (CEST, 29 March 2026)
        ("0 3 * * *", "Europe/Berlin", datetime(2026, 3, 28, 12, tzinfo=UTC),
         datetime(2026, 3, 29, 1, tzinfo=UTC)),
        # Mondays 04:30 in New York (EDT, UTC-4): Saturday 5 Sept 2026 -> Monday 7 Sept
        ("30 4 * * mon", "America/New_York", datetime(2026, 9, 5, 12, tzinfo=UTC),
         datetime(2026, 9, 7, 8, 30, tzinfo=UTC)),
        # the first of the month at midnight in Tokyo (UTC+9): the previous day, 15:00 UTC
        ("0 0 1 * *", "Asia/Tokyo", datetime(2026, 6, 15, tzinfo=UTC),
         datetime(2026, 6, 30, 15, tzinfo=UTC)),
        ("*/15 * * * *", "UTC", datetime(2026, 6, 15, 10, 7, tzinfo=UTC),
         datetime(2026, 6, 15, 10, 15, tzinfo=UTC)),
    ],
)  # fmt: skip
def test_a_cron_expression_fires_at_its_local_time(
    expression: str, tz: str, after: datetime, expected: datetime
) -> None:
    fire = cron_trigger(expression, tz).get_next_fire_time(None, after)
    assert fire == expected


def fire_times(expression: str, tz: str, after: datetime, count: int) -> list[datetime]:
    """The next `count` fire times, in UTC, as the scheduler finds them: each from the last."""
    trigger = cron_trigger(expression, tz)
    fires: list[datetime] = []
    previous: datetime | None = None
    now = after
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        assert fire is not None
        fires.append(fire.astimezone(UTC))
        previous = now = fire  # the job ran at its time; the next is found from there
    return fires


def utc(when: str) -> datetime:
    """`MM-DD HH:MM` in 2026, UTC."""
    return datetime.strptime(f"2026-{when}", "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


# 2026: Berlin springs forward on 29 March (02:00 CET -> 03:00 CEST, 01:00 UTC) and falls back on
# 25 October (03:00 CEST -> 02:00 CET, 01:00 UTC); New York on 8 March (02:00 EST -> 03:00 EDT,
# 07:00 UTC) and on 1 November (02:00 EDT -> 01:00 EST, 06:00 UTC). Times below are UTC.
@pytest.mark.parametrize(
    ("expression", "tz", "after", "expected"),
    [
        # 03:00 exists once on both days: one hour earlier in UTC from the spring change ...
        ("0 3 * * *", "Europe/Berlin", "03-27 12:00",
         ["03-28 02:00", "03-29 01:00", "03-30 01:00"]),
        # ... and one hour later from the autumn one (03:00 comes after the repeated hour)
        ("0 3 * * *", "Europe/Berlin", "10-23 12:00",
         ["10-24 01:00", "10-25 02:00", "10-26 02:00"]),
        ("0 3 * * *", "America/New_York", "03-06 12:00",
         ["03-07 08:00", "03-08 07:00", "03-09 07:00"]),
        ("0 3 * * *", "America/New_York", "10-30 12:00",
         ["10-31 07:00", "11-01 08:00", "11-02 08:00"]),
        # 02:30 does not exist on the spring day: the sweep runs once, an hour late (03:30 local,
        # as long after the change as 02:30 is after 02:00), and at 02:30 again the next day
        ("30 2 * * *", "Europe/Berlin", "03-27 12:00",
         ["03-28 01:30", "03-29 01:30", "03-30 00:30"]),
        ("30 2 * * *", "America/New_York", "03-06 12:00",
         ["03-07 07:30", "03-08 07:30", "03-09 06:30"]),
        # 02:30 happens twice on the autumn day in Berlin: the sweep runs at the first only
        # (02:30 CEST, 00:30 UTC), not again an hour later (02:30 CET, 01:30 UTC)
        ("30 2 * * *", "Europe/Berlin", "10-23 12:00",
         ["10-24 00:30", "10-25 00:30", "10-26 01:30"]),
        # in New York the repeated hour is 01:00-02:00: 02:30 happens once (EST) ...
        ("30 2 * * *", "America/New_York", "10-30 12:00",
         ["10-31 06:30", "11-01 07:30", "11-02 07:30"]),
        # ... and 01:30 twice: the sweep runs at the first (01:30 EDT, 05:30 UTC) only
        ("30 1 * * *", "America/New_York", "10-30 12:00",
         ["10-31 05:30", "11-01 05:30", "11-02 06:30"]),
        # started between the two 02:30s (at 02:15 CET, after the first): not run that night
        ("30 2 * * *", "Europe/Berlin", "10-25 01:15",
         ["10-26 01:30", "10-27 01:30"]),
        # an expression on every hour keeps real time: each half hour of the repeated hour runs
        ("*/30 * * * *", "America/New_York", "11-01 04:45",
         ["11-01 05:00", "11-01 05:30", "11-01 06:00", "11-01 06:30", "11-01 07:00"]),
        ("*/30 * * * *", "Europe/Berlin", "03-29 00:15",
         ["03-29 00:30", "03-29 01:00", "03-29 01:30"]),
    ],
)  # fmt: skip
def test_cron_fire_times_across_the_daylight_saving_changes(
    expression: str, tz: str, after: str, expected: list[str]
) -> None:
    assert fire_times(expression, tz, utc(after), len(expected)) == [utc(e) for e in expected]


async def test_a_cron_job_runs_once_on_the_night_a_time_repeats() -> None:
    """The scheduler's own step: after the run at the first 01:30, the next is the next day's."""
    scheduler = await started()
    try:
        scheduler.cron("verify:main", "30 1 * * *", Counter().nudge, tz="America/New_York")
        trigger = scheduler._scheduler.get_job("verify:main").trigger
        ran = trigger.get_next_fire_time(None, utc("11-01 05:00"))
        assert ran.astimezone(UTC) == utc("11-01 05:30")  # 01:30 EDT
        # As APScheduler asks after a run: from the run time, a moment after it.
        following = trigger.get_next_fire_time(ran, utc("11-01 05:30") + timedelta(seconds=1))
        assert following.astimezone(UTC) == utc("11-02 06:30")  # not 01:30 EST that night
    finally:
        await scheduler.shutdown()


@pytest.mark.parametrize(
    ("expression", "tz", "says"),
    [
        ("0 3 * *", "Europe/Berlin", "cron expression"),  # four fields
        ("61 3 * * *", "Europe/Berlin", "cron expression"),
        ("0 3 * * *", "Europe/Atlantis", "unknown time zone"),
    ],
)
def test_a_bad_cron_expression_or_zone_is_a_config_error(
    expression: str, tz: str, says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        cron_trigger(expression, tz)


async def test_a_cron_job_is_armed_at_the_next_local_time() -> None:
    scheduler = await started()
    try:
        counter = Counter()
        scheduler.cron("verify:main", "0 3 * * *", counter.nudge, tz="Europe/Berlin")
        now = datetime.now(UTC)
        expected = cron_trigger("0 3 * * *", "Europe/Berlin").get_next_fire_time(None, now)
        assert scheduler.next_fire_time("verify:main") == expected
        rules = scheduler.job_settings("verify:main")
        assert rules["coalesce"] is True and rules["max_instances"] == 1
        assert rules["misfire_grace_time"] == 3600
        assert rules["timezone"] == "Europe/Berlin"
        assert counter.count == 0
    finally:
        await scheduler.shutdown()


async def test_shutdown_stops_every_job_and_leaves_no_thread_or_timer() -> None:
    threads = threading.active_count()
    scheduler = await started()
    counter = Counter()
    scheduler.every("poll:main", HOUR, counter.nudge)
    scheduler.remove("poll:main")
    scheduler.remove("poll:main")  # removing what is gone is fine (a store stopped early)
    scheduler.every("poll:main", HOUR, counter.nudge)
    assert scheduler.job_ids() == ["poll:main"]
    await scheduler.shutdown()
    assert not scheduler.running
    assert scheduler._scheduler._timeout is None or scheduler._scheduler._timeout.cancelled()
    assert threading.active_count() == threads
    await scheduler.shutdown()  # idempotent
    scheduler.start()  # a new start has no job of the old one
    try:
        assert scheduler.job_ids() == []
    finally:
        await scheduler.shutdown()
    with pytest.raises(ValueError, match="positive"):
        scheduler.every("poll:main", 0, counter.nudge)


def test_start_needs_the_running_loop() -> None:
    with pytest.raises(RuntimeError):
        Scheduler().start()


# -- the reconciliation's schedule ----------------------------------------------------------


def _reconciler(state: StateStore, tmp_path: Path, now: float, **kw: Any) -> Reconciler:
    ctx = StoreContext(
        "main", JsonDir("main", tmp_path), state, lambda: None, Metrics(), Health("store:main")
    )
    return Reconciler(ctx, interval=6 * HOUR, clock=lambda: now, **kw)


async def test_the_first_reconciliation_is_one_interval_after_the_first_start(
    tmp_path: Path, state: StateStore
) -> None:
    start = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    reconciler = _reconciler(state, tmp_path, start.timestamp())
    assert await reconciler.first_due() == start + timedelta(hours=6)
    assert await state.cursor("main", STREAM) == "2026-11-23T10:00:00Z"  # persisted
    # a restart an hour later keeps the time: due at the same moment, not six hours later
    later = _reconciler(state, tmp_path, start.timestamp() + HOUR)
    assert await later.first_due() == start + timedelta(hours=6)


async def test_an_overdue_reconciliation_is_due_at_once(tmp_path: Path, state: StateStore) -> None:
    await state.set_cursor("main", STREAM, "2026-11-20T08:00:00Z")  # the agent was down
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    due = await _reconciler(state, tmp_path, now.timestamp()).first_due()
    assert due == datetime(2026, 11, 20, 14, 0, tzinfo=UTC)  # past: `every` makes it now
    scheduler = await started()
    try:
        counter = Counter()
        scheduler.every("reconcile:main", 6 * HOUR, counter.nudge, first=due)
        await until(lambda: counter.count == 1, what="the overdue reconciliation")
    finally:
        await scheduler.shutdown()


async def test_no_reconciliation_while_an_import_runs(
    tmp_path: Path, state: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Counting(Reconciler):
        passes = 0

        async def reconcile_once(self) -> dict[str, int]:
            type(self).passes += 1
            return {}

    looks: list[int] = []  # open runs seen at each look
    real = state.open_runs

    async def open_runs(store: str | None = None) -> list[Any]:
        runs = await real(store)
        looks.append(len(runs))
        return runs

    monkeypatch.setattr(state, "open_runs", open_runs)
    ctx = StoreContext(
        "main", JsonDir("main", tmp_path), state, lambda: None, Metrics(), Health("store:main")
    )
    reconciler = Counting(ctx, interval=6 * HOUR)
    run_id = await state.start_run("import", "main", {})
    worker = asyncio.create_task(reconciler.run())
    try:
        for n in (1, 2):  # the schedule says it is time, twice, but an import reads the catalog
            reconciler.nudge()
            await until(lambda n=n: looks == [1] * n, what=f"look {n} at the runs")
        assert Counting.passes == 0
        await state.finish_run(run_id)
        reconciler.nudge()  # the next look (every RUN_CHECK_INTERVAL, or a nudge) finds none
        await until(lambda: Counting.passes == 1, what="the reconciliation after the import")
        assert looks == [1, 1, 0]
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
