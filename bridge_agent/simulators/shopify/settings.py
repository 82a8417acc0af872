"""The Shopify simulator's fault settings: the shared ones plus Shopify's own.

`POST /__sim/faults` takes them all in one body (the shared control route calls `update`):

- the shared faults (`core.faults.Faults`: latency, failures, slow answers...);
- `bulk_fail`: the next N bulk operations FAIL (`true` is 1);
- `bulk_rate`: objects a bulk operation writes per second of the simulator's clock;
- `bucket_max`, `restore_rate`: the leaky bucket (Shopify: 2000 points, 100 points/s on the
  standard plan, read from `throttleStatus` by clients);
- `webhook_delay_s`, `webhook_jitter_s`: when a delivery leaves after its event;
- `webhook_duplicate_rate`, `webhook_reorder_rate` (+ `webhook_reorder_s`): duplicates with the
  same event id, deliveries held back so a newer one overtakes them;
- `webhook_retry_base_s`, `webhook_attempts`, `webhook_timeout_s`: the retry schedule (on the
  simulator's clock, doubling) and what counts as a failed attempt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge_agent.simulators.core.faults import Faults

_POSITIVE = ("bulk_rate", "bucket_max", "restore_rate", "webhook_timeout_s")
_NON_NEGATIVE = ("webhook_delay_s", "webhook_jitter_s", "webhook_reorder_s", "webhook_retry_base_s")
_FRACTIONS = ("webhook_duplicate_rate", "webhook_reorder_rate")


@dataclass
class ShopifyFaults(Faults):
    """Shared faults plus the Shopify simulator's settings (module docstring)."""

    bulk_fail: int = 0
    bulk_rate: float = 20_000.0
    bucket_max: float = 2000.0
    restore_rate: float = 100.0
    webhook_delay_s: float = 0.02
    webhook_jitter_s: float = 0.05
    webhook_duplicate_rate: float = 0.0
    webhook_reorder_rate: float = 0.0
    webhook_reorder_s: float = 0.3
    webhook_retry_base_s: float = 1.0
    webhook_attempts: int = 8
    webhook_timeout_s: float = 5.0

    def update(self, changes: Mapping[str, Any]) -> None:
        shared: dict[str, Any] = {}
        for name, value in changes.items():
            number = not isinstance(value, bool) and isinstance(value, int | float)
            if name == "bulk_fail":
                if isinstance(value, bool):
                    self.bulk_fail = int(value)
                elif isinstance(value, int) and value >= 0:
                    self.bulk_fail = value
                else:
                    raise ValueError("bulk_fail must be true, false or a count")
            elif name == "webhook_attempts":
                if not number or int(value) != value or value < 1:
                    raise ValueError("webhook_attempts must be a positive integer")
                self.webhook_attempts = int(value)
            elif name in _POSITIVE:
                if not number or value <= 0:
                    raise ValueError(f"{name} must be a positive number")
                setattr(self, name, float(value))
            elif name in _NON_NEGATIVE:
                if not number or value < 0:
                    raise ValueError(f"{name} must be a non-negative number")
                setattr(self, name, float(value))
            elif name in _FRACTIONS:
                if not number or not 0 <= value <= 1:
                    raise ValueError(f"{name} is a fraction between 0 and 1")
                setattr(self, name, float(value))
            else:
                shared[name] = value
        super().update(shared)
