-- WeChat's request id on each attempt (SQLite dialect). Keep in step with
-- ../postgres/0006_attempt_rid.sql.
--
-- Every non-zero errmsg carries `rid: …` (older answers `hint: [...]`); WeChat's support asks
-- for it, and `POST /cgi-bin/openapi/rid/get` returns what WeChat logged for it (7 days).
ALTER TABLE outbox_attempts ADD COLUMN rid TEXT;
