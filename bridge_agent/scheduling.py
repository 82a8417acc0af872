"""The agent's clock: APScheduler 3 jobs that only nudge components the agent owns.

Why a job only nudges. A job runs inside the scheduler's wake-up, on the event loop: the executor
calls it directly (APScheduler's `DebugExecutor`: no thread, no task), so it must return at once.
The work it stands for (a poll, a reconciliation, a store check, later a verification sweep) runs
in the component's own root task, which the agent supervises, cancels at a reload and restarts. A
nudge sets that component's event; nudges that come while the work runs fold into one more round,
so the work never runs twice at once and never queues up, however late the loop was.

The rules of every job, and why:
- `coalesce=True`: run times missed while the loop was blocked or the machine slept become one run,
  not a burst.
- `max_instances=1`: a job never overlaps itself (with direct execution it cannot, and the rule
  stays true if the executor ever changes).
- misfire grace: an interval job's grace is its interval, so its coalesced run always happens (the
  latest missed time is always less than one interval ago); a cron job's grace is given per job
  (an hour by default): a sweep missed by more waits for its next time instead of running at an
  hour nobody chose.
- times are UTC inside; a cron job names its time zone, so a sweep "at 03:00 shop time" follows the
  shop's daylight saving changes. On those nights (tested in tests/test_scheduling.py): a time the
  spring change skips (02:30 in Berlin or New York) runs once, an hour late (03:30, APScheduler's
  way, as long after the change as the skipped time was after it); a time the autumn change
  repeats (02:30 in Berlin, 01:30 in New York) runs at its first occurrence only, where APScheduler
  alone would run it again an hour later, a second sweep nobody asked for (`_OnceCronTrigger`).
  An expression on every hour (`*/30 * * * *`) keeps real time and runs in both passes (Vixie
  cron's rules).

`AsyncIOScheduler` binds the running loop at `start()` (so the agent starts it inside `run()`), and
shuts down in a callback of that loop: `shutdown()` waits for that callback, after which no timer
of the scheduler is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
from apscheduler.executors.debug import DebugExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bridge_agent.errors import ConfigError

log = structlog.get_logger("bridge_agent.scheduling")

Nudge = Callable[[], None]

CRON_GRACE = 3600  # whole seconds (APScheduler's rule) a cron job may be late and still run


def zone(tz: str | tzinfo) -> tzinfo:
    """A time zone from its IANA name (or as given); ConfigError for an unknown name."""
    if not isinstance(tz, str):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        problem = f"unknown time zone {tz!r} (an IANA name such as Europe/Berlin)"
        raise ConfigError([problem]) from exc


class _OnceCronTrigger(CronTrigger):  # type: ignore[misc]  # APScheduler 3 has no types
    """A CronTrigger that runs a wall-clock time the autumn change repeats once, at its first
    occurrence, unless its hour field is `*` (then it keeps real time, as cron does).

    Decided from the fire time alone (not from the previous run), so an agent restarted between
    the two occurrences does not run the second one either.
    """

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        fire: datetime | None = super().get_next_fire_time(previous_fire_time, now)
        if str(self.fields[self.FIELD_NAMES.index("hour")]) == "*":
            return fire
        while fire is not None and _second_pass(fire, self.timezone):
            # Past it in UTC: wall-clock arithmetic on a local time ignores `fold`.
            fire = super().get_next_fire_time(fire, fire.astimezone(UTC) + _TICK)
        return fire


_TICK = timedelta(microseconds=1)


def _second_pass(when: datetime, where: tzinfo) -> bool:
    """Whether `when` is the second occurrence of its wall-clock time in `where` (fall-back)."""
    local = when.astimezone(where)
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def cron_trigger(expression: str, tz: str | tzinfo) -> CronTrigger:
    """A five-field crontab expression (`minute hour day month weekday`) read in a time zone.

    ConfigError says what is wrong with it: the expression will come from a store's settings.
    """
    where = zone(tz)
    try:
        return _OnceCronTrigger.from_crontab(expression, timezone=where)
    except ValueError as exc:
        raise ConfigError([f"cron expression {expression!r}: {exc}"]) from exc


def _nudge(nudge: Nudge) -> None:
    """What every job runs: the nudge, nothing else (module level, so a job can name it)."""
    nudge()


class Scheduler:
    """The agent's one scheduler. `start()` inside the running loop; `await shutdown()` at stop."""

    def __init__(self) -> None:
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            executors={"default": DebugExecutor()},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        self._scheduler.add_listener(
            self._on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        """Start on the running event loop (APScheduler 3 binds the loop here)."""
        asyncio.get_running_loop()  # fail here, clearly, rather than in a later timer
        self._scheduler.start()

    async def shutdown(self) -> None:
        """Stop every job and the scheduler's timer; idempotent."""
        if not self._scheduler.running:
            return
        self._scheduler.remove_all_jobs()  # a later start() must not revive them
        self._scheduler.shutdown(wait=False)
        # AsyncIOScheduler shuts down in a callback it queued on the loop; a callback queued now
        # runs after it (the loop runs callbacks in order), so awaiting it means "shut down".
        done = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(done.set_result, None)
        await done

    def every(
        self, job_id: str, seconds: float, nudge: Nudge, *, first: datetime | None = None
    ) -> None:
        """Nudge every `seconds`, first at `first` (a past time means now; default: one interval
        from now). Replaces a job of the same id."""
        if seconds <= 0:
            raise ValueError(f"job {job_id!r}: interval must be positive, not {seconds}")
        now = datetime.now(UTC)
        start = now + timedelta(seconds=seconds) if first is None else max(first, now)
        self._scheduler.add_job(
            _nudge,
            IntervalTrigger(seconds=seconds, start_date=start, timezone=UTC),
            args=(nudge,),
            id=job_id,
            name=job_id,
            replace_existing=True,
            next_run_time=start,  # the trigger alone would skip `start` once it is past
            misfire_grace_time=max(math.ceil(seconds), 1),
        )

    def cron(
        self,
        job_id: str,
        expression: str,
        nudge: Nudge,
        *,
        tz: str | tzinfo,
        grace: int = CRON_GRACE,
    ) -> None:
        """Nudge at the times of a crontab expression in time zone `tz`. Replaces a job of the
        same id. ConfigError for a bad expression or zone."""
        self._scheduler.add_job(
            _nudge,
            cron_trigger(expression, tz),
            args=(nudge,),
            id=job_id,
            name=job_id,
            replace_existing=True,
            misfire_grace_time=grace,
        )

    def remove(self, job_id: str) -> None:
        """Remove a job; one that is not there is fine (a store stopped before it was armed)."""
        with contextlib.suppress(JobLookupError):
            self._scheduler.remove_job(job_id)

    def job_ids(self) -> list[str]:
        return sorted(job.id for job in self._scheduler.get_jobs())

    def next_fire_time(self, job_id: str) -> datetime | None:
        """When the job nudges next (None: no such job, or not scheduled yet)."""
        job = self._scheduler.get_job(job_id)
        when = getattr(job, "next_run_time", None)
        return when if isinstance(when, datetime) else None

    def job_settings(self, job_id: str) -> dict[str, Any]:
        """The rules a job runs under (for `status` and tests)."""
        job = self._scheduler.get_job(job_id)
        if job is None:
            raise KeyError(job_id)
        return {
            "coalesce": job.coalesce,
            "max_instances": job.max_instances,
            "misfire_grace_time": job.misfire_grace_time,
            "trigger": str(job.trigger),
            "timezone": str(job.trigger.timezone),
        }

    def _on_event(self, event: Any) -> None:
        if event.code == EVENT_JOB_MISSED:
            log.warning("job_missed", job=event.job_id, scheduled=str(event.scheduled_run_time))
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            log.warning("job_skipped", job=event.job_id, reason="still running")
        else:  # a nudge raised: a bug in the component
            log.error("job_failed", job=event.job_id, error=repr(event.exception))
