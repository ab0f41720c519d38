//! mfad's own files: the config (and whether MFA is on), the key file(s),
//! the SQLite store and the socket, with their owners and modes.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use mfa_shared::config::{Config, StoreBackend};

use super::{Finding, Machine};

/// What doctor needs to know of a file: from lstat (a symlink is not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileFacts {
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub kind: FileKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Dir,
    Socket,
    Symlink,
    Other,
}

impl FileFacts {
    /// lstat `path`; None when it does not exist (or cannot be looked at).
    pub fn of(path: &Path) -> Option<FileFacts> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        let t = meta.file_type();
        let kind = if t.is_symlink() {
            FileKind::Symlink
        } else if t.is_file() {
            FileKind::File
        } else if t.is_dir() {
            FileKind::Dir
        } else if t.is_socket() {
            FileKind::Socket
        } else {
            FileKind::Other
        };
        Some(FileFacts { mode: meta.mode() & 0o7777, uid: meta.uid(), kind })
    }
}

/// `config`: the config file parsed as mfad would. Missing, it is the
/// defaults (MFA off); unreadable or invalid, mfad refuses to start.
pub fn load_config(path: &Path) -> (Config, Vec<Finding>) {
    const CHECK: &str = "config";
    let shown = mfa_shared::config::DEFAULT_CONFIG_PATH;
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            Config::default(),
            vec![Finding::warning(
                CHECK,
                format!("{shown} does not exist: mfad runs on its defaults (MFA off). Install the example config"),
            )],
        ),
        Err(e) => (
            Config::default(),
            vec![Finding::error(
                CHECK,
                format!("cannot read {shown}: {e}; mfad cannot start without it. Make it readable by root"),
            )],
        ),
        Ok(text) => match Config::parse(&text) {
            Ok(config) => (config, vec![Finding::ok(CHECK, format!("{shown} is valid"))]),
            Err(e) => (
                Config::default(),
                vec![Finding::error(
                    CHECK,
                    format!(
                        "{shown}: {e}; mfad refuses to start (or a reload keeps the old config). Fix it and run \
                         `mfad --check-config`"
                    ),
                )],
            ),
        },
    }
}

/// `enabled`: whether MFA is on. Off is a warning: no login asks a code.
pub fn check_enabled(config: &Config, shown: &str) -> Finding {
    if config.enabled {
        Finding::ok("enabled", format!("MFA is on (enabled = true in {shown})"))
    } else {
        Finding::warning(
            "enabled",
            format!(
                "MFA is off (enabled = false in {shown}): pam_mfa asks nobody for a code. Enroll root and the \
                 administrators first (`mfactl user setup USER`), then set enabled = true and `mfactl reload`"
            ),
        )
    }
}

/// `key-file`: a key file is a regular file, owned by root, mode 0600 or
/// stricter (it decrypts every secret in the store).
pub fn key_file_finding(shown: &str, facts: Option<FileFacts>) -> Finding {
    const CHECK: &str = "key-file";
    let Some(facts) = facts else {
        return Finding::warning(
            CHECK,
            format!(
                "{shown} does not exist: mfad creates it at its first start, but if the store already holds secrets \
             they cannot be opened without the key they were sealed with. Restore it from a backup"
            ),
        );
    };
    match facts.kind {
        FileKind::File => {}
        FileKind::Symlink => {
            return Finding::error(
                CHECK,
                format!(
                    "{shown} is a symbolic link: mfad does not follow it and cannot start. Replace it with the file"
                ),
            );
        }
        _ => return Finding::error(CHECK, format!("{shown} is not a regular file: mfad cannot read its key")),
    }
    if facts.uid != 0 {
        return Finding::error(
            CHECK,
            format!(
                "{shown} is owned by uid {}: its owner can read or replace the key that decrypts every secret. Run \
             `chown root:root {shown}`",
                facts.uid
            ),
        );
    }
    if facts.mode & 0o077 != 0 {
        return Finding::error(
            CHECK,
            format!(
                "{shown} has mode {:04o}: other users can read the key that decrypts every secret in the store. Run \
             `chmod 600 {shown}`",
                facts.mode
            ),
        );
    }
    Finding::ok(CHECK, format!("{shown} is owned by root, mode {:04o}", facts.mode))
}

/// `key-file` for the key and every accepted key.
pub fn check_key_files(machine: &Machine, config: &Config) -> Vec<Finding> {
    std::iter::once(&config.store.key_file)
        .chain(&config.store.accepted_key_files)
        .map(|path| key_file_finding(&path.display().to_string(), FileFacts::of(&machine.path(path))))
        .collect()
}

/// `store`: the SQLite file is root's and nobody else may write it (a
/// writer could reset failure counts or replay codes); others reading it
/// learn who is enrolled.
pub fn store_file_finding(shown: &str, facts: Option<FileFacts>) -> Finding {
    const CHECK: &str = "store";
    let Some(facts) = facts else {
        return Finding::ok(CHECK, format!("{shown} does not exist yet: mfad creates it at its first start"));
    };
    if facts.kind != FileKind::File || facts.uid != 0 || facts.mode & 0o022 != 0 {
        return Finding::error(
            CHECK,
            format!(
                "{shown} (mode {:04o}, uid {}) is not a regular file that only root can write: whoever can write it \
             can clear lockouts and reuse codes. Run `chown root:root {shown}; chmod 600 {shown}`",
                facts.mode, facts.uid
            ),
        );
    }
    if facts.mode & 0o044 != 0 {
        return Finding::warning(
            CHECK,
            format!(
                "{shown} has mode {:04o}: other users can read who is enrolled and when they logged in. Run \
             `chmod 600 {shown}`",
                facts.mode
            ),
        );
    }
    Finding::ok(CHECK, format!("{shown} is owned by root, mode {:04o}", facts.mode))
}

pub fn check_store_file(machine: &Machine, config: &Config) -> Vec<Finding> {
    match config.store.backend {
        StoreBackend::Sqlite => {
            let path = &config.store.path;
            vec![store_file_finding(&path.display().to_string(), FileFacts::of(&machine.path(path)))]
        }
        StoreBackend::Postgres => vec![Finding::ok("store", "the store is PostgreSQL: its files are not on this host")],
    }
}

/// `socket`: the socket's directory is root's and nobody else can write it
/// (or could put a socket of their own, a fake mfad, in its place); the
/// socket is open to every user (self-service, screen lockers).
pub fn socket_findings(shown: &str, dir: Option<FileFacts>, socket: Option<FileFacts>) -> Vec<Finding> {
    const CHECK: &str = "socket";
    let mut findings = Vec::new();
    if let Some(dir) = dir.filter(|d| d.uid != 0 || d.mode & 0o022 != 0) {
        findings.push(Finding::error(
            CHECK,
            format!(
                "the directory of {shown} (mode {:04o}, uid {}) can be written by others than root: they could put \
                 a socket of their own in mfad's place and answer the PAM module. It should be root's, mode 0755 \
                 (systemd's RuntimeDirectory does this)",
                dir.mode, dir.uid
            ),
        ));
    }
    if let Some(socket) = socket {
        if socket.kind != FileKind::Socket {
            findings.push(Finding::error(CHECK, format!("{shown} is not a socket: mfad cannot listen there")));
        } else if socket.mode & 0o006 != 0o006 {
            findings.push(Finding::warning(
                CHECK,
                format!(
                    "{shown} has mode {:04o}: users cannot reach mfad for `mfactl status`, `mfactl setup` or a screen \
                 locker. mfad makes it 0666 (every request is checked by the caller's uid, not the mode)",
                    socket.mode
                ),
            ));
        }
    }
    findings
}

pub fn check_socket(socket: &Path) -> Vec<Finding> {
    let dir = socket.parent().and_then(FileFacts::of);
    let shown = socket.display().to_string();
    let facts = FileFacts::of(socket);
    let ok = if facts.is_some() {
        format!("{shown} and its directory are root's and open to users as they should be")
    } else {
        format!("no socket at {shown} (see the `daemon` check)")
    };
    super::or_ok("socket", socket_findings(&shown, dir, facts), ok)
}
