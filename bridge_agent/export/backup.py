"""The backup written before a bulk apply (`backup_before_bulk`, issue 17 item 4).

When one apply round (downstream/apply.py) is about to apply more than a store's
`backup_threshold` optimisations, it first calls the store's `BulkBackup`: the products those
optimisations touch are exported from the mirror, as the agent last saw them in the store, to
the store's `backup_destination` (by default the folder `<state_dir>/backups/<store id>`), and
the backup is logged (action `backup`). Only once the file is safely there does the round write.

Why jsonl with every field group: it is the canonical model of each product (every field the
agent reads, variants and images nested, money as text), plus the JSON-LD the agent wrote and
the history of the values it replaced, one product per line: what a person or a script needs to
put the products back as they were, and it reads back without loss (a CSV flattens variants and
lists). The file is `<store>-backup-<UTC time>.jsonl`; backups are never rotated away: each one
is the only copy of the products before that bulk.

Why a failed backup holds the bulk: an operator who asked for a backup must never get the bulk
without it. `BulkBackup` raises `BackupFailed`; the apply loop keeps the round's optimisations
open (nothing written, nothing marked) and tries the round again, backup first, after its
back-off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

import structlog

from bridge_agent.config import StoreSettings
from bridge_agent.config.exports import FolderDestinationSettings
from bridge_agent.errors import BridgeError
from bridge_agent.export.destinations import (
    Delivered,
    Destination,
    destination_for,
    export_file_name,
)
from bridge_agent.export.request import ExportRequest
from bridge_agent.export.schedule import state_dir_of, write_to_file
from bridge_agent.store import StateStore

__all__ = ["ACTION", "BackupFailed", "BulkBackup", "backup_name"]

log = structlog.get_logger("bridge_agent.export.backup")

ACTION = "backup"
FORMAT: Final = "jsonl"
FIELDS = ("all",)


class BackupFailed(BridgeError):
    """The backup before a bulk apply could not be written: the bulk is held."""


def backup_name(store: str) -> str:
    return f"{store}-backup"


class BulkBackup:
    """A store's backup before a bulk apply: `await backup(products, optimizations)`."""

    def __init__(
        self,
        state: StateStore,
        store: StoreSettings,
        *,
        destination: Destination | None = None,
    ) -> None:
        self._state = state
        self.store = store
        self.threshold = store.backup_threshold
        settings = store.backup_destination or FolderDestinationSettings(
            state_dir_of(state) / "backups" / store.id
        )
        self._destination = destination if destination is not None else destination_for(settings)

    async def __call__(self, products: Sequence[str], optimizations: int) -> Delivered:
        """Export `products` to the backup destination; `BackupFailed` if it is not there."""
        store = self.store.id
        started = datetime.now(UTC)
        request = ExportRequest(
            store=store,
            format=FORMAT,
            fields=FIELDS,
            name=backup_name(store),
            currency=self.store.options.get("currency") or None,
            store_url=self.store.url,
            store_title=store,
            products=frozenset(products),
        )
        temp = None
        try:
            temp, report = await asyncio.to_thread(
                write_to_file, state_dir_of(self._state), request, backup_name(store)
            )
            name = export_file_name(backup_name(store), started, ".jsonl")
            delivered = await self._destination.deliver(temp, name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # whatever it is, the bulk must not go without its backup
            cause = str(exc) if isinstance(exc, BridgeError | OSError) else repr(exc)
            failed = (
                f"the backup of {len(products)} product(s) to {self._destination.label}"
                f" failed: {cause}"
            )
            message = (
                f"bulk of {optimizations} optimization(s) held: {failed}; nothing written,"
                " tried again at the next round"
            )
            log.error("backup_failed", store=store, detail=message)
            await self._state.log_event(message, level="error", store=store, action=ACTION)
            raise BackupFailed(failed) from exc
        finally:
            if temp is not None:
                temp.unlink(missing_ok=True)
        message = (
            f"backup before applying {optimizations} optimization(s): {report.products}"
            f" product(s), {report.bytes} bytes to {delivered.location}"
        )
        log.info("backup_written", store=store, detail=message)
        await self._state.log_event(message, store=store, action=ACTION)
        return delivered
