"""WooCommerce webhook deliveries: signature check and parsing. Pure: no I/O, no clock.

WooCommerce signs each delivery with `X-WC-Webhook-Signature` = standard base64 of the raw 32-byte
HMAC-SHA256 of the exact body bytes, keyed with the webhook's secret. The check runs on the raw
bytes (re-serialised JSON would not verify) and compares in constant time.

| delivery | result |
| --- | --- |
| creation ping: form body `webhook_id=N`, no signature | `WebhookDelivery(kind="ping")` |
| signature missing (not a ping) or wrong | `BadWebhook(status=401)` |
| signed, but not a JSON object, no id, or not a `product.*` topic | `BadWebhook(status=400)` |
| `product.created/updated/restored/deleted` | `WebhookDelivery(kind="product", ...)` |

A `product.updated` for a variation carries the variation (its `parent_id` > 0): the delivery
names the parent, the product the agent ships. `product.deleted` bodies are only `{"id": N}`.
Like every hint, a delivery is re-fetched by the agent before anything is recorded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from bridge_agent.errors import BadWebhook, InputError
from bridge_agent.inputs import loads_json
from bridge_agent.platforms.base import WebhookDelivery

__all__ = ["PRODUCT_TOPICS", "sign", "verify"]

#: The product topics the agent subscribes to (see `adapter.WooCommerce.register_webhooks`).
PRODUCT_TOPICS: tuple[str, ...] = (
    "product.created",
    "product.updated",
    "product.deleted",
    "product.restored",
)


def sign(body: bytes, secret: str) -> str:
    """The `X-WC-Webhook-Signature` WooCommerce sends for `body` (tests and simulators use it)."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(headers: Mapping[str, str], body: bytes, secret: str) -> WebhookDelivery:
    """Check one delivery against the webhook secret and say what it is about."""
    lowered = {k.lower(): v for k, v in headers.items()}
    signature = lowered.get("x-wc-webhook-signature", "").strip()
    delivery_id = lowered.get("x-wc-webhook-delivery-id") or None
    ping = _ping(body)
    if not signature:
        if ping:
            return WebhookDelivery(kind="ping", delivery_id=delivery_id)
        raise BadWebhook("missing X-WC-Webhook-Signature", status=401)
    expected = sign(body, secret).encode("ascii")
    if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
        raise BadWebhook(
            "X-WC-Webhook-Signature does not match: the webhook's secret in WooCommerce must be "
            "this store's webhook_secret",
            status=401,
        )
    if ping:
        return WebhookDelivery(kind="ping", delivery_id=delivery_id)

    topic = lowered.get("x-wc-webhook-topic", "").strip()
    if not topic:
        resource = lowered.get("x-wc-webhook-resource", "").strip()
        event = lowered.get("x-wc-webhook-event", "").strip()
        topic = f"{resource}.{event}" if resource and event else ""
    if not topic.startswith("product."):
        shown = repr(topic[:60]) if topic else "none"
        raise BadWebhook(
            f"topic {shown} is not a product topic: send only product.* webhooks here",
            status=400,
        )
    try:
        payload = loads_json(body, max_bytes=len(body), what="the body")
    except InputError as exc:
        raise BadWebhook(str(exc), status=400) from None
    if not isinstance(payload, dict):
        raise BadWebhook("the body is not a JSON object", status=400)
    product_id = _product_id(payload)
    if product_id is None:
        raise BadWebhook("the body has no product id", status=400)
    return WebhookDelivery(
        kind="product", topic=topic, product_ids=(product_id,), delivery_id=delivery_id
    )


def _ping(body: bytes) -> bool:
    """The creation ping: a form-encoded body that is exactly `webhook_id=<digits>`."""
    if len(body) > 64 or not body.startswith(b"webhook_id="):
        return False
    try:
        pairs = parse_qsl(body.decode("ascii"), strict_parsing=True)
    except (ValueError, UnicodeDecodeError):
        return False
    return len(pairs) == 1 and pairs[0][0] == "webhook_id" and pairs[0][1].isdigit()


def _product_id(payload: dict[str, Any]) -> str | None:
    own = _positive(payload.get("id"))
    parent = _positive(payload.get("parent_id"))
    kind = payload.get("type")
    if parent is not None and kind in (None, "variation"):
        return parent  # a variation: the agent ships its parent product
    return own


def _positive(value: Any) -> str | None:
    """A WooCommerce post id: a positive 64-bit integer, as a number or ASCII digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)  # only ASCII digits: int() also reads "٣" and refuses "²"
    if isinstance(value, int) and 0 < value < 2**63:
        return str(value)
    return None
