-- Per-unit state (abproxy/state.py): which experiments hold a state table, the definitions it
-- was built for and the load watermark it has folded in. Each experiment's state rows live in
-- their own table (named here), one row per exposed unit with the mergeable aggregates of its
-- metric windows; the registry row and the table change in one transaction.
CREATE TABLE unit_states (
    experiment      VARCHAR PRIMARY KEY,
    table_name      VARCHAR NOT NULL,
    definition_hash VARCHAR NOT NULL,     -- the experiment's definition (config.definition_hash)
    spec            JSON NOT NULL,        -- segments and aggregates the table holds
    file_id         BIGINT NOT NULL,      -- every row of files up to this id is folded in
    as_of           TIMESTAMP NOT NULL,   -- ... up to this event / exposure time
    built_at        TIMESTAMP NOT NULL,   -- last full build
    updated_at      TIMESTAMP NOT NULL,   -- last fold
    exposure_rows   BIGINT NOT NULL,      -- rows of exposures and events seen at the last fold
    event_rows      BIGINT NOT NULL       -- (a mismatch: rows changed outside ingest → rebuild)
);
-- Per load and event type: rows, newest timestamp and the largest lead over the load time
-- (kind 'exposures' has event ''). Small; read by the data-quality checks, the run watermark and
-- the fold (which files may still hold events newer than a state's as_of).
CREATE TABLE load_profile (
    file_id     BIGINT NOT NULL,
    kind        VARCHAR NOT NULL,
    event       VARCHAR NOT NULL,
    loaded_at   TIMESTAMP,
    rows        BIGINT NOT NULL,
    newest      TIMESTAMP,
    max_lead_us BIGINT                    -- max(time - loaded_at) in microseconds
);
