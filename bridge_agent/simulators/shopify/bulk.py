"""Bulk operations (reference/platforms.md 2.5): the full import's path on Shopify.

`bulkOperationRunQuery(query:, groupObjects:)` checks the inner query as Shopify does (valid
against the schema, a query, at least one connection, at most 5, connections nested at most 2
deep, no top-level `node` / `nodes`; refusals are `userErrors` with code `INVALID`), allows up
to 5 running operations (API 2026-01 and later; a sixth is `LIMIT_REACHED`), and answers the
operation CREATED. It then moves on the simulator's clock: RUNNING after a short start, then
COMPLETED once it has read every object, at `bulk_rate` objects per second, reporting a growing
`objectCount` meanwhile; with the `bulk_fail` fault it ends FAILED with
`errorCode: INTERNAL_SERVER_ERROR` half way, and a `partialDataUrl` holding the lines written
so far. `bulkOperationCancel` gives CANCELING then CANCELED. Each end fires
`bulk_operations/finish`. Seven days after it ends the operation is EXPIRED and its files are
gone (403, as an expired signed URL).

The result is JSONL: one line per object, connection wrappers flattened away, every node of a
nested connection on its own line with `__parentId`, non-connection objects inline. With
`groupObjects: false` (what the adapter asks for) the lines are shuffled with the seed, so a
child may come before its parent, which Shopify allows; with `true`, each parent is followed by
its children. The file is a direct projection of the catalog on the inner query's selection
(the same resolvers the API uses, without graphql-core's execution machinery, which would take
seconds for a large shop). The root objects are listed when the operation starts and read a
chunk per tick (`CHUNK_ROOTS`), so a large export never stalls the event loop.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
)
from graphql.execution.values import get_argument_values

from bridge_agent.simulators.shopify.cost import precise_now
from bridge_agent.simulators.shopify.model import encode, gid, iso, rest_time
from bridge_agent.simulators.shopify.resolvers import (
    CONNECTIONS,
    RESOLVERS,
    Context,
    Lister,
    Resolver,
    lookup,
    resolver,
    zero,
)

if TYPE_CHECKING:
    from bridge_agent.simulators.shopify.sim import ShopifySimulator

MAX_CONNECTIONS = 5
MAX_DEPTH = 2
MAX_RUNNING = 5
START_SECONDS = 0.2
EXPIRY_SECONDS = 7 * 24 * 3600
CHUNK_ROOTS = 250  # root objects read per tick: a tick stays in tens of milliseconds
_RUNNING = ("CREATED", "RUNNING", "CANCELING")
_EXPORTABLE = frozenset({"products", "productVariants"})


class BulkQueryError(ValueError):
    """An inner query Shopify would refuse (the message is the userError's)."""


def is_connection(type_: GraphQLNamedType) -> bool:
    fields = getattr(type_, "fields", None)
    return bool(type_.name.endswith("Connection") and fields and "pageInfo" in fields)


def node_selection(node: FieldNode) -> SelectionSetNode | None:
    """The selection of each node of a connection field (`nodes { }` or `edges { node { } }`)."""
    if node.selection_set is None:
        return None
    for selection in node.selection_set.selections:
        if not isinstance(selection, FieldNode):
            continue
        if selection.name.value == "nodes":
            return selection.selection_set
        if selection.name.value == "edges" and selection.selection_set is not None:
            for inner in selection.selection_set.selections:
                if isinstance(inner, FieldNode) and inner.name.value == "node":
                    return inner.selection_set
    return None


@dataclass
class Step:
    """One selected field of a projected object."""

    key: str  # the response key (alias or name)
    name: str
    kind: str  # typename | connection | leaf | object
    args: dict[str, Any] = field(default_factory=dict)
    lister: Lister | None = None
    resolver: Resolver | None = None
    selection: SelectionSetNode | None = None
    type_: GraphQLOutputType | None = None
    non_null: bool = False


class Projector:
    """Writes the JSONL lines of one inner query over the catalog."""

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        ctx: Context,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.ctx = ctx
        self.lines: list[dict[str, Any] | None] = []
        self._plans: dict[tuple[int, str], list[Step]] = {}

    def _fields(self, selection_set: SelectionSetNode, runtime: str) -> list[FieldNode]:
        out: list[FieldNode] = []
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                out.append(selection)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                if condition is None or self._applies(condition.name.value, runtime):
                    out.extend(self._fields(selection.selection_set, runtime))
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment and self._applies(fragment.type_condition.name.value, runtime):
                    out.extend(self._fields(fragment.selection_set, runtime))
        return out

    def _applies(self, condition: str, runtime: str) -> bool:
        if condition == runtime:
            return True
        abstract = self.schema.get_type(condition)
        concrete = self.schema.get_type(runtime)
        if isinstance(abstract, GraphQLInterfaceType) and isinstance(concrete, GraphQLObjectType):
            return self.schema.is_sub_type(abstract, concrete)
        return False

    def roots(self, node: FieldNode, lister_args: dict[str, Any]) -> list[tuple[Any, Any]]:
        """The root objects of a root connection, each with the selection of its line."""
        lister = CONNECTIONS[("QueryRoot", node.name.value)]
        selection = node_selection(node)
        return [(record, selection) for _, record in lister(None, lister_args, self.ctx)]

    def root(self, record: Any, selection: SelectionSetNode | None) -> None:
        self._line(record, selection, None)

    def take(self) -> list[bytes]:
        """The lines written since the last call, encoded."""
        lines = [encode(doc) for doc in self.lines if doc is not None]
        self.lines = []
        return lines

    def _line(self, record: Any, selection: SelectionSetNode | None, parent: str | None) -> None:
        slot = len(self.lines)
        self.lines.append(None)
        doc = self.project(record, selection) if selection is not None else {}
        if parent is not None:
            doc["__parentId"] = parent
        self.lines[slot] = doc

    def _plan(self, selection_set: SelectionSetNode, runtime: str) -> list[Step]:
        """What to do for each selected field of a `runtime` object (once per selection)."""
        key = (id(selection_set), runtime)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        fields = getattr(self.schema.get_type(runtime), "fields", {})
        plan = []
        for node in self._fields(selection_set, runtime):
            name = node.name.value
            response_key = node.alias.value if node.alias else name
            if name == "__typename":
                plan.append(Step(response_key, name, "typename"))
                continue
            definition = fields.get(name)
            if definition is None:
                continue
            args = get_argument_values(definition, node) if node.arguments else {}
            named = get_named_type(definition.type)
            if is_connection(named):
                lister = CONNECTIONS.get((runtime, name))
                if lister is not None:
                    plan.append(
                        Step(response_key, name, "connection", args=args, lister=lister,
                             selection=node_selection(node))
                    )  # fmt: skip
                continue
            plan.append(
                Step(
                    response_key,
                    name,
                    "leaf" if is_leaf_type(named) else "object",
                    args=args,
                    resolver=RESOLVERS.get((runtime, name)),
                    selection=node.selection_set,
                    type_=definition.type,
                    non_null=is_non_null_type(definition.type),
                )
            )
        self._plans[key] = plan
        return plan

    def project(
        self, record: Any, selection_set: SelectionSetNode, static: str = ""
    ) -> dict[str, Any]:
        """`record` as the selection shows it; its type is its `__typename`, else `static`."""
        runtime = (record.get("__typename") if isinstance(record, dict) else None) or static
        out: dict[str, Any] = {}
        for step in self._plan(selection_set, runtime):
            if step.kind == "typename":
                out[step.key] = runtime
                continue
            if step.kind == "connection":
                assert step.lister is not None
                for _, child in step.lister(record, step.args, self.ctx):
                    self._line(child, step.selection, record["id"])
                continue
            fn = step.resolver
            value = fn(record, step.args, self.ctx) if fn is not None else record.get(step.name)
            if value is None and step.non_null:
                assert step.type_ is not None
                value = zero(step.type_, self.schema)
            if step.kind == "leaf":
                out[step.key] = list(value) if isinstance(value, list) else value
            else:
                assert step.type_ is not None
                out[step.key] = self._complete(value, step.type_, step.selection)
        return out

    def _complete(
        self, value: Any, type_: GraphQLOutputType, selection: SelectionSetNode | None
    ) -> Any:
        if value is None:
            return None
        if is_non_null_type(type_):
            type_ = type_.of_type
        if is_list_type(type_):
            item_type = type_.of_type
            return [self._complete(v, item_type, selection) for v in value]
        if is_leaf_type(type_) or selection is None:
            return value
        return self.project(value, selection, type_.name)  # type: ignore[union-attr]


def check_inner(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: dict[str, FragmentDefinitionNode] | None = None,
) -> list[tuple[FieldNode, dict[str, Any]]]:
    """The root connections of a valid inner query; raises BulkQueryError as Shopify refuses."""
    if operation.operation.value != "query":
        raise BulkQueryError("Bulk queries must be queries (use bulkOperationRunMutation).")
    root = schema.query_type
    assert root is not None
    roots: list[tuple[FieldNode, dict[str, Any]]] = []
    count = 0

    def walk(selection_set: SelectionSetNode | None, type_: Any, depth: int) -> None:
        nonlocal count
        if selection_set is None:
            return
        fields = getattr(type_, "fields", {})
        for selection in selection_set.selections:
            if isinstance(selection, InlineFragmentNode):
                target = (
                    schema.get_type(selection.type_condition.name.value)
                    if selection.type_condition
                    else type_
                )
                walk(selection.selection_set, target, depth)
                continue
            if isinstance(selection, FragmentSpreadNode):
                fragment = (fragments or {}).get(selection.name.value)
                if fragment is not None:
                    target = schema.get_type(fragment.type_condition.name.value)
                    walk(fragment.selection_set, target, depth)
                continue
            if not isinstance(selection, FieldNode) or selection.name.value not in fields:
                continue
            named = get_named_type(fields[selection.name.value].type)
            if is_connection(named):
                count += 1
                if depth + 1 > MAX_DEPTH:
                    raise BulkQueryError(
                        "Bulk queries cannot contain connections with a nesting depth greater"
                        f" than {MAX_DEPTH}."
                    )
                node_type = get_named_type(named.fields["nodes"].type)
                walk(node_selection(selection), node_type, depth + 1)
            else:
                walk(selection.selection_set, named, depth)

    for selection in operation.selection_set.selections:
        if not isinstance(selection, FieldNode):
            raise BulkQueryError("Bulk queries must select their root fields directly.")
        name = selection.name.value
        if name in ("node", "nodes"):
            raise BulkQueryError("Bulk queries cannot contain a top level `node` or `nodes` field.")
        definition = root.fields.get(name)
        if definition is None:
            continue
        if is_connection(get_named_type(definition.type)):
            if name not in _EXPORTABLE:
                raise BulkQueryError(
                    f"The simulator bulk-exports products and productVariants, not {name}."
                )
            roots.append((selection, get_argument_values(definition, selection)))
    walk(operation.selection_set, root, 0)
    if count == 0:
        raise BulkQueryError("Bulk queries must contain at least one connection.")
    if count > MAX_CONNECTIONS:
        raise BulkQueryError(
            f"Bulk queries cannot contain more than {MAX_CONNECTIONS} connections."
        )
    return roots


class BulkOperations:
    """The shop's bulk operations, their files and their clock."""

    def __init__(self, sim: ShopifySimulator) -> None:
        self.sim = sim
        self.operations: dict[int, dict[str, Any]] = {}
        self.files: dict[str, bytes] = {}  # token -> JSONL
        self._next = 4_400_000_000

    def get(self, num: int) -> dict[str, Any] | None:
        op = self.operations.get(num)
        if op is not None:
            self.advance(op)
        return op

    def running(self) -> list[dict[str, Any]]:
        return [op for op in self.operations.values() if op["status"] in _RUNNING]

    def start(self, ctx: Context, query: str, group: bool) -> dict[str, Any]:
        """Check and start an inner query; raises BulkQueryError for a refused one.

        The root objects are listed now; each is read (with its children) when the operation
        reaches it, a chunk per tick, as fast as `bulk_rate` allows on the simulator's clock:
        the event loop never stops for a large shop, and a change made while the operation
        runs may or may not be in the file, as on Shopify.
        """
        sim = self.sim
        prepared = sim.executor.prepare(query)
        if prepared.errors or prepared.document is None:
            first = prepared.errors[0]["message"] if prepared.errors else "Invalid query"
            raise BulkQueryError(f"Invalid bulk query: {first}")
        operations = [
            d for d in prepared.document.definitions if isinstance(d, OperationDefinitionNode)
        ]
        if len(operations) != 1:
            raise BulkQueryError("Bulk queries must contain exactly one operation.")
        fragments = {
            d.name.value: d
            for d in prepared.document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }
        found = check_inner(sim.executor.schema, operations[0], fragments)
        projector = Projector(sim.executor.schema, fragments, ctx)
        roots = [pair for node, args in found for pair in projector.roots(node, args)]
        self._next += 1
        num = self._next
        fail = sim.settings.bulk_fail > 0
        if fail:
            sim.settings.bulk_fail -= 1
        now = precise_now(sim.clock)
        op: dict[str, Any] = {
            "__typename": "BulkOperation",
            "id": gid("BulkOperation", num),
            "status": "CREATED",
            "errorCode": None,
            "createdAt": iso(now),
            "completedAt": None,
            "objectCount": "0",
            "rootObjectCount": "0",
            "fileSize": None,
            "url": None,
            "partialDataUrl": None,
            "query": query,
            "type": "QUERY",
            "_num": num,
            "_origin": ctx.origin,
            "_projector": projector,
            "_roots": roots,
            "_done": 0,  # roots read so far
            "_lines": [],  # encoded lines so far
            "_group": group,
            "_start": now,
            "_run": now + START_SECONDS,
            "_end": None,  # when a cancel takes effect
            "_fail_at": max(1, len(roots) // 2) if fail else None,
            "_ended": None,
            "_token": secrets.token_hex(12),
        }
        self.operations[num] = op
        sim.counters["bulk_operations"] += 1
        return op

    def cancel(self, op: dict[str, Any]) -> bool:
        self.advance(op)
        if op["status"] not in ("CREATED", "RUNNING"):
            return False
        op["status"] = "CANCELING"
        op["_end"] = precise_now(self.sim.clock) + START_SECONDS
        return True

    def tick(self) -> None:
        for op in list(self.operations.values()):
            self.advance(op)

    def advance(self, op: dict[str, Any]) -> None:
        """Bring the operation's state to the simulator's present (reading a chunk at most)."""
        now = precise_now(self.sim.clock)
        status = op["status"]
        if status in ("COMPLETED", "FAILED", "CANCELED"):
            if op["_ended"] is not None and now >= op["_ended"] + EXPIRY_SECONDS:
                op["status"] = "EXPIRED"
                self.files.pop(op["_token"], None)
                self.files.pop(op["_token"] + "-partial", None)
            return
        if status == "EXPIRED":
            return
        if status == "CANCELING":
            if now >= op["_end"]:
                self._finish(op, "CANCELED", now)
            return
        if now < op["_run"]:
            return
        op["status"] = "RUNNING"
        roots: list[tuple[Any, SelectionSetNode | None]] = op["_roots"]
        lines: list[bytes] = op["_lines"]
        projector: Projector = op["_projector"]
        allowed = (now - op["_run"]) * self.sim.settings.bulk_rate
        stop = op["_fail_at"] if op["_fail_at"] is not None else len(roots)
        budget = CHUNK_ROOTS
        while op["_done"] < stop and len(lines) < allowed and budget > 0:
            record, selection = roots[op["_done"]]
            projector.root(record, selection)
            op["_done"] += 1
            budget -= 1
        lines.extend(projector.take())
        op["objectCount"] = str(len(lines))
        op["rootObjectCount"] = str(op["_done"])
        if op["_done"] < stop or len(lines) > allowed:
            return
        if op["_fail_at"] is not None:
            token = op["_token"] + "-partial"
            self.files[token] = self._body(op)
            op["partialDataUrl"] = f"{op['_origin']}/bulk/{token}.jsonl"
            op["errorCode"] = "INTERNAL_SERVER_ERROR"
            self._finish(op, "FAILED", now)
            return
        body = self._body(op)
        self.files[op["_token"]] = body
        op["fileSize"] = str(len(body))
        op["url"] = f"{op['_origin']}/bulk/{op['_token']}.jsonl" if body else None
        self._finish(op, "COMPLETED", now)

    def _body(self, op: dict[str, Any]) -> bytes:
        lines: list[bytes] = op["_lines"]
        if not op["_group"]:
            # Ungrouped (the default from 2026-01): no order promised, children may come first.
            random.Random(self.sim.seed * 1_000_003 + op["_num"]).shuffle(lines)
        return b"".join(line + b"\n" for line in lines)

    def _finish(self, op: dict[str, Any], status: str, now: float) -> None:
        op["status"] = status
        op["completedAt"] = iso(now)
        op["_ended"] = now
        op["_lines"], op["_roots"], op["_projector"] = [], [], None  # the file holds them now
        self.sim.catalog.emit(
            "bulk_operations/finish",
            {
                "admin_graphql_api_id": op["id"],
                "completed_at": rest_time(now),
                "created_at": rest_time(op["_start"]),
                "error_code": op["errorCode"].lower() if op["errorCode"] else None,
                "status": status.lower(),
                "type": "query",
            },
        )

    def file(self, token: str) -> bytes | None:
        return self.files.get(token)


@resolver("Mutation", "bulkOperationRunQuery")
def run_query(_: Any, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    bulk = ctx.sim.bulk
    bulk.tick()
    if len(bulk.running()) >= MAX_RUNNING:
        return {
            "bulkOperation": None,
            "userErrors": [
                {
                    "field": None,
                    "message": f"A maximum of {MAX_RUNNING} bulk operations can run at once.",
                    "code": "LIMIT_REACHED",
                }
            ],
        }
    try:
        op = bulk.start(ctx, args["query"], bool(args.get("groupObjects")))
    except BulkQueryError as exc:
        return {
            "bulkOperation": None,
            "userErrors": [{"field": ["query"], "message": str(exc), "code": "INVALID"}],
        }
    return {"bulkOperation": op, "userErrors": []}


@resolver("Mutation", "bulkOperationCancel")
def cancel(_: Any, args: dict[str, Any], ctx: Context) -> dict[str, Any]:
    op = lookup(ctx, args["id"], "BulkOperation")
    if op is None:
        return {
            "bulkOperation": None,
            "userErrors": [{"field": ["id"], "message": "Bulk operation does not exist"}],
        }
    if not ctx.sim.bulk.cancel(op):
        return {
            "bulkOperation": op,
            "userErrors": [
                {
                    "field": ["id"],
                    "message": f"A bulk operation cannot be canceled when it is"
                    f" {op['status'].lower()}",
                }
            ],
        }
    return {"bulkOperation": op, "userErrors": []}


@resolver("QueryRoot", "bulkOperation")
def bulk_operation(_: Any, args: dict[str, Any], ctx: Context) -> Any:
    return lookup(ctx, args["id"], "BulkOperation")


@resolver("QueryRoot", "currentBulkOperation")
def current(_: Any, args: dict[str, Any], ctx: Context) -> Any:
    if (args.get("type") or "QUERY") != "QUERY":
        return None
    bulk = ctx.sim.bulk
    if not bulk.operations:
        return None
    return bulk.get(max(bulk.operations))
