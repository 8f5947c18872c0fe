-- Metric points parsed from training-job logs by MetricDefinitions.
CREATE TABLE metric_points (
    account  TEXT NOT NULL,
    name_key TEXT NOT NULL,                -- lower-cased training job name
    metric   TEXT NOT NULL,
    value    DOUBLE PRECISION NOT NULL,
    ts       DOUBLE PRECISION NOT NULL,    -- epoch seconds of the log line
    seq      BIGINT NOT NULL               -- order within the job
);
CREATE INDEX metric_points_by_job ON metric_points (account, name_key, metric, seq);
