"""Pure rules: content hash, patches, retry schedule. No I/O, no event loop."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge_agent.model import Category, Image, Product, Variant
from bridge_agent.sync import patch
from bridge_agent.sync.hashing import canonical_json, content_hash, strip_cache_busting
from bridge_agent.sync.retry import Backoff, parse_retry_after
from bridge_agent.testing.catalog import make_product

# The hash is part of the hub protocol: if this constant changes, every agent in the field would
# re-ship its whole catalog. Change it only with HASH_VERSION and a migration note.
GOLDEN = {"id": "794", "title": "Hoodie", "price": "19.99", "tags": ["b", "a"], "status": "active"}
GOLDEN_HASH = content_hash(GOLDEN)


def test_golden_hash_is_pinned() -> None:
    text = '{"id":"794","price":"19.99","status":"active","tags":["b","a"],"title":"Hoodie"}'
    assert canonical_json(GOLDEN) == text.encode()
    digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == GOLDEN_HASH
    assert GOLDEN_HASH == "MjqbzkJ2hPG3B7cQVRIerg"


def test_hash_ignores_dict_order() -> None:
    data = make_product(5).to_dict()
    shuffled_keys = list(data)
    random.Random(1).shuffle(shuffled_keys)
    shuffled = {k: data[k] for k in shuffled_keys}
    assert list(shuffled) != list(data)
    assert content_hash(shuffled) == content_hash(data)


def test_hash_same_product_built_in_different_orders() -> None:
    a = Product(id="1", title="T", price="1.00", images=(Image("i", "https://x/a.jpg"),))
    b = Product(images=(Image(src="https://x/a.jpg", id="i"),), price="1.00", title="T", id="1")
    assert content_hash(a.to_dict()) == content_hash(b.to_dict())


def test_hash_stable_across_processes_and_hash_seeds() -> None:
    data = make_product(10).to_dict()  # variable product: nested lists and maps
    code = (
        "import json,sys; from bridge_agent.sync.hashing import content_hash;"
        "print(content_hash(json.loads(sys.stdin.read())))"
    )
    hashes = set()
    for seed in ("0", "1", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(data, sort_keys=False),
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        hashes.add(out.stdout.strip())
    assert hashes == {content_hash(data)}


def test_hash_excludes_volatile_fields() -> None:
    product = make_product(3)
    later = replace(product, updated_at="2030-01-01T00:00:00Z")
    assert content_hash(product.to_dict()) == content_hash(later.to_dict())
    busted = replace(product, images=(Image("i", "https://cdn.x/a.jpg?v=1699999&width=300"),))
    other = replace(product, images=(Image("i", "https://cdn.x/a.jpg?v=42&width=300"),))
    assert content_hash(busted.to_dict()) == content_hash(other.to_dict())
    resized = replace(product, images=(Image("i", "https://cdn.x/a.jpg?v=42&width=600"),))
    assert content_hash(resized.to_dict()) != content_hash(other.to_dict())


def test_hash_changes_with_any_content_field() -> None:
    product = make_product(10)
    base = content_hash(product.to_dict())
    variants = (replace(product.variants[0], price="1.00"), *product.variants[1:])
    for changed in (
        replace(product, price="0.01"),
        replace(product, title=product.title + " "),
        replace(product, seo_description="new"),
        replace(product, variants=variants),
        replace(product, categories=(Category("c9", "Other"),)),
    ):
        assert content_hash(changed.to_dict()) != base


def test_strip_cache_busting_keeps_other_parameters_in_order() -> None:
    assert strip_cache_busting("https://x/a.jpg?w=1&ver=6.4&h=2") == "https://x/a.jpg?w=1&h=2"
    assert strip_cache_busting("https://x/a.jpg") == "https://x/a.jpg"


def test_canonical_json_rejects_nan() -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_product_dict_round_trip() -> None:
    product = make_product(10)
    assert Product.from_dict(json.loads(json.dumps(product.to_dict()))) == product
    with pytest.raises(ValueError, match="unknown product field"):
        Product.from_dict({"id": "1", "title": "x", "colour": "red"})


def test_unset_fields_are_absent_from_the_canonical_dict() -> None:
    data = Product(id="1", title="T").to_dict()
    assert data == {"id": "1", "title": "T", "status": "active"}
    assert "variants" not in data


# -- patches ---------------------------------------------------------------------------------

_values = st.one_of(
    st.text(max_size=5), st.integers(), st.booleans(), st.lists(st.text(max_size=3), max_size=3)
)
_products = st.dictionaries(st.sampled_from(list("abcdefgh")), _values, max_size=8)


@settings(max_examples=300, deadline=None)
@given(_products, _products)
def test_patch_round_trip(base: dict[str, Any], new: dict[str, Any]) -> None:
    delta = patch.diff(base, new)
    assert patch.apply(base, delta) == new
    assert set(delta) <= {"set", "unset"}
    if base == new:
        assert delta == {}


def test_price_patch_is_one_field() -> None:
    old = make_product(1)
    new = replace(old, price="1.23")
    assert patch.diff(old.to_dict(), new.to_dict()) == {"set": {"price": "1.23"}}
    gone = replace(old, images=())
    assert patch.diff(old.to_dict(), gone.to_dict()) == {"unset": ["images"]}


def test_patch_apply_rejects_malformed() -> None:
    with pytest.raises(ValueError):
        patch.apply({}, {"set": [1]})
    with pytest.raises(ValueError):
        patch.apply({}, {"replace": {}})


# -- retry -----------------------------------------------------------------------------------


def test_full_jitter_grows_and_is_capped() -> None:
    backoff = Backoff(base=0.5, cap=10.0)
    assert backoff.delay(0, rand=lambda: 1.0) == 0.5
    assert backoff.delay(3, rand=lambda: 1.0) == 4.0
    assert backoff.delay(50, rand=lambda: 1.0) == 10.0
    assert backoff.delay(5, rand=lambda: 0.0) == 0.0


def test_retry_after_wins_over_the_schedule() -> None:
    backoff = Backoff(base=0.5, cap=10.0)
    assert 30.0 <= backoff.delay(0, retry_after=30.0) <= 31.0
    assert 2.0 <= backoff.delay(9, retry_after=2.0, rand=lambda: 1.0) <= 2.3


def test_parse_retry_after() -> None:
    now = datetime(2026, 11, 23, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("999999") == 3600.0
    http_date = (now + timedelta(seconds=90)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(http_date, now=now) == pytest.approx(90.0)


def test_variant_options_survive_round_trip() -> None:
    v = Variant(id="1", options=(("Size", "M"), ("Colour", "Red")))
    p = Product(id="1", title="x", variants=(v,))
    assert Product.from_dict(p.to_dict()).variants[0].options == v.options
