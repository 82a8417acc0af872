"""Verification markers (`POST /v1/stores/{store}/verified`): the reference hub over real HTTP on
loopback and a real SQLite file, and the agent's client of the route (`HubClient.post_verified`).

A marker says "the store still has this product with this content hash": the hub confirms it
when it holds that hash for a live product, records `verified_at` (never backwards), and answers
the ids it cannot confirm so that the agent sends them in full.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge_agent import wire
from bridge_agent.errors import HubAuthFailed, HubRejected, HubUnavailable
from bridge_agent.hub import db as hub_db
from bridge_agent.hublink import HubClient
from bridge_agent.sync.hashing import content_hash
from bridge_agent.testing.catalog import make_product
from tests.conftest import TOKEN, Faults, Hub, free_port

AGENT = "shop-01"
STORE = "main"
PATH = f"/v1/stores/{STORE}/verified"
T0 = 1_780_000_000_000  # epoch ms, some day in 2026
MSGPACK = {"Content-Type": wire.CONTENT_TYPE}


def product(pid: str, **fields: Any) -> dict[str, Any]:
    return {"id": pid, "title": f"Product {pid}", "price": "10.00", **fields}


def item(
    seq: int, data: dict[str, Any] | None, pid: str = "", *, source: str = "import", at: int = 1
) -> wire.Item:
    """An upsert of `data`, or a delete of `pid` when `data` is None."""
    if data is None:
        return wire.Item(seq, STORE, pid, "delete", None, at, source)
    return wire.Item(seq, STORE, data["id"], "upsert", content_hash(data), at, source, data=data)


@pytest.fixture
async def link(hub: Hub) -> AsyncIterator[HubClient]:
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as http:
        yield HubClient(http, TOKEN)


async def ship(link: HubClient, *items: wire.Item) -> None:
    results = await link.send(wire.encode_batch(AGENT, f"b{items[0].seq}", 1, items))
    assert [r.status for r in results] == ["ok"] * len(items)


async def post_raw(hub: Hub, body: bytes, **headers: str) -> httpx.Response:
    async with hub.client() as client:
        return await client.post(PATH, content=body, headers={**MSGPACK, **headers})


async def verified_at(hub: Hub) -> dict[str, int | None]:
    return {pid: p["verified_at"] for pid, p in (await hub.products(STORE)).items()}


async def seed(link: HubClient, *pids: str) -> dict[str, str]:
    """Products `pids` at the hub; their content hashes."""
    data = [product(pid) for pid in pids]
    await ship(link, *(item(i, d) for i, d in enumerate(data, start=1)))
    return {d["id"]: content_hash(d) for d in data}


# -- the hub ------------------------------------------------------------------------------------


async def test_markers_confirm_what_the_hub_holds_and_record_verified_at(
    hub: Hub, link: HubClient
) -> None:
    hashes = await seed(link, "1", "2", "3", "4")
    assert await verified_at(hub) == dict.fromkeys(hashes)  # never verified: null

    marked = [(pid, hashes[pid]) for pid in ("1", "2", "3")]
    reply = await link.post_verified(STORE, marked, T0, agent=AGENT)

    assert reply == wire.VerifiedReply(verified=3, mismatched=frozenset())
    assert await verified_at(hub) == {"1": T0, "2": T0, "3": T0, "4": None}
    async with hub.client() as client:
        one = (await client.get(f"/v1/stores/{STORE}/products/2")).json()
    assert (one["verified_at"], one["hash"]) == (T0, hashes["2"])
    stats = await hub.stats()
    assert (stats["verified_requests"], stats["verified"]) == (1, 3)


async def test_unknown_deleted_and_other_hash_are_mismatched_and_not_recorded(
    hub: Hub, link: HubClient
) -> None:
    hashes = await seed(link, "1", "2", "3")
    await ship(link, item(10, None, "3"))  # deleted at the hub, its last hash kept
    other = content_hash(product("2", price="11.00"))
    markers = [("1", hashes["1"]), ("2", other), ("3", hashes["3"]), ("404", hashes["1"])]

    reply = await link.post_verified(STORE, markers, T0, agent=AGENT)

    assert reply == wire.VerifiedReply(verified=1, mismatched=frozenset({"2", "3", "404"}))
    assert await verified_at(hub) == {"1": T0, "2": None, "3": None}
    assert (await hub.stats())["verified_mismatched"] == 3


async def test_markers_are_per_store(hub: Hub, link: HubClient) -> None:
    hashes = await seed(link, "1")
    reply = await link.post_verified("other", [("1", hashes["1"])], T0, agent=AGENT)
    assert reply == wire.VerifiedReply(verified=0, mismatched=frozenset({"1"}))
    assert await verified_at(hub) == {"1": None}


async def test_verified_at_never_moves_backwards(hub: Hub, link: HubClient) -> None:
    hashes = await seed(link, "1", "2")
    markers = list(hashes.items())
    await link.post_verified(STORE, markers, T0 + 5000, agent=AGENT)
    assert await verified_at(hub) == {"1": T0 + 5000, "2": T0 + 5000}

    # A late request from an earlier sweep (a retry, or a second agent) leaves the later time.
    reply = await link.post_verified(STORE, markers[:1], T0, agent="another-agent")
    assert reply is not None and reply.verified == 1
    assert await verified_at(hub) == {"1": T0 + 5000, "2": T0 + 5000}

    await link.post_verified(STORE, markers[:1], T0 + 9000, agent=AGENT)
    assert await verified_at(hub) == {"1": T0 + 9000, "2": T0 + 5000}


async def test_duplicate_ids_are_judged_item_by_item(hub: Hub, link: HubClient) -> None:
    hashes = await seed(link, "1", "2")
    other = content_hash(product("2", price="99.00"))
    markers = [("1", hashes["1"]), ("1", hashes["1"]), ("2", other), ("2", hashes["2"])]
    reply = await link.post_verified(STORE, markers, T0, agent=AGENT)
    assert reply == wire.VerifiedReply(verified=3, mismatched=frozenset({"2"}))
    assert await verified_at(hub) == {"1": T0, "2": T0}


async def test_a_verification_sweep_shipping_in_full_records_verified_at(
    hub: Hub, link: HubClient
) -> None:
    """What a sweep ships (drift, or a marker the hub could not confirm) comes with source
    `verify`: once the hub holds it, it is verified at the time it was read from the store."""
    await seed(link, "1", "2")
    drifted = product("1", price="12.00")
    await ship(
        link,
        item(20, drifted, source="verify", at=T0),
        item(21, product("2", price="13.00"), source="webhook", at=T0),
        item(22, product("5"), source="verify", at=T0 + 1),
        item(23, None, "6", source="verify", at=T0),
    )
    assert await verified_at(hub) == {"1": T0, "2": None, "5": T0 + 1, "6": None}
    # An older sweep's item replaced later in the same batch is not verified content.
    await ship(
        link,
        item(30, product("2", price="14.00"), source="verify", at=T0 + 7),
        item(31, product("2", price="15.00"), source="poll", at=T0 + 8),
    )
    assert (await verified_at(hub))["2"] is None


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ([], "verified: expected a map"),
        ({"agent": AGENT, "verified_at": T0, "items": []}, "verified.v"),
        ({"v": 2, "agent": AGENT, "verified_at": T0, "items": []}, "verified.v"),
        ({"v": 1, "verified_at": T0, "items": []}, "verified.agent: missing"),
        ({"v": 1, "agent": "", "verified_at": T0, "items": []}, "verified.agent: empty"),
        ({"v": 1, "agent": 7, "verified_at": T0, "items": []}, "verified.agent: expected str"),
        ({"v": 1, "agent": "a\nb", "verified_at": T0, "items": []}, "verified.agent"),
        ({"v": 1, "agent": AGENT, "items": []}, "verified.verified_at: missing"),
        ({"v": 1, "agent": AGENT, "verified_at": "now", "items": []}, "verified_at: expected int"),
        ({"v": 1, "agent": AGENT, "verified_at": True, "items": []}, "got bool"),
        ({"v": 1, "agent": AGENT, "verified_at": 1.5, "items": []}, "verified_at: expected int"),
        ({"v": 1, "agent": AGENT, "verified_at": -1, "items": []}, "epoch milliseconds"),
        ({"v": 1, "agent": AGENT, "verified_at": 2**64 - 1, "items": []}, "epoch milliseconds"),
        ({"v": 1, "agent": AGENT, "verified_at": T0}, "verified.items: missing"),
        ({"v": 1, "agent": AGENT, "verified_at": T0, "items": {}}, "items: expected list"),
        ({"v": 1, "agent": AGENT, "verified_at": T0, "items": ["1"]}, "items[1]: expected a map"),
        ({"v": 1, "agent": AGENT, "verified_at": T0, "items": [{"id": "1"}]}, "items[1].hash"),
        ({"v": 1, "agent": AGENT, "verified_at": T0, "items": [{"hash": "h"}]}, "items[1].id"),
        (
            {"v": 1, "agent": AGENT, "verified_at": T0, "items": [{"id": 1, "hash": "h"}]},
            "items[1].id: expected str",
        ),
        (
            {"v": 1, "agent": AGENT, "verified_at": T0, "items": [{"id": "", "hash": "h"}]},
            "items[1].id: empty",
        ),
        (
            {"v": 1, "agent": AGENT, "verified_at": T0, "items": [{"id": "1", "hash": b"h"}]},
            "items[1].hash: expected str",
        ),
        (
            {"v": 1, "agent": AGENT, "verified_at": T0, "items": [{"id": "x" * 1025, "hash": "h"}]},
            "items[1].id: longer than 1024",
        ),
        (
            {"v": 1, "agent": AGENT, "verified_at": T0, "items": [{"id": "1", "hash": "h" * 129}]},
            "items[1].hash: longer than 128",
        ),
    ],
)
async def test_malformed_markers_are_400_with_the_reason_and_nothing_recorded(
    hub: Hub, link: HubClient, doc: Any, reason: str
) -> None:
    hashes = await seed(link, "1")
    if isinstance(doc, dict) and isinstance(doc.get("items"), list):
        doc = {**doc, "items": [{"id": "1", "hash": hashes["1"]}, *doc["items"]]}  # good first
    resp = await post_raw(hub, msgpack.packb(doc, use_bin_type=True))
    assert resp.status_code == 400, resp.text
    assert reason in resp.text
    assert await verified_at(hub) == {"1": None}


@pytest.mark.parametrize(
    "body",
    [b"", b"\xc1", b"\x92\x01", msgpack.packb({1: 2})],
    ids=["empty", "garbage", "cut", "key"],
)
async def test_undecodable_markers_are_400(hub: Hub, body: bytes) -> None:
    resp = await post_raw(hub, body)
    assert resp.status_code == 400
    assert "verified" in resp.text or "body" in resp.text


async def test_markers_in_another_content_type_are_415(hub: Hub, link: HubClient) -> None:
    hashes = await seed(link, "1")
    body = wire.encode_verified(AGENT, T0, hashes.items())
    resp = await post_raw(hub, body, **{"Content-Type": "application/json"})
    assert resp.status_code == 415
    assert await verified_at(hub) == {"1": None}


@pytest.mark.parametrize("token", [None, "wrong"])
async def test_markers_without_the_token_are_401(hub: Hub, link: HubClient, token: str) -> None:
    hashes = await seed(link, "1")
    body = wire.encode_verified(AGENT, T0, hashes.items())
    auth = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as http:
        resp = await http.post(PATH, content=body, headers={**MSGPACK, **auth})
        assert resp.status_code == 401
        with pytest.raises(HubAuthFailed):  # the client cannot send no token: a wrong one
            await HubClient(http, token or "wrong").post_verified(STORE, [], T0, agent=AGENT)
    assert await verified_at(hub) == {"1": None}


async def test_more_than_1000_markers_are_413_and_1000_are_fine(hub: Hub, link: HubClient) -> None:
    hashes = await seed(link, "1")
    markers = [("1", hashes["1"])] + [(f"n{i}", "h") for i in range(999)]
    resp = await post_raw(hub, wire.encode_verified(AGENT, T0, [*markers, ("n-last", "h")]))
    assert resp.status_code == 413
    assert "at most 1000" in resp.text
    assert await verified_at(hub) == {"1": None}

    reply = await link.post_verified(STORE, markers, T0, agent=AGENT)
    assert reply is not None and reply.verified == 1 and len(reply.mismatched) == 999
    assert await verified_at(hub) == {"1": T0}


async def test_markers_over_the_body_limit_are_413(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    small = Hub(url, port, tmp_path / "hub.sqlite", Faults(), max_body_bytes=4096)
    await small.start()
    try:
        async with httpx.AsyncClient(base_url=small.url, timeout=10) as http:
            markers = [(f"product-{i:06d}", "h" * 22) for i in range(200)]  # ~8 KB
            with pytest.raises(HubRejected) as caught:
                await HubClient(http, TOKEN).post_verified(STORE, markers, T0, agent=AGENT)
            assert caught.value.status == 413
    finally:
        await small.stop()


async def test_an_older_hub_database_gains_verified_at(tmp_path: Path, hub: Hub) -> None:
    """A hub database of schema version 1 (before markers) migrates: its products read with a
    null `verified_at`, and markers confirm them."""
    path = tmp_path / "old-hub.sqlite"
    data = product("1")
    conn = sqlite3.connect(path)
    try:
        conn.executescript(hub_db.MIGRATIONS[0])
        conn.execute("PRAGMA user_version = 1")
        conn.execute(
            "INSERT INTO products (store, id, hash, deleted, updated_at, agent, seq, data)"
            " VALUES (?, ?, ?, 0, 1, ?, 1, ?)",
            (STORE, "1", content_hash(data), AGENT, msgpack.packb(data)),
        )
        conn.commit()
    finally:
        conn.close()
    await hub.stop()
    hub.db_path = path
    await hub.start()
    assert await verified_at(hub) == {"1": None}
    async with httpx.AsyncClient(base_url=hub.url, timeout=10) as http:
        reply = await HubClient(http, TOKEN).post_verified(
            STORE, [("1", content_hash(data))], T0, agent=AGENT
        )
    assert reply == wire.VerifiedReply(verified=1, mismatched=frozenset())
    assert await verified_at(hub) == {"1": T0}
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(hub_db.MIGRATIONS)
    finally:
        conn.close()


# -- the agent's client -------------------------------------------------------------------------


async def serve(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    return server


Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def fake_hub() -> AsyncIterator[Callable[[web.Application], Awaitable[HubClient]]]:
    """A factory: a HubClient talking to the given aiohttp app served on loopback."""
    servers: list[TestServer] = []
    clients: list[httpx.AsyncClient] = []

    async def make(app: web.Application) -> HubClient:
        server = await serve(app)
        servers.append(server)
        http = httpx.AsyncClient(base_url=str(server.make_url("/")), timeout=10)
        clients.append(http)
        return HubClient(http, TOKEN)

    yield make
    for http in clients:
        await http.aclose()
    for server in servers:
        await server.close()


def app_answering(answer: Answer, *, method: str = "POST") -> web.Application:
    app = web.Application()
    app.router.add_route(method, PATH, answer)
    return app


async def test_client_returns_none_from_a_hub_without_the_route(
    fake_hub: Callable[[web.Application], Awaitable[HubClient]],
) -> None:
    async def batches(request: web.Request) -> web.Response:
        return web.Response(status=200)

    older = web.Application()  # a hub from before markers: batches, but no verified route
    older.router.add_post("/v1/batches", batches)
    client = await fake_hub(older)
    assert await client.post_verified(STORE, [("1", "h")], T0, agent=AGENT) is None


async def test_client_returns_none_when_the_route_refuses_post(
    fake_hub: Callable[[web.Application], Awaitable[HubClient]],
) -> None:
    async def get_only(request: web.Request) -> web.Response:
        return web.Response(status=200)

    client = await fake_hub(app_answering(get_only, method="GET"))  # POST answers 405
    assert await client.post_verified(STORE, [("1", "h")], T0, agent=AGENT) is None


@pytest.mark.parametrize(
    ("status", "kind"),
    [(401, HubAuthFailed), (403, HubAuthFailed), (400, HubRejected), (413, HubRejected),
     (429, HubUnavailable), (500, HubUnavailable), (503, HubUnavailable)],
)  # fmt: skip
async def test_client_maps_failures_like_the_other_calls(
    fake_hub: Callable[[web.Application], Awaitable[HubClient]], status: int, kind: type[Exception]
) -> None:
    async def failing(request: web.Request) -> web.Response:
        return web.Response(status=status, text="no", headers={"Retry-After": "7"})

    client = await fake_hub(app_answering(failing))
    with pytest.raises(kind) as caught:
        await client.post_verified(STORE, [("1", "h")], T0, agent=AGENT)
    if isinstance(caught.value, HubUnavailable):
        assert caught.value.retry_after == 7.0


@pytest.mark.parametrize(
    "reply",
    [
        b"<html>captive portal</html>",
        msgpack.packb({"v": 2, "verified": 1, "mismatched": []}),
        msgpack.packb({"v": 1, "verified": "1", "mismatched": []}),
        msgpack.packb({"v": 1, "verified": -1, "mismatched": []}),
        msgpack.packb({"v": 1, "verified": 1}),
        msgpack.packb({"v": 1, "verified": 0, "mismatched": [1]}),
        msgpack.packb({"v": 1, "verified": 0, "mismatched": ["not-sent"]}),
        msgpack.packb({"v": 1, "verified": 3, "mismatched": []}),
        msgpack.packb({"v": 1, "verified": 0, "mismatched": ["1"] * 1001}),
    ],
    ids=["html", "v2", "str", "negative", "no-list", "int-id", "unsent", "too-many", "long"],
)
async def test_client_refuses_a_reply_that_is_not_protocol_v1(
    fake_hub: Callable[[web.Application], Awaitable[HubClient]], reply: bytes
) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=reply, content_type=wire.CONTENT_TYPE)

    client = await fake_hub(app_answering(answer))
    with pytest.raises(HubUnavailable, match="not protocol v1"):
        await client.post_verified(STORE, [("1", "h"), ("2", "h")], T0, agent=AGENT)


async def test_client_refuses_more_than_1000_markers_before_sending(link: HubClient) -> None:
    with pytest.raises(ValueError, match="at most 1000"):
        await link.post_verified(STORE, [("1", "h")] * 1001, T0, agent=AGENT)


def test_a_marker_costs_under_80_bytes_on_the_wire() -> None:
    """The point of markers: a request of 1000 verified products is tens of kilobytes, where
    shipping them would be megabytes."""
    products = [make_product(i).to_dict() for i in range(1000)]
    markers = [(p["id"], content_hash(p)) for p in products]
    body = wire.encode_verified("agent-7f3c1e9a", T0, markers)
    assert len(body) < 80 * len(markers)
    full = sum(len(wire.packb(p)) for p in products)
    assert len(body) * 10 < full  # at least ten times smaller than the products themselves
    decoded = wire.decode_verified(body)
    assert decoded.items == tuple(markers) and decoded.verified_at == T0
