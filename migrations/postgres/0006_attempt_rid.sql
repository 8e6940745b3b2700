-- WeChat's request id on each attempt (PostgreSQL dialect). Keep in step with
-- ../sqlite/0006_attempt_rid.sql.
--
-- Every non-zero errmsg carries `rid: …` (older answers `hint: [...]`); WeChat's support asks
-- for it, and `POST /cgi-bin/openapi/rid/get` returns what WeChat logged for it (7 days).
ALTER TABLE outbox_attempts ADD COLUMN rid TEXT;
