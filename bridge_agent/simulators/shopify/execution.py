"""One GraphQL request, as Shopify's Admin API answers it: parse, validate against the real
schema, price, throttle, execute, report the cost.

Every answer is HTTP 200 with JSON (a refused document, a throttled request, a failed field):
`{"data"?, "errors"?, "extensions": {"cost": ...}}`. Errors carry `extensions.code` as Shopify's
do: the static validation codes of graphql-ruby (`undefinedField`, `argumentNotAccepted`,
`missingRequiredArguments`...), `MAX_COST_EXCEEDED` for a document above 1000 points and
`THROTTLED` when the bucket holds less than the requested cost; neither of those two runs
anything nor carries `data`.

Parsing and validation are cached by document text: a client sends the same few documents
again and again, and validation is the slow part of graphql-core for a small answer.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSyntaxError,
    OperationDefinitionNode,
    execute_sync,
    get_operation_ast,
    parse,
    validate,
)

# Registering the resolvers of mutations, bulk operations and webhook subscriptions.
from bridge_agent.simulators.shopify import bulk, mutations, webhooks  # noqa: F401
from bridge_agent.simulators.shopify.cost import MAX_QUERY_COST, CostCalculator
from bridge_agent.simulators.shopify.fast import Fallback, FastExecution
from bridge_agent.simulators.shopify.resolvers import Context, field_resolver
from bridge_agent.simulators.shopify.schema import admin_schema

_CODES = (
    (re.compile(r"^Cannot query field"), "undefinedField"),
    (re.compile(r"^Unknown argument"), "argumentNotAccepted"),
    (re.compile(r"(?i)argument .* of type .* is required"), "missingRequiredArguments"),
    (re.compile(r"^Unknown type"), "undefinedType"),
    (re.compile(r"^Variable .* is never used"), "variableNotUsed"),
    (re.compile(r"^Variable .* is not defined"), "variableNotDefined"),
    (re.compile(r"^Variable .* of type .* used in position expecting"), "variableMismatch"),
    (re.compile(r"^Fragment .* is never used"), "useAndDefineFragment"),
    (re.compile(r"^Unknown fragment"), "useAndDefineFragment"),
    (re.compile(r"must have a selection of subfields"), "selectionMismatch"),
    (re.compile(r"must not have a selection since type"), "selectionMismatch"),
    (
        re.compile(r"cannot represent|Expected value of type|does not exist in '\w+' enum"),
        "argumentLiteralsIncompatible",
    ),
)
_CACHE_SIZE = 256


def error_doc(error: GraphQLError, code: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"message": error.message}
    if error.locations:
        doc["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
    if error.path:
        doc["path"] = list(error.path)
    extensions = dict(error.extensions or {})
    if code is not None:
        extensions.setdefault("code", code)
    if extensions:
        doc["extensions"] = extensions
    return doc


def _validation_code(message: str) -> str:
    for pattern, code in _CODES:
        if pattern.search(message):
            return code
    return "GRAPHQL_VALIDATION_FAILED"


class Prepared:
    """A parsed document and its validation errors (empty when valid)."""

    def __init__(self, document: DocumentNode | None, errors: list[dict[str, Any]]) -> None:
        self.document = document
        self.errors = errors


class Executor:
    """Answers GraphQL requests for one simulated shop."""

    def __init__(self) -> None:
        self.schema = admin_schema()
        self.fast = True  # False: graphql-core executes everything (tests compare the two)
        self._cache: OrderedDict[str, Prepared] = OrderedDict()

    def prepare(self, query: str) -> Prepared:
        cached = self._cache.get(query)
        if cached is not None:
            self._cache.move_to_end(query)
            return cached
        try:
            document = parse(query)
        except GraphQLSyntaxError as exc:
            prepared = Prepared(None, [error_doc(exc, "parseError")])
        else:
            errors = validate(self.schema, document)
            prepared = Prepared(
                document, [error_doc(e, _validation_code(e.message)) for e in errors]
            )
        self._cache[query] = prepared
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return prepared

    def run(self, ctx: Context, body: Any) -> dict[str, Any]:
        sim = ctx.sim
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return {"errors": [{"message": "No query string was present"}]}
        variables = body.get("variables") or {}
        if not isinstance(variables, dict):
            return {"errors": [{"message": "Variables must be a JSON object"}]}
        operation_name = body.get("operationName")
        prepared = self.prepare(body["query"])
        if prepared.errors or prepared.document is None:
            return {"errors": prepared.errors, "extensions": self._cost(ctx, 0, None)}
        document = prepared.document
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            message = (
                f'No operation named "{operation_name}"'
                if operation_name
                else "An operation name is required"
            )
            return {"errors": [{"message": message}], "extensions": self._cost(ctx, 0, None)}
        calculator = CostCalculator(self.schema, operation, _fragments(document), variables)
        requested = calculator.requested()
        if requested > MAX_QUERY_COST:
            sim.counters["max_cost_exceeded"] += 1
            return {
                "errors": [
                    {
                        "message": f"Query cost is {requested}, which exceeds the single query"
                        f" max cost limit ({MAX_QUERY_COST}).\n\nSee"
                        " https://shopify.dev/concepts/about-apis/rate-limits for more"
                        " information on how the cost of a query is calculated.\n\nTo query"
                        " larger amounts of data with fewer limits, bulk operations should be"
                        " used instead.\nSee https://shopify.dev/tutorials/perform-bulk-operations"
                        "-with-admin-api for usage details.\n",
                        "extensions": {
                            "code": "MAX_COST_EXCEEDED",
                            "cost": requested,
                            "maxCost": MAX_QUERY_COST,
                        },
                    }
                ],
                "extensions": self._cost(ctx, requested, None),
            }
        bucket = sim.bucket
        if bucket.available() < requested:
            sim.counters["throttled"] += 1
            return {
                "errors": [
                    {
                        "message": "Throttled",
                        "extensions": {
                            "code": "THROTTLED",
                            "documentation": "https://shopify.dev/api/usage/rate-limits",
                        },
                    }
                ],
                "extensions": self._cost(ctx, requested, None),
            }
        bucket.take(requested)
        data, errors = self.execute(ctx, document, operation, variables, operation_name)
        actual = min(requested, calculator.actual(data))
        bucket.refund(requested - actual)
        sim.counters["points_spent"] += actual
        answer: dict[str, Any] = {}
        if errors:
            answer["errors"] = errors
        answer["data"] = data
        answer["extensions"] = self._cost(ctx, requested, actual)
        return answer

    def execute(
        self,
        ctx: Context,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: dict[str, Any],
        operation_name: str | None,
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """Run a valid operation: the direct executor for queries, graphql-core otherwise."""
        if self.fast:
            try:
                fast = FastExecution(self.schema, operation, _fragments(document), variables, ctx)
                return fast.run(), []
            except Fallback:
                pass
        result = execute_sync(
            self.schema,
            document,
            context_value=ctx,
            variable_values=variables,
            operation_name=operation_name,
            field_resolver=field_resolver,
        )
        return result.data, [error_doc(e) for e in result.errors or ()]

    @staticmethod
    def _cost(ctx: Context, requested: int, actual: int | None) -> dict[str, Any]:
        return {
            "cost": {
                "requestedQueryCost": requested,
                "actualQueryCost": actual,
                "throttleStatus": ctx.sim.bucket.status(),
            }
        }


def _fragments(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}


def operations(document: DocumentNode) -> list[OperationDefinitionNode]:
    return [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
