"""Rollback end to end (`bridge-agent rollback`): optimisations applied by the agent's downstream
task to the WooCommerce simulator, then rolled back from the command line, in-process, by
product, by optimisation and by time. The conflict check holds as for an apply (a value the
merchant changed since is left alone and reported), a dry run writes nothing, a value is never
restored twice, and the hub hears `rolled_back` through the result poster, after an outage too."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bridge_agent.downstream.engine import writer_of
from bridge_agent.downstream.keeper import JsonLdKeeper, jsonld_options
from bridge_agent.metrics import Metrics
from bridge_agent.model import Change
from bridge_agent.store import now_ms
from tests.conftest import Hub
from tests.downstream_kit import DESC_KEY, STORE, TITLE_KEY, Kit, open_kit

BATCH = "POST /wp-json/wc/v3/products/batch"


@pytest.fixture
async def kit(tmp_path: Path, hub: Hub, capsys: pytest.CaptureFixture[str]) -> AsyncIterator[Kit]:
    async with open_kit(tmp_path, hub, capsys, apply_mode="auto") as running:
        yield running


class Applied:
    """A hoodie optimised twice: first its title and image ALT, then its title again and its
    meta description, both applied by the agent."""

    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.product = kit.new_product("T0", "D0", alts=("A0",))
        self.image, _ = kit.image(self.product)
        self.first = ""
        self.second = ""

    async def apply_first(self) -> str:
        (self.first,) = await self.kit.enqueue(
            {
                "product": self.product,
                "fields": {
                    "seo_title": {"from": "T0", "to": "T1"},
                    "image_alt": {self.image: {"from": "A0", "to": "A1"}},
                },
            }
        )
        await self.kit.cycle()
        assert (await self.kit.at_hub(self.first))["status"] == "applied"
        return self.first

    async def apply_second(self) -> str:
        (self.second,) = await self.kit.enqueue(
            {
                "product": self.product,
                "fields": {
                    "seo_title": {"from": "T1", "to": "T2"},
                    "seo_description": {"from": "D0", "to": "D1"},
                },
            }
        )
        await self.kit.cycle()
        assert (await self.kit.at_hub(self.second))["status"] == "applied"
        return self.second

    def store(self) -> tuple[Any, Any, str]:
        """(SEO title, meta description, ALT) as the store holds them."""
        kit = self.kit
        return (
            kit.meta(self.product, TITLE_KEY),
            kit.meta(self.product, DESC_KEY),
            kit.image(self.product)[1],
        )


@pytest.fixture
async def hoodie(kit: Kit) -> Applied:
    applied = Applied(kit)
    await applied.apply_first()
    await applied.apply_second()
    assert applied.store() == ("T2", "D1", "A1")
    return applied


def batch_writes(kit: Kit) -> int:
    return sum(int(n) for n in kit.sim.stats()["requests"].get(BATCH, {}).values())


async def test_by_product_restores_the_oldest_values_and_leaves_the_merchants_edit(
    kit: Kit, hoodie: Applied
) -> None:
    kit.merchant_edit(hoodie.product, **{DESC_KEY: "The merchant's words"})
    writes = batch_writes(kit)

    # Dry run: what would be restored and what left alone; nothing written anywhere.
    code, out, _ = await kit.cli("rollback", "--product", hoodie.product, "--dry-run")
    assert code == 0, kit.last
    lines = out.splitlines()
    where = f"{STORE}/{hoodie.product}"
    assert f"{where} seo_title (optimization {hoodie.second}): would restore 'T1'" in out
    assert f"{where} seo_title (optimization {hoodie.first}): would restore 'T0'" in out
    assert f"{where} image_alt[{hoodie.image}] (optimization {hoodie.first}): would restore" in out
    (desc,) = [line for line in lines if "seo_description" in line]
    assert "would be left alone: the merchant changed it since" in desc
    assert lines[-1] == (
        "dry run: 3 value(s) would be restored, 1 would be left alone, 0 would fail;"
        " nothing was written"
    )
    assert batch_writes(kit) == writes
    assert hoodie.store() == ("T2", "The merchant's words", "A1")
    assert await kit.state.unreported_rollbacks(STORE) == []
    assert (await kit.state.journal_counts(STORE))["unreported"] == 0
    assert len(await kit.state.replaced_rows(STORE, product=hoodie.product)) == 4

    # The rollback: the title goes back past both optimisations to T0 in one write.
    code, out, _ = await kit.cli("rollback", "--product", hoodie.product)
    assert code == 0, kit.last
    assert hoodie.store() == ("T0", "The merchant's words", "A0")
    assert batch_writes(kit) == writes + 1
    assert "3 value(s) restored, 1 left alone, 0 failed" in out
    assert "reports the rollback to the hub (status rolled_back) within" in out
    (desc,) = [line for line in out.splitlines() if "seo_description" in line]
    assert "left alone: the merchant changed it since (the store's value is kept)" in desc
    assert '"The merchant\'s words"' in desc

    # One event per field, in `bridge-agent log`.
    code, out, _ = await kit.cli("log", "--level", "debug")
    rollback_lines = [line for line in out.splitlines() if "rollback of optimization" in line]
    assert len(rollback_lines) == 4
    assert any(
        f"{hoodie.second}: seo_description left alone" in line and "warning" in line
        for line in rollback_lines
    )
    assert any(f"{hoodie.first}: seo_title restored 'T0'" in line for line in rollback_lines)

    # The hub hears `rolled_back` for both optimisations, with the fields in the detail.
    await kit.post_results()
    first, second = await kit.at_hub(hoodie.first), await kit.at_hub(hoodie.second)
    assert (first["status"], second["status"]) == ("rolled_back", "rolled_back")
    assert "seo_title: restored 'T0'" in first["detail"]
    assert f"image_alt[{hoodie.image}]: restored 'A0'" in first["detail"]
    assert "seo_description: left alone: the merchant changed it since" in second["detail"]
    assert first["hash"]  # the product's hash after the rollback

    # Twice: nothing is restored again; the merchant's field is reported again, not written.
    code, out, _ = await kit.cli("rollback", "--product", hoodie.product)
    assert code == 0, kit.last
    assert "0 value(s) restored, 1 left alone, 0 failed" in out
    assert batch_writes(kit) == writes + 1
    assert hoodie.store() == ("T0", "The merchant's words", "A0")
    assert await kit.state.unreported_rollbacks(STORE) == []
    assert (await kit.state.journal_counts(STORE))["unreported"] == 0


async def test_by_optimization_names_the_later_one_and_never_restores_twice(
    kit: Kit, hoodie: Applied
) -> None:
    code, out, _ = await kit.cli("rollback", "--optimization", hoodie.first)
    assert code == 0, kit.last
    (title,) = [line for line in out.splitlines() if " seo_title " in line]
    assert f"left alone: optimization {hoodie.second} changed it since" in title
    assert "1 value(s) restored, 1 left alone, 0 failed" in out
    assert hoodie.store() == ("T2", "D1", "A0")

    code, out, _ = await kit.cli("rollback", "--optimization", hoodie.second)
    assert code == 0, kit.last
    assert "2 value(s) restored, 0 left alone" in out
    assert hoodie.store() == ("T1", "D0", "A0")

    # The first one's title can go back now; its ALT was restored already and is not touched.
    writes = batch_writes(kit)
    code, out, _ = await kit.cli("rollback", "--optimization", hoodie.first, "--json")
    assert code == 0, kit.last
    (row,) = json.loads(out)
    assert (row["field"], row["outcome"], row["old"], row["new"]) == (
        "seo_title",
        "restored",
        "T0",
        "T1",
    )
    assert hoodie.store() == ("T0", "D0", "A0")
    assert batch_writes(kit) == writes + 1

    code, _, err = await kit.cli("rollback", "--optimization", hoodie.first)
    assert code == 1
    assert (
        f"nothing to roll back: every value the agent replaced that matches --optimization"
        f" {hoodie.first} was rolled back already"
    ) in err
    code, _, err = await kit.cli("rollback", "--optimization", "0" * 32)
    assert code == 1
    assert f"no value the agent replaced matches --optimization {'0' * 32}" in err
    await kit.post_results()
    assert (await kit.at_hub(hoodie.first))["status"] == "rolled_back"
    assert "seo_title: restored 'T0'" in (await kit.at_hub(hoodie.first))["detail"]


async def test_since_restores_only_what_was_replaced_after_the_time(kit: Kit) -> None:
    hoodie = Applied(kit)
    await hoodie.apply_first()
    between = datetime.now().isoformat(timespec="milliseconds")  # local time, no zone
    await hoodie.apply_second()
    code, _, err = await kit.cli("rollback", "--since", "yesterday")
    assert code == 2 and "expected an ISO 8601 time" in err

    code, out, _ = await kit.cli("rollback", "--since", between)
    assert code == 0, kit.last
    assert "2 value(s) restored, 0 left alone, 0 failed" in out
    assert hoodie.first not in out
    assert hoodie.store() == ("T1", "D0", "A1")
    await kit.post_results()
    assert (await kit.at_hub(hoodie.first))["status"] == "applied"
    assert (await kit.at_hub(hoodie.second))["status"] == "rolled_back"


async def test_rolled_back_reaches_the_hub_after_an_outage(kit: Kit, hub: Hub) -> None:
    hoodie = Applied(kit)
    await hoodie.apply_first()
    await hub.stop()
    code, _, _ = await kit.cli("rollback", "--product", hoodie.product)
    assert code == 0, kit.last  # the command never needs the hub
    assert hoodie.store() == ("T0", "D0", "A0")
    delay = await kit.engine.results.post_once()
    assert delay is not None and delay > 0  # the hub is down: the result waits
    (waiting,) = await kit.state.unreported_rollbacks(STORE)
    assert waiting.optimization == hoodie.first
    counts = await kit.state.journal_counts(STORE)  # what `status` shows meanwhile
    assert (counts["rolled_back"], counts["unreported"]) == (1, 1)

    await hub.start()
    await kit.post_results()
    assert (await kit.at_hub(hoodie.first))["status"] == "rolled_back"
    assert await kit.state.unreported_rollbacks(STORE) == []
    assert (await kit.state.journal_counts(STORE))["unreported"] == 0


# -- JSON-LD: rollback and the keeper -------------------------------------------------------------

META = "_bridge_jsonld"


@pytest.fixture
async def eur(tmp_path: Path, hub: Hub, capsys: pytest.CaptureFixture[str]) -> AsyncIterator[Kit]:
    """A kit whose store sets `currency`, so that the JSON-LD carries offers."""
    async with open_kit(tmp_path, hub, capsys, apply_mode="auto", currency="EUR") as running:
        yield running


def stored(kit: Kit, product: str) -> Any:
    value = kit.meta(product, META)
    return json.loads(value) if value else None


async def price_change(kit: Kit, product: str, price: str) -> None:
    """The merchant changes the price; the agent records it (webhook) and the keeper looks."""
    kit.sim.update_product(int(product), {"regular_price": price, "sale_price": ""})
    found = await kit.engine.applier._platform.fetch_products([product])
    await kit.state.record(
        [Change(STORE, p.id, p, "webhook", now_ms()) for p in found.found.values()]
    )
    writer = writer_of(kit.engine.applier._platform)
    assert writer is not None
    keeper = JsonLdKeeper(STORE, writer, kit.state, Metrics(), options=jsonld_options(kit.settings))
    await keeper.refresh()


async def apply_jsonld(kit: Kit, product: str, name: str) -> str:
    (opt,) = await kit.enqueue({"product": product, "fields": {"jsonld": {"to": {"name": name}}}})
    await kit.cycle()
    assert (await kit.at_hub(opt))["status"] == "applied"
    return opt


async def test_rollback_after_a_keeper_rewrite_restores_not_blames_the_merchant(eur: Kit) -> None:
    kit = eur
    product = kit.new_product("T0", "D0")
    kit.sim.update_product(int(product), {"regular_price": "10.00"})
    opt = await apply_jsonld(kit, product, "Hub name")
    await price_change(kit, product, "12.00")
    assert stored(kit, product)["offers"]["price"] == "12.00"  # the keeper rewrote it

    code, out, _ = await kit.cli("rollback", "--optimization", opt)

    # Today: "0 value(s) restored, 1 left alone" with "the merchant changed it since".
    assert "the merchant changed it since" not in out, out
    assert stored(kit, product) is None, out  # the product had no JSON-LD before the agent
    assert code == 0


async def test_rolling_back_to_the_agent_s_earlier_json_ld_keeps_it_fresh(eur: Kit) -> None:
    kit = eur
    product = kit.new_product("T0", "D0")
    kit.sim.update_product(int(product), {"regular_price": "10.00"})
    await apply_jsonld(kit, product, "First")
    second = await apply_jsonld(kit, product, "Second")
    code, out, _ = await kit.cli("rollback", "--optimization", second)
    assert code == 0, out
    assert stored(kit, product)["name"] == "First"  # the agent's earlier document is back

    await price_change(kit, product, "12.00")

    # Today the row was released by the rollback: the page still offers 10.00.
    assert stored(kit, product)["offers"]["price"] == "12.00"
