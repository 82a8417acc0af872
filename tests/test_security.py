"""Security checks (issue 16, item 3): what an attacker on the network or a curious local user
could get from the agent and the reference hub, checked against the real thing on loopback.

- **Loopback by default.** Every socket a default-configured agent listens on (health, metrics,
  status, webhooks) is bound to a loopback address, read back from the kernel (`/proc/net/tcp*`
  by the socket inodes the process holds), and a configured address is honoured.
- **Bounded bodies.** An oversized webhook (to each platform's route, correctly signed) or hub
  body (to each of the hub's POST routes, found from its router) is answered 413 before the
  client has sent it whole, and nothing is recorded; the agent's hub client refuses an
  oversized hub reply without reading it whole.
- **The hub's token on every route.** Every route of the reference hub's router, so a new one is
  covered when it is added, answers 401 without the token or with a wrong one.
- **No secret anywhere.** A real agent process runs with distinctive secret values through a
  session full of errors (a store answering 401, a hub answering 503, forged webhooks, a refused
  spool file, configuration errors); every output an operator or another local user can read is
  then searched for each secret: logs, exceptions, `status`, metrics, the event log, every file
  of the state directory (the SQLite database and its WAL included) and of the spool.
- **TLS verification.** No HTTP client in the package is built with verification off (an AST
  scan, so a new client is covered), and the agent's clients refuse a self-signed server before
  sending it a request (so no credential goes to it).
- **File modes.** Under the unit's `UMask=` the state directory, its database files and what the
  agent writes into spool folders have no bits the umask removes, and no `chmod` in the package
  widens a mode beyond a reviewed list.
- **The unit's hardening.** The directives that keep `systemd-analyze security` at or below 2.0
  are present (the score itself is checked in tests/test_systemd_unit.py, which runs the tool).
"""

from __future__ import annotations

import ast
import asyncio
import base64
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import json
import os
import pickle
import shutil
import signal
import ssl
import subprocess
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import bridge_agent
from bridge_agent import platforms, wire
from bridge_agent.agent import Agent
from bridge_agent.config import (
    Config,
    HealthSettings,
    Listen,
    Secret,
    StoreSettings,
    WebhookSettings,
    load_config,
)
from bridge_agent.config.values import is_loopback
from bridge_agent.errors import BridgeError, HubAuthFailed, HubUnavailable
from bridge_agent.hub import make_app as make_hub_app
from bridge_agent.hublink import MAX_REPLY_BYTES, HubClient
from bridge_agent.platforms.woocommerce import WooCommerce
from bridge_agent.simulators.shopify import ShopifySimulator
from bridge_agent.simulators.shopify import serve as serve_shopify
from bridge_agent.simulators.woocommerce import WooSimulator
from bridge_agent.simulators.woocommerce import serve as serve_woo
from bridge_agent.simulators.woocommerce.auth import ApiKey
from bridge_agent.sources.images import ImageChecker
from bridge_agent.store import StateStore
from bridge_agent.store.state import DB_NAME
from bridge_agent.testing.waiting import until
from tests.conftest import free_port, make_config

PACKAGE = Path(bridge_agent.__file__).resolve().parent
ROOT = PACKAGE.parent
UNIT = ROOT / "systemd" / "bridge-agent.service"

# Distinctive values: any hit in an output is a leak, never a coincidence.
HUB_TOKEN = "hubtok-zq7Kx41mVbN0pLs2"
WOO_KEY = "ck_zq7wookey3f9a1c5e8b2d4f6a0c3e5b7d9f1a"
WOO_SECRET = "cs_zq7woosecret8e1d3c5b7a9f0e2d4c6b8a0f"
WOO_BAD_KEY = "ck_zq7badkey0c2e4a6b8d0f1e3c5a7b9d1f3e5"
WOO_BAD_SECRET = "cs_zq7badsecret5b7d9f1a3c5e7b9d1f3a5c7e"
WOO_WEBHOOK_SECRET = "whsec-zq7woo-Rt5Yu8Io"
SHOPIFY_TOKEN = "shpat_zq7shoptoken1a2b3c4d5e6f7a8b9c0d1e"
SHOPIFY_WEBHOOK_SECRET = "shwhsec-zq7shop-Gh3Jk6Lm"
JSONDIR_WEBHOOK_SECRET = "jdwhsec-zq7json-Vb9Nm2Qw"
SECRETS = {
    "hub token": HUB_TOKEN,
    "WooCommerce consumer key": WOO_KEY,
    "WooCommerce consumer secret": WOO_SECRET,
    "refused WooCommerce consumer key": WOO_BAD_KEY,
    "refused WooCommerce consumer secret": WOO_BAD_SECRET,
    "WooCommerce webhook secret": WOO_WEBHOOK_SECRET,
    "Shopify access token": SHOPIFY_TOKEN,
    "Shopify webhook secret": SHOPIFY_WEBHOOK_SECRET,
    "jsondir webhook secret": JSONDIR_WEBHOOK_SECRET,
}
WEBHOOK_LIMIT = 64 * 1024  # [webhooks] max_body_bytes in these tests: oversize stays cheap
HUB_LIMIT = 64 * 1024  # the hub's max_body_bytes in these tests


def leaks(text: str | bytes) -> list[str]:
    """Which secrets `text` shows, as such or in the encodings a request would carry them in
    (HTTP Basic's base64 of `key:secret`, and percent-encoding, which leaves these unchanged)."""
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    found = []
    for name, value in SECRETS.items():
        if value.encode() in data:
            found.append(name)
    for key, secret in ((WOO_KEY, WOO_SECRET), (WOO_BAD_KEY, WOO_BAD_SECRET)):
        if base64.b64encode(f"{key}:{secret}".encode()) in data:
            found.append(f"Basic credentials of {key[:8]}")
    return found


# -- the world: a hub, a WooCommerce and a Shopify simulator, all on loopback --------------------


@dataclass
class HubServer:
    """The reference hub with the test's token; the first `fail_batches` batches answer 503."""

    db: Path
    fail_batches: int = 0
    max_body_bytes: int = 16 * 1024 * 1024
    batches_seen: int = 0
    server: TestServer | None = None

    @web.middleware
    async def faults(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method == "POST" and request.path == "/v1/batches":
            self.batches_seen += 1
            if self.batches_seen <= self.fail_batches:
                await request.read()
                return web.Response(status=503, text="hub down for maintenance\n")
        return await handler(request)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.port}"

    async def products(self, store: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {HUB_TOKEN}"}, timeout=10
        ) as http:
            answer = await http.get(f"/v1/stores/{store}/products", params={"limit": 1000})
            products: list[dict[str, Any]] = answer.json()["products"]
            return products


@contextlib.asynccontextmanager
async def hub_server(tmp_path: Path, **options: Any) -> AsyncIterator[HubServer]:
    hub = HubServer(tmp_path / "hub.sqlite", **options)
    app = make_hub_app(hub.db, HUB_TOKEN, max_body_bytes=hub.max_body_bytes)
    app.middlewares.insert(0, hub.faults)
    hub.server = TestServer(app, host="127.0.0.1", port=0)
    await hub.server.start_server()
    try:
        yield hub
    finally:
        await hub.server.close()


@dataclass
class World:
    hub: HubServer
    woo: WooSimulator
    woo_url: str
    shop: ShopifySimulator
    shop_url: str

    def stores(self, root: Path) -> tuple[StoreSettings, ...]:
        """A WooCommerce, a Shopify and a jsondir store, each able to take webhooks."""
        (root / "catalog").mkdir(exist_ok=True)
        quiet: dict[str, Any] = {
            "poll_interval": 3600.0, "reconcile_interval": 86400.0, "image_checks": False,
        }  # fmt: skip
        return (
            StoreSettings(
                id="woo", platform="woocommerce", url=self.woo_url, verify_schedule="off",
                secrets={"consumer_key": Secret(WOO_KEY), "consumer_secret": Secret(WOO_SECRET),
                         "webhook_secret": Secret(WOO_WEBHOOK_SECRET)},
                options={"api_prefix": "/wp-json/wc/v3", "per_page": 100, "verify_tls": True},
                **quiet,
            ),
            StoreSettings(
                id="shop", platform="shopify", url=self.shop_url, verify_schedule="off",
                secrets={"access_token": Secret(SHOPIFY_TOKEN),
                         "webhook_secret": Secret(SHOPIFY_WEBHOOK_SECRET)},
                options={"api_version": "2026-07", "bulk_import": False, "page_size": 50,
                         "verify_tls": True},
                **quiet,
            ),
            StoreSettings(
                id="main", platform="jsondir", url="http://127.0.0.1/", verify_schedule="off",
                spool_dir=root / "spool",
                secrets={"webhook_secret": Secret(JSONDIR_WEBHOOK_SECRET)},
                options={"catalog_dir": str(root / "catalog")},
                **quiet,
            ),
        )  # fmt: skip


@contextlib.asynccontextmanager
async def world(tmp_path: Path, **hub_options: Any) -> AsyncIterator[World]:
    woo = WooSimulator.generate(products=20, seed=3, webhook_delay=0.0, webhook_jitter=0.0)
    woo.keys[WOO_KEY] = ApiKey(WOO_KEY, WOO_SECRET)
    shop = ShopifySimulator.generate(products=20, seed=3)
    shop.access_token = SHOPIFY_TOKEN
    shop.client_secret = SHOPIFY_WEBHOOK_SECRET
    loop = asyncio.get_running_loop()
    woo_port: asyncio.Future[int] = loop.create_future()
    shop_port: asyncio.Future[int] = loop.create_future()
    tasks = [
        asyncio.create_task(serve_woo(woo, "127.0.0.1", 0, ready=woo_port.set_result)),
        asyncio.create_task(serve_shopify(shop, "127.0.0.1", 0, ready=shop_port.set_result)),
    ]
    try:
        async with hub_server(tmp_path, **hub_options) as hub:
            ports = await asyncio.wait_for(asyncio.gather(woo_port, shop_port), 30)
            yield World(
                hub, woo, f"http://127.0.0.1:{ports[0]}", shop, f"http://127.0.0.1:{ports[1]}"
            )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await woo.close()
        await shop.close()


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


def agent_config(tmp_path: Path, w: World, **webhook_options: Any) -> Config:
    config: Config = make_config(tmp_path, w.hub.url, token=HUB_TOKEN)
    webhooks = replace(config.webhooks, **webhook_options)
    return replace(config, stores=w.stores(tmp_path), webhooks=webhooks)


def _sign_woo(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


# What each platform's route is and how a genuine sender signs a delivery to it.
WEBHOOK_ROUTES: dict[str, tuple[str, Callable[[bytes], dict[str, str]]]] = {
    "woocommerce": (
        "/webhooks/woocommerce/woo",
        lambda body: {"X-WC-Webhook-Signature": _sign_woo(WOO_WEBHOOK_SECRET, body),
                      "X-WC-Webhook-Topic": "product.updated"},
    ),
    "shopify": (
        "/webhooks/shopify/shop",
        lambda body: {"X-Shopify-Hmac-Sha256": _sign_woo(SHOPIFY_WEBHOOK_SECRET, body),
                      "X-Shopify-Topic": "products/update"},
    ),
    "jsondir": (
        "/webhooks/jsondir/main",
        lambda body: {"X-Signature": _sign_woo(JSONDIR_WEBHOOK_SECRET, body)},
    ),
}  # fmt: skip


# -- listening sockets, read back from the kernel -----------------------------------------------


def _socket_inodes(pid: int | str = "self") -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """`/proc/net/tcp*`'s address: host-order 32-bit words in hex (little-endian here)."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(words) == 4:
        return ipaddress.IPv4Address(words)
    address = ipaddress.IPv6Address(words)
    return address.ipv4_mapped or address


def listening_sockets(pid: int | str = "self") -> dict[int, tuple[str, int]]:
    """{inode: (address, port)} of the TCP sockets in LISTEN state that `pid` holds."""
    mine = _socket_inodes(pid)
    found: dict[int, tuple[str, int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], int(fields[9])
                if state == "0A" and inode in mine:  # 0A: TCP_LISTEN
                    host, port = local.split(":")
                    found[inode] = (str(_address(host)), int(port, 16))
    return found


needs_proc = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(), reason="reads listening sockets from Linux's /proc/net"
)


@needs_proc
async def test_every_listener_of_a_default_agent_is_on_loopback(tmp_path: Path) -> None:
    # The documented defaults, with the OS choosing the port (the fixed ones may be taken).
    health, webhooks = HealthSettings().listen, WebhookSettings().listen
    assert is_loopback(health.host) and is_loopback(webhooks.host)
    async with world(tmp_path) as w:
        config = agent_config(tmp_path, w, listen=Listen(webhooks.host, 0))
        config = replace(config, health=HealthSettings(listen=Listen(health.host, 0)))
        before = listening_sockets()
        async with running(config) as agent:
            await until(lambda: agent.webhook_port is not None, 20, what="the webhook listener")
            assert agent.health_port is not None
            bound = {k: v for k, v in listening_sockets().items() if k not in before}
    ports = {port for _, port in bound.values()}
    assert {agent.health_port, agent.webhook_port} <= ports, bound
    outside = {a for a in bound.values() if not ipaddress.ip_address(a[0]).is_loopback}
    assert not outside, f"the agent listens beyond loopback: {outside}"


@needs_proc
async def test_a_configured_listen_address_is_honoured(tmp_path: Path) -> None:
    # Binding the wildcard address sends nothing anywhere: only the socket's address is read.
    config = make_config(tmp_path, "http://127.0.0.1:9", token=HUB_TOKEN)
    config = replace(config, health=HealthSettings(listen=Listen("0.0.0.0", 0)))
    before = listening_sockets()
    async with running(config) as agent:
        bound = {k: v for k, v in listening_sockets().items() if k not in before}
        assert (("0.0.0.0", agent.health_port)) in bound.values(), bound


# -- bounded bodies -------------------------------------------------------------------------------


async def _send_partial(
    port: int, path: str, headers: dict[str, str], declared: int, sent: bytes
) -> bytes:
    """Send a request head declaring `declared` body bytes and only `sent` of them; return what
    the server answers meanwhile (its status line first). A server that waited for the whole
    body would answer nothing here, and the read would time out."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {declared}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + sent)
        await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _send_chunked(port: int, path: str, headers: dict[str, str], total: int) -> int:
    """POST `total` bytes in chunks without a Content-Length; the status answered."""
    chunk = b"x" * 8192

    async def body() -> AsyncIterator[bytes]:
        for _ in range(total // len(chunk)):
            yield chunk

    async with httpx.AsyncClient(timeout=10) as http:
        try:
            answer = await http.post(f"http://127.0.0.1:{port}{path}", content=body(),
                                     headers=headers)  # fmt: skip
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
            return 413  # closed under the upload after answering: only 413 closes early here
        return answer.status_code


async def test_an_oversized_webhook_is_refused_unread_and_records_nothing(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        config = agent_config(tmp_path, w, listen=Listen("127.0.0.1", 0),
                              max_body_bytes=WEBHOOK_LIMIT)  # fmt: skip
        async with running(config) as agent:
            await until(lambda: agent.webhook_port is not None, 20, what="the webhook listener")
            port = agent.webhook_port
            assert port is not None
            for platform, (path, sign) in WEBHOOK_ROUTES.items():
                # Correctly signed: the size alone refuses it.
                body = json.dumps({"id": 1, "pad": "x" * (WEBHOOK_LIMIT * 4)}).encode()
                headers = {**sign(body), "Content-Type": "application/json"}
                head = await _send_partial(port, path, headers, len(body), body[:1024])
                assert head.startswith(b"HTTP/1.1 413"), (platform, head)
                status = await _send_chunked(port, path, headers, WEBHOOK_LIMIT * 3)
                assert status == 413, platform
            for store in ("woo", "shop", "main"):
                count = agent.metrics.value
                assert count("bridge_webhooks_total", store=store, outcome="accepted") == 0
                # Both refusals counted, the chunked one too: an operator sees them.
                assert count("bridge_webhooks_total", store=store, outcome="too_large") == 2
    async with StateStore.open(tmp_path / "state", read_only=True) as state:
        for store in ("woo", "shop", "main"):
            assert await state.hint_count(store) == 0, store


def _hub_routes(app: web.Application) -> list[tuple[str, str, str]]:
    """(method, resource pattern, a concrete path) of every route of the hub's router."""
    return [
        (route.method, resource.canonical, _fill(resource.canonical))
        for resource in app.router.resources()
        for route in resource
    ]


def _fill(pattern: str) -> str:
    """A concrete path for a pattern such as `/v1/stores/{store}/products/{id}`."""
    out, depth = [], 0
    for ch in pattern:
        if ch == "{":
            depth += 1
            out.append("x")
        elif ch == "}":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


async def test_oversized_bodies_to_every_hub_post_route_are_refused_unread(
    tmp_path: Path,
) -> None:
    async with hub_server(tmp_path, max_body_bytes=HUB_LIMIT) as hub:
        assert hub.server is not None
        posts = [(p, path) for m, p, path in _hub_routes(hub.server.app) if m == "POST"]
        assert posts, "the hub has no POST route?"
        auth = {"Authorization": f"Bearer {HUB_TOKEN}"}
        before = await _hub_stats(hub)
        port = hub.server.port
        assert port is not None
        for pattern, path in posts:
            # Each route's own content type, so the size, not the type, is what refuses it.
            kind = "application/json" if pattern.endswith("/optimizations") else wire.CONTENT_TYPE
            headers = {**auth, "Content-Type": kind}
            head = await _send_partial(port, path, headers, HUB_LIMIT * 8, b"\x90" * 512)
            assert head.startswith(b"HTTP/1.1 413"), (pattern, head)
            status = await _send_chunked(port, path, headers, HUB_LIMIT * 3)
            assert status == 413, pattern
        assert await _hub_stats(hub) == before
        async with httpx.AsyncClient(base_url=hub.url, headers=auth, timeout=10) as http:
            feed = await http.get("/v1/stores/x/optimizations")
        assert wire.decode_feed(feed.content).optimizations == ()


async def _hub_stats(hub: HubServer) -> Any:
    async with httpx.AsyncClient(
        base_url=hub.url, headers={"Authorization": f"Bearer {HUB_TOKEN}"}, timeout=10
    ) as http:
        return (await http.get("/v1/stats")).json()


async def test_the_hub_client_refuses_an_oversized_reply_without_reading_it_whole() -> None:
    # The agent's hub client is built without a reply bound of its own: the default applies.
    assert 0 < MAX_REPLY_BYTES <= 64 * 1024 * 1024
    limit, sent = 256 * 1024, 0
    total = limit * 64

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        answer = web.StreamResponse(headers={"Content-Type": wire.CONTENT_TYPE})
        await answer.prepare(request)
        with contextlib.suppress(ConnectionError):
            while sent < total:
                await answer.write(b"\x00" * 65536)
                sent += 65536
        return answer

    app = web.Application()
    app.router.add_post("/v1/batches", endless)
    async with (
        TestServer(app, host="127.0.0.1", port=0) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http,
    ):
        client = HubClient(http, HUB_TOKEN, max_reply_bytes=limit)
        with pytest.raises(HubUnavailable) as caught:
            await client.send(b"\x90")
    assert HUB_TOKEN not in str(caught.value) and HUB_TOKEN not in repr(caught.value)
    assert sent < total, "the client read the whole oversized reply"


# -- the hub's token on every route ---------------------------------------------------------------

# Routes a caller may reach without the token, each with the reason it is safe.
UNAUTHENTICATED = {
    # Liveness for a load balancer or an orchestrator, which hold no token; it answers a fixed
    # {"status": "ok"} and reads nothing from the database.
    "/healthz",
}


async def test_every_hub_route_requires_the_token(tmp_path: Path) -> None:
    async with hub_server(tmp_path) as hub:
        assert hub.server is not None
        routes = _hub_routes(hub.server.app)
        assert {m for m, _, _ in routes} >= {"GET", "POST", "HEAD"}
        wrong = [
            {},
            {"Authorization": "Bearer"},
            {"Authorization": "Bearer not-the-token"},
            {"Authorization": f"Bearer {HUB_TOKEN}x"},
            {"Authorization": f"Bearer {HUB_TOKEN[:-1]}"},
            {"Authorization": f"Basic {HUB_TOKEN}"},
            {"Authorization": HUB_TOKEN},
        ]
        checked = 0
        async with httpx.AsyncClient(base_url=hub.url, timeout=10) as http:
            for method, pattern, path in routes:
                if pattern in UNAUTHENTICATED:
                    continue
                for headers in wrong:
                    answer = await http.request(method, path, headers=headers)
                    assert answer.status_code == 401, (method, pattern, headers)
                    assert HUB_TOKEN not in answer.text
                # With the token the same request reaches the route: the 401 was the token's.
                good = await http.request(
                    method, path, headers={"Authorization": f"Bearer {HUB_TOKEN}"}
                )
                assert good.status_code != 401, (method, pattern)
                checked += 1
            # A path the router does not know is refused the same way: no route map for free.
            assert (await http.get("/v1/nothing-here")).status_code == 401
    assert checked >= 10


# -- no secret anywhere ---------------------------------------------------------------------------

SECRET_ENV = {
    "ZQ_HUB_TOKEN": HUB_TOKEN,
    "ZQ_WOO_KEY": WOO_KEY,
    "ZQ_WOO_SECRET": WOO_SECRET,
    "ZQ_WOO_BAD_KEY": WOO_BAD_KEY,
    "ZQ_WOO_BAD_SECRET": WOO_BAD_SECRET,
    "ZQ_WOO_WEBHOOK_SECRET": WOO_WEBHOOK_SECRET,
    "ZQ_SHOP_TOKEN": SHOPIFY_TOKEN,
    "ZQ_SHOP_WEBHOOK_SECRET": SHOPIFY_WEBHOOK_SECRET,
    "ZQ_JSON_WEBHOOK_SECRET": JSONDIR_WEBHOOK_SECRET,
}
QUIET_STORE = (
    'poll_interval = "1h"\nreconcile_interval = "24h"\nverify_schedule = "off"\n'
    "image_checks = false\n"
)


def _agent_toml(w: World, health: int, webhooks: int) -> str:
    """Secrets by `${ENV}` reference, as design.md asks; debug logging, to catch the most."""
    return f"""
[agent]
id = "secrets-agent"
state_dir = "state"
drain_timeout = "3s"
log_level = "debug"
[hub]
url = "{w.hub.url}"
token = "${{ZQ_HUB_TOKEN}}"
batch_linger = 0
backoff_base = 0.05
backoff_cap = 0.2
[health]
listen = "127.0.0.1:{health}"
[webhooks]
listen = "127.0.0.1:{webhooks}"
[[stores]]
id = "woo"
platform = "woocommerce"
url = "{w.woo_url}"
consumer_key = "${{ZQ_WOO_KEY}}"
consumer_secret = "${{ZQ_WOO_SECRET}}"
webhook_secret = "${{ZQ_WOO_WEBHOOK_SECRET}}"
{QUIET_STORE}
[[stores]]
id = "woobad"
platform = "woocommerce"
url = "{w.woo_url}"
consumer_key = "${{ZQ_WOO_BAD_KEY}}"
consumer_secret = "${{ZQ_WOO_BAD_SECRET}}"
{QUIET_STORE}
[[stores]]
id = "shop"
platform = "shopify"
url = "{w.shop_url}"
access_token = "${{ZQ_SHOP_TOKEN}}"
webhook_secret = "${{ZQ_SHOP_WEBHOOK_SECRET}}"
bulk_import = false
page_size = 50
{QUIET_STORE}
[[stores]]
id = "main"
platform = "jsondir"
url = "http://127.0.0.1/"
catalog_dir = "catalog"
spool_dir = "spool"
webhook_secret = "${{ZQ_JSON_WEBHOOK_SECRET}}"
{QUIET_STORE}
"""


def _cli(config: Path, *argv: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bridge_agent", "--config", str(config), *argv],
        capture_output=True, text=True, timeout=60, env=env, cwd=config.parent,
    )  # fmt: skip
    return f"$ bridge-agent {' '.join(argv)} (exit {done.returncode})\n{done.stdout}{done.stderr}"


def _broken_config(good: str, hub_url: str) -> str:
    """agent.toml with mistakes next to (or instead of) the secrets, literal values in them:
    what an operator's typos put in front of the loader's error messages. The loader reports
    every problem of a file at once, so one file carries them all."""
    mistakes = [
        ('token = "${ZQ_HUB_TOKEN}"', f'tokn = "{HUB_TOKEN}"'),  # unknown key holding a secret
        ("batch_linger = 0", f'batch_linger = "{WOO_SECRET}"'),  # a secret in a non-secret key
        ('url = "http://127.0.0.1/"', f'url = "{SHOPIFY_TOKEN}"'),  # a secret as a url
        ('drain_timeout = "3s"', f'drain_timeout = "{JSONDIR_WEBHOOK_SECRET}"'),  # as a duration
        ("page_size = 50", f'page_size = "{SHOPIFY_TOKEN}"'),  # as a number
        ("${ZQ_WOO_BAD_SECRET}", WOO_BAD_SECRET),  # a literal secret beside an unknown table
        ("[health]", f'[healt]\nx = "{WOO_BAD_KEY}"\n[health]'),
        (f'url = "{hub_url}"', f'url = "http://user:{WOO_WEBHOOK_SECRET}@hub.invalid"'),
    ]
    for old, new in mistakes:
        assert old in good, old
        good = good.replace(old, new, 1)
    return good


async def test_no_configured_secret_appears_in_any_output(tmp_path: Path) -> None:
    outputs: dict[str, str | bytes] = {}
    async with world(tmp_path, fail_batches=3) as w:  # the first batches meet a hub 503
        (tmp_path / "catalog").mkdir()
        (tmp_path / "catalog" / "p1.json").write_text(
            json.dumps({"id": "p1", "title": "One", "url": "http://127.0.0.1/p1"}),
            encoding="utf-8",
        )
        incoming = tmp_path / "spool" / "incoming"
        incoming.mkdir(parents=True)
        (incoming / "garbage.json").write_bytes(b"{not json")  # refused: a .why note
        health, webhooks = free_port(), free_port()
        config = tmp_path / "agent.toml"
        good = _agent_toml(w, health, webhooks)
        config.write_text(good, encoding="utf-8")
        env = {**os.environ, **SECRET_ENV, "PYTHONUNBUFFERED": "1"}
        log_file = tmp_path / "agent.log"
        with log_file.open("wb") as sink:
            agent = subprocess.Popen(  # noqa: ASYNC220 - a child process for its real output
                [sys.executable, "-m", "bridge_agent", "--config", str(config),
                 "--log-format", "json", "run"],
                stdout=sink, stderr=sink, env=env, cwd=tmp_path,
            )  # fmt: skip
            try:
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{health}", timeout=10
                ) as local:

                    async def settled() -> bool:
                        if agent.poll() is not None:
                            raise AssertionError(log_file.read_text(errors="replace")[-3000:])
                        try:
                            doc = (await local.get("/status")).json()
                        except httpx.HTTPError:
                            return False
                        woobad = doc["stores"]["woobad"]
                        return (
                            len(await w.hub.products("woo")) >= 20
                            and len(await w.hub.products("shop")) >= 20
                            and woobad["ok"] is False
                            and doc["stores"]["main"]["spool"]["rejected"] >= 1
                        )

                    await until(settled, 45, what="imports, a refused store and spool", every=0.2)
                    assert w.hub.batches_seen > 3  # the 503s were met and got past
                    for platform, (path, sign) in WEBHOOK_ROUTES.items():
                        body = json.dumps({"id": "p1", "topic": "product.updated"}).encode()
                        forged = {k: _sign_woo("not-the-secret", body) for k in sign(body)}
                        answer = await local.post(
                            f"http://127.0.0.1:{webhooks}{path}", content=body, headers=forged
                        )
                        assert answer.status_code == 401, platform
                        outputs[f"webhook answer {platform}"] = answer.text
                    for route in ("/metrics", "/status", "/healthz"):
                        outputs[f"GET {route}"] = (await local.get(route)).text
                outputs["status"] = _cli(config, "status", env=env)
                outputs["status --json"] = _cli(config, "status", "--json", env=env)
                outputs["log --json"] = _cli(config, "log", "--json", "--limit", "1000", env=env)
                outputs["log"] = _cli(config, "log", "--limit", "1000", env=env)
                outputs["validate"] = _cli(config, "validate", env=env)
                broken = tmp_path / "broken.toml"
                broken.write_text(_broken_config(good, w.hub.url), encoding="utf-8")
                outputs["validate, broken"] = told = _cli(broken, "validate", env=env)
                assert "(exit 78)" in told, told
                assert leaks(broken.read_text(encoding="utf-8")), "the search finds nothing?"
                for key in ("tokn", "batch_linger", "drain_timeout", "page_size", "healt"):
                    assert key in told, (key, told)  # each mistake was reported, masked
            finally:
                if agent.poll() is None:
                    agent.send_signal(signal.SIGTERM)
                await asyncio.to_thread(agent.wait, 30)
        outputs["agent stdout and stderr"] = log_file.read_bytes()
    assert (
        b"store_auth" in outputs["agent stdout and stderr"]
        or b"401" in outputs["agent stdout and stderr"]
    )
    files = [p for d in ("state", "spool") for p in (tmp_path / d).rglob("*") if p.is_file()]
    assert tmp_path / "state" / DB_NAME in files, files
    for file in files:  # the database, its -wal if left, spool notes
        outputs[f"file {file.relative_to(tmp_path)}"] = file.read_bytes()
    found = {name: hits for name, text in outputs.items() if (hits := leaks(text))}
    assert not found, f"secrets leaked: {found}"


async def test_errors_and_config_reprs_show_no_secret(tmp_path: Path) -> None:
    """str, repr, args and the traceback of what the agent raises on a store 401, a store that
    cannot be reached (the OAuth query string of plain http carries the key), a hub 503 and a
    hub 401; and the loaded configuration's own repr."""
    async with world(tmp_path, fail_batches=1) as w:
        (tmp_path / "catalog").mkdir(exist_ok=True)
        config_file = tmp_path / "agent.toml"
        config_file.write_text(_agent_toml(w, free_port(), free_port()), encoding="utf-8")
        config = load_config(config_file, env=SECRET_ENV)
        raised: list[BaseException] = []
        async with httpx.AsyncClient(timeout=5) as http:
            for store, url in (("woobad", w.woo_url), ("woo", f"http://127.0.0.1:{free_port()}")):
                settings = replace(config.store(store), url=url)
                with pytest.raises(BridgeError) as caught:
                    await WooCommerce.from_settings(settings, http).check()
                raised.append(caught.value)
        async with httpx.AsyncClient(base_url=w.hub.url, timeout=5) as http:
            with pytest.raises(HubUnavailable) as down:  # the hub's 503
                await HubClient(http, HUB_TOKEN).send(b"\x90")
            raised.append(down.value)
            with pytest.raises(HubAuthFailed) as refused:  # a token the hub does not know
                await HubClient(http, WOO_SECRET).request("GET", "/v1/stats")
            raised.append(refused.value)
    texts = {"repr(config)": repr(config), "str(config)": str(config)}
    for i, exc in enumerate(raised):
        texts[f"{i} {type(exc).__name__}"] = "\n".join(
            [str(exc), repr(exc), repr(exc.args), repr(vars(exc)) if hasattr(exc, "__dict__")
             else "", *traceback.format_exception(exc)]
        )  # fmt: skip
    found = {name: hits for name, text in texts.items() if (hits := leaks(text))}
    assert not found, f"secrets shown: {found}"


# -- TLS verification -----------------------------------------------------------------------------

# Keywords that turn certificate or host-key checking off, with the value that does it.
INSECURE = {"verify": False, "ssl": False, "verify_ssl": False, "known_hosts": None}
# A non-literal value for one of them is allowed only here, each with its reason.
REVIEWED = {
    # A store's own `verify_tls` option (default true, per store): a shop on a self-signed
    # certificate can be reached without turning verification off for the hub or other stores.
    ("agent.py", "_client", "verify"),
    ("stores.py", "_open", "verify"),
    ("cli.py", "*", "verify"),
    # The export's SFTP destination: the operator's known_hosts file, a required setting (the
    # loader refuses a destination without it), so the server's host key is always checked.
    ("sftp.py", "_connect", "known_hosts"),
}
CLIENTS = {"AsyncClient", "Client", "ClientSession", "TCPConnector", "connect", "client",
           "resource", "request", "get", "post", "stream"}  # fmt: skip


@functools.cache
def package_trees() -> dict[str, ast.Module]:
    """{path in the package: its syntax tree}, parsed in a child process: CPython 3.11.7's AST
    conversion fails ("recursion depth mismatch") in a process that has already formatted a
    traceback (`traceback` parses source lines with `ast`), as any test process has."""
    code = (
        "import ast, pathlib, pickle, sys\n"
        "root = pathlib.Path(sys.argv[1])\n"
        "trees = {str(p.relative_to(root)): ast.parse(p.read_bytes(), str(p))"
        " for p in sorted(root.rglob('*.py'))}\n"
        "sys.stdout.buffer.write(pickle.dumps(trees))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(PACKAGE)], capture_output=True, check=True, timeout=60
    )
    trees: dict[str, ast.Module] = pickle.loads(done.stdout)
    return trees


def _outbound_calls() -> Iterator[tuple[str, str, int, str, ast.expr]]:
    """(file, enclosing function, line, keyword, value) of every TLS keyword in a call that
    could build or use a client, anywhere in the package."""
    for rel, tree in package_trees().items():
        functions = [
            n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = (
                node.func.attr
                if isinstance(node.func, ast.Attribute)
                else getattr(node.func, "id", "")
            )
            for keyword in node.keywords:
                # Outside a client call (a settings object, say) only a literal off counts.
                literal = isinstance(keyword.value, ast.Constant)
                if keyword.arg in INSECURE and (name in CLIENTS or literal):
                    inside = [
                        f.name
                        for f in functions
                        if f.lineno <= node.lineno <= (f.end_lineno or f.lineno)
                    ]
                    yield (rel, inside[-1] if inside else "",
                           node.lineno, keyword.arg, keyword.value)  # fmt: skip


def test_no_client_in_the_package_turns_tls_verification_off() -> None:
    found = list(_outbound_calls())
    assert found, "the scan found no client at all: it is looking in the wrong place"
    for file, function, line, keyword, value in found:
        where = f"{file}:{line} ({function}) {keyword}={ast.unparse(value)}"
        if isinstance(value, ast.Constant):
            assert value.value != INSECURE[keyword], f"verification turned off: {where}"
            continue
        reviewed = (Path(file).name, function, keyword) in REVIEWED or (
            Path(file).name,
            "*",
            keyword,
        ) in REVIEWED
        assert reviewed, f"{where}: a computed TLS setting; review it and add it to REVIEWED"
    # Nor by the ssl module's back doors.
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for door in ("CERT_NONE", "_create_unverified_context", "check_hostname = False"):
            assert door not in text, f"{path.relative_to(ROOT)} uses {door}"


def test_verify_tls_defaults_on_for_every_platform() -> None:
    # The one computed TLS setting (REVIEWED) comes from here: it must start out on.
    remote = 0
    for name in platforms.available():
        options = getattr(platforms.load(name), "settings_spec").options  # noqa: B009
        if "verify_tls" in options:
            assert options["verify_tls"].default is True, name
            remote += 1
    assert remote >= 2  # WooCommerce and Shopify at least


@contextlib.contextmanager
def self_signed(tmp_path: Path) -> Iterator[ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1 that no CA signed."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    yield context


async def test_the_agents_clients_refuse_a_self_signed_server(tmp_path: Path) -> None:
    requests: list[str] = []

    async def anything(request: web.Request) -> web.Response:
        requests.append(f"{request.method} {request.path} {dict(request.headers)}")
        return web.Response(status=200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    with self_signed(tmp_path) as context:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
    try:
        url = f"https://127.0.0.1:{runner.addresses[0][1]}"
        config = make_config(tmp_path, url, token=HUB_TOKEN)
        woo = StoreSettings(
            id="woo", platform="woocommerce", url=url, verify_schedule="off",
            secrets={"consumer_key": Secret(WOO_KEY), "consumer_secret": Secret(WOO_SECRET)},
            options={"api_prefix": "/wp-json/wc/v3", "per_page": 100, "verify_tls": True},
        )  # fmt: skip
        config = replace(config, stores=(*config.stores, woo))
        # A product to ship, so the hub client has a batch to send.
        (tmp_path / "catalog" / "p1.json").write_text(
            json.dumps({"id": "p1", "title": "One"}), encoding="utf-8"
        )
        async with running(config) as agent:

            async def refused() -> bool:
                doc = (await local.get("/status")).json()
                hub, store = doc["hub"], doc["stores"]["woo"]
                return (
                    "CERTIFICATE_VERIFY_FAILED" in (hub["detail"] or "")
                    and store["ok"] is False
                    and "CERTIFICATE" in (store["detail"] or "").upper()
                )

            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{agent.health_port}", timeout=10
            ) as local:
                await until(refused, 30, what="the hub and store clients refusing the certificate")
        # The image checker's own session (aiohttp) refuses it too.
        checker = ImageChecker(timeout=5)
        checker.submit([f"{url}/image.jpg"])
        report = await checker.finish(grace=10)
        await checker.cancel()
        assert report.unreachable == 1, report
    finally:
        await runner.cleanup()
    assert requests == [], "a request (and its credentials) reached an unverified server"


# -- file modes under the unit's umask ------------------------------------------------------------


def _unit_values(key: str) -> list[str]:
    found = []
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        name, sep, value = raw.strip().partition("=")
        if sep and not raw.lstrip().startswith(("#", ";")) and name.strip() == key:
            found.append(value.strip())
    return found


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


async def test_files_the_agent_creates_keep_the_units_umask(tmp_path: Path) -> None:
    (mask_text,) = _unit_values("UMask")
    mask = int(mask_text, 8)
    assert mask & 0o007 == 0o007, "the unit's umask must at least remove every world bit"
    root = tmp_path / "root"
    root.mkdir()
    os.chmod(root, 0o755)
    incoming = root / "spool" / "incoming"
    # The store-side plugin writes the spool's incoming/ (as the web server): made here, wide.
    incoming.mkdir(parents=True)
    (incoming / "garbage.json").write_bytes(b"{not json")
    config = make_config(root, "http://127.0.0.1:9", token=HUB_TOKEN)
    with umask(mask):
        async with running(config):
            await until((root / "spool" / "rejected" / "garbage.json.why").exists, 20,
                        what="the refused spool file's note")  # fmt: skip
    created = [root / "state", *(root / "state").rglob("*"), root / "spool" / "rejected",
               root / "spool" / "rejected" / "garbage.json.why"]  # fmt: skip
    assert root / "state" / DB_NAME in created, created
    for path in created:
        mode = path.stat().st_mode & 0o777
        assert mode & mask == 0, f"{path.relative_to(root)} is {mode:o} under umask {mask:03o}"


async def test_state_files_are_private_even_under_a_lax_umask(tmp_path: Path) -> None:
    # A developer's shell (umask 022) runs the agent too: the database and its -wal and -shm
    # files hold the catalog and must still be the agent user's alone.
    with umask(0o022):
        async with StateStore.open(tmp_path / "state") as state:
            await state.add_hints("main", ["1"], "webhook")
            files = [tmp_path / "state", *(tmp_path / "state").iterdir()]
            assert any(p.name.endswith("-wal") for p in files), files
            for path in files:
                mode = path.stat().st_mode & 0o777
                assert mode & 0o077 == 0, f"{path.name} is {mode:o}"


# Every chmod in the package, with the widest mode it may set and why that is safe.
CHMODS = {
    "store/state.py": 0o600,  # the state database: narrower than any umask
    "testing/soak.py": 0o600,  # test harness: token and config files
    "testing/chaos.py": 0o600,
}


def test_no_chmod_widens_a_mode_beyond_the_reviewed_ones() -> None:
    for rel, tree in package_trees().items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = (
                node.func.attr
                if isinstance(node.func, ast.Attribute)
                else getattr(node.func, "id", "")
            )
            if name not in ("chmod", "fchmod", "lchmod"):
                continue
            assert rel in CHMODS, f"{rel}:{node.lineno}: a chmod to review and add to CHMODS"
            modes = [a for a in node.args if isinstance(a, ast.Constant | ast.Name)]
            for arg in modes:
                value = (
                    arg.value if isinstance(arg, ast.Constant) else _module_constant(tree, arg.id)
                )
                if isinstance(value, int) and not isinstance(value, bool):
                    assert value & ~CHMODS[rel] & 0o7777 == 0, f"{rel}:{node.lineno}: {value:o}"


def _module_constant(tree: ast.Module, name: str) -> Any:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return node.value.value if isinstance(node.value, ast.Constant) else None
    return None


# -- the unit's hardening -------------------------------------------------------------------------

# What drives `systemd-analyze security` down to 2.0 or below for this unit, beyond what
# tests/test_systemd_unit.py already pins (UMask, StateDirectoryMode, capabilities, credentials):
# each setting with the value that earns its points.
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "DevicePolicy": "closed",
    "PrivateUsers": "yes",
    "PrivateIPC": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "ProtectProc": "invisible",
    "ProcSubset": "pid",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "SystemCallArchitectures": "native",
}


def test_the_unit_keeps_every_hardening_setting_the_exposure_score_relies_on() -> None:
    for key, value in HARDENING.items():
        assert _unit_values(key) == [value], key
    assert _unit_values("RestrictAddressFamilies") == ["AF_UNIX AF_INET AF_INET6"]
    filters = _unit_values("SystemCallFilter")
    assert "@system-service" in filters
    denied = {f for v in filters if v.startswith("~") for f in v[1:].split()}
    assert {"@privileged", "@resources"} <= denied
    assert _unit_values("User") and _unit_values("User") != ["root"]
    # Nothing that would undo the sandbox.
    for key in ("PermissionsStartOnly", "ReadWritePaths"):
        assert "/" not in [v.lstrip("-") for v in _unit_values(key)], key
