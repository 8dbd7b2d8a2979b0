-- Repeated rows (abproxy/repeats.py): the events that repeat an earlier stored row's key (event,
-- unit, time, value: the duplicate check's key), n per key and file, so the data-quality profile of
-- the per-unit state counts duplicates without grouping every event by that key. Found through
-- `event_keys` (the 64-bit DuckDB hash of each stored row's key and its file; a matching hash is
-- confirmed on the rows of that file: exact). Maintained per load, like `load_profile`, up to
-- `event_keys_meta.file_id`; rebuilt from the events when DuckDB's hash() may have changed.
CREATE TABLE event_keys (
    h       UBIGINT NOT NULL,
    file_id BIGINT NOT NULL
);
CREATE TABLE event_repeats (
    event       VARCHAR NOT NULL,
    unit_id     VARCHAR NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    value       DOUBLE,
    file_id     BIGINT NOT NULL,
    n           BIGINT NOT NULL        -- rows of this file that repeat the key (its first row excluded)
);
CREATE TABLE event_keys_meta (
    file_id        BIGINT NOT NULL,    -- every events row of files up to this id is in event_keys
    duckdb_version VARCHAR NOT NULL
);
