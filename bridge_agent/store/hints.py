"""The `hints` table: products a webhook said changed, waiting for their re-fetch.

A hint is committed before the webhook is answered 2xx (guarantee 2) and deleted in the
transaction that records its product, so a crash in between re-fetches, never loses. One row per
product: a burst coalesces. `received_at` changes whenever a new hint arrives, and every deletion
is conditioned on it, so a hint that landed during the re-fetch is never deleted by it: the newer
change gets its own re-fetch.

A re-fetch that fails leaves the hint with `attempts` counted (its backoff), `last_error` and a
`next_at` to try again. A permanent answer (a 4xx about this product) is also counted in
`refused`, apart: an outage before it (the store down, 5xx) says nothing about the product, so
only the store's permanent answers count toward the bound after which the hint is dropped, in
the transaction that writes the event saying so (guarantee 7, see `sources/refetch.py`): never
retried every few minutes forever, never dropped for one 400 after an outage.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bridge_agent.store.transaction import Transaction


@dataclass(frozen=True, slots=True)
class Hint:
    """A committed hint that a product changed (from a webhook), waiting for its re-fetch."""

    store: str
    id: str
    source: str
    received_at: int  # microseconds; identifies this hint (a newer one replaces it)
    attempts: int = 0  # re-fetches of this product that failed since it was first hinted
    refused: int = 0  # of those, the ones the store answered with a permanent error


def add(tx: Transaction, store: str, ids: Sequence[str], source: str) -> None:
    now = time.time_ns() // 1000  # microseconds: a new hint must differ from the last
    tx.executemany(
        "INSERT INTO hints (store, id, source, received_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (store, id) DO UPDATE SET received_at=excluded.received_at,"
        " source=excluded.source, next_at=0",
        [(store, i, source, now + n) for n, i in enumerate(ids)],
    )


def due(db: sqlite3.Connection, store: str, now: int, limit: int) -> list[Hint]:
    rows = db.execute(
        "SELECT store, id, source, received_at, attempts, refused FROM hints"
        " WHERE store=? AND next_at<=? ORDER BY received_at LIMIT ?",
        (store, now, limit),
    ).fetchall()
    return [Hint(*r) for r in rows]


def settle(tx: Transaction, hints: Sequence[Hint]) -> None:
    """Delete hints whose product was recorded (or given up), unless a newer hint replaced them."""
    tx.executemany(
        "DELETE FROM hints WHERE store=? AND id=? AND received_at=?",
        [(h.store, h.id, h.received_at) for h in hints],
    )


def defer(tx: Transaction, failed: Sequence[tuple[Hint, str, bool]], until: int) -> None:
    """Leave (hint, error, permanent) for another try at `until` (epoch ms), one more attempt
    counted, and one more refusal when the store's answer was permanent."""
    tx.executemany(
        "UPDATE hints SET attempts=attempts+1, refused=refused+?, last_error=?, next_at=?"
        " WHERE store=? AND id=? AND received_at=?",
        [
            (int(permanent), error, until, h.store, h.id, h.received_at)
            for h, error, permanent in failed
        ],
    )


def count(db: sqlite3.Connection, store: str | None) -> int:
    sql, args = "SELECT COUNT(*) FROM hints", tuple[str, ...]()
    if store is not None:
        sql, args = sql + " WHERE store=?", (store,)
    return int(db.execute(sql, args).fetchone()[0])
