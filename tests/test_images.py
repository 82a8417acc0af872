"""Image URL checks of the import report, against a small image host on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from bridge_agent.config import StoreSettings
from bridge_agent.health import Health
from bridge_agent.metrics import Metrics
from bridge_agent.model import Image
from bridge_agent.platforms.jsondir import JsonDir
from bridge_agent.sources import StoreContext, images
from bridge_agent.sources.images import ImageChecker
from bridge_agent.sources.importer import Importer
from bridge_agent.store import StateStore
from bridge_agent.testing.catalog import make_product, write_product


@contextlib.asynccontextmanager
async def stalled_image_host() -> AsyncIterator[tuple[str, list[str]]]:
    """An image host that takes every request and answers none until the test ends."""
    seen: list[str] = []
    release = asyncio.Event()

    async def image(request: web.Request) -> web.Response:
        seen.append(request.match_info["name"])
        await release.wait()
        return web.Response(body=b"x", content_type="image/jpeg")

    app = web.Application()
    app.router.add_route("*", "/img/{name}", image)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/img/")), seen
    finally:
        release.set()
        await server.close()


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
        checker.submit([*urls, "data:image/png;base64,xx", "http://127.0.0.1:9/x.jpg"])
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
        checker.submit(f"https://cdn.example/{i}.jpg" for i in range(10))
        checker.submit(["https://cdn.example/9.jpg"])  # recent: not queued again
        assert len(checker._seen) == 3
        assert checker._queue.qsize() == 10
    finally:
        await checker.cancel()


async def test_a_slow_image_host_never_holds_up_the_checks_caller() -> None:
    async with stalled_image_host() as (base, seen):
        checker = ImageChecker(concurrency=2, queue_size=3)
        try:
            checker.submit(f"{base}{i}.jpg" for i in range(20))  # returns at once: never waits
            assert checker.report.not_checked >= 20 - 3 - 2  # the queue and the two workers
            report = await checker.finish(grace=0.2)
        finally:
            await checker.cancel()
    assert report.checked == 0
    assert report.not_checked == 20  # queued, in flight or refused: all counted, none lost
    assert len(seen) <= 5


async def _import(
    tmp_path: Path, base: str, **settings: object
) -> tuple[dict[str, object] | None, list[str]]:
    """Import 30 products whose main images live on `base`: (image report, event messages)."""
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    for i in range(1, 31):
        image = Image(id=f"img-{i}", src=f"{base}{i}.jpg", alt="")
        write_product(catalog, replace(make_product(i), images=(image,)))
    platform = JsonDir("main", catalog)
    store = replace(
        StoreSettings(
            id="main", platform="jsondir", url="http://127.0.0.1/",
            options={"catalog_dir": str(catalog)},
        ),
        **settings,
    )  # fmt: skip
    async with StateStore.open(tmp_path / "state") as state:
        ctx = StoreContext("main", platform, state, lambda: None, Metrics(), Health("store:main"))
        importer = Importer(
            ctx,
            store=store,
            build_platform=lambda s: contextlib.nullcontext(platform),
            images=lambda: ImageChecker(concurrency=2, queue_size=5),
        )
        await importer.start_first_import()
        (run,) = await state.open_runs("main")
        await asyncio.wait_for(importer.execute(run), 20)  # bounded by the grace, not the host
        finished = await state.last_run("main", "import")
        assert finished is not None and finished.report is not None
        assert await state.mirror_count("main") == 30  # every product recorded
        events = [e.message for e in await state.events(stores=["main"])]
    return finished.report["warnings"]["images"], events


async def test_image_checks_never_gate_an_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "FINISH_GRACE", 0.3)
    async with stalled_image_host() as (base, seen):
        report, events = await _import(tmp_path, base)
    assert report is not None
    assert (report["checked"], report["not_checked"]) == (0, 30)
    assert seen  # the checks did start, beside the import
    assert any("30 not checked (the image host was slower" in e for e in events)


async def test_image_checks_can_be_turned_off(tmp_path: Path) -> None:
    async with stalled_image_host() as (base, seen):
        report, events = await _import(tmp_path, base, image_checks=False)
    assert seen == []  # not one request to the image host
    assert report is None  # no image section in the run's report
    assert any("finished: 30 product(s)" in e and "image URL" not in e for e in events)
