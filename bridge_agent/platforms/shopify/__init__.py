"""The `shopify` platform: a Shopify shop read through the Admin GraphQL API (pinned 2026-07).

`settings.py` checks the store's settings, `queries.py` holds every GraphQL document the adapter
sends (each validated against the real schema in the tests) and their cost, `throttle.py` models
the shop's cost bucket, `client.py` talks HTTP (the token, Shopify's errors, throttling),
`mapping.py` turns a product node into the canonical product (pure), `bulk.py` assembles a bulk
operation's JSONL result (pure), `webhooks.py` verifies deliveries (pure) and `adapter.py` puts
them together behind the `Platform` protocol. Operator documentation: `docs/platforms/shopify.md`.
"""

from bridge_agent.platforms.shopify.adapter import Shopify

__all__ = ["Shopify"]
