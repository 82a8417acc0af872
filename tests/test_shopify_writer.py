"""The Shopify `Writer` (platforms/shopify/writer.py) against the Shopify simulator over real HTTP
on 127.0.0.1 (the real Admin schema, its cost bucket, `productUpdate`, `fileUpdate`,
`metafieldsSet` with `compareDigest`): the Writer conformance suite, writes landing in the shop,
conflicts by a changed field and by a stale digest, `userErrors` mapped to the write they name,
an unanswered mutation never sent again, and a bulk apply that never meets THROTTLED."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from bridge_agent.config import Secret, StoreSettings
from bridge_agent.errors import PlatformUnavailable
from bridge_agent.platforms.base import (
    WRITE_CAPABILITIES,
    FieldRef,
    FieldWrite,
    WriteField,
    Writer,
    capabilities_of,
)
from bridge_agent.platforms.shopify import Shopify, queries
from bridge_agent.platforms.shopify.writer import JSONLD_KEY, JSONLD_NAMESPACE
from bridge_agent.simulators.shopify import generate
from bridge_agent.simulators.shopify.app import serve
from bridge_agent.simulators.shopify.sim import ShopifySimulator
from bridge_agent.sync.retry import Backoff
from bridge_agent.testing.conformance import WriterConformance, WriterSubject

SEO = WriteField.SEO_TITLE
META_DESC = WriteField.SEO_DESCRIPTION
DESC = WriteField.DESCRIPTION
ALT = WriteField.IMAGE_ALT
JSONLD = WriteField.JSONLD

Hook = Callable[[str, dict[str, Any]], None]  # (operation name, variables) as a request leaves


@dataclass
class Shop:
    """A simulated shop on loopback, the agent's HTTP client to it, and the test's hands."""

    sim: ShopifySimulator
    url: str
    http: httpx.AsyncClient
    control: httpx.AsyncClient
    sent: list[str] = field(default_factory=list)  # operation names, in order
    before_send: list[Hook] = field(default_factory=list)

    def adapter(self, **options: Any) -> Shopify:
        settings = StoreSettings(
            id="shop",
            platform="shopify",
            url=self.url,
            secrets={
                "access_token": Secret(self.sim.access_token),
                "webhook_secret": Secret(self.sim.client_secret),
            },
            options=options,
        )
        return Shopify.from_settings(settings, self.http)

    def new_product(self, *, images: int = 0, **fields: Any) -> str:
        body: dict[str, Any] = {
            "title": "Writer test product",
            "descriptionHtml": "<p>The shop's own words.</p>",
            "seo": {"title": "Old title", "description": "Old description"},
            "media": [{"alt": f"a{n}"} for n in range(images)],
            **fields,
        }
        created = self.sim.create_product(body, webhooks=False)
        number = str(created["id"]).rsplit("/", 1)[-1]
        seo = body["seo"]
        # The creation path may not take `seo`: set it as the admin would.
        self.sim.update_product(int(number), {"seo": seo}, webhooks=False)
        return number

    def truth(self, number: str) -> dict[str, Any]:
        return next(
            p for p in self.sim.truth() if str(p["id"]) == f"gid://shopify/Product/{number}"
        )

    def media(self, number: str) -> list[tuple[str, str]]:
        """(MediaImage number, alt) of the product's media, in the shop's order."""
        return [(str(m["id"]).rsplit("/", 1)[-1], m["alt"]) for m in self.truth(number)["media"]]

    def metafield(self, number: str) -> dict[str, Any] | None:
        for f in self.truth(number)["metafields"]:
            if f["namespace"] == JSONLD_NAMESPACE and f["key"] == JSONLD_KEY:
                return dict(f)
        return None

    def set_metafield(self, number: str, value: str) -> None:
        """Another app (or the merchant) writes the JSON-LD metafield, in the shop itself."""
        product = self.sim.catalog.record(f"gid://shopify/Product/{number}", "Product")
        assert product is not None
        generate.set_metafield(
            self.sim.catalog.numbers,
            product,
            namespace=JSONLD_NAMESPACE,
            key=JSONLD_KEY,
            type_="json",
            value=value,
            now=self.sim.clock.now(),
        )
        self.sim.catalog.index(product)

    async def stats(self) -> dict[str, Any]:
        doc: dict[str, Any] = (await self.control.get("/__sim/stats")).json()
        return doc

    async def faults(self, **changes: Any) -> None:
        (await self.control.post("/__sim/faults", json=changes)).raise_for_status()

    def count(self, operation: str) -> int:
        return self.sent.count(operation)


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    sim = ShopifySimulator.generate(products=3, seed=5)
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(sim, "127.0.0.1", 0, ready=port.set_result))
    url = f"http://127.0.0.1:{await asyncio.wait_for(port, 30)}"
    holder: list[Shop] = []

    async def on_request(request: httpx.Request) -> None:
        if "/admin/api/" not in request.url.path:
            return
        body = json.loads(request.content)
        holder[0].sent.append(str(body.get("operationName")))
        for hook in list(holder[0].before_send):
            hook(str(body.get("operationName")), body.get("variables") or {})

    http = httpx.AsyncClient(timeout=30, event_hooks={"request": [on_request]})
    control = httpx.AsyncClient(base_url=url, timeout=30)
    holder.append(Shop(sim, url, http, control))
    yield holder[0]
    await http.aclose()
    await control.aclose()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await sim.close()


def once(operation: str, action: Callable[[], None]) -> Hook:
    """A hook that runs `action` just before the first request of `operation` leaves."""
    done: list[bool] = []

    def hook(name: str, _: dict[str, Any]) -> None:
        if name == operation and not done:
            done.append(True)
            action()

    return hook


# -- conformance -----------------------------------------------------------------------------------


class TestShopifyWriterConformance(WriterConformance):
    @pytest.fixture
    def writer(self, shop: Shop) -> WriterSubject:
        first = shop.new_product()
        second = shop.new_product(images=2)
        third = shop.new_product(images=1)
        second_image = shop.media(second)[1][0]
        return WriterSubject(
            writer=shop.adapter(),
            writable=[
                FieldRef(first, SEO),
                FieldRef(second, META_DESC),
                FieldRef(second, ALT, image=second_image),
                FieldRef(third, DESC),
                FieldRef(third, JSONLD),
            ],
        )


def test_the_adapter_declares_every_write_and_is_a_writer(shop: Shop) -> None:
    adapter = shop.adapter()
    assert capabilities_of(adapter) >= WRITE_CAPABILITIES
    assert isinstance(adapter, Writer)


def test_the_writer_s_documents_are_the_schema_tested_ones() -> None:
    documents = {d for d, _ in queries.DOCUMENTS.values()}
    for document in (
        queries.WRITER_FIELDS,
        queries.WRITER_FIELDS_MEDIA,
        queries.PRODUCT_UPDATE,
        queries.FILE_UPDATE,
        queries.METAFIELDS_SET,
        queries.METAFIELDS_DELETE,
    ):
        assert document in documents
    assert "productUpdate(product: $product)" in queries.PRODUCT_UPDATE  # never `input:`
    assert f'metafield(namespace: "{JSONLD_NAMESPACE}", key: "{JSONLD_KEY}")' in (
        queries.WRITER_FIELDS
    )
    # A mutation's cost stays modest: the bucket paces many of them.
    for document in (queries.PRODUCT_UPDATE, queries.FILE_UPDATE, queries.METAFIELDS_SET):
        assert queries.requested_cost(document) <= 20


async def test_reads_agree_with_the_mirror_s_mapping(shop: Shop) -> None:
    """The hub's `expected` comes from the product the adapter mapped: the writer must read the
    same values, or every write would be a conflict."""
    number = shop.new_product(images=2, descriptionHtml="  <p>Padded</p> ")
    shop.sim.update_product(int(number), {"seo": {"title": "  Spaces  "}}, webhooks=False)
    adapter = shop.adapter()
    product = await adapter.fetch_product(number)
    assert product is not None
    refs = [
        FieldRef(number, SEO),
        FieldRef(number, META_DESC),
        FieldRef(number, DESC),
        *(FieldRef(number, ALT, image=i.id) for i in product.images),
        FieldRef(number, JSONLD),
    ]
    read = await adapter.read_fields(refs)
    assert read[refs[0]] == product.seo_title == "  Spaces  "
    assert read[refs[1]] == product.seo_description
    assert read[refs[2]] == product.description_html == "  <p>Padded</p> "
    assert [read[FieldRef(number, ALT, image=i.id)] for i in product.images] == [
        i.alt or None for i in product.images
    ]
    assert read[refs[-1]] is None  # no metafield yet


async def test_every_field_lands_in_the_shop(shop: Shop) -> None:
    number = shop.new_product(images=2)
    (image, _), (other, other_alt) = shop.media(number)
    adapter = shop.adapter()
    document = {"@context": "https://schema.org", "@type": "Product", "name": "Élan </script>"}
    results = await adapter.write_fields(
        [
            FieldWrite(FieldRef(number, SEO), "Old title", "New title"),
            FieldWrite(FieldRef(number, META_DESC), "Old description", "New description"),
            FieldWrite(FieldRef(number, DESC), "<p>The shop's own words.</p>", "<p>New</p>"),
            FieldWrite(FieldRef(number, ALT, image=image), "a0", "A red mug"),
            FieldWrite(FieldRef(number, JSONLD), None, document),
        ]
    )
    assert [r.outcome for r in results] == ["applied"] * 5, results
    truth = shop.truth(number)
    assert truth["seo"] == {"title": "New title", "description": "New description"}
    assert truth["descriptionHtml"] == "<p>New</p>"
    assert shop.media(number) == [(image, "A red mug"), (other, other_alt)]
    metafield = shop.metafield(number)
    assert metafield is not None and metafield["type"] == "json"
    assert json.loads(metafield["value"]) == document
    # One call each: the product's three fields in one productUpdate, never `input:`.
    assert shop.count("WriterProductUpdate") == 1
    assert shop.count("WriterFileUpdate") == 1
    assert shop.count("WriterMetafieldsSet") == 1


async def test_a_field_changed_between_read_and_apply_is_a_conflict_for_it_only(
    shop: Shop,
) -> None:
    number = shop.new_product()
    adapter = shop.adapter()
    title, description = FieldRef(number, SEO), FieldRef(number, META_DESC)
    seen = await adapter.read_fields([title, description])
    # The merchant saves a new SEO title after the hub (and the apply loop) read it.
    shop.sim.update_product(int(number), {"seo": {"title": "Merchant's title"}})
    results = await adapter.write_fields(
        [
            FieldWrite(title, seen[title], "Hub title"),
            FieldWrite(description, seen[description], "Hub description"),
        ]
    )
    assert [r.outcome for r in results] == ["conflict", "applied"]
    assert results[0].current == "Merchant's title"
    assert shop.truth(number)["seo"] == {
        "title": "Merchant's title",
        "description": "Hub description",
    }


async def test_a_metafield_changed_after_the_read_is_a_conflict_by_compare_digest(
    shop: Shop,
) -> None:
    number = shop.new_product()
    adapter = shop.adapter()
    ref = FieldRef(number, JSONLD)
    first = {"@type": "Product", "name": "first"}
    (written,) = await adapter.write_fields([FieldWrite(ref, None, first)])
    assert written.outcome == "applied"
    current = (await adapter.read_fields([ref]))[ref]
    assert current == first
    # Another app rewrites the metafield between the writer's read and its metafieldsSet.
    theirs = '{"@type":"Product","name":"theirs"}'
    shop.before_send.append(once("WriterMetafieldsSet", lambda: shop.set_metafield(number, theirs)))
    (result,) = await adapter.write_fields([FieldWrite(ref, current, {"name": "ours"})])
    assert result.outcome == "conflict", result
    assert result.current == json.loads(theirs)
    metafield = shop.metafield(number)
    assert metafield is not None and metafield["value"] == theirs  # not overwritten
    assert shop.count("WriterMetafieldsSet") == 2  # the first write, and the refused one


async def test_a_stale_digest_in_a_call_of_several_conflicts_alone(shop: Shop) -> None:
    """metafieldsSet is atomic: the stale element refuses the call, the others go once more."""
    numbers = [shop.new_product() for _ in range(3)]
    refs = [FieldRef(n, JSONLD) for n in numbers]
    shop.before_send.append(
        once("WriterMetafieldsSet", lambda: shop.set_metafield(numbers[1], '{"name":"theirs"}'))
    )
    results = await shop.adapter().write_fields(
        [FieldWrite(r, None, {"name": f"ours {r.product}"}) for r in refs]
    )
    assert [r.outcome for r in results] == ["applied", "conflict", "applied"], results
    assert results[1].current == {"name": "theirs"}
    for number in (numbers[0], numbers[2]):
        metafield = shop.metafield(number)
        assert metafield is not None
        assert json.loads(metafield["value"]) == {"name": f"ours {number}"}
    assert shop.count("WriterMetafieldsSet") == 2


async def test_a_new_metafield_created_meanwhile_is_not_overwritten(shop: Shop) -> None:
    """No metafield at the read: `compareDigest: null` means "only if there is none"."""
    number = shop.new_product()
    ref = FieldRef(number, JSONLD)
    shop.before_send.append(
        once("WriterMetafieldsSet", lambda: shop.set_metafield(number, '{"name":"theirs"}'))
    )
    (result,) = await shop.adapter().write_fields([FieldWrite(ref, None, {"name": "ours"})])
    assert result.outcome == "conflict"
    assert result.current == {"name": "theirs"}


async def test_user_errors_fail_the_write_they_name_and_the_rest_applies(shop: Shop) -> None:
    number = shop.new_product(images=2)
    (image, _), (other, _) = shop.media(number)
    plain = shop.new_product()
    adapter = shop.adapter()
    too_long_title = "T" * 256
    too_long_alt = "A" * 513
    results = await adapter.write_fields(
        [
            FieldWrite(FieldRef(number, SEO), "Old title", too_long_title),
            FieldWrite(FieldRef(number, META_DESC), "Old description", "Kept description"),
            FieldWrite(FieldRef(number, ALT, image=image), "a0", too_long_alt),
            FieldWrite(FieldRef(number, ALT, image=other), "a1", "Fine alt"),
            FieldWrite(FieldRef(number, JSONLD), None, "{not json"),
            FieldWrite(FieldRef(plain, JSONLD), None, {"name": "fine"}),
        ]
    )
    outcomes = [r.outcome for r in results]
    assert outcomes == ["failed", "applied", "failed", "applied", "failed", "applied"], results
    assert results[0].message is not None and "too long" in results[0].message
    assert "seo_title" in results[0].message
    assert results[2].message is not None and "ALT_VALUE_LIMIT_EXCEEDED" in results[2].message
    assert results[4].message is not None and "INVALID_VALUE" in results[4].message
    truth = shop.truth(number)
    assert truth["seo"] == {"title": "Old title", "description": "Kept description"}
    assert [alt for _, alt in shop.media(number)] == ["a0", "Fine alt"]
    assert shop.metafield(number) is None
    fine = shop.metafield(plain)
    assert fine is not None and json.loads(fine["value"]) == {"name": "fine"}
    # Each refused call went once more without the refused input, never more.
    assert shop.count("WriterProductUpdate") == 2
    assert shop.count("WriterFileUpdate") == 2
    assert shop.count("WriterMetafieldsSet") == 2


async def test_an_image_that_is_not_the_product_s_fails_without_a_call(shop: Shop) -> None:
    number = shop.new_product(images=1)
    elsewhere = shop.new_product(images=1)
    foreign = shop.media(elsewhere)[0][0]
    results = await shop.adapter().write_fields(
        [
            FieldWrite(FieldRef(number, ALT, image=foreign), "a0", "x"),
            FieldWrite(FieldRef(number, ALT, image="abc"), "a0", "x"),
        ]
    )
    assert [r.outcome for r in results] == ["failed", "failed"]
    assert results[0].message is not None and "is not an image of product" in results[0].message
    assert shop.count("WriterFileUpdate") == 0
    assert shop.media(elsewhere)[0][1] == "a0"


async def test_the_alt_of_a_product_s_25th_image_is_read_and_written(shop: Shop) -> None:
    """Media past the first page (`WRITER_MEDIA_FIRST`) come from follow-up `PRODUCT_MEDIA`."""
    number = shop.new_product(images=25)
    last, alt = shop.media(number)[-1]
    ref = FieldRef(number, ALT, image=last)
    adapter = shop.adapter()
    assert (await adapter.read_fields([ref]))[ref] == alt == "a24"
    (result,) = await adapter.write_fields([FieldWrite(ref, alt, "The last one")])
    assert result.outcome == "applied", result
    assert shop.media(number)[-1] == (last, "The last one")
    assert shop.count("ProductMedia") == 2  # one follow-up page for each read


async def test_missing_products_odd_ids_and_an_empty_jsonld(shop: Shop) -> None:
    number = shop.new_product()
    results = await shop.adapter().write_fields(
        [
            FieldWrite(FieldRef("987654", SEO), None, "x"),
            FieldWrite(FieldRef("not-a-number", SEO), None, "x"),
            FieldWrite(FieldRef(number, JSONLD), None, None),
            FieldWrite(FieldRef(number, SEO), "Old title", {"an": "object"}),
        ]
    )
    # No metafield to empty: the store holds nothing already, without a call.
    assert [r.outcome for r in results] == ["failed", "failed", "applied", "failed"]
    assert results[0].status == 404
    assert shop.count("WriterProductUpdate") == 0
    assert shop.count("WriterMetafieldsDelete") == 0
    assert shop.truth(number)["seo"]["title"] == "Old title"


async def test_an_unanswered_mutation_is_read_back_and_never_sent_again(shop: Shop) -> None:
    number = shop.new_product()
    adapter = shop.adapter()
    # The shop answers 503 to the mutation (nothing applied): the writer may not know that.
    shop.before_send.append(
        once("WriterProductUpdate", lambda: shop.sim.faults.update({"fail_next": [503]}))
    )
    (result,) = await adapter.write_fields([FieldWrite(FieldRef(number, SEO), "Old title", "New")])
    assert result.outcome == "failed"
    assert result.status == 503
    assert result.message is not None and "does not hold the value" in result.message
    assert shop.count("WriterProductUpdate") == 1  # never resent blindly
    assert shop.truth(number)["seo"]["title"] == "Old title"


async def test_a_store_that_cannot_be_read_raises_and_writes_nothing(shop: Shop) -> None:
    number = shop.new_product()
    adapter = shop.adapter()
    adapter.client.layer.backoff = Backoff(base=0.01, cap=0.02)
    await shop.faults(fail_rate=1.0, fail_statuses=[503], retry_after=0)
    with pytest.raises(PlatformUnavailable):
        await adapter.write_fields([FieldWrite(FieldRef(number, SEO), "Old title", "New")])
    assert shop.count("WriterFields") > 1  # the read was retried (a query is safe to resend)
    assert shop.count("WriterProductUpdate") == 0


async def test_a_bulk_apply_of_hundreds_is_paced_never_throttled(shop: Shop) -> None:
    """300 products, each with an SEO title and a JSON-LD, on a shop whose bucket holds 500
    points: the reads are sized to the bucket, the mutations paced by it."""
    await shop.faults(bucket_max=500, restore_rate=2000)
    numbers = [
        str(p["id"]).rsplit("/", 1)[-1]
        for p in (
            shop.sim.create_product(
                {"title": f"Bulk {n}", "seo": {"title": f"T{n}"}}, webhooks=False
            )
            for n in range(300)
        )
    ]
    for number in numbers:
        shop.sim.update_product(int(number), {"seo": {"title": f"T{number}"}}, webhooks=False)
    adapter = shop.adapter(concurrency=8)
    await adapter.check()  # the bucket is seen once
    refs = [FieldRef(n, SEO) for n in numbers] + [FieldRef(n, JSONLD) for n in numbers]
    current = await adapter.read_fields(refs)
    writes = [
        FieldWrite(r, current[r], f"New {r.product}" if r.field is SEO else {"id": r.product})
        for r in refs
    ]
    results = await adapter.write_fields(writes)
    assert [r.outcome for r in results] == ["applied"] * len(writes)
    stats = await shop.stats()
    assert stats["throttled"] == 0
    assert stats["max_cost_exceeded"] == 0
    assert shop.count("WriterMetafieldsSet") == 12  # 25 a call
    assert shop.truth(numbers[-1])["seo"]["title"] == f"New {numbers[-1]}"
    after = await adapter.read_fields(refs[-1:])
    assert after[refs[-1]] == {"id": numbers[-1]}


# -- emptying the JSON-LD: metafieldsDelete --------------------------------------------------------


@pytest.mark.parametrize("empty", [None, {}, ""])
async def test_an_empty_jsonld_deletes_the_metafield(shop: Shop, empty: Any) -> None:
    """What a rollback of a first-time JSON-LD write sends (the old value: nothing): the
    metafield goes, without moving the product's updatedAt or firing a webhook."""
    numbers = [shop.new_product() for _ in range(2)]
    adapter = shop.adapter()
    refs = [FieldRef(n, JSONLD) for n in numbers]
    documents = [{"@type": "Product", "name": f"ours {n}"} for n in numbers]
    written = await adapter.write_fields(
        [FieldWrite(r, None, d) for r, d in zip(refs, documents, strict=True)]
    )
    assert [r.outcome for r in written] == ["applied", "applied"], written
    updated = [shop.truth(n)["updatedAt"] for n in numbers]
    hooks = (await shop.stats())["webhooks"]
    results = await adapter.write_fields(
        [FieldWrite(r, d, empty) for r, d in zip(refs, documents, strict=True)]
    )
    assert [r.outcome for r in results] == ["applied", "applied"], results
    assert [shop.metafield(n) for n in numbers] == [None, None]
    assert await adapter.read_fields(refs) == dict.fromkeys(refs)
    assert shop.count("WriterMetafieldsDelete") == 1  # both in one call
    assert [shop.truth(n)["updatedAt"] for n in numbers] == updated
    assert (await shop.stats())["webhooks"] == hooks
    # Emptied twice: nothing left to delete, no call.
    (again,) = await adapter.write_fields([FieldWrite(refs[0], None, empty)])
    assert again.outcome == "applied"
    assert shop.count("WriterMetafieldsDelete") == 1


async def test_emptying_a_jsonld_the_merchant_changed_is_a_conflict(shop: Shop) -> None:
    number = shop.new_product()
    ref = FieldRef(number, JSONLD)
    theirs = '{"@type":"Product","name":"theirs"}'
    shop.set_metafield(number, theirs)
    (result,) = await shop.adapter().write_fields([FieldWrite(ref, {"name": "ours"}, None)])
    assert result.outcome == "conflict", result
    assert result.current == json.loads(theirs)
    metafield = shop.metafield(number)
    assert metafield is not None and metafield["value"] == theirs  # not deleted
    assert shop.count("WriterMetafieldsDelete") == 0


async def test_the_simulator_s_metafields_delete(shop: Shop) -> None:
    """Shopify's documented answers: a metafield that is not there is a null entry, not an
    error; an owner that does not exist is a userErrors entry and nothing is deleted."""
    number = shop.new_product()
    shop.set_metafield(number, '{"name":"x"}')
    owner = f"gid://shopify/Product/{number}"
    other = shop.new_product()

    async def delete(*identifiers: dict[str, str]) -> dict[str, Any]:
        answer = await shop.control.post(
            "/admin/api/2026-07/graphql.json",
            headers={"X-Shopify-Access-Token": shop.sim.access_token},
            json={"query": queries.METAFIELDS_DELETE, "variables": {"metafields": identifiers}},
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        assert "errors" not in body, body
        payload: dict[str, Any] = body["data"]["metafieldsDelete"]
        return payload

    ours = {"ownerId": owner, "namespace": JSONLD_NAMESPACE, "key": JSONLD_KEY}
    refused = await delete(ours, {**ours, "ownerId": "gid://shopify/Product/987654321"})
    assert refused["deletedMetafields"] is None
    assert refused["userErrors"] == [
        {"field": ["metafields", "1", "ownerId"], "message": "Owner does not exist."}
    ]
    assert shop.metafield(number) is not None  # all or nothing
    done = await delete(ours, {**ours, "ownerId": f"gid://shopify/Product/{other}"})
    assert done == {"deletedMetafields": [ours, None], "userErrors": []}
    assert shop.metafield(number) is None
