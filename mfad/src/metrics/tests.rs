use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

use super::exposition::{Gauges, escape_label, seconds, write_textfile};
use super::*;

/// `name{labels}` -> value, for every sample line; HELP and TYPE lines
/// checked to come before their samples.
fn samples(text: &str) -> HashMap<String, String> {
    let mut typed = std::collections::HashSet::new();
    let mut out = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.insert(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let family = series.split('{').next().unwrap();
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| family.strip_suffix(s)).unwrap_or(family);
        assert!(typed.contains(family) || typed.contains(base), "{line} before its TYPE");
        assert!(out.insert(series.to_string(), value.to_string()).is_none(), "{series} twice");
    }
    out
}

#[test]
fn counts_per_service_and_other() {
    let metrics = Metrics::default();
    metrics.count_service("sshd", 0, LoginCounter::Asked);
    metrics.count_service("sshd", 0, LoginCounter::Asked);
    metrics.count_service("sshd", 0, LoginCounter::Passed);
    // sudo and su run setuid root: their stacks connect as root.
    metrics.count_service("sudo", 0, LoginCounter::Lockout);
    metrics.count_service("sudo", 1000, LoginCounter::Lockout);
    let text = metrics.render(Gauges { open_conversations: 3 });
    let samples = samples(&text);
    assert_eq!(samples["mfad_logins_asked_total{service=\"sshd\"}"], "2");
    assert_eq!(samples["mfad_logins_passed_total{service=\"sshd\"}"], "1");
    assert_eq!(samples["mfad_logins_failed_total{service=\"sshd\"}"], "0");
    assert_eq!(samples["mfad_lockouts_total{service=\"sudo\"}"], "1");
    assert_eq!(samples["mfad_logins_asked_total{service=\"other\"}"], "0");
    assert_eq!(samples["mfad_lockouts_total{service=\"other\"}"], "1");
    assert_eq!(samples["mfad_open_conversations"], "3");
    assert_eq!(samples["mfad_connected_clients"], "0");
}

#[test]
fn the_service_table_is_bounded_and_claims_go_to_other() {
    let metrics = Metrics::default();
    // A local user's own PAM application naming itself: never its own label,
    // not even a real service's.
    metrics.count_service("sshd", 0, LoginCounter::Asked);
    for i in 0..100 {
        metrics.count_service(&format!("junk{i}"), 1000, LoginCounter::Asked);
    }
    metrics.count_service("sshd", 1000, LoginCounter::Failed);
    // Root's services still get names of their own, up to the cap.
    for i in 0..100 {
        metrics.count_service(&format!("pam{i}"), 0, LoginCounter::Asked);
    }
    let samples = samples(&metrics.render(Gauges::default()));
    let asked: Vec<_> = samples.keys().filter(|k| k.starts_with("mfad_logins_asked_total{")).collect();
    assert_eq!(asked.len(), MAX_SERVICES + 1, "{asked:?}");
    assert!(!samples.keys().any(|k| k.contains("junk")));
    assert_eq!(samples["mfad_logins_failed_total{service=\"sshd\"}"], "0");
    assert!(samples.contains_key("mfad_logins_asked_total{service=\"pam30\"}"));
    assert!(!samples.contains_key("mfad_logins_asked_total{service=\"pam31\"}"));
    assert_eq!(samples["mfad_logins_asked_total{service=\"other\"}"], "169");
    // A name already tracked is counted under `other` when a user gives it.
    metrics.count_service("pam3", 1000, LoginCounter::Asked);
    let samples = self::samples(&metrics.render(Gauges::default()));
    assert_eq!(samples["mfad_logins_asked_total{service=\"pam3\"}"], "1");
}

#[test]
fn hostile_service_names_cannot_break_the_format() {
    let metrics = Metrics::default();
    metrics.count_service("a\"} 999\nmfad_x{service=\"b\\", 0, LoginCounter::Asked);
    metrics.count_service(&"x".repeat(500), 0, LoginCounter::Asked);
    let text = metrics.render(Gauges::default());
    let line = text.lines().find(|l| l.starts_with("mfad_logins_asked_total{service=\"a")).unwrap();
    assert_eq!(line, "mfad_logins_asked_total{service=\"a\\\"} 999\\nmfad_x{service=\\\"b\\\\\"} 1");
    assert!(!text.lines().any(|l| l.starts_with("mfad_x")), "{text}");
    let long = format!("mfad_logins_asked_total{{service=\"{}\"}}", "x".repeat(MAX_SERVICE_LABEL));
    assert_eq!(samples(&text)[&long], "1");
    assert_eq!(escape_label("plain-name"), "plain-name");
}

#[test]
fn commit_latency_histogram_is_cumulative() {
    let metrics = Metrics::default();
    for micros in [100, 500, 501, 3_000, 7_000_000] {
        metrics.observe_commit(micros);
    }
    let samples = samples(&metrics.render(Gauges::default()));
    let bucket = |le: &str| samples[&format!("mfad_store_commit_seconds_bucket{{le=\"{le}\"}}")].clone();
    assert_eq!(bucket("0.0005"), "2");
    assert_eq!(bucket("0.001"), "3");
    assert_eq!(bucket("0.0025"), "3");
    assert_eq!(bucket("0.005"), "4");
    assert_eq!(bucket("5"), "4");
    assert_eq!(bucket("+Inf"), "5");
    assert_eq!(samples["mfad_store_commit_seconds_count"], "5");
    assert_eq!(samples["mfad_store_commit_seconds_sum"], "7.004101");
    assert_eq!(seconds(0), "0");
    assert_eq!(seconds(2_500_000), "2.5");
}

#[test]
fn gauges_follow_connections() {
    let metrics = Metrics::default();
    let first = metrics.connected();
    {
        let _second = metrics.connected();
        assert_eq!(samples(&metrics.render(Gauges::default()))["mfad_connected_clients"], "2");
    }
    drop(first);
    assert_eq!(samples(&metrics.render(Gauges::default()))["mfad_connected_clients"], "0");
}

#[test]
fn the_textfile_is_replaced_whole_with_mode_0644() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mfad.prom");
    // A planted link where the temporary goes is removed, never followed.
    let target = dir.path().join("target");
    std::fs::write(&target, "keep").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join(".mfad.prom.tmp")).unwrap();
    write_textfile(&path, "a 1\n").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 1\n");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    write_textfile(&path, "a 2\n").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "no temporary left: {names:?}");
    assert!(write_textfile(&dir.path().join("missing/mfad.prom"), "x").is_err());
}
