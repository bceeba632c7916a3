//! The system streams' links, stored as runs (`link_runs`, migration 0005).
//!
//! A batch that appends 20 events of one type to a stream adds 20 links to
//! its `$ce-` stream and 20 to its `$et-` stream. As rows of their own
//! they were two of every event's five rows, and about a third of a
//! batch's cost to the database (`bench/run postgres`: 20-event batches at
//! 36,060 events/s with every projection on, 54,424 with none). So the
//! links one batch adds to one system stream are one row: the number of
//! the first, the batch's creation time, and the targets' positions,
//! streams and numbers as arrays, as the sled store keeps them under one
//! key.
//!
//! A run holds at most [`RUN`] links and never crosses a multiple of it
//! (the default page size), so a page that starts at a multiple of 20 is
//! one row, and the run holding number `n` starts after `n - RUN`: every
//! range of numbers is one index range scan of the primary key
//! `(stream, first_number)`. Its links share one creation time (a batch's,
//! or, in a projection's build, their events'), which is what the
//! `$maxAge` boundary needs.
//!
//! Reads see links and a stream's own events (`events`, by its index on
//! stream and number) as one set of entries
//! ([`entries_with_events_between`]), so the rest of the backend reads
//! entries as before.

use std::collections::HashMap;
use std::sync::LazyLock;

use tokio_postgres::Client;

use super::prepared::Prepared;
use crate::store::projections::is_system_stream;

/// The most links of one run, and the multiple no run crosses.
pub(super) const RUN: i64 = 20;

/// SQL for the entries of the stream `stream` numbered `low..=high` (SQL
/// expressions, each used more than once), its own events (from
/// `events`) and its links, in no order, each with its event: the
/// stream's own, or a link's target (`NULL`s when it is gone). Columns:
/// the entry's `number, position, created_micros, link_stream,
/// link_number` (the last two `NULL` for an event of the stream's own),
/// then the event's `event_position, event_stream, event_number, id,
/// event_type, event_created, is_json, metadata_is_json, data, metadata`.
/// Two index range scans; a link's target is one lookup by position.
pub(super) fn entries_with_events_between(stream: &str, low: &str, high: &str) -> String {
    format!(
        "({own} \
         UNION ALL \
         SELECT r.first_number + u.i - 1, u.position, r.created_micros, u.link_stream, u.link_number, \
                v.position, v.stream, v.number, v.id, v.event_type, v.created_micros, v.is_json, \
                v.metadata_is_json, v.data, v.metadata \
           FROM link_runs r CROSS JOIN LATERAL unnest(r.positions, r.link_streams, r.link_numbers) \
                WITH ORDINALITY AS u(position, link_stream, link_number, i) \
                LEFT JOIN events v ON v.position = u.position \
           WHERE r.stream = {stream} AND r.first_number > ({low}) - {RUN} AND r.first_number <= {high} \
             AND r.first_number + u.i - 1 BETWEEN {low} AND {high})",
        own = own_events_between(stream, low, high)
    )
}

/// Whether the stream named `name` may hold links: only a system stream
/// does (only projections link, into `$` streams, and an import takes
/// links for no other).
pub(super) fn can_hold_links(name: &str) -> bool {
    is_system_stream(name)
}

/// [`entries_with_events_between`] as a stream that may hold links
/// (`with_links`, see [`can_hold_links`]) needs it, or else its own events
/// alone ([`own_events_between`]), the same columns in one index range
/// scan: PostgreSQL sets up the links' part of the statement on every run
/// even where it finds nothing.
pub(super) fn entries_between(with_links: bool, stream: &str, low: &str, high: &str) -> String {
    if with_links {
        entries_with_events_between(stream, low, high)
    } else {
        format!("({})", own_events_between(stream, low, high))
    }
}

/// A stream's own events numbered `low..=high`, with the columns of
/// [`entries_with_events_between`].
fn own_events_between(stream: &str, low: &str, high: &str) -> String {
    format!(
        "SELECT number, position, created_micros, NULL::text AS link_stream, NULL::bigint AS link_number, \
                position AS event_position, stream AS event_stream, number AS event_number, id, event_type, \
                created_micros AS event_created, is_json, metadata_is_json, data, metadata \
           FROM events WHERE stream = {stream} AND number BETWEEN {low} AND {high}"
    )
}

/// The `$maxAge` boundary of `$1`: the first number from `$2` on whose
/// entry was created at `$3` or later, `NULL` for none. One row.
pub(super) static MAX_AGE_BOUNDARY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT min(number) FROM ( \
           (SELECT number FROM events WHERE stream = $1 AND number >= $2 AND created_micros >= $3 \
            ORDER BY number LIMIT 1) \
           UNION ALL \
           (SELECT greatest(first_number, $2) FROM link_runs WHERE stream = $1 AND first_number > $2 - {RUN} \
              AND first_number + cardinality(positions) > $2 AND created_micros >= $3 \
            ORDER BY first_number LIMIT 1)) b"
    )
});

/// Removes the links of `$1` numbered below `$2`, cutting the run that
/// holds `$2`; one row: how many were removed. Each part a range of the
/// primary key.
pub(super) static REMOVE_BELOW: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH cut AS (SELECT first_number FROM link_runs WHERE stream = $1 AND first_number > $2::bigint - {RUN} \
           AND first_number < $2 AND first_number + cardinality(positions) > $2), \
         trimmed AS (UPDATE link_runs SET first_number = $2, positions = positions[$2 - first_number + 1:], \
           link_streams = link_streams[$2 - first_number + 1:], \
           link_numbers = link_numbers[$2 - first_number + 1:] \
           WHERE stream = $1 AND first_number IN (SELECT first_number FROM cut)), \
         gone AS (DELETE FROM link_runs WHERE stream = $1 AND first_number < $2 \
           AND first_number + cardinality(positions) <= $2 RETURNING cardinality(positions) AS links) \
         SELECT (SELECT coalesce(sum(links), 0) FROM gone)::bigint \
           + (SELECT coalesce(sum($2 - first_number), 0) FROM cut)::bigint"
    )
});

/// Removes the links of `$1` numbered `$2` and above, cutting the run that
/// holds `$2`. Each part a range of the primary key. (`$2` is cast where
/// PostgreSQL first meets it, the `WHERE` of the `UPDATE`: `$2 - 20` alone
/// would make it an `integer`.)
pub(super) static REMOVE_FROM: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH trimmed AS (UPDATE link_runs SET positions = positions[1:$2 - first_number], \
           link_streams = link_streams[1:$2 - first_number], link_numbers = link_numbers[1:$2 - first_number] \
           WHERE stream = $1 AND first_number > $2::bigint - {RUN} AND first_number < $2 \
             AND first_number + cardinality(positions) > $2) \
         DELETE FROM link_runs WHERE stream = $1 AND first_number >= $2"
    )
});

/// The links a batch (or a build's step) adds, gathered into runs.
#[derive(Default)]
pub(super) struct LinkRuns {
    runs: Vec<Run>,
    /// The run each system stream's next link may extend.
    open: HashMap<String, usize>,
}

/// One row of `link_runs`.
pub(super) struct Run {
    pub(super) stream: String,
    pub(super) first_number: i64,
    pub(super) created_micros: i64,
    pub(super) positions: Vec<i64>,
    pub(super) link_streams: Vec<String>,
    pub(super) link_numbers: Vec<i64>,
}

impl Run {
    fn next_number(&self) -> i64 {
        self.first_number + self.positions.len() as i64
    }
}

impl LinkRuns {
    pub(super) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The runs, as rows of `link_runs` (for a `COPY`).
    pub(super) fn into_rows(self) -> impl Iterator<Item = Run> {
        self.runs.into_iter()
    }

    /// Adds link `number` of `stream`, created at `created_micros`, to the
    /// event at `position`, number `link_number` of `link_stream`.
    pub(super) fn push(
        &mut self,
        (stream, number): (&str, i64),
        position: i64,
        created_micros: i64,
        (link_stream, link_number): (&str, i64),
    ) {
        let extends = self.open.get(stream).is_some_and(|&index| {
            let run = &self.runs[index];
            run.next_number() == number && number % RUN != 0 && run.created_micros == created_micros
        });
        if !extends {
            self.open.insert(stream.to_owned(), self.runs.len());
            self.runs.push(Run {
                stream: stream.to_owned(),
                first_number: number,
                created_micros,
                positions: Vec::new(),
                link_streams: Vec::new(),
                link_numbers: Vec::new(),
            });
        }
        let run = &mut self.runs[self.open[stream]];
        run.positions.push(position);
        run.link_streams.push(link_stream.to_owned());
        run.link_numbers.push(link_number);
    }

    /// Writes the runs with one statement: the links as flat arrays, each
    /// run a slice of them.
    pub(super) async fn write(
        &self,
        client: &Client,
        prepared: &Prepared,
    ) -> Result<(), tokio_postgres::Error> {
        if self.runs.is_empty() {
            return Ok(());
        }
        let statement = prepared
            .get(
                client,
                "INSERT INTO link_runs (stream, first_number, created_micros, positions, link_streams, link_numbers) \
                 SELECT t.stream, t.first_number, t.created_micros, ($6::bigint[])[t.low:t.high], \
                 ($7::text[])[t.low:t.high], ($8::bigint[])[t.low:t.high] \
                 FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::int[], $5::int[]) \
                 AS t(stream, first_number, created_micros, low, high)",
            )
            .await?;
        let count = self.runs.len();
        let (mut streams, mut firsts, mut created) = (Vec::with_capacity(count), Vec::new(), Vec::new());
        let (mut lows, mut highs) = (Vec::with_capacity(count), Vec::with_capacity(count));
        let (mut positions, mut link_streams, mut link_numbers) = (Vec::new(), Vec::new(), Vec::new());
        for run in &self.runs {
            streams.push(run.stream.as_str());
            firsts.push(run.first_number);
            created.push(run.created_micros);
            // Slices are 1-based and inclusive.
            lows.push(positions.len() as i32 + 1);
            positions.extend_from_slice(&run.positions);
            link_streams.extend(run.link_streams.iter().map(String::as_str));
            link_numbers.extend_from_slice(&run.link_numbers);
            highs.push(positions.len() as i32);
        }
        client
            .execute(
                &statement,
                &[&streams, &firsts, &created, &lows, &highs, &positions, &link_streams, &link_numbers],
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs_of(links: &[(&str, i64, i64)]) -> Vec<(String, i64, usize)> {
        let mut runs = LinkRuns::default();
        for &(stream, number, created) in links {
            runs.push((stream, number), number, created, ("Order-1", number));
        }
        runs.runs.iter().map(|run| (run.stream.clone(), run.first_number, run.positions.len())).collect()
    }

    #[test]
    fn consecutive_links_of_one_stream_and_time_are_one_run() {
        let links: Vec<_> = (3..10).map(|n| ("$ce-Order", n, 7)).collect();
        assert_eq!(runs_of(&links), [("$ce-Order".to_owned(), 3, 7)]);
    }

    #[test]
    fn a_run_never_crosses_a_multiple_of_twenty() {
        let links: Vec<_> = (15..45).map(|n| ("$ce-Order", n, 7)).collect();
        assert_eq!(
            runs_of(&links),
            [
                ("$ce-Order".to_owned(), 15, 5),
                ("$ce-Order".to_owned(), 20, 20),
                ("$ce-Order".to_owned(), 40, 5)
            ]
        );
    }

    #[test]
    fn interleaved_streams_keep_their_own_runs_and_a_new_time_starts_a_run() {
        let links = [("$ce-A", 0, 1), ("$et-B", 4, 1), ("$ce-A", 1, 1), ("$et-B", 5, 2), ("$ce-A", 3, 1)];
        assert_eq!(
            runs_of(&links),
            [
                ("$ce-A".to_owned(), 0, 2),
                ("$et-B".to_owned(), 4, 1),
                ("$et-B".to_owned(), 5, 1),
                ("$ce-A".to_owned(), 3, 1)
            ]
        );
    }
}
