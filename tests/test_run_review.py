"""Defects the review of issue 13 found, each as the test that failed before its fix.

Runs, verification, filters, pause and the CLI around them (docs/runs.md).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from bridge_agent.config import Listen, Secret, WebhookSettings, load_config
from bridge_agent.config.settings import StoreFilters
from bridge_agent.model import Change
from bridge_agent.platforms.jsondir import JsonDir
from bridge_agent.server import _run_status
from bridge_agent.sources import importer as module
from bridge_agent.sources.importer import Importer, freeze
from bridge_agent.store import Run, StateStore
from bridge_agent.testing.catalog import delete_product, make_product, write_product
from bridge_agent.testing.waiting import until
from bridge_agent.wire import HashEntry, HashPage
from tests.conftest import TOKEN, Hub, free_port
from tests.test_run_rules import config_with, running
from tests.test_sources import Flaky, ctx, fill, store_settings


# -- eta: F: status ETA/rate: computed from the queue time, and negative once a sweep's vanished
# phase
# reads more ids than the walk's total.
def test_eta_never_negative() -> None:
    now = time.time()
    run = Run(
        id=1,
        kind="verify",
        store="main",
        state="running",
        config={},
        checkpoint=None,
        done=1030,
        total=1000,
        started_at=int((now - 100) * 1000),
        updated_at=0,
        finished_at=None,
        error=None,
    )
    out = _run_status(run, now)
    print(out["eta_seconds"])
    assert out["eta_seconds"] is None or out["eta_seconds"] >= 0


# -- failures: F: failures are never reset by progress: a long run with sparse transient errors is
# given up.
async def test_progress_resets_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "MAX_FAILURES", 3)
    monkeypatch.setattr(module.Backoff, "delay", lambda self, attempt, **kw: 0.0)
    fill(tmp_path / "catalog", range(1, 601))  # 6 pages
    platform = Flaky(tmp_path / "catalog", fail_pages={2, 3, 4, 5})  # each failure after progress
    async with StateStore.open(tmp_path / "state") as state:
        imp = Importer(
            ctx(state, platform),
            store=store_settings(tmp_path),
            build_platform=lambda s: contextlib.nullcontext(platform),
        )
        task = asyncio.create_task(imp.run())

        async def ended() -> bool:
            r = await state.last_run("main", "import")
            return r is not None and r.finished_at is not None

        try:
            await until(ended, 10, what="import end")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        r = await state.last_run("main", "import")
        print(r.state, r.done, r.error, platform.pages_served)
        assert r.state == "done", (r.state, r.done, r.error)


# -- force: F: a force refresh exports a deactivation (active -> draft) and double counts `shipped`.
async def test_force(tmp_path: Path, hub: Hub) -> None:
    config = config_with(tmp_path, hub)
    sd = config.agent.state_dir
    async with running(config) as agent:

        async def imported() -> bool:
            async with StateStore.open(sd, read_only=True) as s:
                r = await s.last_run("main", "import")
                return r is not None and r.state == "done"

        await until(imported, 30, what="import")

        async def drained() -> bool:
            async with StateStore.open(sd, read_only=True) as s:
                return (await s.stats()).pending == 0

        await until(drained, 30, what="drain")
        write_product(tmp_path / "catalog", dataclasses.replace(make_product(3), status="draft"))
        write_product(tmp_path / "catalog", make_product(4, revision=1))
        async with StateStore.open(sd) as s:
            rid = await s.start_run(
                "refresh", "main", freeze(config.stores[0]), params={"force": True}
            )
        agent._stores["main"].importer.nudge()

        async def done() -> bool:
            async with StateStore.open(sd, read_only=True) as s:
                r = await s.run(rid)
                return r.finished_at is not None

        await until(done, 30, what="force")
        async with StateStore.open(sd, read_only=True) as s:
            r = await s.run(rid)
            held = await s.mirror_products("main", ["3"])
        print(
            "report shipped",
            r.report["shipped"],
            "not_exported",
            r.report.get("not_exported"),
            "mirror status of 3:",
            held["3"][0].status,
        )
        assert held["3"][0].status == "active", "force refresh exported a deactivation (draft)"
        assert r.report["shipped"] == 29, r.report["shipped"]


# -- left_filter: F: with deletions = false, a product that left the filters is reported by every
# run, and the
# hub keeps it as an active product forever.
async def test_left_filter_once(tmp_path: Path, hub: Hub) -> None:
    config = config_with(tmp_path, hub, deletions=False, filters=StoreFilters(only_visible=True))
    sd = config.agent.state_dir
    async with running(config) as agent:

        async def imported() -> bool:
            async with StateStore.open(sd, read_only=True) as s:
                r = await s.last_run("main", "import")
                return r is not None and r.state == "done"

        await until(imported, 30, what="import")
        write_product(tmp_path / "catalog", dataclasses.replace(make_product(3), status="archived"))
        for _ in range(2):
            async with StateStore.open(sd) as s:
                rid = await s.start_run("verify", "main", freeze(config.stores[0]))
            agent._stores["main"].importer.nudge()

            async def done(rid: int = rid) -> bool:
                async with StateStore.open(sd, read_only=True) as s:
                    return (await s.run(rid)).finished_at is not None

            await until(done, 30, what="verify")
        async with StateStore.open(sd, read_only=True) as s:
            events = [e for e in await s.events(limit=200) if e.action == "left_filter"]
            held = await s.mirror_products("main", ["3"])
        hubp = (await hub.products("main")).get("3")
        print(len(events), held["3"][0].status, str(hubp)[:200])
        assert len(events) == 1, [e.message for e in events]


# -- paused_webhook: F: a store paused when the agent starts has no webhook route: deliveries get
# 404, not 2xx.
SECRET = "s3cret-s3cret"


async def test_paused_at_start_still_takes_webhooks(tmp_path: Path, hub: Hub) -> None:
    config = config_with(tmp_path, hub)
    store = replace(config.stores[0], secrets={"webhook_secret": Secret(SECRET)})
    config = replace(
        config, stores=(store,), webhooks=WebhookSettings(listen=Listen("127.0.0.1", 0))
    )
    async with StateStore.open(config.agent.state_dir) as s:
        await s.pause_store("main")
    async with running(config) as agent:

        async def bound() -> bool:
            return bool(agent.webhook_port)

        await until(bound, 10, what="webhook listener")
        body = json.dumps({"topic": "product.updated", "id": "7"}).encode()
        sig = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.post(
                f"http://127.0.0.1:{agent.webhook_port}/webhooks/jsondir/main",
                content=body,
                headers={"X-Signature": sig},
            )
        assert r.status_code == 200, (r.status_code, r.text)


# -- repair_restart: F: a repair run never reads its state: `sync --restart` (or pause with the
# agent stopped
# later) does not stop it, and it ends `done`, overwriting `cancelled`.
async def test_restart_stops_repair(tmp_path: Path) -> None:
    fill(tmp_path / "catalog", range(1, 2001))
    platform = JsonDir("main", tmp_path / "catalog")
    settings = store_settings(tmp_path)
    calls = []
    async with StateStore.open(tmp_path / "state") as state:
        rid = await state.start_run("repair", "main", freeze(settings))

        async def hub_hashes(store: str, after: str, limit: int) -> HashPage:
            calls.append(after)
            if len(calls) == 1:  # the operator runs `sync --restart` while the repair runs
                await state.restart_runs("main", "repair", freeze(settings))
            ids = [str(i) for i in sorted(range(1, 2001), key=str) if str(i) > after][:limit]
            return HashPage(
                tuple(HashEntry(i, "x", False) for i in ids), ids[-1] if len(ids) == limit else None
            )

        imp = Importer(
            ctx(state, platform),
            store=settings,
            hub_hashes=hub_hashes,
            build_platform=lambda s: contextlib.nullcontext(platform),
        )
        with contextlib.suppress(Exception):
            await imp.execute(await state.run(rid))
        run = await state.run(rid)
        print("hash pages read after cancel:", len(calls), "final state:", run.state)
        assert run.state == "cancelled" and len(calls) <= 2


# -- restart: F: `sync --restart [--dry-run]` cancels the first import and the repair queued after
# it;
# neither is ever queued again.
async def test_restart_dry_run_keeps_first_import_and_repair(tmp_path: Path, hub: Hub) -> None:
    config = config_with(tmp_path, hub)
    store = config.stores[0]
    async with StateStore.open(config.agent.state_dir) as s:
        # what Importer.start_first_import queues on a first start
        await s.start_runs("main", ("import", "repair"), freeze(store))
        # what `bridge-agent sync --restart --dry-run` does (cli.py _queue_runs)
        cancelled, _new = await s.restart_runs("main", "refresh", freeze(store), {"dry_run": True})
        open_kinds = [(r.kind, r.params) for r in await s.open_runs("main")]
        print("cancelled:", [(r.kind, r.id) for r in cancelled], "open:", open_kinds)
        # start_first_import will never queue them again:
        assert await s.last_run("main", "import") is not None
        assert any(k == "repair" for k, _ in open_kinds), open_kinds


# -- restart_filters: F: filters edited while the agent is stopped: the open run resumes with its
# old (wider)
# filters, ships products outside test mode, and nothing warns (only a reload warns).
async def test_warns_on_start(tmp_path: Path, hub: Hub) -> None:
    config = config_with(tmp_path, hub)
    sd = config.agent.state_dir
    sd.mkdir(parents=True, exist_ok=True)
    # the first import was started with no filters, then the agent stopped (kill, systemctl stop)
    async with StateStore.open(sd) as s:
        rid = await s.start_run("import", "main", freeze(config.stores[0]))
    # the operator switches to test mode before starting again
    store = dataclasses.replace(config.stores[0], filters=StoreFilters(test_tag="pilot"))
    config = dataclasses.replace(config, stores=(store,))
    async with running(config):

        async def done() -> bool:
            async with StateStore.open(sd, read_only=True) as s:
                return (await s.run(rid)).finished_at is not None

        await until(done, 30, what="import")
        async with StateStore.open(sd, read_only=True) as s:
            events = [e.message for e in await s.events(limit=100) if e.action == "config"]
            n = await s.mirror_count("main")
        print("mirror:", n, "config events:", events)
        assert events, f"no warning; {n} products outside test mode recorded for the hub"


# -- vanished: F: with deletions = false, a vanished product is re-reported as vanished by every
# sweep.
async def _done(state_dir: Path, run_id: int):
    async def done() -> bool:
        async with StateStore.open(state_dir, read_only=True) as s:
            r = await s.run(run_id)
            return r is not None and r.finished_at is not None

    await until(done, 30, what=f"run {run_id}")
    async with StateStore.open(state_dir, read_only=True) as s:
        return await s.run(run_id)


async def test_vanished_reported_once(tmp_path: Path, hub: Hub) -> None:
    config = config_with(tmp_path, hub, deletions=False)
    sd = config.agent.state_dir
    async with running(config) as agent:

        async def imported() -> bool:
            async with StateStore.open(sd, read_only=True) as s:
                r = await s.last_run("main", "import")
                return r is not None and r.state == "done"

        await until(imported, 30, what="import")
        delete_product(tmp_path / "catalog", "5")
        reports = []
        for _ in range(3):
            async with StateStore.open(sd) as s:
                rid = await s.start_run("verify", "main", freeze(config.stores[0]))
            agent._stores["main"].importer.nudge()
            run = await _done(sd, rid)
            reports.append(run.report)
        async with StateStore.open(sd, read_only=True) as s:
            v = await s.verification("main")
            events = await s.events(limit=100)
        print([r["vanished"] for r in reports], v)
        print([e.message for e in events if e.action == "vanished"])
        assert [r["vanished"] for r in reports] == [1, 0, 0]


# -- wait: F: `sync --wait` for an inactive store never returns while the agent runs.
def cfg(root: Path, hub_url: str) -> Path:
    (root / "catalog").mkdir()
    for i in range(5):
        write_product(root / "catalog", make_product(i))
    p = root / "agent.toml"
    p.write_text(f"""
[agent]
id = "w"
state_dir = "state"
[hub]
url = "{hub_url}"
token = "{TOKEN}"
[health]
listen = "127.0.0.1:{free_port()}"
[[stores]]
id = "main"
platform = "jsondir"
url = "http://127.0.0.1/"
catalog_dir = "catalog"
verify_schedule = "off"
[[stores]]
id = "off"
active = false
platform = "jsondir"
url = "http://127.0.0.1/"
catalog_dir = "catalog"
verify_schedule = "off"
""")
    return p


async def test_wait_on_inactive_store_returns(tmp_path: Path, hub: Hub) -> None:
    path = cfg(tmp_path, hub.url)
    async with running(load_config(path)):

        def call():
            try:
                return subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "bridge_agent",
                        "--config",
                        str(path),
                        "sync",
                        "--store",
                        "off",
                        "--wait",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=15,
                    cwd=tmp_path,
                )
            except subprocess.TimeoutExpired as exc:
                return exc

        r = await asyncio.to_thread(call)
        assert not isinstance(r, subprocess.TimeoutExpired), (
            f"sync --wait hung: {r.stdout!r} {r.stderr!r}"
        )


# -- widened: F: a run with frozen (narrower) filters deletes at the hub a product today's filters
# admit.
async def test_widened_filters(tmp_path: Path) -> None:
    cat = tmp_path / "catalog"
    cat.mkdir()
    a = dataclasses.replace(make_product(1), tags=("a",))
    b = dataclasses.replace(make_product(2), tags=("b",))
    write_product(cat, a)
    write_product(cat, b)
    platform = JsonDir("main", cat)
    old = store_settings(tmp_path, filters=StoreFilters(tags=("a",)))
    new = store_settings(tmp_path, filters=StoreFilters(tags=("a", "b")))
    async with StateStore.open(tmp_path / "state") as state:
        rid = await state.start_run("refresh", "main", freeze(old))  # queued with the old filters
        # the operator widens the filters; a webhook records product 2 under the new ones
        await state.record([Change("main", "2", b, "webhook", 1)])
        imp = Importer(
            ctx(state, platform),
            store=new,
            build_platform=lambda s: contextlib.nullcontext(platform),
        )
        await imp.execute(await state.run(rid))
        live = await state.mirror_ids("main")
        print("live after run:", live)
        assert "2" in live, "the run deleted a product today's filters admit"
