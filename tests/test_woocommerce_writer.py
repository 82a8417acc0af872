"""The WooCommerce `Writer` (platforms/woocommerce/writer.py) against the simulator over real HTTP
on 127.0.0.1: the Writer conformance suite, the per-field conflict check, the safe image pattern,
batches of 100, refused and unanswered writes, batch element errors and the SEO plugin choice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from bridge_agent.config import Secret
from bridge_agent.errors import PlatformUnavailable
from bridge_agent.platforms.base import (
    WRITE_CAPABILITIES,
    FieldRef,
    FieldWrite,
    WriteField,
    Writer,
    capabilities_of,
)
from bridge_agent.platforms.woocommerce import WooCommerce
from bridge_agent.platforms.woocommerce.client import WooClient
from bridge_agent.platforms.woocommerce.settings import WooSettings
from bridge_agent.simulators.woocommerce import WooSimulator, serve
from bridge_agent.sync.retry import Backoff
from bridge_agent.testing.conformance import WriterConformance, WriterSubject

BATCH = "POST /wp-json/wc/v3/products/batch"
LISTING = "GET /wp-json/wc/v3/products"
SEO = WriteField.SEO_TITLE
META_DESC = WriteField.SEO_DESCRIPTION
DESC = WriteField.DESCRIPTION
ALT = WriteField.IMAGE_ALT
JSONLD = WriteField.JSONLD

Hook = Callable[[httpx.Request], None]


@dataclass
class Shop:
    """A simulated store on loopback, the agent's HTTP client to it, and the test's hands."""

    sim: WooSimulator
    url: str
    http: httpx.AsyncClient
    control: httpx.AsyncClient
    sent: list[httpx.Request] = field(default_factory=list)
    before_send: list[Hook] = field(default_factory=list)  # run as each request leaves
    after_reply: list[Callable[[httpx.Response], None]] = field(default_factory=list)

    def adapter(self, **changes: Any) -> WooCommerce:
        values: dict[str, Any] = {
            "store_id": "main",
            "base_url": self.url,
            "consumer_key": Secret(self.sim.consumer_key),
            "consumer_secret": Secret(self.sim.consumer_secret),
            "concurrency": 4,
        }
        values.update(changes)
        settings = WooSettings(**values)
        client = WooClient(settings, self.http, backoff=Backoff(base=0.01, cap=0.05))
        return WooCommerce(settings, client)

    def product(self, product_id: int) -> dict[str, Any]:
        return self.sim.product(product_id)

    def meta(self, product_id: int, key: str) -> Any:
        rows = [m for m in self.product(product_id)["meta_data"] if m["key"] == key]
        assert len(rows) <= 1, f"{key} is on product {product_id} {len(rows)} times"
        return rows[0]["value"] if rows else None

    async def requests(self, route: str, status: int | None = None) -> int:
        """How many requests the store answered on `route` (from /__sim/stats)."""
        stats = (await self.control.get("/__sim/stats")).json()["requests"].get(route, {})
        if status is not None:
            return int(stats.get(str(status), 0))
        return sum(int(n) for n in stats.values())

    async def faults(self, **changes: Any) -> None:
        answer = await self.control.post("/__sim/faults", json=changes)
        assert answer.status_code == 200, answer.text

    def new_product(
        self,
        *,
        meta: dict[str, Any] | None = None,
        images: int = 0,
        shared: tuple[int, ...] = (),
        description: str = "<p>The store's own words.</p>",
    ) -> int:
        body: dict[str, Any] = {
            "name": "Writer test product",
            "description": description,
            "meta_data": [{"key": k, "value": v} for k, v in (meta or {}).items()],
            "images": [{"id": i} for i in shared]
            + [
                {"src": f"https://images.example/p{len(self.sim.truth())}-{n}.jpg", "alt": f"a{n}"}
                for n in range(images)
            ],
        }
        return int(self.sim.create_product(body)["id"])


YOAST = {"_yoast_wpseo_title": "Old title", "_yoast_wpseo_metadesc": "Old description"}
RANKMATH = {"rank_math_title": "RM title", "rank_math_description": "RM description"}


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    sim = WooSimulator.generate(products=3, seed=5, webhook_delay=0.01, webhook_jitter=0.01)
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(sim, "127.0.0.1", 0, ready=bound.set_result, warm=False))
    url = f"http://127.0.0.1:{await asyncio.wait_for(bound, 10)}"
    holder: list[Shop] = []

    async def record(request: httpx.Request) -> None:
        holder[0].sent.append(request)
        for hook in list(holder[0].before_send):
            hook(request)

    async def replied(response: httpx.Response) -> None:
        for hook in list(holder[0].after_reply):
            hook(response)

    hooks = {"request": [record], "response": [replied]}
    async with (
        httpx.AsyncClient(timeout=10, event_hooks=hooks) as http,
        httpx.AsyncClient(base_url=url, timeout=10) as control,
    ):
        holder.append(Shop(sim, url, http, control))
        yield holder[0]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def batches(shop: Shop) -> list[dict[str, Any]]:
    """The bodies of the batch writes the agent sent."""
    return [
        json.loads(r.content)
        for r in shop.sent
        if r.method == "POST" and r.url.path.endswith("/products/batch")
    ]


# -- the Writer contract ---------------------------------------------------------------------------


class TestWooCommerceWriterConformance(WriterConformance):
    @pytest.fixture
    def writer(self, shop: Shop) -> WriterSubject:
        yoast = shop.new_product(meta=YOAST)
        rankmath = shop.new_product(meta=RANKMATH, images=2)
        plain = shop.new_product(meta=YOAST, images=1)
        second_image = str(shop.product(rankmath)["images"][1]["id"])
        return WriterSubject(
            writer=shop.adapter(),
            writable=[
                FieldRef(str(yoast), SEO),
                FieldRef(str(rankmath), META_DESC),
                FieldRef(str(rankmath), ALT, image=second_image),
                FieldRef(str(plain), DESC),
                FieldRef(str(plain), JSONLD),
            ],
        )


def test_the_adapter_declares_every_write_and_is_a_writer(shop: Shop) -> None:
    adapter = shop.adapter()
    assert capabilities_of(adapter) >= WRITE_CAPABILITIES
    assert isinstance(adapter, Writer)


async def test_reads_agree_with_the_mirror_s_mapping(shop: Shop) -> None:
    """The hub's `expected` comes from the product the adapter mapped: the writer must read the
    same values, or every write would be a conflict."""
    shop.new_product(meta={"_yoast_wpseo_title": "  Padded  ", "_aioseo_description": "AIO"})
    adapter = shop.adapter()
    async for page in adapter.catalog():
        for product in page.products:
            refs = [
                FieldRef(product.id, SEO),
                FieldRef(product.id, META_DESC),
                FieldRef(product.id, DESC),
                *(FieldRef(product.id, ALT, image=i.id) for i in product.images),
            ]
            seen = await adapter.read_fields(refs)
            mirror = [
                product.seo_title,
                product.seo_description,
                product.description_html,
                *(i.alt or None for i in product.images),
            ]
            assert [seen[r] for r in refs] == mirror, product.id


# -- conflict check, per field ---------------------------------------------------------------------


async def test_a_merchant_edit_is_a_conflict_for_that_field_only(shop: Shop) -> None:
    product = shop.new_product(meta=YOAST)
    adapter = shop.adapter()
    title, desc = FieldRef(str(product), SEO), FieldRef(str(product), DESC)
    seen = await adapter.read_fields([title, desc])  # what the hub saw
    assert seen == {title: "Old title", desc: "<p>The store's own words.</p>"}
    # The merchant edits the SEO title in the store's admin before the optimisation arrives.
    edit = {"meta_data": [{"key": "_yoast_wpseo_title", "value": "Merchant's title"}]}
    answer = await shop.control.patch(f"/__sim/products/{product}", json=edit)
    assert answer.status_code == 200

    results = await adapter.write_fields(
        [
            FieldWrite(title, seen[title], "Hub title"),
            FieldWrite(desc, seen[desc], "<p>Hub description</p>"),
        ]
    )

    assert [r.outcome for r in results] == ["conflict", "applied"]
    assert results[0].current == "Merchant's title"
    assert shop.meta(product, "_yoast_wpseo_title") == "Merchant's title"
    assert shop.product(product)["description"] == "<p>Hub description</p>"
    (sent,) = batches(shop)
    assert sent["update"][0].keys() == {"id", "description"}, "the conflicting field was sent"


# -- images: the safe pattern ----------------------------------------------------------------------


async def test_alt_keeps_every_image_in_order_and_writes_the_attachment(shop: Shop) -> None:
    product = shop.new_product(meta=YOAST, images=3)
    before = [(i["id"], i["alt"]) for i in shop.product(product)["images"]]
    attachments = len(shop.sim.catalog.attachments)
    middle = before[1][0]
    ref = FieldRef(str(product), ALT, image=str(middle))

    (result,) = await shop.adapter().write_fields([FieldWrite(ref, "a1", "A red linen boot")])

    assert result.outcome == "applied", result
    after = [(i["id"], i["alt"]) for i in shop.product(product)["images"]]
    assert [i for i, _ in after] == [i for i, _ in before], "ids and order kept"
    assert after == [before[0], (middle, "A red linen boot"), before[2]]
    assert len(shop.sim.catalog.attachments) == attachments, "nothing sideloaded"
    assert shop.sim.catalog.attachments[middle].alt == "A red linen boot"
    (sent,) = batches(shop)
    images = sent["update"][0]["images"]
    assert [i["id"] for i in images] == [i for i, _ in before]
    assert all("src" not in i for i in images)
    assert [i.get("alt") for i in images] == [None, "A red linen boot", None]


async def test_alt_lives_on_the_attachment_shared_by_other_products(shop: Shop) -> None:
    first = shop.new_product(images=1)
    image = shop.product(first)["images"][0]["id"]
    other = shop.new_product(shared=(image,))
    ref = FieldRef(str(first), ALT, image=str(image))

    (result,) = await shop.adapter().write_fields([FieldWrite(ref, "a0", "Shared ALT")])

    assert result.outcome == "applied"
    # The writer cannot know about `other` (the engine checks its mirror): ALT changed there too.
    seen = await shop.adapter().read_fields([FieldRef(str(other), ALT, image=str(image))])
    assert list(seen.values()) == ["Shared ALT"]


async def test_an_empty_alt_is_unsupported_and_nothing_is_sent(shop: Shop) -> None:
    product = shop.new_product(images=1)
    image = str(shop.product(product)["images"][0]["id"])
    ref = FieldRef(str(product), ALT, image=image)

    results = await shop.adapter().write_fields(
        [FieldWrite(ref, "a0", ""), FieldWrite(ref, "a0", None)]
    )

    assert [r.outcome for r in results] == ["unsupported", "unsupported"]
    assert "empty alt" in (results[0].message or "")
    assert shop.product(product)["images"][0]["alt"] == "a0"
    assert not batches(shop)


async def test_an_image_the_product_does_not_have_fails(shop: Shop) -> None:
    product = shop.new_product(images=1)
    ref = FieldRef(str(product), ALT, image="987654")
    (result,) = await shop.adapter().write_fields([FieldWrite(ref, None, "x")])
    assert result.outcome == "failed"
    assert "987654" in (result.message or "")
    assert not batches(shop)


# -- JSON-LD ---------------------------------------------------------------------------------------


async def test_jsonld_is_stored_as_compact_json_and_read_back_parsed(shop: Shop) -> None:
    product = shop.new_product()
    ref = FieldRef(str(product), JSONLD)
    value = {"@context": "https://schema.org", "@type": "Product", "name": "Bötte </script>"}
    (result,) = await shop.adapter().write_fields([FieldWrite(ref, None, value)])
    assert result.outcome == "applied"
    stored = shop.meta(product, "_bridge_jsonld")
    assert isinstance(stored, str) and ": " not in stored and json.loads(stored) == value
    assert (await shop.adapter().read_fields([ref]))[ref] == value


# -- batches ---------------------------------------------------------------------------------------


async def test_150_products_go_in_two_batch_calls(shop: Shop) -> None:
    products = [shop.new_product() for _ in range(150)]
    refs = [FieldRef(str(p), DESC) for p in products]
    writes = [
        FieldWrite(r, "<p>The store's own words.</p>", f"<p>New {r.product}</p>") for r in refs
    ]
    listings = await shop.requests(LISTING)

    results = await shop.adapter().write_fields(writes)

    assert [r.outcome for r in results] == ["applied"] * 150
    assert [r.ref for r in results] == refs
    assert await shop.requests(BATCH, 200) == 2
    assert [len(b["update"]) for b in batches(shop)] == [100, 50]
    # One read of 2 listings before, one of 2 listings to verify: no request per product.
    assert await shop.requests(LISTING) - listings == 4
    assert all(shop.product(p)["description"] == f"<p>New {p}</p>" for p in products)


async def test_a_product_deleted_before_the_batch_fails_with_the_store_s_code(shop: Shop) -> None:
    kept, gone = shop.new_product(), shop.new_product()

    def delete_on_batch(request: httpx.Request) -> None:
        if request.method == "POST" and request.url.path.endswith("/batch"):
            shop.sim.delete_product(gone, force=True)  # between the writer's read and write

    shop.before_send.append(delete_on_batch)
    old = "<p>The store's own words.</p>"
    results = await shop.adapter().write_fields(
        [
            FieldWrite(FieldRef(str(gone), DESC), old, "<p>x</p>"),
            FieldWrite(FieldRef(str(kept), DESC), old, "<p>y</p>"),
        ]
    )

    assert [r.outcome for r in results] == ["failed", "applied"]
    assert results[0].status == 400
    assert "woocommerce_rest_product_invalid_id" in (results[0].message or "")
    assert shop.product(kept)["description"] == "<p>y</p>"


async def test_a_missing_product_is_failed_without_a_write(shop: Shop) -> None:
    (result,) = await shop.adapter().write_fields([FieldWrite(FieldRef("424242", DESC), None, "x")])
    assert (result.outcome, result.status) == ("failed", 404)
    assert not batches(shop)


async def test_odd_ids_are_answered_without_asking_the_store(shop: Shop) -> None:
    product = shop.new_product()
    padded = FieldRef(f"00{product}", DESC)
    odd = [FieldRef(i, DESC) for i in ("../etc", "", "-3", "x1")]
    seen = await shop.adapter().read_fields([padded, *odd])
    assert seen == {padded: "<p>The store's own words.</p>", **dict.fromkeys(odd)}
    results = await shop.adapter().write_fields([FieldWrite(r, None, "x") for r in odd])
    assert [(r.outcome, r.status) for r in results] == [("failed", 404)] * len(odd)
    assert not batches(shop)


async def test_a_store_that_cannot_be_read_raises_and_writes_nothing(shop: Shop) -> None:
    product = shop.new_product()
    await shop.faults(fail_next=[503] * 4, retry_after=0)  # every try of the first read
    with pytest.raises(PlatformUnavailable):
        await shop.adapter().write_fields([FieldWrite(FieldRef(str(product), DESC), None, "x")])
    assert not batches(shop)


# -- refused and unanswered writes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "line"),
    [(403, "Forbidden"), (406, "Not Acceptable"), (501, "Method Not Implemented")],
)
async def test_a_waf_page_on_post_fails_each_item_clearly_without_retry(
    shop: Shop, status: int, line: str
) -> None:
    first, second = shop.new_product(meta=YOAST), shop.new_product(meta=YOAST)
    await shop.faults(refuse_methods=["PUT", "POST", "DELETE"], refuse_status=status)
    writes = [
        FieldWrite(FieldRef(str(first), SEO), "Old title", "Hub title"),
        FieldWrite(FieldRef(str(second), DESC), "<p>The store's own words.</p>", "<p>Hub</p>"),
    ]

    results = await shop.adapter().write_fields(writes)

    assert [r.outcome for r in results] == ["failed", "failed"]
    for result in results:
        assert result.status == status
        message = result.message or ""
        assert f"{status} {line}" in message, message
        assert "<" not in message, "no HTML in the message"
    assert await shop.requests(BATCH) == 1, "a refused write is never sent again"
    assert shop.meta(first, "_yoast_wpseo_title") == "Old title"
    assert shop.product(second)["description"] == "<p>The store's own words.</p>"


async def test_a_lost_reply_is_read_back_and_reported_applied(shop: Shop) -> None:
    product = shop.new_product(meta=YOAST)
    await shop.faults(drop_reply_after_write=1)
    ref = FieldRef(str(product), SEO)

    (result,) = await shop.adapter().write_fields([FieldWrite(ref, "Old title", "Hub title")])

    assert result.outcome == "applied", result
    assert "answer was lost" in (result.message or ""), result.message
    assert await shop.requests(BATCH) == 1, "an ambiguous write is never sent again"
    assert shop.meta(product, "_yoast_wpseo_title") == "Hub title"


async def test_a_value_the_store_does_not_keep_is_failed(shop: Shop) -> None:
    product = shop.new_product(meta=YOAST)

    def merchant_saves_after_the_batch(response: httpx.Response) -> None:
        if response.request.method == "POST" and response.request.url.path.endswith("/batch"):
            # A save filter or the merchant, right after our write: the verification sees it.
            shop.sim.update_product(product, {"description": "<p>Merchant again</p>"})

    shop.after_reply.append(merchant_saves_after_the_batch)
    ref = FieldRef(str(product), DESC)
    (result,) = await shop.adapter().write_fields(
        [FieldWrite(ref, "<p>The store's own words.</p>", "<p>Hub</p>")]
    )
    assert result.outcome == "failed"
    assert "did not keep" in (result.message or "")
    assert result.current == "<p>Merchant again</p>"


# -- the SEO plugin --------------------------------------------------------------------------------


async def test_seo_fields_go_to_the_detected_plugin(shop: Shop) -> None:
    product = shop.new_product(meta=RANKMATH)
    title, desc = FieldRef(str(product), SEO), FieldRef(str(product), META_DESC)
    results = await shop.adapter().write_fields(
        [FieldWrite(title, "RM title", "New RM title"), FieldWrite(desc, "RM description", "")]
    )
    assert [r.outcome for r in results] == ["applied", "applied"]
    assert shop.meta(product, "rank_math_title") == "New RM title"
    assert shop.meta(product, "rank_math_description") == ""
    assert shop.meta(product, "_yoast_wpseo_title") is None, "no other plugin's key written"


async def test_a_migrated_store_s_empty_rows_do_not_win(shop: Shop) -> None:
    # Moved from Yoast to Rank Math: Yoast's empty row stays, the mirror reads Rank Math's title.
    product = shop.new_product(meta={"_yoast_wpseo_title": "", "rank_math_title": " RM title "})
    ref = FieldRef(str(product), SEO)
    assert (await shop.adapter().read_fields([ref]))[ref] == "RM title"  # as the mapping reads
    (result,) = await shop.adapter().write_fields([FieldWrite(ref, "RM title", "New title")])
    assert result.outcome == "applied"
    assert shop.meta(product, "rank_math_title") == "New title"
    assert shop.meta(product, "_yoast_wpseo_title") == ""


async def test_the_store_option_names_the_plugin(shop: Shop) -> None:
    product = shop.new_product(meta=YOAST)
    adapter = shop.adapter(seo_plugin="aioseo")
    ref = FieldRef(str(product), SEO)
    assert (await adapter.read_fields([ref]))[ref] is None  # AIOSEO has nothing yet
    (result,) = await adapter.write_fields([FieldWrite(ref, None, "AIOSEO title")])
    assert result.outcome == "applied"
    assert shop.meta(product, "_aioseo_title") == "AIOSEO title"
    assert shop.meta(product, "_yoast_wpseo_title") == "Old title"


async def test_no_seo_plugin_found_is_unsupported_and_says_so(shop: Shop) -> None:
    product = shop.new_product(meta={"_some_plugin": "x"})
    ref = FieldRef(str(product), SEO)
    assert (await shop.adapter().read_fields([ref]))[ref] is None
    desc = FieldRef(str(product), DESC)
    results = await shop.adapter().write_fields(
        [FieldWrite(ref, None, "Title"), FieldWrite(desc, "<p>The store's own words.</p>", "d")]
    )
    assert [r.outcome for r in results] == ["unsupported", "applied"]
    assert "no SEO plugin" in (results[0].message or "")
    assert "seo_plugin" in (results[0].message or "")
