"""The `jsondir` platform: a catalog kept as canonical-product JSON files in one folder.

`<catalog_dir>/<product id>.json` holds one product in the canonical shape (`Product.to_dict`); a
missing file means the product does not exist. It serves stores with a custom back end (anything
that can write a JSON file can feed the hub, with the spool as its change hook), the demo, and the
end-to-end and crash tests, which need a store whose truth they can write and read directly.

Writers must write a temporary file and rename it (atomic), as for the spool.

Status mapping (Sales Layer's rule, design.md section 3): the files hold the canonical `status`
itself, so the writer maps its own states, and the store filters (`[stores.filters]`) see them
as written:

| the writer's state | Sales Layer | `status` in the file |
| --- | --- | --- |
| visible, published, for sale | visible | `active` (also when absent: the default) |
| draft, not yet published | draft | `draft` |
| hidden, unpublished, trashed | invisible | `archived` |

A product that no longer exists has no file (a deletion), not an `archived` status.
"""

from bridge_agent.platforms.jsondir.adapter import JsonDir

__all__ = ["JsonDir"]
