"""The scope rule (`sync/scope.py`): each filter key alone, their combination, test mode.

Pure and fast: canonical products built here, no store, no state.
"""

from __future__ import annotations

import pytest

from bridge_agent.config import StoreFilters
from bridge_agent.model import Category, Product
from bridge_agent.sync.scope import Scope

TOPS = Category("c1", "Tops", ("Clothing", "Tops"))
SUMMER = Category("c7", "Summer", ("Clothing", "Tops", "Summer"))
MUGS = Category("c3", "Mugs", ("Home", "Kitchen", "Mugs"))


def product(
    status: str = "active",
    tags: tuple[str, ...] = (),
    categories: tuple[Category, ...] = (),
) -> Product:
    return Product(id="1", title="P", status=status, tags=tags, categories=categories)  # type: ignore[arg-type]


def admits(filters: StoreFilters, item: Product) -> str | None:
    return Scope.of(filters).admits(item)


def test_everything_admits_every_product() -> None:
    scope = Scope.everything()
    assert scope.is_everything and not scope.test_mode
    for status in ("active", "draft", "archived"):
        assert scope.admits(product(status, ("x",), (MUGS,))) is None
    assert scope.describe() == "every product"
    assert Scope.of(StoreFilters()) == scope


# (filters, product, expected reason or None): one key at a time.
CASES = [
    # status
    (StoreFilters(status=("active",)), product("active"), None),
    (StoreFilters(status=("active",)), product("draft"), "status draft is not in [active]"),
    (StoreFilters(status=("active", "draft")), product("draft"), None),
    (
        StoreFilters(status=("active", "draft")),
        product("archived"),
        "status archived is not in [active, draft]",
    ),
    # only_visible: canonical status active only
    (StoreFilters(only_visible=True), product("active"), None),
    (
        StoreFilters(only_visible=True),
        product("archived"),
        "status archived is not visible (only_visible)",
    ),
    (StoreFilters(only_visible=False), product("draft"), None),
    # categories by id, name, path; a branch admits its subcategories; case-insensitive
    (StoreFilters(categories=("c1",)), product(categories=(TOPS,)), None),
    (StoreFilters(categories=("tops",)), product(categories=(TOPS,)), None),
    (StoreFilters(categories=("Clothing",)), product(categories=(SUMMER,)), None),
    (StoreFilters(categories=("clothing / tops",)), product(categories=(SUMMER,)), None),
    (StoreFilters(categories=("Clothing/Tops",)), product(categories=(MUGS, TOPS)), None),
    (
        StoreFilters(categories=("Home/Tops",)),
        product(categories=(TOPS, MUGS)),
        "is in none of the categories [Home/Tops]",
    ),
    (
        StoreFilters(categories=("Tops",)),
        product(categories=(MUGS,)),
        "is in none of the categories [Tops]",
    ),
    (StoreFilters(categories=("Tops",)), product(), "is in none of the categories [Tops]"),
    # tags: any of them, case-insensitive
    (StoreFilters(tags=("Sale", "new")), product(tags=("NEW",)), None),
    (StoreFilters(tags=("sale",)), product(tags=("mug",)), "has none of the tags [sale]"),
    (StoreFilters(tags=("sale",)), product(), "has none of the tags [sale]"),
    # exclude_tags
    (StoreFilters(exclude_tags=("B2B",)), product(tags=("mug",)), None),
    (
        StoreFilters(exclude_tags=("b2b",)),
        product(tags=("mug", "B2B")),
        "has the excluded tag 'b2b'",
    ),
    # test mode
    (StoreFilters(test_tag="bridge-test"), product(tags=("Bridge-Test",)), None),
    (
        StoreFilters(test_tag="bridge-test"),
        product(tags=("mug",)),
        "has no tag 'bridge-test' (test mode)",
    ),
]


@pytest.mark.parametrize(("filters", "item", "reason"), CASES)
def test_each_key(filters: StoreFilters, item: Product, reason: str | None) -> None:
    assert admits(filters, item) == reason


COMBINED = StoreFilters(
    status=("active", "draft"),
    categories=("Clothing",),
    tags=("sale", "new"),
    exclude_tags=("b2b",),
    only_visible=True,
    test_tag="pilot",
)


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (product("active", ("pilot", "sale"), (TOPS,)), None),
        # test mode is judged first, whatever else fails too
        (product("draft", ("sale",), (MUGS,)), "has no tag 'pilot' (test mode)"),
        (
            product("archived", ("pilot", "sale"), (TOPS,)),
            "status archived is not in [active, draft]",
        ),
        (
            product("draft", ("pilot", "sale"), (TOPS,)),
            "status draft is not visible (only_visible)",
        ),
        (product("active", ("pilot", "sale", "B2B"), (TOPS,)), "has the excluded tag 'b2b'"),
        (product("active", ("pilot", "sale"), (MUGS,)), "is in none of the categories [Clothing]"),
        (product("active", ("pilot",), (TOPS,)), "has none of the tags [sale, new]"),
    ],
)
def test_keys_combine_with_and(item: Product, reason: str | None) -> None:
    assert admits(COMBINED, item) == reason


def test_test_mode_narrows_a_catalog_to_its_tagged_products() -> None:
    catalog = [product(tags=("pilot",) if i in (3, 8) else ("mug",)) for i in range(10)]
    scope = Scope.of(StoreFilters(test_tag="pilot"))
    assert scope.test_mode
    assert [i for i, p in enumerate(catalog) if scope.admits(p) is None] == [3, 8]


def test_describe_names_every_key() -> None:
    text = Scope.of(COMBINED).describe()
    assert text == (
        "test mode: only products tagged 'pilot'; status in [active, draft]; "
        "only visible (active); in categories [Clothing]; tagged any of [sale, new]; "
        "not tagged [b2b]"
    )
    assert Scope.of(StoreFilters(tags=("sale",))).describe() == "tagged any of [sale]"
