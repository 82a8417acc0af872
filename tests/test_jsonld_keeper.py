"""JSON-LD that never goes stale: the apply path builds the document from the store's product and
the hub's text, and the keeper (downstream/keeper.py) rewrites it when the store changes a price
or a stock status. The WooCommerce simulator on loopback, the real adapter, real SQLite. Also the
description addition (`description_html: {"from", "append"}`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge_agent.agent import Agent
from bridge_agent.config import Listen, Secret, StoreSettings, WebhookSettings
from bridge_agent.downstream import rollback
from bridge_agent.downstream.apply import Applier, DownstreamSettings
from bridge_agent.downstream.jsonld import JsonLdOptions, build_jsonld
from bridge_agent.downstream.keeper import JsonLdKeeper, what_changed
from bridge_agent.metrics import Metrics
from bridge_agent.model import Change
from bridge_agent.platforms.base import FieldRef, WriteField, capabilities_of
from bridge_agent.platforms.woocommerce import WooCommerce
from bridge_agent.platforms.woocommerce.client import WooClient
from bridge_agent.platforms.woocommerce.settings import WooSettings
from bridge_agent.simulators.woocommerce import WooSimulator, serve
from bridge_agent.store import StateStore, now_ms
from bridge_agent.store.journal import Received
from bridge_agent.store.jsonld import Kept
from bridge_agent.sync.retry import Backoff
from bridge_agent.testing.waiting import until
from tests.conftest import Hub, make_config

STORE = "main"
BATCH = "POST /wp-json/wc/v3/products/batch"
META = "_bridge_jsonld"
SCHEMA = "https://schema.org/"


class _Crash(BaseException):
    """The process dies here."""


@dataclass
class Kit:
    sim: WooSimulator
    url: str
    http: httpx.AsyncClient
    control: httpx.AsyncClient
    state: StateStore
    metrics: Metrics
    adapter: WooCommerce
    options: JsonLdOptions
    opts: int = 0

    # -- the store -------------------------------------------------------------------------------

    def simple(self) -> str:
        """A simple product with a price, in stock."""
        for t in self.sim.truth():
            p = t["product"]
            if p["type"] == "simple" and p["price"] and p["stock_status"] == "instock":
                return str(p["id"])
        raise AssertionError("no simple product in stock")

    def variable(self) -> tuple[str, str]:
        for t in self.sim.truth():
            if t["product"]["type"] == "variable" and t["variations"]:
                return str(t["product"]["id"]), str(t["variations"][0]["id"])
        raise AssertionError("no variable product")

    async def change(self, item: str, **fields: Any) -> None:
        """The merchant changes the product in the store (the simulator's mutation API)."""
        answer = await self.control.patch(f"/__sim/products/{item}", json=fields)
        assert answer.status_code == 200, answer.text

    def stored(self, product: str) -> Any:
        rows = [
            m
            for t in self.sim.truth()
            if str(t["product"]["id"]) == product
            for m in t["product"]["meta_data"]
            if m["key"] == META
        ]
        assert len(rows) <= 1
        return json.loads(rows[0]["value"]) if rows else None

    async def batches(self) -> int:
        stats = (await self.control.get("/__sim/stats")).json()["requests"].get(BATCH, {})
        return sum(int(n) for n in stats.values())

    # -- the agent -------------------------------------------------------------------------------

    async def observe(self, *products: str) -> int:
        """What the webhook/poll path does: re-fetch and record in the mirror. Rows queued."""
        found = await self.adapter.fetch_products(list(products))
        return await self.state.record(
            [Change(STORE, p.id, p, "webhook", now_ms()) for p in found.found.values()]
        )

    def applier(self) -> Applier:
        return Applier(
            STORE,
            self.adapter,
            self.adapter,
            self.state,
            self.metrics,
            capabilities=capabilities_of(self.adapter),
            settings=DownstreamSettings(jsonld=self.options),
            on_outcome=lambda: None,
            on_recorded=lambda: None,
        )

    def keeper(self, state: StateStore | None = None) -> JsonLdKeeper:
        return JsonLdKeeper(
            STORE, self.adapter, state or self.state, self.metrics, options=self.options
        )

    async def optimise(self, product: str, fields: dict[str, Any]) -> str:
        """The hub's optimisation, journaled and applied."""
        self.opts += 1
        opt_id = f"opt-{self.opts}"
        await self.state.journal_received(
            STORE, [Received(opt_id, product, fields, 1)], cursor=str(self.opts)
        )
        await self.applier().apply_pending()
        return opt_id

    async def outcome(self, opt_id: str) -> tuple[str, str | None]:
        (entry,) = await self.state.journal_entries(STORE, ids=[opt_id])
        return entry.state, entry.detail

    async def events(self) -> list[str]:
        return [e.message for e in await self.state.events(200, stores=[STORE])]


@pytest.fixture
async def kit(state: StateStore) -> AsyncIterator[Kit]:
    sim = WooSimulator.generate(
        products=8,
        seed=5,
        variable_ratio=0.4,
        no_image_ratio=0,
        no_price_ratio=0,
        webhook_delay=0.01,
    )
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(sim, "127.0.0.1", 0, ready=bound.set_result, warm=False))
    url = f"http://127.0.0.1:{await asyncio.wait_for(bound, 10)}"
    async with (
        httpx.AsyncClient(timeout=10) as http,
        httpx.AsyncClient(base_url=url, timeout=10) as control,
    ):
        settings = WooSettings(
            store_id=STORE,
            base_url=url,
            consumer_key=Secret(sim.consumer_key),
            consumer_secret=Secret(sim.consumer_secret),
            currency="EUR",
        )
        adapter = WooCommerce(
            settings, WooClient(settings, http, backoff=Backoff(base=0.01, cap=0.05))
        )
        kit = Kit(
            sim,
            url,
            http,
            control,
            state,
            Metrics(),
            adapter,
            JsonLdOptions(store_url=url, currency="EUR"),
        )
        # The mirror knows the catalog, as after the first import.
        async for page in adapter.catalog():
            await state.record([Change(STORE, p.id, p, "import", 1) for p in page.products])
        yield kit
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def offer(document: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = document["offers"]
    return found


HUB = {"name": "The Better Name", "offers": {"@type": "Offer", "price": "1.00"}}


# -- the apply path ------------------------------------------------------------------------------


async def test_apply_builds_from_the_store_product_and_the_hub_text(kit: Kit) -> None:
    pid = kit.simple()
    opt = await kit.optimise(pid, {"jsonld": {"to": HUB}})

    assert (await kit.outcome(opt))[0] == "applied"
    ((mirror, _),) = (await kit.state.mirror_products(STORE, [pid])).values()
    expected = build_jsonld(mirror, hub=HUB, store_url=kit.url, currency="EUR").document
    written = kit.stored(pid)
    assert written == expected
    assert written["name"] == "The Better Name"
    # The hub's offer is ignored: the price is the store's.
    assert offer(written)["price"] == mirror.price != "1.00"
    assert offer(written)["priceCurrency"] == "EUR"
    (row,) = await kit.state.jsonld_rows(STORE)
    assert (row.product, row.state, row.document) == (pid, "kept", written)
    assert row.fingerprint == kit.options.inputs(mirror, HUB)


async def test_a_product_the_mirror_has_not_seen_is_read_from_the_store(kit: Kit) -> None:
    created = kit.sim.create_product({"name": "Brand new", "regular_price": "12.50"})
    pid = str(created["id"])
    opt = await kit.optimise(pid, {"jsonld": {"to": {"description": "Fresh words"}}})
    assert (await kit.outcome(opt))[0] == "applied"
    written = kit.stored(pid)
    assert (written["name"], written["description"]) == ("Brand new", "Fresh words")
    assert offer(written)["price"] == "12.50"


# -- the keeper ----------------------------------------------------------------------------------


async def test_a_price_change_rewrites_the_offer_once(kit: Kit) -> None:
    pid = kit.simple()
    await kit.optimise(pid, {"jsonld": {"to": HUB}})
    keeper = kit.keeper()
    assert (await keeper.refresh()).rewritten == []  # nothing changed yet
    writes = await kit.batches()

    await kit.change(pid, regular_price="99.00", sale_price="")
    queued = await kit.observe(pid)
    assert queued == 1  # the store's change ships upstream like any change
    done = await keeper.refresh()

    assert done.rewritten == [pid]
    written = kit.stored(pid)
    assert offer(written)["price"] == "99.00"
    assert written["name"] == "The Better Name"  # the hub's text is kept
    assert await kit.batches() == writes + 1
    assert f"product {pid}: price changed: structured data updated" in await kit.events()
    assert 'bridge_jsonld_rewrites_total{outcome="rewritten",store="main"} 1' in (
        kit.metrics.render()
    )
    (row,) = await kit.state.jsonld_rows(STORE)
    assert row.document == written

    # No loop: the rewrite's echo (the store bumped the product) ships nothing and writes
    # nothing, however often it comes back.
    for _ in range(3):
        assert await kit.observe(pid) == 0
        assert (await keeper.refresh()).rewritten == []
    assert await kit.batches() == writes + 1


async def test_out_of_stock_changes_the_availability(kit: Kit) -> None:
    pid = kit.simple()
    await kit.optimise(pid, {"jsonld": {"to": HUB}})
    assert offer(kit.stored(pid))["availability"] == SCHEMA + "InStock"

    # The last one sold (the store manages stock, no backorders): WooCommerce says outofstock.
    await kit.change(pid, manage_stock=True, stock_quantity=0, backorders="no")
    await kit.observe(pid)
    assert (await kit.keeper().refresh()).rewritten == [pid]

    assert offer(kit.stored(pid))["availability"] == SCHEMA + "OutOfStock"
    assert f"product {pid}: out of stock: schema.org adjusted" in await kit.events()


async def test_a_variant_price_change_rewrites_the_group(kit: Kit) -> None:
    pid, variation = kit.variable()
    await kit.optimise(pid, {"jsonld": {"to": {}}})
    assert kit.stored(pid)["@type"] == "ProductGroup"

    await kit.change(variation, regular_price="5.55", sale_price="")
    await kit.observe(pid)
    assert (await kit.keeper().refresh()).rewritten == [pid]

    prices = [v["offers"]["price"] for v in kit.stored(pid)["hasVariant"]]
    assert "5.55" in prices


async def test_a_change_outside_the_fingerprint_writes_nothing(kit: Kit) -> None:
    pid = kit.simple()
    await kit.optimise(pid, {"jsonld": {"to": HUB}})
    (before,) = await kit.state.jsonld_rows(STORE)
    writes = await kit.batches()

    # An SEO title and a stock quantity change the product, not its JSON-LD.
    await kit.change(pid, meta_data=[{"key": "_yoast_wpseo_title", "value": "Another title"}])
    await kit.change(pid, manage_stock=True, stock_quantity=7)
    assert await kit.observe(pid) == 1
    done = await kit.keeper().refresh()

    assert (done.checked, done.rewritten) == (1, [])
    assert await kit.batches() == writes
    (after,) = await kit.state.jsonld_rows(STORE)
    assert after.document == before.document
    assert after.seen_hash == await kit.state.mirror_hash(STORE, pid) != before.seen_hash
    # Compared once: the next look has nothing stale.
    assert (await kit.keeper().refresh()).checked == 0


async def test_json_ld_changed_by_someone_else_is_left_alone_and_reported(kit: Kit) -> None:
    pid = kit.simple()
    await kit.optimise(pid, {"jsonld": {"to": HUB}})
    theirs = {"@context": "https://schema.org", "@type": "Product", "name": "Theirs"}
    await kit.change(pid, meta_data=[{"key": META, "value": json.dumps(theirs)}])
    await kit.change(pid, regular_price="42.00", sale_price="")
    await kit.observe(pid)
    writes = await kit.batches()

    done = await kit.keeper().refresh()

    assert (done.rewritten, done.foreign) == ([], [pid])
    assert kit.stored(pid) == theirs
    assert await kit.batches() == writes
    (row,) = await kit.state.jsonld_rows(STORE)
    assert row.state == "foreign"
    assert any(
        m.startswith(f"product {pid}: _bridge_jsonld was changed by someone else")
        for m in await kit.events()
    )
    # Released for good: a later price change writes nothing either.
    await kit.change(pid, regular_price="43.00", sale_price="")
    await kit.observe(pid)
    assert (await kit.keeper().refresh()).checked == 0
    assert kit.stored(pid) == theirs
    # Until the hub sends new JSON-LD: the apply takes it back.
    await kit.optimise(pid, {"jsonld": {"to": HUB}})
    assert offer(kit.stored(pid))["price"] == "43.00"
    ((_, row),) = [(r.product, r) for r in await kit.state.jsonld_rows(STORE)]
    assert row.state == "kept"


async def test_a_crash_before_the_rewrite_is_caught_up_after_restart(
    kit: Kit, tmp_path: Path
) -> None:
    """The store change is recorded (webhook), then the agent dies before the keeper looks."""
    pid = kit.simple()
    await kit.optimise(pid, {"jsonld": {"to": HUB}})
    await kit.change(pid, regular_price="77.00", sale_price="")
    await kit.observe(pid)
    # The process dies here. A new life opens the same state and starts its keeper.
    async with StateStore.open(tmp_path / "state") as reopened:
        done = await kit.keeper(reopened).refresh()
    assert done.rewritten == [pid]
    assert offer(kit.stored(pid))["price"] == "77.00"


async def test_a_crash_between_the_write_and_its_record_writes_once(kit: Kit) -> None:
    pid = kit.simple()
    await kit.optimise(pid, {"jsonld": {"to": HUB}})
    await kit.change(pid, regular_price="88.00", sale_price="")
    await kit.observe(pid)
    writes = await kit.batches()

    crashing = kit.keeper()

    async def die(*args: Any, **kwargs: Any) -> list[str]:
        raise _Crash

    crashing._state = _Dying(kit.state, die)  # type: ignore[assignment]
    with pytest.raises(_Crash):
        await crashing.refresh()
    assert offer(kit.stored(pid))["price"] == "88.00"  # the write landed, its record did not
    (row,) = await kit.state.jsonld_rows(STORE)
    assert offer(row.document)["price"] != "88.00"

    done = await kit.keeper().refresh()  # after restart
    assert done.rewritten == [pid]
    assert await kit.batches() == writes + 1  # written once
    (row,) = await kit.state.jsonld_rows(STORE)
    assert offer(row.document)["price"] == "88.00"


class _Dying:
    """The state store, whose keeper record never commits (the process dies first)."""

    def __init__(self, state: StateStore, die: Any) -> None:
        self._state = state
        self.jsonld_refreshed = die

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)


async def test_the_running_keeper_is_nudged_by_recorded_changes(kit: Kit) -> None:
    pid = kit.simple()
    await kit.optimise(pid, {"jsonld": {"to": HUB}})
    keeper = JsonLdKeeper(STORE, kit.adapter, kit.state, kit.metrics, options=kit.options, beat=60)
    task = asyncio.create_task(keeper.run())
    try:
        await kit.change(pid, regular_price="61.00", sale_price="")
        await kit.observe(pid)
        keeper.nudge()  # what the store's `on_recorded` does (stores.py)
        await until(
            lambda: offer(kit.stored(pid))["price"] == "61.00", what="the JSON-LD rewritten"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_apply_meanwhile_wins_over_the_keeper_s_older_view(kit: Kit) -> None:
    """The row's version: the keeper's update of a row it read before an apply changes nothing."""
    pid = kit.simple()
    await kit.optimise(pid, {"jsonld": {"to": HUB}})
    (row,) = await kit.state.jsonld_rows(STORE)
    await kit.optimise(pid, {"jsonld": {"to": {"name": "Newer"}}})
    stale = Kept(pid, HUB, "old", {"name": "old"}, None)
    await kit.state.jsonld_refreshed(STORE, rewritten=[(stale, row.version)])
    assert await kit.state.jsonld_refreshed(STORE, released=[(pid, row.version)]) == []
    (now,) = await kit.state.jsonld_rows(STORE)
    assert (now.state, now.document["name"]) == ("kept", "Newer")


def test_what_changed_names_price_and_stock() -> None:
    old = {"offers": {"price": "1.00", "priceCurrency": "EUR", "availability": SCHEMA + "InStock"}}
    cheaper = {"offers": {**old["offers"], "price": "0.90"}}
    gone = {"offers": {**old["offers"], "availability": SCHEMA + "OutOfStock"}}
    back = {"offers": {**old["offers"], "availability": SCHEMA + "BackOrder"}}
    assert what_changed(old, cheaper) == "price changed: structured data updated"
    assert what_changed(old, gone) == "out of stock: schema.org adjusted"
    assert what_changed(gone, old) == "back in stock: schema.org adjusted"
    assert what_changed(old, back) == "stock status changed: schema.org adjusted"
    assert what_changed(old, {**old, "name": "x"}) == "product changed: structured data updated"


# -- JSON-LD in doubt ------------------------------------------------------------------------------


async def test_interrupted_json_ld_is_written_again_from_the_current_product(kit: Kit) -> None:
    """No `from`: the agent owns `_bridge_jsonld`, so an interrupted write is simply redone."""
    pid = kit.simple()
    await kit.state.journal_received(
        STORE, [Received("opt-x", pid, {"jsonld": {"to": HUB}}, 1)], cursor="x"
    )
    await kit.state.journal_applying(STORE, ["opt-x"])  # the crash came right after this
    await kit.applier().apply_pending()
    assert (await kit.outcome("opt-x"))[0] == "applied"
    assert kit.stored(pid)["name"] == "The Better Name"


# -- description addition --------------------------------------------------------------------------


async def test_description_addition_appends_once(kit: Kit) -> None:
    pid = kit.simple()
    ref = FieldRef(pid, WriteField.DESCRIPTION)
    before = (await kit.adapter.read_fields([ref]))[ref]
    care = "<p>Care: wash cold.</p>"
    spec = {"description_html": {"from": before, "append": care}}

    first = await kit.optimise(pid, spec)
    assert (await kit.outcome(first))[0] == "applied"
    assert (await kit.adapter.read_fields([ref]))[ref] == before + care
    (replaced,) = await kit.state.replaced(STORE, first)
    assert (replaced.old, replaced.new) == (before, before + care)

    # The same addition again (the hub sent it twice): the store holds from + append already.
    writes = await kit.batches()
    again = await kit.optimise(pid, spec)
    assert await kit.outcome(again) == ("applied", "description_html: applied")
    # And seen by a hub that already had the new text: nothing is added twice.
    third = await kit.optimise(pid, {"description_html": {"from": before + care, "append": care}})
    assert (await kit.outcome(third))[0] == "applied"
    assert (await kit.adapter.read_fields([ref]))[ref] == before + care
    assert await kit.batches() == writes


async def test_description_addition_keeps_the_merchant_s_edit(kit: Kit) -> None:
    pid = kit.simple()
    await kit.change(pid, description="<p>The merchant's new words.</p>")
    opt = await kit.optimise(
        pid, {"description_html": {"from": "<p>What the hub saw</p>", "append": "<p>More</p>"}}
    )
    state, detail = await kit.outcome(opt)
    assert state == "conflict" and detail is not None and "changed since the hub" in detail
    ref = FieldRef(pid, WriteField.DESCRIPTION)
    assert (await kit.adapter.read_fields([ref]))[ref] == "<p>The merchant's new words.</p>"


async def test_description_addition_to_an_empty_description(kit: Kit) -> None:
    pid = kit.simple()
    await kit.change(pid, description="")
    opt = await kit.optimise(pid, {"description_html": {"from": None, "append": "<p>New</p>"}})
    assert (await kit.outcome(opt))[0] == "applied"
    ref = FieldRef(pid, WriteField.DESCRIPTION)
    assert (await kit.adapter.read_fields([ref]))[ref] == "<p>New</p>"


@pytest.mark.parametrize(
    "spec",
    [
        {"append": "<p>x</p>"},  # no from
        {"from": "a", "append": ""},
        {"from": "a", "append": 3},
        {"from": "a", "append": "b", "to": "c"},
    ],
)
async def test_a_malformed_addition_fails_and_writes_nothing(
    kit: Kit, spec: dict[str, Any]
) -> None:
    pid = kit.simple()
    writes = await kit.batches()
    opt = await kit.optimise(pid, {"description_html": spec})
    state, detail = await kit.outcome(opt)
    assert state == "failed" and detail is not None and "malformed" in detail
    assert await kit.batches() == writes


# -- the real agent ------------------------------------------------------------------------------


async def test_the_agent_rewrites_the_json_ld_after_a_price_change(
    tmp_path: Path, hub: Hub
) -> None:
    """stores.py wiring: the agent's `jsonld:<store>` task, nudged by the store's webhook."""
    sim = WooSimulator.generate(
        products=12, seed=3, variable_ratio=0, no_price_ratio=0, webhook_delay=0.01,
        webhook_jitter=0.01,
    )  # fmt: skip
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(sim, "127.0.0.1", 0, ready=bound.set_result, warm=False))
    url = f"http://127.0.0.1:{await asyncio.wait_for(bound, 10)}"
    store = StoreSettings(
        id=STORE,
        platform="woocommerce",
        url=url,
        secrets={
            "consumer_key": Secret(sim.consumer_key),
            "consumer_secret": Secret(sim.consumer_secret),
            "webhook_secret": Secret("whsec-jsonld-1"),
        },
        options={"currency": "EUR"},
    )
    config = replace(
        make_config(tmp_path, hub.url),
        stores=(store,),
        webhooks=WebhookSettings(listen=Listen("127.0.0.1", 0)),
    )
    agent = Agent(config)
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as control:
            await asyncio.wait_for(ready.wait(), 30)
            await until(lambda: agent.webhook_port is not None, what="the webhook listener")
            delivery = f"http://127.0.0.1:{agent.webhook_port}/webhooks/woocommerce/{STORE}"
            async with httpx.AsyncClient(timeout=10) as http:
                await WooCommerce.from_settings(store, http).register_webhooks(delivery)
            pid = next(
                str(t["product"]["id"])
                for t in sim.truth()
                if t["product"]["type"] == "simple" and t["product"]["price"]
            )

            async def imported() -> bool:
                return pid in await hub.products(STORE)

            await until(imported, 30, what="the import")
            async with hub.client() as client:
                answer = await client.post(
                    f"/v1/stores/{STORE}/optimizations",
                    json=[{"product": pid, "fields": {"jsonld": {"to": HUB}}}],
                )
                assert answer.status_code == 201

            def meta() -> Any:
                rows = [m for m in sim.product(int(pid))["meta_data"] if m["key"] == META]
                return json.loads(rows[0]["value"]) if rows else None

            await until(lambda: meta() is not None, 30, what="the JSON-LD applied")
            await control.post("/__sim/webhooks/drain")
            await control.patch(
                f"/__sim/products/{pid}", json={"regular_price": "123.45", "sale_price": ""}
            )
            await until(
                lambda: offer(meta())["price"] == "123.45", 30, what="the JSON-LD rewritten"
            )
            assert meta()["name"] == "The Better Name"
            # The rewrite's own webhook comes back: nothing more is written.
            await control.post("/__sim/webhooks/drain")

            def counted() -> bool:
                rewrites = agent.metrics.value(
                    "bridge_jsonld_rewrites_total", store=STORE, outcome="rewritten"
                )
                return rewrites == 1

            await until(counted, 10, what="the rewrite counted")
            stats = (await control.get("/__sim/stats")).json()["requests"].get(BATCH, {})
            assert sum(int(n) for n in stats.values()) == 2  # the apply, then the rewrite
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
    async with StateStore.open(tmp_path / "state") as state:
        messages = [e.message for e in await state.events(200)]
    assert f"product {pid}: price changed: structured data updated" in messages


async def test_a_deeply_nested_foreign_json_ld_is_left_alone_not_a_crash(kit: Kit) -> None:
    # Anyone who can edit product meta can store a hostile `_bridge_jsonld`: the keeper compares
    # it within bounds, calls it someone else's, and goes on (it used to stop the agent).
    pid = kit.simple()
    await kit.optimise(pid, {"jsonld": {"to": HUB}})
    hostile = "[" * 100_000 + "]" * 100_000
    await kit.change(pid, meta_data=[{"key": META, "value": hostile}])
    await kit.change(pid, regular_price="42.00", sale_price="")
    await kit.observe(pid)
    done = await kit.keeper().refresh()
    assert (done.rewritten, done.foreign) == ([], [pid])


class _Crash(BaseException):
    """The process dies here."""


class _DiesAfterWrite:
    def __init__(self, writer: Any) -> None:
        self._writer = writer

    async def write_fields(self, writes: Any) -> Any:
        await self._writer.write_fields(writes)
        raise _Crash

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)


async def test_an_interrupted_json_ld_keeps_no_wrong_value_for_rollback(kit: Kit) -> None:
    pid = kit.simple()
    theirs = {"@context": "https://schema.org", "@type": "Product", "name": "Theirs"}
    await kit.change(pid, meta_data=[{"key": META, "value": json.dumps(theirs)}])
    await kit.observe(pid)
    await kit.state.journal_received(
        STORE, [Received("opt-x", pid, {"jsonld": {"to": HUB}}, 1)], cursor="x"
    )
    dying = Applier(
        STORE, kit.adapter, _DiesAfterWrite(kit.adapter), kit.state, kit.metrics,  # type: ignore[arg-type]
        capabilities=capabilities_of(kit.adapter),
        settings=DownstreamSettings(jsonld=kit.options),
        on_outcome=lambda: None, on_recorded=lambda: None,
    )  # fmt: skip
    with pytest.raises(_Crash):
        await dying.apply_pending()
    assert kit.stored(pid)["name"] == "The Better Name"  # the write landed
    await kit.applier().apply_pending()  # the next life
    assert (await kit.outcome("opt-x"))[0] == "applied"

    # What the store held before the earlier life's write is unknown now: nothing is kept,
    # rather than the agent's own document, which a rollback would then "restore".
    assert await kit.state.replaced_rows(STORE, product=pid) == []
    fields = await rollback.plan(kit.state, STORE, rollback.Selector(product=pid))
    assert fields == []
