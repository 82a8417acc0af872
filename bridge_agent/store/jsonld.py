"""The `jsonld` table: what the agent last wrote to each product's `_bridge_jsonld` (schema.py).

One row per (store, product) whose JSON-LD the agent wrote. The apply path writes it in the
transaction that records the optimisation's outcome (`StateStore.journal_outcome`), so a written
document is never left unknown to the keeper (downstream/keeper.py), which then keeps it true to
the store's product:

- `stale` lists the rows whose mirror product changed since the keeper last compared it
  (`mirror.hash IS NOT seen_hash`; a deleted or absent product counts as no hash). Comparing a
  hash column is enough to skip every unchanged product without decoding it, so the keeper's
  look after each recorded change and after a restart costs one indexed join;
- every update the keeper makes is conditioned on the row's `version` as it read it: an
  optimisation applied meanwhile (which bumps the version) wins, and the keeper's older view of
  the row changes nothing.

The crash argument: the store change is committed to the mirror before anyone looks at this
table, and `seen_hash` moves only in the transaction that records what the keeper did about it.
A crash anywhere in between leaves the row stale, and the next look (at start) redoes the work;
the rewrite itself is conditional on the store still holding `document` or already holding the
new one, so doing it twice writes at most once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from bridge_agent.model import Product
from bridge_agent.store.transaction import Transaction, now_ms

STATES: tuple[str, ...] = ("kept", "foreign")


@dataclass(frozen=True, slots=True)
class Kept:
    """A document the agent wrote to a product's `_bridge_jsonld`, and what it was built from."""

    product: str
    hub: Any  # the hub's `jsonld.to` (None: built from the store's product alone)
    fingerprint: str  # jsonld_inputs of the product and hub values it was built from
    document: Any
    seen_hash: str | None  # the mirror hash of the product it was built from (None: unknown)


@dataclass(frozen=True, slots=True)
class Stale:
    """A row whose mirror product changed since the keeper last looked, with that product."""

    product: str
    hub: Any
    fingerprint: str
    document: Any
    version: int
    hash: str | None  # the mirror's hash now (None: deleted or never seen)
    current: Product | None  # the mirror's product now (None: deleted or never seen)


@dataclass(frozen=True, slots=True)
class Row:
    """One row, for status and tests."""

    product: str
    fingerprint: str
    document: Any
    seen_hash: str | None
    state: str
    version: int
    updated_at: int


# -- writes ------------------------------------------------------------------------------------


def keep(tx: Transaction, store: str, kept: Iterable[Kept]) -> None:
    """The apply path wrote these documents: the keeper keeps them from now on (a `foreign` row
    is taken back: the hub sent a new document and the agent wrote it)."""
    now = now_ms()
    tx.executemany(
        "INSERT INTO jsonld (store, product, hub, fingerprint, document, seen_hash, state,"
        " version, updated_at) VALUES (?, ?, ?, ?, ?, ?, 'kept', 1, ?)"
        " ON CONFLICT (store, product) DO UPDATE SET hub=excluded.hub,"
        " fingerprint=excluded.fingerprint, document=excluded.document,"
        " seen_hash=excluded.seen_hash, state='kept', version=jsonld.version+1,"
        " updated_at=excluded.updated_at",
        [
            (store, k.product, _dump(k.hub), k.fingerprint, _dump(k.document), k.seen_hash, now)
            for k in kept
        ],
    )


def rewrite(tx: Transaction, store: str, rewritten: Sequence[tuple[Kept, int]]) -> int:
    """The keeper rewrote these (document, the version it read); rows updated.

    The value a rollback expects the store to hold moves with it: the newest `replaced` row of
    the product's JSON-LD not rolled back gets the rewritten document as its `new_value`, so a
    rollback after a price change restores what the agent replaced instead of taking the
    agent's own rewrite for the merchant's edit."""
    now = now_ms()
    done = 0
    for k, version in rewritten:
        moved = tx.execute(
            "UPDATE jsonld SET fingerprint=?, document=?, seen_hash=?, version=version+1,"
            " updated_at=? WHERE store=? AND product=? AND version=? AND state='kept'",
            (k.fingerprint, _dump(k.document), k.seen_hash, now, store, k.product, version),
        ).rowcount
        if moved:
            tx.execute(
                "UPDATE replaced SET new_value=? WHERE id=(SELECT id FROM replaced"
                " WHERE store=? AND product=? AND field='jsonld' AND rolled_back IS NULL"
                " ORDER BY at DESC, id DESC LIMIT 1)",
                (json.dumps(k.document), store, k.product),
            )
        done += moved
    return done


def see(tx: Transaction, store: str, seen: Sequence[tuple[str, int, str | None]]) -> None:
    """The keeper compared these (product, version, mirror hash): nothing to rewrite."""
    tx.executemany(
        "UPDATE jsonld SET seen_hash=? WHERE store=? AND product=? AND version=?",
        [(hash_, store, product, version) for product, version, hash_ in seen],
    )


def release(tx: Transaction, store: str, released: Sequence[tuple[str, int]]) -> list[str]:
    """Someone else changed these products' `_bridge_jsonld`: left alone from now on. Returns
    the products released (a row whose version moved was not)."""
    now = now_ms()
    return [
        product
        for product, version in released
        if tx.execute(
            "UPDATE jsonld SET state='foreign', version=version+1, updated_at=?"
            " WHERE store=? AND product=? AND version=? AND state='kept'",
            (now, store, product, version),
        ).rowcount
    ]


def release_rolled_back(tx: Transaction, store: str, replaced_ids: Sequence[int]) -> None:
    """A rollback restored these `replaced` rows (already marked rolled back). Per product whose
    JSON-LD was among them:

    - the value restored is a document an earlier optimisation of the agent wrote (its
      `replaced` row is not rolled back): the agent keeps that document fresh again, with that
      optimisation's hub values (`fingerprint` and `seen_hash` cleared: the keeper rebuilds it
      at its next look and writes it only if the store still holds it);
    - otherwise (the merchant's document, or none) it is no longer kept: rewriting it at the
      next price change would undo the rollback. Released quietly: the rollback's own event
      says what happened.
    """
    if not replaced_ids:
        return
    now = now_ms()
    products: dict[str, None] = {}
    for replaced_id in replaced_ids:
        row = tx.execute(
            "SELECT product FROM replaced WHERE store=? AND id=? AND field='jsonld'",
            (store, replaced_id),
        ).fetchone()
        if row is not None:
            products[str(row[0])] = None
    for product in products:
        earlier = tx.execute(
            "SELECT r.new_value, j.fields FROM replaced r"
            " LEFT JOIN journal j ON j.store=r.store AND j.id=r.optimization"
            " WHERE r.store=? AND r.product=? AND r.field='jsonld' AND r.rolled_back IS NULL"
            " ORDER BY r.at DESC, r.id DESC LIMIT 1",
            (store, product),
        ).fetchone()
        if earlier is None:
            tx.execute(
                "UPDATE jsonld SET state='foreign', version=version+1, updated_at=?"
                " WHERE store=? AND product=? AND state='kept'",
                (now, store, product),
            )
            continue
        document = json.loads(earlier[0])
        fields = json.loads(earlier[1]) if earlier[1] else {}
        spec = fields.get("jsonld") if isinstance(fields, dict) else None
        hub = spec.get("to") if isinstance(spec, dict) else None
        tx.execute(
            "UPDATE jsonld SET hub=?, fingerprint='', document=?, seen_hash=NULL, state='kept',"
            " version=version+1, updated_at=? WHERE store=? AND product=?",
            (_dump(hub), _dump(document), now, store, product),
        )


# -- reads -------------------------------------------------------------------------------------


def stale(db: sqlite3.Connection, store: str, after: str, limit: int) -> list[Stale]:
    """Kept rows whose product's mirror hash is not the one last compared, by product id."""
    rows = db.execute(
        "SELECT j.product, j.hub, j.fingerprint, j.document, j.version, m.hash, m.data"
        " FROM jsonld j LEFT JOIN mirror m ON m.store=j.store AND m.id=j.product AND m.deleted=0"
        " WHERE j.store=? AND j.state='kept' AND j.product>? AND m.hash IS NOT j.seen_hash"
        " ORDER BY j.product LIMIT ?",
        (store, after, limit),
    ).fetchall()
    out = []
    for product, hub, fingerprint, document, version, hash_, data in rows:
        current = None if data is None else Product.from_dict(msgpack.unpackb(data, raw=False))
        out.append(
            Stale(
                product,
                _load(hub),
                fingerprint,
                _load(document),
                int(version),
                None if current is None else hash_,
                current,
            )
        )
    return out


def rows(db: sqlite3.Connection, store: str) -> list[Row]:
    found = db.execute(
        "SELECT product, fingerprint, document, seen_hash, state, version, updated_at"
        " FROM jsonld WHERE store=? ORDER BY product",
        (store,),
    ).fetchall()
    return [Row(p, f, _load(d), s, st, int(v), int(u)) for p, f, d, s, st, v, u in found]


def products(
    db: sqlite3.Connection, store: str, ids: Iterable[str]
) -> dict[str, tuple[Product, str]]:
    """The existing products of the mirror among `ids`, with their hash (what a JSON-LD is built
    from, and the `seen_hash` of what is built)."""
    wanted = list(dict.fromkeys(ids))
    out: dict[str, tuple[Product, str]] = {}
    for start in range(0, len(wanted), 500):
        part = wanted[start : start + 500]
        marks = ",".join("?" * len(part))
        query = (
            "SELECT id, data, hash FROM mirror WHERE store=? AND deleted=0"  # noqa: S608
            f" AND data IS NOT NULL AND id IN ({marks})"
        )
        for id_, data, hash_ in db.execute(query, (store, *part)):
            product = Product.from_dict(msgpack.unpackb(data, raw=False))
            out[str(id_)] = (product, str(hash_))
    return out


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)
