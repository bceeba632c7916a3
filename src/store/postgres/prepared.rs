//! The writer's prepared statements. A statement sent as text is parsed
//! and planned again on every batch, and costs a round trip of its own
//! before it runs; prepared once on the writer's connection, each of a
//! batch's statements is one round trip and is parsed once per
//! connection (the writer's session plans each for its parameters: see
//! `Writer::new`). The reads' pooled connections have deadpool's cache.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio_postgres::{Client, Statement};

/// The statements prepared on one connection, by their SQL. A statement
/// belongs to the session that prepared it: the writer starts a new set
/// with every new connection.
#[derive(Debug, Default)]
pub(super) struct Prepared {
    /// Locked only to look up or insert, never across an `await`.
    statements: Mutex<HashMap<String, Statement>>,
}

impl Prepared {
    /// `sql`, prepared on `client`'s connection the first time it is
    /// asked for.
    pub(super) async fn get(&self, client: &Client, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.lock().get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql).await?;
        self.lock().insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Statement>> {
        // Every use is a single get or insert: a poisoned map is whole.
        self.statements.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
