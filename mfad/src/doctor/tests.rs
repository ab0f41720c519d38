//! The checks as functions of what they look at: parsed stacks and
//! sshd_config, file facts, mfad's answers, clock states.

use std::collections::HashMap;

use mfa_shared::config::Config;
use mfa_shared::{ChallengeLevel, ClientError, EnrollmentState, ErrorKind, UserStatus};

use super::files::{FileFacts, FileKind, key_file_finding, socket_findings, store_file_finding};
use super::pam::{Stack, load_stack};
use super::sshd::{Files, SshdConfig, parse, wildcard};
use super::system::{ClockState, DaemonAnswer, check_clock, check_daemon, check_root_enrolled};
use super::{Finding, Severity, sshd, stacks, worst};

fn stacks_of(files: &[(&str, &str)]) -> Vec<Stack> {
    let map: HashMap<String, String> = files.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let read = |name: &str| map.get(name).cloned();
    let mut names: Vec<&str> = files.iter().map(|(k, _)| *k).collect();
    names.sort();
    names.iter().filter_map(|n| load_stack(n, &read)).collect()
}

fn severities(findings: &[Finding]) -> Vec<Severity> {
    findings.iter().map(|f| f.severity).collect()
}

const SOUND_COMMON: &str = "auth [success=1 default=ignore] pam_unix.so nullok\nauth requisite pam_deny.so\n\
                            auth required pam_permit.so\nauth required pam_mfa.so\n";

fn sound() -> Vec<(&'static str, &'static str)> {
    vec![
        ("common-auth", SOUND_COMMON),
        ("sshd", "@include common-auth\naccount required pam_nologin.so\n"),
        ("sudo", "@include common-auth\n"),
        ("su", "auth sufficient pam_rootok.so\n@include common-auth\n"),
        ("login", "auth optional pam_faildelay.so\n@include common-auth\n"),
    ]
}

#[test]
fn sound_stacks_have_no_finding() {
    let all = stacks_of(&sound());
    for findings in [
        stacks::check_missing(&all, true),
        stacks::check_controls(&all),
        stacks::check_failmode(&all),
        stacks::check_legacy_services(&all),
    ] {
        assert_eq!(severities(&findings), vec![Severity::Ok], "{findings:?}");
    }
}

#[test]
fn a_stack_without_the_module_is_an_error_when_enabled_and_a_warning_when_not() {
    let mut files = sound();
    files.retain(|(n, _)| *n != "sudo");
    files.push(("sudo", "auth required pam_unix.so\n"));
    let all = stacks_of(&files);
    let on = stacks::check_missing(&all, true);
    assert_eq!(severities(&on), vec![Severity::Error]);
    assert!(on[0].message.contains("/etc/pam.d/sudo"), "{on:?}");
    assert_eq!(severities(&stacks::check_missing(&all, false)), vec![Severity::Warning]);
    // A service that is not installed is not missing.
    files.retain(|(n, _)| *n != "sudo");
    assert_eq!(severities(&stacks::check_missing(&stacks_of(&files), true)), vec![Severity::Ok]);
}

#[test]
fn sufficient_optional_and_skipping_rules_are_reported_once_per_place() {
    let files = [
        ("common-auth", "auth required pam_unix.so\nauth sufficient pam_mfa.so\n"),
        ("sshd", "@include common-auth\n"),
        ("sudo", "@include common-auth\n"),
        ("other", "auth optional pam_mfa.so\n"),
        ("login", "auth sufficient pam_unix.so\nauth required pam_mfa.so\n"),
        ("jump", "auth [success=2 default=ignore] pam_unix.so\nauth requisite pam_deny.so\nauth required pam_mfa.so\n"),
    ];
    let findings = stacks::check_controls(&stacks_of(&files));
    let errors: Vec<&Finding> = findings.iter().filter(|f| f.severity == Severity::Error).collect();
    assert_eq!(errors.len(), 2, "{findings:?}");
    assert!(errors.iter().any(|f| f.message.contains("/etc/pam.d/common-auth:2") && f.message.contains("sufficient")));
    assert!(errors.iter().any(|f| f.message.contains("/etc/pam.d/other:1") && f.message.contains("optional")));
    let warnings: Vec<&Finding> = findings.iter().filter(|f| f.severity == Severity::Warning).collect();
    assert_eq!(warnings.len(), 2, "{findings:?}");
    assert!(warnings.iter().any(|f| f.message.contains("/etc/pam.d/login:1")));
    assert!(warnings.iter().any(|f| f.message.contains("/etc/pam.d/jump:1")));
}

#[test]
fn failmode_safe_is_a_warning() {
    let all = stacks_of(&[("sshd", "auth required pam_unix.so\nauth required pam_mfa.so failmode=safe\n")]);
    let findings = stacks::check_failmode(&all);
    assert_eq!(severities(&findings), vec![Severity::Warning]);
    assert!(findings[0].message.contains("/etc/pam.d/sshd:2"));
    let bad = stacks_of(&[("sshd", "auth required pam_mfa.so failmode=open\n")]);
    assert_eq!(severities(&stacks::check_failmode(&bad)), vec![Severity::Error]);
}

#[test]
fn single_password_services_need_forward_pass_and_try_first_pass() {
    let two_prompt = stacks_of(&[("common-auth", SOUND_COMMON), ("dovecot", "@include common-auth\n")]);
    let findings = stacks::check_legacy_services(&two_prompt);
    assert_eq!(severities(&findings), vec![Severity::Warning]);
    assert!(findings[0].message.contains("/etc/pam.d/dovecot") && findings[0].message.contains("forward_pass"));
    let forward =
        stacks_of(&[("vsftpd", "auth requisite pam_mfa.so forward_pass\nauth required pam_unix.so try_first_pass\n")]);
    assert_eq!(severities(&stacks::check_legacy_services(&forward)), vec![Severity::Ok]);
    // use_first_pass: a login that needs no code gets no password handed on.
    let refuses =
        stacks_of(&[("vsftpd", "auth requisite pam_mfa.so forward_pass\nauth required pam_unix.so use_first_pass\n")]);
    assert_eq!(severities(&stacks::check_legacy_services(&refuses)), vec![Severity::Warning]);
    let asks_again = stacks_of(&[("openvpn", "auth required pam_mfa.so forward_pass\nauth required pam_unix.so\n")]);
    let findings = stacks::check_legacy_services(&asks_again);
    assert_eq!(severities(&findings), vec![Severity::Warning]);
    assert!(findings[0].message.contains("try_first_pass"));
    // An interactive service in the two-prompt mode is not flagged.
    assert_eq!(severities(&stacks::check_legacy_services(&stacks_of(&sound()))), vec![Severity::Ok]);
}

fn sshd_of(files: &[(&str, &str)]) -> Option<SshdConfig> {
    let map: HashMap<String, String> = files.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let read = |path: &str| map.get(path).cloned();
    let expand = |pattern: &str| {
        let mut names: Vec<String> = map
            .keys()
            .filter(|k| k.rsplit_once('/').map(|(d, _)| d) == pattern.rsplit_once('/').map(|(d, _)| d))
            .filter(|k| wildcard(pattern.rsplit('/').next().unwrap_or(""), k.rsplit('/').next().unwrap_or("")))
            .cloned()
            .collect();
        names.sort();
        names
    };
    parse(&Files { read: &read, expand: &expand })
}

#[test]
fn sshd_sound_config_is_ok() {
    let config = sshd_of(&[(
        "/etc/ssh/sshd_config",
        "UsePAM yes\nKbdInteractiveAuthentication yes\nAuthenticationMethods publickey,keyboard-interactive:pam\n",
    )]);
    assert_eq!(severities(&sshd::check(&config)), vec![Severity::Ok]);
    assert_eq!(severities(&sshd::check(&None)), vec![Severity::Ok]);
}

#[test]
fn sshd_first_value_wins_includes_and_match_blocks() {
    let config = sshd_of(&[
        (
            "/etc/ssh/sshd_config",
            "Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\nKbdInteractiveAuthentication yes\n\
             AuthenticationMethods keyboard-interactive\nMatch User bob\n  UsePAM no\n",
        ),
        ("/etc/ssh/sshd_config.d/10-debian.conf", "ChallengeResponseAuthentication=no\n"),
        ("/etc/ssh/sshd_config.d/20-x.conf", "kbdinteractiveauthentication yes\n"),
        ("/etc/ssh/sshd_config.d/ignored.txt", "UsePAM no\n"),
    ]);
    let findings = sshd::check(&config);
    assert_eq!(severities(&findings), vec![Severity::Error], "{findings:?}");
    assert!(findings[0].message.contains("KbdInteractiveAuthentication no"));
    assert!(findings[0].message.contains("/etc/ssh/sshd_config.d/10-debian.conf:1"), "{findings:?}");
}

#[test]
fn sshd_without_pam_or_with_methods_that_skip_keyboard_interactive() {
    let defaults = sshd::check(&sshd_of(&[("/etc/ssh/sshd_config", "# all defaults\n")]));
    // UsePAM defaults to no; AuthenticationMethods any lets a key alone in.
    assert_eq!(severities(&defaults), vec![Severity::Error, Severity::Warning], "{defaults:?}");
    let methods = sshd::check(&sshd_of(&[(
        "/etc/ssh/sshd_config",
        "UsePAM yes\nAuthenticationMethods publickey,keyboard-interactive publickey\n",
    )]));
    assert_eq!(severities(&methods), vec![Severity::Error], "{methods:?}");
    assert!(methods[0].message.contains("`publickey`"));
    let no_keys = sshd::check(&sshd_of(&[("/etc/ssh/sshd_config", "UsePAM yes\nPubkeyAuthentication no\n")]));
    assert_eq!(severities(&no_keys), vec![Severity::Ok], "{no_keys:?}");
}

#[test]
fn wildcards_match_as_fnmatch() {
    assert!(wildcard("*.conf", "10-a.conf"));
    assert!(!wildcard("*.conf", "10-a.conf.bak"));
    assert!(wildcard("a?c*", "abcdef"));
    assert!(!wildcard("a?c", "ac"));
    assert!(wildcard("*", ""));
}

fn facts(mode: u32, uid: u32, kind: FileKind) -> Option<FileFacts> {
    Some(FileFacts { mode, uid, kind })
}

#[test]
fn key_file_modes_and_owner() {
    let k = "/etc/mfad/secret.key";
    assert_eq!(key_file_finding(k, facts(0o600, 0, FileKind::File)).severity, Severity::Ok);
    assert_eq!(key_file_finding(k, facts(0o400, 0, FileKind::File)).severity, Severity::Ok);
    let loose = key_file_finding(k, facts(0o644, 0, FileKind::File));
    assert_eq!(loose.severity, Severity::Error);
    assert!(loose.message.contains("0644") && loose.message.contains("chmod 600"));
    assert_eq!(key_file_finding(k, facts(0o640, 0, FileKind::File)).severity, Severity::Error);
    assert_eq!(key_file_finding(k, facts(0o600, 1000, FileKind::File)).severity, Severity::Error);
    assert_eq!(key_file_finding(k, facts(0o777, 0, FileKind::Symlink)).severity, Severity::Error);
    assert_eq!(key_file_finding(k, None).severity, Severity::Warning);
}

#[test]
fn store_and_socket_modes() {
    let s = "/var/lib/mfad/mfad.db";
    assert_eq!(store_file_finding(s, facts(0o600, 0, FileKind::File)).severity, Severity::Ok);
    assert_eq!(store_file_finding(s, facts(0o644, 0, FileKind::File)).severity, Severity::Warning);
    assert_eq!(store_file_finding(s, facts(0o666, 0, FileKind::File)).severity, Severity::Error);
    assert_eq!(store_file_finding(s, None).severity, Severity::Ok);
    let sock = "/run/mfad/mfad.sock";
    let good = socket_findings(sock, facts(0o755, 0, FileKind::Dir), facts(0o666, 0, FileKind::Socket));
    assert!(good.is_empty(), "{good:?}");
    let open_dir = socket_findings(sock, facts(0o777, 0, FileKind::Dir), facts(0o666, 0, FileKind::Socket));
    assert_eq!(severities(&open_dir), vec![Severity::Error]);
    let closed = socket_findings(sock, facts(0o755, 0, FileKind::Dir), facts(0o600, 0, FileKind::Socket));
    assert_eq!(severities(&closed), vec![Severity::Warning]);
}

fn root_status(state: EnrollmentState) -> UserStatus {
    UserStatus {
        user: "root".into(),
        state,
        otp_type: None,
        pending: false,
        level: ChallengeLevel::Adaptive,
        level_is_default: true,
        superuser_approved: false,
        failures: 0,
        locked_until: None,
        one_answer_failures: 0,
        one_answer_locked_until: None,
        last_success: None,
        last_source: None,
        recovery_codes_left: 0,
        role_policy: None,
    }
}

#[test]
fn daemon_answers_and_root_enrollment() {
    let socket = std::path::Path::new("/run/mfad/mfad.sock");
    let enrolled = DaemonAnswer::Status(root_status(EnrollmentState::Enabled));
    let not = DaemonAnswer::Status(root_status(EnrollmentState::NotEnrolled));
    let down = DaemonAnswer::Failed(ClientError::TimedOut);
    let denied = DaemonAnswer::Failed(ClientError::Daemon { kind: ErrorKind::PermissionDenied, message: "x".into() });
    assert_eq!(severities(&check_daemon(socket, &enrolled)), vec![Severity::Ok]);
    assert_eq!(severities(&check_daemon(socket, &denied)), vec![Severity::Ok]);
    assert_eq!(severities(&check_daemon(socket, &down)), vec![Severity::Error]);
    let store_down = DaemonAnswer::Failed(ClientError::StoreUnavailable("db".into()));
    assert_eq!(severities(&check_daemon(socket, &store_down)), vec![Severity::Error]);
    let on = Config { enabled: true, ..Config::default() };
    assert_eq!(severities(&check_root_enrolled(&on, &enrolled)), vec![Severity::Ok]);
    let unenrolled = check_root_enrolled(&on, &not);
    assert_eq!(severities(&unenrolled), vec![Severity::Warning]);
    assert!(unenrolled[0].message.contains("mfactl user setup root"));
    assert_eq!(severities(&check_root_enrolled(&on, &denied)), vec![Severity::Warning]);
    assert_eq!(severities(&check_root_enrolled(&Config::default(), &not)), vec![Severity::Ok]);
}

#[test]
fn clock_status() {
    let synced = ClockState { status: 0, maxerror_us: 250_000 };
    assert_eq!(check_clock(Some(synced)).severity, Severity::Ok);
    let unsync = ClockState { status: libc::STA_UNSYNC, maxerror_us: 250_000 };
    assert_eq!(check_clock(Some(unsync)).severity, Severity::Warning);
    let drifting = ClockState { status: 0, maxerror_us: 16_000_000 };
    assert_eq!(check_clock(Some(drifting)).severity, Severity::Warning);
    assert_eq!(check_clock(None).severity, Severity::Warning);
    assert!(super::system::read_clock().is_some(), "adjtimex read-only never fails");
}

#[test]
fn worst_severity() {
    assert_eq!(worst(&[]), Severity::Ok);
    assert_eq!(worst(&[Finding::ok("a", ""), Finding::warning("b", "")]), Severity::Warning);
    assert_eq!(worst(&[Finding::error("a", ""), Finding::warning("b", "")]), Severity::Error);
}

#[test]
fn group_members_from_group_and_passwd() {
    let group = "root:x:0:\nmfa-admins:x:990:alice, bob\nops:x:991:\n";
    let passwd = "root:x:0:0::/root:/bin/sh\ncarol:x:1002:990::/home/carol:/bin/sh\ndan:x:1003:991::/:/bin/sh\n";
    assert_eq!(super::members::members("mfa-admins", group, passwd).unwrap(), vec!["alice", "bob", "carol"]);
    assert_eq!(super::members::members("ops", group, passwd).unwrap(), vec!["dan"]);
    assert_eq!(super::members::members("root", group, passwd).unwrap(), vec!["root"]);
    assert!(super::members::members("nope", group, passwd).is_none());
}

#[test]
fn unenrolled_administrators_and_forced_role_members_are_warned_about() {
    let group = "mfa-admins:x:990:alice,bob\nstaff:x:50:erin\nvpn:x:51:frank\n";
    let config = Config::parse(
        "enabled = true\n[[role]]\ngroup = \"staff\"\npolicy = \"force\"\n\
         [[role]]\ngroup = \"vpn\"\npolicy = \"encourage\"\n",
    )
    .unwrap();
    let ask = |user: &str| {
        let state = if user == "alice" { EnrollmentState::Enabled } else { EnrollmentState::NotEnrolled };
        DaemonAnswer::Status(UserStatus { user: user.into(), ..root_status(state) })
    };
    let findings = super::members::check(&config, group, "", &ask);
    let messages: Vec<&str> = findings.iter().map(|f| f.message.as_str()).collect();
    assert_eq!(severities(&findings), vec![Severity::Warning, Severity::Warning], "{messages:?}");
    assert!(messages[0].starts_with("bob (group mfa-admins, admin_group)"), "{messages:?}");
    assert!(messages[1].starts_with("erin (group staff, role with policy force)"), "{messages:?}");
    let all_enrolled =
        |user: &str| DaemonAnswer::Status(UserStatus { user: user.into(), ..root_status(EnrollmentState::Enabled) });
    assert_eq!(severities(&super::members::check(&config, group, "", &all_enrolled)), vec![Severity::Ok]);
    let off = Config::default();
    assert_eq!(severities(&super::members::check(&off, group, "", &ask)), vec![Severity::Ok]);
}
