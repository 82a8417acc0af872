"""The shipper against a real reference hub on loopback, with the hub's failure modes injected."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import msgpack
import pytest
from aiohttp import web
from structlog.testing import capture_logs

from bridge_agent import wire
from bridge_agent.errors import HubAuthFailed, HubUnavailable
from bridge_agent.model import Change, Product
from bridge_agent.shipper import MAX_NO_RESULT_ATTEMPTS
from bridge_agent.store import StateStore
from bridge_agent.sync.hashing import content_hash
from bridge_agent.sync.retry import Backoff
from bridge_agent.testing.catalog import make_product
from tests.conftest import Hub, ShipperKit, status


def changes(products: list[Product | None], ids: list[str] | None = None) -> list[Change]:
    out = []
    for n, p in enumerate(products):
        pid = p.id if p is not None else (ids or [])[n]
        out.append(Change("main", pid, p, "spool", 1_700_000_000_000))
    return out


async def ship_all(kit: ShipperKit, state: StateStore, *, rounds: int = 50) -> None:
    for _ in range(rounds):
        if (await state.stats()).pending == 0:
            return
        await kit.shipper.ship_once()
    raise AssertionError("outbox did not drain")


async def assert_hub_matches(hub: Hub, expected: dict[str, Product | None]) -> None:
    products = await hub.products("main")
    for pid, product in expected.items():
        if product is None:
            assert products[pid]["deleted"], pid
        else:
            got = products[pid]
            assert not got["deleted"]
            assert got["data"] == product.to_dict(), pid
            assert got["hash"] == content_hash(product.to_dict())


async def test_upsert_then_patch_then_delete(
    hub: Hub, state: StateStore, make_shipper: Callable[..., ShipperKit]
) -> None:
    kit = make_shipper(hub)
    catalog = [make_product(i) for i in range(1, 21)]
    await state.record(changes(list(catalog)))
    await ship_all(kit, state)
    await assert_hub_matches(hub, {p.id: p for p in catalog})

    cheaper = replace(catalog[0], price="1.99")
    await state.record(changes([cheaper, None], ids=["1", "2"]))
    await ship_all(kit, state)
    await assert_hub_matches(hub, {"1": cheaper, "2": None})
    last = msgpack.unpackb(hub.faults.bodies[-1])
    ops = {item["id"]: item for item in last["items"]}
    assert ops["1"]["op"] == "patch"
    assert ops["1"]["data"] == {"set": {"price": "1.99"}}
    assert ops["1"]["base"] == content_hash(catalog[0].to_dict())
    assert ops["2"]["op"] == "delete"
    assert kit.metrics.value("bridge_hub_items_total", status="ok") == 22


async def test_edits_while_hub_is_down_ship_once_with_the_latest(
    hub: Hub, state: StateStore, make_shipper: Callable[..., ShipperKit]
) -> None:
    await hub.stop()
    kit = make_shipper(hub)
    for revision in range(5):
        await state.record(changes([make_product(1, revision=revision)]))
        with pytest.raises(HubUnavailable):
            await kit.shipper.ship_once()
    assert kit.shipper.hub.health.failing
    assert kit.shipper.hub.health.state == "unreachable"
    await hub.start()
    await ship_all(kit, state)
    await assert_hub_matches(hub, {"1": make_product(1, revision=4)})
    assert (await hub.stats())["items"] == 1  # five edits, one item
    assert not kit.shipper.hub.health.failing


@pytest.mark.parametrize(
    "fault",
    [
        status(500, body=b"boom"),
        status(502),
        status(503, {"Retry-After": "0"}),
        status(429, {"Retry-After": "0"}),
        status(200, {"Content-Type": wire.CONTENT_TYPE}, b"\xc1garbage"),
        status(200, {"Content-Type": wire.CONTENT_TYPE}, wire.packb({"v": 2, "results": []})),
        status(200, body=b"<html>proxy error page</html>"),
        status(404, body=b"not here"),
    ],
    ids=["500", "502", "503", "429", "not-msgpack", "wrong-version", "html", "404"],
)
async def test_hub_failures_lose_nothing(
    hub: Hub,
    state: StateStore,
    make_shipper: Callable[..., ShipperKit],
    fault: Callable[[], web.StreamResponse],
) -> None:
    kit = make_shipper(hub)
    catalog = [make_product(i) for i in range(1, 6)]
    await state.record(changes(list(catalog)))
    hub.faults.push(fault, fault)
    for _ in range(2):
        with pytest.raises(HubUnavailable):
            await kit.shipper.ship_once()
    assert (await state.stats()).pending == 5
    await ship_all(kit, state)
    await assert_hub_matches(hub, {p.id: p for p in catalog})
    # The retry of the very same items reused the batch id, as the protocol asks.
    ids = {msgpack.unpackb(b)["batch"] for b in hub.faults.bodies}
    assert len(ids) == 1


async def test_retry_after_is_honoured(
    hub: Hub, state: StateStore, make_shipper: Callable[..., ShipperKit]
) -> None:
    kit = make_shipper(hub)
    await state.record(changes([make_product(1)]))
    hub.faults.push(status(429, {"Retry-After": "1"}))
    task = asyncio.create_task(kit.shipper.run())
    started = time.monotonic()
    try:
        while (await state.stats()).pending:
            assert time.monotonic() - started < 10
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert time.monotonic() - started >= 1.0
    assert hub.faults.batch_requests == 2


async def test_401_stops_shipping_shows_in_health_and_loses_nothing(
    hub: Hub, state: StateStore, make_shipper: Callable[..., ShipperKit]
) -> None:
    bad = make_shipper(hub, token="wrong-token", auth_retry_interval=3600)
    await state.record(changes([make_product(1), make_product(2)]))
    task = asyncio.create_task(bad.shipper.run())
    try:
        for _ in range(200):
            if bad.shipper.hub.health.state == "auth_failed":
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    check = bad.shipper.hub.health.check()
    assert not check.ok
    assert check.state == "auth_failed"
    assert "token" in (check.detail or "")
    assert "wrong-token" not in (check.detail or "")
    assert bad.metrics.value("bridge_hub_requests_total") == 1  # stopped, did not hammer
    assert (await state.stats()).pending == 2
    with pytest.raises(HubAuthFailed):
        await bad.shipper.ship_once()
    good = make_shipper(hub)
    await ship_all(good, state)
    await assert_hub_matches(hub, {"1": make_product(1), "2": make_product(2)})


async def test_413_splits_the_batch_and_isolates_an_oversized_item(
    hub: Hub, state: StateStore, make_shipper: Callable[..., ShipperKit]
) -> None:
    await hub.stop()
    hub.max_body_bytes = 6_000
    await hub.start()
    kit = make_shipper(hub)
    small = [make_product(i) for i in range(1, 9)]
    huge = replace(make_product(99), description_html="<p>" + "x" * 20_000 + "</p>")
    await state.record(changes([*small, huge]))
    await ship_all(kit, state)
    await assert_hub_matches(hub, {p.id: p for p in small})
    (rejected,) = await state.outbox_rows(state="rejected")
    assert rejected.id == "99"
    assert "413" in (rejected.last_error or "")
    assert kit.metrics.value("bridge_hub_batches_total", outcome="split") >= 1


async def test_hub_rejection_sets_the_row_aside(
    hub: Hub, state: StateStore, make_shipper: Callable[..., ShipperKit]
) -> None:
    kit = make_shipper(hub)
    await state.record(changes([make_product(1), make_product(2)]))

    def reject_one() -> web.Response:
        body = wire.encode_results(
            [wire.Result(seq=1, status="rejected", reason="gtin invalid"), wire.Result(2, "ok")]
        )
        return web.Response(body=body, content_type=wire.CONTENT_TYPE)

    hub.faults.push(reject_one)
    await kit.shipper.ship_once()
    (row,) = await state.outbox_rows(state="rejected")
    assert (row.id, row.last_error) == ("1", "gtin invalid")
    assert await state.retry_rejected() == 1
    await ship_all(kit, state)
    await assert_hub_matches(hub, {"1": make_product(1)})


async def test_need_full_after_hub_lost_its_data(
    hub: Hub, state: StateStore, make_shipper: Callable[..., ShipperKit]
) -> None:
    kit = make_shipper(hub)
    await state.record(changes([make_product(1)]))
    await ship_all(kit, state)
    await hub.stop()
    hub.db_path.unlink()  # the hub is restored from an old backup, or rebuilt
    for suffix in ("-wal", "-shm"):
        hub.db_path.with_name(hub.db_path.name + suffix).unlink(missing_ok=True)
    await hub.start()
    newer = make_product(1, revision=1)
    await state.record(changes([newer]))
    await ship_all(kit, state)
    await assert_hub_matches(hub, {"1": newer})
    ops = [i["op"] for b in hub.faults.bodies for i in msgpack.unpackb(b)["items"]]
    assert ops == ["upsert", "patch", "upsert"]
    assert kit.metrics.value("bridge_hub_items_total", status="need_full") == 1


async def test_missing_result_keeps_the_row(
    hub: Hub, state: StateStore, make_shipper: Callable[..., ShipperKit]
) -> None:
    kit = make_shipper(hub)
    await state.record(changes([make_product(1), make_product(2)]))
    partial = wire.encode_results([wire.Result(seq=2, status="ok")])
    hub.faults.push(status(200, {"Content-Type": wire.CONTENT_TYPE}, partial))
    await kit.shipper.ship_once()
    # The injected reply stood in for the hub: "2" was acked (settled), "1" has no answer.
    assert [r.id for r in await state.outbox_rows(state="pending")] == ["1"]
    await ship_all(kit, state)
    await assert_hub_matches(hub, {"1": make_product(1)})


async def test_batches_respect_item_and_byte_bounds(
    hub: Hub, state: StateStore, make_shipper: Callable[..., ShipperKit]
) -> None:
    kit = make_shipper(hub, batch_max_items=7, batch_max_bytes=4_000)
    await state.record(changes([make_product(i) for i in range(1, 41)]))
    await ship_all(kit, state, rounds=100)
    sizes = [len(b) for b in hub.faults.bodies]
    counts = [len(msgpack.unpackb(b)["items"]) for b in hub.faults.bodies]
    assert max(counts) <= 7
    assert max(sizes) <= 4_000
    assert sum(counts) == 40


async def test_change_during_flight_is_shipped_in_the_next_batch(
    hub: Hub, state: StateStore, make_shipper: Callable[..., ShipperKit]
) -> None:
    kit = make_shipper(hub)
    await state.record(changes([make_product(1)]))
    newer = make_product(1, revision=3)

    async def edit_while_in_flight(request: web.Request) -> None:
        await state.record(changes([newer]))

    original = hub.faults.middleware

    @web.middleware
    async def spy(request: web.Request, handler: Callable[..., object]) -> web.StreamResponse:
        if request.path == "/v1/batches" and hub.faults.batch_requests == 0:
            await edit_while_in_flight(request)
        return await original(request, handler)  # type: ignore[arg-type]

    await hub.stop()
    hub.faults.middleware = spy  # type: ignore[method-assign]
    await hub.start()
    await kit.shipper.ship_once()
    assert (await state.stats()).pending == 1
    await kit.shipper.ship_once()
    await assert_hub_matches(hub, {"1": newer})
    assert hub.faults.batch_requests == 2


async def test_an_item_the_hub_never_answers_is_set_aside_not_resent_forever(
    hub: Hub, state: StateStore, make_shipper: Callable[..., ShipperKit]
) -> None:
    kit = make_shipper(hub)
    await state.record(changes([make_product(1)]))
    silent = wire.encode_results([])
    hub.faults.push(*[status(200, {"Content-Type": wire.CONTENT_TYPE}, silent)] * 100)
    rounds = 0
    while (await state.stats()).pending and rounds < 100:
        assert await kit.shipper.ship_once() in (0, 1)
        rounds += 1
    assert rounds == MAX_NO_RESULT_ATTEMPTS
    (row,) = await state.outbox_rows(state="rejected")
    assert "without a result" in (row.last_error or "")


async def test_batches_in_flight_together_never_share_a_product(
    hub: Hub, state: StateStore, make_shipper: Callable[..., ShipperKit]
) -> None:
    kit = make_shipper(hub, batch_max_items=5, max_in_flight=3)
    in_flight: list[set[str]] = []
    overlaps: list[set[str]] = []
    peak = 0
    original = hub.faults.middleware

    @web.middleware
    async def slow_watch(
        request: web.Request, handler: Callable[..., object]
    ) -> web.StreamResponse:
        nonlocal peak
        if request.path != "/v1/batches":
            return await original(request, handler)  # type: ignore[arg-type]
        ids = {i["id"] for i in msgpack.unpackb(await request.read())["items"]}
        overlaps.extend(ids & other for other in in_flight if ids & other)
        in_flight.append(ids)
        peak = max(peak, len(in_flight))
        try:
            await asyncio.sleep(0.05)
            return await original(request, handler)  # type: ignore[arg-type]
        finally:
            in_flight.remove(ids)

    await hub.stop()
    hub.faults.middleware = slow_watch  # type: ignore[method-assign]
    await hub.start()
    latest = {i: make_product(i) for i in range(1, 31)}
    await state.record(changes(list(latest.values())))

    async def keep_editing() -> None:
        for revision in range(1, 4):
            await asyncio.sleep(0.03)
            for i in range(1, 31, 3):
                latest[i] = make_product(i, revision=revision)
                await state.record(changes([latest[i]]))

    editor = asyncio.create_task(keep_editing())
    while not editor.done() or (await state.stats()).pending:
        await kit.shipper.ship_all()
        await asyncio.sleep(0.01)
    await editor
    assert peak >= 2  # batches really were at the hub together
    assert overlaps == []
    await assert_hub_matches(hub, {str(i): p for i, p in latest.items()})


async def test_hub_failure_is_logged_when_it_starts_and_when_it_ends(
    hub: Hub, state: StateStore, make_shipper: Callable[..., ShipperKit]
) -> None:
    kit = make_shipper(hub)
    await state.record(changes([make_product(1)]))
    hub.faults.push(*[status(503)] * 3)
    with capture_logs() as logs:
        for _ in range(3):
            with pytest.raises(HubUnavailable):
                await kit.shipper.ship_once()
        await ship_all(kit, state)
    events = [e["event"] for e in logs if e["event"].startswith("component_")]
    assert events == ["component_failing", "component_recovered"]
    failing = next(e for e in logs if e["event"] == "component_failing")
    assert failing["component"] == "hub"
    assert "503" in failing["detail"]
    messages = [(e.status, e.message) for e in reversed(await state.events())]
    assert len(messages) == 2  # one event when the outage starts, one when it ends
    assert messages[0][0] == 503
    assert "reachable again after 3" in messages[1][1]


# -- hostile or broken hubs (issue 10, classes 3 and 7) -----------------------------------------


class EndlessReply:
    """A 200 with the protocol's content type and an endless body, counted as it is sent."""

    def __init__(self) -> None:
        self.sent = 0

    def __call__(self) -> web.StreamResponse:
        async def body() -> AsyncIterator[bytes]:
            chunk = b"\x00" * 65_536
            while self.sent < 400 * 1024 * 1024:
                self.sent += len(chunk)
                yield chunk

        return web.Response(body=body(), content_type=wire.CONTENT_TYPE)


async def test_an_oversized_hub_reply_is_refused_while_it_is_read(
    hub: Hub, state: StateStore, make_shipper: Callable[..., ShipperKit]
) -> None:
    kit = make_shipper(hub)
    await state.record(changes([make_product(1)]))
    endless = EndlessReply()
    hub.faults.push(endless)
    with pytest.raises(HubUnavailable) as caught:
        await kit.shipper.ship_once()
    assert "larger than" in str(caught.value)
    assert endless.sent < 48 * 1024 * 1024  # stopped near the 8 MB bound, not at 400 MB
    assert (await state.stats()).pending == 1
    await ship_all(kit, state)  # and the next round ships as usual


async def test_a_deeply_nested_hub_reply_is_a_garbage_reply(
    hub: Hub, state: StateStore, make_shipper: Callable[..., ShipperKit]
) -> None:
    kit = make_shipper(hub)
    await state.record(changes([make_product(1)]))
    deep = b"\x91" * 100_000 + b"\xc0"  # arrays in arrays, 100 000 deep
    hub.faults.push(status(200, {"Content-Type": wire.CONTENT_TYPE}, deep))
    with pytest.raises(HubUnavailable) as caught:
        await kit.shipper.ship_once()
    assert "not protocol v1" in str(caught.value)
    await ship_all(kit, state)


async def test_a_retry_after_of_years_is_cut_and_the_hub_probed_again(
    hub: Hub, state: StateStore, make_shipper: Callable[..., ShipperKit]
) -> None:
    # A proxy asks for ten years; the hub is back a moment later. Shipping must resume within
    # the cap (here 0.5 s), not in ten years or in the old hour.
    kit = make_shipper(hub, backoff=Backoff(base=0.01, cap=0.05, retry_after_cap=0.5))
    await state.record(changes([make_product(1)]))
    hub.faults.push(status(503, {"Retry-After": str(10 * 365 * 86400)}))
    task = asyncio.create_task(kit.shipper.run())
    started = time.monotonic()
    try:
        while (await state.stats()).pending:
            assert time.monotonic() - started < 10, "shipping did not resume"
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert 0.5 <= time.monotonic() - started < 5
    assert hub.faults.batch_requests == 2


def test_retry_after_is_honoured_up_to_its_cap() -> None:
    backoff = Backoff(base=1, cap=10, retry_after_cap=120)
    assert backoff.delay(0, retry_after=30, rand=lambda: 0.0) == 30  # past `cap`: the hub wins
    assert backoff.delay(0, retry_after=3600, rand=lambda: 0.0) == 120  # past the cap: cut
