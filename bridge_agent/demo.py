"""`bridge-agent demo`: a WooCommerce store, the reference hub and the agent on loopback.

It starts the WooCommerce simulator with a demo catalog (simple and variable products, some
without image or price), the reference hub and the agent on free loopback ports with a temporary
state directory. The agent imports the catalog as a resumable run; then the demo registers the
agent's webhooks in the store and makes live changes through the simulator (a price drop, a new
product, a product moved to the trash, a burst of edits to one product), and shows each arriving
at the hub, with the time it took. Then the other direction: an optimisation enqueued at the hub
(a new SEO title and meta description, and JSON-LD) reaches the store; the demo prints the
product's SEO fields before and after and the JSON-LD the agent wrote. It ends with the hub's
counters.

The demo's output is its story, for a human: the agent's own log lines (JSON or console, as
`--log-format` chose) go to a log file, named at the start and kept after the demo, instead of
being interleaved with the story on the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
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
    WebhookSettings,
)
from bridge_agent.hub import serve as serve_hub
from bridge_agent.platforms.woocommerce import WooCommerce
from bridge_agent.platforms.woocommerce.mapping import SEO_META_KEYS
from bridge_agent.simulators.woocommerce import WooSimulator
from bridge_agent.simulators.woocommerce import serve as serve_store
from bridge_agent.store import StateStore

WAIT_LIMIT = 60.0
Say = Callable[[str], None]


class DemoFailed(Exception):
    pass


def run_demo(*, products: int = 200, out: Say | None = None, log_path: Path | None = None) -> int:
    """Run the demo; `out` gets the story line by line, the log lines go to `log_path`."""
    say = out or (lambda line: print(line, flush=True))
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="bridge-agent-demo-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    say(f"agent log          {log_path}")
    with (
        tempfile.TemporaryDirectory(prefix="bridge-agent-demo-") as tmp,
        log_path.open("a", encoding="utf-8") as log_file,
        # The log writes to whatever sys.stderr is (logs.py): here, the file.
        contextlib.redirect_stderr(log_file),
    ):
        try:
            return asyncio.run(_demo(Path(tmp), products, say))
        except DemoFailed as exc:
            say(f"demo failed: {exc} (see the agent log {log_path})")
            return 1


async def _listening(
    start: Callable[[Callable[[int], None]], Coroutine[Any, Any, None]],
) -> tuple[int, asyncio.Task[None]]:
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(start(port.set_result))
    return await asyncio.wait_for(port, 60), task


async def _demo(root: Path, count: int, say: Say) -> int:
    token = secrets.token_urlsafe(24)
    webhook_secret = secrets.token_urlsafe(24)
    store = WooSimulator.generate(products=count, seed=7, variable_ratio=0.2)
    store_port, store_task = await _listening(
        lambda ready: serve_store(store, "127.0.0.1", 0, ready=ready)
    )
    hub_port, hub_task = await _listening(
        lambda ready: serve_hub("127.0.0.1", 0, root / "hub.sqlite", token, ready=ready)
    )
    store_url, hub_url = f"http://127.0.0.1:{store_port}", f"http://127.0.0.1:{hub_port}"
    shop = StoreSettings(
        id="demo",
        platform="woocommerce",
        url=store_url,
        secrets={
            "consumer_key": Secret(store.consumer_key),
            "consumer_secret": Secret(store.consumer_secret),
            "webhook_secret": Secret(webhook_secret),
        },
        # The currency is the store's setting, not in the product JSON: the JSON-LD offers need it.
        options={
            "api_prefix": "/wp-json/wc/v3",
            "per_page": 100,
            "verify_tls": True,
            "currency": store.catalog.currency,
        },
    )
    config = Config(
        agent=AgentSettings(id="demo-agent", state_dir=root / "state", drain_timeout=10.0),
        hub=HubSettings(url=hub_url, token=Secret(token)),
        health=HealthSettings(listen=Listen("127.0.0.1", 0)),
        webhooks=WebhookSettings(listen=Listen("127.0.0.1", 0)),
        stores=(shop,),
        source=root / "agent.toml",
    )
    say(f"WooCommerce store  {store_url}/wp-json/wc/v3  (simulator, {count} products)")
    say(f"reference hub      {hub_url}")
    agent = Agent(config)
    ready = asyncio.Event()
    agent_task = asyncio.create_task(agent.run(ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        say(f"agent              health on http://127.0.0.1:{agent.health_port}/healthz")
        async with (
            httpx.AsyncClient(base_url=hub_url, timeout=10,
                              headers={"Authorization": f"Bearer {token}"}) as hub,
            httpx.AsyncClient(base_url=store_url, timeout=10) as control,
            httpx.AsyncClient(timeout=30) as http,
        ):  # fmt: skip
            await _scenario(agent, config, hub, control, WooCommerce.from_settings(shop, http), say)
    finally:
        agent.stop()
        await agent_task
        for task in (hub_task, store_task):
            task.cancel()
        await asyncio.gather(hub_task, store_task, return_exceptions=True)
        await store.close()
    say("agent stopped after draining its outbox; demo finished")
    return 0


async def _scenario(
    agent: Agent,
    config: Config,
    hub: httpx.AsyncClient,
    control: httpx.AsyncClient,
    woo: WooCommerce,
    say: Say,
) -> None:
    started = time.monotonic()
    truth = (await control.get("/__sim/truth")).json()["products"]
    live = sum(1 for d in truth if d["product"]["status"] != "trash")
    await _until(lambda: _hub_count(hub), lambda n: n == live, "the import")
    say(f"import             {live} products at the hub in {time.monotonic() - started:.2f}s")
    async with StateStore.open(config.agent.state_dir, read_only=True) as state:
        run = await state.last_run("demo", "import")
    if run is not None and run.report:
        warnings = run.report["warnings"]
        say(
            f"import report      {run.report['imported']} imported in {run.report['pages']}"
            f" page(s), {run.report['failed']} failed; {warnings['no_image']} without image,"
            f" {warnings['no_price']} without"
            f" price, {len(warnings['duplicate_sku'])} duplicate SKU(s)"
        )
        images = warnings.get("images")
        if images:
            say(
                f"                   {images['checked']} main image URL(s) checked:"
                f" {images['unreachable']} unreachable, {images['oversized']} over 2 MB"
            )
    await _until(lambda: _true(agent.webhook_port), bool, "the webhook listener")
    delivery = f"http://127.0.0.1:{agent.webhook_port}/webhooks/woocommerce/demo"
    actions = await woo.register_webhooks(delivery)
    say(f"webhooks           {len(actions)} registered in the store -> {delivery}")

    say("live changes made in the store:")
    first = str(truth[2]["product"]["id"])
    sale = control.patch(f"/__sim/products/{first}", json={"sale_price": "9.99"})
    await _change(hub, say, f"price drop on product {first} (sale 9.99)", sale, first,
                  lambda p: p is not None and p["data"].get("sale_price") == "9.99")  # fmt: skip
    lamp = {"name": "Demo Lamp", "type": "simple", "regular_price": "42.00", "sku": "DEMO-LAMP"}
    created = await control.post("/__sim/products", json=lamp)
    new_id = str(created.json()["id"])
    await _change(hub, say, f"new product {new_id} ('Demo Lamp')", _done(), new_id,
                  lambda p: p is not None and not p["deleted"])  # fmt: skip
    trashed = str(truth[4]["product"]["id"])
    await _change(hub, say, f"product {trashed} moved to the trash",
                  control.delete(f"/__sim/products/{trashed}"), trashed,
                  lambda p: p is not None and p["data"].get("status") == "archived")  # fmt: skip
    burst = str(truth[6]["product"]["id"])
    for n in range(1, 6):  # five quick saves: coalesced, the hub ends with the last one
        await control.patch(f"/__sim/products/{burst}", json={"name": f"Edited title #{n}"})
    await _change(hub, say, f"5 quick edits of product {burst}", _done(), burst,
                  lambda p: p is not None and p["data"]["title"] == "Edited title #5")  # fmt: skip
    await _optimization(hub, control, truth, say)
    stats = (await hub.get("/v1/stats")).json()
    by_op = ", ".join(f"{v} {k}" for k, v in sorted(stats.get("by_op", {}).items()))
    say(f"hub received       {stats.get('items')} items in {stats.get('batches')} batches: {by_op}")


# -- downstream: an optimisation from the hub reaches the store ------------------------------


async def _optimization(
    hub: httpx.AsyncClient, control: httpx.AsyncClient, truth: list[dict[str, Any]], say: Say
) -> None:
    """Enqueue an optimisation at the hub for one product and show the store before and after.

    The `from` values are the hub's copy of the product (what the hub saw): the agent writes a
    field only while the store still holds them (guarantee 5).
    """
    found = [(d["product"], _demo_candidate(d["product"])) for d in truth]
    candidates = [(p, keys) for p, keys in found if keys is not None]
    # One whose title is text rather than a Yoast template (%%title%%) reads better.
    plain = [(p, keys) for p, keys in candidates if "%" not in str(_meta(p, keys[1]))]
    if not candidates:
        say("optimisation       skipped: no product with SEO meta and a price in this catalog")
        return
    chosen, (plugin, title_key, description_key) = (plain or candidates)[0]
    product_id = str(chosen["id"])
    held = await _hub_product(hub, product_id)
    if held is None:
        raise DemoFailed(f"product {product_id} is not at the hub")
    data = held["data"]
    name = str(chosen["name"])
    proposal = {
        "product": product_id,
        "fields": {
            "seo_title": {"from": data.get("seo_title"), "to": f"{name}: buy online | Demo Shop"},
            "seo_description": {
                "from": data.get("seo_description"),
                "to": f"The {name}, in stock and shipped in 24 h. Free returns for 30 days.",
            },
            "jsonld": {
                "to": {
                    "@context": "https://schema.org",
                    "@type": "Product",
                    "name": name,
                    "description": f"The {name}, chosen by our team.",
                }
            },
        },
    }
    say(f"optimisation from the hub for product {product_id} ('{name}', {plugin} SEO meta):")
    say(f"  SEO title        before: {_quoted(_meta(chosen, title_key))}")
    say(f"  meta description before: {_quoted(_meta(chosen, description_key))}")
    started = time.monotonic()
    queued = await hub.post("/v1/stores/demo/optimizations", json=proposal)
    if queued.status_code != 201:
        raise DemoFailed(f"the hub refused the optimisation: {queued.status_code} {queued.text}")
    opt_id = queued.json()["ids"][0]

    async def result() -> dict[str, Any]:
        doc: dict[str, Any] = (await hub.get(f"/v1/stores/demo/optimizations/{opt_id}")).json()
        return doc

    await _until(result, lambda r: r.get("status") not in (None, "queued"), "the optimisation")
    reported = await result()
    elapsed = (time.monotonic() - started) * 1000
    doc = (await control.get("/__sim/truth")).json()["products"]
    after = next(d["product"] for d in doc if str(d["product"]["id"]) == product_id)
    say(f"  SEO title        after:  {_quoted(_meta(after, title_key))}")
    say(f"  meta description after:  {_quoted(_meta(after, description_key))}")
    say(
        f"  result           {reported['status']} at the hub after {elapsed:.0f} ms"
        f" (product hash {str(reported.get('hash'))[:12]})"
    )
    written = _meta(after, "_bridge_jsonld")
    if not written:
        say("  JSON-LD          none written")
        return
    say("  JSON-LD written to the product's _bridge_jsonld (the WordPress plugin prints it):")
    for line in json.dumps(json.loads(written), indent=2, ensure_ascii=False).splitlines():
        say(f"    | {line}")


def _demo_candidate(product: dict[str, Any]) -> tuple[str, str, str] | None:
    """(plugin, title key, description key) of a published, priced simple product with SEO
    meta (a variable product's JSON-LD lists every variant: too long to read in a demo)."""
    if product.get("type") != "simple" or product.get("status") != "publish":
        return None
    if not product.get("price"):
        return None
    for plugin, title_key, description_key in SEO_META_KEYS:
        if _meta(product, title_key) and _meta(product, description_key):
            return plugin, title_key, description_key
    return None


def _meta(product: dict[str, Any], key: str) -> Any:
    return next((m.get("value") for m in product.get("meta_data", ()) if m.get("key") == key), None)


def _quoted(value: Any) -> str:
    return "(none)" if value in (None, "") else repr(value)


async def _done() -> None:
    return None


async def _true(value: Any) -> bool:
    return bool(value)


async def _change(
    hub: httpx.AsyncClient,
    say: Say,
    what: str,
    action: Awaitable[Any],
    product_id: str,
    arrived: Callable[[dict[str, Any] | None], bool],
) -> None:
    started = time.monotonic()
    await action
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


async def _until(
    probe: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], what: str
) -> None:
    deadline = time.monotonic() + WAIT_LIMIT
    while time.monotonic() < deadline:
        if done(await probe()):
            return
        await asyncio.sleep(0.05)
    raise DemoFailed(f"{what} did not reach the hub within {WAIT_LIMIT:.0f}s")


if __name__ == "__main__":
    sys.exit(run_demo())
