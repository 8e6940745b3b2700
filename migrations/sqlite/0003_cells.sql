-- Landing-page cells set through the backoffice API (SQLite dialect). Keep in step with
-- ../postgres/0003_cells.sql: same table, columns and constraints; only the types differ.
--
-- `PUT /v1/cells` replaces every row in one transaction and writes the `meta` row
-- 'cells_updated_at' (Unix ms). While that row exists, this table, even when empty, is the
-- list the JSONP lookup serves and the `[[cells]]` of the config file are not used.
CREATE TABLE cells (
    ordinal        INTEGER PRIMARY KEY NOT NULL,         -- display order, from 0
    cell_key       TEXT    NOT NULL UNIQUE,              -- at most 20 characters (spec §8)
    name           TEXT    NOT NULL,
    link           TEXT    NOT NULL,                     -- with {waybill_id} / {openid} placeholders
    condition_json TEXT                                  -- the cell's `when` as JSON; NULL = always
);
