"""The state store: the agent's only SQL, in one SQLite file in WAL mode.

Why these durability settings (see also docs/guarantees.md):

- `journal_mode=WAL`: readers (status, health) never block the writer, and a commit is one
  sequential append to the WAL instead of a rewrite of the database pages.
- `synchronous=FULL`: every commit is fsync'ed before `record()` returns. A webhook is answered 2xx
  and a spool file deleted only after that return (guarantee 2); the sender will not send it again,
  so a commit lost to a power cut would be a lost change. NORMAL would survive `kill -9` (the WAL is
  in the OS page cache) but not a power loss. The cost is one fsync per transaction, which is why
  every path here commits in batches: a page of changes, a whole hub reply, never a row at a time.
- One connection, driven by one dedicated thread: SQLite serialises writers anyway, and a single
  thread gives a total order of transactions without locks in our code while keeping fsyncs off the
  event loop.

Integrity errors (a corrupt file, a disk that refuses writes) raise `StateStoreError`: the agent
fails closed rather than guessing what was committed.

Lost state. SQLite keeps writing to an open file after it was deleted or replaced (a restore, an
operator's `rm -rf`, a new disk mounted over the folder): every commit would then go to a file
nobody will ever read again, while webhooks are answered 2xx and spool files deleted. So the store
remembers the identity (device and inode) of the file it opened and checks it before every commit
and in `check()`; a mismatch raises `StateStoreLost`, the commit is rolled back (nothing is
acknowledged on its strength), `/healthz` fails with the reason and the agent stops. `created` says
whether this open created the file: a new, empty state, which the agent announces and repairs
against the hub.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from bridge_agent.errors import StateStoreError, StateStoreLost
from bridge_agent.model import Change
from bridge_agent.store.schema import MIGRATIONS
from bridge_agent.sync.hashing import content_hash

T = TypeVar("T")
DB_NAME = "state.sqlite"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


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
class Hint:
    """A committed hint that a product changed (from a webhook), waiting for its re-fetch."""

    store: str
    id: str
    source: str
    received_at: int  # microseconds; identifies this hint (a newer one replaces it)
    attempts: int = 0


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


@dataclass(frozen=True, slots=True)
class Event:
    at: int
    level: str
    store: str | None
    product: str | None
    status: int | None
    message: str


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


class StateStore:
    """Async facade over the agent's SQLite file. Open with `async with StateStore.open(dir)`."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        executor: ThreadPoolExecutor,
        *,
        created: bool = False,
        identity: tuple[int, int] | None = None,
    ) -> None:
        self._conn = conn
        self.path = path
        self._executor = executor
        self._seq_next: int | None = None  # the seq counter, during a write transaction
        self.created = created  # this open created the file: a new, empty state
        self._identity = identity  # (st_dev, st_ino) of the file opened; None: not checked

    # -- lifecycle -----------------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(cls, state_dir: Path, *, read_only: bool = False) -> AsyncIterator[StateStore]:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-store")
        loop = asyncio.get_running_loop()
        opener = cls.open_read_only if read_only else cls.open_sync
        try:
            store = await loop.run_in_executor(executor, opener, state_dir, executor)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        try:
            yield store
        finally:
            await loop.run_in_executor(executor, store._conn.close)
            executor.shutdown(wait=True)

    @classmethod
    def open_sync(cls, state_dir: Path, executor: ThreadPoolExecutor | None = None) -> StateStore:
        """Open (creating and migrating) the store; for the CLI's one-shot commands too."""
        path = state_dir / DB_NAME
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            created = not path.exists()
            conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            _migrate(conn, path)
            os.chmod(path, 0o600)
            info = os.stat(path)
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot open state store {path}: {exc}") from exc
        except OSError as exc:
            raise StateStoreError(f"cannot create state directory {state_dir}: {exc}") from exc
        return cls(
            conn,
            path,
            executor or ThreadPoolExecutor(max_workers=1),
            created=created,
            identity=(info.st_dev, info.st_ino),
        )

    @classmethod
    def open_read_only(
        cls, state_dir: Path, executor: ThreadPoolExecutor | None = None
    ) -> StateStore:
        """Open for reading only (status while the agent is stopped): never creates or migrates."""
        path = state_dir / DB_NAME
        if not path.exists():
            raise StateStoreError(f"no state store at {path}: the agent has not run here yet")
        try:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
            (version,) = conn.execute("PRAGMA user_version").fetchone()
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot read state store {path}: {exc}") from exc
        if version != len(MIGRATIONS):
            conn.close()
            raise StateStoreError(
                f"state store {path} has schema {version}, this bridge-agent reads"
                f" {len(MIGRATIONS)}: run the matching bridge-agent, or start the agent to migrate"
            )
        return cls(conn, path, executor or ThreadPoolExecutor(max_workers=1))

    def close_sync(self) -> None:
        self._conn.close()
        self._executor.shutdown(wait=False)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StateStoreError(f"state store {self.path}: {exc}") from exc

    # -- recording changes (the ChangeSink) ----------------------------------------------------

    async def record(self, changes: Sequence[Change], *, done_hints: Sequence[Hint] = ()) -> int:
        """Commit changes to the mirror and the outbox in one transaction; returns rows queued.

        A product whose content hash equals the mirror's is not queued (nothing changed). An
        observation older than the mirror's (by platform `updated_at`) is ignored: latest wins.
        `done_hints` are deleted in the same transaction (unless a newer hint replaced them).
        """
        return await self._run(self._record, changes, done_hints)

    def _record(self, changes: Sequence[Change], done_hints: Sequence[Hint] = ()) -> int:
        prepared = [(c, _encode(c)) for c in changes]  # hashing outside the write lock
        with self._write() as db:
            queued = sum(self._record_one(db, c, data, h) for c, (data, h) in prepared)
            db.executemany(
                "DELETE FROM hints WHERE store=? AND id=? AND received_at=?",
                [(h.store, h.id, h.received_at) for h in done_hints],
            )
            return queued

    # -- hints (webhooks) ----------------------------------------------------------------------

    async def add_hints(self, store: str, ids: Sequence[str], source: str) -> int:
        """Commit hints that these products changed; the webhook may be answered after this."""

        def write() -> int:
            now = time.time_ns() // 1000  # microseconds: a new hint must differ from the last
            with self._write() as db:
                db.executemany(
                    "INSERT INTO hints (store, id, source, received_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (store, id) DO UPDATE SET received_at=excluded.received_at,"
                    " source=excluded.source, next_at=0",
                    [(store, i, source, now + n) for n, i in enumerate(ids)],
                )
            return len(ids)

        return await self._run(write)

    async def due_hints(self, store: str, *, limit: int = 100) -> list[Hint]:
        rows = await self._run(
            lambda: self._conn.execute(
                "SELECT store, id, source, received_at, attempts FROM hints"
                " WHERE store=? AND next_at<=? ORDER BY received_at LIMIT ?",
                (store, now_ms(), limit),
            ).fetchall()
        )
        return [Hint(*r) for r in rows]

    async def defer_hints(self, hints: Sequence[Hint], *, error: str, delay: float) -> None:
        """Leave hints whose re-fetch failed for a later try."""

        def write() -> None:
            until = now_ms() + int(delay * 1000)
            with self._write() as db:
                db.executemany(
                    "UPDATE hints SET attempts=attempts+1, last_error=?, next_at=?"
                    " WHERE store=? AND id=? AND received_at=?",
                    [(error, until, h.store, h.id, h.received_at) for h in hints],
                )

        await self._run(write)

    async def hint_count(self, store: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM hints", tuple[str, ...]()
        if store is not None:
            sql, args = sql + " WHERE store=?", (store,)
        row = await self._run(lambda: self._conn.execute(sql, args).fetchone())
        return int(row[0])

    def _record_one(
        self, db: sqlite3.Connection, change: Change, data: bytes | None, hash_: str | None
    ) -> int:
        row = db.execute(
            "SELECT hash, deleted, updated_at FROM mirror WHERE store=? AND id=?",
            change.key,
        ).fetchone()
        updated_at = change.product.updated_at if change.product else None
        if row is not None:
            old_hash, old_deleted, old_updated = row
            if change.product is None and old_deleted:
                return 0
            if change.product is not None and not old_deleted and old_hash == hash_:
                return 0
            if _older(updated_at, old_updated):
                return 0
        elif change.product is None:
            return 0  # never seen, never shipped: there is nothing to delete at the hub
        db.execute(
            "INSERT INTO mirror (store, id, data, hash, deleted, updated_at, sku, recorded_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (store, id) DO UPDATE SET data=excluded.data, hash=excluded.hash,"
            " deleted=excluded.deleted, updated_at=COALESCE(excluded.updated_at, updated_at),"
            " sku=excluded.sku,"
            " recorded_at=excluded.recorded_at,"
            # The hub held the current state (acked_data NULL means "same as data"): keep a copy
            # of it as the patch base before `data` moves on. SET reads the row's old values.
            " acked_data=CASE WHEN acked_data IS NULL AND acked_hash IS NOT NULL"
            " AND acked_hash = hash THEN data ELSE acked_data END",
            (
                *change.key,
                data,
                hash_,
                int(change.product is None),
                updated_at,
                change.product.sku if change.product else None,
                now_ms(),
            ),
        )
        self._dirty(db, change.store, change.product_id, change.source, change.observed_at)
        return 1

    def _dirty(
        self, db: sqlite3.Connection, store: str, id_: str, source: str, observed_at: int
    ) -> int:
        """Queue (or re-queue) one product with a fresh seq; the row's first_at is kept."""
        seq = self._take_seq(db)
        db.execute(
            "INSERT INTO outbox (store, id, seq, source, observed_at, first_at, first_seq)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (store, id) DO UPDATE SET seq=excluded.seq, source=excluded.source,"
            " observed_at=excluded.observed_at, state='pending', attempts=0, last_error=NULL",
            (store, id_, seq, source, observed_at, now_ms(), seq),
        )
        return seq

    def _take_seq(self, db: sqlite3.Connection) -> int:
        """A new agent-wide seq, inside the current write transaction.

        The counter lives in the database, not in this object: `bridge-agent outbox retry`
        writes from another process while the agent runs, and two writers must never hand out
        one seq. It is read once per transaction and written back just before COMMIT (see
        `_write`); SQLite's write lock makes that read-modify-write atomic.
        """
        if self._seq_next is None:
            row = db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
            self._seq_next = 1 if row is None else int(row[0])
        seq = self._seq_next
        self._seq_next += 1
        return seq

    def _flush_seq(self, db: sqlite3.Connection) -> None:
        if self._seq_next is not None:
            self._meta_set(db, "next_seq", str(self._seq_next))

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (autocommit connection)."""
        db = self._conn
        db.execute("BEGIN IMMEDIATE")
        self._seq_next = None
        try:
            yield db
            self._flush_seq(db)
            self._check_identity()  # never commit into a file that is no longer the state
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            self._seq_next = None

    # -- shipping ------------------------------------------------------------------------------

    async def due(self, limit: int) -> list[DueItem]:
        """Pending rows, oldest first, joined with what the shipper needs to build items."""
        return await self._run(self._due, limit)

    def _due(self, limit: int) -> list[DueItem]:
        rows = self._conn.execute(
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

    async def settle(self, settlements: Sequence[Settlement], *, error: str | None = None) -> None:
        """Record the hub's answers for one batch in one transaction.

        Every update is conditioned on the seq that was sent: a row re-dirtied while in flight
        keeps its new content pending, whatever the hub said about the old one.
        """
        await self._run(self._settle, settlements, error)

    def _settle(self, settlements: Sequence[Settlement], error: str | None) -> None:
        now = now_ms()
        acked = [s for s in settlements if s.outcome == "ok"]
        with self._write() as db:
            # The hub holds `hash` now, even if the row was re-dirtied meanwhile: the next patch
            # must be computed against what the hub really has. While the mirror still holds
            # what was sent (the usual case), the base is the current data: record only the
            # hash (acked_data NULL, see schema.py). The common case goes in two statements.
            db.executemany(
                "UPDATE mirror SET acked_hash=?1, acked_data=CASE WHEN hash IS ?1"
                " THEN NULL ELSE ?2 END WHERE store=?3 AND id=?4",
                [(s.hash, s.data, s.store, s.id) for s in acked],
            )
            db.executemany(
                "DELETE FROM outbox WHERE store=? AND id=? AND seq=?",
                [(s.store, s.id, s.seq) for s in acked],
            )
            for s in settlements:
                key = (s.store, s.id)
                if s.outcome == "ok":
                    continue
                if s.outcome == "need_full":
                    db.execute(
                        "UPDATE mirror SET acked_hash=NULL, acked_data=NULL WHERE store=? AND id=?",
                        key,
                    )
                    # A new seq: the hub is idempotent on (agent, seq) and would replay
                    # need_full for the old one.
                    if db.execute(
                        "SELECT 1 FROM outbox WHERE store=? AND id=? AND seq=?", (*key, s.seq)
                    ).fetchone():
                        db.execute(
                            "UPDATE outbox SET seq=? WHERE store=? AND id=?",
                            (self._take_seq(db), *key),
                        )
                elif s.outcome == "rejected":
                    db.execute(
                        "UPDATE outbox SET state='rejected', last_error=?, attempts=attempts+1"
                        " WHERE store=? AND id=? AND seq=?",
                        (s.reason, *key, s.seq),
                    )
                    db.execute(
                        "INSERT INTO events (at, level, store, product, status, message)"
                        " VALUES (?, 'error', ?, ?, NULL, ?)",
                        (now, *key, f"hub rejected the product: {s.reason}"),
                    )
                else:
                    db.execute(
                        "UPDATE outbox SET attempts=attempts+1, last_error=?"
                        " WHERE store=? AND id=? AND seq=?",
                        (s.reason or error, *key, s.seq),
                    )
            if acked:
                self._meta_set(db, "last_shipment_at", str(now))

    async def stats(self) -> OutboxStats:
        return await self._run(self._stats)

    def _stats(self) -> OutboxStats:
        pending, rejected, oldest = self._conn.execute(
            "SELECT COALESCE(SUM(state='pending'), 0), COALESCE(SUM(state='rejected'), 0),"
            " MIN(CASE WHEN state='pending' THEN first_at END) FROM outbox"
        ).fetchone()
        return OutboxStats(pending=pending, rejected=rejected, oldest_pending_at=oldest)

    async def outbox_rows(self, *, state: str | None = None, limit: int = 100) -> list[OutboxRow]:
        return await self._run(self._outbox_rows, state, limit)

    def _outbox_rows(self, state: str | None, limit: int) -> list[OutboxRow]:
        sql = "SELECT store, id, seq, state, source, first_at, attempts, last_error FROM outbox"
        args: tuple[Any, ...] = ()
        if state is not None:
            sql += " WHERE state=?"
            args = (state,)
        rows = self._conn.execute(sql + " ORDER BY first_seq LIMIT ?", (*args, limit))
        return [OutboxRow(*r) for r in rows.fetchall()]

    async def retry_rejected(self, keys: Iterable[tuple[str, str]] | None = None) -> int:
        """Put rejected rows back in line (all, or those keys) as full upserts; returns count."""
        return await self._run(self._retry_rejected, None if keys is None else list(keys))

    def _retry_rejected(self, keys: list[tuple[str, str]] | None) -> int:
        with self._write() as db:
            found = db.execute("SELECT store, id FROM outbox WHERE state='rejected'").fetchall()
            chosen = [tuple(k) for k in found if keys is None or tuple(k) in set(keys)]
            for store, id_ in chosen:
                db.execute(
                    "UPDATE mirror SET acked_hash=NULL, acked_data=NULL WHERE store=? AND id=?",
                    (store, id_),
                )
                db.execute(
                    "UPDATE outbox SET state='pending', seq=?, attempts=0, last_error=NULL"
                    " WHERE store=? AND id=?",
                    (self._take_seq(db), store, id_),
                )
            return len(chosen)

    # -- mirror --------------------------------------------------------------------------------

    async def mirror_hash(self, store: str, id_: str) -> str | None:
        row = await self._run(
            lambda: self._conn.execute(
                "SELECT hash FROM mirror WHERE store=? AND id=? AND deleted=0", (store, id_)
            ).fetchone()
        )
        return None if row is None else str(row[0])

    async def mirror_ids(self, store: str) -> set[str]:
        """Ids of the products the mirror holds as existing (reconciliation compares them)."""
        rows = await self._run(
            lambda: self._conn.execute(
                "SELECT id FROM mirror WHERE store=? AND deleted=0", (store,)
            ).fetchall()
        )
        return {str(r[0]) for r in rows}

    async def duplicate_skus(self, store: str, *, limit: int = 100) -> list[tuple[str, int]]:
        """SKUs held by more than one existing product of the store, with how many."""
        rows = await self._run(
            lambda: self._conn.execute(
                "SELECT sku, COUNT(*) FROM mirror WHERE store=? AND deleted=0 AND sku IS NOT NULL"
                " AND sku != '' GROUP BY sku HAVING COUNT(*) > 1 ORDER BY sku LIMIT ?",
                (store, limit),
            ).fetchall()
        )
        return [(str(r[0]), int(r[1])) for r in rows]

    async def mirror_count(self, store: str | None = None) -> int:
        sql = "SELECT COUNT(*) FROM mirror WHERE deleted=0"
        args: tuple[str, ...] = () if store is None else (store,)
        if store is not None:
            sql += " AND store=?"
        row = await self._run(lambda: self._conn.execute(sql, args).fetchone())
        return int(row[0])

    # -- cursors -------------------------------------------------------------------------------

    async def cursor(self, store: str, stream: str) -> str | None:
        row = await self._run(
            lambda: self._conn.execute(
                "SELECT value FROM cursors WHERE store=? AND stream=?", (store, stream)
            ).fetchone()
        )
        return None if row is None else str(row[0])

    async def set_cursor(self, store: str, stream: str, value: str) -> None:
        def write() -> None:
            with self._write() as db:
                db.execute(
                    "INSERT INTO cursors (store, stream, value, updated_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (store, stream) DO UPDATE SET value=excluded.value,"
                    " updated_at=excluded.updated_at",
                    (store, stream, value, now_ms()),
                )

        await self._run(write)

    # -- runs ----------------------------------------------------------------------------------

    async def start_run(
        self, kind: str, store: str, config: dict[str, Any], *, total: int | None = None
    ) -> int:
        def write() -> int:
            now = now_ms()
            with self._write() as db:
                cur = db.execute(
                    "INSERT INTO runs (kind, store, state, config, total, started_at, updated_at)"
                    " VALUES (?, ?, 'running', ?, ?, ?, ?)",
                    (kind, store, json.dumps(config, sort_keys=True), total, now, now),
                )
                assert cur.lastrowid is not None
                return cur.lastrowid

        return await self._run(write)

    async def open_runs(self, store: str | None = None) -> list[Run]:
        """Runs that were not finished (running or paused): what must resume after a restart."""
        sql = f"SELECT {_RUN_COLUMNS} FROM runs WHERE state IN ('running', 'paused')"  # noqa: S608
        args: tuple[str, ...] = ()
        if store is not None:
            sql += " AND store=?"
            args = (store,)
        rows = await self._run(lambda: self._conn.execute(sql + " ORDER BY id", args).fetchall())
        return [_run_from(r) for r in rows]

    async def last_run(self, store: str, kind: str) -> Run | None:
        sql = f"SELECT {_RUN_COLUMNS} FROM runs WHERE store=? AND kind=? ORDER BY id DESC LIMIT 1"  # noqa: S608
        rows = await self._run(lambda: self._conn.execute(sql, (store, kind)).fetchall())
        return _run_from(rows[0]) if rows else None

    async def runs(self, limit: int = 20) -> list[Run]:
        sql = f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY id DESC LIMIT ?"  # noqa: S608
        rows = await self._run(lambda: self._conn.execute(sql, (limit,)).fetchall())
        return [_run_from(r) for r in rows]

    async def record_page(
        self,
        changes: Sequence[Change],
        *,
        run_id: int,
        checkpoint: dict[str, Any],
        done: int,
        total: int | None = None,
    ) -> int:
        """Record a page of changes and the run checkpoint after it in one transaction.

        That is what makes runs resumable (guarantee 3): after a crash, either the page and its
        checkpoint are both on disk, or neither is and the page is fetched again.
        """

        def write() -> int:
            prepared = [(c, _encode(c)) for c in changes]
            with self._write() as db:
                queued = sum(self._record_one(db, c, data, h) for c, (data, h) in prepared)
                db.execute(
                    "UPDATE runs SET checkpoint=?, done=?, total=COALESCE(?, total),"
                    " updated_at=? WHERE id=?",
                    (json.dumps(checkpoint, sort_keys=True), done, total, now_ms(), run_id),
                )
                return queued

        return await self._run(write)

    async def finish_run(
        self,
        run_id: int,
        *,
        state: str = "done",
        error: str | None = None,
        report: dict[str, Any] | None = None,
    ) -> None:
        def write() -> None:
            now = now_ms()
            with self._write() as db:
                db.execute(
                    "UPDATE runs SET state=?, error=?, updated_at=?, finished_at=?,"
                    " report=COALESCE(?, report) WHERE id=?",
                    (
                        state,
                        error,
                        now,
                        now,
                        None if report is None else json.dumps(report),
                        run_id,
                    ),
                )

        await self._run(write)

    # -- events --------------------------------------------------------------------------------

    async def log_event(
        self,
        message: str,
        *,
        level: str = "info",
        store: str | None = None,
        product: str | None = None,
        status: int | None = None,
    ) -> None:
        def write() -> None:
            with self._write() as db:
                db.execute(
                    "INSERT INTO events (at, level, store, product, status, message)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (now_ms(), level, store, product, status, message),
                )

        await self._run(write)

    async def events(
        self,
        limit: int = 50,
        *,
        levels: Iterable[str] | None = None,
        stores: Iterable[str] | None = None,
    ) -> list[Event]:
        """The newest `limit` events, newest first; only those of `levels` and `stores` if given."""
        wanted = [None if v is None else json.dumps(list(v)) for v in (levels, stores)]
        rows = await self._run(
            lambda: self._conn.execute(
                "SELECT at, level, store, product, status, message FROM events"
                " WHERE (?1 IS NULL OR level IN (SELECT value FROM json_each(?1)))"
                " AND (?2 IS NULL OR store IN (SELECT value FROM json_each(?2)))"
                " ORDER BY id DESC LIMIT ?3",
                (*wanted, limit),
            ).fetchall()
        )
        return [Event(*r) for r in rows]

    # -- repair against the hub (sources/repair.py) --------------------------------------------

    async def start_runs(
        self, store: str, kinds: Sequence[str], config: dict[str, Any]
    ) -> list[int]:
        """Queue several runs in one transaction (the first import and its repair): a crash
        between them must not leave the import without the repair that follows it."""

        def write() -> list[int]:
            now = now_ms()
            with self._write() as db:
                return [
                    db.execute(
                        "INSERT INTO runs (kind, store, state, config, started_at, updated_at)"
                        " VALUES (?, ?, 'running', ?, ?, ?) RETURNING id",
                        (kind, store, json.dumps(config, sort_keys=True), now, now),
                    ).fetchone()[0]
                    for kind in kinds
                ]

        return await self._run(write)

    async def raise_seq_to_clock(self) -> int:
        """Move the seq counter up to the clock (epoch ms x 1000) unless it is there already.

        At every start (`Agent.run`) and for a new state (`Importer.start_first_import`): a new
        state's counter would start again at 1, a restored one's where the backup stood,
        and the hub is idempotent on (agent, seq): a seq that an earlier life of this agent used
        gets the remembered answer of that other item without being applied. A `delete` of
        another product even looks the same (op delete, no hash), so a repair's deletion would
        be answered `ok` and never happen. A life used fewer than 1000 seqs per millisecond it
        ran, so the clock is past every seq it took. Returns the next seq.
        """

        def write() -> int:
            floor = time.time_ns() // 1000  # epoch ms x 1000
            with self._write() as db:
                row = db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
                current = 1 if row is None else int(row[0])
                if current < floor:
                    self._meta_set(db, "next_seq", str(floor))
                return max(current, floor)

        return await self._run(write)

    async def repair_mirror(
        self, store: str, *, after: str, upto: str | None, limit: int
    ) -> list[MirrorState]:
        """Mirror rows with `after` < id <= `upto` (no upper bound when None), by id, at most
        `limit`, with their outbox state: one slice of the mirror for a repair run to compare
        with the same range of the hub's ids. The data columns are not read."""
        sql = (
            "SELECT m.id, m.hash, m.deleted, m.acked_hash, o.state FROM mirror m"
            " LEFT JOIN outbox o ON o.store = m.store AND o.id = m.id"
            " WHERE m.store=? AND m.id > ?"
        )
        args: tuple[Any, ...] = (store, after)
        if upto is not None:
            sql, args = sql + " AND m.id <= ?", (*args, upto)
        rows = await self._run(
            lambda: self._conn.execute(sql + " ORDER BY m.id LIMIT ?", (*args, limit)).fetchall()
        )
        return [MirrorState(r[0], r[1], bool(r[2]), r[3], r[4]) for r in rows]

    async def repair_page(
        self,
        store: str,
        repairs: Repairs,
        *,
        run_id: int,
        checkpoint: dict[str, Any],
        done: int,
    ) -> int:
        """Apply one slice of a repair run and its checkpoint in one transaction; rows queued.

        Every write is conditioned on what the run read (hash, deleted, acked hash; no row at
        all for `delete`): a product that another source recorded meanwhile keeps its newer
        state, and at worst is sent once more. Crash-safe like `record_page` (guarantee 3).
        """

        def write() -> int:
            prepared = [(c, _encode(c)) for c in repairs.changes]
            observed = now_ms()
            with self._write() as db:
                queued = sum(self._record_one(db, c, data, h) for c, (data, h) in prepared)
                for id_ in repairs.delete:
                    # Never seen by this mirror, so `_record_one` would drop the deletion
                    # ("never seen, never shipped"); the hub has the product, so it must go.
                    inserted = db.execute(
                        "INSERT INTO mirror (store, id, data, hash, deleted, recorded_at)"
                        " VALUES (?, ?, NULL, NULL, 1, ?) ON CONFLICT (store, id) DO NOTHING",
                        (store, id_, observed),
                    ).rowcount
                    if inserted:
                        self._dirty(db, store, id_, repairs.source, observed)
                        queued += 1
                for id_, hash_, deleted, acked in repairs.resend:
                    # Without a base the shipper sends the whole product (or the delete again).
                    changed = db.execute(
                        "UPDATE mirror SET acked_hash=NULL, acked_data=NULL WHERE store=? AND id=?"
                        " AND hash IS ? AND deleted=? AND acked_hash IS ?",
                        (store, id_, hash_, int(deleted), acked),
                    ).rowcount
                    if changed:
                        self._dirty(db, store, id_, repairs.source, observed)
                        queued += 1
                db.executemany(
                    # The hub holds the current data: a patch base, and a pending row for the
                    # same content settles without being sent (acked_data NULL, see schema.py).
                    "UPDATE mirror SET acked_hash=hash, acked_data=NULL WHERE store=? AND id=?"
                    " AND hash=? AND deleted=0 AND acked_hash IS ?",
                    [(store, id_, hash_, acked) for id_, hash_, acked in repairs.acked],
                )
                db.execute(
                    "UPDATE runs SET checkpoint=?, done=?, updated_at=? WHERE id=?",
                    (json.dumps(checkpoint, sort_keys=True), done, now_ms(), run_id),
                )
                return queued

        return await self._run(write)

    # -- meta ----------------------------------------------------------------------------------

    async def meta(self, key: str) -> str | None:
        return await self._run(self._meta_get, key)

    def _meta_get(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _meta_set(db: sqlite3.Connection, key: str, value: str) -> None:
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    async def check(self) -> None:
        """A cheap read that fails if the database is unusable or its file was lost (/healthz)."""

        def read() -> None:
            self._check_identity()
            self._conn.execute("SELECT COUNT(*) FROM meta").fetchone()

        await self._run(read)

    def _check_identity(self) -> None:
        """Raise StateStoreLost when the file at `path` is no longer the one this store opened."""
        if self._identity is None:
            return
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            raise StateStoreLost(
                f"state store {self.path} was removed while the agent runs: stopping so that "
                "nothing more is acknowledged into a deleted file; the next start creates a new "
                "state, imports the catalog and repairs the hub against it"
            ) from None
        except OSError as exc:
            raise StateStoreLost(
                f"state store {self.path} cannot be checked: {exc.strerror or exc}"
            ) from None
        if (info.st_dev, info.st_ino) != self._identity:
            raise StateStoreLost(
                f"state store {self.path} was replaced by another file while the agent runs "
                "(a restore or a copy over it): stopping; the next start opens the new file"
            )


@dataclass(frozen=True, slots=True)
class MirrorState:
    """One mirror row as a repair run compares it with the hub (no data)."""

    id: str
    hash: str | None
    deleted: bool
    acked_hash: str | None
    outbox: str | None  # the outbox row's state ("pending", "rejected"), None when none


@dataclass(frozen=True, slots=True)
class Repairs:
    """What one slice of a repair run writes (`StateStore.repair_page`)."""

    source: str = "repair"
    changes: Sequence[Change] = ()  # re-fetched products (or deletions), recorded as usual
    delete: Sequence[str] = ()  # ids the mirror never saw, gone from the store, live at the hub
    resend: Sequence[tuple[str, str | None, bool, str | None]] = ()  # (id, hash, deleted, acked)
    acked: Sequence[tuple[str, str, str | None]] = ()  # (id, hash the hub holds, acked seen)


_RUN_COLUMNS = (
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


def _encode(change: Change) -> tuple[bytes | None, str | None]:
    if change.product is None:
        return None, None
    data = change.product.to_dict()
    return msgpack.packb(data, use_bin_type=True), content_hash(data)


def _older(new: str | None, old: str | None) -> bool:
    """True when `new` is a strictly older platform time than `old` (both ISO 8601)."""
    if not new or not old:
        return False
    try:
        return datetime.fromisoformat(new) < datetime.fromisoformat(old)
    except (ValueError, TypeError):
        return False  # an unparseable time is no reason to drop a change


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise StateStoreError(
            f"state store {path} has schema {version}, newer than this bridge-agent knows"
            f" ({len(MIGRATIONS)}): upgrade bridge-agent or restore a backup of the state directory"
        )
    for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={target}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
