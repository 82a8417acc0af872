"""The downstream feed of one store: long-poll the hub's optimisations and journal each page.

A page is journaled, and the feed cursor moved past it, in one transaction
(`StateStore.journal_received`) before anything acts on it: a crash before that commit reads the
page again (the cursor did not move), a crash after it finds the page in the journal (and a
page read twice journals nothing twice: the key is the optimisation id). So an optimisation is
never lost and never taken twice; applying it is the journal's business (`apply.py`).

A hub outage is waited out with the shared backoff (`sync/retry.py`), honouring `Retry-After`;
a refused token waits `auth_retry_interval` (retrying every second helps nobody). The feed never
touches the store: a hub outage stops nothing but the arrival of new optimisations.

**Hub content never stops the feed.** A page's items are decoded one by one (`wire.decode_feed`):
a malformed optimisation (a msgpack `bin` in its fields, a time past SQLite's int64, an id that is
not text) is journaled `failed` with the detail `malformed: ...`, so the hub hears of it, while
the good ones of the page go on and the cursor moves past it; one without a usable id cannot be
reported and is only logged (and put in the event log). Should anything else about one item make
the page's transaction fail, the page is journaled item by item and that item alone fails. Only
an unusable envelope (not msgpack, not v1) is a hub failure, waited out like an outage. The root
task dies of nothing but the state store (fail closed).

**A hub that repeats a page** (it ignores `after`: the same optimisations, already journaled,
and the same cursor) would have the feed ask again at once, hundreds of times a second. The feed
backs off instead (at least `REPEAT_PAUSE`, growing with the shared backoff), says so once in the
log and the event log, and shows it as the feed's error in `status` until the hub moves on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from bridge_agent import wire
from bridge_agent.errors import HubAuthFailed, HubError, HubUnavailable, StateStoreError
from bridge_agent.metrics import Metrics
from bridge_agent.store import Received, StateStore
from bridge_agent.store.journal import STREAM, Refused
from bridge_agent.sync.retry import Backoff

log = structlog.get_logger("bridge_agent.downstream")

LONG_POLL = 25.0  # seconds a feed request waits at the hub for news (the hub holds up to 30)
REPEAT_PAUSE = 1.0  # at least this long between reads of a hub that repeats its page
DETAIL_CHARS = 500  # of an unexpected error's message kept as an item's `malformed:` detail


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
        on_refused: Callable[[], None] = lambda: None,
        wait: float = LONG_POLL,
        backoff: Backoff | None = None,
        auth_retry_interval: float = 300.0,
    ) -> None:
        self.store_id = store_id
        self._hub = hub  # the hub client of the moment (a reload may replace it)
        self._state = state
        self._metrics = metrics
        self._on_journaled = on_journaled
        self._on_refused = on_refused  # refusals are results to post: wake the poster
        self.wait = wait
        self._backoff = backoff or Backoff()
        self._auth_retry = auth_retry_interval
        self.failures = 0  # consecutive failed reads (status shows the feed as failing)
        self.last_error: str | None = None
        self.repeats = 0  # consecutive reads that brought a page already journaled
        metrics.counter(
            "bridge_downstream_received_total", "Optimisations journaled from the hub's feed."
        )
        metrics.counter(
            "bridge_downstream_refused_total",
            "Feed items refused as malformed (reported `failed` when they had an id).",
        )

    async def run(self) -> None:
        while True:
            try:
                delay = await self.read_once()
            except StateStoreError:
                raise  # fail closed: the agent stops rather than guess
            except Exception as exc:  # nothing from the hub may end the task
                log.exception("downstream_feed_crashed", store=self.store_id)
                self._failed(exc)
                delay = self._backoff.delay(self.failures - 1)
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
        received = [Received(o.id, o.product, o.fields, o.created_at) for o in page.optimizations]
        refused = [
            Refused(r.id, r.product or "", f"malformed: {r.reason}")
            for r in page.refused
            if r.id is not None
        ]
        added = 0
        if received or refused or page.cursor != cursor:
            added = await self._journal(received, refused, cursor, page.cursor)
            if added:
                self._metrics.inc("bridge_downstream_received_total", added, store=store)
                log.info("optimizations_received", store=store, count=added, cursor=page.cursor)
        self.failures = 0  # only now: a page that fails to journal counts as a failed read
        if page.optimizations or page.refused:
            if not added and page.cursor == cursor:
                return await self._repeated(cursor)  # counted and said when it first came
            await self._say_refused(page.refused)
            self._moved_on()
            self._on_journaled()
            return 0.0
        self._moved_on()
        # An empty answer after the wait: ask again at once. One that came back early (a hub
        # that ignores `wait`, or one shutting down) must not make us spin.
        early = loop.time() - started < self.wait / 2
        return min(1.0, max(self.wait, 0.1)) if early else 0.0

    async def _say_refused(self, items: Sequence[wire.RefusedOptimization]) -> None:
        """Count a page's malformed items. Those with an id are journaled `failed` (with their
        event) and go to the hub as results; those without one can only be told the operator."""
        if not items:
            return
        self._metrics.inc("bridge_downstream_refused_total", len(items), store=self.store_id)
        if any(item.id is not None for item in items):
            self._on_refused()  # results to post: wake the poster
        for item in items:
            if item.id is not None:
                continue
            log.warning("optimization_refused_without_id", store=self.store_id, reason=item.reason)
            await self._state.log_event(
                f"the hub sent an optimization without a usable id (skipped):"
                f" malformed: {item.reason}",
                level="warning",
                store=self.store_id,
            )

    async def _journal(
        self, received: list[Received], refused: list[Refused], cursor: str, new_cursor: str
    ) -> int:
        """Journal a page and move the cursor past it in one transaction; should the page fail
        for anything but the state store, item by item, each failing one journaled `failed`."""
        store = self.store_id
        try:
            return await self._state.journal_received(store, received, new_cursor, refused=refused)
        except StateStoreError:
            raise
        except Exception:  # one item the decoder let through: find it below
            log.warning("optimization_page_not_journaled", store=store, items=len(received))
        added = 0
        bad = list(refused)
        for item in received:
            try:  # the cursor stays where it was until the whole page is in
                added += await self._state.journal_received(store, [item], cursor)
            except StateStoreError:
                raise
            except Exception as exc:  # this item's failure, nobody else's
                reason = f"{type(exc).__name__}: {exc}"[:DETAIL_CHARS]
                bad.append(Refused(item.id, item.product, f"malformed: {reason}"))
        try:
            added += await self._state.journal_received(store, [], new_cursor, refused=bad)
        except StateStoreError:
            raise
        except Exception:  # not even refusable: move on, say so
            log.exception("optimizations_refusal_not_journaled", store=store, ids=len(bad))
            added += await self._state.journal_received(store, [], new_cursor)
        if bad:
            self._on_refused()
        return added

    async def _repeated(self, cursor: str) -> float:
        """The hub served a page already journaled without moving the cursor: wait, say so once."""
        self.repeats += 1
        self.last_error = (
            f"the hub serves the same page again after cursor {cursor or '(start)'!r}"
            " (it ignores `after`): the feed waits between reads"
        )
        if self.repeats == 1:
            log.warning("downstream_feed_repeats", store=self.store_id, cursor=cursor)
            await self._state.log_event(self.last_error, level="warning", store=self.store_id)
        return max(REPEAT_PAUSE, self._backoff.delay(self.repeats - 1))

    def _moved_on(self) -> None:
        if self.repeats:
            log.info("downstream_feed_moves_on", store=self.store_id)
        self.repeats, self.last_error = 0, None

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = str(exc) or type(exc).__name__
        log.warning(
            "downstream_feed_failed", store=self.store_id, error=self.last_error,
            attempt=self.failures,
        )  # fmt: skip
