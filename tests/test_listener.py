"""The agent's listeners bound every wait on a client (`bridge_agent/listener.py`).

Real sockets on 127.0.0.1 against the real agent's two listeners (`health` and `webhooks`),
started with 0.3 s deadlines: a half-sent body, a trickled head and an idle kept-alive connection
are each closed within a bounded time, and one connection over `max_connections` is answered 503
until a slot frees. Normal traffic, kept-alive, still works with the default limits. A few rules
of the listener itself (the handler's own time is not on the clock, a client that stops reading
is cut off, refusals are bounded too) run against `listening()` with a small app; the config keys
are checked last.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from bridge_agent.agent import Agent
from bridge_agent.config import (
    HealthSettings,
    Listen,
    Secret,
    WebhookSettings,
    load_config,
)
from bridge_agent.errors import ConfigError
from bridge_agent.listener import ListenerLimits, listening
from bridge_agent.metrics import Metrics
from bridge_agent.testing.catalog import make_product, write_product
from bridge_agent.testing.waiting import until
from tests.conftest import Hub, make_config

CLOSED = "bridge_listener_connections_closed_total"
SECRET = "whsec-listener-5e0b"
SHORT = {"header_timeout": 0.3, "body_timeout": 0.3, "idle_timeout": 0.3}
BOUND = 5.0  # seconds a deadline of 0.3 s may take to show, on a slow machine
WEBHOOK = "/webhooks/jsondir/main"
LISTENERS = ["webhooks", "health"]
S = TypeVar("S", HealthSettings, WebhookSettings)


def _limited(settings: S, limits: dict[str, Any]) -> S:
    return replace(settings, **limits)


@asynccontextmanager
async def running(tmp_path: Path, hub: Hub, **limits: Any) -> AsyncIterator[Agent]:
    """The real agent, one jsondir store with a webhook secret, both listeners on port 0."""
    config = make_config(tmp_path, hub.url)
    store = replace(config.stores[0], secrets={"webhook_secret": Secret(SECRET)})
    config = replace(
        config,
        stores=(store,),
        health=_limited(HealthSettings(listen=Listen("127.0.0.1", 0)), limits),
        webhooks=_limited(WebhookSettings(listen=Listen("127.0.0.1", 0)), limits),
    )
    agent = Agent(config)
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await until(lambda: agent.webhook_port, 5, what="the webhook listener to bind")
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 20)


def port_of(agent: Agent, listener: str) -> int:
    port = agent.webhook_port if listener == "webhooks" else agent.health_port
    assert port is not None
    return port


def closed(agent: Agent, listener: str, reason: str) -> float:
    return agent.metrics.value(CLOSED, listener=listener, reason=reason)


# -- a raw HTTP/1.1 client: the tests must control every byte and the timing -----------------


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), BOUND)
        lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip()
            for name, value in (line.split(":", 1) for line in lines[1:] if line)
        }
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), BOUND)
        return int(lines[0].split()[1]), headers, body

    async def exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        await self.send(request)
        return await self.response()

    async def closed_within(self, seconds: float = BOUND) -> bytes:
        """What the server sent until it closed; fails if it is still open after `seconds`."""
        try:
            return await asyncio.wait_for(self.reader.read(), seconds)
        except ConnectionResetError:
            return b""
        except TimeoutError:
            raise AssertionError(f"the connection is still open after {seconds} s") from None

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):  # the server closed first
            await self.writer.wait_closed()


@asynccontextmanager
async def connected(port: int) -> AsyncIterator[Conn]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = Conn(reader, writer)
    try:
        yield conn
    finally:
        await conn.close()


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


def signed_post(body: bytes) -> bytes:
    signature = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest())
    head = (
        f"POST {WEBHOOK} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Signature: {signature.decode()}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def ordinary_request(listener: str) -> bytes:
    """A request each listener answers 200 at once."""
    return signed_post(b'{"ping": true}') if listener == "webhooks" else get("/healthz")


# -- (a) to (d): each fails on the code before listener.py --------------------------------------


@pytest.mark.parametrize("listener", LISTENERS)
async def test_a_half_sent_body_is_cut_off(tmp_path: Path, hub: Hub, listener: str) -> None:
    async with running(tmp_path, hub, **SHORT) as agent:
        path = WEBHOOK if listener == "webhooks" else "/healthz"
        async with connected(port_of(agent, listener)) as conn:
            await conn.send(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{{".encode()
            )
            sent = await conn.closed_within()
        if listener == "webhooks":
            # The receiver waits in `request.read()`: the body deadline cuts it off, unanswered.
            assert sent == b""
            await until(lambda: closed(agent, "webhooks", "body_timeout") == 1, BOUND)
        else:
            # The health routes read no body: 405 at once, and the unread rest no longer holds
            # the connection (aiohttp alone would linger on it).
            assert sent.startswith(b"HTTP/1.1 405 ")
            await until(lambda: closed(agent, "health", "idle_timeout") == 1, BOUND)


@pytest.mark.parametrize("listener", LISTENERS)
async def test_b_a_trickled_head_is_cut_off(tmp_path: Path, hub: Hub, listener: str) -> None:
    async with (
        running(tmp_path, hub, **SHORT) as agent,
        connected(port_of(agent, listener)) as conn,
    ):

        async def trickle() -> None:
            # One byte every 50 ms, far inside every deadline, a head that never ends.
            head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: slow\r\n" * 1000
            for byte in head:
                await conn.send(bytes([byte]))
                await asyncio.sleep(0.05)

        sender = asyncio.create_task(trickle())
        try:
            assert await conn.closed_within() == b""
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        await until(lambda: closed(agent, listener, "header_timeout") == 1, BOUND)


@pytest.mark.parametrize("listener", LISTENERS)
async def test_c_an_idle_kept_alive_connection_is_closed(
    tmp_path: Path, hub: Hub, listener: str
) -> None:
    async with (
        running(tmp_path, hub, **SHORT) as agent,
        connected(port_of(agent, listener)) as conn,
    ):
        status, headers, _ = await conn.exchange(ordinary_request(listener))
        assert status == 200
        assert headers.get("connection", "keep-alive").lower() != "close"  # kept alive
        assert await conn.closed_within() == b""
        await until(lambda: closed(agent, listener, "idle_timeout") == 1, BOUND)


@pytest.mark.parametrize("listener", LISTENERS)
async def test_d_one_connection_over_the_cap_is_refused_until_one_frees(
    tmp_path: Path, hub: Hub, listener: str
) -> None:
    cap = 3
    limits = {"header_timeout": 30.0, "idle_timeout": 30.0, "max_connections": cap}
    async with running(tmp_path, hub, **limits) as agent, AsyncExitStack() as stack:
        port = port_of(agent, listener)
        held = [await stack.enter_async_context(connected(port)) for _ in range(cap)]
        for conn in held:  # each one served, and kept open
            assert (await conn.exchange(ordinary_request(listener)))[0] == 200
        async with connected(port) as extra:
            status, headers, body = await extra.exchange(ordinary_request(listener))
            assert status == 503, f"a connection over the cap was answered {status}"
            assert headers["connection"].lower() == "close"
            assert b"too many connections" in body
            assert await extra.closed_within() == b""
        assert closed(agent, listener, "over_capacity") == 1

        await held.pop().close()

        async def served() -> int:
            async with connected(port) as conn:
                try:
                    return (await conn.exchange(ordinary_request(listener)))[0]
                except (asyncio.IncompleteReadError, ConnectionError):
                    return 0

        async def answered() -> bool:  # the server may not have seen the close yet
            return await served() == 200

        await until(answered, 5, what="a new connection to be served")
        for conn in held:  # the connections held all along still work
            assert (await conn.exchange(ordinary_request(listener)))[0] == 200


# -- (e) ordinary traffic, with the default limits ----------------------------------------------


async def test_e_webhooks_and_health_work_kept_alive(tmp_path: Path, hub: Hub) -> None:
    (tmp_path / "catalog").mkdir()
    write_product(tmp_path / "catalog", make_product(42))
    async with (
        running(tmp_path, hub) as agent,
        connected(port_of(agent, "webhooks")) as hooks,
        connected(port_of(agent, "health")) as health,
    ):
        assert agent.config.webhooks.header_timeout == 10.0  # the defaults, not the test's
        delivery = json.dumps({"topic": "product.updated", "id": 42}).encode()
        for _ in range(3):  # one connection, three deliveries
            status, _, body = await hooks.exchange(signed_post(delivery))
            assert (status, body) == (200, b"ok\n")
        assert (await hooks.exchange(signed_post(b'{"ping": true}')))[0] == 200
        for path in ("/healthz", "/metrics", "/status", "/healthz"):
            status, _, body = await health.exchange(get(path))
            assert status == 200, body
        metrics = (await health.exchange(get("/metrics")))[2].decode()
        assert 'bridge_listener_connections{listener="webhooks"} 1' in metrics
        assert 'bridge_listener_connections{listener="health"} 1' in metrics
        assert 'bridge_webhooks_total{outcome="accepted",store="main"} 3' in metrics
        assert not [line for line in metrics.splitlines() if line.startswith(CLOSED + "{")]


# -- the listener's own rules, on a small app ---------------------------------------------------


@asynccontextmanager
async def small_app(limits: ListenerLimits, metrics: Metrics) -> AsyncIterator[int]:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.sleep(float(request.query.get("work", "0")))
        return web.Response(body=body)

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (16 * 1024 * 1024))

    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_get("/big", big)
    async with listening(app, "127.0.0.1", 0, name="test", limits=limits, metrics=metrics) as port:
        yield port


async def test_the_handlers_own_time_is_not_on_the_clock() -> None:
    metrics = Metrics()
    async with (
        small_app(ListenerLimits(0.5, 0.5, 0.5, 4), metrics) as port,
        connected(port) as conn,
    ):
        # The body in two parts, inside the deadline; then a handler that works 0.8 s.
        await conn.send(b"POST /echo?work=0.8 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        await asyncio.sleep(0.1)
        status, _, body = await conn.exchange(b"cd")
        assert (status, body) == (200, b"abcd")
        status, _, body = await conn.exchange(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nef"
        )
        assert (status, body) == (200, b"ef")  # and the connection is still served
    assert metrics.value(CLOSED, listener="test", reason="body_timeout") == 0


async def test_a_client_that_stops_reading_the_answer_is_cut_off() -> None:
    metrics = Metrics()
    async with small_app(ListenerLimits(10.0, 0.3, 10.0, 4), metrics) as port:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        conn = Conn(reader, writer)
        try:
            await conn.send(get("/big"))  # and read nothing: the 16 MB answer stalls
            await until(
                lambda: metrics.value(CLOSED, listener="test", reason="send_timeout") == 1, BOUND
            )
            received = await conn.closed_within()  # what was in flight, then the end
            assert len(received) < 16 * 1024 * 1024
        finally:
            await conn.close()


async def test_refusals_are_bounded_too() -> None:
    metrics = Metrics()
    async with (
        small_app(ListenerLimits(10.0, 10.0, 10.0, 1), metrics) as port,
        connected(port) as served,
    ):
        assert (await served.exchange(get("/nothing")))[0] == 404  # served: the one slot
        async with connected(port) as refused, connected(port) as dropped:
            assert (await refused.response())[0] == 503  # lingers for the client's request
            assert await dropped.closed_within() == b""  # one refusal lingers: closed at once
        assert metrics.value(CLOSED, listener="test", reason="over_capacity") == 2


# -- settings -----------------------------------------------------------------------------------

CONFIG = """
[agent]
id = "shop-01"
state_dir = "state"

[hub]
url = "https://hub.example.com"
token = "hubtok-listener-1"

[[stores]]
id = "main"
platform = "jsondir"
url = "http://127.0.0.1/"
catalog_dir = "catalog"
"""


def load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "agent.toml"
    path.write_text(CONFIG + text, encoding="utf-8")
    return load_config(path, env={})


def test_listener_limits_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    limits = ("header_timeout", "body_timeout", "idle_timeout", "max_connections")
    assert [getattr(config.webhooks, k) for k in limits] == [10.0, 30.0, 75.0, 256]
    assert [getattr(config.health, k) for k in limits] == [10.0, 30.0, 75.0, 32]


def test_listener_limits_are_read(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        '[health]\nheader_timeout = "2s"\nmax_connections = 4\n'
        '[webhooks]\nheader_timeout = "250ms"\nbody_timeout = "1m"\nidle_timeout = 5\n'
        "max_connections = 1000\n",
    )
    assert (config.health.header_timeout, config.health.max_connections) == (2.0, 4)
    assert config.health.body_timeout == 30.0
    hooks = config.webhooks
    assert (hooks.header_timeout, hooks.body_timeout, hooks.idle_timeout) == (0.25, 60.0, 5.0)
    assert hooks.max_connections == 1000


def test_bad_listener_limits_are_all_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(
            tmp_path,
            '[health]\nheader_timeout = "0s"\nmax_connections = 0\nidle_timout = "1m"\n'
            '[webhooks]\nbody_timeout = "soon"\nidle_timeout = true\nmax_connections = "9"\n',
        )
    found = list(caught.value.problems)
    assert "[health] header_timeout: must be more than zero" in found
    assert "[health] max_connections: must be at least 1, got 0" in found
    assert any(
        p.startswith("[health] unknown key 'idle_timout'") and "idle_timeout" in p for p in found
    )
    assert any(p.startswith("[webhooks] body_timeout: 'soon' is not a duration") for p in found)
    assert any(p.startswith("[webhooks] idle_timeout: expected a duration") for p in found)
    assert "[webhooks] max_connections: expected an integer, got string" in found
    assert len(found) == 6, found
