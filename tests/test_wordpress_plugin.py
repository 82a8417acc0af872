"""The WordPress companion plugin (plugins/woocommerce), in a real WordPress.

tests/wordpress_site.py builds the site: Debian's WordPress on a private MariaDB, the plugin
installed and active, PHP's built-in web server. Each request below is a real WordPress request
(a PHP process for writes, HTTP for pages and the admin); the plugin's spool files are read back
and parsed with the agent's own parser. Covered:

- creating, updating, trashing, restoring and deleting a product: one file per request, the right
  event, written atomically (no temporary file left, only `*.json` names);
- many changes in one request coalesce into one file; variations report their parent;
- WooCommerce's own hook names fired with stand-in product objects;
- the product page's head carries the JSON-LD, equal in meaning to the meta, inert whatever text it
  holds, and WooCommerce's own Product markup is suppressed (one Product entity);
- an unwritable or missing spool directory: saves and pages keep working without a PHP warning,
  the problem is in the status, the log and the admin, and the kept changes are written later;
- the settings page's status line, the wp-config.php constant, and a clean uninstall;
- end to end: the real agent's spool watcher consumes the plugin's files and the hub gets the
  products.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge_agent.agent import Agent
from bridge_agent.config import Secret, StoreSettings
from bridge_agent.downstream.jsonld import build_jsonld
from bridge_agent.platforms.woocommerce.mapping import MappingOptions, map_product
from bridge_agent.platforms.woocommerce.writer import _jsonld_text as jsonld_meta_text
from bridge_agent.simulators.woocommerce import WooSimulator, serve
from bridge_agent.sources.spool import SpoolFileError, is_spool_name, parse_spool
from tests.conftest import Hub, make_config
from tests.wordpress_site import FIXTURES, PLUGIN, WordPress, package, require_wordpress

# The first test pays for MariaDB's and WordPress's installation (a few seconds here, more on a
# slow CI machine); pytest-timeout counts fixture setup in the test's time.
pytestmark = pytest.mark.timeout(300)

SPOOL_NAME = re.compile(r"^\d{8}T\d{6}\.\d{6}-\d+-[0-9a-f]{8}\.json$")
AT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
PHP_PROBLEM = re.compile(r"\b(Warning|Notice|Deprecated|Fatal error|Parse error)\b")


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WordPress]:
    require_wordpress()
    wordpress = WordPress(tmp_path_factory.mktemp("wordpress"))
    try:
        wordpress.start()
        yield wordpress
    finally:
        wordpress.stop()


@dataclass
class Store:
    """The site with a fresh spool directory for one test."""

    site: WordPress
    spool: Path

    @property
    def incoming(self) -> Path:
        return self.spool / "incoming"

    def names(self) -> set[str]:
        return {p.name for p in self.incoming.iterdir()} if self.incoming.is_dir() else set()

    def request(self, *ops: dict[str, Any], env: dict[str, str] | None = None) -> list[Any]:
        """One request; asserts it printed no PHP warning and returns its values."""
        result = self.site.ops(*ops, env=env)
        assert not PHP_PROBLEM.search(result.output), result.output
        values: list[Any] = result.value
        return values

    def written_by(self, *ops: dict[str, Any]) -> tuple[list[Any], list[dict[str, Any]]]:
        """One request that must write exactly one spool file: its values and the file's events
        (parsed by the agent's own parser first), without `at`."""
        before = self.names()
        values = self.request(*ops)
        new = self.names() - before
        assert len(new) == 1, f"expected one new spool file, got {sorted(new)}"
        (name,) = new
        assert SPOOL_NAME.match(name), name
        raw = (self.incoming / name).read_bytes()
        parse_spool(raw)  # the agent accepts it
        doc = json.loads(raw)
        events = doc if isinstance(doc, list) else [doc]
        for event in events:
            assert AT.match(event.pop("at")), event
        return values, events

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = (
            self.request({"op": "get_option", "name": "bridge_agent_status"})[0] or {}
        )
        return doc


@pytest.fixture
def store(site: WordPress, tmp_path: Path) -> Store:
    spool = tmp_path / "spool"
    (spool / "incoming").mkdir(parents=True)
    kit = Store(site, spool)
    kit.request(
        {"op": "option", "name": "bridge_agent_spool_dir", "value": str(spool)},
        {"op": "delete_option", "name": "bridge_agent_status"},
        {"op": "delete_option", "name": "bridge_agent_pending"},
    )
    return kit


def event(kind: str, product_id: Any, sku: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"v": 1, "event": kind, "id": str(product_id)}
    if sku:
        doc["sku"] = sku
    return doc


def standin(product_id: int, sku: str = "", parent: int = 0) -> dict[str, Any]:
    return {"standin": {"id": product_id, "sku": sku, "parent": parent}}


# -- the plugin's files --------------------------------------------------------------------------


def test_every_php_file_parses() -> None:
    if shutil.which("php") is None:
        require_wordpress()
    files = sorted([*PLUGIN.rglob("*.php"), *FIXTURES.rglob("*.php")])
    assert len(files) >= 8
    for path in files:
        done = subprocess.run(["php", "-l", str(path)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def test_the_release_zip_is_reproducible_and_is_what_the_site_runs(
    site: WordPress, tmp_path: Path
) -> None:
    first = package.build(tmp_path / "a")
    second = package.build(tmp_path / "b")
    assert (
        first.name == f"bridge-agent-wordpress-{package.version(PLUGIN / 'bridge-agent.php')}.zip"
    )
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as zf:
        names = zf.namelist()
    assert "bridge-agent/bridge-agent.php" in names and "bridge-agent/uninstall.php" in names
    assert all(n.startswith("bridge-agent/") for n in names)
    # The site installed that zip through WordPress's upgrader: same files, same bytes.
    installed = site.root / "wp-content" / "plugins" / "bridge-agent"
    for name in names:
        relative = name.removeprefix("bridge-agent/")
        assert (installed / relative).read_bytes() == (PLUGIN / relative).read_bytes(), name


# -- change hooks --------------------------------------------------------------------------------


def test_product_lifecycle_writes_one_file_per_request(store: Store) -> None:
    (product,), events = store.written_by({"op": "create", "title": "Hoodie", "sku": "HOODIE-1"})
    assert events == [event("product.created", product, "HOODIE-1")]
    steps = [
        ({"op": "update", "id": product, "title": "Warm hoodie"}, "product.updated"),
        ({"op": "trash", "id": product}, "product.deleted"),
        ({"op": "untrash", "id": product}, "product.updated"),
        ({"op": "delete", "id": product}, "product.deleted"),
    ]
    for op, kind in steps:
        (ok,), events = store.written_by(op)
        assert ok is not False, op
        assert events == [event(kind, product, "HOODIE-1")], op
    assert store.request({"op": "get", "id": product}) == [None]
    # Atomic writes leave nothing but finished `*.json` files behind.
    assert all(SPOOL_NAME.match(n) for n in store.names())
    assert len(store.names()) == 5


def test_a_request_with_many_changes_writes_one_coalesced_file(store: Store) -> None:
    values, events = store.written_by(
        {"op": "create", "title": "A", "sku": "A-1"},
        {"op": "create", "title": "B", "sku": "B-1"},
        {"op": "create", "title": "Not yet", "status": "auto-draft"},
    )
    a, b, draft = values
    updates = [{"op": "update", "id": a, "title": f"A {n}"} for n in range(5)]
    _, events_2 = store.written_by(
        *updates,
        {"op": "meta", "id": a, "key": "_stock", "value": "7"},
        {"op": "meta", "id": b, "key": "_stock", "value": "3"},
        {"op": "meta", "id": b, "key": "_edit_lock", "value": "123:1"},  # bookkeeping: no event
        {"op": "update", "id": draft, "title": "Still an auto-draft"},
    )
    _, events_3 = store.written_by(
        {"op": "update", "id": a, "title": "A again"},
        {"op": "trash", "id": a},
    )
    assert events == [event("product.created", a, "A-1"), event("product.created", b, "B-1")]
    assert events_2 == [event("product.updated", a, "A-1"), event("stock.updated", b, "B-1")]
    assert events_3 == [event("product.deleted", a, "A-1")]


def test_rest_api_requests_write_one_file_each_even_in_parallel(store: Store) -> None:
    # Real HTTP requests through the web server: the shutdown flush runs in the server's workers.
    (password,) = store.request({"op": "app_password"})
    rest = f"{store.site.url}/?rest_route=/wp/v2/product"
    with httpx.Client(auth=("admin", password), timeout=30) as client:
        ids = []
        for n in range(4):
            before = store.names()
            created = client.post(rest, json={"title": f"Rest {n}", "status": "publish"})
            assert created.status_code == 201, created.text[:300]
            ids.append(created.json()["id"])
            assert len(store.names() - before) == 1
        before = store.names()

        def update(product: int) -> int:
            return client.post(f"{rest}/{product}", json={"title": "Updated"}).status_code

        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(update, ids * 2)) == [200] * 8
    new = store.names() - before
    assert len(new) == 8
    seen = [e for name in new for e in parse_spool((store.incoming / name).read_bytes())]
    assert sorted(int(e.id) for e in seen) == sorted(ids * 2)
    assert {e.event for e in seen} == {"product.updated"}


def test_a_reader_never_sees_a_partial_file(store: Store) -> None:
    # The agent lists `*.json` names not starting with "." and reads them at once. A reader doing
    # just that, in a tight loop while 24 requests write in parallel, must parse every file it
    # sees: the plugin publishes a name only by renaming a finished, fsynced temporary file.
    (password,) = store.request({"op": "app_password"})
    rest = f"{store.site.url}/?rest_route=/wp/v2/product"
    done = threading.Event()
    parsed: dict[str, int] = {}
    failures: list[str] = []

    def read_like_the_agent() -> None:
        while not done.is_set():
            for entry in os.scandir(store.incoming):
                if entry.name in parsed or not is_spool_name(entry.name):
                    continue
                try:
                    parsed[entry.name] = len(parse_spool(Path(entry.path).read_bytes()))
                except SpoolFileError as exc:
                    failures.append(f"{entry.name}: {exc}")

    reader = threading.Thread(target=read_like_the_agent)
    reader.start()
    try:
        with httpx.Client(auth=("admin", password), timeout=30) as client:

            def create(n: int) -> int:
                return client.post(rest, json={"title": f"P{n}", "status": "publish"}).status_code

            with ThreadPoolExecutor(4) as pool:
                assert list(pool.map(create, range(24))) == [201] * 24
        # A request's spool file may be published after its answer went out (the plugin
        # writes at shutdown): let the reader see all 24 before it stops (bounded wait).
        deadline = time.monotonic() + 10
        while len(parsed) < 24 and not failures and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        done.set()
        reader.join()
    assert failures == []
    assert set(parsed) == store.names()
    assert len(parsed) == 24


def test_a_long_request_writes_early_and_loses_nothing(store: Store) -> None:
    values = store.request(
        {"op": "flush_at", "value": 3},
        *({"op": "create", "title": f"Bulk {n}", "sku": f"BULK-{n}"} for n in range(7)),
    )
    files = sorted(store.incoming.iterdir(), key=lambda p: p.name)
    batches = [parse_spool(path.read_bytes()) for path in files]
    # Never more than 3 products collected; a product whose save was still firing hooks when
    # a file went out appears again in the next one (a hint twice costs one re-fetch).
    assert 3 <= len(batches) <= 4
    assert all(len(b) <= 3 for b in batches)
    seen: dict[str, set[str]] = {}
    for batch in batches:
        for e in batch:
            seen.setdefault(e.id, set()).add(e.event)
    assert list(seen) == [str(v) for v in values[1:]]  # in order, none missing
    assert all("product.created" in kinds for kinds in seen.values())


def test_an_early_write_between_the_hooks_of_a_delete_keeps_the_deletion(store: Store) -> None:
    (product,) = store.request({"op": "create", "title": "Gone", "sku": "GONE-1"})
    before = store.names()
    # flush_at 1: a file after every hook, so one falls between before_delete_post and
    # deleted_post (the SKU meta is deleted in between).
    store.request({"op": "flush_at", "value": 1}, {"op": "delete", "id": product})
    new = sorted(store.names() - before)
    events = [e for n in new for e in parse_spool((store.incoming / n).read_bytes())]
    assert len(new) >= 2
    assert [e.event for e in events if e.id == str(product)][-1] == "product.deleted"


def test_nothing_is_written_by_requests_that_change_no_product(store: Store) -> None:
    store.request(
        {"op": "create", "title": "A page", "type": "page"},
        {"op": "create", "title": "Draft product", "status": "auto-draft"},
        {"op": "do_action", "hook": "woocommerce_update_product", "args": [0, None]},
    )
    assert store.names() == set()


def test_variation_changes_are_changes_of_their_parent(store: Store) -> None:
    (parent, variation), events = _create_variable(store)
    assert events == [event("product.created", parent, "TEE")]
    for op, kind in [
        ({"op": "update", "id": variation, "title": "Tee - crimson"}, "product.updated"),
        ({"op": "meta", "id": variation, "key": "_stock", "value": "2"}, "stock.updated"),
        ({"op": "trash", "id": variation}, "product.updated"),
        ({"op": "delete", "id": variation}, "product.updated"),
    ]:
        _, got = store.written_by(op)
        assert got == [event(kind, parent, "TEE")], op


def _create_variable(store: Store) -> tuple[tuple[int, int], list[dict[str, Any]]]:
    (parent,), events = store.written_by({"op": "create", "title": "Tee", "sku": "TEE"})
    (variation,), more = store.written_by(
        {
            "op": "create",
            "title": "Tee - red",
            "type": "product_variation",
            "parent": parent,
            "sku": "TEE-RED",
        }
    )
    assert more == [event("product.updated", parent, "TEE")]
    return (parent, variation), events


WOOCOMMERCE_HOOKS = [
    (
        "woocommerce_new_product",
        [501, standin(501, "S-501")],
        event("product.created", 501, "S-501"),
    ),
    (
        "woocommerce_update_product",
        [502, standin(502, "S-502")],
        event("product.updated", 502, "S-502"),
    ),
    (
        "woocommerce_new_product_variation",
        [601, standin(601, "V-601", parent=600)],
        event("product.updated", 600),
    ),
    (
        "woocommerce_update_product_variation",
        [602, standin(602, "V-602", parent=600)],
        event("product.updated", 600),
    ),
    (
        "woocommerce_product_set_stock",
        [standin(503, "S-503")],
        event("stock.updated", 503, "S-503"),
    ),
    (
        "woocommerce_variation_set_stock",
        [standin(611, "V-611", parent=610)],
        event("stock.updated", 610),
    ),
    (
        "woocommerce_product_set_stock_status",
        [504, "outofstock", standin(504, "S-504")],
        event("stock.updated", 504, "S-504"),
    ),
    (
        "woocommerce_variation_set_stock_status",
        [621, "instock", standin(621, "V-621", parent=620)],
        event("stock.updated", 620),
    ),
    ("woocommerce_trash_product", [505], event("product.deleted", 505)),
    ("woocommerce_delete_product", [506], event("product.deleted", 506)),
]


@pytest.mark.parametrize(
    ("hook", "args", "expected"), WOOCOMMERCE_HOOKS, ids=[h[0] for h in WOOCOMMERCE_HOOKS]
)
def test_woocommerce_hooks_with_stand_in_products(
    store: Store, hook: str, args: list[Any], expected: dict[str, Any]
) -> None:
    _, events = store.written_by({"op": "do_action", "hook": hook, "args": args})
    assert events == [expected]


def test_woocommerce_hooks_on_an_auto_draft_report_nothing(store: Store) -> None:
    # "Add New" opens an auto-draft; WooCommerce's editor saves it (and its variations) before
    # it is ever published. It is not a product yet.
    (draft,) = store.request({"op": "create", "title": "Draft", "status": "auto-draft"})
    store.request(
        {"op": "do_action", "hook": "woocommerce_update_product", "args": [draft, standin(draft)]},
        {"op": "do_action", "hook": "woocommerce_new_product_variation",
         "args": [draft + 1000, standin(draft + 1000, parent=draft)]},
        {"op": "do_action", "hook": "woocommerce_product_set_stock", "args": [standin(draft)]},
    )  # fmt: skip
    assert store.names() == set()


def test_php_messages_that_differ_only_in_numbers_are_one_problem(store: Store) -> None:
    same, other = store.request(
        {"op": "same_problem", "a": "Write of 123 bytes failed with errno=28 No space left",
         "b": "Write of 77 bytes failed with errno=28 No space left"},
        {"op": "same_problem", "a": "Permission denied", "b": "No such file or directory"},
    )  # fmt: skip
    assert (same, other) == (True, False)


def test_woocommerce_hooks_of_one_save_coalesce(store: Store) -> None:
    _, events = store.written_by(
        {"op": "do_action", "hook": "woocommerce_new_product", "args": [700, standin(700, "S")]},
        {"op": "do_action", "hook": "woocommerce_update_product", "args": [700, standin(700, "S")]},
        {"op": "do_action", "hook": "woocommerce_product_set_stock", "args": [standin(700, "S")]},
        {"op": "do_action", "hook": "woocommerce_update_product", "args": [701, standin(701)]},
        {"op": "do_action", "hook": "woocommerce_trash_product", "args": [701]},
    )
    assert events == [event("product.created", 700, "S"), event("product.deleted", 701)]


def test_woocommerce_hooks_on_real_posts(store: Store) -> None:
    (parent, variation), _ = _create_variable(store)
    _, events = store.written_by(
        {"op": "do_action", "hook": "woocommerce_process_product_meta", "args": [parent]}
    )
    assert events == [event("product.updated", parent, "TEE")]
    _, events = store.written_by(
        {"op": "do_action", "hook": "woocommerce_trash_product_variation", "args": [variation]}
    )
    assert events == [event("product.updated", parent, "TEE")]
    # As in WooCommerce's data store: before-hook, the delete, after-hook (the SKU is gone then).
    _, events = store.written_by(
        {"op": "do_action", "hook": "woocommerce_before_delete_product", "args": [parent]},
        {"op": "delete", "id": parent},
        {"op": "do_action", "hook": "woocommerce_delete_product", "args": [parent]},
    )
    assert events == [event("product.deleted", parent, "TEE")]


# -- JSON-LD in the head -------------------------------------------------------------------------


class Scripts(HTMLParser):
    """Every <script> element of a page: attributes, text, and whether it is in <head>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.scripts: list[tuple[dict[str, str | None], str, bool]] = []
        self._in_head = False
        self._current: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "head":
            self._in_head = True
        elif tag == "script":
            self._current, self._text = dict(attrs), []

    def handle_endtag(self, tag: str) -> None:
        if tag == "head":
            self._in_head = False
        elif tag == "script" and self._current is not None:
            self.scripts.append((self._current, "".join(self._text), self._in_head))
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._text.append(data)


def page_scripts(url: str) -> tuple[str, list[tuple[dict[str, str | None], str, bool]]]:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text[:500]
    parser = Scripts()
    parser.feed(response.text)
    return response.text, parser.scripts


def json_ld(scripts: list[tuple[dict[str, str | None], str, bool]]) -> list[tuple[Any, str, bool]]:
    return [
        (json.loads(text), attrs.get("class") or "", head)
        for attrs, text, head in scripts
        if attrs.get("type") == "application/ld+json"
    ]


def products_in(docs: list[tuple[Any, str, bool]]) -> int:
    def count(node: Any) -> int:
        if isinstance(node, list):
            return sum(count(n) for n in node)
        if isinstance(node, dict):
            own = 1 if node.get("@type") == "Product" else 0
            return own + sum(count(v) for k, v in node.items() if k != "@type")
        return 0

    return sum(count(doc) for doc, _, _ in docs)


HOSTILE = {
    "@context": "https://schema.org",
    "@type": "Product",
    "name": 'Mug </script><script>alert("pwned")</script>',
    "description": "<!-- <script> --> <b>Bold</b> & \"quoted\" 'single' Café ☕ \u2028 line",
    "sku": "MUG-1",
    "offers": {"@type": "Offer", "price": 19.9, "priceCurrency": "EUR", "available": True},
    "isSimilarTo": [],
    "additionalProperty": {},
    "gtin": None,
}


def test_product_page_head_has_the_jsonld_inert_and_alone(store: Store) -> None:
    (product,) = store.request({"op": "create", "title": "Mug", "sku": "MUG-1"})
    stored = store.request(
        {"op": "meta", "id": product, "key": "_bridge_jsonld", "value": json.dumps(HOSTILE)},
        {"op": "get_meta", "id": product, "key": "_bridge_jsonld"},
    )[1]
    assert json.loads(stored) == HOSTILE
    (page,) = store.request({"op": "get", "id": product})
    html, scripts = page_scripts(page["url"])
    assert not PHP_PROBLEM.search(html)
    docs = json_ld(scripts)
    ours = [(doc, head) for doc, cls, head in docs if cls == "bridge-agent-jsonld"]
    assert ours == [(HOSTILE, True)]  # in the head, and equal in meaning to the meta
    (text,) = [t for a, t, _ in scripts if a.get("class") == "bridge-agent-jsonld"]
    assert "<" not in text and ">" not in text  # nothing in it can end or open an element
    assert not any("alert(" in t and a.get("type") is None for a, t, _ in scripts)
    # WooCommerce's own Product markup is suppressed: one Product entity on the page.
    assert products_in(docs) == 1
    assert not any(cls == "woocommerce-stand-in" for _, cls, _ in docs)


def test_products_without_valid_jsonld_keep_woocommerce_markup(store: Store) -> None:
    plain, broken, empty = store.request(
        {"op": "create", "title": "Plain", "sku": "P-1"},
        {"op": "create", "title": "Broken", "sku": "P-2"},
        {"op": "create", "title": "Empty", "sku": "P-3"},
    )
    store.request(
        {"op": "meta", "id": broken, "key": "_bridge_jsonld", "value": '{"@type": "Product", '},
        {"op": "meta", "id": empty, "key": "_bridge_jsonld", "value": "   "},
    )
    for product in (plain, broken, empty):
        (page,) = store.request({"op": "get", "id": product})
        html, scripts = page_scripts(page["url"])
        assert not PHP_PROBLEM.search(html)
        docs = json_ld(scripts)
        assert [cls for _, cls, _ in docs] == ["woocommerce-stand-in"]
        assert products_in(docs) == 1


def test_jsonld_stored_as_an_array_is_printed_too(store: Store) -> None:
    # WooCommerce's REST meta_data stores a JSON object as a (serialized) PHP array.
    (product,) = store.request({"op": "create", "title": "Lamp", "sku": "L-1"})
    doc = {"@context": "https://schema.org", "@type": "Product", "name": "Lamp <b>", "sku": "L-1"}
    store.request({"op": "meta", "id": product, "key": "_bridge_jsonld", "value": doc})
    (page,) = store.request({"op": "get", "id": product})
    _, scripts = page_scripts(page["url"])
    assert [(d, h) for d, c, h in json_ld(scripts) if c == "bridge-agent-jsonld"] == [(doc, True)]


def test_the_wordpress_plugin_prints_what_the_agent_wrote(store: Store) -> None:
    """The document the agent builds for a simulator catalog product, stored as the WooCommerce
    writer sends it in `meta_data` (its text), is what the product page prints, inert."""
    catalog = WooSimulator.generate(products=6, seed=11, variable_ratio=0.3, no_image_ratio=0)
    hostile = {
        "name": 'Mug </script><script>alert("pwned")</script> \u2028 Café ☕',
        "description": "<!-- <script> --> & \"quoted\" 'single' </SCRIPT >",
    }
    shown = 0
    for item in catalog.truth():
        canonical, _ = map_product(
            item["product"], item["variations"], options=MappingOptions(currency="EUR")
        )
        built = build_jsonld(canonical, hub=hostile, store_url="https://shop.example")
        text = jsonld_meta_text(built.document)  # exactly what the writer puts in meta_data
        (product,) = store.request(
            {"op": "create", "title": f"Agent {canonical.id}", "sku": f"AG-{canonical.id}"}
        )
        store.request({"op": "meta", "id": product, "key": "_bridge_jsonld", "value": text})
        (page,) = store.request({"op": "get", "id": product})
        html, scripts = page_scripts(page["url"])
        assert not PHP_PROBLEM.search(html)
        ours = [(d, h) for d, c, h in json_ld(scripts) if c == "bridge-agent-jsonld"]
        assert ours == [(built.document, True)], canonical.id
        (printed,) = [t for a, t, _ in scripts if a.get("class") == "bridge-agent-jsonld"]
        assert "<" not in printed and ">" not in printed
        assert not any("alert(" in t and a.get("type") is None for a, t, _ in scripts)
        shown += 1
    assert shown == 6
    # Both kinds were printed: a Product with an offer and a ProductGroup with variants.
    kinds = {
        build_jsonld(map_product(i["product"], i["variations"])[0]).document["@type"]
        for i in catalog.truth()
    }
    assert kinds == {"Product", "ProductGroup"}


def test_the_product_shown_on_another_page_keeps_woocommerce_markup(store: Store) -> None:
    # A [product_page]-style shortcode builds WooCommerce's markup through the same filter on a
    # page that is not the product's: ours is not printed there, so WooCommerce's must stay.
    (product,) = store.request({"op": "create", "title": "Shown", "sku": "S-1"})
    store.request(
        {"op": "meta", "id": product, "key": "_bridge_jsonld", "value": '{"@type": "Product"}'}
    )
    (page_id,) = store.request(
        {"op": "create", "type": "page", "title": "Feature",
         "content": f'[bridge_test_product id="{product}"]'}
    )  # fmt: skip
    (page,) = store.request({"op": "get", "id": page_id})
    _, scripts = page_scripts(page["url"])
    docs = json_ld(scripts)
    assert [cls for _, cls, _ in docs] == ["woocommerce-stand-in"]
    assert products_in(docs) == 1
    # The filter outside any product page (a feed, a REST response) leaves the markup alone.
    markup = {"@type": "Product", "name": "x"}
    got = store.request(
        {"op": "apply_filters", "hook": "woocommerce_structured_data_product",
         "args": [markup, standin(product)]}
    )  # fmt: skip
    assert got == [markup]


def test_a_password_protected_product_prints_no_jsonld(store: Store) -> None:
    (product,) = store.request(
        {"op": "create", "title": "Secret", "sku": "SEC-1", "password": "letmein"}
    )
    secret = {"@type": "Product", "name": "Secret", "description": "only with the password"}
    store.request(
        {"op": "meta", "id": product, "key": "_bridge_jsonld", "value": json.dumps(secret)}
    )
    (page,) = store.request({"op": "get", "id": product})
    html, scripts = page_scripts(page["url"])
    assert json_ld(scripts) == []
    assert "only with the password" not in html


# -- an unwritable spool -------------------------------------------------------------------------


@contextlib.contextmanager
def admin_client(site: WordPress) -> Iterator[httpx.Client]:
    """An HTTP client logged in to wp-admin as the administrator."""
    with httpx.Client(base_url=site.url, timeout=30) as client:
        client.get("/wp-login.php")  # sets the test cookie WordPress checks for
        login = client.post(
            "/wp-login.php",
            data={
                "log": "admin",
                "pwd": "password",
                "wp-submit": "Log In",
                "testcookie": "1",
                "redirect_to": f"{site.url}/wp-admin/",
            },
        )
        assert login.status_code == 302, login.text[:500]
        yield client


def test_unwritable_spool_keeps_the_store_working_reports_and_loses_nothing(
    store: Store,
) -> None:
    (product,) = store.request({"op": "create", "title": "Cap", "sku": "CAP-1"})
    store.request(
        {
            "op": "meta",
            "id": product,
            "key": "_bridge_jsonld",
            "value": '{"@type": "Product", "name": "Cap"}',
        }
    )
    shutil.rmtree(store.incoming)
    store.incoming.write_text("not a folder")  # even root cannot write into a regular file
    log_before = store.site.debug_log.read_text() if store.site.debug_log.exists() else ""

    (ok,) = store.request({"op": "update", "id": product, "title": "Red cap"})
    assert ok == product
    assert store.request({"op": "get", "id": product})[0]["title"] == "Red cap"
    status = store.status()
    assert str(store.incoming) in status["error"]
    (kept,) = store.request({"op": "get_option", "name": "bridge_agent_pending"})
    assert [e["id"] for e in kept] == [str(product)]
    log = store.site.debug_log.read_text()[len(log_before) :]
    assert "bridge-agent:" in log and str(store.incoming) in log

    # The page still renders, with its JSON-LD, and without a PHP warning.
    (page,) = store.request({"op": "get", "id": product})
    html, scripts = page_scripts(page["url"])
    assert not PHP_PROBLEM.search(html)
    assert [c for _, c, _ in json_ld(scripts)] == ["bridge-agent-jsonld"]

    # The administrators see it on every admin screen and on the settings page.
    with admin_client(store.site) as admin:
        dashboard = admin.get("/wp-admin/index.php").text
        assert "bridge-agent-notice" in dashboard and str(store.incoming) in dashboard
        settings = admin.get("/wp-admin/options-general.php?page=bridge-agent").text
        assert "Kept for a retry" in settings and "Write kept changes now" in settings
        health = admin.get("/wp-admin/site-health.php").text
        assert "Product changes cannot be written for the bridge agent" in health

    # Fixed: the next request writes the kept change with its own, in one file.
    store.incoming.unlink()
    store.incoming.mkdir()
    (other,) = store.request({"op": "create", "title": "Scarf", "sku": "SCARF-1"})
    assert [e["id"] for e in _events_in(store)] == [str(product), str(other)]
    status = store.status()
    assert status["error"] == ""
    assert store.request({"op": "get_option", "name": "bridge_agent_pending"}) == [None]
    assert "written again" in store.site.debug_log.read_text()[len(log_before) :]


def _events_in(store: Store) -> list[dict[str, Any]]:
    (name,) = store.names()
    doc = json.loads((store.incoming / name).read_bytes())
    return doc if isinstance(doc, list) else [doc]


def test_a_missing_spool_directory_is_reported_not_created(store: Store, tmp_path: Path) -> None:
    gone = tmp_path / "no" / "such" / "spool"
    store.request({"op": "option", "name": "bridge_agent_spool_dir", "value": str(gone)})
    (product,) = store.request({"op": "create", "title": "Sock", "sku": "SOCK-1"})
    assert isinstance(product, int)
    assert "does not exist" in store.status()["error"]
    assert not gone.exists()
    # The hourly retry writes the kept change once the directory exists.
    (gone / "incoming").mkdir(parents=True)
    store.request({"op": "do_cron", "hook": "bridge_agent_retry_pending"})
    files = list((gone / "incoming").iterdir())
    assert len(files) == 1
    assert parse_spool(files[0].read_bytes())[0].id == str(product)


# -- settings, status, uninstall -----------------------------------------------------------------


def test_settings_page_shows_the_status_line(store: Store) -> None:
    for n in range(3):
        store.request({"op": "create", "title": f"Item {n}", "sku": f"I-{n}"})
    with admin_client(store.site) as admin:
        page = admin.get("/wp-admin/options-general.php?page=bridge-agent")
        assert page.status_code == 200
        line = re.search(r'<p class="bridge-agent-status-line">(.*?)</p>', page.text)
        assert line is not None
        assert "Last event written" in line.group(1)
        assert "3 files waiting for the agent" in line.group(1)
        assert str(store.spool) in page.text
        assert "bridge-agent-notice" not in page.text
        assert not PHP_PROBLEM.search(page.text)
        # A relative path is refused and the setting kept.
        nonce = re.search(r'name="_wpnonce" value="([^"]+)"', page.text.split("options.php")[-1])
        assert nonce is not None
        saved = admin.post(
            "/wp-admin/options.php",
            data={
                "option_page": "bridge_agent",
                "action": "update",
                "_wpnonce": nonce.group(1),
                "_wp_http_referer": "/wp-admin/options-general.php?page=bridge-agent",
                "bridge_agent_spool_dir": "relative/spool",
            },
        )
        assert saved.status_code == 302
        again = admin.get(saved.headers["location"]).text
        assert "must be an absolute path" in again
        kept = store.request({"op": "get_option", "name": "bridge_agent_spool_dir"})
        assert kept == [str(store.spool)]
        # The warning quotes the submitted path: as text, never as markup.
        saved = admin.post(
            "/wp-admin/options.php",
            data={"option_page": "bridge_agent", "action": "update", "_wpnonce": nonce.group(1),
                  "_wp_http_referer": "/wp-admin/options-general.php?page=bridge-agent",
                  "bridge_agent_spool_dir": "/tmp/<b>bold</b>"},
        )  # fmt: skip
        warned = admin.get(saved.headers["location"]).text
        assert "does not exist" in warned
        assert "&lt;b&gt;bold" in warned and "<b>bold</b>" not in warned
    assert store.request({"op": "get_option", "name": "bridge_agent_spool_dir"}) == [
        "/tmp/<b>bold</b>"
    ]


def test_the_wp_config_constant_wins_over_the_setting(store: Store, tmp_path: Path) -> None:
    other = tmp_path / "from-constant"
    (other / "incoming").mkdir(parents=True)
    store.site.ops(
        {"op": "create", "title": "Belt", "sku": "BELT-1"},
        env={"BRIDGE_TEST_SPOOL_CONSTANT": str(other)},
    )
    assert store.names() == set()
    assert len(list((other / "incoming").iterdir())) == 1


def test_uninstall_removes_the_plugin_data(store: Store) -> None:
    (product,) = store.request({"op": "create", "title": "Hat", "sku": "HAT-1"})
    store.request(
        {"op": "meta", "id": product, "key": "_bridge_jsonld", "value": '{"@type": "Product"}'}
    )
    assert store.request({"op": "scheduled", "hook": "bridge_agent_retry_pending"})[0]
    try:
        store.request({"op": "uninstall"})
        left = store.request(
            {"op": "get_option", "name": "bridge_agent_spool_dir"},
            {"op": "get_option", "name": "bridge_agent_status"},
            {"op": "get_meta", "id": product, "key": "_bridge_jsonld"},
            {"op": "scheduled", "hook": "bridge_agent_retry_pending"},
        )
        assert left == [None, None, "", False]
        assert len(store.names()) == 1  # the agent's queue is left alone
    finally:
        assert store.request({"op": "activate"}) == [True]


# -- end to end with the agent -------------------------------------------------------------------


async def test_the_agent_consumes_the_plugin_spool_end_to_end(
    store: Store, hub: Hub, tmp_path: Path
) -> None:
    sim = WooSimulator.generate(products=0, seed=5)
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve(sim, "127.0.0.1", 0, ready=port.set_result))
    url = f"http://127.0.0.1:{await asyncio.wait_for(port, 30)}"
    settings = StoreSettings(
        id="main",
        platform="woocommerce",
        url=url,
        spool_dir=store.spool,
        poll_interval=3600.0,
        reconcile_interval=86400.0,
        secrets={
            "consumer_key": Secret(sim.consumer_key),
            "consumer_secret": Secret(sim.consumer_secret),
        },
        options={"api_prefix": "/wp-json/wc/v3", "per_page": 100, "verify_tls": True},
    )
    agent = Agent(replace(make_config(tmp_path, hub.url), stores=(settings,)))
    ready = asyncio.Event()
    running: asyncio.Task[None] | None = None
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as control:
            seed = (await control.post("/__sim/products", json={"name": "Seed"})).json()["id"]
            running = asyncio.create_task(agent.run(ready=ready))
            await asyncio.wait_for(ready.wait(), 30)
            # With the seed product at the hub, the first import has listed the catalog: from
            # here on only the spool can bring changes (poll and reconciliation are hours away).
            await _until(hub, lambda p: str(seed) in p, "the first import")
            # The simulator stands in for WooCommerce's REST API (WooCommerce is not installed in
            # this WordPress): the same product is created on both sides with the same id, one
            # far above the ids WordPress has used (wp_insert_post's import_id must be free).
            sim.catalog._next_post = max(sim.catalog._next_post, 900_000)
            created = (
                await control.post(
                    "/__sim/products",
                    json={"name": "Spool hoodie", "sku": "SPOOL-1", "regular_price": "30.00"},
                )
            ).json()
            product_id = created["id"]
            assert product_id > 900_000
            assert (
                await _wp(
                    store,
                    {
                        "op": "create",
                        "title": "Spool hoodie",
                        "sku": "SPOOL-1",
                        "import_id": product_id,
                    },
                )
                == product_id
            )
            await _until(
                hub,
                lambda p: p.get(str(product_id), {}).get("data", {}).get("title") == "Spool hoodie",
                "the created product",
            )

            await control.patch(f"/__sim/products/{product_id}", json={"name": "Spool hoodie v2"})
            await _wp(store, {"op": "update", "id": product_id, "title": "Spool hoodie v2"})
            await _until(
                hub,
                lambda p: (
                    p.get(str(product_id), {}).get("data", {}).get("title") == "Spool hoodie v2"
                ),
                "the update",
            )

            await control.delete(f"/__sim/products/{product_id}", params={"force": "true"})
            await _wp(store, {"op": "delete", "id": product_id})
            await _until(hub, lambda p: p[str(product_id)]["deleted"], "the deletion")

        for _ in range(100):  # the watcher deletes files after their changes are committed
            if not store.names():
                break
            await asyncio.sleep(0.1)
        assert store.names() == set()
        assert not list((store.spool / "rejected").iterdir())
        consumed = agent.metrics.value("bridge_spool_files_total", store="main", outcome="consumed")
        assert consumed == 3
        assert agent.metrics.value("bridge_changes_recorded_total", source="spool") == 3
    finally:
        agent.stop()
        if running is not None:
            await asyncio.wait_for(running, 30)
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)
        await sim.close()


async def _wp(store: Store, op: dict[str, Any]) -> Any:
    return (await asyncio.to_thread(store.request, op))[0]


async def _until(hub: Hub, predicate: Any, what: str) -> None:
    for _ in range(300):
        if predicate(await hub.products("main")):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not reach the hub within 30s")
