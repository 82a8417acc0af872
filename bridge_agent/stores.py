"""The stores the agent serves: one store's adapter, its root tasks and schedule, and reloads.

One store, wired here (the agent only says start, stop, apply a reload):
- one adapter, built once by `Stores.build_adapter` (the one place adapters are made) on an HTTP
  client of its own (TLS verification is a per-store setting); it is what `StoreContext.platform`
  holds for every source of the store, and it is `aclose`d when the store stops.
- its root tasks, named `<kind>:<store>`: `check` (a cheap authenticated call, and keeping the
  store's webhooks registered), `import` (import, refresh and repair runs), `hints` (webhook
  hints), `poll` and `reconcile` when the adapter offers modified-since and id listings, `spool`
  when the store has a spool directory, `downstream` (downstream/engine.py) when the adapter
  writes and the store's `downstream` setting is on (with `backup_before_bulk`, an export of
  the products before each bulk apply: export/backup.py), and with it `jsonld`
  (downstream/keeper.py) when the adapter writes JSON-LD (nudged by every change the store's
  sources record). Which ones start follows the adapter's declared capabilities
  (platforms/base.py): the core asks, never assumes.
- its schedule (`scheduling.py`): jobs `check:<store>`, `poll:<store>`, `reconcile:<store>` that
  only nudge those tasks. A store check and a poll are due at start, then every
  `STORE_CHECK_INTERVAL` and `poll_interval`; a reconciliation is due from its persisted time
  (`Reconciler.first_due`), then every `reconcile_interval`.
- its webhook route (when the adapter takes webhooks) and its entry in `/status`.
An inactive store is listed (status shows it inactive) and runs nothing.

Reloads. `plan_reload(old, new)` is pure: it compares the stores of two configurations and says
what happens to each (see `StoreAction`). Any change to a store's settings (url, secrets,
platform, options, intervals, ...) restarts its tasks on a new adapter, because every one of them
was built from those settings; an unchanged store keeps its tasks and adapter untouched, mid-run
included. The adapters a reload needs are built before anything running is touched, so one that
refuses its settings fails the whole reload and the running stores go on as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import httpx
import structlog

from bridge_agent import platforms, wire
from bridge_agent.config import StoreSettings
from bridge_agent.downstream.engine import Downstream, writer_of
from bridge_agent.downstream.feed import HubLink
from bridge_agent.downstream.keeper import JsonLdKeeper, jsonld_options
from bridge_agent.errors import PlatformError
from bridge_agent.export.backup import BulkBackup
from bridge_agent.health import Health
from bridge_agent.metrics import Metrics
from bridge_agent.platforms import Platform
from bridge_agent.platforms.base import (
    Capability,
    WebhookRegistrar,
    Writer,
    capabilities_of,
)
from bridge_agent.platforms.http import RequestBudget, build_platform
from bridge_agent.scheduling import Scheduler
from bridge_agent.server import StoreView
from bridge_agent.sources import StoreContext
from bridge_agent.sources.hints import HintWorker
from bridge_agent.sources.images import ImageChecker
from bridge_agent.sources.importer import Importer, freeze
from bridge_agent.sources.poller import Poller
from bridge_agent.sources.reconcile import Reconciler
from bridge_agent.sources.spool import SpoolWatcher
from bridge_agent.sources.verify import HubMarkers
from bridge_agent.sources.webhooks import WebhookRoute
from bridge_agent.store import StateStore
from bridge_agent.sync.scope import Scope

log = structlog.get_logger("bridge_agent.stores")

STORE_CHECK_INTERVAL = 300.0
PAUSE_CHECK_INTERVAL = 1.0  # how soon a running agent follows `bridge-agent pause | resume`
STORE_CLIENT_TIMEOUT = 30.0


# -- reload plans (pure) ---------------------------------------------------------------------


class StoreAction(StrEnum):
    """What a reload does to one store."""

    START = "start"  # added, or turned active: its adapter is built and its tasks start
    RESTART = "restart"  # active, settings changed: tasks stopped, a new adapter, tasks started
    STOP = "stop"  # turned inactive: tasks stopped, adapter closed; still listed, as inactive
    IDLE = "idle"  # inactive before and after (added or changed): nothing runs; listing updated
    REMOVE = "remove"  # gone from the configuration: tasks stopped (if any), no longer listed
    KEEP = "keep"  # unchanged: its tasks and adapter go on untouched


class _Planned(Protocol):
    """What a plan reads of a store's settings: its id, whether it is active, and equality."""

    @property
    def id(self) -> str: ...

    @property
    def active(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """What a reload does to each store: `actions` in the new configuration's order (removed
    stores first), and for each changed store the names of the settings that changed (names
    only: a changed secret shows as `secrets`)."""

    actions: Mapping[str, StoreAction]
    changed: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def having(self, *actions: StoreAction) -> tuple[str, ...]:
        return tuple(s for s, a in self.actions.items() if a in actions)

    @property
    def build(self) -> tuple[str, ...]:
        """The stores that need a new adapter, built before anything running is touched."""
        return self.having(StoreAction.START, StoreAction.RESTART)

    @property
    def touched(self) -> tuple[str, ...]:
        """Every store the reload changes (all but the kept ones)."""
        return tuple(s for s, a in self.actions.items() if a is not StoreAction.KEEP)


def _changed_fields(before: object, after: object) -> tuple[str, ...]:
    if not (dataclasses.is_dataclass(before) and dataclasses.is_dataclass(after)):
        return ()
    return tuple(
        f.name
        for f in dataclasses.fields(before)
        if getattr(before, f.name, None) != getattr(after, f.name, None)
    )


def plan_reload(old: Iterable[_Planned], new: Iterable[_Planned]) -> ReloadPlan:
    """What a reload from the stores `old` to the stores `new` does to each store (pure).

    Stores are matched by id. Equal settings keep the store as it runs; any difference restarts
    a running store (its tasks and adapter were all built from the old settings). Activity
    decides the rest: an added or re-activated store starts, a de-activated one stops, and a
    store inactive on both sides only has its listing updated.
    """
    before = {s.id: s for s in old}
    after = {s.id: s for s in new}
    actions: dict[str, StoreAction] = {}
    changed: dict[str, tuple[str, ...]] = {}
    for store_id in before:
        if store_id not in after:
            actions[store_id] = StoreAction.REMOVE
    for store_id, settings in after.items():
        previous = before.get(store_id)
        if previous is not None and previous == settings:
            actions[store_id] = StoreAction.KEEP
            continue
        if previous is not None:
            changed[store_id] = _changed_fields(previous, settings)
        was_running = previous is not None and previous.active
        if settings.active:
            actions[store_id] = StoreAction.RESTART if was_running else StoreAction.START
        else:
            actions[store_id] = StoreAction.STOP if was_running else StoreAction.IDLE
    return ReloadPlan(actions, changed)


# -- one store's adapter ---------------------------------------------------------------------


OpenClient = Callable[..., httpx.AsyncClient]  # (timeout=, verify=): a client the agent tracks
HubHashes = Callable[[str, str, int], Awaitable[wire.HashPage]]


@dataclass(frozen=True, slots=True)
class Adapter:
    """A store's adapter and the HTTP client it talks through (closed with the store)."""

    platform: Platform
    http: httpx.AsyncClient


async def close_platform(platform: Platform | None, store_id: str) -> None:
    """`aclose()` an adapter (a v1 adapter may have none); its failure is logged, not raised."""
    close = getattr(platform, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception:  # an adapter's bug must not stop a reload or a shutdown
        log.exception("platform_close_failed", store=store_id)


# -- one store's tasks -----------------------------------------------------------------------


class StoreChecker:
    """Root task: a cheap authenticated call per nudge, so /healthz shows a store outage.

    With a `webhook_url`, the same beat keeps the store's webhooks alive: registered at the first
    success, re-activated whenever the platform disabled them (WooCommerce does so after a few
    failed deliveries and never says it). What was done goes to the event log. The schedule
    nudges it at start and every `STORE_CHECK_INTERVAL`.
    """

    def __init__(
        self,
        platform: Platform,
        health: Health,
        state: StateStore,
        store_id: str,
        webhook_url: str | None = None,
    ) -> None:
        self._platform = platform
        self.health = health
        self._state = state
        self.store_id = store_id
        self._webhook_url = webhook_url
        self._registered = False
        self._wake = asyncio.Event()

    def nudge(self) -> None:
        """Check now (the schedule's job calls this)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.check_once()

    async def check_once(self) -> None:
        """One check (and webhook upkeep); a store failure shows in health, never raises."""
        health = self.health
        try:
            await self._platform.check()
        except PlatformError as exc:
            health.fail("unreachable", str(exc))
            return
        try:
            await self._keep_webhooks()
        except PlatformError as exc:
            # The store answers; its webhooks are what failed (often a key without write
            # access to them). Changes still arrive by polling and reconciliation, so say that,
            # once in the event log, and keep trying at each check.
            message = (
                f"webhooks for {self._webhook_url} could not be registered or re-activated:"
                f" {exc}; changes arrive by polling and reconciliation until this is fixed"
            )
            if health.state != "webhooks_failing":
                log.warning("webhooks_failing", store=self.store_id, error=str(exc))
                await self._state.log_event(message, level="error", store=self.store_id)
            health.fail("webhooks_failing", message)
            return
        if health.state in ("starting", "unreachable", "webhooks_failing") or health.failing:
            health.ok()

    async def _keep_webhooks(self) -> None:
        url, platform = self._webhook_url, self._platform
        if not url or not isinstance(platform, WebhookRegistrar):
            return
        if self._registered:
            actions = await platform.reactivate_disabled_webhooks(url)
        else:
            actions = await platform.register_webhooks(url)
            self._registered = True
        for action in actions:
            if action.action != "unchanged":
                message = f"webhook {action.topic} (id {action.webhook_id}): {action.action}"
                log.info("webhook_maintained", store=self.store_id, detail=message)
                await self._state.log_event(message, store=self.store_id)


@dataclass
class StoreTasks:
    """One configured store as it runs: its settings, root tasks, jobs, adapter and client."""

    settings: StoreSettings
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)  # scheduler job ids
    http: httpx.AsyncClient | None = None  # the adapter's client, closed with the store
    platform: Platform | None = None  # the store's one adapter, `aclose`d with the store
    importer: Importer | None = None


Spawn = Callable[[str, Coroutine[Any, Any, Any]], asyncio.Task[None]]


class Stores(Mapping[str, StoreTasks]):
    """The configured stores as they run, by id; starts, stops and reloads them.

    The agent hands over what the stores share: the state store, the scheduler, `spawn` (a root
    task in the agent's task group), `open_client`/`forget_client` (HTTP clients the agent tracks
    and closes at exit), the shipper's nudge and the hub's hash pages for repair runs. `views`
    and `routes` are the live mappings the status and webhook servers read.
    """

    def __init__(
        self,
        *,
        state: StateStore,
        metrics: Metrics,
        scheduler: Scheduler,
        spawn: Spawn,
        open_client: OpenClient,
        forget_client: Callable[[httpx.AsyncClient], None],
        on_recorded: Callable[[], None],
        hub_hashes: HubHashes,
        hub_markers: HubMarkers | None = None,
        hub: Callable[[], HubLink] | None = None,
    ) -> None:
        self._state = state
        self._metrics = metrics
        self._scheduler = scheduler
        self._spawn = spawn
        self._open_client = open_client
        self._forget_client = forget_client
        self._on_recorded = on_recorded
        self._hub_hashes = hub_hashes
        self._hub_markers = hub_markers
        self._hub = hub  # the hub client of the moment, for the downstream direction
        self._entries: dict[str, StoreTasks] = {}
        self._budgets: dict[str, RequestBudget] = {}  # one per store, shared by its adapters
        self.views: dict[str, StoreView] = {}
        self.routes: dict[str, WebhookRoute] = {}
        self.paused: dict[str, int] = {}  # paused stores, and when (`load_pauses`)

    # Mapping: the stores listed, running or inactive.
    def __getitem__(self, store_id: str) -> StoreTasks:
        return self._entries[store_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    # -- adapters ------------------------------------------------------------------------------

    def build_adapter(self, store: StoreSettings) -> Adapter:
        """The store's adapter on an HTTP client of its own: the one place adapters are made.

        ConfigError (no such platform) or the adapter's refusal of its settings goes up, and the
        client opened for it is closed.
        """
        verify = bool(store.options.get("verify_tls", True))  # per store, never for all at once
        http = self._open_client(timeout=STORE_CLIENT_TIMEOUT, verify=verify)
        try:
            factory = platforms.load(store.platform)
            return Adapter(self._on_budget(factory, store, http), http)
        except BaseException:
            self._forget_client(http)
            raise

    def _on_budget(
        self, factory: type[Platform], store: StoreSettings, http: httpx.AsyncClient
    ) -> Platform:
        """An adapter whose every request goes through the store's one request budget."""
        budget = self._budgets.get(store.id)
        wanted = (store.concurrency, store.requests_per_second)
        if budget is None or (budget.concurrency, budget.requests_per_second) != wanted:
            # A new budget only when the store asks for another one: a reload that restarts
            # the store for another reason keeps the pacing (and the slots) it had.
            budget = self._budgets[store.id] = RequestBudget.for_store(store)
        return build_platform(factory, store, http, budget=budget, metrics=self._metrics)

    def build(self, stores: Iterable[StoreSettings]) -> dict[str, Adapter]:
        """Adapters for these stores, or none: if one refuses its settings, the clients of those
        already built are closed before the error goes up."""
        built: dict[str, Adapter] = {}
        try:
            for store in stores:
                built[store.id] = self.build_adapter(store)
        except BaseException:
            for adapter in built.values():
                self._forget_client(adapter.http)
            raise
        return built

    @contextlib.asynccontextmanager
    async def run_adapter(self, settings: StoreSettings) -> AsyncIterator[Platform]:
        """The adapter one execution of a run uses: the store's own.

        A run keeps the settings it started with (`sources/importer.py` `freeze`); when those
        are the store's current ones (nearly always), the run uses the store's adapter itself.
        When the configuration changed since the run started, the run gets the same adapter
        class built with its frozen settings on the store's own HTTP client and request budget:
        no second connection pool and no second budget, so an import never doubles the load on
        the store. That view is closed after the run (not the client: the store owns it).
        """
        entry = self._entries[settings.id]
        if entry.platform is None or entry.http is None:
            raise PlatformError(f"store {settings.id!r} is not running")
        if freeze(settings) == freeze(entry.settings):
            yield entry.platform
            return
        # The store's budget as it is, even when the frozen settings ask for another pace: the
        # store is asked through one budget at a time, and a run never replaces it.
        view = build_platform(
            type(entry.platform),
            settings,
            entry.http,
            budget=self._budgets[settings.id],
            metrics=self._metrics,
        )
        try:
            yield view
        finally:
            await close_platform(view, settings.id)

    # -- start and stop ------------------------------------------------------------------------

    def start(self, store: StoreSettings, adapter: Adapter | None) -> None:
        """List one store and, with its adapter (an active store), start its tasks and jobs
        (unless it is paused: then they start at `resume`)."""
        health = Health(f"store:{store.id}")
        offers = capabilities_of(adapter.platform) if adapter else frozenset()
        self.views[store.id] = StoreView(
            store.id,
            store.platform,
            store.active,
            health,
            spool_dir=store.spool_dir,
            capabilities=tuple(sorted(offers)),
            paused_at=self.paused.get(store.id),
            filters=None if (scope := Scope.of(store.filters)).is_everything else scope.describe(),
        )
        entry = StoreTasks(store)
        self._entries[store.id] = entry
        if adapter is None:
            return
        entry.platform = adapter.platform
        entry.http = adapter.http
        if store.id in self.paused:
            log.info("store_paused", store=store.id, detail="bridge-agent resume starts it")
            if Capability.WEBHOOKS in offers:
                # Deliveries are still verified and committed as hints while paused (a 404
                # would make the platform give up on the webhook); resume handles them.
                self.routes[store.id] = WebhookRoute(store.platform, adapter.platform, _ignore)
            return
        self._launch(entry)

    def _launch(self, entry: StoreTasks) -> None:
        """Build a store's sources and start their tasks and jobs on its adapter."""
        store, platform = entry.settings, entry.platform
        assert platform is not None, "only a store with an adapter is launched"
        health = self.views[store.id].health
        offers = capabilities_of(platform)
        writer = writer_of(platform) if store.downstream and self._hub is not None else None
        keeper = self._keeper(store, writer)
        on_recorded = self._on_recorded
        if keeper is not None:
            on_recorded = _both(self._on_recorded, keeper.nudge)  # a store change: look now
        ctx = StoreContext(
            store.id,
            platform,
            self._state,
            on_recorded,
            self._metrics,
            health,
            scope=Scope.of(store.filters),
        )
        importer = entry.importer = Importer(
            ctx,
            store=store,
            build_platform=self.run_adapter,
            images=ImageChecker,  # one per run, with its own aiohttp session
            hub_hashes=self._hub_hashes,
            hub_markers=self._hub_markers,
        )
        hints = HintWorker(ctx, deletions=store.deletions, concurrency=store.concurrency)
        registers = Capability.WEBHOOK_REGISTRATION in offers
        checker = StoreChecker(
            platform,
            health,
            self._state,
            store.id,
            store.options.get("webhook_url") if registers else None,
        )
        tasks: dict[str, Coroutine[Any, Any, None]] = {
            "check": checker.run(),
            "import": importer.run(),
            "hints": hints.run(),
        }
        now = datetime.now(UTC)
        jobs: dict[str, tuple[float, Callable[[], None], datetime | None]] = {
            "check": (STORE_CHECK_INTERVAL, checker.nudge, now),
        }
        if Capability.MODIFIED_SINCE in offers:
            poller = Poller(ctx, interval=store.poll_interval, deletions=store.deletions)
            tasks["poll"] = poller.run()
            jobs["poll"] = (poller.interval, poller.nudge, now)
        if Capability.PRODUCT_IDS in offers:
            reconciler = Reconciler(
                ctx,
                interval=store.reconcile_interval,
                deletions=store.deletions,
                concurrency=store.concurrency,
            )
            tasks["reconcile"] = self._reconcile(reconciler, f"reconcile:{store.id}")
            entry.jobs.append(f"reconcile:{store.id}")  # armed by the task, from the cursor
        if store.spool_dir is not None:
            spool = SpoolWatcher(
                ctx,
                spool_dir=store.spool_dir,
                deletions=store.deletions,
                concurrency=store.concurrency,
            )
            tasks["spool"] = spool.run()
        if writer is not None and self._hub is not None:
            downstream = Downstream(
                store,
                platform,
                writer,
                self._state,
                self._metrics,
                hub=self._hub,
                on_recorded=self._on_recorded,
                backup=BulkBackup(self._state, store) if store.backup_before_bulk else None,
            )
            tasks["downstream"] = downstream.run()
            self.views[store.id].downstream_problem = downstream.problem  # shown by `status`
        if keeper is not None:
            tasks["jsonld"] = keeper.run()
        entry.tasks += [self._spawn(f"{kind}:{store.id}", coro) for kind, coro in tasks.items()]
        for kind, (seconds, nudge, first) in jobs.items():
            self._scheduler.every(f"{kind}:{store.id}", seconds, nudge, first=first)
            entry.jobs.append(f"{kind}:{store.id}")
        if store.verify_schedule != "off":
            # The scheduled verification sweep (sources/verify.py), at the store's own hours.
            job_id = f"verify:{store.id}"
            self._scheduler.cron(
                job_id, store.verify_schedule, importer.verification_due, tz=store.verify_timezone
            )
            entry.jobs.append(job_id)
        if Capability.WEBHOOKS in offers:
            self.routes[store.id] = WebhookRoute(store.platform, platform, hints.nudge)

    def _keeper(self, store: StoreSettings, writer: Writer | None) -> JsonLdKeeper | None:
        """The store's JSON-LD keeper (downstream/keeper.py): with a downstream direction whose
        adapter writes JSON-LD, so the written documents follow the store's prices and stock."""
        if writer is None or Capability.WRITE_JSONLD not in capabilities_of(writer):
            return None
        return JsonLdKeeper(
            store.id, writer, self._state, self._metrics, options=jsonld_options(store)
        )

    async def _reconcile(self, reconciler: Reconciler, job_id: str) -> None:
        """The reconcile task: arm its job from the persisted time of the last pass, then run."""
        first = await reconciler.first_due()
        self._scheduler.every(job_id, reconciler.interval, reconciler.nudge, first=first)
        await reconciler.run()

    async def stop(self, store_id: str) -> None:
        """Stop one store's tasks and jobs, close its adapter, and stop listing it."""
        entry = self._entries.pop(store_id)
        self.views.pop(store_id, None)
        self.routes.pop(store_id, None)
        await self._halt(store_id, entry)

    async def _halt(self, store_id: str, entry: StoreTasks) -> None:
        await self._cancel_tasks(entry)
        await close_platform(entry.platform, store_id)
        if entry.http is not None:
            self._forget_client(entry.http)

    async def _filters_changed(self, store: StoreSettings) -> None:
        """Rule 07: new filters never change a run in progress; say so when one is open."""
        open_runs = await self._state.open_runs(store.id)
        if not open_runs:
            return
        ids = ", ".join(str(r.id) for r in open_runs)
        message = (
            f"the filters changed while run(s) {ids} are open: those finish with the filters"
            " they started with; the new filters apply to live changes now and to the next run"
            " (bridge-agent sync --restart starts over with them)"
        )
        log.warning("filters_changed_during_run", store=store.id, runs=ids)
        await self._state.log_event(message, level="warning", store=store.id, action="config")

    async def _cancel_tasks(self, entry: StoreTasks) -> None:
        for task in entry.tasks:
            task.cancel()
        await asyncio.gather(*entry.tasks, return_exceptions=True)
        for job_id in entry.jobs:  # after the tasks: a task cannot arm a job once cancelled
            self._scheduler.remove(job_id)
        entry.tasks, entry.jobs, entry.importer = [], [], None

    # -- pause and resume (`bridge-agent pause | resume`) --------------------------------------

    async def load_pauses(self) -> None:
        """Read which stores are paused, before the stores start (a pause outlives restarts)."""
        self.paused = await self._state.paused_stores()

    async def watch_pauses(self, interval: float = PAUSE_CHECK_INTERVAL) -> None:
        """Root task: follow `bridge-agent pause | resume`, which write to the state store.

        A paused store's tasks and jobs stop; its adapter stays open and its webhook route stays:
        deliveries are still verified and committed as hints (answered 2xx, so the platform never
        disables the webhook), and handled at resume, like spool files left in the folder.
        A run in progress stops sooner than this check: it reads its own state after each page.
        """
        while True:
            paused = await self._state.paused_stores()
            for store_id, entry in list(self._entries.items()):  # a reload may change them
                if self._entries.get(store_id) is not entry:
                    continue  # restarted or removed by a reload meanwhile
                was, now = store_id in self.paused, store_id in paused
                if now and not was and entry.tasks:
                    await self._cancel_tasks(entry)
                    log.warning("store_paused", store=store_id)
                elif was and not now and entry.platform is not None and not entry.tasks:
                    self._launch(entry)
                    log.info("store_resumed", store=store_id)
            self.paused = paused
            for store_id, view in self.views.items():
                view.paused_at = paused.get(store_id)
            await asyncio.sleep(interval)

    async def shutdown(self) -> None:
        """Stop every store's tasks and jobs and close the adapters; the stores stay listed
        (status still shows them while the outbox drains)."""
        for task in self.tasks():
            task.cancel()
        for store_id, entry in list(self._entries.items()):
            await self._halt(store_id, entry)

    def tasks(self) -> list[asyncio.Task[None]]:
        return [t for entry in self._entries.values() for t in entry.tasks]

    # -- reload --------------------------------------------------------------------------------

    def prepare(self, old: Sequence[StoreSettings], new: Sequence[StoreSettings]) -> Prepared:
        """The plan of a reload and the adapters it needs, built before anything is touched (an
        adapter that refuses its settings fails the reload here)."""
        plan = plan_reload(old, new)
        wanted = set(plan.build)
        return Prepared(plan, {s.id: s for s in new}, self.build(s for s in new if s.id in wanted))

    async def apply(self, prepared: Prepared) -> None:
        """Carry out a prepared reload: stop, restart, start and relist as the plan says."""
        plan, settings, built = prepared.plan, prepared.settings, prepared.built
        for store_id in plan.having(StoreAction.REMOVE):
            await self.stop(store_id)
            self._budgets.pop(store_id, None)
            log.info("store_removed", store=store_id)
        for store_id, action in plan.actions.items():
            if action in (StoreAction.KEEP, StoreAction.REMOVE):
                continue
            if store_id in self._entries:
                await self.stop(store_id)
            store = settings[store_id]
            if "filters" in plan.changed.get(store_id, ()):
                await self._filters_changed(store)
            self.start(store, built.get(store_id))
            log.info(
                "store_configured",
                store=store_id,
                active=store.active,
                action=str(action),
                changed=list(plan.changed.get(store_id, ())),
            )


@dataclass(frozen=True, slots=True)
class Prepared:
    """A reload ready to apply: its plan, the new settings by id, and the adapters built."""

    plan: ReloadPlan
    settings: Mapping[str, StoreSettings]
    built: Mapping[str, Adapter]


def _ignore() -> None:
    """The nudge of a paused store's webhook route: the hints wait in the state store."""


def _both(first: Callable[[], None], second: Callable[[], None]) -> Callable[[], None]:
    """One `on_recorded` that nudges two listeners (the shipper and the JSON-LD keeper)."""

    def nudge() -> None:
        first()
        second()

    return nudge
