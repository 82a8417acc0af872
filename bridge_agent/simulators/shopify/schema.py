"""The real Shopify Admin GraphQL schema the simulator executes against, and the version it pins.

The schema is Shopify's own introspection of Admin API 2026-07 (vendored next to this module as
`admin_2026-07.json.gz`, with its licence), not a hand-written imitation: a document the real API
would refuse is refused here, and one the simulator answers is one Shopify would accept. Tests of
the adapter validate every document it can send with `graphql.validate(admin_schema(), ...)`.

Building the schema takes a few tenths of a second, so it is built once per process (cached).
It is built with `assume_valid`: Shopify's schema deprecates six fields (`ChannelDefinition.id`,
`MediaImage.metafield`...) that implement interface fields which are not deprecated, a rule newer
graphql-core enforces and Shopify does not; documents are still validated against it in full.
"""

from __future__ import annotations

import functools
import gzip
import json
from pathlib import Path
from typing import Any

from graphql import GraphQLSchema, build_client_schema

API_VERSION = "2026-07"
"""The Admin API version the simulator serves (the newest stable in the vendored data)."""

_SCHEMA_FILE = Path(__file__).with_name(f"admin_{API_VERSION}.json.gz")


@functools.cache
def admin_schema() -> GraphQLSchema:
    """The Admin API schema of `API_VERSION`, built from the vendored introspection (cached)."""
    with gzip.open(_SCHEMA_FILE, "rt", encoding="utf-8") as handle:
        document: dict[str, Any] = json.load(handle)
    introspection = document.get("data", document)
    return build_client_schema(introspection, assume_valid=True)
