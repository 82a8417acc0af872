"""Webhooks as WooCommerce delivers them (platforms.md 1.8, checklist 1.14 item 10).

Modelled:

- Topics `product.created|updated|deleted|restored` fire from the catalog's events; other valid
  WooCommerce topics (order.*, coupon.*, customer.*, action.*) can be registered and never fire.
- Delivery is asynchronous, like the Action Scheduler job: after `delay` seconds plus a random
  jitter, so deliveries for different products arrive out of order. A job is not queued while one
  for the same webhook and resource is still pending (coalescing): several quick edits, one
  delivery. The body is built *when the job runs* (state at delivery time, not at event time); a
  product force-deleted meanwhile yields the REST error body WooCommerce would build.
- `POST` with the exact bytes `wp_json_encode` writes, headers `X-WC-Webhook-Source|Topic|
  Resource|Event|Signature|ID|Delivery-ID`, signature = base64(HMAC-SHA256(body, secret)).
  `Delivery-ID` hashes the webhook id and the current second, so two deliveries of one webhook
  in the same second share it, as in WooCommerce (do not deduplicate on it).
- `product.deleted` carries `{"id": N}` and fires on trash only: never on a forced or batch
  delete (WC-I28541).
- No retries. 200-302 resets the failure count; any other answer or a connection error counts a
  failure, and a failure arriving when the count already exceeds `max_failures` (default 5)
  disables the webhook instead: by WooCommerce's code that is the 7th consecutive failure with
  the default. Re-activating with `PUT {"status": "active"}` does not reset the count, so the
  next failure disables it again (only a success resets it).
- The creation ping: `webhook_id=N`, form-encoded, unsigned, sent while the create request waits;
  its result is ignored.

Deliberately different: deliveries only go to loopback hosts (WordPress's `wp_safe_remote_*`
would in fact refuse exactly those); a delivery to any other host is refused and counted as a
failure. A webhook paused after a delivery was queued still gets that delivery, as in WooCommerce.

The transport (delayed jobs, loopback-only POSTs, drain, the signature) is the shared
`simulators.core.delivery`; this module keeps WooCommerce's rules.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge_agent.simulators.core.delivery import Courier, signature
from bridge_agent.simulators.woocommerce.model import REST_PREFIX, wall

USER_AGENT = "WooCommerce/9.8.5 Hookshot (WordPress/6.8.1)"
_EVENTS = ("created", "updated", "deleted", "restored")
_HOOKS = {
    "product.created": [
        "woocommerce_process_product_meta",
        "woocommerce_new_product",
        "woocommerce_new_product_variation",
    ],
    "product.updated": [
        "woocommerce_process_product_meta",
        "woocommerce_update_product",
        "woocommerce_update_product_variation",
    ],
    "product.deleted": ["wp_trash_post"],
    "product.restored": ["untrashed_post"],
}
WEBHOOK_STATUSES = ("active", "paused", "disabled")


def valid_topic(topic: str) -> bool:
    """wc_is_webhook_valid_topic: resource.event with known parts, or action.<hook>."""
    resource, _, event = topic.partition(".")
    if resource == "action":
        return bool(event)
    return resource in ("coupon", "customer", "order", "product") and event in _EVENTS


@dataclass
class Webhook:
    id: int
    name: str
    status: str
    topic: str
    delivery_url: str
    secret: str
    created: int
    modified: int
    failure_count: int = 0
    pending: set[int] = field(default_factory=set)

    @property
    def resource(self) -> str:
        return self.topic.partition(".")[0]

    @property
    def event(self) -> str:
        return self.topic.partition(".")[2]

    def doc(self, site_url: str, utc_offset: int) -> dict[str, Any]:
        # The secret is write-only: the v3 controller never returns it.
        api = f"{site_url}{REST_PREFIX}"
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "topic": self.topic,
            "resource": self.resource,
            "event": self.event,
            "hooks": _HOOKS.get(self.topic, []),
            "delivery_url": self.delivery_url,
            "date_created": wall(self.created + utc_offset),
            "date_created_gmt": wall(self.created),
            "date_modified": wall(self.modified + utc_offset),
            "date_modified_gmt": wall(self.modified),
            "_links": {
                "self": [{"href": f"{api}/webhooks/{self.id}"}],
                "collection": [{"href": f"{api}/webhooks"}],
            },
        }


@dataclass
class Delivery:
    """One attempt, for `/__sim/stats` and tests."""

    webhook_id: int
    topic: str
    resource_id: int | None  # None for a ping
    delivery_id: str
    status: int | None  # HTTP status, None when the connection failed
    error: str = ""
    at: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 303


class Dispatcher:
    """Registered webhooks, the queue of pending deliveries, and the delivery log."""

    def __init__(
        self,
        *,
        payload: Callable[[int], bytes],
        source: Callable[[], str],
        now: Callable[[], int],
        rng: random.Random,
        delay: float = 0.5,
        jitter: float = 0.5,
        max_failures: int = 5,
        timeout: float = 60.0,
        ping_timeout: float = 5.0,
        coalesce: bool = True,
    ) -> None:
        self.webhooks: dict[int, Webhook] = {}
        self.log: deque[Delivery] = deque(maxlen=2000)
        self.counts = {"deliveries": 0, "failures": 0, "pings": 0, "coalesced": 0, "disabled": 0}
        self._payload = payload  # product id -> JSON body (the REST error body when gone)
        self._source = source
        self._now = now
        self._rng = rng
        self.delay, self.jitter = delay, jitter
        self.max_failures = max_failures
        self.timeout, self.ping_timeout = timeout, ping_timeout
        self.coalesce = coalesce
        self.courier = Courier()
        self._next_id = 0

    def new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # -- events ---------------------------------------------------------------------------------

    def notify(self, event: str, resource_id: int) -> None:
        """A catalog event: queue one delivery per active webhook of the matching topic."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # changed outside a running server (e.g. while setting up): nothing listens
        for hook in self.webhooks.values():
            if hook.status != "active" or hook.topic != f"product.{event}":
                continue
            if self.coalesce and resource_id in hook.pending:
                self.counts["coalesced"] += 1
                continue
            hook.pending.add(resource_id)
            wait = self.delay + self._rng.uniform(0, self.jitter)
            self.courier.later(wait, functools.partial(self._deliver, hook, resource_id))

    async def _deliver(self, hook: Webhook, resource_id: int) -> None:
        # The job leaves "pending" when it starts: an edit from now on queues a new one.
        hook.pending.discard(resource_id)
        body = (
            b'{"id":' + str(resource_id).encode() + b"}"
            if hook.event == "deleted"
            else self._payload(resource_id)
        )
        delivery_id = hashlib.md5(  # noqa: S324 - an id, not security: wp_hash(id . time())
            f"{hook.id}{self._now()}".encode()
        ).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-WC-Webhook-Source": self._source(),
            "X-WC-Webhook-Topic": hook.topic,
            "X-WC-Webhook-Resource": hook.resource,
            "X-WC-Webhook-Event": hook.event,
            "X-WC-Webhook-Signature": signature(body, hook.secret),
            "X-WC-Webhook-ID": str(hook.id),
            "X-WC-Webhook-Delivery-ID": delivery_id,
        }
        record = Delivery(hook.id, hook.topic, resource_id, delivery_id, None, at=time.time())
        record.status, record.error = await self.courier.post(
            hook.delivery_url, body, headers, self.timeout
        )
        self.counts["deliveries"] += 1
        self.log.append(record)
        self._settle(hook, record)

    def _settle(self, hook: Webhook, record: Delivery) -> None:
        # WC_Webhook::log_delivery / failed_delivery, line for line.
        if record.ok:
            hook.failure_count = 0
            return
        self.counts["failures"] += 1
        if hook.failure_count > self.max_failures:
            if hook.status != "disabled":
                self.counts["disabled"] += 1
            hook.status = "disabled"
        else:
            hook.failure_count += 1

    async def ping(self, hook: Webhook) -> Delivery:
        """WC_Webhook::deliver_ping: form-encoded `webhook_id=N`, unsigned."""
        headers = {"User-Agent": USER_AGENT, "Content-Type": "application/x-www-form-urlencoded"}
        record = Delivery(hook.id, "ping", None, "", None, at=time.time())
        body = f"webhook_id={hook.id}".encode()
        record.status, record.error = await self.courier.post(
            hook.delivery_url, body, headers, self.ping_timeout
        )
        self.counts["pings"] += 1
        self.log.append(record)
        return record

    async def drain(self) -> None:
        """Wait for every queued delivery (tests)."""
        await self.courier.drain()

    async def close(self) -> None:
        await self.courier.close()
