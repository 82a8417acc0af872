"""Rules of runs with the jsondir adapter (fast): schedule, pause, filters, merging, verification.

- a store's `verify_schedule` becomes a cron job `verify:<store>` in its time zone, and none with
  `"off"`; its nudge queues one verification run, never a second while one is open;
- a paused store's tasks and jobs stop and come back at resume;
- a product recorded from a webhook or hook is unverified until a run reads it again;
- test mode on a first start: the import and the repair after it keep to the filters;
- new filters while a run is open: a warning, and the run keeps its frozen filters (rule 07);
- a change recorded while a refresh is open merges with it: the refresh ships it no second time
  (rule 04).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

from bridge_agent.agent import Agent
from bridge_agent.config import Config
from bridge_agent.config.settings import StoreFilters
from bridge_agent.model import Change
from bridge_agent.sources.importer import freeze
from bridge_agent.store import StateStore, now_ms
from bridge_agent.testing.catalog import make_product, write_product
from bridge_agent.testing.waiting import until
from tests.conftest import Hub, make_config


def config_with(tmp_path: Path, hub: Hub, **store: object) -> Config:
    tmp_path.mkdir(parents=True, exist_ok=True)
    config: Config = make_config(tmp_path, hub.url)
    for i in range(30):
        write_product(tmp_path / "catalog", make_product(i))
    return dataclasses.replace(config, stores=(dataclasses.replace(config.stores[0], **store),))


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Agent]:
    agent = Agent(config)
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)


async def runs_of(state_dir: Path, kind: str) -> int:
    async with StateStore.open(state_dir, read_only=True) as state:
        return sum(1 for r in await state.runs(limit=100) if r.kind == kind)


async def test_the_verify_schedule_is_a_cron_job_in_the_store_time_zone(
    tmp_path: Path, hub: Hub
) -> None:
    config = config_with(
        tmp_path, hub, verify_schedule="30 2 * * *", verify_timezone="Europe/Berlin"
    )
    async with running(config) as agent:
        settings = agent._scheduler.job_settings("verify:main")
        assert settings["timezone"] == "Europe/Berlin"
        assert "hour='2'" in settings["trigger"] and "minute='30'" in settings["trigger"]
        when = agent._scheduler.next_fire_time("verify:main")
        assert when is not None and (when.hour, when.minute) == (2, 30)
    off = config_with(tmp_path / "off", hub, verify_schedule="off")
    async with running(off) as agent:
        assert "verify:main" not in agent._scheduler.job_ids()


async def test_a_scheduled_sweep_queues_one_verification_run_never_two(
    tmp_path: Path, hub: Hub
) -> None:
    config = config_with(tmp_path, hub)
    state_dir = config.agent.state_dir
    async with running(config) as agent:

        async def imported() -> bool:
            async with StateStore.open(state_dir, read_only=True) as state:
                run = await state.last_run("main", "import")
                return run is not None and run.state == "done"

        await until(imported, 30, what="the import")
        importer = agent._stores["main"].importer
        assert importer is not None
        importer.verification_due()  # what the cron job does

        async def verified() -> bool:
            async with StateStore.open(state_dir, read_only=True) as state:
                run = await state.last_run("main", "verify")
                return run is not None and run.state == "done"

        await until(verified, 30, what="the scheduled verification")
        async with StateStore.open(state_dir, read_only=True) as state:
            run = await state.last_run("main", "verify")
            assert run is not None and run.params == {"scheduled": True}
            assert (run.report or {})["unchanged"] == 30
            assert (await state.verification("main")).unverified == 0
        # An open verification (queued by an operator, paused) is never doubled by the schedule.
        async with StateStore.open(state_dir) as state:
            await state.pause_store("main")
            await state.start_run("verify", "main", freeze(config.stores[0]))
        assert await importer.start_verification() is None
        assert await runs_of(state_dir, "verify") == 2


async def test_a_paused_store_stops_its_jobs_and_resume_brings_them_back(
    tmp_path: Path, hub: Hub
) -> None:
    config = config_with(tmp_path, hub)
    async with running(config) as agent:
        assert "poll:main" in agent._scheduler.job_ids()
        async with StateStore.open(config.agent.state_dir) as state:
            assert await state.pause_store("main") is True
            assert await state.pause_store("main") is False  # already paused

        async def jobs_gone() -> bool:
            return not [j for j in agent._scheduler.job_ids() if j.endswith(":main")]

        await until(jobs_gone, 10, what="the paused store's jobs to stop")
        assert not agent._stores["main"].tasks
        async with StateStore.open(config.agent.state_dir) as state:
            assert await state.resume_store("main") is True

        async def jobs_back() -> bool:
            return {"poll:main", "verify:main"} <= set(agent._scheduler.job_ids())

        await until(jobs_back, 10, what="the resumed store's jobs")
        assert agent._stores["main"].tasks


async def test_a_product_from_a_hint_is_unverified_until_a_run_reads_it(
    tmp_path: Path,
) -> None:
    async with StateStore.open(tmp_path / "state") as state:
        product = make_product(1)
        await state.record([Change("main", product.id, product, "webhook", now_ms())])
        assert (await state.verification("main")).unverified == 1
        run = await state.start_run("verify", "main", {})
        await state.record_page([], run_id=run, checkpoint={}, done=1, verified=[product.id])
        assert (await state.verification("main")).unverified == 0
        changed = make_product(1, revision=1)
        await state.record([Change("main", changed.id, changed, "spool", now_ms())])
        assert (await state.verification("main")).unverified == 1  # a hint again
        polled = make_product(1, revision=2)
        await state.record([Change("main", polled.id, polled, "poll", now_ms())])
        # A poll reads the product through the API but is no run: the mark stays as it was.
        assert (await state.verification("main")).unverified == 1


async def test_test_mode_on_a_first_start_ships_only_the_tagged_products(
    tmp_path: Path, hub: Hub
) -> None:
    config = config_with(tmp_path, hub, filters=StoreFilters(test_tag="bridge-test"))
    for i in (3, 7, 11):
        tagged = dataclasses.replace(make_product(i), tags=("bridge-test",))
        write_product(tmp_path / "catalog", tagged)
    async with running(config):

        async def settled() -> bool:
            async with StateStore.open(config.agent.state_dir, read_only=True) as state:
                runs = [await state.last_run("main", k) for k in ("import", "repair")]
                pending = (await state.stats()).pending
            return all(r is not None and r.state == "done" for r in runs) and not pending

        await until(settled, 30, what="the import and its repair")
    # The import read 30 products and kept 3; the repair after it (a new state) listed all 30
    # ids and recorded none of the others: both runs keep to the filters.
    assert sorted(await hub.products("main")) == sorted(make_product(i).id for i in (3, 7, 11))
    async with StateStore.open(config.agent.state_dir, read_only=True) as state:
        run = await state.last_run("main", "import")
        assert run is not None and (run.report or {})["out_of_scope"] == 27


async def test_new_filters_during_an_open_run_warn_and_wait_for_the_next_run(
    tmp_path: Path, hub: Hub
) -> None:
    config = config_with(tmp_path, hub)
    state_dir = config.agent.state_dir
    state_dir.mkdir()
    async with StateStore.open(state_dir) as state:
        await state.pause_store("main")  # the import stays open (paused) while we reload
        await state.start_run("import", "main", freeze(config.stores[0]))
    filtered = dataclasses.replace(
        config,
        stores=(dataclasses.replace(config.stores[0], filters=StoreFilters(tags=("sale",))),),
    )
    loads = iter([filtered])
    agent = Agent(config, load=lambda path: next(loads))
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)

        async def import_open() -> bool:
            async with StateStore.open(state_dir, read_only=True) as state:
                return bool(await state.open_runs("main"))

        await until(import_open, 10, what="the first import to be queued")
        agent.reload()

        async def warned() -> bool:
            async with StateStore.open(state_dir, read_only=True) as state:
                events = await state.events(limit=20, levels=("warning",))
            return any(e.action == "config" and "filters changed" in e.message for e in events)

        await until(warned, 10, what="the warning about the filters")
        async with StateStore.open(state_dir, read_only=True) as state:
            (run,) = await state.open_runs("main")
        assert run.kind == "import"
        assert run.config["filters"] == StoreFilters().to_dict()  # still what it started with
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)


async def test_a_change_during_a_refresh_merges_with_it_and_ships_once(
    tmp_path: Path, hub: Hub
) -> None:
    config = config_with(tmp_path, hub)
    state_dir = config.agent.state_dir
    async with running(config):

        async def imported() -> bool:
            async with StateStore.open(state_dir, read_only=True) as state:
                run = await state.last_run("main", "import")
                pending = (await state.stats()).pending
            return run is not None and run.state == "done" and not pending

        await until(imported, 30, what="the import")
        before = await hub.stats()
        async with StateStore.open(state_dir) as state:
            await state.pause_store("main")  # the refresh waits, queued, while the change lands
            refresh = await state.start_run("refresh", "main", freeze(config.stores[0]))
            changed = dataclasses.replace(make_product(5), title="Changed during the run")
            write_product(tmp_path / "catalog", changed)
            # What a webhook's re-fetch records while the run is open.
            await state.record([Change("main", changed.id, changed, "webhook", now_ms())])

        async def shipped() -> bool:
            async with StateStore.open(state_dir, read_only=True) as state:
                return (await state.stats()).pending == 0

        await until(shipped, 30, what="the change to ship")
        async with StateStore.open(state_dir) as state:
            await state.resume_store("main")

        async def refreshed() -> bool:
            async with StateStore.open(state_dir, read_only=True) as state:
                run = await state.run(refresh)
            return run is not None and run.state == "done"

        await until(refreshed, 30, what="the refresh")
        await until(shipped, 30, what="the outbox to drain")
    async with StateStore.open(state_dir, read_only=True) as state:
        run = await state.run(refresh)
    assert run is not None and (run.report or {})["shipped"] == 0  # read again, already there
    after = await hub.stats()
    assert after["items"] - before["items"] == 1  # the change, once
    assert (await hub.products("main"))[changed.id]["data"]["title"] == "Changed during the run"
