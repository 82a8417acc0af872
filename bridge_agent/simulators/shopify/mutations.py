"""The write mutations the agent's downstream direction needs (reference/platforms.md 2.9).

- `productUpdate(product: {id, title, descriptionHtml, seo, handle, vendor, productType, tags,
  status, metafields})`: bumps `updatedAt` and fires `products/update`, as an edit in the admin
  does; an unknown product or a blank title are `userErrors` (field and message), nothing
  changes;
- `fileUpdate(files: [{id, alt}])`: a product image is a file, so its ALT changes the product's
  media (`alt` and `image.altText`), bumps the product and fires `products/update`; an unknown
  file (`FILE_DOES_NOT_EXIST`) or an ALT over 512 characters (`ALT_VALUE_LIMIT_EXCEEDED`)
  refuses the whole call;
- `metafieldsSet(metafields: [...])`: at most 25 (more is a top-level error, as Shopify's input
  size check), upsert by owner + namespace + key, atomic (one bad element and nothing is
  written: `userErrors` with `elementIndex`), `compareDigest` for compare-and-set (a stale
  digest, or an explicit null for a metafield that exists, is `STALE_OBJECT`). Metafield writes
  do not move the product's `updatedAt` and fire no product webhook;
- `metafieldsDelete(metafields: [{ownerId, namespace, key}])`: deletes by owner + namespace +
  key; a metafield that is not there is no error (its entry in `deletedMetafields` is null, as
  Shopify documents); an owner that is not a product or variant is a `userErrors` entry naming
  its input and nothing is deleted. No compare-and-set (the input has no `compareDigest`), no
  `updatedAt` bump and no webhook, as for `metafieldsSet`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from graphql import GraphQLError

from bridge_agent.simulators.shopify import generate
from bridge_agent.simulators.shopify.model import Record, iso, parse_gid, set_alt
from bridge_agent.simulators.shopify.resolvers import Context, resolver

MAX_METAFIELDS = 25
MAX_ALT = 512
_HANDLE_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-")


def _user_error(field: list[str], message: str, **extra: Any) -> dict[str, Any]:
    return {"field": field, "message": message, **extra}


@resolver("Mutation", "productUpdate")
def product_update(_: Any, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    key = "product" if args.get("product") is not None else "input"
    data: dict[str, Any] = dict(args.get(key) or {})
    identifier = args.get("identifier") or {}
    product_id = data.get("id") or identifier.get("id")
    catalog = ctx.sim.catalog
    if not product_id:
        return {"product": None, "userErrors": [_user_error(["id"], "Product id is required")]}
    parsed = parse_gid(product_id)
    product = catalog.record(str(product_id), "Product") if parsed else None
    if product is None:
        return {
            "product": None,
            "userErrors": [_user_error(["id"], "Product does not exist")],
        }
    errors: list[dict[str, Any]] = []
    if "title" in data and not str(data["title"] or "").strip():
        errors.append(_user_error(["title"], "Title can't be blank"))
    if "handle" in data and (not data["handle"] or not set(str(data["handle"])) <= _HANDLE_CHARS):
        errors.append(_user_error(["handle"], "Handle is invalid"))
    seo = data.get("seo")
    if seo is not None:
        for name, limit in (("title", 255), ("description", 320)):
            value = seo.get(name)
            if value is not None and len(value) > limit:
                errors.append(
                    _user_error(
                        ["seo", name],
                        f"SEO {name} is too long (maximum is {limit} characters)",
                    )
                )
    metafields = data.pop("metafields", None) or []
    for i, field in enumerate(metafields):
        if not field.get("id") and not field.get("type"):
            errors.append(_user_error(["metafields", str(i), "type"], "Type can't be blank"))
    if errors:
        return {"product": None, "userErrors": errors}
    now = ctx.sim.clock.now()
    for field in metafields:
        generate.set_metafield(
            catalog.numbers,
            product,
            namespace=field.get("namespace") or "$app",
            key=str(field.get("key")),
            type_=str(field.get("type") or "single_line_text_field"),
            value=str(field.get("value") or ""),
            now=now,
        )
    fields = {k: v for k, v in data.items() if k in _PRODUCT_FIELDS}
    catalog.update(product, fields, now=now)
    catalog.index(product)
    return {"product": product, "userErrors": []}


_PRODUCT_FIELDS = frozenset(
    ("title", "handle", "descriptionHtml", "vendor", "productType", "status", "tags", "seo")
)


@resolver("Mutation", "fileUpdate")
def file_update(_: Any, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    files: list[dict[str, Any]] = args["files"]
    catalog = ctx.sim.catalog
    errors: list[dict[str, Any]] = []
    found: list[Record] = []
    for i, item in enumerate(files):
        media = catalog.record(str(item["id"]), "MediaImage") if parse_gid(item["id"]) else None
        if media is None:
            errors.append(
                _user_error(
                    ["files", str(i), "id"],
                    f"File id {item['id']} does not exist.",
                    code="FILE_DOES_NOT_EXIST",
                )
            )
            continue
        alt = item.get("alt")
        if alt is not None and len(alt) > MAX_ALT:
            errors.append(
                _user_error(
                    ["files", str(i), "alt"],
                    f"The alt value exceeds the maximum limit of {MAX_ALT} characters.",
                    code="ALT_VALUE_LIMIT_EXCEEDED",
                )
            )
        found.append(media)
    if errors:
        return {"files": None, "userErrors": errors}
    now = ctx.sim.clock.now()
    touched: dict[int, Record] = {}
    for item, media in zip(files, found, strict=True):
        if "alt" in item:
            set_alt(media, item["alt"] or "")
            media["updatedAt"] = iso(now)
            touched[media["_product"]["_num"]] = media["_product"]
    for product in touched.values():
        catalog.update(product, {}, now=now)
    return {"files": found, "userErrors": []}


_VALIDATORS: dict[str, Callable[[str], object]] = {
    "json": json.loads,
    "number_integer": int,
    "number_decimal": float,
    "boolean": lambda v: {"true": True, "false": False}[v],
}


@resolver("Mutation", "metafieldsSet")
def metafields_set(_: Any, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    inputs: list[dict[str, Any]] = args["metafields"]
    if len(inputs) > MAX_METAFIELDS:
        raise GraphQLError(
            f"The input array size of {len(inputs)} is greater than the maximum of"
            f" {MAX_METAFIELDS}.",
            extensions={"code": "MAX_INPUT_SIZE_EXCEEDED"},
        )
    catalog = ctx.sim.catalog
    errors: list[dict[str, Any]] = []
    plan: list[tuple[Record, str, str, str, str]] = []
    for i, item in enumerate(inputs):

        def fail(field: str | None, message: str, code: str, *, at: int = i) -> None:
            path = ["metafields", str(at), *([field] if field else [])]
            errors.append(_user_error(path, message, code=code, elementIndex=at))

        owner = catalog.record(str(item["ownerId"])) if parse_gid(item["ownerId"]) else None
        if owner is None or owner.get("__typename") not in ("Product", "ProductVariant"):
            fail("ownerId", "Owner does not exist.", "INVALID")
            continue
        owner.setdefault("_metafields", [])
        namespace = item.get("namespace") or "$app"
        key = str(item["key"])
        if not 3 <= len(namespace) <= 255 and namespace != "$app":
            fail("namespace", "Namespace is too short or too long (3 to 255).", "TOO_SHORT")
            continue
        if not 2 <= len(key) <= 64:
            fail("key", "Key is too short or too long (2 to 64).", "TOO_SHORT")
            continue
        existing = next(
            (f for f in owner["_metafields"] if f["namespace"] == namespace and f["key"] == key),
            None,
        )
        type_ = item.get("type") or (existing["type"] if existing else None)
        if not type_:
            fail("type", "Type can't be blank.", "BLANK")
            continue
        value = str(item["value"])
        check = _VALIDATORS.get(type_)
        if check is not None:
            try:
                check(value)
            except (ValueError, KeyError):
                fail("value", f"Value is invalid for the type {type_}.", "INVALID_VALUE")
                continue
        if "compareDigest" in item:
            wanted = item["compareDigest"]
            current = existing["compareDigest"] if existing else None
            if wanted != current:
                fail(
                    None,
                    "The resource has been updated since it was loaded. Try again with an"
                    " updated `compareDigest` value.",
                    "STALE_OBJECT",
                )
                continue
        plan.append((owner, namespace, key, type_, value))
    if errors:
        return {"metafields": None, "userErrors": errors}
    now = ctx.sim.clock.now()
    written = [
        generate.set_metafield(
            catalog.numbers, owner, namespace=namespace, key=key, type_=type_, value=value, now=now
        )
        for owner, namespace, key, type_, value in plan
    ]
    for owner, *_ in plan:
        catalog.index(owner if owner["__typename"] == "Product" else owner["product"])
    return {"metafields": written, "userErrors": []}


@resolver("Mutation", "metafieldsDelete")
def metafields_delete(_: Any, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    inputs: list[dict[str, Any]] = args["metafields"]
    catalog = ctx.sim.catalog
    errors: list[dict[str, Any]] = []
    plan: list[tuple[Record, dict[str, Any]]] = []
    for i, item in enumerate(inputs):
        owner = catalog.record(str(item["ownerId"])) if parse_gid(item["ownerId"]) else None
        if owner is None or owner.get("__typename") not in ("Product", "ProductVariant"):
            errors.append(_user_error(["metafields", str(i), "ownerId"], "Owner does not exist."))
            continue
        plan.append((owner, item))
    if errors:
        return {"deletedMetafields": None, "userErrors": errors}
    deleted: list[dict[str, Any] | None] = []
    for owner, item in plan:
        fields: list[Record] = owner.setdefault("_metafields", [])
        namespace, key = item["namespace"], item["key"]
        found = next((f for f in fields if f["namespace"] == namespace and f["key"] == key), None)
        if found is None:
            deleted.append(None)
            continue
        fields.remove(found)
        # node(id:) must not find it any more (the catalog indexes records by global id).
        catalog._by_gid.pop(found["id"], None)
        deleted.append({"ownerId": owner["id"], "namespace": namespace, "key": key})
    return {"deletedMetafields": deleted, "userErrors": []}
