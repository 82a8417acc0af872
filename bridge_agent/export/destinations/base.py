"""What every export destination promises, and the rules they share: names, retries, errors.

A destination takes a finished local file and makes it appear under its final name whole, or
not at all: a reader (a person, a merchant feed fetcher, a sync job) polling the final name
never sees half a file. Each kind gets there its own way (folder: a temporary name in the same
folder, fsync, rename; SFTP: a temporary name, then the posix-rename extension; S3: one
`put_object`, or a multipart upload that is aborted on failure), and each retries a transient
failure a bounded number of times with exponential backoff and jitter, then raises one
`DestinationError` naming the destination and the cause, never a credential.

Names. An export's files are `<export name>-<UTC time>.<suffix>` (`export_file_name`), so they
sort by time as text, and `rotate(prefix, keep)` can tell this export's files from everything
else in the folder or bucket (another export whose name merely starts alike, a person's own
files, temporaries): only names of exactly that shape are counted and deleted, the newest
`keep` kept.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

import structlog

from bridge_agent.config import MASK, Secret
from bridge_agent.errors import DestinationError

__all__ = [
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "Delivered",
    "Destination",
    "check_name",
    "export_file_name",
    "newest_first",
    "retrying",
    "temporary_name",
]

log = structlog.get_logger("bridge_agent.export.destinations")

T = TypeVar("T")

BACKOFF_BASE = 1.0  # seconds before the second attempt; doubles per attempt, with jitter
BACKOFF_CAP = 30.0  # the longest wait between two attempts
_TIME = "%Y%m%dT%H%M%SZ"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


@dataclass(frozen=True, slots=True)
class Delivered:
    """One export safely at its destination: `location` is where a person finds it
    (`/srv/exports/x.csv`, `sftp://u@h:22/out/x.csv`, `s3://bucket/prefix/x.csv`)."""

    name: str
    location: str
    bytes: int
    attempts: int  # 1 when the first try succeeded


@runtime_checkable
class Destination(Protocol):
    """Where a scheduled export (or a backup before a bulk apply) goes."""

    @property
    def label(self) -> str:
        """The destination in messages and the event log; never holds a credential."""
        ...

    async def deliver(self, local_file: Path, name: str) -> Delivered:
        """Put the finished `local_file` at the destination as `name`, whole or not at all.

        Retries transient failures (bounded); `DestinationError` when it gives up.
        """
        ...

    async def rotate(self, prefix: str, keep: int) -> list[str]:
        """Delete all but the newest `keep` files of export `prefix`; the names deleted."""
        ...


def export_file_name(name: str, when: datetime, suffix: str) -> str:
    """`nightly-20261206T020000Z.csv`: the file name of export `name` started at `when`."""
    if when.tzinfo is None:
        raise ValueError("the export time must carry a time zone")
    return check_name(f"{name}-{when.astimezone(UTC).strftime(_TIME)}{suffix}")


def check_name(name: str) -> str:
    """`name` if it is one plain file name (no folder, no leading dot, no space); else
    ValueError: a name is the agent's own, so a bad one is a bug, never a path to follow."""
    if not _SAFE_NAME.fullmatch(name) or ".." in name:  # fullmatch: no "/" nor leading "."
        raise ValueError(f"not a plain export file name: {name!r}")
    return name


def temporary_name(name: str) -> str:
    """The name a file has while it is written: hidden, and never the shape of an export."""
    return f".{name}.part"


def newest_first(prefix: str, names: Iterable[str]) -> list[str]:
    """The names that are files of export `prefix` (`export_file_name`), newest first."""
    shape = re.compile(rf"{re.escape(prefix)}-(\d{{8}}T\d{{6}}Z)\.[A-Za-z0-9.]+")
    found = [(m.group(1), n) for n in names if (m := shape.fullmatch(n))]
    return [n for _, n in sorted(found, reverse=True)]


def check_keep(keep: int) -> None:
    if isinstance(keep, bool) or keep < 1:
        raise ValueError(f"keep must be an integer of at least 1, got {keep!r}")


def scrub(text: str, secrets: Iterable[Secret | None]) -> str:
    """`text` with every secret value masked: a cause quoted from a library is not ours to
    trust, and one echoing a key id must not put it in the event log."""
    for secret in secrets:
        if secret is not None and (value := secret.reveal()):
            text = text.replace(value, MASK)
    return text


async def retrying(
    label: str,
    what: str,
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    transient: Callable[[BaseException], bool],
    describe: Callable[[BaseException], str],
    backoff_base: float = BACKOFF_BASE,
    backoff_cap: float = BACKOFF_CAP,
) -> tuple[T, int]:
    """`call()` until it succeeds, at most `attempts` times while its failures are transient.

    Returns its result and the attempts it took. A permanent failure (refused host key or
    credentials, a missing bucket) is raised at once, a transient one after the last attempt,
    both as `DestinationError("<label>: <what> failed ...: <cause>")`.
    """
    attempt = 1
    while True:
        try:
            return await call(), attempt
        except DestinationError:
            raise
        except Exception as exc:
            permanent = not transient(exc)
            cause = describe(exc)
            if permanent or attempt >= attempts:
                tries = "" if permanent else f" after {attempt} attempt(s)"
                raise DestinationError(
                    f"{label}: {what} failed{tries}: {cause}",
                    destination=label,
                    permanent=permanent,
                ) from exc
            delay = min(backoff_cap, backoff_base * 2 ** (attempt - 1))
            delay *= random.uniform(0.5, 1.0)  # jitter: attempts of many agents spread
            log.warning(
                "destination_retry",
                destination=label,
                what=what,
                attempt=attempt,
                of=attempts,
                cause=cause,
                wait=round(delay, 3),
            )
            await asyncio.sleep(delay)
            attempt += 1
