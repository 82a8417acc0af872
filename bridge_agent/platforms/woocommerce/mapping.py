"""WooCommerce product JSON (wc/v3) -> canonical `model.Product`. Pure: no I/O, no clock.

`map_product(product, variations, options=..., categories=...)` returns `(Product, warnings)`:
the warnings are short sentences for the import report ("no image", "no price", ...), never
errors; a payload that cannot be a product at all (no id) raises `WooPayloadError`. Duplicate
SKUs span products, so they are detected elsewhere.

Status (design.md section 3: visible -> active, draft -> draft, hidden or trashed -> archived):

| WooCommerce `status` | canonical |
| --- | --- |
| `publish` | `active` |
| `draft`, `pending`, `future` (scheduled), `auto-draft` | `draft` |
| `private`, `trash` | `archived` |
| anything else | `draft`, with a warning |

Availability: `instock` -> `InStock`, `outofstock` -> `OutOfStock`, `onbackorder` -> `BackOrder`.
A variable product is `InStock` if any enabled variation is in stock, else `BackOrder` if any is on
backorder, else `OutOfStock`; without variations its own `stock_status` counts.

Variations: only enabled ones (`status` `publish`, or no status) become variants; disabled
(`private`) variations are not for sale. A variant's title is its attribute values joined by
" / " ("Blue / L"); "any" attributes (empty option) are left out. Variants keep the order of
the product's `variations` id list, whatever order the variations endpoint answers in.

SEO title and description come from post meta (`meta_data`), the first non-empty string in this
order, each field on its own: Yoast (`_yoast_wpseo_title`, `_yoast_wpseo_metadesc`), Rank Math
(`rank_math_title`, `rank_math_description`), All in One SEO (`_aioseo_title`,
`_aioseo_description`), SEOPress (`_seopress_titles_title`, `_seopress_titles_desc`). A store
that migrated between plugins keeps the old plugin's meta: `options.seo_plugin` then names the one
to read. Values are passed verbatim, template variables (`%%title%%`) included.

Other rules:

- Money stays a string as the store formats it; "" means absent (None).
- `tax_included` is the store setting `prices_include_tax` (the product JSON does not carry it):
  None unless configured; `currency` likewise.
- Images: the first `options.images_max`, in the store's order (the first is the featured image),
  `position` = index.
- Categories: product JSON has only `{id, name, slug}`; with a category tree (id -> (name,
  parent id), from `/products/categories`) the path runs from the root, else it is `(name,)`.
  Category, tag, brand and attribute names are HTML-unescaped (WordPress stores term names
  escaped: "Shirts &amp; Tops").
- GTIN: `global_unique_id`, else the first of the meta keys in `GTIN_META_KEYS`.
- Brand: the first of `brands` (WooCommerce Brands, Perfect Brands), else the attribute "Brand".
- Rating: `average_rating` and `rating_count`; None while there are no reviews (a rating of
  "0.00" from zero reviews is not a rating).
- `updated_at`: `date_modified_gmt` + "Z"; `url`: `permalink`; `language`: `lang` (WPML and
  Polylang add it to the REST answer), else the `wpml_language` meta, else None.
- `extra`: `type` (`simple`, `variable`, ...) and `catalog_visibility`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge_agent.model import Availability, Category, Image, Product, Rating, Status, Variant

__all__ = [
    "AVAILABILITY",
    "GTIN_META_KEYS",
    "SEO_META_KEYS",
    "STATUS",
    "CategoryTree",
    "MappingOptions",
    "WooPayloadError",
    "category_path",
    "category_tree",
    "map_product",
    "map_variant",
]

STATUS: Mapping[str, Status] = {
    "publish": "active",
    "draft": "draft",
    "pending": "draft",
    "future": "draft",
    "auto-draft": "draft",
    "private": "archived",
    "trash": "archived",
}

AVAILABILITY: Mapping[str, Availability] = {
    "instock": "InStock",
    "outofstock": "OutOfStock",
    "onbackorder": "BackOrder",
}

#: (plugin, title meta key, description meta key), in the order they are tried.
SEO_META_KEYS: tuple[tuple[str, str, str], ...] = (
    ("yoast", "_yoast_wpseo_title", "_yoast_wpseo_metadesc"),
    ("rankmath", "rank_math_title", "rank_math_description"),
    ("aioseo", "_aioseo_title", "_aioseo_description"),
    ("seopress", "_seopress_titles_title", "_seopress_titles_desc"),
)

#: Meta keys GTIN plugins use, tried after the core `global_unique_id` field.
GTIN_META_KEYS: tuple[str, ...] = (
    "_gtin",
    "_global_unique_id",
    "_wpm_gtin_code",
    "hwp_product_gtin",
    "hwp_var_gtin",
    "_alg_ean",
    "_ean",
)

LANGUAGE_META_KEYS: tuple[str, ...] = ("wpml_language",)

#: Category id -> (name, parent id); parent 0 is the root.
CategoryTree = Mapping[int, tuple[str, int]]

_ENABLED_VARIATION = frozenset({"publish", ""})
_MAX_DEPTH = 64


class WooPayloadError(ValueError):
    """The JSON is not a WooCommerce product at all (not an object, or no id)."""


@dataclass(frozen=True, slots=True)
class MappingOptions:
    """Store-wide settings the product JSON does not carry."""

    images_max: int = 10
    prices_include_tax: bool | None = None
    currency: str | None = None
    seo_plugin: str | None = None  # one of the SEO_META_KEYS plugins; None: try them in order


def map_product(
    product: Mapping[str, Any],
    variations: Sequence[Mapping[str, Any]] = (),
    *,
    options: MappingOptions | None = None,
    categories: CategoryTree | None = None,
) -> tuple[Product, list[str]]:
    """The canonical product for one wc/v3 product and its variations, plus report warnings."""
    opts = options or MappingOptions()
    if not isinstance(product, Mapping):
        raise WooPayloadError(f"expected a product object, got {type(product).__name__}")
    product_id = _id(product.get("id"))
    if product_id is None:
        raise WooPayloadError("product without an id")
    warnings: list[str] = []
    meta = _meta(product.get("meta_data"))

    title = _text(product.get("name")) or ""
    if not title:
        warnings.append("no title")

    raw_status = _text(product.get("status")) or ""
    status = STATUS.get(raw_status)
    if status is None:
        warnings.append(f"unknown status {raw_status!r} (mapped to draft)")
        status = "draft"

    # Variants follow the product's own `variations` id list, not the order the variations
    # endpoint happened to answer in: the canonical product (and so its hash) must not change
    # with the listing order, or a re-fetch would look like an edit.
    listed = product.get("variations")
    order = {str(v): n for n, v in enumerate(listed if isinstance(listed, list) else ())}
    listing: Sequence[Any] = variations  # what the store answered: maybe not all objects
    enabled = [
        v
        for v in listing
        if isinstance(v, Mapping)
        and _id(v.get("id")) is not None
        and (_text(v.get("status")) or "") in _ENABLED_VARIATION
    ]
    enabled.sort(key=lambda v: (order.get(str(v.get("id")), len(order)), str(v.get("id"))))
    variants = tuple(map_variant(v) for v in enabled)
    is_variable = product.get("type") == "variable"

    availability = _availability(product.get("stock_status"), warnings)
    if is_variable and variants:
        availability = _variable_availability(variants)

    price = _money(product.get("price"))
    if price is None and variants:
        price = _lowest([v.price for v in variants])
    if price is None:
        warnings.append("no price")

    images = _images(product.get("images"), opts.images_max)
    if not images:
        warnings.append("no image")

    seo_title, seo_description = _seo(meta, opts.seo_plugin)

    updated_at = _utc(product.get("date_modified_gmt"))
    if updated_at is None:
        warnings.append("no valid date_modified_gmt")

    extra: dict[str, Any] = {}
    for key in ("type", "catalog_visibility"):
        value = _text(product.get(key))
        if value:
            extra[key] = value

    mapped = Product(
        id=product_id,
        title=title,
        sku=_text(product.get("sku")),
        slug=_text(product.get("slug")),
        url=_text(product.get("permalink")),
        status=status,
        description_html=_text(product.get("description")),
        short_description_html=_text(product.get("short_description")),
        seo_title=seo_title,
        seo_description=seo_description,
        price=price,
        regular_price=_money(product.get("regular_price")),
        sale_price=_money(product.get("sale_price")),
        currency=opts.currency,
        tax_included=opts.prices_include_tax,
        availability=availability,
        stock_quantity=_int(product.get("stock_quantity")),
        categories=_categories(product.get("categories"), categories),
        tags=tuple(n for n in (_term_name(t) for t in _list(product.get("tags"))) if n),
        images=images,
        variants=variants,
        rating=_rating(product),
        brand=_brand(product),
        gtin=_gtin(product, meta),
        language=_language(product, meta),
        updated_at=updated_at,
        extra=extra,
    )
    return mapped, warnings


def map_variant(variation: Mapping[str, Any]) -> Variant:
    """One wc/v3 variation object as a canonical variant."""
    options: list[tuple[str, str]] = []
    for attribute in _list(variation.get("attributes")):
        name = _unescaped(attribute.get("name"))
        option = _unescaped(attribute.get("option"))
        if name and option:
            options.append((name, option))
    image = variation.get("image")
    image_id = _id(image.get("id")) if isinstance(image, Mapping) else None
    meta = _meta(variation.get("meta_data"))
    return Variant(
        id=_id(variation.get("id")) or "",
        sku=_text(variation.get("sku")),
        title=" / ".join(value for _, value in options) or None,
        options=tuple(options),
        price=_money(variation.get("price")),
        regular_price=_money(variation.get("regular_price")),
        sale_price=_money(variation.get("sale_price")),
        availability=AVAILABILITY.get(_text(variation.get("stock_status")) or ""),
        stock_quantity=_int(variation.get("stock_quantity")),
        image_id=image_id if image_id != "0" else None,
        gtin=_gtin(variation, meta),
    )


def category_tree(terms: Iterable[Mapping[str, Any]]) -> dict[int, tuple[str, int]]:
    """The tree from `/products/categories` items (`{id, name, parent}`)."""
    tree: dict[int, tuple[str, int]] = {}
    for term in terms:
        term_id = term.get("id")
        parent = term.get("parent", 0)
        if isinstance(term_id, int) and not isinstance(term_id, bool):
            tree[term_id] = (
                _unescaped(term.get("name")) or str(term_id),
                parent if isinstance(parent, int) and not isinstance(parent, bool) else 0,
            )
    return tree


def category_path(category_id: int, name: str, tree: CategoryTree | None) -> tuple[str, ...]:
    """Names from the root down to this category; `(name,)` when the tree does not know it."""
    if not tree or category_id not in tree:
        return (name,)
    path: list[str] = []
    seen: set[int] = set()
    current = category_id
    while current and current in tree and current not in seen and len(path) < _MAX_DEPTH:
        seen.add(current)
        node_name, parent = tree[current]
        path.append(node_name)
        current = parent
    return tuple(reversed(path))


# -- helpers ---------------------------------------------------------------------------------------


def _id(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if value > 0 else None
    # ASCII digits only, and no more than an int64 has: int() refuses "²" (which isdigit()
    # accepts) and strings of thousands of digits.
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.isdigit() and len(text) <= 19 and int(text) > 0:
        return str(int(text))
    return None


def _text(value: Any) -> str | None:
    """A non-empty string, else None ("" and null both mean absent in wc/v3)."""
    if isinstance(value, str) and value.strip():
        return value
    return None


def _unescaped(value: Any) -> str | None:
    text = _text(value)
    return html.unescape(text).strip() if text is not None else None


def _list(value: Any) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _money(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return format(Decimal(str(value)), "f")  # a plugin that stores numbers: 10.5 -> "10.5"
    if isinstance(value, str):
        text = value.strip()
        return text or None
    return None


def _lowest(prices: Iterable[str | None]) -> str | None:
    best: tuple[Decimal, str] | None = None
    for price in prices:
        if price is None:
            continue
        try:
            amount = Decimal(price)
        except InvalidOperation:
            continue
        if best is None or amount < best[0]:
            best = (amount, price)
    return best[1] if best else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _availability(value: Any, warnings: list[str]) -> Availability | None:
    text = _text(value)
    if text is None:
        return None
    found = AVAILABILITY.get(text)
    if found is None:
        warnings.append(f"unknown stock_status {text!r}")
    return found


def _variable_availability(variants: Sequence[Variant]) -> Availability:
    states = {v.availability for v in variants}
    if "InStock" in states:
        return "InStock"
    if "BackOrder" in states:
        return "BackOrder"
    return "OutOfStock"


def _meta(value: Any) -> dict[str, Any]:
    """meta_data rows by key; the first row wins when a key repeats (as WordPress reads it)."""
    out: dict[str, Any] = {}
    for row in _list(value):
        key = row.get("key")
        if isinstance(key, str) and key not in out:
            out[key] = row.get("value")
    return out


def _meta_text(meta: Mapping[str, Any], key: str) -> str | None:
    value = meta.get(key)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _seo(meta: Mapping[str, Any], plugin: str | None) -> tuple[str | None, str | None]:
    keys = [k for k in SEO_META_KEYS if plugin is None or k[0] == plugin]
    title = next((t for _, key, _ in keys if (t := _meta_text(meta, key))), None)
    description = next((d for _, _, key in keys if (d := _meta_text(meta, key))), None)
    return title, description


def _images(value: Any, limit: int) -> tuple[Image, ...]:
    images: list[Image] = []
    for item in _list(value):
        if len(images) >= limit:
            break
        src = _text(item.get("src"))
        if src is None:
            continue
        alt = item.get("alt")
        images.append(
            Image(
                id=_id(item.get("id")) or src,
                src=src,
                alt=alt.strip() if isinstance(alt, str) else "",
                position=len(images),
            )
        )
    return tuple(images)


def _categories(value: Any, tree: CategoryTree | None) -> tuple[Category, ...]:
    out: list[Category] = []
    for item in _list(value):
        category_id = item.get("id")
        name = _unescaped(item.get("name"))
        if not isinstance(category_id, int) or isinstance(category_id, bool) or not name:
            continue
        out.append(Category(str(category_id), name, category_path(category_id, name, tree)))
    return tuple(out)


def _term_name(term: Mapping[str, Any]) -> str | None:
    return _unescaped(term.get("name"))


def _rating(product: Mapping[str, Any]) -> Rating | None:
    count = _int(product.get("rating_count"))
    if not count or count < 0:
        return None
    average = product.get("average_rating")
    if isinstance(average, int | float) and not isinstance(average, bool):
        average = f"{average:.2f}"
    if not isinstance(average, str) or not average.strip():
        return None
    return Rating(average=average.strip(), count=count)


def _brand(product: Mapping[str, Any]) -> str | None:
    for term in _list(product.get("brands")):
        name = _term_name(term)
        if name:
            return name
    for attribute in _list(product.get("attributes")):
        name = _unescaped(attribute.get("name")) or ""
        slug = _text(attribute.get("slug")) or ""
        if name.lower() == "brand" or slug == "pa_brand":
            options = attribute.get("options")
            if isinstance(options, list):
                for option in options:
                    text = _unescaped(option)
                    if text:
                        return text
    return None


def _gtin(item: Mapping[str, Any], meta: Mapping[str, Any]) -> str | None:
    value = _text(item.get("global_unique_id"))
    if value:
        return value.strip()
    for key in GTIN_META_KEYS:
        found = _meta_text(meta, key)
        if found:
            return found
    return None


def _language(product: Mapping[str, Any], meta: Mapping[str, Any]) -> str | None:
    lang = _text(product.get("lang"))
    if lang:
        return lang.strip()
    for key in LANGUAGE_META_KEYS:
        found = _meta_text(meta, key)
        if found:
            return found
    return None


def _utc(value: Any) -> str | None:
    """`date_modified_gmt` ("2024-05-01T10:00:00", UTC without zone) as "...Z"."""
    text = _text(value)
    if text is None or text.startswith("0000"):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if when.tzinfo is not None:
            when = when.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):  # OverflowError: an offset past year 1 or 9999
        return None
    return when.replace(microsecond=0).isoformat() + "Z"
