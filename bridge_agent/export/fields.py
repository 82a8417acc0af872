"""The columns of an export, in groups an operator chooses (`--fields basic,seo_title,history`).

Four groups, as Lexiik's export offers them: `basic` (the product data a catalog is: title, SKU,
price, categories, stock), `seo` (SEO title, meta description, image ALT), `structured` (the
JSON-LD the agent wrote to the store) and `history` (what the agent wrote and what it replaced,
with times). Within a group the columns keep the order of `COLUMNS`, whatever order the request
names them in: a file's column order is part of its contract with whoever reads it (a
spreadsheet formula, a diff of two exports), so it changes only when the code adds a column.

A column knows how to read its value from one product or variant (`Row`) and what kind of value
it is (`kind`): the tabular writers (csv, xlsx) write text or a typed cell from the same value.
Money stays a decimal string, as in the canonical model; xlsx turns it into a number.

A variant is a row of its own (`variant_id` set) carrying the variant's own values in the shared
columns (sku, title, prices, availability, stock, gtin, image) and nothing in the product-only
ones, so a reader rebuilds a product from its row and the variant rows after it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from bridge_agent.errors import InputError
from bridge_agent.model import Image, Product, Variant

Kind = Literal["text", "money", "int", "time", "json"]
GROUPS: tuple[str, ...] = ("basic", "seo", "structured", "history")
DEFAULT_GROUPS: tuple[str, ...] = ("basic", "seo")
LIST_SEPARATOR = " | "  # between categories, image URLs and ALT texts in one cell
DELETED = "deleted"  # the `status` of a deleted product's row


@dataclass(frozen=True, slots=True)
class Change:
    """One value the agent replaced in the store (the `replaced` table), for the history."""

    at: int  # epoch ms
    optimization: str
    field: str
    image: str | None
    old: Any
    new: Any
    rolled_back: bool

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "at": iso_ms(self.at),
            "optimization": self.optimization,
            "field": self.field,
            "old": self.old,
            "new": self.new,
        }
        if self.image is not None:
            out["image"] = self.image
        if self.rolled_back:
            out["rolled_back"] = True
        return out


@dataclass(frozen=True, slots=True)
class Row:
    """What one row is made of: a product, or one of its variants (`variant` set)."""

    product: Product
    variant: Variant | None = None
    recorded_at: int | None = None
    jsonld: Any = None
    history: tuple[Change, ...] = ()

    @property
    def image(self) -> Image | None:
        """The row's image: the variant's own when it has one, else the product's main one."""
        if self.variant is not None:
            if self.variant.image_id is None:
                return None
            return next((i for i in self.product.images if i.id == self.variant.image_id), None)
        return main_image(self.product)


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    group: str
    kind: Kind
    value: Callable[[Row], Any]  # None: empty cell
    product_only: bool = False  # empty on variant rows


def main_image(product: Product) -> Image | None:
    if not product.images:
        return None
    return min(product.images, key=lambda i: i.position)


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _variant_or_product(name: str) -> Callable[[Row], Any]:
    def read(row: Row) -> Any:
        source: Any = row.variant if row.variant is not None else row.product
        return getattr(source, name)

    return read


def _product(name: str) -> Callable[[Row], Any]:
    return lambda row: getattr(row.product, name)


def _categories(row: Row) -> str | None:
    paths = [" > ".join(c.path or (c.name,)) for c in row.product.categories]
    return LIST_SEPARATOR.join(paths) or None


def _options(row: Row) -> str | None:
    if row.variant is None:
        return None
    return "; ".join(f"{k}={v}" for k, v in row.variant.options) or None


def _image_src(row: Row) -> str | None:
    image = row.image
    return image.src if image is not None else None


def _image_alt(row: Row) -> str | None:
    image = row.image
    return (image.alt or None) if image is not None else None


def _images(attribute: str) -> Callable[[Row], str | None]:
    def read(row: Row) -> str | None:
        ordered = sorted(row.product.images, key=lambda i: i.position)
        values = [getattr(i, attribute) for i in ordered]
        return LIST_SEPARATOR.join(values) if any(values) else None

    return read


def _title(row: Row) -> str | None:
    return row.variant.title if row.variant is not None else row.product.title


def _variant_id(row: Row) -> str | None:
    return row.variant.id if row.variant is not None else None


def _recorded(row: Row) -> int | None:
    return row.recorded_at


def _jsonld(row: Row) -> Any:
    return row.jsonld


def _history(row: Row) -> Any:
    return [c.as_dict() for c in row.history] or None


def _last_change(row: Row) -> int | None:
    return max((c.at for c in row.history), default=None)


def _change_count(row: Row) -> int | None:
    return len(row.history) if row.history else None


COLUMNS: tuple[Column, ...] = (
    Column("id", "basic", "text", _product("id")),
    Column("variant_id", "basic", "text", _variant_id),
    Column("sku", "basic", "text", _variant_or_product("sku")),
    Column("title", "basic", "text", _title),
    Column("status", "basic", "text", _product("status"), product_only=True),
    Column("url", "basic", "text", _product("url"), product_only=True),
    Column("slug", "basic", "text", _product("slug"), product_only=True),
    Column("price", "basic", "money", _variant_or_product("price")),
    Column("regular_price", "basic", "money", _variant_or_product("regular_price")),
    Column("sale_price", "basic", "money", _variant_or_product("sale_price")),
    Column("currency", "basic", "text", _product("currency")),
    Column("availability", "basic", "text", _variant_or_product("availability")),
    Column("stock_quantity", "basic", "int", _variant_or_product("stock_quantity")),
    Column("options", "basic", "text", _options),
    Column("categories", "basic", "text", _categories, product_only=True),
    Column("tags", "basic", "text", lambda r: LIST_SEPARATOR.join(r.product.tags) or None, True),
    Column("brand", "basic", "text", _product("brand"), product_only=True),
    Column("gtin", "basic", "text", _variant_or_product("gtin")),
    Column("image_link", "basic", "text", _image_src),
    Column("images", "basic", "text", _images("src"), product_only=True),
    Column("description_html", "basic", "text", _product("description_html"), True),
    Column("short_description_html", "basic", "text", _product("short_description_html"), True),
    Column("updated_at", "basic", "time", _product("updated_at"), product_only=True),
    Column("recorded_at", "basic", "time", _recorded, product_only=True),
    Column("seo_title", "seo", "text", _product("seo_title"), product_only=True),
    Column("seo_description", "seo", "text", _product("seo_description"), product_only=True),
    Column("image_alt", "seo", "text", _image_alt),
    Column("image_alts", "seo", "text", _images("alt"), product_only=True),
    Column("jsonld", "structured", "json", _jsonld, product_only=True),
    Column("last_changed_at", "history", "time", _last_change, product_only=True),
    Column("changes", "history", "int", _change_count, product_only=True),
    Column("history", "history", "json", _history, product_only=True),
)
BY_NAME = {c.name: c for c in COLUMNS}
# Whoever reads a row needs these to know which product (and variant) it is.
IDENTITY: tuple[str, ...] = ("id", "variant_id", "status")


@dataclass(frozen=True, slots=True)
class Selection:
    """The columns an export writes, in `COLUMNS` order, and the groups they come from."""

    columns: tuple[Column, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def groups(self) -> frozenset[str]:
        """The groups chosen (the identity columns, always there, choose none)."""
        return frozenset(c.group for c in self.columns if c.name not in IDENTITY)

    def wants(self, group: str) -> bool:
        return group in self.groups


def select(spec: Iterable[str] | None) -> Selection:
    """The columns named by group or column name (`all`: every group); default basic and seo.

    The identity columns are always written: a row nobody can place is no use.
    """
    names = [s.strip() for s in spec or () if s.strip()]
    if not names:
        names = list(DEFAULT_GROUPS)
    if "all" in names:
        names = list(GROUPS)
    unknown = [n for n in names if n not in GROUPS and n not in BY_NAME]
    if unknown:
        raise InputError(
            f"unknown field(s) {', '.join(unknown)}: use the groups {', '.join(GROUPS)} (or all)"
            f" or the columns {', '.join(BY_NAME)}"
        )
    wanted = {*IDENTITY, *(n for n in names if n in BY_NAME)}
    groups = {n for n in names if n in GROUPS}
    return Selection(tuple(c for c in COLUMNS if c.name in wanted or c.group in groups))


def cells(selection: Selection, row: Row) -> list[Any]:
    """The row's values in column order (None: empty); `time` columns as epoch ms or ISO text."""
    out: list[Any] = []
    for column in selection.columns:
        if row.variant is not None and column.product_only:
            out.append(None)
        else:
            out.append(column.value(row))
    return out


def text(kind: Kind, value: Any) -> str:
    """One cell as CSV text: money as written, times as ISO 8601 UTC, JSON compact."""
    if value is None:
        return ""
    if kind == "time" and isinstance(value, int):
        return iso_ms(value)
    if kind == "json":
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return str(value)


def deleted_cells(selection: Selection, product_id: str, recorded_at: int) -> list[Any]:
    """The row of a deleted product: its id, status `deleted`, when the agent saw it go."""
    values: dict[str, Any] = {"id": product_id, "status": DELETED, "recorded_at": recorded_at}
    return [values.get(name) for name in selection.names]


def group_names(selection: Selection) -> Sequence[str]:
    return sorted(selection.groups)
