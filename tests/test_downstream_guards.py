"""Guards of the apply path against what a hub or a store may do to it (review of issue 12).

Each test is a class of failure: an optimisation without the hub's `from` (guarantee 5), a value
that is not text, a store that cannot be read for a moment, a crash after a write landed (the
rollback data and the hash told to the hub), a write the store alters on save, and hostile values
that must never stop the applier's root task.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest

from bridge_agent.downstream.apply import Applier, DownstreamSettings
from bridge_agent.errors import PlatformUnavailable
from bridge_agent.metrics import Metrics
from bridge_agent.platforms.base import (
    FieldRef,
    FieldWrite,
    WriteField,
    WriteResult,
    capabilities_of,
)
from bridge_agent.store import Received, StateStore
from bridge_agent.sync.hashing import content_hash
from tests import test_downstream, test_woocommerce_writer
from tests.test_downstream import STORE, FileWriter, Kit, _Crash
from tests.test_woocommerce_writer import YOAST, Shop, batches

# The fixtures of the suites these guards extend: a jsondir writer with the reference hub, and
# the WooCommerce simulator.
kit = test_downstream.kit
shop = test_woocommerce_writer.shop

DEEP = "[" * 100_000


async def test_missing_from_does_not_overwrite_merchant_title(kit: Kit) -> None:
    # The merchant wrote a title the hub never saw; the hub's proposal carries no `from`.
    kit.writer.put(FieldRef("2", WriteField.SEO_TITLE), "Merchant's own title")
    (opt,) = await kit.enqueue({"product": "2", "fields": {"seo_title": {"to": "Hub title"}}})
    await kit.cycle()
    assert kit.writer.get(FieldRef("2", WriteField.SEO_TITLE)) == "Merchant's own title"
    assert (await kit.at_hub(opt))["status"] != "applied"


async def test_a_non_text_title_is_refused_and_nothing_is_written(shop: Shop) -> None:
    product = shop.new_product(meta=YOAST)
    ref = FieldRef(str(product), WriteField.SEO_TITLE)
    (result,) = await shop.adapter().write_fields([FieldWrite(ref, "Old title", {"a": 1})])
    assert shop.meta(product, "_yoast_wpseo_title") == "Old title", "merchant's title replaced"
    assert result.outcome == "failed"
    assert batches(shop) == []


class BusyStore(FileWriter):
    busy = True

    async def write_fields(self, writes: Sequence[FieldWrite]) -> Sequence[WriteResult]:
        if self.busy:  # the writer's own pre-read was refused: nothing was sent
            raise PlatformUnavailable("429 Too Many Requests", status=429, retry_after=120)
        return await super().write_fields(writes)


async def test_a_refused_pre_read_is_retried_not_failed(kit: Kit) -> None:
    store = BusyStore(STORE, kit.writer.catalog_dir)
    kit.writer = store
    (opt,) = await kit.enqueue(
        {"product": "2", "fields": {"seo_title": {"from": "Old title", "to": "New"}}}
    )
    with pytest.raises(PlatformUnavailable):  # the root task backs off (Applier.run)
        await kit.cycle()
    (entry,) = await kit.state.journal_entries(STORE, ids=[opt])
    assert entry.state == "applying"  # not settled: decided from what the store holds next
    assert (await kit.at_hub(opt))["status"] == "queued"
    store.busy = False
    await kit.cycle()  # the store answers again
    assert store.get(FieldRef("2", WriteField.SEO_TITLE)) == "New"
    assert (await kit.at_hub(opt))["status"] == "applied"


async def test_replaced_keeps_old_value_after_crash(kit: Kit) -> None:
    (opt,) = await kit.enqueue(
        {"product": "2", "fields": {"seo_title": {"from": "Old title", "to": "T2"}}}
    )
    feed, applier, _ = kit.engine()
    await feed.read_once()
    kit.writer.crash_after_write = True
    with pytest.raises(_Crash):  # killed between the write and the record of its outcome
        await applier.apply_pending()
    kit.writer.crash_after_write = False
    await kit.cycle()  # restart: settled as applied from what the store holds
    assert (await kit.at_hub(opt))["status"] == "applied"
    (replaced,) = await kit.state.replaced(STORE, opt)
    # What a rollback would restore: must be the merchant's "Old title", not "T2".
    assert (replaced.old, replaced.new) == ("Old title", "T2")
    assert kit.writer.get(FieldRef("2", WriteField.SEO_TITLE)) == "T2"


async def test_result_hash_after_crash_is_the_product_after_the_write(kit: Kit) -> None:
    (opt,) = await kit.enqueue(
        {"product": "2", "fields": {"seo_title": {"from": "Old title", "to": "T2"}}}
    )
    feed, applier, _ = kit.engine()
    await feed.read_once()
    kit.writer.crash_after_write = True
    with pytest.raises(_Crash):
        await applier.apply_pending()
    kit.writer.crash_after_write = False
    await kit.cycle()
    now = await kit.writer.fetch_product("2")
    assert now is not None
    # The hub is told the hash of the product after the write, and the mirror knows it (echo
    # guard): today both still hold the pre-write product (nothing is re-fetched at restart).
    assert (await kit.at_hub(opt))["hash"] == content_hash(now.to_dict())


class SanitizingStore(FileWriter):
    def put(self, ref: FieldRef, value: Any) -> None:
        # Like wc_clean()/kses: tags stripped on save.
        super().put(ref, re.sub(r"<[^>]*>", "", value) if isinstance(value, str) else value)


async def test_overwritten_value_is_kept_for_rollback_even_if_verify_fails(kit: Kit) -> None:
    store = SanitizingStore(STORE, kit.writer.catalog_dir)
    kit.writer = store
    (opt,) = await kit.enqueue(
        {"product": "2", "fields": {"seo_title": {"from": "Old title", "to": "New <b>title</b>"}}}
    )
    await kit.cycle()
    # The merchant's value was overwritten by the agent's write ...
    assert store.get(FieldRef("2", WriteField.SEO_TITLE)) == "New title"
    assert (await kit.at_hub(opt))["status"] == "failed"
    # ... so what the agent replaced must be kept, or a rollback cannot restore it.
    replaced = await kit.state.replaced(STORE, opt)
    assert [(r.field, r.old) for r in replaced] == [("seo_title", "Old title")]


async def test_hostile_values_never_kill_the_applier(shop: Shop, state: StateStore) -> None:
    adapter = shop.adapter()
    product = shop.new_product(description="<p>Old</p>")

    def applier() -> Applier:
        return Applier(
            "main", adapter, adapter, state, Metrics(),
            capabilities=capabilities_of(adapter), settings=DownstreamSettings(),
            on_outcome=lambda: None, on_recorded=lambda: None,
        )  # fmt: skip

    one = Received("one", str(product), {"description_html": {"from": "<p>Old</p>", "to": DEEP}}, 1)
    await state.journal_received("main", [one], "1")
    await applier().apply_pending()
    assert shop.product(product)["description"] == DEEP
    two = Received("two", str(product), {"description_html": {"from": DEEP, "to": {"a": 1}}}, 2)
    await state.journal_received("main", [two], "2")
    await applier().apply_pending()  # RecursionError today: root task dies, agent stops
    await applier().apply_pending()  # and after a restart
    (entry,) = await state.journal_entries("main", ids=["two"])
    assert entry.state in ("failed", "conflict")


class Buggy(FileWriter):
    """A writer with a bug that only one product's values trigger."""

    async def read_fields(self, refs: Sequence[FieldRef]) -> Any:
        if any(r.product == "2" for r in refs):
            raise TypeError("unhashable type: 'dict'")
        return await super().read_fields(refs)


async def test_an_unforeseen_failure_fails_that_optimization_only(kit: Kit) -> None:
    store = Buggy(STORE, kit.writer.catalog_dir)
    kit.writer = store
    one, two = await kit.enqueue(
        {"product": "1", "fields": {"seo_title": {"from": "Old title", "to": "One"}}},
        {"product": "2", "fields": {"seo_title": {"from": "Old title", "to": "Two"}}},
    )
    await kit.cycle()  # no exception: the round is retried one by one
    assert (await kit.at_hub(one))["status"] == "applied"
    failed = await kit.at_hub(two)
    assert failed["status"] == "failed"
    assert "could not be applied: TypeError" in failed["detail"]
    errors = [e for e in await kit.state.events(levels=["error"]) if e.product == "2"]
    assert len(errors) == 1
    await kit.cycle()  # nothing left to act on: settled once, never again
    assert len(store.writes) == 1
