//! The default store: one SQLite file in WAL mode, fsynced on every commit
//! (a verification is acknowledged only once its state change is on disk).

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Change, Store, StoreError, StoredIpRule, UserRecord};

/// Schema versions, applied in order at start; `PRAGMA user_version` records
/// how many have run.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE users (
        name   TEXT PRIMARY KEY NOT NULL,
        record TEXT NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE ip_rules (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        cidr       TEXT NOT NULL,
        bypass_2fa INTEGER NOT NULL,
        expires_at INTEGER
     );",
];

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

fn db(err: rusqlite::Error) -> StoreError {
    StoreError::Database(err.to_string())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Database(format!("cannot create {}: {e}", dir.display())))?;
        }
        let conn = Connection::open(path).map_err(db)?;
        Self::setup(conn)
    }

    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::setup(Connection::open_in_memory().map_err(db)?)
    }

    fn setup(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(Duration::from_secs(10)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
        // FULL: in WAL mode NORMAL may lose the last commits on power loss,
        // which could let a used code through again.
        conn.pragma_update(None, "synchronous", "FULL").map_err(db)?;
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(db)?;
        if version > MIGRATIONS.len() {
            return Err(StoreError::Database(format!(
                "database schema version {version} is newer than this mfad ({})",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive).map_err(db)?;
            tx.execute_batch(sql).map_err(db)?;
            tx.pragma_update(None, "user_version", i + 1).map_err(db)?;
            tx.commit().map_err(db)?;
        }
        Ok(SqliteStore { conn: Mutex::new(conn) })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.conn.lock().map_err(|_| StoreError::Database("connection mutex poisoned".into()))
    }
}

fn decode(user: &str, json: &str) -> Result<UserRecord, StoreError> {
    serde_json::from_str(json)
        .map_err(|e| StoreError::Corrupt { user: user.to_string(), reason: e.to_string() })
}

fn encode(record: &UserRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError::Database(e.to_string()))
}

impl Store for SqliteStore {
    fn get_user(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        let conn = self.lock()?;
        let json: Option<String> = conn
            .query_row("SELECT record FROM users WHERE name = ?1", [user], |r| r.get(0))
            .optional()
            .map_err(db)?;
        json.map(|j| decode(user, &j)).transpose()
    }

    fn update_user(
        &self,
        user: &str,
        change: &mut dyn FnMut(Option<&UserRecord>) -> Change,
    ) -> Result<(), StoreError> {
        let mut conn = self.lock()?;
        // IMMEDIATE takes the write lock before reading, so another process
        // sharing the file cannot interleave between our read and write.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db)?;
        let json: Option<String> = tx
            .query_row("SELECT record FROM users WHERE name = ?1", [user], |r| r.get(0))
            .optional()
            .map_err(db)?;
        let current = json.map(|j| decode(user, &j)).transpose()?;
        match change(current.as_ref()) {
            Change::Keep => return Ok(()),
            Change::Put(record) => {
                tx.execute(
                    "INSERT INTO users (name, record) VALUES (?1, ?2)
                     ON CONFLICT(name) DO UPDATE SET record = excluded.record",
                    params![user, encode(&record)?],
                )
                .map_err(db)?;
            }
            Change::Delete => {
                tx.execute("DELETE FROM users WHERE name = ?1", [user]).map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn.prepare("SELECT name, record FROM users ORDER BY name").map_err(db)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(db)?;
        rows.map(|row| {
            let (name, json) = row.map_err(db)?;
            decode(&name, &json)
        })
        .collect()
    }

    fn add_ip_rule(&self, cidr: &str, bypass_2fa: bool, expires_at: Option<u64>) -> Result<i64, StoreError> {
        let conn = self.lock()?;
        let expires = expires_at.map(|t| i64::try_from(t).unwrap_or(i64::MAX));
        conn.execute(
            "INSERT INTO ip_rules (cidr, bypass_2fa, expires_at) VALUES (?1, ?2, ?3)",
            params![cidr, bypass_2fa, expires],
        )
        .map_err(db)?;
        Ok(conn.last_insert_rowid())
    }

    fn list_ip_rules(&self) -> Result<Vec<StoredIpRule>, StoreError> {
        let conn = self.lock()?;
        let mut stmt =
            conn.prepare("SELECT id, cidr, bypass_2fa, expires_at FROM ip_rules ORDER BY id").map_err(db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(StoredIpRule {
                    id: r.get(0)?,
                    cidr: r.get(1)?,
                    bypass_2fa: r.get(2)?,
                    expires_at: r.get::<_, Option<i64>>(3)?.map(|t| u64::try_from(t).unwrap_or(0)),
                })
            })
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)
    }

    fn remove_ip_rule(&self, id: i64) -> Result<bool, StoreError> {
        let conn = self.lock()?;
        Ok(conn.execute("DELETE FROM ip_rules WHERE id = ?1", [id]).map_err(db)? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_and_read_back() {
        let store = SqliteStore::open_in_memory().unwrap();
        assert!(store.get_user("alice").unwrap().is_none());
        store
            .update_user("alice", &mut |cur| {
                assert!(cur.is_none());
                let mut r = UserRecord::new("alice");
                r.failures = 2;
                Change::Put(r)
            })
            .unwrap();
        assert_eq!(store.get_user("alice").unwrap().unwrap().failures, 2);
        store.update_user("alice", &mut |_| Change::Delete).unwrap();
        assert!(store.list_users().unwrap().is_empty());
    }

    #[test]
    fn migrations_are_idempotent_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let store = SqliteStore::open(&path).unwrap();
        store.update_user("bob", &mut |_| Change::Put(UserRecord::new("bob"))).unwrap();
        let id = store.add_ip_rule("10.0.0.0/8", true, Some(5)).unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.list_users().unwrap().len(), 1);
        assert_eq!(store.list_ip_rules().unwrap()[0].id, id);
        assert!(store.remove_ip_rule(id).unwrap());
        assert!(!store.remove_ip_rule(id).unwrap());
    }

    #[test]
    fn concurrent_updates_are_serialised_across_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        SqliteStore::open(&path).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let store = SqliteStore::open(&path).unwrap();
                    for _ in 0..25 {
                        store
                            .update_user("carol", &mut |cur| {
                                let mut r = cur.cloned().unwrap_or_else(|| UserRecord::new("carol"));
                                r.failures += 1;
                                Change::Put(r)
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.get_user("carol").unwrap().unwrap().failures, 100);
    }
}
