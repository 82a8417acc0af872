"""The `shopify` adapter: the `Platform` protocol over the Admin GraphQL API (pinned 2026-07).

Reads (every document in `queries.py`, every request through `client.py`: the store's request
budget, its modelled cost bucket, Shopify's error shapes):

- `check()`: the `shop` query (name, currency, primary domain), whose answer is also kept for the
  mapping (`ShopInfo`: currency and the public URL of product pages), read once per adapter.
- `fetch_product(id)`: `product(id:)`; null (deleted, or never there) is None.
- `fetch_products(ids)` (`batch_fetch`): `nodes(ids:)` in chunks of `queries.products_per_query()`
  ids (16 by default: a chunk's cost stays under 1000 points, well below the 250 ids the argument
  takes); a null node is a missing product. A chunk Shopify cannot answer fails its ids only
  (`failed`); the call raises only when no chunk could be read, or the token is refused.
- Every product read with its first `VARIANTS_FIRST` variants and `MEDIA_FIRST` media is completed
  by follow-up queries while a connection has more pages (up to 2048 variants a product).
- `catalog(resume)`: with `bulk_import` (the default) by bulk operation: `bulkOperationRunQuery`
  with `queries.BULK_PRODUCTS`, polled by `node(id:)` with a growing interval, then the JSONL
  result streamed into a spool file and assembled (`bulk.py`: children attached to their product
  whatever their order, in bounded memory) and yielded as pages of `BULK_PAGE` products. Tokens:
  `bulk:<operation number>:<products done>`; an empty page carrying `bulk:<n>:0` is yielded as
  soon as the operation has started (and again once it completed), so the run checkpoints it and a
  crash before the first page of products resumes it instead of starting another. A resumed run
  asks for that operation again (a fresh result URL); if it is still COMPLETED its result is
  downloaded again and the products done are skipped; if it failed, expired or is gone a new
  operation starts (the products done are then read again: harmless). A bulk operation that FAILS
  (or cannot start: another one runs) falls back to paged queries; one still running after
  `BULK_WAIT_MAX` seconds of polling is given up on: a new one starts once, then paged queries.
  A result cut short, damaged, or short of the operation's `objectCount` lines (`fileSize` bytes,
  `rootObjectCount` products) is downloaded again (`DOWNLOAD_ATTEMPTS`), each try within a
  deadline scaled to its size; a result URL that expired meanwhile starts a new operation.
  Without `bulk_import`: `products(first:, after:, sortKey: ID)` pages; tokens `page:<cursor>`;
  a resumed walk whose cursor Shopify refuses starts again from the first page.
- `modified_since(since)`: `products(query: "updated_at:>='<since>'", sortKey: UPDATED_AT)`
  pages (inclusive, second resolution, as the protocol asks). Inventory changes do not bump a
  product's `updatedAt`: the `inventory_levels/update` webhook covers them.
- `product_ids()`: `products(first: 250) { nodes { id } }` pages (253 points each).

Every query is sized to the shop's cost bucket once an answer has reported it
(`queries.sized`): a follow-up or id page asks for fewer nodes when the bucket is smaller than
its usual cost (Shopify would answer it THROTTLED for ever otherwise).

Webhooks (`webhooks.py`): `verify_webhook` is pure; `resolve_webhook` turns inventory item ids
into product ids (`nodes(ids:) { ... on InventoryItem { variant { product { id } } } }`, 3 points
an item), always as live work: the receiver answers 503 if it waits behind a run's pages.
`register_webhooks` subscribes the four topics to the delivery URL once each (an existing
subscription is kept, a duplicate of it deleted); Shopify deletes a subscription whose deliveries
keep failing instead of disabling it, so `reactivate_disabled_webhooks` re-creates the missing ones.

Capabilities: `bulk_export`, `modified_since`, `product_ids`, `batch_fetch`, `webhooks`,
`webhook_registration`, and every `write.*` field: the downstream `Writer` (`read_fields`,
`write_fields`) is `writer.py` (SEO and description by `productUpdate`, ALT by `fileUpdate`, the
JSON-LD metafield by `metafieldsSet` with `compareDigest`).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
import structlog

from bridge_agent.errors import (
    BadWebhook,
    ConfigError,
    Outcome,
    PlatformAuthFailed,
    PlatformError,
    PlatformRejected,
    PlatformUnavailable,
)
from bridge_agent.metrics import Metrics
from bridge_agent.model import Product
from bridge_agent.platforms.base import (
    WRITE_CAPABILITIES,
    Capability,
    CatalogPage,
    FetchResult,
    FieldRef,
    FieldWrite,
    ItemFailure,
    WebhookAction,
    WebhookDelivery,
    WriteResult,
    failure_of,
)
from bridge_agent.platforms.http import PrioritySlots, RequestBudget, live_work
from bridge_agent.platforms.shopify import queries, webhooks
from bridge_agent.platforms.shopify.bulk import BulkResultIncomplete, BulkSpool
from bridge_agent.platforms.shopify.client import BulkResultExpired, ShopifyClient
from bridge_agent.platforms.shopify.mapping import (
    ShopifyPayloadError,
    ShopInfo,
    gid,
    gid_number,
    map_product,
)
from bridge_agent.platforms.shopify.settings import SETTINGS, ShopifySettings
from bridge_agent.platforms.shopify.writer import ShopifyWriter
from bridge_agent.sync.paging import PageGuard

if TYPE_CHECKING:
    from bridge_agent.config import PlatformSpec, StoreSettings

__all__ = ["BULK_PAGE", "Shopify"]

log = structlog.get_logger("bridge_agent.shopify")

BULK_PAGE = 100  # products per CatalogPage of a bulk result
MAX_VARIANTS = 2048  # Shopify's limit per product: a follow-up walk never goes further
MAX_MEDIA = 250
DOWNLOAD_ATTEMPTS = 3
POLL_FIRST = 0.5  # seconds before the first poll of a bulk operation, growing by POLL_GROWTH
POLL_GROWTH = 1.5
POLL_MAX = 10.0
BULK_WAIT_MAX = 3 * 3600.0  # seconds of polling before a bulk operation is given up as stuck
DOWNLOAD_BASE_S = 60.0  # the deadline of one download of a bulk result: this, plus
DOWNLOAD_BYTES_PER_S = 1024 * 1024  # its size at this rate (a slower link is given up on)
DOWNLOAD_UNSIZED_S = 3600.0  # the deadline when the operation does not say the file's size
_STALLED = "STALLED"  # not Shopify's: our status of an operation polled past BULK_WAIT_MAX
_FINAL = frozenset({"COMPLETED", "FAILED", "CANCELED", "EXPIRED"})
_NESTED = {"variants": queries.VARIANTS_FIRST, "media": queries.MEDIA_FIRST}
_BULK_TOKEN = "bulk:"  # noqa: S105 - a resume token's prefix, no secret
_PAGE_TOKEN = "page:"  # noqa: S105


@dataclass(frozen=True, slots=True)
class BulkOperation:
    """What `node(id:) { ... on BulkOperation }` says of one operation."""

    id: str
    status: str
    error_code: str | None = None
    url: str | None = None
    root_objects: int | None = None
    objects: int | None = None  # lines of the result file (products and their children)
    file_size: int | None = None  # bytes of the result file
    # When the operation was created (epoch ms): its result is a snapshot of the shop then,
    # however much later it is read (a resumed run may read a days-old one).
    created_at: int | None = None

    @classmethod
    def parse(cls, node: Any) -> BulkOperation | None:
        if not isinstance(node, Mapping) or not isinstance(node.get("id"), str):
            return None
        url = node.get("url")
        code = node.get("errorCode")
        return cls(
            id=node["id"],
            status=str(node.get("status")),
            error_code=code if isinstance(code, str) else None,
            url=url if isinstance(url, str) and url else None,
            root_objects=_count(node.get("rootObjectCount")),
            objects=_count(node.get("objectCount")),
            file_size=_count(node.get("fileSize")),
            created_at=_epoch_ms(node.get("createdAt")),
        )


class Shopify:
    """One Shopify shop, read through the Admin GraphQL API."""

    name: ClassVar[str] = "shopify"
    settings_spec: ClassVar[PlatformSpec] = SETTINGS
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.BULK_EXPORT,
            Capability.MODIFIED_SINCE,
            Capability.PRODUCT_IDS,
            Capability.BATCH_FETCH,
            Capability.WEBHOOKS,
            Capability.WEBHOOK_REGISTRATION,
            *WRITE_CAPABILITIES,  # every downstream field: writer.py
        }
    )

    def __init__(
        self,
        settings: ShopifySettings,
        client: ShopifyClient,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        spool_dir: str | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        #: Warnings from mapping (e.g. "no image"), counted since start, for the import report.
        self.mapping_warnings: Counter[str] = Counter()
        self._slots = PrioritySlots(settings.concurrency)
        self._sleep = sleep
        self._spool_dir = spool_dir
        self.bulk_page = BULK_PAGE  # products per CatalogPage of a bulk result
        self._shop: ShopInfo | None = None
        self._shop_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Shopify({self.settings.store_id!r}, {self.settings.base_url!r})"

    @classmethod
    def from_settings(
        cls,
        settings: StoreSettings,
        http: httpx.AsyncClient,
        *,
        budget: RequestBudget | None = None,
        metrics: Metrics | None = None,
    ) -> Shopify:
        """The adapter for one shop; `budget` is the store's request budget (a private one
        when not given), `metrics` receives the store request metrics."""
        shop = ShopifySettings.from_store(settings)
        return cls(shop, ShopifyClient(shop, http, budget=budget, metrics=metrics))

    # -- Writer (writer.py) -----------------------------------------------------------------------

    async def read_fields(self, refs: Sequence[FieldRef]) -> Mapping[FieldRef, Any]:
        return await ShopifyWriter(self.settings, self.client, self._slots).read_fields(refs)

    async def write_fields(self, writes: Sequence[FieldWrite]) -> Sequence[WriteResult]:
        return await ShopifyWriter(self.settings, self.client, self._slots).write_fields(writes)

    # -- Platform ---------------------------------------------------------------------------------

    async def check(self) -> None:
        data = await self.client.query(queries.SHOP)
        self._shop = _shop_info(data)

    async def shop(self) -> ShopInfo:
        """The shop's currency and public URL, read once (the first product read asks)."""
        if self._shop is not None:
            return self._shop
        async with self._shop_lock:
            if self._shop is None:
                # Live: a webhook's fetch may wait on this lock behind a sweep otherwise.
                with live_work():
                    self._shop = _shop_info(await self.client.query(queries.SHOP))
            return self._shop

    async def fetch_product(self, product_id: str) -> Product | None:
        if not _digits(product_id):
            return None
        async with self._slots:
            data = await self.client.query(
                queries.PRODUCT, {"id": gid("Product", product_id), **_NESTED}
            )
        node = data.get("product")
        if not isinstance(node, Mapping):
            return None
        products = await self._map_nodes([node])
        return products[0] if products else None

    async def fetch_products(self, ids: Sequence[str]) -> FetchResult:
        wanted = list(dict.fromkeys(i for i in ids if _digits(i)))
        found: dict[str, Product] = {}
        failed: dict[str, ItemFailure] = {}
        size = self._per_query()
        chunks = [wanted[n : n + size] for n in range(0, len(wanted), size)]
        errors: list[PlatformError] = []

        async def chunk(part: list[str]) -> None:
            try:
                async with self._slots:
                    data = await self.client.query(
                        queries.NODES, {"ids": [gid("Product", i) for i in part], **_NESTED}
                    )
            except PlatformAuthFailed:
                raise
            except PlatformError as exc:
                errors.append(exc)
                failed.update((i, failure_of(i, exc)) for i in part)
                return
            nodes = data.get("nodes")
            if not isinstance(nodes, list) or len(nodes) != len(part):
                broken = PlatformUnavailable("invalid JSON from Shopify: nodes(ids:) out of step")
                errors.append(broken)
                failed.update((i, failure_of(i, broken)) for i in part)
                return
            present = [n for n in nodes if isinstance(n, Mapping) and n.get("id")]
            failures: list[ItemFailure] = []
            for product in await self._map_nodes(present, failures):
                found[product.id] = product
            failed.update((f.product_id, f) for f in failures)

        try:
            async with asyncio.TaskGroup() as group:
                for part in chunks:
                    group.create_task(chunk(part))
        except BaseExceptionGroup as group_error:  # a refused token: the rest were cancelled
            error: BaseException = group_error
            while isinstance(error, BaseExceptionGroup):
                error = error.exceptions[0]
            raise error from None
        if chunks and len(errors) == len(chunks):
            raise errors[0]
        missing = frozenset(i for i in ids if i not in found and i not in failed)
        return FetchResult(found, missing, failed)

    async def catalog(self, resume: str | None = None) -> AsyncIterator[CatalogPage]:
        kind, value = self._token(resume)
        if kind == "page" or (kind is None and not self.settings.bulk_import):
            async for page in self._paged_catalog(value if kind == "page" else None):
                yield page
            return
        operation, skip = (None, 0)
        if kind == "bulk":
            number, _, done = value.partition(":")
            operation, skip = gid("BulkOperation", number), int(done)
        async for page in self._bulk_catalog(operation, skip):
            yield page

    async def modified_since(self, since: datetime) -> AsyncIterator[Sequence[Product]]:
        when = since.astimezone(UTC) if since.tzinfo else since.replace(tzinfo=UTC)
        search = f"updated_at:>='{when.strftime('%Y-%m-%dT%H:%M:%SZ')}'"
        walk = PageGuard(f"the modified products of store {self.settings.store_id!r}")
        first = min(self.settings.page_size, self._per_query())
        cursor: str | None = None
        while True:
            async with self._slots:
                data = await self.client.query(
                    queries.MODIFIED_PRODUCTS,
                    {"first": first, "after": cursor, "query": search, **_NESTED},
                )
            nodes, cursor = _connection(data.get("products"), walk)
            products = await self._map_nodes(nodes)
            if products:
                yield products
            if cursor is None:
                return

    async def product_ids(self) -> AsyncIterator[Sequence[str]]:
        walk = PageGuard(f"the product ids of store {self.settings.store_id!r}")
        cursor: str | None = None
        while True:
            first = queries.sized(
                queries.PRODUCT_IDS, "first", queries.PRODUCT_IDS_FIRST, bucket=self._bucket()
            )
            async with self._slots:
                data = await self.client.query(
                    queries.PRODUCT_IDS, {"first": first, "after": cursor}
                )
            nodes, cursor = _connection(data.get("products"), walk)
            ids = [n for n in (gid_number(node.get("id"), "Product") for node in nodes) if n]
            if ids:
                yield ids
            if cursor is None:
                return

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        secret = self.settings.webhook_secret
        if secret is None:
            raise BadWebhook("no webhook_secret configured for this store", status=401)
        return webhooks.verify(
            headers, body, secret.reveal(), shop_domain=self.settings.shop_domain
        )

    async def resolve_webhook(self, delivery: WebhookDelivery) -> tuple[str, ...]:
        """The delivery's products, and those of its inventory items (asked of the store)."""
        ids = list(delivery.product_ids)
        items = [r for r in delivery.references if _digits(r)]
        size = queries.sized(queries.INVENTORY_ITEMS, "ids", 100, bucket=self._bucket(), ids=True)
        for n in range(0, len(items), size):
            part = items[n : n + size]
            # Live: the delivery is answered 503 if this waits behind a run's pages (RESOLVE_
            # TIMEOUT of sources/webhooks.py), whoever calls it.
            with live_work():
                data = await self.client.query(
                    queries.INVENTORY_ITEMS, {"ids": [gid("InventoryItem", i) for i in part]}
                )
            for node in data.get("nodes") or ():
                variant = node.get("variant") if isinstance(node, Mapping) else None
                product = variant.get("product") if isinstance(variant, Mapping) else None
                number = gid_number(product.get("id") if isinstance(product, Mapping) else None)
                if number is not None:
                    ids.append(number)
        return tuple(dict.fromkeys(ids))

    async def aclose(self) -> None:
        """Nothing of its own to release: the agent closes the HTTP client it gave."""
        self._shop = None

    # -- webhook subscriptions --------------------------------------------------------------------

    async def register_webhooks(self, delivery_url: str) -> list[WebhookAction]:
        """Subscribe each topic to `delivery_url` exactly once: missing subscriptions are
        created, an existing one kept, duplicates of it (same topic and address) deleted."""
        _check_delivery_url(delivery_url)
        if self.settings.webhook_secret is None:
            raise ConfigError(
                [f"[[stores]] {self.settings.store_id!r}: webhooks need a webhook_secret"]
            )
        existing = await self._subscriptions()
        actions: list[WebhookAction] = []
        for topic, enum in webhooks.TOPICS.items():
            same = [s for s in existing if s["topic"] == enum and _same_url(s["uri"], delivery_url)]
            if not same:
                actions.append(await self._subscribe(topic, enum, delivery_url))
                continue
            kept, *duplicates = same
            actions.append(WebhookAction(topic, _short(kept["id"]), "unchanged"))
            for duplicate in duplicates:
                await self._unsubscribe(duplicate["id"])
                actions.append(WebhookAction(topic, _short(duplicate["id"]), "deleted"))
        log.info(
            "shopify_webhooks_registered",
            store=self.settings.store_id,
            actions=[f"{a.topic}:{a.action}" for a in actions],
        )
        return actions

    async def reactivate_disabled_webhooks(
        self, delivery_url: str | None = None
    ) -> list[WebhookAction]:
        """Shopify deletes (rather than disables) a subscription whose deliveries failed 8 times
        in a row: create again the ones missing for `delivery_url` (else `webhook_url`)."""
        url = delivery_url or self.settings.webhook_url
        if url is None:
            return []
        existing = await self._subscriptions()
        actions: list[WebhookAction] = []
        for topic, enum in webhooks.TOPICS.items():
            if not any(s["topic"] == enum and _same_url(s["uri"], url) for s in existing):
                actions.append(await self._subscribe(topic, enum, url))
        if actions:
            log.warning(
                "shopify_webhooks_recreated",
                store=self.settings.store_id,
                topics=[a.topic for a in actions],
            )
        return actions

    async def _subscriptions(self) -> list[dict[str, str]]:
        found: list[dict[str, str]] = []
        walk = PageGuard(f"the webhook subscriptions of store {self.settings.store_id!r}")
        cursor: str | None = None
        while True:
            data = await self.client.query(
                queries.WEBHOOK_SUBSCRIPTIONS,
                {"topics": list(webhooks.TOPICS.values()), "after": cursor},
            )
            nodes, cursor = _connection(data.get("webhookSubscriptions"), walk)
            found.extend(
                {"id": str(n["id"]), "topic": str(n.get("topic")), "uri": str(n.get("uri"))}
                for n in nodes
                if n.get("id")
            )
            if cursor is None:
                return found

    async def _subscribe(self, topic: str, enum: str, url: str) -> WebhookAction:
        data = await self.client.mutate(
            queries.WEBHOOK_CREATE, {"topic": enum, "sub": {"uri": url, "format": "JSON"}}
        )
        payload = data.get("webhookSubscriptionCreate") or {}
        _raise_user_errors(payload, f"subscribing {topic}")
        created = payload.get("webhookSubscription") or {}
        return WebhookAction(topic, _short(str(created.get("id", ""))), "created")

    async def _unsubscribe(self, subscription_id: str) -> None:
        data = await self.client.mutate(queries.WEBHOOK_DELETE, {"id": subscription_id})
        _raise_user_errors(data.get("webhookSubscriptionDelete") or {}, "deleting a duplicate")

    # -- catalog by bulk operation ----------------------------------------------------------------

    async def _bulk_catalog(self, operation: str | None, skip: int) -> AsyncIterator[CatalogPage]:
        expired = stalled = 0
        while True:
            done: BulkOperation | None = None
            if operation is not None:
                done = await self._wait(operation)
                if done is None or done.status != "COMPLETED":
                    log.info(
                        "shopify_bulk_restarted",
                        store=self.settings.store_id,
                        operation=operation,
                        status=done.status if done else "gone",
                    )
                    stalled += done is not None and done.status == _STALLED
                    done, skip = None, 0
            if done is None:
                started = await self._start_bulk()
                if started is not None:
                    # Named at once: the run checkpoints it, so a crash before the first page
                    # of products resumes this operation instead of starting another.
                    yield CatalogPage((), self._bulk_token(started, 0))
                done = await self._wait(started) if started is not None else None
                if done is not None and done.status == _STALLED and stalled == 0:
                    stalled += 1
                    operation, skip = None, 0
                    log.warning(
                        "shopify_bulk_stalled",
                        store=self.settings.store_id,
                        operation=started,
                        action="starting a new bulk operation",
                    )
                    continue
                if done is None or done.status != "COMPLETED":
                    log.warning(
                        "shopify_bulk_fallback",
                        store=self.settings.store_id,
                        status=done.status if done else "not started",
                        error_code=done.error_code if done else None,
                        reason="the bulk operation did not complete: reading by paged queries",
                    )
                    async for page in self._paged_catalog(None):
                        yield page
                    return
                yield CatalogPage((), self._bulk_token(done.id, 0))  # completed: checkpointed
            if done.url is None:
                yield CatalogPage((), None, total=0)  # an empty shop has no result file
                return
            try:
                spool = await self._download(done)
            except BulkResultExpired:
                expired += 1
                if expired >= 2:
                    raise PlatformUnavailable(
                        "the bulk operation's result expired twice before it could be downloaded"
                    ) from None
                operation, skip = None, 0
                continue
            with spool:
                async for page in self._bulk_pages(spool, done, skip):
                    yield page
            return

    @staticmethod
    def _bulk_token(operation: str, done: int) -> str:
        return f"{_BULK_TOKEN}{gid_number(operation, 'BulkOperation') or '0'}:{done}"

    async def _bulk_pages(
        self, spool: BulkSpool, operation: BulkOperation, skip: int
    ) -> AsyncIterator[CatalogPage]:
        number = gid_number(operation.id, "BulkOperation") or "0"
        total = spool.products_count
        if skip >= total:
            yield CatalogPage((), None, total=total)  # an empty shop, or every product done
            return
        shop = await self.shop()
        batch: list[Product] = []
        position, read = skip, 0
        for node in spool.products(skip):
            position += 1
            read += 1
            product = self._map_one(node, shop)
            if product is not None:
                batch.append(product)
            if read == self.bulk_page or position == total:
                token = None if position >= total else f"{_BULK_TOKEN}{number}:{position}"
                # The snapshot's time: the mirror keeps a later read (a webhook's, of a stock
                # change that bumped no `updatedAt`) over these rows (store/mirror.py).
                yield CatalogPage(
                    tuple(batch), token, total=total, observed_at=operation.created_at
                )
                batch, read = [], 0

    async def _start_bulk(self) -> str | None:
        data = await self.client.mutate(queries.BULK_RUN, {"query": queries.BULK_PRODUCTS})
        payload = data.get("bulkOperationRunQuery") or {}
        errors = payload.get("userErrors") or []
        operation = payload.get("bulkOperation") or {}
        if errors or not operation.get("id"):
            log.warning(
                "shopify_bulk_not_started",
                store=self.settings.store_id,
                errors=[str(e.get("message"))[:200] for e in errors if isinstance(e, Mapping)],
            )
            return None
        log.info("shopify_bulk_started", store=self.settings.store_id, operation=operation["id"])
        return str(operation["id"])

    async def _wait(self, operation: str) -> BulkOperation | None:
        """Poll the operation until it ends; None when Shopify does not know it. An operation
        still running after `BULK_WAIT_MAX` seconds of polling is given up on: status
        `_STALLED` (Shopify keeps some queued or running for days)."""
        delay = POLL_FIRST
        slept = 0.0
        while True:
            data = await self.client.query(queries.BULK_OPERATION, {"id": operation})
            state = BulkOperation.parse(data.get("node"))
            if state is None or state.status in _FINAL:
                return state
            if slept >= BULK_WAIT_MAX:
                log.warning(
                    "shopify_bulk_given_up",
                    store=self.settings.store_id,
                    operation=operation,
                    status=state.status,
                    waited_s=round(slept),
                )
                return BulkOperation(state.id, _STALLED)
            await self._sleep(delay)
            slept += delay
            delay = min(POLL_MAX, delay * POLL_GROWTH)

    async def _download(self, operation: BulkOperation) -> BulkSpool:
        """The result, spooled and indexed; downloaded again when cut short or damaged, and with
        a fresh URL (asked of the operation again) when the one we had no longer serves it."""
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            spool = BulkSpool(self._spool_dir)
            try:
                await self._fill(spool, operation)
                return spool
            except BulkResultExpired:
                spool.close()
                if refreshed:
                    raise
                refreshed = True
                again = await self._wait(operation.id)
                if again is None or again.status != "COMPLETED" or again.url is None:
                    raise
                operation = again
            except PlatformUnavailable as exc:
                spool.close()
                if attempt >= DOWNLOAD_ATTEMPTS:
                    raise
                log.info(
                    "shopify_bulk_download_retry",
                    store=self.settings.store_id,
                    attempt=attempt,
                    reason=str(exc),
                )
                await self._sleep(min(POLL_MAX, POLL_FIRST * 2**attempt))
            except BaseException:
                spool.close()
                raise

    async def _fill(self, spool: BulkSpool, operation: BulkOperation) -> None:
        """Download the operation's result into `spool`; raise if it is not all there. The
        download has a deadline scaled to the file's size: storage that trickles is given up
        on (and downloaded again) rather than holding the run for ever."""
        if operation.url is None:
            raise BulkResultExpired("the bulk operation has no result URL any more")
        size = operation.file_size
        deadline = (
            DOWNLOAD_UNSIZED_S if size is None else DOWNLOAD_BASE_S + size / DOWNLOAD_BYTES_PER_S
        )
        received = 0
        try:
            async with asyncio.timeout(deadline):
                async for line, ended in self.client.download_lines(operation.url):
                    received += len(line) + ended
                    spool.add(line, ended=ended)
        except TimeoutError:
            raise PlatformUnavailable(
                f"the download of the bulk operation's result file took longer than "
                f"{deadline:.0f} s ({received} bytes received)",
                outcome=Outcome.TRANSIENT,
            ) from None
        spool.finish()
        cut = "the download was cut short"
        if operation.root_objects is not None and spool.products_count < operation.root_objects:
            raise BulkResultIncomplete(
                f"the bulk result holds {spool.products_count} products, the operation says "
                f"{operation.root_objects}: {cut}"
            )
        if operation.objects is not None and spool.lines < operation.objects:
            raise BulkResultIncomplete(
                f"the bulk result holds {spool.lines} lines, the operation says "
                f"{operation.objects}: {cut}"
            )
        if size is not None and received < size:
            raise BulkResultIncomplete(
                f"the bulk result holds {received} bytes, the operation says {size}: {cut}"
            )
        if operation.objects is not None and spool.lines > operation.objects:
            # More lines than objects: repeated lines (each is read once: bulk.py), not a loss.
            log.warning(
                "shopify_bulk_extra_lines",
                store=self.settings.store_id,
                lines=spool.lines,
                objects=operation.objects,
            )

    # -- catalog by paged queries -----------------------------------------------------------------

    async def _paged_catalog(self, cursor: str | None) -> AsyncIterator[CatalogPage]:
        walk = PageGuard(f"the catalog of store {self.settings.store_id!r}")
        first = min(self.settings.page_size, self._per_query())
        resumed = cursor is not None
        while True:
            try:
                async with self._slots:
                    data = await self.client.query(
                        queries.PRODUCTS_PAGE, {"first": first, "after": cursor, **_NESTED}
                    )
            except PlatformRejected as exc:
                if not resumed:
                    raise
                # Shopify refused the cursor of the checkpoint (another shop's, expired, or not
                # a cursor): resuming there would fail the run at every try. Read from the start.
                log.warning(
                    "shopify_resume_cursor_refused",
                    store=self.settings.store_id,
                    reason=str(exc)[:200],
                    action="reading the catalog from its start",
                )
                resumed, cursor = False, None
                continue
            resumed = False
            nodes, cursor = _connection(data.get("products"), walk)
            failures: list[ItemFailure] = []
            products = await self._map_nodes(nodes, failures)
            token = f"{_PAGE_TOKEN}{cursor}" if cursor is not None else None
            yield CatalogPage(tuple(products), token, failures=tuple(failures))
            if cursor is None:
                return

    # -- products ---------------------------------------------------------------------------------

    async def _map_nodes(
        self, nodes: Iterable[Mapping[str, Any]], failures: list[ItemFailure] | None = None
    ) -> list[Product]:
        """Complete each product's connections, then map it. With `failures` (a listing), a
        product whose follow-up queries fail is reported there and the rest go on."""
        shop = await self.shop()
        products: list[Product] = []
        for node in nodes:
            try:
                complete = await self._complete(node)
            except PlatformError as exc:
                if failures is None or isinstance(exc, PlatformAuthFailed):
                    raise
                number = gid_number(node.get("id")) or str(node.get("id"))[:40]
                failures.append(failure_of(number, exc))
                continue
            if complete is None:
                continue  # deleted while it was read
            product = self._map_one(complete, shop)
            if product is not None:
                products.append(product)
        return products

    def _map_one(self, node: Mapping[str, Any], shop: ShopInfo) -> Product | None:
        try:
            product, warnings = map_product(node, shop=shop, images_max=self.settings.images_max)
        except ShopifyPayloadError as exc:
            self.mapping_warnings["not a product"] += 1
            log.warning("shopify_payload_skipped", store=self.settings.store_id, reason=str(exc))
            return None
        for warning in warnings:
            self.mapping_warnings[warning] += 1
        return product

    async def _complete(self, node: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """The node with every variant and media (follow-up queries for more pages)."""
        out = dict(node)
        for name, document, limit in (
            ("variants", queries.PRODUCT_VARIANTS, MAX_VARIANTS),
            ("media", queries.PRODUCT_MEDIA, MAX_MEDIA),
        ):
            connection = node.get(name)
            if not isinstance(connection, Mapping):
                continue
            info = connection.get("pageInfo") or {}
            if not info.get("hasNextPage"):
                continue
            items = list(connection.get("nodes") or ())
            cursor = info.get("endCursor")
            walk = PageGuard(f"the {name} of product {node.get('id')}")
            while isinstance(cursor, str) and len(items) < limit:
                walk.token(cursor)
                first = queries.sized(document, "first", queries.PAGE_FIRST, bucket=self._bucket())
                async with self._slots:
                    data = await self.client.query(
                        document, {"id": node["id"], "first": first, "after": cursor}
                    )
                product = data.get("product")
                if not isinstance(product, Mapping):
                    return None
                more, cursor = _connection(product.get(name), None)
                items.extend(more)
            out[name] = {"nodes": items[:limit]}
        return out

    def _per_query(self) -> int:
        """Products per paged or `nodes` query: within the single-query maximum and within the
        shop's bucket, once an answer has reported its size."""
        return queries.products_per_query(bucket=self._bucket())

    def _bucket(self) -> float | None:
        """The size of the shop's query cost bucket, once an answer has reported it."""
        status = self.client.bucket.status
        return None if status is None else status.maximum

    def _token(self, resume: str | None) -> tuple[str | None, str]:
        if resume is None:
            return None, ""
        if resume.startswith(_PAGE_TOKEN) and len(resume) > len(_PAGE_TOKEN):
            return "page", resume[len(_PAGE_TOKEN) :]
        if resume.startswith(_BULK_TOKEN):
            number, _, done = resume[len(_BULK_TOKEN) :].partition(":")
            if number.isdigit() and done.isdigit():
                return "bulk", f"{number}:{done}"
        log.warning("shopify_resume_token_ignored", store=self.settings.store_id, token=resume[:40])
        return None, ""


# -- helpers ---------------------------------------------------------------------------------------


def _epoch_ms(value: Any) -> int | None:
    """An ISO 8601 time from Shopify as epoch milliseconds; None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int(when.timestamp() * 1000) if when.tzinfo is not None else None


def _shop_info(data: Mapping[str, Any]) -> ShopInfo:
    shop = data.get("shop")
    if not isinstance(shop, Mapping):
        raise PlatformUnavailable("invalid JSON from Shopify: the shop query answered no shop")
    domain = shop.get("primaryDomain")
    url = domain.get("url") if isinstance(domain, Mapping) else None
    currency = shop.get("currencyCode")
    return ShopInfo(
        currency=currency if isinstance(currency, str) else None,
        public_url=url.rstrip("/") if isinstance(url, str) and url else None,
    )


def _connection(
    connection: Any, walk: PageGuard | None
) -> tuple[list[Mapping[str, Any]], str | None]:
    """(nodes, the cursor of the next page or None) of one connection page."""
    if not isinstance(connection, Mapping):
        raise PlatformUnavailable("invalid JSON from Shopify: a connection without nodes")
    nodes = [n for n in connection.get("nodes") or () if isinstance(n, Mapping)]
    info = connection.get("pageInfo") or {}
    cursor = info.get("endCursor") if info.get("hasNextPage") else None
    if cursor is not None and not isinstance(cursor, str):
        raise PlatformUnavailable("invalid JSON from Shopify: a cursor that is not a string")
    if walk is not None:
        walk.page((str(n.get("id")) for n in nodes), f"the page after {str(cursor)[:20]}")
        if cursor is not None:
            walk.token(cursor)
    return nodes, cursor


def _raise_user_errors(payload: Mapping[str, Any], what: str) -> None:
    errors = payload.get("userErrors") or []
    messages = [str(e.get("message"))[:200] for e in errors if isinstance(e, Mapping)]
    if messages:
        raise PlatformRejected(f"Shopify refused {what}: {'; '.join(messages)}")


def _check_delivery_url(url: str) -> None:
    if not url.startswith(("https://", "http://")):
        raise ConfigError([f"webhook delivery URL must be https://, got {url!r}"])


def _count(value: Any) -> int | None:
    """A count of a bulk operation (Shopify sends the UnsignedInt64 ones as strings)."""
    try:
        number = int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and number >= 0 else None


def _digits(product_id: str) -> bool:
    """Whether an id could be Shopify's: a positive decimal of ASCII digits (64 bits)."""
    return product_id.isascii() and product_id.isdigit() and 0 < int(product_id) < 2**63


def _short(subscription_id: str) -> str:
    return gid_number(subscription_id) or subscription_id


def _same_url(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")
