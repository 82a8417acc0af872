"""Command line: parse, configure logs, install signals, run.

Exit codes (design.md section 7): 0 ok, 1 failure, 2 usage, 78 configuration error (EX_CONFIG, as
`vector validate`). The process owns the signals: the first SIGTERM/SIGINT asks the agent to stop
gracefully, a second one abandons the drain (uvicorn's two-stage stop). The global options
(`--config`, `--log-level`, `--log-format`) are read before or after the command (`bridge-agent
validate --config FILE`, as `vector validate --config` reads); after it wins.

Commands that only read or edit the local state (`status`, `log`, `outbox`) load the
configuration without its secrets, so they work in a fresh terminal without the hub token. A
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
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import structlog

from bridge_agent import __version__, logs, platforms
from bridge_agent.agent import Agent, RootTaskExited, secret_values
from bridge_agent.config import Config, Listen, StoreSettings, default_config_path, load_config
from bridge_agent.errors import BridgeError, ConfigError, InputError, StateStoreError
from bridge_agent.health import Health
from bridge_agent.inputs import loads_json, read_regular_file
from bridge_agent.platforms.base import Capability, capabilities_of
from bridge_agent.platforms.http import build_platform
from bridge_agent.server import StoreView, status_document
from bridge_agent.sources.importer import freeze
from bridge_agent.store import StateStore

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
        "--limit", type=_positive, default=50, help="the newest N events (default %(default)s)"
    )
    events.add_argument(
        "--level", choices=EVENT_LEVELS, default="info",
        help="the least severe level shown (default %(default)s)",
    )  # fmt: skip
    events.add_argument("--json", action="store_true", help="a JSON array, oldest first")
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

    sync = sub.add_parser(
        "sync", help="start a full refresh run, or a repair run (the running agent picks it up)"
    )
    sync.add_argument("--store", action="append", help="store id (default: every active store)")
    sync.add_argument(
        "--repair", action="store_true",
        help="compare the hub with the store and repair every difference (products the store"
        " no longer has, other hashes, products the hub lost) instead of a refresh",
    )  # fmt: skip
    sync.set_defaults(handler=cmd_sync)

    simulate = sub.add_parser(
        "simulate", help="run a store simulator on loopback",
        description="A simulated store on 127.0.0.1 for the demo, tests and trying the agent"
        " by hand: the platform's REST API with its real shapes and errors, webhooks delivered"
        " to the URLs registered in it (signed as the platform signs them), and a control API"
        " under /__sim/ to change products and inject faults (docs/simulators.md).",
    )  # fmt: skip
    simulate.add_argument("platform", choices=["woocommerce"], help="the store platform")
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
    http = httpx.AsyncClient()  # adapters take a client; building one does no I/O
    try:
        for store in config.stores:
            try:
                adapter = platforms.load(store.platform)
                build_platform(adapter, store, http)  # an adapter's failure is a ConfigError
                offers[store.id] = capabilities_of(adapter)
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
        for warning in _capability_warnings(store, offers[store.id]):
            print(f"  {store.id}: note: {warning}")
    return EXIT_OK


def _capability_warnings(store: StoreSettings, offers: frozenset[Capability]) -> list[str]:
    """Settings the store's adapter has no use for: valid, but worth a word."""
    notes = []
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
        if down and (down.get("cursor") or any(down.get(k) for k in ("open", "applied"))):
            lines.append(
                f"{'':<16} downstream: cursor {down['cursor'] or '-'}, {down['open']} open,"
                f" {down['pending_review']} pending review, {down['applied']} applied,"
                f" {down['conflict']} conflict, {down['failed']} failed,"
                f" {down['unreported']} unreported"
            )
        if s.get("capabilities"):
            lines.append(f"{'':<16} offers: {', '.join(s['capabilities'])}")
    if doc.get("runs"):
        lines += ["", f"{'RUN':>5} {'KIND':<8} {'STORE':<12} {'STATE':<8} PROGRESS"]
        for r in doc["runs"]:
            lines.append(
                f"{r['id']:>5} {r['kind']:<8} {r['store']:<12} {r['state']:<8} {_progress(r)}"
            )
    if doc.get("events"):
        lines += ["", "recent events:"]
        lines += [f"  {render_event(e)}" for e in doc["events"]]
    return "\n".join(lines)


def render_event(event: dict[str, Any]) -> str:
    """One event as a line: local time, level, store/product, [HTTP status], message."""
    where = "/".join(p for p in (event.get("store"), event.get("product")) if p)
    code = f" [{event['status']}]" if event.get("status") else ""
    return f"{_when(event['at'] / 1e3)} {event['level']:<7} {where}{code} {event['message']}"


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
              f"{', '.join(s.id for s in config.stores)})", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    levels = EVENT_LEVELS[EVENT_LEVELS.index(args.level) :]

    async def read() -> list[dict[str, Any]]:
        # Read-only: the running agent keeps writing (WAL), nothing here can disturb it.
        async with StateStore.open(config.agent.state_dir, read_only=True) as state:
            events = await state.events(limit=args.limit, levels=levels, stores=args.store)
        return [asdict(e) for e in reversed(events)]  # oldest first, as logs read

    events = asyncio.run(read())
    if args.json:
        print(json.dumps(events, indent=2))
    elif not events:
        shown = "" if args.level == "debug" else f" at level {args.level} or above"
        print(f"no events{shown} in {config.agent.state_dir}")
    else:
        print("\n".join(render_event(e) for e in events))
    return EXIT_OK


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


# -- sync -------------------------------------------------------------------------------------


def cmd_sync(args: argparse.Namespace) -> int:
    config = _config(args)
    chosen = [s for s in config.stores if s.active and (not args.store or s.id in args.store)]
    unknown = set(args.store or ()) - {s.id for s in config.stores}
    if unknown or not chosen:
        what = ", ".join(sorted(unknown)) or "no active store"
        print(f"bridge-agent sync: {what} (configured: "
              f"{', '.join(s.id for s in config.stores)})", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE

    kind = "repair" if args.repair else "refresh"

    async def start() -> list[tuple[str, int]]:
        async with StateStore.open(config.agent.state_dir) as state:
            return [(s.id, await state.start_run(kind, s.id, freeze(s))) for s in chosen]

    for store_id, run_id in asyncio.run(start()):
        print(f"{kind} run {run_id} queued for store {store_id!r}: the running agent starts it"
              " within seconds (bridge-agent status shows its progress)")  # fmt: skip
    return EXIT_OK


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
    from bridge_agent.simulators.woocommerce import run_cli  # noqa: PLC0415 - not the daemon's

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
