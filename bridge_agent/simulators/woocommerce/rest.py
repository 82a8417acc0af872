"""The `/wp-json/wc/v3` routes (platforms.md 1.3-1.8, checklist 1.14).

The order of checks is WordPress's: the route's parameters are validated first (400
`rest_invalid_param`, every bad parameter listed), then the permission callback (401 for a caller
with no key), then the handler. The permission callback only looks at an object that exists, so a
caller with no key asking for a missing id gets the 404/400 of the handler, as on a real store.

Paging (platforms.md 1.6): `per_page` 1-100 (default 10), `page` from 1, or `offset`; headers
`X-WP-Total`, `X-WP-TotalPages` and `Link` with `prev`/`next` only (the CRUD controller emits no
`first`/`last`), built from every query parameter of the request, OAuth ones included, as
`add_query_arg` does; beyond the last page the body is `[]` with the right totals.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from bridge_agent.simulators.core.control import json_response
from bridge_agent.simulators.woocommerce import writes
from bridge_agent.simulators.woocommerce.auth import ApiKey
from bridge_agent.simulators.woocommerce.catalog import Query
from bridge_agent.simulators.woocommerce.model import (
    PRODUCT_STATUSES,
    PRODUCT_TYPES,
    REST_PREFIX,
    STOCK_STATUSES,
    Item,
    Term,
    WooError,
    encode,
    invalid_params,
    parse_rest_date,
)
from bridge_agent.simulators.woocommerce.render import filter_fields
from bridge_agent.simulators.woocommerce.sim import WooSimulator

SIM: web.AppKey[WooSimulator] = web.AppKey("woo_simulator", WooSimulator)
# The authenticated key of a request; absent or None when it presented no credentials.
KEY: web.RequestKey[ApiKey | None] = web.RequestKey("woo_api_key")
BATCH_LIMIT = 100  # woocommerce_rest_batch_items_limit

_PERMISSIONS = {
    "list": ("woocommerce_rest_cannot_view", "Sorry, you cannot list resources."),
    "view": ("woocommerce_rest_cannot_view", "Sorry, you cannot view this resource."),
    "create": ("woocommerce_rest_cannot_create", "Sorry, you are not allowed to create resources."),
    "edit": ("woocommerce_rest_cannot_edit", "Sorry, you are not allowed to edit this resource."),
    "delete": (
        "woocommerce_rest_cannot_delete",
        "Sorry, you are not allowed to delete this resource.",
    ),
    "batch": (
        "woocommerce_rest_cannot_batch",
        "Sorry, you are not allowed to batch manipulate this resource.",
    ),
}
_PRODUCT_ORDERBY = (
    "date", "id", "include", "title", "slug", "modified", "price", "popularity", "rating",
    "menu_order",
)  # fmt: skip
_STATUS_PARAM = ("any", *PRODUCT_STATUSES)

Problems = dict[str, tuple[str, str]]


# -- small helpers ------------------------------------------------------------------------------


def params_of(request: web.Request) -> dict[str, str]:
    """Query parameters with PHP's `$_GET` rule: a repeated key keeps its last value."""
    return dict(request.query.items())


def permit(request: web.Request, action: str) -> None:
    """The route's permission callback: a caller without a key gets 401."""
    if request.get(KEY) is None:
        code, message = _PERMISSIONS[action]
        raise WooError(401, code, message)


def origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


async def read_body(request: web.Request) -> Any:
    """The JSON body (WordPress parses it only for a JSON content type), or form fields."""
    if not request.can_read_body:
        return {}
    if request.content_type == "application/json":
        raw = await request.read()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise WooError(
                400,
                "rest_invalid_json",
                "Invalid JSON body passed.",
                data={"json_error_code": 4, "json_error_message": "Syntax error"},
            ) from None
    if request.content_type == "application/x-www-form-urlencoded":
        return dict((await request.post()).items())
    return {}


class Params:
    """Typed access to query parameters, collecting WordPress-style problems."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.problems: Problems = {}

    def integer(
        self, name: str, default: int | None, lo: int | None = None, hi: int | None = None
    ) -> int | None:
        raw = self.values.get(name)
        if raw is None:
            return default
        try:
            value = int(raw.strip())
        except ValueError:
            self.problems[name] = ("rest_invalid_type", f"{name} is not of type integer.")
            return default
        if lo is not None and hi is not None and not lo <= value <= hi:
            message = f"{name} must be between {lo} (inclusive) and {hi} (inclusive)"
            self.problems[name] = ("rest_out_of_bounds", message)
        elif lo is not None and value < lo:
            message = f"{name} must be greater than or equal to {lo}"
            self.problems[name] = ("rest_out_of_bounds", message)
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self.values.get(name)
        if raw is None:
            return default
        if raw not in choices:
            self.problems[name] = (
                "rest_not_in_enum",
                f"{name} is not one of {', '.join(choices)}.",
            )
            return default
        return raw

    def boolean(self, name: str) -> bool | None:
        raw = self.values.get(name)
        if raw is None:
            return None
        value = writes.as_bool(raw)  # one rule for bodies and queries
        if value is None:
            self.problems[name] = ("rest_invalid_type", f"{name} is not of type boolean.")
        return value

    def ids(self, name: str) -> tuple[int, ...]:
        # wp_parse_id_list: comma or space separated, absint, duplicates dropped.
        raw = self.values.get(name, "")
        out = []
        for part in raw.replace(",", " ").split():
            try:
                out.append(abs(int(part)))
            except ValueError:
                continue
        return tuple(dict.fromkeys(out))

    def date(self, name: str, utc_offset: int) -> int | None:
        raw = self.values.get(name)
        if raw is None:
            return None
        value = parse_rest_date(raw, utc_offset)
        if value is None:
            self.problems[name] = ("rest_invalid_date", "Invalid date.")
        return value

    def fields(self) -> tuple[str, ...]:
        raw = self.values.get("_fields", "")
        return tuple(f.strip() for f in raw.replace(" ", ",").split(",") if f.strip())

    def check(self) -> None:
        if self.problems:
            raise invalid_params(self.problems)


def read_paging(p: Params) -> tuple[int, int, int | None]:
    page = p.integer("page", 1, lo=1) or 1
    per_page = p.integer("per_page", 10, lo=1, hi=100) or 10
    offset = p.integer("offset", None)
    return page, per_page, offset


def page_response(
    request: web.Request,
    params: dict[str, str],
    ids: list[int],
    paging: tuple[int, int, int | None],
    fields: tuple[str, ...],
    body_of: Callable[[int], bytes],
    doc_of: Callable[[int], dict[str, Any]],
) -> web.Response:
    page, per_page, offset = paging
    start = offset if offset is not None else (page - 1) * per_page
    chunk = ids[max(start, 0) : max(start, 0) + per_page]
    if fields:
        body = encode([filter_fields(doc_of(i), fields) for i in chunk])
    else:
        body = b"[" + b",".join(body_of(i) for i in chunk) + b"]"
    total = len(ids)
    pages = math.ceil(total / per_page)
    headers = [("X-WP-Total", str(total)), ("X-WP-TotalPages", str(pages))]
    base = f"{origin(request)}{request.path}"

    def link(n: int, rel: str) -> tuple[str, str]:
        query = dict(params)
        query["page"] = str(n)
        return ("Link", f'<{base}?{urlencode(query)}>; rel="{rel}"')

    if page > 1:
        headers.append(link(min(page - 1, pages) if pages else page - 1, "prev"))
    if pages > page:
        headers.append(link(page + 1, "next"))
    resp = json_response(body)
    for name, value in headers:
        resp.headers.add(name, value)
    return resp


def _list_query(
    p: Params, utc_offset: int, *, orderby: tuple[str, ...], status_default: str
) -> Query:
    skus = p.values.get("sku", "")
    sku_list: tuple[str, ...] = ()
    if skus:
        # explode(',') without trimming, plus the whole string as one more SKU (WC-PRODCTL).
        parts = skus.split(",")
        sku_list = tuple(dict.fromkeys([*parts, skus] if len(parts) > 1 else parts))
    category = p.ids("category")
    tag = p.ids("tag")
    return Query(
        status=p.choice("status", status_default, _STATUS_PARAM),
        include=p.ids("include"),
        exclude=p.ids("exclude"),
        skus=sku_list,
        type=p.choice("type", "", ("", *PRODUCT_TYPES)),
        category=category,
        tag=tag,
        stock_status=p.choice("stock_status", "", ("", *STOCK_STATUSES)),
        search=p.values.get("search", "").strip(),
        parent=p.ids("parent"),
        modified_after=p.date("modified_after", utc_offset),
        modified_before=p.date("modified_before", utc_offset),
        after=p.date("after", utc_offset),
        before=p.date("before", utc_offset),
        dates_are_gmt=bool(p.boolean("dates_are_gmt")),
        featured=p.boolean("featured"),
        orderby=p.choice("orderby", "date", orderby),
        order=p.choice("order", "desc", ("asc", "desc")),
    )


# -- products -----------------------------------------------------------------------------------


async def list_products(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    cat = sim.catalog
    values = params_of(request)
    p = Params(values)
    paging = read_paging(p)
    query = _list_query(p, cat.utc_offset, orderby=_PRODUCT_ORDERBY, status_default="any")
    p.choice("context", "view", ("view", "edit"))
    p.check()
    permit(request, "list")
    ids = cat.select(query)
    return page_response(
        request,
        values,
        ids,
        paging,
        p.fields(),
        lambda i: cat.product_route_json(cat.items[i]),
        lambda i: cat.doc(cat.items[i]),
    )


def _one(request: web.Request, doc: dict[str, Any], body: bytes, status: int = 200) -> web.Response:
    fields = Params(params_of(request)).fields()
    if fields:
        body = encode(filter_fields(doc, fields))
    return json_response(body, status=status)


def _product_or_none(request: web.Request) -> Item | None:
    return request.app[SIM].catalog.items.get(int(request.match_info["id"]))


async def get_product(request: web.Request) -> web.Response:
    cat = request.app[SIM].catalog
    item = _product_or_none(request)
    if item is not None:
        permit(request, "view")
    if item is None:
        raise WooError(404, "woocommerce_rest_product_invalid_id", "Invalid ID.")
    # A trashed product still loads: 200 with status "trash" (platforms.md 1.7).
    return _one(request, cat.doc(item), cat.product_route_json(item))


async def update_product(request: web.Request) -> web.Response:
    cat = request.app[SIM].catalog
    changes = writes.validate_body(await read_body(request))
    item = _product_or_none(request)
    if item is not None:
        permit(request, "edit")
    if item is None:
        # update_item answers 400, not 404, for an id that does not exist (platforms.md 1.3).
        raise WooError(400, "woocommerce_rest_product_invalid_id", "Invalid ID.")
    updated = writes.update(cat, item, changes)
    request.app[SIM].count_write(updated.id, changes)
    return _one(request, cat.doc(updated), cat.product_route_json(updated))


async def create_product(request: web.Request) -> web.Response:
    cat = request.app[SIM].catalog
    changes = writes.validate_body(await read_body(request))
    permit(request, "create")
    item = writes.create(cat, changes)
    location = f"{origin(request)}{REST_PREFIX}/products/{item.id}"
    resp = _one(request, cat.doc(item), cat.json(item), status=201)
    resp.headers["Location"] = location
    return resp


async def delete_product(request: web.Request) -> web.Response:
    cat = request.app[SIM].catalog
    p = Params(params_of(request))
    force = bool(p.boolean("force"))
    p.check()
    item = _product_or_none(request)
    if item is not None:
        permit(request, "delete")
    if item is None:
        raise WooError(404, "woocommerce_rest_product_invalid_id", "Invalid ID.")
    # The answer is prepared *before* deleting (WC_REST_CRUD_Controller::delete_item), so a
    # trashed product comes back with its old status.
    doc = cat.doc(item)
    if force:
        writes.delete(cat, item)
    else:
        writes.trash(cat, item)
    return json_response(encode(doc))


def _item_error(item_id: Any, error: WooError) -> dict[str, Any]:
    return {
        "id": item_id,
        "error": {"code": error.code, "message": error.message, "data": error.error_data()},
    }


async def batch_products(request: web.Request) -> web.Response:
    """`POST /products/batch`: each item through the single-item code, errors per item, HTTP 200
    (platforms.md 1.11). Deletes are always forced, so they fire no webhook."""
    cat = request.app[SIM].catalog
    body = await read_body(request)
    body = body if isinstance(body, dict) else {}
    problems: Problems = {}
    lists: dict[str, list[Any]] = {}
    for action in ("create", "update", "delete"):
        value = body.get(action)
        if value is None:
            continue
        if not isinstance(value, list):
            problems[action] = ("rest_invalid_type", f"{action} is not of type array.")
        else:
            lists[action] = value
    if problems:
        raise invalid_params(problems)
    permit(request, "batch")
    total = sum(len(v) for v in lists.values())
    if total > BATCH_LIMIT:
        raise WooError(
            413,
            "woocommerce_rest_request_entity_too_large",
            f"Unable to accept more than {BATCH_LIMIT} items for this request.",
        )
    out: dict[str, list[Any]] = {}
    for entry in lists.get("create", []):
        try:
            item = writes.create(cat, writes.validate_body(entry))
            out.setdefault("create", []).append(cat.doc(item))
        except WooError as e:
            out.setdefault("create", []).append(_item_error(0, e))
    delay = request.app[SIM].faults.batch_item_delay_ms / 1000
    for n, entry in enumerate(lists.get("update", [])):
        if delay and n:
            await asyncio.sleep(delay)  # WordPress saves the elements in turn (fault setting)
        item_id = entry.get("id", 0) if isinstance(entry, dict) else 0
        found = cat.items.get(writes.as_int(item_id) or 0)
        if found is None:
            error = WooError(400, "woocommerce_rest_product_invalid_id", "Invalid ID.")
            out.setdefault("update", []).append(_item_error(item_id, error))
            continue
        try:
            changes = writes.validate_body(entry)
            updated = writes.update(cat, found, changes)
            request.app[SIM].count_write(updated.id, changes)
            out.setdefault("update", []).append(cat.doc(updated))
        except WooError as e:
            out.setdefault("update", []).append(_item_error(item_id, e))
    for entry in lists.get("delete", []):
        item_id = writes.as_int(entry) or 0
        if item_id == 0:
            continue
        found = cat.items.get(item_id)
        if found is None:
            error = WooError(404, "woocommerce_rest_product_invalid_id", "Invalid ID.")
            out.setdefault("delete", []).append(_item_error(item_id, error))
            continue
        doc = cat.doc(found)
        writes.delete(cat, found)
        out.setdefault("delete", []).append(doc)
    return json_response(encode(out))


# -- variations ---------------------------------------------------------------------------------


async def list_variations(request: web.Request) -> web.Response:
    cat = request.app[SIM].catalog
    values = params_of(request)
    p = Params(values)
    paging = read_paging(p)
    query = _list_query(p, cat.utc_offset, orderby=_PRODUCT_ORDERBY, status_default="any")
    p.check()
    permit(request, "list")
    ids = cat.select(query, variations_of=int(request.match_info["id"]))
    return page_response(
        request,
        values,
        ids,
        paging,
        p.fields(),
        lambda i: cat.json(cat.items[i]),
        lambda i: cat.doc(cat.items[i], product_route=False),
    )


async def get_variation(request: web.Request) -> web.Response:
    cat = request.app[SIM].catalog
    item = cat.variation(int(request.match_info["id"]), int(request.match_info["variation_id"]))
    if item is not None:
        permit(request, "view")
    if item is None:
        raise WooError(404, "woocommerce_rest_product_variation_invalid_id", "Invalid ID.")
    return _one(request, cat.doc(item, product_route=False), cat.json(item))


# -- categories and tags ------------------------------------------------------------------------


def _terms_route(kind: str) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        cat = request.app[SIM].catalog
        values = params_of(request)
        p = Params(values)
        paging = read_paging(p)
        order = p.choice("order", "asc", ("asc", "desc"))
        orderby = p.choice(
            "orderby",
            "name",
            ("id", "include", "name", "slug", "term_group", "description", "count"),
        )
        hide_empty = bool(p.boolean("hide_empty"))
        include = p.ids("include")
        parent = p.integer("parent", None)
        p.check()
        permit(request, "list")
        table = cat.categories if kind == "categories" else cat.tags
        counts = cat.term_counts()[0 if kind == "categories" else 1]
        search = values.get("search", "").lower()
        slug = values.get("slug", "")
        terms: list[Term] = [
            t
            for t in table.values()
            if (not include or t.id in include)
            and (parent is None or t.parent == parent)
            and (not hide_empty or counts.get(t.id, 0))
            and (not search or search in t.name.lower() or search in t.slug)
            and (not slug or t.slug == slug)
        ]
        keys: dict[str, Callable[[Term], Any]] = {
            "id": lambda t: t.id,
            "slug": lambda t: t.slug,
            "description": lambda t: t.description,
            "count": lambda t: counts.get(t.id, 0),
            "include": lambda t: include.index(t.id) if t.id in include else 0,
        }
        terms.sort(key=keys.get(orderby, lambda t: t.name.lower()), reverse=order == "desc")
        render = cat.render.category if kind == "categories" else cat.render.tag
        docs = {t.id: render(t, counts.get(t.id, 0)) for t in terms}
        return page_response(
            request,
            values,
            [t.id for t in terms],
            paging,
            p.fields(),
            lambda i: encode(docs[i]),
            lambda i: docs[i],
        )

    return handler


def add_routes(app: web.Application) -> None:
    """Products, variations, categories and tags (webhooks and settings: rest_webhooks.py)."""
    r = app.router
    base = REST_PREFIX
    r.add_get(f"{base}/products", list_products)
    r.add_post(f"{base}/products", create_product)
    r.add_post(f"{base}/products/batch", batch_products)
    r.add_get(f"{base}/products/categories", _terms_route("categories"))
    r.add_get(f"{base}/products/tags", _terms_route("tags"))
    r.add_get(f"{base}/products/{{id:\\d+}}", get_product)
    for method in ("PUT", "POST", "PATCH"):  # WP_REST_Server::EDITABLE
        r.add_route(method, f"{base}/products/{{id:\\d+}}", update_product)
    r.add_delete(f"{base}/products/{{id:\\d+}}", delete_product)
    r.add_get(f"{base}/products/{{id:\\d+}}/variations", list_variations)
    r.add_get(f"{base}/products/{{id:\\d+}}/variations/{{variation_id:\\d+}}", get_variation)
