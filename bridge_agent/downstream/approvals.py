"""Safe mode, the reviewer's side (`bridge-agent approvals`): what is held, what it would change,
and the decision.

With `apply_mode = "review"` the apply loop holds each optimisation as `pending_review` and reads
or writes nothing (apply.py). This module is what the reviewer's command does with them:

- `select` names the held optimisations a command acts on (ids, one product, all). An id that is
  not in the journal, or not held, is a problem the command reports; nothing is decided then, so
  a typo never approves half of a list.
- `diff` shows each field as three values: the store's value now (read live through the store
  adapter's `Writer.read_fields`), the value the hub saw (`from`) and the one it proposes (`to`).
  A field whose store value is no longer `from` will be a conflict when applied: the merchant's
  value is kept (guarantee 5), so the reviewer learns it before approving rather than after. A
  store that cannot be read is said so, and the hub's two values are still shown.
- `approve` and `reject` are `StateStore.approve` and `StateStore.reject`. Nothing here writes to
  the store or talks to the hub: the running agent's apply loop takes approved optimisations
  from the journal within `apply.IDLE_CHECK` seconds (another process cannot nudge it), and its
  result poster reports rejections (`rejected_by_reviewer`) within `results.IDLE_CHECK`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge_agent.downstream import apply, results
from bridge_agent.errors import PlatformError
from bridge_agent.platforms.base import FieldRef, WriteField, Writer
from bridge_agent.store import Entry, StateStore

HELD = "pending_review"
SELECT_LIMIT = 1000  # optimisations read at once; approve/reject --all go on in such slices
APPLY_WITHIN = apply.IDLE_CHECK  # seconds until the running agent's apply loop looks
REPORT_WITHIN = results.IDLE_CHECK  # seconds until its result poster looks
CONFLICT_NOTE = "will conflict (the merchant's value is kept)"


@dataclass(slots=True)
class FieldDiff:
    """One field of a held optimisation: the store's value now, the hub's `from`, the `to`."""

    label: str  # seo_title, image_alt[57]
    ref: FieldRef | None  # None: a field this agent does not know (nothing to read)
    to: Any = None
    frm: Any = None
    has_from: bool = True
    current: Any = None
    read: bool = False  # `current` was read from the store
    problem: str | None = None  # malformed or unknown: will fail when applied

    @property
    def note(self) -> str | None:
        """What will become of the field when applied, as far as the store's value says."""
        if self.problem:
            return f"will fail: {self.problem}"
        if not self.read:
            return None
        if same(self.current, self.to):
            return "the store holds the proposed value already"
        if self.has_from and not same(self.current, self.frm):
            return CONFLICT_NOTE
        return None

    @property
    def conflict(self) -> bool:
        return self.note == CONFLICT_NOTE

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.label, "to": self.to}
        if self.has_from:
            out["from"] = self.frm
        if self.read:
            out["current"] = self.current
        if self.note:
            out["note"] = self.note
        return out


@dataclass(slots=True)
class Selection:
    """The held optimisations a command names, and what it named that is not held."""

    entries: list[Entry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


async def select(
    state: StateStore,
    *,
    ids: Sequence[str] = (),
    product: str | None = None,
    store: str | None = None,
    limit: int = SELECT_LIMIT,
) -> Selection:
    """The held optimisations named by `ids`, else those of `product`, else all (of `store`)."""
    out = Selection()
    if ids:
        found = await state.journal_entries(store, ids=list(dict.fromkeys(ids)), limit=limit)
        by_id: dict[str, list[Entry]] = {}
        for entry in found:
            by_id.setdefault(entry.id, []).append(entry)
        where = f" of store {store!r}" if store else ""
        for id_ in dict.fromkeys(ids):
            if id_ not in by_id:
                out.problems.append(f"no optimization {id_} in the journal{where}")
            for entry in by_id.get(id_, ()):
                if entry.state == HELD:
                    out.entries.append(entry)
                else:
                    out.problems.append(
                        f"optimization {id_} ({entry.store}/{entry.product}) is {entry.state},"
                        " not waiting for review"
                    )
        return out
    out.entries = await state.journal_entries(store, states=[HELD], product=product, limit=limit)
    return out


def field_diffs(entry: Entry) -> list[FieldDiff]:
    """The fields of an optimisation as the apply loop plans them (`apply.plan_fields`), so
    the reviewer sees the value it would write (an addition already added) and the reason it
    would refuse a field (no `from`, not text, unknown) exactly as the apply loop decides."""
    out: list[FieldDiff] = []
    for planned in apply.plan_fields(entry):
        label = printable(planned.label)
        problem = planned.detail if planned.outcome is not None else None
        if planned.name is not None:  # a field this agent does not know: nothing to read
            out.append(FieldDiff(label, None, None, problem=problem))
        elif planned.ref.field is WriteField.JSONLD:
            # Built from the store's product when applied; the hub gives its text.
            out.append(FieldDiff(label, planned.ref, planned.hub, has_from=False, problem=problem))
        else:
            to = planned.to if problem is None else None
            out.append(
                FieldDiff(label, planned.ref, to, planned.frm, planned.has_from, problem=problem)
            )
    return out


def printable(text: str) -> str:
    """A name that came from the hub, safe to print on one line of a terminal: as it is when
    it is printable, else quoted with its control characters escaped."""
    return text if text.isprintable() else repr(text)


async def read_current(writer: Writer, diffs: Iterable[FieldDiff]) -> str | None:
    """Fill in each field's current store value (one batched read); the reason if the store
    could not be read (the diffs then show the hub's values only)."""
    todo = [d for d in diffs if d.ref is not None and d.problem is None]
    if not todo:
        return None
    try:
        current = await writer.read_fields([d.ref for d in todo if d.ref is not None])
    except PlatformError as exc:
        return str(exc)
    for d in todo:
        d.current, d.read = current.get(d.ref) if d.ref is not None else None, True
    return None


def render_diff(entry: Entry, diffs: Sequence[FieldDiff], unread: str | None) -> list[str]:
    """A held optimisation, field by field, as `approvals show` prints it."""
    lines = [
        f"optimization {entry.id}  store {entry.store}  product {entry.product}  ({entry.state})"
    ]
    if unread is not None:
        lines.append(f"  the store could not be read ({unread}): its current values are unknown")
    for d in diffs:
        lines.append(f"  {d.label}" + (f"   {d.note}" if d.note else ""))
        if d.read:
            lines.append(f"    store now : {show(d.current)}")
        if d.has_from:
            lines.append(f"    hub saw   : {show(d.frm)}")
        elif d.ref is not None and d.ref.field is WriteField.JSONLD:
            lines.append("    hub saw   : (no `from`: the agent writes its own document)")
        lines.append(f"    proposed  : {show(d.to)}")
    return lines


def show(value: Any, width: int = 100) -> str:
    """A value on one line, bounded: text quoted, documents as compact JSON, nothing as -."""
    if value is None or value == "":
        return "(empty)"
    text = repr(value) if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def same(a: Any, b: Any) -> bool:
    """Equal as the apply loop compares (`apply.same`): JSON documents by content, within
    bounds, and an empty text as nothing."""
    return apply.same(a, b)
