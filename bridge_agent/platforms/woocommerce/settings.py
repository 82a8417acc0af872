"""`WooSettings`: one `[[stores]]` entry with `platform = "woocommerce"`, checked and frozen.

The config loader already validated the keys it knows (`config.PLATFORMS["woocommerce"]`); this
module turns the generic `StoreSettings` into the exact values the client and the mapping need, and
checks again what a hand-built `StoreSettings` (tests, the simulator, a third-party caller) could
get wrong. Every problem is collected and raised at once in one `ConfigError`, and no message ever
quotes a credential.

Options read beyond the loader's contract (`api_prefix`, `per_page`, `verify_tls`):

- `prices_include_tax` (bool, default absent): WooCommerce's "prices entered with tax" store
  setting. The product JSON does not say it, so `Product.tax_included` stays None unless given.
- `currency` (ISO 4217 code, default absent): the product JSON carries no currency either.
- `seo_plugin` (`yoast`, `rankmath`, `aioseo`, `seopress`; default absent = try all in order):
  which plugin's post meta holds the SEO title and description (see `mapping.py`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bridge_agent.config import Secret
from bridge_agent.errors import ConfigError

if TYPE_CHECKING:
    from bridge_agent.config import StoreSettings

#: The wc/v3 schema caps `per_page` at 100 (400 `rest_invalid_param` above).
MAX_PER_PAGE = 100
DEFAULT_API_PREFIX = "/wp-json/wc/v3"
SEO_PLUGINS: tuple[str, ...] = ("yoast", "rankmath", "aioseo", "seopress")
_CURRENCY = re.compile(r"[A-Z]{3}")


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
        options: Mapping[str, Any] = settings.options
        api_prefix = options.get("api_prefix", DEFAULT_API_PREFIX)
        if not isinstance(api_prefix, str) or not re.fullmatch(r"/\S*", api_prefix):
            problems.append(f"api_prefix must be a path starting with '/', got {api_prefix!r}")
            api_prefix = DEFAULT_API_PREFIX
        api_prefix = api_prefix.rstrip("/")

        per_page = _integer(options.get("per_page", MAX_PER_PAGE), "per_page", 1, 100, problems)
        concurrency = _integer(settings.concurrency, "concurrency", 1, 64, problems)
        images_max = _integer(
            settings.images_max_per_product, "images_max_per_product", 0, 1000, problems
        )
        verify_tls = options.get("verify_tls", True)
        if not isinstance(verify_tls, bool):
            problems.append(f"verify_tls must be true or false, got {type(verify_tls).__name__}")
            verify_tls = True

        secrets = settings.secrets
        consumer_key = _secret(secrets, "consumer_key", required=True, problems=problems)
        consumer_secret = _secret(secrets, "consumer_secret", required=True, problems=problems)
        webhook_secret = _secret(secrets, "webhook_secret", required=False, problems=problems)
        if options.get("webhook_url") and webhook_secret is None:
            # Registered webhooks are signed with this secret; without it the agent could
            # neither register them nor verify what they deliver.
            problems.append("webhook_url needs a webhook_secret (the webhooks are signed with it)")

        prices_include_tax = options.get("prices_include_tax")
        if prices_include_tax is not None and not isinstance(prices_include_tax, bool):
            problems.append("prices_include_tax must be true or false")
            prices_include_tax = None
        currency = options.get("currency")
        if currency is not None and (
            not isinstance(currency, str) or not _CURRENCY.fullmatch(currency)
        ):
            problems.append(f"currency must be an ISO 4217 code such as 'EUR', got {currency!r}")
            currency = None
        seo_plugin = options.get("seo_plugin")
        if seo_plugin is not None and seo_plugin not in SEO_PLUGINS:
            problems.append(
                f"seo_plugin must be one of {', '.join(SEO_PLUGINS)}, got {seo_plugin!r}"
            )
            seo_plugin = None

        if problems:
            raise ConfigError([f"{label}: woocommerce {p}" for p in problems])
        assert consumer_key is not None
        assert consumer_secret is not None
        return cls(
            store_id=settings.id,
            base_url=base_url,
            consumer_key=consumer_key,
            consumer_secret=consumer_secret,
            webhook_secret=webhook_secret,
            api_prefix=api_prefix,
            per_page=per_page,
            concurrency=concurrency,
            images_max=images_max,
            verify_tls=verify_tls,
            prices_include_tax=prices_include_tax,
            currency=currency,
            seo_plugin=seo_plugin,
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


def _integer(value: Any, key: str, minimum: int, maximum: int, problems: list[str]) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{key} must be an integer, got {type(value).__name__}")
        return minimum
    if not minimum <= value <= maximum:
        problems.append(f"{key} must be from {minimum} to {maximum}, got {value}")
        return max(minimum, min(maximum, value))
    return value


def _secret(
    secrets: Mapping[str, Any], key: str, *, required: bool, problems: list[str]
) -> Secret | None:
    value = secrets.get(key)
    if value is None:
        if required:
            problems.append(f"needs {key}")
        return None
    if not isinstance(value, Secret):
        problems.append(f"{key} must be a config.Secret (never a plain string)")
        return None
    if not value.reveal():
        problems.append(f"{key} is empty")
        return None
    return value
