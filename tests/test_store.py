"""State store: coalescing, the version check on ack, rejected rows, runs, migrations."""

from __future__ import annotations

import os
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest

from bridge_agent.errors import StateStoreError, StateStoreLost
from bridge_agent.model import Change, Product
from bridge_agent.store import (
    DB_NAME,
    Outcome,
    Received,
    Replaced,
    Rollback,
    Settlement,
    StateStore,
)
from bridge_agent.store.jsonld import Kept
from bridge_agent.store.schema import MIGRATIONS
from bridge_agent.testing.catalog import make_product


def change(product: Product | None, *, id_: str | None = None, source: str = "spool") -> Change:
    pid = id_ if id_ is not None else (product.id if product else "?")
    return Change("main", pid, product, source, 1_700_000_000_000)  # type: ignore[arg-type]


async def test_five_edits_coalesce_into_one_row(state: StateStore) -> None:
    for revision in range(5):
        assert await state.record([change(make_product(1, revision=revision))]) == 1
    due = await state.due(10)
    assert len(due) == 1
    assert due[0].hash is not None
    assert (await state.stats()).pending == 1


async def test_same_content_is_not_queued_again(state: StateStore) -> None:
    product = make_product(2)
    assert await state.record([change(product)]) == 1
    assert await state.record([change(replace(product, updated_at="2027-01-01T00:00:00Z"))]) == 0
    assert len(await state.due(10)) == 1


async def test_older_observation_does_not_overwrite_newer(state: StateStore) -> None:
    new = replace(make_product(3), title="new", updated_at="2026-06-01T00:00:00Z")
    old = replace(make_product(3), title="old", updated_at="2026-05-01T00:00:00Z")
    await state.record([change(new)])
    assert await state.record([change(old)]) == 0
    (due,) = await state.due(10)
    assert due.hash is not None
    assert b"new" in (due.data or b"")


async def test_an_older_snapshot_never_overwrites_a_later_read_of_the_same_date(
    state: StateStore,
) -> None:
    # A stock change bumps no modified date: a webhook's read after it and a bulk export taken
    # before it carry the same `updated_at`; only when each was read tells them apart.
    at = "2026-06-01T00:00:00Z"
    live = replace(make_product(4), stock_quantity=0, updated_at=at)
    snapshot = replace(make_product(4), stock_quantity=7, updated_at=at)
    await state.record([Change("main", live.id, live, "webhook", 2_000)])
    assert await state.record([Change("main", snapshot.id, snapshot, "import", 1_000)]) == 0
    (held, _hash) = (await state.mirror_products("main", [live.id]))[live.id]
    assert held.stock_quantity == 0
    # A modification after the read it was compared with always wins, however it was observed.
    edited = replace(snapshot, updated_at="2026-06-02T00:00:00Z")
    assert await state.record([Change("main", edited.id, edited, "import", 1_500)]) == 1
    # And a later read of the same date too (the store changed it back, say).
    later = replace(live, stock_quantity=3, updated_at="2026-06-02T00:00:00Z")
    assert await state.record([Change("main", later.id, later, "webhook", 3_000)]) == 1


async def test_change_landing_in_flight_ships_next_time(state: StateStore) -> None:
    await state.record([change(make_product(4))])
    (in_flight,) = await state.due(10)
    # While the batch is at the hub, the product changes again.
    await state.record([change(make_product(4, revision=1))])
    await state.settle(
        [Settlement("main", "4", in_flight.seq, "ok", in_flight.hash, in_flight.data)]
    )
    (again,) = await state.due(10)
    assert again.seq > in_flight.seq
    assert again.hash != in_flight.hash
    # The ack still moved the base: the next patch is against what the hub really holds.
    assert again.acked_hash == in_flight.hash
    assert again.acked_data == in_flight.data


async def test_patch_base_survives_the_next_change(state: StateStore) -> None:
    await state.record([change(make_product(4))])
    (first,) = await state.due(10)
    await state.settle([Settlement("main", "4", first.seq, "ok", first.hash, first.data)])
    await state.record([change(make_product(4, revision=1))])
    await state.record([change(make_product(4, revision=2))])
    (due,) = await state.due(10)
    assert (due.acked_hash, due.acked_data) == (first.hash, first.data)
    assert due.data != first.data


async def test_ack_for_the_sent_seq_retires_the_row(state: StateStore) -> None:
    await state.record([change(make_product(5))])
    (due,) = await state.due(10)
    await state.settle([Settlement("main", "5", due.seq, "ok", due.hash, due.data)])
    assert await state.due(10) == []
    assert (await state.stats()).pending == 0
    assert await state.meta("last_shipment_at") is not None


async def test_need_full_drops_the_base_and_takes_a_new_seq(state: StateStore) -> None:
    await state.record([change(make_product(6))])
    (first,) = await state.due(10)
    await state.settle([Settlement("main", "6", first.seq, "ok", first.hash, first.data)])
    await state.record([change(make_product(6, revision=1))])
    (patchable,) = await state.due(10)
    assert patchable.acked_hash == first.hash
    await state.settle([Settlement("main", "6", patchable.seq, "need_full", reason="base")])
    (full,) = await state.due(10)
    assert full.acked_hash is None
    assert full.seq != patchable.seq


async def test_rejected_rows_are_set_aside_and_retried(state: StateStore) -> None:
    await state.record([change(make_product(7)), change(make_product(8))])
    seven = next(d for d in await state.due(10) if d.id == "7")
    await state.settle([Settlement("main", "7", seven.seq, "rejected", reason="bad gtin")])
    assert [d.id for d in await state.due(10)] == ["8"]
    (row,) = await state.outbox_rows(state="rejected")
    assert (row.id, row.last_error) == ("7", "bad gtin")
    events = await state.events()
    assert any("bad gtin" in e.message and e.product == "7" for e in events)
    assert await state.retry_rejected([("main", "7")]) == 1
    assert sorted(d.id for d in await state.due(10)) == ["7", "8"]


async def test_rejected_row_re_dirtied_goes_back_in_line(state: StateStore) -> None:
    await state.record([change(make_product(9))])
    (due,) = await state.due(10)
    await state.settle([Settlement("main", "9", due.seq, "rejected", reason="x")])
    await state.record([change(make_product(9, revision=1))])
    assert [d.id for d in await state.due(10)] == ["9"]


async def test_deletions(state: StateStore) -> None:
    assert await state.record([change(None, id_="never-seen")]) == 0
    await state.record([change(make_product(10))])
    assert await state.record([change(None, id_="10")]) == 1
    (due,) = await state.due(10)
    assert due.deleted
    assert due.data is None
    assert await state.record([change(None, id_="10")]) == 0  # already deleted


async def test_retry_outcome_keeps_the_row_and_counts(state: StateStore) -> None:
    await state.record([change(make_product(11))])
    (due,) = await state.due(10)
    await state.settle([Settlement("main", "11", due.seq, "retry", reason="no result")])
    (again,) = await state.due(10)
    assert again.attempts == 1
    assert again.seq == due.seq


async def test_oldest_first_so_a_hot_product_cannot_starve_others(state: StateStore) -> None:
    await state.record([change(make_product(1))])
    await state.record([change(make_product(2))])
    for revision in range(1, 4):
        await state.record([change(make_product(1, revision=revision))])
    assert [d.id for d in await state.due(10)] == ["1", "2"]


async def test_state_survives_reopen_and_seqs_keep_growing(tmp_path: Path) -> None:
    async with StateStore.open(tmp_path) as s:
        await s.record([change(make_product(1))])
        (first,) = await s.due(10)
    async with StateStore.open(tmp_path) as s:
        await s.record([change(make_product(2))])
        due = await s.due(10)
    assert [d.id for d in due] == ["1", "2"]
    assert due[1].seq > first.seq


async def test_runs_record_page_and_checkpoint_together(state: StateStore) -> None:
    run = await state.start_run("import", "main", {"per_page": 100})
    await state.record_page(
        [change(make_product(1), source="import")],
        run_id=run,
        checkpoint={"page": 2},
        done=1,
        total=10,
    )
    (open_run,) = await state.open_runs("main")
    assert (open_run.checkpoint, open_run.done, open_run.total) == ({"page": 2}, 1, 10)
    assert open_run.config == {"per_page": 100}
    await state.finish_run(run)
    assert await state.open_runs() == []


async def test_cursors(state: StateStore) -> None:
    assert await state.cursor("main", "products") is None
    await state.set_cursor("main", "products", "2026-11-23T10:00:00Z")
    assert await state.cursor("main", "products") == "2026-11-23T10:00:00Z"


def test_durability_settings(tmp_path: Path) -> None:
    store = StateStore.open_sync(tmp_path)
    try:
        conn = store._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert (tmp_path / DB_NAME).stat().st_mode & 0o077 == 0
    finally:
        store.close_sync()


def test_a_state_of_an_older_version_is_migrated_with_its_rows(tmp_path: Path) -> None:
    # A state written by the first release (schema 1) holding a pending hint: opening it with
    # this one applies the later migrations and keeps the hint, its count of refusals at 0.
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.executescript(MIGRATIONS[0])
    conn.execute(
        "INSERT INTO hints (store, id, source, received_at, attempts) VALUES"
        " ('main', '7', 'webhook', 1, 2)"
    )
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    store = StateStore.open_sync(tmp_path)
    try:
        assert store._conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        row = store._conn.execute("SELECT attempts, refused FROM hints WHERE id='7'").fetchone()
        assert tuple(row) == (2, 0)
    finally:
        store.close_sync()


def test_newer_schema_is_refused_with_guidance(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StateStoreError, match="upgrade bridge-agent or restore a backup"):
        StateStore.open_sync(tmp_path)


def test_unusable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StateStoreError, match="cannot"):
        StateStore.open_sync(blocker / "state")


# -- lost state (issue 10, class 6) -----------------------------------------------------------


async def test_a_removed_state_file_is_noticed_and_nothing_is_committed_into_it(
    tmp_path: Path,
) -> None:
    async with StateStore.open(tmp_path / "state") as state:
        assert state.created
        await state.record([Change("main", "1", make_product(1), "spool", 1)])
        shutil.rmtree(tmp_path / "state")  # an operator's rm -rf, a new disk mounted over it
        with pytest.raises(StateStoreLost, match="was removed"):
            await state.check()
        with pytest.raises(StateStoreLost):
            await state.record([Change("main", "2", make_product(2), "spool", 1)])
        with pytest.raises(StateStoreLost):
            await state.add_hints("main", ["3"], "webhook")


async def test_a_replaced_state_file_is_noticed(tmp_path: Path) -> None:
    async with StateStore.open(tmp_path / "state") as state:
        await state.record([Change("main", "1", make_product(1), "spool", 1)])
        path = tmp_path / "state" / DB_NAME
        copy = tmp_path / "restored.sqlite"
        shutil.copy(path, copy)
        os.replace(copy, path)  # a restore from a backup, under the running agent
        with pytest.raises(StateStoreLost, match="replaced"):
            await state.check()
        with pytest.raises(StateStoreLost):
            await state.record([Change("main", "2", make_product(2), "spool", 1)])
    async with StateStore.open(tmp_path / "state") as again:
        assert not again.created  # the restored file is an earlier state, not a new one
        assert [d.id for d in await again.due(10)] == ["1"]


async def test_a_rolled_back_jsonld_is_no_longer_kept(state: StateStore) -> None:
    # The operator rolled back the agent's JSON-LD: the keeper must not write it again at the
    # next price change (that would undo the rollback), and says nothing of "someone else".
    document = {"@type": "Product", "name": "Hoodie"}
    kept = Kept("7", None, "fp", document, "h1")
    await state.journal_received("main", [Received("o1", "7", {"jsonld": {"to": {}}}, 1)], "1")
    replaced = Replaced("7", "jsonld", None, None, document)
    title = Replaced("7", "seo_title", None, "Old", "New")
    outcome = Outcome("o1", "applied", replaced=[replaced, title])
    await state.journal_outcome("main", [outcome], jsonld=[kept])
    (row,) = await state.jsonld_rows("main")
    assert row.state == "kept"
    rows = await state.replaced_rows("main", product="7")
    title_row = next(r for r in rows if r.field == "seo_title")
    await state.record_rollbacks("main", [Rollback("o1", "title restored", [title_row.id])], [])
    (row,) = await state.jsonld_rows("main")
    assert row.state == "kept"  # only the title was rolled back
    jsonld_row = next(r for r in rows if r.field == "jsonld")
    await state.record_rollbacks("main", [Rollback("o1", "jsonld restored", [jsonld_row.id])], [])
    (row,) = await state.jsonld_rows("main")
    assert row.state == "foreign"
