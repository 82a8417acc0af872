"""The reference hub's SQLite database: every SQL statement of the hub lives here.

One connection, owned by one worker thread (a single-thread executor). Every call goes through
that thread, so calls are serialised without a lock, the event loop never blocks on disk, and
SQLite's own locking never sees two writers. The database runs in WAL mode with
`synchronous=NORMAL`: a commit survives a crash of the hub process, and only an OS crash or a
power cut can lose the last commits, which at-least-once agents send again anyway.

A batch is one transaction (`BEGIN IMMEDIATE`, so it never has to upgrade a read lock): prefetch
the products and remembered sequence numbers it mentions with one query each (the ids travel as a
JSON array through `json_each`, so a batch of any size is one statement), run the pure rules of
`ingest.py`, then write with `executemany`. Any exception rolls the whole batch back.

Schema (migrations keyed on `PRAGMA user_version`; append, never edit a released one):

- `products`: the hub's copy of each product, `(store, id)` unique. `data` is the canonical product
  as msgpack (`ingest.pack_data`: a quarter of the CPU of JSON text to write, 60 % to read back
  as a patch base; the inspection API converts it to JSON), last so that reading the small
  columns before it never has to step over it. `hash` is its content hash (NULL only for
  the tombstone of a product deleted before it was ever seen), `deleted` 0/1 with the last data
  kept, `updated_at` epoch ms of the last change, `agent` and `seq` of the item that made it. A
  rowid table, because rows carry hundreds of bytes to kilobytes (SQLite advises WITHOUT ROWID
  only for small rows).
- `seqs`: the memory behind idempotence on `(agent, seq)`: the `op` and `hash` of the change
  processed under that seq and the `status`/`reason` answered. Bounded: each batch forgets the
  agent's seqs more than `seq_memory` (100 000) below its highest one, a range delete on the
  primary key. Replays come from retries of batches in flight, a few thousand seqs at most;
  an older one that comes back is simply processed again, and idempotence on `(store, id, hash)`
  gives the same end state (an upsert of the stored hash changes nothing; a patch whose base is
  gone gets `need_full`).
- `stats`: counters (`batches`, `items`, `replays`, `status.<s>`, `op.<op>`, ...) for tests, the
  benchmark and operators.
- `optimizations`: the downstream queue. `cursor` (AUTOINCREMENT, so never reused, even after the
  newest row is deleted) orders the feed; `id` is what agents report results against; `status`,
  `detail`, `hash` and `reported_at` hold the last result an agent reported (a `rolled_back`
  after an `applied`: the agent reports in that order, so the last one is the store's state).
- `verified` (version 2): when an agent last confirmed that the hub's copy of a product is what the
  store has, `(store, id)` unique, `verified_at` epoch ms and never moved backwards (`max`). Set by
  verification markers (`POST .../verified`) and by batch items of source `verify` answered `ok`.
  A table of its own rather than a column of `products`: SQLite rewrites a whole row to update
  one column, so a sweep over 100 000 products would rewrite all their data (kilobytes each,
  after which a new column would sit) to change 8 bytes; here each marker is a small row in a
  WITHOUT ROWID b-tree. The inspection API joins it in.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from bridge_agent.hub.ingest import Remembered, Stored, plan_batch, unpack_data
from bridge_agent.wire import Batch, Optimization, OptimizationResult, Result

P = ParamSpec("P")
T = TypeVar("T")

SEQ_MEMORY = 100_000  # seqs remembered per agent, below its highest (see `seqs` above)

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE products (
        store      TEXT NOT NULL,
        id         TEXT NOT NULL,
        hash       TEXT,
        deleted    INTEGER NOT NULL DEFAULT 0,
        updated_at INTEGER NOT NULL,
        agent      TEXT NOT NULL,
        seq        INTEGER NOT NULL,
        data       BLOB NOT NULL,
        PRIMARY KEY (store, id)
    );

    CREATE TABLE seqs (
        agent  TEXT NOT NULL,
        seq    INTEGER NOT NULL,
        op     TEXT NOT NULL,
        hash   TEXT,
        status TEXT NOT NULL,
        reason TEXT,
        PRIMARY KEY (agent, seq)
    ) WITHOUT ROWID;

    CREATE TABLE stats (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE optimizations (
        cursor      INTEGER PRIMARY KEY AUTOINCREMENT,
        id          TEXT NOT NULL UNIQUE,
        store       TEXT NOT NULL,
        product     TEXT NOT NULL,
        fields      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        status      TEXT,
        detail      TEXT,
        hash        TEXT,
        reported_at INTEGER
    );
    CREATE INDEX optimizations_feed ON optimizations (store, cursor);
    """,
    """
    CREATE TABLE verified (
        store       TEXT NOT NULL,
        id          TEXT NOT NULL,
        verified_at INTEGER NOT NULL,
        PRIMARY KEY (store, id)
    ) WITHOUT ROWID;
    """,
)

# CROSS JOIN makes SQLite loop over the batch's ids and probe the primary key for each; with a
# plain JOIN its planner scans every row of the store (or agent) once per id instead.
_SELECT_PRODUCTS = """
    SELECT p.id, p.hash, p.deleted FROM json_each(?) AS j
    CROSS JOIN products AS p ON p.store = ? AND p.id = j.value
"""
_SELECT_PRODUCTS_WITH_DATA = """
    SELECT p.id, p.hash, p.deleted, p.data FROM json_each(?) AS j
    CROSS JOIN products AS p ON p.store = ? AND p.id = j.value
"""
_SELECT_SEQS = """
    SELECT s.seq, s.op, s.hash, s.status, s.reason FROM json_each(?) AS j
    CROSS JOIN seqs AS s ON s.agent = ? AND s.seq = j.value
"""
_UPSERT_PRODUCT = """
    INSERT INTO products (store, id, hash, data, deleted, updated_at, agent, seq)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (store, id) DO UPDATE SET
        hash = excluded.hash, data = excluded.data, deleted = excluded.deleted,
        updated_at = excluded.updated_at, agent = excluded.agent, seq = excluded.seq
"""
_MARK_DELETED = """
    UPDATE products SET deleted = 1, updated_at = ?, agent = ?, seq = ? WHERE store = ? AND id = ?
"""
_REMEMBER = """
    INSERT INTO seqs (agent, seq, op, hash, status, reason) VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (agent, seq) DO UPDATE SET
        op = excluded.op, hash = excluded.hash, status = excluded.status, reason = excluded.reason
"""
_FORGET = "DELETE FROM seqs WHERE agent = ? AND seq < ?"
_COUNT = """
    INSERT INTO stats (key, value) VALUES (?, ?)
    ON CONFLICT (key) DO UPDATE SET value = value + excluded.value
"""
_VERIFIED = """
    INSERT INTO verified (store, id, verified_at) VALUES (?, ?, ?)
    ON CONFLICT (store, id) DO UPDATE SET verified_at = max(verified_at, excluded.verified_at)
"""
# The inspection API's columns: the product and, joined in, when it was last verified.
_PRODUCT_SELECT = """
    SELECT p.id, p.hash, p.deleted, p.data, p.updated_at, p.agent, p.seq, v.verified_at
    FROM products AS p LEFT JOIN verified AS v ON v.store = p.store AND v.id = p.id
"""


@dataclass(frozen=True, slots=True)
class ProductRecord:
    """A product as the inspection API shows it."""

    id: str
    hash: str | None
    deleted: bool
    data: dict[str, Any]
    updated_at: int
    agent: str
    seq: int
    verified_at: int | None = None  # when an agent last confirmed it (None: never)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "hash": self.hash,
            "deleted": self.deleted,
            "data": self.data,
            "updated_at": self.updated_at,
            "agent": self.agent,
            "seq": self.seq,
            "verified_at": self.verified_at,
        }


@dataclass(frozen=True, slots=True)
class OptimizationRecord:
    """An enqueued optimization and the last result an agent reported for it."""

    id: str
    store: str
    product: str
    fields: dict[str, Any]
    created_at: int
    cursor: int
    status: str | None
    detail: str | None
    hash: str | None
    reported_at: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "store": self.store,
            "product": self.product,
            "fields": self.fields,
            "created_at": self.created_at,
            "cursor": str(self.cursor),
            # "queued" until an agent reports; the reported statuses are wire.OPT_STATUSES.
            "status": self.status or "queued",
            "detail": self.detail,
            "hash": self.hash,
            "reported_at": self.reported_at,
        }


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class HubDB:
    """The hub's state. Open with `await HubDB.open(path)`, close with `await db.close()`.

    Every public coroutine runs its SQL on the database thread; the `_sync` methods are that
    thread's side and must not be called from the event loop.
    """

    def __init__(
        self, executor: ThreadPoolExecutor, conn: sqlite3.Connection, seq_memory: int
    ) -> None:
        self._executor = executor
        self._conn = conn
        self._seq_memory = seq_memory

    @classmethod
    async def open(cls, path: Path, *, seq_memory: int = SEQ_MEMORY) -> HubDB:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-db")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(executor, _connect, path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(executor, conn, seq_memory)

    async def close(self) -> None:
        try:
            await self._run(self._conn.close)
        finally:
            self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    # -- upstream ---------------------------------------------------------------------------------

    async def apply_batch(self, batch: Batch) -> list[Result]:
        """Apply a batch in one transaction; one result per item, in order (see ingest.py)."""
        return await self._run(self._apply_batch_sync, batch)

    def _apply_batch_sync(self, batch: Batch) -> list[Result]:
        conn = self._conn
        with _transaction(conn):
            products = self._load_products(batch)
            memory = self._load_memory(batch)
            plan = plan_batch(batch, products, memory, now_ms())
            if plan.products:
                conn.executemany(_UPSERT_PRODUCT, plan.products)
            if plan.tombstones:
                conn.executemany(_MARK_DELETED, plan.tombstones)
            if plan.memory:
                conn.executemany(_REMEMBER, plan.memory)
                highest = max(item.seq for item in batch.items)
                conn.execute(_FORGET, (batch.agent, highest - self._seq_memory))
            if any(item.source == "verify" for item in batch.items):
                conn.executemany(_VERIFIED, _verified_by_batch(batch, products))
            _count(conn, plan.counts)
        return plan.results

    def _load_products(self, batch: Batch) -> dict[tuple[str, str], Stored]:
        # Only patches need the stored data (their base); loading it for every product would
        # read kilobytes per item for nothing.
        plain: dict[str, set[str]] = {}
        patched: dict[str, set[str]] = {}
        for item in batch.items:
            (patched if item.op == "patch" else plain).setdefault(item.store, set()).add(item.id)
        out: dict[tuple[str, str], Stored] = {}
        for store, ids in patched.items():
            rows = self._conn.execute(_SELECT_PRODUCTS_WITH_DATA, (json.dumps(list(ids)), store))
            for pid, hash_, deleted, data in rows:
                out[store, pid] = Stored(hash_, bool(deleted), data)
        for store, ids in plain.items():
            ids.difference_update(patched.get(store, ()))
            if not ids:
                continue
            rows = self._conn.execute(_SELECT_PRODUCTS, (json.dumps(list(ids)), store))
            for pid, hash_, deleted in rows:
                out[store, pid] = Stored(hash_, bool(deleted), None)
        return out

    def _load_memory(self, batch: Batch) -> dict[int, Remembered]:
        seqs = json.dumps([item.seq for item in batch.items])
        rows = self._conn.execute(_SELECT_SEQS, (seqs, batch.agent))
        return {row[0]: row[1:] for row in rows}

    async def verify(
        self, store: str, verified_at: int, items: Sequence[tuple[str, str]]
    ) -> tuple[int, list[str]]:
        """Confirm (id, hash) markers of `store` in one transaction: (items confirmed, ids not).

        An item is confirmed when the hub holds that hash for the product and it is not deleted;
        each confirmed product's `verified_at` becomes `verified_at` unless it is already later.
        Each item is judged on its own (an id sent twice counts twice, and with two hashes it can
        be confirmed and mismatched at once); the mismatched ids come once each, in request order.
        """
        return await self._run(self._verify_sync, store, verified_at, items)

    def _verify_sync(
        self, store: str, verified_at: int, items: Sequence[tuple[str, str]]
    ) -> tuple[int, list[str]]:
        conn = self._conn
        with _transaction(conn):
            ids = json.dumps(list({pid: None for pid, _ in items}))
            held = {
                pid: hash_
                for pid, hash_, deleted in conn.execute(_SELECT_PRODUCTS, (ids, store))
                if not deleted
            }
            confirmed: dict[str, None] = {}
            mismatched: dict[str, None] = {}
            count = 0
            for pid, hash_ in items:
                if held.get(pid) == hash_:
                    confirmed[pid] = None
                    count += 1
                else:
                    mismatched[pid] = None
            if confirmed:
                conn.executemany(_VERIFIED, [(store, pid, verified_at) for pid in confirmed])
            _count(
                conn,
                {"verified_requests": 1, "verified": count, "verified_mismatched": len(mismatched)},
            )
        return count, list(mismatched)

    async def stats(self) -> dict[str, Any]:
        """Counters: {"batches", "items", "replays", "by_status", "by_op", ...}."""
        return await self._run(self._stats_sync)

    def _stats_sync(self) -> dict[str, Any]:
        out: dict[str, Any] = {"batches": 0, "items": 0, "replays": 0, "by_status": {}, "by_op": {}}
        for key, value in self._conn.execute("SELECT key, value FROM stats ORDER BY key"):
            group, _, name = key.partition(".")
            if name and group in ("status", "op"):
                out["by_" + group][name] = value
            else:
                out[key] = value
        return out

    # -- inspection -------------------------------------------------------------------------------

    async def list_products(self, store: str, after: str, limit: int) -> list[ProductRecord]:
        """Up to `limit` products of `store` with id > `after`, ordered by id as text."""
        return await self._run(self._list_products_sync, store, after, limit)

    def _list_products_sync(self, store: str, after: str, limit: int) -> list[ProductRecord]:
        rows = self._conn.execute(
            _PRODUCT_SELECT + " WHERE p.store = ? AND p.id > ? ORDER BY p.id LIMIT ?",
            (store, after, limit),
        )
        return [_product_record(row) for row in rows]

    async def hashes(
        self, store: str, after: str, limit: int
    ) -> list[tuple[str, str | None, bool]]:
        """Up to `limit` (id, hash, deleted) of `store` with id > `after`, ordered by id as text.

        For the agent's repair runs (`GET .../hashes`): the small columns only, so a page of
        thousands of ids never reads the products' data (stored last in the row for this).
        """
        return await self._run(self._hashes_sync, store, after, limit)

    def _hashes_sync(
        self, store: str, after: str, limit: int
    ) -> list[tuple[str, str | None, bool]]:
        rows = self._conn.execute(
            "SELECT id, hash, deleted FROM products WHERE store = ? AND id > ? ORDER BY id LIMIT ?",
            (store, after, limit),
        )
        return [(pid, hash_, bool(deleted)) for pid, hash_, deleted in rows]

    async def get_product(self, store: str, product_id: str) -> ProductRecord | None:
        return await self._run(self._get_product_sync, store, product_id)

    def _get_product_sync(self, store: str, product_id: str) -> ProductRecord | None:
        row = self._conn.execute(
            _PRODUCT_SELECT + " WHERE p.store = ? AND p.id = ?", (store, product_id)
        ).fetchone()
        return None if row is None else _product_record(row)

    # -- downstream -------------------------------------------------------------------------------

    async def enqueue_optimizations(
        self, store: str, proposals: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[tuple[str, int]]:
        """Queue (product, fields) proposals for `store`; their (id, cursor), in order."""
        return await self._run(self._enqueue_sync, store, proposals)

    def _enqueue_sync(
        self, store: str, proposals: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[tuple[str, int]]:
        conn = self._conn
        created = now_ms()
        out: list[tuple[str, int]] = []
        with _transaction(conn):
            for product, fields in proposals:
                opt_id = uuid.uuid4().hex
                cursor = conn.execute(
                    "INSERT INTO optimizations (id, store, product, fields, created_at)"
                    " VALUES (?, ?, ?, ?, ?) RETURNING cursor",
                    (opt_id, store, product, json.dumps(fields), created),
                ).fetchone()[0]
                out.append((opt_id, cursor))
            _count(conn, {"optimizations": len(out)})
        return out

    async def feed(self, store: str, after: int, limit: int) -> list[tuple[int, Optimization]]:
        """Optimizations of `store` with cursor > `after`, oldest first, with their cursors."""
        return await self._run(self._feed_sync, store, after, limit)

    def _feed_sync(self, store: str, after: int, limit: int) -> list[tuple[int, Optimization]]:
        rows = self._conn.execute(
            "SELECT cursor, id, product, fields, created_at FROM optimizations"
            " WHERE store = ? AND cursor > ? ORDER BY cursor LIMIT ?",
            (store, after, limit),
        )
        return [
            (cursor, Optimization(opt_id, product, json.loads(fields), created))
            for cursor, opt_id, product, fields, created in rows
        ]

    async def record_results(
        self, store: str, results: Iterable[OptimizationResult]
    ) -> tuple[int, list[str]]:
        """Store each result on its optimization; (how many matched, ids that matched none)."""
        return await self._run(self._record_results_sync, store, results)

    def _record_results_sync(
        self, store: str, results: Iterable[OptimizationResult]
    ) -> tuple[int, list[str]]:
        conn = self._conn
        reported = now_ms()
        accepted = 0
        unknown: list[str] = []
        with _transaction(conn):
            for r in results:
                changed = conn.execute(
                    "UPDATE optimizations SET status = ?, detail = ?, hash = ?, reported_at = ?"
                    " WHERE id = ? AND store = ?",
                    (r.status, r.detail, r.hash, reported, r.id, store),
                ).rowcount
                if changed:
                    accepted += 1
                else:
                    unknown.append(r.id)
            _count(
                conn,
                {"optimization_results": accepted, "optimization_results_unknown": len(unknown)},
            )
        return accepted, unknown

    async def get_optimization(self, store: str, opt_id: str) -> OptimizationRecord | None:
        return await self._run(self._get_optimization_sync, store, opt_id)

    def _get_optimization_sync(self, store: str, opt_id: str) -> OptimizationRecord | None:
        row = self._conn.execute(
            "SELECT id, store, product, fields, created_at, cursor, status, detail, hash,"
            " reported_at FROM optimizations WHERE id = ? AND store = ?",
            (opt_id, store),
        ).fetchone()
        if row is None:
            return None
        opt_id, store, product, fields, created, cursor, status, detail, hash_, reported = row
        return OptimizationRecord(
            opt_id,
            store,
            product,
            json.loads(fields),
            created,
            cursor,
            status,
            detail,
            hash_,
            reported,
        )


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT), never implicit.
    # The default check_same_thread stays on: the connection lives on the database thread only.
    conn = sqlite3.connect(path, isolation_level=None, cached_statements=64)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(
            "PRAGMA busy_timeout = 5000"
        )  # another process (an operator's sqlite3) reading
        _migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"hub database schema version {version} is newer than this hub ({len(MIGRATIONS)})"
        )
    for target, ddl in enumerate(MIGRATIONS[version:], start=version + 1):
        # One transaction per step, user_version included: a crash leaves the old version whole.
        try:
            conn.executescript(f"BEGIN IMMEDIATE; {ddl}; PRAGMA user_version = {target}; COMMIT;")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: IMMEDIATE takes the write lock up front, so it never has to be
    upgraded halfway (and fail busy); any exception rolls everything back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLite may already have rolled back (disk full, I/O error)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _count(conn: sqlite3.Connection, increments: Mapping[str, int] | Counter[str]) -> None:
    conn.executemany(_COUNT, [(k, v) for k, v in increments.items() if v])


def _verified_by_batch(
    batch: Batch, products: Mapping[tuple[str, str], Stored]
) -> list[tuple[str, str, int]]:
    """(store, id, verified_at) of the batch's items of source `verify` that the hub now holds.

    A verification sweep ships what drifted (and what a marker could not confirm) with source
    `verify`: the agent read it from the store at `observed_at`, so once the hub holds exactly
    that content (`products` as `plan_batch` left it) the product is as verified as one a marker
    confirmed. A replay of an older item, or one a later item of the batch replaced, is not.
    """
    out = []
    for item in batch.items:
        if item.source != "verify" or item.hash is None or not 0 <= item.observed_at < 2**63:
            continue
        held = products.get((item.store, item.id))
        if held is not None and not held.deleted and held.hash == item.hash:
            out.append((item.store, item.id, item.observed_at))
    return out


def _product_record(row: tuple[Any, ...]) -> ProductRecord:
    pid, hash_, deleted, data, updated_at, agent, seq, verified_at = row
    return ProductRecord(
        pid, hash_, bool(deleted), unpack_data(data), updated_at, agent, seq, verified_at
    )
