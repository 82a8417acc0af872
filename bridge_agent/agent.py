"""The Agent: opens the resources, owns the root tasks, reloads and stops gracefully.

Theory of operation. `run()` opens the state store and the HTTP clients, builds the components
(the shipper, the stores with their tasks (`stores.py`), the scheduled exports
(`export/schedule.py`), the health and webhook listeners, the supervisor that feeds systemd) and
starts each as a named root task in one `asyncio.TaskGroup`.
The schedule (`scheduling.py`) starts with them and only nudges components; it is shut down
before the tasks are cancelled, so nothing nudges a stopped component.
Root tasks never return: one that returns or fails is a bug or a fatal condition, so `guard()`
turns it into an error, the group cancels the others, and `run()` raises; the CLI logs which task
stopped the agent and exits 1. Nothing is left half-alive (kopf's lesson).

Readiness. systemd hears `READY=1` only once the state store is open and the health listener is
bound; `STATUS=` carries a one-line summary; `WATCHDOG=1` is sent by the supervisor task only after
its liveness check passes (the event loop runs it, and the state store answers in time), so a
wedged loop or a stuck database stops the pings and systemd restarts the agent.

Reload. `reload()` (SIGHUP, or a change of the configuration file) reads and validates the file
again. An invalid file is refused with every problem logged, and the running configuration stays.
A valid one applies to new work: the shipper takes its new settings at its next round (the batch
in flight finishes as it started), a store whose settings changed has its tasks restarted (a spool
round interrupted mid-way loses nothing: files go only after their commit), added and removed
stores start and stop (`stores.plan_reload` says which), and so do added, removed and changed
`[[exports]]`. Listen addresses, the agent id and the
state directory need a restart; a reload that changes them says so and keeps the old values.

Stopping. `stop()` (first SIGTERM/SIGINT) stops the sources, so no new change is recorded, then
drains the outbox to the hub for at most `agent.drain_timeout` seconds while `/healthz` answers 503
"draining". A second `stop()` abandons the drain at once. Whatever is not shipped stays committed in
the state store and goes first at the next start: stopping never loses a change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import structlog
import watchfiles

from bridge_agent import __version__, logs, wire
from bridge_agent.config import Config, HubSettings, load_config
from bridge_agent.errors import (
    BridgeError,
    ConfigError,
    PlatformError,
    StateStoreError,
    StateStoreLost,
)
from bridge_agent.export.schedule import ScheduledExports
from bridge_agent.hublink import HubClient
from bridge_agent.metrics import Metrics
from bridge_agent.scheduling import Scheduler
from bridge_agent.server import AgentView, make_app, serve
from bridge_agent.shipper import Shipper, ShipperSettings
from bridge_agent.sources.webhooks import make_webhook_app
from bridge_agent.store import StateStore
from bridge_agent.stores import Stores
from bridge_agent.sync.retry import Backoff
from bridge_agent.systemd import Notifier

log = structlog.get_logger("bridge_agent.agent")

STATUS_INTERVAL = 5.0
LIVENESS_TIMEOUT = 5.0


class RootTaskExited(BridgeError):
    """A root task returned or failed: the agent cannot go on without it."""

    def __init__(self, name: str, cause: BaseException | None = None) -> None:
        self.task = name
        what = "returned" if cause is None else f"failed: {type(cause).__name__}: {cause}"
        super().__init__(f"root task {name!r} {what}")


async def guard(name: str, coro: Coroutine[Any, Any, Any]) -> None:
    """Run one root task; a return or a failure stops the agent with a clear log line."""
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("root_task_failed", task=name, error=f"{type(exc).__name__}: {exc}")
        raise RootTaskExited(name, exc) from exc
    log.error("root_task_returned", task=name)
    raise RootTaskExited(name)


class Agent:
    """One agent process. `run()` until `stop()`; see the module docstring."""

    def __init__(
        self,
        config: Config,
        *,
        metrics: Metrics | None = None,
        notifier: Notifier | None = None,
        load: Callable[[Path], Config] = load_config,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.notifier = notifier or Notifier()
        self._load = load
        self._stopping = asyncio.Event()
        self._abandon = asyncio.Event()
        self._reload = asyncio.Event()
        self._draining = False
        self.health_port: int | None = None
        self.shipper: Shipper | None = None
        self.reloads = 0  # applied reloads, for status and tests
        self._group: asyncio.TaskGroup | None = None
        self._scheduler = Scheduler()
        self._stores: Stores  # made in run(), with the state store
        self.exports: ScheduledExports | None = None  # made in run(), with the state store
        self._http_clients: list[httpx.AsyncClient] = []
        self._closing: set[asyncio.Future[None]] = set()  # clients of stopped stores, closing
        self.webhook_port: int | None = None
        self._webhook_task: asyncio.Task[None] | None = None
        self.metrics.counter("bridge_config_reloads_total", "Configuration reloads, by outcome.")

    # -- control (signal-safe) -----------------------------------------------------------------

    def stop(self) -> None:
        """Ask for a graceful stop; a second call abandons the drain. Safe from a signal handler."""
        if self._stopping.is_set():
            if not self._abandon.is_set():
                log.warning("drain_abandoned", reason="second stop request")
            self._abandon.set()
        self._stopping.set()

    def reload(self) -> None:
        """Ask for the configuration file to be read again. Safe from a signal handler."""
        self._reload.set()

    @property
    def draining(self) -> bool:
        return self._draining

    # -- run -----------------------------------------------------------------------------------

    async def run(self, *, ready: asyncio.Event | None = None) -> None:
        cfg = self.config
        async with contextlib.AsyncExitStack() as stack:
            state = await stack.enter_async_context(StateStore.open(cfg.agent.state_dir))
            if state.created:
                await self._announce_new_state(state)
            # A state restored from a backup (or a new one) counts seqs from where it stood; the
            # hub is idempotent on (agent, seq), so seqs of a later life must never come back.
            await state.raise_seq_to_clock()
            stack.push_async_callback(self._close_clients)
            stack.callback(self.notifier.close)
            shipper = Shipper(
                state, self._hub_client(cfg.hub), _shipper_settings(cfg), self.metrics
            )
            self.shipper = shipper
            self._state = state
            stores = self._stores = Stores(
                state=state,
                metrics=self.metrics,
                scheduler=self._scheduler,
                spawn=self._spawn,
                open_client=self._client,
                forget_client=self._forget_client,
                on_recorded=shipper.nudge,
                hub_hashes=self._hub_hashes,
                hub_markers=self._hub_markers,
                hub=lambda: self._hub,
            )
            # Build every adapter before any task starts: a store whose settings its adapter
            # refuses is a configuration error (exit 78), not a half-started agent.
            built = stores.build(s for s in cfg.stores if s.active)
            app = make_app(
                AgentView(
                    cfg.agent.id,
                    state,
                    shipper.hub,
                    self.metrics,
                    stores.views,
                    lambda: self.draining,
                )
            )
            bound = asyncio.Event()

            def on_bound(port: int) -> None:
                self.health_port = port
                bound.set()

            self._scheduler.start()
            stack.push_async_callback(self._scheduler.shutdown)  # also when a root task fails
            async with asyncio.TaskGroup() as group:
                self._group = group
                listen = cfg.health.listen
                health = serve(
                    app, listen.host, listen.port,
                    name="health", limits=cfg.health, metrics=self.metrics, bound=on_bound,
                )  # fmt: skip
                server = self._spawn("server:health", health)
                work = [self._spawn("shipper", shipper.run())]
                self._ensure_webhook_listener(cfg)
                await stores.load_pauses()  # a paused store stays paused across restarts
                for store in cfg.stores:
                    stores.start(store, built.get(store.id))
                work.append(self._spawn("pauses", stores.watch_pauses()))
                exports = self.exports = ScheduledExports(state, self._scheduler, self._spawn)
                exports.start(cfg.exports, cfg.stores)
                await bound.wait()
                supervisor = self._spawn("supervisor", self._supervise())
                reloader = self._spawn("reloader", self._reloader())
                log.info(
                    "agent_started",
                    agent=cfg.agent.id,
                    version=__version__,
                    stores=len(cfg.stores),
                    health_port=self.health_port,
                )
                self.notifier.ready(await self._status_line())
                if ready is not None:
                    ready.set()
                await self._stopping.wait()
                log.info("agent_stopping")
                self.notifier.stopping()
                reloader.cancel()
                await self._scheduler.shutdown()  # no more nudges: the sources stop next
                listeners = [] if self._webhook_task is None else [self._webhook_task]
                for task in [*work, *listeners]:
                    task.cancel()
                await stores.shutdown()
                await exports.shutdown()  # a run in progress stops; its mark stays
                await asyncio.gather(*work, *listeners, reloader, return_exceptions=True)
                await self._drain(shipper, state)
                supervisor.cancel()
                server.cancel()
            self._group = None
            log.info("agent_stopped")

    async def _announce_new_state(self, state: StateStore) -> None:
        """Say loudly that the agent starts from nothing: a first install, or lost state."""
        message = (
            f"new, empty state store at {state.path}: no earlier state was found (a first start,"
            " or the state directory was lost or restored from elsewhere); the catalog is"
            " imported and the hub repaired against it"
        )
        log.warning("state_store_new", path=str(state.path), detail=message)
        await state.log_event(message, level="warning")

    def _spawn(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[None]:
        assert self._group is not None
        task = self._group.create_task(guard(name, coro), name=name)
        # A stop that comes before the task's first step cancels `guard` before it awaits
        # `coro`: closing it then keeps Python from warning "coroutine ... was never awaited"
        # (a no-op for a coroutine that ran).
        task.add_done_callback(lambda _: coro.close())
        return task

    def _client(
        self, *, timeout: float, base_url: str = "", verify: bool = True
    ) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": f"bridge-agent/{__version__}"},
            verify=verify,  # on unless a store's operator turned it off for that store alone
        )
        self._http_clients.append(client)
        return client

    def _hub_client(self, hub: HubSettings) -> HubClient:
        client = HubClient(self._client(timeout=hub.timeout, base_url=hub.url), hub.token.reveal())
        self._hub = client  # the newest one: what the shipper uses, and repair runs too
        return client

    async def _hub_hashes(self, store: str, after: str, limit: int) -> wire.HashPage:
        """A page of the hub's ids and hashes, for repair runs (injected: sources import no
        shipper), on the hub client of the moment (a reload may replace it)."""
        return await self._hub.hashes(store, after, limit)

    async def _hub_markers(
        self, store: str, items: Sequence[tuple[str, str]], verified_at: int
    ) -> wire.VerifiedReply | None:
        """Verification markers of unchanged products (sources/verify.py), on the hub client of
        the moment; None from a hub that takes none."""
        agent = self.config.agent.id
        return await self._hub.post_verified(store, items, verified_at, agent=agent)

    def _forget_client(self, http: httpx.AsyncClient) -> None:
        """Stop tracking a client and close it in the background (it may still be in use by a
        task being cancelled; closing waits for nothing)."""
        with contextlib.suppress(ValueError):
            self._http_clients.remove(http)
        task = asyncio.ensure_future(http.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_clients(self) -> None:
        await asyncio.gather(*self._closing, return_exceptions=True)
        await asyncio.gather(*(c.aclose() for c in self._http_clients), return_exceptions=True)

    # -- listeners -----------------------------------------------------------------------------

    def _ensure_webhook_listener(self, cfg: Config) -> None:
        """Bind the webhook listener once an active store can verify webhooks (start or reload)."""
        wanted = any(s.active and "webhook_secret" in s.secrets for s in cfg.stores)
        if wanted and self._webhook_task is None:
            self._webhook_task = self._spawn("server:webhooks", self._serve_webhooks(self._state))

    async def _serve_webhooks(self, state: StateStore) -> None:
        listen = self.config.webhooks.listen
        app = make_webhook_app(
            self._stores.routes,
            state,
            self.metrics,
            max_body_bytes=self.config.webhooks.max_body_bytes,
        )

        def bound(port: int) -> None:
            self.webhook_port = port

        limits = self.config.webhooks
        await serve(
            app, listen.host, listen.port,
            name="webhooks", limits=limits, metrics=self.metrics, bound=bound,
        )  # fmt: skip

    # -- reload --------------------------------------------------------------------------------

    async def _reloader(self) -> None:
        """Root task: apply reload requests one at a time, from SIGHUP or the file changing."""
        watcher = asyncio.create_task(self._watch_config(), name="config-watch")
        try:
            while True:
                await self._reload.wait()
                self._reload.clear()
                await self._apply_reload()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _watch_config(self) -> None:
        path = self.config.source  # absolute: load_config resolves it
        # Watch the folder, not the file: editors and config managers replace files by rename.
        try:
            async for changes in watchfiles.awatch(path.parent, debounce=200, recursive=False):
                if any(Path(p) == path for _, p in changes):
                    log.info("config_file_changed", path=str(path))
                    self._reload.set()
        except OSError as exc:  # the folder vanished or cannot be watched: SIGHUP still works
            log.warning("config_watch_unavailable", path=str(path), error=str(exc))

    async def _apply_reload(self) -> None:
        self.notifier.reloading()
        old = self.config
        try:
            new = await asyncio.to_thread(self._load, old.source)
        except ConfigError as exc:
            self.metrics.inc("bridge_config_reloads_total", outcome="rejected")
            log.error(
                "config_reload_rejected",
                path=str(old.source),
                problems=list(exc.problems),
                kept="running configuration",
            )
            self.notifier.ready(await self._status_line())
            return
        new = self._keep_restart_only(old, new)
        logs.register_secrets(secret_values(new))
        logs.set_level(new.agent.log_level)
        try:
            await self._apply(old, new)
        except (ConfigError, PlatformError) as exc:
            self.metrics.inc("bridge_config_reloads_total", outcome="rejected")
            log.error("config_reload_failed", error=str(exc))
            self.notifier.ready(await self._status_line())
            return
        self.config = new
        self.reloads += 1
        self.metrics.inc("bridge_config_reloads_total", outcome="applied")
        log.info("config_reloaded", path=str(new.source), stores=len(new.stores))
        self.notifier.ready(await self._status_line())

    def _keep_restart_only(self, old: Config, new: Config) -> Config:
        needs_restart = [
            name
            for name, before, after in (
                ("agent.id", old.agent.id, new.agent.id),
                ("agent.state_dir", old.agent.state_dir, new.agent.state_dir),
                ("health", old.health, new.health),  # every key: the listeners are bound once
                ("webhooks", old.webhooks, new.webhooks),
            )
            if before != after
        ]
        if needs_restart:
            log.warning("config_change_needs_restart", keys=needs_restart)
        return replace(
            new,
            agent=replace(new.agent, id=old.agent.id, state_dir=old.agent.state_dir),
            health=old.health,
            webhooks=old.webhooks,
        )

    async def _apply(self, old: Config, new: Config) -> None:
        # Build the adapters of new and changed stores first: a store whose adapter refuses its
        # settings fails the whole reload before anything running is touched.
        prepared = self._stores.prepare(old.stores, new.stores)
        assert self.shipper is not None
        if new.hub != old.hub or new.agent.id != old.agent.id:
            hub = self._hub_client(new.hub) if new.hub.url != old.hub.url or (
                new.hub.token != old.hub.token or new.hub.timeout != old.hub.timeout
            ) else None  # fmt: skip
            self.shipper.configure(_shipper_settings(new), hub)
        await self._stores.apply(prepared)
        if self.exports is not None:
            await self.exports.apply(new.exports, new.stores)
        self._ensure_webhook_listener(new)

    # -- supervision ---------------------------------------------------------------------------

    async def _supervise(self) -> None:
        """Root task: STATUS= lines, and watchdog pings while the liveness check passes."""
        interval = self.notifier.watchdog_interval
        period = min(interval, STATUS_INTERVAL) if interval else STATUS_INTERVAL
        last_status = ""
        while True:
            alive = await self._alive(within=min(period, LIVENESS_TIMEOUT))
            if alive and interval:
                self.notifier.watchdog()
            line = await self._status_line() if alive else "state store not answering"
            if line != last_status:
                self.notifier.status(line)
                last_status = line
            await asyncio.sleep(period)

    async def _alive(self, *, within: float) -> bool:
        """Whether the state store answers in time. Raises StateStoreLost: the agent stops."""
        try:
            async with asyncio.timeout(within):
                await self._state.check()
        except StateStoreLost:
            raise  # the root task fails: nothing can be committed anymore (store/__init__.py)
        except (TimeoutError, StateStoreError) as exc:
            log.error("liveness_check_failed", error=str(exc) or "state store did not answer")
            return False
        return True

    async def _status_line(self) -> str:
        stats = await self._state.stats()
        hub = self.shipper.hub.health.state if self.shipper else "unknown"
        runs = len(await self._state.open_runs())
        return (
            f"outbox {stats.pending} pending, {stats.rejected} rejected; hub {hub}; "
            f"{len(self._stores)} store(s); {runs} run(s)"
        )

    # -- stop ----------------------------------------------------------------------------------

    async def _drain(self, shipper: Shipper, state: StateStore) -> None:
        self._draining = True
        timeout = self.config.agent.drain_timeout
        before = (await state.stats()).pending
        log.info("drain_started", pending=before, timeout_s=timeout)
        drain = asyncio.create_task(shipper.drain(abandon=self._abandon), name="drain")
        abandon = asyncio.create_task(self._abandon.wait(), name="drain-abandon")
        done, _ = await asyncio.wait(
            {drain, abandon}, timeout=timeout, return_when="FIRST_COMPLETED"
        )
        for task in (drain, abandon):
            task.cancel()
        await asyncio.gather(drain, abandon, return_exceptions=True)
        left = (await state.stats()).pending
        outcome = "done" if drain in done else ("abandoned" if abandon in done else "timed_out")
        log.info("drain_finished", outcome=outcome, shipped=max(before - left, 0), left=left)


def secret_values(config: Config) -> list[str]:
    """Every secret in the configuration, for the log redactor."""
    values = [config.hub.token.reveal()]
    for store in config.stores:
        values += [s.reveal() for s in store.secrets.values()]
    # The credentials of export destinations (SFTP keys, S3 key pairs) and of backups.
    destinations = [e.destination for e in config.exports]
    destinations += [s.backup_destination for s in config.stores if s.backup_destination]
    for destination in destinations:
        for key in ("private_key", "passphrase", "access_key_id", "secret_access_key"):
            secret = getattr(destination, key, None)
            if secret is not None:
                values.append(secret.reveal())
    return values


def _shipper_settings(cfg: Config) -> ShipperSettings:
    return ShipperSettings(
        agent_id=cfg.agent.id,
        batch_max_items=cfg.hub.batch_max_items,
        batch_max_bytes=cfg.hub.batch_max_bytes,
        max_in_flight=cfg.hub.max_in_flight,
        batch_linger=cfg.hub.batch_linger,
        backoff=Backoff(
            cfg.hub.backoff_base, cfg.hub.backoff_cap, retry_after_cap=cfg.hub.max_retry_after
        ),
        auth_retry_interval=cfg.hub.auth_retry_interval,
    )
