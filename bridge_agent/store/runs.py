"""The `runs` table: resumable runs (import, refresh, repair, verification) of one store.

A run keeps a frozen copy of the configuration that started it, its `params` (what the command
that queued it asked for: `force`, `dry_run`, the products of a `verify --product`) and a
checkpoint; the facade writes each checkpoint in the transaction of the page it follows
(`record_page`, `repair_page`), which is what makes runs resumable (guarantee 3): after a crash,
either the page and its checkpoint are both on disk, or neither is and the page is read again.

States: `running` (executing, or queued behind the store's older open run: a store's runs go
one at a time, oldest first), `paused` (the store is paused: `bridge-agent pause`; it resumes
from its checkpoint), `done`, `failed` (gave up, with the error), `cancelled` (replaced by a
`sync --restart`). The executing run reads its own state after each page, which is how a pause
or a restart stops it between pages and never in the middle of one.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
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
    params: dict[str, Any] = field(default_factory=dict)


OPEN_STATES = ("running", "paused")

_COLUMNS = (
    "id, kind, store, state, config, checkpoint, done, total, started_at, updated_at,"
    " finished_at, error, report, params"
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
        params=json.loads(r[13]) if r[13] else {},
    )


def start(
    tx: Transaction,
    kind: str,
    store: str,
    config: dict[str, Any],
    total: int | None = None,
    params: dict[str, Any] | None = None,
) -> int:
    """Queue a run; it starts `paused` when its store is paused (`pause`), else `running`."""
    now = now_ms()
    state = "paused" if is_paused(tx, store) else "running"
    (run_id,) = tx.execute(
        "INSERT INTO runs (kind, store, state, config, params, total, started_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (
            kind,
            store,
            state,
            json.dumps(config, sort_keys=True),
            json.dumps(params or {}, sort_keys=True),
            total,
            now,
            now,
        ),
    ).fetchone()
    return int(run_id)


def state_of(db: sqlite3.Connection, run_id: int) -> str | None:
    """The run's state now (None: no such run): read after each page by the executing run."""
    row = db.execute("SELECT state FROM runs WHERE id=?", (run_id,)).fetchone()
    return None if row is None else str(row[0])


def store_of(tx: Transaction, run_id: int) -> str:
    (store,) = tx.execute("SELECT store FROM runs WHERE id=?", (run_id,)).fetchone()
    return str(store)


# What `sync --restart` replaces: a refresh replaces the catalog reads (an open import or
# refresh), a repair an open repair. A restart never cancels a run of another purpose (the
# repair that follows a first import, a verification).
RESTARTS = {"refresh": ("import", "refresh"), "repair": ("repair",), "verify": ("verify",)}


def cancel_open_except(
    tx: Transaction, store: str, keep: int, why: str, kinds: Sequence[str]
) -> list[Run]:
    """Cancel the store's open runs of `kinds` but `keep` (`sync --restart`); the runs as
    they were."""
    sql = f"SELECT {_COLUMNS} FROM runs WHERE store=? AND id != ? AND state IN {OPEN_STATES}"  # noqa: S608
    found = [_run_from(r) for r in tx.execute(sql + " ORDER BY id", (store, keep)).fetchall()]
    cancelled = [r for r in found if r.kind in kinds]
    now = now_ms()
    tx.executemany(
        "UPDATE runs SET state='cancelled', error=?, updated_at=?, finished_at=? WHERE id=?",
        [(why, now, now, r.id) for r in cancelled],
    )
    return cancelled


# -- pausing a store (`bridge-agent pause | resume`) ---------------------------------------------

_PAUSED = "paused:"  # a `meta` key per paused store; its value is when the pause was asked


def is_paused(db: sqlite3.Connection | Transaction, store: str) -> bool:
    return db.execute("SELECT 1 FROM meta WHERE key=?", (_PAUSED + store,)).fetchone() is not None


def paused_stores(db: sqlite3.Connection) -> dict[str, int]:
    """Paused stores and when each was paused (epoch ms)."""
    rows = db.execute(
        "SELECT substr(key, ?), value FROM meta WHERE key >= ? AND key < ?",
        (len(_PAUSED) + 1, _PAUSED, _PAUSED[:-1] + ";"),
    ).fetchall()
    return {str(store): int(at) for store, at in rows}


def pause(tx: Transaction, store: str) -> bool:
    """Pause the store and its open runs in one transaction; False when it already was."""
    if is_paused(tx, store):
        return False
    tx.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (_PAUSED + store, str(now_ms())))
    tx.execute(
        "UPDATE runs SET state='paused', updated_at=? WHERE store=? AND state='running'",
        (now_ms(), store),
    )
    return True


def resume(tx: Transaction, store: str) -> bool:
    """Resume the store and its paused runs (from their checkpoints); False when not paused."""
    if not tx.execute("DELETE FROM meta WHERE key=?", (_PAUSED + store,)).rowcount:
        return False
    tx.execute(
        "UPDATE runs SET state='running', updated_at=? WHERE store=? AND state='paused'",
        (now_ms(), store),
    )
    return True


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
    # Only a running run ends here: one paused or cancelled between its last page and its end
    # keeps that state (a paused one finishes at resume; a cancelled one stays cancelled).
    tx.execute(
        "UPDATE runs SET state=?, error=?, updated_at=?, finished_at=?,"
        " report=COALESCE(?, report) WHERE id=? AND state='running'",
        (state, error, now, now, None if report is None else json.dumps(report), run_id),
    )


def unfinished(db: sqlite3.Connection, store: str | None) -> list[Run]:
    """Runs not finished (running or paused): what must resume after a restart."""
    sql = f"SELECT {_COLUMNS} FROM runs WHERE state IN {OPEN_STATES}"  # noqa: S608
    args: tuple[str, ...] = ()
    if store is not None:
        sql += " AND store=?"
        args = (store,)
    return [_run_from(r) for r in db.execute(sql + " ORDER BY id", args).fetchall()]


def one(db: sqlite3.Connection, run_id: int) -> Run | None:
    rows = db.execute(f"SELECT {_COLUMNS} FROM runs WHERE id=?", (run_id,)).fetchall()  # noqa: S608
    return _run_from(rows[0]) if rows else None


def last(db: sqlite3.Connection, store: str, kind: str) -> Run | None:
    sql = f"SELECT {_COLUMNS} FROM runs WHERE store=? AND kind=? ORDER BY id DESC LIMIT 1"  # noqa: S608
    rows = db.execute(sql, (store, kind)).fetchall()
    return _run_from(rows[0]) if rows else None


def newest(db: sqlite3.Connection, limit: int) -> list[Run]:
    sql = f"SELECT {_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?"  # noqa: S608
    return [_run_from(r) for r in db.execute(sql, (limit,)).fetchall()]
