"""The chaos oracle (issue 16, in the style of Vector's oracle tests): the real agent process,
a simulated store and the reference hub, while everything goes wrong at once.

One trial, given a seed and a platform:

1. starts the store simulator (in this process, `chaos_store.py`), the reference hub (a process
   of its own with a receipt journal, `chaos_hub.py`) and the agent (`python -m bridge_agent
   run`, a process of its own) on loopback, on free ports, in a temporary folder, and waits for
   the first import to reach the hub;
2. plays a schedule made from the seed alone (`plan`): store changes (create, update, stock,
   trash or delete, bursts), each delivered by webhook, by spool hint, only by the
   modified-since poll, or by nothing at all (only verification sees it); optimisations
   enqueued at the hub, some of which the merchant conflicts with, before or just after the
   hub's proposal; SIGKILLs of the agent and restarts; the hub killed and started again; store
   faults (429, 5xx, slow answers, connection resets, replies lost after a write) switched on
   and off; a verification run queued now and then;
3. stops the faults, brings everything up, queues a verification run and waits, within a
   bounded settle time, for the oracle to hold:

   - the hub equals the store's truth for every product: the store read through the agent's
     own adapter (the canonical mapping), compared field by field with the hub's copy, and
     every product the store no longer has deleted at the hub ("lost" counts the products
     that differ: design.md guarantee 1);
   - every optimisation has exactly one final result at the hub, and the agent never reported
     two different outcomes for one (the hub's journal holds every result post);
   - no write applied twice: every write of an optimisation's value the store applied is
     counted (`Writes`), per optimisation and field (guarantee 5's crash rules);
   - no merchant value overwritten: a field the merchant edited holds the merchant's last value,
     unless an optimisation proposed from that very value replaced it (guarantee 5).

Determinism: every decision (what to change, how it is delivered, which product, when to kill)
comes from `random.Random(seed)`, drawn in the order of the schedule, and targets are chosen from
the driver's own model of the catalog, which only the driver changes. The processes' timing
varies from run to run; the schedule of actions does not, so a failing seed replays the same
story (`TrialReport.replay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bridge_agent.config import load_config
from bridge_agent.sync.hashing import VOLATILE_FIELDS, content_hash
from bridge_agent.testing.chaos_store import (
    FAULT_KINDS,
    OPT_MARK,
    STORE,
    StoreSide,
    open_store,
)

PLATFORMS = ("woocommerce", "shopify")
FINAL = frozenset({"applied", "conflict", "failed", "rejected_by_reviewer"})
HOWS = ("webhook", "webhook", "spool", "poll", "hidden")
HUB_TOKEN = "chaos-hub-token-4f1a9c"  # noqa: S105 - a throwaway hub on loopback
OPT_FIELDS = ("seo_title", "seo_description", "description_html", "image_alt", "jsonld")
CONFLICT_FIELDS = ("seo_title", "description_html")


# -- the schedule ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One action of the schedule, `at` seconds after the chaos starts. `how` is how the agent
    may learn of a store change; `u` are the random numbers the action chooses its targets with
    when it runs (from the driver's model of the catalog); `n` numbers the change, the
    optimisation, the fault kind or the quantity."""

    at: float
    kind: str
    how: str = ""
    n: int = 0
    u: tuple[float, ...] = ()

    def describe(self) -> str:
        extra = f" {self.how}" if self.how else ""
        return f"{self.at:6.2f}s {self.kind}{extra} n={self.n}"


def plan(seed: int, duration: float) -> list[Step]:
    """The whole schedule of one trial, from the seed alone."""
    rng = random.Random(seed)
    steps: list[Step] = []
    t = 0.0
    kill_after = 1.0  # no kill before then: the agent was just (re)started
    hub_up_at = 0.0
    changes = opts = 0
    while True:
        t += rng.uniform(0.04, 0.3)
        if t >= duration:
            break
        roll = rng.random()
        how = rng.choice(HOWS)
        u = (rng.random(), rng.random(), rng.random(), rng.random(), rng.random())
        if roll < 0.26:
            changes += 1
            steps.append(Step(t, "update", how, changes, u))
        elif roll < 0.34:
            steps.append(Step(t, "stock", how, rng.randrange(0, 40), u))
        elif roll < 0.42:
            changes += 1
            steps.append(Step(t, "create", how, changes, u))
        elif roll < 0.47:
            steps.append(Step(t, "remove", how, 0, u))
        elif roll < 0.51:
            size = rng.randrange(4, 16)
            changes += size
            steps.append(Step(t, "burst", how, size, u))
        elif roll < 0.71:
            if t < hub_up_at:
                continue  # the hub is down: nobody proposes anything
            opts += 1
            steps.append(Step(t, "optimise", how, opts, u))
            if u[3] > 0.45 and u[3] < 0.6:  # the merchant edits just after the proposal
                steps.append(Step(t + rng.uniform(0.0, 0.6), "race", how, opts, u))
        elif roll < 0.79:
            if t < kill_after:
                continue
            down = rng.uniform(0.0, 1.5)
            agent_up_at = t + down
            # Up for a while before the next kill: a Python process takes a second or two to
            # start, and an agent killed before it works proves only the start-up. A short
            # stay still kills it during start-up now and then.
            kill_after = agent_up_at + rng.uniform(0.5, 5.0)
            steps.append(Step(t, "kill_agent"))
            steps.append(Step(agent_up_at, "start_agent"))
        elif roll < 0.83:
            if t < hub_up_at:
                continue
            down = rng.uniform(0.3, 2.5)
            hub_up_at = t + down
            steps.append(Step(t, "hub_down", "", int(rng.random() < 0.3)))
            steps.append(Step(hub_up_at, "hub_up"))
        elif roll < 0.95:
            steps.append(Step(t, "faults", FAULT_KINDS[rng.randrange(len(FAULT_KINDS))]))
        else:
            steps.append(Step(t, "verify"))
    steps.sort(key=lambda s: s.at)  # stable: actions planned for one moment keep their order
    return steps


# -- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Child:
    """A child process started again and again with one command, its output appended to one
    log; killed with SIGKILL (or SIGTERM) by the driver."""

    def __init__(self, command: list[str], log: Path, cwd: Path) -> None:
        self.command = command
        self.log = log
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.expected_exit = True
        self.unexpected_exits: list[int] = []

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        if self.up:
            return
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                cwd=self.cwd, env=dict(os.environ),
            )  # fmt: skip
        self.expected_exit = False

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.expected_exit = True
        self.proc.send_signal(sig)
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def check(self) -> int | None:
        """The exit code if the process ended on its own since it was started."""
        if self.proc is None or self.expected_exit or self.proc.returncode is None:
            return None
        self.expected_exit = True
        self.unexpected_exits.append(self.proc.returncode)
        return self.proc.returncode

    def tail(self, chars: int = 2500) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""


# -- the oracle's records --------------------------------------------------------------------


@dataclass
class Proposal:
    """An optimisation the driver enqueued: its hub id, product and fields (`from`, `to`)."""

    n: int
    id: str
    product: str
    fields: dict[str, Any]


@dataclass
class TrialReport:
    seed: int
    platform: str
    duration: float
    products_checked: int = 0
    lost: int = 0
    duplicates: int = 0  # batch items the hub received again (allowed: at least once)
    double_writes: int = 0
    overwrites: int = 0
    # Merchant edits that landed between the agent's last read of the product and its write:
    # the read-write window a platform without a conditional write leaves (guarantee 5 names
    # it); counted and shown, not a failure. Only where the store logs the writer's reads.
    raced: int = 0
    restarts: int = 0  # SIGKILLs of the agent, each followed by a restart
    hub_outages: int = 0
    converge_s: float | None = None  # faults stopped -> oracle holds
    optimisations: int = 0
    without_result: int = 0
    two_outcomes: int = 0
    duplicate_results: int = 0
    results: Counter[str] = field(default_factory=Counter)
    changes: int = 0
    agent_exits: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth reading, not failures
    workdir: str = ""

    @property
    def converged(self) -> bool:
        return self.converge_s is not None

    @property
    def ok(self) -> bool:
        return (
            self.converged
            and self.lost == 0
            and self.double_writes == 0
            and self.overwrites == 0
            and self.without_result == 0
            and self.two_outcomes == 0
            and not self.agent_exits
        )

    def replay(self) -> str:
        return (
            f"python bench/chaos.py --platform {self.platform} --seed {self.seed} --trials 1"
            f" --duration {self.duration:g}"
        )

    def line(self) -> str:
        converge = f"{self.converge_s:.1f}s" if self.converge_s is not None else "NEVER"
        results = ",".join(f"{k}={v}" for k, v in sorted(self.results.items()))
        return (
            f"{'ok  ' if self.ok else 'FAIL'} {self.platform:<11} seed={self.seed}"
            f" products={self.products_checked} lost={self.lost} duplicates={self.duplicates}"
            f" double_writes={self.double_writes} overwrites={self.overwrites}"
            f" raced={self.raced} restarts={self.restarts} hub_outages={self.hub_outages}"
            f" converge={converge}"
            f" changes={self.changes} optimisations={self.optimisations} [{results}]"
        )

    def failure(self) -> str:
        """The seed, how to replay it, and the precise differences."""
        lines = [self.line(), f"  replay: {self.replay()}", f"  workdir: {self.workdir}"]
        if self.agent_exits:
            lines.append(f"  the agent exited on its own with {self.agent_exits}")
        lines += [f"  {p}" for p in self.problems[:40]]
        lines += [f"  note: {n}" for n in self.notes]
        if len(self.problems) > 40:
            lines.append(f"  ... and {len(self.problems) - 40} more")
        return "\n".join(lines)


# -- one trial ---------------------------------------------------------------------------------


class Trial:
    """The store, the hub and the agent of one trial, and the driver playing the schedule."""

    def __init__(
        self, seed: int, platform: str, root: Path, *, duration: float, products: int,
        settle: float,
    ) -> None:  # fmt: skip
        self.seed = seed
        self.platform = platform
        self.root = root
        self.duration = duration
        self.settle_limit = settle
        self.store: StoreSide = open_store(platform, seed, products, root)
        self.report = TrialReport(seed, platform, duration, workdir=str(root))
        self.hub_port = free_port()
        self.hub_url = f"http://127.0.0.1:{self.hub_port}"
        self.health_port = free_port()
        self.webhook_port = free_port()
        self.proposals: dict[int, Proposal] = {}
        self.opted: set[str] = set()
        self.targets: dict[int, str] = {}  # optimisation number -> its product
        self.merchant: dict[tuple[str, str], list[str]] = {}
        self.merchant_edits = 0
        self.merchant_at: dict[tuple[str, str], float] = {}  # when the last edit was applied
        self.side_tasks: list[asyncio.Task[Any]] = []
        token_file = root / "hub-token"
        token_file.write_text(HUB_TOKEN, encoding="utf-8")
        token_file.chmod(0o600)
        self.journal = root / "hub-journal.jsonl"
        self.hub = Child(
            [sys.executable, "-m", "bridge_agent.testing.chaos_hub",
             "--listen", f"127.0.0.1:{self.hub_port}", "--db", str(root / "hub.sqlite"),
             "--token-file", str(token_file), "--journal", str(self.journal)],
            root / "hub.log", root,
        )  # fmt: skip
        self.config = root / "agent.toml"
        self.agent = Child(
            [sys.executable, "-m", "bridge_agent", "--config", str(self.config),
             "--log-format", "json", "run"],
            root / "agent.log", root,
        )  # fmt: skip
        self.http = httpx.AsyncClient(
            base_url=self.hub_url, headers={"Authorization": f"Bearer {HUB_TOKEN}"}, timeout=5
        )

    # -- setup -------------------------------------------------------------------------------

    def write_config(self) -> None:
        self.config.write_text(
            f"""[agent]
id = "chaos-{self.platform}"
state_dir = "state"
drain_timeout = "3s"

[hub]
url = "{self.hub_url}"
token_file = "hub-token"
batch_linger = "0s"
backoff_base = "50ms"
backoff_cap = "1s"

[health]
listen = "127.0.0.1:{self.health_port}"

[webhooks]
listen = "127.0.0.1:{self.webhook_port}"

[[stores]]
id = "{STORE}"
{self.store.store_toml(self.webhook_port)}concurrency = 4
poll_interval = "1s"
reconcile_interval = "3s"
verify_schedule = "off"
image_checks = false
""",
            encoding="utf-8",
        )
        self.config.chmod(0o600)

    async def start_hub(self) -> None:
        await self.hub.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.hub.up:
                raise RuntimeError(f"the hub exited at start:\n{self.hub.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await self.http.get("/healthz", timeout=1)).status_code == 200:
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"the hub did not answer within 30 s:\n{self.hub.tail()}")

    async def hub_products(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        after = ""
        while True:
            page = (
                await self.http.get(
                    f"/v1/stores/{STORE}/products", params={"after": after, "limit": 1000}
                )
            ).json()
            for p in page["products"]:
                out[str(p["id"])] = p
            if not page.get("next"):
                return out
            after = page["next"]

    async def agent_status(self) -> dict[str, Any] | None:
        try:
            async with httpx.AsyncClient(timeout=2) as c:
                doc: dict[str, Any] = (
                    await c.get(f"http://127.0.0.1:{self.health_port}/status")
                ).json()
                return doc
        except (httpx.HTTPError, ValueError):
            return None

    async def wait_imported(self, limit: float = 90) -> None:
        wanted = set(self.store.live)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            self.check_agent()
            with contextlib.suppress(httpx.HTTPError):
                at_hub = await self.hub_products()
                if wanted <= {k for k, v in at_hub.items() if not v["deleted"]}:
                    return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the first import did not reach the hub:\n{self.agent.tail()}")

    def check_agent(self) -> None:
        code = self.agent.check()
        if code is not None:
            self.report.agent_exits.append(code)
            self.report.problems.append(
                f"agent exited on its own with {code}; log tail:\n{self.agent.tail(1500)}"
            )

    # -- the schedule ------------------------------------------------------------------------

    async def play(self, steps: list[Step]) -> None:
        started = time.monotonic()
        for step in steps:
            delay = started + step.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.check_agent()
            if not self.agent.up and step.kind != "start_agent" and self.agent_should_run:
                await self.agent.start()  # it died on its own: noted, and started again
            await self.act(step)

    agent_should_run = True

    async def act(self, step: Step) -> None:
        store = self.store
        live = store.live
        if step.kind == "update" and live:
            store.update(_pick(live, step.u[0]), step.n, step.how)
            self.report.changes += 1
        elif step.kind == "stock" and live:
            store.stock(_pick(live, step.u[0]), step.n, step.how)
            self.report.changes += 1
        elif step.kind == "create":
            store.create(step.n, step.how)
            self.report.changes += 1
        elif step.kind == "remove" and len(live) > 3:
            store.remove(_pick(live, step.u[0]), step.how)
            self.report.changes += 1
        elif step.kind == "burst" and live:
            # One product edited again and again, and a few others: coalescing territory.
            rng = random.Random(int(step.u[0] * 2**32))
            for k in range(step.n):
                pid = _pick(live, step.u[1]) if k % 2 == 0 else rng.choice(live)
                store.update(pid, step.n * 1000 + k, step.how)
                self.report.changes += 1
        elif step.kind == "optimise":
            await self.optimise(step)
        elif step.kind == "race":
            target = self.targets.get(step.n)
            if target is not None:
                self.conflict(target, step.u[4], step.how)
        elif step.kind == "kill_agent":
            self.agent_should_run = False
            await self.agent.kill()
            self.report.restarts += 1
        elif step.kind == "start_agent":
            self.agent_should_run = True
            await self.agent.start()
        elif step.kind == "hub_down":
            await self.hub.kill(signal.SIGTERM if step.n else signal.SIGKILL)
            self.report.hub_outages += 1
        elif step.kind == "hub_up":
            await self.start_hub()
        elif step.kind == "faults":
            store.set_faults(step.how)
        elif step.kind == "verify":
            self.side_tasks.append(asyncio.create_task(self.queue_verify()))

    async def optimise(self, step: Step) -> None:
        # The product and the merchant's edit depend on the schedule only; whether the hub
        # holds the product yet (timing) decides only whether a proposal is enqueued.
        choices = [p for p in self.store.live if p not in self.opted]
        if not choices:
            return
        pid = _pick(choices, step.u[0])
        self.opted.add(pid)
        self.targets[step.n] = pid
        data: dict[str, Any] | None = None
        if self.hub.up:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                got = await self.http.get(f"/v1/stores/{STORE}/products/{pid}")
                if got.status_code == 200 and not got.json().get("deleted"):
                    data = got.json()["data"]
        if step.u[3] < 0.3:
            # The merchant edits after the hub read the product, before the proposal arrives.
            self.conflict(pid, step.u[4], step.how)
        if data is None:
            return  # the hub is down or does not hold it yet: nothing to propose from
        n = step.n
        wanted = [f for i, f in enumerate(OPT_FIELDS) if (step.u[1] * 7 + i * 0.37) % 1 < 0.6]
        fields: dict[str, Any] = {}
        for name in wanted or ["seo_title"]:
            if name == "seo_title":
                fields[name] = {"from": data.get("seo_title"), "to": f"opt{n}-title chaos"}
            elif name == "seo_description":
                fields[name] = {"from": data.get("seo_description"), "to": f"opt{n}-meta chaos"}
            elif name == "description_html":
                fields[name] = {
                    "from": data.get("description_html"),
                    "to": f"<p>opt{n}-desc chaos</p>",
                }
            elif name == "image_alt" and data.get("images"):
                image = data["images"][0]
                fields[name] = {
                    str(image["id"]): {"from": image.get("alt") or None, "to": f"opt{n}-alt chaos"}
                }
            elif name == "jsonld":
                fields[name] = {"to": {"@type": "Product", "name": f"opt{n}-jsonld chaos"}}
        if not fields:
            return
        try:
            answer = await self.http.post(
                f"/v1/stores/{STORE}/optimizations", json=[{"product": pid, "fields": fields}]
            )
        except httpx.HTTPError:
            return
        if answer.status_code != 201:
            self.report.problems.append(f"the hub refused an optimisation: {answer.text[:200]}")
            return
        (opt_id,) = answer.json()["ids"]
        self.proposals[n] = Proposal(n, opt_id, pid, fields)
        self.opted.add(pid)
        self.report.optimisations += 1

    def conflict(self, pid: str, u: float, how: str) -> None:
        if pid not in self.store.live:
            return
        name = CONFLICT_FIELDS[int(u * len(CONFLICT_FIELDS))]
        self.merchant_edits += 1
        k = self.merchant_edits
        value = f"merchant{k}-title" if name == "seo_title" else f"<p>merchant{k}-desc</p>"
        if not self.store.edit_field(pid, name, value, how):
            name, value = "description_html", f"<p>merchant{k}-desc</p>"
            self.store.edit_field(pid, name, value, how)
        self.merchant.setdefault((pid, name), []).append(value)
        self.merchant_at[(pid, name)] = time.monotonic()
        self.report.changes += 1

    async def queue_verify(self) -> None:
        """`bridge-agent verify`: the operator's command, queuing a run the agent performs."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge_agent", "--config", str(self.config), "verify",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, cwd=self.root,
        )  # fmt: skip
        await proc.wait()

    # -- settle and judge ----------------------------------------------------------------------

    async def settle(self) -> None:
        """Faults off, everything up; then wait (bounded) until the oracle holds."""
        self.store.set_faults("none")
        if not self.hub.up:
            await self.start_hub()
        self.check_agent()
        self.agent_should_run = True
        await self.agent.start()
        t0 = time.monotonic()
        for task in self.side_tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.store.drain(), 30)
        await self.queue_verify()
        deadline = t0 + self.settle_limit
        settings = load_config(self.config).store(STORE)
        last: list[str] = ["nothing checked yet"]
        while True:
            self.check_agent()
            if not self.agent.up:
                await self.agent.start()
            try:
                last = await self.differences(settings)
            except (httpx.HTTPError, RuntimeError, ValueError) as exc:
                last = [f"could not check: {exc!r}"]
            if not last:
                self.report.converge_s = time.monotonic() - t0
                break
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.5)
        await self.judge(settings, last)

    async def differences(self, settings: Any) -> list[str]:
        """What still keeps the oracle from holding; empty when it holds."""
        missing = await self.unresolved()
        if missing:
            return [f"{len(missing)} optimisations have no final result yet: {missing[:5]}"]
        status = await self.agent_status()
        if status is None:
            return ["the agent does not answer /status"]
        if status["outbox"]["pending"]:
            return [f"{status['outbox']['pending']} changes still pending in the outbox"]
        if any((self.store.spool / "incoming").glob("*.json")):
            return ["spool hints not consumed yet"]
        return self.compare(await self.store.truth(settings), await self.hub_products())

    async def unresolved(self) -> list[str]:
        out = []
        for p in self.proposals.values():
            doc = (await self.http.get(f"/v1/stores/{STORE}/optimizations/{p.id}")).json()
            if doc.get("status") not in FINAL:
                out.append(f"opt{p.n}={doc.get('status')}")
        return out

    def compare(
        self, truth: Mapping[str, dict[str, Any]], at_hub: Mapping[str, dict[str, Any]]
    ) -> list[str]:
        diffs = []
        for pid in sorted(truth, key=_num):
            held = at_hub.get(pid)
            if held is None:
                diffs.append(f"product {pid}: in the store, never reached the hub")
            elif held["deleted"]:
                diffs.append(f"product {pid}: in the store, deleted at the hub")
            elif held["hash"] != content_hash(truth[pid]):
                # Content, as the agent's own hash sees it: `updated_at` alone ships nothing.
                fields = sorted(
                    k for k in truth[pid].keys() | held["data"].keys()
                    if truth[pid].get(k) != held["data"].get(k) and k not in VOLATILE_FIELDS
                )  # fmt: skip
                detail = "; ".join(
                    f"{k}: store={_short(truth[pid].get(k))} hub={_short(held['data'].get(k))}"
                    for k in fields[:4]
                )
                diffs.append(f"product {pid}: hub differs from the store: {detail}")
        diffs.extend(
            f"product {pid}: gone from the store, still live at the hub"
            for pid in sorted(at_hub, key=_num)
            if pid not in truth and not at_hub[pid]["deleted"]
        )
        return diffs

    async def judge(self, settings: Any, last: list[str]) -> None:
        r = self.report
        truth: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(httpx.HTTPError, RuntimeError):
            truth = await self.store.truth(settings)
        at_hub: dict[str, dict[str, Any]] = {}
        with contextlib.suppress(httpx.HTTPError, ValueError):
            at_hub = await self.hub_products()
        r.products_checked = len(truth.keys() | at_hub.keys())
        diffs = self.compare(truth, at_hub) if truth and at_hub else last
        r.lost = sum(1 for d in diffs if d.startswith("product "))
        if not r.converged:
            r.problems.append(f"not converged within {self.settle_limit:g}s: {last[:3]}")
            # What the agent says it is doing, and when it last said anything: a stall shows.
            status = await self.agent_status() or {}
            store = (status.get("stores") or {}).get(STORE) or {}
            downstream = store.get("downstream") or {}
            r.problems.append(
                f"agent status: {store.get('state')!r} ({store.get('detail')!r}),"
                f" optimisations open {downstream.get('open')}, outbox {status.get('outbox')}"
            )
            lines = self.agent.tail(4000).strip().splitlines()
            r.problems.append(f"agent's last log line: {lines[-1][:300] if lines else '(none)'}")
            if self.agent.up:  # what each of its tasks waits on, into its log (taskdump.py)
                self.agent.proc.send_signal(signal.SIGUSR1)  # type: ignore[union-attr]
                await asyncio.sleep(1.0)
                r.problems.append("agent's tasks: the `tasks_dumped` event in agent.log")
        r.problems += [d for d in diffs if d.startswith("product ")]
        await self.judge_results()
        self.judge_writes()
        self.judge_overwrites(truth)
        self.count_duplicates()

    async def judge_results(self) -> None:
        r = self.report
        posted: dict[str, list[str]] = {}
        for doc in self.journal_lines():
            if doc.get("k") == "results":
                for opt_id, status in doc["results"]:
                    posted.setdefault(str(opt_id), []).append(str(status))
        for p in self.proposals.values():
            try:
                doc = (await self.http.get(f"/v1/stores/{STORE}/optimizations/{p.id}")).json()
            except httpx.HTTPError:
                doc = {}
            status = str(doc.get("status"))
            r.results[status] += 1
            finals = [s for s in posted.get(p.id, []) if s in FINAL]
            if status not in FINAL:
                r.without_result += 1
                r.problems.append(f"opt{p.n} ({p.id}, product {p.product}): no final result")
            if len(set(finals)) > 1:
                r.two_outcomes += 1
                r.problems.append(f"opt{p.n} ({p.id}): reported with outcomes {finals}")
            r.duplicate_results += max(len(finals) - 1, 0)

    def judge_writes(self) -> None:
        r = self.report
        for (n, name), count in sorted(self.store.writes.counts.items()):
            if count > 1:
                r.double_writes += count - 1
                product = self.proposals[n].product if n in self.proposals else "?"
                r.problems.append(f"opt{n} {name} of product {product}: written {count} times")

    def judge_overwrites(self, truth: Mapping[str, dict[str, Any]]) -> None:
        r = self.report
        for (pid, name), values in sorted(self.merchant.items()):
            if pid not in truth:
                continue  # the merchant deleted the product later
            last = values[-1]
            final = truth[pid].get(name)
            text = final if isinstance(final, str) else json.dumps(final)
            if _mark(last) in text:
                continue
            # Replaced: fine only by an optimisation proposed from the merchant's value.
            legit = [
                n for n, tag in OPT_MARK.findall(text)
                if int(n) in self.proposals
                and _mark(last) in str((self.proposals[int(n)].fields.get(name) or {}).get("from"))
            ]  # fmt: skip
            if not legit and self.raced_write(pid, name, text):
                r.raced += 1
                r.notes.append(
                    f"product {pid} {name}: the merchant's {last!r} landed between the agent's"
                    f" last read and its write (no conditional write), store holds {_short(final)}"
                )
            elif not legit:
                r.overwrites += 1
                r.problems.append(
                    f"product {pid} {name}: the merchant's {last!r} overwritten, store holds"
                    f" {_short(final)}"
                )

    def raced_write(self, pid: str, name: str, text: str) -> bool:
        """Whether the merchant's last edit of the field was applied after the agent last read
        the product and before the write that replaced it: the agent could not have seen it."""
        edited = self.merchant_at.get((pid, name))
        writes = self.store.writes
        for n, _tag in OPT_MARK.findall(text):
            written = writes.applied.get((int(n), name))
            if edited is None or written is None or not edited < written:
                continue
            read = writes.last_read_before(pid, written)
            if read is not None and read < edited:
                return True
        return False

    def count_duplicates(self) -> None:
        seen: Counter[tuple[str, str, str]] = Counter()
        for doc in self.journal_lines():
            if doc.get("k") == "batch":
                for pid, hash_, op, _seq, _source in doc["items"]:
                    seen[(str(pid), str(hash_), str(op))] += 1
        self.report.duplicates = sum(n - 1 for n in seen.values() if n > 1)

    def journal_lines(self) -> Iterator[dict[str, Any]]:
        try:
            text = self.journal.read_text(encoding="utf-8")
        except OSError:
            return
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                yield json.loads(line)

    # -- the whole trial -----------------------------------------------------------------------

    async def run(self) -> TrialReport:
        steps = plan(self.seed, self.duration)
        await self.store.start()
        try:
            self.write_config()
            await self.start_hub()
            await self.agent.start()
            await self.wait_imported()
            await self.play(steps)
            await self.settle()
        finally:
            for task in self.side_tasks:
                task.cancel()
            await asyncio.gather(*self.side_tasks, return_exceptions=True)
            await self.agent.kill(signal.SIGTERM)
            await self.hub.kill(signal.SIGTERM)
            await self.http.aclose()
            await self.store.close()
        return self.report


def _pick(items: list[str], u: float) -> str:
    return items[min(int(u * len(items)), len(items) - 1)]


def _num(pid: str) -> tuple[int, str]:
    return (int(pid), pid) if pid.isdigit() else (0, pid)


def _mark(value: str) -> str:
    """The merchant's marker inside a value (`merchant12-desc` in `<p>merchant12-desc</p>`)."""
    return value.removeprefix("<p>").removesuffix("</p>")


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def run_trial(
    seed: int,
    platform: str,
    *,
    duration: float = 20.0,
    products: int = 30,
    settle: float = 90.0,
    workdir: Path | None = None,
    keep: bool = False,
) -> TrialReport:
    """One trial in a fresh temporary folder (kept when `keep`, or when the trial failed and
    no `workdir` was given, so its logs can be read)."""
    if platform not in PLATFORMS:
        raise ValueError(f"platform must be one of {', '.join(PLATFORMS)}")
    root = Path(tempfile.mkdtemp(prefix=f"chaos-{platform}-{seed}-", dir=workdir))
    report = await Trial(
        seed, platform, root, duration=duration, products=products, settle=settle
    ).run()
    if report.ok and not keep:
        shutil.rmtree(root, ignore_errors=True)
    return report
