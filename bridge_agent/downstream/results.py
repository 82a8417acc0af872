"""Report downstream results to the hub until it acknowledges them.

A result is written to the journal in the transaction that records the outcome (`apply.py`), as
`unreported`; this poster sends what is unreported (msgpack, `POST .../optimizations/results`
with the product hash after the write) and marks it `reported` only after the hub's 200. A crash,
a hub outage or a refused token loses nothing: the results wait in the journal and go at the next
try, after a restart too. The mark is conditioned on the state that was sent (store/journal.py):
a `pending_review` acknowledged after the optimisation was applied leaves `applied` to send.

A result may reach the hub twice (the 200 lost on the way back): the hub stores the last result
per optimisation, so sending it again is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from bridge_agent import wire
from bridge_agent.downstream.feed import HubLink
from bridge_agent.errors import HubAuthFailed, HubError, HubUnavailable
from bridge_agent.metrics import Metrics
from bridge_agent.store import StateStore
from bridge_agent.sync.retry import Backoff

log = structlog.get_logger("bridge_agent.downstream")

RESULTS_PER_POST = 500
DETAIL_CHARS = 2000  # a result's detail lists fields; bounded so a huge one cannot stop a post
IDLE_CHECK = 30.0  # seconds between looks at the journal when nobody nudged (another process)


class ResultPoster:
    """Root task part: sends one store's unreported results, durably retried."""

    def __init__(
        self,
        store_id: str,
        hub: Callable[[], HubLink],
        state: StateStore,
        metrics: Metrics,
        *,
        backoff: Backoff | None = None,
        auth_retry_interval: float = 300.0,
        idle_check: float = IDLE_CHECK,
    ) -> None:
        self.store_id = store_id
        self._hub = hub
        self._state = state
        self._metrics = metrics
        self._backoff = backoff or Backoff()
        self._auth_retry = auth_retry_interval
        self._idle_check = idle_check
        self._wake = asyncio.Event()
        self.failures = 0
        self.last_error: str | None = None
        metrics.counter(
            "bridge_downstream_results_reported_total", "Downstream results the hub acknowledged."
        )

    def nudge(self) -> None:
        """New results are in the journal: send them now."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            delay = await self.post_once()
            if delay is None:  # nothing left: wait for news
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._idle_check):
                        await self._wake.wait()
            elif delay:
                await asyncio.sleep(delay)

    async def post_once(self) -> float | None:
        """Send one post of unreported results; None when none is left, else the seconds to wait
        before the next post (0: more are waiting)."""
        store = self.store_id
        reports = await self._state.unreported_results(store, limit=RESULTS_PER_POST)
        if not reports:
            return None
        results = [
            wire.OptimizationResult(r.id, r.status, _bounded(r.detail), r.hash) for r in reports
        ]
        try:
            await self._hub().post_optimization_results(store, results)
        except HubAuthFailed as exc:
            self._failed(exc)
            return self._auth_retry
        except HubError as exc:
            # HubRejected too: this agent built the body, so a refusal is a hub that differs
            # from us; the results stay in the journal (loud in the log) rather than dropped.
            self._failed(exc)
            retry_after = exc.retry_after if isinstance(exc, HubUnavailable) else None
            return self._backoff.delay(self.failures - 1, retry_after=retry_after)
        self.failures, self.last_error = 0, None
        await self._state.mark_reported(store, [(r.id, r.status) for r in reports])
        for r in reports:
            self._metrics.inc(
                "bridge_downstream_results_reported_total", store=store, status=r.status
            )
        log.info("optimization_results_reported", store=store, count=len(reports))
        return 0.0

    def _failed(self, exc: HubError) -> None:
        self.failures += 1
        self.last_error = str(exc)
        log.warning(
            "downstream_results_failed", store=self.store_id, error=str(exc), attempt=self.failures
        )


def _bounded(detail: str | None) -> str | None:
    if detail is None or len(detail) <= DETAIL_CHARS:
        return detail
    return detail[: DETAIL_CHARS - 1] + "…"
