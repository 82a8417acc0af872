"""Process metrics in Prometheus text format: a few counters and gauges, nothing more.

Naming follows Prometheus practice (anchors.md E.6): one `bridge_` prefix, base units (seconds,
bytes), `_total` on counters, and labels only of bounded cardinality (store id, source, status):
never a product id or SKU, which would make one time series per product.

Hand-written rather than `prometheus_client` because the agent exposes a dozen series and needs no
registry, multiprocess mode or push gateway; this module is the whole of it and has no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]


@dataclass
class _Family:
    name: str
    kind: str  # "counter" | "gauge"
    help: str
    values: dict[Labels, float] = field(default_factory=dict)


class Metrics:
    """A registry of counter and gauge families; `render()` gives the exposition text."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}
        self._collectors: list[Callable[[Metrics], None]] = []

    def counter(self, name: str, help_: str) -> None:
        self._declare(name, "counter", help_)

    def gauge(self, name: str, help_: str) -> None:
        self._declare(name, "gauge", help_)

    def _declare(self, name: str, kind: str, help_: str) -> None:
        if kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"counter {name} must end with _total")
        self._families.setdefault(name, _Family(name, kind, help_))

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        family = self._families[name]
        key = _key(labels)
        family.values[key] = family.values.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        self._families[name].values[_key(labels)] = value

    def value(self, name: str, **labels: str) -> float:
        return self._families[name].values.get(_key(labels), 0.0)

    def collect_with(self, collector: Callable[[Metrics], None]) -> None:
        """Register a function that refreshes gauges just before rendering."""
        self._collectors.append(collector)

    def render(self) -> str:
        for collector in self._collectors:
            collector(self)
        return "".join(_render(f) for f in self._families.values())


def _key(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def _render(family: _Family) -> str:
    lines = [f"# HELP {family.name} {family.help}", f"# TYPE {family.name} {family.kind}"]
    lines += [f"{family.name}{_labels(k)} {_number(v)}" for k, v in sorted(family.values.items())]
    return "\n".join(lines) + "\n"


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) and abs(value) < 2**53 else repr(value)
