"""Incremental exports: the second export of a name holds exactly what changed since the first.

"Changed" is what the mirror recorded: an edited product, a new one, a deleted one (listed as
deleted); a product observed again with the same content is no change. The mark moves only
when the caller saves it (after the file is safe), and a change committed by a writer whose
transaction was open while an export read is in the next export, not lost between the two.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bridge_agent.errors import StateStoreError
from bridge_agent.export import ExportRequest, Mark, export_catalog, mark_key, save_mark
from bridge_agent.model import Change
from bridge_agent.store import DB_NAME, StateStore
from bridge_agent.testing.catalog import make_product


def record(state_dir: Path, changes: list[tuple[str, int | None]]) -> None:
    """(id, revision) to record, revision None: deleted."""

    async def write() -> None:
        async with StateStore.open(state_dir) as state:
            now = int(time.time() * 1000)
            await state.record([
                Change("main", i, None if rev is None else make_product(int(i), revision=rev),
                       "poll", now)
                for i, rev in changes
            ])  # fmt: skip

    asyncio.run(write())


def run_export(state_dir: Path, fmt: str = "jsonl", **kwargs: Any) -> tuple[bytes, Any]:
    out = io.BytesIO()
    request = ExportRequest(store="main", format=fmt, since="last", name="nightly", **kwargs)  # type: ignore[arg-type]
    report = export_catalog(state_dir, request, out)
    return out.getvalue(), report


def keep_mark(state_dir: Path, report: Any) -> None:
    async def save() -> None:
        async with StateStore.open(state_dir) as state:
            await save_mark(state, report.name, report.mark)

    asyncio.run(save())


def lines(data: bytes) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in (json.loads(line) for line in data.decode().splitlines())}


def test_the_second_export_holds_exactly_the_changes(tmp_path: Path) -> None:
    record(tmp_path, [(str(i), 0) for i in range(20)])
    data, first = run_export(tmp_path)
    assert set(lines(data)) == {str(i) for i in range(20)}  # no mark yet: everything
    assert first.since is None
    keep_mark(tmp_path, first)

    # Edited (3, 7), added (21), deleted (5), seen again unchanged (9): not a change.
    record(tmp_path, [("3", 1), ("7", 2), ("21", 0), ("5", None), ("9", 0)])
    data, second = run_export(tmp_path)
    got = lines(data)
    assert set(got) == {"3", "7", "21", "5"}
    assert got["5"] == {"id": "5", "deleted": True, "recorded_at": got["5"]["recorded_at"]}
    assert got["3"]["price"] == make_product(3, revision=1).price
    assert (second.products, second.deleted) == (3, 1)
    assert second.since == Mark.loads(first.mark).at  # type: ignore[union-attr]

    # Not saved: the same export again gives the same changes (a failed upload loses none).
    again, _report = run_export(tmp_path)
    assert set(lines(again)) == set(got)
    keep_mark(tmp_path, second)
    data, third = run_export(tmp_path)
    assert data == b"" and third.rows == 0

    # The csv of an incremental export lists the deletion as a row with status deleted.
    record(tmp_path, [("8", None), ("4", 3)])
    data, _report = run_export(tmp_path, "csv")
    rows = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
    assert [(r["id"], r["status"], r["variant_id"]) for r in rows] == [
        ("4", "active", ""), ("8", "deleted", "")
    ]  # fmt: skip


def test_marks_are_per_name_and_filters_keep_deletions(tmp_path: Path) -> None:
    record(tmp_path, [(str(i), 0) for i in range(12)])
    _data, report = run_export(tmp_path)
    keep_mark(tmp_path, report)
    record(tmp_path, [("1", 1), ("2", 1), ("6", None)])  # 1: Outerwear, 2: Bags
    out = io.BytesIO()
    other = ExportRequest(store="main", format="jsonl", since="last", name="weekly")
    export_catalog(tmp_path, other, out)
    assert len(lines(out.getvalue())) == 11  # never ran: everything live, no deletions
    data, _report = run_export(tmp_path, filters={"category": ("Outerwear",)})
    assert set(lines(data)) == {"1", "6"}  # a deletion cannot be filtered: it is listed


def test_a_change_in_flight_during_an_export_is_in_the_next_one(tmp_path: Path) -> None:
    record(tmp_path, [(str(i), 0) for i in range(5)])
    # The running agent: a write transaction open (as a page being recorded) while we read.
    writer = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    taken = int(time.time() * 1000) + 5  # the time the agent's transaction took
    writer.execute("UPDATE mirror SET recorded_at=?, hash='x' WHERE id='2'", (taken,))
    data, report = run_export(tmp_path)  # never blocked by the writer
    assert set(lines(data)) == {str(i) for i in range(5)}
    writer.execute("COMMIT")
    writer.close()
    keep_mark(tmp_path, report)
    data, _report = run_export(tmp_path)
    assert set(lines(data)) == {"2"}


def test_the_mark_lists_the_ids_of_its_last_millisecond(tmp_path: Path) -> None:
    record(tmp_path, [(str(i), 0) for i in range(3)])
    db = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    db.execute("UPDATE mirror SET recorded_at=1000")  # three rows recorded in one millisecond
    _data, report = run_export(tmp_path)
    mark = Mark.loads(report.mark)
    assert mark == Mark(1000, ("0", "1", "2"), "main")
    keep_mark(tmp_path, report)
    # Another row lands in the same millisecond after the export read: it is still found.
    record(tmp_path, [("3", 0)])
    db.execute("UPDATE mirror SET recorded_at=1000 WHERE id='3'")
    db.close()
    data, _report = run_export(tmp_path)
    assert set(lines(data)) == {"3"}
    stored = asyncio.run(_meta(tmp_path, mark_key("nightly")))
    assert stored == report.mark


async def _meta(state_dir: Path, key: str) -> str | None:
    async with StateStore.open(state_dir, read_only=True) as state:
        return await state.meta(key)


def test_a_mark_is_the_stores_own(tmp_path: Path) -> None:
    """The same --name for another store does not start from the first store's mark."""

    async def write() -> None:
        async with StateStore.open(tmp_path) as state:
            now = int(time.time() * 1000)
            await state.record(
                [Change("b", "old-b", replace(make_product(1), id="old-b"), "poll", now - 60_000)]
            )
            await state.record([Change("main", "1", make_product(1), "poll", now)])

    asyncio.run(write())
    _data, report = run_export(tmp_path)  # store main, name nightly
    keep_mark(tmp_path, report)
    out = io.BytesIO()
    other = ExportRequest(store="b", format="jsonl", since="last", name="nightly")
    second = export_catalog(tmp_path, other, out)
    assert set(lines(out.getvalue())) == {"old-b"}  # before: nothing (main's mark was newer)
    keep_mark(tmp_path, second)
    # Back to main: b's mark is not main's either, so main starts over (never misses a change).
    data, _report = run_export(tmp_path)
    assert set(lines(data)) == {"1"}


def test_a_state_of_a_newer_schema_asks_for_an_upgrade(tmp_path: Path) -> None:
    record(tmp_path, [("1", 0)])
    db = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    db.execute("PRAGMA user_version=999")
    db.close()
    with pytest.raises(StateStoreError) as caught:
        run_export(tmp_path)
    message = str(caught.value)
    assert "newer" in message and "upgrade bridge-agent" in message
    assert "start the agent" not in message  # starting this agent cannot read it either
