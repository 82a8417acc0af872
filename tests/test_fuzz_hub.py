"""Fuzzing what the hub answers (issue 16): every status a server can send, with valid,
truncated, oversized and garbage bodies under any content type, through the real `HubClient`
over HTTP on 127.0.0.1; and mutated optimisation feed pages through the real feed reader, its
journal and the applier.

Why these properties:

- **Hub replies.** `hublink.py` maps every answer onto the error tree so that callers decide on
  kinds, never on statuses. The property is that table, asserted for every status 100-599:
  200 with a protocol v1 body is a result and anything else under 200 is `HubUnavailable`
  (retried with backoff); 401/403 `HubAuthFailed` (shipping stops, no retry storm); 400/413/422
  `HubRejected` (this payload is set aside: a 4xx that can never succeed is not retried for
  ever); every other status, a cut answer or a broken connection `HubUnavailable`, whose
  `retry_after` is None or a finite wait of at most an hour. Nothing outside `HubError` comes
  out, and the token never appears in a message.
- **The feed.** Whatever a page holds, the reader neither raises nor stops: an unusable envelope
  journals nothing and leaves the cursor where it was, a malformed item is journaled `failed`
  (`malformed: ...`) when it has a usable id and is never open to the applier, and every
  well-formed item is journaled once. The applier then settles every open entry and writes only
  fields of well-formed optimisations: the agent never applies what it cannot parse.

Validity is judged here by an oracle written from the protocol's rules (`_usable` below), not
by calling the decoder under test.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgpack
import pytest
from aiohttp import web
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from bridge_agent import wire
from bridge_agent.downstream.apply import Applier, DownstreamSettings
from bridge_agent.downstream.feed import FeedReader
from bridge_agent.errors import HubAuthFailed, HubError, HubRejected, HubUnavailable
from bridge_agent.hublink import ERROR_BODY_BYTES, HubClient
from bridge_agent.metrics import Metrics
from bridge_agent.platforms.base import WRITE_CAPABILITIES, WriteField
from bridge_agent.platforms.jsondir import JsonDir
from bridge_agent.store import StateStore
from bridge_agent.store.journal import STREAM
from bridge_agent.sync.retry import Backoff
from bridge_agent.testing.fake_writer import FakeWriter

NET = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TOKEN = "hubtok-FUZZ-7c1d"
MAX_REPLY = 4096  # the client's bound on a 200 body here: oversize bodies stay cheap
STORE = "main"


# -- servers on 127.0.0.1 ------------------------------------------------------------------------


@dataclass
class Plan:
    """What the next request is answered with."""

    status: int = 200
    body: bytes = b""
    content_type: str | None = wire.CONTENT_TYPE
    retry_after: str | None = None
    framing: str = "normal"  # normal | truncated | informational | informational-close | garbage

    def __repr__(self) -> str:  # bodies of 64 KiB would make every failure report unreadable
        body = self.body if len(self.body) <= 64 else self.body[:64] + b"..."
        return (
            f"Plan({self.status}, {body!r}, {self.content_type!r}, {self.retry_after!r},"
            f" {self.framing!r}, body_bytes={len(self.body)})"
        )

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis prints it
        printer.text(repr(self))


@dataclass
class Servers:
    """An aiohttp server for well-framed answers and a raw one for broken framing."""

    plan: Plan = field(default_factory=Plan)
    requests: int = 0
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis prints it
        printer.text(f"Servers(plan={self.plan!r})")

    def http(self) -> httpx.AsyncClient:
        """A client of the server that can answer the plan (one each: a client costs an SSL
        context to make, too slow to make per example)."""
        raw = self.plan.framing != "normal" or not 200 <= self.plan.status <= 599
        return self.clients["raw" if raw else "aiohttp"]


def _headers(plan: Plan) -> dict[str, str]:
    headers: dict[str, str] = {}
    if plan.content_type is not None:
        headers["Content-Type"] = plan.content_type
    if plan.retry_after is not None:
        headers["Retry-After"] = plan.retry_after
    return headers


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    box = Servers()

    async def answer(request: web.Request) -> web.Response:
        box.requests += 1
        await request.read()
        plan = box.plan
        response = web.Response(status=plan.status, body=plan.body)
        for name, value in _headers(plan).items():
            response.headers[name] = value
        return response

    async def raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        box.requests += 1
        plan = box.plan
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            # Connection: close, since this server hangs up after each answer: a client that
            # kept the connection would meet a closed one at its next request.
            lines = [f"HTTP/1.1 {plan.status} Fuzz".encode(), b"Connection: close"]
            lines += [f"{k}: {v}".encode("latin-1", "replace") for k, v in _headers(plan).items()]
            if plan.framing == "garbage":
                writer.write(plan.body)
            elif plan.framing.startswith("informational"):
                # 100, 102 or 103: interim answers a client skips (101 would switch protocols)
                interim = (100, 102, 103)[plan.status % 3]
                writer.write(f"HTTP/1.1 {interim} Wait\r\n\r\n".encode())
                if plan.framing == "informational":  # then a real, complete answer
                    final = [f"HTTP/1.1 {plan.status} Fuzz".encode(), *lines[1:]]
                    final.append(f"Content-Length: {len(plan.body)}".encode())
                    writer.write(b"\r\n".join(final) + b"\r\n\r\n" + plan.body)
            else:  # truncated: promises more than it sends, then hangs up
                lines.append(f"Content-Length: {len(plan.body) + 100}".encode())
                writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + plan.body)
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    raw_server = await asyncio.start_server(raw, "127.0.0.1", 0)
    ports = {"aiohttp": runner.addresses[0][1], "raw": raw_server.sockets[0].getsockname()[1]}
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['aiohttp']}", timeout=5) as one,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports['raw']}", timeout=5) as two,
        ):
            box.clients.update(aiohttp=one, raw=two)
            yield box
    finally:
        raw_server.close()
        await raw_server.wait_closed()
        await runner.cleanup()


# -- what the hub may answer -----------------------------------------------------------------------

CALLS = ("send", "hashes", "optimizations", "results", "verified")


def valid_body(call: str) -> bytes:
    """A protocol v1 answer for each call (from the encoders the hub itself uses)."""
    if call == "send":
        return wire.encode_results([wire.Result(1, "ok"), wire.Result(2, "need_full")])
    if call == "hashes":
        return wire.encode_hash_page(wire.HashPage((wire.HashEntry("a", "h1", False),)))
    if call == "optimizations":
        return wire.encode_feed(wire.OptimizationFeed("c1"))
    if call == "results":
        return wire.packb({"v": 1, "accepted": 1})
    return wire.encode_verified_reply(wire.VerifiedReply(1, frozenset({"p1"})))


@st.composite
def plans(draw: st.DrawFn) -> tuple[str, Plan]:
    call = draw(st.sampled_from(CALLS))
    status = draw(
        st.one_of(
            st.integers(min_value=100, max_value=599),
            st.sampled_from([200, 200, 200, 400, 401, 403, 404, 405, 408, 409, 413, 422, 429,
                             500, 502, 503]),
        )
    )  # fmt: skip
    kind = draw(st.sampled_from(["valid", "valid", "garbage", "truncated-body", "oversized"]))
    body = valid_body(call)
    if kind == "garbage":
        body = draw(st.one_of(st.binary(max_size=200), st.sampled_from([b"<html>502</html>"])))
    elif kind == "truncated-body":
        body = body[: draw(st.integers(min_value=0, max_value=max(0, len(body) - 1)))]
    elif kind == "oversized":
        size = draw(st.sampled_from([MAX_REPLY + 1, ERROR_BODY_BYTES + 1]))
        body = (body + b"\xc0" * size)[: max(size, len(body))]
    content_type = draw(
        st.sampled_from([wire.CONTENT_TYPE, "text/html", "application/json", None, "x/\u00e9"])
    )
    retry_after = draw(
        st.one_of(
            st.none(),
            st.sampled_from(["0", "-5", "1e308", "nan", "inf", "soon", "120", "99999999",
                             "Wed, 21 Oct 2099 07:28:00 GMT", "Sat, 01 Jan 0001 00:00:00 GMT"]),
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
        )
    )  # fmt: skip
    framing = draw(
        st.sampled_from(
            ["normal"] * 6 + ["truncated", "informational", "informational-close", "garbage"]
        )
    )
    if not 200 <= status <= 599 and framing == "normal":
        framing = "informational"  # aiohttp cannot answer 1xx: the raw server does
    return call, Plan(status, body, content_type, retry_after, framing)


async def call_hub(client: HubClient, call: str) -> Any:
    if call == "send":
        return await client.send(b"\x80")
    if call == "hashes":
        return await client.hashes(STORE)
    if call == "optimizations":
        return await client.optimizations(STORE, "")
    if call == "results":
        return await client.post_optimization_results(
            STORE, [wire.OptimizationResult("o1", "applied")]
        )
    return await client.post_verified(STORE, [("p1", "h1"), ("p2", "h2")], 1, agent="a")


def decodes(call: str, body: bytes) -> bool:
    """Whether the body is a valid answer to `call` (the bodies drawn are valid or not by
    construction; this only tells truncations that happen to stay valid, such as none)."""
    return body == valid_body(call)


@NET
@given(plan=plans())
@example(plan=("send", Plan(200, valid_body("send"), framing="informational")))
@example(plan=("verified", Plan(405, b"")))
@example(plan=("send", Plan(503, b"", retry_after="Sat, 01 Jan 0001 00:00:00 GMT")))
async def test_every_hub_answer_maps_onto_the_error_tree(
    servers: Servers, plan: tuple[str, Plan]
) -> None:
    call, answer = plan
    servers.plan = answer
    client = HubClient(servers.http(), TOKEN, max_reply_bytes=MAX_REPLY)
    try:
        value = await call_hub(client, call)
    except HubError as exc:
        error: HubError | None = exc
    else:
        error = None
    status = answer.status
    # An answer that never completes (cut, garbage, only a 1xx): whatever the status line
    # said, it is an outage. Except that an error page is read only up to ERROR_BODY_BYTES:
    # one cut after that is complete enough, and its status decides as below.
    cut = answer.framing in ("truncated", "informational-close", "garbage") or status < 200
    event(f"{answer.framing} {type(error).__name__ if error else 'ok'}")
    if error is not None:
        assert TOKEN not in str(error)
    if cut and not (
        answer.framing == "truncated" and status > 200 and len(answer.body) > ERROR_BODY_BYTES
    ):
        assert isinstance(error, HubUnavailable), error
        return
    good = decodes(call, answer.body) and len(answer.body) <= MAX_REPLY
    if status == 200:
        if good:
            assert error is None, error
            if call == "send":
                assert [r.status for r in value] == ["ok", "need_full"]
        else:
            assert isinstance(error, HubUnavailable) and error.status == 200, error
    elif status in (401, 403):
        assert isinstance(error, HubAuthFailed) and error.status == status
    elif status in (400, 413, 422):
        assert isinstance(error, HubRejected) and error.status == status
    elif call == "verified" and status in (404, 405):
        assert error is None and value is None  # a hub without the markers route
    else:
        assert isinstance(error, HubUnavailable) and error.status == status, error
        wait = error.retry_after
        assert wait is None or (math.isfinite(wait) and 0.0 <= wait <= 3600.0)
        if answer.retry_after is None:
            assert wait is None


async def test_a_refused_connection_is_hub_unavailable() -> None:
    """No server at all: the one answer that is not an HTTP answer."""
    async with httpx.AsyncClient(base_url="http://127.0.0.1:9", timeout=2.0) as http:
        with pytest.raises(HubUnavailable) as caught:
            await HubClient(http, TOKEN).send(b"\x80")
    assert caught.value.status is None and TOKEN not in str(caught.value)


# -- the feed: mutated pages through the reader, the journal and the applier ---------------------

FIELDS_OK: list[dict[str, Any]] = [
    {"seo_title": {"from": None, "to": "Linen shirt | Acme"}},
    {
        "seo_description": {"from": None, "to": "Soft linen."},
        "seo_title": {"from": None, "to": "T"},
    },
    {"description_html": {"from": None, "to": "<p>Better</p>"}},
]
BAD_UTF8 = "\x01BADUTF8\x01"  # replaced by invalid UTF-8 of the same length once packed

odd = st.one_of(
    # integers: what msgpack can carry at all
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.binary(max_size=8), st.just(msgpack.ExtType(5, b"x")), st.just(BAD_UTF8),
    st.sampled_from(["", "x" * 300, "a\nb", "\u202e", "p-1"]), st.just({1: "int key"}),
    st.lists(st.integers(-(2**63), 2**64 - 1), max_size=3),
    st.just({"to": {"deep": [[[[[[[[1]]]]]]]]}}),
)  # fmt: skip


@st.composite
def feed_items(draw: st.DrawFn, n: int) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": f"opt-{n}",
        "product": draw(st.sampled_from(["p1", "p2", "p3"])),
        "fields": draw(st.sampled_from(FIELDS_OK)),
        "created_at": 1_700_000_000_000 + n,
    }
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        key = draw(st.sampled_from(["id", "product", "fields", "created_at", "fields.x"]))
        if key == "fields.x":
            fields = item.get("fields")
            fields = dict(fields) if isinstance(fields, dict) else {}
            fields[draw(st.sampled_from(["seo_title", "image_alt", "zz"]))] = draw(odd)
            item["fields"] = fields
        elif draw(st.integers(0, 4)) == 0:
            item.pop(key, None)
        else:
            item[key] = draw(odd)
    return item


@st.composite
def feed_pages(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["page"] * 12 + ["bytes", "version", "cursor", "not-a-list"]))
    if kind == "bytes":
        return draw(st.binary(max_size=100))
    items = [draw(feed_items(n)) for n in range(draw(st.integers(min_value=0, max_value=6)))]
    if draw(st.booleans()):
        items.append(draw(odd))  # an item that is not even a map
    page: dict[Any, Any] = {"v": 1, "cursor": "c-next", "optimizations": items}
    if kind == "version":
        page["v"] = draw(st.sampled_from([0, 2, "1", None]))
    elif kind == "cursor":
        page["cursor"] = draw(st.sampled_from(["", 5, None, "x" * 300, "a\x00b"]))
    elif kind == "not-a-list":
        page["optimizations"] = {"0": items[:1]}
    packed = msgpack.packb(page, use_bin_type=True)
    placeholder = msgpack.packb(BAD_UTF8)
    return packed.replace(placeholder, placeholder[:1] + b"\xff\xfe" + placeholder[3:])


def _text_ok(value: Any, limit: int) -> bool:
    if not isinstance(value, str) or not value or len(value) > limit:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return value.isprintable()


def _json_ok(value: Any, depth: int = 1) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if depth > wire.MAX_DEPTH:
        return False
    if isinstance(value, list):
        return all(_json_ok(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_ok(k) for k in value) and all(
            _json_ok(v, depth + 1) for v in value.values()
        )
    return False


def _usable(item: Any) -> bool:
    """The protocol's rule for one feed item, written apart from the decoder under test."""
    if not isinstance(item, dict):
        return False
    created = item.get("created_at")
    return (
        _text_ok(item.get("id"), wire.FEED_ID_CHARS)
        and _text_ok(item.get("product"), wire.FEED_ID_CHARS)
        and isinstance(item.get("fields"), dict)
        and _json_ok(item["fields"])
        and isinstance(created, int)
        and not isinstance(created, bool)
        and -(2**63) <= created < 2**63
    )


def _page_items(body: bytes) -> list[Any] | None:
    """The page's items as the hub meant them, or None for an unusable envelope."""
    try:
        doc = msgpack.unpackb(body, raw=False, strict_map_key=False,
                              unicode_errors="surrogateescape")  # fmt: skip
    except Exception:
        return None
    if not isinstance(doc, dict) or doc.get("v") != 1:
        return None
    cursor, items = doc.get("cursor"), doc.get("optimizations")
    if not _text_ok(cursor, wire.FEED_ID_CHARS) or not isinstance(items, list):
        return None
    return items


class StaticHub:
    """The feed's hub: a real `HubClient` against the loopback server."""

    def __init__(self, client: HubClient) -> None:
        self.client = client

    def __call__(self) -> HubClient:
        return self.client


@settings(NET, max_examples=100)
@given(page=feed_pages())
@example(
    page=wire.packb(
        {
            "v": 1,
            "cursor": "c",
            "optimizations": [
                {"id": "opt-x", "product": "p1", "fields": {"seo_title": b"bin"}, "created_at": 1}
            ],
        }
    )
)
async def test_the_agent_never_applies_a_feed_item_it_cannot_parse(
    servers: Servers, tmp_path_factory: pytest.TempPathFactory, page: bytes
) -> None:  # fmt: skip
    servers.plan = Plan(200, page)
    expected = _page_items(page)
    root = tmp_path_factory.mktemp("feed")
    (root / "catalog").mkdir()
    for pid in ("p1", "p2", "p3"):
        (root / "catalog" / f"{pid}.json").write_text(f'{{"id": "{pid}", "title": "T"}}')
    async with StateStore.open(root / "state") as state:
        reader = FeedReader(
            STORE, StaticHub(HubClient(servers.http(), TOKEN)), state, Metrics(),
            on_journaled=lambda: None, wait=0.0, backoff=Backoff(0.001, 0.002),
        )  # fmt: skip
        delay = await reader.read_once()
        assert delay >= 0.0
        entries = {e.id: e for e in await state.journal_entries(STORE)}
        if expected is None:  # an unusable envelope: a hub failure, nothing journaled
            event("envelope refused")
            assert reader.failures == 1 and not entries
            assert await state.cursor(STORE, STREAM) in (None, "")
            return
        assert reader.failures == 0
        good = {i["id"]: i for i in expected if _usable(i)}
        bad_ids = {
            i["id"] for i in expected if isinstance(i, dict) and not _usable(i)
            and isinstance(i.get("id"), str)
        }  # fmt: skip
        for id_, item in good.items():
            if id_ in bad_ids:
                continue  # the same id twice in a page, once malformed: either may win
            assert id_ in entries and entries[id_].state == "received", id_
            assert entries[id_].product == item["product"]
            assert dict(entries[id_].fields) == item["fields"]
        for id_, entry in entries.items():
            if entry.state != "received":
                assert entry.state == "failed" and (entry.detail or "").startswith("malformed")
            else:
                assert id_ in good  # only well-formed items are open to the applier
        event(f"{len(good)} good, {len(entries) - len(good)} refused")

        # The applier settles whatever is open and writes only well-formed optimisations.
        writer = FakeWriter(["p1", "p2", "p3"])
        applier = Applier(
            STORE, JsonDir(STORE, root / "catalog"), writer, state, Metrics(),
            capabilities=WRITE_CAPABILITIES, settings=DownstreamSettings(),
            on_outcome=lambda: None, on_recorded=lambda: None,
        )  # fmt: skip
        await applier.apply_pending()
        assert await state.journal_open(STORE) == []
        allowed = _allowed_writes(good)
        for write in writer.writes:
            assert (write.ref.product, write.ref.field) in allowed, write
        if any(i["fields"] in FIELDS_OK for i in good.values()):
            assert writer.writes  # a well-formed optimisation is applied: not a vacuous pass
        event(f"writes: {bool(writer.writes)}")


def _allowed_writes(good: dict[str, Any]) -> set[tuple[str, WriteField]]:
    out: set[tuple[str, WriteField]] = set()
    for item in good.values():
        for name, spec in item["fields"].items():
            if name in {f.value for f in WriteField} and isinstance(spec, dict):
                out.add((item["product"], WriteField(name)))
    return out
