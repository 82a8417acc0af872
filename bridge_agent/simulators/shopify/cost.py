"""Query cost and the leaky bucket (reference/platforms.md 2.8): Shopify's rate limit.

Requested cost, computed from the document before it runs, the way Shopify documents it: a
scalar or enum field costs 0, an object 1, a connection 2 plus, for each requested node
(`first` or `last`), 1 and the cost of the node's selection, so nested connections multiply; a
mutation's root field costs 10; `nodes(ids:)` costs 1 plus the selection per id. The actual cost
walks the answer the same way with the numbers of nodes returned, and the difference is refunded.

A request whose requested cost is above 1000 is refused (`MAX_COST_EXCEEDED`); one whose cost is
above what the bucket holds is refused (`THROTTLED`) and takes nothing. The bucket refills at
`restoreRate` points per second of the simulator's clock (with sub-second precision while the
clock runs, so a client that waits the right time is never throttled), up to `maximumAvailable`.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Protocol

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    is_leaf_type,
)

from bridge_agent.simulators.core.clock import SimClock

MAX_QUERY_COST = 1000
MUTATION_COST = 10
_MISSING: Any = object()


def precise_now(clock: SimClock) -> float:
    """The simulator's clock with the sub-second part of the real time while it runs."""
    return clock.now() + (0.0 if clock.frozen else time.time() % 1.0)


class BucketSettings(Protocol):
    bucket_max: float
    restore_rate: float


class Bucket:
    """The app's point bucket for one shop; size and rate read from `settings` at each use."""

    def __init__(self, clock: SimClock, settings: BucketSettings) -> None:
        self.clock = clock
        self.settings = settings
        self._level = settings.bucket_max
        self._at = precise_now(clock)

    def available(self) -> float:
        now = precise_now(self.clock)
        elapsed = max(0.0, now - self._at)
        self._level = min(
            self.settings.bucket_max, self._level + elapsed * self.settings.restore_rate
        )
        self._at = now
        return self._level

    def take(self, points: float) -> None:
        self.available()
        self._level -= points

    def refund(self, points: float) -> None:
        self._level = min(self.settings.bucket_max, self._level + points)

    def status(self) -> dict[str, float]:
        return {
            "maximumAvailable": float(self.settings.bucket_max),
            "currentlyAvailable": int(self.available()),
            "restoreRate": float(self.settings.restore_rate),
        }


@functools.cache
def _object_field_type(parent: GraphQLNamedType, name: str) -> GraphQLNamedType | None:
    """The named type of a field that costs something (None for leaves and unknown fields)."""
    fields = getattr(parent, "fields", None)
    if name.startswith("__") or fields is None or name not in fields:
        return None
    field_type = get_named_type(fields[name].type)
    return None if is_leaf_type(field_type) else field_type


class CostCalculator:
    """Requested and actual cost of one operation."""

    def __init__(
        self,
        schema: GraphQLSchema,
        operation: OperationDefinitionNode,
        fragments: dict[str, FragmentDefinitionNode],
        variables: dict[str, Any],
    ) -> None:
        self.schema = schema
        self.operation = operation
        self.fragments = fragments
        self.variables = variables

    def _root(self) -> GraphQLObjectType:
        root = (
            self.schema.mutation_type
            if self.operation.operation.value == "mutation"
            else self.schema.query_type
        )
        assert root is not None
        return root

    def requested(self) -> int:
        return int(self._selection(self.operation.selection_set, self._root(), _MISSING, True))

    def actual(self, data: dict[str, Any] | None) -> int:
        if data is None:
            return 0
        return int(self._selection(self.operation.selection_set, self._root(), data, True))

    def _arg(self, node: FieldNode, name: str) -> Any:
        for arg in node.arguments or ():
            if arg.name.value != name:
                continue
            value = arg.value
            if isinstance(value, VariableNode):
                return self.variables.get(value.name.value)
            if isinstance(value, IntValueNode):
                return int(value.value)
            if isinstance(value, ListValueNode):
                return list(value.values)
            return None
        return None

    def _selection(
        self,
        selection_set: SelectionSetNode | None,
        parent: GraphQLNamedType,
        data: Any,
        root: bool,
    ) -> float:
        if selection_set is None:
            return 0.0
        total = 0.0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self._field(selection, parent, data, root)
            elif isinstance(selection, InlineFragmentNode):
                target = (
                    self.schema.get_type(selection.type_condition.name.value)
                    if selection.type_condition
                    else parent
                )
                total += self._selection(selection.selection_set, target or parent, data, root)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is not None:
                    target = self.schema.get_type(fragment.type_condition.name.value) or parent
                    total += self._selection(fragment.selection_set, target, data, root)
        return total

    def _field(self, node: FieldNode, parent: GraphQLNamedType, data: Any, root: bool) -> float:
        name = node.name.value
        field_type = _object_field_type(parent, name)
        if field_type is None:
            return 0.0
        key = node.alias.value if node.alias else name
        value = (
            _MISSING if data is _MISSING else (data.get(key) if isinstance(data, dict) else None)
        )
        if data is not _MISSING and value is None:
            return 0.0
        base = MUTATION_COST if root and self.operation.operation.value == "mutation" else 1.0
        if field_type.name.endswith("Connection") and "pageInfo" in getattr(
            field_type, "fields", {}
        ):
            return self._connection(node, field_type, value)
        if root and name == "nodes":
            if value is _MISSING:
                ids = self._arg(node, "ids")
                count = len(ids) if isinstance(ids, list) else 1
                return count * (
                    1 + self._selection(node.selection_set, field_type, _MISSING, False)
                )
            total = 0.0
            for item in value or ():
                if item is not None:
                    total += 1 + self._selection(node.selection_set, field_type, item, False)
            return total
        if isinstance(value, list):
            value = value[0] if value else None
            if value is None:
                return base
        return base + self._selection(node.selection_set, field_type, value, False)

    def _connection(self, node: FieldNode, connection: GraphQLNamedType, value: Any) -> float:
        fields = getattr(connection, "fields", {})
        node_type = get_named_type(fields["nodes"].type) if "nodes" in fields else connection
        if value is _MISSING:
            first = self._arg(node, "first")
            last = self._arg(node, "last")
            count = first if isinstance(first, int) else last if isinstance(last, int) else 0
            per_node = 1 + self._inner(node.selection_set, node_type, _MISSING)
            return 2 + count * per_node
        items = value.get("nodes") if isinstance(value, dict) else None
        if items is None and isinstance(value, dict) and isinstance(value.get("edges"), list):
            items = [
                edge.get("node") if isinstance(edge, dict) else None for edge in value["edges"]
            ]
        total = 2.0
        for item in items or []:
            total += 1 + self._inner(node.selection_set, node_type, {"__node": item})
        return total

    def _inner(self, selection_set: SelectionSetNode | None, node_type: Any, data: Any) -> float:
        """The cost of one node inside a connection's `nodes { }` and `edges { node { } }`."""
        if selection_set is None:
            return 0.0
        total = 0.0
        item = _MISSING if data is _MISSING else data["__node"]
        for selection in selection_set.selections:
            if not isinstance(selection, FieldNode):
                continue
            name = selection.name.value
            if name == "nodes":
                total += self._selection(selection.selection_set, node_type, item, False)
            elif name == "edges" and selection.selection_set is not None:
                for inner in selection.selection_set.selections:
                    if isinstance(inner, FieldNode) and inner.name.value == "node":
                        total += self._selection(inner.selection_set, node_type, item, False)
        return total
