"""What the shipping speed-ups (docs/performance.md, shipping) must not change.

1. The content hash keeps its version (HASH_VERSION 1) while its encoder got faster:
   `sync.hashing` calls json's C encoder directly instead of through `json.JSONEncoder.encode`.
   The hash is part of the hub protocol and stored in every mirror and hub row, so the new path
   must give the same bytes as the rules the module states, for every value, and fail the same
   way on what JSON cannot carry. The reference below is those rules written with the standard
   library's public API, as the encoder was before.
2. The hub decodes the usual batch item, and the agent the usual result, through a one-expression
   fast path (`wire._plain_item`, `wire.decode_results`): it must give what the field-by-field
   checks give, and leave everything else to them.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge_agent import wire
from bridge_agent.errors import WireError
from bridge_agent.model import Category, Image, Product, Variant
from bridge_agent.sync import hashing
from bridge_agent.sync.hashing import HASH_VERSION, canonical_json, content_hash

# -- the reference: the module's rules, as written before the fast path --------------------------

_REFERENCE_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_BUSTING = {"v", "ver", "version", "_", "t", "ts", "cb", "cachebust"}


def _strip(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() not in _BUSTING
    ]
    return urlunsplit(parts._replace(query=urlencode(kept)))


def reference_json(data: dict[str, Any]) -> bytes:
    out = {k: v for k, v in data.items() if k != "updated_at"}
    if isinstance(out.get("url"), str):
        out["url"] = _strip(out["url"])
    images = out.get("images")
    if isinstance(images, list):
        out["images"] = [
            {**i, "src": _strip(i["src"])}
            if isinstance(i, dict) and isinstance(i.get("src"), str)
            else i
            for i in images
        ]
    return _REFERENCE_ENCODER.encode(out).encode("utf-8")


def reference_hash(data: dict[str, Any]) -> str:
    digest = hashlib.blake2b(reference_json(data), digest_size=16).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# -- strategies --------------------------------------------------------------------------------

text = st.text(max_size=12)  # any code point but lone surrogates (not UTF-8: tested apart)
urls = st.one_of(
    text,
    st.builds(
        lambda path, query: f"https://cdn.example/{path}" + (f"?{query}" if query else ""),
        st.sampled_from(["a.jpg", "p/1", ""]),
        st.lists(
            st.tuples(st.sampled_from(["v", "ver", "w", "size", "_", "T"]), text), max_size=3
        ).map(urlencode),
    ),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),  # JSON takes any integer
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=20,
)
images = st.lists(
    st.one_of(
        st.fixed_dictionaries({"src": urls}, optional={"id": text, "alt": text, "x": scalars}),
        json_values,
    ),
    max_size=3,
)
product_dicts = st.fixed_dictionaries(
    {"id": text},
    optional={
        "title": text,
        "url": urls,
        "price": st.sampled_from(["1.00", "1.0", "2.50"]),
        "updated_at": text,
        "images": images,
        "tags": st.lists(text, max_size=3),
        "extra": st.dictionaries(text, json_values, max_size=3),
        "stock_quantity": st.one_of(
            st.none(), st.integers(), st.floats(allow_nan=False, allow_infinity=False)
        ),
    },
)

products = st.builds(
    Product,
    id=st.sampled_from(["1", "2"]),
    title=st.sampled_from(["Hoodie", "Mug", ""]),
    price=st.sampled_from([None, "19.99", "20.00"]),
    url=st.one_of(st.none(), urls),
    updated_at=st.one_of(st.none(), st.sampled_from(["2026-01-01T00:00:00Z", "2026-06-01"])),
    tags=st.lists(st.sampled_from(["a", "b"]), max_size=2).map(tuple),
    images=st.lists(st.builds(Image, id=st.sampled_from(["i1", "i2"]), src=urls), max_size=2).map(
        tuple
    ),
    categories=st.lists(
        st.builds(Category, id=st.sampled_from(["c1", "c2"]), name=st.sampled_from(["A", "B"])),
        max_size=2,
    ).map(tuple),
    variants=st.lists(
        st.builds(Variant, id=st.sampled_from(["v1", "v2"]), price=st.sampled_from(["1", None])),
        max_size=2,
    ).map(tuple),
    extra=st.dictionaries(st.sampled_from(["k", "weight"]), json_values, max_size=2),
)


# -- the tests ---------------------------------------------------------------------------------


def test_the_hash_version_is_still_1() -> None:
    # A change of the bytes below is a new hash version: a migration of every mirror and a hub
    # that accepts both (see the module docstring of sync/hashing.py).
    assert HASH_VERSION == 1


@settings(max_examples=400, deadline=None)
@given(product_dicts)
def test_same_bytes_and_hash_as_the_rules(data: dict[str, Any]) -> None:
    assert canonical_json(data) == reference_json(data)
    assert content_hash(data) == reference_hash(data)


@settings(max_examples=300, deadline=None)
@given(product_dicts, product_dicts)
def test_equal_and_unequal_exactly_as_before(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert (content_hash(a) == content_hash(b)) == (reference_hash(a) == reference_hash(b))


@settings(max_examples=300, deadline=None)
@given(products, products)
def test_products_compare_as_before(a: Product, b: Product) -> None:
    da, db = a.to_dict(), b.to_dict()
    assert (content_hash(da) == content_hash(db)) == (reference_hash(da) == reference_hash(db))
    assert content_hash(da) == reference_hash(da)
    # A change outside the volatile fields is a change, as before.
    changed = replace(a, title=a.title + "!").to_dict()
    assert content_hash(changed) != content_hash(da)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        (b"bytes", TypeError),  # msgpack carries bytes, JSON cannot: the hub rejects the item
        ({1: "a", "b": 2}, TypeError),  # keys that cannot be sorted together
        ("\ud800", UnicodeEncodeError),  # a lone surrogate is not UTF-8
        ({"x": {1, 2}}, TypeError),
    ],
)
def test_what_json_refuses_is_refused_the_same_way(value: Any, error: type[Exception]) -> None:
    data = {"id": "1", "extra": value}
    with pytest.raises(error) as reference:
        reference_hash(data)
    with pytest.raises(error) as fast:
        content_hash(data)
    assert str(fast.value) == str(reference.value)


def test_the_pure_python_encoder_gives_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without json's C accelerator the module falls back to JSONEncoder.iterencode.
    slow = json.JSONEncoder(
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).iterencode
    data = {"id": "7", "b": [1, 2.5, None, True], "a": {"z": "é", "y": "x?v=1"}, "url": "u?v=2"}
    fast = canonical_json(data)
    monkeypatch.setattr(hashing, "_encode", slow)
    assert canonical_json(data) == fast == reference_json(data)


# -- the wire decoders' fast paths -----------------------------------------------------------------

odd = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.just(""), st.just("x" * 40), text,
    st.just({}), st.just([]), st.floats(allow_nan=False),
)  # fmt: skip
item_maps = st.fixed_dictionaries(
    {},
    optional={
        "seq": st.one_of(st.integers(0, 2**40), odd),
        "store": st.one_of(st.just("main"), odd),
        "id": st.one_of(st.just("17"), odd),
        "op": st.one_of(st.sampled_from(["upsert", "patch", "delete", "merge"]), odd),
        "hash": st.one_of(st.just("MjqbzkJ2hPG3B7cQVRIerg"), odd),
        "base": st.one_of(st.just("8hSfdZF_Rupy0d3yjoiJFA"), odd),
        "data": st.one_of(st.just({"id": "17"}), st.just({"set": {"price": "1.00"}}), odd),
        "observed_at": st.one_of(st.integers(0, 2**45), odd),
        "source": st.one_of(st.sampled_from(["import", "webhook"]), odd),
        "kind": st.one_of(st.just("product"), odd),
    },
)


def _checked(raw: Any) -> wire.Item | str:
    try:
        return wire._item(raw, "items[0]")
    except WireError as exc:
        return str(exc)


@settings(max_examples=600, deadline=None)
@given(item_maps)
def test_the_hubs_item_fast_path_agrees_with_the_checks(raw: dict[str, Any]) -> None:
    plain = wire._plain_item(raw)
    if plain is not None:
        assert plain == _checked(raw)


def test_the_shippers_items_take_the_fast_path() -> None:
    data = {"id": "17", "title": "Mug"}
    upsert = wire.Item(1, "main", "17", "upsert", content_hash(data), 5, "import", data=data)
    patch = replace(upsert, seq=2, op="patch", base="b" * 22, data={"set": {"title": "Cup"}})
    delete = wire.Item(3, "main", "17", "delete", None, 6, "webhook")
    for item in (upsert, patch, delete):
        raw = msgpack.unpackb(wire.encode_item(item), raw=False)
        assert wire._plain_item(raw) == item == wire._item(raw, "items[0]")


result_entries = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "seq": st.one_of(st.integers(0, 2**40), odd),
            "status": st.one_of(st.sampled_from(["ok", "need_full", "rejected"]), odd),
            "reason": st.one_of(st.none(), text, odd),
        },
    ),
    odd,
)


def _reference_results(entries: list[Any]) -> tuple[wire.Result, ...] | str:
    """decode_results' rules, field by field, as before the fast path."""
    out = []
    for i, one in enumerate(entries):
        where = f"results[{i}]"
        if not isinstance(one, dict):
            return f"{where}: expected a map, got {type(one).__name__}"
        status = one.get("status")
        if "status" not in one:
            return f"{where}.status: missing"
        if not isinstance(status, str):
            return f"{where}.status: expected str, got {type(status).__name__}"
        if not status:
            return f"{where}.status: empty"
        if status not in wire.ITEM_STATUSES:
            return f"{where}.status: unknown status {status!r}"
        reason = one.get("reason")
        if reason is not None and not isinstance(reason, str):
            return f"{where}.reason: expected a string"
        seq = one.get("seq")
        if "seq" not in one:
            return f"{where}.seq: missing"
        if not isinstance(seq, int):
            return f"{where}.seq: expected int, got {type(seq).__name__}"
        if isinstance(seq, bool):
            return f"{where}.seq: expected int, got bool"
        out.append(wire.Result(seq, status, reason))  # type: ignore[arg-type]
    return tuple(out)


@settings(max_examples=400, deadline=None)
@given(st.lists(result_entries, max_size=4))
def test_the_agents_result_decoding_is_unchanged(entries: list[Any]) -> None:
    body = wire.packb({"v": 1, "results": entries})
    try:
        got: tuple[wire.Result, ...] | str = wire.decode_results(body)
    except WireError as exc:
        got = str(exc)
    assert got == _reference_results(entries)


def test_a_reply_nested_deep_in_an_unread_field_is_still_decoded() -> None:
    # decode_results no longer walks the whole reply: what it does not read, it drops.
    deep: Any = "x"
    for _ in range(40):
        deep = [deep]
    body = wire.packb({"v": 1, "results": [{"seq": 1, "status": "ok"}], "debug": deep})
    assert wire.decode_results(body) == (wire.Result(1, "ok"),)
