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
   id is the item's id (`invalid_product`) and whose content hash is the item's `hash`; otherwise
   `rejected`, because sending it again will not help.
4. **patch** applies only on top of the exact base it was computed against. An unknown product,
   a deleted one or another base answers `need_full`, and so does a result that does not hash to
   the item's `hash`: the agent's mirror and the hub disagree, and a full upsert repairs that.
   A malformed patch or an invalid patched product is `rejected`. Only what the patch changes is
   validated (`invalid_patch`): the base was validated when it was stored.
5. **delete** marks the product deleted and keeps its last data (operators can still see what was
   there); a product never seen gets a tombstone with empty data, so a late upsert cannot be
   mistaken for a product that still exists.

Items apply in order, each seeing the products as the items before it left them; only the final
state of each product is written, once.

The hub's copy of a product is stored as msgpack (`pack_data`, `unpack_data`): packing costs
about a quarter of encoding JSON text and unpacking a patch base 60 % of parsing it, and only the
rare inspection reads convert it to JSON. The content hash is still computed on the canonical
JSON of the product (`sync.hashing`), for every upsert and every patched product: it is the hub's
guard against diverging from the agent.

What is a valid product: the canonical dict of `model.Product` (`Product.to_dict`), checked
against the model's type annotations without building the dataclasses, which costs a fraction of
`Product.from_dict`. Everything `Product.from_dict` refuses is refused (unknown fields, missing
required fields, nested entries of the wrong shape), and so is what the model's types exclude but
`from_dict` lets through because dataclasses do not check types: a number where text is expected
(money is a decimal string), a status or availability outside its enumeration, a `bool` where an
integer is expected, an unknown key inside a category, image, variant or rating, or `extra` that
is not a map. `None` is accepted wherever the model allows it and `from_dict` takes it (canonical
dicts leave it out).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack

from bridge_agent.model import Product
from bridge_agent.sync.hashing import content_hash
from bridge_agent.sync.patch import apply
from bridge_agent.wire import Batch, Item, ItemStatus, Result

ProductKey = tuple[str, str]  # (store, id)
Packed = bytes | str  # msgpack; str: JSON text, as stored by hubs before the data was msgpack
ProductRow = tuple[str, str, str | None, Packed, int, int, str, int]
TombstoneRow = tuple[int, str, int, str, str]
MemoryRow = tuple[str, int, str, str | None, str, str | None]

EMPTY_DATA = b"\x80"  # msgpack of {}: the data of a tombstone


def pack_data(data: Mapping[str, Any]) -> bytes:
    """The stored form of a product dict (thread-safe; `plan_batch` uses one packer per batch)."""
    packed: bytes = msgpack.packb(data, use_bin_type=True)
    return packed


def unpack_data(packed: Packed) -> dict[str, Any]:
    """A stored product dict; JSON text is read too (databases written before msgpack)."""
    if isinstance(packed, str):
        loaded: dict[str, Any] = json.loads(packed)
        return loaded
    unpacked: dict[str, Any] = msgpack.unpackb(packed, raw=False)
    return unpacked


# What the hub answered to one `(agent, seq)`, and for which change: (op, hash, status, reason).
# A plain tuple, as the database returns it: one is made for every item.
Remembered = tuple[str, str | None, ItemStatus, str | None]


@dataclass(slots=True)
class Stored:
    """One product as the batch sees it: as loaded, then as changed by earlier items.

    `packed` is None when the row's data was not loaded: the database copy is still right and
    only a patch needs it (`db.py` loads it for every product that a patch in the batch targets).
    `data` is the unpacked dict, filled in when an item needed it, so it is unpacked once.
    """

    hash: str | None
    deleted: bool
    packed: Packed | None
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


Pack = Callable[[Any], bytes]


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
    pack: Pack = msgpack.Packer(use_bin_type=True).pack  # one per call: a Packer is not shared
    results: list[Result] = []
    replays = 0
    remembered_now: dict[int, MemoryRow] = {}
    for item in batch.items:
        seq, op, hash_ = item.seq, item.op, item.hash
        seen = memory.get(seq)
        if seen is not None and seen[0] == op and seen[1] == hash_:
            replays += 1
            results.append(Result(seq, seen[2], seen[3]))
            continue
        key = (item.store, item.id)
        current = products.get(key)
        if op == "upsert":
            status, reason, new = _upsert(item, current, pack)
        elif op == "patch":
            status, reason, new = _patch(item, current, pack)
        else:
            status, reason, new = _delete(current)
        if new is not None:
            new.changed = True
            new.seq = seq
            products[key] = new
        results.append(Result(seq, status, reason))
        memory[seq] = (op, hash_, status, reason)
        remembered_now[seq] = (agent, seq, op, hash_, status, reason)

    # Counted after the loop, once per batch, to keep the per-item path short.
    counts: Counter[str] = Counter()
    for op, n in Counter(item.op for item in batch.items).items():
        counts["op." + op] = n
    for status, n in Counter(r.status for r in results).items():
        counts["status." + status] = n
    counts.update(batches=1, items=len(batch.items), replays=replays)
    plan = Plan(results=results, memory=list(remembered_now.values()), counts=counts)
    for (store, product_id), row in products.items():
        if not row.changed:
            continue
        if row.packed is None:
            # Only a delete changes a row without loading its data: flag it, keep the data.
            plan.tombstones.append((now_ms, agent, row.seq, store, product_id))
        else:
            plan.products.append(
                (store, product_id, row.hash, row.packed, int(row.deleted), now_ms, agent, row.seq)
            )
    return plan


Outcome = tuple[ItemStatus, str | None, Stored | None]  # status, reason, new row (None: unchanged)

# What packing can raise on data the JSON encoder took: an integer beyond 64 bits, deep nesting.
_PACK_ERRORS = (TypeError, ValueError, OverflowError)


def _upsert(item: Item, current: Stored | None, pack: Pack) -> Outcome:
    if current is not None and not current.deleted and current.hash == item.hash:
        return "ok", None, None
    assert item.data is not None  # wire.decode_batch requires data for an upsert
    data = item.data
    problem = invalid_product(data, item.id)
    if problem is not None:
        return "rejected", problem, None
    try:
        actual = content_hash(data)
    except (TypeError, ValueError) as exc:  # bytes, NaN: msgpack can carry what JSON cannot
        return "rejected", f"data is not JSON: {exc}", None
    if actual != item.hash:
        return "rejected", f"hash mismatch: data hashes to {actual}", None
    try:
        packed = pack(data)
    except _PACK_ERRORS as exc:
        return "rejected", f"data cannot be stored: {exc}", None
    return "ok", None, Stored(actual, False, packed, data)


def _patch(item: Item, current: Stored | None, pack: Pack) -> Outcome:
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
        if current.packed is None:
            # db.py loads the data of every patch target; reaching this is a bug, not bad input.
            raise RuntimeError(f"base data of {item.store}/{item.id} was not loaded")
        base = current.data = unpack_data(current.packed)  # once, if more patches follow
    try:
        data = apply(base, item.data)
    except (TypeError, ValueError) as exc:  # TypeError: an unhashable field name in "unset"
        return "rejected", f"invalid patch: {exc}", None
    try:
        actual = content_hash(data)
    except (TypeError, ValueError) as exc:
        return "rejected", f"patched data is not JSON: {exc}", None
    if actual != item.hash:
        return "need_full", f"patched data hashes to {actual}, expected {item.hash}", None
    problem = invalid_patch(item.data, data, item.id)
    if problem is not None:
        return "rejected", problem, None
    try:
        packed = pack(data)
    except _PACK_ERRORS as exc:
        return "rejected", f"patched data cannot be stored: {exc}", None
    return "ok", None, Stored(actual, False, packed, data)


def _delete(current: Stored | None) -> Outcome:
    if current is None:
        return "ok", None, Stored(None, True, EMPTY_DATA, {})
    if current.deleted:
        return "ok", None, None
    return "ok", None, Stored(current.hash, True, current.packed, current.data)


# -- validation ----------------------------------------------------------------------------------


def invalid_product(data: Mapping[str, Any], product_id: str) -> str | None:
    """Why `data` is not a canonical product for `product_id`, or None if it is one."""
    if not _product_surely_valid(data):  # then the checks say why, or find it valid after all
        problem = _PRODUCT.fields(data) or _PRODUCT.missing(data)
        if problem is not None:
            return _invalid(problem)
    return _other_id(data, product_id)


def invalid_patch(
    patch: Mapping[str, Any], patched: Mapping[str, Any], product_id: str
) -> str | None:
    """Why `patched`, a valid product with `patch` applied, is not one any more, or None.

    Only the fields the patch sets are checked, plus the required fields and the id: the rest is
    the base, which was checked when it was stored.
    """
    problem = _PRODUCT.fields(patch.get("set", {}))
    if problem is None:
        problem = _PRODUCT.missing(patched)
    if problem is None:
        return _other_id(patched, product_id)
    return _invalid(problem)


def _other_id(data: Mapping[str, Any], product_id: str) -> str | None:
    if data["id"] != product_id:
        return f"invalid product: data.id {data['id']!r} is not the item id {product_id!r}"
    return None


def _invalid(problem: str) -> str:
    # Problems are relative paths ("categories[0].id: ...", ": missing field 'title'").
    return "invalid product: " + (problem[2:] if problem.startswith(": ") else problem)


# A check returns None, or the problem as a path relative to the value it was given followed by
# the message: ": expected ...", "[2]: ...", ".id: ...". Paths are only built on failure.
Check = Callable[[Any], str | None]

_KINDS: dict[type, str] = {
    str: "a string",
    int: "an integer",
    bool: "a boolean",
    float: "a float",
    bytes: "bytes",
    list: "a list",
    tuple: "a list",
    dict: "a map",
    type(None): "null",
}


def _kind(value: Any) -> str:
    return _KINDS.get(type(value)) or (
        "a map" if isinstance(value, Mapping) else type(value).__name__
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Shape:
    """How to check the canonical dict of one model dataclass, compiled from its annotations.

    Fields whose values are plain scalars are checked by the exact type of the value (one set
    lookup, no call); the others (enumerations, lists, nested dataclasses, maps) by a `Check`.
    The checks are closures over local variables: they run for every field of every product.
    """

    def __init__(self, cls: type) -> None:
        self.label = cls.__name__.lower()
        self.required = tuple(
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        self.exact: dict[str, frozenset[type]] = {}
        self.expected: dict[str, str] = {}
        self.checks: dict[str, Check] = {}
        exact, expected, checks = self.exact, self.expected, self.checks
        for name, annotation in typing.get_type_hints(cls).items():
            exact_types, check, expected[name] = _compile(annotation)
            if exact_types is not None:
                exact[name] = exact_types
            else:
                assert check is not None
                checks[name] = check
        #: The fields `value` has, "" before their names (the product itself); no required check.
        self.fields = _fields_check(self.label, exact, checks, expected, (), "")
        #: A whole nested map: its fields, ". " before their names, and the required ones.
        self.whole = _fields_check(self.label, exact, checks, expected, self.required, ".")

    def missing(self, value: Mapping[str, Any]) -> str | None:
        for name in self.required:
            if name not in value:
                return f": missing field {name!r}"
        return None


def _fields_check(
    label: str,
    exact: dict[str, frozenset[type]],
    checks: dict[str, Check],
    expected: dict[str, str],
    required: tuple[str, ...],
    dot: str,
) -> Check:
    names = exact.keys() | checks.keys()

    def check(value: Any) -> str | None:
        if type(value) is not dict and not isinstance(value, Mapping):
            return f": expected a map, got {_kind(value)}"
        for key, item in value.items():
            allowed = exact.get(key)
            if allowed is not None:
                if type(item) in allowed:
                    continue
                return f"{dot}{key}: expected {expected[key]}, got {_kind(item)}"
            field_check = checks.get(key)
            if field_check is None:
                unknown = ", ".join(sorted(str(k) for k in value if k not in names))
                return f": unknown {label} field(s): {unknown}"
            problem = field_check(item)
            if problem is not None:
                return f"{dot}{key}{problem}"
        for name in required:
            if name not in value:
                return f": missing field {name!r}"
        return None

    return check


_EXPECTED = {str: "a string", int: "an integer", bool: "a boolean"}


def _compile(annotation: Any) -> tuple[frozenset[type] | None, Check | None, str]:
    """(exact types, or else a check; what is expected, in words) for one annotation.

    Supports what the model uses: str, int, bool, Literal, `X | None`, `tuple[X, ...]`,
    `tuple[X, Y]`, `Mapping[str, Any]` and nested model dataclasses. Anything else raises at
    import, so a new kind of field in the model cannot slip through unchecked.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        inner, nullable = _optional(annotation)
        exact, check, expected = _compile(inner)
        if not nullable:
            return exact, check, expected
        if exact is not None:
            return exact | {type(None)}, None, expected + " or null"
        assert check is not None
        return None, _or_null(check), expected + " or null"
    if annotation in _EXPECTED:
        return frozenset({annotation}), None, _EXPECTED[annotation]
    if origin is Literal:
        return None, _one_of(args), "one of " + ", ".join(map(str, args))
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        shape = _Shape(annotation)
        return None, shape.whole, f"a {shape.label} map"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return None, _list_of(args[0]), "a list"
    if origin is tuple and args and Ellipsis not in args:
        return None, _fixed(args), f"a list of {len(args)}"
    if origin is Mapping:
        return None, _mapping, "a map"
    raise TypeError(f"the hub cannot validate {annotation!r}")


def _optional(annotation: Any) -> tuple[Any, bool]:
    """`X | None` -> (X, whether None is valid). Not for a nested dataclass (`rating`), which
    `Product.from_dict` builds from a map and so refuses None."""
    rest = [a for a in typing.get_args(annotation) if a is not type(None)]
    if len(rest) != 1:
        raise TypeError(f"the hub cannot validate {annotation!r}")
    return rest[0], not dataclasses.is_dataclass(rest[0])


def _one_of(values: tuple[Any, ...]) -> Check:
    allowed, kinds = frozenset(values), frozenset(map(type, values))
    words = ", ".join(map(str, values))

    def check(value: Any) -> str | None:
        if type(value) in kinds and value in allowed:
            return None
        return f": {_short(value)} is not one of {words}"

    return check


def _or_null(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def _mapping(value: Any) -> str | None:
    if type(value) is dict or isinstance(value, Mapping):
        return None
    return f": expected a map, got {_kind(value)}"


def _is_list(value: Any) -> bool:
    return type(value) is list or type(value) is tuple  # msgpack gives lists, callers may tuples


def _list_of(annotation: Any) -> Check:
    part = _compile(annotation)

    def check(value: Any) -> str | None:
        if not _is_list(value):
            return f": expected a list, got {_kind(value)}"
        for i, item in enumerate(value):
            problem = _check_part(item, part)
            if problem is not None:
                return f"[{i}]{problem}"
        return None

    return check


def _fixed(annotations: tuple[Any, ...]) -> Check:
    parts = [_compile(a) for a in annotations]
    size = len(parts)

    def check(value: Any) -> str | None:
        if not _is_list(value):
            return f": expected a list of {size}, got {_kind(value)}"
        if len(value) != size:
            return f": expected a list of {size}, got a list of {len(value)}"
        for i, (item, part) in enumerate(zip(value, parts, strict=True)):
            problem = _check_part(item, part)
            if problem is not None:
                return f"[{i}]{problem}"
        return None

    return check


def _check_part(value: Any, part: tuple[frozenset[type] | None, Check | None, str]) -> str | None:
    exact, check, expected = part
    if exact is not None:
        return None if type(value) in exact else f": expected {expected}, got {_kind(value)}"
    assert check is not None
    return check(value)


def _compile_fast(cls: type) -> tuple[Callable[[Any], bool], str]:
    """A flat function answering "surely valid?" for the canonical dict of `cls`, and its source.

    The same rules as `_Shape`, written out as one function with the nested loops inline (as
    `dataclasses` writes `__init__`), because the `Check` closures cost a call per nested value:
    this halves the time to validate a product. It only says True or False; on False the
    `_Shape` checks run and explain (or accept a `Mapping` that is not a `dict`).
    """
    names: dict[str, Any] = {"Mapping": Mapping}
    lines = ["def surely_valid(v0):"]
    _emit_shape(cls, "v0", 1, lines, names)
    lines.append("    return True")
    source = "\n".join(lines)
    exec(compile(source, f"<hub validator of {cls.__name__}>", "exec"), names)  # noqa: S102
    return names["surely_valid"], source


def _emit_shape(cls: type, var: str, depth: int, lines: list[str], names: dict[str, Any]) -> None:
    pad, d = "    " * depth, depth
    shape = _Shape(cls)
    exact = f"EXACT_{len(names)}"
    names[exact] = shape.exact
    lines += [
        f"{pad}if type({var}) is not dict: return False",
        f"{pad}for k{d}, x{d} in {var}.items():",
        f"{pad}    t{d} = {exact}.get(k{d})",
        f"{pad}    if t{d} is not None:",
        f"{pad}        if type(x{d}) not in t{d}: return False",
    ]
    for name, annotation in typing.get_type_hints(cls).items():
        if name not in shape.exact:
            lines.append(f"{pad}    elif k{d} == {name!r}:")
            _emit(annotation, f"x{d}", depth + 2, lines, names)
    lines.append(f"{pad}    else: return False")
    lines += [f"{pad}if {name!r} not in {var}: return False" for name in shape.required]


def _emit(annotation: Any, var: str, depth: int, lines: list[str], names: dict[str, Any]) -> None:
    """Lines that `return False` unless `var` is a valid value for `annotation` (see `_compile`)."""
    pad = "    " * depth
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Union or origin is types.UnionType:
        inner, nullable = _optional(annotation)
        if nullable:
            lines.append(f"{pad}if {var} is not None:")
        _emit(inner, var, depth + nullable, lines, names)
    elif annotation in _EXPECTED:
        lines.append(f"{pad}if type({var}) is not {annotation.__name__}: return False")
    elif origin is Literal:
        values, kinds = f"VALUES_{len(names)}", f"KINDS_{len(names)}"
        names[values], names[kinds] = frozenset(args), frozenset(map(type, args))
        lines.append(f"{pad}if type({var}) not in {kinds} or {var} not in {values}: return False")
    elif dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        _emit_shape(annotation, var, depth, lines, names)
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = f"e{depth}"
        lines += [
            f"{pad}if type({var}) is not list and type({var}) is not tuple: return False",
            f"{pad}for {item} in {var}:",
        ]
        _emit(args[0], item, depth + 1, lines, names)
    elif origin is tuple:
        lines.append(
            f"{pad}if (type({var}) is not list and type({var}) is not tuple)"
            f" or len({var}) != {len(args)}: return False"
        )
        for i, part in enumerate(args):
            _emit(part, f"{var}[{i}]", depth, lines, names)
    elif origin is Mapping:
        lines.append(
            f"{pad}if type({var}) is not dict and not isinstance({var}, Mapping): return False"
        )
    else:  # pragma: no cover - _compile refused it first
        raise TypeError(f"the hub cannot validate {annotation!r}")


_PRODUCT = _Shape(Product)
_product_surely_valid, _PRODUCT_SOURCE = _compile_fast(Product)
