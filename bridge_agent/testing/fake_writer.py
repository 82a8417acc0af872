"""An in-memory `Writer` (platform protocol v2), for the Writer conformance suite and for tests
of the downstream machinery before a platform writes for real.

It holds field values per (product, field, image) and follows the contract exactly: one result per
write in order, a compare-and-set against `expected`, `unsupported` for a field it was not told
to write, `failed` (404) for a product it does not have. `merchant_edit` changes a value behind
the writer's back, as a merchant would in the store's admin.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bridge_agent.platforms.base import FieldRef, FieldWrite, WriteField, WriteResult


class FakeWriter:
    """Field values of a few products, written only when the expected value still holds."""

    def __init__(
        self,
        products: Iterable[str],
        *,
        fields: Iterable[WriteField] = tuple(WriteField),
        values: Mapping[FieldRef, Any] | None = None,
    ) -> None:
        self.products = set(products)
        self.fields = frozenset(fields)
        self.values: dict[FieldRef, Any] = dict(values or {})
        self.writes: list[FieldWrite] = []  # every write applied, in order

    def merchant_edit(self, ref: FieldRef, value: Any) -> None:
        self.values[ref] = value

    async def read_fields(self, refs: Sequence[FieldRef]) -> Mapping[FieldRef, Any]:
        return {r: self.values.get(r) if r.product in self.products else None for r in refs}

    async def write_fields(self, writes: Sequence[FieldWrite]) -> Sequence[WriteResult]:
        return [self._write(w) for w in writes]

    def _write(self, write: FieldWrite) -> WriteResult:
        ref = write.ref
        if ref.field not in self.fields:
            return WriteResult(ref, "unsupported", message=f"{ref.field} is not written here")
        if ref.product not in self.products:
            return WriteResult(ref, "failed", 404, f"product {ref.product} does not exist")
        current = self.values.get(ref)
        if current != write.expected:
            return WriteResult(
                ref, "conflict", message="the store's value changed", current=current
            )
        self.values[ref] = write.value
        self.writes.append(write)
        return WriteResult(ref, "applied")
