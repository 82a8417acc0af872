"""DDL and migrations of the state store, keyed on `PRAGMA user_version`.

Each entry of `MIGRATIONS` moves the schema from version i to i+1 and runs in one transaction with
the `user_version` bump, so a crash mid-migration leaves the old version intact. Never edit a
released migration: append a new one.

Tables:

- `meta`: small key/value facts (next outbox sequence number, last shipment).
- `mirror`: the current canonical state of every product we have seen (`data` msgpack, `hash`), and
  what the hub acknowledged last (`acked_hash`, `acked_data`): the base of the next `patch`.
  `acked_data` is NULL while the hub holds exactly the current state (`acked_hash = hash`): an ack
  then writes one short column instead of a second copy of the product, and the copy is made only
  when the product changes again. A rowid table, not WITHOUT ROWID: product rows are around a
  kilobyte, and WITHOUT ROWID rows that large spill into overflow pages rewritten on every update.
- `outbox`: one row per product with something to ship (coalescing by key). `seq` is the row's
  version: a fresh, agent-wide unique number on every re-dirtying, used as the protocol `seq` and
  checked on ack so that a change landing while its row is in flight is shipped next time.
  `first_seq` (the seq of the first dirtying, kept when the row is re-dirtied) orders shipping
  so a hot product cannot starve the others; `first_at` is the same moment as a time, for ages.
  `state` is `pending` or `rejected` (set aside with `last_error` until `outbox retry`).
- `cursors`: where incremental streams resume, per store and stream.
- `runs`: resumable runs (import, refresh, verify, repair) with the frozen config, the run's
  `params` (migration 6) and the checkpoint; `state` is `running` (or queued behind another run
  of its store), `paused`, `done`, `failed` or `cancelled`.
- `hints`: products a webhook said changed, committed before the webhook is answered 2xx; the
  hint worker re-fetches them and deletes each hint in the transaction that records the product.
  One row per product (a burst coalesces); `received_at` changes when a new hint arrives, so a
  hint that landed during the re-fetch is never deleted by it. `attempts` counts every failed
  re-fetch (the backoff), `refused` (migration 2) the permanent answers among them (the bound of
  guarantee 7).
- `events`: what operators read: time, level, store, product, HTTP status, message, and
  (migration 6) the `action`.
- `mirror.observed_at` (migration 7): when the store produced the data the row holds.
- `mirror.verified_at` / `mirror.seen_by` (migration 6): when a run last read the product through
  the API, and the source of its last recorded change (verification, sources/runs).
- `journal` (migration 3): the downstream journal, one row per (store, optimisation id) as the
  hub sent it (`fields` JSON), in feed order (`seq`), with its `state` (`received` -> `applying`
  -> `applied` | `conflict` | `failed` | `pending_review` | `rejected_by_reviewer`), the per-field
  `results` (JSON), the product `hash` after the write, and `report` (`none` while there is
  nothing to tell the hub, `unreported` until the hub acknowledges the current state,
  `reported`). `approved` is set by `approvals approve` for an optimisation held in review.
- `replaced` (migration 3): every value the agent replaced in a store (the optimisation, field,
  image, old and new value as JSON, time): what a rollback restores. `rolled_back` (migration 4)
  is the `rollbacks` row that restored the old value (NULL while the agent's value stands), so
  the same value is never rolled back twice.
  The downstream feed's cursor is a `cursors` row (stream `downstream`), moved in the
  transaction that journals the page it follows.
- `rollbacks` (migration 4): one row per optimisation a `bridge-agent rollback` restored values
  of, with the per-field `detail`, the product `hash` after, and `report` (`unreported` until
  the hub acknowledges the `rolled_back` result the daemon's result poster sends).
- `jsonld` (migration 5, the JSON-LD keeper): per (store, product) whose
  `_bridge_jsonld` the agent wrote, the hub's `jsonld.to` it was built with (`hub`), the builder's
  `fingerprint` of its inputs, the `document` written (JSON: what the store must still hold for
  the agent to rewrite it), `seen_hash` (the mirror hash last compared with the fingerprint: a
  row whose product's hash is still that one needs no look), `state` (`kept`, or `foreign` once
  someone else changed the meta: left alone) and `version` (bumped on every write of the row, so
  the keeper's updates cannot overwrite an apply that happened meanwhile). store/jsonld.py.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE mirror (
        store       TEXT NOT NULL,
        id          TEXT NOT NULL,
        data        BLOB,
        hash        TEXT,
        deleted     INTEGER NOT NULL DEFAULT 0,
        updated_at  TEXT,
        sku         TEXT,
        recorded_at INTEGER NOT NULL,
        acked_hash  TEXT,
        acked_data  BLOB,
        PRIMARY KEY (store, id)
    );

    CREATE TABLE outbox (
        store       TEXT NOT NULL,
        id          TEXT NOT NULL,
        seq         INTEGER NOT NULL UNIQUE,
        source      TEXT NOT NULL,
        observed_at INTEGER NOT NULL,
        first_at    INTEGER NOT NULL,
        first_seq   INTEGER NOT NULL,
        state       TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'rejected')),
        attempts    INTEGER NOT NULL DEFAULT 0,
        last_error  TEXT,
        PRIMARY KEY (store, id)
    ) WITHOUT ROWID;
    CREATE INDEX outbox_due ON outbox (state, first_seq);

    CREATE TABLE cursors (
        store      TEXT NOT NULL,
        stream     TEXT NOT NULL,
        value      TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (store, stream)
    ) WITHOUT ROWID;

    CREATE TABLE runs (
        id          INTEGER PRIMARY KEY,
        kind        TEXT NOT NULL,
        store       TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('running', 'paused', 'done', 'failed')),
        config      TEXT NOT NULL,
        checkpoint  TEXT,
        done        INTEGER NOT NULL DEFAULT 0,
        total       INTEGER,
        started_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        finished_at INTEGER,
        error       TEXT,
        report      TEXT
    );
    CREATE INDEX runs_open ON runs (state, store);

    CREATE TABLE hints (
        store       TEXT NOT NULL,
        id          TEXT NOT NULL,
        source      TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        next_at     INTEGER NOT NULL DEFAULT 0,
        last_error  TEXT,
        PRIMARY KEY (store, id)
    ) WITHOUT ROWID;

    CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        at      INTEGER NOT NULL,
        level   TEXT NOT NULL,
        store   TEXT,
        product TEXT,
        status  INTEGER,
        message TEXT NOT NULL
    );
    CREATE INDEX events_at ON events (at);
    """,
    # 2: a hint counts the store's permanent answers apart from its other failures (guarantee
    # 7 gives up after a bound of permanent answers; an outage before them must not count).
    """
    ALTER TABLE hints ADD COLUMN refused INTEGER NOT NULL DEFAULT 0;
    """,
    """
    CREATE TABLE journal (
        store       TEXT NOT NULL,
        id          TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        product     TEXT NOT NULL,
        fields      TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        state       TEXT NOT NULL DEFAULT 'received' CHECK (state IN ('received', 'applying',
                    'applied', 'conflict', 'failed', 'pending_review', 'rejected_by_reviewer')),
        approved    INTEGER NOT NULL DEFAULT 0,
        results     TEXT,
        detail      TEXT,
        hash        TEXT,
        report      TEXT NOT NULL DEFAULT 'none'
                    CHECK (report IN ('none', 'unreported', 'reported')),
        attempts    INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (store, id)
    ) WITHOUT ROWID;
    CREATE INDEX journal_todo ON journal (store, state, seq);
    CREATE INDEX journal_report ON journal (store, report, seq);

    CREATE TABLE replaced (
        id           INTEGER PRIMARY KEY,
        store        TEXT NOT NULL,
        optimization TEXT NOT NULL,
        product      TEXT NOT NULL,
        field        TEXT NOT NULL,
        image        TEXT,
        old_value    TEXT,
        new_value    TEXT,
        at           INTEGER NOT NULL
    );
    CREATE INDEX replaced_product ON replaced (store, product, at);
    CREATE INDEX replaced_optimization ON replaced (store, optimization);
    """,
    # 4: rollback (downstream/rollback.py). A table of its own, not a journal state: the journal
    # keeps what the apply did, and one optimisation may be rolled back in parts.
    """
    CREATE TABLE rollbacks (
        id           INTEGER PRIMARY KEY,
        store        TEXT NOT NULL,
        optimization TEXT NOT NULL,
        at           INTEGER NOT NULL,
        detail       TEXT NOT NULL,
        hash         TEXT,
        report       TEXT NOT NULL DEFAULT 'unreported'
                     CHECK (report IN ('unreported', 'reported'))
    );
    CREATE INDEX rollbacks_report ON rollbacks (store, report, id);

    ALTER TABLE replaced ADD COLUMN rolled_back INTEGER;
    CREATE INDEX replaced_at ON replaced (store, at);
    """,
    # 5: the JSON-LD keeper (downstream/keeper.py): what the agent last wrote to `_bridge_jsonld`.
    """
    CREATE TABLE jsonld (
        store       TEXT NOT NULL,
        product     TEXT NOT NULL,
        hub         TEXT,
        fingerprint TEXT NOT NULL,
        document    TEXT NOT NULL,
        seen_hash   TEXT,
        state       TEXT NOT NULL DEFAULT 'kept' CHECK (state IN ('kept', 'foreign')),
        version     INTEGER NOT NULL DEFAULT 1,
        updated_at  INTEGER NOT NULL,
        PRIMARY KEY (store, product)
    ) WITHOUT ROWID;
    """,
    # 6: runs and verification (issue 13). `runs` gains `params` (what `sync --force`, `--dry-run`
    # or `verify --product` asked for, JSON) and the state `cancelled` (a run `sync --restart`
    # replaced); SQLite cannot change a CHECK, so the table is rebuilt. `mirror.verified_at` is
    # when a run last read the product through the store's API (NULL: never, only a hook or
    # webhook told us), `mirror.seen_by` the source of its last recorded change. `events.action`
    # names what happened (`import`, `verify`, `left_filter`, ...), for `bridge-agent log`.
    """
    CREATE TABLE runs_v6 (
        id          INTEGER PRIMARY KEY,
        kind        TEXT NOT NULL,
        store       TEXT NOT NULL,
        state       TEXT NOT NULL
                    CHECK (state IN ('running', 'paused', 'done', 'failed', 'cancelled')),
        config      TEXT NOT NULL,
        params      TEXT NOT NULL DEFAULT '{}',
        checkpoint  TEXT,
        done        INTEGER NOT NULL DEFAULT 0,
        total       INTEGER,
        started_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        finished_at INTEGER,
        error       TEXT,
        report      TEXT
    );
    INSERT INTO runs_v6 (id, kind, store, state, config, checkpoint, done, total, started_at,
                         updated_at, finished_at, error, report)
        SELECT id, kind, store, state, config, checkpoint, done, total, started_at, updated_at,
               finished_at, error, report FROM runs;
    DROP TABLE runs;
    ALTER TABLE runs_v6 RENAME TO runs;
    CREATE INDEX runs_open ON runs (state, store);

    ALTER TABLE mirror ADD COLUMN verified_at INTEGER;
    ALTER TABLE mirror ADD COLUMN seen_by TEXT;

    ALTER TABLE events ADD COLUMN action TEXT;
    CREATE INDEX events_product ON events (store, product, id);
    """,
    # 7: when the store produced the data a mirror row holds (`observed_at`, epoch ms). A bulk
    # export is a snapshot taken minutes (up to days) before it is read; a stock change bumps
    # no modified date, so only the observation time tells that a webhook's later read is the
    # newer one (store/mirror.py `record`).
    """
    ALTER TABLE mirror ADD COLUMN observed_at INTEGER;
    """,
)
