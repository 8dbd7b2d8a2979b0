-- Model lineage recorded with each run (one row per variant), and what abproxy wrote back to a
-- model registry (MLflow). Both append-only, keyed by run like the other ledger tables.
CREATE TABLE lineage (
    run_id           VARCHAR NOT NULL,
    experiment       VARCHAR NOT NULL,
    variant          VARCHAR NOT NULL,
    is_control       BOOLEAN,
    arm_status       VARCHAR,          -- SHIP | NOT_SHIPPED | ROLLBACK | KEEP_RUNNING | NO_DETECTABLE_EFFECT | INVALID | CONTROL | FAILED
    source           VARCHAR NOT NULL, -- config | mlflow | ledger (registry unreachable: last recorded) | unresolved
    ref              VARCHAR,          -- models:/name/3 or models:/name@alias
    model            VARCHAR,
    version          VARCHAR,
    alias            VARCHAR,
    previous_version VARCHAR,          -- the version the alias pointed at in the previous run, when it moved
    model_run_id     VARCHAR,          -- the MLflow run that produced the version
    params           JSON,
    metrics          JSON,             -- the training run's offline metrics
    datasets         JSON,             -- the training run's dataset inputs: name, digest, source, context
    tags             JSON,
    training_data    VARCHAR,
    link             VARCHAR,
    created_at       TIMESTAMP,        -- when the model version was registered
    resolved_at      TIMESTAMP,
    error            VARCHAR
);
CREATE TABLE registry_writes (
    run_id           VARCHAR NOT NULL,
    experiment       VARCHAR NOT NULL,
    variant          VARCHAR,
    model            VARCHAR,
    version          VARCHAR,
    action           VARCHAR NOT NULL, -- tags | alias
    alias            VARCHAR,
    previous_version VARCHAR,
    status           VARCHAR NOT NULL, -- ok | unchanged | skipped | failed
    detail           VARCHAR,
    attempts         INTEGER,
    written_at       TIMESTAMP NOT NULL
);
