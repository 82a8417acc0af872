"""The store side of the chaos oracle: a simulated WooCommerce or Shopify store, the merchant's
hand on it, and the write log the oracle judges downstream writes by.

The simulator runs in the chaos driver's own event loop (not in a process of its own) for two
reasons: the merchant's changes go through its Python face, so each one is applied at a known
moment and can choose how the agent may learn about it (webhook, spool hint, only the
modified-since poll, or nothing but verification); and every write the agent makes through the
platform's API is seen as it is applied (`Writes`), which is how "no write applied twice" is
counted rather than guessed. The agent still talks to it over real HTTP on loopback.

Faults come from the simulator's own settings (`/__sim/faults`: 429, 5xx, latency, slow answers,
a write's reply dropped after it was applied), plus connection resets for every request of the
platform API (`ResetFault`), before the store sees the request or after it applied it.

Values the chaos driver writes carry markers the oracle can find again in any field: an
optimisation's `to` values hold `opt<N>-<field>`, the merchant's edits `merchant<N>-<field>`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import random
import re
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web
from aiohttp.typedefs import Handler

from bridge_agent import platforms
from bridge_agent.config import StoreSettings
from bridge_agent.model import settle
from bridge_agent.simulators.core.serving import serve_app
from bridge_agent.simulators.shopify import ShopifySimulator
from bridge_agent.simulators.shopify import app as shopify_app
from bridge_agent.simulators.woocommerce import WooSimulator
from bridge_agent.simulators.woocommerce import app as woo_app
from bridge_agent.testing.catalog import spool_event, write_spool

STORE = "main"
WEBHOOK_SECRET = "chaos-webhook-secret-0b7d"  # noqa: S105 - a simulated store's
OPT_MARK = re.compile(r"opt(\d+)-(title|meta|desc|alt)\b")
FIELD_OF_TAG = {
    "title": "seo_title",
    "meta": "seo_description",
    "desc": "description_html",
    "alt": "image_alt",
}
WOO_SEO = {
    "_yoast_wpseo_title": "seo_title",
    "_yoast_wpseo_metadesc": "seo_description",
    "rank_math_title": "seo_title",
    "rank_math_description": "seo_description",
}

# Fault settings the driver switches between; "resets" is ResetFault's, the others the
# simulator's own (`core.faults.Faults`).
FAULT_KINDS = ("none", "throttle", "errors", "slow", "resets", "lost_replies")
_FAULTS_OFF: dict[str, Any] = {
    "fail_rate": 0.0,
    "latency_ms": 0.0,
    "slow_rate": 0.0,
    "drop_reply_after_write": 0,
    "retry_after": 0,
}


def marks(value: Any) -> list[tuple[int, str]]:
    """The (optimisation number, canonical field) markers in a written value."""
    text = value if isinstance(value, str) else json.dumps(value)
    return [(int(n), FIELD_OF_TAG[tag]) for n, tag in OPT_MARK.findall(text)]


class ResetFault:
    """Connection resets on the platform API: the connection is cut without an answer, either
    before the store sees the request, or after it applied it (a write whose outcome the client
    cannot know). Drawn from its own seeded generator; the control API is never cut."""

    def __init__(self, seed: int) -> None:
        self.rate = 0.0
        self.rng = random.Random(seed)
        self.count = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.rate or request.path.startswith("/__sim/") or self.rng.random() >= self.rate:
            return await handler(request)
        self.count += 1
        after = self.rng.random() < 0.5
        response = await handler(request) if after else web.Response(status=500)
        if request.transport is not None:
            request.transport.abort()
        return response


class Writes:
    """Every field an optimisation's value was written to, as the store applied it:
    `(optimisation number, canonical field) -> writes`. JSON-LD is not counted: the agent
    rewrites it legitimately whenever the product changes (the JSON-LD keeper).

    Also when: `applied` holds the (monotonic) time each optimisation's field was first
    written, and `reads` the times the agent's writer read each product's fields (where the
    store can tell: Shopify's writer queries). With both, the oracle can tell a merchant edit
    that landed between the agent's last read and its write (the read-write window of a
    platform without a conditional write, design.md guarantee 5) from an overwrite the agent
    could have seen."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[int, str]] = Counter()
        self.applied: dict[tuple[int, str], float] = {}
        self.reads: dict[str, list[float]] = {}

    def count(self, value: Any, field: str) -> None:
        for n, found in marks(value):
            if found == field:
                self.counts[(n, field)] += 1
                self.applied.setdefault((n, field), time.monotonic())

    def read(self, product: str) -> None:
        self.reads.setdefault(product, []).append(time.monotonic())

    def last_read_before(self, product: str, moment: float) -> float | None:
        before = [t for t in self.reads.get(product, ()) if t < moment]
        return max(before) if before else None


class StoreSide(abc.ABC):
    """One simulated store: serve it, let the merchant change it, read its truth."""

    platform = ""

    def __init__(self, seed: int, products: int, root: Path) -> None:
        self.seed = seed
        self.products = products
        self.root = root
        self.spool = root / "spool"
        self.resets = ResetFault(seed * 31 + 7)
        self.writes = Writes()
        self.url = ""
        self.live: list[str] = []  # the driver's model of the catalog, in creation order
        self.known: set[str] = set()  # every product id the store ever had
        self._task: asyncio.Task[None] | None = None

    # -- serving ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def make_app(self) -> web.Application: ...

    @abc.abstractmethod
    def bound(self, port: int) -> None: ...

    async def start(self) -> None:
        app = self.make_app()
        app.middlewares.insert(0, self.resets.middleware)
        port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(
            serve_app(app, "127.0.0.1", 0, bound=self.bound, ready=port.set_result)
        )
        self.url = f"http://127.0.0.1:{await asyncio.wait_for(port, 30)}"
        self.live = self.initial_ids()
        self.known = set(self.live)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @abc.abstractmethod
    def initial_ids(self) -> list[str]: ...

    # -- the agent's view --------------------------------------------------------------------------

    @abc.abstractmethod
    def store_toml(self, webhook_port: int) -> str:
        """The `[[stores]]` table for the agent, without intervals (the driver adds them)."""

    async def truth(self, settings: StoreSettings) -> dict[str, dict[str, Any]]:
        """Every product the store has now, mapped by the agent's own adapter (the canonical
        mapping) with the model's rules applied (`settle`): what the hub must hold.

        The ids are the store's listing plus every id it ever had: a trashed WooCommerce
        product is left out of listings yet still loads (as `archived`, which is what the hub
        must then hold); one deleted for good is missing, and must be deleted at the hub."""
        cls = platforms.load(settings.platform)
        async with httpx.AsyncClient(timeout=30) as http:
            adapter = cls.from_settings(settings, http)
            try:
                listed = [i async for page in adapter.product_ids() for i in page]
                found = await adapter.fetch_products(sorted(set(listed) | self.known))
            finally:
                await adapter.aclose()
        if found.failed:
            raise RuntimeError(f"the oracle could not read {len(found.failed)} products")
        return {pid: settle(p).to_dict() for pid, p in found.found.items()}

    # -- faults ------------------------------------------------------------------------------------

    def set_faults(self, kind: str) -> None:
        settings: dict[str, Any] = dict(_FAULTS_OFF)
        self.resets.rate = 0.0
        if kind == "throttle":
            settings.update(fail_rate=0.3, fail_statuses=[429], retry_after=1)
        elif kind == "errors":
            settings.update(fail_rate=0.25, fail_statuses=[500, 502, 503, 504])
        elif kind == "slow":
            settings.update(latency_ms=150.0, slow_rate=0.1, slow_ms=1500.0)
        elif kind == "resets":
            self.resets.rate = 0.15
        elif kind == "lost_replies":
            settings.update(drop_reply_after_write=2, latency_ms=20.0)
        self.apply_faults(settings)

    @abc.abstractmethod
    def apply_faults(self, settings: Mapping[str, Any]) -> None: ...

    # -- the merchant ------------------------------------------------------------------------------

    @abc.abstractmethod
    def create(self, n: int, how: str) -> str: ...

    @abc.abstractmethod
    def update(self, pid: str, n: int, how: str) -> None: ...

    @abc.abstractmethod
    def stock(self, pid: str, quantity: int, how: str) -> None: ...

    @abc.abstractmethod
    def remove(self, pid: str, how: str) -> None:
        """Trash or delete; `how` says whether anything tells the agent."""

    @abc.abstractmethod
    def edit_field(self, pid: str, field: str, value: str, how: str) -> bool:
        """The merchant edits an optimisable field; False if this product cannot have it."""

    @abc.abstractmethod
    def field_value(self, pid: str, field: str) -> str | None:
        """The store's value of an optimisable field now (platform terms, no faults)."""

    def hint(self, pid: str, event: str) -> None:
        """A store-side plugin's spool hint (only where the platform has a plugin)."""
        write_spool(self.spool, spool_event(event, pid))

    @abc.abstractmethod
    async def drain(self) -> None: ...


class WooStore(StoreSide):
    platform = "woocommerce"

    def __init__(self, seed: int, products: int, root: Path) -> None:
        super().__init__(seed, products, root)
        self.sim = WooSimulator.generate(
            products=products, seed=seed, variable_ratio=0.2, webhook_delay=0.05,
            webhook_jitter=0.1, webhook_max_failures=5, webhook_timeout=5.0,
        )  # fmt: skip
        original = self.sim.count_write

        def count_write(item_id: int, changes: Mapping[str, Any]) -> None:
            self._count(changes)
            original(item_id, changes)

        self.sim.count_write = count_write  # type: ignore[method-assign]

    def _count(self, changes: Mapping[str, Any]) -> None:
        for key, value in changes.items():
            if key == "description":
                self.writes.count(value, "description_html")
            elif key == "meta_data" and isinstance(value, list):
                for m in value:
                    if isinstance(m, dict) and m.get("key") in WOO_SEO:
                        self.writes.count(m.get("value"), WOO_SEO[str(m["key"])])
            elif key == "images" and isinstance(value, list):
                for image in value:
                    if isinstance(image, dict) and image.get("alt"):
                        self.writes.count(image["alt"], "image_alt")

    def make_app(self) -> web.Application:
        return woo_app.make_app(self.sim)

    def bound(self, port: int) -> None:
        self.sim.catalog.site_url = f"http://127.0.0.1:{port}"

    def initial_ids(self) -> list[str]:
        docs = json.loads(self.sim.truth_bytes())["products"]
        return [str(d["product"]["id"]) for d in docs if d["product"]["status"] != "trash"]

    def store_toml(self, webhook_port: int) -> str:
        return (
            f'platform = "woocommerce"\nurl = "{self.url}"\n'
            f'consumer_key = "{self.sim.consumer_key}"\n'
            f'consumer_secret = "{self.sim.consumer_secret}"\n'
            f'webhook_secret = "{WEBHOOK_SECRET}"\n'
            f'webhook_url = "http://127.0.0.1:{webhook_port}/webhooks/woocommerce/{STORE}"\n'
            'spool_dir = "spool"\n'
        )

    def apply_faults(self, settings: Mapping[str, Any]) -> None:
        self.sim.faults.update(settings)

    def _flags(self, how: str) -> dict[str, bool]:
        # webhook: the store's webhook; spool: the plugin's hint only; poll: only the date
        # moves; hidden: nothing but a verification read can see it (a direct SQL edit).
        return {
            "webhook": {"bump": True, "webhooks": True},
            "spool": {"bump": True, "webhooks": False},
            "poll": {"bump": True, "webhooks": False},
            "hidden": {"bump": False, "webhooks": False},
        }[how]

    def _after(self, pid: str, how: str, event: str) -> None:
        if how == "spool":
            self.hint(pid, event)

    def create(self, n: int, how: str) -> str:
        body: dict[str, Any] = {
            "name": f"Chaos product {n}",
            "regular_price": f"{10 + n % 50}.50",
            "description": f"<p>Made by the chaos driver, number {n}.</p>",
            "images": [{"src": f"https://images.example/chaos-{self.seed}-{n}.jpg", "alt": ""}],
            "meta_data": [
                {"key": "_yoast_wpseo_title", "value": f"Chaos {n} | Shop"},
                {"key": "_yoast_wpseo_metadesc", "value": f"Chaos product {n}."},
            ],
        }
        pid = str(self.sim.create_product(body)["id"])  # WooCommerce fires product.created
        self.live.append(pid)
        self.known.add(pid)
        self._after(pid, how, "product.created")
        return pid

    def update(self, pid: str, n: int, how: str) -> None:
        body = {"name": f"Renamed {n}", "regular_price": f"{20 + n % 70}.00"}
        self.sim.update_product(int(pid), body, **self._flags(how))
        self._after(pid, how, "product.updated")

    def stock(self, pid: str, quantity: int, how: str) -> None:
        body = {"manage_stock": True, "stock_quantity": quantity}
        self.sim.update_product(int(pid), body, **self._flags(how))
        self._after(pid, how, "stock.updated")

    def remove(self, pid: str, how: str) -> None:
        # Trash fires product.deleted; a force delete fires nothing (WooCommerce's own rule).
        self.sim.delete_product(int(pid), force=how in ("poll", "hidden"))
        self.live.remove(pid)
        self._after(pid, how, "product.deleted")

    def _seo_key(self, pid: str, field: str) -> str | None:
        meta = {m["key"] for m in self.sim.product(int(pid))["meta_data"]}
        for key, name in WOO_SEO.items():
            if name == field and key in meta:
                return key
        return None

    def edit_field(self, pid: str, field: str, value: str, how: str) -> bool:
        if field == "description_html":
            body: dict[str, Any] = {"description": value}
        else:
            key = self._seo_key(pid, field)
            if key is None:
                return False
            body = {"meta_data": [{"key": key, "value": value}]}
        self.sim.update_product(int(pid), body, **self._flags(how))
        self._after(pid, how, "product.updated")
        return True

    def field_value(self, pid: str, field: str) -> str | None:
        doc = self.sim.product(int(pid))
        if field == "description_html":
            return str(doc.get("description") or "") or None
        key = self._seo_key(pid, field)
        if key is None:
            return None
        return next((str(m["value"]) for m in doc["meta_data"] if m["key"] == key), None)

    async def drain(self) -> None:
        await self.sim.drain_webhooks()

    async def close(self) -> None:
        await super().close()
        await self.sim.close()


WRITER_PRODUCT_UPDATE = "WriterProductUpdate"
WRITER_FILE_UPDATE = "WriterFileUpdate"
WRITER_READS = ("WriterFields", "WriterFieldsMedia")  # the writer's reads before it writes


class ShopifyStore(StoreSide):
    platform = "shopify"

    def __init__(self, seed: int, products: int, root: Path) -> None:
        super().__init__(seed, products, root)
        self.sim = ShopifySimulator.generate(products=products, seed=seed)
        self.sim.faults.update({"webhook_delay_s": 0.02, "webhook_jitter_s": 0.05})
        original = self.sim.graphql

        def graphql(body: Any, origin: str | None = None) -> dict[str, Any]:
            answer = original(body, origin)
            self._count(body, answer)
            return answer

        self.sim.graphql = graphql  # type: ignore[method-assign]

    def _count(self, body: Any, answer: Mapping[str, Any]) -> None:
        if not isinstance(body, dict) or answer.get("errors"):
            return
        name = body.get("operationName")
        variables = body.get("variables") or {}
        data = answer.get("data") or {}
        if name in WRITER_READS:
            for ref in variables.get("ids") or ():
                self.writes.read(str(ref).rsplit("/", 1)[-1])
        elif name == WRITER_PRODUCT_UPDATE:
            if (data.get("productUpdate") or {}).get("userErrors"):
                return  # all or nothing: refused, nothing applied
            product = variables.get("product") or {}
            seo = product.get("seo") or {}
            self.writes.count(seo.get("title"), "seo_title")
            self.writes.count(seo.get("description"), "seo_description")
            self.writes.count(product.get("descriptionHtml"), "description_html")
        elif name == WRITER_FILE_UPDATE:
            if (data.get("fileUpdate") or {}).get("userErrors"):
                return
            for f in variables.get("files") or ():
                if isinstance(f, dict):
                    self.writes.count(f.get("alt"), "image_alt")

    def make_app(self) -> web.Application:
        return shopify_app.make_app(self.sim)

    def bound(self, port: int) -> None:
        self.sim.shop_url = f"http://127.0.0.1:{port}"
        self.sim.catalog.move_images(self.sim.shop_url + "/cdn/shop")

    def initial_ids(self) -> list[str]:
        return [str(p["legacyResourceId"]) for p in self.sim.truth()]

    def store_toml(self, webhook_port: int) -> str:
        return (
            f'platform = "shopify"\nurl = "{self.url}"\n'
            f'access_token = "{self.sim.access_token}"\n'
            f'webhook_secret = "{self.sim.client_secret}"\n'
            f'webhook_url = "http://127.0.0.1:{webhook_port}/webhooks/shopify/{STORE}"\n'
        )

    def apply_faults(self, settings: Mapping[str, Any]) -> None:
        self.sim.faults.update(settings)

    def set_faults(self, kind: str) -> None:
        super().set_faults(kind)
        # Shopify's own delivery faults ride along with the API's: duplicates and reordering.
        on = kind != "none"
        self.sim.faults.update(
            {
                "webhook_duplicate_rate": 0.2 if on else 0.0,
                "webhook_reorder_rate": 0.2 if on else 0.0,
            }
        )

    def _flags(self, how: str) -> dict[str, bool]:
        return {
            "webhook": {"bump": True, "webhooks": True},
            "spool": {"bump": True, "webhooks": False},  # Shopify has no spool: the poll finds it
            "poll": {"bump": True, "webhooks": False},
            "hidden": {"bump": False, "webhooks": False},
        }[how]

    def create(self, n: int, how: str) -> str:
        body: dict[str, Any] = {
            "title": f"Chaos product {n}",
            "descriptionHtml": f"<p>Made by the chaos driver, number {n}.</p>",
            "variants": [{"price": f"{10 + n % 50}.50", "sku": f"CHAOS-{self.seed}-{n}"}],
        }
        created = self.sim.create_product(body, webhooks=how == "webhook")
        pid = str(created["legacyResourceId"])
        seo = {"title": f"Chaos {n} | Shop", "description": f"Chaos product {n}."}
        self.sim.update_product(int(pid), {"seo": seo}, bump=False, webhooks=False)
        self.live.append(pid)
        self.known.add(pid)
        return pid

    def update(self, pid: str, n: int, how: str) -> None:
        self.sim.update_product(int(pid), {"title": f"Renamed {n}"}, **self._flags(how))

    def stock(self, pid: str, quantity: int, how: str) -> None:
        variants = self.sim.product(int(pid))["variants"]
        if not variants:
            return
        item = str(variants[0]["inventoryItem"]["id"]).rsplit("/", 1)[-1]
        # Stock moves no `updatedAt` in Shopify: a webhook, or only a verification, sees it.
        self.sim.set_inventory(int(item), quantity, webhooks=how == "webhook")

    def remove(self, pid: str, how: str) -> None:
        self.sim.delete_product(int(pid), webhooks=how == "webhook")
        self.live.remove(pid)

    def edit_field(self, pid: str, field: str, value: str, how: str) -> bool:
        product = self.sim.product(int(pid))
        if field == "description_html":
            body: dict[str, Any] = {"descriptionHtml": value}
        elif field == "seo_title":
            body = {"seo": {**(product.get("seo") or {}), "title": value}}
        else:
            return False
        self.sim.update_product(int(pid), body, **self._flags(how))
        return True

    def field_value(self, pid: str, field: str) -> str | None:
        product = self.sim.product(int(pid))
        if field == "description_html":
            return product.get("descriptionHtml") or None
        if field == "seo_title":
            return (product.get("seo") or {}).get("title") or None
        return None

    async def drain(self) -> None:
        await self.sim.drain_webhooks()

    async def truth(self, settings: StoreSettings) -> dict[str, dict[str, Any]]:
        # The oracle's reads must neither wait on the shop's cost bucket nor drain it for the
        # agent: a bucket without bounds while it reads, the shop's own again after.
        saved = {"bucket_max": self.sim.settings.bucket_max,
                 "restore_rate": self.sim.settings.restore_rate}  # fmt: skip
        self.sim.faults.update({"bucket_max": 1e9, "restore_rate": 1e9})
        try:
            return await super().truth(settings)
        finally:
            self.sim.faults.update(saved)

    async def close(self) -> None:
        await super().close()
        await self.sim.close()


def open_store(platform: str, seed: int, products: int, root: Path) -> StoreSide:
    if platform == "woocommerce":
        return WooStore(seed, products, root)
    if platform == "shopify":
        return ShopifyStore(seed, products, root)
    raise ValueError(f"no chaos store for platform {platform!r}")
