"""Per-store wiring (bridge_agent/stores.py): the reload plan, table by table, and one agent
that applies it (an unchanged store keeps its tasks, a changed one is rebuilt and re-scheduled)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bridge_agent.agent import Agent
from bridge_agent.config import Secret, StoreSettings
from bridge_agent.errors import PlatformAuthFailed, PlatformUnavailable
from bridge_agent.health import Health
from bridge_agent.platforms.base import WebhookAction
from bridge_agent.platforms.jsondir import JsonDir
from bridge_agent.store import StateStore
from bridge_agent.stores import ReloadPlan, StoreAction, StoreChecker, plan_reload
from bridge_agent.testing.waiting import until
from tests.conftest import Hub, make_config

A = StoreAction


def store(store_id: str = "main", **kw: Any) -> StoreSettings:
    base = StoreSettings(
        id=store_id,
        platform="jsondir",
        url="http://127.0.0.1/",
        secrets={"webhook_secret": Secret("whsec-old-5f2a")},
        options={"catalog_dir": "/srv/catalog"},
    )
    return replace(base, **kw)


# (case, old stores, new stores, the action on each store, the settings named as changed)
CASES: list[tuple[str, list[StoreSettings], list[StoreSettings], dict[str, A], dict[str, Any]]] = [
    ("unchanged store keeps its tasks", [store()], [store()], {"main": A.KEEP}, {}),
    (
        "an equal secret read again is no change",
        [store()],
        [store(secrets={"webhook_secret": Secret("whsec-old-5f2a")})],
        {"main": A.KEEP},
        {},
    ),
    ("added active store starts", [], [store()], {"main": A.START}, {}),
    ("added inactive store is only listed", [], [store(active=False)], {"main": A.IDLE}, {}),
    ("removed store is removed", [store()], [], {"main": A.REMOVE}, {}),
    ("removed inactive store is removed", [store(active=False)], [], {"main": A.REMOVE}, {}),
    (
        "changed secret restarts",
        [store()],
        [store(secrets={"webhook_secret": Secret("whsec-new-77c1")})],
        {"main": A.RESTART},
        {"main": ("secrets",)},
    ),
    (
        "changed url restarts",
        [store()],
        [store(url="https://shop.example/")],
        {"main": A.RESTART},
        {"main": ("url",)},
    ),
    (
        "changed platform restarts",
        [store()],
        [store(platform="woocommerce")],
        {"main": A.RESTART},
        {"main": ("platform",)},
    ),
    (
        "changed options restart",
        [store()],
        [store(options={"catalog_dir": "/srv/other"})],
        {"main": A.RESTART},
        {"main": ("options",)},
    ),
    (
        "changed intervals restart (the jobs are re-armed)",
        [store()],
        [store(poll_interval=60.0, reconcile_interval=3600.0)],
        {"main": A.RESTART},
        {"main": ("poll_interval", "reconcile_interval")},
    ),
    (
        "turned inactive stops",
        [store()],
        [store(active=False)],
        {"main": A.STOP},
        {"main": ("active",)},
    ),
    (
        "turned inactive with other changes stops",
        [store()],
        [store(active=False, url="https://shop.example/")],
        {"main": A.STOP},
        {"main": ("url", "active")},
    ),
    (
        "turned active starts",
        [store(active=False)],
        [store()],
        {"main": A.START},
        {"main": ("active",)},
    ),
    (
        "inactive and changed stays idle",
        [store(active=False)],
        [store(active=False, url="https://shop.example/")],
        {"main": A.IDLE},
        {"main": ("url",)},
    ),
    (
        "inactive and unchanged is kept",
        [store(active=False)],
        [store(active=False)],
        {"main": A.KEEP},
        {},
    ),
    (
        "each store on its own, removed ones first, then the new file's order",
        [store("a"), store("b"), store("c"), store("d", active=False)],
        [store("e"), store("c", concurrency=8), store("a"), store("d")],
        {"b": A.REMOVE, "e": A.START, "c": A.RESTART, "a": A.KEEP, "d": A.START},
        {"c": ("concurrency",), "d": ("active",)},
    ),
    (
        "a store id renamed is one removal and one start",
        [store("old")],
        [store("new")],
        {"old": A.REMOVE, "new": A.START},
        {},
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "actions", "changed"),
    [pytest.param(o, n, a, c, id=case) for case, o, n, a, c in CASES],
)
def test_plan_reload(
    old: list[StoreSettings],
    new: list[StoreSettings],
    actions: dict[str, A],
    changed: dict[str, tuple[str, ...]],
) -> None:
    plan = plan_reload(old, new)
    assert dict(plan.actions) == actions
    assert list(plan.actions) == list(actions)  # the order the reload applies them in
    assert dict(plan.changed) == changed
    assert plan.build == tuple(s for s, a in actions.items() if a in (A.START, A.RESTART))
    assert plan.touched == tuple(s for s, a in actions.items() if a is not A.KEEP)


def test_plan_reload_is_pure_and_names_no_secret_value() -> None:
    old = (store(),)
    new = (store(secrets={"webhook_secret": Secret("whsec-new-77c1")}),)
    plan = plan_reload(old, new)
    assert plan == plan_reload(old, new)  # the same inputs, the same plan
    assert old == (store(),) and new[0].url == "http://127.0.0.1/"  # inputs untouched
    text = repr(plan)
    assert "whsec-new-77c1" not in text and "whsec-old-5f2a" not in text
    assert plan.changed["main"] == ("secrets",)


def test_an_empty_reload_plans_nothing() -> None:
    assert plan_reload([], []) == ReloadPlan({}, {})
    assert plan_reload([store()], [store()]).touched == ()


# -- the plan applied by a running agent ------------------------------------------------------


async def test_a_reload_keeps_unchanged_stores_and_rebuilds_changed_ones(
    tmp_path: Path, hub: Hub
) -> None:
    config = make_config(tmp_path, hub.url)
    main = config.stores[0]
    (tmp_path / "other").mkdir()
    other = replace(
        main, id="other", spool_dir=None, options={"catalog_dir": str(tmp_path / "other")}
    )
    config = replace(config, stores=(main, other))
    new_config = replace(
        config, stores=(main, replace(other, poll_interval=42.0, reconcile_interval=4200.0))
    )
    loads = iter([new_config])
    agent = Agent(config, load=lambda _path: next(loads))
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        scheduler = agent._scheduler
        await until(lambda: "reconcile:other" in scheduler.job_ids(), what="reconcile armed")
        kept_tasks = list(agent._stores["main"].tasks)
        kept_platform = agent._stores["main"].platform
        old_tasks = list(agent._stores["other"].tasks)
        old_client = agent._stores["other"].http
        assert old_client is not None
        assert scheduler.job_settings("poll:other")["trigger"] == "interval[0:05:00]"

        agent.reload()
        await until(lambda: agent.reloads == 1, what="the reload applied")

        assert agent._stores["main"].tasks == kept_tasks  # untouched, mid-run or not
        assert agent._stores["main"].platform is kept_platform
        assert all(not t.done() for t in kept_tasks)
        assert all(t.done() for t in old_tasks)  # stopped, and new ones run
        assert agent._stores["other"].tasks and agent._stores["other"].http is not old_client
        await until(lambda: old_client.is_closed, what="the old adapter's client closed")
        await until(
            lambda: scheduler.job_settings("reconcile:other")["trigger"] == "interval[1:10:00]",
            what="reconcile re-armed at the new interval",
        )
        assert scheduler.job_settings("poll:other")["trigger"] == "interval[0:00:42]"
        assert scheduler.job_settings("poll:main")["trigger"] == "interval[0:05:00]"
    finally:
        agent.stop()
        await asyncio.wait_for(task, 20)
    assert not scheduler.running and scheduler.job_ids() == []


async def test_a_run_uses_the_store_adapter_or_a_view_on_its_client(
    tmp_path: Path, hub: Hub
) -> None:
    config = make_config(tmp_path, hub.url)
    agent = Agent(config)
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        stores = agent._stores
        entry = stores["main"]
        clients = len(agent._http_clients)
        async with stores.run_adapter(entry.settings) as same:
            assert same is entry.platform  # a run with the current settings: the store's own
        (tmp_path / "frozen").mkdir()
        frozen = replace(entry.settings, options={"catalog_dir": str(tmp_path / "frozen")})
        async with stores.run_adapter(frozen) as view:
            # A run frozen with other settings: the same class, with them, and no new client.
            assert view is not entry.platform and type(view) is type(entry.platform)
            assert view.catalog_dir == tmp_path / "frozen"  # type: ignore[attr-defined]
            assert len(agent._http_clients) == clients
        assert entry.http is not None and not entry.http.is_closed  # the store still owns it
        # Frozen with another pace, the run still goes through the store's one budget.
        budget = stores._budgets["main"]
        paced = replace(entry.settings, concurrency=entry.settings.concurrency + 4)
        async with stores.run_adapter(paced):
            assert stores._budgets["main"] is budget
        assert stores._budgets["main"] is budget
    finally:
        agent.stop()
        await asyncio.wait_for(task, 20)


class Hooked(JsonDir):
    """A store that answers its check but may refuse to register webhooks (a read-only key)."""

    def __init__(self, catalog: Path) -> None:
        super().__init__("main", catalog)
        self.down = False
        self.refuse = True
        self.registered = 0

    async def check(self) -> None:
        if self.down:
            raise PlatformUnavailable("store answered 503")

    async def register_webhooks(self, delivery_url: str) -> list[WebhookAction]:
        if self.refuse:
            raise PlatformAuthFailed("POST /webhooks: 401 woocommerce_rest_cannot_create")
        self.registered += 1
        return [WebhookAction("product.updated", "7", "created")]

    async def reactivate_disabled_webhooks(
        self, delivery_url: str | None = None
    ) -> list[WebhookAction]:
        return []


async def test_a_webhook_registration_failure_is_not_an_unreachable_store(
    tmp_path: Path, state: StateStore
) -> None:
    platform = Hooked(tmp_path)
    health = Health("store:main")
    checker = StoreChecker(platform, health, state, "main", "https://agent.example/webhooks/x")
    for _ in range(3):  # every check tries again; the event log says it once
        await checker.check_once()
    assert health.state == "webhooks_failing" and health.failing
    assert "could not be registered or re-activated" in health.detail
    assert "polling and reconciliation" in health.detail
    errors = [e for e in await state.events(levels=["error"]) if "webhooks for" in e.message]
    assert len(errors) == 1
    platform.down = True  # a real outage is still told as one
    await checker.check_once()
    assert health.state == "unreachable"
    platform.down, platform.refuse = False, False
    await checker.check_once()
    assert not health.failing and platform.registered == 1
