"""The `runs` table: resumable runs (import, refresh, repair, verification) of one store.

A run keeps a frozen copy of the configuration that started it and a checkpoint; the facade
writes each checkpoint in the transaction of the page it follows (`record_page`, `repair_page`),
which is what makes runs resumable (guarantee 3): after a crash, either the page and its
checkpoint are both on disk, or neither is and the page is read again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge_agent.store.transaction import Transaction, now_ms


@dataclass(frozen=True, slots=True)
class Run:
    id: int
    kind: str
    store: str
    state: str
    config: dict[str, Any]
    checkpoint: dict[str, Any] | None
    done: int
    total: int | None
    started_at: int
    updated_at: int
    finished_at: int | None
    error: str | None
    report: dict[str, Any] | None = None


_COLUMNS = (
    "id, kind, store, state, config, checkpoint, done, total, started_at, updated_at,"
    " finished_at, error, report"
)


def _run_from(r: Sequence[Any]) -> Run:
    return Run(
        id=r[0],
        kind=r[1],
        store=r[2],
        state=r[3],
        config=json.loads(r[4]),
        checkpoint=None if r[5] is None else json.loads(r[5]),
        done=r[6],
        total=r[7],
        started_at=r[8],
        updated_at=r[9],
        finished_at=r[10],
        error=r[11],
        report=None if r[12] is None else json.loads(r[12]),
    )


def start(
    tx: Transaction, kind: str, store: str, config: dict[str, Any], total: int | None = None
) -> int:
    now = now_ms()
    (run_id,) = tx.execute(
        "INSERT INTO runs (kind, store, state, config, total, started_at, updated_at)"
        " VALUES (?, ?, 'running', ?, ?, ?, ?) RETURNING id",
        (kind, store, json.dumps(config, sort_keys=True), total, now, now),
    ).fetchone()
    return int(run_id)


def checkpoint(
    tx: Transaction, run_id: int, checkpoint: dict[str, Any], done: int, total: int | None = None
) -> None:
    """Where the run stands after the page written in this same transaction."""
    tx.execute(
        "UPDATE runs SET checkpoint=?, done=?, total=COALESCE(?, total), updated_at=? WHERE id=?",
        (json.dumps(checkpoint, sort_keys=True), done, total, now_ms(), run_id),
    )


def finish(
    tx: Transaction, run_id: int, state: str, error: str | None, report: dict[str, Any] | None
) -> None:
    now = now_ms()
    tx.execute(
        "UPDATE runs SET state=?, error=?, updated_at=?, finished_at=?,"
        " report=COALESCE(?, report) WHERE id=?",
        (state, error, now, now, None if report is None else json.dumps(report), run_id),
    )


def unfinished(db: sqlite3.Connection, store: str | None) -> list[Run]:
    """Runs not finished (running or paused): what must resume after a restart."""
    sql = f"SELECT {_COLUMNS} FROM runs WHERE state IN ('running', 'paused')"  # noqa: S608
    args: tuple[str, ...] = ()
    if store is not None:
        sql += " AND store=?"
        args = (store,)
    return [_run_from(r) for r in db.execute(sql + " ORDER BY id", args).fetchall()]


def last(db: sqlite3.Connection, store: str, kind: str) -> Run | None:
    sql = f"SELECT {_COLUMNS} FROM runs WHERE store=? AND kind=? ORDER BY id DESC LIMIT 1"  # noqa: S608
    rows = db.execute(sql, (store, kind)).fetchall()
    return _run_from(rows[0]) if rows else None


def newest(db: sqlite3.Connection, limit: int) -> list[Run]:
    sql = f"SELECT {_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?"  # noqa: S608
    return [_run_from(r) for r in db.execute(sql, (limit,)).fetchall()]
