"""Component health: named checks with transitions logged once.

Each long-lived component (the hub link, each store) owns a `Health` and reports into it. The
server reads them for `/healthz` and `/status`. A failure is logged when it starts and a recovery
when it ends, never on every retry (anchors: Home Assistant's coordinator, Vector's health).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger("bridge_agent.health")


@dataclass(frozen=True, slots=True)
class Check:
    """One named sub-check of /healthz."""

    name: str
    ok: bool
    state: str
    detail: str | None = None


@dataclass
class Health:
    """The state of one component: `ok`, `starting`, `inactive`, or a failing state."""

    name: str
    state: str = "starting"
    detail: str | None = None
    since: float = field(default_factory=time.time)
    failing: bool = False

    def ok(self, state: str = "ok", detail: str | None = None) -> None:
        if self.failing:
            log.info("component_recovered", component=self.name, after=self.state)
        self._set(state, detail, failing=False)

    def fail(self, state: str, detail: str) -> None:
        if not self.failing or state != self.state:
            log.error("component_failing", component=self.name, state=state, detail=detail)
        self._set(state, detail, failing=True)

    def _set(self, state: str, detail: str | None, *, failing: bool) -> None:
        if state != self.state or failing != self.failing:
            self.since = time.time()
        self.state, self.detail, self.failing = state, detail, failing

    def check(self) -> Check:
        return Check(self.name, not self.failing, self.state, self.detail)
