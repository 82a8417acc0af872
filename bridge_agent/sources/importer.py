"""Full imports as resumable runs (guarantee 3).

A run has an id, a frozen copy of the store settings that started it (secrets left out), and a
checkpoint committed in the same transaction as the page it follows (`StateStore.record_page`).
After a crash or a stop the run resumes from its checkpoint with its frozen settings: editing
`agent.toml` meanwhile changes nothing about a run in progress, and never starts one by itself
(Sales Layer rules 03, 08, 09).

When runs start:
- on the first start for a store (no import ever ran and the mirror is empty), queued together
  with a `repair` run that follows it (a new state: the hub may hold what the store deleted);
- when `bridge-agent sync --store S` writes a `refresh` run into the state store (the running
  agent picks it up within seconds), or `sync --repair` a `repair` run.

`repair` runs compare the hub with the store and the mirror (sources/repair.py); they run here,
one at a time with the others, with the same pauses, retries and frozen settings.

A run that fails (store down) pauses and is retried with backoff; after `MAX_FAILURES` failures
in a row without progress it is marked failed and says why (guarantee 7: no silent loops). The
report at the end counts what was imported and warns about products without image or price and
about SKUs held by more than one product.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import structlog

from bridge_agent.aio import wait_event
from bridge_agent.config import StoreSettings, redact
from bridge_agent.errors import HubError, PlatformError
from bridge_agent.model import Change, Product
from bridge_agent.platforms import Platform
from bridge_agent.sources import StoreContext, StoreSource
from bridge_agent.sources.images import ImageChecker
from bridge_agent.sources.repair import HubHashes, Repair
from bridge_agent.store import Run, now_ms
from bridge_agent.sync.retry import Backoff

log = structlog.get_logger("bridge_agent.importer")

MAX_FAILURES = 8
MAX_FAILED_LISTED = 100  # failed products listed by id in the report; the rest are counted
DUPLICATES_LISTED = 20  # duplicate SKUs named in the event log; the report holds them all
CHECK_INTERVAL = 5.0
FROZEN_KEYS = ("concurrency", "images_max_per_product", "deletions", "options")


def freeze(store: StoreSettings) -> dict[str, Any]:
    """The settings a run keeps for its whole life (JSON-ready, secrets masked)."""
    snapshot: dict[str, Any] = redact(store)
    return {k: snapshot[k] for k in FROZEN_KEYS} | {"platform": store.platform}


def thaw(store: StoreSettings, frozen: dict[str, Any]) -> StoreSettings:
    """Today's store settings with the run's frozen ones put back (secrets stay current)."""
    return dataclasses.replace(
        store,
        concurrency=int(frozen.get("concurrency", store.concurrency)),
        images_max_per_product=int(
            frozen.get("images_max_per_product", store.images_max_per_product)
        ),
        deletions=bool(frozen.get("deletions", store.deletions)),
        options={**store.options, **frozen.get("options", {})},
    )


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
    """Root task: runs the store's open runs, resuming from their checkpoints."""

    def __init__(
        self,
        ctx: StoreContext,
        *,
        store: StoreSettings,
        build_platform: Callable[[StoreSettings], AbstractAsyncContextManager[Platform]],
        images: Callable[[], ImageChecker] | None = None,
        hub_hashes: HubHashes | None = None,
    ) -> None:
        super().__init__(ctx)
        self._hub_hashes = hub_hashes  # for `repair` runs (sources/repair.py); None: no hub
        self._images = images  # makes one image checker per run; None: no image checks
        self.store = store
        # Runs use their frozen settings: `build_platform` gives an execution the store's own
        # adapter (stores.py `run_adapter`), or, when the configuration changed since the run
        # started, that adapter's class with the frozen settings on the store's own client and
        # request budget. Never a second connection pool or budget: an import does not double
        # the load on the store.
        self._build = build_platform
        self._backoff = Backoff(base=2.0, cap=300.0)
        self._metrics.counter("bridge_import_products_total", "Products read by import runs.")

    async def run(self) -> None:
        await self.start_first_import()
        failures = 0
        while True:
            for run in await self._state.open_runs(self.store.id):
                try:
                    await self.execute(run)
                    failures = 0
                except (PlatformError, HubError) as exc:
                    failures += 1
                    if await self._failed(run, exc, failures):
                        failures = 0  # given up on this run; the next one starts afresh
                    await wait_event(self._wake, self._backoff.delay(failures))
                    break
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

    async def execute(self, run: Run) -> None:
        """Run (or resume) one run to its end. Raises PlatformError when the store fails."""
        settings = thaw(self.store, run.config)
        async with self._build(settings) as platform:
            if run.kind == "repair":
                await self._repair(run, settings, platform)
            else:
                await self._execute(run, platform)

    async def _repair(self, run: Run, settings: StoreSettings, platform: Platform) -> None:
        if self._hub_hashes is None:
            await self._state.finish_run(run.id, state="failed", error="no hub to repair against")
            return
        repair = Repair(
            self, self._hub_hashes, deletions=settings.deletions, concurrency=settings.concurrency
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
        checks = self._images if self.store.image_checks else None  # `image_checks = false`
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
        async for page in platform.catalog(resume):
            changes = [Change(self.store.id, p.id, p, "import", now_ms()) for p in page.products]
            for product in page.products:
                for warning in warnings_of(product):
                    checkpoint[warning] = checkpoint.get(warning, 0) + 1
            if page.failures:
                failed = checkpoint.setdefault("failed", [])
                failed += [
                    {"product": f.product_id, "status": f.status, "message": f.message}
                    for f in page.failures
                ][: MAX_FAILED_LISTED - len(failed)]
                checkpoint["failed_count"] = checkpoint.get("failed_count", 0) + len(page.failures)
            done += len(page.products)
            checkpoint["next"] = page.next_token
            checkpoint["pages"] = checkpoint.get("pages", 0) + 1
            queued = await self._state.record_page(
                changes, run_id=run.id, checkpoint=checkpoint, done=done, total=page.total
            )
            self._metrics.inc("bridge_import_products_total", len(page.products))
            self.recorded(queued, "import")
            if images is not None:  # the main image of each product (see images.py)
                images.submit(p.images[0].src for p in page.products if p.images)  # never waits
        return done

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
        await self._state.finish_run(run.id, report=report)
        for failure in report["failures"]:
            await self._state.log_event(
                f"{run.kind} run {run.id}: product could not be read: {failure['message']}",
                level="error",
                store=self.store.id,
                product=failure["product"],
                status=failure["status"],
            )
        if duplicates:
            listed = ", ".join(f"{sku} ({n} products)" for sku, n in duplicates[:DUPLICATES_LISTED])
            more = len(duplicates) - DUPLICATES_LISTED
            await self._state.log_event(
                f"{run.kind} run {run.id}: {len(duplicates)} SKU(s) held by more than one"
                f" product: {listed}" + (f" and {more} more" if more > 0 else ""),
                level="warning",
                store=self.store.id,
            )
        await self._state.log_event(
            f"{run.kind} run {run.id} finished: {report['imported']} product(s),"
            f" {report['failed']} failed,"
            f" {report['warnings']['no_image']} without image,"
            f" {report['warnings']['no_price']} without price,"
            f" {len(duplicates)} duplicate SKU(s)" + _image_summary(checkpoint.get("images")),
            store=self.store.id,
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
        )
        if self.health.state == "import_failing":
            self.health.ok()

    async def _failed(self, run: Run, exc: PlatformError | HubError, failures: int) -> bool:
        """Pause the run, or give up on it after MAX_FAILURES; True when given up."""
        self.health.fail("repair_failing" if run.kind == "repair" else "import_failing", str(exc))
        if failures < MAX_FAILURES:
            log.warning("run_paused", store=self.store.id, run=run.id, error=str(exc))
            return False
        message = f"{run.kind} run {run.id} failed {failures} times in a row: {exc}"
        await self._state.finish_run(run.id, state="failed", error=str(exc))
        await self._state.log_event(message, level="error", store=self.store.id)
        log.error("run_failed", store=self.store.id, run=run.id, error=str(exc))
        return True
