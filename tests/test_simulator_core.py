"""The shared simulator parts (`bridge_agent.simulators.core`), driven by a toy platform.

The toy is what the Shopify simulator will be to the core: its own routes and error shape, the
shared clock, faults, request stats, control routes and webhook transport. If the toy works
with nothing copied, the next platform does too. Nothing here imports the agent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler

from bridge_agent.simulators.core import control, faults
from bridge_agent.simulators.core.clock import SimClock, parse_instant
from bridge_agent.simulators.core.delivery import REFUSED, Courier, signature
from bridge_agent.simulators.core.faults import Faults
from bridge_agent.simulators.core.serving import serve_app
from bridge_agent.simulators.core.stats import RequestStats


class Toy:
    """A one-record store: `GET /api/thing` answers it, unless a fault says otherwise."""

    def __init__(self, seed: int = 1) -> None:
        self.faults = Faults(fail_statuses=(502,))
        self.clock = SimClock(floor=1_700_000_000)
        self.rng = random.Random(seed)
        self.requests = RequestStats()
        self.courier = Courier()
        self.delivered = 0

    def truth_bytes(self) -> bytes:
        return b'{"things":[{"id":1}]}'

    def stats(self) -> dict[str, Any]:
        return {**self.requests.doc(), "delivered": self.delivered}

    def clock_doc(self) -> dict[str, Any]:
        return {"now": self.clock.now(), "frozen": self.clock.frozen}

    async def drain_webhooks(self) -> dict[str, Any]:
        await self.courier.drain()
        return {"delivered": self.delivered}


def toy_app(toy: Toy) -> web.Application:
    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except control.ControlError as exc:  # the toy's own error shape
            return web.json_response({"errors": [exc.code, exc.message]}, status=exc.status)

    async def thing(_: web.Request) -> web.Response:
        status = await faults.draw(toy.faults, toy.rng)
        if status is not None:
            return web.json_response({"errors": "injected"}, status=status)
        return web.json_response({"id": 1})

    app = web.Application(middlewares=[toy.requests.middleware, errors])
    app.router.add_get("/api/thing", thing)
    control.add_routes(app, toy, encode=lambda doc: json.dumps(doc).encode())
    return app


@pytest.fixture
async def toy() -> AsyncIterator[tuple[Toy, httpx.AsyncClient]]:
    sim = Toy()
    server = TestServer(toy_app(sim), host="127.0.0.1")
    await server.start_server()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as http:
        yield sim, http
    await sim.courier.close()
    await server.close()


async def test_clock_control_freezes_sets_and_advances_in_that_order(
    toy: tuple[Toy, httpx.AsyncClient],
) -> None:
    sim, http = toy
    doc = (
        await http.post(
            "/__sim/clock", json={"freeze": True, "set": "2026-03-01T12:00:00", "advance": 60}
        )
    ).json()
    assert doc == {"now": 1_772_366_460, "frozen": True}
    assert sim.clock.now() == 1_772_366_460
    # A zone is honoured; a space for the T is accepted (rest_parse_date's forms).
    await http.post("/__sim/clock", json={"set": "2026-03-01 14:00:00+02:00"})
    assert sim.clock.now() == 1_772_366_400
    assert (await http.get("/__sim/clock")).json()["now"] == 1_772_366_400

    bad = await http.post("/__sim/clock", json={"set": "yesterday"})
    assert bad.status_code == 400
    assert bad.json() == {"errors": ["sim_invalid_clock", "set: epoch seconds or ISO 8601."]}
    bad = await http.post("/__sim/clock", json={"advance": True})
    assert bad.json()["errors"][0] == "sim_invalid_clock"
    assert (await http.post("/__sim/clock", content=b"{nope")).json()["errors"][0] == (
        "sim_invalid_json"
    )
    assert (await http.post("/__sim/clock", json=[1])).json()["errors"][0] == "sim_invalid_body"

    await http.post("/__sim/clock", json={"freeze": False})
    assert not sim.clock.frozen
    assert abs(sim.clock.now() - 1_772_366_400) <= 1  # runs on from where it stood


def test_parse_instant_forms() -> None:
    assert parse_instant("2026-03-01T12:00:00") == (1_772_366_400, None)
    assert parse_instant("2026-03-01t12:00:00.250Z") == (1_772_366_400, 0)
    assert parse_instant("2026-03-01T12:00:00-0530") == (1_772_366_400, -(5 * 3600 + 30 * 60))
    assert parse_instant("2026-02-30T12:00:00") is None
    assert parse_instant("12:00") is None


async def test_faults_in_sequence_then_by_rate_and_counted_by_route(
    toy: tuple[Toy, httpx.AsyncClient],
) -> None:
    sim, http = toy
    doc = (await http.post("/__sim/faults", json={"fail_next": [503, 429]})).json()
    assert doc["fail_next"] == [503, 429]
    assert doc["fail_statuses"] == [502]  # the platform's default, not WooCommerce's
    statuses = [(await http.get("/api/thing")).status_code for _ in range(3)]
    assert statuses == [503, 429, 200]

    bad = await http.post("/__sim/faults", json={"fail_rate": 2})
    assert bad.status_code == 400
    assert bad.json()["errors"] == ["sim_invalid_fault", "fail_rate is a fraction between 0 and 1"]
    await http.post("/__sim/faults", json={"fail_rate": 0.5})
    statuses += [(await http.get("/api/thing")).status_code for _ in range(40)]
    assert set(statuses[3:]) == {200, 502}

    stats = (await http.get("/__sim/stats")).json()
    by_route = stats["requests"]
    assert sum(by_route["GET /api/thing"].values()) == 43
    assert by_route["GET /api/thing"]["502"] == statuses.count(502)
    assert by_route["POST /__sim/faults"] == {"200": 2, "400": 1}
    # The stats request itself is counted once it has answered.
    assert stats["requests_total"] == 46
    assert sim.requests.total == 47


async def test_fault_draw_is_deterministic_and_waits_the_latency() -> None:
    one, two = Faults(fail_rate=0.3), Faults(fail_rate=0.3)
    rng1, rng2 = random.Random(5), random.Random(5)
    first = [await faults.draw(one, rng1) for _ in range(50)]
    second = [await faults.draw(two, rng2) for _ in range(50)]
    assert first == second
    assert 0 < sum(s is not None for s in first) < 50

    slow = Faults(latency_ms=80, jitter=0.0)
    started = time.monotonic()
    assert await faults.draw(slow, random.Random(1)) is None
    assert time.monotonic() - started >= 0.075


async def test_truth_is_the_platform_bytes(toy: tuple[Toy, httpx.AsyncClient]) -> None:
    _, http = toy
    resp = await http.get("/__sim/truth")
    assert resp.content == b'{"things":[{"id":1}]}'
    assert resp.headers["Content-Type"] == "application/json; charset=UTF-8"


async def test_courier_delivers_later_refuses_other_hosts_and_drains(
    toy: tuple[Toy, httpx.AsyncClient], aiohttp_server: Any
) -> None:
    sim, http = toy
    received: list[tuple[str, bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((request.headers["X-Signature"], await request.read()))
        return web.Response(status=202)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = await aiohttp_server(receiver)
    url = f"http://127.0.0.1:{server.port}/hook"
    outcomes: list[tuple[int | None, str]] = []

    def job(n: int, target: str) -> Any:
        async def deliver() -> None:
            body = json.dumps({"n": n}).encode()
            headers = {"X-Signature": signature(body, "s3cret")}
            outcomes.append(await sim.courier.post(target, body, headers, 5.0))
            sim.delivered += 1

        return deliver

    # Queued in order 0, 1, 2 with decreasing waits: they arrive out of order.
    for n, wait in enumerate((0.15, 0.1, 0.05)):
        sim.courier.later(wait, job(n, url))
    sim.courier.later(0.0, job(9, "http://example.com/hook"))
    assert sim.courier.pending == 4
    drained = (await http.post("/__sim/webhooks/drain")).json()
    assert drained == {"delivered": 4}
    assert sim.courier.pending == 0
    assert [json.loads(body)["n"] for _, body in received] == [2, 1, 0]
    assert (None, REFUSED) in outcomes
    assert sorted(o for o in outcomes if o[0] is not None) == [(202, "")] * 3
    for sent, body in received:
        expected = hmac.new(b"s3cret", body, hashlib.sha256).digest()
        assert base64.b64decode(sent) == expected


async def test_courier_close_cancels_what_is_still_waiting() -> None:
    courier = Courier()
    ran: list[int] = []

    async def job() -> None:
        ran.append(1)

    courier.later(30.0, job)
    assert courier.pending == 1
    await courier.close()
    assert courier.pending == 0
    assert ran == []


async def test_serve_app_reports_the_port_before_ready_and_cleans_up() -> None:
    calls: list[tuple[str, int]] = []
    cleaned = asyncio.Event()
    app = web.Application()

    async def cleanup(_: web.Application) -> None:
        cleaned.set()

    app.on_cleanup.append(cleanup)
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_ready(port: int) -> None:
        calls.append(("ready", port))
        ready.set_result(port)

    task = asyncio.create_task(
        serve_app(app, "127.0.0.1", 0, bound=lambda p: calls.append(("bound", p)), ready=on_ready)
    )
    port = await asyncio.wait_for(ready, 5)
    assert port > 0
    assert calls == [("bound", port), ("ready", port)]
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{port}/")).status_code == 404
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.is_set()
