"""The canonical product: one vocabulary for every platform (design.md section 3).

Pure data, no I/O. Money is a decimal string (never a float), times are UTC. Adapters build these
from platform payloads; the outbox stores, hashes and ships their *canonical dict* (`to_dict`), a
plain JSON/msgpack-safe mapping in which unset fields (None, empty sequences) are simply absent, so
that the content hash and the hub's `patch` work on the same shape everywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Status = Literal["active", "draft", "archived"]
Availability = Literal["InStock", "OutOfStock", "BackOrder", "PreOrder", "Discontinued"]
Source = Literal["import", "spool", "webhook", "poll", "verify", "reconcile", "repair"]

STATUSES: tuple[str, ...] = get_args(Status)
AVAILABILITIES: tuple[str, ...] = get_args(Availability)
SOURCES: tuple[str, ...] = get_args(Source)


@dataclass(frozen=True, slots=True)
class Category:
    """A category the product is in; `path` is the names from the root, e.g. ("Men", "Hoodies")."""

    id: str
    name: str
    path: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Image:
    """One product image. `position` 0 is the main image."""

    id: str
    src: str
    alt: str = ""
    position: int = 0


@dataclass(frozen=True, slots=True)
class Rating:
    """Review summary: `average` as a decimal string ("4.50"), `count` reviews."""

    average: str
    count: int


@dataclass(frozen=True, slots=True)
class Variant:
    """A purchasable variation of a product (size, colour...)."""

    id: str
    sku: str | None = None
    title: str | None = None
    options: tuple[tuple[str, str], ...] = ()  # (option name, value), in platform order
    price: str | None = None
    regular_price: str | None = None
    sale_price: str | None = None
    availability: Availability | None = None
    stock_quantity: int | None = None
    image_id: str | None = None
    gtin: str | None = None


@dataclass(frozen=True, slots=True)
class Product:
    """The latest known state of one product in one store."""

    id: str  # platform id as a string
    title: str
    sku: str | None = None
    slug: str | None = None
    url: str | None = None
    status: Status = "active"
    description_html: str | None = None
    short_description_html: str | None = None
    seo_title: str | None = None
    seo_description: str | None = None
    price: str | None = None
    regular_price: str | None = None
    sale_price: str | None = None
    currency: str | None = None
    tax_included: bool | None = None
    availability: Availability | None = None
    stock_quantity: int | None = None
    categories: tuple[Category, ...] = ()
    tags: tuple[str, ...] = ()
    images: tuple[Image, ...] = ()
    variants: tuple[Variant, ...] = ()
    rating: Rating | None = None
    brand: str | None = None
    gtin: str | None = None
    language: str | None = None
    updated_at: str | None = None  # platform time, ISO 8601 UTC ("2026-11-23T10:00:00Z")
    extra: Mapping[str, Any] = field(default_factory=dict)  # platform-specific, hashed too

    def to_dict(self) -> dict[str, Any]:
        """The canonical dict: what is hashed, stored and shipped."""
        out: dict[str, Any] = _compact(self)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Product:
        """Rebuild a product from its canonical dict (as decoded from msgpack or JSON)."""
        return _product_from(data)


def settle(product: Product) -> Product:
    """The rules of the canonical model every adapter's products follow, applied once where
    every change is stored (`store/mirror.py` `encode`), so no source can disagree with another
    about them (which would ship the product back and forth):

    - an archived product (hidden or trashed in the store) is `Discontinued`, and so are its
      variants: it is no longer offered, whatever stock it still counts (design.md's
      availability list; a verification sweep reports it so).
    """
    if product.status != "archived" or (
        product.availability == "Discontinued"
        and all(v.availability == "Discontinued" for v in product.variants)
    ):
        return product
    return dataclasses.replace(
        product,
        availability="Discontinued",
        variants=tuple(
            dataclasses.replace(v, availability="Discontinued") for v in product.variants
        ),
    )


def _compact(obj: Any) -> Any:  # returns the canonical form of any model value
    """Dataclass -> dict without unset fields; tuples -> lists (msgpack and JSON agree on lists)."""
    names = _FIELD_NAMES.get(type(obj))
    if names is not None:
        out: dict[str, Any] = {}
        for name in names:
            value = getattr(obj, name)
            if value is None or value in ((), {}, []):
                continue
            out[name] = value if type(value) in _SCALARS else _compact(value)
        return out
    if isinstance(obj, tuple | list):
        return [v if type(v) in _SCALARS else _compact(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): _compact(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        raise TypeError(f"{type(obj).__name__} is not part of the canonical model")
    return obj


def _product_from(data: Mapping[str, Any]) -> Product:
    unknown = data.keys() - _PRODUCT_FIELDS
    if unknown:
        raise ValueError(f"unknown product field(s): {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = dict(data)
    kwargs["categories"] = tuple(
        Category(id=c["id"], name=c["name"], path=tuple(c.get("path", ())))
        for c in data.get("categories", ())
    )
    kwargs["tags"] = tuple(data.get("tags", ()))
    kwargs["images"] = tuple(Image(**i) for i in data.get("images", ()))
    kwargs["variants"] = tuple(
        Variant(**{**v, "options": tuple(tuple(o) for o in v.get("options", ()))})
        for v in data.get("variants", ())
    )
    if "rating" in data:
        kwargs["rating"] = Rating(**data["rating"])
    kwargs["extra"] = dict(data.get("extra", {}))
    return Product(**kwargs)


@dataclass(frozen=True, slots=True)
class Change:
    """What a source observed about one product: its new state, or that it is gone.

    `product` is None for a deletion. `observed_at` is epoch milliseconds when the agent saw it.
    Sources build Changes; the state store records them; the shipper never sees them.
    """

    store: str
    product_id: str
    product: Product | None
    source: Source
    observed_at: int

    @property
    def key(self) -> tuple[str, str]:
        """Identity for coalescing: one outbox row per (store, product)."""
        return (self.store, self.product_id)


# Field names per model class, computed once: `to_dict` runs for every observed change.
_FIELD_NAMES: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls))
    for cls in (Product, Variant, Image, Category, Rating)
}
_SCALARS = frozenset({str, int, float, bool})
_PRODUCT_FIELDS = frozenset(_FIELD_NAMES[Product])
