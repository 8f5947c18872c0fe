-- Hyperparameter tuning jobs: the same row shape as training jobs (secondary_status unused).
CREATE TABLE tuning_jobs (
    account            TEXT NOT NULL,
    name_key           TEXT NOT NULL,
    name               TEXT NOT NULL,
    arn                TEXT NOT NULL,
    status             TEXT NOT NULL,
    secondary_status   TEXT NOT NULL,
    creation_time      DOUBLE PRECISION NOT NULL,
    last_modified_time DOUBLE PRECISION NOT NULL,
    training_end_time  DOUBLE PRECISION,
    warm_pool_status   TEXT,
    tuning_job_arn     TEXT,
    spec               TEXT NOT NULL,
    state              TEXT NOT NULL,
    version            BIGINT NOT NULL,
    PRIMARY KEY (account, name_key)
);
CREATE INDEX tuning_jobs_by_status ON tuning_jobs (status);
CREATE INDEX training_jobs_by_tuning ON training_jobs (account, tuning_job_arn);
