"""The platform protocol, version 2: what the core asks of every store adapter, and what it may ask.

Adapters are structural (`typing.Protocol`): a third-party adapter, or a test fake, needs no base
class. Each built-in adapter lives in its own package with the same files (`settings.py`,
`client.py`, `adapter.py`, `__init__.py`), and is loaded through the `bridge_agent.platforms`
entry-point group like any third-party one (see `platforms/__init__.py`).

The core only ever asks for *truth*: products by id (after a hook or webhook hinted that they
changed), or the whole catalog page by page (import, reconciliation). Hints never carry the data
we ship, because hooks and webhooks are unordered, partial and sometimes wrong.

**Required** of every adapter: `check`, `fetch_product`, `catalog`, `aclose`.

**Settings**: an adapter declares its `[[stores]]` keys as `settings_spec` (a
`config.PlatformSpec`: options with types and defaults, required and optional secrets) on the
class its entry point loads; the config loader validates them through it, with the same messages
for every platform, and knows no platform by name. An adapter without one gets the generic plugin
rules. `from_settings` may also accept `budget` and `metrics` (`platforms/http.py`): the agent then
hands it the store's one request budget, so every request to the store goes through it.

**Capabilities** (Singer SDK's `PluginCapabilities` is the model): everything else is optional, and
an adapter says what it offers in `capabilities`. The core asks, never assumes: the agent starts a
modified-since poller only for `modified_since`, a reconciliation only for `product_ids`, routes
webhooks only for `webhooks`, registers them only for `webhook_registration`, fetches many ids per
request only for `batch_fetch`, and (next) writes only the fields an adapter declares. `status` and
`validate` show each store's capabilities. An adapter written for protocol v1 declares nothing: its
capabilities are inferred from the methods it has (`capabilities_of`), so it keeps working.

**Writer** (optional, for the downstream direction): read the current values of named fields for
many products (the conflict check of guarantee 5), and apply field writes, each with the value the
hub saw, returning one result per write: applied, conflict (the store's value differs from the one
the hub saw: nothing written), failed (with the HTTP status and message), or unsupported.

**Webhooks** are two steps: `verify_webhook` is pure (signature on the raw body, then parsing) and
runs before anything is recorded; `resolve_webhook` may do I/O (a Shopify inventory-item id must be
looked up to become a product id) and turns a verified delivery into product ids.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import httpx

from bridge_agent.errors import PlatformError, ProductNotFound
from bridge_agent.model import Product

if TYPE_CHECKING:
    from bridge_agent.config import StoreSettings

__all__ = [
    "READ_CAPABILITIES",
    "WRITE_CAPABILITIES",
    "Capability",
    "CatalogPage",
    "FetchResult",
    "FieldRef",
    "FieldWrite",
    "ItemFailure",
    "Platform",
    "WebhookAction",
    "WebhookDelivery",
    "WebhookRegistrar",
    "WriteField",
    "WriteResult",
    "Writer",
    "capabilities_of",
    "fetch_many",
]


class Capability(StrEnum):
    """What an adapter may offer beyond the required methods."""

    BULK_EXPORT = "bulk_export"  # the whole catalog as one bulk job (Shopify bulk operations)
    MODIFIED_SINCE = "modified_since"  # `modified_since()`: incremental polls
    PRODUCT_IDS = "product_ids"  # `product_ids()`: a cheap listing of ids (reconciliation)
    BATCH_FETCH = "batch_fetch"  # `fetch_products()` reads many ids per request
    WEBHOOKS = "webhooks"  # `verify_webhook()` and `resolve_webhook()`
    WEBHOOK_REGISTRATION = "webhook_registration"  # `register_webhooks()`, revive disabled ones
    SPOOL_HOOKS = "spool_hooks"  # a store-side plugin writes change hooks into the spool
    WRITE_SEO_TITLE = "write.seo_title"
    WRITE_SEO_DESCRIPTION = "write.seo_description"
    WRITE_DESCRIPTION = "write.description_html"
    WRITE_IMAGE_ALT = "write.image_alt"
    WRITE_JSONLD = "write.jsonld"


WRITE_CAPABILITIES: frozenset[Capability] = frozenset(
    c for c in Capability if c.value.startswith("write.")
)
READ_CAPABILITIES: frozenset[Capability] = frozenset(Capability) - WRITE_CAPABILITIES


class WriteField(StrEnum):
    """A field the downstream direction writes (the names of the hub's optimisation fields)."""

    SEO_TITLE = "seo_title"
    SEO_DESCRIPTION = "seo_description"
    DESCRIPTION = "description_html"
    IMAGE_ALT = "image_alt"
    JSONLD = "jsonld"

    @property
    def capability(self) -> Capability:
        return Capability(f"write.{self.value}")


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """A product that could not be read (the rest of its page or batch could)."""

    product_id: str
    message: str  # what the store answered, for the import report and the event log
    status: int | None = None  # the HTTP status, when there was one
    permanent: bool = False  # asking again will not help (a 4xx other than 408/409/429)


@dataclass(frozen=True, slots=True)
class CatalogPage:
    """One page of the full catalog and the opaque token to resume after it (None: last page)."""

    products: Sequence[Product]
    next_token: str | None
    total: int | None = None  # products in the whole catalog, when the platform says
    failures: Sequence[ItemFailure] = ()
    # When the store produced this data (epoch ms), if long before the page is read: a bulk
    # export's snapshot time. None: now. The mirror keeps a later observation over it.
    observed_at: int | None = None


@dataclass(frozen=True, slots=True)
class FetchResult:
    """What `fetch_products` found: each asked id is in exactly one of the three."""

    found: Mapping[str, Product] = field(default_factory=dict)
    missing: frozenset[str] = frozenset()  # the store says these do not exist (deleted)
    failed: Mapping[str, ItemFailure] = field(default_factory=dict)  # not read: ask again later


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One verified webhook delivery: a ping, or a hint that products changed.

    Like a spool file it is a hint: the agent re-fetches each product before recording it.
    `references` are the platform's own ids that still need `resolve_webhook` to become product
    ids (an inventory item, a variant); most deliveries name the product directly.
    """

    kind: Literal["ping", "product"]
    topic: str | None = None  # the platform's topic, e.g. "product.updated"
    product_ids: tuple[str, ...] = ()
    delivery_id: str | None = None  # the platform's id for this delivery, for logs and replays
    references: tuple[str, ...] = ()


WebhookActionKind = Literal[
    "created", "activated", "secret_updated", "unchanged", "paused", "duplicate", "deleted"
]


@dataclass(frozen=True, slots=True)
class WebhookAction:
    """What webhook registration did to one webhook, for the event log."""

    topic: str
    webhook_id: str
    action: WebhookActionKind


@dataclass(frozen=True, slots=True)
class FieldRef:
    """One field of one product; `image` names the image for `image_alt`."""

    product: str
    field: WriteField
    image: str | None = None


@dataclass(frozen=True, slots=True)
class FieldWrite:
    """Set `ref` to `value`, only if the store still holds `expected` (the value the hub saw)."""

    ref: FieldRef
    expected: Any
    value: Any


WriteOutcome = Literal["applied", "conflict", "failed", "unsupported"]


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What became of one `FieldWrite`."""

    ref: FieldRef
    outcome: WriteOutcome
    status: int | None = None  # the HTTP status of a failure, when there was one
    message: str | None = None  # why: the store's message, or what the conflict was
    current: Any = None  # conflict: the value the store holds instead of the expected one


class Platform(Protocol):
    """One e-commerce platform, bound to one configured store."""

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]

    @classmethod
    def from_settings(cls, settings: StoreSettings, http: httpx.AsyncClient) -> Platform:
        """Build the adapter; raise ConfigError listing every problem with the settings."""
        ...

    async def check(self) -> None:
        """A cheap authenticated call. Raises PlatformAuthFailed or PlatformUnavailable."""
        ...

    async def fetch_product(self, product_id: str) -> Product | None:
        """The product as the store has it now; None when it no longer exists."""
        ...

    async def fetch_products(self, ids: Sequence[str]) -> FetchResult:
        """Many products at once (`batch_fetch`: in as few requests as the platform allows).

        Raises PlatformError only when nothing could be read (the store is down); a product the
        store fails to serve alone goes to `failed`, one it does not have to `missing`.
        """
        ...

    def catalog(self, resume: str | None = None) -> AsyncIterator[CatalogPage]:
        """The whole catalog, page by page, starting after the `resume` token."""
        ...

    def modified_since(self, since: datetime) -> AsyncIterator[Sequence[Product]]:
        """`modified_since`: products modified at or after `since` (UTC, inclusive), by page.

        Inclusive on purpose: the poller's cursor is the boundary of the last window, and a
        product modified on that very second must be seen again rather than never.
        """
        ...

    def product_ids(self) -> AsyncIterator[Sequence[str]]:
        """`product_ids`: every product id the store has now (reconciliation, repair)."""
        ...

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        """`webhooks`: check the signature on the raw body and parse it. Raises BadWebhook.

        Pure: no I/O, no clock; it runs before anything is recorded or answered.
        """
        ...

    async def resolve_webhook(self, delivery: WebhookDelivery) -> tuple[str, ...]:
        """`webhooks`: the product ids a verified delivery is about (may do I/O)."""
        ...

    async def aclose(self) -> None:
        """Release what the adapter holds (tasks, caches). The agent closes the HTTP client it
        gave; an adapter that opened anything of its own closes it here."""
        ...


@runtime_checkable
class WebhookRegistrar(Protocol):
    """`webhook_registration`: register the agent's webhooks and revive disabled ones."""

    async def register_webhooks(self, delivery_url: str) -> Sequence[WebhookAction]: ...

    async def reactivate_disabled_webhooks(
        self, delivery_url: str | None = None
    ) -> Sequence[WebhookAction]: ...


@runtime_checkable
class Writer(Protocol):
    """The downstream direction of a platform (the `write.*` capabilities say which fields).

    `read_fields` answers the current value of each named field (None when the product does not
    exist or the field is empty; a product the store cannot serve raises PlatformError).
    `write_fields` returns exactly one result per write, in order; it writes a field only if the
    store's current value equals `expected` (guarantee 5: the merchant wins), batching products
    where the platform allows. A write is never blindly retried after an ambiguous failure: the
    caller reads again instead.
    """

    async def read_fields(self, refs: Sequence[FieldRef]) -> Mapping[FieldRef, Any]: ...

    async def write_fields(self, writes: Sequence[FieldWrite]) -> Sequence[WriteResult]: ...


_INFERRED: tuple[tuple[str, Capability], ...] = (
    ("modified_since", Capability.MODIFIED_SINCE),
    ("product_ids", Capability.PRODUCT_IDS),
    ("verify_webhook", Capability.WEBHOOKS),
    ("register_webhooks", Capability.WEBHOOK_REGISTRATION),
)


def capabilities_of(platform: object) -> frozenset[Capability]:
    """The capabilities an adapter (or its class) declares; for a v1 adapter that declares
    none, those its methods offer (never `batch_fetch` or a write: those must be declared)."""
    declared = getattr(platform, "capabilities", None)
    if declared is not None:
        return frozenset(Capability(c) for c in declared)
    return frozenset(cap for method, cap in _INFERRED if callable(getattr(platform, method, None)))


async def fetch_many(platform: Platform, ids: Sequence[str], *, concurrency: int) -> FetchResult:
    """`fetch_products` for an adapter with `batch_fetch`; otherwise one `fetch_product` per id,
    `concurrency` at a time. A failure of one id is that id's alone (`failed`)."""
    if not ids:
        return FetchResult()
    if Capability.BATCH_FETCH in capabilities_of(platform):
        return await platform.fetch_products(ids)
    return await fetch_each(platform, ids, concurrency=concurrency)


async def fetch_each(platform: Platform, ids: Sequence[str], *, concurrency: int) -> FetchResult:
    """`fetch_products` in terms of `fetch_product`, for adapters that read one id per request."""
    slots = asyncio.Semaphore(max(1, concurrency))

    async def one(product_id: str) -> Product | ItemFailure | None:
        async with slots:
            try:
                return await platform.fetch_product(product_id)
            except ProductNotFound:
                return None
            except PlatformError as exc:
                return failure_of(product_id, exc)

    answers = await asyncio.gather(*(one(i) for i in ids))
    return collect(zip(ids, answers, strict=True))


def collect(answers: Iterable[tuple[str, Product | ItemFailure | None]]) -> FetchResult:
    """A FetchResult from (id, product | None for missing | ItemFailure) pairs."""
    found: dict[str, Product] = {}
    missing: set[str] = set()
    failed: dict[str, ItemFailure] = {}
    for product_id, answer in answers:
        if isinstance(answer, ItemFailure):
            failed[product_id] = answer
        elif answer is None:
            missing.add(product_id)
        else:
            found[product_id] = answer
    return FetchResult(found, frozenset(missing), failed)


def failure_of(product_id: str, exc: PlatformError) -> ItemFailure:
    """An ItemFailure from a store error: its HTTP status and whether it is permanent are the
    error's attributes (set by the shared HTTP layer, `platforms/http.py`), never read back out
    of its message."""
    return ItemFailure(product_id, str(exc), exc.status, exc.permanent)
