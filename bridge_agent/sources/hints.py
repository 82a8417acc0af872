"""The hint worker: turns committed webhook hints into recorded changes.

A webhook is answered as soon as its hint is committed (guarantee 2); this root task then
re-fetches the hinted products from the store and records them, deleting each hint in the same
transaction as its product (so a crash in between re-fetches, never loses). A re-fetch that fails
leaves the hint with a backoff, its attempt counted and the store's answer as its last error; the
store's health says why. A product that keeps answering a permanent error is given up after
`refetch.MAX_PERMANENT_TRIES` permanent answers (the hint's `refused`; failures during an outage
do not count): its hint is deleted in the transaction that writes the event saying so, with the
status and message (guarantee 7). Transient failures are retried with the backoff, however long.
"""

from __future__ import annotations

import structlog

from bridge_agent.aio import wait_event
from bridge_agent.sources import StoreContext, StoreSource
from bridge_agent.sources.refetch import Refetcher
from bridge_agent.sync.retry import Backoff

log = structlog.get_logger("bridge_agent.hints")

BATCH = 100
IDLE_CHECK = 5.0  # look for deferred hints that came due, even without a nudge


class HintWorker(StoreSource):
    """Root task for one store's webhook hints."""

    def __init__(
        self,
        ctx: StoreContext,
        *,
        deletions: bool = True,
        concurrency: int = 4,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(ctx)
        self._refetch = Refetcher(ctx, "webhook", deletions, concurrency, give_up=True)
        self._backoff = backoff or Backoff(base=1.0, cap=300.0)
        self._wake.set()  # hints committed before a restart are due at once

    async def run(self) -> None:
        while True:
            await wait_event(self._wake, IDLE_CHECK)
            self._wake.clear()
            while await self.process_once():
                pass

    async def process_once(self) -> int:
        """Re-fetch and record one batch of due hints; returns how many were settled (recorded
        or given up)."""
        hints = await self._state.due_hints(self.store_id, limit=BATCH)
        if not hints:
            return 0
        fetched = await self._refetch.fetch(
            sorted({h.id for h in hints}), tries={h.id: h.refused for h in hints}
        )
        done = [h for h in hints if h.id in fetched]
        changes = [c for c in fetched.values() if c is not None]
        queued = await self._refetch.record(changes, done_hints=done)
        self.recorded(queued, "webhook")
        failed = [h for h in hints if h.id not in fetched]
        if failed:
            attempts = max(h.attempts for h in failed)
            failures = self._refetch.failures
            await self._state.defer_hints(
                failed,
                error="re-fetch failed",
                delay=self._backoff.delay(attempts),
                errors={h.id: failures[h.id].message for h in failed if h.id in failures},
                refused={i for i, f in failures.items() if f.permanent},
            )
        elif self.health.failing:
            self.health.ok("receiving")
        return len(done)
