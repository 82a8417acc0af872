"""Helpers the benchmarks share: loopback ports, child processes, the simulator and hub processes,
the agent's configuration, /proc CPU and memory, py-spy profiles, text tables.

Every child process is stopped (SIGTERM, then SIGKILL) when its `with` block ends, also on errors,
so a benchmark that fails or is interrupted leaves nothing running. Imported as `common` by the
scripts in this folder (run as `python bench/<name>.py`, which puts this folder first on
`sys.path`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiohttp import web

READY_TIMEOUT = 30.0  # seconds for a simulator to answer, on top of its catalog generation


def free_port() -> int:
    """A port nobody listens on now, on loopback (benchmarks talk only to 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(text: str) -> None:
    """One line of the benchmark's output, flushed at once (progress shows during long runs)."""
    print(text, flush=True)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell: the first left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = (f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), from /proc; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS, VmHWM (peak RSS) ... of a process in MB, from /proc/<pid>/status; {} elsewhere."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.startswith(("Vm", "Rss")):
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0]) / 1024
    return out


# -- child processes -----------------------------------------------------------------------------


@contextlib.contextmanager
def process(
    command: list[str], log_path: Path, *, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with its output in `log_path`; SIGTERM (then SIGKILL) on exit."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=cwd
        )
        try:
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM, and SIGKILL if the process has not exited after `timeout` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=15)


def tail(path: Path, chars: int = 3000) -> str:
    """The end of a child's log, for the error when it exits or hangs."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def wait_http(
    proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float, what: str
) -> httpx.Response:
    """GET `url` until it answers 200; progress every 5 s; fails if the process exits."""
    started = time.monotonic()
    next_note = started + 5.0
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {proc.returncode} before it was ready:\n{tail(log_path)}"
            )
        with contextlib.suppress(httpx.HTTPError):
            reply = httpx.get(url, timeout=2.0)
            if reply.status_code == 200:
                return reply
        if time.monotonic() >= next_note:
            cpu = cpu_seconds(proc.pid)
            rss = memory_mb(proc.pid).get("VmRSS", 0.0)
            say(
                f"  ... waiting for {what}: {time.monotonic() - started:.0f} s,"
                f" CPU {cpu or 0:.1f} s, RSS {rss:.0f} MB"
            )
            next_note += 5.0
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready at {url} after {timeout:.0f} s:\n{tail(log_path)}")


@contextlib.contextmanager
def spy(
    out: Path | None, pid: int, workdir: Path, *, script: str, what: str, idle: bool = False
) -> Iterator[None]:
    """py-spy record of `pid` while the block runs (when `out` is given); `script` names the
    benchmark in the hint when py-spy is missing, `what` the profile in the line printed after.
    `idle` also samples threads that wait (a sweep spends most of its time waiting on the store)."""
    if out is None:
        yield
        return
    exe = shutil.which("py-spy")
    if exe is None:
        raise RuntimeError(f"--profile needs py-spy: uv run --with py-spy python {script}")
    # A .txt output gets collapsed stacks (one line per stack and its sample count), to grep.
    kind = {".txt": "raw", ".json": "speedscope"}.get(out.suffix, "flamegraph")
    command = [exe, "record", "--threads", *(["--idle"] if idle else []), "--rate", "100"]
    command += ["--format", kind, "-o", str(out), "--pid", str(pid)]
    with process(command, workdir / "py-spy.log") as proc:
        try:
            yield
        finally:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
    say(f"  py-spy profile of {what}: {out}")


# -- the store simulator and the agent -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sim:
    """A store simulator running in its own process, and what its `/__sim/info` said."""

    platform: str
    url: str
    pid: int
    info: dict[str, Any]
    ready_s: float  # process start -> /__sim/info answered (catalog generated, cache warm)

    def connection(self, *, webhooks: bool = False) -> str:
        """The `[[stores]]` lines that point the agent at this simulator (URL and credentials);
        `webhooks` adds the key deliveries are signed with (Shopify: the app's client secret)."""
        if self.platform == "woocommerce":
            return (
                f'url = "{self.info["site_url"]}"\n'
                f'consumer_key = "{self.info["consumer_key"]}"\n'
                f'consumer_secret = "{self.info["consumer_secret"]}"\n'
            )
        if self.platform == "shopify":
            lines = (
                f'url = "{self.info["shop_url"]}"\naccess_token = "{self.info["access_token"]}"\n'
            )
            if webhooks:
                lines += f'webhook_secret = "{self.info["client_secret"]}"\n'
            return lines
        raise ValueError(f"no agent configuration for the {self.platform} simulator")


@contextlib.contextmanager
def simulator(
    workdir: Path, platform: str, *, products: int, latency_ms: float, seed: int
) -> Iterator[Sim]:
    """`bridge-agent simulate <platform>` on a free port, waited for until /__sim/info answers."""
    port = free_port()
    command = [
        sys.executable, "-m", "bridge_agent", "simulate", platform,
        "--products", str(products), "--port", str(port),
        "--latency-ms", str(latency_ms), "--seed", str(seed),
    ]  # fmt: skip
    log_path = workdir / "simulator.log"
    started = time.monotonic()
    with process(command, log_path) as proc:
        url = f"http://127.0.0.1:{port}"
        # Generation takes about 0.7 s per 10 000 products, the JSON warm-up 1.2 s per 10 000
        # (up to its 20 000-item cache), more on a busy machine.
        timeout = READY_TIMEOUT + products / 500
        reply = wait_http(proc, f"{url}/__sim/info", log_path, timeout, "the simulator")
        yield Sim(platform, url, proc.pid, reply.json(), time.monotonic() - started)


def write_agent_config(
    workdir: Path,
    sim: Sim,
    *,
    agent_id: str,
    store_id: str,
    hub_url: str,
    token: str,
    store: str,
    webhook_port: int | None = None,
    webhooks: bool = False,
) -> Path:
    """`<workdir>/agent.toml` (mode 0600) for one store on `sim`, state in `<workdir>/state`.

    The hub token goes to a file beside it (as in production, never inline); health and webhook
    listeners take free loopback ports (the webhook listener `webhook_port` when given, so a
    `webhook_url` in `store` can name it). `store` holds the store's further settings, one per
    line (concurrency, intervals, ...), after its id, platform and connection (with the webhook
    secret when `webhooks`).
    """
    token_file = workdir / "agent-hub-token"
    token_file.write_text(token, encoding="utf-8")
    token_file.chmod(0o600)
    config = f"""\
[agent]
id = "{agent_id}"
state_dir = "state"
drain_timeout = "30s"

[hub]
url = "{hub_url}"
token_file = "agent-hub-token"

[health]
listen = "127.0.0.1:{free_port()}"

[webhooks]
listen = "127.0.0.1:{webhook_port or free_port()}"

[[stores]]
id = "{store_id}"
platform = "{sim.platform}"
{sim.connection(webhooks=webhooks)}{store}"""
    path = workdir / "agent.toml"
    path.write_text(config, encoding="utf-8")
    path.chmod(0o600)
    return path


def agent_command(config: Path) -> list[str]:
    """The agent as in production: `bridge-agent --config <config> --log-format json run`."""
    return [
        sys.executable, "-m", "bridge_agent", "--config", str(config),
        "--log-format", "json", "run",
    ]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Hub:
    """A reference hub running in its own process."""

    url: str
    port: int
    pid: int


@contextlib.contextmanager
def hub_process(workdir: Path, token: str, *, ready_timeout: float = 30.0) -> Iterator[Hub]:
    """`bridge-agent hub` on a free loopback port; terminated (then killed) on exit."""
    token_file = workdir / "hub-token"
    token_file.write_text(token, encoding="utf-8")
    token_file.chmod(0o600)
    port = free_port()
    log_path = workdir / "hub.log"
    command = [
        sys.executable, "-m", "bridge_agent", "hub",
        "--listen", f"127.0.0.1:{port}",
        "--db", str(workdir / "hub.sqlite"),
        "--token-file", str(token_file),
    ]  # fmt: skip
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_healthy(proc, port, log_path, ready_timeout)
            yield Hub(f"http://127.0.0.1:{port}", port, proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def _wait_healthy(proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise RuntimeError(f"hub exited with {proc.returncode} before it was ready:\n{tail}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        with contextlib.suppress(OSError):
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                conn.close()
                return
        conn.close()
        time.sleep(0.05)
    raise RuntimeError(f"hub not healthy on port {port} after {timeout:.0f} s")


# -- a counting reverse proxy --------------------------------------------------------------------

# Headers that belong to one hop (RFC 9110 7.6.1), or that aiohttp sets itself from the body.
HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host",
     "content-length", "proxy-connection"}
)  # fmt: skip


class LoopbackProxy:
    """A reverse proxy on a free loopback port that forwards to `upstream` and lets a subclass
    count what passed (`observe`): what benchmarks put between the agent and a server that does
    not count what they need (bytes per hub route, GraphQL operations and their cost).

    It runs its own event loop in a thread, so the benchmark's blocking calls (a CLI command,
    reading /proc) never hold up the agent's requests. Bodies are read whole and forwarded as
    they came (answers too, undecoded); a connection error upstream (the server gone at
    shutdown) answers 502. A long poll still waiting upstream when the proxy stops is an orphan
    (the agent is stopped first), so shutting down never waits for it.
    """

    name = "proxy"
    max_body = 256 * 1024 * 1024

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()  # subclasses count under it
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)

    def __enter__(self) -> Any:
        self._thread.start()
        if not self._ready.wait(15) or self._failed is not None:
            raise RuntimeError(f"the {self.name} did not start: {self._failed!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def observe(self, request: web.Request, body: bytes, reply: bytes) -> None:
        """One forwarded request with its body and the upstream's answer (override)."""

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by __enter__ if it happens at start-up
            self._failed = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)  # long polls wait long
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
            self._session = session
            app = web.Application(client_max_size=self.max_body)
            app.router.add_route("*", "/{tail:.*}", self._forward)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await runner.cleanup()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_HEADERS]
        try:
            async with self._session.request(
                request.method, self.upstream + request.raw_path, data=body or None, headers=headers
            ) as upstream:
                reply = await upstream.read()
                status = upstream.status
                out = [(k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS]
        except aiohttp.ClientError as exc:  # the server is gone (at shutdown)
            return web.Response(status=502, text=f"{self.name}: {exc}")
        self.observe(request, body, reply)
        response = web.Response(body=reply, status=status)
        for key, value in out:
            response.headers.add(key, value)
        return response
