"""Image URL checks of the import report, against a small image host on loopback."""

from __future__ import annotations

import httpx
from aiohttp import web
from aiohttp.test_utils import TestServer

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
    async with httpx.AsyncClient() as http:
        checker = ImageChecker(http, concurrency=2)
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
