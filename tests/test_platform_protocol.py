"""Platform protocol v2 as the core uses it: capabilities asked, never assumed; batched re-fetches;
webhook resolution that may do I/O; `aclose`; v1 adapters still served."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from bridge_agent import cli, platforms
from bridge_agent.agent import Agent
from bridge_agent.config import Listen, Secret, WebhookSettings
from bridge_agent.errors import PlatformUnavailable
from bridge_agent.health import Health
from bridge_agent.metrics import Metrics
from bridge_agent.model import Product
from bridge_agent.platforms.base import (
    Capability,
    FetchResult,
    WebhookDelivery,
    capabilities_of,
    fetch_many,
)
from bridge_agent.platforms.jsondir import JsonDir
from bridge_agent.sources import StoreContext
from bridge_agent.sources.refetch import BATCH, Refetcher
from bridge_agent.store import StateStore
from bridge_agent.testing.catalog import make_product, write_product
from bridge_agent.testing.waiting import until
from tests.conftest import Hub, make_config

SECRET = "whsec-protocol-v2"


class V1Adapter:
    """An adapter written for protocol v1: no `capabilities`, no `fetch_products`."""

    name = "v1"

    def __init__(self, catalog: Path) -> None:
        self.inner = JsonDir("main", catalog)
        self.fetched: list[str] = []

    async def fetch_product(self, product_id: str) -> Product | None:
        self.fetched.append(product_id)
        return await self.inner.fetch_product(product_id)

    def product_ids(self) -> Any:
        return self.inner.product_ids()


def test_a_v1_adapter_s_capabilities_are_inferred_from_its_methods(tmp_path: Path) -> None:
    offers = capabilities_of(V1Adapter(tmp_path))
    assert offers == {Capability.PRODUCT_IDS}  # never batch_fetch or a write unless declared


def test_declared_capabilities_are_read_from_the_class() -> None:
    assert Capability.BATCH_FETCH in capabilities_of(platforms.load("woocommerce"))
    assert Capability.BATCH_FETCH not in capabilities_of(JsonDir)
    assert Capability.SPOOL_HOOKS in capabilities_of(JsonDir)


async def test_fetch_many_uses_one_request_per_id_without_batch_fetch(tmp_path: Path) -> None:
    for i in (1, 2):
        write_product(tmp_path, make_product(i))
    adapter = V1Adapter(tmp_path)
    result = await fetch_many(adapter, ["1", "2", "3"], concurrency=2)  # type: ignore[arg-type]
    assert sorted(result.found) == ["1", "2"]
    assert result.missing == {"3"}
    assert sorted(adapter.fetched) == ["1", "2", "3"]


class Batched(JsonDir):
    """A jsondir store that reads in batches and counts the calls; one id always fails."""

    capabilities: ClassVar[frozenset[Capability]] = JsonDir.capabilities | {Capability.BATCH_FETCH}
    calls: list[list[str]]

    async def fetch_products(self, ids: Sequence[str]) -> FetchResult:
        self.calls.append(list(ids))
        result = await super().fetch_products([i for i in ids if i != "13"])
        failure = PlatformUnavailable("WooCommerce answered 500 to GET /products/13")
        from bridge_agent.platforms.base import failure_of  # noqa: PLC0415

        failed = {"13": failure_of("13", failure)} if "13" in ids else {}
        return FetchResult(result.found, result.missing, failed)


async def test_the_refetcher_asks_in_batches_and_keeps_failed_ids_for_later(
    tmp_path: Path, state: StateStore
) -> None:
    for i in range(1, 251):
        write_product(tmp_path, make_product(i))
    store = Batched("main", tmp_path)
    store.calls = []
    ctx = StoreContext("main", store, state, lambda: None, Metrics(), Health("store:main"))
    refetch = Refetcher(ctx, "spool")
    ids = [str(i) for i in range(1, 252)]  # 251 does not exist
    changes = await refetch.fetch(ids)
    assert [len(c) for c in store.calls] == [BATCH, BATCH, 51]
    assert "13" not in changes and "13" in refetch.failures  # kept: the caller retries it
    assert changes["251"] is not None and changes["251"].product is None  # a deletion
    assert len(changes) == 250
    assert ctx.health.state == "store_unavailable"


class Limited(JsonDir):
    """Declares only what a minimal store offers: no polls, no id listing, no webhooks."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.SPOOL_HOOKS})
    closed = 0

    async def aclose(self) -> None:
        type(self).closed += 1


async def test_the_agent_starts_only_what_the_adapter_offers(
    tmp_path: Path, hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platforms, "load", lambda name: Limited)
    Limited.closed = 0
    agent = Agent(make_config(tmp_path, hub.url))
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        names = {t.get_name() for t in agent._stores["main"].tasks}
        assert names == {"check:main", "import:main", "hints:main", "spool:main"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{agent.health_port}") as http:
            doc = (await http.get("/status")).json()
        assert doc["stores"]["main"]["capabilities"] == ["spool_hooks"]
    finally:
        agent.stop()
        await asyncio.wait_for(task, 20)
    assert Limited.closed == 1  # aclose() at stop


class ResolvesByLookup(JsonDir):
    """A platform whose deliveries name an inventory item, looked up in the store (I/O)."""

    lookups: ClassVar[list[str]] = []
    down = False

    def verify_webhook(self, headers: Any, body: bytes) -> WebhookDelivery:
        delivery = super().verify_webhook(headers, body)
        if delivery.kind == "ping":
            return delivery
        return WebhookDelivery(kind="product", topic="inventory.updated", references=("inv-7",))

    async def resolve_webhook(self, delivery: WebhookDelivery) -> tuple[str, ...]:
        type(self).lookups.append(delivery.references[0])
        await asyncio.sleep(0)  # a store request, in real life
        if type(self).down:
            raise PlatformUnavailable("store answered 503 to the inventory lookup")
        return ("7",)


def _async(predicate: Any) -> Any:
    async def check() -> bool:
        return bool(predicate())

    return check


async def _hub_has(hub: Hub, product_id: str) -> bool:
    return product_id in await hub.products("main")


def _signed(body: bytes) -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).digest()
    return {"X-Signature": base64.b64encode(digest).decode()}


async def test_webhook_references_are_resolved_and_a_failed_lookup_is_503(
    tmp_path: Path, hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platforms, "load", lambda name: ResolvesByLookup)
    ResolvesByLookup.lookups.clear()
    ResolvesByLookup.down = True
    config = make_config(tmp_path, hub.url)
    store = replace(config.stores[0], secrets={"webhook_secret": Secret(SECRET)})
    config = replace(
        config, stores=(store,), webhooks=WebhookSettings(listen=Listen("127.0.0.1", 0))
    )
    write_product(tmp_path / "catalog", make_product(7))
    agent = Agent(config)
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        await until(_async(lambda: bool(agent.webhook_port)))
        url = f"http://127.0.0.1:{agent.webhook_port}/webhooks/jsondir/main"
        body = json.dumps({"topic": "inventory_levels/update", "id": "inv-7"}).encode()
        async with httpx.AsyncClient(timeout=5) as client:
            refused = await client.post(url, content=body, headers=_signed(body))
            assert refused.status_code == 503  # not acknowledged: the sender delivers it again
            async with StateStore.open(tmp_path / "state") as peek:
                assert await peek.hint_count() == 0
            ResolvesByLookup.down = False
            accepted = await client.post(url, content=body, headers=_signed(body))
            assert accepted.status_code == 200
        assert ResolvesByLookup.lookups == ["inv-7", "inv-7"]
        await until(lambda: _hub_has(hub, "7"))
    finally:
        agent.stop()
        await asyncio.wait_for(task, 20)


def test_validate_shows_each_store_s_capabilities(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BRIDGE_HUB_TOKEN", "validate-token")
    root = Path(__file__).resolve().parent.parent
    # The command itself, without `main()`: that would configure (and cache) the process's logging
    # for the tests that run after this one.
    args = cli._parser().parse_args(["--config", str(root / "agent.toml"), "validate"])
    assert cli.cmd_validate(args) == 0
    out = capsys.readouterr().out
    assert (
        "  main: batch_fetch, modified_since, product_ids, spool_hooks, webhook_registration" in out
    )
    assert "validate-token" not in out
