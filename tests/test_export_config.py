"""`[[exports]]` tables and a store's backup settings in agent.toml (issue 17, items 3 and 4).

Valid tables become frozen `ExportSettings` with their destination; every problem of an invalid
file is listed at once (one `ConfigError`, exit 78 from `validate`); destination credentials are
secrets like every other: from `${ENV}`, `<key>_file` or `$CREDENTIALS_DIRECTORY`, and never in
a repr, a message or the redacted configuration.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge_agent import cli
from bridge_agent.config import Config, Secret, load_config, redact
from bridge_agent.config.exports import (
    EXPORT_FILTER_KEYS,
    EXPORT_FORMATS,
    FolderDestinationSettings,
    S3DestinationSettings,
    SftpDestinationSettings,
)
from bridge_agent.errors import ConfigError
from bridge_agent.export.destinations.base import check_name
from bridge_agent.export.request import FILTER_KEYS, FORMATS

SSH_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nLEAKCHECK-sshkey-0d9c\n-----END OPENSSH PRIVATE KEY-----"
)
PASSPHRASE = "LEAKCHECK-passphrase-51ab"
ACCESS_KEY = "AKIALEAKCHECK0000042"
SECRET_KEY = "LEAKCHECK-s3-secret-77e1"
SECRETS = (SSH_KEY, "LEAKCHECK-sshkey-0d9c", PASSPHRASE, ACCESS_KEY, SECRET_KEY)

BASE = """
[agent]
id = "shop-01"
state_dir = "state"

[hub]
url = "https://hub.example.com"
token = "hub-token-for-tests"

[[stores]]
id = "main"
platform = "jsondir"
url = "http://127.0.0.1/"
catalog_dir = "catalog"
"""

EXPORTS = """
[[exports]]
name = "nightly"
store = "main"
format = "csv"
fields = ["basic", "seo"]
filters = { category = "Hoodies", status = ["active", "draft"] }
schedule = "0 2 * * *"
timezone = "Europe/Paris"
keep = 14
incremental = true
bom = true
destination = { type = "folder", path = "exports" }

[[exports]]
name = "feed"
store = "main"
format = "xml"
schedule = "30 */6 * * *"
[exports.destination]
type = "sftp"
host = "sftp.example.com"
port = 2222
user = "merchant"
path = "/upload/feeds"
known_hosts = "known_hosts"
private_key_file = "sftp-key"
passphrase = "${SFTP_PASSPHRASE}"
attempts = 6

[[exports]]
name = "archive"
store = "main"
format = "xlsx"
schedule = "off"
[exports.destination]
type = "s3"
bucket = "shop-archive"
prefix = "catalog"
region = "eu-west-3"
endpoint_url = "https://s3.example.net"
access_key_id = "${S3_KEY}"
secret_access_key = "${S3_SECRET}"
part_size = 16777216
"""

ENV = {"SFTP_PASSPHRASE": PASSPHRASE, "S3_KEY": ACCESS_KEY, "S3_SECRET": SECRET_KEY}


def write_files(tmp_path: Path) -> None:
    (tmp_path / "known_hosts").write_text("sftp.example.com ssh-ed25519 AAAAC3Nza...\n")
    (tmp_path / "sftp-key").write_text(SSH_KEY + "\n")


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "agent.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env=ENV if env is None else env)


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, env)
    message = str(caught.value)
    for secret in SECRETS:
        assert secret not in message
    return list(caught.value.problems)


def test_exports_are_read_with_their_destinations(tmp_path: Path) -> None:
    write_files(tmp_path)
    config = load(tmp_path, BASE + EXPORTS)
    nightly, feed, archive = config.exports
    assert (nightly.name, nightly.store, nightly.format) == ("nightly", "main", "csv")
    assert nightly.fields == ("basic", "seo")
    assert dict(nightly.filters) == {"category": ("Hoodies",), "status": ("active", "draft")}
    assert (nightly.schedule, nightly.timezone, nightly.keep) == ("0 2 * * *", "Europe/Paris", 14)
    assert nightly.incremental and nightly.bom
    assert nightly.destination == FolderDestinationSettings(tmp_path / "exports")

    assert (feed.schedule, feed.timezone, feed.keep, feed.incremental) == (
        "30 */6 * * *",
        "UTC",
        7,
        False,
    )
    sftp = feed.destination
    assert isinstance(sftp, SftpDestinationSettings)
    assert (sftp.host, sftp.port, sftp.user, sftp.path) == (
        "sftp.example.com",
        2222,
        "merchant",
        "/upload/feeds",
    )
    assert sftp.known_hosts == tmp_path / "known_hosts"
    assert sftp.private_key == Secret(SSH_KEY)  # the file's final newline is not the key's
    assert sftp.passphrase == Secret(PASSPHRASE)
    assert (sftp.attempts, sftp.timeout) == (6, 30.0)

    s3 = archive.destination
    assert isinstance(s3, S3DestinationSettings)
    assert archive.schedule == "off"
    assert (s3.bucket, s3.prefix, s3.region, s3.endpoint_url) == (
        "shop-archive",
        "catalog/",
        "eu-west-3",
        "https://s3.example.net",
    )
    assert (s3.access_key_id, s3.secret_access_key) == (Secret(ACCESS_KEY), Secret(SECRET_KEY))
    assert s3.part_size == 16 * 1024 * 1024

    shown = f"{config!r} {redact(config)}"
    for secret in SECRETS:
        assert secret not in shown
    assert redact(config)["exports"][2]["destination"]["secret_access_key"] == "********"


def test_no_exports_is_fine_and_backups_default_off(tmp_path: Path) -> None:
    config = load(tmp_path, BASE)
    assert config.exports == ()
    store = config.stores[0]
    assert (store.backup_before_bulk, store.backup_threshold, store.backup_destination) == (
        False,
        50,
        None,
    )


def test_backup_before_bulk_defaults_to_a_folder_under_the_state_dir(tmp_path: Path) -> None:
    config = load(tmp_path, BASE + "backup_before_bulk = true\nbackup_threshold = 10\n")
    store = config.stores[0]
    assert (store.backup_before_bulk, store.backup_threshold) == (True, 10)
    assert store.backup_destination == FolderDestinationSettings(
        tmp_path / "state" / "backups" / "main"
    )


def test_backup_destination_takes_a_destination_table(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "main-backup-access-key-id").write_text(ACCESS_KEY)
    (credentials / "main-backup-secret-access-key").write_text(SECRET_KEY)
    text = BASE + (
        "backup_before_bulk = true\n"
        'backup_destination = { type = "s3", bucket = "backups", '
        'endpoint_url = "http://127.0.0.1:9000" }\n'
    )
    store = load(tmp_path, text, {"CREDENTIALS_DIRECTORY": str(credentials)}).stores[0]
    destination = store.backup_destination
    assert isinstance(destination, S3DestinationSettings)
    assert destination.endpoint_url == "http://127.0.0.1:9000"  # plain http: loopback only
    assert destination.access_key_id == Secret(ACCESS_KEY)
    assert destination.secret_access_key == Secret(SECRET_KEY)


def test_sftp_key_from_the_systemd_credentials(tmp_path: Path) -> None:
    write_files(tmp_path)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "export-feed-private-key").write_text(SSH_KEY)
    text = BASE + (
        '[[exports]]\nname = "feed"\nstore = "main"\nformat = "xml"\nschedule = "0 * * * *"\n'
        'destination = { type = "sftp", host = "10.0.0.5", user = "feeds", '
        'known_hosts = "known_hosts" }\n'
    )
    (export,) = load(tmp_path, text, {"CREDENTIALS_DIRECTORY": str(credentials)}).exports
    assert isinstance(export.destination, SftpDestinationSettings)
    assert export.destination.private_key == Secret(SSH_KEY)
    assert export.destination.passphrase is None
    assert export.destination.path == "."


def test_every_problem_of_the_exports_is_listed(tmp_path: Path) -> None:
    text = (
        BASE
        + """
[[exports]]
name = "nightly"
store = "mian"
format = "cvs"
fields = ["basic", 3]
filters = { colour = "red", status = "visible", availability = [] }
schedule = "0 2 * * 1"
timezone = "Mars/Olympus"
keep = 0
incremental = "yes"
destination = { type = "ftp", host = "x" }
colour = "blue"

[[exports]]
name = "nightly"
store = "main"
format = "xlsx"
bom = true
schedule = "99 2 * * *"
[exports.destination]
type = "sftp"
host = "sftp.example.com:22"
user = "merchant"
known_hosts = "nowhere/known_hosts"
private_key = "${SSH_KEY}"
strict_host_key_checking = false

[[exports]]
name = "bad name!"
store = "main"
format = "json"
schedule = "0 3 * * *"
[exports.destination]
type = "s3"
bucket = "Shop_Archive"
endpoint_url = "http://s3.example.net"
access_key_id = "${S3_KEY}"
part_size = 1024
verify_tls = false

[[exports]]
store = "main"
format = "jsonl"
"""
    )
    found = problems(tmp_path, text, {"S3_KEY": ACCESS_KEY, "SSH_KEY": SSH_KEY})
    one = "[[exports]] #1 (name 'nightly')"
    two = "[[exports]] #2 (name 'nightly')"
    three = "[[exports]] #3"
    expected = [
        f"{one} store: no store with id 'mian' (configured: main) (did you mean 'main'?)",
        f"{one} format: 'cvs' is not one of {', '.join(EXPORT_FORMATS)} (did you mean 'csv'?)",
        f"{one} unknown key 'colour'",
        f"{one} fields[1]: expected a string, got integer",
        f"{one} filters: unknown filter 'colour'",
        f"{one} filters.status: 'visible' is not one of active, draft, archived",
        f"{one} filters.availability: must not be empty",
        f"{one} schedule: '0 2 * * 1': write the weekday as names",
        f"{one} timezone: unknown time zone 'Mars/Olympus'",
        f"{one} keep: must be from 1 to 10000, got 0",
        f"{one} incremental: expected a boolean (true or false), got string",
        f"{one} destination type: 'ftp' is not one of folder, sftp, s3 (did you mean 'sftp'?)",
        f"{two} bom: applies only to csv, shopify-csv, woocommerce-csv, not xlsx",
        f"{two} schedule: '99 2 * * *' is not a crontab expression",
        f"{two} destination host: 'sftp.example.com:22' is not a host name or address",
        f"{two} destination known_hosts: no such file {tmp_path / 'nowhere/known_hosts'}",
        f"{two} destination unknown key 'strict_host_key_checking'",
        "duplicate export name 'nightly' in [[exports]] #1 and #2: export names must be unique",
        f"{three} name: 'bad name!' must be 1 to 64 of A-Z a-z 0-9 . _ -",
        f"{three} destination bucket: 'Shop_Archive' is not a bucket name",
        f"{three} destination endpoint_url: must use https:// (plain http:// only to loopback)",
        f"{three} destination secret_access_key: missing: access_key_id is given",
        f"{three} destination part_size: must be from 5242880 to 5368709120, got 1024",
        f"{three} destination unknown key 'verify_tls'",
        "[[exports]] #4 missing required key 'name'",
        "[[exports]] #4 missing required key 'schedule'",
        "[[exports]] #4 missing required key 'destination'",
    ]
    for line in expected:
        assert any(p.startswith(line) for p in found), (line, found)
    assert len(found) == len(expected), found


def test_wrong_shapes_are_problems_not_tracebacks(tmp_path: Path) -> None:
    # Top-level keys come before the tables in TOML, so these open the file.
    assert problems(tmp_path, 'exports = "nightly"\n' + BASE) == [
        "exports: expected an array of tables ([[exports]]), got string"
    ]
    found = problems(
        tmp_path,
        'exports = [1, { name = "x", store = "main", format = "csv", schedule = "off",'
        ' destination = "exports/" }]\n'
        + BASE
        + 'backup_threshold = 0\nbackup_destination = { type = "folder" }\n',
    )
    assert found == [
        "[[stores]] #1 (id 'main') backup_threshold: must be at least 1, got 0",
        "[[stores]] #1 (id 'main') backup_destination missing required key 'path'",
        "[[exports]] #1: expected a table, got integer",
        "[[exports]] #2 (name 'x') destination: expected a table, got string",
    ]


def test_sftp_credentials_missing_or_unreadable_are_named_not_quoted(tmp_path: Path) -> None:
    write_files(tmp_path)
    text = BASE + (
        '[[exports]]\nname = "feed"\nstore = "main"\nformat = "xml"\nschedule = "off"\n'
        'destination = { type = "sftp", host = "h", user = "u", known_hosts = "known_hosts" }\n'
        '[[exports]]\nname = "feed2"\nstore = "main"\nformat = "xml"\nschedule = "off"\n'
        'destination = { type = "sftp", host = "h", user = "u", known_hosts = "known_hosts",'
        ' private_key = "${SSH_KEY}", passphrase = "${NOPE}" }\n'
    )
    found = problems(tmp_path, text, {"SSH_KEY": SSH_KEY})
    assert found == [
        "[[exports]] #1 (name 'feed') destination missing required key 'private_key' "
        "(give private_key, or private_key_file, or a credential 'export-feed-private-key' "
        "in $CREDENTIALS_DIRECTORY)",
        "[[exports]] #2 (name 'feed2') destination passphrase: environment variable NOPE is "
        "not set (used as ${NOPE})",
    ]


def test_without_secrets_the_exports_still_load(tmp_path: Path) -> None:
    """`status` and `log` load the config without secrets: no env, no credential files."""
    write_files(tmp_path)
    path = tmp_path / "agent.toml"
    path.write_text(BASE + EXPORTS, encoding="utf-8")
    config = load_config(path, env={}, secrets=False)
    assert [e.name for e in config.exports] == ["nightly", "feed", "archive"]


def test_validate_exits_78_on_a_bad_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "catalog").mkdir()
    path = tmp_path / "agent.toml"
    path.write_text(
        BASE
        + '[[exports]]\nname = "n"\nstore = "main"\nformat = "pdf"\nschedule = "off"\n'
        + 'destination = { type = "folder", path = "out" }\n',
        encoding="utf-8",
    )
    assert cli.main(["--config", str(path), "validate"]) == 78
    assert "[[exports]] #1 (name 'n') format: 'pdf' is not one of" in capsys.readouterr().err


def test_config_and_export_agree_on_formats_and_filters() -> None:
    """config sits below export in the layers, so it repeats these lists: they must agree."""
    assert EXPORT_FORMATS == FORMATS
    assert EXPORT_FILTER_KEYS == FILTER_KEYS


@pytest.mark.parametrize("name", ["a..b", ".hidden", "_x", "-x"])
def test_a_name_the_destinations_would_refuse_is_a_problem(tmp_path: Path, name: str) -> None:
    """The name starts the export's file names: the loader applies the destinations' rule
    (destinations/base.py `check_name`) instead of accepting a name every run refuses."""
    with pytest.raises(ValueError):
        check_name(f"{name}-20261206T020000Z.csv")
    text = (
        BASE
        + f"""
[[exports]]
name = "{name}"
store = "main"
format = "csv"
schedule = "0 2 * * *"
destination = {{ type = "folder", path = "exports" }}
"""
    )
    found = problems(tmp_path, text)
    assert any(f"'{name}' must be" in p and "starting with a letter or a digit" in p
               and "'..'" in p for p in found), found  # fmt: skip


def test_a_name_with_single_dots_is_fine(tmp_path: Path) -> None:
    text = (
        BASE
        + """
[[exports]]
name = "v1.2_nightly-feed"
store = "main"
format = "csv"
schedule = "0 2 * * *"
destination = { type = "folder", path = "exports" }
"""
    )
    assert [e.name for e in load(tmp_path, text).exports] == ["v1.2_nightly-feed"]
