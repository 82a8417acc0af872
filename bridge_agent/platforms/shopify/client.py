"""A GraphQL client for one shop's Admin API, over the shared store HTTP layer and cost bucket.

Every request is `POST {url}/admin/api/{api_version}/graphql.json` with the JSON body `{"query",
"variables", "operationName"}` and the header `X-Shopify-Access-Token`. The client never creates
its own `httpx.AsyncClient` (the agent owns pools, timeouts and TLS), and sends through
`platforms/http.py`: the store's request budget (live work first), retries of transport errors,
429 and 5xx for queries (a mutation that failed ambiguously is never resent), bounded replies and
the store request metrics. Before each request it waits for the points the query will ask for in
the store's modelled cost bucket (`throttle.py`), and records the bucket every answer reports, so
Shopify never has to answer `THROTTLED` once one answer has been seen. The cost a document asks
for is the `requestedQueryCost` Shopify reported for its last run with variables of the same
shape, else `queries.requested_cost`.

What Shopify's answers mean:

| answer | raised |
| --- | --- |
| 401 | `PlatformAuthFailed`: the access token is wrong or the app was uninstalled |
| 403 | `PlatformAuthFailed`: the app lacks a scope, or the shop refuses the app |
| 402 (shop frozen: unpaid), 423 (shop locked) | `PlatformUnavailable` (retry in an hour) |
| 404 | `PlatformUnavailable`: no Admin API there (url or api_version wrong) |
| 3xx | `PlatformUnavailable`: the url is not the shop's admin origin |
| 429, 5xx, timeouts, resets | retried here (queries), then `PlatformUnavailable` |
| 200, `errors[].extensions.code` `THROTTLED` | wait (requested - available) / restoreRate; retry |
| (a query asking more than the bucket's maximum) | `PlatformUnavailable` at once (`throttle.py`) |
| 200 with `MAX_COST_EXCEEDED` | `ShopifyQueryError` (a bug of this adapter; never retried) |
| 200 with `ACCESS_DENIED` | `PlatformAuthFailed`: the app lacks the scope the message names |
| 200 with `INTERNAL_SERVER_ERROR` | `PlatformUnavailable` (try again later) |
| 200 with other `errors` | `ShopifyQueryError` with Shopify's message |
| 2xx that is not a JSON object | `PlatformUnavailable("invalid JSON ...")` |

`userErrors` of a mutation are the caller's to read (they name one input each). No credential
ever appears in a message, log line or repr: requests are named by the endpoint's path and the
operation, and outside text is redacted (the token masked) first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import httpx
import structlog
from graphql import OperationDefinitionNode

from bridge_agent.errors import (
    InputError,
    Outcome,
    PlatformAuthFailed,
    PlatformError,
    PlatformRejected,
    PlatformUnavailable,
)
from bridge_agent.inputs import loads_json
from bridge_agent.metrics import Metrics
from bridge_agent.platforms import http as store_http
from bridge_agent.platforms.http import ERROR_BODY_BYTES, Reply, RequestBudget, StoreHttp
from bridge_agent.platforms.shopify import queries
from bridge_agent.platforms.shopify.settings import ShopifySettings
from bridge_agent.platforms.shopify.throttle import CostBucket, ThrottleStatus

__all__ = ["FROZEN_RETRY_AFTER", "THROTTLE_ATTEMPTS", "ShopifyClient", "ShopifyQueryError"]

log = structlog.get_logger("bridge_agent.shopify")

THROTTLE_ATTEMPTS = 6  # THROTTLED answers to one request before giving up for now
FROZEN_RETRY_AFTER = 3600.0  # a frozen or locked shop: ask again in an hour
REPLY_DEPTH = 64  # GraphQL answers nest as deep as the query: ours are shallow
MAX_LINE_BYTES = 32 * 1024 * 1024  # one JSONL object of a bulk result (a huge description)


class ShopifyQueryError(PlatformRejected):
    """Shopify refused a document of this adapter (`errors` in a 200 answer): a bug here, or a
    schema change of the API version; never retried. `code` is `extensions.code` if given."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, status=200, outcome=Outcome.PERMANENT)
        self.code = code


class ShopifyClient:
    """GraphQL requests to one shop; safe to share between tasks."""

    def __init__(
        self,
        settings: ShopifySettings,
        http: httpx.AsyncClient,
        *,
        budget: RequestBudget | None = None,
        metrics: Metrics | None = None,
        bucket: CostBucket | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        layer: StoreHttp | None = None,
    ) -> None:
        self.settings = settings
        self.http = http
        self.bucket = (
            bucket if bucket is not None else CostBucket(sleep=sleep, store=settings.store_id)
        )
        self.layer = layer or StoreHttp(
            http,
            store=settings.store_id,
            platform="Shopify",
            host=settings.host,
            budget=budget,
            metrics=metrics,
            redact=self._redact,
        )
        self._sleep = sleep
        self._costs: dict[tuple[str, tuple[tuple[str, int], ...]], float] = {}
        self.throttled = 0  # THROTTLED answers received (the model should keep this at 0)
        self.points_requested = 0.0

    def __repr__(self) -> str:
        return f"ShopifyClient({self.settings.store_id!r}, {self.settings.host}, {self.bucket!r})"

    async def query(
        self, document: str, variables: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Run a query (safe to send again) and return its `data`."""
        return await self._execute(document, variables or {}, mutation=False)

    async def mutate(self, document: str, variables: Mapping[str, Any]) -> dict[str, Any]:
        """Run a mutation (never resent after an ambiguous failure) and return its `data`."""
        return await self._execute(document, variables, mutation=True)

    async def _execute(
        self, document: str, variables: Mapping[str, Any], *, mutation: bool
    ) -> dict[str, Any]:
        name = operation_name(document)
        where = f"POST {self.settings.api_path} ({name})"
        key = (document, _shape(variables))
        body = {"query": document, "variables": dict(variables), "operationName": name}
        for _ in range(THROTTLE_ATTEMPTS):
            cost = self._costs.get(key) or float(queries.requested_cost(document, variables))
            sent = await self.bucket.acquire(cost)
            try:
                answer = await self.layer.send(
                    "POST",
                    lambda: self._build(body),
                    where=where,
                    read=lambda reply: self._decode(reply, where),
                    describe=lambda reply: self._error(reply, where),
                    idempotent=not mutation,
                )
            finally:
                self.bucket.release(cost)
            extensions = answer.get("extensions")
            status = ThrottleStatus.parse(extensions)
            if status is not None:
                self.bucket.observe(status, sent)
            requested = _requested(extensions)
            if requested is not None:
                self._costs[key] = requested
                self.points_requested += requested
            errors = answer.get("errors")
            if errors:
                code, message = _first_error(errors)
                if code == "THROTTLED":
                    self.throttled += 1
                    wait = self.bucket.throttled_wait(requested or cost, status)
                    log.warning(
                        "shopify_throttled",
                        store=self.settings.store_id,
                        operation=name,
                        requested=requested or cost,
                        wait_s=round(wait, 2),
                    )
                    await self._sleep(wait)
                    continue
                raise self._graphql_error(code, message, where, mutation=mutation)
            data = answer.get("data")
            if not isinstance(data, dict):
                raise PlatformUnavailable(
                    f"invalid JSON from Shopify at {self.settings.host} for {where}: no data",
                    status=200,
                    outcome=Outcome.INVALID,
                )
            return data
        raise PlatformUnavailable(
            f"Shopify at {self.settings.host} kept answering THROTTLED to {where} "
            f"({THROTTLE_ATTEMPTS} tries): another app of this shop may be spending its points",
            status=200,
            outcome=Outcome.RATE_LIMITED,
            retry_after=60.0,
        )

    def _build(self, body: Mapping[str, Any]) -> httpx.Request:
        headers = {
            "X-Shopify-Access-Token": self.settings.access_token.reveal(),
            "Accept": "application/json",
        }
        return self.http.build_request("POST", self.settings.endpoint, headers=headers, json=body)

    # -- the bulk result file --------------------------------------------------------------------

    async def download_lines(self, url: str) -> AsyncIterator[tuple[bytes, bool]]:
        """The lines of a bulk operation's result file, streamed (never held whole), each with
        whether it ended with a newline (only a last line may not: a file cut short).

        The URL is a signed storage address, not the Admin API: no access token goes with it,
        and it never appears in a message (its query string is the signature).
        """
        what = "the bulk operation's result file"
        try:
            async with self.http.stream("GET", url) as response:
                if response.status_code in (403, 404, 410):
                    raise BulkResultExpired(
                        f"{what} is no longer there ({response.status_code}): its URL expired",
                        status=response.status_code,
                    )
                if not response.is_success:
                    outcome = store_http.classify(response.status_code)
                    raise store_http.error_for(
                        outcome,
                        f"Shopify's storage answered {response.status_code} for {what}",
                        status=response.status_code,
                    )
                buffer = bytearray()
                async for chunk in response.aiter_bytes():
                    buffer += chunk
                    while True:
                        end = buffer.find(b"\n")
                        if end < 0:
                            break
                        yield bytes(buffer[:end]), True
                        del buffer[: end + 1]
                    if len(buffer) > MAX_LINE_BYTES:
                        raise PlatformUnavailable(
                            f"{what} has a line longer than {MAX_LINE_BYTES} bytes",
                            outcome=Outcome.INVALID,
                        )
                if buffer:
                    yield bytes(buffer), False  # a last line without its newline
        except httpx.TransportError as exc:
            raise PlatformUnavailable(
                f"the download of {what} from {self.settings.host}'s storage failed: "
                f"{type(exc).__name__}: {self._redact(str(exc))}",
                outcome=Outcome.TRANSIENT,
            ) from None

    # -- answers ----------------------------------------------------------------------------------

    def _decode(self, reply: Reply, where: str) -> dict[str, Any]:
        try:
            data = loads_json(
                reply.content, max_bytes=len(reply.content), max_depth=REPLY_DEPTH, what="it"
            )
        except InputError as exc:
            kind = reply.headers.get("Content-Type", "no content type").split(";")[0]
            raise PlatformUnavailable(
                f"invalid JSON from Shopify at {self.settings.host} for {where} "
                f"(HTTP {reply.status}, {kind}): {exc}"
            ) from None
        if not isinstance(data, dict):
            raise PlatformUnavailable(
                f"invalid JSON from Shopify at {self.settings.host} for {where}: not an object"
            )
        return data

    def _error(self, reply: Reply, where: str) -> PlatformError:
        """What a non-2xx answer means, in Shopify's words (the layer adds status, headers and
        the outcome the status implies)."""
        status = reply.status
        said = _error_text(reply)
        says = f" (Shopify says: {self._redact(said)})" if said else ""
        host = self.settings.host
        if 300 <= status < 400:
            return PlatformUnavailable(
                f"Shopify redirected {where} ({status}): set the store url to the shop's admin "
                f"origin, https://<shop>.myshopify.com, not its storefront domain"
            )
        if status == 401:
            return PlatformAuthFailed(
                f"Shopify at {host} refused the access token (401){says}: check access_token "
                "(the custom app's Admin API access token, shpat_...) and that the app is still "
                "installed"
            )
        if status == 403:
            return PlatformAuthFailed(
                f"Shopify at {host} refused {where} (403){says}: the app needs the scopes "
                "read_products and read_inventory (Settings > Apps > Develop apps > the app > "
                "Configuration), then reinstall it"
            )
        if status in (402, 423):
            why = (
                "is frozen (402 Payment Required: the shop's bills are unpaid)"
                if status == 402
                else "is locked (423 Locked: Shopify locked it, e.g. for a review)"
            )
            return PlatformUnavailable(
                f"the shop at {host} {why}; its API answers again once the owner settles it "
                "with Shopify. The store is tried again in an hour",
                retry_after=FROZEN_RETRY_AFTER,
                outcome=Outcome.TRANSIENT,
            )
        if status == 404:
            return PlatformUnavailable(
                f"Shopify at {host} has no Admin API at {self.settings.api_path} (404){says}: "
                "check the store url and api_version"
            )
        if status == 429:
            return PlatformUnavailable(f"Shopify at {host} is rate limiting {where} (429)")
        if status >= 500 or status == 408:
            return PlatformUnavailable(
                f"Shopify at {host} answered {status} to {where}: Shopify has a problem{says}"
            )
        return PlatformRejected(f"Shopify at {host} refused {where} ({status}){says}")

    def _graphql_error(
        self, code: str | None, message: str, where: str, *, mutation: bool
    ) -> PlatformError:
        said = self._redact(message) or "no message"
        if code == "MAX_COST_EXCEEDED":
            return ShopifyQueryError(
                f"Shopify refused {where} as too costly ({said}): a bug of bridge-agent's "
                "Shopify adapter (its queries are kept under 1000 points); please report it",
                code=code,
            )
        if code == "ACCESS_DENIED":
            return PlatformAuthFailed(
                f"Shopify denied {where} ({said}): the app lacks a scope it needs (read_products,"
                " read_inventory); add it to the custom app and reinstall",
                status=200,
            )
        if code in ("INTERNAL_SERVER_ERROR", "SERVICE_UNAVAILABLE", "TIMEOUT"):
            outcome = Outcome.AMBIGUOUS if mutation else Outcome.TRANSIENT
            return PlatformUnavailable(
                f"Shopify failed {where} ({code}: {said}); tried again later",
                status=200,
                outcome=outcome,
            )
        shown = f"{code}: {said}" if code else said
        return ShopifyQueryError(f"Shopify refused {where} ({shown})", code=code)

    def _redact(self, text: str) -> str:
        return store_http.redact(text, (self.settings.access_token.reveal(),))


class BulkResultExpired(PlatformUnavailable):
    """The bulk result file's URL no longer serves it (it expires 7 days after the operation)."""


def operation_name(document: str) -> str:
    """The name of the document's operation (every document of `queries.py` names one)."""
    for definition in queries.parsed(document).definitions:
        if isinstance(definition, OperationDefinitionNode) and definition.name is not None:
            return definition.name.value
    raise ValueError("a document without a named operation")


def _shape(variables: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    """What of the variables changes a document's cost: numbers, and the length of lists."""
    shape: list[tuple[str, int]] = []
    for name, value in sorted(variables.items()):
        if isinstance(value, int) and not isinstance(value, bool):
            shape.append((name, value))
        elif isinstance(value, list | tuple):
            shape.append((name, len(value)))
    return tuple(shape)


def _requested(extensions: Any) -> float | None:
    if not isinstance(extensions, Mapping):
        return None
    cost = extensions.get("cost")
    value = cost.get("requestedQueryCost") if isinstance(cost, Mapping) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def _first_error(errors: Any) -> tuple[str | None, str]:
    """(`extensions.code`, message) of the first error; THROTTLED wins if any error says it."""
    if not isinstance(errors, list):
        return None, str(errors)[:200]
    first: tuple[str | None, str] | None = None
    for error in errors:
        if not isinstance(error, Mapping):
            continue
        extensions = error.get("extensions")
        code = extensions.get("code") if isinstance(extensions, Mapping) else None
        code = code if isinstance(code, str) else None
        message = error.get("message")
        found = (code, message if isinstance(message, str) else "")
        if code == "THROTTLED":
            return found
        if first is None:
            first = found
    return first or (None, "")


def _error_text(reply: Reply) -> str | None:
    """Shopify's `{"errors": "..."}` (or a list of messages) in an error answer."""
    try:
        data = loads_json(reply.content, max_bytes=ERROR_BODY_BYTES, what="error body")
    except InputError:
        return None
    errors = data.get("errors") if isinstance(data, dict) else None
    if isinstance(errors, str):
        return errors
    if isinstance(errors, list):
        messages = [e.get("message") for e in errors if isinstance(e, dict)]
        return "; ".join(m for m in messages if isinstance(m, str)) or None
    return None
