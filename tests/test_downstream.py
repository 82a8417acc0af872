"""The downstream engine end to end: the real reference hub on loopback, real SQLite, and a
jsondir store with a small `Writer` over its files (so the echo re-fetch reads what was written)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from bridge_agent.downstream.apply import Applier, DownstreamSettings
from bridge_agent.downstream.feed import FeedReader
from bridge_agent.downstream.results import ResultPoster
from bridge_agent.hublink import HubClient
from bridge_agent.metrics import Metrics
from bridge_agent.model import Change
from bridge_agent.platforms.base import (
    Capability,
    FieldRef,
    FieldWrite,
    WriteField,
    WriteResult,
)
from bridge_agent.platforms.jsondir.adapter import JsonDir
from bridge_agent.store import StateStore
from tests.conftest import TOKEN, Hub

STORE = "shop"


class FileWriter(JsonDir):
    """jsondir that writes: fields live in the product files, compare-and-set per field."""

    capabilities: ClassVar[frozenset[Capability]] = JsonDir.capabilities | {
        Capability.WRITE_SEO_TITLE,
        Capability.WRITE_SEO_DESCRIPTION,
        Capability.WRITE_DESCRIPTION,
        Capability.WRITE_IMAGE_ALT,
    }

    def __init__(self, store_id: str, catalog_dir: Path) -> None:
        super().__init__(store_id, catalog_dir)
        self.writes: list[FieldWrite] = []
        self.crash_after_write = False

    def _doc(self, product: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads((self.catalog_dir / f"{product}.json").read_text())
        return doc

    def get(self, ref: FieldRef) -> Any:
        doc = self._doc(ref.product)
        if ref.field is WriteField.IMAGE_ALT:
            return next((i.get("alt") for i in doc["images"] if i["id"] == ref.image), None)
        return doc.get(str(ref.field))

    def put(self, ref: FieldRef, value: Any) -> None:
        doc = self._doc(ref.product)
        if ref.field is WriteField.IMAGE_ALT:
            for image in doc["images"]:
                if image["id"] == ref.image:
                    image["alt"] = value
        else:
            doc[str(ref.field)] = value
        (self.catalog_dir / f"{ref.product}.json").write_text(json.dumps(doc))

    async def read_fields(self, refs: Sequence[FieldRef]) -> Mapping[FieldRef, Any]:
        return {r: self.get(r) for r in refs}

    async def write_fields(self, writes: Sequence[FieldWrite]) -> Sequence[WriteResult]:
        out = []
        for w in writes:
            current = self.get(w.ref)
            if current != w.expected:
                out.append(WriteResult(w.ref, "conflict", current=current))
                continue
            self.put(w.ref, w.value)
            self.writes.append(w)
            out.append(WriteResult(w.ref, "applied"))
        if self.crash_after_write:
            raise _Crash  # the process dies between the write and the record of its outcome
        return out


class _Crash(BaseException):
    pass


def product(pid: str, **fields: Any) -> dict[str, Any]:
    doc = {"id": pid, "title": f"Product {pid}", "seo_title": "Old title"}
    doc.update(fields)
    return doc


class Kit:
    def __init__(self, state: StateStore, hub: Hub, writer: FileWriter, http: httpx.AsyncClient):
        self.state, self.hub, self.writer, self.http = state, hub, writer, http
        self.metrics = Metrics()
        self.client = HubClient(http, TOKEN)
        self.recorded = 0

    def engine(self, **settings: Any) -> tuple[FeedReader, Applier, ResultPoster]:
        poster = ResultPoster(STORE, lambda: self.client, self.state, self.metrics)
        applier = Applier(
            STORE,
            self.writer,
            self.writer,
            self.state,
            self.metrics,
            capabilities=self.writer.capabilities,
            settings=DownstreamSettings(**settings),
            on_outcome=poster.nudge,
            on_recorded=self._recorded,
        )
        feed = FeedReader(
            STORE, lambda: self.client, self.state, self.metrics, on_journaled=applier.nudge, wait=0
        )
        return feed, applier, poster

    def _recorded(self) -> None:
        self.recorded += 1

    async def enqueue(self, *proposals: dict[str, Any]) -> list[str]:
        async with self.hub.client() as client:
            answer = await client.post(f"/v1/stores/{STORE}/optimizations", json=list(proposals))
            assert answer.status_code == 201
            ids: list[str] = answer.json()["ids"]
            return ids

    async def at_hub(self, opt_id: str) -> dict[str, Any]:
        async with self.hub.client() as client:
            answer = await client.get(f"/v1/stores/{STORE}/optimizations/{opt_id}")
            doc: dict[str, Any] = answer.json()
            return doc

    async def cycle(self, **settings: Any) -> None:
        """One pass of each part: read the feed, apply, post the results."""
        feed, applier, poster = self.engine(**settings)
        await feed.read_once()
        await applier.apply_pending()
        while await poster.post_once() == 0.0:
            pass


@pytest.fixture
async def kit(tmp_path: Path, hub: Hub, state: StateStore) -> AsyncIterator[Kit]:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    for doc in (
        product("1", images=[{"id": "10", "src": "https://img/10.jpg", "alt": "old alt"}]),
        product("2", seo_description="Old description"),
        product("3", images=[{"id": "30", "src": "https://img/30.jpg", "alt": "a"}]),
        product("4", images=[{"id": "30", "src": "https://img/30.jpg", "alt": "a"}]),
    ):
        (catalog / f"{doc['id']}.json").write_text(json.dumps(doc))
    writer = FileWriter(STORE, catalog)
    # The mirror knows the catalog (as after an import), so shared attachments can be found.
    found = await writer.fetch_products(["1", "2", "3", "4"])
    await state.record([Change(STORE, p.id, p, "import", 1) for p in found.found.values()])
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as http:
        yield Kit(state, hub, writer, http)


async def test_feed_journal_apply_result_at_hub(kit: Kit) -> None:
    (opt,) = await kit.enqueue(
        {
            "product": "1",
            "fields": {
                "seo_title": {"from": "Old title", "to": "New title"},
                "image_alt": {"10": {"from": "old alt", "to": "A red hoodie"}},
            },
        }
    )
    await kit.cycle()
    assert kit.writer.get(FieldRef("1", WriteField.SEO_TITLE)) == "New title"
    assert kit.writer.get(FieldRef("1", WriteField.IMAGE_ALT, "10")) == "A red hoodie"
    at_hub = await kit.at_hub(opt)
    assert at_hub["status"] == "applied"
    fetched = await kit.writer.fetch_product("1")
    assert fetched is not None
    assert at_hub["hash"] == await kit.state.mirror_hash(STORE, "1")
    (entry,) = await kit.state.journal_entries(STORE, ids=[opt])
    assert entry.report == "reported"
    replaced = await kit.state.replaced(STORE, opt)
    assert {(r.field, r.old, r.new) for r in replaced} == {
        ("seo_title", "Old title", "New title"),
        ("image_alt", "old alt", "A red hoodie"),
    }
    assert await kit.state.cursor(STORE, "downstream") is not None
    # A second read of the feed journals nothing twice and writes nothing again.
    writes = len(kit.writer.writes)
    await kit.cycle()
    assert len(kit.writer.writes) == writes


async def test_conflict_per_field_merchant_wins(kit: Kit) -> None:
    (opt,) = await kit.enqueue(
        {
            "product": "2",
            "fields": {
                "seo_title": {"from": "Old title", "to": "Hub title"},
                "seo_description": {"from": "Old description", "to": "Hub description"},
            },
        }
    )
    kit.writer.put(FieldRef("2", WriteField.SEO_TITLE), "Merchant title")  # edited meanwhile
    await kit.cycle()
    assert kit.writer.get(FieldRef("2", WriteField.SEO_TITLE)) == "Merchant title"
    assert kit.writer.get(FieldRef("2", WriteField.SEO_DESCRIPTION)) == "Hub description"
    at_hub = await kit.at_hub(opt)
    assert at_hub["status"] == "conflict"
    assert "seo_title: conflict" in at_hub["detail"]
    assert "seo_description: applied" in at_hub["detail"]


async def test_shared_attachment_is_not_written(kit: Kit) -> None:
    (opt,) = await kit.enqueue(
        {"product": "3", "fields": {"image_alt": {"30": {"from": "a", "to": "b"}}}}
    )
    await kit.cycle()
    assert kit.writer.writes == []
    at_hub = await kit.at_hub(opt)
    assert at_hub["status"] == "conflict"
    assert "attachment shared with 1 other products" in at_hub["detail"]


async def test_crash_after_applying_no_second_write(kit: Kit) -> None:
    (opt,) = await kit.enqueue(
        {"product": "2", "fields": {"seo_title": {"from": "Old title", "to": "T2"}}}
    )
    feed, applier, _ = kit.engine()
    await feed.read_once()
    kit.writer.crash_after_write = True
    with pytest.raises(_Crash):
        await applier.apply_pending()
    kit.writer.crash_after_write = False
    assert len(kit.writer.writes) == 1
    (entry,) = await kit.state.journal_entries(STORE, ids=[opt])
    assert entry.state == "applying"
    await kit.cycle()  # a new life of the engine
    assert len(kit.writer.writes) == 1  # never written twice
    at_hub = await kit.at_hub(opt)
    assert at_hub["status"] == "applied"
    assert at_hub["hash"] == await kit.state.mirror_hash(STORE, "2")


async def test_crash_before_the_write_writes_once_after_restart(kit: Kit) -> None:
    (opt,) = await kit.enqueue(
        {"product": "2", "fields": {"seo_title": {"from": "Old title", "to": "T2"}}}
    )
    feed, _, _ = kit.engine()
    await feed.read_once()
    # The process died after marking the optimisation `applying`, before its write was sent.
    await kit.state.journal_applying(STORE, [opt])
    await kit.cycle()
    assert [w.value for w in kit.writer.writes] == ["T2"]  # written once, not lost
    assert (await kit.at_hub(opt))["status"] == "applied"


async def test_results_wait_out_a_hub_outage(kit: Kit) -> None:
    (opt,) = await kit.enqueue(
        {"product": "1", "fields": {"seo_title": {"from": "Old title", "to": "X"}}}
    )
    feed, applier, poster = kit.engine()
    await feed.read_once()
    await kit.hub.stop()
    await applier.apply_pending()
    delay = await poster.post_once()
    assert delay is not None and poster.failures == 1
    (entry,) = await kit.state.journal_entries(STORE, ids=[opt])
    assert entry.state == "applied" and entry.report == "unreported"
    await kit.hub.start()
    # A new poster (a restart): the result is in the journal, not in memory.
    _, _, poster = kit.engine()
    assert await poster.post_once() == 0.0
    assert (await kit.at_hub(opt))["status"] == "applied"


async def test_echo_ships_the_write_once_then_nothing(kit: Kit) -> None:
    """Guarantee 6: the re-read after the write is recorded (the hub keeps no product copy from
    a result, so it ships once); the webhook/poll re-fetch the write causes ships nothing."""
    await kit.enqueue({"product": "1", "fields": {"seo_title": {"from": "Old title", "to": "Y"}}})
    await kit.cycle()
    assert kit.recorded == 1  # the written state was recorded as a change (shipped once)
    mirrored = await kit.state.mirror_hash(STORE, "1")
    # The echo: the store's webhook/poll re-fetches the product and records it.
    echo = await kit.writer.fetch_product("1")
    assert echo is not None
    queued = await kit.state.record([Change(STORE, "1", echo, "webhook", 2)])
    assert queued == 0
    assert await kit.state.mirror_hash(STORE, "1") == mirrored


async def test_review_mode_holds_then_approve_applies(kit: Kit) -> None:
    (opt,) = await kit.enqueue(
        {"product": "1", "fields": {"seo_title": {"from": "Old title", "to": "Reviewed"}}}
    )
    await kit.cycle(apply_mode="review")
    assert kit.writer.writes == []
    assert (await kit.at_hub(opt))["status"] == "pending_review"
    assert await kit.state.approve(STORE, [opt]) == [opt]
    await kit.cycle(apply_mode="review")
    assert kit.writer.get(FieldRef("1", WriteField.SEO_TITLE)) == "Reviewed"
    assert (await kit.at_hub(opt))["status"] == "applied"


async def test_review_reject_reports_to_hub(kit: Kit) -> None:
    (opt,) = await kit.enqueue(
        {"product": "1", "fields": {"seo_title": {"from": "Old title", "to": "Nope"}}}
    )
    await kit.cycle(apply_mode="review")
    assert await kit.state.reject(STORE, [opt]) == [opt]
    await kit.cycle(apply_mode="review")
    assert kit.writer.writes == []
    assert (await kit.at_hub(opt))["status"] == "rejected_by_reviewer"
