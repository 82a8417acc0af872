"""Safe mode end to end (`bridge-agent approvals`): a store in `apply_mode = "review"`, the
WooCommerce simulator and the reference hub on loopback, the agent's downstream task on a real
state store, and the command line in-process. Held optimisations are listed, shown field by
field with the store's live value (a merchant's edit marked as a coming conflict), approved
(applied by the running agent, `applied` at the hub) or rejected (`rejected_by_reviewer`)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge_agent import cli
from bridge_agent.downstream import approvals
from bridge_agent.store import Entry
from bridge_agent.testing.waiting import until
from tests.conftest import Hub
from tests.downstream_kit import DESC_KEY, STORE, TITLE_KEY, Kit, open_kit


@pytest.fixture
async def kit(tmp_path: Path, hub: Hub, capsys: pytest.CaptureFixture[str]) -> AsyncIterator[Kit]:
    async with open_kit(tmp_path, hub, capsys, apply_mode="review") as running:
        yield running


async def held(kit: Kit, *proposals: dict[str, object]) -> list[str]:
    """Enqueue at the hub and let the agent hold them (reported `pending_review`)."""
    ids = await kit.enqueue(*proposals)
    await kit.cycle()
    for opt in ids:
        assert (await kit.at_hub(opt))["status"] == "pending_review"
    return ids


def seo(product: str, old: str, new: str, old_desc: str, new_desc: str) -> dict[str, object]:
    return {
        "product": product,
        "fields": {
            "seo_title": {"from": old, "to": new},
            "seo_description": {"from": old_desc, "to": new_desc},
        },
    }


async def test_review_list_show_approve_applied_reject_rejected(kit: Kit) -> None:
    hoodie = kit.new_product("Old hoodie title", "Old hoodie description")
    mug = kit.new_product("Old mug title", "Old mug description")
    hoodie_opt, mug_opt = await held(
        kit,
        seo(hoodie, "Old hoodie title", "Red hoodie", "Old hoodie description", "Warm."),
        seo(mug, "Old mug title", "Blue mug", "Old mug description", "Holds tea."),
    )
    # Held means untouched.
    assert kit.meta(hoodie, TITLE_KEY) == "Old hoodie title"
    # The merchant edits the mug's meta description while it waits.
    kit.merchant_edit(mug, **{DESC_KEY: "The merchant's mug words"})
    kit.start_engine()  # the running agent, from now on

    code, out, _ = await kit.cli("approvals", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["OPTIMIZATION", "STORE", "PRODUCT", "AGE"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {hoodie_opt, mug_opt}
    assert f" {STORE} " in rows[mug_opt] and f" {mug} " in rows[mug_opt]
    assert rows[mug_opt].endswith("seo_title, seo_description")
    code, out, _ = await kit.cli("approvals", "list", "--json")
    assert {r["id"]: r["product"] for r in json.loads(out)} == {hoodie_opt: hoodie, mug_opt: mug}

    # show: the live store value beside the hub's `from` and the proposed `to`.
    code, out, _ = await kit.cli("approvals", "show", mug_opt)
    assert code == 0
    assert f"optimization {mug_opt}  store {STORE}  product {mug}  (pending_review)" in out
    title, description = out.split("  seo_description")
    assert "will conflict" not in title
    assert "store now : 'Old mug title'" in title and "proposed  : 'Blue mug'" in title
    assert "will conflict (the merchant's value is kept)" in description.splitlines()[0]
    assert 'store now : "The merchant\'s mug words"' in description
    assert "hub saw   : 'Old mug description'" in description
    assert "proposed  : 'Holds tea.'" in description
    code, out, _ = await kit.cli("approvals", "show", mug_opt, "--json")
    fields = {f["field"]: f for f in json.loads(out)[0]["fields"]}
    assert fields["seo_description"]["current"] == "The merchant's mug words"
    assert "note" not in fields["seo_title"]

    # A dry run shows the same and changes nothing.
    code, out, _ = await kit.cli("approvals", "approve", mug_opt, "--dry-run")
    assert code == 0
    assert "dry run: would approve 1 optimization(s); 1 field(s) will conflict" in out
    assert (await kit.state.journal_entries(STORE, ids=[mug_opt]))[0].state == "pending_review"

    # Approve the hoodie: the running agent applies it on its own beat, the hub hears `applied`.
    code, out, _ = await kit.cli("approvals", "approve", hoodie_opt)
    assert code == 0
    assert f"approved 1 optimization(s) of store {STORE!r}: {hoodie_opt}" in out
    assert f"the running agent applies them within {approvals.APPLY_WITHIN:.0f} s" in out
    await until(
        lambda: _status(kit, hoodie_opt, "applied"),
        approvals.APPLY_WITHIN + 10,
        what="the approved one applied at the hub by the running agent",
    )
    assert kit.meta(hoodie, TITLE_KEY) == "Red hoodie"
    assert kit.meta(hoodie, DESC_KEY) == "Warm."

    # Reject the mug by product: nothing is written, the hub hears `rejected_by_reviewer`.
    code, out, _ = await kit.cli("approvals", "reject", "--product", mug)
    assert code == 0
    assert f"rejected 1 optimization(s) of store {STORE!r}: {mug_opt}" in out
    assert f"rejected_by_reviewer within {approvals.REPORT_WITHIN:.0f} s" in out
    kit.engine.results.nudge()  # the poster's idle beat (REPORT_WITHIN), without waiting for it
    await until(
        lambda: _status(kit, mug_opt, "rejected_by_reviewer"), 15, what="the rejection at the hub"
    )
    assert kit.meta(mug, TITLE_KEY) == "Old mug title"
    assert kit.meta(mug, DESC_KEY) == "The merchant's mug words"

    # Nothing is held any more.
    code, out, err = await kit.cli("approvals", "approve", "--all")
    assert code == 1
    assert "no optimization is waiting for review" in err
    code, out, _ = await kit.cli("approvals", "list")
    assert (code, out.strip()) == (0, "no optimization is waiting for review")


async def _status(kit: Kit, opt: str, status: str) -> bool:
    return (await kit.at_hub(opt))["status"] == status


async def test_an_unknown_or_settled_id_decides_nothing(kit: Kit) -> None:
    hoodie = kit.new_product("Hoodie", "Hoodie words")
    mug = kit.new_product("Mug", "Mug words")
    hoodie_opt, mug_opt = await held(
        kit,
        seo(hoodie, "Hoodie", "Red hoodie", "Hoodie words", "Warm."),
        seo(mug, "Mug", "Blue mug", "Mug words", "Tea."),
    )
    code, _, err = await kit.cli("approvals", "approve", hoodie_opt, "f" * 32)
    assert code == 1
    assert f"no optimization {'f' * 32} in the journal" in err
    assert "nothing was decided" in err
    code, _, err = await kit.cli("approvals", "show", "f" * 32)
    assert code == 1 and f"no optimization {'f' * 32} in the journal" in err
    # The typo held back the good id too: both still wait.
    states = {e.id: e.state for e in await kit.state.journal_entries(STORE)}
    assert states == {hoodie_opt: "pending_review", mug_opt: "pending_review"}

    code, _, _ = await kit.cli("approvals", "reject", hoodie_opt)
    assert code == 0
    code, _, err = await kit.cli("approvals", "approve", hoodie_opt)
    assert code == 1
    assert f"optimization {hoodie_opt} ({STORE}/{hoodie}) is rejected_by_reviewer" in err
    code, _, err = await kit.cli("approvals", "approve")
    assert code == 2 and "give optimisation ids, --product ID or --all" in err
    code, _, err = await kit.cli("approvals", "list", "--store", "nope")
    assert code == 2 and "no store 'nope'" in err
    # The reject dry run names what it would reject and rejects nothing.
    code, out, _ = await kit.cli("approvals", "reject", "--all", "--dry-run")
    assert code == 0
    assert f"{mug_opt}  {STORE}/{mug}  seo_title, seo_description" in out
    assert (await kit.state.journal_entries(STORE, ids=[mug_opt]))[0].state == "pending_review"
    await kit.cycle()
    assert (await kit.at_hub(hoodie_opt))["status"] == "rejected_by_reviewer"
    assert (await kit.at_hub(mug_opt))["status"] == "pending_review"


async def test_show_says_when_the_store_cannot_be_read_and_still_shows_from_and_to(
    kit: Kit,
) -> None:
    hoodie = kit.new_product("Hoodie", "Hoodie words")
    (opt,) = await held(kit, seo(hoodie, "Hoodie", "Red hoodie", "Hoodie words", "Warm."))
    # Every request to the store refused (a key revoked meanwhile): no retry can help.
    kit.sim.faults.update({"fail_rate": 1.0, "fail_statuses": [401]})
    code, out, _ = await kit.cli("approvals", "show", opt)
    assert code == 0
    assert "the store could not be read" in out
    assert "store now" not in out
    assert "hub saw   : 'Hoodie'" in out and "proposed  : 'Red hoodie'" in out


# -- the diff follows the apply loop's own plan ----------------------------------------------------


def _held(fields: dict[str, object]) -> Entry:
    return Entry("main", "opt-1", 1, "12", fields, 1, 1, 1, "pending_review", False)


def test_the_diff_shows_what_the_apply_loop_would_write_or_refuse() -> None:
    addition = {"description_html": {"from": "<p>Old</p>", "append": "<p>More</p>"}}
    (diff,) = approvals.field_diffs(_held(addition))
    assert diff.problem is None and diff.to == "<p>Old</p><p>More</p>"
    no_from = approvals.field_diffs(_held({"seo_title": {"to": "New"}}))[0]
    not_text = approvals.field_diffs(_held({"seo_title": {"from": "Old", "to": {"x": 1}}}))[0]
    for refused in (no_from, not_text):
        assert refused.note is not None and refused.note.startswith("will fail"), refused.note


def test_field_names_from_the_hub_cannot_forge_lines_of_the_diff() -> None:
    forged = "seo_title\x1b[2K\n    store now : 'Approved by legal'"
    entry = _held({forged: {"from": "a", "to": "b"}})
    text = "\n".join(approvals.render_diff(entry, approvals.field_diffs(entry), None))
    assert "\x1b" not in text
    assert not any(line.strip().startswith("store now : 'Approved") for line in text.split("\n"))


def test_a_since_out_of_range_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        with pytest.raises(SystemExit) as exited:
            cli.main(["rollback", "--since", "9999-12-31T23:59"])
        assert exited.value.code == 2
    finally:
        monkeypatch.undo()
        time.tzset()
