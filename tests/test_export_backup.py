"""The backup before a bulk apply (export/backup.py, downstream/apply.py `_back_up`).

A round about to write more than `backup_threshold` optimisations writes the affected products
to the backup destination first, and only then writes to the store; a backup that fails holds
the whole round (nothing written, the optimisations stay open, tried again next round); a round
at or below the threshold writes no backup. The order is checked on one shared log that the
destination and the store's writer both append to.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bridge_agent.config import StoreSettings
from bridge_agent.config.exports import FolderDestinationSettings
from bridge_agent.downstream.apply import Applier, BulkHeld, DownstreamSettings
from bridge_agent.errors import DestinationError
from bridge_agent.export.backup import BulkBackup
from bridge_agent.export.destinations import Delivered, FolderDestination
from bridge_agent.metrics import Metrics
from bridge_agent.model import Change
from bridge_agent.platforms.base import (
    WRITE_CAPABILITIES,
    FieldRef,
    FieldWrite,
    WriteField,
    WriteResult,
)
from bridge_agent.platforms.jsondir import JsonDir
from bridge_agent.store import StateStore
from bridge_agent.store.journal import Received
from bridge_agent.testing.catalog import make_product
from bridge_agent.testing.fake_writer import FakeWriter
from bridge_agent.testing.waiting import until
from tests.conftest import Hub
from tests.test_e2e_downstream import STORE as E2E_STORE
from tests.test_e2e_downstream import YOAST, Stack, meta, pick, store_product
from tests.test_e2e_woocommerce import start_sim

STORE = E2E_STORE  # "main", as the end-to-end stack names it
OLD, NEW = "Old title", "New title"


class LoggedWriter(FakeWriter):
    """The store: each batch of writes goes to the shared log."""

    def __init__(self, products: Sequence[str], log: list[str]) -> None:
        values = {FieldRef(p, WriteField.SEO_TITLE): OLD for p in products}
        super().__init__(products, values=values)
        self.log = log

    async def write_fields(self, writes: Sequence[FieldWrite]) -> Sequence[WriteResult]:
        self.log.append(f"write {len(writes)}")
        return await super().write_fields(writes)


class LoggedFolder(FolderDestination):
    """The backup folder: a delivery goes to the shared log once the file is there."""

    def __init__(self, path: Path, log: list[str]) -> None:
        super().__init__(FolderDestinationSettings(path))
        self.log = log

    async def deliver(self, local_file: Path, name: str) -> Delivered:
        delivered = await super().deliver(local_file, name)
        self.log.append(f"backup {name}")
        return delivered


class Failing(FolderDestination):
    label = "s3://backups/main/"

    async def deliver(self, local_file: Path, name: str) -> Delivered:
        raise DestinationError(
            f"{self.label}: uploading {name} failed: access denied", destination=self.label
        )


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[StateStore]:
    async with StateStore.open(tmp_path / "state") as opened:
        yield opened


def store_settings(threshold: int) -> StoreSettings:
    return StoreSettings(
        id=STORE,
        platform="jsondir",
        url="https://shop.example/",
        backup_before_bulk=True,
        backup_threshold=threshold,
    )


async def setup(state: StateStore, count: int) -> list[str]:
    """`count` products in the mirror, one optimisation of each's SEO title journaled."""
    products = [str(i) for i in range(1, count + 1)]
    now = int(time.time() * 1000)
    await state.record([Change(STORE, p, make_product(int(p)), "poll", now) for p in products])
    received = [
        Received(f"opt-{p}", p, {"seo_title": {"from": OLD, "to": NEW}}, int(p)) for p in products
    ]
    await state.journal_received(STORE, received, "c1")
    return products


def applier(
    state: StateStore, root: Path, writer: FakeWriter, backup: BulkBackup | None
) -> Applier:
    return Applier(
        STORE, JsonDir(STORE, root / "catalog"), writer, state, Metrics(),
        capabilities=WRITE_CAPABILITIES, settings=DownstreamSettings(),
        on_outcome=lambda: None, on_recorded=lambda: None, backup=backup,
    )  # fmt: skip


async def test_a_bulk_above_the_threshold_is_backed_up_before_the_first_write(
    state: StateStore, tmp_path: Path
) -> None:
    products = await setup(state, 5)
    log: list[str] = []
    writer = LoggedWriter(products, log)
    folder = tmp_path / "backups"
    backup = BulkBackup(state, store_settings(3), destination=LoggedFolder(folder, log))

    assert await applier(state, tmp_path, writer, backup).apply_pending() == 5

    assert len(log) == 2 and log[0].startswith("backup main-backup-") and log[1] == "write 5"
    [file] = list(folder.iterdir())
    assert file.name == log[0].removeprefix("backup ") and file.suffix == ".jsonl"
    lines = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["id"] for r in lines) == products
    # The products as the mirror held them before the bulk: the store's values, every group.
    first = make_product(1)
    assert lines[0]["title"] == first.title and "recorded_at" in lines[0]
    assert lines[0]["history"] == []  # the history group: nothing replaced yet
    assert all(writer.values[FieldRef(p, WriteField.SEO_TITLE)] == NEW for p in products)
    [event] = [e for e in await state.events(50) if e.action == "backup"]
    assert event.level == "info" and "5 optimization(s): 5 product(s)" in event.message
    assert str(file) in event.message


async def test_a_failed_backup_holds_the_bulk_until_a_backup_succeeds(
    state: StateStore, tmp_path: Path
) -> None:
    products = await setup(state, 5)
    log: list[str] = []
    writer = LoggedWriter(products, log)
    failing = BulkBackup(
        state,
        store_settings(3),
        destination=Failing(FolderDestinationSettings(tmp_path / "never")),
    )
    loop = applier(state, tmp_path, writer, failing)

    with pytest.raises(BulkHeld, match="access denied"):
        await loop.apply_pending()
    assert log == [] and writer.writes == []  # nothing written, not even one at a time
    open_entries = await state.journal_open(STORE)
    assert [e.state for e in open_entries] == ["received"] * 5  # not even marked applying
    [event] = [e for e in await state.events(50) if e.action == "backup"]
    assert event.level == "error" and "bulk of 5 optimization(s) held" in event.message
    assert "access denied" in event.message
    assert list((Path(state.path).parent / "exports" / "tmp").iterdir()) == []

    # The run loop takes a held bulk as a round to try again (status shows why), and the next
    # round with a working backup applies it, backup first.
    folder = tmp_path / "backups"
    loop._backup = BulkBackup(state, store_settings(3), destination=LoggedFolder(folder, log))
    assert await loop.apply_pending() == 5
    assert log[0].startswith("backup ") and log[1] == "write 5"
    assert await state.journal_open(STORE) == []


async def test_the_run_loop_reports_a_held_bulk_and_retries(
    state: StateStore, tmp_path: Path
) -> None:
    products = await setup(state, 4)
    writer = LoggedWriter(products, [])
    failing = BulkBackup(
        state,
        store_settings(1),
        destination=Failing(FolderDestinationSettings(tmp_path / "never")),
    )
    loop = applier(state, tmp_path, writer, failing)
    task = asyncio.create_task(loop.run())
    try:
        await until(lambda: loop.failures >= 1, what="the held round")
        assert "held" in (loop.last_error or "") and "access denied" in (loop.last_error or "")
        assert writer.writes == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_at_or_below_the_threshold_no_backup_is_written(
    state: StateStore, tmp_path: Path
) -> None:
    products = await setup(state, 3)
    log: list[str] = []
    writer = LoggedWriter(products, log)
    folder = tmp_path / "backups"
    backup = BulkBackup(state, store_settings(3), destination=LoggedFolder(folder, log))

    assert await applier(state, tmp_path, writer, backup).apply_pending() == 3
    assert log == ["write 3"] and not folder.exists()
    assert [e for e in await state.events(50) if e.action == "backup"] == []


async def test_the_default_backup_folder_is_under_the_state_directory(
    state: StateStore, tmp_path: Path
) -> None:
    products = await setup(state, 2)
    settings = replace(store_settings(1), backup_destination=None)
    backup = BulkBackup(state, settings)
    delivered = await backup(products, 2)
    folder = Path(state.path).parent / "backups" / STORE
    assert Path(delivered.location).parent == folder
    assert len(list(folder.iterdir())) == 1


# -- the agent, end to end -------------------------------------------------------------------


@pytest.fixture
async def stack(tmp_path: Path, hub: Hub) -> AsyncIterator[Stack]:
    sim, task = await start_sim(
        12, variable_ratio=0.0, no_image_ratio=0.0, webhook_delay=0.1, webhook_jitter=0.1
    )
    running = Stack(tmp_path, sim, hub)
    try:
        yield running
    finally:
        await running.stop()
        await sim.http.aclose()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.sim.close()


async def test_the_running_agent_backs_up_a_bulk_before_writing_it(stack: Stack) -> None:
    """The wiring (stores.py -> Downstream -> Applier): a real agent process with
    `backup_before_bulk`, the WooCommerce simulator and the hub. The backup holds the products
    as they were before the bulk: every SEO title in it is the one the bulk replaced."""
    stack.config(extra="backup_before_bulk = true\nbackup_threshold = 1")
    stack.start()
    await stack.wait_imported()
    picked: list[str] = []
    for _ in range(3):
        picked.append(await pick(stack.woo, YOAST, skip=picked))
    before: dict[str, Any] = {}
    proposals = []
    for pid in picked:
        async with stack.hub.client() as client:
            data = (await client.get(f"/v1/stores/{STORE}/products/{pid}")).json()["data"]
        before[pid] = data.get("seo_title")
        proposals.append(
            {"product": pid, "fields": {"seo_title": {"from": before[pid], "to": f"bulk {pid}"}}}
        )
    ids = await stack.enqueue(proposals)
    results = await stack.final_results(ids)
    assert {r["status"] for r in results.values()} == {"applied"}

    folder = stack.root / "state" / "backups" / STORE
    files = sorted(folder.iterdir())
    assert files, stack.log_tail()
    backed_up: dict[str, Any] = {}
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            backed_up[record["id"]] = record.get("seo_title")
    assert len(backed_up) >= 2 and set(backed_up) <= set(picked)  # a round of 2 or 3 (> 1)
    assert all(backed_up[p] == before[p] for p in backed_up)  # taken before the writes
    for pid in picked:
        product = await store_product(stack.woo, pid)
        assert meta(product, YOAST[0]) == f"bulk {pid}"
