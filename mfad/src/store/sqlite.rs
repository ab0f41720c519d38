//! The default store: one SQLite file in WAL mode, synced on every commit
//! (a verification is acknowledged only once its state change is on disk).

use std::fs;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, DatabaseName, ErrorCode, OpenFlags, TransactionBehavior, params};

use ipnet::IpNet;
use mfa_shared::bypass::{BypassRule, RuleOrigin, parse_network};

use super::files::{self, OpenError, StoreFiles, create_private_dir, create_private_file};
use super::rows::{apply_change, read_meta, read_user, write_meta};
use super::writer::Writer;
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
    // Records in a rowid table, found through the index of their names. A
    // WITHOUT ROWID table keeps each row whole in its key's b-tree, where a
    // cell holds about 1 KiB of a 4 KiB page: a record (2 KiB and more)
    // spilled to overflow pages, and SQLite reads a spilled key whole,
    // overflow included and past its page cache, at each step of a search,
    // about 24 reads per login. The index holds names only, and a record
    // fits its table's leaf page.
    "CREATE TABLE users_by_rowid (
        name   TEXT PRIMARY KEY NOT NULL,
        record TEXT NOT NULL
     );
     INSERT INTO users_by_rowid (name, record) SELECT name, record FROM users ORDER BY name;
     DROP TABLE users;
     ALTER TABLE users_by_rowid RENAME TO users;",
];

/// SQLite behind two connections. Writes go through the writer (see
/// [`super::writer`]), which owns one connection: the changes waiting for
/// it are committed in one transaction, one sync for all of them, by the
/// first of their callers; every caller returns only once the transaction
/// holding its change is on disk.
///
/// Reads of a file-backed store go through the writer's connection while no
/// batch holds it (its cache is current), else through a second connection:
/// WAL gives it the last committed state, so nothing is read from a batch
/// that has not committed yet (and may still fail), and reads do not wait
/// for writes.
///
/// Before every read and every commit the store's files are checked (see
/// [`files`]); every error is explained with what the files and their file
/// system say (full, read-only, deleted, overwritten), so a request fails
/// closed with a reason, and succeeds again once the cause is gone.
pub struct SqliteStore {
    writer: Writer,
    /// None for an in-memory store.
    files: Option<Arc<StoreFiles>>,
    /// The read-only connection; None for an in-memory store (a second
    /// `:memory:` connection would be a different, empty database), which
    /// reads through the writer.
    reader: Option<Mutex<Connection>>,
}

/// The reader checkpoints nothing into a file that is no longer the store
/// (the writer sees to its own connection).
impl Drop for SqliteStore {
    fn drop(&mut self) {
        if self.verify().is_ok() {
            return;
        }
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
        let conn = Self::setup(conn).map_err(fail)?;
        // Opened after the writer has set WAL mode and migrated the schema.
        let reader = Connection::open_with_flags(path, flags).map_err(|e| fail(db(e)))?;
        reader.busy_timeout(Duration::from_secs(10)).map_err(|e| fail(db(e)))?;
        reader.pragma_update(None, "query_only", true).map_err(|e| fail(db(e)))?;
        let files = Arc::new(StoreFiles::pin(path, file)?);
        let writer = Writer::new(conn, Some(files.clone()));
        Ok(SqliteStore { writer, files: Some(files), reader: Some(Mutex::new(reader)) })
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
        self.files.as_ref().map_or(Ok(()), |files| files.verify())
    }

    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Self::setup(Connection::open_in_memory().map_err(db)?)?;
        Ok(SqliteStore { writer: Writer::new(conn, None), files: None, reader: None })
    }

    /// Run `read` on the writer's connection when no batch holds it, else
    /// on the reader connection (an in-memory store waits for the writer's).
    fn read<R: Send>(&self, read: impl FnOnce(&Connection) -> Result<R, StoreError> + Send) -> Result<R, StoreError> {
        // SQLite would answer from its cache, or from a deleted file.
        self.verify()?;
        let result = match (&self.reader, self.writer.idle_connection()) {
            (_, Some(conn)) => read(&conn),
            (Some(reader), None) => {
                // A connection between two statements is consistent.
                let conn = reader.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                read(&conn)
            }
            (None, None) => self.writer.read(read),
        };
        result.map_err(|err| self.explain(err))
    }

    /// WAL, synchronous=FULL, the schema migrated: the writer's connection.
    fn setup(mut conn: Connection) -> Result<Connection, StoreError> {
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
        if version < MIGRATIONS.len() {
            // A migration may have copied every record through the WAL: into
            // the store now, and the WAL file back to nothing on disk.
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(db)?;
        }
        Ok(conn)
    }

    /// Run `apply` as one durable write (see the type's doc).
    fn write<R: Send>(&self, apply: impl FnOnce(&Connection) -> Result<R, StoreError> + Send) -> Result<R, StoreError> {
        self.writer.write(apply).map_err(|err| self.explain(err))
    }
}

impl Store for SqliteStore {
    fn get_user(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        self.read(|conn| read_user(conn, user))
    }

    fn update_user(
        &self,
        user: &str,
        change: &mut (dyn FnMut(Option<&UserRecord>) -> Change + Send),
    ) -> Result<(), StoreError> {
        self.write(|conn| {
            let current = read_user(conn, user)?;
            apply_change(conn, user, change(current.as_ref()))
        })
    }

    fn update_users(
        &self,
        users: &[String],
        change: &mut (dyn FnMut(&str, Option<&UserRecord>) -> Change + Send),
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

    /// A store made by an mfad of schema version 2 (records in a WITHOUT
    /// ROWID table) keeps every record when a later mfad opens it.
    #[test]
    fn a_store_of_schema_version_2_is_migrated_with_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        create_private_file(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        let mut carol = UserRecord::new("carol");
        carol.failures = 3;
        for record in [UserRecord::new("alice"), carol.clone()] {
            conn.execute(
                "INSERT INTO users (name, record) VALUES (?1, ?2)",
                params![record.user, super::super::encode(&record).unwrap()],
            )
            .unwrap();
        }
        conn.execute("INSERT INTO meta (name, value) VALUES ('key_id', 'k1')", []).unwrap();
        drop(conn);

        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.get_user("carol").unwrap(), Some(carol));
        assert_eq!(store.list_users(None, 10).unwrap().len(), 2);
        assert_eq!(store.get_meta("key_id").unwrap().as_deref(), Some("k1"));
        store.update_user("bob", &mut |_| Change::Put(UserRecord::new("bob"))).unwrap();
        drop(store);
        let conn = Connection::open(&path).unwrap();
        let version: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(version, MIGRATIONS.len());
        let sql: String =
            conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'users'", [], |r| r.get(0)).unwrap();
        assert!(!sql.contains("WITHOUT ROWID"), "{sql}");
        let names: Vec<String> = conn
            .prepare("SELECT name FROM users ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(names, ["alice", "bob", "carol"]);
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
        let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("r.db")).unwrap());
        store.update_user("a", &mut |_| with_failures("a", 1)).unwrap();
        // A change applied into the open batch, held there until the reads
        // below are done.
        let (applied, was_applied) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let writing = store.clone();
        let writer = std::thread::spawn(move || {
            writing.write(move |conn| {
                apply_change(conn, "a", with_failures("a", 2))?;
                apply_change(conn, "b", with_failures("b", 0))?;
                conn.execute("INSERT INTO ip_rules (cidr, bypass_2fa) VALUES ('10.0.0.0/8', 1)", []).map_err(db)?;
                applied.send(()).unwrap();
                released.recv().unwrap();
                Ok(())
            })
        });
        was_applied.recv().unwrap();
        assert_eq!(store.get_user("a").unwrap().unwrap().failures, 1, "the committed state");
        assert!(store.get_user("b").unwrap().is_none());
        assert_eq!(store.list_users(None, 10).unwrap().len(), 1);
        assert!(store.list_ip_rules().unwrap().is_empty());
        release.send(()).unwrap();
        writer.join().unwrap().unwrap();
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

    /// The files are checked again only when something happened to them:
    /// a commit (to the -wal) is nothing, a checkpoint (a write to the store
    /// file) or another file in the directory is, and the check passes.
    #[test]
    fn the_files_are_checked_again_only_after_a_change() {
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        let checks = || store.files.as_ref().unwrap().checks.load(Relaxed);
        store.update_user("a", &mut |_| with_failures("a", 1)).unwrap();
        let before = checks();
        for n in 2..50 {
            store.update_user("a", &mut |_| with_failures("a", n)).unwrap();
            assert_eq!(store.get_user("a").unwrap().unwrap().failures, n);
        }
        assert_eq!(checks(), before, "checked again though nothing happened");
        fs::write(dir.path().join("unrelated"), b"x").unwrap();
        assert_eq!(store.get_user("a").unwrap().unwrap().failures, 49);
        assert_eq!(checks(), before + 1, "a file created in the directory");
        assert_eq!(store.get_user("a").unwrap().unwrap().failures, 49);
        assert_eq!(checks(), before + 1);
        store
            .writer
            .read(|conn| conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).map_err(db))
            .unwrap();
        store.update_user("a", &mut |_| with_failures("a", 50)).unwrap();
        assert_eq!(checks(), before + 2, "a checkpoint wrote the store file");
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
    fn a_panic_in_a_batch_does_not_strand_the_writers_sharing_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("b.db")).unwrap());
        // Writers arriving together share batches; every other one panics.
        let start = std::sync::Arc::new(std::sync::Barrier::new(8));
        let writers: Vec<_> = (0..8u32)
            .map(|i| {
                let (store, start) = (store.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let user = format!("u{i}");
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        store.update_user(&user, &mut |_| {
                            assert!(i % 2 == 0, "a bug in writer {i}'s change");
                            with_failures(&user, i)
                        })
                    }))
                })
            })
            .collect();
        let results: Vec<_> = writers.into_iter().map(|w| within_10s(move || w.join().unwrap())).collect();
        for (i, result) in results.iter().enumerate() {
            let result = result.as_ref().expect("a writer hung");
            assert_eq!(matches!(result, Ok(Ok(()))), i % 2 == 0, "writer {i}: {result:?}");
        }
        for i in (0..8).step_by(2) {
            assert_eq!(store.get_user(&format!("u{i}")).unwrap().unwrap().failures, i);
        }
        assert!(store.get_user("u1").unwrap().is_none(), "a panicked change was rolled back");
        let after = store.clone();
        let done = within_10s(move || after.update_user("c", &mut |_| with_failures("c", 1)));
        assert!(matches!(done, Some(Ok(()))), "an update after the panics: {done:?}");
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
