"""Fuzzing the agent's local inputs (issue 16): `agent.toml` built from the loader's real keys,
and spool folders holding every kind of entry a web server's user can leave there.

Why these properties:

- **agent.toml.** An operator's typo must come back as one `ConfigError` that lists every
  problem, so one edit fixes them all, and never as a traceback. The documents start from a
  valid configuration with the three platforms' stores, then give chosen keys values no
  reading can accept (a table or an array of tables where a scalar belongs): each such key must
  be named in the problems. Other keys get merely odd values (negative, zero, huge, empty,
  words where numbers go), for which the only rule is: a configuration or a `ConfigError`.
- **Spool folders.** Beside the file contents the older fuzz covers (`test_fuzz.py`), a round
  meets partial writes (a document cut short, a writer's temporary dot file), huge single
  lines, documents of the wrong shape, symlinks (to a file inside or outside the folder, or
  dangling) and folders named `*.json`. A round never fails; afterwards `incoming/` holds only
  the temporary files (a writer may still be renaming them), everything else was consumed or
  set aside with a `.why` note, and no symlink's target was read away, moved or changed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from bridge_agent.config import load_config
from bridge_agent.config import loader as config_loader
from bridge_agent.config.specs import platform_adapter
from bridge_agent.errors import ConfigError
from bridge_agent.health import Health
from bridge_agent.metrics import Metrics
from bridge_agent.sources import StoreContext
from bridge_agent.sources.spool import MAX_FILE_BYTES, SpoolWatcher
from bridge_agent.store import StateStore
from tests.test_fuzz import NoStore, hostile_json

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# -- agent.toml ------------------------------------------------------------------------------------

BASE: dict[str, Any] = {
    "agent": {"id": "fuzz-agent", "state_dir": "state", "drain_timeout": "30s"},
    "hub": {"url": "http://127.0.0.1:8600", "token": "hub-token", "timeout": 30},
    "health": {"listen": "127.0.0.1:0"},
    "webhooks": {"listen": "127.0.0.1:0", "max_body_bytes": 2_097_152},
    "stores": [
        {"id": "woo", "platform": "woocommerce", "url": "http://127.0.0.1:8700",
         "consumer_key": "ck_x", "consumer_secret": "cs_x", "webhook_secret": "wh"},
        {"id": "shop", "platform": "shopify", "url": "https://fuzz.myshopify.com",
         "access_token": "shpat_x", "poll_interval": "5m"},
        {"id": "dir", "platform": "jsondir", "url": "http://127.0.0.1/",
         "catalog_dir": "catalog", "filters": {"status": ["active"]}},
    ],
}  # fmt: skip

# The keys each table takes, as the loader and the adapters declare them.
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "agent": config_loader._AGENT_KEYS,
    "hub": tuple(k for k in config_loader._HUB_KEYS if k != "token_file"),
    "health": config_loader._HEALTH_KEYS,
    "webhooks": config_loader._WEBHOOK_KEYS,
}
STORE_KEYS = tuple(k for k in config_loader._STORE_KEYS if k != "filters")
PLATFORM_KEYS = {
    platform: tuple(spec.secrets) + tuple(spec.optional_secrets) + tuple(spec.options)
    for platform in ("woocommerce", "shopify", "jsondir")
    if (spec := getattr(platform_adapter(platform), "settings_spec", None)) is not None
}

# Values no scalar key can take: each key given one must be named in the problems.
IMPOSSIBLE = ["{ nested = 1 }", "[{ a = 1 }, { b = 2 }]", "{ x = [1, 2, 3] }"]
odd_scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(st.characters(blacklist_categories=["Cs"]), max_size=20),  # TOML has no surrogates
    st.sampled_from(["", "0", "-1", "0s", "-5m", "1e400", "nan", "inf", "99999999999h",
                     "127.0.0.1:99999", "[::1]:0", "ftp://x", "http://", "${UNSET_VAR}",
                     "${UNSET:?must be set}", "*/0 * * * *", "Mars/Olympus", "review", "x" * 500]),
)  # fmt: skip


def toml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else "nan"
    # JSON's escapes are TOML's, except that TOML spells a character beyond the BMP \U...
    # rather than as a surrogate pair: keep those raw, and escape DEL, which TOML refuses raw.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_document(doc: dict[str, Any], raw: dict[tuple[str, int | None, str], str]) -> str:
    """TOML text for `doc`; `raw` holds literal TOML for (table, store index, key)."""
    lines: list[str] = []
    for table in ("agent", "hub", "health", "webhooks"):
        lines.append(f"[{table}]")
        for key, value in doc[table].items():
            lines.append(f"{key} = {raw.get((table, None, key), toml_scalar(value))}")
    for n, store in enumerate(doc["stores"]):
        lines.append("[[stores]]")
        for key, value in store.items():
            if isinstance(value, dict):
                continue
            lines.append(f"{key} = {raw.get(('stores', n, key), toml_scalar(value))}")
        for key, value in store.items():
            if isinstance(value, dict):  # a sub-table last, after the store's own keys
                lines.append(f"[stores.{key}]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"


@st.composite
def configs(draw: st.DrawFn) -> tuple[str, set[str]]:
    """A document, and the keys it gives impossible values (which the problems must name)."""
    doc = json.loads(json.dumps(BASE))
    raw: dict[tuple[str, int | None, str], str] = {}
    doomed: set[str] = set()
    for _ in range(draw(st.integers(min_value=0, max_value=5))):
        if draw(st.booleans()):
            table = draw(st.sampled_from(sorted(TABLE_KEYS)))
            index: int | None = None
            key = draw(st.sampled_from(TABLE_KEYS[table]))
            doc[table].setdefault(key, 1)
        else:
            table, index = "stores", draw(st.integers(min_value=0, max_value=2))
            store = doc["stores"][index]
            key = draw(st.sampled_from(STORE_KEYS + PLATFORM_KEYS.get(store["platform"], ())))
            if key in ("id", "platform"):
                continue  # a store without its id or platform cannot have its keys judged
            store.setdefault(key, 1)
        if draw(st.integers(0, 2)) == 0:
            raw[(table, index, key)] = draw(st.sampled_from(IMPOSSIBLE))
        else:  # (a key drawn twice keeps the last value: it decides whether it is doomed)
            raw[(table, index, key)] = toml_scalar(draw(odd_scalars))
    doomed |= {key for (_, _, key), value in raw.items() if value in IMPOSSIBLE}
    if draw(st.integers(0, 4)) == 0:
        doc["hub"]["tiemout"] = 3  # a misspelt key
        doomed.add("tiemout")
    return toml_document(doc, raw), doomed


@FUZZ
@given(case=configs())
@example(case=(toml_document(BASE, {}), set()))  # the base itself is valid
def test_agent_toml_gives_a_config_or_every_problem(
    tmp_path_factory: pytest.TempPathFactory, case: tuple[str, set[str]]
) -> None:
    text, doomed = case
    path = tmp_path_factory.mktemp("config") / "agent.toml"
    path.write_text(text, encoding="utf-8")
    try:
        config = load_config(path, env={})
    except ConfigError as exc:
        refused: ConfigError | None = exc
    else:
        refused = None
    if refused is not None:
        problems = refused.problems
        event(f"ConfigError, {min(len(problems), 5)}+ problems")
        assert problems and all(p.strip() for p in problems)
        assert "hub-token" not in str(refused) and "shpat_x" not in str(refused)  # no secret
        for key in doomed:
            assert any(re.search(rf"\b{re.escape(key)}\b", p) for p in problems), (key, problems)
        return
    event("valid")
    assert not doomed
    assert {s.id for s in config.stores} == {"woo", "shop", "dir"}


# -- spool folders --------------------------------------------------------------------------------

GOOD_EVENT = b'{"v": 1, "event": "product.updated", "id": "794"}'


@st.composite
def entries(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(
        st.sampled_from(["content", "partial", "huge-line", "wrong-shape", "temp", "link-inside",
                         "link-outside", "link-dangling", "folder", "good"])
    )  # fmt: skip
    if kind == "content":
        return kind, draw(hostile_json())
    if kind == "partial":
        return kind, GOOD_EVENT[: draw(st.integers(min_value=0, max_value=len(GOOD_EVENT) - 1))]
    if kind == "huge-line":
        size = draw(st.sampled_from([MAX_FILE_BYTES - 100, MAX_FILE_BYTES + 1]))
        return kind, b'{"v": 1, "event": "product.updated", "id": "1", "pad": "' + b"x" * size
    if kind == "wrong-shape":
        doc = draw(st.sampled_from([
            [1, 2], "product.updated", {"v": "1", "event": 5, "id": []},
            {"v": 1, "event": "product.updated", "id": {"nested": "794"}},
            [{"v": 1, "event": "product.updated", "id": "7"}, None],
            {"v": 2, "event": "product.updated", "id": "7"}, {"events": []},
        ]))  # fmt: skip
        return kind, json.dumps(doc).encode()
    return kind, GOOD_EVENT


def _make(incoming: Path, outside: Path, n: int, kind: str, content: bytes) -> Path:
    name = f"{n:03d}.json"
    path = incoming / name
    if kind == "temp":
        path = incoming / f".{name}.tmp"
        path.write_bytes(content)
    elif kind.startswith("link-"):
        target = {
            "link-inside": incoming.parent / f"target-{n}.json",
            "link-outside": outside / f"secret-{n}.json",
            "link-dangling": outside / f"missing-{n}.json",
        }[kind]
        if kind != "link-dangling":
            target.write_bytes(content)
        path.symlink_to(target)
    elif kind == "folder":
        path.mkdir()
        (path / "inner.json").write_bytes(content)
    else:
        path.write_bytes(content)
    return path


@settings(FUZZ, max_examples=40)
@given(made=st.lists(entries(), min_size=1, max_size=6))
async def test_a_spool_round_survives_every_kind_of_entry(
    tmp_path_factory: pytest.TempPathFactory, made: list[tuple[str, bytes]]
) -> None:
    root = tmp_path_factory.mktemp("spool")
    incoming, outside = root / "spool" / "incoming", root / "elsewhere"
    incoming.mkdir(parents=True)
    outside.mkdir()
    for n, (kind, content) in enumerate(made):
        _make(incoming, outside, n, kind, content)
    targets = {p: p.read_bytes() for p in [*outside.iterdir(), *(root / "spool").glob("target-*")]}
    async with StateStore.open(root / "state") as state:
        ctx = StoreContext("main", NoStore(), state, lambda: None, Metrics(), Health("s"))  # type: ignore[arg-type]
        spool = SpoolWatcher(ctx, spool_dir=root / "spool")
        await spool.process_once()
        assert await spool.process_once() == (0, 0)  # everything consumed or set aside
    left = sorted(p.name for p in incoming.iterdir())
    temps = sorted(f".{n:03d}.json.tmp" for n, (kind, _) in enumerate(made) if kind == "temp")
    assert left == temps  # only a writer's fresh temporary files stay
    rejected = root / "spool" / "rejected"
    for n, (kind, _) in enumerate(made):
        if kind == "good":  # a well-formed hook is consumed, never set aside
            assert not (rejected / f"{n:03d}.json").exists()
    if rejected.exists():
        for entry in rejected.iterdir():
            if not entry.name.endswith(".why"):
                assert (rejected / f"{entry.name}.why").exists()
    for target, content in targets.items():  # a link is never followed to its target
        assert target.read_bytes() == content
    event(", ".join(sorted({kind for kind, _ in made})))
