"""Loop detection for listing walks: a repeated page token, or a page served twice, stops the walk.

Every walk over a store listing (the import's catalog, reconciliation's ids, a modified-since
poll, a product's variations) follows what the store says comes next: a page number up to
`X-WP-TotalPages`, a cursor, or "the page was full, ask for the next one". A store whose paging is
broken (a cache or security plugin that ignores `page`, a proxy that drops the query string, a
cursor that points back at itself) would keep such a walk going forever, each lap costing requests
against the store's budget and, for the import, writing the same products again. So a walk
remembers what it was served and stops with `PagingLoop` the moment it is served again:

- a **token** (a cursor, or whatever names the next page) it already followed;
- a **page** whose ids, in order, are those of a page already seen in the same walk (empty pages
  are exempt: a listing that shrank under the walk legitimately answers several of them).

A walk that legitimately starts over (a modified-since pass restarting from a later time) calls
`restart()`: what was seen before belongs to another window. Pages are remembered by a 16-byte
digest of their ids, so a walk over a million products holds a few hundred kilobytes at most.

Pure: no I/O, no clock; the adapter calls it with what it was served.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from bridge_agent.errors import PagingLoop

__all__ = ["PageGuard", "PagingLoop"]

_SEP = b"\x1f"  # unit separator: ids never contain it, so ("1", "23") and ("12", "3") differ
_SHOWN = 40  # characters of a token shown in the error


class PageGuard:
    """Remembers the tokens followed and the pages served in one walk; raises `PagingLoop`."""

    __slots__ = ("_pages", "_tokens", "what")

    def __init__(self, what: str) -> None:
        self.what = what  # names the walk in the error: "the catalog of store 'main'"
        self._tokens: set[str] = set()
        self._pages: dict[bytes, str] = {}  # digest of a page's ids -> the page's label

    def token(self, token: str) -> None:
        """Record that the walk follows `token` next; PagingLoop if it did before."""
        if token in self._tokens:
            shown = token if len(token) <= _SHOWN else token[:_SHOWN] + "…"
            raise PagingLoop(
                f"{self.what}: the store gave the page token {shown!r} a second time; its paging "
                "is broken, so the walk stops here instead of looping (try again later; if it "
                "persists, look for a cache or plugin in front of the store's API)"
            )
        self._tokens.add(token)

    def page(self, ids: Iterable[str], label: str) -> None:
        """Record a page served as `label` (e.g. "page 3") holding these ids, in order;
        PagingLoop if an earlier page of this walk held exactly the same ones."""
        digest = hashlib.blake2b(digest_size=16)
        count = 0
        for product_id in ids:
            digest.update(product_id.encode("utf-8", "surrogatepass"))
            digest.update(_SEP)
            count += 1
        if count == 0:
            return
        key = digest.digest()
        earlier = self._pages.get(key)
        if earlier is not None:
            raise PagingLoop(
                f"{self.what}: {label} holds the same {count} ids as {earlier}; the store ignores "
                "the page asked for (a cache, security plugin or proxy in front of its API?), so "
                "the walk stops here instead of looping"
            )
        self._pages[key] = label

    def restart(self) -> None:
        """The walk starts over on a new window: forget what the old one was served."""
        self._tokens.clear()
        self._pages.clear()
