"""Fuzzing what the stores send (issue 16): webhook deliveries, bodies and headers, through the
real receiver over HTTP, and product payloads into each platform's mapper.

Why these properties:

- **Webhooks.** A webhook is the one input anybody on the network can send. Whatever its body
  and headers (random, missing, repeated, in the wrong encoding, a valid signature over garbage,
  larger than the limit), the receiver answers 200, 400, 401, 413 or 503 and never 500; the
  adapter raises nothing but `BadWebhook`; and a delivery without a correct signature never
  leaves a hint (the only thing the receiver records) in the state store. A well-formed signed
  delivery, on the other hand, is recorded: otherwise the properties would hold of a receiver
  that drops everything.
- **Mappers.** Payloads shaped like the real ones (the wc/v3 and Admin GraphQL examples of the
  mapping tests), mutated one field at a time (wrong types, nulls, huge and odd strings,
  negative, NaN and infinite prices, missing keys), map to a canonical `Product` or raise the
  platform's own payload error, never `KeyError`, `TypeError`, `AttributeError` or an
  `OverflowError` from a date at the edge of the calendar.

Examples are bounded (`max_examples`) so that the fuzz files together run in about a minute.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from bridge_agent.config import Secret
from bridge_agent.config.settings import StoreSettings
from bridge_agent.errors import BadWebhook, PlatformUnavailable
from bridge_agent.listener import ListenerLimits, listening
from bridge_agent.metrics import Metrics
from bridge_agent.model import Product
from bridge_agent.platforms.base import WebhookDelivery
from bridge_agent.platforms.jsondir import JsonDir
from bridge_agent.platforms.shopify import mapping as shopify_mapping
from bridge_agent.platforms.shopify import webhooks as shopify_webhooks
from bridge_agent.platforms.shopify.adapter import Shopify
from bridge_agent.platforms.woocommerce import mapping as woo_mapping
from bridge_agent.platforms.woocommerce import webhooks as woo_webhooks
from bridge_agent.platforms.woocommerce.adapter import WooCommerce
from bridge_agent.sources.webhooks import WebhookRoute, make_webhook_app
from bridge_agent.store import StateStore
from tests.test_fuzz import hostile_json, json_values
from tests.test_shopify_mapping import product as shopify_product
from tests.test_shopify_mapping import variant as shopify_variant
from tests.test_woocommerce_mapping import SIMPLE, VARIABLE, VARIATIONS

WEB = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
PURE = settings(WEB, max_examples=300)


SECRET = "fuzz-webhook-secret-9Q"
OTHER_SECRET = "not-the-webhook-secret"
SHOP_DOMAIN = "fuzz-shop.myshopify.com"
LIMIT = 16 * 1024  # the receiver's max_body_bytes here: small, so oversize bodies stay cheap
CLOSED = "http://127.0.0.1:9"  # nothing listens: a store the receiver must not need


def b64_hmac(body: bytes, secret: str) -> str:
    return woo_webhooks.sign(body, secret)  # the same scheme for all three platforms


# -- the receiver, over HTTP on 127.0.0.1 ---------------------------------------------------------


@dataclass
class Spy:
    """Wraps a real adapter's `verify_webhook` to catch anything it raises outside BadWebhook
    (the receiver answers those 400 too, so only the adapter itself can tell)."""

    platform: Any
    strays: list[str] = field(default_factory=list)

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        try:
            delivery: WebhookDelivery = self.platform.verify_webhook(headers, body)
        except BadWebhook:
            raise
        except Exception as exc:
            self.strays.append(f"{type(exc).__name__}: {exc}"[:300])
            raise
        return delivery

    async def resolve_webhook(self, delivery: WebhookDelivery) -> tuple[str, ...]:
        ids: tuple[str, ...] = await self.platform.resolve_webhook(delivery)
        return ids


@dataclass
class Receiver:
    url: str
    state: StateStore
    spies: dict[str, Spy]
    http: httpx.AsyncClient


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[Receiver]:
    (tmp_path / "catalog").mkdir()
    async with (
        StateStore.open(tmp_path / "state") as state,
        httpx.AsyncClient(timeout=2.0) as store_http,
    ):
        woo = WooCommerce.from_settings(
            StoreSettings(
                id="woo", platform="woocommerce", url=CLOSED,
                secrets={"consumer_key": Secret("ck_x"), "consumer_secret": Secret("cs_x"),
                         "webhook_secret": Secret(SECRET)},
            ),
            store_http,
        )  # fmt: skip
        shop = Shopify.from_settings(
            StoreSettings(
                id="shop", platform="shopify", url=CLOSED,
                secrets={"access_token": Secret("shpat_x"), "webhook_secret": Secret(SECRET)},
                options={"shop_domain": SHOP_DOMAIN},
            ),
            store_http,
        )  # fmt: skip
        spies = {
            "woo": Spy(woo),
            "dir": Spy(JsonDir("dir", tmp_path / "catalog", webhook_secret=SECRET)),
            "shop": Spy(shop),
        }
        names = {"woo": "woocommerce", "dir": "jsondir", "shop": "shopify"}
        routes = {s: WebhookRoute(names[s], spy, lambda: None) for s, spy in spies.items()}  # type: ignore[arg-type]
        app = make_webhook_app(routes, state, Metrics(), max_body_bytes=LIMIT)
        limits = ListenerLimits(header_timeout=5, body_timeout=5, idle_timeout=30)
        async with (
            listening(app, "127.0.0.1", 0, name="webhooks", limits=limits) as port,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http,
        ):
            yield Receiver(f"http://127.0.0.1:{port}", state, spies, http)


# What each platform's delivery looks like: its signature header, topic header and topics.
@dataclass(frozen=True)
class Kind:
    store: str
    platform: str
    signature: str
    topic_header: str | None
    topics: tuple[str, ...]
    extra_headers: tuple[str, ...]


WOO = Kind(
    "woo", "woocommerce", "X-WC-Webhook-Signature", "X-WC-Webhook-Topic",
    woo_webhooks.PRODUCT_TOPICS,
    ("X-WC-Webhook-Resource", "X-WC-Webhook-Event", "X-WC-Webhook-ID",
     "X-WC-Webhook-Delivery-ID", "X-WC-Webhook-Source"),
)  # fmt: skip
DIR = Kind("dir", "jsondir", "X-Signature", None, ("product.updated",), ("X-Topic",))
SHOP = Kind(
    "shop", "shopify", "X-Shopify-Hmac-Sha256", "X-Shopify-Topic",
    tuple(shopify_webhooks.TOPICS),
    ("X-Shopify-Shop-Domain", "X-Shopify-Event-Id", "X-Shopify-Webhook-Id",
     "X-Shopify-API-Version", "X-Shopify-Triggered-At"),
)  # fmt: skip
KINDS = {k.store: k for k in (WOO, DIR, SHOP)}


@dataclass(frozen=True)
class Delivery:
    """One request to send, and what the test knows about it."""

    store: str
    body: bytes
    headers: list[tuple[str, bytes]]
    authentic: bool  # some header carries the right signature over these exact bytes
    expected: str | None  # a product id a well-formed, cleanly signed delivery must record

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis prints it
        body = self.body if len(self.body) <= 200 else self.body[:200] + b"..."
        printer.text(
            f"Delivery({self.store!r}, {body!r}, {self.headers!r}, {self.authentic!r},"
            f" {self.expected!r})  # body_bytes={len(self.body)}"
        )


def good_body(kind: Kind, product_id: int, topic: str) -> bytes:
    if kind is SHOP and topic == shopify_webhooks.INVENTORY_TOPIC:
        return json.dumps({"inventory_item_id": product_id, "available": 3}).encode()
    if kind is DIR:
        return json.dumps({"topic": topic, "id": str(product_id)}).encode()
    return json.dumps({"id": product_id, "name": "Shirt", "type": "simple"}).encode()


header_text = st.one_of(
    st.text(max_size=40).map(lambda t: t.encode("utf-8")),
    st.binary(max_size=40),
    st.sampled_from([b"", b" ", b"product.updated", b"\xff\xfe", "é".encode("latin-1")]),
).map(lambda v: bytes(b for b in v if (b >= 0x20 and b != 0x7F) or b == 0x09).strip(b" \t"))
# (what an HTTP/1.1 client can send at all: no control characters, no surrounding blanks)


@st.composite
def deliveries(draw: st.DrawFn) -> Delivery:
    kind = KINDS[draw(st.sampled_from(sorted(KINDS)))]
    shape = draw(
        st.sampled_from(["good", "good", "good", "hostile", "oversize", "encoding", "ping"])
    )
    topic = draw(st.sampled_from(kind.topics))
    product_id = draw(st.integers(min_value=1, max_value=2**63 - 1))
    if shape == "good":
        body = good_body(kind, product_id, topic)
    elif shape == "hostile":
        body = draw(hostile_json())
    elif shape == "oversize":
        body = good_body(kind, product_id, topic)[:-1] + b', "pad": "' + b"x" * LIMIT + b'"}'
    elif shape == "encoding":
        text = good_body(kind, product_id, topic).decode().replace("Shirt", "Chemise ü ☃")
        codec = draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "utf-8-sig", "cp1252"]))
        body = text.encode(codec, errors="replace")
    else:
        body = b"webhook_id=" + str(product_id).encode()

    signing = draw(
        st.sampled_from(["right", "right", "none", "wrong-secret", "garbage", "dup", "case"])
    )
    name = kind.signature
    headers: list[tuple[str, bytes]] = []
    right = b64_hmac(body, SECRET).encode()
    authentic = False
    if signing == "right":
        headers.append((name, right))
        authentic = True
    elif signing == "wrong-secret":
        headers.append((name, b64_hmac(body, OTHER_SECRET).encode()))
    elif signing == "garbage":
        headers.append((name, draw(header_text)))
    elif signing == "dup":  # a right and a wrong one: whichever the adapter reads decides
        pair = [(name, right), (name, base64.b64encode(draw(st.binary(min_size=32, max_size=32))))]
        headers.extend(draw(st.permutations(pair)))
        authentic = True
    elif signing == "case":
        headers.append((name.lower() if draw(st.booleans()) else name.upper(), right))
        authentic = True

    if kind.topic_header is not None:
        topics = draw(st.sampled_from(["right", "right", "none", "random", "dup"]))
        if topics in ("right", "dup"):
            headers.append((kind.topic_header, topic.encode()))
        if topics == "random":
            headers.append((kind.topic_header, draw(header_text)))
        if topics == "dup":
            headers.append((kind.topic_header, draw(header_text)))
    else:
        topics = "right"
    if kind is SHOP and draw(st.integers(0, 4)) > 0:
        headers.append(("X-Shopify-Shop-Domain", SHOP_DOMAIN.encode()))
        domain = True
    else:
        domain = False
    extras = draw(st.lists(st.sampled_from(kind.extra_headers), max_size=3))
    headers.extend((extra, draw(header_text)) for extra in extras)

    # A clean good delivery must be recorded. Extra headers drawn above may repeat the shop
    # domain (the last one read decides): then it is not clean.
    domains = sum(1 for h, _ in headers if h.lower() == "x-shopify-shop-domain")
    clean = (
        shape == "good"
        and well_formed(headers)
        and signing in ("right", "case")
        and topics == "right"
        and (kind is not SHOP or (domain and domains == 1))
        and not (kind is SHOP and topic == shopify_webhooks.INVENTORY_TOPIC)
    )
    return Delivery(kind.store, body, headers, authentic, str(product_id) if clean else None)


def well_formed(headers: list[tuple[str, bytes]]) -> bool:
    """Whether HTTP/1.1 lets these header values through: aiohttp answers 400 to a control
    character in one before any handler runs."""
    return all(all((b >= 0x20 and b != 0x7F) or b == 0x09 for b in v) for _, v in headers)


async def hint_ids(state: StateStore, store: str) -> set[str]:
    return {h.id for h in await state.due_hints(store, limit=10_000)}


@WEB
@given(delivery=deliveries())
@example(  # a valid signature over a body that is not JSON
    Delivery(
        "shop",
        b"\xff{",
        [
            ("X-Shopify-Hmac-Sha256", b64_hmac(b"\xff{", SECRET).encode()),
            ("X-Shopify-Topic", b"products/update"),
            ("X-Shopify-Shop-Domain", SHOP_DOMAIN.encode()),
        ],
        True,
        None,
    )
)
@example(  # a signature header that is not UTF-8 (jsondir raised UnicodeEncodeError)
    Delivery("dir", b'{"id": "1"}', [("X-Signature", b"\xff\xfe")], False, None)
)  # fmt: skip
async def test_no_webhook_is_recorded_without_its_signature(
    receiver: Receiver, delivery: Delivery
) -> None:
    kind = KINDS[delivery.store]
    receiver.spies[delivery.store].strays.clear()
    before = await hint_ids(receiver.state, delivery.store)
    count_before = await receiver.state.hint_count()
    response = await receiver.http.post(
        f"/webhooks/{kind.platform}/{delivery.store}",
        content=delivery.body,
        headers=[(name.encode(), value) for name, value in delivery.headers],
    )
    after = await hint_ids(receiver.state, delivery.store)
    event(f"{delivery.store} {response.status_code} recorded={bool(after - before)}")
    assert response.status_code in (200, 400, 401, 413, 503), response.text
    assert receiver.spies[delivery.store].strays == []  # the adapter raised only BadWebhook
    if not delivery.authentic:
        assert after == before and await receiver.state.hint_count() == count_before
        ping = kind is WOO and delivery.body.startswith(b"webhook_id=")
        assert response.status_code in ((200, 401, 413) if ping else (400, 401, 413))
    if len(delivery.body) > LIMIT:
        assert after == before
        assert response.status_code == 413 or not well_formed(delivery.headers)
    if delivery.expected is not None:
        assert response.status_code == 200, response.text
        assert delivery.expected in after
    assert all(i.isascii() and i.isdigit() for i in after - before)


@pytest.mark.parametrize("store", sorted(KINDS))
async def test_a_clean_signed_delivery_is_recorded(receiver: Receiver, store: str) -> None:
    """The other side of the property above: the receiver does not just refuse everything."""
    kind = KINDS[store]
    body = good_body(kind, 4242, kind.topics[0])
    headers = [(kind.signature, b64_hmac(body, SECRET).encode())]
    if kind.topic_header is not None:
        headers.append((kind.topic_header, kind.topics[0].encode()))
    if kind is SHOP:
        headers.append(("X-Shopify-Shop-Domain", SHOP_DOMAIN.encode()))
    response = await receiver.http.post(
        f"/webhooks/{kind.platform}/{store}",
        content=body,
        headers=[(name.encode(), value) for name, value in headers],
    )
    assert response.status_code == 200, response.text
    assert await hint_ids(receiver.state, store) == {"4242"}


@PURE
@given(
    body=hostile_json(),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "X-Shopify-Topic",
                "x-shopify-topic",
                "X-Shopify-Shop-Domain",
                "X-Shopify-Event-Id",
                "X-Shopify-Webhook-Id",
            ]
        ),
        st.one_of(st.sampled_from(list(shopify_webhooks.TOPICS)), st.text(max_size=30)),
    ),
    signed=st.sampled_from(["right", "none", "wrong"]),
    domain=st.sampled_from([None, SHOP_DOMAIN]),
)
def test_shopify_verify_answers_a_delivery_or_bad_webhook(
    body: bytes, headers: dict[str, str], signed: str, domain: str | None
) -> None:
    if signed != "none":
        headers["X-Shopify-Hmac-Sha256"] = b64_hmac(body, SECRET if signed == "right" else "x")
    try:
        delivery = shopify_webhooks.verify(headers, body, SECRET, shop_domain=domain)
    except BadWebhook as exc:
        refused: BadWebhook | None = exc
    else:
        refused = None
    if refused is not None:
        assert refused.status in (400, 401)
        assert signed == "right" or refused.status == 401  # nothing unsigned is parsed
        assert SECRET not in str(refused)
        return
    assert signed == "right"
    names = delivery.product_ids + delivery.references
    assert len(names) == 1 and names[0].isascii() and names[0].isdigit()
    assert 0 < int(names[0]) < 2**63


# -- store payloads into each mapper --------------------------------------------------------------

# Hostile values a store (or a plugin in front of it) could put anywhere in a payload.
odd_values = st.one_of(
    json_values,
    st.sampled_from(
        [None, "", " ", "NaN", "-1", "-0.01", "1e309", "Infinity", "0000-00-00 00:00:00",
         "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "²", "٣", "9" * 5000,
         "x" * 70_000, "\ud800", "\u202e", [], {}, [1, 2], {"amount": "NaN"}, True, 0, -5,
         2**64, float("nan"), float("inf"), -1.5, "gid://shopify/Product/0",
         "gid://shopify/Product/99999999999999999999"]
    ),
)  # fmt: skip


def mutate(doc: Any, path: list[Any], value: Any, op: str) -> Any:
    """`doc` with the value at `path` replaced by `value` (or deleted), recursively copied."""
    doc = copy.deepcopy(doc)
    parent, key = None, None
    node = doc
    for step in path:
        inside = isinstance(node, list) and isinstance(step, int) and step < len(node)
        if inside or (isinstance(node, dict) and step in node):
            parent, key, node = node, step, node[step]
        else:
            break
    if parent is None:
        return value if op == "set" else doc
    if op == "delete" and isinstance(parent, dict):
        del parent[key]
    else:
        parent[key] = value
    return doc


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[list[Any]]:
    out: list[list[Any]] = [list(prefix)] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.extend(paths(v, (*prefix, k)))
    elif isinstance(doc, list):
        for n, v in enumerate(doc):
            out.extend(paths(v, (*prefix, n)))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: Any) -> Any:
    doc = base
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        candidates = paths(doc)
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        doc = mutate(doc, path, draw(odd_values), draw(st.sampled_from(["set", "set", "delete"])))
    return doc


def assert_canonical(product: Product) -> None:
    """What every mapped product must be: it survives the canonical round trip."""
    assert product.id
    again = Product.from_dict(product.to_dict())
    assert again == product


@PURE
@given(
    product=st.one_of(mutated(SIMPLE), mutated(VARIABLE), json_values),
    variations=st.one_of(st.just(VARIATIONS), mutated(VARIATIONS)),
)
@example(product={**SIMPLE, "variations": 5}, variations=[])
@example(product={**SIMPLE, "id": "²"}, variations=[])
@example(product={**SIMPLE, "date_modified_gmt": "0001-01-01T00:00:00+14:00"}, variations=[])
@example(product=VARIABLE, variations=[*VARIATIONS, 7])
def test_woocommerce_payloads_map_to_a_product_or_a_payload_error(
    product: Any, variations: Any
) -> None:
    try:
        mapped, warnings = woo_mapping.map_product(product, variations)
    except woo_mapping.WooPayloadError:
        assert not isinstance(product, dict) or woo_mapping._id(product.get("id")) is None
        return
    assert_canonical(mapped)
    assert mapped.id == str(int(mapped.id)) and int(mapped.id) > 0
    assert all(warnings)
    for price in (mapped.price, mapped.regular_price, mapped.sale_price):
        assert price is None or price.strip()


@PURE
@given(
    node=st.one_of(
        mutated(shopify_product()),
        mutated(shopify_product(variants={"nodes": [shopify_variant(1, compareAtPrice="25")]})),
        json_values.filter(lambda v: isinstance(v, dict)),
    )
)
@example(node=shopify_product(tags=5))
@example(node=shopify_product(media={"nodes": True}))
@example(node=shopify_product(variants={"nodes": [shopify_variant(1, selectedOptions=3)]}))
@example(node=shopify_product(updatedAt="0001-01-01T00:00:00+05:00"))
def test_shopify_nodes_map_to_a_product_or_a_payload_error(node: dict[str, Any]) -> None:
    try:
        mapped, warnings = shopify_mapping.map_product(node, shop=shopify_mapping.ShopInfo("EUR"))
    except shopify_mapping.ShopifyPayloadError:
        assert shopify_mapping.gid_number(node.get("id"), "Product") is None
        return
    assert_canonical(mapped)
    assert mapped.id.isdigit() and all(isinstance(w, str) for w in warnings)
    for price in (mapped.price, mapped.regular_price, mapped.sale_price):
        assert price is None or Decimal(price).is_finite()


CANONICAL = woo_mapping.map_product(VARIABLE, VARIATIONS)[0].to_dict()  # a jsondir file's shape


@settings(WEB, max_examples=60)
@given(doc=st.one_of(mutated(CANONICAL), hostile_json()))
async def test_jsondir_files_read_as_a_product_or_a_platform_error(
    tmp_path_factory: pytest.TempPathFactory, doc: Any
) -> None:
    folder = tmp_path_factory.mktemp("catalog")
    raw = doc if isinstance(doc, bytes) else json.dumps(doc, default=str).encode()
    (folder / "7.json").write_bytes(raw)
    adapter = JsonDir("dir", folder)
    try:
        product = await adapter.fetch_product("7")
    except PlatformUnavailable as exc:
        message: str | None = str(exc)
    else:
        message = None
    if message is not None:
        assert "7.json" in message and "Traceback" not in message
        return
    assert product is not None
    assert_canonical(product)
