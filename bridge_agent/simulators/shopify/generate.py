"""A realistic, seeded catalog: the same seed gives the same shop.

What it contains, and why (each is something an adapter must map or survive):

- products with 1-5 variants (about 3 on average) over Size / Color / Material options, a
  single-variant product having Shopify's "Default Title" variant and option;
- SKUs (a few missing), barcodes (EAN-13, a few missing), prices as decimal strings, some with a
  `compareAtPrice` above the price (on sale);
- inventory tracked or not, quantities (some zero), policy DENY (most) or CONTINUE (oversell);
- 0-4 images per product, ALT text present, empty or missing;
- SEO title / description set, or null (the theme falls back to title and description);
- tags, vendor, product type, handle; statuses mostly ACTIVE, some DRAFT, ARCHIVED, UNLISTED;
- creation and update dates over the two years before `epoch`, some products sharing an update
  second (the `updated_at:>` boundary case), a few metafields.
"""

from __future__ import annotations

import random
import re
from typing import Any

from bridge_agent.simulators.shopify.model import (
    INVENTORY_BASE,
    MEDIA_BASE,
    METAFIELD_BASE,
    PRODUCT_BASE,
    VARIANT_BASE,
    Record,
    digest,
    gid,
    iso,
    refresh,
)

_NOUNS = (
    "Shirt", "Oxford Shirt", "Polo", "T-Shirt", "Jacket", "Parka", "Dress", "Sweater",
    "Cardigan", "Hoodie", "Scarf", "Beanie", "Sneaker", "Boot", "Pan", "Mug", "Bowl", "Lamp",
    "Headphones", "Backpack", "Tote", "Duffel",
)  # fmt: skip
_ADJECTIVES = (
    "Classic", "Organic", "Vintage", "Everyday", "Café", "Alpine", "Coastal", "Heritage",
    "Nordic", "Urban", "Soft", "Rugged", "Linen", "Merino",
)  # fmt: skip
_VENDORS = ("Northwind", "Acme Goods", "Maison Lumière", "Fjord & Co", "Kumo")
_TYPES = ("Apparel", "Footwear", "Kitchen", "Lighting", "Audio", "Bags")
_TAGS = ("new", "sale", "summer", "winter", "bestseller", "eco", "gift", "limited")
_OPTIONS = {
    "Size": ("XS", "S", "M", "L", "XL"),
    "Color": ("Black", "White", "Navy", "Olive", "Sand"),
    "Material": ("Cotton", "Wool", "Linen"),
}
_TWO_YEARS = 2 * 365 * 24 * 3600


def handleize(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "product"


class Numbers:
    """The shop's id counters, one range per kind."""

    def __init__(self) -> None:
        self.product = PRODUCT_BASE
        self.variant = VARIANT_BASE
        self.media = MEDIA_BASE
        self.metafield = METAFIELD_BASE

    def next(self, kind: str) -> int:
        value: int = getattr(self, kind) + 1
        setattr(self, kind, value)
        return value


def new_product(numbers: Numbers, fields: dict[str, Any], *, now: int, shop_domain: str) -> Record:
    """A product record with no children yet; `fields` are GraphQL names (title, status...)."""
    num = numbers.next("product")
    title = str(fields.get("title") or "Untitled product")
    status = str(fields.get("status") or "ACTIVE")
    product: Record = {
        "__typename": "Product",
        "id": gid("Product", num),
        "legacyResourceId": str(num),
        "title": title,
        "handle": str(fields.get("handle") or f"{handleize(title)}-{num % 100000}"),
        "status": status,
        "descriptionHtml": str(fields.get("descriptionHtml") or ""),
        "seo": {"title": None, "description": None, **(fields.get("seo") or {})},
        "vendor": str(fields.get("vendor") or ""),
        "productType": str(fields.get("productType") or ""),
        "tags": sorted({str(t) for t in fields.get("tags") or []}),
        "createdAt": iso(now),
        "updatedAt": iso(now),
        "publishedAt": iso(now) if status == "ACTIVE" else None,
        "isGiftCard": False,
        "requiresSellingPlan": False,
        "templateSuffix": None,
        "options": [],
        "_num": num,
        "_created": now,
        "_updated": now,
        "_variants": [],
        "_media": [],
        "_metafields": [],
    }
    product["onlineStoreUrl"] = (
        f"https://{shop_domain}/products/{product['handle']}" if status == "ACTIVE" else None
    )
    return product


def set_options(product: Record, options: list[tuple[str, list[str]]]) -> None:
    product["options"] = [
        {
            "__typename": "ProductOption",
            "id": gid("ProductOption", product["_num"] * 10 + position),
            "name": name,
            "position": position,
            "values": values,
            "optionValues": [
                {
                    "__typename": "ProductOptionValue",
                    "id": gid("ProductOptionValue", product["_num"] * 100 + position * 10 + i),
                    "name": value,
                    "hasVariants": True,
                }
                for i, value in enumerate(values)
            ],
        }
        for position, (name, values) in enumerate(options, start=1)
    ]


def add_variant(numbers: Numbers, product: Record, fields: dict[str, Any], *, now: int) -> Record:
    """Append a variant (and its inventory item); `fields` are GraphQL names."""
    num = numbers.next("variant")
    item_num = INVENTORY_BASE + (num - VARIANT_BASE)
    selected = fields.get("selectedOptions") or [{"name": "Title", "value": "Default Title"}]
    variant: Record = {
        "__typename": "ProductVariant",
        "id": gid("ProductVariant", num),
        "legacyResourceId": str(num),
        "title": " / ".join(str(o["value"]) for o in selected),
        "sku": fields.get("sku"),
        "barcode": fields.get("barcode"),
        "price": str(fields.get("price") or "0.00"),
        "compareAtPrice": fields.get("compareAtPrice"),
        "inventoryQuantity": int(fields.get("inventoryQuantity") or 0),
        "inventoryPolicy": str(fields.get("inventoryPolicy") or "DENY"),
        "selectedOptions": [
            {"__typename": "SelectedOption", "name": str(o["name"]), "value": str(o["value"])}
            for o in selected
        ],
        "taxable": True,
        "image": None,
        "createdAt": iso(now),
        "updatedAt": iso(now),
        "product": product,
        "_num": num,
    }
    variant["displayName"] = f"{product['title']} - {variant['title']}"
    variant["inventoryItem"] = {
        "__typename": "InventoryItem",
        "id": gid("InventoryItem", item_num),
        "legacyResourceId": str(item_num),
        "tracked": bool(fields.get("tracked", True)),
        "sku": variant["sku"],
        "requiresShipping": True,
        "createdAt": iso(now),
        "updatedAt": iso(now),
        "variant": variant,
        "_num": item_num,
    }
    product["_variants"].append(variant)
    return variant


def add_media(
    numbers: Numbers, product: Record, *, url: str, alt: str, width: int, height: int, now: int
) -> Record:
    num = numbers.next("media")
    media: Record = {
        "__typename": "MediaImage",
        "id": gid("MediaImage", num),
        "alt": alt,
        "mediaContentType": "IMAGE",
        "status": "READY",
        "fileStatus": "READY",
        "mimeType": "image/jpeg",
        "createdAt": iso(now),
        "updatedAt": iso(now),
        "image": {
            "__typename": "Image",
            "id": gid("ProductImage", num),
            "url": url,
            "src": url,
            "originalSrc": url,
            "transformedSrc": url,
            "altText": alt,
            "width": width,
            "height": height,
        },
        "_num": num,
        "_product": product,
    }
    media["preview"] = {
        "__typename": "MediaPreviewImage",
        "status": "READY",
        "image": media["image"],
    }
    product["_media"].append(media)
    return media


def set_metafield(
    numbers: Numbers,
    owner: Record,
    *,
    namespace: str,
    key: str,
    type_: str,
    value: str,
    now: int,
) -> Record:
    """Create or replace the owner's metafield `namespace.key` (upsert, as metafieldsSet)."""
    existing: Record
    for existing in owner["_metafields"]:
        if existing["namespace"] == namespace and existing["key"] == key:
            existing.update(
                type=type_, value=value, compareDigest=digest(value), updatedAt=iso(now)
            )
            return existing
    num = numbers.next("metafield")
    field: Record = {
        "__typename": "Metafield",
        "id": gid("Metafield", num),
        "legacyResourceId": str(num),
        "namespace": namespace,
        "key": key,
        "type": type_,
        "value": value,
        "compareDigest": digest(value),
        "ownerType": "PRODUCTVARIANT" if owner["__typename"] == "ProductVariant" else "PRODUCT",
        "owner": owner,
        "createdAt": iso(now),
        "updatedAt": iso(now),
        "_num": num,
    }
    owner["_metafields"].append(field)
    return field


def ean13(rng: random.Random) -> str:
    """A valid EAN-13 (GTIN-13): twelve digits and their check digit."""
    digits = [rng.randrange(10) for _ in range(12)]
    total = sum(d * (3 if i % 2 else 1) for i, d in enumerate(digits))
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


def _price(rng: random.Random) -> str:
    units = rng.choice((9, 14, 19, 24, 29, 39, 49, 79, 99, 149))
    return f"{units}.{rng.choice(('00', '95', '99', '50'))}"


def populate(
    products: dict[int, Record],
    numbers: Numbers,
    rng: random.Random,
    *,
    count: int,
    epoch: int,
    shop_domain: str,
    image_origin: str,
) -> None:
    """Fill `products` with `count` generated products dated before `epoch`."""
    burst = epoch - rng.randrange(30 * 24 * 3600)  # an import: many products, one second
    for n in range(count):
        created = epoch - rng.randrange(_TWO_YEARS)
        updated = burst if rng.random() < 0.05 else rng.randrange(created, epoch)
        title = f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"
        roll = rng.random()
        status = (
            "ACTIVE"
            if roll < 0.8
            else "DRAFT"
            if roll < 0.9
            else "ARCHIVED"
            if roll < 0.96
            else "UNLISTED"
        )
        body = (
            f"<p>The {title.lower()}: made to last, designed in-house.</p>"
            f"<ul><li>Model {n + 1}</li><li>Care: see label</li></ul>"
        )
        seo: dict[str, Any] = {"title": None, "description": None}
        if rng.random() < 0.6:
            seo["title"] = f"{title} | Shop"
        if rng.random() < 0.5:
            seo["description"] = f"Buy the {title.lower()} online."
        product = new_product(
            numbers,
            {
                "title": title,
                "status": status,
                "descriptionHtml": body if rng.random() < 0.95 else "",
                "seo": seo,
                "vendor": rng.choice(_VENDORS),
                "productType": rng.choice(_TYPES),
                "tags": rng.sample(_TAGS, rng.randrange(0, 4)),
            },
            now=created,
            shop_domain=shop_domain,
        )
        _variants(numbers, product, rng, created)
        for i in range(rng.choice((0, 1, 1, 2, 2, 3, 4))):
            roll = rng.random()
            alt = f"{title}, view {i + 1}" if roll < 0.7 else ""
            add_media(
                numbers,
                product,
                url=f"{image_origin}/files/{product['_num']}-{i + 1}.jpg",
                alt=alt,
                width=rng.choice((800, 1200, 2048)),
                height=rng.choice((800, 1200, 1600)),
                now=created,
            )
        if rng.random() < 0.1:
            set_metafield(
                numbers,
                product,
                namespace="custom",
                key="material",
                type_="single_line_text_field",
                value=rng.choice(("cotton", "wool", "steel")),
                now=created,
            )
        product["_updated"] = updated
        product["updatedAt"] = iso(updated)
        refresh(product)
        products[product["_num"]] = product


def _variants(numbers: Numbers, product: Record, rng: random.Random, now: int) -> None:
    # 1-5 variants, about 3 on average: weights 1:1, 2:2, 3:3, 4:2, 5:2 -> mean 3.2.
    wanted = rng.choice((1, 2, 2, 3, 3, 3, 4, 4, 5, 5))
    if wanted == 1:
        set_options(product, [("Title", ["Default Title"])])
        combos: list[list[dict[str, str]]] = [[{"name": "Title", "value": "Default Title"}]]
    else:
        names = rng.sample(sorted(_OPTIONS), 2 if wanted > 3 else 1)
        if len(names) == 1:
            values = list(_OPTIONS[names[0]][:wanted])
            set_options(product, [(names[0], values)])
            combos = [[{"name": names[0], "value": v}] for v in values]
        else:
            first, second = list(_OPTIONS[names[0]][:3]), list(_OPTIONS[names[1]][:2])
            all_combos = [
                [{"name": names[0], "value": a}, {"name": names[1], "value": b}]
                for a in first
                for b in second
            ]
            combos = all_combos[:wanted]
            set_options(
                product,
                [
                    (names[0], sorted({c[0]["value"] for c in combos}, key=first.index)),
                    (names[1], sorted({c[1]["value"] for c in combos}, key=second.index)),
                ],
            )
    base = _price(rng)
    sale = rng.random() < 0.2
    for i, selected in enumerate(combos):
        tracked = rng.random() < 0.85
        add_variant(
            numbers,
            product,
            {
                "selectedOptions": selected,
                "sku": None if rng.random() < 0.03 else f"SKU-{product['_num'] % 10**6}-{i + 1}",
                "barcode": None if rng.random() < 0.2 else ean13(rng),
                "price": base,
                "compareAtPrice": f"{float(base) * 1.25:.2f}" if sale else None,
                "inventoryQuantity": rng.choice((0, 0, 1, 3, 5, 12, 40)) if tracked else 0,
                "inventoryPolicy": "CONTINUE" if rng.random() < 0.1 else "DENY",
                "tracked": tracked,
            },
            now=now,
        )
