"""Guarantee 7 for hints: a product the store refuses for good is given up, loudly, not retried
forever; one the store cannot serve right now keeps its hint.

Every hint path is covered (webhook hints, spool files, reconciliation suspects), against the
`jsondir` platform wrapped to answer chosen products with a store error: a permanent one (an HTTP
400, as the shared HTTP layer classifies it) or a transient one (503).
"""

from __future__ import annotations

import sqlite3
from dataclasses import asdict
from pathlib import Path

import pytest

from bridge_agent.cli import render_event
from bridge_agent.errors import PlatformError, PlatformUnavailable
from bridge_agent.health import Health
from bridge_agent.metrics import Metrics
from bridge_agent.model import Product
from bridge_agent.platforms.jsondir import JsonDir
from bridge_agent.sources import StoreContext
from bridge_agent.sources.hints import HintWorker
from bridge_agent.sources.reconcile import Reconciler
from bridge_agent.sources.refetch import MAX_PERMANENT_TRIES
from bridge_agent.sources.spool import SpoolWatcher
from bridge_agent.store import StateStore
from bridge_agent.sync.retry import Backoff
from bridge_agent.testing.catalog import make_product, spool_event, write_product, write_spool

REFUSAL = "woocommerce_rest_invalid_product: Invalid product data"
NO_WAIT = Backoff(base=0.0, cap=0.0)  # a deferred hint is due again at once: no sleeping


class Refused(PlatformError):
    """A permanent refusal of one product, as the shared HTTP layer raises it for a 400."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status

    @property
    def permanent(self) -> bool:
        return True


class Refusing(JsonDir):
    """jsondir that answers chosen products with an HTTP status, and counts fetches by id."""

    def __init__(self, catalog: Path) -> None:
        super().__init__("main", catalog)
        self.refuse: dict[str, int] = {}  # product id -> status to answer
        self.fetches: dict[str, int] = {}

    async def fetch_product(self, product_id: str) -> Product | None:
        self.fetches[product_id] = self.fetches.get(product_id, 0) + 1
        status = self.refuse.get(product_id)
        if status == 503:
            raise PlatformUnavailable(f"GET /products/{product_id}: store answered 503")
        if status is not None:
            raise Refused(f"GET /products/{product_id}: {REFUSAL}", status=status)
        return await super().fetch_product(product_id)


@pytest.fixture
def store(tmp_path: Path) -> Refusing:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    for i in (1, 2, 3):
        write_product(catalog, make_product(i))
    return Refusing(catalog)


def context(state: StateStore, platform: Refusing) -> StoreContext:
    return StoreContext("main", platform, state, lambda: None, Metrics(), Health("store:main"))


def hint_row(state: StateStore, product_id: str) -> tuple[int, str | None] | None:
    """(attempts, last_error) of a hint, read as an operator would from the file."""
    with sqlite3.connect(state.path) as db:
        row = db.execute(
            "SELECT attempts, last_error FROM hints WHERE store='main' AND id=?", (product_id,)
        ).fetchone()
    return None if row is None else (row[0], row[1])


async def test_a_refused_hint_is_tried_a_bounded_number_of_times_then_dropped_loudly(
    state: StateStore, store: Refusing
) -> None:
    store.refuse = {"1": 400, "2": 503}
    worker = HintWorker(context(state, store), backoff=NO_WAIT)
    await state.add_hints("main", ["1", "2", "3"], "webhook")

    for _ in range(MAX_PERMANENT_TRIES + 2):  # more rounds than the bound: nothing loops
        await worker.process_once()

    # The refused product was asked exactly the bounded number of times, then given up.
    assert store.fetches["1"] == MAX_PERMANENT_TRIES
    assert hint_row(state, "1") is None
    assert await state.mirror_hash("main", "1") is None  # nothing recorded for it
    [event] = [e for e in await state.events(levels=["error"]) if e.product == "1"]
    assert (event.store, event.status) == ("main", 400)
    assert REFUSAL in event.message
    line = render_event(asdict(event))  # as `bridge-agent log` shows it
    assert "main/1 [400]" in line and REFUSAL in line
    dropped = worker.ctx.metrics.value("bridge_hints_dropped_total", store="main", source="webhook")
    assert dropped == 1

    # The product the store cannot serve right now keeps its hint, every try counted.
    assert store.fetches["2"] == MAX_PERMANENT_TRIES + 2
    row = hint_row(state, "2")
    assert row is not None and row[0] == MAX_PERMANENT_TRIES + 2 and "503" in str(row[1])
    assert not [e for e in await state.events() if e.product == "2"]
    assert await state.mirror_hash("main", "3") is not None  # the others went on

    # A later change of the refused product, once the store serves it, is recorded as usual.
    store.refuse = {}
    write_product(store.catalog_dir, make_product(1, revision=1))
    await state.add_hints("main", ["1"], "webhook")
    await worker.process_once()
    assert await state.mirror_hash("main", "1") is not None
    assert hint_row(state, "1") is None
    assert hint_row(state, "2") is None  # the store is back for it too


async def test_failures_during_an_outage_do_not_count_toward_giving_up(
    state: StateStore, store: Refusing
) -> None:
    # The store was down for a while, then answers one 400 (a WAF rule being edited): only the
    # permanent answers count, so the hint is kept until the bound of them is reached.
    worker = HintWorker(context(state, store), backoff=NO_WAIT)
    await state.add_hints("main", ["1"], "webhook")
    store.refuse = {"1": 503}
    for _ in range(MAX_PERMANENT_TRIES + 1):
        await worker.process_once()
    store.refuse = {"1": 400}
    for _ in range(MAX_PERMANENT_TRIES - 1):
        await worker.process_once()
    row = hint_row(state, "1")
    assert row is not None and row[0] == 2 * MAX_PERMANENT_TRIES  # every failure backs off
    assert not [e for e in await state.events() if e.product == "1"]
    await worker.process_once()  # the last permanent answer of the bound
    assert hint_row(state, "1") is None
    [event] = [e for e in await state.events() if e.product == "1"]
    assert f"answered 400 to {MAX_PERMANENT_TRIES} re-fetches" in event.message


async def test_a_refused_hint_still_refused_after_a_new_change_is_reported_again(
    state: StateStore, store: Refusing
) -> None:
    store.refuse = {"1": 422}
    worker = HintWorker(context(state, store), backoff=NO_WAIT)
    await state.add_hints("main", ["1"], "webhook")
    for _ in range(MAX_PERMANENT_TRIES):
        await worker.process_once()
    await state.add_hints("main", ["1"], "webhook")  # the merchant edits it again
    for _ in range(MAX_PERMANENT_TRIES):
        await worker.process_once()
    assert hint_row(state, "1") is None
    refused = [e for e in await state.events() if e.product == "1"]
    assert [e.status for e in refused] == [422, 422]
    assert store.fetches["1"] == 2 * MAX_PERMANENT_TRIES


async def test_a_refused_spool_hint_is_given_up_and_its_file_consumed(
    tmp_path: Path, state: StateStore, store: Refusing
) -> None:
    store.refuse = {"1": 400, "2": 503}
    spool = SpoolWatcher(context(state, store), spool_dir=tmp_path / "spool")
    write_spool(tmp_path / "spool", [spool_event("product.updated", "1")])
    write_spool(tmp_path / "spool", [spool_event("product.updated", "2")])
    (tmp_path / "spool" / "rejected").mkdir()
    for _ in range(MAX_PERMANENT_TRIES + 1):
        await spool.process_once()
    assert store.fetches["1"] == MAX_PERMANENT_TRIES
    left = list((tmp_path / "spool" / "incoming").iterdir())
    assert len(left) == 1  # the 503 product's file waits; the refused one's is consumed
    [event] = [e for e in await state.events(levels=["error"]) if e.product == "1"]
    assert event.status == 400 and REFUSAL in event.message
    assert spool.ctx.metrics.value("bridge_hints_dropped_total", store="main", source="spool") == 1


async def test_a_refused_reconciliation_suspect_stops_failing_the_pass(
    state: StateStore, store: Refusing
) -> None:
    store.refuse = {"3": 400}  # listed by the store, unknown to the mirror: a suspect
    reconciler = Reconciler(context(state, store), interval=3600)
    for _ in range(MAX_PERMANENT_TRIES - 1):
        with pytest.raises(PlatformError, match="could not be re-fetched"):
            await reconciler.reconcile_once()
    counts = await reconciler.reconcile_once()  # given up: the pass completes
    assert counts == {"deleted": 0, "recorded": 0, "queued": 0}
    assert await state.mirror_ids("main") == {"1", "2"}  # recorded by the failed passes
    assert await state.cursor("main", "reconciled_at") is not None
    [event] = [e for e in await state.events(levels=["error"]) if e.product == "3"]
    assert event.status == 400
    assert store.fetches["3"] == MAX_PERMANENT_TRIES
