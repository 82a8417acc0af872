"""Bounded reading of outside input: files, JSON, msgpack and HTTP bodies the agent did not write.

Everything the agent reads from outside (spool entries written by the web server's user, webhook
bodies, hub and store replies, configuration and secret files) comes through here, so that one
hostile or broken input can cost at most a bounded amount of memory and time and always ends in one
error type, `InputError`, whose message says what was wrong. The caller then contains the failure to
that one input (sets the file aside, answers 400, fails one item); nothing a stranger can write
reaches a root task as a `RecursionError`, a `ValueError` from `int()` or a blocked `read()`.

Why each rule holds:

- **Size is checked before reading, and the read itself is capped.** A file's size can change
  between `fstat` and `read` (it is still being written, or it is a special file that reports 0),
  so the read asks for at most `max_bytes + 1` bytes whatever `fstat` said.
- **Only regular files are opened, links are not followed.** `open()` on a FIFO blocks until a
  writer appears, on a device it can have side effects; a symlink could point outside the folder
  (or nowhere, and a dangling link can never be read or cleaned). `lstat` decides before `open`,
  `O_NOFOLLOW | O_NONBLOCK` make the open itself safe if the entry is swapped in between, and
  `fstat` on the open descriptor checks that what was opened is what was inspected.
- **Depth is bounded.** Python's decoders recurse: a few thousand nested `[` exhaust the recursion
  limit. Both C decoders stop cleanly at their own limit (Python's recursion limit for JSON, a
  fixed stack for msgpack), which becomes `InputError` here; what they accept is then walked
  iteratively and refused past `max_depth`. No document the agent reads nests deeper than a dozen
  levels, and nothing deeper ever reaches code that recurses.
- **Numbers stay numbers.** Python refuses to turn more than 4 300 digits into an `int`
  (`ValueError`, not a `JSONDecodeError`); that is reported like any other malformed document.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import msgpack

from bridge_agent.errors import InputError

__all__ = [
    "MAX_DEPTH",
    "InputError",
    "check_depth",
    "loads_json",
    "read_limited",
    "read_regular_file",
    "unpack_msgpack",
]

MAX_DEPTH = 32  # nesting levels any document the agent reads may have (a product is about 5)


def loads_json(
    raw: bytes | str, *, max_bytes: int, max_depth: int = MAX_DEPTH, what: str = "document"
) -> Any:
    """Parse JSON text within a size and depth bound; InputError says what is wrong."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if len(data) > max_bytes:
        raise InputError(f"{what} is larger than {max_bytes} bytes")
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} is not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InputError(f"{what} nests deeper than {max_depth} levels") from None
    except ValueError as exc:  # int() refuses an integer of thousands of digits
        if "integer string conversion" in str(exc):
            raise InputError(f"{what} holds an integer of more than 4300 digits") from None
        raise InputError(f"{what} is not usable JSON: {_first_line(exc)}") from None
    check_depth(value, max_depth, what=what)
    return value


def unpack_msgpack(
    raw: bytes, *, max_bytes: int, max_depth: int | None = MAX_DEPTH, what: str = "body"
) -> Any:
    """Decode msgpack within a size and depth bound (string map keys only); InputError if not."""
    if len(raw) > max_bytes:
        raise InputError(f"{what} is larger than {max_bytes} bytes")
    try:
        value = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise InputError(f"{what} is not valid msgpack ({type(exc).__name__})") from None
    if max_depth is not None:
        check_depth(value, max_depth, what=what)
    return value


def check_depth(value: Any, max_depth: int = MAX_DEPTH, *, what: str = "document") -> None:
    """Refuse a decoded value that nests lists and maps deeper than `max_depth` (iterative)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            continue
        if depth > max_depth:
            raise InputError(f"{what} nests deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def read_regular_file(path: Path, *, max_bytes: int, follow_symlinks: bool = False) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, read safely (blocking: use a thread).

    InputError for anything else: a FIFO, socket, device or folder, a symbolic link (unless
    `follow_symlinks`, for configuration files that packaging tools install as links), or a file
    over the limit. FileNotFoundError passes through: the caller knows whether "gone" is normal.
    Other OS errors (permissions, I/O) become InputError with the system's reason. Messages
    have no subject ("not a regular file but a FIFO"): the caller says what was being read.
    """
    try:
        info = os.stat(path) if follow_symlinks else os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InputError(exc.strerror or type(exc).__name__) from None
    _check_regular(info, max_bytes)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if not follow_symlinks and exc.errno == errno.ELOOP:  # replaced by a link meanwhile
            raise InputError("not a regular file but a symbolic link") from None
        raise InputError(exc.strerror or type(exc).__name__) from None
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            raise InputError("replaced while being read")
        _check_regular(opened, max_bytes)
        chunks: list[bytes] = []
        left = max_bytes + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise InputError(exc.strerror or type(exc).__name__) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise InputError(f"larger than {max_bytes} bytes")
    return data


def _check_regular(info: os.stat_result, max_bytes: int) -> None:
    mode = info.st_mode
    if not stat.S_ISREG(mode):
        raise InputError(f"not a regular file but {_kind(mode)}")
    if info.st_size > max_bytes:
        raise InputError(f"larger than {max_bytes} bytes ({info.st_size} bytes)")


def _kind(mode: int) -> str:
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    for test, name in kinds:
        if test(mode):
            return name
    return "of an unknown type"


class _Streamed(Protocol):
    """What `read_limited` needs of an HTTP response (httpx's, or a test double)."""

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...


async def read_limited(response: _Streamed, max_bytes: int, *, what: str = "reply") -> bytes:
    """The body of a streamed HTTP response, refusing to hold more than `max_bytes` of it.

    The caller opened the response with `stream=True` (or `client.stream(...)`) and closes it;
    reading stops at the first chunk past the limit, so a reply of any size costs at most
    `max_bytes` plus one chunk.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise InputError(f"{what} is larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _first_line(exc: BaseException) -> str:
    text = str(exc).split("\n", 1)[0]
    return text[:200] or type(exc).__name__
