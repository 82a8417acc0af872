"""The package as an operator installs it: a wheel built from this repository, in a fresh venv.

The wheel must carry everything `bridge-agent` needs at run time (no reliance on the source tree),
and its console script must validate the shipped `agent.toml` (exit 0) and refuse a broken one
(exit 78), exactly as `ExecStartPre=bridge-agent validate` does under systemd.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _uv() -> str | None:
    found = os.environ.get("UV") or shutil.which("uv")  # `uv run` sets $UV to itself
    local = ROOT / ".tools" / "bin" / "uv"
    return found or (str(local) if local.exists() else None)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_wheel_installs_in_a_fresh_venv_and_validates(tmp_path: Path) -> None:
    uv = _uv()
    if uv is None:
        pytest.fail("uv is needed to build the wheel; `make test` installs it into .tools/")
    dist = tmp_path / "dist"
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(dist), str(ROOT)],
        check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    (wheel,) = dist.glob("bridge_agent-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "bridge_agent/hub/app.py" in names
    assert "bridge_agent/platforms/jsondir/adapter.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "bridge-agent = bridge_agent.cli:main" in text
    assert "jsondir = bridge_agent.platforms.jsondir:JsonDir" in text

    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--python", sys.executable, str(venv)], check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    subprocess.run(
        [uv, "pip", "install", "--python", str(venv / "bin" / "python"), str(wheel)],
        check=True, capture_output=True, timeout=240,
    )  # fmt: skip
    binary = venv / "bin" / "bridge-agent"
    assert binary.exists()

    work = tmp_path / "site"
    work.mkdir()
    shutil.copy(ROOT / "agent.toml", work / "agent.toml")
    env = {**os.environ, "BRIDGE_HUB_TOKEN": "install-test-token"}
    env.pop("VIRTUAL_ENV", None)
    ok = subprocess.run(
        [str(binary), "validate"], cwd=work, env=env, capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout

    (work / "agent.toml").write_text("[agent]\nid = 'x'\n[hub]\nurl = 'ftp://nope'\n")
    broken = subprocess.run(
        [str(binary), "validate"], cwd=work, env=env, capture_output=True, text=True, timeout=60
    )
    assert broken.returncode == 78
    assert "hub" in broken.stderr
