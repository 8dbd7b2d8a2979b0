-- The analysis ledger: append-only, one row per run plus long result tables keyed by run.
CREATE TABLE runs (
    run_id          VARCHAR PRIMARY KEY,
    job_id          VARCHAR,
    experiment      VARCHAR NOT NULL,
    started_at      TIMESTAMP NOT NULL,
    finished_at     TIMESTAMP,
    as_of           TIMESTAMP NOT NULL,
    status          VARCHAR NOT NULL,     -- ok | failed
    error           VARCHAR,
    definition_hash VARCHAR,
    definitions     JSON,
    watermark       JSON,
    code_version    VARCHAR,
    git_commit      VARCHAR,
    parameters      JSON,
    method          VARCHAR,
    decision        VARCHAR,
    ship_variant    VARCHAR,
    reasons         JSON,
    srm_p           DOUBLE,
    units           JSON,
    days_running    DOUBLE
);
CREATE TABLE results (
    run_id          VARCHAR NOT NULL,
    experiment      VARCHAR NOT NULL,
    metric          VARCHAR NOT NULL,
    role            VARCHAR NOT NULL,     -- primary | guardrail | secondary
    variant         VARCHAR NOT NULL,
    control         VARCHAR NOT NULL,
    segment         VARCHAR NOT NULL,     -- '' overall, else the segment dimension
    segment_value   VARCHAR NOT NULL,     -- '' overall
    control_units   BIGINT,
    variant_units   BIGINT,
    control_mean    DOUBLE,
    variant_mean    DOUBLE,
    abs_effect      DOUBLE,
    abs_ci_lo       DOUBLE,
    abs_ci_hi       DOUBLE,
    rel_effect      DOUBLE,
    rel_ci_lo       DOUBLE,
    rel_ci_hi       DOUBLE,
    p_value         DOUBLE,
    p_value_adjusted DOUBLE,
    significant     BOOLEAN,
    cuped_variance_reduction DOUBLE,
    mde             DOUBLE,
    mde_rel         DOUBLE,
    method          VARCHAR,
    warning         VARCHAR,
    details         JSON
);
CREATE TABLE series (
    run_id      VARCHAR NOT NULL,
    experiment  VARCHAR NOT NULL,
    metric      VARCHAR NOT NULL,
    variant     VARCHAR NOT NULL,
    kind        VARCHAR NOT NULL,         -- daily | cumulative (by exposure day)
    day         DATE NOT NULL,
    control_units BIGINT,
    variant_units BIGINT,
    abs_effect  DOUBLE,
    abs_se      DOUBLE,
    rel_effect  DOUBLE,
    rel_ci_lo   DOUBLE,
    rel_ci_hi   DOUBLE
);
CREATE TABLE health (
    run_id      VARCHAR NOT NULL,
    experiment  VARCHAR NOT NULL,
    check_name  VARCHAR NOT NULL,
    status      VARCHAR NOT NULL,         -- ok | warn | fail
    metric      VARCHAR,
    segment     VARCHAR,
    variant     VARCHAR,
    value       DOUBLE,
    threshold   DOUBLE,
    detail      VARCHAR
);
CREATE TABLE job_runs (
    job_id      VARCHAR PRIMARY KEY,
    kind        VARCHAR NOT NULL,         -- ingest | analyze | run
    started_at  TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    status      VARCHAR NOT NULL,         -- running | ok | failed | interrupted
    files_loaded BIGINT DEFAULT 0,
    rows_loaded BIGINT DEFAULT 0,
    experiments_analyzed BIGINT DEFAULT 0,
    errors      JSON
);
