"""Runs end to end (guarantee 3, Sales Layer rules 03-09, the Connectif verification flow).

The real agent in this process, the WooCommerce simulator and the reference hub on loopback, and
the operator's commands through `bridge_agent.cli.main` on the same state directory, as an
operator runs them beside the daemon:

- pause during a run: at most one more page, then nothing until resume, which continues from
  the checkpoint (nothing lost, nothing repeated beyond one page);
- a verification sweep finds a price drift, an out-of-stock, an image ALT changed without a
  modified-date bump and a deletion no webhook reported, ships each, and marks the rest at the
  hub without sending their data again; `verify --product` reads only those products;
- a force refresh ships every visible product in full and exports no deletion or deactivation;
  a dry run records nothing and says what would ship; `sync --restart` cancels and starts over;
- SIGKILL during a run, then the config edited, then a restart: the run finishes with its frozen
  configuration, and the next run uses the new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge_agent.agent import Agent
from bridge_agent.cli import main
from bridge_agent.config import load_config
from bridge_agent.errors import StateStoreError
from bridge_agent.store import Run, StateStore
from bridge_agent.testing.waiting import until
from tests.conftest import TOKEN, Hub, free_port
from tests.test_e2e_woocommerce import Sim, start_sim

PER_PAGE = 100


def write_config(root: Path, hub: Hub, woo: Sim, extra: str = "") -> Path:
    path = root / "agent.toml"
    path.write_text(
        f"""
[agent]
id = "runs-agent"
state_dir = "state"
drain_timeout = "5s"

[hub]
url = "{hub.url}"
token = "{TOKEN}"
batch_linger = "0s"

[health]
listen = "127.0.0.1:{free_port()}"

[[stores]]
id = "main"
platform = "woocommerce"
url = "{woo.url}"
consumer_key = "{woo.sim.consumer_key}"
consumer_secret = "{woo.sim.consumer_secret}"
concurrency = 4
poll_interval = "1h"
reconcile_interval = "24h"
verify_schedule = "off"
image_checks = false
{extra}
""",
        encoding="utf-8",
    )
    return path


@contextlib.asynccontextmanager
async def running(config: Path) -> AsyncIterator[Agent]:
    agent = Agent(load_config(config))
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def simulator(products: int, latency_ms: float = 0.0) -> AsyncIterator[Sim]:
    woo, task = await start_sim(products, variable_ratio=0.2)
    try:
        if latency_ms:
            await woo.http.post("/__sim/faults", json={"latency_ms": latency_ms})
        yield woo
    finally:
        await woo.http.aclose()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await woo.sim.close()


async def cli(config: Path, *args: str) -> tuple[int, str]:
    """Run a command as the operator does (its own event loop, in a thread), with its output."""

    def call() -> tuple[int, str]:
        import io  # noqa: PLC0415

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["--config", str(config), *args])
        return code, out.getvalue()

    return await asyncio.to_thread(call)


def queued_id(output: str) -> int:
    found = re.search(r"run (\d+) queued", output)
    assert found, output
    return int(found.group(1))


async def read_run(root: Path, run_id: int) -> Run | None:
    try:
        async with StateStore.open(root / "state", read_only=True) as state:
            return await state.run(run_id)
    except StateStoreError:
        return None


async def last_run(root: Path, kind: str) -> Run | None:
    try:
        async with StateStore.open(root / "state", read_only=True) as state:
            return await state.last_run("main", kind)
    except StateStoreError:
        return None


async def run_done(root: Path, run_id: int, limit: float = 60) -> Run:
    async def finished() -> bool:
        run = await read_run(root, run_id)
        return run is not None and run.finished_at is not None

    await until(finished, limit, what=f"run {run_id} to finish", every=0.05)
    run = await read_run(root, run_id)
    assert run is not None
    assert run.state == "done", (run.state, run.error)
    return run


async def imported(root: Path) -> None:
    """The first import and its repair are done and the outbox is empty."""

    async def ready() -> bool:
        try:
            async with StateStore.open(root / "state", read_only=True) as state:
                runs = [await state.last_run("main", k) for k in ("import", "repair")]
                pending = (await state.stats()).pending
        except StateStoreError:
            return False
        return all(r is not None and r.state == "done" for r in runs) and pending == 0

    await until(ready, 90, what="the first import", every=0.05)


async def shipped(root: Path) -> None:
    async def empty() -> bool:
        async with StateStore.open(root / "state", read_only=True) as state:
            return (await state.stats()).pending == 0

    await until(empty, 30, what="the outbox to drain", every=0.05)


def listing_requests(stats: dict[str, Any]) -> int:
    return sum(stats["requests"].get("GET /wp-json/wc/v3/products", {}).values())


# -- pause and resume ----------------------------------------------------------------------------


async def test_pause_stops_a_run_after_at_most_one_page_and_resume_continues(
    tmp_path: Path, hub: Hub
) -> None:
    async with simulator(2500, latency_ms=25) as woo:
        config = write_config(tmp_path, hub, woo)
        async with running(config):

            async def partly() -> bool:
                run = await last_run(tmp_path, "import")
                return run is not None and run.done >= 3 * PER_PAGE

            await until(partly, 60, what="a partial import", every=0.02)
            code, out = await cli(config, "pause", "--store", "main")
            assert code == 0 and "paused" in out, out
            paused = await last_run(tmp_path, "import")
            assert paused is not None and paused.state == "paused"
            at_pause = paused.done

            # Nothing moves once the page in flight is in: wait for two quiet seconds.
            async def settled() -> bool:
                before = (await last_run(tmp_path, "import")).done  # type: ignore[union-attr]
                await asyncio.sleep(1.0)
                return (await last_run(tmp_path, "import")).done == before  # type: ignore[union-attr]

            await until(settled, 20, what="the paused run to stand still", every=0)
            stopped = await last_run(tmp_path, "import")
            assert stopped is not None and stopped.state == "paused"
            assert stopped.done - at_pause <= PER_PAGE, (at_pause, stopped.done)
            requests_paused = listing_requests(await woo.stats())
            await asyncio.sleep(1.0)
            assert listing_requests(await woo.stats()) == requests_paused  # the store is left be

            code, out = await cli(config, "resume", "--store", "main")
            assert code == 0 and "resumed" in out, out
            await imported(tmp_path)
        run = await last_run(tmp_path, "import")
        assert run is not None and run.done == 2500 and run.state == "done"
        # Resumed from the checkpoint: one pass over the pages, plus the pages the adapter had
        # read ahead at the pause (`concurrency` = 4, never recorded, read again). Besides: the
        # id listing of the repair run after the import (25 pages) and the store checks (one
        # at start, one at resume, `per_page=1`).
        pages = 2500 // PER_PAGE
        assert listing_requests(await woo.stats()) <= pages + 4 + pages + 4
        live = {k for k, v in (await hub.products("main")).items() if not v["deleted"]}
        truth = {str(d["product"]["id"]) for d in await woo.truth()}
        assert live == truth - {
            str(d["product"]["id"]) for d in await woo.truth() if d["product"]["status"] == "trash"
        }


async def test_a_store_paused_while_the_agent_is_down_stays_paused_at_start(
    tmp_path: Path, hub: Hub
) -> None:
    async with simulator(150) as woo:
        config = write_config(tmp_path, hub, woo)
        (tmp_path / "state").mkdir()
        code, out = await cli(config, "pause", "--store", "main")
        assert code == 0, out
        async with running(config):
            await asyncio.sleep(1.5)
            assert listing_requests(await woo.stats()) == 0  # nothing read while paused
            code, out = await cli(config, "status", "--json")
            doc = json.loads(out)
            assert doc["stores"]["main"]["state"] == "paused"
            await cli(config, "resume", "--store", "main")
            await imported(tmp_path)
        assert len(await hub.products("main")) > 100


# -- verification ----------------------------------------------------------------------------


def _pick(truth: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """Published simple products with exactly one image, in stock."""
    out = [
        d["product"]
        for d in truth
        if d["product"]["status"] == "publish"
        and d["product"]["type"] == "simple"
        and len(d["product"]["images"]) == 1
        and d["product"]["stock_status"] == "instock"
    ]
    assert len(out) >= count
    return out[:count]


async def test_a_verification_sweep_ships_what_nothing_else_could_see(
    tmp_path: Path, hub: Hub
) -> None:
    async with simulator(300) as woo:
        config = write_config(tmp_path, hub, woo)
        async with running(config):
            await imported(tmp_path)
            truth = await woo.truth()
            price, stock, alt, gone = _pick(truth, 4)
            silent = "?bump=false&webhooks=false"  # a direct database write: no date, no hook
            await woo.http.patch(
                f"/__sim/products/{price['id']}{silent}", json={"regular_price": "987.65"}
            )
            await woo.http.patch(
                f"/__sim/products/{stock['id']}{silent}", json={"stock_status": "outofstock"}
            )
            image = alt["images"][0]
            await woo.http.patch(
                f"/__sim/products/{alt['id']}{silent}",
                json={"images": [{"id": image["id"], "alt": "ALT set in the media library"}]},
            )
            await woo.http.delete(f"/__sim/products/{gone['id']}?force=true")  # fires nothing
            before = await hub.stats()

            code, out = await cli(config, "verify", "--store", "main")
            assert code == 0, out
            run = await run_done(tmp_path, queued_id(out))
            await shipped(tmp_path)
        report = run.report or {}
        assert report["drift"] == 3, report
        assert report["vanished"] == 1, report
        live_before = sum(1 for d in truth if d["product"]["status"] != "trash")
        assert report["unchanged"] == live_before - 4
        assert report["markers"] == report["unchanged"]  # every unchanged one marked, no data
        at_hub = await hub.products("main")
        assert at_hub[str(price["id"])]["data"]["regular_price"] == "987.65"
        assert at_hub[str(stock["id"])]["data"]["availability"] == "OutOfStock"
        images = at_hub[str(alt["id"])]["data"]["images"]
        assert images[0]["alt"] == "ALT set in the media library"
        assert at_hub[str(gone["id"])]["deleted"] is True
        # The hub received the four products, and markers for the rest: never their data.
        after = await hub.stats()
        assert after["items"] - before["items"] == 4, (before, after)
        unchanged = [v for k, v in at_hub.items() if not v["deleted"] and k != str(price["id"])]
        assert all(v["verified_at"] for v in unchanged)
        # Every drift and the vanished product are in the operator's log, by product.
        code, out = await cli(config, "log", "--store", "main", "--json", "--limit", "200")
        events = json.loads(out)
        named = {(e["product"], e["action"]) for e in events if e.get("product")}
        for product in (price, stock, alt):
            assert (str(product["id"]), "verify_drift") in named
        assert (str(gone["id"]), "vanished") in named
        async with StateStore.open(tmp_path / "state", read_only=True) as state:
            assert (await state.verification("main")).unverified == 0


async def test_verify_named_products_reads_only_those(tmp_path: Path, hub: Hub) -> None:
    async with simulator(200) as woo:
        config = write_config(tmp_path, hub, woo)
        async with running(config):
            await imported(tmp_path)
            one, two = _pick(await woo.truth(), 2)
            await woo.http.patch(
                f"/__sim/products/{one['id']}?bump=false&webhooks=false",
                json={"regular_price": "12.34"},
            )
            listed = listing_requests(await woo.stats())
            code, out = await cli(
                config, "verify", "--store", "main", "--product", str(one["id"]),
                "--product", str(two["id"]), "--product", "999999",
            )  # fmt: skip
            assert code == 0, out
            run = await run_done(tmp_path, queued_id(out))
            await shipped(tmp_path)
            # One batch read (include=...) for the three ids, not a walk of the catalog.
            assert listing_requests(await woo.stats()) - listed <= 2
        report = run.report or {}
        assert report["drift"] == 1 and report["unchanged"] == 1, report
        assert report["imported"] == 3 and report["not_found"] == 1
        assert (await hub.products("main"))[str(one["id"])]["data"]["regular_price"] == "12.34"


async def test_deletions_off_a_vanished_product_is_discontinued_not_deleted(
    tmp_path: Path, hub: Hub
) -> None:
    async with simulator(120) as woo:
        config = write_config(tmp_path, hub, woo, "deletions = false")
        async with running(config):
            await imported(tmp_path)
            (gone,) = _pick(await woo.truth(), 1)
            await woo.http.delete(f"/__sim/products/{gone['id']}?force=true")
            code, out = await cli(config, "verify", "--store", "main")
            assert code == 0, out
            run = await run_done(tmp_path, queued_id(out))
            await shipped(tmp_path)
        assert (run.report or {})["vanished"] == 1
        kept = (await hub.products("main"))[str(gone["id"])]
        assert kept["deleted"] is False
        assert kept["data"]["status"] == "archived"
        assert kept["data"]["availability"] == "Discontinued"


# -- refresh: force, dry run, restart -----------------------------------------------------------


async def test_force_refresh_ships_every_visible_product_and_no_deletion(
    tmp_path: Path, hub: Hub
) -> None:
    async with simulator(250) as woo:
        config = write_config(tmp_path, hub, woo)
        async with running(config):
            await imported(tmp_path)
            truth = await woo.truth()
            (archived,) = _pick(truth, 1)
            # Hidden in the store without a hook (a deactivation), and one deleted for good.
            await woo.http.patch(
                f"/__sim/products/{archived['id']}?webhooks=false", json={"status": "private"}
            )
            (deleted,) = _pick(truth, 2)[1:]
            await woo.http.delete(f"/__sim/products/{deleted['id']}?force=true")
            before = await hub.stats()
            code, out = await cli(config, "sync", "--store", "main", "--force")
            assert code == 0 and "refresh (force)" in out, out
            run = await run_done(tmp_path, queued_id(out))
            await shipped(tmp_path)
        # Visible: published (active). Drafts, private (archived) and trash are not exported.
        visible = [d["product"] for d in await woo.truth() if d["product"]["status"] == "publish"]
        report = run.report or {}
        assert report["shipped"] == len(visible), report
        assert report["not_exported"] >= 1  # the product hidden meanwhile
        after = await hub.stats()
        assert after["items"] - before["items"] == len(visible)  # all, changed or not, in full
        at_hub = await hub.products("main")
        assert at_hub[str(archived["id"])]["data"]["status"] == "active"  # no deactivation
        assert at_hub[str(deleted["id"])]["deleted"] is False  # no deletion


async def test_a_dry_run_records_nothing_and_says_what_would_ship(tmp_path: Path, hub: Hub) -> None:
    async with simulator(150) as woo:
        config = write_config(tmp_path, hub, woo)
        async with running(config):
            await imported(tmp_path)
            one, two = _pick(await woo.truth(), 2)
            for product in (one, two):
                await woo.http.patch(
                    f"/__sim/products/{product['id']}?webhooks=false", json={"name": "Renamed"}
                )
            before = await hub.stats()
            code, out = await cli(config, "sync", "--store", "main", "--dry-run", "--wait")
            assert code == 0, out
            run = await last_run(tmp_path, "refresh")
            assert run is not None and run.params == {"dry_run": True}
        report = run.report or {}
        assert report["would_changed"] == 2 and report["would_new"] == 0, report
        assert {w["product"] for w in report["would_ship"]} == {str(one["id"]), str(two["id"])}
        assert (await hub.stats())["items"] == before["items"]
        assert (await hub.products("main"))[str(one["id"])]["data"]["title"] != "Renamed"
        async with StateStore.open(tmp_path / "state", read_only=True) as state:
            assert (await state.stats()).pending == 0
        assert '"would_changed": 2' in out  # --wait printed the report


async def test_sync_restart_cancels_the_open_run_and_starts_over(tmp_path: Path, hub: Hub) -> None:
    async with simulator(100) as woo:
        config = write_config(tmp_path, hub, woo)
        (tmp_path / "state").mkdir()
        code, out = await cli(config, "sync", "--store", "main")
        first = queued_id(out)
        code, out = await cli(config, "sync", "--store", "main")
        assert "queued behind run(s)" in out, out
        second = queued_id(out)
        write_config(tmp_path, hub, woo, "deletions = false")
        code, out = await cli(config, "sync", "--store", "main", "--restart")
        assert code == 0, out
        third = queued_id(out)
        assert f"run {first} of store 'main' cancelled" in out
        assert f"run {second} of store 'main' cancelled" in out
        for cancelled in (first, second):
            run = await read_run(tmp_path, cancelled)
            assert run is not None and run.state == "cancelled"
            assert f"replaced by run {third}" in (run.error or "")
        new = await read_run(tmp_path, third)
        assert new is not None and new.state == "running" and new.config["deletions"] is False


# -- frozen configuration across SIGKILL ----------------------------------------------------------


async def test_sigkill_then_a_config_edit_the_run_finishes_with_its_frozen_settings(
    tmp_path: Path, hub: Hub
) -> None:
    async with simulator(3000, latency_ms=20) as woo:
        config = write_config(tmp_path, hub, woo)
        cmd = [sys.executable, "-m", "bridge_agent", "--config", str(config),
               "--log-format", "json", "run"]  # fmt: skip
        with (tmp_path / "agent.log").open("ab") as log:
            agent = subprocess.Popen(cmd, stdout=log, stderr=log, env=dict(os.environ))  # noqa: ASYNC220
            try:

                async def partly() -> bool:
                    run = await last_run(tmp_path, "import")
                    return run is not None and run.done >= 600

                await until(partly, 60, what="a partial import", every=0.05)
            finally:
                agent.send_signal(signal.SIGKILL)
                await asyncio.to_thread(agent.wait, 10)
            killed = await last_run(tmp_path, "import")
            assert killed is not None and killed.state == "running" and killed.done < 3000
            assert killed.config["filters"] == load_config(config).stores[0].filters.to_dict()

            # The operator edits the configuration: a test tag no product carries (rule 12)
            # and deletions off. The open import must not see it (rule 09).
            write_config(
                tmp_path, hub, woo, 'deletions = false\n[stores.filters]\ntest_tag = "bridge-test"'
            )
            agent = subprocess.Popen(cmd, stdout=log, stderr=log, env=dict(os.environ))  # noqa: ASYNC220
            try:
                await imported(tmp_path)
                resumed = await last_run(tmp_path, "import")
                assert resumed is not None and resumed.id == killed.id
                assert (resumed.report or {}).get("out_of_scope", 0) == 0
                # The next run uses today's configuration.
                code, out = await cli(config, "sync", "--store", "main")
                assert code == 0, out
                refresh = await run_done(tmp_path, queued_id(out), limit=120)
            finally:
                agent.send_signal(signal.SIGTERM)
                await asyncio.to_thread(agent.wait, 30)
        async with StateStore.open(tmp_path / "state", read_only=True) as state:
            assert await state.mirror_count("main") >= 2900  # the whole catalog, unfiltered
        assert refresh.config["filters"]["test_tag"] == "bridge-test"
        assert refresh.config["deletions"] is False
        report = refresh.report or {}
        assert report["out_of_scope"] == report["imported"] > 2900, report
        # Deletions are off in the new settings: the products outside the test tag stay at
        # the hub, reported as having left the filter.
        live = [v for v in (await hub.products("main")).values() if not v["deleted"]]
        assert len(live) >= 2900


@pytest.mark.parametrize("command", ["pause", "resume", "verify", "sync"])
async def test_run_commands_refuse_an_unknown_store(tmp_path: Path, hub: Hub, command: str) -> None:
    woo = Sim.__new__(Sim)  # the commands never contact the store
    woo.url = "http://127.0.0.1:9"
    woo.sim = type("K", (), {"consumer_key": "ck_x", "consumer_secret": "cs_x"})()  # type: ignore[assignment]
    woo.http = httpx.AsyncClient()
    try:
        config = write_config(tmp_path, hub, woo)
        code, _out = await cli(config, command, "--store", "nope")
        assert code == 2
    finally:
        await woo.http.aclose()
