"""Apply journaled optimisations through the adapter's `Writer`; nothing here knows the platform.

For each optimisation, in feed order, many products per round (one optimisation per product in a
round: a second one for the same product reads the first one's result in the next round):

1. **Review** (`apply_mode = "review"`): an optimisation nobody approved is held as
   `pending_review` (reported to the hub as such) and nothing is read or written.
2. **Plan**: each field becomes a `FieldRef` with the hub's `from` and `to`. A field the adapter
   does not declare it writes (`write.*` capabilities) is `unsupported`, a malformed one `failed`;
   an image ALT whose attachment other products of the mirror show is left alone and reported
   (`conflict`, "attachment shared with N other products") unless `alt_shared_attachments`.
3. **Read** the current values of every planned field of the round (`Writer.read_fields`, one
   call). Per field (guarantee 5, the merchant wins): the store holds `from` -> write; it holds
   `to` already -> `applied` without a write; anything else -> `conflict`, nothing written, and
   the other fields of the same optimisation still apply.
4. **Mark applying** (committed) before the first write, then `Writer.write_fields` (one call).
5. **Verify** by reading again: a write answered `applied` whose value is not there is `failed`,
   one answered with an error (or an exception: an ambiguous failure) whose value *is* there is
   `applied`. Never a blind retry: the store is asked what happened.
6. **Record** in one transaction (`StateStore.journal_outcome`): the outcome, per-field results,
   the values replaced (the rollback data), the product as re-read after the write, and one event
   per applied or refused field. The result poster is nudged.

**Interrupted optimisations.** One found in state `applying` (a crash between marking it and
recording its outcome) is decided from what the store holds: a field holding `to` is `applied`
and never written again; a field still holding `from` never received the write, so it is written
now, on the same condition; anything else is the merchant's (`conflict`, kept). So a crash never
writes a field twice and never loses an optimisation.

**Echo guard (guarantee 6).** After a write the product is re-fetched and recorded in the mirror,
in the outcome's transaction, and its hash goes to the hub as the result's `hash`. The reference
hub stores a result's hash on the optimisation only: it does not change its copy of the product
(hub/db.py `record_results`). Marking the new hash as acknowledged without shipping it would
leave the hub's copy of the product stale for good (and every later patch would be computed
against a base the hub never had). So the re-read product is recorded *as a change* (source
`verify`) and shipped once, like any change: that one upstream update is the hub learning the
product's new state, not an echo. Guarantee 6's words are "after a write the agent re-reads the
product and stores its new hash, so the echo hashes equal and is not shipped": the webhook, spool
event and poll that the write itself causes re-fetch the same content, find the mirror's hash
equal, and ship nothing; no loop can start.

**JSON-LD.** The `jsonld.to` the hub sends is written as it is, through `jsonld_document` (the
integration point for `downstream/jsonld.py`, which will rebuild it from the current product and
the hub's document).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge_agent.errors import PlatformError
from bridge_agent.metrics import Metrics
from bridge_agent.model import Change, Product
from bridge_agent.platforms.base import (
    Capability,
    FieldRef,
    FieldWrite,
    Platform,
    WriteField,
    Writer,
    WriteResult,
    fetch_many,
)
from bridge_agent.store import Entry, Event, Outcome, Replaced, StateStore, now_ms
from bridge_agent.sync.hashing import content_hash
from bridge_agent.sync.retry import Backoff

log = structlog.get_logger("bridge_agent.downstream")

ROUND = 50  # optimisations per round: one batched read, one batched write
IDLE_CHECK = 5.0  # seconds between looks at the journal without a nudge (CLI approvals)
FIELD_OUTCOMES = ("applied", "conflict", "failed", "unsupported")


@dataclass(frozen=True, slots=True)
class DownstreamSettings:
    """A store's downstream settings (config `StoreSettings`)."""

    apply_mode: str = "auto"  # "auto" | "review"
    alt_shared_attachments: bool = False
    concurrency: int = 4  # product re-fetches at once after a write


@dataclass(slots=True)
class _Field:
    """One planned field of one optimisation."""

    ref: FieldRef
    to: Any
    frm: Any = None
    has_from: bool = True
    outcome: str | None = None  # decided: applied | conflict | failed | unsupported
    detail: str | None = None
    status: int | None = None
    write: bool = False  # to be written (the store holds `from`)
    current: Any = None
    name: str | None = None  # a field name this agent does not know (`ref` is a stand-in)

    def decide(self, outcome: str, detail: str | None = None, status: int | None = None) -> None:
        self.outcome, self.detail, self.status = outcome, detail, status

    @property
    def label(self) -> str:
        ref = self.ref
        return f"{self.field}[{ref.image}]" if ref.image is not None else self.field

    @property
    def field(self) -> str:
        return self.name if self.name is not None else str(self.ref.field)

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "outcome": self.outcome}
        if self.ref.image is not None:
            out["image"] = self.ref.image
        if self.detail:
            out["detail"] = self.detail
        if self.status is not None:
            out["status"] = self.status
        return out


@dataclass(slots=True)
class _Plan:
    entry: Entry
    fields: list[_Field] = field(default_factory=list)
    in_doubt: bool = False  # found `applying`: never written again


def jsonld_document(entry: Entry, spec: Mapping[str, Any]) -> Any:
    """The JSON-LD to write for an optimisation: for now the hub's `jsonld.to` as it is.

    Integration point for `downstream/jsonld.py` (`build_jsonld`): rebuild it from the current
    product and the hub's document, so the page never shows an offer the store no longer makes.
    """
    return spec.get("to")


class Applier:
    """Root task part: applies one store's journaled optimisations through its `Writer`."""

    def __init__(
        self,
        store_id: str,
        platform: Platform,
        writer: Writer,
        state: StateStore,
        metrics: Metrics,
        *,
        capabilities: frozenset[Capability],
        settings: DownstreamSettings,
        on_outcome: Callable[[], None],
        on_recorded: Callable[[], None],
        round_size: int = ROUND,
        backoff: Backoff | None = None,
        idle_check: float = IDLE_CHECK,
    ) -> None:
        self.store_id = store_id
        self._platform = platform
        self._writer = writer
        self._state = state
        self._metrics = metrics
        self._writes = frozenset(c for c in capabilities if c.value.startswith("write."))
        self.settings = settings
        self._on_outcome = on_outcome
        self._on_recorded = on_recorded
        self._round = round_size
        self._backoff = backoff or Backoff()
        self._idle_check = idle_check
        self._wake = asyncio.Event()
        self.failures = 0
        self.last_error: str | None = None
        metrics.counter("bridge_changes_recorded_total", "Product changes queued for the hub.")
        metrics.counter("bridge_downstream_fields_total", "Optimised fields, by outcome.")
        metrics.counter(
            "bridge_downstream_optimizations_total", "Optimisations settled, by status."
        )

    def nudge(self) -> None:
        """Optimisations were journaled (or approved): look now."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.apply_pending()
            except PlatformError as exc:
                # The store could not be read: nothing was decided, the round waits.
                self.failures += 1
                self.last_error = str(exc)
                log.warning("downstream_store_failed", store=self.store_id, error=str(exc))
                await asyncio.sleep(self._backoff.delay(self.failures - 1))
                continue
            self.failures, self.last_error = 0, None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._idle_check):
                    await self._wake.wait()

    async def apply_pending(self) -> int:
        """Act on every open optimisation of the journal; how many were settled."""
        settled = 0
        while True:
            entries = await self._state.journal_open(self.store_id, limit=self._round)
            if not entries:
                return settled
            settled += await self.apply_round(_one_per_product(entries))

    # -- one round -----------------------------------------------------------------------------

    async def apply_round(self, entries: Sequence[Entry]) -> int:
        store = self.store_id
        held = [
            e
            for e in entries
            if e.state == "received" and self.settings.apply_mode == "review" and not e.approved
        ]
        if held:
            outcomes = [
                Outcome(e.id, "pending_review", detail="waiting for a reviewer") for e in held
            ]
            await self._state.journal_outcome(
                store,
                outcomes,
                events=[
                    Event(
                        now_ms(),
                        "info",
                        store,
                        e.product,
                        None,
                        f"optimization {e.id}: held for review",
                    )
                    for e in held
                ],
            )
            self._count(outcomes)
            self._on_outcome()
        plans = [await self._plan(e) for e in entries if e not in held]
        if not plans:
            return len(held)
        await self._read(plans)
        fresh = [p.entry.id for p in plans if not p.in_doubt]
        if fresh:
            await self._state.journal_applying(store, fresh)
        written = await self._write(plans)
        products = await self._refetch(written)
        await self._record(plans, products)
        return len(held) + len(plans)

    async def _plan(self, entry: Entry) -> _Plan:
        plan = _Plan(entry, in_doubt=entry.state == "applying")
        for name, spec in entry.fields.items():
            plan.fields += _fields_of(entry, name, spec)
        for f in plan.fields:
            if f.outcome is None and f.ref.field.capability not in self._writes:
                f.decide("unsupported", f"this store's adapter does not write {f.ref.field}")
        alts = [f for f in plan.fields if f.outcome is None and f.ref.field is WriteField.IMAGE_ALT]
        if alts and not self.settings.alt_shared_attachments:
            users = await self._state.image_users(
                self.store_id, [f.ref.image for f in alts if f.ref.image is not None]
            )
            for f in alts:
                others = users.get(f.ref.image or "", set()) - {entry.product}
                if others:
                    f.decide(
                        "conflict",
                        f"attachment shared with {len(others)} other products"
                        " (alt_shared_attachments = false)",
                    )
        return plan

    async def _read(self, plans: Sequence[_Plan]) -> None:
        """The current value of every undecided field (one batched read), and the decision."""
        todo = [f for p in plans for f in p.fields if f.outcome is None]
        if not todo:
            return
        current = await self._writer.read_fields([f.ref for f in todo])
        for plan in plans:
            for f in plan.fields:
                if f.outcome is not None:
                    continue
                f.current = now = current.get(f.ref)
                if plan.in_doubt:
                    _settle_in_doubt(f, now)
                elif _same(now, f.to):
                    f.decide("applied", "already held the proposed value")
                elif not f.has_from or _same(now, f.frm):
                    f.write = True
                else:
                    f.decide(
                        "conflict",
                        "the store's value changed since the hub read it (the store's is kept)",
                    )

    async def _write(self, plans: Sequence[_Plan]) -> set[str]:
        """Write what was decided, verify by reading again; the products written to."""
        todo = [f for p in plans for f in p.fields if f.write]
        if not todo:
            return set()
        writes = [FieldWrite(f.ref, f.current if not f.has_from else f.frm, f.to) for f in todo]
        answers: Sequence[WriteResult | None]
        try:
            answers = _one_each(writes, await self._writer.write_fields(writes))
        except PlatformError as exc:
            # Ambiguous: some writes may have landed. The verify read below decides each one.
            log.warning("downstream_write_failed", store=self.store_id, error=str(exc))
            answers = [None] * len(writes)
            for f in todo:
                f.decide("failed", f"the store answered: {exc}", exc.status)
        for f, answer in zip(todo, answers, strict=True):
            if answer is not None:
                f.decide(answer.outcome, answer.message, answer.status)
        try:
            after = await self._writer.read_fields([f.ref for f in todo])
        except PlatformError as exc:
            for f in todo:
                if f.outcome == "applied":
                    f.decide("failed", f"written, but the store could not be read back: {exc}")
            return {f.ref.product for f in todo}
        for f in todo:
            there = after.get(f.ref)
            if f.outcome == "applied" and not _same(there, f.to):
                f.decide("failed", "the store answered success but does not hold the new value")
            elif f.outcome in ("failed", "conflict") and _same(there, f.to):
                f.decide("applied", "verified by reading again after an unclear answer")
        return {f.ref.product for f in todo}

    async def _refetch(self, products: set[str]) -> Mapping[str, Product]:
        """The written products as the store has them now (the echo guard's re-read)."""
        if not products:
            return {}
        try:
            found = await fetch_many(
                self._platform, sorted(products), concurrency=self.settings.concurrency
            )
        except PlatformError as exc:
            # The write stands; the poll or webhook it causes will record the product instead.
            log.warning("downstream_refetch_failed", store=self.store_id, error=str(exc))
            return {}
        return found.found

    async def _record(self, plans: Sequence[_Plan], products: Mapping[str, Product]) -> None:
        store, at = self.store_id, now_ms()
        changes = [Change(store, pid, p, "verify", at) for pid, p in products.items()]
        hashes = {pid: content_hash(p.to_dict()) for pid, p in products.items()}
        outcomes: list[Outcome] = []
        events: list[Event] = []
        for plan in plans:
            entry = plan.entry
            for f in plan.fields:
                if f.outcome is None:  # cannot happen: every field is decided by now
                    f.decide("failed", "not decided")
                level = "info" if f.outcome == "applied" else "warning"
                why = f": {f.detail}" if f.detail else ""
                events.append(
                    Event(
                        at,
                        level,
                        store,
                        entry.product,
                        f.status,
                        f"optimization {entry.id}: {f.label} {f.outcome}{why}",
                    )
                )
            hash_ = hashes.get(entry.product)
            if hash_ is None:
                hash_ = await self._state.mirror_hash(store, entry.product)
            outcomes.append(
                Outcome(
                    entry.id,
                    _overall(plan.fields),
                    [f.result() for f in plan.fields],
                    _detail(plan.fields),
                    hash_,
                    [
                        Replaced(entry.product, f.field, f.ref.image, f.current, f.to)
                        for f in plan.fields
                        if f.outcome == "applied" and (f.write or plan.in_doubt)
                    ],
                )
            )
        queued = await self._state.journal_outcome(store, outcomes, changes=changes, events=events)
        for plan in plans:
            for f in plan.fields:
                self._metrics.inc(
                    "bridge_downstream_fields_total", store=store, outcome=f.outcome or "failed"
                )
        self._count(outcomes)
        if queued:
            self._metrics.inc("bridge_changes_recorded_total", queued, source="verify")
            self._on_recorded()
        self._on_outcome()

    def _count(self, outcomes: Sequence[Outcome]) -> None:
        for o in outcomes:
            self._metrics.inc(
                "bridge_downstream_optimizations_total", store=self.store_id, status=o.state
            )


# -- pure helpers ------------------------------------------------------------------------------


def _one_per_product(entries: Sequence[Entry]) -> list[Entry]:
    """The longest prefix with one optimisation per product (feed order is kept: a second one
    for a product waits for the next round, where it reads what the first one wrote)."""
    seen: set[str] = set()
    out: list[Entry] = []
    for e in entries:
        if e.product in seen:
            break
        seen.add(e.product)
        out.append(e)
    return out


def _fields_of(entry: Entry, name: str, spec: Any) -> list[_Field]:
    """The planned fields of one entry of an optimisation's `fields` (design.md section 6)."""
    try:
        kind = WriteField(name)
    except ValueError:
        # Not a field this agent knows: reported under its own name, nothing written.
        unknown = _Field(FieldRef(entry.product, WriteField.DESCRIPTION), None, name=name)
        unknown.decide("failed", f"unknown field {name!r}")
        return [unknown]
    if kind is WriteField.IMAGE_ALT:
        if not isinstance(spec, Mapping) or not spec:
            return [_malformed(entry, kind, "expected {image id: {from, to}}")]
        return [
            _change(entry, kind, change, image=str(image_id)) for image_id, change in spec.items()
        ]
    if kind is WriteField.JSONLD:
        if not isinstance(spec, Mapping) or "to" not in spec:
            return [_malformed(entry, kind, 'expected {"to": {...}}')]
        return [_Field(FieldRef(entry.product, kind), jsonld_document(entry, spec), has_from=False)]
    return [_change(entry, kind, spec)]


def _change(entry: Entry, kind: WriteField, spec: Any, *, image: str | None = None) -> _Field:
    ref = FieldRef(entry.product, kind, image)
    if not isinstance(spec, Mapping) or "to" not in spec:
        f = _Field(ref, None)
        f.decide("failed", 'malformed: expected {"from": ..., "to": ...}')
        return f
    return _Field(ref, spec["to"], spec.get("from"), has_from="from" in spec)


def _malformed(entry: Entry, kind: WriteField, expected: str) -> _Field:
    f = _Field(FieldRef(entry.product, kind), None)
    f.decide("failed", f"malformed: {expected}")
    return f


def _one_each(
    writes: Sequence[FieldWrite], answers: Sequence[WriteResult]
) -> Sequence[WriteResult]:
    """The Writer contract: one result per write, in order. An adapter that breaks it left the
    outcome of every write unclear (the verify read decides them)."""
    if len(answers) != len(writes) or any(
        a.ref != w.ref for a, w in zip(answers, writes, strict=True)
    ):
        raise PlatformError(f"the adapter answered {len(answers)} results for {len(writes)} writes")
    return answers


def _settle_in_doubt(f: _Field, now: Any) -> None:
    """A field of an interrupted optimisation, decided from what the store holds now: the new
    value is there (the write had landed: applied, never written again); the value the hub saw
    is still there (the write never landed: written now, once, on the same condition); anything
    else is the merchant's (kept, conflict)."""
    if _same(now, f.to):
        f.decide("applied", "verified after a restart (the write had landed)")
    elif f.has_from and _same(now, f.frm):
        f.write = True
    else:
        f.decide("conflict", "interrupted; the store now holds another value (kept)")


def _same(a: Any, b: Any) -> bool:
    """Equal values; JSON documents compare by content, and an empty text equals nothing."""
    if isinstance(a, str) and isinstance(b, Mapping):
        with contextlib.suppress(ValueError):
            return bool(json.loads(a) == b)
    if isinstance(b, str) and isinstance(a, Mapping):
        return _same(b, a)
    return (a or None) == (b or None)


def _overall(fields: Sequence[_Field]) -> str:
    """applied if every field applied; conflict if any conflict and none failed; else failed."""
    outcomes = {f.outcome for f in fields}
    if not fields or outcomes == {"applied"}:
        return "applied" if fields else "failed"
    if outcomes & {"failed", "unsupported"}:
        return "failed"
    return "conflict"


def _detail(fields: Sequence[_Field]) -> str:
    if not fields:
        return "the optimization has no fields"
    parts = []
    for f in fields:
        why = f" ({f.detail})" if f.detail and f.outcome != "applied" else ""
        parts.append(f"{f.label}: {f.outcome}{why}")
    return "; ".join(parts)
