-- The scheduler asks for Available warm pools on every pass.
CREATE INDEX training_jobs_by_warm_pool ON training_jobs (warm_pool_status);
