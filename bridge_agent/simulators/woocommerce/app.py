"""The aiohttp application: middlewares (stats, errors, faults, auth), `serve`, `run_cli`.

Request path for `/wp-json/...`: count it (stats) → turn WooErrors (and the shared control
API's ControlErrors) into WordPress JSON errors → faults (latency, injected failures, a refused
method's WAF page: a host/WAF sits in front of WordPress, so these come before authentication) →
authentication (wc/ routes only, before routing, as the `rest_authentication_errors` filter
runs) → the route.
After the route, `write_reply_delay_ms` holds the answer to a write that was applied, and
`drop_reply_after_write` may close the connection instead of answering it. `/__sim/...` skips
faults and auth. The counting, the fault draw and serving are the shared simulator parts
(`simulators/core`); how a failure looks is WordPress's, here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from ssl import SSLContext

from aiohttp import web
from aiohttp.typedefs import Handler

from bridge_agent.simulators.core import faults
from bridge_agent.simulators.core.control import ControlError, json_response
from bridge_agent.simulators.core.serving import serve_app
from bridge_agent.simulators.woocommerce import control, rest, rest_webhooks, uploads
from bridge_agent.simulators.woocommerce.auth import Presented
from bridge_agent.simulators.woocommerce.model import WooError, encode
from bridge_agent.simulators.woocommerce.sim import WooSimulator

_WP_HEADERS = {
    "X-Robots-Tag": "noindex",
    "X-Content-Type-Options": "nosniff",
    "Access-Control-Expose-Headers": "X-WP-Total, X-WP-TotalPages, Link",
    "Access-Control-Allow-Headers": "Authorization, X-WP-Nonce, Content-Disposition, "
    "Content-MD5, Content-Type",
}
_FATAL = (
    '<p>There has been a critical error on this website.</p><p><a href="https://wordpress.org/'
    'documentation/article/faq-troubleshooting/">Learn more about troubleshooting WordPress.'
    "</a></p>"
)
_REASONS = {
    429: "Too Many Requests",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Timeout",
}


def make_app(sim: WooSimulator) -> web.Application:
    """The simulator as an aiohttp application (for `aiohttp_server` or an AppRunner)."""
    app = web.Application(
        middlewares=[sim.requests.middleware, _errors, _rest_gate], client_max_size=32 * 1024**2
    )
    app[rest.SIM] = sim
    rest.add_routes(app)
    control.add_routes(app)
    uploads.add_routes(app)
    rest_webhooks.add_routes(app)  # last: it ends with the catch-all rest_no_route

    async def close(_: web.Application) -> None:
        await sim.close()

    app.on_cleanup.append(close)
    return app


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except WooError as exc:
        return json_response(encode(exc.body()), status=exc.status, headers=exc.headers)
    except ControlError as exc:
        error = WooError(exc.status, exc.code, exc.message)
        return json_response(encode(error.body()), status=exc.status)


@web.middleware
async def _rest_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/wp-json/"):
        return await handler(request)
    sim = request.app[rest.SIM]
    fault = await _fault(sim)
    if fault is not None:
        return fault
    refusal = faults.refused(sim.faults, request.method)
    if refusal is not None:
        return _waf_page(refusal, request.method)
    if request.path.startswith("/wp-json/wc/"):
        presented = Presented(
            method=request.method,
            url=f"{request.scheme}://{request.host}{request.rel_url.raw_path}",
            query=rest.params_of(request),
            authorization=request.headers.get("Authorization", ""),
        )
        request[rest.KEY] = sim.auth.authenticate(presented)
    response = await handler(request)
    for name, value in _WP_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.add("Link", f'<{rest.origin(request)}/wp-json/>; rel="https://api.w.org/"')
    if faults.reply_delay(sim.faults, request.method, response.status):
        # Committed, answered late: a client killed meanwhile never learns the outcome.
        await asyncio.sleep(sim.faults.write_reply_delay_ms / 1000)
    if faults.drop_reply(sim.faults, request.method, response.status) and request.transport:
        # The write is committed; its answer never leaves (a proxy gave up, a reset): the
        # client sees the connection close without a response.
        request.transport.abort()
    return response


async def _fault(sim: WooSimulator) -> web.Response | None:
    status = await faults.draw(sim.faults, sim.rng)
    if status is None:
        return None
    if status == 500:
        # WordPress's fatal-error handler answers REST requests in JSON.
        error = WooError(500, "internal_server_error", _FATAL, data={})
        return json_response(encode({**error.body(), "additional_errors": []}), status=500)
    reason = _REASONS.get(status, "Error")
    headers = {"Retry-After": str(sim.faults.retry_after)} if status in (429, 503) else {}
    page = (
        f"<html><head><title>{status} {reason}</title></head><body><h1>{reason}</h1></body></html>"
    )
    return web.Response(
        text=page, status=status, content_type="text/html", charset="utf-8", headers=headers
    )


# What a host's WAF or ModSecurity answers a method it refuses: its own HTML page, never JSON.
_WAF_PAGES = {
    403: ("Forbidden", "You don't have permission to access this resource."),
    406: (
        "Not Acceptable",
        "An appropriate representation of the requested resource could not be found on this "
        "server. This error was generated by Mod_Security.",
    ),
    501: ("Method Not Implemented", "{method} not supported for current URL."),
}


def _waf_page(status: int, method: str) -> web.Response:
    reason, text = _WAF_PAGES.get(status, (_REASONS.get(status, "Error"), "Request refused."))
    page = (
        f'<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
        f"<title>{status} {reason}</title>\n</head><body>\n<h1>{reason}</h1>\n"
        f"<p>{text.format(method=method)}</p>\n<hr>\n<address>Apache Server</address>\n"
        "</body></html>\n"
    )
    return web.Response(text=page, status=status, content_type="text/html", charset="iso-8859-1")


async def serve(
    sim: WooSimulator,
    host: str,
    port: int,
    *,
    ready: Callable[[int], None] | None = None,
    ssl_context: SSLContext | None = None,
    warm: bool = True,
) -> None:
    """Serve until cancelled; `ready(port)` once listening (port 0 picks a free port).

    Unless the simulator was given a `site_url`, permalinks, image URLs and `_links` use the
    address it listens on. Give a literal address with port 0 ("127.0.0.1", not "localhost").
    With `warm`, product JSON is encoded before `ready` (about 1 s per 10 000 products, up to
    the cache size), so benchmarks measure the client, not the simulator's first renders.
    """

    def bound(actual: int) -> None:
        if not sim.site_url_given:
            scheme = "https" if ssl_context else "http"
            name = f"[{host}]" if ":" in host else host
            sim.catalog.site_url = f"{scheme}://{name}:{actual}"
        if warm:
            sim.catalog.warm()

    await serve_app(make_app(sim), host, port, bound=bound, ready=ready, ssl_context=ssl_context)


async def run_cli(products: int, port: int, latency_ms: float, fail_rate: float, seed: int) -> None:
    """`bridge-agent simulate woocommerce`: generate, print where and how to connect, serve."""
    sim = WooSimulator.generate(products=products, seed=seed)
    sim.faults.update({"latency_ms": latency_ms, "fail_rate": fail_rate})

    def ready(bound: int) -> None:
        site = sim.site_url
        print(f"WooCommerce simulator: {site}  ({products} products, seed {seed})", flush=True)
        print(f"  REST API:        {site}/wp-json/wc/v3", flush=True)
        print(f"  consumer key:    {sim.consumer_key}", flush=True)
        print(f"  consumer secret: {sim.consumer_secret}", flush=True)
        print(f"  control API:     {site}/__sim/ (docs/simulators.md)", flush=True)
        print("  webhooks:        delivered to the URLs registered in the store", flush=True)
        if latency_ms or fail_rate:
            print(f"  faults:          latency {latency_ms} ms, fail rate {fail_rate}", flush=True)

    await serve(sim, "127.0.0.1", port, ready=ready)
