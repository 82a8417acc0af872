"""The shipped systemd unit: it loads, keeps its hardening, and matches the agent's contract.

`systemd-analyze` (systemd >= 250, for `security --offline=`) checks the file without a running
systemd: `verify` for unknown keys, bad values and missing executables, `security --offline=yes`
for the exposure score, which must stay at 2.0 or lower. When the tool is missing the checks are
skipped on a developer machine but fail under CI (`CI` set), so CI never passes them silently; on
Debian and Ubuntu the tool comes with the `systemd` package.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge_agent.config import DEFAULT_PATHS, AgentSettings, load_config

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "bridge-agent.service"
UNIT_NAME = UNIT.name
MAX_EXPOSURE = 2.0
MIN_SYSTEMD = 250  # `systemd-analyze security --offline=` and `--threshold=`
EXPOSURE_LINE = re.compile(r"Overall exposure level for (\S+): (\d+(?:\.\d+)?)")


def directives(section: str = "Service") -> list[tuple[str, str]]:
    """(key, value) pairs of one section of the unit, in order, comments left out."""
    found: list[tuple[str, str]] = []
    current = None
    for raw in UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            continue
        if current == section:
            key, _, value = line.partition("=")
            found.append((key.strip(), value.strip()))
    return found


def values(key: str, section: str = "Service") -> list[str]:
    return [v for k, v in directives(section) if k == key]


def seconds(text: str) -> float:
    """A systemd time span as used in the unit ("45s", "1min 30s", "500ms", or bare seconds)."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", text)
    assert parts, f"not a time span: {text!r}"
    return sum(float(n) * units[u or "s"] for n, u in parts)


# -- what the agent relies on (no systemd needed) -----------------------------------------------


def test_unit_runs_the_agent_with_readiness_watchdog_and_validation() -> None:
    config = str(DEFAULT_PATHS[-1])  # /etc/bridge-agent/agent.toml
    assert values("Type") == ["notify"]
    assert values("NotifyAccess") == ["main"]
    assert seconds(values("WatchdogSec")[0]) == 30
    (pre,) = values("ExecStartPre")
    (start,) = values("ExecStart")
    assert pre.split() == ["bridge-agent", "--config", config, "validate"]
    assert start.split()[:3] == ["bridge-agent", "--config", config]
    assert start.split()[-1] == "run"
    # Reload validates first: a bad file fails the reload and the agent never sees SIGHUP.
    assert values("ExecReload") == [
        f"bridge-agent --config {config} validate",
        "/bin/kill -HUP $MAINPID",
    ]
    assert values("Restart") == ["on-failure"]
    assert "78" in values("RestartPreventExitStatus")[0].split()  # EX_CONFIG does not heal


def test_unit_gives_the_drain_time_to_finish_before_sigkill() -> None:
    drain = AgentSettings(id="shop-01", state_dir=Path("state")).drain_timeout  # the default
    assert values("KillSignal") == ["SIGTERM"]
    assert seconds(values("TimeoutStopSec")[0]) >= drain + 10


def test_unit_keeps_state_private_and_secrets_out_of_the_environment() -> None:
    assert values("UMask") == ["0077"]
    assert values("StateDirectory") == ["bridge-agent"]
    assert values("StateDirectoryMode") == ["0700"]
    assert values("ConfigurationDirectory") == ["bridge-agent"]
    assert values("ReadWritePaths") == ["-/var/spool/bridge-agent"]
    assert values("CapabilityBoundingSet") == [""]
    assert values("AmbientCapabilities") == [""]
    assert not [v for v in values("Environment") if "TOKEN" in v or "SECRET" in v]
    credentials = dict(v.split(":", 1) for v in values("LoadCredential"))
    assert credentials == {"hub-token": "/etc/bridge-agent/credentials/hub-token"}


def test_the_units_credential_names_are_the_ones_the_agent_reads(tmp_path: Path) -> None:
    # What LoadCredential= puts in $CREDENTIALS_DIRECTORY must satisfy the loader unaided.
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name in dict(v.split(":", 1) for v in values("LoadCredential")):
        (credentials / name).write_text(f"value-of-{name}\n", encoding="utf-8")
    config_file = tmp_path / "agent.toml"
    config_file.write_text(
        '[agent]\nid = "shop-01"\nstate_dir = "state"\n'
        '[hub]\nurl = "https://hub.example.com"\n'
        '[[stores]]\nid = "main"\nplatform = "jsondir"\nurl = "http://127.0.0.1/"\n'
        'catalog_dir = "catalog"\n',
        encoding="utf-8",
    )
    config = load_config(config_file, env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert config.hub.token.reveal() == "value-of-hub-token"


# -- the agent keeps the unit's promises (systemd is played by the test) ------------------------


class NotifySocket:
    """What systemd listens on for sd_notify: a datagram socket, here in the abstract namespace."""

    def __init__(self) -> None:
        self.name = f"@bridge-agent-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + self.name[1:].encode())
        self.received: list[str] = []

    def expect(self, line: str, *, timeout: float = 20.0, count: int = 1) -> None:
        """Wait until `line` has arrived `count` times in all (e.g. "READY=1")."""
        deadline = time.monotonic() + timeout
        while self.received.count(line) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {line!r} x{count} from the agent; got {self.received}")
            self.sock.settimeout(left)
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.received += message.splitlines()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    sock = NotifySocket()
    yield sock
    sock.close()


@pytest.fixture
def agent_under_systemd(
    tmp_path: Path, notify_socket: NotifySocket
) -> Iterator[subprocess.Popen[str]]:
    """`bridge-agent run` started the way the unit starts it: notify socket, 2 s watchdog,
    the hub token from $CREDENTIALS_DIRECTORY/hub-token, no token in agent.toml. No hub
    listens: the agent must be ready and alive anyway."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "hub-token").write_text("unit-test-token\n", encoding="utf-8")
    (tmp_path / "catalog").mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(
        '[agent]\nid = "unit-test"\nstate_dir = "state"\ndrain_timeout = "2s"\n'
        '[hub]\nurl = "http://127.0.0.1:9"\n'
        '[health]\nlisten = "127.0.0.1:0"\n'
        '[[stores]]\nid = "main"\nplatform = "jsondir"\nurl = "http://127.0.0.1/"\n'
        'catalog_dir = "catalog"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    env |= {
        "NOTIFY_SOCKET": notify_socket.name,
        "WATCHDOG_USEC": "2000000",
        "CREDENTIALS_DIRECTORY": str(credentials),
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge_agent", "--config", str(config), "--log-format", "json",
         "run"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


@pytest.mark.skipif(sys.platform != "linux", reason="systemd and its notify socket are Linux-only")
def test_agent_keeps_the_units_notify_watchdog_reload_and_stop_contract(
    agent_under_systemd: subprocess.Popen[str], notify_socket: NotifySocket
) -> None:
    # Type=notify: READY=1, or systemd fails the start. WatchdogSec=: pings at half the period.
    notify_socket.expect("READY=1")
    notify_socket.expect("WATCHDOG=1", count=2, timeout=5.0)
    # ExecReload= ends with SIGHUP: the agent reloads and goes on. (A process that died of
    # SIGHUP would stay dead: systemd counts SIGHUP as a clean exit, Restart=on-failure ignores it.)
    agent_under_systemd.send_signal(signal.SIGHUP)
    notify_socket.expect("RELOADING=1", timeout=10.0)
    notify_socket.expect("READY=1", count=2, timeout=10.0)
    assert agent_under_systemd.poll() is None, "the agent stopped on SIGHUP"
    # KillSignal=SIGTERM: a graceful stop, announced to systemd, well within TimeoutStopSec.
    agent_under_systemd.send_signal(signal.SIGTERM)
    notify_socket.expect("STOPPING=1")
    _, stderr = agent_under_systemd.communicate(timeout=30)
    assert agent_under_systemd.returncode == 0, stderr


# -- systemd-analyze --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    """The path of a `systemd-analyze` new enough for offline checks, or skip/fail (see top)."""
    tool = shutil.which("systemd-analyze")
    problem = None
    if tool is None:
        problem = "systemd-analyze is not installed (apt-get install systemd)"
    else:
        first = _run([tool, "--version"]).stdout.splitlines()[:1]
        match = re.match(r"systemd (\d+)", first[0] if first else "")
        if match is None or int(match.group(1)) < MIN_SYSTEMD:
            found = first[0] if first else "no version"
            problem = f"systemd-analyze {found!r} is older than systemd {MIN_SYSTEMD}"
    if problem is not None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{problem}: CI must check the systemd unit, install systemd-analyze")
        pytest.skip(f"{problem}; the unit checks run in CI")
    assert tool is not None
    return tool


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "cat", "LC_ALL": "C.UTF-8"}
    return subprocess.run(
        argv, capture_output=True, text=True, encoding="utf-8", errors="replace",
        timeout=60, cwd=cwd, env=env,
    )  # fmt: skip


def test_unit_passes_systemd_analyze_verify(systemd_analyze: str, tmp_path: Path) -> None:
    # `verify` insists that every Exec command exists here. bridge-agent is not installed on a CI
    # machine, so the copy runs a stub in its place; /bin/kill comes from procps, which a minimal
    # image may lack. Everything else is the shipped file, byte for byte.
    stub = tmp_path / "bin" / "stub"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stub.chmod(0o755)
    text = re.sub(
        r"^(Exec\w+=[-@:+!]*)bridge-agent(?=\s)", rf"\g<1>{stub}", UNIT.read_text("utf-8"),
        flags=re.MULTILINE,
    )  # fmt: skip
    if not os.access("/bin/kill", os.X_OK):
        text = text.replace("=/bin/kill ", f"={stub} ")
    copy = tmp_path / "unit" / UNIT_NAME
    copy.parent.mkdir()
    copy.write_text(text, encoding="utf-8")

    result = _run([systemd_analyze, "verify", "--recursive-errors=no", "--man=no", str(copy)])

    output = result.stdout + result.stderr
    ours = [line for line in output.splitlines() if UNIT_NAME in line]
    assert result.returncode == 0, f"systemd-analyze verify failed:\n{output}"
    assert not ours, "systemd-analyze verify warns about the unit:\n" + "\n".join(ours)


def test_unit_exposure_is_at_most_2(systemd_analyze: str, tmp_path: Path) -> None:
    copy = tmp_path / UNIT_NAME
    shutil.copyfile(UNIT, copy)
    threshold = int(MAX_EXPOSURE * 10)  # --threshold is on the 0..100 scale

    result = _run(
        [systemd_analyze, "security", "--offline=yes", f"--threshold={threshold}", "--no-pager",
         str(copy)],
        cwd=tmp_path,
    )  # fmt: skip

    output = result.stdout + result.stderr
    match = EXPOSURE_LINE.search(output)
    assert match is not None, f"no exposure level in systemd-analyze output:\n{output}"
    exposure = float(match.group(2))
    findings = "\n".join(line for line in output.splitlines() if line.startswith("✗"))
    assert exposure <= MAX_EXPOSURE, f"exposure {exposure} > {MAX_EXPOSURE}:\n{findings}"
    assert result.returncode == 0, f"systemd-analyze security failed:\n{output}"
