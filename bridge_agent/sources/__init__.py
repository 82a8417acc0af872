"""Change sources: they observe the store and record Changes in the state store.

A source never talks to the hub or the shipper: it records through the state store, then nudges.
"""

from bridge_agent.metrics import Metrics


def declare_metrics(metrics: Metrics) -> None:
    """The counters every source shares (declaring twice is harmless)."""
    metrics.counter("bridge_changes_recorded_total", "Product changes queued for the hub.")
