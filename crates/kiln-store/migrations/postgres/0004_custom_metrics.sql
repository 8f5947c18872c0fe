-- Points sent with CloudWatch's PutMetricData: one row a value, in the sender's account. A series
-- is (namespace, metric, dims); dims is the canonical JSON of its dimensions, [[name, value], ...]
-- sorted by name.
CREATE TABLE custom_metric_points (
    account   TEXT NOT NULL,
    namespace TEXT NOT NULL,
    metric    TEXT NOT NULL,
    dims      TEXT NOT NULL,
    value     DOUBLE PRECISION NOT NULL,
    ts        DOUBLE PRECISION NOT NULL  -- epoch seconds
);
CREATE INDEX custom_metric_points_by_series ON custom_metric_points (account, namespace, metric, dims, ts);
