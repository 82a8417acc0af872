"""Serve a simulator's aiohttp application on loopback until cancelled.

The caller learns the bound port twice: `bound(port)` first, to finish what depends on the
address (a site URL built into permalinks, a cache warmed before a benchmark measures), then
`ready(port)`, once the store answers as it will for the rest of the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from ssl import SSLContext

from aiohttp import web


async def serve_app(
    app: web.Application,
    host: str,
    port: int,
    *,
    bound: Callable[[int], None] | None = None,
    ready: Callable[[int], None] | None = None,
    ssl_context: SSLContext | None = None,
) -> None:
    """Serve until cancelled (port 0 picks a free port); the app's cleanup runs on the way out."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
        await site.start()
        actual = int(runner.addresses[0][1])
        if bound is not None:
            bound(actual)
        if ready is not None:
            ready(actual)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
