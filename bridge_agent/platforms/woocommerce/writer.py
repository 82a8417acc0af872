"""The WooCommerce `Writer`: the downstream direction of the wc/v3 adapter (platforms.md 1.11).

Where each field lives:

| field | lives in | written as |
| --- | --- | --- |
| `seo_title`, `seo_description` | the SEO plugin's post meta (`SEO_META_KEYS`) | `meta_data` |
| `description_html` | the product's `description` | `description` |
| `image_alt` (`FieldRef.image`: its id) | the attachment's `_wp_attachment_image_alt` | `images` |
| `jsonld` | the post meta `_bridge_jsonld`, a JSON string the plugin prints | `meta_data` |

**SEO plugin**: the store option `seo_plugin` names it; otherwise it is detected per product and
field from its meta, exactly as `mapping.py` reads it (the first of Yoast, Rank Math, AIOSEO,
SEOPress with a value for the field, then one with a value for the other SEO field, then one
whose keys are there). Values compare as the
mapping reads them (SEO text and ALT stripped), so the hub's `expected`, taken from the mirror,
matches the store's value. A product with no SEO plugin's meta and no `seo_plugin` set gets
`unsupported` for its SEO fields, saying so: guessing a plugin would write meta that nothing
reads. (Yoast keeps no row for an empty title: on a Yoast store, a product never given one
needs `seo_plugin`.)

**Reading** (`read_fields`): `GET /products?include=<100 ids>&status=any&_fields=...`, one request
per 100 products; ids the listing leaves out (trashed products, variation ids, deleted ones) are
read one by one, a variation id or a 404 meaning "no such product". Empty values read as None.

**Writing** (`write_fields`), per call:

1. one batched read of every product concerned, and per field the conflict check (guarantee 5):
   a field whose current value is not the hub's `expected` is `conflict` with `current`, and only
   that field is left out; the product's other fields still go;
2. `POST /products/batch` with `{"update": [...]}`, at most 100 products per call (a store that
   lowered its limit answers 413: the batch is split and sent again, nothing was applied). Each
   element of the answer is read: an `error` element fails that product's fields with the store's
   status, code and message;
3. meta by key only, never by row id (`{key, value}` is an upsert by key: a second row with the
   key is removed, platforms.md 1.11); `_bridge_jsonld` as compact JSON;
4. image ALT with the safe pattern: EVERY image of the product, by id, in the order the store
   has them, `alt` only on the targeted ones, never `src` (sending `images` replaces the whole
   set: an image left out is detached, a `src` sideloads a duplicate);
5. verification: the products are read again, and a field whose value is not the one written is
   `failed` ("the store did not keep the value"), e.g. a filter that rewrote it.

**A store that cannot be read** before anything is written (down, or the key refused) makes
`write_fields` raise that PlatformError, as `read_fields` does: nothing was written, and the
caller asks again later rather than reporting a failure for every field.

**Never a blind retry**: a batch whose answer is lost or ambiguous (`PlatformAmbiguous`: a timeout
or reset after the body was sent, a 5xx) or refused by something in front of the store (a host or
WAF answering the POST with an HTML 403/406/501 page) is not sent again: the products are read,
and each field is `applied` if the store now holds the written value, else `failed` with the
status and the first line of the answer. An empty ALT is `unsupported`: WooCommerce ignores an
empty `alt` (it never clears one), so claiming it applied would be a lie.

**Shared attachments**: ALT lives on the attachment, not the product, so writing it through one
product changes it on every product that shows the same attachment. This writer cannot know the
others without scanning the whole store (it does not): the downstream engine checks its mirror
for other products with the same image id before asking for the write, and reports or refuses
as the store's settings say.

**The race WooCommerce leaves open**: wc/v3 has no conditional write, so a merchant's save in the
milliseconds between this writer's read and its batch is overwritten; the verification read
still reports what the store holds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge_agent.errors import (
    InputError,
    PlatformAmbiguous,
    PlatformAuthFailed,
    PlatformError,
    PlatformUnavailable,
    ProductNotFound,
)
from bridge_agent.inputs import loads_json
from bridge_agent.platforms.base import FieldRef, FieldWrite, WriteField, WriteResult
from bridge_agent.platforms.woocommerce.client import Params, WooClient, WooRequestRejected
from bridge_agent.platforms.woocommerce.mapping import SEO_META_KEYS
from bridge_agent.platforms.woocommerce.settings import MAX_PER_PAGE, WooSettings

__all__ = ["BATCH_LIMIT", "JSONLD_META_KEY", "WooWriter", "seo_keys"]

log = structlog.get_logger("bridge_agent.woocommerce")

BATCH_LIMIT = 100  # woocommerce_rest_batch_items_limit (create + update + delete)
JSONLD_META_KEY = "_bridge_jsonld"
MAX_JSONLD_BYTES = 1024 * 1024  # a product's JSON-LD is a few KB; a larger meta is not ours
_READ_FIELDS = "id,type,description,images,meta_data"
_SEO_FIELDS = (WriteField.SEO_TITLE, WriteField.SEO_DESCRIPTION)


def seo_keys(plugin: str) -> tuple[str, str]:
    """The (title, description) meta keys of an SEO plugin (`yoast`, `rankmath`, ...)."""
    for name, title, description in SEO_META_KEYS:
        if name == plugin:
            return title, description
    raise ValueError(f"unknown SEO plugin {plugin!r}")


@dataclass(slots=True)
class _Stored:
    """One product as the writer needs it: its description, images and meta by key."""

    id: int
    description: str
    images: list[tuple[int, str]]  # (attachment id, alt), in the store's order
    meta: dict[str, Any]  # the first row of each key (what WooCommerce's get_meta answers)


@dataclass(slots=True)
class _Plan:
    """What goes to one product in the batch, and which writes it carries."""

    product: _Stored
    writes: list[tuple[int, FieldWrite]] = field(default_factory=list)  # (index in the call, …)
    meta: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    alts: dict[int, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.product.id}
        if self.meta:
            body["meta_data"] = [{"key": k, "value": v} for k, v in self.meta.items()]
        if self.description is not None:
            body["description"] = self.description
        if self.alts:
            # Every image by id, in order, never `src`: nothing detached, nothing sideloaded.
            body["images"] = [
                {"id": i, "alt": self.alts[i]} if i in self.alts else {"id": i}
                for i, _ in self.product.images
            ]
        return body


class WooWriter:
    """Reads and writes the downstream fields of one store's products through its WooClient
    (the store's request budget and metrics). Stateless: the adapter makes one per call."""

    def __init__(self, settings: WooSettings, client: WooClient) -> None:
        self.settings = settings
        self.client = client

    # -- Writer -----------------------------------------------------------------------------------

    async def read_fields(self, refs: Sequence[FieldRef]) -> Mapping[FieldRef, Any]:
        products = await self._read(r.product for r in refs)
        return {r: self._value(products.get(_key(r.product)), r) for r in refs}

    async def write_fields(self, writes: Sequence[FieldWrite]) -> Sequence[WriteResult]:
        results: list[WriteResult | None] = [None] * len(writes)
        products = await self._read(w.ref.product for w in writes)
        plans: dict[int, _Plan] = {}
        for n, write in enumerate(writes):
            stored = products.get(_key(write.ref.product))
            outcome = self._check(write, stored)
            if outcome is not None:
                results[n] = outcome
                continue
            assert stored is not None  # a missing product is decided in _check
            plan = plans.setdefault(stored.id, _Plan(stored))
            self._add(plan, n, write)
        sent = list(plans.values())
        failures: dict[int, PlatformError] = {}  # product id -> the batch's uncertain failure
        chunks = [sent[i : i + BATCH_LIMIT] for i in range(0, len(sent), BATCH_LIMIT)]
        for outcome_map in await asyncio.gather(*(self._send(c) for c in chunks)):
            for product_id, answer in outcome_map.items():
                if isinstance(answer, WriteResult):
                    for n, write in plans[product_id].writes:
                        results[n] = _refused(write.ref, answer)
                elif answer is not None:
                    failures[product_id] = answer
        to_verify = [p for p in sent if all(results[n] is None for n, _ in p.writes)]
        await self._verify(to_verify, failures, results)
        return [r if r is not None else _unknown(writes[n].ref) for n, r in enumerate(results)]

    # -- planning ---------------------------------------------------------------------------------

    def _check(self, write: FieldWrite, stored: _Stored | None) -> WriteResult | None:
        """The result of a write decided before anything is sent (None: it goes)."""
        ref = write.ref
        if ref.field is not WriteField.JSONLD and not (
            write.value is None or isinstance(write.value, str)
        ):
            # A hub that sends an object or a number for a text field: never its Python repr
            # in the merchant's store.
            kind = type(write.value).__name__
            return WriteResult(ref, "failed", message=f"{ref.field} must be text, not {kind}")
        if ref.field is WriteField.IMAGE_ALT:
            if ref.image is None or not _digits(ref.image):
                return WriteResult(ref, "failed", message="image_alt needs the image's id")
            if write.value is None or (isinstance(write.value, str) and not write.value.strip()):
                return WriteResult(
                    ref,
                    "unsupported",
                    message="WooCommerce ignores an empty alt (it never clears one): "
                    "the ALT text was left as it is",
                )
        if stored is None:
            return WriteResult(ref, "failed", 404, f"product {ref.product} does not exist")
        if ref.field in _SEO_FIELDS and self._seo_key(stored, ref.field) is None:
            return WriteResult(ref, "unsupported", message=self._no_plugin(stored))
        if ref.field is WriteField.IMAGE_ALT and int(ref.image or 0) not in dict(stored.images):
            return WriteResult(
                ref, "failed", message=f"image {ref.image} is not an image of product {stored.id}"
            )
        current = self._value(stored, ref)
        if not _same(ref.field, current, write.expected):
            return WriteResult(
                ref, "conflict", message="the store's value changed since the hub read it",
                current=current,
            )  # fmt: skip
        return None

    def _add(self, plan: _Plan, n: int, write: FieldWrite) -> None:
        ref, value = write.ref, write.value
        plan.writes.append((n, write))
        if ref.field in _SEO_FIELDS:
            key = self._seo_key(plan.product, ref.field)
            assert key is not None  # checked in _check
            plan.meta[key] = "" if value is None else str(value)
        elif ref.field is WriteField.JSONLD:
            plan.meta[JSONLD_META_KEY] = _jsonld_text(value)
        elif ref.field is WriteField.DESCRIPTION:
            plan.description = "" if value is None else str(value)
        else:
            plan.alts[int(ref.image or 0)] = str(value)

    # -- sending ----------------------------------------------------------------------------------

    async def _send(self, chunk: list[_Plan]) -> dict[int, WriteResult | PlatformError | None]:
        """One batch: per product None (sent, to verify), a WriteResult (the store refused
        it), or the PlatformError of a batch whose outcome is unknown (to read back)."""
        bodies = [p.body() for p in chunk]
        try:
            response = await self.client.post("/products/batch", {"update": bodies})
        except WooRequestRejected as exc:
            if exc.status == 413 and len(chunk) > 1:
                # The store's limit is lower than 100 (a filter): nothing was applied.
                half = len(chunk) // 2
                first, second = await asyncio.gather(
                    self._send(chunk[:half]), self._send(chunk[half:])
                )
                return {**first, **second}
            return self._uncertain(chunk, exc)
        except PlatformError as exc:
            return self._uncertain(chunk, exc)
        answers = response.data.get("update") if isinstance(response.data, dict) else None
        if not isinstance(answers, list) or len(answers) != len(chunk):
            odd = PlatformAmbiguous(
                "WooCommerce answered the batch without one element per product",
                status=response.status,
            )
            return self._uncertain(chunk, odd)
        out: dict[int, WriteResult | PlatformError | None] = {}
        for plan, answer in zip(chunk, answers, strict=True):
            refusal = answer.get("error") if isinstance(answer, dict) else None
            if isinstance(refusal, dict):
                out[plan.product.id] = _element_failure(plan, refusal)
            else:
                out[plan.product.id] = None
        return out

    def _uncertain(
        self, chunk: list[_Plan], exc: PlatformError
    ) -> dict[int, WriteResult | PlatformError | None]:
        log.warning(
            "woocommerce_batch_write_uncertain",
            store=self.settings.store_id,
            products=len(chunk),
            status=exc.status,
            reason=str(exc),
        )
        return {p.product.id: exc for p in chunk}

    async def _verify(
        self,
        plans: list[_Plan],
        failures: Mapping[int, PlatformError],
        results: list[WriteResult | None],
    ) -> None:
        """Read the products back and decide each field by what the store holds now."""
        if not plans:
            return
        try:
            after = await self._read(str(p.product.id) for p in plans)
        except PlatformError as exc:
            for plan in plans:
                error = failures.get(plan.product.id)
                for n, write in plan.writes:
                    results[n] = _unverified(write.ref, error, exc)
            return
        for plan in plans:
            error = failures.get(plan.product.id)
            stored = after.get(str(plan.product.id))
            for n, write in plan.writes:
                ref = write.ref
                held = self._value(stored, ref) if stored is not None else None
                if stored is not None and _same(ref.field, held, write.value):
                    message = _read_back(error) if error is not None else None
                    results[n] = WriteResult(ref, "applied", message=message)
                elif error is not None:
                    results[n] = WriteResult(ref, "failed", error.status, _refusal(error))
                elif stored is None:
                    results[n] = WriteResult(
                        ref, "failed", 404, f"product {ref.product} was deleted meanwhile"
                    )
                else:
                    results[n] = WriteResult(
                        ref,
                        "failed",
                        message=f"the store did not keep the value (it holds {_short(held)})",
                        current=held,
                    )

    # -- reading ----------------------------------------------------------------------------------

    async def _read(self, ids: Iterable[str]) -> dict[str, _Stored]:
        """The products among `ids` that exist, by id (a PlatformError if the store fails)."""
        wanted = list(dict.fromkeys(_key(i) for i in ids if _digits(i)))
        found: dict[str, _Stored] = {}

        async def listing(part: list[str]) -> None:
            params: Params = {
                "include": ",".join(part),
                "status": "any",
                "orderby": "id",
                "_fields": _READ_FIELDS,
            }
            listed = await self.client.list_page(
                "/products", params, page=1, page_size=MAX_PER_PAGE
            )
            for item in listed.items:
                stored = _stored(item)
                if stored is not None and str(stored.id) in part:
                    found[str(stored.id)] = stored

        await asyncio.gather(
            *(listing(wanted[n : n + MAX_PER_PAGE]) for n in range(0, len(wanted), MAX_PER_PAGE))
        )
        left = [i for i in wanted if i not in found]
        singles = await asyncio.gather(*(self._read_one(i) for i in left))
        found.update((i, s) for i, s in zip(left, singles, strict=True) if s is not None)
        return found

    async def _read_one(self, product_id: str) -> _Stored | None:
        """A product the listing left out: trashed (still writable), a variation id, or gone."""
        try:
            response = await self.client.get(
                f"/products/{int(product_id)}", {"_fields": _READ_FIELDS}
            )
        except ProductNotFound:
            return None
        if not isinstance(response.data, dict):
            raise PlatformUnavailable(f"invalid JSON from /products/{int(product_id)}")
        return _stored(response.data)

    def _value(self, stored: _Stored | None, ref: FieldRef) -> Any:
        if stored is None:
            return None
        if ref.field in _SEO_FIELDS:
            key = self._seo_key(stored, ref.field)
            return _text(stored.meta.get(key)) if key is not None else None
        if ref.field is WriteField.DESCRIPTION:
            return _text(stored.description, strip=False)
        if ref.field is WriteField.JSONLD:
            return _jsonld_value(stored.meta.get(JSONLD_META_KEY))
        image = int(ref.image) if ref.image is not None and _digits(ref.image) else None
        return _text(dict(stored.images).get(image or 0))

    def _seo_key(self, stored: _Stored, kind: WriteField) -> str | None:
        """The meta key a product's SEO field is read from and written to (None: no plugin).

        The store's `seo_plugin` if set; else, as `mapping.py` reads (so that the hub's
        `expected`, taken from the mirror, is this value): the first plugin with a value for
        this field, then the first with a value for either field (a migrated store keeps the old
        plugin's empty rows), then the first whose keys the product has at all.
        """
        index = 1 if kind is WriteField.SEO_TITLE else 2
        if self.settings.seo_plugin is not None:
            return seo_keys(self.settings.seo_plugin)[index - 1]
        keys = SEO_META_KEYS
        for plugin in keys:
            if _text(stored.meta.get(plugin[index])):
                return plugin[index]
        for plugin in keys:
            if _text(stored.meta.get(plugin[1])) or _text(stored.meta.get(plugin[2])):
                return plugin[index]
        for plugin in keys:
            if plugin[1] in stored.meta or plugin[2] in stored.meta:
                return plugin[index]
        return None

    def _no_plugin(self, stored: _Stored) -> str:
        names = ", ".join(n for n, _, _ in SEO_META_KEYS)
        return (
            f"no SEO plugin was found: product {stored.id} has none of the SEO plugins' meta "
            f"keys; set seo_plugin ({names}) in the store's options to write SEO fields"
        )


# -- helpers ---------------------------------------------------------------------------------------


def _stored(item: Mapping[str, Any]) -> _Stored | None:
    product_id = item.get("id")
    if not isinstance(product_id, int) or isinstance(product_id, bool) or product_id <= 0:
        return None
    if item.get("type") == "variation":
        return None  # a variation id is not a product
    images: list[tuple[int, str]] = [
        (int(i["id"]), str(i.get("alt") or ""))
        for i in item.get("images") or ()
        if isinstance(i, dict) and isinstance(i.get("id"), int) and i["id"] > 0
    ]
    meta: dict[str, Any] = {}
    for row in item.get("meta_data") or ():
        if isinstance(row, dict) and isinstance(row.get("key"), str):
            meta.setdefault(row["key"], row.get("value"))  # get_meta answers the first row
    description = item.get("description")
    return _Stored(product_id, description if isinstance(description, str) else "", images, meta)


def _text(value: Any, *, strip: bool = True) -> str | None:
    """A field's value as the Writer protocol answers it, None when empty, normalized as the
    adapter's mapping reads it (so a hub's `expected`, taken from the mirror, compares equal):
    SEO meta and ALT stripped, the description verbatim unless it is only whitespace."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if not text.strip():
        return None
    return text.strip() if strip else text


def _jsonld_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=False)


def _jsonld_value(raw: Any) -> Any:
    """The parsed `_bridge_jsonld` (None when absent or empty; the raw text if it is not JSON)."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        return raw  # WordPress answers serialized arrays as JSON already
    try:
        # Bounded: the meta is the store's text, which anyone with access to it may have set.
        return loads_json(raw, max_bytes=MAX_JSONLD_BYTES, what="_bridge_jsonld")
    except InputError:
        return raw


def _same(kind: WriteField, current: Any, other: Any) -> bool:
    """Whether the store's value is `other` (empty and None are the same: nothing)."""
    if kind is WriteField.JSONLD:
        return bool(current == _jsonld_value(_jsonld_text(other)))
    strip = kind is not WriteField.DESCRIPTION
    return bool(_text(current, strip=strip) == _text(other, strip=strip))


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and 0 < int(text) < 2**63


def _key(product_id: str) -> str:
    """A product id as WooCommerce writes it ("007" is product 7); any other text unchanged."""
    return str(int(product_id)) if _digits(product_id) else product_id


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else f"{shown[:77]}..."


def _element_failure(plan: _Plan, error: Mapping[str, Any]) -> WriteResult:
    """An `{"id", "error": {code, message, data: {status}}}` element of the batch answer."""
    data = error.get("data")
    status = data.get("status") if isinstance(data, dict) else None
    code = error.get("code") if isinstance(error.get("code"), str) else "error"
    message = error.get("message") if isinstance(error.get("message"), str) else ""
    said = " ".join(str(message).split())[:200]
    return WriteResult(
        plan.writes[0][1].ref,
        "failed",
        status if isinstance(status, int) else None,
        f"WooCommerce refused product {plan.product.id} ({code}): {said}",
    )


def _refused(ref: FieldRef, answer: WriteResult) -> WriteResult:
    return WriteResult(ref, answer.outcome, answer.status, answer.message)


def _refusal(error: PlatformError) -> str:
    if isinstance(error, PlatformAmbiguous):
        return f"not applied: the store does not hold the value after an unanswered write ({error})"
    if isinstance(error, PlatformAuthFailed):
        return f"not applied: the store refused the write ({error})"
    return f"not applied: {error}"


def _read_back(error: PlatformError) -> str:
    how = f"answered {error.status}" if error.status else "its answer was lost"
    return f"applied: the store holds the value, read back because the batch {how}"


def _unverified(ref: FieldRef, error: PlatformError | None, exc: PlatformError) -> WriteResult:
    if error is not None:
        message = (
            f"unknown: the write may or may not have been applied ({error}), and the product "
            f"could not be read back ({exc}); read it again before deciding"
        )
        return WriteResult(ref, "failed", error.status, message)
    return WriteResult(
        ref,
        "failed",
        exc.status,
        f"written but not verified: the product could not be read ({exc})",
    )


def _unknown(ref: FieldRef) -> WriteResult:
    return WriteResult(ref, "failed", message="no result (internal error)")
