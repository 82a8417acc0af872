"""The downstream feed and result path against hubs that misbehave: hostile or malformed
optimisations, a hub that repeats its page, a proxy that refuses large posts (413) or answers
200 with an HTML page, and the downstream task's error in `status`.

The feed and the poster talk through the real `HubClient` to a loopback aiohttp hub that answers
crafted msgpack; the journal is a real state store. The rules under test (feed.py, results.py):
hub content never ends the feed's task nor stops it on one item, a malformed optimisation with an
id is reported `failed` ("malformed: ..."), the feed never polls in a hot loop, and a result is
marked reported only after the hub's v1 answer, never dropped.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge_agent import cli, wire
from bridge_agent.agent import Agent
from bridge_agent.config import Secret, StoreSettings
from bridge_agent.downstream.engine import Downstream
from bridge_agent.downstream.feed import REPEAT_PAUSE, FeedReader
from bridge_agent.downstream.results import SHORT_DETAIL_CHARS, ResultPoster
from bridge_agent.health import Health
from bridge_agent.hublink import HubClient
from bridge_agent.metrics import Metrics
from bridge_agent.server import Live, StoreView, status_document
from bridge_agent.shipper import HubLink
from bridge_agent.simulators.woocommerce import WooSimulator, serve
from bridge_agent.store import Outcome, Received, StateStore
from bridge_agent.store.journal import STREAM
from bridge_agent.sync.retry import Backoff
from bridge_agent.testing.waiting import until
from tests.conftest import TOKEN, Hub, make_config
from tests.test_downstream import FileWriter

STORE = "shop"
GOOD = {"id": "good", "product": "7", "created_at": 1,
        "fields": {"seo_title": {"from": "a", "to": "b"}}}  # fmt: skip


@dataclass
class FakeHub:
    """A hub on loopback whose feed answers `page(after)` (msgpack bytes) and whose results
    route takes bodies up to `limit` bytes (413 past it) and answers v1, or HTML when `html`."""

    page: Callable[[str], bytes] = lambda after: wire.packb({"v": 1, "cursor": after or "0",
                                                            "optimizations": []})  # fmt: skip
    feed_requests: int = 0
    limit: int = 64 * 1024 * 1024
    html: bool = False
    posts: list[int] = field(default_factory=list)  # results per post, refused ones too
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # accepted, by id

    async def feed(self, request: web.Request) -> web.Response:
        self.feed_requests += 1
        return web.Response(
            body=self.page(request.query.get("after", "")), content_type=wire.CONTENT_TYPE
        )

    async def post_results(self, request: web.Request) -> web.Response:
        body = await request.read()
        if len(body) > self.limit:
            self.posts.append(-1)
            return web.Response(status=413, text="<html><title>413 Request Entity Too Large")
        posted = wire.decode_optimization_results(body)
        self.posts.append(len(posted))
        if self.html:
            return web.Response(text="<html><body>Welcome</body></html>", content_type="text/html")
        self.results.update({r.id: {"status": r.status, "detail": r.detail} for r in posted})
        ack = {"v": 1, "accepted": len(posted), "unknown": 0}
        return web.Response(body=wire.packb(ack), content_type=wire.CONTENT_TYPE)


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeHub, HubClient]]:
    hub = FakeHub()
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get(f"/v1/stores/{STORE}/optimizations", hub.feed)
    app.router.add_post(f"/v1/stores/{STORE}/optimizations/results", hub.post_results)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        yield hub, HubClient(http, "t" * 32)
    await runner.cleanup()


def reader(client: Any, state: StateStore, **options: Any) -> FeedReader:
    return FeedReader(
        STORE, lambda: client, state, Metrics(), on_journaled=lambda: None, wait=0,
        backoff=Backoff(base=0.01, cap=0.01), **options,
    )  # fmt: skip


def poster(client: HubClient, state: StateStore) -> ResultPoster:
    return ResultPoster(STORE, lambda: client, state, Metrics(), backoff=Backoff(0.01, 0.01))


def page(*items: Any, cursor: str = "2") -> bytes:
    return wire.packb({"v": 1, "cursor": cursor, "optimizations": list(items)})


def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = {"x": value}
    return value


def evil(**fields: Any) -> dict[str, Any]:
    return {"id": "evil", "product": "8", "created_at": 1, "fields": fields}


# Each a valid msgpack item the journal could not store as it is (or a hub's plain mistake).
HOSTILE: dict[str, dict[str, Any]] = {
    "bin value": evil(seo_title={"from": b"\x00", "to": "x"}),
    "ext value": evil(seo_title={"from": msgpack.ExtType(5, b"x"), "to": "x"}),
    "created_at past int64": {**evil(), "created_at": 2**64 - 1},
    "int past int64 in fields": evil(seo_title={"from": "a", "to": 2**63}),
    "NaN in fields": evil(seo_title={"from": "a", "to": math.nan}),
    "int map key": evil(seo_title={1: "a"}),
    "too deep": evil(seo_title=nested(40)),
    "huge string": evil(seo_title={"from": "a", "to": "x" * (wire.FEED_TEXT_CHARS + 1)}),
    "product not a string": {**evil(), "product": 8},
    "fields not a map": {**evil(), "fields": ["seo_title"]},
    "control character in product": {**evil(), "product": "8\x00"},
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_a_hostile_optimisation_fails_alone_and_reaches_the_hub_as_failed(
    fake: tuple[FakeHub, HubClient], state: StateStore, case: str
) -> None:
    hub, client = fake
    hub.page = lambda after: page(GOOD, HOSTILE[case])
    feed = reader(client, state)
    assert await feed.read_once() == 0.0  # no crash, no failure: the feed goes on at once
    assert feed.failures == 0 and feed.last_error is None
    entries = {e.id: e for e in await state.journal_entries(STORE)}
    assert entries["good"].state == "received"
    assert entries["good"].fields == GOOD["fields"]
    assert entries["evil"].state == "failed"
    assert (entries["evil"].detail or "").startswith("malformed: optimization.")
    assert await state.cursor(STORE, STREAM) == "2"

    # The hub hears of it: the refusal is a result like any other.
    sender = poster(client, state)
    while await sender.post_once() is not None:
        pass
    assert hub.results["evil"]["status"] == "failed"
    assert hub.results["evil"]["detail"].startswith("malformed: ")
    messages = [e.message for e in await state.events(10)]
    assert any(m.startswith("optimization evil refused: malformed: ") for m in messages)


# Values a hub can put in an optimisation: msgpack's types, JSON's and beyond.
HUB_VALUES = st.recursive(
    st.none() | st.booleans() | st.text(max_size=8) | st.binary(max_size=4)
    | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats()
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4)),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=4) | st.integers(0, 9), inner, max_size=3),
    max_leaves=12,
)  # fmt: skip
HUB_ITEMS = st.fixed_dictionaries(
    {},
    optional={"id": HUB_VALUES, "product": HUB_VALUES, "fields": HUB_VALUES,
              "created_at": HUB_VALUES},
)  # fmt: skip


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(items=st.lists(st.one_of(HUB_ITEMS, st.just(GOOD)), max_size=4))
def test_what_decode_feed_keeps_is_storable_and_nothing_is_lost(items: list[Any]) -> None:
    """The class behind the crashes: whatever msgpack carries, an item is either an optimisation
    that JSON text and SQLite take as it is, or refused (with an id only when it is usable)."""
    feed = wire.decode_feed(page(*items))
    assert len(feed.optimizations) + len(feed.refused) == len(items)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (id TEXT, product TEXT, fields TEXT, created_at INTEGER)")
    for o in feed.optimizations:
        text = json.dumps(o.fields, allow_nan=False)
        assert json.loads(text) == o.fields
        db.execute("INSERT INTO t VALUES (?, ?, ?, ?)", (o.id, o.product, text, o.created_at))
    for r in feed.refused:
        db.execute("INSERT INTO t VALUES (?, ?, '{}', 0)", (r.id, r.product))
        assert r.reason.startswith("optimization")


async def test_invalid_utf8_in_one_item_spoils_only_that_item(
    fake: tuple[FakeHub, HubClient], state: StateStore
) -> None:
    hub, client = fake
    body = page(GOOD, evil(seo_title={"from": "a", "to": "SPOT"}))
    assert body.count(b"\xa4SPOT") == 1
    hub.page = lambda after: body.replace(b"\xa4SPOT", b"\xa4\xff\xfe\xc3\x28")
    assert await reader(client, state).read_once() == 0.0
    entries = {e.id: e for e in await state.journal_entries(STORE)}
    assert (entries["good"].state, entries["evil"].state) == ("received", "failed")
    assert "not valid UTF-8" in (entries["evil"].detail or "")


async def test_an_item_without_a_usable_id_is_logged_and_skipped(
    fake: tuple[FakeHub, HubClient], state: StateStore
) -> None:
    hub, client = fake
    nameless = {"product": "8", "created_at": 1, "fields": {}}
    hub.page = lambda after: page(GOOD, nameless, {**nameless, "id": b"bytes"})
    assert await reader(client, state).read_once() == 0.0
    assert [e.id for e in await state.journal_entries(STORE)] == ["good"]
    assert await state.cursor(STORE, STREAM) == "2"
    skipped = [e for e in await state.events(10) if "without a usable id" in e.message]
    assert len(skipped) == 2 and {e.level for e in skipped} == {"warning"}


async def test_a_page_read_again_changes_nothing_already_journaled(
    fake: tuple[FakeHub, HubClient], state: StateStore
) -> None:
    """A refusal never overwrites the journal: an id journaled before keeps its state."""
    hub, client = fake
    hub.page = lambda after: page(GOOD, cursor="1")
    feed = reader(client, state)
    await feed.read_once()
    hub.page = lambda after: page({**GOOD, "product": 7}, cursor="2")  # now malformed
    await feed.read_once()
    (entry,) = await state.journal_entries(STORE)
    assert (entry.id, entry.state, entry.product) == ("good", "received", "7")
    assert await state.cursor(STORE, STREAM) == "2"


@pytest.mark.parametrize(
    "envelope",
    [
        {"v": 2, "cursor": "2", "optimizations": [GOOD]},
        {"v": 1, "optimizations": [GOOD]},
        {"v": 1, "cursor": "2", "optimizations": {"0": GOOD}},
        {"v": 1, "cursor": "2\n", "optimizations": [GOOD]},
    ],
)
async def test_an_unusable_envelope_is_a_hub_failure(
    fake: tuple[FakeHub, HubClient], state: StateStore, envelope: dict[str, Any]
) -> None:
    hub, client = fake
    hub.page = lambda after: wire.packb(envelope)
    feed = reader(client, state)
    assert await feed.read_once() >= 0.0
    assert feed.failures == 1
    assert "not protocol v1" in (feed.last_error or "")
    assert await state.journal_entries(STORE) == []
    assert await state.cursor(STORE, STREAM) is None


@dataclass
class LinkOf:
    """A HubLink serving a page as given: content no wire decoder would let through, to check
    the feed's last line of defence (an item the journal cannot store fails alone)."""

    feed: wire.OptimizationFeed

    async def optimizations(
        self, store: str, after: str, *, wait: float = 0.0
    ) -> wire.OptimizationFeed:
        return self.feed

    async def post_optimization_results(
        self, store: str, results: Sequence[wire.OptimizationResult]
    ) -> None:
        raise AssertionError("not used")


async def test_an_item_the_journal_cannot_store_fails_alone(state: StateStore) -> None:
    good = wire.Optimization("good", "7", {"seo_title": {"from": "a", "to": "b"}}, 1)
    items = (
        good,
        wire.Optimization("bin", "8", {"seo_title": {"from": b"\x00"}}, 1),
        wire.Optimization("huge", "9", {}, 2**64 - 1),
        replace(good, id="later"),
    )
    refused: list[str] = []
    link = LinkOf(wire.OptimizationFeed("5", items))
    feed = reader(link, state, on_refused=lambda: refused.append("nudged"))
    assert await feed.read_once() == 0.0
    entries = {e.id: e for e in await state.journal_entries(STORE)}
    assert {i: e.state for i, e in entries.items()} == {
        "good": "received", "bin": "failed", "huge": "failed", "later": "received",
    }  # fmt: skip
    assert (entries["bin"].detail or "").startswith("malformed: TypeError")
    assert (entries["huge"].detail or "").startswith("malformed: OverflowError")
    assert await state.cursor(STORE, STREAM) == "5"
    assert refused  # the poster is woken for the new `failed` results


async def test_the_feed_task_survives_what_it_did_not_foresee(state: StateStore) -> None:
    """Whatever escapes a read (here a page object without its fields) is that read's failure:
    the task goes on, with the error shown, and reads again."""

    class Broken:
        calls = 0

        async def optimizations(self, store: str, after: str, *, wait: float = 0.0) -> Any:
            self.calls += 1
            return object()

        async def post_optimization_results(self, store: str, results: Any) -> None: ...

    link = Broken()
    feed = reader(link, state)
    task = asyncio.create_task(feed.run())
    try:
        await until(lambda: link.calls >= 3, 10, what="the feed reading again")
        assert not task.done()
        assert feed.failures >= 2 and "optimizations" in (feed.last_error or "")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_hub_repeating_its_page_is_read_with_pauses_and_shown(
    fake: tuple[FakeHub, HubClient], state: StateStore
) -> None:
    hub, client = fake
    nameless = {"product": "8", "created_at": 1, "fields": {}}
    hub.page = lambda after: page(GOOD, nameless, cursor="1")  # ignores `after`
    feed = reader(client, state)
    assert await feed.read_once() == 0.0  # new: read on at once
    delays = [await feed.read_once() for _ in range(3)]
    assert all(d >= REPEAT_PAUSE for d in delays), delays
    assert "serves the same page again" in (feed.last_error or "")
    messages = [e.message for e in await state.events(20)]
    assert sum("serves the same page again" in m for m in messages) == 1  # once, not each read
    assert sum("without a usable id" in m for m in messages) == 1

    hub.page = lambda after: page({**GOOD, "id": "next"}, cursor="3")  # the hub moves on
    assert await feed.read_once() == 0.0
    assert feed.last_error is None and feed.repeats == 0


async def test_a_repeating_hub_gets_few_requests_from_the_running_feed(
    fake: tuple[FakeHub, HubClient], state: StateStore
) -> None:
    hub, client = fake
    hub.page = lambda after: page(GOOD, cursor="1")
    feed = reader(client, state)
    task = asyncio.create_task(feed.run())
    try:
        await until(lambda: feed.repeats >= 1, 10, what="the repeat noticed")
        noticed, started = hub.feed_requests, time.monotonic()
        await until(lambda: hub.feed_requests >= noticed + 1, 10, what="the next read")
        assert time.monotonic() - started >= REPEAT_PAUSE * 0.9
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- results -------------------------------------------------------------------------------------


async def unreported(state: StateStore, count: int, detail_chars: int) -> list[str]:
    ids = [f"o{n:04}" for n in range(count)]
    await state.journal_received(STORE, [Received(i, "1", {"seo_title": {}}, 1) for i in ids], "1")
    await state.journal_outcome(
        STORE, [Outcome(i, "conflict", detail="x" * detail_chars) for i in ids]
    )
    return ids


async def test_results_are_halved_after_a_413_until_they_fit(
    fake: tuple[FakeHub, HubClient], state: StateStore
) -> None:
    hub, client = fake
    hub.limit = 256 * 1024
    ids = await unreported(state, 500, 2000)  # about 1 MB in one post
    sender = poster(client, state)
    for _ in range(20):
        if await sender.post_once() is None:
            break
    assert (await state.journal_counts(STORE))["unreported"] == 0
    assert set(hub.results) == set(ids)
    assert hub.posts[:3] == [-1, -1, 125]  # 500 refused, 250 refused, 125 taken
    assert sender.per_post == 125 and sender.failures == 0


async def test_a_lone_result_too_large_goes_with_a_short_detail(
    fake: tuple[FakeHub, HubClient], state: StateStore
) -> None:
    hub, client = fake
    hub.limit = 1000
    await unreported(state, 2, 2000)
    sender = poster(client, state)
    for _ in range(10):
        if await sender.post_once() is None:
            break
    assert (await state.journal_counts(STORE))["unreported"] == 0
    for result in hub.results.values():
        assert len(result["detail"]) == SHORT_DETAIL_CHARS and result["detail"].endswith("…")


async def test_a_result_no_post_can_carry_stays_to_be_sent(
    fake: tuple[FakeHub, HubClient], state: StateStore
) -> None:
    hub, client = fake
    hub.limit = 40  # less than any one result
    await unreported(state, 1, 2000)
    sender = poster(client, state)
    delays = [await sender.post_once() for _ in range(4)]
    assert delays[-1] is not None  # waits and tries again: never dropped
    assert sender.failures >= 1 and "413" in (sender.last_error or "")
    assert (await state.journal_counts(STORE))["unreported"] == 1


async def test_a_200_that_is_not_the_hubs_answer_acknowledges_nothing(
    fake: tuple[FakeHub, HubClient], state: StateStore
) -> None:
    hub, client = fake
    hub.html = True
    await unreported(state, 3, 10)
    sender = poster(client, state)
    assert await sender.post_once() is not None  # to try again
    assert "not protocol v1" in (sender.last_error or "")
    assert (await state.journal_counts(STORE))["unreported"] == 3
    hub.html = False
    while await sender.post_once() is not None:
        pass
    assert (await state.journal_counts(STORE))["unreported"] == 0
    assert len(hub.results) == 3


# -- the downstream task's error in status -------------------------------------------------------


async def test_downstream_problem_names_the_failing_part(
    tmp_path: Path, hub: Hub, state: StateStore
) -> None:
    (tmp_path / "catalog").mkdir()
    writer = FileWriter(STORE, tmp_path / "catalog")
    settings = StoreSettings(id=STORE, platform="jsondir", url="http://127.0.0.1/")
    async with httpx.AsyncClient(base_url=hub.url, timeout=5) as http:
        good, refused = HubClient(http, TOKEN), HubClient(http, "wrong-token-" + "x" * 20)
        link = [good]
        engine = Downstream(
            settings, writer, writer, state, Metrics(), hub=lambda: link[0],
            on_recorded=lambda: None, wait=0,
        )  # fmt: skip
        await engine.feed.read_once()
        assert engine.problem() is None
        link[0] = refused
        await engine.feed.read_once()
        problem = engine.problem()
        assert problem is not None and problem.startswith("feed: hub refused the agent token")
        assert await engine.results.post_once() is None  # nothing to send: no error of its own

        view = StoreView(STORE, "jsondir", True, Health("store:shop"))
        view.downstream_problem = engine.problem
        live = Live(HubLink(), draining=False, started_at=time.time())
        doc = await status_document(state, "a", [view], live=live)
        assert doc["stores"][STORE]["downstream"]["error"] == problem
        assert f"; error: {problem}" in cli.render_status(doc)

        link[0] = good
        await engine.feed.read_once()
        assert engine.problem() is None
        doc = await status_document(state, "a", [view], live=live)
        assert doc["stores"][STORE]["downstream"]["error"] is None
        assert "error:" not in cli.render_status(doc)


async def test_the_running_agent_shows_its_downstream_error_in_status(
    tmp_path: Path, hub: Hub
) -> None:
    """stores.py wiring: the agent's view of a store with a downstream task asks it."""
    sim = WooSimulator.generate(products=3, seed=5, variable_ratio=0)
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(sim, "127.0.0.1", 0, ready=bound.set_result, warm=False))
    url = f"http://127.0.0.1:{await asyncio.wait_for(bound, 10)}"
    store = StoreSettings(
        id="main",
        platform="woocommerce",
        url=url,
        secrets={
            "consumer_key": Secret(sim.consumer_key),
            "consumer_secret": Secret(sim.consumer_secret),
        },
    )
    config = replace(make_config(tmp_path, hub.url, token="refused-" + "x" * 24), stores=(store,))
    agent = Agent(config)
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        base = f"http://127.0.0.1:{agent.health_port}"
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:

            async def shown() -> bool:
                doc = (await client.get("/status")).json()
                error = doc["stores"]["main"]["downstream"]["error"]
                return error is not None and "refused the agent token" in error

            await until(shown, 30, what="the downstream error in /status")
            doc = (await client.get("/status")).json()
        assert "error: feed: hub refused the agent token" in cli.render_status(doc)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
