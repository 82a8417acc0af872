"""The `jsondir` adapter: see the package docstring."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import httpx

from bridge_agent.errors import ConfigError, PlatformUnavailable
from bridge_agent.model import Product
from bridge_agent.platforms.base import CatalogPage

if TYPE_CHECKING:
    from bridge_agent.config import StoreSettings

PAGE_SIZE = 100


class JsonDir:
    """Products as JSON files in `catalog_dir`."""

    name: ClassVar[str] = "jsondir"

    def __init__(self, store_id: str, catalog_dir: Path) -> None:
        self.store_id = store_id
        self.catalog_dir = catalog_dir

    @classmethod
    def from_settings(cls, settings: StoreSettings, http: httpx.AsyncClient) -> JsonDir:
        del http  # files need no HTTP
        raw = settings.options.get("catalog_dir")
        if not raw:
            raise ConfigError([f"[[stores]] {settings.id!r}: jsondir needs catalog_dir"])
        return cls(settings.id, Path(str(raw)))

    async def check(self) -> None:
        if not await asyncio.to_thread(self.catalog_dir.is_dir):
            raise PlatformUnavailable(f"catalog folder {self.catalog_dir} does not exist")

    async def fetch_product(self, product_id: str) -> Product | None:
        if "/" in product_id or product_id.startswith("."):
            return None  # not a file name we would have written; such a product cannot exist
        return await asyncio.to_thread(self._read, self.catalog_dir / f"{product_id}.json")

    async def catalog(self, resume: str | None = None) -> AsyncIterator[CatalogPage]:
        names = sorted(await asyncio.to_thread(_json_names, self.catalog_dir))
        if resume is not None:
            names = [n for n in names if n > resume]
        for start in range(0, len(names), PAGE_SIZE):
            chunk = names[start : start + PAGE_SIZE]
            products = [await asyncio.to_thread(self._read, self.catalog_dir / n) for n in chunk]
            last = start + PAGE_SIZE >= len(names)
            yield CatalogPage(
                products=[p for p in products if p is not None],
                next_token=None if last else chunk[-1],
                total=len(names),
            )

    def _read(self, path: Path) -> Product | None:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PlatformUnavailable(f"cannot read {path}: {exc}") from exc
        try:
            return Product.from_dict(json.loads(text))
        except (ValueError, TypeError, KeyError) as exc:
            raise PlatformUnavailable(f"{path} is not a canonical product: {exc}") from exc


def _json_names(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith(".")]
