"""`sync/paging.py`: a walk stops with PagingLoop on a repeated token or page, and only then."""

from __future__ import annotations

import pytest

from bridge_agent.errors import PagingLoop, PlatformUnavailable
from bridge_agent.sync.paging import PageGuard

# Each step: ("token", value) | ("page", "id,id,...") | ("restart", ""); `fails_at` is the index of
# the step that must raise PagingLoop (None: the whole walk is legitimate).
CASES: list[tuple[str, list[tuple[str, str]], int | None]] = [
    ("distinct pages", [("page", "1,2"), ("page", "3,4"), ("page", "5")], None),
    ("the same page twice", [("page", "1,2"), ("page", "3,4"), ("page", "1,2")], 2),
    ("the same page at once", [("page", "1,2"), ("page", "1,2")], 1),
    ("same ids, other order", [("page", "1,2"), ("page", "2,1")], None),
    ("a page overlapping another", [("page", "1,2,3"), ("page", "3,4,5")], None),
    ("a page inside another", [("page", "1,2,3"), ("page", "1,2")], None),
    ("ids that join alike", [("page", "1,23"), ("page", "12,3")], None),
    ("empty pages never loop", [("page", "1"), ("page", ""), ("page", "")], None),
    ("distinct tokens", [("token", "a"), ("token", "b"), ("token", "c")], None),
    ("a repeated cursor", [("token", "a"), ("token", "b"), ("token", "a")], 2),
    ("a cursor pointing at itself", [("token", "a"), ("token", "a")], 1),
    ("tokens and pages are apart", [("token", "1"), ("page", "1"), ("token", "2")], None),
    ("a restart forgets pages", [("page", "1,2"), ("restart", ""), ("page", "1,2")], None),
    ("a restart forgets tokens", [("token", "x"), ("restart", ""), ("token", "x")], None),
    (
        "a loop after a restart",
        [("page", "1,2"), ("restart", ""), ("page", "1,2"), ("page", "1,2")],
        3,
    ),
]


def apply(guard: PageGuard, kind: str, value: str, index: int) -> None:
    if kind == "token":
        guard.token(value)
    elif kind == "page":
        guard.page(value.split(",") if value else [], f"page {index}")
    else:
        guard.restart()


@pytest.mark.parametrize(("name", "steps", "fails_at"), CASES, ids=[c[0] for c in CASES])
def test_page_guard(name: str, steps: list[tuple[str, str]], fails_at: int | None) -> None:
    guard = PageGuard("the catalog of store 'main'")
    for index, (kind, value) in enumerate(steps):
        if index == fails_at:
            with pytest.raises(PagingLoop) as caught:
                apply(guard, kind, value, index)
            assert str(caught.value).startswith("the catalog of store 'main': ")
            return
        apply(guard, kind, value, index)
    assert fails_at is None


def test_the_error_names_both_pages_and_is_a_try_again_later_error() -> None:
    guard = PageGuard("the product ids of store 'main'")
    guard.page(["7", "8", "9"], "page 2")
    with pytest.raises(PagingLoop) as caught:
        guard.page(["7", "8", "9"], "page 5")
    message = str(caught.value)
    assert "page 5 holds the same 3 ids as page 2" in message
    assert "instead of looping" in message
    # The callers (import, poll, reconciliation) already pause and try again on this class.
    assert isinstance(caught.value, PlatformUnavailable)
    assert caught.value.status is None


def test_a_long_token_is_cut_in_the_message() -> None:
    guard = PageGuard("walk")
    token = "eyJsYXN0X2lkIjo" * 20
    guard.token(token)
    with pytest.raises(PagingLoop) as caught:
        guard.token(token)
    assert token not in str(caught.value)
    assert token[:40] + "…" in str(caught.value)
