"""The operators' event log (`bridge-agent log`) and the runs section of `bridge-agent status`.

Real SQLite in a temporary state directory, the command line through `cli.main` as an operator
types it: each filter alone and together, the JSON fields, relative and ISO `--since`, what an
empty answer says, and the line a finished, failed, cancelled, paused or queued run gets.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bridge_agent import cli
from bridge_agent.store import StateStore, events
from bridge_agent.store.events import Event
from tests.conftest import free_port

MINUTE = 60_000


def _config(tmp_path: Path) -> Path:
    for folder in ("catalog-main", "catalog-second"):
        (tmp_path / folder).mkdir()
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""
[agent]
id = "log-agent"
state_dir = "state"
[hub]
url = "http://127.0.0.1:9"
token = "hub-token-Lq02"
[health]
listen = "127.0.0.1:{free_port()}"
[[stores]]
id = "main"
platform = "jsondir"
url = "http://127.0.0.1/"
catalog_dir = "catalog-main"
[[stores]]
id = "second"
platform = "jsondir"
url = "http://127.0.0.1/"
catalog_dir = "catalog-second"
""",
        encoding="utf-8",
    )
    return config


@dataclass
class Log:
    """A state directory holding `EVENTS`, and the command line pointed at it."""

    config: Path
    now: int  # epoch ms the events' ages count from
    capsys: pytest.CaptureFixture[str]

    def run(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = cli.main(["--config", str(self.config), *args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> list[dict[str, Any]]:
        code, out, err = self.run("log", "--json", *args)
        assert code == 0, err
        shown: list[dict[str, Any]] = json.loads(out)
        return shown

    def messages(self, *args: str) -> list[str]:
        return [e["message"] for e in self.json(*args)]


# (minutes ago, level, store, product, HTTP status, action, message), oldest first.
EVENTS = [
    (300, "info", "main", None, None, "import", "import run 1 finished"),
    (180, "error", "main", "42", 503, "import", "product could not be read: busy"),
    (90, "warning", "main", "42", None, "left_filter", "left the filter"),
    (40, "error", "second", "42", 404, "verify", "gone at the store"),
    (20, "critical", "main", "7", 500, "ship", "hub refused the batch"),
    (10, "info", None, None, None, None, "hub reachable again"),
    (5, "error", "main", "7", 422, "verify", "gtin invalid"),
]
ALL = [e[-1] for e in EVENTS]


def _write(state_dir: Path, now: int) -> None:
    batch = [
        Event(at=now - ago * MINUTE, level=level, store=store, product=product, status=status,
              message=message, action=action)
        for ago, level, store, product, status, action, message in EVENTS
    ]  # fmt: skip

    async def write() -> None:
        async with StateStore.open(state_dir) as state:
            # Written in another order than their times: the log orders by time.
            await state.record([], events=batch[3:])
            await state.record([], events=batch[:3])

    asyncio.run(write())


@pytest.fixture
def log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Log:
    config = _config(tmp_path)
    now = int(time.time() * 1000)
    _write(tmp_path / "state", now)
    return Log(config, now, capsys)


def test_each_filter_alone(log: Log) -> None:
    assert log.messages() == ALL  # oldest first
    assert log.messages("--errors") == [ALL[1], ALL[3], ALL[4], ALL[6]]
    assert log.messages("--level", "warning") == [ALL[1], ALL[2], ALL[3], ALL[4], ALL[6]]
    assert log.messages("--store", "second") == [ALL[3]]
    assert log.messages("--product", "42") == [ALL[1], ALL[2], ALL[3]]  # of either store
    assert log.messages("--product", "42", "--product", "7") == [*ALL[1:5], ALL[6]]
    assert log.messages("--since", "1h") == ALL[3:]  # 40 minutes ago and newer
    assert log.messages("--since", "30m") == ALL[4:]
    assert log.messages("--since", "4h") == ALL[1:]
    assert log.messages("--since", "1d") == ALL
    assert log.messages("--limit", "2") == ALL[5:]


def test_filters_combine(log: Log) -> None:
    # --errors narrows --level: the more severe bound wins, in either direction.
    assert log.messages("--errors", "--level", "critical") == [ALL[4]]
    assert log.messages("--errors", "--level", "debug") == log.messages("--errors")
    assert log.messages("--product", "42", "--store", "main") == [ALL[1], ALL[2]]
    assert log.messages("--product", "42", "--errors") == [ALL[1], ALL[3]]
    assert log.messages("--since", "1h", "--errors", "--store", "main") == [ALL[4], ALL[6]]
    assert log.messages("--since", "2h", "--product", "42") == [ALL[2], ALL[3]]
    assert log.messages(
        "--store", "main", "--errors", "--since", "4h", "--product", "7", "--limit", "1"
    ) == [ALL[6]]
    assert log.messages("--store", "main", "--store", "second", "--level", "error") == [
        ALL[1], ALL[3], ALL[4], ALL[6]
    ]  # fmt: skip


def test_since_takes_an_iso_time_in_utc_or_local_time(log: Log) -> None:
    cut = log.now - 100 * MINUTE  # between the events of 180 and 90 minutes ago
    utc = datetime.fromtimestamp(cut / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    local = datetime.fromtimestamp(cut / 1000).strftime("%Y-%m-%dT%H:%M:%S")  # no zone
    assert log.messages("--since", utc) == ALL[2:]
    assert log.messages("--since", local) == ALL[2:]
    # Inclusive: an event exactly at the time asked for is shown.
    exact = datetime.fromtimestamp((log.now - 90 * MINUTE) / 1000, UTC).isoformat()
    assert log.messages("--since", exact) == ALL[2:]


@pytest.mark.parametrize("bad", ["yesterday", "2h30", "-2h", "h", "1y", "2026-13-01"])
def test_a_since_that_is_no_time_is_a_usage_error(
    log: Log, bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--config", str(log.config), "log", f"--since={bad}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "30m, 2h or 1d" in err and "ISO 8601" in err


def test_json_has_every_field_with_the_time_in_utc(log: Log) -> None:
    shown = log.json("--product", "42", "--store", "main")
    assert [set(e) for e in shown] == [
        {"at", "time", "level", "store", "product", "status", "action", "message"}
    ] * 2
    first = shown[0]
    assert first["at"] == log.now - 180 * MINUTE
    assert (first["level"], first["store"], first["product"], first["status"]) == (
        "error", "main", "42", 503
    )  # fmt: skip
    assert (first["action"], first["message"]) == ("import", ALL[1])
    assert first["time"].endswith("Z")
    parsed = datetime.fromisoformat(first["time"].replace("Z", "+00:00"))
    assert int(parsed.timestamp() * 1000) == first["at"]  # the same moment, to the millisecond
    assert shown[1]["action"] == "left_filter" and shown[1]["status"] is None
    anonymous = log.json("--since", "15m")[0]
    assert (anonymous["store"], anonymous["product"], anonymous["action"]) == (None, None, None)


def test_a_line_shows_time_level_where_status_action_and_message(log: Log) -> None:
    code, out, _ = log.run("log", "--product", "42")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3
    local = datetime.fromtimestamp((log.now - 180 * MINUTE) / 1000).strftime("%Y-%m-%d %H:%M:%S")
    assert lines[0] == f"{local} error   main/42 [503] import: product could not be read: busy"
    assert lines[1].endswith(" warning main/42 left_filter: left the filter")
    assert lines[2].endswith(" error   second/42 [404] verify: gone at the store")
    code, out, _ = log.run("log", "--since", "15m", "--level", "info", "--limit", "1")
    assert out.splitlines()[0].endswith(" error   main/7 [422] verify: gtin invalid")
    code, out, _ = log.run("log", "--since", "15m")
    assert out.splitlines()[0].endswith(" info    hub reachable again")


def test_an_empty_answer_says_what_was_asked(log: Log) -> None:
    since = log.now - 30 * MINUTE
    code, out, _ = log.run("log", "--errors", "--store", "second", "--since", "30m")
    assert code == 0
    assert out.startswith("no error events for store second since ")
    shown = datetime.strptime(out[len("no error events for store second since ") :][:19],
                              "%Y-%m-%d %H:%M:%S")  # fmt: skip
    assert abs(shown.timestamp() * 1000 - since) < 5 * MINUTE  # local time, as lines show
    code, out, _ = log.run("log", "--product", "9", "--product", "8", "--store", "main")
    assert out.startswith("no events at level info or above for products 9, 8 of store main in ")
    code, out, _ = log.run("log", "--errors", "--level", "critical", "--product", "42")
    assert out.startswith("no critical events for product 42 in ")


def test_an_unknown_store_is_a_usage_error(log: Log) -> None:
    code, out, err = log.run("log", "--store", "main", "--store", "nope", "--errors")
    assert code == 2
    assert out == ""
    assert "no store nope" in err and "main, second" in err


# -- the query: one statement, through an index, however long the log --------------------------


class _Recording:
    """A connection that remembers the statements run on it, to ask SQLite for their plans."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        self.statements.append((sql, params))
        return self.db.execute(sql, params)


@pytest.fixture
def db(log: Log) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(log.config.parent / "state" / "state.sqlite")
    yield connection
    connection.close()


def _plan(db: sqlite3.Connection, **filters: Any) -> tuple[list[Event], list[str]]:
    recording = _Recording(db)
    found = events.newest(
        recording,  # type: ignore[arg-type]
        filters.pop("limit", 50),
        filters.pop("levels", None),
        filters.pop("stores", None),
        **filters,
    )
    [(sql, params)] = recording.statements  # one query
    details = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, params)]
    return found, details


def test_the_query_is_one_indexed_statement(log: Log, db: sqlite3.Connection) -> None:
    found, plan = _plan(db, products=["42"])
    assert [e.message for e in found] == [ALL[3], ALL[2], ALL[1]]  # newest first
    assert any("events_product (store=? AND product=?)" in d for d in plan), plan
    assert "SCAN events" not in plan, plan  # never the whole table

    found, plan = _plan(db, products=["7"], stores=["main"], since=log.now - 10 * MINUTE)
    assert [e.message for e in found] == [ALL[6]]
    assert any("events_product (store=? AND product=?)" in d for d in plan), plan

    # Without a product: newest first along `events_at`, stopping at `since` or `limit`.
    for filters in (
        {},
        {"since": log.now - 60 * MINUTE},
        {"stores": ["main"], "levels": ["error", "critical"], "limit": 2},
    ):
        found, plan = _plan(db, **dict(filters))
        assert any("events_at" in d for d in plan), (filters, plan)
        assert not any("TEMP B-TREE" in d for d in plan), (filters, plan)  # no sort of them all
    assert [e.message for e in found] == [ALL[6], ALL[4]]


# -- status: the runs section ----------------------------------------------------------------


def test_status_shows_each_run_with_progress_report_error_and_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    import_report = {
        "imported": 1200,
        "pages": 12,
        "failed": 3,
        "failures": [{"product": "9", "status": 500, "message": "boom"}] * 3,
        "warnings": {
            "no_image": 5,
            "no_price": 0,
            "duplicate_sku": [{"sku": "HOOD-01", "products": 2}],
            "images": {"checked": 1200, "unreachable": 2, "oversized": 1, "not_checked": 0,
                       "examples": [{"url": "http://x/1.jpg", "why": "404"}]},
        },
    }  # fmt: skip
    verify_report = {"imported": 50, "failed": 0, "changed": 2, "unchanged": 48, "vanished": 1}
    verify_report["markers"] = 48

    async def runs() -> dict[str, int]:
        async with StateStore.open(tmp_path / "state") as state:
            ids = {}
            ids["import"] = await state.start_run("import", "main", {})
            await state.record_page([], run_id=ids["import"], checkpoint={}, done=1200, total=1200)
            await state.finish_run(ids["import"], report=import_report)
            ids["verify"] = await state.start_run("verify", "main", {})
            await state.finish_run(ids["verify"], report=verify_report)
            ids["failed"] = await state.start_run("refresh", "main", {})
            await state.finish_run(ids["failed"], state="failed", error="store answered 503")
            ids["cancelled"] = await state.start_run("refresh", "main", {})
            await state.finish_run(
                ids["cancelled"], state="cancelled", error="replaced by sync --restart"
            )
            ids["running"] = await state.start_run("refresh", "main", {}, total=400)
            await state.record_page([], run_id=ids["running"], checkpoint={"p": 1}, done=100)
            ids["queued"] = await state.start_run("verify", "main", {})
            ids["paused"] = await state.start_run("refresh", "second", {}, total=10)
            await state.pause_store("second")
            return ids

    ids = asyncio.run(runs())
    assert cli.main(["--config", str(config), "status"]) == 0
    lines = capsys.readouterr().out.splitlines()

    def line_of(run_id: int) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(f"{run_id:>5} "))

    header = next(line for line in lines if line.lstrip().startswith("RUN "))
    assert header.split() == ["RUN", "KIND", "STORE", "STATE", "PROGRESS"]
    at = line_of(ids["import"])
    assert lines[at].split()[1:4] == ["import", "main", "done"]
    assert "[########################] 1200/1200 100%" in lines[at] and "ETA" not in lines[at]
    assert lines[at + 1].strip() == (
        "done: 1200 product(s), 12 page(s), 3 failed, 5 without image, 1 duplicate SKU(s),"
        " 1200 image URL(s) checked, 2 image URL(s) unreachable, 1 image URL(s) over 2 MB"
    )
    at = line_of(ids["verify"])
    assert lines[at + 1].strip() == (
        "done: 50 product(s), 2 changed, 48 unchanged, 1 vanished, 48 markers"
    )
    at = line_of(ids["failed"])
    assert lines[at].split()[3] == "failed"
    assert lines[at + 1].strip() == "failed: store answered 503"
    at = line_of(ids["cancelled"])
    assert lines[at].split()[3] == "cancelled"
    assert lines[at + 1].strip() == "cancelled: replaced by sync --restart"
    at = line_of(ids["running"])
    assert lines[at].split()[3] == "running"
    assert "[######..................] 100/400 25%" in lines[at]
    assert "/s ETA " in lines[at]
    assert not lines[at + 1].strip().startswith(("done", "failed", "paused"))
    at = line_of(ids["queued"])
    assert lines[at].split()[3:] == ["queued", "behind", "run", str(ids["running"])]
    at = line_of(ids["paused"])
    assert lines[at].split()[3] == "paused"
    assert "0/10 0%" in lines[at] and "ETA" not in lines[at]
    assert lines[at + 1].strip().startswith("paused: resumes from its checkpoint")
    assert "resume --store second" in lines[at + 1]

    assert cli.main(["--config", str(config), "status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    by_id = {r["id"]: r for r in doc["runs"]}
    queued = by_id[ids["queued"]]
    assert (queued["state"], queued["queued_behind"], queued["eta_seconds"]) == (
        "queued", ids["running"], None
    )  # fmt: skip
    assert by_id[ids["running"]]["state"] == "running"
    assert by_id[ids["running"]]["eta_seconds"] is not None
    assert by_id[ids["import"]]["report"]["failed"] == 3
