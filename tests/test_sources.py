"""Incremental sources and runs: webhook hints, polling, reconciliation, resumable imports.

They run against the `jsondir` platform (a store whose truth the test writes) and, where a
failure must be injected, a thin wrapper around it. Platform-specific rules (WooCommerce's
exclusive `modified_after`, its webhook headers) are tested with the WooCommerce adapter.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge_agent.agent import Agent
from bridge_agent.config import Listen, Secret, StoreSettings, WebhookSettings
from bridge_agent.errors import PlatformUnavailable
from bridge_agent.health import Health
from bridge_agent.metrics import Metrics
from bridge_agent.model import Change, Product
from bridge_agent.platforms.base import CatalogPage
from bridge_agent.platforms.jsondir import JsonDir
from bridge_agent.sources import StoreContext
from bridge_agent.sources import importer as module
from bridge_agent.sources.importer import Importer, freeze
from bridge_agent.sources.poller import STREAM, Poller
from bridge_agent.sources.reconcile import Reconciler
from bridge_agent.store import StateStore
from bridge_agent.testing.catalog import delete_product, make_product, write_product
from bridge_agent.testing.waiting import until
from tests.conftest import Hub, make_config

SECRET = "whsec-test-8c1f"


class Flaky(JsonDir):
    """jsondir that fails on chosen catalog pages and counts the pages it serves."""

    def __init__(self, catalog: Path, *, fail_pages: set[int] | None = None) -> None:
        super().__init__("main", catalog)
        self.fail_pages = fail_pages or set()
        self.pages_served: list[int] = []

    async def catalog(self, resume: str | None = None) -> AsyncIterator[CatalogPage]:
        page_no = 0 if resume is None else int(resume)
        async for page in super().catalog(None if page_no == 0 else _token(self, page_no)):
            page_no += 1
            if page_no in self.fail_pages:
                self.fail_pages.discard(page_no)
                raise PlatformUnavailable(f"page {page_no}: store answered 503")
            self.pages_served.append(page_no)
            yield CatalogPage(page.products, None if page.next_token is None else str(page_no),
                              page.total)  # fmt: skip


def _token(platform: JsonDir, pages_done: int) -> str:
    names = sorted(p.name for p in platform.catalog_dir.glob("*.json"))
    return names[pages_done * 100 - 1]


def store_settings(root: Path, **kw: Any) -> StoreSettings:
    base = StoreSettings(
        id="main", platform="jsondir", url="http://127.0.0.1/",
        options={"catalog_dir": str(root / "catalog")},
    )  # fmt: skip
    return replace(base, **kw)


def fill(catalog: Path, ids: Sequence[int]) -> None:
    catalog.mkdir(exist_ok=True)
    for i in ids:
        write_product(catalog, make_product(i))


def ctx(state: StateStore, platform: Any) -> StoreContext:
    return StoreContext("main", platform, state, lambda: None, Metrics(), Health("store:main"))


# -- imports ---------------------------------------------------------------------------------


async def test_first_start_imports_and_reports(tmp_path: Path, state: StateStore) -> None:
    fill(tmp_path / "catalog", range(1, 251))
    write_product(tmp_path / "catalog", replace(make_product(251), sku="SKU-1"))  # duplicate
    platform = Flaky(tmp_path / "catalog")
    importer = Importer(
        ctx(state, platform),
        store=store_settings(tmp_path),
        build_platform=lambda s: contextlib.nullcontext(platform),
    )
    run_id = await importer.start_first_import()
    assert run_id is not None
    (run,) = await state.open_runs("main")
    await importer.execute(run)
    assert await state.open_runs() == []
    finished = await state.last_run("main", "import")
    assert finished is not None and finished.state == "done"
    assert finished.report is not None
    assert finished.report["imported"] == 251
    warnings = finished.report["warnings"]
    assert warnings["duplicate_sku"] == [{"sku": "SKU-1", "products": 2}]
    assert warnings["no_image"] == sum(1 for i in range(1, 252) if i % 7 == 3)
    assert await state.mirror_count("main") == 251
    assert await importer.start_first_import() is None  # never twice by itself


async def test_import_resumes_from_its_checkpoint_with_frozen_settings(
    tmp_path: Path, state: StateStore
) -> None:
    fill(tmp_path / "catalog", range(1, 501))  # 5 pages of 100
    platform = Flaky(tmp_path / "catalog", fail_pages={4})
    seen: list[StoreSettings] = []

    def build(settings: StoreSettings) -> contextlib.nullcontext[Flaky]:
        seen.append(settings)
        return contextlib.nullcontext(platform)

    original = store_settings(tmp_path, concurrency=3)
    importer = Importer(ctx(state, platform), store=original, build_platform=build)
    await importer.start_first_import()
    (run,) = await state.open_runs("main")
    with pytest.raises(PlatformUnavailable):
        await importer.execute(run)
    (paused,) = await state.open_runs("main")
    assert paused.done == 300
    assert paused.checkpoint is not None and paused.checkpoint["next"] == "3"
    # The operator edits the config meanwhile: the run keeps what it started with.
    importer.store = store_settings(tmp_path, concurrency=9)
    await importer.execute(paused)
    assert platform.pages_served == [1, 2, 3, 4, 5]  # resumed: no page fetched twice
    assert [s.concurrency for s in seen] == [3, 3]
    assert await state.mirror_count("main") == 500
    done = await state.last_run("main", "import")
    assert done is not None and done.state == "done" and done.done == 500


async def test_a_run_that_keeps_failing_is_given_up_and_says_why(
    tmp_path: Path, state: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(module, "MAX_FAILURES", 2)
    monkeypatch.setattr(module.Backoff, "delay", lambda self, attempt, **kw: 0.0)
    fill(tmp_path / "catalog", range(1, 3))

    class Down(JsonDir):
        async def catalog(self, resume: str | None = None) -> AsyncIterator[CatalogPage]:
            raise PlatformUnavailable("store answered 503")
            yield  # pragma: no cover

    down = Down("main", tmp_path)
    settings = store_settings(tmp_path)
    importer = Importer(
        ctx(state, down), store=settings, build_platform=lambda s: contextlib.nullcontext(down)
    )

    async def failed() -> bool:
        last = await state.last_run("main", "import")
        return last is not None and last.state == "failed"

    task = asyncio.create_task(importer.run())
    try:
        await until(failed, 5, what="the import to fail")
        last = await state.last_run("main", "import")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert last is not None and last.state == "failed"
    assert "503" in (last.error or "")
    assert any("failed 2 times" in e.message for e in await state.events())
    assert importer.health.failing


def test_frozen_settings_hold_no_secret(tmp_path: Path) -> None:
    store = store_settings(tmp_path, secrets={"webhook_secret": Secret(SECRET)})
    assert SECRET not in json.dumps(freeze(store))


# -- polling ---------------------------------------------------------------------------------


async def test_poller_starts_now_then_sees_changes_and_advances(
    tmp_path: Path, state: StateStore
) -> None:
    fill(tmp_path / "catalog", [1, 2])
    now = [datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()]
    platform = JsonDir("main", tmp_path / "catalog")
    poller = Poller(ctx(state, platform), interval=60, overlap=30, clock=lambda: now[0])
    assert await poller.poll_once() == 0  # first poll: no history, only a starting point
    assert await state.cursor("main", STREAM) == "2026-11-23T09:59:30Z"
    edited = replace(make_product(1), title="edited", updated_at="2026-11-23T10:00:05Z")
    write_product(tmp_path / "catalog", edited)
    old = replace(make_product(2), title="old edit", updated_at="2026-11-23T09:00:00Z")
    write_product(tmp_path / "catalog", old)
    now[0] += 60
    assert await poller.poll_once() == 1  # only what changed since the cursor (minus overlap)
    (due,) = await state.due(10)
    assert due.id == "1"
    assert await state.cursor("main", STREAM) == "2026-11-23T10:01:00Z"


async def test_poller_failure_keeps_the_cursor(tmp_path: Path, state: StateStore) -> None:
    class Broken(JsonDir):
        async def modified_since(self, since: datetime) -> AsyncIterator[Sequence[Product]]:
            yield [make_product(1)]
            raise PlatformUnavailable("page 2: 503")

    await state.set_cursor("main", STREAM, "2026-11-23T09:00:00Z")
    poller = Poller(ctx(state, Broken("main", tmp_path)), interval=60)
    with pytest.raises(PlatformUnavailable):
        await poller.poll_once()
    assert await state.cursor("main", STREAM) == "2026-11-23T09:00:00Z"
    assert [d.id for d in await state.due(10)] == ["1"]  # the page it got is kept


# -- reconciliation --------------------------------------------------------------------------


async def _seed_mirror(state: StateStore, ids: Sequence[int]) -> None:
    await state.record([Change("main", str(i), make_product(i), "import", 1) for i in ids])


@pytest.mark.parametrize("deletions", [True, False])
async def test_reconciliation_finds_deletions_and_unseen_products(
    tmp_path: Path, state: StateStore, deletions: bool
) -> None:
    fill(tmp_path / "catalog", [1, 2, 3, 4])
    await _seed_mirror(state, [1, 2, 3])
    delete_product(tmp_path / "catalog", "2")  # deleted without any hint
    platform = JsonDir("main", tmp_path / "catalog")
    reconciler = Reconciler(ctx(state, platform), interval=3600, deletions=deletions)
    counts = await reconciler.reconcile_once()
    due = {d.id: d for d in await state.due(10)}
    assert "4" in due and not due["4"].deleted  # a creation no hint reported
    if deletions:
        assert counts["deleted"] == 1
        assert due["2"].deleted
    else:
        assert counts["deleted"] == 0
        assert not due.get("2") or not due["2"].deleted
    assert await state.cursor("main", "reconciled_at") is not None


async def test_reconciliation_does_not_delete_what_the_store_still_returns(
    tmp_path: Path, state: StateStore
) -> None:
    class HidesTrash(JsonDir):  # like WooCommerce: status=any leaves trashed products out
        async def product_ids(self) -> AsyncIterator[Sequence[str]]:
            async for ids in super().product_ids():
                yield [i for i in ids if i != "2"]

    fill(tmp_path / "catalog", [1, 2])
    await _seed_mirror(state, [1, 2])
    trashed = replace(make_product(2), status="archived")
    write_product(tmp_path / "catalog", trashed)
    reconciler = Reconciler(ctx(state, HidesTrash("main", tmp_path / "catalog")), interval=3600)
    counts = await reconciler.reconcile_once()
    assert counts["deleted"] == 0
    due = {d.id: d for d in await state.due(10)}
    assert not due["2"].deleted  # recorded as archived, not deleted
    assert due["2"].data is not None and b"archived" in due["2"].data


# -- webhooks (through the real agent) -------------------------------------------------------


def _signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {"X-Signature": base64.b64encode(digest).decode(), "Content-Type": "application/json"}


async def test_webhooks_good_bad_ping_replay_and_limits(tmp_path: Path, hub: Hub) -> None:
    config = make_config(tmp_path, hub.url)
    store = replace(config.stores[0], secrets={"webhook_secret": Secret(SECRET)})
    webhooks = WebhookSettings(listen=Listen("127.0.0.1", 0), max_body_bytes=4096)
    config = replace(config, stores=(store,), webhooks=webhooks)
    agent = Agent(config)
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        await until(lambda: agent.webhook_port, 5, what="the webhook listener to bind")
        url = f"http://127.0.0.1:{agent.webhook_port}/webhooks/jsondir/main"
        write_product(tmp_path / "catalog", make_product(42))
        body = json.dumps({"topic": "product.updated", "id": 42}).encode()
        async with httpx.AsyncClient(timeout=5) as client:
            bad = await client.post(url, content=body, headers=_signed(body, "wrong-secret"))
            assert bad.status_code == 401
            unsigned = await client.post(url, content=body)
            assert unsigned.status_code == 401
            async with StateStore.open(tmp_path / "state") as peek:
                assert await peek.hint_count() == 0  # nothing recorded for a bad signature
            ping = json.dumps({"ping": True}).encode()
            assert (await client.post(url, content=ping, headers=_signed(ping))).status_code == 200
            for _ in range(3):  # a delivery replayed: one hint, one product
                ok = await client.post(url, content=body, headers=_signed(body))
                assert ok.status_code == 200
            huge = b"{" + b" " * 5000 + b"}"
            assert (await client.post(url, content=huge, headers=_signed(huge))).status_code == 413
            # Correctly signed and hostile: refused as a bad body, the listener goes on.
            for hostile in (
                b"[" * 2000 + b"]" * 2000,
                b'{"id": ' + b"9" * 4000 + b"}",
                b'{"id": "4\\u00002"}',
            ):
                refused = await client.post(url, content=hostile, headers=_signed(hostile))
                assert refused.status_code == 400, hostile[:40]
                assert "Traceback" not in refused.text
            other = url.replace("/main", "/nope")
            assert (
                await client.post(other, content=body, headers=_signed(body))
            ).status_code == 404

        async def arrived() -> bool:
            return "42" in await hub.products("main")

        await until(arrived, 6, what="the webhook's product at the hub")
        assert agent.metrics.value("bridge_webhooks_total", store="main", outcome="accepted") == 3
        assert (
            agent.metrics.value("bridge_webhooks_total", store="main", outcome="bad_signature") == 2
        )
    finally:
        agent.stop()
        await asyncio.wait_for(task, 20)
    async with StateStore.open(tmp_path / "state") as state:
        assert await state.hint_count() == 0
