"""The Shopify simulator against reference/platforms.md section 2 (checklist 2.11).

Real HTTP on 127.0.0.1 with httpx, as the adapter talks to it; webhooks land on a loopback
aiohttp receiver. The schema is built once per process (`admin_schema` is cached), so the suite
stays in seconds. Nothing here imports the agent.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from graphql import parse, validate

from bridge_agent.simulators.shopify import (
    API_VERSION,
    ShopifySimulator,
    admin_schema,
    serve,
)
from bridge_agent.testing.waiting import until

ENDPOINT = f"/admin/api/{API_VERSION}/graphql.json"

PRODUCT_FIELDS = """
  id title handle status updatedAt descriptionHtml vendor productType tags
  seo { title description }
  variants(first: 10) { nodes { id sku barcode price compareAtPrice inventoryQuantity
    inventoryPolicy selectedOptions { name value } inventoryItem { id tracked } } }
  media(first: 5) { nodes { __typename ... on MediaImage { id alt
    image { url altText width height } } } }
"""


@dataclass
class Shop:
    sim: ShopifySimulator
    url: str
    client: httpx.AsyncClient

    async def gql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.client.post(
            ENDPOINT, json={"query": query, "variables": variables or {}}
        )
        assert response.status_code == 200, response.text
        assert response.headers["X-Shopify-API-Version"] == API_VERSION
        answer: dict[str, Any] = response.json()
        assert "cost" in answer.get("extensions", {}), answer
        return answer

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = await self.gql(query, variables)
        assert "errors" not in answer, answer["errors"]
        data: dict[str, Any] = answer["data"]
        return data

    async def control(self, method: str, path: str, body: Any = None) -> Any:
        response = await self.client.request(method, path, json=body)
        assert response.status_code < 300, response.text
        return response.json()


@pytest.fixture
async def make_shop() -> AsyncIterator[Callable[..., Awaitable[Shop]]]:
    tasks: list[asyncio.Task[None]] = []
    clients: list[httpx.AsyncClient] = []

    async def build(products: int = 30, seed: int = 5) -> Shop:
        sim = ShopifySimulator.generate(products=products, seed=seed)
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        tasks.append(asyncio.create_task(serve(sim, "127.0.0.1", 0, ready=ready.set_result)))
        port = await asyncio.wait_for(ready, 5)
        url = f"http://127.0.0.1:{port}"
        client = httpx.AsyncClient(
            base_url=url, headers={"X-Shopify-Access-Token": sim.access_token}, timeout=10
        )
        clients.append(client)
        return Shop(sim, url, client)

    yield build
    for client in clients:
        await client.aclose()
    for task in tasks:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.fixture
async def shop(make_shop: Callable[..., Awaitable[Shop]]) -> Shop:
    return await make_shop()


@dataclass
class Receiver:
    """A webhook endpoint on loopback: records raw deliveries, answers the next statuses."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def topic(self, topic: str) -> list[tuple[dict[str, str], bytes]]:
        return [r for r in self.requests if r[0].get("X-Shopify-Topic") == topic]


@pytest.fixture
async def receiver(aiohttp_server: Any) -> Receiver:
    rec = Receiver()

    async def hook(request: web.Request) -> web.Response:
        rec.requests.append((dict(request.headers), await request.read()))
        return web.Response(status=rec.statuses.pop(0) if rec.statuses else 200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app)
    rec.url = f"http://127.0.0.1:{server.port}/hook"
    return rec


async def subscribe(shop: Shop, topic: str, uri: str) -> dict[str, Any]:
    data = await shop.data(
        """mutation($topic: WebhookSubscriptionTopic!, $sub: WebhookSubscriptionInput!) {
             webhookSubscriptionCreate(topic: $topic, webhookSubscription: $sub) {
               webhookSubscription { id topic uri format }
               userErrors { field message } } }""",
        {"topic": topic, "sub": {"uri": uri, "format": "JSON"}},
    )
    payload: dict[str, Any] = data["webhookSubscriptionCreate"]
    return payload


def signed(headers: dict[str, str], body: bytes, secret: str) -> bool:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(digest).decode(), headers["X-Shopify-Hmac-Sha256"])


def numeric(gid: str) -> int:
    return int(gid.rsplit("/", 1)[1])


# -- schema, errors, authentication ----------------------------------------------------------------


def test_schema_is_the_real_one_and_built_once() -> None:
    schema = admin_schema()
    assert admin_schema() is schema
    assert API_VERSION == "2026-07"
    assert "UNLISTED" in schema.type_map["ProductStatus"].values  # type: ignore[attr-defined]
    assert validate(schema, parse("{ products(first: 1) { nodes { id } } }")) == []


async def test_a_document_the_real_api_refuses_is_refused_in_shopify_shape(shop: Shop) -> None:
    answer = await shop.gql("{ products(first: 1) { nodes { id bogus } } }")
    assert "data" not in answer
    (error,) = answer["errors"]
    assert "bogus" in error["message"]
    assert error["locations"] == [{"line": 1, "column": 35}]
    assert error["extensions"]["code"] == "undefinedField"
    # groupObjects is a required argument in 2026-07.
    answer = await shop.gql("{ product { id } }")
    assert answer["errors"][0]["extensions"]["code"] == "missingRequiredArguments"
    answer = await shop.gql("{ products(first: 1, sortKey: NOPE) { nodes { id } } }")
    assert answer["errors"][0]["extensions"]["code"] == "argumentLiteralsIncompatible"
    answer = await shop.gql("{ products(first: 1) { nodes { id } }")
    assert answer["errors"][0]["extensions"]["code"] == "parseError"


async def test_access_token_is_required(shop: Shop) -> None:
    async with httpx.AsyncClient(base_url=shop.url) as anonymous:
        response = await anonymous.post(ENDPOINT, json={"query": "{ shop { name } }"})
        assert response.status_code == 401
        assert "Invalid API key or access token" in response.json()["errors"]
        wrong = await anonymous.post(
            ENDPOINT,
            json={"query": "{ shop { name } }"},
            headers={"X-Shopify-Access-Token": "shpat_wrong"},
        )
        assert wrong.status_code == 401


async def test_shop_and_info(shop: Shop) -> None:
    data = await shop.data("{ shop { name currencyCode ianaTimezone myshopifyDomain } }")
    info = await shop.control("GET", "/__sim/info")
    assert data["shop"]["myshopifyDomain"] == info["shop_domain"]
    assert data["shop"]["currencyCode"] == "EUR"
    assert info["shop_url"] == shop.url
    assert info["api_version"] == API_VERSION
    assert info["access_token"].startswith("shpat_")
    assert info["bucket"] == {"maximumAvailable": 2000.0, "restoreRate": 100.0}


# -- listing ---------------------------------------------------------------------------------------


async def test_paging_covers_the_catalog_exactly_once(shop: Shop) -> None:
    truth = {p["id"]: p for p in shop.sim.truth()}
    seen: list[str] = []
    after = None
    while True:
        data = await shop.data(
            """query($after: String) { products(first: 7, after: $after, sortKey: UPDATED_AT) {
                 pageInfo { hasNextPage endCursor } edges { cursor node { id updatedAt } } } }""",
            {"after": after},
        )
        page = data["products"]
        seen += [e["node"]["id"] for e in page["edges"]]
        assert [e["cursor"] for e in page["edges"]][-1] == page["pageInfo"]["endCursor"]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert sorted(seen) == sorted(truth)
    assert len(seen) == len(set(seen))
    stamps = [truth[i]["updatedAt"] for i in seen]
    assert stamps == sorted(stamps)
    # reverse, and last/before, walk the same set backwards.
    data = await shop.data(
        "{ products(first: 250, reverse: true) { nodes { id } pageInfo { hasNextPage } } }"
    )
    ids = [n["id"] for n in data["products"]["nodes"]]
    assert ids == sorted(truth, key=numeric, reverse=True)
    first = await shop.data("{ products(first: 10) { pageInfo { endCursor } nodes { id } } }")
    cursor = first["products"]["pageInfo"]["endCursor"]
    before = await shop.data(
        "query($c: String) { products(last: 3, before: $c) { nodes { id } "
        "pageInfo { hasPreviousPage } } }",
        {"c": cursor},
    )
    assert [n["id"] for n in before["products"]["nodes"]] == [
        n["id"] for n in first["products"]["nodes"][6:9]
    ]
    assert before["products"]["pageInfo"]["hasPreviousPage"] is True
    other_sort = await shop.gql(
        "query($c: String) { products(first: 3, after: $c, sortKey: TITLE) { nodes { id } } }",
        {"c": cursor},
    )
    assert "Invalid cursor" in other_sort["errors"][0]["message"]


async def test_first_or_last_is_required_and_bounded(shop: Shop) -> None:
    answer = await shop.gql("{ products { nodes { id } } }")
    assert "you must provide one of first or last" in answer["errors"][0]["message"]
    answer = await shop.gql("{ products(first: 251) { nodes { id } } }")
    assert "between 0 and 250" in answer["errors"][0]["message"]


async def test_search_syntax(shop: Shop) -> None:
    truth = shop.sim.truth()

    async def ids(query: str) -> set[str]:
        data = await shop.data(
            "query($q: String) { products(first: 250, query: $q) { nodes { id } } }", {"q": query}
        )
        return {n["id"] for n in data["products"]["nodes"]}

    stamps = sorted(p["updatedAt"] for p in truth)
    middle = stamps[len(stamps) // 2]
    assert await ids(f"updated_at:>'{middle}'") == {
        p["id"] for p in truth if p["updatedAt"] > middle
    }
    assert await ids(f"updated_at:>='{middle}'") == {
        p["id"] for p in truth if p["updatedAt"] >= middle
    }
    day = middle[:10]
    assert await ids(f"updated_at:>={day}") == {p["id"] for p in truth if p["updatedAt"] >= day}
    assert await ids("status:active") == {p["id"] for p in truth if p["status"] == "ACTIVE"}
    assert await ids("status:draft,archived") == {
        p["id"] for p in truth if p["status"] in ("DRAFT", "ARCHIVED")
    }
    sku = next(v["sku"] for p in truth for v in p["variants"] if v["sku"])
    assert await ids(f"sku:{sku}") == {
        p["id"] for p in truth if any(v["sku"] == sku for v in p["variants"])
    }
    tagged = {p["id"] for p in truth if "sale" in p["tags"]}
    assert await ids("tag:sale") == tagged
    pivot = numeric(truth[10]["id"])
    assert await ids(f"id:>{pivot}") == {p["id"] for p in truth if numeric(p["id"]) > pivot}
    both = {p["id"] for p in truth if p["status"] == "ACTIVE" and p["updatedAt"] > middle}
    assert await ids(f"status:active AND updated_at:>'{middle}'") == both
    assert await ids(f"status:active updated_at:>'{middle}'") == both
    assert await ids("-status:active") == {p["id"] for p in truth if p["status"] != "ACTIVE"}
    variants = await shop.data(
        "query($q: String) { productVariants(first: 5, query: $q) {"
        " nodes { sku product { id } } } }",
        {"q": f"sku:{sku}"},
    )
    assert {n["sku"] for n in variants["productVariants"]["nodes"]} == {sku}


async def test_product_by_id_nodes_and_inventory_item(shop: Shop) -> None:
    truth = shop.sim.truth()
    victim, other = truth[0], truth[1]
    query = "query($id: ID!) { product(id: $id) { id title } }"
    assert (await shop.data(query, {"id": victim["id"]}))["product"]["title"] == victim["title"]
    await shop.control("DELETE", f"/__sim/products/{numeric(victim['id'])}")
    answer = await shop.gql(query, {"id": victim["id"]})
    assert answer == {**answer, "data": {"product": None}}
    assert "errors" not in answer
    nodes = await shop.data(
        "query($ids: [ID!]!) { nodes(ids: $ids) { __typename id ... on Product { title } } }",
        {"ids": [victim["id"], other["id"], other["variants"][0]["id"]]},
    )
    assert nodes["nodes"] == [
        None,
        {"__typename": "Product", "id": other["id"], "title": other["title"]},
        {"__typename": "ProductVariant", "id": other["variants"][0]["id"]},
    ]
    item = other["variants"][0]["inventoryItem"]["id"]
    resolved = await shop.data(
        "query($id: ID!) { inventoryItem(id: $id) { id tracked variant { id product { id } } } }",
        {"id": item},
    )
    assert resolved["inventoryItem"]["variant"]["product"]["id"] == other["id"]
    bad = await shop.gql(query, {"id": "not-a-gid"})
    assert "Invalid global id" in bad["errors"][0]["message"]


async def test_nested_fields_match_the_truth(shop: Shop) -> None:
    truth = {p["id"]: p for p in shop.sim.truth()}
    data = await shop.data(
        "{ products(first: 8) { nodes { "
        + PRODUCT_FIELDS
        + """
            options { name values } featuredMedia { id }
            metafield(namespace: "custom", key: "material") { value type }
            metafields(first: 5) { nodes { namespace key value } } } } }"""
    )
    for node in data["products"]["nodes"]:
        want = truth[node["id"]]
        for key in ("title", "handle", "status", "updatedAt", "descriptionHtml", "seo", "tags"):
            assert node[key] == want[key]
        assert node["variants"]["nodes"] == [
            {k: v[k] for k in node["variants"]["nodes"][0]} for v in want["variants"]
        ]
        media = node["media"]["nodes"]
        assert [m["__typename"] for m in media] == ["MediaImage"] * len(want["media"])
        assert [(m["id"], m["alt"], m["image"]) for m in media] == [
            (m["id"], m["alt"], m["image"]) for m in want["media"]
        ]
        assert node["featuredMedia"] == ({"id": media[0]["id"]} if media else None)
        assert node["options"] == want["options"]
        material = [m for m in want["metafields"] if m["key"] == "material"]
        assert node["metafield"] == (
            {"value": material[0]["value"], "type": material[0]["type"]} if material else None
        )


def test_generated_catalog_has_the_shapes_an_adapter_must_map() -> None:
    sim = ShopifySimulator.generate(products=400, seed=11)
    truth = sim.truth()
    counts = [len(p["variants"]) for p in truth]
    assert min(counts) == 1 and max(counts) == 5
    assert 2.7 <= sum(counts) / len(counts) <= 3.6
    assert {p["status"] for p in truth} == {"ACTIVE", "DRAFT", "ARCHIVED", "UNLISTED"}
    assert sum(p["status"] == "ACTIVE" for p in truth) > len(truth) / 2
    images = [len(p["media"]) for p in truth]
    assert min(images) == 0 and max(images) == 4
    alts = [m["alt"] for p in truth for m in p["media"]]
    assert "" in alts and any(alts)
    assert any(p["seo"]["title"] is None for p in truth)
    assert any(p["seo"]["title"] for p in truth)
    variants = [v for p in truth for v in p["variants"]]
    assert {v["inventoryPolicy"] for v in variants} == {"DENY", "CONTINUE"}
    assert any(not v["inventoryItem"]["tracked"] for v in variants)
    assert any(v["compareAtPrice"] for v in variants)
    assert all(isinstance(v["price"], str) for v in variants)
    barcodes = [v["barcode"] for v in variants if v["barcode"]]
    assert barcodes and len(barcodes) < len(variants)
    for code in barcodes:  # valid GTIN-13 check digits
        total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(code[:12]))
        assert len(code) == 13 and int(code[12]) == (10 - total % 10) % 10
    assert len({p["updatedAt"] for p in truth}) < len(truth)  # some share a second
    assert ShopifySimulator.generate(products=400, seed=11).truth() == truth


async def test_the_direct_executor_answers_as_graphql_core(shop: Shop) -> None:
    query = (
        "query($n: Int!, $skip: Boolean!) { products(first: $n, sortKey: TITLE) {"
        " pageInfo { hasNextPage endCursor } edges { cursor node { ...P } } } }"
        " fragment P on Product { " + PRODUCT_FIELDS + " t: title @skip(if: $skip)"
        " totalInventory hasOnlyDefaultVariant priceRangeV2 { minVariantPrice { amount } } }"
    )
    variables = {"n": 20, "skip": False}
    fast = await shop.data(query, variables)
    shop.sim.executor.fast = False
    slow = await shop.data(query, variables)
    assert fast == slow
    assert fast["products"]["edges"][0]["node"]["t"]
    shop.sim.executor.fast = True
    introspection = await shop.data('{ __type(name: "Product") { name } shop { name } }')
    assert introspection["__type"] == {"name": "Product"}


# -- cost and throttling ---------------------------------------------------------------------------


async def test_cost_in_extensions_throttled_and_max_cost(shop: Shop) -> None:
    sim = shop.sim
    await shop.control("POST", "/__sim/clock", {"freeze": True})
    await shop.control("POST", "/__sim/faults", {"bucket_max": 100, "restore_rate": 10})
    query = "{ products(first: 10) { nodes { id } } }"
    answer = await shop.gql(query)
    cost = answer["extensions"]["cost"]
    assert cost["requestedQueryCost"] == 12
    assert cost["actualQueryCost"] == 12
    assert cost["throttleStatus"] == {
        "maximumAvailable": 100.0,
        "currentlyAvailable": 88,
        "restoreRate": 10.0,
    }
    for _ in range(7):
        assert "data" in await shop.gql(query)
    throttled = await shop.gql(query)  # 4 points left, 12 asked
    assert "data" not in throttled
    assert throttled["errors"][0]["extensions"]["code"] == "THROTTLED"
    assert throttled["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 4
    await shop.control("POST", "/__sim/clock", {"advance": 1})  # +10 points
    assert "data" in await shop.gql(query)
    big = await shop.gql(
        "{ products(first: 250) { nodes { id variants(first: 100) { nodes { id } } } } }"
    )
    assert big["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"
    assert "exceeds the single query max cost limit (1000)" in big["errors"][0]["message"]
    assert "data" not in big
    stats = await shop.control("GET", "/__sim/stats")
    assert stats["throttled"] == 1
    assert stats["max_cost_exceeded"] == 1
    assert stats["points_spent"] == 12 * 9
    assert sim.counters["throttled"] == 1


async def test_actual_cost_counts_what_was_returned(shop: Shop) -> None:
    answer = await shop.gql('{ products(first: 50, query: "id:<0") { nodes { id } } }')
    assert answer["extensions"]["cost"]["requestedQueryCost"] == 52
    assert answer["extensions"]["cost"]["actualQueryCost"] == 2


# -- bulk operations -------------------------------------------------------------------------------

BULK_INNER = """{ products { edges { node {
  id title handle status updatedAt seo { title description }
  variants { edges { node { id sku price inventoryQuantity } } }
  media { edges { node { ... on MediaImage { id alt image { url } } } } }
} } } }"""

RUN = """mutation($q: String!, $group: Boolean!) {
  bulkOperationRunQuery(query: $q, groupObjects: $group) {
    bulkOperation { id status } userErrors { field message code } } }"""

POLL = """query($id: ID!) { node(id: $id) { ... on BulkOperation {
  id status errorCode objectCount rootObjectCount fileSize url partialDataUrl completedAt } } }"""


async def run_bulk(shop: Shop, inner: str = BULK_INNER, group: bool = False) -> dict[str, Any]:
    data = await shop.data(RUN, {"q": inner, "group": group})
    result: dict[str, Any] = data["bulkOperationRunQuery"]
    return result


async def wait_bulk(shop: Shop, op_id: str) -> dict[str, Any]:
    final: dict[str, Any] = {}

    async def done() -> bool:
        node = (await shop.data(POLL, {"id": op_id}))["node"]
        final.update(node)
        return node["status"] in ("COMPLETED", "FAILED", "CANCELED")

    await until(done, 10, what="bulk operation end")
    return final


def attach(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Index by id, then attach children by __parentId, whatever the order."""
    roots = {
        line["id"]: {**line, "variants": [], "media": []}
        for line in lines
        if "__parentId" not in line
    }
    for line in lines:
        parent = line.get("__parentId")
        if parent is None:
            continue
        kind = "variants" if "ProductVariant" in line["id"] else "media"
        roots[parent][kind].append({k: v for k, v in line.items() if k != "__parentId"})
    return roots


async def test_bulk_operation_end_to_end(shop: Shop, receiver: Receiver) -> None:
    await subscribe(shop, "BULK_OPERATIONS_FINISH", receiver.url)
    started = await run_bulk(shop)
    assert started["userErrors"] == []
    assert started["bulkOperation"]["status"] == "CREATED"
    op_id = started["bulkOperation"]["id"]
    final = await wait_bulk(shop, op_id)
    assert final["status"] == "COMPLETED"
    assert final["errorCode"] is None and final["partialDataUrl"] is None
    response = await shop.client.get(final["url"])
    assert response.status_code == 200
    raw = response.content
    assert int(final["fileSize"]) == len(raw)
    rest = await shop.client.get(final["url"], headers={"Range": "bytes=100-"})
    assert rest.status_code == 206 and rest.content == raw[100:]  # a resumed download
    lines = [json.loads(line) for line in raw.splitlines()]
    assert int(final["objectCount"]) == len(lines)
    truth = shop.sim.truth()
    assert int(final["rootObjectCount"]) == len(truth)
    # Ungrouped (the 2026-07 default the adapter asks for): some child precedes its parent.
    position = {line["id"]: i for i, line in enumerate(lines)}
    assert any(
        position[line["__parentId"]] > i for i, line in enumerate(lines) if "__parentId" in line
    )
    products = attach(lines)
    assert set(products) == {p["id"] for p in truth}
    for want in truth:
        got = products[want["id"]]
        assert {k: got[k] for k in ("title", "handle", "status", "updatedAt", "seo")} == {
            k: want[k] for k in ("title", "handle", "status", "updatedAt", "seo")
        }
        assert sorted(v["id"] for v in got["variants"]) == sorted(v["id"] for v in want["variants"])
        assert {
            v["id"]: (v["sku"], v["price"], v["inventoryQuantity"]) for v in got["variants"]
        } == {v["id"]: (v["sku"], v["price"], v["inventoryQuantity"]) for v in want["variants"]}
        assert {m["id"]: (m["alt"], m["image"]) for m in got["media"]} == {
            m["id"]: (m["alt"], {"url": m["image"]["url"]}) for m in want["media"]
        }
    await until(lambda: receiver.topic("bulk_operations/finish"), 5, what="finish webhook")
    headers, body = receiver.topic("bulk_operations/finish")[0]
    finish = json.loads(body)
    assert finish["admin_graphql_api_id"] == op_id
    assert finish["status"] == "completed" and finish["error_code"] is None
    assert signed(headers, body, shop.sim.client_secret)
    current = await shop.data("{ currentBulkOperation { id status } }")
    assert current["currentBulkOperation"] == {"id": op_id, "status": "COMPLETED"}
    grouped = await wait_bulk(shop, (await run_bulk(shop, group=True))["bulkOperation"]["id"])
    grouped_lines = [
        json.loads(x) for x in (await shop.client.get(grouped["url"])).content.splitlines()
    ]
    seen: set[str] = set()
    for line in grouped_lines:
        assert line.get("__parentId", line["id"]) in seen | {line["id"]}
        seen.add(line["id"])


async def test_bulk_inner_query_rules_and_concurrency(shop: Shop) -> None:
    async def refused(inner: str) -> str:
        result = await run_bulk(shop, inner)
        assert result["bulkOperation"] is None
        (error,) = result["userErrors"]
        assert error["code"] == "INVALID" and error["field"] == ["query"]
        return str(error["message"])

    assert "at least one connection" in await refused("{ shop { name } }")
    assert "node" in await refused('{ node(id: "gid://shopify/Product/1") { id } }')
    assert "Invalid bulk query" in await refused("{ products { edges { node { bogus } } } }")
    deep = (
        "{ products { edges { node { id variants { edges { node { id"
        " metafields { edges { node { id } } } } } } } } } }"
    )
    assert "nesting depth" in await refused(deep)
    many = (
        "{ products { edges { node { id variants { edges { node { id } } }"
        " media { edges { node { id } } } metafields { edges { node { id } } }"
        " images { edges { node { id } } } collections { edges { node { id } } } } } } }"
    )
    assert "more than 5 connections" in await refused(many)
    await shop.control("POST", "/__sim/clock", {"freeze": True})  # nothing finishes
    ids = []
    for _ in range(5):
        result = await run_bulk(shop)
        assert result["userErrors"] == []
        ids.append(result["bulkOperation"]["id"])
    sixth = await run_bulk(shop)
    assert sixth["bulkOperation"] is None
    assert sixth["userErrors"][0]["code"] == "LIMIT_REACHED"
    cancelled = await shop.data(
        "mutation($id: ID!) { bulkOperationCancel(id: $id) { bulkOperation { status }"
        " userErrors { message } } }",
        {"id": ids[0]},
    )
    assert cancelled["bulkOperationCancel"]["bulkOperation"]["status"] == "CANCELING"
    await shop.control("POST", "/__sim/clock", {"advance": 1})
    assert (await shop.data(POLL, {"id": ids[0]}))["node"]["status"] == "CANCELED"
    assert (await run_bulk(shop))["userErrors"] == []  # a slot is free again
    await shop.control("POST", "/__sim/clock", {"advance": 8 * 24 * 3600})
    expired = (await shop.data(POLL, {"id": ids[1]}))["node"]
    assert expired["status"] == "EXPIRED"
    assert (await shop.client.get(expired["url"])).status_code == 403


async def test_failed_bulk_operation_has_partial_data(shop: Shop, receiver: Receiver) -> None:
    await subscribe(shop, "BULK_OPERATIONS_FINISH", receiver.url)
    await shop.control("POST", "/__sim/faults", {"bulk_fail": True})
    final = await wait_bulk(shop, (await run_bulk(shop))["bulkOperation"]["id"])
    assert final["status"] == "FAILED"
    assert final["errorCode"] == "INTERNAL_SERVER_ERROR"
    assert final["url"] is None
    partial = await shop.client.get(final["partialDataUrl"])
    lines = [json.loads(line) for line in partial.content.splitlines()]
    assert 0 < len(lines) == int(final["objectCount"])
    full = await wait_bulk(shop, (await run_bulk(shop))["bulkOperation"]["id"])
    assert full["status"] == "COMPLETED"  # the fault was for one operation
    assert len(lines) < int(full["objectCount"])
    await until(lambda: len(receiver.topic("bulk_operations/finish")) == 2, 5, what="webhooks")
    statuses = sorted(json.loads(b)["status"] for _, b in receiver.topic("bulk_operations/finish"))
    assert statuses == ["completed", "failed"]


# -- webhooks --------------------------------------------------------------------------------------


async def test_webhook_subscriptions_through_graphql(shop: Shop, receiver: Receiver) -> None:
    created = await subscribe(shop, "PRODUCTS_UPDATE", receiver.url)
    assert created["userErrors"] == []
    sub = created["webhookSubscription"]
    assert sub["topic"] == "PRODUCTS_UPDATE" and sub["uri"] == receiver.url
    again = await subscribe(shop, "PRODUCTS_UPDATE", receiver.url)
    assert again["webhookSubscription"] is None
    assert "already been taken" in again["userErrors"][0]["message"]
    remote = await subscribe(shop, "PRODUCTS_UPDATE", "http://example.com/hook")
    assert "not supported" in remote["userErrors"][0]["message"]
    listed = await shop.data(
        "{ webhookSubscriptions(first: 10, topics: [PRODUCTS_UPDATE]) { nodes { id uri } } }"
    )
    assert listed["webhookSubscriptions"]["nodes"] == [{"id": sub["id"], "uri": receiver.url}]
    delete = (
        "mutation($id: ID!) { webhookSubscriptionDelete(id: $id) {"
        " deletedWebhookSubscriptionId userErrors { message } } }"
    )
    gone = await shop.data(delete, {"id": sub["id"]})
    assert gone["webhookSubscriptionDelete"]["deletedWebhookSubscriptionId"] == sub["id"]
    twice = await shop.data(delete, {"id": sub["id"]})
    assert twice["webhookSubscriptionDelete"]["userErrors"][0]["message"]


async def test_webhooks_are_signed_rest_shaped_and_delete_has_only_the_id(
    shop: Shop, receiver: Receiver
) -> None:
    for topic in ("PRODUCTS_UPDATE", "PRODUCTS_DELETE", "PRODUCTS_CREATE"):
        await subscribe(shop, topic, receiver.url)
    target = shop.sim.truth()[3]
    num = numeric(target["id"])
    await shop.control("PATCH", f"/__sim/products/{num}", {"title": "Renamed"})
    await shop.control("DELETE", f"/__sim/products/{num}")
    created = await shop.control(
        "POST", "/__sim/products", {"title": "Fresh", "variants": [{"sku": "F-1", "price": "5.00"}]}
    )
    await until(lambda: len(receiver.requests) == 3, 5, what="three deliveries")
    secret = shop.sim.client_secret
    headers, body = receiver.topic("products/update")[0]
    assert signed(headers, body, secret)
    assert not signed(headers, body + b" ", secret)
    assert headers["X-Shopify-Shop-Domain"] == shop.sim.shop_domain
    assert headers["X-Shopify-API-Version"] == API_VERSION
    for name in ("X-Shopify-Webhook-Id", "X-Shopify-Event-Id", "X-Shopify-Triggered-At"):
        assert headers[name]
    payload = json.loads(body)
    assert payload["id"] == num and payload["title"] == "Renamed"
    assert payload["admin_graphql_api_id"] == target["id"]
    assert payload["status"] == target["status"].lower()
    assert payload["tags"] == ", ".join(target["tags"])
    assert payload["variants"][0]["inventory_item_id"] == numeric(
        target["variants"][0]["inventoryItem"]["id"]
    )
    headers, body = receiver.topic("products/delete")[0]
    assert json.loads(body) == {"id": num} and signed(headers, body, secret)
    _, body = receiver.topic("products/create")[0]
    assert json.loads(body)["variants"][0]["sku"] == "F-1"
    assert created["variants"][0]["sku"] == "F-1"


async def test_inventory_only_change_fires_inventory_levels_update_and_keeps_updated_at(
    shop: Shop, receiver: Receiver
) -> None:
    await subscribe(shop, "INVENTORY_LEVELS_UPDATE", receiver.url)
    await subscribe(shop, "PRODUCTS_UPDATE", receiver.url)
    product = shop.sim.truth()[0]
    item = product["variants"][0]["inventoryItem"]["id"]
    await shop.control(
        "POST", "/__sim/inventory", {"inventory_item_id": numeric(item), "available": 77}
    )
    await until(lambda: receiver.topic("inventory_levels/update"), 5, what="inventory webhook")
    await shop.sim.drain_webhooks()
    assert receiver.topic("products/update") == []
    payload = json.loads(receiver.topic("inventory_levels/update")[0][1])
    assert payload["inventory_item_id"] == numeric(item)
    assert payload["available"] == 77
    assert set(payload) == {
        "inventory_item_id", "location_id", "available", "updated_at", "admin_graphql_api_id"
    }  # fmt: skip
    after = await shop.data(
        "query($id: ID!) { product(id: $id) { updatedAt variants(first: 1) {"
        " nodes { inventoryQuantity } } } }",
        {"id": product["id"]},
    )
    assert after["product"]["updatedAt"] == product["updatedAt"]
    assert after["product"]["variants"]["nodes"][0]["inventoryQuantity"] == 77


async def test_failed_deliveries_retry_the_original_payload(shop: Shop, receiver: Receiver) -> None:
    await subscribe(shop, "PRODUCTS_UPDATE", receiver.url)
    await shop.control("POST", "/__sim/clock", {"freeze": True})
    num = numeric(shop.sim.truth()[0]["id"])
    receiver.statuses = [500]
    await shop.control("PATCH", f"/__sim/products/{num}", {"title": "First"})
    await until(lambda: len(receiver.requests) == 1, 5, what="first attempt")
    await shop.control("PATCH", f"/__sim/products/{num}", {"title": "Second"})
    await until(lambda: len(receiver.requests) == 2, 5, what="second event")
    await shop.control("POST", "/__sim/webhooks/drain")
    assert len(receiver.requests) == 2  # the retry waits for the simulator's clock
    await shop.control("POST", "/__sim/clock", {"advance": 1})  # the first backoff
    await until(lambda: len(receiver.requests) == 3, 5, what="the retry")
    first, second, retry = receiver.requests
    assert json.loads(retry[1])["title"] == "First"  # the original payload, now stale
    assert retry[1] == first[1]
    assert retry[0]["X-Shopify-Event-Id"] == first[0]["X-Shopify-Event-Id"]
    assert json.loads(second[1])["title"] == "Second"
    stats = await shop.control("GET", "/__sim/stats")
    assert stats["webhooks"]["retries"] == 1 and stats["webhooks"]["failures"] == 1


async def test_duplicate_and_reordered_delivery_faults(shop: Shop, receiver: Receiver) -> None:
    await subscribe(shop, "PRODUCTS_UPDATE", receiver.url)
    await shop.control("POST", "/__sim/faults", {"webhook_duplicate_rate": 1.0})
    num = numeric(shop.sim.truth()[0]["id"])
    await shop.control("PATCH", f"/__sim/products/{num}", {"title": "Twice"})
    await until(lambda: len(receiver.requests) == 2, 5, what="duplicate")
    (h1, b1), (h2, b2) = receiver.requests
    assert h1["X-Shopify-Event-Id"] == h2["X-Shopify-Event-Id"]
    assert h1["X-Shopify-Webhook-Id"] != h2["X-Shopify-Webhook-Id"]
    assert b1 == b2
    receiver.requests.clear()
    await shop.control(
        "POST", "/__sim/faults",
        {"webhook_duplicate_rate": 0, "webhook_reorder_rate": 1.0, "webhook_reorder_s": 0.8},
    )  # fmt: skip
    await shop.control("PATCH", f"/__sim/products/{num}", {"title": "Older"})
    await shop.control("POST", "/__sim/faults", {"webhook_reorder_rate": 0})
    await shop.control("PATCH", f"/__sim/products/{num}", {"title": "Newer"})
    await until(lambda: len(receiver.requests) == 2, 5, what="both")
    assert [json.loads(b)["title"] for _, b in receiver.requests] == ["Newer", "Older"]


# -- writes ----------------------------------------------------------------------------------------

PRODUCT_UPDATE = """mutation($product: ProductUpdateInput!) {
  productUpdate(product: $product) {
    product { id updatedAt descriptionHtml seo { title description } }
    userErrors { field message } } }"""


async def test_product_update_bumps_and_fires(shop: Shop, receiver: Receiver) -> None:
    await subscribe(shop, "PRODUCTS_UPDATE", receiver.url)
    product = shop.sim.truth()[2]
    await shop.control("POST", "/__sim/clock", {"set": "2026-06-01T10:00:00Z"})
    data = await shop.data(
        PRODUCT_UPDATE,
        {
            "product": {
                "id": product["id"],
                "seo": {"title": "SEO title", "description": "SEO description"},
                "descriptionHtml": "<p>New body</p>",
            }
        },
    )
    result = data["productUpdate"]
    assert result["userErrors"] == []
    assert result["product"]["seo"] == {"title": "SEO title", "description": "SEO description"}
    assert result["product"]["updatedAt"].startswith("2026-06-01T10:00:")
    await until(lambda: receiver.topic("products/update"), 5, what="update webhook")
    assert json.loads(receiver.topic("products/update")[0][1])["body_html"] == "<p>New body</p>"
    missing = await shop.data(
        PRODUCT_UPDATE, {"product": {"id": "gid://shopify/Product/1", "title": "x"}}
    )
    assert missing["productUpdate"] == {
        "product": None,
        "userErrors": [{"field": ["id"], "message": "Product does not exist"}],
    }
    blank = await shop.data(PRODUCT_UPDATE, {"product": {"id": product["id"], "title": " "}})
    assert blank["productUpdate"]["userErrors"][0]["field"] == ["title"]
    assert shop.sim.product(numeric(product["id"]))["title"] == product["title"]


async def test_file_update_changes_media_alt(shop: Shop) -> None:
    product = next(p for p in shop.sim.truth() if p["media"])
    media = product["media"][0]
    query = """mutation($files: [FileUpdateInput!]!) { fileUpdate(files: $files) {
      files { id alt ... on MediaImage { image { altText } } }
      userErrors { code field message } } }"""
    data = await shop.data(query, {"files": [{"id": media["id"], "alt": "A red shirt"}]})
    assert data["fileUpdate"]["userErrors"] == []
    assert data["fileUpdate"]["files"] == [
        {"id": media["id"], "alt": "A red shirt", "image": {"altText": "A red shirt"}}
    ]
    assert shop.sim.product(numeric(product["id"]))["media"][0]["alt"] == "A red shirt"
    bad = await shop.data(
        query,
        {
            "files": [
                {"id": media["id"], "alt": "never"},
                {"id": "gid://shopify/MediaImage/1", "alt": "x"},
            ]
        },
    )
    assert bad["fileUpdate"]["files"] is None
    assert bad["fileUpdate"]["userErrors"][0]["code"] == "FILE_DOES_NOT_EXIST"
    assert shop.sim.product(numeric(product["id"]))["media"][0]["alt"] == "A red shirt"  # atomic
    long = await shop.data(query, {"files": [{"id": media["id"], "alt": "x" * 513}]})
    assert long["fileUpdate"]["userErrors"][0]["code"] == "ALT_VALUE_LIMIT_EXCEEDED"


async def test_metafields_set_limits_atomicity_and_compare_digest(shop: Shop) -> None:
    owner = shop.sim.truth()[4]["id"]
    query = """mutation($m: [MetafieldsSetInput!]!) { metafieldsSet(metafields: $m) {
      metafields { key value compareDigest } userErrors { field message code elementIndex } } }"""

    def field(key: str, value: str, **extra: Any) -> dict[str, Any]:
        return {
            "ownerId": owner,
            "namespace": "bridge",
            "key": key,
            "type": "json",
            "value": value,
            **extra,
        }

    written = await shop.data(query, {"m": [field("jsonld", '{"@type":"Product"}')]})
    (meta,) = written["metafieldsSet"]["metafields"]
    digest = meta["compareDigest"]
    too_many = await shop.gql(query, {"m": [field(f"k{i}", "{}") for i in range(26)]})
    assert too_many["errors"][0]["extensions"]["code"] == "MAX_INPUT_SIZE_EXCEEDED"
    mixed = await shop.data(query, {"m": [field("other", "{}"), field("broken", "{not json")]})
    assert mixed["metafieldsSet"]["metafields"] is None
    (error,) = mixed["metafieldsSet"]["userErrors"]
    assert error["code"] == "INVALID_VALUE" and error["elementIndex"] == 1
    keys = {m["key"] for m in shop.sim.product(numeric(owner))["metafields"]}
    assert "other" not in keys  # atomic: the good element was not written either
    stale = await shop.data(query, {"m": [field("jsonld", "{}", compareDigest="0" * 64)]})
    assert stale["metafieldsSet"]["userErrors"][0]["code"] == "STALE_OBJECT"
    exists = await shop.data(query, {"m": [field("jsonld", "{}", compareDigest=None)]})
    assert exists["metafieldsSet"]["userErrors"][0]["code"] == "STALE_OBJECT"
    fresh = await shop.data(query, {"m": [field("jsonld", "[1]", compareDigest=digest)]})
    assert fresh["metafieldsSet"]["userErrors"] == []
    read = await shop.data(
        'query($id: ID!) { product(id: $id) { metafield(namespace: "bridge", key: "jsonld") {'
        " value jsonValue } } }",
        {"id": owner},
    )
    assert read["product"]["metafield"] == {"value": "[1]", "jsonValue": [1]}


# -- faults and control ----------------------------------------------------------------------------


async def test_faults_are_answered_as_shopify_and_counted(shop: Shop) -> None:
    await shop.control("POST", "/__sim/faults", {"fail_next": [503, 429]})
    first = await shop.client.post(ENDPOINT, json={"query": "{ shop { name } }"})
    second = await shop.client.post(ENDPOINT, json={"query": "{ shop { name } }"})
    assert (first.status_code, second.status_code) == (503, 429)
    assert second.headers["Retry-After"] == "1"
    assert "errors" in second.json()
    third = await shop.client.post(ENDPOINT, json={"query": "{ shop { name } }"})
    assert third.status_code == 200
    stats = await shop.control("GET", "/__sim/stats")
    route = stats["requests"]["POST /admin/api/{version}/graphql.json"]
    assert route == {"200": 1, "429": 1, "503": 1}
    bad = await shop.client.post("/__sim/faults", json={"restore_rate": -1})
    assert bad.status_code == 400


def test_cli_accepts_shopify() -> None:
    from bridge_agent.cli import _parser  # noqa: PLC0415 - the CLI's own parser

    args = _parser().parse_args(["simulate", "shopify", "--products", "5", "--port", "0"])
    assert args.platform == "shopify"


async def test_image_urls_point_at_the_simulator_itself(shop: Shop) -> None:
    # The agent checks image URLs (HEAD): they must never point off this machine.
    urls = [
        m["image"]["url"]
        for p in shop.sim.truth()
        for m in p["media"]
        if isinstance(m, dict) and m.get("image")
    ]
    assert urls
    assert all(u.startswith(f"{shop.url}/cdn/shop/") for u in urls), urls[:3]
    async with httpx.AsyncClient(timeout=10) as client:
        answers = [(await client.head(u)).status_code for u in urls[:20]]
    assert set(answers) <= {200, 404} and 200 in answers
