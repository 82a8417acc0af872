"""Fuzzing every reader of outside input (issue 10): it answers with a value or an error of our own
tree, never with a `RecursionError`, a `ValueError`, a `TypeError` or a hang.

Each property runs a bounded, derandomized number of examples (the same ones on every machine, so
CI never flakes), mixing three kinds of input: raw bytes, well-formed documents of the right
format with hostile values (deep nesting, integers of thousands of digits, wrong types, huge and
odd strings), and near-valid documents mutated one field at a time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import string
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge_agent import wire
from bridge_agent.config import load_config
from bridge_agent.errors import BadWebhook, BridgeError, ConfigError, HubError, WireError
from bridge_agent.health import Health
from bridge_agent.hublink import HubClient
from bridge_agent.metrics import Metrics
from bridge_agent.platforms.base import WebhookDelivery
from bridge_agent.platforms.jsondir import JsonDir
from bridge_agent.platforms.woocommerce import webhooks as woo_webhooks
from bridge_agent.sources import StoreContext
from bridge_agent.sources.spool import SpoolEvent, SpoolFileError, SpoolWatcher, parse_spool
from bridge_agent.store import StateStore

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
SLOW_FUZZ = settings(FUZZ, max_examples=40)

# -- strategies ----------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["", "1", "794", "product.updated", "\x00", "٣", "²", "x" * 300, "\n"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)


@st.composite
def hostile_json(draw: st.DrawFn) -> bytes:
    """JSON text: generated values, deep nests, long integers, or plain garbage."""
    kind = draw(st.sampled_from(["value", "deep", "digits", "bytes", "spool-ish"]))
    if kind == "deep":
        depth = draw(st.integers(min_value=5, max_value=20_000))
        opener = draw(st.sampled_from(["[", '{"a":']))
        closer = "]" if opener == "[" else "}"
        return (opener * depth + "1" + closer * depth).encode()
    if kind == "digits":
        digits = draw(st.integers(min_value=1, max_value=6000))
        return b'{"v": 1, "event": "product.updated", "id": ' + b"9" * digits + b"}"
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "spool-ish":
        doc: dict[str, Any] = {"v": 1, "event": "product.updated", "id": "7"}
        doc[draw(st.sampled_from(["v", "event", "id", "sku", "at"]))] = draw(json_values)
        return json.dumps(draw(st.sampled_from([doc, [doc, doc], [doc, 1]]))).encode()
    try:
        return json.dumps(draw(json_values), allow_nan=True).encode()
    except (ValueError, OverflowError):
        return b"null"


# -- spool ---------------------------------------------------------------------------------------


@FUZZ
@given(hostile_json())
def test_spool_parser_answers_events_or_a_spool_file_error(raw: bytes) -> None:
    try:
        events = parse_spool(raw)
    except SpoolFileError as exc:
        refused: SpoolFileError | None = exc
    else:
        refused = None
    if refused is not None:
        assert len(str(refused)) < 400  # the .why note stays one readable line
        return
    assert all(isinstance(e, SpoolEvent) and e.id and e.id.isprintable() for e in events)


class NoStore:
    name = "none"

    async def fetch_product(self, product_id: str) -> None:
        return None


@SLOW_FUZZ
@given(st.lists(hostile_json(), min_size=1, max_size=4))
def test_a_spool_round_never_fails_whatever_the_files_hold(
    tmp_path_factory: pytest.TempPathFactory, contents: list[bytes]
) -> None:
    root = tmp_path_factory.mktemp("spool")

    async def round_trip() -> tuple[int, int]:
        incoming = root / "spool" / "incoming"
        incoming.mkdir(parents=True)
        for n, raw in enumerate(contents):
            (incoming / f"{n}.json").write_bytes(raw)
        async with StateStore.open(root / "state") as state:
            ctx = StoreContext("main", NoStore(), state, lambda: None, Metrics(), Health("s"))  # type: ignore[arg-type]
            spool = SpoolWatcher(ctx, spool_dir=root / "spool")
            first = await spool.process_once()
            assert await spool.process_once() == (0, 0)  # all consumed or set aside
            return first

    progressed, left = asyncio.run(round_trip())
    assert (progressed, left) == (len(contents), 0)
    assert not any((root / "spool" / "incoming").iterdir())


# -- webhooks ------------------------------------------------------------------------------------

SECRET = "fuzz-webhook-secret"
HUB_TOKEN = "hubtok-FUZZ-91x"


def woo_sign(body: bytes) -> str:
    return base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()


header_values = st.text(alphabet=string.printable, max_size=60)


@FUZZ
@given(
    body=hostile_json(),
    topic=st.sampled_from(["product.updated", "product.deleted", "order.created", "", "product."]),
    extra=st.dictionaries(
        st.sampled_from(["X-WC-Webhook-Resource", "X-WC-Webhook-Event", "X-WC-Webhook-ID"]),
        header_values,
    ),
    signed=st.booleans(),
)
def test_woocommerce_webhooks_answer_a_delivery_or_bad_webhook(
    body: bytes, topic: str, extra: dict[str, str], signed: bool
) -> None:
    headers = {"X-WC-Webhook-Topic": topic, **extra}
    if signed:
        headers["X-WC-Webhook-Signature"] = woo_sign(body)
    try:
        delivery = woo_webhooks.verify(headers, body, SECRET)
    except BadWebhook as exc:
        status: int | None = exc.status
    else:
        status = None
    if status is not None:
        assert status in (400, 401)
        assert signed or status == 401  # nothing unsigned is ever parsed
        return
    assert isinstance(delivery, WebhookDelivery)
    for product_id in delivery.product_ids:
        assert product_id.isascii() and product_id.isdigit() and len(product_id) <= 19
    assert signed or delivery.kind == "ping"


@FUZZ
@given(body=hostile_json(), signed=st.booleans())
def test_jsondir_webhooks_answer_a_delivery_or_bad_webhook(body: bytes, signed: bool) -> None:
    adapter = JsonDir("main", Path("/nonexistent"), webhook_secret=SECRET)
    headers = {"X-Signature": woo_sign(body)} if signed else {}
    try:
        delivery = adapter.verify_webhook(headers, body)
    except BadWebhook as exc:
        status: int | None = exc.status
    else:
        status = None
    if status is not None:
        assert signed or status == 401
        return
    assert signed
    assert all(p and p.isprintable() and len(p) <= 255 for p in delivery.product_ids)


# -- hub replies ---------------------------------------------------------------------------------

results_like = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {
            "v": st.one_of(st.just(1), scalars),
            "results": st.lists(
                st.dictionaries(
                    st.sampled_from(["seq", "status", "reason"]),
                    st.one_of(scalars, st.sampled_from(["ok", "need_full", "rejected"])),
                ),
                max_size=4,
            ),
        }
    ),
)


@st.composite
def hostile_msgpack(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["value", "deep", "bytes", "truncated"]))
    if kind == "deep":
        depth = draw(st.integers(min_value=1, max_value=200_000))
        return b"\x91" * depth + b"\xc0"
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    try:
        packed = msgpack.packb(draw(results_like), use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        packed = b"\xc0"
    if kind == "truncated":
        return packed[: draw(st.integers(min_value=0, max_value=len(packed)))]
    return packed


@FUZZ
@given(hostile_msgpack())
def test_hub_reply_decoders_answer_values_or_wire_errors(body: bytes) -> None:
    for decode in (
        wire.decode_results,
        wire.decode_feed,
        wire.decode_batch,
        wire.decode_optimization_results,
    ):
        with contextlib.suppress(WireError):
            decode(body)


@SLOW_FUZZ
@given(
    status=st.sampled_from([200, 200, 200, 201, 204, 301, 400, 401, 403, 404, 413, 422, 429, 500]),
    body=hostile_msgpack(),
    retry_after=st.one_of(
        st.none(), st.sampled_from(["0", "-5", "1e308", "nan", "soon", "Wed, 21 Oct 2099 07:28:00"])
    ),
    content_type=st.sampled_from([wire.CONTENT_TYPE, "text/html", ""]),
)
def test_the_hub_client_answers_results_or_hub_errors(
    status: int, body: bytes, retry_after: str | None, content_type: str
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Type": content_type}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        return httpx.Response(status, headers=headers, content=body)

    async def send() -> None:
        transport = httpx.MockTransport(answer)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
            try:
                results = await HubClient(http, HUB_TOKEN).send(b"\x80")
            except HubError as exc:
                message: str | None = str(exc)
            else:
                message = None
            if message is not None:
                assert HUB_TOKEN not in message
                return
            assert status == 200
            assert all(isinstance(r, wire.Result) for r in results)

    asyncio.run(send())


# -- configuration -------------------------------------------------------------------------------

toml_keys = st.sampled_from(
    ["id", "state_dir", "url", "token", "listen", "platform", "concurrency", "poll_interval",
     "drain_timeout", "spool_dir", "active", "x"]
)  # fmt: skip


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else "nan"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if value is None:
        return '""'
    return json.dumps(str(value))


@st.composite
def hostile_toml(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["tables", "text", "deep", "digits"]))
    if kind == "text":
        return draw(st.text(max_size=300))
    if kind == "deep":
        depth = draw(st.integers(min_value=1, max_value=5000))
        return "[agent]\nid = " + "[" * depth + "]" * depth + "\n"
    if kind == "digits":
        return "[hub]\ntimeout = " + "7" * draw(st.integers(min_value=1, max_value=6000)) + "\n"
    lines = []
    for table in draw(st.lists(st.sampled_from(["agent", "hub", "health", "[stores]", "x"]))):
        lines.append(f"[{table}]")
        for key, value in draw(st.dictionaries(toml_keys, json_values, max_size=4)).items():
            lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + "\n"


@FUZZ
@given(hostile_toml())
def test_the_config_loader_answers_a_config_or_a_config_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.mktemp("config") / "agent.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_config(path, env={})
    except ConfigError as exc:
        problems: tuple[str, ...] = exc.problems
    except BridgeError as exc:  # any other error of ours is a bug here
        raise AssertionError(f"unexpected {type(exc).__name__}") from exc
    else:
        return
    assert problems and all(isinstance(p, str) and p for p in problems)
