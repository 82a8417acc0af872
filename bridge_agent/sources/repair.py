"""Repair against the hub (anti-entropy): a run that makes the hub hold what the store holds.

Why it exists. Everything else the agent does is incremental: it ships what changed since the
mirror last saw it, and the mirror is its only memory of what the hub holds. When that memory is
lost (a new disk, a state directory restored from an old backup) products force-deleted at the
store meanwhile stay live at the hub for ever: reconciliation compares the store with the new,
empty mirror, never with the hub. When the hub's memory is lost (a hub restored from a backup),
nothing is ever sent again for products that do not change. A repair run compares all three.

What it does. It pages through the ids and hashes the hub holds for the store
(`GET /v1/stores/{store}/hashes`, see docs/hub-protocol.md), and walks the mirror and the store's
id listing (`platform.product_ids()`) over the same id ranges, in id order. For each id:

| hub | mirror | store listing | repair |
| --- | --- | --- | --- |
| live | none | absent | re-fetch; gone: queue a deletion (`deletions = false`: count it, keep it) |
| any | none or deleted | listed | re-fetch and record, like reconciliation |
| any | live | absent | re-fetch; gone: a deletion as usual; there after all: as if listed |
| absent or deleted | live | listed | re-send in full ("missing at hub") |
| other hash | live | listed | re-send in full |
| same hash | live | listed | nothing; the hub's hash becomes the acknowledged base if it was not |
| live | deleted | absent | ship the deletion again (`deletions = false`: count it) |

Re-fetching before deleting matters as in reconciliation: a listing can omit a product that
still exists (WooCommerce leaves trashed products out). "Re-send" drops the mirror's
acknowledged base and dirties the outbox row, so the shipper sends an `upsert` (or the `delete`
again); a row already pending as an upsert is left as it is (counted `pending`: on a first
install that is every product, and nothing is wrong), and a row the hub rejected stays set aside
for the operator (`bridge-agent outbox retry`, counted `set_aside`).

Bounds and crashes (guarantees 3 and 4). One slice at a time: at most one hub page, `page` mirror
rows and `page` listed ids, cut at the smallest id where one of them was cut, so the three always
cover the same id range. A slice's repairs and the checkpoint (the last id of the slice) commit in
one transaction (`StateStore.repair_page`); after a crash or a stop the run resumes after that id.
Only the store's id listing is held whole, as strings, as reconciliation does. The writes are
conditioned on what was read, so a source recording the same product meanwhile wins.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge_agent.errors import HubUnavailable, PlatformError
from bridge_agent.model import Change
from bridge_agent.platforms import Platform
from bridge_agent.sources import StoreContext, StoreSource
from bridge_agent.sources.refetch import Refetcher
from bridge_agent.store import MirrorState, Repairs, Run
from bridge_agent.sync.hashing import product_hash
from bridge_agent.sync.scope import Scope
from bridge_agent.wire import HASH_PAGE_DEFAULT, HashEntry, HashPage

log = structlog.get_logger("bridge_agent.repair")

# (store, after, limit) -> one page of the hub's ids and hashes. Injected by the agent
# (`HubClient.hashes`): sources never import the shipper.
HubHashes = Callable[[str, str, int], Awaitable[HashPage]]
PAGE = HASH_PAGE_DEFAULT  # hub ids per request; mirror rows and listed ids per slice


@dataclass
class RepairCounts:
    """What a repair run found; the run's report and its checkpoint's running totals."""

    hub_seen: int = 0  # products (live or deleted) the hub listed
    deleted_at_hub: int = 0  # live at the hub, gone from the store: deletion queued
    resent: int = 0  # live in the mirror, another hash at the hub: sent in full
    missing_at_hub: int = 0  # live in the mirror, absent or deleted at the hub: sent in full
    recorded: int = 0  # in the store, not in the mirror: fetched and recorded
    kept: int = 0  # gone from the store, live at the hub, kept because deletions = false
    acknowledged: int = 0  # same hash at the hub: recorded as the hub's acknowledged base
    pending: int = 0  # not (or not yet) at the hub, but already queued to be sent in full
    set_aside: int = 0  # not at the hub because it rejected them: left to `outbox retry`

    @property
    def repaired(self) -> int:
        return self.deleted_at_hub + self.resent + self.missing_at_hub + self.recorded

    def summary(self, run_id: int) -> str:
        extra = [
            f"{n} {what}"
            for n, what in (
                (self.pending, "already queued"),
                (self.set_aside, "set aside as rejected (bridge-agent outbox list)"),
            )
            if n
        ]
        return (
            f"repair run {run_id} finished: {self.hub_seen} product(s) at the hub,"
            f" {self.deleted_at_hub} deleted at the hub, {self.resent} re-sent (other hash),"
            f" {self.missing_at_hub} missing at the hub (re-sent), {self.recorded} recorded"
            f" from the store, {self.kept} deletion(s) kept (deletions = false)"
            + "".join(f", {e}" for e in extra)
        )


@dataclass
class _Slice:
    """The repairs of one slice, as they are decided."""

    changes: list[Change] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    resend: list[tuple[str, str | None, bool, str | None]] = field(default_factory=list)
    acked: list[tuple[str, str, str | None]] = field(default_factory=list)


class Repair:
    """Executes one repair run of one store (the importer dispatches `repair` runs here)."""

    def __init__(
        self,
        source: StoreSource,
        hub_hashes: HubHashes,
        *,
        deletions: bool,
        concurrency: int,
        page: int | None = None,
        scope: Scope | None = None,
    ) -> None:
        self._source = source
        self._scope = (
            scope or Scope.everything()
        )  # the run's frozen filters  # the importer: its context, health and `recorded()`
        self._hub_hashes = hub_hashes
        self._deletions = deletions
        self._concurrency = concurrency
        self._page = page or PAGE
        source.ctx.metrics.counter(
            "bridge_repaired_total", "Differences with the hub repaired by repair runs, by kind."
        )

    async def execute(self, run: Run, platform: Platform) -> RepairCounts:
        """Run (or resume) the repair to its end. Raises PlatformError or HubError."""
        ctx: StoreContext = dataclasses.replace(self._source.ctx, platform=platform)
        refetch = Refetcher(ctx, "repair", deletions=True, concurrency=self._concurrency)
        checkpoint: dict[str, Any] = dict(run.checkpoint or {})
        known = {f.name for f in dataclasses.fields(RepairCounts)}
        counts = RepairCounts(
            **{k: int(v) for k, v in checkpoint.get("counts", {}).items() if k in known}
        )
        cursor = str(checkpoint.get("after", ""))
        if cursor:
            log.info("run_resumed", store=ctx.store_id, run=run.id, at=cursor)
        listed: set[str] = set()
        async for ids in platform.product_ids():
            listed.update(ids)
        in_store = sorted(listed)
        del listed
        while True:
            end = await self._slice(ctx, refetch, run, in_store, cursor, counts)
            if end is None:
                break
            cursor = end
            between = getattr(self._source, "between_pages", None)
            if between is not None:  # the importer: a pause or a restart stops the run here
                await between(run)
        await self._finish(ctx, run, counts)
        return counts

    async def _slice(
        self,
        ctx: StoreContext,
        refetch: Refetcher,
        run: Run,
        in_store: Sequence[str],
        cursor: str,
        counts: RepairCounts,
    ) -> str | None:
        """Compare and repair the ids after `cursor` up to a cut; the cut, None after the last."""
        page = await self._hub_hashes(ctx.store_id, cursor, self._page)
        mirror = await ctx.state.repair_mirror(
            ctx.store_id, after=cursor, upto=page.next, limit=self._page
        )
        start = bisect_right(in_store, cursor)
        listed = in_store[start : start + self._page]
        cuts = [
            page.next,
            mirror[-1].id if len(mirror) == self._page else None,
            listed[-1] if start + self._page < len(in_store) else None,
        ]
        end = min((c for c in cuts if c is not None), default=None)
        if end is not None and end <= cursor:  # paging would never end
            raise HubUnavailable("hub reply is not protocol v1: the hashes page does not move on")
        hub = {e.id: e for e in page.items if end is None or e.id <= end}
        mine = {m.id: m for m in mirror if end is None or m.id <= end}
        here = {i for i in listed if end is None or i <= end}
        ids = sorted(hub.keys() | mine.keys() | here)

        # Products whose truth only the store can tell: absent from its listing but live at the
        # hub or in the mirror (confirm before deleting), or listed but unknown to the mirror.
        suspects = [
            i
            for i in ids
            if (i in here and (i not in mine or mine[i].deleted))
            or (
                i not in here
                and ((i in mine and not mine[i].deleted) or (i not in mine and _live(hub.get(i))))
            )
        ]
        fetched = self._in_scope(await refetch.fetch(suspects))
        if len(fetched) < len(suspects):
            # Nothing of this slice is written: the run pauses and resumes at `cursor`.
            raise PlatformError(
                f"{len(suspects) - len(fetched)} product(s) could not be re-fetched"
            )
        found = _Slice()
        for i in ids:
            self._decide(i, hub.get(i), mine.get(i), i in here, fetched, found, counts)
        counts.hub_seen += len(hub)
        last = end if end is not None else (ids[-1] if ids else cursor)
        queued = await ctx.state.repair_page(
            ctx.store_id,
            Repairs(
                changes=found.changes, delete=found.delete, resend=found.resend, acked=found.acked
            ),
            run_id=run.id,
            checkpoint={"after": last, "counts": dataclasses.asdict(counts)},
            done=counts.hub_seen,
        )
        self._source.recorded(queued, "repair")
        return end

    def _in_scope(self, fetched: dict[str, Change | None]) -> dict[str, Change | None]:
        """A product outside the run's filters counts as one the store does not have: the
        table below then deletes it at the hub only with deletions on, as the filters say."""
        for product_id, change in fetched.items():
            product = None if change is None else change.product
            if change is not None and product is not None and self._scope.admits(product):
                fetched[product_id] = dataclasses.replace(change, product=None)
        return fetched

    def _decide(
        self,
        product_id: str,
        hub: HashEntry | None,
        mine: MirrorState | None,
        listed: bool,
        fetched: dict[str, Change | None],
        found: _Slice,
        counts: RepairCounts,
    ) -> None:
        """The repair of one id (the table in the module docstring)."""
        hub_live = _live(hub)
        if product_id in fetched:
            change = fetched[product_id]
            assert change is not None  # the refetcher reports deletions (deletions=True)
            product = change.product
            if product is None:  # gone from the store
                if mine is not None and not mine.deleted:
                    if not self._deletions:
                        counts.kept += hub_live
                        return
                    found.changes.append(change)  # a deletion of a product the mirror knows
                    counts.deleted_at_hub += hub_live
                elif hub_live:
                    self._delete_at_hub(product_id, mine, found, counts)
                return
            if mine is None or mine.deleted or product_hash(product) != mine.hash:
                found.changes.append(change)
                counts.recorded += mine is None or mine.deleted
                return
            # The mirror is right after all (a listing omitted the product): compare below.
        if mine is None:
            return  # neither here nor in the mirror, and not live at the hub: nothing to do
        if mine.deleted:
            if hub_live:
                self._delete_at_hub(product_id, mine, found, counts)
            return
        assert mine.hash is not None  # a live mirror row has data and its hash
        if hub_live and hub is not None and hub.hash == mine.hash:
            if mine.acked_hash != mine.hash:
                found.acked.append((product_id, mine.hash, mine.acked_hash))
                counts.acknowledged += 1
            return
        hub_hash = hub.hash if hub_live and hub is not None else None
        if mine.outbox == "pending" and mine.acked_hash in (None, hub_hash):
            counts.pending += 1  # on its way, as an upsert or a patch on what the hub holds
            return
        if mine.outbox == "rejected":
            counts.set_aside += 1  # the hub refused it: the operator decides (`outbox retry`)
            return
        if hub_live:
            counts.resent += 1
        else:
            counts.missing_at_hub += 1
        found.resend.append((product_id, mine.hash, False, mine.acked_hash))

    def _delete_at_hub(
        self, product_id: str, mine: MirrorState | None, found: _Slice, counts: RepairCounts
    ) -> None:
        """Live at the hub, gone from the store (and the mirror knows no live copy)."""
        if not self._deletions:
            counts.kept += 1
            return
        counts.deleted_at_hub += 1
        if mine is None:
            found.delete.append(product_id)
        elif mine.outbox != "pending":  # a pending deletion is on its way already
            found.resend.append((product_id, None, True, mine.acked_hash))

    async def _finish(self, ctx: StoreContext, run: Run, counts: RepairCounts) -> None:
        report = dataclasses.asdict(counts)
        await ctx.state.finish_run(run.id, report=report)
        for kind in ("deleted_at_hub", "resent", "missing_at_hub", "recorded"):
            if report[kind]:
                ctx.metrics.inc("bridge_repaired_total", report[kind], kind=kind)
        summary = counts.summary(run.id)
        level = "warning" if counts.repaired or counts.kept or counts.set_aside else "info"
        await ctx.state.log_event(summary, level=level, store=ctx.store_id)
        log.info("repair_finished", store=ctx.store_id, run=run.id, summary=summary)


def _live(entry: HashEntry | None) -> bool:
    return entry is not None and not entry.deleted
