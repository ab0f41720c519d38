//! The database schema: numbered migrations, run at start under an
//! advisory lock.

use super::Db;
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
pub(super) async fn migrate(db: &Db<'_>) -> Result<(), StoreError> {
    db.transaction(async |db| {
        let client = db.client;
        let fail = |err| db.error(err);
        client.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(fail)?;
        // Created once: a role without CREATE on the schema may run mfad
        // after the first start (see the README's fleet section).
        let exists: bool =
            client.query_one("SELECT to_regclass('mfad_schema') IS NOT NULL", &[]).await.map_err(fail)?.get(0);
        if !exists {
            client.batch_execute("CREATE TABLE mfad_schema (version integer NOT NULL)").await.map_err(fail)?;
        }
        let version: i32 = match client.query_opt("SELECT version FROM mfad_schema", &[]).await.map_err(fail)? {
            Some(row) => row.get(0),
            None => {
                client.execute("INSERT INTO mfad_schema (version) VALUES (0)", &[]).await.map_err(fail)?;
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
            client.batch_execute(sql).await.map_err(fail)?;
            let next = i32::try_from(i + 1).unwrap_or(i32::MAX);
            client.execute("UPDATE mfad_schema SET version = $1", &[&next]).await.map_err(fail)?;
        }
        Ok(())
    })
    .await
}
