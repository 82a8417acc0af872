"""Which products of a store the agent syncs: the filters and test mode (Sales Layer rules 10-12).

A `Scope` is the rule a store's `[stores.filters]` (`config.StoreFilters`) describes, ready to
judge one product: `admits(product)` is None for a product in scope, else a short reason an
operator can read in the event log ("status draft is not in [active]"). Pure: it looks only at
the canonical product, so every adapter gets the same rule and the status mapping each adapter
documents (visible, draft, invisible -> active, draft, archived) is all a status filter needs.

Why the rules hold:

- **Every key narrows.** Keys combine with AND, the entries of one list with OR: adding a key
  can only make the scope smaller, so trying a filter is never a surprise at the hub.
- **Test mode wins.** With `test_tag`, only products carrying that tag sync, whatever the other
  keys admit (rule 12: start with a handful of tagged products, then widen). Its reason comes
  first so the log says why a product is out in the words of the mode the operator chose.
- **Names compare case-insensitively** (`casefold`): stores differ in how they capitalise tags
  and categories, and an operator types them from memory.
- **A category entry matches by id, name or path, subcategories included**: `"Clothing"`
  admits a product filed only under Clothing/Tops, `"Clothing/Tops"` one under
  Clothing/Tops/Summer. Stores file products under their leaf category, while an operator
  thinks of the branch.
- **Deletions are not judged here**: a product that is gone has no status or tags; what to do
  about a product that *left* the scope is the caller's (`sources/filtering.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge_agent.config.settings import StoreFilters
from bridge_agent.model import Category, Product

__all__ = ["PATH_SEPARATOR", "Scope"]

PATH_SEPARATOR = "/"  # a category path in a filter: "Clothing/Tops"


def _fold(text: str) -> str:
    return text.strip().casefold()


def _path(text: str) -> tuple[str, ...]:
    return tuple(_fold(part) for part in text.split(PATH_SEPARATOR) if part.strip())


def _listed(values: tuple[str, ...]) -> str:
    return f"[{', '.join(values)}]"


@dataclass(frozen=True, slots=True)
class Scope:
    """The products one store syncs. Build with `Scope.of(filters)` or `Scope.everything()`."""

    filters: StoreFilters
    _statuses: frozenset[str]
    _categories: frozenset[str]  # ids and names, folded
    _category_paths: tuple[tuple[str, ...], ...]  # entries with a separator, folded
    _tags: frozenset[str]
    _excluded: frozenset[str]
    _test_tag: str | None

    @classmethod
    def of(cls, filters: StoreFilters) -> Scope:
        return cls(
            filters=filters,
            _statuses=frozenset(filters.status),
            _categories=frozenset(_fold(c) for c in filters.categories),
            _category_paths=tuple(p for c in filters.categories if len(p := _path(c)) > 1),
            _tags=frozenset(_fold(t) for t in filters.tags),
            _excluded=frozenset(_fold(t) for t in filters.exclude_tags),
            _test_tag=None if filters.test_tag is None else _fold(filters.test_tag),
        )

    @classmethod
    def everything(cls) -> Scope:
        """The scope without filters: every product."""
        return cls.of(StoreFilters())

    @property
    def is_everything(self) -> bool:
        return self.filters.admits_everything

    @property
    def test_mode(self) -> bool:
        return self._test_tag is not None

    def admits(self, product: Product) -> str | None:
        """None when the product is in scope, else why not (one short sentence, the first
        failing key in the order of the module docstring)."""
        f = self.filters
        tags = {_fold(t) for t in product.tags}
        if self._test_tag is not None and self._test_tag not in tags:
            return f"has no tag '{f.test_tag}' (test mode)"
        if self._statuses and product.status not in self._statuses:
            return f"status {product.status} is not in {_listed(f.status)}"
        if f.only_visible and product.status != "active":
            return f"status {product.status} is not visible (only_visible)"
        for tag in f.exclude_tags:
            if _fold(tag) in tags:
                return f"has the excluded tag '{tag}'"
        if f.categories and not any(self._category_matches(c) for c in product.categories):
            return f"is in none of the categories {_listed(f.categories)}"
        if self._tags and not self._tags & tags:
            return f"has none of the tags {_listed(f.tags)}"
        return None

    def _category_matches(self, category: Category) -> bool:
        path = tuple(_fold(p) for p in category.path)
        if _fold(category.id) in self._categories or _fold(category.name) in self._categories:
            return True
        # A one-name entry names a branch wherever it is: the category or one of its parents.
        if not self._categories.isdisjoint(path):
            return True
        return any(path[: len(wanted)] == wanted for wanted in self._category_paths)

    def describe(self) -> str:
        """The scope in one line, for `status` and the logs."""
        f = self.filters
        if self.is_everything:
            return "every product"
        parts: list[str] = []
        if f.test_tag is not None:
            parts.append(f"test mode: only products tagged '{f.test_tag}'")
        if f.status:
            parts.append(f"status in {_listed(f.status)}")
        if f.only_visible:
            parts.append("only visible (active)")
        if f.categories:
            parts.append(f"in categories {_listed(f.categories)}")
        if f.tags:
            parts.append(f"tagged any of {_listed(f.tags)}")
        if f.exclude_tags:
            parts.append(f"not tagged {_listed(f.exclude_tags)}")
        return "; ".join(parts)
