"""Shopify webhook deliveries: signature check and parsing. Pure: no I/O, no clock.

Shopify signs each HTTPS delivery with `X-Shopify-Hmac-Sha256` = standard base64 of the
HMAC-SHA256 of the exact raw body bytes, keyed with the app's client secret (`webhook_secret`).
The check runs on the raw bytes (re-serialised JSON would not verify), compares in constant time,
and reads header names case-insensitively (proxies change their case).

| delivery | result |
| --- | --- |
| signature missing or wrong | `BadWebhook(status=401)` |
| `X-Shopify-Shop-Domain` not the configured `shop_domain` (when set) | `BadWebhook(401)` |
| topic other than the four below | `BadWebhook(400)` |
| body not a JSON object, or without the id its topic needs | `BadWebhook(400)` |
| `products/create`, `products/update`, `products/delete` | the product's id (`{"id": N}`) |
| `inventory_levels/update` | a reference: the inventory item id, for `resolve_webhook` |

The delivery id is `X-Shopify-Event-Id`: the same event delivered twice (a retry, or a second
subscription to the topic) carries the same one, so the agent's hints dedupe it;
`X-Shopify-Webhook-Id` identifies a single delivery attempt and is the fallback. Payloads are
REST-shaped (numeric ids) and, retried, carry the state of when they were triggered: like every
hint they only say which product to re-fetch, never what to ship.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from bridge_agent.errors import BadWebhook, InputError
from bridge_agent.inputs import loads_json
from bridge_agent.platforms.base import WebhookDelivery

__all__ = ["INVENTORY_TOPIC", "PRODUCT_TOPICS", "TOPICS", "sign", "verify"]

PRODUCT_TOPICS: tuple[str, ...] = ("products/create", "products/update", "products/delete")
INVENTORY_TOPIC = "inventory_levels/update"
#: The topics the agent subscribes to, as header values -> `WebhookSubscriptionTopic` values.
TOPICS: Mapping[str, str] = {
    "products/create": "PRODUCTS_CREATE",
    "products/update": "PRODUCTS_UPDATE",
    "products/delete": "PRODUCTS_DELETE",
    INVENTORY_TOPIC: "INVENTORY_LEVELS_UPDATE",
}
MAX_BODY_BYTES = 8 * 1024 * 1024


def sign(body: bytes, secret: str) -> str:
    """The `X-Shopify-Hmac-Sha256` Shopify sends for `body` (tests and simulators use it)."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(
    headers: Mapping[str, str], body: bytes, secret: str, *, shop_domain: str | None = None
) -> WebhookDelivery:
    """Check one delivery against the app's client secret and say what it is about."""
    lowered = {k.lower(): v for k, v in headers.items()}
    signature = lowered.get("x-shopify-hmac-sha256", "").strip()
    if not signature:
        raise BadWebhook("missing X-Shopify-Hmac-Sha256", status=401)
    expected = sign(body, secret).encode("ascii")
    if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
        raise BadWebhook(
            "X-Shopify-Hmac-Sha256 does not match: webhook_secret must be the app's client "
            "secret (after a rotation Shopify signs with the old one for up to an hour)",
            status=401,
        )
    if shop_domain is not None:
        domain = lowered.get("x-shopify-shop-domain", "").strip().lower()
        if domain != shop_domain.lower():
            shown = repr(domain[:80]) if domain else "none"
            raise BadWebhook(
                f"X-Shopify-Shop-Domain is {shown}, not this store's shop_domain", status=401
            )
    delivery_id = (
        lowered.get("x-shopify-event-id", "").strip()
        or lowered.get("x-shopify-webhook-id", "").strip()
        or None
    )
    topic = lowered.get("x-shopify-topic", "").strip()
    if topic not in TOPICS:
        shown = repr(topic[:60]) if topic else "none"
        raise BadWebhook(
            f"topic {shown} is not one the agent subscribes to ({', '.join(TOPICS)})", status=400
        )
    try:
        payload = loads_json(body, max_bytes=MAX_BODY_BYTES, what="the body")
    except InputError as exc:
        raise BadWebhook(str(exc), status=400) from None
    if not isinstance(payload, dict):
        raise BadWebhook("the body is not a JSON object", status=400)
    if topic == INVENTORY_TOPIC:
        item = _number(payload.get("inventory_item_id"))
        if item is None:
            raise BadWebhook("the body has no inventory_item_id", status=400)
        return WebhookDelivery(
            kind="product", topic=topic, delivery_id=delivery_id, references=(item,)
        )
    product_id = _number(payload.get("id"))
    if product_id is None:
        raise BadWebhook("the body has no product id", status=400)
    return WebhookDelivery(
        kind="product", topic=topic, product_ids=(product_id,), delivery_id=delivery_id
    )


def _number(value: Any) -> str | None:
    """A Shopify numeric id: a positive 64-bit integer, as a number or ASCII digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int) and 0 < value < 2**63:
        return str(value)
    return None
