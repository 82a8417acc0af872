"""The shipper: outbox -> hub, at least once, latest state wins.

Theory of operation. `run()` is a root task that loops on `ship_once()`. A round reads the oldest
pending outbox rows, turns each into a protocol item (a `patch` against the hash the hub
acknowledged last, an `upsert` when there is no such base, or a `delete`), fills a batch up to
`batch_max_items` and `batch_max_bytes`, posts it, and settles every item from the hub's answer in
one transaction. Rows leave the outbox only on an `ok` for the very seq that was sent.

Failures and what they do:

- connection errors, timeouts, 5xx, 429/503 and replies that are not protocol v1: nothing is
  settled; the next try waits for full-jitter backoff, at least the hub's `Retry-After`.
- 401/403: shipping stops (the token is wrong; retrying every second helps nobody), health shows
  it, and the shipper tries again every `auth_retry_interval` or when nudged by a reload.
- 413, 400, 422: the batch is split in halves and each half sent alone, so one oversized or
  malformed item is isolated; alone, it is set aside as `rejected` with the hub's reason.
- `need_full` for a patch: the base is dropped and the row gets a new seq, so the next round
  sends an `upsert`. `need_full` for an upsert would loop forever, so it is a rejection.

The batch id is derived from the agent id and the seqs in it: a retry of the same items reuses the
id, as the protocol asks, while a batch whose rows were re-dirtied meanwhile is a new batch. What
the hub's answers mean (which status is which failure) is `hublink.HubClient`'s to say.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgpack
import structlog

from bridge_agent import wire
from bridge_agent.aio import wait_event
from bridge_agent.errors import HubAuthFailed, HubError, HubRejected, HubUnavailable
from bridge_agent.health import Health
from bridge_agent.hublink import HubClient
from bridge_agent.metrics import Metrics
from bridge_agent.store import DueItem, Settlement, StateStore, now_ms
from bridge_agent.sync import patch
from bridge_agent.sync.retry import Backoff

log = structlog.get_logger("bridge_agent.shipper")

# A hub that keeps answering without a result for an item would have us resend it forever: after
# this many tries the row is set aside with that reason (guarantee 7: no silent loops).
MAX_NO_RESULT_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class ShipperSettings:
    agent_id: str
    batch_max_items: int = 500
    batch_max_bytes: int = 1_048_576
    max_in_flight: int = 2
    batch_linger: float = 0.05
    backoff: Backoff = field(default_factory=Backoff)
    auth_retry_interval: float = 300.0
    idle_interval: float = 5.0


@dataclass
class HubLink:
    """What health and status say about the hub. Mutated only by the shipper."""

    health: Health = field(default_factory=lambda: Health("hub"))
    failures: int = 0  # consecutive failed requests
    last_shipment_at: float | None = None  # epoch seconds of the last accepted item
    retry_at: float | None = None  # epoch seconds of the next attempt while failing


@dataclass(frozen=True, slots=True)
class _Built:
    """One item ready to send, with what settling an `ok` must write to the mirror."""

    due: DueItem
    op: str
    encoded: bytes


class Shipper:
    """Root task that moves the outbox to the hub. See the module docstring."""

    def __init__(
        self,
        store: StateStore,
        hub: HubClient,
        settings: ShipperSettings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._hub = hub
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._wake = asyncio.Event()
        self._wake.set()  # ship the backlog left by the last run at once
        # Products in a batch at the hub right now: another lane must not send them too, or an
        # older state could land after a newer one.
        self._in_flight: set[tuple[str, str]] = set()
        self._claim = asyncio.Lock()
        self.hub = HubLink()
        _declare_metrics(metrics)

    def configure(self, settings: ShipperSettings, hub: HubClient | None = None) -> None:
        """New settings (a config reload): they apply from the next round on.

        The batch in flight, if any, finishes with the settings it started with.
        """
        self._settings = settings
        if hub is not None:
            self._hub = hub
        self._wake.set()

    @property
    def settings(self) -> ShipperSettings:
        return self._settings

    def nudge(self) -> None:
        """New rows are in the outbox (or the config changed): wake up now."""
        self._wake.set()

    async def run(self) -> None:
        """Ship until cancelled."""
        while True:
            # Also look now and then without a nudge: `outbox retry` writes from another process.
            await wait_event(self._wake, self._settings.idle_interval)
            self._wake.clear()
            await asyncio.sleep(self._settings.batch_linger)  # let a burst fill the batch
            while True:
                try:
                    await self.ship_all()
                except HubAuthFailed:
                    await self._sleep_or_nudge(self._settings.auth_retry_interval)
                    continue
                except HubUnavailable as exc:
                    delay = self._settings.backoff.delay(
                        self.hub.failures - 1, retry_after=exc.retry_after
                    )
                    await self._sleep_or_nudge(delay, wakeable=False)
                    continue
                break

    async def ship_all(self, *, abandon: asyncio.Event | None = None) -> int:
        """Ship until nothing is due, with up to `max_in_flight` batches at the hub at once.

        While the hub stores one batch, the next is read and encoded: the agent's and the hub's
        work overlap instead of taking turns. Returns the rows that made progress; raises the
        hub's failure (an auth failure first) once every lane has stopped.
        """
        lanes = max(1, self._settings.max_in_flight)
        results = await asyncio.gather(
            *(self._lane(abandon) for _ in range(lanes)), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        for kind in (asyncio.CancelledError, HubAuthFailed, HubError, BaseException):
            for failure in failures:
                if isinstance(failure, kind):
                    raise failure
        return sum(r for r in results if isinstance(r, int))

    async def _lane(self, abandon: asyncio.Event | None) -> int:
        total = 0
        while abandon is None or not abandon.is_set():
            shipped = await self.ship_once()
            if shipped == 0:
                break
            total += shipped
        return total

    async def drain(self, *, abandon: asyncio.Event) -> int:
        """Ship until the outbox has nothing pending, the hub fails, or `abandon` is set.

        Used at shutdown under the caller's timeout: no retries, whatever is left stays on disk.
        """
        try:
            return await self.ship_all(abandon=abandon)
        except HubError:
            return 0

    async def ship_once(self) -> int:
        """One round: read due rows, send them (splitting if the hub asks), settle.

        Returns the number of rows that made progress (acknowledged, sent back for a full
        upsert, or set aside); 0 when nothing was due or the hub answered without a result for
        any item. Raises HubUnavailable or HubAuthFailed when the hub could not take the batch;
        nothing is settled then.
        """
        limit = self._settings.batch_max_items
        async with self._claim:
            due = await self._store.due(limit + len(self._in_flight))
            due = [d for d in due if (d.store, d.id) not in self._in_flight][:limit]
            built, local = self._build(due)
            batch = _fit(built, self._settings.batch_max_bytes)
            claimed = {(b.due.store, b.due.id) for b in batch}
            self._in_flight |= claimed
        try:
            if local:
                await self._store.settle(local)
            if not batch:
                return len(local)
            settlements = await self._send_splitting(batch)
            await self._store.settle(settlements)
        finally:
            self._in_flight -= claimed
        self._count(settlements)
        return len(local) + sum(s.outcome != "retry" for s in settlements)

    async def _send_splitting(self, batch: Sequence[_Built]) -> list[Settlement]:
        try:
            results = await self._send(batch)
        except HubRejected as exc:
            if len(batch) == 1:
                self._metrics.inc("bridge_hub_batches_total", outcome="rejected")
                one = batch[0].due
                log.warning("item_rejected_by_hub", store=one.store, product=one.id, error=str(exc))
                return [Settlement(one.store, one.id, one.seq, "rejected", reason=str(exc))]
            self._metrics.inc("bridge_hub_batches_total", outcome="split")
            middle = len(batch) // 2
            log.info("batch_split", items=len(batch), status=exc.status)
            first = await self._send_splitting(batch[:middle])
            return first + await self._send_splitting(batch[middle:])
        return self._settlements(batch, results)

    async def _send(self, batch: Sequence[_Built]) -> tuple[wire.Result, ...]:
        seqs = [b.due.seq for b in batch]
        body = wire.assemble_batch(
            self._settings.agent_id,
            _batch_id(self._settings.agent_id, seqs),
            now_ms(),
            [b.encoded for b in batch],
        )
        started = self._clock()
        try:
            results = await self._hub.send(body)
        except HubAuthFailed as exc:
            await self._failed("auth_failed", exc)
            raise
        except HubUnavailable as exc:
            await self._failed("unreachable", exc)
            raise
        finally:
            self._metrics.inc("bridge_hub_request_duration_seconds_total", self._clock() - started)
            self._metrics.inc("bridge_hub_requests_total")
        self._metrics.inc("bridge_hub_bytes_sent_total", len(body))
        self._metrics.inc("bridge_hub_batches_total", outcome="ok")
        await self._succeeded()
        return results

    def _build(self, due: Sequence[DueItem]) -> tuple[list[_Built], list[Settlement]]:
        """Protocol items for due rows, and rows that need no item at all (already at the hub)."""
        built: list[_Built] = []
        local: list[Settlement] = []
        for d in due:
            if d.deleted:
                op, hash_, base, packed = "delete", None, None, None
            elif d.acked_hash is not None and d.acked_data is not None:
                if d.acked_hash == d.hash:
                    # Changed and changed back before shipping: the hub already holds this.
                    local.append(Settlement(d.store, d.id, d.seq, "ok", d.hash, d.data))
                    continue
                assert d.data is not None
                delta = patch.diff(_unpack(d.acked_data), _unpack(d.data))
                op, hash_, base, packed = "patch", d.hash, d.acked_hash, wire.packb(delta)
            else:
                op, hash_, base, packed = "upsert", d.hash, None, d.data
            encoded = wire.encode_item_parts(
                seq=d.seq,
                store=d.store,
                id=d.id,
                op=op,
                hash=hash_,
                base=base,
                packed_data=packed,
                observed_at=d.observed_at,
                source=d.source,
            )
            built.append(_Built(d, op, encoded))
        return built, local

    def _settlements(
        self, batch: Sequence[_Built], results: Sequence[wire.Result]
    ) -> list[Settlement]:
        by_seq = {r.seq: r for r in results}
        out = []
        for b in batch:
            d = b.due
            result = by_seq.get(d.seq)
            if result is None and d.attempts + 1 >= MAX_NO_RESULT_ATTEMPTS:
                reason = f"hub answered {d.attempts + 1} batches without a result for this item"
                log.warning("item_set_aside", store=d.store, product=d.id, reason=reason)
                out.append(Settlement(d.store, d.id, d.seq, "rejected", reason=reason))
            elif result is None:
                out.append(Settlement(d.store, d.id, d.seq, "retry", reason="hub sent no result"))
            elif result.status == "ok":
                ok_hash, ok_data = (None, None) if d.deleted else (d.hash, d.data)
                out.append(Settlement(d.store, d.id, d.seq, "ok", ok_hash, ok_data))
            elif result.status == "need_full" and b.op != "upsert":
                out.append(Settlement(d.store, d.id, d.seq, "need_full", reason=result.reason))
            else:
                reason = result.reason or "no reason given"
                if result.status == "need_full":
                    reason = f"hub asked for a full product in reply to one: {reason}"
                log.warning("item_rejected_by_hub", store=d.store, product=d.id, reason=reason)
                out.append(Settlement(d.store, d.id, d.seq, "rejected", reason=reason))
        return out

    def _count(self, settlements: Sequence[Settlement]) -> None:
        # One increment per outcome, not per item: a metric update costs more than counting.
        outcomes = Counter(s.outcome for s in settlements)
        for outcome, n in outcomes.items():
            self._metrics.inc("bridge_hub_items_total", n, status=outcome)
        if outcomes["ok"]:
            self.hub.last_shipment_at = time.time()

    async def _failed(self, state: str, exc: HubAuthFailed | HubUnavailable) -> None:
        self.hub.failures += 1
        health = self.hub.health
        changed = not health.failing or health.state != state
        health.fail(state, str(exc))
        if changed:  # the event log gets transitions, like the logs: not every retry
            await self._store.log_event(str(exc), level="error", status=exc.status)

    async def _succeeded(self) -> None:
        health = self.hub.health
        if health.failing:
            await self._store.log_event(
                f"hub reachable again after {self.hub.failures} failed request(s)"
            )
        health.ok()
        self.hub.failures, self.hub.retry_at = 0, None

    async def _sleep_or_nudge(self, delay: float, *, wakeable: bool = True) -> None:
        self.hub.retry_at = time.time() + delay
        if not wakeable:
            await asyncio.sleep(delay)
            return
        self._wake.clear()
        await wait_event(self._wake, delay)


def _fit(built: Sequence[_Built], max_bytes: int) -> list[_Built]:
    """The longest prefix of items within the byte budget (at least one item)."""
    total = 64  # envelope
    out: list[_Built] = []
    for b in built:
        total += len(b.encoded)
        if out and total > max_bytes:
            break
        out.append(b)
    return out


def _batch_id(agent: str, seqs: Sequence[int]) -> str:
    h = hashlib.blake2b(agent.encode(), digest_size=9)
    for seq in seqs:
        h.update(seq.to_bytes(8, "big"))
    return base64.urlsafe_b64encode(h.digest()).decode("ascii")


def _unpack(blob: bytes) -> dict[str, object]:
    data: dict[str, object] = msgpack.unpackb(blob, raw=False)
    return data


def _declare_metrics(metrics: Metrics) -> None:
    metrics.counter("bridge_hub_requests_total", "Batches posted to the hub, whatever the answer.")
    metrics.counter(
        "bridge_hub_request_duration_seconds_total", "Time spent waiting for hub answers."
    )
    metrics.counter("bridge_hub_bytes_sent_total", "Bytes of batch bodies the hub accepted.")
    metrics.counter("bridge_hub_batches_total", "Batches by outcome: ok, split, rejected.")
    metrics.counter("bridge_hub_items_total", "Items settled by status: ok, need_full, rejected.")
