"""structlog configuration, done once by the CLI: JSON lines for journald, console on a TTY.

Events are short snake_case facts (`batch_split`, `hub_unreachable`) with values as keys. Secrets
never reach a log line because they are `config.Secret` objects whose text is `********`; the
`redact` processor below is the second line of defence for values registered at start-up.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO, cast

import structlog

_SECRETS: set[str] = set()
_LEVELS = logging.getLevelNamesMapping()
_threshold = logging.INFO


def register_secrets(values: Iterable[str]) -> None:
    """Values that must never be printed; any log value containing one is masked."""
    _SECRETS.update(v for v in values if len(v) >= 4)


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if not _SECRETS:
        return event
    for key, value in event.items():
        if isinstance(value, str) and any(s in value for s in _SECRETS):
            masked = value
            for secret in _SECRETS:
                masked = masked.replace(secret, "********")
            event[key] = masked
    return event


def set_level(level: str) -> None:
    """Change the level at run time (config reload); unknown names mean info."""
    global _threshold  # noqa: PLW0603 - one process-wide level, as logging itself has
    _threshold = _LEVELS.get(level.upper(), logging.INFO)


def _filter_level(_: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if _LEVELS.get(method.upper(), logging.INFO) < _threshold:
        raise structlog.DropEvent
    return event


class _Stderr:
    """Whatever `sys.stderr` is at write time (tests and daemons may swap it after configure)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(*, json: bool | None = None, level: str = "info") -> None:
    set_level(level)
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            _filter_level,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _Stderr())),
        cache_logger_on_first_use=True,
    )
