"""Platform registry: adapters are found through the `bridge_agent.platforms` entry-point group.

Built-in adapters are declared as entry points in our own `pyproject.toml`, so built-in and
third-party adapters load through one path (APScheduler 3 does the same for its triggers).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import cast

from bridge_agent.errors import ConfigError
from bridge_agent.platforms.base import CatalogPage, Platform

GROUP = "bridge_agent.platforms"

__all__ = ["GROUP", "CatalogPage", "Platform", "available", "load"]


def available() -> list[str]:
    return sorted(entry_points(group=GROUP).names)


def load(name: str) -> type[Platform]:
    """The adapter class registered under `name`; ConfigError if none is installed."""
    found = entry_points(group=GROUP, name=name)
    if not found:
        known = ", ".join(available()) or "none"
        raise ConfigError([f"no adapter installed for platform {name!r} (installed: {known})"])
    (entry_point,) = tuple(found)[:1]
    return cast(type[Platform], entry_point.load())
