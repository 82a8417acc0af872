"""`WooSimulator`: the whole simulated store (catalog, keys, webhooks, faults, clock, stats).

The clock, the fault settings and the request counter are the shared simulator parts
(`simulators/core`); `Faults` is re-exported here for the callers that import it from this
package.

Everything lives in one process and is changed only from the event loop, so there are no locks.
The same seed gives the same catalog, keys and fault sequence (for the same request order).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bridge_agent.simulators.core.clock import SimClock
from bridge_agent.simulators.core.faults import Faults
from bridge_agent.simulators.core.stats import RequestStats
from bridge_agent.simulators.woocommerce import writes
from bridge_agent.simulators.woocommerce.auth import ApiKey, Authenticator
from bridge_agent.simulators.woocommerce.catalog import Catalog
from bridge_agent.simulators.woocommerce.generate import Shape, populate
from bridge_agent.simulators.woocommerce.model import Item, WooError, encode, wall
from bridge_agent.simulators.woocommerce.webhooks import Dispatcher

# Generated dates end here, so the same seed gives the same truth whatever the date today.
DEFAULT_EPOCH = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
PLACEHOLDER_SITE = "http://shop.example"

__all__ = ["DEFAULT_EPOCH", "PLACEHOLDER_SITE", "Faults", "WooSimulator"]


class WooSimulator:
    """A WooCommerce store: build it with `generate`, serve it with `make_app` or `serve`."""

    def __init__(
        self,
        *,
        seed: int = 0,
        site_url: str | None = None,
        utc_offset_minutes: int = 120,
        currency: str = "EUR",
        key_permissions: str = "read_write",
        faults: Faults | None = None,
        webhook_delay: float = 0.5,
        webhook_jitter: float = 0.5,
        webhook_max_failures: int = 5,
        webhook_timeout: float = 60.0,
        webhook_coalesce: bool = True,
        json_cache_size: int = 20_000,
        epoch: int = DEFAULT_EPOCH,
    ) -> None:
        self.seed = seed
        self.epoch = epoch
        self.site_url_given = site_url is not None
        self.clock = SimClock(floor=epoch)
        self.catalog = Catalog(
            clock=self.clock,
            site_url=site_url or PLACEHOLDER_SITE,
            utc_offset=utc_offset_minutes * 60,
            currency=currency,
            json_cache_size=json_cache_size,
        )
        self.faults = faults or Faults()
        self.rng = random.Random(seed * 7919 + 17)  # faults, latency jitter, webhook delays
        self.keys: dict[str, ApiKey] = {}
        self.auth = Authenticator(self.keys)
        self.consumer_key, self.consumer_secret = self.add_key(key_permissions)
        self.webhooks = Dispatcher(
            payload=self._webhook_payload,
            source=lambda: f"{self.catalog.site_url}/",
            now=self.clock.now,
            rng=self.rng,
            delay=webhook_delay,
            jitter=webhook_jitter,
            max_failures=webhook_max_failures,
            timeout=webhook_timeout,
            coalesce=webhook_coalesce,
        )
        self.catalog.listeners.append(self.webhooks.notify)
        self.requests = RequestStats()
        # Fields written through the REST API, per product: {id: {field: writes}} (`writes()`).
        self.rest_writes: dict[int, Counter[str]] = {}
        self.rest_written_at: dict[int, float] = {}  # epoch seconds of the last REST write

    @classmethod
    def generate(
        cls,
        products: int = 100,
        seed: int = 0,
        variable_ratio: float = 0.2,
        duplicate_skus: bool = False,
        *,
        no_image_ratio: float = 0.1,
        no_price_ratio: float = 0.05,
        **options: Any,
    ) -> WooSimulator:
        """A store with `products` products (plus variations) made from `seed`."""
        sim = cls(seed=seed, **options)
        shape = Shape(
            variable_ratio=variable_ratio,
            duplicate_skus=duplicate_skus,
            no_image_ratio=no_image_ratio,
            no_price_ratio=no_price_ratio,
        )
        populate(sim.catalog, random.Random(seed), products=products, epoch=sim.epoch, shape=shape)
        return sim

    # -- keys -----------------------------------------------------------------------------------

    def add_key(self, permissions: str = "read_write") -> tuple[str, str]:
        """A new REST API key pair (`read`, `write` or `read_write`), derived from the seed."""
        if permissions not in ("read", "write", "read_write"):
            raise ValueError("permissions must be read, write or read_write")
        n = len(self.keys)
        digest = hashlib.sha256(f"woo-sim:{self.seed}:{n}".encode()).hexdigest()
        key = ApiKey(f"ck_{digest[:40]}", f"cs_{digest[24:64]}", permissions)
        self.keys[key.consumer_key] = key
        return key.consumer_key, key.consumer_secret

    # -- site -----------------------------------------------------------------------------------

    @property
    def site_url(self) -> str:
        return self.catalog.site_url

    @site_url.setter
    def site_url(self, value: str) -> None:
        self.catalog.site_url = value
        self.site_url_given = True

    # -- products (the control API's Python face) ------------------------------------------------

    def _item(self, item_id: int) -> Item:
        item = self.catalog.items.get(item_id)
        if item is None:
            raise WooError(404, "woocommerce_rest_product_invalid_id", "Invalid ID.")
        return item

    def product(self, product_id: int) -> dict[str, Any]:
        """A product (or variation) as `GET /products/{id}` shows it."""
        return self.catalog.doc(self._item(product_id))

    def create_product(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Create as the store admin would; `variations` (a list of bodies) for variable ones."""
        body = dict(data)
        kids = body.pop("variations", None) or []
        item = writes.create(self.catalog, writes.validate_body(body))
        for kid in kids:
            self._add_variation(item, kid)
        return self.catalog.doc(self.catalog.items[item.id])

    def _add_variation(self, parent: Item, data: Mapping[str, Any]) -> None:
        cat = self.catalog
        body = dict(data)
        options = tuple(
            (int(a.get("id", 0)), str(a["name"]), str(a["option"]))
            for a in body.pop("attributes", [])
        )
        now = self.clock.now()
        variation = Item(
            id=cat.new_post_id(),
            type="variation",
            name="",
            slug="",
            status="publish",
            created=now,
            modified=now,
            parent_id=parent.id,
            options=options,
            menu_order=len(parent.variations),
        )
        for op in writes.apply_fields(cat, variation, writes.validate_body(body), now):
            op()
        cat.add(variation)
        parent = cat.items[parent.id]
        parent.variations = (*parent.variations, variation.id)
        cat.changed(parent.id)
        cat.emit("created", variation.id)

    def update_product(
        self, item_id: int, data: Mapping[str, Any], *, bump: bool = True, webhooks: bool = True
    ) -> dict[str, Any]:
        """Change fields of a product or variation. `bump=False` leaves `date_modified` alone
        (a direct SQL edit); `webhooks=False` fires nothing (an import that bypasses hooks)."""
        item = self._item(item_id)
        body = writes.validate_body(dict(data))
        updated = writes.update(self.catalog, item, body, bump=bump, events=webhooks)
        return self.catalog.doc(updated)

    def delete_product(self, item_id: int, *, force: bool = False) -> dict[str, Any]:
        """Trash (fires `product.deleted`) or, with `force`, delete for good (fires nothing)."""
        item = self._item(item_id)
        before = self.catalog.doc(item)
        if force:
            writes.delete(self.catalog, item)
        else:
            writes.trash(self.catalog, item)
        return before

    def untrash_product(self, item_id: int) -> dict[str, Any]:
        return self.catalog.doc(writes.untrash(self.catalog, self._item(item_id)))

    def truth(self) -> list[dict[str, Any]]:
        """Every product (trash included) with its variations: `[{"product", "variations"}]`."""
        import json  # noqa: PLC0415 - only tests call this; the server sends truth_bytes()

        docs: list[dict[str, Any]] = json.loads(self.catalog.truth())["products"]
        return docs

    def truth_bytes(self) -> bytes:
        return self.catalog.truth()

    def _webhook_payload(self, item_id: int) -> bytes:
        item = self.catalog.items.get(item_id)
        if item is None:
            # Built at delivery time from the REST route: a product deleted meanwhile gives the
            # route's error as the body.
            return encode(
                WooError(404, "woocommerce_rest_product_invalid_id", "Invalid ID.").body()
            )
        return self.catalog.product_route_json(item)

    # -- REST writes, counted per field ------------------------------------------------------------

    def count_write(self, item_id: int, changes: Mapping[str, Any]) -> None:
        """Count the fields one REST update (`PUT /products/{id}` or a batch element) sent.

        A field is the body's key (`description`, `name`, ...), `meta:<key>` for each meta row
        and `alt:<attachment id>` for each image sent with an `alt`: what a test needs to prove
        that no field was written twice. The control API (the merchant) is not counted.
        """
        counts = self.rest_writes.setdefault(item_id, Counter())
        self.rest_written_at[item_id] = time.time()  # wall clock: a benchmark compares processes
        for key, value in changes.items():
            if key == "id":
                continue
            if key == "meta_data" and isinstance(value, list):
                counts.update(f"meta:{m.get('key')}" for m in value if isinstance(m, dict))
            elif key == "images" and isinstance(value, list):
                counts["images"] += 1
                counts.update(
                    f"alt:{i.get('id')}" for i in value if isinstance(i, dict) and i.get("alt")
                )
            else:
                counts[key] += 1

    def writes(self) -> dict[str, dict[str, int]]:
        """`{product id: {field: REST writes}}`, for the products written only."""
        return {str(k): dict(v) for k, v in sorted(self.rest_writes.items())}

    def written_at(self) -> dict[str, float]:
        """`{product id: epoch seconds of its last REST write}`."""
        return {str(k): v for k, v in sorted(self.rest_written_at.items())}

    # -- stats ----------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        deliveries = [
            {
                "webhook_id": d.webhook_id,
                "topic": d.topic,
                "resource_id": d.resource_id,
                "delivery_id": d.delivery_id,
                "status": d.status,
                "ok": d.ok,
                "error": d.error,
                "at": d.at,
            }
            for d in list(self.webhooks.log)[-200:]
        ]
        return {
            **self.requests.doc(),
            "webhooks": {
                **self.webhooks.counts,
                "by_webhook": {
                    str(h.id): {"status": h.status, "failure_count": h.failure_count}
                    for h in self.webhooks.webhooks.values()
                },
                "recent": deliveries,
            },
            "products": sum(1 for _ in self.catalog.products()),
            "items": len(self.catalog.items),
        }

    async def drain_webhooks(self) -> dict[str, Any]:
        await self.webhooks.drain()
        return dict(self.webhooks.counts)

    def clock_doc(self) -> dict[str, Any]:
        now = self.clock.now()
        return {
            "now": now,
            "now_gmt": wall(now),
            "now_local": wall(now + self.catalog.utc_offset),
            "frozen": self.clock.frozen,
            "utc_offset_seconds": self.catalog.utc_offset,
        }

    async def close(self) -> None:
        await self.webhooks.close()
