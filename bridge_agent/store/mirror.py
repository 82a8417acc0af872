"""The `mirror` table: the canonical state of every product seen, and what the hub holds of it.

Recording follows two rules. Latest wins: an observation older than the mirror's (by the
platform's `updated_at`) is ignored. Equal hash is nothing to ship: a product whose content hash
equals the mirror's is not recorded again (Sales Layer rule 06). `record` says whether the row
changed; the facade then queues it in the outbox in the same transaction.

The hub's copy: `acked_hash` is what the hub acknowledged last and `acked_data` the patch base,
NULL while the hub holds exactly the current data (see schema.py). The rows of a repair run
(`MirrorState`, `Repairs`) are read and written here too, each write conditioned on what the run
read, so that a product recorded by another source meanwhile keeps its newer state.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgpack

from bridge_agent.model import Change, settle
from bridge_agent.store.transaction import Transaction, now_ms
from bridge_agent.sync.hashing import content_hash


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


Encoded = tuple[bytes | None, str | None]  # (msgpack canonical dict, content hash); None: deleted


def encode(change: Change) -> Encoded:
    """The stored form of a change; done before the write lock is taken (hashing is the cost)."""
    if change.product is None:
        return None, None
    data = settle(change.product).to_dict()
    return msgpack.packb(data, use_bin_type=True), content_hash(data)


# -- recording ---------------------------------------------------------------------------------


def record(tx: Transaction, change: Change, encoded: Encoded) -> bool:
    """Write one observed change; False when there is nothing new to ship."""
    data, hash_ = encoded
    row = tx.execute(
        "SELECT hash, deleted, updated_at, observed_at FROM mirror WHERE store=? AND id=?",
        change.key,
    ).fetchone()
    updated_at = change.product.updated_at if change.product else None
    if row is not None:
        old_hash, old_deleted, old_updated, old_observed = row
        if change.product is None and old_deleted:
            return False
        if change.product is not None and not old_deleted and old_hash == hash_:
            return False
        if _older(updated_at, old_updated):
            return False
        if (
            old_observed is not None
            and change.observed_at < old_observed
            and not _older(old_updated, updated_at)
        ):
            # Read from the store before what the row holds was, and not modified later: a
            # snapshot (a bulk export) older than a webhook's read of a change that bumped no
            # date (stock). The later observation stands.
            return False
    elif change.product is None:
        return False  # never seen, never shipped: there is nothing to delete at the hub
    tx.execute(
        "INSERT INTO mirror (store, id, data, hash, deleted, updated_at, sku, recorded_at,"
        " seen_by, observed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (store, id) DO UPDATE SET data=excluded.data, hash=excluded.hash,"
        " deleted=excluded.deleted, updated_at=COALESCE(excluded.updated_at, updated_at),"
        " sku=excluded.sku,"
        " recorded_at=excluded.recorded_at, seen_by=excluded.seen_by,"
        " observed_at=MAX(COALESCE(observed_at, 0), excluded.observed_at),"
        # What a hook or webhook (sources spool, webhook) made us read is unverified until a
        # run reads it again (sources/verify.py: a hint may race the store's own writes).
        " verified_at=CASE WHEN excluded.seen_by IN ('spool', 'webhook') THEN NULL"
        " ELSE verified_at END,"
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
            change.source,
            change.observed_at,
        ),
    )
    return True


def _older(new: str | None, old: str | None) -> bool:
    """True when `new` is a strictly older platform time than `old` (both ISO 8601)."""
    if not new or not old:
        return False
    try:
        return datetime.fromisoformat(new) < datetime.fromisoformat(old)
    except (ValueError, TypeError):
        return False  # an unparseable time is no reason to drop a change


# -- what the hub holds ------------------------------------------------------------------------


def acknowledge(
    tx: Transaction, acked: Sequence[tuple[str, str, str | None, bytes | None]]
) -> None:
    """Record the hub's acks: (store, id, hash, data) of what it now holds.

    The hub holds `hash` now, even if the row was re-dirtied meanwhile: the next patch must be
    computed against what the hub really has. While the mirror still holds what was sent (the
    usual case), the base is the current data: record only the hash (acked_data NULL, see
    schema.py), one short column instead of a second copy of the product.
    """
    tx.executemany(
        "UPDATE mirror SET acked_hash=?1, acked_data=CASE WHEN hash IS ?1"
        " THEN NULL ELSE ?2 END WHERE store=?3 AND id=?4",
        [(hash_, data, store, id_) for store, id_, hash_, data in acked],
    )


def forget_acked(tx: Transaction, store: str, id_: str) -> None:
    """Drop the patch base: the next item for this product is a full upsert."""
    tx.execute(
        "UPDATE mirror SET acked_hash=NULL, acked_data=NULL WHERE store=? AND id=?", (store, id_)
    )


# -- repair runs -------------------------------------------------------------------------------


def repair_slice(
    db: sqlite3.Connection, store: str, *, after: str, upto: str | None, limit: int
) -> list[MirrorState]:
    """Rows with `after` < id <= `upto` (no upper bound when None), by id, at most `limit`, with
    their outbox state; the data columns are not read."""
    sql = (
        "SELECT m.id, m.hash, m.deleted, m.acked_hash, o.state FROM mirror m"
        " LEFT JOIN outbox o ON o.store = m.store AND o.id = m.id"
        " WHERE m.store=? AND m.id > ?"
    )
    args: tuple[Any, ...] = (store, after)
    if upto is not None:
        sql, args = sql + " AND m.id <= ?", (*args, upto)
    rows = db.execute(sql + " ORDER BY m.id LIMIT ?", (*args, limit)).fetchall()
    return [MirrorState(r[0], r[1], bool(r[2]), r[3], r[4]) for r in rows]


def insert_deleted(tx: Transaction, store: str, id_: str, observed: int) -> bool:
    """A deletion of a product this mirror never saw (the hub has it); False if it has a row.

    `record` would drop it ("never seen, never shipped"), but the hub holds the product, so the
    deletion must be shipped.
    """
    return bool(
        tx.execute(
            "INSERT INTO mirror (store, id, data, hash, deleted, recorded_at)"
            " VALUES (?, ?, NULL, NULL, 1, ?) ON CONFLICT (store, id) DO NOTHING",
            (store, id_, observed),
        ).rowcount
    )


def forget_acked_if(
    tx: Transaction, store: str, id_: str, hash_: str | None, deleted: bool, acked: str | None
) -> bool:
    """Drop the patch base if the row is still as the repair run read it; whether it was.

    Without a base the shipper sends the whole product (or the delete again).
    """
    return bool(
        tx.execute(
            "UPDATE mirror SET acked_hash=NULL, acked_data=NULL WHERE store=? AND id=?"
            " AND hash IS ? AND deleted=? AND acked_hash IS ?",
            (store, id_, hash_, int(deleted), acked),
        ).rowcount
    )


def acknowledge_if(
    tx: Transaction, store: str, acked: Sequence[tuple[str, str, str | None]]
) -> None:
    """The hub holds the current data of these (id, hash, acked seen) rows: a patch base, and a
    pending row for the same content settles without being sent (acked_data NULL, schema.py)."""
    tx.executemany(
        "UPDATE mirror SET acked_hash=hash, acked_data=NULL WHERE store=? AND id=?"
        " AND hash=? AND deleted=0 AND acked_hash IS ?",
        [(store, id_, hash_, seen) for id_, hash_, seen in acked],
    )


# -- reads -------------------------------------------------------------------------------------


def live_hash(db: sqlite3.Connection, store: str, id_: str) -> str | None:
    row = db.execute(
        "SELECT hash FROM mirror WHERE store=? AND id=? AND deleted=0", (store, id_)
    ).fetchone()
    return None if row is None else str(row[0])


def live_ids(db: sqlite3.Connection, store: str) -> set[str]:
    rows = db.execute("SELECT id FROM mirror WHERE store=? AND deleted=0", (store,)).fetchall()
    return {str(r[0]) for r in rows}


def duplicate_skus(db: sqlite3.Connection, store: str, limit: int) -> list[tuple[str, int]]:
    rows = db.execute(
        "SELECT sku, COUNT(*) FROM mirror WHERE store=? AND deleted=0 AND sku IS NOT NULL"
        " AND sku != '' GROUP BY sku HAVING COUNT(*) > 1 ORDER BY sku LIMIT ?",
        (store, limit),
    ).fetchall()
    return [(str(r[0]), int(r[1])) for r in rows]


def live_count(db: sqlite3.Connection, store: str | None) -> int:
    sql = "SELECT COUNT(*) FROM mirror WHERE deleted=0"
    args: tuple[str, ...] = () if store is None else (store,)
    if store is not None:
        sql += " AND store=?"
    return int(db.execute(sql, args).fetchone()[0])


# -- runs and verification ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Known:
    """What the mirror holds of one product a run just read (no data)."""

    hash: str | None
    deleted: bool
    acked_hash: str | None


def known(db: sqlite3.Connection, store: str, ids: Sequence[str]) -> dict[str, Known]:
    """The mirror's rows of these ids (absent: never seen), in one indexed query."""
    if not ids:
        return {}
    rows = db.execute(
        "SELECT id, hash, deleted, acked_hash FROM mirror WHERE store=?"
        " AND id IN (SELECT value FROM json_each(?))",
        (store, json.dumps(list(ids))),
    ).fetchall()
    return {r[0]: Known(r[1], bool(r[2]), r[3]) for r in rows}


def mark_verified(tx: Transaction, store: str, ids: Sequence[str], at: int) -> None:
    """These products were read through the store's API at `at` (by a run)."""
    if ids:
        tx.execute(
            "UPDATE mirror SET verified_at=? WHERE store=? AND deleted=0"
            " AND id IN (SELECT value FROM json_each(?))",
            (at, store, json.dumps(list(ids))),
        )


def resend(tx: Transaction, store: str, ids: Sequence[str]) -> list[str]:
    """Drop the patch base of these live rows, so the next item of each is a full upsert; the
    ids that were live (a force refresh, or a marker the hub did not confirm)."""
    if not ids:
        return []
    rows = tx.execute(
        "UPDATE mirror SET acked_hash=NULL, acked_data=NULL WHERE store=? AND deleted=0"
        " AND id IN (SELECT value FROM json_each(?)) RETURNING id",
        (store, json.dumps(list(ids))),
    ).fetchall()
    return [str(r[0]) for r in rows]


VANISHED = "vanished"  # `seen_by` of a row a verification found gone and kept (deletions off)


def mark_vanished(tx: Transaction, store: str, ids: Sequence[str]) -> None:
    """These kept rows are gone from the store: later sweeps do not ask for them again (a
    product that comes back is recorded by whatever sees it, which clears the mark)."""
    if ids:
        tx.execute(
            "UPDATE mirror SET seen_by=? WHERE store=? AND id IN (SELECT value FROM json_each(?))",
            (VANISHED, store, json.dumps(list(ids))),
        )


def unseen_since(
    db: sqlite3.Connection, store: str, *, since: int, after: str, limit: int
) -> list[str]:
    """Live ids, in id order after `after`, that no run read and nothing recorded since `since`:
    what a verification sweep's walk of the catalog did not meet (vanished, or moved)."""
    rows = db.execute(
        "SELECT id FROM mirror WHERE store=? AND deleted=0 AND id > ?"
        " AND (verified_at IS NULL OR verified_at < ?) AND recorded_at < ?"
        " AND seen_by IS NOT ? ORDER BY id LIMIT ?",
        (store, after, since, since, VANISHED, limit),
    ).fetchall()
    return [str(r[0]) for r in rows]


@dataclass(frozen=True, slots=True)
class Verification:
    """How verified a store's mirror is (status)."""

    live: int
    unverified: int  # never read by a run, or changed by a hook or webhook since
    oldest_verified_at: int | None


def verification(db: sqlite3.Connection, store: str) -> Verification:
    live, unverified, oldest = db.execute(
        "SELECT count(*), sum(verified_at IS NULL), min(verified_at) FROM mirror"
        " WHERE store=? AND deleted=0",
        (store,),
    ).fetchone()
    return Verification(int(live), int(unverified or 0), oldest)
