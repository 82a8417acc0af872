"""Change-to-hub-ack latency at a steady rate: spool hooks (target p99 under 1 s at 100 changes/s)
and WooCommerce webhooks, through the real agent process and the reference hub.

    uv run python bench/latency.py [--rate 100] [--seconds 60] [--webhook-seconds 30]
                                   [--skip-webhooks] [--quick] [--seed 7]

1. spool: a `jsondir` store (`bridge_agent/testing/soak.py`: catalog files, spool hooks written
   as a store-side plugin writes them, temporary file + fsync + rename), the agent
   (`python -m bridge_agent run`, production settings: `batch_linger` 50 ms, 2 batches in flight)
   and the hub (`python -m bridge_agent hub`) in their own processes on loopback. The catalog
   has `rate x seconds` products, imported first; then a steady writer changes product n at
   start + n / rate, each product exactly once (title and price), so no change is coalesced
   into another and each product's hub row belongs to one change.
2. webhooks: the WooCommerce simulator (`simulate woocommerce`, own process) with the agent's
   webhooks registered (`webhook_url`, signed with `webhook_secret`), `rate x webhook-seconds`
   products imported first; then the same steady rate of merchant saves (`PATCH
   /__sim/products/{id}`, a new name), each product once. The simulator delivers each
   `product.updated` webhook 0.5-1 s later (WooCommerce's Action Scheduler); the agent
   re-fetches the product from the store's REST API, records and ships it.

Method: latency = the hub's `updated_at` for the product (epoch ms, taken in the transaction
that stores the item; the commit and the ack to the agent follow within the same request) minus,
for the spool, the wall-clock time the hook file's write began (the catalog file already in
place), and for webhooks the delivery's send time the simulator logs (`/__sim/stats` `recent`,
polled every 0.5 s; the Action Scheduler delay before it is the store's, not the agent's, so it
is left out). All processes share one clock. The hub's row is read once the writer has stopped
and the hub holds every change (inspection API), so the reading costs the run nothing.
Throughput: changes / (last ack - first hook). Prints p50, p90, p99, max and mean per path.
`--quick`: 15 s of spool changes, 10 s of webhooks. Every process is stopped and the temporary
directory removed at the end, also on errors.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from common import free_port, say, simulator, table, write_agent_config

from bridge_agent.testing.soak import (
    STORE_ID,
    AgentProcess,
    HubProcess,
    JsonDirShop,
    SteadyWriter,
    wait_hub_holds,
    write_jsondir_config,
)

WEBHOOK_SECRET = "bench-latency-webhook-secret"  # loopback only
SETTLE_LIMIT = 120.0  # seconds after the writer stops for the hub to hold every change


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", type=float, default=100.0, help="changes a second (%(default)s)")
    p.add_argument("--seconds", type=float, default=60.0, help="spool run (%(default)s)")
    p.add_argument("--webhook-seconds", type=float, default=30.0, help="(%(default)s)")
    p.add_argument("--skip-webhooks", action="store_true")
    p.add_argument("--quick", action="store_true", help="15 s of spool, 10 s of webhooks")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.webhook_seconds = 15.0, 10.0
    return args


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of sorted values."""
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def summary(label: str, latencies: Sequence[float]) -> list[str]:
    ordered = sorted(x * 1000 for x in latencies)
    return [
        label,
        str(len(ordered)),
        *(f"{percentile(ordered, q):.0f}" for q in (50, 90, 99)),
        f"{ordered[-1]:.0f}" if ordered else "nan",
        f"{statistics.fmean(ordered):.0f}" if ordered else "nan",
    ]


# -- 1. spool ------------------------------------------------------------------------------------


def spool_latency(args: argparse.Namespace, workdir: Path) -> tuple[list[float], float, float]:
    """(latencies in s, achieved write rate, throughput to the hub's ack)."""
    n = int(args.rate * args.seconds)
    shop = JsonDirShop(workdir, n, seed=args.seed)
    shop.seed()
    written: dict[str, float] = {}
    with HubProcess(workdir) as hub:
        config = write_jsondir_config(workdir, hub)
        with AgentProcess(config) as agent:
            t = time.monotonic()
            if wait_hub_holds(hub, shop.truth, 120.0 + n / 100, agent=agent):
                raise RuntimeError("the first import did not reach the hub")
            say(f"  catalog of {n} products at the hub after {time.monotonic() - t:.1f} s")

            def change(k: int) -> None:
                written[str(k + 1)] = shop.change(k + 1)

            writer = SteadyWriter(args.rate, change, count=n)
            writer.start()
            writer.join(args.seconds * 3 + 60)
            say(
                f"  {writer.done} changes written at {writer.achieved_rate:.1f}/s"
                f" (late by at most {writer.lag_max * 1000:.0f} ms)"
            )
            behind = wait_hub_holds(hub, shop.truth, SETTLE_LIMIT, agent=agent)
            if behind:
                raise RuntimeError(f"{len(behind)} changes never reached the hub: {behind[:10]}")
            at_hub = hub.products()
    acks = {pid: at_hub[pid]["updated_at"] / 1000 for pid in written}
    latencies = [acks[pid] - at for pid, at in written.items()]
    span = max(acks.values()) - min(written.values())
    return latencies, writer.achieved_rate, len(written) / span


# -- 2. WooCommerce webhooks -----------------------------------------------------------------------


class DeliveryLog:
    """Polls the simulator's delivery log (its last 200 deliveries) every 0.5 s, in a thread,
    keeping the first successful `product.updated` send time per product."""

    def __init__(self, sim_url: str) -> None:
        self.sim_url = sim_url
        self.sent: dict[str, float] = {}
        self.failed = 0
        self._seen: set[tuple[Any, float]] = set()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._main, name="delivery-log", daemon=True)

    def __enter__(self) -> DeliveryLog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        self._thread.join(timeout=30)

    def poll(self, client: httpx.Client) -> None:
        recent = client.get("/__sim/stats").json()["webhooks"]["recent"]
        for d in recent:
            key = (d["resource_id"], d["at"])
            if d["topic"] != "product.updated" or key in self._seen:
                continue
            self._seen.add(key)
            if not d["ok"]:
                self.failed += 1
                continue
            pid = str(d["resource_id"])
            self.sent[pid] = min(self.sent.get(pid, d["at"]), d["at"])

    def _main(self) -> None:
        with httpx.Client(base_url=self.sim_url, timeout=10.0) as client:
            while not self._halt.wait(0.5):
                self.poll(client)
            self.poll(client)


def webhook_latency(args: argparse.Namespace, workdir: Path) -> tuple[list[float], int]:
    """(latencies in s, failed deliveries)."""
    n = int(args.rate * args.webhook_seconds)
    with (
        simulator(workdir, "woocommerce", products=n, latency_ms=0, seed=args.seed) as sim,
        HubProcess(workdir) as hub,
    ):
        port = free_port()
        store = (
            'poll_interval = "1h"\nreconcile_interval = "1h"\nverify_schedule = "off"\n'
            "image_checks = false\n"
            f'webhook_secret = "{WEBHOOK_SECRET}"\n'
            f'webhook_url = "http://127.0.0.1:{port}/webhooks/woocommerce/{STORE_ID}"\n'
        )
        config = write_agent_config(
            workdir, sim, agent_id="bench-latency", store_id=STORE_ID, hub_url=hub.url,
            token=hub.token, store=store, webhook_port=port,
        )  # fmt: skip
        with AgentProcess(config) as agent:
            t = time.monotonic()
            ids = imported(hub, agent, n)
            say(f"  {len(ids)} products at the hub after {time.monotonic() - t:.1f} s")
            names: dict[str, str] = {}
            client = httpx.Client(base_url=sim.url, timeout=10.0)

            def change(k: int) -> None:
                pid = ids[k]
                names[pid] = f"Latency probe {k}"
                reply = client.patch(f"/__sim/products/{pid}", json={"name": names[pid]})
                reply.raise_for_status()

            with client, DeliveryLog(sim.url) as deliveries:
                writer = SteadyWriter(args.rate, change, count=len(ids))
                writer.start()
                writer.join(args.webhook_seconds * 3 + 60)
                say(
                    f"  {writer.done} saves at {writer.achieved_rate:.1f}/s"
                    f" (late by at most {writer.lag_max * 1000:.0f} ms)"
                )
                at_hub = hub_has_names(hub, agent, names)
            missing = [pid for pid in names if pid not in deliveries.sent]
            if missing:
                raise RuntimeError(f"{len(missing)} deliveries not seen in the log: {missing[:5]}")
            latencies = [at_hub[pid] - deliveries.sent[pid] for pid in names]
            return latencies, deliveries.failed


def imported(hub: HubProcess, agent: AgentProcess, expected: int) -> list[str]:
    """Wait for the import: the hub's count steady for 3 s with the outbox empty; the ids."""
    deadline = time.monotonic() + 120.0 + expected / 50
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        agent.check_alive()
        products = hub.products()
        live = sorted((pid for pid, p in products.items() if not p["deleted"]), key=int)
        if len(live) != last or agent.outbox_rows():
            last, since = len(live), time.monotonic()
        elif live and time.monotonic() - since >= 3.0:
            return live[:expected]
        time.sleep(0.5)
    raise RuntimeError(f"the import did not settle: {last} products at the hub")


def hub_has_names(hub: HubProcess, agent: AgentProcess, names: dict[str, str]) -> dict[str, float]:
    """Wait until the hub holds every new name; each product's `updated_at` in seconds."""
    deadline = time.monotonic() + SETTLE_LIMIT
    while True:
        agent.check_alive()
        products = hub.products()
        behind = [pid for pid, name in names.items() if products[pid]["data"]["title"] != name]
        if not behind:
            return {pid: products[pid]["updated_at"] / 1000 for pid in names}
        if time.monotonic() >= deadline:
            raise RuntimeError(f"{len(behind)} saves never reached the hub: {behind[:10]}")
        time.sleep(0.5)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    rows = []
    try:
        say(f"spool: {args.rate:g} changes/s for {args.seconds:g} s, each product once")
        spool_dir = workdir / "spool-run"
        spool_dir.mkdir()
        latencies, rate, throughput = spool_latency(args, spool_dir)
        rows.append(summary("spool hook -> hub ack", latencies))
        say(f"  throughput: {throughput:.1f} changes/s acked (written at {rate:.1f}/s)")
        if not args.skip_webhooks:
            say(f"webhooks: {args.rate:g} saves/s for {args.webhook_seconds:g} s, each once")
            hook_dir = workdir / "webhook-run"
            hook_dir.mkdir()
            hooks, failed = webhook_latency(args, hook_dir)
            rows.append(summary("webhook sent -> hub ack", hooks))
            say(f"  failed deliveries: {failed}")
    except BaseException:
        say(f"failed; logs kept in {workdir}")
        raise
    say("")
    say(f"latency at {args.rate:g} changes/s (target: spool p99 < 1000 ms)")
    say(table(["ms", "n", "p50", "p90", "p99", "max", "mean"], rows))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
