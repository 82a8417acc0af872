"""Change sources: they observe the store and record Changes in the state store.

A source never talks to the hub or the shipper: it records through the state store, then calls
`on_recorded` (the shipper's nudge). It records only products inside the store's `scope` (its
filters and test mode, `sources/filtering.py`). Every source of a store shares one
`StoreContext`; the `StoreSource` base holds it and the two things all sources do alike
(wake-ups and counting what they queued).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge_agent.health import Health
from bridge_agent.metrics import Metrics
from bridge_agent.model import Source
from bridge_agent.platforms import Platform
from bridge_agent.store import StateStore
from bridge_agent.sync.scope import Scope


@dataclass(frozen=True, slots=True)
class StoreContext:
    """The collaborators of one store's sources."""

    store_id: str
    platform: Platform
    state: StateStore
    on_recorded: Callable[[], None]
    metrics: Metrics
    health: Health
    scope: Scope = field(default_factory=Scope.everything)  # which products sync (filters)


class StoreSource:
    """Base of a store's root tasks: the context, a wake-up event, and `recorded()`."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx
        self.store_id = ctx.store_id
        self.health = ctx.health
        self._platform = ctx.platform
        self._state = ctx.state
        self._metrics = ctx.metrics
        self._wake = asyncio.Event()
        ctx.metrics.counter("bridge_changes_recorded_total", "Product changes queued for the hub.")

    def nudge(self) -> None:
        """Do the next round now rather than at its time."""
        self._wake.set()

    def recorded(self, queued: int, source: Source) -> None:
        """Count changes queued for the hub and wake the shipper."""
        if queued:
            self._metrics.inc("bridge_changes_recorded_total", queued, source=source)
            self.ctx.on_recorded()
