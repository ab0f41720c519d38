//! The SQLite store's files on disk. They are checked when opened, as the
//! key file is (no symbolic link, a regular file owned by the effective uid,
//! no access for group or others, checked on the opened descriptor), and
//! before every use: mfad never answers from, or writes into, a store file
//! that was deleted, replaced or overwritten while it ran. SQLite alone
//! would: it keeps using the descriptors it holds (a deleted file lives on
//! until closed, and its writes are lost at the next start) and answers
//! reads from its page cache.
//!
//! Before a use, inotify says whether anything happened in the store's
//! directory (a file created, deleted or renamed) or to the store file (a
//! write, a change of its links or mode) since the last check, at the cost
//! of one read that finds nothing; only then are the files checked again
//! (three `statx` and the header). That is what a store file changed on
//! this host can show; without inotify (no instance or watch left) every
//! use checks the files.

use std::ffi::CString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::statvfs::{FsFlags, fstatvfs};

use super::{StoreError, StoreFault};

/// The first 16 bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Why the store was not opened. Each message names the file and says what
/// to do.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("store {0} does not exist")]
    Missing(PathBuf),
    #[error(
        "store {0} is a symbolic link, which mfad does not follow; replace the link with the file itself (mode 0600, owned by the user mfad runs as)"
    )]
    Symlink(PathBuf),
    #[error("store {0} is not a regular file; move it aside and restore the store from backup")]
    NotRegular(PathBuf),
    #[error("store {path} is owned by uid {owner}, not by uid {euid} that mfad runs as; run: chown {euid} {path}")]
    Owner { path: PathBuf, owner: u32, euid: u32 },
    #[error("store {path} has mode {mode:04o}: it is open to group or others; run: chmod 600 {path}")]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "store {path} is not a usable SQLite database ({why}): it is damaged, or not mfad's store. Restore it from backup (move its -wal and -shm files aside with it, unless they come from the same backup); mfad never replaces a store with an empty one"
    )]
    Damaged { path: PathBuf, why: String },
    #[error("store {0} exists already; mfad creates a store only where there is none")]
    Exists(PathBuf),
    #[error(
        "store {0} is on a read-only file system; mfad records every accepted code in it, so it must be writable: remount it read-write"
    )]
    ReadOnly(PathBuf),
    #[error("store {path}: {source}")]
    Store { path: PathBuf, source: StoreError },
}

impl OpenError {
    fn io(path: &Path, source: io::Error) -> Self {
        if source.raw_os_error() == Some(libc::EROFS) {
            return OpenError::ReadOnly(path.to_path_buf());
        }
        OpenError::Io { path: path.to_path_buf(), source }
    }

    /// A store error met while opening, with the file's name.
    pub(super) fn store(path: &Path, err: StoreError) -> Self {
        let path = path.to_path_buf();
        match err {
            StoreError::Unusable { fault: StoreFault::Damaged, cause, .. } => OpenError::Damaged { path, why: cause },
            StoreError::Unusable { fault: StoreFault::ReadOnly, .. } => OpenError::ReadOnly(path),
            source => OpenError::Store { path, source },
        }
    }
}

/// Open `path` read-only without following a symbolic link (and without
/// blocking on a FIFO), and check type, owner and mode on the descriptor.
pub(super) fn open_checked(path: &Path) -> Result<File, OpenError> {
    let file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path) {
        Ok(file) => file,
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => return Err(OpenError::Symlink(path.to_path_buf())),
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Err(OpenError::Missing(path.to_path_buf())),
        Err(err) => return Err(OpenError::io(path, err)),
    };
    let meta = file.metadata().map_err(|e| OpenError::io(path, e))?;
    check_metadata(path, &meta, nix::unistd::geteuid().as_raw())?;
    Ok(file)
}

/// Type, owner and mode of an opened store file: another owner could read
/// the store or swap it; group or other access would expose the replay
/// state and the sealed secrets to other users.
pub(super) fn check_metadata(path: &Path, meta: &fs::Metadata, euid: u32) -> Result<(), OpenError> {
    if !meta.file_type().is_file() {
        return Err(OpenError::NotRegular(path.to_path_buf()));
    }
    if meta.uid() != euid {
        return Err(OpenError::Owner { path: path.to_path_buf(), owner: meta.uid(), euid });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(OpenError::Permissions { path: path.to_path_buf(), mode });
    }
    Ok(())
}

/// SQLite's -wal and -shm files next to `path`.
pub(super) fn companions(path: &Path) -> [PathBuf; 2] {
    ["-wal", "-shm"].map(|suffix| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    })
}

/// The -wal and -shm files, when they exist, pass the same checks.
pub(super) fn check_companions(path: &Path) -> Result<(), OpenError> {
    for companion in companions(path) {
        match open_checked(&companion) {
            Ok(_) | Err(OpenError::Missing(_)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Why `file` does not start with a SQLite header, if it does not. An
/// empty file is refused too: SQLite would silently make a fresh, empty
/// database of it.
pub(super) fn header_problem(file: &File) -> Option<String> {
    let mut header = [0u8; SQLITE_HEADER.len()];
    match file.read_exact_at(&mut header, 0) {
        Ok(()) if &header == SQLITE_HEADER => None,
        Ok(()) => Some("it does not start with the SQLite header".to_string()),
        Err(_) if file.metadata().is_ok_and(|m| m.len() == 0) => Some("the file is empty".to_string()),
        Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
            Some("the file is shorter than a SQLite header".to_string())
        }
        Err(err) => Some(format!("cannot read its header: {err}")),
    }
}

/// (device, inode) of a file.
type Identity = (u64, u64);

fn identity(meta: &fs::Metadata) -> Identity {
    (meta.dev(), meta.ino())
}

/// The identity of the file at `path` (a link itself, not followed), asking
/// for nothing else. `stat` would ask for its times too, and on a file
/// system with fine-grained time stamps (ext4, XFS, btrfs and tmpfs since
/// Linux 6.13) a file whose times were asked for takes a new time stamp at
/// its next write, which dirties its inode: were SQLite built to sync with
/// fsync rather than fdatasync (.cargo/config.toml), each commit's sync of
/// the WAL, checked before each commit, would then write the inode too, a
/// second disk write per commit.
fn identity_at(path: &Path) -> io::Result<Identity> {
    // Without statx (an old kernel, a seccomp filter without it) or an
    // inode number in its answer: stat.
    let by_stat = || fs::symlink_metadata(path).map(|meta| identity(&meta));
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut stx = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `c_path` is NUL-terminated and `stx` is a writable statx
    // buffer; the kernel fills what it returns.
    let rc = unsafe {
        libc::statx(libc::AT_FDCWD, c_path.as_ptr(), libc::AT_SYMLINK_NOFOLLOW, libc::STATX_INO, stx.as_mut_ptr())
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOSYS | libc::EPERM) => by_stat(),
            _ => Err(err),
        };
    }
    // SAFETY: statx succeeded; the buffer was zeroed and is now filled.
    let stx = unsafe { stx.assume_init() };
    if stx.stx_mask & libc::STATX_INO == 0 {
        return by_stat();
    }
    Ok((libc::makedev(stx.stx_dev_major, stx.stx_dev_minor), stx.stx_ino))
}

/// The files of an open store, as they were when it was opened.
#[derive(Debug)]
pub(super) struct StoreFiles {
    path: PathBuf,
    /// Our own read-only descriptor of the store file: its header and its
    /// file system are checked through it.
    file: File,
    /// The store file and its -wal and -shm, each with its identity.
    pinned: Vec<(PathBuf, Identity)>,
    /// What happens to the files (None without inotify).
    changes: Option<Changes>,
    /// Whether the last check passed; held while checking, so that no use
    /// skips a check on the strength of one under way.
    passed: Mutex<bool>,
    /// How many times the files were checked.
    #[cfg(test)]
    pub(super) checks: std::sync::atomic::AtomicUsize,
}

/// Events in the store's directory and on the store file.
#[derive(Debug)]
struct Changes(Inotify);

impl Changes {
    fn watch(path: &Path) -> Option<Changes> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
        let in_dir = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_DELETE_SELF
            | AddWatchFlags::IN_MOVE_SELF
            | AddWatchFlags::IN_ONLYDIR;
        inotify.add_watch(dir, in_dir).ok()?;
        let on_file = AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_ATTRIB | AddWatchFlags::IN_DONT_FOLLOW;
        inotify.add_watch(path, on_file).ok()?;
        Some(Changes(inotify))
    }

    /// Whether anything happened since the last call (every event queued
    /// is taken); true when inotify cannot tell (its queue overflowed: an
    /// event of its own; a failed read).
    fn any(&self) -> bool {
        // Room for an event with the longest name (16 + NAME_MAX + 1 bytes);
        // the events are not parsed. A longer name (FUSE allows them) makes
        // the read fail, and then every use checks the files.
        let mut buf = [0u8; 512];
        let mut any = false;
        loop {
            match nix::unistd::read(self.0.as_fd().as_raw_fd(), &mut buf) {
                Ok(0) => return true,
                Ok(_) => any = true,
                Err(Errno::EAGAIN) => return any,
                Err(_) => return true,
            }
        }
    }
}

impl StoreFiles {
    /// Pin the store file open as `file`, and its -wal and -shm files as
    /// they are now (SQLite keeps them while a connection is open).
    pub(super) fn pin(path: &Path, file: File) -> Result<Self, OpenError> {
        // Watched before the identities are taken: no change falls between.
        let changes = Changes::watch(path);
        let own = identity(&file.metadata().map_err(|e| OpenError::io(path, e))?);
        let mut pinned = vec![(path.to_path_buf(), own)];
        for companion in companions(path) {
            if let Ok(found) = identity_at(&companion) {
                pinned.push((companion, found));
            }
        }
        let files = StoreFiles {
            path: path.to_path_buf(),
            file,
            pinned,
            changes,
            passed: Mutex::new(false),
            #[cfg(test)]
            checks: Default::default(),
        };
        files.verify().map_err(|err| OpenError::store(path, err))?;
        Ok(files)
    }

    fn unusable(&self, fault: StoreFault, cause: String) -> StoreError {
        StoreError::Unusable { fault, location: self.path.display().to_string(), cause }
    }

    /// Whether the files at the store's paths are still the ones opened, and
    /// the store file still starts with a SQLite header: checked when
    /// something happened to them since the last check passed (see the
    /// module's doc).
    pub(super) fn verify(&self) -> Result<(), StoreError> {
        let mut passed = self.passed.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // Events are taken before the check, so none after it goes unseen.
        let changed = self.changes.as_ref().is_none_or(Changes::any);
        if *passed && !changed {
            return Ok(());
        }
        let checked = self.check();
        *passed = checked.is_ok();
        checked
    }

    fn check(&self) -> Result<(), StoreError> {
        #[cfg(test)]
        self.checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for (path, pinned) in &self.pinned {
            match identity_at(path) {
                Ok(found) if found == *pinned => {}
                Ok(_) => {
                    let cause = format!("{} is another file than the one opened", path.display());
                    return Err(self.unusable(StoreFault::Missing, cause));
                }
                Err(err) => {
                    let cause = format!("{}: {err}", path.display());
                    return Err(self.unusable(StoreFault::Missing, cause));
                }
            }
        }
        match header_problem(&self.file) {
            None => Ok(()),
            Some(why) => Err(self.unusable(StoreFault::Damaged, why)),
        }
    }

    /// `err` with what the files and their file system say about it: a
    /// missing or overwritten file first, then a full or read-only file
    /// system behind an I/O error.
    pub(super) fn explain(&self, err: StoreError) -> StoreError {
        if let Err(gone) = self.verify() {
            return gone;
        }
        match err {
            StoreError::Unusable { fault, cause, .. } => {
                let fault = match fault {
                    StoreFault::Full | StoreFault::ReadOnly | StoreFault::Io => {
                        self.file_system_fault().unwrap_or(fault)
                    }
                    other => other,
                };
                self.unusable(fault, cause)
            }
            other => other,
        }
    }

    fn file_system_fault(&self) -> Option<StoreFault> {
        let stat = fstatvfs(&self.file).ok()?;
        if stat.flags().contains(FsFlags::ST_RDONLY) {
            Some(StoreFault::ReadOnly)
        } else if stat.blocks_available() == 0 {
            Some(StoreFault::Full)
        } else {
            None
        }
    }
}
/// Create `dir` and any missing parents, each mode 0700 whatever the umask;
/// directories that exist are left as they are.
pub(super) fn create_private_dir(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> =
        dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && fs::symlink_metadata(d).is_err()).collect();
    for d in missing.into_iter().rev() {
        match DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => fs::set_permissions(d, fs::Permissions::from_mode(0o700))?,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Create the database file, empty and mode 0600 whatever the umask; it
/// must not exist. SQLite gives its -wal and -shm files the same mode.
pub(super) fn create_private_file(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(|file| file.set_permissions(fs::Permissions::from_mode(0o600)))
}
