"""`ShopifySimulator`: the whole simulated shop (catalog, bucket, bulk operations, webhooks,
faults, clock, stats) and its Python face for the control API and tests.

Everything lives in one process and is changed only from the event loop, so there are no locks.
The same seed gives the same catalog, credentials and fault sequence (for one request order).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bridge_agent.simulators.core.clock import SimClock
from bridge_agent.simulators.core.faults import Faults
from bridge_agent.simulators.core.stats import RequestStats
from bridge_agent.simulators.shopify.bulk import BulkOperations
from bridge_agent.simulators.shopify.catalog import Catalog, truth_product
from bridge_agent.simulators.shopify.cost import Bucket
from bridge_agent.simulators.shopify.execution import Executor
from bridge_agent.simulators.shopify.generate import populate
from bridge_agent.simulators.shopify.model import encode, iso
from bridge_agent.simulators.shopify.resolvers import Context
from bridge_agent.simulators.shopify.schema import API_VERSION
from bridge_agent.simulators.shopify.settings import ShopifyFaults
from bridge_agent.simulators.shopify.webhooks import Dispatcher

# Generated dates end here, so the same seed gives the same truth whatever the date today.
DEFAULT_EPOCH = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
PLACEHOLDER_URL = "http://shop.example"
IMAGE_PATH = "/cdn/shop"  # where the simulator serves its product images (`app.py`)


class SimError(LookupError):
    """A control request about something that does not exist (rendered 404)."""


class ShopifySimulator:
    """A Shopify shop: build it with `generate`, serve it with `app.make_app` or `app.serve`."""

    def __init__(
        self,
        *,
        seed: int = 0,
        shop_url: str | None = None,
        faults: ShopifyFaults | None = None,
        epoch: int = DEFAULT_EPOCH,
    ) -> None:
        self.seed = seed
        self.epoch = epoch
        self.shop_url = shop_url or PLACEHOLDER_URL
        self.shop_url_given = shop_url is not None
        digest = hashlib.sha256(f"shopify-sim:{seed}".encode()).hexdigest()
        self.access_token = f"shpat_{digest[:32]}"
        self.client_secret = digest[32:64]
        self.shop_domain = f"sim-shop-{seed}.myshopify.com"
        self.clock = SimClock(floor=epoch)
        # One object, two views: `faults` for the shared parts (core.faults, the control
        # routes), `settings` for the Shopify ones (bucket, bulk, webhook timing).
        self.settings = faults or ShopifyFaults()
        self.faults: Faults = self.settings
        self.rng = random.Random(seed * 7919 + 23)  # faults, latency jitter, webhook timing
        self.catalog = Catalog(
            # Until the simulator listens (`app.serve` moves them to its own address): a
            # reserved name that never resolves, so no image URL points off this machine.
            shop_domain=self.shop_domain,
            image_origin=f"{self.shop_url}{IMAGE_PATH}",
        )
        self.bucket = Bucket(self.clock, self.settings)
        self.executor = Executor()
        self.bulk = BulkOperations(self)
        self.webhooks = Dispatcher(self)
        self.catalog.listeners.append(self.webhooks.notify)
        self.requests = RequestStats()
        self.counters: Counter[str] = Counter(
            {"throttled": 0, "max_cost_exceeded": 0, "points_spent": 0, "bulk_operations": 0}
        )

    @classmethod
    def generate(cls, products: int = 100, seed: int = 0, **options: Any) -> ShopifySimulator:
        """A shop with `products` generated products made from `seed`."""
        sim = cls(seed=seed, **options)
        populate(
            sim.catalog.products,
            sim.catalog.numbers,
            random.Random(seed),
            count=products,
            epoch=sim.epoch,
            shop_domain=sim.shop_domain,
            image_origin=sim.catalog.image_origin,
        )
        sim.catalog.reindex_all()
        return sim

    # -- GraphQL -----------------------------------------------------------------------------------

    def graphql(self, body: Any, origin: str | None = None) -> dict[str, Any]:
        """Answer one GraphQL request body (the JSON object a client POSTs)."""
        self.tick()
        return self.executor.run(Context(self, origin or self.shop_url), body)

    def tick(self) -> None:
        """Move what runs on the simulator's clock: bulk operations and webhook retries."""
        self.bulk.tick()
        self.webhooks.tick()

    def shop_record(self) -> dict[str, Any]:
        return {
            "__typename": "Shop",
            "id": "gid://shopify/Shop/" + str(60_000_000_000 + self.seed),
            "name": f"Simulated Shop {self.seed}",
            "email": "owner@example.com",
            "contactEmail": "owner@example.com",
            "currencyCode": "EUR",
            "ianaTimezone": "Etc/UTC",
            "timezoneAbbreviation": "UTC",
            "timezoneOffset": "+0000",
            "timezoneOffsetMinutes": 0,
            "myshopifyDomain": self.shop_domain,
            "url": f"https://{self.shop_domain}",
            "primaryDomain": {
                "__typename": "Domain",
                "host": self.shop_domain,
                "url": f"https://{self.shop_domain}",
            },
            "createdAt": iso(self.epoch - 3 * 365 * 24 * 3600),
            "updatedAt": iso(self.epoch),
        }

    # -- the control API's Python face -----------------------------------------------------------

    def _product(self, num: int) -> dict[str, Any]:
        product = self.catalog.product(num)
        if product is None:
            raise SimError(f"Product {num} does not exist.")
        return product

    def product(self, num: int) -> dict[str, Any]:
        return truth_product(self._product(num))

    def create_product(self, fields: Mapping[str, Any], *, webhooks: bool = True) -> dict[str, Any]:
        product = self.catalog.create(dict(fields), now=self.clock.now(), webhooks=webhooks)
        return truth_product(product)

    def update_product(
        self, num: int, fields: Mapping[str, Any], *, bump: bool = True, webhooks: bool = True
    ) -> dict[str, Any]:
        product = self._product(num)
        try:
            self.catalog.update(
                product, dict(fields), now=self.clock.now(), bump=bump, webhooks=webhooks
            )
        except KeyError as exc:
            raise SimError(str(exc.args[0])) from None
        return truth_product(product)

    def delete_product(self, num: int, *, webhooks: bool = True) -> dict[str, Any]:
        product = self._product(num)
        before = truth_product(product)
        self.catalog.delete(product, webhooks=webhooks)
        return before

    def set_inventory(
        self, item_num: int, available: int, *, webhooks: bool = True
    ) -> dict[str, Any]:
        item = self.catalog.inventory_item(item_num)
        if item is None:
            raise SimError(f"Inventory item {item_num} does not exist.")
        self.catalog.set_available(item, available, now=self.clock.now(), webhooks=webhooks)
        return truth_product(item["variant"]["product"])

    def truth(self) -> list[dict[str, Any]]:
        return self.catalog.truth()

    def truth_bytes(self) -> bytes:
        return encode({"products": self.catalog.truth()})

    # -- observing ---------------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {
            "shop_url": self.shop_url,
            "api_version": API_VERSION,
            "graphql_url": f"{self.shop_url}/admin/api/{API_VERSION}/graphql.json",
            "access_token": self.access_token,
            "client_secret": self.client_secret,
            "shop_domain": self.shop_domain,
            "seed": self.seed,
            "bucket": {
                "maximumAvailable": self.settings.bucket_max,
                "restoreRate": self.settings.restore_rate,
            },
        }

    def stats(self) -> dict[str, Any]:
        self.tick()
        return {
            **self.requests.doc(),
            **self.counters,
            "bucket": self.bucket.status(),
            "bulk": {
                "operations": len(self.bulk.operations),
                "running": len(self.bulk.running()),
            },
            "webhooks": self.webhooks.doc(),
            "products": len(self.catalog.products),
        }

    def clock_doc(self) -> dict[str, Any]:
        now = self.clock.now()
        return {"now": now, "now_iso": iso(now), "frozen": self.clock.frozen}

    async def drain_webhooks(self) -> dict[str, Any]:
        await self.webhooks.drain()
        return {k: v for k, v in self.webhooks.doc().items() if k != "recent"}

    async def close(self) -> None:
        await self.webhooks.close()
