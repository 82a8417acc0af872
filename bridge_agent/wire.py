"""Hub protocol v1: msgpack encoding and validation of every message (pure, no I/O).

Names are normative (design.md section 6): extend, never rename. Times are integer epoch
milliseconds, money and hashes are strings. Both the agent's shipper and the reference hub use this
module, so the two sides cannot drift apart.

A batch is encoded item by item (`encode_item`) and the envelope is assembled around the encoded
items (`assemble_batch`): the shipper measures each item once to respect the batch byte budget and
never re-encodes to split a batch after a 413.

Decoders validate shape and types and raise `WireError` with the path of the first bad part, so a
garbage reply from a hub or a malformed batch at the hub is a clear message, never a `KeyError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack

from bridge_agent.errors import InputError, WireError
from bridge_agent.inputs import unpack_msgpack

VERSION = 1
# Nesting of a protocol message: envelope, items, item, product, variants, variant, options... A
# product nests about 5 deep inside an item; 32 leaves room and stops hostile depth.
MAX_DEPTH = 32
CONTENT_TYPE = "application/vnd.bridge.v1+msgpack"

Op = Literal["upsert", "patch", "delete"]
ItemStatus = Literal["ok", "need_full", "rejected"]
OPS: tuple[str, ...] = ("upsert", "patch", "delete")
ITEM_STATUSES: tuple[str, ...] = ("ok", "need_full", "rejected")
# "reconcile" and "repair" extend v1's list (hubs must accept unknown sources as informative).
SOURCES: tuple[str, ...] = ("import", "spool", "webhook", "poll", "verify", "reconcile", "repair")
# "rolled_back" extends v1's list: `bridge-agent rollback` restored values an applied
# optimisation had replaced (the detail says which fields; a field the merchant changed since is
# kept and named there).
OPT_STATUSES: tuple[str, ...] = (
    "applied",
    "conflict",
    "failed",
    "pending_review",
    "rejected_by_reviewer",
    "rolled_back",
)


@dataclass(frozen=True, slots=True)
class Item:
    """One delta: the new state of one product (upsert, patch against `base`, or delete)."""

    seq: int
    store: str
    id: str
    op: Op
    hash: str | None  # content hash after the change; None for a delete
    observed_at: int
    source: str
    base: str | None = None  # patch only: the hash the hub acknowledged last
    data: Mapping[str, Any] | None = None  # upsert: product; patch: {"set", "unset"}
    kind: str = "product"

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": self.seq,
            "store": self.store,
            "kind": self.kind,
            "id": self.id,
            "op": self.op,
        }
        if self.hash is not None:
            out["hash"] = self.hash
        if self.base is not None:
            out["base"] = self.base
        if self.data is not None:
            out["data"] = self.data
        out["observed_at"] = self.observed_at
        out["source"] = self.source
        return out


@dataclass(frozen=True, slots=True)
class Batch:
    v: int
    agent: str
    batch: str
    sent_at: int
    items: tuple[Item, ...]


@dataclass(frozen=True, slots=True)
class Result:
    seq: int
    status: ItemStatus
    reason: str | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq, "status": self.status}
        if self.reason:
            out["reason"] = self.reason
        return out


@dataclass(frozen=True, slots=True)
class Optimization:
    """A downstream change proposed by the hub for one product."""

    id: str
    product: str
    fields: Mapping[str, Any]
    created_at: int


@dataclass(frozen=True, slots=True)
class RefusedOptimization:
    """An item of a feed page that is not a usable optimisation (`decode_feed`): its `id` and
    `product` when they are usable identifiers (so the agent can report it `failed`), and why."""

    id: str | None
    product: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class OptimizationFeed:
    cursor: str
    optimizations: tuple[Optimization, ...] = field(default_factory=tuple)
    refused: tuple[RefusedOptimization, ...] = field(default_factory=tuple)  # decode_feed only


@dataclass(frozen=True, slots=True)
class OptimizationResult:
    id: str
    status: str
    detail: str | None = None
    hash: str | None = None


# -- encoding ------------------------------------------------------------------------------------


def packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def encode_item(item: Item) -> bytes:
    data = None if item.data is None else packb(item.data)
    return encode_item_parts(
        seq=item.seq,
        store=item.store,
        id=item.id,
        op=item.op,
        hash=item.hash,
        base=item.base,
        packed_data=data,
        observed_at=item.observed_at,
        source=item.source,
        kind=item.kind,
    )


def encode_item_parts(
    *,
    seq: int,
    store: str,
    id: str,
    op: str,
    hash: str | None,
    base: str | None,
    packed_data: bytes | None,
    observed_at: int,
    source: str,
    kind: str = "product",
) -> bytes:
    """One item, with `data` given already msgpack-encoded (the outbox stores it that way).

    Splicing the stored bytes in instead of decoding and re-encoding the product is what lets the
    shipper encode tens of thousands of items per second.
    """
    pack = _PACKER.pack
    fields = 7 + (hash is not None) + (base is not None) + (packed_data is not None)
    out = [
        _PACKER.pack_map_header(fields),
        pack("seq"), pack(seq), pack("store"), pack(store), pack("kind"), pack(kind),
        pack("id"), pack(id), pack("op"), pack(op),
    ]  # fmt: skip
    if hash is not None:
        out += (pack("hash"), pack(hash))
    if base is not None:
        out += (pack("base"), pack(base))
    if packed_data is not None:
        out += (pack("data"), packed_data)
    out += (pack("observed_at"), pack(observed_at), pack("source"), pack(source))
    return b"".join(out)


_PACKER = msgpack.Packer(use_bin_type=True)


def assemble_batch(agent: str, batch: str, sent_at: int, items: Sequence[bytes]) -> bytes:
    """A batch envelope around already encoded items (msgpack arrays concatenate cleanly)."""
    packer = msgpack.Packer(use_bin_type=True)
    head = packer.pack_map_header(5)
    for key, value in (("v", VERSION), ("agent", agent), ("batch", batch), ("sent_at", sent_at)):
        head += packer.pack(key) + packer.pack(value)
    head += packer.pack("items") + packer.pack_array_header(len(items))
    return head + b"".join(items)


def encode_batch(agent: str, batch: str, sent_at: int, items: Iterable[Item]) -> bytes:
    return assemble_batch(agent, batch, sent_at, [encode_item(i) for i in items])


def encode_results(results: Iterable[Result]) -> bytes:
    return packb({"v": VERSION, "results": [r.to_wire() for r in results]})


def encode_feed(feed: OptimizationFeed) -> bytes:
    return packb(
        {
            "v": VERSION,
            "cursor": feed.cursor,
            "optimizations": [
                {"id": o.id, "product": o.product, "fields": o.fields, "created_at": o.created_at}
                for o in feed.optimizations
            ],
        }
    )


def encode_optimization_results(results: Iterable[OptimizationResult]) -> bytes:
    out = []
    for r in results:
        one: dict[str, Any] = {"id": r.id, "status": r.status}
        if r.detail is not None:
            one["detail"] = r.detail
        if r.hash is not None:
            one["hash"] = r.hash
        out.append(one)
    return packb({"v": VERSION, "results": out})


# -- decoding ------------------------------------------------------------------------------------


MAX_BODY_BYTES = 64 * 1024 * 1024  # above any batch, reply or feed page either side sends


def unpackb(
    body: bytes, *, max_bytes: int = MAX_BODY_BYTES, max_depth: int | None = MAX_DEPTH
) -> Any:
    """Decode a protocol message, bounded in size and nesting (`inputs.unpack_msgpack`).

    `max_depth=None` skips the walk over the decoded value (msgpack's own decoder still stops at
    its fixed stack): only for a caller that checks every part against a typed shape anyway.
    """
    try:
        return unpack_msgpack(body, max_bytes=max_bytes, max_depth=max_depth, what="body")
    except InputError as exc:
        raise WireError(str(exc)) from None


def decode_batch(body: bytes) -> Batch:
    # No depth walk: a batch is the hub's hot path (a walk costs ~7 us an item, a fifth of the
    # hub's work), and the hub checks every product and patch against the typed canonical shape
    # (`hub/ingest.py`), which refuses anything nested deeper than that shape.
    doc = _map(unpackb(body, max_depth=None), "batch")
    _version(doc, "batch")
    items_raw = _field(doc, "items", list, "batch")
    items = tuple(
        _plain_item(raw) or _item(_map(raw, f"items[{i}]"), f"items[{i}]")
        for i, raw in enumerate(items_raw)
    )
    return Batch(
        v=VERSION,
        agent=_text(doc, "agent", "batch"),
        batch=_text(doc, "batch", "batch"),
        sent_at=_int(doc, "sent_at", "batch"),
        items=items,
    )


def decode_results(body: bytes) -> tuple[Result, ...]:
    # No walk over the whole reply (max_depth=None): every part read below is checked against
    # its type, and whatever else the reply holds is dropped unread. With the fast path below,
    # decoding a reply costs the shipper 0.9 us an item instead of 1.9 (docs/performance.md).
    doc = _map(unpackb(body, max_depth=None), "reply")
    _version(doc, "reply")
    out = []
    for i, raw in enumerate(_field(doc, "results", list, "reply")):
        if type(raw) is dict:  # the usual result, checked in one go (same rules as below)
            seq, status, reason = raw.get("seq"), raw.get("status"), raw.get("reason")
            if (
                type(seq) is int
                and status in ITEM_STATUSES
                and (reason is None or type(reason) is str)
            ):
                out.append(Result(seq=seq, status=status, reason=reason))
                continue
        where = f"results[{i}]"
        one = _map(raw, where)
        status = _text(one, "status", where)
        if status not in ITEM_STATUSES:
            raise WireError(f"{where}.status: unknown status {status!r}")
        reason = one.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise WireError(f"{where}.reason: expected a string")
        seq = _int(one, "seq", where)
        out.append(Result(seq=seq, status=status, reason=reason))  # type: ignore[arg-type]
    return tuple(out)


# -- the downstream feed: decoded item by item ---------------------------------------------------
#
# A feed page is refused whole only when its envelope is unusable (not msgpack, not v1, no cursor,
# no list): the hub is then broken and the feed waits it out. Every item is checked on its own,
# and a bad one is set aside in `refused` while the good ones go on: one malformed optimisation
# must not stop the feed (the cursor could never move past it). What an item keeps must be
# storable as it is: the agent journals its `fields` as JSON text and its ids and time in SQLite,
# so only JSON's types are taken (no msgpack bin or ext), integers within SQLite's int64, finite
# floats, valid UTF-8 text of bounded length, string map keys, bounded nesting.

FEED_ID_CHARS = 256  # an optimisation id, a product id or a cursor (the hub's are ~32)
FEED_TEXT_CHARS = 1024 * 1024  # one string inside `fields` (a long product description fits)
INT64 = (-(2**63), 2**63 - 1)  # what SQLite stores as an INTEGER


def decode_feed(body: bytes) -> OptimizationFeed:
    """A page of the optimisation feed: the usable optimisations, and the refused items with why.

    Raises WireError only for an unusable envelope."""
    doc = _map(_unpack_lenient(body), "feed")
    _version(doc, "feed")
    cursor = _text(doc, "cursor", "feed")
    _check_id(cursor, "feed.cursor")
    opts: list[Optimization] = []
    refused: list[RefusedOptimization] = []
    for raw in _field(doc, "optimizations", list, "feed"):
        try:
            opts.append(_optimization(raw))
        except WireError as exc:
            refused.append(RefusedOptimization(_usable_id(raw, "id"), _usable_id(raw, "product"),
                                               str(exc)))  # fmt: skip
    return OptimizationFeed(cursor, tuple(opts), tuple(refused))


def _optimization(raw: Any) -> Optimization:
    where = "optimization"
    one = _map(raw, where)
    id_, product = _text(one, "id", where), _text(one, "product", where)
    _check_id(id_, f"{where}.id")
    _check_id(product, f"{where}.product")
    fields = _field(one, "fields", dict, where)
    _check_json(fields, f"{where}.fields")
    created_at = _int(one, "created_at", where)
    if not INT64[0] <= created_at <= INT64[1]:
        raise WireError(f"{where}.created_at: out of range")
    return Optimization(id=id_, product=product, fields=fields, created_at=created_at)


def _unpack_lenient(body: bytes) -> Any:
    """Decode a feed page so that one bad item cannot spoil the others: invalid UTF-8 becomes
    lone surrogates and non-string map keys are let through (both refused per item, by
    `_check_json`), and the depth is walked per item rather than over the page."""
    if len(body) > MAX_BODY_BYTES:
        raise WireError(f"body is larger than {MAX_BODY_BYTES} bytes")
    try:
        return msgpack.unpackb(
            body, raw=False, strict_map_key=False, unicode_errors="surrogateescape"
        )
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise WireError(f"body is not valid msgpack ({type(exc).__name__})") from None


def _usable_id(raw: Any, key: str) -> str | None:
    value = raw.get(key) if isinstance(raw, dict) else None
    if not isinstance(value, str) or not value:
        return None
    try:
        _check_id(value, key)
    except WireError:
        return None
    return value


def _check_id(value: str, where: str) -> None:
    """An identifier goes into SQLite, logs and URLs: bounded, printable, valid UTF-8."""
    if len(value) > FEED_ID_CHARS:
        raise WireError(f"{where}: longer than {FEED_ID_CHARS} characters")
    if not value.isprintable():
        raise WireError(f"{where}: holds control or invalid characters")


def _check_text(value: str, where: str, limit: int) -> None:
    if len(value) > limit:
        raise WireError(f"{where}: a string longer than {limit} characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: the hub sent invalid UTF-8
            raise WireError(f"{where}: a string that is not valid UTF-8") from None


def _check_json(value: Any, where: str, max_depth: int = MAX_DEPTH) -> None:
    """Refuse what JSON text (and SQLite) cannot hold as it is (iterative: depth is hostile)."""
    stack: list[tuple[Any, str, int]] = [(value, where, 1)]
    while stack:
        node, path, depth = stack.pop()
        if node is None or isinstance(node, bool | str | int | float):
            if isinstance(node, str):
                _check_text(node, path, FEED_TEXT_CHARS)
            elif isinstance(node, int) and not isinstance(node, bool):
                if not INT64[0] <= node <= INT64[1]:
                    raise WireError(f"{path}: an integer out of range")
            elif isinstance(node, float) and not math.isfinite(node):
                raise WireError(f"{path}: a number that is not finite")
            continue
        if not isinstance(node, dict | list):  # msgpack bin, ext, timestamp
            raise WireError(f"{path}: a {type(node).__name__} value (not a JSON type)")
        if depth > max_depth:
            raise WireError(f"{path}: nests deeper than {max_depth} levels")
        if isinstance(node, list):
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(node))
            continue
        for key, child in node.items():
            if not isinstance(key, str):
                raise WireError(f"{path}: a {type(key).__name__} map key (not a string)")
            _check_text(key, path, FEED_ID_CHARS)
            stack.append((child, f"{path}.{key[:40]}", depth + 1))


def decode_optimization_results(body: bytes) -> tuple[OptimizationResult, ...]:
    doc = _map(unpackb(body), "results")
    out = []
    for i, raw in enumerate(_field(doc, "results", list, "results")):
        where = f"results[{i}]"
        one = _map(raw, where)
        status = _text(one, "status", where)
        if status not in OPT_STATUSES:
            raise WireError(f"{where}.status: unknown status {status!r}")
        detail, hash_ = one.get("detail"), one.get("hash")
        if detail is not None and not isinstance(detail, str):
            raise WireError(f"{where}.detail: expected a string")
        if hash_ is not None and not isinstance(hash_, str):
            raise WireError(f"{where}.hash: expected a string")
        out.append(OptimizationResult(_text(one, "id", where), status, detail, hash_))
    return tuple(out)


def decode_results_ack(body: bytes) -> None:
    """The hub's answer to a results post: a v1 map (`accepted` and `unknown` counts when
    given). Anything else (a proxy's or a captive portal's HTML page answered with 200) is no
    acknowledgement: WireError."""
    doc = _map(unpackb(body), "ack")
    _version(doc, "ack")
    for key in ("accepted", "unknown"):
        if key in doc:
            _int(doc, key, "ack")


def _plain_item(raw: Any) -> Item | None:
    """The item `_item` would return, for the usual well-formed item, checked in one expression
    with exact types; None for anything else, which `_item` then checks field by field (and says
    what is wrong). The hub decodes every item of every batch: this is about 1 us an item less."""
    if type(raw) is not dict:
        return None
    get = raw.get
    seq, store, id_, op = get("seq"), get("store"), get("id"), get("op")
    hash_, observed_at, source = get("hash"), get("observed_at"), get("source")
    if not (
        type(seq) is int
        and type(observed_at) is int
        and type(store) is str
        and store
        and type(id_) is str
        and id_
        and type(source) is str
        and 0 < len(source) <= 32
        and get("kind", "product") == "product"
    ):
        return None
    if op == "delete":
        if hash_ is not None and type(hash_) is not str:
            return None
        return Item(seq, store, id_, "delete", hash_, observed_at, source)
    data = get("data")
    if type(hash_) is not str or type(data) is not dict:
        return None
    if op == "upsert":
        return Item(seq, store, id_, "upsert", hash_, observed_at, source, data=data)
    base = get("base")
    if op == "patch" and type(base) is str:
        return Item(seq, store, id_, "patch", hash_, observed_at, source, base=base, data=data)
    return None


def _item(raw: Mapping[str, Any], where: str) -> Item:
    op = _text(raw, "op", where)
    if op not in OPS:
        raise WireError(f"{where}.op: unknown op {op!r}")
    kind = raw.get("kind", "product")
    if kind != "product":
        raise WireError(f"{where}.kind: unknown kind {kind!r}")
    source = _text(raw, "source", where)
    if len(source) > 32:
        # Informative only: a source this side does not know (a newer agent's) is accepted.
        raise WireError(f"{where}.source: longer than 32 characters")
    hash_ = raw.get("hash")
    base = raw.get("base")
    data = raw.get("data")
    if op != "delete" and not isinstance(hash_, str):
        raise WireError(f"{where}.hash: required for {op}")
    if hash_ is not None and not isinstance(hash_, str):
        raise WireError(f"{where}.hash: expected a string")
    if op == "patch" and not isinstance(base, str):
        raise WireError(f"{where}.base: required for patch")
    if op in ("upsert", "patch") and not isinstance(data, dict):
        raise WireError(f"{where}.data: required for {op}, as a map")
    return Item(
        seq=_int(raw, "seq", where),
        store=_text(raw, "store", where),
        id=_text(raw, "id", where),
        op=op,  # type: ignore[arg-type]
        hash=hash_,
        base=base if op == "patch" else None,
        data=data if op != "delete" else None,
        observed_at=_int(raw, "observed_at", where),
        source=source,
    )


def _map(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WireError(f"{where}: expected a map, got {type(value).__name__}")
    return value


def _field(doc: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in doc:
        raise WireError(f"{where}.{key}: missing")
    value = doc[key]
    if not isinstance(value, kind):
        raise WireError(f"{where}.{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _text(doc: Mapping[str, Any], key: str, where: str) -> str:
    value: str = _field(doc, key, str, where)
    if not value:
        raise WireError(f"{where}.{key}: empty")
    return value


def _int(doc: Mapping[str, Any], key: str, where: str) -> int:
    value = _field(doc, key, int, where)
    if isinstance(value, bool):
        raise WireError(f"{where}.{key}: expected int, got bool")
    return int(value)


def _version(doc: Mapping[str, Any], where: str) -> None:
    if doc.get("v") != VERSION:
        raise WireError(f"{where}.v: unsupported protocol version {doc.get('v')!r} (expected 1)")


# -- repair: the hub's ids and hashes ------------------------------------------------------------
#
# `GET /v1/stores/{store}/hashes?after=<id>&limit=<n>` (an extension of v1: a new route, nothing
# renamed) pages through what the hub holds for a store, ordered by id as SQLite's BINARY
# collation orders text (byte order of UTF-8, which is code point order, so Python's `<` on `str`
# agrees). An item is `[id, hash or nil, deleted]`, a list rather than a map: a page of 5 000 ids
# stays small. `next` is the id of the last item when more follow, nil on the last page. The
# agent's repair run (sources/repair.py) compares the pages with the store and its mirror.

HASH_PAGE_DEFAULT = 1000
HASH_PAGE_MAX = 5000


@dataclass(frozen=True, slots=True)
class HashEntry:
    """What the hub holds for one product: its content hash (None: a tombstone), deleted or not."""

    id: str
    hash: str | None
    deleted: bool


@dataclass(frozen=True, slots=True)
class HashPage:
    """One page of a store's ids and hashes at the hub, ordered by id."""

    items: tuple[HashEntry, ...]
    next: str | None = None  # the last item's id when more follow; None on the last page


def encode_hash_page(page: HashPage) -> bytes:
    return packb(
        {
            "v": VERSION,
            "items": [[e.id, e.hash, e.deleted] for e in page.items],
            "next": page.next,
        }
    )


def decode_hash_page(body: bytes) -> HashPage:
    """A page of `GET .../hashes`: well formed, at most HASH_PAGE_MAX items, strictly ordered.

    The order is checked, not trusted: the repair compares id ranges, and an unordered or
    repeating page would make it call products missing that the hub has.
    """
    doc = _map(unpackb(body), "hashes")
    _version(doc, "hashes")
    raw_items = _field(doc, "items", list, "hashes")
    if len(raw_items) > HASH_PAGE_MAX:
        raise WireError(f"hashes.items: {len(raw_items)} items, more than {HASH_PAGE_MAX}")
    items: list[HashEntry] = []
    for i, raw in enumerate(raw_items):
        where = f"items[{i}]"
        if not isinstance(raw, list) or len(raw) != 3:
            raise WireError(f"{where}: expected [id, hash or nil, deleted]")
        id_, hash_, deleted = raw
        if not isinstance(id_, str) or not id_:
            raise WireError(f"{where}[0]: expected a non-empty id")
        if hash_ is not None and (not isinstance(hash_, str) or not hash_):
            raise WireError(f"{where}[1]: expected a hash or nil")
        if not isinstance(deleted, bool):
            raise WireError(f"{where}[2]: expected a boolean")
        if items and id_ <= items[-1].id:
            raise WireError(f"{where}[0]: not after the id before it (ids must ascend)")
        items.append(HashEntry(id_, hash_, deleted))
    next_ = doc.get("next")
    if next_ is not None:
        if not isinstance(next_, str):
            raise WireError("hashes.next: expected an id or nil")
        if not items or next_ != items[-1].id:
            raise WireError("hashes.next: expected the id of the page's last item")
    return HashPage(items=tuple(items), next=next_)


# -- verification markers: what the hub holds is still what the store has ------------------------
#
# `POST /v1/stores/{store}/verified` (an extension of v1: a new route, nothing renamed). A
# verification sweep re-reads every product; for one whose content hash is still the one the hub
# acknowledged, the agent sends a marker `{"id", "hash"}` (about 40 bytes) instead of the product
# (kilobytes). The hub confirms each marker whose hash it holds for a live product and records
# `verified_at`; it answers the ids it could not confirm (`mismatched`: unknown, deleted at the
# hub, or another hash), and the agent ships those in full. A hub without the route answers
# 404 (or 405): markers are an optimisation, so the agent then stops sending them.

VERIFIED_MAX_ITEMS = 1000  # markers per request; the hub answers 413 beyond
VERIFIED_ID_CHARS = 1024  # a product id in a marker (store ids are far shorter)
VERIFIED_HASH_CHARS = 128  # a content hash (ours are 22 characters)


@dataclass(frozen=True, slots=True)
class VerifiedMarkers:
    """A decoded marker request: (product id, content hash) pairs an agent saw at `verified_at`."""

    agent: str
    verified_at: int
    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class VerifiedReply:
    """The hub's answer to markers: how many it confirmed, and the ids to send in full."""

    verified: int
    mismatched: frozenset[str]


def encode_verified(agent: str, verified_at: int, items: Iterable[tuple[str, str]]) -> bytes:
    return packb(
        {
            "v": VERSION,
            "agent": agent,
            "verified_at": verified_at,
            "items": [{"id": pid, "hash": hash_} for pid, hash_ in items],
        }
    )


def decode_verified(body: bytes) -> VerifiedMarkers:
    """A marker request, checked strictly (the hub's side). The count is the caller's to bound
    (a 413, not a 400): any number of items decodes here, within the body size limit."""
    doc = _map(unpackb(body), "verified")
    _version(doc, "verified")
    agent = _text(doc, "agent", "verified")
    _check_id(agent, "verified.agent")
    verified_at = _int(doc, "verified_at", "verified")
    if not 0 <= verified_at <= INT64[1]:
        raise WireError("verified.verified_at: expected epoch milliseconds (0 to 2**63 - 1)")
    items: list[tuple[str, str]] = []
    for i, raw in enumerate(_field(doc, "items", list, "verified")):
        where = f"items[{i}]"
        one = _map(raw, where)
        pid, hash_ = _text(one, "id", where), _text(one, "hash", where)
        if len(pid) > VERIFIED_ID_CHARS:
            raise WireError(f"{where}.id: longer than {VERIFIED_ID_CHARS} characters")
        if len(hash_) > VERIFIED_HASH_CHARS:
            raise WireError(f"{where}.hash: longer than {VERIFIED_HASH_CHARS} characters")
        items.append((pid, hash_))
    return VerifiedMarkers(agent=agent, verified_at=verified_at, items=tuple(items))


def encode_verified_reply(reply: VerifiedReply) -> bytes:
    return packb({"v": VERSION, "verified": reply.verified, "mismatched": sorted(reply.mismatched)})


def decode_verified_reply(body: bytes) -> VerifiedReply:
    """The hub's answer to markers (the agent's side): a v1 map with a count and a list of ids."""
    doc = _map(unpackb(body), "reply")
    _version(doc, "reply")
    verified = _int(doc, "verified", "reply")
    if verified < 0:
        raise WireError("reply.verified: negative")
    raw = _field(doc, "mismatched", list, "reply")
    if len(raw) > VERIFIED_MAX_ITEMS:
        raise WireError(f"reply.mismatched: more than {VERIFIED_MAX_ITEMS} ids")
    mismatched: set[str] = set()
    for i, pid in enumerate(raw):
        if not isinstance(pid, str) or not pid:
            raise WireError(f"reply.mismatched[{i}]: expected a product id")
        mismatched.add(pid)
    return VerifiedReply(verified=verified, mismatched=frozenset(mismatched))
