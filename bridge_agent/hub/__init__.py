"""The reference hub: hub protocol v1 (design.md section 6) on aiohttp and SQLite.

It is the embedded default hub (`bridge-agent hub`), the peer of the agent in end-to-end tests and
benchmarks, and the executable reading of the protocol: where the design says "the hub is
idempotent on (agent, seq) and on (store, id, hash)", this package is what that means.

- `app.py`: HTTP routes, auth, body limits, the long-poll feed; `make_app` and `serve`.
- `ingest.py`: the rules of a batch (idempotence, upsert, patch, delete), pure.
- `db.py`: `HubDB`, every SQL statement, one transaction per batch.
"""

from bridge_agent.hub.app import make_app, serve
from bridge_agent.hub.db import HubDB

__all__ = ["HubDB", "make_app", "serve"]
