-- The worker reads a waybill's pending path-node entries, and the release recomputes its
-- due time from them (`WHERE waybill_id = ? AND state = 'pending' AND kind = 'pathnotify'`,
-- `MIN(next_attempt_at)`). With only (waybill_id, state) to choose from, SQLite's planner
-- (no statistics) took outbox_kind_due (kind, state, next_attempt_at) instead and walked
-- every pending entry of every waybill: milliseconds per push, growing with the backlog.
-- This index matches all three equalities and serves the MIN from the index itself.
DROP INDEX outbox_waybill_state;
CREATE INDEX outbox_waybill_pending ON outbox (waybill_id, state, kind, next_attempt_at);
