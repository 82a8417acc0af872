"""The value types settings are made of, and the pure rules for reading one value.

`Secret` (a credential that refuses to be printed), `Listen` (`host:port`), `FrozenMap` (a
read-only mapping that stays frozen through copies), `parse_duration` and the URL rule
(`url_problems`: plain `http://` only to loopback where it matters). They know nothing of TOML
tables or of the settings they end up in, so the loader, the settings specs and adapters checking
hand-built settings all apply the same rule to a value and say the same thing about it.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

__all__ = [
    "HTTPS_ONLY",
    "MASK",
    "MAX_DURATION",
    "FrozenMap",
    "Listen",
    "Secret",
    "is_loopback",
    "parse_duration",
    "redact",
    "type_name",
    "url_problems",
]

MASK = "********"


class Secret:
    """A secret string (token, API key, password) that refuses to be printed.

    `repr` and `str` (and so f-strings, `%s`, logging and tracebacks) show a mask; `reveal()` is the
    one way to get the value, so every place that uses a secret is easy to find. Two secrets are
    equal when their values are (compared in constant time), which keeps config equality meaningful.
    """

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """The secret value. Pass it straight to the client that needs it; never log it."""
        return self._value

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        # copy, deepcopy and dataclasses.asdict go through here; the default path would call the
        # blocked __setattr__.
        return (Secret, (self._value,))


@dataclass(frozen=True, slots=True)
class Listen:
    """An address to listen on. `str()` gives `host:port`, with brackets for IPv6 (`[::1]:8686`)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Listen:
        """Read `"127.0.0.1:8686"`, `"[::1]:8686"` or `"localhost:0"`; ValueError says why not.

        Port 0 asks the OS for a free port (tests use it).
        """
        text = text.strip()
        if text.startswith("["):
            host, bracket, rest = text[1:].partition("]")
            if not bracket or not rest.startswith(":"):
                raise ValueError("expected '[ipv6]:port'")
            port_text = rest[1:]
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ValueError(f"'{host}' is not an IPv6 address") from None
        else:
            host, colon, port_text = text.rpartition(":")
            if not colon:
                raise ValueError("expected 'host:port'")
            if ":" in host:
                raise ValueError("put IPv6 addresses in brackets, e.g. '[::1]:8686'")
            if not _HOSTNAME.fullmatch(host):
                raise ValueError(f"'{host}' is not a host name or IPv4 address")
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"port '{port_text}' is not a number from 0 to 65535")
        return cls(host, int(port_text))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")

V = TypeVar("V")


class FrozenMap(Mapping[str, V]):
    """A read-only, hashable mapping: keeps `secrets` and `options` frozen inside frozen settings.

    Unlike `types.MappingProxyType` it survives `copy.deepcopy`, `dataclasses.asdict` and pickling,
    and its repr shows `Secret` values masked like everywhere else.
    """

    __slots__ = ("_data",)
    _data: dict[str, V]

    def __init__(self, data: Mapping[str, V] | None = None) -> None:
        object.__setattr__(self, "_data", dict(data or {}))

    def __getitem__(self, key: str) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("FrozenMap is immutable")

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __reduce__(self) -> tuple[type[FrozenMap[V]], tuple[dict[str, V]]]:
        return (FrozenMap, (self._data,))


def redact(value: Any) -> Any:
    """A JSON-ready copy of settings with every secret masked.

    For the frozen configuration stored with each run, the `status` command and debug output:
    dataclasses become dicts, paths strings, tuples lists and `Secret`s `"********"`.
    """
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, Listen):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: redact(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): redact(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [redact(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


# ---------------------------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------------------------

MAX_DURATION = 366 * 86400.0
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | int | float) -> float:
    """Seconds from `"250ms"`, `"30s"`, `"5m"`, `"6h"`, `"1d"`, `"1h30m"` or a bare number.

    Bare numbers (TOML integers or floats, or numeric strings) are seconds. ValueError otherwise,
    including for negative, infinite and NaN values; TypeError for a boolean.
    """
    if isinstance(text, bool):  # bool is an int to Python, never a duration to a human
        raise TypeError("expected a duration, got boolean")
    if isinstance(text, int | float):
        try:
            seconds = float(text)
        except OverflowError:  # an integer past float range
            seconds = math.inf
    else:
        stripped = text.strip()
        try:
            seconds = float(stripped)
        except ValueError:
            seconds = 0.0
            end = 0
            for match in _DURATION_PART.finditer(stripped):
                if match.start() != end:
                    break
                seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
                end = match.end()
            if end == 0 or end != len(stripped):
                raise ValueError(
                    f"'{_clip(text)}' is not a duration (use seconds or a number with a unit "
                    "ms, s, m, h or d, e.g. '30s', '5m', '1h30m')"
                ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"'{_clip(text)}' is not a duration (must be finite and not negative)")
    if seconds > MAX_DURATION:
        # Timers past this overflow the event loop's clock arithmetic, and no setting needs them.
        raise ValueError(f"'{_clip(text)}' is too long a duration (at most 366 days)")
    return seconds


def _clip(value: object, limit: int = 40) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# URLs and the names of TOML types
# ---------------------------------------------------------------------------------------------

#: Begins the problem of a plain `http://` URL to a host that is not loopback.
HTTPS_ONLY = "must use https:// (plain http:// only to loopback)"


def url_problems(text: str, *, https_unless_loopback: bool) -> list[str]:
    """What is wrong with an `http://`/`https://` URL, each as the rest of "`key`: ...".

    With `https_unless_loopback`, plain `http://` is accepted only to a loopback host: the hub
    token and the whole catalog (or signed webhook deliveries) travel in those requests
    (design.md section 6). A `user:password@` part is refused and never quoted: it is a
    credential.
    """
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return [f"'{text}' is not a valid URL"]
    if parts.username is not None or parts.password is not None:
        return ["must not contain user:password@ (use the token keys)"]
    if parts.scheme not in ("http", "https") or not host:
        return [f"expected an http:// or https:// URL, got '{text}'"]
    problems = []
    if parts.query or parts.fragment:
        problems.append(f"'{text}' must not have a ?query or #fragment")
    if https_unless_loopback and parts.scheme == "http" and not is_loopback(host):
        problems.append(f"{HTTPS_ONLY}, got '{text}'")
    return problems


def bounded_integer(value: Any, key: str, minimum: int, maximum: int, problems: list[str]) -> int:
    """`value` as an integer from `minimum` to `maximum`; a problem (and the nearest bound) for
    anything else. For settings built by hand (tests, the demo), which the loader never saw."""
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{key} must be an integer, got {type(value).__name__}")
        return minimum
    if not minimum <= value <= maximum:
        problems.append(f"{key} must be from {minimum} to {maximum}, got {value}")
        return max(minimum, min(maximum, value))
    return value


def is_loopback(host: str) -> bool:
    """`localhost`, or an IPv4 or IPv6 loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def type_name(value: Any) -> str:
    """TOML's name for the type of `value`, which is what the operator wrote."""
    if isinstance(value, bool):
        return "boolean"
    names: tuple[tuple[type, str], ...] = (
        (str, "string"),
        (int, "integer"),
        (float, "float"),
        (dict, "table"),
        (list, "array"),
    )
    for kind, name in names:
        if isinstance(value, kind):
            return name
    return type(value).__name__.replace("datetime", "date-time")
