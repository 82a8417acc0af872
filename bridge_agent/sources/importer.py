"""The runs of one store (guarantee 3): import, refresh, verification and repair.

A run has an id, a frozen copy of the store settings that started it (secrets left out, filters
in), its `params` and a checkpoint committed in the same transaction as the page it follows
(`StateStore.record_page`). After a crash, a stop, a pause or a deactivation the run resumes from
its checkpoint with its frozen settings: editing `agent.toml` meanwhile changes nothing about a run
in progress, and never starts one by itself (Sales Layer rules 03, 08, 09). `sync --restart`
cancels the open runs and starts over with today's settings.

Kinds:
- `import`: the first full read of the catalog (queued on the first start for a store, with a
  `repair` run after it: a new state means the hub may hold what the store deleted);
- `refresh` (`bridge-agent sync`): re-read everything, ship only what changed (content hash, rule
  06). With `force` (rule 05) every visible product ships as a full upsert whether changed or
  not, and no deletion or deactivation is exported (archived products and products leaving the
  filters are left for the next ordinary sync). With `dry_run` nothing is recorded: the report
  says what would ship;
- `verify` (`bridge-agent verify`, and the store's `verify_schedule`): sources/verify.py;
- `repair` (`sync --repair`): compare the hub with the store and the mirror (sources/repair.py).

One run at a time per store, oldest first: a run queued while another runs waits (a `force`
refresh "queues behind the running run", rule 05), and a scheduled verification is not queued
while one is open. Runs ask the store through its one request budget as background work
(`platforms/http.py`): live changes (webhooks, hooks, polls) go first, so a sweep never crowds
them out. Changes recorded by other sources while a run is open merge with it (rule 04): the
outbox coalesces per product, and a page whose product was already recorded with the same hash
queues nothing.

Between pages the run reads its own state: `paused` (`bridge-agent pause`) or `cancelled` (`sync
--restart`) stop it there, so at most the page in flight completes after a pause (rule 08).

A run that fails (store or hub down) is retried with backoff; after `MAX_FAILURES` failures in a
row without progress it is marked failed and says why (guarantee 7: no silent loops). Its report
counts what was read, shipped and left alone, and warns about products without image or price and
about SKUs held by more than one product.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog

from bridge_agent.aio import wait_event
from bridge_agent.config import StoreSettings, redact
from bridge_agent.config.settings import StoreFilters
from bridge_agent.errors import HubError, PlatformError
from bridge_agent.model import Change, Product, Source
from bridge_agent.platforms import Platform
from bridge_agent.platforms.base import ItemFailure
from bridge_agent.platforms.http import background_work
from bridge_agent.sources import StoreContext, StoreSource
from bridge_agent.sources.filtering import sift
from bridge_agent.sources.images import ImageChecker
from bridge_agent.sources.repair import HubHashes, Repair
from bridge_agent.sources.verify import HubMarkers, Sweep
from bridge_agent.store import Event, Run, now_ms
from bridge_agent.sync.hashing import product_hash
from bridge_agent.sync.retry import Backoff
from bridge_agent.sync.scope import Scope

log = structlog.get_logger("bridge_agent.importer")

MAX_FAILURES = 8
MAX_FAILED_LISTED = 100  # failed products listed by id in the report; the rest are counted
DUPLICATES_LISTED = 20  # duplicate SKUs named in the event log; the report holds them all
CHECK_INTERVAL = 5.0
FROZEN_KEYS = ("concurrency", "images_max_per_product", "deletions", "options")
RUN_KINDS = ("import", "refresh", "verify", "repair")


def freeze(store: StoreSettings) -> dict[str, Any]:
    """The settings a run keeps for its whole life (JSON-ready, secrets masked)."""
    snapshot: dict[str, Any] = redact(store)
    return {k: snapshot[k] for k in FROZEN_KEYS} | {
        "platform": store.platform,
        "filters": store.filters.to_dict(),
    }


def thaw(store: StoreSettings, frozen: dict[str, Any]) -> StoreSettings:
    """Today's store settings with the run's frozen ones put back (secrets stay current).

    A run started before filters existed has none frozen: it keeps admitting everything, as it
    did when it started."""
    return dataclasses.replace(
        store,
        concurrency=int(frozen.get("concurrency", store.concurrency)),
        images_max_per_product=int(
            frozen.get("images_max_per_product", store.images_max_per_product)
        ),
        deletions=bool(frozen.get("deletions", store.deletions)),
        options={**store.options, **frozen.get("options", {})},
        filters=StoreFilters.from_dict(frozen.get("filters") or {}),
    )


class RunStopped(Exception):
    """The executing run was paused or cancelled (read between pages)."""

    def __init__(self, state: str | None) -> None:
        super().__init__(state or "gone")
        self.state = state


def _image_summary(images: dict[str, Any] | None) -> str:
    if not images:
        return ""
    return (
        f"; {images['checked']} image URL(s) checked: {images['unreachable']} unreachable,"
        f" {images['oversized']} over 2 MB"
        + (
            f", {images['not_checked']} not checked (the image host was slower than the import)"
            if images.get("not_checked")
            else ""
        )
    )


def warnings_of(product: Product) -> list[str]:
    out = []
    if not product.images:
        out.append("no_image")
    if not product.price and not any(v.price for v in product.variants):
        out.append("no_price")
    return out


class Importer(StoreSource):
    """Root task: runs the store's open runs, one at a time, resuming from their checkpoints."""

    def __init__(
        self,
        ctx: StoreContext,
        *,
        store: StoreSettings,
        build_platform: Callable[[StoreSettings], AbstractAsyncContextManager[Platform]],
        images: Callable[[], ImageChecker] | None = None,
        hub_hashes: HubHashes | None = None,
        hub_markers: HubMarkers | None = None,
    ) -> None:
        super().__init__(ctx)
        self._hub_hashes = hub_hashes  # for `repair` runs (sources/repair.py); None: no hub
        self._hub_markers = hub_markers  # verification markers (sources/verify.py)
        self._images = images  # makes one image checker per run; None: no image checks
        self.store = store
        # Runs use their frozen settings: `build_platform` gives an execution the store's own
        # adapter (stores.py `run_adapter`), or, when the configuration changed since the run
        # started, that adapter's class with the frozen settings on the store's own client and
        # request budget. Never a second connection pool or budget: an import does not double
        # the load on the store.
        self._build = build_platform
        self._backoff = Backoff(base=2.0, cap=300.0)
        self._verify_due = False
        self._metrics.counter("bridge_import_products_total", "Products read by import runs.")
        self._metrics.counter("bridge_run_products_total", "Products read by runs, by kind.")

    def verification_due(self) -> None:
        """The scheduled verification's nudge (`verify_schedule`): start a sweep unless one is
        open; it queues behind a running run."""
        self._verify_due = True
        self.nudge()

    async def run(self) -> None:
        await self.start_first_import()
        await self._warn_frozen_filters()
        failures = 0
        progress: dict[int, int] = {}  # run id -> products done at its last failure
        while True:
            if self._verify_due:
                self._verify_due = False
                await self.start_verification()
            for run in await self._state.open_runs(self.store.id):
                if run.state != "running":
                    continue  # paused: waits for `bridge-agent resume`
                if run.checkpoint is None:
                    log.info("run_started", store=self.store.id, run=run.id, kind=run.kind,
                             params=run.params or None)  # fmt: skip
                try:
                    with background_work():  # live changes go first (platforms/http.py)
                        await self.execute(run)
                    failures = 0
                except RunStopped as stop:
                    log.info("run_stopped", store=self.store.id, run=run.id, state=stop.state)
                except (PlatformError, HubError) as exc:
                    # "In a row without progress": a run that moved on since its last failure
                    # starts counting again (a long sweep meets a few sparse errors a night).
                    now = await self._state.run(run.id)
                    done = run.done if now is None else now.done
                    failures = 1 if done > progress.get(run.id, done) else failures + 1
                    progress = {run.id: done}
                    if await self._failed(run, exc, failures):
                        failures = 0  # given up on this run; the next one starts afresh
                    await wait_event(self._wake, self._backoff.delay(failures))
                break  # read the open runs again: one may have been queued or cancelled
            else:
                await wait_event(self._wake, CHECK_INTERVAL)
            self._wake.clear()

    async def start_first_import(self) -> int | None:
        """Start the initial import unless one ever ran or the mirror has products."""
        if await self._state.last_run(self.store.id, "import") is not None:
            return None
        if await self._state.mirror_count(self.store.id):
            return None
        # A first import means a new state for this store (a first install, or state lost): the
        # hub may hold products the store deleted meanwhile, so a repair follows the import.
        kinds = ("import", "repair") if self._hub_hashes is not None else ("import",)
        await self._state.raise_seq_to_clock()  # never reuse an earlier life's seqs at the hub
        run_id, *repair = await self._state.start_runs(self.store.id, kinds, freeze(self.store))
        log.info("import_started", store=self.store.id, run=run_id, repair=repair or None)
        return run_id

    async def _warn_frozen_filters(self) -> None:
        """At start: say so when an open run keeps filters other than today's (edited while
        the agent was stopped); it finishes with them (rule 09), never deleting what today's
        keep, and `sync --restart` starts over with today's."""
        today = self.store.filters.to_dict()
        differ = [
            r for r in await self._state.open_runs(self.store.id)
            if r.config.get("filters", {}) != today
        ]  # fmt: skip
        if not differ:
            return
        ids = ", ".join(str(r.id) for r in differ)
        await self._state.log_event(
            f"run(s) {ids} keep the filters they started with, not today's: they finish with"
            " them (shipping only what those admit, deleting nothing today's filters keep);"
            " bridge-agent sync --restart starts over with today's",
            level="warning",
            store=self.store.id,
            action="config",
        )
        log.warning("run_filters_differ", store=self.store.id, runs=ids)

    async def start_verification(self) -> int | None:
        """Queue a scheduled verification sweep unless one is open already (never two)."""
        if any(r.kind == "verify" for r in await self._state.open_runs(self.store.id)):
            log.info("verification_skipped", store=self.store.id, reason="one is open")
            return None
        run_id = await self._state.start_run(
            "verify", self.store.id, freeze(self.store), params={"scheduled": True}
        )
        await self._state.log_event(
            f"scheduled verification run {run_id} queued", store=self.store.id, action="verify"
        )
        log.info("verification_started", store=self.store.id, run=run_id, scheduled=True)
        return run_id

    async def execute(self, run: Run) -> None:
        """Run (or resume) one run to its end. Raises PlatformError when the store fails,
        RunStopped when the run is paused or cancelled between two pages."""
        settings = thaw(self.store, run.config)
        async with self._build(settings) as platform:
            if run.kind == "repair":
                await self._repair(run, settings, platform)
            elif run.kind == "verify":
                sweep = Sweep(
                    self,
                    self._hub_markers,
                    deletions=self.deletions_allowed(run),
                    concurrency=settings.concurrency,
                )
                checkpoint = await sweep.execute(run, platform)
                await self._finish(run, checkpoint, checkpoint_done(run, checkpoint))
            else:
                await self._execute(run, platform)

    async def between_pages(self, run: Run) -> None:
        """After each committed page: stop here if the run was paused or cancelled meanwhile."""
        state = await self._state.run_state(run.id)
        if state != "running":
            raise RunStopped(state)

    async def sift(
        self, run: Run, products: Sequence[Product], *, source: Source
    ) -> tuple[list[Product], list[Change], list[Event]]:
        """A page against the run's frozen filters: the products inside them, the deletions of
        products that left them, and the events reporting those that left.

        The run ships by its frozen filters (rule 09), but it never deletes at the hub what
        today's configuration keeps: a deletion cannot be undone, so it takes today's filters
        rejecting the product too and deletions on both then and now (and never in a force
        refresh). A product only the frozen filters reject is left alone."""
        settings = thaw(self.store, run.config)
        scope = Scope.of(settings.filters)
        outside = [p for p in products if scope.admits(p) is not None]
        if not outside:
            return list(products), [], []
        today = Scope.of(self.store.filters)
        leaving = [p for p in outside if today.admits(p) is not None]
        observed = now_ms()
        changes = [Change(self.store.id, p.id, p, source, observed) for p in leaving]
        deleted, events = await sift(
            self._state,
            self.store.id,
            changes,
            scope,
            deletions=self.deletions_allowed(run) and not run.params.get("force"),
        )
        out = {p.id for p in outside}
        return [p for p in products if p.id not in out], list(deleted), events

    def deletions_allowed(self, run: Run) -> bool:
        """Whether a run may delete at the hub: deletions on when it started and still on."""
        return bool(run.config.get("deletions", self.store.deletions)) and self.store.deletions

    def note_failures(self, checkpoint: dict[str, Any], failures: Iterable[ItemFailure]) -> None:
        """Count products the store could not serve; the first MAX_FAILED_LISTED are named."""
        failed = checkpoint.setdefault("failed", [])
        for f in failures:
            checkpoint["failed_count"] = checkpoint.get("failed_count", 0) + 1
            if len(failed) < MAX_FAILED_LISTED:
                failed.append({"product": f.product_id, "status": f.status, "message": f.message})

    async def _repair(self, run: Run, settings: StoreSettings, platform: Platform) -> None:
        if self._hub_hashes is None:
            await self._state.finish_run(run.id, state="failed", error="no hub to repair against")
            return
        repair = Repair(
            self,
            self._hub_hashes,
            deletions=self.deletions_allowed(run),
            concurrency=settings.concurrency,
            scope=Scope.of(settings.filters),
        )
        await repair.execute(run, platform)
        if self.health.state in ("import_failing", "repair_failing"):
            self.health.ok()

    async def _execute(self, run: Run, platform: Platform) -> None:
        checkpoint = dict(run.checkpoint or {})
        resume = checkpoint.get("next")
        if run.checkpoint is not None and resume is None:
            await self._finish(run, checkpoint)  # the last page was recorded, the end was not
            return
        done = run.done
        if resume is not None:
            log.info("run_resumed", store=self.store.id, run=run.id, at=resume, done=done)
        dry = bool(run.params.get("dry_run"))
        checks = self._images if self.store.image_checks and not dry else None
        images = checks() if checks is not None else None
        try:
            done = await self._walk(run, platform, resume, done, checkpoint, images)
            if images is not None:
                checkpoint["images"] = (await images.finish()).as_dict()
        finally:
            if images is not None:
                await images.cancel()
        await self._finish(run, checkpoint, done)

    async def _walk(
        self,
        run: Run,
        platform: Platform,
        resume: str | None,
        done: int,
        checkpoint: dict[str, Any],
        images: ImageChecker | None,
    ) -> int:
        force, dry = bool(run.params.get("force")), bool(run.params.get("dry_run"))
        async for page in platform.catalog(resume):
            products, leaving, events = await self.sift(run, page.products, source="import")
            if force:
                # Rule 05: all visible content, no deactivation (a product made draft or
                # archived meanwhile is left to the next ordinary sync).
                visible = [p for p in products if p.status == "active"]
                checkpoint["not_exported"] = (
                    checkpoint.get("not_exported", 0) + len(products) - len(visible)
                )
                products = visible
            observed = page.observed_at or now_ms()  # a bulk snapshot: when it was taken
            changes = [Change(self.store.id, p.id, p, "import", observed) for p in products]
            changes += leaving
            for product in products:
                for warning in warnings_of(product):
                    checkpoint[warning] = checkpoint.get(warning, 0) + 1
            self.note_failures(checkpoint, page.failures)
            done += len(page.products)
            checkpoint["next"] = page.next_token
            checkpoint["pages"] = checkpoint.get("pages", 0) + 1
            checkpoint["out_of_scope"] = (
                checkpoint.get("out_of_scope", 0) + len(page.products) - len(products)
            )
            if dry:
                await self._dry_page(checkpoint, changes, force)
                changes, events = [], []
            queued = await self._state.record_page(
                changes,
                run_id=run.id,
                checkpoint=checkpoint,
                done=done,
                total=page.total,
                verified=[p.id for p in products] if not dry else (),
                resend=[p.id for p in products] if force and not dry else (),
                events=events,
            )
            if not dry:
                checkpoint["shipped"] = checkpoint.get("shipped", 0) + queued
            self._metrics.inc("bridge_import_products_total", len(page.products))
            self._metrics.inc(
                "bridge_run_products_total", len(page.products), store=self.store.id, kind=run.kind
            )
            self.recorded(queued, "import")
            if images is not None:  # the main image of each product (see images.py)
                images.submit(p.images[0].src for p in page.products if p.images)  # never waits
            await self.between_pages(run)
        return done

    async def _dry_page(
        self, checkpoint: dict[str, Any], changes: list[Change], force: bool
    ) -> None:
        """What a page would ship, without recording it (`sync --dry-run`)."""
        known = await self._state.known(self.store.id, [c.product_id for c in changes])
        would = checkpoint.setdefault("would_ship", [])
        for kind in ("new", "changed", "unchanged", "delete"):
            checkpoint.setdefault(f"would_{kind}", 0)
        for change in changes:
            row = known.get(change.product_id)
            if change.product is None:
                kind = "delete"
            elif row is None or row.deleted:
                kind = "new"
            elif row.hash != product_hash(change.product):
                kind = "changed"
            elif force:
                kind = "unchanged"  # a force refresh ships it anyway
            else:
                continue
            checkpoint[f"would_{kind}"] = checkpoint.get(f"would_{kind}", 0) + 1
            if len(would) < MAX_FAILED_LISTED:
                would.append({"product": change.product_id, "as": kind})

    async def _finish(self, run: Run, checkpoint: dict[str, Any], done: int | None = None) -> None:
        duplicates = await self._state.duplicate_skus(self.store.id)
        report = {
            "imported": run.done if done is None else done,
            "pages": checkpoint.get("pages", 0),
            "failed": checkpoint.get("failed_count", 0),
            "failures": checkpoint.get("failed", []),
            "warnings": {
                "no_image": checkpoint.get("no_image", 0),
                "no_price": checkpoint.get("no_price", 0),
                "duplicate_sku": [{"sku": sku, "products": n} for sku, n in duplicates],
                "images": checkpoint.get("images"),
            },
        }
        report |= {k: checkpoint[k] for k in REPORTED if k in checkpoint}
        if run.params:
            report["params"] = run.params
        await self._state.finish_run(run.id, report=report)
        for failure in report["failures"]:
            await self._state.log_event(
                f"{run.kind} run {run.id}: product could not be read: {failure['message']}",
                level="error",
                store=self.store.id,
                product=failure["product"],
                status=failure["status"],
                action=run.kind,
            )
        if duplicates:
            listed = ", ".join(f"{sku} ({n} products)" for sku, n in duplicates[:DUPLICATES_LISTED])
            more = len(duplicates) - DUPLICATES_LISTED
            await self._state.log_event(
                f"{run.kind} run {run.id}: {len(duplicates)} SKU(s) held by more than one"
                f" product: {listed}" + (f" and {more} more" if more > 0 else ""),
                level="warning",
                store=self.store.id,
                action=run.kind,
            )
        await self._state.log_event(
            f"{run.kind} run {run.id} finished: {_summary(run, report)}"
            + _image_summary(checkpoint.get("images")),
            store=self.store.id,
            action=run.kind,
        )
        # One line of counts: the lists (failures, duplicate SKUs) are in the event log and the
        # run's report (`bridge-agent log`, `/status`), not in a multi-KB log line.
        images = checkpoint.get("images") or {}
        log.info(
            "run_finished",
            store=self.store.id,
            run=run.id,
            kind=run.kind,
            imported=report["imported"],
            pages=report["pages"],
            failed=report["failed"],
            no_image=report["warnings"]["no_image"],
            no_price=report["warnings"]["no_price"],
            duplicate_skus=len(duplicates),
            images_unreachable=images.get("unreachable", 0),
            images_oversized=images.get("oversized", 0),
            images_not_checked=images.get("not_checked", 0),
            **{k: report[k] for k in REPORTED if k in report and isinstance(report[k], int)},
        )
        if self.health.state in FAILING.values():
            self.health.ok()

    async def _failed(self, run: Run, exc: PlatformError | HubError, failures: int) -> bool:
        """Pause the run, or give up on it after MAX_FAILURES; True when given up."""
        self.health.fail(FAILING.get(run.kind, "import_failing"), str(exc))
        if failures < MAX_FAILURES:
            log.warning("run_retrying", store=self.store.id, run=run.id, error=str(exc))
            return False
        message = f"{run.kind} run {run.id} failed {failures} times in a row: {exc}"
        await self._state.finish_run(run.id, state="failed", error=str(exc))
        await self._state.log_event(message, level="error", store=self.store.id, action=run.kind)
        log.error("run_failed", store=self.store.id, run=run.id, error=str(exc))
        return True


# The store's health state while a run of this kind keeps failing (status, /healthz).
FAILING = {
    "import": "import_failing",
    "refresh": "import_failing",  # a refresh is an import of what is there already
    "verify": "verify_failing",
    "repair": "repair_failing",
}

# What a run's report carries beyond the import counts, when its checkpoint has them.
REPORTED = (
    "shipped",
    "out_of_scope",
    "not_exported",
    "drift",
    "unchanged",
    "vanished",
    "markers",
    "mismatched",
    "markers_unsupported",
    "not_found",
    "would_new",
    "would_changed",
    "would_unchanged",
    "would_delete",
    "would_ship",
)


def checkpoint_done(run: Run, checkpoint: dict[str, Any]) -> int:
    """Products a verification read (or asked for), whatever phase it resumed in."""
    return int(checkpoint.get("read", run.done))


def _summary(run: Run, report: dict[str, Any]) -> str:
    """The counts of a finished run, in words, for the event log."""
    parts = [f"{report['imported']} product(s) read", f"{report['failed']} failed"]
    if run.kind == "verify":
        parts += [
            f"{report.get('drift', 0)} drifted (shipped)",
            f"{report.get('unchanged', 0)} unchanged",
            f"{report.get('markers', 0)} confirmed by the hub",
            f"{report.get('vanished', 0)} vanished",
        ]
        if report.get("markers_unsupported"):
            parts.append("the hub takes no verification markers")
    elif run.params.get("dry_run"):
        parts += [
            f"would ship {report.get('would_new', 0)} new,"
            f" {report.get('would_changed', 0)} changed"
            + (f", {report.get('would_unchanged', 0)} unchanged" if run.params.get("force") else "")
            + f", {report.get('would_delete', 0)} deletion(s); nothing was recorded"
        ]
    else:
        parts.append(f"{report.get('shipped', 0)} queued for the hub")
        if run.params.get("force"):
            parts.append(f"{report.get('not_exported', 0)} archived not exported (force)")
    warnings = report["warnings"]
    parts += [
        f"{warnings['no_image']} without image",
        f"{warnings['no_price']} without price",
        f"{len(warnings['duplicate_sku'])} duplicate SKU(s)",
    ]
    if report.get("out_of_scope"):
        parts.append(f"{report['out_of_scope']} outside the filters")
    return ", ".join(parts)
