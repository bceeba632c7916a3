//! How a failure of PostgreSQL reaches the rest of the store: a database
//! not there now (nothing was written; retry) or a refusal (a failure).

use super::schema;
use crate::store::StoreError;

/// A failure of the database, as the store reports it: a lost or
/// unreachable database is `Unreachable` (nothing was written; the
/// request may be retried), a refusal by the database is a storage
/// failure.
pub(crate) fn db_error(error: tokio_postgres::Error) -> StoreError {
    if is_unavailable(&error) {
        StoreError::Unreachable(schema::error_text(&error))
    } else {
        StoreError::Io(format!("PostgreSQL: {}", schema::error_text(&error)))
    }
}

/// Whether `error` says the database is not there now (see
/// [`UNAVAILABLE_CLASSES`]) rather than that it refused what was asked:
/// no answer at all, a closed connection, or one of those classes. A
/// backend told of its postmaster's death answers a statement in flight
/// with `57P01`, which is the database going away, not a refusal.
pub(crate) fn is_unavailable(error: &tokio_postgres::Error) -> bool {
    let unavailable_code = match error.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            UNAVAILABLE_CLASSES.iter().any(|class| code.starts_with(class)) || code == READ_ONLY
        }
    };
    unavailable_code || error.is_closed()
}

/// The SQLSTATE classes that mean "the database is not there now", not
/// "the database refused this": connection exceptions (08), insufficient
/// resources such as too many connections (53), and operator
/// intervention (57: a shutdown, a terminated connection, a database
/// still starting); and [`READ_ONLY`]: the server is read-only now (a
/// standby, a primary on its way down in a failover), no primary to write to.
const UNAVAILABLE_CLASSES: [&str; 3] = ["08", "53", "57"];
const READ_ONLY: &str = "25006";
