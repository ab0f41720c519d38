//! `mfactl doctor`: read the machine's set-up and say what is wrong before
//! anyone is locked out (or let in without a code).
//!
//! Each check is a small function of what it looked at (a parsed file, a
//! file's mode, mfad's answer, the kernel's clock status) returning
//! [`Finding`]s: a severity, the check's stable name, and one line that says
//! what is wrong, why it matters and what to do. A check with nothing to
//! say returns one `ok` finding, so every check shows in the output.
//!
//! [`Machine`] says where to look: every file is read under `root` (`/` on
//! the machine itself, a scratch tree in tests), so the checks never need
//! the machine's own files to be tested.
//!
//! Files: `pam` (the PAM stack parser), `stacks` (checks on the stacks),
//! `sshd` (sshd_config parser and check), `files` (config, key file, store
//! and socket modes), `system` (mfad's answer and the clock), `members`
//! (administrators and role members without a device).

use std::path::{Path, PathBuf};
use std::time::Duration;

use mfa_shared::config::{Config, DEFAULT_CONFIG_PATH};
use serde::Serialize;

pub mod files;
pub mod members;
pub mod pam;
pub mod sshd;
pub mod stacks;
pub mod system;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Checked, nothing wrong.
    Ok,
    /// Probably not what the administrator wants, or a risk to weigh.
    Warning,
    /// Broken: logins fail, a code can be skipped, or a secret is exposed.
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One thing a check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check's stable name (`pam-stack`, `sshd`, `clock`, ...).
    pub check: &'static str,
    pub severity: Severity,
    /// What is wrong, why it matters and what to do, on one line.
    pub message: String,
}

impl Finding {
    pub fn ok(check: &'static str, message: impl Into<String>) -> Finding {
        Finding { check, severity: Severity::Ok, message: message.into() }
    }
    pub fn warning(check: &'static str, message: impl Into<String>) -> Finding {
        Finding { check, severity: Severity::Warning, message: message.into() }
    }
    pub fn error(check: &'static str, message: impl Into<String>) -> Finding {
        Finding { check, severity: Severity::Error, message: message.into() }
    }
}

/// `findings`, or one `ok` finding with `ok_message` when there are none.
pub fn or_ok(check: &'static str, findings: Vec<Finding>, ok_message: impl Into<String>) -> Vec<Finding> {
    if findings.is_empty() { vec![Finding::ok(check, ok_message)] } else { findings }
}

/// Where doctor looks.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Prefix of every file read (`/` for the machine itself).
    pub root: PathBuf,
    /// mfad's socket when given on the command line (not under `root`);
    /// else the config's `socket`, under `root`.
    pub socket: Option<PathBuf>,
    /// For the connect and each read of the request to mfad.
    pub timeout: Duration,
}

impl Machine {
    /// `path` (absolute, as on the machine) under the root.
    pub fn path(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// The socket to ask mfad on.
    pub fn socket_for(&self, config: &Config) -> PathBuf {
        self.socket.clone().unwrap_or_else(|| self.path(&config.socket))
    }
}

/// Every check, in the order printed.
pub fn run_all(machine: &Machine) -> Vec<Finding> {
    let config_path = machine.path(Path::new(DEFAULT_CONFIG_PATH));
    let (config, mut findings) = files::load_config(&config_path);
    findings.push(files::check_enabled(&config, DEFAULT_CONFIG_PATH));
    let socket = machine.socket_for(&config);
    let answer = system::ask_root_status(&socket, machine.timeout);
    findings.extend(system::check_daemon(&socket, &answer));
    findings.extend(files::check_socket(&socket));
    findings.extend(files::check_key_files(machine, &config));
    findings.extend(files::check_store_file(machine, &config));
    findings.extend(system::check_root_enrolled(&config, &answer));
    let read = |path: &str| std::fs::read_to_string(machine.path(Path::new(path))).unwrap_or_default();
    let ask = |user: &str| system::ask_status(&socket, machine.timeout, user);
    findings.extend(members::check(&config, &read("/etc/group"), &read("/etc/passwd"), &ask));
    let all = stacks::load_all(machine);
    findings.extend(stacks::check_missing(&all, config.enabled));
    findings.extend(stacks::check_controls(&all));
    findings.extend(stacks::check_failmode(&all));
    findings.extend(stacks::check_legacy_services(&all));
    findings.extend(sshd::check(&sshd::load(machine)));
    findings.push(system::check_clock(system::read_clock()));
    findings
}

/// The worst severity among `findings` (`Ok` for none).
pub fn worst(findings: &[Finding]) -> Severity {
    findings.iter().map(|f| f.severity).max().unwrap_or(Severity::Ok)
}

#[cfg(test)]
mod tests;
