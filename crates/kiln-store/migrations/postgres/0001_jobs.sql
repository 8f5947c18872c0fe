-- kiln's job metadata on PostgreSQL: the same tables and columns as the SQLite file (migrations/sqlite,
-- as of 0004), so one SQL text serves both.
CREATE TABLE training_jobs (
    account                  TEXT NOT NULL,
    name_key                 TEXT NOT NULL,
    name                     TEXT NOT NULL,
    arn                      TEXT NOT NULL,
    status                   TEXT NOT NULL,
    secondary_status         TEXT NOT NULL,
    creation_time            DOUBLE PRECISION NOT NULL,
    last_modified_time       DOUBLE PRECISION NOT NULL,
    training_start_time      DOUBLE PRECISION,
    training_end_time        DOUBLE PRECISION,
    failure_reason           TEXT,
    stop_reason              TEXT,
    model_artifacts          TEXT,
    training_time_in_seconds BIGINT,
    billable_time_in_seconds BIGINT,
    warm_pool_status         TEXT,
    warm_pool                TEXT,
    tuning_job_arn           TEXT,
    access_key_id            TEXT,
    unclean                  BIGINT NOT NULL,
    spec                     TEXT NOT NULL,
    transitions              TEXT NOT NULL,
    final_metrics            TEXT NOT NULL,
    run                      TEXT NOT NULL,
    version                  BIGINT NOT NULL,
    PRIMARY KEY (account, name_key)
);
CREATE INDEX training_jobs_by_creation ON training_jobs (account, creation_time);
CREATE INDEX training_jobs_by_status ON training_jobs (status);
CREATE INDEX training_jobs_by_tuning ON training_jobs (account, tuning_job_arn);
CREATE INDEX training_jobs_by_access_key ON training_jobs (access_key_id);
CREATE INDEX training_jobs_unclean ON training_jobs (unclean);

CREATE TABLE tuning_jobs (
    account                   TEXT NOT NULL,
    name_key                  TEXT NOT NULL,
    name                      TEXT NOT NULL,
    arn                       TEXT NOT NULL,
    status                    TEXT NOT NULL,
    strategy                  TEXT NOT NULL,
    creation_time             DOUBLE PRECISION NOT NULL,
    last_modified_time        DOUBLE PRECISION NOT NULL,
    end_time                  DOUBLE PRECISION,
    failure_reason            TEXT,
    completing                TEXT,
    convergence_detected_time DOUBLE PRECISION,
    launched                  BIGINT NOT NULL,
    early_stopped             TEXT NOT NULL,
    judged                    TEXT NOT NULL,
    spec                      TEXT NOT NULL,
    version                   BIGINT NOT NULL,
    PRIMARY KEY (account, name_key)
);
CREATE INDEX tuning_jobs_by_status ON tuning_jobs (status);
CREATE INDEX tuning_jobs_by_creation ON tuning_jobs (account, creation_time);

CREATE TABLE tags (
    account      TEXT NOT NULL,
    resource_key TEXT NOT NULL,                -- lower-cased ARN
    tag_key      TEXT NOT NULL,
    tag_value    TEXT NOT NULL,
    PRIMARY KEY (account, resource_key, tag_key)
);

CREATE TABLE metric_points (
    account  TEXT NOT NULL,
    name_key TEXT NOT NULL,
    metric   TEXT NOT NULL,
    value    DOUBLE PRECISION NOT NULL,
    ts       DOUBLE PRECISION NOT NULL,
    seq      BIGINT NOT NULL
);
CREATE INDEX metric_points_by_job ON metric_points (account, name_key, metric, seq);
