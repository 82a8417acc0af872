"""The JSON-LD builder (`downstream/jsonld.py`): schema.org-valid, Google-complete, inert in HTML.

Documents come from the WooCommerce simulator's catalogs (mapped through the real WooCommerce
mapping) and from hand-built products; each is checked against the real schema.org vocabulary
(`bridge_agent/testing/schemaorg.py`) and Google's required fields (platforms.md 6.1-6.3).
"""

from __future__ import annotations

import json
import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge_agent.downstream.jsonld import (
    DESCRIPTION_MAX,
    HUB_TEXT_PROPERTIES,
    JsonLd,
    build_jsonld,
    gtin_property,
    jsonld_inputs,
    script_text,
)
from bridge_agent.model import Image, Product, Rating, Variant
from bridge_agent.platforms.woocommerce.mapping import MappingOptions, map_product
from bridge_agent.simulators.woocommerce.sim import WooSimulator
from bridge_agent.testing.schemaorg import (
    Vocabulary,
    google_missing_recommended,
    google_problems,
    vocabulary_or_skip,
)

SITE = "https://shop.example"
GTINS = ("4006381333931", "96385074", "036000291452", "10614141000415")  # valid check digits


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return vocabulary_or_skip()


def simulator_products(seed: int, count: int) -> list[Product]:
    """A generated store's products as the agent sees them; some given GTINs and brands."""
    sim = WooSimulator.generate(products=count, seed=seed)
    cat = sim.catalog
    rng = random.Random(seed)
    out = []
    for item in list(cat.products()):
        if rng.random() < 0.3:
            item.global_unique_id = rng.choice(GTINS)
        doc = cat.doc(item)
        variations = [cat.doc(cat.items[v], product_route=False) for v in item.variations]
        product, _ = map_product(doc, variations, options=MappingOptions(currency="EUR"))
        if rng.random() < 0.3:
            product = replace(product, brand="Nordic &amp; Co")
        out.append(product)
    return out


def check(vocab: Vocabulary, result: JsonLd) -> dict[str, Any]:
    doc = result.document
    assert vocab.problems(doc) == []
    assert google_problems(doc, "snippet") == [] or not (
        result.has_offer or "aggregateRating" in doc
    )
    offer = doc.get("offers", {})
    if doc.get("image") and offer.get("@type") == "Offer" and float(offer["price"]) > 0:
        assert google_problems(doc, "merchant") == []
    assert json.loads(script_text(doc)) == doc
    assert all(v not in ("", [], {}) for v in _values(doc))
    return doc


def _values(node: Any) -> list[Any]:
    if isinstance(node, dict):
        return [x for v in node.values() for x in [v, *_values(v)]]
    if isinstance(node, list):
        return [x for v in node for x in [v, *_values(v)]]
    return []


def test_every_simulator_product_is_valid_schema_org_and_meets_google(vocab: Vocabulary) -> None:
    products = simulator_products(seed=3, count=250)
    seen: set[str] = set()
    for product in products:
        result = build_jsonld(product)
        doc = check(vocab, result)
        priced = [v for v in product.variants if v.price] if product.variants else [product]
        if doc["@type"] == "ProductGroup":
            seen.add("variable")
            assert len(doc["hasVariant"]) == len(product.variants)
            assert doc["variesBy"]
            assert all(u.startswith("https://schema.org/") for u in doc["variesBy"])
        if not product.price and not priced:
            seen.add("no price")
            assert not result.has_offer
            assert any("no price" in w for w in result.warnings)
        if not product.images:
            seen.add("no image")
            assert "image" not in doc
            assert any("no image" in w for w in result.warnings)
        elif result.has_offer and doc["@type"] == "Product" and float(product.price or 0) > 0:
            seen.add("merchant")
            assert google_problems(doc, "merchant") == []
            assert google_missing_recommended(doc, "merchant") == [
                "offers.shippingDetails",
                "offers.hasMerchantReturnPolicy",
            ]
        if product.availability == "OutOfStock" and "offers" in doc:
            seen.add("out of stock")
            assert doc["offers"]["availability"] == "https://schema.org/OutOfStock"
        if product.rating:
            seen.add("ratings")
            assert doc["aggregateRating"]["reviewCount"] == product.rating.count
        else:
            assert "aggregateRating" not in doc
        if product.gtin:
            seen.add("gtin")
            assert doc["gtin" + str(len(product.gtin))] == product.gtin
        if product.brand:
            assert doc["brand"] == {"@type": "Brand", "name": "Nordic & Co"}
    assert seen == {
        "variable",
        "no price",
        "no image",
        "merchant",
        "out of stock",
        "ratings",
        "gtin",
    }


def hand_product(**changes: Any) -> Product:
    base = Product(
        id="7",
        title="Cotton Tee",
        sku="TEE",
        url=f"{SITE}/product/tee/",
        description_html="<p>Soft <b>cotton</b> &amp; fair.</p><script>x()</script>",
        price="15.00",
        regular_price="19.00",
        sale_price="15.00",
        currency="USD",
        availability="InStock",
        images=(Image("1", f"{SITE}/tee-back.jpg", position=1), Image("2", f"{SITE}/tee.jpg")),
        rating=Rating("4.50", 12),
        brand="ExampleBrand",
        gtin="4006381333931",
        updated_at="2026-01-01T00:00:00Z",
    )
    return replace(base, **changes)


def test_simple_product_on_sale(vocab: Vocabulary) -> None:
    doc = check(vocab, build_jsonld(hand_product()))
    assert doc["@type"] == "Product"
    assert doc["description"] == "Soft cotton & fair."
    assert doc["image"] == [f"{SITE}/tee.jpg", f"{SITE}/tee-back.jpg"]
    assert doc["gtin13"] == "4006381333931"
    assert doc["offers"] == {
        "@type": "Offer",
        "price": "15.00",
        "priceCurrency": "USD",
        "availability": "https://schema.org/InStock",
        "itemCondition": "https://schema.org/NewCondition",
        "url": f"{SITE}/product/tee/",
        "priceSpecification": {
            "@type": "UnitPriceSpecification",
            "priceType": "https://schema.org/ListPrice",
            "price": "19.00",
            "priceCurrency": "USD",
        },
    }
    assert doc["aggregateRating"] == {
        "@type": "AggregateRating",
        "ratingValue": "4.50",
        "reviewCount": 12,
    }


def variable_product() -> Product:
    return hand_product(
        variants=(
            Variant("11", sku="TEE-S-R", options=(("Size", "S"), ("pa_colour", "Red")),
                    price="19.00", availability="InStock", image_id="1", gtin=GTINS[0]),
            Variant("12", sku="TEE-M-R", options=(("Size", "M"), ("pa_colour", "Red")),
                    price="21.00", availability="OutOfStock"),
            Variant("13", sku="TEE-M-F", options=(("Size", "M"), ("Fit", "Slim")),
                    price="21.00", availability="BackOrder"),
        ),
    )  # fmt: skip


def test_variable_product_is_a_product_group(vocab: Vocabulary) -> None:
    doc = check(vocab, build_jsonld(variable_product()))
    assert google_problems(doc, "merchant") == []
    assert doc["@type"] == "ProductGroup"
    assert doc["productGroupID"] == "TEE"
    assert doc["variesBy"] == ["https://schema.org/size", "https://schema.org/color", "Fit"]
    first, second, third = doc["hasVariant"]
    assert first["name"] == "Cotton Tee \u2013 S / Red"
    assert (first["size"], first["color"], first["image"]) == ("S", "Red", [f"{SITE}/tee-back.jpg"])
    assert first["gtin13"] == GTINS[0]
    assert second["offers"]["availability"] == "https://schema.org/OutOfStock"
    assert third["additionalProperty"] == [
        {"@type": "PropertyValue", "name": "Fit", "value": "Slim"}
    ]
    assert third["offers"]["availability"] == "https://schema.org/BackOrder"


def test_aggregate_offer_for_variants_when_asked(vocab: Vocabulary) -> None:
    doc = check(vocab, build_jsonld(variable_product(), variants="aggregate"))
    assert doc["@type"] == "Product"
    assert doc["offers"]["@type"] == "AggregateOffer"
    assert (doc["offers"]["lowPrice"], doc["offers"]["highPrice"]) == ("19.00", "21.00")
    assert doc["offers"]["offerCount"] == 3
    assert google_problems(doc, "snippet") == []
    assert google_problems(doc, "merchant") != []  # merchant listings need an Offer with a price


@pytest.mark.parametrize(
    ("changes", "warning"),
    [
        ({"price": None}, "no price"),
        ({"price": "12,50"}, "not a plain decimal"),
        ({"price": "-3"}, "not a plain decimal"),
        ({"currency": None}, "no currency"),
    ],
)
def test_no_offer_without_a_usable_price(
    vocab: Vocabulary, changes: dict[str, Any], warning: str
) -> None:
    result = build_jsonld(hand_product(**changes))
    check(vocab, result)
    assert "offers" not in result.document
    assert not result.has_offer
    assert any(warning in w for w in result.warnings)


def test_store_currency_is_the_fallback() -> None:
    doc = build_jsonld(hand_product(currency=None), currency="eur").document
    assert doc["offers"]["priceCurrency"] == "EUR"


def test_invalid_gtin_and_bad_rating_are_left_out(vocab: Vocabulary) -> None:
    result = build_jsonld(hand_product(gtin="4006381333932", rating=Rating("9.5", 3)))
    doc = check(vocab, result)
    assert not any(k.startswith("gtin") for k in doc)
    assert "aggregateRating" not in doc
    assert len(result.warnings) == 2


def test_gtin_rules() -> None:
    assert gtin_property("400638-133393 1") == ("gtin13", "4006381333931")
    assert [gtin_property(g) for g in GTINS] == [
        ("gtin13", GTINS[0]), ("gtin8", GTINS[1]), ("gtin12", GTINS[2]), ("gtin14", GTINS[3]),
    ]  # fmt: skip
    for bad in ("00000000", "123", "4006381333930", "\uff14" * 13, "abcdefgh"):
        assert gtin_property(bad) is None


def test_hub_sets_descriptive_text_but_never_commercial_facts(vocab: Vocabulary) -> None:
    hub = {
        "@context": "https://schema.org",
        "@type": "Product",
        "name": "Organic Cotton Tee",
        "description": "<p>Better text</p>",
        "brand": {"@type": "Brand", "name": "HubBrand"},
        "material": "Cotton",
        "gtin": "96385074",
        "offers": {"@type": "Offer", "price": "1.00", "priceCurrency": "XXX"},
        "aggregateRating": {"ratingValue": "5", "reviewCount": 999},
        "url": "https://evil.example/",
        "bogus": 1,
    }
    result = build_jsonld(hand_product(), hub=hub)
    doc = check(vocab, result)
    assert (doc["name"], doc["description"], doc["material"]) == (
        "Organic Cotton Tee",
        "Better text",
        "Cotton",
    )
    assert doc["brand"]["name"] == "HubBrand"
    assert doc["offers"]["price"] == "15.00"
    assert doc["offers"]["priceCurrency"] == "USD"
    assert doc["aggregateRating"]["reviewCount"] == 12
    assert doc["url"] == f"{SITE}/product/tee/"
    assert doc["gtin13"] == "4006381333931"  # the store's valid GTIN wins
    assert {w.split("'")[1] for w in result.warnings if w.startswith("hub property")} == {
        "offers", "aggregateRating", "url", "bogus",
    }  # fmt: skip
    filled = build_jsonld(hand_product(gtin=None), hub=hub).document
    assert filled["gtin8"] == "96385074"


def test_every_property_the_hub_may_set_is_a_product_property(vocab: Vocabulary) -> None:
    for name in (*HUB_TEXT_PROPERTIES, "brand"):
        assert vocab.properties[name].domains & vocab.supertypes("Product"), name


def test_fingerprint_follows_exactly_what_the_document_depends_on() -> None:
    product = variable_product()
    base = jsonld_inputs(product)
    assert jsonld_inputs(product) == base
    same = [
        {"updated_at": "2027-01-01T00:00:00Z"},
        {"seo_title": "x"},
        {"tags": ("a",)},
        {"stock_quantity": 3},
        {"images": tuple(replace(i, alt="new alt") for i in product.images)},
    ]
    for changes in same:
        assert jsonld_inputs(replace(product, **changes)) == base, changes
    v0 = product.variants[0]
    differs = [
        {"price": "99.00"},
        {"availability": "OutOfStock"},
        {"variants": (replace(v0, price="1.00"), *product.variants[1:])},
        {"variants": (replace(v0, availability="OutOfStock"), *product.variants[1:])},
        {"title": "New name"},
    ]
    for changes in differs:
        assert jsonld_inputs(replace(product, **changes)) != base, changes
    assert jsonld_inputs(product, hub={"name": "x"}) != base
    assert jsonld_inputs(product, currency="EUR") != base
    # With the hub's name, the store's title no longer matters.
    named = jsonld_inputs(product, hub={"name": "x"})
    assert jsonld_inputs(replace(product, title="Other"), hub={"name": "x"}) == named


@settings(max_examples=60, deadline=None)
@given(
    updated=st.text(max_size=30),
    seo=st.text(max_size=30),
    quantity=st.integers(-5, 500),
    price=st.decimals(min_value=0, max_value=10_000, places=2),
)
def test_equal_fingerprint_means_equal_document(
    updated: str, seo: str, quantity: int, price: Any
) -> None:
    a = hand_product(price=str(price))
    b = replace(a, updated_at=updated, seo_description=seo, stock_quantity=quantity)
    assert jsonld_inputs(a) == jsonld_inputs(b)
    assert script_text(build_jsonld(a).document) == script_text(build_jsonld(b).document)


HOSTILE = 'Tee </script><script>alert(1)</script> <!-- x --> a\u2028b\u2029 & "q" >'


def test_script_text_cannot_end_the_element(vocab: Vocabulary) -> None:
    document = {"@context": "https://schema.org", "@type": "Product", "name": HOSTILE}
    text = script_text(document)
    assert "<" not in text
    assert ">" not in text
    assert "&" not in text
    assert "\u2028" not in text
    assert "\u2029" not in text
    assert json.loads(text) == document
    built = build_jsonld(hand_product(title=HOSTILE, description_html=HOSTILE * 3))
    check(vocab, built)
    out = script_text(built.document)
    assert "<" not in out
    assert json.loads(out) == built.document
    # Names are read as HTML (WordPress stores "&amp;"): tags and script content go.
    assert built.document["name"] == 'Tee a b & "q" >'


def test_script_text_is_deterministic_and_compact() -> None:
    doc = build_jsonld(variable_product()).document
    shuffled = dict(reversed(list(doc.items())))
    assert script_text(doc) == script_text(shuffled)
    assert script_text(doc).startswith('{"@context":"https://schema.org","@type":"ProductGroup"')
    assert ": " not in script_text(doc)
    assert script_text(build_jsonld(variable_product()).document) == script_text(doc)


def test_odd_inputs(vocab: Vocabulary) -> None:
    huge = "<p>" + "word " * 100_000 + "</p>"
    result = build_jsonld(
        hand_product(
            description_html=huge,
            title="  ",
            sku="",
            brand="",
            url="/product/tee/",
            images=(Image("1", "/wp-content/a.jpg"), Image("2", "javascript:alert(1)")),
        ),
        store_url=SITE,
    )
    doc = result.document
    assert vocab.problems(doc) == []
    assert len(doc["description"]) <= DESCRIPTION_MAX
    assert doc["description"].endswith("…")
    assert "name" not in doc
    assert "sku" not in doc
    assert "brand" not in doc
    assert doc["url"] == f"{SITE}/product/tee/"
    assert doc["image"] == [f"{SITE}/wp-content/a.jpg"]
    assert any("no name" in w for w in result.warnings)
    assert any("javascript" in w for w in result.warnings)


@settings(max_examples=150, deadline=None)
@given(
    title=st.text(max_size=200),
    description=st.text(max_size=400),
    price=st.one_of(
        st.none(), st.text(max_size=12), st.from_regex(r"\d{1,6}\.\d{2}", fullmatch=True)
    ),
    gtin=st.one_of(st.none(), st.text(max_size=16), st.sampled_from(GTINS)),
)
def test_any_product_gives_a_valid_inert_document(
    title: str, description: str, price: str | None, gtin: str | None
) -> None:
    vocab = vocabulary_or_skip()
    result = build_jsonld(
        hand_product(title=title, description_html=description, price=price, gtin=gtin)
    )
    doc = result.document
    assert vocab.problems(doc) == []
    text = script_text(doc)
    assert "<" not in text
    assert json.loads(text) == doc
    text.encode("utf-8")
    if "offers" not in doc:
        assert any("price" in w for w in result.warnings)
