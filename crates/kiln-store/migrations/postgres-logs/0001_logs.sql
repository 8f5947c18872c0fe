-- CloudWatch-Logs-style storage on PostgreSQL: the tables of migrations/sqlite-logs.
CREATE TABLE log_groups (
    account       TEXT NOT NULL,
    name          TEXT NOT NULL,
    creation_time BIGINT NOT NULL,
    PRIMARY KEY (account, name)
);

CREATE TABLE log_streams (
    account              TEXT NOT NULL,
    group_name           TEXT NOT NULL,
    name                 TEXT NOT NULL,
    creation_time        BIGINT NOT NULL,
    first_event_time     BIGINT,
    last_event_time      BIGINT,
    last_ingestion_time  BIGINT,
    stored_bytes         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account, group_name, name)
);

CREATE TABLE log_events (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- ingestion order
    account        TEXT NOT NULL,
    group_name     TEXT NOT NULL,
    stream         TEXT NOT NULL,
    ts             BIGINT NOT NULL,
    ingestion_time BIGINT NOT NULL,
    message        TEXT NOT NULL
);
CREATE INDEX log_events_by_stream ON log_events (account, group_name, stream, ts, seq);
CREATE INDEX log_events_by_group ON log_events (account, group_name, ts, seq);
