"""JSON-LD refresh benchmark: time from a price change in the store to the rewritten JSON-LD there.

What it measures, and why: the agent promises that a product page never shows an offer the store
no longer makes. After the merchant changes a price, the page's `_bridge_jsonld` still shows the
old one until the agent has seen the change and rewritten it; this is that window.

How, end to end with the real agent:

- the WooCommerce simulator runs in this process (`simulators.woocommerce.serve` on a free
  loopback port), so the benchmark sees the product's meta the moment the agent's batch write
  lands, without polling over HTTP; it is changed only through its mutation API over HTTP
  (`PATCH /__sim/products/{id}`), as a merchant's save in the admin, which fires the store's
  `product.updated` webhook after `--webhook-delay` (+ up to `--webhook-jitter`) seconds, as
  WooCommerce's Action Scheduler does;
- the reference hub (`python -m bridge_agent hub`) and the agent (`python -m bridge_agent run`)
  run in their own processes; the agent's store has `webhook_url` and `webhook_secret`, so it
  registers its webhooks with the simulator, and `currency`;
- after the import, `--products-with-jsonld` JSON-LD optimisations are enqueued at the hub and
  applied by the agent (waited for), which hands those products to its JSON-LD keeper;
- then `--changes` price changes, one at a time, `--interval` seconds apart, round robin over
  those products: each timed from just before the PATCH to the moment the simulator holds a
  `_bridge_jsonld` whose offer has the new price (checked every millisecond).

It prints p50, p90, p99 and max of that time, the store's batch writes during the changes (one
per change: no loop, no write twice) and the webhook delivery delay configured, which is part of
the figure. A benchmark prints, it never asserts timing. Run from the repository root:

    uv run python bench/jsonld_refresh.py [--products 200] [--changes 100] [--interval 0.05]
        [--webhook-delay 0] [--webhook-jitter 0] [--latency-ms 0] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from common import free_port, hub_process, process, say, table

from bridge_agent.simulators.woocommerce import WooSimulator, serve

TOKEN = "bench-hub-token-4d1e8a27"  # loopback only, a throwaway hub
WEBHOOK_SECRET = "bench-webhook-secret-91f0"  # loopback only
STORE_ID = "main"
META = "_bridge_jsonld"
BATCH = "POST /wp-json/wc/v3/products/batch"
READY_TIMEOUT = 60.0
CHANGE_TIMEOUT = 30.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--products", type=int, default=200, help="catalog size (default %(default)s)")
    p.add_argument(
        "--products-with-jsonld",
        type=int,
        default=20,
        help="products the agent writes JSON-LD for (default %(default)s)",
    )
    p.add_argument("--changes", type=int, default=100, help="price changes (default %(default)s)")
    p.add_argument(
        "--interval", type=float, default=0.05, help="seconds between changes (%(default)s)"
    )
    p.add_argument(
        "--webhook-delay",
        type=float,
        default=0.0,
        help="the store's webhook delivery delay in seconds (default %(default)s)",
    )
    p.add_argument("--webhook-jitter", type=float, default=0.0, help="(default %(default)s)")
    p.add_argument(
        "--latency-ms", type=float, default=0.0, help="the store's REST latency (%(default)s)"
    )
    p.add_argument("--seed", type=int, default=7)
    return p.parse_args(argv)


@contextlib.contextmanager
def agent_process(workdir: Path, config: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The agent (plain-text log in `<workdir>/agent.log`), run in `workdir`."""
    command = [sys.executable, "-m", "bridge_agent", "--config", str(config), "run"]
    with process(command, workdir / "agent.log", cwd=workdir) as proc:
        yield proc


def write_config(workdir: Path, sim_url: str, sim: WooSimulator, hub_url: str) -> Path:
    (workdir / "agent-hub-token").write_text(TOKEN, encoding="utf-8")
    (workdir / "agent-hub-token").chmod(0o600)
    webhooks = free_port()
    config = f"""\
[agent]
id = "bench-jsonld"
state_dir = "state"

[hub]
url = "{hub_url}"
token_file = "agent-hub-token"

[health]
listen = "127.0.0.1:{free_port()}"

[webhooks]
listen = "127.0.0.1:{webhooks}"

[[stores]]
id = "{STORE_ID}"
platform = "woocommerce"
url = "{sim_url}"
consumer_key = "{sim.consumer_key}"
consumer_secret = "{sim.consumer_secret}"
webhook_secret = "{WEBHOOK_SECRET}"
webhook_url = "http://127.0.0.1:{webhooks}/webhooks/woocommerce/{STORE_ID}"
currency = "EUR"
poll_interval = "1h"
reconcile_interval = "6h"
"""
    path = workdir / "agent.toml"
    path.write_text(config, encoding="utf-8")
    path.chmod(0o600)
    return path


def jsonld_of(sim: WooSimulator, product: int) -> Any:
    for row in sim.product(product)["meta_data"]:
        if row["key"] == META:
            return json.loads(row["value"]) if row["value"] else None
    return None


def offer_price(document: Any) -> str | None:
    if isinstance(document, dict) and isinstance(document.get("offers"), dict):
        price = document["offers"].get("price")
        return price if isinstance(price, str) else None
    return None


async def wait_for(what: str, check: Any, proc: subprocess.Popen[bytes], log: Path) -> float:
    started = time.monotonic()
    while not await check():
        if proc.poll() is not None:
            tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]  # noqa: ASYNC240
            raise RuntimeError(f"the agent exited with {proc.returncode}:\n{tail}")
        if time.monotonic() - started > READY_TIMEOUT:
            raise RuntimeError(f"{what}: not reached within {READY_TIMEOUT:.0f} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def batches(control: httpx.AsyncClient) -> int:
    stats = (await control.get("/__sim/stats")).json()["requests"].get(BATCH, {})
    return sum(int(n) for n in stats.values())


async def run(args: argparse.Namespace, workdir: Path) -> None:
    sim = WooSimulator.generate(
        products=args.products,
        seed=args.seed,
        variable_ratio=0.2,
        no_price_ratio=0.0,
        webhook_delay=args.webhook_delay,
        webhook_jitter=args.webhook_jitter,
    )
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(sim, "127.0.0.1", 0, ready=bound.set_result))
    try:
        sim_url = f"http://127.0.0.1:{await asyncio.wait_for(bound, READY_TIMEOUT)}"
        with hub_process(workdir, TOKEN) as hub:
            config = write_config(workdir, sim_url, sim, hub.url)
            async with (
                httpx.AsyncClient(base_url=sim_url, timeout=10) as control,
                httpx.AsyncClient(
                    base_url=hub.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
                ) as hub_client,
            ):
                if args.latency_ms:
                    reply = await control.post(
                        "/__sim/faults", json={"latency_ms": args.latency_ms}
                    )
                    reply.raise_for_status()
                with agent_process(workdir, config) as agent:
                    await measure(args, sim, control, hub_client, agent, workdir / "agent.log")
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)


async def measure(
    args: argparse.Namespace,
    sim: WooSimulator,
    control: httpx.AsyncClient,
    hub: httpx.AsyncClient,
    agent: subprocess.Popen[bytes],
    log: Path,
) -> None:
    simple = [
        t["product"]
        for t in sim.truth()
        if t["product"]["type"] == "simple" and t["product"]["regular_price"]
    ]
    chosen = [int(p["id"]) for p in simple[: args.products_with_jsonld]]

    async def imported() -> bool:
        page = (await hub.get(f"/v1/stores/{STORE_ID}/products", params={"limit": 1000})).json()
        wanted: int = min(args.products, 1000)
        return len(page["products"]) >= wanted

    import_s = await wait_for("the import at the hub", imported, agent, log)
    say(f"import of {args.products} products reached the hub in {import_s:.1f} s")
    proposals = [
        {"product": str(pid), "fields": {"jsonld": {"to": {"description": "Bench JSON-LD"}}}}
        for pid in chosen
    ]
    (await hub.post(f"/v1/stores/{STORE_ID}/optimizations", json=proposals)).raise_for_status()

    async def applied() -> bool:
        return all(jsonld_of(sim, pid) is not None for pid in chosen)

    apply_s = await wait_for("the JSON-LD optimisations applied", applied, agent, log)
    say(f"{len(chosen)} JSON-LD optimisations applied in {apply_s:.2f} s")
    await asyncio.sleep(1.0 + args.webhook_delay + args.webhook_jitter)  # their echoes settle

    writes_before = await batches(control)
    latencies: list[float] = []
    for n in range(args.changes):
        pid = chosen[n % len(chosen)]
        old = Decimal(sim.product(pid)["regular_price"])
        new = f"{old + Decimal('1.01'):.2f}"
        started = time.monotonic()
        reply = await control.patch(
            f"/__sim/products/{pid}", json={"regular_price": new, "sale_price": ""}
        )
        reply.raise_for_status()
        while offer_price(jsonld_of(sim, pid)) != new:
            if time.monotonic() - started > CHANGE_TIMEOUT:
                raise RuntimeError(f"product {pid}: JSON-LD not rewritten to {new} in time")
            await asyncio.sleep(0.001)
        latencies.append(time.monotonic() - started)
        await asyncio.sleep(args.interval)
    await asyncio.sleep(1.0 + args.webhook_delay + args.webhook_jitter)  # echoes, if any
    writes = await batches(control) - writes_before
    report(args, latencies, writes)


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def report(args: argparse.Namespace, latencies: Sequence[float], writes: int) -> None:
    ms = [x * 1000 for x in latencies]
    say("")
    say(
        f"JSON-LD refresh after a price change: {len(ms)} changes over"
        f" {args.products_with_jsonld} products, {args.interval:g} s apart"
    )
    say(
        f"store: webhook delay {args.webhook_delay:g} s + jitter up to {args.webhook_jitter:g} s,"
        f" REST latency {args.latency_ms:g} ms"
    )
    rows = [
        [
            "change -> JSON-LD rewritten",
            f"{statistics.median(ms):.1f}",
            f"{pct(ms, 90):.1f}",
            f"{pct(ms, 99):.1f}",
            f"{max(ms):.1f}",
            f"{statistics.fmean(ms):.1f}",
        ]
    ]
    say(table(["ms", "p50", "p90", "p99", "max", "mean"], rows))
    say(f"store batch writes during the changes: {writes} for {len(ms)} changes (1 each: no loop)")
    say(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-jsonld-") as tmp:
        try:
            asyncio.run(run(args, Path(tmp)))
        except KeyboardInterrupt:
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
