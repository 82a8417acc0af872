"""The aiohttp application: middlewares (stats, errors, faults, auth), routes, `serve`,
`run_cli`.

Request path for `/admin/...`: count it (stats) -> render errors as Shopify does -> faults
(latency, injected failures: Shopify's edge answers 5xx / 429 in JSON) -> the access token
(`X-Shopify-Access-Token`, else 401) -> `POST /admin/api/{version}/graphql.json`. Whatever
version the path names, the simulator answers 2026-07 and says so in `X-Shopify-API-Version`
(Shopify answers an unsupported version with the oldest supported one, and the header is how a
client learns it). The bulk result files (`/bulk/...`) need no token, as signed storage URLs
don't; `/__sim/...` skips faults and auth.

A ticker moves what runs on the simulator's clock (bulk operations, webhook retries) every
50 ms, so `bulk_operations/finish` and retries go out without a client asking.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from ssl import SSLContext

from aiohttp import web
from aiohttp.typedefs import Handler

from bridge_agent.simulators.core import faults
from bridge_agent.simulators.core.control import ControlError, json_response
from bridge_agent.simulators.core.serving import serve_app
from bridge_agent.simulators.shopify import control
from bridge_agent.simulators.shopify.control import SIM
from bridge_agent.simulators.shopify.model import encode
from bridge_agent.simulators.shopify.schema import API_VERSION
from bridge_agent.simulators.shopify.sim import IMAGE_PATH, ShopifySimulator
from bridge_agent.simulators.woocommerce import uploads

TICK_SECONDS = 0.05
_FAULT_BODIES = {
    429: "Exceeded 2 calls per second for api client. Reduce request rates to resume"
    " uninterrupted service.",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_AUTH_ERROR = "[API] Invalid API key or access token (unrecognized login or wrong password)"


def make_app(sim: ShopifySimulator) -> web.Application:
    """The simulator as an aiohttp application (for `aiohttp_server` or an AppRunner)."""
    app = web.Application(
        middlewares=[sim.requests.middleware, _errors, _admin_gate], client_max_size=32 * 1024**2
    )
    app[SIM] = sim
    app.router.add_post("/admin/api/{version}/graphql.json", graphql)
    app.router.add_get("/bulk/{token}.jsonl", bulk_file)
    # The product images, sized from their path like the WooCommerce simulator's uploads (a
    # few missing, a few oversized), so the agent's image checks stay on this machine.
    app.router.add_get(IMAGE_PATH + "/{tail:.+}", uploads.upload)
    control.add_routes(app)
    app.cleanup_ctx.append(_ticker)
    return app


async def _ticker(app: web.Application) -> AsyncIterator[None]:
    sim = app[SIM]

    async def run() -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            sim.tick()

    task = asyncio.get_running_loop().create_task(run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await sim.close()


def _origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def graphql(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    raw = await request.read()
    try:
        body = json.loads(raw) if raw.strip() else None
    except ValueError:
        return json_response(
            encode({"errors": [{"message": "Invalid JSON in request body"}]}), status=400
        )
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return json_response(
            encode({"errors": {"query": "Required parameter missing or invalid"}}), status=400
        )
    answer = sim.graphql(body, _origin(request))
    return json_response(encode(answer), headers={"X-Shopify-API-Version": API_VERSION})


async def bulk_file(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM]
    sim.tick()
    body = sim.bulk.file(request.match_info["token"])
    if body is None:
        # What an expired or unknown signed storage URL answers.
        return web.Response(
            text="<?xml version='1.0' encoding='UTF-8'?><Error><Code>ExpiredToken</Code>"
            "<Message>The provided token has expired.</Message></Error>",
            status=403,
            content_type="application/xml",
        )
    first, last = _range(request.headers.get("Range"), len(body))
    if first is None:
        return web.Response(body=body, content_type="application/jsonl")
    if first >= len(body):
        return web.Response(status=416, headers={"Content-Range": f"bytes */{len(body)}"})
    # A download resumed after a crash asks for the rest (`Range: bytes=N-`), as storage allows.
    return web.Response(
        body=body[first : last + 1],
        status=206,
        content_type="application/jsonl",
        headers={"Content-Range": f"bytes {first}-{last}/{len(body)}"},
    )


def _range(header: str | None, size: int) -> tuple[int | None, int]:
    """`(first, last)` byte of a single `bytes=first-[last]` range, or `(None, 0)`."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None, 0
    start, _, end = header[len("bytes=") :].partition("-")
    if not start.isdigit() or (end and not end.isdigit()):
        return None, 0
    return int(start), min(size - 1, int(end)) if end else size - 1


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ControlError as exc:
        return json_response(encode({"errors": exc.message, "code": exc.code}), status=exc.status)


@web.middleware
async def _admin_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/admin/"):
        return await handler(request)
    sim = request.app[SIM]
    status = await faults.draw(sim.faults, sim.rng)
    if status is not None:
        headers = {"Retry-After": str(sim.faults.retry_after)} if status in (429, 503) else {}
        body = {"errors": _FAULT_BODIES.get(status, "Error")}
        return json_response(encode(body), status=status, headers=headers)
    if request.headers.get("X-Shopify-Access-Token") != sim.access_token:
        return json_response(encode({"errors": _AUTH_ERROR}), status=401)
    return await handler(request)


async def serve(
    sim: ShopifySimulator,
    host: str,
    port: int,
    *,
    ready: Callable[[int], None] | None = None,
    ssl_context: SSLContext | None = None,
) -> None:
    """Serve until cancelled; `ready(port)` once listening (port 0 picks a free port).

    Unless the simulator was given a `shop_url`, it is the address it listens on.
    """

    def bound(actual: int) -> None:
        if not sim.shop_url_given:
            scheme = "https" if ssl_context else "http"
            name = f"[{host}]" if ":" in host else host
            sim.shop_url = f"{scheme}://{name}:{actual}"
            sim.catalog.move_images(sim.shop_url + IMAGE_PATH)

    await serve_app(make_app(sim), host, port, bound=bound, ready=ready, ssl_context=ssl_context)


async def run_cli(products: int, port: int, latency_ms: float, fail_rate: float, seed: int) -> None:
    """`bridge-agent simulate shopify`: generate, print where and how to connect, serve."""
    sim = ShopifySimulator.generate(products=products, seed=seed)
    sim.faults.update({"latency_ms": latency_ms, "fail_rate": fail_rate})

    def ready(_: int) -> None:
        url = sim.shop_url
        print(f"Shopify simulator: {url}  ({products} products, seed {seed})", flush=True)
        print(f"  GraphQL Admin:  {url}/admin/api/{API_VERSION}/graphql.json", flush=True)
        print(f"  access token:   {sim.access_token}", flush=True)
        print(f"  client secret:  {sim.client_secret}  (webhook HMAC key)", flush=True)
        print(f"  shop domain:    {sim.shop_domain}", flush=True)
        print(f"  control API:    {url}/__sim/ (docs/simulators.md)", flush=True)
        if latency_ms or fail_rate:
            print(f"  faults:         latency {latency_ms} ms, fail rate {fail_rate}", flush=True)

    await serve(sim, "127.0.0.1", port, ready=ready)
