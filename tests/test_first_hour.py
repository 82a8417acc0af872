"""The first hour of a new user (issue 10): what the README's setup shows and how the commands feel.

- the shipped `agent.toml` follows store changes live: the agent registers its webhooks in the
  simulator over plain http to loopback, and a change made at the simulator (control API or REST
  API) reaches the hub in seconds with the poll an hour away;
- `status`, `log` and `outbox` read the state directory without the hub token in the environment;
- `bridge-agent log` shows the event log, oldest to newest, filtered, with the agent running;
- a reader that closes the pipe early (`status | head -1`) ends the command quietly;
- a store with an open run says `importing` / `refreshing` / `repairing`;
- the demo's story has no log lines in it, and a run's report is one short log line;
- every `simulate` option is explained, and every control route is in docs/simulators.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from aiohttp import web
from aiohttp.test_utils import TestServer
from structlog.testing import LogCapture

from bridge_agent import cli
from bridge_agent.config import load_config
from bridge_agent.errors import ConfigError
from bridge_agent.health import Health
from bridge_agent.metrics import Metrics
from bridge_agent.model import Change
from bridge_agent.platforms.jsondir import JsonDir
from bridge_agent.platforms.woocommerce.webhooks import verify
from bridge_agent.server import Live, StoreView, status_document
from bridge_agent.shipper import HubLink
from bridge_agent.simulators.woocommerce import WooSimulator, make_app, serve
from bridge_agent.sources import StoreContext, importer
from bridge_agent.store import Settlement, StateStore
from bridge_agent.testing.catalog import make_product, write_product
from bridge_agent.testing.waiting import until
from tests.conftest import TOKEN, Hub, free_port

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "agent.toml"
LOCAL_ENV_KEYS = ("BRIDGE_HUB_TOKEN", "WC_CONSUMER_KEY", "WC_CONSUMER_SECRET", "WC_WEBHOOK_SECRET")


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without the variables agent.toml reads, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in LOCAL_ENV_KEYS}
    return {**env, **extra}


def bridge_agent(
    *args: str, env: dict[str, str] | None = None, **kw: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge_agent", "--log-format", "json", *args],
        capture_output=True, text=True, timeout=50, env=env or clean_env(), **kw,
    )  # fmt: skip


def shipped_config(root: Path, **ports: str) -> Path:
    """The shipped agent.toml under `root` (state and spool there), its addresses replaced."""
    text = SHIPPED.read_text(encoding="utf-8")
    for old, new in ports.items():
        assert old in text, f"the shipped agent.toml has no {old}"
        text = text.replace(old, new)
    path = root / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return path


# -- 1. the shipped agent.toml follows store changes live ----------------------------------------


def _store_toml(root: Path, webhook_url: str) -> Path:
    path = root / "agent.toml"
    path.write_text(
        f"""
[agent]
id = "a"
state_dir = "state"
[hub]
url = "http://127.0.0.1:8600"
token = "t0ken-value"
[[stores]]
id = "main"
platform = "woocommerce"
url = "https://shop.example.com"
consumer_key = "ck_1"
consumer_secret = "cs_1"
webhook_secret = "whsec"
webhook_url = "{webhook_url}"
""",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8687/webhooks/woocommerce/main",
        "http://localhost:8687/webhooks/woocommerce/main",
        "http://[::1]:8687/webhooks/woocommerce/main",
        "https://agent.example.com/webhooks/woocommerce/main",
    ],
)
def test_webhook_url_may_be_plain_http_to_loopback(tmp_path: Path, url: str) -> None:
    config = load_config(_store_toml(tmp_path, url), env={})
    assert config.stores[0].options["webhook_url"] == url


@pytest.mark.parametrize(
    "url",
    ["http://agent.example.com/webhooks/woocommerce/main", "http://10.0.0.5/webhooks/x/main"],
)
def test_webhook_url_must_be_https_elsewhere(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_store_toml(tmp_path, url), env={})
    (problem,) = caught.value.problems
    assert problem == (
        f"[[stores]] #1 (id 'main') webhook_url: must use https:// (plain http:// only to"
        f" loopback), got '{url}'"
    )


@contextlib.asynccontextmanager
async def agent_process(
    config: Path, log: Path, env: dict[str, str]
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`bridge-agent run` as a real process; stopped with SIGTERM (it drains to the hub, which
    runs in this event loop: so wait in a thread)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for in a thread
            [sys.executable, "-m", "bridge_agent", "--config", str(config),
             "--log-format", "json", "run"],
            stdout=out, stderr=out, env=env,
        )  # fmt: skip
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 20)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 5)


@contextlib.asynccontextmanager
async def simulator(products: int, seed: int) -> AsyncIterator[tuple[WooSimulator, str]]:
    sim = WooSimulator.generate(products=products, seed=seed, variable_ratio=0.2)
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(sim, "127.0.0.1", 0, ready=port.set_result))
    try:
        yield sim, f"http://127.0.0.1:{await asyncio.wait_for(port, 30)}"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_shipped_agent_toml_follows_store_changes_through_webhooks(
    tmp_path: Path, hub: Hub
) -> None:
    health, listener = free_port(), free_port()
    # The simulator's seed 7 makes the API keys the shipped file defaults to.
    async with (
        simulator(30, seed=7) as (sim, store_url),
        httpx.AsyncClient(base_url=store_url, timeout=10) as store,
    ):
        config = shipped_config(
            tmp_path,
            **{
                "http://127.0.0.1:8700": store_url,
                "http://127.0.0.1:8600": hub.url,
                "127.0.0.1:8686": f"127.0.0.1:{health}",
                "127.0.0.1:8687": f"127.0.0.1:{listener}",  # the listener and webhook_url
                'poll_interval = "5m"': 'poll_interval = "1h"',
            },
        )
        webhook_url = f"http://127.0.0.1:{listener}/webhooks/woocommerce/main"
        env = clean_env(BRIDGE_HUB_TOKEN=TOKEN)
        async with agent_process(config, tmp_path / "agent.log", env):

            async def registered() -> bool:
                hooks = sim.webhooks.webhooks.values()
                return (
                    sum(h.delivery_url == webhook_url and h.status == "active" for h in hooks) == 4
                )

            async def imported() -> bool:
                return len(await hub.products("main")) == 30

            await until(registered, 30, what="the agent's webhooks in the store", every=0.1)
            await until(imported, 30, what="the import", every=0.1)

            truth = sim.truth()
            by_control, by_rest = (str(d["product"]["id"]) for d in truth[:2])
            started = time.monotonic()
            await store.patch(f"/__sim/products/{by_control}", json={"name": "Changed by hand"})
            rest = await store.put(
                f"/wp-json/wc/v3/products/{by_rest}",
                json={"name": "Changed through REST"},
                auth=(sim.consumer_key, sim.consumer_secret),
            )
            assert rest.status_code == 200, rest.text

            async def arrived() -> bool:
                products = await hub.products("main")
                titles = {pid: products[pid]["data"]["title"] for pid in (by_control, by_rest)}
                return titles == {by_control: "Changed by hand", by_rest: "Changed through REST"}

            await until(arrived, 15, what="the changes at the hub", every=0.1)
            assert time.monotonic() - started < 15  # seconds, with the next poll an hour away
            async with httpx.AsyncClient(timeout=10) as http:
                metrics = (await http.get(f"http://127.0.0.1:{health}/metrics")).text
        accepted = re.search(
            r'bridge_webhooks_total\{[^}]*outcome="accepted"[^}]*\} (\d+)', metrics
        )
        assert accepted is not None and int(accepted.group(1)) >= 2, metrics
        delivered = {str(d.resource_id) for d in sim.webhooks.log if d.ok}
        assert {by_control, by_rest} <= delivered


async def test_simulator_delivers_signed_webhooks_for_rest_and_control_changes() -> None:
    received: list[tuple[dict[str, str], bytes]] = []

    async def receiver(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", receiver)
    sim = WooSimulator.generate(products=5, seed=3, webhook_delay=0.01, webhook_jitter=0.01)
    async with (
        TestServer(app, host="127.0.0.1") as target,
        TestServer(make_app(sim), host="127.0.0.1") as shop,
        httpx.AsyncClient(base_url=str(shop.make_url("/")), timeout=10) as http,
    ):
        auth = (sim.consumer_key, sim.consumer_secret)
        created = await http.post(
            "/wp-json/wc/v3/webhooks",
            json={"topic": "product.updated", "delivery_url": str(target.make_url("/hook")),
                  "secret": "s3cret"},
            auth=auth,
        )  # fmt: skip
        assert created.status_code == 201, created.text
        first, second = (d["product"]["id"] for d in sim.truth()[:2])
        await http.put(f"/wp-json/wc/v3/products/{first}", json={"name": "A"}, auth=auth)
        await http.patch(f"/__sim/products/{second}", json={"name": "B"})
        await http.post("/__sim/webhooks/drain")
    signed = [(h, b) for h, b in received if "X-WC-Webhook-Signature" in h]
    products = {verify(h, b, "s3cret").product_ids for h, b in signed}  # raises if unsigned
    assert products == {(str(first),), (str(second),)}


# -- 2. status, log and outbox need no secret ----------------------------------------------------


async def _some_state(state_dir: Path) -> None:
    async with StateStore.open(state_dir) as state:
        await state.record([Change("main", str(i), make_product(i), "spool", 1) for i in (1, 2)])
        bad = next(d for d in await state.due(10) if d.id == "2")
        await state.settle([Settlement("main", "2", bad.seq, "rejected", reason="gtin invalid")])
        await state.log_event("first", store="main")
        await state.log_event("second", level="warning", store="main", product="2", status=422)
        await state.log_event("third", level="error")


async def test_status_log_and_outbox_work_without_the_hub_token(tmp_path: Path) -> None:
    config = shipped_config(tmp_path, **{"127.0.0.1:8686": f"127.0.0.1:{free_port()}"})
    await _some_state(tmp_path / "state")
    env = clean_env()  # a fresh terminal: no BRIDGE_HUB_TOKEN
    for command in (["status"], ["status", "--json"], ["log"], ["outbox", "list"]):
        result = bridge_agent("--config", str(config), *command, env=env)
        assert result.returncode == 0, (command, result.stderr)
    listing = bridge_agent("--config", str(config), "outbox", "list", "--json", env=env)
    assert [r["reason"] for r in json.loads(listing.stdout)] == ["gtin invalid"]
    # What needs the token still asks for it.
    refused = bridge_agent("--config", str(config), "validate", env=env)
    assert refused.returncode == 78
    assert "set BRIDGE_HUB_TOKEN" in refused.stderr


def test_without_secrets_every_other_check_stays(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        """
[agent]
id = "a"
state_dir = "state"
[hub]
url = "http://hub.example.com"
token = "${BRIDGE_HUB_TOKEN:?set it}"
[[stores]]
id = "main"
platform = "woocommerce"
url = "http://127.0.0.1:8700"
consumer_key_file = "/nonexistent/key"
consumer_secret = 42
pol_interval = "5m"
""",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={}, secrets=False)
    problems = "\n".join(caught.value.problems)
    assert "hub.url must use https://" in problems
    assert "consumer_secret: expected a string, got integer" in problems
    assert "pol_interval" in problems
    assert "BRIDGE_HUB_TOKEN" not in problems  # not expanded
    assert "/nonexistent/key" not in problems  # not read
    good = load_config(SHIPPED, env={}, secrets=False)
    assert good.hub.token.reveal() == ""
    assert set(good.stores[0].secrets) == {"consumer_key", "consumer_secret", "webhook_secret"}
    assert {s.reveal() for s in good.stores[0].secrets.values()} == {""}


# -- 3. bridge-agent log ---------------------------------------------------------------------------


async def test_log_shows_the_event_log_oldest_first_with_the_agent_running(tmp_path: Path) -> None:
    config = shipped_config(tmp_path, **{"127.0.0.1:8686": f"127.0.0.1:{free_port()}"})
    await _some_state(tmp_path / "state")
    # Held open for writing, as by a running agent, while the command reads.
    async with StateStore.open(tmp_path / "state") as running:
        await running.log_event("fourth", store="main")
        text = bridge_agent("--config", str(config), "log")
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        rejected = "hub rejected the product: gtin invalid"
        assert [line.endswith(rejected) for line in lines] == [True, False, False, False, False]
        assert [line.rsplit(" ", 1)[-1] for line in lines[1:]] == [
            "first", "second", "third", "fourth"
        ]  # fmt: skip
        stamp = datetime.strptime(lines[0][:19], "%Y-%m-%d %H:%M:%S")
        assert abs(stamp.timestamp() - time.time()) < 120  # a local time, not UTC
        assert "warning main/2 [422] second" in lines[2]

        warnings = bridge_agent("--config", str(config), "log", "--level", "warning", "--json")
        shown = [e["message"] for e in json.loads(warnings.stdout)]
        assert shown == [rejected, "second", "third"]
        newest = bridge_agent("--config", str(config), "log", "--limit", "2", "--json")
        assert [e["message"] for e in json.loads(newest.stdout)] == ["third", "fourth"]
        store = bridge_agent("--config", str(config), "log", "--store", "main", "--json")
        shown = [e["message"] for e in json.loads(store.stdout)]
        assert shown == [rejected, "first", "second", "fourth"]
        assert bridge_agent("--config", str(config), "log", "--store", "nope").returncode == 2
        none = bridge_agent("--config", str(config), "log", "--level", "critical")
        assert none.returncode == 0
        assert none.stdout.startswith("no events at level critical or above")


# -- 4. a closed pipe ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["status"], ["log"], ["outbox", "list", "--state", "all"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(
    tmp_path: Path, command: list[str]
) -> None:
    config = shipped_config(tmp_path, **{"127.0.0.1:8686": f"127.0.0.1:{free_port()}"})
    asyncio.run(_some_state(tmp_path / "state"))
    with_token = clean_env(BRIDGE_HUB_TOKEN="t")  # this test is about the pipe alone
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head -1` that has already read its line and left
    try:
        result = subprocess.run(
            [sys.executable, "-m", "bridge_agent", "--config", str(config), *command],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=50, env=with_token,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert result.returncode == 0
    assert result.stderr == ""


def test_status_piped_into_head_prints_one_line_quietly(tmp_path: Path) -> None:
    config = shipped_config(tmp_path, **{"127.0.0.1:8686": f"127.0.0.1:{free_port()}"})
    asyncio.run(_some_state(tmp_path / "state"))
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c",
         f'"{sys.executable}" -m bridge_agent --config "{config}" status | head -1'],
        capture_output=True, text=True, timeout=50, env=clean_env(BRIDGE_HUB_TOKEN="t"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("agent ")
    assert result.stdout.count("\n") == 1
    assert "Traceback" not in result.stderr


# -- 5. the state column of a busy store ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "shown"), [("import", "importing"), ("refresh", "refreshing"), ("repair", "repairing")]
)
async def test_a_store_with_an_open_run_says_what_it_does(
    state: StateStore, kind: str, shown: str
) -> None:
    health = Health("store:main")
    health.ok("watching", "/srv/spool/incoming")
    view = StoreView("main", "woocommerce", True, health)
    live = Live(HubLink(), draining=False, started_at=time.time())
    idle = await status_document(state, "a", [view], live=live)
    assert idle["stores"]["main"]["state"] == "watching"

    run_id = await state.start_run(kind, "main", {}, total=400)
    await state.record_page([], run_id=run_id, checkpoint={"next": "2"}, done=100)
    busy = (await status_document(state, "a", [view], live=live))["stores"]["main"]
    assert (busy["state"], busy["ok"]) == (shown, True)
    assert busy["detail"] == f"{kind} run {run_id}: 100/400 product(s)"
    assert shown in cli.render_status(await status_document(state, "a", [view], live=live))

    health.fail("import_failing", "store answered 503")  # a failure wins over the run
    failing = (await status_document(state, "a", [view], live=live))["stores"]["main"]
    assert (failing["state"], failing["ok"]) == ("import_failing", False)

    health.ok("watching")
    await state.finish_run(run_id, report={})
    done = (await status_document(state, "a", [view], live=live))["stores"]["main"]
    assert done["state"] == "watching"


# -- 6. human output -----------------------------------------------------------------------------


def test_the_demo_prints_its_story_and_logs_to_a_file(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    result = subprocess.run(
        [sys.executable, "-m", "bridge_agent", "demo", "--products", "20", "--log-file", str(log)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=55, env=clean_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert not [line for line in lines if line.lstrip().startswith("{")], result.stdout
    assert f"agent log          {log}" in lines
    assert "demo finished" in lines[-1]
    logged = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert any(entry["event"] == "run_finished" for entry in logged)


async def test_a_run_report_is_one_summary_line_and_details_in_the_event_log(
    tmp_path: Path, state: StateStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    for i in range(1, 61):  # 30 SKUs held by two products each
        write_product(catalog, dataclasses.replace(make_product(i), sku=f"DUP-{(i + 1) // 2}"))
    captured = LogCapture()
    monkeypatch.setattr(importer, "log", structlog.wrap_logger(None, processors=[captured]))
    platform = JsonDir("main", catalog)
    ctx = StoreContext("main", platform, state, lambda: None, Metrics(), Health("store:main"))
    store = load_config(_jsondir_toml(tmp_path), env={}).stores[0]
    runner = importer.Importer(
        ctx, store=store, build_platform=lambda s: contextlib.nullcontext(platform)
    )
    await runner.start_first_import()
    (run,) = await state.open_runs("main")
    await runner.execute(run)

    (line,) = [e for e in captured.entries if e["event"] == "run_finished"]
    assert len(json.dumps(line)) < 400, line
    assert (line["imported"], line["duplicate_skus"], line["failed"]) == (60, 30, 0)
    assert not any(isinstance(v, list | dict) for v in line.values())
    events = [e.message for e in await state.events(limit=10)]
    (duplicates,) = [m for m in events if "held by more than one product" in m]
    assert duplicates.startswith(f"import run {run.id}: 30 SKU(s) held by more than one product")
    assert duplicates.count("(2 products)") == importer.DUPLICATES_LISTED
    assert duplicates.endswith(f"and {30 - importer.DUPLICATES_LISTED} more")
    done = await state.last_run("main", "import")
    assert done is not None and done.report is not None
    assert len(done.report["warnings"]["duplicate_sku"]) == 30  # the report keeps them all


def _jsondir_toml(root: Path) -> Path:
    path = root / "agent.toml"
    path.write_text(
        """
[agent]
id = "a"
state_dir = "state"
[hub]
url = "http://127.0.0.1:9"
token = "t0ken-value"
[[stores]]
id = "main"
platform = "jsondir"
url = "http://127.0.0.1/"
catalog_dir = "catalog"
""",
        encoding="utf-8",
    )
    return path


# -- 7. the simulator explained ------------------------------------------------------------------


def test_every_simulate_option_has_a_help_text() -> None:
    parser = cli._parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    simulate = commands.choices["simulate"]
    options = [a for a in simulate._actions if a.dest != "help"]
    assert len(options) >= 6
    text = simulate.format_help()
    for action in options:
        assert action.help and len(action.help) > 10, action.dest
        assert action.help.split("%")[0].strip()[:20] in " ".join(text.split()), action.dest
    assert "docs/simulators.md" in " ".join(text.split())


def test_docs_describe_every_control_route() -> None:
    doc = (ROOT / "docs" / "simulators.md").read_text(encoding="utf-8")
    app = make_app(WooSimulator(seed=1))
    routes = {
        (route.method, re.sub(r"\{(\w+)[^}]*\}", r"{\1}", route.resource.canonical))
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/__sim/")
        and route.method != "HEAD"  # aiohttp's twin of each GET
    }
    assert len(routes) >= 11
    for method, path in routes:
        methods = ("GET", "POST") if method == "*" else (method,)
        for m in methods:
            assert f"`{m} {path}" in doc, f"{m} {path} is not in docs/simulators.md"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/simulators.md" in readme
