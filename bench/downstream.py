"""Downstream benchmark: the hub's optimisations applied to a store by the real agent.

What it measures, and why (issue 12, "Measure"):

(a) **Latency** from enqueueing an optimisation at the hub to the write in the store, at a steady
    `--rate` optimisations/s for `--seconds` (one product each: an SEO title): p50, p90, p99 and
    max of (1) enqueue -> the store committed the write (the simulator's own clock of its last
    REST write of the product, `GET /__sim/writes`), and (2) enqueue -> the result (`applied`,
    verified by reading back) recorded at the hub (`reported_at - created_at` of the hub's record,
    one clock). Target: p99 under 1 s plus the store's own write latency. The store's write
    latency is printed beside it, measured by this script with direct `POST /products/batch`
    requests of one product (the simulator's `--latency-ms` plus its own work).
(b) **Bulk**: `--bulk` optimisations (an SEO meta description each, one per product) enqueued at
    once: the rate to the last result at the hub, the store requests it took by kind, and the
    ratio to the floor the store's request budget allows. The floor: every 100 products (the
    `/products/batch` limit) need at least one read (the conflict check), one batch write and one
    read back, so `3 x ceil(N / 100)` requests; at `requests_per_second` that takes
    `requests / rps` seconds, and with `concurrency` requests in flight of `latency` each,
    `requests x latency / concurrency`: the floor is the larger. (With `--rps 0` the store has no
    rate budget and only the latency bound remains.)

How: three processes on loopback. The WooCommerce simulator (`python -m bridge_agent simulate
woocommerce --products N --latency-ms L --seed S`, 20 % variable products), the reference hub
(`python -m bridge_agent hub`) and the agent (`python -m bridge_agent --config <tmp>/agent.toml
--log-format json run`, one store with `seo_plugin = "yoast"`, `concurrency` and
`requests_per_second` from the flags, polls and reconciliation an hour away, no webhooks unless
`--webhooks`: with them, every write also comes back as a webhook whose re-fetch spends the same
budget). The agent imports the catalog first; the benchmark waits for the import and the outbox
(state directory read-only), reads the hub's copy of every product (the `from` values, as a hub
would), and then runs (a) and (b). Optimisations go through `POST /v1/stores/main/optimizations`.

**Shopify** (`--platform shopify`, issue 15, "Measure"): the same two figures against `python -m
bridge_agent simulate shopify` (its leaky cost bucket set through `POST /__sim/faults` before the
agent starts: `--restore-rate` points/s, `--bucket-max` points, by default Shopify Plus's 1 000 and
20 x the restore rate; the store's `requests_per_second` is 0 unless `--rps` is given: the client's
cost bucket paces it). One optimisation rewrites a product's SEO field, so it costs the agent's
reads (`nodes(ids:)`: the check before the write, the writer's own read, the read back), one
`productUpdate` mutation, and the re-read of the product for the mirror; the points are measured,
not assumed: `points_spent` of `/__sim/stats` across the bulk, divided by the optimisations, and
split per GraphQL operation by `CostTap`, a proxy on loopback between the agent and the simulator
(one more hop, inside the figures). The floor is then `(points - the bucket's points available when
the bulk starts) / restore rate` (printed also without the head start: points / restore rate), and
the extrapolation to the Standard plan's 100 points/s (bucket 2 000) is printed beside it, labelled:
the same points at that rate, assuming the agent stays bound by the bucket (its ratio to the floor
at the measured rate says how far it is from that). `THROTTLED` answers of the simulator are counted
over the whole run: the client paces on `throttleStatus`, so any is a defect. The Shopify simulator
has no per-write clock (its clock is whole seconds), so (a) gives enqueue -> verified result at the
hub only; the store's own latency is that of direct one-product `productUpdate` calls.

Every process is stopped and the temporary directory removed at the end, also on errors and
Ctrl-C. It prints figures, it asserts nothing timed. Run from the repository root:

    uv run python bench/downstream.py [--platform woocommerce] [--products 11000]
                                      [--latency-ms 20] [--concurrency 4] [--rps 20] [--rate 20]
                                      [--seconds 30] [--bulk 10000] [--webhooks] [--seed 7]
    uv run python bench/downstream.py --platform shopify [--restore-rate 1000]
                                      [--bucket-max 20000] [... the options above]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from common import cpu_seconds, free_port, hub_process, process, say, table, tail

from bridge_agent.errors import StateStoreError
from bridge_agent.platforms.shopify import queries
from bridge_agent.store import StateStore

STORE = "main"
BATCH = 100  # woocommerce_rest_batch_items_limit
READS_AND_WRITE = 3  # per batch of 100: read (conflict check), write, read back
ENQUEUE_CHUNK = 1000  # optimisations per POST for the bulk
FINAL = ("applied", "conflict", "failed", "rejected_by_reviewer")
STANDARD_RESTORE = 100.0  # Shopify's Standard plan: points/s restored, and its bucket
STANDARD_BUCKET = 2000.0


# -- processes -----------------------------------------------------------------------------------


def wait_http(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}:\n{tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            reply = httpx.get(url, timeout=2.0)
            if reply.status_code == 200:
                return reply
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s:\n{tail(log)}")


def set_bucket(sim_url: str, args: argparse.Namespace) -> None:
    """The plan's cost bucket, set before the agent's first request (it reads `throttleStatus`)."""
    bucket = {"restore_rate": args.restore_rate, "bucket_max": args.bucket_max}
    httpx.post(f"{sim_url}/__sim/faults", json=bucket, timeout=10).raise_for_status()


def agent_config(
    workdir: Path, info: dict[str, Any], hub_url: str, token: str, args: argparse.Namespace
) -> Path:
    listener, store_hooks = "", ""
    shopify = args.platform == "shopify"
    if args.webhooks:
        port = free_port()
        listener = f'[webhooks]\nlisten = "127.0.0.1:{port}"\n'
        secret = info["client_secret"] if shopify else "bench-webhook-secret"
        store_hooks = (
            f'webhook_url = "http://127.0.0.1:{port}/webhooks/{args.platform}/{STORE}"\n'
            f'webhook_secret = "{secret}"\n'
        )
    if shopify:
        # What the agent needs of the simulator (bench/common.py's `Sim.connection` is being
        # extended for Shopify by another bench; this script keeps its own, as for WooCommerce).
        connection = f'url = "{info["shop_url"]}"\naccess_token = "{info["access_token"]}"\n'
    else:
        connection = (
            f'url = "{info["site_url"]}"\n'
            f'consumer_key = "{info["consumer_key"]}"\n'
            f'consumer_secret = "{info["consumer_secret"]}"\n'
            'seo_plugin = "yoast"\n'
        )
    text = f"""\
[agent]
id = "bench-downstream"
state_dir = "state"
drain_timeout = "30s"

[hub]
url = "{hub_url}"
token = "{token}"

[health]
listen = "127.0.0.1:{free_port()}"

{listener}
[[stores]]
id = "{STORE}"
platform = "{args.platform}"
{connection}concurrency = {args.concurrency}
requests_per_second = {args.rps}
poll_interval = "1h"
reconcile_interval = "1h"
{store_hooks}"""
    path = workdir / "agent.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


# -- reading the parts ---------------------------------------------------------------------------


async def settled(state_dir: Path) -> bool:
    """The import run is done and the outbox is empty (read-only: no work for the agent)."""
    try:
        async with StateStore.open(state_dir, read_only=True) as state:
            run = await state.last_run(STORE, "import")
            return run is not None and run.state == "done" and (await state.stats()).pending == 0
    except StateStoreError:
        return False


async def wait_for(
    probe: Any,
    limit: float,
    what: str,
    agent: subprocess.Popen[bytes],
    log: Path,
    every: float = 0.2,
) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited with {agent.returncode}:\n{tail(log)}")
        if await probe():
            return
        await asyncio.sleep(every)
    raise RuntimeError(f"{what}: not done after {limit:.0f} s (bounded wait):\n{tail(log)}")


async def hub_products(hub: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    after = ""
    while True:
        page = (
            await hub.get(f"/v1/stores/{STORE}/products", params={"after": after, "limit": 1000})
        ).json()
        out.update({p["id"]: p for p in page["products"] if not p["deleted"]})
        if not page["next"]:
            return out
        after = page["next"]


async def results_count(hub: httpx.AsyncClient) -> int:
    return int((await hub.get("/v1/stats")).json().get("optimization_results", 0))


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def spread(values: Sequence[float]) -> list[str]:
    return [f"{percentile(values, p):.0f}" for p in (50, 90, 99)] + [f"{max(values):.0f}"]


@dataclasses.dataclass
class StoreRequests:
    by_kind: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


def requests_between(before: dict[str, Any], after: dict[str, Any]) -> StoreRequests:
    out = StoreRequests()
    old = before.get("requests", {})
    for route, statuses in after.get("requests", {}).items():
        method, _, path = route.partition(" ")
        if not path.startswith("/wp-json/"):
            continue
        count = sum(n - old.get(route, {}).get(s, 0) for s, n in statuses.items())
        if not count:
            continue
        if method == "POST" and path.endswith("/products/batch"):
            kind = "batch writes"
        elif method == "GET" and path.endswith("/products"):
            kind = "product listings (reads)"
        elif method == "GET" and path.endswith("/variations"):
            kind = "variation listings"
        elif method == "GET":
            kind = "single product reads"
        else:
            kind = f"other ({method})"
        out.by_kind[kind] = out.by_kind.get(kind, 0) + count
    return out


async def store_write_latency(
    sim: httpx.AsyncClient, info: dict[str, Any], product: str, samples: int = 20
) -> list[float]:
    """ms of direct one-product `POST /products/batch` requests (a meta row nobody reads)."""
    auth = (info["consumer_key"], info["consumer_secret"])
    out = []
    for n in range(samples):
        body = {"update": [{"id": int(product), "meta_data": [{"key": "_bench", "value": str(n)}]}]}
        started = time.perf_counter()
        reply = await sim.post("/wp-json/wc/v3/products/batch", json=body, auth=auth)
        out.append((time.perf_counter() - started) * 1000)
        reply.raise_for_status()
    return out


async def shopify_write_latency(
    sim: httpx.AsyncClient, info: dict[str, Any], product: str, samples: int = 20
) -> list[float]:
    """ms of direct one-product `productUpdate` calls (the writer's own document), sent no
    faster than the bucket restores (10 points each), so none is THROTTLED."""
    headers = {"X-Shopify-Access-Token": info["access_token"]}
    out = []
    for n in range(samples):
        body = {
            "query": queries.PRODUCT_UPDATE,
            "variables": {
                "product": {
                    "id": f"gid://shopify/Product/{product}",
                    "seo": {"title": f"Bench probe {n}"},
                }
            },
        }
        started = time.perf_counter()
        reply = await sim.post(info["graphql_url"], json=body, headers=headers)
        out.append((time.perf_counter() - started) * 1000)
        reply.raise_for_status()
        errors = reply.json().get("errors")
        if errors:
            raise RuntimeError(f"the probe productUpdate was refused: {errors}")
    return out


class CostTap:
    """A loopback proxy between the agent and the Shopify simulator that counts, per GraphQL
    operation name, the calls and the points Shopify charged (`extensions.cost
    .actualQueryCost`): which queries and mutations the optimisations cost. Everything else
    passes through unchanged (the simulator's answers, statuses and headers)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.calls: dict[str, list[float]] = {}  # operation -> [calls, points]
        self.port = free_port()
        self._client: httpx.AsyncClient | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def snapshot(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in self.calls.items()}

    async def __aenter__(self) -> CostTap:
        self._client = httpx.AsyncClient(base_url=self.upstream, timeout=120)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.aclose()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._client is not None
        body = await request.read()
        skip = {"host", "content-length", "transfer-encoding", "connection"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        reply = await self._client.request(
            request.method, request.path_qs, content=body, headers=headers
        )
        if request.path.endswith("/graphql.json") and reply.status_code == 200:
            self._count(body, reply.content)
        kept = {"content-type"}
        out = {k: v for k, v in reply.headers.items() if k.lower() in kept}
        return web.Response(status=reply.status_code, body=reply.content, headers=out)

    def _count(self, sent: bytes, answer: bytes) -> None:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            query = json.loads(sent).get("query", "")
            found = re.search(r"\b(query|mutation)\s+(\w+)", query)
            name = f"{found.group(1)} {found.group(2)}" if found else "anonymous"
            doc = json.loads(answer)
            cost = (doc.get("extensions") or {}).get("cost") or {}
            throttled = any(
                (e.get("extensions") or {}).get("code") == "THROTTLED"
                for e in doc.get("errors") or []
            )
            row = self.calls.setdefault(name + (" (THROTTLED)" if throttled else ""), [0, 0])
            row[0] += 1
            row[1] += float(cost.get("actualQueryCost") or 0)


def operations_between(
    before: dict[str, list[float]], after: dict[str, list[float]]
) -> dict[str, tuple[int, float]]:
    """Per GraphQL operation: (calls, points) between two snapshots of the tap."""
    out = {}
    for name, (calls, points) in after.items():
        old = before.get(name, [0, 0])
        if calls - old[0]:
            out[name] = (int(calls - old[0]), points - old[1])
    return out


def shopify_counters(stats: dict[str, Any]) -> dict[str, float]:
    """What the Shopify simulator counts that the bench reads: points, THROTTLED, requests."""
    return {
        "points": float(stats.get("points_spent", 0)),
        "throttled": float(stats.get("throttled", 0)),
        "requests": float(stats.get("requests_total", 0)),
        "available": float(stats.get("bucket", {}).get("currentlyAvailable", 0)),
    }


# -- the two measures ----------------------------------------------------------------------------


async def latency_phase(
    hub: httpx.AsyncClient,
    sim: httpx.AsyncClient,
    products: list[tuple[str, dict[str, Any]]],
    args: argparse.Namespace,
    agent: subprocess.Popen[bytes],
    log: Path,
) -> dict[str, Any]:
    count = min(len(products), int(args.rate * args.seconds))
    chosen = products[:count]
    before = await results_count(hub)
    ids: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def enqueue(n: int, pid: str, data: dict[str, Any]) -> None:
        await asyncio.sleep(max(0.0, start + n / args.rate - loop.time()))
        body = {
            "product": pid,
            "fields": {"seo_title": {"from": data.get("seo_title"), "to": f"Bench title {n}"}},
        }
        reply = await hub.post(f"/v1/stores/{STORE}/optimizations", json=body)
        reply.raise_for_status()
        ids[pid] = reply.json()["ids"][0]

    await asyncio.gather(*(enqueue(n, pid, data) for n, (pid, data) in enumerate(chosen)))
    sent_s = loop.time() - start

    async def all_reported() -> bool:
        return await results_count(hub) >= before + count

    await wait_for(all_reported, 120, "the latency phase's results", agent, log)
    written: dict[str, float] = {}
    if args.platform == "woocommerce":
        written = (await sim.get("/__sim/writes")).json()["at"]
    slots = asyncio.Semaphore(16)

    async def record(opt_id: str) -> dict[str, Any]:
        async with slots:
            doc: dict[str, Any] = (
                await hub.get(f"/v1/stores/{STORE}/optimizations/{opt_id}")
            ).json()
            return doc

    records = await asyncio.gather(*(record(i) for i in ids.values()))
    # The Shopify simulator keeps no clock of its writes (module docstring): no store column.
    to_store = [written[r["product"]] * 1000 - r["created_at"] for r in records] if written else []
    to_result = [r["reported_at"] - r["created_at"] for r in records]
    statuses: dict[str, int] = {}
    for r in records:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {
        "count": count,
        "sent_s": sent_s,
        "to_store": to_store,
        "to_result": to_result,
        "statuses": statuses,
    }


async def bulk_phase(
    hub: httpx.AsyncClient,
    sim: httpx.AsyncClient,
    products: list[tuple[str, dict[str, Any]]],
    args: argparse.Namespace,
    agent: subprocess.Popen[bytes],
    log: Path,
) -> dict[str, Any]:
    chosen = products[: args.bulk]
    before = await results_count(hub)
    stats_before = (await sim.get("/__sim/stats")).json()
    cpu_before = cpu_seconds(agent.pid) or 0.0
    started = time.time()
    for n in range(0, len(chosen), ENQUEUE_CHUNK):
        body = [
            {
                "product": pid,
                "fields": {
                    "seo_description": {
                        "from": data.get("seo_description"),
                        "to": f"Bench description for {pid}",
                    }
                },
            }
            for pid, data in chosen[n : n + ENQUEUE_CHUNK]
        ]
        (await hub.post(f"/v1/stores/{STORE}/optimizations", json=body)).raise_for_status()
    enqueued_s = time.time() - started

    async def all_reported() -> bool:
        return await results_count(hub) >= before + len(chosen)

    await wait_for(all_reported, 3600, "the bulk's results", agent, log, every=0.5)
    done_s = time.time() - started
    cpu = (cpu_seconds(agent.pid) or 0.0) - cpu_before
    stats_after = (await sim.get("/__sim/stats")).json()
    out: dict[str, Any] = {
        "count": len(chosen),
        "enqueued_s": enqueued_s,
        "done_s": done_s,
        "cpu_s": cpu,
    }
    if args.platform == "shopify":
        out["shopify_before"] = shopify_counters(stats_before)
        out["shopify_after"] = shopify_counters(stats_after)
    else:
        writes = (await sim.get("/__sim/writes")).json()["at"]
        out["last_write_s"] = max(writes[pid] for pid, _ in chosen) - started
        out["requests"] = requests_between(stats_before, stats_after)
    return out


# -- main ------------------------------------------------------------------------------------------


async def run(workdir: Path, args: argparse.Namespace) -> None:
    token = secrets.token_urlsafe(18)
    port = free_port()
    sim_log = workdir / "simulator.log"
    command = [sys.executable, "-m", "bridge_agent", "simulate", args.platform,
               "--products", str(args.products), "--port", str(port),
               "--latency-ms", str(args.latency_ms), "--seed", str(args.seed)]  # fmt: skip
    tap: CostTap | None = None
    async with contextlib.AsyncExitStack() as taps:
        with (
            process(command, sim_log) as sim_proc,
            hub_process(workdir, token) as hub_info,
        ):
            sim_url = f"http://127.0.0.1:{port}"
            info = wait_http(sim_proc, f"{sim_url}/__sim/info", sim_log, 60 + args.products / 500)
            info_doc = info.json()
            agent_info = info_doc
            if args.platform == "shopify":
                set_bucket(sim_url, args)
                tap = await taps.enter_async_context(CostTap(sim_url))
                agent_info = {**info_doc, "shop_url": tap.url}
            await measure(workdir, args, token, sim_url, hub_info.url, info_doc, agent_info, tap)


async def measure(
    workdir: Path,
    args: argparse.Namespace,
    token: str,
    sim_url: str,
    hub_url: str,
    info_doc: dict[str, Any],
    agent_info: dict[str, Any],
    tap: CostTap | None,
) -> None:
    """Start the agent on the simulator (or the tap before it), wait for the import, measure."""
    config = agent_config(workdir, agent_info, hub_url, token, args)
    (workdir / "state").mkdir()
    agent_log = workdir / "agent.log"
    agent_cmd = [sys.executable, "-m", "bridge_agent", "--config", str(config),
                 "--log-format", "json", "run"]  # fmt: skip
    with process(agent_cmd, agent_log) as agent:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx.AsyncClient(base_url=hub_url, headers=headers, timeout=60) as hub,
            httpx.AsyncClient(base_url=sim_url, timeout=60) as sim,
        ):
            say(f"importing {args.products} products first (latency {args.latency_ms} ms)...")
            t = time.monotonic()
            await wait_for(
                lambda: settled(workdir / "state"),
                1800,
                "the import",
                agent,
                agent_log,
                every=0.5,
            )
            say(f"  imported and shipped in {time.monotonic() - t:.1f} s")
            held = sorted((await hub_products(hub)).items(), key=lambda kv: int(kv[0]))
            products = [(pid, p["data"]) for pid, p in held]
            needed = int(args.rate * args.seconds) + args.bulk
            if len(products) < needed:
                say(
                    f"  note: {len(products)} products for {needed} optimisations: the bulk"
                    " reuses none, it is cut short"
                )
            lat = await latency_phase(hub, sim, products, args, agent, agent_log)
            rest = products[lat["count"] :]
            calls_before = tap.snapshot() if tap is not None else {}
            bulk = await bulk_phase(hub, sim, rest, args, agent, agent_log)
            if tap is not None:
                bulk["operations"] = operations_between(calls_before, tap.snapshot())
            probe = products[-1][0]
            if args.platform == "shopify":
                write_ms = await shopify_write_latency(sim, info_doc, probe)
                run_counters = shopify_counters((await sim.get("/__sim/stats")).json())
                bulk["throttled_run"] = run_counters["throttled"]
            else:
                write_ms = await store_write_latency(sim, info_doc, probe)
    report(args, lat, bulk, write_ms)


def report(
    args: argparse.Namespace, lat: dict[str, Any], bulk: dict[str, Any], write_ms: list[float]
) -> None:
    cpus = len(os.sched_getaffinity(0))
    budget = f"{args.rps:g}/s" if args.rps else "none"
    shopify = args.platform == "shopify"
    say("")
    say(f"machine: {platform.machine()}, Python {platform.python_version()}, {cpus} CPU(s)")
    say(
        f"store: {'Shopify ' if shopify else ''}simulator, {args.latency_ms:g} ms per request,"
        f" concurrency {args.concurrency}, requests_per_second {budget},"
        f" webhooks {'on' if args.webhooks else 'off'}"
    )
    if shopify:
        say(
            f"cost bucket: restore rate {args.restore_rate:g} points/s, maximum"
            f" {args.bucket_max:g} points"
        )
    how = "productUpdate" if shopify else "POST /products/batch"
    say(
        f"the store's own write latency (one-product {how}, direct):"
        f" p50 {statistics.median(write_ms):.0f} ms, max {max(write_ms):.0f} ms"
    )
    say("")
    say(
        f"(a) latency at {args.rate:g} optimisations/s: {lat['count']} enqueued in"
        f" {lat['sent_s']:.1f} s, results {lat['statuses']}"
    )
    rows = []
    if lat["to_store"]:
        rows.append(["enqueue -> write committed in the store", *spread(lat["to_store"])])
    rows.append(["enqueue -> verified result at the hub", *spread(lat["to_result"])])
    say(table(["ms", "p50", "p90", "p99", "max"], rows))
    say("")
    if shopify:
        report_shopify_bulk(args, bulk)
        return
    requests: StoreRequests = bulk["requests"]
    n = bulk["count"]
    floor_requests = READS_AND_WRITE * math.ceil(n / BATCH)
    by_budget = floor_requests / args.rps if args.rps else 0.0
    by_latency = floor_requests * args.latency_ms / 1000 / args.concurrency
    floor = max(by_budget, by_latency)
    done = bulk["done_s"]
    say(f"(b) bulk of {n} optimisations (enqueued in {bulk['enqueued_s']:.1f} s):")
    say(
        f"  last write in the store after {bulk['last_write_s']:.1f} s, last result at the hub"
        f" after {done:.1f} s: {n / done:.0f} optimisations/s"
    )
    say(
        f"  floor: {floor_requests} requests (read, write, read back per {BATCH}):"
        f" {by_budget:.1f} s by the rate budget, {by_latency:.1f} s by latency/concurrency"
        f" -> {floor:.1f} s, {n / floor if floor else math.inf:.0f} optimisations/s"
    )
    say(
        f"  ratio to the floor: {done / floor if floor else math.inf:.1f}x;"
        f" agent CPU {bulk['cpu_s']:.1f} s ({bulk['cpu_s'] / n * 1000:.2f} ms per optimisation)"
    )
    kinds = [[k, str(v), f"{v / n * 100:.1f}"] for k, v in sorted(requests.by_kind.items())]
    kinds.append(["total", str(requests.total), f"{requests.total / n * 100:.1f}"])
    say(table(["store requests during the bulk", "count", "per 100 optimisations"], kinds))


def report_shopify_bulk(args: argparse.Namespace, bulk: dict[str, Any]) -> None:
    before, after = bulk["shopify_before"], bulk["shopify_after"]
    n, done = bulk["count"], bulk["done_s"]
    points = after["points"] - before["points"]
    calls = after["requests"] - before["requests"]
    head = before["available"]  # the bucket's points when the bulk starts
    plain = points / args.restore_rate
    floor = max(0.0, points - head) / args.restore_rate
    say(f"(b) bulk of {n} optimisations (enqueued in {bulk['enqueued_s']:.1f} s):")
    say(
        f"  last result at the hub after {done:.1f} s: {n / done:.0f} optimisations/s;"
        f" agent CPU {bulk['cpu_s']:.1f} s ({bulk['cpu_s'] / n * 1000:.2f} ms per optimisation)"
    )
    say(
        f"  points spent: {points:.0f} ({points / n:.1f} per optimisation), {calls:.0f} GraphQL"
        f" requests ({calls / n:.2f} per optimisation), {points / done:.0f} points/s"
    )
    say(
        f"  floor at {args.restore_rate:g} points/s: {points:.0f} points / restore rate ="
        f" {plain:.1f} s; less the {head:.0f} points in the bucket at the start: {floor:.1f} s"
        + (f" -> {n / floor:.0f} optimisations/s" if floor else "")
    )
    if floor:
        say(
            f"  ratio to the floor: {done / floor:.2f}x"
            f" ({done / plain:.2f}x of points / restore rate)"
        )
    else:
        say("  ratio to the floor: none (the bucket's head start covers the bulk: run more)")
    kinds = [
        [name, str(calls), f"{calls / n:.2f}", f"{spent:.0f}", f"{spent / n:.1f}"]
        for name, (calls, spent) in sorted(bulk.get("operations", {}).items())
    ]
    if kinds:
        say(
            table(["GraphQL operation (the tap)", "calls", "per opt.", "points", "per opt."], kinds)
        )
    standard = max(0.0, points - STANDARD_BUCKET) / STANDARD_RESTORE
    say(
        f"  EXTRAPOLATED, not measured: the same {points:.0f} points on the Standard plan"
        f" ({STANDARD_RESTORE:g} points/s, bucket {STANDARD_BUCKET:g}) take at least"
        f" {standard:.0f} s ({standard / 60:.1f} min, {n / standard if standard else math.inf:.1f}"
        f" optimisations/s)"
        + (f"; at this run's ratio to the floor: {standard * done / floor:.0f} s" if floor else "")
    )
    throttled = bulk.get("throttled_run", after["throttled"])
    say(
        f"  THROTTLED answers: {after['throttled'] - before['throttled']:.0f} during the bulk,"
        f" {throttled:.0f} over the whole run (must be 0)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--platform", choices=("woocommerce", "shopify"), default="woocommerce")
    parser.add_argument("--products", type=int, default=11_000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--rps",
        type=float,
        default=None,
        help="requests_per_second budget (default 20 for woocommerce, 0 for shopify)",
    )
    parser.add_argument("--rate", type=float, default=20.0, help="optimisations/s in (a)")
    parser.add_argument("--seconds", type=float, default=30.0, help="duration of (a)")
    parser.add_argument("--bulk", type=int, default=10_000)
    parser.add_argument("--webhooks", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--restore-rate",
        type=float,
        default=1000.0,
        help="shopify: points/s the cost bucket restores (default 1000: Plus; Standard is 100)",
    )
    parser.add_argument(
        "--bucket-max",
        type=float,
        default=None,
        help="shopify: the cost bucket's size in points (default 20 x the restore rate)",
    )
    args = parser.parse_args()
    if args.rps is None:
        args.rps = 0.0 if args.platform == "shopify" else 20.0
    if args.bucket_max is None:
        args.bucket_max = 20 * args.restore_rate
    with tempfile.TemporaryDirectory(prefix="bench-downstream-") as tmp:
        try:
            asyncio.run(run(Path(tmp), args))
        except KeyboardInterrupt:
            say("interrupted")
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
