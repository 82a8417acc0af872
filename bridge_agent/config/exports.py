"""`[[exports]]` and export destinations: scheduled exports of a store's catalog (issue 17).

An `[[exports]]` table names one scheduled export: which store, which format, fields and
filters, when (a crontab read in a time zone, as `verify_schedule`), where to
(`destination`, a sub-table of `type = "folder" | "sftp" | "s3"`), how many to keep there
(`keep`), and whether only what changed since the previous run goes (`incremental`). The same
destination table is a store's `backup_destination` (the export written before a bulk apply).

Why the rules:

- **Every problem at once**, through `reader.Table` like every other table: an operator fixes
  the whole file in one round.
- **Credentials are secrets like every other** (`Table.secret`): the SFTP private key and its
  passphrase, the S3 access key pair come from `${ENV}`, `<key>_file` or systemd's
  `$CREDENTIALS_DIRECTORY` (implicit name `export-<name>-<key with ->` for an export,
  `<store id>-backup-<key with ->` for a store's backup), and are `Secret`s: never in a repr,
  a message or `status`.
- **Host keys are always checked.** An SFTP destination requires `known_hosts`; there is no key
  to turn the check off, because a destination that accepts any host hands the catalog (and the
  login) to whoever answers.
- **TLS is always verified**, and a plain `http://` S3 endpoint is accepted only on loopback, as
  for `[hub] url`.
- The lists of formats and filter keys are repeated here from `export.request` because config
  sits below export in the layers; tests/test_export_config.py checks that both agree.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bridge_agent.config.reader import Context, Table, suggest
from bridge_agent.config.schedule import read_schedule
from bridge_agent.config.values import FrozenMap, Secret, type_name
from bridge_agent.model import AVAILABILITIES, STATUSES

__all__ = [
    "DESTINATION_TYPES",
    "EXPORT_FILTER_KEYS",
    "EXPORT_FORMATS",
    "DestinationSettings",
    "ExportSettings",
    "FolderDestinationSettings",
    "S3DestinationSettings",
    "SftpDestinationSettings",
    "read_destination",
    "read_exports",
]

EXPORT_FORMATS: tuple[str, ...] = (
    "csv",
    "json",
    "jsonl",
    "xml",
    "xlsx",
    "shopify-csv",
    "woocommerce-csv",
)
BOM_FORMATS: tuple[str, ...] = ("csv", "shopify-csv", "woocommerce-csv")
EXPORT_FILTER_KEYS: tuple[str, ...] = ("category", "status", "availability", "tag", "brand")
DESTINATION_TYPES: tuple[str, ...] = ("folder", "sftp", "s3")

MIB = 1024 * 1024
S3_MIN_PART = 5 * MIB  # S3's own floor for every part but the last
S3_MAX_PART = 5 * 1024 * MIB
DEFAULT_ATTEMPTS = 4
MAX_ATTEMPTS = 20

# An export's name starts its files' names, so it follows the destinations' rule for a plain
# file name (destinations/base.py `check_name`): a letter or digit first, no "..".
_ID = re.compile(r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+")
_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]{0,63}")
# S3 bucket naming rules (the S3-compatible stores follow them too): 3 to 63 of a-z 0-9 . -
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_REGION = re.compile(r"[a-z0-9-]{1,32}")
_COMMON_KEYS = ("type", "attempts")


@dataclass(frozen=True, slots=True)
class FolderDestinationSettings:
    """A local folder (a mounted share counts): exports are renamed into it whole."""

    path: Path
    attempts: int = DEFAULT_ATTEMPTS  # tries per delivery, transient failures only
    type: Literal["folder"] = "folder"


@dataclass(frozen=True, slots=True)
class SftpDestinationSettings:
    """An SFTP server: key authentication, host key checked against `known_hosts`."""

    host: str
    user: str
    private_key: Secret  # the key itself (OpenSSH or PEM), read like any secret
    known_hosts: Path
    port: int = 22
    path: str = "."  # remote folder, relative to the login folder unless absolute
    passphrase: Secret | None = None
    timeout: float = 30.0  # connecting and each SFTP request
    attempts: int = DEFAULT_ATTEMPTS
    type: Literal["sftp"] = "sftp"


@dataclass(frozen=True, slots=True)
class S3DestinationSettings:
    """An S3 bucket, or any S3-compatible storage at `endpoint_url`; TLS always verified."""

    bucket: str
    prefix: str = ""  # key prefix ("exports/"): a trailing "/" is added when missing
    region: str = ""  # "": boto3's default
    endpoint_url: str = ""  # "": AWS itself
    access_key_id: Secret | None = None  # both or neither; neither: boto3's own chain
    secret_access_key: Secret | None = None
    part_size: int = 8 * MIB  # a file larger than one part goes as a multipart upload
    timeout: float = 60.0
    attempts: int = DEFAULT_ATTEMPTS
    type: Literal["s3"] = "s3"


DestinationSettings = FolderDestinationSettings | SftpDestinationSettings | S3DestinationSettings


def _no_filters() -> Mapping[str, tuple[str, ...]]:
    return FrozenMap()


@dataclass(frozen=True, slots=True)
class ExportSettings:
    """One `[[exports]]` table.

    `filters` maps a filter key (`EXPORT_FILTER_KEYS`) to the accepted values (any matches; all
    keys must match), as `export.ExportRequest.filters`. `schedule` is a crontab read in
    `timezone`, or "off" (configured, validated, never fired). `keep`: how many exports of this
    name the destination keeps, the newest; older ones are deleted after a successful delivery.
    """

    name: str
    store: str
    format: str
    destination: DestinationSettings
    schedule: str
    timezone: str = "UTC"
    fields: tuple[str, ...] = ()
    filters: Mapping[str, tuple[str, ...]] = field(default_factory=_no_filters)
    keep: int = 7
    incremental: bool = False  # `--since last`: only products changed since this export's last run
    bom: bool = False  # a UTF-8 BOM for Excel (csv formats only)


_EXPORT_KEYS = (
    "name",
    "store",
    "format",
    "fields",
    "filters",
    "schedule",
    "timezone",
    "destination",
    "keep",
    "incremental",
    "bom",
)


def read_exports(data: Any, context: Context, store_ids: set[str]) -> tuple[ExportSettings, ...]:
    """Every `[[exports]]` table of the document (`data` is `document.get("exports")`).

    `store_ids` are the stores configured, which an export's `store` must name (not checked
    when there are none: that is already a problem of its own).
    """
    if data is None:
        return ()
    if not isinstance(data, list):
        context.problems.append(
            f"exports: expected an array of tables ([[exports]]), got {type_name(data)}"
        )
        return ()
    exports: list[ExportSettings] = []
    first_seen: dict[str, int] = {}
    for number, entry in enumerate(data, start=1):
        label = f"[[exports]] #{number}"
        if not isinstance(entry, dict):
            context.problems.append(f"{label}: expected a table, got {type_name(entry)}")
            continue
        export = _export(Table(label, entry, context), store_ids)
        if export is None:
            continue
        if export.name in first_seen:
            context.problems.append(
                f"duplicate export name '{export.name}' in [[exports]] #{first_seen[export.name]}"
                f" and #{number}: export names must be unique"
            )
        else:
            first_seen[export.name] = number
        exports.append(export)
    return tuple(exports)


def _export(table: Table, store_ids: set[str]) -> ExportSettings | None:
    name = table.string("name")
    if name:
        if _ID.fullmatch(name):
            table.label = f"{table.label} (name '{name}')"
        else:
            table.problem(
                "name",
                f"'{name}' must be 1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or"
                " a digit, without '..' (it starts the export's file names)",
            )
            name = ""
    store = table.string("store")
    if store and store_ids and store not in store_ids:
        known = sorted(store_ids)
        table.problem(
            "store",
            f"no store with id '{store}' (configured: {', '.join(known)}){suggest(store, known)}",
        )
    export_format = table.string("format")
    if export_format and export_format not in EXPORT_FORMATS:
        table.problem(
            "format",
            f"'{export_format}' is not one of {', '.join(EXPORT_FORMATS)}"
            f"{suggest(export_format, EXPORT_FORMATS)}",
        )
    if "schedule" not in table.data:
        table.missing("schedule", ' (a crontab such as "0 2 * * *", or "off")')
    schedule, timezone = read_schedule(table, "schedule", "timezone", "off", "UTC")
    bom = table.boolean("bom", False)
    if bom and export_format in EXPORT_FORMATS and export_format not in BOM_FORMATS:
        table.problem("bom", f"applies only to {', '.join(BOM_FORMATS)}, not {export_format}")
    implicit = f"export-{name}" if name else None
    destination = read_destination(table, "destination", implicit_prefix=implicit, required=True)
    settings = ExportSettings(
        name=name,
        store=store,
        format=export_format,
        destination=destination or FolderDestinationSettings(Path()),
        schedule=schedule,
        timezone=timezone,
        fields=table.string_list("fields"),
        filters=_filters(table),
        keep=table.integer("keep", 7, minimum=1, maximum=10_000),
        incremental=table.boolean("incremental", False),
        bom=bom,
    )
    table.finish(_EXPORT_KEYS)
    return settings if name else None


def _filters(table: Table) -> Mapping[str, tuple[str, ...]]:
    """`filters = { category = "Hoodies", status = ["active", "draft"] }`: a string or an array
    of strings per key, as `--filter category=Hoodies,status=active|draft` on the command line."""
    value = table.raw("filters")
    if value is None:
        return FrozenMap()
    if not isinstance(value, dict):
        table.problem("filters", f"expected a table, got {type_name(value)}")
        return FrozenMap()
    out: dict[str, tuple[str, ...]] = {}
    for key, given in value.items():
        where = f"filters.{key}"
        if key not in EXPORT_FILTER_KEYS:
            table.problem(
                "filters",
                f"unknown filter '{key}' (one of {', '.join(EXPORT_FILTER_KEYS)})"
                f"{suggest(key, EXPORT_FILTER_KEYS)}",
            )
            continue
        items = [given] if isinstance(given, str) else given
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            table.problem(where, f"expected a string or an array of strings, got {_kind(given)}")
            continue
        accepted = tuple(v.strip() for v in items if v.strip())
        if not accepted:
            table.problem(where, "must not be empty (leave the key out to accept every value)")
            continue
        allowed = {"status": STATUSES, "availability": AVAILABILITIES}.get(key)
        bad = [v for v in accepted if allowed is not None and v not in allowed]
        if allowed is not None and bad:
            table.problem(where, f"'{bad[0]}' is not one of {', '.join(allowed)}")
            continue
        out[key] = accepted
    return FrozenMap(out)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array with a " + next(
            (type_name(v) for v in value if not isinstance(v, str)), "string"
        )
    return type_name(value)


# ---------------------------------------------------------------------------------------------
# Destinations
# ---------------------------------------------------------------------------------------------


def read_destination(
    table: Table, key: str, *, implicit_prefix: str | None, required: bool
) -> DestinationSettings | None:
    """The destination sub-table `key` of `table`; None when absent (a problem if `required`)
    or wrong. `implicit_prefix` names its secrets in `$CREDENTIALS_DIRECTORY`
    (`<prefix>-private-key`)."""
    table.seen.add(key)
    data = table.data.get(key)
    if data is None:
        if required:
            table.missing(key, ' (a table such as { type = "folder", path = "/srv/exports" })')
        return None
    if not isinstance(data, dict):
        table.problem(key, f"expected a table, got {type_name(data)}")
        return None
    sub = Table(f"{table.label} {key}", data, table.context)
    kind = sub.string("type")
    if not kind:
        return None
    attempts = sub.integer("attempts", DEFAULT_ATTEMPTS, minimum=1, maximum=MAX_ATTEMPTS)
    if kind == "folder":
        return _folder(sub, attempts)
    if kind == "sftp":
        return _sftp(sub, attempts, implicit_prefix)
    if kind == "s3":
        return _s3(sub, attempts, implicit_prefix)
    sub.problem(
        "type",
        f"'{kind}' is not one of {', '.join(DESTINATION_TYPES)}{suggest(kind, DESTINATION_TYPES)}",
    )
    return None  # its other keys cannot be judged without knowing the type


def _implicit(prefix: str | None, key: str) -> str | None:
    return f"{prefix}-{key.replace('_', '-')}" if prefix else None


def _folder(sub: Table, attempts: int) -> FolderDestinationSettings | None:
    path = sub.path("path")
    sub.finish((*_COMMON_KEYS, "path"))
    return None if path is None else FolderDestinationSettings(path=path, attempts=attempts)


def _sftp(sub: Table, attempts: int, prefix: str | None) -> SftpDestinationSettings | None:
    host = sub.string("host")
    if host and not _HOST.fullmatch(host):
        sub.problem("host", f"'{host}' is not a host name or address (give the port as port)")
    user = sub.string("user")
    if user and not _USER.fullmatch(user):
        sub.problem("user", f"'{user}' is not a user name")
    port = sub.integer("port", 22, minimum=1, maximum=65535)
    remote = sub.string("path", ".")
    if "path" in sub.data and not remote:
        sub.problem("path", "must not be empty (leave it out for the login folder)")
    known_hosts = sub.path("known_hosts")
    if known_hosts is not None and sub.context.secrets and not known_hosts.is_file():
        # Checked here so `validate` says it, not the first scheduled run at 02:00.
        sub.problem("known_hosts", f"no such file {known_hosts} (ssh-keyscan -H HOST > FILE)")
    private_key = sub.secret("private_key", implicit_name=_implicit(prefix, "private_key"))
    passphrase = sub.secret(
        "passphrase", required=False, implicit_name=_implicit(prefix, "passphrase")
    )
    timeout = sub.duration("timeout", 30.0, positive=True)
    sub.finish(
        (
            *_COMMON_KEYS,
            "host",
            "user",
            "port",
            "path",
            "known_hosts",
            "private_key",
            "private_key_file",
            "passphrase",
            "passphrase_file",
            "timeout",
        )
    )
    if not host or not user or known_hosts is None or private_key is None:
        return None
    return SftpDestinationSettings(
        host=host.strip("[]"),
        user=user,
        private_key=private_key,
        known_hosts=known_hosts,
        port=port,
        path=remote or ".",
        passphrase=passphrase,
        timeout=timeout,
        attempts=attempts,
    )


def _s3(sub: Table, attempts: int, prefix: str | None) -> S3DestinationSettings | None:
    bucket = sub.string("bucket")
    if bucket and not _BUCKET.fullmatch(bucket):
        sub.problem("bucket", f"'{bucket}' is not a bucket name (3 to 63 of a-z 0-9 . -)")
    key_prefix = sub.string("prefix", "").lstrip("/")
    if key_prefix and not key_prefix.endswith("/"):
        key_prefix += "/"
    if any(part in (".", "..") for part in key_prefix.split("/")):
        sub.problem("prefix", f"'{key_prefix}' must not contain . or .. parts")
    region = sub.string("region", "")
    if region and not _REGION.fullmatch(region):
        sub.problem("region", f"'{region}' is not a region name (such as eu-west-3)")
    endpoint_url = ""
    if "endpoint_url" in sub.data:
        endpoint_url = sub.url("endpoint_url", https_unless_loopback=True)
    else:
        sub.seen.add("endpoint_url")
    access_key_id = sub.secret(
        "access_key_id", required=False, implicit_name=_implicit(prefix, "access_key_id")
    )
    secret_access_key = sub.secret(
        "secret_access_key", required=False, implicit_name=_implicit(prefix, "secret_access_key")
    )
    if (access_key_id is None) != (secret_access_key is None):
        # One half of a key pair is a mistake; neither means boto3's own chain (instance role).
        given, absent = (
            ("access_key_id", "secret_access_key")
            if secret_access_key is None
            else ("secret_access_key", "access_key_id")
        )
        sub.problem(absent, f"missing: {given} is given, give both or neither")
    part_size = sub.integer("part_size", 8 * MIB, minimum=S3_MIN_PART, maximum=S3_MAX_PART)
    timeout = sub.duration("timeout", 60.0, positive=True)
    sub.finish(
        (
            *_COMMON_KEYS,
            "bucket",
            "prefix",
            "region",
            "endpoint_url",
            "access_key_id",
            "access_key_id_file",
            "secret_access_key",
            "secret_access_key_file",
            "part_size",
            "timeout",
        )
    )
    if not bucket:
        return None
    return S3DestinationSettings(
        bucket=bucket,
        prefix=key_prefix,
        region=region,
        endpoint_url=endpoint_url,
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        part_size=part_size,
        timeout=timeout,
        attempts=attempts,
    )
