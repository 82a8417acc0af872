"""The simulated store's clock, and the clock control (`/__sim/clock`) every simulator offers.

Second precision, because stores date records to the second (MySQL DATETIME for WordPress,
ISO 8601 without fractions for Shopify), so a test can place a change on an exact second and
probe a modified-since boundary. Signatures with a timestamp (OAuth) are checked against the real
time instead, as a client signs with its own clock.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(Z|z|[+-]\d{2}(?::?\d{2})?)?$"
)


class ClockChangeError(ValueError):
    """A clock change the control API refuses (the message names the field)."""


def parse_instant(value: str) -> tuple[int, int | None] | None:
    """An ISO 8601 / RFC 3339 date-time as (wall seconds read as UTC, zone offset or None).

    A space or `T` between date and time, fractions of a second dropped, zone optional: the
    forms `rest_parse_date` accepts. None when it is not such a date.
    """
    m = _ISO.match(value)
    if m is None:
        return None
    try:
        year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
        naive = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None
    zone = m.group(7)
    if zone is None:
        return int(naive.timestamp()), None
    if zone in ("Z", "z"):
        return int(naive.timestamp()), 0
    sign = -1 if zone[0] == "-" else 1
    digits = zone[1:].replace(":", "")
    return int(naive.timestamp()), sign * (int(digits[:2]) * 3600 + int(digits[2:4] or "0") * 60)


class SimClock:
    """The store's clock: wall time plus an offset, optionally frozen; integer epoch seconds."""

    def __init__(self, floor: int = 0) -> None:
        # Never earlier than `floor` (the generated catalog's newest date), so a machine whose
        # clock is behind does not see records modified in its future.
        self._offset = max(0, floor - int(time.time()))
        self._frozen: int | None = None

    def now(self) -> int:
        if self._frozen is not None:
            return self._frozen
        return int(time.time()) + self._offset

    @property
    def frozen(self) -> bool:
        return self._frozen is not None

    def advance(self, seconds: int) -> None:
        if self._frozen is not None:
            self._frozen += seconds
        else:
            self._offset += seconds

    def set(self, ts: int) -> None:
        if self._frozen is not None:
            self._frozen = ts
        else:
            self._offset = ts - int(time.time())

    def freeze(self, on: bool) -> None:
        if on and self._frozen is None:
            self._frozen = self.now()
        elif not on and self._frozen is not None:
            self._offset = self._frozen - int(time.time())
            self._frozen = None

    def change(self, body: Mapping[str, Any]) -> None:
        """Apply a control request: `freeze`, then `set`, then `advance`, each optional.

        `set` is epoch seconds or ISO 8601 (a zone-less value is UTC); `advance` a number of
        seconds. Raises ClockChangeError for a bad value; the fields before it stay applied.
        """
        if "freeze" in body:
            self.freeze(bool(body["freeze"]))
        if "set" in body:
            value = body["set"]
            if isinstance(value, int) and not isinstance(value, bool):
                self.set(value)
            elif isinstance(value, str) and (parsed := parse_instant(value)) is not None:
                seconds, zone = parsed
                self.set(seconds - (zone or 0))
            else:
                raise ClockChangeError("set: epoch seconds or ISO 8601.")
        if "advance" in body:
            seconds = body["advance"]
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise ClockChangeError("advance: a number of seconds.")
            self.advance(int(seconds))
