"""The spool watcher: local change hooks written as files by a store-side plugin (design.md 5).

Theory of operation. The watcher treats file-system events only as a wake-up call: every round it
lists `<spool_dir>/incoming/*.json` itself, oldest first. That one path serves the backlog at start
(files written while the agent was down), bursts, missed notifications and retries alike.

A round parses up to `max_files` files, coalesces their events by product id (ten hooks for one
product are one re-fetch), re-fetches each product from the platform, records every result in one
transaction, and only then deletes the files (guarantee 2). A hook is a hint, never the data: a
`product.deleted` event for a product the store still returns records the product, and an update
for a product the store no longer has records a deletion.

Failures (the folder is writable by the web server's user: every entry is hostile input):
- only regular files are read, never through a link, with the size checked before reading and the
  read capped (`inputs.read_regular_file`); the JSON parse is bounded in size and depth. A FIFO, a
  folder, a device or a symlink named `*.json`, an oversized file, a file nested thousands deep or
  holding a number of thousands of digits: each moves to `<spool_dir>/rejected/` beside a `.why`
  note, and never blocks the files after it. Whatever goes wrong with one file stays with that
  file: it never fails the watcher;
- an entry that cannot even be set aside or removed (a sticky folder, a read-only mount) is left
  where it is, skipped from then on, and the store's health says so: it can neither stop the
  watcher nor make it spin;
- a round lists at most `max_files` entries (the oldest), so a folder of a million files costs a
  bounded amount of memory per round;
- a re-fetch that fails (store down, 5xx) leaves that product's files in place; they are retried
  after a backoff, and the files of other products go on; a product that keeps answering a
  permanent error is given up after a few tries, with an event (`refetch.py`, guarantee 7);
- a writer's temporary file (a `.` name) older than an hour is removed: its writer died before
  the rename, and nothing else would ever clean it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import watchfiles

from bridge_agent.aio import wait_event
from bridge_agent.errors import InputError
from bridge_agent.inputs import loads_json, read_regular_file
from bridge_agent.sources import StoreContext, StoreSource
from bridge_agent.sources.refetch import Refetcher
from bridge_agent.sync.retry import Backoff

log = structlog.get_logger("bridge_agent.spool")

STALE_TEMPORARY_SECONDS = 3600.0
WATCH_RETRY_SECONDS = 30.0
MAX_STUCK = 10_000
EVENTS = frozenset({"product.created", "product.updated", "product.deleted", "stock.updated"})
MAX_FILE_BYTES = 1_048_576
MAX_ID_LENGTH = 255  # platform ids are short (WooCommerce: digits; Shopify: a gid of ~40)
MAX_DEPTH = 8  # an array of flat objects is 2 deep


class SpoolFileError(ValueError):
    """A spool file that can never be processed; the message goes into its `.why` note."""


@dataclass(frozen=True, slots=True)
class SpoolEvent:
    event: str
    id: str


def parse_spool(raw: bytes) -> list[SpoolEvent]:
    """Events of one spool file (format version 1); SpoolFileError says what is wrong."""
    try:
        doc = loads_json(raw, max_bytes=MAX_FILE_BYTES, max_depth=MAX_DEPTH, what="file")
    except InputError as exc:
        raise SpoolFileError(str(exc)) from None
    docs = doc if isinstance(doc, list) else [doc]
    return [_event(d, i) for i, d in enumerate(docs)]


def _event(doc: Any, index: int) -> SpoolEvent:
    where = f"event #{index}"
    if not isinstance(doc, dict):
        raise SpoolFileError(f"{where}: expected an object")
    version = doc.get("v")
    if type(version) is not int or version != 1:
        raise SpoolFileError(f"{where}: unsupported version {_shown(version)} (expected 1)")
    event = doc.get("event")
    if not isinstance(event, str) or event not in EVENTS:
        known = ", ".join(sorted(EVENTS))
        raise SpoolFileError(f"{where}: unknown event {_shown(event)} (known: {known})")
    id_ = doc.get("id")
    if isinstance(id_, int) and not isinstance(id_, bool) and 0 <= id_ < 10**MAX_ID_LENGTH:
        id_ = str(id_)
    if not isinstance(id_, str) or not id_.strip():
        raise SpoolFileError(f"{where}: 'id' must be a non-empty string or a number")
    id_ = id_.strip()
    if len(id_) > MAX_ID_LENGTH or not id_.isprintable():
        raise SpoolFileError(f"{where}: 'id' must be at most {MAX_ID_LENGTH} printable characters")
    return SpoolEvent(event, id_)


def _shown(value: Any, limit: int = 60) -> str:
    """A value from a file, quoted for a message: one short line, whatever it held."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _file(name: str) -> str:
    """A file name for a message: as is when printable, escaped otherwise (a name can hold a
    newline or a terminal escape, and it ends up in the event log and `status`)."""
    return name if name.isprintable() else _shown(name, 120)


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
        self._refetch = Refetcher(ctx, "spool", deletions, concurrency, give_up=True)
        self._max_files = max_files
        self._backoff = backoff or Backoff(base=1.0, cap=60.0)
        self._failures = 0
        self._unlistable = False  # the last listing failed (permissions): back off, retry
        # Entries that can be neither consumed nor set aside, by (name, inode): skipped, so one
        # cannot make the loop spin; a new file under the same name has a new inode.
        self._stuck: dict[tuple[str, int], str] = {}
        # Set once a new file in incoming/ wakes the loop: the watch is in place, or it could not
        # be and the periodic wake-up stands in. Tests wait on it instead of sleeping.
        self.watching = asyncio.Event()
        self._metrics.counter(
            "bridge_spool_files_total", "Spool files consumed or set aside, by store and outcome."
        )

    async def run(self) -> None:
        """Process the backlog, then every new file, until cancelled."""
        await self._prepare_folders()
        stop = asyncio.Event()
        watcher = asyncio.create_task(self._watch(stop), name=f"spool-watch:{self.store_id}")
        self.health.ok("watching", str(self.incoming))
        try:
            while True:
                self._wake.clear()
                progressed, remaining = await self.process_once()
                if remaining and progressed:
                    continue  # more files than one round takes
                if remaining or self._unlistable:
                    # Failed re-fetches, or a folder that cannot be read: back off, try again.
                    delay = self._backoff.delay(self._failures)
                    await wait_event(self._wake, delay)
                else:
                    await self._wake.wait()
        finally:
            stop.set()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _prepare_folders(self) -> None:
        """Create incoming/ and rejected/; while that fails, say so and keep trying (the store's
        other sources and the shipper go on meanwhile)."""
        failures = 0
        while True:
            try:
                for folder in (self.incoming, self.rejected):
                    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
                return
            except OSError as exc:
                failures += 1
                self.health.fail(
                    "spool_unavailable", f"cannot create {exc.filename}: {exc.strerror or exc}"
                )
                await wait_event(self._wake, self._backoff.delay(failures))

    async def _watch(self, stop: asyncio.Event) -> None:
        # watchfiles only wakes the loop; the loop lists the folder itself (see module docstring).
        # A periodic wake-up every 30 s covers file systems where inotify misses events. If the
        # folder cannot be watched (removed, no inotify left), the loop is woken every 30 s
        # instead, and watching is tried again: the spool degrades to polling, never to silence.
        while not stop.is_set():
            try:
                # awatch sets up its inotify watch synchronously on the first step of the loop
                # below, before anything can run after this set(): a waiter sees the watch in place.
                self.watching.set()
                async for _ in watchfiles.awatch(
                    self.incoming, stop_event=stop, debounce=50, step=20, rust_timeout=30_000,
                    yield_on_timeout=True, recursive=False,
                ):  # fmt: skip
                    self._wake.set()
            except (OSError, RuntimeError) as exc:
                log.warning("spool_watch_unavailable", store=self.store_id, error=str(exc))
                await wait_event(stop, WATCH_RETRY_SECONDS)
                self._wake.set()

    async def process_once(self) -> tuple[int, int]:
        """One round. Returns (entries that made progress, entries still waiting).

        Progress is an entry consumed, set aside or gone; an entry that can be neither consumed
        nor set aside is skipped from then on (`_stuck`) and counts in neither number, so no
        entry can make the loop spin.
        """
        listing = await asyncio.to_thread(self._list)
        self._unlistable = listing.error is not None
        if listing.error is not None:
            self.health.fail("spool_unavailable", listing.error)
            return 0, 0
        if self.health.state == "spool_unavailable" or (
            self.health.state == "spool_stuck" and not self._stuck
        ):
            self.health.ok("watching", str(self.incoming))
        if not listing.batch:
            return 0, 0
        files: dict[Path, list[SpoolEvent]] = {}
        progress = 0
        for path in listing.batch:
            try:
                raw = await asyncio.to_thread(read_regular_file, path, max_bytes=MAX_FILE_BYTES)
                files[path] = parse_spool(raw)
            except FileNotFoundError:
                progress += 1  # consumed by a racing round or removed by the operator
            except InputError as exc:
                progress += await self._reject(path, f"cannot read: {exc}")
            except SpoolFileError as exc:
                progress += await self._reject(path, str(exc))
            except Exception as exc:  # one file's failure stays with that file (docstring)
                log.exception("spool_file_failed", store=self.store_id, file=_file(path.name))
                progress += await self._reject(
                    path, f"could not be processed ({type(exc).__name__}): {_shown(str(exc))}"
                )
        wanted = {e.id for events in files.values() for e in events}
        fetched = await self._refetch.fetch(sorted(wanted))
        changes = [c for c in fetched.values() if c is not None]
        ok_ids = set(fetched)
        done = [p for p, events in files.items() if all(e.id in ok_ids for e in events)]
        if changes or self._refetch.given_up:  # given up: recorded as an event (refetch.py)
            self.recorded(await self._refetch.record(changes), "spool")
        # Only now, with the changes committed, may the hints go (guarantee 2).
        removed, unremovable = await asyncio.to_thread(_unlink_all, done)
        for path, error in unremovable:
            # Its change is recorded; reading it again would only repeat that.
            await self._stick(path, f"cannot be removed after recording: {error}")
        self._metrics.inc(
            "bridge_spool_files_total", removed, store=self.store_id, outcome="consumed"
        )
        progress += removed
        failed = len(wanted) - len(ok_ids)
        if failed:
            self._failures += 1
        else:
            self._failures = 0
            if self.health.failing and not self._stuck:
                self.health.ok("watching", str(self.incoming))
        return progress, max(listing.total - progress, 0)

    def _list(self) -> _Listing:
        """The oldest `max_files` spool entries, and how many there are (blocking).

        One pass over the folder keeps only the oldest entries (a heap), so a folder of a
        million files costs `max_files` entries of memory, not a million. Entries are inspected
        with `lstat`: a link is judged as a link, never by what it points to.
        """
        try:
            with os.scandir(self.incoming) as scan:
                entries = list(self._candidates(scan))
        except FileNotFoundError:
            return _Listing([], 0)
        except OSError as exc:
            return _Listing([], 0, f"cannot read {self.incoming}: {exc.strerror or exc}")
        oldest = heapq.nsmallest(self._max_files, entries)
        return _Listing([Path(self.incoming, name) for _, name, _ in oldest], len(entries))

    def _candidates(self, scan: Iterator[os.DirEntry[str]]) -> Iterator[tuple[float, str, int]]:
        """(mtime, name, inode) of each spool entry not known to be stuck; stale temporaries of
        dead writers are removed on the way."""
        present: set[tuple[str, int]] = set()
        cutoff = time.time() - STALE_TEMPORARY_SECONDS
        for entry in scan:
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if entry.name.startswith("."):
                if stat.S_ISREG(info.st_mode) and 0 < info.st_mtime < cutoff:
                    # A writer killed between creating its temporary file and renaming it
                    # leaves a `.`-prefixed file nobody will ever rename; no writer takes an
                    # hour over one file.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                        log.info(
                            "spool_stale_temporary_removed",
                            store=self.store_id,
                            file=_file(entry.name),
                        )
                continue
            if not is_spool_name(entry.name):
                continue
            key = (entry.name, info.st_ino)
            if key in self._stuck:
                present.add(key)
                continue
            yield info.st_mtime, entry.name, info.st_ino
        # Forget stuck entries the operator removed; the health recovers with the last one.
        for key in self._stuck.keys() - present:
            del self._stuck[key]

    async def _reject(self, path: Path, reason: str) -> int:
        """Set one entry aside with its reason; 1 if it left incoming/, 0 if it is stuck."""
        error = await asyncio.to_thread(self._quarantine, path, reason)
        if error is None:
            await self._state.log_event(
                f"spool file {_file(path.name)} set aside in rejected/: {reason}",
                level="warning",
                store=self.store_id,
            )
            return 1
        await self._stick(path, f"cannot be set aside ({error}); it was refused because: {reason}")
        return 0

    def _quarantine(self, path: Path, reason: str) -> str | None:
        """Move one entry into rejected/ and write its `.why` note (blocking). None when done
        (or the entry is gone), else the system's reason why it could not be moved."""
        target = self.rejected / path.name
        if os.path.lexists(target) or os.path.lexists(f"{target}.why"):
            target = self.rejected / f"{path.stem}-{time.time_ns()}{path.suffix}"
        try:
            self.rejected.mkdir(exist_ok=True)  # removed by hand since the start, say
            os.rename(path, target)  # renames the entry itself, link or not
        except FileNotFoundError:
            if os.path.lexists(path):
                return f"{self.rejected} is missing"
            return None  # gone meanwhile
        except OSError as exc:
            return exc.strerror or type(exc).__name__
        try:
            # O_EXCL | O_NOFOLLOW: never write through a link someone planted under that name.
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(f"{target}.why", flags, 0o640)
            with os.fdopen(fd, "w", encoding="utf-8") as note:
                note.write(reason + "\n")
        except OSError as exc:
            log.warning("spool_note_failed", file=_file(target.name), error=str(exc))
        self._metrics.inc("bridge_spool_files_total", store=self.store_id, outcome="rejected")
        log.warning(
            "spool_file_rejected", store=self.store_id, file=_file(target.name), reason=reason
        )
        return None

    async def _stick(self, path: Path, reason: str) -> None:
        """Skip this entry from now on, fail the store's health, and say so once."""
        try:
            key = (path.name, os.lstat(path).st_ino)
        except OSError:
            return  # gone meanwhile: nothing is stuck
        if key in self._stuck:
            return
        if len(self._stuck) >= MAX_STUCK:
            self._stuck.pop(next(iter(self._stuck)))
        self._stuck[key] = reason
        self.health.fail(
            "spool_stuck",
            f"{len(self._stuck)} file(s) in {self.incoming} are skipped: {_file(path.name)} "
            f"{reason}; check the folder's owner and permissions (docs/spool.md)",
        )
        log.error("spool_file_stuck", store=self.store_id, file=_file(path.name), reason=reason)
        await self._state.log_event(
            f"spool file {_file(path.name)} {reason}", level="error", store=self.store_id
        )


@dataclass(frozen=True, slots=True)
class _Listing:
    batch: list[Path]  # the oldest entries, oldest first
    total: int  # entries waiting in all (not counting stuck ones)
    error: str | None = None  # why incoming/ could not be listed


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
        return entry.stat(follow_symlinks=False).st_mtime
    except FileNotFoundError:
        return 0.0


def _unlink_all(paths: Iterable[Path]) -> tuple[int, list[tuple[Path, str]]]:
    """Remove consumed files (blocking): how many went, and those that could not, with why."""
    removed, failed = 0, []
    for path in paths:
        try:
            path.unlink(missing_ok=True)
            removed += 1
        except OSError as exc:
            failed.append((path, exc.strerror or type(exc).__name__))
    return removed, failed
