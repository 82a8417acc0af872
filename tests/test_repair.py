"""Repair against the hub: lost state, a hub that lost data, other hashes, kept deletions, resume.

Real SQLite, the real reference hub on loopback, the jsondir platform (a folder of JSON products
that the tests write and delete as a merchant would). Products carry no image, so the import's
image checks never leave the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge_agent import wire
from bridge_agent.agent import Agent
from bridge_agent.config import StoreSettings, load_config
from bridge_agent.errors import HubAuthFailed, HubRejected, HubUnavailable, WireError
from bridge_agent.health import Health
from bridge_agent.hublink import HubClient
from bridge_agent.metrics import Metrics
from bridge_agent.model import Product
from bridge_agent.platforms.jsondir import JsonDir
from bridge_agent.shipper import Shipper, ShipperSettings
from bridge_agent.sources import StoreContext
from bridge_agent.sources import importer as importer_module
from bridge_agent.sources import repair as repair_module
from bridge_agent.sources.importer import Importer
from bridge_agent.store import Run, StateStore
from bridge_agent.sync.hashing import content_hash
from bridge_agent.sync.retry import Backoff
from bridge_agent.testing.catalog import (
    delete_product,
    make_product,
    spool_event,
    write_product,
    write_spool,
)
from bridge_agent.testing.waiting import until
from tests.conftest import JSONDIR_STORE, TOKEN, Hub, free_port, make_config

# -- helpers -----------------------------------------------------------------------------------


def product(i: int, revision: int = 0) -> Product:
    return replace(make_product(i, revision=revision), images=())


def fill(catalog: Path, ids: Iterable[int]) -> None:
    catalog.mkdir(parents=True, exist_ok=True)
    for i in ids:
        write_product(catalog, product(i))


def hashed(i: int, revision: int = 0) -> str:
    return content_hash(product(i, revision).to_dict())


@contextlib.asynccontextmanager
async def running(config: Any) -> AsyncIterator[Agent]:
    agent = Agent(config)
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({task, waiter}, timeout=10, return_when="FIRST_COMPLETED")
    waiter.cancel()
    if task.done():
        task.result()
    try:
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)


async def hub_state(hub: Hub) -> dict[str, tuple[str | None, bool]]:
    """id -> (hash, deleted) as the hub holds it."""
    return {i: (p["hash"], p["deleted"]) for i, p in (await hub.products("main")).items()}


async def last_run(state_dir: Path, kind: str) -> Run | None:
    async with StateStore.open(state_dir, read_only=True) as state:
        return await state.last_run("main", kind)


async def repair_done(state_dir: Path) -> Run | None:
    run = await last_run(state_dir, "repair")
    return run if run is not None and run.state == "done" else None


async def post_upserts(hub: Hub, products: Iterable[Product], *, agent: str = "other") -> None:
    """What another writer (or an old backup) put at the hub, bypassing this agent."""
    items = [
        wire.Item(seq=n, store="main", id=p.id, op="upsert", hash=content_hash(p.to_dict()),
                  observed_at=1, source="import", data=p.to_dict())
        for n, p in enumerate(products, start=1)
    ]  # fmt: skip
    async with hub.client() as client:
        answer = await client.post(
            "/v1/batches",
            content=wire.encode_batch(agent, f"b-{time.time_ns()}", 1, items),
            headers={"Content-Type": wire.CONTENT_TYPE},
        )
    assert answer.status_code == 200
    assert {r.status for r in wire.decode_results(answer.content)} == {"ok"}


@dataclass
class Kit:
    """One store's importer (which executes repair runs) and a shipper, on one state store."""

    root: Path
    state: StateStore
    importer: Importer
    shipper: Shipper
    hashes_calls: list[str]

    async def run_all(self) -> None:
        """Execute every open run in order, then ship what they queued."""
        for run in await self.state.open_runs("main"):
            await self.importer.execute(run)
        await self.shipper.ship_all()


@pytest.fixture
async def kit_for(tmp_path: Path, hub: Hub) -> AsyncIterator[Callable[..., Awaitable[Kit]]]:
    stack = contextlib.AsyncExitStack()

    async def build(
        state_dir: str = "state",
        *,
        fail_hashes_call: int | None = None,
        **store: Any,
    ) -> Kit:
        state = await stack.enter_async_context(StateStore.open(tmp_path / state_dir))
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=hub.url, timeout=5))
        client = HubClient(http, TOKEN)
        calls: list[str] = []

        async def hub_hashes(store_id: str, after: str, limit: int) -> wire.HashPage:
            calls.append(after)
            if fail_hashes_call is not None and len(calls) == fail_hashes_call:
                raise HubUnavailable("hub answered 503: injected")
            return await client.hashes(store_id, after, limit)

        catalog = tmp_path / "catalog"
        catalog.mkdir(exist_ok=True)
        platform = JsonDir("main", catalog)
        settings = StoreSettings(
            id="main", platform="jsondir", url="http://127.0.0.1/",
            options={"catalog_dir": str(catalog)}, **store,
        )  # fmt: skip
        ctx = StoreContext("main", platform, state, lambda: None, Metrics(), Health("store:main"))
        importer = Importer(
            ctx,
            store=settings,
            build_platform=lambda s: contextlib.nullcontext(platform),
            hub_hashes=hub_hashes,
        )
        shipping = ShipperSettings(
            agent_id="test-agent", batch_linger=0.0, backoff=Backoff(base=0.01, cap=0.05)
        )
        shipper = Shipper(state, client, shipping, Metrics())
        return Kit(tmp_path, state, importer, shipper, calls)

    yield build
    await stack.aclose()


# -- (a) lost state: the agent repairs the hub on its own ---------------------------------------


async def test_lost_state_deletes_at_the_hub_what_the_store_force_deleted(
    tmp_path: Path, hub: Hub
) -> None:
    config = make_config(tmp_path, hub.url)
    catalog = tmp_path / "catalog"
    fill(catalog, range(1, 13))
    async with running(config):

        async def shipped() -> bool:
            return len(await hub_state(hub)) == 12

        await until(shipped, 15)
    before = await hub_state(hub)

    # While the agent is down its state directory is lost, and the merchant force-deletes three
    # products (no hook, no webhook: WooCommerce sends none for a force delete).
    shutil.rmtree(tmp_path / "state")
    gone = {"3", "7", "11"}
    for product_id in gone:
        delete_product(catalog, product_id)

    async with running(config):

        async def repaired() -> bool:
            return await repair_done(tmp_path / "state") is not None and all(
                deleted for i, (_, deleted) in (await hub_state(hub)).items() if i in gone
            )

        await until(repaired, 15)
    after = await hub_state(hub)
    assert {i for i, (_, deleted) in after.items() if deleted} == gone
    assert {i: after[i] for i in before if i not in gone} == {
        i: v for i, v in before.items() if i not in gone
    }
    run = await repair_done(tmp_path / "state")
    assert run is not None and run.report is not None
    assert run.report["hub_seen"] == 12 and run.report["deleted_at_hub"] == 3
    assert run.report["resent"] == run.report["missing_at_hub"] == run.report["kept"] == 0
    async with StateStore.open(tmp_path / "state", read_only=True) as state:
        messages = [e.message for e in await state.events()]
    assert any(f"repair run {run.id} finished" in m and "3 deleted at the hub" in m
               for m in messages)  # fmt: skip


async def test_lost_state_never_reuses_a_seq_the_hub_remembers_for_another_deletion(
    tmp_path: Path, hub: Hub
) -> None:
    """The hub is idempotent on (agent, seq), and a delete of one product looks like a delete
    of another (no hash): a new state that counted from 1 again would have its repair's deletion
    answered `ok` from the hub's memory, and the product would stay live."""
    config = make_config(tmp_path, hub.url)
    catalog = tmp_path / "catalog"
    fill(catalog, range(1, 5))  # seqs 1-4 in the first life
    async with running(config):

        async def shipped() -> bool:
            return len(await hub_state(hub)) == 4

        await until(shipped, 15)
        delete_product(catalog, "4")  # seq 5: a deletion, which the hub remembers
        write_spool(tmp_path / "spool", [spool_event("product.deleted", "4")])

        async def deleted() -> bool:
            return (await hub_state(hub))["4"][1]

        await until(deleted, 15)

    shutil.rmtree(tmp_path / "state")
    for product_id in ("2", "3"):
        delete_product(catalog, product_id)
    fill(catalog, (5, 6, 7))  # counting from 1 again, the deletion of "2" would be seq 5
    async with running(config):

        async def repaired() -> bool:
            now = await hub_state(hub)
            return (
                await repair_done(tmp_path / "state") is not None
                and now.get("2", (None, False))[1]
                and now.get("3", (None, False))[1]
            )

        await until(repaired, 15)
    after = await hub_state(hub)
    assert {i for i, (_, deleted) in after.items() if not deleted} == {"1", "5", "6", "7"}


# -- (b) a hub that lost data: sync --repair refills it -----------------------------------------


def _write_agent_toml(root: Path, hub_url: str) -> Path:
    path = root / "agent.toml"
    path.write_text(
        f"""[agent]
id = "repair-agent"
state_dir = "state"
drain_timeout = "5s"

[hub]
url = "{hub_url}"
token = "${{BRIDGE_HUB_TOKEN}}"
batch_linger = "0s"
backoff_base = "50ms"
backoff_cap = "200ms"

[health]
listen = "127.0.0.1:0"

{JSONDIR_STORE}""",
        encoding="utf-8",
    )
    return path


async def bridge_agent(*argv: str) -> tuple[int, str]:
    """The command as an operator runs it: another process (and its own logging set-up)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge_agent", *argv,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode()


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def test_sync_repair_refills_a_hub_that_lost_its_data(
    tmp_path: Path, hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRIDGE_HUB_TOKEN", TOKEN)
    path = _write_agent_toml(tmp_path, hub.url)
    fill(tmp_path / "catalog", range(1, 11))
    state_dir = tmp_path / "state"
    async with running(load_config(path)):

        async def settled() -> bool:
            return len(await hub_state(hub)) == 10 and await repair_done(state_dir) is not None

        await until(settled, 15)
        first = await repair_done(state_dir)

        # The hub is restored from an empty backup: it knows nothing any more.
        await hub.stop()
        await asyncio.to_thread(_remove_database, hub.db_path)
        await hub.start()
        assert await hub_state(hub) == {}

        argv = ["--config", str(path), "sync", "--store", "main", "--repair"]
        code, out = await bridge_agent(*argv)
        assert code == 0 and "repair run" in out, out

        async def refilled() -> bool:
            run = await repair_done(state_dir)
            return (
                run is not None
                and first is not None
                and run.id != first.id
                and await hub_state(hub) == {str(i): (hashed(i), False) for i in range(1, 11)}
            )

        await until(refilled, 15)
    run = await repair_done(state_dir)
    assert run is not None and run.report is not None
    assert run.report["hub_seen"] == 0 and run.report["missing_at_hub"] == 10
    assert run.report["deleted_at_hub"] == run.report["resent"] == 0

    code, table = await bridge_agent("--config", str(path), "status")
    assert code == 0, table
    assert any(
        line.split()[:4] == [str(run.id), "repair", "main", "done"] for line in table.splitlines()
    )


# -- (c) (d) (e): the run itself ----------------------------------------------------------------


async def test_a_product_whose_hub_hash_differs_is_sent_again_in_full(
    kit_for: Callable[..., Awaitable[Kit]], hub: Hub
) -> None:
    kit = await kit_for()
    fill(kit.root / "catalog", range(1, 6))
    await kit.importer.start_first_import()
    await kit.run_all()  # the import, then its repair: the hub has nothing yet
    assert await hub_state(hub) == {str(i): (hashed(i), False) for i in range(1, 6)}
    first = await kit.state.last_run("main", "repair")
    assert first is not None and first.report is not None
    assert first.report["pending"] == 5  # already queued by the import: sent once, not twice
    assert first.report["missing_at_hub"] == 0
    assert first.report["resent"] == first.report["deleted_at_hub"] == 0
    assert (await hub.stats())["by_op"] == {"upsert": 5}

    # Someone else wrote another version of product 2 at the hub; the mirror still believes
    # the hub holds its own, so a patch would be computed against the wrong base.
    await post_upserts(hub, [product(2, revision=3)])
    assert (await hub_state(hub))["2"] == (hashed(2, revision=3), False)

    await kit.state.start_run("repair", "main", importer_module.freeze(kit.importer.store))
    await kit.run_all()
    assert await hub_state(hub) == {str(i): (hashed(i), False) for i in range(1, 6)}
    run = await kit.state.last_run("main", "repair")
    assert run is not None and run.report is not None
    assert run.report["resent"] == 1 and run.report["hub_seen"] == 5
    assert run.report["missing_at_hub"] == run.report["deleted_at_hub"] == 0
    assert (await kit.state.stats()).pending == 0


async def test_deletions_false_keeps_products_at_the_hub_and_reports_them(
    kit_for: Callable[..., Awaitable[Kit]], hub: Hub, tmp_path: Path
) -> None:
    fill(tmp_path / "catalog", range(1, 7))
    await post_upserts(hub, [product(i) for i in range(1, 7)])  # what the lost state shipped
    for product_id in ("2", "5"):
        delete_product(tmp_path / "catalog", product_id)

    kit = await kit_for(deletions=False)  # a new, empty state
    sent_before = (await hub.stats())["items"]
    await kit.importer.start_first_import()
    await kit.run_all()
    assert (await hub.stats())["items"] == sent_before  # the hub had them all: nothing sent
    assert (await kit.state.stats()).pending == 0
    after = await hub_state(hub)
    assert after == {str(i): (hashed(i), False) for i in range(1, 7)}  # nothing deleted
    run = await kit.state.last_run("main", "repair")
    assert run is not None and run.report is not None
    assert run.report["kept"] == 2 and run.report["deleted_at_hub"] == 0
    assert run.report["acknowledged"] == 4  # the hub already held them
    events = [e for e in await kit.state.events() if f"repair run {run.id}" in e.message]
    assert len(events) == 1 and "2 deletion(s) kept (deletions = false)" in events[0].message


async def test_a_repair_resumes_after_its_checkpoint(
    kit_for: Callable[..., Awaitable[Kit]],
    hub: Hub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(repair_module, "PAGE", 3)  # 12 products: several slices
    monkeypatch.setattr(Backoff, "delay", lambda self, attempt, **kw: 0.0)  # retry at once
    catalog = tmp_path / "catalog"
    fill(catalog, range(1, 13))
    await post_upserts(hub, [product(i) for i in range(1, 13)])
    gone = {"3", "7", "11"}
    for product_id in gone:
        delete_product(catalog, product_id)

    kit = await kit_for(fail_hashes_call=3)  # the hub fails in the middle of the walk
    await kit.importer.start_first_import()
    task = asyncio.create_task(kit.importer.run())
    try:

        async def finished() -> bool:
            run = await kit.state.last_run("main", "repair")
            # The run is marked done before the importer clears its health: wait for both.
            done = run is not None and run.state == "done"
            return done and not kit.importer.health.failing

        await until(finished, 15)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    failed_at = kit.hashes_calls[2]
    assert failed_at != ""  # the third page starts after what the first two committed
    assert kit.hashes_calls.count("") == 1  # resumed from the checkpoint, not from the start
    assert kit.hashes_calls[3] == failed_at  # the page that failed is asked again
    run = await kit.state.last_run("main", "repair")
    assert run is not None and run.report is not None
    assert run.report["hub_seen"] == 12  # each hub product counted once across the two tries
    assert run.report["deleted_at_hub"] == 3
    assert not kit.importer.health.failing  # the pause was reported, and is over
    await kit.shipper.ship_all()
    after = await hub_state(hub)
    assert {i for i, (_, deleted) in after.items() if deleted} == gone


# -- (f) the protocol extension: wire and the reference hub's route -----------------------------


def test_hash_page_round_trip() -> None:
    page = wire.HashPage(
        items=(
            wire.HashEntry("1", "h1", False),
            wire.HashEntry("10", None, True),
            wire.HashEntry("2", "h2", True),
        ),
        next="2",
    )
    assert wire.decode_hash_page(wire.encode_hash_page(page)) == page
    last = wire.HashPage(items=())
    assert wire.decode_hash_page(wire.encode_hash_page(last)) == last


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ([], "hashes: expected a map"),
        ({"v": 2, "items": []}, "hashes.v"),
        ({"v": 1}, "hashes.items: missing"),
        ({"v": 1, "items": {}}, "hashes.items: expected list"),
        ({"v": 1, "items": [["1", "h"]]}, "items[0]: expected [id, hash or nil, deleted]"),
        ({"v": 1, "items": [[1, "h", False]]}, "items[0][0]"),
        ({"v": 1, "items": [["", "h", False]]}, "items[0][0]"),
        ({"v": 1, "items": [["1", 5, False]]}, "items[0][1]"),
        ({"v": 1, "items": [["1", "h", 0]]}, "items[0][2]"),
        ({"v": 1, "items": [["2", "h", False], ["10", "h", False]]}, "items[1][0]"),
        ({"v": 1, "items": [["1", "h", False], ["1", "h", False]]}, "items[1][0]"),
        ({"v": 1, "items": [], "next": "1"}, "hashes.next"),
        ({"v": 1, "items": [["1", "h", False]], "next": "9"}, "hashes.next"),
        ({"v": 1, "items": [["1", "h", False]], "next": 1}, "hashes.next"),
        ({"v": 1, "items": [[str(i), "h", False] for i in range(5001)]}, "hashes.items: 5001"),
    ],
)
def test_hash_page_decoder_says_which_part_is_wrong(doc: Any, where: str) -> None:
    with pytest.raises(WireError, match="^" + re.escape(where)):
        wire.decode_hash_page(msgpack.packb(doc))


def test_hash_page_decoder_refuses_garbage_and_depth() -> None:
    with pytest.raises(WireError):
        wire.decode_hash_page(b"\xc1not msgpack")
    nested: Any = "x"
    for _ in range(100):
        nested = [nested]
    with pytest.raises(WireError):
        wire.decode_hash_page(msgpack.packb({"v": 1, "items": nested}))


async def test_hub_hashes_route_pages_in_binary_id_order_with_auth_and_checks(hub: Hub) -> None:
    ids = ["1", "10", "2", "9", "b", "a", "é"]
    await post_upserts(hub, [replace(product(1), id=i) for i in ids])
    async with hub.client() as client:  # a delete, so that a tombstone shows as deleted
        item = wire.Item(seq=99, store="main", id="9", op="delete", hash=None, observed_at=1,
                         source="verify")  # fmt: skip
        answer = await client.post(
            "/v1/batches",
            content=wire.encode_batch("other", "del", 1, [item]),
            headers={"Content-Type": wire.CONTENT_TYPE},
        )
        assert answer.status_code == 200

        async def get(**params: str) -> httpx.Response:
            return await client.get("/v1/stores/main/hashes", params=params)

        first = await get(limit="3")
        assert first.status_code == 200
        assert first.headers["Content-Type"] == wire.CONTENT_TYPE
        page = wire.decode_hash_page(first.content)
        assert [e.id for e in page.items] == ["1", "10", "2"] and page.next == "2"
        rest = wire.decode_hash_page((await get(after="2", limit="3")).content)
        assert [e.id for e in rest.items] == ["9", "a", "b"] and rest.next == "b"
        end = wire.decode_hash_page((await get(after="b", limit="3")).content)
        assert [e.id for e in end.items] == ["é"] and end.next is None  # UTF-8 bytes sort last
        assert rest.items[0] == wire.HashEntry("9", content_hash(replace(product(1), id="9")
                                                                 .to_dict()), True)  # fmt: skip
        assert wire.decode_hash_page((await get()).content).next is None  # default 1000
        empty = wire.decode_hash_page((await client.get("/v1/stores/none/hashes")).content)
        assert empty == wire.HashPage(items=())
        assert len(wire.decode_hash_page((await get(limit="99999")).content).items) == 7
        for bad in ("0", "-1", "x", "1.5", "9" * 5000):
            answer = await get(limit=bad)
            assert answer.status_code == 400, bad
            assert "limit" in answer.text
    async with httpx.AsyncClient(base_url=hub.url) as anonymous:
        assert (await anonymous.get("/v1/stores/main/hashes")).status_code == 401


async def test_hub_client_hashes_pages_and_maps_failures(hub: Hub) -> None:
    await post_upserts(hub, [product(i) for i in range(1, 6)])
    async with httpx.AsyncClient(base_url=hub.url, timeout=5) as http:
        client = HubClient(http, TOKEN)
        seen: list[str] = []
        after = ""
        while True:
            page = await client.hashes("main", after, 2)
            seen += [e.id for e in page.items]
            if page.next is None:
                break
            after = page.next
        assert seen == ["1", "2", "3", "4", "5"]
        with pytest.raises(HubAuthFailed):
            await HubClient(http, "wrong-token").hashes("main", "", 10)
        with pytest.raises(HubRejected):
            await client.hashes("main", "", 0)


async def test_hub_client_refuses_hash_pages_that_would_never_end() -> None:
    """A hub that ignores `after` or `limit`, or answers garbage: refused, never paged on."""
    answer: dict[str, Any] = {}
    stores: list[str] = []

    async def hashes(request: web.Request) -> web.StreamResponse:
        stores.append(request.match_info["store"])
        if "status" in answer:
            return web.Response(status=answer["status"])
        return web.Response(body=answer["body"], content_type=wire.CONTENT_TYPE)

    app = web.Application()
    app.router.add_get("/v1/stores/{store}/hashes", hashes)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            client = HubClient(http, TOKEN)

            def page(*ids: str, next_: str | None = None) -> bytes:
                return wire.encode_hash_page(
                    wire.HashPage(tuple(wire.HashEntry(i, "h", False) for i in ids), next_)
                )

            answer["body"] = page("a", "b", next_="b")
            assert [e.id for e in (await client.hashes("a/b", "", 2)).items] == ["a", "b"]
            assert stores == ["a/b"]  # a store id is one path segment, whatever it holds
            for body, after, limit in (
                (page("a", "b", next_="b"), "b", 2),  # ignores after
                (page("a", "b", "c"), "", 2),  # ignores limit
                (b"\x93garbage", "", 2),
                (wire.packb({"v": 1, "items": [["b", "h", False], ["a", "h", False]]}), "", 2),
            ):
                answer["body"] = body
                with pytest.raises(HubUnavailable, match="not protocol v1"):
                    await client.hashes("main", after, limit)
            answer["status"] = 404  # a hub from before this route
            with pytest.raises(HubUnavailable, match="404"):
                await client.hashes("main", "", 2)
    finally:
        await server.close()
