"""The Shopify `Writer`: the downstream direction of the Admin GraphQL adapter (platforms.md 2.9).

Where each field lives, and the mutation that writes it (every document in `queries.py`):

| field | lives in | written by |
| --- | --- | --- |
| `seo_title`, `seo_description` | the product's `seo { title description }` | `productUpdate` |
| `description_html` | the product's `descriptionHtml` | `productUpdate` |
| `image_alt` (`FieldRef.image`: the MediaImage's number) | the file's `alt` | `fileUpdate` |
| `jsonld` | the product metafield `bridge.jsonld`, type `json` | `metafieldsSet` |
| `jsonld` emptied (None, `""` or `{}`) | the same metafield, deleted | `metafieldsDelete` |

`productUpdate` takes the `product:` argument (`ProductUpdateInput`), never the deprecated
`input:`, which has been seen answering success without applying anything; one call per product,
with only the fields written (an omitted input field is left as it is). `fileUpdate` takes up to
`FILES_PER_CALL` files, `metafieldsSet` up to `METAFIELDS_PER_CALL` metafields (Shopify's limit:
25), each with the `compareDigest` of the value read just before: a metafield changed by anyone
between that read and the write is refused (`STALE_OBJECT`) and reported `conflict`, never
overwritten. Values compare as `mapping.py` reads them (verbatim text, empty as nothing; the
JSON-LD by content), so the hub's `expected`, taken from the mirror, matches the store's value.

**Reading** (`read_fields`, and once at the start of each `write_fields`): `nodes(ids:)` with
`WRITER_FIELDS` (3 points a product, up to 250 ids a call), or `WRITER_FIELDS_MEDIA` for the
products whose ALT is asked (their first `WRITER_MEDIA_FIRST` media, then `PRODUCT_MEDIA` pages
while there are more). Each call is sized to the cost target and to the shop's bucket
(`queries.sized`); the client's cost bucket paces the calls, so the shop never has to answer
THROTTLED. A product that is not there (deleted, never there, or an id of something else) reads
as None for every field; a store that cannot be read raises its PlatformError.

**Writing** (`write_fields`): after the read, per write the conflict check (guarantee 5): a field
whose current value is not the hub's `expected` is `conflict` with `current`, and only that field
is left out. The rest go, the three kinds of mutation at once (within the adapter's request
slots). Shopify answers a refused input with `userErrors` and HTTP 200; each entry becomes the
result of the write its `field` path names (`seo.title`, `descriptionHtml`, `files.<i>`,
`metafields.<i>` or `elementIndex`), `failed` with Shopify's message (`conflict` for a stale
`compareDigest`). A refused call changed nothing (each of these mutations is all or nothing), so
the writes it carried that no entry named are sent once more without the refused ones; an entry
that names no input fails the whole call. A call that fails as a whole (HTTP error, GraphQL
error, the throttle given up) is `failed` for its writes with the status and message; one whose
outcome is unknown (a cut connection, a 5xx after the body was sent) is never sent again: the
products are read back and a field holding the written value is `applied`.

**Emptying the JSON-LD** (a rollback of a first-time write sends the old value, None): a `json`
metafield cannot hold nothing, so it is deleted with `metafieldsDelete` (up to
`METAFIELDS_PER_CALL` a call). That mutation has no `compareDigest`: the conflict check is the
batched read just before (the metafield must still hold the hub's `expected`), so a change in
the few milliseconds between that read and the delete is lost; a store that holds no metafield
already is `applied` without a call.

ALT text lives on the file: a file shown by other products changes for them too, as the
downstream engine knows from its mirror (`alt_shared_attachments`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from bridge_agent.errors import (
    InputError,
    Outcome,
    PlatformAmbiguous,
    PlatformError,
    PlatformUnavailable,
)
from bridge_agent.inputs import loads_json
from bridge_agent.platforms.base import FieldRef, FieldWrite, WriteField, WriteResult
from bridge_agent.platforms.shopify import queries
from bridge_agent.platforms.shopify.client import ShopifyClient
from bridge_agent.platforms.shopify.mapping import gid, gid_number
from bridge_agent.platforms.shopify.settings import ShopifySettings
from bridge_agent.sync.paging import PageGuard

__all__ = ["JSONLD_KEY", "JSONLD_NAMESPACE", "JSONLD_TYPE", "MAX_MEDIA", "ShopifyWriter"]

log = structlog.get_logger("bridge_agent.shopify")

#: The metafield holding a product's JSON-LD (`WRITER_PRODUCT` in queries.py reads it; the theme
#: app extension prints `product.metafields.bridge.jsonld`).
JSONLD_NAMESPACE = "bridge"
JSONLD_KEY = "jsonld"
JSONLD_TYPE = "json"
MAX_MEDIA = 250  # media read per product (Shopify's limit per product)
MAX_JSONLD_BYTES = 1024 * 1024  # a product's JSON-LD is a few KB; a larger value is not ours
_SEO_FIELDS = {WriteField.SEO_TITLE: "title", WriteField.SEO_DESCRIPTION: "description"}
_STALE = "STALE_OBJECT"
_T = TypeVar("_T")


@dataclass(slots=True)
class _Stored:
    """One product as the writer needs it."""

    id: str  # the product's number
    description: str | None
    seo: dict[str, str | None]
    jsonld: str | None  # the metafield's value as stored (text)
    digest: str | None  # its compareDigest (None: no metafield)
    media: dict[str, str] = field(default_factory=dict)  # MediaImage number -> alt


@dataclass(slots=True)
class _Item:
    """One write as sent: its index in the call's writes and its part of a mutation."""

    n: int
    write: FieldWrite
    body: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Refusal:
    position: int | None  # the item named (None: the whole call)
    message: str
    code: str | None = None


class ShopifyWriter:
    """Reads and writes the downstream fields of one shop's products through its client (the
    store's request budget, its cost bucket). Stateless: the adapter makes one per call."""

    def __init__(
        self,
        settings: ShopifySettings,
        client: ShopifyClient,
        slots: AbstractAsyncContextManager[Any] | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        # The adapter's request slots: writes share the shop's concurrency with its reads.
        self._slots = slots if slots is not None else asyncio.Semaphore(settings.concurrency)

    # -- Writer -----------------------------------------------------------------------------------

    async def read_fields(self, refs: Sequence[FieldRef]) -> Mapping[FieldRef, Any]:
        products = await self._read(_wanted(refs))
        return {r: _value(products.get(_key(r.product)), r) for r in refs}

    async def write_fields(self, writes: Sequence[FieldWrite]) -> Sequence[WriteResult]:
        results: list[WriteResult | None] = [None] * len(writes)
        products = await self._read(_wanted(w.ref for w in writes))
        updates: dict[str, list[_Item]] = {}
        files: list[_Item] = []
        metafields: list[_Item] = []
        deletes: list[_Item] = []
        for n, write in enumerate(writes):
            stored = products.get(_key(write.ref.product))
            decided = _check(write, stored)
            if decided is not None:
                results[n] = decided
                continue
            assert stored is not None  # a missing product is decided in _check
            item = _Item(n, write)
            kind = write.ref.field
            if kind is WriteField.IMAGE_ALT:
                alt = "" if write.value is None else write.value  # null would leave it as is
                item.body = {"id": gid("MediaImage", str(write.ref.image)), "alt": alt}
                files.append(item)
            elif kind is WriteField.JSONLD and _empty_jsonld(write.value):
                if stored.digest is None:  # nothing to delete: the store holds nothing already
                    results[n] = WriteResult(write.ref, "applied")
                    continue
                item.body = {
                    "ownerId": gid("Product", stored.id),
                    "namespace": JSONLD_NAMESPACE,
                    "key": JSONLD_KEY,
                }
                deletes.append(item)
            elif kind is WriteField.JSONLD:
                item.body = {
                    "ownerId": gid("Product", stored.id),
                    "namespace": JSONLD_NAMESPACE,
                    "key": JSONLD_KEY,
                    "type": JSONLD_TYPE,
                    "value": _jsonld_text(write.value),
                    "compareDigest": stored.digest,  # null: only if there is none yet
                }
                metafields.append(item)
            else:
                updates.setdefault(stored.id, []).append(item)
        doubt: dict[int, PlatformError] = {}  # write index -> the unknown outcome of its call
        calls: list[Awaitable[None]] = [
            self._attempt(items, self._send_update, results, doubt) for items in updates.values()
        ]
        calls += [
            self._attempt(part, self._send_files, results, doubt)
            for part in _chunks(files, queries.FILES_PER_CALL)
        ]
        calls += [
            self._attempt(part, self._send_metafields, results, doubt)
            for part in _chunks(metafields, queries.METAFIELDS_PER_CALL)
        ]
        calls += [
            self._attempt(part, self._send_deletes, results, doubt)
            for part in _chunks(deletes, queries.METAFIELDS_PER_CALL)
        ]
        await asyncio.gather(*calls)
        await self._read_back(writes, results, doubt)
        return [r if r is not None else _unknown(writes[n].ref) for n, r in enumerate(results)]

    # -- sending ----------------------------------------------------------------------------------

    async def _attempt(
        self,
        items: list[_Item],
        send: Callable[[list[_Item]], Awaitable[list[_Refusal]]],
        results: list[WriteResult | None],
        doubt: dict[int, PlatformError],
    ) -> None:
        """Send `items` in one call; when Shopify refuses some of them (nothing was written: each
        mutation is all or nothing), decide those and send the rest once more."""
        for attempt in range(2):
            try:
                async with self._slots:
                    refusals = await send(items)
            except PlatformError as exc:
                if _ambiguous(exc):
                    for item in items:
                        doubt[item.n] = exc
                    log.warning(
                        "shopify_write_uncertain",
                        store=self.settings.store_id,
                        writes=len(items),
                        status=exc.status,
                        reason=str(exc),
                    )
                else:
                    for item in items:
                        results[item.n] = WriteResult(
                            item.write.ref, "failed", exc.status, f"not applied: {exc}"
                        )
                return
            if not refusals:
                for item in items:
                    results[item.n] = WriteResult(item.write.ref, "applied")
                return
            whole = [r for r in refusals if r.position is None or not 0 <= r.position < len(items)]
            if whole:
                said = "; ".join(r.message for r in whole)
                for item in items:
                    results[item.n] = WriteResult(
                        item.write.ref, "failed", message=f"Shopify refused the write: {said}"
                    )
                return
            named: dict[int, list[_Refusal]] = {}
            for refusal in refusals:
                assert refusal.position is not None
                named.setdefault(refusal.position, []).append(refusal)
            for position, said_of in named.items():
                item = items[position]
                if any(r.code == _STALE for r in said_of):
                    # The metafield changed after the read: the merchant's (or another app's)
                    # value wins; `current` is filled in by the read back.
                    doubt[item.n] = _StaleDigest(said_of[0].message)
                    continue
                message = "; ".join(r.message for r in said_of)
                results[item.n] = WriteResult(
                    item.write.ref, "failed", message=f"Shopify refused {_label(item)}: {message}"
                )
            items = [item for i, item in enumerate(items) if i not in named]
            if attempt == 1:
                # Refused twice: not sent a third time (each try costs points, and a shop that
                # keeps refusing other inputs of the call will not change its mind now).
                said = "; ".join(r.message for r in refusals)
                for item in items:
                    results[item.n] = WriteResult(
                        item.write.ref,
                        "failed",
                        message=f"not applied: Shopify refused another input of the call: {said}",
                    )
                return
            if not items:
                return

    async def _send_update(self, items: list[_Item]) -> list[_Refusal]:
        product = items[0].write.ref.product
        body: dict[str, Any] = {"id": gid("Product", _key(product))}
        positions: dict[str, int] = {}
        for position, item in enumerate(items):
            ref, value = item.write.ref, item.write.value
            text = "" if value is None else str(value)
            if ref.field is WriteField.DESCRIPTION:
                body["descriptionHtml"] = text
                positions["descriptionHtml"] = position
            else:
                name = _SEO_FIELDS[ref.field]
                body.setdefault("seo", {})[name] = text
                positions[f"seo.{name}"] = position
        data = await self.client.mutate(queries.PRODUCT_UPDATE, {"product": body})
        payload = _payload(data, "productUpdate")
        refusals = []
        for error in _user_errors(payload):
            path = [p for p in error.path if p not in ("product", "input")]
            named = positions.get(".".join(path))
            if named is None and len(items) == 1 and path != ["id"]:
                named = 0  # the one input of the call
            refusals.append(_Refusal(named, error.message, error.code))
        if not refusals and not isinstance(payload.get("product"), Mapping):
            raise PlatformUnavailable(
                "invalid JSON from Shopify: productUpdate answered no product and no userErrors",
                status=200,
                outcome=Outcome.AMBIGUOUS,
            )
        return refusals

    async def _send_files(self, items: list[_Item]) -> list[_Refusal]:
        data = await self.client.mutate(queries.FILE_UPDATE, {"files": [i.body for i in items]})
        return _indexed(_payload(data, "fileUpdate"), "files")

    async def _send_metafields(self, items: list[_Item]) -> list[_Refusal]:
        data = await self.client.mutate(
            queries.METAFIELDS_SET, {"metafields": [i.body for i in items]}
        )
        return _indexed(_payload(data, "metafieldsSet"), "metafields")

    async def _send_deletes(self, items: list[_Item]) -> list[_Refusal]:
        data = await self.client.mutate(
            queries.METAFIELDS_DELETE, {"metafields": [i.body for i in items]}
        )
        # A null in `deletedMetafields` is a metafield already gone: the store holds nothing,
        # which is what the write asked.
        return _indexed(_payload(data, "metafieldsDelete"), "metafields")

    async def _read_back(
        self,
        writes: Sequence[FieldWrite],
        results: list[WriteResult | None],
        doubt: Mapping[int, PlatformError],
    ) -> None:
        """Decide the writes whose call's outcome is unknown, and fill in the current value of
        the stale ones, from one read: never a blind retry."""
        if not doubt:
            return
        try:
            after = await self._read(_wanted(writes[n].ref for n in doubt))
        except PlatformError as exc:
            for n, error in doubt.items():
                ref = writes[n].ref
                if isinstance(error, _StaleDigest):
                    results[n] = WriteResult(ref, "conflict", message=_CONFLICT)
                else:
                    results[n] = WriteResult(
                        ref,
                        "failed",
                        error.status,
                        f"unknown: the write may or may not have been applied ({error}), and "
                        f"the product could not be read back ({exc}); read it again",
                    )
            return
        for n, error in doubt.items():
            write = writes[n]
            stored = after.get(_key(write.ref.product))
            held = _value(stored, write.ref)
            if isinstance(error, _StaleDigest):
                results[n] = WriteResult(write.ref, "conflict", message=_CONFLICT, current=held)
            elif stored is not None and _same(write.ref.field, held, write.value):
                how = f"answered {error.status}" if error.status else "its answer was lost"
                results[n] = WriteResult(
                    write.ref,
                    "applied",
                    message=f"applied: the store holds the value, read back because the call {how}",
                )
            else:
                results[n] = WriteResult(
                    write.ref,
                    "failed",
                    error.status,
                    f"not applied: the store does not hold the value after an unanswered write "
                    f"({error})",
                )

    # -- reading ----------------------------------------------------------------------------------

    async def _read(self, wanted: Mapping[str, bool]) -> dict[str, _Stored]:
        """The products of `wanted` (number -> whether its media are needed) that exist."""
        bucket = self._bucket()
        plain = [i for i, media in wanted.items() if not media]
        with_media = [i for i, media in wanted.items() if media]
        calls: list[Awaitable[list[_Stored]]] = []
        size = queries.sized(
            queries.WRITER_FIELDS, "ids", queries.PRODUCT_IDS_FIRST, bucket=bucket, ids=True
        )
        calls += [self._read_chunk(part, media=False) for part in _chunks(plain, size)]
        size = queries.sized(
            queries.WRITER_FIELDS_MEDIA,
            "ids",
            queries.PRODUCT_IDS_FIRST,
            bucket=bucket,
            ids=True,
            media=queries.WRITER_MEDIA_FIRST,
        )
        calls += [self._read_chunk(part, media=True) for part in _chunks(with_media, size)]
        found: dict[str, _Stored] = {}
        for part in await asyncio.gather(*calls):
            found.update((s.id, s) for s in part)
        return found

    async def _read_chunk(self, ids: list[str], *, media: bool) -> list[_Stored]:
        variables: dict[str, Any] = {"ids": [gid("Product", i) for i in ids]}
        if media:
            variables["media"] = queries.WRITER_MEDIA_FIRST
        document = queries.WRITER_FIELDS_MEDIA if media else queries.WRITER_FIELDS
        async with self._slots:
            data = await self.client.query(document, variables)
        nodes = data.get("nodes")
        if not isinstance(nodes, list) or len(nodes) != len(ids):
            raise PlatformUnavailable("invalid JSON from Shopify: nodes(ids:) out of step")
        out: list[_Stored] = []
        for number, node in zip(ids, nodes, strict=True):
            if not isinstance(node, Mapping) or gid_number(node.get("id"), "Product") != number:
                continue  # deleted, never there, or not a product
            stored = _stored(number, node)
            if media:
                await self._media(stored, node.get("media"))
            out.append(stored)
        return out

    async def _media(self, stored: _Stored, connection: Any) -> None:
        """The product's media ALT, with follow-up pages while there are more."""
        walk = PageGuard(f"the media of product {stored.id}")
        while isinstance(connection, Mapping):
            for node in connection.get("nodes") or ():
                if not isinstance(node, Mapping):
                    continue
                number = gid_number(node.get("id"), "MediaImage")
                if number is not None:
                    alt = node.get("alt")
                    stored.media[number] = alt if isinstance(alt, str) else ""
            info = connection.get("pageInfo") or {}
            cursor = info.get("endCursor") if info.get("hasNextPage") else None
            if not isinstance(cursor, str) or len(stored.media) >= MAX_MEDIA:
                return
            walk.token(cursor)
            first = queries.sized(
                queries.PRODUCT_MEDIA, "first", queries.PAGE_FIRST, bucket=self._bucket()
            )
            async with self._slots:
                data = await self.client.query(
                    queries.PRODUCT_MEDIA,
                    {"id": gid("Product", stored.id), "first": first, "after": cursor},
                )
            product = data.get("product")
            connection = product.get("media") if isinstance(product, Mapping) else None

    def _bucket(self) -> float | None:
        status = self.client.bucket.status
        return None if status is None else status.maximum


# -- helpers ---------------------------------------------------------------------------------------

_CONFLICT = "the store's value changed since the hub read it"


class _StaleDigest(PlatformError):
    """metafieldsSet refused a stale `compareDigest`: a conflict, decided by the read back."""


@dataclass(frozen=True, slots=True)
class _UserError:
    path: list[str]
    message: str
    code: str | None
    index: int | None


def _wanted(refs: Iterable[FieldRef]) -> dict[str, bool]:
    """The products to read (Shopify numbers), each with whether its media are needed."""
    wanted: dict[str, bool] = {}
    for ref in refs:
        if not _digits(ref.product):
            continue
        key = _key(ref.product)
        wanted[key] = wanted.get(key, False) or ref.field is WriteField.IMAGE_ALT
    return wanted


def _stored(number: str, node: Mapping[str, Any]) -> _Stored:
    seo = node.get("seo")
    seo = seo if isinstance(seo, Mapping) else {}
    metafield = node.get("jsonld")
    metafield = metafield if isinstance(metafield, Mapping) else {}
    digest = metafield.get("compareDigest")
    value = metafield.get("value")
    return _Stored(
        id=number,
        description=_text(node.get("descriptionHtml")),
        seo={"title": _text(seo.get("title")), "description": _text(seo.get("description"))},
        jsonld=value if isinstance(value, str) else None,
        digest=digest if isinstance(digest, str) and metafield else None,
    )


def _check(write: FieldWrite, stored: _Stored | None) -> WriteResult | None:
    """The result of a write decided before anything is sent (None: it goes)."""
    ref = write.ref
    if ref.field is not WriteField.JSONLD and not (
        write.value is None or isinstance(write.value, str)
    ):
        # A hub that sends an object or a number for a text field: never its repr in the shop.
        kind = type(write.value).__name__
        return WriteResult(ref, "failed", message=f"{ref.field} must be text, not {kind}")
    if ref.field is WriteField.IMAGE_ALT and (ref.image is None or not _digits(ref.image)):
        return WriteResult(ref, "failed", message="image_alt needs the image's (MediaImage) id")
    if stored is None:
        return WriteResult(ref, "failed", 404, f"product {ref.product} does not exist")
    if ref.field is WriteField.IMAGE_ALT and _key(ref.image or "") not in stored.media:
        return WriteResult(
            ref, "failed", message=f"image {ref.image} is not an image of product {stored.id}"
        )
    current = _value(stored, ref)
    if not _same(ref.field, current, write.expected):
        return WriteResult(ref, "conflict", message=_CONFLICT, current=current)
    return None


def _value(stored: _Stored | None, ref: FieldRef) -> Any:
    """A field's value as the Writer protocol answers it (None when empty), read as
    `mapping.py` reads it: text verbatim, the JSON-LD parsed."""
    if stored is None:
        return None
    if ref.field in _SEO_FIELDS:
        return stored.seo.get(_SEO_FIELDS[ref.field])
    if ref.field is WriteField.DESCRIPTION:
        return stored.description
    if ref.field is WriteField.JSONLD:
        return _jsonld_value(stored.jsonld)
    if ref.image is None or not _digits(ref.image):
        return None
    return _text(stored.media.get(_key(ref.image)))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def _jsonld_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _jsonld_value(raw: str | None) -> Any:
    """The parsed metafield (None when absent or empty; the raw text if it is not JSON)."""
    if raw is None or raw == "":
        return None
    try:
        # Bounded: the metafield is the shop's text, which any app or staff account may set.
        return loads_json(raw, max_bytes=MAX_JSONLD_BYTES, what="the bridge.jsonld metafield")
    except InputError:
        return raw


def _same(kind: WriteField, current: Any, other: Any) -> bool:
    """Whether the store's value is `other` (empty and None are the same: nothing)."""
    if kind is WriteField.JSONLD:
        if _empty_jsonld(other):
            return current is None
        return bool(current == _jsonld_value(_jsonld_text(other)))
    return _text(current) == _text(other)


def _empty_jsonld(value: Any) -> bool:
    """Whether a JSON-LD to write means "no JSON-LD" (the metafield is deleted)."""
    return value is None or value == "" or (isinstance(value, Mapping) and not value)


def _payload(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    payload = data.get(name)
    if not isinstance(payload, Mapping):
        raise PlatformUnavailable(
            f"invalid JSON from Shopify: {name} answered nothing",
            status=200,
            outcome=Outcome.AMBIGUOUS,
        )
    return payload


def _user_errors(payload: Mapping[str, Any]) -> list[_UserError]:
    errors = payload.get("userErrors")
    out: list[_UserError] = []
    for error in errors if isinstance(errors, list) else ():
        if not isinstance(error, Mapping):
            continue
        raw_path = error.get("field")
        path = [str(p) for p in raw_path] if isinstance(raw_path, list) else []
        message = error.get("message")
        code = error.get("code")
        index = error.get("elementIndex")
        out.append(
            _UserError(
                path,
                " ".join(str(message).split())[:300] if message else "no message",
                code if isinstance(code, str) else None,
                index if isinstance(index, int) and not isinstance(index, bool) else None,
            )
        )
    return out


def _indexed(payload: Mapping[str, Any], name: str) -> list[_Refusal]:
    """userErrors of a list input (`files.<i>.alt`, `metafields.<i>`, `elementIndex`)."""
    refusals = []
    for error in _user_errors(payload):
        position = error.index
        if position is None and len(error.path) >= 2 and error.path[0] == name:
            position = int(error.path[1]) if error.path[1].isdigit() else None
        shown = f"{error.message} ({error.code})" if error.code else error.message
        refusals.append(_Refusal(position, shown, error.code))
    return refusals


def _label(item: _Item) -> str:
    ref = item.write.ref
    return f"{ref.field}[{ref.image}]" if ref.image is not None else str(ref.field)


def _ambiguous(exc: PlatformError) -> bool:
    return isinstance(exc, PlatformAmbiguous) or exc.outcome is Outcome.AMBIGUOUS


def _chunks(items: list[_T], size: int) -> list[list[_T]]:
    size = max(1, size)
    return [items[n : n + size] for n in range(0, len(items), size)]


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit() and 0 < int(text) < 2**63


def _key(number: str) -> str:
    """A numeric id as Shopify writes it ("007" is 7); any other text unchanged."""
    return str(int(number)) if _digits(number) else number


def _unknown(ref: FieldRef) -> WriteResult:
    return WriteResult(ref, "failed", message="no result (internal error)")
