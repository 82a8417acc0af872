"""The shared store HTTP layer (`platforms/http.py`) against a real aiohttp store on 127.0.0.1.

Each outcome class over the wire (Retry-After, 5xx retried for a GET and never for a POST), the
request budget as the server measures it (requests in flight, requests per second), the store
request metrics and their histogram, and the answer's headers on errors without secret ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge_agent.config import Secret, StoreSettings
from bridge_agent.errors import (
    Outcome,
    PlatformAmbiguous,
    PlatformAuthFailed,
    PlatformError,
    PlatformRejected,
    PlatformUnavailable,
    ProductNotFound,
    SafeHeaders,
)
from bridge_agent.metrics import Metrics
from bridge_agent.platforms.base import failure_of
from bridge_agent.platforms.http import (
    REQUEST_SECONDS_METRIC,
    REQUESTS_METRIC,
    Reply,
    ReplyTooLarge,
    RequestBudget,
    StoreHttp,
    build_platform,
    classify,
)
from bridge_agent.platforms.jsondir import JsonDir
from bridge_agent.platforms.woocommerce import WooCommerce
from bridge_agent.sync.retry import Backoff

LEAK = "LEAKCHECK_9f3e"

# --- a store that answers what each test tells it ------------------------------------------------

Answer = Callable[[web.Request], Any]


@dataclass
class Store:
    """Answers `/r/{name}` with the queued answers for `name`, then 200; measures load."""

    queued: dict[str, list[Answer]] = field(default_factory=dict)
    seen: list[tuple[str, str]] = field(default_factory=list)  # (method, name)
    arrivals: list[float] = field(default_factory=list)  # monotonic, as the server saw them
    delay: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0

    def queue(self, name: str, *answers: Answer) -> None:
        self.queued.setdefault(name, []).extend(answers)

    def count(self, name: str) -> int:
        return sum(1 for _, n in self.seen if n == name)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.seen.append((request.method, name))
        self.arrivals.append(time.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            queue = self.queued.get(name)
            if queue:
                answer = queue.pop(0)(request)
                if asyncio.iscoroutine(answer):
                    answer = await answer
                return answer  # type: ignore[no-any-return]
            return web.json_response({"name": name})
        finally:
            self.in_flight -= 1

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/r/{name}", self.handle)
        return app


def status(code: int, headers: dict[str, str] | None = None, text: str = "") -> Answer:
    return lambda _: web.Response(status=code, headers=headers or {}, text=text)


def slow(seconds: float) -> Answer:
    async def answer(_: web.Request) -> web.Response:
        await asyncio.sleep(seconds)
        return web.Response(text="late")

    return answer


def reset(request: web.Request) -> web.Response:
    """Drop the connection without an answer (a crashed PHP worker, a proxy restart)."""
    assert request.transport is not None
    request.transport.abort()
    return web.Response()


@dataclass
class Kit:
    store: Store
    server: TestServer
    http: httpx.AsyncClient
    metrics: Metrics
    sleeps: list[float]

    def url(self, name: str) -> str:
        return str(self.server.make_url(f"/r/{name}"))

    def layer(self, budget: RequestBudget | None = None, **options: Any) -> StoreHttp:
        async def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)

        values: dict[str, Any] = {
            "store": "main",
            "platform": "TestShop",
            "host": "127.0.0.1",
            "budget": budget,
            "metrics": self.metrics,
            "backoff": Backoff(base=0.01, cap=0.05),
            "sleep": sleep,
        }
        values.update(options)
        return StoreHttp(self.http, **values)

    async def call(
        self,
        name: str,
        method: str = "GET",
        *,
        layer: StoreHttp | None = None,
        idempotent: bool | None = None,
    ) -> bytes:
        body = {"x": 1} if method in ("POST", "PUT") else None
        return await (layer or self.layer()).send(
            method,
            lambda: self.http.build_request(
                method, self.url(name), json=body, headers={"Authorization": f"Bearer {LEAK}"}
            ),
            where=f"{method} /r/{name}",
            read=lambda reply: reply.content,
            idempotent=idempotent,
        )

    def requests(self, method: str, outcome: Outcome) -> float:
        return self.metrics.value(REQUESTS_METRIC, store="main", method=method, outcome=outcome)


@pytest.fixture
async def kit() -> AsyncIterator[Kit]:
    store = Store()
    server = TestServer(store.app(), host="127.0.0.1")
    await server.start_server()
    async with httpx.AsyncClient(timeout=5.0) as http:
        yield Kit(store, server, http, Metrics(), [])
    await server.close()


# --- outcomes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "idempotent", "outcome"),
    [
        (200, True, Outcome.OK),
        (204, False, Outcome.OK),
        (301, True, Outcome.REDIRECTED),
        (400, True, Outcome.PERMANENT),
        (401, True, Outcome.AUTH),
        (403, False, Outcome.AUTH),
        (404, True, Outcome.NOT_FOUND),
        (408, True, Outcome.TRANSIENT),
        (408, False, Outcome.TRANSIENT),  # the server never got the whole request
        (409, False, Outcome.CONFLICT),
        (410, True, Outcome.PERMANENT),
        (413, False, Outcome.PERMANENT),
        (422, True, Outcome.PERMANENT),
        (429, True, Outcome.RATE_LIMITED),
        (429, False, Outcome.RATE_LIMITED),  # refused before processing: a write may go again
        (500, True, Outcome.TRANSIENT),
        (500, False, Outcome.AMBIGUOUS),
        (501, True, Outcome.PERMANENT),
        (503, False, Outcome.AMBIGUOUS),
        (524, True, Outcome.TRANSIENT),
        (999, True, Outcome.TRANSIENT),
    ],
)
def test_classify_statuses(code: int, idempotent: bool, outcome: Outcome) -> None:
    assert classify(code, idempotent=idempotent) is outcome


@pytest.mark.parametrize(
    ("error", "idempotent", "outcome"),
    [
        (httpx.ConnectError("refused"), False, Outcome.TRANSIENT),  # nothing was sent
        (httpx.ConnectTimeout("slow"), False, Outcome.TRANSIENT),
        (httpx.PoolTimeout("busy"), False, Outcome.TRANSIENT),
        (httpx.ReadTimeout("late"), True, Outcome.TRANSIENT),
        (httpx.ReadTimeout("late"), False, Outcome.AMBIGUOUS),
        (httpx.RemoteProtocolError("reset"), False, Outcome.AMBIGUOUS),
        (httpx.ReadError("reset"), True, Outcome.TRANSIENT),
    ],
)
def test_classify_transport_errors(error: Exception, idempotent: bool, outcome: Outcome) -> None:
    assert classify(error=error, idempotent=idempotent) is outcome


@pytest.mark.parametrize(
    ("answer", "kind", "outcome", "permanent"),
    [
        (status(401), PlatformAuthFailed, Outcome.AUTH, False),
        (status(403), PlatformAuthFailed, Outcome.AUTH, False),
        (status(404), ProductNotFound, Outcome.NOT_FOUND, False),
        (status(409), PlatformRejected, Outcome.CONFLICT, False),
        (status(400), PlatformRejected, Outcome.PERMANENT, True),
        (status(422), PlatformRejected, Outcome.PERMANENT, True),
        (status(301, {"Location": "https://elsewhere/"}), PlatformUnavailable, "redirected", False),
    ],
)
async def test_answers_that_are_not_retried(
    kit: Kit, answer: Answer, kind: type[PlatformError], outcome: Outcome, permanent: bool
) -> None:
    kit.store.queue("p", answer)
    with pytest.raises(kind) as caught:
        await kit.call("p")
    error = caught.value
    assert error.outcome == outcome
    assert error.permanent is permanent
    assert failure_of("7", error).permanent is permanent  # ItemFailure follows the outcome
    assert failure_of("7", error).status == error.status
    assert kit.store.count("p") == 1
    assert kit.sleeps == []
    assert kit.requests("GET", Outcome(outcome)) == 1


async def test_the_answer_s_status_and_headers_ride_on_the_error_without_secrets(kit: Kit) -> None:
    kit.store.queue(
        "p",
        status(
            422,
            {
                "X-Request-Id": "req-42",
                "Authorization": f"Bearer {LEAK}",
                "Set-Cookie": f"session={LEAK}",
                "X-Api-Key": LEAK,
                "WWW-Authenticate": 'Basic realm="shop"',
            },
            text=f"refused {LEAK}",
        ),
    )
    with pytest.raises(PlatformRejected) as caught:
        await kit.call("p")
    error = caught.value
    assert error.status == 422
    assert isinstance(error.headers, SafeHeaders)
    assert error.headers["x-request-id"] == "req-42"
    assert error.headers["X-Request-ID"] == "req-42"  # case-insensitive
    assert error.headers["www-authenticate"] == 'Basic realm="shop"'
    for name in ("authorization", "set-cookie", "x-api-key"):
        assert name not in error.headers
    assert LEAK not in repr(error.headers)
    assert LEAK not in str(error)
    with pytest.raises(TypeError):
        error.headers["x-request-id"] = "changed"  # type: ignore[index]


async def test_429_waits_for_retry_after_then_succeeds_for_a_write_too(kit: Kit) -> None:
    kit.store.queue("w", status(429, {"Retry-After": "2"}))
    assert await kit.call("w", "POST") == b'{"name": "w"}'
    assert kit.store.count("w") == 2
    (slept,) = kit.sleeps
    assert 2.0 <= slept <= 2.5
    assert kit.requests("POST", Outcome.RATE_LIMITED) == 1
    assert kit.requests("POST", Outcome.OK) == 1


async def test_408_is_resent_even_for_a_write(kit: Kit) -> None:
    kit.store.queue("w", status(408))  # the server never got the whole request
    assert await kit.call("w", "POST") == b'{"name": "w"}'
    assert kit.store.count("w") == 2
    assert kit.requests("POST", Outcome.TRANSIENT) == 1


async def test_retry_after_is_capped_and_a_long_one_goes_to_the_caller(kit: Kit) -> None:
    capped = kit.layer(backoff=Backoff(base=0.01, cap=0.05, retry_after_cap=5.0), max_wait=10.0)
    kit.store.queue("p", status(503, {"Retry-After": "8"}))
    await kit.call("p", layer=capped)
    assert 5.0 <= kit.sleeps[0] <= 5.6  # asked for 8 s, waited the cap
    kit.store.queue("q", status(429, {"Retry-After": "600"}))
    with pytest.raises(PlatformUnavailable) as caught:
        await kit.call("q", layer=capped)
    assert caught.value.retry_after == 600.0
    assert caught.value.outcome is Outcome.RATE_LIMITED
    assert kit.store.count("q") == 1


async def test_5xx_is_retried_for_a_get_within_bounds(kit: Kit) -> None:
    kit.store.queue("p", status(500), status(502))
    assert await kit.call("p") == b'{"name": "p"}'
    assert kit.store.count("p") == 3
    assert len(kit.sleeps) == 2
    kit.store.queue("q", *[status(503)] * 10)
    with pytest.raises(PlatformUnavailable) as caught:
        await kit.call("q")
    assert (caught.value.status, caught.value.outcome) == (503, Outcome.TRANSIENT)
    assert kit.store.count("q") == 4  # ATTEMPTS
    assert kit.requests("GET", Outcome.TRANSIENT) == 6


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
async def test_5xx_is_never_resent_for_a_write(kit: Kit, method: str) -> None:
    kit.store.queue("w", status(500))
    with pytest.raises(PlatformAmbiguous) as caught:
        await kit.call("w", method)
    assert kit.store.count("w") == 1
    assert kit.sleeps == []
    error = caught.value
    assert (error.status, error.outcome, error.permanent) == (500, Outcome.AMBIGUOUS, False)
    assert "may or may not have been applied" in str(error)
    assert kit.requests(method, Outcome.AMBIGUOUS) == 1


@pytest.mark.parametrize(
    ("method", "refined", "sent", "raised"),
    [
        # A 2xx whose body says "internal error": a write may have applied, a read is retried.
        ("POST", Outcome.TRANSIENT, 1, PlatformAmbiguous),
        ("GET", Outcome.TRANSIENT, 4, PlatformUnavailable),
        # A body that says nothing ran (GraphQL THROTTLED) leaves a write safe to resend.
        ("POST", Outcome.RATE_LIMITED, 4, PlatformUnavailable),
    ],
)
async def test_a_2xx_body_read_as_a_failure_is_resent_only_when_safe(
    kit: Kit, method: str, refined: Outcome, sent: int, raised: type[PlatformError]
) -> None:
    def read(reply: Reply) -> bytes:
        raise PlatformUnavailable("INTERNAL_SERVER_ERROR in the body", outcome=refined)

    with pytest.raises(raised) as caught:
        await kit.layer().send(
            method,
            lambda: kit.http.build_request(method, kit.url("w"), json={"x": 1}),
            where=f"{method} /r/w",
            read=read,
        )
    assert kit.store.count("w") == sent
    assert type(caught.value) is raised
    if raised is PlatformAmbiguous:
        assert caught.value.outcome is Outcome.AMBIGUOUS


async def test_a_write_marked_idempotent_is_retried(kit: Kit) -> None:
    kit.store.queue("w", status(503))
    assert await kit.call("w", "PUT", idempotent=True) == b'{"name": "w"}'
    assert kit.store.count("w") == 2


async def test_a_timeout_is_retried_for_a_get_and_ambiguous_for_a_post(kit: Kit) -> None:
    async with httpx.AsyncClient(timeout=0.2) as http:
        kit.http = http
        kit.store.queue("p", slow(1.0))
        assert await kit.call("p") == b'{"name": "p"}'
        assert kit.store.count("p") == 2
        kit.store.queue("w", slow(1.0))
        with pytest.raises(PlatformAmbiguous) as caught:
            await kit.call("w", "POST")
    assert kit.store.count("w") == 1
    assert caught.value.status is None
    assert "did not answer POST /r/w in time (ReadTimeout)" in str(caught.value)


async def test_a_reset_is_retried_for_a_get_and_ambiguous_for_a_post(kit: Kit) -> None:
    kit.store.queue("p", reset)
    assert await kit.call("p") == b'{"name": "p"}'
    assert kit.store.count("p") == 2
    kit.store.queue("w", reset)
    with pytest.raises(PlatformAmbiguous) as caught:
        await kit.call("w", "POST")
    assert kit.store.count("w") == 1
    assert "cannot reach TestShop at 127.0.0.1 for POST /r/w" in str(caught.value)
    assert kit.requests("POST", Outcome.AMBIGUOUS) == 1


async def test_a_refused_connection_is_retried_even_for_a_write(kit: Kit) -> None:
    layer = kit.layer(attempts=3)
    with pytest.raises(PlatformUnavailable) as caught:
        await layer.send(
            "POST",
            lambda: kit.http.build_request("POST", "http://127.0.0.1:9/r/w", json={}),
            where="POST /r/w",
            read=lambda reply: reply.content,
        )
    assert not isinstance(caught.value, PlatformAmbiguous)  # nothing was sent
    assert caught.value.outcome is Outcome.TRANSIENT
    assert len(kit.sleeps) == 2
    assert "cannot reach TestShop at 127.0.0.1 for POST /r/w" in str(caught.value)


async def test_an_unusable_body_is_invalid_and_not_retried(kit: Kit) -> None:
    def refuse(reply: Any) -> bytes:
        raise PlatformUnavailable("not JSON")

    with pytest.raises(PlatformUnavailable) as caught:
        await kit.layer().send(
            "GET",
            lambda: kit.http.build_request("GET", kit.url("p")),
            where="GET /r/p",
            read=refuse,
        )
    assert (caught.value.status, caught.value.outcome) == (200, Outcome.INVALID)
    assert kit.store.count("p") == 1
    kit.store.queue("big", status(200, text="x" * 4096))
    with pytest.raises(ReplyTooLarge) as large:
        await kit.call("big", layer=kit.layer(max_reply_bytes=1024))
    assert "more than 1024 bytes" in str(large.value)
    assert kit.requests("GET", Outcome.INVALID) == 2


# --- the request budget ---------------------------------------------------------------------------


async def test_the_budget_bounds_requests_in_flight_across_every_user(kit: Kit) -> None:
    kit.store.delay = 0.05
    budget = RequestBudget(concurrency=3)
    importer, hints = kit.layer(budget), kit.layer(budget)  # two users of one store
    names = [f"p{i}" for i in range(12)]
    await asyncio.gather(
        *(kit.call(n, layer=(importer, hints)[i % 2]) for i, n in enumerate(names))
    )
    assert kit.store.max_in_flight == 3  # reached, never passed
    assert budget.in_flight == 0


async def test_the_budget_paces_requests_per_second(kit: Kit) -> None:
    budget = RequestBudget(concurrency=8, requests_per_second=20.0)
    layer = kit.layer(budget)
    await asyncio.gather(*(kit.call(f"p{i}", layer=layer) for i in range(10)))
    arrivals = sorted(kit.store.arrivals)
    assert arrivals[-1] - arrivals[0] >= 9 / 20 * 0.9  # 10 starts, 50 ms apart
    for i in range(len(arrivals) - 3):
        assert arrivals[i + 3] - arrivals[i] >= 0.1, "more than 3 requests within 100 ms"


async def test_without_a_rate_the_budget_does_not_pace(kit: Kit) -> None:
    layer = kit.layer(RequestBudget(concurrency=10))
    started = time.monotonic()
    await asyncio.gather(*(kit.call(f"p{i}", layer=layer) for i in range(10)))
    assert time.monotonic() - started < 0.4


def test_a_budget_is_built_from_the_store_settings() -> None:
    store = StoreSettings(
        id="main", platform="woocommerce", url="https://x", concurrency=6, requests_per_second=2.5
    )
    budget = RequestBudget.for_store(store)
    assert (budget.concurrency, budget.requests_per_second) == (6, 2.5)
    with pytest.raises(ValueError, match="concurrency"):
        RequestBudget(concurrency=0)


async def test_adapters_get_the_store_budget_and_metrics_when_they_take_them(
    tmp_path: Path,
) -> None:
    budget, metrics = RequestBudget(concurrency=2), Metrics()
    woo = StoreSettings(
        id="main",
        platform="woocommerce",
        url="https://shop.example.com",
        secrets={"consumer_key": Secret("ck_x"), "consumer_secret": Secret("cs_x")},
    )
    files = StoreSettings(
        id="files", platform="jsondir", url="file:///", options={"catalog_dir": str(tmp_path)}
    )
    async with httpx.AsyncClient() as http:
        adapter = build_platform(WooCommerce, woo, http, budget=budget, metrics=metrics)
        assert isinstance(adapter, WooCommerce)
        assert adapter.client.layer.budget is budget
        assert adapter.client.layer.metrics is metrics
        alone = build_platform(WooCommerce, woo, http)
        assert isinstance(alone, WooCommerce)
        assert alone.client.layer.budget is not budget  # a private one
        assert isinstance(build_platform(JsonDir, files, http, budget=budget), JsonDir)


# --- metrics --------------------------------------------------------------------------------------


def test_histogram_renders_the_prometheus_text_format() -> None:
    metrics = Metrics()
    metrics.histogram("bridge_x_seconds", "Latency.", [0.1, 1.0])
    metrics.observe("bridge_x_seconds", 0.05, store="a")
    metrics.observe("bridge_x_seconds", 0.1, store="a")  # "le" is inclusive
    metrics.observe("bridge_x_seconds", 0.5, store="a")
    metrics.observe("bridge_x_seconds", 7.0, store="a")
    metrics.observe("bridge_x_seconds", 0.25, store='b"\n')
    assert metrics.render() == (
        "# HELP bridge_x_seconds Latency.\n"
        "# TYPE bridge_x_seconds histogram\n"
        'bridge_x_seconds_bucket{store="a",le="0.1"} 2\n'
        'bridge_x_seconds_bucket{store="a",le="1.0"} 3\n'
        'bridge_x_seconds_bucket{store="a",le="+Inf"} 4\n'
        'bridge_x_seconds_sum{store="a"} 7.65\n'
        'bridge_x_seconds_count{store="a"} 4\n'
        'bridge_x_seconds_bucket{store="b\\"\\n",le="0.1"} 0\n'
        'bridge_x_seconds_bucket{store="b\\"\\n",le="1.0"} 1\n'
        'bridge_x_seconds_bucket{store="b\\"\\n",le="+Inf"} 1\n'
        'bridge_x_seconds_sum{store="b\\"\\n"} 0.25\n'
        'bridge_x_seconds_count{store="b\\"\\n"} 1\n'
    )
    observed = metrics.observed("bridge_x_seconds", store="a")
    assert observed.buckets == ((0.1, 2), (1.0, 3), (float("inf"), 4))
    assert (observed.count, round(observed.sum, 6)) == (4, 7.65)
    assert metrics.observed("bridge_x_seconds", store="none").count == 0


def test_histogram_declarations_are_checked() -> None:
    metrics = Metrics()
    metrics.counter("bridge_c_total", "A counter.")
    metrics.gauge("bridge_g", "A gauge.")
    with pytest.raises(ValueError, match="increase"):
        metrics.histogram("bridge_h_seconds", "h", [1.0, 0.5])
    with pytest.raises(ValueError, match="finite"):
        metrics.histogram("bridge_h_seconds", "h", [])
    with pytest.raises(ValueError, match="suffix"):
        metrics.histogram("bridge_h_total", "h", [1.0])
    with pytest.raises(TypeError):
        metrics.histogram("bridge_g", "clash", [1.0])
    metrics.histogram("bridge_h_seconds", "h", [1.0])
    with pytest.raises(TypeError):
        metrics.inc("bridge_h_seconds")
    with pytest.raises(TypeError):
        metrics.observe("bridge_c_total", 1.0)


async def test_requests_are_counted_by_store_method_and_outcome_without_urls(kit: Kit) -> None:
    kit.store.queue("p", status(503))
    await kit.call("p")
    await kit.call("w", "POST")
    text = kit.metrics.render()
    assert f"# TYPE {REQUEST_SECONDS_METRIC} histogram" in text
    assert f'{REQUESTS_METRIC}{{method="GET",outcome="ok",store="main"}} 1' in text
    assert f'{REQUESTS_METRIC}{{method="GET",outcome="transient",store="main"}} 1' in text
    assert f'{REQUESTS_METRIC}{{method="POST",outcome="ok",store="main"}} 1' in text
    assert f'{REQUEST_SECONDS_METRIC}_count{{method="GET",outcome="ok",store="main"}} 1' in text
    assert 'le="+Inf"' in text
    assert "127.0.0.1" not in text
    assert "/r/" not in text
    latency = kit.metrics.observed(REQUEST_SECONDS_METRIC, store="main", method="GET", outcome="ok")
    assert latency.count == 1
    assert 0 < latency.sum < 5
