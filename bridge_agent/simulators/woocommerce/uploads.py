"""`/wp-content/uploads/...`: the image files product JSON points at (platforms.md 1.4 `images`).

The agent's import report checks that image URLs answer and are not oversized, so the simulator
serves them: a file's size and availability are derived from its path (the same on every run),
with a few broken links and a few oversized originals, as in real media libraries:
- about 3% answer 404 (a deleted attachment whose URL stayed in the product);
- about 3% are 2.5-4 MB (an unresized camera original);
- the rest are 40-400 KB.
GET sends that many bytes (zeros, typed `image/jpeg`); HEAD sends the headers only.
"""

from __future__ import annotations

import hashlib

from aiohttp import web

MISSING_PER_MILLE = 30
OVERSIZED_PER_MILLE = 30


def upload_size(path: str) -> int | None:
    """The size of the file at `path`, or None for a broken link."""
    roll = int.from_bytes(hashlib.blake2b(path.encode(), digest_size=4).digest(), "big")
    per_mille = roll % 1000
    if per_mille < MISSING_PER_MILLE:
        return None
    if per_mille < MISSING_PER_MILLE + OVERSIZED_PER_MILLE:
        return 2_500_000 + roll % 1_500_000
    return 40_000 + roll % 360_000


async def upload(request: web.Request) -> web.StreamResponse:
    size = upload_size(request.path)
    if size is None:
        raise web.HTTPNotFound(text="Not Found")
    headers = {"Content-Type": "image/jpeg", "Content-Length": str(size)}
    if request.method == "HEAD":
        return web.Response(headers=headers)
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    chunk = bytes(65536)
    left = size
    while left > 0:
        await response.write(chunk[: min(left, len(chunk))])
        left -= len(chunk)
    await response.write_eof()
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/wp-content/uploads/{tail:.+}", upload)  # aiohttp adds HEAD for GET
