"""The `jsondir` adapter: see the package docstring."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from bridge_agent.errors import BadWebhook, ConfigError, InputError, PlatformUnavailable
from bridge_agent.inputs import loads_json, read_regular_file
from bridge_agent.model import Product
from bridge_agent.platforms.base import (
    Capability,
    CatalogPage,
    FetchResult,
    WebhookDelivery,
    fetch_each,
)
from bridge_agent.platforms.jsondir.settings import SETTINGS

if TYPE_CHECKING:
    from bridge_agent.config import PlatformSpec, StoreSettings

PAGE_SIZE = 100
FETCH_CONCURRENCY = 8  # files read at once by fetch_products
MAX_PRODUCT_BYTES = 16 * 1024 * 1024  # one product file; its descriptions may be long
MAX_WEBHOOK_BYTES = 1024 * 1024
MAX_ID_LENGTH = 255


class JsonDir:
    """Products as JSON files in `catalog_dir`."""

    name: ClassVar[str] = "jsondir"
    settings_spec: ClassVar[PlatformSpec] = SETTINGS  # what its [[stores]] entries take
    # Files are read one by one (no batch_fetch); a custom back end reports changes by spool.
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.MODIFIED_SINCE,
            Capability.PRODUCT_IDS,
            Capability.WEBHOOKS,
            Capability.SPOOL_HOOKS,
        }
    )

    def __init__(self, store_id: str, catalog_dir: Path, webhook_secret: str | None = None) -> None:
        self.store_id = store_id
        self.catalog_dir = catalog_dir
        self._webhook_secret = webhook_secret

    @classmethod
    def from_settings(cls, settings: StoreSettings, http: httpx.AsyncClient) -> JsonDir:
        del http  # files need no HTTP
        raw = settings.options.get("catalog_dir")
        if not raw:
            raise ConfigError([f"[[stores]] {settings.id!r}: jsondir needs catalog_dir"])
        secret = settings.secrets.get("webhook_secret")
        return cls(settings.id, Path(str(raw)), None if secret is None else secret.reveal())

    async def check(self) -> None:
        if not await asyncio.to_thread(self.catalog_dir.is_dir):
            raise PlatformUnavailable(f"catalog folder {self.catalog_dir} does not exist")

    async def fetch_product(self, product_id: str) -> Product | None:
        if "/" in product_id or product_id.startswith(".") or not product_id.isprintable():
            return None  # not a file name we would have written; such a product cannot exist
        return await asyncio.to_thread(self._read, self.catalog_dir / f"{product_id}.json")

    async def fetch_products(self, ids: Sequence[str]) -> FetchResult:
        return await fetch_each(self, ids, concurrency=FETCH_CONCURRENCY)

    async def resolve_webhook(self, delivery: WebhookDelivery) -> tuple[str, ...]:
        return delivery.product_ids

    async def aclose(self) -> None:
        return None

    async def catalog(self, resume: str | None = None) -> AsyncIterator[CatalogPage]:
        names = sorted(await asyncio.to_thread(_json_names, self.catalog_dir))
        if resume is not None:
            names = [n for n in names if n > resume]
        for start in range(0, len(names), PAGE_SIZE):
            chunk = names[start : start + PAGE_SIZE]
            products = [await asyncio.to_thread(self._read, self.catalog_dir / n) for n in chunk]
            last = start + PAGE_SIZE >= len(names)
            yield CatalogPage(
                products=[p for p in products if p is not None],
                next_token=None if last else chunk[-1],
                total=len(names),
            )

    async def modified_since(self, since: datetime) -> AsyncIterator[Sequence[Product]]:
        """Products whose `updated_at` is at or after `since` (a product without one counts)."""
        async for page in self.catalog():
            yield [p for p in page.products if _at_or_after(p.updated_at, since)]

    async def product_ids(self) -> AsyncIterator[Sequence[str]]:
        names = sorted(await asyncio.to_thread(_json_names, self.catalog_dir))
        for start in range(0, len(names), PAGE_SIZE):
            yield [n.removesuffix(".json") for n in names[start : start + PAGE_SIZE]]

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        """WooCommerce-style: base64 HMAC-SHA256 of the raw body in `X-Signature`.

        Body: `{"topic": "product.updated", "id": "794"}` or `{"ping": true}`.
        """
        if not self._webhook_secret:
            raise BadWebhook("no webhook_secret configured for this store")
        given = next((v for k, v in headers.items() if k.lower() == "x-signature"), "")
        expected = base64.b64encode(
            hmac.new(self._webhook_secret.encode(), body, hashlib.sha256).digest()
        ).decode()
        # "replace": aiohttp hands undecodable header bytes over as lone surrogates
        if not given or not hmac.compare_digest(
            given.encode("utf-8", "replace"), expected.encode()
        ):
            raise BadWebhook("webhook signature does not match")
        try:
            doc = loads_json(body, max_bytes=MAX_WEBHOOK_BYTES, what="webhook body")
        except InputError as exc:
            raise BadWebhook(str(exc), status=400) from None
        if not isinstance(doc, dict):
            raise BadWebhook("webhook body must be a JSON object", status=400)
        if doc.get("ping"):
            return WebhookDelivery(kind="ping")
        product_id = doc.get("id")
        if (
            not isinstance(product_id, str | int)
            or isinstance(product_id, bool)
            or not 0 < len(str(product_id)) <= MAX_ID_LENGTH
            or not str(product_id).isprintable()
        ):
            raise BadWebhook("webhook body has no usable product id", status=400)
        return WebhookDelivery(
            kind="product", topic=str(doc.get("topic") or ""), product_ids=(str(product_id),)
        )

    def _read(self, path: Path) -> Product | None:
        try:
            raw = read_regular_file(path, max_bytes=MAX_PRODUCT_BYTES, follow_symlinks=True)
            product = Product.from_dict(loads_json(raw, max_bytes=MAX_PRODUCT_BYTES))
        except FileNotFoundError:
            return None
        except InputError as exc:
            raise PlatformUnavailable(f"cannot read {path}: {exc}") from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # AttributeError: a document that is not an object, or a part that should be one
            raise PlatformUnavailable(f"{path} is not a canonical product: {exc}") from None
        product_id: Any = product.id  # whatever the file held: from_dict does not check
        if not isinstance(product_id, str) or not product_id or not _canonical(product):
            # `from_dict` checks names, not values: a null title, an image without id or a
            # list for a SKU would be shipped in a form no other source could give.
            raise PlatformUnavailable(f"{path} is not a canonical product: wrong values")
        return product


def _canonical(product: Product) -> bool:
    """Whether the product survives its canonical round trip unchanged."""
    try:
        return Product.from_dict(product.to_dict()) == product
    except (ValueError, TypeError, KeyError, AttributeError):
        return False


def _json_names(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith(".")]


def _at_or_after(updated_at: str | None, since: datetime) -> bool:
    if not updated_at:
        return True
    try:
        return datetime.fromisoformat(updated_at.replace("Z", "+00:00")) >= since
    except ValueError:
        return True
