"""`bridge-agent demo`: the whole upstream path on loopback, in one command, then exit 0.

It starts the reference hub and the agent on free loopback ports with a temporary state
directory, serves a demo catalog from a `jsondir` store (canonical products as files, with the
spool as its change hook), ships the whole catalog, then makes live changes (a price drop, a new
product, a deletion, a burst of edits to one product) and shows each arriving at the hub.

The WooCommerce issue replaces the `jsondir` store with the WooCommerce simulator; the shape of
the demo stays the same.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from bridge_agent.agent import Agent
from bridge_agent.config import (
    AgentSettings,
    Config,
    HealthSettings,
    HubSettings,
    Listen,
    Secret,
    StoreSettings,
)
from bridge_agent.hub import serve as serve_hub
from bridge_agent.testing.catalog import (
    delete_product,
    make_product,
    spool_event,
    write_product,
    write_spool,
)

WAIT_LIMIT = 60.0


def run_demo(*, products: int = 200, out: Callable[[str], None] | None = None) -> int:
    say = out or (lambda line: print(line, flush=True))
    with tempfile.TemporaryDirectory(prefix="bridge-agent-demo-") as tmp:
        try:
            return asyncio.run(_demo(Path(tmp), products, say))
        except DemoFailed as exc:
            say(f"demo failed: {exc}")
            return 1


class DemoFailed(Exception):
    pass


async def _demo(root: Path, count: int, say: Callable[[str], None]) -> int:
    token = secrets.token_urlsafe(24)
    hub_port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    hub_task = asyncio.create_task(
        serve_hub("127.0.0.1", 0, root / "hub.sqlite", token, ready=hub_port.set_result)
    )
    port = await asyncio.wait_for(hub_port, 10)
    hub_url = f"http://127.0.0.1:{port}"
    catalog, spool = root / "catalog", root / "spool"
    catalog.mkdir()
    config = Config(
        agent=AgentSettings(id="demo-agent", state_dir=root / "state", drain_timeout=10.0),
        hub=HubSettings(url=hub_url, token=Secret(token)),
        health=HealthSettings(listen=Listen("127.0.0.1", 0)),
        stores=(
            StoreSettings(
                id="demo",
                platform="jsondir",
                url="file://" + str(catalog),
                spool_dir=spool,
                options={"catalog_dir": str(catalog)},
            ),
        ),
        source=root / "agent.toml",
    )
    say(f"reference hub   {hub_url}  (SQLite {root / 'hub.sqlite'})")
    agent = Agent(config)
    ready = asyncio.Event()
    agent_task = asyncio.create_task(agent.run(ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    say(f"agent           health on http://127.0.0.1:{agent.health_port}/healthz")
    async with httpx.AsyncClient(
        base_url=hub_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
    ) as hub:
        try:
            await _scenario(hub, catalog, spool, count, say, agent)
        finally:
            agent.stop()
            await agent_task
            hub_task.cancel()
            await asyncio.gather(hub_task, return_exceptions=True)
    say("agent stopped after draining its outbox; demo finished")
    return 0


async def _scenario(
    hub: httpx.AsyncClient,
    catalog: Path,
    spool: Path,
    count: int,
    say: Callable[[str], None],
    agent: Agent,
) -> None:
    started = time.monotonic()
    for i in range(1, count + 1):
        write_product(catalog, make_product(i))
    write_spool(spool, [spool_event("product.created", str(i)) for i in range(1, count + 1)])
    await _until(lambda: _hub_count(hub), lambda n: n == count, "the initial catalog")
    elapsed = time.monotonic() - started
    say(f"initial catalog {count} products shipped to the hub in {elapsed:.2f}s")

    say("live changes made in the store:")
    target = make_product(3)
    cheaper = replace(target, price="9.99", sale_price="9.99", updated_at="2026-11-23T10:00:00Z")
    await _change(hub, say, "price drop on product 3 (-> 9.99)", catalog, spool, cheaper,
                  lambda p: p is not None and p["data"].get("price") == "9.99")  # fmt: skip
    new = make_product(count + 1)
    await _change(hub, say, f"new product {new.id}", catalog, spool, new,
                  lambda p: p is not None and not p["deleted"])  # fmt: skip
    await _change(hub, say, "product 5 deleted", catalog, spool, ("5", None),
                  lambda p: p is not None and p["deleted"])  # fmt: skip
    last = make_product(7)
    for n in range(1, 6):  # five quick edits: they coalesce, the hub ends with the last one
        last = replace(make_product(7, revision=n), title=f"Edited title #{n}")
        write_product(catalog, last)
        write_spool(spool, spool_event("product.updated", "7"))
    await _until(
        lambda: _hub_product(hub, "7"),
        lambda p: p is not None and p["data"]["title"] == "Edited title #5",
        "the burst of edits",
    )
    say("  5 quick edits of product 7 -> hub holds the last one ('Edited title #5')")
    assert agent.shipper is not None
    stats = (await hub.get("/v1/stats")).json()
    say(
        f"hub received {stats.get('items')} items in {stats.get('batches')} batches: "
        f"{_fmt(stats.get('by_op', {}))}"
    )


async def _change(
    hub: httpx.AsyncClient,
    say: Callable[[str], None],
    what: str,
    catalog: Path,
    spool: Path,
    change: Any,
    arrived: Callable[[dict[str, Any] | None], bool],
) -> None:
    started = time.monotonic()
    if isinstance(change, tuple):
        product_id = change[0]
        delete_product(catalog, product_id)
        write_spool(spool, spool_event("product.deleted", product_id))
    else:
        product_id = change.id
        write_product(catalog, change)
        write_spool(spool, spool_event("product.updated", product_id))
    await _until(lambda: _hub_product(hub, product_id), arrived, what)
    say(f"  {what}: at the hub after {(time.monotonic() - started) * 1000:.0f} ms")


async def _hub_count(hub: httpx.AsyncClient) -> int:
    total, after = 0, ""
    while True:
        page = (
            await hub.get("/v1/stores/demo/products", params={"after": after, "limit": 1000})
        ).json()
        total += sum(1 for p in page["products"] if not p["deleted"])
        if not page.get("next"):
            return total
        after = page["next"]


async def _hub_product(hub: httpx.AsyncClient, product_id: str) -> dict[str, Any] | None:
    response = await hub.get(f"/v1/stores/demo/products/{product_id}")
    if response.status_code == 404:
        return None
    doc: dict[str, Any] = response.json()
    return doc


async def _until(probe: Callable[[], Any], done: Callable[[Any], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_LIMIT
    while time.monotonic() < deadline:
        if done(await probe()):
            return
        await asyncio.sleep(0.05)
    raise DemoFailed(f"{what} did not reach the hub within {WAIT_LIMIT:.0f}s")


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none"


if __name__ == "__main__":
    sys.exit(run_demo())
