"""A thin async client for the WooCommerce REST API (wc/v3) over an injected `httpx.AsyncClient`.

The client never creates its own `httpx.AsyncClient`: the agent owns connection pools, timeouts and
TLS verification (`verify_tls` is applied where the agent builds the client). Every request is
built with an absolute URL, `<store url><api_prefix><path>`, so a shared client with or without a
`base_url` works the same.

Authentication (WooCommerce docs, "Authentication"):

- over https: HTTP Basic, username = consumer key, password = consumer secret;
- over plain http WooCommerce refuses Basic auth, so each request is signed with one-legged
  OAuth 1.0a: `oauth_consumer_key`, `oauth_timestamp`, a 32-character `oauth_nonce`,
  `oauth_signature_method=HMAC-SHA256` and `oauth_signature` in the query string (no
  `oauth_version`); signing key = consumer secret + "&"; base string per RFC 5849 section 3.4.1
  from the method, the exact URL without query (so the store url must be WordPress's home URL,
  www and port included) and the sorted, percent-encoded parameters. The body is not signed.

Requests go through the shared store HTTP layer (`platforms/http.py`): it classifies every answer
into an outcome, retries what may be retried (429 honouring `Retry-After`, and 5xx, 408,
timeouts and resets for reads; a write is never resent after an ambiguous failure), spends the
store's request budget, counts the store request metrics and reads replies within their bound.
This client builds and signs the requests and says what WooCommerce's answers mean:

| answer | raised |
| --- | --- |
| 401 | `PlatformAuthFailed`: check consumer_key/consumer_secret |
| 403 | `PlatformAuthFailed`: the key needs read (or read_write for writes) permission |
| 404 `woocommerce_rest_product*_invalid_id`, 400 idem on PUT | `ProductNotFound` |
| other 404 (`rest_no_route`) | `PlatformUnavailable`: check url, api_prefix, permalinks |
| 3xx | `PlatformUnavailable`: the url is not the site's home URL |
| 413 | `WooRequestRejected`: a batch above the store's limit (100 items) |
| 429, 408, 5xx (not 501) | `PlatformUnavailable(retry_after=Retry-After)`, retried first |
| the same, or a timeout or reset, for a POST or PUT | `PlatformAmbiguous` (never resent) |
| timeouts, connection errors | `PlatformUnavailable`, retried here first |
| 2xx with a body that is not JSON | `PlatformUnavailable("invalid JSON from ...")` |
| any other 4xx (409: outcome `conflict`), 501 | `WooRequestRejected` (status and code) |

An error answered by an HTML page (a host, a WAF, a security plugin) names the page's first line
(its `<title>`) in the message, never the page itself.

Every error carries the answer's `status`, `headers` and `outcome` as attributes. Retries are
bounded: `attempts` tries (4) with full-jitter backoff that honours `Retry-After`; a Retry-After
longer than `max_wait` is not slept here but raised at once (`PlatformUnavailable.retry_after`)
for the caller's scheduler.

Listings and timeouts: large `per_page` values on image-heavy catalogs make PHP time out (a
documented WooCommerce pitfall). When a listing request times out twice in a row (or its gateway
answers 504/524), the client halves the largest page size it requests (never below
`MIN_PER_PAGE`) for the rest of its life and fetches the same items again in smaller requests;
`per_page` reports the effective size for product listings and a warning is logged
(`woocommerce_per_page_reduced`). Callers keep paging in their own fixed page unit
(`list_page(page_size=...)`), so resume tokens and page numbers do not change meaning when the
client shrinks.

No credential ever appears in an exception, a log line or a repr: messages are built from the
request's path (never its URL, which carries OAuth parameters over http), and any text that comes
from outside (transport errors, WooCommerce's own messages) is redacted first.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import re
import secrets
import string
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import structlog

from bridge_agent.errors import (
    InputError,
    Outcome,
    PlatformAuthFailed,
    PlatformError,
    PlatformRejected,
    PlatformUnavailable,
    ProductNotFound,
)
from bridge_agent.inputs import loads_json
from bridge_agent.metrics import Metrics
from bridge_agent.platforms import http as store_http
from bridge_agent.platforms.http import (
    ATTEMPTS,
    ERROR_BODY_BYTES,
    MAX_REPLY_BYTES,
    MAX_WAIT,
    RepeatedTimeouts,
    Reply,
    ReplyTooLarge,
    RequestBudget,
    StoreHttp,
    classify,
)
from bridge_agent.platforms.woocommerce.settings import MAX_PER_PAGE, WooSettings
from bridge_agent.sync.retry import Backoff

__all__ = [
    "ATTEMPTS",
    "MIN_PER_PAGE",
    "ListPage",
    "WooClient",
    "WooRequestRejected",
    "WooResponse",
    "oauth1_signature",
    "signature_base_string",
]

log = structlog.get_logger("bridge_agent.woocommerce")

TIMEOUTS_BEFORE_SHRINK = 2  # consecutive timeouts of one listing request before halving per_page
MIN_PER_PAGE = 5  # a listing whose replies exceed MAX_REPLY_BYTES also shrinks, down to this
# Plugins store nested arrays in product meta, which the API returns as JSON; this is deeper than
# any of them and far below what would exhaust the parser (about 1000).
REPLY_DEPTH = 100
_NONCE_ALPHABET = string.ascii_letters + string.digits

ParamValue = str | int | bool
Params = Mapping[str, ParamValue]


class WooRequestRejected(PlatformRejected):
    """WooCommerce refused this request for good (a 4xx other than auth or not-found); `code` is
    WooCommerce's own error code when it sent one."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        outcome: Outcome | None = None,
    ) -> None:
        super().__init__(message, status=status, headers=headers, outcome=outcome)
        self.status: int = status
        self.code = code


@dataclass(frozen=True, slots=True)
class WooResponse:
    """A successful answer: decoded JSON and the WordPress paging headers."""

    status: int
    data: Any
    total: int | None = None  # X-WP-Total
    total_pages: int | None = None  # X-WP-TotalPages


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a listing in the caller's page unit; totals as the store reported them."""

    items: list[dict[str, Any]]
    total: int | None
    total_pages: int | None  # in the caller's page unit (None if the store sent no totals)


class _ShrinkPage(Exception):
    """A listing request timed out repeatedly: retry the page with fewer items per request."""


def _nonce() -> str:
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(32))


class WooClient:
    """Requests to one store's wc/v3 API. Safe to share between concurrent tasks."""

    def __init__(
        self,
        settings: WooSettings,
        http: httpx.AsyncClient,
        *,
        backoff: Backoff | None = None,
        attempts: int = ATTEMPTS,
        max_wait: float = MAX_WAIT,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        nonce: Callable[[], str] = _nonce,
        max_reply_bytes: int = MAX_REPLY_BYTES,
        budget: RequestBudget | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._http = http
        self._clock = clock
        self._nonce = nonce
        self._cap = MAX_PER_PAGE  # largest request page size; halved after repeated timeouts
        self._host = urlsplit(settings.base_url).netloc
        #: The shared HTTP layer: outcomes, retries, the store's budget (a private one unless the
        #: agent gives the store's), metrics and bounded replies.
        self.layer = StoreHttp(
            http,
            store=settings.store_id,
            platform="WooCommerce",
            host=self._host,
            budget=budget if budget is not None else RequestBudget(settings.concurrency),
            metrics=metrics,
            backoff=backoff or Backoff(base=0.5, cap=30.0),
            attempts=attempts,
            max_wait=max_wait,
            sleep=sleep,
            max_reply_bytes=max_reply_bytes,
            redact=self._redact,
        )

    def __repr__(self) -> str:
        return f"WooClient({self._settings.api_base!r}, per_page={self.per_page})"

    @property
    def per_page(self) -> int:
        """The page size product listings use now: `settings.per_page`, or less after timeouts."""
        return min(self._cap, self._settings.per_page)

    # -- requests ---------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """Absolute URL of an API path such as `/products/12` (no query)."""
        return self._settings.api_base + path

    def build_request(
        self, method: str, path: str, params: Params | None = None, body: Any = None
    ) -> httpx.Request:
        """The signed request: Basic auth over https, OAuth 1.0a query parameters over http."""
        url = self.url(path)
        pairs = [(k, _param(v)) for k, v in (params or {}).items()]
        headers = {"Accept": "application/json"}
        key = self._settings.consumer_key.reveal()
        secret = self._settings.consumer_secret.reveal()
        if self._settings.uses_oauth:
            oauth = [
                ("oauth_consumer_key", key),
                ("oauth_nonce", self._nonce()),
                ("oauth_signature_method", "HMAC-SHA256"),
                ("oauth_timestamp", str(int(self._clock()))),
            ]
            signature = oauth1_signature(method, url, [*pairs, *oauth], secret)
            pairs = [*pairs, *oauth, ("oauth_signature", signature)]
        else:
            token = base64.b64encode(f"{key}:{secret}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in pairs)
        full = f"{url}?{query}" if query else url
        if body is None:
            return self._http.build_request(method, full, headers=headers)
        return self._http.build_request(method, full, headers=headers, json=body)

    async def get(self, path: str, params: Params | None = None) -> WooResponse:
        return await self._send("GET", path, _edit_context(params))

    async def post(self, path: str, body: Any, params: Params | None = None) -> WooResponse:
        return await self._send("POST", path, params, body)

    async def put(
        self, path: str, body: Any, params: Params | None = None, *, idempotent: bool = False
    ) -> WooResponse:
        """A PUT; `idempotent=True` when sending it twice does no more than once (setting a
        webhook's status), so that it may be retried after an ambiguous failure."""
        return await self._send("PUT", path, params, body, idempotent=idempotent)

    async def list_page(
        self, path: str, params: Params | None = None, *, page: int, page_size: int
    ) -> ListPage:
        """Page `page` (1-based) of a listing with `page_size` items per page.

        Fetched in one request at the effective `per_page`, or in several smaller requests once
        the client has shrunk (items outside the page are cut off), so the answer is the same.
        """
        if page < 1 or not 1 <= page_size <= MAX_PER_PAGE:
            raise ValueError(f"page {page} / page_size {page_size} out of range")
        while True:
            size = min(self._cap, page_size)
            try:
                return await self._list_range(path, _edit_context(params), page, page_size, size)
            except _ShrinkPage:
                self._shrink(size, path)

    async def _list_range(
        self, path: str, params: Params, page: int, page_size: int, size: int
    ) -> ListPage:
        shrinkable = size > MIN_PER_PAGE
        if size == page_size:
            response = await self._send(
                "GET", path, {**params, "page": page, "per_page": size}, shrinkable=shrinkable
            )
            pages = response.total_pages
            if pages is None and response.total is not None:
                pages = math.ceil(response.total / page_size)
            return ListPage(_items(response, path, self._host), response.total, pages)
        # Items [start, end) of the caller's page, fetched as pages of `size` items.
        start = (page - 1) * page_size
        end = start + page_size
        first = start // size + 1
        last = -(-end // size)
        items: list[dict[str, Any]] = []
        total: int | None = None
        for sub in range(first, last + 1):
            response = await self._send(
                "GET", path, {**params, "page": sub, "per_page": size}, shrinkable=shrinkable
            )
            chunk = _items(response, path, self._host)
            if total is None:
                total = response.total
            items.extend(chunk)
            if len(chunk) < size:
                break  # the end of the listing
        skip = start - (first - 1) * size
        pages = math.ceil(total / page_size) if total is not None else None
        return ListPage(items[skip : skip + page_size], total, pages)

    def _shrink(self, size: int, path: str) -> None:
        smaller = max(MIN_PER_PAGE, size // 2)
        if smaller < self._cap:
            log.warning(
                "woocommerce_per_page_reduced",
                store=self._settings.store_id,
                path=path,
                per_page=smaller,
                was=size,
                reason="listing requests timed out repeatedly",
            )
            self._cap = smaller

    async def _send(
        self,
        method: str,
        path: str,
        params: Params | None = None,
        body: Any = None,
        *,
        shrinkable: bool = False,
        idempotent: bool | None = None,
    ) -> WooResponse:
        where = f"{method} {self._settings.api_prefix}{path}"
        try:
            return await self.layer.send(
                method,
                lambda: self.build_request(method, path, params, body),  # fresh nonce each try
                where=where,
                read=lambda reply: self._response(reply, path),
                describe=lambda reply: self._error(reply, method, where),
                idempotent=idempotent,
                timeouts_before_giving_up=TIMEOUTS_BEFORE_SHRINK if shrinkable else None,
            )
        except (ReplyTooLarge, RepeatedTimeouts):
            if shrinkable:
                raise _ShrinkPage from None  # fewer products per request, smaller replies
            raise

    # -- answers ----------------------------------------------------------------------------------

    def _response(self, reply: Reply, path: str) -> WooResponse:
        return WooResponse(
            reply.status,
            _decode(reply, path, self._host),
            _int_header(reply, "X-WP-Total"),
            _int_header(reply, "X-WP-TotalPages"),
        )

    def _error(self, reply: Reply, method: str, where: str) -> PlatformError:
        """What a non-2xx answer means, in WooCommerce's words (the layer adds status, headers
        and the outcome the status implies; only "no such product" is refined here)."""
        status = reply.status
        code, message = _error_body(reply)
        said = f" (WooCommerce says: {self._redact(message)})" if message else ""
        page = _page_line(reply) if not code and not message else None
        if page:
            # A host, WAF or security plugin answered with its own page: its first line says who.
            said = f" (an HTML page answered, not WooCommerce: {self._redact(page)})"
        shown = f"{status} {code}" if code else str(status)
        if 300 <= status < 400:
            target = urlsplit(reply.headers.get("Location", ""))
            to = f" to {target.scheme}://{target.netloc}" if target.netloc else ""
            return PlatformUnavailable(
                f"WooCommerce redirected {where}{to} ({status}): set the store url to the site's "
                "home URL exactly as WordPress > Settings > General shows it (http/https, www)"
            )
        if status == 401:
            hint = (
                "; over plain http requests are signed (OAuth 1.0a): the url must be WordPress's "
                "home URL exactly and this machine's clock right within 15 minutes"
                if self._settings.uses_oauth
                else ""
            )
            return PlatformAuthFailed(
                f"WooCommerce refused the consumer key ({status} "
                f"{code or 'woocommerce_rest_cannot_view'}): check consumer_key/consumer_secret"
                f"{said}{hint}"
            )
        if status == 403:
            need = "read permission" if method == "GET" else "read_write permission for writes"
            return PlatformAuthFailed(
                f"WooCommerce refused {where} ({shown}): the key needs {need} "
                "(WooCommerce > Settings > Advanced > REST API), and its user the shop manager "
                f"or administrator role; a security plugin or WAF can also answer 403{said}"
            )
        if code and _INVALID_ID.fullmatch(code) and status in (400, 404):
            return ProductNotFound(
                f"WooCommerce has no such product: {where} ({shown})", outcome=Outcome.NOT_FOUND
            )
        if status == 404:
            what = "has no route for" if code == "rest_no_route" else "answered 404 to"
            return PlatformUnavailable(
                f"WooCommerce {what} {where} ({shown}): check the store url and api_prefix, and "
                "that WordPress permalinks are not 'Plain' (Settings > Permalinks)"
            )
        if status == 413:
            return WooRequestRejected(
                f"WooCommerce refused {where} as too large ({shown}): send batches of at most "
                f"100 items{said}",
                status=status,
                code=code,
            )
        if status == 429:
            return PlatformUnavailable(
                f"WooCommerce (or a proxy in front of it) is rate limiting {where} (429): "
                "lower concurrency if this persists"
            )
        if classify(status) is Outcome.TRANSIENT:
            return PlatformUnavailable(
                f"WooCommerce answered {shown} to {where}: the store or its host has a problem"
                f"{said}"
            )
        return WooRequestRejected(
            f"WooCommerce refused {where} ({shown}){said}", status=status, code=code
        )

    def _redact(self, text: str) -> str:
        """Outside text made safe to show: no credential, no query string, one short line."""
        keys = (self._settings.consumer_key, self._settings.consumer_secret)
        return store_http.redact(text, (k.reveal() for k in keys))


_INVALID_ID = re.compile(r"woocommerce_rest_product\w*_invalid_id")
_CODE = re.compile(r"[A-Za-z0-9_.:-]{1,80}")


def _decode(response: Reply, path: str, host: str) -> Any:
    try:
        return loads_json(
            response.content, max_bytes=len(response.content), max_depth=REPLY_DEPTH, what="it"
        )
    except InputError as exc:
        problem = str(exc)
    head = response.content[:200].lstrip()
    if head.startswith(b"<") and (b"{" in response.content or b"[" in response.content):
        hint = (
            "PHP printed notices before the JSON: set WP_DEBUG_DISPLAY to false, or fix the "
            "plugin that prints them"
        )
    elif head.startswith(b"<"):
        hint = (
            "an HTML page answered instead of the REST API: a security, maintenance or cache "
            "plugin, or a wrong url/api_prefix"
        )
    else:
        hint = problem
    kind = response.headers.get("Content-Type", "no content type").split(";")[0]
    raise PlatformUnavailable(
        f"invalid JSON from {host}{path} (HTTP {response.status}, {kind}): {hint}"
    )


def _items(response: WooResponse, path: str, host: str) -> list[dict[str, Any]]:
    data = response.data
    if not isinstance(data, list) or not all(isinstance(i, dict) for i in data):
        raise PlatformUnavailable(f"invalid JSON from {host}{path}: expected a list of objects")
    return data


def _error_body(response: Reply) -> tuple[str | None, str | None]:
    """WooCommerce's `{"code", "message"}` when the body is one; (None, None) otherwise."""
    try:
        data = loads_json(response.content, max_bytes=ERROR_BODY_BYTES, what="error body")
    except InputError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    code = data.get("code")
    message = data.get("message")
    return (
        code if isinstance(code, str) and _CODE.fullmatch(code) else None,
        message if isinstance(message, str) and message.strip() else None,
    )


_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


def _page_line(response: Reply) -> str | None:
    """The first line of an HTML error page (its title, else its first text), never the page."""
    head = response.content[:ERROR_BODY_BYTES]
    if not head.lstrip().startswith(b"<"):
        return None
    found = _TITLE.search(head)
    text = found.group(1) if found else head
    for raw in _TAG.sub("\n", text.decode("utf-8", "replace")).splitlines():
        line = " ".join(raw.split())
        if line:
            return line[:120]
    return None


def _int_header(response: Reply, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def _param(value: ParamValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _encode(text: str) -> str:
    """RFC 3986 percent-encoding: only unreserved characters stay (RFC 5849 section 3.6)."""
    return quote(text, safe="-._~")


def signature_base_string(method: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """RFC 5849 section 3.4.1: METHOD & encoded base URL & encoded sorted parameters."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = {"http": 80, "https": 443}.get(scheme)
    netloc = host if port is None or port == default else f"{host}:{port}"
    base = f"{scheme}://{netloc}{parts.path or '/'}"
    normalized = "&".join(
        f"{k}={v}" for k, v in sorted((_encode(k), _encode(v)) for k, v in params)
    )
    return "&".join((method.upper(), _encode(base), _encode(normalized)))


def oauth1_signature(
    method: str, url: str, params: Sequence[tuple[str, str]], consumer_secret: str
) -> str:
    """HMAC-SHA256 signature with the key `consumer_secret&` (one-legged: no token secret)."""
    key = f"{consumer_secret}&".encode()  # as WooCommerce computes it: the secret, unencoded
    base = signature_base_string(method, url, params).encode()
    return base64.b64encode(hmac.new(key, base, hashlib.sha256).digest()).decode("ascii")


def _edit_context(params: Params | None) -> Params:
    """Every read asks for `context=edit`: the values as stored, which is what a write sets.

    In the default `view` context WooCommerce renders `description` through `wpautop` and
    `do_shortcode` (and `short_description` through its filter): the hub would then optimise,
    and the conflict check compare, HTML the merchant never wrote, and a description written
    back would never read back equal. Listing and reading need only the `read` permission in
    either context, so a read-only key works the same.
    """
    return {"context": "edit", **(params or {})}
