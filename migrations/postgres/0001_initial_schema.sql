-- Initial schema (PostgreSQL dialect). Keep in step with ../sqlite/0001_initial_schema.sql:
-- same tables, columns, constraints and indexes; only the types differ
-- (BIGINT / BYTEA here, INTEGER / BLOB there).
--
-- Personal data: `contacts` and `payload` are AEAD blobs and `*_phone_hash` are HMAC hex
-- strings, both produced by the caller; nothing here is plaintext contact information.

CREATE TABLE waybills (
    waybill_id           TEXT    PRIMARY KEY NOT NULL,
    create_time          BIGINT  NOT NULL,               -- Unix s, as sent in pathnotify
    contacts             BYTEA   NOT NULL,               -- AEAD blob: sender and receiver contacts
    receiver_phone_hash  TEXT    NOT NULL,               -- HMAC-SHA256 hex
    sender_phone_hash    TEXT,
    sender_openid        TEXT,
    receiver_openid      TEXT,
    payment_out_trade_no TEXT,
    payment_total_fee    BIGINT,                         -- fen
    created_at           BIGINT  NOT NULL,               -- Unix ms, kept across updates
    updated_at           BIGINT  NOT NULL                -- Unix ms
);

CREATE TABLE events (
    id          BIGSERIAL PRIMARY KEY,
    waybill_id  TEXT    NOT NULL REFERENCES waybills (waybill_id),
    action_type BIGINT  NOT NULL,
    action_time BIGINT  NOT NULL,                        -- Unix s
    payload     BYTEA   NOT NULL,                        -- AEAD blob: action_msg and courier fields
    received_at BIGINT  NOT NULL,                        -- Unix ms
    -- The idempotency key of an ingested event: a retried POST is a duplicate, not a new step.
    CONSTRAINT events_dedupe UNIQUE (waybill_id, action_type, action_time)
);

-- The path of a waybill, newest first (list_events, the reverse query, JSONP).
CREATE INDEX events_waybill_time ON events (waybill_id, action_time);

-- The outbox (one row per notification to send, written in the same transaction as its
-- event inside `record_event`) will be added here by a later migration.

CREATE TABLE callback_exchanges (
    id          BIGSERIAL PRIMARY KEY,
    -- No foreign key: WeChat may ask about a waybill we do not know, and that is recorded too.
    waybill_id  TEXT,
    -- WeChat redelivers a push it thinks failed; the key lets us answer it identically.
    -- UNIQUE allows any number of NULLs (exchanges without a key).
    dedupe_key  TEXT    UNIQUE,
    event       TEXT    NOT NULL,
    received_at BIGINT  NOT NULL,                        -- Unix ms
    result_code BIGINT  NOT NULL,
    summary     TEXT    NOT NULL,                        -- already masked by the caller
    reply       BYTEA,                                   -- AEAD blob of the reply document
    duration_us BIGINT  NOT NULL
);

CREATE INDEX callback_exchanges_waybill ON callback_exchanges (waybill_id, received_at);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
