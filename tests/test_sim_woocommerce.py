"""The WooCommerce simulator against reference/platforms.md section 1 (checklist 1.14).

Two kinds of clients: the official `woocommerce` PyPI client (synchronous, so it runs in a thread)
proves the simulator accepts what a real client sends (OAuth 1.0a on http://, Basic or query-string
keys on https://); httpx checks the exact answers. Nothing here imports the agent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest
from aiohttp import web
from woocommerce import API
from woocommerce.oauth import OAuth

from bridge_agent.simulators.woocommerce import Faults, WooSimulator, run_cli, serve
from bridge_agent.testing.waiting import until

API_PATH = "/wp-json/wc/v3"


@dataclass
class Store:
    sim: WooSimulator
    url: str  # http://127.0.0.1:PORT

    def client(self, *, key: tuple[str, str] | None = None) -> httpx.AsyncClient:
        auth = key or (self.sim.consumer_key, self.sim.consumer_secret)
        return httpx.AsyncClient(base_url=f"{self.url}{API_PATH}", auth=auth, timeout=10)

    def anonymous(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10)

    def woo(self, **options: Any) -> API:
        return API(
            url=options.pop("url", self.url),
            consumer_key=self.sim.consumer_key,
            consumer_secret=self.sim.consumer_secret,
            version="wc/v3",
            timeout=10,
            **options,
        )


async def start(
    sim: WooSimulator, ssl_context: ssl.SSLContext | None = None
) -> tuple[asyncio.Task[None], int]:
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve(sim, "127.0.0.1", 0, ready=ready.set_result, ssl_context=ssl_context)
    )
    return task, await asyncio.wait_for(ready, 5)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.fixture
async def make_store() -> AsyncIterator[Callable[..., Awaitable[Store]]]:
    tasks: list[asyncio.Task[None]] = []

    async def build(products: int = 40, seed: int = 7, **options: Any) -> Store:
        options.setdefault("webhook_delay", 0.01)
        options.setdefault("webhook_jitter", 0.02)
        sim = WooSimulator.generate(products=products, seed=seed, **options)
        task, port = await start(sim)
        tasks.append(task)
        return Store(sim, f"http://127.0.0.1:{port}")

    yield build
    for task in tasks:
        await stop(task)


@pytest.fixture
async def store(make_store: Callable[..., Awaitable[Store]]) -> Store:
    return await make_store()


@dataclass
class Receiver:
    """A webhook endpoint on loopback that records raw requests and answers `status`."""

    url: str = ""
    status: int = 200
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def deliveries(self) -> list[tuple[dict[str, str], bytes]]:
        return [r for r in self.requests if "X-WC-Webhook-Topic" in r[0]]

    def pings(self) -> list[bytes]:
        return [body for headers, body in self.requests if "X-WC-Webhook-Topic" not in headers]


@pytest.fixture
async def receiver(aiohttp_server: Any) -> Receiver:
    rec = Receiver()

    async def hook(request: web.Request) -> web.Response:
        rec.requests.append((dict(request.headers), await request.read()))
        return web.Response(status=rec.status)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    rec.url = f"http://127.0.0.1:{server.port}/hook"
    return rec


def visible(sim: WooSimulator) -> set[int]:
    return {d["product"]["id"] for d in sim.truth() if d["product"]["status"] != "trash"}


def some_product(sim: WooSimulator, **want: Any) -> dict[str, Any]:
    for doc in sim.truth():
        product = doc["product"]
        if all(product.get(k) == v for k, v in want.items()):
            return product
    raise AssertionError(f"no product with {want}")


# -- authentication with the real client -----------------------------------------------------------


async def test_real_client_oauth1_over_http_pages_through_everything(store: Store) -> None:
    wc = store.woo()
    first = await asyncio.to_thread(wc.get, "products", params={"per_page": 7, "orderby": "id"})
    assert first.status_code == 200, first.text
    # Over http:// the client signs with OAuth 1.0a (HMAC-SHA256) in the query string.
    sent = dict(parse_qsl(urlsplit(first.request.url).query))
    assert sent["oauth_signature_method"] == "HMAC-SHA256"
    assert "Authorization" not in first.request.headers
    total, pages = int(first.headers["X-WP-Total"]), int(first.headers["X-WP-TotalPages"])
    assert total == len(visible(store.sim))
    assert pages == -(-total // 7)
    assert 'rel="next"' in first.headers["Link"]
    assert 'rel="prev"' not in first.headers["Link"]
    seen = [p["id"] for p in first.json()]
    for page in range(2, pages + 1):
        resp = await asyncio.to_thread(
            wc.get, "products", params={"per_page": 7, "page": page, "orderby": "id"}
        )
        assert resp.status_code == 200, resp.text
        assert 'rel="prev"' in resp.headers["Link"]
        assert ('rel="next"' in resp.headers["Link"]) == (page < pages)
        seen += [p["id"] for p in resp.json()]
    assert len(seen) == len(set(seen))
    assert set(seen) == visible(store.sim)
    assert seen == sorted(seen, reverse=True)  # order defaults to desc


async def test_real_client_get_put_delete_and_batch(store: Store) -> None:
    wc = store.woo()
    product = some_product(store.sim, status="publish", type="simple")
    pid = product["id"]
    got = await asyncio.to_thread(wc.get, f"products/{pid}")
    assert got.status_code == 200
    assert got.json() == product

    put = await asyncio.to_thread(
        wc.put,
        f"products/{pid}",
        {"name": "Grüne Jacke", "meta_data": [{"key": "_yoast_wpseo_title", "value": "Jacke"}]},
    )
    assert put.status_code == 200, put.text
    assert put.json()["name"] == "Grüne Jacke"
    assert {"_yoast_wpseo_title": "Jacke"}.items() <= {
        m["key"]: m["value"] for m in put.json()["meta_data"]
    }.items()

    batch = await asyncio.to_thread(
        wc.post,
        "products/batch",
        {
            "create": [{"name": "New one", "regular_price": "12.50", "sku": "NEW-1"}],
            "update": [{"id": pid, "regular_price": "9.99"}],
            "delete": [999_999],
        },
    )
    assert batch.status_code == 200, batch.text
    body = batch.json()
    assert body["create"][0]["sku"] == "NEW-1"
    assert body["update"][0]["price"] == "9.99"
    assert body["delete"][0]["error"]["code"] == "woocommerce_rest_product_invalid_id"

    trashed = await asyncio.to_thread(wc.delete, f"products/{pid}")
    assert trashed.status_code == 200
    again = await asyncio.to_thread(wc.get, f"products/{pid}")
    assert again.json()["status"] == "trash"
    gone = await asyncio.to_thread(wc.delete, f"products/{pid}", params={"force": True})
    assert gone.status_code == 200
    missing = await asyncio.to_thread(wc.get, f"products/{pid}")
    assert missing.status_code == 404


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a throwaway certificate for the https tests")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert


async def test_real_client_basic_and_query_string_auth_over_https(
    tls: tuple[ssl.SSLContext, Path],
) -> None:
    context, cert = tls
    sim = WooSimulator.generate(products=15, seed=2)
    task, port = await start(sim, context)
    try:
        url = f"https://127.0.0.1:{port}"
        assert sim.site_url == url
        store = Store(sim, url)
        # Over https:// the client sends HTTP Basic ...
        basic = store.woo(verify_ssl=str(cert))
        resp = await asyncio.to_thread(basic.get, "products", params={"per_page": 5})
        assert resp.status_code == 200, resp.text
        assert resp.request.headers["Authorization"].startswith("Basic ")
        assert resp.json()[0]["permalink"].startswith(f"{url}/")
        # ... or, with query_string_auth, the key and secret as query parameters.
        query = store.woo(verify_ssl=str(cert), query_string_auth=True)
        resp = await asyncio.to_thread(query.get, "products", params={"per_page": 5})
        assert resp.status_code == 200, resp.text
        assert "consumer_secret=" in resp.request.url
        assert "Authorization" not in resp.request.headers
        wrong = API(url, sim.consumer_key, "cs_wrong", version="wc/v3", verify_ssl=str(cert))
        resp = await asyncio.to_thread(wrong.get, "products")
        assert resp.status_code == 401
        assert resp.json()["code"] == "woocommerce_rest_authentication_error"
        assert resp.json()["message"] == "Consumer secret is invalid."
        assert resp.headers["WWW-Authenticate"].startswith("Basic realm=")
    finally:
        await stop(task)


# -- authentication details ------------------------------------------------------------------------


def _rfc3986(value: str) -> str:
    return quote(value, safe="-_.~")


def oauth_sha1_url(url: str, key: str, secret: str, params: dict[str, str], nonce: str) -> str:
    """An OAuth 1.0a HMAC-SHA1 signed URL, written from the spec rather than from the simulator."""
    signed = {
        **params,
        "oauth_consumer_key": key,
        "oauth_timestamp": str(int(time.time())),
        "oauth_nonce": nonce,
        "oauth_signature_method": "HMAC-SHA1",
    }
    pairs = "%26".join(_rfc3986(f"{_rfc3986(k)}={_rfc3986(v)}") for k, v in sorted(signed.items()))
    base = f"GET&{_rfc3986(url)}&{pairs}"
    digest = hmac.new(f"{secret}&".encode(), base.encode(), hashlib.sha1).digest()
    signed["oauth_signature"] = base64.b64encode(digest).decode()
    return url + "?" + "&".join(f"{_rfc3986(k)}={_rfc3986(v)}" for k, v in signed.items())


async def test_oauth_sha1_nonce_replay_timestamp_and_bad_signature(store: Store) -> None:
    sim = store.sim
    url = f"{store.url}{API_PATH}/products"
    async with store.anonymous() as http:
        signed = oauth_sha1_url(url, sim.consumer_key, sim.consumer_secret, {"per_page": "3"}, "n1")
        ok = await http.get(signed)
        assert ok.status_code == 200, ok.text
        assert len(ok.json()) == 3
        replay = await http.get(signed)
        assert replay.status_code == 401
        assert replay.json()["message"] == "Invalid nonce - nonce has already been used."

        bad = oauth_sha1_url(url, sim.consumer_key, "cs_not_it", {}, "n2")
        resp = await http.get(bad)
        assert resp.json() == {
            "code": "woocommerce_rest_authentication_error",
            "message": "Invalid signature - provided signature does not match.",
            "data": {"status": 401},
        }

        old = OAuth(
            url=url,
            consumer_key=sim.consumer_key,
            consumer_secret=sim.consumer_secret,
            version="wc/v3",
            method="GET",
            oauth_timestamp=int(time.time()) - 16 * 60,  # outside the 15-minute window
        ).get_oauth_url()
        resp = await http.get(old)
        assert resp.status_code == 401
        assert resp.json()["message"] == "Invalid timestamp."

        partial = await http.get(f"{url}?oauth_consumer_key={sim.consumer_key}")
        assert partial.json()["code"] == "woocommerce_rest_authentication_missing_parameter"


async def test_missing_or_unknown_credentials_get_the_routes_own_401(store: Store) -> None:
    async with store.anonymous() as http:
        resp = await http.get(f"{API_PATH}/products")
        assert resp.status_code == 401
        assert resp.json() == {
            "code": "woocommerce_rest_cannot_view",
            "message": "Sorry, you cannot list resources.",
            "data": {"status": 401},
        }
        resp = await http.post(f"{API_PATH}/products", json={"name": "x"})
        assert resp.json()["code"] == "woocommerce_rest_cannot_create"
    async with store.client(key=("ck_unknown", "cs_unknown")) as http:
        resp = await http.get("/products")
        assert resp.status_code == 401
        assert resp.json()["code"] == "woocommerce_rest_cannot_view"


async def test_read_only_key_cannot_write(store: Store) -> None:
    key = store.sim.add_key("read")
    pid = some_product(store.sim, status="publish")["id"]
    async with store.client(key=key) as http:
        assert (await http.get(f"/products/{pid}")).status_code == 200
        resp = await http.put(f"/products/{pid}", json={"name": "nope"})
        assert resp.status_code == 401
        assert resp.json()["code"] == "woocommerce_rest_authentication_error"
        assert resp.json()["message"] == "The API key provided does not have write permissions."
    assert store.sim.product(pid)["name"] != "nope"


# -- listing ---------------------------------------------------------------------------------------


async def test_per_page_bounds_and_pages_beyond_the_last(store: Store) -> None:
    async with store.client() as http:
        resp = await http.get("/products", params={"per_page": 101})
        assert resp.status_code == 400
        body = resp.json()
        assert body["code"] == "rest_invalid_param"
        assert body["data"]["status"] == 400
        assert "per_page" in body["data"]["params"]
        assert (await http.get("/products", params={"per_page": 0})).status_code == 400
        assert (await http.get("/products", params={"page": "x"})).status_code == 400

        default = await http.get("/products")
        assert len(default.json()) == 10  # per_page defaults to 10
        total = int(default.headers["X-WP-Total"])
        beyond = await http.get("/products", params={"per_page": 100, "page": 5})
        assert beyond.status_code == 200
        assert beyond.json() == []
        assert beyond.headers["X-WP-Total"] == str(total)
        assert beyond.headers["X-WP-TotalPages"] == "1"
        assert 'rel="next"' not in beyond.headers["Link"]


async def test_status_any_leaves_trash_out(store: Store) -> None:
    pid = some_product(store.sim, status="publish")["id"]
    store.sim.delete_product(pid)
    async with store.client() as http:
        listed = await http.get("/products", params={"per_page": 100})
        assert pid not in [p["id"] for p in listed.json()]
        statuses = {p["status"] for p in listed.json()}
        assert "publish" in statuses
        assert statuses <= {"publish", "draft", "private", "pending"}
        trash = await http.get("/products", params={"status": "trash"})
        assert [p["id"] for p in trash.json()] == [pid]
        one = await http.get(f"/products/{pid}")
        assert one.status_code == 200
        assert one.json()["status"] == "trash"


async def test_sku_filter_is_exact_takes_lists_and_finds_variations(store: Store) -> None:
    variable = some_product(store.sim, type="variable", status="publish")
    async with store.client() as http:
        kids = (await http.get(f"/products/{variable['id']}/variations")).json()
        kid = next(k for k in kids if k["sku"])
        simple = some_product(store.sim, type="simple", status="publish")
        resp = await http.get("/products", params={"sku": f"{simple['sku']},{kid['sku']}"})
        found = {p["id"]: p for p in resp.json()}
        assert set(found) == {simple["id"], kid["id"]}
        assert found[kid["id"]]["type"] == "variation"
        assert found[kid["id"]]["parent_id"] == variable["id"]
        partial = await http.get("/products", params={"sku": simple["sku"][:-1]})
        assert partial.json() == []


async def test_modified_after_is_exclusive_at_second_precision(store: Store) -> None:
    sim = store.sim
    sim.clock.freeze(True)
    sim.clock.set(1_790_000_000)
    pid = some_product(sim, status="publish")["id"]
    changed = sim.update_product(pid, {"short_description": "<p>changed</p>"})
    gmt, local = changed["date_modified_gmt"], changed["date_modified"]
    assert gmt != local  # the site is two hours east of UTC

    async def ids(**params: str) -> list[int]:
        async with store.client() as http:
            resp = await http.get("/products", params={"per_page": 100, **params})
            assert resp.status_code == 200, resp.text
            return [p["id"] for p in resp.json()]

    assert await ids(modified_after=gmt, dates_are_gmt="true") == []
    assert await ids(modified_after="2026-09-21T14:13:19", dates_are_gmt="true") == [pid]
    assert gmt == "2026-09-21T14:13:20"
    # Without dates_are_gmt the value is compared with the site-local column.
    assert await ids(modified_after=local) == []
    assert pid in await ids(modified_after=gmt)  # local time is later than GMT here
    assert pid in await ids(modified_before="2026-09-21T14:13:21", dates_are_gmt="true")
    async with store.client() as http:
        bad = await http.get("/products", params={"modified_after": "yesterday"})
        assert bad.status_code == 400


async def test_fields_variations_and_categories(store: Store) -> None:
    variable = some_product(store.sim, type="variable", status="publish")
    async with store.client() as http:
        trimmed = await http.get("/products", params={"_fields": "id,name", "per_page": 3})
        assert all(set(p) == {"id", "name"} for p in trimmed.json())

        kids = await http.get(f"/products/{variable['id']}/variations", params={"per_page": 1})
        assert kids.headers["X-WP-Total"] == str(len(variable["variations"]))
        kid = kids.json()[0]
        assert kid["id"] in variable["variations"]
        assert "image" in kid
        assert "images" not in kid
        one = await http.get(f"/products/{variable['id']}/variations/{kid['id']}")
        assert one.json() == kid
        wrong_parent = await http.get(f"/products/{variable['id'] + 1}/variations/{kid['id']}")
        assert wrong_parent.status_code == 404
        assert wrong_parent.json()["code"] == "woocommerce_rest_product_variation_invalid_id"

        cats = await http.get("/products/categories", params={"per_page": 100})
        by_id = {c["id"]: c for c in cats.json()}
        shirts = next(c for c in by_id.values() if c["name"] == "Shirts")
        men = by_id[shirts["parent"]]
        assert men["name"] == "Men"
        assert by_id[men["parent"]]["name"] == "Clothing"
        paged = await http.get("/products/categories", params={"per_page": 5})
        assert paged.headers["X-WP-TotalPages"] == str(-(-len(by_id) // 5))


# -- errors ----------------------------------------------------------------------------------------


async def test_error_shapes(store: Store) -> None:
    pid = some_product(store.sim, status="publish")["id"]
    async with store.client() as http:
        missing = await http.get("/products/999999")
        assert missing.status_code == 404
        assert missing.json() == {
            "code": "woocommerce_rest_product_invalid_id",
            "message": "Invalid ID.",
            "data": {"status": 404},
        }
        put_missing = await http.put("/products/999999", json={"name": "x"})
        assert put_missing.status_code == 400
        assert put_missing.json()["code"] == "woocommerce_rest_product_invalid_id"
        assert (await http.delete("/products/999999")).status_code == 404

        first = await http.delete(f"/products/{pid}")
        assert first.status_code == 200
        assert first.json()["status"] == "publish"  # answered before the trashing, as WC does
        twice = await http.delete(f"/products/{pid}")
        assert twice.status_code == 410
        assert twice.json()["code"] == "woocommerce_rest_already_trashed"

        typed = await http.put(f"/products/{pid}", json={"regular_price": 19.9})
        assert typed.status_code == 400
        assert typed.json()["data"]["params"] == {
            "regular_price": "regular_price is not of type string."
        }
        no_route = await http.get("/orders/1/nothing")
        assert no_route.status_code == 404
        assert no_route.json()["code"] == "rest_no_route"


# -- writes ----------------------------------------------------------------------------------------


async def test_images_replace_all_src_makes_new_attachments_and_empty_alt_keeps(
    store: Store,
) -> None:
    product = next(d["product"] for d in store.sim.truth() if len(d["product"]["images"]) >= 2)
    pid, old = product["id"], product["images"]
    async with store.client() as http:
        resp = await http.put(
            f"/products/{pid}",
            json={
                "images": [
                    {"id": old[1]["id"], "alt": "Side view"},
                    {"src": "https://cdn.example/photos/Blue Shirt.jpg", "alt": ""},
                ]
            },
        )
        assert resp.status_code == 200, resp.text
        images = resp.json()["images"]
        assert images[0]["id"] == old[1]["id"]
        assert images[0]["alt"] == "Side view"
        new = images[1]
        assert new["id"] not in {i["id"] for i in old}
        assert new["src"].startswith(f"{store.url}/wp-content/uploads/")
        assert new["src"].endswith("/Blue-Shirt.jpg")
        assert new["alt"] == ""
        # Sending the same src again sideloads another copy with another id and file name.
        again = await http.put(
            f"/products/{pid}",
            json={
                "images": [
                    {"id": old[1]["id"], "alt": ""},  # empty alt does not clear it
                    {"src": "https://cdn.example/photos/Blue Shirt.jpg"},
                ]
            },
        )
        images2 = again.json()["images"]
        assert images2[0]["alt"] == "Side view"
        assert images2[1]["id"] != new["id"]
        assert images2[1]["src"].endswith("/Blue-Shirt-1.jpg")
        invalid = await http.put(f"/products/{pid}", json={"images": [{"id": 1}]})
        assert invalid.status_code == 400
        assert invalid.json()["code"] == "woocommerce_product_invalid_image_id"
        cleared = await http.put(f"/products/{pid}", json={"images": []})
        assert cleared.json()["images"] == []


async def test_meta_data_upserts_by_key(store: Store) -> None:
    sim = store.sim
    pid = some_product(sim, status="publish", type="simple")["id"]
    sim.update_product(
        pid,
        {"meta_data": [{"key": "dup", "value": "a"}, {"key": "x", "value": "1"}]},
    )
    # Two rows with one key, as plugins sometimes leave them (add_post_meta twice).
    item = sim.catalog.items[pid]
    item.meta = (*item.meta, (sim.catalog.new_meta_id(), "dup", "b"))
    sim.catalog.changed(pid)
    before_rows = sim.product(pid)["meta_data"]
    before = {m["key"]: m for m in reversed(before_rows)}  # the first row per key
    assert [m["key"] for m in before_rows].count("dup") == 2
    async with store.client() as http:
        resp = await http.put(
            f"/products/{pid}",
            json={
                "meta_data": [
                    {"key": "_yoast_wpseo_metadesc", "value": "New description"},
                    {"key": "dup", "value": "only"},
                    {"key": "x", "value": None},
                    {"key": "brand_new", "value": {"nested": [1, 2]}},
                ]
            },
        )
    meta = resp.json()["meta_data"]
    keys = [m["key"] for m in meta]
    assert keys.count("dup") == 1
    dup = next(m for m in meta if m["key"] == "dup")
    assert (dup["id"], dup["value"]) == (before["dup"]["id"], "only")
    assert "x" not in keys
    assert next(m for m in meta if m["key"] == "brand_new")["value"] == {"nested": [1, 2]}
    desc = next(m for m in meta if m["key"] == "_yoast_wpseo_metadesc")
    if "_yoast_wpseo_metadesc" in before:
        assert desc["id"] == before["_yoast_wpseo_metadesc"]["id"]
    assert desc["value"] == "New description"


async def test_every_write_bumps_date_modified(store: Store) -> None:
    sim = store.sim
    pid = some_product(sim, status="publish")["id"]
    before = sim.product(pid)["date_modified_gmt"]
    async with store.client() as http:
        resp = await http.put(f"/products/{pid}", json={})
    assert resp.json()["date_modified_gmt"] > before


async def test_batch_limit_and_per_item_errors(store: Store) -> None:
    taken = some_product(store.sim, type="simple", status="publish")["sku"]
    async with store.client() as http:
        too_many = await http.post(
            "/products/batch", json={"update": [{"id": 1}] * 60, "delete": list(range(41))}
        )
        assert too_many.status_code == 413
        assert too_many.json()["code"] == "woocommerce_rest_request_entity_too_large"
        mixed = await http.post(
            "/products/batch",
            json={
                "create": [{"name": "Dup", "sku": taken}, {"name": "Fine", "sku": "FINE-1"}],
                "update": [{"id": 999_999, "name": "ghost"}],
            },
        )
        assert mixed.status_code == 200
        body = mixed.json()
        assert body["create"][0]["id"] == 0
        assert body["create"][0]["error"]["code"] == "product_invalid_sku"
        assert body["create"][0]["error"]["data"]["status"] == 400
        assert body["create"][1]["sku"] == "FINE-1"
        assert body["update"][0]["id"] == 999_999
        assert body["update"][0]["error"]["code"] == "woocommerce_rest_product_invalid_id"


# -- webhooks --------------------------------------------------------------------------------------


async def create_webhook(store: Store, receiver: Receiver, topic: str, **extra: Any) -> int:
    async with store.client() as http:
        resp = await http.post(
            "/webhooks",
            json={"topic": topic, "delivery_url": receiver.url, "secret": "s3cr3t", **extra},
        )
        assert resp.status_code == 201, resp.text
        assert "secret" not in resp.json()  # write-only
        return int(resp.json()["id"])


async def test_webhook_ping_signature_and_headers(store: Store, receiver: Receiver) -> None:
    hook_id = await create_webhook(store, receiver, "product.updated")
    assert receiver.pings() == [f"webhook_id={hook_id}".encode()]
    ping_headers = receiver.requests[0][0]
    assert ping_headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "X-WC-Webhook-Signature" not in ping_headers

    pid = some_product(store.sim, status="publish")["id"]
    store.sim.update_product(pid, {"name": "Crème brûlée / Ofen"})
    await store.sim.webhooks.drain()
    [(headers, body)] = receiver.deliveries()
    expected = base64.b64encode(hmac.new(b"s3cr3t", body, hashlib.sha256).digest()).decode()
    assert hmac.compare_digest(headers["X-WC-Webhook-Signature"], expected)
    assert b"\\/" in body  # PHP-style escaping: re-serialising would break the signature
    assert json.loads(body) == store.sim.product(pid)
    assert headers["X-WC-Webhook-Topic"] == "product.updated"
    assert headers["X-WC-Webhook-Resource"] == "product"
    assert headers["X-WC-Webhook-Event"] == "updated"
    assert headers["X-WC-Webhook-ID"] == str(hook_id)
    assert headers["X-WC-Webhook-Source"] == f"{store.url}/"
    assert len(headers["X-WC-Webhook-Delivery-ID"]) == 32


async def test_webhook_deliveries_are_coalesced_per_product(
    make_store: Callable[..., Awaitable[Store]], receiver: Receiver
) -> None:
    store = await make_store(webhook_delay=0.2, webhook_jitter=0.0)
    await create_webhook(store, receiver, "product.updated")
    first, second = [d["product"]["id"] for d in store.sim.truth()[:2]]
    for n in range(3):
        store.sim.update_product(first, {"menu_order": n})
    store.sim.update_product(second, {"menu_order": 9})
    await store.sim.webhooks.drain()
    ids = sorted(json.loads(body)["id"] for _, body in receiver.deliveries())
    assert ids == sorted([first, second])
    assert json.loads(receiver.deliveries()[0][1])["menu_order"] in (2, 9)  # state at delivery


async def test_product_deleted_fires_on_trash_only(store: Store, receiver: Receiver) -> None:
    await create_webhook(store, receiver, "product.deleted")
    trashed, forced, batched = [
        d["product"]["id"] for d in store.sim.truth() if d["product"]["status"] == "publish"
    ][:3]
    async with store.client() as http:
        assert (await http.delete(f"/products/{trashed}")).status_code == 200
        assert (await http.delete(f"/products/{forced}?force=true")).status_code == 200
        resp = await http.post("/products/batch", json={"delete": [batched]})
        assert resp.json()["delete"][0]["id"] == batched
    await store.sim.webhooks.drain()
    assert [body for _, body in receiver.deliveries()] == [f'{{"id":{trashed}}}'.encode()]


async def test_webhook_disables_itself_after_repeated_failures(
    make_store: Callable[..., Awaitable[Store]], receiver: Receiver
) -> None:
    store = await make_store(webhook_max_failures=1)
    receiver.status = 500
    hook_id = await create_webhook(store, receiver, "product.updated")
    products = [d["product"]["id"] for d in store.sim.truth()[:5]]
    for pid in products[:3]:
        store.sim.update_product(pid, {"menu_order": 1})
        await store.sim.webhooks.drain()  # one at a time: the count is consecutive failures
    # WooCommerce disables on the failure that finds the count already above the maximum.
    assert len(receiver.deliveries()) == 3
    async with store.client() as http:
        assert (await http.get(f"/webhooks/{hook_id}")).json()["status"] == "disabled"
    store.sim.update_product(products[3], {"menu_order": 1})
    await store.sim.webhooks.drain()
    assert len(receiver.deliveries()) == 3  # disabled: nothing more
    # No retries: every failed attempt was made exactly once.
    assert store.sim.stats()["webhooks"]["failures"] == 3


# -- faults, control API, determinism, CLI ---------------------------------------------------------


async def test_fault_injection_with_retry_after(store: Store) -> None:
    async with store.anonymous() as control:
        resp = await control.post("/__sim/faults", json={"fail_next": [503, 429, 500]})
        assert resp.json()["fail_next"] == [503, 429, 500]
        assert (await control.post("/__sim/faults", json={"nope": 1})).status_code == 400
    async with store.client() as http:
        statuses = [(await http.get("/products")) for _ in range(4)]
    assert [r.status_code for r in statuses] == [503, 429, 500, 200]
    assert statuses[0].headers["Retry-After"] == "1"
    assert statuses[1].headers["Retry-After"] == "1"
    assert statuses[2].json()["code"] == "internal_server_error"

    store.sim.faults.update({"latency_ms": 60, "jitter": 0})
    async with store.client() as http:
        started = time.monotonic()
        assert (await http.get("/products", params={"per_page": 1})).status_code == 200
        assert time.monotonic() - started >= 0.055
    store.sim.faults.update({"latency_ms": 0})


async def test_refused_methods_get_a_waf_page_and_nothing_changes(store: Store) -> None:
    product = some_product(store.sim, type="simple")
    async with store.anonymous() as control:
        for bad in (
            {"refuse_methods": ["FETCH"]},
            {"refuse_status": 200},
            {"refuse_methods": "PUT"},
        ):
            assert (await control.post("/__sim/faults", json=bad)).status_code == 400, bad
        answer = await control.post(
            "/__sim/faults", json={"refuse_methods": ["put", "POST"], "refuse_status": 406}
        )
        assert answer.json()["refuse_methods"] == ["PUT", "POST"]
    async with store.client() as http:
        refused = await http.put(f"/products/{product['id']}", json={"name": "WAF'd"})
        batch = await http.post("/products/batch", json={"update": [{"id": product["id"]}]})
        read = await http.get(f"/products/{product['id']}")
    for answer in (refused, batch):
        assert answer.status_code == 406
        assert answer.headers["Content-Type"].startswith("text/html")
        assert "<title>406 Not Acceptable</title>" in answer.text
    assert read.status_code == 200, "reads still pass"
    assert store.sim.product(product["id"])["name"] == product["name"]
    assert store.sim.product(product["id"])["date_modified"] == product["date_modified"]
    store.sim.faults.update({"refuse_methods": [], "refuse_status": 403})


async def test_a_dropped_reply_after_a_write_leaves_the_write_applied(store: Store) -> None:
    product = some_product(store.sim, type="simple")
    store.sim.faults.update({"drop_reply_after_write": 1})
    async with store.client() as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.put(f"/products/{product['id']}", json={"name": "Applied, unanswered"})
        assert store.sim.product(product["id"])["name"] == "Applied, unanswered"
        assert store.sim.faults.drop_reply_after_write == 0
        again = await http.put(f"/products/{product['id']}", json={"name": "Answered"})
    assert again.status_code == 200 and again.json()["name"] == "Answered"


async def test_fail_rate_is_reproducible_from_the_seed() -> None:
    async def run() -> list[int]:
        sim = WooSimulator.generate(products=5, seed=11, faults=Faults(fail_rate=0.5))
        task, port = await start(sim)
        try:
            async with Store(sim, f"http://127.0.0.1:{port}").client() as http:
                return [(await http.get("/products")).status_code for _ in range(20)]
        finally:
            await stop(task)

    first = await run()
    assert first == await run()
    assert 200 in first
    assert set(first) - {200}


async def test_control_api_truth_stats_clock(store: Store) -> None:
    async with store.anonymous() as control:
        created = await control.post(
            "/__sim/products",
            json={
                "name": "Sim Tee",
                "type": "variable",
                "variations": [
                    {
                        "attributes": [{"id": 1, "name": "Size", "option": "S"}],
                        "regular_price": "10",
                    },
                    {
                        "attributes": [{"id": 1, "name": "Size", "option": "M"}],
                        "regular_price": "12",
                    },
                ],
            },
        )
        assert created.status_code == 201, created.text
        product = created.json()
        assert product["price"] == "10"
        assert len(product["variations"]) == 2

        clock = (await control.post("/__sim/clock", json={"freeze": True, "advance": 3600})).json()
        patched = await control.patch(
            f"/__sim/products/{product['id']}", json={"description": "<p>new</p>"}
        )
        assert patched.json()["date_modified_gmt"] == clock["now_gmt"]
        silent = await control.patch(
            f"/__sim/products/{product['id']}?bump=false", json={"description": "<p>quiet</p>"}
        )
        assert silent.json()["date_modified_gmt"] == clock["now_gmt"]

        truth = (await control.get("/__sim/truth")).json()["products"]
        mine = next(d for d in truth if d["product"]["id"] == product["id"])
        assert [v["id"] for v in mine["variations"]] == product["variations"]
        assert mine["product"]["description"] == "<p>quiet</p>"

        removed = await control.delete(f"/__sim/products/{product['id']}?force=true")
        assert removed.status_code == 200
        async with store.client() as http:
            assert (await http.get(f"/products/{product['id']}")).status_code == 404
            await http.get("/products")
        stats = (await control.get("/__sim/stats")).json()
        assert stats["requests"]["GET /wp-json/wc/v3/products"]["200"] >= 1
        assert stats["requests"]["GET /wp-json/wc/v3/products/{id}"]["404"] == 1
        info = (await control.get("/__sim/info")).json()
        assert info["consumer_key"] == store.sim.consumer_key


def test_same_seed_same_store_and_a_realistic_mix() -> None:
    a = WooSimulator.generate(products=300, seed=5, duplicate_skus=True)
    b = WooSimulator.generate(products=300, seed=5, duplicate_skus=True)
    assert a.truth_bytes() == b.truth_bytes()
    assert a.consumer_key == b.consumer_key
    assert WooSimulator.generate(products=300, seed=6).truth_bytes() != a.truth_bytes()

    products = [d["product"] for d in a.truth()]
    kinds = {p["type"] for p in products}
    assert kinds == {"simple", "variable"}
    assert {p["status"] for p in products} == {"publish", "draft", "private", "pending"}
    assert {p["stock_status"] for p in products} == {"instock", "outofstock", "onbackorder"}
    assert any(not p["images"] for p in products)
    assert any(p["price"] == "" for p in products)
    meta_keys = {m["key"] for p in products for m in p["meta_data"]}
    assert {"_yoast_wpseo_title", "rank_math_title", "_aioseo_title"} <= meta_keys
    skus = [p["sku"] for p in products if p["sku"]]
    assert len(skus) > len(set(skus))  # duplicate_skus
    variable = [d for d in a.truth() if d["product"]["type"] == "variable"]
    assert all(2 <= len(d["variations"]) <= 5 for d in variable)
    drafts = [p for p in products if p["status"] == "draft"]
    assert all(p["slug"] == "" and "?post_type=product&p=" in p["permalink"] for p in drafts)


async def test_run_cli_prints_how_to_connect(capsys: pytest.CaptureFixture[str]) -> None:
    task = asyncio.create_task(run_cli(products=12, port=0, latency_ms=0, fail_rate=0, seed=4))
    try:
        printed: list[str] = []

        def connection_printed() -> bool:
            printed.append(capsys.readouterr().out)
            return "consumer secret" in "".join(printed)

        await until(connection_printed, 5, what="the simulator's connection details")
        out = "".join(printed)
        assert "/wp-json/wc/v3" in out
        key = WooSimulator(seed=4).consumer_key
        assert key in out
        url = next(line.split()[-1] for line in out.splitlines() if "REST API" in line)
        async with httpx.AsyncClient(auth=(key, WooSimulator(seed=4).consumer_secret)) as http:
            resp = await http.get(f"{url}/products", params={"per_page": 100})
        assert resp.status_code == 200
        assert resp.headers["X-WP-Total"] == str(len(resp.json()))
    finally:
        await stop(task)
