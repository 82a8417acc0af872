"""The shop's catalog: products with their variants, inventory items, media and metafields,
the indexes that find any record by global id, search and sort, and the change events.

Every change goes through a method here, which keeps the derived fields (`model.refresh`) and the
indexes right and emits an event (`products/create|update|delete`, `inventory_levels/update`)
to the listeners (the webhook dispatcher); the caller says whether `updatedAt` moves. Stock
changes never move the product's `updatedAt`: on Shopify an inventory level is its own record,
which is why `inventory_levels/update` exists and why polling `updated_at` misses stock changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from bridge_agent.simulators.shopify import generate
from bridge_agent.simulators.shopify.model import (
    LOCATION_ID,
    Record,
    gid,
    iso,
    parse_gid,
    refresh,
    refresh_variant,
    rest_time,
    set_alt,
)
from bridge_agent.simulators.shopify.search import compile_query

Listener = Callable[[str, dict[str, Any]], None]
SortKey = Callable[[Record], tuple[Any, ...]]

_PRODUCT_FIELDS: dict[str, Callable[[Record], Any]] = {
    "updated_at": lambda p: p["_updated"],
    "created_at": lambda p: p["_created"],
    "status": lambda p: p["status"],
    "sku": lambda p: [v["sku"] for v in p["_variants"]],
    "barcode": lambda p: [v["barcode"] for v in p["_variants"]],
    "tag": lambda p: p["tags"],
    "id": lambda p: p["_num"],
    "handle": lambda p: p["handle"],
    "title": lambda p: p["title"],
    "vendor": lambda p: p["vendor"],
    "product_type": lambda p: p["productType"],
}
_VARIANT_FIELDS: dict[str, Callable[[Record], Any]] = {
    "updated_at": lambda v: v["product"]["_updated"],
    "sku": lambda v: v["sku"],
    "barcode": lambda v: v["barcode"],
    "id": lambda v: v["_num"],
    "product_id": lambda v: v["product"]["_num"],
    "inventory_item_id": lambda v: v["inventoryItem"]["_num"],
    "title": lambda v: v["title"],
}
_PRODUCT_SORTS: dict[str, SortKey] = {
    "ID": lambda p: (p["_num"],),
    "RELEVANCE": lambda p: (p["_num"],),
    "UPDATED_AT": lambda p: (p["_updated"], p["_num"]),
    "CREATED_AT": lambda p: (p["_created"], p["_num"]),
    "PUBLISHED_AT": lambda p: (p["publishedAt"] or "", p["_num"]),
    "TITLE": lambda p: (p["title"].lower(), p["_num"]),
    "VENDOR": lambda p: (p["vendor"].lower(), p["_num"]),
    "PRODUCT_TYPE": lambda p: (p["productType"].lower(), p["_num"]),
    "INVENTORY_TOTAL": lambda p: (p["totalInventory"], p["_num"]),
}


class Catalog:
    """Products by numeric id, and every child record by its global id."""

    def __init__(self, *, shop_domain: str, image_origin: str) -> None:
        self.products: dict[int, Record] = {}
        self.numbers = generate.Numbers()
        self.shop_domain = shop_domain
        self.image_origin = image_origin
        self.listeners: list[Listener] = []
        self._by_gid: dict[str, Record] = {}

    def move_images(self, origin: str) -> None:
        """Serve the images from `origin` (the simulator's own address, once it listens): every
        image URL made with the old origin is rewritten, and new ones use the new origin. The
        agent checks image URLs; they must never point off this machine."""
        old, self.image_origin = self.image_origin, origin
        for product in self.products.values():
            for media in product["_media"]:
                image = media["image"]
                for key in ("url", "src", "originalSrc", "transformedSrc"):
                    value = image.get(key)
                    if isinstance(value, str) and value.startswith(old):
                        image[key] = origin + value[len(old) :]

    # -- indexes ----------------------------------------------------------------------------------

    def index(self, product: Record) -> None:
        self.products[product["_num"]] = product
        self._by_gid[product["id"]] = product
        for variant in product["_variants"]:
            self._by_gid[variant["id"]] = variant
            self._by_gid[variant["inventoryItem"]["id"]] = variant["inventoryItem"]
        for media in product["_media"]:
            self._by_gid[media["id"]] = media
        for field in product["_metafields"]:
            self._by_gid[field["id"]] = field

    def _unindex(self, product: Record) -> None:
        self.products.pop(product["_num"], None)
        self._by_gid.pop(product["id"], None)
        for variant in product["_variants"]:
            self._by_gid.pop(variant["id"], None)
            self._by_gid.pop(variant["inventoryItem"]["id"], None)
        for media in product["_media"]:
            self._by_gid.pop(media["id"], None)
        for field in product["_metafields"]:
            self._by_gid.pop(field["id"], None)

    def reindex_all(self) -> None:
        self._by_gid.clear()
        for product in list(self.products.values()):
            self.index(product)

    def record(self, global_id: str, kind: str | None = None) -> Record | None:
        """The live record with this global id (of this `kind` if given), or None."""
        if kind is not None:
            parsed = parse_gid(global_id)
            if parsed is None or parsed[0] != kind:
                return None
            global_id = gid(kind, parsed[1])
        return self._by_gid.get(global_id.split("?", 1)[0])

    def product(self, num: int) -> Record | None:
        return self.products.get(num)

    def inventory_item(self, num: int) -> Record | None:
        return self._by_gid.get(gid("InventoryItem", num))

    # -- search ----------------------------------------------------------------------------------

    def search_products(
        self, query: str | None, sort_key: str | None
    ) -> tuple[list[Record], SortKey]:
        """Products matching `query`, sorted ascending by `sort_key` (and the sort key)."""
        predicate = compile_query(query, _PRODUCT_FIELDS)
        key = _PRODUCT_SORTS.get(sort_key or "ID", _PRODUCT_SORTS["ID"])
        items = [p for p in self.products.values() if predicate(p)]
        items.sort(key=key)
        return items, key

    def search_variants(self, query: str | None) -> tuple[list[Record], SortKey]:
        predicate = compile_query(query, _VARIANT_FIELDS)
        items = [v for p in self.products.values() for v in p["_variants"] if predicate(v)]

        def key(v: Record) -> tuple[Any, ...]:
            return (v["_num"],)

        items.sort(key=key)
        return items, key

    # -- events ----------------------------------------------------------------------------------

    def emit(self, topic: str, payload: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener(topic, payload)

    def touch(self, product: Record, now: int) -> None:
        product["_updated"] = now
        product["updatedAt"] = iso(now)

    # -- changes ---------------------------------------------------------------------------------

    def create(self, fields: dict[str, Any], *, now: int, webhooks: bool = True) -> Record:
        """A product from GraphQL-named fields; `variants` and `media` lists are optional."""
        product = generate.new_product(self.numbers, fields, now=now, shop_domain=self.shop_domain)
        variants = fields.get("variants") or [{}]
        names: list[str] = []
        values: dict[str, list[str]] = {}
        for body in variants:
            for option in body.get("selectedOptions") or []:
                if option["name"] not in values:
                    names.append(option["name"])
                    values[option["name"]] = []
                if option["value"] not in values[option["name"]]:
                    values[option["name"]].append(option["value"])
        generate.set_options(
            product, [(n, values[n]) for n in names] or [("Title", ["Default Title"])]
        )
        for body in variants:
            generate.add_variant(self.numbers, product, dict(body), now=now)
        for i, body in enumerate(fields.get("media") or []):
            generate.add_media(
                self.numbers,
                product,
                url=str(body.get("url") or f"{self.image_origin}/files/{product['_num']}-{i}.jpg"),
                alt=str(body.get("alt") or ""),
                width=int(body.get("width") or 1200),
                height=int(body.get("height") or 1200),
                now=now,
            )
        refresh(product)
        self.index(product)
        if webhooks:
            self.emit("products/create", self.rest_product(product))
        return product

    def update(
        self,
        product: Record,
        fields: dict[str, Any],
        *,
        now: int,
        bump: bool = True,
        webhooks: bool = True,
    ) -> Record:
        """Change GraphQL-named fields; `variants` / `media` items carry their `id`."""
        for name in ("title", "handle", "descriptionHtml", "vendor", "productType", "status"):
            if name in fields:
                product[name] = fields[name]
        if "status" in fields:
            product["publishedAt"] = (
                product["publishedAt"] or iso(now) if fields["status"] == "ACTIVE" else None
            )
        if "tags" in fields:
            product["tags"] = sorted({str(t) for t in fields["tags"]})
        if "seo" in fields:
            product["seo"] = {**product["seo"], **(fields["seo"] or {})}
        for body in fields.get("variants") or []:
            variant = self.record(str(body.get("id")), "ProductVariant")
            if variant is None or variant["product"] is not product:
                raise KeyError(f"variant {body.get('id')} is not one of this product's")
            for name in (
                "sku", "barcode", "price", "compareAtPrice", "inventoryQuantity", "inventoryPolicy"
            ):  # fmt: skip
                if name in body:
                    variant[name] = body[name]
            if "tracked" in body:
                variant["inventoryItem"]["tracked"] = bool(body["tracked"])
            variant["updatedAt"] = iso(now)
        for body in fields.get("media") or []:
            media = self.record(str(body.get("id")), "MediaImage")
            if media is None or media["_product"] is not product:
                raise KeyError(f"media {body.get('id')} is not one of this product's")
            if "alt" in body:
                set_alt(media, str(body["alt"] or ""))
            if "url" in body:
                for key in ("url", "src", "originalSrc", "transformedSrc"):
                    media["image"][key] = str(body["url"])
            media["updatedAt"] = iso(now)
        refresh(product)
        if bump:
            self.touch(product, now)
        if webhooks:
            self.emit("products/update", self.rest_product(product))
        return product

    def delete(self, product: Record, *, webhooks: bool = True) -> None:
        self._unindex(product)
        if webhooks:
            self.emit("products/delete", {"id": product["_num"]})

    def set_available(
        self, item: Record, available: int, *, now: int, webhooks: bool = True
    ) -> None:
        """A stock change at the shop's location: the product's `updatedAt` does not move."""
        variant = item["variant"]
        variant["inventoryQuantity"] = available
        item["updatedAt"] = iso(now)
        refresh_variant(variant)
        refresh(variant["product"])
        if webhooks:
            self.emit(
                "inventory_levels/update",
                {
                    "inventory_item_id": item["_num"],
                    "location_id": LOCATION_ID,
                    "available": available,
                    "updated_at": rest_time(now),
                    "admin_graphql_api_id": (
                        f"gid://shopify/InventoryLevel/{LOCATION_ID}"
                        f"?inventory_item_id={item['_num']}"
                    ),
                },
            )

    # -- views -----------------------------------------------------------------------------------

    def rest_product(self, product: Record) -> dict[str, Any]:
        """The REST-shaped product of a `products/create|update` webhook (2.7)."""
        num = product["_num"]
        images = [
            {
                "id": m["_num"],
                "product_id": num,
                "position": i,
                "alt": m["alt"] or None,
                "src": m["image"]["url"],
                "width": m["image"]["width"],
                "height": m["image"]["height"],
                "variant_ids": [],
                "admin_graphql_api_id": gid("ProductImage", m["_num"]),
            }
            for i, m in enumerate(product["_media"], start=1)
        ]
        return {
            "id": num,
            "title": product["title"],
            "body_html": product["descriptionHtml"],
            "vendor": product["vendor"],
            "product_type": product["productType"],
            "created_at": rest_time(product["_created"]),
            "handle": product["handle"],
            "updated_at": rest_time(product["_updated"]),
            "published_at": product["publishedAt"],
            "template_suffix": None,
            "published_scope": "global",
            "tags": ", ".join(product["tags"]),
            "status": product["status"].lower(),
            "admin_graphql_api_id": product["id"],
            "variants": [self._rest_variant(num, v) for v in product["_variants"]],
            "options": [
                {
                    "id": int(o["id"].rsplit("/", 1)[1]),
                    "product_id": num,
                    "name": o["name"],
                    "position": o["position"],
                    "values": o["values"],
                }
                for o in product["options"]
            ],
            "images": images,
            "image": images[0] if images else None,
        }

    @staticmethod
    def _rest_variant(product_num: int, v: Record) -> dict[str, Any]:
        values = [o["value"] for o in v["selectedOptions"]] + [None, None, None]
        return {
            "id": v["_num"],
            "product_id": product_num,
            "title": v["title"],
            "price": v["price"],
            "sku": v["sku"] or "",
            "position": v["position"],
            "inventory_policy": v["inventoryPolicy"].lower(),
            "compare_at_price": v["compareAtPrice"],
            "fulfillment_service": "manual",
            "inventory_management": "shopify" if v["inventoryItem"]["tracked"] else None,
            "option1": values[0],
            "option2": values[1],
            "option3": values[2],
            "created_at": v["createdAt"],
            "updated_at": v["updatedAt"],
            "taxable": True,
            "barcode": v["barcode"],
            "inventory_item_id": v["inventoryItem"]["_num"],
            "inventory_quantity": v["inventoryQuantity"],
            "admin_graphql_api_id": v["id"],
        }

    def truth(self) -> list[dict[str, Any]]:
        """Every live product as a query of every field the adapter reads would answer it."""
        return [truth_product(p) for p in sorted(self.products.values(), key=lambda p: p["_num"])]

    def all_products(self) -> Iterable[Record]:
        return self.products.values()


def truth_product(p: Record) -> dict[str, Any]:
    return {
        "id": p["id"],
        "legacyResourceId": p["legacyResourceId"],
        "title": p["title"],
        "handle": p["handle"],
        "status": p["status"],
        "descriptionHtml": p["descriptionHtml"],
        "seo": dict(p["seo"]),
        "vendor": p["vendor"],
        "productType": p["productType"],
        "tags": list(p["tags"]),
        "createdAt": p["createdAt"],
        "updatedAt": p["updatedAt"],
        "publishedAt": p["publishedAt"],
        "onlineStoreUrl": p["onlineStoreUrl"],
        "totalInventory": p["totalInventory"],
        "options": [{"name": o["name"], "values": list(o["values"])} for o in p["options"]],
        "variants": [
            {
                "id": v["id"],
                "title": v["title"],
                "sku": v["sku"],
                "barcode": v["barcode"],
                "price": v["price"],
                "compareAtPrice": v["compareAtPrice"],
                "inventoryQuantity": v["inventoryQuantity"],
                "inventoryPolicy": v["inventoryPolicy"],
                "availableForSale": v["availableForSale"],
                "position": v["position"],
                "selectedOptions": [
                    {"name": o["name"], "value": o["value"]} for o in v["selectedOptions"]
                ],
                "inventoryItem": {
                    "id": v["inventoryItem"]["id"],
                    "tracked": v["inventoryItem"]["tracked"],
                },
                "updatedAt": v["updatedAt"],
            }
            for v in p["_variants"]
        ],
        "media": [
            {
                "id": m["id"],
                "alt": m["alt"],
                "image": {
                    "url": m["image"]["url"],
                    "altText": m["image"]["altText"],
                    "width": m["image"]["width"],
                    "height": m["image"]["height"],
                },
            }
            for m in p["_media"]
        ],
        "metafields": [
            {"namespace": f["namespace"], "key": f["key"], "type": f["type"], "value": f["value"]}
            for f in p["_metafields"]
        ],
    }
