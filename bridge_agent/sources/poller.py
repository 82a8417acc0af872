"""Modified-since polling: the safety net under webhooks and the spool.

Cursor rules (Singer's, in this order), and why:
- The cursor is the time the last complete poll *started*, not the newest `updated_at` seen: a
  product saved while a poll pages through the catalog may be missed by that poll, and the next
  poll must still cover it.
- Each poll asks for products modified at or after `cursor - overlap`. The overlap absorbs clock
  skew between the agent and the store and the platform's second-precision timestamps; re-reading
  a product is cheap (an equal hash is not shipped), missing one is not. The adapter handles the
  platform's own boundary rule (WooCommerce compares exclusively, so it asks from one second
  earlier).
- The cursor is written only after every page of the poll is recorded: a crash mid-poll repeats
  the poll instead of skipping its tail.
- No cursor yet: the poller starts from now minus the overlap. What changed before is the import's
  job (the first start imports the whole catalog), not a poll from 1970.

When. The poller keeps no clock: the agent's schedule (`scheduling.py`, wired in `stores.py`)
nudges it at start and every `poll_interval`, and the poll runs in this root task, so polls never
overlap and nudges during a poll fold into one more. Only a failed poll sets its own, shorter
time: it is tried again after a backoff capped at the interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from bridge_agent.aio import wait_event
from bridge_agent.errors import PlatformError
from bridge_agent.model import Change
from bridge_agent.sources import StoreContext, StoreSource
from bridge_agent.sources.filtering import sift
from bridge_agent.store import now_ms
from bridge_agent.sync.retry import Backoff

log = structlog.get_logger("bridge_agent.poller")

STREAM = "modified_since"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Poller(StoreSource):
    """Root task: one modified-since poll of one store per nudge (the schedule's, every
    `interval` seconds)."""

    def __init__(
        self,
        ctx: StoreContext,
        *,
        interval: float,
        overlap: float = 120.0,
        deletions: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(ctx)
        # A poll observes no deletion; this decides only whether a product seen leaving the
        # store's filters is deleted at the hub. Off unless the store's setting is passed:
        # shipping a deletion the operator turned off is the mistake that cannot be undone.
        self._deletions = deletions
        self.interval = interval  # what the schedule nudges by (stores.py)
        self._overlap = overlap
        self._clock = clock
        self._failures = 0
        self._backoff = Backoff(base=5.0, cap=interval)
        self._metrics.counter("bridge_polls_total", "Modified-since polls by store and outcome.")

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.poll_once()
            except PlatformError as exc:
                self._failures += 1
                self._metrics.inc("bridge_polls_total", store=self.store_id, outcome="failed")
                self.health.fail("poll_failing", str(exc))
                # A retry, not a schedule: sooner than the next nudge, later on each failure.
                await wait_event(self._wake, self._backoff.delay(self._failures))
                self._wake.set()
            else:
                self._failures = 0

    async def poll_once(self) -> int:
        """One poll; returns the number of changes queued. Raises PlatformError."""
        started = self._clock()
        cursor = await self._state.cursor(self.store_id, STREAM)
        if cursor is None:
            await self._state.set_cursor(self.store_id, STREAM, _iso(started - self._overlap))
            return 0
        since = datetime.fromtimestamp(_parse(cursor) - self._overlap, UTC)
        queued = seen = 0
        async for page in self._platform.modified_since(since):
            seen += len(page)
            changes = [Change(self.store_id, p.id, p, "poll", now_ms()) for p in page]
            # Only products in the store's scope; one that left it is reported (filtering.py).
            changes, left = await sift(
                self._state, self.store_id, changes, self.ctx.scope, deletions=self._deletions
            )
            queued += await self._state.record(changes, events=left)
        await self._state.set_cursor(self.store_id, STREAM, _iso(started))
        self._metrics.inc("bridge_polls_total", store=self.store_id, outcome="ok")
        self.recorded(queued, "poll")
        if self.health.state == "poll_failing":
            self.health.ok()
        log.debug(
            "poll_done", store=self.store_id, since=since.isoformat(), seen=seen, queued=queued
        )
        return queued
