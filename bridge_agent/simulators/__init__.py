"""Store simulators: fake platform servers for the demo, end-to-end tests and benchmarks.

Each simulator speaks a platform's wire format on loopback, holds a seeded, realistic catalog in
memory, and adds what a real store cannot offer a test: a control API (`/__sim/...`) to change
products behind the agent's back, read the ground truth, move the clock and inject faults.

- `core`: what every simulator shares: clock, faults, request stats, the platform-independent
  control routes, webhook transport, serving (docs/simulators.md, "Layout");
- `woocommerce`: WooCommerce REST v3, OAuth 1.0a and Basic auth, webhooks
  (reference/platforms.md section 1, checklist 1.14);
- `shopify`: Shopify's Admin GraphQL API on the real schema, query cost and bucket, bulk
  operations, webhooks (reference/platforms.md section 2, checklist 2.11).

Simulators speak JSON, not the agent's model: they import nothing of the agent (an import-linter
contract holds it), so a bug in the agent cannot leak into the store it is tested against.
"""
