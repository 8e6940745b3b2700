-- WeChat events the gateway does not handle, kept as received (SQLite dialect). Keep in step
-- with ../postgres/0007_wechat_events.sql: same columns; only the types differ.
--
-- Push mode's events are unpublished (spec §11.9): a bind/unbind batch WeChat sends must not
-- be lost while its fields are unknown. The body is an AEAD blob (it may hold phones); the
-- dedupe key is a keyed hash of the whole message, so WeChat's redelivery is kept once.
-- Retention is bounded by the store (30 days).
CREATE TABLE wechat_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event       TEXT    NOT NULL,                        -- the `Event` (or `MsgType`) as sent
    dedupe_key  TEXT    NOT NULL UNIQUE,
    received_at INTEGER NOT NULL,                        -- Unix ms
    body        BLOB    NOT NULL                         -- AEAD blob of the decrypted message
);

CREATE INDEX wechat_events_event ON wechat_events (event, received_at);
CREATE INDEX wechat_events_received ON wechat_events (received_at);
