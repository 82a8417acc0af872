"""Every GraphQL document the Shopify adapter can send, and the cost each one asks for.

One module on purpose: a test validates each constant here against the real Admin schema of the
pinned API version (`settings.API_VERSION`), and checks its requested cost stays under the
single-query maximum (1000 points), so no document reaches a store untested. Nothing else in the
adapter writes GraphQL.

**Cost** (Shopify's calculated query cost, "rate limits" page): a scalar or enum costs 0, an
object 1, a connection 2 plus the objects it asks for (`first`), each node costing 1 plus its
own fields; `nodes(ids:)` costs its objects per id; a mutation 10. `requested_cost` computes that
from a document and its variables without the schema (a field with `first`/`last` is a
connection, one with a selection is an object), counting every inline fragment as if it matched
(an upper bound). The throttle model (`throttle.py`) uses it before the first answer of a
document says its real `requestedQueryCost`.

The product selection asks for `VARIANTS_FIRST` variants and `MEDIA_FIRST` media per product; a
product with more gets follow-up queries (`PRODUCT_VARIANTS`, `PRODUCT_MEDIA`, 200 a page) until
its connections end, so products with up to 2048 variants come complete. Each product costs
`PRODUCT_COST` points, so a paged query reads at most `products_per_query()` products (15 with
the defaults) and `nodes(ids:)` as many ids: the cost limit, not `first`'s cap of 250, bounds
pages here. The bulk operation (`BULK_PRODUCTS`) has no such limit: it is the full import.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    parse,
)

__all__ = [
    "BULK_OPERATION",
    "BULK_PRODUCTS",
    "BULK_RUN",
    "DOCUMENTS",
    "INVENTORY_ITEMS",
    "MAX_QUERY_COST",
    "MEDIA_FIRST",
    "MODIFIED_PRODUCTS",
    "NODES",
    "PAGE_FIRST",
    "PRODUCT",
    "PRODUCTS_PAGE",
    "PRODUCT_COST",
    "PRODUCT_IDS",
    "PRODUCT_IDS_FIRST",
    "PRODUCT_MEDIA",
    "PRODUCT_VARIANTS",
    "SHOP",
    "VARIANTS_FIRST",
    "WEBHOOK_CREATE",
    "WEBHOOK_DELETE",
    "WEBHOOK_SUBSCRIPTIONS",
    "parsed",
    "product_cost",
    "products_per_query",
    "requested_cost",
    "sized",
]

#: Shopify refuses a single query asking for more (`MAX_COST_EXCEEDED`).
MAX_QUERY_COST = 1000
#: What one request may ask for here: below the maximum, with room for a miscount.
COST_TARGET = 960
VARIANTS_FIRST = 10  # variants read with each product; more by PRODUCT_VARIANTS
MEDIA_FIRST = 5  # media read with each product; more by PRODUCT_MEDIA
PAGE_FIRST = 200  # variants or media per follow-up query (200 * 4 + 4 points)
PRODUCT_IDS_FIRST = 250  # ids per page of PRODUCT_IDS (253 points)

_VARIANT = """
fragment VariantFields on ProductVariant {
  id title sku barcode price compareAtPrice position inventoryQuantity inventoryPolicy
  selectedOptions { name value }
  inventoryItem { tracked }
  image { id url }
}
"""

_MEDIA = """
fragment MediaFields on MediaImage { id alt image { id url } }
"""

_PRODUCT = (
    """
fragment ProductFields on Product {
  id title handle status descriptionHtml vendor productType tags updatedAt totalInventory
  seo { title description }
  category { id name fullName }
  featuredMedia { id }
  variants(first: $variants) { pageInfo { hasNextPage endCursor } nodes { ...VariantFields } }
  media(first: $media) { pageInfo { hasNextPage endCursor } nodes { ...MediaFields } }
}
"""
    + _VARIANT
    + _MEDIA
)

SHOP = """
query Shop { shop { name currencyCode myshopifyDomain primaryDomain { url } } }
"""

PRODUCT = (
    """
query Product($id: ID!, $variants: Int!, $media: Int!) { product(id: $id) { ...ProductFields } }
"""
    + _PRODUCT
)

NODES = (
    """
query ProductNodes($ids: [ID!]!, $variants: Int!, $media: Int!) {
  nodes(ids: $ids) { __typename ... on Product { ...ProductFields } }
}
"""
    + _PRODUCT
)

PRODUCTS_PAGE = (
    """
query ProductsPage($first: Int!, $after: String, $variants: Int!, $media: Int!) {
  products(first: $first, after: $after, sortKey: ID) {
    pageInfo { hasNextPage endCursor }
    nodes { ...ProductFields }
  }
}
"""
    + _PRODUCT
)

MODIFIED_PRODUCTS = (
    """
query ModifiedProducts(
  $first: Int!, $after: String, $query: String!, $variants: Int!, $media: Int!
) {
  products(first: $first, after: $after, sortKey: UPDATED_AT, query: $query) {
    pageInfo { hasNextPage endCursor }
    nodes { ...ProductFields }
  }
}
"""
    + _PRODUCT
)

PRODUCT_IDS = """
query ProductIds($first: Int!, $after: String) {
  products(first: $first, after: $after, sortKey: ID) {
    pageInfo { hasNextPage endCursor }
    nodes { id }
  }
}
"""

PRODUCT_VARIANTS = (
    """
query ProductVariants($id: ID!, $first: Int!, $after: String) {
  product(id: $id) {
    variants(first: $first, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes { ...VariantFields }
    }
  }
}
"""
    + _VARIANT
)

PRODUCT_MEDIA = (
    """
query ProductMedia($id: ID!, $first: Int!, $after: String) {
  product(id: $id) {
    media(first: $first, after: $after) {
      pageInfo { hasNextPage endCursor }
      nodes { ...MediaFields }
    }
  }
}
"""
    + _MEDIA
)

#: 3 points an item, the least the schema allows: the item, its variant and its product are an
#: object each (ids cost nothing), and no field of the item or the variant names the product.
INVENTORY_ITEMS = """
query InventoryItems($ids: [ID!]!) {
  nodes(ids: $ids) { ... on InventoryItem { variant { product { id } } } }
}
"""

#: The bulk operation's query (sent as a string): the same fields as `ProductFields`, without
#: `first` (a bulk query reads every node) and without fragments or pageInfo. Two connections
#: nested one level: within Shopify's bulk limits (5 connections, 2 levels).
BULK_PRODUCTS = """
{
  products {
    edges {
      node {
        id title handle status descriptionHtml vendor productType tags updatedAt totalInventory
        seo { title description }
        category { id name fullName }
        featuredMedia { id }
        variants {
          edges {
            node {
              id title sku barcode price compareAtPrice position inventoryQuantity
              inventoryPolicy
              selectedOptions { name value }
              inventoryItem { tracked }
              image { id url }
            }
          }
        }
        media { edges { node { ... on MediaImage { id alt image { id url } } } } }
      }
    }
  }
}
"""

#: `groupObjects: false`: the default from 2026-01 and the faster one; the parser attaches
#: children whatever their order (`bulk.py`).
BULK_RUN = """
mutation BulkProducts($query: String!) {
  bulkOperationRunQuery(query: $query, groupObjects: false) {
    bulkOperation { id status }
    userErrors { field message code }
  }
}
"""

BULK_OPERATION = """
query BulkOperation($id: ID!) {
  node(id: $id) {
    ... on BulkOperation {
      id status errorCode url partialDataUrl objectCount rootObjectCount fileSize createdAt
    }
  }
}
"""

WEBHOOK_SUBSCRIPTIONS = """
query WebhookSubscriptions($topics: [WebhookSubscriptionTopic!], $after: String) {
  webhookSubscriptions(first: 100, after: $after, topics: $topics) {
    pageInfo { hasNextPage endCursor }
    nodes { id topic uri }
  }
}
"""

WEBHOOK_CREATE = """
mutation WebhookCreate($topic: WebhookSubscriptionTopic!, $sub: WebhookSubscriptionInput!) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $sub) {
    webhookSubscription { id topic uri }
    userErrors { field message }
  }
}
"""

WEBHOOK_DELETE = """
mutation WebhookDelete($id: ID!) {
  webhookSubscriptionDelete(id: $id) {
    deletedWebhookSubscriptionId
    userErrors { field message }
  }
}
"""

# -- cost ------------------------------------------------------------------------------------------

_MUTATION_COST = 10
_NODE_FIELDS = frozenset({"nodes", "edges", "node"})


@functools.cache
def parsed(document: str) -> DocumentNode:
    """The document parsed (cached: the adapter sends a dozen documents, many times)."""
    return parse(document)


def requested_cost(document: str, variables: Mapping[str, Any] | None = None) -> int:
    """The points Shopify would ask for `document` with `variables` (an upper bound)."""
    tree = parsed(document)
    fragments = {d.name.value: d for d in tree.definitions if isinstance(d, FragmentDefinitionNode)}
    total = 0
    for definition in tree.definitions:
        if isinstance(definition, OperationDefinitionNode):
            walk = _Walk(fragments, variables or {})
            cost = walk.selection(definition.selection_set)
            if definition.operation is OperationType.MUTATION:
                cost += _MUTATION_COST
            total += cost
    return total


def products_per_query(
    variants: int = VARIANTS_FIRST, media: int = MEDIA_FIRST, *, bucket: float | None = None
) -> int:
    """How many products one paged or `nodes` query may read within `COST_TARGET`, and within
    `bucket`, the shop's bucket size when known: a query asking for more points than the bucket
    holds when full would be answered THROTTLED for ever (a shop may run with a bucket smaller
    than the single-query maximum: Shopify may lower limits)."""
    each = product_cost(variants, media)
    target = COST_TARGET if bucket is None else min(COST_TARGET, int(bucket))
    return max(1, min(PRODUCT_IDS_FIRST, (target - 3) // each))


def sized(
    document: str,
    variable: str,
    cap: int,
    *,
    bucket: float | None = None,
    ids: bool = False,
    **fixed: Any,
) -> int:
    """The largest `variable` (`first`, or the length of an `ids` list) up to `cap` that keeps
    `document` within `COST_TARGET` and within `bucket`, the shop's bucket size when known: the
    cost grows by the same points for each node asked (a query asking more than a full bucket
    would be answered THROTTLED for ever)."""

    def cost(n: int) -> int:
        value: Any = ["x"] * n if ids else n
        return requested_cost(document, {**fixed, variable: value})

    each = cost(2) - cost(1)
    if each <= 0:
        return cap
    base = cost(1) - each
    target = COST_TARGET if bucket is None else min(COST_TARGET, int(bucket))
    return max(1, min(cap, (target - base) // each))


def product_cost(variants: int = VARIANTS_FIRST, media: int = MEDIA_FIRST) -> int:
    """The points of one product of `ProductFields` (the product object included)."""
    return requested_cost(PRODUCT, {"variants": variants, "media": media})


class _Walk:
    def __init__(
        self, fragments: Mapping[str, FragmentDefinitionNode], variables: Mapping[str, Any]
    ) -> None:
        self.fragments = fragments
        self.variables = variables

    def selection(self, selection_set: SelectionSetNode | None) -> int:
        if selection_set is None:
            return 0
        total = 0
        for node in selection_set.selections:
            if isinstance(node, FieldNode):
                total += self.field(node)
            elif isinstance(node, InlineFragmentNode):
                total += self.selection(node.selection_set)
            elif isinstance(node, FragmentSpreadNode):
                fragment = self.fragments.get(node.name.value)
                if fragment is not None:
                    total += self.selection(fragment.selection_set)
        return total

    def field(self, node: FieldNode) -> int:
        if node.selection_set is None:
            return 0  # a scalar or an enum
        arguments = {a.name.value: a.value for a in node.arguments or ()}
        size = self._count(arguments.get("first")) or self._count(arguments.get("last"))
        if size is not None:
            return 2 + size + self.connection(node.selection_set, size)
        ids = self._length(arguments.get("ids"))
        if ids is not None:
            return ids * (1 + self.selection(node.selection_set))
        return 1 + self.selection(node.selection_set)

    def connection(self, selection_set: SelectionSetNode, size: int) -> int:
        """The fields of a connection: its nodes' fields `size` times, the rest once."""
        total = 0
        for node in selection_set.selections:
            if isinstance(node, FieldNode) and node.name.value in _NODE_FIELDS:
                if node.name.value == "edges":
                    total += size * self.edges(node.selection_set)
                else:
                    total += size * self.selection(node.selection_set)
            elif isinstance(node, FieldNode):
                total += self.field(node)
        return total

    def edges(self, selection_set: SelectionSetNode | None) -> int:
        if selection_set is None:
            return 0
        total = 0
        for node in selection_set.selections:
            if isinstance(node, FieldNode) and node.name.value == "node":
                total += self.selection(node.selection_set)
            elif isinstance(node, FieldNode):
                total += self.field(node)
        return total

    def _count(self, value: Any) -> int | None:
        if isinstance(value, IntValueNode):
            return int(value.value)
        if isinstance(value, VariableNode):
            given = self.variables.get(value.name.value)
            if isinstance(given, int) and not isinstance(given, bool):
                return given
            return None if given is None else 0
        return None

    def _length(self, value: Any) -> int | None:
        if isinstance(value, ListValueNode):
            return len(value.values)
        if isinstance(value, VariableNode):
            given = self.variables.get(value.name.value)
            if isinstance(given, list | tuple):
                return len(given)
        return None


#: The points of one product as the adapter reads it (60 with the defaults).
PRODUCT_COST = product_cost()

_NESTED: Mapping[str, int] = {"variants": VARIANTS_FIRST, "media": MEDIA_FIRST}

#: Every document, by name, with variables that make it ask the most it ever asks (the test
#: validates each against the schema and checks its cost).
DOCUMENTS: Mapping[str, tuple[str, Mapping[str, Any]]] = {
    "SHOP": (SHOP, {}),
    "PRODUCT": (PRODUCT, _NESTED),
    "NODES": (NODES, {**_NESTED, "ids": ["gid"] * products_per_query()}),
    "PRODUCTS_PAGE": (PRODUCTS_PAGE, {**_NESTED, "first": products_per_query()}),
    "MODIFIED_PRODUCTS": (
        MODIFIED_PRODUCTS,
        {**_NESTED, "first": products_per_query(), "query": "updated_at:>='2026-01-01T00:00:00Z'"},
    ),
    "PRODUCT_IDS": (PRODUCT_IDS, {"first": PRODUCT_IDS_FIRST}),
    "PRODUCT_VARIANTS": (PRODUCT_VARIANTS, {"first": PAGE_FIRST}),
    "PRODUCT_MEDIA": (PRODUCT_MEDIA, {"first": PAGE_FIRST}),
    "INVENTORY_ITEMS": (INVENTORY_ITEMS, {"ids": ["x"] * 100}),
    "BULK_PRODUCTS": (BULK_PRODUCTS, {}),
    "BULK_RUN": (BULK_RUN, {}),
    "BULK_OPERATION": (BULK_OPERATION, {}),
    "WEBHOOK_SUBSCRIPTIONS": (WEBHOOK_SUBSCRIPTIONS, {}),
    "WEBHOOK_CREATE": (WEBHOOK_CREATE, {}),
    "WEBHOOK_DELETE": (WEBHOOK_DELETE, {}),
}

# -- the writer's documents (downstream, `writer.py`) ----------------------------------------------

WRITER_MEDIA_FIRST = 20  # media read with each product whose ALT is written; more by PRODUCT_MEDIA
METAFIELDS_PER_CALL = 25  # metafieldsSet's input limit
FILES_PER_CALL = 25  # files per fileUpdate: a modest cost, and a refusal names few writes

#: The JSON-LD lives in the product metafield `bridge.jsonld` (`writer.JSONLD_NAMESPACE`, `KEY`).
_WRITER_PRODUCT = """
fragment WriterProduct on Product {
  id descriptionHtml
  seo { title description }
  jsonld: metafield(namespace: "bridge", key: "jsonld") { type value compareDigest }
}
"""

#: The current values of the fields the writer writes, without media (4 points a product).
WRITER_FIELDS = (
    """
query WriterFields($ids: [ID!]!) {
  nodes(ids: $ids) { __typename ... on Product { ...WriterProduct } }
}
"""
    + _WRITER_PRODUCT
)

#: The same with the first `$media` media's ALT, for products whose image ALT is written.
WRITER_FIELDS_MEDIA = (
    """
query WriterFieldsMedia($ids: [ID!]!, $media: Int!) {
  nodes(ids: $ids) {
    __typename
    ... on Product {
      ...WriterProduct
      media(first: $media) {
        pageInfo { hasNextPage endCursor }
        nodes { ... on MediaImage { id alt } }
      }
    }
  }
}
"""
    + _WRITER_PRODUCT
)

#: `product:` (ProductUpdateInput), never the deprecated `input:` (platforms.md 2.9: `input:`
#: has been seen answering success without applying anything).
PRODUCT_UPDATE = """
mutation WriterProductUpdate($product: ProductUpdateInput!) {
  productUpdate(product: $product) {
    product { id }
    userErrors { field message }
  }
}
"""

FILE_UPDATE = """
mutation WriterFileUpdate($files: [FileUpdateInput!]!) {
  fileUpdate(files: $files) {
    files { id }
    userErrors { field message code }
  }
}
"""

METAFIELDS_SET = """
mutation WriterMetafieldsSet($metafields: [MetafieldsSetInput!]!) {
  metafieldsSet(metafields: $metafields) {
    metafields { id compareDigest }
    userErrors { field message code elementIndex }
  }
}
"""

DOCUMENTS = {
    **DOCUMENTS,
    "WRITER_FIELDS": (WRITER_FIELDS, {"ids": ["gid"] * 200}),
    "WRITER_FIELDS_MEDIA": (
        WRITER_FIELDS_MEDIA,
        {"ids": ["gid"] * 30, "media": WRITER_MEDIA_FIRST},
    ),
    "PRODUCT_UPDATE": (PRODUCT_UPDATE, {}),
    "FILE_UPDATE": (FILE_UPDATE, {}),
    "METAFIELDS_SET": (METAFIELDS_SET, {}),
}

#: Empties the JSON-LD: a `json` metafield cannot hold nothing, so it is deleted. The input has
#: no `compareDigest` (the writer compares with its batched read just before).
METAFIELDS_DELETE = """
mutation WriterMetafieldsDelete($metafields: [MetafieldIdentifierInput!]!) {
  metafieldsDelete(metafields: $metafields) {
    deletedMetafields { ownerId namespace key }
    userErrors { field message }
  }
}
"""

DOCUMENTS = {**DOCUMENTS, "METAFIELDS_DELETE": (METAFIELDS_DELETE, {})}
