"""Command line: parse, configure logs, install signals, run.

Exit codes (design.md section 7): 0 ok, 1 failure, 2 usage, 78 configuration error (EX_CONFIG, as
`vector validate`). The process owns the signals: the first SIGTERM/SIGINT asks the agent to stop
gracefully, a second one abandons the drain (uvicorn's two-stage stop). The global options
(`--config`, `--log-level`, `--log-format`) are read before or after the command (`bridge-agent
validate --config FILE`, as `vector validate --config` reads); after it wins.

Commands that only read or edit the local state (`status`, `log`, `outbox`, `approvals list`,
`approve` and `reject`) load the configuration without its secrets, so they work in a fresh
terminal without the hub token; those that read or write the store (`approvals show`, an
approval's `--dry-run`, `rollback`) need its keys. A
reader that goes away early (`bridge-agent status | head -1`) ends the command quietly, exit 0:
what it wanted was read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import structlog

from bridge_agent import __version__, logs, platforms
from bridge_agent.agent import Agent, RootTaskExited, secret_values
from bridge_agent.config import (
    Config,
    DestinationSettings,
    ExportSettings,
    Listen,
    S3DestinationSettings,
    SftpDestinationSettings,
    StoreSettings,
    default_config_path,
    load_config,
    settings_spec_of,
)
from bridge_agent.downstream import approvals, rollback
from bridge_agent.downstream.engine import writer_of
from bridge_agent.errors import BridgeError, ConfigError, InputError, StateStoreError
from bridge_agent.export import (
    FORMATS,
    LAST,
    ExportRequest,
    atomic_file,
    export_catalog,
    parse_filters,
    parse_since,
    save_mark,
)
from bridge_agent.export import check as check_export
from bridge_agent.export.run import export_to_pipe, mark_unwritable
from bridge_agent.export.schedule import RunOutcome, run_export
from bridge_agent.export.schedule import load_status as load_export_status
from bridge_agent.health import Health
from bridge_agent.inputs import loads_json, read_regular_file
from bridge_agent.platforms.base import Capability, Platform, capabilities_of
from bridge_agent.platforms.http import RequestBudget, build_platform
from bridge_agent.scheduling import cron_trigger
from bridge_agent.server import StoreView, status_document
from bridge_agent.sources.importer import freeze
from bridge_agent.store import Entry, Run, StateStore
from bridge_agent.stores import STORE_CLIENT_TIMEOUT
from bridge_agent.taskdump import describe_tasks

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 78

log = structlog.get_logger("bridge_agent.cli")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_usage(sys.stderr)
        return EXIT_USAGE
    logs.configure(json=_log_json(args.log_format), level=args.log_level)
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not as an ignored error at exit
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    except ConfigError as exc:
        print(f"bridge-agent: configuration error in {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except StateStoreError as exc:
        print(f"bridge-agent: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE
    return code


def _silence_stdout() -> None:
    """The reader of stdout went away. As Python's docs advise (signal module, "Note on SIGPIPE"),
    point stdout at devnull so that the flush at exit does not fail a second time."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of 1 or more, got {value}")
    return value


_GLOBAL_DEFAULTS: dict[str, Any] = {"config": None, "log_level": "info", "log_format": "auto"}


def _add_global_options(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """`--config`, `--log-level` and `--log-format`, accepted before and after the command."""
    parser.add_argument(
        "--config",
        type=Path,
        default=defaults["config"],
        help="agent.toml (default: ./agent.toml, then /etc/bridge-agent/agent.toml)",
    )
    parser.add_argument(
        "--log-level", default=defaults["log_level"], choices=["debug", "info", "warning", "error"],
        help="the least severe log lines written (default: info, or [agent] log_level for run)",
    )  # fmt: skip
    parser.add_argument(
        "--log-format", default=defaults["log_format"], choices=["auto", "json", "console"],
        help="json lines (journald) or console; auto picks console on a terminal",
    )  # fmt: skip


class _Commands:
    """Subcommands that also take the global options (after the command name)."""

    def __init__(
        self,
        actions: argparse._SubParsersAction[argparse.ArgumentParser],
        after: argparse.ArgumentParser,
    ) -> None:
        self._actions = actions
        self._after = after

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self._actions.add_parser(
            name, parents=[self._after], **kwargs
        )
        return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bridge-agent",
        description="Keeps a central SEO hub in sync with a store's catalog, in both directions.",
    )
    parser.add_argument("--version", action="version", version=f"bridge-agent {__version__}")
    _add_global_options(parser, _GLOBAL_DEFAULTS)
    # The same options after the command (`bridge-agent validate --config FILE`, as `vector
    # validate --config` reads). Without a default there, an option not given after the command
    # leaves the value from before it, and one given after it wins.
    after = argparse.ArgumentParser(add_help=False)
    _add_global_options(after, dict.fromkeys(_GLOBAL_DEFAULTS, argparse.SUPPRESS))
    sub = _Commands(parser.add_subparsers(dest="command", metavar="COMMAND"), after)

    run = sub.add_parser("run", help="run the agent until stopped")
    run.set_defaults(handler=cmd_run)

    validate = sub.add_parser("validate", help="check the configuration; exit 0 or 78")
    validate.set_defaults(handler=cmd_validate)

    status = sub.add_parser("status", help="show outbox, hub and stores")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)

    events = sub.add_parser(
        "log", help="show the event log (what operators must know), oldest to newest",
        description="The state store's event log: imports, failures, rejected rows, webhooks"
        " maintained. Reads the state directory; works with the agent stopped or running.",
    )  # fmt: skip
    events.add_argument(
        "--store", action="append", help="only events of this store (repeatable; default: all)"
    )
    events.add_argument(
        "--product", action="append", metavar="ID",
        help="only events of this product (repeatable; of any store unless --store)",
    )  # fmt: skip
    events.add_argument(
        "--since", type=_since_or_ago, metavar="T",
        help="only events at or after T: an ISO 8601 time (local time without a zone, as shown),"
        " or a duration back from now: 90s, 30m, 2h, 1d, 1w",
    )  # fmt: skip
    events.add_argument(
        "--errors", action="store_true",
        help="only errors (levels error and critical); with --level, the more severe bound wins",
    )  # fmt: skip
    events.add_argument(
        "--limit", type=_positive, default=50, help="the newest N events (default %(default)s)"
    )
    events.add_argument(
        "--level", choices=EVENT_LEVELS, default="info",
        help="the least severe level shown (default %(default)s)",
    )  # fmt: skip
    events.add_argument(
        "--json", action="store_true",
        help="a JSON array, oldest first: at (epoch ms), time (ISO 8601 UTC) and every field",
    )  # fmt: skip
    events.set_defaults(handler=cmd_log)

    outbox = sub.add_parser("outbox", help="inspect and retry the outbox")
    outbox_sub = _Commands(
        outbox.add_subparsers(dest="outbox_command", metavar="ACTION", required=True), after
    )
    listing = outbox_sub.add_parser("list", help="list outbox rows (default: rejected ones)")
    listing.add_argument("--state", choices=["rejected", "pending", "all"], default="rejected")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_outbox_list)
    retry = outbox_sub.add_parser("retry", help="send rejected rows again (as full products)")
    retry.add_argument("products", nargs="*", metavar="STORE:ID", help="default: all rejected")
    retry.set_defaults(handler=cmd_outbox_retry)

    hub = sub.add_parser("hub", help="run the reference hub")
    hub.add_argument("--listen", default="127.0.0.1:8600", help="host:port (default %(default)s)")
    hub.add_argument("--db", type=Path, required=True, help="SQLite file of the hub")
    hub.add_argument(
        "--token", default=None,
        help="agent token (prefer --token-file or $BRIDGE_HUB_TOKEN: arguments are visible in ps)",
    )  # fmt: skip
    hub.add_argument("--token-file", type=Path, default=None)
    hub.set_defaults(handler=cmd_hub)

    _add_downstream_commands(sub, after)
    _add_export_command(sub)

    sync = sub.add_parser(
        "sync", help="queue a refresh run (or a repair run); the running agent picks it up",
        description="Queue a run for the running agent (it starts within seconds; with the"
        " agent stopped, at its next start). A refresh re-reads the whole catalog and ships only"
        " what changed. Runs of one store go one at a time: a new one queues behind an open"
        " one, which keeps the settings it started with.",
    )  # fmt: skip
    sync.add_argument("--store", action="append", help="store id (default: every active store)")
    sync.add_argument(
        "--force", action="store_true",
        help="ship every visible product as a full upsert whether changed or not, and export"
        " no deletion or deactivation (restores a hub's copy of the catalog; slow)",
    )  # fmt: skip
    sync.add_argument(
        "--dry-run", action="store_true",
        help="read the catalog and report what would ship, recording and shipping nothing",
    )  # fmt: skip
    sync.add_argument(
        "--restart", action="store_true",
        help="cancel the store's open runs (they keep the settings they started with) and start"
        " over with today's settings",
    )  # fmt: skip
    sync.add_argument(
        "--repair", action="store_true",
        help="compare the hub with the store and repair every difference (products the store"
        " no longer has, other hashes, products the hub lost) instead of a refresh",
    )  # fmt: skip
    sync.add_argument(
        "--wait", action="store_true",
        help="follow the run's progress until it ends and print its report (exit 1 if it fails)",
    )  # fmt: skip
    sync.set_defaults(handler=cmd_sync)

    verify = sub.add_parser(
        "verify", help="queue a verification run: re-read products and ship any drift",
        description="Re-read every product (or the ones named) through the store's API,"
        " ship what drifted, confirm unchanged ones to the hub with a compact marker, and"
        " report products the store no longer has. The running agent runs it behind its live"
        " work and within the store's request budget; the store's verify_schedule runs one"
        " every night by default.",
    )  # fmt: skip
    verify.add_argument("--store", action="append", help="store id (default: every active store)")
    verify.add_argument(
        "--product", action="append", metavar="ID", help="only this product (repeatable)"
    )
    verify.add_argument("--wait", action="store_true", help="as for sync --wait")
    verify.set_defaults(handler=cmd_verify)

    for name, what in (("pause", "pause"), ("resume", "resume")):
        toggle = sub.add_parser(
            name,
            help=f"{what} a store's work (runs, polls, hooks, downstream) between two batches",
            description="Pause: the store's runs stop after the page in flight and its"
            " sources and downstream direction stop; webhooks are still received and kept."
            " Resume: everything starts again, runs from their checkpoints. Works with the agent"
            " running (it follows within a second) or stopped (a pause outlives restarts).",
        )
        toggle.add_argument("--store", action="append", required=True, help="store id")
        toggle.set_defaults(handler=cmd_pause if name == "pause" else cmd_resume)

    simulate = sub.add_parser(
        "simulate", help="run a store simulator on loopback",
        description="A simulated store on 127.0.0.1 for the demo, tests and trying the agent"
        " by hand: the platform's REST API with its real shapes and errors, webhooks delivered"
        " to the URLs registered in it (signed as the platform signs them), and a control API"
        " under /__sim/ to change products and inject faults (docs/simulators.md).",
    )  # fmt: skip
    simulate.add_argument("platform", choices=["woocommerce", "shopify"], help="the store platform")
    simulate.add_argument(
        "--products", type=int, default=1000,
        help="products in the generated catalog, about 20%% of them variable with variations"
        " (default %(default)s)",
    )  # fmt: skip
    simulate.add_argument(
        "--port", type=int, default=8700,
        help="port on 127.0.0.1 to listen on (default %(default)s, as in agent.toml)",
    )  # fmt: skip
    simulate.add_argument(
        "--latency-ms", type=float, default=0.0,
        help="added to every REST answer, +/- 10%% jitter (default %(default)s)",
    )  # fmt: skip
    simulate.add_argument(
        "--fail-rate", type=float, default=0.0,
        help="fraction 0..1 of REST requests answered 500, 503 or 429 instead (default"
        " %(default)s)",
    )  # fmt: skip
    simulate.add_argument(
        "--seed", type=int, default=7,
        help="makes the catalog and the API keys (default %(default)s: the keys in agent.toml)",
    )  # fmt: skip
    simulate.set_defaults(handler=cmd_simulate)

    demo = sub.add_parser("demo", help="run a self-contained demo on loopback and exit")
    demo.add_argument(
        "--products", type=int, default=200,
        help="products in the demo store's catalog (default %(default)s)",
    )  # fmt: skip
    demo.add_argument(
        "--log-file", type=Path, default=None, metavar="FILE",
        help="where the agent's log lines go (default: a new bridge-agent-demo-*.log in the"
        " temporary folder, kept after the demo)",
    )  # fmt: skip
    demo.set_defaults(handler=cmd_demo)
    return parser


def _log_json(choice: str) -> bool | None:
    return None if choice == "auto" else choice == "json"


def _config(args: argparse.Namespace, *, secrets: bool = True) -> Config:
    """The configuration; without `secrets` for commands that touch only the state directory."""
    path = args.config or default_config_path()
    config = load_config(path, secrets=secrets)
    logs.register_secrets(secret_values(config))
    return config


# -- run -------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    config = _config(args)
    logs.set_level(config.agent.log_level if args.log_level == "info" else args.log_level)
    return run_agent(config)


def run_agent(config: Config) -> int:
    agent = Agent(config)

    async def runner() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _on_signal, agent, sig)
        loop.add_signal_handler(signal.SIGHUP, _on_reload, agent)
        loop.add_signal_handler(signal.SIGUSR1, _on_dump)
        await agent.run()

    try:
        asyncio.run(runner())
    except (BaseExceptionGroup, BridgeError) as exc:
        leaves = list(_leaves(exc))
        for leaf in leaves:
            if isinstance(leaf, ConfigError):
                raise leaf from None  # main() prints it and exits 78
        for leaf in leaves:
            log.error("agent_failed", error=f"{type(leaf).__name__}: {leaf}")
        return EXIT_FAILURE
    return EXIT_OK


def _leaves(exc: BaseException) -> list[BaseException]:
    """The real errors inside (nested) exception groups, and the cause of a root task's exit."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    if isinstance(exc, RootTaskExited) and isinstance(exc.__cause__, BridgeError):
        return [exc.__cause__]
    return [exc]


def _on_reload(agent: Agent) -> None:
    log.info("signal_received", signal="SIGHUP", action="reload")
    agent.reload()


def _on_dump() -> None:
    """SIGUSR1: log what every task waits on (taskdump.py); the agent goes on."""
    log.warning("tasks_dumped", signal="SIGUSR1", tasks=describe_tasks())


def _on_signal(agent: Agent, sig: signal.Signals) -> None:
    log.info("signal_received", signal=sig.name, drain="abandon" if agent.draining else "start")
    agent.stop()


# -- validate ---------------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    config = _config(args)
    # The file is well formed; now what `run` would refuse too: a platform with no adapter
    # installed, or settings the adapter rejects. ExecStartPre must catch those.
    problems = []
    offers: dict[str, frozenset[Capability]] = {}
    options: dict[str, frozenset[str]] = {}  # the option names each store's adapter declares
    http = httpx.AsyncClient()  # adapters take a client; building one does no I/O
    try:
        for store in config.stores:
            try:
                adapter = platforms.load(store.platform)
                build_platform(adapter, store, http)  # an adapter's failure is a ConfigError
                offers[store.id] = capabilities_of(adapter)
                spec = settings_spec_of(adapter)
                options[store.id] = frozenset(spec.options) if spec is not None else frozenset()
            except ConfigError as exc:
                # Name the store once: an adapter may already have (WooCommerce does).
                label = f"[[stores]] {store.id!r}"
                problems += [p if p.startswith(label) else f"{label}: {p}" for p in exc.problems]
    finally:
        asyncio.run(http.aclose())
    if problems:
        raise ConfigError(problems, source=str(config.source))
    stores = ", ".join(f"{s.id} ({s.platform})" for s in config.stores) or "no stores"
    print(f"{config.source}: OK: agent {config.agent.id!r}, hub {config.hub.url}, {stores}")
    for store in config.stores:
        print(f"  {store.id}: {', '.join(sorted(offers[store.id])) or 'no optional capability'}")
        for warning in _capability_warnings(store, offers[store.id], options[store.id]):
            print(f"  {store.id}: note: {warning}")
    return EXIT_OK


def _capability_warnings(
    store: StoreSettings, offers: frozenset[Capability], options: frozenset[str] = frozenset()
) -> list[str]:
    """Settings the store's adapter has no use for, or misses: valid, but worth a word."""
    notes = []
    if (
        store.downstream
        and Capability.WRITE_JSONLD in offers
        and "currency" in options  # the platform's products carry no currency of their own
        and not store.options.get("currency")
    ):
        notes.append(
            "currency is not set: the JSON-LD the agent writes will carry no offers (no price"
            ' for Google); set currency = "EUR" (the store\'s ISO 4217 code)'
        )
    if store.spool_dir is not None and Capability.SPOOL_HOOKS not in offers:
        notes.append("spool_dir is set, but no store-side plugin of this platform writes a spool")
    if store.options.get("webhook_url") and Capability.WEBHOOK_REGISTRATION not in offers:
        notes.append(
            "webhook_url is set, but this platform's webhooks are not registered by the agent"
        )
    if "webhook_secret" in store.secrets and Capability.WEBHOOKS not in offers:
        notes.append("webhook_secret is set, but this platform sends no webhooks the agent reads")
    return notes


# -- status -----------------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    config = _config(args, secrets=False)
    doc = _live_status(config.health.listen)
    if doc is None:
        doc = asyncio.run(_offline_status(config))
    if config.exports:
        try:
            doc["exports"] = asyncio.run(_exports_offline(config))
        except StateStoreError as exc:  # the agent's answer still stands on its own
            log.warning("exports_status_unavailable", error=str(exc))
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(render_status(doc))
    return EXIT_OK


def _live_status(listen: Listen) -> dict[str, Any] | None:
    host = "127.0.0.1" if listen.host in ("0.0.0.0", "", "::") else listen.host  # noqa: S104
    url = f"http://{host}:{listen.port}/status"
    if ":" in host:
        url = f"http://[{host}]:{listen.port}/status"
    # Whatever answers on that port (another program, a wrong listen address) is read within a
    # bound, and anything that is not the agent's status document means "ask the state instead".
    try:
        with httpx.stream("GET", url, timeout=3.0) as response:
            if response.status_code != 200:
                return None
            body = b"".join(_capped(response.iter_bytes(), STATUS_REPLY_BYTES))
    except (httpx.HTTPError, InputError):
        return None
    try:
        doc = loads_json(body, max_bytes=STATUS_REPLY_BYTES, max_depth=64, what="status")
    except InputError:
        return None
    if not isinstance(doc, dict) or not {"agent", "outbox", "hub", "stores"} <= doc.keys():
        return None
    return doc


STATUS_REPLY_BYTES = 16 * 1024 * 1024


def _capped(chunks: Iterator[bytes], limit: int) -> Iterator[bytes]:
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise InputError(f"larger than {limit} bytes")
        yield chunk


async def _offline_status(config: Config) -> dict[str, Any]:
    """What the state directory says while the agent is not running (read-only)."""
    async with StateStore.open(config.agent.state_dir, read_only=True) as state:
        stores = [
            StoreView(
                s.id,
                s.platform,
                s.active,
                Health(f"store:{s.id}"),
                spool_dir=s.spool_dir,
                capabilities=_declared(s.platform),
            )
            for s in config.stores
        ]
        return await status_document(state, config.agent.id, stores, live=None)


async def _exports_offline(config: Config) -> dict[str, Any]:
    """The exports' part of `status`, from the state directory (the agent's `/status` does not
    carry it: each run's outcome is in the state, for a running and a stopped agent alike)."""
    async with StateStore.open(config.agent.state_dir, read_only=True) as state:
        return await exports_status(config, state)


def _declared(platform: str) -> tuple[str, ...]:
    """An installed adapter's capabilities, read from its class (no store is contacted)."""
    try:
        return tuple(sorted(capabilities_of(platforms.load(platform))))
    except ConfigError:
        return ()


def render_status(doc: dict[str, Any]) -> str:
    """The human table of `bridge-agent status`."""
    outbox = doc["outbox"]
    hub = doc["hub"]
    age = outbox.get("oldest_pending_age_seconds")
    hub_line = hub["state"] + (f": {hub['detail']}" if hub.get("detail") else "")
    if hub.get("retry_at"):
        hub_line += f" (next try {_when(hub['retry_at'])})"
    lines = [
        f"agent          {doc['agent']}  ({doc['state']}, bridge-agent {doc['version']})",
        f"outbox         {outbox['pending']} pending, {outbox['rejected']} rejected"
        + (f", oldest {_ago(age)}" if age is not None else ""),
        f"hub            {hub_line}",
        "last shipment  "
        + (_when(doc["last_shipment_at"]) if doc.get("last_shipment_at") else "never"),
        "",
        f"{'STORE':<16} {'PLATFORM':<12} {'STATE':<14} {'PRODUCTS':>8}  DETAIL",
    ]
    for store_id, s in sorted(doc["stores"].items()):
        lines.append(
            f"{store_id:<16} {s['platform']:<12} {s['state']:<14} {s['products']:>8}  "
            + (s.get("detail") or "")
        )
        if "spool" in s:
            lines.append(f"{'':<16} spool: {_spool_line(s['spool'])}")
        down = s.get("downstream")
        if down and any(down.get(k) for k in ("cursor", "open", "applied", "error")):
            lines.append(
                f"{'':<16} downstream: cursor {down['cursor'] or '-'}, {down['open']} open,"
                f" {down['pending_review']} pending review, {down['applied']} applied,"
                f" {down['conflict']} conflict, {down['failed']} failed,"
                + (f" {down['rolled_back']} rolled back," if down.get("rolled_back") else "")
                + f" {down['unreported']} unreported"
                + (f"; error: {down['error']}" if down.get("error") else "")
            )
        if s.get("filters"):
            lines.append(f"{'':<16} filters: {s['filters']}")
        if s.get("verification") and s.get("products"):
            lines.append(f"{'':<16} verification: {_verification_line(s['verification'])}")
        if s.get("capabilities"):
            lines.append(f"{'':<16} offers: {', '.join(s['capabilities'])}")
    if doc.get("exports"):
        lines += ["", f"{'EXPORT':<16} {'STORE':<12} {'FORMAT':<8} LAST RUN; NEXT"]
        lines += [_export_line(n, e) for n, e in sorted(doc["exports"].items())]
    if doc.get("runs"):
        lines += ["", f"{'RUN':>5} {'KIND':<8} {'STORE':<12} {'STATE':<9} PROGRESS"]
        for r in doc["runs"]:
            progress = (
                f"behind run {r['queued_behind']}" if r.get("queued_behind") else _progress(r)
            )
            lines.append(f"{r['id']:>5} {r['kind']:<8} {r['store']:<12} {r['state']:<9} {progress}")
            outcome = _run_outcome(r)
            if outcome:
                lines.append(f"{'':>5} {outcome}")
    if doc.get("events"):
        lines += ["", "recent events:"]
        lines += [f"  {render_event(e)}" for e in doc["events"]]
    return "\n".join(lines)


def _verification_line(v: dict[str, Any]) -> str:
    """How verified a store's products are: unverified count, oldest check, last sweep."""
    text = f"{v['unverified']} unverified"
    if v.get("oldest_verified_at"):
        text += f", oldest check {_when(v['oldest_verified_at'])}"
    last = v.get("last_run")
    if last:
        when = f" {_when(last['finished_at'])}" if last.get("finished_at") else ""
        text += f"; last sweep: run {last['id']} {last['state']}{when}"
    else:
        text += "; no verification run yet"
    return text


def render_event(event: dict[str, Any]) -> str:
    """One event as a line: local time, level, store/product, [HTTP status], action, message."""
    where = "/".join(p for p in (event.get("store"), event.get("product")) if p)
    code = f"[{event['status']}]" if event.get("status") else ""
    action = f"{event['action']}:" if event.get("action") else ""
    head = (_when(event["at"] / 1e3), f"{event['level']:<7}", where, code, action)
    return " ".join(p for p in (*head, event["message"]) if p)


def _run_outcome(run: dict[str, Any]) -> str:
    """The line under a run that is not simply running: its report, its error, or its pause."""
    state = run["state"]
    if state == "done":
        return "done: " + _report_summary(run.get("report") or {})
    if state in ("failed", "cancelled"):
        return f"{state}: {run.get('error') or 'no reason recorded'}"
    if state == "paused":
        return f"paused: resumes from its checkpoint (bridge-agent resume --store {run['store']})"
    return ""


# How a report's counts read. Any other key reads as itself (`set_aside` -> "3 set aside"), so a
# new kind of run (refresh: `changed`, `unchanged`, `vanished`; verify: `markers`) shows its counts
# without a change here. `failures` and `examples` list what a count already counts.
_REPORT_LABELS = {
    "imported": "product(s)",
    "pages": "page(s)",
    "no_image": "without image",
    "no_price": "without price",
    "duplicate_sku": "duplicate SKU(s)",
    "hub_seen": "product(s) at the hub",
    "images": "image URL(s)",
    "oversized": "over 2 MB",
}
_REPORT_DETAILS = ("failures", "examples")


def _report_summary(report: dict[str, Any]) -> str:
    """A run's report on one line: its first count always, then the counts that are not zero
    (`1200 product(s), 12 page(s), 3 failed, 5 without image`)."""
    counts = _report_counts(report, "")
    shown = counts[:1] + [(n, label) for n, label in counts[1:] if n]
    return ", ".join(f"{n} {label}" for n, label in shown) or "no counts reported"


def _report_counts(report: dict[str, Any], prefix: str) -> list[tuple[int, str]]:
    counts: list[tuple[int, str]] = []
    for key, value in report.items():
        label = _REPORT_LABELS.get(key, key.replace("_", " "))
        if key in _REPORT_DETAILS or isinstance(value, bool):
            continue
        if isinstance(value, int):
            counts.append((value, f"{prefix}{label}"))
        elif isinstance(value, list):
            counts.append((len(value), f"{prefix}{label}"))
        elif isinstance(value, dict):
            # A group of counts: `warnings` only groups them, `images` says what they count.
            counts += _report_counts(value, "" if key == "warnings" else f"{prefix}{label} ")
    return counts


def _spool_line(spool: dict[str, Any]) -> str:
    if spool.get("error"):
        return str(spool["error"])
    waiting = f"{spool['waiting']}{'+' if spool.get('waiting_capped') else ''} file(s) waiting"
    age = spool.get("oldest_waiting_age_seconds")
    if age is not None:
        waiting += f", oldest {_ago(age)}"
    rejected = spool.get("rejected") or 0
    return waiting + (f"; {rejected} set aside in rejected/" if rejected else "")


def _progress(run: dict[str, Any], width: int = 24) -> str:
    done, total = run["done"], run.get("total")
    if not total:
        return f"{done} done"
    filled = min(width, round(width * done / total))
    bar = "#" * filled + "." * (width - filled)
    text = f"[{bar}] {done}/{total} {100 * done / total:.0f}%"
    if run.get("rate_per_second"):
        text += f" {run['rate_per_second']:.0f}/s"
    if run.get("eta_seconds") is not None:
        text += f" ETA {_duration(run['eta_seconds'])}"
    return text


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _ago(seconds: float) -> str:
    return _duration(seconds) + " ago"


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


# -- log --------------------------------------------------------------------------------------

EVENT_LEVELS = ("debug", "info", "warning", "error", "critical")


def cmd_log(args: argparse.Namespace) -> int:
    config = _config(args, secrets=False)
    unknown = set(args.store or ()) - {s.id for s in config.stores}
    if unknown:
        print(f"bridge-agent log: no store {', '.join(sorted(unknown))} (configured: "
              f"{', '.join(s.id for s in config.stores) or 'none'})", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    # --errors narrows whatever --level says: `--errors --level critical` is critical only.
    least = EVENT_LEVELS.index(args.level)
    if args.errors:
        least = max(least, EVENT_LEVELS.index("error"))
    levels = EVENT_LEVELS[least:]

    async def read() -> list[dict[str, Any]]:
        # Read-only: the running agent keeps writing (WAL), nothing here can disturb it.
        async with StateStore.open(config.agent.state_dir, read_only=True) as state:
            events = await state.events(
                limit=args.limit,
                levels=levels,
                stores=args.store,
                products=args.product,
                since=args.since,
            )
        return [_event_json(e) for e in reversed(events)]  # oldest first, as logs read

    events = asyncio.run(read())
    if args.json:
        print(json.dumps(events, indent=2))
    elif not events:
        print(_no_events(args, levels) + f" in {config.agent.state_dir}")
    else:
        print("\n".join(render_event(e) for e in events))
    return EXIT_OK


def _event_json(event: Any) -> dict[str, Any]:
    """Every field of the event, with its time also as ISO 8601 UTC (`at` stays epoch ms)."""
    fields = asdict(event)
    seconds, ms = divmod(fields["at"], 1000)
    utc = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"
    return {"at": fields.pop("at"), "time": utc, **fields}


def _no_events(args: argparse.Namespace, levels: Sequence[str]) -> str:
    """What was asked, said back: `no error events for store main since 2026-12-05 14:00:00`."""
    if args.errors:
        text = f"no {levels[0]} events"
    else:
        text = "no events" + ("" if levels[0] == "debug" else f" at level {levels[0]} or above")
    stores = ", ".join(args.store or ())
    plural = "s" if len(args.store or ()) > 1 else ""
    if args.product:
        text += f" for product{'s' if len(args.product) > 1 else ''} {', '.join(args.product)}"
        text += f" of store{plural} {stores}" if stores else ""
    elif stores:
        text += f" for store{plural} {stores}"
    if args.since is not None:
        text += f" since {_when(args.since / 1e3)}"
    return text


# A duration back from now (`--since 2h`): one number and one unit, as operators type them.
_AGO_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def _since_or_ago(text: str) -> int:
    """`--since` of `log`: a duration back from now (`30m`, `2h`, `1d`) or an ISO 8601 time
    (`_since`), as epoch ms. A duration is tried first: `2h` is no ISO time."""
    number, unit = text.strip()[:-1], text.strip()[-1:].lower()
    if unit in _AGO_UNITS and number.isascii() and number.isdigit() and len(number) <= 9:
        return int((time.time() - int(number) * _AGO_UNITS[unit]) * 1000)
    try:
        datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 30m, 2h or 1d, or an ISO 8601 time such as"
            f" 2026-12-05T14:00 or 2026-12-05T13:00:00Z, got {text!r}"
        ) from None
    return _since(text)


# -- outbox -----------------------------------------------------------------------------------


def cmd_outbox_list(args: argparse.Namespace) -> int:
    config = _config(args, secrets=False)

    async def listing() -> list[dict[str, Any]]:
        async with StateStore.open(config.agent.state_dir, read_only=True) as state:
            rows = await state.outbox_rows(
                state=None if args.state == "all" else args.state, limit=args.limit
            )
        return [
            {"store": r.store, "id": r.id, "state": r.state, "seq": r.seq, "source": r.source,
             "attempts": r.attempts, "first_at": r.first_at, "reason": r.last_error}
            for r in rows
        ]  # fmt: skip

    rows = asyncio.run(listing())
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print(f"no {args.state if args.state != 'all' else ''} outbox rows".replace("  ", " "))
        return EXIT_OK
    print(f"{'STORE':<12} {'PRODUCT':<16} {'STATE':<9} {'TRIES':>5}  REASON")
    for r in rows:
        print(
            f"{r['store']:<12} {r['id']:<16} {r['state']:<9} {r['attempts']:>5}  "
            + (r["reason"] or "")
        )
    return EXIT_OK


def cmd_outbox_retry(args: argparse.Namespace) -> int:
    config = _config(args, secrets=False)  # the running agent's shipper sends the rows
    keys: list[tuple[str, str]] | None = None
    if args.products:
        keys = []
        for text in args.products:
            store, sep, product = text.partition(":")
            if not sep or not store or not product:
                print(f"bridge-agent: expected STORE:ID, got {text!r}", file=sys.stderr)
                return EXIT_USAGE
            keys.append((store, product))

    async def retry() -> int:
        async with StateStore.open(config.agent.state_dir) as state:
            return await state.retry_rejected(keys)

    count = asyncio.run(retry())
    # A running agent's shipper looks at the outbox every few seconds even when idle.
    print(f"{count} rejected row(s) queued again as full products")
    return EXIT_OK


# -- approvals and rollback (downstream/approvals.py, downstream/rollback.py) -----------------


def _add_downstream_commands(sub: _Commands, after: argparse.ArgumentParser) -> None:
    approvals_cmd = sub.add_parser(
        "approvals", help="review optimisations held in safe mode (apply_mode = \"review\")",
        description="Optimisations held as pending_review in stores with apply_mode ="
        " \"review\": list them, show what each would change (the store's value now, the"
        " hub's `from`, the proposed `to`), approve or reject them. The running agent applies"
        " approved ones and reports rejected ones to the hub.",
    )  # fmt: skip
    actions = _Commands(
        approvals_cmd.add_subparsers(dest="approvals_command", metavar="ACTION", required=True),
        after,
    )
    listing = actions.add_parser("list", help="the optimisations waiting for review")
    listing.add_argument("--store", help="only this store's")
    listing.add_argument("--limit", type=_positive, default=100, help="default %(default)s")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_approvals_list)
    show = actions.add_parser(
        "show", help="one optimisation field by field, with the store's current value"
    )
    show.add_argument("id", metavar="ID", help="the optimisation id (approvals list)")
    show.add_argument("--store", help="the store (when an id is in several)")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=cmd_approvals_show)
    for name, handler, verb in (
        ("approve", cmd_approvals_approve, "apply"),
        ("reject", cmd_approvals_reject, "refuse"),
    ):
        decide = actions.add_parser(name, help=f"{verb} held optimisations")
        decide.add_argument("ids", nargs="*", metavar="ID", help="optimisation ids")
        decide.add_argument("--product", help="every held optimisation of this product")
        decide.add_argument("--all", action="store_true", help="every held optimisation")
        decide.add_argument("--store", help="only this store's")
        decide.add_argument(
            "--dry-run", action="store_true", help="say what would be decided; change nothing"
        )
        decide.set_defaults(handler=handler)

    back = sub.add_parser(
        "rollback", help="restore the values the agent replaced in a store",
        description="Restore the values the agent's optimisations replaced, newest first, so"
        " several optimisations of one field go back to the value before the oldest. A value"
        " the merchant changed since is left alone and reported. The running agent reports"
        " the rollback to the hub (status rolled_back).",
    )  # fmt: skip
    which = back.add_mutually_exclusive_group(required=True)
    which.add_argument("--product", help="every value replaced in this product")
    which.add_argument("--optimization", help="the values this optimisation replaced")
    which.add_argument(
        "--since", type=_since, metavar="TIME",
        help="every value replaced at or after TIME (ISO 8601, e.g. 2026-12-05T14:00 in local"
        " time, or 2026-12-05T13:00:00Z)",
    )  # fmt: skip
    back.add_argument("--store", help="only this store (default: every store)")
    back.add_argument(
        "--dry-run", action="store_true",
        help="read the store and say what would be restored and what left alone; write nothing",
    )  # fmt: skip
    back.add_argument("--json", action="store_true")
    back.set_defaults(handler=cmd_rollback)


def _since(text: str) -> int:
    """An ISO 8601 time as epoch ms; without a zone it is local time, as `log` prints times."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 time such as 2026-12-05T14:00 or 2026-12-05T13:00:00Z,"
            f" got {text!r}"
        ) from None
    try:
        if when.tzinfo is None:
            when = when.astimezone()  # local time
        return int(when.timestamp() * 1000)
    except (OverflowError, OSError, ValueError):  # a time the local zone cannot convert
        raise argparse.ArgumentTypeError(f"{text!r} is out of range") from None


def _unknown_store(config: Config, store: str | None, command: str) -> int:
    """EXIT_USAGE, said on stderr, when `--store` names a store not configured; else 0."""
    if store is None or any(s.id == store for s in config.stores):
        return 0
    print(f"bridge-agent {command}: no store {store!r} (configured: "
          f"{', '.join(s.id for s in config.stores) or 'none'})", file=sys.stderr)  # fmt: skip
    return EXIT_USAGE


@asynccontextmanager
async def _store_adapter(store: StoreSettings) -> AsyncIterator[Platform]:
    """The store's adapter as `validate` and the agent build it (`platforms.load` and
    `build_platform`, with the store's request budget), on an HTTP client of its own, closed
    after. A missing adapter or settings it refuses are a ConfigError (exit 78)."""
    factory = platforms.load(store.platform)
    verify = bool(store.options.get("verify_tls", True))
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(STORE_CLIENT_TIMEOUT),
        headers={"User-Agent": f"bridge-agent/{__version__}"},
        verify=verify,
    ) as http:
        yield build_platform(factory, store, http, budget=RequestBudget.for_store(store))


async def _read_live(config: Config, store_id: str, diffs: list[approvals.FieldDiff]) -> str | None:
    """Fill in the store's current values of `diffs`; why not, when the store cannot be read."""
    settings = next((s for s in config.stores if s.id == store_id), None)
    if settings is None:
        return f"store {store_id!r} is not in the configuration"
    async with _store_adapter(settings) as platform:
        writer = writer_of(platform)
        if writer is None:
            return f"the {settings.platform} adapter of store {store_id!r} reads no optimised field"
        return await approvals.read_current(writer, diffs)


def cmd_approvals_list(args: argparse.Namespace) -> int:
    config = _config(args, secrets=False)
    if code := _unknown_store(config, args.store, "approvals list"):
        return code

    async def read() -> list[Entry]:
        async with StateStore.open(config.agent.state_dir, read_only=True) as state:
            return (await approvals.select(state, store=args.store, limit=args.limit)).entries

    entries = asyncio.run(read())
    now = time.time()
    if args.json:
        print(json.dumps([_held_json(e, now) for e in entries], indent=2))
        return EXIT_OK
    if not entries:
        where = f" in store {args.store!r}" if args.store else ""
        reviewed = [s.id for s in config.stores if s.apply_mode == "review"]
        hint = "" if reviewed else ' (no store has apply_mode = "review")'
        print(f"no optimization is waiting for review{where}{hint}")
        return EXIT_OK
    print(f"{'OPTIMIZATION':<32}  {'STORE':<12} {'PRODUCT':<12} {'AGE':>8}  FIELDS")
    for e in entries:
        fields = ", ".join(d.label for d in approvals.field_diffs(e))
        age = _duration(max(0.0, now - e.received_at / 1e3))
        print(f"{e.id:<32}  {e.store:<12} {e.product:<12} {age:>8}  {fields}")
    return EXIT_OK


def _held_json(entry: Entry, now: float) -> dict[str, Any]:
    return {
        "id": entry.id, "store": entry.store, "product": entry.product, "state": entry.state,
        "fields": [d.label for d in approvals.field_diffs(entry)],
        "received_at": entry.received_at,
        "age_seconds": round(max(0.0, now - entry.received_at / 1e3), 3),
    }  # fmt: skip


def cmd_approvals_show(args: argparse.Namespace) -> int:
    config = _config(args)  # the store's keys: its current values are read live
    if code := _unknown_store(config, args.store, "approvals show"):
        return code

    async def read() -> list[tuple[Entry, list[approvals.FieldDiff], str | None]]:
        async with StateStore.open(config.agent.state_dir, read_only=True) as state:
            found = await state.journal_entries(args.store, ids=[args.id])
        out = []
        for entry in found:
            diffs = approvals.field_diffs(entry)
            out.append((entry, diffs, await _read_live(config, entry.store, diffs)))
        return out

    shown = asyncio.run(read())
    if not shown:
        where = f" of store {args.store!r}" if args.store else ""
        print(f"bridge-agent approvals show: no optimization {args.id} in the journal{where}"
              " (bridge-agent approvals list shows the held ones)", file=sys.stderr)  # fmt: skip
        return EXIT_FAILURE
    if args.json:
        print(json.dumps([_shown_json(e, d, u) for e, d, u in shown], indent=2, default=str))
        return EXIT_OK
    for entry, diffs, unread in shown:
        print("\n".join(approvals.render_diff(entry, diffs, unread)))
        if entry.state == approvals.HELD:
            print(f"  decide: bridge-agent approvals approve {entry.id}  (or reject)")
        elif entry.detail:
            print(f"  outcome: {entry.detail}")
    return EXIT_OK


def _shown_json(
    entry: Entry, diffs: list[approvals.FieldDiff], unread: str | None
) -> dict[str, Any]:
    return {
        "id": entry.id, "store": entry.store, "product": entry.product, "state": entry.state,
        "detail": entry.detail, "store_unread": unread, "fields": [d.to_json() for d in diffs],
    }  # fmt: skip


def cmd_approvals_approve(args: argparse.Namespace) -> int:
    return _decide(args, approve=True)


def cmd_approvals_reject(args: argparse.Namespace) -> int:
    return _decide(args, approve=False)


def _decide(args: argparse.Namespace, *, approve: bool) -> int:
    verb = "approve" if approve else "reject"
    chosen = [bool(args.ids), args.product is not None, args.all]
    if sum(chosen) != 1:
        print(f"bridge-agent approvals {verb}: give optimisation ids, --product ID or --all"
              " (one of them)", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    # An approval's dry run reads the store (its keys); a decision touches the state only.
    config = _config(args, secrets=args.dry_run and approve)
    if code := _unknown_store(config, args.store, f"approvals {verb}"):
        return code
    if args.dry_run:
        return _decide_dry(config, args, approve=approve)

    async def decide() -> tuple[list[str], dict[str, list[str]]]:
        done: dict[str, list[str]] = {}
        async with StateStore.open(config.agent.state_dir) as state:
            while True:
                found = await approvals.select(
                    state, ids=args.ids, product=args.product, store=args.store
                )
                if found.problems:
                    return found.problems, done
                by_store: dict[str, list[str]] = {}
                for e in found.entries:
                    by_store.setdefault(e.store, []).append(e.id)
                progress = 0
                for store, ids in by_store.items():
                    act = state.approve if approve else state.reject
                    decided = await act(store, ids)
                    done.setdefault(store, []).extend(decided)
                    progress += len(decided)
                if args.ids or len(found.entries) < approvals.SELECT_LIMIT or not progress:
                    return [], done
                # --all or --product with more held than one slice: the next slice

    problems, done = asyncio.run(decide())
    if problems:
        for problem in problems:
            print(f"bridge-agent approvals {verb}: {problem}", file=sys.stderr)
        print(f"bridge-agent approvals {verb}: nothing was decided", file=sys.stderr)
        return EXIT_FAILURE
    if not any(done.values()):
        print(f"bridge-agent approvals {verb}: {_nothing_held(args)}", file=sys.stderr)
        return EXIT_FAILURE
    for store, ids in sorted(done.items()):
        word = "approved" if approve else "rejected"
        print(f"{word} {len(ids)} optimization(s) of store {store!r}: {', '.join(ids)}")
    if approve:
        print(f"the running agent applies them within {approvals.APPLY_WITHIN:.0f} s (it reads"
              " the journal on that beat; a stopped agent does it when it starts), then reports"
              " each to the hub; `bridge-agent log` shows every field's outcome")  # fmt: skip
    else:
        print("nothing is written to the store; the running agent reports them to the hub as"
              f" rejected_by_reviewer within {approvals.REPORT_WITHIN:.0f} s (a stopped agent"
              " when it starts)")  # fmt: skip
    return EXIT_OK


def _nothing_held(args: argparse.Namespace) -> str:
    what = f" for product {args.product}" if args.product is not None else ""
    where = f" in store {args.store!r}" if args.store else ""
    return f"no optimization is waiting for review{what}{where}"


def _decide_dry(config: Config, args: argparse.Namespace, *, approve: bool) -> int:
    verb = "approve" if approve else "reject"

    async def look() -> tuple[approvals.Selection, list[list[str]], int]:
        async with StateStore.open(config.agent.state_dir, read_only=True) as state:
            found = await approvals.select(
                state, ids=args.ids, product=args.product, store=args.store
            )
        shown, conflicts = [], 0
        for entry in found.entries if not found.problems else ():
            if not approve:
                fields = ", ".join(d.label for d in approvals.field_diffs(entry))
                shown.append([f"{entry.id}  {entry.store}/{entry.product}  {fields}"])
                continue
            diffs = approvals.field_diffs(entry)
            unread = await _read_live(config, entry.store, diffs)
            conflicts += sum(1 for d in diffs if d.conflict)
            shown.append(approvals.render_diff(entry, diffs, unread))
        return found, shown, conflicts

    found, shown, conflicts = asyncio.run(look())
    if found.problems:
        for problem in found.problems:
            print(f"bridge-agent approvals {verb}: {problem}", file=sys.stderr)
        return EXIT_FAILURE
    if not found.entries:
        print(f"bridge-agent approvals {verb}: {_nothing_held(args)}", file=sys.stderr)
        return EXIT_FAILURE
    for lines in shown:
        print("\n".join(lines))
    more = " (or more: the first slice only)" if len(shown) >= approvals.SELECT_LIMIT else ""
    if approve:
        print(f"dry run: would approve {len(shown)} optimization(s){more}; {conflicts} field(s)"
              " will conflict (the merchant's value is kept); nothing was changed")  # fmt: skip
    else:
        print(f"dry run: would reject {len(shown)} optimization(s){more}; nothing was changed")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    config = _config(args)  # the store's keys: the values are written back through its adapter
    if code := _unknown_store(config, args.store, "rollback"):
        return code
    selector = rollback.Selector(args.product, args.optimization, args.since)
    configured = {s.id: s for s in config.stores}

    async def run() -> tuple[list[rollback.StoreRollback], list[str], bool]:
        done: list[rollback.StoreRollback] = []
        skipped: list[str] = []
        already = False
        async with StateStore.open(config.agent.state_dir, read_only=args.dry_run) as state:
            stores = [args.store] if args.store else await state.replaced_stores()
            for store_id in stores:
                fields = await rollback.plan(state, store_id, selector)
                if not fields:
                    already = already or bool(
                        await state.replaced_rows(
                            store_id, product=selector.product,
                            optimization=selector.optimization, since=selector.since,
                            rolled_back=True,
                        )
                    )  # fmt: skip
                    continue
                settings = configured.get(store_id)
                if settings is None:
                    skipped.append(f"store {store_id!r} is not in the configuration: skipped")
                    continue
                async with _store_adapter(settings) as platform:
                    writer = writer_of(platform)
                    if writer is None:
                        skipped.append(
                            f"the {settings.platform} adapter of store {store_id!r} writes no"
                            " optimised field: skipped"
                        )
                        continue
                    done.append(
                        await rollback.roll_back(
                            state, store_id, platform, writer, fields,
                            dry_run=args.dry_run, concurrency=settings.concurrency,
                        )
                    )  # fmt: skip
        return done, skipped, already

    done, skipped, already = asyncio.run(run())
    for note in skipped:
        print(f"bridge-agent rollback: {note}", file=sys.stderr)
    if not done:
        if not skipped:
            print(f"bridge-agent rollback: {_nothing_to_roll_back(args, selector, already)}",
                  file=sys.stderr)  # fmt: skip
        return EXIT_FAILURE
    if args.json:
        rows = [row for r in done for row in rollback.as_json(r)]
        print(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
    else:
        for result in done:
            print("\n".join(rollback.render(result)))
    restored = sum(r.count(rollback.RESTORED) for r in done)
    kept = sum(r.count(rollback.KEPT) for r in done)
    failed = sum(r.count(rollback.FAILED) for r in done)
    unread = any(r.unread is not None for r in done)
    if args.dry_run:
        print(f"dry run: {restored} value(s) would be restored, {kept} would be left alone,"
              f" {failed} would fail; nothing was written", file=_summary(args))  # fmt: skip
    else:
        print(f"{restored} value(s) restored, {kept} left alone, {failed} failed",
              file=_summary(args))  # fmt: skip
        if restored:
            print("the running agent reports the rollback to the hub (status rolled_back) within"
                  f" {approvals.REPORT_WITHIN:.0f} s (a stopped agent when it starts); the"
                  " restored product reaches the hub through the store's webhook or the poll;"
                  " `bridge-agent log` shows every field", file=_summary(args))  # fmt: skip
    return EXIT_FAILURE if failed or unread or skipped else EXIT_OK


def _summary(args: argparse.Namespace) -> Any:
    """Where the closing lines go: stderr when stdout carries JSON."""
    return sys.stderr if args.json else sys.stdout


def _nothing_to_roll_back(
    args: argparse.Namespace, selector: rollback.Selector, already: bool
) -> str:
    where = f" in store {args.store!r}" if args.store else ""
    if already:
        return (
            f"nothing to roll back: every value the agent replaced that matches"
            f" {selector.describe()}{where} was rolled back already"
        )
    return f"nothing to roll back: no value the agent replaced matches {selector.describe()}{where}"


# -- sync -------------------------------------------------------------------------------------


def _chosen_stores(
    config: Config, wanted: Sequence[str] | None, command: str
) -> list[StoreSettings] | None:
    """The stores a run command names (default: every active one); None after saying why not."""
    unknown = set(wanted or ()) - {s.id for s in config.stores}
    chosen = [s for s in config.stores if (not wanted and s.active) or (wanted and s.id in wanted)]
    inactive = [s.id for s in chosen if not s.active]
    if unknown or not chosen:
        what = f"no store {', '.join(sorted(unknown))}" if unknown else "no active store"
        print(f"bridge-agent {command}: {what} (configured: "
              f"{', '.join(s.id for s in config.stores) or 'none'})", file=sys.stderr)  # fmt: skip
        return None
    if inactive:
        print(f"bridge-agent {command}: note: {', '.join(inactive)} inactive (active = false):"
              " the run starts when the store is active again", file=sys.stderr)  # fmt: skip
    return chosen


def cmd_sync(args: argparse.Namespace) -> int:
    config = _config(args, secrets=False)
    if args.repair and (args.force or args.dry_run):
        print("bridge-agent sync: --repair does not combine with --force or --dry-run",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    if args.restart and args.dry_run:
        # A dry run changes nothing: it has nothing to start over, and must not cancel the
        # runs that do (an import, a refresh) by the way.
        print("bridge-agent sync: --restart does not combine with --dry-run", file=sys.stderr)
        return EXIT_USAGE
    chosen = _chosen_stores(config, args.store, "sync")
    if chosen is None:
        return EXIT_USAGE
    kind = "repair" if args.repair else "refresh"
    params = {k: True for k in ("force", "dry_run") if getattr(args, k)}
    return _queue_runs(config, chosen, kind, params, restart=args.restart, wait=args.wait)


def cmd_verify(args: argparse.Namespace) -> int:
    config = _config(args, secrets=False)
    chosen = _chosen_stores(config, args.store, "verify")
    if chosen is None:
        return EXIT_USAGE
    products = list(dict.fromkeys(p.strip() for p in args.product or () if p.strip()))
    if args.product and not products:
        print("bridge-agent verify: --product needs an id", file=sys.stderr)
        return EXIT_USAGE
    params: dict[str, Any] = {"products": products} if products else {}
    return _queue_runs(config, chosen, "verify", params, restart=False, wait=args.wait)


def _queue_runs(
    config: Config,
    chosen: Sequence[StoreSettings],
    kind: str,
    params: dict[str, Any],
    *,
    restart: bool,
    wait: bool,
) -> int:
    what = kind + "".join(f" ({k.replace('_', '-')})" for k in sorted(params) if params[k] is True)

    async def start() -> list[tuple[str, int, list[Run], list[Run]]]:
        out = []
        async with StateStore.open(config.agent.state_dir) as state:
            for s in chosen:
                if restart:
                    cancelled, run_id = await state.restart_runs(s.id, kind, freeze(s), params)
                    ahead = [r for r in await state.open_runs(s.id) if r.id < run_id]
                else:
                    cancelled = []
                    ahead = await state.open_runs(s.id)
                    run_id = await state.start_run(kind, s.id, freeze(s), params=params)
                out.append((s.id, run_id, cancelled, ahead))
            paused.update(await state.paused_stores())
        return out

    paused: set[str] = set()

    inactive = {s.id for s in chosen if not s.active}
    started = asyncio.run(start())
    for store_id, run_id, cancelled, ahead in started:
        for old in cancelled:
            print(f"{old.kind} run {old.id} of store {store_id!r} cancelled at {old.done}"
                  f" product(s) (replaced by run {run_id})")  # fmt: skip
        where = (
            f"queued behind run(s) {', '.join(str(r.id) for r in ahead)}"
            if ahead
            else "the running agent starts it within seconds"
        )
        if store_id in paused:
            where = "the store is paused: it starts at bridge-agent resume"
        elif store_id in inactive:
            where = "the store is inactive (active = false): it starts when it is active again"
        print(f"{what} run {run_id} queued for store {store_id!r}: {where}"
              " (bridge-agent status shows its progress)")  # fmt: skip
    if not wait:
        return EXIT_OK
    idle = [s.id for s in chosen if not s.active or s.id in paused]
    if idle:
        print(f"bridge-agent: not waiting: {', '.join(idle)} inactive or paused; the run starts"
              " when the store is active and resumed", file=sys.stderr)  # fmt: skip
        return EXIT_FAILURE
    if _live_status(config.health.listen) is None:
        print(f"bridge-agent: the agent is not running (no status on {config.health.listen}):"
              " nothing to wait for; the run starts at its next start",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILURE
    return asyncio.run(_follow(config, [run_id for _s, run_id, _c, _a in started]))


async def _follow(config: Config, run_ids: Sequence[int], every: float = 1.0) -> int:
    """`--wait`: print progress until each run ends, then its report; 1 if one did not finish."""
    outcome = EXIT_OK
    async with StateStore.open(config.agent.state_dir, read_only=True) as state:
        for run_id in run_ids:
            last = ""
            while True:
                run = await state.run(run_id)
                if run is None:
                    print(f"run {run_id}: gone from the state store", file=sys.stderr)
                    return EXIT_FAILURE
                line = f"run {run.id} {run.kind} {run.state}: {_progress(_run_dict(run))}"
                if (line != last and sys.stdout.isatty()) or run.finished_at is not None:
                    print(line, flush=True)
                last = line
                if run.finished_at is not None:
                    break
                await asyncio.sleep(every)
            if run.state == "done":
                print(json.dumps(run.report, indent=2, sort_keys=True))
            else:
                print(f"run {run.id} {run.state}: {run.error or ''}", file=sys.stderr)
                outcome = EXIT_FAILURE
    return outcome


def _run_dict(run: Run) -> dict[str, Any]:
    return {"done": run.done, "total": run.total}


def cmd_pause(args: argparse.Namespace) -> int:
    return _toggle(args, pause=True)


def cmd_resume(args: argparse.Namespace) -> int:
    return _toggle(args, pause=False)


def _toggle(args: argparse.Namespace, *, pause: bool) -> int:
    config = _config(args, secrets=False)
    command = "pause" if pause else "resume"
    chosen = _chosen_stores(config, args.store, command)
    if chosen is None:
        return EXIT_USAGE

    async def toggle() -> list[tuple[str, bool, list[Run]]]:
        async with StateStore.open(config.agent.state_dir) as state:
            out = []
            for s in chosen:
                changed = await (state.pause_store(s.id) if pause else state.resume_store(s.id))
                out.append((s.id, changed, await state.open_runs(s.id)))
            return out

    for store_id, changed, open_runs in asyncio.run(toggle()):
        runs_note = (
            f"; open run(s) {', '.join(f'{r.id} ({r.kind}, {r.done} done)' for r in open_runs)}"
            if open_runs
            else ""
        )
        if pause:
            print(f"store {store_id!r} " + ("paused: the running agent stops its work after the"
                  " batch in flight" if changed else "was already paused") + runs_note)  # fmt: skip
        else:
            print(f"store {store_id!r} " + ("resumed: the running agent starts its work again"
                  ", runs from their checkpoints" if changed else "was not paused")
                  + runs_note)  # fmt: skip
    return EXIT_OK


# -- export (bridge_agent/export/) -------------------------------------------------------------


def _add_export_command(sub: _Commands) -> None:
    export = sub.add_parser(
        "export", help="write a store's catalog from the mirror as csv, json, xml, xlsx...",
        description="Write a store's products as the agent holds them (the mirror, with the"
        " SEO values it applied) to a file or stdout: csv, json, jsonl, a Google Merchant"
        " Center xml feed, xlsx, or the product CSV of Shopify's or WooCommerce's importer."
        " Reads the state directory; works with the agent running or stopped. A file is"
        " written whole or not at all. `export --now --name NAME` runs a configured"
        " [[exports]] entry now, as its schedule would. docs/export.md.",
    )  # fmt: skip
    export.add_argument("--store", help="the store id (required unless --now)")
    export.add_argument("--format", choices=FORMATS, help="(required unless --now)")
    export.add_argument(
        "--fields", action="append", metavar="LIST",
        help="groups basic, seo, structured, history (or all) and/or column names,"
        " comma-separated (default: basic,seo); csv, xlsx, json and jsonl",
    )  # fmt: skip
    export.add_argument(
        "--since", metavar="last|TIME",
        help="only products changed since the previous export of this --name (last), or at"
        " or after an ISO 8601 TIME; deleted products are listed as such",
    )  # fmt: skip
    export.add_argument(
        "--filter", action="append", metavar="KEY=VALUE,...",
        help="category=, status=, availability=, tag=, brand= (values: a|b; all keys must"
        " match); repeatable",
    )  # fmt: skip
    export.add_argument(
        "--name",
        help="the export's name: --since last resumes from the previous export of this name,"
        " and an export with a --name records where it ended (default name: STORE-FORMAT)",
    )  # fmt: skip
    export.add_argument(
        "--bom", action="store_true", help="start csv files with a UTF-8 BOM (for Excel)"
    )
    export.add_argument(
        "--raw", action="store_true",
        help="csv: write text as it is, without the ' before a cell starting with = + - @"
        " that keeps a spreadsheet from running it as a formula",
    )  # fmt: skip
    export.add_argument(
        "-o", "--output", metavar="PATH",
        help="the file to write (replaced atomically), or - for stdout (required unless --now)",
    )  # fmt: skip
    export.add_argument(
        "--now", action="store_true",
        help="run the [[exports]] entry --name now, to its destination, exactly as its schedule"
        " does (agent running or stopped); takes no other option",
    )  # fmt: skip
    export.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    if args.now:
        return _export_now(args)
    missing = [o for o, v in (("--store", args.store), ("--format", args.format),
                              ("-o/--output", args.output)) if v is None]  # fmt: skip
    if missing:
        print(f"bridge-agent export: {', '.join(missing)} required (or --now --name NAME)",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    config = _config(args, secrets=False)
    if _unknown_store(config, args.store, "export"):
        return EXIT_USAGE
    store = next(s for s in config.stores if s.id == args.store)
    try:
        request = ExportRequest(
            store=store.id,
            format=args.format,
            fields=tuple(f for spec in args.fields or () for f in spec.split(",")),
            filters=parse_filters(args.filter),
            since=parse_since(args.since),
            name=args.name,
            bom=args.bom,
            raw=args.raw,
            currency=store.options.get("currency") or None,
            store_url=store.url,
            store_title=store.id,
            seo_plugin=store.options.get("seo_plugin") or "yoast",
        )
        check_export(request)
    except InputError as exc:
        print(f"bridge-agent export: {exc}", file=sys.stderr)
        return EXIT_USAGE
    state_dir = config.agent.state_dir
    saves_mark = bool(args.name) or request.since == LAST
    unwritable = mark_unwritable(state_dir) if saves_mark else None
    if unwritable:
        print(f"bridge-agent export: --name/--since last save where this export ended in the"
              f" state store, but {unwritable}: run it as the agent's user, or without --name"
              " and --since last", file=sys.stderr)  # fmt: skip
        return EXIT_FAILURE
    if args.output == "-":
        piped = export_to_pipe(state_dir, request, sys.stdout.buffer)
        if piped is None:
            _silence_stdout()
            print("bridge-agent export: stdout was closed before the export ended; the output"
                  " is incomplete", file=sys.stderr)  # fmt: skip
            return EXIT_FAILURE
        report = piped
    else:
        target = Path(args.output)
        if target.is_dir():
            print(f"bridge-agent export: {target} is a directory; name the file",
                  file=sys.stderr)  # fmt: skip
            return EXIT_USAGE
        try:
            with atomic_file(target) as stream:
                report = export_catalog(state_dir, request, stream)
        except OSError as exc:
            print(f"bridge-agent export: cannot write {target}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    if report.mark is not None and saves_mark:
        try:
            asyncio.run(_save_export_mark(config, request.export_name, report.mark))
        except StateStoreError as exc:
            print(report.summary(), file=sys.stderr)
            print(f"bridge-agent export: file written; mark not saved ({exc}): the next"
                  " --since last repeats these changes", file=sys.stderr)  # fmt: skip
            return EXIT_FAILURE
    print(report.summary(), file=sys.stderr)
    shown = report.invalid[:EXPORT_INVALID_SHOWN]
    if shown:
        print(f"not exported ({report.invalid_total}):", file=sys.stderr)
        for invalid in shown:
            print(f"  {invalid.line()}", file=sys.stderr)
        if report.invalid_total > len(shown):
            print(f"  ... and {report.invalid_total - len(shown)} more", file=sys.stderr)
    noted = report.noted[:EXPORT_INVALID_SHOWN]
    if noted:
        print(f"written, to check ({sum(report.notes.values())}):", file=sys.stderr)
        for note in noted:
            print(f"  {note.line()}", file=sys.stderr)
    return EXIT_OK


EXPORT_INVALID_SHOWN = 50


async def _save_export_mark(config: Config, name: str, mark: str) -> None:
    """Where the next `--since last` of this name starts; written once the file is safe."""
    async with StateStore.open(config.agent.state_dir) as state:
        await save_mark(state, name, mark)


def _export_now(args: argparse.Namespace) -> int:
    """`export --now --name NAME`: one run of a configured export (export/schedule.py
    `run_export`, the schedule's own code), even for a paused store: the operator asked."""
    given = [o for o, v in (("--store", args.store), ("--format", args.format),
                            ("--fields", args.fields), ("--since", args.since),
                            ("--filter", args.filter), ("--bom", args.bom),
                            ("-o/--output", args.output)) if v]  # fmt: skip
    if not args.name or given:
        print("bridge-agent export: --now runs an [[exports]] entry as configured: give"
              " --name NAME and no other option" + (f" (not {', '.join(given)})" if given else ""),
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    config = _config(args)  # with secrets: the destination's credentials
    export = next((e for e in config.exports if e.name == args.name), None)
    if export is None:
        names = ", ".join(e.name for e in config.exports) or "none"
        print(f"bridge-agent export: no [[exports]] entry {args.name!r} (configured: {names})",
              file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    store = next((s for s in config.stores if s.id == export.store), None)
    outcome = asyncio.run(_run_export_now(config, export, store))
    print(outcome.message(), file=sys.stderr)
    return EXIT_OK if outcome.ok else EXIT_FAILURE


async def _run_export_now(
    config: Config, export: ExportSettings, store: StoreSettings | None
) -> RunOutcome:
    async with StateStore.open(config.agent.state_dir) as state:
        return await run_export(
            state, export, store, next_run=_next_export_run(export), skip_paused=False
        )


def _next_export_run(export: ExportSettings, now: datetime | None = None) -> datetime | None:
    """When the schedule runs `export` next (None: `schedule = "off"`)."""
    if export.schedule == "off":
        return None
    fire = cron_trigger(export.schedule, export.timezone).get_next_fire_time(
        None, now or datetime.now(UTC)
    )
    return fire if isinstance(fire, datetime) else None


async def exports_status(config: Config, state: StateStore) -> dict[str, Any]:
    """`status`'s `exports`: each configured export, where it goes, its last run and next."""
    out: dict[str, Any] = {}
    for export in config.exports:
        next_run = _next_export_run(export)
        out[export.name] = {
            "store": export.store,
            "format": export.format,
            "schedule": export.schedule,
            "timezone": export.timezone,
            "destination": _destination_text(export.destination),
            "keep": export.keep,
            "incremental": export.incremental,
            "next_run": next_run.timestamp() if next_run is not None else None,
            "last": await load_export_status(state, export.name),
        }
    return out


def _destination_text(d: DestinationSettings) -> str:
    """Where a destination is, for status: never a credential."""
    if isinstance(d, SftpDestinationSettings):
        return f"sftp://{d.user}@{d.host}:{d.port}/{d.path.lstrip('/')}"
    if isinstance(d, S3DestinationSettings):
        return f"s3://{d.bucket}/{d.prefix}" + (f" at {d.endpoint_url}" if d.endpoint_url else "")
    return str(d.path)


def _export_line(name: str, e: dict[str, Any]) -> str:
    """One export in `status`: its last run (or none yet) and its next."""
    last = e.get("last")
    if last is None:
        text = "no run yet"
    elif last.get("paused"):
        text = f"skipped {_when(last['at'])}: {last.get('error')}"
    elif last.get("ok"):
        text = (
            f"ok {_when(last['at'])}: {last.get('products', 0)} product(s),"
            f" {last.get('bytes', 0)} bytes to {last.get('location')}"
        )
    else:
        text = f"FAILED {_when(last['at'])}: {last.get('error')}"
    upcoming = f"next {_when(e['next_run'])}" if e.get("next_run") else "schedule off"
    return f"{name:<16} {e['store']:<12} {e['format']:<8} {text}; {upcoming}"


# -- hub --------------------------------------------------------------------------------------


def cmd_hub(args: argparse.Namespace) -> int:
    from bridge_agent.hub import serve  # noqa: PLC0415 - the agent itself never needs the hub

    token = args.token
    if args.token_file is not None:
        try:
            raw = read_regular_file(args.token_file, max_bytes=65_536, follow_symlinks=True)
            token = raw.decode("utf-8").strip()
        except FileNotFoundError:
            print("bridge-agent hub: cannot read --token-file: no such file", file=sys.stderr)
            return EXIT_CONFIG
        except (InputError, UnicodeDecodeError) as exc:
            print(f"bridge-agent hub: cannot read --token-file: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    token = token or os.environ.get("BRIDGE_HUB_TOKEN")
    if not token:
        print("bridge-agent hub: give --token-file, --token or $BRIDGE_HUB_TOKEN", file=sys.stderr)
        return EXIT_USAGE
    try:
        listen = Listen.parse(args.listen)
    except ValueError as exc:
        print(f"bridge-agent hub: --listen: {exc}", file=sys.stderr)
        return EXIT_USAGE

    async def run_hub() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(
            serve(
                listen.host, listen.port, args.db, token,
                ready=lambda port: log.info("hub_listening", host=listen.host, port=port),
            )
        )  # fmt: skip
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({task, waiter}, return_when="FIRST_COMPLETED")
        task.cancel()
        waiter.cancel()
        await asyncio.gather(task, waiter, return_exceptions=True)
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    try:
        asyncio.run(run_hub())
    except (OSError, BridgeError) as exc:
        log.error("hub_failed", error=str(exc))
        return EXIT_FAILURE
    return EXIT_OK


# -- simulate ---------------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.platform == "shopify":
        from bridge_agent.simulators.shopify import run_cli  # noqa: PLC0415 - not the daemon's
    else:
        from bridge_agent.simulators.woocommerce import run_cli  # noqa: PLC0415

    if not 0.0 <= args.fail_rate <= 1.0 or args.products < 0 or args.latency_ms < 0:
        print("bridge-agent simulate: --fail-rate is 0..1; counts are >= 0", file=sys.stderr)
        return EXIT_USAGE

    async def simulate() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(
            run_cli(args.products, args.port, args.latency_ms, args.fail_rate, args.seed)
        )
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({task, waiter}, return_when="FIRST_COMPLETED")
        for t in (task, waiter):
            t.cancel()
        await asyncio.gather(task, waiter, return_exceptions=True)

    try:
        asyncio.run(simulate())
    except OSError as exc:
        log.error("simulator_failed", error=str(exc))
        return EXIT_FAILURE
    return EXIT_OK


# -- demo -------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from bridge_agent.demo import run_demo  # noqa: PLC0415 - only the demo needs it

    code: int = run_demo(products=args.products, log_path=args.log_file)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
