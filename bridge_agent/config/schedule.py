"""Reading a cron schedule and the time zone it is read in: one rule for every scheduled thing.

A store's verification sweep (`verify_schedule`, `verify_timezone`) and a scheduled export
(`[[exports]] schedule`, `timezone`) are both a five-field crontab expression read in an IANA
time zone, or `"off"`. Checking them here, with APScheduler's own parser, means `validate`
refuses what the scheduler (`scheduling.cron_trigger`) would later refuse, with the same words
for both keys. Weekdays must be names: crontab counts them from Sunday = 0, APScheduler from
Monday = 0, so a number would silently run a day late.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from bridge_agent.config.reader import Table

__all__ = ["OFF", "read_schedule"]

OFF = "off"


def read_schedule(
    table: Table, key: str, zone_key: str, schedule: str, timezone: str
) -> tuple[str, str]:
    """`key` (five-field crontab, or "off") read in `zone_key` (IANA); the defaults when absent.

    Problems are recorded on `table`; the defaults come back for a wrong value (the load fails
    anyway). A required schedule is the caller's to check (`key in table.data`).
    """
    given_zone = table.string(zone_key, timezone)
    zone = ZoneInfo("UTC")
    if _is_text(table, zone_key):  # else absent, or its type already reported
        try:
            zone = ZoneInfo(given_zone)
            timezone = given_zone
        except (ZoneInfoNotFoundError, ValueError):
            table.problem(
                zone_key, f"unknown time zone '{given_zone}' (an IANA name such as Europe/Paris)"
            )
    given = table.string(key, schedule)
    if not _is_text(table, key):
        pass  # absent: the default; of the wrong type: already reported
    elif (schedule := " ".join(given.split())).lower() == OFF:
        schedule = OFF
    elif len(fields := schedule.split()) == 5 and any(c.isdigit() for c in fields[4]):
        table.problem(
            key,
            f"'{schedule}': write the weekday as names (sun, mon-fri), not numbers: "
            "crontab and the scheduler number weekdays differently",
        )
    else:
        try:
            CronTrigger.from_crontab(schedule, timezone=zone)
        except (ValueError, TypeError) as exc:
            table.problem(
                key,
                f"'{schedule}' is not a crontab expression (minute hour day month weekday, "
                f'e.g. "0 3 * * *"), or "off": {exc}',
            )
    return schedule, timezone


def _is_text(table: Table, key: str) -> bool:
    return isinstance(table.data.get(key), str)
