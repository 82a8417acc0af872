"""One exception tree for the whole agent, grouped by what the caller should do next.

```
BridgeError
├── ConfigError          bad or missing settings: list every problem, exit 78
├── InputError           an outside input (file, body, reply) that cannot be used: contain it
├── WireError            a hub protocol message that cannot be decoded or is malformed
├── StateStoreError      SQLite problems: fatal for the agent (fail closed, never guess)
│   └── StateStoreLost   the state file was removed or replaced under the running agent
├── HubError             talking to the hub
│   ├── HubUnavailable   connection errors, timeouts, 5xx, 429, garbage: retry with backoff
│   ├── HubAuthFailed    401/403: stop shipping, show in health, lose nothing
│   └── HubRejected      a 4xx that will never succeed for this payload: set the rows aside
└── PlatformError        talking to a store (adapters raise the subclasses)
    ├── PlatformAuthFailed
    ├── PlatformUnavailable
    ├── ProductNotFound
    └── BadWebhook       signature or body invalid: answer 401/400, record nothing
```

Messages say what happened and what to do; they never contain a secret (see `config.Secret`).
"""

from __future__ import annotations

from collections.abc import Sequence


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


class PlatformError(BridgeError):
    """Base for store (platform API) failures."""


class PlatformAuthFailed(PlatformError):
    """The store refused our credentials; the message names the missing permission if known."""


class PlatformUnavailable(PlatformError):
    """The store could not answer now (429, 5xx, timeout); `retry_after` in seconds if known."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProductNotFound(PlatformError):
    """The store says the product does not exist (deleted)."""


class BadWebhook(PlatformError):
    """A webhook whose signature does not verify or whose body cannot be used.

    `status` is what to answer: 401 for a bad or missing signature, 400 for a bad body.
    """

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status
