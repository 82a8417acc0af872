"""The Shopify theme app extension (plugins/shopify/): its app embed rendered, its files checked.

The block `blocks/jsonld.liquid` is rendered with python-liquid, the engine of the dev
dependencies, in the context Shopify gives an app embed: `request.page_type`, the page's
`product` and its metafields. python-liquid does not know Shopify's `{% schema %}` tag, so the
tests cut the schema block out of the source (`_split`) and render the rest; the schema's JSON
is checked on its own. python-liquid has no `json` filter by default either: each rendering test
runs under three `json` filters, because what counts is that the block is safe whatever the
serialiser escapes:

- `unescaped`: `json.dumps(ensure_ascii=False)`, no HTML escaping at all (the worst case: raw
  "<", "&", U+2028 reach the block's own escaping);
- `ascii`: python-liquid's `liquid.extra` JSON filter (`json.dumps`, non-ASCII as \\uXXXX);
- `html_safe`: "<", ">", "&", U+2028 and U+2029 as \\uXXXX, as Rails' `to_json` (and, as far as
  we know, Shopify's `json` filter) writes them.

The page is then read with the standard library's HTML parser: exactly one element, a
`<script type="application/ld+json">` whose text `json.loads` to the metafield's value, and no
"</script" or "<!--" inside it; or nothing at all.

The TOML and layout checks follow Shopify's published rules: the app configuration's required keys
(shopify.dev, "App configuration"), and what Shopify CLI validates before deploying a theme app
extension (files only in assets/, blocks/, locales/, snippets/ with their extensions; a handle of
letters, digits and hyphens, at most 30 characters).
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from liquid import Environment
from liquid.extra import JSON

from bridge_agent.platforms.shopify import writer
from bridge_agent.platforms.shopify.settings import API_VERSION

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "shopify"
EXTENSION = PLUGIN / "extensions" / "bridge-jsonld"
BLOCK = EXTENSION / "blocks" / "jsonld.liquid"
# The metafield the block prints: what the writer writes (checked against it below).
JSONLD_NAMESPACE = "bridge"
JSONLD_KEY = "jsonld"

_SCHEMA = re.compile(r"\{%-?\s*schema\s*-?%\}(.*?)\{%-?\s*endschema\s*-?%\}", re.S)


def _split(source: str) -> tuple[str, dict[str, Any]]:
    """The block's Liquid without its `{% schema %}`, and the schema's JSON."""
    found = _SCHEMA.findall(source)
    assert len(found) == 1, "an app block has exactly one {% schema %}"
    schema = json.loads(found[0])
    assert isinstance(schema, dict)
    return _SCHEMA.sub("", source), schema


def _html_safe(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


JSON_FILTERS: dict[str, Callable[[object], str]] = {
    "unescaped": lambda value: json.dumps(value, ensure_ascii=False),
    "ascii": JSON(),
    "html_safe": _html_safe,
}


@pytest.fixture(params=sorted(JSON_FILTERS))
def render(request: pytest.FixtureRequest) -> Callable[..., str]:
    """Renders the block for a page type and a product (None: the page has no product)."""
    env = Environment()
    env.add_filter("json", JSON_FILTERS[request.param])
    template = env.from_string(_split(BLOCK.read_text(encoding="utf-8"))[0])

    def run(page_type: str, product: dict[str, Any] | None) -> str:
        context: dict[str, Any] = {"request": {"page_type": page_type}}
        if product is not None:
            context["product"] = product
        return template.render(**context)

    return run


def _product(metafields: dict[str, Any]) -> dict[str, Any]:
    return {"id": 632910392, "title": "IPod Nano - 8GB", "metafields": metafields}


def _with_jsonld(value: object) -> dict[str, Any]:
    """A product whose `bridge.jsonld` metafield (type json) holds `value`."""
    metafield = {"type": "json", "value": value}
    return _product({JSONLD_NAMESPACE: {JSONLD_KEY: metafield}})


class _Page(HTMLParser):
    """The elements, script texts, and any other text or comment of a rendered fragment."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=False)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.stray: list[str] = []
        self._script = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag == "script":
            self._script = True
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._script = False

    def handle_data(self, data: str) -> None:
        if self._script:
            self.scripts[-1] += data
        elif data.strip():
            self.stray.append(data)

    def handle_comment(self, data: str) -> None:
        self.stray.append(f"<!--{data}-->")

    def handle_entityref(self, name: str) -> None:
        self.stray.append(f"&{name};")

    def handle_charref(self, name: str) -> None:
        self.stray.append(f"&#{name};")


def _the_jsonld(html: str) -> object:
    """The page's one JSON-LD element, parsed; fails unless it is exactly that."""
    page = _Page(html)
    assert page.elements == [
        ("script", {"type": "application/ld+json", "data-bridge-agent": "jsonld"})
    ], html
    assert page.stray == [], html
    (text,) = page.scripts
    # What an HTML parser looks for inside a script element: neither may come from stored text.
    assert "</script" not in text.lower() and "<!--" not in text, text
    assert "<" not in text, text
    assert html.strip().endswith("</script>") and html.lower().count("</script") == 1
    return json.loads(text)


VALID = {
    "@context": "https://schema.org",
    "@type": "Product",
    "name": "IPod Nano - 8GB",
    "description": "Revolutionary multi-touch interface.",
    "sku": "IPOD2008PINK",
    "gtin13": "0885909950805",
    "brand": {"@type": "Brand", "name": "Apple"},
    "image": ["https://cdn.example.com/ipod-nano.png"],
    "offers": {
        "@type": "Offer",
        "price": "199.00",
        "priceCurrency": "USD",
        "availability": "https://schema.org/InStock",
        "url": "https://acme.example.com/products/ipod-nano",
        "itemCondition": "https://schema.org/NewCondition",
    },
    "aggregateRating": {"@type": "AggregateRating", "ratingValue": 4.5, "reviewCount": 12},
}

HOSTILE = {
    "@context": "https://schema.org",
    "@type": "Product",
    "name": "</script><script>alert(1)</script>",
    "description": "<!-- <script> </SCRIPT > </script\t> <b>bold</b> &amp; &lt; ]]> -->",
    "slogan": "Ünïcödé 日本語 🎉 \u2028 line \u2029 para \x7f",
    "keywords": "quotes \" ' and a backslash \\</script> and \\u003c",
    "brand": {"@type": "Brand", "name": "<img src=x onerror=alert(1)>"},
    "additionalProperty": [{"@type": "PropertyValue", "name": "a&b", "value": "x>y<z"}],
}


def test_a_product_page_carries_the_metafields_json_ld(render: Callable[..., str]) -> None:
    assert _the_jsonld(render("product", _with_jsonld(VALID))) == VALID


def test_hostile_text_stays_inside_the_element_and_means_the_same(
    render: Callable[..., str],
) -> None:
    html = render("product", _with_jsonld(HOSTILE))
    assert _the_jsonld(html) == HOSTILE
    assert "alert(1)</script>" not in html and "<img" not in html and "<b>" not in html


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="null"),
        pytest.param({}, id="empty-object"),
        pytest.param([VALID], id="list"),
        pytest.param([], id="empty-list"),
        pytest.param("", id="empty-string"),
        pytest.param('{"@type": "Product"}', id="string-holding-json"),
        pytest.param("</script><script>alert(1)</script>", id="hostile-string"),
        pytest.param(42, id="number"),
        pytest.param(0, id="zero"),
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
    ],
)
def test_an_empty_or_non_object_metafield_prints_nothing(
    render: Callable[..., str], value: object
) -> None:
    assert render("product", _with_jsonld(value)).strip() == ""


@pytest.mark.parametrize(
    "metafields",
    [
        pytest.param({}, id="no-metafields"),
        pytest.param({JSONLD_NAMESPACE: {}}, id="namespace-without-the-key"),
        pytest.param({"custom": {JSONLD_KEY: {"type": "json", "value": VALID}}}, id="other-ns"),
        pytest.param({JSONLD_NAMESPACE: {JSONLD_KEY: {"type": "json"}}}, id="no-value"),
    ],
)
def test_a_product_without_the_metafield_prints_nothing(
    render: Callable[..., str], metafields: dict[str, Any]
) -> None:
    assert render("product", _product(metafields)).strip() == ""


@pytest.mark.parametrize(
    ("page_type", "has_product"),
    [
        ("collection", True),  # a product object in scope, but not the page's product
        ("index", False),
        ("search", True),
        ("page", False),
        ("product", False),  # a product template rendered without a product
    ],
)
def test_nothing_outside_a_product_page(
    render: Callable[..., str], page_type: str, has_product: bool
) -> None:
    product = _with_jsonld(VALID) if has_product else None
    assert render(page_type, product).strip() == ""


def test_the_block_is_an_app_embed_in_the_head_of_product_templates() -> None:
    _, schema = _split(BLOCK.read_text(encoding="utf-8"))
    # "head" (or "body") makes an app embed block; "section" would make an app block.
    assert schema["target"] == "head"
    assert isinstance(schema["name"], str) and schema["name"].strip()
    assert schema["settings"] == []
    # enabled_on / disabled_on replaced the deprecated `templates`; only one of them may be set.
    assert schema["enabled_on"] == {"templates": ["product"]}
    assert "disabled_on" not in schema and "templates" not in schema
    known = {"name", "target", "settings", "enabled_on", "available_if", "javascript", "stylesheet"}
    assert set(schema) <= known, set(schema) - known


def test_the_block_reads_the_metafield_the_writer_writes() -> None:
    assert (writer.JSONLD_NAMESPACE, writer.JSONLD_KEY) == (JSONLD_NAMESPACE, JSONLD_KEY)
    assert writer.JSONLD_TYPE == "json"  # the type whose `.value` Liquid gives as an object
    source = BLOCK.read_text(encoding="utf-8")
    assert f"product.metafields.{JSONLD_NAMESPACE}.{JSONLD_KEY}.value" in source


def test_the_extension_follows_the_layout_shopify_cli_deploys() -> None:
    config = tomllib.loads((EXTENSION / "shopify.extension.toml").read_text(encoding="utf-8"))
    assert config["type"] == "theme"
    assert isinstance(config["name"], str) and config["name"].strip()
    handle = config["handle"]
    assert re.fullmatch(r"[a-zA-Z0-9-]{1,30}", handle) and handle.strip("-") == handle
    assert handle == EXTENSION.name

    allowed = {
        "assets": (".jpg", ".jpeg", ".json", ".js", ".css", ".png", ".svg", ".wasm"),
        "blocks": (".liquid",),
        "locales": (".json",),
        "snippets": (".liquid",),
    }
    liquid_bytes = 0
    for path in EXTENSION.rglob("*"):
        if path.is_dir():
            continue
        relative = path.relative_to(EXTENSION)
        if len(relative.parts) == 1:
            assert relative.name == "shopify.extension.toml", relative
            continue
        assert len(relative.parts) == 2, f"{relative}: Shopify reads one level of folders"
        folder = relative.parts[0]
        assert folder in allowed and relative.name.endswith(allowed[folder]), relative
        if folder in {"blocks", "snippets"}:
            liquid_bytes += path.stat().st_size
    assert liquid_bytes <= 500 * 1024  # Shopify CLI's limit on an extension's Liquid


def test_the_app_configuration_has_what_shopify_requires() -> None:
    config = tomllib.loads((PLUGIN / "shopify.app.toml").read_text(encoding="utf-8"))
    for key in ("client_id", "name", "application_url"):
        assert isinstance(config[key], str) and config[key].strip(), key
    assert isinstance(config["embedded"], bool)
    assert config["application_url"].startswith("https://")
    # The client ID is the merchant's own app's: the file must say so, not carry someone's.
    assert "REPLACE" in config["client_id"]
    scopes = set(config["access_scopes"]["scopes"].split(","))
    assert {"read_products", "write_products", "read_inventory", "write_files"} <= scopes
    assert config["webhooks"]["api_version"] == API_VERSION
    assert all(url.startswith("https://") for url in config["auth"]["redirect_urls"])
