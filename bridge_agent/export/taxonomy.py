"""Google's product taxonomy: a store category -> `google_product_category` id, when known.

The file beside this module is Google's `taxonomy-with-ids.en-US.txt` (version 2021-09-21, the
latest Google published; provenance in docs/export.md), one `ID - Path > Sub > Leaf` per line.

A category is mapped only when the match is certain, because a wrong category is worse for a
feed than none (Google then infers one itself): the product's category path, compared without
case, must be the whole taxonomy path or its tail (`Clothing > Outerwear` is the tail of
`Apparel & Accessories > Clothing > Outerwear`), and exactly one taxonomy entry may fit. A
store's own names (`Sale`, `New in`) fit nothing and are left out.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from importlib import resources

from bridge_agent.model import Category

FILE = "taxonomy-with-ids.en-US.txt"


@cache
def _index() -> dict[str, list[tuple[int, tuple[str, ...]]]]:
    """Leaf name (casefolded) -> [(id, path casefolded)]."""
    index: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
    text = resources.files(__package__).joinpath(FILE).read_text(encoding="utf-8")
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        number, _, path = line.partition(" - ")
        parts = tuple(p.strip().casefold() for p in path.split(" > "))
        index.setdefault(parts[-1], []).append((int(number), parts))
    return index


def category_id(path: Iterable[str]) -> int | None:
    """The taxonomy id whose path is, or ends with, `path` when exactly one does."""
    wanted = tuple(p.strip().casefold() for p in path if p.strip())
    if not wanted:
        return None
    fits = [
        (number, parts)
        for number, parts in _index().get(wanted[-1], ())
        if parts[-len(wanted) :] == wanted
    ]
    exact = [number for number, parts in fits if parts == wanted]
    if exact:
        return exact[0]
    return fits[0][0] if len(fits) == 1 else None


def google_category(categories: Iterable[Category]) -> int | None:
    """The first of the product's categories that maps (the store's first is its main one)."""
    for category in categories:
        found = category_id(category.path or (category.name,))
        if found is not None:
            return found
    return None


def path_of(number: int) -> str | None:
    """The taxonomy path of an id, as Google writes it (for tests and reports)."""
    text = resources.files(__package__).joinpath(FILE).read_text(encoding="utf-8")
    prefix = f"{number} - "
    for line in text.splitlines():
        if line.startswith(prefix):
            return line[len(prefix) :]
    return None
