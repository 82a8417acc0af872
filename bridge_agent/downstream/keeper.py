"""The JSON-LD keeper: a product's `_bridge_jsonld` never shows an offer the store no longer makes.

Once the agent has written a product's JSON-LD (downstream/apply.py records the document, its
fingerprint and the hub's values in the `jsonld` table, store/jsonld.py), the keeper rebuilds and
rewrites it whenever the store changes what the document says: a price, a currency, a stock
status, a variant's price, an image... exactly what `jsonld_inputs` fingerprints (Lexiik's "Price
changed: structured data updated", "Out of stock: schema.org adjusted"). A new `updated_at`, an
SEO title or a stock quantity gives the same fingerprint and writes nothing.

When it looks: nudged each time the store's changes are recorded in the mirror (the `on_recorded`
of the store's sources: webhook hints, poll, spool, runs), at start, and on a slow beat (`BEAT`)
so that a lost nudge only waits. Each look is one indexed query for rows whose mirror hash moved
since the keeper last compared them (`seen_hash`); nothing is decoded for the others.

Per stale product, in rounds of `ROUND`:

1. the fingerprint of the mirror's product with the kept hub values: equal -> only `seen_hash`
   moves (nothing to write); the product deleted -> likewise (the page is gone);
2. otherwise the document is rebuilt and written (one batched call) on the condition that the
   store still holds the document the agent last wrote: `FieldWrite.expected`, which the Writer
   contract checks before it writes (guarantee 5);
3. the store is read again (one batched read) and what it holds decides:
   - the new document: `rewritten` (written now, or already: a rewrite that landed just before
     a crash is recognised and not written twice);
   - the document the agent last wrote: the write failed, the row stays stale for the next look;
   - anything else: someone else changed it. It is left alone, the row is released (`foreign`:
     the keeper never touches it again until the hub sends a new JSON-LD that the apply path
     writes), and an event says so;
4. in one transaction the rows move to the new document and fingerprint and the events are
   written ("product 12: price changed: structured data updated"). Every row update is
   conditioned on the row's version as read: an optimisation applied meanwhile wins.
   `bridge_jsonld_rewrites_total{outcome}` counts what happened.

A write that failed (the store down, a refusal) leaves the row stale: the next look (a nudge or
the beat) tries again. Nothing is retried blindly: the read after each attempt decides.

**Crash.** The store change is in the mirror (committed) before the keeper looks, and `seen_hash`
moves only with the record of what was done: a crash in between leaves the row stale and the
look at start redoes it. The write is conditional, and a document already there is recognised,
so redoing writes at most once.

**No loop.** The rewrite changes the product at the store, and the store announces it (webhook,
poll). That echo is recorded like any change: the canonical product does not contain
`_bridge_jsonld` (for WooCommerce it changes only `updated_at`, which the content hash ignores),
so it ships nothing; were it to differ, it would ship once. Either way its fingerprint is the
one just written (the builder reads nothing the rewrite changed), so it never starts another
rewrite. The keeper does not re-fetch the product after a write for the same reason: the mirror
already holds everything the document is built from.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from bridge_agent.config import StoreSettings
from bridge_agent.downstream.jsonld import JsonLdOptions
from bridge_agent.errors import InputError, PlatformError, StateStoreError
from bridge_agent.inputs import loads_json
from bridge_agent.metrics import Metrics
from bridge_agent.platforms.base import FieldRef, FieldWrite, WriteField, Writer, WriteResult
from bridge_agent.store import Event, StateStore, now_ms
from bridge_agent.store.jsonld import Kept, Stale
from bridge_agent.sync.retry import Backoff

log = structlog.get_logger("bridge_agent.downstream")

ROUND = 100  # stale products per round: one batched read, one batched write
BEAT = 300.0  # seconds between looks without a nudge
OUTCOMES = ("rewritten", "foreign", "failed")
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024  # a stored `_bridge_jsonld` parsed to compare it
_SCHEMA = "https://schema.org/"


def jsonld_options(store: StoreSettings) -> JsonLdOptions:
    """How a store's JSON-LD is built: relative URLs resolved against its URL; its `currency`
    option for products that carry none."""
    currency = store.options.get("currency")
    return JsonLdOptions(
        store_url=store.url, currency=currency if isinstance(currency, str) else None
    )


@dataclass(slots=True)
class Pass:
    """What one look did (for tests, the bench and the log)."""

    checked: int = 0  # stale rows looked at
    rewritten: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Todo:
    stale: Stale
    kept: Kept  # the rebuilt document, what the row becomes once it is written
    why: str
    ref: FieldRef
    outcome: str | None = None  # rewritten | foreign | failed
    detail: str | None = None


class JsonLdKeeper:
    """Root task part (`jsonld:<store>`): keeps one store's written JSON-LD true to its products."""

    def __init__(
        self,
        store_id: str,
        writer: Writer,
        state: StateStore,
        metrics: Metrics,
        *,
        options: JsonLdOptions,
        beat: float = BEAT,
        round_size: int = ROUND,
        backoff: Backoff | None = None,
    ) -> None:
        self.store_id = store_id
        self._writer = writer
        self._state = state
        self._metrics = metrics
        self.options = options
        self._beat = beat
        self._round = round_size
        self._backoff = backoff or Backoff()
        self._wake = asyncio.Event()
        self.failures = 0
        self.last_error: str | None = None
        metrics.counter(
            "bridge_jsonld_rewrites_total",
            "JSON-LD documents the keeper rewrote after a store change, by outcome.",
        )

    def nudge(self) -> None:
        """Changes were recorded in the mirror: look now."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                done = await self.refresh()
            except PlatformError as exc:
                # The store could not be read: nothing was decided, the rows stay stale.
                self.failures += 1
                self.last_error = str(exc)
                log.warning("jsonld_keeper_store_failed", store=self.store_id, error=str(exc))
                await asyncio.sleep(self._backoff.delay(self.failures - 1))
                continue
            except (StateStoreError, asyncio.CancelledError):
                raise
            except Exception as exc:
                # Something no check foresaw: said in status and the log, tried again later;
                # never the end of the agent (the rows stay stale, nothing is lost).
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("jsonld_keeper_failed", store=self.store_id)
                await asyncio.sleep(self._backoff.delay(self.failures - 1))
                continue
            if done.failed:
                # Rows left stale by a failed write: again after a growing pause.
                self.failures += 1
                self.last_error = f"{len(done.failed)} JSON-LD rewrite(s) failed"
                await asyncio.sleep(self._backoff.delay(self.failures - 1))
                continue
            self.failures, self.last_error = 0, None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._beat):
                    await self._wake.wait()

    async def refresh(self) -> Pass:
        """Look at every stale row once (by product id), rewriting what changed."""
        done = Pass()
        after = ""
        while True:
            stale = await self._state.jsonld_stale(self.store_id, after=after, limit=self._round)
            if not stale:
                return done
            after = stale[-1].product
            await self._look(stale, done)

    # -- one round -----------------------------------------------------------------------------

    async def _look(self, stale: Sequence[Stale], done: Pass) -> None:
        done.checked += len(stale)
        seen: list[tuple[str, int, str | None]] = []
        todo: list[_Todo] = []
        for row in stale:
            if row.current is None:
                seen.append((row.product, row.version, None))  # deleted: no page to keep
                continue
            hub = row.hub if isinstance(row.hub, Mapping) else None
            fingerprint = self.options.inputs(row.current, hub)
            if fingerprint == row.fingerprint:
                seen.append((row.product, row.version, row.hash))
                continue
            built = self.options.build(row.current, hub)
            kept = Kept(row.product, row.hub, fingerprint, built.document, row.hash)
            why = what_changed(row.document, built.document)
            todo.append(_Todo(row, kept, why, FieldRef(row.product, WriteField.JSONLD)))
        if todo:
            await self._rewrite(todo)
        await self._record(seen, todo)
        for t in todo:
            getattr(done, t.outcome or "failed").append(t.stale.product)

    async def _rewrite(self, todo: Sequence[_Todo]) -> None:
        """Write each new document on the condition that the store still holds the one the agent
        last wrote (the Writer contract: `expected`), then read again: what the store holds
        decides. No read before: the conditional write is that check, one request fewer."""
        answers: Sequence[WriteResult | None]
        try:
            answers = await self._writer.write_fields(
                [FieldWrite(t.ref, t.stale.document, t.kept.document) for t in todo]
            )
            if len(answers) != len(todo):
                answers = [None] * len(todo)
        except PlatformError as exc:
            # Ambiguous (or nothing sent): the read below decides what landed.
            log.warning("jsonld_keeper_write_failed", store=self.store_id, error=str(exc))
            answers = [None] * len(todo)
            for t in todo:
                t.detail = f"the store answered: {exc}"
        try:
            after = await self._writer.read_fields([t.ref for t in todo])
        except PlatformError as exc:
            for t in todo:
                t.outcome, t.detail = "failed", f"not read back: {exc}"
            return
        for t, answer in zip(todo, answers, strict=True):
            there = after.get(t.ref)
            if _same(there, t.kept.document):
                t.outcome = "rewritten"  # written now, or already (a rewrite before a crash)
            elif _same(there, t.stale.document):
                t.outcome = "failed"
                if answer is not None and answer.message:
                    t.detail = answer.message
                t.detail = t.detail or "the store did not take the new document"
            else:
                t.outcome, t.detail = "foreign", "changed by someone else"

    async def _record(self, seen: list[tuple[str, int, str | None]], todo: Sequence[_Todo]) -> None:
        store, at = self.store_id, now_ms()
        events: list[Event] = []
        rewritten: list[tuple[Kept, int]] = []
        released: list[tuple[str, int]] = []
        for t in todo:
            product = t.stale.product
            if t.outcome == "rewritten":
                rewritten.append((t.kept, t.stale.version))
                message = f"product {product}: {t.why}"
                events.append(Event(at, "info", store, product, None, message))
            elif t.outcome == "foreign":
                released.append((product, t.stale.version))
            else:
                log.warning(
                    "jsonld_keeper_rewrite_failed", store=store, product=product, error=t.detail
                )
        gone: list[str] = []
        if rewritten or seen or released:
            gone = await self._state.jsonld_refreshed(
                store, rewritten=rewritten, seen=seen, released=released, events=events
            )
        # Said only for rows actually released (a row whose version moved meanwhile was taken
        # back by an apply: nothing to say). Rare, so one small commit each is fine.
        for product in gone:
            await self._state.log_event(
                f"product {product}: _bridge_jsonld was changed by someone else: left alone"
                " (the agent no longer updates it until the hub sends new JSON-LD)",
                level="warning",
                store=store,
                product=product,
            )
        for t in todo:
            outcome = t.outcome or "failed"
            if outcome == "foreign" and t.stale.product not in gone:
                continue
            self._metrics.inc("bridge_jsonld_rewrites_total", store=store, outcome=outcome)
        if rewritten:
            log.info("jsonld_rewritten", store=store, products=len(rewritten))


# -- pure helpers ------------------------------------------------------------------------------


def what_changed(old: Any, new: Any) -> str:
    """The event's words for a rewrite: what the store changed, as the merchant would say it."""
    before, after = _offers(old), _offers(new)
    parts: list[str] = []
    if [o[0:2] for o in before] != [o[0:2] for o in after]:
        parts.append("price changed: structured data updated")
    stock_before, stock_after = [o[2] for o in before], [o[2] for o in after]
    if stock_before != stock_after:
        if after and all(s == "OutOfStock" for s in stock_after):
            parts.append("out of stock: schema.org adjusted")
        elif after and all(s == "InStock" for s in stock_after):
            parts.append("back in stock: schema.org adjusted")
        else:
            parts.append("stock status changed: schema.org adjusted")
    return "; ".join(parts) or "product changed: structured data updated"


def _offers(document: Any) -> list[tuple[Any, Any, str | None]]:
    """(price, currency, availability) of each offer of a document, in order."""
    if not isinstance(document, Mapping):
        return []
    nodes = [document, *(v for v in document.get("hasVariant", ()) if isinstance(v, Mapping))]
    out: list[tuple[Any, Any, str | None]] = []
    for node in nodes:
        offer = node.get("offers")
        if not isinstance(offer, Mapping):
            continue
        price = offer.get("price", (offer.get("lowPrice"), offer.get("highPrice")))
        availability = offer.get("availability")
        state = availability.removeprefix(_SCHEMA) if isinstance(availability, str) else None
        out.append((price, offer.get("priceCurrency"), state))
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal documents: a JSON text compares by its content, parsed within bounds (the store's
    meta is anyone's to set: a hostile one must not stop the keeper); empty is nothing."""
    a, b = _parsed(a), _parsed(b)
    return (a or None) == (b or None)


def _parsed(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return loads_json(value, max_bytes=MAX_DOCUMENT_BYTES, what="_bridge_jsonld")
    except InputError:
        return value  # not a document: equal only to the same text
