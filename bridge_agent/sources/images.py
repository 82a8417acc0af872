"""Image URL checks for the import report: does each image answer, and is it at most 2 MB?

Search engines and the hub fetch product images; a broken link or a camera original of several
megabytes is worth a warning in the import report (Connectif and Sales Layer both flag them). The
check is a HEAD request (a GET whose body is not read when the server refuses HEAD), with bounded
concurrency and a short timeout, so a slow image host cannot stall anything.

The checks never gate the import: products reach the hub at the pace of the store API. `submit`
never waits (a URL that finds the queue full is counted as not checked rather than slowing the
page walk), and at the end of the run the importer waits for the checks still queued only up to
`FINISH_GRACE`; what is left then is counted as not checked. Measured against an image host that
answers in 50 ms, a blocking queue had 9 319 HEADs inside a 10 000-product import (80 s for a
store-request floor of 26 s). A store turns the checks off with `image_checks = false`. Only each
product's main image is checked: it is the one search engines and feeds show, and checking every
gallery image would multiply the requests to the image host.

The results are warnings, not state: checks still running when the agent stops are simply not
counted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiohttp

MAX_IMAGE_BYTES = 2 * 1024 * 1024
EXAMPLES = 20  # problems listed by URL in the report; the rest are counted
# URLs remembered to check each once. Bounded (most recent first) so memory does not grow with
# the catalog: the few images shared by products far apart in the listing are checked twice.
REMEMBERED = 10_000
QUEUE_SIZE = 10_000  # URLs waiting for a check (about 1 MB); beyond it they are not checked
FINISH_GRACE = 30.0  # seconds the end of a run waits for the checks still queued


@dataclass
class ImageReport:
    checked: int = 0
    unreachable: int = 0
    oversized: int = 0
    not_checked: int = 0  # the image host was slower than the import: left out, not waited for
    examples: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "checked": self.checked,
            "unreachable": self.unreachable,
            "oversized": self.oversized,
            "not_checked": self.not_checked,
            "examples": list(self.examples),
        }


class ImageChecker:
    """Checks image URLs with a few workers; `report` fills in as checks finish.

    Memory stays bounded whatever the catalog size: URLs wait in a bounded queue (a URL that finds
    it full is counted as not checked: the import never waits for the image host), and only the
    last REMEMBERED URLs are kept for de-duplication.

    aiohttp, not httpx, makes these requests: a HEAD costs about a millisecond of CPU in httpx
    and a fifth of that in aiohttp (bench/import.py), and there are more image checks than REST
    requests in an import.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        concurrency: int = 8,
        max_bytes: int = MAX_IMAGE_BYTES,
        timeout: float = 10.0,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self._own_session = session is None
        self._session = session or aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout),
            headers={"User-Agent": "bridge-agent image check"},
        )
        self._max_bytes = max_bytes
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self._workers = [asyncio.create_task(self._work()) for _ in range(concurrency)]
        self.report = ImageReport()

    def submit(self, urls: Iterable[str]) -> None:
        """Queue these URLs for checking (each URL once per run); never waits."""
        for url in urls:
            if not url.startswith(("http://", "https://")):
                continue
            if url in self._seen:
                self._seen.move_to_end(url)
                continue
            self._seen[url] = None
            if len(self._seen) > REMEMBERED:
                self._seen.popitem(last=False)
            try:
                self._queue.put_nowait(url)
            except asyncio.QueueFull:
                self.report.not_checked += 1

    async def finish(self, grace: float | None = None) -> ImageReport:
        """Wait until every queued URL is checked, or `grace` seconds; the rest are not checked.

        The checks in flight when the grace ends count as not checked too (the workers stop)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), FINISH_GRACE if grace is None else grace)
        await self._stop()
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
            self.report.not_checked += 1
        return self.report

    async def _stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    async def cancel(self) -> None:
        """Stop the workers (and close the session this checker opened)."""
        await self._stop()
        if self._own_session:
            await self._session.close()

    async def _work(self) -> None:
        while True:
            url = await self._queue.get()
            try:
                await self._check(url)
            except asyncio.CancelledError:
                self.report.not_checked += 1  # cut off in flight (the grace ended, or a stop)
                raise
            finally:
                self._queue.task_done()

    async def _check(self, url: str) -> None:
        problem = await self._probe(url)
        report = self.report
        report.checked += 1
        if problem is None:
            return
        kind, detail = problem
        if kind == "oversized":
            report.oversized += 1
        else:
            report.unreachable += 1
        if len(report.examples) < EXAMPLES:
            report.examples.append({"url": url, "problem": detail})

    async def _probe(self, url: str) -> tuple[str, str] | None:
        try:
            async with self._session.head(url, allow_redirects=True) as response:
                status, length = response.status, response.headers.get("Content-Length", "")
            if status in (405, 501):  # HEAD refused: the headers of a GET, body not read
                async with self._session.get(url, allow_redirects=True) as response:
                    status, length = response.status, response.headers.get("Content-Length", "")
        except TimeoutError:
            return "unreachable", "no answer within the timeout"
        except aiohttp.ClientError as exc:
            return "unreachable", f"cannot connect ({type(exc).__name__})"
        if status >= 400:
            return "unreachable", f"HTTP {status}"
        if length.isdigit() and int(length) > self._max_bytes:
            return "oversized", f"{int(length) / 1048576:.1f} MB (over 2 MB)"
        return None
