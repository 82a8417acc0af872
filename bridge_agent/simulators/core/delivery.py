"""Webhook transport for simulated stores: delayed deliveries, loopback-only POSTs, drain, close.

A store delivers webhooks from a background job some time after the change, so deliveries for
different records arrive out of order; `Courier.later` runs a delivery job after a wait, from a
task it owns, so `drain` (a test's "the store has sent everything") and `close` (the server's
cleanup) see every job. What a job sends, when it retries and what a failure does to the
subscription are the platform's rules and stay in the platform's simulator; a retry or a
duplicate is one more `later`.

Deliberately different from a real store: deliveries only go to loopback hosts (the simulator
must never post to the internet, whatever a test registers); any other host is refused and
reported as a failed attempt.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp

REFUSED = "refused: the simulator only delivers to loopback addresses"


def signature(body: bytes, secret: str) -> str:
    """base64(HMAC-SHA256(body, secret)): WooCommerce's and Shopify's webhook signature."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Courier:
    """Delivery jobs in flight and the HTTP session they post with."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def later(self, wait: float, job: Callable[[], Awaitable[None]]) -> None:
        """Run `job` after `wait` seconds, in a task drained and closed with the courier.

        Must be called from the running loop.
        """

        async def run() -> None:
            await asyncio.sleep(wait)
            await job()

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def post(
        self, url: str, body: bytes, headers: dict[str, str], limit: float
    ) -> tuple[int | None, str]:
        """POST without following redirects: (status, "") or (None, why the attempt failed)."""
        if not is_loopback(url):
            return None, REFUSED
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=limit),
            ) as resp:
                await resp.read()
                return resp.status, ""
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}"

    async def drain(self) -> None:
        """Wait until every job, including jobs queued by the jobs, has run."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()
            self._session = None
