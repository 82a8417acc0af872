"""One store's downstream task: the feed, the apply loop and the result poster, together.

`writer_of` decides whether a store has a downstream direction at all: its adapter must
implement `Writer` and declare at least one `write.*` capability (the core asks, never assumes).
The three parts share nothing but the journal (store/journal.py) and nudges: the feed wakes the
apply loop, the apply loop wakes the poster; each also looks at the journal on its own beat, so
a lost nudge (or an approval made by the CLI in another process) only waits for that beat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bridge_agent.config import StoreSettings
from bridge_agent.downstream.apply import Applier, BulkBackup, DownstreamSettings
from bridge_agent.downstream.feed import LONG_POLL, FeedReader, HubLink
from bridge_agent.downstream.keeper import jsonld_options
from bridge_agent.downstream.results import ResultPoster
from bridge_agent.metrics import Metrics
from bridge_agent.platforms.base import WRITE_CAPABILITIES, Platform, Writer, capabilities_of
from bridge_agent.store import StateStore


def writer_of(platform: Platform) -> Writer | None:
    """The adapter as a `Writer`, when it is one and declares a field it writes."""
    if isinstance(platform, Writer) and capabilities_of(platform) & WRITE_CAPABILITIES:
        return platform
    return None


class Downstream:
    """The `downstream:<store>` root task."""

    def __init__(
        self,
        store: StoreSettings,
        platform: Platform,
        writer: Writer,
        state: StateStore,
        metrics: Metrics,
        *,
        hub: Callable[[], HubLink],
        on_recorded: Callable[[], None],
        wait: float = LONG_POLL,
        backup: BulkBackup | None = None,
    ) -> None:
        self.results = ResultPoster(store.id, hub, state, metrics)
        self.applier = Applier(
            store.id,
            platform,
            writer,
            state,
            metrics,
            capabilities=capabilities_of(platform),
            settings=DownstreamSettings(
                store.apply_mode,
                store.alt_shared_attachments,
                store.concurrency,
                jsonld_options(store),
            ),
            on_outcome=self.results.nudge,
            on_recorded=on_recorded,
            backup=backup,  # `backup_before_bulk`: export/backup.py, made by stores.py
        )
        self.feed = FeedReader(
            store.id,
            hub,
            state,
            metrics,
            on_journaled=self.applier.nudge,
            on_refused=self.results.nudge,
            wait=wait,
        )

    def problem(self) -> str | None:
        """What is wrong with the downstream direction now, for `status` (None: all is well):
        the current error of the feed, the apply loop or the result poster, first found."""
        errors = (
            ("feed", self.feed.last_error),
            ("apply", self.applier.last_error),
            ("results", self.results.last_error),
        )
        return next((f"{part}: {error}" for part, error in errors if error), None)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.feed.run())
            group.create_task(self.applier.run())
            group.create_task(self.results.run())
