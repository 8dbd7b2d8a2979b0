-- The event_id de-duplication structure: one narrow row per stored event id (its 64-bit DuckDB hash
-- and the file that stored it), so a new file is checked against these hashes instead of every
-- stored event_id string; a matching hash is confirmed on the named file's rows (exact).
CREATE TABLE event_ids (
    h       UBIGINT NOT NULL,
    file_id BIGINT NOT NULL
);
CREATE TABLE event_ids_meta (
    duckdb_version VARCHAR NOT NULL       -- hash() is DuckDB's: rebuilt when the version changes
);
INSERT INTO event_ids SELECT hash(event_id), coalesce(file_id, -1) FROM events WHERE event_id IS NOT NULL;
INSERT INTO event_ids_meta SELECT library_version FROM pragma_version();
