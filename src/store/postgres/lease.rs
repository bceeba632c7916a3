//! Leases on the database (`leases`, migration 0002): one statement takes
//! or renews a lease when it is free, expired or already the claimant's,
//! so two servers racing for an expired lease cannot both win (the row
//! lock of the upsert orders them, and the loser's condition then fails).

use tokio_postgres::Client;
use uuid::Uuid;

use super::db_error;
use crate::store::{Lease, LeaseClaim, StoreError};

pub(super) async fn claim(client: &Client, name: &str, claim: &LeaseClaim) -> Result<Lease, StoreError> {
    let seconds = claim.ttl.as_secs_f64();
    let taken = client
        .query_opt(
            "INSERT INTO leases (name, holder, address, expires_at) \
             VALUES ($1, $2, $3, clock_timestamp() + make_interval(secs => $4)) \
             ON CONFLICT (name) DO UPDATE \
             SET holder = EXCLUDED.holder, address = EXCLUDED.address, expires_at = EXCLUDED.expires_at \
             WHERE leases.holder = EXCLUDED.holder OR leases.expires_at < clock_timestamp() \
             RETURNING holder",
            &[&name, &claim.holder, &claim.address, &seconds],
        )
        .await
        .map_err(db_error)?;
    if taken.is_some() {
        return Ok(Lease::Held);
    }
    let holder =
        client.query_opt("SELECT address FROM leases WHERE name = $1", &[&name]).await.map_err(db_error)?;
    match holder {
        Some(row) => Ok(Lease::HeldBy { address: row.get(0) }),
        // Released between the two statements: the next claim takes it.
        None => Ok(Lease::HeldBy { address: String::new() }),
    }
}

pub(super) async fn release(client: &Client, name: &str, holder: Uuid) -> Result<(), StoreError> {
    client
        .execute("DELETE FROM leases WHERE name = $1 AND holder = $2", &[&name, &holder])
        .await
        .map_err(db_error)?;
    Ok(())
}
