"""The platform protocol: what the core asks of every store adapter.

Adapters are structural (`typing.Protocol`): a third-party adapter, or a test fake, needs no base
class. Each built-in adapter lives in its own package with the same files (`settings.py`,
`client.py`, `adapter.py`, `__init__.py`), and is loaded through the `bridge_agent.platforms`
entry-point group like any third-party one (see `platforms/__init__.py`).

The core only ever asks for *truth*: a product by id (after a hook or webhook hinted that it
changed), or the whole catalog page by page (import, reconciliation). Hints never carry the data
we ship, because hooks and webhooks are unordered, partial and sometimes wrong.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import httpx

from bridge_agent.model import Product

if TYPE_CHECKING:
    from bridge_agent.config import StoreSettings


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """A product listed on a page that could not be read (the rest of the page could)."""

    product_id: str
    message: str  # what the store answered, for the import report
    status: int | None = None  # the HTTP status, when there was one


@dataclass(frozen=True, slots=True)
class CatalogPage:
    """One page of the full catalog and the opaque token to resume after it (None: last page)."""

    products: Sequence[Product]
    next_token: str | None
    total: int | None = None  # products in the whole catalog, when the platform says
    failures: Sequence[ItemFailure] = ()


@dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """One verified webhook delivery: a ping, or a hint that products changed.

    Like a spool file it is a hint: the agent re-fetches each product before recording it.
    """

    kind: Literal["ping", "product"]
    topic: str | None = None  # the platform's topic, e.g. "product.updated"
    product_ids: tuple[str, ...] = ()
    delivery_id: str | None = None  # the platform's id for this delivery, for logs and replays


class Platform(Protocol):
    """One e-commerce platform, bound to one configured store."""

    name: ClassVar[str]

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

    def catalog(self, resume: str | None = None) -> AsyncIterator[CatalogPage]:
        """The whole catalog, page by page, starting after the `resume` token."""
        ...

    def modified_since(self, since: datetime) -> AsyncIterator[Sequence[Product]]:
        """Products modified at or after `since` (UTC, inclusive), page by page.

        Inclusive on purpose: the poller's cursor is the boundary of the last window, and a
        product modified on that very second must be seen again rather than never.
        """
        ...

    def product_ids(self) -> AsyncIterator[Sequence[str]]:
        """Every product id the store has now (reconciliation finds deletions with it)."""
        ...

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        """Check the signature on the raw body and parse it. Raises BadWebhook. Pure."""
        ...


@runtime_checkable
class WebhookRegistrar(Protocol):
    """Optional: a platform that can register the agent's webhooks and revive disabled ones.

    Each call returns what it did, one object per webhook with `topic`, `webhook_id` and `action`
    (`created`, `activated`, `unchanged`, ...), for the event log.
    """

    async def register_webhooks(self, delivery_url: str) -> Sequence[Any]: ...

    async def reactivate_disabled_webhooks(
        self, delivery_url: str | None = None
    ) -> Sequence[Any]: ...
