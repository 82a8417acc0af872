"""Re-fetching hinted products: the one path from "the store says X changed" to a Change.

Spool files, webhooks and reconciliation suspects are hints. All end here: the products are read
from the store in batches (`fetch_products` where the adapter has `batch_fetch`, else one request
per id, `concurrency` at a time), a product the store no longer has becomes a deletion (or
nothing, when the store keeps deletions away from the hub), and a product that could not be read
is left out of the result so that the caller keeps its hint for a later try.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge_agent.errors import PlatformError
from bridge_agent.model import Change, Source
from bridge_agent.platforms.base import FetchResult, ItemFailure, fetch_many
from bridge_agent.sources import StoreContext
from bridge_agent.store import now_ms

BATCH = 100  # ids per fetch_products call: WooCommerce's include= takes up to 100


class Refetcher:
    """Fetches hinted products of one store."""

    def __init__(
        self, ctx: StoreContext, source: Source, deletions: bool = True, concurrency: int = 4
    ) -> None:
        self.store_id = ctx.store_id
        self.platform = ctx.platform
        self.health = ctx.health
        self.source = source
        self.deletions = deletions
        self.concurrency = concurrency
        self.failures: dict[str, ItemFailure] = {}  # of the last fetch(), by product id

    async def fetch(self, ids: Sequence[str]) -> dict[str, Change | None]:
        """id -> Change (None: nothing to record); ids whose fetch failed are absent, and their
        failures are in `failures` until the next call."""
        self.failures = {}
        out: dict[str, Change | None] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), BATCH):
            chunk = unique[start : start + BATCH]
            try:
                result = await fetch_many(self.platform, chunk, concurrency=self.concurrency)
            except PlatformError as exc:
                self.health.fail("store_unavailable", str(exc))
                for product_id in chunk:
                    self.failures[product_id] = ItemFailure(product_id, str(exc))
                continue
            self._collect(result, out)
        return out

    def _collect(self, result: FetchResult, out: dict[str, Change | None]) -> None:
        observed = now_ms()
        for product_id, product in result.found.items():
            out[product_id] = Change(self.store_id, product_id, product, self.source, observed)
        for product_id in result.missing:
            # The operator may keep deleted products at the hub (deletions = false).
            gone = Change(self.store_id, product_id, None, self.source, observed)
            out[product_id] = gone if self.deletions else None
        if result.failed:
            first = next(iter(result.failed.values()))
            self.health.fail("store_unavailable", first.message)
            self.failures.update(result.failed)
