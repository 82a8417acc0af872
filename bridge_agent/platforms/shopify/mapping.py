"""Shopify Admin GraphQL product -> canonical `model.Product`. Pure: no I/O, no clock.

`map_product(node, shop=..., images_max=...)` takes a product as the adapter's `ProductFields`
selection returns it (`variants.nodes`, `media.nodes`; a bulk result is assembled into the same
shape by `bulk.py`) and returns `(Product, warnings)`: the warnings are short sentences for the
import report ("no image", "no price"), never errors; a node that cannot be a product (no
product GID) raises `ShopifyPayloadError`.

Ids: the numeric part of the GID (`gid://shopify/Product/123` -> "123"), for the product, its
variants and its images; that is also the id REST-shaped webhooks carry.

Status (`ProductStatus`, design.md section 3):

| Shopify `status` | canonical |
| --- | --- |
| `ACTIVE` | `active` (sold, whether published to the Online Store or not) |
| `DRAFT` | `draft` (not sold yet) |
| `ARCHIVED` | `archived` (no longer sold, kept for records) |
| `UNLISTED` (2025-10+) | `active`, with `extra["unlisted"]` |
| anything else | `draft`, with a warning (a value a newer API version added) |

UNLISTED is active because an unlisted product is sold and reachable by its URL; it is only left
out of search, collections and recommendations. Its page and offers are real (a shopper with the
link buys it), so its structured data must stay; `extra.unlisted` lets the hub tell.

Prices (money stays the decimal string Shopify sends): a variant with `compareAtPrice` above its
`price` is on sale (`regular_price` = compareAtPrice, `sale_price` = price); otherwise
`regular_price` = price and no sale price. The product's prices are those of its cheapest variant
(the "from" price a storefront shows; ties: the first), its `sku` that of its first variant (by
`position`), its `gtin` the barcode of its only variant. `currency` is the shop's
`currencyCode` (a product has no currency of its own): `ShopInfo`.

Availability (Shopify has no stock status; it follows from inventory), per variant: not tracked,
or tracked with `inventoryQuantity` > 0 -> `InStock`; tracked, none left, policy `CONTINUE`
(sell when out of stock) -> `BackOrder`; otherwise `OutOfStock`. The product is the best of its
variants (InStock, then BackOrder, then OutOfStock); `stock_quantity` is `totalInventory`.

Images: the product's `MediaImage` media (videos and 3D models are not images), the featured
one first, then by media id, `position` = index, the first `images_max`; `alt` is the media's
`alt` ("" when none). Not in the order of the gallery: no media field says its position, and a bulk
result (`groupObjects: false`) lists a product's media in no particular order, so the order of
the connection cannot be known there. Every read (bulk, paged, by id) then gives the same
order, and the same product never looks changed only because of how it was read; the main image
(`featuredMedia`, position 0) is always right, and media ids follow the order images were added.
A variant's `image_id` is the product image showing the same image (by image id, else URL).

Categories: the standard product taxonomy `category` first (id = the taxonomy id, e.g.
"aa-1-13"; path from `fullName`, "Apparel & Accessories > Clothing"), then the merchant's own
`productType` as a one-level category (id "type:<productType>"): the taxonomy is what Google and
the hub understand, the product type is how the merchant sorts the shop, and both are kept.
`brand` is `vendor`; `updated_at` is `updatedAt` in UTC with a `Z`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge_agent.model import Availability, Category, Image, Product, Status, Variant

__all__ = [
    "STATUS",
    "ShopInfo",
    "ShopifyPayloadError",
    "gid",
    "gid_number",
    "map_product",
    "map_variant",
    "variant_availability",
]

STATUS: Mapping[str, Status] = {
    "ACTIVE": "active",
    "DRAFT": "draft",
    "ARCHIVED": "archived",
    "UNLISTED": "active",
}
_RANK: Mapping[Availability, int] = {"InStock": 0, "BackOrder": 1, "OutOfStock": 2}
_GID = re.compile(r"gid://shopify/([A-Za-z]+)/([0-9]{1,19})(\?.*)?")
_TYPE_PREFIX = "type:"


class ShopifyPayloadError(ValueError):
    """A node that cannot be mapped to a product at all."""


@dataclass(frozen=True, slots=True)
class ShopInfo:
    """What products do not say but the shop does: read once per adapter (`shop` query)."""

    currency: str | None = None  # `shop.currencyCode`
    public_url: str | None = None  # `shop.primaryDomain.url`, for product URLs


def gid(kind: str, number: str) -> str:
    """The GID of a numeric id: `gid("Product", "123")` -> "gid://shopify/Product/123"."""
    return f"gid://shopify/{kind}/{number}"


def gid_number(value: Any, kind: str | None = None) -> str | None:
    """The numeric part of a GID (of type `kind` when given), or None if it is not one."""
    if not isinstance(value, str):
        return None
    found = _GID.fullmatch(value)
    if found is None or (kind is not None and found.group(1) != kind):
        return None
    return found.group(2)


def map_product(
    node: Mapping[str, Any], *, shop: ShopInfo | None = None, images_max: int = 10
) -> tuple[Product, list[str]]:
    """The canonical product of one `ProductFields` node, and warnings for the import report."""
    product_id = gid_number(node.get("id"), "Product")
    if product_id is None:
        raise ShopifyPayloadError("not a product: no gid://shopify/Product/<n> id")
    shop = shop or ShopInfo()
    warnings: list[str] = []

    raw_status = node.get("status")
    status = STATUS.get(raw_status) if isinstance(raw_status, str) else None
    if status is None:
        warnings.append(f"unknown status {str(raw_status)[:20]!r}, taken as draft")
        status = "draft"

    media = _ordered_media(_nodes(node.get("media")), node.get("featuredMedia"))
    images = _images(media, images_max)
    if not images:
        warnings.append("no image")
    image_ids = _image_index(media)

    variants = sorted(_nodes(node.get("variants")), key=_position)
    mapped = [m for m in (map_variant(v, image_ids) for v in variants) if m is not None]
    if not mapped:
        warnings.append("no variants")

    priced = [v for v in mapped if _decimal(v.price) is not None]
    cheapest = min(priced, key=lambda v: _decimal(v.price) or Decimal(0), default=None)
    if cheapest is None:
        warnings.append("no price")

    handle = _text(node.get("handle"))
    url = f"{shop.public_url.rstrip('/')}/products/{handle}" if handle and shop.public_url else None
    availability = min(
        (v.availability for v in mapped if v.availability is not None),
        key=lambda a: _RANK.get(a, 3),
        default=None,
    )
    raw_seo = node.get("seo")
    seo: Mapping[str, Any] = raw_seo if isinstance(raw_seo, Mapping) else {}
    total = node.get("totalInventory")
    extra: dict[str, Any] = {"unlisted": True} if raw_status == "UNLISTED" else {}

    product = Product(
        id=product_id,
        title=_text(node.get("title")) or "",
        sku=mapped[0].sku if mapped else None,
        slug=handle,
        url=url,
        status=status,
        description_html=_text(node.get("descriptionHtml")),
        seo_title=_text(seo.get("title")),
        seo_description=_text(seo.get("description")),
        price=cheapest.price if cheapest else None,
        regular_price=cheapest.regular_price if cheapest else None,
        sale_price=cheapest.sale_price if cheapest else None,
        currency=shop.currency,
        availability=availability,
        stock_quantity=total if _is_int(total) else None,
        categories=_categories(node),
        tags=tuple(t for t in _list(node.get("tags")) if isinstance(t, str) and t),
        images=images,
        variants=tuple(mapped),
        brand=_text(node.get("vendor")),
        gtin=mapped[0].gtin if len(mapped) == 1 else None,
        updated_at=_utc(node.get("updatedAt")),
        extra=extra,
    )
    return product, warnings


def map_variant(
    node: Mapping[str, Any], image_ids: Mapping[str, str] | None = None
) -> Variant | None:
    """One `VariantFields` node; None when it has no variant GID."""
    variant_id = gid_number(node.get("id"), "ProductVariant")
    if variant_id is None:
        return None
    price = _money(node.get("price"))
    compare = _money(node.get("compareAtPrice"))
    on_sale = (
        price is not None
        and compare is not None
        and (_decimal(compare) or Decimal(0)) > (_decimal(price) or Decimal(0))
    )
    options = tuple(
        (o["name"], o["value"])
        for o in _list(node.get("selectedOptions"))
        if isinstance(o, Mapping)
        and isinstance(o.get("name"), str)
        and isinstance(o.get("value"), str)
    )
    quantity = node.get("inventoryQuantity")
    image = node.get("image")
    image_id = None
    if isinstance(image, Mapping) and image_ids:
        image_id = image_ids.get(str(image.get("id"))) or image_ids.get(str(image.get("url")))
    return Variant(
        id=variant_id,
        sku=_text(node.get("sku")),
        title=_text(node.get("title")),
        options=options,
        price=price,
        regular_price=compare if on_sale else price,
        sale_price=price if on_sale else None,
        availability=variant_availability(node),
        stock_quantity=quantity if _is_int(quantity) else None,
        image_id=image_id,
        gtin=_text(node.get("barcode")),
    )


def variant_availability(node: Mapping[str, Any]) -> Availability:
    """InStock, BackOrder or OutOfStock from a variant's inventory (see the module docstring)."""
    item = node.get("inventoryItem")
    tracked = item.get("tracked") if isinstance(item, Mapping) else None
    quantity = node.get("inventoryQuantity")
    if tracked is False:
        return "InStock"
    if isinstance(quantity, int) and not isinstance(quantity, bool) and quantity > 0:
        return "InStock"
    if node.get("inventoryPolicy") == "CONTINUE":
        return "BackOrder"
    return "OutOfStock"


# -- helpers ---------------------------------------------------------------------------------------


def _nodes(connection: Any) -> list[Mapping[str, Any]]:
    """The nodes of a connection (`nodes`, or `edges[].node`), or of a plain list of them."""
    if isinstance(connection, list):
        return [n for n in connection if isinstance(n, Mapping)]
    if not isinstance(connection, Mapping):
        return []
    nodes = connection.get("nodes")
    if nodes is None and isinstance(connection.get("edges"), list):
        nodes = [e.get("node") for e in connection["edges"] if isinstance(e, Mapping)]
    return [n for n in _list(nodes) if isinstance(n, Mapping)]


def _ordered_media(media: list[Mapping[str, Any]], featured: Any) -> list[Mapping[str, Any]]:
    """The featured media first, then by numeric id (see the module docstring)."""
    first = featured.get("id") if isinstance(featured, Mapping) else None

    def key(node: Mapping[str, Any]) -> tuple[int, int]:
        number = gid_number(node.get("id"))
        return (0 if first is not None and node.get("id") == first else 1, int(number or 0))

    return sorted(media, key=key)


def _images(media: Sequence[Mapping[str, Any]], images_max: int) -> tuple[Image, ...]:
    images: list[Image] = []
    for node in media:
        media_id = gid_number(node.get("id"), "MediaImage")
        image = node.get("image")
        src = image.get("url") if isinstance(image, Mapping) else None
        if media_id is None or not isinstance(src, str) or not src:
            continue  # a video, a 3D model, or an image still processing
        if len(images) >= images_max:
            break
        alt = node.get("alt")
        images.append(
            Image(
                id=media_id, src=src, alt=alt if isinstance(alt, str) else "", position=len(images)
            )
        )
    return tuple(images)


def _image_index(media: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Image id and URL -> the MediaImage's numeric id, to name a variant's image."""
    index: dict[str, str] = {}
    for node in media:
        media_id = gid_number(node.get("id"), "MediaImage")
        image = node.get("image")
        if media_id is None or not isinstance(image, Mapping):
            continue
        for key in (image.get("id"), image.get("url")):
            if isinstance(key, str) and key:
                index.setdefault(key, media_id)
    return index


def _categories(node: Mapping[str, Any]) -> tuple[Category, ...]:
    out: list[Category] = []
    category = node.get("category")
    if isinstance(category, Mapping) and isinstance(category.get("name"), str):
        raw_id = str(category.get("id") or "")
        taxonomy_id = raw_id.rsplit("/", 1)[-1] or category["name"]
        full = category.get("fullName")
        path = (
            tuple(p.strip() for p in full.split(" > ") if p.strip())
            if isinstance(full, str)
            else (category["name"],)
        )
        out.append(Category(id=taxonomy_id, name=category["name"], path=path))
    product_type = _text(node.get("productType"))
    if product_type:
        out.append(
            Category(id=_TYPE_PREFIX + product_type, name=product_type, path=(product_type,))
        )
    return tuple(out)


def _list(value: Any) -> list[Any]:
    """A JSON array, or nothing: a scalar where a list belongs is no list of anything."""
    return value if isinstance(value, list) else []


def _position(node: Mapping[str, Any]) -> int:
    value = node.get("position")
    return value if isinstance(value, int) and not isinstance(value, bool) else 1 << 30


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def _money(value: Any) -> str | None:
    """Money as the decimal string Shopify sends (a `MoneyV2` object's `amount` too)."""
    if isinstance(value, Mapping):
        value = value.get("amount")
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and _decimal(value) is not None else None


def _decimal(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _utc(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError):  # OverflowError: an offset past year 1 or 9999
        return None
