"""HTTP side of the reference hub: hub protocol v1 (design.md section 6) plus the inspection API.

Routes (every one but `/healthz` needs `Authorization: Bearer <token>`):

- `GET  /healthz`                                      liveness, no auth: `{"status": "ok"}`
- `POST /v1/batches`                                   upstream deltas, msgpack in and out
- `GET  /v1/stores/{store}/products?after=&limit=`     inspection: products ordered by id as text
- `GET  /v1/stores/{store}/products/{id}`              inspection: one product, 404 if never seen
- `GET  /v1/stores/{store}/hashes?after=&limit=`       ids, hashes, deleted flags (msgpack): repair
- `POST /v1/stores/{store}/verified`                   verification markers (msgpack in and out)
- `GET  /v1/stats`                                     counters, for tests and the benchmark
- `POST /v1/stores/{store}/optimizations`              enqueue optimizations (JSON), 201 + ids
- `GET  /v1/stores/{store}/optimizations?after=&wait=` the downstream feed (msgpack, long poll)
- `POST /v1/stores/{store}/optimizations/results`      agents report what they did (msgpack)
- `GET  /v1/stores/{store}/optimizations/{id}`         one optimization and its last result (JSON)

Why the rules hold:

- The token is compared with `hmac.compare_digest` on bytes, so response time does not leak how
  much of a guessed token matched, and a non-ASCII header cannot raise.
- Bodies are bounded before they are read (`Content-Length`) and while they are read (chunked
  uploads have no length), so a client cannot make the hub buffer more than `max_body_bytes`.
- Decoding runs in a worker thread and SQL on the database thread (`db.py`), so one big batch
  never stalls long polls or `/healthz`.
- A long poll reads a per-store version counter *before* querying, then waits for it to change:
  an optimization committed between the query and the wait still wakes it (no lost wake-up).
  On shutdown every waiter is woken and answers at once, so stopping never waits out a poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import math
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from bridge_agent import wire
from bridge_agent.errors import WireError
from bridge_agent.hub.db import HubDB

log = structlog.get_logger(__name__)

FEED_PAGE = 100  # optimizations per feed answer
MAX_WAIT = 30.0  # seconds a long poll may hold: below common proxy idle timeouts (60 s)
DEFAULT_PAGE = 100
MAX_PAGE = 1000
GC_THRESHOLD = 20_000  # allocations between two collections of the youngest generation


class FeedSignal:
    """Wakes long polls when optimizations are enqueued for their store (or the hub stops)."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._versions: dict[str, int] = {}
        self.closed = False

    def version(self, store: str) -> int:
        return self._versions.get(store, 0)

    async def changed(self, store: str) -> None:
        async with self._cond:
            self._versions[store] = self._versions.get(store, 0) + 1
            self._cond.notify_all()

    async def close(self) -> None:
        async with self._cond:
            self.closed = True
            self._cond.notify_all()

    async def wait(self, store: str, seen: int) -> None:
        """Return once `store`'s version is no longer `seen`, or the hub stops.

        Bound it with `asyncio.timeout`: a long poll always has a deadline.
        """
        async with self._cond:
            await self._cond.wait_for(lambda: self.closed or self.version(store) != seen)


DB_KEY = web.AppKey("hub_db", HubDB)
FEED_KEY = web.AppKey("hub_feed", FeedSignal)
TOKEN_KEY = web.AppKey("hub_token", bytes)
LIMIT_KEY = web.AppKey("hub_max_body_bytes", int)


def make_app(
    db_path: Path, token: str, *, max_body_bytes: int = 16 * 1024 * 1024
) -> web.Application:
    """The hub as an aiohttp application; the database opens on startup and closes on cleanup."""
    if not token:
        raise ValueError("the hub needs a non-empty token")
    app = web.Application(middlewares=[_auth, _bounded], client_max_size=max_body_bytes)
    app[TOKEN_KEY] = token.encode("utf-8")
    app[LIMIT_KEY] = max_body_bytes
    app[FEED_KEY] = FeedSignal()

    async def database(app: web.Application) -> AsyncIterator[None]:
        app[DB_KEY] = await HubDB.open(db_path)
        yield
        await app[DB_KEY].close()

    async def wake_pollers(app: web.Application) -> None:
        await app[FEED_KEY].close()

    app.cleanup_ctx.append(database)
    app.on_shutdown.append(wake_pollers)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/v1/batches", post_batch)
    app.router.add_get("/v1/stats", get_stats)
    app.router.add_get("/v1/stores/{store}/products", list_products)
    app.router.add_get("/v1/stores/{store}/products/{id}", get_product)
    app.router.add_get("/v1/stores/{store}/hashes", get_hashes)
    app.router.add_post("/v1/stores/{store}/verified", post_verified)
    app.router.add_post("/v1/stores/{store}/optimizations", enqueue_optimizations)
    app.router.add_get("/v1/stores/{store}/optimizations", get_feed)
    app.router.add_post("/v1/stores/{store}/optimizations/results", post_results)
    app.router.add_get("/v1/stores/{store}/optimizations/{id}", get_optimization)
    return app


async def serve(
    host: str,
    port: int,
    db_path: Path,
    token: str,
    *,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Run the hub until cancelled; `ready(port)` once listening (port 0 picks a free port).

    With port 0, give a literal address ("127.0.0.1"): a name such as "localhost" can bind one
    socket per address family, each on its own free port, and `ready` reports the first.
    """
    runner = web.AppRunner(make_app(db_path, token), access_log=None, shutdown_timeout=10.0)
    with gc_threshold(GC_THRESHOLD):
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            if ready is not None:  # the caller logs where it listens, in its own words
                ready(runner.addresses[0][1])
            await asyncio.Event().wait()  # until cancelled
        finally:
            await runner.cleanup()


@contextlib.contextmanager
def gc_threshold(threshold: int) -> Iterator[None]:
    """Run the youngest generation of the garbage collector every `threshold` net allocations.

    A batch keeps its decoded items alive until it is answered, about ten objects per item, and
    then reference counting frees them all at once. With the default threshold (700) the
    collector runs a dozen times or more per 500-item batch and traverses the live batch each
    time to free nothing: 4-7 µs per item, a tenth of the hub's work. With `GC_THRESHOLD` it runs
    about once per several batches, and cyclic garbage still goes within that many allocations.
    Process-wide, so only `serve` (the hub process) sets it, and it restores the old thresholds.
    """
    saved = gc.get_threshold()
    gc.set_threshold(threshold, *saved[1:])
    try:
        yield
    finally:
        gc.set_threshold(*saved)


# -- middleware and helpers ----------------------------------------------------------------------


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Everything but /healthz needs the token, unknown paths included: a caller without the
    # token learns nothing about which routes exist.
    if request.path == "/healthz":
        return await handler(request)
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    expected = request.app[TOKEN_KEY]
    # aiohttp decodes header bytes that are not UTF-8 as surrogates; encode them back, not fail.
    given = presented.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
        return web.json_response(
            {"error": "missing or invalid bearer token"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="bridge-hub"'},
        )
    return await handler(request)


@web.middleware
async def _bounded(request: web.Request, handler: Handler) -> web.StreamResponse:
    # A declared length over the limit is refused before any handler runs, whichever way the
    # handler reads its body (`request.json()` would otherwise wait for `max_body_bytes` to
    # arrive before refusing): a new route is bounded without remembering to be.
    limit = request.app[LIMIT_KEY]
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit, declared)
    return await handler(request)


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=message)


async def _read_body(request: web.Request, *, content_type: str) -> bytes:
    """The request body, after checking its type and size (415, 413)."""
    if request.content_type != content_type:
        raise web.HTTPUnsupportedMediaType(
            text=f"Content-Type must be {content_type}, got {request.content_type or 'none'}"
        )
    limit = request.app[LIMIT_KEY]
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit, declared)
    try:
        body = await request.read()  # client_max_size stops a chunked body at the limit too
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(limit, None) from None
    if len(body) > limit:
        raise _too_large(limit, len(body))
    return body


def _too_large(limit: int, size: int | None) -> web.HTTPRequestEntityTooLarge:
    text = f"body over the limit of {limit} bytes: send smaller batches"
    return web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size or limit + 1, text=text)


def _msgpack_response(body: bytes, *, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=wire.CONTENT_TYPE)


# -- routes --------------------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def post_batch(request: web.Request) -> web.Response:
    body = await _read_body(request, content_type=wire.CONTENT_TYPE)
    loop = asyncio.get_running_loop()
    try:
        batch = await loop.run_in_executor(None, _decode_batch, body)
    except WireError as exc:
        raise _bad_request(str(exc)) from None
    try:
        results = await request.app[DB_KEY].apply_batch(batch)
    except Exception as exc:
        # The transaction rolled back; the agent keeps its rows and retries, so nothing is lost.
        log.exception("batch_failed", agent=batch.agent, batch=batch.batch, items=len(batch.items))
        raise web.HTTPInternalServerError(
            text=f"batch {batch.batch} not applied: {type(exc).__name__}: {exc}"
        ) from None
    return _msgpack_response(wire.encode_results(results))


def _decode_batch(body: bytes) -> wire.Batch:
    batch = wire.decode_batch(body)
    # msgpack carries integers up to 2**64 - 1, SQLite stores 64-bit signed ones: refuse here
    # with a clear 400 rather than fail the transaction with a 500 the agent would retry forever.
    for i, item in enumerate(batch.items):
        if not -(2**63) <= item.seq < 2**63:
            raise WireError(f"items[{i}].seq: {item.seq} is outside the signed 64-bit range")
    return batch


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(await request.app[DB_KEY].stats())


async def list_products(request: web.Request) -> web.Response:
    store = request.match_info["store"]
    after = request.query.get("after", "")
    limit = _int_param(request, "limit", DEFAULT_PAGE)
    if limit < 1:
        raise _bad_request("limit: must be at least 1")
    limit = min(limit, MAX_PAGE)
    # One row more than asked tells whether another page exists without a COUNT query.
    rows = await request.app[DB_KEY].list_products(store, after, limit + 1)
    page = rows[:limit]
    more = len(rows) > limit
    return web.json_response(
        {"products": [p.to_json() for p in page], "next": page[-1].id if more else None}
    )


async def get_product(request: web.Request) -> web.Response:
    store, product_id = request.match_info["store"], request.match_info["id"]
    record = await request.app[DB_KEY].get_product(store, product_id)
    if record is None:
        return web.json_response({"error": f"product {store}/{product_id} never seen"}, status=404)
    return web.json_response(record.to_json())


async def get_hashes(request: web.Request) -> web.Response:
    """A page of the store's ids and hashes, for the agent's repair run (wire.HashPage)."""
    store = request.match_info["store"]
    after = request.query.get("after", "")
    limit = _int_param(request, "limit", wire.HASH_PAGE_DEFAULT)
    if limit < 1:
        raise _bad_request("limit: must be at least 1")
    limit = min(limit, wire.HASH_PAGE_MAX)
    rows = await request.app[DB_KEY].hashes(store, after, limit + 1)  # one more: is there a next?
    page = rows[:limit]
    more = len(rows) > limit
    answer = wire.HashPage(
        items=tuple(wire.HashEntry(*row) for row in page), next=page[-1][0] if more else None
    )
    return _msgpack_response(wire.encode_hash_page(answer))


async def post_verified(request: web.Request) -> web.Response:
    """Verification markers: confirm the (id, hash) pairs the hub holds, record `verified_at`,
    and answer the ids it does not hold that way (the agent sends those in full)."""
    store = request.match_info["store"]
    body = await _read_body(request, content_type=wire.CONTENT_TYPE)
    loop = asyncio.get_running_loop()
    try:
        markers = await loop.run_in_executor(None, wire.decode_verified, body)
    except WireError as exc:
        raise _bad_request(str(exc)) from None
    if len(markers.items) > wire.VERIFIED_MAX_ITEMS:
        count, most = len(markers.items), wire.VERIFIED_MAX_ITEMS
        raise web.HTTPRequestEntityTooLarge(
            max_size=most,
            actual_size=count,
            text=f"{count} markers: at most {most} per request",
        )
    verified, mismatched = await request.app[DB_KEY].verify(
        store, markers.verified_at, markers.items
    )
    reply = wire.VerifiedReply(verified=verified, mismatched=frozenset(mismatched))
    return _msgpack_response(wire.encode_verified_reply(reply))


async def enqueue_optimizations(request: web.Request) -> web.Response:
    store = request.match_info["store"]
    try:
        doc = await request.json()
    except ValueError:
        raise _bad_request("body must be JSON") from None
    entries = doc if isinstance(doc, list) else [doc]
    proposals: list[tuple[str, dict[str, Any]]] = []
    for i, entry in enumerate(entries):
        where = f"[{i}]" if isinstance(doc, list) else "body"
        if not isinstance(entry, dict) or set(entry) != {"product", "fields"}:
            raise _bad_request(f'{where}: expected {{"product": <id>, "fields": {{...}}}}')
        product, fields = entry["product"], entry["fields"]
        if not isinstance(product, str) or not product:
            raise _bad_request(f"{where}.product: expected a non-empty string")
        if not isinstance(fields, dict) or not fields:
            raise _bad_request(f"{where}.fields: expected a non-empty object")
        proposals.append((product, fields))
    if not proposals:
        raise _bad_request("nothing to enqueue")
    queued = await request.app[DB_KEY].enqueue_optimizations(store, proposals)
    await request.app[FEED_KEY].changed(store)
    return web.json_response(
        {"ids": [opt_id for opt_id, _ in queued], "cursor": str(queued[-1][1])}, status=201
    )


async def get_feed(request: web.Request) -> web.Response:
    store = request.match_info["store"]
    after_text = request.query.get("after", "")
    try:
        after = int(after_text) if after_text else 0
    except ValueError:
        raise _bad_request("after: expected a cursor from an earlier answer") from None
    try:
        wait = min(max(float(request.query.get("wait", "0")), 0.0), MAX_WAIT)
    except ValueError:
        raise _bad_request("wait: expected seconds") from None
    if math.isnan(wait):  # NaN survives min/max
        raise _bad_request("wait: expected seconds")
    db, feed = request.app[DB_KEY], request.app[FEED_KEY]
    deadline = asyncio.get_running_loop().time() + wait
    seen = feed.version(store)  # read before the query: no lost wake-up (module docstring)
    page = await db.feed(store, after, FEED_PAGE)
    while not page and wait > 0 and not feed.closed:
        try:
            async with asyncio.timeout_at(deadline):
                await feed.wait(store, seen)
        except TimeoutError:
            break
        seen = feed.version(store)
        page = await db.feed(store, after, FEED_PAGE)
    cursor = str(page[-1][0] if page else after)  # the cursor must not be empty on the wire
    answer = wire.OptimizationFeed(cursor=cursor, optimizations=tuple(o for _, o in page))
    return _msgpack_response(wire.encode_feed(answer))


async def post_results(request: web.Request) -> web.Response:
    store = request.match_info["store"]
    body = await _read_body(request, content_type=wire.CONTENT_TYPE)
    try:
        results = wire.decode_optimization_results(body)
    except WireError as exc:
        raise _bad_request(str(exc)) from None
    accepted, unknown = await request.app[DB_KEY].record_results(store, results)
    if unknown:
        # Ignored, not refused: the agent cannot do better than report, and a 4xx would make it
        # retry the known results of the same request forever.
        log.warning(
            "optimization_results_unknown", store=store, ids=unknown[:20], count=len(unknown)
        )
    return _msgpack_response(
        wire.packb({"v": wire.VERSION, "accepted": accepted, "unknown": len(unknown)})
    )


async def get_optimization(request: web.Request) -> web.Response:
    store, opt_id = request.match_info["store"], request.match_info["id"]
    record = await request.app[DB_KEY].get_optimization(store, opt_id)
    if record is None:
        return web.json_response(
            {"error": f"optimization {opt_id} not found in {store}"}, status=404
        )
    return web.json_response(record.to_json())


def _int_param(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise _bad_request(f"{name}: expected an integer") from None
