"""`agent.toml` -> `Config`: read the file, check every table, report every problem at once.

`load_config` reads one TOML file (design.md section 7) with the tables `[agent]`, `[hub]`,
`[health]`, `[webhooks]`, `[[stores]]` and `[[exports]]` (`exports.py`) into the frozen settings
of `settings.py`. Why the rules are strict:

- **Every problem at once.** An operator editing a config over SSH should fix it in one round, not
  one error per restart, so the tables are read with `reader.Table`, which records problems, and
  a single `ConfigError` is raised at the end (the CLI prints them and exits 78, sysexits
  `EX_CONFIG`).
- **Unknown keys are errors.** A misspelt optional key (`pol_interval`) would otherwise be ignored
  silently and its default would run in production; each one is reported with its table and the
  closest known key.
- **A store's platform keys are its adapter's.** The keys beyond the common store keys come from
  the spec the platform's adapter declares (`specs.py`), found through its entry point; a
  platform with no adapter installed is an unknown platform, named with the installed ones.
- **Secrets never leak** (`values.Secret`, and the reader never quotes one). They come from
  `${ENV}` references or from files (`<key>_file`, or systemd's `$CREDENTIALS_DIRECTORY` from
  `LoadCredential=`), so the config file itself can be world-readable and kept in version control.
- **Plain `http://` to the hub only on loopback.** The agent token and the whole catalog travel in
  those requests (design.md section 6).
- **Relative paths follow the file, not the working directory**, which under systemd is `/`.
- **A hostile file is a problem, not a hang or a traceback**: a regular file of bounded size and
  nesting, valid UTF-8 and TOML, or one clear `ConfigError`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge_agent.config.exports import FolderDestinationSettings, read_destination, read_exports
from bridge_agent.config.reader import Context, Table, suggest
from bridge_agent.config.schedule import OFF, read_schedule
from bridge_agent.config.settings import (
    LOG_LEVELS,
    AgentSettings,
    Config,
    HealthSettings,
    HubSettings,
    StoreFilters,
    StoreSettings,
    WebhookSettings,
)
from bridge_agent.config.specs import (
    PlatformSpec,
    installed_platforms,
    is_secret_key,
    platform_adapter,
    settings_spec_of,
)
from bridge_agent.config.values import FrozenMap, Secret, type_name
from bridge_agent.errors import ConfigError, InputError
from bridge_agent.inputs import check_depth, read_regular_file
from bridge_agent.model import STATUSES

__all__ = [
    "CONFIG_DEPTH_LIMIT",
    "CONFIG_FILE_LIMIT",
    "DEFAULT_PATHS",
    "default_config_path",
    "load_config",
]

DEFAULT_PATHS: tuple[Path, ...] = (Path("agent.toml"), Path("/etc/bridge-agent/agent.toml"))
CONFIG_FILE_LIMIT = 1024 * 1024  # a few KB for a fleet of stores; a MB is already the wrong file
CONFIG_DEPTH_LIMIT = 16  # [[stores]] options nest a few levels at most

_TABLES = ("agent", "hub", "health", "webhooks", "stores", "exports")
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
    "downstream",
    "apply_mode",
    "alt_shared_attachments",
    "filters",
    "verify_schedule",
    "verify_timezone",
    "backup_before_bulk",
    "backup_threshold",
    "backup_destination",
)
_FILTER_KEYS = tuple(f.name for f in dataclasses.fields(StoreFilters))
# Sales Layer's words for the statuses (rule 10), so an operator following its guide is told
# which canonical status to write.
_STATUS_WORDS = {"visible": "active", "invisible": "archived", "hidden": "archived"}
VERIFY_OFF = OFF
APPLY_MODES: tuple[str, ...] = ("auto", "review")
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


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

    context = Context(
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
        raise ConfigError([context.masked(p) for p in context.problems], source=str(path))
    return config


def _build(document: dict[str, Any], context: Context, source: Path) -> Config:
    problems = context.problems
    for name, value in document.items():
        if name not in _TABLES:
            kind = "table" if isinstance(value, dict | list) else "key"
            problems.append(f"unknown top-level {kind} '{name}'{suggest(name, _TABLES)}")

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

    stores = _backups_under(_stores(document.get("stores"), context), agent.state_dir)
    exports = read_exports(document.get("exports"), context, {s.id for s in stores if s.id})
    return Config(
        agent=agent,
        hub=hub,
        health=health,
        webhooks=webhooks,
        stores=stores,
        source=source,
        exports=exports,
    )


def _backups_under(stores: tuple[StoreSettings, ...], state_dir: Path) -> tuple[StoreSettings, ...]:
    """A store backing up before bulk applies without a `backup_destination` keeps its
    backups in `<state_dir>/backups/<store id>`: turning the backup on needs no other key."""
    return tuple(
        dataclasses.replace(
            store,
            backup_destination=FolderDestinationSettings(state_dir / "backups" / store.id),
        )
        if store.backup_before_bulk and store.backup_destination is None and store.id
        else store
        for store in stores
    )


def _listener_limits(table: Table, default: HealthSettings | WebhookSettings) -> dict[str, Any]:
    """The `_LISTENER_KEYS` of `[health]` or `[webhooks]`: every wait bounded, never zero."""
    return {
        "header_timeout": table.duration("header_timeout", default.header_timeout, positive=True),
        "body_timeout": table.duration("body_timeout", default.body_timeout, positive=True),
        "idle_timeout": table.duration("idle_timeout", default.idle_timeout, positive=True),
        "max_connections": table.integer("max_connections", default.max_connections, minimum=1),
    }


def _table(document: dict[str, Any], name: str, context: Context, *, required: bool) -> Table:
    data = document.get(name)
    if data is None:
        if required:
            context.problems.append(f"missing required table [{name}]")
        # A missing table reads as an empty one: its defaults apply and missing keys are not
        # reported again on top of the missing table.
        return Table(f"[{name}]", {}, context, quiet=required)
    if not isinstance(data, dict):
        context.problems.append(f"[{name}]: expected a table, got {type_name(data)}")
        return Table(f"[{name}]", {}, context, quiet=True)
    return Table(f"[{name}]", data, context)


def _agent(table: Table) -> AgentSettings:
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


def _hub(table: Table) -> HubSettings:
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


def _stores(data: Any, context: Context) -> tuple[StoreSettings, ...]:
    if data is None:
        context.problems.append("no [[stores]] configured: add at least one")
        return ()
    if not isinstance(data, list):
        context.problems.append(
            f"stores: expected an array of tables ([[stores]]), got {type_name(data)}"
        )
        return ()
    stores: list[StoreSettings] = []
    first_seen: dict[str, int] = {}
    for number, entry in enumerate(data, start=1):
        label = f"[[stores]] #{number}"
        if not isinstance(entry, dict):
            context.problems.append(f"{label}: expected a table, got {type_name(entry)}")
            continue
        store = _store(Table(label, entry, context))
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


def _store(table: Table) -> StoreSettings:
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
        downstream=table.boolean("downstream", default["downstream"]),
        apply_mode=_apply_mode(table, default["apply_mode"]),
        alt_shared_attachments=table.boolean(
            "alt_shared_attachments", default["alt_shared_attachments"]
        ),
        filters=_filters(table),
    )
    schedule, timezone = _verify_schedule(
        table, default["verify_schedule"], default["verify_timezone"]
    )
    common = dataclasses.replace(
        common,
        verify_schedule=schedule,
        verify_timezone=timezone,
        backup_before_bulk=table.boolean("backup_before_bulk", default["backup_before_bulk"]),
        backup_threshold=table.integer("backup_threshold", default["backup_threshold"], minimum=1),
        backup_destination=read_destination(
            table,
            "backup_destination",
            implicit_prefix=f"{store_id}-backup" if store_id else None,
            required=False,
        ),
    )
    if not platform:
        return common  # already reported; as for an unknown platform, other keys go unjudged
    try:
        adapter = platform_adapter(platform)
        spec = None if adapter is None else settings_spec_of(adapter)
    except Exception as exc:  # a broken plugin: one problem of this store, not a traceback
        table.problem(
            "platform",
            f"the adapter of '{platform}' cannot be loaded ({type(exc).__name__}: {exc})",
        )
        return common
    if adapter is None:
        installed = installed_platforms()
        table.problem(
            "platform",
            f"unknown platform '{platform}' (installed: {', '.join(installed) or 'none'})"
            f"{suggest(platform, installed)}",
        )
        # Its other keys cannot be judged without knowing the platform, so none is called unknown.
        return common
    if spec is not None:
        secrets, options = _declared_platform_keys(table, spec, store_id)
    else:
        secrets, options = _plugin_platform_keys(table)
    return dataclasses.replace(common, secrets=FrozenMap(secrets), options=FrozenMap(options))


def _apply_mode(table: Table, default: str) -> str:
    mode = table.string("apply_mode", default)
    if mode not in APPLY_MODES:
        table.problem("apply_mode", f"must be one of {', '.join(APPLY_MODES)}, got '{mode}'")
        return default
    return mode


def _filters(table: Table) -> StoreFilters:
    """`[stores.filters]` of one store: which products sync (Sales Layer rules 10-12)."""
    table.seen.add("filters")
    data = table.data.get("filters")
    if data is None:
        return StoreFilters()
    if not isinstance(data, dict):
        table.problem("filters", f"expected a table ([stores.filters]), got {type_name(data)}")
        return StoreFilters()
    sub = Table(f"{table.label} [stores.filters]", data, table.context)
    statuses = sub.string_list("status")
    for status in statuses:
        if status not in STATUSES:
            word = _STATUS_WORDS.get(status.lower())
            hint = f" (Sales Layer's {status} is {word})" if word else suggest(status, STATUSES)
            sub.problem("status", f"'{status}' is not one of {', '.join(STATUSES)}{hint}")
    test_tag: str | None = sub.string("test_tag", "")
    if "test_tag" in data and isinstance(data["test_tag"], str) and not test_tag:
        sub.problem("test_tag", "must not be empty (leave it out to sync every product)")
    filters = StoreFilters(
        status=tuple(s for s in statuses if s in STATUSES),
        categories=sub.string_list("categories"),
        tags=sub.string_list("tags"),
        exclude_tags=sub.string_list("exclude_tags"),
        only_visible=sub.boolean("only_visible", False),
        test_tag=test_tag or None,
    )
    # Filters that admit nothing are a mistake, not a way to pause a store (`active = false`).
    if filters.only_visible and filters.status and "active" not in filters.status:
        sub.problem("only_visible", "admits only active products, and status does not list active")
    excluded = {t.casefold() for t in filters.exclude_tags}
    if filters.test_tag is not None and filters.test_tag.casefold() in excluded:
        sub.problem("test_tag", f"'{filters.test_tag}' is also in exclude_tags")
    sub.finish(_FILTER_KEYS)
    return filters


def _verify_schedule(table: Table, schedule: str, timezone: str) -> tuple[str, str]:
    """`verify_schedule` (five-field crontab, or "off") read in `verify_timezone` (IANA)."""
    return read_schedule(table, "verify_schedule", "verify_timezone", schedule, timezone)


def _declared_platform_keys(
    table: Table, spec: PlatformSpec, store_id: str
) -> tuple[dict[str, Secret], dict[str, Any]]:
    """The keys of a platform whose adapter declares its spec: exactly those, checked."""
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


def _plugin_platform_keys(table: Table) -> tuple[dict[str, Secret], dict[str, Any]]:
    """The keys of a platform whose adapter declares no spec (the plugin rules): secrets by name,
    everything else passed on unvalidated."""
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
