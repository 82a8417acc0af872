"""The `outbox` table: one row per product with something to ship, until the hub acks it.

Rows coalesce by product: a product edited five times while the hub is down is one row, shipped
once with its latest state (guarantee 1). Every re-dirtying gives the row a fresh agent-wide
`seq` (its version, and the protocol `seq`); every settlement is conditioned on the seq that was
sent, so a row re-dirtied while in flight keeps its new content pending whatever the hub said
about the old one (guarantee 2). Rows ship in the order of their first dirtying (`first_seq`, kept
when re-dirtied), so a hot product cannot starve the others.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge_agent.store.transaction import Transaction, now_ms


@dataclass(frozen=True, slots=True)
class DueItem:
    """One outbox row joined with its mirror row: everything the shipper needs for one item."""

    store: str
    id: str
    seq: int
    source: str
    observed_at: int
    deleted: bool
    data: bytes | None  # msgpack canonical dict (None when deleted)
    hash: str | None
    acked_hash: str | None
    acked_data: bytes | None
    attempts: int


@dataclass(frozen=True, slots=True)
class Settlement:
    """What the hub said about one shipped item, as the store must record it."""

    store: str
    id: str
    seq: int
    outcome: str  # "ok" | "need_full" | "rejected" | "retry"
    hash: str | None = None  # ok: the hash the hub now holds (None after a delete)
    data: bytes | None = None  # ok: the data the hub now holds (the next patch base)
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class OutboxRow:
    store: str
    id: str
    seq: int
    state: str
    source: str
    first_at: int
    attempts: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending: int
    rejected: int
    oldest_pending_at: int | None  # epoch ms of the oldest pending row's first dirtying


# -- queueing ----------------------------------------------------------------------------------


def dirty(tx: Transaction, store: str, id_: str, source: str, observed_at: int) -> int:
    """Queue (or re-queue) one product with a fresh seq; the row's first_at is kept."""
    seq = tx.take_seq()
    tx.execute(
        "INSERT INTO outbox (store, id, seq, source, observed_at, first_at, first_seq)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (store, id) DO UPDATE SET seq=excluded.seq, source=excluded.source,"
        " observed_at=excluded.observed_at, state='pending', attempts=0, last_error=NULL",
        (store, id_, seq, source, observed_at, now_ms(), seq),
    )
    return seq


def due(db: sqlite3.Connection, limit: int) -> list[DueItem]:
    """Pending rows, oldest first, joined with what the shipper needs to build items.

    A NULL `acked_data` with `acked_hash = hash` means the hub holds the current data: the
    current data is then the patch base (see schema.py).
    """
    rows = db.execute(
        "SELECT o.store, o.id, o.seq, o.source, o.observed_at, m.deleted, m.data, m.hash,"
        " m.acked_hash, m.acked_data, o.attempts"
        " FROM outbox o JOIN mirror m ON m.store = o.store AND m.id = o.id"
        " WHERE o.state = 'pending' ORDER BY o.first_seq LIMIT ?",
        (limit,),
    ).fetchall()
    return [
        DueItem(r[0], r[1], r[2], r[3], r[4], bool(r[5]), r[6], r[7], r[8],
                r[6] if r[9] is None and r[8] is not None and r[8] == r[7] else r[9], r[10])
        for r in rows
    ]  # fmt: skip


# -- settling (each conditioned on the seq that was sent) --------------------------------------


def retire(tx: Transaction, acked: Sequence[Settlement]) -> None:
    """Remove the rows the hub acknowledged, unless they were re-dirtied while in flight."""
    tx.executemany(
        "DELETE FROM outbox WHERE store=? AND id=? AND seq=?",
        [(s.store, s.id, s.seq) for s in acked],
    )


def renumber(tx: Transaction, s: Settlement) -> None:
    """Give a row that must be sent again in full a new seq: the hub is idempotent on
    (agent, seq) and would replay its answer (`need_full`) for the old one."""
    if tx.execute(
        "SELECT 1 FROM outbox WHERE store=? AND id=? AND seq=?", (s.store, s.id, s.seq)
    ).fetchone():
        tx.execute("UPDATE outbox SET seq=? WHERE store=? AND id=?", (tx.take_seq(), s.store, s.id))


def set_aside(tx: Transaction, s: Settlement) -> None:
    """The hub rejected this item: it waits as `rejected`, with the reason, for `outbox retry`."""
    tx.execute(
        "UPDATE outbox SET state='rejected', last_error=?, attempts=attempts+1"
        " WHERE store=? AND id=? AND seq=?",
        (s.reason, s.store, s.id, s.seq),
    )


def count_try(tx: Transaction, s: Settlement, error: str | None) -> None:
    """No result for this item: it stays pending, one more attempt counted."""
    tx.execute(
        "UPDATE outbox SET attempts=attempts+1, last_error=? WHERE store=? AND id=? AND seq=?",
        (s.reason or error, s.store, s.id, s.seq),
    )


# -- operators ---------------------------------------------------------------------------------


def rejected_keys(tx: Transaction) -> list[tuple[str, str]]:
    rows = tx.execute("SELECT store, id FROM outbox WHERE state='rejected'").fetchall()
    return [(str(r[0]), str(r[1])) for r in rows]


def requeue(tx: Transaction, store: str, id_: str) -> None:
    """Put a rejected row back in line with a new seq (the old one's answer is remembered)."""
    tx.execute(
        "UPDATE outbox SET state='pending', seq=?, attempts=0, last_error=NULL"
        " WHERE store=? AND id=?",
        (tx.take_seq(), store, id_),
    )


def stats(db: sqlite3.Connection) -> OutboxStats:
    pending, rejected, oldest = db.execute(
        "SELECT COALESCE(SUM(state='pending'), 0), COALESCE(SUM(state='rejected'), 0),"
        " MIN(CASE WHEN state='pending' THEN first_at END) FROM outbox"
    ).fetchone()
    return OutboxStats(pending=pending, rejected=rejected, oldest_pending_at=oldest)


def rows(db: sqlite3.Connection, state: str | None, limit: int) -> list[OutboxRow]:
    sql = "SELECT store, id, seq, state, source, first_at, attempts, last_error FROM outbox"
    args: tuple[Any, ...] = ()
    if state is not None:
        sql += " WHERE state=?"
        args = (state,)
    found = db.execute(sql + " ORDER BY first_seq LIMIT ?", (*args, limit)).fetchall()
    return [OutboxRow(*r) for r in found]
