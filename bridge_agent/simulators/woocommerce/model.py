"""The simulated store's records and WordPress's JSON and error conventions.

Records are slotted dataclasses holding tuples (not lists) so that 100 000 products and their
variations stay small in memory: an empty tuple is a shared singleton, and generated strings that
repeat (descriptions, enum values) are shared objects. Timestamps are integer epoch seconds (UTC):
WordPress stores `post_modified` in a MySQL DATETIME, so second precision is the real resolution
(platforms.md 1.8).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from datetime import timedelta, timezone
from typing import Any

from bridge_agent.simulators.core.clock import parse_instant

REST_PREFIX = "/wp-json/wc/v3"

# platforms.md 1.4 and SOURCE.md of the community spec: the real enums (the schema only lists
# them in prose).
PRODUCT_STATUSES = ("draft", "pending", "private", "publish", "future", "auto-draft", "trash")
VARIATION_STATUSES = ("draft", "pending", "private", "publish")
PRODUCT_TYPES = ("simple", "grouped", "external", "variable")
STOCK_STATUSES = ("instock", "outofstock", "onbackorder")
BACKORDERS = ("no", "notify", "yes")
CATALOG_VISIBILITY = ("visible", "catalog", "search", "hidden")
TAX_STATUSES = ("taxable", "shipping", "none")

Meta = tuple[int, str, Any]  # (meta_id, key, value): one wp_postmeta row


class WooError(Exception):
    """A WordPress REST error, answered as `{"code", "message", "data": {"status", ...}}`.

    platforms.md 1.3. `data` carries the extra keys WordPress adds (`params`, `details` for
    `rest_invalid_param`); `headers` the extra response headers (`WWW-Authenticate`).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        data: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.data = data or {}
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": self.error_data()}

    def error_data(self) -> dict[str, Any]:
        return {"status": self.status, **self.data}


def invalid_params(problems: dict[str, tuple[str, str]]) -> WooError:
    """WordPress core's schema validation failure (`rest_invalid_param`, 400), all params at once.

    `problems` maps a parameter to (detail code, message), e.g. `rest_out_of_bounds`.
    """
    return WooError(
        400,
        "rest_invalid_param",
        "Invalid parameter(s): " + ", ".join(problems),
        data={
            "params": {name: message for name, (_, message) in problems.items()},
            "details": {
                name: {"code": code, "message": message, "data": None}
                for name, (code, message) in problems.items()
            },
        },
    )


_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def encode(doc: Any) -> bytes:
    """JSON exactly as `wp_json_encode` writes it: compact, `\\/` for `/`, `\\uXXXX` for non-ASCII.

    PHP's json_encode escapes slashes and non-ASCII by default, and both REST answers and webhook
    bodies go through it, so a client that re-serialises a body before checking a signature gets
    different bytes (platforms.md 7.3). Every `/` in the output sits inside a string (JSON syntax
    has none), so the replacement is safe.
    """
    return _ENCODER.encode(doc).replace("/", "\\/").encode()


@functools.lru_cache(maxsize=65_536)  # rendering repeats the same few timestamps a lot
def wall(ts: int) -> str:
    """A MySQL-style wall-clock timestamp as WooCommerce prints it: ISO 8601 without a zone."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))


def parse_rest_date(value: str, utc_offset: int) -> int | None:
    """A `modified_after`-style parameter as wall-clock seconds in the site's frame, or None.

    WordPress validates with `rest_parse_date` (RFC 3339, zone optional), then
    `WP_Date_Query::build_mysql_datetime` turns the value into site-local wall time: a value
    without a zone is taken as it is; a value *with* a zone is converted to the site's timezone.
    The result is then compared with whichever column `dates_are_gmt` picked, so
    `...Z&dates_are_gmt=true` on a site east of UTC compares local time against the GMT column
    (a real WordPress quirk, kept on purpose: platforms.md 7.6 says send zone-less GMT values).
    Fractions of a second are dropped, as MySQL DATETIME has none.
    """
    parsed = parse_instant(value)
    if parsed is None:
        return None
    seconds, offset = parsed
    if offset is None:
        return seconds
    return seconds - offset + utc_offset


def site_timezone(utc_offset: int) -> timezone:
    return timezone(timedelta(seconds=utc_offset))


@dataclass(slots=True)
class Attachment:
    """A media-library image. ALT text and title live here, not on the product (platforms.md 1.11):
    an attachment shared by several products shows the same ALT on all of them."""

    id: int
    src: str
    name: str
    alt: str
    created: int
    modified: int


@dataclass(slots=True)
class Term:
    """A product category (with a parent chain) or a product tag."""

    id: int
    name: str
    slug: str
    parent: int = 0
    description: str = ""


@dataclass(slots=True)
class Attribute:
    """A product attribute; `variation` ones define the variations' options."""

    id: int  # 0 for a custom (non-taxonomy) attribute
    name: str
    options: tuple[str, ...]
    position: int = 0
    visible: bool = True
    variation: bool = False


@dataclass(slots=True)
class Item:
    """One post of type `product` or `product_variation` (they share WordPress's id space).

    Products have `parent_id` 0 and `type` simple|variable|...; variations have the parent's id,
    `type` "variation", `options` as (attribute id, name, option) triples and at most one image.
    """

    id: int
    type: str
    name: str
    slug: str
    status: str
    created: int
    modified: int
    parent_id: int = 0
    description: str = ""
    short_description: str = ""
    sku: str = ""
    regular_price: str = ""
    sale_price: str = ""
    manage_stock: bool = False
    stock_quantity: int | None = None
    stock_status: str = "instock"
    backorders: str = "no"
    tax_status: str = "taxable"
    tax_class: str = ""
    weight: str = ""
    dimensions: tuple[str, str, str] = ("", "", "")
    featured: bool = False
    catalog_visibility: str = "visible"
    virtual: bool = False
    downloadable: bool = False
    reviews_allowed: bool = True
    purchase_note: str = ""
    global_unique_id: str = ""
    menu_order: int = 0
    total_sales: int = 0
    average_rating: str = "0.00"
    rating_count: int = 0
    categories: tuple[int, ...] = ()
    tags: tuple[int, ...] = ()
    image_ids: tuple[int, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    options: tuple[tuple[int, str, str], ...] = ()
    variations: tuple[int, ...] = ()
    meta: tuple[Meta, ...] = ()
    # The slug a product had before it was trashed (WordPress keeps it in `_wp_desired_post_slug`).
    desired_slug: str = ""
