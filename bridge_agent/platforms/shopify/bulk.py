"""A bulk operation's JSONL result, assembled into products in bounded memory. Pure: no network.

The result of the bulk product query is one JSON object per line: each product (a root object,
no `__parentId`), and each of its variants and media on a line of its own with `"__parentId":
"<product GID>"`. From API 2026-01 (`groupObjects: false`) nothing says in which order: a child may
come before its product, and a product's children may be spread over the whole file. A product
is complete only when the file is.

So the result is read in two passes over a temporary file (`BulkSpool`):

1. while downloading, every line is appended to the spool file and indexed: the byte offset of
   each product's line, in file order, and for each product GID the offsets of its children's
   lines, whatever came first;
2. when the file is complete (`finish`), `products(skip)` reads back each product's line and its
   children's lines by offset and yields the product in the shape of the `ProductFields`
   selection (`variants.nodes` by `position`, `media.nodes` in file order), which `mapping.py`
   maps like any other.

A line repeated in the file (a retried write on Shopify's side) is used once: a product GID seen
before is not indexed again, and a child whose id its product already has is not attached again.
`lines` counts every line, repeated or not: the caller compares it with the operation's
`objectCount`, so a file that lost lines is downloaded again.

Memory: the objects themselves are never held, only the index: an 8-byte offset per line, the
GID of each product (to skip a repeated one), and a dictionary entry per product that has
children (its GID and a small array), about 300 bytes per product and 8 per child; a catalog of
100 000 products with 10 children each indexes in about 40 MB. The spool file holds the result
(a temporary file in `$TMPDIR`, or the directory given; deleted when closed).

A line that is not a JSON object, or a file whose last line has no end (a download cut short),
is an incomplete result: `BulkResultIncomplete`, and the caller downloads it again.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from collections.abc import Iterator
from typing import IO, Any

from bridge_agent.errors import InputError, PlatformUnavailable
from bridge_agent.inputs import loads_json

__all__ = ["BulkResultIncomplete", "BulkSpool"]

MAX_LINE_BYTES = 32 * 1024 * 1024
_DEPTH = 32
_MEDIA_KINDS = ("MediaImage", "Video", "ExternalVideo", "Model3d")


class BulkResultIncomplete(PlatformUnavailable):
    """The bulk result file is cut short or damaged: download it again."""


class BulkSpool:
    """The two-pass reader of one bulk result; a context manager (the spool file is removed)."""

    def __init__(self, directory: str | None = None) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115 - closed in close()
        self._roots = array("q")  # byte offsets of product lines, in file order
        self._children: dict[str, array[int]] = {}  # product GID -> offsets of child lines
        self._seen: set[str] = set()  # product GIDs indexed (a repeated line is skipped)
        self._size = 0
        self._ended = True  # whether the last line added ended with a newline
        self.lines = 0
        self.finished = False

    def __enter__(self) -> BulkSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    @property
    def products_count(self) -> int:
        return len(self._roots)

    def add(self, line: bytes, *, ended: bool = True) -> None:
        """One line of the file (without its newline); `ended` False for a last line that had
        none (a truncated download)."""
        if self.finished:
            raise ValueError("the spool is finished")
        stripped = line.strip()
        self._ended = ended
        if not stripped or not ended:
            return  # a line cut short is never used: `finish` refuses the file
        data = _object(stripped)
        parent = _parent_of(data)
        self.lines += 1
        if parent is None:
            root = str(data.get("id"))
            if root in self._seen:
                return  # the same product twice: read once
            self._seen.add(root)
        offset = self._size
        self._file.write(stripped + b"\n")
        self._size += len(stripped) + 1
        if parent is None:
            self._roots.append(offset)
        else:
            self._children.setdefault(parent, array("q")).append(offset)

    def finish(self) -> None:
        """The whole file was added: check it ended properly, then allow reading."""
        if not self._ended:
            raise BulkResultIncomplete(
                "the bulk operation's result file ends in the middle of a line: the download "
                "was cut short"
            )
        self._file.flush()
        self.finished = True

    def products(self, skip: int = 0) -> Iterator[dict[str, Any]]:
        """Each product with its children attached, in file order, after the first `skip`."""
        if not self.finished:
            raise ValueError("the bulk result is not complete yet")
        for offset in self._roots[skip:]:
            product = self._read(offset)
            variants: list[dict[str, Any]] = []
            media: list[dict[str, Any]] = []
            attached: set[str] = set()
            for child_offset in self._children.get(str(product.get("id")), ()):
                child = self._read(child_offset)
                child_id = child.get("id")
                if isinstance(child_id, str):
                    if child_id in attached:
                        continue  # the same child twice: attached once
                    attached.add(child_id)
                kind = _gid_kind(child_id)
                if kind == "ProductVariant":
                    variants.append(child)
                elif kind in _MEDIA_KINDS:
                    media.append(child)
                # Anything else (a media node of a kind the query did not select: `{}`) is
                # not part of the product's fields.
            variants.sort(key=_position)
            product["variants"] = {"nodes": variants}
            product["media"] = {"nodes": media}
            yield product

    def _read(self, offset: int) -> dict[str, Any]:
        self._file.seek(offset, os.SEEK_SET)
        line = self._file.readline(MAX_LINE_BYTES + 1)
        return _object(line)


def _parent_of(data: dict[str, Any]) -> str | None:
    """The `__parentId` of a line's object (None for a root object)."""
    parent = data.get("__parentId")
    if parent is None:
        return None
    if not isinstance(parent, str):
        raise BulkResultIncomplete("a line of the bulk result has a __parentId that is not a GID")
    return parent


def _object(line: bytes) -> dict[str, Any]:
    try:
        data = loads_json(line, max_bytes=MAX_LINE_BYTES, max_depth=_DEPTH, what="a line")
    except InputError as exc:
        raise BulkResultIncomplete(f"the bulk operation's result file is damaged: {exc}") from None
    if not isinstance(data, dict):
        raise BulkResultIncomplete("a line of the bulk result is not a JSON object")
    return data


def _gid_kind(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith("gid://shopify/"):
        return value[len("gid://shopify/") :].split("/", 1)[0]
    return None


def _position(node: dict[str, Any]) -> int:
    value = node.get("position")
    return value if isinstance(value, int) and not isinstance(value, bool) else 1 << 30
