"""The simulated shop's records, kept in the shape the Admin GraphQL API answers them.

A product is a plain dict whose keys are the schema's field names (`id`, `title`, `seo`,
`updatedAt`...), so graphql-core's default resolver reads it directly and the bulk exporter
projects it without translation; connections (`variants`, `media`, `metafields`) and fields with
arguments are resolved in `resolvers.py` from the private keys (a leading underscore never
collides with a GraphQL name): `_num` the numeric id, `_updated` / `_created` epoch seconds,
`_variants`, `_media`, `_metafields` the children in order. Back references (`product` on a
variant, `variant` on an inventory item) are the parent dict itself, as the schema navigates
both ways.

Ids are Shopify's global ids (`gid://shopify/Product/123`); numbers are large, as real ones are,
and each kind has its own range so a mixed-up id never finds a record of another kind.
"""

from __future__ import annotations

import functools
import hashlib
import json
from datetime import UTC, datetime
from typing import Any

Record = dict[str, Any]

PRODUCT_BASE = 8_800_000_000_000
VARIANT_BASE = 46_000_000_000_000
INVENTORY_BASE = 48_000_000_000_000
MEDIA_BASE = 31_000_000_000_000
METAFIELD_BASE = 29_000_000_000_000
LOCATION_ID = 71_000_000_000

STATUSES = ("ACTIVE", "DRAFT", "ARCHIVED", "UNLISTED")


def gid(kind: str, num: int) -> str:
    return f"gid://shopify/{kind}/{num}"


def parse_gid(value: object) -> tuple[str, int] | None:
    """`("Product", 123)` for `gid://shopify/Product/123` (query strings ignored), else None."""
    if not isinstance(value, str) or not value.startswith("gid://shopify/"):
        return None
    kind, _, rest = value[len("gid://shopify/") :].partition("/")
    rest = rest.split("?", 1)[0]
    if not kind or not rest.isdigit():
        return None
    return kind, int(rest)


def iso(ts: float) -> str:
    """Shopify's DateTime: ISO 8601 UTC, second precision, `Z`."""
    return _iso(int(ts))


@functools.lru_cache(maxsize=1 << 16)
def _iso(ts: int) -> str:
    # Cached: a product, its variants, items and media share their dates.
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rest_time(ts: float) -> str:
    """REST payloads' time: the shop's zone with an offset (the simulated shop runs on UTC)."""
    return datetime.fromtimestamp(int(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def digest(value: str) -> str:
    """A metafield's `compareDigest`: changes whenever its value does."""
    return hashlib.sha256(value.encode()).hexdigest()


def encode(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def plain_text(html: str) -> str:
    """`description`: the HTML body without tags (enough for the generated bodies)."""
    out: list[str] = []
    depth = 0
    for ch in html:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    return " ".join("".join(out).split())


def refresh(product: Record) -> None:
    """Recompute the fields derived from the children (after any change to them)."""
    variants: list[Record] = product["_variants"]
    media: list[Record] = product["_media"]
    for position, variant in enumerate(variants, start=1):
        variant["position"] = position
        refresh_variant(variant)
    product["totalVariants"] = len(variants)
    product["variantsCount"] = {"count": len(variants), "precision": "EXACT"}
    product["mediaCount"] = {"count": len(media), "precision": "EXACT"}
    product["totalInventory"] = sum(
        v["inventoryQuantity"] for v in variants if v["inventoryItem"]["tracked"]
    )
    product["tracksInventory"] = any(v["inventoryItem"]["tracked"] for v in variants)
    product["hasOutOfStockVariants"] = any(not v["availableForSale"] for v in variants)
    product["hasOnlyDefaultVariant"] = len(variants) == 1 and variants[0]["title"] == (
        "Default Title"
    )
    product["featuredMedia"] = media[0] if media else None
    product["featuredImage"] = media[0]["image"] if media else None
    product["description"] = plain_text(product["descriptionHtml"])


def refresh_variant(variant: Record) -> None:
    item = variant["inventoryItem"]
    variant["availableForSale"] = (
        not item["tracked"]
        or variant["inventoryQuantity"] > 0
        or variant["inventoryPolicy"] == "CONTINUE"
    )
    item["sku"] = variant["sku"]


def set_alt(media: Record, alt: str) -> None:
    """A media image's ALT lives on the media (`alt`) and on its image (`altText`)."""
    media["alt"] = alt
    media["image"]["altText"] = alt
