"""The defects a review of the Shopify adapter found (issue 14), one test each: against the
Shopify simulator on 127.0.0.1, a small aiohttp stand-in for what the simulator cannot be made to
do (an operation stuck running, a result that lost lines, storage that trickles), or the pure
parts (the cost bucket, the bulk spool) with an injected clock."""

from __future__ import annotations

import asyncio
import heapq
import json
from typing import Any

import httpx
import pytest
from aiohttp import web

from bridge_agent.errors import Outcome, PlatformError, PlatformUnavailable
from bridge_agent.platforms.base import WebhookDelivery
from bridge_agent.platforms.http import background_work
from bridge_agent.platforms.shopify import adapter as shopify_adapter
from bridge_agent.platforms.shopify import queries
from bridge_agent.platforms.shopify.bulk import BulkSpool
from bridge_agent.platforms.shopify.mapping import map_product
from bridge_agent.platforms.shopify.throttle import MAX_ACQUIRE_WAIT, CostBucket, ThrottleStatus
from bridge_agent.testing.waiting import until
from tests import test_shopify_adapter
from tests.test_shopify_adapter import (
    _COST,
    _SHOP,
    Sim,
    _listen,
    _stand_in,
    adapter_for,
    read_catalog,
)

shop = test_shopify_adapter.shop  # the simulator on 127.0.0.1 (a fixture)
http = test_shopify_adapter.http

_OPERATION = "gid://shopify/BulkOperation/7"


def _started() -> dict[str, Any]:
    return {
        "bulkOperationRunQuery": {
            "bulkOperation": {"id": _OPERATION, "status": "CREATED"},
            "userErrors": [],
        }
    }


class _FakeTime:
    """A clock and a sleep that advances it, for the cost bucket."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds
        assert self.sleeps < 1000, f"still waiting after {self.now:.0f} s"


# -- 2. live work first in the cost bucket ---------------------------------------------------------


async def test_a_webhook_resolves_within_its_timeout_during_an_import(
    shop: Sim, http: httpx.AsyncClient
) -> None:
    """Defect: the bucket's one first-come turn was held while the import slept for points, and
    `resolve_webhook` queued behind it (5.7 s against sources/webhooks.py's 3 s: a 503)."""
    await shop.faults(bucket_max=1000, restore_rate=50)  # a Standard shop
    node = (await shop.truth())[0]
    item = node["variants"][0]["inventoryItem"]["id"].rsplit("/", 1)[-1]
    adapter = adapter_for(shop, http, bulk_import=False)
    await adapter.check()

    async def sweep() -> None:
        with background_work():  # as the run machinery marks an import or a sweep
            while True:
                async for _ in adapter.catalog():
                    pass

    task = asyncio.create_task(sweep())
    slowest = 0.0
    loop = asyncio.get_running_loop()
    try:
        # Each resolve asked once the sweep waits for its next page's points.
        for _ in range(4):
            await until(lambda: adapter.client.bucket.waiting > 0, what="the sweep waits")
            delivery = WebhookDelivery(
                kind="product", topic="inventory_levels/update", references=(item,)
            )
            started = loop.time()
            ids = await adapter.resolve_webhook(delivery)
            slowest = max(slowest, loop.time() - started)
            assert ids == (node["id"].rsplit("/", 1)[-1],)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert adapter.client.bucket.waited > 0  # the sweep did wait for points meanwhile
    assert slowest < 1.5, f"resolving took {slowest:.1f} s"
    assert (await shop.stats())["throttled"] == 0


async def test_background_work_leaves_the_live_reserve() -> None:
    """Background requests go out only when the bucket keeps a live reserve besides their cost;
    a live request waiting meanwhile is not queued behind them."""
    time = _FakeTime()
    bucket = CostBucket(clock=time.clock, sleep=time.sleep)
    bucket.observe(ThrottleStatus(1000, 1000, 50))
    assert bucket.live_reserve() == 250
    with background_work():
        await bucket.acquire(700)  # 300 left: the reserve kept
        assert time.now == 0
        await bucket.acquire(100)  # 200 left would break the reserve: waits for 50 points
    assert time.now == pytest.approx(1.0)
    await bucket.acquire(250)  # live: may spend the reserve, no wait
    assert time.now == pytest.approx(1.0)


async def test_a_live_request_does_not_wait_behind_a_sleeping_background_one() -> None:
    """Defect: the one turn lock was held through a background request's sleep."""
    asleep = asyncio.Event()
    wake = asyncio.Event()

    async def sleep(seconds: float) -> None:
        asleep.set()
        await wake.wait()

    bucket = CostBucket(sleep=sleep)
    bucket.observe(ThrottleStatus(1000, 300, 1))

    async def background() -> None:
        with background_work():
            await bucket.acquire(900)

    task = asyncio.create_task(background())
    await asyncio.wait_for(asyncio.shield(asleep.wait()), 5)
    await asyncio.wait_for(bucket.acquire(10), 1)  # live: the bucket has it, no queueing
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_live_request_waiting_for_points_goes_before_background_work() -> None:
    """While a live request waits for its points, background requests take none (a sweep of
    cheap pages would otherwise keep a costly live read waiting)."""
    order: list[str] = []
    bucket = CostBucket()
    bucket.observe(ThrottleStatus(1000, 0, 1000))

    async def background() -> None:
        with background_work():
            await bucket.acquire(200)  # alone: would go at 450 points (0.45 s)
        order.append("background")

    async def live() -> None:
        await bucket.acquire(600)  # 0.6 s
        order.append("live")

    task = asyncio.create_task(background())
    await until(lambda: bucket.waiting > 0, what="the background request waits")
    await asyncio.wait_for(asyncio.gather(live(), task), 10)
    assert order == ["live", "background"]


async def test_a_stream_of_cheaper_live_requests_never_starves_a_costly_one() -> None:
    """Defect (chaos, Shopify seeds 2018/2026/2029): a poll asking 872 points each second took
    the points every time the bucket reached 872, and a downstream re-fetch asking 900 waited
    for ever; the JSON-LD, verification and every optimisation behind it stood still. Live
    waiters are served in order: a later one only takes points beyond the earlier ones' need."""
    bucket = CostBucket()
    bucket.observe(ThrottleStatus(1000, 0, 1000))  # 1 000 points a second: 0.9 s for 900
    polls = 0

    async def poll_each_time() -> None:
        nonlocal polls
        while True:
            await bucket.acquire(870)
            bucket.release(870)  # answered at once; its points stay spent, as Shopify's
            polls += 1

    head = asyncio.create_task(bucket.acquire(900))
    await until(lambda: bucket.waiting > 0, what="the costly request waits")
    stream = asyncio.create_task(poll_each_time())
    try:
        await asyncio.wait_for(head, 5)  # before the fix: never (the polls took every 870)
        await until(lambda: polls >= 2, what="the polls go on after it")
    finally:
        stream.cancel()
        await asyncio.gather(stream, return_exceptions=True)


async def test_a_cheap_live_request_still_passes_when_the_bucket_holds_both() -> None:
    """Order among live waiters costs nothing when there are points for everyone: a webhook's
    3-point resolve goes at once beside a waiting 900 when the bucket holds 903."""
    time = _FakeTime()
    bucket = CostBucket(clock=time.clock, sleep=time.sleep)
    bucket.observe(ThrottleStatus(2000, 950, 100))
    bucket._live_waiters[1], bucket._live_need = 900.0, 900.0  # a 900 waits (its sleep aside)
    await bucket.acquire(3)
    assert time.now == 0  # 950 >= 900 + 3: no wait
    await bucket.acquire(300)  # beyond the 250 points later requests may pass with
    assert time.now == pytest.approx(2.53)  # 947 left: waits until 900 + 300 are there


async def test_a_webhook_resolve_passes_a_waiting_poll() -> None:
    """A live 3-point resolve (3 s to answer) does not queue behind a live 872-point poll that
    waits 15 s for points on a Standard shop."""
    time = _FakeTime()
    bucket = CostBucket(clock=time.clock, sleep=time.sleep)
    bucket.observe(ThrottleStatus(1000, 100, 50))
    bucket._live_waiters[1], bucket._live_need = 872.0, 872.0  # the poll waits (sleep aside)
    await bucket.acquire(3)
    assert time.now == 0


class _VirtualTime:
    """Sleeps park until `run_until` moves the clock: tasks interleave as in real time."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._count = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._count += 1
        heapq.heappush(self._sleepers, (self.now + seconds, self._count, future))
        await future

    async def settle(self) -> None:
        for _ in range(50):
            await asyncio.sleep(0)

    async def run_until(self, moment: float) -> None:
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= moment:
            when, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, when)
            if not future.done():
                future.set_result(None)
            await self.settle()
        self.now = max(self.now, moment)
        await self.settle()


async def test_a_waiter_that_leaves_wakes_the_ones_behind_it() -> None:
    """A 500 waits behind a 900 (together 28 s at 50 points a second); the 900 is cancelled
    at 0.5 s: the 500 goes when its own points are there (10 s), not on its old wait."""
    time = _VirtualTime()
    bucket = CostBucket(clock=time.clock, sleep=time.sleep)
    bucket.observe(ThrottleStatus(1000, 0, 50))
    head = asyncio.create_task(bucket.acquire(900))
    await time.settle()
    went: list[float] = []

    async def second() -> None:
        await bucket.acquire(500)
        went.append(time.now)

    task = asyncio.create_task(second())
    await time.run_until(0.5)
    head.cancel()
    await time.run_until(60)
    await asyncio.gather(head, task, return_exceptions=True)
    assert went and went[0] == pytest.approx(10.0, abs=0.1)
    assert bucket._live_need == 0 and not bucket._live_waiters


# -- 3. a refused resume cursor ----------------------------------------------------------------


async def test_a_refused_page_cursor_restarts_the_walk(shop: Sim, http: httpx.AsyncClient) -> None:
    """Defect: a `page:` checkpoint Shopify refuses failed the run at every resume."""
    adapter = adapter_for(shop, http, bulk_import=False)
    products = await read_catalog(adapter, "page:bm9wZQ==")
    assert len(products) == len(await shop.truth())


# -- 4. answers out of order -------------------------------------------------------------------


async def test_an_older_report_does_not_raise_the_modelled_level() -> None:
    """Defect: the report of a request answered late replaced a newer one, overstating the
    bucket (then Shopify answers THROTTLED under concurrency)."""
    time = _FakeTime()
    bucket = CostBucket(clock=time.clock, sleep=time.sleep)
    bucket.observe(ThrottleStatus(1000, 1000, 50))
    first = await bucket.acquire(400)
    second = await bucket.acquire(400)
    bucket.release(400)  # the second is answered first: Shopify charged both
    bucket.observe(ThrottleStatus(1000, 200, 50), second)
    newer = bucket.level()
    assert newer is not None and newer <= 200  # the truth, or less (the cautious side)
    bucket.release(400)  # the first's answer, produced before the second was charged
    bucket.observe(ThrottleStatus(1000, 600, 50), first)
    assert bucket.level() == newer


# -- 5. the started operation is checkpointed ----------------------------------------------------


async def test_a_started_bulk_operation_is_named_before_its_download(
    shop: Sim, http: httpx.AsyncClient
) -> None:
    """Defect: a crash between the operation's start and the first page of products left no
    token, so the resumed run started (and waited for) a new operation."""
    adapter = adapter_for(shop, http)

    async def crash(operation: Any) -> Any:
        raise asyncio.CancelledError  # killed during the download

    adapter._download = crash  # type: ignore[method-assign]
    tokens: list[str | None] = []

    async def walk() -> None:
        async for page in adapter.catalog():
            assert not page.products
            tokens.append(page.next_token)

    with pytest.raises(asyncio.CancelledError):
        await walk()
    assert tokens and all(t is not None and t.startswith("bulk:") for t in tokens)
    assert tokens[0] is not None and tokens[0].endswith(":0")
    # Resuming there reads the same operation's result, not a new one.
    assert (await shop.stats())["bulk_operations"] == 1
    products = await read_catalog(adapter_for(shop, http), tokens[-1])
    assert len(products) == len(await shop.truth())
    assert (await shop.stats())["bulk_operations"] == 1


# -- 6. a result that lost lines -------------------------------------------------------------------


async def test_a_result_missing_child_lines_is_downloaded_again(
    http: httpx.AsyncClient, tmp_path: Any
) -> None:
    """Defect: a file cut at a line boundary that lost only child lines passed the
    rootObjectCount check, and product 1 shipped without its variant."""
    lines = [
        json.dumps({"id": "gid://shopify/Product/1", "title": "One", "status": "ACTIVE"}),
        json.dumps({"id": "gid://shopify/Product/2", "title": "Two", "status": "ACTIVE"}),
        json.dumps(
            {
                "id": "gid://shopify/ProductVariant/11",
                "price": "1.00",
                "position": 1,
                "__parentId": "gid://shopify/Product/1",
            }
        ),
    ]
    whole = ("\n".join(lines) + "\n").encode()
    cut = ("\n".join(lines[:2]) + "\n").encode()  # the child line lost, cleanly
    downloads = 0
    operation = {
        "id": _OPERATION,
        "status": "COMPLETED",
        "rootObjectCount": "2",
        "objectCount": "3",
        "fileSize": str(len(whole)),
    }

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal downloads
        if request.path == "/result.jsonl":
            downloads += 1
            return web.Response(body=cut if downloads == 1 else whole)
        name = (await request.json())["operationName"]
        if name == "BulkProducts":
            data: Any = _started()
        elif name == "BulkOperation":
            data = {"node": {**operation, "url": f"{base}/result.jsonl"}}
        else:
            data = _SHOP
        return web.json_response({"data": data, "extensions": {"cost": _COST}})

    base, runner = await _listen(handler)
    try:
        adapter = _stand_in(base, http)
        adapter._sleep = lambda s: asyncio.sleep(0)
        adapter._spool_dir = str(tmp_path)
        products = await read_catalog(adapter)
    finally:
        await runner.cleanup()
    assert downloads == 2
    assert {p.id: [v.id for v in p.variants] for p in products} == {"1": ["11"], "2": []}


# -- 7. stalls -------------------------------------------------------------------------------------


async def test_a_bulk_operation_stuck_running_is_given_up(http: httpx.AsyncClient) -> None:
    """Defect: an operation that never ends was polled for ever. Now: given up after
    BULK_WAIT_MAX, one new operation, then paged queries (which this stand-in cannot serve)."""
    polls = 0
    started = 0
    pages = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal polls, started, pages
        name = (await request.json())["operationName"]
        if name == "BulkProducts":
            started += 1
            data: Any = _started()
        elif name == "BulkOperation":
            polls += 1
            data = {"node": {"id": _OPERATION, "status": "RUNNING"}}
        elif name == "ProductsPage":
            pages += 1
            data = {"products": {"nodes": [], "pageInfo": {"hasNextPage": False}}}
        else:
            data = _SHOP
        return web.json_response({"data": data, "extensions": {"cost": _COST}})

    url, runner = await _listen(handler)
    slept = 0.0

    async def sleep(seconds: float) -> None:
        nonlocal slept
        slept += seconds
        assert polls < 5000, f"polled {polls} times over {slept / 3600:.1f} h"

    try:
        adapter = _stand_in(url, http)
        adapter._sleep = sleep
        tokens = [page.next_token async for page in adapter.catalog()]
    finally:
        await runner.cleanup()
    assert started == 2 and pages == 1
    assert tokens[-1] is None
    assert slept < 2 * shopify_adapter.BULK_WAIT_MAX + 60


async def test_a_nonsense_restore_rate_never_stalls_forever() -> None:
    """Defect: a restoreRate of 1e-9 points/s was believed (waits of years, in 60 s steps)."""
    time = _FakeTime()
    status = ThrottleStatus.parse(
        {
            "cost": {
                "throttleStatus": {
                    "maximumAvailable": 1000,
                    "currentlyAvailable": 0,
                    "restoreRate": 1e-9,
                }
            }
        }
    )
    assert status is not None
    bucket = CostBucket(clock=time.clock, sleep=time.sleep)
    bucket.observe(status)
    await bucket.acquire(100)
    assert time.now == pytest.approx(100)  # at the floor of 1 point a second


async def test_a_bucket_that_never_refills_is_given_up_on() -> None:
    """A wait for points has a limit in total: a clear RATE_LIMITED error after it."""
    time = _FakeTime()
    bucket = CostBucket(clock=lambda: 0.0, sleep=time.sleep)  # the clock stands still
    bucket.observe(ThrottleStatus(1000, 0, 50))
    with pytest.raises(PlatformUnavailable, match="did not refill") as raised:
        await bucket.acquire(500)
    assert raised.value.outcome is Outcome.RATE_LIMITED
    assert bucket.waited <= MAX_ACQUIRE_WAIT + 60


# -- 8. a bucket smaller than a query -----------------------------------------------------------


async def test_a_small_bucket_serves_follow_up_queries(shop: Sim, http: httpx.AsyncClient) -> None:
    """Defect: the variants follow-up asked 804 points of a 500-point bucket (THROTTLED 6
    times, then failed)."""
    variants = [
        {"sku": f"V-{n}", "price": "1.00", "selectedOptions": [{"name": "N", "value": str(n)}]}
        for n in range(40)
    ]
    created = await shop.http.post("/__sim/products", json={"title": "Big", "variants": variants})
    created.raise_for_status()
    product_id = str(created.json()["id"]).rsplit("/", 1)[-1]
    await shop.faults(bucket_max=500, restore_rate=5000)
    adapter = adapter_for(shop, http)
    await adapter.check()
    fetched = await adapter.fetch_product(product_id)
    assert fetched is not None and len(fetched.variants) == 40
    assert (await shop.stats())["throttled"] == 0


async def test_a_small_bucket_lists_product_ids(shop: Sim, http: httpx.AsyncClient) -> None:
    """Defect: an id page asked 253 points of a 200-point bucket."""
    await shop.faults(bucket_max=200, restore_rate=5000)
    adapter = adapter_for(shop, http)
    await adapter.check()
    ids = [i async for page in adapter.product_ids() for i in page]
    assert len(ids) == len(await shop.truth())
    assert (await shop.stats())["throttled"] == 0


async def test_a_query_larger_than_the_bucket_fails_at_once(
    shop: Sim, http: httpx.AsyncClient
) -> None:
    """A query that cannot be made to fit is refused with a clear message after the answer
    that reported the bucket, not after six THROTTLED answers."""
    await shop.faults(bucket_max=40, restore_rate=5000)
    adapter = adapter_for(shop, http)
    await adapter.check()
    assert queries.product_cost() > 40
    node = (await shop.truth())[0]
    with pytest.raises(PlatformUnavailable, match="more than Shopify's query cost bucket"):
        await adapter.fetch_product(node["id"].rsplit("/", 1)[-1])
    assert adapter.client.throttled == 0


# -- 9. repeated lines ---------------------------------------------------------------------------


def test_a_duplicated_bulk_line_is_read_once(tmp_path: Any) -> None:
    """Defect: a repeated product line made two products, a repeated child two variants."""
    child = json.dumps(
        {
            "id": "gid://shopify/ProductVariant/11",
            "price": "1.00",
            "position": 1,
            "__parentId": "gid://shopify/Product/1",
        }
    ).encode()
    root = json.dumps({"id": "gid://shopify/Product/1", "title": "One", "status": "ACTIVE"})
    with BulkSpool(str(tmp_path)) as spool:
        for line in (child, root.encode(), child, root.encode()):
            spool.add(line)
        spool.finish()
        products = list(spool.products())
        assert spool.lines == 4  # each line counted: compared with objectCount
    assert len(products) == 1
    product, _ = map_product(products[0])
    assert [v.id for v in product.variants] == ["11"]


# -- 11. the download's deadline -------------------------------------------------------------------


async def test_a_trickling_download_is_given_up(
    http: httpx.AsyncClient, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect: the result download had no overall deadline (storage sending a byte now and
    then held the run for ever)."""
    monkeypatch.setattr(shopify_adapter, "DOWNLOAD_BASE_S", 0.3)
    monkeypatch.setattr(shopify_adapter, "DOWNLOAD_ATTEMPTS", 2)
    body = json.dumps({"id": "gid://shopify/Product/1", "title": "One", "status": "ACTIVE"})
    downloads = 0
    hold = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal downloads
        if request.path == "/result.jsonl":
            downloads += 1
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(body.encode()[:10])
            await hold.wait()  # never sends the rest
            return response
        name = (await request.json())["operationName"]
        if name == "BulkProducts":
            data: Any = _started()
        elif name == "BulkOperation":
            operation = {"id": _OPERATION, "status": "COMPLETED", "rootObjectCount": "1"}
            data = {"node": {**operation, "fileSize": "100", "url": f"{base}/result.jsonl"}}
        else:
            data = _SHOP
        return web.json_response({"data": data, "extensions": {"cost": _COST}})

    base, runner = await _listen(handler)
    try:
        adapter = _stand_in(base, http)
        adapter._sleep = lambda s: asyncio.sleep(0)
        adapter._spool_dir = str(tmp_path)
        with pytest.raises(PlatformError, match="took longer than"):
            await read_catalog(adapter)
    finally:
        hold.set()
        await runner.cleanup()
    assert downloads == 2


async def test_a_bulk_snapshot_never_overwrites_a_later_live_read(
    shop: Sim, http: httpx.AsyncClient, tmp_path: Any
) -> None:
    """A stock change bumps no `updatedAt`: the bulk file (a snapshot from the operation's
    start) and a webhook's re-read after the change carry the same date. The pages say when
    the snapshot was taken, and the mirror keeps the later read."""
    from bridge_agent.model import Change  # noqa: PLC0415
    from bridge_agent.store import StateStore, now_ms  # noqa: PLC0415

    adapter = adapter_for(shop, http)
    node = (await shop.truth())[0]
    product_id = node["id"].rsplit("/", 1)[-1]
    item = int(node["variants"][0]["inventoryItem"]["id"].rsplit("/", 1)[-1])
    async with StateStore.open(tmp_path / "state") as state:
        download = adapter._download

        async def later(operation: Any) -> Any:
            # While the file downloads, the stock changes and the webhook's re-read records it.
            answer = await shop.http.post(
                "/__sim/inventory", json={"inventory_item_id": item, "available": 0}
            )
            answer.raise_for_status()
            fresh = await adapter.fetch_product(product_id)
            assert fresh is not None
            await state.record([Change("main", product_id, fresh, "webhook", now_ms())])
            return await download(operation)

        adapter._download = later  # type: ignore[method-assign]
        async for page in adapter.catalog():
            assert page.observed_at is None or page.observed_at <= now_ms()
            observed = page.observed_at or now_ms()
            await state.record([Change("main", p.id, p, "import", observed) for p in page.products])
        held, _hash = (await state.mirror_products("main", [product_id]))[product_id]
        assert held.variants[0].stock_quantity == 0  # the live read stands


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://acme.myshopify.com", "https://"),
        ("https://user:pw@acme.myshopify.com", "user:password@"),
        ("https://acme.myshopify.com/admin", "origin only"),
        ("https://acme.myshopify.com/?x=1", "?query"),
        ("ftp://acme.myshopify.com", "http:// or https://"),
    ],
)
def test_the_shop_url_follows_the_shared_url_rules(url: str, problem: str) -> None:
    """The shop's URL is checked by the rules every store URL shares (config.url_problems)."""
    from bridge_agent.config import Secret, StoreSettings  # noqa: PLC0415
    from bridge_agent.errors import ConfigError  # noqa: PLC0415
    from bridge_agent.platforms.shopify.settings import ShopifySettings  # noqa: PLC0415

    store = StoreSettings(
        id="main", platform="shopify", url=url, secrets={"access_token": Secret("shpat_x")}
    )
    with pytest.raises(ConfigError) as caught:
        ShopifySettings.from_store(store)
    assert problem in str(caught.value)
    assert "pw" not in str(caught.value)  # a credential is never quoted
