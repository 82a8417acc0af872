"""The `woocommerce` platform: a WooCommerce store read through its REST API (wc/v3).

`settings.py` checks the store's settings, `client.py` talks HTTP (auth, errors, retries, paging),
`mapping.py` turns product JSON into the canonical product (pure), `webhooks.py` verifies webhook
deliveries (pure) and `adapter.py` puts them together behind the `Platform` protocol. Operator
documentation: `docs/platforms/woocommerce.md`.
"""

from bridge_agent.platforms.woocommerce.adapter import WooCommerce

__all__ = ["WooCommerce"]
