"""The downstream feed of one store: long-poll the hub's optimisations and journal each page.

A page is journaled, and the feed cursor moved past it, in one transaction
(`StateStore.journal_received`) before anything acts on it: a crash before that commit reads the
page again (the cursor did not move), a crash after it finds the page in the journal (and a
page read twice journals nothing twice: the key is the optimisation id). So an optimisation is
never lost and never taken twice; applying it is the journal's business (`apply.py`).

A hub outage is waited out with the shared backoff (`sync/retry.py`), honouring `Retry-After`;
a refused token waits `auth_retry_interval` (retrying every second helps nobody). The feed never
touches the store: a hub outage stops nothing but the arrival of new optimisations.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from bridge_agent import wire
from bridge_agent.errors import HubAuthFailed, HubError, HubUnavailable
from bridge_agent.metrics import Metrics
from bridge_agent.store import Received, StateStore
from bridge_agent.store.journal import STREAM
from bridge_agent.sync.retry import Backoff

log = structlog.get_logger("bridge_agent.downstream")

LONG_POLL = 25.0  # seconds a feed request waits at the hub for news (the hub holds up to 30)


class HubLink(Protocol):
    """What the downstream direction asks of the hub (`hublink.HubClient`)."""

    async def optimizations(
        self, store: str, after: str, *, wait: float = 0.0
    ) -> wire.OptimizationFeed: ...

    async def post_optimization_results(
        self, store: str, results: Sequence[wire.OptimizationResult]
    ) -> None: ...


class FeedReader:
    """Root task part: long-polls one store's feed and journals what arrives."""

    def __init__(
        self,
        store_id: str,
        hub: Callable[[], HubLink],
        state: StateStore,
        metrics: Metrics,
        *,
        on_journaled: Callable[[], None],
        wait: float = LONG_POLL,
        backoff: Backoff | None = None,
        auth_retry_interval: float = 300.0,
    ) -> None:
        self.store_id = store_id
        self._hub = hub  # the hub client of the moment (a reload may replace it)
        self._state = state
        self._metrics = metrics
        self._on_journaled = on_journaled
        self.wait = wait
        self._backoff = backoff or Backoff()
        self._auth_retry = auth_retry_interval
        self.failures = 0  # consecutive failed reads (status shows the feed as failing)
        self.last_error: str | None = None
        metrics.counter(
            "bridge_downstream_received_total", "Optimisations journaled from the hub's feed."
        )

    async def run(self) -> None:
        while True:
            delay = await self.read_once()
            if delay:
                await asyncio.sleep(delay)

    async def read_once(self) -> float:
        """Read and journal one page; the seconds to wait before the next read (0: at once)."""
        store = self.store_id
        cursor = await self._state.cursor(store, STREAM) or ""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            page = await self._hub().optimizations(store, cursor, wait=self.wait)
        except HubAuthFailed as exc:
            self._failed(exc)
            return self._auth_retry
        except HubError as exc:
            self._failed(exc)
            retry_after = exc.retry_after if isinstance(exc, HubUnavailable) else None
            return self._backoff.delay(self.failures - 1, retry_after=retry_after)
        self.failures, self.last_error = 0, None
        received = [Received(o.id, o.product, o.fields, o.created_at) for o in page.optimizations]
        if received or page.cursor != cursor:
            added = await self._state.journal_received(store, received, page.cursor)
            if added:
                self._metrics.inc("bridge_downstream_received_total", added, store=store)
                log.info("optimizations_received", store=store, count=added, cursor=page.cursor)
        if received:
            self._on_journaled()
            return 0.0
        # An empty answer after the wait: ask again at once. One that came back early (a hub
        # that ignores `wait`, or one shutting down) must not make us spin.
        early = loop.time() - started < self.wait / 2
        return min(1.0, max(self.wait, 0.1)) if early else 0.0

    def _failed(self, exc: HubError) -> None:
        self.failures += 1
        self.last_error = str(exc)
        log.warning(
            "downstream_feed_failed", store=self.store_id, error=str(exc), attempt=self.failures
        )
