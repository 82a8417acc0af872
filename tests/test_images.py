"""Image URL checks of the import report, against a small image host on loopback."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge_agent.sources import images
from bridge_agent.sources.images import ImageChecker


async def test_image_checks_find_broken_and_oversized_images() -> None:
    async def image(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name == "gone.jpg":
            raise web.HTTPNotFound
        if name == "nohead.jpg" and request.method == "HEAD":
            raise web.HTTPMethodNotAllowed("HEAD", ["GET"])
        size = 3_000_000 if name == "huge.jpg" else 10_000
        return web.Response(body=bytes(size), content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/img/{name}", image)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("/img/"))
    checker = ImageChecker(concurrency=2)
    try:
        urls = [base + n for n in ("ok.jpg", "gone.jpg", "huge.jpg", "nohead.jpg", "ok.jpg")]
        await checker.submit([*urls, "data:image/png;base64,xx", "http://127.0.0.1:9/x.jpg"])
        report = await checker.finish()
    finally:
        await checker.cancel()
        await server.close()
    assert report.checked == 5  # duplicates once, non-http skipped
    assert (report.unreachable, report.oversized) == (2, 1)
    problems = {e["url"].rsplit("/", 1)[-1]: e["problem"] for e in report.examples}
    assert problems["gone.jpg"] == "HTTP 404"
    assert problems["huge.jpg"].startswith("2.9 MB")
    assert problems["x.jpg"].startswith("cannot connect")
    assert "nohead.jpg" not in problems  # HEAD refused, GET's headers were fine


async def test_dedupe_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "REMEMBERED", 3)
    checker = ImageChecker(concurrency=1, queue_size=100)
    for worker in checker._workers:  # no network: only the bookkeeping is under test
        worker.cancel()
    try:
        await checker.submit(f"https://cdn.example/{i}.jpg" for i in range(10))
        await checker.submit(["https://cdn.example/9.jpg"])  # recent: not queued again
        assert len(checker._seen) == 3
        assert checker._queue.qsize() == 10
    finally:
        await checker.cancel()
