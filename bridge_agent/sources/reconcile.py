"""Reconciliation: a periodic listing of every product id, to find what no hint reported.

Webhooks get lost (WooCommerce sends no `product.deleted` on a force delete and never retries),
spool writers can be bypassed (a direct SQL import). Comparing the store's ids with the mirror's:
- ids the mirror has and the store does not are re-fetched: a product that is really gone is a
  deletion (shipped as `delete`, unless the store sets `deletions = false`);
- ids the store has and the mirror does not are fetched and recorded (missed creations), when
  inside the store's scope (filters, test mode); those found outside it are remembered and not
  fetched again by later passes of this process.
Re-fetching before deleting matters: a listing can omit a product that still exists (WooCommerce
leaves trashed products out of `status=any`, and the product fetched by id says "archived").

When. The reconciler keeps no clock of its own: `first_due()` reads the persisted time of the
last reconciliation (on a first start it records now: the import establishes the truth, so the
first reconciliation is one interval later, not a second full listing right behind the import),
and the agent's schedule (`scheduling.py`, wired in `stores.py`) nudges it from then on, every
`interval`. The pass runs in this root task, so passes never overlap. A nudge that finds an
import or refresh run open waits for it to end (reading the whole catalog twice at once only
doubles the load on the store); a failed pass is tried again after a backoff capped at the
interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from bridge_agent.aio import wait_event
from bridge_agent.errors import PlatformError
from bridge_agent.sources import StoreContext, StoreSource
from bridge_agent.sources.refetch import Refetcher
from bridge_agent.sync.retry import Backoff

log = structlog.get_logger("bridge_agent.reconcile")

STREAM = "reconciled_at"
RUN_CHECK_INTERVAL = 30.0


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler(StoreSource):
    """Root task: reconcile one store per nudge (the schedule's: every `interval` seconds from
    `first_due()`, which is at once when a reconciliation is overdue)."""

    def __init__(
        self,
        ctx: StoreContext,
        *,
        interval: float,
        deletions: bool = True,
        concurrency: int = 4,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(ctx)
        self.interval = interval  # what the schedule nudges by (stores.py)
        self._clock = clock
        self._refetch = Refetcher(ctx, "reconcile", deletions, concurrency, give_up=True)
        self._outside: set[str] = set()  # listed ids found outside the scope (not in the mirror)
        self._backoff = Backoff(base=30.0, cap=interval)
        self._metrics.counter("bridge_reconciled_total", "Products fixed by reconciliation.")

    async def first_due(self) -> datetime:
        """When the first reconciliation of this run of the agent is due (may be past: overdue).

        No reconciliation yet: now is recorded as its time, so the first one is an interval after
        the first start (the import, meanwhile, establishes the truth).
        """
        last = await self._state.cursor(self.store_id, STREAM)
        if last is None:
            now = self._clock()
            await self._state.set_cursor(self.store_id, STREAM, _iso(now))
            return datetime.fromtimestamp(now + self.interval, UTC)
        done_at = datetime.fromisoformat(last.replace("Z", "+00:00"))
        return done_at + timedelta(seconds=self.interval)

    async def run(self) -> None:
        failures = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            if await self._state.open_runs(self.store_id):
                # An import or refresh is reading the whole catalog already; listing it again
                # meanwhile would only double the load on the store. Look again a little later.
                await wait_event(self._wake, RUN_CHECK_INTERVAL)
                self._wake.set()
                continue
            try:
                await self.reconcile_once()
                failures = 0
            except PlatformError as exc:
                failures += 1
                self.health.fail("reconcile_failing", str(exc))
                # A retry, not a schedule: sooner than the next nudge, later on each failure.
                await wait_event(self._wake, self._backoff.delay(failures))
                self._wake.set()

    async def reconcile_once(self) -> dict[str, int]:
        """One pass; returns counts of deletions and creations recorded. Raises PlatformError."""
        started = self._clock()
        listed: set[str] = set()
        async for ids in self._platform.product_ids():
            listed.update(ids)
        known = await self._state.mirror_ids(self.store_id)
        # Products found outside the store's scope by an earlier pass are not fetched again:
        # with filters (test mode above all) most of the catalog is outside, and would be
        # re-read in full every pass. A change that brings one into scope is seen by the
        # poll, a webhook or the spool; a restart (or new filters) forgets them all.
        self._outside &= listed - known
        suspects = sorted((known - listed) | (listed - known - self._outside))
        fetched = await self._refetch.fetch(suspects)
        changes = [c for c in fetched.values() if c is not None]
        queued = await self._refetch.record(changes)  # with the events of products given up
        changes = self._refetch.recorded_changes  # those inside the store's scope
        self._outside |= self._refetch.left_out
        deleted = sum(1 for c in changes if c.product is None)
        counts = {"deleted": deleted, "recorded": len(changes) - deleted, "queued": queued}
        for kind in ("deleted", "recorded"):
            if counts[kind]:
                self._metrics.inc("bridge_reconciled_total", counts[kind], kind=kind)
        if len(fetched) < len(suspects):
            raise PlatformError(
                f"{len(suspects) - len(fetched)} product(s) could not be re-fetched"
            )
        await self._state.set_cursor(self.store_id, STREAM, _iso(started))
        self.recorded(queued, "reconcile")
        if queued:
            found = f"{deleted} deleted and {counts['recorded']} unseen product(s)"
            await self._state.log_event(f"reconciliation found {found}", store=self.store_id)
        if self.health.state == "reconcile_failing":
            self.health.ok()
        log.info("reconciled", store=self.store_id, listed=len(listed), **counts)
        return counts
