-- Training jobs, their tags. Portable SQL: the same statements run on PostgreSQL.
CREATE TABLE training_jobs (
    account            TEXT NOT NULL,
    name_key           TEXT NOT NULL,          -- lower-cased name: names are unique case-insensitively
    name               TEXT NOT NULL,          -- as the user gave it
    arn                TEXT NOT NULL,
    status             TEXT NOT NULL,
    secondary_status   TEXT NOT NULL,
    creation_time      DOUBLE PRECISION NOT NULL,
    last_modified_time DOUBLE PRECISION NOT NULL,
    training_end_time  DOUBLE PRECISION,
    warm_pool_status   TEXT,
    tuning_job_arn     TEXT,
    spec               TEXT NOT NULL,          -- the request, JSON, with the service's defaults filled in
    state              TEXT NOT NULL,          -- the engine's view of the run, JSON
    version            BIGINT NOT NULL,        -- optimistic concurrency for updates
    PRIMARY KEY (account, name_key)
);
CREATE INDEX training_jobs_by_creation ON training_jobs (account, creation_time);
CREATE INDEX training_jobs_by_status ON training_jobs (status);

CREATE TABLE tags (
    account      TEXT NOT NULL,
    resource_key TEXT NOT NULL,                -- lower-cased ARN
    tag_key      TEXT NOT NULL,
    tag_value    TEXT NOT NULL,
    PRIMARY KEY (account, resource_key, tag_key)
);
