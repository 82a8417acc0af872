"""Spool watcher: parsing, backlog at start, burst coalescing, quarantine, failed re-fetches."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge_agent.errors import PlatformUnavailable
from bridge_agent.health import Health
from bridge_agent.metrics import Metrics
from bridge_agent.model import Product
from bridge_agent.platforms.base import CatalogPage
from bridge_agent.platforms.jsondir import JsonDir
from bridge_agent.sources import StoreContext
from bridge_agent.sources import spool as spool_module
from bridge_agent.sources.spool import SpoolFileError, SpoolWatcher, parse_spool
from bridge_agent.store import StateStore
from bridge_agent.testing.catalog import make_product, spool_event, write_product, write_spool
from bridge_agent.testing.waiting import until


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
        (b"{not json", "not valid JSON"),
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
        await asyncio.wait_for(w.watching.wait(), 10)
        write_product(catalog, make_product(5))
        write_spool(tmp_path / "spool", spool_event("product.created", "5"))

        async def hinted() -> bool:
            return bool(await state.due(10))

        await until(hinted, 5, what="the new spool file's product to become due")
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


# -- hostile entries: the folder is writable by the web server's user (issue 10, classes 1-3) ---


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[" * 5000 + b"]" * 5000, "nests deeper"),  # RecursionError in json.loads
        (b'[[[[[[[[[{"v": 1}]]]]]]]]]', "nests deeper"),  # deeper than any spool file
        (b'{"v": 1, "event": "product.updated", "id": ' + b"9" * 5000 + b"}", "4300 digits"),
        (b'{"v": 1, "event": "product.updated", "id": ' + b"9" * 300 + b"}", "'id' must be"),
        (b'{"v": 1, "event": ["product.updated"], "id": "1"}', "unknown event"),  # unhashable
        (b'{"v": 1, "event": {"a": 1}, "id": "1"}', "unknown event"),
        (b'{"v": true, "event": "product.updated", "id": "1"}', "unsupported version"),
        (b'{"v": 1, "event": "product.updated", "id": "' + b"x" * 300 + b'"}', "at most 255"),
        (b'{"v": 1, "event": "product.updated", "id": "1\\n2"}', "printable"),
        (b'{"v": 1, "event": "product.updated", "id": -1}', "'id' must be"),
    ],
)
def test_parse_spool_refuses_hostile_documents(raw: bytes, message: str) -> None:
    with pytest.raises(SpoolFileError, match=message):
        parse_spool(raw)


def test_parse_spool_messages_stay_short() -> None:
    huge = b'{"v": 1, "event": "' + b"e" * 100_000 + b'", "id": "1"}'
    with pytest.raises(SpoolFileError) as caught:
        parse_spool(huge)
    assert len(str(caught.value)) < 300


@contextlib.contextmanager
def released(fifo: Path) -> Iterator[None]:
    """On the way out, open the FIFO's other end: a reader blocked on it (old code) is freed, so a
    failing test fails instead of hanging the whole run."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


async def test_hostile_entries_are_set_aside_and_never_followed(
    tmp_path: Path, catalog: Path, state: StateStore
) -> None:
    store = CountingStore(catalog)
    write_product(catalog, make_product(1))
    incoming = tmp_path / "spool" / "incoming"
    incoming.mkdir(parents=True)
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(spool_event("product.updated", "1")))
    os.mkfifo(incoming / "1-fifo.json")
    (incoming / "2-dangling.json").symlink_to(tmp_path / "nowhere.json")
    (incoming / "3-outside.json").symlink_to(outside)  # a valid document, but not ours to read
    (incoming / "4-huge.json").touch()
    os.truncate(incoming / "4-huge.json", 150 * 1024 * 1024)  # sparse: 150 MB, no disk used
    (incoming / "5-deep.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    (incoming / "6-digits.json").write_bytes(
        b'{"v": 1, "event": "product.updated", "id": ' + b"7" * 5000 + b"}"
    )
    (incoming / "7-folder.json").mkdir()
    write_spool(tmp_path / "spool", spool_event("product.updated", "1"))
    spool = watcher(tmp_path, store, state)
    with released(incoming / "1-fifo.json"):
        async with asyncio.timeout(10):
            progressed, left = await spool.process_once()
    assert (progressed, left) == (8, 0)
    rejected = tmp_path / "spool" / "rejected"
    why = {p.name[: -len(".why")]: p.read_text() for p in rejected.glob("*.why")}
    assert sorted(why) == [
        "1-fifo.json", "2-dangling.json", "3-outside.json", "4-huge.json", "5-deep.json",
        "6-digits.json", "7-folder.json",
    ]  # fmt: skip
    assert "FIFO" in why["1-fifo.json"]
    assert "symbolic link" in why["2-dangling.json"]
    assert "symbolic link" in why["3-outside.json"]
    assert "larger than 1048576 bytes" in why["4-huge.json"]
    assert "nests deeper" in why["5-deep.json"]
    assert "4300 digits" in why["6-digits.json"]
    assert "folder" in why["7-folder.json"]
    # Links are moved as links: what they point to is neither read nor touched.
    assert (rejected / "3-outside.json").is_symlink()
    assert outside.exists()
    assert list(incoming.iterdir()) == []
    assert store.fetches == ["1"]  # the one valid file, and nothing read through the link
    assert [d.id for d in await state.due(10)] == ["1"]
    assert await spool.process_once() == (0, 0)  # nothing left, nothing to spin on


async def test_the_watcher_survives_hostile_entries_and_stops_promptly(
    tmp_path: Path, catalog: Path, state: StateStore
) -> None:
    store = CountingStore(catalog)
    incoming = tmp_path / "spool" / "incoming"
    incoming.mkdir(parents=True)
    os.mkfifo(incoming / "a-fifo.json")
    (incoming / "b-dangling.json").symlink_to(tmp_path / "nowhere.json")
    (incoming / "c-deep.json").write_bytes(b"{" * 50_000)
    spool = watcher(tmp_path, store, state)
    task = asyncio.create_task(spool.run())
    with released(incoming / "a-fifo.json"):
        try:
            await until(lambda: not any(incoming.iterdir()))
            write_product(catalog, make_product(9))
            write_spool(tmp_path / "spool", spool_event("product.created", "9"))
            await until(lambda: (tmp_path / "spool" / "incoming").exists() and not any(
                incoming.iterdir()) and "9" in store.fetches)  # fmt: skip
            assert not task.done()
            assert spool.health.state == "watching"
        finally:
            task.cancel()
            async with asyncio.timeout(2):  # a thread stuck in open() would hold this
                await asyncio.gather(task, return_exceptions=True)
    assert len(list((tmp_path / "spool" / "rejected").glob("*.why"))) == 3


async def test_an_entry_that_cannot_be_set_aside_is_skipped_not_spun(
    tmp_path: Path, catalog: Path, state: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sticky incoming/ owned by someone else: the agent may read a file but neither move nor
    # remove it. Root ignores permissions, so the refusal is simulated at the system call.
    def refuse(src: object, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(spool_module.os, "rename", refuse)
    incoming = tmp_path / "spool" / "incoming"
    incoming.mkdir(parents=True)
    (incoming / "bad.json").write_text("{not json")
    spool = watcher(tmp_path, CountingStore(catalog), state)
    assert await spool.process_once() == (0, 1)
    assert spool.health.state == "spool_stuck"
    assert "bad.json" in (spool.health.detail or "")
    assert await spool.process_once() == (0, 0)  # skipped from now on: no busy loop
    (event,) = [e for e in await state.events() if e.level == "error"]
    assert "cannot be set aside" in event.message
    monkeypatch.undo()
    (incoming / "bad.json").unlink()  # the operator cleans up: the health recovers
    await spool.process_once()
    assert spool.health.state == "watching"


async def test_a_file_that_cannot_be_removed_is_recorded_once(
    tmp_path: Path, catalog: Path, state: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CountingStore(catalog)
    write_product(catalog, make_product(1))
    write_spool(tmp_path / "spool", spool_event("product.updated", "1"))

    def refuse(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(Path, "unlink", refuse)
    spool = watcher(tmp_path, store, state)
    assert await spool.process_once() == (0, 1)
    assert [d.id for d in await state.due(10)] == ["1"]  # recorded all the same
    assert await spool.process_once() == (0, 0)
    assert store.fetches == ["1"]
    assert spool.health.state == "spool_stuck"


async def test_an_unreadable_incoming_folder_fails_health_not_the_watcher(
    tmp_path: Path, catalog: Path, state: StateStore
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / "incoming").write_text("not a folder")  # scandir fails, even as root
    spool = watcher(tmp_path, CountingStore(catalog), state)
    assert await spool.process_once() == (0, 0)
    assert spool.health.state == "spool_unavailable"
    (spool_dir / "incoming").unlink()
    (spool_dir / "incoming").mkdir()
    assert await spool.process_once() == (0, 0)
    assert spool.health.state == "watching"


async def test_a_round_lists_a_bounded_number_of_entries(
    tmp_path: Path, catalog: Path, state: StateStore
) -> None:
    store = CountingStore(catalog)
    for i in range(1, 4):
        write_product(catalog, make_product(i))
    for i in range(1, 4):
        path = write_spool(tmp_path / "spool", spool_event("product.updated", str(i)))
        os.utime(path, (1_700_000_000 + i, 1_700_000_000 + i))  # the oldest go first
    spool = SpoolWatcher(
        StoreContext("main", store, state, lambda: None, Metrics(), Health("store:main")),
        spool_dir=tmp_path / "spool",
        max_files=2,
    )
    assert await spool.process_once() == (2, 1)
    assert sorted(store.fetches) == ["1", "2"]
    assert await spool.process_once() == (1, 0)
