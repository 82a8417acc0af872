"""The control routes every simulator offers under `/__sim/`, whatever its platform.

- `GET|POST /__sim/faults`        read or change the fault settings (`faults.Faults` fields)
- `GET|POST /__sim/clock`         read the clock, or `{"freeze": bool, "set": epoch | ISO,
                                  "advance": s}` (in that order)
- `GET      /__sim/truth`         the ground truth a test compares the hub with
- `GET      /__sim/stats`         requests by route and status, plus the platform's counters
- `POST     /__sim/webhooks/drain` wait until every queued delivery has been attempted

No authentication, never slowed or failed by the faults: the control API is the test's hand,
not the client's path. Each platform adds its own routes (products, keys, ...) beside these.

A refused control request raises `ControlError`, with a `sim_*` code; the platform's error
middleware renders it in the platform's error shape, so a client of one simulator sees one
error shape.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from bridge_agent.simulators.core.clock import ClockChangeError, SimClock
from bridge_agent.simulators.core.faults import Faults


class ControlError(Exception):
    """A control request the simulator refuses: HTTP status, a `sim_*` code, a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class Controlled(Protocol):
    """What the shared control routes need of a simulator."""

    faults: Faults
    clock: SimClock

    def truth_bytes(self) -> bytes:
        """The truth document, encoded as the platform's API would encode it."""

    def stats(self) -> dict[str, Any]:
        """`/__sim/stats`: at least `RequestStats.doc()`, plus the platform's counters."""

    def clock_doc(self) -> dict[str, Any]:
        """`/__sim/clock`: at least `now` and `frozen`, plus the platform's views of the time."""

    async def drain_webhooks(self) -> dict[str, Any]:
        """Wait for every queued webhook delivery; answer the delivery counters."""


def json_response(
    body: bytes, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=body, status=status, content_type="application/json", charset="UTF-8", headers=headers
    )


async def read_json(request: web.Request) -> Any:
    """The body as JSON (the content type is not checked, so `curl -d` works); `{}` when empty."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise ControlError(400, "sim_invalid_json", "The body is not JSON.") from None


async def read_object(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ControlError(400, "sim_invalid_body", "Send a JSON object.")
    return body


def add_routes(app: web.Application, sim: Controlled, *, encode: Callable[[Any], bytes]) -> None:
    """Add the shared `/__sim/` routes for `sim`; `encode` writes JSON as the platform does."""

    async def faults(request: web.Request) -> web.Response:
        if request.method == "POST":
            body = await read_object(request)
            try:
                sim.faults.update(body)
            except ValueError as exc:
                raise ControlError(400, "sim_invalid_fault", str(exc)) from None
        return json_response(encode(sim.faults.doc()))

    async def clock(request: web.Request) -> web.Response:
        if request.method == "POST":
            body = await read_object(request)
            try:
                sim.clock.change(body)
            except ClockChangeError as exc:
                raise ControlError(400, "sim_invalid_clock", str(exc)) from None
        return json_response(encode(sim.clock_doc()))

    async def truth(_: web.Request) -> web.Response:
        return json_response(sim.truth_bytes())

    async def stats(_: web.Request) -> web.Response:
        return json_response(encode(sim.stats()))

    async def drain(_: web.Request) -> web.Response:
        return json_response(encode(await sim.drain_webhooks()))

    r = app.router
    r.add_route("*", "/__sim/faults", faults)
    r.add_route("*", "/__sim/clock", clock)
    r.add_get("/__sim/truth", truth)
    r.add_get("/__sim/stats", stats)
    r.add_post("/__sim/webhooks/drain", drain)
