"""The rules of `POST /v1/batches`: what each item does to the hub's copy of a product (pure).

`plan_batch` takes a decoded batch plus what the database holds for the products and sequence
numbers the batch mentions, and returns the per-item results and the rows to write. It does no
I/O, so `db.py` can run it between one prefetch and one write inside a single transaction, and the
rules can be read here without any SQL in the way.

Rules, in the order they are checked, and why they hold:

1. **Idempotent on `(agent, seq)`.** The agent ships at least once, so the same item arrives again
   after a lost reply or a crash. If `(agent, seq)` is remembered with the same `op` and `hash`,
   the remembered result is returned and nothing is applied again: replaying an old upsert after a
   newer one must not roll the product back. The same `(agent, seq)` with another `op` or `hash`
   is a different change (an agent whose state was reset starts its sequence again, and after a
   `need_full` the agent re-sends the same row as an `upsert`), so it is processed as new and the
   memory is overwritten.
2. **Idempotent on `(store, id, hash)`.** If the hub already holds that exact content and the
   product is not deleted, the answer is `ok` with no write, for an `upsert` and for a `patch`
   whatever its base: equal hash means equal content (design section 3).
3. **upsert** stores the whole product after checking that it is a valid canonical product whose
   id is the item's id and whose content hash is the item's `hash`; otherwise `rejected`, because
   sending it again will not help.
4. **patch** applies only on top of the exact base it was computed against. An unknown product,
   a deleted one or another base answers `need_full`, and so does a result that does not hash to
   the item's `hash`: the agent's mirror and the hub disagree, and a full upsert repairs that.
   A malformed patch or an invalid patched product is `rejected`.
5. **delete** marks the product deleted and keeps its last data (operators can still see what was
   there); a product never seen gets a tombstone with empty data, so a late upsert cannot be
   mistaken for a product that still exists.

Items apply in order, each seeing the products as the items before it left them; only the final
state of each product is written, once.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge_agent.model import Product
from bridge_agent.sync.hashing import content_hash
from bridge_agent.sync.patch import apply
from bridge_agent.wire import Batch, Item, ItemStatus, Result

# One encoder built once: `json.dumps(..., **options)` builds a new encoder on every call, which
# shows at tens of thousands of items per second. `allow_nan=False` keeps the stored text JSON.
_encode_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode

ProductKey = tuple[str, str]  # (store, id)
ProductRow = tuple[str, str, str | None, str, int, int, str, int]
TombstoneRow = tuple[int, str, int, str, str]
MemoryRow = tuple[str, int, str, str | None, str, str | None]


@dataclass(frozen=True, slots=True)
class Remembered:
    """What the hub answered to one `(agent, seq)`, and for which change."""

    op: str
    hash: str | None
    status: ItemStatus
    reason: str | None


@dataclass(slots=True)
class Stored:
    """One product as the batch sees it: as loaded, then as changed by earlier items.

    `data_json` is None when the row's data was not loaded: the database copy is still right and
    only a patch needs it (`db.py` loads it for every product that a patch in the batch targets).
    """

    hash: str | None
    deleted: bool
    data_json: str | None
    data: Mapping[str, Any] | None = None
    changed: bool = False
    seq: int = 0


@dataclass(slots=True)
class Plan:
    """The outcome of a batch: results in item order, and what to write."""

    results: list[Result]
    products: list[ProductRow] = field(default_factory=list)  # full rows to upsert
    tombstones: list[TombstoneRow] = field(
        default_factory=list
    )  # (updated_at, agent, seq, store, id)
    memory: list[MemoryRow] = field(default_factory=list)  # (agent, seq, op, hash, status, reason)
    counts: Counter[str] = field(default_factory=Counter)  # stats keys -> increments


def plan_batch(
    batch: Batch,
    products: dict[ProductKey, Stored],
    memory: dict[int, Remembered],
    now_ms: int,
) -> Plan:
    """Apply the rules (module docstring) to every item of `batch`.

    `products` holds the stored rows of the products the batch mentions (absent: never seen) and
    `memory` the remembered results of its sequence numbers for `batch.agent`. Both are updated in
    place as items apply, so a product or a seq repeated within one batch sees its earlier item.
    """
    agent = batch.agent
    results: list[Result] = []
    replays = 0
    remembered_now: dict[int, MemoryRow] = {}
    for item in batch.items:
        seen = memory.get(item.seq)
        if seen is not None and seen.op == item.op and seen.hash == item.hash:
            replays += 1
            results.append(Result(item.seq, seen.status, seen.reason))
            continue
        key = (item.store, item.id)
        current = products.get(key)
        if item.op == "upsert":
            status, reason, new = _upsert(item, current)
        elif item.op == "patch":
            status, reason, new = _patch(item, current)
        else:
            status, reason, new = _delete(current)
        if new is not None:
            new.changed = True
            new.seq = item.seq
            products[key] = new
        results.append(Result(item.seq, status, reason))
        memory[item.seq] = Remembered(item.op, item.hash, status, reason)
        remembered_now[item.seq] = (agent, item.seq, item.op, item.hash, status, reason)

    # Counted after the loop, once per batch, to keep the per-item path short.
    counts: Counter[str] = Counter("op." + item.op for item in batch.items)
    counts.update("status." + r.status for r in results)
    counts.update(batches=1, items=len(batch.items), replays=replays)
    plan = Plan(results=results, memory=list(remembered_now.values()), counts=counts)
    for (store, product_id), row in products.items():
        if not row.changed:
            continue
        if row.data_json is None:
            # Only a delete changes a row without loading its data: flag it, keep the data.
            plan.tombstones.append((now_ms, agent, row.seq, store, product_id))
        else:
            plan.products.append(
                (
                    store,
                    product_id,
                    row.hash,
                    row.data_json,
                    int(row.deleted),
                    now_ms,
                    agent,
                    row.seq,
                )
            )
    return plan


Outcome = tuple[ItemStatus, str | None, Stored | None]  # status, reason, new row (None: unchanged)


def _upsert(item: Item, current: Stored | None) -> Outcome:
    if current is not None and not current.deleted and current.hash == item.hash:
        return "ok", None, None
    assert item.data is not None  # wire.decode_batch requires data for an upsert
    data = item.data
    problem = _invalid(data, item.id)
    if problem is not None:
        return "rejected", problem, None
    try:
        actual = content_hash(data)
        data_json = _encode_json(data)
    except (TypeError, ValueError) as exc:  # bytes, NaN: msgpack can carry what JSON cannot
        return "rejected", f"data is not JSON: {exc}", None
    if actual != item.hash:
        return "rejected", f"hash mismatch: data hashes to {actual}", None
    return "ok", None, Stored(actual, False, data_json, data)


def _patch(item: Item, current: Stored | None) -> Outcome:
    if current is None:
        return "need_full", "unknown product", None
    if current.deleted:
        return "need_full", "product is deleted", None
    if current.hash == item.hash:
        return "ok", None, None
    if current.hash != item.base:
        return (
            "need_full",
            f"base mismatch: hub has {current.hash}, patch is against {item.base}",
            None,
        )
    assert item.data is not None  # wire.decode_batch requires data for a patch
    base = current.data
    if base is None:
        if current.data_json is None:
            # db.py loads the data of every patch target; reaching this is a bug, not bad input.
            raise RuntimeError(f"base data of {item.store}/{item.id} was not loaded")
        base = json.loads(current.data_json)
    try:
        data = apply(base, item.data)
    except (TypeError, ValueError) as exc:  # TypeError: an unhashable field name in "unset"
        return "rejected", f"invalid patch: {exc}", None
    try:
        actual = content_hash(data)
        data_json = _encode_json(data)
    except (TypeError, ValueError) as exc:
        return "rejected", f"patched data is not JSON: {exc}", None
    if actual != item.hash:
        return "need_full", f"patched data hashes to {actual}, expected {item.hash}", None
    problem = _invalid(data, item.id)
    if problem is not None:
        return "rejected", problem, None
    return "ok", None, Stored(actual, False, data_json, data)


def _delete(current: Stored | None) -> Outcome:
    if current is None:
        return "ok", None, Stored(None, True, "{}", {})
    if current.deleted:
        return "ok", None, None
    return "ok", None, Stored(current.hash, True, current.data_json, current.data)


def _invalid(data: Mapping[str, Any], product_id: str) -> str | None:
    """Why `data` is not a canonical product for `product_id`, or None if it is one."""
    try:
        Product.from_dict(data)
    except (TypeError, ValueError, KeyError) as exc:
        # KeyError: model.from_dict indexes nested fields (a category without "id") directly.
        message = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        return f"invalid product: {message}"
    if data["id"] != product_id:
        return f"invalid product: data.id {data['id']!r} is not the item id {product_id!r}"
    return None
