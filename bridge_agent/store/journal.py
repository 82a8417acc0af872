"""The `journal` and `replaced` tables: the downstream direction's memory (schema.py, migration 2).

An optimisation is journaled as the hub sent it, in the transaction that moves the feed cursor
past it (`StateStore.journal_received`): a crash either keeps both or neither, so none is lost and
none is taken twice (a page read again inserts nothing: the key is (store, optimisation id)).

States, and why each transition is its own commit:

- `received`: journaled, not yet acted on;
- `applying`: committed *before* the first write to the store. An optimisation found in this
  state at start was interrupted between its write and its outcome: the engine must not write
  again, it reads the store to learn what happened (downstream/apply.py);
- `applied` | `conflict` | `failed`: the outcome, committed with the per-field `results`, the
  values replaced (`replaced`), the product hash after, and the product itself in the mirror
  (the echo guard), in one transaction;
- `pending_review`: held for a reviewer (`apply_mode = "review"`); `approvals approve` sets
  `approved` and puts it back to `received`, `reject` makes it `rejected_by_reviewer`.

**Rollback** (`bridge-agent rollback`, downstream/rollback.py): a restored `replaced` row is
marked with the `rollbacks` row that restored it (never restored twice), and that row, one per
optimisation, waits as `unreported` until the hub acknowledges its `rolled_back` result. Both
are written in one transaction with the rollback's events (`StateStore.record_rollbacks`).

`report` says what the hub has been told: `unreported` from every reportable state change until
the hub acknowledges *that* state (`mark_reported` is conditioned on the state sent, like the
outbox's seq check: a `pending_review` acknowledged after the optimisation was applied leaves
the `applied` result unreported).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from bridge_agent.store.transaction import Transaction, now_ms

STATES: tuple[str, ...] = (
    "received",
    "applying",
    "applied",
    "conflict",
    "failed",
    "pending_review",
    "rejected_by_reviewer",
)
REPORTABLE: frozenset[str] = frozenset(STATES[2:])  # what the hub is told (wire.OPT_STATUSES)
OPEN: tuple[str, ...] = ("received", "applying")  # what the apply loop still has to act on
STREAM = "downstream"  # the feed cursor's stream in `cursors`

_SELECT = (
    "SELECT store, id, seq, product, fields, created_at, received_at, updated_at, state,"
    " approved, results, detail, hash, report FROM journal"
)


@dataclass(frozen=True, slots=True)
class Received:
    """One optimisation as the hub sent it (wire.Optimization, without the wire dependency)."""

    id: str
    product: str
    fields: Mapping[str, Any]
    created_at: int


@dataclass(frozen=True, slots=True)
class Refused:
    """A feed item that is no usable optimisation (malformed): journaled `failed` at once, so
    the hub hears about it, and never acted on. `product` is "" when the hub's was unusable."""

    id: str
    product: str
    detail: str


@dataclass(frozen=True, slots=True)
class Replaced:
    """A value the agent replaced in the store: what a rollback restores."""

    product: str
    field: str
    image: str | None
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one optimisation, as `StateStore.journal_outcome` records it."""

    id: str
    state: str  # one of REPORTABLE
    results: Sequence[Mapping[str, Any]] = ()  # per field: field, image, outcome, detail
    detail: str | None = None
    hash: str | None = None
    replaced: Sequence[Replaced] = ()


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal row."""

    store: str
    id: str
    seq: int
    product: str
    fields: Mapping[str, Any]
    created_at: int
    received_at: int
    updated_at: int
    state: str
    approved: bool
    results: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    detail: str | None = None
    hash: str | None = None
    report: str = "none"


@dataclass(frozen=True, slots=True)
class Report:
    """A result the hub has not acknowledged yet."""

    id: str
    status: str
    detail: str | None
    hash: str | None


def _entry(row: Sequence[Any]) -> Entry:
    store, id_, seq, product, fields, created, received, updated, state, approved = row[:10]
    results, detail, hash_, report = row[10:]
    return Entry(
        store,
        id_,
        int(seq),
        product,
        json.loads(fields),
        int(created),
        int(received),
        int(updated),
        state,
        bool(approved),
        tuple(json.loads(results)) if results else (),
        detail,
        hash_,
        report,
    )


# -- writes ------------------------------------------------------------------------------------


def add(tx: Transaction, store: str, received: Iterable[Received]) -> int:
    """Journal optimisations in arrival order; one already journaled is left as it is. Count new."""
    now = now_ms()
    row = tx.execute("SELECT COALESCE(MAX(seq), 0) FROM journal WHERE store=?", (store,)).fetchone()
    seq = int(row[0])
    added = 0
    for opt in received:
        seq += 1
        added += tx.execute(
            "INSERT INTO journal (store, id, seq, product, fields, created_at, received_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (store, id) DO NOTHING",
            (store, opt.id, seq, opt.product, json.dumps(opt.fields), opt.created_at, now, now),
        ).rowcount
    return added


def add_refused(tx: Transaction, store: str, refused: Iterable[Refused]) -> list[Refused]:
    """Journal refused feed items as `failed`, to report; one already journaled (a good one of
    that id, or a page read again) is left as it is. The refusals that were new."""
    now = now_ms()
    row = tx.execute("SELECT COALESCE(MAX(seq), 0) FROM journal WHERE store=?", (store,)).fetchone()
    seq = int(row[0])
    added = []
    for one in refused:
        seq += 1
        if tx.execute(
            "INSERT INTO journal (store, id, seq, product, fields, created_at, received_at,"
            " updated_at, state, detail, report) VALUES (?, ?, ?, ?, '{}', ?, ?, ?, 'failed', ?,"
            " 'unreported') ON CONFLICT (store, id) DO NOTHING",
            (store, one.id, seq, one.product, now, now, now, one.detail),
        ).rowcount:
            added.append(one)
    return added


def mark_applying(tx: Transaction, store: str, ids: Sequence[str]) -> None:
    now = now_ms()
    tx.executemany(
        "UPDATE journal SET state='applying', attempts=attempts+1, updated_at=?"
        " WHERE store=? AND id=? AND state='received'",
        [(now, store, id_) for id_ in ids],
    )


def set_outcome(tx: Transaction, store: str, outcome: Outcome) -> None:
    """Record an outcome (and the values it replaced); the hub is to be told."""
    now = now_ms()
    tx.execute(
        "UPDATE journal SET state=?, results=?, detail=?, hash=?, report='unreported',"
        " updated_at=? WHERE store=? AND id=?",
        (
            outcome.state,
            json.dumps(list(outcome.results)) if outcome.results else None,
            outcome.detail,
            outcome.hash,
            now,
            store,
            outcome.id,
        ),
    )
    tx.executemany(
        "INSERT INTO replaced (store, optimization, product, field, image, old_value,"
        " new_value, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                store,
                outcome.id,
                r.product,
                r.field,
                r.image,
                json.dumps(r.old),
                json.dumps(r.new),
                now,
            )
            for r in outcome.replaced
        ],
    )


def mark_reported(tx: Transaction, store: str, sent: Sequence[tuple[str, str]]) -> None:
    """The hub acknowledged these (id, status): reported, unless the state moved on meanwhile."""
    tx.executemany(
        "UPDATE journal SET report='reported' WHERE store=? AND id=? AND state=?"
        " AND report='unreported'",
        [(store, id_, status) for id_, status in sent],
    )


def approve(tx: Transaction, store: str, ids: Sequence[str]) -> list[str]:
    """Approve held optimisations: back to `received`, to be applied whatever the mode."""
    now = now_ms()
    return [
        id_
        for id_ in ids
        if tx.execute(
            "UPDATE journal SET state='received', approved=1, report='none', updated_at=?"
            " WHERE store=? AND id=? AND state='pending_review'",
            (now, store, id_),
        ).rowcount
    ]


def reject(tx: Transaction, store: str, ids: Sequence[str]) -> list[str]:
    """Reject held optimisations: nothing is written, the hub is told."""
    done = []
    for id_ in ids:
        outcome = Outcome(id_, "rejected_by_reviewer", detail="rejected by the reviewer")
        held = tx.execute(
            "SELECT 1 FROM journal WHERE store=? AND id=? AND state='pending_review'", (store, id_)
        ).fetchone()
        if held:
            set_outcome(tx, store, outcome)
            done.append(id_)
    return done


# -- reads -------------------------------------------------------------------------------------


def open_entries(db: sqlite3.Connection, store: str, limit: int) -> list[Entry]:
    """Optimisations still to act on (`received`, `applying`), in feed order."""
    rows = db.execute(
        _SELECT + " WHERE store=? AND state IN ('received', 'applying') ORDER BY seq LIMIT ?",
        (store, limit),
    ).fetchall()
    return [_entry(r) for r in rows]


def entries(
    db: sqlite3.Connection,
    store: str | None,
    *,
    states: Iterable[str] | None = None,
    product: str | None = None,
    ids: Iterable[str] | None = None,
    limit: int = 1000,
) -> list[Entry]:
    wanted = [None if v is None else json.dumps(list(v)) for v in (states, ids)]
    rows = db.execute(
        _SELECT  # noqa: S608 - constant columns; every value is a parameter
        + " WHERE (?1 IS NULL OR store=?1)"
        " AND (?2 IS NULL OR state IN (SELECT value FROM json_each(?2)))"
        " AND (?3 IS NULL OR id IN (SELECT value FROM json_each(?3)))"
        " AND (?4 IS NULL OR product=?4) ORDER BY store, seq LIMIT ?5",
        (store, *wanted, product, limit),
    ).fetchall()
    return [_entry(r) for r in rows]


def unreported(db: sqlite3.Connection, store: str, limit: int) -> list[Report]:
    rows = db.execute(
        "SELECT id, state, detail, hash FROM journal WHERE store=? AND report='unreported'"
        " ORDER BY seq LIMIT ?",
        (store, limit),
    ).fetchall()
    return [Report(*r) for r in rows]


def counts(db: sqlite3.Connection, store: str) -> dict[str, int]:
    rows = db.execute(
        "SELECT state, COUNT(*) FROM journal WHERE store=? GROUP BY state", (store,)
    ).fetchall()
    out = dict.fromkeys(STATES, 0)
    out.update({str(s): int(n) for s, n in rows})
    out["unreported"] = int(
        db.execute(
            "SELECT COUNT(*) FROM journal WHERE store=? AND report='unreported'", (store,)
        ).fetchone()[0]
    )
    # Rollbacks wait for the hub too (their `rolled_back` result): counted with the others.
    out["unreported"] += int(
        db.execute(
            "SELECT COUNT(*) FROM rollbacks WHERE store=? AND report='unreported'", (store,)
        ).fetchone()[0]
    )
    out["rolled_back"] = int(
        db.execute("SELECT COUNT(*) FROM rollbacks WHERE store=?", (store,)).fetchone()[0]
    )
    return out


def replaced_of(db: sqlite3.Connection, store: str, optimization: str) -> list[Replaced]:
    rows = db.execute(
        "SELECT product, field, image, old_value, new_value FROM replaced"
        " WHERE store=? AND optimization=? ORDER BY id",
        (store, optimization),
    ).fetchall()
    return [Replaced(p, f, i, json.loads(o), json.loads(n)) for p, f, i, o, n in rows]


def image_users(
    db: sqlite3.Connection, store: str, image_ids: Iterable[str], limit: int
) -> dict[str, set[str]]:
    """For each image id, the existing products of the mirror whose images include it.

    An ALT lives on the attachment, so writing it changes every product that shows the image.
    The mirror keeps products as msgpack, so this decodes rows; a byte search for the ids first
    skips the rows that cannot hold them, and at most `limit` products are listed per image.
    """
    wanted = {i for i in image_ids if i}
    out: dict[str, set[str]] = {i: set() for i in wanted}
    if not wanted:
        return out
    needles = [(i, i.encode("utf-8")) for i in wanted]
    for id_, data in db.execute(
        "SELECT id, data FROM mirror WHERE store=? AND deleted=0 AND data IS NOT NULL", (store,)
    ):
        candidates = [i for i, n in needles if n in data and len(out[i]) < limit]
        if not candidates:
            continue
        images = msgpack.unpackb(data, raw=False).get("images", ())
        held = {str(img.get("id")) for img in images if isinstance(img, dict)}
        for i in candidates:
            if i in held:
                out[i].add(str(id_))
    return out


# -- rollback (migration 4: `rollbacks`, `replaced.rolled_back`) -------------------------------


@dataclass(frozen=True, slots=True)
class ReplacedRow:
    """A `replaced` row with what a rollback needs: its id, optimisation, time, and whether a
    rollback already restored it (`rolled_back`, the `rollbacks` row id)."""

    id: int
    optimization: str
    product: str
    field: str
    image: str | None
    old: Any
    new: Any
    at: int
    rolled_back: int | None = None


@dataclass(frozen=True, slots=True)
class Rollback:
    """What one rollback did to one optimisation: the `rollbacks` row to write, and the
    `replaced` rows it restored (marked, so they are never restored twice)."""

    optimization: str
    detail: str
    restored: Sequence[int]  # replaced.id
    hash: str | None = None


@dataclass(frozen=True, slots=True)
class RollbackReport:
    """A `rolled_back` result the hub has not acknowledged yet (`id`: the rollbacks row)."""

    id: int
    optimization: str
    detail: str
    hash: str | None


def replaced_rows(
    db: sqlite3.Connection,
    store: str,
    *,
    product: str | None = None,
    optimization: str | None = None,
    since: int | None = None,
    rolled_back: bool = False,
) -> list[ReplacedRow]:
    """The values the agent replaced in `store` (of one product, one optimisation, at or after
    `since` ms), newest first; those a rollback restored only with `rolled_back`."""
    rows = db.execute(
        "SELECT id, optimization, product, field, image, old_value, new_value, at, rolled_back"
        " FROM replaced WHERE store=?1 AND (?2 IS NULL OR product=?2)"
        " AND (?3 IS NULL OR optimization=?3) AND (?4 IS NULL OR at>=?4)"
        " AND (?5 OR rolled_back IS NULL) ORDER BY at DESC, id DESC",
        (store, product, optimization, since, rolled_back),
    ).fetchall()
    return [
        ReplacedRow(
            int(id_), opt, p, f, i, json.loads(o) if o is not None else None,
            json.loads(n) if n is not None else None, int(at), rb,
        )
        for id_, opt, p, f, i, o, n, at, rb in rows
    ]  # fmt: skip


def replaced_stores(db: sqlite3.Connection) -> list[str]:
    """The stores the agent ever replaced a value in."""
    return [str(s) for (s,) in db.execute("SELECT DISTINCT store FROM replaced ORDER BY store")]


def add_rollback(tx: Transaction, store: str, rollback: Rollback) -> int:
    """Record one optimisation's rollback (to report as `rolled_back`) and mark the rows it
    restored; the rollbacks row id."""
    row = tx.execute(
        "INSERT INTO rollbacks (store, optimization, at, detail, hash) VALUES (?, ?, ?, ?, ?)"
        " RETURNING id",
        (store, rollback.optimization, now_ms(), rollback.detail, rollback.hash),
    ).fetchone()
    rollback_id = int(row[0])
    tx.executemany(
        "UPDATE replaced SET rolled_back=? WHERE store=? AND id=? AND rolled_back IS NULL",
        [(rollback_id, store, replaced) for replaced in rollback.restored],
    )
    return rollback_id


def unreported_rollbacks(db: sqlite3.Connection, store: str, limit: int) -> list[RollbackReport]:
    rows = db.execute(
        "SELECT id, optimization, detail, hash FROM rollbacks"
        " WHERE store=? AND report='unreported' ORDER BY id LIMIT ?",
        (store, limit),
    ).fetchall()
    return [RollbackReport(int(i), o, d, h) for i, o, d, h in rows]


def mark_rollbacks_reported(tx: Transaction, store: str, ids: Sequence[int]) -> None:
    tx.executemany(
        "UPDATE rollbacks SET report='reported' WHERE store=? AND id=?",
        [(store, id_) for id_ in ids],
    )
