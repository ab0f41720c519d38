//! What resolving a name at login gave, remembered while it is an answer of
//! the `files` source and neither `/etc/nsswitch.conf` nor `/etc/passwd`
//! has changed.
//!
//! glibc reads and parses `/etc/passwd` from its start for every lookup,
//! and a login makes two (the name, then its uid's first name): most of a
//! login's lookup cost, and more the longer the file. While both files are
//! the same files with the same contents, the `files` source can only give
//! the same answer again, so one is kept. An answer is kept only when the
//! `files` source is the one that gave it: `passwd:` in nsswitch.conf names
//! `files` first (and without an action that would go on past it), the file
//! has no `+`/`-` (compat) lines, and `/etc/passwd` read here holds the name
//! with that uid, and that name first for the uid. Anything else (a
//! directory service's account, an unknown name, an error) is looked up
//! every time, as before. The cache sits inside the lookups' deadline
//! ([`super::DeadlineDirectory`]): its own reads of the files are bounded
//! as NSS's are.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Account, Directory};
use crate::clock::Clock;

/// The most answers kept: at most one per line of `/etc/passwd` can be.
const MAX_ANSWERS: usize = 65_536;

/// A larger `/etc/passwd` is not read here (its answers are not kept).
const MAX_PASSWD_BYTES: u64 = 16 * 1024 * 1024;

/// A directory whose login lookups of `files` accounts are remembered while
/// the files stay the same (see the module's documentation).
pub struct FilesCache {
    inner: Arc<dyn Directory>,
    clock: Arc<dyn Clock>,
    nsswitch: PathBuf,
    passwd: PathBuf,
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    /// The files the entries and answers below were read from.
    stamp: Option<Stamp>,
    /// `/etc/passwd` as read for that stamp; `None` when answers cannot be
    /// kept (`files` not consulted first, compat lines, unreadable).
    entries: Option<Entries>,
    answers: HashMap<String, (Account, String)>,
}

/// Which file each path is, and its size and times: a file edited in
/// place changes its times, one replaced (as useradd and vipw do) its inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp([FileStamp; 2]);

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let meta = fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// The accounts of `/etc/passwd`: each name's uid (its first line), and
/// each uid's first name.
struct Entries {
    uid_of: HashMap<String, u32>,
    first_name: HashMap<u32, String>,
}

impl Entries {
    /// Read for answers to be kept, or `None` when none may be.
    fn read(nsswitch: &Path, passwd: &Path) -> Option<Entries> {
        if !files_first(&fs::read_to_string(nsswitch).ok()?) {
            return None;
        }
        let mut text = String::new();
        fs::File::open(passwd).ok()?.take(MAX_PASSWD_BYTES + 1).read_to_string(&mut text).ok()?;
        if text.len() as u64 > MAX_PASSWD_BYTES {
            return None;
        }
        let mut entries = Entries { uid_of: HashMap::new(), first_name: HashMap::new() };
        for line in text.lines() {
            if line.starts_with(['+', '-']) {
                return None;
            }
            let fields: Vec<&str> = line.split(':').collect();
            let (Some(&name), Some(Ok(uid))) = (fields.first(), fields.get(2).map(|uid| uid.parse::<u32>())) else {
                continue;
            };
            if fields.len() != 7 || name.is_empty() {
                continue;
            }
            entries.uid_of.entry(name.to_string()).or_insert(uid);
            entries.first_name.entry(uid).or_insert_with(|| name.to_string());
        }
        Some(entries)
    }

    /// Whether the `files` source gives this answer for `name`.
    fn give(&self, name: &str, account: &Account, first: &str) -> bool {
        account.name == name
            && self.uid_of.get(name) == Some(&account.uid)
            && self.first_name.get(&account.uid).map(String::as_str) == Some(first)
    }
}

/// Whether nsswitch.conf's `passwd:` line (one, not several) consults
/// `files` first and stops at what it finds there (no `[...]` action after
/// it).
fn files_first(nsswitch: &str) -> bool {
    let lines: Vec<&str> = nsswitch
        .lines()
        .filter_map(|line| line.split('#').next().unwrap_or("").trim().strip_prefix("passwd:"))
        .collect();
    let [sources] = lines[..] else { return false };
    let mut words = sources.split_whitespace();
    words.next() == Some("files") && !words.next().is_some_and(|next| next.starts_with('['))
}

impl FilesCache {
    /// The system's files.
    pub fn system(inner: Arc<dyn Directory>, clock: Arc<dyn Clock>) -> FilesCache {
        FilesCache::new(inner, clock, "/etc/nsswitch.conf".into(), "/etc/passwd".into())
    }

    pub fn new(inner: Arc<dyn Directory>, clock: Arc<dyn Clock>, nsswitch: PathBuf, passwd: PathBuf) -> FilesCache {
        FilesCache { inner, clock, nsswitch, passwd, kept: Mutex::default() }
    }

    fn stamp(&self) -> Option<Stamp> {
        Some(Stamp([FileStamp::of(&self.nsswitch)?, FileStamp::of(&self.passwd)?]))
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Keep `name`'s answer if the `files` source gave it, as the files
    /// were at `stamp` (taken before the lookup).
    fn keep(&self, stamp: Stamp, name: &str, account: &Account, first: &str) {
        let mut kept = self.kept();
        if kept.stamp.as_ref() != Some(&stamp) {
            // A file's times tick coarsely (a few ms): one changed again
            // within the tick of its last change keeps its stamp. So the
            // files are read only once their last change is over a second
            // old, when any later one shows.
            let now = i64::try_from(self.clock.now()).unwrap_or(i64::MAX);
            if stamp.0.iter().any(|file| now <= file.ctime.0.saturating_add(1)) {
                *kept = Kept::default();
                return;
            }
            // Read for this stamp only if the files still are as stamped.
            let entries = Entries::read(&self.nsswitch, &self.passwd);
            let unchanged = self.stamp().as_ref() == Some(&stamp);
            *kept = Kept { stamp: Some(stamp), entries: entries.filter(|_| unchanged), answers: HashMap::new() };
        }
        let given = kept.entries.as_ref().is_some_and(|entries| entries.give(name, account, first));
        if given && kept.answers.len() < MAX_ANSWERS {
            kept.answers.insert(name.to_string(), (account.clone(), first.to_string()));
        }
    }
}

impl Directory for FilesCache {
    fn groups_of(&self, user: &str) -> Result<Vec<String>, String> {
        self.inner.groups_of(user)
    }

    fn account(&self, name: &str) -> Result<Option<Account>, String> {
        self.inner.account(name)
    }

    fn name_of_uid(&self, uid: u32) -> Result<Option<String>, String> {
        self.inner.name_of_uid(uid)
    }

    fn account_and_first_name(&self, name: &str) -> Result<Option<(Account, Option<String>)>, String> {
        let stamp = self.stamp();
        if let Some(stamp) = &stamp {
            let kept = self.kept();
            if kept.stamp.as_ref() == Some(stamp)
                && let Some((account, first)) = kept.answers.get(name)
            {
                return Ok(Some((account.clone(), Some(first.clone()))));
            }
        }
        let answer = self.inner.account_and_first_name(name)?;
        if let (Some(stamp), Some((account, Some(first)))) = (stamp, &answer) {
            self.keep(stamp, name, account, first);
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, SystemClock};

    /// A clock a minute ahead: the files written by a test are settled.
    fn later() -> Arc<dyn Clock> {
        Arc::new(ManualClock::new(SystemClock.now() + 60))
    }

    /// Answers from a table as NSS would, and counts the lookups.
    struct Table {
        accounts: Vec<(&'static str, u32)>,
        lookups: Mutex<usize>,
    }

    impl Table {
        fn new(accounts: &[(&'static str, u32)]) -> Arc<Table> {
            Arc::new(Table { accounts: accounts.to_vec(), lookups: Mutex::new(0) })
        }
        fn lookups(&self) -> usize {
            *self.lookups.lock().unwrap()
        }
    }

    impl Directory for Table {
        fn groups_of(&self, _: &str) -> Result<Vec<String>, String> {
            Ok(Vec::new())
        }
        fn account(&self, name: &str) -> Result<Option<Account>, String> {
            *self.lookups.lock().unwrap() += 1;
            let found = self.accounts.iter().find(|(n, _)| *n == name);
            Ok(found.map(|&(name, uid)| Account { name: name.to_string(), uid }))
        }
        fn name_of_uid(&self, uid: u32) -> Result<Option<String>, String> {
            Ok(self.accounts.iter().find(|(_, u)| *u == uid).map(|(name, _)| name.to_string()))
        }
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          toor:x:0:0::/root:/bin/sh\n\
                          alice:x:1000:1000:Alice:/home/alice:/bin/bash\n";

    /// nsswitch.conf and passwd files in a scratch directory, and a cache
    /// over `table` reading them.
    fn cache_of(nsswitch: &str, passwd: &str, table: Arc<Table>) -> (tempfile::TempDir, FilesCache) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("nsswitch.conf"), nsswitch).unwrap();
        fs::write(dir.path().join("passwd"), passwd).unwrap();
        let cache = FilesCache::new(table, later(), dir.path().join("nsswitch.conf"), dir.path().join("passwd"));
        (dir, cache)
    }

    fn resolve(cache: &FilesCache, name: &str) -> Option<(String, u32, Option<String>)> {
        let answer = cache.account_and_first_name(name).unwrap();
        answer.map(|(account, first)| (account.name, account.uid, first))
    }

    #[test]
    fn an_answer_of_the_files_source_is_looked_up_once_while_the_files_stay_the_same() {
        let table = Table::new(&[("root", 0), ("toor", 0), ("alice", 1000)]);
        let (_dir, cache) = cache_of("# comment\npasswd:         files systemd\ngroup: files\n", PASSWD, table.clone());
        for _ in 0..3 {
            assert_eq!(resolve(&cache, "alice"), Some(("alice".into(), 1000, Some("alice".into()))));
            // A second name of a uid keeps its uid's first name.
            assert_eq!(resolve(&cache, "toor"), Some(("toor".into(), 0, Some("root".into()))));
        }
        assert_eq!(table.lookups(), 2);
    }

    #[test]
    fn a_changed_passwd_or_nsswitch_conf_is_read_again() {
        let table = Table::new(&[("alice", 1000)]);
        let (dir, cache) = cache_of("passwd: files\n", PASSWD, table.clone());
        resolve(&cache, "alice");
        resolve(&cache, "alice");
        assert_eq!(table.lookups(), 1);
        // Replaced, as useradd and vipw do.
        let (passwd, new) = (dir.path().join("passwd"), dir.path().join("passwd+"));
        fs::write(&new, format!("{PASSWD}bob:x:1001:1001::/home/bob:/bin/sh\n")).unwrap();
        fs::rename(&new, &passwd).unwrap();
        resolve(&cache, "alice");
        resolve(&cache, "alice");
        assert_eq!(table.lookups(), 2);
        // Edited in place, same size.
        fs::write(&passwd, fs::read_to_string(&passwd).unwrap().replace("Alice", "Alica")).unwrap();
        resolve(&cache, "alice");
        assert_eq!(table.lookups(), 3);
        fs::write(dir.path().join("nsswitch.conf"), "passwd: files sss\n").unwrap();
        resolve(&cache, "alice");
        resolve(&cache, "alice");
        assert_eq!(table.lookups(), 4);
    }

    #[test]
    fn answers_the_files_source_may_not_have_given_are_looked_up_every_time() {
        // A directory service's account (not in /etc/passwd), a name no one
        // knows, an account whose uid differs from the file's.
        let table = Table::new(&[("ldapuser", 5000), ("alice", 1001)]);
        let (_dir, cache) = cache_of("passwd: files ldap\n", PASSWD, table.clone());
        for name in ["ldapuser", "nobody-here", "alice"] {
            resolve(&cache, name);
            resolve(&cache, name);
        }
        assert_eq!(table.lookups(), 6);
        // files not first, files with an action after it, compat lines.
        let alice = Table::new(&[("alice", 1000)]);
        for (nsswitch, passwd) in [
            ("passwd: sss files\n", PASSWD),
            ("passwd: files [NOTFOUND=return] ldap\n", PASSWD),
            ("passwd: compat\n", PASSWD),
            ("group: files\n", PASSWD),
            ("passwd: files\npasswd: ldap\n", PASSWD),
            ("passwd: files\n", &format!("{PASSWD}+@admins\n") as &str),
        ] {
            let before = alice.lookups();
            let (_dir, cache) = cache_of(nsswitch, passwd, alice.clone());
            resolve(&cache, "alice");
            resolve(&cache, "alice");
            assert_eq!(alice.lookups(), before + 2, "{nsswitch:?}");
        }
    }

    #[test]
    fn files_changed_within_the_last_second_are_read_again_at_each_lookup() {
        let table = Table::new(&[("alice", 1000)]);
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("nsswitch.conf"), "passwd: files\n").unwrap();
        fs::write(dir.path().join("passwd"), PASSWD).unwrap();
        let clock = Arc::new(ManualClock::new(SystemClock.now()));
        let cache =
            FilesCache::new(table.clone(), clock.clone(), dir.path().join("nsswitch.conf"), dir.path().join("passwd"));
        resolve(&cache, "alice");
        resolve(&cache, "alice");
        assert_eq!(table.lookups(), 2);
        clock.advance(2);
        resolve(&cache, "alice");
        resolve(&cache, "alice");
        assert_eq!(table.lookups(), 3);
    }

    #[test]
    fn a_lookup_that_fails_is_not_remembered() {
        struct Failing(Mutex<usize>);
        impl Directory for Failing {
            fn groups_of(&self, _: &str) -> Result<Vec<String>, String> {
                Ok(Vec::new())
            }
            fn account(&self, _: &str) -> Result<Option<Account>, String> {
                *self.0.lock().unwrap() += 1;
                Err("the directory is down".into())
            }
            fn name_of_uid(&self, _: u32) -> Result<Option<String>, String> {
                Ok(None)
            }
        }
        let failing = Arc::new(Failing(Mutex::new(0)));
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("nsswitch.conf"), "passwd: files\n").unwrap();
        fs::write(dir.path().join("passwd"), PASSWD).unwrap();
        let cache =
            FilesCache::new(failing.clone(), later(), dir.path().join("nsswitch.conf"), dir.path().join("passwd"));
        assert!(cache.account_and_first_name("alice").is_err());
        assert!(cache.account_and_first_name("alice").is_err());
        assert_eq!(*failing.0.lock().unwrap(), 2);
    }
}
