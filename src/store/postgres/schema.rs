//! The schema: numbered migrations (`migrations/NNNN_*.sql`), applied in
//! order at start, each once, and the version the database is at in
//! `schema_version`. A database whose schema is newer than this binary's
//! is refused: this binary would not know what its tables mean.
//!
//! Migrations run in one transaction under an advisory lock, so nodes
//! starting together apply each exactly once, and a failed migration
//! leaves the database as it was.

use tokio_postgres::Client;

use super::db_error;
use crate::store::StoreError;

/// The migrations, in order: the schema version after applying the `n`th
/// (1-based) is `n`.
const MIGRATIONS: [&str; 5] = [
    include_str!("migrations/0001_initial.sql"),
    include_str!("migrations/0002_leases.sql"),
    include_str!("migrations/0003_byte_order_names.sql"),
    include_str!("migrations/0004_projection_builds.sql"),
    include_str!("migrations/0005_link_runs.sql"),
];

/// The schema version this binary writes and reads.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The advisory lock migrations hold: any number that no other user of the
/// database takes (it spells "evfeed" in ASCII).
const MIGRATION_LOCK: i64 = 0x6576_6665_6564;

/// Brings the database's schema to [`SCHEMA_VERSION`], or refuses a newer
/// one. Returns the version the database was at (0: it was empty).
pub async fn migrate(client: &mut Client) -> Result<i32, StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(db_error)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        .await
        .map_err(db_error)?;
    let found: Option<i32> = tx
        .query_opt("SELECT version FROM schema_version", &[])
        .await
        .map_err(db_error)?
        .map(|row| row.get(0));
    let from = found.unwrap_or(0);
    if from > SCHEMA_VERSION {
        return Err(StoreError::Invalid(format!(
            "the database's schema is at version {from}, newer than this eventfeed's {SCHEMA_VERSION}: \
             it was written by a newer release; run that release (or a newer one) against it"
        )));
    }
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(usize::try_from(from).unwrap_or(0)) {
        tx.batch_execute(migration).await.map_err(|error| {
            StoreError::Io(format!("schema migration {} failed: {}", index + 1, error_text(&error)))
        })?;
    }
    if found.is_none() {
        tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&SCHEMA_VERSION])
            .await
            .map_err(db_error)?;
    } else if from < SCHEMA_VERSION {
        tx.execute("UPDATE schema_version SET version = $1", &[&SCHEMA_VERSION]).await.map_err(db_error)?;
    }
    tx.commit().await.map_err(db_error)?;
    if from < SCHEMA_VERSION {
        tracing::info!(from, to = SCHEMA_VERSION, "PostgreSQL schema migrated");
    }
    Ok(from)
}

/// An error's message with the database's own detail, when it has one.
pub fn error_text(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            // tokio-postgres says what failed but not why ("error
            // performing TLS handshake"); the why is its sources.
            let mut text = error.to_string();
            let mut cause = std::error::Error::source(error);
            while let Some(source) = cause {
                text.push_str(&format!(": {source}"));
                cause = source.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_is_numbered_in_order() {
        // The version is the number of migrations applied, and each file
        // is named for its place: `0001_…`, `0002_…`.
        assert_eq!(SCHEMA_VERSION, 5);
        assert!(MIGRATIONS[0].contains("CREATE TABLE log_head"));
        assert!(MIGRATIONS[1].contains("CREATE TABLE leases"), "{}", MIGRATIONS[1]);
        assert!(MIGRATIONS[2].contains("DROP INDEX streams_by_name_bytes"), "{}", MIGRATIONS[2]);
        assert!(MIGRATIONS[3].contains("ADD COLUMN building"), "{}", MIGRATIONS[3]);
        assert!(MIGRATIONS[4].contains("CREATE TABLE link_runs"), "{}", MIGRATIONS[4]);
    }
}
