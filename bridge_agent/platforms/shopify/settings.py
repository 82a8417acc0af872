"""The Shopify store settings: the spec the adapter declares, and `ShopifySettings`, checked.

`SETTINGS` is the one definition of what a `[[stores]]` entry with `platform = "shopify"` takes
beyond the common store keys (the config loader reads it through the entry point; config knows
nothing of Shopify). `ShopifySettings.from_store` turns the generic `StoreSettings` into the exact
values the client and the adapter need, collecting every problem into one `ConfigError`; no
message ever quotes a credential.

- `url`: the shop's admin origin, `https://{shop}.myshopify.com`. Plain `http://` is accepted only
  for a loopback host (the simulator, a local proxy): the access token travels in a header.
- secrets: `access_token` (the custom app's Admin API token, `shpat_...`), `webhook_secret`
  (optional: the app's client secret, the HMAC key of webhook deliveries).
- options: `api_version` (default `API_VERSION`, the version this adapter's documents are
  validated against), `bulk_import` (true: the full import by bulk operation; false: paged
  queries), `page_size` (products per paged query, at most 250; a page is also kept under the
  single-query cost limit, see `queries.py`), `webhook_url` (the public HTTPS address of the
  agent's webhook listener, for registration), `verify_tls`, `shop_domain` (the
  `X-Shopify-Shop-Domain` webhooks must carry, when set).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bridge_agent.config import (
    FrozenMap,
    OptionSpec,
    PlatformSpec,
    Secret,
    bounded_integer,
    url_problems,
)
from bridge_agent.errors import ConfigError

if TYPE_CHECKING:
    from bridge_agent.config import StoreSettings

#: The Admin API version every document of this adapter is validated against (tests), and the
#: one it asks for unless `api_version` says otherwise (docs/platforms/shopify.md: version policy).
API_VERSION = "2026-07"
#: Connections take `first` up to 250 (Shopify's cap on list arguments).
MAX_PAGE_SIZE = 250
DEFAULT_PAGE_SIZE = 100

SETTINGS = PlatformSpec(
    secrets=("access_token",),
    optional_secrets=("webhook_secret",),
    options=FrozenMap(
        {
            "api_version": OptionSpec(
                "string",
                API_VERSION,
                pattern=r"20\d\d-(01|04|07|10)|unstable",
                hint="a quarterly version such as '2026-07'",
            ),
            "bulk_import": OptionSpec("boolean", True),
            "page_size": OptionSpec("integer", DEFAULT_PAGE_SIZE, minimum=1, maximum=MAX_PAGE_SIZE),
            "webhook_url": OptionSpec("url"),
            "verify_tls": OptionSpec("boolean", True),
            "shop_domain": OptionSpec(
                "string",
                pattern=r"[a-z0-9][a-z0-9.-]*\.[a-z]{2,}(:\d+)?|127\.0\.0\.1(:\d+)?|localhost(:\d+)?",
                hint="the shop's myshopify domain, e.g. 'acme.myshopify.com'",
            ),
        }
    ),
)


@dataclass(frozen=True, slots=True)
class ShopifySettings:
    """What the Shopify adapter needs, validated. Secrets stay `config.Secret` (masked repr)."""

    store_id: str
    base_url: str  # the admin origin, no trailing slash: "https://acme.myshopify.com"
    access_token: Secret
    webhook_secret: Secret | None = None
    api_version: str = API_VERSION
    bulk_import: bool = True
    page_size: int = DEFAULT_PAGE_SIZE
    concurrency: int = 4
    images_max: int = 10
    verify_tls: bool = True
    shop_domain: str | None = None
    webhook_url: str | None = None

    @property
    def endpoint(self) -> str:
        """The one GraphQL endpoint: `{url}/admin/api/{version}/graphql.json`."""
        return f"{self.base_url}/admin/api/{self.api_version}/graphql.json"

    @property
    def api_path(self) -> str:
        """The endpoint's path, to name requests in messages (never the URL)."""
        return f"/admin/api/{self.api_version}/graphql.json"

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc

    @classmethod
    def from_store(cls, settings: StoreSettings) -> ShopifySettings:
        """Check and convert; raise ConfigError listing every problem found."""
        label = f"[[stores]] {settings.id!r}"
        problems: list[str] = []
        base_url = _check_url(settings.url, problems)
        concurrency = bounded_integer(settings.concurrency, "concurrency", 1, 64, problems)
        images_max = bounded_integer(
            settings.images_max_per_product, "images_max_per_product", 0, 1000, problems
        )
        secrets: Mapping[str, Any] = settings.secrets
        options: Mapping[str, Any] = settings.options
        problems += SETTINGS.problems(secrets, options)
        if options.get("webhook_url") and secrets.get("webhook_secret") is None:
            # The agent could register the subscriptions but never verify what they deliver.
            problems.append(
                "webhook_url needs a webhook_secret (the app's client secret: deliveries are "
                "signed with it)"
            )
        if problems:
            raise ConfigError([f"{label}: shopify {p}" for p in problems])
        values = {key: options.get(key, spec.default) for key, spec in SETTINGS.options.items()}
        return cls(
            store_id=settings.id,
            base_url=base_url,
            access_token=secrets["access_token"],
            webhook_secret=secrets.get("webhook_secret"),
            api_version=values["api_version"],
            bulk_import=values["bulk_import"],
            page_size=values["page_size"],
            concurrency=concurrency,
            images_max=images_max,
            verify_tls=values["verify_tls"],
            shop_domain=values["shop_domain"],
            webhook_url=values["webhook_url"],
        )


def _check_url(url: str, problems: list[str]) -> str:
    """The shop's admin origin: the shared URL rules (https unless loopback: the access token
    travels in a header; never a user:password@), and an origin only (no path, query)."""
    found = url_problems(url, https_unless_loopback=True)
    problems += [f"url {problem}" for problem in found]
    if not found and urlsplit(url).path.strip("/"):
        problems.append(
            f"url {url!r} must be the shop's origin only, e.g. https://acme.myshopify.com"
        )
    return url.rstrip("/")
