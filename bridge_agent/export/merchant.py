"""The `xml` format: a Google Merchant Center feed, RSS 2.0 with the `g:` namespace.

One `<item>` per product, or per variant for a product with variants (each carrying the
product's id as `item_group_id`, and its colour and size when its options name them). The
attributes and their rules are Google's Products Data Specification (platforms.md section 5):

- required: `id` (the SKU where there is one, at most 50 characters, unique in the feed: a
  later item with an id already written is reported as a `duplicate id`, never written),
  `title` (entities decoded, cut at 150: a title is text, so `size <M>` stays), `description`
  (HTML made plain text, cut at 5000), `link`, `image_link`, `availability`, `price` (always
  `12.00 EUR`: the amount at the currency's minor unit, two decimals unless ISO 4217 says 0 or
  3, never exponent form); `condition` is `new` (the canonical model knows no used goods);
- length limits: an `item_group_id` over 50 characters refuses the item (it is an identity,
  cutting it could merge groups); `brand` is cut at 70, `color` and `size` at 100,
  `product_type` at 750 (descriptive text, which Google would refuse whole);
- `brand` and `gtin` when known; without a GTIN, `identifier_exists` is `no` (the canonical
  model has no MPN, and Google must not expect one it will never get);
- `google_product_category` only when the store's category maps to the taxonomy for certain
  (taxonomy.py); the store's own path goes in `product_type`.

An item that cannot meet a required rule (no price, no image, no link, a draft product,
backorder without an availability date, ...) is not written at all: it goes in the report with
every reason, so the merchant fixes the product instead of Google disapproving a half-valid
item. A deleted product (incremental exports) is left out and reported the same way: RSS feeds
say nothing about removals; Merchant Center drops what a full feed no longer lists.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import BinaryIO
from xml.sax.saxutils import escape

from bridge_agent.export.base import text_stream
from bridge_agent.export.fields import Selection, main_image
from bridge_agent.export.reader import Item
from bridge_agent.export.request import ExportReport, ExportRequest, Invalid
from bridge_agent.export.taxonomy import google_category
from bridge_agent.model import Image, Product, Variant

NAMESPACE = "http://base.google.com/ns/1.0"
AVAILABILITY = {
    "InStock": "in_stock",
    "OutOfStock": "out_of_stock",
    "BackOrder": "backorder",
    "PreOrder": "preorder",
    "Discontinued": "out_of_stock",
}
NEEDS_DATE = frozenset({"backorder", "preorder"})  # Google requires availability_date with these
ID_MAX, TITLE_MAX, DESCRIPTION_MAX, ADDITIONAL_IMAGES = 50, 150, 5000, 10
GROUP_ID_MAX, BRAND_MAX, COLOR_SIZE_MAX, PRODUCT_TYPE_MAX = 50, 70, 100, 750
# ISO 4217 minor units other than two decimals (the rest, and an unknown code, have two).
MINOR_UNITS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF",
                     "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}  # fmt: skip
_WIDE = Context(prec=60)  # quantizing a large amount must not overflow the default 28 digits
COLOR_OPTIONS = frozenset({"color", "colour", "couleur", "farbe", "color/colour"})
SIZE_OPTIONS = frozenset({"size", "taille", "größe", "grösse", "talla"})
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")  # not allowed in XML 1.0
_GTIN = re.compile(r"\d{8}|\d{12,14}")

Attributes = list[tuple[str, str]]


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return cut[:space].rstrip() if space > limit * 0.8 else cut


def plain_title(value: str, limit: int) -> str:
    """A title as plain text: entities decoded and spaces collapsed, but nothing taken for a
    tag (a title is text: `Shirt size <M> & <L>` keeps its sizes), cut at `limit`."""
    return _cut(_SPACE.sub(" ", html.unescape(value)).strip(), limit)


def price_text(amount: Decimal, code: str) -> str:
    """`12.00 EUR`: the amount at the currency's minor unit, in plain digits."""
    places = MINOR_UNITS.get(code, 2)
    quantum = Decimal(1).scaleb(-places)
    return f"{format(amount.quantize(quantum, ROUND_HALF_UP, _WIDE), 'f')} {code}"


def plain(value: str | None, limit: int) -> str:
    """HTML -> plain text: tags dropped (block ends as spaces), entities decoded, spaces
    collapsed, cut at `limit` characters on a word boundary when one is near."""
    if not value:
        return ""
    return _cut(_SPACE.sub(" ", html.unescape(_TAG.sub(" ", value))).strip(), limit)


def _money(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() else None


def _url(value: str | None) -> str | None:
    if value and value.startswith(("https://", "http://")):
        return value
    return None


def item_attributes(
    product: Product, variant: Variant | None, currency: str | None
) -> tuple[Attributes, list[str]]:
    """The `g:` attributes of one feed item, in feed order, and why it cannot be one."""
    reasons: list[str] = []
    attrs: Attributes = []
    if product.status != "active":
        reasons.append(f"not published (status {product.status})")
    item_id = (variant.sku if variant else product.sku) or (
        f"{product.id}_{variant.id}" if variant else product.id
    )
    if len(item_id) > ID_MAX:
        reasons.append(f"id longer than {ID_MAX} characters")
    attrs.append(("id", item_id))
    if variant is not None:
        group = product.sku or product.id
        if len(group) > GROUP_ID_MAX:
            reasons.append(f"item_group_id longer than {GROUP_ID_MAX} characters")
        attrs.append(("item_group_id", group))
    title = product.title.strip()
    label = (variant.title or ", ".join(v for _k, v in variant.options)) if variant else ""
    if title and label:
        title = f"{title} - {label}"
    if not title:
        reasons.append("no title")
    attrs.append(("title", plain_title(title, TITLE_MAX)))
    description = next(
        (
            text
            for text in (
                plain(product.description_html, DESCRIPTION_MAX),
                plain(product.short_description_html, DESCRIPTION_MAX),
                plain(product.seo_description, DESCRIPTION_MAX),
            )
            if text
        ),
        "",
    )
    if not description:
        reasons.append("no description")
    attrs.append(("description", description))
    link = _url(product.url)
    if link is None:
        reasons.append("no link")
    attrs.append(("link", link or ""))
    image = _item_image(product, variant)
    if image is None:
        reasons.append("no image")
    attrs.append(("image_link", image.src if image else ""))
    main = image.src if image else None
    others = [i.src for i in sorted(product.images, key=lambda i: i.position) if _url(i.src)]
    attrs += [("additional_image_link", src) for src in others if src != main][:ADDITIONAL_IMAGES]
    availability = _availability(product, variant)
    if availability is None:
        reasons.append("no availability")
    elif availability in NEEDS_DATE:
        reasons.append(f"{availability} without availability_date")
    attrs.append(("availability", availability or ""))
    attrs += _prices(product, variant, currency, reasons)
    attrs.append(("condition", "new"))
    if product.brand:
        attrs.append(("brand", _cut(product.brand.strip(), BRAND_MAX)))
    gtin = (variant.gtin if variant else None) or (product.gtin if variant is None else None)
    if gtin and _GTIN.fullmatch(gtin):
        attrs.append(("gtin", gtin))
    else:
        attrs.append(("identifier_exists", "no"))
    category = google_category(product.categories)
    if category is not None:
        attrs.append(("google_product_category", str(category)))
    if product.categories:
        first = product.categories[0]
        path = " > ".join(first.path or (first.name,))
        attrs.append(("product_type", _cut(path, PRODUCT_TYPE_MAX)))
    if variant is not None:
        for name, value in variant.options:
            key = name.strip().casefold()
            if key in COLOR_OPTIONS:
                attrs.append(("color", _cut(value, COLOR_SIZE_MAX)))
            elif key in SIZE_OPTIONS:
                attrs.append(("size", _cut(value, COLOR_SIZE_MAX)))
    return attrs, reasons


def _item_image(product: Product, variant: Variant | None) -> Image | None:
    if variant is not None and variant.image_id is not None:
        own = next((i for i in product.images if i.id == variant.image_id), None)
        if own is not None and _url(own.src):
            return own
    image = main_image(product)
    return image if image is not None and _url(image.src) else None


def _availability(product: Product, variant: Variant | None) -> str | None:
    value = (variant.availability if variant else None) or product.availability
    if value is None:
        stock = variant.stock_quantity if variant else product.stock_quantity
        if stock is None:
            return None
        return "in_stock" if stock > 0 else "out_of_stock"
    return AVAILABILITY.get(value)


def _prices(
    product: Product, variant: Variant | None, currency: str | None, reasons: list[str]
) -> Attributes:
    source: Product | Variant = variant if variant is not None else product
    regular = _money(source.regular_price) or _money(source.price)
    if variant is not None and regular is None:
        regular = _money(product.regular_price) or _money(product.price)
    sale = _money(source.sale_price)
    code = product.currency or currency
    if regular is None or regular <= 0:
        reasons.append("no price")
        return [("price", "")]
    if not code or len(code) != 3 or not code.isalpha():
        reasons.append("no currency")
        return [("price", "")]
    code = code.upper()
    try:
        out = [("price", price_text(regular, code))]
        if sale is not None and 0 < sale < regular:
            out.append(("sale_price", price_text(sale, code)))
    except InvalidOperation:  # more digits than any price has: a broken value, not a price
        reasons.append("price out of range")
        return [("price", "")]
    return out


def _xml(value: str) -> str:
    return escape(_NOT_XML.sub("", value))


class MerchantFeedWriter:
    def __init__(
        self, out: BinaryIO, request: ExportRequest, selection: Selection, report: ExportReport
    ) -> None:
        self._text = text_stream(out)
        self._request = request
        self._report = report
        # Every g:id written: Merchant Center keeps one item per id, so a second one (two
        # products sharing a SKU) would replace the first or be disapproved. One short string
        # per item: bounded by the feed itself.
        self._ids: set[str] = set()

    def begin(self) -> None:
        title = self._request.store_title or self._request.store
        link = self._request.store_url or ""
        self._text.write(
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<rss version="2.0" xmlns:g="{NAMESPACE}">\n<channel>\n'
            f"<title>{_xml(title)}</title>\n<link>{_xml(link)}</link>\n"
            f"<description>{_xml(f'Products of {title}')}</description>\n"
        )

    def product(self, item: Item) -> None:
        product = item.product
        assert product is not None
        wrote = 0
        for variant in product.variants or (None,):
            attrs, reasons = item_attributes(product, variant, self._request.currency)
            item_id = attrs[0][1]
            if not reasons and item_id in self._ids:
                reasons = ["duplicate id"]
            if reasons:
                self._report.refuse(Invalid(product.id, variant.id if variant else None,
                                            tuple(reasons)))  # fmt: skip
                continue
            self._write(attrs)
            self._ids.add(item_id)
            wrote += 1
        if wrote:
            self._report.products += 1
            self._report.variants += wrote if product.variants else 0

    def _write(self, attrs: Iterable[tuple[str, str]]) -> None:
        body = "".join(f"<g:{k}>{_xml(v)}</g:{k}>" for k, v in attrs)
        self._text.write(f"<item>{body}</item>\n")
        self._report.rows += 1

    def deleted(self, item: Item) -> None:
        self._report.refuse(Invalid(item.id, None, ("deleted (left out of the feed)",)))

    def end(self) -> None:
        self._text.write("</channel>\n</rss>\n")
        self._text.flush()
        self._text.detach()
