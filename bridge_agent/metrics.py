"""Process metrics in Prometheus text format: counters, gauges and histograms, nothing more.

Naming follows Prometheus practice (anchors.md E.6): one `bridge_` prefix, base units (seconds,
bytes), `_total` on counters, and labels only of bounded cardinality (store id, source, status):
never a product id or SKU, which would make one time series per product.

Histograms (store request latency) follow the exposition format: cumulative `_bucket{le="..."}`
series ending with `le="+Inf"`, then `_sum` and `_count`; buckets are fixed when the family is
declared, so every series of a family has the same ones and they can be aggregated.

Hand-written rather than `prometheus_client` because the agent exposes a dozen series and needs no
registry, multiprocess mode or push gateway; this module is the whole of it and has no I/O.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]

# Seconds, for requests to a store: a cached answer (ms) up to a PHP listing near its timeout.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


@dataclass
class _Family:
    name: str
    kind: str  # "counter" | "gauge"
    help: str
    values: dict[Labels, float] = field(default_factory=dict)


@dataclass
class _Series:
    """One labelled histogram: observations per bucket (not cumulative), their sum and count."""

    counts: list[int]
    sum: float = 0.0
    count: int = 0


@dataclass
class _Histogram:
    name: str
    help: str
    buckets: tuple[float, ...]  # upper bounds, increasing, without +Inf
    series: dict[Labels, _Series] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Observed:
    """A histogram series as read back: cumulative (upper bound, count) pairs (the last is +Inf),
    the sum and the count of the observations."""

    buckets: tuple[tuple[float, int], ...]
    sum: float
    count: int


class Metrics:
    """A registry of counter, gauge and histogram families; `render()` gives the exposition text."""

    def __init__(self) -> None:
        self._families: dict[str, _Family | _Histogram] = {}
        self._collectors: list[Callable[[Metrics], None]] = []

    def counter(self, name: str, help_: str) -> None:
        self._declare(name, "counter", help_)

    def gauge(self, name: str, help_: str) -> None:
        self._declare(name, "gauge", help_)

    def histogram(self, name: str, help_: str, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        """Declare a histogram; declaring it again keeps the first declaration's buckets."""
        bounds = tuple(float(b) for b in buckets)
        if not bounds or any(math.isnan(b) or math.isinf(b) for b in bounds):
            raise ValueError(f"histogram {name} needs finite bucket bounds")
        if any(a >= b for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"histogram {name}: bucket bounds must increase")
        if name.endswith(("_total", "_bucket", "_sum", "_count")):
            raise ValueError(f"histogram {name} must not end with a reserved suffix")
        existing = self._families.setdefault(name, _Histogram(name, help_, bounds))
        if not isinstance(existing, _Histogram):
            raise TypeError(f"{name} is already declared as a {existing.kind}")

    def _declare(self, name: str, kind: str, help_: str) -> None:
        if kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"counter {name} must end with _total")
        existing = self._families.setdefault(name, _Family(name, kind, help_))
        if isinstance(existing, _Histogram):
            raise TypeError(f"{name} is already declared as a histogram")

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        family = self._scalar(name)
        key = _key(labels)
        family.values[key] = family.values.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        self._scalar(name).values[_key(labels)] = value

    def value(self, name: str, **labels: str) -> float:
        return self._scalar(name).values.get(_key(labels), 0.0)

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Add one observation (e.g. a latency in seconds) to a histogram series."""
        family = self._histogram(name)
        series = family.series.get(_key(labels))
        if series is None:
            series = family.series[_key(labels)] = _Series([0] * (len(family.buckets) + 1))
        # The first bucket whose upper bound is >= value ("le" is inclusive); past the last: +Inf.
        series.counts[bisect.bisect_left(family.buckets, value)] += 1
        series.sum += value
        series.count += 1

    def observed(self, name: str, **labels: str) -> Observed:
        """A histogram series as read back (all zero if nothing was observed)."""
        family = self._histogram(name)
        series = family.series.get(_key(labels)) or _Series([0] * (len(family.buckets) + 1))
        return Observed(_cumulative(family.buckets, series), series.sum, series.count)

    def _scalar(self, name: str) -> _Family:
        family = self._families[name]
        if isinstance(family, _Histogram):
            raise TypeError(f"{name} is a histogram: use observe()")
        return family

    def _histogram(self, name: str) -> _Histogram:
        family = self._families[name]
        if not isinstance(family, _Histogram):
            raise TypeError(f"{name} is a {family.kind}, not a histogram")
        return family

    def collect_with(self, collector: Callable[[Metrics], None]) -> None:
        """Register a function that refreshes gauges just before rendering."""
        self._collectors.append(collector)

    def render(self) -> str:
        for collector in self._collectors:
            collector(self)
        return "".join(_render(f) for f in self._families.values())


def _key(labels: dict[str, str]) -> Labels:
    return tuple(sorted(labels.items()))


def _render(family: _Family | _Histogram) -> str:
    if isinstance(family, _Histogram):
        return _render_histogram(family)
    lines = [f"# HELP {family.name} {family.help}", f"# TYPE {family.name} {family.kind}"]
    lines += [f"{family.name}{_labels(k)} {_number(v)}" for k, v in sorted(family.values.items())]
    return "\n".join(lines) + "\n"


def _render_histogram(family: _Histogram) -> str:
    name = family.name
    lines = [f"# HELP {name} {family.help}", f"# TYPE {name} histogram"]
    for labels, series in sorted(family.series.items()):
        for bound, count in _cumulative(family.buckets, series):
            le = "+Inf" if math.isinf(bound) else repr(bound)
            lines.append(f"{name}_bucket{_labels([*labels, ('le', le)])} {count}")
        lines.append(f"{name}_sum{_labels(labels)} {_number(series.sum)}")
        lines.append(f"{name}_count{_labels(labels)} {series.count}")
    return "\n".join(lines) + "\n"


def _cumulative(buckets: tuple[float, ...], series: _Series) -> tuple[tuple[float, int], ...]:
    running = 0
    out: list[tuple[float, int]] = []
    for bound, count in zip((*buckets, math.inf), series.counts, strict=True):
        running += count
        out.append((bound, running))
    return tuple(out)


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) and abs(value) < 2**53 else repr(value)
