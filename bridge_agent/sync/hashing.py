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
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
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
    return _ENCODER.encode(_stable(data)).encode("utf-8")


def content_hash(data: Mapping[str, Any]) -> str:
    """Hash of a canonical product dict (see the module rules)."""
    digest = hashlib.blake2b(canonical_json(data), digest_size=16).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


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


_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
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
    if isinstance(images, list) and any(
        isinstance(i, dict) and "?" in str(i.get("src", "")) for i in images
    ):
        out["images"] = [
            {**i, "src": strip_cache_busting(i["src"])}
            if isinstance(i, dict) and isinstance(i.get("src"), str)
            else i
            for i in images
        ]
    return out


def product_hash(product: Product) -> str:
    """The content hash of a product as the mirror stores it: the canonical model's rules
    applied first (`model.settle`), so every source compares the same thing."""
    return content_hash(settle(product).to_dict())
