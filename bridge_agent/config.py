"""`agent.toml` -> frozen settings dataclasses, with every problem reported at once.

The agent is configured by one TOML file (design.md section 7) with the tables `[agent]`, `[hub]`,
`[health]`, `[webhooks]` and `[[stores]]`. `load_config` reads it into the frozen, slotted
dataclasses below; the rest of the agent reads settings only from those objects, never from the
file or the environment, so what was validated is what runs.

Why the rules are strict:

- **Every problem at once.** An operator editing a config over SSH should fix it in one round, not
  one error per restart, so the loader collects problems into a list and raises a single
  `ConfigError` at the end (the CLI prints them and exits 78, sysexits `EX_CONFIG`).
- **Unknown keys are errors.** A misspelt optional key (`pol_interval`) would otherwise be ignored
  silently and its default would run in production; each one is reported with its table and the
  closest known key.
- **Secrets never leak.** Tokens and platform credentials are wrapped in `Secret`, whose `repr` and
  `str` are masks, so a config that is logged, printed or put in an exception stays safe. Problem
  messages never quote a secret value, even a malformed one. Secrets come from `${ENV}` references
  or from files (`<key>_file`, or systemd's `$CREDENTIALS_DIRECTORY` from `LoadCredential=`), so
  the config file itself can be world-readable and kept in version control.
- **`${VAR}` must resolve.** An unset variable expanding to "" would turn into an empty token or a
  wrong URL far from its cause; it is reported with the variable and the key that used it.
- **Plain `http://` to the hub only on loopback.** The agent token and the whole catalog travel in
  those requests (design.md section 6).
- **Relative paths follow the file, not the working directory**, which under systemd is `/`.
"""

from __future__ import annotations

import dataclasses
import difflib
import hmac
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from bridge_agent.errors import ConfigError, InputError
from bridge_agent.inputs import check_depth, read_regular_file

__all__ = [
    "DEFAULT_PATHS",
    "LOG_LEVELS",
    "MASK",
    "PLATFORMS",
    "PLATFORM_ENTRY_POINT_GROUP",
    "SECRET_KEYS",
    "SECRET_SUFFIXES",
    "AgentSettings",
    "Config",
    "FrozenMap",
    "HealthSettings",
    "HubSettings",
    "Listen",
    "OptionSpec",
    "PlatformSpec",
    "Secret",
    "StoreSettings",
    "WebhookSettings",
    "default_config_path",
    "is_secret_key",
    "load_config",
    "parse_duration",
    "redact",
]

# ---------------------------------------------------------------------------------------------
# Value types
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def _empty() -> Mapping[str, Any]:
    return FrozenMap()


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """`[agent]`: who this agent is and where it keeps its state. Durations are in seconds."""

    id: str
    state_dir: Path
    drain_timeout: float = 30.0  # on SIGTERM: how long in-flight work may finish
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class HubSettings:
    """`[hub]`: where batches go and how hard to push. Durations are in seconds."""

    url: str  # no trailing slash; may carry a path prefix (a hub behind a reverse proxy)
    token: Secret
    timeout: float = 30.0
    batch_max_items: int = 500
    batch_max_bytes: int = 1_048_576
    max_in_flight: int = (
        2  # batches at the hub at once: the agent builds one while the hub stores one
    )
    batch_linger: float = 0.05
    backoff_base: float = 0.5
    backoff_cap: float = 60.0
    auth_retry_interval: float = 300.0  # after a 401/403: how often to try the token again
    max_retry_after: float = 120.0  # the longest hub Retry-After honoured before asking again


@dataclass(frozen=True, slots=True)
class HealthSettings:
    """`[health]`: the loopback endpoint for /healthz, /metrics and /status.

    The listener's limits (see `listener.py`): a request head must arrive within
    `header_timeout`, a body within `body_timeout` (also the longest a response may stall on a
    client that stops reading), a kept-alive connection lasts `idle_timeout` between requests, and
    at most `max_connections` are served at once. 75 s of idle outlasts Prometheus's default 60 s
    between scrapes and a reverse proxy's 60 s keep-alive, so the client, not the agent, closes.
    Its readers are few (Prometheus, `status`, a probe): 32 connections.
    """

    listen: Listen = Listen("127.0.0.1", 8686)
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 75.0
    max_connections: int = 32


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """`[webhooks]`: where platform webhooks arrive (behind a TLS reverse proxy).

    The listener's limits as in `HealthSettings`. A head is one packet from a real sender: 10 s
    is slack for a slow link, not for a client that trickles bytes. 30 s brings the largest body
    (`max_body_bytes`, 2 MiB) at 70 KB/s. 256 connections hold a burst of deliveries (a store
    sends them a few at a time) while keeping the file descriptors bounded.
    """

    listen: Listen = Listen("127.0.0.1", 8687)
    max_body_bytes: int = 2_097_152
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 75.0
    max_connections: int = 256


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """One `[[stores]]` entry. Durations are in seconds.

    `secrets` holds the credentials present (required ones always, optional ones such as
    `webhook_secret` only when given); `options` holds the platform's other keys with their defaults
    filled in (see `PLATFORMS`), read-only.
    """

    id: str
    platform: str
    url: str
    active: bool = True
    deletions: bool = True  # ship deletions to the hub
    concurrency: int = 4
    poll_interval: float = 300.0
    reconcile_interval: float = 21600.0
    spool_dir: Path | None = None
    images_max_per_product: int = 10
    image_checks: bool = True  # the import report's main-image checks (HEAD requests to the CDN)
    requests_per_second: float = 0.0  # request budget; 0: only `concurrency` bounds it
    secrets: Mapping[str, Secret] = field(default_factory=_empty)
    options: Mapping[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class Config:
    """The whole `agent.toml`. `source` is the absolute path it was read from."""

    agent: AgentSettings
    hub: HubSettings
    health: HealthSettings = field(default_factory=HealthSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    stores: tuple[StoreSettings, ...] = ()
    source: Path = Path("agent.toml")

    def store(self, id: str) -> StoreSettings:
        """The store with this id; KeyError names the configured ids otherwise."""
        for store in self.stores:
            if store.id == id:
                return store
        known = ", ".join(s.id for s in self.stores) or "none"
        raise KeyError(f"no store with id '{id}' in {self.source} (configured: {known})")


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
# What the file may contain
# ---------------------------------------------------------------------------------------------

#: Keys whose values are credentials: wrapped in `Secret`, never echoed, and each may be given as
#: `<key>_file` instead. For third-party platforms a key ending in one of `SECRET_SUFFIXES` counts
#: too, because we cannot know their keys and a masked option is cheaper than a leaked one.
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

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "critical")
PLATFORM_ENTRY_POINT_GROUP = "bridge_agent.platforms"
DEFAULT_PATHS: tuple[Path, ...] = (Path("agent.toml"), Path("/etc/bridge-agent/agent.toml"))

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


@dataclass(frozen=True, slots=True)
class PlatformSpec:
    """The keys one built-in platform takes beyond the common store keys."""

    secrets: tuple[str, ...] = ()  # required credentials
    optional_secrets: tuple[str, ...] = ("webhook_secret",)
    options: Mapping[str, OptionSpec] = field(default_factory=_empty)


PLATFORMS: Mapping[str, PlatformSpec] = FrozenMap(
    {
        "woocommerce": PlatformSpec(
            secrets=("consumer_key", "consumer_secret"),
            options=FrozenMap(
                {
                    "api_prefix": OptionSpec(
                        "string", "/wp-json/wc/v3", pattern=r"/\S*", hint="a path starting with /"
                    ),
                    # WooCommerce caps per_page at 100.
                    "per_page": OptionSpec("integer", 100, minimum=1, maximum=100),
                    "verify_tls": OptionSpec("boolean", True),
                    # The product JSON says neither: store-wide WooCommerce settings.
                    "prices_include_tax": OptionSpec("boolean"),
                    "currency": OptionSpec(
                        "string", pattern=r"[A-Z]{3}", hint="an ISO 4217 code such as 'EUR'"
                    ),
                    "seo_plugin": OptionSpec(
                        "string",
                        pattern=r"yoast|rankmath|aioseo|seopress",
                        hint="yoast, rankmath, aioseo or seopress",
                    ),
                    # The address at which the store reaches this agent's webhook receiver:
                    # https:// behind a reverse proxy, or plain http:// to a loopback host (a
                    # store on the same machine, the simulator). When set, the agent registers
                    # its webhooks and re-activates them when WooCommerce disables them.
                    "webhook_url": OptionSpec("url"),
                }
            ),
        ),
        "shopify": PlatformSpec(
            secrets=("access_token",),
            options=FrozenMap(
                {
                    "api_version": OptionSpec(
                        "string",
                        "2026-07",
                        pattern=r"\d{4}-\d{2}|unstable",
                        hint="like '2026-07'",
                    ),
                }
            ),
        ),
        "magento2": PlatformSpec(
            secrets=("access_token",),
            options=FrozenMap(
                {
                    "store_code": OptionSpec(
                        "string",
                        "default",
                        pattern=r"[A-Za-z0-9_]+",
                        hint="letters, digits and _",
                    ),
                }
            ),
        ),
        "prestashop": PlatformSpec(secrets=("api_key",)),
        # Built in: the catalog is canonical-product JSON files in a folder (demo, tests, exports).
        "jsondir": PlatformSpec(
            options=FrozenMap({"catalog_dir": OptionSpec("path", required=True)}),
        ),
    }
)

_TABLES = ("agent", "hub", "health", "webhooks", "stores")
_AGENT_KEYS = ("id", "state_dir", "drain_timeout", "log_level")
_HUB_KEYS = (
    "url",
    "token",
    "token_file",
    "timeout",
    "batch_max_items",
    "batch_max_bytes",
    "max_in_flight",
    "batch_linger",
    "backoff_base",
    "backoff_cap",
    "auth_retry_interval",
    "max_retry_after",
)
_LISTENER_KEYS = ("header_timeout", "body_timeout", "idle_timeout", "max_connections")
_HEALTH_KEYS = ("listen", *_LISTENER_KEYS)
_WEBHOOK_KEYS = ("listen", "max_body_bytes", *_LISTENER_KEYS)
_STORE_KEYS = (
    "id",
    "platform",
    "url",
    "active",
    "deletions",
    "concurrency",
    "poll_interval",
    "reconcile_interval",
    "spool_dir",
    "images_max_per_product",
    "image_checks",
    "requests_per_second",
)
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PLAIN_TABLE = re.compile(r"\[[a-z]+\]")
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:[?-])(.*))?", re.DOTALL)
_SECRET_FILE_LIMIT = 64 * 1024  # a credential is small; anything bigger is the wrong file
CONFIG_FILE_LIMIT = 1024 * 1024  # a few KB for a fleet of stores; a MB is already the wrong file
CONFIG_DEPTH_LIMIT = 16  # [[stores]] options nest a few levels at most
_PLACEHOLDER = Secret("")  # a secret not read (load_config with secrets=False)


def is_secret_key(key: str) -> bool:
    """Whether a store key of a third-party platform holds a credential."""
    return key in SECRET_KEYS or key.endswith(SECRET_SUFFIXES)


# ---------------------------------------------------------------------------------------------
# Public helpers
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


def default_config_path() -> Path:
    """`./agent.toml` if it exists, else `/etc/bridge-agent/agent.toml` (design.md section 7)."""
    local, system = DEFAULT_PATHS
    return local if local.is_file() else system


def load_config(
    path: Path, env: Mapping[str, str] | None = None, *, secrets: bool = True
) -> Config:
    """Read and validate `path`; ConfigError lists every problem found.

    `env` (default `os.environ`) supplies `${VAR}` references and `$CREDENTIALS_DIRECTORY`; tests
    pass their own so they never depend on the machine's environment.

    With `secrets=False` (commands that only read the local state: `status`, `log`, `outbox`),
    secret keys are neither required nor expanded nor read from their files: a fresh terminal
    without the hub token can still look. Every `Secret` given is then an empty placeholder,
    and an absent optional one stays absent; every other key is checked as always. Never run
    the agent or call a store or the hub with such a config.
    """
    env = os.environ if env is None else env
    path = Path(path)
    try:
        # A regular file (links followed: packages install configs as links), bounded in size:
        # `validate` must answer, not block on a FIFO or read a multi-GB file by mistake.
        raw = read_regular_file(path, max_bytes=CONFIG_FILE_LIMIT, follow_symlinks=True)
    except FileNotFoundError:
        raise ConfigError(
            [f"config file not found: {path} (pass --config, or create it)"], source=str(path)
        ) from None
    except InputError as exc:
        raise ConfigError([f"cannot read config file {path}: {exc}"], source=str(path)) from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [f"not valid UTF-8 (byte {exc.start}): TOML files must be UTF-8"], source=str(path)
        ) from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message carries the line and column; it never quotes the offending text.
        raise ConfigError([f"invalid TOML: {exc}"], source=str(path)) from None
    except RecursionError:
        raise ConfigError(
            ["invalid TOML: arrays or inline tables nest too deeply"], source=str(path)
        ) from None
    except ValueError:  # tomllib lets int() refuse an integer of thousands of digits
        raise ConfigError(
            ["invalid TOML: a number is too long (more than 4300 digits)"], source=str(path)
        ) from None
    try:
        check_depth(document, CONFIG_DEPTH_LIMIT, what="the file")
    except InputError as exc:
        raise ConfigError([f"invalid configuration: {exc}"], source=str(path)) from None

    context = _Context(
        env=env,
        problems=[],
        config_dir=path.parent.absolute(),
        credentials_dir=Path(env["CREDENTIALS_DIRECTORY"])
        if env.get("CREDENTIALS_DIRECTORY")
        else None,
        secrets=secrets,
    )
    config = _build(document, context, path.absolute())
    if context.problems:
        raise ConfigError(context.problems, source=str(path))
    return config


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

T = TypeVar("T")


class _Missing:
    """Marks a key without a default: leaving it out is a problem."""


_REQUIRED = _Missing()


@dataclass(slots=True)
class _Context:
    env: Mapping[str, str]
    problems: list[str]
    config_dir: Path  # relative paths in the file resolve against this
    credentials_dir: Path | None  # systemd's $CREDENTIALS_DIRECTORY, when set
    secrets: bool = True  # False: secrets are placeholders, never expanded nor read (load_config)


def _build(document: dict[str, Any], context: _Context, source: Path) -> Config:
    problems = context.problems
    for name, value in document.items():
        if name not in _TABLES:
            kind = "table" if isinstance(value, dict | list) else "key"
            problems.append(f"unknown top-level {kind} '{name}'{_suggest(name, _TABLES)}")

    agent_table = _table(document, "agent", context, required=True)
    hub_table = _table(document, "hub", context, required=True)
    health_table = _table(document, "health", context, required=False)
    webhooks_table = _table(document, "webhooks", context, required=False)

    agent = _agent(agent_table)
    hub = _hub(hub_table)
    health_defaults = HealthSettings()
    health = HealthSettings(
        listen=health_table.listen("listen", health_defaults.listen),
        **_listener_limits(health_table, health_defaults),
    )
    health_table.finish(_HEALTH_KEYS)
    webhook_defaults = WebhookSettings()
    webhooks = WebhookSettings(
        listen=webhooks_table.listen("listen", webhook_defaults.listen),
        max_body_bytes=webhooks_table.integer(
            "max_body_bytes", webhook_defaults.max_body_bytes, minimum=1
        ),
        **_listener_limits(webhooks_table, webhook_defaults),
    )
    webhooks_table.finish(_WEBHOOK_KEYS)
    if health.listen.port != 0 and health.listen == webhooks.listen:
        problems.append(f"[health] and [webhooks] both listen on {health.listen}")

    stores = _stores(document.get("stores"), context)
    return Config(
        agent=agent, hub=hub, health=health, webhooks=webhooks, stores=stores, source=source
    )


def _listener_limits(table: _Table, default: HealthSettings | WebhookSettings) -> dict[str, Any]:
    """The `_LISTENER_KEYS` of `[health]` or `[webhooks]`: every wait bounded, never zero."""
    return {
        "header_timeout": table.duration("header_timeout", default.header_timeout, positive=True),
        "body_timeout": table.duration("body_timeout", default.body_timeout, positive=True),
        "idle_timeout": table.duration("idle_timeout", default.idle_timeout, positive=True),
        "max_connections": table.integer("max_connections", default.max_connections, minimum=1),
    }


def _table(document: dict[str, Any], name: str, context: _Context, *, required: bool) -> _Table:
    data = document.get(name)
    if data is None:
        if required:
            context.problems.append(f"missing required table [{name}]")
        # A missing table reads as an empty one: its defaults apply and missing keys are not
        # reported again on top of the missing table.
        return _Table(f"[{name}]", {}, context, quiet=required)
    if not isinstance(data, dict):
        context.problems.append(f"[{name}]: expected a table, got {_type_name(data)}")
        return _Table(f"[{name}]", {}, context, quiet=True)
    return _Table(f"[{name}]", data, context)


def _agent(table: _Table) -> AgentSettings:
    default = _defaults(AgentSettings)
    agent_id = table.string("id")
    if agent_id and not _ID.fullmatch(agent_id):
        table.problem("id", f"'{agent_id}' must be 1 to 64 of A-Z a-z 0-9 . _ -")
    log_level = table.string("log_level", "info").lower()
    if log_level not in LOG_LEVELS:
        table.problem("log_level", f"'{log_level}' is not one of {', '.join(LOG_LEVELS)}")
    settings = AgentSettings(
        id=agent_id,
        state_dir=table.path("state_dir") or Path(),
        drain_timeout=table.duration("drain_timeout", default["drain_timeout"]),
        log_level=log_level,
    )
    table.finish(_AGENT_KEYS)
    return settings


def _hub(table: _Table) -> HubSettings:
    default = _defaults(HubSettings)
    url = table.url("url", https_unless_loopback=True)
    token = table.secret("token", implicit_name="hub-token")
    settings = HubSettings(
        url=url,
        token=token or Secret(""),
        timeout=table.duration("timeout", default["timeout"], positive=True),
        batch_max_items=table.integer("batch_max_items", default["batch_max_items"], minimum=1),
        batch_max_bytes=table.integer("batch_max_bytes", default["batch_max_bytes"], minimum=1),
        max_in_flight=table.integer(
            "max_in_flight", default["max_in_flight"], minimum=1, maximum=8
        ),
        batch_linger=table.duration("batch_linger", default["batch_linger"]),
        backoff_base=table.duration("backoff_base", default["backoff_base"], positive=True),
        backoff_cap=table.duration("backoff_cap", default["backoff_cap"], positive=True),
        max_retry_after=table.duration(
            "max_retry_after", default["max_retry_after"], positive=True
        ),
        auth_retry_interval=table.duration(
            "auth_retry_interval", default["auth_retry_interval"], positive=True
        ),
    )
    if settings.backoff_cap < settings.backoff_base:
        table.problem("backoff_cap", "must not be smaller than backoff_base")
    table.finish(_HUB_KEYS)
    return settings


def _stores(data: Any, context: _Context) -> tuple[StoreSettings, ...]:
    if data is None:
        context.problems.append("no [[stores]] configured: add at least one")
        return ()
    if not isinstance(data, list):
        context.problems.append(
            f"stores: expected an array of tables ([[stores]]), got {_type_name(data)}"
        )
        return ()
    stores: list[StoreSettings] = []
    first_seen: dict[str, int] = {}
    for number, entry in enumerate(data, start=1):
        label = f"[[stores]] #{number}"
        if not isinstance(entry, dict):
            context.problems.append(f"{label}: expected a table, got {_type_name(entry)}")
            continue
        store = _store(_Table(label, entry, context))
        if store.id:
            if store.id in first_seen:
                context.problems.append(
                    f"duplicate store id '{store.id}' in [[stores]] #{first_seen[store.id]} "
                    f"and #{number}: store ids must be unique"
                )
            else:
                first_seen[store.id] = number
        stores.append(store)
    return tuple(stores)


def _store(table: _Table) -> StoreSettings:
    default = _defaults(StoreSettings)
    store_id = table.string("id")
    if store_id:
        if _ID.fullmatch(store_id):
            # Name the store in every later message: "#3" alone is hard to find in a long file.
            table.label = f"{table.label} (id '{store_id}')"
        else:
            table.problem("id", f"'{store_id}' must be 1 to 64 of A-Z a-z 0-9 . _ -")
            store_id = ""
    platform = table.string("platform")
    common = StoreSettings(
        id=store_id,
        platform=platform,
        url=table.url("url"),
        active=table.boolean("active", default["active"]),
        deletions=table.boolean("deletions", default["deletions"]),
        concurrency=table.integer("concurrency", default["concurrency"], minimum=1, maximum=64),
        poll_interval=table.duration("poll_interval", default["poll_interval"], positive=True),
        reconcile_interval=table.duration(
            "reconcile_interval", default["reconcile_interval"], positive=True
        ),
        spool_dir=table.path("spool_dir", None),
        images_max_per_product=table.integer(
            "images_max_per_product", default["images_max_per_product"], minimum=0
        ),
        image_checks=table.boolean("image_checks", default["image_checks"]),
        requests_per_second=table.number(
            "requests_per_second", default["requests_per_second"], minimum=0.0, maximum=10_000.0
        ),
    )
    if not platform:
        return common  # already reported; as for an unknown platform, other keys go unjudged
    spec = PLATFORMS.get(platform)
    if spec is not None:
        secrets, options = _builtin_platform_keys(table, spec, store_id)
    elif platform in _plugin_platforms():
        secrets, options = _plugin_platform_keys(table)
    else:
        known = sorted({*PLATFORMS, *_plugin_platforms()})
        table.problem(
            "platform",
            f"unknown platform '{platform}' (known: {', '.join(known)}){_suggest(platform, known)}",
        )
        # Its other keys cannot be judged without knowing the platform, so none is called unknown.
        return common
    return dataclasses.replace(common, secrets=FrozenMap(secrets), options=FrozenMap(options))


def _builtin_platform_keys(
    table: _Table, spec: PlatformSpec, store_id: str
) -> tuple[dict[str, Secret], dict[str, Any]]:
    secrets: dict[str, Secret] = {}
    for key in (*spec.secrets, *spec.optional_secrets):
        # systemd credential names cannot hold the store's table, so the store id prefixes them.
        implicit = f"{store_id}-{key.replace('_', '-')}" if store_id else None
        value = table.secret(key, required=key in spec.secrets, implicit_name=implicit)
        if value is not None:
            secrets[key] = value
    options: dict[str, Any] = {}
    for key, option in spec.options.items():
        value = table.option(key, option)
        if value is not None:
            options[key] = value
    allowed = [*_STORE_KEYS, *spec.options]
    for key in (*spec.secrets, *spec.optional_secrets):
        allowed += [key, f"{key}_file"]
    table.finish(allowed)
    return secrets, options


def _plugin_platform_keys(table: _Table) -> tuple[dict[str, Secret], dict[str, Any]]:
    """A third-party platform's keys: secrets by name, everything else passed on unvalidated."""
    secrets: dict[str, Secret] = {}
    options: dict[str, Any] = {}
    for given in list(table.data):
        if given in _STORE_KEYS or given in table.seen:
            continue
        stem = given.removesuffix("_file")
        key = stem if given.endswith("_file") and is_secret_key(stem) else given
        if is_secret_key(key):
            value = table.secret(key, required=False, implicit_name=None)
            if value is not None:
                secrets[key] = value
        else:
            options[key] = _freeze(table.raw(key))
    # No `finish`: every key is accepted, the plugin validates its own options.
    return secrets, options


def _plugin_platforms() -> frozenset[str]:
    """Names of platforms that installed packages register as entry points."""
    return frozenset(ep.name for ep in entry_points(group=PLATFORM_ENTRY_POINT_GROUP))


def _freeze(value: Any) -> Any:
    """Read-only copy of a plugin option (settings are frozen all the way down)."""
    if isinstance(value, dict):
        return FrozenMap({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _defaults(cls: type[Any]) -> dict[str, Any]:
    # Slotted dataclasses keep field defaults in `fields()`, not as class attributes.
    return {
        f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
    }


def _suggest(word: str, candidates: Iterable[str]) -> str:
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


def _type_name(value: Any) -> str:
    # TOML's names for its types, which is what the operator wrote.
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


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Table:
    """Reads one TOML table, recording problems instead of raising.

    Each getter marks its key as seen, checks it, and returns a usable value even when the key is
    wrong (its default or an empty placeholder): the loader keeps going to find the next problem,
    and raises before any placeholder could be used.
    """

    def __init__(
        self, label: str, data: dict[str, Any], context: _Context, *, quiet: bool = False
    ) -> None:
        self.label = label
        self.data = data
        self.context = context
        self.quiet = quiet  # the table itself is missing or broken: do not list its missing keys
        self.seen: set[str] = set()

    def problem(self, key: str, message: str) -> None:
        self.context.problems.append(f"{self.label} {key}: {message}")

    def missing(self, key: str, hint: str = "") -> None:
        if not self.quiet:
            self.context.problems.append(f"{self.label} missing required key '{key}'{hint}")

    def finish(self, allowed: Iterable[str]) -> None:
        """Report every key no getter asked for, with the closest allowed key."""
        allowed = list(allowed)
        for key in self.data:
            if key not in allowed and key not in self.seen:
                self.context.problems.append(
                    f"{self.label} unknown key '{key}'{_suggest(key, allowed)}"
                )

    def raw(self, key: str) -> Any:
        """The value with `${VAR}` expanded in every string inside it (None when absent)."""
        self.seen.add(key)
        return self._expand_all(key, self.data.get(key))

    def _expand_all(self, where: str, value: Any) -> Any:
        if isinstance(value, str):
            return self._expand(where, value, secret=False)
        if isinstance(value, list):
            return [self._expand_all(f"{where}[{i}]", v) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self._expand_all(f"{where}.{k}", v) for k, v in value.items()}
        return value

    def _typed(self, key: str, kinds: type | tuple[type, ...], expected: str) -> Any:
        """The raw value if present and of the right TOML type, else None (problem recorded)."""
        self.seen.add(key)
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) != (kinds is bool) or not isinstance(value, kinds):
            self.problem(key, f"expected {expected}, got {_type_name(value)}")
            return None
        return value

    def _default(self, key: str, default: T | _Missing, placeholder: T) -> T:
        if isinstance(default, _Missing):
            self.missing(key)
            return placeholder
        return default

    def string(self, key: str, default: str | _Missing = _REQUIRED) -> str:
        value = self._typed(key, str, "a string")
        if value is None:
            return self._default(key, default, "") if key not in self.data else ""
        expanded = self._expand(key, value, secret=False)
        if expanded is None:
            return ""
        if not expanded and isinstance(default, _Missing):
            self.problem(key, "must not be empty")
        return expanded

    def integer(
        self, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self._typed(key, int, "an integer")
        if value is None:
            return default
        return self._bounded(key, value, minimum, maximum, default)

    def _bounded(
        self, key: str, value: int, minimum: int | None, maximum: int | None, default: int
    ) -> int:
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            if maximum is None:
                self.problem(key, f"must be at least {minimum}, got {value}")
            elif minimum is None:
                self.problem(key, f"must be at most {maximum}, got {value}")
            else:
                self.problem(key, f"must be from {minimum} to {maximum}, got {value}")
            return default
        return int(value)

    def number(self, key: str, default: float, *, minimum: float, maximum: float) -> float:
        value = self._typed(key, (int, float), "a number")
        if value is None:
            return default
        if not math.isfinite(value) or not minimum <= value <= maximum:
            self.problem(key, f"must be from {minimum:g} to {maximum:g}, got {value}")
            return default
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._typed(key, bool, "a boolean (true or false)")
        return default if value is None else bool(value)

    def duration(self, key: str, default: float, *, positive: bool = False) -> float:
        value = self._typed(key, (str, int, float), 'a duration such as "30s" or a number')
        if value is None:
            return default
        if isinstance(value, str):
            value = self._expand(key, value, secret=False)
            if value is None:
                return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.problem(key, str(exc))
            return default
        if positive and seconds <= 0:
            self.problem(key, "must be more than zero")
            return default
        return seconds

    def path(self, key: str, default: Path | _Missing | None = _REQUIRED) -> Path | None:
        if key not in self.data:
            self.seen.add(key)
            return self._default(key, default, None)
        text = self.string(key)  # present, so it must be a non-empty string
        if not text:
            return None
        # Relative to the config file, not to the working directory (which is / under systemd).
        return self.context.config_dir / text

    def listen(self, key: str, default: Listen) -> Listen:
        if key not in self.data:
            self.seen.add(key)
            return default
        text = self.string(key)
        if not text:
            return default
        try:
            return Listen.parse(text)
        except ValueError as exc:
            self.problem(key, f"'{text}': {exc}")
            return default

    def url(self, key: str, *, https_unless_loopback: bool = False) -> str:
        text = self.string(key)
        if not text:
            return ""
        try:
            parts = urlsplit(text)
            host = parts.hostname or ""
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            self.problem(key, f"'{text}' is not a valid URL")
            return text
        if parts.username is not None or parts.password is not None:
            # Never quote it: the part before @ is a credential.
            self.problem(key, "must not contain user:password@ (use the token keys)")
            return ""
        if parts.scheme not in ("http", "https") or not host:
            self.problem(key, f"expected an http:// or https:// URL, got '{text}'")
            return text
        if parts.query or parts.fragment:
            self.problem(key, f"'{text}' must not have a ?query or #fragment")
        if https_unless_loopback and parts.scheme == "http" and not _is_loopback(host):
            # The token and the whole catalog (or signed webhook deliveries) travel in these
            # requests (design.md section 6).
            message = f"must use https:// (plain http:// only to loopback), got '{text}'"
            if _PLAIN_TABLE.fullmatch(self.label):  # `[hub]`: say hub.url, as TOML dotted keys
                self.context.problems.append(f"{self.label[1:-1]}.{key} {message}")
            else:
                self.problem(key, message)
        return text.rstrip("/")

    def option(self, key: str, spec: OptionSpec) -> Any:
        """A built-in platform option, checked against its spec; its default when absent."""
        if key not in self.data:
            self.seen.add(key)
            if spec.required:
                self.missing(key)
            return spec.default
        if spec.kind == "path":
            return self.path(key)
        if spec.kind == "boolean":
            return self.boolean(key, spec.default)
        if spec.kind == "integer":
            return self.integer(key, spec.default, minimum=spec.minimum, maximum=spec.maximum)
        if spec.kind == "url":
            return self.url(key, https_unless_loopback=True) or spec.default
        value = self.string(key, spec.default)
        if spec.pattern and not re.fullmatch(spec.pattern, value):
            self.problem(key, f"'{value}' is not valid ({spec.hint})")
            return spec.default
        return value

    def secret(
        self, key: str, *, required: bool = True, implicit_name: str | None
    ) -> Secret | None:
        """A credential from `key`, `<key>_file`, or `$CREDENTIALS_DIRECTORY/<implicit_name>`.

        No message here may contain the value: only key names, paths and types.
        """
        file_key = f"{key}_file"
        self.seen.update((key, file_key))
        inline, from_file = key in self.data, file_key in self.data
        if inline and from_file:
            self.problem(key, f"give either {key} or {file_key}, not both")
            return None
        if not self.context.secrets:
            return self._placeholder(key, file_key, inline, from_file, required=required)
        if inline:
            value = self.data[key]
            if not isinstance(value, str):
                self.problem(key, f"expected a string, got {_type_name(value)}")
                return None
            text = self._expand(key, value, secret=True)
            if text is None:
                return None
            if not text:
                self.problem(key, "is empty")
                return None
            return Secret(text)
        if from_file:
            name = self.data[file_key]
            if not isinstance(name, str):
                self.problem(file_key, f"expected a string, got {_type_name(name)}")
                return None
            name = self._expand(file_key, name, secret=False)
            if name is None:
                return None
            if not name:
                self.problem(file_key, "must not be empty")
                return None
            # Relative credential names mean systemd's credentials when it provides them.
            base = self.context.credentials_dir or self.context.config_dir
            return self._read_secret(file_key, base / name)
        credentials = self.context.credentials_dir
        if implicit_name and credentials is not None:
            candidate = credentials / implicit_name
            if candidate.exists():
                return self._read_secret(key, candidate)
        if required:
            tried = f", or {file_key}"
            if implicit_name:
                tried += f", or a credential '{implicit_name}' in $CREDENTIALS_DIRECTORY"
            self.missing(key, f" (give {key}{tried})")
        return None

    def _placeholder(
        self, key: str, file_key: str, inline: bool, from_file: bool, *, required: bool
    ) -> Secret | None:
        """Without secrets: check only the TOML type; an empty `Secret` stands in for the value.

        A required secret always gets one (it is needed only by what talks to a store or the
        hub); an optional one only when the file gives it, so `"webhook_secret" in secrets`
        still says whether the store verifies webhooks.
        """
        given = key if inline else file_key
        if (inline or from_file) and not isinstance(self.data[given], str):
            self.problem(given, f"expected a string, got {_type_name(self.data[given])}")
            return None
        return _PLACEHOLDER if inline or from_file or required else None

    def _read_secret(self, key: str, path: Path) -> Secret | None:
        try:
            # systemd's credentials are regular files (links followed); a FIFO or device named
            # here must not hang `validate`, and the size is bounded before reading.
            data = read_regular_file(path, max_bytes=_SECRET_FILE_LIMIT, follow_symlinks=True)
        except FileNotFoundError:
            self.problem(key, f"cannot read secret file {path}: No such file or directory")
            return None
        except InputError as exc:
            if str(exc).startswith("larger than"):
                self.problem(
                    key, f"secret file {path} is larger than 64 KiB: is it the right file?"
                )
            else:
                # The system's reason, or the kind of entry: the path is in our message.
                self.problem(key, f"cannot read secret file {path}: {exc}")
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self.problem(key, f"secret file {path} is not valid UTF-8")
            return None
        # `echo token > file` and editors add a final newline that is not part of the secret.
        text = text.rstrip("\r\n")
        if not text:
            self.problem(key, f"secret file {path} is empty")
            return None
        return Secret(text)

    def _expand(self, key: str, text: str, *, secret: bool) -> str | None:
        """Expand `${VAR}`, `${VAR:-default}`, `${VAR:?message}` and `$$` in one value.

        None (with the problem recorded) when a reference cannot be expanded.
        """
        if "$" not in text:
            return text
        env = self.context.env
        out: list[str] = []
        at = 0
        while (dollar := text.find("$", at)) >= 0:
            out.append(text[at:dollar])
            after = text[dollar + 1 : dollar + 2]
            if after == "$":
                out.append("$")
                at = dollar + 2
                continue
            if after != "{":
                # A lone `$` is most likely a `$VAR` that would otherwise silently stay literal.
                self.problem(key, "a '$' must start ${VAR}; write $$ for a literal $")
                return None
            close = text.find("}", dollar + 2)
            if close < 0:
                self.problem(key, "'${' is not closed by '}'")
                return None
            body = text[dollar + 2 : close]
            at = close + 1
            match = _VARIABLE.fullmatch(body)
            if match is None:
                # The body of a secret may be the secret itself, pasted between the braces.
                shown = "" if secret else f" '${{{body}}}'"
                self.problem(
                    key, f"bad reference{shown}: expected ${{NAME}} with NAME [A-Za-z_0-9]"
                )
                return None
            name, operator, argument = match.groups()
            value = env.get(name)
            if operator == ":-":
                out.append(value or argument)
            elif operator == ":?" and not value:
                message = argument or "is not set"
                self.problem(key, f"${{{name}}}: {message}")
                return None
            elif value is None:
                self.problem(key, f"environment variable {name} is not set (used as ${{{name}}})")
                return None
            else:
                out.append(value)
        out.append(text[at:])
        return "".join(out)
