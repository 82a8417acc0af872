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

**JSON-LD.** The document written is built (`jsonld_document`, downstream/jsonld.py) from the
product as the mirror holds it now (or as the store answers, for a product the mirror has not
seen) plus what the hub sent in `jsonld.to`: the hub may improve descriptive text, never the
offers, which are the store's live facts. It has no `from`: the agent owns `_bridge_jsonld`, so
it is written whatever the store holds (an interrupted one too). The document written, its
fingerprint and the hub's values are recorded in the outcome's transaction (`jsonld` table): from
then on the keeper (downstream/keeper.py) rewrites it when the store's price or stock changes.

**Backup before a bulk (`backup_before_bulk`).** A round about to write more than the store's
`backup_threshold` optimisations first calls the store's `BulkBackup` (export/backup.py, injected:
the export package is a layer of its own) with the products they touch, after the read that
decides what is written and before anything is marked or written. If the backup fails, the round
stops there (`BulkHeld`): its optimisations stay open, nothing is written, and the loop tries the
round again, backup first, after its back-off. An operator who asked for a backup never gets the
bulk without it; the one-at-a-time retry of a failed round is not taken for a held one (it
would apply the bulk below the threshold, without the backup).

**Description addition.** `description_html: {"from": ..., "append": "<p>...</p>"}` adds to the
description instead of replacing it: the value written is `from` + `append`, on the same
condition (the store must still hold `from`). A `from` that already ends with the addition is
written as it is, so an addition sent twice is added once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from bridge_agent.downstream.jsonld import JsonLd, JsonLdOptions
from bridge_agent.errors import BridgeError, InputError, PlatformAmbiguous, PlatformError
from bridge_agent.inputs import loads_json
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
from bridge_agent.store.jsonld import Kept
from bridge_agent.sync.hashing import product_hash
from bridge_agent.sync.retry import Backoff

log = structlog.get_logger("bridge_agent.downstream")

ROUND = 100  # optimisations per round: one batched read and one batched write (WooCommerce: 100)
MAX_COMPARED_BYTES = 4 * 1024 * 1024  # a store value parsed as JSON to compare it (JSON-LD)
IDLE_CHECK = 5.0  # seconds between looks at the journal without a nudge (CLI approvals)
FIELD_OUTCOMES = ("applied", "conflict", "failed", "unsupported")


@dataclass(frozen=True, slots=True)
class DownstreamSettings:
    """A store's downstream settings (config `StoreSettings`)."""

    apply_mode: str = "auto"  # "auto" | "review"
    alt_shared_attachments: bool = False
    concurrency: int = 4  # product re-fetches at once after a write
    # How the store's JSON-LD is built (the keeper builds with the same options).
    jsonld: JsonLdOptions = field(default_factory=JsonLdOptions)


class BulkBackup(Protocol):
    """The backup written before a bulk apply (export/backup.py `BulkBackup`): raises when the
    products are not safely backed up."""

    threshold: int  # a round writing more optimisations than this is backed up first

    async def __call__(self, products: Sequence[str], optimizations: int) -> object: ...


class BulkHeld(BridgeError):
    """A bulk round is held: its backup failed (the cause is chained). Nothing was written."""


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
    after: Any = None  # what the store holds after the write (read back)
    read_back: bool = False  # `after` was read
    name: str | None = None  # a field name this agent does not know (`ref` is a stand-in)
    hub: Any = None  # JSON-LD: the hub's `jsonld.to`, built into `to` by `_build_jsonld`
    keep: Kept | None = None  # JSON-LD: what the keeper keeps once it is applied
    note: str | None = None  # said in the event of an applied field (the builder's warnings)

    def decide(self, outcome: str, detail: str | None = None, status: int | None = None) -> None:
        self.outcome, self.detail, self.status = outcome, detail, status

    @property
    def label(self) -> str:
        """The field as events and the reviewer show it (names from the hub made printable)."""
        ref = self.ref
        label = f"{self.field}[{ref.image}]" if ref.image is not None else self.field
        return label if label.isprintable() else repr(label)

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


def jsonld_document(
    product: Product, hub: Any, options: JsonLdOptions, seen_hash: str | None = None
) -> tuple[JsonLd, Kept]:
    """The JSON-LD to write for `product` with the hub's `jsonld.to`, and what the keeper keeps
    of it once written: the store's current product decides the offers, the hub only text."""
    accepted = hub if isinstance(hub, Mapping) else None
    built = options.build(product, accepted)
    kept = Kept(product.id, hub, options.inputs(product, accepted), built.document, seen_hash)
    return built, kept


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
        backup: BulkBackup | None = None,
    ) -> None:
        self.store_id = store_id
        self._backup = backup
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
            except (PlatformError, BulkHeld) as exc:
                # The store could not be read, or a bulk's backup failed: nothing was written,
                # the round waits.
                self.failures += 1
                self.last_error = str(exc)
                held = isinstance(exc, BulkHeld)
                what = "downstream_bulk_held" if held else "downstream_store_failed"
                log.warning(what, store=self.store_id, error=str(exc))
                await asyncio.sleep(self._backoff.delay(self.failures - 1))
                continue
            self.failures, self.last_error = 0, None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._idle_check):
                    await self._wake.wait()

    async def apply_pending(self) -> int:
        """Act on every open optimisation of the journal; how many were settled.

        PlatformError (the store cannot be read or written now) goes up: nothing was decided,
        the caller backs off. Anything else is this round's own failure (a bug, or a value no
        check foresaw): the round is tried again one optimisation at a time, and the one that
        still fails is settled `failed` with the reason, so that nothing a hub or a store
        sends can stop the root task or come back to stop it at every start."""
        settled = 0
        while True:
            entries = await self._state.journal_open(self.store_id, limit=self._round)
            if not entries:
                return settled
            batch = _one_per_product(entries)
            try:
                settled += await self.apply_round(batch)
            except (PlatformError, BulkHeld):
                raise
            except Exception:
                log.exception("downstream_round_failed", store=self.store_id, size=len(batch))
                for entry in batch:
                    try:
                        settled += await self.apply_round([entry])
                    except PlatformError:
                        raise
                    except Exception as exc:
                        await self._give_up(entry, exc)
                        settled += 1

    async def _give_up(self, entry: Entry, exc: Exception) -> None:
        """Settle an optimisation that cannot be applied at all as `failed`, loudly."""
        reason = f"could not be applied: {type(exc).__name__}: {str(exc)[:300]}"
        log.error("downstream_optimization_failed", store=self.store_id, id=entry.id, error=reason)
        outcome = Outcome(entry.id, "failed", detail=reason)
        event = Event(
            now_ms(), "error", self.store_id, entry.product, None,
            f"optimization {entry.id}: {reason}",
        )  # fmt: skip
        await self._state.journal_outcome(self.store_id, [outcome], events=[event])
        self._count([outcome])
        self._on_outcome()

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
        await self._build_jsonld(plans)
        await self._read(plans)
        await self._back_up(plans)
        fresh = [p.entry.id for p in plans if not p.in_doubt]
        if fresh:
            await self._state.journal_applying(store, fresh)
        written = await self._write(plans)
        # After a restart the write of an interrupted optimisation may have landed in the
        # earlier life, whose echo was lost with it: re-read those products too (guarantee 6).
        interrupted = {p.entry.product for p in plans if p.in_doubt}
        products = await self._refetch(written | interrupted)
        await self._record(plans, products)
        return len(held) + len(plans)

    async def _back_up(self, plans: Sequence[_Plan]) -> None:
        """Before a bulk: the backup of the products to be written, or `BulkHeld`."""
        backup = self._backup
        bulk = [p for p in plans if any(f.write for f in p.fields)]
        if backup is None or len(bulk) <= backup.threshold:
            return
        products = sorted({p.entry.product for p in bulk})
        try:
            await backup(products, len(bulk))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the backup says what failed (and logged it); hold the bulk
            raise BulkHeld(f"bulk of {len(bulk)} optimization(s) held: {exc}") from exc

    async def _plan(self, entry: Entry) -> _Plan:
        plan = _Plan(entry, in_doubt=entry.state == "applying")
        plan.fields = plan_fields(entry)
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

    async def _build_jsonld(self, plans: Sequence[_Plan]) -> None:
        """The JSON-LD documents of the round, from the products as the mirror holds them (one
        read), or as the store answers for a product the mirror has not seen yet."""
        todo = [
            (p.entry.product, f)
            for p in plans
            for f in p.fields
            if f.outcome is None and f.ref.field is WriteField.JSONLD
        ]
        if not todo:
            return
        found = await self._state.mirror_products(self.store_id, [pid for pid, _ in todo])
        for pid, f in todo:
            seen: str | None = None
            product: Product | None
            if pid in found:
                product, seen = found[pid]
            else:
                try:
                    product = await self._platform.fetch_product(pid)
                except PlatformError as exc:
                    f.decide("failed", f"the product could not be read to build its JSON-LD: {exc}")
                    continue
                if product is None:
                    f.decide("failed", f"product {pid} is not in the store")
                    continue
            built, f.keep = jsonld_document(product, f.hub, self.settings.jsonld, seen)
            f.to = built.document
            if built.warnings:
                f.note = "; ".join(built.warnings)
                log.info(
                    "jsonld_warnings", store=self.store_id, product=pid, warnings=built.warnings
                )

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
                elif same(now, f.to):
                    f.decide("applied", "already held the proposed value")
                elif not f.has_from or same(now, f.frm):
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
        except PlatformAmbiguous as exc:
            # Some writes may have landed. The verify read below decides each one.
            log.warning("downstream_write_ambiguous", store=self.store_id, error=str(exc))
            answers = [None] * len(writes)
            for f in todo:
                f.decide("failed", f"the store answered: {exc}", exc.status)
        # Any other PlatformError goes up: by the Writer contract nothing was written (the
        # store could not be read first, a 429, a refused key). The optimisations stay
        # `applying` and the next round decides them from what the store holds, so a moment's
        # outage never fails a whole round for good.
        for f, answer in zip(todo, answers, strict=True):
            if answer is not None:
                f.decide(answer.outcome, answer.message, answer.status)
        # A store that cannot be read back now goes up too: the writes stay in doubt, and the
        # next round reads them (a field holding the new value is then `applied`).
        after = await self._writer.read_fields([f.ref for f in todo])
        for f in todo:
            there = after.get(f.ref)
            f.after, f.read_back = there, True
            if f.outcome == "applied" and not same(there, f.to):
                f.decide("failed", "the store answered success but does not hold the new value")
            elif f.outcome in ("failed", "conflict") and same(there, f.to):
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
        hashes = {pid: product_hash(p) for pid, p in products.items()}
        outcomes: list[Outcome] = []
        events: list[Event] = []
        for plan in plans:
            entry = plan.entry
            for f in plan.fields:
                if f.outcome is None:  # cannot happen: every field is decided by now
                    f.decide("failed", "not decided")
                level = "info" if f.outcome == "applied" else "warning"
                why = f": {f.detail}" if f.detail else ""
                if f.outcome == "applied" and f.note:
                    why += f" (warnings: {f.note})"
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
                    [_replaced(entry, f, plan.in_doubt) for f in plan.fields if _replaces(f, plan)],
                )
            )
        kept = [
            f.keep
            for plan in plans
            for f in plan.fields
            if f.keep is not None and f.outcome == "applied"
        ]
        queued = await self._state.journal_outcome(
            store, outcomes, changes=changes, events=events, jsonld=kept
        )
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


def plan_fields(entry: Entry) -> list[_Field]:
    """The fields of an optimisation as this loop plans them before reading the store (the
    values to write, and the fields refused already: unknown, malformed, no `from`). The
    approvals command shows the reviewer exactly this."""
    return [f for name, spec in entry.fields.items() for f in _fields_of(entry, name, spec)]


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
        # Built in `_build_jsonld` from the current product: the hub's document gives text only.
        return [_Field(FieldRef(entry.product, kind), None, has_from=False, hub=spec["to"])]
    if kind is WriteField.DESCRIPTION and isinstance(spec, Mapping) and "append" in spec:
        return [_addition(entry, spec)]
    return [_change(entry, kind, spec)]


def _addition(entry: Entry, spec: Mapping[str, Any]) -> _Field:
    """`description_html: {"from": ..., "append": ...}`: the store must still hold `from`; the
    value written is `from` + `append` (or `from` itself if it already ends with the addition:
    an addition is made once)."""
    ref = FieldRef(entry.product, WriteField.DESCRIPTION)
    frm, append = spec.get("from"), spec.get("append")
    if (
        "to" in spec
        or "from" not in spec
        or not isinstance(append, str)
        or not append
        or not isinstance(frm, str | None)
    ):
        f = _Field(ref, None)
        f.decide("failed", 'malformed: expected {"from": "<html>", "append": "<html>"}')
        return f
    base = frm or ""  # an empty description (None) gets the addition alone
    return _Field(ref, base if base.endswith(append) else base + append, frm)


def _change(entry: Entry, kind: WriteField, spec: Any, *, image: str | None = None) -> _Field:
    """A text field: `from` (the value the hub saw, null for none) is required, because it is
    what protects the merchant's value (guarantee 5); both values are text or null."""
    ref = FieldRef(entry.product, kind, image)
    problem = None
    if not isinstance(spec, Mapping) or "to" not in spec or "from" not in spec:
        problem = 'malformed: expected {"from": ..., "to": ...} (`from` is the value the hub saw)'
    elif not all(v is None or isinstance(v, str) for v in (spec["from"], spec["to"])):
        problem = f"malformed: {kind} takes text (or null) for `from` and `to`"
    if problem is not None:
        f = _Field(ref, None)
        f.decide("failed", problem)
        return f
    return _Field(ref, spec["to"], spec["from"])


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


def _replaces(f: _Field, plan: _Plan) -> bool:
    """Whether this field replaced a value in the store (kept for a rollback): written and the
    store no longer holds the old value (applied, or altered by the store on save: then the
    merchant's value is gone all the same), or found applied after a restart."""
    if plan.in_doubt and not f.has_from:
        # JSON-LD has no `from`, and what the store held before the earlier life's write is
        # unknown now (its value may be that write's): nothing is kept rather than a wrong
        # value that a rollback would "restore".
        return False
    if f.write and f.read_back:
        return not same(f.after, _old(f))
    return plan.in_doubt and f.outcome == "applied"


def _old(f: _Field) -> Any:
    """The value the agent replaced: the hub's `from` (the store held it, or the write would
    not have gone), or for JSON-LD, which has none, what the store held before."""
    return f.frm if f.has_from else f.current


def _replaced(entry: Entry, f: _Field, in_doubt: bool) -> Replaced:
    new = f.after if f.read_back else f.to
    return Replaced(entry.product, f.field, f.ref.image, _old(f), new)


def _settle_in_doubt(f: _Field, now: Any) -> None:
    """A field of an interrupted optimisation, decided from what the store holds now: the new
    value is there (the write had landed: applied, never written again); the value the hub saw
    is still there (the write never landed: written now, once, on the same condition); anything
    else is the merchant's (kept, conflict)."""
    if same(now, f.to):
        f.decide("applied", "verified after a restart (the write had landed)")
    elif not f.has_from or same(now, f.frm):
        f.write = True  # no `from` (JSON-LD): the agent owns the field, it writes it again
    else:
        f.decide("conflict", "interrupted; the store now holds another value (kept)")


def same(a: Any, b: Any) -> bool:
    """Equal values; JSON documents compare by content, and an empty text equals nothing.

    The store's text is parsed within bounds: anyone who can edit the store may have put a
    hostile document there, and a RecursionError must not stop the applier."""
    if isinstance(a, str) and isinstance(b, Mapping):
        try:
            return bool(loads_json(a, max_bytes=MAX_COMPARED_BYTES, what="value") == b)
        except InputError:
            return False
    if isinstance(b, str) and isinstance(a, Mapping):
        return same(b, a)
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
