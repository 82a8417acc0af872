"""The settings spec an adapter declares, and how the loader finds it: adapters own their settings.

A `[[stores]]` entry holds the common store keys (`StoreSettings`) and its platform's own keys.
Which keys a platform takes is the adapter's to say, not config's: an adapter class sets
`settings_spec` to a `PlatformSpec` (its required and optional credentials, and its options with
their kinds, bounds and defaults), and the loader reads it from the class that the
`bridge_agent.platforms` entry point of the store's `platform` loads. config knows no platform by
name, so a built-in adapter and a third-party one take the same path, and a platform with no
adapter installed is an unknown platform, not a half-known one.

The spec types live here, in the config layer below the platforms: adapters import them, and
config never imports an adapter statically (loading an entry point at run time is what plugins
are for, and the import-linter layers hold).

A plugin adapter without a spec keeps the plugin rules it always had: keys named like credentials
(`SECRET_KEYS`, or ending in one of `SECRET_SUFFIXES`) become `Secret`s, and every other key is
passed on unvalidated for the plugin to judge.

`PlatformSpec.problems` applies the spec to a `StoreSettings` built by hand (tests, the simulator,
a third-party caller), so an adapter's `from_settings` checks its keys by the one definition the
loader used, and says the same thing about them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

from bridge_agent.config.values import FrozenMap, Secret, type_name, url_problems

__all__ = [
    "PLATFORM_ENTRY_POINT_GROUP",
    "SECRET_KEYS",
    "SECRET_SUFFIXES",
    "OptionKind",
    "OptionSpec",
    "PlatformSpec",
    "bounds_problem",
    "installed_platforms",
    "is_secret_key",
    "platform_adapter",
    "settings_spec_of",
]

PLATFORM_ENTRY_POINT_GROUP = "bridge_agent.platforms"

#: Keys whose values are credentials, for platforms whose adapter declares no spec: wrapped in
#: `Secret`, never echoed, and each may be given as `<key>_file` instead. A key ending in one of
#: `SECRET_SUFFIXES` counts too: we cannot know a plugin's keys, and a masked option is cheaper
#: than a leaked one.
SECRET_KEYS: frozenset[str] = frozenset(
    {
        "token",
        "consumer_key",
        "consumer_secret",
        "webhook_secret",
        "access_token",
        "api_key",
        "api_secret",
        "password",
        "client_secret",
    }
)
SECRET_SUFFIXES: tuple[str, ...] = ("_token", "_secret", "_key", "_password")

# "url": an https:// URL, or plain http:// to a loopback host (as `[hub] url`).
OptionKind = Literal["string", "integer", "boolean", "path", "url"]


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """One platform-specific, non-secret store key.

    `default` None with `required` False means "absent unless given". `pattern` (strings) is a
    full-match regex explained by `hint`; `minimum`/`maximum` bound integers.
    """

    kind: OptionKind
    default: Any = None
    required: bool = False
    minimum: int | None = None
    maximum: int | None = None
    pattern: str | None = None
    hint: str = ""

    def problem(self, value: Any) -> str | None:
        """What is wrong with a value already read (typed), or None. For hand-built settings."""
        if self.kind == "boolean":
            return (
                None if isinstance(value, bool) else _expected("a boolean (true or false)", value)
            )
        if self.kind == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                return _expected("an integer", value)
            return bounds_problem(value, self.minimum, self.maximum)
        if self.kind == "path":
            if isinstance(value, Path) or (isinstance(value, str) and value):
                return None
            return _expected("a path", value)
        if not isinstance(value, str):
            return _expected("a string", value)
        if self.kind == "url":
            found = url_problems(value, https_unless_loopback=True)
            return found[0] if found else None
        return self.pattern_problem(value)

    def pattern_problem(self, value: str) -> str | None:
        if self.pattern and not re.fullmatch(self.pattern, value):
            return f"'{value}' is not valid ({self.hint})"
        return None


def _empty() -> Mapping[str, OptionSpec]:
    return FrozenMap()


@dataclass(frozen=True, slots=True)
class PlatformSpec:
    """The keys one platform's stores take beyond the common store keys; its adapter declares it.

    Each secret may also be given as `<key>_file`, or found in systemd's `$CREDENTIALS_DIRECTORY`
    as `<store id>-<key with - for _>`.
    """

    secrets: tuple[str, ...] = ()  # required credentials
    optional_secrets: tuple[str, ...] = ("webhook_secret",)
    options: Mapping[str, OptionSpec] = field(default_factory=_empty)

    def problems(self, secrets: Mapping[str, Any], options: Mapping[str, Any]) -> list[str]:
        """What is wrong with a hand-built store's `secrets` and `options`, per key, in the
        loader's words ("per_page: must be from 1 to 100, got 250"). Never quotes a secret."""
        found: list[str] = []
        for key in (*self.secrets, *self.optional_secrets):
            value = secrets.get(key)
            if value is None:
                if key in self.secrets:
                    found.append(f"missing required key '{key}'")
            elif not isinstance(value, Secret):
                found.append(f"{key}: expected a config.Secret (never a plain string)")
            elif not value.reveal():
                found.append(f"{key}: is empty")
        for key, option in self.options.items():
            value = options.get(key)
            if value is None:
                if option.required:
                    found.append(f"missing required key '{key}'")
                continue
            problem = option.problem(value)
            if problem is not None:
                found.append(f"{key}: {problem}")
        return found


def bounds_problem(value: int, minimum: int | None, maximum: int | None) -> str | None:
    """Why an integer is out of its bounds, or None."""
    if minimum is not None and maximum is not None:
        if not minimum <= value <= maximum:
            return f"must be from {minimum} to {maximum}, got {value}"
    elif minimum is not None and value < minimum:
        return f"must be at least {minimum}, got {value}"
    elif maximum is not None and value > maximum:
        return f"must be at most {maximum}, got {value}"
    return None


def _expected(what: str, value: Any) -> str:
    return f"expected {what}, got {type_name(value)}"


def is_secret_key(key: str) -> bool:
    """Whether a store key of a platform without a spec holds a credential."""
    return key in SECRET_KEYS or key.endswith(SECRET_SUFFIXES)


# ---------------------------------------------------------------------------------------------
# Finding a platform's adapter (the one registry: `bridge_agent.platforms` uses it too)
# ---------------------------------------------------------------------------------------------


def installed_platforms() -> list[str]:
    """Names of the platforms installed packages register (ours included), sorted."""
    return sorted(entry_points(group=PLATFORM_ENTRY_POINT_GROUP).names)


def platform_adapter(name: str) -> object | None:
    """What the entry point `name` loads (an adapter class), or None when none is installed.

    Importing a broken plugin raises whatever its import raises; the caller reports it.
    """
    found = tuple(entry_points(group=PLATFORM_ENTRY_POINT_GROUP).select(name=name))
    if not found:
        return None
    # Two packages claiming one name: the first found wins, as importlib.metadata orders them.
    adapter: object = found[0].load()
    return adapter


def settings_spec_of(adapter: object) -> PlatformSpec | None:
    """The spec an adapter declares in `settings_spec`, None when it declares none (a plugin
    keeping the plugin rules); TypeError when it declares something that is not one."""
    spec = getattr(adapter, "settings_spec", None)
    if spec is None or isinstance(spec, PlatformSpec):
        return spec
    raise TypeError(f"settings_spec is a {type(spec).__name__}, not a config.PlatformSpec")
