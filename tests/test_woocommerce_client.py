"""The WooCommerce adapter and client against a small fake wc/v3 server (aiohttp, loopback).

The fake checks OAuth 1.0a signatures itself (its own implementation of RFC 5849, not the
client's), pages like WooCommerce (`X-WP-Total`, `X-WP-TotalPages`, exclusive `modified_after`,
`status=any` without trash) and can be told to misbehave per path.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge_agent.config import Secret, StoreSettings
from bridge_agent.errors import (
    BadWebhook,
    ConfigError,
    Outcome,
    PagingLoop,
    PlatformAmbiguous,
    PlatformAuthFailed,
    PlatformUnavailable,
    ProductNotFound,
)
from bridge_agent.model import Product
from bridge_agent.platforms import Platform, load
from bridge_agent.platforms.base import CatalogPage
from bridge_agent.platforms.woocommerce import WooCommerce
from bridge_agent.platforms.woocommerce.client import WooClient, WooRequestRejected
from bridge_agent.platforms.woocommerce.settings import WooSettings
from bridge_agent.sync.retry import Backoff

KEY = "ck_LEAKCHECK_4b1d0c8e"
SECRET = "cs_LEAKCHECK_77aa21f3"
HOOK_SECRET = "whsec_LEAKCHECK_0e5c"
PREFIX = "/wp-json/wc/v3"
LEAKS = (KEY, SECRET, HOOK_SECRET)


def no_leak(text: str) -> None:
    for value in LEAKS:
        assert value not in text, f"secret leaked into: {text}"


# --- the fake store -------------------------------------------------------------------------------


def make_product(pid: int, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": pid,
        "name": f"Product {pid}",
        "slug": f"product-{pid}",
        "permalink": f"https://shop.example.com/product/product-{pid}/",
        "type": "simple",
        "status": "publish",
        "date_modified_gmt": "2024-05-01T08:00:00",
        "sku": f"SKU-{pid}",
        "price": "10.00",
        "regular_price": "10.00",
        "sale_price": "",
        "stock_status": "instock",
        "stock_quantity": None,
        "categories": [{"id": 16, "name": "Hoodies", "slug": "hoodies"}],
        "tags": [],
        "images": [{"id": 1000 + pid, "src": f"https://shop.example.com/{pid}.jpg", "alt": ""}],
        "attributes": [],
        "variations": [],
        "meta_data": [],
        "average_rating": "0.00",
        "rating_count": 0,
        "parent_id": 0,
    }
    data.update(changes)
    return data


def error(status: int, code: str, message: str = "error") -> web.Response:
    return web.json_response(
        {"code": code, "message": message, "data": {"status": status}}, status=status
    )


Fault = Callable[[], web.StreamResponse]


@dataclass
class Seen:
    method: str
    path: str  # relative to the API prefix
    query: dict[str, str]  # without the oauth_* parameters
    oauth: dict[str, str]
    authorization: str | None


@dataclass
class FakeWoo:
    """A wc/v3 store: products, variations, categories, webhooks; OAuth 1.0a checked."""

    products: dict[int, dict[str, Any]] = field(default_factory=dict)
    variations: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    categories: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"id": 9, "name": "Clothing", "parent": 0},
            {"id": 15, "name": "Men", "parent": 9},
            {"id": 16, "name": "Hoodies", "parent": 15},
        ]
    )
    webhooks: dict[int, dict[str, Any]] = field(default_factory=dict)
    key: str = KEY
    secret: str = SECRET
    faults: dict[str, list[Fault]] = field(default_factory=dict)  # by API path
    delay: Callable[[Seen], float] | None = None
    after_list: Callable[[Seen], None] | None = None
    seen: list[Seen] = field(default_factory=list)
    nonces: set[str] = field(default_factory=set)
    in_flight: int = 0
    max_in_flight: int = 0

    def fail(self, path: str, *answers: Fault) -> None:
        self.faults.setdefault(path, []).extend(answers)

    def requests(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.middleware])
        app.router.add_get(PREFIX + "/products", self.list_products)
        app.router.add_get(PREFIX + "/products/categories", self.list_categories)
        app.router.add_get(PREFIX + r"/products/{id:\d+}", self.get_product)
        app.router.add_get(PREFIX + r"/products/{id:\d+}/variations", self.list_variations)
        app.router.add_get(PREFIX + "/webhooks", self.list_webhooks)
        app.router.add_post(PREFIX + "/webhooks", self.create_webhook)
        app.router.add_put(PREFIX + r"/webhooks/{id:\d+}", self.update_webhook)
        app.router.add_route("*", "/{tail:.*}", self.no_route)
        return app

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        query = dict(request.query)
        oauth = {k: query.pop(k) for k in list(query) if k.startswith("oauth_")}
        path = request.path.removeprefix(PREFIX)
        seen = Seen(request.method, path, query, oauth, request.headers.get("Authorization"))
        self.seen.append(seen)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            refused = self.authenticate(request)
            if refused is not None:
                return refused
            if self.delay is not None:
                await asyncio.sleep(self.delay(seen))
            queue = self.faults.get(path)
            if queue:
                return queue.pop(0)()
            return await handler(request)
        finally:
            self.in_flight -= 1

    def authenticate(self, request: web.Request) -> web.Response | None:
        """WooCommerce over plain http: only OAuth 1.0a one-legged, checked per RFC 5849."""
        params = list(request.query.items())
        given = dict(params)
        if "oauth_signature" not in given:
            return error(401, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")
        if given.get("oauth_consumer_key") != self.key:
            return error(401, "woocommerce_rest_authentication_error", "Consumer key is invalid.")
        if abs(time.time() - int(given.get("oauth_timestamp", "0"))) > 15 * 60:
            return error(401, "woocommerce_rest_authentication_error", "Invalid timestamp.")
        nonce = given.get("oauth_nonce", "")
        if len(nonce) != 32 or nonce in self.nonces:
            return error(401, "woocommerce_rest_authentication_error", "Invalid nonce.")
        self.nonces.add(nonce)

        def pct(text: str) -> str:
            return quote(text, safe="~")

        signed = sorted((pct(k), pct(v)) for k, v in params if k != "oauth_signature")
        base_uri = f"{request.scheme}://{request.host}{request.path}"
        base = "&".join(
            [request.method, pct(base_uri), pct("&".join(f"{k}={v}" for k, v in signed))]
        )
        method = given.get("oauth_signature_method", "")
        algorithm = {"HMAC-SHA256": hashlib.sha256, "HMAC-SHA1": hashlib.sha1}.get(method)
        if algorithm is None:
            return error(401, "woocommerce_rest_authentication_error", "Invalid method.")
        digest = hmac.new(f"{self.secret}&".encode(), base.encode(), algorithm).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode(), given["oauth_signature"]):
            return error(
                401,
                "woocommerce_rest_authentication_error",
                "Invalid signature - provided signature does not match.",
            )
        return None

    def page(
        self, request: web.Request, items: list[dict[str, Any]], *, default_per_page: int = 10
    ) -> web.Response:
        try:
            page = int(request.query.get("page", "1"))
            per_page = int(request.query.get("per_page", str(default_per_page)))
        except ValueError:
            return error(400, "rest_invalid_param", "Invalid parameter(s): page")
        if not 1 <= per_page <= 100 or page < 1:
            return error(400, "rest_invalid_param", "Invalid parameter(s): per_page")
        total = len(items)
        chunk = items[(page - 1) * per_page : page * per_page]
        fields = request.query.get("_fields")
        if fields:
            wanted = set(fields.split(",")) | {"id"}
            chunk = [{k: v for k, v in i.items() if k in wanted} for i in chunk]
        pages = -(-total // per_page)
        return web.json_response(
            chunk, headers={"X-WP-Total": str(total), "X-WP-TotalPages": str(pages)}
        )

    async def list_products(self, request: web.Request) -> web.Response:
        status = request.query.get("status", "any")
        items = [
            p
            for p in self.products.values()
            if (p["status"] == "trash") == (status == "trash")
            and (status in ("any", "trash") or p["status"] == status)
        ]
        after = request.query.get("modified_after")
        if after is not None:
            assert request.query.get("dates_are_gmt") == "true"
            items = [p for p in items if p["date_modified_gmt"] > after]  # exclusive, as WC
        if request.query.get("orderby") == "modified":
            items.sort(key=lambda p: (p["date_modified_gmt"], p["id"]))
        else:
            items.sort(key=lambda p: p["id"])
        if request.query.get("order", "desc") == "desc":
            items.reverse()
        response = self.page(request, items)
        if self.after_list is not None:
            self.after_list(self.seen[-1])
        return response

    async def get_product(self, request: web.Request) -> web.Response:
        found = self.products.get(int(request.match_info["id"]))
        if found is None:
            return error(404, "woocommerce_rest_product_invalid_id", "Invalid ID.")
        return web.json_response(found)

    async def list_variations(self, request: web.Request) -> web.Response:
        pid = int(request.match_info["id"])
        if pid not in self.products:
            return error(404, "woocommerce_rest_product_invalid_id", "Invalid ID.")
        return self.page(request, self.variations.get(pid, []))

    async def list_categories(self, request: web.Request) -> web.Response:
        return self.page(request, sorted(self.categories, key=lambda c: c["id"]))

    async def list_webhooks(self, request: web.Request) -> web.Response:
        return self.page(request, list(self.webhooks.values()))

    async def create_webhook(self, request: web.Request) -> web.Response:
        body = await request.json()
        hook_id = max(self.webhooks, default=0) + 1
        self.webhooks[hook_id] = {"id": hook_id, **body}
        visible = {k: v for k, v in self.webhooks[hook_id].items() if k != "secret"}
        return web.json_response(visible, status=201)

    async def update_webhook(self, request: web.Request) -> web.Response:
        hook = self.webhooks[int(request.match_info["id"])]
        hook.update(await request.json())
        return web.json_response({k: v for k, v in hook.items() if k != "secret"})

    async def no_route(self, request: web.Request) -> web.Response:
        return error(404, "rest_no_route", "No route was found matching the URL and request method")


@dataclass
class Kit:
    fake: FakeWoo
    server: TestServer
    http: httpx.AsyncClient
    sleeps: list[float]

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def settings(self, **changes: Any) -> WooSettings:
        values: dict[str, Any] = {
            "store_id": "main",
            "base_url": self.url,
            "consumer_key": Secret(KEY),
            "consumer_secret": Secret(SECRET),
            "webhook_secret": Secret(HOOK_SECRET),
            "per_page": 10,
            "concurrency": 3,
        }
        values.update(changes)
        return WooSettings(**values)

    def client(self, **changes: Any) -> WooClient:
        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        return WooClient(
            self.settings(**changes), self.http, backoff=Backoff(base=0.01, cap=0.05), sleep=sleep
        )

    def adapter(self, **changes: Any) -> WooCommerce:
        client = self.client(**changes)
        return WooCommerce(client._settings, client)


@pytest.fixture
async def kit() -> AsyncIterator[Kit]:
    fake = FakeWoo()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    async with httpx.AsyncClient(timeout=5.0) as http:
        yield Kit(fake, server, http, [])
    await server.close()


async def collect(pages: AsyncIterator[CatalogPage]) -> list[CatalogPage]:
    return [page async for page in pages]


# --- settings -------------------------------------------------------------------------------------


def test_from_settings_lists_every_problem_without_secrets() -> None:
    settings = StoreSettings(
        id="main",
        platform="woocommerce",
        url="ftp://shop.example.com",
        concurrency=0,
        secrets={"consumer_secret": Secret(SECRET)},
        options={"per_page": 250, "api_prefix": "wp-json", "seo_plugin": "yoastish"},
    )
    with pytest.raises(ConfigError) as caught:
        WooCommerce.from_settings(settings, httpx.AsyncClient())
    text = "\n".join(caught.value.problems)
    for part in ("url", "per_page", "api_prefix", "concurrency", "consumer_key", "seo_plugin"):
        assert part in text
    assert len(caught.value.problems) == 6
    no_leak(str(caught.value))


def test_registry_loads_the_adapter_and_repr_hides_secrets() -> None:
    assert load("woocommerce") is WooCommerce
    settings = StoreSettings(
        id="main",
        platform="woocommerce",
        url="https://shop.example.com/",
        secrets={"consumer_key": Secret(KEY), "consumer_secret": Secret(SECRET)},
        options={"api_prefix": "/wp-json/wc/v3", "per_page": 100, "verify_tls": True},
    )
    adapter = WooCommerce.from_settings(settings, httpx.AsyncClient())
    platform: Platform = adapter  # structurally a Platform (checked by mypy)
    assert platform.name == "woocommerce"
    assert adapter.settings.api_base == "https://shop.example.com/wp-json/wc/v3"
    assert not adapter.settings.uses_oauth
    for text in (repr(adapter), repr(adapter.settings), repr(adapter.client)):
        no_leak(text)


# --- auth -----------------------------------------------------------------------------------------


def test_basic_auth_over_https_and_oauth_over_http() -> None:
    def settings(url: str) -> WooSettings:
        return WooSettings("main", url, Secret(KEY), Secret(SECRET))

    http = httpx.AsyncClient()
    https = WooClient(settings("https://shop.example.com"), http).build_request(
        "GET", "/products", {"per_page": 1}
    )
    assert https.url == "https://shop.example.com/wp-json/wc/v3/products?per_page=1"
    expected = base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    assert https.headers["Authorization"] == f"Basic {expected}"

    plain = WooClient(settings("http://shop.example.com"), http).build_request(
        "GET", "/products", {"per_page": 1}
    )
    assert "Authorization" not in plain.headers
    query = dict(parse_qsl(urlsplit(str(plain.url)).query))
    assert query["oauth_consumer_key"] == KEY
    assert query["oauth_signature_method"] == "HMAC-SHA256"
    assert len(query["oauth_nonce"]) == 32
    assert abs(int(query["oauth_timestamp"]) - time.time()) < 60
    assert "oauth_version" not in query
    assert SECRET not in str(plain.url)


async def test_oauth_signature_is_accepted_by_an_independent_check(kit: Kit) -> None:
    kit.fake.products = {1: make_product(1)}
    await kit.adapter().check()
    (seen,) = kit.fake.requests("/products")
    assert seen.query == {"context": "edit", "per_page": "1", "_fields": "id"}
    assert set(seen.oauth) == {
        "oauth_consumer_key",
        "oauth_nonce",
        "oauth_signature_method",
        "oauth_timestamp",
        "oauth_signature",
    }
    assert seen.authorization is None


async def test_every_retry_is_signed_with_a_fresh_nonce(kit: Kit) -> None:
    kit.fake.fail("/products", lambda: error(503, "unavailable"))
    await kit.adapter().check()
    nonces = [s.oauth["oauth_nonce"] for s in kit.fake.requests("/products")]
    assert len(nonces) == 2
    assert len(set(nonces)) == 2


async def test_a_wrong_secret_is_auth_failed_and_never_shown(kit: Kit) -> None:
    kit.fake.secret = "cs_the_store_has_another_one"
    with pytest.raises(PlatformAuthFailed) as caught:
        await kit.adapter().check()
    text = str(caught.value)
    assert "check consumer_key/consumer_secret" in text
    assert "woocommerce_rest_authentication_error" in text
    assert "signature does not match" in text
    no_leak(text)
    assert len(kit.fake.seen) == 1  # auth failures are not retried


# --- error mapping --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "kind", "fragment"),
    [
        (
            lambda: error(401, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources."),
            PlatformAuthFailed,
            "WooCommerce refused the consumer key (401 woocommerce_rest_cannot_view): "
            "check consumer_key/consumer_secret",
        ),
        (
            lambda: error(403, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources."),
            PlatformAuthFailed,
            "the key needs read permission",
        ),
        (
            lambda: error(404, "rest_no_route", "No route was found"),
            PlatformUnavailable,
            "check the store url and api_prefix, and that WordPress permalinks are not 'Plain'",
        ),
        (
            lambda: web.Response(status=404, text="<html>Not Found</html>"),
            PlatformUnavailable,
            "api_prefix",
        ),
        (
            lambda: web.Response(status=200, text="<html><body>Maintenance</body></html>"),
            PlatformUnavailable,
            "invalid JSON from 127.0.0.1",
        ),
        (
            lambda: web.Response(status=200, text='<br />\n<b>Notice</b>: x\n[{"id": 1}]'),
            PlatformUnavailable,
            "WP_DEBUG_DISPLAY",
        ),
        (
            lambda: web.Response(
                status=301,
                headers={"Location": f"https://www.example.com/x?oauth_consumer_key={KEY}"},
            ),
            PlatformUnavailable,
            "to https://www.example.com (301): set the store url to the site's home URL",
        ),
        (
            lambda: error(400, "rest_invalid_param", "Invalid parameter(s): per_page"),
            WooRequestRejected,
            "(400 rest_invalid_param)",
        ),
    ],
)
async def test_error_mapping(kit: Kit, answer: Fault, kind: type[Exception], fragment: str) -> None:
    kit.fake.fail("/products", answer)
    with pytest.raises(kind) as caught:
        await kit.adapter().check()
    assert fragment in str(caught.value)
    no_leak(str(caught.value))
    assert len(kit.fake.seen) == 1  # none of these is worth a retry


async def test_403_on_a_write_asks_for_read_write(kit: Kit) -> None:
    kit.fake.fail("/webhooks", lambda: error(403, "woocommerce_rest_cannot_create"))
    with pytest.raises(PlatformAuthFailed) as caught:
        await kit.client().post("/webhooks", {"topic": "product.updated"})
    assert "read_write permission for writes" in str(caught.value)


async def test_413_is_a_batch_error(kit: Kit) -> None:
    kit.fake.fail(
        "/products/batch",
        lambda: error(413, "woocommerce_rest_request_entity_too_large", "Unable to accept more"),
    )
    with pytest.raises(WooRequestRejected) as caught:
        await kit.client().post("/products/batch", {"update": []})
    assert caught.value.status == 413
    assert "at most 100 items" in str(caught.value)


async def test_missing_products_are_none_and_not_found(kit: Kit) -> None:
    kit.fake.products = {5: make_product(5)}
    adapter = kit.adapter()
    assert await adapter.fetch_product("404") is None
    assert await adapter.fetch_product("not-an-id") is None
    with pytest.raises(ProductNotFound):
        await adapter.client.get("/products/404")


async def test_429_retry_after_is_honoured_then_success(kit: Kit) -> None:
    kit.fake.products = {1: make_product(1)}
    kit.fake.fail("/products", lambda: web.Response(status=429, headers={"Retry-After": "3"}))
    await kit.adapter().check()
    assert len(kit.fake.requests("/products")) == 2
    assert len(kit.sleeps) == 1
    assert 3.0 <= kit.sleeps[0] <= 4.0


async def test_500_then_success_is_retried(kit: Kit) -> None:
    kit.fake.products = {7: make_product(7)}
    kit.fake.fail(
        "/products/7", lambda: error(500, "internal_server_error"), lambda: web.Response(status=502)
    )
    product = await kit.adapter().fetch_product("7")
    assert product is not None
    assert product.id == "7"
    assert len(kit.fake.requests("/products/7")) == 3
    assert len(kit.sleeps) == 2


async def test_retries_are_bounded(kit: Kit) -> None:
    kit.fake.fail("/products", *[lambda: web.Response(status=503)] * 10)
    with pytest.raises(PlatformUnavailable) as caught:
        await kit.adapter().check()
    assert "503" in str(caught.value)
    assert len(kit.fake.requests("/products")) == 4


async def test_a_long_retry_after_goes_to_the_caller(kit: Kit) -> None:
    kit.fake.fail("/products", lambda: web.Response(status=429, headers={"Retry-After": "600"}))
    with pytest.raises(PlatformUnavailable) as caught:
        await kit.adapter().check()
    assert caught.value.retry_after == 600.0
    assert kit.sleeps == []


async def test_connection_refused_is_unavailable(kit: Kit) -> None:
    settings = kit.settings(base_url="http://127.0.0.1:9")
    client = WooClient(settings, kit.http, backoff=Backoff(0.001, 0.002), attempts=2)
    with pytest.raises(PlatformUnavailable) as caught:
        await WooCommerce(settings, client).check()
    assert "cannot reach WooCommerce at 127.0.0.1:9 for GET /wp-json/wc/v3/products" in str(
        caught.value
    )
    no_leak(str(caught.value))


# --- paging ---------------------------------------------------------------------------------------


def catalog_of(fake: FakeWoo, count: int) -> None:
    fake.products = {pid: make_product(pid) for pid in range(1, count + 1)}
    # Every 7th product is variable, with two variations (one of them disabled).
    for pid in range(7, count + 1, 7):
        fake.products[pid].update(type="variable", variations=[pid * 100 + 1, pid * 100 + 2])
        fake.variations[pid] = [
            {
                "id": pid * 100 + 1,
                "status": "publish",
                "price": "9.00",
                "stock_status": "instock",
                "attributes": [{"id": 1, "name": "Size", "option": "M"}],
            },
            {
                "id": pid * 100 + 2,
                "status": "private",
                "price": "8.00",
                "stock_status": "instock",
                "attributes": [{"id": 1, "name": "Size", "option": "L"}],
            },
        ]


async def test_catalog_pages_concurrently_and_in_order(kit: Kit) -> None:
    catalog_of(kit.fake, 47)

    def later_pages_answer_first(seen: Seen) -> float:
        if seen.path == "/products":
            return (12 - int(seen.query.get("page", "1"))) * 0.01
        return 0.0

    kit.fake.delay = later_pages_answer_first
    adapter = kit.adapter(per_page=5, concurrency=3)
    pages = await collect(adapter.catalog())

    assert [p.next_token for p in pages] == [*[str(n) for n in range(2, 11)], None]
    assert {p.total for p in pages} == {47}
    ids = [product.id for page in pages for product in page.products]
    assert ids == [str(n) for n in range(1, 48)]
    assert 2 <= kit.fake.max_in_flight <= 3  # concurrent, within the configured bound
    variable = next(p for page in pages for p in page.products if p.id == "14")
    assert [v.id for v in variable.variants] == ["1401"]  # the disabled one is left out
    assert variable.categories[0].path == ("Clothing", "Men", "Hoodies")
    assert all(
        s.query["orderby"] == "id" and s.query["order"] == "asc"
        for s in kit.fake.requests("/products")
    )
    assert all(s.query["status"] == "any" for s in kit.fake.requests("/products"))


async def test_catalog_resumes_from_the_token_page(kit: Kit) -> None:
    catalog_of(kit.fake, 47)
    pages = await collect(kit.adapter(per_page=5).catalog("9"))
    assert [p.next_token for p in pages] == ["10", None]
    assert [p.id for page in pages for p in page.products] == [str(n) for n in range(41, 48)]
    assert sorted(s.query["page"] for s in kit.fake.requests("/products")) == ["10", "9"]


async def test_an_empty_store_is_one_empty_page(kit: Kit) -> None:
    pages = await collect(kit.adapter().catalog())
    assert pages == [CatalogPage(products=[], next_token=None, total=0)]


async def test_repeated_timeouts_halve_per_page(kit: Kit) -> None:
    catalog_of(kit.fake, 60)

    def slow_big_pages(seen: Seen) -> float:
        big = int(seen.query.get("per_page", "0")) > 25
        return 0.6 if big and seen.path == "/products" else 0.0

    kit.fake.delay = slow_big_pages
    async with httpx.AsyncClient(timeout=0.2) as http:
        kit.http = http
        adapter = kit.adapter(per_page=50, concurrency=1)
        pages = await collect(adapter.catalog())
    assert adapter.effective_per_page == 25
    # Tokens stay in the configured page unit (50), whatever size the requests shrank to.
    assert [p.next_token for p in pages] == ["2", None]
    assert [p.id for page in pages for p in page.products] == [str(n) for n in range(1, 61)]
    sizes = [s.query["per_page"] for s in kit.fake.requests("/products")]
    assert sizes[:2] == ["50", "50"]  # two timeouts...
    assert set(sizes[2:]) == {"25"}  # ...then only smaller requests


async def test_modified_since_includes_the_boundary_second(kit: Kit) -> None:
    kit.fake.products = {
        1: make_product(1, date_modified_gmt="2024-05-01T09:59:58"),
        2: make_product(2, date_modified_gmt="2024-05-01T10:00:00"),  # the boundary second
        3: make_product(3, date_modified_gmt="2024-05-01T10:00:01"),
        4: make_product(4, date_modified_gmt="2024-05-01T10:30:00", status="trash"),
        5: make_product(5, date_modified_gmt="2024-05-01T11:00:00", status="draft"),
    }
    since = datetime(2024, 5, 1, 10, 0, 0, 250_000, tzinfo=UTC)
    batches = [b async for b in kit.adapter().modified_since(since)]
    got = {p.id: p.status for batch in batches for p in batch}
    assert got == {"2": "active", "3": "active", "5": "draft", "4": "archived"}
    first = kit.fake.requests("/products")[0].query
    assert first["modified_after"] == "2024-05-01T09:59:59"  # since - 1 s: WC compares with >
    assert first["dates_are_gmt"] == "true"
    assert (first["orderby"], first["order"], first["status"]) == ("modified", "asc", "any")


async def test_modified_since_skips_nothing_when_products_change_while_paging(kit: Kit) -> None:
    kit.fake.products = {
        pid: make_product(pid, date_modified_gmt=f"2024-05-01T10:00:{pid:02d}")
        for pid in range(1, 26)
    }
    touched = False

    def edit_product_2_after_first_page(seen: Seen) -> None:
        nonlocal touched
        if not touched and seen.query.get("status") == "any":
            touched = True  # product 2 moves to the end: by page number, product 11 is skipped
            kit.fake.products[2]["date_modified_gmt"] = "2024-05-01T10:05:00"

    kit.fake.after_list = edit_product_2_after_first_page
    since = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)
    ids = [p.id async for batch in kit.adapter(per_page=10).modified_since(since) for p in batch]
    assert set(ids) == {str(n) for n in range(1, 26)}
    assert ids.count("2") == 2  # seen before and after its change


async def test_product_ids_pages_ids_only_without_trash(kit: Kit) -> None:
    catalog_of(kit.fake, 230)
    kit.fake.products[3]["status"] = "trash"
    pages = [page async for page in kit.adapter().product_ids()]
    assert [len(p) for p in pages] == [100, 100, 29]
    flat = [i for page in pages for i in page]
    assert "3" not in flat
    assert flat == [str(n) for n in range(1, 231) if n != 3]
    for seen in kit.fake.requests("/products"):
        assert (seen.query["_fields"], seen.query["per_page"], seen.query["status"]) == (
            "id",
            "100",
            "any",
        )


async def test_fetch_product_reads_variations_and_trash(kit: Kit) -> None:
    catalog_of(kit.fake, 14)
    kit.fake.products[3]["status"] = "trash"
    adapter = kit.adapter()
    product = await adapter.fetch_product("14")
    assert isinstance(product, Product)
    assert product.variants[0].title == "M"
    trashed = await adapter.fetch_product("3")
    assert trashed is not None
    assert trashed.status == "archived"


# --- webhooks -------------------------------------------------------------------------------------


def signature(body: bytes, secret: str = HOOK_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def delivery_headers(body: bytes, topic: str = "product.updated", **extra: str) -> dict[str, str]:
    return {
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Resource": topic.partition(".")[0],
        "X-WC-Webhook-Event": topic.partition(".")[2],
        "X-WC-Webhook-Signature": signature(body),
        "X-WC-Webhook-ID": "12",
        "X-WC-Webhook-Delivery-ID": "a1b2c3",
        **extra,
    }


def test_webhook_good_signature(kit: Kit) -> None:
    body = json.dumps(make_product(42)).encode()
    delivery = kit.adapter().verify_webhook(delivery_headers(body), body)
    assert (delivery.kind, delivery.topic, delivery.product_ids, delivery.delivery_id) == (
        "product",
        "product.updated",
        ("42",),
        "a1b2c3",
    )


def test_webhook_for_a_variation_names_the_parent(kit: Kit) -> None:
    body = json.dumps({"id": 2301, "parent_id": 23, "type": "variation"}).encode()
    lower = {k.lower(): v for k, v in delivery_headers(body).items()}  # header case varies
    assert kit.adapter().verify_webhook(lower, body).product_ids == ("23",)


def test_webhook_delete_body_is_only_an_id(kit: Kit) -> None:
    body = b'{"id":42}'
    delivery = kit.adapter().verify_webhook(delivery_headers(body, "product.deleted"), body)
    assert (delivery.topic, delivery.product_ids) == ("product.deleted", ("42",))


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"X-WC-Webhook-Topic": "product.updated"}, 401),  # missing signature
        ({"X-WC-Webhook-Signature": signature(b"other body")}, 401),
        ({"X-WC-Webhook-Signature": signature(b'{"id": 1}', "wrong-secret")}, 401),
    ],
)
def test_webhook_bad_or_missing_signature(kit: Kit, headers: dict[str, str], status: int) -> None:
    with pytest.raises(BadWebhook) as caught:
        kit.adapter().verify_webhook(headers, b'{"id": 1}')
    assert caught.value.status == status
    no_leak(str(caught.value))


def test_webhook_ping_is_unsigned_form_data(kit: Kit) -> None:
    delivery = kit.adapter().verify_webhook(
        {"Content-Type": "application/x-www-form-urlencoded"}, b"webhook_id=12"
    )
    assert delivery.kind == "ping"
    assert delivery.product_ids == ()


@pytest.mark.parametrize(
    ("body", "topic"),
    [
        (b"{not json", "product.updated"),
        (b"[1, 2]", "product.updated"),
        (b'{"name": "x"}', "product.updated"),
        (b'{"id": 1}', "order.created"),
        # Hostile, but correctly signed (a leaked secret, a buggy plugin): 400, never a crash.
        (b'{"id": 1, "meta": ' + b"[" * 5000 + b"]" * 5000 + b"}", "product.updated"),
        (b'{"id": ' + b"9" * 5000 + b"}", "product.updated"),
        (b'{"id": 99999999999999999999999}', "product.updated"),  # past 64 bits
        ('{"id": "\u0663\u0664"}'.encode(), "product.updated"),  # Arabic-Indic digits
        ('{"id": "\u00b2"}'.encode(), "product.updated"),  # superscript two: int() refuses
        (b'{"id": 0, "parent_id": -4}', "product.updated"),
    ],
)
def test_webhook_unusable_body_is_400(kit: Kit, body: bytes, topic: str) -> None:
    with pytest.raises(BadWebhook) as caught:
        kit.adapter().verify_webhook(delivery_headers(body, topic), body)
    assert caught.value.status == 400


def test_webhook_without_a_configured_secret(kit: Kit) -> None:
    body = b'{"id": 1}'
    with pytest.raises(BadWebhook) as caught:
        kit.adapter(webhook_secret=None).verify_webhook(delivery_headers(body), body)
    assert caught.value.status == 401
    assert str(caught.value) == "no webhook_secret configured for this store"


async def test_register_and_reactivate_webhooks(kit: Kit) -> None:
    adapter = kit.adapter()
    url = "https://agent.example.com/webhooks/main"
    created = await adapter.register_webhooks(url)
    assert [(a.topic, a.action) for a in created] == [
        ("product.created", "created"),
        ("product.updated", "created"),
        ("product.deleted", "created"),
        ("product.restored", "created"),
    ]
    assert all(h["secret"] == HOOK_SECRET for h in kit.fake.webhooks.values())
    assert all(h["delivery_url"] == url for h in kit.fake.webhooks.values())

    kit.fake.webhooks[2]["status"] = "disabled"  # WooCommerce gave up after failed deliveries
    kit.fake.webhooks[3]["status"] = "paused"  # an operator did this
    reactivated = await adapter.reactivate_disabled_webhooks()
    assert [(a.webhook_id, a.action) for a in reactivated] == [("2", "activated")]
    assert kit.fake.webhooks[2]["status"] == "active"
    assert kit.fake.webhooks[3]["status"] == "paused"

    again = await adapter.register_webhooks(url, update_secret=False)
    assert [a.action for a in again] == ["unchanged", "unchanged", "paused", "unchanged"]
    assert len(kit.fake.webhooks) == 4


# --- bounded replies (issue 10, class 3) ----------------------------------------------------


class Endless:
    """A 200 answer of an endless JSON array, generated as it is sent: counts what went out."""

    def __init__(self) -> None:
        self.sent = 0

    def __call__(self) -> web.StreamResponse:
        async def body() -> AsyncIterator[bytes]:
            chunk = b'"' + b"x" * 65_534 + b'",'
            yield b"["
            while self.sent < 500 * 1024 * 1024:
                self.sent += len(chunk)
                yield chunk

        return web.Response(body=body(), content_type="application/json")


async def test_an_oversized_reply_is_refused_while_it_is_read(kit: Kit) -> None:
    endless = Endless()
    kit.fake.products[7] = make_product(7)
    kit.fake.fail("/products/7", endless)
    client = WooClient(kit.settings(), kit.http, max_reply_bytes=1024 * 1024, attempts=1)
    with pytest.raises(PlatformUnavailable) as caught:
        await client.get("/products/7")
    assert "more than 1048576 bytes" in str(caught.value)
    # The read stopped at the limit: what was sent is the limit plus socket buffers, not 500 MB.
    assert endless.sent < 32 * 1024 * 1024
    no_leak(str(caught.value))


async def test_an_oversized_listing_page_is_fetched_again_in_smaller_requests(kit: Kit) -> None:
    for pid in range(1, 11):
        kit.fake.products[pid] = make_product(pid)
    kit.fake.fail("/products", Endless())
    client = WooClient(kit.settings(), kit.http, max_reply_bytes=1024 * 1024)
    page = await client.list_page("/products", {"status": "any"}, page=1, page_size=10)
    assert [i["id"] for i in page.items] == list(range(10, 0, -1))
    assert client.per_page < 10


async def test_a_hostile_but_small_reply_is_unusable_not_a_crash(kit: Kit) -> None:
    deep = b"[" * 50_000 + b"]" * 50_000
    kit.fake.products[8] = make_product(8)
    kit.fake.fail("/products/8", lambda: web.Response(body=deep, content_type="application/json"))
    with pytest.raises(PlatformUnavailable) as caught:
        await WooClient(kit.settings(), kit.http, attempts=1).get("/products/8")
    assert "nests deeper" in str(caught.value)


# --- the shared HTTP layer and paging (issue 11) -------------------------------------------------


def the_same_page(total_pages: str | None) -> Fault:
    """A cache or plugin in front of the store that ignores `page` and `per_page`: always the
    same full page of 100 products."""
    headers = {} if total_pages is None else {"X-WP-Total": "999", "X-WP-TotalPages": total_pages}
    return lambda: web.json_response([make_product(n) for n in range(1, 101)], headers=headers)


@pytest.mark.parametrize("total_pages", [None, "100"])
@pytest.mark.parametrize("walk", ["catalog", "product_ids", "modified_since"])
async def test_a_store_serving_the_same_page_forever_stops_the_walk(
    kit: Kit, walk: str, total_pages: str | None
) -> None:
    catalog_of(kit.fake, 40)
    kit.fake.fail("/products", *[the_same_page(total_pages)] * 200)
    adapter = kit.adapter(per_page=10, concurrency=1)
    walks = {
        "catalog": adapter.catalog,
        "product_ids": adapter.product_ids,
        "modified_since": lambda: adapter.modified_since(datetime(2024, 1, 1, tzinfo=UTC)),
    }
    with pytest.raises(PagingLoop) as caught:
        async for _ in walks[walk]():
            pass
    assert "holds the same 100 ids as page 1" in str(caught.value)
    assert "instead of looping" in str(caught.value)
    assert len(kit.fake.requests("/products")) <= 4  # stopped at once, not after 200 laps


def empty_but_more(total_pages: str) -> Fault:
    """A store (or cache) that answers an empty page while its totals say pages follow."""
    headers = {"X-WP-Total": "500", "X-WP-TotalPages": total_pages}
    return lambda: web.json_response([], headers=headers)


@pytest.mark.parametrize("walk", ["catalog", "product_ids", "modified_since"])
async def test_an_empty_page_the_store_says_is_not_the_last_stops_the_walk(
    kit: Kit, walk: str
) -> None:
    kit.fake.fail("/products", *[empty_but_more("100000")] * 200)
    adapter = kit.adapter(per_page=10, concurrency=4)
    walks = {
        "catalog": adapter.catalog,
        "product_ids": adapter.product_ids,
        "modified_since": lambda: adapter.modified_since(datetime(2024, 1, 1, tzinfo=UTC)),
    }
    with pytest.raises(PlatformUnavailable) as caught:
        async for _ in walks[walk]():
            pass
    assert "came back empty while the store says it has 100000 pages" in str(caught.value)
    assert len(kit.fake.requests("/products")) <= 5  # not walked to its advertised end


async def test_a_listing_that_shrank_under_the_walk_ends_it_quietly(kit: Kit) -> None:
    # Page 2 of 3 was asked for after products were deleted: empty, and its totals end before it.
    kit.fake.fail(
        "/products",
        lambda: web.json_response(
            [make_product(n) for n in range(1, 11)],
            headers={"X-WP-Total": "30", "X-WP-TotalPages": "3"},
        ),
        lambda: web.json_response([], headers={"X-WP-Total": "8", "X-WP-TotalPages": "1"}),
        lambda: web.json_response([], headers={"X-WP-Total": "8", "X-WP-TotalPages": "1"}),
    )
    pages = await collect(kit.adapter(per_page=10, concurrency=1).catalog())
    assert [p.id for page in pages for p in page.products] == [str(n) for n in range(1, 11)]


async def test_a_product_edited_again_during_a_modified_walk_is_no_loop(kit: Kit) -> None:
    # One product per page, all saved in the same second (the walk goes page by page): product
    # 3 is edited again while walked, moves to the end and is served twice under its id.
    at = "2024-05-01T08:00:00"
    later = "2024-05-01T08:00:05"
    served = [
        [make_product(1, date_modified_gmt=at)],
        [make_product(3, date_modified_gmt=at)],
        [make_product(3, date_modified_gmt=later)],
        [],
    ]
    kit.fake.products = {}
    kit.fake.fail(
        "/products", *[(lambda items=items: web.json_response(items)) for items in served]
    )
    adapter = kit.adapter(per_page=1, concurrency=1)
    since = datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC)
    seen = [p.id for batch in await collect(adapter.modified_since(since)) for p in batch]
    assert seen == ["1", "3", "3"]  # both versions of product 3, and no PagingLoop


async def test_a_refused_variations_listing_is_a_permanent_failure_of_that_product(
    kit: Kit,
) -> None:
    catalog_of(kit.fake, 14)  # 7 and 14 are variable
    kit.fake.fail("/products/7/variations", lambda: error(400, "rest_invalid_param", "bad"))
    kit.fake.fail("/products/14/variations", *[lambda: web.Response(status=500)] * 4)
    pages = await collect(kit.adapter().catalog())
    failures = {f.product_id: f for page in pages for f in page.failures}
    assert (failures["7"].status, failures["7"].permanent) == (400, True)
    assert (failures["14"].status, failures["14"].permanent) == (500, False)
    assert failures["7"].message.startswith("variations: WooCommerce refused GET ")
    ids = [p.id for page in pages for p in page.products]
    assert ids == [str(n) for n in range(1, 14) if n != 7]  # the rest of the page goes on


async def test_batch_fetch_reports_a_refused_product_as_permanent(kit: Kit) -> None:
    kit.fake.products = {1: make_product(1)}
    kit.fake.fail("/products/9", lambda: error(400, "rest_invalid_param", "Invalid parameter"))
    result = await kit.adapter().fetch_products(["1", "9"])
    assert sorted(result.found) == ["1"]
    failure = result.failed["9"]
    assert (failure.status, failure.permanent) == (400, True)


async def test_a_batch_listing_refused_for_good_is_read_one_id_at_a_time(kit: Kit) -> None:
    # A WAF answers the long `include=` query string with 414, for good: each id is then asked
    # alone, so a product the store refuses is a permanent failure of that product only.
    kit.fake.products = {1: make_product(1), 2: make_product(2)}
    kit.fake.fail("/products", lambda: error(414, "uri_too_long", "Request-URI Too Long"))
    kit.fake.fail("/products/2", lambda: error(400, "rest_invalid_param", "Invalid parameter"))
    result = await kit.adapter().fetch_products(["1", "2", "3"])
    assert sorted(result.found) == ["1"]
    assert (result.failed["2"].status, result.failed["2"].permanent) == (400, True)
    assert "3" in result.missing
    assert len(kit.fake.requests("/products")) == 1


async def test_a_batch_listing_the_store_cannot_answer_now_fails_the_call(kit: Kit) -> None:
    kit.fake.products = {1: make_product(1)}
    kit.fake.fail("/products", *[lambda: web.Response(status=503)] * 10)
    with pytest.raises(PlatformUnavailable):
        await kit.adapter().fetch_products(["1"])
    assert kit.fake.requests("/products/1") == []  # retried later as a whole, not id by id


async def test_every_read_asks_for_the_values_as_stored(kit: Kit) -> None:
    # In the default view context WooCommerce renders `description` (wpautop, shortcodes): the
    # hub would optimise, and the conflict check compare, HTML the merchant never wrote.
    catalog_of(kit.fake, 3)
    adapter = kit.adapter()
    await collect(adapter.catalog())
    await adapter.fetch_product("2")
    await adapter.fetch_products(["1", "3"])
    async for _ in adapter.modified_since(datetime(2024, 1, 1, tzinfo=UTC)):
        pass
    async for _ in adapter.product_ids():
        pass
    reads = [s for s in kit.fake.seen if s.method == "GET"]
    assert reads and all(s.query.get("context") == "edit" for s in reads), [
        (s.path, s.query) for s in reads if s.query.get("context") != "edit"
    ]


async def test_errors_carry_status_headers_and_outcome(kit: Kit) -> None:
    kit.fake.fail(
        "/products/5",
        lambda: web.json_response(
            {"code": "rest_invalid_param", "message": "no"},
            status=422,
            headers={"X-Request-Id": "r-1", "Set-Cookie": f"wp={SECRET}"},
        ),
    )
    with pytest.raises(WooRequestRejected) as caught:
        await kit.client().get("/products/5")
    error = caught.value
    assert (error.status, error.code, error.outcome) == (422, "rest_invalid_param", "permanent")
    assert error.headers["x-request-id"] == "r-1"
    assert "set-cookie" not in error.headers
    no_leak(repr(dict(error.headers)))
    kit.fake.fail("/products/6", error_response_404)
    with pytest.raises(ProductNotFound) as missing:
        await kit.client().get("/products/6")
    assert (missing.value.status, missing.value.outcome) == (404, Outcome.NOT_FOUND)


def error_response_404() -> web.Response:
    return error(404, "woocommerce_rest_product_invalid_id", "Invalid ID.")


async def test_a_webhook_creation_is_never_resent_after_a_5xx(kit: Kit) -> None:
    kit.fake.fail("/webhooks", lambda: web.Response(status=502))
    with pytest.raises(PlatformAmbiguous) as caught:
        await kit.client().post("/webhooks", {"topic": "product.updated"})
    assert [s.method for s in kit.fake.requests("/webhooks")] == ["POST"]
    assert caught.value.status == 502
    assert kit.sleeps == []
    # Setting a webhook's status is idempotent: that PUT is retried.
    kit.fake.webhooks[1] = {"id": 1, "topic": "product.updated", "status": "disabled"}
    kit.fake.webhooks[1].update(name="bridge-agent main product.updated", delivery_url="x")
    kit.fake.fail("/webhooks/1", lambda: web.Response(status=503))
    (action,) = await kit.adapter().reactivate_disabled_webhooks()
    assert action.action == "activated"
    assert [s.method for s in kit.fake.requests("/webhooks/1")] == ["PUT", "PUT"]
    assert kit.fake.webhooks[1]["status"] == "active"
