"""The reference hub over real HTTP and a real SQLite file: protocol v1 and the inspection API."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import json
import random
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import aiohttp
import msgpack
import pytest
import structlog
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from bridge_agent import wire
from bridge_agent.hub import app as hub_app
from bridge_agent.hub import db as hub_db
from bridge_agent.hub import ingest, make_app, serve
from bridge_agent.model import Category, Image, Product, Rating, Variant
from bridge_agent.sync.hashing import content_hash
from bridge_agent.sync.patch import diff
from bridge_agent.testing.catalog import make_product

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MSGPACK = {**AUTH, "Content-Type": wire.CONTENT_TYPE}
AGENT = "shop-01"

Client = TestClient[Any, Any]
MakeClient = Callable[..., Awaitable[Client]]


@pytest.fixture(autouse=True)
def _structlog_to_live_streams() -> Iterator[None]:
    # Tests that run the CLI in-process leave structlog writing to a pytest capture stream that
    # is closed afterwards (logs.configure binds sys.stderr once); the hub's error paths log.
    saved = structlog.get_config()
    structlog.reset_defaults()
    yield
    structlog.configure(**saved)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "hub.db"


@pytest.fixture
def make_client(aiohttp_client: AiohttpClient, db_path: Path) -> MakeClient:
    """A factory: a test client on a fresh hub app over `db_path` (or another file)."""

    async def make(path: Path | None = None, **kwargs: Any) -> Client:
        return await aiohttp_client(make_app(path or db_path, TOKEN, **kwargs))

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> Client:
    return await make_client()


# -- helpers -------------------------------------------------------------------------------------

_batch_ids = itertools.count(1)


def product(pid: str, **fields: Any) -> dict[str, Any]:
    return {"id": pid, "title": f"Product {pid}", "price": "10.00", **fields}


def upsert(
    seq: int, data: dict[str, Any], *, store: str = "main", hash_: str | None = None
) -> wire.Item:
    return wire.Item(
        seq=seq,
        store=store,
        id=data["id"],
        op="upsert",
        hash=hash_ or content_hash(data),
        data=data,
        observed_at=1,
        source="import",
    )


def patch(
    seq: int, base: dict[str, Any], new: dict[str, Any], *, base_hash: str | None = None
) -> wire.Item:
    return wire.Item(
        seq=seq,
        store="main",
        id=new["id"],
        op="patch",
        hash=content_hash(new),
        base=base_hash or content_hash(base),
        data=diff(base, new),
        observed_at=1,
        source="webhook",
    )


def delete(seq: int, pid: str, *, store: str = "main") -> wire.Item:
    return wire.Item(
        seq=seq, store=store, id=pid, op="delete", hash=None, observed_at=1, source="verify"
    )


async def send(client: Client, *items: wire.Item, agent: str = AGENT) -> list[wire.Result]:
    body = wire.encode_batch(agent, f"b{next(_batch_ids)}", 1, items)
    resp = await client.post("/v1/batches", data=body, headers=MSGPACK)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == wire.CONTENT_TYPE
    results = list(wire.decode_results(await resp.read()))
    assert [r.seq for r in results] == [i.seq for i in items]
    return results


async def statuses(client: Client, *items: wire.Item, agent: str = AGENT) -> list[str]:
    return [r.status for r in await send(client, *items, agent=agent)]


async def stored(client: Client, pid: str, store: str = "main") -> dict[str, Any] | None:
    resp = await client.get(f"/v1/stores/{store}/products/{pid}", headers=AUTH)
    if resp.status == 404:
        return None
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    return doc


async def stats(client: Client) -> dict[str, Any]:
    resp = await client.get("/v1/stats", headers=AUTH)
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    return doc


# -- transport: auth, health, content type, size, garbage ----------------------------------------


async def test_healthz_needs_no_token(client: Client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer t\u00f6ken"},
    ],
    ids=["missing", "wrong", "wrong-scheme", "longer", "non-ascii"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/batches"),
        ("GET", "/v1/stats"),
        ("GET", "/v1/stores/main/products"),
        ("GET", "/v1/stores/main/products/1"),
        ("GET", "/v1/stores/main/optimizations"),
        ("POST", "/v1/stores/main/optimizations"),
        ("POST", "/v1/stores/main/optimizations/results"),
    ],
)
async def test_every_v1_route_refuses_a_bad_or_missing_token(
    client: Client, method: str, path: str, headers: dict[str, str]
) -> None:
    body = wire.encode_batch(AGENT, "b", 1, [upsert(1, product("1"))])
    resp = await client.request(method, path, data=body, headers=headers)
    assert resp.status == 401
    assert "token" in (await resp.json())["error"]
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_token_with_raw_non_utf8_bytes_is_401_not_500(client: Client) -> None:
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(
        b"GET /v1/stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Connection: close\r\n\r\n"
    )
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    assert status_line.split()[1] == b"401"


async def test_refused_batch_is_not_applied(client: Client) -> None:
    body = wire.encode_batch(AGENT, "b", 1, [upsert(1, product("1"))])
    resp = await client.post("/v1/batches", data=body, headers={**MSGPACK, "Authorization": ""})
    assert resp.status == 401
    assert await stored(client, "1") is None


async def test_batch_with_another_content_type_is_415(client: Client) -> None:
    body = wire.encode_batch(AGENT, "b", 1, [upsert(1, product("1"))])
    resp = await client.post(
        "/v1/batches", data=body, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert resp.status == 415
    assert wire.CONTENT_TYPE in await resp.text()
    assert await stored(client, "1") is None


async def test_batch_over_the_limit_is_413_by_content_length(make_client: MakeClient) -> None:
    client = await make_client(max_body_bytes=200)
    body = wire.encode_batch(AGENT, "b", 1, [upsert(1, product("1", description_html="x" * 300))])
    resp = await client.post("/v1/batches", data=body, headers=MSGPACK)
    assert resp.status == 413
    assert "200 bytes" in await resp.text()
    assert await stored(client, "1") is None


async def test_chunked_batch_over_the_limit_is_413_while_reading(make_client: MakeClient) -> None:
    client = await make_client(max_body_bytes=200)
    body = wire.encode_batch(AGENT, "b", 1, [upsert(1, product("1", description_html="x" * 300))])

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the size is only seen reading
        for i in range(0, len(body), 64):
            yield body[i : i + 64]

    resp = await client.post("/v1/batches", data=chunks(), headers=MSGPACK)
    assert resp.status == 413
    assert await stored(client, "1") is None


async def test_batch_of_exactly_the_limit_is_accepted(make_client: MakeClient) -> None:
    data = product("1")
    body = wire.encode_batch(AGENT, "b", 1, [upsert(1, data)])
    client = await make_client(max_body_bytes=len(body))
    resp = await client.post("/v1/batches", data=body, headers=MSGPACK)
    assert resp.status == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xc1garbage", "not valid msgpack"),
        (wire.packb([1, 2, 3]), "expected a map"),
        (wire.packb({"v": 2, "agent": "a", "batch": "b", "sent_at": 1, "items": []}), "version"),
        (wire.packb({"v": 1, "batch": "b", "sent_at": 1, "items": []}), "batch.agent: missing"),
    ],
    ids=["garbage", "not-a-map", "version", "no-agent"],
)
async def test_undecodable_batch_is_400_with_the_reason(
    client: Client, body: bytes, message: str
) -> None:
    resp = await client.post("/v1/batches", data=body, headers=MSGPACK)
    assert resp.status == 400
    assert message in await resp.text()


async def test_batch_with_an_item_missing_fields_is_400_and_nothing_applies(client: Client) -> None:
    good = upsert(1, product("1")).to_wire()
    bad = upsert(2, product("2")).to_wire()
    del bad["hash"]
    body = wire.packb({"v": 1, "agent": AGENT, "batch": "b", "sent_at": 1, "items": [good, bad]})
    resp = await client.post("/v1/batches", data=body, headers=MSGPACK)
    assert resp.status == 400
    assert "items[1].hash" in await resp.text()
    assert await stored(client, "1") is None  # a bad batch is refused whole


async def test_seq_beyond_64_bits_is_400(client: Client) -> None:
    body = wire.encode_batch(AGENT, "b", 1, [upsert(2**64 - 1, product("1"))])
    resp = await client.post("/v1/batches", data=body, headers=MSGPACK)
    assert resp.status == 400
    assert "items[0].seq" in await resp.text()


async def test_unexpected_error_is_500_and_rolls_back(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = hub_db.plan_batch

    def broken(*args: Any, **kwargs: Any) -> Any:
        plan = real(*args, **kwargs)  # compute the writes, then fail before they are made
        raise RuntimeError("disk on fire")
        return plan  # pragma: no cover

    monkeypatch.setattr(hub_db, "plan_batch", broken)
    body = wire.encode_batch(AGENT, "b1", 1, [upsert(1, product("1"))])
    resp = await client.post("/v1/batches", data=body, headers=MSGPACK)
    assert resp.status == 500
    assert "disk on fire" in await resp.text()
    assert await stored(client, "1") is None
    assert (await stats(client))["batches"] == 0

    monkeypatch.setattr(hub_db, "plan_batch", real)  # the hub carries on
    assert await statuses(client, upsert(1, product("1"))) == ["ok"]
    assert (await stored(client, "1") or {})["data"] == product("1")


# -- upstream rules ------------------------------------------------------------------------------


async def test_upsert_patch_delete_flow_is_visible_in_the_inspection_api(client: Client) -> None:
    v1 = product("794", sku="HOODIE-1", tags=["winter"])
    v2 = {**product("794", sku="HOODIE-1", seo_title="Warm hoodie"), "price": "12.00"}

    assert await statuses(client, upsert(1, v1)) == ["ok"]
    got = await stored(client, "794")
    assert got is not None
    assert got["data"] == v1
    assert got["hash"] == content_hash(v1)
    assert got["deleted"] is False
    assert (got["agent"], got["seq"]) == (AGENT, 1)

    assert await statuses(client, patch(2, v1, v2)) == ["ok"]
    got = await stored(client, "794")
    assert got is not None
    assert got["data"] == v2  # "tags" unset, "seo_title" set, "price" changed
    assert got["hash"] == content_hash(v2)

    assert await statuses(client, delete(3, "794")) == ["ok"]
    got = await stored(client, "794")
    assert got is not None
    assert got["deleted"] is True
    assert got["data"] == v2  # the last data is kept
    listed = await (await client.get("/v1/stores/main/products", headers=AUTH)).json()
    assert [(p["id"], p["deleted"]) for p in listed["products"]] == [("794", True)]

    s = await stats(client)
    assert (s["batches"], s["items"], s["replays"]) == (3, 3, 0)
    assert s["by_op"] == {"upsert": 1, "patch": 1, "delete": 1}
    assert s["by_status"] == {"ok": 3}


async def test_items_apply_in_order_within_one_batch(client: Client) -> None:
    v1, v2 = product("1"), product("1", brand="Acme")
    results = await send(client, upsert(1, v1), patch(2, v1, v2), delete(3, "2"), upsert(4, v1))
    # The patch saw the upsert before it; the re-upsert of v1 after v2 is a real change back.
    assert [r.status for r in results] == ["ok", "ok", "ok", "ok"]
    assert (await stored(client, "1") or {})["data"] == v1
    tombstone = await stored(client, "2")
    assert tombstone is not None
    assert (tombstone["deleted"], tombstone["data"], tombstone["hash"]) == (True, {}, None)


async def test_delete_then_upsert_revives_the_product(client: Client) -> None:
    v1 = product("1")
    await send(client, upsert(1, v1), delete(2, "1"))
    assert await statuses(client, upsert(3, v1)) == ["ok"]  # same hash, but it was deleted
    got = await stored(client, "1")
    assert got is not None
    assert (got["deleted"], got["seq"]) == (False, 3)


async def test_patch_on_an_unknown_product_needs_full(client: Client) -> None:
    v1, v2 = product("1"), product("1", brand="Acme")
    [result] = await send(client, patch(1, v1, v2))
    assert (result.status, result.reason) == ("need_full", "unknown product")
    assert await stored(client, "1") is None


async def test_patch_on_another_base_needs_full(client: Client) -> None:
    v1, v2, v3 = product("1"), product("1", brand="Acme"), product("1", brand="Other")
    await send(client, upsert(1, v1))
    [result] = await send(client, patch(2, v2, v3))  # computed against v2, the hub has v1
    assert result.status == "need_full"
    assert result.reason is not None
    assert "base mismatch" in result.reason
    assert (await stored(client, "1") or {})["data"] == v1


async def test_patch_on_a_deleted_product_needs_full(client: Client) -> None:
    v1, v2 = product("1"), product("1", brand="Acme")
    await send(client, upsert(1, v1), delete(2, "1"))
    [result] = await send(client, patch(3, v1, v2))
    assert (result.status, result.reason) == ("need_full", "product is deleted")


async def test_patch_whose_result_hashes_otherwise_needs_full(client: Client) -> None:
    v1, v2 = product("1"), product("1", brand="Acme")
    await send(client, upsert(1, v1))
    wrong = wire.Item(
        seq=2,
        store="main",
        id="1",
        op="patch",
        hash=content_hash(product("1", brand="Something else")),
        base=content_hash(v1),
        data=diff(v1, v2),
        observed_at=1,
        source="poll",
    )
    [result] = await send(client, wrong)
    assert result.status == "need_full"
    assert result.reason == f"patched data hashes to {content_hash(v2)}, expected {wrong.hash}"
    assert (await stored(client, "1") or {})["data"] == v1


async def test_malformed_patch_is_rejected(client: Client) -> None:
    v1 = product("1")
    await send(client, upsert(1, v1))
    bad = wire.Item(
        seq=2,
        store="main",
        id="1",
        op="patch",
        hash="whatever",
        base=content_hash(v1),
        data={"replace": {"title": "x"}},
        observed_at=1,
        source="poll",
    )
    [result] = await send(client, bad)
    assert result.status == "rejected"
    assert result.reason is not None
    assert "invalid patch" in result.reason


async def test_patch_producing_an_invalid_product_is_rejected(client: Client) -> None:
    v1 = product("1")
    await send(client, upsert(1, v1))
    invalid = {**v1, "colour": "red"}
    [result] = await send(client, patch(2, v1, invalid))
    assert result.status == "rejected"
    assert result.reason is not None
    assert "colour" in result.reason
    assert (await stored(client, "1") or {})["data"] == v1


async def test_upsert_with_a_wrong_hash_is_rejected(client: Client) -> None:
    data = product("1")
    [result] = await send(client, upsert(1, data, hash_="not-the-hash"))
    assert result.status == "rejected"
    assert result.reason == f"hash mismatch: data hashes to {content_hash(data)}"
    assert await stored(client, "1") is None


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"id": "1", "title": "T", "colour": "red"}, "unknown product field(s): colour"),
        ({"id": "1"}, "title"),
        ({"id": "1", "title": "T", "categories": [{"name": "Men"}]}, "missing field 'id'"),
        ({"id": "2", "title": "T"}, "is not the item id"),
        ({"id": "1", "title": "T", "extra": {"blob": b"\x00"}}, "not JSON"),
    ],
    ids=["unknown-field", "no-title", "category-without-id", "other-id", "bytes"],
)
async def test_invalid_product_is_rejected_with_the_reason(
    client: Client, data: dict[str, Any], fragment: str
) -> None:
    item = wire.Item(
        seq=1,
        store="main",
        id="1",
        op="upsert",
        hash="h" * 22,
        data=data,
        observed_at=1,
        source="import",
    )
    [result] = await send(client, item)
    assert result.status == "rejected"
    assert result.reason is not None
    assert fragment in result.reason
    assert await stored(client, "1") is None


async def test_one_bad_item_does_not_spoil_the_rest_of_the_batch(client: Client) -> None:
    good, bad = product("1"), product("2")
    results = await send(client, upsert(1, good), upsert(2, bad, hash_="x"), delete(3, "3"))
    assert [r.status for r in results] == ["ok", "rejected", "ok"]
    assert await stored(client, "1") is not None
    assert await stored(client, "2") is None


async def test_replay_returns_the_remembered_result_without_reapplying(client: Client) -> None:
    old, new = product("1"), product("1", brand="Acme")
    first = await send(client, upsert(1, old))
    await send(client, upsert(2, new))

    # The first batch again (a lost reply): same answer, and the product is not rolled back.
    assert await send(client, upsert(1, old)) == first
    got = await stored(client, "1")
    assert got is not None
    assert (got["data"], got["seq"]) == (new, 2)
    assert (await stats(client))["replays"] == 1


async def test_replay_of_a_rejection_returns_the_same_reason(client: Client) -> None:
    item = upsert(1, product("1"), hash_="bad")
    first = await send(client, item)
    assert first[0].status == "rejected"
    assert await send(client, item) == first
    assert (await stats(client))["replays"] == 1


async def test_replays_are_per_agent(client: Client) -> None:
    a, b = product("1"), product("1", brand="B")
    await send(client, upsert(1, a), agent="agent-a")
    await send(client, upsert(1, b), agent="agent-b")  # same seq, other agent: a new change
    assert (await stored(client, "1") or {})["data"] == b
    assert (await stats(client))["replays"] == 0


async def test_same_seq_with_another_hash_is_processed_as_new(client: Client) -> None:
    old, new = product("1"), product("1", brand="Acme")
    await send(client, upsert(5, old))
    # An agent whose state was reset reuses seq 5 for a different change.
    assert await statuses(client, upsert(5, new)) == ["ok"]
    assert (await stored(client, "1") or {})["data"] == new
    # ... and the memory now holds the new change: replaying it is a replay.
    assert await statuses(client, upsert(5, new)) == ["ok"]
    assert (await stats(client))["replays"] == 1


async def test_same_seq_after_need_full_is_processed_as_an_upsert(client: Client) -> None:
    v1, v2 = product("1"), product("1", brand="Acme")
    assert await statuses(client, patch(7, v1, v2)) == ["need_full"]
    assert await statuses(client, upsert(7, v2)) == ["ok"]  # same row version, now in full
    assert (await stored(client, "1") or {})["data"] == v2


async def test_same_content_from_anyone_is_ok_without_a_write(client: Client) -> None:
    v1, v2 = product("1"), product("1", brand="Acme")
    await send(client, upsert(1, v1))
    before = await stored(client, "1")
    assert before is not None

    # Another agent, another seq, same content: ok, and the row is untouched.
    assert await statuses(client, upsert(9, v1), agent="other") == ["ok"]
    # A patch whose target hash the hub already has is ok whatever its base.
    assert await statuses(client, patch(10, v2, v1, base_hash="stale")) == ["ok"]
    # A volatile field alone does not change the hash, so it is not a change either.
    assert await statuses(client, upsert(11, {**v1, "updated_at": "2026-01-01T00:00:00Z"})) == [
        "ok"
    ]
    assert await stored(client, "1") == before


async def test_deleting_twice_keeps_the_first_tombstone(client: Client) -> None:
    await send(client, upsert(1, product("1")), delete(2, "1"))
    assert await statuses(client, delete(3, "1")) == ["ok"]
    got = await stored(client, "1")
    assert got is not None
    assert (got["deleted"], got["seq"]) == (True, 2)


async def test_stores_are_separate(client: Client) -> None:
    a, b = product("1"), product("1", brand="B")
    await send(client, upsert(1, a, store="eu"), upsert(2, b, store="us"))
    assert (await stored(client, "1", store="eu") or {})["data"] == a
    assert (await stored(client, "1", store="us") or {})["data"] == b
    assert await stored(client, "1", store="main") is None


async def test_products_survive_a_restart(make_client: MakeClient, db_path: Path) -> None:
    first = await make_client()
    v1, v2 = product("1"), product("1", brand="Acme")
    await send(first, upsert(1, v1), upsert(2, product("2")), delete(3, "2"))
    await first.close()

    second = await make_client(db_path)
    got = await stored(second, "1")
    assert got is not None
    assert got["data"] == v1
    assert (await stored(second, "2") or {})["deleted"] is True
    # The memory survives too: a replay is still a replay, and a patch finds its base.
    assert await statuses(second, upsert(1, v1)) == ["ok"]
    assert await statuses(second, patch(4, v1, v2)) == ["ok"]
    s = await stats(second)
    assert (s["batches"], s["replays"]) == (3, 1)
    assert (await stored(second, "1") or {})["data"] == v2


async def test_database_is_wal_and_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    db = await hub_db.HubDB.open(path)
    await db.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(hub_db.MIGRATIONS)
        conn.execute("PRAGMA user_version = 99")
    finally:
        conn.close()
    with pytest.raises(RuntimeError, match="newer than this hub"):
        await hub_db.HubDB.open(path)


def raw_rows(path: Path) -> list[tuple[Any, ...]]:
    """(id, typeof(data), data) of every product, read past the hub with sqlite3."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT id, typeof(data), data FROM products ORDER BY id").fetchall()
    finally:
        conn.close()


async def test_product_data_is_stored_as_msgpack(client: Client, db_path: Path) -> None:
    v1, v2 = product("1", tags=["a", "b"], extra={"n": 1}), product("1", brand="Acme")
    await send(client, upsert(1, v1), delete(2, "2"))
    await send(client, patch(3, v1, v2))
    rows = raw_rows(db_path)
    assert [(pid, kind) for pid, kind, _ in rows] == [("1", "blob"), ("2", "blob")]
    assert msgpack.unpackb(rows[0][2]) == v2
    assert msgpack.unpackb(rows[1][2]) == {}  # the tombstone of a product never seen


async def test_data_stored_as_json_text_is_still_read_and_patched(
    client: Client, db_path: Path
) -> None:
    # A hub database written before the data was msgpack keeps JSON text in `data`.
    v1, v2, other = product("1", sku="S-1"), product("1", sku="S-1", brand="Acme"), product("2")
    await send(client, upsert(1, v1), upsert(2, other))
    conn = sqlite3.connect(db_path)
    try:
        conn.executemany(
            "UPDATE products SET data = ? WHERE id = ?",
            [(json.dumps(v1), "1"), (json.dumps(other), "2")],
        )
        conn.commit()
    finally:
        conn.close()
    assert [kind for _, kind, _ in raw_rows(db_path)] == ["text", "text"]
    assert (await stored(client, "1") or {})["data"] == v1
    assert await statuses(client, patch(3, v1, v2), delete(4, "2")) == ["ok", "ok"]
    assert (await stored(client, "1") or {})["data"] == v2
    assert (await stored(client, "2") or {})["data"] == other  # a delete keeps the data
    assert [kind for _, kind, _ in raw_rows(db_path)] == ["blob", "text"]


async def test_patches_in_one_batch_unpack_the_stored_base_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    v1, v2, v3 = product("1"), product("1", brand="Acme"), product("1", brand="Other")
    unpacked: list[bytes | str] = []
    real = ingest.unpack_data

    def counting(packed: bytes | str) -> dict[str, Any]:
        unpacked.append(packed)
        return real(packed)

    monkeypatch.setattr(ingest, "unpack_data", counting)
    wrong = wire.Item(
        seq=1, store="main", id="1", op="patch", hash=content_hash(v3), base=content_hash(v1),
        data=diff(v1, v2), observed_at=1, source="poll",
    )  # fmt: skip
    batch = wire.Batch(1, AGENT, "b", 1, (wrong, patch(2, v1, v2), patch(3, v2, v3)))
    stored_row = ingest.Stored(content_hash(v1), False, ingest.pack_data(v1))
    plan = ingest.plan_batch(batch, {("main", "1"): stored_row}, {}, 1)
    assert [r.status for r in plan.results] == ["need_full", "ok", "ok"]
    assert len(unpacked) == 1  # the failed patch unpacked it; the next ones reused the dict
    [row] = plan.products
    assert (row[2], msgpack.unpackb(row[3]), row[7]) == (content_hash(v3), v3, 3)


def test_data_that_msgpack_cannot_carry_is_rejected_not_stored() -> None:
    # Over the wire this cannot arrive (msgpack has no integers beyond 64 bits), but plan_batch
    # is pure and callable with anything: the JSON hash takes it, the stored form cannot.
    data = product("1", extra={"big": 2**70})
    batch = wire.Batch(1, AGENT, "b", 1, (upsert(1, data),))
    plan = ingest.plan_batch(batch, {}, {}, 1)
    [result] = plan.results
    assert (result.status, plan.products) == ("rejected", [])
    assert result.reason is not None
    assert result.reason.startswith("data cannot be stored")


# -- what a valid product is (ingest.invalid_product, invalid_patch) -----------------------------

FULL_PRODUCT = Product(
    id="7",
    title="Everything",
    sku="SKU-7",
    slug="everything",
    url="https://shop.example/p/7?v=3",
    status="draft",
    description_html="<p>all</p>",
    short_description_html="<p>a</p>",
    seo_title="Everything",
    seo_description="All the fields",
    price="9.90",
    regular_price="12.00",
    sale_price="9.90",
    currency="EUR",
    tax_included=False,
    availability="BackOrder",
    stock_quantity=0,
    categories=(Category("c1", "Tops", ("Clothing", "Tops")), Category("c2", "Sale")),
    tags=("a", "b"),
    images=(Image("i1", "https://shop.example/i1.jpg?ver=2", "front", 0), Image("i2", "x")),
    variants=(
        Variant(
            id="7-s",
            sku="SKU-7-S",
            title="S",
            options=(("Size", "S"), ("Colour", "Red")),
            price="9.90",
            regular_price="12.00",
            sale_price="9.90",
            availability="PreOrder",
            stock_quantity=4,
            image_id="i1",
            gtin="0123",
        ),
        Variant(id="7-m"),
    ),
    rating=Rating("4.50", 12),
    brand="Acme",
    gtin="4006381333931",
    language="de",
    updated_at="2026-01-01T00:00:00Z",
    extra={"anything": [1, 2.5, None, {"nested": True}]},
).to_dict()

VALID = [
    pytest.param(FULL_PRODUCT, id="every-field"),
    pytest.param({"id": "1", "title": "T"}, id="minimal"),
    pytest.param(
        {"id": "1", "title": "T", "sku": None, "stock_quantity": None, "availability": None},
        id="explicit-nulls",
    ),
    pytest.param({"id": "1", "title": "T", "tags": [], "categories": (), "extra": {}}, id="empty"),
    *(pytest.param(make_product(i).to_dict(), id=f"catalog-{i}") for i in range(12)),
]


@pytest.mark.parametrize("data", VALID)
def test_canonical_products_are_valid(data: dict[str, Any]) -> None:
    Product.from_dict(data)  # the model agrees
    assert ingest.invalid_product(data, data["id"]) is None
    assert ingest._product_surely_valid(data)  # and the fast path says so without the checks
    assert ingest.invalid_product(MappingProxyType(data), data["id"]) is None  # any Mapping


T = {"id": "1", "title": "T"}

# Everything Product.from_dict refuses, with the reason the hub gives.
REFUSED_BY_THE_MODEL = [
    ({**T, "colour": "red", "size": 1}, "unknown product field(s): colour, size"),
    ({"id": "1"}, "missing field 'title'"),
    ({"title": "T"}, "missing field 'id'"),
    ({**T, "categories": [{"name": "Men"}]}, "categories[0]: missing field 'id'"),
    ({**T, "categories": [{"id": "c"}]}, "categories[0]: missing field 'name'"),
    ({**T, "categories": ["Men"]}, "categories[0]: expected a map, got a string"),
    ({**T, "categories": None}, "categories: expected a list, got null"),
    ({**T, "tags": None}, "tags: expected a list, got null"),
    ({**T, "images": [{"id": "i"}]}, "images[0]: missing field 'src'"),
    ({**T, "images": [{"id": "i", "src": "s", "w": 1}]}, "images[0]: unknown image field(s): w"),
    ({**T, "variants": [{"sku": "x"}]}, "variants[0]: missing field 'id'"),
    ({**T, "variants": ["v"]}, "variants[0]: expected a map, got a string"),
    ({**T, "variants": [{"id": "v", "c": 1}]}, "variants[0]: unknown variant field(s): c"),
    (
        {**T, "variants": [{"id": "v", "options": [1]}]},
        "variants[0].options[0]: expected a list of 2, got an integer",
    ),
    ({**T, "rating": {"average": "4.5"}}, "rating: missing field 'count'"),
    ({**T, "rating": {"average": "4", "count": 1, "of": 5}}, "rating: unknown rating field(s): of"),
    ({**T, "rating": "4.5"}, "rating: expected a map, got a string"),
    ({**T, "rating": None}, "rating: expected a map, got null"),
    ({**T, "extra": 5}, "extra: expected a map, got an integer"),
]

# What the model's types exclude but from_dict lets through (dataclasses do not check types).
REFUSED_BY_THE_TYPES = [
    ({**T, "price": 12.5}, "price: expected a string or null, got a float"),
    ({"id": "1", "title": 5}, "title: expected a string, got an integer"),
    ({**T, "status": "published"}, "status: 'published' is not one of active, draft, archived"),
    ({**T, "status": None}, "status: None is not one of active, draft, archived"),
    ({**T, "availability": "Sold"}, "availability: 'Sold' is not one of InStock, OutOfStock"),
    ({**T, "stock_quantity": True}, "stock_quantity: expected an integer or null, got a boolean"),
    ({**T, "stock_quantity": "5"}, "stock_quantity: expected an integer or null, got a string"),
    ({**T, "tax_included": 1}, "tax_included: expected a boolean or null, got an integer"),
    ({**T, "tags": "abc"}, "tags: expected a list, got a string"),
    ({**T, "tags": ["a", 1]}, "tags[1]: expected a string, got an integer"),
    ({**T, "categories": [{"id": "c", "name": "N", "x": 1}]}, "unknown category field(s): x"),
    ({**T, "categories": [{"id": "c", "name": "N", "path": "N"}]}, "categories[0].path: expected"),
    ({**T, "variants": [{"id": "v", "availability": "x"}]}, "variants[0].availability: 'x' is not"),
    (
        {**T, "variants": [{"id": "v", "options": [["Size", "M", "x"]]}]},
        "variants[0].options[0]: expected a list of 2, got a list of 3",
    ),
    (
        {**T, "variants": [{"id": "v", "options": [["Size", 1]]}]},
        "variants[0].options[0][1]: expected a string, got an integer",
    ),
    ({**T, "images": [{"id": "i", "src": "s", "position": "0"}]}, "images[0].position: expected"),
    ({**T, "rating": {"average": "4.5", "count": "12"}}, "rating.count: expected an integer"),
    ({**T, "extra": [["a", 1]]}, "extra: expected a map, got a list"),
    ({**T, "status": "x" * 200}, "status: 'xxxxxxxx"),  # long values are cut in the reason
]


@pytest.mark.parametrize(("data", "reason"), REFUSED_BY_THE_MODEL)
def test_what_the_model_refuses_the_hub_refuses(data: dict[str, Any], reason: str) -> None:
    with pytest.raises((TypeError, ValueError, KeyError)):
        Product.from_dict(data)
    assert ingest.invalid_product(data, "1") == f"invalid product: {reason}"
    assert not ingest._product_surely_valid(data)


@pytest.mark.parametrize(("data", "reason"), REFUSED_BY_THE_TYPES)
def test_what_the_model_types_exclude_the_hub_refuses(data: dict[str, Any], reason: str) -> None:
    Product.from_dict(data)  # lets it through
    problem = ingest.invalid_product(data, "1")
    assert problem is not None
    assert problem.startswith("invalid product: ")
    assert reason in problem
    assert len(problem) < 200
    assert not ingest._product_surely_valid(data)


def test_every_nested_value_of_a_valid_product_is_checked() -> None:
    # Break each leaf of FULL_PRODUCT in turn (a scalar becomes a list): the hub must refuse
    # every one of them, in the fast path and in the checks, and name where it is.
    def leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
        if isinstance(value, dict):
            for k, v in value.items():
                if k != "extra":  # any JSON goes in extra
                    yield from leaves(v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                yield from leaves(v, (*path, i))
        else:
            yield path

    paths = list(leaves(FULL_PRODUCT))
    assert len(paths) > 50
    for path in paths:
        broken = json.loads(json.dumps(FULL_PRODUCT))
        target = broken
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = [target[path[-1]]]
        assert not ingest._product_surely_valid(broken), path
        problem = ingest.invalid_product(broken, "7")
        assert problem is not None, path
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        assert problem.startswith(f"invalid product: {where}: "), (path, problem)


def test_the_fast_path_and_the_checks_agree_on_random_damage() -> None:
    # The generated fast path only answers "surely valid?"; the checks explain. Where the fast
    # path says yes the checks must find nothing, and the other way round for dicts.
    rng = random.Random(11)
    junk: list[Any] = [None, 0, 1.5, True, "s", [], ["s"], [["a", "b"]], {}, {"id": "x"}]
    samples = [FULL_PRODUCT, *(make_product(i).to_dict() for i in range(20))]
    outcomes: Counter[bool] = Counter()
    for _ in range(3000):
        data = json.loads(json.dumps(rng.choice(samples)))
        for _ in range(rng.randint(1, 2)):
            target = data
            while True:  # walk down to a random container
                keys = list(target) if isinstance(target, dict) else list(range(len(target)))
                if not keys:
                    break
                key = rng.choice(keys)
                if isinstance(target[key], dict | list) and rng.random() < 0.6:
                    target = target[key]
                    continue
                if isinstance(target, dict) and rng.random() < 0.2:
                    del target[key]
                elif isinstance(target, dict) and rng.random() < 0.1:
                    target[rng.choice(["colour", "id", "name", "src", "count"])] = "x"
                else:
                    target[key] = rng.choice(junk)
                break
        checks = ingest._PRODUCT.fields(data) or ingest._PRODUCT.missing(data)
        assert ingest._product_surely_valid(data) == (checks is None), (data, checks)
        outcomes[checks is None] += 1
    assert min(outcomes.values()) > 300  # both answers were exercised


async def test_patch_setting_a_field_to_a_wrong_type_is_rejected(client: Client) -> None:
    v1 = product("1")
    await send(client, upsert(1, v1))
    [result] = await send(client, patch(2, v1, {**v1, "price": 12.5}))
    assert (result.status, result.reason) == (
        "rejected",
        "invalid product: price: expected a string or null, got a float",
    )
    [result] = await send(client, patch(3, v1, {"id": "1", "price": "10.00"}))  # unsets title
    assert (result.status, result.reason) == ("rejected", "invalid product: missing field 'title'")
    other_id = {**v1, "id": "2"}
    [result] = await send(client, dataclasses.replace(patch(4, v1, other_id), id="1"))
    assert (result.status, result.reason) == (
        "rejected",
        "invalid product: data.id '2' is not the item id '1'",
    )
    assert (await stored(client, "1") or {})["data"] == v1


def test_a_patch_is_checked_on_the_fields_it_sets() -> None:
    # The base was checked when it was stored; what the patch sets is checked now.
    patched = {**T, "price": "1.00"}
    assert ingest.invalid_patch({"set": {"price": "1.00"}}, patched, "1") is None
    assert ingest.invalid_patch({"unset": ["sku"]}, T, "1") is None
    assert "unknown product field(s): colour" in str(
        ingest.invalid_patch({"set": {"colour": "red"}}, {**T, "colour": "red"}, "1")
    )


# -- inspection paging ---------------------------------------------------------------------------


async def test_paging_walks_every_product_in_id_text_order(client: Client) -> None:
    ids = ["9", "10", "1", "b", "a", "100", "2"]
    await send(client, *(upsert(i, product(pid)) for i, pid in enumerate(ids, start=1)))

    seen: list[str] = []
    after = ""
    pages = 0
    while True:
        resp = await client.get(
            "/v1/stores/main/products", params={"after": after, "limit": "3"}, headers=AUTH
        )
        assert resp.status == 200
        page = await resp.json()
        pages += 1
        seen += [p["id"] for p in page["products"]]
        assert all(p["data"] == product(p["id"]) for p in page["products"])
        if page["next"] is None:
            break
        assert page["next"] == seen[-1]
        after = page["next"]
    assert seen == sorted(ids)  # text order: "1" < "10" < "100" < "2" < "9" < "a" < "b"
    assert pages == 3


async def test_exactly_one_full_page_has_no_next(client: Client) -> None:
    await send(client, upsert(1, product("a")), upsert(2, product("b")))
    resp = await client.get("/v1/stores/main/products?limit=2", headers=AUTH)
    page = await resp.json()
    assert [p["id"] for p in page["products"]] == ["a", "b"]
    assert page["next"] is None


async def test_paging_defaults_and_bounds(client: Client) -> None:
    empty = await (await client.get("/v1/stores/none/products", headers=AUTH)).json()
    assert empty == {"products": [], "next": None}
    for bad in ("0", "-1", "ten"):
        resp = await client.get(f"/v1/stores/main/products?limit={bad}", headers=AUTH)
        assert resp.status == 400, bad
    capped = await client.get("/v1/stores/main/products?limit=100000", headers=AUTH)
    assert capped.status == 200


async def test_unknown_product_is_404(client: Client) -> None:
    resp = await client.get("/v1/stores/main/products/nope", headers=AUTH)
    assert resp.status == 404
    assert "nope" in (await resp.json())["error"]


# -- downstream: optimizations -------------------------------------------------------------------

SEO = {"seo_title": {"from": "Hoodie", "to": "Warm organic hoodie"}}


async def enqueue(client: Client, body: Any, store: str = "main") -> list[str]:
    resp = await client.post(f"/v1/stores/{store}/optimizations", json=body, headers=AUTH)
    assert resp.status == 201, await resp.text()
    ids: list[str] = (await resp.json())["ids"]
    return ids


async def poll(client: Client, store: str = "main", **params: str) -> wire.OptimizationFeed:
    resp = await client.get(f"/v1/stores/{store}/optimizations", params=params, headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == wire.CONTENT_TYPE
    return wire.decode_feed(await resp.read())


async def test_enqueue_then_feed_in_order_with_a_cursor(client: Client) -> None:
    [first] = await enqueue(client, {"product": "1", "fields": SEO})
    more = await enqueue(
        client,
        [{"product": "2", "fields": SEO}, {"product": "3", "fields": {"jsonld": {"to": {}}}}],
    )
    assert len({first, *more}) == 3
    assert all(len(i) == 32 for i in [first, *more])  # uuid4 hex

    feed = await poll(client)
    assert [o.id for o in feed.optimizations] == [first, *more]
    assert [o.product for o in feed.optimizations] == ["1", "2", "3"]
    assert feed.optimizations[0].fields == SEO
    assert feed.optimizations[0].created_at > 0

    after_all = await poll(client, after=feed.cursor)
    assert after_all.optimizations == ()
    assert after_all.cursor == feed.cursor  # an empty answer keeps the cursor

    from_middle = await poll(client, after=str(int(feed.cursor) - 1))
    assert [o.id for o in from_middle.optimizations] == [more[-1]]


async def test_feed_is_per_store_and_starts_with_a_nonempty_cursor(client: Client) -> None:
    await enqueue(client, {"product": "1", "fields": SEO}, store="eu")
    empty = await poll(client, store="us")
    assert empty.optimizations == ()
    assert empty.cursor == "0"
    assert len((await poll(client, store="eu")).optimizations) == 1


async def test_feed_pages_by_100(client: Client) -> None:
    await enqueue(client, [{"product": str(i), "fields": SEO} for i in range(150)])
    first = await poll(client)
    second = await poll(client, after=first.cursor)
    assert (len(first.optimizations), len(second.optimizations)) == (100, 50)
    assert second.optimizations[-1].product == "149"


async def test_long_poll_returns_when_an_optimization_is_enqueued(client: Client) -> None:
    cursor = (await poll(client)).cursor
    waiting = asyncio.create_task(poll(client, after=cursor, wait="10"))
    await asyncio.sleep(0.2)
    assert not waiting.done()  # nothing to say yet: it holds

    await enqueue(client, {"product": "other-store", "fields": SEO}, store="eu")
    await asyncio.sleep(0.1)
    assert not waiting.done()  # another store's optimization does not answer it

    loop = asyncio.get_running_loop()
    started = loop.time()
    [opt_id] = await enqueue(client, {"product": "1", "fields": SEO})
    feed = await asyncio.wait_for(waiting, 5)
    assert loop.time() - started < 2
    assert [o.id for o in feed.optimizations] == [opt_id]


async def test_long_poll_times_out_with_an_empty_answer(client: Client) -> None:
    await enqueue(client, {"product": "1", "fields": SEO})
    cursor = (await poll(client)).cursor
    loop = asyncio.get_running_loop()
    started = loop.time()
    feed = await poll(client, after=cursor, wait="0.3")
    assert loop.time() - started >= 0.25
    assert (feed.optimizations, feed.cursor) == ((), cursor)


@pytest.mark.parametrize("query", ["after=abc", "wait=soon", "wait=nan"])
async def test_feed_with_bad_parameters_is_400(client: Client, query: str) -> None:
    resp = await client.get(f"/v1/stores/main/optimizations?{query}", headers=AUTH)
    assert resp.status == 400


@pytest.mark.parametrize(
    "body",
    [
        {"product": "1"},
        {"product": "", "fields": SEO},
        {"product": "1", "fields": {}},
        {"product": "1", "fields": SEO, "id": "mine"},
        [],
        "text",
    ],
)
async def test_enqueue_refuses_malformed_optimizations(client: Client, body: Any) -> None:
    resp = await client.post("/v1/stores/main/optimizations", json=body, headers=AUTH)
    assert resp.status == 400
    assert (await poll(client)).optimizations == ()


async def test_enqueue_refuses_non_json(client: Client) -> None:
    resp = await client.post("/v1/stores/main/optimizations", data=b"{nope", headers=AUTH)
    assert resp.status == 400


async def test_results_are_recorded_and_unknown_ids_ignored(client: Client) -> None:
    applied, conflicted = await enqueue(
        client, [{"product": "1", "fields": SEO}, {"product": "2", "fields": SEO}]
    )
    queued = await (
        await client.get(f"/v1/stores/main/optimizations/{applied}", headers=AUTH)
    ).json()
    assert (queued["status"], queued["product"], queued["fields"]) == ("queued", "1", SEO)

    body = wire.encode_optimization_results(
        [
            wire.OptimizationResult(applied, "applied", hash="h1"),
            wire.OptimizationResult(conflicted, "conflict", detail="merchant changed seo_title"),
            wire.OptimizationResult("0" * 32, "failed"),
        ]
    )
    resp = await client.post("/v1/stores/main/optimizations/results", data=body, headers=MSGPACK)
    assert resp.status == 200
    assert wire.unpackb(await resp.read()) == {"v": 1, "accepted": 2, "unknown": 1}

    got = await (await client.get(f"/v1/stores/main/optimizations/{applied}", headers=AUTH)).json()
    assert (got["status"], got["hash"], got["detail"]) == ("applied", "h1", None)
    got = await (
        await client.get(f"/v1/stores/main/optimizations/{conflicted}", headers=AUTH)
    ).json()
    assert (got["status"], got["detail"]) == ("conflict", "merchant changed seo_title")
    assert got["reported_at"] >= got["created_at"]


async def test_results_for_another_store_do_not_match(client: Client) -> None:
    [opt_id] = await enqueue(client, {"product": "1", "fields": SEO}, store="eu")
    body = wire.encode_optimization_results([wire.OptimizationResult(opt_id, "applied")])
    resp = await client.post("/v1/stores/us/optimizations/results", data=body, headers=MSGPACK)
    assert wire.unpackb(await resp.read())["accepted"] == 0
    got = await (await client.get(f"/v1/stores/eu/optimizations/{opt_id}", headers=AUTH)).json()
    assert got["status"] == "queued"
    missing = await client.get(f"/v1/stores/us/optimizations/{opt_id}", headers=AUTH)
    assert missing.status == 404


async def test_malformed_results_are_400(client: Client) -> None:
    body = wire.packb({"results": [{"id": "x", "status": "done"}]})
    resp = await client.post("/v1/stores/main/optimizations/results", data=body, headers=MSGPACK)
    assert resp.status == 400
    assert "unknown status" in await resp.text()
    resp = await client.post(
        "/v1/stores/main/optimizations/results", data=json.dumps({"results": []}), headers=AUTH
    )
    assert resp.status == 415


# -- serve ---------------------------------------------------------------------------------------


async def test_serve_binds_a_free_port_and_stops_on_cancel(db_path: Path) -> None:
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve("127.0.0.1", 0, db_path, TOKEN, ready=bound.set_result))
    port = await asyncio.wait_for(bound, 5)
    assert port > 0
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz") as resp:
            assert resp.status == 200
        body = wire.encode_batch(AGENT, "b", 1, [upsert(1, product("1"))])
        async with session.post(f"{base}/v1/batches", data=body, headers=MSGPACK) as resp:
            assert resp.status == 200
        # A long poll in progress must not hold up the stop.
        poll_url = f"{base}/v1/stores/main/optimizations?wait=30"
        waiting = asyncio.create_task(session.get(poll_url, headers=AUTH))
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
        assert loop.time() - started < 5
        resp = await waiting
        assert resp.status == 200
        assert wire.decode_feed(await resp.read()).optimizations == ()
        resp.release()


async def test_serve_collects_garbage_less_often_and_restores_the_thresholds(
    db_path: Path,
) -> None:
    before = gc.get_threshold()
    seen: asyncio.Future[tuple[int, ...]] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        serve("127.0.0.1", 0, db_path, TOKEN, ready=lambda _: seen.set_result(gc.get_threshold()))
    )
    assert await asyncio.wait_for(seen, 5) == (hub_app.GC_THRESHOLD, *before[1:])
    server.cancel()
    with pytest.raises(asyncio.CancelledError):
        await server
    assert gc.get_threshold() == before


async def test_seq_memory_is_bounded_per_agent(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    db = await hub_db.HubDB.open(path, seq_memory=100)

    def batch(agent: str, *items: wire.Item) -> wire.Batch:
        return wire.Batch(v=1, agent=agent, batch=f"b-{items[0].seq}", sent_at=1, items=items)

    try:
        for start in range(1, 1001, 50):
            items = [
                upsert(s, {"id": str(s % 7), "title": f"v{s}"}) for s in range(start, start + 50)
            ]
            await db.apply_batch(batch("a", *items))
        await db.apply_batch(batch("b", upsert(1, {"id": "x", "title": "other agent"})))
        # A retry within the window is still a replay.
        again = upsert(990, {"id": str(990 % 7), "title": "v990"})
        assert [r.status for r in await db.apply_batch(batch("a", again))] == ["ok"]
        assert (await db.stats())["replays"] == 1
        # An older one is processed again: content idempotence gives the same product.
        old = upsert(5, {"id": "5", "title": "v5"})
        assert [r.status for r in await db.apply_batch(batch("a", old))] == ["ok"]
        assert (await db.stats())["replays"] == 1
    finally:
        await db.close()
    conn = sqlite3.connect(path)
    try:
        kept = dict(conn.execute("SELECT agent, COUNT(*) FROM seqs GROUP BY agent").fetchall())
    finally:
        conn.close()
    assert kept["b"] == 1
    assert 100 <= kept["a"] <= 102  # seqs 901-1000, and 5 again
