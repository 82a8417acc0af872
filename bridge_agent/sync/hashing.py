"""Content hash of a canonical product: equal hash means nothing to ship.

Rules, and why they hold:

- The hash covers the *canonical encoding*: JSON with sorted keys, no whitespace, UTF-8, no NaN.
  Sorting makes it independent of dict order; JSON text (not Python `hash()`, not pickle) makes it
  the same in every process and Python version. Floats do not appear in canonical products (money
  and ratings are strings), and JSON's float text is Python's shortest round-trip repr anyway.
- Volatile fields are left out, because they change without the product changing: `updated_at`
  (the platform bumps it on no-op saves) and cache-busting query parameters in URLs (`?v=1699...`
  on Shopify's CDN, `?ver=` in WordPress). The shipped data keeps them; only the hash ignores them.
- The digest is BLAKE2b-128, written as 22 characters of unpadded base64url. 128 bits make an
  accidental collision between two versions of one product out of the question, and 22 characters
  keep a one-field patch small on the wire (it carries two hashes). The hash is part of the hub
  protocol: changing these rules changes every hash, so it is versioned by `HASH_VERSION`.
- Hashing runs for every recorded change and for every item the hub receives (its check of the
  agent's hash), so it is on the shipping path of both processes. The encoder is json's C
  encoder called directly (about 8 us a product, most of it the C encoder itself). A
  msgpack-based version 2 was measured and rejected: sorting keys at every depth in Python costs
  what msgpack saves (docs/performance.md, shipping), so it would bump the protocol for nothing.
"""

from __future__ import annotations

import json
from binascii import b2a_base64
from collections.abc import Callable, Iterable, Mapping
from hashlib import blake2b
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bridge_agent.model import Product, settle

HASH_VERSION = 1

VOLATILE_FIELDS = frozenset({"updated_at"})
# Query parameters that only defeat caches; seen on Shopify's CDN (v), WordPress (ver), and
# generic asset pipelines. Parameters not listed here are content (a resized image, a variant).
CACHE_BUSTING_PARAMS = frozenset({"v", "ver", "version", "_", "t", "ts", "cb", "cachebust"})


def canonical_json(data: Mapping[str, Any]) -> bytes:
    """The canonical encoding of a product dict, volatile parts removed."""
    return "".join(_encode(_stable(data), 0)).encode("utf-8")


def content_hash(data: Mapping[str, Any]) -> str:
    """Hash of a canonical product dict (see the module rules)."""
    digest = blake2b("".join(_encode(_stable(data), 0)).encode("utf-8"), digest_size=16).digest()
    # base64url of 16 bytes is 22 characters and "==": `urlsafe_b64encode`, one call shorter.
    return b2a_base64(digest, newline=False)[:22].translate(_URLSAFE).decode("ascii")


def strip_cache_busting(url: str) -> str:
    """`url` without cache-busting query parameters; other parameters keep their order."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k.lower() not in CACHE_BUSTING_PARAMS
    ]
    return urlunsplit(parts._replace(query=urlencode(kept)))


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _refuse(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# json's C encoder, made once: what `json.JSONEncoder(sort_keys=True, separators=(",", ":"),
# ensure_ascii=False, allow_nan=False).encode` runs, minus a new encoder object and a dict of
# visited containers per call (check_circular: a product is a tree, decoded or built by
# `to_dict`, never a cycle). Same bytes; with the loop in `_stable` and the shorter base64, a
# product's hash takes 8.1 us instead of 10.1 (docs/performance.md, shipping).
# Positional: markers, default, string encoder, indent, key and item separators, sort_keys,
# skipkeys, allow_nan.
# Called as `_encode(value, 0)`: the C encoder's second argument is the indent level, the pure
# one's `_one_shot` (0: false, a generator); both give the chunks of the text.
_encode: Callable[..., Iterable[str]] = (
    c_make_encoder(None, _refuse, encode_basestring, None, ":", ",", True, False, False)
    if c_make_encoder is not None
    else json.JSONEncoder(  # pure-Python json (no C accelerator): the same rules, slower
        sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).iterencode
)


def _stable(data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` without volatile fields and with cache-busting parameters removed from URLs.

    The canonical model has URLs in two places only, the product `url` and each image's `src`;
    the JSON encoder sorts keys at every depth, so nothing else needs copying. Hashing runs for
    every observed change and every item the hub receives, which is why this is not a generic
    recursive walk.
    """
    out = dict(data)  # a C-level copy; then drop the few volatile keys (faster than filtering)
    for key in VOLATILE_FIELDS:
        out.pop(key, None)
    url = out.get("url")
    if isinstance(url, str) and "?" in url:
        out["url"] = strip_cache_busting(url)
    images = out.get("images")
    if isinstance(images, list):
        for image in images:  # a loop, not any(...): no generator per product
            if isinstance(image, dict):
                src = image.get("src")
                if isinstance(src, str) and "?" in src:
                    out["images"] = [_strip_src(i) for i in images]
                    break
    return out


def _strip_src(image: Any) -> Any:
    if isinstance(image, dict) and isinstance(image.get("src"), str):
        return {**image, "src": strip_cache_busting(image["src"])}
    return image


def product_hash(product: Product) -> str:
    """The content hash of a product as the mirror stores it: the canonical model's rules
    applied first (`model.settle`), so every source compares the same thing."""
    return content_hash(settle(product).to_dict())
