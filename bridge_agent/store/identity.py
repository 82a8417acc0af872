"""The lost-file check: is the file at the state path still the one the store opened?

SQLite keeps writing to an open file after it was deleted or replaced (a restore, an operator's
`rm -rf`, a new disk mounted over the folder): every commit would then go to a file nobody will
ever read again, while webhooks are answered 2xx and spool files deleted. So the store remembers
the identity (device and inode) of the file it opened and checks it before every commit and in
`StateStore.check()`; a mismatch raises `StateStoreLost`, the commit is rolled back (nothing is
acknowledged on its strength), `/healthz` fails with the reason and the agent stops.
`StateStore.created` says whether the open created the file: a new, empty state, which the
agent announces and repairs against the hub.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bridge_agent.errors import StateStoreLost


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """(st_dev, st_ino) of the state file as opened."""

    path: Path
    device: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        info = os.stat(path)
        return cls(path, info.st_dev, info.st_ino)

    def check(self) -> None:
        """Raise StateStoreLost when the file at `path` is no longer the one that was opened."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            raise StateStoreLost(
                f"state store {self.path} was removed while the agent runs: stopping so that "
                "nothing more is acknowledged into a deleted file; the next start creates a new "
                "state, imports the catalog and repairs the hub against it"
            ) from None
        except OSError as exc:
            raise StateStoreLost(
                f"state store {self.path} cannot be checked: {exc.strerror or exc}"
            ) from None
        if (info.st_dev, info.st_ino) != (self.device, self.inode):
            raise StateStoreLost(
                f"state store {self.path} was replaced by another file while the agent runs "
                "(a restore or a copy over it): stopping; the next start opens the new file"
            )
