"""The `StateStore` facade: the one connection, its thread, and every transaction.

The table modules (`mirror`, `outbox`, `hints`, `runs`, `events`, `cursors`, `meta`) each run
their own table's SQL on a connection or a `Transaction` they are handed; only this facade opens
and commits. A method that spans tables composes them inside one transaction: `record` (mirror,
outbox, hints, events), `record_page` (and the run checkpoint), `settle`, `repair_page`. That is
where the guarantees live, so each such method says which one it keeps.

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
fails closed rather than guessing what was committed. Before every commit the file is checked to
still be the one opened (`store/identity.py`).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import (
    AsyncIterator,
    Callable,
    Collection,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

from bridge_agent.errors import StateStoreError
from bridge_agent.model import Change, Product, Source
from bridge_agent.store import cursors, events, hints, journal, meta, mirror, outbox, runs
from bridge_agent.store import jsonld as jsonld_table
from bridge_agent.store.events import Event
from bridge_agent.store.hints import Hint
from bridge_agent.store.identity import FileIdentity
from bridge_agent.store.journal import (
    Entry,
    Outcome,
    Received,
    Replaced,
    ReplacedRow,
    Report,
    Rollback,
    RollbackReport,
)
from bridge_agent.store.jsonld import Kept, Stale
from bridge_agent.store.jsonld import Row as JsonLdRow
from bridge_agent.store.mirror import MirrorState, Repairs
from bridge_agent.store.outbox import DueItem, OutboxRow, OutboxStats, Settlement
from bridge_agent.store.runs import Run
from bridge_agent.store.schema import MIGRATIONS
from bridge_agent.store.transaction import Transaction, now_ms

T = TypeVar("T")
DB_NAME = "state.sqlite"


class StateStore:
    """Async facade over the agent's SQLite file. Open with `async with StateStore.open(dir)`."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        executor: ThreadPoolExecutor,
        *,
        created: bool = False,
        identity: FileIdentity | None = None,
    ) -> None:
        self._conn = conn
        self.path = path
        self._executor = executor
        self.created = created  # this open created the file: a new, empty state
        self._identity = identity  # the file opened; None: not checked (read-only)

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
            # The database is the agent user's alone whatever the umask (a shell's 022 too), and
            # before SQLite opens it: SQLite gives its -wal and -shm files the database's mode.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            for own in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                with suppress(FileNotFoundError):
                    os.chmod(own, 0o600)
            conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            _migrate(conn, path)
            identity = FileIdentity.of(path)
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot open state store {path}: {exc}") from exc
        except OSError as exc:
            raise StateStoreError(f"cannot create state directory {state_dir}: {exc}") from exc
        return cls(
            conn,
            path,
            executor or ThreadPoolExecutor(max_workers=1),
            created=created,
            identity=identity,
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

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run one table module's read on the store's thread."""
        return await self._run(fn, self._conn)

    async def _transact(self, fn: Callable[[Transaction], T]) -> T:
        """Run `fn` in one write transaction on the store's thread."""

        def write() -> T:
            with self._write() as tx:
                return fn(tx)

        return await self._run(write)

    @contextmanager
    def _write(self) -> Iterator[Transaction]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (autocommit connection)."""
        db = self._conn
        db.execute("BEGIN IMMEDIATE")
        try:
            tx = Transaction(db)
            yield tx
            tx.flush_seq()
            if self._identity is not None:
                self._identity.check()  # never commit into a file that is no longer the state
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- recording changes (the ChangeSink) ----------------------------------------------------

    async def record(
        self,
        changes: Sequence[Change],
        *,
        done_hints: Sequence[Hint] = (),
        events: Sequence[Event] = (),
    ) -> int:
        """Commit changes to the mirror and the outbox in one transaction; returns rows queued.

        A product whose content hash equals the mirror's is not queued (nothing changed). An
        observation older than the mirror's (by platform `updated_at`) is ignored: latest wins.
        `done_hints` are deleted in the same transaction (unless a newer hint replaced them), and
        `events` written in it: a hint given up goes with the event that says so.
        """

        def write() -> int:
            prepared = _encode_all(changes)  # hashing outside the write lock
            with self._write() as tx:
                queued = _record_all(tx, prepared)
                hints.settle(tx, done_hints)
                _add_events(tx, events)
                return queued

        return await self._run(write)

    async def record_page(
        self,
        changes: Sequence[Change],
        *,
        run_id: int,
        checkpoint: dict[str, Any],
        done: int,
        total: int | None = None,
        verified: Sequence[str] = (),
        resend: Sequence[str] = (),
        resend_source: Source = "import",
        events: Sequence[Event] = (),
        vanished: Sequence[str] = (),
    ) -> int:
        """Record a page of changes and the run checkpoint after it in one transaction.

        That is what makes runs resumable (guarantee 3): after a crash, either the page and its
        checkpoint are both on disk, or neither is and the page is fetched again. `verified` are
        the ids the run read through the store's API (their `verified_at` becomes now);
        `resend` the live ids to ship again in full whether changed or not (a force refresh, a
        verification marker the hub did not confirm), queued with `resend_source`. `vanished`
        are the ids a verification found gone and kept (deletions off): marked so later sweeps
        do not ask the store for them again (`mirror.unseen_since`). Returns the products queued
        (each once, however many reasons it had).
        """

        def write() -> int:
            prepared = _encode_all(changes)
            with self._write() as tx:
                queued = {c.product_id for c, _ in prepared if _record_one(tx, c, _)}
                if verified or resend or vanished:
                    store = runs.store_of(tx, run_id)
                    for id_ in mirror.resend(tx, store, resend):
                        outbox.dirty(tx, store, id_, resend_source, now_ms())
                        queued.add(id_)
                    mirror.mark_verified(tx, store, verified, now_ms())
                    mirror.mark_vanished(tx, store, vanished)
                runs.checkpoint(tx, run_id, checkpoint, done, total)
                _add_events(tx, events)
                return len(queued)

        return await self._run(write)

    # -- hints (webhooks) ----------------------------------------------------------------------

    async def add_hints(self, store: str, ids: Sequence[str], source: str) -> int:
        """Commit hints that these products changed; the webhook may be answered after this."""
        await self._transact(lambda tx: hints.add(tx, store, ids, source))
        return len(ids)

    async def due_hints(self, store: str, *, limit: int = 100) -> list[Hint]:
        return await self._read(lambda db: hints.due(db, store, now_ms(), limit))

    async def defer_hints(
        self,
        failed: Sequence[Hint],
        *,
        error: str,
        delay: float,
        errors: Mapping[str, str] | None = None,
        refused: Collection[str] = (),
    ) -> None:
        """Leave hints whose re-fetch failed for a later try, `delay` seconds from now, with
        why (`errors` by product id, else `error`); `refused`: the product ids the store
        answered with a permanent error (counted apart, guarantee 7)."""
        why = errors or {}
        until = now_ms() + int(delay * 1000)
        deferred = [(h, why.get(h.id, error), h.id in refused) for h in failed]
        await self._transact(lambda tx: hints.defer(tx, deferred, until))

    async def hint_count(self, store: str | None = None) -> int:
        return await self._read(lambda db: hints.count(db, store))

    # -- shipping ------------------------------------------------------------------------------

    async def due(self, limit: int) -> list[DueItem]:
        """Pending rows, oldest first, joined with what the shipper needs to build items."""
        return await self._read(lambda db: outbox.due(db, limit))

    async def settle(self, settlements: Sequence[Settlement], *, error: str | None = None) -> None:
        """Record the hub's answers for one batch in one transaction.

        Every update is conditioned on the seq that was sent: a row re-dirtied while in flight
        keeps its new content pending, whatever the hub said about the old one.
        """
        await self._transact(lambda tx: _settle(tx, settlements, error))

    async def stats(self) -> OutboxStats:
        return await self._read(outbox.stats)

    async def outbox_rows(self, *, state: str | None = None, limit: int = 100) -> list[OutboxRow]:
        return await self._read(lambda db: outbox.rows(db, state, limit))

    async def retry_rejected(self, keys: Iterable[tuple[str, str]] | None = None) -> int:
        """Put rejected rows back in line (all, or those keys) as full upserts; returns count."""
        wanted = None if keys is None else {tuple(k) for k in keys}

        def write(tx: Transaction) -> int:
            chosen = [k for k in outbox.rejected_keys(tx) if wanted is None or k in wanted]
            for store, id_ in chosen:
                mirror.forget_acked(tx, store, id_)
                outbox.requeue(tx, store, id_)
            return len(chosen)

        return await self._transact(write)

    # -- mirror --------------------------------------------------------------------------------

    async def mirror_hash(self, store: str, id_: str) -> str | None:
        return await self._read(lambda db: mirror.live_hash(db, store, id_))

    async def mirror_ids(self, store: str) -> set[str]:
        """Ids of the products the mirror holds as existing (reconciliation compares them)."""
        return await self._read(lambda db: mirror.live_ids(db, store))

    async def duplicate_skus(self, store: str, *, limit: int = 100) -> list[tuple[str, int]]:
        """SKUs held by more than one existing product of the store, with how many."""
        return await self._read(lambda db: mirror.duplicate_skus(db, store, limit))

    async def mirror_count(self, store: str | None = None) -> int:
        return await self._read(lambda db: mirror.live_count(db, store))

    # -- cursors -------------------------------------------------------------------------------

    async def cursor(self, store: str, stream: str) -> str | None:
        return await self._read(lambda db: cursors.get(db, store, stream))

    async def set_cursor(self, store: str, stream: str, value: str) -> None:
        await self._transact(lambda tx: cursors.set_value(tx, store, stream, value))

    # -- runs ----------------------------------------------------------------------------------

    async def start_run(
        self,
        kind: str,
        store: str,
        config: dict[str, Any],
        *,
        total: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> int:
        return await self._transact(lambda tx: runs.start(tx, kind, store, config, total, params))

    async def restart_runs(
        self, store: str, kind: str, config: dict[str, Any], params: dict[str, Any] | None = None
    ) -> tuple[list[Run], int]:
        """`sync --restart`: cancel the store's open runs that `kind` replaces (`runs.RESTARTS`)
        and queue a new one with today's settings, in one transaction (never the old runs gone
        and no new one)."""

        def write(tx: Transaction) -> tuple[list[Run], int]:
            new = runs.start(tx, kind, store, config, None, params)
            cancelled = runs.cancel_open_except(
                tx, store, new, f"replaced by run {new}", runs.RESTARTS.get(kind, (kind,))
            )
            return cancelled, new

        return await self._transact(write)

    async def run(self, run_id: int) -> Run | None:
        return await self._read(lambda db: runs.one(db, run_id))

    async def run_state(self, run_id: int) -> str | None:
        return await self._read(lambda db: runs.state_of(db, run_id))

    async def pause_store(self, store: str) -> bool:
        return await self._transact(lambda tx: runs.pause(tx, store))

    async def resume_store(self, store: str) -> bool:
        return await self._transact(lambda tx: runs.resume(tx, store))

    async def paused_stores(self) -> dict[str, int]:
        return await self._read(runs.paused_stores)

    async def known(self, store: str, ids: Sequence[str]) -> dict[str, mirror.Known]:
        """What the mirror holds of these products (hash, deleted, acked): one query."""
        return await self._read(lambda db: mirror.known(db, store, ids))

    async def unseen_since(
        self, store: str, *, since: int, after: str = "", limit: int = 100
    ) -> list[str]:
        return await self._read(
            lambda db: mirror.unseen_since(db, store, since=since, after=after, limit=limit)
        )

    async def reported_leaving(self, store: str, ids: Sequence[str]) -> set[str]:
        """Of these products, those whose leaving the filters was already reported since the
        mirror last recorded them (one report per state, not one per observation)."""
        return await self._read(lambda db: events.reported_since_recorded(db, store, ids))

    async def verification(self, store: str) -> mirror.Verification:
        return await self._read(lambda db: mirror.verification(db, store))

    async def start_runs(
        self, store: str, kinds: Sequence[str], config: dict[str, Any]
    ) -> list[int]:
        """Queue several runs in one transaction (the first import and its repair): a crash
        between them must not leave the import without the repair that follows it."""
        return await self._transact(lambda tx: [runs.start(tx, k, store, config) for k in kinds])

    async def open_runs(self, store: str | None = None) -> list[Run]:
        """Runs that were not finished (running or paused): what must resume after a restart."""
        return await self._read(lambda db: runs.unfinished(db, store))

    async def last_run(self, store: str, kind: str) -> Run | None:
        return await self._read(lambda db: runs.last(db, store, kind))

    async def runs(self, limit: int = 20) -> list[Run]:
        return await self._read(lambda db: runs.newest(db, limit))

    async def finish_run(
        self,
        run_id: int,
        *,
        state: str = "done",
        error: str | None = None,
        report: dict[str, Any] | None = None,
    ) -> None:
        await self._transact(lambda tx: runs.finish(tx, run_id, state, error, report))

    # -- events --------------------------------------------------------------------------------

    async def log_event(
        self,
        message: str,
        *,
        level: str = "info",
        store: str | None = None,
        product: str | None = None,
        status: int | None = None,
        action: str | None = None,
    ) -> None:
        await self._transact(
            lambda tx: events.add(
                tx,
                message,
                level=level,
                store=store,
                product=product,
                status=status,
                action=action,
            )
        )

    async def events(
        self,
        limit: int = 50,
        *,
        levels: Iterable[str] | None = None,
        stores: Iterable[str] | None = None,
        products: Iterable[str] | None = None,
        since: int | None = None,
    ) -> list[Event]:
        """The newest `limit` events, newest first; only those of `levels`, `stores` and
        `products` if given, and at or after `since` (epoch ms) if given."""
        return await self._read(
            lambda db: events.newest(db, limit, levels, stores, products=products, since=since)
        )

    # -- repair against the hub (sources/repair.py) --------------------------------------------

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

        def write(tx: Transaction) -> int:
            floor = time.time_ns() // 1000  # epoch ms x 1000
            current = meta.next_seq(tx.db)
            if current < floor:
                meta.set_value(tx, "next_seq", str(floor))
            return max(current, floor)

        return await self._transact(write)

    async def repair_mirror(
        self, store: str, *, after: str, upto: str | None, limit: int
    ) -> list[MirrorState]:
        """Mirror rows with `after` < id <= `upto` (no upper bound when None), by id, at most
        `limit`, with their outbox state: one slice of the mirror for a repair run to compare
        with the same range of the hub's ids. The data columns are not read."""
        return await self._read(
            lambda db: mirror.repair_slice(db, store, after=after, upto=upto, limit=limit)
        )

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
            prepared = _encode_all(repairs.changes)
            observed = now_ms()
            with self._write() as tx:
                queued = _record_all(tx, prepared)
                for id_ in repairs.delete:
                    if mirror.insert_deleted(tx, store, id_, observed):
                        outbox.dirty(tx, store, id_, repairs.source, observed)
                        queued += 1
                for id_, hash_, deleted, acked in repairs.resend:
                    if mirror.forget_acked_if(tx, store, id_, hash_, deleted, acked):
                        outbox.dirty(tx, store, id_, repairs.source, observed)
                        queued += 1
                mirror.acknowledge_if(tx, store, repairs.acked)
                runs.checkpoint(tx, run_id, checkpoint, done)
                return queued

        return await self._run(write)

    # -- downstream journal (store/journal.py) -------------------------------------------------

    async def journal_received(
        self,
        store: str,
        received: Sequence[Received],
        cursor: str,
        *,
        refused: Sequence[journal.Refused] = (),
    ) -> int:
        """Journal a feed page and move the feed cursor past it, in one transaction: after a
        crash either both are on disk or neither (the page is read again and journals nothing
        twice, the key being the optimisation id). `refused`: the page's malformed items,
        journaled `failed` (to report) with one warning event each. Returns how many were new
        (refused ones included)."""

        def write(tx: Transaction) -> int:
            added = journal.add(tx, store, received)
            new_refusals = journal.add_refused(tx, store, refused)
            for one in new_refusals:
                events.add(
                    tx,
                    f"optimization {one.id} refused: {one.detail}",
                    level="warning",
                    store=store,
                    product=one.product or None,
                )
            cursors.set_value(tx, store, journal.STREAM, cursor)
            return added + len(new_refusals)

        return await self._transact(write)

    async def journal_open(self, store: str, *, limit: int = 100) -> list[Entry]:
        """Optimisations still to act on (`received`, `applying`), in feed order."""
        return await self._read(lambda db: journal.open_entries(db, store, limit))

    async def journal_applying(self, store: str, ids: Sequence[str]) -> None:
        """Committed before the first write: a crash after it is found at start (no rewrite)."""
        await self._transact(lambda tx: journal.mark_applying(tx, store, ids))

    async def journal_outcome(
        self,
        store: str,
        outcomes: Sequence[Outcome],
        *,
        changes: Sequence[Change] = (),
        events: Sequence[Event] = (),
        jsonld: Sequence[Kept] = (),
    ) -> int:
        """Record outcomes, the values they replaced, the products as re-read after the write
        (the mirror and, when they changed, the outbox: the echo guard of guarantee 6) and their
        events, in one transaction. Returns the outbox rows queued. `jsonld`: the JSON-LD
        documents written, which the keeper keeps true to the store from then on (in the same
        transaction: a written document is never unknown to it)."""

        def write() -> int:
            prepared = _encode_all(changes)
            with self._write() as tx:
                queued = _record_all(tx, prepared)
                for outcome in outcomes:
                    journal.set_outcome(tx, store, outcome)
                jsonld_table.keep(tx, store, jsonld)
                _add_events(tx, events)
                return queued

        return await self._run(write)

    async def unreported_results(self, store: str, *, limit: int = 500) -> list[Report]:
        return await self._read(lambda db: journal.unreported(db, store, limit))

    async def mark_reported(self, store: str, sent: Sequence[tuple[str, str]]) -> None:
        """The hub acknowledged these (id, status) results."""
        await self._transact(lambda tx: journal.mark_reported(tx, store, sent))

    async def journal_entries(
        self,
        store: str | None = None,
        *,
        states: Iterable[str] | None = None,
        product: str | None = None,
        ids: Iterable[str] | None = None,
        limit: int = 1000,
    ) -> list[Entry]:
        return await self._read(
            lambda db: journal.entries(
                db, store, states=states, product=product, ids=ids, limit=limit
            )
        )

    async def journal_counts(self, store: str) -> dict[str, int]:
        """Optimisations per state, and `unreported` results."""
        return await self._read(lambda db: journal.counts(db, store))

    async def approve(self, store: str, ids: Sequence[str]) -> list[str]:
        """Approve held optimisations (the running agent's apply loop picks them up)."""
        return await self._transact(lambda tx: journal.approve(tx, store, ids))

    async def reject(self, store: str, ids: Sequence[str]) -> list[str]:
        """Reject held optimisations: `rejected_by_reviewer`, reported to the hub."""
        return await self._transact(lambda tx: journal.reject(tx, store, ids))

    async def replaced(self, store: str, optimization: str) -> list[Replaced]:
        return await self._read(lambda db: journal.replaced_of(db, store, optimization))

    async def image_users(
        self, store: str, image_ids: Iterable[str], *, limit: int = 1000
    ) -> dict[str, set[str]]:
        """Per image id, the mirror's products that show it (an ALT is shared by all of them)."""
        ids = list(image_ids)
        return await self._read(lambda db: journal.image_users(db, store, ids, limit))

    # -- JSON-LD keeper (store/jsonld.py) ------------------------------------------------------

    async def mirror_products(
        self, store: str, ids: Iterable[str]
    ) -> dict[str, tuple[Product, str]]:
        """The mirror's existing products among `ids`, with their hash."""
        wanted = list(ids)
        return await self._read(lambda db: jsonld_table.products(db, store, wanted))

    async def jsonld_stale(self, store: str, *, after: str = "", limit: int = 100) -> list[Stale]:
        """Kept JSON-LD whose product changed in the mirror since the keeper last compared it,
        by product id after `after`."""
        return await self._read(lambda db: jsonld_table.stale(db, store, after, limit))

    async def jsonld_refreshed(
        self,
        store: str,
        *,
        rewritten: Sequence[tuple[Kept, int]] = (),
        seen: Sequence[tuple[str, int, str | None]] = (),
        released: Sequence[tuple[str, int]] = (),
        events: Sequence[Event] = (),
    ) -> list[str]:
        """What one keeper round did, with its events, in one transaction; each row update is
        conditioned on the version the keeper read. Returns the products released."""

        def write(tx: Transaction) -> list[str]:
            jsonld_table.rewrite(tx, store, rewritten)
            jsonld_table.see(tx, store, seen)
            gone = jsonld_table.release(tx, store, released)
            _add_events(tx, events)
            return gone

        return await self._transact(write)

    async def jsonld_rows(self, store: str) -> list[JsonLdRow]:
        return await self._read(lambda db: jsonld_table.rows(db, store))

    # -- rollback (store/journal.py, migration 4) ---------------------------------------------

    async def replaced_rows(
        self,
        store: str,
        *,
        product: str | None = None,
        optimization: str | None = None,
        since: int | None = None,
        rolled_back: bool = False,
    ) -> list[ReplacedRow]:
        """Values the agent replaced, newest first (not yet rolled back unless `rolled_back`)."""
        return await self._read(
            lambda db: journal.replaced_rows(
                db,
                store,
                product=product,
                optimization=optimization,
                since=since,
                rolled_back=rolled_back,
            )
        )

    async def replaced_stores(self) -> list[str]:
        return await self._read(journal.replaced_stores)

    async def record_rollbacks(
        self, store: str, rollbacks: Sequence[Rollback], events: Sequence[Event]
    ) -> list[int]:
        """Record what a rollback restored (each restored value marked, so never restored
        twice; one `rolled_back` result per optimisation for the hub) and one event per field,
        in one transaction. The rollbacks row ids."""

        def write(tx: Transaction) -> list[int]:
            ids = [journal.add_rollback(tx, store, r) for r in rollbacks]
            jsonld_table.release_rolled_back(tx, store, [i for r in rollbacks for i in r.restored])
            _add_events(tx, events)
            return ids

        return await self._transact(write)

    async def unreported_rollbacks(self, store: str, *, limit: int = 500) -> list[RollbackReport]:
        return await self._read(lambda db: journal.unreported_rollbacks(db, store, limit))

    async def mark_rollbacks_reported(self, store: str, ids: Sequence[int]) -> None:
        """The hub acknowledged these `rolled_back` results (rollbacks row ids)."""
        await self._transact(lambda tx: journal.mark_rollbacks_reported(tx, store, ids))

    # -- meta ----------------------------------------------------------------------------------

    async def meta(self, key: str) -> str | None:
        return await self._read(lambda db: meta.get(db, key))

    async def set_meta(self, key: str, value: str) -> None:
        """One small fact (an export's incremental mark, bridge_agent/export/reader.py)."""
        await self._transact(lambda tx: meta.set_value(tx, key, value))

    async def check(self) -> None:
        """A cheap read that fails if the database is unusable or its file was lost (/healthz)."""

        def read(db: sqlite3.Connection) -> None:
            if self._identity is not None:
                self._identity.check()
            meta.check(db)

        await self._read(read)


# -- compositions (inside one transaction) -----------------------------------------------------


def _encode_all(changes: Sequence[Change]) -> list[tuple[Change, mirror.Encoded]]:
    return [(c, mirror.encode(c)) for c in changes]


def _record_all(tx: Transaction, prepared: Sequence[tuple[Change, mirror.Encoded]]) -> int:
    """Write each change to the mirror and queue those that changed it; rows queued."""
    return sum(_record_one(tx, change, encoded) for change, encoded in prepared)


def _record_one(tx: Transaction, change: Change, encoded: mirror.Encoded) -> bool:
    """Write one change to the mirror and queue it if it changed the row; whether it did."""
    if not mirror.record(tx, change, encoded):
        return False
    outbox.dirty(tx, change.store, change.product_id, change.source, change.observed_at)
    return True


def _settle(tx: Transaction, settlements: Sequence[Settlement], error: str | None) -> None:
    now = now_ms()
    acked = [s for s in settlements if s.outcome == "ok"]
    # The common case (everything acked) goes in two statements.
    mirror.acknowledge(tx, [(s.store, s.id, s.hash, s.data) for s in acked])
    outbox.retire(tx, acked)
    for s in settlements:
        if s.outcome == "ok":
            continue
        if s.outcome == "need_full":
            mirror.forget_acked(tx, s.store, s.id)
            outbox.renumber(tx, s)
        elif s.outcome == "rejected":
            outbox.set_aside(tx, s)
            events.add(
                tx,
                f"hub rejected the product: {s.reason}",
                level="error",
                store=s.store,
                product=s.id,
            )
        else:
            outbox.count_try(tx, s, error)
    if acked:
        meta.set_value(tx, "last_shipment_at", str(now))


def _add_events(tx: Transaction, new: Sequence[Event]) -> None:
    if new:
        events.add_many(tx, new)


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the schema to the newest version, one migration per transaction (schema.py)."""
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
