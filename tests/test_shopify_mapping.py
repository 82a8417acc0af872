"""Shopify adapter, the pure parts: mapping, documents against the real schema and their cost,
webhook HMAC, the throttle model, and the bulk JSONL assembly."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

import pytest
from graphql import (
    FragmentDefinitionNode,
    GraphQLObjectType,
    OperationDefinitionNode,
    get_named_type,
    parse,
    validate,
)

from bridge_agent.errors import BadWebhook
from bridge_agent.platforms.shopify import queries, webhooks
from bridge_agent.platforms.shopify.bulk import BulkResultIncomplete, BulkSpool
from bridge_agent.platforms.shopify.mapping import (
    ShopifyPayloadError,
    ShopInfo,
    map_product,
    variant_availability,
)
from bridge_agent.platforms.shopify.settings import API_VERSION
from bridge_agent.platforms.shopify.throttle import CostBucket, ThrottleStatus
from bridge_agent.simulators.shopify import schema as sim_schema
from bridge_agent.simulators.shopify.cost import CostCalculator

SHOP = ShopInfo(currency="EUR", public_url="https://shop.example.com")


# -- fixtures built from the schema's own field names -------------------------------------------


def _fields(type_name: str) -> set[str]:
    found = sim_schema.admin_schema().get_type(type_name)
    assert isinstance(found, GraphQLObjectType)
    return set(found.fields)


def _check_shape(node: Mapping[str, Any], type_name: str) -> None:
    """Every key of a fixture is a field of its schema type (nested objects too)."""
    schema = sim_schema.admin_schema()
    parent = schema.get_type(type_name)
    assert isinstance(parent, GraphQLObjectType)
    for key, value in node.items():
        assert key in parent.fields, f"{type_name}.{key} is not in the schema"
        child = get_named_type(parent.fields[key].type)
        if isinstance(value, Mapping) and isinstance(child, GraphQLObjectType):
            if "nodes" in value:
                inner = child.fields["nodes"].type
                node_type = get_named_type(inner)
                for item in value["nodes"]:
                    name = "MediaImage" if node_type.name == "Media" else node_type.name
                    _check_shape(item, name)
            else:
                _check_shape(value, child.name)


def variant(n: int, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": f"gid://shopify/ProductVariant/{100 + n}",
        "title": f"Size {n}",
        "sku": f"SKU-{n}",
        "barcode": f"40000000000{n}",
        "price": "19.90",
        "compareAtPrice": None,
        "position": n,
        "inventoryQuantity": 5,
        "inventoryPolicy": "DENY",
        "selectedOptions": [{"name": "Size", "value": str(n)}],
        "inventoryItem": {"tracked": True},
        "image": None,
    }
    base.update(over)
    return base


def product(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "gid://shopify/Product/7001",
        "title": "Linen shirt",
        "handle": "linen-shirt",
        "status": "ACTIVE",
        "descriptionHtml": "<p>Soft.</p>",
        "vendor": "Acme",
        "productType": "Shirts",
        "tags": ["linen", "summer"],
        "updatedAt": "2026-11-23T10:00:00Z",
        "totalInventory": 10,
        "seo": {"title": "Linen shirt | Acme", "description": None},
        "category": {
            "id": "gid://shopify/TaxonomyCategory/aa-1-13",
            "name": "Shirts",
            "fullName": "Apparel & Accessories > Clothing > Shirts",
        },
        "variants": {
            "pageInfo": {"hasNextPage": False, "endCursor": None},
            "nodes": [variant(2), variant(1)],
        },
        "media": {
            "pageInfo": {"hasNextPage": False, "endCursor": None},
            "nodes": [
                {
                    "id": "gid://shopify/MediaImage/501",
                    "alt": "Front",
                    "image": {"id": "gid://shopify/ProductImage/9", "url": "https://cdn/a.jpg"},
                },
                {
                    "id": "gid://shopify/MediaImage/502",
                    "alt": None,
                    "image": {"url": "https://cdn/b.jpg"},
                },
            ],
        },
    }
    base.update(over)
    return base


def test_fixtures_use_the_schema_s_field_names() -> None:
    _check_shape(product(), "Product")
    assert {"price", "compareAtPrice", "inventoryPolicy"} <= _fields("ProductVariant")


def test_a_product_maps_to_the_canonical_model() -> None:
    mapped, warnings = map_product(product(), shop=SHOP)
    assert warnings == []
    assert mapped.id == "7001"
    assert mapped.slug == "linen-shirt"
    assert mapped.url == "https://shop.example.com/products/linen-shirt"
    assert mapped.status == "active"
    assert mapped.sku == "SKU-1"  # the first variant by position, whatever the order read
    assert [v.id for v in mapped.variants] == ["101", "102"]
    assert mapped.seo_title == "Linen shirt | Acme"
    assert mapped.seo_description is None  # null stays None
    assert mapped.description_html == "<p>Soft.</p>"
    assert (mapped.price, mapped.regular_price, mapped.sale_price) == ("19.90", "19.90", None)
    assert mapped.currency == "EUR"
    assert mapped.availability == "InStock"
    assert mapped.stock_quantity == 10
    assert mapped.tags == ("linen", "summer")
    assert [(i.id, i.src, i.alt, i.position) for i in mapped.images] == [
        ("501", "https://cdn/a.jpg", "Front", 0),
        ("502", "https://cdn/b.jpg", "", 1),
    ]
    assert mapped.brand == "Acme"
    assert [(c.id, c.name, c.path) for c in mapped.categories] == [
        ("aa-1-13", "Shirts", ("Apparel & Accessories", "Clothing", "Shirts")),
        ("type:Shirts", "Shirts", ("Shirts",)),
    ]
    assert mapped.updated_at == "2026-11-23T10:00:00Z"
    first = mapped.variants[0]
    assert first.options == (("Size", "1"),)
    assert first.gtin == "400000000001"
    assert first.stock_quantity == 5


@pytest.mark.parametrize(
    ("status", "canonical", "unlisted"),
    [
        ("ACTIVE", "active", False),
        ("DRAFT", "draft", False),
        ("ARCHIVED", "archived", False),
        ("UNLISTED", "active", True),
    ],
)
def test_status(status: str, canonical: str, unlisted: bool) -> None:
    mapped, _ = map_product(product(status=status), shop=SHOP)
    assert mapped.status == canonical
    assert mapped.extra.get("unlisted", False) is unlisted


def test_an_unknown_status_is_a_draft_with_a_warning() -> None:
    mapped, warnings = map_product(product(status="SOMETHING_NEW"), shop=SHOP)
    assert mapped.status == "draft"
    assert any("unknown status" in w for w in warnings)


def test_compare_at_price_above_price_is_a_sale() -> None:
    cheap = variant(1, price="15.00", compareAtPrice="20.00")
    dear = variant(2, price="30.00", compareAtPrice="25.00")  # not above: no sale
    mapped, _ = map_product(product(variants={"pageInfo": {}, "nodes": [dear, cheap]}), shop=SHOP)
    assert (mapped.price, mapped.regular_price, mapped.sale_price) == ("15.00", "20.00", "15.00")
    by_id = {v.id: v for v in mapped.variants}
    assert (by_id["102"].regular_price, by_id["102"].sale_price) == ("30.00", None)


@pytest.mark.parametrize(
    ("tracked", "quantity", "policy", "expected"),
    [
        (True, 3, "DENY", "InStock"),
        (True, 0, "DENY", "OutOfStock"),
        (True, -2, "CONTINUE", "BackOrder"),
        (True, 0, "CONTINUE", "BackOrder"),
        (False, 0, "DENY", "InStock"),
        (True, None, "DENY", "OutOfStock"),
    ],
)
def test_variant_availability(
    tracked: bool, quantity: int | None, policy: str, expected: str
) -> None:
    node = variant(1, inventoryQuantity=quantity, inventoryPolicy=policy)
    node["inventoryItem"] = {"tracked": tracked}
    assert variant_availability(node) == expected


def test_the_product_is_the_best_of_its_variants() -> None:
    out = variant(1, inventoryQuantity=0)
    back = variant(2, inventoryQuantity=0, inventoryPolicy="CONTINUE")
    mapped, _ = map_product(product(variants={"nodes": [out, back]}), shop=SHOP)
    assert mapped.availability == "BackOrder"
    mapped, _ = map_product(product(variants={"nodes": [out]}), shop=SHOP)
    assert mapped.availability == "OutOfStock"


def test_a_variant_names_its_image_by_the_image_id_or_url() -> None:
    by_id = variant(1, image={"id": "gid://shopify/ProductImage/9", "url": "https://other"})
    by_url = variant(2, image={"id": None, "url": "https://cdn/b.jpg"})
    mapped, _ = map_product(product(variants={"nodes": [by_id, by_url]}), shop=SHOP)
    assert [v.image_id for v in mapped.variants] == ["501", "502"]


def test_videos_are_not_images_and_images_max_holds() -> None:
    media = {
        "nodes": [
            {"id": "gid://shopify/Video/1"},
            *[
                {"id": f"gid://shopify/MediaImage/{n}", "alt": "", "image": {"url": f"u{n}"}}
                for n in range(1, 6)
            ],
        ]
    }
    mapped, _ = map_product(product(media=media), shop=SHOP, images_max=3)
    assert [i.id for i in mapped.images] == ["1", "2", "3"]


def test_images_come_featured_first_then_by_media_id() -> None:
    media = {
        "nodes": [
            {"id": f"gid://shopify/MediaImage/{n}", "alt": "", "image": {"url": f"u{n}"}}
            for n in (30, 10, 20)
        ]
    }
    mapped, _ = map_product(
        product(media=media, featuredMedia={"id": "gid://shopify/MediaImage/20"}), shop=SHOP
    )
    assert [(i.id, i.position) for i in mapped.images] == [("20", 0), ("10", 1), ("30", 2)]


def test_a_product_without_image_price_or_shop_url_warns() -> None:
    mapped, warnings = map_product(
        product(media={"nodes": []}, variants={"nodes": []}), shop=ShopInfo()
    )
    assert set(warnings) == {"no image", "no variants", "no price"}
    assert mapped.url is None
    assert mapped.currency is None
    assert mapped.availability is None


def test_a_node_without_a_product_gid_is_refused() -> None:
    with pytest.raises(ShopifyPayloadError):
        map_product(product(id="gid://shopify/ProductVariant/1"), shop=SHOP)


# -- documents against the real schema -----------------------------------------------------------


def test_the_adapter_pins_the_simulator_s_schema_version() -> None:
    assert API_VERSION == sim_schema.API_VERSION


@pytest.mark.parametrize("name", sorted(queries.DOCUMENTS))
def test_every_document_is_valid_against_the_admin_schema(name: str) -> None:
    document, _ = queries.DOCUMENTS[name]
    errors = validate(sim_schema.admin_schema(), parse(document))
    assert not errors, [e.message for e in errors]


@pytest.mark.parametrize("name", sorted(queries.DOCUMENTS))
def test_every_document_stays_under_the_single_query_cost(name: str) -> None:
    document, variables = queries.DOCUMENTS[name]
    cost = queries.requested_cost(document, variables)
    assert 0 < cost < queries.MAX_QUERY_COST
    # The bulk query is sent as a string and charged as the mutation's: only its shape matters.
    if name != "BULK_PRODUCTS":
        simulator = _simulator_cost(document, variables)
        assert simulator <= cost, "our estimate must not be below what Shopify asks"


def _simulator_cost(document: str, variables: Mapping[str, Any]) -> int:
    """What the simulator (Shopify's rule, with the schema's types) asks for the document."""
    tree = parse(document)
    operation = next(d for d in tree.definitions if isinstance(d, OperationDefinitionNode))
    fragments = {d.name.value: d for d in tree.definitions if isinstance(d, FragmentDefinitionNode)}
    calculator = CostCalculator(sim_schema.admin_schema(), operation, fragments, dict(variables))
    return calculator.requested()


def test_pages_and_chunks_fill_the_cost_budget() -> None:
    per_query = queries.products_per_query()
    page = queries.requested_cost(
        queries.PRODUCTS_PAGE,
        {"first": per_query, "variants": queries.VARIANTS_FIRST, "media": queries.MEDIA_FIRST},
    )
    one_more = queries.requested_cost(
        queries.PRODUCTS_PAGE,
        {"first": per_query + 1, "variants": queries.VARIANTS_FIRST, "media": queries.MEDIA_FIRST},
    )
    assert page <= queries.COST_TARGET < one_more


# -- webhooks ------------------------------------------------------------------------------------

SECRET = "shpss_test_secret"


def _signed(body: bytes, topic: str = "products/update", **extra: str) -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).digest()
    return {
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
        "X-Shopify-Shop-Domain": "acme.myshopify.com",
        "X-Shopify-Event-Id": "evt-1",
        "X-Shopify-Webhook-Id": "wh-1",
        **extra,
    }


def test_a_good_signature_names_the_product_and_the_event() -> None:
    body = json.dumps({"id": 7001, "title": "x", "updated_at": "2026-11-23T10:00:00Z"}).encode()
    delivery = webhooks.verify(_signed(body), body, SECRET)
    assert delivery.product_ids == ("7001",)
    assert delivery.topic == "products/update"
    assert delivery.delivery_id == "evt-1"  # the event id: a retry dedupes


def test_header_names_are_case_insensitive() -> None:
    body = b'{"id": 5}'
    headers = {k.lower(): v for k, v in _signed(body, "products/delete").items()}
    headers = {k.upper() if "hmac" in k else k: v for k, v in headers.items()}
    assert webhooks.verify(headers, body, SECRET).product_ids == ("5",)


def test_a_bad_missing_or_tampered_signature_is_401() -> None:
    body = b'{"id": 5}'
    headers = _signed(body)
    with pytest.raises(BadWebhook) as bad:
        webhooks.verify({**headers, "X-Shopify-Hmac-Sha256": "bm9wZQ=="}, body, SECRET)
    assert bad.value.status == 401
    missing = {k: v for k, v in headers.items() if k != "X-Shopify-Hmac-Sha256"}
    with pytest.raises(BadWebhook) as absent:
        webhooks.verify(missing, body, SECRET)
    assert absent.value.status == 401
    with pytest.raises(BadWebhook) as tampered:
        webhooks.verify(headers, b'{"id": 6}', SECRET)
    assert tampered.value.status == 401
    with pytest.raises(BadWebhook):
        webhooks.verify(headers, body, "another secret")


def test_inventory_levels_update_is_a_reference_to_resolve() -> None:
    body = json.dumps(
        {"inventory_item_id": 808, "location_id": 1, "available": 0, "updated_at": "x"}
    ).encode()
    delivery = webhooks.verify(_signed(body, "inventory_levels/update"), body, SECRET)
    assert delivery.product_ids == ()
    assert delivery.references == ("808",)


def test_other_topics_and_bad_bodies_are_400() -> None:
    body = b'{"id": 5}'
    with pytest.raises(BadWebhook) as topic:
        webhooks.verify(_signed(body, "orders/create"), body, SECRET)
    assert topic.value.status == 400
    for bad in (b"[1]", b"not json", b'{"title": "no id"}'):
        with pytest.raises(BadWebhook) as raised:
            webhooks.verify(_signed(bad), bad, SECRET)
        assert raised.value.status == 400


def test_the_shop_domain_is_checked_when_configured() -> None:
    body = b'{"id": 5}'
    headers = _signed(body)
    delivery = webhooks.verify(headers, body, SECRET, shop_domain="ACME.myshopify.com")
    assert delivery.product_ids == ("5",)
    with pytest.raises(BadWebhook) as other:
        webhooks.verify(headers, body, SECRET, shop_domain="evil.myshopify.com")
    assert other.value.status == 401


# -- the throttle model ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_the_bucket_waits_for_the_points_a_request_asks() -> None:
    clock = Clock()
    bucket = CostBucket(clock=clock, sleep=clock.sleep)
    await bucket.acquire(900)  # nothing known yet: no wait
    bucket.release(900)
    assert clock.slept == []
    bucket.observe(ThrottleStatus(maximum=1000, available=100, restore_rate=50))
    await bucket.acquire(600)  # needs 500 more points: 10 s at 50/s
    assert clock.slept == [pytest.approx(10.0)]
    assert bucket.level() == pytest.approx(0.0)
    bucket.release(600)


async def test_reservations_count_until_answered_and_the_level_is_capped() -> None:
    clock = Clock()
    bucket = CostBucket(clock=clock, sleep=clock.sleep)
    bucket.observe(ThrottleStatus(maximum=1000, available=1000, restore_rate=100))
    await bucket.acquire(700)
    await bucket.acquire(300)
    assert clock.slept == []
    await bucket.acquire(200)  # 0 left while the first two are unanswered: 2 s
    assert sum(clock.slept) == pytest.approx(2.0)
    bucket.release(700)  # answered: its report says the truth, the others still count
    bucket.observe(ThrottleStatus(maximum=1000, available=800, restore_rate=100))
    assert bucket.level() == pytest.approx(300.0)
    bucket.release(300)
    bucket.release(200)
    clock.now += 3600
    assert bucket.level() == 1000  # never above the maximum


def test_the_wait_after_throttled_follows_the_restore_rate() -> None:
    bucket = CostBucket(clock=Clock())
    status = ThrottleStatus(maximum=2000, available=52, restore_rate=100)
    assert bucket.throttled_wait(752, status) == pytest.approx(7.0)


def test_throttle_status_is_read_from_extensions() -> None:
    extensions = {
        "cost": {
            "requestedQueryCost": 12,
            "throttleStatus": {
                "maximumAvailable": 1000.0,
                "currentlyAvailable": 988,
                "restoreRate": 50.0,
            },
        }
    }
    assert ThrottleStatus.parse(extensions) == ThrottleStatus(1000.0, 988.0, 50.0)
    assert ThrottleStatus.parse({"cost": {}}) is None
    assert ThrottleStatus.parse(None) is None


# -- the bulk result ------------------------------------------------------------------------------


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj).encode()


def test_children_attach_to_their_product_whatever_the_order(tmp_path: Any) -> None:
    p1, p2 = "gid://shopify/Product/1", "gid://shopify/Product/2"
    lines: list[dict[str, Any]] = [
        {"id": "gid://shopify/ProductVariant/12", "position": 2, "__parentId": p1},
        {"id": "gid://shopify/MediaImage/21", "alt": "a", "__parentId": p2},
        {"id": p2, "title": "Two"},
        {"id": "gid://shopify/ProductVariant/11", "position": 1, "__parentId": p1},
        {"id": p1, "title": "One"},
        {"__parentId": p1},  # a video: the query selected nothing of it
        {"id": "gid://shopify/ProductVariant/22", "position": 1, "__parentId": p2},
    ]
    with BulkSpool(str(tmp_path)) as spool:
        for line in lines:
            spool.add(_line(line))
        spool.finish()
        products = list(spool.products())
        assert [p["id"] for p in products] == [p2, p1]
        assert [v["id"][-2:] for v in products[1]["variants"]["nodes"]] == ["11", "12"]
        assert [m["id"][-2:] for m in products[0]["media"]["nodes"]] == ["21"]
        assert [p["id"] for p in spool.products(skip=1)] == [p1]


def test_a_truncated_or_damaged_result_is_refused(tmp_path: Any) -> None:
    with BulkSpool(str(tmp_path)) as spool:
        spool.add(_line({"id": "gid://shopify/Product/1"}))
        spool.add(b'{"id": "gid://shopify/Prod', ended=False)
        with pytest.raises(BulkResultIncomplete):
            spool.finish()
    with BulkSpool(str(tmp_path)) as spool, pytest.raises(BulkResultIncomplete):
        spool.add(b'{"id": "gid://shopify/Prod')
