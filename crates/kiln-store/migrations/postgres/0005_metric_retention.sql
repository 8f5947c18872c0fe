-- Host and PutMetricData points older than the retention ([metrics] retention_days) are deleted
-- by age: an index on the time alone keeps that cheap.
CREATE INDEX custom_metric_points_by_ts ON custom_metric_points (ts);
