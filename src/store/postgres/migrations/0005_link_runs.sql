-- The links of the system streams (`$ce-`, `$et-`, `$streams`) move out
-- of `stream_entries` into runs: one row for the links one batch adds to
-- one system stream, at most 20 of them, never crossing a multiple of 20
-- (`store/postgres/links.rs`). Two of every appended event's five rows
-- were links; now a batch writes one row per system stream and 20 links.
-- Then `stream_entries` goes (below): an event is two rows, its own and
-- its id's.
--   `first_number`: the number of the run's first link in `stream`;
--   `created_micros`: the creation time all its links share;
--   `positions`, `link_streams`, `link_numbers`: each link's target, by
--   position, stream and number, in number order.
-- The primary key serves every read of a range of links: the run holding
-- number n starts after n - 20, so a range is one index range scan.
CREATE TABLE link_runs (
    stream text COLLATE "C" NOT NULL,
    first_number bigint NOT NULL,
    created_micros bigint NOT NULL,
    positions bigint[] NOT NULL,
    link_streams text[] COLLATE "C" NOT NULL,
    link_numbers bigint[] NOT NULL,
    PRIMARY KEY (stream, first_number)
);
-- The links already written, one run each.
INSERT INTO link_runs (stream, first_number, created_micros, positions, link_streams, link_numbers)
    SELECT stream, number, created_micros, ARRAY[position], ARRAY[link_stream], ARRAY[link_number]
    FROM stream_entries WHERE link_stream IS NOT NULL;
-- What is left of `stream_entries` is the streams' own events, whose
-- rows repeat columns of `events`: an index of `events` by stream and
-- number serves their reads instead, one row and one statement fewer per
-- event (the index is unique, as the table's key was).
CREATE UNIQUE INDEX events_by_stream ON events (stream, number);
DROP TABLE stream_entries;
