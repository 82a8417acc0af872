"""Filters and test mode in the live sources (`sources/filtering.py`), end to end to the hub.

A jsondir store whose truth the test writes, the real state store in a temporary folder, the
real shipper and the reference hub on loopback. Each path that records product data (polls,
webhook hints, reconciliation) is driven by hand, so the tests read as the scenarios of Sales
Layer rules 10-12: what is outside the filter never reaches the hub; what leaves it is reported
and removed at the hub only when deletions are on; test mode syncs only the tagged products.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import pytest

from bridge_agent.config import StoreFilters
from bridge_agent.health import Health
from bridge_agent.metrics import Metrics
from bridge_agent.model import Change, Product
from bridge_agent.platforms.jsondir import JsonDir
from bridge_agent.sources import StoreContext
from bridge_agent.sources.filtering import LEFT_FILTER, sift
from bridge_agent.sources.hints import HintWorker
from bridge_agent.sources.poller import STREAM, Poller
from bridge_agent.sources.reconcile import Reconciler
from bridge_agent.store import StateStore
from bridge_agent.sync.scope import Scope
from bridge_agent.testing.catalog import make_product, write_product
from tests.conftest import Hub, ShipperKit

PILOT = "pilot"


class Counting(JsonDir):
    """jsondir that counts the products fetched by id (re-fetches)."""

    def __init__(self, catalog: Path) -> None:
        super().__init__("main", catalog)
        self.fetched: list[str] = []

    async def fetch_product(self, product_id: str) -> Product | None:
        self.fetched.append(product_id)
        return await super().fetch_product(product_id)


def catalog_of(root: Path, products: Iterable[Product]) -> Counting:
    folder = root / "catalog"
    folder.mkdir(exist_ok=True)
    for product in products:
        write_product(folder, product)
    return Counting(folder)


def context(state: StateStore, platform: JsonDir, filters: StoreFilters) -> StoreContext:
    return StoreContext(
        "main", platform, state, lambda: None, Metrics(), Health("store:main"), Scope.of(filters)
    )


def tagged(i: int, *tags: str, revision: int = 0) -> Product:
    return replace(make_product(i, revision=revision), tags=tags)


async def ship_all(kit: ShipperKit, state: StateStore) -> None:
    for _ in range(50):
        if (await state.stats()).pending == 0:
            return
        await kit.shipper.ship_once()
    raise AssertionError("outbox did not drain")


async def live_at_hub(hub: Hub) -> set[str]:
    return {pid for pid, p in (await hub.products("main")).items() if not p["deleted"]}


async def poll_everything(ctx: StoreContext, *, deletions: bool = False) -> int:
    """One poll that sees the whole demo catalog (its dates are in 2026-01)."""
    await ctx.state.set_cursor("main", STREAM, "2025-12-01T00:00:00Z")
    return await Poller(ctx, interval=60, deletions=deletions).poll_once()


async def hint(ctx: StoreContext, ids: Iterable[str], *, deletions: bool) -> int:
    """Hints for `ids`, then one round of the hint worker; returns the hints it settled."""
    await ctx.state.add_hints("main", list(ids), "webhook")
    return await HintWorker(ctx, deletions=deletions).process_once()


async def reconcile(ctx: StoreContext, *, deletions: bool = True) -> dict[str, int]:
    return await Reconciler(ctx, interval=3600, deletions=deletions).reconcile_once()


@pytest.mark.parametrize("path", ["poll", "webhook", "reconcile"])
async def test_a_product_outside_the_filter_is_never_shipped(
    tmp_path: Path,
    state: StateStore,
    hub: Hub,
    make_shipper: Callable[..., ShipperKit],
    path: str,
) -> None:
    products = [make_product(i) for i in range(1, 7)]
    products[1] = replace(products[1], status="draft")  # 2
    products[4] = replace(products[4], status="archived")  # 5
    ctx = context(state, catalog_of(tmp_path, products), StoreFilters(status=("active",)))
    if path == "poll":
        assert await poll_everything(ctx) == 4
    elif path == "webhook":
        assert await hint(ctx, [p.id for p in products], deletions=True) == 6  # settled
        assert await state.hint_count("main") == 0  # out-of-scope hints are settled too
    else:
        assert await reconcile(ctx) == {"deleted": 0, "recorded": 4, "queued": 4}
    assert (await state.stats()).pending == 4
    assert await state.mirror_ids("main") == {"1", "3", "4", "6"}
    await ship_all(make_shipper(hub), state)
    assert await live_at_hub(hub) == {"1", "3", "4", "6"}
    assert set(await hub.products("main")) == {"1", "3", "4", "6"}  # not even as a deletion
    assert await state.events(stores=["main"], levels=["warning"]) == []  # none left: none was in


@pytest.mark.parametrize("deletions", [True, False])
async def test_a_product_leaving_the_filter_is_reported_and_deleted_only_with_deletions(
    tmp_path: Path,
    state: StateStore,
    hub: Hub,
    make_shipper: Callable[..., ShipperKit],
    deletions: bool,
) -> None:
    platform = catalog_of(tmp_path, [tagged(i, "mug", PILOT) for i in range(1, 5)])
    ctx = context(state, platform, StoreFilters(test_tag=PILOT))
    kit = make_shipper(hub)
    assert await hint(ctx, ["1", "2", "3", "4"], deletions=deletions) == 4
    await ship_all(kit, state)
    assert await live_at_hub(hub) == {"1", "2", "3", "4"}

    # The operator takes product 2 out of the test; a webhook says it changed.
    write_product(platform.catalog_dir, tagged(2, "mug", revision=1))
    await hint(ctx, ["2"], deletions=deletions)
    (event,) = await state.events(stores=["main"], levels=["warning"])
    assert (event.product, event.action) == ("2", LEFT_FILTER)
    outcome = "removed at the hub" if deletions else "kept at the hub (deletions = false)"
    assert event.message == (
        f"product 2 left the filter: has no tag '{PILOT}' (test mode); {outcome}"
    )
    await ship_all(kit, state)
    if deletions:
        assert await live_at_hub(hub) == {"1", "3", "4"}
        assert (await hub.products("main"))["2"]["deleted"]
        assert await state.mirror_ids("main") == {"1", "3", "4"}
    else:
        assert await live_at_hub(hub) == {"1", "2", "3", "4"}
        held = (await hub.products("main"))["2"]["data"]
        assert held["tags"] == ["mug", PILOT]  # the hub keeps what it had, never the new state

    # A poll seeing it again: with deletions it is simply out of scope now (nothing, no event);
    # without, the mirror still holds it, and its leaving was reported already for that state:
    # one report, not one per observation (the event log stays bounded).
    assert await poll_everything(ctx, deletions=deletions) == 0
    warnings = await state.events(stores=["main"], levels=["warning"])
    assert len(warnings) == 1

    # Tagged again, it comes back as a product like any other.
    write_product(platform.catalog_dir, tagged(2, "mug", PILOT, revision=2))
    await hint(ctx, ["2"], deletions=deletions)
    await ship_all(kit, state)
    assert await live_at_hub(hub) == {"1", "2", "3", "4"}
    assert (await hub.products("main"))["2"]["data"]["tags"] == ["mug", PILOT]


async def test_test_mode_limits_the_sync_to_the_tagged_products(
    tmp_path: Path, state: StateStore, hub: Hub, make_shipper: Callable[..., ShipperKit]
) -> None:
    chosen = {"4", "17", "23"}
    products = [
        tagged(i, "mug", "Pilot") if str(i) in chosen else make_product(i) for i in range(1, 31)
    ]
    platform = catalog_of(tmp_path, products)
    ctx = context(state, platform, StoreFilters(test_tag=PILOT))
    assert await poll_everything(ctx, deletions=True) == 3
    reconciler = Reconciler(ctx, interval=3600)
    # The whole catalog listed: the 27 untagged products are read once, and still not recorded.
    assert await reconciler.reconcile_once() == {"deleted": 0, "recorded": 0, "queued": 0}
    assert len(platform.fetched) == 27
    await ship_all(make_shipper(hub), state)
    assert set(await hub.products("main")) == chosen
    assert await state.mirror_ids("main") == chosen

    # The next pass does not read them again; a product tagged meanwhile comes through the poll.
    platform.fetched.clear()
    write_product(platform.catalog_dir, tagged(9, PILOT, revision=1))
    assert await reconciler.reconcile_once() == {"deleted": 0, "recorded": 0, "queued": 0}
    assert platform.fetched == []
    assert await poll_everything(ctx, deletions=True) == 1
    assert await state.mirror_ids("main") == {*chosen, "9"}


async def test_a_stale_observation_does_not_remove_a_product(
    tmp_path: Path, state: StateStore
) -> None:
    scope = Scope.of(StoreFilters(test_tag=PILOT))
    fresh = tagged(1, PILOT, revision=1)
    await state.record([Change("main", "1", fresh, "webhook", 1)])
    stale = Change("main", "1", tagged(1, "mug"), "poll", 2)  # an older read, untagged then
    assert await sift(state, "main", [stale], scope, deletions=True) == ([], [])
    newer = Change("main", "1", tagged(1, "mug", revision=2), "poll", 3)
    kept, events = await sift(state, "main", [newer], scope, deletions=True)
    assert kept == [Change("main", "1", None, "poll", 3)]
    assert [(e.product, e.level, e.action) for e in events] == [("1", "warning", LEFT_FILTER)]
    gone = Change("main", "9", None, "poll", 4)  # deletions pass through untouched
    assert await sift(state, "main", [gone], scope, deletions=False) == ([gone], [])
