//! Logging to syslog from inside another program's process.
//!
//! The module never calls `openlog`: that would change the identity and
//! facility under which the host (sshd, sudo, login) logs its own lines for
//! the rest of its life. Like Linux-PAM's own `pam_syslog`, each line goes
//! out under the host's identity, facility authpriv, prefixed with
//! `pam_mfa(SERVICE:auth):`, so a line reads
//! `sshd[812]: pam_mfa(sshd:auth): user "alice" service "sshd": ...`.
//!
//! A login that logs nothing costs nothing here: glibc opens its socket to
//! `/dev/log` (and reads the time zone) on the first line the process
//! logs, and the line is put together only when there is one.

use std::ffi::CString;

use crate::conversation::{Log, LogLevel};

pub struct Syslog<'a> {
    service: &'a str,
}

impl<'a> Syslog<'a> {
    pub fn new(service: &'a str) -> Self {
        Syslog { service }
    }
}

impl Log for Syslog<'_> {
    fn log(&mut self, level: LogLevel, message: &str) {
        let priority = match level {
            LogLevel::Debug => libc::LOG_DEBUG,
            LogLevel::Info => libc::LOG_INFO,
            LogLevel::Warning => libc::LOG_WARNING,
            LogLevel::Error => libc::LOG_ERR,
        };
        let line: String =
            format!("pam_mfa({}:auth): {message}", self.service).chars().filter(|c| *c != '\0').collect();
        let Ok(line) = CString::new(line) else { return };
        // SAFETY: both pointers are valid NUL-terminated strings for the
        // duration of the call, and "%s" consumes exactly one of them, so a
        // '%' in the message is never read as a format directive.
        unsafe { libc::syslog(libc::LOG_AUTHPRIV | priority, c"%s".as_ptr(), line.as_ptr()) };
    }
}
