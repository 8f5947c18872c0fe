-- The object index of the embedded S3 store. Object bytes live in blob files named by `segments`;
-- a row here is what makes an object visible, so an upload becomes visible in one commit.
CREATE TABLE buckets (
    name     TEXT PRIMARY KEY,
    account  TEXT NOT NULL,
    region   TEXT,
    created  INTEGER NOT NULL              -- epoch milliseconds
);

CREATE TABLE objects (
    bucket        TEXT NOT NULL REFERENCES buckets (name),
    key           BLOB NOT NULL,           -- UTF-8 bytes: BLOBs compare bytewise, the order S3 lists in
    size          INTEGER NOT NULL,
    etag          TEXT NOT NULL,           -- without quotes
    last_modified INTEGER NOT NULL,        -- epoch milliseconds
    meta          TEXT NOT NULL,           -- JSON: content type, user metadata, other stored headers
    segments      TEXT NOT NULL,           -- JSON: [[blob id, size], ...], concatenated in order
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID;

CREATE TABLE uploads (
    upload_id  TEXT PRIMARY KEY,
    bucket     TEXT NOT NULL REFERENCES buckets (name),
    key        BLOB NOT NULL,
    initiated  INTEGER NOT NULL,
    meta       TEXT NOT NULL
);
CREATE INDEX uploads_by_key ON uploads (bucket, key, upload_id);

CREATE TABLE parts (
    upload_id     TEXT NOT NULL REFERENCES uploads (upload_id),
    part_number   INTEGER NOT NULL,
    blob          TEXT NOT NULL,
    size          INTEGER NOT NULL,
    md5           TEXT NOT NULL,           -- hex: the part's ETag
    last_modified INTEGER NOT NULL,
    PRIMARY KEY (upload_id, part_number)
) WITHOUT ROWID;
