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


class _Stderr:
    """Whatever `sys.stderr` is at write time (tests and daemons may swap it after configure)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(*, json: bool | None = None, level: str = "info") -> None:
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _Stderr())),
        cache_logger_on_first_use=True,
    )
