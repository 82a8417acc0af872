"""Re-fetching hinted products: the one path from "the store says X changed" to a Change.

Spool files and webhooks are hints. Both end here: each product is fetched from the store
(bounded concurrency), a product the store no longer has becomes a deletion (or nothing, when the
store keeps deletions away from the hub), and a failed fetch is reported by leaving the id out of
the result so that the caller keeps its hint for a later try.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bridge_agent.errors import PlatformError, ProductNotFound
from bridge_agent.model import Change, Product, Source
from bridge_agent.sources import StoreContext
from bridge_agent.store import now_ms


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
        self._slots = asyncio.Semaphore(concurrency)

    async def fetch(self, ids: Sequence[str]) -> dict[str, Change | None]:
        """id -> Change (None: nothing to record); ids whose fetch failed are absent."""
        results = await asyncio.gather(*(self._one(i) for i in ids))
        return {i: c for i, (ok, c) in zip(ids, results, strict=True) if ok}

    async def _one(self, product_id: str) -> tuple[bool, Change | None]:
        async with self._slots:
            try:
                product: Product | None = await self.platform.fetch_product(product_id)
            except ProductNotFound:
                product = None
            except PlatformError as exc:
                self.health.fail("store_unavailable", str(exc))
                return False, None
        if product is None and not self.deletions:
            return True, None  # the operator keeps deleted products at the hub
        return True, Change(self.store_id, product_id, product, self.source, now_ms())
