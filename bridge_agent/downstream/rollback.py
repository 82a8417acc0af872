"""Rollback (`bridge-agent rollback`): put back the values the agent replaced in a store.

Every value an apply replaced is kept in `replaced` with its optimisation and time (apply.py
records it with the outcome). A rollback selects some of them (one product, one optimisation, or
everything since a time) that no rollback restored yet, and per field:

1. **Chain, newest first.** The rows of one field are walked from the newest: a row is restored
   when the value in hand (first the store's, read live) is the value the agent wrote
   (`new_value`); the value in hand becomes its `old_value` and the walk goes on. So several
   optimisations of one field roll back to the value before the oldest, in one write. A value in
   hand that is the row's old value already (someone put it back by hand) counts as restored.
2. **Conflict check** (guarantee 5, as for an apply): the walk stops at the first row whose
   `new_value` the store no longer holds. That row and the older ones are left alone, and
   reported: "the merchant changed it since", or, when the store holds what a later optimisation
   (not selected) wrote, "optimization X changed it since": roll that one back first.
3. **Write** through the adapter's `Writer.write_fields` (`expected`: the value read, `value`: the
   value to restore; the Writer checks `expected` again just before writing), then **verify** by
   reading again: a field is restored only if the store holds the old value afterwards. An
   ambiguous failure is decided by that read, never retried blindly.
4. **Record**, in one transaction (`StateStore.record_rollbacks`): the restored rows are marked
   (a second rollback restores nothing twice), one event per field (`bridge-agent log`), and per
   optimisation one `rollbacks` row, the `rolled_back` result the daemon's result poster sends to
   the hub (downstream/results.py): a hub outage while this runs loses nothing, and this command
   never talks to the hub. Rows left alone or failed are not marked: a later rollback may try
   them again.

`dry_run` reads the store and says what would be restored and what would be left alone; it
writes nothing to the store or the state.

The write changes the product at the store: its webhook or the poll ships it upstream like any
change, which is how the hub learns the restored values. No echo rule applies to it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge_agent.downstream.approvals import same, show
from bridge_agent.errors import PlatformError
from bridge_agent.platforms.base import (
    FieldRef,
    FieldWrite,
    Platform,
    WriteField,
    Writer,
    fetch_many,
)
from bridge_agent.store import Event, ReplacedRow, Rollback, StateStore, now_ms
from bridge_agent.sync.hashing import content_hash

RESTORED, KEPT, FAILED = "restored", "kept", "failed"
MERCHANT = "the merchant changed it since (the store's value is kept)"


@dataclass(frozen=True, slots=True)
class Selector:
    """What to roll back: one product, one optimisation, or every value replaced since a time."""

    product: str | None = None
    optimization: str | None = None
    since: int | None = None  # epoch ms

    def describe(self) -> str:
        if self.product is not None:
            return f"--product {self.product}"
        if self.optimization is not None:
            return f"--optimization {self.optimization}"
        return "--since the given time"


@dataclass(slots=True)
class Step:
    """One replaced value in a rollback, and what became of it."""

    row: ReplacedRow
    outcome: str | None = None  # restored | kept | failed
    detail: str | None = None
    status: int | None = None

    def decide(self, outcome: str, detail: str | None = None, status: int | None = None) -> None:
        self.outcome, self.detail, self.status = outcome, detail, status


@dataclass(slots=True)
class FieldRollback:
    """One field of one product: the selected rows (newest first), the value the store holds
    and the value to restore."""

    ref: FieldRef | None  # None: a field name this agent does not know
    label: str
    steps: list[Step]
    later: list[ReplacedRow] = field(default_factory=list)  # newer rows, not selected
    current: Any = None
    read: bool = False
    target: Any = None  # the value to write back (the oldest restored row's old value)
    write: bool = False

    @property
    def restoring(self) -> list[Step]:
        return [s for s in self.steps if s.outcome == RESTORED]


@dataclass(slots=True)
class StoreRollback:
    """A rollback in one store: every field, whether it ran dry, and why the store was unread."""

    store: str
    fields: list[FieldRollback]
    dry_run: bool
    unread: str | None = None  # the store could not be read: nothing was decided or written

    @property
    def steps(self) -> list[tuple[FieldRollback, Step]]:
        return [(f, s) for f in self.fields for s in f.steps]

    def count(self, outcome: str) -> int:
        return sum(1 for _, s in self.steps if s.outcome == outcome)


async def plan(state: StateStore, store: str, selector: Selector) -> list[FieldRollback]:
    """The fields the selector names in `store` (rows not rolled back yet), grouped per field."""
    rows = await state.replaced_rows(
        store,
        product=selector.product,
        optimization=selector.optimization,
        since=selector.since,
    )
    groups: dict[tuple[str, str, str | None], list[ReplacedRow]] = {}
    for row in rows:  # newest first, kept in each group
        groups.setdefault((row.product, row.field, row.image), []).append(row)
    chosen = {r.id for r in rows}
    newer: dict[tuple[str, str, str | None], list[ReplacedRow]] = {}
    if selector.product is None:
        # Values written after the selected ones (not selected themselves) explain a conflict.
        for product in sorted({r.product for r in rows}):
            for row in await state.replaced_rows(store, product=product):
                key = (row.product, row.field, row.image)
                if row.id not in chosen and key in groups and _after(row, groups[key][0]):
                    newer.setdefault(key, []).append(row)
    out = []
    for key, group in groups.items():
        product, name, image = key
        label = f"{name}[{image}]" if image is not None else name
        try:
            ref: FieldRef | None = FieldRef(product, WriteField(name), image)
        except ValueError:
            ref = None
        steps = [Step(r) for r in group]
        if ref is None:
            for s in steps:
                s.decide(FAILED, f"unknown field {name!r}")
        out.append(FieldRollback(ref, label, steps, later=newer.get(key, [])))
    return out


async def roll_back(
    state: StateStore,
    store: str,
    platform: Platform,
    writer: Writer,
    fields: list[FieldRollback],
    *,
    dry_run: bool = False,
    concurrency: int = 4,
) -> StoreRollback:
    """Decide, write, verify and record the rollback of `fields` in `store` (see the module
    docstring). A store that cannot be read leaves everything undecided (`unread`)."""
    result = StoreRollback(store, fields, dry_run)
    todo = [f for f in fields if f.ref is not None]
    if not todo:
        return result
    try:
        current = await writer.read_fields([f.ref for f in todo if f.ref is not None])
    except PlatformError as exc:
        result.unread = str(exc)
        return result
    for f in todo:
        f.current, f.read = current.get(f.ref) if f.ref is not None else None, True
        decide(f)
    if dry_run:
        return result
    await _write(writer, [f for f in todo if f.write])
    products = {f.ref.product for f in todo if f.ref is not None and f.restoring}
    hashes = await _hashes(platform, products, concurrency)
    await _record(state, store, fields, hashes)
    return result


def decide(f: FieldRollback) -> None:
    """Walk the field's rows newest first from the store's value (the module docstring, 1-2)."""
    held = f.current
    stopped: Step | None = None
    for step in f.steps:
        if stopped is not None:
            newer = stopped.row.optimization
            step.decide(KEPT, f"a newer value of this field is kept (optimization {newer})")
            continue
        row = step.row
        if same(held, row.new):
            step.decide(RESTORED)
            held = row.old
        elif same(held, row.old):
            step.decide(RESTORED, "the store already held the value before it")
        else:
            step.decide(KEPT, _why_kept(f, step, held))
            stopped = step
    f.target = held
    f.write = bool(f.restoring) and not same(f.current, held)


def _why_kept(f: FieldRollback, step: Step, held: Any) -> str:
    if step is not f.steps[0]:
        newer = f.steps[f.steps.index(step) - 1].row.optimization
        return f"the merchant changed it between this optimization and {newer} (kept)"
    for later in f.later:  # newest first
        if same(held, later.new):
            return (
                f"optimization {later.optimization} changed it since: roll that one back first"
                " (or roll back the whole product with --product)"
            )
    return MERCHANT + f": it holds {show(held, 60)}"


async def _write(writer: Writer, fields: Sequence[FieldRollback]) -> None:
    """Write the old values, then read again: restored only if the store holds them."""
    if not fields:
        return
    refs = [f.ref for f in fields if f.ref is not None]
    writes = [FieldWrite(ref, f.current, f.target) for ref, f in zip(refs, fields, strict=True)]
    answers: dict[FieldRef, tuple[str, str | None, int | None]] = {}
    try:
        for answer in await writer.write_fields(writes):
            answers[answer.ref] = (answer.outcome, answer.message, answer.status)
    except PlatformError as exc:
        # Ambiguous: some writes may have landed. The read below decides each one.
        for ref in refs:
            answers[ref] = ("failed", f"the store answered: {exc}", exc.status)
    try:
        after: Mapping[FieldRef, Any] = await writer.read_fields(refs)
    except PlatformError as exc:
        for f in fields:
            _fail(f, f"written, but the store could not be read back ({exc}): check it", None)
        return
    for ref, f in zip(refs, fields, strict=True):
        outcome, message, status = answers.get(ref, ("failed", "the store gave no answer", None))
        if same(after.get(ref), f.target):
            continue  # restored, as decided (whatever the store answered)
        if outcome == "conflict":
            for s in f.restoring:
                s.decide(KEPT, MERCHANT + " (changed just before the write)")
        elif outcome == "applied":
            _fail(f, f"the store answered success but holds {show(after.get(ref), 60)}", status)
        else:
            _fail(f, message or f"the store refused the write ({outcome})", status)


def _fail(f: FieldRollback, why: str, status: int | None) -> None:
    for s in f.restoring:
        s.decide(FAILED, why, status)


async def _hashes(platform: Platform, products: set[str], concurrency: int) -> dict[str, str]:
    """Each product's content hash after the rollback, for the hub's result (best effort: the
    product itself reaches the hub through the store's webhook or the poll)."""
    if not products:
        return {}
    with contextlib.suppress(PlatformError):
        found = await fetch_many(platform, sorted(products), concurrency=concurrency)
        return {pid: content_hash(p.to_dict()) for pid, p in found.found.items()}
    return {}


async def _record(
    state: StateStore, store: str, fields: Sequence[FieldRollback], hashes: Mapping[str, str]
) -> None:
    at = now_ms()
    per_opt: dict[str, list[tuple[FieldRollback, Step]]] = {}
    events = []
    for f in fields:
        for s in f.steps:
            row = s.row
            per_opt.setdefault(row.optimization, []).append((f, s))
            events.append(
                Event(
                    at,
                    "info" if s.outcome == RESTORED else "warning",
                    store,
                    row.product,
                    s.status,
                    f"rollback of optimization {row.optimization}: {f.label} {_said(s)}",
                )
            )
    rollbacks = [
        Rollback(
            opt,
            "; ".join(f"{f.label}: {_said(s)}" for f, s in steps),
            [s.row.id for _, s in steps if s.outcome == RESTORED],
            hashes.get(steps[0][1].row.product),
        )
        for opt, steps in per_opt.items()
        if any(s.outcome == RESTORED for _, s in steps)
    ]
    await state.record_rollbacks(store, rollbacks, events)


def _said(step: Step) -> str:
    row = step.row
    if step.outcome == RESTORED:
        what = f"restored {show(row.old, 60)} (the agent had written {show(row.new, 60)})"
        return what + (f"; {step.detail}" if step.detail else "")
    word = "left alone" if step.outcome == KEPT else "failed"
    return f"{word}: {step.detail}" if step.detail else word


def _after(row: ReplacedRow, other: ReplacedRow) -> bool:
    return (row.at, row.id) > (other.at, other.id)


# -- rendering ---------------------------------------------------------------------------------


def render(result: StoreRollback) -> list[str]:
    """One line per value: where, which optimisation, and what became of it (or would)."""
    lines = []
    if result.unread is not None:
        lines.append(
            f"store {result.store!r} could not be read ({result.unread}): nothing was"
            + (" decided" if result.dry_run else " written")
        )
    for f, s in result.steps:
        row = s.row
        where = f"{result.store}/{row.product} {f.label}"
        lines.append(f"{where} (optimization {row.optimization}): {_line(s, f, result)}")
    return lines


def _line(s: Step, f: FieldRollback, result: StoreRollback) -> str:
    row = s.row
    if result.unread is not None or s.outcome is None:
        return f"not decided: the agent wrote {show(row.new, 60)} over {show(row.old, 60)}"
    if not result.dry_run:
        return _said(s)
    if s.outcome == RESTORED:
        return f"would restore {show(row.old, 60)} (the store holds {show(f.current, 60)})"
    if s.outcome == KEPT:
        return f"would be left alone: {s.detail}"
    return f"would fail: {s.detail}"


def as_json(result: StoreRollback) -> list[dict[str, Any]]:
    return [
        {
            "store": result.store,
            "product": s.row.product,
            "field": f.label,
            "optimization": s.row.optimization,
            "old": s.row.old,
            "new": s.row.new,
            "current": f.current if f.read else None,
            "outcome": s.outcome,
            "detail": s.detail,
            "dry_run": result.dry_run,
        }
        for f, s in result.steps
    ]
