"""The agent's local HTTP server: `/healthz`, `/metrics` and `/status`, on loopback by default.

- `GET /healthz`: 200 when every named check passes, 503 while draining or when one fails. The
  body names each check (state store, hub, each store) with its state and detail, so an operator
  sees *what* is wrong, not only that something is (NGINX Agent's named sub-checks, Vector's 503
  while draining).
- `GET /metrics`: Prometheus text (see `metrics.py`).
- `GET /status`: JSON for `bridge-agent status` and scripts: outbox depth, oldest pending age,
  last shipment, hub link, per-store state (with the spool's backlog: files waiting and set
  aside), runs and recent events. A store with an open run is `importing`, `refreshing` or
  `repairing` rather than what its sources say (`watching`), unless it is failing: a failure
  is what an operator must see first.

The server only reads: it never writes the state store or calls a store or the hub.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from bridge_agent import __version__
from bridge_agent.errors import StateStoreError
from bridge_agent.health import Check, Health
from bridge_agent.listener import Limits, listening
from bridge_agent.metrics import Metrics
from bridge_agent.shipper import HubLink
from bridge_agent.sources.spool import backlog
from bridge_agent.store import Run, StateStore

log = structlog.get_logger("bridge_agent.server")

STATE_STORE_TIMEOUT = 2.0


@dataclass
class StoreView:
    """What the server shows about one configured store."""

    id: str
    platform: str
    active: bool
    health: Health
    spool_dir: Path | None = None
    capabilities: tuple[str, ...] = ()  # what the store's adapter offers (platforms/base.py)
    # The downstream task's current error (`Downstream.problem`), None while all is well; not
    # set for a store without a running downstream direction.
    downstream_problem: Callable[[], str | None] | None = None
    paused_at: int | None = None  # epoch ms of `bridge-agent pause`, None while not paused
    filters: str | None = None  # the store's filters in words (`Scope.describe`), None: all


@dataclass
class AgentView:
    """Everything the server reads, handed over by the agent."""

    agent_id: str
    state: StateStore
    hub: HubLink
    metrics: Metrics
    stores: Mapping[str, StoreView]
    draining: Callable[[], bool]
    started_at: float = field(default_factory=time.time)


VIEW = web.AppKey("view", AgentView)


def make_app(view: AgentView) -> web.Application:
    app = web.Application()
    app[VIEW] = view
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    _declare_metrics(view)
    return app


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    name: str,
    limits: Limits,
    metrics: Metrics | None = None,
    bound: Callable[[int], None] | None = None,
) -> None:
    """Root task: serve until cancelled, then shut down. `bound(port)` once listening.

    Every listener of the agent goes through here, so each one has the head, body and idle
    deadlines and the connection cap of `listener.py`; `name` labels it in metrics and logs.
    """
    async with listening(app, host, port, name=name, limits=limits, metrics=metrics) as actual:
        log.info("listening", listener=name, host=host, port=actual)
        if bound is not None:
            bound(actual)
        await asyncio.Event().wait()


async def checks(view: AgentView) -> list[Check]:
    out = [await _state_store_check(view.state)]
    out.append(view.hub.health.check())
    for store in view.stores.values():
        if not store.active:
            out.append(Check(f"store:{store.id}", True, "inactive"))
        else:
            c = store.health.check()
            out.append(Check(f"store:{store.id}", c.ok, c.state, c.detail))
    return out


async def healthz(request: web.Request) -> web.Response:
    view = request.app[VIEW]
    found = await checks(view)
    draining = view.draining()
    healthy = all(c.ok for c in found) and not draining
    body = {
        "status": "draining" if draining else ("ok" if healthy else "failing"),
        "checks": {c.name: {"ok": c.ok, "state": c.state, "detail": c.detail} for c in found},
    }
    return web.json_response(body, status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    view = request.app[VIEW]
    try:
        stats = await view.state.stats()
    except StateStoreError:
        stats = None
    if stats is not None:
        m = view.metrics
        m.set("bridge_outbox_pending_items", stats.pending)
        m.set("bridge_outbox_rejected_items", stats.rejected)
        age = (
            0.0 if stats.oldest_pending_at is None else time.time() - stats.oldest_pending_at / 1e3
        )
        m.set("bridge_outbox_oldest_pending_age_seconds", max(age, 0.0))
    return web.Response(
        text=view.metrics.render(), content_type="text/plain", charset="utf-8",
        headers={"X-Content-Type-Options": "nosniff"},
    )  # fmt: skip


async def status(request: web.Request) -> web.Response:
    view = request.app[VIEW]
    doc = await status_document(
        view.state,
        view.agent_id,
        list(view.stores.values()),
        live=Live(view.hub, view.draining(), view.started_at),
    )
    return web.json_response(doc)


@dataclass(frozen=True, slots=True)
class Live:
    """What only a running agent knows."""

    hub: HubLink
    draining: bool
    started_at: float


async def status_document(
    state: StateStore, agent_id: str, stores: Sequence[StoreView], *, live: Live | None
) -> dict[str, Any]:
    """The `/status` document; with `live=None`, what the state directory alone can tell."""
    now = time.time()
    stats = await state.stats()
    stored = await state.meta("last_shipment_at")
    last_shipment = None if stored is None else int(stored) / 1e3
    if live is not None and live.hub.last_shipment_at is not None:
        last_shipment = live.hub.last_shipment_at
    runs = await state.runs(limit=10)
    first_open = {r.store: r.id for r in reversed(await state.open_runs())}  # oldest wins
    events = await state.events(limit=10)
    paused = await state.paused_stores()
    doc: dict[str, Any] = {
        "agent": agent_id,
        "version": __version__,
        "state": "stopped" if live is None else ("draining" if live.draining else "running"),
        "uptime_seconds": None if live is None else round(now - live.started_at, 3),
        "outbox": {
            "pending": stats.pending,
            "rejected": stats.rejected,
            "oldest_pending_age_seconds": None
            if stats.oldest_pending_at is None
            else round(max(now - stats.oldest_pending_at / 1e3, 0.0), 3),
        },
        "last_shipment_at": last_shipment,
        "hub": _hub_status(live),
        "stores": {
            s.id: {
                "platform": s.platform,
                "active": s.active,
                "capabilities": list(s.capabilities),
                **_store_state(s, live, await state.open_runs(s.id), paused.get(s.id)),
                "products": await state.mirror_count(s.id),
                "verification": await _verification_status(state, s.id),
                "filters": s.filters,
                "downstream": await _downstream_status(state, s.id, s.downstream_problem),
                **(
                    {"spool": (await asyncio.to_thread(backlog, s.spool_dir)).as_dict(now)}
                    if s.spool_dir is not None
                    else {}
                ),
            }
            for s in stores
        },
        "runs": [_run_status(r, now, first_open) for r in runs],
        "events": [asdict(e) for e in events],
    }
    return doc


async def _downstream_status(
    state: StateStore, store: str, problem: Callable[[], str | None] | None = None
) -> dict[str, Any]:
    """The store's downstream journal: the feed cursor, reviews waiting, outcomes so far, and
    the running downstream task's current error (`error`, None when all is well or unknown)."""
    counts = await state.journal_counts(store)
    return {
        "error": problem() if problem is not None else None,
        "cursor": await state.cursor(store, "downstream"),
        "pending_review": counts["pending_review"],
        "open": counts["received"] + counts["applying"],
        "applied": counts["applied"],
        "conflict": counts["conflict"],
        "failed": counts["failed"],
        "rejected_by_reviewer": counts["rejected_by_reviewer"],
        "rolled_back": counts["rolled_back"],
        "unreported": counts["unreported"],
    }


def _hub_status(live: Live | None) -> dict[str, Any]:
    if live is None:
        return {"state": "unknown", "ok": None, "detail": "agent not running"}
    hub = live.hub.health
    return {
        "state": hub.state,
        "ok": not hub.failing,
        "detail": hub.detail,
        "since": hub.since,
        "failures": live.hub.failures,
        "retry_at": live.hub.retry_at,
    }


_RUN_STATES = {"import": "importing", "refresh": "refreshing", "repair": "repairing"}


async def _verification_status(state: StateStore, store: str) -> dict[str, Any]:
    """How verified the store's products are, and its last verification run."""
    counts = await state.verification(store)
    last = await state.last_run(store, "verify")
    return {
        "unverified": counts.unverified,
        "oldest_verified_at": None
        if counts.oldest_verified_at is None
        else counts.oldest_verified_at / 1e3,
        "last_run": None
        if last is None
        else {
            "id": last.id,
            "state": last.state,
            "finished_at": None if last.finished_at is None else last.finished_at / 1e3,
        },
    }


def _store_state(
    store: StoreView, live: Live | None, runs: Sequence[Run] = (), paused: int | None = None
) -> dict[str, Any]:
    """The store's state column: inactive, paused, stopped, failing, busy with a run, or its
    health."""
    if not store.active:
        return {"state": "inactive", "ok": True, "detail": None}
    if paused is not None:
        open_runs = f"; {len(runs)} open run(s) resume from their checkpoints" if runs else ""
        return {
            "state": "paused",
            "ok": True,
            "detail": "paused by bridge-agent pause: `bridge-agent resume` starts it" + open_runs,
            "since": paused / 1e3,
        }
    if live is None:
        return {"state": "stopped", "ok": None, "detail": None}
    h = store.health
    if runs and not h.failing:
        run = runs[0]  # the importer runs a store's open runs one at a time, oldest first
        progress = f"{run.done}/{run.total}" if run.total else f"{run.done}"
        return {
            "state": _RUN_STATES.get(run.kind, f"running {run.kind}"),
            "ok": True,
            "detail": f"{run.kind} run {run.id}: {progress} product(s)",
            "since": run.started_at / 1e3,
        }
    return {"state": h.state, "ok": not h.failing, "detail": h.detail, "since": h.since}


def _run_status(
    run: Run, now: float, first_open: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """A run with its progress: rate and ETA from the time spent so far.

    `first_open`: the oldest open run of each store. A store's runs go one at a time, oldest
    first, so a `running` run behind another is `queued` (with `queued_behind`, that run's id):
    it has not started, it has no rate and no ETA.
    """
    out = {k: v for k, v in asdict(run).items() if k not in ("config", "checkpoint")}
    ahead = (first_open or {}).get(run.store, run.id)
    if run.state == "running" and ahead < run.id:
        out.update(state="queued", queued_behind=ahead, rate_per_second=None, eta_seconds=None)
        return out
    elapsed = max(((run.finished_at or now * 1e3) - run.started_at) / 1e3, 1e-3)
    rate = run.done / elapsed
    out["rate_per_second"] = round(rate, 2)
    # A verification's second phase reads past the catalog's total (the rows the walk did not
    # meet): no ETA then, never a negative one.
    out["eta_seconds"] = (
        round((run.total - run.done) / rate, 1)
        if run.state == "running" and run.total and run.done < run.total and rate > 0
        else None
    )
    return out


async def _state_store_check(state: StateStore) -> Check:
    try:
        async with asyncio.timeout(STATE_STORE_TIMEOUT):
            await state.check()
    except (StateStoreError, TimeoutError) as exc:
        return Check("state_store", False, "failing", str(exc) or "no answer within 2 s")
    return Check("state_store", True, "ok")


def _declare_metrics(view: AgentView) -> None:
    m = view.metrics
    m.gauge("bridge_build_info", "Build of the running agent (value is always 1).")
    m.set("bridge_build_info", 1, version=__version__)
    m.gauge("bridge_outbox_pending_items", "Products waiting to be shipped to the hub.")
    m.gauge("bridge_outbox_rejected_items", "Products the hub rejected, set aside.")
    m.gauge("bridge_outbox_oldest_pending_age_seconds", "Age of the oldest pending change.")
    m.gauge("bridge_hub_up", "1 when the last request to the hub succeeded.")
    m.gauge("bridge_hub_last_shipment_timestamp_seconds", "When the hub last accepted an item.")
    m.gauge("bridge_draining", "1 while the agent drains its outbox before stopping.")

    def refresh(metrics: Metrics) -> None:
        metrics.set("bridge_hub_up", 0 if view.hub.health.failing else 1)
        if view.hub.last_shipment_at is not None:
            metrics.set("bridge_hub_last_shipment_timestamp_seconds", view.hub.last_shipment_at)
        metrics.set("bridge_draining", 1 if view.draining() else 0)

    m.collect_with(refresh)
