"""What an export is asked for (`ExportRequest`) and what it did (`ExportReport`).

A request is plain data, so the CLI, a scheduled `[[exports]]` table and a backup before a bulk
apply all describe an export the same way. Parsing the operator's text (`--filter`, `--since`)
happens here once, with the error said in the operator's words.

The report is bounded whatever the catalog size: counts per reason, and the first
`INVALID_KEPT` products a feed could not take with their reasons (a 100 000-product catalog
without images must not become a 100 000-entry list in memory).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from bridge_agent.errors import InputError
from bridge_agent.model import AVAILABILITIES, STATUSES

Format = Literal["csv", "json", "jsonl", "xml", "xlsx", "shopify-csv", "woocommerce-csv"]
FORMATS: tuple[str, ...] = ("csv", "json", "jsonl", "xml", "xlsx", "shopify-csv", "woocommerce-csv")
SUFFIXES: Mapping[str, str] = {
    "csv": ".csv",
    "json": ".json",
    "jsonl": ".jsonl",
    "xml": ".xml",
    "xlsx": ".xlsx",
    "shopify-csv": ".csv",
    "woocommerce-csv": ".csv",
}
FILTER_KEYS: tuple[str, ...] = ("category", "status", "availability", "tag", "brand")
LAST = "last"
INVALID_KEPT = 1000


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """One export of one store's mirror.

    - `fields`: groups or column names (fields.py); empty: basic and seo.
    - `filters`: key -> accepted values (any of them matches; keys all must match).
    - `since`: None (everything), `LAST` (what changed since the previous export of this
      `name`), or epoch ms (changed at or after).
    - `name`: the export's name, under which `since="last"` finds its previous run; default
      `<store>-<format>`.
    - `currency`: for products that carry none (WooCommerce keeps it a store setting).
    - `seo_plugin`: whose meta keys woocommerce-csv writes SEO fields to (yoast, rankmath,
      aioseo, seopress).
    - `products`: only these product ids (the backup before a bulk apply); None: every one.
    - `raw`: csv text cells as they are, without the `'` that keeps a spreadsheet from
      running one as a formula (csvfile.py).
    """

    store: str
    format: Format
    fields: tuple[str, ...] = ()
    filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    since: str | int | None = None
    name: str | None = None
    bom: bool = False
    currency: str | None = None
    store_url: str | None = None
    store_title: str | None = None
    seo_plugin: str = "yoast"
    products: frozenset[str] | None = None
    raw: bool = False

    @property
    def export_name(self) -> str:
        return self.name or f"{self.store}-{self.format}"

    @property
    def incremental(self) -> bool:
        return self.since is not None


@dataclass(frozen=True, slots=True)
class Invalid:
    """A product (or one of its variants) a format could not take, and why."""

    product: str
    variant: str | None
    reasons: tuple[str, ...]

    def line(self) -> str:
        which = self.product + (f" variant {self.variant}" if self.variant else "")
        return f"{which}: {'; '.join(self.reasons)}"


@dataclass(slots=True)
class ExportReport:
    """What one export wrote. `mark` is the incremental state to save once the file is safe."""

    store: str
    format: str
    name: str
    products: int = 0  # products written (deleted ones not included)
    variants: int = 0  # variants written, as rows, items or nested
    rows: int = 0  # records written: rows, items, lines
    deleted: int = 0  # deleted products written as such
    cleaned: int = 0  # xlsx cells whose control characters were dropped (XML cannot hold them)
    notes: Counter[str] = field(default_factory=Counter)  # reason -> records written with a caveat
    # reason -> records not exported (products; feed items for xml, where a variant is one)
    skipped: Counter[str] = field(default_factory=Counter)
    invalid: list[Invalid] = field(default_factory=list)  # the first INVALID_KEPT
    invalid_total: int = 0
    noted: list[Invalid] = field(default_factory=list)  # the first INVALID_KEPT notes
    bytes: int = 0
    mark: str | None = None
    since: int | None = None  # epoch ms the export started from (incremental), if any
    seconds: float = 0.0

    def skip(self, reason: str, product: str, variant: str | None = None) -> None:
        self.skipped[reason] += 1
        self.refuse(Invalid(product, variant, (reason,)), count=False)

    def note(self, reason: str, product: str, variant: str | None = None) -> None:
        """A record written, but with a caveat the operator must know (an importer would
        change it, a name was made unique): counted, and the first INVALID_KEPT listed."""
        self.notes[reason] += 1
        if len(self.noted) < INVALID_KEPT:
            self.noted.append(Invalid(product, variant, (reason,)))

    def refuse(self, invalid: Invalid, *, count: bool = True) -> None:
        if count:
            for reason in invalid.reasons:
                self.skipped[reason] += 1
        self.invalid_total += 1
        if len(self.invalid) < INVALID_KEPT:
            self.invalid.append(invalid)

    def summary(self) -> str:
        """One line for stderr and the event log."""
        parts = [
            f"export {self.name}: {self.products} product(s), {self.variants} variant(s)",
            f"{self.rows} row(s)",
        ]
        if self.deleted:
            parts.append(f"{self.deleted} deleted")
        if self.cleaned:
            parts.append(f"{self.cleaned} cell(s) with control characters dropped")
        if self.notes:
            notes = ", ".join(f"{n} {r}" for r, n in sorted(self.notes.items()))
            parts.append(f"written with a caveat ({notes})")
        if self.skipped:
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items()))
            parts.append(f"not exported {self.invalid_total} ({reasons})")
        parts.append(f"{_size(self.bytes)} {self.format}")
        return ", ".join(parts) + f" in {self.seconds:.1f}s"


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def parse_filters(specs: list[str] | tuple[str, ...] | None) -> dict[str, tuple[str, ...]]:
    """`category=Hoodies,status=active|draft` (repeatable) -> {key: accepted values}.

    `|` separates values of one key (any matches); `,` separates keys (all must match). A key
    given twice accepts the values of both.
    """
    out: dict[str, list[str]] = {}
    for spec in specs or ():
        for part in spec.split(","):
            if not part.strip():
                continue
            key, sep, values = part.partition("=")
            key = key.strip().lower()
            accepted = [v.strip() for v in values.split("|") if v.strip()]
            if not sep or key not in FILTER_KEYS or not accepted:
                raise InputError(
                    f"bad filter {part.strip()!r}: expected KEY=VALUE[|VALUE...] with KEY one of"
                    f" {', '.join(FILTER_KEYS)}"
                )
            if key == "status":
                _check(key, accepted, (*STATUSES,))
            if key == "availability":
                _check(key, accepted, AVAILABILITIES)
            out.setdefault(key, []).extend(accepted)
    return {k: tuple(v) for k, v in out.items()}


def _check(key: str, values: list[str], allowed: tuple[str, ...]) -> None:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise InputError(f"bad {key} {', '.join(bad)}: expected one of {', '.join(allowed)}")


def parse_since(text: str | None) -> str | int | None:
    """`last`, or an ISO 8601 time (local time without a zone) as epoch ms."""
    if text is None:
        return None
    if text.strip().lower() == LAST:
        return LAST
    bad = InputError(
        f"bad --since {text!r}: expected last, or an ISO 8601 time such as"
        " 2026-12-05T14:00 or 2026-12-05T13:00:00Z"
    )
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise bad from None
    if when.tzinfo is None:
        try:
            when = when.astimezone()
        except (ValueError, OverflowError, OSError):
            # The first and last days datetime knows have no local time in every zone (the
            # offset steps past year 1 or 9999): read them as UTC; a day changes nothing there.
            when = when.replace(tzinfo=UTC)
    try:
        return max(0, int(when.timestamp() * 1000))  # before 1970: the whole mirror
    except (ValueError, OverflowError, OSError):
        raise bad from None
