"""Re-fetching hinted products: the one path from "the store says X changed" to a Change.

Spool files, webhooks and reconciliation suspects are hints. All end here: the products are read
from the store in batches (`fetch_products` where the adapter has `batch_fetch`, else one request
per id, `concurrency` at a time), a product the store no longer has becomes a deletion (or
nothing, when the store keeps deletions away from the hub), and a product that could not be read
is left out of the result so that the caller keeps its hint for a later try.

Giving up (guarantee 7, for the hint paths that opt in with `give_up=True`). A product whose
store answers a permanent error (`ItemFailure.permanent`: a 4xx other than 401/403/404/408/409/
429) would otherwise keep its hint forever, re-fetched every few minutes. After
`MAX_PERMANENT_TRIES` permanent answers, the product is given up: it is in the
result as None (nothing to record, so the caller settles its hint like a recorded one) and in
`given_up`, and `record()` writes an error event with the product id, the HTTP status and the
store's message in the transaction that settles the hint. A later change of the product is a new
hint and is fetched again. Transient failures (5xx, 429, timeouts) never give up: they keep their
hint and the caller's backoff, and do not count toward the bound. The permanent answers are
counted by the caller where it persists them (a webhook hint's `refused`), else here in memory
(spool files and reconciliation suspects).
Repair runs do not opt in: a run that cannot read a product pauses and is given up as a whole,
with its reason, after its own bounded number of failures (`sources/importer.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import structlog

from bridge_agent.errors import PlatformError
from bridge_agent.model import Change, Source
from bridge_agent.platforms.base import FetchResult, ItemFailure, failure_of, fetch_many
from bridge_agent.sources import StoreContext
from bridge_agent.sources.filtering import sift
from bridge_agent.store import Event, Hint, now_ms

log = structlog.get_logger("bridge_agent.refetch")

BATCH = 100  # ids per fetch_products call: WooCommerce's include= takes up to 100
# A permanent status is the store's verdict on this one product, but a single answer can come
# from something momentary in front of it (a cache or firewall rule being edited, a plugin in
# the middle of an update). Three answers, spaced by the caller's backoff, are a verdict; more
# would only repeat it.
MAX_PERMANENT_TRIES = 3
# Products whose permanent failures are counted in memory (the paths without a persisted count):
# past this many, the oldest count is forgotten, so a flood of bad ids cannot grow memory.
MAX_COUNTED = 10_000
DROPPED_METRIC = "bridge_hints_dropped_total"


class Refetcher:
    """Fetches hinted products of one store."""

    def __init__(
        self,
        ctx: StoreContext,
        source: Source,
        deletions: bool = True,
        concurrency: int = 4,
        *,
        give_up: bool = False,
    ) -> None:
        self.store_id = ctx.store_id
        self.platform = ctx.platform
        self.health = ctx.health
        self.source = source
        self.deletions = deletions
        self.concurrency = concurrency
        self.give_up = give_up
        self.failures: dict[str, ItemFailure] = {}  # of the last fetch(), by product id
        self.given_up: dict[str, tuple[ItemFailure, int]] = {}  # (failure, tries), not recorded
        self._permanent: dict[str, int] = {}  # permanent failures in a row, when not persisted
        self.scope = ctx.scope
        self.recorded_changes: list[Change] = []  # of the last record(): inside the scope
        self.left_out: set[str] = set()  # of the last record(): products read, outside it
        self._state = ctx.state
        self._metrics = ctx.metrics
        ctx.metrics.counter(
            DROPPED_METRIC,
            "Hinted products given up after repeated permanent store errors, by store and source.",
        )

    async def fetch(
        self, ids: Sequence[str], *, tries: Mapping[str, int] | None = None
    ) -> dict[str, Change | None]:
        """id -> Change (None: nothing to record); ids whose fetch failed are absent, and their
        failures are in `failures` until the next call.

        With `give_up`, a product given up is in the result as None and in `given_up` until
        `record()`. `tries`: how many permanent answers each id had before (a hint's persisted
        `refused`); without it, permanent failures are counted here.
        """
        self.failures, self.given_up = {}, {}
        out: dict[str, Change | None] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), BATCH):
            chunk = unique[start : start + BATCH]
            try:
                result = await fetch_many(self.platform, chunk, concurrency=self.concurrency)
            except PlatformError as exc:
                self.health.fail("store_unavailable", str(exc))
                for product_id in chunk:
                    # The whole request failed: whatever its status, it says nothing final
                    # about any one of these products, so none of them is given up for it.
                    status = failure_of(product_id, exc).status
                    self.failures[product_id] = ItemFailure(product_id, str(exc), status)
                continue
            self._collect(result, out)
        if self.give_up:
            self._give_up(out, tries)
        return out

    async def record(self, changes: Sequence[Change], *, done_hints: Sequence[Hint] = ()) -> int:
        """Record changes and settle `done_hints` (`StateStore.record`), with an error event for
        each product the last fetch gave up, in one transaction; returns rows queued.

        Only changes inside the store's scope are recorded (`sources/filtering.py`), with the
        event of each product that left it; `recorded_changes` holds what was recorded, and
        `left_out` the ids of the products read that were not recorded for the scope."""
        given_up, self.given_up = self.given_up, {}
        events = [self._event(failure, n) for failure, n in given_up.values()]
        try:
            # Products outside the store's scope are not recorded; those that left it are
            # reported, and deleted when the store ships deletions (sources/filtering.py).
            observed = changes
            changes, left = await sift(
                self._state, self.store_id, observed, self.scope, deletions=self.deletions
            )
            self.recorded_changes = changes
            self.left_out = {c.product_id for c in observed if c.product is not None} - {
                c.product_id for c in changes if c.product is not None
            }
            queued = await self._state.record(
                changes, done_hints=done_hints, events=[*events, *left]
            )
        except BaseException:
            self.given_up = given_up  # not committed: still to be recorded
            raise
        for failure, n in given_up.values():
            log.warning(
                "hint_dropped",
                store=self.store_id,
                source=self.source,
                product=failure.product_id,
                status=failure.status,
                tries=n,
                error=failure.message,
            )
        if given_up:
            self._metrics.inc(
                DROPPED_METRIC, len(given_up), store=self.store_id, source=self.source
            )
        return queued

    def _collect(self, result: FetchResult, out: dict[str, Change | None]) -> None:
        observed = now_ms()
        for product_id, product in result.found.items():
            out[product_id] = Change(self.store_id, product_id, product, self.source, observed)
        for product_id in result.missing:
            # The operator may keep deleted products at the hub (deletions = false).
            gone = Change(self.store_id, product_id, None, self.source, observed)
            out[product_id] = gone if self.deletions else None
        transient = [f for f in result.failed.values() if not f.permanent]
        if transient:
            # A permanent failure is this product's alone (the event log tells), not the store's.
            self.health.fail("store_unavailable", transient[0].message)
        self.failures.update(result.failed)

    def _give_up(self, out: dict[str, Change | None], tries: Mapping[str, int] | None) -> None:
        for product_id in out:
            self._permanent.pop(product_id, None)
        for product_id, failure in list(self.failures.items()):
            if not failure.permanent:
                continue
            if tries is not None:
                n = tries.get(product_id, 0) + 1
            else:
                n = self._permanent.pop(product_id, 0) + 1
                self._permanent[product_id] = n  # re-inserted: the newest count is kept longest
                while len(self._permanent) > MAX_COUNTED:
                    del self._permanent[next(iter(self._permanent))]
            if n >= MAX_PERMANENT_TRIES:
                self._permanent.pop(product_id, None)
                del self.failures[product_id]
                self.given_up[product_id] = (failure, n)
                out[product_id] = None

    def _event(self, failure: ItemFailure, tries: int) -> Event:
        status = "" if failure.status is None else f" {failure.status}"
        return Event(
            at=now_ms(),
            level="error",
            store=self.store_id,
            product=failure.product_id,
            status=failure.status,
            message=(
                f"product {failure.product_id} dropped from the {self.source} hints: the store"
                f" answered{status} to {tries} re-fetches: {failure.message}; it is fetched"
                " again at its next change"
            ),
        )
