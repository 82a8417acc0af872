"""Field resolvers: what the simulated shop answers for the fields it implements.

graphql-core executes the real schema with one field resolver (`field_resolver`): a field with a
registered resolver (`RESOLVERS[(type, field)]`) runs it, any other reads the record's key of
the same name (records are dicts in the API's shape, `model.py`). Abstract types (`Node`,
`Media`, `File`) resolve from the record's `__typename`.

A field the simulator does not implement answers null, unless the schema makes it non-null:
then it answers the type's zero value (`""`, `0`, `false`, `[]`, an object of zero fields, the
enum's first value), so a client that selects it gets a well-formed answer instead of an error
Shopify would never give. The fields the agent reads all have real values.

Connections: `@connection` registers a function answering the whole ordered list with a sort
key per record; `paginate` cuts the page (`first`/`after`/`last`/`before`/`reverse`, opaque
cursors that encode the sort key, so a record that moves in the order while a client pages is
neither skipped nor repeated more than Shopify would) and the bulk exporter reads the whole list
(`CONNECTIONS`).
"""

from __future__ import annotations

import base64
import bisect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graphql import (
    GraphQLEnumType,
    GraphQLError,
    GraphQLOutputType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLSchema,
    is_abstract_type,
    is_list_type,
    is_non_null_type,
)

from bridge_agent.simulators.shopify.model import Record, parse_gid
from bridge_agent.simulators.shopify.search import SearchError

if TYPE_CHECKING:
    from bridge_agent.simulators.shopify.sim import ShopifySimulator

MAX_PAGE = 250


@dataclass
class Context:
    """What resolvers see of the request."""

    sim: ShopifySimulator
    origin: str  # scheme://host:port the client reached (URLs of bulk results)


Resolver = Callable[[Any, dict[str, Any], Context], Any]
Pairs = list[tuple[tuple[Any, ...], Any]]
Lister = Callable[[Any, dict[str, Any], Context], Pairs]

RESOLVERS: dict[tuple[str, str], Resolver] = {}
CONNECTIONS: dict[tuple[str, str], Lister] = {}


def resolver(type_name: str, field_name: str) -> Callable[[Resolver], Resolver]:
    def register(fn: Resolver) -> Resolver:
        RESOLVERS[(type_name, field_name)] = fn
        return fn

    return register


def connection(type_name: str, field_name: str) -> Callable[[Lister], Lister]:
    """Register a connection: `fn` answers every (sort key, record) in ascending order."""

    def register(fn: Lister) -> Lister:
        CONNECTIONS[(type_name, field_name)] = fn

        def paged(source: Any, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
            return paginate(fn(source, args, ctx), args)

        RESOLVERS[(type_name, field_name)] = paged
        return fn

    return register


def positions(items: list[Any]) -> Pairs:
    return [((i,), item) for i, item in enumerate(items)]


# -- cursors and pages ----------------------------------------------------------------------------


def encode_cursor(key: tuple[Any, ...]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode()


def decode_cursor(cursor: str) -> tuple[Any, ...]:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError):
        raise GraphQLError(f"Invalid cursor for current pagination sort: {cursor}") from None
    if not isinstance(value, list):
        raise GraphQLError(f"Invalid cursor for current pagination sort: {cursor}")
    return tuple(value)


def _key(pair: tuple[tuple[Any, ...], Any]) -> tuple[Any, ...]:
    return pair[0]


def paginate(pairs: Pairs, args: dict[str, Any]) -> dict[str, Any]:
    first, last = args.get("first"), args.get("last")
    after, before = args.get("after"), args.get("before")
    if first is None and last is None:
        raise GraphQLError("you must provide one of first or last")
    for name, value in (("first", first), ("last", last)):
        if value is not None and not 0 <= value <= MAX_PAGE:
            raise GraphQLError(f"The value of '{name}' must be between 0 and {MAX_PAGE}.")
    # `pairs` ascend; `reverse` answers them descending, and a cursor keeps meaning "after this
    # record in the answer's order": keys above it ascending, below it descending.
    reverse = bool(args.get("reverse"))
    tag = pairs[0][0][0] if pairs and isinstance(pairs[0][0][0], str) else None
    for cursor in (after, before):
        # A cursor of another sort order (its first element names the sort) is refused, as
        # Shopify refuses it, instead of cutting the list at a meaningless place.
        if cursor is not None and tag is not None and decode_cursor(cursor)[:1] != (tag,):
            raise GraphQLError(f"Invalid cursor for current pagination sort: {cursor}")
    try:
        if after is not None:
            at = decode_cursor(after)
            pairs = (
                pairs[: bisect.bisect_left(pairs, at, key=_key)]
                if reverse
                else pairs[bisect.bisect_right(pairs, at, key=_key) :]
            )
        if before is not None:
            at = decode_cursor(before)
            pairs = (
                pairs[bisect.bisect_right(pairs, at, key=_key) :]
                if reverse
                else pairs[: bisect.bisect_left(pairs, at, key=_key)]
            )
    except TypeError:
        raise GraphQLError("Invalid cursor for current pagination sort.") from None
    if reverse:
        pairs = pairs[::-1]
    total = len(pairs)
    if first is not None:
        window = pairs[:first]
        has_next, has_prev = total > first, after is not None
    else:
        window = pairs[max(0, total - last) :] if last else []
        has_next, has_prev = before is not None, total > (last or 0)
    nodes = [item for _, item in window]
    return {
        "nodes": nodes,
        "_keys": [k for k, _ in window],
        "pageInfo": {
            "hasNextPage": has_next,
            "hasPreviousPage": has_prev,
            "startCursor": encode_cursor(window[0][0]) if window else None,
            "endCursor": encode_cursor(window[-1][0]) if window else None,
        },
    }


def _edges(source: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"cursor": encode_cursor(k), "node": node}
        for k, node in zip(source["_keys"], source["nodes"], strict=True)
    ]


# -- the one field resolver --------------------------------------------------------------------

_SCALAR_ZERO: dict[str, Any] = {
    "Int": 0,
    "Float": 0.0,
    "Boolean": False,
    "ID": "gid://shopify/Simulated/0",
    "DateTime": "1970-01-01T00:00:00Z",
    "Money": "0.0",
    "Decimal": "0.0",
    "UnsignedInt64": "0",
    "JSON": {},
}


def zero(type_: GraphQLOutputType, schema: GraphQLSchema) -> Any:
    """The value of an unimplemented non-null field: well-formed, empty."""
    if is_non_null_type(type_):
        type_ = type_.of_type
    if is_list_type(type_):
        return []
    if isinstance(type_, GraphQLScalarType):
        return _SCALAR_ZERO.get(type_.name, "")
    if isinstance(type_, GraphQLEnumType):
        return next(iter(type_.values))
    if is_abstract_type(type_):
        possible = schema.get_possible_types(type_)
        return {"__typename": possible[0].name}
    return {"__typename": type_.name}  # type: ignore[union-attr]


def field_resolver(source: Any, info: GraphQLResolveInfo[Context], **args: Any) -> Any:
    name = info.field_name
    fn = RESOLVERS.get((info.parent_type.name, name))
    if fn is not None:
        try:
            value = fn(source, args, info.context)
        except SearchError as exc:
            raise GraphQLError(f"Invalid search query: {exc}") from None
    elif isinstance(source, dict):
        if name == "edges" and "_keys" in source:
            return _edges(source)
        value = source.get(name)
    else:
        value = getattr(source, name, None)
    if value is None and is_non_null_type(info.return_type):
        return zero(info.return_type, info.schema)
    return value


# -- lookups ----------------------------------------------------------------------------------


def lookup(ctx: Context, global_id: Any, kind: str | None = None) -> Any:
    """The record with this id (None when deleted or unknown); an invalid id is an error."""
    parsed = parse_gid(global_id)
    if parsed is None:
        raise GraphQLError(f"Invalid global id '{global_id}'", extensions={"code": "INVALID"})
    if kind is not None and parsed[0] != kind:
        return None
    sim = ctx.sim
    if parsed[0] == "BulkOperation":
        return sim.bulk.get(parsed[1])
    if parsed[0] == "WebhookSubscription":
        return sim.webhooks.subscription_record(parsed[1])
    return sim.catalog.record(str(global_id))


@resolver("QueryRoot", "product")
def _product(_: Any, args: dict[str, Any], ctx: Context) -> Any:
    return lookup(ctx, args["id"], "Product")


@resolver("QueryRoot", "productVariant")
def _variant(_: Any, args: dict[str, Any], ctx: Context) -> Any:
    return lookup(ctx, args["id"], "ProductVariant")


@resolver("QueryRoot", "inventoryItem")
def _inventory_item(_: Any, args: dict[str, Any], ctx: Context) -> Any:
    return lookup(ctx, args["id"], "InventoryItem")


@resolver("QueryRoot", "node")
def _node(_: Any, args: dict[str, Any], ctx: Context) -> Any:
    return lookup(ctx, args["id"])


@resolver("QueryRoot", "nodes")
def _nodes(_: Any, args: dict[str, Any], ctx: Context) -> Any:
    ids = args["ids"]
    if len(ids) > MAX_PAGE:
        raise GraphQLError(f"The ids argument accepts at most {MAX_PAGE} ids.")
    return [lookup(ctx, i) for i in ids]


@resolver("QueryRoot", "shop")
def _shop(_: Any, __: dict[str, Any], ctx: Context) -> Any:
    return ctx.sim.shop_record()


@connection("QueryRoot", "products")
def _products(_: Any, args: dict[str, Any], ctx: Context) -> Pairs:
    sort = args.get("sortKey") or "ID"
    items, key = ctx.sim.catalog.search_products(args.get("query"), sort)
    return [((sort, *key(p)), p) for p in items]


@connection("QueryRoot", "productVariants")
def _product_variants(_: Any, args: dict[str, Any], ctx: Context) -> Pairs:
    items, key = ctx.sim.catalog.search_variants(args.get("query"))
    return [(("ID", *key(v)), v) for v in items]


# -- products and their children ----------------------------------------------------------------


@connection("Product", "variants")
def _variants(product: Record, _: dict[str, Any], __: Context) -> Pairs:
    return positions(product["_variants"])


@connection("Product", "media")
def _media(product: Record, _: dict[str, Any], __: Context) -> Pairs:
    return positions(product["_media"])


@connection("Product", "images")
def _images(product: Record, _: dict[str, Any], __: Context) -> Pairs:
    return positions([m["image"] for m in product["_media"]])


def _metafields_of(owner: Record, args: dict[str, Any]) -> list[Record]:
    fields: list[Record] = owner.get("_metafields") or []
    namespace, keys = args.get("namespace"), args.get("keys")
    if namespace is not None:
        fields = [f for f in fields if f["namespace"] == namespace]
    if keys is not None:
        fields = [f for f in fields if f"{f['namespace']}.{f['key']}" in keys]
    return fields


def _metafield_of(owner: Record, args: dict[str, Any]) -> Record | None:
    namespace = args.get("namespace") or "$app"
    for f in owner.get("_metafields") or []:
        if f["namespace"] == namespace and f["key"] == args["key"]:
            return f  # type: ignore[no-any-return]
    return None


for _type in ("Product", "ProductVariant", "MediaImage"):
    connection(_type, "metafields")(lambda owner, args, _: positions(_metafields_of(owner, args)))
    resolver(_type, "metafield")(lambda owner, args, _: _metafield_of(owner, args))

connection("ProductVariant", "media")(lambda variant, _, __: [])


@resolver("Product", "options")
def _options(product: Record, args: dict[str, Any], _: Context) -> Any:
    first = args.get("first")
    options: list[Record] = product["options"]
    return options if first is None else options[:first]


@resolver("Product", "description")
def _description(product: Record, args: dict[str, Any], _: Context) -> Any:
    text: str = product["description"]
    limit = args.get("truncateAt")
    return text if limit is None or len(text) <= limit else text[: max(0, limit - 3)] + "..."


@resolver("Metafield", "jsonValue")
def _json_value(field: Record, _: dict[str, Any], __: Context) -> Any:
    value: str = field["value"]
    if field["type"] == "json" or field["type"].startswith("list."):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
