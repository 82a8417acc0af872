"""What the safe mode and rollback tests share: a WooCommerce simulator on loopback, the reference
hub, an agent.toml naming both, the state store, the downstream engine of the agent (feed, apply
loop, result poster) on that state, and the command line called in-process.

The command runs `asyncio.run` of its own, so it is called in a thread (`Kit.cli`): the test's
loop keeps serving the simulator and the hub meanwhile, as a running agent's process would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge_agent import cli
from bridge_agent.config import StoreSettings, load_config
from bridge_agent.downstream.engine import Downstream, writer_of
from bridge_agent.hublink import HubClient
from bridge_agent.metrics import Metrics
from bridge_agent.platforms.woocommerce import WooCommerce
from bridge_agent.simulators.woocommerce import WooSimulator, serve
from bridge_agent.store import StateStore
from tests.conftest import TOKEN, Hub, free_port

STORE = "main"
TITLE_KEY, DESC_KEY = "_yoast_wpseo_title", "_yoast_wpseo_metadesc"


@dataclass
class Kit:
    root: Path
    config: Path
    sim: WooSimulator
    hub: Hub
    state: StateStore
    settings: StoreSettings
    engine: Downstream
    capsys: pytest.CaptureFixture[str]
    http: httpx.AsyncClient
    last: tuple[int, str, str] = (0, "", "")
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    # -- the store -----------------------------------------------------------------------------

    def new_product(self, title: str, description: str, *, alts: tuple[str, ...] = ()) -> str:
        """A product with Yoast's SEO meta and images with these ALT texts; its id."""
        body: dict[str, Any] = {
            "name": f"Product {title}",
            "description": "<p>The store's own words.</p>",
            "meta_data": [
                {"key": TITLE_KEY, "value": title},
                {"key": DESC_KEY, "value": description},
            ],
            "images": [
                {"src": f"https://images.example/{title.replace(' ', '-')}-{n}.jpg", "alt": alt}
                for n, alt in enumerate(alts)
            ],
        }
        return str(self.sim.create_product(body)["id"])

    def meta(self, product: str, key: str) -> Any:
        rows = [m for m in self.sim.product(int(product))["meta_data"] if m["key"] == key]
        return rows[0]["value"] if rows else None

    def image(self, product: str, n: int = 0) -> tuple[str, str]:
        """The (id, alt) of the product's n-th image."""
        image = self.sim.product(int(product))["images"][n]
        return str(image["id"]), str(image.get("alt") or "")

    def merchant_edit(self, product: str, **meta: str) -> None:
        """The merchant saves the product in the admin (fires its webhook, moves its date)."""
        self.sim.update_product(
            int(product), {"meta_data": [{"key": k, "value": v} for k, v in meta.items()]}
        )

    # -- the hub -------------------------------------------------------------------------------

    async def enqueue(self, *proposals: dict[str, Any]) -> list[str]:
        async with self.hub.client() as client:
            answer = await client.post(f"/v1/stores/{STORE}/optimizations", json=list(proposals))
            assert answer.status_code == 201, answer.text
            ids: list[str] = answer.json()["ids"]
            return ids

    async def at_hub(self, opt_id: str) -> dict[str, Any]:
        async with self.hub.client() as client:
            doc: dict[str, Any] = (
                await client.get(f"/v1/stores/{STORE}/optimizations/{opt_id}")
            ).json()
            return doc

    # -- the agent -----------------------------------------------------------------------------

    async def cycle(self) -> None:
        """One beat of the running agent's downstream task: feed, apply loop, result poster."""
        await self.engine.feed.read_once()
        await self.engine.applier.apply_pending()
        await self.post_results()

    async def post_results(self) -> None:
        while await self.engine.results.post_once() == 0.0:
            pass

    def start_engine(self) -> None:
        """The downstream task as the daemon runs it, until the test ends."""
        self.tasks.append(asyncio.create_task(self.engine.run()))

    # -- the command line ----------------------------------------------------------------------

    async def cli(self, *argv: str) -> tuple[int, str, str]:
        """`bridge-agent --config agent.toml ARGV...` in-process: (exit code, stdout, stderr)."""
        self.capsys.readouterr()
        code = await asyncio.to_thread(
            _main, ["--log-format", "json", "--config", str(self.config), *argv]
        )
        out, err = self.capsys.readouterr()
        self.last = (code, out, err)
        return self.last


def _main(argv: list[str]) -> int:
    """`cli.main`, with argparse's usage errors (SystemExit) as their exit code."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


@contextlib.asynccontextmanager
async def open_kit(
    root: Path,
    hub: Hub,
    capsys: pytest.CaptureFixture[str],
    *,
    apply_mode: str,
    currency: str | None = None,
) -> AsyncIterator[Kit]:
    sim = WooSimulator.generate(products=2, seed=5, webhook_delay=0.01, webhook_jitter=0.01)
    bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(sim, "127.0.0.1", 0, ready=bound.set_result, warm=False))
    shop_url = f"http://127.0.0.1:{await asyncio.wait_for(bound, 10)}"
    config = root / "agent.toml"
    config.write_text(
        f"""
[agent]
id = "review-test"
state_dir = "state"

[hub]
url = "{hub.url}"
token = "{TOKEN}"

[health]
listen = "127.0.0.1:{free_port()}"

[webhooks]
listen = "127.0.0.1:0"

[[stores]]
id = "{STORE}"
platform = "woocommerce"
url = "{shop_url}"
consumer_key = "{sim.consumer_key}"
consumer_secret = "{sim.consumer_secret}"
apply_mode = "{apply_mode}"
{f'currency = "{currency}"' if currency else ""}
""",
        encoding="utf-8",
    )
    settings = load_config(config).stores[0]
    try:
        async with (
            StateStore.open(root / "state") as state,
            httpx.AsyncClient(timeout=10) as http,
            httpx.AsyncClient(base_url=hub.url, timeout=10) as hub_http,
        ):
            platform = WooCommerce.from_settings(settings, http)
            writer = writer_of(platform)
            assert writer is not None
            link = HubClient(hub_http, TOKEN)
            engine = Downstream(
                settings, platform, writer, state, Metrics(),
                hub=lambda: link, on_recorded=lambda: None, wait=1.0,
            )  # fmt: skip
            kit = Kit(root, config, sim, hub, state, settings, engine, capsys, http)
            try:
                yield kit
            finally:
                for task in kit.tasks:
                    task.cancel()
                await asyncio.gather(*kit.tasks, return_exceptions=True)
    finally:
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        await sim.close()
