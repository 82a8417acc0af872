"""The frozen settings the agent runs with: one dataclass per table of `agent.toml`.

The rest of the agent reads settings only from these objects, never from the file or the
environment, so what the loader validated is what runs. They are frozen and slotted (a reload
builds a new `Config`), and their defaults are the documented ones (docs/configuration.md): the
loader takes them from here rather than repeating them. Built by hand they are not checked (tests
and the demo build them); an adapter checks the `StoreSettings` it is given
(`PlatformSpec.problems`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge_agent.config.exports import DestinationSettings, ExportSettings
from bridge_agent.config.values import FrozenMap, Listen, Secret

__all__ = [
    "LOG_LEVELS",
    "AgentSettings",
    "Config",
    "HealthSettings",
    "HubSettings",
    "StoreFilters",
    "StoreSettings",
    "WebhookSettings",
]

LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "critical")


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

    listen: Listen = Listen("127.0.0.1", 8686)  # noqa: RUF009 - a frozen value
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

    listen: Listen = Listen("127.0.0.1", 8687)  # noqa: RUF009 - a frozen value
    max_body_bytes: int = 2_097_152
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 75.0
    max_connections: int = 256


_FILTER_KEYS = ("status", "categories", "tags", "exclude_tags", "only_visible", "test_tag")


@dataclass(frozen=True, slots=True)
class StoreFilters:
    """`[stores.filters]`: which of the store's products the agent syncs (Sales Layer rules 10-12).

    The default admits every product. Every key that is set narrows the scope further (they
    combine with AND); inside one list any entry matches (OR). Names compare case-insensitively.
    The rule itself is `sync.scope.Scope`; this is only what the operator wrote, kept as written
    so `status` and a run's frozen configuration show it back unchanged.

    - `status`: canonical statuses (`active`, `draft`, `archived`); empty: any.
    - `categories`: a product matches when one of its categories matches by id, name or path
      (`"Clothing/Tops"`; a path also matches its subcategories).
    - `tags`: a product matches when it has one of these tags; `exclude_tags`: when it has none.
    - `only_visible`: only products whose canonical status is `active`.
    - `test_tag`: test mode. When set, ONLY products carrying this tag sync: the way to try the
      agent on a handful of products before the whole catalog.
    """

    status: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    exclude_tags: tuple[str, ...] = ()
    only_visible: bool = False
    test_tag: str | None = None

    @property
    def admits_everything(self) -> bool:
        """No key set: the scope is the whole catalog."""
        return self == StoreFilters()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (lists for tuples), as `redact` gives it: a run freezes this."""
        return {
            "status": list(self.status),
            "categories": list(self.categories),
            "tags": list(self.tags),
            "exclude_tags": list(self.exclude_tags),
            "only_visible": self.only_visible,
            "test_tag": self.test_tag,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StoreFilters:
        """The filters `to_dict` gave (a run thawing its frozen configuration); absent keys take
        their defaults. ValueError on an unknown key or a value of the wrong type: a frozen
        configuration is the agent's own data, so that is a bug or a damaged state, not a
        config problem to report."""
        wrong = [f"unknown key {k!r}" for k in sorted(set(data) - set(_FILTER_KEYS))]
        lists: dict[str, tuple[str, ...]] = {}
        for key in ("status", "categories", "tags", "exclude_tags"):
            value = data.get(key, ())
            if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
                lists[key] = tuple(value)
            else:
                wrong.append(f"{key} is not a list of strings")
        only_visible = data.get("only_visible", False)
        if not isinstance(only_visible, bool):
            wrong.append("only_visible is not a boolean")
        test_tag = data.get("test_tag")
        if test_tag is not None and not isinstance(test_tag, str):
            wrong.append("test_tag is not a string or null")
        if wrong:
            raise ValueError(f"not the filters of a store: {'; '.join(wrong)}")
        return cls(**lists, only_visible=only_visible, test_tag=test_tag)


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """One `[[stores]]` entry. Durations are in seconds.

    `secrets` holds the credentials present (required ones always, optional ones such as
    `webhook_secret` only when given); `options` holds the platform's other keys with their defaults
    filled in (from the spec its adapter declares, `PlatformSpec`), read-only.
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
    downstream: bool = True  # apply the hub's optimisations (when the adapter can write)
    apply_mode: str = "auto"  # "auto": apply as they come; "review": wait for `approvals`
    alt_shared_attachments: bool = False  # write an image ALT other products' images share
    filters: StoreFilters = field(default_factory=StoreFilters)  # which products sync
    verify_schedule: str = "0 3 * * *"  # crontab of the verification sweep; "off": none
    verify_timezone: str = "UTC"  # IANA name the schedule is read in
    # Before applying more than `backup_threshold` optimisations at once, export the affected
    # products to `backup_destination` (the loader fills in `<state_dir>/backups/<id>`).
    backup_before_bulk: bool = False
    backup_threshold: int = 50
    backup_destination: DestinationSettings | None = None
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
    exports: tuple[ExportSettings, ...] = ()  # `[[exports]]`: scheduled exports

    def store(self, id: str) -> StoreSettings:
        """The store with this id; KeyError names the configured ids otherwise."""
        for store in self.stores:
            if store.id == id:
                return store
        known = ", ".join(s.id for s in self.stores) or "none"
        raise KeyError(f"no store with id '{id}' in {self.source} (configured: {known})")
