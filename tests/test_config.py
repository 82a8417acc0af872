"""agent.toml loading: the contract keys, defaults, every kind of problem, and secret hygiene."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from importlib.metadata import EntryPoint, EntryPoints
from importlib.metadata import entry_points as installed_entry_points
from pathlib import Path

import pytest

from bridge_agent import cli
from bridge_agent.config import (
    Config,
    FrozenMap,
    HealthSettings,
    Listen,
    OptionSpec,
    PlatformSpec,
    Secret,
    StoreFilters,
    StoreSettings,
    WebhookSettings,
    default_config_path,
    load_config,
    parse_duration,
    redact,
    specs,
)
from bridge_agent.errors import ConfigError

# Distinctive values: if any of them shows up in a repr or a message, a secret leaked.
HUB_TOKEN = "hubtok-Q8v1zR"
CONSUMER_KEY = "ck_LEAKCHECK_7f3a"
CONSUMER_SECRET = "cs_LEAKCHECK_91bd"
WEBHOOK_SECRET = "whsec_LEAKCHECK_c04e"

AGENT = """
[agent]
id = "shop-01"
state_dir = "state"
"""
HUB = f"""
[hub]
url = "https://hub.example.com"
token = "{HUB_TOKEN}"
"""
STORE = f"""
[[stores]]
id = "main"
platform = "woocommerce"
url = "https://shop.example.com"
consumer_key = "{CONSUMER_KEY}"
consumer_secret = "{CONSUMER_SECRET}"
"""
MINIMAL = AGENT + HUB + STORE


class Outlet:
    """A plugin adapter that declares its settings, as the built-in ones do."""

    settings_spec = PlatformSpec(
        secrets=("access_token",),
        options=FrozenMap(
            {
                "api_version": OptionSpec(
                    "string", "2026-07", pattern=r"\d{4}-\d{2}|unstable", hint="like '2026-07'"
                ),
            }
        ),
    )


class Acme:
    """A plugin adapter that declares no settings: its keys pass on unvalidated."""


class Confused:
    """A plugin adapter whose `settings_spec` is not a spec."""

    settings_spec = ("token",)  # a declaration of another kind


class Fragile:
    """A plugin adapter whose `from_settings` fails with something other than ConfigError."""

    @classmethod
    def from_settings(cls, settings: object, http: object) -> None:
        raise KeyError("region")


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Install the plugin adapters above (and a broken one) beside the real ones."""
    fakes = {
        "outlet": f"{__name__}:Outlet",
        "acme": f"{__name__}:Acme",
        "confused": f"{__name__}:Confused",
        "fragile": f"{__name__}:Fragile",
        "broken": "bridge_agent_no_such_plugin:Adapter",
    }

    def entry_points(*, group: str) -> EntryPoints:
        real = installed_entry_points(group=group)
        return EntryPoints([*real, *(EntryPoint(n, v, group) for n, v in fakes.items())])

    monkeypatch.setattr(specs, "entry_points", entry_points)


def write(tmp_path: Path, text: str, name: str = "agent.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), env=env or {})


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, env)
    return list(caught.value.problems)


def only_problem(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    found = problems(tmp_path, text, env)
    assert len(found) == 1, found
    return found[0]


# --- the happy paths -----------------------------------------------------------------------------


@pytest.mark.usefixtures("plugins")
def test_full_config_round_trip(tmp_path: Path) -> None:
    text = """
    [agent]
    id = "shop-01"
    state_dir = "/var/lib/bridge-agent"
    drain_timeout = "45s"
    log_level = "DEBUG"

    [hub]
    url = "https://hub.example.com/bridge/"
    token = "${BRIDGE_HUB_TOKEN}"
    timeout = "10s"
    batch_max_items = 200
    batch_max_bytes = 524288
    batch_linger = "250ms"
    backoff_base = 1
    backoff_cap = "2m"
    auth_retry_interval = "10m"

    [health]
    listen = "127.0.0.1:9686"

    [webhooks]
    listen = "[::1]:9687"
    max_body_bytes = 1048576

    [[stores]]
    id = "main"
    platform = "woocommerce"
    url = "https://shop.example.com"
    consumer_key = "${WC_CONSUMER_KEY}"
    consumer_secret = "${WC_CONSUMER_SECRET}"
    webhook_secret = "${WC_WEBHOOK_SECRET}"
    spool_dir = "/var/spool/bridge-agent/main"
    active = true
    deletions = false
    concurrency = 8
    poll_interval = "5m"
    reconcile_interval = "6h"
    images_max_per_product = 5
    per_page = 50
    verify_tls = false

    [[stores]]
    id = "outlet"
    platform = "outlet"
    url = "https://outlet.example.com"
    access_token = "${SHOPIFY_TOKEN:-shpat_default}"
    active = false
    """
    env = {
        "BRIDGE_HUB_TOKEN": HUB_TOKEN,
        "WC_CONSUMER_KEY": CONSUMER_KEY,
        "WC_CONSUMER_SECRET": CONSUMER_SECRET,
        "WC_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    path = write(tmp_path, text.replace("\n    ", "\n"))
    config = load_config(path, env=env)

    assert config.source == path.absolute()
    assert config.agent.id == "shop-01"
    assert config.agent.state_dir == Path("/var/lib/bridge-agent")
    assert config.agent.drain_timeout == 45.0
    assert config.agent.log_level == "debug"

    hub = config.hub
    assert hub.url == "https://hub.example.com/bridge"  # trailing slash dropped for joining paths
    assert hub.token.reveal() == HUB_TOKEN
    assert (hub.timeout, hub.batch_linger, hub.backoff_base, hub.backoff_cap) == (
        10.0,
        0.25,
        1.0,
        120.0,
    )
    assert (hub.batch_max_items, hub.batch_max_bytes) == (200, 524288)
    assert hub.auth_retry_interval == 600.0

    assert config.health.listen == Listen("127.0.0.1", 9686)
    assert config.webhooks.listen == Listen("::1", 9687)
    assert str(config.webhooks.listen) == "[::1]:9687"
    assert config.webhooks.max_body_bytes == 1048576

    main = config.store("main")
    assert (main.platform, main.url, main.active, main.deletions) == (
        "woocommerce",
        "https://shop.example.com",
        True,
        False,
    )
    assert (main.concurrency, main.poll_interval, main.reconcile_interval) == (8, 300.0, 21600.0)
    assert main.spool_dir == Path("/var/spool/bridge-agent/main")
    assert main.images_max_per_product == 5
    assert {k: v.reveal() for k, v in main.secrets.items()} == {
        "consumer_key": CONSUMER_KEY,
        "consumer_secret": CONSUMER_SECRET,
        "webhook_secret": WEBHOOK_SECRET,
    }
    assert dict(main.options) == {
        "api_prefix": "/wp-json/wc/v3",
        "per_page": 50,
        "verify_tls": False,
    }

    outlet = config.store("outlet")
    assert outlet.active is False
    assert outlet.secrets["access_token"].reveal() == "shpat_default"
    assert dict(outlet.options) == {"api_version": "2026-07"}
    assert "webhook_secret" not in outlet.secrets  # optional and not given


def test_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)

    assert config.agent.drain_timeout == 30.0
    assert config.agent.log_level == "info"
    assert config.agent.state_dir == tmp_path / "state"
    hub = config.hub
    assert (hub.timeout, hub.batch_max_items, hub.batch_max_bytes, hub.batch_linger) == (
        30.0,
        500,
        1_048_576,
        0.05,
    )
    assert (hub.backoff_base, hub.backoff_cap, hub.auth_retry_interval) == (0.5, 60.0, 300.0)
    assert config.health == HealthSettings(Listen("127.0.0.1", 8686))
    assert config.webhooks == WebhookSettings(Listen("127.0.0.1", 8687), 2_097_152)
    store = config.stores[0]
    assert (store.active, store.deletions, store.concurrency) == (True, True, 4)
    assert (store.poll_interval, store.reconcile_interval) == (300.0, 21600.0)
    assert store.spool_dir is None
    assert store.images_max_per_product == 10
    assert dict(store.options) == {
        "api_prefix": "/wp-json/wc/v3",
        "per_page": 100,
        "verify_tls": True,
    }


def test_settings_are_frozen(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    with pytest.raises(AttributeError):
        config.hub.url = "https://elsewhere.example.com"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.stores[0].options["per_page"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        config.stores[0].secrets["consumer_key"] = Secret("x")  # type: ignore[index]
    assert hash(config.stores[0]) == hash(load(tmp_path, MINIMAL).stores[0])


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    text = (
        AGENT
        + HUB
        + STORE
        + 'spool_dir = "spool/main"\n'
        + '\n[[stores]]\nid = "demo"\nplatform = "jsondir"\nurl = "http://localhost:8080"\n'
        + 'catalog_dir = "../catalog"\n'
    )
    config = load_config(write(folder, text), env={})

    assert config.agent.state_dir == folder / "state"
    assert config.store("main").spool_dir == folder / "spool" / "main"
    assert config.store("demo").options["catalog_dir"] == folder / "../catalog"
    assert dict(config.store("demo").secrets) == {}


def test_store_lookup_names_configured_ids(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    assert config.store("main") is config.stores[0]
    with pytest.raises(KeyError, match="configured: main"):
        config.store("nope")


def test_settings_can_be_built_in_code() -> None:
    # Other modules' tests build settings directly; the defaults must make that short.
    store = StoreSettings(id="s", platform="jsondir", url="http://localhost")
    assert dict(store.secrets) == {}
    assert dict(store.options) == {}
    assert store.concurrency == 4


# --- env expansion -------------------------------------------------------------------------------


def test_env_expansion_forms(tmp_path: Path) -> None:
    text = AGENT.replace('"shop-01"', '"${AGENT_ID}"') + HUB + STORE
    text = text.replace('"https://shop.example.com"', '"https://${SHOP_HOST:-shop.test}/$$x"')
    config = load(tmp_path, text, env={"AGENT_ID": "edge-7"})
    assert config.agent.id == "edge-7"
    assert config.stores[0].url == "https://shop.test/$x"


def test_missing_env_var_names_variable_and_key(tmp_path: Path) -> None:
    text = AGENT + HUB.replace(HUB_TOKEN, "${BRIDGE_HUB_TOKEN}") + STORE
    message = only_problem(tmp_path, text)
    assert message == (
        "[hub] token: environment variable BRIDGE_HUB_TOKEN is not set"
        " (used as ${BRIDGE_HUB_TOKEN})"
    )


def test_required_var_message(tmp_path: Path) -> None:
    text = AGENT + HUB.replace(HUB_TOKEN, "${BRIDGE_HUB_TOKEN:?set it in /etc/default/bridge}")
    text += STORE
    # Unset and set-but-empty are both refused.
    for env in ({}, {"BRIDGE_HUB_TOKEN": ""}):
        assert only_problem(tmp_path, text, env) == (
            "[hub] token: ${BRIDGE_HUB_TOKEN}: set it in /etc/default/bridge"
        )
    assert load(tmp_path, text, {"BRIDGE_HUB_TOKEN": "t"}).hub.token.reveal() == "t"


def test_lone_dollar_and_unclosed_reference_are_errors(tmp_path: Path) -> None:
    text = AGENT + HUB + STORE + 'poll_interval = "$POLL"\nspool_dir = "${SPOOL"\n'
    found = problems(tmp_path, text)
    assert found == [
        "[[stores]] #1 (id 'main') poll_interval: a '$' must start ${VAR};"
        " write $$ for a literal $",
        "[[stores]] #1 (id 'main') spool_dir: '${' is not closed by '}'",
    ]


# --- each kind of problem ------------------------------------------------------------------------


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    text = AGENT + HUB + 'tokn = "x"\n' + STORE + "concurency = 2\n"
    assert problems(tmp_path, text) == [
        "[hub] unknown key 'tokn' (did you mean 'token'?)",
        "[[stores]] #1 (id 'main') unknown key 'concurency' (did you mean 'concurrency'?)",
    ]


def test_unknown_key_without_close_match(tmp_path: Path) -> None:
    message = only_problem(tmp_path, MINIMAL + "zzzz = 1\n")
    assert message == "[[stores]] #1 (id 'main') unknown key 'zzzz'"


def test_key_of_another_platform_is_unknown(tmp_path: Path) -> None:
    message = only_problem(tmp_path, MINIMAL + 'api_version = "2026-07"\n')
    assert message.startswith("[[stores]] #1 (id 'main') unknown key 'api_version'")


def test_unknown_table(tmp_path: Path) -> None:
    text = MINIMAL + '\n[helth]\nlisten = "127.0.0.1:1"\n'
    assert only_problem(tmp_path, text) == (
        "unknown top-level table 'helth' (did you mean 'health'?)"
    )


def test_missing_required_tables_and_keys(tmp_path: Path) -> None:
    assert problems(tmp_path, STORE) == [
        "missing required table [agent]",
        "missing required table [hub]",
    ]
    text = '[agent]\nid = "a"\n[hub]\nurl = "https://hub.example.com"\n' + STORE.replace(
        f'consumer_secret = "{CONSUMER_SECRET}"\n', ""
    )
    assert problems(tmp_path, text) == [
        "[agent] missing required key 'state_dir'",
        "[hub] missing required key 'token'"
        " (give token, or token_file, or a credential 'hub-token' in $CREDENTIALS_DIRECTORY)",
        "[[stores]] #1 (id 'main') missing required key 'consumer_secret'"
        " (give consumer_secret, or consumer_secret_file,"
        " or a credential 'main-consumer-secret' in $CREDENTIALS_DIRECTORY)",
    ]


def test_no_stores(tmp_path: Path) -> None:
    assert only_problem(tmp_path, AGENT + HUB) == "no [[stores]] configured: add at least one"


def test_wrong_type_names_expected_type(tmp_path: Path) -> None:
    text = AGENT + HUB + 'batch_max_items = "500"\n' + STORE + 'active = "yes"\nconcurrency = 2.0\n'
    assert problems(tmp_path, text) == [
        "[hub] batch_max_items: expected an integer, got string",
        "[[stores]] #1 (id 'main') active: expected a boolean (true or false), got string",
        "[[stores]] #1 (id 'main') concurrency: expected an integer, got float",
    ]


def test_table_of_wrong_type(tmp_path: Path) -> None:
    text = 'health = "127.0.0.1:1"\n' + MINIMAL
    assert only_problem(tmp_path, text) == "[health]: expected a table, got string"


def test_out_of_range_integers(tmp_path: Path) -> None:
    text = AGENT + HUB + "batch_max_bytes = 0\n" + STORE + "concurrency = 65\nper_page = 101\n"
    assert problems(tmp_path, text) == [
        "[hub] batch_max_bytes: must be at least 1, got 0",
        "[[stores]] #1 (id 'main') concurrency: must be from 1 to 64, got 65",
        "[[stores]] #1 (id 'main') per_page: must be from 1 to 100, got 101",
    ]


def test_request_budget_and_image_checks(tmp_path: Path) -> None:
    store = load(tmp_path, MINIMAL).stores[0]
    assert (store.requests_per_second, store.image_checks) == (0.0, True)
    text = MINIMAL + "requests_per_second = 2.5\nimage_checks = false\n"
    store = load(tmp_path, text).stores[0]
    assert (store.requests_per_second, store.image_checks) == (2.5, False)
    for bad, expected in [
        ("-1", "must be from 0 to 10000, got -1"),
        ("nan", "must be from 0 to 10000, got nan"),
        ("true", "expected a number, got boolean"),
        ('"5"', "expected a number, got string"),
    ]:
        found = only_problem(tmp_path, MINIMAL + f"requests_per_second = {bad}\n")
        assert found == f"[[stores]] #1 (id 'main') requests_per_second: {expected}", found


def test_bad_duration(tmp_path: Path) -> None:
    text = AGENT + HUB + STORE + 'poll_interval = "5 minutes"\nreconcile_interval = "0s"\n'
    found = problems(tmp_path, text)
    assert found[0].startswith(
        "[[stores]] #1 (id 'main') poll_interval: '5 minutes' is not a duration"
    )
    assert found[1] == "[[stores]] #1 (id 'main') reconcile_interval: must be more than zero"
    assert len(found) == 2


def test_bad_urls(tmp_path: Path) -> None:
    text = (
        AGENT
        + HUB.replace("https://hub.example.com", "hub.example.com")
        + STORE.replace("https://shop.example.com", "ftp://shop.example.com")
    )
    assert problems(tmp_path, text) == [
        "[hub] url: expected an http:// or https:// URL, got 'hub.example.com'",
        "[[stores]] #1 (id 'main') url: expected an http:// or https:// URL,"
        " got 'ftp://shop.example.com'",
    ]


def test_plain_http_hub_only_to_loopback(tmp_path: Path) -> None:
    text = AGENT + HUB.replace("https://", "http://") + STORE
    assert only_problem(tmp_path, text) == (
        "hub.url must use https:// (plain http:// only to loopback), got 'http://hub.example.com'"
    )


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8700", "http://127.8.9.10", "http://[::1]:8700", "http://localhost:8700/"],
)
def test_plain_http_hub_on_loopback_is_fine(tmp_path: Path, url: str) -> None:
    config = load(tmp_path, AGENT + HUB.replace("https://hub.example.com", url) + STORE)
    assert config.hub.url == url.rstrip("/")


@pytest.mark.parametrize(
    ("listen", "reason"),
    [
        ("127.0.0.1", "expected 'host:port'"),
        ("127.0.0.1:99999", "port '99999' is not a number from 0 to 65535"),
        ("::1:8686", "put IPv6 addresses in brackets"),
        ("[::zz]:8686", "'::zz' is not an IPv6 address"),
        (":8686", "'' is not a host name or IPv4 address"),
    ],
)
def test_bad_listen(tmp_path: Path, listen: str, reason: str) -> None:
    message = only_problem(tmp_path, MINIMAL + f'\n[health]\nlisten = "{listen}"\n')
    assert message.startswith(f"[health] listen: '{listen}': {reason}")


def test_cross_key_checks(tmp_path: Path) -> None:
    text = (
        AGENT
        + HUB
        + 'backoff_base = "2m"\nbackoff_cap = "1m"\n'
        + '[health]\nlisten = "127.0.0.1:9000"\n[webhooks]\nlisten = "127.0.0.1:9000"\n'
        + STORE
    )
    assert problems(tmp_path, text) == [
        "[hub] backoff_cap: must not be smaller than backoff_base",
        "[health] and [webhooks] both listen on 127.0.0.1:9000",
    ]


def test_duplicate_store_ids(tmp_path: Path) -> None:
    text = MINIMAL + STORE + STORE.replace('"main"', '"other"') + STORE
    assert problems(tmp_path, text) == [
        "duplicate store id 'main' in [[stores]] #1 and #2: store ids must be unique",
        "duplicate store id 'main' in [[stores]] #1 and #4: store ids must be unique",
    ]


def test_bad_ids(tmp_path: Path) -> None:
    text = AGENT.replace("shop-01", "shop 01") + HUB + STORE.replace('"main"', '"main/1"')
    assert problems(tmp_path, text) == [
        "[agent] id: 'shop 01' must be 1 to 64 of A-Z a-z 0-9 . _ -",
        "[[stores]] #1 id: 'main/1' must be 1 to 64 of A-Z a-z 0-9 . _ -",
    ]


def test_unknown_platform_with_suggestion(tmp_path: Path) -> None:
    text = MINIMAL.replace('"woocommerce"', '"woocomerce"')
    # Only the platform is reported: its keys cannot be judged without knowing it.
    assert only_problem(tmp_path, text) == (
        "[[stores]] #1 (id 'main') platform: unknown platform 'woocomerce' "
        "(installed: jsondir, shopify, woocommerce) (did you mean 'woocommerce'?)"
    )


@pytest.mark.usefixtures("plugins")
@pytest.mark.parametrize("platform", ["bigcommerce", "magento2", "prestashop", "outlets"])
def test_unknown_platform_names_the_installed_ones(tmp_path: Path, platform: str) -> None:
    # Platforms with no adapter installed are unknown: config knows no platform by name.
    text = STORE.replace('"woocommerce"', f'"{platform}"') + 'access_token = "x"\n'
    message = only_problem(tmp_path, AGENT + HUB + text)
    assert message.startswith(
        f"[[stores]] #1 (id 'main') platform: unknown platform '{platform}' "
        "(installed: acme, broken, confused, fragile, jsondir, outlet, shopify, woocommerce)"
    )
    assert message.endswith("(did you mean 'outlet'?)") == (platform == "outlets")


@pytest.mark.usefixtures("plugins")
def test_a_plugin_adapters_own_spec_validates_its_keys(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "s-access-token").write_text("shpat-LEAKCHECK\n")
    store = '[[stores]]\nid = "s"\nplatform = "outlet"\nurl = "https://s.example.com"\n'
    env = {"CREDENTIALS_DIRECTORY": str(credentials)}
    loaded = load(tmp_path, AGENT + HUB + store, env=env).store("s")
    # The spec's secret is found by its implicit credential name, its option takes its default.
    assert loaded.secrets["access_token"].reveal() == "shpat-LEAKCHECK"
    assert dict(loaded.options) == {"api_version": "2026-07"}

    wrong = store + 'api_versoin = "2026-01"\nregion = "eu"\n'
    assert problems(tmp_path, AGENT + HUB + wrong) == [
        "[[stores]] #1 (id 's') missing required key 'access_token'"
        " (give access_token, or access_token_file,"
        " or a credential 's-access-token' in $CREDENTIALS_DIRECTORY)",
        "[[stores]] #1 (id 's') unknown key 'api_versoin' (did you mean 'api_version'?)",
        "[[stores]] #1 (id 's') unknown key 'region'",
    ]


@pytest.mark.usefixtures("plugins")
def test_a_plugin_that_cannot_be_loaded_or_declares_no_spec_is_a_problem(tmp_path: Path) -> None:
    text = AGENT + HUB
    for number, name in enumerate(("broken", "confused"), start=1):
        text += f'[[stores]]\nid = "{name}"\nplatform = "{name}"\nurl = "https://x.example"\n'
        text += f'token = "tok-LEAKCHECK-{number}"\n'
    found = problems(tmp_path, text)
    assert found == [
        "[[stores]] #1 (id 'broken') platform: the adapter of 'broken' cannot be loaded"
        " (ModuleNotFoundError: No module named 'bridge_agent_no_such_plugin')",
        "[[stores]] #2 (id 'confused') platform: the adapter of 'confused' cannot be loaded"
        " (TypeError: settings_spec is a tuple, not a config.PlatformSpec)",
    ]


def test_the_loader_and_the_adapter_judge_woocommerce_keys_by_one_spec(tmp_path: Path) -> None:
    from bridge_agent.platforms.woocommerce import WooCommerce  # noqa: PLC0415 - the adapter
    from bridge_agent.platforms.woocommerce.settings import SETTINGS, WooSettings  # noqa: PLC0415

    assert WooCommerce.settings_spec is SETTINGS
    wrong = {"per_page": 250, "api_prefix": "wp-json", "seo_plugin": "yoastish"}
    text = MINIMAL + "".join(f"{k} = {json.dumps(v)}\n" for k, v in wrong.items())
    from_file = [p.removeprefix("[[stores]] #1 (id 'main') ") for p in problems(tmp_path, text)]
    settings = load(tmp_path, MINIMAL).store("main")
    hand_built = dataclasses.replace(settings, options={**settings.options, **wrong})
    with pytest.raises(ConfigError) as caught:
        WooSettings.from_store(hand_built)
    by_adapter = [p.removeprefix("[[stores]] 'main': woocommerce ") for p in caught.value.problems]
    assert (
        sorted(from_file)
        == sorted(by_adapter)
        == [
            "api_prefix: 'wp-json' is not valid (a path starting with /)",
            "per_page: must be from 1 to 100, got 250",
            "seo_plugin: 'yoastish' is not valid (yoast, rankmath, aioseo or seopress)",
        ]
    )


@pytest.mark.usefixtures("plugins")
def test_platform_from_entry_point(tmp_path: Path) -> None:
    (tmp_path / "acme-key").write_text("akey-LEAKCHECK\n")
    text = (
        AGENT
        + HUB
        + '[[stores]]\nid = "acme"\nplatform = "acme"\nurl = "https://acme.example.com"\n'
        + 'region = "${REGION}"\nwarehouses = [1, 2]\nclient_secret = "csec-LEAKCHECK"\n'
        + 'signing_key_file = "acme-key"\n'
    )
    store = load(tmp_path, text, env={"REGION": "eu"}).store("acme")

    assert dict(store.options) == {"region": "eu", "warehouses": (1, 2)}
    assert {k: v.reveal() for k, v in store.secrets.items()} == {
        "client_secret": "csec-LEAKCHECK",
        "signing_key": "akey-LEAKCHECK",
    }


def test_both_key_and_key_file(tmp_path: Path) -> None:
    text = AGENT + HUB + 'token_file = "hub-token"\n' + STORE
    assert only_problem(tmp_path, text) == "[hub] token: give either token or token_file, not both"


def test_unreadable_secret_file_names_path_not_content(tmp_path: Path) -> None:
    (tmp_path / "binary").write_bytes(b"SECRETPREFIX-\xff\xfe")
    (tmp_path / "adir").mkdir()
    text = (
        AGENT
        + HUB.replace(f'token = "{HUB_TOKEN}"', 'token_file = "nowhere/hub-token"')
        + STORE.replace(f'consumer_key = "{CONSUMER_KEY}"', 'consumer_key_file = "binary"')
        + 'webhook_secret_file = "adir"\n'
    )
    found = problems(tmp_path, text)
    assert found[0] == (
        f"[hub] token_file: cannot read secret file {tmp_path / 'nowhere/hub-token'}:"
        " No such file or directory"
    )
    assert found[1] == (
        f"[[stores]] #1 (id 'main') consumer_key_file: secret file {tmp_path / 'binary'}"
        " is not valid UTF-8"
    )
    assert found[2].startswith(
        "[[stores]] #1 (id 'main') webhook_secret_file:"
        f" cannot read secret file {tmp_path / 'adir'}: "
    )
    assert len(found) == 3
    assert all("SECRETPREFIX" not in p for p in found)


def test_empty_secret_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    text = AGENT + HUB.replace(HUB_TOKEN, "${EMPTY}") + STORE + 'webhook_secret_file = "empty"\n'
    assert problems(tmp_path, text, env={"EMPTY": ""}) == [
        "[hub] token: is empty",
        f"[[stores]] #1 (id 'main') webhook_secret_file: secret file {tmp_path / 'empty'} is empty",
    ]


def test_jsondir_requires_catalog_dir(tmp_path: Path) -> None:
    text = AGENT + HUB + '[[stores]]\nid = "demo"\nplatform = "jsondir"\nurl = "http://localhost"\n'
    message = only_problem(tmp_path, text)
    assert message == "[[stores]] #1 (id 'demo') missing required key 'catalog_dir'"


@pytest.mark.usefixtures("plugins")
def test_option_pattern_is_checked(tmp_path: Path) -> None:
    text = (
        AGENT
        + HUB
        + '[[stores]]\nid = "s"\nplatform = "outlet"\nurl = "https://s.example.com"\n'
        + 'access_token = "shpat_x"\napi_version = "July"\n'
    )
    assert only_problem(tmp_path, text) == (
        "[[stores]] #1 (id 's') api_version: 'July' is not valid (like '2026-07')"
    )


def test_toml_syntax_error(tmp_path: Path) -> None:
    text = MINIMAL + "concurrency = \n"
    message = only_problem(tmp_path, text)
    assert message.startswith("invalid TOML: ")
    assert f"line {text.count(chr(10))}" in message
    assert "column" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml", env={})
    assert caught.value.problems == (
        f"config file not found: {tmp_path / 'absent.toml'} (pass --config, or create it)",
    )
    assert caught.value.source == str(tmp_path / "absent.toml")


def test_many_problems_reported_at_once(tmp_path: Path) -> None:
    text = (
        '[agent]\nid = ""\nstate_dir = "s"\nlog_level = "loud"\n'
        '[hub]\nurl = "http://hub.example.com"\ntoken = "${NOPE}"\nbacoff_cap = "1m"\n'
        '[webhooks]\nlisten = "nowhere"\n' + STORE + 'poll_interval = "soon"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    error = caught.value
    assert len(error.problems) == 7, error.problems
    assert str(error).startswith(f"{tmp_path / 'agent.toml'}: 7 problem(s):")
    for fragment in (
        "[agent] id: must not be empty",
        "[agent] log_level: 'loud' is not one of",
        "hub.url must use https://",
        "environment variable NOPE is not set",
        "unknown key 'bacoff_cap' (did you mean 'backoff_cap'?)",
        "[webhooks] listen: 'nowhere'",
        "poll_interval: 'soon' is not a duration",
    ):
        assert fragment in str(error)


# --- secrets -------------------------------------------------------------------------------------


def test_secrets_from_env(tmp_path: Path) -> None:
    text = AGENT + HUB.replace(HUB_TOKEN, "${TOKEN}") + STORE
    config = load(tmp_path, text, env={"TOKEN": "from-env-123"})
    assert config.hub.token.reveal() == "from-env-123"


def test_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "hub-token.txt").write_text(f"{HUB_TOKEN}\n")
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir()
    (secret_dir / "ck").write_text(f"{CONSUMER_KEY}\r\n")
    hub = HUB.replace(f'token = "{HUB_TOKEN}"', 'token_file = "hub-token.txt"')
    store = STORE.replace(
        f'consumer_key = "{CONSUMER_KEY}"', f'consumer_key_file = "{secret_dir}/ck"'
    )
    text = AGENT + hub + store
    config = load(tmp_path, text)
    assert config.hub.token.reveal() == HUB_TOKEN  # relative to the config folder, newline gone
    assert config.stores[0].secrets["consumer_key"].reveal() == CONSUMER_KEY


def test_secrets_from_credentials_directory(tmp_path: Path) -> None:
    # systemd LoadCredential= puts files here; names follow "hub-token" and "<store>-<key>".
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "hub-token").write_text(HUB_TOKEN + "\n")
    (credentials / "main-consumer-key").write_text(CONSUMER_KEY)
    (credentials / "main-webhook-secret").write_text(WEBHOOK_SECRET)
    (credentials / "cs").write_text(CONSUMER_SECRET)
    text = (
        AGENT
        + '[hub]\nurl = "https://hub.example.com"\n'
        + '[[stores]]\nid = "main"\nplatform = "woocommerce"\nurl = "https://shop.example.com"\n'
        + 'consumer_secret_file = "cs"\n'  # relative: resolved in $CREDENTIALS_DIRECTORY
    )
    config = load(tmp_path, text, env={"CREDENTIALS_DIRECTORY": str(credentials)})

    assert config.hub.token.reveal() == HUB_TOKEN
    assert {k: v.reveal() for k, v in config.stores[0].secrets.items()} == {
        "consumer_key": CONSUMER_KEY,
        "consumer_secret": CONSUMER_SECRET,
        "webhook_secret": WEBHOOK_SECRET,
    }


def test_missing_credential_names_the_credential(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    text = AGENT + '[hub]\nurl = "https://hub.example.com"\n' + STORE
    message = only_problem(tmp_path, text, env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert message == (
        "[hub] missing required key 'token' "
        "(give token, or token_file, or a credential 'hub-token' in $CREDENTIALS_DIRECTORY)"
    )


def test_secrets_absent_from_repr_and_str(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL + f'webhook_secret = "{WEBHOOK_SECRET}"\n')
    shown = [
        repr(config),
        str(config),
        repr(config.stores[0].secrets),
        f"{config.hub.token}",
        "%s" % config.hub.token,  # noqa: UP031 - the old formatting path must mask too
        json.dumps(redact(config)),
    ]
    for text in shown:
        for secret in (HUB_TOKEN, CONSUMER_KEY, CONSUMER_SECRET, WEBHOOK_SECRET):
            assert secret not in text
    assert "Secret('********')" in repr(config)
    assert redact(config)["hub"]["token"] == "********"
    assert redact(config)["health"]["listen"] == "127.0.0.1:8686"


def test_secrets_absent_from_error_messages(tmp_path: Path) -> None:
    hub = HUB.replace("https://hub.example.com", "https://admin:pw-LEAKCHECK@hub.example.com")
    store = (
        # A secret pasted inside the braces is not a variable name, so it is not quoted back.
        STORE.replace(CONSUMER_KEY, "${ck-pasted-LEAKCHECK}")
        # A stray dollar inside a secret.
        .replace(CONSUMER_SECRET, CONSUMER_SECRET + "$")
        + f'webhook_secret = "{WEBHOOK_SECRET}"\nwebhook_secret_file = "x"\n'
        + "conurrency = 3\n"
    )
    text = AGENT + hub + store
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert len(caught.value.problems) == 5, caught.value.problems
    assert "LEAKCHECK" not in message
    assert HUB_TOKEN not in message
    assert "[[stores]] #1 (id 'main') consumer_key: bad reference: expected ${NAME}" in message


def test_secret_value_semantics() -> None:
    secret = Secret("abc-LEAKCHECK")
    assert secret.reveal() == "abc-LEAKCHECK"
    assert repr(secret) == "Secret('********')"
    assert str(secret) == "********"
    assert secret == Secret("abc-LEAKCHECK")
    assert secret != Secret("other")
    assert secret != "abc-LEAKCHECK"  # a Secret never equals a plain string
    assert len({secret, Secret("abc-LEAKCHECK")}) == 1
    with pytest.raises(AttributeError):
        secret._value = "x"
    assert copy.deepcopy(secret) == secret


def test_settings_survive_asdict_and_deepcopy(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    assert copy.deepcopy(config) == config
    assert dataclasses.asdict(config)["hub"]["token"] == Secret(HUB_TOKEN)


# --- helpers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("6h", 21600.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("45", 45.0),
        (" 2m ", 120.0),
        (30, 30.0),
        (0.05, 0.05),
        ("0", 0.0),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "5x", "5 m", "m5", "-1", "-5s", "inf", "nan", "1h-"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_parse_duration_refuses_booleans() -> None:
    with pytest.raises(TypeError, match="boolean"):
        parse_duration(True)


@pytest.mark.parametrize(
    ("text", "listen"),
    [
        ("127.0.0.1:8686", Listen("127.0.0.1", 8686)),
        ("[::1]:8686", Listen("::1", 8686)),
        ("localhost:0", Listen("localhost", 0)),
        ("0.0.0.0:65535", Listen("0.0.0.0", 65535)),
    ],
)
def test_listen_parse_and_str(text: str, listen: Listen) -> None:
    assert Listen.parse(text) == listen
    assert str(listen) == text


def test_default_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_config_path() == Path("/etc/bridge-agent/agent.toml")
    (tmp_path / "agent.toml").write_text(MINIMAL)
    assert default_config_path() == Path("agent.toml")


def test_os_environ_is_the_default_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_TEST_TOKEN", "env-default-token")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = write(tmp_path, AGENT + HUB.replace(HUB_TOKEN, "${BRIDGE_TEST_TOKEN}") + STORE)
    assert load_config(path).hub.token.reveal() == "env-default-token"


# -- hostile or broken files: a clear ConfigError, never a traceback (issue 10, class 5) --------


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        ("extra = " + "[" * 3000 + "]" * 3000 + "\n", "nest too deeply"),
        ("extra = " + "{a = " * 2000 + "1" + "}" * 2000 + "\n", "nest too deeply"),
        ("extra = " + "9" * 5000 + "\n", "more than 4300 digits"),
        ("extra = " + "[" * 20 + "]" * 20 + "\n", "nests deeper than 16 levels"),
    ],
)
def test_hostile_toml_is_a_config_error(tmp_path: Path, tail: str, message: str) -> None:
    (problem,) = problems(tmp_path, MINIMAL + "\n[agent2]\n" + tail)
    assert message in problem


def test_a_config_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "agent.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError) as caught:
        load_config(fifo, env={})  # on old code, open() blocks here until a writer comes
    assert "not a regular file but a FIFO" in caught.value.problems[0]


def test_an_oversized_config_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    with open(path, "wb") as big:
        big.truncate(50 * 1024 * 1024)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert "larger than 1048576 bytes" in caught.value.problems[0]


def test_a_secret_file_that_is_a_fifo_is_a_problem_not_a_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "hub-token")
    text = MINIMAL.replace(f'token = "{HUB_TOKEN}"', 'token_file = "hub-token"')
    (problem,) = problems(tmp_path, text)
    assert "hub-token: not a regular file but a FIFO" in problem


def test_a_linked_config_is_read(tmp_path: Path) -> None:
    real = write(tmp_path, MINIMAL, name="real.toml")
    (tmp_path / "agent.toml").symlink_to(real)
    assert load_config(tmp_path / "agent.toml", env={}).agent.id == "shop-01"


@pytest.mark.usefixtures("plugins")
def test_an_adapter_that_fails_on_its_settings_is_a_config_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Not a traceback from `validate`, nor a dead reloader: exit 78 with the store named.
    text = AGENT + HUB + '[[stores]]\nid = "f"\nplatform = "fragile"\nurl = "https://f.example"\n'
    path = write(tmp_path, text)
    assert cli.main(["--config", str(path), "validate"]) == 78
    err = capsys.readouterr().err
    assert "[[stores]] 'f': the Fragile adapter could not be built from these settings:" in err
    assert "KeyError: 'region'" in err
    assert "Traceback" not in err


# --- store filters, test mode and the verification schedule (issue 13) --------------------------


def test_store_filters_and_verify_schedule_are_read(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + 'verify_schedule = "30 2 * * sun"\nverify_timezone = "Europe/Paris"\n'
        + "\n[stores.filters]\n"
        + 'status = ["active", "draft"]\ncategories = ["Clothing/Tops", "c12"]\n'
        + 'tags = ["${SALE_TAG}"]\nexclude_tags = ["b2b"]\nonly_visible = true\n'
        + 'test_tag = "bridge-test"\n'
    )
    store = load(tmp_path, text, env={"SALE_TAG": "sale"}).stores[0]
    assert store.filters == StoreFilters(
        status=("active", "draft"),
        categories=("Clothing/Tops", "c12"),
        tags=("sale",),
        exclude_tags=("b2b",),
        only_visible=True,
        test_tag="bridge-test",
    )
    assert (store.verify_schedule, store.verify_timezone) == ("30 2 * * sun", "Europe/Paris")
    hash(store)  # still a frozen value


def test_store_filters_default_admits_everything(tmp_path: Path) -> None:
    store = load(tmp_path, MINIMAL).stores[0]
    assert store.filters == StoreFilters() and store.filters.admits_everything
    assert (store.verify_schedule, store.verify_timezone) == ("0 3 * * *", "UTC")
    off = load(tmp_path, MINIMAL + 'verify_schedule = "OFF"\n').stores[0]
    assert off.verify_schedule == "off"
    inline = load(tmp_path, MINIMAL + 'filters = { test_tag = "pilot" }\n').stores[0]
    assert inline.filters == StoreFilters(test_tag="pilot")
    assert not inline.filters.admits_everything


def test_store_filter_problems_are_all_reported(tmp_path: Path) -> None:
    text = (
        MINIMAL
        + 'verify_schedule = "0 25 * * *"\nverify_timezone = "Mars/Olympus"\n'
        + "\n[stores.filters]\n"
        + 'status = ["visible", "actve"]\ncategories = "Tops"\ntags = ["sale", 3, " "]\n'
        + 'only_visble = true\ntest_tag = ""\n'
    )
    found = problems(tmp_path, text)
    where = "[[stores]] #1 (id 'main')"
    sub = f"{where} [stores.filters]"
    assert found[:2] == [
        f"{sub} status: 'visible' is not one of active, draft, archived (Sales Layer's visible"
        " is active)",
        f"{sub} status: 'actve' is not one of active, draft, archived (did you mean 'active'?)",
    ]
    assert f"{sub} test_tag: must not be empty (leave it out to sync every product)" in found
    assert f"{sub} categories: expected an array of strings, got string" in found
    assert f"{sub} tags[1]: expected a string, got integer" in found
    assert f"{sub} tags[2]: must not be empty" in found
    assert f"{sub} unknown key 'only_visble' (did you mean 'only_visible'?)" in found
    assert (
        f"{where} verify_timezone: unknown time zone 'Mars/Olympus' (an IANA name such as"
        " Europe/Paris)" in found
    )
    (schedule,) = [p for p in found if "verify_schedule" in p]
    assert schedule.startswith(f"{where} verify_schedule: '0 25 * * *' is not a crontab")
    assert "(23)" in schedule  # apscheduler's reason: the hour's maximum
    assert len(found) == 9, found


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        ('filters = "all"\n', "filters: expected a table ([stores.filters]), got string"),
        (
            'verify_schedule = "0 3 * *"\n',
            "verify_schedule: '0 3 * *' is not a crontab expression (minute hour day month"
            ' weekday, e.g. "0 3 * * *"), or "off": Wrong number of fields; got 4, expected 5',
        ),
        (
            'verify_schedule = "0 3 * * 0"\n',
            "verify_schedule: '0 3 * * 0': write the weekday as names (sun, mon-fri), not"
            " numbers: crontab and the scheduler number weekdays differently",
        ),
        ("verify_schedule = 3\n", "verify_schedule: expected a string, got integer"),
        ('filters.only_visible = "yes"\n', "[stores.filters] only_visible: expected a boolean"),
        (
            'filters = { only_visible = true, status = ["draft"] }\n',
            "[stores.filters] only_visible: admits only active products, and status does not"
            " list active",
        ),
        (
            'filters = { test_tag = "Pilot", exclude_tags = ["pilot"] }\n',
            "[stores.filters] test_tag: 'Pilot' is also in exclude_tags",
        ),
    ],
)
def test_one_store_filter_or_schedule_problem(tmp_path: Path, tail: str, expected: str) -> None:
    message = only_problem(tmp_path, MINIMAL + tail)
    assert message.startswith("[[stores]] #1 (id 'main') ")
    assert expected in message


def test_store_filters_freeze_and_thaw_exactly(tmp_path: Path) -> None:
    text = MINIMAL + '\n[stores.filters]\ncategories = ["Tops"]\ntest_tag = "pilot"\n'
    store = load(tmp_path, text).stores[0]
    frozen = redact(store)
    assert frozen["filters"] == store.filters.to_dict()
    assert frozen["verify_schedule"] == "0 3 * * *"
    thawed = json.loads(json.dumps(frozen["filters"]))  # as a run stores it
    assert StoreFilters.from_dict(thawed) == store.filters
    assert StoreFilters.from_dict({}) == StoreFilters()  # a run frozen before filters existed
    every = StoreFilters(("draft",), ("a", "b/c"), ("t",), ("x",), True, "pilot")
    assert StoreFilters.from_dict(json.loads(json.dumps(every.to_dict()))) == every
    with pytest.raises(ValueError, match="unknown key 'colour'; tags is not a list of strings"):
        StoreFilters.from_dict({"colour": "red", "tags": "sale"})
