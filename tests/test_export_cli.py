"""`bridge-agent export` end to end: a real process, a real state directory and agent.toml.

The command reads the state read-only (the agent may be running: a writer holds the database
while it exports), writes the file atomically, says a one-line summary and the invalid feed
items on stderr, and with `--since last` records where the next export of the name starts.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bridge_agent.export import atomic_file, mark_key
from bridge_agent.model import Change
from bridge_agent.store import DB_NAME, StateStore
from bridge_agent.testing.catalog import make_product

ROOT = Path(__file__).resolve().parents[1]


def config_in(tmp_path: Path) -> Path:
    (tmp_path / "catalog").mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(
        """
[agent]
id = "export-agent"
state_dir = "state"
[hub]
url = "http://127.0.0.1:9"
token = "hub-token-for-export-tests"
[health]
listen = "127.0.0.1:9"
[[stores]]
id = "main"
platform = "jsondir"
url = "https://shop.example/"
catalog_dir = "catalog"
""",
        encoding="utf-8",
    )
    return config


def run(config: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "bridge_agent", "--config", str(config), "export", *args],
        capture_output=True, timeout=60, cwd=ROOT, env=dict(os.environ),
    )  # fmt: skip


def record(state_dir: Path, changes: list[tuple[int, int | None]]) -> None:
    async def write() -> None:
        async with StateStore.open(state_dir) as state:
            now = int(time.time() * 1000)
            await state.record([
                Change("main", str(i), None if rev is None else make_product(i, revision=rev),
                       "poll", now)
                for i, rev in changes
            ])  # fmt: skip

    asyncio.run(write())


def test_export_to_files_and_stdout(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    state_dir = tmp_path / "state"
    record(state_dir, [(i, 0) for i in range(30)])
    target = tmp_path / "out" / "feed.xml"
    target.parent.mkdir()
    target.write_text("the previous feed")
    # The agent running: its connection holds a write transaction while the export reads.
    agent = sqlite3.connect(state_dir / DB_NAME, isolation_level=None)
    agent.execute("BEGIN IMMEDIATE")
    agent.execute("UPDATE meta SET value=value WHERE key='next_seq'")
    result = run(config, "--store", "main", "--format", "xml", "-o", str(target))
    agent.execute("COMMIT")
    agent.close()
    assert result.returncode == 0, result.stderr
    stderr = result.stderr.decode()
    no_image = [i for i in range(30) if not make_product(i).images]
    items = ET.parse(target).getroot().findall("./channel/item")
    assert len(items) == sum(len(make_product(i).variants) or 1 for i in range(30)
                             if i not in no_image)  # fmt: skip
    summary = stderr.splitlines()[0]
    assert summary.startswith(f"export main-xml: {30 - len(no_image)} product(s)")
    refused = sum(len(make_product(i).variants) or 1 for i in no_image)  # feed items
    assert f"not exported {refused} ({refused} no image)" in summary
    assert f"{target.stat().st_size / 1024:.1f} KB xml" in summary
    assert f"not exported ({refused}):" in stderr
    assert f"  {no_image[0]}: no image" in stderr
    assert "  10 variant 10-S: no image" in stderr  # a variant is an item of its own
    assert [p.name for p in target.parent.iterdir()] == ["feed.xml"]  # no temporary left
    channel = ET.parse(target).getroot().find("./channel")
    assert channel is not None and channel.findtext("link") == "https://shop.example"

    fields = ("--fields", "basic", "--fields", "seo_title")
    result = run(config, "--store", "main", "--format", "csv", *fields,
                 "--filter", "category=Bags", "--bom", "-o", "-")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(result.stdout.decode("utf-8-sig"), newline="")))
    assert {r["id"] for r in rows} == {str(i) for i in range(30) if i % 4 == 2}
    assert "seo_title" in rows[0] and "image_alt" not in rows[0]

    xlsx = tmp_path / "out" / "catalog.xlsx"
    result = run(config, "--store", "main", "--format", "xlsx", "-o", str(xlsx))
    assert result.returncode == 0, result.stderr
    assert xlsx.read_bytes()[:2] == b"PK"


def test_since_last_records_the_mark_and_lists_changes(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    state_dir = tmp_path / "state"
    record(state_dir, [(i, 0) for i in range(10)])
    out = tmp_path / "changes.jsonl"
    args = ("--store", "main", "--format", "jsonl", "--since", "last", "--name", "nightly",
            "-o", str(out))  # fmt: skip
    first = run(config, *args)
    assert first.returncode == 0, first.stderr
    assert len(out.read_text().splitlines()) == 10
    record(state_dir, [(4, 1), (6, None)])
    second = run(config, *args)
    assert second.returncode == 0, second.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["id"], r.get("deleted", False)) for r in got] == [("4", False), ("6", True)]
    assert "1 product(s)" in second.stderr.decode() and "1 deleted" in second.stderr.decode()

    async def mark() -> str | None:
        async with StateStore.open(state_dir, read_only=True) as state:
            return await state.meta(mark_key("nightly"))

    assert asyncio.run(mark()) is not None
    # Without --name or --since last, nothing is written to the state.
    plain = run(config, "--store", "main", "--format", "json", "-o", str(tmp_path / "all.json"))
    assert plain.returncode == 0
    assert asyncio.run(_meta_keys(state_dir)) == {mark_key("nightly")}


async def _meta_keys(state_dir: Path) -> set[str]:
    db = sqlite3.connect(state_dir / DB_NAME)
    try:
        return {k for (k,) in db.execute("SELECT key FROM meta WHERE key LIKE 'export:%'")}
    finally:
        db.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--store", "nope", "--format", "csv", "-o", "-"), "no store 'nope'"),
        (("--store", "main", "--format", "csv", "--fields", "colour", "-o", "-"),
         "unknown field(s) colour"),
        (("--store", "main", "--format", "csv", "--filter", "status=gone", "-o", "-"),
         "bad status gone"),
        (("--store", "main", "--format", "csv", "--since", "yesterday", "-o", "-"),
         "bad --since 'yesterday'"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    config = config_in(tmp_path)
    record(tmp_path / "state", [(1, 0)])
    result = run(config, *args)
    assert result.returncode == 2
    assert message in result.stderr.decode()


def test_a_failed_export_leaves_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "feed.csv"
    target.write_text("previous")

    def fail() -> None:
        with atomic_file(target) as stream:
            stream.write(b"half a file")
            raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        fail()
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["feed.csv"]
    with atomic_file(target) as stream:
        stream.write(b"new")
    assert target.read_text() == "new"
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_a_reader_that_goes_away_fails_the_export_quietly(tmp_path: Path, fmt: str) -> None:
    """`-o - | head`: a file cut short is a failed export (non-zero, no mark), said in one
    line, without openpyxl's "Exception ignored" noise from the abandoned workbook."""
    config = config_in(tmp_path)
    record(tmp_path / "state", [(i, 0) for i in range(600)])  # far over a pipe's 64 KB
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge_agent", "--config", str(config), "export", "--store",
         "main", "--format", fmt, "--since", "last", "--name", "piped", "-o", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=dict(os.environ),
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    assert len(process.stdout.read(10)) == 10
    process.stdout.close()
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.wait(timeout=60) != 0, stderr
    assert "stdout was closed before the export ended" in stderr
    assert "Exception ignored" not in stderr and "Traceback" not in stderr, stderr
    assert asyncio.run(_meta_keys(tmp_path / "state")) == set()  # no mark for a cut file


def test_since_the_first_day_datetime_knows_is_everything(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    record(tmp_path / "state", [(1, 0), (2, 0)])
    out = tmp_path / "all.csv"
    result = run(config, "--store", "main", "--format", "csv", "--since", "0001-01-01T00:00",
                 "-o", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = csv.DictReader(io.StringIO(out.read_text(encoding="utf-8")))
    assert [r["id"] for r in rows] == ["1", "2"]


def test_a_user_who_cannot_write_the_state_is_told_before_the_file(tmp_path: Path) -> None:
    """`--since last` saves a mark: a user who can read the state but not write it is refused
    up front, with no file made (before: the file was written, then a misleading error)."""
    base = Path(tempfile.mkdtemp(prefix="export-ro-"))  # not under pytest's 0700 directory
    try:
        config = config_in(base)
        record(base / "state", [(1, 0)])
        out_dir = base / "out"
        out_dir.mkdir()
        if os.geteuid() == 0:  # root writes anything: run the export as nobody instead
            if shutil.which("setpriv") is None:
                pytest.skip("setpriv is needed to drop root")
            for path in (base, *base.rglob("*")):
                path.chmod(0o755 if path.is_dir() else 0o644)
            out_dir.chmod(0o777)
            prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        else:
            (base / "state").chmod(0o555)
            prefix = []
        result = subprocess.run(
            [*prefix, sys.executable, "-m", "bridge_agent", "--config", str(config), "export",
             "--store", "main", "--format", "csv", "--since", "last", "--name", "ro",
             "-o", str(out_dir / "x.csv")],
            capture_output=True, timeout=60, cwd=ROOT, env=dict(os.environ),
        )  # fmt: skip
        assert result.returncode == 1, result.stderr
        stderr = result.stderr.decode()
        assert "not writable by this user" in stderr and "--since last" in stderr, stderr
        assert list(out_dir.iterdir()) == []
    finally:
        (base / "state").chmod(0o755)
        shutil.rmtree(base)
