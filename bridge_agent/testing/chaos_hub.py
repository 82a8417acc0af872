"""The reference hub with a receipt journal, for the chaos oracle (`testing/chaos.py`).

`python -m bridge_agent.testing.chaos_hub --listen HOST:PORT --db FILE --token-file FILE
--journal FILE` serves exactly the reference hub of `bridge_agent.hub` (same application, same
database), plus one middleware that appends a line of JSON to the journal for every batch and
every result post the hub answered 200:

    {"k": "batch", "items": [[id, hash, op, seq, source], ...]}
    {"k": "results", "results": [[optimization id, status], ...]}

Why a journal rather than the hub's counters: the hub remembers only the last result of an
optimisation and folds replays into its state, while the oracle must see *every* delivery to
count duplicates and to prove that no optimisation was reported with two different outcomes.

Each line is one `os.write` on an `O_APPEND` descriptor, made after the hub committed and before
it answers: it is in the kernel when the call returns, so the chaos driver's SIGKILL of the hub
loses no line the agent could have seen acknowledged. A line for a request whose answer never
reached the agent (killed in between) is right too: the hub did commit it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from bridge_agent import wire
from bridge_agent.config import Listen
from bridge_agent.errors import WireError
from bridge_agent.hub.app import make_app


class Journal:
    """Append-only lines of JSON, one `os.write` each (atomic for O_APPEND on a local file)."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def write(self, doc: object) -> None:
        os.write(self.fd, (json.dumps(doc, separators=(",", ":")) + "\n").encode("utf-8"))

    def close(self) -> None:
        os.close(self.fd)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if request.method != "POST" or response.status != 200:
            return response
        try:
            if request.path == "/v1/batches":
                batch = wire.decode_batch(await request.read())
                items = [[i.id, i.hash, i.op, i.seq, i.source] for i in batch.items]
                self.write({"k": "batch", "items": items})
            elif request.path.endswith("/optimizations/results"):
                results = wire.decode_optimization_results(await request.read())
                self.write({"k": "results", "results": [[r.id, r.status] for r in results]})
        except WireError:
            pass  # the hub answered 200 to it, so it decoded there; nothing to journal otherwise
        return response


async def serve(listen: Listen, db: Path, token: str, journal: Journal) -> None:
    """Serve until SIGTERM or SIGINT (SIGKILL is what the chaos driver mostly sends)."""
    app = make_app(db, token)
    app.middlewares.insert(0, journal.middleware)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await web.TCPSite(runner, listen.host, listen.port).start()
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge_agent.testing.chaos_hub")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--token-file", type=Path, required=True)
    parser.add_argument("--journal", type=Path, required=True)
    args = parser.parse_args(argv)
    token = args.token_file.read_text(encoding="utf-8").strip()
    journal = Journal(args.journal)
    try:
        asyncio.run(serve(Listen.parse(args.listen), args.db, token, journal))
    finally:
        journal.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
