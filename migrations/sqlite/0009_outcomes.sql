-- Outcomes back to the carrier (SQLite dialect). Keep in step with
-- ../postgres/0009_outcomes.sql: same tables, columns, constraints and indexes; only the types
-- and the feed position differ.
--
-- Timestamps ending in `_at` and `_until` are Unix ms; `action_time` is the event's Unix s.

-- The carrier's own id for an event (at most 64 characters), echoed on its outcome.
ALTER TABLE events ADD COLUMN carrier_ref TEXT;

-- Why a dead entry is dead: deadline | permanent | retries_spent | unreadable.
ALTER TABLE outbox ADD COLUMN dead_reason TEXT;

-- One row per outbox entry that left `pending` for good, written in the transaction that
-- settled it (never updated afterwards). `id` is the feed position: SQLite has one writer
-- at a time, so an id assigned inside a write transaction is in commit order, and a reader
-- paging by `id > cursor` never passes a row that commits later. AUTOINCREMENT: a position
-- is never reused, not even after retention deleted the newest rows.
CREATE TABLE outcomes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id   INTEGER NOT NULL UNIQUE,                 -- exactly one outcome per entry
    kind        TEXT    NOT NULL,                        -- push | notification
    waybill_id  TEXT    NOT NULL,
    action_type INTEGER NOT NULL,
    action_time INTEGER NOT NULL,                        -- Unix s
    carrier_ref TEXT,
    outcome     TEXT    NOT NULL,                        -- delivered | unbound | dead | coalesced | stale
    reason_code TEXT    NOT NULL,                        -- why, in one word (OUTCOMES.md)
    errcode     INTEGER,                                 -- WeChat's last answer, if any
    errmsg      TEXT,                                    -- already masked
    rid         TEXT,
    attempts    INTEGER NOT NULL,
    decided_at  INTEGER NOT NULL
);

CREATE INDEX outcomes_decided ON outcomes (decided_at);

-- Webhook deliveries: one row per request body (a batch of outcome items), durable, tried
-- on `outcomes.retry_schedule` until a 2xx. `webhook_id` is the Standard Webhooks `webhook-id`:
-- the same on every retry of the row, new for a replay.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id      TEXT    NOT NULL UNIQUE,
    body            TEXT    NOT NULL,                    -- the exact bytes signed and sent
    items           INTEGER NOT NULL,
    -- The oldest item's decided_at: how far behind the carrier is (webhook lag).
    oldest_item_at  INTEGER NOT NULL,
    state           TEXT    NOT NULL,                    -- pending | delivered | failed
    tries           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    lease_owner     TEXT,
    lease_until     INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    done_at         INTEGER
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_done ON webhook_deliveries (done_at);
