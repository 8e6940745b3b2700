-- The push pipeline (SQLite dialect). Keep in step with ../postgres/0002_push_pipeline.sql:
-- same tables, columns, constraints and indexes; only the types differ (INTEGER / BLOB
-- here, BIGINT / BYTEA there).
--
-- Timestamps ending in `_at` and `_until` are Unix ms; `action_time` is the event's Unix s.

-- One row per waybill that ever had outbox work. The lease on this row is what guarantees
-- at most one push in flight per waybill across every gateway instance.
CREATE TABLE push_queue (
    waybill_id              TEXT    PRIMARY KEY NOT NULL,
    -- When a worker should next look at this waybill; NULL = nothing pending.
    due_at                  INTEGER,
    lease_owner             TEXT,
    lease_until             INTEGER,
    -- The outbox row being pushed right now: the reverse query answers "as of this push".
    inflight_outbox_id      INTEGER,
    -- The newest node WeChat has accepted, as (action_time, event_id): older ones are not pushed.
    last_pushed_action_time INTEGER,
    last_pushed_event_id    INTEGER
);

CREATE INDEX push_queue_due ON push_queue (due_at);

-- One row per notification to send, written in the same transaction as its event.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    kind            TEXT    NOT NULL,                    -- 'pathnotify' (later 'subscribe', 'template')
    waybill_id      TEXT    NOT NULL REFERENCES waybills (waybill_id),
    event_id        INTEGER REFERENCES events (id),
    action_time     INTEGER NOT NULL,                    -- Unix s, the event's
    recipient       TEXT,                                -- NULL = the waybill's receiver
    state           TEXT    NOT NULL,                    -- pending | delivered | skipped | dead
    skip_reason     TEXT,
    tries           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    -- WeChat's reverse query for this node arrived: proof that the push reached WeChat.
    receipt_at      INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    done_at         INTEGER
);

CREATE INDEX outbox_waybill_state ON outbox (waybill_id, state);
CREATE INDEX outbox_state ON outbox (state);

-- One row per try of an outbox entry.
CREATE TABLE outbox_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id   INTEGER NOT NULL REFERENCES outbox (id),
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    http_status INTEGER,
    errcode     INTEGER,
    outcome     TEXT    NOT NULL,
    detail      TEXT    NOT NULL                         -- already masked by the caller
);

CREATE INDEX outbox_attempts_outbox ON outbox_attempts (outbox_id);

-- userquery answers, shared by every instance; positive and negative results alike.
CREATE TABLE bindings (
    phone_hash TEXT    PRIMARY KEY NOT NULL,             -- HMAC-SHA256 hex
    bound      INTEGER NOT NULL,                         -- 0 | 1
    checked_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

-- The access token per appid and the lease that makes one instance its only refresher.
CREATE TABLE access_tokens (
    appid        TEXT    PRIMARY KEY NOT NULL,
    token_sealed BLOB,                                   -- AEAD blob of the token
    token_hash   TEXT,                                   -- keyed hash: "is it still the current one?"
    expires_at   INTEGER NOT NULL DEFAULT 0,
    fetched_at   INTEGER NOT NULL DEFAULT 0,
    lease_owner  TEXT,
    lease_until  INTEGER
);

-- An API WeChat told us to stop calling (45009: daily quota) until the given time.
CREATE TABLE api_pauses (
    api          TEXT    PRIMARY KEY NOT NULL,
    paused_until INTEGER NOT NULL,
    reason       TEXT    NOT NULL
);
