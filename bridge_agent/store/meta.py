"""The `meta` table: small key/value facts of the whole state (the seq counter, the last shipment).

Keys in use: `next_seq` (the agent-wide seq counter, see `Transaction.take_seq` and
`StateStore.raise_seq_to_clock`), `last_shipment_at` (epoch ms of the last hub ack) and
`export:<name>:last` (where the next incremental export of that name starts, export/reader.py).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bridge_agent.store.transaction import Transaction


def get(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return None if row is None else str(row[0])


def set_value(tx: Transaction, key: str, value: str) -> None:
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?)"
        " ON CONFLICT (key) DO UPDATE SET value=excluded.value",
        (key, value),
    )


def next_seq(db: sqlite3.Connection) -> int:
    """The next unused seq as committed (1 for a new state)."""
    value = get(db, "next_seq")
    return 1 if value is None else int(value)


def check(db: sqlite3.Connection) -> None:
    """A cheap read that fails when the database is unusable (health checks)."""
    db.execute("SELECT COUNT(*) FROM meta").fetchone()
