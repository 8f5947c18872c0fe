-- Typed rows: what the engine reads and filters on becomes a column of its own, the lists stay JSON
-- documents (transitions, final metrics, the run's hosts), and tuning jobs get a table shape of their
-- own. Rows written by earlier versions are carried over.
CREATE TABLE training_jobs_v2 (
    account                  TEXT NOT NULL,
    name_key                 TEXT NOT NULL,          -- lower-cased name: names are unique case-insensitively
    name                     TEXT NOT NULL,          -- as the user gave it
    arn                      TEXT NOT NULL,
    status                   TEXT NOT NULL,          -- TrainingJobStatus
    secondary_status         TEXT NOT NULL,          -- SecondaryStatus
    creation_time            DOUBLE PRECISION NOT NULL,
    last_modified_time       DOUBLE PRECISION NOT NULL,
    training_start_time      DOUBLE PRECISION,
    training_end_time        DOUBLE PRECISION,
    failure_reason           TEXT,
    stop_reason              TEXT,                   -- StopReason, while Stopping
    model_artifacts          TEXT,
    training_time_in_seconds BIGINT,
    billable_time_in_seconds BIGINT,
    warm_pool_status         TEXT,                   -- WarmPoolResourceStatus, for ListTrainingJobs' filter
    warm_pool                TEXT,                   -- JSON: WarmPoolStatus
    tuning_job_arn           TEXT,
    access_key_id            TEXT,                   -- the job's temporary S3 key, looked up by SigV4
    unclean                  BIGINT NOT NULL,        -- 1: ended with hosts the executor has not cleaned up
    spec                     TEXT NOT NULL,          -- JSON: the request with the service's defaults
    transitions              TEXT NOT NULL,          -- JSON: SecondaryStatusTransitions
    final_metrics            TEXT NOT NULL,          -- JSON: FinalMetricDataList
    run                      TEXT NOT NULL,          -- JSON: the engine's bookkeeping of hosts
    version                  BIGINT NOT NULL,        -- optimistic concurrency for updates
    PRIMARY KEY (account, name_key)
);

INSERT INTO training_jobs_v2
SELECT account, name_key, name, arn, status, secondary_status, creation_time, last_modified_time,
       json_extract(state, '$.TrainingStartTime'), training_end_time,
       json_extract(state, '$.FailureReason'),
       CASE json_extract(state, '$.Run.stop_reason')
            WHEN 'Stopped' THEN 'Requested' WHEN 'MaxRuntimeExceeded' THEN 'MaxRuntimeExceeded' END,
       json_extract(state, '$.ModelArtifacts'),
       json_extract(state, '$.TrainingTimeInSeconds'), json_extract(state, '$.BillableTimeInSeconds'),
       warm_pool_status, json_extract(state, '$.WarmPoolStatus'), tuning_job_arn,
       json_extract(state, '$.Run.access_key[0]'),
       CASE WHEN status IN ('Completed', 'Failed', 'Stopped')
             AND json_array_length(COALESCE(json_extract(state, '$.Run.hosts'), '[]')) > 0 THEN 1 ELSE 0 END,
       spec,
       COALESCE(json_extract(state, '$.SecondaryStatusTransitions'), '[]'),
       COALESCE(json_extract(state, '$.FinalMetricDataList'), '[]'),
       COALESCE(json_extract(state, '$.Run'), '{}'),
       version
FROM training_jobs;

DROP TABLE training_jobs;
ALTER TABLE training_jobs_v2 RENAME TO training_jobs;
CREATE INDEX training_jobs_by_creation ON training_jobs (account, creation_time);
CREATE INDEX training_jobs_by_status ON training_jobs (status);
CREATE INDEX training_jobs_by_tuning ON training_jobs (account, tuning_job_arn);
CREATE INDEX training_jobs_by_access_key ON training_jobs (access_key_id);
CREATE INDEX training_jobs_unclean ON training_jobs (unclean);

CREATE TABLE tuning_jobs_v2 (
    account                   TEXT NOT NULL,
    name_key                  TEXT NOT NULL,
    name                      TEXT NOT NULL,
    arn                       TEXT NOT NULL,
    status                    TEXT NOT NULL,         -- HyperParameterTuningJobStatus
    strategy                  TEXT NOT NULL,         -- HyperParameterTuningJobStrategyType
    creation_time             DOUBLE PRECISION NOT NULL,
    last_modified_time        DOUBLE PRECISION NOT NULL,
    end_time                  DOUBLE PRECISION,
    failure_reason            TEXT,
    completing                TEXT,                  -- why the tuner is completing the job
    convergence_detected_time DOUBLE PRECISION,
    launched                  BIGINT NOT NULL,       -- children created so far
    early_stopped             TEXT NOT NULL,         -- JSON: names of children stopped early
    judged                    TEXT NOT NULL,         -- JSON: child -> intermediate values judged
    spec                      TEXT NOT NULL,         -- JSON: the request with the service's defaults
    version                   BIGINT NOT NULL,
    PRIMARY KEY (account, name_key)
);

INSERT INTO tuning_jobs_v2
SELECT account, name_key, name, arn, status,
       COALESCE(json_extract(spec, '$.HyperParameterTuningJobConfig.Strategy'), 'Bayesian'),
       creation_time, last_modified_time, training_end_time,
       json_extract(state, '$.failure_reason'), json_extract(state, '$.completing'),
       json_extract(state, '$.convergence_detected_time'),
       COALESCE(json_extract(state, '$.launched'), 0),
       COALESCE(json_extract(state, '$.early_stopped'), '[]'),
       COALESCE(json_extract(state, '$.judged'), '{}'),
       spec, version
FROM tuning_jobs;

DROP TABLE tuning_jobs;
ALTER TABLE tuning_jobs_v2 RENAME TO tuning_jobs;
CREATE INDEX tuning_jobs_by_status ON tuning_jobs (status);
CREATE INDEX tuning_jobs_by_creation ON tuning_jobs (account, creation_time);
