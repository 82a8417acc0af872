"""WordPress plugin benchmark: what the companion plugin costs a product save.

What it measures, and why: the plugin's rule is that it never slows the store. Its work on a
request is collecting hook calls in memory, then at shutdown one spool file (write, fsync, rename);
while the spool is healthy its status option is rewritten at most once a minute (a database commit
cost about 5 ms per save when it was rewritten every time). Printed:

- the latency of real product updates through WordPress's REST API (PHP's built-in web server,
  one request at a time), with the plugin active and then deactivated, interleaved in rounds so
  drift of the machine hits both alike: median, p95 and mean, and the difference;
- the files written (one per request with the plugin, none without);
- the plugin's own shutdown work per request (its flush: the spool file and any status update),
  timed inside PHP by a bench-only must-use plugin hooked just before and after it: end-to-end
  latency on a shared machine varies by more than the plugin costs, this does not.

How: the site the tests use (tests/wordpress_site.py: Debian's WordPress 6.1 on PHP 8.2, a private
MariaDB on a Unix socket), a spool directory in a temporary folder on the same disk, an
application password for the REST calls. `--rounds R --per-round N`: R rounds of N updates with
the plugin and N without. Needs the Debian packages `make test` installs (run as root).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import say, table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.wordpress_site import WordPress, missing

# Bench-only must-use plugin: the plugin flushes at `shutdown` priority 1000; time 999 -> 1001.
# Loading: muplugins_loaded -> plugins_loaded spans loading the active plugins (only ours).
FLUSH_TIMER = """<?php
$GLOBALS['bridge_bench'] = array();
function bridge_bench_mark( $key ) {
	$GLOBALS['bridge_bench'][ $key ] = hrtime( true );
}
add_action( 'muplugins_loaded', static function () { bridge_bench_mark( 'l0' ); } );
add_action( 'plugins_loaded', static function () { bridge_bench_mark( 'l1' ); }, -1000 );
add_action( 'shutdown', static function () { bridge_bench_mark( 'f0' ); }, 999 );
add_action( 'shutdown', static function () {
	$t = $GLOBALS['bridge_bench'];
	if ( defined( 'REST_REQUEST' ) && isset( $t['l0'], $t['l1'], $t['f0'] ) ) {
		file_put_contents( getenv( 'BRIDGE_BENCH_LOG' ),
			( $t['l1'] - $t['l0'] ) . ' ' . ( hrtime( true ) - $t['f0'] ) . "\\n", FILE_APPEND );
	}
}, 1001 );
"""


def timed_updates(client: httpx.Client, url: str, ids: list[int], tag: str) -> list[float]:
    out = []
    for n, product in enumerate(ids):
        start = time.perf_counter()
        response = client.post(f"{url}/{product}", json={"title": f"{tag} {n}"})
        out.append(time.perf_counter() - start)
        response.raise_for_status()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-round", type=int, default=40)
    args = parser.parse_args()
    if missing():
        sys.exit(f"missing: {', '.join(missing())} (make test installs them when run as root)")
    with tempfile.TemporaryDirectory() as tmp:
        flush_log = Path(tmp) / "flush.log"
        os.environ["BRIDGE_BENCH_LOG"] = str(flush_log)  # inherited by the web server
        site = WordPress(Path(tmp))
        site.mu_plugins["bridge-bench-timer.php"] = FLUSH_TIMER
        site.start()
        try:
            spool = Path(tmp) / "spool"
            (spool / "incoming").mkdir(parents=True)
            site.ops({"op": "option", "name": "bridge_agent_spool_dir", "value": str(spool)})
            ids = site.ops(
                *({"op": "create", "title": f"Bench {n}", "sku": f"B-{n}"} for n in range(10))
            ).value
            (password,) = site.ops({"op": "app_password"}).value
            rest = f"{site.url}/?rest_route=/wp/v2/product"
            with_plugin: list[float] = []
            without: list[float] = []
            flushes: list[float] = []
            loads: list[float] = []
            bare_loads: list[float] = []
            files_with = files_without = 0
            with httpx.Client(auth=("admin", password), timeout=60) as client:
                timed_updates(client, rest, ids, "warm-up")
                flush_log.write_text("")
                for _ in range(args.rounds):
                    before = len(list((spool / "incoming").iterdir()))
                    batch = (ids * args.per_round)[: args.per_round]
                    with_plugin += timed_updates(client, rest, batch, "with")
                    files_with += len(list((spool / "incoming").iterdir())) - before
                    timings = [line.split() for line in flush_log.read_text().splitlines()]
                    loads += [int(load) / 1e9 for load, _ in timings]
                    flushes += [int(flush) / 1e9 for _, flush in timings]
                    site.ops({"op": "deactivate"})
                    flush_log.write_text("")
                    before = len(list((spool / "incoming").iterdir()))
                    without += timed_updates(client, rest, batch, "without")
                    files_without += len(list((spool / "incoming").iterdir())) - before
                    bare_loads += [
                        int(t.split()[0]) / 1e9 for t in flush_log.read_text().split("\n") if t
                    ]
                    flush_log.write_text("")
                    site.ops({"op": "activate"})
        finally:
            site.stop()

    def ms(values: list[float], q: str) -> str:
        if q == "p95":
            return f"{statistics.quantiles(values, n=20)[-1] * 1000:.1f}"
        fn = statistics.median if q == "median" else statistics.fmean
        return f"{fn(values) * 1000:.1f}"

    rows = [
        [
            "plugin active",
            *(ms(with_plugin, q) for q in ("median", "p95", "mean")),
            str(files_with),
        ],
        [
            "plugin inactive",
            *(ms(without, q) for q in ("median", "p95", "mean")),
            str(files_without),
        ],
    ]
    say(f"REST product updates, {len(with_plugin)} per side, one at a time (ms):")
    say(table(["", "median", "p95", "mean", "spool files"], rows))
    diff = statistics.median(with_plugin) - statistics.median(without)
    say(f"difference of the medians: {diff * 1000:+.2f} ms per product save")
    say(
        f"inside PHP, per request with the plugin ({len(flushes)} requests): its flush at shutdown "
        f"median {statistics.median(flushes) * 1000:.2f} ms, p95 {ms(flushes, 'p95')} ms, max "
        f"{max(flushes) * 1000:.2f} ms; loading the active plugins median "
        f"{statistics.median(loads) * 1000:.2f} ms (none active: "
        f"{statistics.median(bare_loads) * 1000:.2f} ms)"
    )


if __name__ == "__main__":
    main()
