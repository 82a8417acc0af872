"""The `woocommerce` adapter: the `Platform` protocol over the wc/v3 REST API.

Reads (all with `status=any`, which WordPress defines as every status except `trash`):

- `check()`: `GET /products?per_page=1&_fields=id`.
- `fetch_product(id)`: `GET /products/{id}` plus `/products/{id}/variations` pages for variable
  products. A trashed product still loads (200, `status: trash`) and maps to `archived`; a
  force-deleted one is a 404, answered as None. A variation id is not a product: None.
- `fetch_products(ids)` (`batch_fetch`): `GET /products?include=<up to 100 ids>&status=any`, then
  `fetch_product` for the ids that listing leaves out (trashed products, variation ids, products
  deleted meanwhile), so the answer is the same as one `fetch_product` per id in far fewer requests.
- `catalog(resume)`: `GET /products?orderby=id&order=asc&status=any&per_page=N&page=P`. Page 1
  (or the resume page) gives `X-WP-TotalPages`; the following pages are fetched `concurrency` at a
  time in a sliding window and yielded in page order, each page's variable products' variations
  fetched concurrently too. One semaphore of `concurrency` slots bounds every request in flight,
  and at most `concurrency` pages are held in memory. Tokens are page numbers: `next_token` is the
  page to fetch next, `resume` the page to start from; `total` is `X-WP-Total`. The page unit is
  the configured `per_page`, whatever the client shrinks to after timeouts (a changed `per_page`
  between runs makes an old token point elsewhere: the import then repeats or skips some products,
  which the next reconciliation repairs).
- `modified_since(since)`: `GET /products?modified_after=<since - 1 s>&dates_are_gmt=true&
  orderby=modified&order=asc&status=any`. WooCommerce compares exclusively
  (`post_modified_gmt > X`), at one-second resolution, so asking for one second earlier includes
  products modified on the boundary second, as the protocol promises. Instead of walking page
  numbers (a product saved during the walk moves to the end and shifts every later product one
  place back, so one would be skipped), each next request restarts at the last modification time
  seen (minus one second) and products already yielded are dropped. A second pass with
  `status=trash` reports products trashed in the window (as `archived`), which `status=any` hides.
- `product_ids()`: `GET /products?_fields=id&per_page=100&status=any&orderby=id&order=asc`. Trash is
  excluded, so trashed products are reported missing (the reconciliation then treats them as
  deleted; `fetch_product` would still load them as `archived`).

Webhooks: `verify_webhook` checks deliveries (see `webhooks.py`) and `resolve_webhook` needs no
I/O (a delivery names its product); `register_webhooks` and `reactivate_disabled_webhooks` manage
the store's product webhooks (key with read_write).

Capabilities (platform protocol v2, `platforms/base.py`): `modified_since`, `product_ids`,
`batch_fetch`, `webhooks`, `webhook_registration`, `spool_hooks` (the WordPress companion plugin),
and every `write.*` field: `read_fields` and `write_fields` are `writer.py`'s (`WooWriter`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, deque
from collections.abc import (
    AsyncIterator,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import httpx
import structlog

from bridge_agent.errors import (
    BadWebhook,
    ConfigError,
    PlatformAuthFailed,
    PlatformError,
    PlatformUnavailable,
    ProductNotFound,
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
    collect,
    failure_of,
)
from bridge_agent.platforms.http import PrioritySlots, RequestBudget, live_work
from bridge_agent.platforms.woocommerce import webhooks
from bridge_agent.platforms.woocommerce.client import ListPage, Params, WooClient
from bridge_agent.platforms.woocommerce.mapping import (
    CategoryTree,
    MappingOptions,
    WooPayloadError,
    category_tree,
    map_product,
)
from bridge_agent.platforms.woocommerce.settings import MAX_PER_PAGE, SETTINGS, WooSettings
from bridge_agent.platforms.woocommerce.writer import WooWriter
from bridge_agent.sync.paging import PageGuard

if TYPE_CHECKING:
    from bridge_agent.config import PlatformSpec, StoreSettings

__all__ = ["WebhookAction", "WooCommerce"]

log = structlog.get_logger("bridge_agent.woocommerce")

T = TypeVar("T")

TREE_TTL = 600.0  # seconds a category tree is trusted
TREE_MIN_AGE = 30.0  # an unknown category id reloads the tree, at most this often
WEBHOOK_NAME = "bridge-agent"
_GMT = "%Y-%m-%dT%H:%M:%S"


@dataclass(frozen=True, slots=True)
class _Fetched:
    listed: ListPage
    products: list[Product]
    failures: list[ItemFailure] = field(default_factory=list)


class WooCommerce:
    """One WooCommerce store, read through wc/v3."""

    name: ClassVar[str] = "woocommerce"
    settings_spec: ClassVar[PlatformSpec] = SETTINGS  # what its [[stores]] entries take
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.MODIFIED_SINCE,
            Capability.PRODUCT_IDS,
            Capability.BATCH_FETCH,
            Capability.WEBHOOKS,
            Capability.WEBHOOK_REGISTRATION,
            Capability.SPOOL_HOOKS,  # the WordPress companion plugin (plugins/woocommerce)
            *WRITE_CAPABILITIES,  # every downstream field (writer.py)
        }
    )

    def __init__(
        self,
        settings: WooSettings,
        client: WooClient,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.client = client
        self.mapping = MappingOptions(
            images_max=settings.images_max,
            prices_include_tax=settings.prices_include_tax,
            currency=settings.currency,
            seo_plugin=settings.seo_plugin,
        )
        #: Warnings from mapping (e.g. "no image"), counted since start, for the import report.
        self.mapping_warnings: Counter[str] = Counter()
        # Live work first here too (a hint never queues behind a sweep's pages): the budget's rule.
        self._slots = PrioritySlots(settings.concurrency)
        self._monotonic = monotonic
        self._tree: dict[int, tuple[str, int]] | None = None
        self._tree_at = -math.inf
        self._tree_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"WooCommerce({self.settings.store_id!r}, {self.settings.api_base!r})"

    @classmethod
    def from_settings(
        cls,
        settings: StoreSettings,
        http: httpx.AsyncClient,
        *,
        budget: RequestBudget | None = None,
        metrics: Metrics | None = None,
    ) -> WooCommerce:
        """The adapter for one store. `budget` is the store's request budget, shared by every
        adapter of the store (a private one when not given); `metrics` receives the store
        request metrics."""
        woo = WooSettings.from_store(settings)
        return cls(woo, WooClient(woo, http, budget=budget, metrics=metrics))

    @property
    def effective_per_page(self) -> int:
        """The page size requests use now (halved by the client after repeated timeouts)."""
        return self.client.per_page

    # -- Platform ---------------------------------------------------------------------------------

    async def check(self) -> None:
        response = await self.client.get("/products", {"per_page": 1, "_fields": "id"})
        if not isinstance(response.data, list):
            raise PlatformUnavailable(
                f"invalid JSON from {self.settings.api_prefix}/products: expected a list"
            )

    async def fetch_product(self, product_id: str) -> Product | None:
        if not _digits(product_id):
            return None  # not an id WooCommerce could have given
        try:
            async with self._slots:
                response = await self.client.get(f"/products/{int(product_id)}")
        except ProductNotFound:
            return None
        data = response.data
        if not isinstance(data, dict):
            raise PlatformUnavailable(
                f"invalid JSON from {self.settings.api_prefix}/products/{int(product_id)}: "
                "expected an object"
            )
        if data.get("type") == "variation":
            return None  # the id of a variation: its parent is the product
        products = await self._map_many([data])
        return products[0] if products else None

    async def fetch_products(self, ids: Sequence[str]) -> FetchResult:
        """`GET /products?include=a,b,...&status=any` (100 ids per request, `concurrency` requests
        at once); ids the listing leaves out are fetched one by one: a trashed product (which
        `status=any` hides but which still exists, as `archived`), a variation id (not a
        product), or one deleted meanwhile. A listing the store cannot answer now (5xx, 429,
        timeout) or whose key it refuses fails the whole call; a listing it refuses for good (a
        WAF's 414 or 400 on a long query string, a plugin that rejects `include`) is read one
        id at a time instead, so each product gets its own answer and guarantee 7 its bound."""
        wanted = list(dict.fromkeys(i for i in ids if _digits(i)))
        answers: dict[str, Product | ItemFailure | None] = {
            i: None for i in ids if not _digits(i)
        }  # not an id WooCommerce could have given: no such product

        async def chunk(part: list[str]) -> None:
            params: Params = {"include": ",".join(part), "status": "any", "orderby": "id"}
            try:
                async with self._slots:
                    listed = await self.client.list_page(
                        "/products", params, page=1, page_size=MAX_PER_PAGE
                    )
            except PlatformError as exc:
                if not exc.permanent or isinstance(exc, PlatformAuthFailed):
                    raise
                log.warning(
                    "woocommerce_batch_fetch_refused",
                    store=self.settings.store_id,
                    ids=len(part),
                    status=exc.status,
                    error=str(exc),
                )
                return  # these ids are left out: fetched one by one below
            items = [i for i in listed.items if str(i.get("id")) in part]
            failures: list[ItemFailure] = []
            for product in await self._map_many(items, failures):
                answers[product.id] = product
            for failure in failures:
                answers[failure.product_id] = failure

        await _gather(
            chunk(wanted[n : n + MAX_PER_PAGE]) for n in range(0, len(wanted), MAX_PER_PAGE)
        )
        left = [i for i in wanted if i not in answers]
        singles = await _gather(self._fetch_or_failure(i) for i in left)
        answers.update(zip(left, singles, strict=True))
        return collect((i, answers[i]) for i in dict.fromkeys(ids))

    async def _fetch_or_failure(self, product_id: str) -> Product | ItemFailure | None:
        try:
            return await self.fetch_product(product_id)
        except ProductNotFound:
            return None
        except PlatformError as exc:
            if isinstance(exc, PlatformAuthFailed):
                raise  # the key is wrong for every product: the whole call fails
            return failure_of(product_id, exc)

    async def catalog(self, resume: str | None = None) -> AsyncIterator[CatalogPage]:
        start = self._page_token(resume)
        size = self.settings.per_page
        params: Params = {"orderby": "id", "order": "asc", "status": "any"}
        await self._category_tree(set(), refresh=True)

        async def fetch(page: int) -> _Fetched:
            async with self._slots:
                listed = await self.client.list_page("/products", params, page=page, page_size=size)
            failures: list[ItemFailure] = []
            products = await self._map_many(listed.items, failures)
            return _Fetched(listed, products, failures)

        walk = PageGuard(f"the catalog of store {self.settings.store_id!r}")
        async for number, fetched, last in self._ordered_pages(fetch, start, size, walk):
            yield CatalogPage(
                products=fetched.products,
                next_token=None if last else str(number + 1),
                total=fetched.listed.total,
                failures=tuple(fetched.failures),
            )

    async def modified_since(self, since: datetime) -> AsyncIterator[Sequence[Product]]:
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        after = since.astimezone(UTC).replace(tzinfo=None, microsecond=0) - timedelta(seconds=1)
        for status in ("any", "trash"):
            async for products in self._modified_pass(after, status):
                yield products

    async def product_ids(self) -> AsyncIterator[Sequence[str]]:
        params: Params = {"_fields": "id", "orderby": "id", "order": "asc", "status": "any"}

        async def fetch(page: int) -> _Fetched:
            async with self._slots:
                listed = await self.client.list_page(
                    "/products", params, page=page, page_size=MAX_PER_PAGE
                )
            return _Fetched(listed, [])

        walk = PageGuard(f"the product ids of store {self.settings.store_id!r}")
        async for _, fetched, _ in self._ordered_pages(fetch, 1, MAX_PER_PAGE, walk):
            ids = [str(i["id"]) for i in fetched.listed.items if _is_id(i.get("id"))]
            if ids:
                yield ids

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookDelivery:
        secret = self.settings.webhook_secret
        if secret is None:
            raise BadWebhook("no webhook_secret configured for this store", status=401)
        return webhooks.verify(headers, body, secret.reveal())

    async def resolve_webhook(self, delivery: WebhookDelivery) -> tuple[str, ...]:
        """WooCommerce deliveries name the product (a variation's names its parent)."""
        return delivery.product_ids

    async def aclose(self) -> None:
        """Nothing of its own to release: the agent closes the HTTP client it gave."""
        self._tree = None

    # -- Writer (the downstream direction; see writer.py) ----------------------------------------

    async def read_fields(self, refs: Sequence[FieldRef]) -> Mapping[FieldRef, Any]:
        return await WooWriter(self.settings, self.client).read_fields(refs)

    async def write_fields(self, writes: Sequence[FieldWrite]) -> Sequence[WriteResult]:
        return await WooWriter(self.settings, self.client).write_fields(writes)

    # -- webhook management (the agent calls these; they need a read_write key) ----------------

    async def register_webhooks(
        self, delivery_url: str, *, update_secret: bool = True
    ) -> list[WebhookAction]:
        """Make sure the store sends every product topic to `delivery_url`, signed with our secret.

        Missing webhooks are created (`product.created/updated/deleted/restored`); disabled ones
        (WooCommerce disables a webhook after more than 5 failed deliveries) are activated again;
        paused ones are left alone (an operator paused them). WooCommerce never returns a
        webhook's secret, so with `update_secret` the secret is set on existing webhooks too.
        """
        secret = self._webhook_secret()
        if not delivery_url.startswith(("https://", "http://")):
            raise ConfigError([f"webhook delivery URL must be http(s)://, got {delivery_url!r}"])
        existing = await self._webhooks()
        actions: list[WebhookAction] = []
        for topic in webhooks.PRODUCT_TOPICS:
            same = [
                h
                for h in existing
                if h.get("topic") == topic and _same_url(h.get("delivery_url"), delivery_url)
            ]
            if not same:
                created = await self.client.post(
                    "/webhooks",
                    {
                        "name": f"{WEBHOOK_NAME} {self.settings.store_id} {topic}",
                        "topic": topic,
                        "delivery_url": delivery_url,
                        "secret": secret,
                        "status": "active",
                    },
                )
                actions.append(WebhookAction(topic, _hook_id(created.data), "created"))
                continue
            hook, *duplicates = same
            hook_id = _hook_id(hook)
            status = hook.get("status")
            if status == "paused":
                actions.append(WebhookAction(topic, hook_id, "paused"))
            elif status != "active":
                body: dict[str, Any] = {"status": "active"}
                if update_secret:
                    body["secret"] = secret
                await self.client.put(f"/webhooks/{hook_id}", body, idempotent=True)
                actions.append(WebhookAction(topic, hook_id, "activated"))
            elif update_secret:
                await self.client.put(f"/webhooks/{hook_id}", {"secret": secret}, idempotent=True)
                actions.append(WebhookAction(topic, hook_id, "secret_updated"))
            else:
                actions.append(WebhookAction(topic, hook_id, "unchanged"))
            actions.extend(WebhookAction(topic, _hook_id(d), "duplicate") for d in duplicates)
        log.info(
            "woocommerce_webhooks_registered",
            store=self.settings.store_id,
            actions=[f"{a.topic}:{a.action}" for a in actions],
        )
        return actions

    async def reactivate_disabled_webhooks(
        self, delivery_url: str | None = None
    ) -> list[WebhookAction]:
        """Set `status: active` on our disabled product webhooks; returns what was activated.

        Ours = delivering to `delivery_url` when given, else named "bridge-agent ...".
        """
        actions: list[WebhookAction] = []
        for hook in await self._webhooks():
            topic = hook.get("topic")
            if hook.get("status") != "disabled" or topic not in webhooks.PRODUCT_TOPICS:
                continue
            if delivery_url is not None:
                ours = _same_url(hook.get("delivery_url"), delivery_url)
            else:
                name = hook.get("name")
                ours = isinstance(name, str) and name.startswith(WEBHOOK_NAME)
            if not ours:
                continue
            hook_id = _hook_id(hook)
            await self.client.put(f"/webhooks/{hook_id}", {"status": "active"}, idempotent=True)
            actions.append(WebhookAction(str(topic), hook_id, "activated"))
        if actions:
            log.warning(
                "woocommerce_webhooks_reactivated",
                store=self.settings.store_id,
                webhooks=[a.webhook_id for a in actions],
            )
        return actions

    # -- internals --------------------------------------------------------------------------------

    def _webhook_secret(self) -> str:
        secret = self.settings.webhook_secret
        if secret is None:
            raise ConfigError(
                [f"[[stores]] {self.settings.store_id!r}: webhooks need a webhook_secret"]
            )
        return secret.reveal()

    async def _webhooks(self) -> list[dict[str, Any]]:
        hooks: list[dict[str, Any]] = []
        walk = PageGuard(f"the webhooks of store {self.settings.store_id!r}")
        page = 1
        while True:
            listed = await self.client.list_page("/webhooks", {}, page=page, page_size=MAX_PER_PAGE)
            _check_page(walk, page, listed)
            hooks.extend(listed.items)
            if _is_last(page, listed, MAX_PER_PAGE):
                return hooks
            page += 1

    def _page_token(self, resume: str | None) -> int:
        if resume is None:
            return 1
        if resume.isdigit() and int(resume) >= 1:
            return int(resume)
        log.warning(
            "woocommerce_resume_token_ignored", store=self.settings.store_id, token=resume[:40]
        )
        return 1

    async def _ordered_pages(
        self,
        fetch: Callable[[int], Coroutine[Any, Any, _Fetched]],
        start: int,
        size: int,
        walk: PageGuard,
    ) -> AsyncIterator[tuple[int, _Fetched, bool]]:
        """(page number, result, is last page) from `start` on, in order, `concurrency` ahead.

        The first page says how many pages there are; without totals (a proxy dropped the
        headers) pages are fetched one by one until a short page. A page that holds the same
        products as an earlier one stops the walk (`PagingLoop`): the store ignores `page`.
        """
        first = await fetch(start)
        listed = first.listed
        _check_page(walk, start, listed)
        total_pages = listed.total_pages
        exhausted = _is_last(start, listed, size)
        yield start, first, exhausted
        if exhausted:
            return
        pending: deque[tuple[int, asyncio.Task[_Fetched]]] = deque()
        next_page = start + 1
        try:
            while True:
                ahead = self.settings.concurrency if total_pages is not None else 1
                while len(pending) < ahead and (
                    next_page <= total_pages if total_pages is not None else not pending
                ):
                    pending.append((next_page, asyncio.create_task(fetch(next_page))))
                    next_page += 1
                if not pending:
                    return
                number, task = pending.popleft()
                result = await task
                listed = result.listed
                _check_page(walk, number, listed)
                if listed.total_pages is not None:
                    # Never lower: pages already asked for must not end the listing early.
                    total_pages = max(total_pages or 0, listed.total_pages)
                last = (
                    number >= total_pages if total_pages is not None else len(listed.items) < size
                )
                yield number, result, last and not pending
                if last and total_pages is None:
                    return
        finally:
            for _, task in pending:
                task.cancel()
            await asyncio.gather(*(t for _, t in pending), return_exceptions=True)

    async def _modified_pass(self, after: datetime, status: str) -> AsyncIterator[list[Product]]:
        size = self.settings.per_page
        seen: set[tuple[str, str]] = set()
        kind = "trashed products" if status == "trash" else "products"
        walk = PageGuard(f"the modified {kind} of store {self.settings.store_id!r}")
        page = 1
        while True:
            params: Params = {
                "modified_after": after.strftime(_GMT),
                "dates_are_gmt": True,
                "orderby": "modified",
                "order": "asc",
                "status": status,
            }
            async with self._slots:
                listed = await self.client.list_page("/products", params, page=page, page_size=size)
            window = f"modified after {params['modified_after']}"
            _check_page(walk, page, listed, window, versions=True)
            fresh = [i for i in listed.items if _seen_key(i) not in seen]
            seen.update(_seen_key(i) for i in fresh)
            if fresh:
                products = await self._map_many(fresh)
                if products:
                    yield products
            if not listed.items or _is_last(page, listed, size):
                return
            last = _parse_gmt(listed.items[-1].get("date_modified_gmt"))
            restart = last - timedelta(seconds=1) if last is not None else None
            if restart is not None and after < restart:
                after, page = restart, 1
                walk.restart()  # a new window: its first page may repeat the old one's last
                boundary = restart.strftime(_GMT)
                seen = {k for k in seen if k[1] > boundary}
            else:
                page += 1  # more than a page saved within one second: walk the pages

    async def _map_many(
        self, items: Sequence[dict[str, Any]], failures: list[ItemFailure] | None = None
    ) -> list[Product]:
        """Map listed products, fetching variations of variable ones concurrently.

        With `failures` (the import), a product whose variations the store keeps failing to
        serve (one corrupt product can make its endpoint answer 500 forever) is left out and
        reported there, and the rest of the page goes on; without it, the error is raised.
        """
        variable = [i for i in items if i.get("type") == "variable" and i.get("variations")]
        found = await _gather(self._variations_or_failure(i["id"], failures) for i in variable)
        variations = {id(item): v for item, v in zip(variable, found, strict=True)}
        needed = {
            c["id"]
            for i in items
            for c in i.get("categories") or ()
            if isinstance(c, dict) and isinstance(c.get("id"), int)
        }
        tree = await self._category_tree(needed)
        products: list[Product] = []
        for item in items:
            children = variations.get(id(item), [])
            if children is None:
                continue  # deleted while we listed it, or failed (then in `failures`)
            try:
                product, warnings = map_product(
                    item, children, options=self.mapping, categories=tree
                )
            except WooPayloadError as exc:
                self.mapping_warnings["not a product"] += 1
                log.warning(
                    "woocommerce_payload_skipped", store=self.settings.store_id, reason=str(exc)
                )
                continue
            for warning in warnings:
                self.mapping_warnings[warning] += 1
            if warnings:
                log.debug(
                    "woocommerce_product_warnings",
                    store=self.settings.store_id,
                    product=product.id,
                    warnings=warnings,
                )
            products.append(product)
        return products

    async def _variations_or_failure(
        self, product_id: Any, failures: list[ItemFailure] | None
    ) -> list[dict[str, Any]] | None:
        if failures is None:
            return await self._variations(product_id)
        try:
            return await self._variations(product_id)
        except PlatformError as exc:
            if isinstance(exc, PlatformAuthFailed):
                raise  # the key is wrong for every product: the whole walk fails
            failure = failure_of(str(product_id), exc)
            failures.append(replace(failure, message=f"variations: {failure.message}"))
            return None

    async def _variations(self, product_id: Any) -> list[dict[str, Any]] | None:
        """Every variation of a variable product; None if the product is gone."""
        if not _is_id(product_id):
            return []
        out: list[dict[str, Any]] = []
        walk = PageGuard(f"the variations of product {product_id}")
        page = 1
        try:
            while True:
                async with self._slots:
                    listed = await self.client.list_page(
                        f"/products/{product_id}/variations", {}, page=page, page_size=MAX_PER_PAGE
                    )
                _check_page(walk, page, listed)
                out.extend(listed.items)
                if _is_last(page, listed, MAX_PER_PAGE):
                    return out
                page += 1
        except ProductNotFound:
            return None

    async def _category_tree(
        self, needed: set[int], *, refresh: bool = False
    ) -> CategoryTree | None:
        """The category tree, loaded when stale, forced, or missing a category we need."""
        if not needed and not refresh:
            return self._tree
        age = self._monotonic() - self._tree_at
        tree = self._tree
        if (
            not refresh
            and tree is not None
            and age < TREE_TTL
            and (needed <= tree.keys() or age < TREE_MIN_AGE)
        ):
            return tree
        async with self._tree_lock:
            if self._monotonic() - self._tree_at < TREE_MIN_AGE and self._tree is not None:
                return self._tree  # another task just loaded it
            terms: list[dict[str, Any]] = []
            walk = PageGuard(f"the categories of store {self.settings.store_id!r}")
            page = 1
            while True:
                # Live: a hint may wait on this lock, so a sweep's queue must not delay it.
                with live_work():
                    async with self._slots:
                        listed = await self.client.list_page(
                            "/products/categories",
                            {"_fields": "id,name,parent", "orderby": "id", "order": "asc"},
                            page=page,
                            page_size=MAX_PER_PAGE,
                        )
                _check_page(walk, page, listed)
                terms.extend(listed.items)
                if _is_last(page, listed, MAX_PER_PAGE):
                    break
                page += 1
            self._tree = category_tree(terms)
            self._tree_at = self._monotonic()
            return self._tree


# -- helpers ---------------------------------------------------------------------------------------


def _is_last(page: int, listed: ListPage, size: int) -> bool:
    if listed.total_pages is not None:
        return page >= listed.total_pages
    return len(listed.items) < size


def _check_page(
    walk: PageGuard, page: int, listed: ListPage, window: str = "", *, versions: bool = False
) -> None:
    """Stop the walk if the store's paging cannot be trusted.

    PagingLoop if this page holds the same items as an earlier one; PlatformUnavailable if it
    is empty while the same answer says pages follow it. A listing that shrank under the walk
    answers an empty page with totals that end before it, so that is not this case; a store
    (or a cache in front of it) that keeps advertising pages it serves empty would otherwise
    be walked to its advertised end, or end a modified-since pass early and lose changes.
    """
    label = f"page {page} ({window})" if window else f"page {page}"
    if not listed.items and listed.total_pages is not None and page < listed.total_pages:
        raise PlatformUnavailable(
            f"{walk.what}: {label} came back empty while the store says it has"
            f" {listed.total_pages} pages; its paging is inconsistent (a cache or plugin in"
            " front of its API?), so the walk stops here and is tried again later"
        )
    if versions:
        # A modified-since walk: a product edited again while it is walked moves to the end of
        # the listing and may be served twice under the same id; with its modified time it is
        # another version, and only a page served again as it was is a loop.
        walk.page(("@".join(_seen_key(i)) for i in listed.items), label)
    else:
        walk.page((str(i.get("id")) for i in listed.items), label)


def _digits(product_id: str) -> bool:
    """Whether a product id could be WooCommerce's: a positive decimal of ASCII digits."""
    return product_id.isascii() and product_id.isdigit() and 0 < int(product_id) < 2**63


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _seen_key(item: Mapping[str, Any]) -> tuple[str, str]:
    return (str(item.get("id")), str(item.get("date_modified_gmt") or ""))


def _parse_gmt(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.replace(microsecond=0)


def _hook_id(hook: Any) -> str:
    if isinstance(hook, dict) and _is_id(hook.get("id")):
        return str(hook["id"])
    raise PlatformUnavailable("invalid JSON from the webhooks API: a webhook without an id")


def _same_url(a: Any, b: str) -> bool:
    return isinstance(a, str) and a.rstrip("/") == b.rstrip("/")


async def _gather(coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently; on the first failure cancel the rest and raise that failure itself."""
    tasks: list[asyncio.Task[T]] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except BaseExceptionGroup as failed:
        error: BaseException = failed
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        raise error from None
    return [t.result() for t in tasks]
