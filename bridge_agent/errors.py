"""One exception tree for the whole agent, grouped by what the caller should do next.

```
BridgeError
├── ConfigError          bad or missing settings: list every problem, exit 78
├── InputError           an outside input (file, body, reply) that cannot be used: contain it
├── WireError            a hub protocol message that cannot be decoded or is malformed
├── StateStoreError      SQLite problems: fatal for the agent (fail closed, never guess)
│   └── StateStoreLost   the state file was removed or replaced under the running agent
├── DestinationError     delivering an export to a folder, SFTP or S3 (after bounded retries)
├── HubError             talking to the hub
│   ├── HubUnavailable   connection errors, timeouts, 5xx, 429, garbage: retry with backoff
│   ├── HubAuthFailed    401/403: stop shipping, show in health, lose nothing
│   └── HubRejected      a 4xx that will never succeed for this payload: set the rows aside
└── PlatformError        talking to a store (adapters raise the subclasses)
    ├── PlatformAuthFailed   401/403: stop the store, say so
    ├── PlatformUnavailable  429, 5xx, timeouts, resets: try again later (`retry_after`)
    │   └── PagingLoop       the store served a page or cursor again: the walk stops
    ├── PlatformAmbiguous    a write whose fate is unknown: read again, never resend blindly
    ├── PlatformRejected     a 4xx that will never succeed for this item (or a 409 conflict)
    ├── ProductNotFound
    └── BadWebhook       signature or body invalid: answer 401/400, record nothing
```

Store errors carry what the store answered as attributes, never to be parsed back out of the
message: `status` (the HTTP status, None when there was no answer), `headers` (the answer's
headers, read-only, without any that can carry a secret) and `outcome` (the `Outcome` the shared
HTTP layer, `platforms/http.py`, classified the answer as; `permanent` follows from it).

Messages say what happened and what to do; they never contain a secret (see `config.Secret`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum


class BridgeError(Exception):
    """Root of every error the agent raises on purpose."""


class ConfigError(BridgeError):
    """The configuration is unusable. `problems` lists every problem found, one line each."""

    def __init__(self, problems: Sequence[str], *, source: str = "agent.toml") -> None:
        self.problems = tuple(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{lines}")


class InputError(BridgeError):
    """One outside input (a spool file, a webhook body, a reply, a file) that cannot be used.

    Raised by `bridge_agent.inputs`; the caller contains it to that input (sets the file aside,
    answers 400, fails the one item). The message says what is wrong, never quotes the input.
    """


class WireError(BridgeError):
    """A hub protocol message is malformed; the message says which part."""


class StateStoreError(BridgeError):
    """The state store cannot be opened or written."""


class StateStoreLost(StateStoreError):
    """The state file was removed or replaced while the agent ran: stop, commit nothing more."""


class DestinationError(BridgeError):
    """An export could not be delivered to (or rotated at) its destination.

    `destination` names where (`sftp://user@host:22/exports`, never a credential); `permanent`
    says whether asking again can help (a refused host key or credentials, a missing bucket) or
    whether the bounded retries ran out on a transient failure. Nothing partial is left under
    the final name either way.
    """

    def __init__(self, message: str, *, destination: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.destination = destination
        self.permanent = permanent


class HubError(BridgeError):
    """Base for hub failures."""


class HubUnavailable(HubError):
    """The hub could not take the batch now; try again later.

    `retry_after` is the hub's own hint in seconds (from `Retry-After`), if it gave one.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class HubAuthFailed(HubError):
    """The hub refused the agent token (401/403). Shipping stops until the token is fixed."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class HubRejected(HubError):
    """The hub refused this payload for good (413 for one item, 400/422)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class Outcome(StrEnum):
    """What one answer of a store (or its absence) means for the caller: the single vocabulary
    of `platforms/http.py`, of the store request metrics and of `PlatformError.outcome`."""

    OK = "ok"  # 2xx
    AUTH = "auth"  # 401/403: the credentials or their permissions are wrong; the store stops
    RATE_LIMITED = "rate_limited"  # 429: wait (Retry-After, capped), then ask again
    TRANSIENT = "transient"  # 5xx, 408, timeouts, resets: retry with backoff (idempotent only)
    PERMANENT = "permanent"  # a 4xx other than 401/403/404/408/409/429: give up on this item
    CONFLICT = "conflict"  # 409: the resource changed under us
    NOT_FOUND = "not_found"  # 404 (or the platform's own way of saying "no such product")
    AMBIGUOUS = "ambiguous"  # a write that may or may not have been applied: read, then decide
    REDIRECTED = "redirected"  # 3xx: the configured URL is not the API's; not followed
    INVALID = "invalid"  # a 2xx whose body cannot be used (too large, not JSON): not retried


# Response headers that can carry a credential or a session: never kept on an error, which ends
# up in logs and the event log. Names containing these fragments are dropped too.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_SECRET_FRAGMENTS = ("auth", "cookie", "token", "secret", "session", "key", "signature")
_MAX_HEADERS = 64  # an error keeps at most this many headers, each value cut to _MAX_VALUE
_MAX_VALUE = 1024


class SafeHeaders(Mapping[str, str]):
    """Read-only, case-insensitive response headers without any secret-bearing one.

    Names are kept lower-case; a repeated header keeps its first value. Bounded (64 headers of
    1 KiB at most), because an error can be held for a long time (health, the event log)."""

    __slots__ = ("_items",)

    def __init__(self, headers: Mapping[str, str] | Sequence[tuple[str, str]] = ()) -> None:
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        items: dict[str, str] = {}
        for name, value in pairs:
            key = str(name).lower()
            if key in items or not _shareable(key):
                continue
            if len(items) >= _MAX_HEADERS:
                break
            items[key] = str(value)[:_MAX_VALUE]
        self._items = items

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"SafeHeaders({self._items!r})"


def _shareable(name: str) -> bool:
    if name == "www-authenticate":
        return True  # the scheme and realm a 401 asks for: no secret, and the operator's clue
    return name not in _SECRET_HEADERS and not any(f in name for f in _SECRET_FRAGMENTS)


NO_HEADERS = SafeHeaders()


class PlatformError(BridgeError):
    """Base for store (platform API) failures.

    `status`: the HTTP status the store answered (None: no answer, or not an HTTP failure);
    `headers`: that answer's headers (`SafeHeaders`); `outcome`: what the shared HTTP layer made
    of it (None when the error did not come from an answer, e.g. a payload an adapter refused).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        outcome: Outcome | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers: SafeHeaders = NO_HEADERS if headers is None else SafeHeaders(headers)
        self.outcome = outcome

    @property
    def permanent(self) -> bool:
        """Asking again will not help this item (guarantee 7: tried a bounded number of times,
        then recorded and dropped)."""
        return self.outcome is Outcome.PERMANENT


class PlatformAuthFailed(PlatformError):
    """The store refused our credentials; the message names the missing permission if known."""


class PlatformUnavailable(PlatformError):
    """The store could not answer now (429, 5xx, timeout); `retry_after` in seconds if known."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        outcome: Outcome | None = None,
    ) -> None:
        super().__init__(message, status=status, headers=headers, outcome=outcome)
        self.retry_after = retry_after


class PagingLoop(PlatformUnavailable):
    """A listing served a page token, or a page of ids, it had served before: following it
    would loop forever, so the walk stops here (`sync/paging.py`)."""


class PlatformAmbiguous(PlatformError):
    """A write was sent but its answer never came or was a 5xx: it may or may not have been
    applied. Never resent as is; the caller reads the current values and decides again."""


class PlatformRejected(PlatformError):
    """The store refused this request for good (a 4xx other than auth, not-found, 408 or 429;
    `outcome` is `conflict` for a 409)."""


class ProductNotFound(PlatformError):
    """The store says the product does not exist (deleted)."""


class BadWebhook(PlatformError):
    """A webhook whose signature does not verify or whose body cannot be used.

    `status` is what to answer: 401 for a bad or missing signature, 400 for a bad body.
    """

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message, status=status)
        self.status: int = status
