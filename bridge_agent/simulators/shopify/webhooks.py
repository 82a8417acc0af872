"""Webhooks (reference/platforms.md 2.7): subscriptions made through GraphQL, and deliveries.

Subscriptions: `webhookSubscriptionCreate(topic:, webhookSubscription: {uri, format})` (an
address that is neither HTTPS nor plain HTTP to a loopback host, or a topic + address pair that
exists, is a `userError`), `webhookSubscriptions(first:, topics:)`, `webhookSubscription(id:)`,
`webhookSubscriptionDelete(id:)`.

Deliveries, as Shopify makes them:

- one per event and subscription, POSTed some time after the change (`webhook_delay_s` plus a
  random part up to `webhook_jitter_s`), so deliveries of close events arrive in any order;
- REST-shaped JSON bodies, built when the event happens: a retry carries the ORIGINAL payload,
  however the product changed since (the stale-retry trap);
- headers `X-Shopify-Topic`, `X-Shopify-Hmac-Sha256` (base64 HMAC-SHA256 of the raw body with
  the app's client secret), `X-Shopify-Shop-Domain`, `X-Shopify-API-Version`,
  `X-Shopify-Webhook-Id` (the delivery), `X-Shopify-Event-Id` (the event: the same on a
  duplicate), `X-Shopify-Triggered-At`;
- a failure (no 2xx within `webhook_timeout_s`) is retried with exponential backoff on the
  simulator's clock (`webhook_retry_base_s` doubling), up to `webhook_attempts` attempts in all
  (8, as Shopify); a subscription whose delivery exhausts its attempts is removed, as Shopify
  removes Admin-API subscriptions after a failed retry cycle;
- faults: `webhook_duplicate_rate` delivers an event twice (same event id, another webhook id),
  `webhook_reorder_rate` holds a delivery back `webhook_reorder_s` more, so a newer event
  overtakes it.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bridge_agent.simulators.core.delivery import Courier, is_loopback, signature
from bridge_agent.simulators.shopify.cost import precise_now
from bridge_agent.simulators.shopify.model import encode, gid, iso, parse_gid
from bridge_agent.simulators.shopify.resolvers import (
    Context,
    Pairs,
    connection,
    lookup,
    resolver,
)
from bridge_agent.simulators.shopify.schema import API_VERSION

if TYPE_CHECKING:
    from bridge_agent.simulators.shopify.sim import ShopifySimulator

USER_AGENT = "Shopify-Captain-Hook"


def topic_header(enum_value: str) -> str:
    """`PRODUCTS_UPDATE` -> `products/update`, `INVENTORY_LEVELS_UPDATE` ->
    `inventory_levels/update`: the last word is the action."""
    resource, _, action = enum_value.lower().rpartition("_")
    return f"{resource}/{action}"


@dataclass
class Job:
    """One event to one subscription, with its attempts."""

    subscription: int
    uri: str
    topic: str
    body: bytes
    event_id: str
    webhook_id: str
    triggered_at: str
    attempts: int = 0
    due: float = 0.0


@dataclass
class Attempt:
    """One POST, for `/__sim/stats` and tests."""

    subscription: int
    topic: str
    event_id: str
    webhook_id: str
    attempt: int
    status: int | None
    error: str = ""
    at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Dispatcher:
    """Subscriptions, deliveries in flight, retries waiting on the simulator's clock."""

    def __init__(self, sim: ShopifySimulator) -> None:
        self.sim = sim
        self.subscriptions: dict[int, dict[str, Any]] = {}
        self.retries: list[Job] = []
        self.log: deque[Attempt] = deque(maxlen=2000)
        self.counts = {
            "events": 0,
            "deliveries": 0,
            "failures": 0,
            "retries": 0,
            "duplicates": 0,
            "reordered": 0,
            "gave_up": 0,
            "subscriptions_removed": 0,
        }
        self.courier = Courier()
        self._next = 1_200_000_000

    # -- subscriptions ---------------------------------------------------------------------------

    def subscription_record(self, num: int) -> dict[str, Any] | None:
        return self.subscriptions.get(num)

    def subscribe(self, topic: str, uri: str, fmt: str) -> dict[str, Any]:
        self._next += 1
        num = self._next
        now = iso(self.sim.clock.now())
        record: dict[str, Any] = {
            "__typename": "WebhookSubscription",
            "id": gid("WebhookSubscription", num),
            "legacyResourceId": str(num),
            "topic": topic,
            "uri": uri,
            "callbackUrl": uri,
            "endpoint": {"__typename": "WebhookHttpEndpoint", "callbackUrl": uri},
            "format": fmt,
            "includeFields": [],
            "metafieldNamespaces": [],
            "filter": None,
            "name": None,
            "apiVersion": {
                "__typename": "ApiVersion",
                "handle": API_VERSION,
                "displayName": API_VERSION,
                "supported": True,
            },
            "createdAt": now,
            "updatedAt": now,
            "_num": num,
        }
        self.subscriptions[num] = record
        return record

    # -- events ----------------------------------------------------------------------------------

    def notify(self, topic: str, payload: dict[str, Any]) -> None:
        """A shop event: one delivery job per subscription to its topic."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # changed outside a running server: nothing listens
        faults = self.sim.settings
        rng = self.sim.rng
        body = encode(payload)  # frozen now: retries send these very bytes
        triggered = iso(self.sim.clock.now())
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        for sub in list(self.subscriptions.values()):
            if topic_header(sub["topic"]) != topic:
                continue
            self.counts["events"] += 1
            job = Job(
                subscription=sub["_num"],
                uri=sub["uri"],
                topic=topic,
                body=body,
                event_id=event_id,
                webhook_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                triggered_at=triggered,
            )
            wait = faults.webhook_delay_s + rng.uniform(0, faults.webhook_jitter_s)
            if faults.webhook_reorder_rate and rng.random() < faults.webhook_reorder_rate:
                wait += faults.webhook_reorder_s
                self.counts["reordered"] += 1
            self.courier.later(wait, functools.partial(self._attempt, job))
            if faults.webhook_duplicate_rate and rng.random() < faults.webhook_duplicate_rate:
                self.counts["duplicates"] += 1
                twin = Job(
                    subscription=job.subscription,
                    uri=job.uri,
                    topic=topic,
                    body=body,
                    event_id=event_id,
                    webhook_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    triggered_at=triggered,
                )
                extra = faults.webhook_delay_s + rng.uniform(0, faults.webhook_jitter_s) * 2
                self.courier.later(wait + extra, functools.partial(self._attempt, twin))

    async def _attempt(self, job: Job) -> None:
        sim = self.sim
        job.attempts += 1
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Shopify-Topic": job.topic,
            "X-Shopify-Hmac-Sha256": signature(job.body, sim.client_secret),
            "X-Shopify-Shop-Domain": sim.shop_domain,
            "X-Shopify-API-Version": API_VERSION,
            "X-Shopify-Webhook-Id": job.webhook_id,
            "X-Shopify-Event-Id": job.event_id,
            "X-Shopify-Triggered-At": job.triggered_at,
        }
        status, error = await self.courier.post(
            job.uri, job.body, headers, sim.settings.webhook_timeout_s
        )
        record = Attempt(
            job.subscription, job.topic, job.event_id, job.webhook_id, job.attempts, status, error
        )
        self.log.append(record)
        self.counts["deliveries"] += 1
        if record.ok:
            return
        self.counts["failures"] += 1
        if job.attempts >= sim.settings.webhook_attempts:
            self.counts["gave_up"] += 1
            if self.subscriptions.pop(job.subscription, None) is not None:
                self.counts["subscriptions_removed"] += 1
            return
        backoff = sim.settings.webhook_retry_base_s * 2 ** (job.attempts - 1)
        job.due = precise_now(sim.clock) + backoff
        self.retries.append(job)

    def tick(self) -> None:
        """Start the retries that are due on the simulator's clock."""
        if not self.retries:
            return
        now = precise_now(self.sim.clock)
        due = [job for job in self.retries if job.due <= now]
        if not due:
            return
        self.retries = [job for job in self.retries if job.due > now]
        for job in due:
            if job.subscription not in self.subscriptions:
                continue
            self.counts["retries"] += 1
            self.courier.later(0, functools.partial(self._attempt, job))

    async def drain(self) -> None:
        """Wait for every delivery in flight and every retry already due."""
        self.tick()
        await self.courier.drain()

    async def close(self) -> None:
        await self.courier.close()

    def doc(self) -> dict[str, Any]:
        return {
            **self.counts,
            "pending": self.courier.pending,
            "retries_waiting": len(self.retries),
            "subscriptions": len(self.subscriptions),
            "recent": [
                {
                    "subscription": a.subscription,
                    "topic": a.topic,
                    "event_id": a.event_id,
                    "webhook_id": a.webhook_id,
                    "attempt": a.attempt,
                    "status": a.status,
                    "ok": a.ok,
                    "error": a.error,
                    "at": a.at,
                }
                for a in list(self.log)[-200:]
            ],
        }


# -- GraphQL ------------------------------------------------------------------------------------


def _address_error(uri: str) -> str | None:
    parts = urlsplit(uri)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname and is_loopback(uri):
        return None  # the simulator's allowance: tests listen on plain HTTP on loopback
    if parts.scheme == "http":
        return "Address protocol http:// is not supported"
    return "Address is invalid"


@resolver("Mutation", "webhookSubscriptionCreate")
def create(_: Any, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    data = args["webhookSubscription"]
    uri = str(data.get("uri") or data.get("callbackUrl") or "")
    where = ["webhookSubscription", "callbackUrl"]
    dispatcher = ctx.sim.webhooks
    if not uri:
        return {
            "webhookSubscription": None,
            "userErrors": [{"field": where, "message": "Address can't be blank"}],
        }
    problem = _address_error(uri)
    if problem is None and any(
        s["topic"] == args["topic"] and s["uri"] == uri for s in dispatcher.subscriptions.values()
    ):
        problem = "Address for this topic has already been taken"
    if problem is not None:
        return {"webhookSubscription": None, "userErrors": [{"field": where, "message": problem}]}
    record = dispatcher.subscribe(args["topic"], uri, str(data.get("format") or "JSON"))
    return {"webhookSubscription": record, "userErrors": []}


@resolver("Mutation", "webhookSubscriptionDelete")
def delete(_: Any, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    parsed = parse_gid(args["id"])
    dispatcher = ctx.sim.webhooks
    if (
        parsed is None
        or parsed[0] != "WebhookSubscription"
        or parsed[1] not in dispatcher.subscriptions
    ):
        return {
            "deletedWebhookSubscriptionId": None,
            "userErrors": [{"field": ["id"], "message": "Webhook subscription does not exist"}],
        }
    record = dispatcher.subscriptions.pop(parsed[1])
    return {"deletedWebhookSubscriptionId": record["id"], "userErrors": []}


@connection("QueryRoot", "webhookSubscriptions")
def subscriptions(_: Any, args: dict[str, Any], ctx: Context) -> Pairs:
    records = sorted(ctx.sim.webhooks.subscriptions.values(), key=lambda s: s["_num"])
    topics = args.get("topics")
    if topics:
        records = [s for s in records if s["topic"] in topics]
    uri = args.get("uri") or args.get("callbackUrl")
    if uri:
        records = [s for s in records if s["uri"] == uri]
    return [((s["_num"],), s) for s in records]


@resolver("QueryRoot", "webhookSubscription")
def subscription(_: Any, args: dict[str, Any], ctx: Context) -> Any:
    return lookup(ctx, args["id"], "WebhookSubscription")
