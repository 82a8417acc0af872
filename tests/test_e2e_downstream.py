"""Downstream end to end: the real agent process, the WooCommerce simulator and the reference hub.

An optimisation is enqueued at the hub (`POST /v1/stores/{store}/optimizations`), the agent
(`python -m bridge_agent run`, killed with SIGKILL where it hurts) takes it from the feed, writes it
to the simulated store and reports the result. The simulator counts every field written through
its REST API (`GET /__sim/writes`), so "never written twice" is a count, and the hub's batch bodies
are decoded to count what was shipped upstream, per product and source.

- an optimisation reaches the product: SEO meta in the product's SEO plugin, description, image
  ALT, `_bridge_jsonld`; the hub gets `applied` with the product's hash;
- conflict (guarantee 5): a field the merchant edited after the hub read it keeps the merchant's
  value and is `conflict`; the other fields apply;
- echo (guarantee 6): the store's webhook, a spool event and polls for the written product ship
  nothing beyond the one re-read product;
- SIGKILL between the write and the result post, between two products of a batch, and after a
  batch that never landed (refused while the agent read back): after a restart no field is
  written twice, the one that never landed is written once, and every optimisation has one
  final result at the hub;
- a store whose host answers POST/PUT with an HTML error page: a per-item `failed` naming the
  status, one request, nothing written, nothing retried blindly;
- images keep their ids and order, nothing detached or sideloaded; a shared attachment is
  reported and its ALT left alone.
- `bridge-agent demo` shows an optimisation reaching the store: the SEO title and description
  before and after, and the JSON-LD written.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge_agent import wire
from bridge_agent.errors import StateStoreError
from bridge_agent.store import StateStore
from bridge_agent.testing.catalog import spool_event, write_spool
from bridge_agent.testing.waiting import until
from tests.conftest import TOKEN, Hub, free_port
from tests.test_e2e_woocommerce import WEBHOOK_SECRET, Sim, start_sim

STORE = "main"
FINAL = ("applied", "conflict", "failed", "rejected_by_reviewer")
YOAST = ("_yoast_wpseo_title", "_yoast_wpseo_metadesc")
RANKMATH = ("rank_math_title", "rank_math_description")


@dataclass
class Stack:
    """The simulator (in this process), the hub (fixture) and the agent process around them."""

    root: Path
    woo: Sim
    hub: Hub
    health_port: int = field(default_factory=free_port)
    webhook_port: int = field(default_factory=free_port)
    agent: subprocess.Popen[bytes] | None = None

    def config(self, *, poll_interval: str = "1h", extra: str = "") -> Path:
        path = self.root / "agent.toml"
        (self.root / "state").mkdir(exist_ok=True)
        path.write_text(
            f"""
[agent]
id = "downstream-agent"
state_dir = "state"
drain_timeout = "5s"

[hub]
url = "{self.hub.url}"
token = "{TOKEN}"
batch_linger = "0s"
backoff_base = "50ms"
backoff_cap = "500ms"

[health]
listen = "127.0.0.1:{self.health_port}"

[webhooks]
listen = "127.0.0.1:{self.webhook_port}"

[[stores]]
id = "{STORE}"
platform = "woocommerce"
url = "{self.woo.url}"
consumer_key = "{self.woo.sim.consumer_key}"
consumer_secret = "{self.woo.sim.consumer_secret}"
webhook_secret = "{WEBHOOK_SECRET}"
webhook_url = "http://127.0.0.1:{self.webhook_port}/webhooks/woocommerce/{STORE}"
spool_dir = "spool"
concurrency = 4
poll_interval = "{poll_interval}"
{extra}
""",
            encoding="utf-8",
        )
        return path

    def start(self) -> None:
        log = (self.root / "agent.log").open("ab")
        cmd = [sys.executable, "-m", "bridge_agent", "--config", str(self.root / "agent.toml"),
               "--log-format", "json", "run"]  # fmt: skip
        with log:
            self.agent = subprocess.Popen(cmd, stdout=log, stderr=log, env=dict(os.environ))

    async def kill(self) -> None:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.agent.wait, 10)
        self.agent = None

    async def stop(self) -> None:
        if self.agent is None:
            return
        self.agent.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.agent.wait, 30)
        except subprocess.TimeoutExpired:
            self.agent.kill()
            await asyncio.to_thread(self.agent.wait, 10)
        self.agent = None

    def log_tail(self) -> str:
        path = self.root / "agent.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    # -- the agent's state and health ----------------------------------------------------------

    async def status(self) -> dict[str, Any] | None:
        async with httpx.AsyncClient(timeout=2) as http:
            try:
                doc: dict[str, Any] = (
                    await http.get(f"http://127.0.0.1:{self.health_port}/status")
                ).json()
            except (httpx.HTTPError, ValueError):
                return None
            return doc

    async def metric(self, name: str, **labels: str) -> float:
        async with httpx.AsyncClient(timeout=2) as http:
            text = (await http.get(f"http://127.0.0.1:{self.health_port}/metrics")).text
        total = 0.0
        for line in text.splitlines():
            named = line.startswith((name + "{", name + " "))
            if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    async def state_value(self, read: Any) -> Any:
        try:
            async with StateStore.open(self.root / "state", read_only=True) as state:
                return await read(state)
        except StateStoreError:
            return None

    async def settled(self) -> bool:
        """Nothing left to ship and no hint left to re-fetch."""
        status = await self.status()
        if not status or status["outbox"]["pending"]:
            return False
        hints = await self.state_value(lambda s: s.hint_count(STORE))
        spool = list((self.root / "spool" / "incoming").glob("*.json"))
        return hints == 0 and not spool

    async def wait_imported(self) -> None:
        live = {
            str(d["product"]["id"]) for d in await self.woo.truth()
            if d["product"]["status"] != "trash"
        }  # fmt: skip

        async def imported() -> bool:
            at_hub = await self.hub.products(STORE)
            return live <= {k for k, v in at_hub.items() if not v["deleted"]}

        await until(imported, 40, what="the import at the hub", every=0.1)
        await until(self.settled, 20, what="the agent to settle", every=0.1)

    # -- the hub -------------------------------------------------------------------------------

    async def enqueue(self, proposals: list[dict[str, Any]]) -> list[str]:
        async with self.hub.client() as client:
            answer = await client.post(f"/v1/stores/{STORE}/optimizations", json=proposals)
        assert answer.status_code == 201, answer.text
        ids: list[str] = answer.json()["ids"]
        return ids

    async def results(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        async with self.hub.client() as client:
            out = {}
            for opt_id in ids:
                got = await client.get(f"/v1/stores/{STORE}/optimizations/{opt_id}")
                out[opt_id] = got.json()
            return out

    async def final_results(self, ids: list[str], limit: float = 30) -> dict[str, dict[str, Any]]:
        async def done() -> bool:
            return all(r["status"] in FINAL for r in (await self.results(ids)).values())

        try:
            await until(done, limit, what="a final result for every optimization", every=0.1)
        except AssertionError:
            raise AssertionError(f"{self.log_tail()}") from None
        return await self.results(ids)

    def shipped(self) -> Counter[tuple[str, str]]:
        """(product id, source) -> items the hub received (every batch body, replays included)."""
        counts: Counter[tuple[str, str]] = Counter()
        for body in self.hub.faults.bodies:
            for item in wire.decode_batch(body).items:
                counts[(item.id, item.source)] += 1
        return counts


@pytest.fixture
async def woo() -> AsyncIterator[Sim]:
    sim, task = await start_sim(
        30, variable_ratio=0.0, no_image_ratio=0.0, webhook_delay=0.1, webhook_jitter=0.1
    )
    yield sim
    await sim.http.aclose()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await sim.sim.close()


@pytest.fixture
async def stack(tmp_path: Path, woo: Sim, hub: Hub) -> AsyncIterator[Stack]:
    running = Stack(tmp_path, woo, hub)
    yield running
    await running.stop()


# -- helpers ---------------------------------------------------------------------------------


def meta(product: dict[str, Any], key: str) -> Any:
    return next((m["value"] for m in product["meta_data"] if m["key"] == key), None)


async def store_product(woo: Sim, product_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = (await woo.http.get("/__sim/truth")).json()
    return next(d["product"] for d in doc["products"] if str(d["product"]["id"]) == product_id)


async def rest_writes(woo: Sim) -> dict[str, dict[str, int]]:
    doc: dict[str, dict[str, dict[str, int]]] = (await woo.http.get("/__sim/writes")).json()
    return doc["products"]


async def pick(woo: Sim, keys: tuple[str, str], *, skip: Collection[str] = ()) -> str:
    """A published product with a value under both SEO keys and an image no other shares."""
    truth = await woo.truth()
    users: Counter[int] = Counter(i["id"] for d in truth for i in d["product"]["images"])
    for d in truth:
        p = d["product"]
        pid = str(p["id"])
        if pid in skip or p["status"] != "publish" or not p["images"]:
            continue
        if all(meta(p, k) for k in keys) and all(users[i["id"]] == 1 for i in p["images"]):
            return pid
    raise AssertionError(f"the catalog has no product with {keys}")


async def proposal(stack: Stack, product_id: str, tag: str) -> dict[str, Any]:
    """Every field, `from` as the hub holds it (the hub's copy of the product), `to` new."""
    async with stack.hub.client() as client:
        data = (await client.get(f"/v1/stores/{STORE}/products/{product_id}")).json()["data"]
    image = data["images"][0]
    return {
        "product": product_id,
        "fields": {
            "seo_title": {"from": data.get("seo_title"), "to": f"{tag} title"},
            "seo_description": {"from": data.get("seo_description"), "to": f"{tag} meta"},
            "description_html": {
                "from": data.get("description_html"),
                "to": f"<p>{tag} description</p>",
            },
            "image_alt": {image["id"]: {"from": image.get("alt") or None, "to": f"{tag} alt"}},
            "jsonld": {
                "to": {
                    "@context": "https://schema.org",
                    "@type": "Product",
                    "name": f"{tag} name",
                    "description": f"{tag} for the rich result",
                }
            },
        },
    }


def outcomes(detail: str) -> dict[str, str]:
    """field -> outcome, read from a result's detail (`seo_title: applied; image_alt[12]: ...`)."""
    found = re.findall(r"(?:^|; )([a-z_]+)(?:\[\d+\])?: ([a-z_]+)", detail)
    return dict(found)


def jsonld_of(product: dict[str, Any]) -> dict[str, Any]:
    raw = meta(product, "_bridge_jsonld")
    assert isinstance(raw, str) and raw, "no _bridge_jsonld on the product"
    doc: dict[str, Any] = json.loads(raw)
    return doc


# -- tests -----------------------------------------------------------------------------------


async def test_an_optimization_reaches_the_store_and_the_hub_gets_applied(stack: Stack) -> None:
    stack.config()
    stack.start()
    await stack.wait_imported()
    yoast = await pick(stack.woo, YOAST)
    rankmath = await pick(stack.woo, RANKMATH)
    before = {pid: await store_product(stack.woo, pid) for pid in (yoast, rankmath)}
    ids = await stack.enqueue(
        [await proposal(stack, yoast, "Yoast"), await proposal(stack, rankmath, "Rank")]
    )
    results = await stack.final_results(ids)
    for (opt_id, result), (pid, keys, tag) in zip(
        results.items(), [(yoast, YOAST, "Yoast"), (rankmath, RANKMATH, "Rank")], strict=True
    ):
        assert result["status"] == "applied", result
        after = await store_product(stack.woo, pid)
        assert meta(after, keys[0]) == f"{tag} title"
        assert meta(after, keys[1]) == f"{tag} meta"
        assert after["description"] == f"<p>{tag} description</p>"
        assert after["images"][0]["alt"] == f"{tag} alt"
        assert [i["id"] for i in after["images"]] == [i["id"] for i in before[pid]["images"]]
        document = jsonld_of(after)
        assert document["@type"] in ("Product", "ProductGroup")
        assert document["name"] == f"{tag} name"
        # The other SEO plugin's keys were not invented on the product.
        other = RANKMATH if keys == YOAST else YOAST
        assert all(meta(after, k) is None for k in other), opt_id

        async def hub_holds_it(pid: str = pid, result: dict[str, Any] = result) -> bool:
            return bool((await stack.hub.products(STORE))[pid]["hash"] == result["hash"])

        # The result's hash is the product as written: the hub's copy reaches it (shipped once).
        await until(hub_holds_it, 20, what="the hub's copy of the written product", every=0.1)
    writes = await rest_writes(stack.woo)
    assert set(writes) == {yoast, rankmath}
    assert all(n == 1 for counts in writes.values() for n in counts.values()), writes


async def test_the_writes_echo_ships_nothing_upstream(stack: Stack) -> None:
    stack.config(poll_interval="1s")
    stack.start()
    await stack.wait_imported()
    pid = await pick(stack.woo, YOAST)
    before = stack.shipped()
    accepted = await stack.metric("bridge_webhooks_total", store=STORE, outcome="accepted")
    (opt_id,) = await stack.enqueue([await proposal(stack, pid, "Echo")])
    (result,) = (await stack.final_results([opt_id])).values()
    assert result["status"] == "applied", result

    # The write's own echoes: the store's webhook for it, a spool event, and polls after it.
    await stack.woo.http.post("/__sim/webhooks/drain")

    async def webhook_taken() -> bool:
        now = await stack.metric("bridge_webhooks_total", store=STORE, outcome="accepted")
        return now > accepted

    await until(webhook_taken, 20, what="the store's webhook for the write", every=0.1)
    write_spool(stack.root / "spool", spool_event("product.updated", pid))
    polls = await stack.metric("bridge_polls_total", store=STORE, outcome="ok")

    async def polled_twice() -> bool:
        return await stack.metric("bridge_polls_total", store=STORE, outcome="ok") >= polls + 2

    await until(polled_twice, 20, what="two polls after the write", every=0.1)
    await until(stack.settled, 20, what="the echoes to be handled", every=0.1)
    shipped = stack.shipped() - before
    # The re-read product goes up once (the hub learns the product as written); the webhook,
    # the spool event and the polls find the same hash and ship nothing.
    assert sum(n for (p, _), n in shipped.items() if p == pid) == 1, shipped
    # The webhook may win the race with the agent's own re-read; neither spool nor poll ships.
    assert {source for p, source in shipped if p == pid} <= {"verify", "webhook"}, shipped
    assert not [k for k in shipped if k[0] != pid], shipped
    async with stack.hub.client() as client:
        held = (await client.get(f"/v1/stores/{STORE}/products/{pid}")).json()
    assert held["hash"] == result["hash"]
    assert held["data"]["seo_title"] == "Echo title"


async def test_a_field_the_merchant_edited_is_a_conflict_and_the_others_apply(
    stack: Stack,
) -> None:
    stack.config()
    stack.start()
    await stack.wait_imported()
    pid = await pick(stack.woo, YOAST)
    optimization = await proposal(stack, pid, "Hub")  # the hub read the product here
    merchant = {"meta_data": [{"key": YOAST[0], "value": "The merchant's own title"}]}
    edited = await stack.woo.http.patch(f"/__sim/products/{pid}", json=merchant)
    assert edited.status_code == 200
    (opt_id,) = await stack.enqueue([optimization])
    (result,) = (await stack.final_results([opt_id])).values()
    assert result["status"] == "conflict", result
    assert outcomes(result["detail"]) == {
        "seo_title": "conflict",
        "seo_description": "applied",
        "description_html": "applied",
        "image_alt": "applied",
        "jsonld": "applied",
    }, result
    after = await store_product(stack.woo, pid)
    assert meta(after, YOAST[0]) == "The merchant's own title"  # the merchant wins
    assert meta(after, YOAST[1]) == "Hub meta"
    assert after["description"] == "<p>Hub description</p>"
    assert after["images"][0]["alt"] == "Hub alt"
    assert jsonld_of(after)["name"] == "Hub name"
    writes = (await rest_writes(stack.woo))[pid]
    assert f"meta:{YOAST[0]}" not in writes, writes  # never sent, not even the same value
    assert all(n == 1 for n in writes.values()), writes


async def test_a_host_refusing_writes_gives_a_clear_failure_and_no_retry(stack: Stack) -> None:
    stack.config()
    stack.start()
    await stack.wait_imported()
    first = await pick(stack.woo, YOAST)
    second = await pick(stack.woo, YOAST, skip={first})
    before = {pid: await store_product(stack.woo, pid) for pid in (first, second)}
    refuse = {"refuse_methods": ["POST", "PUT"], "refuse_status": 403}
    assert (await stack.woo.http.post("/__sim/faults", json=refuse)).status_code == 200
    ids = await stack.enqueue(
        [await proposal(stack, first, "Refused"), await proposal(stack, second, "Refused")]
    )
    results = await stack.final_results(ids)
    for result in results.values():
        assert result["status"] == "failed", result
        assert set(outcomes(result["detail"]).values()) == {"failed"}, result
        assert len(outcomes(result["detail"])) == 5, result
        assert "403" in result["detail"], result
    await until(stack.settled, 20, what="the agent to settle", every=0.1)
    for pid, was in before.items():
        now = await store_product(stack.woo, pid)
        assert now["meta_data"] == was["meta_data"] and now["description"] == was["description"]
    assert await rest_writes(stack.woo) == {}
    requests = (await stack.woo.stats())["requests"]
    # One batch for both products, refused by the host's HTML page; read back, never resent.
    assert requests.get("POST /wp-json/wc/v3/products/batch") == {"403": 1}, requests
    assert not [r for r in requests if r.startswith(("PUT ", "DELETE "))], requests
    async with StateStore.open(stack.root / "state", read_only=True) as state:
        counts = await state.journal_counts(STORE)
    assert counts.get("failed") == 2, counts  # nothing lost: both settled, both reported


async def test_images_keep_ids_and_order_and_a_shared_attachment_is_reported(
    stack: Stack,
) -> None:
    stack.config()
    stack.start()
    await stack.wait_imported()
    truth = await stack.woo.truth()
    users: dict[int, list[str]] = {}
    for d in truth:
        for image in d["product"]["images"]:
            users.setdefault(image["id"], []).append(str(d["product"]["id"]))
    several = next(
        str(d["product"]["id"]) for d in truth
        if len(d["product"]["images"]) >= 2
        and all(len(users[i["id"]]) == 1 for i in d["product"]["images"])
    )  # fmt: skip
    shared_id, (owner, other) = next((k, v[:2]) for k, v in users.items() if len(v) >= 2)
    attachments = dict(stack.woo.sim.catalog.attachments)
    images_before = {str(d["product"]["id"]): d["product"]["images"] for d in truth}
    async with stack.hub.client() as client:
        hub_copy = (await client.get(f"/v1/stores/{STORE}/products/{several}")).json()["data"]
        shared_copy = (await client.get(f"/v1/stores/{STORE}/products/{owner}")).json()["data"]
    target = hub_copy["images"][1]  # the second image: the first keeps its place and ALT
    shared = next(i for i in shared_copy["images"] if i["id"] == str(shared_id))
    ids = await stack.enqueue(
        [
            {
                "product": several,
                "fields": {
                    "image_alt": {target["id"]: {"from": target["alt"] or None, "to": "Side"}}
                },
            },
            {
                "product": owner,
                "fields": {
                    "image_alt": {shared["id"]: {"from": shared["alt"] or None, "to": "Mine"}},
                    "seo_title": {"from": shared_copy.get("seo_title"), "to": "Owner title"},
                },
            },
        ]
    )
    results = await stack.final_results(ids)
    assert results[ids[0]]["status"] == "applied", results
    reported = results[ids[1]]
    assert reported["status"] == "conflict", reported
    assert "attachment shared with 1 other products" in reported["detail"], reported
    assert outcomes(reported["detail"]) == {"image_alt": "conflict", "seo_title": "applied"}
    after = {str(d["product"]["id"]): d["product"]["images"] for d in await stack.woo.truth()}
    # Ids and order everywhere as before; only the one ALT changed; no attachment added.
    assert {k: [i["id"] for i in v] for k, v in after.items()} == {
        k: [i["id"] for i in v] for k, v in images_before.items()
    }
    changed = {
        (pid, i["id"]) for pid, images in after.items() for i, was in
        zip(images, images_before[pid], strict=True) if i["alt"] != was["alt"]
    }  # fmt: skip
    assert changed == {(several, int(target["id"]))}, changed
    assert stack.woo.sim.catalog.attachments.keys() == attachments.keys()
    assert all(i["id"] != 0 and "src" in i for i in after[several])
    for pid in (owner, other):  # the shared attachment's ALT is left alone for both products
        assert next(i for i in after[pid] if i["id"] == shared_id)["alt"] == shared["alt"]
    writes = await rest_writes(stack.woo)
    assert writes[several] == {"images": 1, f"alt:{target['id']}": 1}, writes
    assert "images" not in writes.get(owner, {}), writes


async def batch_requests(woo: Sim) -> dict[str, int]:
    requests: dict[str, dict[str, int]] = (await woo.stats())["requests"]
    return requests.get("POST /wp-json/wc/v3/products/batch", {})


async def restart_and_check(stack: Stack, ids: list[str], products: list[str]) -> None:
    """Restart the killed agent: one final result per optimization, no field written twice."""
    await until(
        lambda: _is(batch_requests(stack.woo), lambda r: sum(r.values()) >= 1),
        20,
        what="the store to finish the batch its client left",
        every=0.05,
    )
    await stack.woo.http.post("/__sim/faults", json={"write_reply_delay_ms": 0,
                                                     "batch_item_delay_ms": 0})  # fmt: skip
    stack.start()
    results = await stack.final_results(ids)
    assert {r["status"] for r in results.values()} == {"applied"}, results
    await until(stack.settled, 20, what="the agent to settle", every=0.1)
    writes = await rest_writes(stack.woo)
    assert set(writes) == set(products), writes
    twice = {pid: {k: n for k, n in w.items() if n != 1} for pid, w in writes.items()}
    assert not any(twice.values()), f"fields written more than once: {twice}"
    for pid in products:
        now = await store_product(stack.woo, pid)
        assert meta(now, YOAST[0]) == "Killed title" and now["images"][0]["alt"] == "Killed alt"
    assert (await stack.hub.stats())["optimization_results"] == len(ids)  # one result each
    async with StateStore.open(stack.root / "state", read_only=True) as state:
        counts = await state.journal_counts(STORE)
    assert counts.get("applied") == len(ids), counts


async def _is(value: Any, test: Any) -> bool:
    return bool(test(await value))


async def yoast_products(woo: Sim, n: int) -> list[str]:
    chosen: list[str] = []
    for _ in range(n):
        chosen.append(await pick(woo, YOAST, skip=set(chosen)))
    return chosen


async def test_sigkill_between_the_write_and_the_result_post(stack: Stack) -> None:
    stack.config()
    stack.start()
    await stack.wait_imported()
    products = await yoast_products(stack.woo, 3)
    # The store commits the batch and holds its answer: the agent dies not knowing.
    await stack.woo.http.post("/__sim/faults", json={"write_reply_delay_ms": 2500})
    ids = await stack.enqueue([await proposal(stack, pid, "Killed") for pid in products])

    async def written() -> bool:
        return set(await rest_writes(stack.woo)) == set(products)

    await until(written, 20, what="the batch write to land", every=0.02)
    await stack.kill()
    assert {r["status"] for r in (await stack.results(ids)).values()} == {"queued"}
    await restart_and_check(stack, ids, products)


async def test_sigkill_between_two_products_of_a_batch(stack: Stack) -> None:
    stack.config()
    stack.start()
    await stack.wait_imported()
    products = await yoast_products(stack.woo, 6)
    # WordPress saves the batch's products in turn, 300 ms apart: the agent dies in between.
    await stack.woo.http.post("/__sim/faults", json={"batch_item_delay_ms": 300})
    ids = await stack.enqueue([await proposal(stack, pid, "Killed") for pid in products])

    async def some_written() -> bool:
        return 1 <= len(await rest_writes(stack.woo)) < len(products)

    await until(some_written, 20, what="the first products of the batch", every=0.02)
    await stack.kill()
    assert len(await rest_writes(stack.woo)) < len(products)  # killed mid-batch
    assert {r["status"] for r in (await stack.results(ids)).values()} == {"queued"}
    await restart_and_check(stack, ids, products)


def test_the_demo_shows_an_optimization_reaching_the_store(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "WC_"))}
    result = subprocess.run(
        [sys.executable, "-m", "bridge_agent", "demo", "--products", "20", "--log-file", str(log)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=55, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    story = "\n".join(lines)
    before = [line for line in lines if "SEO title        before:" in line]
    after = [line for line in lines if "SEO title        after:" in line]
    assert len(before) == len(after) == 1, story
    assert before[0].split(":", 1)[1] != after[0].split(":", 1)[1], story
    assert "Demo Shop" in after[0], story
    assert any(re.search(r"result +applied at the hub after \d+ ms", line) for line in lines)
    printed = [line.split("| ", 1)[1] for line in lines if line.startswith("    | ")]
    document = json.loads("\n".join(printed))  # the JSON-LD, as written to the store
    assert document["@type"] == "Product" and document["offers"]["priceCurrency"] == "EUR"
    assert "demo finished" in lines[-1]


async def test_sigkill_after_a_write_that_never_landed_writes_it_once_after_restart(
    stack: Stack,
) -> None:
    stack.config()
    stack.start()
    await stack.wait_imported()
    products = await yoast_products(stack.woo, 2)
    # Every request takes 0.4 s; the host refuses the batch: the agent dies while it reads back.
    await stack.woo.http.post("/__sim/faults", json={"latency_ms": 400})
    ids = await stack.enqueue([await proposal(stack, pid, "Killed") for pid in products])

    async def applying() -> bool:
        counts = await stack.state_value(lambda s: s.journal_counts(STORE))
        return bool(counts and counts.get("applying"))

    await until(applying, 20, what="the optimizations marked applying", every=0.02)
    await stack.woo.http.post("/__sim/faults", json={"refuse_methods": ["POST"]})
    await until(
        lambda: _is(batch_requests(stack.woo), lambda r: r.get("403") == 1),
        20,
        what="the refused batch",
        every=0.02,
    )
    await stack.kill()
    assert await rest_writes(stack.woo) == {}
    assert {r["status"] for r in (await stack.results(ids)).values()} == {"queued"}
    await stack.woo.http.post("/__sim/faults", json={"latency_ms": 0, "refuse_methods": []})
    await restart_and_check(stack, ids, products)
