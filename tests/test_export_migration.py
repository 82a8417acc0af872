"""shopify-csv and woocommerce-csv: the importers' own column names, and the SEO data in them.

The documented lists below are copied from the platforms' sources (URLs beside them); the
export's header must use only those names, in their order, and carry what Lexiik's migration
scenario needs: every variant's SKU (the agent matches products by SKU on the new store), the
SEO title and meta description, and (Shopify) each image's ALT text.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from pathlib import Path
from typing import Any

import pytest

from bridge_agent.export import ExportRequest, export_catalog
from bridge_agent.model import Category, Change, Image, Product, Variant
from bridge_agent.store import StateStore
from bridge_agent.testing.catalog import make_product

# Shopify's product CSV template, header row of the sample file linked from
# https://help.shopify.com/en/manual/products/import-export/using-csv
# (https://help.shopify.com/cdn/shopifycloud/product-knowledge/production/csv/product_template.csv)
SHOPIFY_TEMPLATE = (
    "Title", "URL handle", "Description", "Vendor", "Product category", "Type", "Tags",
    "Published on online store", "Status", "SKU", "Barcode", "Option1 name", "Option1 value",
    "Option1 Linked To", "Option2 name", "Option2 value", "Option2 Linked To", "Option3 name",
    "Option3 value", "Option3 Linked To", "Price", "Compare-at price", "Cost per item",
    "Charge tax", "Tax code", "Unit price total measure", "Unit price total measure unit",
    "Unit price base measure", "Unit price base measure unit", "Inventory tracker",
    "Inventory quantity", "Continue selling when out of stock", "Weight value (grams)",
    "Weight unit for display", "Requires shipping", "Fulfillment service", "Product image URL",
    "Image position", "Image alt text", "Variant image URL", "Gift card", "SEO title",
    "SEO description", "Color (product.metafields.shopify.color-pattern)",
    "Google Shopping / Google product category", "Google Shopping / Gender",
    "Google Shopping / Age group", "Google Shopping / Manufacturer part number (MPN)",
    "Google Shopping / Ad group name", "Google Shopping / Ads labels",
    "Google Shopping / Condition", "Google Shopping / Custom product",
    "Google Shopping / Custom label 0", "Google Shopping / Custom label 1",
    "Google Shopping / Custom label 2", "Google Shopping / Custom label 3",
    "Google Shopping / Custom label 4",
)  # fmt: skip

# WooCommerce's product CSV columns: WC_Product_CSV_Exporter::get_default_column_names
# (https://github.com/woocommerce/woocommerce/blob/trunk/plugins/woocommerce/includes/export/class-wc-product-csv-exporter.php)
# with the store's default units, which the importer maps back
# (https://github.com/woocommerce/woocommerce/blob/trunk/plugins/woocommerce/includes/admin/importers/mappings/default.php),
# and the importer's special columns `Attribute %d name|value(s)|visible|global` and `Meta: %s`.
WOOCOMMERCE_COLUMNS = (
    "ID", "Type", "SKU", "GTIN, UPC, EAN, or ISBN", "Name", "Published", "Is featured?",
    "Visibility in catalog", "Short description", "Description", "Date sale price starts",
    "Date sale price ends", "Tax status", "Tax class", "In stock?", "Stock", "Low stock amount",
    "Backorders allowed?", "Sold individually?", "Weight (kg)", "Length (cm)", "Width (cm)",
    "Height (cm)", "Allow customer reviews?", "Purchase note", "Sale price", "Regular price",
    "Categories", "Tags", "Shipping class", "Images", "Download limit", "Download expiry days",
    "Parent", "Grouped products", "Upsells", "Cross-sells", "External URL", "Button text",
    "Position",
)  # fmt: skip
WOOCOMMERCE_SPECIAL = ("Attribute {n} name", "Attribute {n} value(s)", "Attribute {n} visible",
                       "Attribute {n} global", "Meta: {key}")  # fmt: skip


def optimised() -> Product:
    return Product(
        id="31", title="Rain Jacket", sku="RJ", slug="rain-jacket", status="active",
        url="https://shop.example/rain-jacket", description_html="<p>Dry, light.</p>",
        seo_title="Rain Jacket, waterproof | Shop", seo_description="Stay dry in style.",
        price="80.00", regular_price="100.00", sale_price="80.00", currency="EUR",
        availability="InStock", brand="Acme", categories=(Category("7", "Jackets",
                                                                   ("Men", "Jackets")),),
        tags=("rain", "outdoor"),
        images=(Image("i1", "https://shop.example/rj-1.jpg", "Rain jacket, front", 0),
                Image("i2", "https://shop.example/rj-2.jpg", "Rain jacket, back", 1),
                Image("i3", "https://shop.example/rj-3.jpg", "Hood detail", 2)),
        variants=(Variant("v1", sku="RJ-S", options=(("Size", "S"), ("Color", "Blue")),
                          price="80.00", regular_price="100.00", sale_price="80.00",
                          availability="InStock", stock_quantity=4, image_id="i2",
                          gtin="4006381333931"),
                  Variant("v2", sku="RJ-M", options=(("Size", "M"), ("Color", "Blue")),
                          price="100.00", availability="BackOrder", stock_quantity=0)),
    )  # fmt: skip


def fill(state_dir: Path, products: list[Product]) -> None:
    async def write() -> None:
        async with StateStore.open(state_dir) as state:
            now = int(time.time() * 1000)
            await state.record([Change("main", p.id, p, "import", now) for p in products])

    asyncio.run(write())


def rows_of(
    state_dir: Path, fmt: str, **kwargs: Any
) -> tuple[list[str], list[dict[str, str]], Any]:
    out = io.BytesIO()
    report = export_catalog(state_dir, ExportRequest(store="main", format=fmt, **kwargs), out)  # type: ignore[arg-type]
    text = out.getvalue().decode("utf-8-sig")
    header = next(csv.reader(io.StringIO(text, newline="")))
    return header, list(csv.DictReader(io.StringIO(text, newline=""))), report


# -- Shopify -----------------------------------------------------------------------------------


def test_shopify_header_is_the_template_in_its_order(tmp_path: Path) -> None:
    fill(tmp_path, [make_product(1)])
    header, _rows, _report = rows_of(tmp_path, "shopify-csv")
    assert header == list(SHOPIFY_TEMPLATE[: len(header)])
    assert {"Title", "URL handle", "SKU", "SEO title", "SEO description", "Image alt text"} <= set(
        header
    )


def test_shopify_rows_carry_variants_images_alt_and_seo(tmp_path: Path) -> None:
    fill(tmp_path, [optimised(), make_product(2)])
    _header, rows, report = rows_of(tmp_path, "shopify-csv", bom=True)
    jacket = [r for r in rows if r["URL handle"] == "rain-jacket"]
    assert len(jacket) == 3  # max(2 variants, 3 images)
    first, second, third = jacket
    assert first["Title"] == "Rain Jacket" and second["Title"] == third["Title"] == ""
    assert first["SEO title"] == "Rain Jacket, waterproof | Shop"
    assert first["SEO description"] == "Stay dry in style."
    assert [r["SKU"] for r in jacket] == ["RJ-S", "RJ-M", ""]
    assert (first["Option1 name"], first["Option2 name"]) == ("Size", "Color")
    values = [(r["Option1 value"], r["Option2 value"]) for r in jacket[:2]]
    assert values == [("S", "Blue"), ("M", "Blue")]
    assert (first["Price"], first["Compare-at price"]) == ("80.00", "100.00")
    assert (second["Price"], second["Compare-at price"]) == ("100.00", "")
    assert second["Continue selling when out of stock"] == "CONTINUE"
    assert first["Barcode"] == "4006381333931"
    assert first["Variant image URL"] == "https://shop.example/rj-2.jpg"
    assert [(r["Product image URL"], r["Image position"], r["Image alt text"]) for r in jacket] == [
        ("https://shop.example/rj-1.jpg", "1", "Rain jacket, front"),
        ("https://shop.example/rj-2.jpg", "2", "Rain jacket, back"),
        ("https://shop.example/rj-3.jpg", "3", "Hood detail"),
    ]
    assert first["Vendor"] == "Acme" and first["Status"] == "active"
    simple = [r for r in rows if r["URL handle"] != "rain-jacket"]
    assert [(r["Option1 name"], r["Option1 value"], r["SKU"]) for r in simple] == [
        ("Title", "Default Title", "SKU-2")
    ]
    assert report.products == 2


def test_shopify_refuses_a_product_with_more_than_three_options(tmp_path: Path) -> None:
    options = (("A", "1"), ("B", "1"), ("C", "1"), ("D", "1"))
    wide = Product(
        id="5", title="Wide", sku="W", variants=(Variant("1", sku="W-1", options=options),)
    )
    fill(tmp_path, [wide, make_product(1)])
    _header, rows, report = rows_of(tmp_path, "shopify-csv")
    assert {r["SKU"] for r in rows} == {"SKU-1"}
    assert [(i.product, i.reasons) for i in report.invalid] == [
        ("5", ("more than 3 options (Shopify's limit)",))
    ]


# -- WooCommerce -------------------------------------------------------------------------------


def _documented(name: str, plugin_keys: tuple[str, str]) -> bool:
    if name in WOOCOMMERCE_COLUMNS:
        return True
    for pattern in WOOCOMMERCE_SPECIAL:
        for n in range(1, 100):  # the importer reads any number: `Attribute %d name`
            for key in plugin_keys:
                if name == pattern.format(n=n, key=key):
                    return True
    return False


@pytest.mark.parametrize(
    ("plugin", "keys"),
    [("yoast", ("_yoast_wpseo_title", "_yoast_wpseo_metadesc")),
     ("rankmath", ("rank_math_title", "rank_math_description"))],
)  # fmt: skip
def test_woocommerce_header_uses_the_importer_names(
    tmp_path: Path, plugin: str, keys: tuple[str, str]
) -> None:
    fill(tmp_path, [make_product(1)])
    header, _rows, _report = rows_of(tmp_path, "woocommerce-csv", seo_plugin=plugin)
    assert all(_documented(name, keys) for name in header), header
    base = [n for n in header if n in WOOCOMMERCE_COLUMNS]
    assert base == [n for n in WOOCOMMERCE_COLUMNS if n in base]  # the exporter's order
    assert header[-2:] == [f"Meta: {keys[0]}", f"Meta: {keys[1]}"]
    assert "ID" not in header  # products match by SKU on the new store


def test_woocommerce_rows_carry_variations_and_seo_meta(tmp_path: Path) -> None:
    fill(tmp_path, [optimised(), make_product(2)])
    _header, rows, report = rows_of(tmp_path, "woocommerce-csv")
    simple, parent, small, medium = rows  # in id order: "2" < "31"
    assert (parent["Type"], parent["SKU"], parent["Name"]) == ("variable", "RJ", "Rain Jacket")
    assert parent["Meta: _yoast_wpseo_title"] == "Rain Jacket, waterproof | Shop"
    assert parent["Meta: _yoast_wpseo_metadesc"] == "Stay dry in style."
    assert parent["Categories"] == "Men > Jackets"
    assert parent["Tags"] == "rain, outdoor"
    assert parent["Images"] == ", ".join(f"https://shop.example/rj-{n}.jpg" for n in (1, 2, 3))
    assert (parent["Attribute 1 name"], parent["Attribute 1 value(s)"]) == ("Size", "S, M")
    assert (parent["Attribute 2 name"], parent["Attribute 2 value(s)"]) == ("Color", "Blue")
    assert [r["Type"] for r in (small, medium)] == ["variation", "variation"]
    assert [r["Parent"] for r in (small, medium)] == ["RJ", "RJ"]
    assert [r["SKU"] for r in (small, medium)] == ["RJ-S", "RJ-M"]
    assert (small["Regular price"], small["Sale price"]) == ("100.00", "80.00")
    assert small["GTIN, UPC, EAN, or ISBN"] == "4006381333931"
    assert small["Images"] == "https://shop.example/rj-2.jpg"
    assert (medium["In stock?"], medium["Backorders allowed?"]) == ("backorder", "1")
    assert small["Attribute 1 value(s)"] == "S" and medium["Attribute 1 value(s)"] == "M"
    assert (simple["Type"], simple["SKU"], simple["Published"]) == ("simple", "SKU-2", "1")
    assert report.products == 2 and report.variants == 2


def test_woocommerce_refuses_a_variable_product_without_sku(tmp_path: Path) -> None:
    nameless = Product(
        id="6", title="No SKU", variants=(Variant("1", sku="X-1", options=(("S", "1"),)),)
    )
    fill(tmp_path, [nameless])
    _header, rows, report = rows_of(tmp_path, "woocommerce-csv")
    assert rows == []
    assert report.invalid[0].reasons == ("variable product without SKU (variations name it)",)


# -- what the importers would merge, drop or change ------------------------------------------


def test_shopify_handles_fold_accents_and_never_merge_two_products(tmp_path: Path) -> None:
    fill(tmp_path, [
        Product(id="a", title="Café au lait"), Product(id="b", title="Caf"),
        Product(id="c", title="日本 mug", slug="日本-mug"),
        Product(id="e", title="한국 mug", slug="한국-mug"),
    ])  # fmt: skip
    _header, rows, report = rows_of(tmp_path, "shopify-csv")
    handles = {r["Title"]: r["URL handle"] for r in rows if r["Title"]}
    assert handles == {"Café au lait": "cafe-au-lait", "Caf": "caf", "日本 mug": "mug",
                       "한국 mug": "mug-e"}  # fmt: skip
    assert report.notes == {"URL handle taken by another product: id appended": 1}
    assert [n.product for n in report.noted] == ["e"]


def test_importer_formats_write_text_as_it_is(tmp_path: Path) -> None:
    """No `'` against formula injection: the importers would keep it in the product."""
    fill(tmp_path, [Product(id="1", title="=HYPERLINK(1)", sku="=S", seo_title="+1")])
    _h, shopify, _r = rows_of(tmp_path, "shopify-csv")
    assert (shopify[0]["Title"], shopify[0]["SKU"], shopify[0]["SEO title"]) == (
        "=HYPERLINK(1)", "=S", "+1")  # fmt: skip
    _h, woo, _r = rows_of(tmp_path, "woocommerce-csv")
    assert (woo[0]["Name"], woo[0]["SKU"], woo[0]["Meta: _yoast_wpseo_title"]) == (
        "=HYPERLINK(1)", "=S", "+1")  # fmt: skip


def test_woocommerce_in_stock_is_never_empty(tmp_path: Path) -> None:
    fill(tmp_path, [
        Product(id="1", title="T1", sku="UNKNOWN"),
        Product(id="2", title="T2", sku="COUNTED", stock_quantity=4),
        Product(id="3", title="T3", sku="NONE-LEFT", stock_quantity=0),
        Product(id="4", title="T4", sku="GONE", availability="OutOfStock", stock_quantity=9),
    ])  # fmt: skip
    _header, rows, _report = rows_of(tmp_path, "woocommerce-csv")
    assert {r["SKU"]: r["In stock?"] for r in rows} == {
        "UNKNOWN": "1", "COUNTED": "1", "NONE-LEFT": "0", "GONE": "0"}  # fmt: skip


def test_woocommerce_takes_up_to_ten_attributes(tmp_path: Path) -> None:
    def variable(id_: str, count: int) -> Product:
        options = tuple((f"A{n}", f"v{n}") for n in range(1, count + 1))
        return Product(id=id_, title="T", sku=f"P{id_}", variants=(Variant("1", sku=f"P{id_}-1",
                                                                options=options),))  # fmt: skip

    fill(tmp_path, [variable("4", 4), variable("9", 10), variable("11", 11)])
    header, rows, report = rows_of(tmp_path, "woocommerce-csv")
    assert [n for n in header if n.endswith(" name")] == [f"Attribute {n} name"
                                                          for n in range(1, 11)]  # fmt: skip
    assert [r["SKU"] for r in rows] == ["P4", "P4-1", "P9", "P9-1"]
    parent = rows[2]
    assert [parent[f"Attribute {n} name"] for n in range(1, 11)] == [
        f"A{n}" for n in range(1, 11)]  # fmt: skip
    assert [(i.product, i.reasons) for i in report.invalid] == [
        ("11", ("more than 10 attributes",))]  # fmt: skip


def test_woocommerce_reports_what_its_importer_would_change(tmp_path: Path) -> None:
    fill(tmp_path, [
        Product(id="1", title="T1", sku="ARROW", categories=(Category("c", "Size > M"),)),
        Product(id="2", title="T2", sku="SLASH", description_html="<p>C:\\new folder</p>"),
        Product(id="3", title="T3", sku="FINE", description_html="<p>two\nlines</p>",
                categories=(Category("d", "Shirts", ("Men", "Shirts")),)),
    ])  # fmt: skip
    _header, rows, report = rows_of(tmp_path, "woocommerce-csv")
    assert [r["SKU"] for r in rows] == ["ARROW", "SLASH", "FINE"]  # written all the same
    assert {(n.product, n.reasons[0].split(":")[0]) for n in report.noted} == {
        ("1", "category name with '>'"), ("2", "description with a literal \\n")}  # fmt: skip
    assert "written with a caveat" in report.summary()
