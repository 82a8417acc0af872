"""Checks for emitted JSON-LD: the real schema.org vocabulary, and Google's Product requirements.

`vocabulary()` loads the schema.org release 30.0 kept gzipped in `tests/data/schemaorg/` (CC
BY-SA 3.0, see its SOURCE.md; 260 KB, so every clone checks against the real vocabulary), or the
file named by `BRIDGE_SCHEMAORG` (the `schemaorg-current-https.jsonld` of any release, plain or
`.gz`). `vocabulary_or_skip()` skips a test without it (an installed package has no `tests/`),
except under `CI=true`, where a missing file fails, so CI can never skip the check silently.

`Vocabulary.problems(document)` lists, for a document in the `https://schema.org` context:
- every `@type` that is not a schema.org class (or is a data type or an enumeration member);
- every property that is not a schema.org property, is superseded, or whose `domainIncludes`
  names none of the node's types or their supertypes (`rdfs:subClassOf`, followed transitively);
- every value its `rangeIncludes` does not allow: a node whose types are not (sub)classes of the
  range; a number where no Number/Integer is allowed, a fraction where only Integer is; a string
  where the range has no text-like data type, unless it is the full URL of a member of an
  enumeration in the range (`https://schema.org/InStock` for `availability`); a string that names
  a schema.org term for such a property must be a member; URL-only ranges need an http(s) URL.
Pending terms (`variesBy`, `size`, `gtin`...) are allowed: Google documents them.

`google_problems(document, feature)` checks Google's required fields from platforms.md section 6.1
(the table is quoted in `GOOGLE_REQUIRED`); `google_missing_recommended` names recommended fields
that are absent. A `ProductGroup` is checked per variant (6.3: each `hasVariant` Product carries
its own offers), plus `productGroupID`, `variesBy` and `hasVariant` on the group.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = [
    "GOOGLE_RECOMMENDED",
    "GOOGLE_REQUIRED",
    "Feature",
    "Vocabulary",
    "google_missing_recommended",
    "google_problems",
    "vocabulary",
    "vocabulary_or_skip",
    "vocabulary_path",
]

SCHEMA = "https://schema.org/"
_DEFAULT = (
    Path(__file__).resolve().parents[2] / "tests/data/schemaorg/schemaorg-current-https.jsonld.gz"
)

Feature = Literal["snippet", "merchant"]

#: platforms.md 6.1, verbatim in substance:
#: | Product snippet  | `name` + at least one of `review`, `aggregateRating`, `offers` |
#: | Merchant listing | `name`, `image`, `offers` with an `Offer` whose `price` (> 0) and
#: |                  | `priceCurrency` are set (or `priceSpecification.price`) |
GOOGLE_REQUIRED: Mapping[Feature, str] = {
    "snippet": "name + at least one of review, aggregateRating, offers",
    "merchant": "name, image, offers: an Offer with price (> 0) and priceCurrency "
    "(or priceSpecification.price)",
}
#: platforms.md 6.1: "availability, shipping, returns recommended" for merchant listings (the
#: exact list is marked unconfirmed there); 6.2 lists `itemCondition`, `url` as commonly added.
GOOGLE_RECOMMENDED: Mapping[Feature, tuple[str, ...]] = {
    "snippet": (),
    "merchant": ("offers.availability", "offers.shippingDetails", "offers.hasMerchantReturnPolicy"),
}


def vocabulary_path() -> Path:
    """Where the vocabulary is read from: `BRIDGE_SCHEMAORG`, else `tests/data/schemaorg/`."""
    named = os.environ.get("BRIDGE_SCHEMAORG")
    return Path(named) if named else _DEFAULT


@functools.cache
def vocabulary() -> Vocabulary:
    """The vocabulary at `vocabulary_path()` (loaded once per process)."""
    return Vocabulary.load(vocabulary_path())


def vocabulary_or_skip() -> Vocabulary:
    """`vocabulary()`, or skip the calling test when the file is missing (fail under CI)."""
    import pytest  # noqa: PLC0415  # a test helper: pytest is there when this runs

    path = vocabulary_path()
    if not path.is_file():
        message = f"the schema.org vocabulary is not at {path}: set BRIDGE_SCHEMAORG to its file"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return vocabulary()


@dataclass(frozen=True, slots=True)
class Property:
    """One schema.org property: short names of its domain and range classes."""

    domains: frozenset[str]
    ranges: frozenset[str]
    superseded_by: str | None
    pending: bool


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """Classes, properties and enumeration members of one schema.org release, by short name."""

    classes: Mapping[str, frozenset[str]]  # class -> direct schema.org superclasses
    datatypes: frozenset[str]  # Text, URL, Number, Integer, Boolean, Date...
    properties: Mapping[str, Property]
    members: Mapping[str, frozenset[str]]  # enumeration member -> the enumerations it is in

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        graph = json.loads(raw.decode("utf-8"))["@graph"]
        classes: dict[str, frozenset[str]] = {}
        datatypes: set[str] = set()
        properties: dict[str, Property] = {}
        typed: dict[str, frozenset[str]] = {}
        for node in graph:
            name = _short(node["@id"])
            if name is None:
                continue
            types = set(_ids(node.get("@type")))
            if "rdf:Property" in types:
                superseded = _ids(node.get("schema:supersededBy"))
                properties[name] = Property(
                    domains=_shorts(node.get("schema:domainIncludes")),
                    ranges=_shorts(node.get("schema:rangeIncludes")),
                    superseded_by=_short(superseded[0]) if superseded else None,
                    pending="https://pending.schema.org" in _ids(node.get("schema:isPartOf")),
                )
            elif "rdfs:Class" in types or "schema:DataType" in types:
                classes[name] = _shorts(node.get("rdfs:subClassOf"))
                if "schema:DataType" in types:
                    datatypes.add(name)
            else:
                typed[name] = _shorts(node.get("@type"))
        # Subclasses of a data type are data types too (URL of Text, Integer of Number).
        vocab = cls(classes, frozenset(datatypes), properties, {})
        all_datatypes = frozenset(c for c in classes if vocab.supertypes(c) & datatypes)
        members = {m: ts for m, ts in typed.items() if any(vocab.is_enumeration(t) for t in ts)}
        return cls(classes, all_datatypes, properties, members)

    def supertypes(self, name: str) -> frozenset[str]:
        """`name` and every class it is a subclass of, transitively."""
        seen = {name}
        todo = [name]
        while todo:
            for parent in self.classes.get(todo.pop(), ()):
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return frozenset(seen)

    def is_enumeration(self, name: str) -> bool:
        return name != "Enumeration" and "Enumeration" in self.supertypes(name)

    def members_of(self, enumeration: str) -> frozenset[str]:
        """Short names of the members of `enumeration` (e.g. "InStock" for "ItemAvailability")."""
        return frozenset(m for m, ts in self.members.items() if enumeration in ts)

    # -- checking ------------------------------------------------------------------------------

    def problems(self, document: Any) -> list[str]:
        """Everything in `document` the vocabulary does not allow (empty: valid)."""
        out: list[str] = []
        nodes = document if isinstance(document, list) else [document]
        for n, node in enumerate(nodes):
            where = f"[{n}]" if isinstance(document, list) else "$"
            if not isinstance(node, Mapping):
                out.append(f"{where}: a top-level item must be an object")
                continue
            if node.get("@context") != SCHEMA.rstrip("/"):
                out.append(f"{where}: @context must be {SCHEMA.rstrip('/')!r}")
            self._node(node, where, out, top=True)
        return out

    def _node(self, node: Mapping[str, Any], where: str, out: list[str], *, top: bool) -> None:
        types = self._types(node, where, out)
        supers = frozenset().union(*(self.supertypes(t) for t in types)) if types else frozenset()
        for key, value in node.items():
            at = f"{where}.{key}"
            if key.startswith("@"):
                if key not in ("@type", "@id") and not (top and key == "@context"):
                    out.append(f"{at}: unexpected keyword")
                continue
            prop = self.properties.get(key)
            if prop is None:
                out.append(f"{at}: not a schema.org property")
                continue
            if prop.superseded_by:
                out.append(f"{at}: superseded by {prop.superseded_by}")
            if types and not prop.domains & supers:
                out.append(f"{at}: not a property of {'/'.join(types)}")
            values = value if isinstance(value, list) else [value]
            for k, item in enumerate(values):
                self._value(prop, item, f"{at}[{k}]" if isinstance(value, list) else at, out)

    def _types(self, node: Mapping[str, Any], where: str, out: list[str]) -> list[str]:
        raw = node.get("@type")
        names = raw if isinstance(raw, list) else [raw]
        types: list[str] = []
        for name in names:
            short = name.removeprefix(SCHEMA) if isinstance(name, str) else None
            if short is None or short not in self.classes:
                out.append(f"{where}.@type: {name!r} is not a schema.org class")
            elif short in self.datatypes:
                out.append(f"{where}.@type: {short} is a data type, not a node type")
            else:
                types.append(short)
        return types

    def _value(self, prop: Property, value: Any, at: str, out: list[str]) -> None:
        ranges = prop.ranges
        range_supers = {r: self.supertypes(r) for r in ranges}
        if isinstance(value, Mapping):
            types = self._types(value, at, out)
            if types and not any(ranges & self.supertypes(t) for t in types):
                out.append(
                    f"{at}: a {'/'.join(types)} where {'/'.join(sorted(ranges))} is expected"
                )
            self._node(value, at, out, top=False)
            return
        if value is None or isinstance(value, list):
            out.append(f"{at}: {type(value).__name__} is not a value")
            return
        if isinstance(value, bool):
            if not any("Boolean" in s for s in range_supers.values()):
                out.append(f"{at}: a boolean where {'/'.join(sorted(ranges))} is expected")
            return
        if isinstance(value, int | float):
            numeric = [r for r, s in range_supers.items() if "Number" in s]
            if not numeric:
                out.append(f"{at}: a number where {'/'.join(sorted(ranges))} is expected")
            elif isinstance(value, float) and all(r == "Integer" for r in numeric):
                out.append(f"{at}: {value!r} where an Integer is expected")
            return
        if not isinstance(value, str):
            out.append(f"{at}: {type(value).__name__} is not a JSON-LD value")
            return
        enumerations = [r for r in ranges if self.is_enumeration(r)]
        textual = [r for r, s in range_supers.items() if "Text" in s or r in _TEXTUAL]
        if enumerations and value.startswith(SCHEMA):
            member = value.removeprefix(SCHEMA)
            if not any(e in self.members.get(member, ()) for e in enumerations):
                out.append(f"{at}: {value!r} is not a member of {'/'.join(sorted(enumerations))}")
            return
        if not textual:
            expected = "/".join(sorted(ranges))
            out.append(f"{at}: text where {expected} is expected (enumerations need a full URL)")
            return
        if all(r == "URL" for r in textual) and not _is_url(value):
            out.append(f"{at}: {value[:60]!r} is not an absolute http(s) URL")


# Date and time data types take strings too.
_TEXTUAL = frozenset({"Text", "URL", "Date", "DateTime", "Time", "CssSelectorType", "XPathType"})


def google_problems(document: Mapping[str, Any], feature: Feature) -> list[str]:
    """What `document` lacks of Google's required fields for `feature` (platforms.md 6.1-6.3)."""
    out: list[str] = []
    if document.get("@type") == "ProductGroup":
        group_keys = ("productGroupID", "variesBy", "hasVariant")
        out.extend(
            f"$.{k}: a ProductGroup needs it (6.3)" for k in group_keys if not document.get(k)
        )
        if not _text(document.get("name")):
            out.append("$.name: required")
        # 6.3: shared properties (brand, reviews) may sit on the group; the variants inherit them.
        shared = {k: document[k] for k in ("aggregateRating", "review") if k in document}
        for n, variant in enumerate(document.get("hasVariant") or ()):
            inherited = {**shared, **variant} if isinstance(variant, Mapping) else variant
            out.extend(_product_problems(inherited, feature, f"$.hasVariant[{n}]"))
        return out
    return _product_problems(document, feature, "$")


def google_missing_recommended(document: Mapping[str, Any], feature: Feature) -> list[str]:
    """Recommended fields of `feature` that `document` (or any variant of it) does not have."""
    products = list(document.get("hasVariant") or ()) or [document]
    missing: list[str] = []
    for field in GOOGLE_RECOMMENDED[feature]:
        head, _, tail = field.partition(".")
        for product in products:
            value = product.get(head)
            offers = value if isinstance(value, list) else [value]
            if not value or (
                tail and not all(isinstance(o, Mapping) and tail in o for o in offers)
            ):
                missing.append(field)
                break
    return missing


def _product_problems(product: Any, feature: Feature, at: str) -> list[str]:
    if not isinstance(product, Mapping) or product.get("@type") != "Product":
        return [f"{at}: not a Product"]
    out: list[str] = []
    if not _text(product.get("name")):
        out.append(f"{at}.name: required")
    offers = product.get("offers")
    offer_list = [o for o in (offers if isinstance(offers, list) else [offers]) if o is not None]
    for n, offer in enumerate(offer_list):
        out.extend(_offer_problems(offer, f"{at}.offers[{n}]"))
    if feature == "snippet":
        if not (offer_list or product.get("review") or product.get("aggregateRating")):
            out.append(f"{at}: needs offers, review or aggregateRating")
        rating = product.get("aggregateRating")
        if rating is not None and not (
            isinstance(rating, Mapping)
            and "ratingValue" in rating
            and ("reviewCount" in rating or "ratingCount" in rating)
        ):
            out.append(f"{at}.aggregateRating: needs ratingValue and reviewCount or ratingCount")
        return out
    images = product.get("image")
    if not images or (isinstance(images, list) and not all(_text(i) for i in images)):
        out.append(f"{at}.image: required")
    if not any(_priced_offer(o) for o in offer_list):
        out.append(f"{at}.offers: needs an Offer with price > 0 and priceCurrency")
    return out


def _offer_problems(offer: Any, at: str) -> list[str]:
    """platforms.md 6.2: price is a number or numeric string ("." separator), priceCurrency is
    ISO 4217, availability a full schema.org URL; an AggregateOffer has lowPrice, highPrice,
    offerCount and priceCurrency."""
    if not isinstance(offer, Mapping):
        return [f"{at}: not an object"]
    out: list[str] = []
    kind = offer.get("@type")
    fields: tuple[str, ...] = ("price", "priceCurrency")
    if kind == "AggregateOffer":
        fields = ("lowPrice", "highPrice", "offerCount", "priceCurrency")
    elif kind != "Offer":
        out.append(f"{at}: @type {kind!r} is not Offer or AggregateOffer")
    out.extend(f"{at}.{key}: required" for key in fields if key not in offer)
    out.extend(
        f"{at}.{key}: {offer[key]!r} is not a plain number"
        for key in ("price", "lowPrice", "highPrice")
        if key in offer and _number(offer[key]) is None
    )
    currency = offer.get("priceCurrency")
    if currency is not None and not (
        isinstance(currency, str)
        and len(currency) == 3
        and currency.isalpha()
        and currency.isupper()
    ):
        out.append(f"{at}.priceCurrency: {currency!r} is not an ISO 4217 code")
    availability = offer.get("availability")
    if availability is not None and not (
        isinstance(availability, str) and availability.startswith(SCHEMA)
    ):
        out.append(f"{at}.availability: must be a full schema.org URL")
    return out


def _priced_offer(offer: Any) -> bool:
    if not isinstance(offer, Mapping) or offer.get("@type") != "Offer":
        return False
    spec = offer.get("priceSpecification")
    price = offer.get("price")
    if price is None and isinstance(spec, Mapping):
        price = spec.get("price")
    amount = _number(price)
    return amount is not None and amount > 0 and bool(_text(offer.get("priceCurrency")))


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str) or not value or not all(c.isdigit() or c == "." for c in value):
        return None
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _is_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _short(iri: Any) -> str | None:
    if isinstance(iri, str) and iri.startswith("schema:"):
        return iri.removeprefix("schema:")
    return None


def _ids(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value] if value else []
    return [i["@id"] if isinstance(i, Mapping) else i for i in items]


def _shorts(value: Any) -> frozenset[str]:
    return frozenset(s for s in map(_short, _ids(value)) if s is not None)
