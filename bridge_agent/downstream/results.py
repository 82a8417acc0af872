"""Report downstream results to the hub until it acknowledges them.

A result is written to the journal in the transaction that records the outcome (`apply.py`), as
`unreported`; this poster sends what is unreported (msgpack, `POST .../optimizations/results`
with the product hash after the write) and marks it `reported` only after the hub's 200. A crash,
a hub outage or a refused token loses nothing: the results wait in the journal and go at the next
try, after a restart too. The mark is conditioned on the state that was sent (store/journal.py):
a `pending_review` acknowledged after the optimisation was applied leaves `applied` to send.

A rollback (`bridge-agent rollback`, another process) is reported the same way: its rows in
`rollbacks` wait `unreported` and go as status `rolled_back`, after the journal's results, found
on the poster's idle beat (`IDLE_CHECK`) since nobody nudges it across processes.

A result may reach the hub twice (the 200 lost on the way back): the hub stores the last result
per optimisation, so sending it again is harmless.

Only the hub's v1 answer acknowledges a post (`HubClient.post_optimization_results`): a 200 with
an HTML page (a proxy, a captive portal) marks nothing. A post refused as too large (413: a
proxy's body limit, nginx's is 1 MB) is halved, down to one result, and stays that size for the
next posts (doubling again after `GROW_AFTER` accepted posts); a single result refused so goes
again with its detail cut to `SHORT_DETAIL_CHARS`, and past that waits with backoff like any
refused post: a result is never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from bridge_agent import wire
from bridge_agent.downstream.feed import HubLink
from bridge_agent.errors import HubAuthFailed, HubError, HubRejected, HubUnavailable
from bridge_agent.metrics import Metrics
from bridge_agent.store import RollbackReport, StateStore
from bridge_agent.sync.retry import Backoff

log = structlog.get_logger("bridge_agent.downstream")

RESULTS_PER_POST = 500
SHORT_DETAIL_CHARS = 200  # a lone result a hub refuses as too large goes with this much detail
GROW_AFTER = 20  # accepted posts after a 413 before trying twice as many results again
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
        self.per_post = RESULTS_PER_POST  # halved by each 413, down to 1
        self._accepted_since_shrink = 0
        self._short: set[str] = set()  # ids whose result the hub refused as too large alone
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
        reports = await self._state.unreported_results(store, limit=self.per_post)
        rollbacks: list[RollbackReport] = []
        if len(reports) < self.per_post:
            # After the journal's results, never before: the hub keeps the last result of an
            # optimisation, and its `rolled_back` must land after the `applied` it undoes.
            rollbacks = await self._state.unreported_rollbacks(
                store, limit=self.per_post - len(reports)
            )
        if not reports and not rollbacks:
            return None
        results = [
            wire.OptimizationResult(r.id, r.status, _bounded(r.detail), r.hash) for r in reports
        ] + [
            wire.OptimizationResult(r.optimization, "rolled_back", _bounded(r.detail), r.hash)
            for r in rollbacks
        ]
        if self._short:
            results = [self._shortened(r) for r in results]
        try:
            await self._hub().post_optimization_results(store, results)
        except HubAuthFailed as exc:
            self._failed(exc)
            return self._auth_retry
        except HubRejected as exc:
            if exc.status == 413 and self._too_large(results):
                return 0.0  # fewer (or shorter) at once, now
            # This agent built the body, so any other refusal is a hub that differs from us:
            # the results stay in the journal (loud in the log) rather than dropped.
            self._failed(exc)
            return self._backoff.delay(self.failures - 1)
        except HubError as exc:
            self._failed(exc)
            retry_after = exc.retry_after if isinstance(exc, HubUnavailable) else None
            return self._backoff.delay(self.failures - 1, retry_after=retry_after)
        self.failures, self.last_error = 0, None
        self._accepted(results)
        if reports:
            await self._state.mark_reported(store, [(r.id, r.status) for r in reports])
        if rollbacks:
            await self._state.mark_rollbacks_reported(store, [r.id for r in rollbacks])
        for result in results:
            self._metrics.inc(
                "bridge_downstream_results_reported_total", store=store, status=result.status
            )
        log.info("optimization_results_reported", store=store, count=len(results))
        return 0.0

    def _too_large(self, results: list[wire.OptimizationResult]) -> bool:
        """The hub refused a post as too large: post half as many, or a lone result with a
        shorter detail. False when nothing is left to cut (the refusal is then a failure)."""
        if len(results) > 1:
            self.per_post = max(1, len(results) // 2)
            self._accepted_since_shrink = 0
            log.warning(
                "downstream_results_too_large", store=self.store_id, refused=len(results),
                per_post=self.per_post,
            )  # fmt: skip
            return True
        (one,) = results
        if one.detail is not None and len(one.detail) > SHORT_DETAIL_CHARS:
            self._short.add(one.id)
            log.warning("downstream_result_too_large", store=self.store_id, id=one.id)
            return True
        return False

    def _shortened(self, result: wire.OptimizationResult) -> wire.OptimizationResult:
        if result.id not in self._short or result.detail is None:
            return result
        detail = _bounded(result.detail, SHORT_DETAIL_CHARS)
        return wire.OptimizationResult(result.id, result.status, detail, result.hash)

    def _accepted(self, results: list[wire.OptimizationResult]) -> None:
        self._short.difference_update(r.id for r in results)
        if self.per_post < RESULTS_PER_POST:
            self._accepted_since_shrink += 1
            if self._accepted_since_shrink >= GROW_AFTER:
                self.per_post = min(RESULTS_PER_POST, self.per_post * 2)
                self._accepted_since_shrink = 0

    def _failed(self, exc: HubError) -> None:
        self.failures += 1
        self.last_error = str(exc)
        log.warning(
            "downstream_results_failed", store=self.store_id, error=str(exc), attempt=self.failures
        )


def _bounded(detail: str | None, limit: int = DETAIL_CHARS) -> str | None:
    if detail is None or len(detail) <= limit:
        return detail
    return detail[: limit - 1] + "…"
