//! What operators and log shippers read: the metrics textfile after real
//! logins through the PAM module (pamtester under libpam-wrapper), and the
//! audit events a fake journald socket receives from a real mfad.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use e2e::*;

const SERVICE: &str = "mfaobs";
const BYPASS_SERVICE: &str = "mfaobs-b";

/// A directory for the textfile, as node_exporter's would be.
fn textfile_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("mfad-metrics-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn config(textfile: &Path, interval: &str) -> String {
    format!(
        "default_level = \"always\"\nmax_tries = 1\n[lockout]\nmax_failures = 2\n\
         [bypass]\nenabled = true\n[[bypass.rule]]\ncidr = \"127.0.0.9/32\"\nbypass_2fa = true\n\
         [metrics]\ntextfile = \"{}\"\ninterval = \"{interval}\"\n",
        textfile.display()
    )
}

/// The samples of a text exposition file: `name{labels}` -> value. Every
/// sample's family must have been declared by a `# TYPE` line before it.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let mut types = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "{name} typed twice");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let name = series.split('{').next().unwrap();
        let family = match name.rsplit_once('_') {
            Some((base, "bucket" | "sum" | "count")) if types.get(base).is_some_and(|k| k == "histogram") => base,
            _ => name,
        };
        assert!(types.contains_key(family), "{line} comes before its # TYPE");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        assert!(samples.insert(series.to_string(), value).is_none(), "{series} twice");
    }
    samples
}

fn read_metrics(path: &Path) -> HashMap<String, f64> {
    parse_exposition(&std::fs::read_to_string(path).unwrap_or_default())
}

/// The samples once `ready` holds for them (the file is rewritten every
/// interval), within 15 s.
fn metrics_when(path: &Path, ready: impl Fn(&HashMap<String, f64>) -> bool) -> HashMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let samples = read_metrics(path);
        if ready(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "metrics never got there: {samples:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn login(services: &PamServices, service: &str, user: &str, rhost: &str, code: &str) -> bool {
    let mut cmd = services.pamtester(service, user, &[("rhost", rhost)]);
    run_with_input(&mut cmd, &format!("{code}\n")).status.success()
}

fn counter(samples: &HashMap<String, f64>, name: &str, service: &str) -> f64 {
    samples.get(&format!("{name}{{service=\"{service}\"}}")).copied().unwrap_or(-1.0)
}

/// A six-digit code none of the next counters of `secret` gives.
fn wrong_code(secret: &str) -> String {
    let near: Vec<String> = (0..30).map(|c| hotp(secret, c)).collect();
    (0..).map(|n| format!("{:06}", 111_111 * (n % 9 + 1))).find(|c| !near.contains(c)).unwrap()
}

fn services_for(mfad: &Mfad) -> PamServices {
    let services = PamServices::new();
    for service in [SERVICE, BYPASS_SERVICE] {
        services.add(service, &[mfad.module_line("required", ""), "auth required pam_permit.so".into()]);
    }
    services
}

#[test]
fn the_metrics_textfile_counts_real_logins_exactly() {
    let dir = textfile_dir();
    let textfile = dir.path().join("mfad.prom");
    let mfad = Mfad::start(&config(&textfile, "1s"));
    let secret = mfad.enroll("obs_user", "hotp");
    let bypassed_secret = mfad.enroll("obs_bypassed", "hotp");
    let services = services_for(&mfad);

    assert!(login(&services, SERVICE, "obs_user", "127.0.0.5", &hotp(&secret, 1)), "right code");
    let wrong = wrong_code(&secret);
    assert!(!login(&services, SERVICE, "obs_user", "127.0.0.5", &wrong), "wrong code");
    assert!(!login(&services, SERVICE, "obs_user", "127.0.0.5", &wrong), "wrong code, locking");
    assert!(!login(&services, SERVICE, "obs_user", "127.0.0.5", &hotp(&secret, 2)), "locked");
    assert!(login(&services, SERVICE, "obs_nobody", "127.0.0.5", ""), "not enrolled: ignored");
    assert!(login(&services, BYPASS_SERVICE, "obs_bypassed", "127.0.0.9", ""), "bypass rule");
    assert!(login(&services, BYPASS_SERVICE, "obs_bypassed", "127.0.0.6", &hotp(&bypassed_secret, 1)));

    // A person who has not answered yet: one conversation open, one client.
    let mut waiting = services.pamtester(BYPASS_SERVICE, "obs_bypassed", &[("rhost", "127.0.0.6")]);
    let mut waiting = spawn_one_at_a_time(waiting.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()));
    metrics_when(&textfile, |s| {
        s.get("mfad_open_conversations") == Some(&1.0) && s.get("mfad_connected_clients") == Some(&1.0)
    });
    writeln!(waiting.stdin.take().unwrap(), "{}", hotp(&bypassed_secret, 2)).unwrap();
    let out = wait_within(waiting, Duration::from_secs(30), "pamtester did not finish");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));

    let expected = [
        ("mfad_logins_asked_total", SERVICE, 5.0),
        ("mfad_logins_passed_total", SERVICE, 1.0),
        ("mfad_logins_failed_total", SERVICE, 3.0),
        ("mfad_logins_ignored_total", SERVICE, 1.0),
        ("mfad_logins_bypassed_total", SERVICE, 0.0),
        ("mfad_logins_unavailable_total", SERVICE, 0.0),
        ("mfad_lockouts_total", SERVICE, 1.0),
        ("mfad_logins_asked_total", BYPASS_SERVICE, 3.0),
        ("mfad_logins_passed_total", BYPASS_SERVICE, 2.0),
        ("mfad_logins_failed_total", BYPASS_SERVICE, 0.0),
        ("mfad_logins_ignored_total", BYPASS_SERVICE, 1.0),
        ("mfad_logins_bypassed_total", BYPASS_SERVICE, 1.0),
        ("mfad_lockouts_total", BYPASS_SERVICE, 0.0),
        ("mfad_logins_asked_total", "other", 0.0),
    ];
    let samples = metrics_when(&textfile, |s| {
        counter(s, "mfad_logins_passed_total", BYPASS_SERVICE) == 2.0 && s.get("mfad_connected_clients") == Some(&0.0)
    });
    for (name, service, value) in expected {
        assert_eq!(counter(&samples, name, service), value, "{name}{{service={service}}}: {samples:#?}");
    }
    assert_eq!(samples["mfad_store_errors_total"], 0.0);
    assert_eq!(samples["mfad_unavailable_answers_total"], 0.0);
    assert_eq!(samples["mfad_open_conversations"], 0.0);
    // Each of the six code checks and the two set-up confirmations is one
    // transaction on the account's record (a set-up's start may add more).
    let commits = samples["mfad_store_commit_seconds_count"];
    assert!(commits >= 8.0, "{commits}");
    assert_eq!(samples["mfad_store_commit_seconds_bucket{le=\"+Inf\"}"], commits);
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("mfad_store_commit_seconds_bucket{le=\"")?.strip_suffix("\"}")?, *v)))
        .filter_map(|(le, v)| Some((le.parse::<f64>().ok()?, v)))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() >= 10 && buckets.windows(2).all(|w| w[0].1 <= w[1].1), "cumulative: {buckets:?}");
    let mode = std::fs::metadata(&textfile).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "node_exporter must read it");
}

#[test]
fn shutdown_writes_the_last_numbers() {
    let dir = textfile_dir();
    let textfile = dir.path().join("mfad.prom");
    // An interval far longer than the test: only the start and the stop write.
    let mut mfad = Mfad::start(&config(&textfile, "1h"));
    let secret = mfad.enroll("obs_stop", "hotp");
    let services = services_for(&mfad);
    assert!(login(&services, SERVICE, "obs_stop", "127.0.0.5", &hotp(&secret, 1)));
    let at_start = read_metrics(&textfile);
    assert_eq!(counter(&at_start, "mfad_logins_asked_total", "other"), 0.0, "written at start: {at_start:#?}");
    assert_eq!(counter(&at_start, "mfad_logins_asked_total", SERVICE), -1.0, "not written again yet");
    mfad.stop();
    let at_stop = read_metrics(&textfile);
    assert_eq!(counter(&at_stop, "mfad_logins_asked_total", SERVICE), 1.0, "{at_stop:#?}");
    assert_eq!(counter(&at_stop, "mfad_logins_passed_total", SERVICE), 1.0);
    let names: Vec<PathBuf> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(names, std::slice::from_ref(&textfile), "no temporary file left beside it");
}

/// The fields of a native journal datagram: KEY=value lines, or KEY,
/// newline, 64-bit little-endian length, bytes, newline.
fn journal_fields(mut data: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    while !data.is_empty() {
        let end = data.iter().position(|&b| b == b'\n' || b == b'=').unwrap();
        let key = String::from_utf8(data[..end].to_vec()).unwrap();
        let (value, rest) = if data[end] == b'=' {
            let rest = &data[end + 1..];
            let stop = rest.iter().position(|&b| b == b'\n').unwrap();
            (&rest[..stop], &rest[stop + 1..])
        } else {
            let rest = &data[end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            assert_eq!(rest[8 + len], b'\n');
            (&rest[8..8 + len], &rest[8 + len + 1..])
        };
        assert!(fields.insert(key, String::from_utf8(value.to_vec()).unwrap()).is_none(), "a field twice");
        data = rest;
    }
    fields
}

#[test]
fn a_journald_socket_gets_structured_fields_of_real_logins() {
    let mfad = Mfad::start("default_level = \"always\"\nmax_tries = 1");
    let secret = mfad.enroll("obs_journal", "hotp");
    let services = services_for(&mfad);
    // From now on the daemon finds a journal where it looks for one, within
    // a second of its last miss: logins of a name without an account (one
    // line each) until one reaches it.
    let journal = UnixDatagram::bind(mfad.dir.path().join("journal")).unwrap();
    journal.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = vec![0u8; 65536];
    let reached = (0..100).any(|_| {
        login(&services, SERVICE, "obs_no_such_account", "127.0.0.5", "000000");
        recv_retrying(&journal, &mut buf).is_ok()
    });
    assert!(reached, "the daemon never found the journal");
    journal.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(login(&services, SERVICE, "obs_journal", "127.0.0.5", &hotp(&secret, 1)));
    let mut entries = Vec::new();
    while !entries.iter().any(|e: &HashMap<String, String>| e.get("MFA_OUTCOME").map(String::as_str) == Some("success"))
    {
        let n = recv_retrying(&journal, &mut buf).expect("no success entry reached the journal");
        entries.push(journal_fields(&buf[..n]));
    }
    let challenge = entries.iter().find(|e| e["MFA_EVENT"] == "challenge").expect("the challenge");
    let success = entries.last().unwrap();
    for (entry, outcome, priority) in [(challenge, "challenge", "5"), (success, "success", "6")] {
        assert_eq!(entry["MFA_USER"], "obs_journal");
        assert_eq!(entry["MFA_SERVICE"], SERVICE);
        assert_eq!(entry["MFA_OUTCOME"], outcome);
        assert_eq!(entry["MFA_RHOST"], "127.0.0.5");
        assert_eq!(entry["MFA_PEER_UID"], "0");
        assert_eq!(entry["PRIORITY"], priority);
        assert_eq!(entry["SYSLOG_IDENTIFIER"], "mfad");
        assert_eq!(entry["SYSLOG_FACILITY"], "10");
        assert_eq!(entry["SYSLOG_PID"], mfad.pid().to_string());
        assert!(entry["MESSAGE"].starts_with(&format!("event={outcome} user=obs_journal service={SERVICE} ")));
    }
    assert_eq!(success["MFA_REASON"], "challenge passed");
    assert_eq!(success["MESSAGE_ID"], "c6d803696ba747c5b20a42bc8a85420c");
    assert_eq!(challenge["MESSAGE_ID"], "d947d06250ed4e15838a1af7a254b845");
    let syslog = mfad.audit_lines_until("");
    assert!(!syslog.iter().any(|l| l.contains("user=obs_journal service=mfaobs")), "not twice: {syslog:#?}");
}
