"""The `cursors` table: where each incremental stream of a store resumes (the time a poll reads
changes from, the last reconciliation). Sources move a cursor only after what it covers is
recorded, so a crash in between reads that stretch again: duplicates, never gaps."""

from __future__ import annotations

import sqlite3

from bridge_agent.store.transaction import Transaction, now_ms


def get(db: sqlite3.Connection, store: str, stream: str) -> str | None:
    row = db.execute(
        "SELECT value FROM cursors WHERE store=? AND stream=?", (store, stream)
    ).fetchone()
    return None if row is None else str(row[0])


def set_value(tx: Transaction, store: str, stream: str, value: str) -> None:
    tx.execute(
        "INSERT INTO cursors (store, stream, value, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (store, stream) DO UPDATE SET value=excluded.value,"
        " updated_at=excluded.updated_at",
        (store, stream, value, now_ms()),
    )
