"""The webhook receiver: `POST /webhooks/{platform}/{store}` on its own listener.

Rules, and why:
- The signature is checked by the platform adapter on the *raw* body, before any parsing, with a
  constant-time compare; a bad or missing signature answers 401 and records nothing.
- The body is read up to `max_body_bytes`; a larger one answers 413 without being read whole.
- A valid delivery is a hint: its product ids are committed as hints (`StateStore.add_hints`)
  and only then answered 200. WooCommerce does not retry a delivery, so answering before the
  commit could lose a change; answering after a slow re-fetch could time the sender out. The hint
  worker re-fetches afterwards. Replays of one delivery coalesce into the same hint.
- The creation ping (WooCommerce posts `webhook_id=N` unsigned when a webhook is saved) answers 200.
- A verified delivery names its products, or platform references (a Shopify inventory item) that
  the adapter's `resolve_webhook` turns into product ids, asking the store if need be, within
  `RESOLVE_TIMEOUT`; if it cannot, the delivery is answered 503 and the sender retries it.
- One delivery's failure stays with it: a body the adapter cannot use answers 400 (even when the
  adapter fails in an unforeseen way: the traceback goes to the log, not to the sender), and a
  state store that cannot commit answers 503, so the sender keeps the delivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from bridge_agent.errors import BadWebhook, PlatformError, StateStoreError
from bridge_agent.metrics import Metrics
from bridge_agent.platforms import Platform
from bridge_agent.platforms.base import WebhookDelivery
from bridge_agent.store import StateStore

log = structlog.get_logger("bridge_agent.webhooks")

RESOLVE_TIMEOUT = 3.0  # senders give up after 5 s (WooCommerce, Shopify): answer well before


@dataclass
class WebhookRoute:
    """Where deliveries for one store go."""

    platform_name: str
    platform: Platform
    on_hints: Callable[[], None]


ROUTES = web.AppKey("routes", dict[str, WebhookRoute])
STATE = web.AppKey("state", StateStore)
METRICS = web.AppKey("metrics", Metrics)
LIMIT = web.AppKey("limit", int)


def make_webhook_app(
    routes: dict[str, WebhookRoute], state: StateStore, metrics: Metrics, *, max_body_bytes: int
) -> web.Application:
    """The receiver app; `routes` is shared, not copied: the agent edits it on reload."""
    app = web.Application(client_max_size=max_body_bytes)
    app[ROUTES] = routes
    app[STATE] = state
    app[METRICS] = metrics
    app[LIMIT] = max_body_bytes
    app.router.add_post("/webhooks/{platform}/{store}", receive)
    metrics.counter("bridge_webhooks_total", "Webhook deliveries by store and outcome.")
    return app


async def receive(request: web.Request) -> web.Response:
    store = request.match_info["store"]
    route = request.app[ROUTES].get(store)
    metrics = request.app[METRICS]
    if route is None or route.platform_name != request.match_info["platform"]:
        metrics.inc("bridge_webhooks_total", store="unknown", outcome="unknown_store")
        raise web.HTTPNotFound(text="no such store\n")
    limit = request.app[LIMIT]
    if request.content_length is not None and request.content_length > limit:
        metrics.inc("bridge_webhooks_total", store=store, outcome="too_large")
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    try:
        body = await request.read()  # aiohttp enforces client_max_size without Content-Length
    except web.HTTPRequestEntityTooLarge:
        metrics.inc("bridge_webhooks_total", store=store, outcome="too_large")
        raise
    try:
        delivery = route.platform.verify_webhook(request.headers, body)
    except BadWebhook as exc:
        outcome = "bad_signature" if exc.status == 401 else "bad_body"
        metrics.inc("bridge_webhooks_total", store=store, outcome=outcome)
        log.warning("webhook_refused", store=store, status=exc.status, reason=str(exc))
        return web.Response(status=exc.status, text=f"{exc}\n")
    except Exception:
        # An adapter that fails on a body it should have refused: this delivery is refused, the
        # listener goes on, and the traceback goes to the log, never to the sender.
        metrics.inc("bridge_webhooks_total", store=store, outcome="bad_body")
        log.exception("webhook_failed", store=store)
        return web.Response(status=400, text="the delivery could not be read\n")
    if delivery.kind == "ping" or not (delivery.product_ids or delivery.references):
        metrics.inc("bridge_webhooks_total", store=store, outcome="ping")
        return web.Response(text="ok\n")
    try:
        product_ids = await _resolve(route.platform, delivery)
    except (PlatformError, TimeoutError) as exc:
        # The delivery is verified but its products cannot be named now (the store is slow or
        # down): not acknowledged, so the sender delivers it again later.
        metrics.inc("bridge_webhooks_total", store=store, outcome="not_resolved")
        log.warning("webhook_not_resolved", store=store, error=str(exc) or "timed out")
        return web.Response(status=503, text="the delivery cannot be resolved now\n")
    if not product_ids:
        metrics.inc("bridge_webhooks_total", store=store, outcome="no_product")
        return web.Response(text="ok\n")
    try:
        await request.app[STATE].add_hints(store, product_ids, "webhook")
    except StateStoreError as exc:
        # Not committed, so not acknowledged (guarantee 2): the sender must try again later.
        metrics.inc("bridge_webhooks_total", store=store, outcome="not_recorded")
        log.error("webhook_not_recorded", store=store, error=str(exc))
        return web.Response(status=503, text="the agent cannot record changes now\n")
    metrics.inc("bridge_webhooks_total", store=store, outcome="accepted")
    route.on_hints()
    return web.Response(text="ok\n")


async def _resolve(platform: Platform, delivery: WebhookDelivery) -> tuple[str, ...]:
    """The product ids of a verified delivery, through the adapter's `resolve_webhook` (which
    may ask the store), within RESOLVE_TIMEOUT; a v1 adapter without it names them directly."""
    resolve = getattr(platform, "resolve_webhook", None)
    if resolve is None:
        return delivery.product_ids
    async with asyncio.timeout(RESOLVE_TIMEOUT):
        ids: tuple[str, ...] = await resolve(delivery)
    return ids
