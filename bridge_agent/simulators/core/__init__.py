"""What every store simulator shares, so a new platform's simulator writes only its platform.

A platform simulator (`woocommerce/`, next `shopify/`) owns its wire format, its catalog, its
authentication, its error shape and its webhook semantics (topics, headers, retries or none).
Everything a test needs from *any* simulated store, and that behaves the same whatever the
platform, lives here:

- `clock`: the store's clock (second precision, frozen, set, advanced) and the clock control;
- `faults`: the fault settings (latency with jitter, failures by rate or in an exact sequence,
  slow answers) and the draw that applies them to one request, deterministic for a seed;
- `stats`: requests counted by route and status (an aiohttp middleware);
- `delivery`: webhook transport: delayed delivery tasks, loopback-only POSTs, drain and close,
  and the base64 HMAC-SHA256 signature both WooCommerce and Shopify use;
- `control`: the platform-independent `/__sim/...` routes (faults, clock, truth, stats, webhook
  drain) over any simulator that has the `Controlled` shape, and `ControlError`, which each
  platform's error middleware renders in its own error shape;
- `serving`: serve an application on loopback until cancelled, telling the caller its port.

Nothing here knows a platform, and nothing in `bridge_agent.simulators` imports the agent
(an import-linter contract holds that): a simulator is the independent store the agent is
tested against.
"""
