"""A local folder destination: copy to a temporary name beside the target, fsync, rename.

The temporary file lives in the destination folder itself, so the final `os.replace` stays
within one filesystem and is atomic: a reader polling the final name sees nothing, then the
whole file (never a growing one, as a plain copy would show). The data and then the folder
are fsync'ed, so after a crash the name holds the whole file or is absent. A failed copy
removes its temporary file. The folder is created when missing (the default backup folder
under the state directory starts that way).

Errors: a missing source, a permission refused, a read-only or non-directory target will not
get better by waiting, so they fail at once; any other `OSError` (a full disk a cleanup may
free, a share that blinked) is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
from pathlib import Path

from bridge_agent.config.exports import FolderDestinationSettings
from bridge_agent.export.destinations.base import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    Delivered,
    check_keep,
    check_name,
    newest_first,
    retrying,
    temporary_name,
)
from bridge_agent.export.output import sync_directory

__all__ = ["FolderDestination"]

_PERMANENT = frozenset(
    {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EROFS}
)


class FolderDestination:
    """Exports into one local folder."""

    def __init__(
        self,
        settings: FolderDestinationSettings,
        *,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
    ) -> None:
        self.settings = settings
        self.folder = Path(settings.path)
        self._backoff = (backoff_base, backoff_cap)

    @property
    def label(self) -> str:
        return f"folder {self.folder}"

    def __repr__(self) -> str:
        return f"FolderDestination({str(self.folder)!r})"

    async def deliver(self, local_file: Path, name: str) -> Delivered:
        check_name(name)
        size, attempts = await retrying(
            self.label,
            f"delivering {name}",
            lambda: asyncio.to_thread(self._copy, Path(local_file), name),
            attempts=self.settings.attempts,
            transient=_transient,
            describe=_describe,
            backoff_base=self._backoff[0],
            backoff_cap=self._backoff[1],
        )
        return Delivered(name, str(self.folder / name), size, attempts)

    async def rotate(self, prefix: str, keep: int) -> list[str]:
        check_keep(keep)
        deleted, _ = await retrying(
            self.label,
            f"rotating {prefix}",
            lambda: asyncio.to_thread(self._rotate, prefix, keep),
            attempts=self.settings.attempts,
            transient=_transient,
            describe=_describe,
            backoff_base=self._backoff[0],
            backoff_cap=self._backoff[1],
        )
        return deleted

    def _copy(self, source: Path, name: str) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        temp = self.folder / temporary_name(name)
        try:
            with source.open("rb") as reader, temp.open("wb") as writer:
                shutil.copyfileobj(reader, writer, 1024 * 1024)
                writer.flush()
                os.fsync(writer.fileno())
                size = writer.tell()
            # No chmod: the copy is created with the agent's umask, like export/output.py.
            os.replace(temp, self.folder / name)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        sync_directory(self.folder)
        return size

    def _rotate(self, prefix: str, keep: int) -> list[str]:
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        old = newest_first(prefix, names)[keep:]
        for name in old:
            with contextlib.suppress(FileNotFoundError):  # someone removed it first: fine
                (self.folder / name).unlink()
        if old:
            sync_directory(self.folder)
        return sorted(old)


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno not in _PERMANENT


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return f"{type(exc).__name__}: {exc}"
