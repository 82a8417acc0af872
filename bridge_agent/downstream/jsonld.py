"""The product's JSON-LD: a schema.org document that never shows an offer the store no longer makes.

Pure: no I/O, no clock. `build_jsonld(product, ...)` returns a `JsonLd` (the `document` and the
`warnings` a caller logs); `jsonld_inputs(product, ...)` fingerprints what the document depends
on; `script_text(document)` is the text for a `<script type="application/ld+json">` element.
Requirements are Google's (platforms.md section 6); terms are checked against the schema.org
vocabulary in the tests (`bridge_agent/testing/schemaorg.py`).

What is built, and why:

- A product without variants is a `Product`. One with variants is a `ProductGroup`
  (`productGroupID` = its SKU, else its id) whose `hasVariant` lists one `Product` per variant,
  each with its own `sku`, GTIN, image and `offers`, and whose `variesBy` names the varying
  options: `https://schema.org/color`, `/size`, `/material`, `/pattern` for the options Google
  knows (by name: "Color"/"Colour", "Size", ... with a WooCommerce `pa_` prefix ignored), the
  option's own name otherwise. A variant states color/size/material/pattern as those properties
  and any other option as an `additionalProperty` (`PropertyValue`). A single variant without
  options (Shopify's "Default Title") is no group: the product is a plain `Product`.
  `variants="aggregate"` builds instead one `Product` whose `offers` is an `AggregateOffer`
  (`lowPrice`, `highPrice`, `offerCount`), as WooCommerce does: a product snippet, but no
  merchant listing (that needs an `Offer` with a price).
- `offers` is an `Offer` with `price` (the current price as a plain decimal string, "." as the
  separator: no currency symbol, no thousands separator), `priceCurrency` (ISO 4217), the
  `availability` URL (the model's five values are all schema.org `ItemAvailability` members),
  `url` (the product page; the model has no per-variant URL, so variants point there too) and
  `itemCondition` (`NewCondition` unless the store says otherwise). A sale shows the regular
  price as a `UnitPriceSpecification` with `priceType` `ListPrice` (platforms.md 6.2).
- No price (or one that is not a plain non-negative decimal), or no currency: no offer, and a
  warning. Google needs a price for an Offer, and a guessed offer is worse than none.
- `aggregateRating` only with ratings (count >= 1, average in 1..5): `ratingValue`, `reviewCount`.
- `image`: the product's image URLs in position order (a variant: its own image, else the main
  one). `sku`; the GTIN as `gtin8`/`gtin12`/`gtin13`/`gtin14` by length, digits only (spaces and
  hyphens dropped), with a valid GS1 check digit: an invalid one is left out with a warning.
  `brand` is a `Brand` with a `name`.
- Text is plain: HTML tags dropped (script/style content too), entities decoded, whitespace
  collapsed, control characters and lone surrogates removed, and bounded (name 150, description
  5000, other text 1000 characters, cut at a word with "…"; the limits are Merchant Center's
  title and description lengths, platforms.md section 8). Only the first 100 000 characters of
  HTML are read: that bounds the work for a hostile description. Empty values are left out.
- URLs are absolute `http(s)`; a relative one (a store answering "/wp-content/...") is resolved
  against `store_url`, and one that cannot be is left out with a warning.

What the hub sends (`jsonld.to` of an optimisation) is merged under these rules:

- The hub may set descriptive text: `name`, `description`, `alternateName`,
  `disambiguatingDescription`, `category`, `keywords`, `material`, `pattern`, `mpn`, `model`,
  `slogan` (strings, cleaned and bounded like the store's text), and `brand` (a string or an
  object with a `name`). Its value replaces the store's: improving these is the optimisation.
- A GTIN from the hub (`gtin`, `gtin8`...) is used only when the store has no valid one: the store's
  GTIN is what its Merchant Center feed carries, and the two must agree.
- Never from the hub: `offers` (price, currency, availability), `aggregateRating`, `review`, `url`,
  `image`, `sku`, `hasVariant`, `variesBy`, `productGroupID`. These are the store's live facts;
  the page must say what the store sells now, not what the hub saw. Those keys, and any other
  key, are ignored with a warning (`@context`, `@type` and `@id` silently: a whole document is
  fine).

`jsonld_inputs` is a fingerprint of exactly what the builder reads: the builder only ever sees
`_relevant(product, ...)`, a copy of the product stripped of every field it does not use
(`updated_at`, `seo_*`, tags, categories, stock quantities, image ALT, ...), and the fingerprint
hashes that copy with the accepted hub values, the options and `JSONLD_VERSION`. So an equal
fingerprint means an equal document; a price or stock status change gives a different one and the
caller rebuilds and rewrites; bumping `JSONLD_VERSION` (any rule change here) rewrites them all.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

from bridge_agent.model import Image, Product, Rating, Variant

__all__ = [
    "CONDITIONS",
    "DESCRIPTION_MAX",
    "HUB_TEXT_PROPERTIES",
    "JSONLD_VERSION",
    "NAME_MAX",
    "STORE_FACTS",
    "JsonLd",
    "JsonLdOptions",
    "build_jsonld",
    "gtin_property",
    "jsonld_inputs",
    "plain_text",
    "script_text",
]

#: Bump on any change of the rules above: every fingerprint changes, every document is rewritten.
JSONLD_VERSION = 1

SCHEMA = "https://schema.org"
NAME_MAX = 150
DESCRIPTION_MAX = 5000
TEXT_MAX = 1000
HTML_READ_MAX = 100_000

Condition = Literal["NewCondition", "UsedCondition", "RefurbishedCondition", "DamagedCondition"]
CONDITIONS: tuple[str, ...] = (
    "NewCondition",
    "UsedCondition",
    "RefurbishedCondition",
    "DamagedCondition",
)
VariantsAs = Literal["group", "aggregate"]

#: Text properties of a Product the hub may set (its value wins over the store's).
HUB_TEXT_PROPERTIES: tuple[str, ...] = (
    "name",
    "description",
    "alternateName",
    "disambiguatingDescription",
    "category",
    "keywords",
    "material",
    "pattern",
    "mpn",
    "model",
    "slogan",
)
_HUB_GTINS = ("gtin", "gtin8", "gtin12", "gtin13", "gtin14")
#: What only the store's current product decides; the hub's values for these are ignored.
STORE_FACTS: tuple[str, ...] = (
    "offers",
    "aggregateRating",
    "review",
    "url",
    "image",
    "sku",
    "hasVariant",
    "variesBy",
    "productGroupID",
)
_SILENT = frozenset({"@context", "@type", "@id"})

# Options Google reads from `variesBy` (G-VAR), by the names stores give them.
_VARIES_BY: Mapping[str, str] = {
    "color": "color",
    "colour": "color",
    "size": "size",
    "material": "material",
    "pattern": "pattern",
}

_PRICE = re.compile(r"\d{1,15}(?:\.\d{1,6})?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_RATING = re.compile(r"\d{1,3}(?:\.\d{1,6})?")
_SPACE = re.compile(r"\s+")
# C0/C1 controls (whitespace is collapsed apart) and lone surrogates, which UTF-8 cannot encode.
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True, slots=True)
class JsonLd:
    """A built document and what the caller should know about it (short sentences, to log)."""

    document: dict[str, Any]
    warnings: tuple[str, ...] = ()

    @property
    def has_offer(self) -> bool:
        """True when some offer carries a price: the product can be a rich result at all."""
        doc = self.document
        return "offers" in doc or any("offers" in v for v in doc.get("hasVariant", ()))


@dataclass(frozen=True, slots=True)
class JsonLdOptions:
    """A store's options of `build_jsonld` and `jsonld_inputs`, held once per store (the apply
    path and the keeper must build with the same ones, or every fingerprint would differ)."""

    store_url: str | None = None
    currency: str | None = None
    brand: str | None = None
    condition: Condition = "NewCondition"
    variants: VariantsAs = "group"

    def build(self, product: Product, hub: Mapping[str, Any] | None = None) -> JsonLd:
        return build_jsonld(
            product,
            hub=hub,
            store_url=self.store_url,
            currency=self.currency,
            brand=self.brand,
            condition=self.condition,
            variants=self.variants,
        )

    def inputs(self, product: Product, hub: Mapping[str, Any] | None = None) -> str:
        return jsonld_inputs(
            product,
            hub=hub,
            store_url=self.store_url,
            currency=self.currency,
            brand=self.brand,
            condition=self.condition,
            variants=self.variants,
        )


@dataclass(frozen=True, slots=True)
class _Options:
    store_url: str | None
    currency: str | None
    brand: str | None
    condition: Condition
    variants: VariantsAs

    def as_dict(self) -> dict[str, Any]:
        return {
            "store_url": self.store_url,
            "currency": self.currency,
            "brand": self.brand,
            "condition": self.condition,
            "variants": self.variants,
        }


@dataclass(slots=True)
class _Hub:
    """The hub's accepted values: text by property, brand, GTIN."""

    text: dict[str, str] = field(default_factory=dict)
    brand: str | None = None
    gtin: tuple[str, str] | None = None  # (property, digits)


# -- public API --------------------------------------------------------------------------------


def build_jsonld(
    product: Product,
    *,
    hub: Mapping[str, Any] | None = None,
    store_url: str | None = None,
    currency: str | None = None,
    brand: str | None = None,
    condition: Condition = "NewCondition",
    variants: VariantsAs = "group",
) -> JsonLd:
    """The JSON-LD for `product` (see the module rules).

    `hub`: the optimisation's `jsonld.to`. `store_url`: base for relative URLs. `currency`: the
    store's currency when the product carries none. `brand`: the store's brand for products
    without one. `condition`: the store's item condition. `variants`: "group" (a ProductGroup) or
    "aggregate" (one Product with an AggregateOffer).
    """
    options = _options(store_url, currency, brand, condition, variants)
    warnings: list[str] = []
    accepted = _accept_hub(hub, warnings)
    document = _Builder(_relevant(product, accepted), accepted, options, warnings).document()
    return JsonLd(document=document, warnings=tuple(warnings))


def jsonld_inputs(
    product: Product,
    *,
    hub: Mapping[str, Any] | None = None,
    store_url: str | None = None,
    currency: str | None = None,
    brand: str | None = None,
    condition: Condition = "NewCondition",
    variants: VariantsAs = "group",
) -> str:
    """Fingerprint of what `build_jsonld` with the same arguments depends on (22 characters).

    Equal fingerprints give equal documents: a caller that stored the fingerprint of the JSON-LD
    it wrote rebuilds only when this changes (a price, a stock status, a name...), not for a new
    `updated_at`, an SEO title or a stock quantity.
    """
    options = _options(store_url, currency, brand, condition, variants)
    accepted = _accept_hub(hub, [])
    data = {
        "v": JSONLD_VERSION,
        "product": _relevant(product, accepted).to_dict(),
        "hub": {"text": accepted.text, "brand": accepted.brand, "gtin": accepted.gtin},
        "options": options.as_dict(),
    }
    encoded = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.blake2b(encoded.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def script_text(document: dict[str, Any] | list[Any]) -> str:
    """`document` as JSON for a `<script type="application/ld+json">` element.

    Compact, keys sorted (so the same document gives the same bytes, and `@context` comes
    first). `<`, `>` and `&` become `\\u003c`, `\\u003e`, `\\u0026`: no stored text can form
    `</script` or `<!--`, which are what end or confuse a script element's raw text. U+2028 and
    U+2029 are escaped too (old JavaScript parsers treat them as line ends), and so are lone
    surrogates, which UTF-8 cannot carry. `json.loads` gives the same document back.
    """
    text = json.dumps(
        document, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
    )
    return text.translate(_SCRIPT_ESCAPES)


def plain_text(value: str | None, limit: int) -> str | None:
    """HTML or text as bounded plain text (see the module rules); None when nothing is left."""
    if not value:
        return None
    text = value[:HTML_READ_MAX]
    if "<" in text or "&" in text:
        stripper = _TextOf()
        stripper.feed(text)
        stripper.close()
        text = "".join(stripper.parts)
    text = _SPACE.sub(" ", _UNPRINTABLE.sub("", text)).strip()
    if not text:
        return None
    if len(text) > limit:
        cut = text[: limit - 1]
        space = cut.rfind(" ")
        if space >= limit * 4 // 5:  # cut at a word when one ends near the limit
            cut = cut[:space]
        text = cut.rstrip() + "…"
    return text


def gtin_property(value: str | None) -> tuple[str, str] | None:
    """(`gtin8`|`gtin12`|`gtin13`|`gtin14`, digits) for a GTIN with a valid check digit, or None."""
    if not value:
        return None
    digits = re.sub(r"[\s-]", "", value)
    if not digits.isascii() or not digits.isdigit() or len(digits) not in (8, 12, 13, 14):
        return None
    if not digits.strip("0"):
        return None
    body, check = digits[:-1], int(digits[-1])
    # GS1 mod 10: weights 3, 1, 3, ... from the digit next to the check digit leftwards.
    total = sum(int(d) * (3 if n % 2 == 0 else 1) for n, d in enumerate(reversed(body)))
    if (10 - total % 10) % 10 != check:
        return None
    return f"gtin{len(digits)}", digits


# -- building ------------------------------------------------------------------------------------


class _Builder:
    def __init__(self, product: Product, hub: _Hub, options: _Options, warnings: list[str]) -> None:
        self.p = product
        self.hub = hub
        self.o = options
        self.warnings = warnings
        self.currency = _currency(product.currency) or _currency(options.currency)
        self.url = self._url(product.url, "product url")
        self.images = self._images(product.images)
        self.name = hub.text.get("name") or plain_text(product.title, NAME_MAX)

    def document(self) -> dict[str, Any]:
        p = self.p
        grouped = len(p.variants) > 1 or any(v.options for v in p.variants)
        single = p.variants[0] if len(p.variants) == 1 and not grouped else None
        as_group = grouped and self.o.variants == "group"
        doc: dict[str, Any] = {
            "@context": SCHEMA,
            "@type": "ProductGroup" if as_group else "Product",
        }
        if self.name:
            doc["name"] = self.name
        else:
            self.warnings.append("no name: Google requires one")
        description = (
            self.hub.text.get("description")
            or plain_text(p.description_html, DESCRIPTION_MAX)
            or plain_text(p.short_description_html, DESCRIPTION_MAX)
        )
        _put(doc, "description", description)
        for key in HUB_TEXT_PROPERTIES:
            if key not in ("name", "description"):
                _put(doc, key, self.hub.text.get(key))
        _put(doc, "url", self.url)
        if self.images:
            doc["image"] = list(self.images)
        else:
            self.warnings.append("no image: Google's merchant listings require one")
        brand = self.hub.brand or plain_text(p.brand, TEXT_MAX) or self.o.brand
        if brand:
            doc["brand"] = {"@type": "Brand", "name": brand}
        _put(doc, "sku", plain_text(p.sku or (single.sku if single else None), TEXT_MAX))
        self._gtin(doc, p.gtin or (single.gtin if single else None), "product", hub=True)
        rating = self._rating(p.rating)
        if rating:
            doc["aggregateRating"] = rating
        if as_group:
            self._group(doc)
        elif grouped:
            self._aggregate(doc)
        else:
            offer = self._offer(
                p.price or (single.price if single else None),
                p.regular_price or (single.regular_price if single else None),
                p.availability or (single.availability if single else None),
                "product",
            )
            if offer:
                doc["offers"] = offer
        return doc

    # -- variants --------------------------------------------------------------------------------

    def _group(self, doc: dict[str, Any]) -> None:
        doc["productGroupID"] = plain_text(self.p.sku, TEXT_MAX) or self.p.id
        varies: list[str] = []
        variants: list[dict[str, Any]] = []
        for variant in self.p.variants:
            node = self._variant(variant, varies)
            variants.append(node)
        if varies:
            doc["variesBy"] = varies
        doc["hasVariant"] = variants
        if not any("offers" in v for v in variants):
            self.warnings.append("no variant has an offer: Google shows no rich result for it")

    def _variant(self, v: Variant, varies: list[str]) -> dict[str, Any]:
        where = f"variant {v.id}"
        node: dict[str, Any] = {"@type": "Product"}
        values = [value for _, value in v.options]
        label = plain_text(v.title or " / ".join(values), NAME_MAX)
        name = f"{self.name} \u2013 {label}" if self.name and label else (self.name or label)
        _put(node, "name", plain_text(name, NAME_MAX))
        _put(node, "sku", plain_text(v.sku, TEXT_MAX))
        self._gtin(node, v.gtin, where, hub=False)
        own = next((i.src for i in self.p.images if v.image_id and i.id == v.image_id), None)
        image = self._url(own, f"{where} image") if own else None
        if image or self.images:
            node["image"] = [image] if image else [self.images[0]]
        extra: list[dict[str, Any]] = []
        for raw_name, raw_value in v.options:
            name_text = plain_text(raw_name, TEXT_MAX)
            value_text = plain_text(raw_value, TEXT_MAX)
            if not name_text or not value_text:
                continue
            known = _VARIES_BY.get(name_text.casefold().removeprefix("pa_").strip())
            varied = f"{SCHEMA}/{known}" if known else name_text
            if varied not in varies:
                varies.append(varied)
            if known:
                node.setdefault(known, value_text)
            else:
                extra.append({"@type": "PropertyValue", "name": name_text, "value": value_text})
        if extra:
            node["additionalProperty"] = extra
        offer = self._offer(v.price, v.regular_price, v.availability, where)
        if offer:
            node["offers"] = offer
        return node

    def _aggregate(self, doc: dict[str, Any]) -> None:
        prices = [amount for v in self.p.variants if (amount := _price(v.price)) is not None]
        if not prices:
            self.warnings.append("no variant has a price: no offer")
            return
        if self.currency is None:
            self.warnings.append("no currency: no offer (Google needs priceCurrency)")
            return
        offer: dict[str, Any] = {
            "@type": "AggregateOffer",
            "lowPrice": _decimal_text(min(prices)),
            "highPrice": _decimal_text(max(prices)),
            "offerCount": len(prices),
            "priceCurrency": self.currency,
            "itemCondition": f"{SCHEMA}/{self.o.condition}",
        }
        if self.p.availability:
            offer["availability"] = f"{SCHEMA}/{self.p.availability}"
        _put(offer, "url", self.url)
        doc["offers"] = offer

    # -- parts -----------------------------------------------------------------------------------

    def _offer(
        self, price: str | None, regular: str | None, availability: str | None, where: str
    ) -> dict[str, Any] | None:
        amount = _price(price)
        if amount is None:
            if price:
                self.warnings.append(
                    f"{where}: price {price[:40]!r} is not a plain decimal: no offer"
                )
            else:
                self.warnings.append(f"{where}: no price: no offer (Google needs a price)")
            return None
        if self.currency is None:
            self.warnings.append(f"{where}: no currency: no offer (Google needs priceCurrency)")
            return None
        if amount == 0:
            self.warnings.append(
                f"{where}: price 0: Google's merchant listings need a price above 0"
            )
        offer: dict[str, Any] = {
            "@type": "Offer",
            "price": _decimal_text(amount),
            "priceCurrency": self.currency,
            "itemCondition": f"{SCHEMA}/{self.o.condition}",
        }
        if availability:
            offer["availability"] = f"{SCHEMA}/{availability}"
        else:
            self.warnings.append(f"{where}: no stock status: offer without availability")
        _put(offer, "url", self.url)
        listed = _price(regular)
        if listed is not None and listed > amount:  # on sale: the regular price is struck through
            offer["priceSpecification"] = {
                "@type": "UnitPriceSpecification",
                "priceType": f"{SCHEMA}/ListPrice",
                "price": _decimal_text(listed),
                "priceCurrency": self.currency,
            }
        return offer

    def _gtin(self, node: dict[str, Any], value: str | None, where: str, *, hub: bool) -> None:
        found = gtin_property(value)
        if value and found is None:
            self.warnings.append(
                f"{where}: GTIN {value[:40]!r} is not valid (length or check digit)"
            )
        if hub and self.hub.gtin is not None:
            if found is None:
                found = self.hub.gtin
            elif found[1] != self.hub.gtin[1]:
                self.warnings.append(
                    f"{where}: the hub's GTIN differs from the store's: kept the store's"
                )
        if found is not None:
            node[found[0]] = found[1]

    def _rating(self, rating: Rating | None) -> dict[str, Any] | None:
        if rating is None or rating.count < 1:
            return None
        text = rating.average.strip()
        if not _RATING.fullmatch(text) or not Decimal(1) <= Decimal(text) <= Decimal(5):
            self.warnings.append(f"rating {text[:20]!r} is not between 1 and 5: left out")
            return None
        return {
            "@type": "AggregateRating",
            "ratingValue": _decimal_text(Decimal(text)),
            "reviewCount": rating.count,
        }

    def _images(self, images: Iterable[Image]) -> tuple[str, ...]:
        out: list[str] = []
        for image in sorted(images, key=lambda i: i.position):
            url = self._url(image.src, f"image {image.id}")
            if url and url not in out:
                out.append(url)
        return tuple(out)

    def _url(self, value: str | None, what: str) -> str | None:
        if not value or not value.strip():
            return None
        text = value.strip()
        found = _absolute(text) or (
            _absolute(urljoin(self.o.store_url, text)) if self.o.store_url else None
        )
        if found is None:
            self.warnings.append(f"{what}: {text[:80]!r} is not an absolute http(s) URL: left out")
        return found


# -- inputs --------------------------------------------------------------------------------------


def _options(
    store_url: str | None,
    currency: str | None,
    brand: str | None,
    condition: Condition,
    variants: VariantsAs,
) -> _Options:
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {', '.join(CONDITIONS)}")
    if variants not in ("group", "aggregate"):
        raise ValueError("variants must be 'group' or 'aggregate'")
    return _Options(
        store_url=_absolute(store_url.strip()) if store_url else None,
        currency=currency,
        brand=plain_text(brand, TEXT_MAX),
        condition=condition,
        variants=variants,
    )


def _accept_hub(hub: object, warnings: list[str]) -> _Hub:
    accepted = _Hub()
    if hub is None:
        return accepted
    if not isinstance(hub, Mapping):
        warnings.append(f"hub JSON-LD is a {type(hub).__name__}, not an object: ignored")
        return accepted
    for key, value in sorted(hub.items(), key=lambda kv: str(kv[0])):
        name = str(key)
        if name in _SILENT:
            continue
        if name in STORE_FACTS:
            warnings.append(f"hub property {name!r} ignored: the store's current data decides it")
        elif name in HUB_TEXT_PROPERTIES:
            limit = {"name": NAME_MAX, "description": DESCRIPTION_MAX}.get(name, TEXT_MAX)
            text = plain_text(value, limit) if isinstance(value, str) else None
            if text:
                accepted.text[name] = text
            else:
                warnings.append(f"hub property {name!r} ignored: not a non-empty string")
        elif name == "brand":
            raw = value.get("name") if isinstance(value, Mapping) else value
            accepted.brand = plain_text(raw, TEXT_MAX) if isinstance(raw, str) else None
            if accepted.brand is None:
                warnings.append("hub property 'brand' ignored: no brand name")
        elif name in _HUB_GTINS:
            found = gtin_property(value) if isinstance(value, str) else None
            if found is None:
                warnings.append(f"hub property {name!r} ignored: not a valid GTIN")
            elif accepted.gtin is None:
                accepted.gtin = found
        else:
            warnings.append(f"hub property {name[:60]!r} ignored: not one the hub may set")
    return accepted


def _relevant(product: Product, hub: _Hub) -> Product:
    """`product` with only the fields the builder reads: the builder sees nothing else, and
    `jsonld_inputs` hashes exactly this (plus the options), so the fingerprint cannot miss one.
    A field the hub's value replaces is dropped too: the store changing it changes nothing."""
    return Product(
        id=product.id,
        title="" if "name" in hub.text else product.title,
        sku=product.sku,
        url=product.url,
        description_html=None if "description" in hub.text else product.description_html,
        short_description_html=(
            None
            if "description" in hub.text or plain_text(product.description_html, DESCRIPTION_MAX)
            else product.short_description_html
        ),
        price=product.price,
        regular_price=product.regular_price,
        currency=product.currency,
        availability=product.availability,
        images=tuple(Image(id=i.id, src=i.src, position=i.position) for i in product.images),
        variants=tuple(replace(v, stock_quantity=None, sale_price=None) for v in product.variants),
        rating=product.rating,
        brand=None if hub.brand else product.brand,
        gtin=product.gtin,
    )


# -- small rules ---------------------------------------------------------------------------------


def _put(node: dict[str, Any], key: str, value: str | None) -> None:
    if value:
        node[key] = value


def _price(value: str | None) -> Decimal | None:
    if value is None:
        return None
    text = value.strip()
    return Decimal(text) if _PRICE.fullmatch(text) else None


def _decimal_text(amount: Decimal) -> str:
    """A decimal as the store wrote it ("19.00" stays "19.00"), without leading zeros."""
    return format(amount, "f")


def _currency(value: str | None) -> str | None:
    if not value:
        return None
    text = value.strip().upper()
    return text if _CURRENCY.fullmatch(text) else None


def _absolute(value: str) -> str | None:
    if _URL_FORBIDDEN.search(value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return value


class _TextOf(HTMLParser):
    """The text of an HTML fragment: tags dropped, block ends as spaces, script/style skipped."""

    _SKIP = frozenset({"script", "style", "template", "noscript", "head", "title"})
    _BREAK = frozenset({
        "p", "br", "div", "li", "ul", "ol", "dl", "dt", "dd", "tr", "td", "th", "table",
        "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "hr", "section", "article",
        "header", "footer", "figcaption", "img",
    })  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BREAK:
            self.parts.append(" ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BREAK:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BREAK:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


_SCRIPT_ESCAPES: dict[int, str] = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
    **{c: f"\\u{c:04x}" for c in range(0xD800, 0xE000)},
}
