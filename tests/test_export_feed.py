"""The Google Merchant Center feed (`export --format xml`), checked against Google's own spec.

Every `<item>` of the feed is mapped to the Merchant API's camelCase attributes (the mapping is
mechanical: SOURCE.md of tests/data/google-merchant) and validated against the API's
`ProductInput` schema from its discovery document, with no attribute allowed that the schema
does not name; then the Products Data Specification's required-attribute rules are checked
(platforms.md section 5). A product that cannot meet them is in the report, not in the feed.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from bridge_agent.export import ExportRequest, export_catalog
from bridge_agent.export.taxonomy import category_id, google_category, path_of
from bridge_agent.model import Category, Change, Image, Product, Variant
from bridge_agent.store import StateStore
from bridge_agent.testing.catalog import make_product

G = "{http://base.google.com/ns/1.0}"
DATA = Path(__file__).parent / "data" / "google-merchant"
REQUIRED = ("id", "title", "description", "link", "image_link", "availability", "price")
LISTS = {"additional_image_link": "additionalImageLinks", "gtin": "gtins",
         "product_type": "productTypes"}  # fmt: skip
PRICES = ("price", "sale_price")


def _validator() -> jsonschema.Draft4Validator:
    doc = json.loads((DATA / "merchantapi.products_v1.json").read_text(encoding="utf-8"))
    refs = re.sub(r'"\$ref": "([A-Za-z0-9]+)"', r'"$ref": "#/definitions/\1"',
                  json.dumps(doc["schemas"]))  # fmt: skip
    definitions = json.loads(refs)
    for schema in definitions.values():
        schema.pop("id", None)
    # Strict: an attribute name the API does not know is an error, not silently ignored.
    definitions["ProductAttributes"]["additionalProperties"] = False
    definitions["ProductInput"]["required"] = ["offerId", "contentLanguage", "feedLabel"]
    return jsonschema.Draft4Validator(
        {"$ref": "#/definitions/ProductInput", "definitions": definitions}
    )


VALIDATOR = _validator()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def to_product_input(item: ET.Element) -> dict[str, Any]:
    """A feed item as a Merchant API ProductInput (the documented snake_case -> camelCase)."""
    attributes: dict[str, Any] = {}
    offer_id = None
    for child in item:
        assert child.tag.startswith(G), f"attribute outside the g: namespace: {child.tag}"
        name, value = child.tag[len(G) :], child.text or ""
        if name == "id":
            offer_id = value
        elif name in LISTS:
            attributes.setdefault(LISTS[name], []).append(value)
        elif name in PRICES:
            amount, currency = value.split(" ")
            micros = int(Decimal(amount) * 1_000_000)
            attributes[_camel(name)] = {"amountMicros": str(micros), "currencyCode": currency}
        elif name in ("availability", "condition"):
            attributes[_camel(name)] = value.upper()
        elif name == "identifier_exists":
            attributes["identifierExists"] = value in ("yes", "true")
        else:
            attributes[_camel(name)] = value
    return {"offerId": offer_id, "contentLanguage": "en", "feedLabel": "FR",
            "productAttributes": attributes}  # fmt: skip


def check_item(item: ET.Element) -> dict[str, str]:
    """Schema-valid and meeting the required-attribute rules; the item's attributes."""
    product_input = to_product_input(item)
    errors = [e.message for e in VALIDATOR.iter_errors(product_input)]
    assert not errors, errors
    values = {c.tag[len(G) :]: c.text or "" for c in item}
    for name in REQUIRED:
        assert values.get(name), f"{name} missing in {values}"
    assert len(values["id"]) <= 50
    assert len(values["title"]) <= 150
    assert len(values["description"]) <= 5000
    assert "<" not in values["description"], "description must be plain text"
    assert values["link"].startswith("https://")
    assert values["image_link"].startswith("https://")
    assert values["availability"] in ("in_stock", "out_of_stock", "preorder", "backorder")
    assert values["availability"] not in ("preorder", "backorder") or values.get(
        "availability_date"
    )
    assert re.fullmatch(r"\d+(\.\d+)? [A-Z]{3}", values["price"])
    assert Decimal(values["price"].split()[0]) > 0
    assert values["condition"] in ("new", "used", "refurbished")
    assert values.get("gtin") or values.get("identifier_exists") == "no"
    if "google_product_category" in values:
        assert path_of(int(values["google_product_category"])) is not None
    return values


def record(state_dir: Path, products: list[Product], deleted: tuple[str, ...] = ()) -> None:
    async def write() -> None:
        async with StateStore.open(state_dir) as state:
            now = int(time.time() * 1000)
            await state.record([Change("main", p.id, p, "import", now) for p in products])
            if deleted:
                await state.record([Change("main", i, None, "poll", now + 1) for i in deleted])

    asyncio.run(write())


def feed(state_dir: Path, **kwargs: Any) -> tuple[ET.Element, Any]:
    out = io.BytesIO()
    request = ExportRequest(store="main", format="xml", store_url="https://shop.example",
                            **kwargs)  # fmt: skip
    report = export_catalog(state_dir, request, out)
    root = ET.fromstring(out.getvalue())
    return root, report


def test_every_item_of_a_catalog_feed_is_valid_for_the_merchant_api(tmp_path: Path) -> None:
    catalog = [make_product(i) for i in range(60)]
    record(tmp_path, catalog)
    root, report = feed(tmp_path)
    assert root.tag == "rss" and root.get("version") == "2.0"
    items = root.findall("./channel/item")
    seen = [check_item(item) for item in items]
    # Every product with an image is in the feed: one item each, or one per variant.
    with_image = [p for p in catalog if p.images]
    expected = sum(len(p.variants) or 1 for p in with_image)
    assert len(items) == expected == report.rows
    assert report.products == len(with_image)
    # Variants are items of their group, with their own id and the group's id.
    groups = {v["item_group_id"] for v in seen if "item_group_id" in v}
    assert groups == {p.sku for p in with_image if p.variants}
    assert len({v["id"] for v in seen}) == len(seen)
    sizes = {v["size"] for v in seen if "size" in v}
    assert sizes == {"S", "M", "L"}
    # Products without an image are reported with the reason, never written.
    missing = {p.id for p in catalog if not p.images}
    assert {i.product for i in report.invalid} == missing
    assert all(i.reasons == ("no image",) for i in report.invalid)
    assert report.skipped["no image"] == sum(len(p.variants) or 1 for p in catalog
                                             if not p.images)  # fmt: skip


def test_a_product_missing_a_price_or_an_image_is_reported_not_exported(tmp_path: Path) -> None:
    good = make_product(1)
    no_price = Product(**{**_fields(make_product(2)), "price": None, "regular_price": None})
    no_image = Product(**{**_fields(make_product(4)), "images": ()})
    draft = Product(**{**_fields(make_product(6)), "status": "draft"})
    no_link = Product(**{**_fields(make_product(8)), "url": None})
    backorder = Product(**{**_fields(make_product(9)), "availability": "BackOrder"})
    no_currency = Product(**{**_fields(make_product(12)), "currency": None})
    record(tmp_path, [good, no_price, no_image, draft, no_link, backorder, no_currency])
    root, report = feed(tmp_path)
    items = root.findall("./channel/item")
    assert [check_item(i)["id"] for i in items] == [good.sku]
    reasons = {i.product: i.reasons for i in report.invalid}
    assert reasons == {
        "2": ("no price",),
        "4": ("no image",),
        "6": ("not published (status draft)",),
        "8": ("no link",),
        "9": ("backorder without availability_date",),
        "12": ("no currency",),
    }
    # A store-wide currency (a WooCommerce store's setting) completes the last one.
    root, report = feed(tmp_path, currency="EUR")
    ids = [check_item(i)["id"] for i in root.findall("./channel/item")]
    assert ids == [good.sku, no_currency.sku]


def test_special_characters_html_and_long_text_stay_valid(tmp_path: Path) -> None:
    base = _fields(make_product(1))
    tricky = Product(
        **{
            **base,
            "title": 'Tee <b>&</b> "quotes" \x01 ' + "x" * 200,
            "description_html": "<p>Line&nbsp;one &amp; <em>two</em></p><script>x</script>"
            + " word" * 2000,
            "brand": "Acme & Co",
            "gtin": "4006381333931",
        }
    )
    record(tmp_path, [tricky])
    root, _report = feed(tmp_path)
    (item,) = root.findall("./channel/item")
    values = check_item(item)
    assert values["brand"] == "Acme & Co"
    assert values["gtin"] == "4006381333931"
    assert "identifier_exists" not in values
    assert values["description"].startswith("Line one & two")
    assert len(values["title"]) <= 150


def test_google_product_category_only_when_the_taxonomy_matches_for_certain() -> None:
    assert path_of(203) == "Apparel & Accessories > Clothing > Outerwear"
    assert category_id(("Clothing", "Outerwear")) == 203  # the tail of exactly one path
    assert category_id(("apparel & accessories", "clothing", "outerwear")) == 203
    assert category_id(("Outerwear",)) == 203
    assert category_id(("New in",)) is None  # a store's own name
    assert category_id(("Tops",)) is None  # no taxonomy leaf is called that
    assert (
        google_category((Category("1", "Sale"), Category("2", "Outerwear", ("Outerwear",)))) == 203
    )


def test_items_with_a_taxonomy_category_carry_it(tmp_path: Path) -> None:
    jacket = Product(
        **{**_fields(make_product(1)), "categories": (Category("9", "Outerwear",
                                                               ("Clothing", "Outerwear")),)}
    )  # fmt: skip
    mug = make_product(3)  # Home > Kitchen: not a certain match
    record(
        tmp_path, [jacket, Product(**{**_fields(mug), "images": (Image("i", "https://x/m.jpg"),)})]
    )
    root, _report = feed(tmp_path)
    values = {check_item(i)["id"]: check_item(i) for i in root.findall("./channel/item")}
    assert values[jacket.sku]["google_product_category"] == "203"
    assert values[jacket.sku]["product_type"] == "Clothing > Outerwear"
    assert "google_product_category" not in values[mug.sku]


def test_variant_items_take_their_own_values(tmp_path: Path) -> None:
    product = Product(
        id="77", title="Cotton Tee", sku="TEE", url="https://shop.example/tee",
        description_html="<p>Soft tee</p>", currency="USD", price="19.00", regular_price="19.00",
        availability="InStock",
        images=(Image("a", "https://shop.example/a.jpg", "front"),
                Image("b", "https://shop.example/red.jpg", "red", 1)),
        variants=(
            Variant("1", sku="TEE-S-RED", title="Red / S",
                    options=(("Color", "Red"), ("Size", "S")),
                    price="15.00", regular_price="19.00", sale_price="15.00",
                    availability="InStock", image_id="b", gtin="00012345678905"),
            Variant("2", sku="TEE-M-RED", options=(("Color", "Red"), ("Size", "M")),
                    price="19.00", availability="OutOfStock"),
        ),
    )  # fmt: skip
    record(tmp_path, [product])
    root, report = feed(tmp_path)
    first, second = (check_item(i) for i in root.findall("./channel/item"))
    assert first == {
        "id": "TEE-S-RED", "item_group_id": "TEE", "title": "Cotton Tee - Red / S",
        "description": "Soft tee", "link": "https://shop.example/tee",
        "image_link": "https://shop.example/red.jpg",
        "additional_image_link": "https://shop.example/a.jpg", "availability": "in_stock",
        "price": "19.00 USD", "sale_price": "15.00 USD", "condition": "new",
        "gtin": "00012345678905", "color": "Red", "size": "S",
    }  # fmt: skip
    assert second["title"] == "Cotton Tee - Red, M"
    assert second["availability"] == "out_of_stock"
    assert second["image_link"] == "https://shop.example/a.jpg"
    assert second["identifier_exists"] == "no"
    assert (report.products, report.variants, report.rows) == (1, 2, 2)


def test_deleted_products_are_left_out_and_reported(tmp_path: Path) -> None:
    record(tmp_path, [make_product(1), make_product(2)])
    record(tmp_path, [], deleted=("2",))
    root, report = feed(tmp_path, since=0)
    ids = [check_item(i)["id"] for i in root.findall("./channel/item")]
    assert ids == [make_product(1).sku]
    assert [(i.product, i.reasons) for i in report.invalid] == [
        ("2", ("deleted (left out of the feed)",))
    ]


@pytest.mark.parametrize("attribute", ["price", "title", "link"])
def test_the_validator_itself_refuses_a_broken_item(attribute: str) -> None:
    """The schema check is no formality: a wrong name or type fails it."""
    good = ET.fromstring(
        f'<item xmlns:g="{G[1:-1]}"><g:id>A</g:id><g:title>T</g:title><g:description>D'
        "</g:description><g:link>https://x/a</g:link><g:image_link>https://x/a.jpg"
        "</g:image_link><g:availability>in_stock</g:availability><g:price>1.00 EUR</g:price>"
        "<g:condition>new</g:condition><g:identifier_exists>no</g:identifier_exists></item>"
    )
    check_item(good)
    broken = to_product_input(good)
    attributes = broken["productAttributes"]
    if attribute == "price":
        attributes["price"]["amountMicros"] = 1.0
    else:
        attributes[attribute + "_typo"] = attributes.pop(attribute)
    assert list(VALIDATOR.iter_errors(broken))


def _fields(product: Product) -> dict[str, Any]:
    return {name: getattr(product, name) for name in Product.__dataclass_fields__}


def _shirt(id_: str, **fields: Any) -> Product:
    base = Product(
        id=id_, title="Shirt", sku=f"SKU-{id_}", url=f"https://shop.example/{id_}",
        description_html="<p>A shirt.</p>", currency="EUR", price="10.00",
        regular_price="10.00", availability="InStock",
        images=(Image(f"i{id_}", f"https://shop.example/{id_}.jpg", "shirt"),),
    )  # fmt: skip
    return replace(base, **fields)


def test_a_duplicate_id_is_reported_never_written_twice(tmp_path: Path) -> None:
    record(tmp_path, [_shirt("1", sku="SAME"), _shirt("2", sku="SAME"), _shirt("3")])
    root, report = feed(tmp_path)
    ids = [check_item(i)["id"] for i in root.findall("./channel/item")]
    assert ids == ["SAME", "SKU-3"]
    assert report.skipped["duplicate id"] == 1
    assert [(i.product, i.reasons) for i in report.invalid] == [("2", ("duplicate id",))]


def test_prices_are_always_amount_at_the_minor_unit_and_code(tmp_path: Path) -> None:
    amounts = {"1": ("1E+2", "EUR"), "2": ("12.3456789", "EUR"), "3": ("19.9", "USD"),
               "4": ("007.50", "EUR"), "5": ("1500.4", "JPY"), "6": ("2.5", "KWD")}  # fmt: skip
    record(tmp_path, [_shirt(i, price=p, regular_price=p, currency=c)
                      for i, (p, c) in amounts.items()])  # fmt: skip
    root, _report = feed(tmp_path)
    prices = {v["id"]: v["price"] for v in map(check_item, root.findall("./channel/item"))}
    assert prices == {"SKU-1": "100.00 EUR", "SKU-2": "12.35 EUR", "SKU-3": "19.90 USD",
                      "SKU-4": "7.50 EUR", "SKU-5": "1500 JPY", "SKU-6": "2.500 KWD"}  # fmt: skip


def test_length_limits_refuse_a_long_group_id_and_cut_descriptive_text(tmp_path: Path) -> None:
    grouped = _shirt("1", sku="G" * 51, variants=(
        Variant("v", sku="V-1", options=(("Size", "M"),), price="1.00"),))  # fmt: skip
    long = _shirt(
        "2", brand="B" * 100, categories=(Category("c", "x" * 800),),
        variants=(Variant("w", sku="V-2", price="1.00",
                          options=(("Color", "C" * 120), ("Size", "S" * 120))),),
    )  # fmt: skip
    record(tmp_path, [grouped, long])
    root, report = feed(tmp_path)
    [item] = [check_item(i) for i in root.findall("./channel/item")]
    assert item["id"] == "V-2"
    assert (len(item["brand"]), len(item["color"]), len(item["size"])) == (70, 100, 100)
    assert len(item["product_type"]) == 750
    assert [(i.product, i.reasons) for i in report.invalid] == [
        ("1", ("item_group_id longer than 50 characters",))
    ]


def test_a_title_is_text_not_html(tmp_path: Path) -> None:
    record(tmp_path, [_shirt("1", title="Shirt  size <M> &amp; <L>")])
    root, _report = feed(tmp_path)
    [item] = [check_item(i) for i in root.findall("./channel/item")]
    assert item["title"] == "Shirt size <M> & <L>"
