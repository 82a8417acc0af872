"""The subset of Shopify's search syntax the `products(query:)` / `productVariants(query:)`
arguments accept here (reference/platforms.md 2.4, 2.6).

Terms are separated by spaces or `AND` (both mean "and"); a term is `field:value`,
`field:>value`, `field:>=value`, `field:<value`, `field:<=value`, optionally negated with a
leading `-` or `NOT`; values may be quoted with `'` or `"`; `status:active,draft` matches any of
the listed values. A bare word matches the title (case-insensitive substring). Fields:
`updated_at`, `created_at` (ISO 8601, compared to the second, as Shopify's are), `status`,
`sku`, `barcode`, `tag`, `id` (numeric), `handle`, `title`, `vendor`, `product_type`,
`inventory_item_id` (variants). An unknown field matches nothing, as Shopify's search does.
`OR` is not supported (refused by `SearchError`), so a test never silently gets "and".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from bridge_agent.simulators.core.clock import parse_instant

Predicate = Callable[[dict[str, Any]], bool]

_TOKEN = re.compile(r"""-?[\w.]+:(?:[<>]=?)?(?:'[^']*'|"[^"]*"|\S+)|'[^']*'|"[^"]*"|\S+""")
_TERM = re.compile(r"^(-?)([\w.]+):([<>]=?)?(.*)$", re.S)


class SearchError(ValueError):
    """A query string this simulator cannot evaluate."""


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == ">":
        return bool(left > right)
    if op == ">=":
        return bool(left >= right)
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    return bool(left == right)


def _instant(value: str) -> int:
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        value += "T00:00:00Z"  # a date alone is its midnight UTC
    parsed = parse_instant(value)
    if parsed is None:
        raise SearchError(f"not a date: {value!r}")
    seconds, zone = parsed
    return seconds - (zone or 0)


def compile_query(
    query: str | None, fields: dict[str, Callable[[dict[str, Any]], Any]]
) -> Predicate:
    """A predicate over records for `query`; `fields` reads one search field from a record
    (a list value matches when any element matches)."""
    if not query or not query.strip():
        return lambda _: True
    predicates: list[Predicate] = []
    negate_next = False
    for word in _TOKEN.findall(query):
        if word == "AND":
            continue
        if word == "OR":
            raise SearchError("OR is not supported by the simulator")
        if word == "NOT":
            negate_next = True
            continue
        predicate = _term(word, fields)
        if negate_next:
            predicate = _negated(predicate)
            negate_next = False
        predicates.append(predicate)
    return lambda record: all(p(record) for p in predicates)


def _negated(predicate: Predicate) -> Predicate:
    return lambda record: not predicate(record)


def _term(token: str, fields: dict[str, Callable[[dict[str, Any]], Any]]) -> Predicate:
    m = _TERM.match(token)
    if m is None:
        word = _unquote(token).lower()
        title = fields.get("title")
        return lambda record: title is not None and word in str(title(record)).lower()
    negated, name, op, raw = m.group(1) == "-", m.group(2), m.group(3) or "", _unquote(m.group(4))
    read = fields.get(name)
    if read is None:
        predicate: Predicate = lambda _: False  # noqa: E731 - Shopify matches nothing
    elif name in ("updated_at", "created_at"):
        bound = _instant(raw)
        predicate = lambda record: _compare(op, read(record), bound)  # noqa: E731
    elif name in ("id", "inventory_item_id"):
        try:
            number = int(raw.rsplit("/", 1)[-1])
        except ValueError:
            raise SearchError(f"not an id: {raw!r}") from None
        predicate = lambda record: _compare(op, read(record), number)  # noqa: E731
    else:
        wanted = {v.lower() for v in raw.split(",")} if name == "status" else {raw.lower()}

        def predicate(record: dict[str, Any]) -> bool:
            value = read(record)
            values = value if isinstance(value, list | tuple) else [value]
            return any(v is not None and str(v).lower() in wanted for v in values)

    return _negated(predicate) if negated else predicate
