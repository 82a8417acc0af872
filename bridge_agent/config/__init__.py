"""The agent's configuration: `agent.toml` -> frozen settings, every problem reported at once.

The package has four rooms, each with one job:

- `values.py`: the value types settings are made of (`Secret`, `Listen`, `FrozenMap`) and the
  pure rules for one value (`parse_duration`, the URL rule, `redact`).
- `settings.py`: the frozen dataclasses the agent runs with (`Config`, `AgentSettings`,
  `HubSettings`, `HealthSettings`, `WebhookSettings`, `StoreSettings` and its `StoreFilters`).
- `specs.py`: the settings spec an adapter declares (`PlatformSpec`, `OptionSpec`) and finding
  it through the `bridge_agent.platforms` entry point: config knows no platform by name.
- `exports.py`: `[[exports]]` (`ExportSettings`) and export destinations (folder, SFTP, S3),
  also a store's `backup_destination`; `schedule.py`: the crontab-in-a-time-zone rule they share
  with `verify_schedule`.
- `reader.py` and `loader.py`: reading the file table by table (`${VAR}` expansion, secrets from
  files) into settings, collecting every problem into one `ConfigError` (exit 78).

Import from here: the names below are the package's interface, whichever room holds them.
"""

from bridge_agent.config.exports import (
    DestinationSettings,
    ExportSettings,
    FolderDestinationSettings,
    S3DestinationSettings,
    SftpDestinationSettings,
)
from bridge_agent.config.loader import (
    CONFIG_DEPTH_LIMIT,
    CONFIG_FILE_LIMIT,
    DEFAULT_PATHS,
    default_config_path,
    load_config,
)
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
    PLATFORM_ENTRY_POINT_GROUP,
    SECRET_KEYS,
    SECRET_SUFFIXES,
    OptionKind,
    OptionSpec,
    PlatformSpec,
    installed_platforms,
    is_secret_key,
    platform_adapter,
    settings_spec_of,
)
from bridge_agent.config.values import (
    MASK,
    MAX_DURATION,
    FrozenMap,
    Listen,
    Secret,
    bounded_integer,
    parse_duration,
    redact,
    url_problems,
)

__all__ = [
    "CONFIG_DEPTH_LIMIT",
    "CONFIG_FILE_LIMIT",
    "DEFAULT_PATHS",
    "LOG_LEVELS",
    "MASK",
    "MAX_DURATION",
    "PLATFORM_ENTRY_POINT_GROUP",
    "SECRET_KEYS",
    "SECRET_SUFFIXES",
    "AgentSettings",
    "Config",
    "DestinationSettings",
    "ExportSettings",
    "FolderDestinationSettings",
    "FrozenMap",
    "HealthSettings",
    "HubSettings",
    "Listen",
    "OptionKind",
    "OptionSpec",
    "PlatformSpec",
    "S3DestinationSettings",
    "Secret",
    "SftpDestinationSettings",
    "StoreFilters",
    "StoreSettings",
    "WebhookSettings",
    "bounded_integer",
    "default_config_path",
    "installed_platforms",
    "is_secret_key",
    "load_config",
    "parse_duration",
    "platform_adapter",
    "redact",
    "settings_spec_of",
    "url_problems",
]
