"""Shared fixtures: a real reference hub on loopback, with programmable faults in front of it,
and a guard that fails a test which leaves asyncio tasks running after it ends."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge_agent.hub import make_app
from bridge_agent.hublink import HubClient
from bridge_agent.metrics import Metrics
from bridge_agent.shipper import Shipper, ShipperSettings
from bridge_agent.store import StateStore
from bridge_agent.sync.retry import Backoff

TOKEN = "test-hub-token-5c2d9e"
# The tail of an agent.toml for one jsondir store under the config's folder (catalog/, spool/).
JSONDIR_STORE = """[webhooks]
listen = "127.0.0.1:0"

[[stores]]
id = "main"
platform = "jsondir"
url = "http://127.0.0.1/"
catalog_dir = "catalog"
spool_dir = "spool"
"""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture(autouse=True, scope="session")
def loggers_never_cached() -> Iterator[None]:
    """No structlog logger caches its configuration in the test process.

    `logs.configure` (run by every in-process CLI call) asks structlog to cache each logger on
    first use, with the processor list of that moment. A later configuration brings a new list,
    which `structlog.testing.capture_logs` then edits, while a logger cached earlier keeps
    writing through the old one: a test's log capture would then depend on which tests ran
    before it. Caching is a speed-up for the daemon only, so tests turn it off.
    """
    real = structlog.configure

    def configure(**settings: Any) -> None:
        real(**{**settings, "cache_logger_on_first_use": False})

    structlog.configure = configure
    real(cache_logger_on_first_use=False)
    yield
    structlog.configure = real


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running once it and its fixtures have ended.

    Autouse, so it is set up before and torn down after every fixture the test uses: a task
    still pending then was started by the test and never awaited or cancelled, and would have
    run on, against a state the next test does not expect (pytest-asyncio would only cancel it
    silently when it closes the loop). A task cancelled but not yet awaited gets a few turns of
    the loop to finish. The leaked tasks are cancelled, so only this test fails.
    """
    yield
    for _ in range(5):
        await asyncio.sleep(0)
    me = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
    if not leaked:
        return
    names = sorted(f"{t.get_name()} ({t.get_coro()!r})" for t in leaked)
    for task in leaked:
        task.cancel()
    await asyncio.gather(*leaked, return_exceptions=True)
    pytest.fail(f"{len(leaked)} asyncio task(s) left running by the test: {'; '.join(names)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Faults:
    """Answers to give `POST /v1/batches` instead of the hub, in order; then the hub answers."""

    queue: list[Callable[[], web.StreamResponse]] = field(default_factory=list)
    batch_requests: int = 0
    bodies: list[bytes] = field(default_factory=list)

    def push(self, *answers: Callable[[], web.StreamResponse]) -> None:
        self.queue.extend(answers)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "POST" and request.path == "/v1/batches":
            self.batch_requests += 1
            self.bodies.append(await request.read())
            if self.queue:
                return self.queue.pop(0)()
        return await handler(request)


def status(code: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Any:
    return lambda: web.Response(status=code, headers=headers, body=body)


@dataclass
class Hub:
    """A reference hub serving on loopback, plus its fault injector and an inspection client."""

    url: str
    port: int
    db_path: Path
    faults: Faults
    server: TestServer | None = None

    async def start(self) -> None:
        app = make_app(self.db_path, TOKEN, max_body_bytes=self.max_body_bytes)
        app.middlewares.insert(0, self.faults.middleware)
        self.server = TestServer(app, host="127.0.0.1", port=self.port)
        await self.server.start_server()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    max_body_bytes: int = 16 * 1024 * 1024

    async def products(self, store: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        after = ""
        async with self.client() as client:
            while True:
                page = (
                    await client.get(
                        f"/v1/stores/{store}/products", params={"after": after, "limit": 1000}
                    )
                ).json()
                out.update({p["id"]: p for p in page["products"]})
                if not page["next"]:
                    return out
                after = page["next"]

    async def stats(self) -> dict[str, Any]:
        async with self.client() as client:
            doc: dict[str, Any] = (await client.get("/v1/stats")).json()
            return doc

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
        )


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    port = free_port()
    running = Hub(f"http://127.0.0.1:{port}", port, tmp_path / "hub.sqlite", Faults())
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[StateStore]:
    async with StateStore.open(tmp_path / "state") as store:
        yield store


@dataclass
class ShipperKit:
    shipper: Shipper
    metrics: Metrics
    http: httpx.AsyncClient


@pytest.fixture
async def make_shipper(
    state: StateStore,
) -> AsyncIterator[Callable[..., ShipperKit]]:
    clients: list[httpx.AsyncClient] = []

    def build(hub: Hub, *, token: str = TOKEN, **settings: Any) -> ShipperKit:
        http = httpx.AsyncClient(base_url=hub.url, timeout=5.0)
        clients.append(http)
        metrics = Metrics()
        options: dict[str, Any] = {
            "agent_id": "test-agent",
            "batch_linger": 0.0,
            "backoff": Backoff(base=0.01, cap=0.05),
        }
        options.update(settings)
        shipper = Shipper(state, HubClient(http, token), ShipperSettings(**options), metrics)
        return ShipperKit(shipper, metrics, http)

    yield build
    await asyncio.gather(*(c.aclose() for c in clients))


def make_config(root: Path, hub_url: str, *, token: str = TOKEN, **hub_options: Any) -> Any:
    """A Config for an agent with one jsondir store under `root`, every listener on port 0."""
    from bridge_agent.config import (  # noqa: PLC0415 - keep the fixture module light
        AgentSettings,
        Config,
        HealthSettings,
        HubSettings,
        Listen,
        Secret,
        StoreSettings,
        WebhookSettings,
    )

    (root / "catalog").mkdir(exist_ok=True)
    hub_settings: dict[str, Any] = {"batch_linger": 0.0, "backoff_base": 0.05, "backoff_cap": 0.2}
    hub_settings.update(hub_options)
    return Config(
        agent=AgentSettings(id="test-agent", state_dir=root / "state", drain_timeout=5.0),
        hub=HubSettings(url=hub_url, token=Secret(token), **hub_settings),
        health=HealthSettings(listen=Listen("127.0.0.1", 0)),
        # Never the default 8687: two suites (or a benchmark) on one machine would collide.
        webhooks=WebhookSettings(listen=Listen("127.0.0.1", 0)),
        stores=(
            StoreSettings(
                id="main",
                platform="jsondir",
                url="http://127.0.0.1/",
                spool_dir=root / "spool",
                options={"catalog_dir": str(root / "catalog")},
            ),
        ),
        source=root / "agent.toml",
    )
