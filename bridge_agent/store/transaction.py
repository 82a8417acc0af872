"""What the table modules share: the write transaction they run in, and the clock they stamp.

Every write of the state store runs inside one `Transaction`, opened and committed by the
`StateStore` facade (`store/state.py`); the table modules only execute their SQL on it. That is
what lets one commit span several tables (a page of changes and its run checkpoint, a recorded
product and the hint that asked for it).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from bridge_agent.store import meta

Params = tuple[Any, ...] | dict[str, Any]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Transaction:
    """One `BEGIN IMMEDIATE ... COMMIT` on the store's connection, and its seq counter."""

    __slots__ = ("_seq_next", "db")

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self._seq_next: int | None = None

    def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        return self.db.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Params]) -> sqlite3.Cursor:
        return self.db.executemany(sql, rows)

    def take_seq(self) -> int:
        """A new agent-wide seq (the outbox row version and the protocol `seq`).

        The counter lives in the database, not in this process: `bridge-agent outbox retry`
        writes from another process while the agent runs, and two writers must never hand out
        one seq. It is read once per transaction and written back just before COMMIT
        (`flush_seq`); SQLite's write lock makes that read-modify-write atomic.
        """
        if self._seq_next is None:
            self._seq_next = meta.next_seq(self.db)
        seq = self._seq_next
        self._seq_next += 1
        return seq

    def flush_seq(self) -> None:
        """Write the counter back if this transaction took seqs (the facade calls it last)."""
        if self._seq_next is not None:
            meta.set_value(self, "next_seq", str(self._seq_next))
