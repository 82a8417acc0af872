"""The `events` table: what operators read (`bridge-agent log`, `status`).

Each event has a time, a level, and where known the store, the product, the HTTP status and the
action (what happened: `import`, `verify`, `left_filter`, ...), so a partial failure is reported
per item with what the other side answered (guarantee 7). Events that belong to a state change (a
rejection by the hub, a hint given up) are written in the transaction of that change: the log
never says something happened that was rolled back, and a change is never made without its event.

The table is never pruned, so `newest` must not scan it: it is one query whose filters the
planner can drive from an index. A product filter goes through `events_product (store, product,
id)`; everything else walks `events_at` from the newest time backwards and stops at `since` or
after `limit` rows. Events are ordered by time (`at`, then `id`): an event written with an
earlier time (a batch given its own `at`) is shown where it happened.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bridge_agent.store.transaction import Transaction, now_ms


@dataclass(frozen=True, slots=True)
class Event:
    at: int
    level: str
    store: str | None
    product: str | None
    status: int | None
    message: str
    action: str | None = None


_INSERT = (
    "INSERT INTO events (at, level, store, product, status, message, action)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def add(
    tx: Transaction,
    message: str,
    *,
    level: str = "info",
    store: str | None = None,
    product: str | None = None,
    status: int | None = None,
    action: str | None = None,
) -> None:
    tx.execute(_INSERT, (now_ms(), level, store, product, status, message, action))


def add_many(tx: Transaction, events: Sequence[Event]) -> None:
    tx.executemany(
        _INSERT,
        [(e.at, e.level, e.store, e.product, e.status, e.message, e.action) for e in events],
    )


# The stores that hold events, read from `events_product` one store at a time (a loose index
# scan: one seek per store, however many events each has). A product filter without stores
# needs them to use that index; events without a store have no product of a store either.
_STORES = (
    "WITH RECURSIVE known(store) AS (SELECT min(store) FROM events UNION ALL"
    " SELECT (SELECT min(store) FROM events WHERE store > known.store) FROM known"
    " WHERE known.store IS NOT NULL) "
)


def newest(
    db: sqlite3.Connection,
    limit: int,
    levels: Iterable[str] | None,
    stores: Iterable[str] | None,
    *,
    products: Iterable[str] | None = None,
    since: int | None = None,
) -> list[Event]:
    """The newest `limit` events, newest first; only those of `levels`, `stores` and
    `products` if given, and at or after `since` (epoch ms) if given."""
    where: list[str] = []
    args: list[Any] = []
    prefix = ""
    if products is not None:
        # Both columns of `events_product` by equality: a seek per (store, product).
        if stores is None:
            prefix = _STORES
            where.append("store IN (SELECT store FROM known)")
        else:
            where.append("store IN (SELECT value FROM json_each(?))")
            args.append(json.dumps(list(stores)))
        where.append("product IN (SELECT value FROM json_each(?))")
        args.append(json.dumps(list(products)))
    elif stores is not None:
        # `+store`: not through `events_product`, whose rows of one store would all be read and
        # sorted; `events_at` gives them newest first and the scan stops at `limit`.
        where.append("+store IN (SELECT value FROM json_each(?))")
        args.append(json.dumps(list(stores)))
    if levels is not None:
        where.append("level IN (SELECT value FROM json_each(?))")
        args.append(json.dumps(list(levels)))
    if since is not None:
        where.append("at >= ?")
        args.append(since)
    # Only the constant fragments above are joined; every value is a parameter.
    sql = (
        prefix + "SELECT at, level, store, product, status, message, action FROM events"  # noqa: S608
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY at DESC, id DESC LIMIT ?"
    )  # fmt: skip
    rows = db.execute(sql, (*args, limit)).fetchall()
    return [Event(*r) for r in rows]


def reported_since_recorded(
    db: sqlite3.Connection, store: str, ids: Sequence[str], action: str = "left_filter"
) -> set[str]:
    """The ids with an `action` event at or after their mirror row's last recording."""
    if not ids:
        return set()
    rows = db.execute(
        "SELECT m.id FROM mirror m WHERE m.store=?1 AND m.id IN (SELECT value FROM json_each(?2))"
        " AND EXISTS (SELECT 1 FROM events e WHERE e.store=?1 AND e.product=m.id"
        " AND e.action=?3 AND e.at >= m.recorded_at)",
        (store, json.dumps(list(ids)), action),
    ).fetchall()
    return {str(r[0]) for r in rows}
