"""Crash test (guarantees 1 and 2): the real agent, killed with SIGKILL at random moments.

A stream of store changes (edits, creations, deletions: the catalog files change, then a spool
hint is written, as a store-side plugin does) runs while the agent process is started and killed
with SIGKILL over and over, at seeded random moments: during start-up, while recording, while
shipping. After the last restart the agent must bring the hub to exactly the store's truth: the
latest state of every product, and every deleted product deleted. A change acknowledged (spool file
removed) but not committed, or an outbox row retired without the hub holding it, would show up as a
product whose hub state is older than the store's.

`bench/chaos.py` runs the same scenario for longer; here it is short and seeded.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge_agent.sync.hashing import content_hash
from bridge_agent.testing.catalog import (
    delete_product,
    make_product,
    read_catalog,
    spool_event,
    write_product,
    write_spool,
)
from bridge_agent.testing.waiting import until
from tests.conftest import JSONDIR_STORE, TOKEN, Hub, free_port

TRIALS = 12
PRODUCTS = 60
SEED = int(os.environ.get("BRIDGE_CRASH_SEED", "20261123"))


def write_config(root: Path, hub_url: str, health_port: int) -> Path:
    config = root / "agent.toml"
    config.write_text(
        f"""
[agent]
id = "crash-agent"
state_dir = "state"
drain_timeout = "5s"

[hub]
url = "{hub_url}"
token = "${{BRIDGE_HUB_TOKEN}}"
batch_max_items = 25
batch_linger = "0s"
backoff_base = "50ms"
backoff_cap = "500ms"

[health]
listen = "127.0.0.1:{health_port}"

{JSONDIR_STORE}""",
        encoding="utf-8",
    )
    return config


def start_agent(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "BRIDGE_HUB_TOKEN": TOKEN}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge_agent", "--config", str(config), "--log-format",
             "json", "run"],
            stdout=out, stderr=out, env=env,
        )  # fmt: skip


class Store:
    """The store's truth (catalog files) and its change hints (spool files)."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.catalog = root / "catalog"
        self.spool = root / "spool"
        self.catalog.mkdir()
        self.rng = rng
        self.revision: dict[int, int] = {}
        self.next_id = PRODUCTS + 1
        self.changes = 0

    def seed(self) -> None:
        for i in range(1, PRODUCTS + 1):
            write_product(self.catalog, make_product(i))
            self.revision[i] = 0
        write_spool(self.spool, [spool_event("product.created", str(i)) for i in self.revision])

    def change(self) -> None:
        roll = self.rng.random()
        live = sorted(i for i, r in self.revision.items() if r >= 0)
        if roll < 0.08 and live:
            victim = self.rng.choice(live)
            delete_product(self.catalog, str(victim))
            self.revision[victim] = -1
            write_spool(self.spool, spool_event("product.deleted", str(victim)))
        elif roll < 0.15:
            new = self.next_id
            self.next_id += 1
            write_product(self.catalog, make_product(new))
            self.revision[new] = 0
            write_spool(self.spool, spool_event("product.created", str(new)))
        else:
            i = self.rng.choice(live)
            self.revision[i] += 1
            product = replace(
                make_product(i, revision=self.revision[i]), title=f"rev {self.revision[i]}"
            )
            write_product(self.catalog, product)
            write_spool(self.spool, spool_event("product.updated", str(i)))
        self.changes += 1


async def feed(store: Store, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(store.rng.randrange(1, 6)):
            store.change()
        await asyncio.sleep(store.rng.uniform(0.005, 0.03))


async def wait_until_settled(health_port: int, store: Store, limit: float = 60.0) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{health_port}", timeout=2) as c:

        async def settled() -> bool:
            if any((store.spool / "incoming").glob("*.json")):
                return False
            try:
                status = (await c.get("/status")).json()
            except httpx.HTTPError:
                return False
            return bool(status) and status["outbox"]["pending"] == 0

        await until(
            settled, limit, what="the agent to settle (spool consumed, outbox empty)", every=0.1
        )


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path, hub: Hub) -> None:
    rng = random.Random(SEED)
    store = Store(tmp_path, rng)
    store.seed()
    health_port = free_port()
    config = write_config(tmp_path, hub.url, health_port)
    log = tmp_path / "agent.log"
    kills = 0
    for _ in range(TRIALS):
        agent = start_agent(config, log)
        # Kill anywhere from mid start-up to well into shipping.
        await feed(store, rng.uniform(0.05, 1.2))
        agent.send_signal(signal.SIGKILL)
        await asyncio.to_thread(agent.wait, 10)
        kills += 1
        if rng.random() < 0.5:
            await feed(store, rng.uniform(0.0, 0.2))  # changes while the agent is down
    assert kills == TRIALS

    agent = start_agent(config, log)
    try:
        await wait_until_settled(health_port, store)
    finally:
        agent.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(agent.wait, 30)
    assert code == 0, log.read_text()[-3000:]

    truth = read_catalog(store.catalog)
    at_hub = await hub.products("main")
    stale = [
        pid for pid, data in truth.items()
        if pid not in at_hub or at_hub[pid]["deleted"] or at_hub[pid]["data"] != data
    ]  # fmt: skip
    assert not stale, f"hub is behind the store for {len(stale)} products: {stale[:10]}"
    for pid, product in at_hub.items():
        if pid not in truth:
            assert product["deleted"], f"product {pid} was deleted in the store"
        else:
            assert product["hash"] == content_hash(truth[pid])
    assert store.changes > 50
    deleted = sum(1 for r in store.revision.values() if r < 0)
    print(json.dumps({"changes": store.changes, "kills": kills, "deleted": deleted}))


def _last_lines(path: Path, n: int = 20) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines()[-n:]
    return [json.loads(line) for line in lines if line.startswith("{")]
