"""The `events` table: what operators read (`bridge-agent log`, `status`).

Each event has a time, a level, and where known the store, the product and the HTTP status, so a
partial failure is reported per item with what the other side answered (guarantee 7). Events
that belong to a state change (a rejection by the hub, a hint given up) are written in the
transaction of that change: the log never says something happened that was rolled back, and a
change is never made without its event.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bridge_agent.store.transaction import Transaction, now_ms


@dataclass(frozen=True, slots=True)
class Event:
    at: int
    level: str
    store: str | None
    product: str | None
    status: int | None
    message: str


def add(
    tx: Transaction,
    message: str,
    *,
    level: str = "info",
    store: str | None = None,
    product: str | None = None,
    status: int | None = None,
) -> None:
    tx.execute(
        "INSERT INTO events (at, level, store, product, status, message) VALUES (?, ?, ?, ?, ?, ?)",
        (now_ms(), level, store, product, status, message),
    )


def add_many(tx: Transaction, events: Sequence[Event]) -> None:
    tx.executemany(
        "INSERT INTO events (at, level, store, product, status, message) VALUES (?, ?, ?, ?, ?, ?)",
        [(e.at, e.level, e.store, e.product, e.status, e.message) for e in events],
    )


def newest(
    db: sqlite3.Connection,
    limit: int,
    levels: Iterable[str] | None,
    stores: Iterable[str] | None,
) -> list[Event]:
    """The newest `limit` events, newest first; only those of `levels` and `stores` if given."""
    wanted = [None if v is None else json.dumps(list(v)) for v in (levels, stores)]
    rows = db.execute(
        "SELECT at, level, store, product, status, message FROM events"
        " WHERE (?1 IS NULL OR level IN (SELECT value FROM json_each(?1)))"
        " AND (?2 IS NULL OR store IN (SELECT value FROM json_each(?2)))"
        " ORDER BY id DESC LIMIT ?3",
        (*wanted, limit),
    ).fetchall()
    return [Event(*r) for r in rows]
