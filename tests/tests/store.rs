//! The store conformance suite: every property the daemon relies on, written
//! once and run against both backends (SQLite in a temp dir, PostgreSQL in
//! a scratch cluster, a fresh database per test).

use std::sync::{Arc, Barrier};

use e2e::postgres::PgCluster;
use mfa_shared::bypass::{RuleOrigin, parse_network};
use mfa_shared::config::{StoreBackend, StoreConfig};
use mfa_shared::protocol::{Algorithm, OtpType};
use mfad::crypto::Vault;
use mfad::keys::{self, KEY_ID, KeyError};
use mfad::store::postgres::Settings;
use mfad::store::{Change, Device, PostgresStore, SqliteStore, Store, UserRecord};

/// One backend: how to open (and reopen) a store on the same data.
trait Backend: Sync {
    fn open(&self) -> Arc<dyn Store>;
}

struct Sqlite(tempfile::TempDir);

impl Sqlite {
    fn new() -> Sqlite {
        Sqlite(tempfile::tempdir().unwrap())
    }
}

impl Backend for Sqlite {
    fn open(&self) -> Arc<dyn Store> {
        let path = self.0.path().join("mfad.db");
        let store = if path.exists() { SqliteStore::open_existing(&path) } else { SqliteStore::create(&path) };
        Arc::new(store.unwrap())
    }
}

struct Postgres(String);

impl Postgres {
    fn new() -> Postgres {
        Postgres(PgCluster::shared().new_database())
    }
}

impl Backend for Postgres {
    fn open(&self) -> Arc<dyn Store> {
        Arc::new(PostgresStore::open(settings(&self.0)).unwrap())
    }
}

fn settings(url: &str) -> Settings {
    let config = StoreConfig { backend: StoreBackend::Postgres, url: Some(url.to_string()), ..StoreConfig::default() };
    Settings::from_config(&config).unwrap()
}

/// A PostgreSQL store at `url` holding at most `pool_size` connections.
fn with_pool(url: &str, pool_size: usize) -> PostgresStore {
    let config = StoreConfig {
        backend: StoreBackend::Postgres,
        url: Some(url.to_string()),
        pool_size,
        ..StoreConfig::default()
    };
    PostgresStore::open(Settings::from_config(&config).unwrap()).unwrap()
}

/// Each property as a test per backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(&super::Sqlite::new()); } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(&super::Postgres::new()); } )*
        }
    };
}

conformance!(
    records_are_written_read_and_deleted,
    a_change_that_keeps_leaves_no_record,
    users_are_listed_in_byte_order_page_by_page,
    concurrent_updates_lose_nothing,
    a_contested_counter_is_taken_exactly_once,
    a_contested_counter_read_first_is_taken_exactly_once,
    a_change_after_a_read_sees_the_writes_since,
    bulk_updates_are_all_or_nothing_per_call,
    ip_rules_are_added_listed_and_removed,
    settings_are_set_once_by_the_first_of_many,
    everything_survives_a_reopen,
    the_store_takes_the_first_key_and_refuses_another,
    rekey_reseals_every_secret_and_keeps_recovery_codes,
);

fn with_failures(user: &str, failures: u32) -> Change {
    let mut record = UserRecord::new(user);
    record.failures = failures;
    Change::Put(record)
}

fn records_are_written_read_and_deleted(backend: &dyn Backend) {
    let store = backend.open();
    assert!(store.get_user("alice").unwrap().is_none());
    store
        .update_user("alice", &mut |current| {
            assert!(current.is_none());
            with_failures("alice", 2)
        })
        .unwrap();
    assert_eq!(store.get_user("alice").unwrap().unwrap().failures, 2);
    store
        .update_user("alice", &mut |current| {
            assert_eq!(current.unwrap().failures, 2, "the change sees the stored record");
            with_failures("alice", 3)
        })
        .unwrap();
    assert_eq!(store.get_user("alice").unwrap().unwrap().failures, 3);
    store.update_user("alice", &mut |_| Change::Delete).unwrap();
    assert!(store.get_user("alice").unwrap().is_none());
    assert!(store.list_users(None, 10).unwrap().is_empty());
}

fn a_change_that_keeps_leaves_no_record(backend: &dyn Backend) {
    let store = backend.open();
    store.update_user("ghost", &mut |_| Change::Keep).unwrap();
    store.update_users(&["ghost2".to_string()], &mut |_, _| Change::Keep).unwrap();
    // Deleting what is not there is no error either.
    store.update_user("ghost3", &mut |_| Change::Delete).unwrap();
    assert!(store.get_user("ghost").unwrap().is_none());
    assert!(store.list_users(None, 10).unwrap().is_empty(), "{:?}", store.list_users(None, 10));
}

fn users_are_listed_in_byte_order_page_by_page(backend: &dyn Backend) {
    let store = backend.open();
    let names = ["bob", "Alice", "alice", "émile", "zoe", "alice.b", "alice@example.org"];
    for name in names {
        store.update_user(name, &mut |_| with_failures(name, 1)).unwrap();
    }
    let mut expected: Vec<&str> = names.to_vec();
    expected.sort();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_users(after.as_deref(), 3).unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = Some(last.user.clone());
        seen.extend(page.into_iter().map(|r| r.user));
    }
    assert_eq!(seen, expected);
}

fn concurrent_updates_lose_nothing(backend: &dyn Backend) {
    let store = backend.open();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            std::thread::spawn(move || {
                for _ in 0..15 {
                    for user in ["shared", if i % 2 == 0 { "even" } else { "odd" }] {
                        store
                            .update_user(user, &mut |current| {
                                let mut record = current.cloned().unwrap_or_else(|| UserRecord::new(user));
                                record.failures += 1;
                                Change::Put(record)
                            })
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    drop(store);
    let store = backend.open();
    assert_eq!(store.get_user("shared").unwrap().unwrap().failures, 120);
    assert_eq!(store.get_user("even").unwrap().unwrap().failures, 60);
    assert_eq!(store.get_user("odd").unwrap().unwrap().failures, 60);
}

/// The shape of a code check: read the counter, accept only if it is the
/// one offered, advance it. Stores opened separately (two hosts' pools)
/// race on it; exactly one must win each round.
fn a_contested_counter_is_taken_exactly_once(backend: &dyn Backend) {
    contested_counter(backend, false);
}

/// The same as a login makes it: each contender has read the record (its
/// prompt) before it offers the code.
fn a_contested_counter_read_first_is_taken_exactly_once(backend: &dyn Backend) {
    contested_counter(backend, true);
}

/// A change to a record read before is made to the record as it is when
/// written: another host's write in between is never lost.
fn a_change_after_a_read_sees_the_writes_since(backend: &dyn Backend) {
    let hosts = [backend.open(), backend.open()];
    hosts[0].update_user("dave", &mut |_| with_failures("dave", 1)).unwrap();
    assert_eq!(hosts[0].get_user("dave").unwrap().unwrap().failures, 1);
    hosts[1].update_user("dave", &mut |_| with_failures("dave", 5)).unwrap();
    let mut seen = Vec::new();
    hosts[0]
        .update_user("dave", &mut |current| {
            let failures = current.unwrap().failures;
            seen.push(failures);
            with_failures("dave", failures + 1)
        })
        .unwrap();
    assert_eq!(seen.last(), Some(&5), "the change was made to the record as written by the other host: {seen:?}");
    assert_eq!(hosts[1].get_user("dave").unwrap().unwrap().failures, 6);
}

fn contested_counter(backend: &dyn Backend, read_first: bool) {
    let hosts = [backend.open(), backend.open()];
    let device = |counter| Device {
        otp_type: OtpType::Hotp,
        algorithm: Algorithm::Sha1,
        digits: 6,
        period: 30,
        sealed_secret: vec![0; 40],
        next_counter: counter,
        last_step: None,
        created_at: 0,
    };
    hosts[0]
        .update_user("carol", &mut |_| {
            let mut record = UserRecord::new("carol");
            record.device = Some(device(0));
            Change::Put(record)
        })
        .unwrap();
    for round in 0..10u64 {
        let contenders = 12;
        let barrier = Arc::new(Barrier::new(contenders));
        let threads: Vec<_> = (0..contenders)
            .map(|i| {
                let store = hosts[i % 2].clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let mut won = false;
                    if read_first {
                        store.get_user("carol").unwrap();
                    }
                    barrier.wait();
                    store
                        .update_user("carol", &mut |current| {
                            let record = current.unwrap();
                            won = record.device.as_ref().unwrap().next_counter == round;
                            if !won {
                                return Change::Keep;
                            }
                            let mut next = record.clone();
                            next.device = Some(device(round + 1));
                            Change::Put(next)
                        })
                        .unwrap();
                    won
                })
            })
            .collect();
        let winners = threads.into_iter().map(|t| t.join().unwrap()).filter(|won| *won).count();
        assert_eq!(winners, 1, "round {round}");
    }
}

fn bulk_updates_are_all_or_nothing_per_call(backend: &dyn Backend) {
    let store = backend.open();
    store.update_user("b", &mut |_| with_failures("b", 7)).unwrap();
    let names: Vec<String> = ["c", "a", "b", "d"].iter().map(|s| s.to_string()).collect();
    let mut called = Vec::new();
    store
        .update_users(&names, &mut |name, current| {
            called.push(name.to_string());
            match name {
                "b" => {
                    assert_eq!(current.unwrap().failures, 7);
                    Change::Delete
                }
                "d" => Change::Keep,
                _ => with_failures(name, 1),
            }
        })
        .unwrap();
    called.sort();
    assert_eq!(called, ["a", "b", "c", "d"], "called once per name");
    let listed: Vec<String> = store.list_users(None, 10).unwrap().into_iter().map(|r| r.user).collect();
    assert_eq!(listed, ["a", "c"]);
}

fn ip_rules_are_added_listed_and_removed(backend: &dyn Backend) {
    let store = backend.open();
    let first = store.add_ip_rule(parse_network("10.0.0.0/8").unwrap(), true, Some(5)).unwrap();
    let second = store.add_ip_rule(parse_network("2001:db8::/32").unwrap(), false, None).unwrap();
    assert_ne!(first, second);
    let rules = store.list_ip_rules().unwrap();
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].origin, RuleOrigin::Runtime { id: first });
    assert_eq!(rules[0].network.to_string(), "10.0.0.0/8");
    assert!(rules[0].bypass_2fa);
    assert_eq!(rules[0].expires_at, Some(5));
    assert_eq!(rules[1].expires_at, None);
    assert!(store.remove_ip_rule(first).unwrap());
    assert!(!store.remove_ip_rule(first).unwrap());
    assert_eq!(store.list_ip_rules().unwrap().len(), 1);
}

fn settings_are_set_once_by_the_first_of_many(backend: &dyn Backend) {
    let store = backend.open();
    assert_eq!(store.get_meta("colour").unwrap(), None);
    let barrier = Arc::new(Barrier::new(6));
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let store = backend.open();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                store.init_meta("colour", &format!("host{i}")).unwrap()
            })
        })
        .collect();
    let values: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(values.iter().all(|v| *v == values[0]), "every host sees the first value: {values:?}");
    assert_eq!(store.get_meta("colour").unwrap().as_deref(), Some(values[0].as_str()));
    store.set_meta("colour", Some("blue")).unwrap();
    assert_eq!(store.init_meta("colour", "red").unwrap(), "blue");
    store.set_meta("colour", None).unwrap();
    assert_eq!(store.get_meta("colour").unwrap(), None);
}

fn everything_survives_a_reopen(backend: &dyn Backend) {
    let store = backend.open();
    store.update_user("dave", &mut |_| with_failures("dave", 4)).unwrap();
    let id = store.add_ip_rule(parse_network("192.0.2.0/24").unwrap(), true, None).unwrap();
    store.set_meta("k", Some("v")).unwrap();
    drop(store);
    // Opened again: a restart, and several at once.
    let store = std::thread::scope(|scope| {
        let opening: Vec<_> = (0..4).map(|_| scope.spawn(|| backend.open())).collect();
        opening.into_iter().map(|t| t.join().unwrap()).next_back().unwrap()
    });
    assert_eq!(store.get_user("dave").unwrap().unwrap().failures, 4);
    assert_eq!(store.list_ip_rules().unwrap()[0].origin, RuleOrigin::Runtime { id });
    assert_eq!(store.get_meta("k").unwrap().as_deref(), Some("v"));
}

fn key(byte: u8) -> [u8; 32] {
    [byte; 32]
}

fn the_store_takes_the_first_key_and_refuses_another(backend: &dyn Backend) {
    let store = backend.open();
    let vault = Vault::from_key(&key(1));
    keys::bind(&vault, &*store).unwrap();
    let id = vault.key_ids()[0].clone();
    assert_eq!(store.get_meta(KEY_ID).unwrap(), Some(id.0.clone()));
    let pepper = vault.pepper().clone();
    // The same key again (another host, a restart): the same pepper.
    let again = Vault::from_key(&key(1));
    keys::bind(&again, &*store).unwrap();
    assert!(again.pepper() == &pepper);
    // Another key: refused, saying which key the store has.
    let other = Vault::from_key(&key(2));
    let err = keys::bind(&other, &*store).unwrap_err();
    assert!(matches!(err, KeyError::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains(&id.0), "{err}");
}

fn rekey_reseals_every_secret_and_keeps_recovery_codes(backend: &dyn Backend) {
    let store = backend.open();
    let dir = tempfile::tempdir().unwrap();
    let new_key = dir.path().join("new.key");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&new_key).unwrap();
        std::io::Write::write_all(&mut file, &key(9)).unwrap();
    }
    let old = Vault::from_key(&key(1));
    keys::bind(&old, &*store).unwrap();
    let pepper = old.pepper().clone();
    for user in ["u1", "u2", "u3"] {
        let sealed = old.seal(user, b"12345678901234567890").unwrap();
        store
            .update_user(user, &mut |_| {
                let mut record = UserRecord::new(user);
                record.device = Some(Device {
                    otp_type: OtpType::Totp,
                    algorithm: Algorithm::Sha1,
                    digits: 6,
                    period: 30,
                    sealed_secret: sealed.clone(),
                    next_counter: 0,
                    last_step: None,
                    created_at: 0,
                });
                Change::Put(record)
            })
            .unwrap();
    }
    let mut both = Vault::from_key(&key(1));
    keys::bind(&both, &*store).unwrap();
    let new = both.accept_key_file(&new_key).unwrap();
    let done = keys::rekey(&both, &*store, &new).unwrap();
    assert_eq!((done.resealed, done.records), (3, 3));
    // Run again (as after an interruption): nothing left to do.
    assert_eq!(keys::rekey(&both, &*store, &new).unwrap().resealed, 0);
    // A host with only the new key opens everything, with the same pepper.
    let only_new = Vault::from_key(&key(9));
    keys::bind(&only_new, &*store).unwrap();
    assert!(only_new.pepper() == &pepper, "recovery codes stay valid");
    for user in ["u1", "u2", "u3"] {
        let record = store.get_user(user).unwrap().unwrap();
        let secret = only_new.open(user, &record.device.unwrap().sealed_secret).unwrap();
        assert_eq!(&secret[..], b"12345678901234567890");
    }
    // A host with only the old key is refused.
    assert!(keys::bind(&Vault::from_key(&key(1)), &*store).is_err());
}

/// Twenty hosts starting at once on a new database: one migrates, the
/// others wait for it and find the schema current.
#[test]
fn postgres_hosts_starting_at_once_migrate_once() {
    let url = PgCluster::shared().new_database();
    let stores: Vec<Arc<dyn Store>> = std::thread::scope(|scope| {
        let opening: Vec<_> = (0..20).map(|_| scope.spawn(|| Postgres(url.clone()).open())).collect();
        opening.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert_eq!(stores.len(), 20);
    let cluster = PgCluster::shared();
    assert_eq!(cluster.psql(&url, "SELECT count(*), max(version) FROM mfad_schema").trim(), "1|1");
    stores[0].update_user("x", &mut |_| with_failures("x", 1)).unwrap();
    assert_eq!(stores[19].get_user("x").unwrap().unwrap().failures, 1, "one database behind all");
}

/// A write the database refuses (here a trigger) is an error, changes
/// nothing, and leaves no transaction open on the pooled connection it
/// used: the write is sent together with its COMMIT, which must then roll
/// back, and the next updates, on the same single connection, still hold
/// their row locks and commit.
#[test]
fn postgres_a_refused_write_commits_nothing_and_leaves_the_connection_clean() {
    let url = PgCluster::shared().new_database();
    let store = with_pool(&url, 1);
    store.update_user("mallory", &mut |_| with_failures("mallory", 1)).unwrap();
    PgCluster::shared().psql(
        &url,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN IF NEW.name = 'mallory' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$; \
         CREATE TRIGGER refuse BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION refuse();",
    );
    let err = store.update_user("mallory", &mut |_| with_failures("mallory", 2)).unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert_eq!(store.get_user("mallory").unwrap().unwrap().failures, 1, "nothing committed");
    // The one connection is back outside a transaction: what it commits
    // now is seen by another connection, and its row lock is released.
    store.update_user("alice", &mut |_| with_failures("alice", 3)).unwrap();
    store.update_user("alice", &mut |current| with_failures("alice", current.unwrap().failures + 1)).unwrap();
    let other = PostgresStore::open(settings(&url)).unwrap();
    assert_eq!(other.get_user("alice").unwrap().unwrap().failures, 4);
    other.update_user("alice", &mut |_| with_failures("alice", 5)).unwrap();
    assert_eq!(store.get_user("alice").unwrap().unwrap().failures, 5);
}

/// An operation that fails inside its transaction (a record that does
/// not decode, found under the row lock) does not leave the transaction
/// open on the pooled connection: the next code check after a read, on the
/// same single connection, is a lone UPDATE that must commit on its own.
#[test]
fn postgres_a_failed_operation_leaves_no_transaction_for_the_next() {
    let url = PgCluster::shared().new_database();
    let store = with_pool(&url, 1);
    store.update_user("mallory", &mut |_| with_failures("mallory", 1)).unwrap();
    store.update_user("alice", &mut |_| with_failures("alice", 1)).unwrap();
    PgCluster::shared().psql(&url, "UPDATE users SET record = 'not a record' WHERE name = 'mallory'");
    let err = store.update_user("mallory", &mut |_| with_failures("mallory", 2)).unwrap_err();
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert_eq!(store.get_user("alice").unwrap().unwrap().failures, 1);
    store.update_user("alice", &mut |current| with_failures("alice", current.unwrap().failures + 1)).unwrap();
    let other = PostgresStore::open(settings(&url)).unwrap();
    assert_eq!(other.get_user("alice").unwrap().unwrap().failures, 2, "the write after the failure was committed");
    // And the failed operation's row lock is gone with its transaction.
    let repaired = PgCluster::shared()
        .psql(&url, "SET lock_timeout = '5s'; UPDATE users SET record = NULL WHERE name = 'mallory' RETURNING name");
    assert!(repaired.contains("mallory"), "{repaired}");
}

/// A code check after a read is a lone UPDATE, committed at the end of its
/// exchange: an error the database raises at that commit (here a deferred
/// constraint trigger) fails the check, and nothing of it is seen.
#[test]
fn postgres_a_lone_update_refused_at_its_commit_fails_and_commits_nothing() {
    let url = PgCluster::shared().new_database();
    let store = with_pool(&url, 1);
    store.update_user("alice", &mut |_| with_failures("alice", 1)).unwrap();
    PgCluster::shared().psql(
        &url,
        "CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN IF NEW.name = 'alice' THEN RAISE EXCEPTION 'refused at commit'; END IF; RETURN NULL; END $$; \
         CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER UPDATE ON users DEFERRABLE INITIALLY DEFERRED \
         FOR EACH ROW EXECUTE FUNCTION refuse_at_commit();",
    );
    assert_eq!(store.get_user("alice").unwrap().unwrap().failures, 1);
    let err = store.update_user("alice", &mut |current| with_failures("alice", current.unwrap().failures + 1));
    assert!(err.unwrap_err().to_string().contains("refused at commit"));
    let other = PostgresStore::open(settings(&url)).unwrap();
    assert_eq!(other.get_user("alice").unwrap().unwrap().failures, 1, "nothing committed");
}

/// An error outside any transaction (a tampered IP rule, read at every
/// login from an address) leaves the connection in the pool: the failing
/// reads do not make a new connection each.
#[test]
fn postgres_an_error_outside_a_transaction_keeps_the_connection() {
    let url = PgCluster::shared().new_database();
    let store = with_pool(&url, 1);
    store.add_ip_rule(parse_network("10.1.0.0/16").unwrap(), true, None).unwrap();
    PgCluster::shared().psql(&url, "UPDATE ip_rules SET cidr = 'not a network'");
    let backend = || {
        PgCluster::shared().psql(
            &url,
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'mfad'",
        )
    };
    let before = backend();
    for _ in 0..3 {
        assert!(store.list_ip_rules().unwrap_err().to_string().contains("corrupt"));
    }
    assert_eq!(backend(), before, "the same one connection");
}

/// A connection the server closed while it sat in the pool (a restart, a
/// failover, `idle_session_timeout`) is found closed when it is taken, not
/// by the request it would have been lent to: that request is served, on a
/// new connection, instead of being answered `unavailable`.
#[test]
fn postgres_connections_the_server_closed_while_idle_are_not_lent() {
    let url = PgCluster::shared().new_database();
    let store = with_pool(&url, 2);
    store.update_user("idle", &mut |_| with_failures("idle", 1)).unwrap();
    let terminated = PgCluster::shared().psql(
        &url,
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM \
         (SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
          AND application_name = 'mfad' AND pid <> pg_backend_pid() OFFSET 0) AS pooled",
    );
    assert_eq!(terminated.trim(), "1", "the pooled connection was there, and is gone");
    for _ in 0..3 {
        assert_eq!(store.get_user("idle").unwrap().unwrap().failures, 1);
    }
}

/// A schema newer than this mfad (a later version already ran on the
/// fleet) is refused with a message, never used.
#[test]
fn postgres_a_newer_schema_is_refused() {
    let url = PgCluster::shared().new_database();
    drop(Postgres(url.clone()).open());
    PgCluster::shared().psql(&url, "UPDATE mfad_schema SET version = 99");
    let err = PostgresStore::open(settings(&url)).unwrap_err();
    assert!(err.to_string().contains("newer than this mfad"), "{err}");
}

/// Every pooled connection in use is overload, answered `busy` (never the
/// failmode), not an outage.
#[test]
fn postgres_a_pool_with_every_connection_in_use_is_busy_not_unreachable() {
    let url = PgCluster::shared().new_database();
    let config = StoreConfig {
        backend: StoreBackend::Postgres,
        url: Some(url),
        pool_size: 1,
        connect_timeout: mfa_shared::config::ConfigDuration(std::time::Duration::from_secs(2)),
        ..StoreConfig::default()
    };
    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(Settings::from_config(&config).unwrap()).unwrap());
    let (held, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
    let holder = {
        let (store, held, release) = (store.clone(), held.clone(), release.clone());
        std::thread::spawn(move || {
            store
                .update_user("busy", &mut |_| {
                    held.wait();
                    release.wait();
                    Change::Keep
                })
                .unwrap()
        })
    };
    held.wait();
    let err = store.get_user("busy").unwrap_err();
    release.wait();
    holder.join().unwrap();
    assert!(matches!(err, mfad::store::StoreError::Busy(_)), "{err}");
    assert!(store.get_user("busy").unwrap().is_none(), "free again");
}

/// After the schema was created (by its owner), a role with no more than
/// the rights on its rows can run mfad: no DDL at a start that has nothing
/// to migrate.
#[test]
fn postgres_a_role_with_row_rights_only_runs_after_the_first_start() {
    let cluster = PgCluster::shared();
    let url = cluster.new_database();
    drop(Postgres(url.clone()).open());
    let role = format!("mfad_rows_{}", std::process::id());
    cluster.psql(
        &url,
        &format!(
            "CREATE ROLE {role} LOGIN; REVOKE CREATE ON SCHEMA public FROM PUBLIC; \
             GRANT SELECT, INSERT, UPDATE, DELETE ON users, ip_rules, meta, mfad_schema TO {role}; \
             GRANT USAGE ON SEQUENCE ip_rules_id_seq TO {role}"
        ),
    );
    let as_role = url.replace("user=mfad", &format!("user={role}"));
    let store = PostgresStore::open(settings(&as_role)).unwrap();
    store.update_user("r", &mut |_| with_failures("r", 1)).unwrap();
    store.add_ip_rule(parse_network("10.1.0.0/16").unwrap(), true, None).unwrap();
    assert_eq!(store.get_user("r").unwrap().unwrap().failures, 1);
}
