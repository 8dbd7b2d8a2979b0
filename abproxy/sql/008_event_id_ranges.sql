-- The smallest and largest event_id of each stored file (ids with no file: file_id -1). A new
-- file's ids are probed in `event_ids` only against the files whose range overlaps theirs, so
-- time-ordered ids (sequences, UUIDv7, ULIDs) are checked against recent files, not every stored id.
CREATE TABLE event_id_ranges (
    file_id BIGINT NOT NULL,
    lo      VARCHAR NOT NULL,
    hi      VARCHAR NOT NULL
);
INSERT INTO event_id_ranges SELECT coalesce(file_id, -1), min(event_id), max(event_id) FROM events
WHERE event_id IS NOT NULL GROUP BY ALL;
