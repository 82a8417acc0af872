"""The state store: the agent's only SQL, in one SQLite file in WAL mode.

One module per table group, each doing its own table's SQL on the connection or transaction it
is handed, behind the `StateStore` facade that owns the connection, its thread and every
transaction (so a page of changes and its checkpoint, or a product and its hint, stay one
commit):

- `state.py`: the facade; durability settings, transactions, the compositions across tables;
- `mirror.py`: the canonical state of every product and what the hub holds of it;
- `outbox.py`: what is waiting to ship, and how the hub's answers settle it;
- `hints.py`: webhook hints waiting for their re-fetch;
- `runs.py`: resumable runs and their checkpoints;
- `events.py`: the event log operators read;
- `journal.py`: the downstream journal (optimisations, their outcomes, the values replaced);
- `jsonld.py`: the JSON-LD the agent wrote per product, which the keeper keeps true to the store;
- `cursors.py`: where incremental streams resume;
- `meta.py`: small facts (the seq counter, the last shipment);
- `identity.py`: the check that the file is still the one opened;
- `transaction.py`: the write transaction the modules share, and the clock;
- `schema.py`: DDL and migrations.

A new table group is one more module here and the facade
methods that compose it.
"""

from __future__ import annotations

from bridge_agent.store.events import Event
from bridge_agent.store.hints import Hint
from bridge_agent.store.journal import (
    Entry,
    Outcome,
    Received,
    Replaced,
    ReplacedRow,
    Report,
    Rollback,
    RollbackReport,
)
from bridge_agent.store.mirror import MirrorState, Repairs
from bridge_agent.store.outbox import DueItem, OutboxRow, OutboxStats, Settlement
from bridge_agent.store.runs import Run
from bridge_agent.store.state import DB_NAME, StateStore
from bridge_agent.store.transaction import now_ms

__all__ = [
    "DB_NAME",
    "DueItem",
    "Entry",
    "Event",
    "Hint",
    "MirrorState",
    "OutboxRow",
    "OutboxStats",
    "Outcome",
    "Received",
    "Repairs",
    "Replaced",
    "ReplacedRow",
    "Report",
    "Rollback",
    "RollbackReport",
    "Run",
    "Settlement",
    "StateStore",
    "now_ms",
]
