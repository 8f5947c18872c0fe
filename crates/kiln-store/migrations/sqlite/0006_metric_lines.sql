-- The agent log line each metric point was read from (sender, line number), so that a log batch
-- sent twice adds its points once. Points from elsewhere have NULLs, which never conflict.
ALTER TABLE metric_points ADD COLUMN sender TEXT;
ALTER TABLE metric_points ADD COLUMN line BIGINT;
CREATE UNIQUE INDEX metric_points_by_line ON metric_points (account, name_key, sender, line, metric);
