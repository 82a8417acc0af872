"""Writing an export to a file atomically: a reader sees the old file or the new, never half.

The export goes to a temporary file in the target's own directory (so the final `rename` is
within one filesystem, hence atomic), is flushed and fsync'ed, then renamed over the target and
the directory fsync'ed, so a crash at any point leaves either the previous file or the complete
new one (the same rule design.md section 5 sets for the store-side plugins' files). On any
error the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

# An export is created like any file the agent's user makes: mode 0666 less the umask (the unit's
# UMask=0077 keeps it the agent user's; an operator who serves a feed sets a wider UMask or a
# group). `mkstemp` would make it 0600 whatever the umask, and a chmod after it would ignore it.
FILE_MODE = 0o666


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Yield a binary stream; on a clean exit it replaces `path` whole."""
    directory = path.parent if str(path.parent) else Path()
    temp = directory / f".{path.name}.{secrets.token_hex(6)}.part"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    sync_directory(directory)


def sync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # a directory that cannot be opened cannot be synced either; the rename stands
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
