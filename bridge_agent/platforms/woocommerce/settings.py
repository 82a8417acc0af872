"""The WooCommerce store settings: the spec the adapter declares, and `WooSettings`, checked.

`SETTINGS` is the one definition of what a `[[stores]]` entry with `platform = "woocommerce"`
takes beyond the common store keys. The adapter declares it (`WooCommerce.settings_spec`), and
the config loader reads it through the entry point to check the file's keys; config itself knows
nothing of WooCommerce. `WooSettings.from_store` turns the generic `StoreSettings` into the exact
values the client and the mapping need, applying the same spec (`PlatformSpec.problems`) to what a
hand-built `StoreSettings` (tests, the simulator, a third-party caller) could get wrong, plus the
rules that span keys. Every problem is collected and raised at once in one `ConfigError`, and no
message ever quotes a credential.

The options (docs/configuration.md), beyond `api_prefix`, `per_page` and `verify_tls`:

- `prices_include_tax` (bool, default absent): WooCommerce's "prices entered with tax" store
  setting. The product JSON does not say it, so `Product.tax_included` stays None unless given.
- `currency` (ISO 4217 code, default absent): the product JSON carries no currency either.
- `seo_plugin` (`yoast`, `rankmath`, `aioseo`, `seopress`; default absent = try all in order):
  which plugin's post meta holds the SEO title and description (see `mapping.py`).
- `webhook_url` (default absent): where the store reaches this agent's webhook receiver; when
  set, the agent registers its webhooks, which needs `webhook_secret`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bridge_agent.config import FrozenMap, OptionSpec, PlatformSpec, Secret, bounded_integer
from bridge_agent.errors import ConfigError

if TYPE_CHECKING:
    from bridge_agent.config import StoreSettings

#: The wc/v3 schema caps `per_page` at 100 (400 `rest_invalid_param` above).
MAX_PER_PAGE = 100
DEFAULT_API_PREFIX = "/wp-json/wc/v3"
SEO_PLUGINS: tuple[str, ...] = ("yoast", "rankmath", "aioseo", "seopress")

SETTINGS = PlatformSpec(
    secrets=("consumer_key", "consumer_secret"),
    optional_secrets=("webhook_secret",),
    options=FrozenMap(
        {
            "api_prefix": OptionSpec(
                "string", DEFAULT_API_PREFIX, pattern=r"/\S*", hint="a path starting with /"
            ),
            "per_page": OptionSpec("integer", MAX_PER_PAGE, minimum=1, maximum=MAX_PER_PAGE),
            "verify_tls": OptionSpec("boolean", True),
            # The product JSON says neither: store-wide WooCommerce settings.
            "prices_include_tax": OptionSpec("boolean"),
            "currency": OptionSpec(
                "string", pattern=r"[A-Z]{3}", hint="an ISO 4217 code such as 'EUR'"
            ),
            "seo_plugin": OptionSpec(
                "string",
                pattern="|".join(SEO_PLUGINS),
                hint=f"{', '.join(SEO_PLUGINS[:-1])} or {SEO_PLUGINS[-1]}",
            ),
            # The address at which the store reaches this agent's webhook receiver: https://
            # behind a reverse proxy, or plain http:// to a loopback host (a store on the same
            # machine, the simulator). When set, the agent registers its webhooks and
            # re-activates them when WooCommerce disables them.
            "webhook_url": OptionSpec("url"),
        }
    ),
)


@dataclass(frozen=True, slots=True)
class WooSettings:
    """What the WooCommerce adapter needs, validated. Secrets stay `config.Secret` (masked repr)."""

    store_id: str
    base_url: str  # the store's home URL, no trailing slash: "https://shop.example.com"
    consumer_key: Secret
    consumer_secret: Secret
    webhook_secret: Secret | None = None
    api_prefix: str = DEFAULT_API_PREFIX  # starts with "/", no trailing slash
    per_page: int = MAX_PER_PAGE
    concurrency: int = 4
    images_max: int = 10
    verify_tls: bool = True
    prices_include_tax: bool | None = None
    currency: str | None = None
    seo_plugin: str | None = None

    @property
    def api_base(self) -> str:
        """Absolute URL of the REST namespace: `https://shop.example.com/wp-json/wc/v3`."""
        return self.base_url + self.api_prefix

    @property
    def uses_oauth(self) -> bool:
        """Plain http: WooCommerce refuses Basic auth there, requests are signed (OAuth 1.0a)."""
        return urlsplit(self.base_url).scheme == "http"

    @classmethod
    def from_store(cls, settings: StoreSettings) -> WooSettings:
        """Check and convert; raise ConfigError listing every problem found."""
        label = f"[[stores]] {settings.id!r}"
        problems: list[str] = []

        base_url = _check_url(settings.url, problems)
        concurrency = bounded_integer(settings.concurrency, "concurrency", 1, 64, problems)
        images_max = bounded_integer(
            settings.images_max_per_product, "images_max_per_product", 0, 1000, problems
        )
        # The platform keys: by the spec the loader checked the file with (the one definition).
        secrets: Mapping[str, Any] = settings.secrets
        options: Mapping[str, Any] = settings.options
        problems += SETTINGS.problems(secrets, options)
        if options.get("webhook_url") and secrets.get("webhook_secret") is None:
            # Registered webhooks are signed with this secret; without it the agent could
            # neither register them nor verify what they deliver.
            problems.append("webhook_url needs a webhook_secret (the webhooks are signed with it)")

        if problems:
            raise ConfigError([f"{label}: woocommerce {p}" for p in problems])
        # Checked: each value is absent or right, and an absent one takes the spec's default.
        values = {key: options.get(key, spec.default) for key, spec in SETTINGS.options.items()}
        return cls(
            store_id=settings.id,
            base_url=base_url,
            consumer_key=secrets["consumer_key"],
            consumer_secret=secrets["consumer_secret"],
            webhook_secret=secrets.get("webhook_secret"),
            api_prefix=values["api_prefix"].rstrip("/"),
            per_page=values["per_page"],
            concurrency=concurrency,
            images_max=images_max,
            verify_tls=values["verify_tls"],
            prices_include_tax=values["prices_include_tax"],
            currency=values["currency"],
            seo_plugin=values["seo_plugin"],
        )


def _check_url(url: str, problems: list[str]) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        problems.append(f"url {url!r} is not a valid URL")
        return url
    if parts.username is not None or parts.password is not None:
        problems.append("url must not contain user:password@ (use consumer_key/consumer_secret)")
        return ""
    if parts.scheme not in ("http", "https") or not host:
        problems.append(f"url must be the store's http:// or https:// home URL, got {url!r}")
    if parts.query or parts.fragment:
        problems.append(f"url {url!r} must not have a ?query or #fragment")
    return url.rstrip("/")
