"""Applying a store's scope (filters, test mode) to what the live sources observed.

Every source that records product data goes through `sift` just before recording, so the rule
is the same for every adapter and every path (webhook and spool hints, reconciliation, polls):

- A product inside the scope is recorded as usual.
- A product outside it is never recorded as data: the mirror never holds it, so it is never
  shipped, whatever path saw it.
- A product outside the scope that the mirror holds live has LEFT the filter (a tag removed, a
  status changed, the filters edited). That is reported: a warning event with the action
  `left_filter`, the product and the reason (Sales Layer rule 12 asks for a safe start, so the
  operator must see what a filter takes away). Only when the store ships deletions
  (`deletions = true`) does it also become a deletion, so the hub removes it; with deletions off
  the hub keeps it, as it keeps products deleted at the store.
- An observation older than the mirror's copy (by the platform's `updated_at`) is ignored, as
  `StateStore.record` ignores it: a stale page must not remove a product a newer read admitted.
- Deletions pass through untouched: a product that is gone has nothing to judge.
- A product's leaving is reported once per state of its mirror row (with deletions off it stays
  there, and every later poll, webhook or run would report it again).

The mirror is read once per call, only for the products outside the scope.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bridge_agent.model import Change
from bridge_agent.store import Event, StateStore, now_ms
from bridge_agent.sync.scope import Scope

__all__ = ["LEFT_FILTER", "sift"]

LEFT_FILTER = "left_filter"  # the event action of a product that left the store's scope


async def sift(
    state: StateStore,
    store_id: str,
    changes: Sequence[Change],
    scope: Scope,
    *,
    deletions: bool,
) -> tuple[list[Change], list[Event]]:
    """The changes to record (in their order) and the events to write in the same transaction."""
    if scope.is_everything:
        return list(changes), []
    outside: dict[str, str] = {}  # product id -> why it is out of scope
    for change in changes:
        if change.product is not None and (reason := scope.admits(change.product)) is not None:
            outside[change.product_id] = reason
    if not outside:
        return list(changes), []
    live = await state.mirror_products(store_id, outside)
    # With deletions off the product stays in the mirror and every later observation would
    # report it again: one report per mirror state is enough (and bounds the event log).
    reported = await state.reported_leaving(store_id, [i for i in outside if i in live])
    kept: list[Change] = []
    events: list[Event] = []
    for change in changes:
        product = change.product
        if product is None or change.product_id not in outside:
            kept.append(change)
            continue
        held = live.get(change.product_id)
        if held is None:
            continue  # never synced (or already removed): nothing to record, nothing to say
        if _older(product.updated_at, held[0].updated_at):
            continue  # a stale observation: the mirror holds a newer state of the product
        reason = outside[change.product_id]
        if deletions:
            kept.append(
                Change(change.store, change.product_id, None, change.source, change.observed_at)
            )
            outcome = "removed at the hub"
        else:
            outcome = "kept at the hub (deletions = false)"
        if change.product_id in reported:
            continue  # said already, and the mirror has not changed since
        events.append(
            Event(
                at=now_ms(),
                level="warning",
                store=store_id,
                product=change.product_id,
                status=None,
                message=f"product {change.product_id} left the filter: {reason}; {outcome}",
                action=LEFT_FILTER,
            )
        )
    return kept, events


def _older(observed: str | None, held: str | None) -> bool:
    """The mirror's rule (`store/mirror.py`): strictly older platform time; an unknown or
    unreadable time is never older."""
    if not observed or not held:
        return False
    try:
        return datetime.fromisoformat(observed) < datetime.fromisoformat(held)
    except (ValueError, TypeError):
        return False
