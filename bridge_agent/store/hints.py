"""The `hints` table: products a webhook said changed, waiting for their re-fetch.

A hint is committed before the webhook is answered 2xx (guarantee 2) and deleted in the
transaction that records its product, so a crash in between re-fetches, never loses. One row per
product: a burst coalesces. `received_at` changes whenever a new hint arrives, and every deletion
is conditioned on it, so a hint that landed during the re-fetch is never deleted by it: the newer
change gets its own re-fetch.

A re-fetch that fails leaves the hint with `attempts` counted, `last_error` and a `next_at` to try
again (backoff). A hint whose product keeps answering a permanent error is dropped after a bounded
number of tries, in the transaction that writes the event saying so (guarantee 7, see
`sources/refetch.py`): never retried every few minutes forever.
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
        "SELECT store, id, source, received_at, attempts FROM hints"
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


def defer(tx: Transaction, failed: Sequence[tuple[Hint, str]], until: int) -> None:
    """Leave (hint, error) for another try at `until` (epoch ms), one more attempt counted."""
    tx.executemany(
        "UPDATE hints SET attempts=attempts+1, last_error=?, next_at=?"
        " WHERE store=? AND id=? AND received_at=?",
        [(error, until, h.store, h.id, h.received_at) for h, error in failed],
    )


def count(db: sqlite3.Connection, store: str | None) -> int:
    sql, args = "SELECT COUNT(*) FROM hints", tuple[str, ...]()
    if store is not None:
        sql, args = sql + " WHERE store=?", (store,)
    return int(db.execute(sql, args).fetchone()[0])
