"""The agent as a whole: root tasks, health/metrics/status, graceful stop and drain."""

from __future__ import annotations

import asyncio
import gc
import re
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from bridge_agent import platforms
from bridge_agent.agent import Agent, RootTaskExited
from bridge_agent.config import HealthSettings, Listen
from bridge_agent.errors import StateStoreLost
from bridge_agent.model import Product
from bridge_agent.platforms.base import CatalogPage
from bridge_agent.store import StateStore
from bridge_agent.testing.catalog import make_product, spool_event, write_product, write_spool
from bridge_agent.testing.waiting import until
from tests.conftest import Hub, make_config, status


class Running:
    def __init__(self, agent: Agent, task: asyncio.Task[None]) -> None:
        self.agent = agent
        self.task = task

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.agent.health_port}", timeout=5)

    async def stop(self) -> float:
        started = time.monotonic()
        self.agent.stop()
        await asyncio.wait_for(self.task, 30)
        return time.monotonic() - started


async def start(config: Any) -> Running:
    agent = Agent(config)
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, timeout=10, return_when="FIRST_COMPLETED")
    waiter.cancel()
    if task.done():
        task.result()  # raises what stopped the agent
    return Running(agent, task)


def feed(root: Path, *ids: int) -> None:
    for i in ids:
        write_product(root / "catalog", make_product(i))
    write_spool(root / "spool", [spool_event("product.updated", str(i)) for i in ids])


async def pending(root: Path) -> int:
    async with StateStore.open(root / "state") as state:
        return (await state.stats()).pending


async def test_health_metrics_status_and_delivery(tmp_path: Path, hub: Hub) -> None:
    running = await start(make_config(tmp_path, hub.url))
    try:
        feed(tmp_path, 1, 2, 3)

        async def delivered() -> bool:
            return len(await hub.products("main")) == 3

        await until(delivered)
        async with running.client() as client:
            health = await client.get("/healthz")
            assert health.status_code == 200
            checks = health.json()["checks"]
            assert set(checks) == {"state_store", "hub", "store:main"}
            assert all(c["ok"] for c in checks.values())

            metrics = (await client.get("/metrics")).text
            assert 'bridge_hub_items_total{status="ok"} 3' in metrics
            assert "bridge_outbox_pending_items 0" in metrics
            names = re.findall(r"^# TYPE (\S+) (\S+)$", metrics, flags=re.MULTILINE)
            assert names
            for name, kind in names:
                assert name.startswith("bridge_")
                assert (kind == "counter") == name.endswith("_total")
            assert 'id="' not in metrics and "product=" not in metrics  # no per-product labels

            doc = (await client.get("/status")).json()
            assert doc["outbox"] == {
                "pending": 0, "rejected": 0, "oldest_pending_age_seconds": None,
            }  # fmt: skip
            assert doc["last_shipment_at"] is not None
            assert doc["stores"]["main"]["products"] == 3
            assert doc["stores"]["main"]["spool"] == {
                "waiting": 0, "waiting_capped": False, "oldest_waiting_age_seconds": None,
                "rejected": 0, "error": None,
            }  # fmt: skip
            assert doc["hub"]["state"] == "ok"
    finally:
        assert await running.stop() < 10


async def test_health_is_503_and_names_the_hub_when_the_token_is_refused(
    tmp_path: Path, hub: Hub
) -> None:
    running = await start(make_config(tmp_path, hub.url, token="not-the-token"))
    try:
        feed(tmp_path, 1)

        async def refused() -> bool:
            async with running.client() as client:
                return (await client.get("/healthz")).status_code == 503

        await until(refused)
        async with running.client() as client:
            body = (await client.get("/healthz")).json()
        assert body["status"] == "failing"
        assert body["checks"]["hub"]["state"] == "auth_failed"
        assert "not-the-token" not in str(body)
    finally:
        await running.stop()
    assert await pending(tmp_path) == 1  # stopped shipping, lost nothing


async def test_stop_drains_the_outbox(tmp_path: Path, hub: Hub) -> None:
    await hub.stop()  # changes pile up while the hub is down
    running = await start(make_config(tmp_path, hub.url))
    feed(tmp_path, *range(1, 31))

    async def recorded() -> bool:
        async with running.client() as client:
            return (await client.get("/status")).json()["outbox"]["pending"] == 30

    await until(recorded)
    await hub.start()
    await running.stop()
    assert await pending(tmp_path) == 0
    assert len(await hub.products("main")) == 30


async def test_draining_answers_503_and_a_second_stop_abandons(tmp_path: Path, hub: Hub) -> None:
    gate = asyncio.Event()  # the hub hangs on batches until the gate opens
    await hub.stop()
    hub.faults.middleware = _slow_middleware(hub, gate)  # type: ignore[method-assign]
    await hub.start()
    config = make_config(tmp_path, hub.url)
    running = await start(config)
    feed(tmp_path, 1, 2)
    await until(lambda: _has_requests(hub))
    running.agent.stop()  # drain begins; the hub hangs
    async with running.client() as client:

        async def draining() -> bool:
            r = await client.get("/healthz")
            return r.status_code == 503 and r.json()["status"] == "draining"

        await until(draining)
    started = time.monotonic()
    running.agent.stop()  # second signal: abandon
    await asyncio.wait_for(running.task, 10)
    assert time.monotonic() - started < 2.0
    gate.set()
    assert await pending(tmp_path) == 2  # abandoned, not lost


def _slow_middleware(hub: Hub, gate: asyncio.Event) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path == "/v1/batches":
            hub.faults.batch_requests += 1
            await gate.wait()
            return web.Response(status=503)
        return await handler(request)

    return middleware


async def _has_requests(hub: Hub) -> bool:
    return hub.faults.batch_requests > 0


class Exploding:
    """A platform whose health check has a bug: the agent must stop, not limp on."""

    name = "exploding"

    @classmethod
    def from_settings(cls, settings: Any, http: Any) -> Exploding:
        return cls()

    async def check(self) -> None:
        raise RuntimeError("adapter bug")

    async def fetch_product(self, product_id: str) -> Product | None:
        return None

    async def catalog(self, resume: str | None = None) -> AsyncIterator[CatalogPage]:
        return
        yield


async def test_a_failing_root_task_stops_the_agent(
    tmp_path: Path, hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platforms, "load", lambda name: Exploding)
    agent = Agent(make_config(tmp_path, hub.url))
    with pytest.raises(ExceptionGroup) as info:
        await asyncio.wait_for(agent.run(), 10)
    (error,) = info.value.exceptions
    assert isinstance(error, RootTaskExited)
    assert error.task == "check:main"
    assert "adapter bug" in str(error)


async def test_health_port_in_use_fails_clearly(tmp_path: Path, hub: Hub) -> None:
    config = make_config(tmp_path, hub.url)
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    config = replace(config, health=HealthSettings(listen=Listen("127.0.0.1", port)))
    try:
        with pytest.raises(ExceptionGroup) as info:
            await asyncio.wait_for(Agent(config).run(), 10)
    finally:
        blocker.close()
        await blocker.wait_closed()
    (error,) = info.value.exceptions
    assert isinstance(error, RootTaskExited)
    assert error.task == "server:health"


async def test_stop_with_unreachable_hub_keeps_everything(tmp_path: Path, hub: Hub) -> None:
    hub.faults.push(*[status(503, {"Retry-After": "0"})] * 1000)
    running = await start(make_config(tmp_path, hub.url))
    feed(tmp_path, 1, 2, 3)

    async def recorded() -> bool:
        async with running.client() as client:
            return (await client.get("/status")).json()["outbox"]["pending"] == 3

    await until(recorded)
    assert await running.stop() < 5
    assert await pending(tmp_path) == 3


async def test_a_new_state_is_announced_and_a_lost_one_stops_the_agent(
    tmp_path: Path, hub: Hub
) -> None:
    config = make_config(tmp_path, hub.url)
    running = await start(config)
    try:
        async with running.client() as client:
            status_doc = (await client.get("/status")).json()
        assert any("new, empty state store" in e["message"] for e in status_doc["events"])
        shutil.rmtree(tmp_path / "state")  # under the running agent
        feed(tmp_path, 1)  # a change arrives meanwhile: it must not be acknowledged
        with pytest.raises(ExceptionGroup) as info:
            await asyncio.wait_for(running.task, 20)
    finally:
        running.agent.stop()
    leaves = [e.__cause__ or e for e in info.value.exceptions]
    assert any(isinstance(e, StateStoreLost) for e in leaves), leaves
    # The spool file was not consumed into the lost file: it waits for the next start.
    assert list((tmp_path / "spool" / "incoming").iterdir())
    again = await start(config)
    try:
        async with again.client() as client:
            events = (await client.get("/status")).json()["events"]
        assert any("new, empty state store" in e["message"] for e in events)
        await until(lambda: _hub_has(hub, "1"))
    finally:
        await again.stop()
    third = await start(config)  # an existing state: no announcement this time
    try:
        async with third.client() as client:
            events = (await client.get("/status")).json()["events"]
        assert sum("new, empty state store" in e["message"] for e in events) == 1
    finally:
        await third.stop()


async def _hub_has(hub: Hub, product_id: str) -> bool:
    return product_id in await hub.products("main")


async def test_a_root_task_stopped_before_its_first_step_leaves_no_unawaited_coroutine(
    tmp_path: Path, hub: Hub
) -> None:
    """Defect (CI, test_stop_with_unreachable_hub_keeps_everything): a stop that cancels the
    root tasks before they ever ran left their coroutines unawaited, and Python's warning
    about them failed whichever test collected the garbage."""
    agent = Agent(make_config(tmp_path, hub.url))
    started: list[str] = []

    async def root() -> None:
        started.append("root")

    spawned: list[asyncio.Task[None]] = []

    async def stop_at_once() -> None:
        async with asyncio.TaskGroup() as group:
            agent._group = group
            spawned.append(agent._spawn("never-started", root()))
            spawned[0].cancel()  # before the loop gives it a first step
            raise RuntimeError("stop")  # the group cancels and waits, as a stopping agent

    with pytest.raises(ExceptionGroup):
        await stop_at_once()
    assert spawned[0].cancelled() and started == []
    gc.collect()  # an unawaited coroutine would warn here (pytest: an error)
