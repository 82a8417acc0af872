"""The catalog: posts, attachments and terms in dicts, JSON cached per modification, queries.

Why it is fast enough (10 000 products at concurrency 4 must not make the simulator the
bottleneck; 100 000 must fit in memory):

- Records are slotted dataclasses of tuples (model.py); there is no per-product dict at rest.
- A product's JSON is encoded once and kept until the product (or something it shows: its
  variations, an attachment's ALT text) changes; a page is the cached bodies joined with commas.
  The cache is bounded (`json_cache_size`, oldest evicted first) so a full crawl of a huge
  catalog does not double its memory.
- A listing's filtered and sorted id list is cached per query (page and page size left out) for
  the current catalog version, so paging through 1 000 pages costs one scan, not 1 000.

Listing semantics follow `WC_REST_CRUD_Controller::prepare_objects_query` and the products
controller (platforms.md 1.6, 1.8): `status=any` leaves trash out, `modified_after` is the
exclusive `post_modified > X` of WP_Date_Query, `date`/`modified` ordering breaks ties on the id,
the `sku` filter is exact, takes a comma list and also finds variations, and `category` includes
child categories (WP tax_query's `include_children`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from bridge_agent.simulators.core.clock import SimClock
from bridge_agent.simulators.woocommerce.model import Attachment, Item, Term, encode
from bridge_agent.simulators.woocommerce.render import Renderer, own_price

Listener = Callable[[str, int], None]


@dataclass(frozen=True, slots=True)
class Query:
    """The filters and order of one listing, hashable so it can key the id-list cache."""

    status: str = "any"
    include: tuple[int, ...] = ()
    exclude: tuple[int, ...] = ()
    skus: tuple[str, ...] = ()
    type: str = ""
    category: tuple[int, ...] = ()
    tag: tuple[int, ...] = ()
    stock_status: str = ""
    search: str = ""
    parent: tuple[int, ...] = ()
    # Wall-clock seconds in the frame of the compared column (see model.parse_rest_date).
    modified_after: int | None = None
    modified_before: int | None = None
    after: int | None = None
    before: int | None = None
    dates_are_gmt: bool = False
    featured: bool | None = None
    orderby: str = "date"
    order: str = "desc"


def _number(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


class Catalog:
    """Every record of the store plus the caches derived from them."""

    def __init__(
        self,
        *,
        clock: SimClock,
        site_url: str,
        utc_offset: int,
        currency: str = "EUR",
        json_cache_size: int = 20_000,
    ) -> None:
        self.clock = clock
        self._site_url = site_url.rstrip("/")
        self.utc_offset = utc_offset  # seconds east of UTC; a fixed offset, no DST
        self.currency = currency
        self.items: dict[int, Item] = {}
        self.attachments: dict[int, Attachment] = {}
        self.categories: dict[int, Term] = {}
        self.tags: dict[int, Term] = {}
        self.slugs: set[str] = set()
        self._slug_suffix: dict[str, int] = {}
        self.upload_names: set[str] = set()
        self.render = Renderer(self)
        self.version = 0
        self.json_cache_size = json_cache_size
        self.listeners: list[Listener] = []
        # WordPress gives products, variations and attachments ids from one sequence (wp_posts);
        # terms and meta rows have their own. Ids are therefore not contiguous per type.
        self._next_post = 10
        self._next_term = 15
        self._next_meta = 1000
        self._json: dict[int, bytes] = {}
        self._queries: dict[tuple[Query, int], list[int]] = {}
        self._queries_version = -1
        self._counts: tuple[int, dict[int, int], dict[int, int]] | None = None
        self._sku_index: tuple[int, dict[str, list[int]]] | None = None

    # -- identity and housekeeping --------------------------------------------------------------

    @property
    def site_url(self) -> str:
        return self._site_url

    @site_url.setter
    def site_url(self, value: str) -> None:
        self._site_url = value.rstrip("/")
        self._json.clear()  # permalinks, image URLs and _links all embed it

    def new_post_id(self) -> int:
        self._next_post += 1
        return self._next_post

    def new_term_id(self) -> int:
        self._next_term += 1
        return self._next_term

    def new_meta_id(self) -> int:
        self._next_meta += 1
        return self._next_meta

    def unique_slug(self, base: str) -> str:
        # wp_unique_post_slug: the first free of base, base-2, base-3, ... (the search resumes
        # where the last one for this base stopped, so 100 000 look-alike names stay linear).
        slug, n = base, self._slug_suffix.get(base, 1)
        if n > 1:
            slug = f"{base}-{n}"
        while slug in self.slugs:
            n += 1
            slug = f"{base}-{n}"
        self._slug_suffix[base] = n
        return slug

    def emit(self, event: str, item_id: int) -> None:
        for listener in self.listeners:
            listener(event, item_id)

    def changed(self, *ids: int) -> None:
        """Forget what was derived from these records (and bump the listing version)."""
        self.version += 1
        for i in ids:
            self._json.pop(i, None)

    def attachment_changed(self, attachment_id: int) -> None:
        # ALT text lives on the attachment: every product showing it changes its JSON, but not
        # its date_modified (platforms.md 1.11), which is exactly what modified_after misses.
        self.changed(*(i.id for i in self.items.values() if attachment_id in i.image_ids))

    # -- records --------------------------------------------------------------------------------

    def add(self, item: Item) -> None:
        self.items[item.id] = item
        if item.slug and item.type != "variation":
            self.slugs.add(item.slug)
        self.changed(item.id, item.parent_id)

    def product(self, item_id: int) -> Item | None:
        item = self.items.get(item_id)
        return item if item is not None and item.type != "variation" else None

    def variation(self, parent_id: int, item_id: int) -> Item | None:
        item = self.items.get(item_id)
        if item is None or item.type != "variation" or item.parent_id != parent_id:
            return None
        return item

    def products(self) -> Iterator[Item]:
        return (i for i in self.items.values() if i.type != "variation")

    def remove(self, item: Item) -> None:
        """Delete permanently (force): a variable product takes its variations with it."""
        for vid in item.variations:
            self.items.pop(vid, None)
            self._json.pop(vid, None)
        self.items.pop(item.id, None)
        self.slugs.discard(item.slug)
        self.slugs.discard(item.desired_slug)
        parent = self.items.get(item.parent_id) if item.parent_id else None
        if parent is not None:
            parent.variations = tuple(v for v in parent.variations if v != item.id)
        self.changed(item.id, item.parent_id)

    # -- JSON -----------------------------------------------------------------------------------

    def json(self, item: Item) -> bytes:
        """The cached body: a product as the products route shows it, a variation as the
        variations route does."""
        body = self._json.get(item.id)
        if body is None:
            doc = (
                self.render.variation(item)
                if item.type == "variation"
                else self.render.product(item)
            )
            body = encode(doc)
            if len(self._json) >= self.json_cache_size:
                self._json.pop(next(iter(self._json)))
            self._json[item.id] = body
        return body

    def warm(self) -> int:
        """Encode products (newest first, the default listing order) and their variations until
        the cache is full, so a first crawl is served from memory. Returns how many."""
        done = 0
        for item_id in self.select(Query()):
            item = self.items[item_id]
            for record in (item, *(self.items[v] for v in item.variations if v in self.items)):
                if done >= self.json_cache_size:
                    return done
                self.json(record)
                done += 1
        return done

    def product_route_json(self, item: Item) -> bytes:
        """A record as `/products/{id}` shows it, variations included (sku filter, webhooks)."""
        if item.type == "variation":
            return encode(self.render.product(item))
        return self.json(item)

    def doc(self, item: Item, *, product_route: bool = True) -> dict[str, Any]:
        if item.type == "variation" and not product_route:
            return self.render.variation(item)
        return self.render.product(item)

    # -- listings -------------------------------------------------------------------------------

    def select(self, q: Query, *, variations_of: int | None = None) -> list[int]:
        """Ids matching `q`, in order; cached for the current catalog version."""
        if self._queries_version != self.version:
            self._queries.clear()
            self._queries_version = self.version
        key = (q, -1 if variations_of is None else variations_of)
        ids = self._queries.get(key)
        if ids is None:
            if len(self._queries) >= 64:
                self._queries.clear()
            ids = self._select(q, variations_of)
            self._queries[key] = ids
        return ids

    def _candidates(self, q: Query, variations_of: int | None) -> Iterable[Item]:
        items = self.items
        if variations_of is not None:
            parent = self.product(variations_of)
            kids = parent.variations if parent else ()
            return [items[v] for v in kids if v in items]
        if q.skus:
            # The sku filter switches the query to product + product_variation (platforms.md 1.7).
            index = self._skus()
            found = {i for sku in q.skus for i in index.get(sku, ())}
            return [items[i] for i in sorted(found) if i in items]
        if q.include:
            return [items[i] for i in dict.fromkeys(q.include) if i in items]
        return self.products()

    def _skus(self) -> dict[str, list[int]]:
        if self._sku_index is None or self._sku_index[0] != self.version:
            index: dict[str, list[int]] = {}
            for item in self.items.values():
                if item.sku:
                    index.setdefault(item.sku, []).append(item.id)
            self._sku_index = (self.version, index)
        return self._sku_index[1]

    def _select(self, q: Query, variations_of: int | None) -> list[int]:
        tests: list[Callable[[Item], bool]] = []
        if variations_of is None and not q.skus:
            tests.append(lambda i: i.type != "variation")
        if q.status == "any":
            # WP_Query's `any` leaves out statuses excluded from search: trash and auto-draft.
            tests.append(lambda i: i.status not in ("trash", "auto-draft"))
        else:
            status = q.status
            tests.append(lambda i: i.status == status)
        if q.include:
            include = frozenset(q.include)
            tests.append(lambda i: i.id in include)
        if q.exclude:
            exclude = frozenset(q.exclude)
            tests.append(lambda i: i.id not in exclude)
        if q.type:
            kind = q.type
            tests.append(lambda i: i.type == kind)
        if q.parent:
            parents = frozenset(q.parent)
            tests.append(lambda i: i.parent_id in parents)
        if q.category:
            wanted = self._with_descendants(q.category)
            tests.append(lambda i: not wanted.isdisjoint(i.categories))
        if q.tag:
            tags = frozenset(q.tag)
            tests.append(lambda i: not tags.isdisjoint(i.tags))
        if q.stock_status:
            stock = q.stock_status
            tests.append(lambda i: i.stock_status == stock)
        if q.featured is not None:
            featured = q.featured
            tests.append(lambda i: i.featured is featured)
        if q.search:
            needle = q.search.lower()
            tests.append(
                lambda i: (
                    needle in i.name.lower()
                    or needle in i.description.lower()
                    or needle in i.short_description.lower()
                )
            )
        shift = 0 if q.dates_are_gmt else self.utc_offset
        # WP_Date_Query 'after'/'before' are strict comparisons on DATETIME columns.
        if q.modified_after is not None:
            bound = q.modified_after - shift
            tests.append(lambda i: i.modified > bound)
        if q.modified_before is not None:
            bound_b = q.modified_before - shift
            tests.append(lambda i: i.modified < bound_b)
        if q.after is not None:
            bound_c = q.after - shift
            tests.append(lambda i: i.created > bound_c)
        if q.before is not None:
            bound_d = q.before - shift
            tests.append(lambda i: i.created < bound_d)
        found = [i for i in self._candidates(q, variations_of) if all(t(i) for t in tests)]
        return [i.id for i in self._sort(found, q)]

    def _sort(self, found: list[Item], q: Query) -> list[Item]:
        if q.orderby == "include" and q.include:
            rank = {item_id: n for n, item_id in enumerate(q.include)}
            return sorted(found, key=lambda i: rank.get(i.id, len(rank)))
        keys: dict[str, Callable[[Item], Any]] = {
            "id": lambda i: i.id,
            "date": lambda i: (i.created, i.id),
            "modified": lambda i: (i.modified, i.id),
            "title": lambda i: (i.name.lower(), i.id),
            "slug": lambda i: (i.slug, i.id),
            "menu_order": lambda i: (i.menu_order, i.name.lower()),
            "price": lambda i: (_number(self._price(i)), i.id),
            "popularity": lambda i: (i.total_sales, i.id),
            "rating": lambda i: (_number(i.average_rating), i.id),
        }
        key = keys.get(q.orderby, keys["date"])
        return sorted(found, key=key, reverse=q.order == "desc")

    def _price(self, item: Item) -> str:
        if item.type == "variable":
            return self.render.variable_prices(item)[0]
        return own_price(item)

    def _with_descendants(self, roots: tuple[int, ...]) -> frozenset[int]:
        children: dict[int, list[int]] = {}
        for term in self.categories.values():
            children.setdefault(term.parent, []).append(term.id)
        out: set[int] = set()
        stack = list(roots)
        while stack:
            term_id = stack.pop()
            if term_id not in out:
                out.add(term_id)
                stack.extend(children.get(term_id, ()))
        return frozenset(out)

    def term_counts(self) -> tuple[dict[int, int], dict[int, int]]:
        """Published products per category and per tag (WordPress's term `count`)."""
        if self._counts is None or self._counts[0] != self.version:
            cats: dict[int, int] = {}
            tags: dict[int, int] = {}
            for item in self.products():
                if item.status != "publish":
                    continue
                for c in item.categories:
                    cats[c] = cats.get(c, 0) + 1
                for t in item.tags:
                    tags[t] = tags.get(t, 0) + 1
            self._counts = (self.version, cats, tags)
        return self._counts[1], self._counts[2]

    # -- truth ----------------------------------------------------------------------------------

    def truth(self) -> bytes:
        """Every product (trash included) with its variations, as the REST routes show them."""
        parts = []
        for item in sorted(self.products(), key=lambda i: i.id):
            kids = b",".join(self.json(self.items[v]) for v in item.variations if v in self.items)
            parts.append(b'{"product":' + self.json(item) + b',"variations":[' + kids + b"]}")
        return b'{"products":[' + b",".join(parts) + b"]}"

    def copy_item(self, item: Item) -> Item:
        return dataclasses.replace(item)
