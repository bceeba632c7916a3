-- Stream names compared byte for byte. Every index of an append's rows
-- is keyed by a stream's name first (`streams`, `stream_entries`,
-- `event_ids`), and under a database's linguistic collation (a cluster
-- created in `en_US.UTF-8` or `C.UTF-8`, the usual defaults) each
-- comparison of a btree descent goes through the C library's collation
-- rules; under "C" it is a `memcmp`. Names are identifiers, never sorted
-- for a reader's language: `GET /streams` already lists them in byte
-- order. Rebuilds the indexes of these columns once, at this migration.
ALTER TABLE streams ALTER COLUMN name TYPE text COLLATE "C";
ALTER TABLE events ALTER COLUMN stream TYPE text COLLATE "C";
ALTER TABLE stream_entries
    ALTER COLUMN stream TYPE text COLLATE "C",
    ALTER COLUMN link_stream TYPE text COLLATE "C";
ALTER TABLE event_ids ALTER COLUMN stream TYPE text COLLATE "C";
-- The primary key of `streams` is in byte order now, and serves the
-- listing by prefix that this index served.
DROP INDEX streams_by_name_bytes;
