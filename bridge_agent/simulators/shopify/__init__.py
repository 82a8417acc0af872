"""A Shopify Admin GraphQL API simulator (reference/platforms.md section 2, checklist 2.11).

What it models, each with its platforms.md section:

- `POST /admin/api/{version}/graphql.json` with `X-Shopify-Access-Token`, executing requests
  against the real Admin schema of 2026-07 (`schema.py`: Shopify's introspection, so a document
  the real API refuses is refused here, HTTP 200 with Shopify's error shape) (2.1, 2.2;
  `execution.py`);
- products with variants, inventory items, media images with ALT, SEO, metafields, options;
  global ids; statuses ACTIVE / DRAFT / ARCHIVED / UNLISTED (2.3; `model.py`, `generate.py`);
- connections with opaque cursors, `first`/`last` up to 250, `nodes` and `edges`, the
  `query:` search syntax subset, `sortKey`, `reverse`; `product(id:)` null once deleted;
  `nodes(ids:)` (2.4, 2.6; `resolvers.py`, `search.py`, `catalog.py`);
- the calculated query cost, `extensions.cost` on every answer, the leaky bucket on the
  simulator's clock, `THROTTLED` and `MAX_COST_EXCEEDED` (2.8; `cost.py`);
- bulk operations: inner-query rules, up to 5 at once, CREATED -> RUNNING -> COMPLETED on the
  clock, JSONL with `__parentId` (shuffled unless `groupObjects`), failures with
  `partialDataUrl`, cancel, expiry, `bulk_operations/finish` (2.5; `bulk.py`);
- webhooks subscribed through GraphQL, REST-shaped payloads, `X-Shopify-*` headers, base64
  HMAC-SHA256 with the client secret, retries of the original payload on the clock,
  duplicates and reordering as faults (2.7; `webhooks.py`);
- `productUpdate`, `fileUpdate`, `metafieldsSet`, `metafieldsDelete` with `userErrors` (2.9;
  `mutations.py`);
- faults, latency, a truth dump and a mutation API like the WooCommerce simulator's
  (`control.py`, `settings.py`, with the shared `simulators/core`).

What it deliberately does not model: orders, customers, collections, locations beyond one,
translations, publications, bulk mutations, REST endpoints, OAuth installation, API version
differences (every path version answers 2026-07), and fields of the schema the agent does not
read (they answer null, or a zero value when the schema makes them non-null).

Public API:

- `ShopifySimulator.generate(products=N, seed=S)`
- `make_app(sim) -> aiohttp.web.Application`
- `await serve(sim, host, port, ready=callback)`: until cancelled
- `await run_cli(products, port, latency_ms, fail_rate, seed)`: `bridge-agent simulate shopify`
- `schema.admin_schema()`, `schema.API_VERSION`
"""

from bridge_agent.simulators.core.delivery import signature
from bridge_agent.simulators.shopify.app import make_app, run_cli, serve
from bridge_agent.simulators.shopify.schema import API_VERSION, admin_schema
from bridge_agent.simulators.shopify.settings import ShopifyFaults
from bridge_agent.simulators.shopify.sim import ShopifySimulator

__all__ = [
    "API_VERSION",
    "ShopifyFaults",
    "ShopifySimulator",
    "admin_schema",
    "make_app",
    "run_cli",
    "serve",
    "signature",
]
