"""The resource soak (issue 16 item 4): the real agent under a steady change rate, the hub down for
a while in the middle, and its memory, open files, state database and outbox sampled throughout.

One module for the long run (`bench/soak.py`, 30 minutes) and the short one CI runs
(`tests/test_soak.py`, about 2 minutes), so both exercise the same code and check the same bounds.
It also holds the pieces `bench/latency.py` drives the agent with (the hub and agent processes,
the jsondir shop and its steady writer).

The scenario: a `jsondir` store of a fixed set of products, whose change hooks are spool files
(`testing.catalog.write_spool`), so the agent re-fetches each product from its catalog file as it
would from a store; the changes pick products at random from that fixed set, so a product changed
twice before it ships is one outbox row (coalescing, guarantee 1). The agent and the reference hub
run in their own processes (`python -m bridge_agent run` / `hub`), as in production; the hub is
stopped (SIGTERM) for the middle of the run and started again on the same port and database.

Why the bounds hold, and so what is checked (`SoakResult.violations`):

- outbox rows <= products: the outbox has one row per product (primary key `(store, id)`), however
  many changes it saw while the hub was away;
- nothing lost: once the writer stops and the agent has settled, the hub holds the catalog file's
  exact data for every product;
- memory, open files and the database plateau: nothing the agent holds grows with the number of
  changes (rows coalesce, spool files are removed once recorded, connections are pooled), so each
  of them is compared with a limit and its growth rate over the last half of the run (least
  squares, per minute) must stay under a rate that a leak of one object per change would exceed.

Samples read `/proc/<pid>/status` (VmRSS), `/proc/<pid>/fd`, the size of `state.sqlite` and its
WAL, and the outbox row count (a read-only connection, opened and closed per sample, so the
sampler never holds a read transaction that would stop the agent's checkpoints).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx

from bridge_agent.testing.catalog import (
    make_product,
    read_catalog,
    spool_event,
    write_product,
    write_spool,
)

STORE_ID = "main"
SAMPLED = ("rss_mb", "fds", "db_mb", "wal_mb", "outbox")
SUMMARY_HEADER = ("figure", "start", "peak", "end", "before outage", "last quarter", "growth/min")
HUB_TOKEN = "soak-hub-token-7e1b04"  # noqa: S105 - a test hub on loopback, no secret
READY_TIMEOUT = 30.0


def free_port() -> int:
    """A port nobody listens on now, on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited after `timeout` seconds; its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
    return proc.returncode


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, what: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready at {url} after {READY_TIMEOUT:.0f} s:\n{_tail(log)}")


# -- the reference hub, which can be taken down and brought back --------------------------------


class HubProcess:
    """`bridge-agent hub` on one loopback port and database for its whole life, so `stop()` and
    `start()` take the hub down and bring it back where the agent expects it."""

    def __init__(self, workdir: Path, *, token: str = HUB_TOKEN) -> None:
        self.workdir = workdir
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = workdir / "hub.sqlite"
        self.log = workdir / "hub.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        token_file = workdir / "hub-token"
        token_file.write_text(token, encoding="utf-8")
        token_file.chmod(0o600)
        self._token_file = token_file

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self) -> None:
        command = [
            sys.executable, "-m", "bridge_agent", "hub", "--listen", f"127.0.0.1:{self.port}",
            "--db", str(self.db), "--token-file", str(self._token_file),
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        self.starts += 1
        _wait_ready(self.proc, f"{self.url}/healthz", self.log, "the hub")

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc, 15.0)
            self.proc = None

    def __enter__(self) -> HubProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def products(self, store: str = STORE_ID) -> dict[str, dict[str, Any]]:
        """Every product the hub holds for `store` (the inspection API, paged)."""
        out: dict[str, dict[str, Any]] = {}
        after = ""
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30.0) as client:
            while True:
                reply = client.get(
                    f"/v1/stores/{store}/products", params={"after": after, "limit": 1000}
                )
                reply.raise_for_status()
                page = reply.json()
                for product in page["products"]:
                    out[product["id"]] = product
                if page["next"] is None:
                    return out
                after = page["next"]


# -- the agent ------------------------------------------------------------------------------------


def write_jsondir_config(workdir: Path, hub: HubProcess, *, backoff_cap: str = "1m") -> Path:
    """`<workdir>/agent.toml` for one jsondir store (`catalog/`, `spool/`), state in `state/`.

    Production settings but three: the verification sweep is off (a nightly sweep in the middle
    of a run would be a second workload), so are the import report's image checks (the demo
    catalog's image URLs are off this machine), and the hub's backoff cap is `backoff_cap` (the
    default minute, or shorter where a test cannot wait a minute for the first retry after the
    outage).
    """
    token_file = workdir / "agent-hub-token"
    token_file.write_text(hub.token, encoding="utf-8")
    token_file.chmod(0o600)
    config = workdir / "agent.toml"
    config.write_text(
        f"""\
[agent]
id = "soak-agent"
state_dir = "state"
drain_timeout = "10s"

[hub]
url = "{hub.url}"
token_file = "agent-hub-token"
backoff_cap = "{backoff_cap}"

[health]
listen = "127.0.0.1:{free_port()}"

[webhooks]
listen = "127.0.0.1:{free_port()}"

[[stores]]
id = "{STORE_ID}"
platform = "jsondir"
url = "http://127.0.0.1/"
catalog_dir = "catalog"
spool_dir = "spool"
verify_schedule = "off"
image_checks = false
""",
        encoding="utf-8",
    )
    config.chmod(0o600)
    return config


class AgentProcess:
    """`bridge-agent --config <config> --log-format json run`, the daemon as in production."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.workdir = config.parent
        self.log = self.workdir / "agent.log"
        self.state_db = self.workdir / "state" / "state.sqlite"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the agent is not running")
        return self.proc.pid

    def __enter__(self) -> AgentProcess:
        command = [
            sys.executable, "-m", "bridge_agent", "--config", str(self.config),
            "--log-format", "json", "run",
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.exit_code = _stop(self.proc)

    exit_code: int | None = None

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise RuntimeError(f"the agent exited ({code}):\n{_tail(self.log)}")

    def outbox_rows(self) -> int:
        """Rows in the outbox now (read-only, opened and closed here: never holds a snapshot)."""
        if not self.state_db.exists():
            return 0
        conn = sqlite3.connect(f"file:{self.state_db}?mode=ro", uri=True, timeout=5.0)
        try:
            (rows,) = conn.execute("SELECT count(*) FROM outbox").fetchone()
        except sqlite3.OperationalError:
            return 0  # the schema is not created yet
        finally:
            conn.close()
        return int(rows)

    def spool_waiting(self) -> int:
        incoming = self.workdir / "spool" / "incoming"
        try:
            return sum(1 for e in os.scandir(incoming) if e.name.endswith(".json"))
        except FileNotFoundError:
            return 0


# -- the shop: catalog files and spool hooks ----------------------------------------------------


class JsonDirShop:
    """The store's truth (`catalog/<id>.json`) and its change hooks (`spool/incoming/*.json`),
    written as a store-side plugin writes them: the product file first, then its hook."""

    def __init__(self, root: Path, products: int, *, seed: int = 7) -> None:
        self.catalog = root / "catalog"
        self.spool = root / "spool"
        self.catalog.mkdir(parents=True, exist_ok=True)
        self.products = products
        self.seed_ = seed
        self.revision = dict.fromkeys(range(1, products + 1), 0)

    def seed(self) -> None:
        """Every product at revision 0, and one spool file announcing them all."""
        for i in self.revision:
            write_product(self.catalog, make_product(i, seed=self.seed_))
        write_spool(self.spool, [spool_event("product.created", str(i)) for i in self.revision])

    def change(self, i: int) -> float:
        """A new revision of product `i` (title and price change), then its hook; returns the
        wall-clock time the hook's write began (the store's change is in place by then)."""
        rev = self.revision[i] = self.revision[i] + 1
        product = replace(make_product(i, seed=self.seed_, revision=rev), title=f"rev {rev} of {i}")
        write_product(self.catalog, product)
        at = time.time()
        write_spool(self.spool, spool_event("product.updated", str(i)))
        return at

    def truth(self) -> dict[str, dict[str, Any]]:
        return read_catalog(self.catalog)


def wait_hub_holds(
    hub: HubProcess,
    expected: Callable[[], dict[str, dict[str, Any]]],
    limit: float,
    *,
    agent: AgentProcess | None = None,
    what: str = "the hub to hold every product",
) -> list[str]:
    """Poll the hub until it holds `expected()` exactly (data of every product); the ids still
    behind when `limit` seconds have passed (empty: it caught up)."""
    deadline = time.monotonic() + limit
    while True:
        if agent is not None:
            agent.check_alive()
        truth = expected()
        at_hub = hub.products()
        behind = sorted(
            pid
            for pid, data in truth.items()
            if pid not in at_hub or at_hub[pid]["deleted"] or at_hub[pid]["data"] != data
        )
        if not behind or time.monotonic() >= deadline:
            return behind
        time.sleep(0.5)


# -- a steady writer ------------------------------------------------------------------------------


class SteadyWriter:
    """Calls `change(n)` for n = 0, 1, ... at `rate` per second on a schedule (change n is due at
    start + n / rate), in a thread, until `stop()` or `count` changes. A late change is made at
    once, so the achieved rate catches up after a stall; `lag_max` says how late the worst was."""

    def __init__(self, rate: float, change: Callable[[int], None], count: int | None = None):
        self.rate = rate
        self._change = change
        self._count = count
        self.done = 0
        self.lag_max = 0.0
        self.started = 0.0
        self.finished = 0.0
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._main, name="steady-writer", daemon=True)

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(timeout=60)
        if self.error is not None:
            raise RuntimeError(f"the writer failed: {self.error!r}") from self.error

    def join(self, timeout: float) -> None:
        self._thread.join(timeout=timeout)
        if self.error is not None:
            raise RuntimeError(f"the writer failed: {self.error!r}") from self.error

    @property
    def achieved_rate(self) -> float:
        end = self.finished or time.monotonic()
        return self.done / max(end - self.started, 1e-9)

    def _main(self) -> None:
        n = 0
        try:
            while not self._halt.is_set() and (self._count is None or n < self._count):
                due = self.started + n / self.rate
                wait = due - time.monotonic()
                if wait > 0:
                    if self._halt.wait(wait):
                        break
                else:
                    self.lag_max = max(self.lag_max, -wait)
                self._change(n)
                n += 1
                self.done = n
        except BaseException as exc:  # reported by stop()/join()
            self.error = exc
        self.finished = time.monotonic()


# -- sampling -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sample:
    t: float  # seconds since the writer started
    hub_up: bool
    rss_mb: float
    fds: int
    db_mb: float  # state.sqlite + its WAL
    wal_mb: float
    outbox: int
    changes: int


def rss_mb(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _size_mb(path: Path) -> float:
    try:
        return path.stat().st_size / 1_048_576
    except FileNotFoundError:
        return 0.0


def sample(agent: AgentProcess, t: float, hub_up: bool, changes: int) -> Sample:
    wal = _size_mb(agent.state_db.with_name("state.sqlite-wal"))
    return Sample(
        t=t,
        hub_up=hub_up,
        rss_mb=rss_mb(agent.pid),
        fds=open_fds(agent.pid),
        db_mb=_size_mb(agent.state_db) + wal,
        wal_mb=wal,
        outbox=agent.outbox_rows(),
        changes=changes,
    )


def slope_per_minute(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares growth of y per minute over (seconds, y) points; 0 with fewer than 3."""
    if len(points) < 3:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mx) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return 60.0 * sum((t - mx) * (y - my) for t, y in points) / var


# -- the soak -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Bounds:
    """What a run must stay within (why each holds: the module docstring).

    Peaks. The agent's RSS is about 65 MB at rest with a small catalog; 150 MB is the import
    target (80 MB) with room for the outage's backlog. Open files: the state database (3 with its
    WAL and shm), logs, inotify, the event loop's own and a few sockets, 17 in practice; 64 leaves
    room for more connections and still fails long before a leak of one fd per change, hook or
    hub retry goes unnoticed. The database holds products x (data + acked data), a few KB each,
    and a WAL that checkpoints at about 4 MB.

    Plateau. The median of the last quarter of the writer's run (the hub back, its backlog
    shipped) against the median of the steady phase before the outage (after the first 10 %):
    what the outage left behind. RSS may keep 20 MB (allocator arenas the backlog touched),
    fds 4 (a pooled connection more), the database 8 MB (WAL pages not reused yet); a leak of
    one 100-byte object per change is 36 MB over a 6-minute run at 100 changes/s.

    Growth over the last half (least squares, per minute) is printed for every run, and checked
    only when that half lasts `growth_min_minutes` or more: over a shorter one the outage's
    steps (connections closed and reopened, the backlog shipped) outweigh any trend.
    """

    rss_mb: float = 150.0
    fds: int = 64
    db_mb: float = 64.0
    rss_plateau_mb: float = 20.0
    fds_plateau: int = 4
    db_plateau_mb: float = 8.0
    growth_min_minutes: float = 10.0
    rss_growth_mb_per_min: float = 1.0
    fds_growth_per_min: float = 0.5
    db_growth_mb_per_min: float = 0.5


@dataclasses.dataclass(frozen=True)
class SoakSettings:
    rate: float = 100.0  # changes a second
    seconds: float = 1800.0  # the writer's run
    down_at: float = 600.0  # seconds into the run the hub goes down
    down_for: float = 600.0
    products: int = 1000
    sample_every: float = 5.0
    settle_limit: float = 300.0  # after the writer stops, for the hub to hold every product
    backoff_cap: str = "1m"
    seed: int = 7
    bounds: Bounds = Bounds()


@dataclasses.dataclass
class SoakResult:
    settings: SoakSettings
    samples: list[Sample]
    changes: int
    achieved_rate: float
    writer_lag_max: float
    import_seconds: float
    settle_seconds: float
    behind: list[str]  # products the hub did not hold the final state of after settling
    hub_starts: int
    agent_exit: int | None
    # hub back -> the outbox down to its steady level before the outage (None: not seen)
    recovered_seconds: float | None

    def series(self, key: str) -> list[tuple[float, float]]:
        return [(s.t, float(getattr(s, key))) for s in self.samples]

    def stats(self, key: str) -> dict[str, float]:
        """Start, peak and end of one sampled figure, and its growth per minute over the last
        half of the writer's run."""
        points = self.series(key)
        if not points:
            return {"start": 0.0, "peak": 0.0, "end": 0.0, "growth_per_min": 0.0}
        half = self.settings.seconds / 2
        last_half = [(t, y) for t, y in points if half <= t <= self.settings.seconds]
        return {
            "start": points[0][1],
            "peak": max(y for _, y in points),
            "end": points[-1][1],
            "growth_per_min": slope_per_minute(last_half),
        }

    def plateau(self, key: str) -> tuple[float, float]:
        """(median before the outage, median of the last quarter) of one sampled figure."""
        s = self.settings
        before = [y for t, y in self.series(key) if s.seconds * 0.1 <= t < s.down_at]
        last = [y for t, y in self.series(key) if s.seconds * 0.75 <= t <= s.seconds]
        return (
            statistics.median(before) if before else 0.0,
            statistics.median(last) if last else 0.0,
        )

    def violations(self) -> list[str]:
        """Every bound the run broke, each with the figure; empty when it held."""
        b = self.settings.bounds
        out = []
        outbox = self.stats("outbox")["peak"]
        if outbox > self.settings.products:
            out.append(f"outbox peaked at {outbox:.0f} rows > {self.settings.products} products")
        if self.behind:
            out.append(
                f"{len(self.behind)} product(s) lost: the hub does not hold their final state"
                f" {self.settle_seconds:.0f} s after the writer stopped: {self.behind[:10]}"
            )
        check_growth = self.settings.seconds / 2 >= b.growth_min_minutes * 60
        for key, peak, plateau, growth, unit in (
            ("rss_mb", b.rss_mb, b.rss_plateau_mb, b.rss_growth_mb_per_min, "MB"),
            ("fds", float(b.fds), float(b.fds_plateau), b.fds_growth_per_min, "fds"),
            ("db_mb", b.db_mb, b.db_plateau_mb, b.db_growth_mb_per_min, "MB"),
        ):
            s = self.stats(key)
            if s["peak"] > peak:
                out.append(f"{key} peaked at {s['peak']:.1f} {unit} > {peak:g} {unit}")
            before, last = self.plateau(key)
            if last - before > plateau:
                out.append(
                    f"{key} did not plateau: {last:.1f} {unit} in the last quarter against"
                    f" {before:.1f} {unit} before the outage (more than +{plateau:g} {unit})"
                )
            if check_growth and s["growth_per_min"] > growth:
                out.append(
                    f"{key} grew {s['growth_per_min']:.2f} {unit}/min over the last half"
                    f" > {growth:g} {unit}/min"
                )
        if self.agent_exit not in (0, None):
            out.append(f"the agent exited with {self.agent_exit} when stopped")
        return out

    def summary_rows(self) -> list[list[str]]:
        rows = []
        for key, label, fmt in (  # one row per SAMPLED figure
            ("rss_mb", "agent RSS MB", "{:.1f}"),
            ("fds", "open fds", "{:.0f}"),
            ("db_mb", "state DB + WAL MB", "{:.2f}"),
            ("wal_mb", "  of which WAL MB", "{:.2f}"),
            ("outbox", "outbox rows", "{:.0f}"),
        ):
            s = self.stats(key)
            before, last = self.plateau(key)
            rows.append(
                [
                    label,
                    fmt.format(s["start"]),
                    fmt.format(s["peak"]),
                    fmt.format(s["end"]),
                    fmt.format(before),
                    fmt.format(last),
                    f"{s['growth_per_min']:+.3f}",
                ]
            )
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "settings": dataclasses.asdict(self.settings),
            "changes": self.changes,
            "achieved_rate": self.achieved_rate,
            "stats": {k: self.stats(k) for k in SAMPLED},
            "plateau": {k: self.plateau(k) for k in SAMPLED},
            "settle_seconds": self.settle_seconds,
            "recovered_seconds": self.recovered_seconds,
            "behind": len(self.behind),
            "violations": self.violations(),
        }


def run_soak(
    workdir: Path, settings: SoakSettings, *, progress: Callable[[str], None] | None = None
) -> SoakResult:
    """The whole scenario in `workdir` (which must exist and be empty); every process is stopped
    when it returns or raises."""
    say = progress or (lambda _text: None)
    s = settings
    shop = JsonDirShop(workdir, s.products, seed=s.seed)
    shop.seed()
    rng = random.Random(s.seed)
    samples: list[Sample] = []
    with HubProcess(workdir) as hub:
        config = write_jsondir_config(workdir, hub, backoff_cap=s.backoff_cap)
        with AgentProcess(config) as agent:
            t0 = time.monotonic()
            behind = wait_hub_holds(
                hub, shop.truth, 120.0, agent=agent, what="the first import at the hub"
            )
            if behind:
                raise RuntimeError(f"the hub did not get the first {len(behind)} products")
            import_seconds = time.monotonic() - t0
            say(f"catalog of {s.products} products at the hub after {import_seconds:.1f} s")

            def change(_n: int) -> None:
                shop.change(rng.randint(1, s.products))

            writer = SteadyWriter(s.rate, change)
            writer.start()
            hub_up, went_down, came_back = True, False, False
            back_at: float | None = None
            steady = 0  # the most outbox rows seen before the outage: the steady backlog
            recovered: float | None = None
            next_sample = 0.0
            next_note = 60.0
            try:
                while True:
                    t = time.monotonic() - writer.started
                    if t >= s.seconds:
                        break
                    agent.check_alive()
                    if writer.error is not None:
                        writer.stop()
                    if not went_down and t >= s.down_at:
                        hub.stop()
                        hub_up, went_down = False, True
                        say(f"  {t:5.0f} s: hub down")
                    elif went_down and not came_back and t >= s.down_at + s.down_for:
                        hub.start()
                        hub_up, came_back = True, True
                        back_at = t
                        say(f"  {t:5.0f} s: hub back")
                    if t >= next_sample:
                        point = sample(agent, t, hub_up, writer.done)
                        samples.append(point)
                        if not went_down:
                            steady = max(steady, point.outbox)
                        elif back_at is not None and recovered is None and point.outbox <= steady:
                            recovered = point.t - back_at
                        next_sample += s.sample_every
                    if t >= next_note:
                        last = samples[-1]
                        say(
                            f"  {t:5.0f} s: {writer.done} changes, RSS {last.rss_mb:.1f} MB,"
                            f" fds {last.fds}, DB {last.db_mb:.2f} MB, outbox {last.outbox}"
                        )
                        next_note += 60.0
                    time.sleep(min(0.2, max(0.0, next_sample - t)))
            finally:
                writer.stop()
                if not hub_up:
                    hub.start()
            samples.append(sample(agent, time.monotonic() - writer.started, True, writer.done))
            say(f"writer stopped after {writer.done} changes ({writer.achieved_rate:.1f}/s)")
            t1 = time.monotonic()
            behind = wait_hub_holds(hub, shop.truth, s.settle_limit, agent=agent)
            settle = time.monotonic() - t1
            samples.append(sample(agent, time.monotonic() - writer.started, True, writer.done))
        return SoakResult(
            settings=s,
            samples=samples,
            changes=writer.done,
            achieved_rate=writer.achieved_rate,
            writer_lag_max=writer.lag_max,
            import_seconds=import_seconds,
            settle_seconds=settle,
            behind=behind,
            hub_starts=hub.starts,
            agent_exit=agent.exit_code,
            recovered_seconds=recovered,
        )


def dump_samples(result: SoakResult, path: Path) -> None:
    """The samples as JSON lines (one per sample), for a plot or a closer look."""
    with path.open("w", encoding="utf-8") as out:
        for point in result.samples:
            out.write(json.dumps(dataclasses.asdict(point)) + "\n")
