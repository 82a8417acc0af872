"""The command line as an operator uses it: exit codes, messages, and no secret in any output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bridge_agent import cli, platforms
from bridge_agent.demo import run_demo
from bridge_agent.model import Change
from bridge_agent.store import Settlement, StateStore
from bridge_agent.testing.catalog import make_product, spool_event, write_spool
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
HUB_SECRET = "hub-secret-Zq81xX"
WC_SECRET = "cs_live_9f8e7d6c5b4a"


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge_agent", "--log-format", "json", *args],
        capture_output=True, text=True, timeout=60, cwd=cwd or ROOT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_validate_accepts_the_shipped_agent_toml() -> None:
    result = run(
        "--config", str(ROOT / "agent.toml"), "validate", env={"BRIDGE_HUB_TOKEN": HUB_SECRET}
    )
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert HUB_SECRET not in result.stdout + result.stderr


def test_validate_lists_every_problem_and_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
[agent]
id = "shop 01"
state_dir = "state"

[hub]
url = "http://hub.example.com"
tokn = "{HUB_SECRET}"

[[stores]]
id = "main"
platform = "woocommerce"
url = "https://shop.example.com"
consumer_key = "ck_1"
consumer_secret = "{WC_SECRET}"
poll_interval = "often"
""",
        encoding="utf-8",
    )
    result = run("--config", str(config), "validate")
    assert result.returncode == 78
    out = result.stdout + result.stderr
    assert "did you mean 'token'" in out
    assert "https://" in out  # plain http to a non-loopback hub
    assert "poll_interval" in out
    assert "[agent] id" in out or "agent" in out
    assert out.count("\n  - ") >= 4, out
    assert HUB_SECRET not in out
    assert WC_SECRET not in out


def test_missing_env_secret_is_a_config_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BRIDGE_HUB_TOKEN"}
    result = subprocess.run(
        [sys.executable, "-m", "bridge_agent", "--config", str(ROOT / "agent.toml"), "validate"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 78
    assert "set BRIDGE_HUB_TOKEN" in result.stderr


@pytest.mark.parametrize(
    "tail", ["x = " + "[" * 5000 + "]" * 5000, "x = " + "9" * 5000, "x = {a = " * 1500]
)
def test_validate_of_a_hostile_file_exits_78_without_a_traceback(tmp_path: Path, tail: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[agent]\nid = "a"\nstate_dir = "s"\n' + tail + "\n", encoding="utf-8")
    result = run("--config", str(config), "validate")
    assert result.returncode == 78, result.stderr[-500:]
    assert "Traceback" not in result.stderr
    assert "invalid TOML" in result.stderr


def test_run_with_a_broken_config_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[agent\nid=", encoding="utf-8")
    result = run("--config", str(config), "run")
    assert result.returncode == 78
    assert "agent.toml" in result.stderr


def test_usage_error_exits_2() -> None:
    assert run("no-such-command").returncode == 2
    assert run().returncode == 2


def _offline_config(tmp_path: Path) -> Path:
    (tmp_path / "catalog").mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
[agent]
id = "cli-agent"
state_dir = "state"
[hub]
url = "http://127.0.0.1:9"
token = "{HUB_SECRET}"
[health]
listen = "127.0.0.1:{free_port()}"
[[stores]]
id = "main"
platform = "jsondir"
url = "http://127.0.0.1/"
catalog_dir = "catalog"
spool_dir = "spool"
""",
        encoding="utf-8",
    )
    return config


async def test_status_and_outbox_commands_read_the_state_directory(tmp_path: Path) -> None:
    config = _offline_config(tmp_path)
    async with StateStore.open(tmp_path / "state") as state:
        await state.record([Change("main", str(i), make_product(i), "spool", 1) for i in (1, 2, 3)])
        bad = next(d for d in await state.due(10) if d.id == "2")
        await state.settle([Settlement("main", "2", bad.seq, "rejected", reason="gtin invalid")])
        run_id = await state.start_run("import", "main", {"per_page": 100}, total=400)
        await state.record_page([], run_id=run_id, checkpoint={"page": 2}, done=100)
    for n in (1, 2):
        write_spool(tmp_path / "spool", spool_event("product.updated", str(n)))
    old = next((tmp_path / "spool" / "incoming").iterdir())
    os.utime(old, (time.time() - 600, time.time() - 600))
    (tmp_path / "spool" / "rejected").mkdir()
    (tmp_path / "spool" / "rejected" / "bad.json").write_text("{")
    (tmp_path / "spool" / "rejected" / "bad.json.why").write_text("not valid JSON\n")

    result = run("--config", str(config), "status", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["state"] == "stopped"
    assert doc["outbox"]["pending"] == 2
    assert doc["outbox"]["rejected"] == 1
    assert doc["stores"]["main"]["products"] == 3
    spool = doc["stores"]["main"]["spool"]
    assert (spool["waiting"], spool["rejected"], spool["error"]) == (2, 1, None)
    assert 590 < spool["oldest_waiting_age_seconds"] < 900

    (import_run,) = doc["runs"]
    assert (import_run["done"], import_run["total"], import_run["state"]) == (100, 400, "running")
    assert import_run["eta_seconds"] is not None

    table = run("--config", str(config), "status")
    assert "2 pending, 1 rejected" in table.stdout
    assert "gtin invalid" in table.stdout
    assert "[######.................." in table.stdout  # 100/400 as a progress bar
    assert "100/400 25%" in table.stdout
    assert "ETA" in table.stdout
    assert "spool: 2 file(s) waiting, oldest 10m ago; 1 set aside in rejected/" in table.stdout

    listing = run("--config", str(config), "outbox", "list", "--json")
    rows = json.loads(listing.stdout)
    assert [(r["id"], r["reason"]) for r in rows] == [("2", "gtin invalid")]

    assert run("--config", str(config), "outbox", "retry", "bad-key").returncode == 2
    retried = run("--config", str(config), "outbox", "retry", "main:2")
    assert retried.returncode == 0
    assert "1 rejected row(s)" in retried.stdout
    assert json.loads(run("--config", str(config), "outbox", "list", "--json").stdout) == []
    for r in (result, table, listing, retried):
        assert HUB_SECRET not in r.stdout + r.stderr


def test_hub_command_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    token_file = tmp_path / "token"
    token_file.write_text(HUB_SECRET + "\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge_agent", "--log-format", "json", "hub",
         "--listen", f"127.0.0.1:{port}", "--db", str(tmp_path / "hub.sqlite"),
         "--token-file", str(token_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(
                    f"http://127.0.0.1:{port}/v1/stats",
                    headers={"Authorization": f"Bearer {HUB_SECRET}"},
                )
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "hub did not start"
                time.sleep(0.1)
        assert r.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/v1/stats").status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert HUB_SECRET not in err


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    lines: list[str] = []
    assert run_demo(products=40, out=lines.append, log_path=tmp_path / "demo.log") == 0
    text = "\n".join(lines)
    assert "import             40 products at the hub" in text
    assert "import report      40 imported" in text
    assert "webhooks           4 registered" in text
    for change in ("price drop on product", "new product", "moved to the trash", "5 quick edits"):
        assert change in text
    assert "demo finished" in text


def test_main_reports_config_errors_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.toml"
    assert cli.main(["--config", str(missing), "validate"]) == 78
    assert "nope.toml" in capsys.readouterr().err


def test_status_without_any_state_says_so_and_creates_nothing(tmp_path: Path) -> None:
    config = _offline_config(tmp_path)
    result = run("--config", str(config), "status")
    assert result.returncode == 1
    assert "has not run here yet" in result.stderr
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_platform_without_adapter_is_refused_by_validate_and_run(
    tmp_path: Path, command: str
) -> None:
    # Magento has no adapter in this version: config knows platforms only by their adapters.
    name = "magento"
    assert name not in platforms.available()
    config = tmp_path / "agent.toml"
    keys = 'access_token = "token"'
    config.write_text(
        f"""
[agent]
id = "a"
state_dir = "state"
[hub]
url = "http://127.0.0.1:9"
token = "t0ken-value"
[health]
listen = "127.0.0.1:0"
[webhooks]
listen = "127.0.0.1:0"
[[stores]]
id = "main"
platform = "{name}"
url = "https://shop.example.com"
{keys}
""",
        encoding="utf-8",
    )
    result = run("--config", str(config), command)
    assert result.returncode == 78
    installed = ", ".join(platforms.available())
    assert f"platform: unknown platform 'magento' (installed: {installed})" in result.stderr
    assert "never awaited" not in result.stderr


def test_validate_names_the_store_once_in_what_the_adapter_refuses(tmp_path: Path) -> None:
    # The file is well formed, but the adapter refuses the combination: webhooks to register
    # and no secret to sign them with.
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
[agent]
id = "a"
state_dir = "state"
[hub]
url = "http://127.0.0.1:9"
token = "t0ken-value"
[[stores]]
id = "main"
platform = "woocommerce"
url = "https://shop.example.com"
consumer_key = "ck_1"
consumer_secret = "{WC_SECRET}"
webhook_url = "https://agent.example.com/webhooks/woocommerce/main"
""",
        encoding="utf-8",
    )
    result = run("validate", "--config", str(config))
    assert result.returncode == 78, result.stderr
    lines = [line for line in result.stderr.splitlines() if "webhook_url needs" in line]
    assert len(lines) == 1, result.stderr
    assert lines[0].count("[[stores]] 'main'") == 1, lines[0]
    assert WC_SECRET not in result.stderr + result.stdout


# -- global options after the command (`bridge-agent validate --config FILE`) ----------------------


@pytest.mark.parametrize(
    "command",
    [["run"], ["validate"], ["status"], ["log"], ["outbox", "list"], ["outbox", "retry"], ["sync"]],
)
def test_global_options_are_read_before_and_after_the_command(command: list[str]) -> None:
    parser = cli._parser()
    after = parser.parse_args(
        [*command, "--config", "a.toml", "--log-level", "debug", "--log-format", "json"]
    )
    before = parser.parse_args(
        ["--config", "a.toml", "--log-level", "debug", "--log-format", "json", *command]
    )
    for args in (after, before):
        assert (args.config, args.log_level, args.log_format) == (Path("a.toml"), "debug", "json")
        assert args.handler is before.handler
    # Given in both places, the one after the command wins; one given only before stays.
    both = parser.parse_args(
        ["--config", "a.toml", "--log-level", "error", *command, "--config", "b.toml"]
    )
    assert (both.config, both.log_level, both.log_format) == (Path("b.toml"), "error", "auto")
    plain = parser.parse_args(command)
    assert (plain.config, plain.log_level, plain.log_format) == (None, "info", "auto")


def test_validate_reads_the_config_given_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _offline_config(tmp_path)
    assert cli.main(["validate", "--config", str(config)]) == 0
    assert f"{config}: OK: agent 'cli-agent'" in capsys.readouterr().out
    # Both places: the one after the command is read.
    missing = tmp_path / "before.toml"
    assert cli.main(["--config", str(missing), "validate", "--config", str(config)]) == 0
    assert cli.main(["--config", str(config), "validate", "--config", str(missing)]) == 78
    assert "config file not found: " + str(missing) in capsys.readouterr().err


def test_run_reads_the_config_given_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Two missing files, so that reading the wrong one fails too instead of starting an agent.
    before, after = tmp_path / "before.toml", tmp_path / "after.toml"
    assert cli.main(["--config", str(before), "run", "--config", str(after)]) == 78
    err = capsys.readouterr().err
    assert str(after) in err
    assert str(before) not in err
    assert cli.main(["run", "--config", str(after), "--log-format", "json"]) == 78
    assert str(after) in capsys.readouterr().err


def test_status_reads_the_config_given_after_the_command(tmp_path: Path) -> None:
    config = _offline_config(tmp_path)
    result = run("status", "--json", "--config", str(config))
    assert result.returncode == 1
    assert "has not run here yet" in result.stderr
    assert str(tmp_path / "state") in result.stderr
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("currency", [None, "EUR"])
def test_validate_notes_a_store_whose_json_ld_would_carry_no_offers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], currency: str | None
) -> None:
    # WooCommerce's product JSON has no currency: without the option, the JSON-LD the agent
    # writes has no offers, which Google's merchant listings need. Valid, but worth a word.
    config = tmp_path / "agent.toml"
    extra = "" if currency is None else f'currency = "{currency}"\n'
    config.write_text(
        f"""
[agent]
id = "a"
state_dir = "state"
[hub]
url = "http://127.0.0.1:9"
token = "t0ken-value"
[[stores]]
id = "main"
platform = "woocommerce"
url = "https://shop.example.com"
consumer_key = "ck_1"
consumer_secret = "{WC_SECRET}"
{extra}""",
        encoding="utf-8",
    )
    assert cli.main(["validate", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    noted = "main: note: currency is not set: the JSON-LD the agent writes will carry no offers"
    assert (noted in out) is (currency is None), out
