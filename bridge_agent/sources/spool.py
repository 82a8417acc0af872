"""The spool watcher: local change hooks written as files by a store-side plugin (design.md 5).

Theory of operation. The watcher treats file-system events only as a wake-up call: every round it
lists `<spool_dir>/incoming/*.json` itself, oldest first. That one path serves the backlog at start
(files written while the agent was down), bursts, missed notifications and retries alike.

A round parses up to `max_files` files, coalesces their events by product id (ten hooks for one
product are one re-fetch), re-fetches each product from the platform, records every result in one
transaction, and only then deletes the files (guarantee 2). A hook is a hint, never the data: a
`product.deleted` event for a product the store still returns records the product, and an update
for a product the store no longer has records a deletion.

Failures:
- a file that is not a valid spool document moves to `<spool_dir>/rejected/` beside a `.why` note,
  and never blocks the files after it;
- a re-fetch that fails (store down, 5xx) leaves that product's files in place; they are retried
  after a backoff, and the files of other products go on;
- a writer's temporary file (a `.` name) older than an hour is removed: its writer died before
  the rename, and nothing else would ever clean it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import watchfiles

from bridge_agent.aio import wait_event
from bridge_agent.sources import StoreContext, StoreSource
from bridge_agent.sources.refetch import Refetcher
from bridge_agent.sync.retry import Backoff

log = structlog.get_logger("bridge_agent.spool")

STALE_TEMPORARY_SECONDS = 3600.0
EVENTS = frozenset({"product.created", "product.updated", "product.deleted", "stock.updated"})
MAX_FILE_BYTES = 1_048_576


class SpoolFileError(ValueError):
    """A spool file that can never be processed; the message goes into its `.why` note."""


@dataclass(frozen=True, slots=True)
class SpoolEvent:
    event: str
    id: str


def parse_spool(raw: bytes) -> list[SpoolEvent]:
    """Events of one spool file (format version 1); SpoolFileError says what is wrong."""
    if len(raw) > MAX_FILE_BYTES:
        raise SpoolFileError(f"file is larger than {MAX_FILE_BYTES} bytes")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpoolFileError(f"not valid UTF-8 JSON: {exc}") from None
    docs = doc if isinstance(doc, list) else [doc]
    return [_event(d, i) for i, d in enumerate(docs)]


def _event(doc: Any, index: int) -> SpoolEvent:
    where = f"event #{index}"
    if not isinstance(doc, dict):
        raise SpoolFileError(f"{where}: expected an object")
    if doc.get("v") != 1:
        raise SpoolFileError(f"{where}: unsupported version {doc.get('v')!r} (expected 1)")
    event = doc.get("event")
    if event not in EVENTS:
        known = ", ".join(sorted(EVENTS))
        raise SpoolFileError(f"{where}: unknown event {event!r} (known: {known})")
    id_ = doc.get("id")
    if isinstance(id_, int) and not isinstance(id_, bool):
        id_ = str(id_)
    if not isinstance(id_, str) or not id_.strip():
        raise SpoolFileError(f"{where}: 'id' must be a non-empty string")
    return SpoolEvent(event, id_.strip())


class SpoolWatcher(StoreSource):
    """Root task for one store's spool directory."""

    def __init__(
        self,
        ctx: StoreContext,
        *,
        spool_dir: Path,
        deletions: bool = True,
        concurrency: int = 4,
        max_files: int = 1000,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(ctx)
        self.incoming = spool_dir / "incoming"
        self.rejected = spool_dir / "rejected"
        self._refetch = Refetcher(ctx, "spool", deletions, concurrency)
        self._max_files = max_files
        self._backoff = backoff or Backoff(base=1.0, cap=60.0)
        self._failures = 0
        self._metrics.counter(
            "bridge_spool_files_total", "Spool files consumed or set aside, by store and outcome."
        )

    async def run(self) -> None:
        """Process the backlog, then every new file, until cancelled."""
        for folder in (self.incoming, self.rejected):
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        stop = asyncio.Event()
        watcher = asyncio.create_task(self._watch(stop), name=f"spool-watch:{self.store_id}")
        self.health.ok("watching", str(self.incoming))
        try:
            while True:
                self._wake.clear()
                progressed, remaining = await self.process_once()
                if remaining and progressed:
                    continue  # more files than one round takes
                if remaining:  # only failed re-fetches left: back off before trying again
                    delay = self._backoff.delay(self._failures)
                    await wait_event(self._wake, delay)
                else:
                    await self._wake.wait()
        finally:
            stop.set()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _watch(self, stop: asyncio.Event) -> None:
        # watchfiles only wakes the loop; the loop lists the folder itself (see module docstring).
        # A periodic wake-up every 30 s covers file systems where inotify misses events.
        async for _ in watchfiles.awatch(
            self.incoming, stop_event=stop, debounce=50, step=20, rust_timeout=30_000,
            yield_on_timeout=True, recursive=False,
        ):  # fmt: skip
            self._wake.set()

    async def process_once(self) -> tuple[int, int]:
        """One round. Returns (files consumed, files still waiting)."""
        names = await asyncio.to_thread(self._list)
        batch = names[: self._max_files]
        if not batch:
            return 0, 0
        files: dict[Path, list[SpoolEvent]] = {}
        for path in batch:
            try:
                raw = await asyncio.to_thread(path.read_bytes)
            except FileNotFoundError:
                continue  # consumed by a racing round or removed by the operator
            except OSError as exc:
                # Unreadable (permissions, I/O error): set it aside like a malformed file; one
                # bad file must neither stop the watcher nor block the files after it.
                await self._reject(path, f"cannot read: {exc.strerror}")
                continue
            try:
                files[path] = parse_spool(raw)
            except SpoolFileError as exc:
                await self._reject(path, str(exc))
        wanted = {e.id for events in files.values() for e in events}
        fetched = await self._refetch.fetch(sorted(wanted))
        changes = [c for c in fetched.values() if c is not None]
        ok_ids = set(fetched)
        done = [p for p, events in files.items() if all(e.id in ok_ids for e in events)]
        if changes:
            self.recorded(await self._state.record(changes), "spool")
        # Only now, with the changes committed, may the hints go (guarantee 2).
        await asyncio.to_thread(_unlink_all, done)
        self._metrics.inc(
            "bridge_spool_files_total", len(done), store=self.store_id, outcome="consumed"
        )
        failed = len(wanted) - len(ok_ids)
        if failed:
            self._failures += 1
        else:
            self._failures = 0
            if self.health.failing:
                self.health.ok("watching", str(self.incoming))
        return len(done) + (len(batch) - len(files)), len(names) - len(done)

    def _list(self) -> list[Path]:
        try:
            entries = list(os.scandir(self.incoming))
        except FileNotFoundError:
            return []
        self._remove_stale_temporaries(entries)
        entries = [e for e in entries if is_spool_name(e.name)]
        entries.sort(key=lambda e: (_mtime(e), e.name))
        return [Path(e.path) for e in entries]

    def _remove_stale_temporaries(self, entries: list[os.DirEntry[str]]) -> None:
        # A writer killed between creating its temporary file and renaming it leaves a
        # `.`-prefixed file nobody will ever rename; no writer takes an hour over one file.
        cutoff = time.time() - STALE_TEMPORARY_SECONDS
        for entry in entries:
            if not entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            if 0 < _mtime(entry) < cutoff:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    log.info("spool_stale_temporary_removed", store=self.store_id, file=entry.name)

    async def _reject(self, path: Path, reason: str) -> None:
        await asyncio.to_thread(self._quarantine, path, reason)
        await self._state.log_event(
            f"spool file {path.name} set aside in rejected/: {reason}",
            level="warning",
            store=self.store_id,
        )

    def _quarantine(self, path: Path, reason: str) -> None:
        target = self.rejected / path.name
        if target.exists():
            target = self.rejected / f"{path.stem}-{time.time_ns()}{path.suffix}"
        try:
            path.replace(target)
            target.with_name(target.name + ".why").write_text(reason + "\n", encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            self.health.fail("spool_unwritable", f"cannot set {path.name} aside: {exc.strerror}")
            log.error("spool_quarantine_failed", file=path.name, reason=reason, error=str(exc))
            return
        self._metrics.inc("bridge_spool_files_total", store=self.store_id, outcome="rejected")
        log.warning("spool_file_rejected", store=self.store_id, file=target.name, reason=reason)


def is_spool_name(name: str) -> bool:
    """Whether the watcher reads this file: `*.json`, not a writer's `.`-prefixed temporary."""
    return name.endswith(".json") and not name.startswith(".")


BACKLOG_CAP = 10_000


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits in a spool, for `status`: files not consumed yet and files set aside."""

    waiting: int  # spool files in incoming/, counted up to BACKLOG_CAP
    oldest_waiting_at: float | None  # mtime of the oldest counted one
    rejected: int  # files in rejected/ (their `.why` notes not counted), up to BACKLOG_CAP
    error: str | None = None  # why incoming/ could not be read

    def as_dict(self, now: float) -> dict[str, Any]:
        return {
            "waiting": self.waiting,
            "waiting_capped": self.waiting >= BACKLOG_CAP,
            "oldest_waiting_age_seconds": None
            if self.oldest_waiting_at is None
            else round(max(now - self.oldest_waiting_at, 0.0), 3),
            "rejected": self.rejected,
            "error": self.error,
        }


def backlog(spool_dir: Path) -> Backlog:
    """Count a spool's folders (blocking: run it in a thread). Bounded, so that a spool of a
    million files keeps `status` fast; a folder that cannot be read says why."""
    waiting, oldest = 0, None
    try:
        with os.scandir(spool_dir / "incoming") as entries:
            for entry in entries:
                if not is_spool_name(entry.name):
                    continue
                waiting += 1
                mtime = _mtime(entry)  # 0.0: consumed meanwhile
                if mtime and (oldest is None or mtime < oldest):
                    oldest = mtime
                if waiting >= BACKLOG_CAP:
                    break
    except OSError as exc:
        return Backlog(0, None, 0, f"cannot read {spool_dir / 'incoming'}: {exc.strerror}")
    rejected = 0
    try:
        with os.scandir(spool_dir / "rejected") as entries:
            for entry in entries:
                if not entry.name.endswith(".why") and not entry.name.startswith("."):
                    rejected += 1
                    if rejected >= BACKLOG_CAP:
                        break
    except FileNotFoundError:
        pass
    except OSError as exc:
        return Backlog(waiting, oldest, 0, f"cannot read {spool_dir / 'rejected'}: {exc.strerror}")
    return Backlog(waiting, oldest, rejected)


def _mtime(entry: os.DirEntry[str]) -> float:
    try:
        return entry.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _unlink_all(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
