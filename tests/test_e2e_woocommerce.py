"""WooCommerce end to end: simulator, adapter, agent and reference hub together, on loopback.

- the conformance suite on the WooCommerce adapter against the simulator;
- a full import of a catalog with variations under 10% injected faults: the hub ends equal to
  the simulator's truth mapped to the canonical model;
- the agent killed with SIGKILL during an import resumes it: pages fetched stay close to one pass;
- webhooks delivered by the simulator reach the hub; a bad signature is refused;
- a product modified exactly on the poll boundary second is seen;
- a force delete (no webhook) is found by reconciliation, unless `deletions = false`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge_agent.agent import Agent
from bridge_agent.config import Listen, Secret, StoreSettings, WebhookSettings
from bridge_agent.errors import ConfigError, PlatformUnavailable, StateStoreError
from bridge_agent.health import Health
from bridge_agent.metrics import Metrics
from bridge_agent.model import settle
from bridge_agent.platforms.woocommerce import WooCommerce
from bridge_agent.platforms.woocommerce.mapping import MappingOptions, map_product
from bridge_agent.simulators.woocommerce import WooSimulator, serve
from bridge_agent.sources import StoreContext
from bridge_agent.sources.importer import Importer
from bridge_agent.sources.poller import STREAM, Poller
from bridge_agent.sources.reconcile import Reconciler
from bridge_agent.store import StateStore
from bridge_agent.stores import StoreChecker
from bridge_agent.testing.conformance import ConformanceSubject, PlatformConformance
from bridge_agent.testing.waiting import until
from tests.conftest import TOKEN, Hub, free_port, make_config

WEBHOOK_SECRET = "whsec-e2e-5d1e"


@dataclass
class Sim:
    sim: WooSimulator
    url: str
    http: httpx.AsyncClient  # the control API

    def settings(self, **kw: Any) -> StoreSettings:
        base = StoreSettings(
            id="main",
            platform="woocommerce",
            url=self.url,
            secrets={
                "consumer_key": Secret(self.sim.consumer_key),
                "consumer_secret": Secret(self.sim.consumer_secret),
                "webhook_secret": Secret(WEBHOOK_SECRET),
            },
            options={"api_prefix": "/wp-json/wc/v3", "per_page": 100, "verify_tls": True},
        )
        return replace(base, **kw)

    async def truth(self) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = (await self.http.get("/__sim/truth")).json()["products"]
        return docs

    async def stats(self) -> dict[str, Any]:
        doc: dict[str, Any] = (await self.http.get("/__sim/stats")).json()
        return doc


async def start_sim(products: int, **options: Any) -> tuple[Sim, asyncio.Task[None]]:
    sim = WooSimulator.generate(products=products, seed=11, **options)
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(sim, "127.0.0.1", 0, ready=port.set_result))
    bound = await asyncio.wait_for(port, 30)
    url = f"http://127.0.0.1:{bound}"
    return Sim(sim, url, httpx.AsyncClient(base_url=url, timeout=30)), task


@pytest.fixture
async def woo() -> AsyncIterator[Sim]:
    sim, task = await start_sim(250, variable_ratio=0.2)
    yield sim
    await sim.http.aclose()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await sim.sim.close()


@pytest.fixture
async def adapter(woo: Sim) -> AsyncIterator[WooCommerce]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield WooCommerce.from_settings(woo.settings(), http)


async def expected_products(woo: Sim, adapter: WooCommerce) -> dict[str, dict[str, Any]]:
    """The simulator's truth (trash excluded), mapped independently of the import path, with
    the canonical model's rules (`model.settle`: archived is Discontinued) applied."""
    tree = await adapter._category_tree(set(), refresh=True)
    out = {}
    for doc in await woo.truth():
        product = doc["product"]
        if product["status"] == "trash":
            continue
        mapped, _ = map_product(
            product, doc["variations"], options=MappingOptions(), categories=tree
        )
        out[mapped.id] = settle(mapped).to_dict()
    return out


# -- conformance -----------------------------------------------------------------------------


class TestWooCommerceConformance(PlatformConformance):
    @pytest.fixture
    async def subject(self, woo: Sim, adapter: WooCommerce) -> AsyncIterator[ConformanceSubject]:
        truth = await woo.truth()
        ids = {str(d["product"]["id"]) for d in truth if d["product"]["status"] != "trash"}

        async def touch(product_id: str) -> datetime:
            clock = (await woo.http.post("/__sim/clock", json={"freeze": True})).json()
            await woo.http.patch(f"/__sim/products/{product_id}", json={"name": "touched"})
            now = clock.get("now") or clock.get("epoch")
            return datetime.fromtimestamp(float(now), UTC) if now else datetime.now(UTC)

        async with httpx.AsyncClient(timeout=30) as http:
            wrong = woo.settings(secrets={"consumer_key": Secret(woo.sim.consumer_key),
                                          "consumer_secret": Secret("cs_wrong")})  # fmt: skip
            yield ConformanceSubject(
                platform=adapter,
                expected_ids=ids,
                missing_id="987654",
                with_bad_credentials=WooCommerce.from_settings(wrong, http),
                touch=touch,
                webhook_headers={
                    "X-WC-Webhook-Signature": "bm9wZQ==",
                    "X-WC-Webhook-Topic": "product.updated",
                },
            )


# -- import under faults ---------------------------------------------------------------------


async def test_import_under_faults_matches_the_store(
    tmp_path: Path, hub: Hub, woo: Sim, adapter: WooCommerce
) -> None:
    expected = await expected_products(woo, adapter)
    await woo.http.post("/__sim/faults", json={"fail_rate": 0.1, "retry_after": 0})
    config = make_config(tmp_path, hub.url)
    config = replace(config, stores=(woo.settings(),))
    agent = Agent(config)
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)

        async def imported() -> bool:
            async with StateStore.open(tmp_path / "state", read_only=True) as state:
                run = await state.last_run("main", "import")
                return (
                    run is not None and run.state == "done" and (await state.stats()).pending == 0
                )

        await until(imported, 120, what="the import", every=0.1)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)
    statuses = [int(code) for route in (await woo.stats())["requests"].values() for code in route]
    assert any(code >= 429 for code in statuses), "no fault was injected"
    at_hub = await hub.products("main")
    live = {k: v for k, v in at_hub.items() if not v["deleted"]}
    assert set(live) == set(expected)
    differing = [pid for pid, data in expected.items() if live[pid]["data"] != data]
    assert not differing, f"{len(differing)} products differ, e.g. {differing[:3]}"
    assert any(p.get("variants") for p in expected.values())  # variations were in the test
    async with StateStore.open(tmp_path / "state", read_only=True) as state:
        run = await state.last_run("main", "import")
    assert run is not None and run.report is not None
    images = run.report["warnings"]["images"]
    with_image = sum(1 for p in expected.values() if p.get("images"))
    assert images["checked"] <= with_image
    assert images["checked"] >= with_image * 0.9  # shared images are checked once
    assert images["unreachable"] + images["oversized"] > 0
    assert all("HTTP 404" in e["problem"] or "MB" in e["problem"] for e in images["examples"])


# -- webhooks, polling, reconciliation -------------------------------------------------------


async def test_store_webhooks_reach_the_hub(tmp_path: Path, hub: Hub, woo: Sim) -> None:
    config = make_config(tmp_path, hub.url)
    webhooks = WebhookSettings(listen=Listen("127.0.0.1", 0))
    config = replace(config, stores=(woo.settings(),), webhooks=webhooks)
    agent = Agent(config)
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        await until(
            _true_when(lambda: agent.webhook_port), 10, what="the webhook listener", every=0.1
        )
        delivery = f"http://127.0.0.1:{agent.webhook_port}/webhooks/woocommerce/main"
        async with httpx.AsyncClient(timeout=30) as http:
            platform = WooCommerce.from_settings(woo.settings(), http)
            actions = await platform.register_webhooks(delivery)
        assert {a.action for a in actions} == {"created"}

        async def imported() -> bool:
            return len(await hub.products("main")) >= 200

        await until(imported, 60, what="the import", every=0.1)
        product_id = str((await woo.truth())[0]["product"]["id"])
        await woo.http.patch(f"/__sim/products/{product_id}", json={"name": "From a webhook"})
        await woo.http.post("/__sim/webhooks/drain")

        async def arrived() -> bool:
            got = (await hub.products("main")).get(product_id)
            return got is not None and got["data"]["title"] == "From a webhook"

        await until(arrived, 30, what="the webhook's change", every=0.1)
        assert agent.metrics.value("bridge_webhooks_total", store="main", outcome="accepted") >= 1
        assert agent.metrics.value("bridge_webhooks_total", store="main", outcome="ping") >= 1
        async with httpx.AsyncClient(timeout=10) as http:
            forged = await http.post(
                delivery,
                content=json.dumps({"id": int(product_id)}).encode(),
                headers={"X-WC-Webhook-Signature": "Zm9yZ2Vk", "X-WC-Webhook-Topic":
                         "product.updated", "Content-Type": "application/json"},
            )  # fmt: skip
        assert forged.status_code == 401
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)


def _true_when(value: Callable[[], Any]) -> Callable[[], Any]:
    async def probe() -> bool:
        return bool(value())

    return probe


async def test_poll_sees_a_product_modified_on_the_boundary_second(
    tmp_path: Path, woo: Sim, adapter: WooCommerce
) -> None:
    boundary = int(time.time()) // 10 * 10
    await woo.http.post("/__sim/clock", json={"freeze": True})
    await woo.http.post("/__sim/clock", json={"set": boundary})
    product_id = str((await woo.truth())[5]["product"]["id"])
    await woo.http.patch(f"/__sim/products/{product_id}", json={"name": "On the boundary"})
    async with StateStore.open(tmp_path / "state") as state:
        await state.set_cursor("main", STREAM, datetime.fromtimestamp(boundary, UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ"))  # fmt: skip
        ctx = StoreContext("main", adapter, state, lambda: None, Metrics(), Health("store:main"))
        poller = Poller(ctx, interval=60, overlap=0.0, clock=lambda: boundary + 5.0)
        assert await poller.poll_once() >= 1
        ids = [d.id for d in await state.due(1000)]
    assert product_id in ids


@pytest.mark.parametrize("deletions", [True, False])
async def test_force_delete_is_found_by_reconciliation(
    tmp_path: Path, woo: Sim, adapter: WooCommerce, deletions: bool
) -> None:
    async with StateStore.open(tmp_path / "state") as state:
        ctx = StoreContext("main", adapter, state, lambda: None, Metrics(), Health("store:main"))
        reconciler = Reconciler(ctx, interval=3600, deletions=deletions)
        first = await reconciler.reconcile_once()  # an empty mirror: everything is "unseen"
        assert first["recorded"] >= 200
        victim = str((await woo.truth())[3]["product"]["id"])
        await woo.http.delete(f"/__sim/products/{victim}", params={"force": "true"})
        counts = await reconciler.reconcile_once()
        due = {d.id: d for d in await state.due(1000)}
    if deletions:
        assert counts["deleted"] == 1
        assert due[victim].deleted
    else:
        assert counts["deleted"] == 0
        assert not due[victim].deleted


# -- SIGKILL during an import ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_sigkill_during_import_resumes_close_to_one_pass(tmp_path: Path, hub: Hub) -> None:
    woo, sim_task = await start_sim(3000, variable_ratio=0.2)
    stack = contextlib.ExitStack()
    try:
        await woo.http.post("/__sim/faults", json={"latency_ms": 20})
        config = tmp_path / "agent.toml"
        (tmp_path / "state").mkdir()
        config.write_text(
            f"""
[agent]
id = "woo-agent"
state_dir = "state"
[hub]
url = "{hub.url}"
token = "{TOKEN}"
[health]
listen = "127.0.0.1:{free_port()}"
[[stores]]
id = "main"
platform = "woocommerce"
url = "{woo.url}"
consumer_key = "{woo.sim.consumer_key}"
consumer_secret = "{woo.sim.consumer_secret}"
concurrency = 4
""",
            encoding="utf-8",
        )
        log = stack.enter_context((tmp_path / "agent.log").open("ab"))
        cmd = [sys.executable, "-m", "bridge_agent", "--config", str(config),
               "--log-format", "json", "run"]  # fmt: skip
        agent = subprocess.Popen(cmd, stdout=log, stderr=log, env=dict(os.environ))  # noqa: ASYNC220

        async def progress() -> int:
            try:
                async with StateStore.open(tmp_path / "state", read_only=True) as state:
                    run = await state.last_run("main", "import")
                    return 0 if run is None else run.done
            except StateStoreError:  # the agent has not created it yet
                return 0

        async def partly() -> bool:
            return await progress() >= 600

        await until(partly, 60, what="a partial import", every=0.1)
        agent.send_signal(signal.SIGKILL)
        await asyncio.to_thread(agent.wait, 10)
        done_before = await progress()
        assert 0 < done_before < 3000

        agent = subprocess.Popen(cmd, stdout=log, stderr=log, env=dict(os.environ))  # noqa: ASYNC220
        try:

            async def finished() -> bool:
                async with StateStore.open(tmp_path / "state", read_only=True) as state:
                    run = await state.last_run("main", "import")
                    repair = await state.last_run("main", "repair")
                    return all(r is not None and r.state == "done" for r in (run, repair))

            # The repair run queued with the first import (a new state) follows it and lists
            # the ids once (`_fields=id`, 100 a page): wait for it, so that the count is exact.
            await until(finished, 120, what="the resumed import and its repair", every=0.1)
        finally:
            agent.send_signal(signal.SIGTERM)
            await asyncio.to_thread(agent.wait, 30)
        requests = (await woo.stats())["requests"]
        listing = sum(requests.get("GET /wp-json/wc/v3/products", {}).values())
        pages = 30  # 3000 products / 100
        listing -= pages  # the repair's id listing
        assert listing <= pages + 12, f"{listing} listing requests for {pages} pages"
        async with StateStore.open(tmp_path / "state", read_only=True) as state:
            assert await state.mirror_count("main") >= 2900
    finally:
        stack.close()
        await woo.http.aclose()
        sim_task.cancel()
        await asyncio.gather(sim_task, return_exceptions=True)


async def test_agent_registers_its_webhooks_and_revives_disabled_ones(
    tmp_path: Path, woo: Sim, adapter: WooCommerce
) -> None:
    delivery = "http://127.0.0.1:9/webhooks/woocommerce/main"  # never answers: deliveries fail
    async with StateStore.open(tmp_path / "state") as state:
        health = Health("store:main")
        checker = StoreChecker(adapter, health, state, "main", delivery)
        task = asyncio.create_task(checker.run())
        checker.nudge()  # the schedule's first beat (stores.py: at start, then every 5 min)
        try:

            async def registered() -> bool:
                return sum("created" in e.message for e in await state.events()) >= 3

            await until(registered, 20, what="webhook registration", every=0.1)
            hooks = [h for h in woo.sim.webhooks.webhooks.values() if h.delivery_url == delivery]
            hooks[0].status = "disabled"  # WooCommerce gave up after failed deliveries
            checker.nudge()  # the next beat

            async def revived() -> bool:
                return any("activated" in e.message for e in await state.events())

            await until(revived, 20, what="re-activation", every=0.1)
            assert hooks[0].status == "active"
            assert not health.failing
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_a_product_the_store_cannot_serve_is_reported_not_fatal(
    tmp_path: Path, woo: Sim, adapter: WooCommerce
) -> None:
    truth = await woo.truth()
    broken = next(
        d["product"]["id"] for d in truth if d["product"]["type"] == "variable" and d["variations"]
    )
    real = adapter._variations

    async def corrupt(product_id: Any) -> Any:  # one product whose endpoint fails for good
        if product_id == broken:
            raise PlatformUnavailable(
                "WooCommerce answered 500 for /products/N/variations", status=500
            )
        return await real(product_id)

    adapter._variations = corrupt  # type: ignore[method-assign]
    async with StateStore.open(tmp_path / "state") as state:
        ctx = StoreContext("main", adapter, state, lambda: None, Metrics(), Health("store:main"))
        importer = Importer(
            ctx, store=woo.settings(), build_platform=lambda s: contextlib.nullcontext(adapter)
        )
        await importer.start_first_import()
        (run,) = await state.open_runs("main")
        await importer.execute(run)
        done = await state.last_run("main", "import")
        events = await state.events(limit=200)
    assert done is not None and done.state == "done" and done.report is not None
    assert done.report["failed"] == 1
    (failure,) = done.report["failures"]
    assert failure == {"product": str(broken), "status": 500, "message": failure["message"]}
    assert any(e.product == str(broken) and e.status == 500 for e in events)


async def test_webhook_url_without_a_secret_is_a_configuration_error(woo: Sim) -> None:
    settings = woo.settings(
        secrets={
            "consumer_key": Secret(woo.sim.consumer_key),
            "consumer_secret": Secret(woo.sim.consumer_secret),
        },
        options={"webhook_url": "https://agent.example.com/webhooks/woocommerce/main"},
    )
    async with httpx.AsyncClient() as http:
        with pytest.raises(ConfigError, match="webhook_url needs a webhook_secret"):
            WooCommerce.from_settings(settings, http)


# -- one adapter, one request budget per store -----------------------------------------------


def _store_requests(metrics_text: str, store: str) -> int:
    """The sum of `bridge_store_requests_total` for one store, over methods and outcomes."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("bridge_store_requests_total{") and f'store="{store}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def test_an_import_uses_the_store_adapter_client_and_budget(
    tmp_path: Path, hub: Hub, woo: Sim
) -> None:
    await woo.http.post("/__sim/faults", json={"latency_ms": 5})
    config = replace(make_config(tmp_path, hub.url), stores=(woo.settings(concurrency=2),))
    agent = Agent(config)
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    clients: set[int] = set()
    try:
        await asyncio.wait_for(ready.wait(), 30)

        async def imported() -> bool:
            clients.update(id(c) for c in agent._http_clients)  # every client ever open
            async with StateStore.open(tmp_path / "state", read_only=True) as state:
                run = await state.last_run("main", "import")
                return run is not None and run.state == "done"

        await until(imported, 60, what="the import")
        entry = agent._stores["main"]
        assert entry.platform is not None and entry.http is not None
        store_http = entry.platform.client.layer  # type: ignore[attr-defined]
        budget = agent._stores._budgets["main"]
        assert store_http.budget is budget  # the store's one budget, with its concurrency
        assert (budget.concurrency, budget.requests_per_second) == (2, 0.0)
        rest = sum(
            n
            for route, codes in (await woo.stats())["requests"].items()
            if "/wp-json/" in route
            for n in codes.values()
        )
        counted = _store_requests(agent.metrics.render(), "main")
        assert agent.shipper is not None
        clients.discard(id(agent.shipper._hub._http))  # the hub's client is not the store's
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)
    assert clients == {id(entry.http)}  # no second client: the import ran on the store's own
    # Every REST request of the import, checks and polls went through the store's one budget
    # (and its metrics); a request may be in flight at the sim when the metrics were read.
    assert rest - 2 <= counted <= rest
