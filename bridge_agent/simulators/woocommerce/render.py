"""Records to WooCommerce JSON: the product (platforms.md 1.4) and the variation object (1.5).

Field order follows the v3 controllers, so a raw body looks like a real one. Dates come in pairs:
the site-local wall time without a zone, and its `_gmt` twin (platforms.md 1.1, 7.6). Money is a
string, possibly `""`; `regular_price`/`sale_price` are blank on variable products, whose `price`
is the cheapest published variation's (platforms.md 1.4).
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING, Any

from bridge_agent.simulators.woocommerce.model import (
    REST_PREFIX,
    Attachment,
    Item,
    Term,
    wall,
)

if TYPE_CHECKING:
    from bridge_agent.simulators.woocommerce.catalog import Catalog

_SYMBOLS = {"EUR": "&euro;", "USD": "&#36;", "GBP": "&pound;"}


def _decimal(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def on_sale(regular: str, sale: str) -> bool:
    # WC_Product::is_on_sale without schedules: a sale price strictly below a regular price.
    r, s = _decimal(regular), _decimal(sale)
    return r is not None and s is not None and s < r


def own_price(item: Item) -> str:
    """`_price` of a simple product or a variation: the sale price while on sale, else regular."""
    return item.sale_price if on_sale(item.regular_price, item.sale_price) else item.regular_price


def slugify(text: str) -> str:
    """Close enough to WordPress's `sanitize_title` for generated and ASCII names."""
    # remove_accents, then keep ASCII letters and digits: "Café" -> "cafe".
    folded = unicodedata.normalize("NFKD", text.replace("&amp;", ""))
    text = folded.encode("ascii", "ignore").decode().lower()
    text = re.sub(r"[^a-z0-9]+", "-", text)
    return text.strip("-") or "product"


def dates(prefix: str, ts: int | None, utc_offset: int) -> dict[str, str | None]:
    if ts is None:
        return {prefix: None, f"{prefix}_gmt": None}
    return {prefix: wall(ts + utc_offset), f"{prefix}_gmt": wall(ts)}


class Renderer:
    """Builds the documents; needs the catalog for images, terms, children and the site URL."""

    def __init__(self, catalog: Catalog) -> None:
        self.cat = catalog

    # -- pieces ----------------------------------------------------------------------------------

    def amount(self, value: str) -> str:
        number = _decimal(value) or 0.0
        symbol = _SYMBOLS.get(self.cat.currency, self.cat.currency)
        return (
            '<span class="woocommerce-Price-amount amount"><bdi>'
            f'<span class="woocommerce-Price-currencySymbol">{symbol}</span>{number:.2f}'
            "</bdi></span>"
        )

    def image(self, att: Attachment) -> dict[str, Any]:
        off = self.cat.utc_offset
        # Uploads are stored site-relative so the site URL can be set when the server binds.
        src = f"{self.cat.site_url}{att.src}" if att.src.startswith("/") else att.src
        stem, dot, ext = src.rpartition(".")
        thumb = f"{stem}-300x300.{ext}" if dot else src
        return {
            "id": att.id,
            **dates("date_created", att.created, off),
            **dates("date_modified", att.modified, off),
            "src": src,
            "name": att.name,
            "alt": att.alt,
            "srcset": f"{src} 800w, {thumb} 300w",
            "sizes": "(max-width: 800px) 100vw, 800px",
            "thumbnail": thumb,
        }

    def images(self, item: Item) -> list[dict[str, Any]]:
        # Attachments deleted from the media library simply disappear (get_images skips them).
        atts = self.cat.attachments
        return [self.image(atts[i]) for i in item.image_ids if i in atts]

    @staticmethod
    def terms(ids: tuple[int, ...], table: dict[int, Term]) -> list[dict[str, Any]]:
        return [{"id": t.id, "name": t.name, "slug": t.slug} for i in ids if (t := table.get(i))]

    @staticmethod
    def meta(item: Item) -> list[dict[str, Any]]:
        # Keys starting with `wp_` never reach meta_data (WC-DSWP, platforms.md 1.4).
        return [{"id": i, "key": k, "value": v} for i, k, v in item.meta if not k.startswith("wp_")]

    def permalink(self, item: Item) -> str:
        site = self.cat.site_url
        if item.type == "variation":
            parent = self.cat.items.get(item.parent_id)
            base = self.permalink(parent) if parent else f"{site}/?post_type=product&p={item.id}"
            args = "&".join(
                f"attribute_{attribute_slug(aid, name)}={slugify(option)}"
                for aid, name, option in item.options
            )
            return f"{base}{'&' if '?' in base else '?'}{args}" if args else base
        # Drafts and pending posts have no post_name yet: WordPress links them with ?p=
        # (wp_insert_post leaves post_name empty for them).
        if not item.slug or item.status in ("draft", "pending", "auto-draft", "future"):
            return f"{site}/?post_type=product&p={item.id}"
        return f"{site}/product/{item.slug}/"

    def price_html(self, item: Item, price: str, low: str, high: str) -> str:
        if price == "":
            return ""
        if item.type == "variable":
            if low == high:
                return self.amount(low)
            return f"{self.amount(low)} &ndash; {self.amount(high)}"
        if on_sale(item.regular_price, item.sale_price):
            return (
                f'<del aria-hidden="true">{self.amount(item.regular_price)}</del> '
                f'<ins aria-hidden="true">{self.amount(item.sale_price)}</ins>'
            )
        return self.amount(price)

    def variable_prices(self, item: Item) -> tuple[str, str, str, bool]:
        """(price, low, high, on_sale) of a variable product, from its published variations."""
        prices: list[tuple[float, str]] = []
        any_sale = False
        for vid in item.variations:
            v = self.cat.items.get(vid)
            if v is None or v.status != "publish":
                continue
            p = own_price(v)
            number = _decimal(p)
            if number is not None:
                prices.append((number, p))
            any_sale = any_sale or on_sale(v.regular_price, v.sale_price)
        if not prices:
            return "", "", "", False
        prices.sort()
        return prices[0][1], prices[0][1], prices[-1][1], any_sale

    def links(self, item: Item) -> dict[str, Any]:
        api = f"{self.cat.site_url}/wp-json/wc/v3"
        if item.type == "variation" and item.parent_id:
            parent = item.parent_id
            return {
                "self": [{"href": f"{api}/products/{parent}/variations/{item.id}"}],
                "collection": [{"href": f"{api}/products/{parent}/variations"}],
                "up": [{"href": f"{api}/products/{parent}"}],
            }
        links: dict[str, Any] = {
            "self": [{"href": f"{api}/products/{item.id}"}],
            "collection": [{"href": f"{api}/products"}],
        }
        if item.parent_id:
            links["up"] = [{"href": f"{api}/products/{item.parent_id}"}]
        return links

    # -- documents -------------------------------------------------------------------------------

    def product(self, item: Item) -> dict[str, Any]:
        """`GET /products/{id}`: also used for a variation reached through the products route
        (the `sku` filter, a webhook for a variation id), with `type` "variation" and `parent_id`.
        """
        off = self.cat.utc_offset
        is_variable = item.type == "variable"
        if is_variable:
            price, low, high, sale_flag = self.variable_prices(item)
            regular = sale = ""
        else:
            price = low = high = own_price(item)
            regular, sale = item.regular_price, item.sale_price
            sale_flag = on_sale(regular, sale)
        name = item.name
        images = self.images(item)
        if item.type == "variation":
            attributes: list[dict[str, Any]] = [
                {"id": aid, "name": aname, "option": option} for aid, aname, option in item.options
            ]
            parent = self.cat.items.get(item.parent_id)
            if parent is not None:
                name = f"{parent.name} - {', '.join(o for _, _, o in item.options)}"
        else:
            attributes = [
                {
                    "id": a.id,
                    "name": a.name,
                    "slug": attribute_slug(a.id, a.name),
                    "position": a.position,
                    "visible": a.visible,
                    "variation": a.variation,
                    "options": list(a.options),
                }
                for a in item.attributes
            ]
        managed = item.manage_stock
        return {
            "id": item.id,
            "name": name,
            "slug": item.slug,
            "permalink": self.permalink(item),
            **dates("date_created", item.created, off),
            **dates("date_modified", item.modified, off),
            "type": item.type,
            "status": item.status,
            "featured": item.featured,
            "catalog_visibility": item.catalog_visibility,
            "description": item.description,
            "short_description": item.short_description,
            "sku": item.sku,
            "price": price,
            "regular_price": regular,
            "sale_price": sale,
            **dates("date_on_sale_from", None, off),
            **dates("date_on_sale_to", None, off),
            "on_sale": sale_flag,
            "purchasable": price != "",
            "total_sales": item.total_sales,
            "virtual": item.virtual,
            "downloadable": item.downloadable,
            "downloads": [],
            "download_limit": -1,
            "download_expiry": -1,
            "external_url": "",
            "button_text": "",
            "tax_status": item.tax_status,
            "tax_class": item.tax_class,
            "manage_stock": managed,
            "stock_quantity": item.stock_quantity if managed else None,
            "backorders": item.backorders,
            "backorders_allowed": item.backorders != "no",
            "backordered": False,
            "low_stock_amount": None,
            "sold_individually": False,
            "weight": item.weight,
            "dimensions": dict(zip(("length", "width", "height"), item.dimensions, strict=True)),
            "shipping_required": not item.virtual,
            "shipping_taxable": item.tax_status == "taxable" and not item.virtual,
            "shipping_class": "",
            "shipping_class_id": 0,
            "reviews_allowed": item.reviews_allowed,
            "average_rating": item.average_rating,
            "rating_count": item.rating_count,
            "upsell_ids": [],
            "cross_sell_ids": [],
            "parent_id": item.parent_id,
            "purchase_note": item.purchase_note,
            "categories": self.terms(item.categories, self.cat.categories),
            "brands": [],
            "tags": self.terms(item.tags, self.cat.tags),
            "images": images,
            "attributes": attributes,
            "default_attributes": [],
            "variations": list(item.variations),
            "grouped_products": [],
            "menu_order": item.menu_order,
            "price_html": self.price_html(item, price, low, high),
            "related_ids": [],
            "meta_data": self.meta(item),
            "stock_status": item.stock_status,
            "has_options": is_variable,
            "post_password": "",
            "global_unique_id": item.global_unique_id,
            "_links": self.links(item),
        }

    def variation(self, item: Item) -> dict[str, Any]:
        """`GET /products/{parent}/variations/{id}`: the documented variation schema (1.5).

        No `parent_id` or `name` here: the documented schema has none (platforms.md 1.6 says to
        keep the parent id from the URL), so a client cannot come to rely on them.
        """
        off = self.cat.utc_offset
        price = own_price(item)
        atts = self.cat.attachments
        image = next((self.image(atts[i]) for i in item.image_ids if i in atts), None)
        managed = item.manage_stock
        return {
            "id": item.id,
            **dates("date_created", item.created, off),
            **dates("date_modified", item.modified, off),
            "description": item.description,
            "permalink": self.permalink(item),
            "sku": item.sku,
            "global_unique_id": item.global_unique_id,
            "price": price,
            "regular_price": item.regular_price,
            "sale_price": item.sale_price,
            **dates("date_on_sale_from", None, off),
            **dates("date_on_sale_to", None, off),
            "on_sale": on_sale(item.regular_price, item.sale_price),
            "status": item.status,
            "purchasable": price != "",
            "virtual": item.virtual,
            "downloadable": item.downloadable,
            "downloads": [],
            "download_limit": -1,
            "download_expiry": -1,
            "tax_status": item.tax_status,
            "tax_class": item.tax_class,
            "manage_stock": managed,
            "stock_quantity": item.stock_quantity if managed else None,
            "stock_status": item.stock_status,
            "backorders": item.backorders,
            "backorders_allowed": item.backorders != "no",
            "backordered": False,
            "low_stock_amount": None,
            "weight": item.weight,
            "dimensions": dict(zip(("length", "width", "height"), item.dimensions, strict=True)),
            "shipping_class": "",
            "shipping_class_id": 0,
            "image": image,
            "attributes": [
                {"id": aid, "name": aname, "option": option} for aid, aname, option in item.options
            ],
            "menu_order": item.menu_order,
            "meta_data": self.meta(item),
            "_links": self.links(item),
        }

    def category(self, term: Term, count: int) -> dict[str, Any]:
        api = f"{self.cat.site_url}{REST_PREFIX}"
        links: dict[str, Any] = {
            "self": [{"href": f"{api}/products/categories/{term.id}"}],
            "collection": [{"href": f"{api}/products/categories"}],
        }
        if term.parent:
            links["up"] = [{"href": f"{api}/products/categories/{term.parent}"}]
        return {
            "id": term.id,
            "name": term.name,
            "slug": term.slug,
            "parent": term.parent,
            "description": term.description,
            "display": "default",
            "image": None,
            "menu_order": 0,
            "count": count,
            "_links": links,
        }

    def tag(self, term: Term, count: int) -> dict[str, Any]:
        api = f"{self.cat.site_url}{REST_PREFIX}"
        return {
            "id": term.id,
            "name": term.name,
            "slug": term.slug,
            "description": term.description,
            "count": count,
            "_links": {
                "self": [{"href": f"{api}/products/tags/{term.id}"}],
                "collection": [{"href": f"{api}/products/tags"}],
            },
        }


def attribute_slug(attribute_id: int, name: str) -> str:
    # Global (taxonomy) attributes are `pa_<name>`; custom ones use the sanitised name.
    return f"pa_{slugify(name)}" if attribute_id else slugify(name)


def filter_fields(doc: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """WordPress core's `_fields` filter (`rest_filter_response_fields`): only the top-level or
    dotted nested keys asked for (`id` and `_links` too), in the document's own order."""
    wanted: dict[str, list[str]] = {}
    for spec in fields:
        head, _, rest = spec.partition(".")
        wanted.setdefault(head, []).append(rest)
    out: dict[str, Any] = {}
    for key, value in doc.items():
        rests = wanted.get(key)
        if rests is None:
            continue
        if "" in rests or not isinstance(value, dict | list):
            out[key] = value
        elif isinstance(value, dict):
            out[key] = filter_fields(value, tuple(rests))
        else:
            # PHP intersects a list's numeric keys with the field names: nothing survives.
            out[key] = []
    return out
