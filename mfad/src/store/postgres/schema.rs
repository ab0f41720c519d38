//! The database schema: numbered migrations, run at start under an
//! advisory lock.

use deadpool_postgres::Object;

use super::pg_error;
use crate::store::StoreError;

/// Schema versions, applied in order at start; `mfad_schema.version`
/// records how many have run.
const MIGRATIONS: &[&str] = &["CREATE TABLE users (
        name   text COLLATE \"C\" PRIMARY KEY,
        -- NULL only inside the transaction that first locks a new user.
        record text
     );
     CREATE TABLE ip_rules (
        id         bigserial PRIMARY KEY,
        cidr       text NOT NULL,
        bypass_2fa boolean NOT NULL,
        expires_at bigint
     );
     CREATE TABLE meta (
        name  text PRIMARY KEY,
        value text NOT NULL
     );"];

/// The advisory lock key that serialises migrations across hosts ("mfad").
const MIGRATION_LOCK: i64 = 0x6d66_6164;

/// Bring the schema up to date. The advisory lock, held to the end of the
/// transaction, makes hosts starting at once take turns: the first
/// migrates, the others find the schema current.
pub(super) async fn migrate(client: &mut Object, location: &str) -> Result<(), StoreError> {
    let db = |err: tokio_postgres::Error| pg_error(location, &err);
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(db)?;
    // Created once: a role without CREATE on the schema may run mfad after
    // the first start (see the README's fleet section).
    let exists: bool = tx.query_one("SELECT to_regclass('mfad_schema') IS NOT NULL", &[]).await.map_err(db)?.get(0);
    if !exists {
        tx.batch_execute("CREATE TABLE mfad_schema (version integer NOT NULL)").await.map_err(db)?;
    }
    let version: i32 = match tx.query_opt("SELECT version FROM mfad_schema", &[]).await.map_err(db)? {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO mfad_schema (version) VALUES (0)", &[]).await.map_err(db)?;
            0
        }
    };
    let known = MIGRATIONS.len();
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > known {
        return Err(StoreError::Database(format!(
            "database schema version {version} is newer than this mfad ({known}): upgrade mfad on this host"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.batch_execute(sql).await.map_err(db)?;
        let next = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute("UPDATE mfad_schema SET version = $1", &[&next]).await.map_err(db)?;
    }
    tx.commit().await.map_err(db)
}
