"""Scheduled exports (bridge_agent/export/schedule.py): the job `export:<name>` fires at the
export's local times, a run goes temp file -> destination -> rotation -> mark, a failed delivery
moves no mark and says why, a reload adds and removes jobs, a paused store's exports wait, and
`bridge-agent export --now` and `status` use the same runs.

No test waits for the clock: fire times are computed with the job's own trigger, and runs are
nudged or called directly with the time that names their file.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge_agent import cli
from bridge_agent.agent import Agent
from bridge_agent.config import Config, load_config
from bridge_agent.config.exports import ExportSettings, FolderDestinationSettings
from bridge_agent.errors import DestinationError
from bridge_agent.export import mark_key
from bridge_agent.export.destinations import Delivered, FolderDestination
from bridge_agent.export.schedule import ScheduledExports, run_export, status_key
from bridge_agent.model import Change
from bridge_agent.scheduling import Scheduler
from bridge_agent.store import StateStore
from bridge_agent.testing.catalog import make_product
from bridge_agent.testing.waiting import until
from tests.conftest import Hub, make_config

STORE = "main"


def write_config(root: Path, *, extra: str = "", schedule: str = "0 3 * * *") -> Path:
    config = root / "agent.toml"
    config.write_text(
        f"""
[agent]
id = "export-agent"
state_dir = "state"
[hub]
url = "http://127.0.0.1:9"
token = "hub-token-for-export-tests"
[health]
listen = "127.0.0.1:9"
[[stores]]
id = "{STORE}"
platform = "jsondir"
url = "https://shop.example/"
catalog_dir = "catalog"

[[exports]]
name = "nightly"
store = "{STORE}"
format = "jsonl"
schedule = "{schedule}"
timezone = "Europe/Paris"
keep = 2
incremental = true
destination = {{ type = "folder", path = "{root / "out"}" }}
{extra}
""",
        encoding="utf-8",
    )
    return config


async def record(state: StateStore, changes: list[tuple[int, int | None]]) -> None:
    """(product number, revision) to record; revision None: deleted."""
    now = int(time.time() * 1000)
    await state.record(
        [
            Change(STORE, str(i), None if rev is None else make_product(i, revision=rev),
                   "poll", now)
            for i, rev in changes
        ]
    )  # fmt: skip


def jsonl_ids(path: Path) -> set[str]:
    return {json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines()}


def utc(when: str) -> datetime:
    """`MM-DD HH:MM` in 2026, UTC."""
    return datetime.strptime(f"2026-{when}", "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


class Spawner:
    """The agent's `spawn`: root tasks the test cancels at its end."""

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def __call__(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro, name=name)
        self.tasks[name] = task
        return task

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


@pytest.fixture
async def config(tmp_path: Path) -> Config:
    return load_config(write_config(tmp_path))


@pytest.fixture
async def state(config: Config) -> AsyncIterator[StateStore]:
    async with StateStore.open(config.agent.state_dir) as opened:
        yield opened


@pytest.fixture
async def scheduler() -> AsyncIterator[Scheduler]:
    clock = Scheduler()
    clock.start()
    yield clock
    await clock.shutdown()


# -- the schedule ----------------------------------------------------------------------------


# 2026 in Paris: spring forward on 29 March (02:00 CET -> 03:00 CEST, 01:00 UTC), fall back on
# 25 October (03:00 CEST -> 02:00 CET, 01:00 UTC). Times are UTC.
@pytest.mark.parametrize(
    ("schedule", "after", "expected"),
    [
        # 03:00 Paris: an hour earlier in UTC from the spring change, an hour later from autumn's
        ("0 3 * * *", "03-27 12:00", ["03-28 02:00", "03-29 01:00", "03-30 01:00"]),
        ("0 3 * * *", "10-23 12:00", ["10-24 01:00", "10-25 02:00", "10-26 02:00"]),
        # 02:30 does not exist on the spring night: once, an hour late (03:30 CEST)
        ("30 2 * * *", "03-27 12:00", ["03-28 01:30", "03-29 01:30", "03-30 00:30"]),
        # 02:30 happens twice on the autumn night: exported once, at the first
        ("30 2 * * *", "10-23 12:00", ["10-24 00:30", "10-25 00:30", "10-26 01:30"]),
    ],
)
async def test_the_export_job_fires_at_local_times_across_daylight_saving_changes(
    tmp_path: Path, scheduler: Scheduler, schedule: str, after: str, expected: list[str]
) -> None:
    config = load_config(write_config(tmp_path, schedule=schedule))
    spawner = Spawner()
    async with StateStore.open(config.agent.state_dir) as state:
        exports = ScheduledExports(state, scheduler, spawner)
        exports.start(config.exports, config.stores)
        try:
            assert scheduler.job_ids() == ["export:nightly"]
            assert set(spawner.tasks) == {"export:nightly"}
            rules = scheduler.job_settings("export:nightly")
            assert rules["timezone"] == "Europe/Paris"
            trigger = scheduler._scheduler.get_job("export:nightly").trigger
            fires: list[datetime] = []
            previous, now = None, utc(after)
            for _ in expected:
                fire = trigger.get_next_fire_time(previous, now)
                fires.append(fire.astimezone(UTC))
                previous, now = fire, fire + timedelta(seconds=1)
            assert fires == [utc(e) for e in expected]
        finally:
            await exports.shutdown()
            await spawner.close()
    assert scheduler.job_ids() == []


async def test_a_nudge_runs_the_export_in_its_task_and_status_shows_it(
    config: Config, state: StateStore, scheduler: Scheduler, tmp_path: Path
) -> None:
    await record(state, [(i, 0) for i in range(1, 6)])
    spawner = Spawner()
    exports = ScheduledExports(state, scheduler, spawner)
    exports.start(config.exports, config.stores)
    try:
        exports.nudge("nightly")  # what the cron job does at its time
        await until(lambda: state.meta(status_key("nightly")), what="the run's status")
    finally:
        await exports.shutdown()
        await spawner.close()
    status = json.loads(await state.meta(status_key("nightly")) or "{}")
    assert status["ok"] is True and status["products"] == 5 and status["error"] is None
    files = sorted((tmp_path / "out").iterdir())
    assert len(files) == 1 and files[0].name.startswith("nightly-")
    assert files[0].suffix == ".jsonl" and str(files[0]) == status["location"]
    assert jsonl_ids(files[0]) == {"1", "2", "3", "4", "5"}
    # next_run: the job's next time, as the scheduler had it after firing
    assert status["next_run"] is not None and status["next_run"] > time.time()


# -- one run ---------------------------------------------------------------------------------


async def test_runs_deliver_rotate_and_export_only_the_changes(
    config: Config, state: StateStore, tmp_path: Path
) -> None:
    export, store = config.exports[0], config.stores[0]
    out, temp = tmp_path / "out", Path(config.agent.state_dir) / "exports" / "tmp"
    await record(state, [(i, 0) for i in range(1, 11)])
    start = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)

    first = await run_export(state, export, store, now=start)
    assert first.ok and first.products == 10 and first.error is None
    assert first.location == str(out / "nightly-20261206T020000Z.jsonl")
    assert jsonl_ids(out / "nightly-20261206T020000Z.jsonl") == {str(i) for i in range(1, 11)}
    assert list(temp.iterdir()) == []  # the temporary file is gone
    assert [p.name for p in out.iterdir()] == ["nightly-20261206T020000Z.jsonl"]  # no .part
    assert await state.meta(mark_key("nightly")) is not None

    # Incremental: the second run holds exactly what changed (two edits, one deletion).
    await record(state, [(3, 1), (7, 1), (9, None)])
    second = await run_export(state, export, store, now=start + timedelta(days=1))
    assert second.ok and (second.products, second.deleted) == (2, 1)
    assert jsonl_ids(out / "nightly-20261207T020000Z.jsonl") == {"3", "7", "9"}

    # A third run with keep = 2: the oldest file goes.
    await record(state, [(4, 1)])
    third = await run_export(state, export, store, now=start + timedelta(days=2))
    assert third.ok and third.rotated == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "nightly-20261207T020000Z.jsonl",
        "nightly-20261208T020000Z.jsonl",
    ]
    assert jsonl_ids(out / "nightly-20261208T020000Z.jsonl") == {"4"}
    assert list(temp.iterdir()) == []

    events = [e for e in await state.events(20) if e.action == "export"]
    assert len(events) == 3 and all(e.level == "info" and e.store == STORE for e in events)
    assert "2 product(s)" in events[1].message and "1 deleted" in events[1].message
    assert str(out / "nightly-20261208T020000Z.jsonl") in events[0].message
    status = json.loads(await state.meta(status_key("nightly")) or "{}")
    assert status["ok"] is True and status["location"].endswith("nightly-20261208T020000Z.jsonl")


class Refusing:
    """A destination that gives up, as a real one does after its retries."""

    label = "sftp://shop@feeds.example:22/out"

    def __init__(self) -> None:
        self.delivered: list[str] = []

    async def deliver(self, local_file: Path, name: str) -> Delivered:
        self.delivered.append(local_file.name)  # the whole export was written before it
        raise DestinationError(
            f"{self.label}: uploading {name} failed after 4 attempt(s): connection refused",
            destination=self.label,
        )

    async def rotate(self, prefix: str, keep: int) -> list[str]:
        raise AssertionError("no rotation after a failed delivery")


async def test_a_failed_delivery_moves_no_mark_and_is_reported(
    config: Config, state: StateStore, tmp_path: Path
) -> None:
    export, store = config.exports[0], config.stores[0]
    await record(state, [(i, 0) for i in range(1, 6)])
    good = await run_export(state, export, store, now=datetime(2026, 12, 6, 2, tzinfo=UTC))
    assert good.ok
    mark = await state.meta(mark_key("nightly"))
    await record(state, [(2, 1)])

    refusing = Refusing()
    failed = await run_export(state, export, store, destination=refusing)
    assert not failed.ok and failed.location is None
    assert len(refusing.delivered) == 1  # the upload was tried, with a file written whole
    assert "connection refused" in (failed.error or "")
    assert await state.meta(mark_key("nightly")) == mark  # the next run sends product 2 again
    assert list((Path(config.agent.state_dir) / "exports" / "tmp").iterdir()) == []
    status = json.loads(await state.meta(status_key("nightly")) or "{}")
    assert status["ok"] is False and "connection refused" in status["error"]
    [event] = [e for e in await state.events(5, levels=["error"]) if e.action == "export"]
    assert "export nightly failed" in event.message and "connection refused" in event.message

    # The next run that gets through holds the change the failed one could not deliver.
    again = await run_export(state, export, store, now=datetime(2026, 12, 7, 2, tzinfo=UTC))
    assert again.ok and again.products == 1
    assert jsonl_ids(tmp_path / "out" / "nightly-20261207T020000Z.jsonl") == {"2"}


async def test_an_unwritable_folder_fails_the_run_and_keeps_the_mark(
    config: Config, state: StateStore, tmp_path: Path
) -> None:
    export, store = config.exports[0], config.stores[0]
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the folder should be", encoding="utf-8")
    destination = FolderDestination(FolderDestinationSettings(blocked / "out", attempts=1))
    await record(state, [(1, 0)])
    outcome = await run_export(state, export, store, destination=destination)
    assert not outcome.ok and str(blocked) in (outcome.error or "")
    assert await state.meta(mark_key("nightly")) is None


async def test_a_paused_store_s_export_is_skipped_with_an_event(
    config: Config, state: StateStore, tmp_path: Path
) -> None:
    export, store = config.exports[0], config.stores[0]
    await record(state, [(1, 0)])
    await state.pause_store(STORE)
    outcome = await run_export(state, export, store)
    assert not outcome.ok and outcome.paused
    assert not (tmp_path / "out").exists()
    assert await state.meta(mark_key("nightly")) is None
    [event] = [e for e in await state.events(5) if e.action == "export"]
    assert event.level == "warning" and "paused" in event.message


# -- reload ----------------------------------------------------------------------------------


def _export(name: str, schedule: str, folder: Path) -> ExportSettings:
    return ExportSettings(
        name=name,
        store=STORE,
        format="csv",
        destination=FolderDestinationSettings(folder),
        schedule=schedule,
        timezone="UTC",
    )


async def test_a_reload_adds_removes_and_changes_export_jobs(
    config: Config, state: StateStore, scheduler: Scheduler, tmp_path: Path
) -> None:
    spawner = Spawner()
    exports = ScheduledExports(state, scheduler, spawner)
    a, b = _export("a", "0 1 * * *", tmp_path), _export("b", "0 2 * * *", tmp_path)
    exports.start([a], config.stores)
    try:
        assert scheduler.job_ids() == ["export:a"]
        task_a = spawner.tasks["export:a"]

        await exports.apply([a, b], config.stores)  # added
        assert scheduler.job_ids() == ["export:a", "export:b"]
        assert spawner.tasks["export:a"] is task_a  # unchanged: untouched

        await exports.apply([b], config.stores)  # removed
        assert scheduler.job_ids() == ["export:b"] and task_a.cancelled()
        assert exports.names() == ["b"]

        changed = _export("b", "0 5 * * *", tmp_path)
        await exports.apply([changed], config.stores)  # changed: a new job and task
        assert "hour='5'" in scheduler.job_settings("export:b")["trigger"]

        off = _export("b", "off", tmp_path)
        await exports.apply([off], config.stores)  # configured, never fired
        assert scheduler.job_ids() == [] and exports.names() == ["b"]
    finally:
        await exports.shutdown()
        await spawner.close()
    assert scheduler.job_ids() == []


async def test_the_agent_schedules_its_exports_and_follows_a_reload(
    tmp_path: Path, hub: Hub
) -> None:
    first = replace(make_config(tmp_path, hub.url), exports=(_export("a", "0 1 * * *", tmp_path),))
    second = replace(first, exports=(_export("b", "0 2 * * *", tmp_path),))
    agent = Agent(first, load=lambda _path: second)
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    try:
        await until(ready.is_set, what="the agent started")
        scheduler = agent._scheduler

        def exports() -> list[str]:
            return [j for j in scheduler.job_ids() if j.startswith("export:")]

        def tasks() -> set[str]:
            return {t.get_name() for t in asyncio.all_tasks() if not t.done()}

        assert exports() == ["export:a"] and "export:a" in tasks()
        agent.reload()
        await until(lambda: exports() == ["export:b"], what="the reloaded exports")
        await until(lambda: "export:b" in tasks() and "export:a" not in tasks())
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)
    assert "export:b" not in {t.get_name() for t in asyncio.all_tasks() if not t.done()}


# -- the command line ------------------------------------------------------------------------


def _main(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


async def test_export_now_and_status_show_the_configured_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path)
    async with StateStore.open(tmp_path / "state") as state:
        await record(state, [(i, 0) for i in range(1, 4)])
    base = ["--config", str(path)]

    code = await asyncio.to_thread(_main, [*base, "export", "--now", "--name", "nightly"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "export nightly: 3 product(s)" in err
    [file] = list((tmp_path / "out").iterdir())
    assert jsonl_ids(file) == {"1", "2", "3"}

    code = await asyncio.to_thread(_main, [*base, "status", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    shown = doc["exports"]["nightly"]
    assert shown["last"]["ok"] is True and shown["last"]["location"] == str(file)
    assert shown["destination"] == str(tmp_path / "out") and shown["timezone"] == "Europe/Paris"
    assert shown["next_run"] > time.time()

    code = await asyncio.to_thread(_main, [*base, "status"])
    text = capsys.readouterr().out
    assert code == 0
    [line] = [n for n in text.splitlines() if n.startswith("nightly ")]
    assert "ok " in line and "3 product(s)" in line and str(file) in line and "next " in line

    # --now takes the configured export only; a name not configured is a usage error.
    assert await asyncio.to_thread(_main, [*base, "export", "--now", "--name", "nope"]) == 2
    assert "no [[exports]] entry 'nope'" in capsys.readouterr().err
    now_with_format = [*base, "export", "--now", "--name", "nightly", "--format", "csv"]
    assert await asyncio.to_thread(_main, now_with_format) == 2
    assert "--format" in capsys.readouterr().err
    assert await asyncio.to_thread(_main, [*base, "export", "--store", STORE]) == 2
    assert "--format, -o/--output required" in capsys.readouterr().err
