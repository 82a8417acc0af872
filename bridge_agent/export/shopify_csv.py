"""The `shopify-csv` format: the product CSV Shopify's own importer reads (Lexiik's migration).

The columns are the first 43 of Shopify's product CSV template, in its order, under its exact
names (help.shopify.com/en/manual/products/import-export/using-csv, the sample file
`product_template.csv`), through `SEO title` and `SEO description`; the Google Shopping and
metafield columns after them are store-specific and optional, so they are left out (the
importer takes any subset that has `Title` and `URL handle`).

Rows, as Shopify's own export writes them: a product's rows share its `URL handle`; the first
carries the product's fields, and row k carries the product's k-th variant and k-th image, so a
product takes max(variants, images) rows. Option names are on the first row only. A product
without variants is Shopify's single `Title` / `Default Title` variant. Price is what the
customer pays (the sale price during a sale) and `Compare-at price` the regular one, Shopify's
model. SEO title, meta description and every image's ALT go in their columns; each variant
keeps its SKU, by which the agent matches the products again on the new store.

A product's `URL handle` is what Shopify's importer matches rows by: two products sharing
one are merged into one product. The handle is the slug (or title) folded to ASCII (accents
dropped: `Café` is `cafe`, as Shopify's own handles are), and a handle already written in this
file gets `-<product id>` appended, with the product reported (titles in another script fold to
the same few Latin words: `日本 mug` and `한국 mug` are both `mug`).

Shopify allows three options per product: a product with more is reported, not cut down.
A deleted product cannot be said in an import file: it is reported.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from typing import BinaryIO

from bridge_agent.export.base import ImporterCsv, option_names
from bridge_agent.export.fields import Selection
from bridge_agent.export.reader import Item
from bridge_agent.export.request import ExportReport, ExportRequest
from bridge_agent.model import Image, Product, Variant

COLUMNS: tuple[str, ...] = (
    "Title", "URL handle", "Description", "Vendor", "Product category", "Type", "Tags",
    "Published on online store", "Status", "SKU", "Barcode",
    "Option1 name", "Option1 value", "Option1 Linked To",
    "Option2 name", "Option2 value", "Option2 Linked To",
    "Option3 name", "Option3 value", "Option3 Linked To",
    "Price", "Compare-at price", "Cost per item", "Charge tax", "Tax code",
    "Unit price total measure", "Unit price total measure unit", "Unit price base measure",
    "Unit price base measure unit", "Inventory tracker", "Inventory quantity",
    "Continue selling when out of stock", "Weight value (grams)", "Weight unit for display",
    "Requires shipping", "Fulfillment service", "Product image URL", "Image position",
    "Image alt text", "Variant image URL", "Gift card", "SEO title", "SEO description",
)  # fmt: skip
MAX_OPTIONS = 3
_HANDLE = re.compile(r"[^a-z0-9]+")


def handle_of(product: Product) -> str:
    """The product's handle: its slug, or its title made into one (as Shopify does), accents
    folded to their letters (NFKD, combining marks dropped)."""
    base = unicodedata.normalize("NFKD", (product.slug or product.title).casefold())
    base = "".join(c for c in base if not unicodedata.combining(c))
    return _HANDLE.sub("-", base).strip("-") or f"product-{product.id}"


def _unique(handle: str, product: Product, taken: set[str]) -> str:
    """`handle`, or one made unique with the product's id (and a number, should that be taken
    too): rows sharing a handle are one product to Shopify's importer."""
    if handle not in taken:
        return handle
    base = f"{handle}-{_HANDLE.sub('-', product.id.casefold()).strip('-')}"
    out, n = base, 1
    while out in taken:
        n += 1
        out = f"{base}-{n}"
    return out


def _amount(value: str | None) -> Decimal | None:
    try:
        return Decimal(value) if value else None
    except (InvalidOperation, ValueError):
        return None


def prices(source: Product | Variant) -> tuple[str, str]:
    """(Price, Compare-at price) in Shopify's model: what is paid, and the struck-out price."""
    regular = source.regular_price or source.price
    sale = source.sale_price
    low, high = _amount(sale), _amount(regular)
    if low is not None and high is not None and low < high:
        return sale or "", regular or ""
    return source.price or regular or "", ""


class ShopifyCsvWriter(ImporterCsv):
    def __init__(
        self, out: BinaryIO, request: ExportRequest, selection: Selection, report: ExportReport
    ) -> None:
        super().__init__(out, request, report)
        self._handles: set[str] = set()  # written so far: a handle is a product to Shopify

    def begin(self) -> None:
        self._csv.writerow(COLUMNS)

    def product(self, item: Item) -> None:
        product = item.product
        assert product is not None
        names = option_names(product)
        if len(names) > MAX_OPTIONS:
            self._report.skip(f"more than {MAX_OPTIONS} options (Shopify's limit)", product.id)
            return
        images = sorted(product.images, key=lambda i: i.position)
        variants: list[Variant | None] = list(product.variants) or [None]
        natural = handle_of(product)
        handle = _unique(natural, product, self._handles)
        if handle != natural:
            self._report.note("URL handle taken by another product: id appended", product.id)
        self._handles.add(handle)
        for k in range(max(len(variants), len(images))):
            row = dict.fromkeys(COLUMNS, "")
            row["URL handle"] = handle
            if k == 0:
                self._product_fields(row, product, names)
            if k < len(variants):
                self._variant_fields(row, product, variants[k], names, first=k == 0)
            if k < len(images):
                self._image_fields(row, images[k], k)
            self._csv.writerow([row[c] for c in COLUMNS])
            self._report.rows += 1
        self._report.products += 1
        self._report.variants += len(product.variants)

    def _product_fields(self, row: dict[str, str], product: Product, names: list[str]) -> None:
        row["Title"] = product.title
        row["Description"] = product.description_html or ""
        row["Vendor"] = product.brand or ""
        row["Type"] = product.categories[0].name if product.categories else ""
        row["Tags"] = ", ".join(product.tags)
        row["Published on online store"] = "TRUE" if product.status == "active" else "FALSE"
        row["Status"] = product.status
        row["Gift card"] = "FALSE"
        row["SEO title"] = product.seo_title or ""
        row["SEO description"] = product.seo_description or ""
        for n, name in enumerate(names or ["Title"], start=1):
            row[f"Option{n} name"] = name

    def _variant_fields(
        self,
        row: dict[str, str],
        product: Product,
        variant: Variant | None,
        names: list[str],
        *,
        first: bool,
    ) -> None:
        source: Product | Variant = variant if variant is not None else product
        row["SKU"] = source.sku or ""
        row["Barcode"] = source.gtin or ""
        if variant is None:
            row["Option1 value"] = "Default Title"
        else:
            values = dict(variant.options)
            for n, name in enumerate(names, start=1):
                row[f"Option{n} value"] = values.get(name, "")
            if variant.image_id is not None:
                image = next((i for i in product.images if i.id == variant.image_id), None)
                row["Variant image URL"] = image.src if image else ""
        row["Price"], row["Compare-at price"] = prices(source)
        stock = source.stock_quantity
        if stock is not None:
            row["Inventory tracker"] = "shopify"
            row["Inventory quantity"] = str(stock)
        availability = source.availability or product.availability
        row["Continue selling when out of stock"] = (
            "CONTINUE" if availability in ("BackOrder", "PreOrder") else "DENY"
        )
        row["Fulfillment service"] = "manual"
        if not first:
            row["Published on online store"] = ""

    def _image_fields(self, row: dict[str, str], image: Image, k: int) -> None:
        row["Product image URL"] = image.src
        row["Image position"] = str(k + 1)
        row["Image alt text"] = image.alt
