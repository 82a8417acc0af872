"""The Agent: opens the resources, owns the root tasks, stops gracefully.

Theory of operation. `run()` opens the state store and the HTTP clients, builds the components
(shipper, one spool watcher and one store checker per active store, the health server) and starts
each as a named root task in one `asyncio.TaskGroup`. Root tasks never return: one that returns or
fails is a bug or a fatal condition, so `guard()` turns it into an error, the group cancels the
others, and `run()` raises; the CLI logs which task stopped the agent and exits 1. Nothing is left
half-alive (kopf's lesson).

Stopping. `stop()` (first SIGTERM/SIGINT) stops the sources, so no new change is recorded, then
drains the outbox to the hub for at most `agent.drain_timeout` seconds while `/healthz` answers 503
"draining". A second `stop()` abandons the drain at once. Whatever is not shipped stays committed in
the state store and goes first at the next start: stopping never loses a change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

import httpx
import structlog

from bridge_agent import __version__, platforms
from bridge_agent.config import Config, StoreSettings
from bridge_agent.errors import BridgeError, PlatformError
from bridge_agent.health import Health
from bridge_agent.metrics import Metrics
from bridge_agent.platforms import Platform
from bridge_agent.server import AgentView, StoreView, make_app, serve
from bridge_agent.shipper import HubClient, Shipper, ShipperSettings
from bridge_agent.sources.spool import SpoolWatcher
from bridge_agent.store import StateStore
from bridge_agent.sync.retry import Backoff

log = structlog.get_logger("bridge_agent.agent")

STORE_CHECK_INTERVAL = 300.0


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

    def __init__(self, config: Config, *, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self._stopping = asyncio.Event()
        self._abandon = asyncio.Event()
        self._draining = False
        self.health_port: int | None = None
        self.shipper: Shipper | None = None

    def stop(self) -> None:
        """Ask for a graceful stop; a second call abandons the drain. Safe from a signal handler."""
        if self._stopping.is_set():
            if not self._abandon.is_set():
                log.warning("drain_abandoned", reason="second stop request")
            self._abandon.set()
        self._stopping.set()

    @property
    def draining(self) -> bool:
        return self._draining

    async def run(self, *, ready: asyncio.Event | None = None) -> None:
        cfg = self.config
        async with contextlib.AsyncExitStack() as stack:
            state = await stack.enter_async_context(StateStore.open(cfg.agent.state_dir))
            hub_http = await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=cfg.hub.url,
                    timeout=httpx.Timeout(cfg.hub.timeout),
                    headers={"User-Agent": f"bridge-agent/{__version__}"},
                )
            )
            store_http = await stack.enter_async_context(
                httpx.AsyncClient(
                    timeout=httpx.Timeout(30.0),
                    headers={"User-Agent": f"bridge-agent/{__version__}"},
                )
            )
            shipper = Shipper(
                state,
                HubClient(hub_http, cfg.hub.token.reveal()),
                ShipperSettings(
                    agent_id=cfg.agent.id,
                    batch_max_items=cfg.hub.batch_max_items,
                    batch_max_bytes=cfg.hub.batch_max_bytes,
                    batch_linger=cfg.hub.batch_linger,
                    backoff=Backoff(cfg.hub.backoff_base, cfg.hub.backoff_cap),
                    auth_retry_interval=cfg.hub.auth_retry_interval,
                ),
                self.metrics,
            )
            self.shipper = shipper
            views: dict[str, StoreView] = {}
            sources: dict[str, Coroutine[Any, Any, None]] = {}
            for store in cfg.stores:
                health = Health(f"store:{store.id}")
                views[store.id] = StoreView(store.id, store.platform, store.active, health)
                if not store.active:
                    continue
                platform = platforms.load(store.platform).from_settings(store, store_http)
                sources[f"check:{store.id}"] = _check_store(platform, health)
                if store.spool_dir is not None:
                    sources[f"spool:{store.id}"] = self._spool(
                        store, platform, state, shipper, health
                    ).run()
            app = make_app(
                AgentView(
                    cfg.agent.id, state, shipper.hub, self.metrics, views, lambda: self.draining
                )
            )
            bound = asyncio.Event()

            def on_bound(port: int) -> None:
                self.health_port = port
                bound.set()

            async with asyncio.TaskGroup() as group:
                server = group.create_task(
                    guard(
                        "server:health",
                        serve(app, cfg.health.listen.host, cfg.health.listen.port, bound=on_bound),
                    ),
                    name="server:health",
                )
                work = [group.create_task(guard("shipper", shipper.run()), name="shipper")]
                work += [
                    group.create_task(guard(name, coro), name=name)
                    for name, coro in sources.items()
                ]
                await bound.wait()
                log.info(
                    "agent_started",
                    agent=cfg.agent.id,
                    version=__version__,
                    stores=len(cfg.stores),
                    tasks=sorted(t.get_name() for t in [server, *work]),
                )
                if ready is not None:
                    ready.set()
                await self._stopping.wait()
                log.info("agent_stopping")
                for task in work:
                    task.cancel()
                await asyncio.gather(*work, return_exceptions=True)
                await self._drain(shipper, state)
                server.cancel()
            log.info("agent_stopped")

    def _spool(
        self,
        store: StoreSettings,
        platform: Platform,
        state: StateStore,
        shipper: Shipper,
        health: Health,
    ) -> SpoolWatcher:
        assert store.spool_dir is not None
        return SpoolWatcher(
            store_id=store.id,
            spool_dir=store.spool_dir,
            platform=platform,
            state=state,
            on_recorded=shipper.nudge,
            metrics=self.metrics,
            health=health,
            deletions=store.deletions,
            concurrency=store.concurrency,
        )

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


async def _check_store(platform: Platform, health: Health) -> None:
    """Root task: a cheap authenticated call now and then, so /healthz shows a store outage."""
    while True:
        try:
            await platform.check()
        except PlatformError as exc:
            health.fail("unreachable", str(exc))
        else:
            if health.state in ("starting", "unreachable") or health.failing:
                health.ok()
        await asyncio.sleep(STORE_CHECK_INTERVAL)
