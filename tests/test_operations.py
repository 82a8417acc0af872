"""Running under systemd: sd_notify sequence, watchdog liveness, reload, secrets out of logs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bridge_agent.agent import Agent
from bridge_agent.config import load_config
from bridge_agent.systemd import Notifier
from bridge_agent.testing.catalog import make_product, spool_event, write_product, write_spool
from bridge_agent.testing.waiting import until
from tests.conftest import JSONDIR_STORE, TOKEN, Hub, free_port, make_config


@dataclass
class FakeSystemd:
    """A NOTIFY_SOCKET peer: records every datagram with the time it arrived (in a thread)."""

    path: Path
    messages: list[tuple[float, str]] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.05)
        self._running = True
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        assert self._sock is not None
        while self._running:
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()

    def kinds(self) -> list[str]:
        """The first line's key of each message, in order: READY, STATUS, WATCHDOG, ..."""
        return [m.split("=", 1)[0] for _, m in self.messages]

    def times(self, kind: str) -> list[float]:
        return [t for t, m in self.messages if m.startswith(kind + "=")]


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[FakeSystemd]:
    # AF_UNIX paths are limited to ~108 bytes; pytest's tmp_path can be longer.
    short = Path("/tmp") / f"bridge-notify-{os.getpid()}-{time.monotonic_ns()}.sock"
    fake = FakeSystemd(short)
    fake.start()
    yield fake
    fake.stop()
    short.unlink(missing_ok=True)


def notifier(systemd: FakeSystemd, watchdog_usec: int | None = None) -> Notifier:
    env = {"NOTIFY_SOCKET": str(systemd.path)}
    if watchdog_usec:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    return Notifier(env)


def test_notifier_is_a_no_op_outside_systemd() -> None:
    quiet = Notifier({})
    assert not quiet.enabled
    assert quiet.ready("x") is False
    assert quiet.watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "10000000"}).watchdog_interval == 5.0


async def test_notify_sequence_on_start_reload_and_stop(
    tmp_path: Path, hub: Hub, systemd: FakeSystemd
) -> None:
    config = make_config(tmp_path, hub.url)
    agent = Agent(config, notifier=notifier(systemd), load=lambda path: config)
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    await until(lambda: "READY" in systemd.kinds())
    first_ready = next(m for _, m in systemd.messages if m.startswith("READY=1"))
    assert "STATUS=outbox 0 pending" in first_ready
    assert agent.health_port is not None  # READY came after the listener was bound

    agent.reload()
    await until(lambda: agent.reloads == 1)
    await until(lambda: systemd.kinds().count("READY") == 2)
    agent.stop()
    await asyncio.wait_for(task, 10)
    await until(lambda: "STOPPING" in systemd.kinds())
    kinds = [k for k in systemd.kinds() if k in ("READY", "RELOADING", "STOPPING")]
    assert kinds == ["READY", "RELOADING", "READY", "STOPPING"]
    reloading = next(m for _, m in systemd.messages if m.startswith("RELOADING=1"))
    assert "MONOTONIC_USEC=" in reloading


async def test_watchdog_pings_stop_while_the_loop_is_blocked(
    tmp_path: Path, hub: Hub, systemd: FakeSystemd
) -> None:
    config = make_config(tmp_path, hub.url)
    agent = Agent(config, notifier=notifier(systemd, watchdog_usec=200_000))
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await until(lambda: len(systemd.times("WATCHDOG")) >= 3)
        blocked_from = time.monotonic()
        time.sleep(1.0)  # noqa: ASYNC251 - the point: a wedged event loop, nothing else can run
        blocked_until = time.monotonic()
        await until(lambda: any(t > blocked_until for t in systemd.times("WATCHDOG")))
        during = [t for t in systemd.times("WATCHDOG") if blocked_from + 0.05 < t < blocked_until]
        assert during == []

        # A wedged state store (its thread stuck) with a free loop must stop the pings too.
        state = agent._state
        stuck = asyncio.get_running_loop().run_in_executor(state._executor, time.sleep, 1.0)
        stuck_from = time.monotonic()
        await stuck
        stuck_until = time.monotonic()
        quiet = [t for t in systemd.times("WATCHDOG") if stuck_from + 0.15 < t < stuck_until]
        assert quiet == []
        await until(lambda: any(t > stuck_until for t in systemd.times("WATCHDOG")))
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)


def _write_config(
    path: Path, hub_url: str, *, batch_items: int, broken: bool = False, store_extra: str = ""
) -> None:
    (path.parent / "catalog").mkdir(exist_ok=True)
    path.write_text(
        f"""
[agent]
id = "reload-agent"
state_dir = "state"
[hub]
url = "{hub_url}"
token = "{TOKEN}"
batch_max_items = {batch_items}
batch_linger = "0s"
{"batch_max_itemz = 3" if broken else ""}
[health]
listen = "127.0.0.1:0"
{JSONDIR_STORE}{store_extra}""",
        encoding="utf-8",
    )


@contextlib.asynccontextmanager
async def reloadable_agent(path: Path, hub_url: str) -> AsyncIterator[Agent]:
    """An agent running from the file `path` (batch_max_items 50 at first), stopped on exit."""
    _write_config(path, hub_url, batch_items=50)
    agent = Agent(load_config(path))
    ready = asyncio.Event()
    task = asyncio.create_task(agent.run(ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 20)


async def test_reload_keeps_old_config_on_error_and_applies_a_valid_one(
    tmp_path: Path, hub: Hub
) -> None:
    path = tmp_path / "agent.toml"
    async with reloadable_agent(path, hub.url) as agent:
        assert agent.shipper is not None
        stop_feeding = asyncio.Event()

        async def feed() -> None:  # shipping is under way through both reloads
            i = 0
            while not stop_feeding.is_set():
                i += 1
                write_product(tmp_path / "catalog", make_product(i))
                write_spool(tmp_path / "spool", spool_event("product.updated", str(i)))
                await asyncio.sleep(0.01)

        feeder = asyncio.create_task(feed())
        try:
            await until(lambda: hub.products("main"), what="shipping under way", every=0.05)
            with capture_logs() as logs:
                _write_config(path, hub.url, batch_items=7, broken=True)
                agent.reload()
                await until(lambda: any(e["event"] == "config_reload_rejected" for e in logs))
            rejected = next(e for e in logs if e["event"] == "config_reload_rejected")
            assert any("batch_max_itemz" in p for p in rejected["problems"])
            assert agent.shipper.settings.batch_max_items == 50  # old config kept
            assert agent.metrics.value("bridge_config_reloads_total", outcome="rejected") >= 1

            # A valid file is picked up by the file watcher alone, no signal needed.
            _write_config(path, hub.url, batch_items=7)
            await until(lambda: agent.reloads >= 1)
            assert agent.shipper.settings.batch_max_items == 7
            shipped = len(await hub.products("main"))

            async def shipping_goes_on() -> bool:
                return len(await hub.products("main")) > shipped

            await until(shipping_goes_on, what="shipping after the reload", every=0.05)
        finally:
            stop_feeding.set()
            await feeder
            await until(lambda: not list((tmp_path / "spool" / "incoming").glob("*.json")))
    at_hub = await hub.products("main")
    written = {p.stem for p in (tmp_path / "catalog").glob("*.json")}
    assert written <= set(at_hub), f"lost across reloads: {sorted(written - set(at_hub))[:5]}"


async def test_reloads_and_runs_close_the_http_clients_they_no_longer_need(
    tmp_path: Path, hub: Hub
) -> None:
    path = tmp_path / "agent.toml"
    async with reloadable_agent(path, hub.url) as agent:
        state = agent._state

        async def imported() -> bool:  # the first import, on a client of its own
            return not await state.open_runs()

        await until(imported, what="the first import to finish", every=0.05)
        steady = list(agent._http_clients)
        assert len(steady) == 2  # the hub's and the store's; the import run's is closed
        store_client = agent._stores["main"].http
        assert store_client is not None
        for n in range(5):  # hub settings only: the store is not rebuilt
            _write_config(path, hub.url, batch_items=10 + n)
            agent.reload()
            await until(lambda n=n: agent.reloads >= n + 1)
        assert agent._http_clients == steady
        _write_config(path, hub.url, batch_items=10, store_extra="concurrency = 2\n")
        agent.reload()
        await until(lambda: agent.reloads >= 6)
        await until(lambda: store_client.is_closed)
        replacement = agent._stores["main"].http
        assert replacement is not None and not replacement.is_closed
        assert len(agent._http_clients) == 2
    assert all(c.is_closed for c in steady if c is not store_client)


async def test_logs_never_contain_a_configured_secret(tmp_path: Path, hub_process: str) -> None:
    secrets = {
        "token": "tok-SECRET-7f3a9b2c",
        "webhook_secret": "whsec-SECRET-11aa22bb",
    }
    (tmp_path / "catalog").mkdir()
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "main-webhook-secret").write_text(secrets["webhook_secret"])
    config = tmp_path / "agent.toml"
    port = free_port()
    config.write_text(
        f"""
[agent]
id = "secret-agent"
state_dir = "state"
log_level = "debug"
[hub]
url = "{hub_process}"
token = "${{HUB_TOKEN}}"
[health]
listen = "127.0.0.1:{port}"
{JSONDIR_STORE}""",
        encoding="utf-8",
    )
    write_product(tmp_path / "catalog", make_product(1))
    write_spool(tmp_path / "spool", spool_event("product.updated", "1"))
    env = {**os.environ, "HUB_TOKEN": secrets["token"], "CREDENTIALS_DIRECTORY": str(creds)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge_agent", "--config", str(config), "--log-format", "json",
        "--log-level", "debug", "run",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    lines: list[str] = []

    async def collect(stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        async for line in stream:
            lines.append(line.decode())  # noqa: PERF401 - read as they come, not at the end

    def logged(*events: str) -> bool:
        return any(event in line for line in lines for event in events)

    readers = [asyncio.create_task(collect(proc.stdout)), asyncio.create_task(collect(proc.stderr))]
    try:
        # The hub refuses the token: the auth failure path runs, and is logged. The agent is
        # running then, its SIGHUP handler in place.
        await until(
            lambda: logged("hub_auth_failed", "component_failing"), 30, what="the auth failure"
        )
        config.write_text(config.read_text() + f'\n[oops]\nkey = "{secrets["token"]}"\n')
        proc.send_signal(signal.SIGHUP)  # reload with a broken file that quotes the secret
        await until(lambda: logged("config_reload_rejected"), 30, what="the rejected reload")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)
        await asyncio.gather(*readers)
    text = "".join(lines)
    assert "hub_auth_failed" in text or "component_failing" in text, text[-2000:]
    assert "config_reload_rejected" in text
    for name, value in secrets.items():
        assert value not in text, f"{name} leaked into the logs"


@pytest.fixture
def hub_process(tmp_path: Path) -> Iterator[str]:
    """A reference hub in its own process, with a token the agent under test does not have."""
    port = free_port()
    token_file = tmp_path / "hub-token"
    token_file.write_text("the-real-hub-token")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge_agent", "--log-format", "json", "hub", "--listen",
         f"127.0.0.1:{port}", "--db", str(tmp_path / "hub.sqlite"), "--token-file",
         str(token_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            assert time.monotonic() < deadline, "hub did not start"
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(20)
