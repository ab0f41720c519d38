//! The audit trail: one line (facility authpriv) per event, in the
//! `event=NAME key=value ...` grammar of [`line`], the event names being
//! those of [`AuditOutcome`].
//!
//! Where journald's socket exists (`/run/systemd/journal/socket`, or one
//! given for tests) each event goes there with structured fields (see
//! [`journal`] and [`Audit::with_journal`]): `MESSAGE` is the line, and
//! journald hands it on to syslog as it does every message. Otherwise the
//! line goes as a syslog datagram to /dev/log (or a socket given for
//! tests); when there is no syslog socket either it goes to stderr, so the
//! daemon keeps working and nothing is lost. The writer is our own rather
//! than the `syslog` crate's because it must never block: a stalled log
//! daemon would otherwise stall every login. Callers never pass codes or
//! secrets; values that come from clients are quoted and escaped so a
//! crafted user name cannot forge a line or a field.

pub mod journal;
pub mod line;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::ceiling::Ceiling;
use crate::clock::{Clock, SystemClock};
use line::Line;

/// Audit lines one non-root uid may cause per second; the rest are counted
/// and summarised (see [`Audit::summarize_suppressed`]).
pub const LINES_PER_UID: u32 = 20;

const FACILITY_AUTHPRIV: u8 = 10;

/// How long after a failed connect to journald's socket the next is tried.
const JOURNAL_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Warning = 4,
    Notice = 5,
    Info = 6,
}

pub struct Audit {
    socket_path: PathBuf,
    /// journald's native socket, used while it accepts entries.
    journal_path: Option<PathBuf>,
    /// Sends to journald's socket, connected to it while it is there: a
    /// line while not connected tries to connect first, at most once every
    /// [`JOURNAL_RETRY`] (so a journald that starts later is used within
    /// that, each line before going to syslog, which journald reads too,
    /// and where there is none a line costs no failed connect), and a
    /// failed send connects again at once (journald restarted).
    journal: Option<UnixDatagram>,
    journal_connected: AtomicBool,
    /// When a connect to journald may be tried again (monotonic µs).
    journal_retry_at: AtomicU64,
    /// Sends to syslog's, connected to it on first use and again after a
    /// send fails (syslog restarted): a send then costs no path lookup.
    syslog: Option<UnixDatagram>,
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
        let unbound = || UnixDatagram::unbound().ok().filter(|s| s.set_nonblocking(true).is_ok());
        let (journal, syslog) = (unbound(), unbound());
        Audit {
            socket_path,
            journal_path: None,
            journal,
            journal_connected: AtomicBool::new(false),
            journal_retry_at: AtomicU64::new(0),
            syslog,
            pid: std::process::id(),
            clock,
            per_uid: Ceiling::new(LINES_PER_UID),
            stalled: AtomicU64::new(0),
        }
    }

    /// Send events to journald's native socket at `path` while it accepts
    /// them (syslog otherwise).
    pub fn with_journal(mut self, path: PathBuf) -> Self {
        self.journal_path = Some(path);
        self
    }

    /// Log an event caused by `uid` (a refused connection or frame), within
    /// that uid's allowance of lines.
    pub fn event_from(&self, uid: u32, severity: Severity, text: &str) {
        if self.per_uid.admit(uid, self.clock.now()) {
            self.daemon_event(severity, &format!("uid {uid}: {text}"), Some(uid));
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
        self.daemon_event(severity, text, None);
    }

    fn daemon_event(&self, severity: Severity, text: &str, peer_uid: Option<u32>) {
        let event = AuditOutcome::Daemon;
        let mut line = Line::new(event.name());
        if let Some(uid) = peer_uid {
            line = line.field("peer_uid", &uid.to_string());
        }
        let fields = || match peer_uid {
            Some(uid) => journal::Entry::default().field("MFA_PEER_UID", &uid.to_string()),
            None => journal::Entry::default(),
        };
        self.send(severity, event, &line.text("message", text), fields);
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
        let outcome = entry.outcome;
        let mut line = Line::new(outcome.name())
            .field("user", entry.user)
            .field("service", entry.service)
            .field("rhost", entry.rhost.unwrap_or("-"))
            .field("outcome", outcome.name())
            .text("reason", entry.reason);
        let given = entry.given.filter(|&given| given != entry.user);
        if let Some(given) = given {
            line = line.field("given", given);
        }
        if let Some(uid) = entry.peer_uid.filter(|&uid| uid != 0) {
            line = line.field("peer_uid", &uid.to_string());
        }
        // Built only for the journal.
        let fields = || {
            let mut fields = journal::Entry::default()
                .field("MFA_USER", entry.user)
                .field("MFA_SERVICE", entry.service)
                .field("MFA_OUTCOME", outcome.name())
                .field("MFA_REASON", entry.reason);
            if let Some(rhost) = entry.rhost {
                fields = fields.field("MFA_RHOST", rhost);
            }
            if let Some(given) = given {
                fields = fields.field("MFA_GIVEN", given);
            }
            if let Some(uid) = entry.peer_uid {
                fields = fields.field("MFA_PEER_UID", &uid.to_string());
            }
            fields
        };
        self.send(outcome.severity(), outcome, &line, fields);
    }

    /// Whether `journal` is connected to journald's socket at `path`,
    /// connecting it when it is not and the last try is long enough ago.
    fn journal_reachable(&self, journal: &UnixDatagram, path: &Path) -> bool {
        if self.journal_connected.load(Ordering::Relaxed) {
            return true;
        }
        let now = self.clock.monotonic_micros();
        if now < self.journal_retry_at.load(Ordering::Relaxed) {
            return false;
        }
        let connected = journal.connect(path).is_ok();
        if !connected {
            let wait = u64::try_from(JOURNAL_RETRY.as_micros()).unwrap_or(u64::MAX);
            self.journal_retry_at.store(now.saturating_add(wait), Ordering::Relaxed);
        }
        self.journal_connected.store(connected, Ordering::Relaxed);
        connected
    }

    /// To the journal with `fields` (and the common ones), or as a syslog line.
    fn send(&self, severity: Severity, event: AuditOutcome, line: &Line, fields: impl FnOnce() -> journal::Entry) {
        let line = line.as_str();
        if let (Some(journal), Some(path)) = (&self.journal, &self.journal_path)
            && self.journal_reachable(journal, path)
        {
            let entry = fields()
                .field("MESSAGE", line)
                .field("PRIORITY", &(severity as u8).to_string())
                .field("SYSLOG_FACILITY", &FACILITY_AUTHPRIV.to_string())
                .field("SYSLOG_IDENTIFIER", "mfad")
                .field("SYSLOG_PID", &self.pid.to_string())
                .field("MESSAGE_ID", event.message_id())
                .field("MFA_EVENT", event.name());
            // A failed send may be a journald restarted at the same path:
            // connect again and send once more.
            let sent = match journal.send(entry.bytes()) {
                Err(err) if err.kind() != std::io::ErrorKind::WouldBlock => {
                    journal.connect(path).and_then(|()| journal.send(entry.bytes()))
                }
                sent => sent,
            };
            match sent {
                Ok(_) => return,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    self.stalled.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // journald is gone: syslog.
                Err(_) => self.journal_connected.store(false, Ordering::Relaxed),
            }
        }
        let priority = FACILITY_AUTHPRIV * 8 + severity as u8;
        let datagram = format!("<{priority}>mfad[{}]: {line}", self.pid);
        // Not connected yet, or the socket's reader gone or not reading (a
        // syslog restarted at the same path): connect again and send once
        // more.
        let send = |syslog: &UnixDatagram| match syslog.send(datagram.as_bytes()) {
            Err(_) => syslog.connect(&self.socket_path).and_then(|()| syslog.send(datagram.as_bytes())),
            sent => sent,
        };
        match self.syslog.as_ref().map(send) {
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
    /// Not a decision: the daemon's own events (start, stop, reload, store
    /// trouble, refused connections, summaries), each with its severity.
    Daemon,
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
            AuditOutcome::Daemon => "daemon",
        }
    }

    /// journald's MESSAGE_ID of the event: fixed, never reused (listed in
    /// the README).
    pub fn message_id(self) -> &'static str {
        match self {
            AuditOutcome::NotRequired => "d80e421c1fac453bbd9d671a98794c64",
            AuditOutcome::Challenge => "d947d06250ed4e15838a1af7a254b845",
            AuditOutcome::Success => "c6d803696ba747c5b20a42bc8a85420c",
            AuditOutcome::Failure => "a0620fbd0a474610bed0c09b3e39f507",
            AuditOutcome::Locked => "4787a4015ada44cda763c7995417d88d",
            AuditOutcome::Denied => "787698a848404a2fadd4b4d2501a6719",
            AuditOutcome::EnrollmentOffered => "e0300ea0795549488f4f51922f0aa0f3",
            AuditOutcome::Pending => "bf68283e6f7e45268940e28d3d77b89a",
            AuditOutcome::Enrolled => "f4f2243a980b450fa6fcbb370d717b03",
            AuditOutcome::Changed => "9881ef5943744db090e5f780b10cfb55",
            AuditOutcome::Unavailable => "873205a2c1a34288987ddd00d5b92a82",
            AuditOutcome::NotACode => "5b0f3c8e9d2a4e6f8a17c4d2e90b6a31",
            AuditOutcome::Daemon => "167141f88c4f4a1abfacf1f542565ee6",
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
            | AuditOutcome::NotACode
            | AuditOutcome::Daemon => Severity::Notice,
            AuditOutcome::Unavailable => Severity::Warning,
        }
    }
}

#[cfg(test)]
mod wire_tests;

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
        assert!(
            line.contains(": event=failure user=\"eve\\nmfad: decision user=root outcome=success\" service=sshd"),
            "{line}"
        );
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
