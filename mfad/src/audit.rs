//! The audit trail: one syslog line (facility authpriv) per decision.
//!
//! Lines are sent as datagrams to /dev/log (or a socket given for tests).
//! When there is no syslog socket the line goes to stderr, so the daemon
//! keeps working and nothing is lost. The writer is our own rather than the
//! `syslog` crate's because it must never block: a stalled log daemon would
//! otherwise stall every login. Callers never pass codes or secrets;
//! values that come from clients are stripped of control characters so a
//! crafted user name cannot forge a line.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ceiling::Ceiling;
use crate::clock::{Clock, SystemClock};

/// Audit lines one non-root uid may cause per second; the rest are counted
/// and summarised (see [`Audit::summarize_suppressed`]).
pub const LINES_PER_UID: u32 = 20;

const FACILITY_AUTHPRIV: u8 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Warning = 4,
    Notice = 5,
    Info = 6,
}

pub struct Audit {
    socket_path: PathBuf,
    socket: Option<UnixDatagram>,
    pid: u32,
    clock: Arc<dyn Clock>,
    per_uid: Ceiling,
    /// Lines a stalled syslog did not take since the last summary.
    stalled: AtomicU64,
}

impl Audit {
    pub fn new(socket_path: PathBuf) -> Self {
        Audit::with_clock(socket_path, Arc::new(SystemClock))
    }

    pub fn with_clock(socket_path: PathBuf, clock: Arc<dyn Clock>) -> Self {
        // Non-blocking: a stalled syslog must never stall a login; a line it
        // cannot take goes to stderr instead.
        let socket = UnixDatagram::unbound().ok().filter(|s| s.set_nonblocking(true).is_ok());
        Audit {
            socket_path,
            socket,
            pid: std::process::id(),
            clock,
            per_uid: Ceiling::new(LINES_PER_UID),
            stalled: AtomicU64::new(0),
        }
    }

    /// Log an event caused by `uid` (a refused connection or frame), within
    /// that uid's allowance of lines.
    pub fn event_from(&self, uid: u32, severity: Severity, text: &str) {
        if self.per_uid.admit(uid, self.clock.now()) {
            self.event(severity, &format!("uid {uid}: {text}"));
        }
    }

    /// One line per uid whose lines were dropped since the last call, and
    /// one for lines a stalled syslog did not take.
    pub fn summarize_suppressed(&self) {
        let lost = self.stalled.swap(0, Ordering::Relaxed);
        if lost > 0 {
            self.event(Severity::Warning, &format!("{lost} audit lines lost: syslog was not taking them"));
        }
        for (uid, dropped) in self.per_uid.take_summaries() {
            let text = format!("uid {uid}: {dropped} audit lines suppressed (more than {LINES_PER_UID} a second)");
            self.event(Severity::Warning, &text);
        }
    }

    /// Log a free-form daemon event (start, reload, errors).
    pub fn event(&self, severity: Severity, text: &str) {
        self.send(severity, &clean(text));
    }

    /// Log a decision: who, where, what happened and why. A non-root
    /// caller's decisions count against its allowance of lines, but for
    /// code checks (see [`AuditOutcome::always_logged`]).
    pub fn decision(&self, entry: &Entry<'_>) {
        if let Some(uid) = entry.peer_uid
            && !entry.outcome.always_logged()
            && !self.per_uid.admit(uid, self.clock.now())
        {
            return;
        }
        let mut line = format!(
            "decision user={} service={} rhost={} outcome={} reason=\"{}\"",
            field(entry.user),
            field(entry.service),
            field(entry.rhost.unwrap_or("-")),
            entry.outcome.name(),
            clean(entry.reason).replace('"', "'"),
        );
        if let Some(given) = entry.given.filter(|&given| given != entry.user) {
            line.push_str(&format!(" given={}", field(given)));
        }
        if let Some(uid) = entry.peer_uid.filter(|&uid| uid != 0) {
            line.push_str(&format!(" peer_uid={uid}"));
        }
        self.send(entry.outcome.severity(), &line);
    }

    fn send(&self, severity: Severity, line: &str) {
        let priority = FACILITY_AUTHPRIV * 8 + severity as u8;
        let datagram = format!("<{priority}>mfad[{}]: {line}", self.pid);
        match self.socket.as_ref().map(|s| s.send_to(datagram.as_bytes(), &self.socket_path)) {
            Some(Ok(_)) => {}
            // A stalled syslog: never wait for it, nor fall back to stderr,
            // which under systemd is the same journal and would block.
            Some(Err(err)) if err.kind() == std::io::ErrorKind::WouldBlock => {
                self.stalled.fetch_add(1, Ordering::Relaxed);
            }
            // No syslog at all (a container, a test): stderr keeps the line.
            _ => eprintln!("mfad: {line}"),
        }
    }
}

/// One decision for the audit trail.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The account decided about.
    pub user: &'a str,
    /// The name the client gave, shown when it is not the account's.
    pub given: Option<&'a str>,
    /// The caller's uid, shown when it is not root: the service, rhost and
    /// tty of a non-root caller are its claims, not facts.
    pub peer_uid: Option<u32>,
    pub service: &'a str,
    pub rhost: Option<&'a str>,
    pub outcome: AuditOutcome,
    pub reason: &'a str,
}

/// What a decision came to. The match below gives each its name in the
/// log and its severity, so a new outcome cannot compile without both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOutcome {
    /// No code needed (MFA off, bypass, trusted source, not enrolled, ...).
    NotRequired,
    /// A code was asked for.
    Challenge,
    /// A code (or an inline enrollment) was verified.
    Success,
    /// A wrong code, counted toward the lockout.
    Failure,
    /// A code check refused: the account is (or now became) locked.
    Locked,
    /// Refused without a code check (locked, not approved, ...).
    Denied,
    /// Inline set-up offered at login.
    EnrollmentOffered,
    /// A set-up started and waits for its first code.
    Pending,
    /// A set-up completed through mfactl.
    Enrolled,
    /// An account or rule changed (self-service or administration).
    Changed,
    /// Not decided: the store is out of reach (the module's failmode decides).
    Unavailable,
    /// The answer to a code prompt was no code (likely a client that answers
    /// every prompt with its password): refused, not counted.
    NotACode,
}

impl AuditOutcome {
    pub fn name(self) -> &'static str {
        match self {
            AuditOutcome::NotRequired => "not_required",
            AuditOutcome::Challenge => "challenge",
            AuditOutcome::Success => "success",
            AuditOutcome::Failure => "failure",
            AuditOutcome::Locked => "locked",
            AuditOutcome::Denied => "denied",
            AuditOutcome::EnrollmentOffered => "enroll",
            AuditOutcome::Pending => "pending",
            AuditOutcome::Enrolled => "enrolled",
            AuditOutcome::Changed => "changed",
            AuditOutcome::Unavailable => "unavailable",
            AuditOutcome::NotACode => "not_a_code",
        }
    }

    /// A code accepted (at login or completing a set-up) or a wrong code
    /// counted: never dropped by the per-uid
    /// ceiling (a flood must not hide guessing), and bounded anyway, by the
    /// replay rule and the lockout.
    pub fn always_logged(self) -> bool {
        matches!(self, AuditOutcome::Success | AuditOutcome::Failure | AuditOutcome::Enrolled)
    }

    /// Routine outcomes are info; everything an administrator may want to
    /// look at is a notice.
    pub fn severity(self) -> Severity {
        match self {
            AuditOutcome::NotRequired | AuditOutcome::Success => Severity::Info,
            AuditOutcome::Challenge
            | AuditOutcome::Failure
            | AuditOutcome::Locked
            | AuditOutcome::Denied
            | AuditOutcome::EnrollmentOffered
            | AuditOutcome::Pending
            | AuditOutcome::Enrolled
            | AuditOutcome::Changed
            | AuditOutcome::NotACode => Severity::Notice,
            AuditOutcome::Unavailable => Severity::Warning,
        }
    }
}

fn clean(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// A single token: no spaces, no control characters, bounded length.
fn field(text: &str) -> String {
    let cleaned: String = clean(text).chars().map(|c| if c.is_whitespace() || c == '"' { '_' } else { c }).collect();
    if cleaned.is_empty() { "-".into() } else { cleaned.chars().take(128).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_socket_without_injection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let sink = UnixDatagram::bind(&path).unwrap();
        let audit = Audit::new(path);
        audit.decision(&Entry {
            user: "eve\nmfad: decision user=root outcome=success",
            given: Some("EVE"),
            peer_uid: Some(1000),
            service: "sshd",
            rhost: Some("10.0.0.1"),
            outcome: AuditOutcome::Failure,
            reason: "wrong code",
        });
        let mut buf = [0u8; 512];
        let n = sink.recv(&mut buf).unwrap();
        let line = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(line.starts_with("<85>mfad["), "{line}");
        assert!(!line.contains('\n'));
        assert!(line.contains("user=eve?mfad:_decision_user=root_outcome=success service=sshd"), "{line}");
        assert!(line.ends_with("reason=\"wrong code\" given=EVE peer_uid=1000"), "{line}");
    }

    #[test]
    fn a_flood_from_one_uid_is_capped_and_summarised() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let sink = UnixDatagram::bind(&path).unwrap();
        sink.set_nonblocking(true).unwrap();
        let clock = Arc::new(crate::clock::ManualClock::new(100));
        let audit = Audit::with_clock(path, clock.clone());
        let entry = |user, peer_uid| Entry {
            user,
            given: None,
            peer_uid: Some(peer_uid),
            service: "mine",
            rhost: None,
            outcome: AuditOutcome::Challenge,
            reason: "flood",
        };
        // The kernel queues few datagrams: read after every call.
        let mut lines = Vec::new();
        let mut drain = || {
            let mut buf = [0u8; 512];
            while let Ok(n) = sink.recv(&mut buf) {
                lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        };
        for _ in 0..1000 {
            audit.decision(&entry("eve", 1000));
            drain();
            audit.event_from(1000, Severity::Notice, "malformed request refused");
            drain();
        }
        audit.decision(&entry("alice", 0));
        drain();
        let failure = Entry { outcome: AuditOutcome::Failure, reason: "wrong code", ..entry("eve", 1000) };
        audit.decision(&failure);
        drain();
        audit.summarize_suppressed();
        drain();
        assert_eq!(lines.len(), LINES_PER_UID as usize + 3, "{lines:#?}");
        assert!(lines.iter().any(|l| l.contains("outcome=failure")), "a counted wrong code is never dropped");
        assert!(lines.iter().any(|l| l.contains("user=alice")), "root's decisions are never dropped");
        assert!(lines.last().unwrap().contains("uid 1000: 1980 audit lines suppressed"), "{lines:#?}");
    }

    #[test]
    fn a_stalled_syslog_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let _never_read = UnixDatagram::bind(&path).unwrap();
        let audit = Audit::new(path);
        // Far more than the kernel queues for an unread datagram socket:
        // the rest are counted as lost, never waited for.
        for i in 0..2000 {
            audit.event(Severity::Info, &format!("line {i}"));
        }
        assert!(audit.stalled.load(Ordering::Relaxed) > 1900);
    }

    #[test]
    fn missing_socket_falls_back_to_stderr() {
        let audit = Audit::new(PathBuf::from("/nonexistent/dev/log"));
        audit.event(Severity::Info, "still alive");
    }
}
