"""Reference hub benchmark: CPU per item of upsert and patch batches, with no agent work at all.

What it measures, and why: the target of 20 000 deltas/s from the outbox to the local hub on a
2-core machine leaves the hub at most one core, so the hub alone must apply well over 20 000 items
per second (at most 40 µs of CPU per item, 25 000 items/s). Everything the agent does is taken out:
the batches are built before the clock starts (`wire.encode_batch` of demo products, 500 items per
batch by default), then applied back to back.

Two ways, each for upserts (an import: every product new to the hub) and then patches (a bulk
reprice: every product gets a new `price`, a one-field `set` against the hash the hub holds):

- **direct**: in this process, `HubDB.apply_batch` on a fresh database file, after decoding each
  body as the HTTP route does (`app._decode_batch`), with the garbage collector set as the hub
  process sets it (`app.gc_threshold`). Decode and apply are timed apart; the CPU time is
  `time.process_time()` (event loop and database thread together).
- **http**: the hub in its own process (`python -m bridge_agent hub` on a free loopback port, as
  `bench/ship.py` starts it), the pre-built bodies posted one after the other over one keep-alive
  connection with `http.client` (the cheapest client there is, so the hub's CPU dominates). Hub
  CPU is `utime + stime` from `/proc/<pid>/stat`; items/s is over wall time, client included.
  Each round uses its own store and agent id, so every upsert is a real insert.

A benchmark prints, it never asserts timing. Run from the repository root:

    uv run python bench/hub.py [--products 20000] [--batch-items 500] [--rounds 3]
                               [--mode both|direct|http] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import http.client
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import cpu_seconds, hub_process

from bridge_agent import wire
from bridge_agent.hub.app import GC_THRESHOLD, _decode_batch, gc_threshold
from bridge_agent.hub.db import HubDB
from bridge_agent.sync.hashing import content_hash
from bridge_agent.sync.patch import diff
from bridge_agent.testing.catalog import make_product

TOKEN = "bench-hub-token-0c41d7e2"  # loopback only, a throwaway hub
HEALTH_TIMEOUT = 30.0
MAX_PRODUCTS = 200_000  # keeps memory and run time bounded
MAX_ROUNDS = 20
TARGET_US = 40.0  # hub CPU per item: 25 000 items/s alone
WARM_UP = 5_000  # products applied untimed before the rounds


# -- the workload --------------------------------------------------------------------------------


def reprice(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with only its price one unit higher (money stays exact decimal text)."""
    units, _, fraction = data["price"].partition(".")
    cents = int(units) * 100 + int(fraction.ljust(2, "0")[:2]) + 100
    return {**data, "price": f"{cents // 100}.{cents % 100:02d}"}


@dataclasses.dataclass(frozen=True)
class Workload:
    upserts: list[bytes]  # encoded batches
    patches: list[bytes]
    items: int


def build(products: int, batch_items: int, seed: int, store: str, agent: str) -> Workload:
    """Upsert batches of every product, then patch batches repricing every one."""
    upserts: list[wire.Item] = []
    patches: list[wire.Item] = []
    for i in range(products):
        v1 = make_product(i, seed=seed).to_dict()
        v2 = reprice(v1)
        h1, h2 = content_hash(v1), content_hash(v2)
        common = {"store": store, "id": v1["id"], "observed_at": 1}
        upserts.append(
            wire.Item(seq=i + 1, op="upsert", hash=h1, data=v1, source="import", **common)
        )
        patches.append(
            wire.Item(
                seq=products + i + 1,
                op="patch",
                hash=h2,
                base=h1,
                data=diff(v1, v2),
                source="webhook",
                **common,
            )
        )

    def batches(items: list[wire.Item], tag: str) -> list[bytes]:
        return [
            wire.encode_batch(agent, f"{tag}{n}", 1, items[n : n + batch_items])
            for n in range(0, len(items), batch_items)
        ]

    return Workload(batches(upserts, "u"), batches(patches, "p"), products)


def warm_up(work: Workload) -> Workload:
    """The first few batches of `work`: run untimed first, because the CPUs of a shared or idle
    virtual machine take a second or so to come up to speed (the first timings are twice as slow).
    """
    keep = max(1, WARM_UP * len(work.upserts) // work.items)
    return Workload(work.upserts[:keep], work.patches[:keep], min(work.items, WARM_UP))


# -- measurements --------------------------------------------------------------------------------


@dataclasses.dataclass
class Sample:
    items: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    decode_cpu_s: float = 0.0  # direct only
    not_ok: int = 0

    @property
    def rate(self) -> float:
        return self.items / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.items * 1e6 if self.items else 0.0

    @property
    def decode_us(self) -> float:
        return self.decode_cpu_s / self.items * 1e6 if self.items else 0.0


async def direct_phase(db: HubDB, bodies: Sequence[bytes]) -> Sample:
    sample = Sample()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for body in bodies:
        d0 = time.process_time()
        batch = _decode_batch(body)
        sample.decode_cpu_s += time.process_time() - d0
        results = await db.apply_batch(batch)
        sample.items += len(results)
        sample.not_ok += sum(r.status != "ok" for r in results)
    sample.wall_s = time.perf_counter() - wall0
    sample.cpu_s = time.process_time() - cpu0
    return sample


async def direct_round(work: Workload, workdir: Path, n: int) -> tuple[Sample, Sample]:
    db = await HubDB.open(workdir / f"direct-{n}.sqlite")
    try:
        with gc_threshold(GC_THRESHOLD):  # as `serve` sets it in the hub process
            return await direct_phase(db, work.upserts), await direct_phase(db, work.patches)
    finally:
        await db.close()


def http_phase(conn: http.client.HTTPConnection, pid: int, bodies: Sequence[bytes]) -> Sample:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": wire.CONTENT_TYPE}
    sample = Sample()
    wall0, cpu0 = time.perf_counter(), cpu_seconds(pid) or 0.0
    for body in bodies:
        conn.request("POST", "/v1/batches", body=body, headers=headers)
        resp = conn.getresponse()
        answer = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"hub answered {resp.status}: {answer[:500]!r}")
        results = wire.decode_results(answer)
        sample.items += len(results)
        sample.not_ok += sum(r.status != "ok" for r in results)
    sample.wall_s = time.perf_counter() - wall0
    sample.cpu_s = (cpu_seconds(pid) or 0.0) - cpu0
    return sample


# -- report --------------------------------------------------------------------------------------


def line(name: str, sample: Sample, *, direct: bool) -> str:
    decode = f", decode {sample.decode_us:5.1f} µs" if direct else ""
    flag = "" if sample.not_ok == 0 else f"  ({sample.not_ok} items not ok!)"
    return f"  {name:<8} {sample.rate:8.0f} items/s  CPU {sample.cpu_us:6.1f} µs/item{decode}{flag}"


def summary(name: str, samples: Sequence[Sample]) -> str:
    cpu = [s.cpu_us for s in samples]
    rate = [s.rate for s in samples]
    verdict = "met" if statistics.median(cpu) <= TARGET_US else "NOT met"
    return (
        f"  {name:<8} median {statistics.median(rate):8.0f} items/s, CPU"
        f" {statistics.median(cpu):5.1f} µs/item (min {min(cpu):.1f}, max {max(cpu):.1f});"
        f" target {TARGET_US:.0f} µs {verdict}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--products", type=int, default=20_000, help="default %(default)s")
    parser.add_argument("--batch-items", type=int, default=500, help="default %(default)s")
    parser.add_argument("--rounds", type=int, default=3, help="default %(default)s")
    parser.add_argument("--mode", choices=("both", "direct", "http"), default="both")
    parser.add_argument("--seed", type=int, default=7, help="catalog seed (default %(default)s)")
    args = parser.parse_args(argv)
    if not 1 <= args.products <= MAX_PRODUCTS or args.batch_items < 1:
        parser.error(f"--products must be 1..{MAX_PRODUCTS}, --batch-items at least 1")
    if not 1 <= args.rounds <= MAX_ROUNDS:
        parser.error(f"--rounds must be 1..{MAX_ROUNDS}")

    print(
        f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} CPUs,"
        f" load {'/'.join(f'{x:.2f}' for x in os.getloadavg())};"
        f" {args.products} products, batches of {args.batch_items}, {args.rounds} rounds"
    )
    with tempfile.TemporaryDirectory(prefix="bridge-bench-hub-") as tmp:
        workdir = Path(tmp)
        if args.mode in ("both", "direct"):
            work = build(args.products, args.batch_items, args.seed, "main", "bench-direct")
            body_bytes = sum(map(len, work.upserts)), sum(map(len, work.patches))
            print(
                f"direct (HubDB.apply_batch; body bytes/item: upsert"
                f" {body_bytes[0] / work.items:.0f}, patch {body_bytes[1] / work.items:.0f})"
            )
            asyncio.run(direct_round(warm_up(work), workdir, -1))  # untimed: CPUs come up to speed
            ups: list[Sample] = []
            pats: list[Sample] = []
            for n in range(args.rounds):
                up, pat = asyncio.run(direct_round(work, workdir, n))
                ups.append(up)
                pats.append(pat)
                print(line("upsert", up, direct=True))
                print(line("patch", pat, direct=True))
            print(summary("upsert", ups))
            print(summary("patch", pats))
        if args.mode in ("both", "http"):
            print("http (hub in its own process, hub CPU from /proc)")
            ups, pats = [], []
            with hub_process(workdir, TOKEN, ready_timeout=HEALTH_TIMEOUT) as hub:
                port, pid = hub.port, hub.pid
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                try:
                    warm = build(WARM_UP, args.batch_items, args.seed, "warm", "bench-warm")
                    http_phase(conn, pid, warm.upserts)
                    http_phase(conn, pid, warm.patches)
                    for n in range(args.rounds):
                        work = build(
                            args.products, args.batch_items, args.seed, f"r{n}", f"bench-{n}"
                        )
                        up = http_phase(conn, pid, work.upserts)
                        pat = http_phase(conn, pid, work.patches)
                        ups.append(up)
                        pats.append(pat)
                        print(line("upsert", up, direct=False))
                        print(line("patch", pat, direct=False))
                finally:
                    conn.close()
            print(summary("upsert", ups))
            print(summary("patch", pats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
