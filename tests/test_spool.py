"""Spool watcher: parsing, backlog at start, burst coalescing, quarantine, failed re-fetches."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge_agent.errors import PlatformUnavailable
from bridge_agent.health import Health
from bridge_agent.metrics import Metrics
from bridge_agent.model import Product
from bridge_agent.platforms.base import CatalogPage
from bridge_agent.platforms.jsondir import JsonDir
from bridge_agent.sources import StoreContext
from bridge_agent.sources.spool import SpoolFileError, SpoolWatcher, parse_spool
from bridge_agent.store import StateStore
from bridge_agent.testing.catalog import make_product, spool_event, write_product, write_spool


class CountingStore:
    """A platform fake over a jsondir catalog that counts fetches and can fail on demand."""

    name = "counting"

    def __init__(self, catalog: Path) -> None:
        self.inner = JsonDir("main", catalog)
        self.fetches: list[str] = []
        self.down = False

    async def check(self) -> None:
        return None

    async def fetch_product(self, product_id: str) -> Product | None:
        self.fetches.append(product_id)
        if self.down:
            raise PlatformUnavailable("store answered 503")
        return await self.inner.fetch_product(product_id)

    async def catalog(self, resume: str | None = None) -> AsyncIterator[CatalogPage]:
        async for page in self.inner.catalog(resume):
            yield page


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "catalog"
    path.mkdir()
    return path


def watcher(
    tmp_path: Path, store: CountingStore, state: StateStore, *, deletions: bool = True
) -> SpoolWatcher:
    ctx = StoreContext("main", store, state, lambda: None, Metrics(), Health("store:main"))
    return SpoolWatcher(ctx, spool_dir=tmp_path / "spool", deletions=deletions)


def test_parse_spool_formats() -> None:
    one = parse_spool(b'{"v": 1, "event": "product.updated", "id": "794", "sku": "H-1"}')
    assert [(e.event, e.id) for e in one] == [("product.updated", "794")]
    many = parse_spool(json.dumps([spool_event("stock.updated", "1"), {"v": 1,
                       "event": "product.deleted", "id": 2}]).encode())  # fmt: skip
    assert [e.id for e in many] == ["1", "2"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid UTF-8 JSON"),
        (b'{"v": 2, "event": "product.updated", "id": "1"}', "unsupported version"),
        (b'{"v": 1, "event": "order.created", "id": "1"}', "unknown event"),
        (b'{"v": 1, "event": "product.updated", "id": ""}', "'id' must be"),
        (b'{"v": 1, "event": "product.updated"}', "'id' must be"),
        (b'"just a string"', "expected an object"),
        (b"\xff\xfe", "not valid UTF-8"),
    ],
)
def test_parse_spool_errors(raw: bytes, message: str) -> None:
    with pytest.raises(SpoolFileError, match=message):
        parse_spool(raw)


async def test_backlog_is_processed_and_bursts_coalesce(
    tmp_path: Path, catalog: Path, state: StateStore
) -> None:
    store = CountingStore(catalog)
    for i in (1, 2):
        write_product(catalog, make_product(i))
    for _ in range(10):  # written while the agent was down: a burst for product 1
        write_spool(tmp_path / "spool", spool_event("product.updated", "1"))
    write_spool(tmp_path / "spool", [spool_event("product.created", "2")])
    w = watcher(tmp_path, store, state)
    (tmp_path / "spool" / "rejected").mkdir()
    consumed, left = await w.process_once()
    assert (consumed, left) == (11, 0)
    assert sorted(store.fetches) == ["1", "2"]  # one re-fetch per product
    assert sorted(d.id for d in await state.due(10)) == ["1", "2"]
    assert list((tmp_path / "spool" / "incoming").iterdir()) == []


async def test_bad_file_is_quarantined_and_does_not_block(
    tmp_path: Path, catalog: Path, state: StateStore
) -> None:
    store = CountingStore(catalog)
    write_product(catalog, make_product(1))
    incoming = tmp_path / "spool" / "incoming"
    incoming.mkdir(parents=True)
    (incoming / "0-bad.json").write_text('{"v": 1, "event": "nope", "id": "1"}')
    write_spool(tmp_path / "spool", spool_event("product.updated", "1"))
    (incoming / ".partial.json.tmp").write_text("{")  # a writer's temporary file: ignored
    (tmp_path / "spool" / "rejected").mkdir()
    spool = watcher(tmp_path, store, state)
    await spool.process_once()
    metrics = spool.ctx.metrics
    assert metrics.value("bridge_spool_files_total", store="main", outcome="rejected") == 1
    assert metrics.value("bridge_spool_files_total", store="main", outcome="consumed") == 1
    rejected = tmp_path / "spool" / "rejected"
    assert (rejected / "0-bad.json").exists()
    assert "unknown event 'nope'" in (rejected / "0-bad.json.why").read_text()
    (event,) = await state.events()
    assert "0-bad.json set aside" in event.message
    assert event.store == "main"
    assert [d.id for d in await state.due(10)] == ["1"]
    assert [p.name for p in incoming.iterdir()] == [".partial.json.tmp"]


async def test_a_writer_s_stale_temporary_file_is_removed(
    tmp_path: Path, catalog: Path, state: StateStore
) -> None:
    incoming = tmp_path / "spool" / "incoming"
    incoming.mkdir(parents=True)
    fresh, stale = incoming / ".fresh.json.tmp", incoming / ".died.json.tmp"
    for path in (fresh, stale):
        path.write_text("{")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    await watcher(tmp_path, CountingStore(catalog), state).process_once()
    assert sorted(p.name for p in incoming.iterdir()) == [".fresh.json.tmp"]


async def test_failed_refetch_keeps_the_file_for_later(
    tmp_path: Path, catalog: Path, state: StateStore
) -> None:
    store = CountingStore(catalog)
    write_product(catalog, make_product(1))
    write_spool(tmp_path / "spool", spool_event("product.updated", "1"))
    w = watcher(tmp_path, store, state)
    store.down = True
    assert await w.process_once() == (0, 1)
    assert w.health.failing
    assert await state.due(10) == []
    store.down = False
    assert await w.process_once() == (1, 0)
    assert not w.health.failing
    assert [d.id for d in await state.due(10)] == ["1"]


async def test_hint_is_checked_against_the_store(
    tmp_path: Path, catalog: Path, state: StateStore
) -> None:
    store = CountingStore(catalog)
    write_product(catalog, make_product(1))
    write_spool(tmp_path / "spool", spool_event("product.deleted", "1"))  # stale hint
    write_spool(tmp_path / "spool", spool_event("product.updated", "404"))  # gone
    await watcher(tmp_path, store, state).process_once()
    (due,) = await state.due(10)
    assert due.id == "1" and not due.deleted  # the store still has it: not a deletion


async def test_deletions_false_keeps_products_at_the_hub(
    tmp_path: Path, catalog: Path, state: StateStore
) -> None:
    store = CountingStore(catalog)
    write_product(catalog, make_product(1))
    write_spool(tmp_path / "spool", spool_event("product.created", "1"))
    w = watcher(tmp_path, store, state, deletions=False)
    await w.process_once()
    (catalog / "1.json").unlink()
    write_spool(tmp_path / "spool", spool_event("product.deleted", "1"))
    await w.process_once()
    (due,) = await state.due(10)
    assert not due.deleted


async def test_run_watches_for_new_files(tmp_path: Path, catalog: Path, state: StateStore) -> None:
    store = CountingStore(catalog)
    w = watcher(tmp_path, store, state)
    task = asyncio.create_task(w.run())
    try:
        await asyncio.sleep(0.3)  # watching
        write_product(catalog, make_product(5))
        write_spool(tmp_path / "spool", spool_event("product.created", "5"))
        for _ in range(100):
            if await state.due(10):
                break
            await asyncio.sleep(0.05)
        assert [d.id for d in await state.due(10)] == ["5"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_unreadable_file_is_set_aside_and_the_watcher_goes_on(
    tmp_path: Path, catalog: Path, state: StateStore
) -> None:
    store = CountingStore(catalog)
    write_product(catalog, make_product(1))
    incoming = tmp_path / "spool" / "incoming"
    incoming.mkdir(parents=True)
    (incoming / "0-unreadable.json").mkdir()  # reading it fails with an OSError, even as root
    write_spool(tmp_path / "spool", spool_event("product.updated", "1"))
    (tmp_path / "spool" / "rejected").mkdir()
    await watcher(tmp_path, store, state).process_once()
    why = tmp_path / "spool" / "rejected" / "0-unreadable.json.why"
    assert "cannot read" in why.read_text()
    assert [d.id for d in await state.due(10)] == ["1"]
