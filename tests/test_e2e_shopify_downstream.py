"""Shopify downstream end to end: the agent, the Shopify simulator and the reference hub on
loopback. An optimisation enqueued at the hub is taken from the feed and written through the
Shopify `Writer` (`productUpdate(product:)`, `fileUpdate`, `metafieldsSet`, `metafieldsDelete`):

- every field reaches the shop, the hub gets `applied` with the product's hash, and the
  `products/update` webhooks the write itself causes ship nothing beyond the one re-read product
  (guarantee 6);
- a bulk apply of a few hundred optimisations on a small cost bucket never draws `THROTTLED`, nor
  does one of 2 000;
- a rollback through the same Writer puts the shop's old values back; from the command line it
  removes a first-time JSON-LD too, and the hub hears `rolled_back`;
- SIGKILL of the agent process between the write and the result: one result, no second write;
- safe mode (`apply_mode = "review"`): held, approved from the command line and applied, or
  rejected and the shop left alone.

The in-process kit (`ShopKit`) is tests/downstream_kit.py's for Shopify: the downstream engine on
the test's state and the command line in a thread, so the test's loop keeps serving the
simulator and the hub meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge_agent import wire
from bridge_agent.config import Listen, WebhookSettings, load_config
from bridge_agent.downstream import rollback
from bridge_agent.downstream.engine import Downstream, writer_of
from bridge_agent.hublink import HubClient
from bridge_agent.metrics import Metrics
from bridge_agent.platforms.shopify import Shopify
from bridge_agent.platforms.shopify.writer import JSONLD_KEY, JSONLD_NAMESPACE
from bridge_agent.store import StateStore
from bridge_agent.testing.waiting import until
from tests.conftest import TOKEN, Hub, free_port
from tests.downstream_kit import Kit
from tests.test_e2e_shopify import Shop, agent_config, running, settled, shop

STORE = "main"
FINAL = ("applied", "conflict", "failed", "rejected_by_reviewer")


async def enqueue(hub: Hub, proposals: list[dict[str, Any]]) -> list[str]:
    async with hub.client() as client:
        answer = await client.post(f"/v1/stores/{STORE}/optimizations", json=proposals)
    assert answer.status_code == 201, answer.text
    ids: list[str] = answer.json()["ids"]
    return ids


async def final_results(hub: Hub, ids: list[str], limit: float) -> dict[str, dict[str, Any]]:
    async def results() -> dict[str, dict[str, Any]]:
        async with hub.client() as client:
            return {
                i: (await client.get(f"/v1/stores/{STORE}/optimizations/{i}")).json() for i in ids
            }

    async def done() -> bool:
        return all(r["status"] in FINAL for r in (await results()).values())

    await until(done, limit, what="a final result for every optimization", every=0.2)
    return await results()


def shipped(hub: Hub) -> Counter[tuple[str, str]]:
    """(product id, source) -> items the hub received (every batch body, replays included)."""
    counts: Counter[tuple[str, str]] = Counter()
    for body in hub.faults.bodies:
        for item in wire.decode_batch(body).items:
            counts[(item.id, item.source)] += 1
    return counts


def truth_of(the_shop: Shop, number: str) -> dict[str, Any]:
    return next(p for p in the_shop.sim.truth() if p["legacyResourceId"] == number)


def jsonld_of(product: dict[str, Any]) -> Any:
    for f in product["metafields"]:
        if f["namespace"] == JSONLD_NAMESPACE and f["key"] == JSONLD_KEY:
            assert f["type"] == "json"
            return json.loads(f["value"])
    return None


async def test_an_optimization_reaches_the_shop_and_its_echo_ships_nothing(
    tmp_path: Path, hub: Hub
) -> None:
    async with shop(20) as the_shop:
        listen = Listen("127.0.0.1", free_port())
        store = the_shop.settings(
            webhook_url=f"http://{listen.host}:{listen.port}/webhooks/shopify/{STORE}"
        )
        config = replace(agent_config(tmp_path, hub, store), webhooks=WebhookSettings(listen))
        async with running(config):
            await until(
                lambda: settled(config.agent.state_dir, "import", "repair"),
                60,
                what="the import",
                every=0.1,
            )
            at_hub = await hub.products(STORE)
            number = next(n for n, p in at_hub.items() if p["data"].get("images"))
            data = at_hub[number]["data"]
            image = data["images"][0]
            before = shipped(hub)
            hooks_before = (await the_shop.stats())["webhooks"]["deliveries"]
            ids = await enqueue(
                hub,
                [
                    {
                        "product": number,
                        "fields": {
                            "seo_title": {"from": data.get("seo_title"), "to": "Hub title"},
                            "seo_description": {
                                "from": data.get("seo_description"),
                                "to": "Hub meta",
                            },
                            "description_html": {
                                "from": data.get("description_html"),
                                "to": "<p>Hub description</p>",
                            },
                            "image_alt": {
                                image["id"]: {"from": image.get("alt") or None, "to": "Hub alt"}
                            },
                            "jsonld": {"to": {"@type": "Product", "name": "Hub name"}},
                        },
                    }
                ],
            )
            (result,) = (await final_results(hub, ids, 40)).values()
            assert result["status"] == "applied", result
            product = truth_of(the_shop, number)
            assert product["seo"] == {"title": "Hub title", "description": "Hub meta"}
            assert product["descriptionHtml"] == "<p>Hub description</p>"
            media = {m["id"].rsplit("/", 1)[-1]: m["alt"] for m in product["media"]}
            assert media[image["id"]] == "Hub alt"
            document = jsonld_of(product)
            assert document["@type"] in ("Product", "ProductGroup")
            assert document["name"] == "Hub name"

            # The write's own echoes: the products/update webhooks of productUpdate and
            # fileUpdate, delivered to the agent, which re-fetches the product.
            await the_shop.http.post("/__sim/webhooks/drain")

            async def delivered() -> bool:
                hooks = (await the_shop.stats())["webhooks"]
                return bool(hooks["pending"] == 0 and hooks["deliveries"] > hooks_before)

            await until(delivered, 20, what="the write's webhooks", every=0.1)
            await until(
                lambda: settled(config.agent.state_dir, "import", "repair"),
                20,
                what="the echoes to be handled",
                every=0.1,
            )

            async def hub_holds_it() -> bool:
                return bool((await hub.products(STORE))[number]["hash"] == result["hash"])

            await until(hub_holds_it, 20, what="the hub's copy of the written product", every=0.1)
        sent = shipped(hub) - before
        # The re-read product goes up once (the hub learns the product as written); the
        # webhooks find the same hash and ship nothing.
        assert sum(n for (p, _), n in sent.items() if p == number) == 1, sent
        assert {source for p, source in sent if p == number} <= {"verify", "webhook"}, sent
        assert not [k for k in sent if k[0] != number], sent


async def test_a_bulk_apply_of_hundreds_never_draws_throttled(tmp_path: Path, hub: Hub) -> None:
    # A bucket of 1000 points refilled at 2000/s: the reads, writes and re-fetches of a few
    # hundred products would drain it many times over.
    async with shop(250, bucket_max=1000.0, restore_rate=2000.0) as the_shop:
        store = the_shop.settings()
        config = agent_config(tmp_path, hub, store)
        async with running(config):
            await until(
                lambda: settled(config.agent.state_dir, "import", "repair"),
                90,
                what="the import",
                every=0.1,
            )
            throttled_before = (await the_shop.stats())["throttled"]
            at_hub = await hub.products(STORE)
            proposals = [
                {
                    "product": number,
                    "fields": {
                        "seo_title": {
                            "from": p["data"].get("seo_title"),
                            "to": f"Bulk title {number}",
                        },
                        "jsonld": {"to": {"@type": "Product", "name": f"Bulk {number}"}},
                    },
                }
                for number, p in sorted(at_hub.items())
                if not p["deleted"]
            ]
            assert len(proposals) >= 200
            ids = await enqueue(hub, proposals)
            results = await final_results(hub, ids, 50)
            statuses = Counter(r["status"] for r in results.values())
            assert statuses == {"applied": len(ids)}, statuses
        stats = await the_shop.stats()
        assert stats["throttled"] == throttled_before, (throttled_before, stats["throttled"])
        assert stats["max_cost_exceeded"] == 0
        number = proposals[-1]["product"]
        product = truth_of(the_shop, number)
        assert product["seo"]["title"] == f"Bulk title {number}"
        assert jsonld_of(product)["name"] == f"Bulk {number}"


async def test_a_rollback_puts_the_shop_s_values_back(tmp_path: Path, hub: Hub) -> None:
    """Applied by the agent, rolled back through the same Writer (the agent stopped, as the
    command does it): the SEO fields, the description and the ALT hold their old values."""
    async with shop(10) as the_shop:
        config = agent_config(tmp_path, hub, the_shop.settings())
        async with running(config):
            await until(
                lambda: settled(config.agent.state_dir, "import", "repair"),
                60,
                what="the import",
                every=0.1,
            )
            at_hub = await hub.products(STORE)
            number = next(n for n, p in at_hub.items() if p["data"].get("images"))
            data = at_hub[number]["data"]
            image = data["images"][0]
            old = truth_of(the_shop, number)
            ids = await enqueue(
                hub,
                [
                    {
                        "product": number,
                        "fields": {
                            "seo_title": {"from": data.get("seo_title"), "to": "Rolled title"},
                            "description_html": {
                                "from": data.get("description_html"),
                                "to": "<p>Rolled</p>",
                            },
                            "image_alt": {
                                image["id"]: {"from": image.get("alt") or None, "to": "Rolled"}
                            },
                        },
                    }
                ],
            )
            (result,) = (await final_results(hub, ids, 40)).values()
            assert result["status"] == "applied", result
        assert truth_of(the_shop, number)["seo"]["title"] == "Rolled title"
        async with (
            StateStore.open(config.agent.state_dir) as state,
            httpx.AsyncClient(timeout=30) as http,
        ):
            adapter = Shopify.from_settings(the_shop.settings(), http)
            fields = await rollback.plan(state, STORE, rollback.Selector(product=number))
            done = await rollback.roll_back(state, STORE, adapter, adapter, fields)
        assert done.count(rollback.RESTORED) == 3, rollback.render(done)
        after = truth_of(the_shop, number)
        assert after["seo"]["title"] == old["seo"]["title"]
        assert after["descriptionHtml"] == old["descriptionHtml"]
        alts = {m["id"].rsplit("/", 1)[-1]: m["alt"] for m in after["media"]}
        assert alts[image["id"]] == (image.get("alt") or "")


# -- the in-process kit: engine on the test's state, command line in a thread ---------------------


@dataclass
class ShopKit:
    """A simulated shop, the hub, an agent.toml naming both, the state store and the downstream
    engine of the agent on that state (tests/downstream_kit.py's `Kit`, for Shopify)."""

    the_shop: Shop
    kit: Kit

    def new_product(self, *, images: int = 0) -> str:
        body: dict[str, Any] = {
            "title": "Kit product",
            "descriptionHtml": "<p>The shop's own words.</p>",
            "media": [{"alt": f"a{n}"} for n in range(images)],
        }
        number = str(self.the_shop.sim.create_product(body, webhooks=False)["id"])
        number = number.rsplit("/", 1)[-1]
        # The creation path may not take `seo`: set it as the admin would.
        seo = {"title": "Old title", "description": "Old description"}
        self.the_shop.sim.update_product(int(number), {"seo": seo}, webhooks=False)
        return number

    def truth(self, number: str) -> dict[str, Any]:
        return truth_of(self.the_shop, number)


@contextlib.asynccontextmanager
async def shop_kit(
    root: Path,
    hub: Hub,
    capsys: pytest.CaptureFixture[str],
    *,
    apply_mode: str,
    products: int = 2,
    **faults: Any,
) -> AsyncIterator[ShopKit]:
    async with shop(products, **faults) as the_shop:
        config = root / "agent.toml"
        config.write_text(
            f"""
[agent]
id = "shopify-kit"
state_dir = "state"

[hub]
url = "{hub.url}"
token = "{TOKEN}"

[health]
listen = "127.0.0.1:{free_port()}"

[[stores]]
id = "{STORE}"
platform = "shopify"
url = "{the_shop.url}"
access_token = "{the_shop.sim.access_token}"
apply_mode = "{apply_mode}"
poll_interval = "1h"
reconcile_interval = "24h"
verify_schedule = "off"
image_checks = false
""",
            encoding="utf-8",
        )
        settings = load_config(config).stores[0]
        async with (
            StateStore.open(root / "state") as state,
            httpx.AsyncClient(timeout=10) as http,
            httpx.AsyncClient(base_url=hub.url, timeout=10) as hub_http,
        ):
            platform = Shopify.from_settings(settings, http)
            writer = writer_of(platform)
            assert writer is not None
            link = HubClient(hub_http, TOKEN)
            engine = Downstream(
                settings, platform, writer, state, Metrics(),
                hub=lambda: link, on_recorded=lambda: None, wait=1.0,
            )  # fmt: skip
            # Kit's WooCommerce helpers (new_product, meta...) are not used: ShopKit has its own.
            kit = Kit(root, config, the_shop.sim, hub, state, settings, engine, capsys, http)  # type: ignore[arg-type]
            try:
                yield ShopKit(the_shop, kit)
            finally:
                for task in kit.tasks:
                    task.cancel()
                await asyncio.gather(*kit.tasks, return_exceptions=True)


def seo_proposal(number: str, tag: str) -> dict[str, Any]:
    return {
        "product": number,
        "fields": {
            "seo_title": {"from": "Old title", "to": f"{tag} title"},
            "seo_description": {"from": "Old description", "to": f"{tag} meta"},
        },
    }


async def test_safe_mode_holds_then_approve_applies_and_reject_leaves_the_shop(
    tmp_path: Path, hub: Hub, capsys: pytest.CaptureFixture[str]
) -> None:
    async with shop_kit(tmp_path, hub, capsys, apply_mode="review") as sk:
        kit = sk.kit
        kept, taken = sk.new_product(), sk.new_product()
        kept_opt, taken_opt = await kit.enqueue(
            seo_proposal(kept, "Rejected"), seo_proposal(taken, "Approved")
        )
        await kit.cycle()
        for opt in (kept_opt, taken_opt):
            assert (await kit.at_hub(opt))["status"] == "pending_review"
        assert sk.truth(taken)["seo"] == {"title": "Old title", "description": "Old description"}
        kit.start_engine()  # the running agent, from now on

        code, out, _ = await kit.cli("approvals", "approve", taken_opt)
        assert code == 0, kit.last
        assert f"approved 1 optimization(s) of store {STORE!r}: {taken_opt}" in out

        async def status_of(opt: str, wanted: str) -> bool:
            return bool((await kit.at_hub(opt))["status"] == wanted)

        await until(lambda: status_of(taken_opt, "applied"), 20, what="the approved one")
        assert sk.truth(taken)["seo"] == {"title": "Approved title", "description": "Approved meta"}

        updated = sk.truth(kept)["updatedAt"]
        code, out, _ = await kit.cli("approvals", "reject", kept_opt)
        assert code == 0, kit.last
        assert f"rejected 1 optimization(s) of store {STORE!r}: {kept_opt}" in out
        kit.engine.results.nudge()  # the poster's idle beat (30 s), without waiting for it
        await until(
            lambda: status_of(kept_opt, "rejected_by_reviewer"), 20, what="the rejected one"
        )
        after = sk.truth(kept)
        assert after["seo"] == {"title": "Old title", "description": "Old description"}
        assert after["updatedAt"] == updated  # not written at all


async def test_rollback_from_the_command_line_removes_a_first_time_jsonld(
    tmp_path: Path, hub: Hub, capsys: pytest.CaptureFixture[str]
) -> None:
    async with shop_kit(tmp_path, hub, capsys, apply_mode="auto") as sk:
        kit = sk.kit
        number = sk.new_product(images=1)
        image = sk.truth(number)["media"][0]["id"].rsplit("/", 1)[-1]
        old = sk.truth(number)
        assert jsonld_of(old) is None
        (opt,) = await kit.enqueue(
            {
                "product": number,
                "fields": {
                    "seo_title": {"from": "Old title", "to": "Rolled title"},
                    "description_html": {
                        "from": "<p>The shop's own words.</p>",
                        "to": "<p>Rolled</p>",
                    },
                    "image_alt": {image: {"from": "a0", "to": "Rolled alt"}},
                    "jsonld": {"to": {"@type": "Product", "name": "Rolled name"}},
                },
            }
        )
        await kit.cycle()
        assert (await kit.at_hub(opt))["status"] == "applied", await kit.at_hub(opt)
        applied = sk.truth(number)
        assert applied["seo"]["title"] == "Rolled title"
        assert jsonld_of(applied)["name"] == "Rolled name"

        code, out, _ = await kit.cli("rollback", "--optimization", opt, "--json")
        assert code == 0, kit.last
        after = sk.truth(number)
        assert after["seo"] == old["seo"]
        assert after["descriptionHtml"] == old["descriptionHtml"]
        assert {m["id"]: m["alt"] for m in after["media"]} == {
            m["id"]: m["alt"] for m in old["media"]
        }
        assert jsonld_of(after) is None  # the first-time JSON-LD is gone: metafieldsDelete
        assert "restored" in out and "failed" not in out, out
        await kit.post_results()
        assert (await kit.at_hub(opt))["status"] == "rolled_back"


async def test_a_bulk_apply_of_2000_never_draws_throttled(
    tmp_path: Path, hub: Hub, capsys: pytest.CaptureFixture[str]
) -> None:
    """2 000 optimisations, each a read, a productUpdate (10 points) and a re-fetch: tens of
    thousands of points on a bucket of 2 000. The restore rate (10 000 points/s, far above a
    real shop's) is only there to keep the test under ~40 s (about 15 s here); the bucket still
    drains many times over, so only the client's pacing keeps THROTTLED away."""
    async with shop_kit(
        tmp_path,
        hub,
        capsys,
        apply_mode="auto",
        products=2000,
        bucket_max=2000.0,
        restore_rate=10000.0,
    ) as sk:
        kit = sk.kit
        live = {str(p["id"]).rsplit("/", 1)[-1]: p for p in sk.the_shop.sim.truth()}
        assert len(live) >= 2000
        proposals = [
            {
                "product": number,
                "fields": {
                    "seo_title": {
                        "from": (p.get("seo") or {}).get("title") or None,
                        "to": f"Bulk {number}",
                    }
                },
            }
            for number, p in sorted(live.items())[:2000]
        ]
        before = await sk.the_shop.stats()
        ids = await kit.enqueue(*proposals)
        assert len(ids) == 2000
        kit.start_engine()

        async def all_applied() -> bool:
            counts = await kit.state.journal_counts(STORE)
            return counts.get("applied", 0) >= len(ids) or (
                sum(counts.get(s, 0) for s in ("failed", "conflict")) > 0
            )

        await until(all_applied, 50, what="2 000 optimisations applied", every=0.2)
        counts = await kit.state.journal_counts(STORE)
        assert counts.get("applied") == len(ids), counts
        after = await sk.the_shop.stats()
        assert after["throttled"] == before["throttled"], (before["throttled"], after["throttled"])
        assert after["max_cost_exceeded"] == 0
        # The bucket really was the limit: the points spent are many bucketfuls.
        assert after["points_spent"] - before["points_spent"] > 10 * 2000, after["points_spent"]
        for number in (proposals[0]["product"], proposals[-1]["product"]):
            assert sk.truth(str(number))["seo"]["title"] == f"Bulk {number}"
        for opt in (ids[0], ids[-1]):
            await until(
                lambda opt=opt: _is(kit.at_hub(opt), lambda r: r["status"] == "applied"),
                20,
                what="the result at the hub",
            )


async def _is(value: Any, test: Any) -> bool:
    return bool(test(await value))


# -- SIGKILL between the write and the result ------------------------------------------------------

WRITER_MUTATIONS = (
    "WriterProductUpdate",
    "WriterFileUpdate",
    "WriterMetafieldsSet",
    "WriterMetafieldsDelete",
)


def record_mutations(sim: Any, hold_after: float) -> list[tuple[str, dict[str, Any]]]:
    """The writer's mutations the shop executes, (operation, variables) in order. After the
    first one every answer is held `hold_after` seconds (latency): the agent has written and
    cannot yet read back, re-fetch or post its result."""
    seen: list[tuple[str, dict[str, Any]]] = []
    original = sim.graphql

    def graphql(body: Any, origin: str | None = None) -> dict[str, Any]:
        answer: dict[str, Any] = original(body, origin)
        name = body.get("operationName") if isinstance(body, dict) else None
        if name in WRITER_MUTATIONS:
            seen.append((str(name), dict(body.get("variables") or {})))
            sim.faults.update({"latency_ms": hold_after * 1000})
        return answer

    sim.graphql = graphql
    return seen


def _agent_toml(root: Path, hub: Hub, the_shop: Shop) -> Path:
    path = root / "agent.toml"
    path.write_text(
        f"""
[agent]
id = "shopify-downstream"
state_dir = "state"
drain_timeout = "5s"
[hub]
url = "{hub.url}"
token = "{TOKEN}"
batch_linger = "0s"
backoff_base = "50ms"
backoff_cap = "500ms"
[health]
listen = "127.0.0.1:{free_port()}"
[[stores]]
id = "{STORE}"
platform = "shopify"
url = "{the_shop.url}"
access_token = "{the_shop.sim.access_token}"
poll_interval = "1h"
reconcile_interval = "24h"
verify_schedule = "off"
image_checks = false
""",
        encoding="utf-8",
    )
    return path


async def test_sigkill_between_the_write_and_the_result(tmp_path: Path, hub: Hub) -> None:
    async with shop(5) as the_shop:
        config = _agent_toml(tmp_path, hub, the_shop)
        cmd = [sys.executable, "-m", "bridge_agent", "--config", str(config),
               "--log-format", "json", "run"]  # fmt: skip
        log = (tmp_path / "agent.log").open("ab")
        agent = subprocess.Popen(cmd, stdout=log, stderr=log, env=dict(os.environ))  # noqa: ASYNC220
        try:
            await until(
                lambda: settled(tmp_path / "state", "import", "repair"),
                40,
                what="the import",
                every=0.1,
            )
            number = sorted(the_shop.sim.catalog.products)[0]
            product = truth_of(the_shop, str(number))
            writes = record_mutations(the_shop.sim, hold_after=3.0)
            # One productUpdate carries the three fields: one mutation, killed after it.
            ids = await enqueue(
                hub,
                [
                    {
                        "product": str(number),
                        "fields": {
                            "seo_title": {
                                "from": product["seo"]["title"] or None,
                                "to": "Killed title",
                            },
                            "seo_description": {
                                "from": product["seo"]["description"] or None,
                                "to": "Killed meta",
                            },
                            "description_html": {
                                "from": product["descriptionHtml"] or None,
                                "to": "<p>Killed</p>",
                            },
                        },
                    }
                ],
            )
            await until(lambda: bool(writes), 20, what="the write to land", every=0.01)
            agent.send_signal(signal.SIGKILL)
            await asyncio.to_thread(agent.wait, 10)
            async with hub.client() as client:
                held = (await client.get(f"/v1/stores/{STORE}/optimizations/{ids[0]}")).json()
            assert held["status"] == "queued", held  # killed before the result
            assert [name for name, _ in writes] == ["WriterProductUpdate"], writes
            del the_shop.sim.graphql  # the class's own again
            the_shop.sim.faults.update({"latency_ms": 0})
            after_kill = record_mutations(the_shop.sim, hold_after=0.0)

            agent = subprocess.Popen(cmd, stdout=log, stderr=log, env=dict(os.environ))  # noqa: ASYNC220
            (result,) = (await final_results(hub, ids, 30)).values()
            assert result["status"] == "applied", result
            assert after_kill == [], after_kill  # read back, never written again
        finally:
            agent.send_signal(signal.SIGTERM)
            await asyncio.to_thread(agent.wait, 30)
            log.close()
        now = truth_of(the_shop, str(number))
        assert now["seo"] == {"title": "Killed title", "description": "Killed meta"}
        assert now["descriptionHtml"] == "<p>Killed</p>"
        assert (await hub.stats())["optimization_results"] == 1  # exactly one result
        async with StateStore.open(tmp_path / "state", read_only=True) as state:
            counts = await state.journal_counts(STORE)
        assert counts.get("applied") == 1, counts
