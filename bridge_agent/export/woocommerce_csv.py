"""The `woocommerce-csv` format: the product CSV WooCommerce's own importer reads.

Column names are WooCommerce's, as its exporter writes them and its importer maps them back
(`includes/export/class-wc-product-csv-exporter.php` `get_default_column_names`, and
`includes/admin/importers/mappings/default.php`): the ones the canonical model has values for,
in the exporter's order, then `Attribute N name / value(s) / visible / global` for ten
attributes (always ten, so the column order is the same whatever the catalog; a product with
more is reported, not cut down), then the SEO plugin's post meta as `Meta: <key>` columns (the
importer writes any `Meta:` column to the product's meta). The meta keys are the ones the
WooCommerce adapter reads and writes (`platforms/woocommerce/mapping.py` `SEO_META_KEYS`):
Yoast by default, or the store's `seo_plugin`.

There is no `ID` column: ids belong to the old store, and an importer given one updates that
id or fails. Products match by SKU instead, as the agent matches them after the move; a
variation names its parent by the parent's SKU, so a variable product without a SKU cannot be
written and is reported.

A variable product is a `variable` row (its attributes with every value, comma-separated)
followed by one `variation` row per variant (one value each). Categories are `Parent > Child`,
several separated by commas (a comma inside a name escaped as `\\,`, the importer's rule), as
are tags and image URLs. Image ALT text has no column in WooCommerce's importer (it belongs to
the media library's attachment, not to the product): it is not in this format; the agent
writes it again after the move from the hub's optimisations.

`In stock?` is the stock status: `0` for out of stock, `backorder`, else `1`. When the store
says nothing of availability it follows the stock quantity (none or negative: `0`), and with
neither it is `1`: an empty cell is imported as out of stock, which would hide the product.

What WooCommerce's importer changes on the way in, and this file cannot escape: a `>` inside a
category name (the importer splits the name into a parent and a child there) and a literal
backslash-n in a description (the importer makes it a line break). Such products are written
and reported, so the merchant checks them after the import.

The file is for the importer, not for a spreadsheet: text starting with `=` is written as it
is (the generic csv format quotes it against formula injection; the importer would keep such
a quote in the product).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO

from bridge_agent.export.base import ImporterCsv, option_names
from bridge_agent.export.fields import Selection
from bridge_agent.export.reader import Item
from bridge_agent.export.request import ExportReport, ExportRequest
from bridge_agent.model import Product, Variant
from bridge_agent.platforms.woocommerce.mapping import SEO_META_KEYS

BASE_COLUMNS: tuple[str, ...] = (
    "Type", "SKU", "GTIN, UPC, EAN, or ISBN", "Name", "Published", "Is featured?",
    "Visibility in catalog", "Short description", "Description", "Tax status", "In stock?",
    "Stock", "Backorders allowed?", "Sale price", "Regular price", "Categories", "Tags",
    "Images", "Parent", "Position",
)  # fmt: skip
MAX_ATTRIBUTES = 10
CATEGORY_SPLIT = "category name with '>': the importer makes it a parent and a child"
DESCRIPTION_NEWLINE = "description with a literal \\n: the importer makes it a line break"
PUBLISHED = {"active": "1", "draft": "-1", "archived": "0"}  # the exporter's numbers


def columns(seo_plugin: str) -> tuple[str, ...]:
    keys = next(((t, d) for p, t, d in SEO_META_KEYS if p == seo_plugin), None)
    if keys is None:
        raise ValueError(f"unknown seo_plugin {seo_plugin!r}")
    attributes = tuple(
        f"Attribute {n} {what}"
        for n in range(1, MAX_ATTRIBUTES + 1)
        for what in ("name", "value(s)", "visible", "global")
    )
    return (*BASE_COLUMNS, *attributes, f"Meta: {keys[0]}", f"Meta: {keys[1]}")


def _escape(value: str) -> str:
    return value.replace(",", "\\,")


def _joined(values: Iterable[str]) -> str:
    return ", ".join(_escape(v) for v in values)


def _stock_status(availability: str | None, stock: int | None) -> str:
    if availability == "BackOrder":
        return "backorder"
    if availability in ("OutOfStock", "Discontinued"):
        return "0"
    if availability is None and stock is not None:
        return "1" if stock > 0 else "0"
    return "1"  # in stock, pre-order, or unknown: an empty cell imports as out of stock


class WooCommerceCsvWriter(ImporterCsv):
    def __init__(
        self, out: BinaryIO, request: ExportRequest, selection: Selection, report: ExportReport
    ) -> None:
        super().__init__(out, request, report)
        self._columns = columns(request.seo_plugin)
        self._seo = self._columns[-2:]

    def begin(self) -> None:
        self._csv.writerow(self._columns)

    def _write(self, row: dict[str, str]) -> None:
        self._csv.writerow([row.get(c, "") for c in self._columns])
        self._report.rows += 1

    def product(self, item: Item) -> None:
        product = item.product
        assert product is not None
        names = option_names(product)
        if len(names) > MAX_ATTRIBUTES:
            self._report.skip(f"more than {MAX_ATTRIBUTES} attributes", product.id)
            return
        if product.variants and not product.sku:
            self._report.skip("variable product without SKU (variations name it)", product.id)
            return
        if any(">" in name for c in product.categories for name in (c.path or (c.name,))):
            self._report.note(CATEGORY_SPLIT, product.id)
        if any("\\n" in (text or "") for text in
               (product.description_html, product.short_description_html)):  # fmt: skip
            self._report.note(DESCRIPTION_NEWLINE, product.id)
        row = self._common(product, product)
        row["Type"] = "variable" if product.variants else "simple"
        row["Name"] = product.title
        row["Published"] = PUBLISHED.get(product.status, "-1")
        row["Is featured?"] = "0"
        row["Visibility in catalog"] = "visible"
        row["Short description"] = product.short_description_html or ""
        row["Description"] = product.description_html or ""
        row["Categories"] = ", ".join(
            " > ".join(_escape(p) for p in (c.path or (c.name,))) for c in product.categories
        )
        row["Tags"] = _joined(product.tags)
        images = sorted(product.images, key=lambda i: i.position)
        row["Images"] = _joined(i.src for i in images)
        row[self._seo[0]] = product.seo_title or ""
        row[self._seo[1]] = product.seo_description or ""
        for n, name in enumerate(names, start=1):
            values = list(
                dict.fromkeys(v for variant in product.variants for k, v in variant.options
                              if k == name)
            )  # fmt: skip
            row[f"Attribute {n} name"] = name
            row[f"Attribute {n} value(s)"] = _joined(values)
            row[f"Attribute {n} visible"] = "1"
            row[f"Attribute {n} global"] = "0"
        self._write(row)
        for position, variant in enumerate(product.variants, start=1):
            self._write(self._variation(product, variant, names, position))
        self._report.products += 1
        self._report.variants += len(product.variants)

    def _common(self, product: Product, source: Product | Variant) -> dict[str, str]:
        row: dict[str, str] = {}
        row["SKU"] = source.sku or ""
        row["GTIN, UPC, EAN, or ISBN"] = source.gtin or ""
        row["Tax status"] = "taxable"
        row["In stock?"] = _stock_status(
            source.availability or product.availability, source.stock_quantity
        )
        row["Stock"] = "" if source.stock_quantity is None else str(source.stock_quantity)
        row["Backorders allowed?"] = "1" if source.availability == "BackOrder" else "0"
        regular = source.regular_price or source.price or ""
        row["Regular price"] = regular
        row["Sale price"] = source.sale_price or ""
        return row

    def _variation(
        self, product: Product, variant: Variant, names: list[str], position: int
    ) -> dict[str, str]:
        row = self._common(product, variant)
        row["Type"] = "variation"
        label = variant.title or ", ".join(v for _k, v in variant.options)
        row["Name"] = f"{product.title} - {label}" if label else product.title
        row["Published"] = "1"
        row["Parent"] = product.sku or ""
        row["Position"] = str(position)
        if variant.image_id is not None:
            image = next((i for i in product.images if i.id == variant.image_id), None)
            row["Images"] = _escape(image.src) if image else ""
        values = dict(variant.options)
        for n, name in enumerate(names, start=1):
            row[f"Attribute {n} name"] = name
            row[f"Attribute {n} value(s)"] = _escape(values.get(name, ""))
            row[f"Attribute {n} global"] = "0"
        return row
