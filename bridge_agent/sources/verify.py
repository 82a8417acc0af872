"""Verification runs: re-read every product through the store's API and ship what drifted.

Why a sweep at all. Hooks and webhooks are hints, and the modified-since poll trusts the store's
modified date; a change that bumps no date (an image ALT edited in the media library, stock
written by a plugin straight into the database) or a deletion no webhook reported is seen by
nothing else. A verification run (Connectif's "verification" of products first known from
tracking) reads every product again, in pages, within the store's request budget and behind its
live work (`platforms/http.py` `background_work`), and for each one:

- **drift** (its content hash differs from the mirror's, or the mirror never had it) is recorded
  with source `verify` and ships like any change; the merchant's store is the truth;
- **unchanged and confirmed by the hub** costs the hub a compact verification marker (id and
  hash, `POST /v1/stores/{store}/verified`, docs/hub-protocol.md), never its data again; an id
  the hub answers `mismatched` for (it lost it, or holds another hash) is sent in full;
- **vanished** (the mirror has it, the store answers it does not exist) is a deletion at the
  hub when `deletions` is on, and otherwise an archived, `Discontinued` product: the hub keeps it
  and knows it is no longer offered;
- every product read gets `verified_at` (status counts the unverified: never read by a run, or
  changed by a hook or webhook since).

Phases, each resumable from the checkpoint committed with its page (guarantee 3): `walk` (the
catalog, page by page, from the platform's resume token), then `vanished` (the live mirror rows
the walk did not meet, by id, asked again in batches: gone, or moved behind the walk's cursor),
or `listed` alone for `bridge-agent verify --product ID ...`. Markers are posted before the page
is committed: a crash in between posts them again (the hub is idempotent on them), and a hub
outage pauses the run like a store outage, to resume at that page.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from bridge_agent.model import Change, Product
from bridge_agent.platforms import Platform
from bridge_agent.platforms.base import fetch_many
from bridge_agent.store import Event, Run, now_ms
from bridge_agent.sync.hashing import product_hash
from bridge_agent.wire import VerifiedReply

if TYPE_CHECKING:
    from bridge_agent.sources.importer import Importer

log = structlog.get_logger("bridge_agent.verify")

# (store, [(id, hash)], verified_at ms) -> the hub's answer; None: the hub takes no markers.
HubMarkers = Callable[[str, Sequence[tuple[str, str]], int], Awaitable[VerifiedReply | None]]

BATCH = 100  # ids asked at once in the `listed` and `vanished` phases (one batch read)
MARKERS_MAX = 1000  # ids in one marker request (the hub's limit)
EVENTS_PER_RUN = 200  # drift and vanished products named in the event log; the rest counted


class Sweep:
    """One verification run of one store (a `verify` run, executed by the importer's loop)."""

    def __init__(
        self,
        runner: Importer,
        markers: HubMarkers | None,
        *,
        deletions: bool,
        concurrency: int,
    ) -> None:
        self._runner = runner
        self._state = runner.ctx.state
        self._store = runner.store_id
        self._markers = markers
        self._deletions = deletions
        self._concurrency = concurrency

    async def execute(self, run: Run, platform: Platform) -> dict[str, Any]:
        """Run (or resume) the sweep; returns the checkpoint it ended with (the report's counts)."""
        cp: dict[str, Any] = dict(run.checkpoint or {})
        listed = [str(i) for i in run.params.get("products") or ()]
        phase = cp.setdefault("phase", "listed" if listed else "walk")
        done = run.done
        if phase == "walk":
            async for page in platform.catalog(cp.get("next")):
                cp["next"] = page.next_token
                cp["pages"] = cp.get("pages", 0) + 1
                if page.next_token is None:
                    cp["phase"], cp["after"] = "vanished", ""
                done += len(page.products)
                await self._settle(
                    run, cp, page.products, (), page.failures, done, page.total, page.observed_at
                )
            if cp["phase"] == "walk":  # an empty catalog: no page at all
                cp["phase"], cp["after"] = "vanished", ""
        if cp["phase"] == "vanished":
            while ids := await self._state.unseen_since(
                self._store, since=run.started_at, after=cp["after"], limit=BATCH
            ):
                result = await fetch_many(platform, ids, concurrency=self._concurrency)
                cp["after"] = ids[-1]
                done += len(ids)
                found = list(result.found.values())
                await self._settle(
                    run, cp, found, sorted(result.missing), result.failed.values(), done
                )
        if cp["phase"] == "listed":
            at = int(cp.get("index", 0))
            while at < len(listed):
                ids = listed[at : at + BATCH]
                result = await fetch_many(platform, ids, concurrency=self._concurrency)
                at = cp["index"] = at + len(ids)
                done += len(ids)
                found = list(result.found.values())
                await self._settle(
                    run,
                    cp,
                    found,
                    sorted(result.missing),
                    result.failed.values(),
                    done,
                    len(listed),
                )
        cp["phase"] = "finished"
        cp["read"] = done
        return cp

    async def _settle(
        self,
        run: Run,
        cp: dict[str, Any],
        products: Sequence[Product],
        missing: Sequence[str],
        failures: Any,
        done: int,
        total: int | None = None,
        observed_at: int | None = None,
    ) -> None:
        """Compare one page with the mirror, post its markers, commit it with the checkpoint."""
        admitted, leaving, events = await self._runner.sift(run, products, source="verify")
        known = await self._state.known(self._store, [p.id for p in admitted] + list(missing))
        observed = observed_at or now_ms()
        drift: list[Change] = []
        confirmable: list[tuple[str, str]] = []
        for product in admitted:
            hash_ = product_hash(product)
            row = known.get(product.id)
            if row is None or row.deleted or row.hash != hash_:
                drift.append(Change(self._store, product.id, product, "verify", observed))
            elif row.acked_hash == hash_:
                confirmable.append((product.id, hash_))
        gone = [i for i in missing if (row := known.get(i)) and not row.deleted]
        vanished = await self._vanished(gone, observed)
        cp["not_found"] = cp.get("not_found", 0) + sum(1 for i in missing if i not in known)
        resend = await self._post_markers(cp, confirmable, observed)
        self._runner.note_failures(cp, failures)
        cp["drift"] = cp.get("drift", 0) + len(drift)
        cp["unchanged"] = cp.get("unchanged", 0) + len(admitted) - len(drift)
        cp["vanished"] = cp.get("vanished", 0) + len(vanished)
        cp["out_of_scope"] = cp.get("out_of_scope", 0) + len(products) - len(admitted)
        events += self._events(cp, drift, vanished)
        queued = await self._state.record_page(
            drift + vanished + leaving,
            run_id=run.id,
            checkpoint=cp,
            done=done,
            total=total,
            verified=[p.id for p in products],
            resend=resend,
            resend_source="verify",
            events=events,
            vanished=() if self._deletions else gone,
        )
        self._runner.recorded(queued, "verify")
        await self._runner.between_pages(run)

    async def _vanished(self, ids: Sequence[str], observed: int) -> list[Change]:
        """Products the store no longer has: deletions, or (deletions off) archived and
        `Discontinued` copies of what the mirror holds."""
        if self._deletions:
            return [Change(self._store, i, None, "verify", observed) for i in ids]
        held = await self._state.mirror_products(self._store, ids)
        return [
            Change(
                self._store,
                i,
                dataclasses.replace(product, status="archived"),
                "verify",
                observed,
            )
            for i, (product, _hash) in held.items()
        ]

    async def _post_markers(
        self, cp: dict[str, Any], confirmable: Sequence[tuple[str, str]], at: int
    ) -> list[str]:
        """Post the markers of unchanged products; the ids the hub did not confirm."""
        if self._markers is None or cp.get("markers_unsupported") or not confirmable:
            return []
        mismatched: list[str] = []
        for start in range(0, len(confirmable), MARKERS_MAX):
            chunk = confirmable[start : start + MARKERS_MAX]
            reply = await self._markers(self._store, chunk, at)
            if reply is None:
                cp["markers_unsupported"] = True
                log.warning(
                    "verification_markers_unsupported",
                    store=self._store,
                    detail="the hub has no /verified route: unchanged products are not marked",
                )
                return mismatched
            cp["markers"] = cp.get("markers", 0) + reply.verified
            mismatched += sorted(reply.mismatched)
        cp["mismatched"] = cp.get("mismatched", 0) + len(mismatched)
        return mismatched

    def _events(
        self, cp: dict[str, Any], drift: Sequence[Change], vanished: Sequence[Change]
    ) -> list[Event]:
        """One event per drifting or vanished product, up to EVENTS_PER_RUN in a run."""
        out: list[Event] = []
        named = int(cp.get("named", 0))
        for change, action, text in [
            *((c, "verify_drift", "differed from what the agent last saw") for c in drift),
            *((c, "vanished", "is gone from the store") for c in vanished),
        ]:
            if named >= EVENTS_PER_RUN:
                break
            named += 1
            what = (
                "shipped again"
                if action == "verify_drift"
                else ("deleted at the hub" if self._deletions else "marked Discontinued at the hub")
            )
            out.append(
                Event(
                    at=change.observed_at,
                    level="warning" if action == "vanished" else "info",
                    store=self._store,
                    product=change.product_id,
                    status=None,
                    message=f"verification: product {change.product_id} {text}: {what}",
                    action=action,
                )
            )
        cp["named"] = named
        return out
