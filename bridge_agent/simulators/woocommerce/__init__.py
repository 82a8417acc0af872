"""A WooCommerce REST API v3 simulator (reference/platforms.md section 1, checklist 1.14).

What it models, each with its platforms.md section:

- `/wp-json/wc/v3` products, variations, categories, tags and webhooks with the real JSON shapes
  (1.4, 1.5), the real error codes and statuses (1.3) and WordPress's validation order;
- Basic and OAuth 1.0a one-legged authentication, read-only keys (1.2; `auth.py`);
- listing: paging headers, `per_page` 1-100, `status=any` without trash, exact `sku` lists that
  also find variations, exclusive `modified_after` on second-precision dates with
  `dates_are_gmt`, `_fields` (1.6-1.8; `catalog.py`, `rest.py`);
- writes: images replace-all with sideloading, meta upsert by key, trash vs force, batch with
  per-item errors and the 100-item limit (1.11; `writes.py`);
- webhooks: async, coalesced, unordered, signed, no retries, auto-disable, the creation ping,
  `product.deleted` on trash only (1.8; `webhooks.py`);
- hosts: latency, 500/503/429 with `Retry-After`, slow answers, WAF pages refusing PUT/POST
  (403/406/501 HTML), replies lost after a write was applied (1.10; `core.faults.Faults`,
  rendered as WordPress and its host answer in `app.py`);
- a seeded realistic catalog (`generate.py`) and a control API for tests (`control.py`, with the
  shared routes of `simulators/core/control.py`).

What it deliberately does not model: orders, coupons, customers, reviews, attribute and
variation writes over REST, sale schedules, grouped and external products' specifics, WP-Cron
delays beyond a configurable second or so, multilingual plugins, HTTPS termination (pass an
`ssl_context` to `serve` for that), and anything of WordPress outside `/wp-json`.

Public API:

- `WooSimulator.generate(products=N, seed=S, variable_ratio=0.2, duplicate_skus=False, ...)`
- `make_app(sim) -> aiohttp.web.Application`
- `await serve(sim, host, port, ready=callback)`: until cancelled
- `await run_cli(products, port, latency_ms, fail_rate, seed)`: `bridge-agent simulate woocommerce`
"""

from bridge_agent.simulators.core.delivery import signature
from bridge_agent.simulators.woocommerce.app import make_app, run_cli, serve
from bridge_agent.simulators.woocommerce.sim import Faults, WooSimulator

__all__ = ["Faults", "WooSimulator", "make_app", "run_cli", "serve", "signature"]
