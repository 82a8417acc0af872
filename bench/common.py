"""Helpers the benchmarks share: loopback ports, the hub process, /proc CPU, text tables.

Imported as `common` by the scripts in this folder (run as `python bench/<name>.py`, which puts
this folder first on `sys.path`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path


def free_port() -> int:
    """A port nobody listens on now, on loopback (benchmarks talk only to 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def say(text: str) -> None:
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
