"""Serving an aiohttp app so that no client can hold one of the agent's listeners for ever.

aiohttp alone waits as long as a client likes: for the rest of a request head (slowloris), for
the rest of a body whose length was promised (`Content-Length: 100` and one byte sent), and for
the next request on a kept-alive connection (its default is an hour); and it accepts any number
of connections. Every listener of the agent (`/healthz` and friends, the webhook receiver) is
served through `listening()`, which bounds each of those waits and the number of connections:

- **Head.** The head of a request must be complete within `header_timeout`: for a new connection
  from its start (a connection that sends nothing is not idle, it is a request that does not
  come), on a kept-alive one from the first byte after the previous response.
- **Body.** Once the head is in and while the handler runs, the whole body must have arrived
  within `body_timeout`. The clock stops when the body is complete, whether the handler has read
  it yet or not: only the client's slowness counts, never the handler's own work.
- **Send.** A response stalled behind a client that stops reading (the transport asked us to
  pause writing) must resume within `body_timeout`: the body deadline, in the other direction.
- **Idle.** A kept-alive connection with no request in progress lasts `idle_timeout`.
- **Cap.** At most `max_connections` connections are served at once. One more is answered a
  fixed `503` with `Connection: close` and `Retry-After` straight from the socket, then closed
  once the client has finished sending or after one second: a sender sees *why* it was turned
  away (a reset looks like a network fault), and the client's request is drained before closing
  so that the kernel does not reset the connection under the 503. At most `max_connections` such
  refusals linger at once; beyond that a connection is closed at once, so the file descriptors
  a listener can hold stay bounded whatever a client does.

A deadline closes the connection: no `408` is sent, because a client that is not sending what it
promised is rarely reading, and a response written beside aiohttp's own could interleave with
one a handler has begun. Each close is counted in `bridge_listener_connections_closed_total`
(by listener and reason) and logged once, at info at most once a minute per listener and reason
(with how many were folded into debug lines since), so a flood of slow clients cannot flood the
journal; an idle connection closing is routine and logged at debug only.

How it hooks into aiohttp 3 through public API only: the runner's `web.Server` is a protocol
factory (the documented low-level server); `listening()` binds the socket itself with
`loop.create_server` and puts a `_Connection` protocol between the transport and aiohttp's
protocol, forwarding every `asyncio.Protocol` call. That is where bytes arrive (head and idle
clocks), where write pauses show (send clock) and where connections are counted. The end of a
head is seen by an outermost middleware, which receives the request once aiohttp has parsed its
head, and the body's arrival by `request.content.is_eof()`. The same middleware turns the
`ConnectionResetError` a handler gets from reading a body whose connection is gone into a quiet
end: aiohttp would log it with a traceback at error level, one per slow or vanished client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol, cast

import structlog
from aiohttp import StreamReader, web

from bridge_agent.metrics import Metrics

log = structlog.get_logger("bridge_agent.listener")

CLOSED = "bridge_listener_connections_closed_total"
OPEN = "bridge_listener_connections"
REFUSE_LINGER = 1.0  # how long a refused client may take to finish sending before the close
CLOSE_GRACE = 1.0  # a close that waits on unsent bytes becomes an abort after this long
LOG_EVERY = 60.0  # seconds between info lines per listener and reason

_BUSY_BODY = b"too many connections to this listener; try again shortly\n"
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"\r\n" + _BUSY_BODY
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Limits(Protocol):
    """What a listener is bounded by; `[health]` and `[webhooks]` settings both have it."""

    @property
    def header_timeout(self) -> float: ...
    @property
    def body_timeout(self) -> float: ...
    @property
    def idle_timeout(self) -> float: ...
    @property
    def max_connections(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """Plain limits, for callers without settings at hand."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 75.0
    max_connections: int = 256


@asynccontextmanager
async def listening(
    app: web.Application,
    host: str,
    port: int,
    *,
    name: str,
    limits: Limits,
    metrics: Metrics | None = None,
) -> AsyncIterator[int]:
    """Serve `app` on host:port within `limits` until the block ends; yields the bound port.

    `name` labels the listener in metrics and logs (`health`, `webhooks`). The app must not be
    started yet: the listener adds its middleware before aiohttp freezes it.
    """
    listener = Listener(name, limits, metrics)
    app.middlewares.insert(0, listener.middleware)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    try:
        server = runner.server
        assert server is not None  # set by setup()
        loop = asyncio.get_running_loop()
        bound = await loop.create_server(
            lambda: _Connection(listener, server), host, port, reuse_address=True
        )
        try:
            yield int(bound.sockets[0].getsockname()[1])  # the real port when asked for port 0
        finally:
            bound.close()
            listener.close_refused()
    finally:
        # Graceful for the connections served: aiohttp lets running handlers finish.
        await asyncio.shield(runner.cleanup())


class Listener:
    """The connections of one listener: the cap, the counts, and the quiet logging of closes."""

    def __init__(self, name: str, limits: Limits, metrics: Metrics | None) -> None:
        self.name = name
        self.limits = limits
        self.metrics = metrics
        self.served: dict[asyncio.BaseTransport, _Connection] = {}
        self.refused: set[_Connection] = set()
        self._logged: dict[str, _LogSlot] = {}
        if metrics is not None:
            metrics.counter(CLOSED, "Connections a listener closed on a deadline or refused.")
            metrics.gauge(OPEN, "Connections a listener serves now.")
            metrics.set(OPEN, 0, listener=name)

    def opened(self, conn: _Connection, transport: asyncio.BaseTransport) -> None:
        self.served[transport] = conn
        self._count_open()

    def lost(self, conn: _Connection, transport: asyncio.BaseTransport) -> None:
        self.refused.discard(conn)
        if self.served.pop(transport, None) is not None:
            self._count_open()

    def _count_open(self) -> None:
        if self.metrics is not None:
            self.metrics.set(OPEN, len(self.served), listener=self.name)

    def closed(self, reason: str, peer: str) -> None:
        """Count and log one connection closed for `reason`, at info at most once a minute."""
        if self.metrics is not None:
            self.metrics.inc(CLOSED, listener=self.name, reason=reason)
        slot = self._logged.setdefault(reason, _LogSlot())
        now = time.monotonic()
        # An idle kept-alive connection closing is routine (a client's pool outlived it): debug.
        if reason != "idle_timeout" and now - slot.last_info >= LOG_EVERY:
            log.info(
                "listener_connection_closed",
                listener=self.name,
                reason=reason,
                peer=peer,
                folded_since_last=slot.folded,
            )
            slot.last_info, slot.folded = now, 0
        else:
            slot.folded += 1
            log.debug("listener_connection_closed", listener=self.name, reason=reason, peer=peer)

    def close_refused(self) -> None:
        for conn in list(self.refused):
            conn.abort()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the end of a request's head and the end of the handler on its connection."""
        transport = request.transport
        conn = None if transport is None else self.served.get(transport)
        if conn is None:  # the connection is already gone: nobody to answer
            raise web.HTTPRequestTimeout()
        conn.request_started(request.content)
        try:
            return await handler(request)
        except ConnectionResetError:
            if not conn.gone:
                raise
            # The client went away (or was cut off) mid-request; the answer goes nowhere.
            log.debug("listener_request_abandoned", listener=self.name, path=request.path)
            raise web.HTTPRequestTimeout() from None
        finally:
            conn.request_finished()


@dataclass
class _LogSlot:
    last_info: float = field(default=-LOG_EVERY)
    folded: int = 0


class _Connection(asyncio.Protocol):
    """One accepted connection: a clock in front of aiohttp's own protocol.

    Phases: `head` (waiting for a request head), `busy` (a handler runs), `idle` (kept alive
    between requests). One deadline runs per phase; a second one runs while writing is paused.
    """

    def __init__(self, listener: Listener, make_inner: Callable[[], asyncio.Protocol]) -> None:
        self._listener = listener
        self._make_inner = make_inner
        self._inner: asyncio.Protocol | None = None  # None for a refused connection
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._phase = "head"
        self._body: StreamReader | None = None
        # The last request's body, kept after its handler ends: aiohttp goes on reading an
        # unread body after the response ("lingering", up to 10 s), and nothing wakes that read
        # when the connection is lost, so its task would outlive the connection and the agent.
        self._unread: StreamReader | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._stall: asyncio.TimerHandle | None = None
        self.gone = False  # closed by us or lost

    # -- asyncio.Protocol, forwarded to aiohttp --------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)
        listener, limits = self._listener, self._listener.limits
        if len(listener.served) >= limits.max_connections:
            self._refuse(transport)
            return
        listener.opened(self, transport)
        self._inner = self._make_inner()
        self._inner.connection_made(transport)
        self._arm("header_timeout", limits.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return  # a refused client's request: read only so that the close is not a reset
        if self._phase == "idle" and data:
            self._phase = "head"
            self._arm("header_timeout", self._listener.limits.header_timeout)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is None:
            return False  # the refused client is done sending: close now
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()
        if self._stall is None:
            self._stall = self._loop.call_later(
                self._listener.limits.body_timeout, self._cut, "send_timeout"
            )

    def resume_writing(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        for handle in (self._deadline, self._stall):
            if handle is not None:
                handle.cancel()
        self._deadline = self._stall = None
        if self._transport is not None:
            self._listener.lost(self, self._transport)
        self._body = None
        if self._inner is not None:
            self._inner.connection_lost(exc)
        unread, self._unread = self._unread, None
        if unread is not None and not unread.is_eof() and unread.exception() is None:
            unread.feed_eof()  # ends the lingering read: nothing more will come

    # -- the request's phases, told by the middleware --------------------------------------

    def request_started(self, body: StreamReader) -> None:
        if self.gone:
            return
        self._phase = "busy"
        self._body = self._unread = body
        if body.is_eof():
            self._disarm()
        else:
            self._arm("body_timeout", self._listener.limits.body_timeout)

    def request_finished(self) -> None:
        self._body = None
        if not self.gone:
            self._phase = "idle"
            self._arm("idle_timeout", self._listener.limits.idle_timeout)

    # -- deadlines -------------------------------------------------------------------------

    def _arm(self, reason: str, seconds: float) -> None:
        self._disarm()
        self._deadline = self._loop.call_later(seconds, self._expired, reason)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self, reason: str) -> None:
        self._deadline = None
        if reason == "body_timeout" and self._body is not None and self._body.is_eof():
            return  # the body arrived in time; the handler's own work is not on the clock
        self._cut(reason)

    def _cut(self, reason: str) -> None:
        transport = self._transport
        if self.gone or transport is None:
            return
        self.gone = True
        self._listener.closed(reason, _peer(transport))
        if reason == "send_timeout":
            transport.abort()  # the client reads nothing: waiting to flush would wait for ever
            return
        transport.close()
        self._deadline = self._loop.call_later(CLOSE_GRACE, transport.abort)

    def _refuse(self, transport: asyncio.Transport) -> None:
        listener = self._listener
        listener.closed("over_capacity", _peer(transport))
        if len(listener.refused) >= listener.limits.max_connections:
            self.gone = True
            transport.abort()
            return
        listener.refused.add(self)
        transport.write(BUSY)
        if transport.can_write_eof():
            transport.write_eof()
        self._deadline = self._loop.call_later(REFUSE_LINGER, transport.abort)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)
