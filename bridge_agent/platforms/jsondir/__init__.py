"""The `jsondir` platform: a catalog kept as canonical-product JSON files in one folder.

`<catalog_dir>/<product id>.json` holds one product in the canonical shape (`Product.to_dict`); a
missing file means the product does not exist. It serves stores with a custom back end (anything
that can write a JSON file can feed the hub, with the spool as its change hook), the demo, and the
end-to-end and crash tests, which need a store whose truth they can write and read directly.

Writers must write a temporary file and rename it (atomic), as for the spool.
"""

from bridge_agent.platforms.jsondir.adapter import JsonDir

__all__ = ["JsonDir"]
