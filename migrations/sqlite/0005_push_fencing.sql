-- Receipts belong to one try (SQLite dialect). Keep in step with
-- ../postgres/0005_push_fencing.sql: same columns; only the types differ.
--
-- `push_seq` counts the pushes of an outbox entry that were begun (`begin_push`), never
-- reset, not even by a redrive. WeChat's reverse query reads it with the node in flight and
-- records its receipt only while it is unchanged, so a receipt answered for an earlier try
-- (which WeChat then failed anyway, 932001) can never complete a later one.
ALTER TABLE outbox ADD COLUMN push_seq INTEGER NOT NULL DEFAULT 0;
