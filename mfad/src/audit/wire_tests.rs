//! The audit line's grammar and the journal's fields, as a log shipper and
//! journald receive them (real datagram sockets).

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;

use super::line::{self, Line};
use super::{Audit, AuditOutcome, Entry, Severity, journal};
use crate::clock::ManualClock;

const HOSTILE_USER: &str = "eve\" outcome=success reason=\"ok\nmfad[1]: event=success user=root";
const HOSTILE_RHOST: &str = "10.0.0.1 user=root\tx\r\u{202e}\u{7}\\";

fn hostile_entry(outcome: AuditOutcome) -> Entry<'static> {
    Entry {
        user: HOSTILE_USER,
        given: Some("EVE"),
        peer_uid: Some(1000),
        service: "ssh d=1",
        rhost: Some(HOSTILE_RHOST),
        outcome,
        reason: "challenge \"failed\"",
    }
}

fn receive(sink: &UnixDatagram) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    let n = sink.recv(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn fields_of(line: &str) -> Vec<(String, String)> {
    line::parse(line).unwrap_or_else(|| panic!("not in the grammar: {line}"))
}

#[test]
fn hostile_values_stay_inside_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let sink = UnixDatagram::bind(&path).unwrap();
    Audit::new(path).decision(&hostile_entry(AuditOutcome::Failure));
    let datagram = String::from_utf8(receive(&sink)).unwrap();
    assert!(!datagram.contains('\n') && !datagram.contains('\r') && !datagram.contains('\u{202e}'), "{datagram}");
    let (prefix, text) = datagram.split_once(": ").unwrap();
    assert!(prefix.starts_with("<85>mfad["), "{datagram}");
    let fields = fields_of(text);
    let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["event", "user", "service", "rhost", "outcome", "reason", "given", "peer_uid"], "{text}");
    let value: HashMap<&str, &str> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(value["event"], "failure");
    assert_eq!(value["outcome"], "failure");
    assert_eq!(value["user"], HOSTILE_USER, "the value comes back exactly");
    assert_eq!(value["rhost"], HOSTILE_RHOST);
    assert_eq!(value["service"], "ssh d=1");
    assert_eq!(value["reason"], "challenge \"failed\"");
    assert_eq!(value["peer_uid"], "1000");
    assert!(text.starts_with("event=failure user=\"eve\\\" outcome=success reason=\\\"ok\\nmfad[1]: "), "{text}");
    assert!(text.contains(" rhost=\"10.0.0.1 user=root\\tx\\r\\u{202e}\\u{7}\\\\\" "), "{text}");
}

#[test]
fn the_grammar_quotes_only_what_it_must() {
    let line = Line::new("success").field("user", "alice").field("rhost", "-").field("empty", "").text("reason", "ok");
    assert_eq!(line.as_str(), "event=success user=alice rhost=- empty=\"\" reason=\"ok\"");
    let line = Line::new("success").field("user", "José").field("x", "a=b").field("y", "10.0.0.1");
    assert_eq!(line.as_str(), "event=success user=\"José\" x=\"a=b\" y=10.0.0.1");
    assert_eq!(fields_of(line.as_str())[1].1, "José");
    // What the parser refuses: no event first, a bare quote, a raw control.
    for bad in ["user=a", "event=a b", "event=a x=\"unterminated", "event=a x=\"\u{1}\"", "event=a x=a\"b", "event=a "]
    {
        assert!(line::parse(bad).is_none(), "{bad:?}");
    }
    let long = "x".repeat(10_000);
    let bounded = Line::new("daemon").text("message", &long);
    assert_eq!(fields_of(bounded.as_str())[1].1.len(), line::MAX_VALUE_CHARS);
}

#[test]
fn daemon_events_use_the_same_grammar() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let sink = UnixDatagram::bind(&path).unwrap();
    let audit = Audit::new(path);
    audit.event(Severity::Warning, "store error: \"disk\"\nfull");
    audit.event_from(1000, Severity::Notice, "malformed request refused");
    let first = String::from_utf8(receive(&sink)).unwrap();
    assert!(first.starts_with("<84>mfad["), "{first}");
    let fields = fields_of(first.split_once(": ").unwrap().1);
    assert_eq!(fields[0], ("event".into(), "daemon".into()));
    assert_eq!(fields[1], ("message".into(), "store error: \"disk\"\nfull".into()));
    let second = String::from_utf8(receive(&sink)).unwrap();
    assert!(second.ends_with("event=daemon peer_uid=1000 message=\"uid 1000: malformed request refused\""), "{second}");
}

fn journal_fields(datagram: &[u8]) -> HashMap<String, Vec<u8>> {
    let fields = journal::parse(datagram).expect("a native journal entry");
    let count = fields.len();
    let map: HashMap<String, Vec<u8>> = fields.into_iter().collect();
    assert_eq!(map.len(), count, "no field twice");
    map
}

fn text(fields: &HashMap<String, Vec<u8>>, key: &str) -> String {
    String::from_utf8(fields.get(key).unwrap_or_else(|| panic!("no {key}")).clone()).unwrap()
}

/// An audit sending to journald at DIR/journal (not bound yet), else to a
/// syslog sink at DIR/log (returned, non-blocking).
fn with_journal() -> (tempfile::TempDir, UnixDatagram, Audit) {
    let dir = tempfile::tempdir().unwrap();
    let syslog = dir.path().join("log");
    let syslog_sink = UnixDatagram::bind(&syslog).unwrap();
    syslog_sink.set_nonblocking(true).unwrap();
    let audit = Audit::new(syslog).with_journal(dir.path().join("journal"));
    (dir, syslog_sink, audit)
}

#[test]
fn events_go_to_the_journal_with_structured_fields() {
    let (dir, syslog_sink, audit) = with_journal();
    let journal_path = dir.path().join("journal");
    let journal_sink = UnixDatagram::bind(&journal_path).unwrap();
    audit.decision(&hostile_entry(AuditOutcome::Success));
    let fields = journal_fields(&receive(&journal_sink));
    assert_eq!(text(&fields, "MFA_USER"), HOSTILE_USER, "binary-safe: the line feed survives");
    assert_eq!(text(&fields, "MFA_RHOST"), HOSTILE_RHOST);
    assert_eq!(text(&fields, "MFA_SERVICE"), "ssh d=1");
    assert_eq!(text(&fields, "MFA_OUTCOME"), "success");
    assert_eq!(text(&fields, "MFA_EVENT"), "success");
    assert_eq!(text(&fields, "MFA_REASON"), "challenge \"failed\"");
    assert_eq!(text(&fields, "MFA_PEER_UID"), "1000");
    assert_eq!(text(&fields, "MFA_GIVEN"), "EVE");
    assert_eq!(text(&fields, "PRIORITY"), "6");
    assert_eq!(text(&fields, "SYSLOG_FACILITY"), "10");
    assert_eq!(text(&fields, "SYSLOG_IDENTIFIER"), "mfad");
    assert_eq!(text(&fields, "MESSAGE_ID"), AuditOutcome::Success.message_id());
    let message = text(&fields, "MESSAGE");
    assert_eq!(fields_of(&message)[1], ("user".into(), HOSTILE_USER.into()), "MESSAGE is the audit line");
    assert!(syslog_sink.recv(&mut [0u8; 16]).is_err(), "one copy of each event: not also to syslog");

    audit.event(Severity::Warning, "store busy");
    let fields = journal_fields(&receive(&journal_sink));
    assert_eq!(text(&fields, "MESSAGE"), "event=daemon message=\"store busy\"");
    assert_eq!(text(&fields, "PRIORITY"), "4");
    assert_eq!(text(&fields, "MESSAGE_ID"), AuditOutcome::Daemon.message_id());

    // journald gone: the line goes to syslog instead.
    drop(journal_sink);
    std::fs::remove_file(&journal_path).unwrap();
    audit.event(Severity::Info, "still logged");
    let mut buf = [0u8; 512];
    let n = syslog_sink.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with("event=daemon message=\"still logged\""));
}

/// Lines keep reaching syslog after it restarts (a new socket at the same
/// path), though mfad's socket stays connected to the old one between lines.
#[test]
fn lines_reach_a_restarted_syslog() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let first = UnixDatagram::bind(&path).unwrap();
    let audit = Audit::new(path.clone());
    audit.event(Severity::Info, "before");
    let line = String::from_utf8(receive(&first)).unwrap();
    assert!(line.ends_with("message=\"before\""), "{line}");
    drop(first);
    std::fs::remove_file(&path).unwrap();
    let second = UnixDatagram::bind(&path).unwrap();
    audit.event(Severity::Info, "after");
    assert!(String::from_utf8(receive(&second)).unwrap().ends_with("message=\"after\""));
}

/// A journald that starts after mfad gets the lines from a second after
/// mfad last missed it (those before go to syslog), and one that restarts
/// (a new socket at the same path) the next line.
#[test]
fn a_journald_started_or_restarted_later_gets_the_lines() {
    let dir = tempfile::tempdir().unwrap();
    let syslog_sink = UnixDatagram::bind(dir.path().join("log")).unwrap();
    syslog_sink.set_nonblocking(true).unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let journal_path = dir.path().join("journal");
    let audit = Audit::with_clock(dir.path().join("log"), clock.clone()).with_journal(journal_path.clone());
    audit.event(Severity::Info, "no journal yet");
    assert!(String::from_utf8(receive(&syslog_sink)).unwrap().ends_with("message=\"no journal yet\""));

    let first = UnixDatagram::bind(&journal_path).unwrap();
    audit.event(Severity::Info, "within the second");
    assert!(String::from_utf8(receive(&syslog_sink)).unwrap().ends_with("message=\"within the second\""));
    clock.advance(1);
    audit.event(Severity::Info, "journal started");
    assert_eq!(text(&journal_fields(&receive(&first)), "MESSAGE"), "event=daemon message=\"journal started\"");

    drop(first);
    std::fs::remove_file(&journal_path).unwrap();
    let second = UnixDatagram::bind(&journal_path).unwrap();
    audit.event(Severity::Info, "journal restarted");
    assert_eq!(text(&journal_fields(&receive(&second)), "MESSAGE"), "event=daemon message=\"journal restarted\"");
    assert!(syslog_sink.recv(&mut [0u8; 16]).is_err(), "one copy of each event: not also to syslog");
}

#[test]
fn every_event_kind_has_its_own_message_id() {
    use AuditOutcome::*;
    let all = [
        NotRequired,
        Challenge,
        Success,
        Failure,
        Locked,
        Denied,
        EnrollmentOffered,
        Pending,
        Enrolled,
        Changed,
        Unavailable,
        NotACode,
        Daemon,
    ];
    let ids: std::collections::HashSet<&str> = all.iter().map(|e| e.message_id()).collect();
    assert_eq!(ids.len(), all.len());
    assert!(
        ids.iter().all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    );
    let names: std::collections::HashSet<&str> = all.iter().map(|e| e.name()).collect();
    assert_eq!(names.len(), all.len());
    assert!(names.iter().all(|n| line::is_bare(n)));
}
