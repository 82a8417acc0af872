"""Scheduled exports (`[[exports]]`): one cron job and one root task per export, and one run.

`run_export` is one run of one configured export, the same for the schedule and for
`bridge-agent export --now --name NAME`:

1. the catalog is exported (`export_catalog`, in a worker thread) to a temporary file under
   `<state_dir>/exports/tmp`: the state directory is the agent's own, on a disk it may write,
   and nothing there is read by anyone else, so a half-written file harms nobody;
2. the file is delivered to the destination as `<name>-<UTC start time>.<suffix>` (whole or not
   at all: the destination's promise, with its own bounded retries);
3. the destination keeps the newest `keep` files of this export (`rotate`);
4. only then is the export's incremental mark saved: a run whose delivery failed moves nothing,
   so the next run exports the same changes again (and whatever changed since);
5. the temporary file is removed, whatever happened.

Each run writes one event (action `export`: info with the counts and where the file is, or
error with the destination's message, which never holds a credential) and its outcome to the
`meta` row `export:<name>:status` (JSON: `at`, `ok`, `location`, counts, `error`, `next_run`),
which `bridge-agent status` shows. A run that fails is never retried before its next time: the
destination already retried what retrying can fix.

`ScheduledExports` is what the agent owns: for each export with a schedule, a cron job
`export:<name>` read in the export's time zone (scheduling.py: the daylight-saving rules) that
only nudges the export's root task `export:<name>`, which runs the export. Nudges that come
while it runs fold into one more run. A reload (`apply`) stops the exports removed or changed
(a run in progress is cancelled: its temporary file goes, its mark stays), and starts the
added and changed ones. A paused store's exports are skipped, with an event, until it resumes:
pausing a store is the operator saying "leave it alone for now".

The scheduler is injected (`Clock`): scheduling.py and this package are independent layers.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from bridge_agent.config import StoreSettings
from bridge_agent.config.exports import ExportSettings
from bridge_agent.errors import BridgeError, DestinationError
from bridge_agent.export.destinations import Destination, destination_for, export_file_name
from bridge_agent.export.reader import save_mark
from bridge_agent.export.request import LAST, SUFFIXES, ExportReport, ExportRequest
from bridge_agent.export.run import export_catalog
from bridge_agent.store import StateStore

__all__ = [
    "ACTION",
    "Clock",
    "RunOutcome",
    "ScheduledExports",
    "export_request",
    "load_status",
    "run_export",
    "state_dir_of",
    "status_key",
    "write_to_file",
]

log = structlog.get_logger("bridge_agent.export.schedule")

ACTION = "export"  # the events' action
TMP = Path("exports") / "tmp"  # under the state directory


class Clock(Protocol):
    """What the exports need of the agent's scheduler (scheduling.Scheduler)."""

    def cron(self, job_id: str, expression: str, nudge: Callable[[], None], *, tz: str) -> None: ...

    def remove(self, job_id: str) -> None: ...

    def next_fire_time(self, job_id: str) -> datetime | None: ...


Spawn = Callable[[str, Coroutine[Any, Any, Any]], asyncio.Task[None]]


def status_key(name: str) -> str:
    """The `meta` row holding the last outcome of export `name` (JSON)."""
    return f"export:{name}:status"


def job_id(name: str) -> str:
    return f"export:{name}"


def state_dir_of(state: StateStore) -> Path:
    """The state directory of an open state store (its path is the database file in it)."""
    return Path(state.path).parent


@dataclass(slots=True)
class RunOutcome:
    """One run of one export, as the event log and `status` show it."""

    name: str
    at: float  # epoch seconds the run started
    ok: bool
    location: str | None = None  # where the file is (delivered)
    products: int = 0
    variants: int = 0
    rows: int = 0
    deleted: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> records not exported
    bytes: int = 0
    rotated: int = 0  # older files deleted at the destination
    error: str | None = None
    paused: bool = False  # not run: its store is paused
    next_run: float | None = None  # epoch seconds

    def as_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def message(self) -> str:
        """The event's text."""
        if self.paused:
            return f"export {self.name} skipped: {self.error}"
        if not self.ok:
            return f"export {self.name} failed: {self.error}"
        text = (
            f"export {self.name}: {self.products} product(s), {self.variants} variant(s),"
            f" {self.rows} row(s)"
        )
        if self.deleted:
            text += f", {self.deleted} deleted"
        if self.skipped:
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items()))
            text += f", not exported: {reasons}"
        text += f", {self.bytes} bytes to {self.location}"
        if self.rotated:
            text += f" ({self.rotated} older file(s) removed)"
        return text


async def load_status(state: StateStore, name: str) -> dict[str, Any] | None:
    """The last outcome of export `name` (as `RunOutcome` fields), None before its first run."""
    text = await state.meta(status_key(name))
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def export_request(export: ExportSettings, store: StoreSettings | None) -> ExportRequest:
    """The `ExportRequest` an `[[exports]]` table describes (the store gives the currency, the
    shop's address and its SEO plugin, as `bridge-agent export` takes them)."""
    options: Mapping[str, Any] = store.options if store is not None else {}
    return ExportRequest(
        store=export.store,
        format=export.format,  # type: ignore[arg-type]  # validated by the config reader
        fields=export.fields,
        filters=export.filters,
        since=LAST if export.incremental else None,
        name=export.name,
        bom=export.bom,
        currency=options.get("currency") or None,
        store_url=store.url if store is not None else None,
        store_title=export.store,
        seo_plugin=options.get("seo_plugin") or "yoast",
    )


def write_to_file(state_dir: Path, request: ExportRequest, name: str) -> tuple[Path, ExportReport]:
    """Export into a new temporary file under `<state_dir>/exports/tmp` (synchronous: call it in
    a thread). The caller removes the file; on failure it is removed here."""
    folder = state_dir / TMP
    folder.mkdir(parents=True, exist_ok=True)  # the process umask decides its mode
    fd, raw = tempfile.mkstemp(prefix=f".{name}-", suffix=".part", dir=folder)
    path = Path(raw)
    try:
        with os.fdopen(fd, "wb") as stream:
            report = export_catalog(state_dir, request, stream)
            stream.flush()
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, report


async def run_export(
    state: StateStore,
    export: ExportSettings,
    store: StoreSettings | None,
    *,
    destination: Destination | None = None,
    next_run: datetime | None = None,
    skip_paused: bool = True,
    now: datetime | None = None,
) -> RunOutcome:
    """One run of `export` (see the module docstring); never raises but for cancellation.

    `destination` replaces the configured one (tests). `skip_paused`: the schedule skips the
    exports of a paused store; the command line runs what the operator asks for. `now`: the
    run's start time, which names the file (default: the clock's).
    """
    started = now or datetime.now(UTC)
    outcome = RunOutcome(export.name, started.timestamp(), ok=False)
    outcome.next_run = next_run.timestamp() if next_run is not None else None
    temp: Path | None = None
    try:
        if skip_paused and export.store in await state.paused_stores():
            outcome.paused = True
            outcome.error = f"store {export.store} is paused (bridge-agent resume {export.store})"
            await _record(state, export, outcome, level="warning")
            return outcome
        target = destination if destination is not None else destination_for(export.destination)
        request = export_request(export, store)
        written, report = await asyncio.to_thread(
            write_to_file, state_dir_of(state), request, export.name
        )
        temp = written
        name = export_file_name(export.name, started, SUFFIXES[request.format])
        delivered = await target.deliver(written, name)
        outcome.location = delivered.location
        try:
            outcome.rotated = len(await target.rotate(export.name, export.keep))
        except DestinationError as exc:
            # The file is delivered: the run succeeded, and the next rotation tries again.
            log.warning("export_rotation_failed", export=export.name, error=str(exc))
            await state.log_event(
                f"export {export.name}: older files could not be removed: {exc}",
                level="warning",
                store=export.store,
                action=ACTION,
            )
        if report.mark is not None:
            await save_mark(state, export.name, report.mark)
        outcome.ok = True
        outcome.products, outcome.variants = report.products, report.variants
        outcome.rows, outcome.deleted, outcome.bytes = report.rows, report.deleted, report.bytes
        outcome.skipped = dict(report.skipped)
    except asyncio.CancelledError:
        raise
    except (BridgeError, OSError) as exc:  # DestinationError, a state store that cannot be read
        outcome.error = str(exc)
    except Exception as exc:  # a bug: reported, and the task goes on to the next run
        log.exception("export_failed", export=export.name)
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)
    await _record(state, export, outcome, level="info" if outcome.ok else "error")
    return outcome


async def _record(
    state: StateStore, export: ExportSettings, outcome: RunOutcome, *, level: str
) -> None:
    """The run's event and its `status` row (best effort: the state store may be failing)."""
    log_at = log.info if outcome.ok else log.warning
    log_at("export_ran", export=export.name, detail=outcome.message())
    try:
        await state.log_event(outcome.message(), level=level, store=export.store, action=ACTION)
        await state.set_meta(status_key(export.name), outcome.as_json())
    except BridgeError as exc:
        log.error("export_status_not_recorded", export=export.name, error=str(exc))


class _Running:
    """One export as it runs: its settings, its root task and its wake-up."""

    def __init__(self, export: ExportSettings, store: StoreSettings | None) -> None:
        self.export = export
        self.store = store
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.job: str | None = None


class ScheduledExports:
    """The agent's scheduled exports: jobs `export:<name>`, root tasks `export:<name>`."""

    def __init__(self, state: StateStore, clock: Clock, spawn: Spawn) -> None:
        self._state = state
        self._clock = clock
        self._spawn = spawn
        self._running: dict[str, _Running] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._running

    def names(self) -> list[str]:
        return sorted(self._running)

    def nudge(self, name: str) -> None:
        """Run export `name` now (as its job does)."""
        self._running[name].wake.set()

    def start(self, exports: Iterable[ExportSettings], stores: Iterable[StoreSettings]) -> None:
        by_id = {s.id: s for s in stores}
        for export in exports:
            self._start(export, by_id.get(export.store))

    def _start(self, export: ExportSettings, store: StoreSettings | None) -> None:
        running = _Running(export, store)
        self._running[export.name] = running
        running.task = self._spawn(job_id(export.name), self._loop(running))
        if export.schedule != "off":
            running.job = job_id(export.name)
            self._clock.cron(running.job, export.schedule, running.wake.set, tz=export.timezone)

    async def _stop(self, name: str) -> None:
        running = self._running.pop(name)
        if running.job is not None:
            self._clock.remove(running.job)  # first: nothing nudges a stopped export
        if running.task is not None:
            running.task.cancel()
            await asyncio.gather(running.task, return_exceptions=True)

    async def apply(
        self, exports: Iterable[ExportSettings], stores: Iterable[StoreSettings]
    ) -> None:
        """Follow a reload: stop the removed and changed exports, start the added and changed.
        An export whose store's settings changed restarts too (it reads them)."""
        by_id = {s.id: s for s in stores}
        wanted = {e.name: e for e in exports}
        for name, running in list(self._running.items()):
            export = wanted.get(name)
            if export != running.export or by_id.get(running.export.store) != running.store:
                await self._stop(name)
                log.info("export_unscheduled", export=name, reason="removed or changed")
        for name, export in wanted.items():
            if name not in self._running:
                self._start(export, by_id.get(export.store))
                log.info("export_scheduled", export=name, schedule=export.schedule)

    async def shutdown(self) -> None:
        for name in list(self._running):
            await self._stop(name)

    async def _loop(self, running: _Running) -> None:
        """Root task: one run per wake-up, never two at once."""
        while True:
            await running.wake.wait()
            running.wake.clear()
            job = running.job
            await run_export(
                self._state,
                running.export,
                running.store,
                next_run=self._clock.next_fire_time(job) if job is not None else None,
            )
