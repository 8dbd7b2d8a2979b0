-- Core tables: the ingest file ledger, exposures, events and rejected rows.
-- Timestamps are stored as TIMESTAMP in UTC (sessions run with TimeZone = 'UTC').
CREATE TABLE files (
    file_id        BIGINT PRIMARY KEY,
    path           VARCHAR NOT NULL,      -- relative to the workspace inbox
    kind           VARCHAR NOT NULL,      -- exposures | events
    size           BIGINT,
    sha256         VARCHAR,
    status         VARCHAR NOT NULL,      -- loaded | failed | duplicate | changed
    rows_loaded    BIGINT DEFAULT 0,
    rows_rejected  BIGINT DEFAULT 0,
    rows_duplicate BIGINT DEFAULT 0,
    loaded_at      TIMESTAMP NOT NULL,
    message        VARCHAR
);
CREATE TABLE exposures (
    unit_id     VARCHAR NOT NULL,
    experiment  VARCHAR NOT NULL,
    variant     VARCHAR NOT NULL,
    exposed_at  TIMESTAMP NOT NULL,
    file_id     BIGINT,
    loaded_at   TIMESTAMP
);
CREATE TABLE events (
    unit_id     VARCHAR NOT NULL,
    event       VARCHAR NOT NULL,
    occurred_at TIMESTAMP NOT NULL,
    value       DOUBLE,
    event_id    VARCHAR,
    file_id     BIGINT,
    loaded_at   TIMESTAMP
);
CREATE TABLE rejected_rows (
    file_id     BIGINT,
    path        VARCHAR,
    row_number  BIGINT,
    reason      VARCHAR,
    raw         VARCHAR
);
