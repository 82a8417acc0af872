"""Top-level field diffs: the `patch` operation of hub protocol v1.

A patch is `{"set": {field: value}, "unset": [field]}` computed between two canonical product
dicts. Granularity is the top-level field on purpose: nested diffs (one image's alt) would save a
few bytes but make every consumer re-implement list merging; replacing a whole field is simple and
always correct. Unset fields are absent from canonical dicts, so "became empty" is an `unset`.
Empty `set`/`unset` parts are left out of the patch to keep it small on the wire.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Patch = dict[str, Any]


def diff(base: Mapping[str, Any], new: Mapping[str, Any]) -> Patch:
    """The patch that turns `base` into `new`."""
    changed = {k: v for k, v in new.items() if k not in base or base[k] != v}
    removed = sorted(k for k in base if k not in new)
    patch: Patch = {}
    if changed:
        patch["set"] = changed
    if removed:
        patch["unset"] = removed
    return patch


def apply(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `patch` applied; raises ValueError on a malformed patch."""
    sets = patch.get("set", {})
    unsets = patch.get("unset", [])
    if not isinstance(sets, Mapping) or not isinstance(unsets, list | tuple):
        raise ValueError("patch must be {'set': {field: value}, 'unset': [field]}")  # noqa: TRY004 - one error type for callers
    extra = set(patch) - {"set", "unset"}
    if extra:
        raise ValueError(f"unknown patch part(s): {', '.join(sorted(map(str, extra)))}")
    out = dict(base)
    for field in unsets:
        out.pop(field, None)
    out.update(sets)
    return out
