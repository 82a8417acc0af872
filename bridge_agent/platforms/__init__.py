"""Platform registry: adapters are found through the `bridge_agent.platforms` entry-point group.

Built-in adapters are declared as entry points in our own `pyproject.toml`, so built-in and
third-party adapters load through one path (APScheduler 3 does the same for its triggers). The
lookup itself is the config layer's (`config.specs`), because the config loader needs it first:
it reads each store's settings spec from the adapter class an entry point loads (an adapter
declares `settings_spec`), so one registry answers both, and a test that registers a fake entry
point registers it for both.
"""

from __future__ import annotations

from typing import cast

from bridge_agent.config.specs import (
    PLATFORM_ENTRY_POINT_GROUP,
    installed_platforms,
    platform_adapter,
)
from bridge_agent.errors import ConfigError
from bridge_agent.platforms.base import CatalogPage, Platform

GROUP = PLATFORM_ENTRY_POINT_GROUP

__all__ = ["GROUP", "CatalogPage", "Platform", "available", "load"]


def available() -> list[str]:
    """The names of the installed platforms, sorted."""
    return installed_platforms()


def load(name: str) -> type[Platform]:
    """The adapter class registered under `name`; ConfigError if none is installed."""
    adapter = platform_adapter(name)
    if adapter is None:
        known = ", ".join(available()) or "none"
        raise ConfigError([f"no adapter installed for platform {name!r} (installed: {known})"])
    return cast(type[Platform], adapter)
