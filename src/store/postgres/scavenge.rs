//! Scavenging: plain `DELETE`s of what no read can see any more (beyond
//! `$maxCount`, older than `$maxAge`, before `$tb`, soft-deleted,
//! tombstoned), one stream per small transaction. Each transaction first
//! locks the head, as a batch of appends does, so a step never races a
//! metadata change that would show again what it removes, and appends
//! wait for at most one step. Stream states (tombstones, numbering) and
//! event ids (spent forever) are kept. PostgreSQL reuses the space of the
//! deleted rows after its (auto)vacuum; nothing is rewritten here, so
//! `keys_copied` is 0.
//!
//! Reports are rows of `scavenges` (JSON), so they outlive a restart; a
//! scavenge that a stop interrupted stays `running` there, and a later
//! one starts over (each step is idempotent).

use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use tokio_postgres::Client;
use uuid::Uuid;

use super::{STATE_COLUMNS, db_error, links, signed, state_from_row, unsigned};
use crate::store::retention::{now_micros, visible_bounds};
use crate::store::{ScavengeReport, ScavengeStarted, ScavengeStatus, StoreError};

/// Starts a scavenge in the background unless one runs. A closed store
/// records one that was interrupted at once and removes nothing.
pub(super) async fn start(
    pool: Pool,
    running: Arc<Mutex<Option<Uuid>>>,
    latest: Arc<Mutex<Option<ScavengeReport>>>,
    closed: bool,
) -> Result<ScavengeStarted, StoreError> {
    let id = Uuid::new_v4();
    {
        let mut running = running.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(id) = *running {
            return Ok(ScavengeStarted::AlreadyRunning(id));
        }
        *running = Some(id);
    }
    let client = pool.get().await.map_err(|error| StoreError::Io(format!("PostgreSQL pool: {error}")));
    let result = match client {
        Ok(client) => {
            let bytes = database_size(&client).await;
            let mut report = ScavengeReport::starting(id, bytes.as_ref().copied().unwrap_or(0));
            if closed {
                report.status = ScavengeStatus::Interrupted;
                report.finished_micros = Some(now_micros());
            }
            match bytes.and(save(&client, &report, &latest).await) {
                Ok(()) if closed => Ok(()),
                Ok(()) => {
                    let running = Arc::clone(&running);
                    tokio::spawn(async move {
                        run(&client, report, &latest).await;
                        *running.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
                    });
                    return Ok(ScavengeStarted::Started(id));
                }
                Err(error) => Err(error),
            }
        }
        Err(error) => Err(error),
    };
    *running.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    result.map(|()| ScavengeStarted::Started(id))
}

/// The report of the scavenge started last, by any node, before this
/// store opened: what `latest_scavenge` answers until one starts here.
pub(super) async fn newest(client: &Client) -> Result<Option<ScavengeReport>, StoreError> {
    let rows = client.query("SELECT report FROM scavenges", &[]).await.map_err(db_error)?;
    let mut newest: Option<ScavengeReport> = None;
    for row in rows {
        let report: ScavengeReport = serde_json::from_str(row.get(0))
            .map_err(|error| StoreError::Corrupt(format!("scavenge report: {error}")))?;
        if newest.as_ref().is_none_or(|newest| report.started_micros > newest.started_micros) {
            newest = Some(report);
        }
    }
    Ok(newest)
}

/// A scavenge's report, if there is one by that id.
pub(super) async fn report(client: &Client, id: Uuid) -> Result<Option<ScavengeReport>, StoreError> {
    let row =
        client.query_opt("SELECT report FROM scavenges WHERE id = $1", &[&id]).await.map_err(db_error)?;
    row.map(|row| {
        serde_json::from_str(row.get(0))
            .map_err(|error| StoreError::Corrupt(format!("scavenge report: {error}")))
    })
    .transpose()
}

/// Records a report in the database, and as this node's latest.
async fn save(
    client: &Client,
    report: &ScavengeReport,
    latest: &Mutex<Option<ScavengeReport>>,
) -> Result<(), StoreError> {
    *latest.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(report.clone());
    let text = serde_json::to_string(report).map_err(|error| StoreError::Io(error.to_string()))?;
    client
        .execute(
            "INSERT INTO scavenges (id, report) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET report = EXCLUDED.report",
            &[&report.scavenge_id, &text],
        )
        .await
        .map_err(db_error)?;
    Ok(())
}

async fn database_size(client: &Client) -> Result<u64, StoreError> {
    let row = client.query_one("SELECT pg_database_size(current_database())", &[]).await.map_err(db_error)?;
    Ok(unsigned(row.get(0)))
}

/// Runs a scavenge to its end and records how it ended.
async fn run(client: &Client, mut report: ScavengeReport, latest: &Mutex<Option<ScavengeReport>>) {
    let outcome = scavenge(client, &mut report).await;
    report.finished_micros = Some(now_micros());
    match outcome {
        Ok(()) => {
            report.status = ScavengeStatus::Completed;
            report.bytes_after = database_size(client).await.ok();
        }
        Err(error) => {
            tracing::warn!(%error, "a scavenge failed");
            report.status = ScavengeStatus::Failed;
            report.error = Some(error.to_string());
        }
    }
    if let Err(error) = save(client, &report, latest).await {
        tracing::warn!(%error, "a scavenge's report could not be saved");
    }
}

/// Every stream, in name order, one step each.
async fn scavenge(client: &Client, report: &mut ScavengeReport) -> Result<(), StoreError> {
    let mut after = String::new();
    loop {
        let rows = client
            .query("SELECT name FROM streams WHERE name > $1 ORDER BY name LIMIT 500", &[&after])
            .await
            .map_err(db_error)?;
        let Some(last) = rows.last() else { return Ok(()) };
        after = last.get(0);
        for row in &rows {
            step(client, row.get(0), report).await?;
            report.streams_scanned += 1;
        }
    }
}

/// Removes what no read of `stream` can see, under the head lock.
async fn step(client: &Client, stream: &str, report: &mut ScavengeReport) -> Result<(), StoreError> {
    client.batch_execute("BEGIN").await.map_err(db_error)?;
    let done = async {
        let row = client
            .query_one(
                "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint FROM log_head FOR UPDATE",
                &[],
            )
            .await
            .map_err(db_error)?;
        let now: i64 = row.get(0);
        let query = format!("SELECT {STATE_COLUMNS} FROM streams WHERE name = $1");
        let Some(state) =
            client.query_opt(&query, &[&stream]).await.map_err(db_error)?.map(|row| state_from_row(&row, 0))
        else {
            return Ok((0, 0));
        };
        let bounds = visible_bounds(&state, now);
        let first = match bounds.max_age_cutoff {
            None => bounds.first,
            Some(cutoff) => client
                .query_one(links::MAX_AGE_BOUNDARY.as_str(), &[&stream, &signed(bounds.first), &cutoff])
                .await
                .map_err(db_error)?
                .get::<_, Option<i64>>(0)
                .map_or(state.next_number, unsigned),
        };
        let events = client
            .query_one(
                "WITH gone AS (DELETE FROM events WHERE stream = $1 AND number < $2 RETURNING 1) \
                 SELECT count(*) FROM gone",
                &[&stream, &signed(first)],
            )
            .await
            .map_err(db_error)?;
        let links_gone = client
            .query_one(links::REMOVE_BELOW.as_str(), &[&stream, &signed(first)])
            .await
            .map_err(db_error)?;
        Ok::<_, StoreError>((unsigned(events.get(0)), unsigned(links_gone.get(0))))
    }
    .await;
    match done {
        Ok((events, links)) => {
            client.batch_execute("COMMIT").await.map_err(db_error)?;
            report.events_removed += events;
            report.links_removed += links;
            Ok(())
        }
        Err(error) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(error)
        }
    }
}
