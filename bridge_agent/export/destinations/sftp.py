"""An SFTP destination (asyncssh): key authentication, the server's host key always checked.

Delivering one export is one connection: upload to a hidden temporary name in the target
folder, then rename it to the final name with OpenSSH's `posix-rename@openssh.com` extension
(atomic, replaces an existing file); a server without it gets SFTP's plain rename, after
removing an existing file of that name (export names carry their time, so there is none in
practice). A reader of the folder therefore sees the whole file under its final name or
nothing. A failed upload removes its temporary file when the connection still allows it; one
left by a dropped connection is overwritten by the next attempt and removed by `rotate`.

Security rules, never configurable:

- The host key is checked against the configured `known_hosts` file only (no `~/.ssh/config`,
  no ssh-agent, no password or keyboard-interactive login): a key that does not match is a
  permanent error naming the host, never a prompt or a silent accept.
- The private key is a `Secret`, imported in memory for each connection; it is never written
  to disk, logged or put in an error.

Transient (retried): connection refused, reset or dropped, timeouts, a server that closes
the session. Permanent (at once): host key not verifiable, login refused, key unreadable,
permission denied, no such folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path

from bridge_agent.config.exports import SftpDestinationSettings
from bridge_agent.export.destinations.base import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    Delivered,
    check_keep,
    check_name,
    newest_first,
    retrying,
    scrub,
    temporary_name,
)

with warnings.catch_warnings():
    # cryptography deprecates DSA, which asyncssh still imports: not ours to act on, and it
    # must not reach the agent's log (or fail a test run that treats warnings as errors).
    warnings.filterwarnings("ignore", message=".*DSA.*", category=UserWarning)
    import asyncssh

__all__ = ["SftpDestination"]

_CLEANUP_TIMEOUT = 5.0  # removing a temporary file after a failure: best effort, bounded


class SftpDestination:
    """Exports into one folder of an SFTP server."""

    def __init__(
        self,
        settings: SftpDestinationSettings,
        *,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
    ) -> None:
        self.settings = settings
        self._backoff = (backoff_base, backoff_cap)

    @property
    def label(self) -> str:
        s = self.settings
        host = f"[{s.host}]" if ":" in s.host else s.host
        return f"sftp://{s.user}@{host}:{s.port}/{s.path.lstrip('/') if s.path != '.' else ''}"

    def __repr__(self) -> str:
        return f"SftpDestination({self.label!r})"

    async def deliver(self, local_file: Path, name: str) -> Delivered:
        check_name(name)
        local = Path(local_file)
        size = (await asyncio.to_thread(local.stat)).st_size
        _, attempts = await self._retrying(f"uploading {name}", lambda: self._upload(local, name))
        location = self.label.rstrip("/") + "/" + name
        return Delivered(name, location, size, attempts)

    async def rotate(self, prefix: str, keep: int) -> list[str]:
        check_keep(keep)
        deleted, _ = await self._retrying(f"rotating {prefix}", lambda: self._rotate(prefix, keep))
        return deleted

    async def _retrying(
        self, what: str, call: Callable[[], Awaitable[list[str]]]
    ) -> tuple[list[str], int]:
        return await retrying(
            self.label,
            what,
            call,
            attempts=self.settings.attempts,
            transient=_transient,
            describe=self._describe,
            backoff_base=self._backoff[0],
            backoff_cap=self._backoff[1],
        )

    def _remote(self, name: str) -> str:
        return posixpath.join(self.settings.path, name)

    async def _connect(self) -> asyncssh.SSHClientConnection:
        s = self.settings
        passphrase = s.passphrase.reveal() if s.passphrase is not None else None
        key = asyncssh.import_private_key(s.private_key.reveal(), passphrase)
        return await asyncssh.connect(
            s.host,
            s.port,
            username=s.user,
            client_keys=[key],
            known_hosts=str(s.known_hosts),
            config=None,  # no ~/.ssh/config: what agent.toml says is what runs
            agent_path=None,
            password=None,
            kbdint_auth=False,
            preferred_auth="publickey",
            connect_timeout=s.timeout,
            login_timeout=s.timeout,
            keepalive_interval=s.timeout,
            keepalive_count_max=3,
        )

    async def _upload(self, local: Path, name: str) -> list[str]:
        final, temp = self._remote(name), self._remote(temporary_name(name))
        async with await self._connect() as conn, conn.start_sftp_client() as sftp:
            try:
                await sftp.put(str(local), temp)
                try:
                    await sftp.posix_rename(temp, final)
                except asyncssh.SFTPOpUnsupported:
                    with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                        await sftp.remove(final)
                    await sftp.rename(temp, final)
            except BaseException:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(_CLEANUP_TIMEOUT):
                        await sftp.remove(temp)
                raise
        return []

    async def _rotate(self, prefix: str, keep: int) -> list[str]:
        async with await self._connect() as conn, conn.start_sftp_client() as sftp:
            names = await sftp.listdir(self.settings.path)
            old = newest_first(prefix, names)[keep:]
            for name in old:
                with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                    await sftp.remove(self._remote(name))
            # Temporaries a dropped connection left behind (no upload of this export runs
            # while its rotation does: the scheduler runs one export at a time).
            for name in names:
                stale = name.startswith(".") and name.endswith(".part")
                if stale and newest_first(prefix, [name[1:].removesuffix(".part")]):
                    with contextlib.suppress(asyncssh.SFTPError):
                        await sftp.remove(self._remote(name))
        return sorted(old)

    def _describe(self, exc: BaseException) -> str:
        s = self.settings
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            text = (
                f"the host key of {s.host}:{s.port} does not match {s.known_hosts} "
                f"(refused: check the server's key, then update known_hosts) ({exc.reason})"
            )
        elif isinstance(exc, asyncssh.PermissionDenied):
            text = f"login as {s.user} refused with the configured key ({exc.reason})"
        elif isinstance(exc, asyncssh.KeyImportError):
            text = "the private key cannot be read (wrong format or passphrase)"
        elif isinstance(exc, asyncssh.SFTPError):
            text = f"SFTP {type(exc).__name__.removeprefix('SFTP')}: {exc.reason}"
        elif isinstance(exc, asyncssh.DisconnectError):
            text = f"disconnected ({exc.reason})"
        elif isinstance(exc, OSError) and exc.strerror:
            text = exc.strerror
        else:
            text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return scrub(text, (s.private_key, s.passphrase))


# SFTP status codes that say the session, not the request, failed: asking again may work.
_SFTP_TRANSIENT = (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection, asyncssh.SFTPFailure)
_DISCONNECT_PERMANENT = (
    asyncssh.HostKeyNotVerifiable,
    asyncssh.PermissionDenied,
    asyncssh.KeyExchangeFailed,
    asyncssh.ProtocolNotSupported,
    asyncssh.IllegalUserName,
)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, (*_DISCONNECT_PERMANENT, asyncssh.KeyImportError)):
        return False
    if isinstance(exc, asyncssh.SFTPError):
        return isinstance(exc, _SFTP_TRANSIENT)
    return isinstance(
        exc,
        asyncssh.DisconnectError
        | asyncssh.ConnectionLost
        | asyncssh.ChannelOpenError
        | TimeoutError
        | ConnectionError
        | OSError
        | asyncio.IncompleteReadError,
    )
