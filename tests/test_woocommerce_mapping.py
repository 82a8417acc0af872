"""WooCommerce product JSON -> canonical Product: pure, table-driven, realistic wc/v3 payloads."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bridge_agent.model import Category, Image, Product, Rating, Variant
from bridge_agent.platforms.woocommerce.mapping import (
    MappingOptions,
    WooPayloadError,
    category_path,
    category_tree,
    map_product,
)

SITE = "https://shop.example.com"

# Shaped like GET /wp-json/wc/v3/products/794 (WooCommerce REST docs), trimmed of read-only noise.
SIMPLE: dict[str, Any] = {
    "id": 794,
    "name": "Premium Quality",
    "slug": "premium-quality-19",
    "permalink": f"{SITE}/product/premium-quality-19/",
    "date_created": "2017-03-23T17:01:14",
    "date_created_gmt": "2017-03-23T20:01:14",
    "date_modified": "2017-03-23T17:01:14",
    "date_modified_gmt": "2017-03-23T20:01:14",
    "type": "simple",
    "status": "publish",
    "featured": False,
    "catalog_visibility": "visible",
    "description": "<p>Long text</p>\n",
    "short_description": "<p>Short text</p>\n",
    "sku": "PQ-19",
    "global_unique_id": "",
    "price": "21.99",
    "regular_price": "24.99",
    "sale_price": "21.99",
    "on_sale": True,
    "purchasable": True,
    "manage_stock": True,
    "stock_quantity": 12,
    "stock_status": "instock",
    "backorders": "no",
    "average_rating": "4.50",
    "rating_count": 2,
    "parent_id": 0,
    "categories": [{"id": 9, "name": "Clothing", "slug": "clothing"}],
    "tags": [{"id": 3, "name": "Summer &amp; Sun", "slug": "summer-sun"}],
    "images": [
        {
            "id": 792,
            "src": f"{SITE}/wp-content/uploads/2017/03/T_2_front-4.jpg",
            "name": "",
            "alt": "Front view",
        },
        {"id": 793, "src": f"{SITE}/wp-content/uploads/2017/03/T_2_back-4.jpg", "alt": ""},
    ],
    "attributes": [],
    "default_attributes": [],
    "variations": [],
    "meta_data": [
        {"id": 1, "key": "_yoast_wpseo_title", "value": "Premium Quality T-shirt | Shop"},
        {"id": 2, "key": "_yoast_wpseo_metadesc", "value": "Soft cotton, made to last."},
    ],
    "_links": {"self": [{"href": f"{SITE}/wp-json/wc/v3/products/794"}]},
}

VARIABLE: dict[str, Any] = {
    **SIMPLE,
    "id": 22,
    "name": "Ship Your Idea",
    "slug": "ship-your-idea",
    "permalink": f"{SITE}/product/ship-your-idea/",
    "type": "variable",
    "sku": "SYI",
    "price": "19.00",
    "regular_price": "",
    "sale_price": "",
    "stock_quantity": None,
    "stock_status": "outofstock",  # the parent's own flag; the variations decide
    "rating_count": 0,
    "average_rating": "0.00",
    "attributes": [
        {
            "id": 0,
            "name": "Brand",
            "position": 0,
            "visible": True,
            "variation": False,
            "options": ["Acme &amp; Co"],
        },
        {
            "id": 6,
            "name": "Color",
            "position": 1,
            "visible": True,
            "variation": True,
            "options": ["Black", "Green"],
        },
        {
            "id": 0,
            "name": "Size",
            "position": 2,
            "visible": True,
            "variation": True,
            "options": ["S", "M"],
        },
    ],
    "variations": [23, 24, 25],
    "meta_data": [],
}

VARIATIONS: list[dict[str, Any]] = [
    {
        "id": 23,
        "sku": "SYI-BLK-S",
        "status": "publish",
        "price": "19.00",
        "regular_price": "21.00",
        "sale_price": "19.00",
        "stock_status": "outofstock",
        "stock_quantity": 0,
        "image": {"id": 40, "src": f"{SITE}/black.jpg", "alt": ""},
        "attributes": [
            {"id": 6, "name": "Color", "option": "Black"},
            {"id": 0, "name": "Size", "option": "S"},
        ],
        "meta_data": [{"id": 9, "key": "_gtin", "value": "4006381333931"}],
    },
    {
        "id": 24,
        "sku": "SYI-GRN-M",
        "status": "publish",
        "price": "20.00",
        "regular_price": "20.00",
        "sale_price": "",
        "stock_status": "instock",
        "stock_quantity": 5,
        "global_unique_id": "0012345678905",
        "image": {"id": 0, "src": "", "alt": ""},
        "attributes": [
            {"id": 6, "name": "Color", "option": "Green"},
            {"id": 0, "name": "Size", "option": ""},
        ],  # "any size"
        "meta_data": [],
    },
    {  # disabled in the admin: not for sale, not a variant
        "id": 25,
        "sku": "SYI-OLD",
        "status": "private",
        "price": "1.00",
        "stock_status": "instock",
        "attributes": [{"id": 6, "name": "Color", "option": "Green"}],
        "meta_data": [],
    },
]


def product(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(SIMPLE)
    data.update(changes)
    return data


def test_simple_product_maps_every_field() -> None:
    mapped, warnings = map_product(
        SIMPLE, options=MappingOptions(currency="EUR", prices_include_tax=True)
    )
    assert warnings == []
    assert mapped == Product(
        id="794",
        title="Premium Quality",
        sku="PQ-19",
        slug="premium-quality-19",
        url=f"{SITE}/product/premium-quality-19/",
        status="active",
        description_html="<p>Long text</p>\n",
        short_description_html="<p>Short text</p>\n",
        seo_title="Premium Quality T-shirt | Shop",
        seo_description="Soft cotton, made to last.",
        price="21.99",
        regular_price="24.99",
        sale_price="21.99",
        currency="EUR",
        tax_included=True,
        availability="InStock",
        stock_quantity=12,
        categories=(Category("9", "Clothing", ("Clothing",)),),
        tags=("Summer & Sun",),
        images=(
            Image("792", f"{SITE}/wp-content/uploads/2017/03/T_2_front-4.jpg", "Front view", 0),
            Image("793", f"{SITE}/wp-content/uploads/2017/03/T_2_back-4.jpg", "", 1),
        ),
        rating=Rating("4.50", 2),
        updated_at="2017-03-23T20:01:14Z",
        extra={"type": "simple", "catalog_visibility": "visible"},
    )
    # The canonical dict round-trips: what is hashed is what the hub rebuilds.
    assert Product.from_dict(mapped.to_dict()) == mapped


def test_variable_product_with_variations() -> None:
    mapped, warnings = map_product(VARIABLE, VARIATIONS)
    assert warnings == []
    assert mapped.availability == "InStock"  # one enabled variation is in stock
    assert mapped.price == "19.00"
    assert mapped.regular_price is None
    assert mapped.brand == "Acme & Co"
    assert mapped.rating is None  # no reviews yet: "0.00" is not a rating
    assert mapped.variants == (
        Variant(
            id="23",
            sku="SYI-BLK-S",
            title="Black / S",
            options=(("Color", "Black"), ("Size", "S")),
            price="19.00",
            regular_price="21.00",
            sale_price="19.00",
            availability="OutOfStock",
            stock_quantity=0,
            image_id="40",
            gtin="4006381333931",
        ),
        Variant(
            id="24",
            sku="SYI-GRN-M",
            title="Green",
            options=(("Color", "Green"),),
            price="20.00",
            regular_price="20.00",
            availability="InStock",
            stock_quantity=5,
            gtin="0012345678905",
        ),
    )
    assert Product.from_dict(mapped.to_dict()) == mapped


@pytest.mark.parametrize(
    ("stock", "expected"),
    [
        (["outofstock", "outofstock"], "OutOfStock"),
        (["outofstock", "onbackorder"], "BackOrder"),
        (["onbackorder", "instock"], "InStock"),
    ],
)
def test_variable_availability(stock: list[str], expected: str) -> None:
    variations = [
        {"id": 100 + i, "status": "publish", "stock_status": s, "price": "1.00", "attributes": []}
        for i, s in enumerate(stock)
    ]
    mapped, _ = map_product({**VARIABLE, "stock_status": "instock"}, variations)
    assert mapped.availability == expected


def test_variable_product_price_from_variations_when_parent_has_none() -> None:
    mapped, warnings = map_product({**VARIABLE, "price": ""}, VARIATIONS)
    assert mapped.price == "19.00"  # the lowest enabled variation
    assert "no price" not in warnings


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("publish", "active"),
        ("draft", "draft"),
        ("pending", "draft"),
        ("future", "draft"),
        ("private", "archived"),
        ("trash", "archived"),
    ],
)
def test_status_mapping(status: str, expected: str) -> None:
    mapped, warnings = map_product(product(status=status))
    assert mapped.status == expected
    assert warnings == []


def test_unknown_status_is_draft_with_a_warning() -> None:
    mapped, warnings = map_product(product(status="wc-custom"))
    assert mapped.status == "draft"
    assert warnings == ["unknown status 'wc-custom' (mapped to draft)"]


def test_trashed_product_is_archived_and_keeps_its_data() -> None:
    mapped, _ = map_product(product(status="trash", slug="premium-quality-19__trashed"))
    assert mapped.status == "archived"
    assert mapped.title == "Premium Quality"


@pytest.mark.parametrize(
    ("stock_status", "expected"),
    [("instock", "InStock"), ("outofstock", "OutOfStock"), ("onbackorder", "BackOrder")],
)
def test_availability_mapping(stock_status: str, expected: str) -> None:
    assert map_product(product(stock_status=stock_status))[0].availability == expected


def test_no_image_warns() -> None:
    mapped, warnings = map_product(product(images=[]))
    assert mapped.images == ()
    assert warnings == ["no image"]


def test_no_price_warns_and_empty_strings_are_none() -> None:
    mapped, warnings = map_product(product(price="", regular_price="", sale_price=""))
    assert (mapped.price, mapped.regular_price, mapped.sale_price) == (None, None, None)
    assert warnings == ["no price"]


def test_images_beyond_the_maximum_are_left_out() -> None:
    images = [{"id": 500 + i, "src": f"{SITE}/img-{i}.jpg", "alt": f"alt {i}"} for i in range(12)]
    mapped, _ = map_product(product(images=images), options=MappingOptions(images_max=3))
    assert mapped.images == tuple(
        Image(str(500 + i), f"{SITE}/img-{i}.jpg", f"alt {i}", i) for i in range(3)
    )


def _seo_meta(*pairs: tuple[str, Any]) -> list[dict[str, Any]]:
    return [{"id": n, "key": k, "value": v} for n, (k, v) in enumerate(pairs, start=1)]


@pytest.mark.parametrize(
    ("meta", "title", "description"),
    [
        pytest.param(
            [("_yoast_wpseo_title", "Y title"), ("_yoast_wpseo_metadesc", "Y desc")],
            "Y title",
            "Y desc",
            id="yoast",
        ),
        pytest.param(
            [("rank_math_title", "RM title"), ("rank_math_description", "RM desc")],
            "RM title",
            "RM desc",
            id="rank-math",
        ),
        pytest.param(
            [("_aioseo_title", "AIO title"), ("_aioseo_description", "AIO desc")],
            "AIO title",
            "AIO desc",
            id="aioseo",
        ),
        pytest.param(
            [("_seopress_titles_title", "SP title"), ("_seopress_titles_desc", "SP desc")],
            "SP title",
            "SP desc",
            id="seopress",
        ),
        pytest.param(
            [
                ("rank_math_title", "RM title"),
                ("_yoast_wpseo_title", "Y title"),
                ("_yoast_wpseo_metadesc", "  "),  # empty: the next plugin's description counts
                ("rank_math_description", "RM desc"),
            ],
            "Y title",
            "RM desc",
            id="documented-order",
        ),
        pytest.param(
            [("_yoast_wpseo_title", ["not", "text"]), ("_aioseo_title", "AIO title")],
            "AIO title",
            None,
            id="non-string-meta-ignored",
        ),
        pytest.param([("_some_other_plugin", "x")], None, None, id="none"),
    ],
)
def test_seo_plugins(
    meta: list[tuple[str, Any]], title: str | None, description: str | None
) -> None:
    mapped, _ = map_product(product(meta_data=_seo_meta(*meta)))
    assert (mapped.seo_title, mapped.seo_description) == (title, description)


def test_seo_plugin_option_picks_one_plugin() -> None:
    meta = _seo_meta(("_yoast_wpseo_title", "stale Yoast"), ("rank_math_title", "RM title"))
    mapped, _ = map_product(product(meta_data=meta), options=MappingOptions(seo_plugin="rankmath"))
    assert mapped.seo_title == "RM title"


TREE = category_tree(
    [
        {"id": 9, "name": "Clothing", "parent": 0},
        {"id": 15, "name": "Men", "parent": 9},
        {"id": 16, "name": "Hoodies &amp; Sweatshirts", "parent": 15},
    ]
)


@pytest.mark.parametrize(
    ("category", "tree", "path"),
    [
        (
            {"id": 16, "name": "Hoodies &amp; Sweatshirts"},
            TREE,
            ("Clothing", "Men", "Hoodies & Sweatshirts"),
        ),
        ({"id": 9, "name": "Clothing"}, TREE, ("Clothing",)),
        ({"id": 77, "name": "New"}, TREE, ("New",)),  # not in the tree (yet)
        ({"id": 16, "name": "Hoodies"}, None, ("Hoodies",)),  # no tree at all
    ],
)
def test_category_paths(
    category: dict[str, Any], tree: dict[int, tuple[str, int]] | None, path: tuple[str, ...]
) -> None:
    mapped, _ = map_product(product(categories=[{**category, "slug": "x"}]), categories=tree)
    assert mapped.categories[0].path == path
    assert mapped.categories[0].id == str(category["id"])


def test_category_path_survives_a_cycle() -> None:
    assert category_path(1, "A", {1: ("A", 2), 2: ("B", 1)}) == ("B", "A")


@pytest.mark.parametrize(
    ("changes", "gtin", "brand"),
    [
        ({"global_unique_id": "4006381333931"}, "4006381333931", None),
        (
            {"meta_data": [{"id": 1, "key": "_gtin", "value": "0012345678905"}]},
            "0012345678905",
            None,
        ),
        ({"brands": [{"id": 4, "name": "Woo &amp; Co", "slug": "woo"}]}, None, "Woo & Co"),
        (
            {"attributes": [{"id": 2, "name": "Brand", "slug": "pa_brand", "options": ["Acme"]}]},
            None,
            "Acme",
        ),
    ],
)
def test_gtin_and_brand(changes: dict[str, Any], gtin: str | None, brand: str | None) -> None:
    mapped, _ = map_product(product(**changes))
    assert (mapped.gtin, mapped.brand) == (gtin, brand)


def test_language_and_dates() -> None:
    mapped, _ = map_product(product(lang="fr", date_modified_gmt="2026-11-23T10:00:00"))
    assert mapped.language == "fr"
    assert mapped.updated_at == "2026-11-23T10:00:00Z"
    assert map_product(product())[0].language is None


def test_bad_modified_date_warns() -> None:
    mapped, warnings = map_product(product(date_modified_gmt=None))
    assert mapped.updated_at is None
    assert warnings == ["no valid date_modified_gmt"]


def test_tax_and_currency_stay_unknown_unless_configured() -> None:
    mapped, _ = map_product(SIMPLE)
    assert (mapped.tax_included, mapped.currency) == (None, None)


@pytest.mark.parametrize("payload", [{}, {"id": 0}, {"id": "abc"}, {"id": True}])
def test_a_payload_without_id_is_refused(payload: dict[str, Any]) -> None:
    with pytest.raises(WooPayloadError):
        map_product(payload)


def test_variant_order_follows_the_product_not_the_listing() -> None:
    product = {"id": 1, "name": "Hoodie", "type": "variable", "status": "publish",
               "variations": [12, 11, 13]}  # fmt: skip
    variations = [
        {"id": i, "status": "publish", "attributes": [{"name": "Size", "option": s}]}
        for i, s in ((13, "L"), (11, "M"), (12, "S"))
    ]
    mapped, _ = map_product(product, variations)
    again, _ = map_product(product, list(reversed(variations)))
    assert [v.id for v in mapped.variants] == ["12", "11", "13"]
    assert mapped == again
