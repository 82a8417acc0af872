"""Shopify downstream end to end: the agent (in this process), the Shopify simulator and the
reference hub on loopback. An optimisation enqueued at the hub is taken from the feed and written
through the Shopify `Writer` (`productUpdate(product:)`, `fileUpdate`, `metafieldsSet`):

- every field reaches the shop, the hub gets `applied` with the product's hash, and the
  `products/update` webhooks the write itself causes ship nothing beyond the one re-read product
  (guarantee 6);
- a bulk apply of a few hundred optimisations on a small cost bucket never draws `THROTTLED`;
- a rollback through the same Writer puts the shop's old values back.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from bridge_agent import wire
from bridge_agent.config import Listen, WebhookSettings
from bridge_agent.downstream import rollback
from bridge_agent.platforms.shopify import Shopify
from bridge_agent.platforms.shopify.writer import JSONLD_KEY, JSONLD_NAMESPACE
from bridge_agent.store import StateStore
from bridge_agent.testing.waiting import until
from tests.conftest import Hub, free_port
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
