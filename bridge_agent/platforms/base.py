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

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

import httpx

from bridge_agent.model import Product

if TYPE_CHECKING:
    from bridge_agent.config import StoreSettings


@dataclass(frozen=True, slots=True)
class CatalogPage:
    """One page of the full catalog and the opaque token to resume after it (None: last page)."""

    products: Sequence[Product]
    next_token: str | None
    total: int | None = None  # products in the whole catalog, when the platform says


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
