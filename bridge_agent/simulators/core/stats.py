"""Requests a simulated store answered, by route and status: what a test or benchmark counts.

Counted in the outermost middleware, so every answer is seen, whatever produced it (the route, a
platform error, an injected fault, the control API). The route is the router's pattern
(`GET /wp-json/wc/v3/products/{id}`), so ids do not explode the table; an unrouted request
counts under its path.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler


class RequestStats:
    """A counter of (route, status); `middleware` is the aiohttp middleware that fills it."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, int]] = Counter()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = f"{request.method} {resource.canonical if resource else request.path}"
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.counts[(route, status)] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def doc(self) -> dict[str, Any]:
        """`{"requests": {route: {status: n}}, "requests_total": n}` for `/__sim/stats`."""
        by_route: dict[str, dict[str, int]] = {}
        for (route, status), n in sorted(self.counts.items()):
            by_route.setdefault(route, {})[str(status)] = n
        return {"requests": by_route, "requests_total": self.total}
