//! Issue #3 acceptance: the module driven by real PAM clients (pamtester
//! under libpam-wrapper, OpenSSH, su), never touching the machine's stacks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use e2e::*;

fn pamtester_code(services: &PamServices, service: &str, user: &str, code: &str) -> std::process::Output {
    run_with_input(&mut services.pamtester(service, user, &[("rhost", "127.0.0.1")]), &format!("{code}\n"))
}

#[test]
fn pamtester_right_wrong_replay_next() {
    let mfad = Mfad::start("default_level = \"always\"\nmax_tries = 1");
    let secret = mfad.enroll("pt_user", "hotp");
    let services = PamServices::new();
    services.add("mfatest", &[mfad.module_line("required", "")]);

    let out = pamtester_code(&services, "mfatest", "pt_user", &hotp(&secret, 1));
    assert!(out.status.success(), "right code: {}{}", stdout(&out), stderr(&out));
    let shown = format!("{}{}", stdout(&out), stderr(&out));
    assert!(shown.contains("Verification code"), "the prompt was relayed: {shown}");
    let wrong = if hotp(&secret, 2) == "000000" { "111111" } else { "000000" };
    let out = pamtester_code(&services, "mfatest", "pt_user", wrong);
    assert!(!out.status.success(), "wrong code");
    let out = pamtester_code(&services, "mfatest", "pt_user", &hotp(&secret, 1));
    assert!(!out.status.success(), "replayed code");
    let out = pamtester_code(&services, "mfatest", "pt_user", &hotp(&secret, 2));
    assert!(out.status.success(), "next code: {}", stderr(&out));
    mfad.audit_lines_until("rhost=127.0.0.1 outcome=success");
}

#[test]
fn rust_pam_client_right_wrong_replay_next() {
    let mfad = Mfad::start("default_level = \"always\"\nmax_tries = 1");
    let secret = mfad.enroll("rc_user", "hotp");
    let services = PamServices::new();
    services.add("mfatest", &[mfad.module_line("required", "")]);
    let client =
        |code: &str| run(&mut services.pam_client("mfatest", "rc_user", &[("rhost", "127.0.0.3"), ("answer", code)]));
    let out = client(&hotp(&secret, 1));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("prompt: Verification code"), "{}", stdout(&out));
    assert!(!client("999999x").status.success());
    assert!(!client(&hotp(&secret, 1)).status.success(), "replay");
    assert!(client(&hotp(&secret, 2)).status.success());
}

#[test]
fn an_unenrolled_user_is_ignored_never_succeeded() {
    let mfad = Mfad::start("");
    let services = PamServices::new();
    services.add("suff", &[mfad.module_line("sufficient", ""), "auth required pam_deny.so".into()]);
    services.add("req", &[mfad.module_line("required", ""), "auth required pam_permit.so".into()]);
    let out = run_with_input(&mut services.pamtester("suff", "nobody_enrolled", &[]), "");
    assert!(!out.status.success(), "sufficient must not skip the rest: {}", stdout(&out));
    let out = run_with_input(&mut services.pamtester("req", "nobody_enrolled", &[]), "");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn daemon_down_fails_closed_unless_failmode_safe() {
    let mut mfad = Mfad::start("default_level = \"always\"");
    mfad.enroll("fm_user", "hotp");
    mfad.stop();
    let services = PamServices::new();
    services.add("secure", &[mfad.module_line("required", ""), "auth required pam_permit.so".into()]);
    services.add("safe", &[mfad.module_line("required", "failmode=safe"), "auth required pam_permit.so".into()]);
    let out = run_with_input(&mut services.pamtester("secure", "fm_user", &[]), "");
    assert!(!out.status.success());
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("unavailable"), "a clear message: {said}");
    let out = run_with_input(&mut services.pamtester("safe", "fm_user", &[]), "");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn a_hung_daemon_fails_the_login_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("hung.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    // Accept and hold connections without ever answering.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let services = PamServices::new();
    let line = format!("auth required {} socket={} timeout=2", pam_module().display(), socket.display());
    services.add("hung", &[line, "auth required pam_permit.so".into()]);
    let started = Instant::now();
    let out = run_with_input(&mut services.pamtester("hung", "anyone", &[]), "");
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
}

#[test]
fn openssh_keyboard_interactive_with_a_code() {
    ensure_user("mfae_ssh", &[]);
    let mfad = Mfad::start("default_level = \"always\"\nmax_tries = 1");
    let secret = mfad.enroll("mfae_ssh", "hotp");
    let dir = mfad.dir.path();
    let sshd = Sshd::start(&mfad, "mfae");
    let ssh = |code: &str| {
        let askpass = dir.join(format!("askpass-{code}"));
        std::fs::write(&askpass, format!("#!/bin/sh\necho \"$1\" >> {}/prompts\necho {code}\n", dir.display()))
            .unwrap();
        std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o755)).unwrap();
        run(&mut sshd.ssh(&askpass, "mfae_ssh", &["echo", "logged-in-ok"]))
    };
    let out = ssh(&hotp(&secret, 1));
    assert!(out.status.success(), "right code: {}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out).trim(), "logged-in-ok");
    let prompts = std::fs::read_to_string(dir.join("prompts")).unwrap();
    assert!(prompts.contains("Verification code"), "{prompts}");
    let out = ssh("000000");
    assert!(!out.status.success(), "wrong code");
    assert!(!out.stdout.windows(12).any(|w| w == b"logged-in-ok"));
    mfad.audit_lines_until(&format!("user=mfae_ssh service={} rhost=127.0.0.1 outcome=success", sshd.service));
}

#[test]
fn su_asks_the_person_running_it() {
    ensure_user("mfae_su", &[]);
    let mfad = Mfad::start("");
    let secret = mfad.enroll("mfae_su", "hotp");
    mfad.ok(&["user", "authorize", "mfae_su", "--code", &hotp(&secret, 1)]);
    // su gets our stack through a bind mount in a private mount namespace.
    let stack = mfad.su_stack();
    let su = |code: &str| su_with_stack(&stack, "mfae_su", &format!("{code}\n"));
    let out = su(&hotp(&secret, 2));
    assert!(out.status.success(), "right code: {}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("su-ok"));
    let out = su("000000");
    assert!(!out.status.success(), "wrong code");
    mfad.audit_lines_until("user=mfae_su service=su rhost=- outcome=success");
}

#[test]
fn of_many_parallel_logins_offering_one_code_exactly_one_wins() {
    let mfad = Mfad::start("default_level = \"always\"\nmax_tries = 1\n[lockout]\nmax_failures = 1000");
    let secret = mfad.enroll("race_user", "hotp");
    let services = PamServices::new();
    services.add("mfatest", &[mfad.module_line("required", "")]);
    for round in 1..=5u64 {
        let code = hotp(&secret, round);
        let children: Vec<_> = (0..8)
            .map(|_| {
                spawn_one_at_a_time(
                    services
                        .pam_client("mfatest", "race_user", &[("answer", &code)])
                        .stdout(std::process::Stdio::null()),
                )
            })
            .collect();
        let wins = children.into_iter().filter_map(|mut c| c.wait().unwrap().success().then_some(())).count();
        assert_eq!(wins, 1, "round {round}: {wins} logins accepted the same code");
    }
}
