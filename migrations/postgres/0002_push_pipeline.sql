-- The push pipeline (PostgreSQL dialect). Keep in step with ../sqlite/0002_push_pipeline.sql:
-- same tables, columns, constraints and indexes; only the types differ (INTEGER / BLOB
-- there, BIGINT / BYTEA here).
--
-- Timestamps ending in `_at` and `_until` are Unix ms; `action_time` is the event's Unix s.

-- One row per waybill that ever had outbox work. The lease on this row is what guarantees
-- at most one push in flight per waybill across every gateway instance.
CREATE TABLE push_queue (
    waybill_id              TEXT    PRIMARY KEY NOT NULL,
    -- When a worker should next look at this waybill; NULL = nothing pending.
    due_at                  BIGINT,
    lease_owner             TEXT,
    lease_until             BIGINT,
    -- The outbox row being pushed right now: the reverse query answers "as of this push".
    inflight_outbox_id      BIGINT,
    -- The newest node WeChat has accepted, as (action_time, event_id): older ones are not pushed.
    last_pushed_action_time BIGINT,
    last_pushed_event_id    BIGINT
);

CREATE INDEX push_queue_due ON push_queue (due_at);

-- One row per notification to send, written in the same transaction as its event.
CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    kind            TEXT    NOT NULL,                    -- 'pathnotify' (later 'subscribe', 'template')
    waybill_id      TEXT    NOT NULL REFERENCES waybills (waybill_id),
    event_id        BIGINT  REFERENCES events (id),
    action_time     BIGINT  NOT NULL,                    -- Unix s, the event's
    recipient       TEXT,                                -- NULL = the waybill's receiver
    state           TEXT    NOT NULL,                    -- pending | delivered | skipped | dead
    skip_reason     TEXT,
    tries           BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT  NOT NULL,
    -- WeChat's reverse query for this node arrived: proof that the push reached WeChat.
    receipt_at      BIGINT,
    last_error      TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    done_at         BIGINT
);

CREATE INDEX outbox_waybill_state ON outbox (waybill_id, state);
CREATE INDEX outbox_state ON outbox (state);

-- One row per try of an outbox entry.
CREATE TABLE outbox_attempts (
    id          BIGSERIAL PRIMARY KEY,
    outbox_id   BIGINT  NOT NULL REFERENCES outbox (id),
    started_at  BIGINT  NOT NULL,
    duration_ms BIGINT  NOT NULL,
    http_status BIGINT,
    errcode     BIGINT,
    outcome     TEXT    NOT NULL,
    detail      TEXT    NOT NULL                         -- already masked by the caller
);

CREATE INDEX outbox_attempts_outbox ON outbox_attempts (outbox_id);

-- userquery answers, shared by every instance; positive and negative results alike.
CREATE TABLE bindings (
    phone_hash TEXT    PRIMARY KEY NOT NULL,             -- HMAC-SHA256 hex
    bound      BIGINT  NOT NULL,                         -- 0 | 1
    checked_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL
);

-- The access token per appid and the lease that makes one instance its only refresher.
CREATE TABLE access_tokens (
    appid        TEXT    PRIMARY KEY NOT NULL,
    token_sealed BYTEA,                                  -- AEAD blob of the token
    token_hash   TEXT,                                   -- keyed hash: "is it still the current one?"
    expires_at   BIGINT  NOT NULL DEFAULT 0,
    fetched_at   BIGINT  NOT NULL DEFAULT 0,
    lease_owner  TEXT,
    lease_until  BIGINT
);

-- An API WeChat told us to stop calling (45009: daily quota) until the given time.
CREATE TABLE api_pauses (
    api          TEXT    PRIMARY KEY NOT NULL,
    paused_until BIGINT  NOT NULL,
    reason       TEXT    NOT NULL
);
