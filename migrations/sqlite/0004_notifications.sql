-- Shipping notifications and paid waybills (SQLite dialect). Keep in step with
-- ../postgres/0004_notifications.sql: same tables, columns, constraints and indexes; only the
-- types differ (INTEGER here, BIGINT there).
--
-- Notifications are rows of `outbox` (kind 'subscribe' or 'template', `recipient` = the
-- user's openid), written in the transaction of their event; the tables below hold what only
-- they need. Timestamps ending in `_at` and `_until` are Unix ms, except where marked Unix s.

-- What a notification row is about: the rule that asked for it and the consent it holds.
CREATE TABLE notify_entries (
    outbox_id     INTEGER PRIMARY KEY NOT NULL REFERENCES outbox (id),
    rule          TEXT    NOT NULL,                  -- name of the rule in [notifications]
    role          TEXT    NOT NULL,                  -- sender | receiver
    template_id   TEXT    NOT NULL,
    -- 1 once a one-time subscription was taken for this entry; its retries reuse it.
    consent_held  INTEGER NOT NULL DEFAULT 0,
    -- The legacy credential offered by the entry's last try (template API).
    credential_id INTEGER
);

-- One row per openid with a send in flight: at most one send per user across every
-- instance (WeChat answers concurrent sends to one user with 43108).
CREATE TABLE notify_leases (
    openid      TEXT    PRIMARY KEY NOT NULL,
    lease_owner TEXT    NOT NULL,
    lease_until INTEGER NOT NULL
);

-- The consent ledger: one-time subscriptions a user accepted per template, and what is left.
CREATE TABLE notify_subscriptions (
    openid      TEXT    NOT NULL,
    template_id TEXT    NOT NULL,
    remaining   INTEGER NOT NULL CHECK (remaining >= 0),
    long_term   INTEGER NOT NULL DEFAULT 0,          -- 1: a long-term template, unlimited
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (openid, template_id)
);

-- Idempotency keys of subscription reports: a replayed report is counted once.
CREATE TABLE notify_reports (
    idempotency_key TEXT    PRIMARY KEY NOT NULL,
    openid          TEXT    NOT NULL,
    body_hash       TEXT    NOT NULL,                -- SHA-256 hex of the report
    received_at     INTEGER NOT NULL
);

-- Legacy credentials: a form_id allows one template message, a prepay_id three, within 7 days.
CREATE TABLE notify_credentials (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    openid     TEXT    NOT NULL,
    kind       TEXT    NOT NULL,                     -- form_id | prepay_id
    value      TEXT    NOT NULL UNIQUE,
    max_uses   INTEGER NOT NULL,
    uses       INTEGER NOT NULL DEFAULT 0 CHECK (uses <= max_uses),
    issued_at  INTEGER NOT NULL,                     -- Unix s
    expires_at INTEGER NOT NULL,                     -- Unix s
    discarded  TEXT,                                 -- why WeChat refused it (41028, 41029)
    created_at INTEGER NOT NULL
);

CREATE INDEX notify_credentials_openid ON notify_credentials (openid, expires_at);

-- WeChat Pay notifications acted on, once per transaction_id however often WeChat repeats it.
CREATE TABLE payments (
    transaction_id TEXT    PRIMARY KEY NOT NULL,
    waybill_id     TEXT    NOT NULL REFERENCES waybills (waybill_id),
    out_trade_no   TEXT    NOT NULL,
    total_fee      INTEGER NOT NULL,                 -- fen
    event_id       INTEGER REFERENCES events (id),   -- the 90011 event it recorded
    received_at    INTEGER NOT NULL
);

-- Claiming due notifications per user; finding a waybill by its payment.
CREATE INDEX outbox_kind_due ON outbox (kind, state, next_attempt_at);
CREATE INDEX outbox_recipient ON outbox (recipient, state);
CREATE INDEX waybills_out_trade_no ON waybills (payment_out_trade_no);
