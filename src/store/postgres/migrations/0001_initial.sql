-- The first schema. Every index says which query it serves.

-- The head of the log: one row, locked (`SELECT … FOR UPDATE`) by every
-- batch of writes before it reads any state, so that batches commit one
-- at a time in position order, on any number of nodes.
CREATE TABLE log_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- The next global position: every position below it is committed.
    next_position bigint NOT NULL,
    -- One more per committed batch: the notifier's commit sequence.
    commit_seq bigint NOT NULL,
    -- The newest event's creation time, so that times never go backwards
    -- along the log even if the database's clock does.
    last_created_micros bigint NOT NULL
);
INSERT INTO log_head (next_position, commit_seq, last_created_micros) VALUES (0, 0, 0);

-- Every stream ever written, deleted or described by metadata, with the
-- settings its metadata enforces. The primary key serves every lookup of
-- a stream's state (appends, reads, deletes).
CREATE TABLE streams (
    name text PRIMARY KEY,
    next_number bigint NOT NULL,
    created_position bigint NOT NULL,
    deleted_before bigint NOT NULL,
    soft_deleted boolean NOT NULL,
    tombstoned boolean NOT NULL,
    max_count bigint,
    max_age_secs bigint,
    truncate_before bigint,
    cache_control_secs bigint,
    metadata_number bigint,
    not_public boolean NOT NULL
);
-- Names in byte order, as `list_streams` pages them (the primary key
-- follows the database's collation, which need not be byte order).
CREATE INDEX streams_by_name_bytes ON streams (name COLLATE "C");

-- The log: one row per event, by global position. The primary key serves
-- `$all` pages (one range scan) and the payload of the events a stream
-- page holds (one lookup each, in one query).
CREATE TABLE events (
    position bigint PRIMARY KEY,
    stream text NOT NULL,
    number bigint NOT NULL,
    id uuid NOT NULL,
    event_type text NOT NULL,
    created_micros bigint NOT NULL,
    is_json boolean NOT NULL,
    metadata_is_json boolean NOT NULL,
    data bytea NOT NULL,
    metadata bytea NOT NULL
);

-- What each stream holds, by number: its own events, and in system
-- streams links to events of other streams (`link_stream` and
-- `link_number` name the target, `position` is the target's). The primary
-- key serves stream pages and single events (one range scan) and the
-- `$maxAge` boundary (one range scan from the first number other rules
-- leave visible, since creation times never decrease along a stream).
CREATE TABLE stream_entries (
    stream text NOT NULL,
    number bigint NOT NULL,
    position bigint NOT NULL,
    created_micros bigint NOT NULL,
    link_stream text,
    link_number bigint,
    PRIMARY KEY (stream, number)
);

-- Every event id ever written, per stream: ids are spent forever, even
-- after a delete or a scavenge. The primary key serves the idempotency
-- check of every append (one lookup per id, in one query per batch).
CREATE TABLE event_ids (
    stream text NOT NULL,
    id uuid NOT NULL,
    number bigint NOT NULL,
    PRIMARY KEY (stream, id)
);

-- Every scavenge's report (JSON), by id, kept across restarts.
CREATE TABLE scavenges (
    id uuid PRIMARY KEY,
    report text NOT NULL
);

-- What the database was created with and every node must agree on
-- (the system projections maintained).
CREATE TABLE settings (
    key text PRIMARY KEY,
    value text NOT NULL
);
