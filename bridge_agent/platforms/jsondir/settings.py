"""The `jsondir` store settings: the spec its adapter declares (`JsonDir.settings_spec`).

A jsondir store takes one option, the folder of product files, and the optional webhook secret
(its webhooks are signed like WooCommerce's, for the tests that drive them). The config loader
reads this spec through the entry point, so config itself knows nothing of jsondir.
"""

from __future__ import annotations

from bridge_agent.config import FrozenMap, OptionSpec, PlatformSpec

__all__ = ["SETTINGS"]

SETTINGS = PlatformSpec(
    optional_secrets=("webhook_secret",),
    # Relative to agent.toml's folder, as every path in it.
    options=FrozenMap({"catalog_dir": OptionSpec("path", required=True)}),
)
