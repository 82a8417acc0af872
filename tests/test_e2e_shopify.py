"""Shopify end to end: simulator, adapter, agent and reference hub together, on loopback.

- a full import by bulk operation under injected faults, and one whose bulk operation fails
  (the adapter falls back to paged queries): the hub ends equal to the store, read again
  product by product through `nodes(ids:)` (another query, another path than the import's);
- SIGKILL during the bulk download and during paging: the agent resumes and completes;
- throttling: sustained incremental load on a small bucket never draws `THROTTLED` once the
  adapter has seen the bucket, and no query of the adapter exceeds the single-query maximum;
- webhooks: a good signature reaches the hub, a bad one is refused and records nothing,
  duplicate event ids ship once, a retried stale payload never wins over the newer state, and
  an inventory-only change (no `updatedAt` bump, only `inventory_levels/update`) reaches the
  hub.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge_agent.agent import Agent
from bridge_agent.config import Config, Listen, Secret, StoreSettings, WebhookSettings
from bridge_agent.errors import StateStoreError
from bridge_agent.platforms.shopify import Shopify
from bridge_agent.simulators.shopify import ShopifySimulator, serve
from bridge_agent.store import StateStore
from bridge_agent.testing.waiting import until
from tests.conftest import TOKEN, Hub, free_port, make_config


@dataclass
class Shop:
    sim: ShopifySimulator
    url: str
    http: httpx.AsyncClient  # the control API

    def settings(self, **options: Any) -> StoreSettings:
        return StoreSettings(
            id="main",
            platform="shopify",
            url=self.url,
            secrets={
                "access_token": Secret(self.sim.access_token),
                "webhook_secret": Secret(self.sim.client_secret),
            },
            options={
                "api_version": "2026-07",
                "bulk_import": True,
                "page_size": 100,
                "verify_tls": True,
                **options,
            },
            poll_interval=3600.0,
            reconcile_interval=86400.0,
            verify_schedule="off",
            image_checks=False,
        )

    async def stats(self) -> dict[str, Any]:
        doc: dict[str, Any] = (await self.http.get("/__sim/stats")).json()
        return doc

    async def faults(self, **changes: Any) -> None:
        answer = await self.http.post("/__sim/faults", json=changes)
        assert answer.status_code == 200, answer.text


@contextlib.asynccontextmanager
async def shop(products: int, **faults: Any) -> AsyncIterator[Shop]:
    sim = ShopifySimulator.generate(products=products, seed=5)
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(sim, "127.0.0.1", 0, ready=port.set_result))
    bound = await asyncio.wait_for(port, 30)
    url = f"http://127.0.0.1:{bound}"
    the_shop = Shop(sim, url, httpx.AsyncClient(base_url=url, timeout=30))
    try:
        if faults:
            await the_shop.faults(**faults)
        yield the_shop
    finally:
        await the_shop.http.aclose()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.close()


def agent_config(tmp_path: Path, hub: Hub, store: StoreSettings) -> Config:
    config: Config = make_config(tmp_path, hub.url)
    return replace(config, stores=(store,))


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


async def settled(state_dir: Path, *kinds: str) -> bool:
    """Every run of `kinds` done and the outbox empty."""
    try:
        async with StateStore.open(state_dir, read_only=True) as state:
            runs = [await state.last_run("main", k) for k in kinds]
            pending = (await state.stats()).pending
    except StateStoreError:
        return False
    return all(r is not None and r.state == "done" for r in runs) and pending == 0


async def store_products(the_shop: Shop, **options: Any) -> dict[str, dict[str, Any]]:
    """What the store holds, read product by product through `nodes(ids:)`: faults off, and
    a bucket large enough that the test's own reading does not wait on the restore rate."""
    await the_shop.faults(
        fail_rate=0.0, latency_ms=0.0, bulk_fail=0, bucket_max=1e9, restore_rate=1e9
    )
    async with httpx.AsyncClient(timeout=30) as http:
        adapter = Shopify.from_settings(the_shop.settings(**options), http)
        try:
            ids = [i async for page in adapter.product_ids() for i in page]
            found = await adapter.fetch_products(ids)
        finally:
            await adapter.aclose()
    assert not found.failed and not found.missing
    return {pid: p.to_dict() for pid, p in found.found.items()}


async def assert_hub_equals_store(hub: Hub, the_shop: Shop) -> None:
    from bridge_agent.model import Product, settle  # noqa: PLC0415

    expected = {
        pid: settle(Product.from_dict(data)).to_dict()
        for pid, data in (await store_products(the_shop)).items()
    }
    at_hub = {k: v for k, v in (await hub.products("main")).items() if not v["deleted"]}
    assert set(at_hub) == set(expected)
    differing = [pid for pid, data in expected.items() if at_hub[pid]["data"] != data]
    assert not differing, f"{len(differing)} products differ, e.g. {differing[:3]}"


# -- import ----------------------------------------------------------------------------------


async def test_a_bulk_import_under_faults_equals_the_store(tmp_path: Path, hub: Hub) -> None:
    async with shop(400, fail_rate=0.1) as the_shop:
        config = agent_config(tmp_path, hub, the_shop.settings())
        async with running(config):
            await until(
                lambda: settled(config.agent.state_dir, "import", "repair"),
                90,
                what="the import and its repair",
                every=0.1,
            )
        stats = await the_shop.stats()
        assert stats["bulk_operations"] >= 1  # the import read the bulk file
        assert any(int(code) >= 500 for route in stats["requests"].values() for code in route), (
            "no fault was injected"
        )
        await assert_hub_equals_store(hub, the_shop)


async def test_a_failed_bulk_operation_falls_back_to_paged_queries(
    tmp_path: Path, hub: Hub
) -> None:
    # Paged queries cost about 60 points a product: a Plus shop's 1 000 points/s keeps it short.
    async with shop(250, bulk_fail=5, restore_rate=1000.0) as the_shop:
        config = agent_config(tmp_path, hub, the_shop.settings())
        async with running(config):
            await until(
                lambda: settled(config.agent.state_dir, "import"),
                90,
                what="the import by pages",
                every=0.1,
            )
        await assert_hub_equals_store(hub, the_shop)


def _config_file(root: Path, hub: Hub, the_shop: Shop, bulk: bool) -> Path:
    path = root / "agent.toml"
    path.write_text(
        f"""
[agent]
id = "shopify-agent"
state_dir = "state"
drain_timeout = "5s"
[hub]
url = "{hub.url}"
token = "{TOKEN}"
[health]
listen = "127.0.0.1:{free_port()}"
[[stores]]
id = "main"
platform = "shopify"
url = "{the_shop.url}"
access_token = "{the_shop.sim.access_token}"
bulk_import = {"true" if bulk else "false"}
page_size = 50
poll_interval = "1h"
reconcile_interval = "24h"
verify_schedule = "off"
image_checks = false
""",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "paged"])
async def test_sigkill_during_the_import_resumes_and_completes(
    tmp_path: Path, hub: Hub, bulk: bool
) -> None:
    # Slow answers so the kill lands in the middle: the bulk file's download, or the pages.
    async with shop(
        800, latency_ms=15, bulk_rate=2000.0, restore_rate=2000.0, bucket_max=4000.0
    ) as the_shop:
        config = _config_file(tmp_path, hub, the_shop, bulk)
        cmd = [sys.executable, "-m", "bridge_agent", "--config", str(config),
               "--log-format", "json", "run"]  # fmt: skip
        with (tmp_path / "agent.log").open("ab") as log:
            agent = subprocess.Popen(cmd, stdout=log, stderr=log, env=dict(os.environ))  # noqa: ASYNC220
            try:

                async def partly() -> bool:
                    try:
                        async with StateStore.open(tmp_path / "state", read_only=True) as state:
                            run = await state.last_run("main", "import")
                    except StateStoreError:
                        return False
                    return run is not None and run.done >= 150

                await until(partly, 90, what="a partial import", every=0.05)
            finally:
                agent.send_signal(signal.SIGKILL)
                await asyncio.to_thread(agent.wait, 10)
            agent = subprocess.Popen(cmd, stdout=log, stderr=log, env=dict(os.environ))  # noqa: ASYNC220
            try:
                await until(
                    lambda: settled(tmp_path / "state", "import", "repair"),
                    120,
                    what="the resumed import",
                    every=0.1,
                )
            finally:
                agent.send_signal(signal.SIGTERM)
                await asyncio.to_thread(agent.wait, 30)
        async with StateStore.open(tmp_path / "state", read_only=True) as state:
            run = await state.last_run("main", "import")
            assert run is not None and run.done >= 800
        await assert_hub_equals_store(hub, the_shop)


async def test_sigkill_before_the_first_bulk_page_reuses_the_finished_operation(
    tmp_path: Path, hub: Hub
) -> None:
    # The operation is named in the run's checkpoint as soon as it starts: a crash while it
    # runs or while its file downloads does not throw it away (a new one would read it all
    # again on Shopify's side, and wait for it).
    async with shop(800, bulk_rate=400.0) as the_shop:  # about 2 s of bulk work
        config = _config_file(tmp_path, hub, the_shop, bulk=True)
        cmd = [sys.executable, "-m", "bridge_agent", "--config", str(config),
               "--log-format", "json", "run"]  # fmt: skip
        with (tmp_path / "agent.log").open("ab") as log:
            agent = subprocess.Popen(cmd, stdout=log, stderr=log, env=dict(os.environ))  # noqa: ASYNC220
            try:

                async def named() -> bool:
                    try:
                        async with StateStore.open(tmp_path / "state", read_only=True) as state:
                            run = await state.last_run("main", "import")
                    except StateStoreError:
                        return False
                    token = str((run.checkpoint or {}).get("next") or "") if run else ""
                    return run is not None and token.startswith("bulk:") and run.done == 0

                await until(named, 60, what="the bulk operation in the checkpoint", every=0.02)
            finally:
                agent.send_signal(signal.SIGKILL)
                await asyncio.to_thread(agent.wait, 10)
            agent = subprocess.Popen(cmd, stdout=log, stderr=log, env=dict(os.environ))  # noqa: ASYNC220
            try:
                await until(
                    lambda: settled(tmp_path / "state", "import"),
                    90,
                    what="the resumed import",
                    every=0.1,
                )
            finally:
                agent.send_signal(signal.SIGTERM)
                await asyncio.to_thread(agent.wait, 30)
        assert (await the_shop.stats())["bulk_operations"] == 1  # the same operation, reused
        await assert_hub_equals_store(hub, the_shop)


# -- throttling ------------------------------------------------------------------------------


async def test_incremental_load_on_a_small_bucket_is_never_throttled(
    tmp_path: Path, hub: Hub
) -> None:
    # A bucket of 400 points refilled at 200/s: a burst of re-fetches would drain it at once.
    async with shop(100, bucket_max=400.0, restore_rate=200.0) as the_shop:
        listen = Listen("127.0.0.1", free_port())
        store = the_shop.settings(
            webhook_url=f"http://{listen.host}:{listen.port}/webhooks/shopify/main"
        )
        config = replace(agent_config(tmp_path, hub, store), webhooks=WebhookSettings(listen))
        async with running(config):
            await until(
                lambda: settled(config.agent.state_dir, "import", "repair"),
                120,
                what="the import",
                every=0.1,
            )
            # From here the adapter has seen the bucket (every answer reports it).
            throttled_before = (await the_shop.stats())["throttled"]
            # 40 changes, a burst of webhooks each asking for a re-fetch through the API.
            numbers = [p["legacyResourceId"] for p in the_shop.sim.truth()][:40]
            for n in numbers:
                answer = await the_shop.http.patch(
                    f"/__sim/products/{n}", json={"title": f"Changed {n}"}
                )
                assert answer.status_code == 200, answer.text

            async def changed_at_hub() -> bool:
                at_hub = await hub.products("main")
                return all(
                    at_hub.get(str(n), {}).get("data", {}).get("title") == f"Changed {n}"
                    for n in numbers
                )

            await until(changed_at_hub, 90, what="the changes at the hub", every=0.2)
        stats = await the_shop.stats()
        assert stats["throttled"] == throttled_before, (throttled_before, stats["throttled"])
        assert stats["max_cost_exceeded"] == 0


# -- webhooks --------------------------------------------------------------------------------


def _sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


async def test_webhooks_signed_duplicated_stale_and_inventory_only(
    tmp_path: Path, hub: Hub
) -> None:
    async with shop(120) as the_shop:
        listen = Listen("127.0.0.1", free_port())
        hook_url = f"http://{listen.host}:{listen.port}/webhooks/shopify/main"
        store = the_shop.settings(webhook_url=hook_url)
        config = replace(agent_config(tmp_path, hub, store), webhooks=WebhookSettings(listen))
        async with running(config):
            await until(
                lambda: settled(config.agent.state_dir, "import", "repair"),
                90,
                what="the import",
                every=0.1,
            )
            truth = the_shop.sim.truth()
            first, second = truth[0], truth[1]
            n1, n2 = first["legacyResourceId"], second["legacyResourceId"]

            # A bad signature: refused, nothing recorded.
            body = json.dumps({"id": int(n1), "title": "forged"}).encode()
            async with httpx.AsyncClient(timeout=10) as client:
                refused = await client.post(
                    hook_url,
                    content=body,
                    headers={
                        "X-Shopify-Topic": "products/update",
                        "X-Shopify-Hmac-Sha256": _sign(body, "not-the-secret"),
                        "X-Shopify-Event-Id": "forged-1",
                        "Content-Type": "application/json",
                    },
                )
            assert refused.status_code == 401

            # The store changes twice; the first delivery comes back late (a retry of the
            # original payload): the hub must keep the newer state.
            await the_shop.http.patch(f"/__sim/products/{n1}", json={"title": "First edit"})
            await the_shop.http.patch(f"/__sim/products/{n1}", json={"title": "Second edit"})
            # Duplicates of one event (same X-Shopify-Event-Id) ship once.
            await the_shop.faults(webhook_duplicate_rate=1.0)
            await the_shop.http.patch(f"/__sim/products/{n2}", json={"title": "Once"})
            await the_shop.http.post("/__sim/webhooks/drain")
            await the_shop.faults(webhook_duplicate_rate=0.0)

            # An inventory-only change: no updatedAt bump, only inventory_levels/update.
            variant = second["variants"][0]
            item = variant["inventoryItem"]["id"].rsplit("/", 1)[1]
            answer = await the_shop.http.post(
                "/__sim/inventory", json={"inventory_item_id": int(item), "available": 0}
            )
            assert answer.status_code == 200, answer.text
            await the_shop.http.post("/__sim/webhooks/drain")

            async def arrived() -> bool:
                at_hub = await hub.products("main")
                one = at_hub[str(n1)]["data"]
                two = at_hub[str(n2)]["data"]
                stock = [v.get("stock_quantity") for v in two.get("variants", [])]
                return one["title"] == "Second edit" and two["title"] == "Once" and 0 in stock

            await until(arrived, 60, what="the webhook changes at the hub", every=0.1)
            stats = await the_shop.stats()
            assert stats["webhooks"]["duplicates"] >= 1  # the fault was really injected
        # Every product still equals the store: nothing forged, nothing stale.
        await assert_hub_equals_store(hub, the_shop)
        assert (await hub.products("main"))[str(n1)]["data"]["title"] == "Second edit"
