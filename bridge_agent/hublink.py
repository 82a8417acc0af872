"""The link to the hub: hub protocol v1 over HTTP, and what its answers mean for the agent.

`HubClient` is the one place that talks to the hub: the shipper posts batches through it, repair
runs page through the hub's hashes with it, verification sweeps post their markers with it
(`post_verified`: None from a hub without the route), and the downstream direction reads the
optimisation feed and reports results through it. It
maps every answer onto the error tree (`errors.py`), so its callers decide on kinds, never on
statuses:

- 200: the body, read within a size bound (see `HubClient`); a body that is not protocol v1 is
  `HubUnavailable`, like an outage: retried with backoff;
- 401/403: `HubAuthFailed` (the token is wrong: retrying every second helps nobody);
- 400/413/422: `HubRejected` (this payload will never be taken as it is);
- anything else, a connection error or a timeout: `HubUnavailable`, with the hub's
  `Retry-After` when it gave one, so the caller waits at least that long.

The token goes only into the `Authorization` header, never into a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

import httpx

from bridge_agent import wire
from bridge_agent.errors import HubAuthFailed, HubRejected, HubUnavailable, InputError, WireError
from bridge_agent.inputs import read_limited
from bridge_agent.sync.retry import parse_retry_after

BATCHES_PATH = "/v1/batches"
HASHES_PATH = "/v1/stores/{store}/hashes"
FEED_PATH = "/v1/stores/{store}/optimizations"
RESULTS_PATH = "/v1/stores/{store}/optimizations/results"
VERIFIED_PATH = "/v1/stores/{store}/verified"
# A reply carries one short result per item; a few MB is already a broken or hostile hub.
MAX_REPLY_BYTES = 8 * 1024 * 1024
ERROR_BODY_BYTES = 64 * 1024  # of an error page, enough for its message


class HubClient:
    """Talks hub protocol v1 over one `httpx.AsyncClient` and maps answers onto the error tree.

    Every reply is read as a stream and refused past `max_reply_bytes`: a hub (or a proxy in front
    of it) that answers with hundreds of megabytes costs the agent at most that much memory, and
    the round fails like any other garbage reply (retried with backoff).
    """

    def __init__(
        self, http: httpx.AsyncClient, token: str, *, max_reply_bytes: int = MAX_REPLY_BYTES
    ) -> None:
        self._http = http
        auth = f"Bearer {token}"
        self._post_headers = {"Authorization": auth, "Content-Type": wire.CONTENT_TYPE}
        self._get_headers = {"Authorization": auth, "Accept": wire.CONTENT_TYPE}
        self._max_reply = max_reply_bytes

    async def send(self, body: bytes) -> tuple[wire.Result, ...]:
        """Post one encoded batch; the hub's result per item."""
        reply = await self.request("POST", BATCHES_PATH, content=body)
        try:
            return wire.decode_results(reply)
        except WireError as exc:
            raise HubUnavailable(f"hub reply is not protocol v1: {exc}", status=200) from None

    async def hashes(
        self, store: str, after: str = "", limit: int = wire.HASH_PAGE_DEFAULT
    ) -> wire.HashPage:
        """One page of the ids and hashes the hub holds for `store`, after `after` (repair runs).

        A page that does not move forward (an id not after `after`, more items than asked) is a
        hub that ignores the parameters: paging on it would never end, so it is refused.
        """
        reply = await self.request(
            "GET",
            HASHES_PATH.format(store=quote(store, safe="")),
            params={"after": after, "limit": str(limit)},
        )
        try:
            page = wire.decode_hash_page(reply)
        except WireError as exc:
            raise HubUnavailable(f"hub reply is not protocol v1: {exc}", status=200) from None
        if len(page.items) > limit or (page.items and page.items[0].id <= after):
            raise HubUnavailable(
                "hub reply is not protocol v1: the hashes page ignores after/limit", status=200
            )
        return page

    async def optimizations(
        self, store: str, after: str, *, wait: float = 0.0
    ) -> wire.OptimizationFeed:
        """One page of the downstream feed after `after` (long poll up to `wait` seconds: the
        request may take that much longer than the client's timeout).

        The page's items are decoded one by one (`wire.decode_feed`): a malformed one comes back
        in `refused`, and only an unusable envelope is HubUnavailable."""
        reply = await self.request(
            "GET",
            FEED_PATH.format(store=quote(store, safe="")),
            params={"after": after, "wait": f"{wait:g}"},
            extra_time=wait,
        )
        try:
            return wire.decode_feed(reply)
        except WireError as exc:
            raise HubUnavailable(f"hub reply is not protocol v1: {exc}", status=200) from None

    async def post_optimization_results(
        self, store: str, results: Sequence[wire.OptimizationResult]
    ) -> None:
        """Report what became of optimisations; returns once the hub has stored them.

        Only a protocol v1 answer is an acknowledgement: a 200 with anything else (an HTML page
        from a proxy, a captive portal, a wrong `[hub] url`) is HubUnavailable, so the results
        stay in the journal and go again. A 413 is HubRejected (the caller posts fewer)."""
        reply = await self.request(
            "POST",
            RESULTS_PATH.format(store=quote(store, safe="")),
            content=wire.encode_optimization_results(results),
        )
        try:
            wire.decode_results_ack(reply)
        except WireError as exc:
            raise HubUnavailable(f"hub reply is not protocol v1: {exc}", status=200) from None

    async def post_verified(
        self, store: str, items: Sequence[tuple[str, str]], verified_at: int, *, agent: str
    ) -> wire.VerifiedReply | None:
        """Post verification markers, (product id, content hash) pairs read from the store at
        `verified_at` (epoch ms), at most `wire.VERIFIED_MAX_ITEMS` of them.

        The reply says how many the hub confirmed and which ids it does not hold with that hash
        (send those in full). None when the hub does not know markers (404 or 405: a hub older
        than the extension); every other failure raises as for batches. A reply that names an
        id not sent, or confirms more than was sent, is not protocol v1 (HubUnavailable).
        """
        if len(items) > wire.VERIFIED_MAX_ITEMS:
            raise ValueError(f"{len(items)} markers: at most {wire.VERIFIED_MAX_ITEMS} a request")
        try:
            reply = await self.request(
                "POST",
                VERIFIED_PATH.format(store=quote(store, safe="")),
                content=wire.encode_verified(agent, verified_at, items),
            )
        except HubUnavailable as exc:
            if exc.status in (404, 405):
                return None
            raise
        try:
            answer = wire.decode_verified_reply(reply)
        except WireError as exc:
            raise HubUnavailable(f"hub reply is not protocol v1: {exc}", status=200) from None
        if answer.verified > len(items) or not answer.mismatched <= {pid for pid, _ in items}:
            raise HubUnavailable(
                "hub reply is not protocol v1: the verified answer does not match the markers",
                status=200,
            )
        return answer

    async def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        extra_time: float = 0.0,
    ) -> bytes:
        """One request; the body of a 200 answer, read within the size bound.

        Raises HubUnavailable (connection, timeout, 5xx, 429, 404, an oversized or cut reply),
        HubAuthFailed (401/403) or HubRejected (400/413/422).
        """
        headers = self._get_headers if content is None else self._post_headers
        timeout: httpx.Timeout | None = None
        if extra_time > 0:  # a long poll: the read may wait that long before a byte comes
            base = self._http.timeout
            timeout = httpx.Timeout(
                base.connect, read=(base.read or 0.0) + extra_time, write=base.write, pool=base.pool
            )
        try:
            async with self._http.stream(
                method,
                path,
                content=content,
                params=params,
                headers=headers,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            ) as response:
                status = response.status_code
                limit = self._max_reply if status == 200 else ERROR_BODY_BYTES
                try:
                    reply = await read_limited(response, limit, what="hub reply")
                except InputError as exc:
                    if status == 200:
                        raise HubUnavailable(f"{exc}: not protocol v1", status=200) from None
                    reply = b""  # an error page too long to show: the status says enough
        except httpx.TimeoutException:
            raise HubUnavailable("hub did not answer in time") from None
        except httpx.HTTPError as exc:
            raise HubUnavailable(f"cannot reach the hub: {type(exc).__name__}: {exc}") from None
        if status == 200:
            return reply
        detail = _short(reply.decode("utf-8", "replace"))
        if status in (401, 403):
            raise HubAuthFailed(
                f"hub refused the agent token ({status}): check [hub] token", status=status
            )
        if status in (400, 413, 422):
            raise HubRejected(f"hub refused the request ({status}): {detail}", status=status)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status == 404:
            detail = f"no {path} at this address: check [hub] url"
        raise HubUnavailable(
            f"hub answered {status}: {detail}", status=status, retry_after=retry_after
        )


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
