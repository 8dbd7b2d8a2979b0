-- The time span of each file's rows in `event_keys` (abproxy/repeats.py): a key holds the event time,
-- so a pass probes its new rows' key hashes only against the keys of the stored files whose
-- [first, last] event time overlaps the new rows'. Maintained with event_keys, rebuilt with it.
CREATE TABLE event_key_spans (
    file_id BIGINT NOT NULL,
    lo      TIMESTAMP NOT NULL,
    hi      TIMESTAMP NOT NULL
);
INSERT INTO event_key_spans SELECT file_id, min(occurred_at), max(occurred_at) FROM events
WHERE file_id <= (SELECT max(file_id) FROM event_keys_meta) GROUP BY file_id;
