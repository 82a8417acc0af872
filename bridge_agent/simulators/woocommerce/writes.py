"""Writes: WordPress's schema validation of a body, then WooCommerce's setters and save.

Two stages, as in the real stack:

1. `validate_body`: WordPress core checks types and enums against the route schema *before* the
   permission callback, so a price sent as a number is `400 rest_invalid_param` ("regular_price is
   not of type string."), all bad parameters listed at once (platforms.md 1.3).
2. `create` / `update` / `trash` / `delete`: `prepare_object_for_database` + `save()`:
   - `images` replaces the whole set; `{id}` reuses an attachment, `{src}` "sideloads" a new one
     (a new id and a new uploads URL, never the URL that was sent), non-empty `alt`/`name` are
     written to the attachment, empty ones change nothing (platforms.md 1.11);
   - `meta_data` is upserted by key (`WC_Data::update_meta_data`): the first row with the key gets
     the value, the other rows with it are deleted; `{id, key, value}` targets one row; `null`
     deletes (platforms.md 1.11);
   - a SKU used by another product or variation is `400 product_invalid_sku` (platforms.md 1.3);
   - managed stock derives `stock_status` from the quantity; variable products ignore prices;
   - every save bumps `date_modified`, even when nothing changed (platforms.md 1.8);
   - trash appends `__trashed` to the slug and adds WordPress's `_wp_trash_meta_*` rows, fires
     `product.deleted`; a forced delete removes the post (and a variable product's variations)
     and fires nothing (platforms.md 1.8, WC-I28541).

Deliberately not modelled: changing `type` on update (ignored), sale schedules, grouped/external
specifics, `attributes` and variation writes over REST (the control API edits variations),
internal meta keys other than `_sku`, `_regular_price`, `_sale_price`, `_stock_status` and
`_manage_stock` (ignored).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from bridge_agent.simulators.woocommerce.catalog import Catalog
from bridge_agent.simulators.woocommerce.model import (
    BACKORDERS,
    CATALOG_VISIBILITY,
    PRODUCT_STATUSES,
    PRODUCT_TYPES,
    STOCK_STATUSES,
    TAX_STATUSES,
    VARIATION_STATUSES,
    Attachment,
    Item,
    Term,
    WooError,
    invalid_params,
)
from bridge_agent.simulators.woocommerce.render import slugify

_STRINGS = (
    "name",
    "slug",
    "description",
    "short_description",
    "sku",
    "regular_price",
    "sale_price",
    "tax_class",
    "weight",
    "purchase_note",
    "global_unique_id",
    # Read-only on REST, writable through the control API (reviews and orders change them).
    "average_rating",
)
_ENUMS: dict[str, tuple[str, ...]] = {
    "type": PRODUCT_TYPES,
    "status": PRODUCT_STATUSES,
    "catalog_visibility": CATALOG_VISIBILITY,
    "stock_status": STOCK_STATUSES,
    "backorders": BACKORDERS,
    "tax_status": TAX_STATUSES,
}
_BOOLS = ("featured", "manage_stock", "reviews_allowed", "virtual", "downloadable")
_INTS = ("stock_quantity", "menu_order", "rating_count", "total_sales")
_LISTS = {
    "categories": {"id": int, "name": str, "slug": str},
    "tags": {"id": int, "name": str, "slug": str},
    "images": {"id": int, "src": str, "name": str, "alt": str, "position": int},
    "meta_data": {"id": int, "key": str},
}
_TYPE_NAMES = {int: "integer", str: "string"}
_INTERNAL_META = {
    "_sku": "sku",
    "_regular_price": "regular_price",
    "_sale_price": "sale_price",
    "_stock_status": "stock_status",
    "_manage_stock": "manage_stock",
}

Problem = tuple[str, str]


def as_bool(value: Any) -> bool | None:
    # rest_is_boolean: real booleans, 0/1 and their strings, "true"/"false".
    if isinstance(value, bool):
        return value
    if value in (0, 1, "0", "1"):
        return value in (1, "1")
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def as_int(value: Any) -> int | None:
    # rest_is_integer: numbers and numeric strings without a fractional part; not booleans.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


def _check_list(key: str, value: Any, spec: dict[str, type]) -> tuple[Any, Problem | None]:
    if not isinstance(value, list):
        return None, ("rest_invalid_type", f"{key} is not of type array.")
    out = []
    for n, entry in enumerate(value):
        if not isinstance(entry, dict):
            return None, ("rest_invalid_type", f"{key}[{n}] is not of type object.")
        clean = dict(entry)
        for prop, kind in spec.items():
            if prop not in entry or (entry[prop] is None and prop == "id"):
                continue
            got = as_int(entry[prop]) if kind is int else entry[prop]
            if got is None or not isinstance(got, kind):
                message = f"{key}[{n}][{prop}] is not of type {_TYPE_NAMES[kind]}."
                return None, ("rest_invalid_type", message)
            clean[prop] = got
        out.append(clean)
    return out, None


def validate_body(body: Any) -> dict[str, Any]:
    """Schema-level checks of a product body; unknown and read-only keys are dropped."""
    if not isinstance(body, dict):
        return {}
    problems: dict[str, Problem] = {}
    out: dict[str, Any] = {}
    for key, value in body.items():
        if key in _STRINGS or key in _ENUMS:
            if not isinstance(value, str):
                problems[key] = ("rest_invalid_type", f"{key} is not of type string.")
            elif key in _ENUMS and value not in _ENUMS[key]:
                choices = ", ".join(_ENUMS[key])
                problems[key] = ("rest_not_in_enum", f"{key} is not one of {choices}.")
            else:
                out[key] = value
        elif key in _BOOLS:
            flag = as_bool(value)
            if flag is None:
                problems[key] = ("rest_invalid_type", f"{key} is not of type boolean.")
            else:
                out[key] = flag
        elif key in _INTS:
            number = as_int(value)
            if number is None:
                problems[key] = ("rest_invalid_type", f"{key} is not of type integer.")
            else:
                out[key] = number
        elif key == "dimensions":
            if not isinstance(value, dict) or not all(
                isinstance(value.get(k, ""), str) for k in ("length", "width", "height")
            ):
                problems[key] = ("rest_invalid_type", "dimensions is not of type object.")
            else:
                out[key] = value
        elif key in _LISTS:
            clean, problem = _check_list(key, value, _LISTS[key])
            if problem is not None:
                problems[key] = problem
            else:
                out[key] = clean
        elif key == "image":  # a variation's single image (control API)
            if value is not None and not isinstance(value, dict):
                problems[key] = ("rest_invalid_type", "image is not of type object.")
            else:
                out[key] = value
        elif key == "id":
            out[key] = value
    if problems:
        raise invalid_params(problems)
    return out


# -- applying -----------------------------------------------------------------------------------


def _derive_stock(item: Item) -> None:
    # With managed stock WooCommerce sets the status from the quantity on save.
    if item.manage_stock and item.stock_quantity is not None:
        if item.stock_quantity > 0:
            item.stock_status = "instock"
        elif item.backorders != "no":
            item.stock_status = "onbackorder"
        else:
            item.stock_status = "outofstock"


def _check_sku(cat: Catalog, item: Item, sku: str) -> None:
    if not sku:
        return
    # wc_product_has_unique_sku: across products and variations, trash included.
    for other in cat.items.values():
        if other.sku == sku and other.id != item.id:
            raise WooError(
                400,
                "product_invalid_sku",
                "Invalid or duplicated SKU.",
                data={"resource_id": other.id, "unique_sku": f"{sku}-1"},
            )


def _sideload(cat: Catalog, src: str, now: int) -> Attachment:
    parts = urlsplit(src)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise WooError(
            400,
            "woocommerce_product_image_upload_error",
            f"Error getting remote image {src}. Error: A valid URL was not provided.",
        )
    filename = re.sub(r"[^A-Za-z0-9._-]+", "-", parts.path.rsplit("/", 1)[-1]) or "image.jpg"
    stem, dot, ext = filename.rpartition(".")
    if not dot:
        stem, ext = filename, "jpg"
    candidate, n = f"{stem}.{ext}", 0
    while candidate in cat.upload_names:  # wp_unique_filename: name-1.jpg, name-2.jpg, ...
        n += 1
        candidate = f"{stem}-{n}.{ext}"
    cat.upload_names.add(candidate)
    month = time.strftime("%Y/%m", time.gmtime(now))
    return Attachment(
        id=cat.new_post_id(),
        src=f"/wp-content/uploads/{month}/{candidate}",
        name=candidate.rpartition(".")[0],
        alt="",
        created=now,
        modified=now,
    )


def _registrar(cat: Catalog, att: Attachment) -> Callable[[], None]:
    def register() -> None:
        cat.attachments[att.id] = att

    return register


def _images(
    cat: Catalog, images: list[dict[str, Any]], now: int, ops: list[Callable[[], None]]
) -> tuple[int, ...]:
    """WC_REST_Products_V2_Controller::set_product_images: the list replaces the whole set."""
    ids: list[int] = []
    for image in images:
        attachment_id = image.get("id") or 0
        src = image.get("src")
        if attachment_id == 0 and src:
            att = _sideload(cat, src, now)
            ops.append(_registrar(cat, att))
        elif attachment_id in cat.attachments:
            att = cat.attachments[attachment_id]
        else:
            raise WooError(
                400,
                "woocommerce_product_invalid_image_id",
                f"#{attachment_id} is an invalid image ID.",
            )
        alt, name = image.get("alt"), image.get("name")

        def touch(att: Attachment = att, alt: Any = alt, name: Any = name) -> None:
            # Only non-empty values are written: an empty alt never clears an existing one.
            if (alt and alt != att.alt) or (name and name != att.name):
                att.alt = alt or att.alt
                att.name = name or att.name
                att.modified = now
                cat.attachment_changed(att.id)

        ops.append(touch)
        ids.append(att.id)
    return tuple(ids)


def _meta(cat: Catalog, item: Item, entries: list[dict[str, Any]]) -> None:
    """WC_Data::update_meta_data for each entry, then save_meta_data (nulls are deleted)."""
    rows: list[list[Any]] = [list(m) for m in item.meta]
    for entry in entries:
        key = entry.get("key")
        if not isinstance(key, str) or not key:
            continue
        value = entry.get("value")
        if key in _INTERNAL_META:
            # Internal keys go to the matching setter instead of wp_postmeta.
            _set_field(cat, item, _INTERNAL_META[key], value)
            continue
        index: int | None = None
        if entry.get("id"):
            index = next((n for n, r in enumerate(rows) if r[0] == entry["id"]), None)
        else:
            matches = [n for n, r in enumerate(rows) if r[1] == key]
            for n in matches:  # only the first keeps a value; the others are deleted on save
                rows[n][2] = None
            index = matches[0] if matches else None
        if index is None:
            rows.append([0, key, value])
        else:
            rows[index][1], rows[index][2] = key, value
    kept: list[tuple[int, str, Any]] = []
    for row in rows:
        if row[2] is None:
            continue
        kept.append((row[0] or cat.new_meta_id(), row[1], row[2]))
    item.meta = tuple(kept)


def _set_field(cat: Catalog, item: Item, key: str, value: Any) -> None:
    if key == "manage_stock":
        item.manage_stock = value in (True, "yes", "1", 1)
    elif key == "sku":
        sku = str(value or "").strip()
        _check_sku(cat, item, sku)
        item.sku = sku
    elif key in ("regular_price", "sale_price"):
        setattr(item, key, str(value or "").strip())
    elif key == "stock_status" and value in STOCK_STATUSES:
        item.stock_status = value


def _terms(cat: Catalog, entries: list[dict[str, Any]], table: dict[int, Term]) -> tuple[int, ...]:
    ids: list[int] = []
    for entry in entries:
        term_id = entry.get("id")
        if term_id in table:
            ids.append(term_id)
        elif table is cat.tags and isinstance(entry.get("name"), str) and entry["name"]:
            # A tag given by name is created if it does not exist (platforms.md 1.4).
            name = entry["name"]
            found = next((t for t in table.values() if t.name.lower() == name.lower()), None)
            if found is None:
                found = Term(cat.new_term_id(), name, slugify(name))
                table[found.id] = found
            ids.append(found.id)
        # Unknown ids are skipped silently, as wp_set_object_terms does for integer ids.
    return tuple(dict.fromkeys(ids))


def apply_fields(
    cat: Catalog, item: Item, changes: dict[str, Any], now: int
) -> list[Callable[[], None]]:
    """Set every field on `item` (a copy); raise before anything is committed."""
    ops: list[Callable[[], None]] = []
    variation = item.type == "variation"
    simple_fields = (
        "name", "description", "short_description", "tax_class", "weight", "purchase_note",
        "global_unique_id", "catalog_visibility", "backorders", "tax_status", "featured",
        "reviews_allowed", "virtual", "downloadable", "menu_order", "average_rating",
        "rating_count", "total_sales", "manage_stock", "stock_quantity", "stock_status",
    )  # fmt: skip
    for key in simple_fields:
        if key in changes:
            setattr(item, key, changes[key])
    if "status" in changes:
        if variation and changes["status"] not in VARIATION_STATUSES:
            raise invalid_params(
                {
                    "status": (
                        "rest_not_in_enum",
                        "status is not one of " + ", ".join(VARIATION_STATUSES) + ".",
                    )
                }
            )
        item.status = changes["status"]
    for key in ("sku", "regular_price", "sale_price"):
        if key in changes:
            _set_field(cat, item, key, changes[key])
    if item.type in ("variable", "grouped"):
        item.regular_price = item.sale_price = ""  # ignored for these types (platforms.md 1.4)
    if "dimensions" in changes:
        old = dict(zip(("length", "width", "height"), item.dimensions, strict=True))
        old.update({k: v for k, v in changes["dimensions"].items() if k in old})
        item.dimensions = (old["length"], old["width"], old["height"])
    if "categories" in changes and not variation:
        item.categories = _terms(cat, changes["categories"], cat.categories)
    if "tags" in changes and not variation:
        item.tags = _terms(cat, changes["tags"], cat.tags)
    if "images" in changes:
        ids = _images(cat, changes["images"], now, ops)
        item.image_ids = ids[:1] if variation else ids
    if "image" in changes and variation:
        image = changes["image"]
        item.image_ids = _images(cat, [image], now, ops) if image else ()
    if "meta_data" in changes:
        _meta(cat, item, changes["meta_data"])
    if "slug" in changes and not variation:
        wanted = slugify(changes["slug"]) if changes["slug"] else ""
        if wanted != item.slug:
            cat.slugs.discard(item.slug)
            item.slug = cat.unique_slug(wanted) if wanted else ""
    if not variation and not item.slug and item.status in ("publish", "private"):
        # Publishing gives a post its post_name from the title, made unique.
        item.slug = cat.unique_slug(slugify(item.name))
    _derive_stock(item)
    return ops


def create(cat: Catalog, changes: dict[str, Any]) -> Item:
    """`POST /products`: a new product; fires `product.created`."""
    if changes.get("id"):
        raise WooError(400, "woocommerce_rest_product_exists", "Cannot create existing product.")
    now = cat.clock.now()
    item = Item(
        id=0,
        type=changes.get("type", "simple"),
        name="",
        slug="",
        status="publish",
        created=now,
        modified=now,
    )
    ops = apply_fields(cat, item, changes, now)
    if not item.name:
        item.name = "Product"  # what the data store inserts as post_title when none is given
        if not item.slug and item.status in ("publish", "private"):
            item.slug = cat.unique_slug("product")
    item.id = cat.new_post_id()
    for op in ops:
        op()
    cat.add(item)
    cat.emit("created", item.id)
    return item


def update(
    cat: Catalog, item: Item, changes: dict[str, Any], *, bump: bool = True, events: bool = True
) -> Item:
    """`PUT /products/{id}` (and the control API's PATCH): every save bumps date_modified."""
    now = cat.clock.now()
    target = cat.copy_item(item)
    ops = apply_fields(cat, target, changes, now)
    for op in ops:
        op()
    if bump:
        target.modified = now
    if target.slug:
        cat.slugs.add(target.slug)
    cat.items[target.id] = target
    cat.changed(target.id, target.parent_id)
    if events:
        cat.emit("updated", target.id)
    parent = cat.items.get(target.parent_id) if target.type == "variation" else None
    if parent is not None and bump:
        # A variation save runs the parent's deferred sync, which saves the parent too
        # (WC_Product_Variable::sync); whether that always bumps its date is [UNCONFIRMED]
        # upstream (platforms.md 8), and the simulator chooses yes.
        parent.modified = now
        cat.changed(parent.id)
        if events:
            cat.emit("updated", parent.id)
    return target


def trash(cat: Catalog, item: Item) -> Item:
    """`DELETE /products/{id}` without force: status trash, `product.deleted` with `{"id"}`."""
    if item.status == "trash":
        raise WooError(
            410, "woocommerce_rest_already_trashed", "The product has already been deleted."
        )
    now = cat.clock.now()
    target = cat.copy_item(item)
    extra: list[tuple[int, str, Any]] = [
        (cat.new_meta_id(), "_wp_trash_meta_status", item.status),
        (cat.new_meta_id(), "_wp_trash_meta_time", str(now)),
    ]
    if item.slug:
        # wp_add_trashed_suffix_to_post_name_for_post frees the slug for new products.
        extra.append((cat.new_meta_id(), "_wp_desired_post_slug", item.slug))
        cat.slugs.discard(item.slug)
        target.desired_slug = item.slug
        target.slug = cat.unique_slug(f"{item.slug}__trashed")
        cat.slugs.add(target.slug)
    target.meta = item.meta + tuple(extra)
    target.status = "trash"
    target.modified = now
    cat.items[target.id] = target
    cat.changed(target.id, target.parent_id)
    cat.emit("deleted", target.id)
    return target


def untrash(cat: Catalog, item: Item) -> Item:
    """What the WP admin's "Restore" does: back to draft (WordPress 5.6+), slug restored,
    `product.restored`. The REST API has no untrash; a PUT of `status` is a plain update."""
    now = cat.clock.now()
    target = cat.copy_item(item)
    hidden = ("_wp_trash_meta_status", "_wp_trash_meta_time", "_wp_desired_post_slug")
    target.meta = tuple(m for m in item.meta if m[1] not in hidden)
    target.status = "draft"
    if item.desired_slug:
        cat.slugs.discard(item.slug)
        target.slug = cat.unique_slug(item.desired_slug)
        cat.slugs.add(target.slug)
        target.desired_slug = ""
    target.modified = now
    cat.items[target.id] = target
    cat.changed(target.id, target.parent_id)
    cat.emit("restored", target.id)
    return target


def delete(cat: Catalog, item: Item) -> None:
    """`DELETE ?force=true` and batch deletes: gone for good, and no webhook (WC-I28541)."""
    cat.remove(item)
