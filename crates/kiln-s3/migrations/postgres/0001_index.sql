-- The object index of the embedded S3 store on PostgreSQL: the tables of migrations/sqlite, shared
-- by every `kiln serve` replica of one data directory. Keys are BYTEA so that they compare bytewise,
-- the order S3 lists in; names and ids are TEXT in the "C" collation for the same reason.
CREATE TABLE buckets (
    name     TEXT COLLATE "C" PRIMARY KEY,
    account  TEXT NOT NULL,
    region   TEXT,
    created  BIGINT NOT NULL               -- epoch milliseconds
);

CREATE TABLE objects (
    bucket        TEXT COLLATE "C" NOT NULL REFERENCES buckets (name),
    key           BYTEA NOT NULL,          -- UTF-8 bytes
    size          BIGINT NOT NULL,
    etag          TEXT NOT NULL,           -- without quotes
    last_modified BIGINT NOT NULL,         -- epoch milliseconds
    meta          TEXT NOT NULL,           -- JSON: content type, user metadata, other stored headers
    segments      TEXT NOT NULL,           -- JSON: [[blob id, size], ...], concatenated in order
    PRIMARY KEY (bucket, key)
);

CREATE TABLE uploads (
    upload_id  TEXT COLLATE "C" PRIMARY KEY,
    bucket     TEXT COLLATE "C" NOT NULL REFERENCES buckets (name),
    key        BYTEA NOT NULL,
    initiated  BIGINT NOT NULL,
    meta       TEXT NOT NULL
);
CREATE INDEX uploads_by_key ON uploads (bucket, key, upload_id);

CREATE TABLE parts (
    upload_id     TEXT COLLATE "C" NOT NULL REFERENCES uploads (upload_id),
    part_number   BIGINT NOT NULL,
    blob          TEXT NOT NULL,
    size          BIGINT NOT NULL,
    md5           TEXT NOT NULL,           -- hex: the part's ETag
    last_modified BIGINT NOT NULL,
    PRIMARY KEY (upload_id, part_number)
);
