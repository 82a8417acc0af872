"""Deterministic demo catalogs and the file writes a store-side plugin makes.

`make_product(i)` gives the same product for the same `i` and seed on every machine, so tests and
benchmarks can compare what the hub holds with what the "store" holds. `write_product` and
`write_spool` write a temporary file and rename it, exactly as design.md section 5 requires of
store-side plugins: a reader never sees half a file.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridge_agent.model import Category, Image, Product, Variant

_ADJECTIVES = ("Classic", "Organic", "Vintage", "Slim", "Cozy", "Rugged", "Light", "Urban")
_NOUNS = ("Hoodie", "T-Shirt", "Backpack", "Sneaker", "Mug", "Lamp", "Jacket", "Scarf")
_CATEGORIES = (("Clothing", "Tops"), ("Clothing", "Outerwear"), ("Bags",), ("Home", "Kitchen"))
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_counter = itertools.count()


def make_product(i: int, *, seed: int = 7, revision: int = 0) -> Product:
    """Product number `i` of a demo catalog; `revision` > 0 gives later edits of it."""
    rng = random.Random(seed * 1_000_003 + i)
    noun = _NOUNS[i % len(_NOUNS)]
    title = f"{rng.choice(_ADJECTIVES)} {noun} {i}"
    cents = rng.randrange(500, 20000) + revision * 100
    price = f"{cents // 100}.{cents % 100:02d}"
    path = _CATEGORIES[i % len(_CATEGORIES)]
    variants: tuple[Variant, ...] = ()
    if i % 5 == 0:  # every fifth product is variable
        variants = tuple(
            Variant(
                id=f"{i}-{size}",
                sku=f"SKU-{i}-{size}",
                options=(("Size", size),),
                price=price,
                availability="InStock" if n != 2 else "OutOfStock",
                stock_quantity=0 if n == 2 else 5 + n,
            )
            for n, size in enumerate(("S", "M", "L"))
        )
    images: tuple[Image, ...] = ()
    if i % 7 != 3:  # some products have no image, as in real catalogs
        images = (Image(id=f"img-{i}", src=f"https://shop.example/img/{i}.jpg", alt=title),)
    return Product(
        id=str(i),
        title=title,
        sku=f"SKU-{i}",
        slug=title.lower().replace(" ", "-"),
        url=f"https://shop.example/product/{title.lower().replace(' ', '-')}",
        status="active",
        description_html=f"<p>{title}: {rng.choice(('soft', 'durable', 'handmade'))}.</p>",
        price=price,
        regular_price=price,
        currency="EUR",
        tax_included=True,
        availability="InStock" if i % 11 else "OutOfStock",
        stock_quantity=rng.randrange(0, 50),
        categories=(Category(id=f"c{i % len(_CATEGORIES)}", name=path[-1], path=path),),
        tags=(noun.lower(),),
        images=images,
        variants=variants,
        updated_at=(_EPOCH + timedelta(seconds=i + revision * 86400)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        ),
    )


def write_atomic(path: Path, text: str) -> None:
    """Write to a temporary name in the same folder, fsync, then rename over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_counter)}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def write_product(catalog_dir: Path, product: Product) -> None:
    write_atomic(catalog_dir / f"{product.id}.json", json.dumps(product.to_dict()))


def delete_product(catalog_dir: Path, product_id: str) -> None:
    (catalog_dir / f"{product_id}.json").unlink(missing_ok=True)


def read_catalog(catalog_dir: Path) -> dict[str, dict[str, Any]]:
    """The truth of a jsondir store: id -> canonical dict."""
    out: dict[str, dict[str, Any]] = {}
    for path in catalog_dir.glob("*.json"):
        if not path.name.startswith("."):
            out[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return out


def spool_event(event: str, product_id: str, *, sku: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"v": 1, "event": event, "id": product_id}
    if sku is not None:
        doc["sku"] = sku
    doc["at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return doc


def write_spool(spool_dir: Path, events: Iterable[Mapping[str, Any]] | Mapping[str, Any]) -> Path:
    """One spool file in `<spool_dir>/incoming/`, written as a store-side plugin must."""
    incoming = spool_dir / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    doc = events if isinstance(events, Mapping) else list(events)
    path = (
        incoming
        / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-{os.getpid()}-{next(_counter)}.json"
    )
    write_atomic(path, json.dumps(doc))
    return path
