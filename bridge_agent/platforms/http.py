"""The one HTTP layer every store adapter talks through: outcomes, retries, budget, metrics.

An adapter knows its platform (how to build and sign a request, what its error bodies say, how
it pages); this module knows HTTP, and is the same for every platform, so that WooCommerce,
Shopify, Magento and PrestaShop fail, wait and count alike (kopf's `_cogs/clients/errors.py` is
the model: one place turns an answer into what the caller does next).

**Outcomes** (`classify`, the single place; `Outcome` is in `errors.py`):

| answer | outcome | what happens here |
| --- | --- | --- |
| 2xx | `ok` (`invalid` if the adapter cannot use the body) | returned (`invalid`: raised) |
| 3xx | `redirected` | raised: the configured URL is not the API's; never followed |
| 401, 403 | `auth` | raised (`PlatformAuthFailed`): the store stops and says so |
| 404 | `not_found` | raised (`ProductNotFound`, or what the adapter makes of it) |
| 409 | `conflict` | raised (`PlatformRejected`, not permanent) |
| 429 | `rate_limited` | retried after `Retry-After` (capped), any method |
| 408, 5xx but 501, timeouts, resets | `transient` | retried with backoff (idempotent only) |
| the same, for a write | `ambiguous` | raised (`PlatformAmbiguous`): the caller re-reads |
| other 4xx, 501 | `permanent` | raised (`PlatformRejected`): give up on this item |

A request is idempotent when its method is GET, HEAD or OPTIONS, or when the caller marks it
so (a PUT that sets a webhook's status). A write that failed ambiguously (a timeout or reset after
it was sent, a 5xx) may have been applied: it is never resent from here, because sending it
again could apply it twice; the downstream direction reads the store's current values instead.
A connection that was never made (refused, connect or pool timeout) sent nothing, and a 408 or
429 says the request was not processed: those are retried for writes too.

Retries are bounded (`attempts`, 4) with full-jitter backoff (`sync/retry.py`) that honours
`Retry-After` up to `Backoff.retry_after_cap`; a `Retry-After` longer than `max_wait` is not slept
here but raised at once (`PlatformUnavailable.retry_after`) for the caller's own schedule.

**Budget** (`RequestBudget`): every request of one store, whichever component sends it (import,
hints, polls, reconciliation, later verification and writes), goes through that store's one
budget: at most `concurrency` requests in flight and, if `requests_per_second` is set, no more
than that many started per second (GCRA, a token bucket of `burst` tokens, by default 1: evenly
spaced). A retry's backoff sleeps outside the budget, so a waiting request holds no slot.

**Live work first** (`background_work`): runs (import, refresh, verification, repair) mark their
requests as background; everything else (a webhook's or hint's product, a write-back) is live.
Both share the one rate and concurrency, but live work must never queue behind a sweep of
100 000 products: a freed slot goes to a waiting live request first, background requests never
hold the last slot (with `concurrency` > 1), and a start time is reserved only once a slot is
held, so a live request waits at most about `(concurrency - 1) / requests_per_second` behind the
background requests already paced (`PrioritySlots`).

**Metrics** (with a `Metrics` registry): `bridge_store_requests_total{store,method,outcome}` and
`bridge_store_request_duration_seconds{store,method,outcome}` (a histogram), one observation per
request sent (each retry counts). Labels are bounded: never a URL, a path or a product id.

**Bounded replies**: a 2xx body is read as it streams and refused past `max_reply_bytes`
(`ReplyTooLarge`), an error body past `ERROR_BODY_BYTES` is dropped (its status says enough).

**Errors** carry `status`, `headers` (without secret-bearing ones) and `outcome` as attributes.
Messages name the request by `where` (method and API path, never the URL, which can carry
credentials), and outside text (transport errors) is redacted first.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import structlog

from bridge_agent.errors import (
    ConfigError,
    InputError,
    Outcome,
    PlatformAmbiguous,
    PlatformAuthFailed,
    PlatformError,
    PlatformRejected,
    PlatformUnavailable,
    ProductNotFound,
    SafeHeaders,
)
from bridge_agent.inputs import read_limited
from bridge_agent.metrics import LATENCY_BUCKETS, Metrics
from bridge_agent.sync.retry import Backoff, parse_retry_after

if TYPE_CHECKING:
    from bridge_agent.config import StoreSettings
    from bridge_agent.platforms.base import Platform

__all__ = [
    "ATTEMPTS",
    "ERROR_BODY_BYTES",
    "IDEMPOTENT_METHODS",
    "MAX_REPLY_BYTES",
    "MAX_WAIT",
    "REQUESTS_METRIC",
    "REQUEST_SECONDS_METRIC",
    "Outcome",
    "PrioritySlots",
    "RepeatedTimeouts",
    "Reply",
    "ReplyTooLarge",
    "RequestBudget",
    "StoreHttp",
    "background_work",
    "build_platform",
    "classify",
    "declare_metrics",
    "error_for",
    "in_background",
    "live_work",
    "redact",
]

log = structlog.get_logger("bridge_agent.platforms.http")

T = TypeVar("T")

ATTEMPTS = 4
MAX_WAIT = 60.0  # longest Retry-After slept here; longer ones go to the caller
# A page of 100 products with long descriptions is a few MB; a reply past this is refused while
# it is read (never held whole).
MAX_REPLY_BYTES = 64 * 1024 * 1024
ERROR_BODY_BYTES = 64 * 1024  # of an error answer: the platform's code and message, and more
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
GATEWAY_TIMEOUTS = frozenset({504, 524})  # a proxy gave up waiting for the application
REQUESTS_METRIC = "bridge_store_requests_total"
REQUEST_SECONDS_METRIC = "bridge_store_request_duration_seconds"

# Transport errors raised before anything was sent: safe to retry whatever the method.
_UNSENT: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)
_RETRIED = frozenset({Outcome.RATE_LIMITED, Outcome.TRANSIENT})
_QUERY = re.compile(r"\?[^\s'\"]*")
_MASK = "********"


# -- outcomes --------------------------------------------------------------------------------------


def classify(
    status: int | None = None, *, error: BaseException | None = None, idempotent: bool = True
) -> Outcome:
    """What an answer `status` (or, without one, the transport `error`) means for the caller.

    The one place that decides: see the table in the module docstring. `idempotent` is whether
    the request may be sent again after an ambiguous failure.
    """
    if status is None:
        if error is not None and isinstance(error, _UNSENT):
            return Outcome.TRANSIENT  # nothing left this machine
        return Outcome.TRANSIENT if idempotent else Outcome.AMBIGUOUS
    if 200 <= status < 300:
        return Outcome.OK
    if 300 <= status < 400:
        return Outcome.REDIRECTED
    if status in (401, 403):
        return Outcome.AUTH
    if status == 404:
        return Outcome.NOT_FOUND
    if status == 409:
        return Outcome.CONFLICT
    if status == 429:
        return Outcome.RATE_LIMITED
    if status == 408:
        return Outcome.TRANSIENT  # the server did not get the whole request: nothing applied
    if status == 501 or 400 <= status < 500:
        return Outcome.PERMANENT  # 501: the server does not do this at all; asking again won't
    # 5xx, and garbage statuses (1xx, 6xx) from something in front of the store.
    return Outcome.TRANSIENT if idempotent else Outcome.AMBIGUOUS


def error_for(
    outcome: Outcome,
    message: str,
    *,
    status: int | None = None,
    headers: httpx.Headers | None = None,
    retry_after: float | None = None,
) -> PlatformError:
    """The default error class of an outcome, for adapters with nothing more precise to say."""
    fields: dict[str, Any] = {"status": status, "headers": headers, "outcome": outcome}
    if outcome is Outcome.AUTH:
        return PlatformAuthFailed(message, **fields)
    if outcome is Outcome.NOT_FOUND:
        return ProductNotFound(message, **fields)
    if outcome in (Outcome.PERMANENT, Outcome.CONFLICT):
        return PlatformRejected(message, **fields)
    if outcome is Outcome.AMBIGUOUS:
        return PlatformAmbiguous(message, **fields)
    return PlatformUnavailable(message, retry_after=retry_after, **fields)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Outside text made safe to show: no secret, no query string, one line of 200 characters."""
    for value in secrets:
        if value:
            text = text.replace(value, _MASK)
    text = _QUERY.sub("?…", text)
    return " ".join(text.split())[:200]


# -- budget ----------------------------------------------------------------------------------------

# Whether the requests of this task (and of the tasks it creates, which copy its context) are a
# run's background work. A ContextVar rather than a parameter: the run machinery marks its work
# once, and every adapter and client below it needs no new argument.
_BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "bridge_agent_background_work", default=False
)


@contextlib.contextmanager
def background_work() -> Iterator[None]:
    """Mark the store requests made inside (by this task and the tasks it creates meanwhile) as
    a run's background work: they yield to live work in the store's budget (`PrioritySlots`)."""
    token = _BACKGROUND.set(True)
    try:
        yield
    finally:
        _BACKGROUND.reset(token)


@contextlib.contextmanager
def live_work() -> Iterator[None]:
    """Mark the requests made inside as live even within a run: for a shared prerequisite that
    live work may be waiting for too (a category tree loaded under a lock), which must not wait
    behind the run's own queue while it holds that lock (a priority inversion)."""
    token = _BACKGROUND.set(False)
    try:
        yield
    finally:
        _BACKGROUND.reset(token)


def in_background() -> bool:
    """Whether the current task works in the background (inside `background_work()`)."""
    return _BACKGROUND.get()


class PrioritySlots:
    """A semaphore of `concurrency` slots that serves live work first: a freed slot goes to the
    longest-waiting live request, then to the longest-waiting background one (`in_background`),
    and background requests never hold more than `concurrency - 1` slots (all of them when there
    is only one), so a live request finds a slot at once unless other live ones hold them.

    `async with slots:` as with `asyncio.Semaphore` (so an adapter's own bound can be one), or
    `hold(background)`. A freed slot is handed to the waiter it wakes (counted as held before
    the waiter runs), so a newcomer can never take it first; a waiter cancelled after being
    handed a slot passes it on.
    """

    def __init__(self, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self.background_cap = concurrency - 1 if concurrency > 1 else 1
        self.held = 0
        self.background_held = 0
        self._live: deque[asyncio.Future[None]] = deque()
        self._background: deque[asyncio.Future[None]] = deque()

    @property
    def live_waiting(self) -> int:
        return len(self._live)

    @property
    def background_waiting(self) -> int:
        return len(self._background)

    async def __aenter__(self) -> None:
        await self.acquire(in_background())

    async def __aexit__(self, *exc: object) -> None:
        # The mark read at entry: `background_work()` blocks nest, so it is the same at exit.
        self.release(in_background())

    @contextlib.asynccontextmanager
    async def hold(self, background: bool) -> AsyncIterator[None]:
        await self.acquire(background)
        try:
            yield
        finally:
            self.release(background)

    async def acquire(self, background: bool) -> None:
        if self._free_for(background):
            self._take(background)
            return
        queue = self._background if background else self._live
        waiter = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(background)  # handed a slot as it was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # `_hand_on` may have dropped it
                    queue.remove(waiter)
                self._hand_on()  # it may have stood in front of one that can go now
            raise

    def release(self, background: bool) -> None:
        self.held -= 1
        if background:
            self.background_held -= 1
        self._hand_on()

    def _free_for(self, background: bool) -> bool:
        """Whether a newcomer may take a slot now without passing anyone it must let first."""
        if self.held >= self.concurrency or self._live:
            return False  # live waiters go first, for either kind
        if background:
            return self.background_held < self.background_cap and not self._background
        return True

    def _take(self, background: bool) -> None:
        self.held += 1
        if background:
            self.background_held += 1

    def _hand_on(self) -> None:
        while self.held < self.concurrency:
            if self._live:
                waiter, background = self._live.popleft(), False
            elif self._background and self.background_held < self.background_cap:
                waiter, background = self._background.popleft(), True
            else:
                return
            if waiter.done():
                continue  # cancelled while waiting: nothing to hand it
            self._take(background)
            waiter.set_result(None)


class RequestBudget:
    """How hard one store may be asked: `concurrency` requests in flight, `requests_per_second`
    started per second (0: no rate limit). One per store, shared by everything that talks to it.

    Pacing is GCRA (a token bucket of `burst` tokens refilled at the rate): each request reserves
    the next start time synchronously, then sleeps until it, so concurrent callers never race
    for a token and the order they asked in is kept. The pacing happens inside a concurrency
    slot, so freed slots cannot release a burst above the rate.

    Live work goes first (`PrioritySlots`; a run's requests are background, `background_work`):
    the rate and concurrency bound all requests together, a freed slot goes to live work first,
    and background work never holds the last slot. Because a start time is reserved only once a
    slot is held, background requests waiting for a slot reserve nothing: the start times ahead
    of a live request are at most those of the `concurrency - 1` background requests holding a
    slot, so it waits at most about `(concurrency - 1) / requests_per_second` for its start.
    `in_flight` counts requests started and not finished, `background_in_flight` those of them
    that are background work.
    """

    def __init__(
        self,
        concurrency: int = 4,
        requests_per_second: float = 0.0,
        *,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if requests_per_second < 0 or math.isnan(requests_per_second):
            raise ValueError("requests_per_second must be 0 (no limit) or more")
        self.concurrency = concurrency
        self.requests_per_second = requests_per_second
        self._interval = 1.0 / requests_per_second if requests_per_second > 0 else 0.0
        self._tolerance = (max(1.0, burst) - 1.0) * self._interval
        self._clock = clock
        self._sleep = sleep
        self.slots = PrioritySlots(concurrency)
        self._next = -math.inf  # when the next request may start at the earliest (GCRA's TAT)
        self.in_flight = 0
        self.background_in_flight = 0

    @classmethod
    def for_store(cls, store: StoreSettings) -> RequestBudget:
        """The budget a `[[stores]]` entry asks for (`concurrency`, `requests_per_second`)."""
        return cls(store.concurrency, store.requests_per_second)

    def __repr__(self) -> str:
        rate = f"{self.requests_per_second:g}/s" if self._interval else "no rate limit"
        return f"RequestBudget(concurrency={self.concurrency}, {rate})"

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one request's place: wait for a free slot (live work first), then for the
        request's start time."""
        background = in_background()
        async with self.slots.hold(background):
            await self._pace()  # only now, with the slot held: see the class docstring
            self.in_flight += 1
            self.background_in_flight += background
            try:
                yield
            finally:
                self.in_flight -= 1
                self.background_in_flight -= background

    async def _pace(self) -> None:
        if not self._interval:
            return
        now = self._clock()
        start = max(self._next, now)
        self._next = start + self._interval  # reserved before sleeping: no two take one start
        wait = start - now - self._tolerance
        if wait > 0:
            await self._sleep(wait)


# -- metrics ---------------------------------------------------------------------------------------


def declare_metrics(metrics: Metrics) -> None:
    """Declare the store request series (declaring twice is harmless)."""
    metrics.counter(REQUESTS_METRIC, "Requests sent to stores, by store, method and outcome.")
    metrics.histogram(
        REQUEST_SECONDS_METRIC,
        "Time from sending a request to a store to having read its answer, in seconds.",
        LATENCY_BUCKETS,
    )


# -- the layer -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer read within its size bound."""

    status: int
    headers: httpx.Headers
    content: bytes


class ReplyTooLarge(PlatformUnavailable):
    """A 2xx answer longer than `max_reply_bytes` (refused while read, never held whole); an
    adapter may ask again for less (fewer items per page)."""


class RepeatedTimeouts(PlatformUnavailable):
    """The request timed out (or its gateway answered 504/524) `timeouts_before_giving_up` times
    in a row; raised only when the caller asked for it, to ask again for less."""


class StoreHttp:
    """Requests to one store over an injected `httpx.AsyncClient` (the agent owns pools, timeouts
    and TLS), through the store's budget, counted in its metrics. Safe to share between tasks.

    `platform` and `host` name the store in messages ("WooCommerce at shop.example.com");
    `redact` makes outside text safe to show (the adapter knows its secrets).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        store: str,
        platform: str,
        host: str,
        budget: RequestBudget | None = None,
        metrics: Metrics | None = None,
        backoff: Backoff | None = None,
        attempts: int = ATTEMPTS,
        max_wait: float = MAX_WAIT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        redact: Callable[[str], str] = redact,
    ) -> None:
        self.http = http
        self.store = store
        self.platform = platform
        self.host = host
        self.budget = budget if budget is not None else RequestBudget()
        self.metrics = metrics
        if metrics is not None:
            declare_metrics(metrics)
        self.backoff = backoff or Backoff(base=0.5, cap=30.0)
        self.attempts = max(1, attempts)
        self.max_wait = max_wait
        self.max_reply_bytes = max_reply_bytes
        self._sleep = sleep
        self._monotonic = monotonic
        self._redact = redact

    def __repr__(self) -> str:
        return f"StoreHttp({self.store!r}, {self.platform} at {self.host}, {self.budget!r})"

    async def send(
        self,
        method: str,
        build: Callable[[], httpx.Request],
        *,
        where: str,
        read: Callable[[Reply], T],
        describe: Callable[[Reply], PlatformError] | None = None,
        idempotent: bool | None = None,
        timeouts_before_giving_up: int | None = None,
    ) -> T:
        """Send the `method` request `build()` makes, retry as its outcomes allow, and return
        `read(reply)` of the first 2xx answer. `build` is called for each try once the budget
        lets it go, so that signatures and timestamps are fresh however long it waited.

        `read` may raise a PlatformError for a body it cannot use (outcome `invalid` unless it
        says otherwise; not retried). `describe` turns a non-2xx answer into the adapter's own
        error (its message, and an `outcome` if the platform says more than the status, e.g. a
        400 that means "no such product"); without it, or for what it leaves unset, the status
        decides (`classify`, `error_for`). `idempotent` defaults to the method's nature.
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        timeouts = 0
        attempt = 0
        while True:
            try:
                reply, started = await self._exchange(method, build, where)
            except httpx.TransportError as exc:
                timed_out = isinstance(exc, httpx.TimeoutException)
                timeouts = timeouts + 1 if timed_out else 0
                outcome = classify(error=exc, idempotent=idempotent)
                failure = self._transport_failure(exc, outcome, where, method)
                self._count(method, outcome, None)
                if timeouts_before_giving_up and timeouts >= timeouts_before_giving_up:
                    raise RepeatedTimeouts(str(failure), outcome=outcome) from None
            else:
                elapsed = self._monotonic() - started
                result = self._outcome(reply, where, method, idempotent, read, describe)
                if not isinstance(result, PlatformError):
                    self._count(method, Outcome.OK, elapsed)
                    return result
                failure = result
                outcome = failure.outcome or Outcome.TRANSIENT  # always set by _outcome
                self._count(method, outcome, elapsed)
                gateway = reply.status in GATEWAY_TIMEOUTS
                timeouts = timeouts + 1 if gateway else 0
                if timeouts_before_giving_up and timeouts >= timeouts_before_giving_up:
                    raise RepeatedTimeouts(
                        str(failure), status=reply.status, headers=reply.headers, outcome=outcome
                    )
            attempt += 1
            retry_after = getattr(failure, "retry_after", None)
            if (
                failure.outcome not in _RETRIED
                or attempt >= self.attempts
                or (retry_after is not None and retry_after > self.max_wait)
            ):
                raise failure
            delay = self.backoff.delay(attempt - 1, retry_after=retry_after)
            log.info(
                "store_request_retry",
                store=self.store,
                request=where,
                attempt=attempt,
                delay_s=round(delay, 3),
                outcome=str(failure.outcome),
                reason=str(failure),
            )
            await self._sleep(delay)

    async def _exchange(
        self, method: str, build: Callable[[], httpx.Request], where: str
    ) -> tuple[Reply, float]:
        """One request inside the budget; the answer read within its bound. httpx errors pass
        through; a 2xx past `max_reply_bytes` raises ReplyTooLarge (counted as `invalid`)."""
        async with self.budget.slot():
            request = build()
            started = self._monotonic()
            response = await self.http.send(request, stream=True)
            try:
                success = response.is_success
                limit = self.max_reply_bytes if success else ERROR_BODY_BYTES
                try:
                    content = await read_limited(response, limit)
                except InputError:
                    if success:
                        self._count(method, Outcome.INVALID, self._monotonic() - started)
                        raise ReplyTooLarge(
                            f"{self.platform} at {self.host} answered {where} with more than "
                            f"{limit} bytes: ask for fewer items per page, or check what the "
                            "store sends",
                            status=response.status_code,
                            headers=response.headers,
                            outcome=Outcome.INVALID,
                        ) from None
                    content = b""  # an error page too long to read: its status says enough
            finally:
                await response.aclose()
        return Reply(response.status_code, response.headers, content), started

    def _outcome(
        self,
        reply: Reply,
        where: str,
        method: str,
        idempotent: bool,
        read: Callable[[Reply], T],
        describe: Callable[[Reply], PlatformError] | None,
    ) -> T | PlatformError:
        """`read(reply)` for a 2xx, else the error the answer means, with status, headers and
        outcome set (a transient failure of a write made ambiguous)."""
        outcome = classify(reply.status, idempotent=idempotent)
        if outcome is Outcome.OK:
            try:
                return read(reply)
            except PlatformError as exc:
                error = _attach(exc, reply, Outcome.INVALID)
                if not idempotent and error.outcome is Outcome.TRANSIENT:
                    # The store took the write and said something went wrong in a 2xx body (a
                    # GraphQL INTERNAL_SERVER_ERROR): it may have applied, so never resend it
                    # as is. A refinement that says nothing ran (RATE_LIMITED) stays retryable.
                    return _ambiguous(
                        str(error), method, status=reply.status, headers=reply.headers
                    )
                return error
        said = describe(reply) if describe is not None else None
        if said is None:
            said = error_for(
                classify(reply.status),  # as for a read: a write's ambiguity is added below
                f"{self.platform} answered {reply.status} to {where}",
                retry_after=parse_retry_after(reply.headers.get("Retry-After")),
            )
        error = _attach(said, reply, outcome)
        if outcome is Outcome.AMBIGUOUS and error.outcome is Outcome.TRANSIENT:
            error.outcome = Outcome.AMBIGUOUS  # a refinement cannot make a write safe to resend
        if error.outcome is Outcome.AMBIGUOUS and not isinstance(error, PlatformAmbiguous):
            error = _ambiguous(str(error), method, status=reply.status, headers=reply.headers)
        return error

    def _transport_failure(
        self, exc: httpx.TransportError, outcome: Outcome, where: str, method: str
    ) -> PlatformError:
        if isinstance(exc, httpx.TimeoutException):
            message = (
                f"{self.platform} at {self.host} did not answer {where} in time "
                f"({type(exc).__name__}): the store is slow or down"
            )
        else:
            detail = self._redact(str(exc)) or type(exc).__name__
            message = f"cannot reach {self.platform} at {self.host} for {where}: {detail}"
        if outcome is Outcome.AMBIGUOUS:
            return _ambiguous(message, method)
        return PlatformUnavailable(message, outcome=outcome)

    def _count(self, method: str, outcome: Outcome, elapsed: float | None) -> None:
        if self.metrics is None:
            return
        store, kind = self.store, str(outcome)
        self.metrics.inc(REQUESTS_METRIC, store=store, method=method, outcome=kind)
        if elapsed is not None:
            seconds = max(0.0, elapsed)
            self.metrics.observe(
                REQUEST_SECONDS_METRIC, seconds, store=store, method=method, outcome=kind
            )


def _attach(error: PlatformError, reply: Reply, outcome: Outcome) -> PlatformError:
    """Fill in what the answer says where the error does not say it already."""
    if error.status is None:
        error.status = reply.status
    if not error.headers:
        error.headers = SafeHeaders(reply.headers)
    if error.outcome is None:
        error.outcome = outcome
    if isinstance(error, PlatformUnavailable) and error.retry_after is None:
        error.retry_after = parse_retry_after(reply.headers.get("Retry-After"))
    return error


def _ambiguous(
    message: str, method: str, *, status: int | None = None, headers: httpx.Headers | None = None
) -> PlatformAmbiguous:
    return PlatformAmbiguous(
        f"{message}; the {method} may or may not have been applied, so it is not sent again: "
        "read the store's current values before deciding",
        status=status,
        headers=headers,
        outcome=Outcome.AMBIGUOUS,
    )


# -- construction ----------------------------------------------------------------------------------


def build_platform(
    factory: type[Platform],
    settings: StoreSettings,
    http: httpx.AsyncClient,
    *,
    budget: RequestBudget | None = None,
    metrics: Metrics | None = None,
) -> Platform:
    """`factory.from_settings(settings, http)`, handing it the store's budget and metrics when
    its `from_settings` takes them (adapters on this layer); an adapter without HTTP (jsondir)
    or written before this layer is built exactly as before."""
    accepts = inspect.signature(factory.from_settings).parameters
    keywords = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepts.values())
    extra: dict[str, Any] = {}
    if budget is not None and (keywords or "budget" in accepts):
        extra["budget"] = budget
    if metrics is not None and (keywords or "metrics" in accepts):
        extra["metrics"] = metrics
    try:
        return factory.from_settings(settings, http, **extra)
    except ConfigError:
        raise
    except Exception as exc:
        # An adapter (a plugin's, perhaps) that fails on its settings with anything else: still
        # a problem of this store's configuration for `validate` (exit 78) and a reload (kept
        # running on the old settings), never a traceback or a dead reloader.
        name = getattr(factory, "name", None) or factory.__name__
        problem = (
            f"[[stores]] {settings.id!r}: the {name} adapter could not be built from these"
            f" settings: {type(exc).__name__}: {exc}"
        )
        raise ConfigError([problem]) from exc
