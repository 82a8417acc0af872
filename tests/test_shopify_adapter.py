"""The Shopify adapter over real HTTP: against the Shopify simulator on 127.0.0.1 (the real Admin
schema, its cost bucket, bulk operations and webhooks), plus Shopify's error answers from a small
aiohttp stand-in for what the simulator does not do (a frozen shop)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from bridge_agent.agent import Agent
from bridge_agent.config import Listen, Secret, StoreSettings, WebhookSettings
from bridge_agent.errors import (
    ConfigError,
    PlatformAuthFailed,
    PlatformError,
    PlatformUnavailable,
)
from bridge_agent.model import Product, settle
from bridge_agent.platforms.base import WebhookDelivery
from bridge_agent.platforms.shopify import Shopify, queries, webhooks
from bridge_agent.platforms.shopify.client import ShopifyQueryError
from bridge_agent.platforms.shopify.mapping import ShopInfo, map_product
from bridge_agent.platforms.shopify.throttle import CostBucket
from bridge_agent.simulators.shopify.app import serve
from bridge_agent.simulators.shopify.sim import ShopifySimulator
from bridge_agent.store import StateStore
from bridge_agent.testing.conformance import ConformanceSubject, PlatformConformance
from bridge_agent.testing.waiting import until
from tests.conftest import Hub, make_config


@dataclass
class Sim:
    sim: ShopifySimulator
    url: str
    http: httpx.AsyncClient  # the control API

    def settings(self, **options: Any) -> StoreSettings:
        secrets = {
            "access_token": Secret(options.pop("token", self.sim.access_token)),
            "webhook_secret": Secret(self.sim.client_secret),
        }
        return StoreSettings(
            id="shop",
            platform="shopify",
            url=self.url,
            secrets=secrets,
            options={"page_size": 100, **options},
        )

    async def truth(self) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = (await self.http.get("/__sim/truth")).json()["products"]
        return docs

    async def stats(self) -> dict[str, Any]:
        doc: dict[str, Any] = (await self.http.get("/__sim/stats")).json()
        return doc

    async def faults(self, **fields: Any) -> None:
        (await self.http.post("/__sim/faults", json=fields)).raise_for_status()


@pytest.fixture
async def shop() -> AsyncIterator[Sim]:
    sim = ShopifySimulator.generate(products=60, seed=5)
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(sim, "127.0.0.1", 0, ready=port.set_result))
    bound = await asyncio.wait_for(port, 30)
    url = f"http://127.0.0.1:{bound}"
    control = httpx.AsyncClient(base_url=url, timeout=30)
    yield Sim(sim, url, control)
    await control.aclose()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await sim.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


def adapter_for(shop: Sim, http: httpx.AsyncClient, **options: Any) -> Shopify:
    adapter = Shopify.from_settings(shop.settings(**options), http)
    adapter._sleep = _short_sleep  # bulk polls: the simulator's operations finish at once
    return adapter


async def _short_sleep(seconds: float) -> None:
    await asyncio.sleep(min(seconds, 0.05))


async def expected(shop: Sim) -> dict[str, dict[str, Any]]:
    """The simulator's truth mapped independently of the adapter's reading path."""
    info = ShopInfo(currency="EUR", public_url=f"https://{shop.sim.shop_domain}")
    out = {}
    for node in await shop.truth():
        mapped, _ = map_product(node, shop=info)
        out[mapped.id] = settle(mapped).to_dict()
    return out


async def read_catalog(adapter: Shopify, resume: str | None = None) -> list[Product]:
    products: list[Product] = []
    async for page in adapter.catalog(resume):
        products.extend(page.products)
    return products


def canonical(products: list[Product]) -> dict[str, dict[str, Any]]:
    return {p.id: settle(p).to_dict() for p in products}


# -- conformance -----------------------------------------------------------------------------


class TestShopifyConformance(PlatformConformance):
    @pytest.fixture
    async def subject(self, shop: Sim, http: httpx.AsyncClient) -> ConformanceSubject:
        ids = {str(d["id"]).rsplit("/", 1)[-1] for d in await shop.truth()}

        async def touch(product_id: str) -> datetime:
            clock = (await shop.http.post("/__sim/clock", json={"freeze": True})).json()
            await shop.http.patch(f"/__sim/products/{product_id}", json={"title": "touched"})
            return datetime.fromtimestamp(float(clock["now"]), UTC)

        return ConformanceSubject(
            platform=adapter_for(shop, http, bulk_import=False, page_size=20),
            expected_ids=ids,
            missing_id="987654",
            with_bad_credentials=adapter_for(shop, http, token="shpat_wrong"),
            touch=touch,
            webhook_headers={
                "X-Shopify-Hmac-Sha256": "bm9wZQ==",
                "X-Shopify-Topic": "products/update",
            },
        )


# -- catalogs ----------------------------------------------------------------------------------


async def test_the_paged_catalog_equals_the_truth(shop: Sim, http: httpx.AsyncClient) -> None:
    adapter = adapter_for(shop, http, bulk_import=False)
    products = await read_catalog(adapter)
    assert canonical(products) == await expected(shop)
    stats = await shop.stats()
    assert stats["throttled"] == 0
    assert stats["max_cost_exceeded"] == 0


async def test_the_bulk_catalog_equals_the_truth_and_resumes(
    shop: Sim, http: httpx.AsyncClient
) -> None:
    adapter = adapter_for(shop, http)
    pages = [page async for page in adapter.catalog()]
    products = [p for page in pages for p in page.products]
    assert canonical(products) == await expected(shop)
    assert (await shop.stats())["bulk"]["operations"] == 1
    small = adapter_for(shop, http)
    small.bulk_page = 25
    first_pages = []
    async for page in small.catalog():
        first_pages.append(page)
        break
    token = first_pages[0].next_token
    assert token is not None
    assert token.startswith("bulk:")
    rest = await read_catalog(adapter_for(shop, http), token)
    ids = [p.id for p in first_pages[0].products] + [p.id for p in rest]
    assert sorted(ids) == sorted(canonical(products))
    # The resumed run reused the finished operation's result: no new one was started.
    assert (await shop.stats())["bulk"]["operations"] == 2


@pytest.mark.parametrize("bulk", [True, False])
async def test_catalogs_under_faults_equal_the_truth(
    shop: Sim, http: httpx.AsyncClient, bulk: bool
) -> None:
    await shop.faults(fail_rate=0.15, fail_statuses=[500, 503, 429], retry_after=0)
    adapter = adapter_for(shop, http, bulk_import=bulk)
    adapter.client.layer._sleep = _short_sleep  # the layer's retry backoff
    products = await read_catalog(adapter)
    await shop.faults(fail_rate=0.0)
    assert canonical(products) == await expected(shop)
    stats = await shop.stats()
    answers = stats["requests"]["POST /admin/api/{version}/graphql.json"]
    if not bulk:  # the same requests in the same order: the seeded faults hit some of them
        assert sum(n for status, n in answers.items() if status != "200") > 0
    assert stats["throttled"] == 0
    assert stats["max_cost_exceeded"] == 0


async def test_a_failed_bulk_operation_falls_back_to_paged_queries(
    shop: Sim, http: httpx.AsyncClient
) -> None:
    await shop.faults(bulk_fail=True)
    adapter = adapter_for(shop, http)
    pages = [page async for page in adapter.catalog()]
    assert canonical([p for page in pages for p in page.products]) == await expected(shop)
    read = [page for page in pages if page.products]  # after the started operation's checkpoint
    assert all(page.next_token is None or page.next_token.startswith("page:") for page in read)


async def test_a_resume_token_of_a_failed_operation_starts_a_new_one(
    shop: Sim, http: httpx.AsyncClient
) -> None:
    adapter = adapter_for(shop, http)
    products = await read_catalog(adapter, "bulk:999999:100")  # an operation Shopify never had
    assert canonical(products) == await expected(shop)


async def test_the_agent_imports_a_shop_by_bulk_operation_under_faults(
    tmp_path: Path, hub: Hub, shop: Sim
) -> None:
    await shop.faults(fail_rate=0.1, retry_after=0)
    store = replace(shop.settings(), id="main", image_checks=False)  # the CDN is not loopback
    config = replace(make_config(tmp_path, hub.url), stores=(store,))
    agent = Agent(config)
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)

        async def imported() -> bool:
            async with StateStore.open(tmp_path / "state", read_only=True) as state:
                run = await state.last_run("main", "import")
                return (
                    run is not None and run.state == "done" and (await state.stats()).pending == 0
                )

        await until(imported, 60, what="the import", every=0.1)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)
    stats = await shop.stats()
    assert stats["bulk"]["operations"] >= 1
    assert stats["throttled"] == 0
    live = {k: v["data"] for k, v in (await hub.products("main")).items() if not v["deleted"]}
    truth = await expected(shop)
    assert set(live) == set(truth)
    differing = [pid for pid, data in truth.items() if live[pid] != data]
    assert not differing, f"{len(differing)} products differ, e.g. {differing[:3]}"


async def test_an_inventory_only_change_reaches_the_hub_by_webhook(
    tmp_path: Path, hub: Hub, shop: Sim
) -> None:
    store = replace(shop.settings(), id="main", image_checks=False)
    listen = WebhookSettings(listen=Listen("127.0.0.1", 0))
    config = replace(make_config(tmp_path, hub.url), stores=(store,), webhooks=listen)
    agent = Agent(config)
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)

        async def listening() -> bool:
            return agent.webhook_port is not None

        await until(listening, 10, what="the webhook listener", every=0.05)
        delivery = f"http://127.0.0.1:{agent.webhook_port}/webhooks/shopify/main"
        async with httpx.AsyncClient(timeout=30) as client:
            actions = await Shopify.from_settings(store, client).register_webhooks(delivery)
        assert {a.action for a in actions} == {"created"}
        truth = await shop.truth()

        async def imported() -> bool:
            return len(await hub.products("main")) >= len(truth)

        await until(imported, 60, what="the import", every=0.1)
        node = truth[0]
        product_id = node["id"].rsplit("/", 1)[-1]
        variant = node["variants"][0]
        item = int(variant["inventoryItem"]["id"].rsplit("/", 1)[-1])
        stock = variant["inventoryQuantity"] + 17
        changed = await shop.http.post(
            "/__sim/inventory", json={"inventory_item_id": item, "available": stock}
        )
        changed.raise_for_status()
        await shop.http.post("/__sim/webhooks/drain")

        async def arrived() -> bool:
            got = (await hub.products("main")).get(product_id)
            variants = got["data"].get("variants", []) if got else []
            return any(v.get("stock_quantity") == stock for v in variants)

        await until(arrived, 30, what="the inventory change", every=0.1)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)


# -- reads -------------------------------------------------------------------------------------


async def test_fetch_products_with_a_deleted_id(shop: Sim, http: httpx.AsyncClient) -> None:
    adapter = adapter_for(shop, http)
    truth = await expected(shop)
    ids = sorted(truth)[:20]
    (await shop.http.delete(f"/__sim/products/{ids[3]}", params={"webhooks": "false"}))
    result = await adapter.fetch_products([*ids, "abc"])
    assert set(result.found) == set(ids) - {ids[3]}
    assert result.missing == {ids[3], "abc"}
    assert not result.failed
    for product_id, product in result.found.items():
        assert settle(product).to_dict() == truth[product_id]
    assert await adapter.fetch_product(ids[3]) is None


async def test_a_product_with_many_variants_and_images_comes_complete(
    shop: Sim, http: httpx.AsyncClient
) -> None:
    variants = [
        {
            "sku": f"BIG-{n}",
            "price": f"{10 + n}.00",
            "selectedOptions": [{"name": "N", "value": str(n)}],
        }
        for n in range(queries.PAGE_FIRST + queries.VARIANTS_FIRST + 5)
    ]
    media = [{"alt": f"view {n}"} for n in range(queries.MEDIA_FIRST * 2)]
    await shop.faults(restore_rate=10_000)  # three full reads: no need to wait for points here
    created = await shop.http.post(
        "/__sim/products", json={"title": "Big", "variants": variants, "media": media}
    )
    created.raise_for_status()
    product_id = str(created.json()["id"]).rsplit("/", 1)[-1]
    truth = (await expected(shop))[product_id]
    adapter = adapter_for(shop, http)
    fetched = await adapter.fetch_product(product_id)
    assert fetched is not None
    assert len(fetched.variants) == len(variants)
    assert len(fetched.images) == min(len(media), adapter.settings.images_max)
    assert settle(fetched).to_dict() == truth
    paged = {p.id: p for p in await read_catalog(adapter_for(shop, http, bulk_import=False))}
    assert settle(paged[product_id]).to_dict() == truth
    bulk = {p.id: p for p in await read_catalog(adapter)}
    assert settle(bulk[product_id]).to_dict() == truth


async def test_modified_since_finds_what_changed(shop: Sim, http: httpx.AsyncClient) -> None:
    adapter = adapter_for(shop, http)
    ids = sorted(await expected(shop))
    clock = (await shop.http.get("/__sim/clock")).json()
    later = datetime.fromtimestamp(float(clock["now"]), UTC) + timedelta(days=1)
    moved = await shop.http.post(
        "/__sim/clock", json={"set": int(later.timestamp()), "freeze": True}
    )
    moved.raise_for_status()
    for product_id in ids[:3]:
        await shop.http.patch(f"/__sim/products/{product_id}", json={"title": "changed"})
    found = [p async for page in adapter.modified_since(later) for p in page]
    assert {p.id for p in found} == set(ids[:3])
    assert all(p.title == "changed" for p in found)


async def test_product_ids_list_the_catalog(shop: Sim, http: httpx.AsyncClient) -> None:
    adapter = adapter_for(shop, http)
    ids = [i async for chunk in adapter.product_ids() for i in chunk]
    assert sorted(ids) == sorted(await expected(shop))


async def test_an_inventory_item_resolves_to_its_product(
    shop: Sim, http: httpx.AsyncClient
) -> None:
    adapter = adapter_for(shop, http)
    node = (await shop.truth())[0]
    variant = node["variants"][0]
    item = variant["inventoryItem"]["id"].rsplit("/", 1)[-1]
    delivery = WebhookDelivery(kind="product", topic="inventory_levels/update", references=(item,))
    assert await adapter.resolve_webhook(delivery) == (node["id"].rsplit("/", 1)[-1],)


async def test_a_wrong_token_is_auth_failed(shop: Sim, http: httpx.AsyncClient) -> None:
    with pytest.raises(PlatformAuthFailed, match="access_token"):
        await adapter_for(shop, http, token="shpat_nope").check()


# -- throttling --------------------------------------------------------------------------------


async def test_a_small_bucket_is_waited_for_never_throttled(
    shop: Sim, http: httpx.AsyncClient
) -> None:
    await shop.faults(bucket_max=1000, restore_rate=2000)
    adapter = adapter_for(shop, http, bulk_import=False)
    await adapter.check()  # the bucket is seen once
    for _ in range(3):
        assert await read_catalog(adapter)
    stats = await shop.stats()
    assert stats["throttled"] == 0
    assert stats["max_cost_exceeded"] == 0


# -- webhooks ----------------------------------------------------------------------------------


async def test_webhook_registration_is_idempotent(shop: Sim, http: httpx.AsyncClient) -> None:
    adapter = adapter_for(shop, http)
    url = "https://agent.example.com/webhooks/shopify/shop"
    first = await adapter.register_webhooks(url)
    assert sorted(a.topic for a in first) == sorted(webhooks.TOPICS)
    assert {a.action for a in first} == {"created"}
    again = await adapter.register_webhooks(url)
    assert {a.action for a in again} == {"unchanged"}
    assert await adapter.reactivate_disabled_webhooks(url) == []


async def test_a_registered_webhook_verifies(shop: Sim, http: httpx.AsyncClient) -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(text="ok")

    url, runner = await _listen(hook)
    try:
        adapter = adapter_for(shop, http)
        await adapter.register_webhooks(url)
        product_id = sorted(await expected(shop))[0]
        await shop.http.patch(f"/__sim/products/{product_id}", json={"title": "hooked"})
        await shop.http.post("/__sim/webhooks/drain")
        await until(lambda: bool(received), 10, what="a webhook delivery")
        headers, body = received[0]
        delivery = adapter.verify_webhook(headers, body)
        assert delivery.product_ids == (product_id,)
        assert delivery.delivery_id == headers.get("X-Shopify-Event-Id")
    finally:
        await runner.cleanup()


async def test_webhook_url_without_a_secret_is_a_configuration_error(shop: Sim) -> None:
    settings = shop.settings(webhook_url="https://agent.example.com/hook")
    settings = StoreSettings(
        id=settings.id,
        platform="shopify",
        url=settings.url,
        secrets={"access_token": Secret("shpat_x")},
        options=settings.options,
    )
    async with httpx.AsyncClient() as client:
        with pytest.raises(ConfigError, match="webhook_secret"):
            Shopify.from_settings(settings, client)


def test_plain_http_is_for_loopback_only() -> None:
    settings = StoreSettings(
        id="s",
        platform="shopify",
        url="http://acme.myshopify.com",
        secrets={"access_token": Secret("shpat_x")},
        options={},
    )
    with pytest.raises(ConfigError, match="https"):
        Shopify.from_settings(settings, httpx.AsyncClient())


# -- Shopify's error answers (a stand-in server) -----------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _listen(handler: Handler) -> tuple[str, web.AppRunner]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return f"http://127.0.0.1:{port}", runner


def _stand_in(url: str, http: httpx.AsyncClient) -> Shopify:
    settings = StoreSettings(
        id="s", platform="shopify", url=url, secrets={"access_token": Secret("shpat_t")}, options={}
    )
    adapter = Shopify.from_settings(settings, http)
    adapter.client._sleep = _short_sleep
    adapter.client.layer._sleep = _short_sleep
    return adapter


_COST = {
    "requestedQueryCost": 2,
    "actualQueryCost": 2,
    "throttleStatus": {"maximumAvailable": 1000.0, "currentlyAvailable": 998, "restoreRate": 50.0},
}
_SHOP = {"shop": {"name": "x", "currencyCode": "USD", "primaryDomain": {"url": "https://x.com"}}}


@pytest.mark.parametrize(
    ("status", "body", "error", "says"),
    [
        (401, {"errors": "[API] Invalid API key or access token"}, PlatformAuthFailed, "access"),
        (403, {"errors": "Forbidden"}, PlatformAuthFailed, "read_products"),
        (402, {"errors": "Unavailable Shop"}, PlatformUnavailable, "frozen"),
        (423, {"errors": "Locked"}, PlatformUnavailable, "locked"),
        (
            200,
            {
                "errors": [
                    {
                        "message": "Query cost is 1723, which exceeds the single query max "
                        "cost limit (1000).",
                        "extensions": {"code": "MAX_COST_EXCEEDED"},
                    }
                ]
            },
            ShopifyQueryError,
            "bug",
        ),
        (
            200,
            {"errors": [{"message": "Field 'x' doesn't exist on type 'Shop'"}]},
            ShopifyQueryError,
            "doesn't exist",
        ),
    ],
)
async def test_shopify_errors_say_what_to_do(
    http: httpx.AsyncClient, status: int, body: Any, error: type[PlatformError], says: str
) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        assert request.headers["X-Shopify-Access-Token"] == "shpat_t"
        return web.json_response(body, status=status)

    url, runner = await _listen(handler)
    try:
        with pytest.raises(error, match=says) as raised:
            await _stand_in(url, http).check()
        assert "shpat_t" not in str(raised.value)
        assert calls == 1  # none of these is retried
        if status in (402, 423):
            assert raised.value.retry_after is not None  # type: ignore[attr-defined]
            assert not raised.value.permanent
    finally:
        await runner.cleanup()


async def test_throttled_waits_for_the_points_then_retries(http: httpx.AsyncClient) -> None:
    answers = [
        {
            "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
            "extensions": {
                "cost": {
                    "requestedQueryCost": 100,
                    "actualQueryCost": None,
                    "throttleStatus": {
                        "maximumAvailable": 1000.0,
                        "currentlyAvailable": 0,
                        "restoreRate": 50.0,
                    },
                }
            },
        },
        {"data": _SHOP, "extensions": {"cost": _COST}},
    ]

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(answers.pop(0))

    url, runner = await _listen(handler)
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    try:
        adapter = _stand_in(url, http)
        adapter.client._sleep = sleep
        adapter.client.bucket = CostBucket(clock=lambda: now[0], sleep=sleep)
        await adapter.check()
        assert slept == [pytest.approx(100 / 50)]  # (requested - available) / restoreRate
        assert adapter.client.throttled == 1
        assert (await adapter.shop()).currency == "USD"
    finally:
        await runner.cleanup()


async def test_a_bulk_result_cut_short_is_downloaded_again(
    http: httpx.AsyncClient, tmp_path: Any
) -> None:
    downloads = 0
    lines = [
        json.dumps(
            {
                "id": "gid://shopify/ProductVariant/11",
                "price": "1.00",
                "position": 1,
                "__parentId": "gid://shopify/Product/1",
            }
        ),
        json.dumps({"id": "gid://shopify/Product/1", "title": "One", "status": "ACTIVE"}),
        json.dumps({"id": "gid://shopify/Product/2", "title": "Two", "status": "DRAFT"}),
    ]
    whole = ("\n".join(lines) + "\n").encode()
    operation = {
        "id": "gid://shopify/BulkOperation/7",
        "status": "COMPLETED",
        "errorCode": None,
        "rootObjectCount": "2",
    }

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal downloads
        if request.path == "/result.jsonl":
            downloads += 1
            assert "X-Shopify-Access-Token" not in request.headers
            return web.Response(body=whole[:-30] if downloads == 1 else whole)
        doc = await request.json()
        name = doc["operationName"]
        if name == "BulkProducts":
            data: Any = {
                "bulkOperationRunQuery": {
                    "bulkOperation": {"id": operation["id"], "status": "CREATED"},
                    "userErrors": [],
                }
            }
        elif name == "BulkOperation":
            data = {"node": {**operation, "url": f"{base}/result.jsonl"}}
        else:
            data = _SHOP
        return web.json_response({"data": data, "extensions": {"cost": _COST}})

    base, runner = await _listen(handler)
    try:
        adapter = _stand_in(base, http)
        adapter._sleep = _short_sleep
        adapter._spool_dir = str(tmp_path)
        pages = [page async for page in adapter.catalog()]
        assert downloads == 2
        assert [p.id for page in pages for p in page.products] == ["1", "2"]
        assert next(p for page in pages for p in page.products).variants[0].id == "11"
        assert pages[-1].next_token is None
    finally:
        await runner.cleanup()


async def test_an_expired_result_url_starts_a_new_operation(
    http: httpx.AsyncClient, tmp_path: Any
) -> None:
    started: list[str] = []
    body = json.dumps({"id": "gid://shopify/Product/1", "title": "One", "status": "ACTIVE"})

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/gone.jsonl":
            return web.Response(status=403, text="<Error>AccessDenied: Request has expired</Error>")
        if request.path == "/fresh.jsonl":
            return web.Response(text=body + "\n")
        doc = await request.json()
        name = doc["operationName"]
        if name == "BulkProducts":
            started.append(f"gid://shopify/BulkOperation/{len(started) + 8}")
            data: Any = {
                "bulkOperationRunQuery": {
                    "bulkOperation": {"id": started[-1], "status": "CREATED"},
                    "userErrors": [],
                }
            }
        elif name == "BulkOperation":
            asked = doc["variables"]["id"]
            path = "/fresh.jsonl" if asked in started else "/gone.jsonl"
            data = {"node": {"id": asked, "status": "COMPLETED", "url": f"{base}{path}"}}
        else:
            data = _SHOP
        return web.json_response({"data": data, "extensions": {"cost": _COST}})

    base, runner = await _listen(handler)
    try:
        adapter = _stand_in(base, http)
        adapter._sleep = _short_sleep
        adapter._spool_dir = str(tmp_path)
        # A run that crashed after 40 products of operation 7, whose result URL has expired.
        pages = [page async for page in adapter.catalog("bulk:7:40")]
        assert started == ["gid://shopify/BulkOperation/8"]
        assert [p.id for page in pages for p in page.products] == ["1"]
    finally:
        await runner.cleanup()


def test_every_query_the_adapter_sends_is_in_queries() -> None:
    documents = {d for d, _ in queries.DOCUMENTS.values()}
    sent = {
        getattr(queries, name)
        for name in dir(queries)
        if name.isupper() and not name.startswith("_") and isinstance(getattr(queries, name), str)
    }
    assert sent <= documents
