//! The default store: one SQLite file in WAL mode, fsynced on every commit
//! (a verification is acknowledged only once its state change is on disk).

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, DatabaseName, ErrorCode, OpenFlags, TransactionBehavior, params};

use ipnet::IpNet;
use mfa_shared::bypass::{BypassRule, RuleOrigin, parse_network};

use super::files::{self, OpenError, StoreFiles, create_private_dir, create_private_file};
use super::rows::{apply_change, read_meta, read_user, write_meta};
use super::{Change, Store, StoreError, StoreFault, UserRecord, decode};

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
    "CREATE TABLE meta (
        name  TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
     ) WITHOUT ROWID;",
];

/// SQLite behind one connection, with group commit: concurrent updates are
/// applied one after another (each in its own savepoint, so per-user
/// read-modify-write stays serial) into one open transaction, and the last
/// of them to arrive commits it with a single fsync. Every caller returns
/// only once the transaction holding its change is on disk.
///
/// Reads of a file-backed store go through a second connection: WAL gives it
/// the last committed state, so nothing is read from a batch that has not
/// committed yet (and may still fail), and reads do not wait for writes.
///
/// Before every read and every commit the store's files are checked (see
/// [`files`]); every error is explained with what the files and their file
/// system say (full, read-only, deleted, overwritten), so a request fails
/// closed with a reason, and succeeds again once the cause is gone.
pub struct SqliteStore {
    state: Mutex<State>,
    /// None for an in-memory store.
    files: Option<StoreFiles>,
    /// The read-only connection; None for an in-memory store (a second
    /// `:memory:` connection would be a different, empty database), which
    /// reads through the writer.
    reader: Option<Mutex<Connection>>,
    /// Which batches have finished; waiters sleep on it without touching
    /// the connection's lock, so a commit does not wake a convoy on it.
    finished: Mutex<Finished>,
    committed: Condvar,
    /// Writers that have announced themselves but not applied yet; while
    /// there are any, the current batch waits for them instead of committing.
    arriving: AtomicUsize,
}

struct State {
    conn: Connection,
    /// Id of the open write transaction, if any.
    open: Option<u64>,
    next_batch: u64,
}

#[derive(Default)]
struct Finished {
    /// Every batch below this id has finished (committed or failed).
    below: u64,
    /// Recent batches whose commit failed, with the error.
    failed: VecDeque<(u64, StoreError)>,
}

/// SQLite checkpoints the WAL into the store file when the last connection
/// closes. Into a file that is no longer the store (overwritten, replaced)
/// that would write valid pages, header included, over whatever is there,
/// and the next start could take the result for a store: not then.
impl Drop for SqliteStore {
    fn drop(&mut self) {
        if self.verify().is_ok() {
            return;
        }
        let state = self.state.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = state.conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
        if let Some(reader) = &mut self.reader {
            let reader = reader.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
            let _ = reader.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
        }
    }
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteStore")
    }
}

/// A writer counted in `arriving` from its announcement until dropped, so
/// that no way out of a write (an error, a panic) leaves the batch waiting
/// for a writer that is gone.
struct Arrival<'a>(&'a AtomicUsize);

impl<'a> Arrival<'a> {
    fn announce(arriving: &'a AtomicUsize) -> Self {
        arriving.fetch_add(1, Ordering::SeqCst);
        Arrival(arriving)
    }
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A SQLite error; the faults of the store as a whole are told apart by
/// SQLite's code, and [`SqliteStore::explain`] adds what the files say.
pub(super) fn db(err: rusqlite::Error) -> StoreError {
    let fault = match err.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreFault::Full,
        Some(ErrorCode::ReadOnly) => StoreFault::ReadOnly,
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreFault::Damaged,
        Some(ErrorCode::SystemIoFailure | ErrorCode::CannotOpen) => StoreFault::Io,
        _ => return StoreError::Database(err.to_string()),
    };
    StoreError::Unusable { fault, location: String::new(), cause: err.to_string() }
}

impl SqliteStore {
    /// Open the store at `path`, which must exist, be mode 0600 (no access
    /// for group or others), be owned by the effective uid and be a SQLite
    /// database: an empty or foreign file is refused, never initialised.
    pub fn open_existing(path: &Path) -> Result<Self, OpenError> {
        let file = files::open_checked(path)?;
        if let Some(why) = files::header_problem(&file) {
            return Err(OpenError::Damaged { path: path.to_path_buf(), why });
        }
        files::check_companions(path)?;
        Self::open_file(path, file)
    }

    /// Create a new, empty store at `path` (and its missing directories,
    /// mode 0700); refused when a file is there.
    pub fn create(path: &Path) -> Result<Self, OpenError> {
        let io_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source: io::Error| match source.raw_os_error() {
                Some(libc::EROFS) => OpenError::ReadOnly(p),
                Some(libc::EEXIST) => OpenError::Exists(p),
                _ => OpenError::Io { path: p, source },
            }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir).map_err(io_err(dir))?;
        }
        create_private_file(path).map_err(io_err(path))?;
        let file = files::open_checked(path)?;
        Self::open_file(path, file)
    }

    /// Open the store at `path`, creating it when there is none (tests).
    #[cfg(test)]
    pub(crate) fn open(path: &Path) -> Result<Self, OpenError> {
        match fs::symlink_metadata(path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Self::create(path),
            _ => Self::open_existing(path),
        }
    }

    /// Open the connections on a store file already checked and open as
    /// `file`, and pin the files.
    fn open_file(path: &Path, file: fs::File) -> Result<Self, OpenError> {
        let fail = |err| OpenError::store(path, err);
        // Never created here (that is [`Self::create`]'s decision), and a
        // link swapped in since our check is not followed.
        let flags =
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| fail(db(e)))?;
        // SQLite opens a file it may not write read-only, without a word.
        if conn.is_readonly(DatabaseName::Main).map_err(|e| fail(db(e)))? {
            return Err(OpenError::ReadOnly(path.to_path_buf()));
        }
        let mut store = Self::setup(conn).map_err(fail)?;
        // Opened after the writer has set WAL mode and migrated the schema.
        let reader = Connection::open_with_flags(path, flags).map_err(|e| fail(db(e)))?;
        reader.busy_timeout(Duration::from_secs(10)).map_err(|e| fail(db(e)))?;
        reader.pragma_update(None, "query_only", true).map_err(|e| fail(db(e)))?;
        store.reader = Some(Mutex::new(reader));
        store.files = Some(StoreFiles::pin(path, file)?);
        Ok(store)
    }

    /// `err` explained by the store's files (see [`StoreFiles::explain`]).
    fn explain(&self, err: StoreError) -> StoreError {
        match (&self.files, err) {
            (Some(files), err) => files.explain(err),
            (None, StoreError::Unusable { fault, cause, .. }) => {
                StoreError::Unusable { fault, location: "in memory".to_string(), cause }
            }
            (None, err) => err,
        }
    }

    /// Whether the store's files are still the ones opened, intact.
    fn verify(&self) -> Result<(), StoreError> {
        self.files.as_ref().map_or(Ok(()), StoreFiles::verify)
    }

    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::setup(Connection::open_in_memory().map_err(db)?)
    }

    /// Run `read` on the reader connection, or on the writer's for an
    /// in-memory store.
    fn read<R>(&self, read: impl FnOnce(&Connection) -> Result<R, StoreError>) -> Result<R, StoreError> {
        // SQLite would answer from its cache, or from a deleted file.
        self.verify()?;
        let result = match &self.reader {
            Some(reader) => {
                // A connection between two statements is consistent.
                let conn = reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                read(&conn)
            }
            None => read(&self.lock().conn),
        };
        result.map_err(|err| self.explain(err))
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
        Ok(SqliteStore {
            state: Mutex::new(State { conn, open: None, next_batch: 0 }),
            files: None,
            finished: Mutex::new(Finished::default()),
            reader: None,
            committed: Condvar::new(),
            arriving: AtomicUsize::new(0),
        })
    }

    /// The writer's state. A panic while it was held (outside `apply`, which
    /// catches its own) may have left a batch half applied: that batch is
    /// rolled back and failed, so the store goes on rather than refusing
    /// every later write.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| {
            self.state.clear_poison();
            let mut state = poisoned.into_inner();
            if let Some(batch) = state.open.take() {
                let _ = state.conn.execute_batch("ROLLBACK");
                let err = StoreError::Database("a store update panicked; its batch was rolled back".to_string());
                self.finish(batch, Some(err));
            }
            state
        })
    }

    fn finished(&self) -> MutexGuard<'_, Finished> {
        // Finished is consistent between any two statements.
        self.finished.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run `apply` as one durable write (see the type's doc).
    fn write<R>(&self, apply: impl FnOnce(&Connection) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let arrival = Arrival::announce(&self.arriving);
        let mut state = self.lock();
        let applied = self.apply_in_batch(&mut state, apply);
        drop(arrival);
        // The last writer to arrive commits for everyone in the batch; the
        // others wait for it without holding the connection's lock.
        if self.arriving.load(Ordering::SeqCst) == 0 {
            self.commit(&mut state);
        }
        drop(state);
        let (batch, result) = applied.map_err(|err| self.explain(err))?;
        let mut finished = self.finished();
        while finished.below <= batch {
            finished = self.committed.wait(finished).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        match finished.failed.iter().find(|(id, _)| *id == batch) {
            Some((_, err)) => Err(err.clone()),
            None => result.map_err(|err| self.explain(err)),
        }
    }

    /// Open a batch if none is, and apply one change in a savepoint of it.
    fn apply_in_batch<R>(
        &self,
        state: &mut State,
        apply: impl FnOnce(&Connection) -> Result<R, StoreError>,
    ) -> Result<(u64, Result<R, StoreError>), StoreError> {
        let batch = match state.open {
            // SQLite rolls a transaction back by itself after some errors
            // (a full disk, an I/O error); a savepoint now would be a
            // transaction of its own, committed at its release and outside
            // the batch. The change fails with the batch instead.
            Some(batch) if state.conn.is_autocommit() => {
                let err = StoreError::Database("the batch was rolled back after an error".to_string());
                return Ok((batch, Err(err)));
            }
            Some(batch) => batch,
            None => {
                self.verify()?;
                // IMMEDIATE takes the write lock before reading, so another
                // process sharing the file cannot interleave with our batch.
                state.conn.execute_batch("BEGIN IMMEDIATE").map_err(db)?;
                let batch = state.next_batch;
                state.next_batch += 1;
                state.open = Some(batch);
                batch
            }
        };
        state.conn.execute_batch("SAVEPOINT one_write").map_err(db)?;
        // A panic in `apply` (a bug in a caller's change) must not unwind
        // past the savepoint: the change is rolled back like a failed one
        // and the batch goes on for the writers that share it.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| apply(&state.conn)))
            .unwrap_or_else(|_| Err(StoreError::Database("a store update panicked; it was rolled back".to_string())));
        let end = if result.is_ok() { "RELEASE one_write" } else { "ROLLBACK TO one_write; RELEASE one_write" };
        state.conn.execute_batch(end).map_err(db)?;
        Ok((batch, result))
    }

    fn commit(&self, state: &mut State) {
        let Some(batch) = state.open.take() else {
            return;
        };
        // The last look before the batch becomes durable: into the file
        // that is the store, or not at all.
        let failure = match self.verify() {
            Err(err) => Some(err),
            Ok(()) => state.conn.execute_batch("COMMIT").err().map(|err| self.explain(db(err))),
        };
        if failure.is_some() && !state.conn.is_autocommit() {
            let _ = state.conn.execute_batch("ROLLBACK");
        }
        self.finish(batch, failure);
    }

    /// Record that `batch` committed (`failure` None) or failed, and wake
    /// its writers.
    fn finish(&self, batch: u64, failure: Option<StoreError>) {
        let mut finished = self.finished();
        if let Some(err) = failure {
            finished.failed.push_back((batch, err));
            if finished.failed.len() > 64 {
                finished.failed.pop_front();
            }
        }
        finished.below = batch + 1;
        self.committed.notify_all();
    }
}

impl Store for SqliteStore {
    fn get_user(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        self.read(|conn| read_user(conn, user))
    }

    fn update_user(&self, user: &str, change: &mut dyn FnMut(Option<&UserRecord>) -> Change) -> Result<(), StoreError> {
        self.write(|conn| {
            let current = read_user(conn, user)?;
            apply_change(conn, user, change(current.as_ref()))
        })
    }

    fn update_users(
        &self,
        users: &[String],
        change: &mut dyn FnMut(&str, Option<&UserRecord>) -> Change,
    ) -> Result<(), StoreError> {
        self.write(|conn| {
            for user in users {
                let current = read_user(conn, user)?;
                apply_change(conn, user, change(user, current.as_ref()))?;
            }
            Ok(())
        })
    }

    fn list_users(&self, after: Option<&str>, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT name, record FROM users WHERE name > ?1 ORDER BY name LIMIT ?2")
                .map_err(db)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = stmt
                .query_map(params![after.unwrap_or(""), limit], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(db)?;
            rows.map(|row| {
                let (name, json) = row.map_err(db)?;
                decode(&name, &json)
            })
            .collect()
        })
    }

    fn add_ip_rule(&self, network: IpNet, bypass_2fa: bool, expires_at: Option<u64>) -> Result<i64, StoreError> {
        let expires = expires_at.map(|t| i64::try_from(t).unwrap_or(i64::MAX));
        self.write(|conn| {
            conn.execute(
                "INSERT INTO ip_rules (cidr, bypass_2fa, expires_at) VALUES (?1, ?2, ?3)",
                params![network.to_string(), bypass_2fa, expires],
            )
            .map_err(db)?;
            Ok(conn.last_insert_rowid())
        })
    }

    fn list_ip_rules(&self) -> Result<Vec<BypassRule>, StoreError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT id, cidr, bypass_2fa, expires_at FROM ip_rules ORDER BY id").map_err(db)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, bool>(2)?,
                        r.get::<_, Option<i64>>(3)?.map(|t| u64::try_from(t).unwrap_or(0)),
                    ))
                })
                .map_err(db)?;
            rows.map(|row| {
                let (id, cidr, bypass_2fa, expires_at) = row.map_err(db)?;
                // Written only after parsing: a row that does not parse was
                // tampered with, and fails closed.
                let network = parse_network(&cidr)
                    .map_err(|reason| StoreError::Corrupt { user: format!("ip rule #{id}"), reason })?;
                Ok(BypassRule { network, bypass_2fa, expires_at, origin: RuleOrigin::Runtime { id } })
            })
            .collect()
        })
    }

    fn remove_ip_rule(&self, id: i64) -> Result<bool, StoreError> {
        self.write(|conn| Ok(conn.execute("DELETE FROM ip_rules WHERE id = ?1", [id]).map_err(db)? > 0))
    }

    fn get_meta(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.read(|conn| read_meta(conn, name))
    }

    fn set_meta(&self, name: &str, value: Option<&str>) -> Result<(), StoreError> {
        self.write(|conn| write_meta(conn, name, value, true))
    }

    fn init_meta(&self, name: &str, value: &str) -> Result<String, StoreError> {
        self.write(|conn| {
            write_meta(conn, name, Some(value), false)?;
            read_meta(conn, name)?.ok_or_else(|| StoreError::Database(format!("setting {name} vanished")))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

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
        assert!(store.list_users(None, 10).unwrap().is_empty());
    }

    #[test]
    fn migrations_are_idempotent_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        let store = SqliteStore::open(&path).unwrap();
        store.update_user("bob", &mut |_| Change::Put(UserRecord::new("bob"))).unwrap();
        let id = store.add_ip_rule(parse_network("10.0.0.0/8").unwrap(), true, Some(5)).unwrap();
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.list_users(None, 10).unwrap().len(), 1);
        assert!(store.list_users(Some("bob"), 10).unwrap().is_empty());
        assert_eq!(store.list_users(Some("alice"), 10).unwrap().len(), 1);
        assert_eq!(store.list_ip_rules().unwrap()[0].origin, RuleOrigin::Runtime { id });
        assert!(store.remove_ip_rule(id).unwrap());
        assert!(!store.remove_ip_rule(id).unwrap());
    }

    #[test]
    fn concurrent_updates_share_commits_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let store = std::sync::Arc::new(SqliteStore::open(&path).unwrap());
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        for user in ["shared", if i % 2 == 0 { "even" } else { "odd" }] {
                            store
                                .update_user(user, &mut |cur| {
                                    let mut r = cur.cloned().unwrap_or_else(|| UserRecord::new(user));
                                    r.failures += 1;
                                    Change::Put(r)
                                })
                                .unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(store);
        // Reopened from disk: every acknowledged update is there.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.get_user("shared").unwrap().unwrap().failures, 320);
        assert_eq!(store.get_user("even").unwrap().unwrap().failures, 160);
        assert_eq!(store.get_user("odd").unwrap().unwrap().failures, 160);
    }

    #[test]
    fn a_failed_change_leaves_the_batch_intact() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.update_user("a", &mut |_| Change::Put(UserRecord::new("a"))).unwrap();
        let err = store.write(|conn| {
            conn.execute("DELETE FROM users WHERE name = 'a'", []).map_err(db)?;
            Err::<(), _>(StoreError::Database("boom".into()))
        });
        assert!(err.is_err());
        assert!(store.get_user("a").unwrap().is_some(), "the failed change was rolled back");
    }

    fn with_failures(user: &str, failures: u32) -> Change {
        let mut r = UserRecord::new(user);
        r.failures = failures;
        Change::Put(r)
    }

    #[test]
    fn reads_do_not_see_a_batch_before_it_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("r.db")).unwrap();
        store.update_user("a", &mut |_| with_failures("a", 1)).unwrap();
        // Apply changes into an open batch, as a writer does before the
        // batch's last writer commits it.
        {
            let mut state = store.lock();
            let (batch, applied) = store
                .apply_in_batch(&mut state, |conn| {
                    apply_change(conn, "a", with_failures("a", 2))?;
                    apply_change(conn, "b", with_failures("b", 0))?;
                    conn.execute("INSERT INTO ip_rules (cidr, bypass_2fa) VALUES ('10.0.0.0/8', 1)", []).map_err(db)
                })
                .unwrap();
            applied.unwrap();
            assert_eq!(state.open, Some(batch));
        }
        assert_eq!(store.get_user("a").unwrap().unwrap().failures, 1, "the committed state");
        assert!(store.get_user("b").unwrap().is_none());
        assert_eq!(store.list_users(None, 10).unwrap().len(), 1);
        assert!(store.list_ip_rules().unwrap().is_empty());
        store.commit(&mut store.lock());
        assert_eq!(store.get_user("a").unwrap().unwrap().failures, 2);
        assert!(store.get_user("b").unwrap().is_some());
        assert_eq!(store.list_users(None, 10).unwrap().len(), 2);
        assert_eq!(store.list_ip_rules().unwrap().len(), 1);
    }

    #[test]
    fn the_reader_sees_committed_updates_of_any_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path).unwrap();
        assert!(store.reader.is_some());
        let other = SqliteStore::open(&path).unwrap();
        for n in 1..=3 {
            store.update_user("a", &mut |_| with_failures("a", n)).unwrap();
            assert_eq!(store.get_user("a").unwrap().unwrap().failures, n);
            assert_eq!(other.get_user("a").unwrap().unwrap().failures, n);
        }
        let id = other.add_ip_rule(parse_network("192.0.2.0/24").unwrap(), false, None).unwrap();
        assert_eq!(store.list_ip_rules().unwrap()[0].origin, RuleOrigin::Runtime { id });
        other.update_user("a", &mut |_| Change::Delete).unwrap();
        assert!(store.get_user("a").unwrap().is_none());
        assert!(store.list_users(None, 10).unwrap().is_empty());
        // In memory there is one connection, which reads its own writes.
        let memory = SqliteStore::open_in_memory().unwrap();
        assert!(memory.reader.is_none());
        memory.update_user("m", &mut |_| with_failures("m", 4)).unwrap();
        assert_eq!(memory.get_user("m").unwrap().unwrap().failures, 4);
    }

    #[test]
    fn database_and_new_directories_are_private() {
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let created = dir.path().join("var/mfad");
        let path = created.join("p.db");
        let store = SqliteStore::open(&path).unwrap();
        store.update_user("a", &mut |_| with_failures("a", 1)).unwrap();
        for file in ["p.db", "p.db-wal", "p.db-shm"] {
            assert_eq!(mode(&created.join(file)), 0o600, "{file}");
        }
        assert_eq!(mode(&created), 0o700);
        assert_eq!(mode(&dir.path().join("var")), 0o700);
        // A directory that exists keeps its mode.
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
        SqliteStore::open(&shared.join("q.db")).unwrap();
        assert_eq!(mode(&shared), 0o755);
        assert_eq!(mode(&shared.join("q.db")), 0o600);
    }

    fn fault_of<T: std::fmt::Debug>(result: Result<T, StoreError>) -> (StoreFault, String) {
        match result {
            Err(err @ StoreError::Unusable { fault, .. }) => (fault, err.to_string()),
            other => panic!("expected an unusable store, got {other:?}"),
        }
    }

    #[test]
    fn store_file_owner_and_mode_are_checked_at_open() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.db");
        drop(SqliteStore::create(&path).unwrap());
        let euid = nix::unistd::geteuid().as_raw();
        for mode in [0o640, 0o604, 0o660, 0o606] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
            let err = SqliteStore::open_existing(&path).unwrap_err();
            assert!(matches!(err, OpenError::Permissions { .. }), "{mode:o}: {err}");
            let text = err.to_string();
            assert!(text.contains(&format!("run: chmod 600 {}", path.display())), "{text}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        SqliteStore::open_existing(&path).unwrap();
        // Another owner (the check itself, on the opened file's metadata).
        let meta = fs::File::open(&path).unwrap().metadata().unwrap();
        let err = files::check_metadata(&path, &meta, meta.uid().wrapping_add(1)).unwrap_err();
        assert!(err.to_string().contains(&format!("run: chown {} {}", meta.uid().wrapping_add(1), path.display())));
        if euid == 0 {
            nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(4321)), None).unwrap();
            let err = SqliteStore::open_existing(&path).unwrap_err();
            assert!(matches!(err, OpenError::Owner { owner: 4321, .. }), "{err}");
            assert!(err.to_string().contains(&format!("run: chown 0 {}", path.display())), "{err}");
            nix::unistd::chown(&path, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
        }
        // A -wal or -shm file open to others is refused as well.
        let wal = dir.path().join("o.db-wal");
        OpenOptions::new().write(true).create_new(true).mode(0o644).open(&wal).unwrap();
        fs::set_permissions(&wal, fs::Permissions::from_mode(0o644)).unwrap();
        let err = SqliteStore::open_existing(&path).unwrap_err();
        assert!(err.to_string().contains(&format!("chmod 600 {}", wal.display())), "{err}");
        fs::remove_file(&wal).unwrap();
        // A symbolic link is not followed.
        let link = dir.path().join("link.db");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = SqliteStore::open_existing(&link).unwrap_err();
        assert!(matches!(err, OpenError::Symlink(_)), "{err}");
        SqliteStore::open_existing(&path).unwrap();
    }

    #[test]
    fn an_empty_or_foreign_store_file_is_refused_never_initialised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db");
        for (content, why) in [
            (&b""[..], "the file is empty"),
            (&b"SQLite"[..], "shorter than a SQLite header"),
            (&[0x5au8; 8192][..], "does not start with the SQLite header"),
        ] {
            let _ = fs::remove_file(&path);
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).unwrap();
            fs::write(&path, content).unwrap();
            let err = SqliteStore::open_existing(&path).unwrap_err();
            assert!(matches!(err, OpenError::Damaged { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains(why) && text.contains("Restore it from backup"), "{text}");
            assert_eq!(fs::read(&path).unwrap(), content, "left as it was");
        }
        // A file with the header but garbage after it: SQLite's own check.
        let mut garbage = b"SQLite format 3\0".to_vec();
        garbage.extend([0xffu8; 4096]);
        fs::write(&path, &garbage).unwrap();
        let err = SqliteStore::open_existing(&path).unwrap_err();
        assert!(matches!(err, OpenError::Damaged { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), garbage);
        // Nor is an existing file taken over by create.
        let err = SqliteStore::create(&path).unwrap_err();
        assert!(matches!(err, OpenError::Exists(_)), "{err}");
        // And a missing one is not created by open_existing.
        let gone = dir.path().join("gone.db");
        assert!(matches!(SqliteStore::open_existing(&gone), Err(OpenError::Missing(_))));
        assert!(!gone.exists());
    }

    #[test]
    fn a_store_deleted_under_a_running_daemon_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let store = SqliteStore::open(&path).unwrap();
        store.update_user("a", &mut |_| with_failures("a", 1)).unwrap();
        for name in ["d.db", "d.db-wal", "d.db-shm"] {
            fs::remove_file(dir.path().join(name)).unwrap();
        }
        let (fault, text) = fault_of(store.get_user("a"));
        assert_eq!(fault, StoreFault::Missing, "{text}");
        assert!(text.contains("deleted or replaced") && text.contains("restore the file from backup"), "{text}");
        assert_eq!(fault_of(store.list_users(None, 10)).0, StoreFault::Missing);
        assert_eq!(fault_of(store.update_user("a", &mut |_| with_failures("a", 2))).0, StoreFault::Missing);
        assert_eq!(
            fault_of(store.add_ip_rule(parse_network("10.0.0.0/8").unwrap(), true, None)).0,
            StoreFault::Missing
        );
        assert!(!path.exists(), "no fresh store was made");
        // Only the -wal deleted: its committed changes would be lost at the
        // next start.
        let path = dir.path().join("w.db");
        let store = SqliteStore::open(&path).unwrap();
        store.update_user("a", &mut |_| with_failures("a", 1)).unwrap();
        fs::remove_file(dir.path().join("w.db-wal")).unwrap();
        assert_eq!(fault_of(store.update_user("a", &mut |_| with_failures("a", 2))).0, StoreFault::Missing);
        assert_eq!(fault_of(store.get_user("a")).0, StoreFault::Missing);
    }

    #[test]
    fn a_store_replaced_or_overwritten_under_a_running_daemon_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let store = SqliteStore::open(&path).unwrap();
        store.update_user("a", &mut |_| with_failures("a", 1)).unwrap();
        // Overwritten in place (same file) with garbage: SQLite would still
        // answer from its cache.
        let len = fs::metadata(&path).unwrap().len() as usize;
        fs::write(&path, vec![0x42u8; len.max(4096)]).unwrap();
        let (fault, text) = fault_of(store.get_user("a"));
        assert_eq!(fault, StoreFault::Damaged, "{text}");
        assert!(text.contains("corrupt"), "{text}");
        assert_eq!(fault_of(store.update_user("a", &mut |_| with_failures("a", 2))).0, StoreFault::Damaged);
        // Truncated to nothing.
        fs::write(&path, b"").unwrap();
        assert_eq!(fault_of(store.get_user("a")).0, StoreFault::Damaged);
        // Closed, it does not checkpoint a valid-looking store into the file.
        drop(store);
        assert_eq!(fs::metadata(&path).unwrap().len(), 0, "written into at close");
        assert!(matches!(SqliteStore::open_existing(&path), Err(OpenError::Damaged { .. })));
        // Replaced by another (valid, empty) store.
        let path = dir.path().join("s.db");
        let store = SqliteStore::open(&path).unwrap();
        store.update_user("a", &mut |_| with_failures("a", 1)).unwrap();
        let other = dir.path().join("other.db");
        drop(SqliteStore::open(&other).unwrap());
        fs::rename(&other, &path).unwrap();
        let (fault, text) = fault_of(store.get_user("a"));
        assert_eq!(fault, StoreFault::Missing, "{text}");
        assert!(text.contains("another file"), "{text}");
    }

    /// Runs `f` on a thread; None when it did not finish within 10 s (a hang).
    fn within_10s<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(Duration::from_secs(10)).ok()
    }

    #[test]
    fn a_panic_in_a_change_leaves_the_store_usable() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("p.db")).unwrap());
        store.update_user("a", &mut |_| with_failures("a", 1)).unwrap();
        let panicking = store.clone();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            panicking.update_user("a", &mut |_| panic!("a bug in a change"))
        }));
        // Either the store turned the panic into an error, or it went on
        // unwinding; what matters is what follows.
        assert!(!matches!(caught, Ok(Ok(()))), "a panicking change did not succeed");
        let after = store.clone();
        let done = within_10s(move || after.update_user("a", &mut |_| with_failures("a", 2)));
        assert!(matches!(done, Some(Ok(()))), "the next update after a panic: {done:?}");
        assert_eq!(store.get_user("a").unwrap().unwrap().failures, 2);
    }

    #[test]
    fn a_panic_in_a_batch_does_not_strand_the_writers_waiting_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("b.db")).unwrap());
        // Writer A applies its change, then lets writer B announce itself
        // before returning: A leaves the commit to B, which panics.
        let (b_go, b_ready) = std::sync::mpsc::channel::<()>();
        let b_store = store.clone();
        let b = std::thread::spawn(move || {
            b_ready.recv().unwrap();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                b_store.update_user("b", &mut |_| panic!("a bug in B's change"))
            }))
        });
        let a_store = store.clone();
        let a = within_10s(move || {
            let arriving = &a_store.arriving;
            a_store.update_user("a", &mut |_| {
                b_go.send(()).unwrap();
                // Wait (bounded) until B has announced itself.
                for _ in 0..1_000_000 {
                    if arriving.load(Ordering::SeqCst) >= 2 {
                        break;
                    }
                    std::thread::yield_now();
                }
                assert!(arriving.load(Ordering::SeqCst) >= 2, "B never arrived");
                with_failures("a", 7)
            })
        });
        assert!(a.is_some(), "writer A hung waiting for a batch whose committer panicked");
        let _ = b.join();
        let after = store.clone();
        let done = within_10s(move || after.update_user("c", &mut |_| with_failures("c", 1)));
        assert!(matches!(done, Some(Ok(()))), "an update after the panic: {done:?}");
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
