-- Outcomes back to the carrier (PostgreSQL dialect). Keep in step with
-- ../sqlite/0009_outcomes.sql: same tables, columns, constraints and indexes; only the types
-- and the feed position differ.
--
-- Timestamps ending in `_at` and `_until` are Unix ms; `action_time` is the event's Unix s.

-- The carrier's own id for an event (at most 64 characters), echoed on its outcome.
ALTER TABLE events ADD COLUMN carrier_ref TEXT;

-- Why a dead entry is dead: deadline | permanent | retries_spent | unreadable.
ALTER TABLE outbox ADD COLUMN dead_reason TEXT;

-- One row per outbox entry that left `pending` for good, written in the transaction that
-- settled it (never updated afterwards).
--
-- The feed position is (xid, id). A sequence hands out `id` at insert, not at commit, so
-- ids alone are not in commit order across instances. `xid` is the writing transaction's
-- id; a feed page returns only rows whose xid is below the oldest transaction still running
-- (`pg_snapshot_xmin(pg_current_snapshot())`): every writer below that has committed or
-- aborted, so nothing can later appear behind a cursor handed out.
CREATE TABLE outcomes (
    id          BIGSERIAL PRIMARY KEY,
    xid         XID8    NOT NULL DEFAULT pg_current_xact_id(),
    outbox_id   BIGINT  NOT NULL UNIQUE,                 -- exactly one outcome per entry
    kind        TEXT    NOT NULL,                        -- push | notification
    waybill_id  TEXT    NOT NULL,
    action_type BIGINT  NOT NULL,
    action_time BIGINT  NOT NULL,                        -- Unix s
    carrier_ref TEXT,
    outcome     TEXT    NOT NULL,                        -- delivered | unbound | dead | coalesced | stale
    reason_code TEXT    NOT NULL,                        -- why, in one word (OUTCOMES.md)
    errcode     BIGINT,                                  -- WeChat's last answer, if any
    errmsg      TEXT,                                    -- already masked
    rid         TEXT,
    attempts    BIGINT  NOT NULL,
    decided_at  BIGINT  NOT NULL
);

CREATE INDEX outcomes_position ON outcomes (xid, id);
CREATE INDEX outcomes_decided ON outcomes (decided_at);

-- Webhook deliveries: one row per request body (a batch of outcome items), durable, tried
-- on `outcomes.retry_schedule` until a 2xx. `webhook_id` is the Standard Webhooks `webhook-id`:
-- the same on every retry of the row, new for a replay.
CREATE TABLE webhook_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    webhook_id      TEXT    NOT NULL UNIQUE,
    body            TEXT    NOT NULL,                    -- the exact bytes signed and sent
    items           BIGINT  NOT NULL,
    -- The oldest item's decided_at: how far behind the carrier is (webhook lag).
    oldest_item_at  BIGINT  NOT NULL,
    state           TEXT    NOT NULL,                    -- pending | delivered | failed
    tries           BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    last_status     BIGINT,
    last_error      TEXT,
    lease_owner     TEXT,
    lease_until     BIGINT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    done_at         BIGINT
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_done ON webhook_deliveries (done_at);
