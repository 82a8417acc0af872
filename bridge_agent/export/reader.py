"""Streams one store's products out of the state database, a page at a time, in id order.

Why a connection of its own, read-only, and not the `StateStore` facade: the facade runs every
query of the agent on one thread, and an export of a large catalog reads for minutes; through
the facade it would hold up every commit of the running daemon for that long. A second,
read-only connection in WAL mode never blocks the writer and is never blocked by it, so an
export works the same with the agent running or stopped (as `status` reads).

One read transaction for the whole export: every page comes from the same snapshot, so a
product recorded meanwhile is in this export entirely or in the next one, never half (its
variants in one page and the product in another cannot happen either: a product is one row).
The WAL cannot be checkpointed past the snapshot while it is open; an export's minutes are
well within what the WAL absorbs.

Incremental exports (`--since last`): the `meta` row `export:<name>:last` holds the mark of the
previous export of that name: the highest `mirror.recorded_at` its snapshot held, and the ids
recorded at exactly that millisecond. The daemon's writes are serialised and each takes its
time inside its transaction, so a row committed after a snapshot carries a time at or above
that highest one (the wall clock not stepping back); `>= at` minus the ids already exported at
`at` is then exactly what changed since, including a transaction that was in flight while the
previous export read. The mark is computed over the whole store (not the filtered rows), and
saved only after the file is safely written (`save_mark`): an export that fails moves nothing.

A mark names its store: an export name is free text on the command line, and `nightly` run for
store `b` after `nightly` for store `a` must not start from `a`'s time (it would miss every
product of `b` recorded before it). A mark of another store, or one without a store, is no
mark: that export starts over with the whole catalog, and saves a mark of its own.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from bridge_agent.errors import StateStoreError
from bridge_agent.export.fields import Change
from bridge_agent.export.request import LAST, ExportRequest
from bridge_agent.model import Product
from bridge_agent.store import DB_NAME, StateStore
from bridge_agent.store.schema import MIGRATIONS

PAGE = 500


@dataclass(frozen=True, slots=True)
class Item:
    """One mirror row: a product (`product` None when it was deleted) and its extras."""

    id: str
    product: Product | None
    recorded_at: int
    jsonld: Any = None
    history: tuple[Change, ...] = ()


@dataclass(frozen=True, slots=True)
class Mark:
    """Where an incremental export of one name resumes (see the module docstring)."""

    at: int
    ids: tuple[str, ...] = ()
    store: str | None = None  # whose products `at` and `ids` are

    def dumps(self) -> str:
        return json.dumps(
            {"store": self.store, "at": self.at, "ids": list(self.ids)}, separators=(",", ":")
        )

    @classmethod
    def loads(cls, text: str | None) -> Mark | None:
        if not text:
            return None
        try:
            data = json.loads(text)
            store = data.get("store")
            return cls(
                int(data["at"]),
                tuple(str(i) for i in data.get("ids", ())),
                str(store) if store is not None else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # an unreadable mark: export everything, and write a good one


def mark_key(name: str) -> str:
    return f"export:{name}:last"


async def save_mark(state: StateStore, name: str, mark: str) -> None:
    """Record an export's mark once its file is safely written (the scheduler's `state`)."""
    await state.set_meta(mark_key(name), mark)


def _schema_message(path: Path, version: int) -> str:
    """Why a state of another schema cannot be read, and what to do: a newer state was written
    by a newer agent (only upgrading this one helps); an older one is migrated by starting the
    agent (an export never writes the state)."""
    ours = len(MIGRATIONS)
    if version > ours:
        return (
            f"state store {path} has schema {version}, newer than this bridge-agent reads"
            f" ({ours}): it was written by a newer bridge-agent; upgrade bridge-agent"
        )
    return (
        f"state store {path} has schema {version}, older than this bridge-agent reads"
        f" ({ours}): start the agent once (it migrates the state), then export"
    )


class Reader:
    """Open with `Reader.open(state_dir, request)`; iterate `items()`; `mark` for the next."""

    def __init__(self, conn: sqlite3.Connection, request: ExportRequest) -> None:
        self._db = conn
        self.request = request
        self.since: int | None = None
        self._after_ids: frozenset[str] = frozenset()  # recorded at `since`, already exported
        self.mark: Mark | None = None

    @classmethod
    def open(cls, state: Path | str, request: ExportRequest) -> Reader:
        """A read-only snapshot of the state in `state` (the state directory, or its file)."""
        path = Path(state)
        if path.is_dir():
            path = path / DB_NAME
        if not path.exists():
            raise StateStoreError(f"no state store at {path}: the agent has not run here yet")
        try:
            conn = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False
            )
            conn.isolation_level = None
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version != len(MIGRATIONS):
                conn.close()
                raise StateStoreError(_schema_message(path, version))
            conn.execute("BEGIN")  # one snapshot from the first read to the last
            reader = cls(conn, request)
            reader._start()
        except sqlite3.Error as exc:
            raise StateStoreError(f"cannot read state store {path}: {exc}") from exc
        return reader

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # nothing was written; the snapshot ends
            self._db.execute("COMMIT")
        self._db.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        store, request = self.request.store, self.request
        if request.since == LAST:
            row = self._db.execute(
                "SELECT value FROM meta WHERE key=?", (mark_key(request.export_name),)
            ).fetchone()
            previous = Mark.loads(row[0] if row else None)
            if previous is not None and previous.store == store:
                self.since, self._after_ids = previous.at, frozenset(previous.ids)
        elif isinstance(request.since, int):
            self.since = request.since
        (top,) = self._db.execute(
            "SELECT MAX(recorded_at) FROM mirror WHERE store=?", (store,)
        ).fetchone()
        if top is None:
            self.mark = self._previous_or_empty()
            return
        ids = self._db.execute(
            "SELECT id FROM mirror WHERE store=? AND recorded_at=? ORDER BY id", (store, top)
        ).fetchall()
        self.mark = Mark(int(top), tuple(str(i) for (i,) in ids), store)

    def _previous_or_empty(self) -> Mark:
        return Mark(self.since or 0, tuple(sorted(self._after_ids)), self.request.store)

    # -- the stream --------------------------------------------------------------------------

    def items(self, *, jsonld: bool = False, history: bool = False) -> Iterator[Item]:
        """Every wanted row in id order: live products that pass the filters, and (in an
        incremental export) the products deleted since, which no filter can judge."""
        after = ""
        while True:
            page = self._page(after)
            if not page:
                return
            after = page[-1][0]
            kept: list[tuple[str, Product | None, int]] = []
            for id_, data, deleted, recorded_at in page:
                if self.since is not None and (
                    recorded_at < self.since
                    or (recorded_at == self.since and id_ in self._after_ids)
                ):
                    continue
                if deleted or data is None:
                    kept.append((id_, None, recorded_at))
                    continue
                try:
                    product = Product.from_dict(msgpack.unpackb(data, raw=False))
                except (ValueError, TypeError, KeyError) as exc:  # msgpack's errors included
                    raise StateStoreError(
                        f"mirror row {self.request.store}/{id_} cannot be read: {exc}"
                    ) from exc
                if matches(product, self.request.filters):
                    kept.append((id_, product, recorded_at))
            live = [i for i, p, _ in kept if p is not None]
            documents = self._jsonld(live) if jsonld and live else {}
            changes = self._history(live) if history and live else {}
            for id_, kept_product, recorded_at in kept:
                yield Item(
                    id_,
                    kept_product,
                    recorded_at,
                    documents.get(id_),
                    tuple(changes.get(id_, ())),
                )

    def _page(self, after: str) -> list[tuple[str, bytes | None, bool, int]]:
        if self.request.products is not None:  # named products (a backup): those alive
            rows = self._db.execute(
                "SELECT id, data, deleted, recorded_at FROM mirror WHERE store=? AND id>?"
                " AND deleted=0 AND id IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?",
                (self.request.store, after, json.dumps(sorted(self.request.products)), PAGE),
            ).fetchall()
        elif self.since is None:  # a full export: the live catalog
            rows = self._db.execute(
                "SELECT id, data, deleted, recorded_at FROM mirror WHERE store=? AND id>?"
                " AND deleted=0 ORDER BY id LIMIT ?",
                (self.request.store, after, PAGE),
            ).fetchall()
        else:  # what changed since, deletions included
            rows = self._db.execute(
                "SELECT id, data, deleted, recorded_at FROM mirror WHERE store=? AND id>?"
                " AND recorded_at>=? ORDER BY id LIMIT ?",
                (self.request.store, after, self.since, PAGE),
            ).fetchall()
        return [(str(r[0]), r[1], bool(r[2]), int(r[3])) for r in rows]

    def _jsonld(self, ids: Sequence[str]) -> dict[str, Any]:
        rows = self._db.execute(
            "SELECT product, document FROM jsonld WHERE store=? AND state='kept'"
            " AND product IN (SELECT value FROM json_each(?))",
            (self.request.store, json.dumps(list(ids))),
        ).fetchall()
        return {str(p): json.loads(d) for p, d in rows}

    def _history(self, ids: Sequence[str]) -> dict[str, list[Change]]:
        rows = self._db.execute(
            "SELECT product, at, optimization, field, image, old_value, new_value, rolled_back"
            " FROM replaced WHERE store=? AND product IN (SELECT value FROM json_each(?))"
            " ORDER BY product, at, id",
            (self.request.store, json.dumps(list(ids))),
        ).fetchall()
        out: dict[str, list[Change]] = {}
        for product, at, opt, field, image, old, new, rolled_back in rows:
            out.setdefault(str(product), []).append(
                Change(
                    int(at),
                    str(opt),
                    str(field),
                    image,
                    json.loads(old) if old is not None else None,
                    json.loads(new) if new is not None else None,
                    rolled_back is not None,
                )
            )
        return out


def matches(product: Product, filters: Mapping[str, Sequence[str]]) -> bool:
    """Whether the product passes every filter (case-insensitive names; a category matches by
    its name or any name on its path, so `category=Clothing` takes Clothing > Tops too)."""
    for key, accepted in filters.items():
        wanted = {a.casefold() for a in accepted}
        if key == "status":
            values: set[str] = {product.status}
        elif key == "availability":
            values = {product.availability or ""}
        elif key == "brand":
            values = {(product.brand or "").casefold()}
        elif key == "tag":
            values = {t.casefold() for t in product.tags}
        else:  # category
            values = {n.casefold() for c in product.categories for n in (c.name, *c.path)}
        if key in ("status", "availability"):
            if not values & set(accepted):
                return False
        elif not values & wanted:
            return False
    return True
