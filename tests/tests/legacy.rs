//! Legacy services that ask for one password: a real IMAP server (dovecot,
//! `passdb { driver = pam }`) driven by a real client (Python's imaplib),
//! with `forward_pass` (password and code in one answer) and with the
//! two-prompt stack; pamtester for the option's edge cases. A proxy between
//! the module and mfad keeps every frame mfad received: no password is in
//! any of them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::process::{Command, Output};

use e2e::legacy::{Dovecot, FrameProxy, set_password};
use e2e::*;

/// The module line for the socket at `socket` (the proxy or mfad's).
fn module(control: &str, socket: &std::path::Path, options: &str) -> String {
    format!("auth {control} {} socket={} {options}", pam_module().display(), socket.display())
}

/// The stack the README gives for forward_pass.
fn forward_pass_stack(socket: &std::path::Path, options: &str) -> Vec<String> {
    vec![
        module("requisite", socket, &format!("forward_pass {options}")),
        "auth required pam_unix.so try_first_pass nodelay".into(),
    ]
}

fn failures(mfad: &Mfad, user: &str) -> u64 {
    mfad.json(&["user", "show", user])["failures"].as_u64().unwrap()
}

/// Wrong codes at one-answer services, which lock only those services.
fn one_answer_failures(mfad: &Mfad, user: &str) -> u64 {
    mfad.json(&["user", "show", user])["one_answer_failures"].as_u64().unwrap()
}

/// Enroll `user` with a counter-based device; the secret and recovery codes.
fn enroll_hotp(mfad: &Mfad, user: &str, digits: u32) -> (String, Vec<String>) {
    let secret = mfad.json(&["user", "setup", user, "--type", "hotp"])["secret"].as_str().unwrap().to_string();
    let done = mfad.json(&["user", "setup", user, "--confirm", &hotp_digits(&secret, 0, digits)]);
    let codes = done["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string());
    (secret, codes.collect())
}

fn hotp_digits(secret: &str, counter: u64, digits: u32) -> String {
    let out = run(Command::new("oathtool").args([
        "-b",
        "--hotp",
        "-d",
        &digits.to_string(),
        "-c",
        &counter.to_string(),
        secret,
    ]));
    assert!(out.status.success(), "oathtool: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

fn wrong(right: &str) -> String {
    right.chars().map(|c| if c == '0' { '1' } else { '0' }).collect()
}

/// No frame mfad received holds any of `passwords`; at least one answer
/// was sent (so the check cannot pass on an empty capture).
fn assert_no_password_reached_mfad(proxy: &FrameProxy, passwords: &[&str]) {
    let frames = proxy.requests();
    assert!(frames.iter().any(|f| f.contains("\"auth_answer\"") || f.contains("auth_not_a_code")), "{frames:#?}");
    for frame in &frames {
        for password in passwords {
            assert!(!frame.contains(password), "a password reached mfad: {frame}");
        }
    }
}

#[test]
fn imap_with_forward_pass() {
    let mfad = Mfad::start("default_level = \"always\"");
    let (alice, bob, carol, dan) = ("mfae_lgalice", "mfae_lgbob", "mfae_lgcarol", "mfae_lgdan");
    for user in [alice, bob, carol, dan] {
        ensure_user(user, &[]);
    }
    // A password that itself ends in digits, as many as a code has.
    let dan_password = "pw-lgdan-2024123456";
    set_password(dan, dan_password);
    let (alice_secret, _) = enroll_hotp(&mfad, alice, 6);
    enroll_hotp(&mfad, bob, 6);
    mfad.ok(&["user", "level", bob, "superuser"]);
    let (dan_secret, _) = enroll_hotp(&mfad, dan, 6);

    let proxy = FrameProxy::start(&mfad.socket);
    let imap = Dovecot::start("imap-fwd", &forward_pass_stack(&proxy.socket, ""));
    let alice_pw = password(alice);

    let code = hotp(&alice_secret, 1);
    imap.login(alice, &format!("{alice_pw}{code}")).unwrap_or_else(|e| panic!("{e}\n{}", imap.log()));
    assert!(imap.login(alice, &format!("{alice_pw}{code}")).is_err(), "a replayed code is refused");
    assert_eq!(one_answer_failures(&mfad, alice), 1, "a replay is a wrong code");
    assert!(imap.login(alice, &alice_pw).is_err(), "the password alone, when a code is needed");
    assert!(imap.login(alice, &format!("{alice_pw}{}", wrong(&hotp(&alice_secret, 2)))).is_err());
    assert_eq!(one_answer_failures(&mfad, alice), 3, "password alone and a wrong code: one failure each");
    assert_eq!(failures(&mfad, alice), 0, "anyone can send those: they do not count for SSH or sudo");
    assert!(imap.login(alice, &format!("not-{alice_pw}{}", hotp(&alice_secret, 2))).is_err(), "wrong password");
    mfad.ok(&["user", "unlock", alice]);
    // No code needed: the password alone, asked by pam_unix.
    imap.login(bob, &password(bob)).expect("level superuser needs no code at login");
    imap.login(carol, &password(carol)).expect("not enrolled, no role: no code");
    assert!(imap.login(carol, "not-the-password").is_err());
    imap.login(dan, &format!("{dan_password}{}", hotp(&dan_secret, 1))).expect("a password ending in digits");
    assert!(imap.login(dan, dan_password).is_err(), "its last digits are no code");

    assert_no_password_reached_mfad(&proxy, &[&alice_pw, &password(bob), &password(carol), dan_password]);
    let lines = mfad.audit_lines_until(&format!("service={}", imap.service));
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("user={alice} service={} rhost=127.0.0.1 outcome=success", imap.service)))
    );
    assert!(lines.iter().any(|l| l.contains("outcome=failure") && l.contains("forward_pass")), "{lines:#?}");
}

#[test]
fn imap_with_two_prompts_never_locks_out() {
    let mfad = Mfad::start("default_level = \"always\"");
    let user = "mfae_lgtwo";
    ensure_user(user, &[]);
    let (secret, _) = enroll_hotp(&mfad, user, 6);
    let proxy = FrameProxy::start(&mfad.socket);
    let services = PamServices::new();
    // What `pam-auth-update --enable mfa` makes of a service: the password,
    // then a code prompt, which dovecot answers with the password.
    let stack = ["auth required pam_unix.so nodelay".into(), module("required", &proxy.socket, "")];
    services.add("imap-two", &stack);
    let imap = Dovecot::start("imap-two", &stack);
    for _ in 0..10 {
        assert!(imap.login(user, &password(user)).is_err(), "no code, no login");
    }
    let status = mfad.json(&["user", "show", user]);
    assert_eq!(status["failures"], 0, "{status}");
    assert!(status["locked_until"].is_null(), "{status}");
    let lines = mfad.audit_lines_until_count("outcome=not_a_code", 10);
    let not_a_code = lines.iter().find(|l| l.contains("outcome=not_a_code")).unwrap();
    assert!(
        not_a_code.contains("this client may be unable to answer a code prompt (see forward_pass)"),
        "{not_a_code}"
    );
    assert_no_password_reached_mfad(&proxy, &[&password(user)]);
    // The account works, and a code-shaped wrong answer still counts.
    let pamtester = |input: &str| run_with_input(&mut services.pamtester("imap-two", user, &[]), input);
    let right = pamtester(&format!("{}\n{}\n", password(user), hotp(&secret, 1)));
    assert!(right.status.success(), "{}{}", stdout(&right), stderr(&right));
    let wrong_code = wrong(&hotp(&secret, 2));
    assert!(!pamtester(&format!("{}\n{wrong_code}\n", password(user))).status.success());
    assert_eq!(failures(&mfad, user), 1);
}

/// pamtester on `service`, the answers one per line.
fn pamtester(services: &PamServices, service: &str, user: &str, answers: &[&str]) -> Output {
    let input: String = answers.iter().map(|a| format!("{a}\n")).collect();
    run_with_input(&mut services.pamtester(service, user, &[("rhost", "127.0.0.7")]), &input)
}

/// Whether the login passed; what pamtester said is kept in the test's
/// output (shown when the test fails).
fn ok(out: &Output) -> bool {
    eprintln!("pamtester: {}{}", stdout(out), stderr(out));
    out.status.success()
}

#[test]
fn forward_pass_edge_cases_through_pamtester() {
    let six = Mfad::start("default_level = \"always\"");
    let eight = Mfad::start("default_level = \"always\"\ndigits = 8");
    let user = "mfae_lgedge";
    ensure_user(user, &[]);
    let pw = password(user);
    let (secret6, recovery) = enroll_hotp(&six, user, 6);
    let (secret8, _) = enroll_hotp(&eight, user, 8);
    let proxy = FrameProxy::start(&six.socket);
    let services = PamServices::new();
    // pam_unix with use_first_pass after the module: it passes only when
    // the module handed on exactly the password.
    let exact = |socket: &std::path::Path, options: &str| {
        vec![
            module("requisite", socket, &format!("forward_pass {options}")),
            "auth required pam_unix.so use_first_pass nodelay".into(),
        ]
    };
    services.add("fwd6", &exact(&proxy.socket, ""));
    services.add("fwd8", &exact(&eight.socket, ""));
    // An earlier module sets PAM_AUTHTOK (pam_unix asks, and fails on the
    // password and code); the module takes the item and asks nothing.
    let mut first = vec!["auth optional pam_unix.so nodelay".to_string()];
    first.extend(exact(&proxy.socket, "use_first_pass"));
    services.add("first", &first);

    assert!(ok(&pamtester(&services, "fwd6", user, &[&format!("{pw}{}", hotp(&secret6, 1))])));
    assert!(ok(&pamtester(&services, "fwd8", user, &[&format!("{pw}{}", hotp_digits(&secret8, 1, 8))])));
    // A 6-digit code to an 8-digit device leaves two digits short.
    assert!(!ok(&pamtester(&services, "fwd8", user, &[&format!("{pw}{}", hotp(&secret8, 2))])));
    assert_eq!(one_answer_failures(&eight, user), 1);
    assert!(ok(&pamtester(&services, "first", user, &[&format!("{pw}{}", hotp(&secret6, 2))])));
    // A recovery code at the end, in its issued form.
    let out = pamtester(&services, "fwd6", user, &[&format!("{pw}{}", recovery[0])]);
    assert!(ok(&out), "{}{}", stdout(&out), stderr(&out));
    assert!(!ok(&pamtester(&services, "fwd6", user, &[&format!("{pw}{}", recovery[0])])), "used once");
    assert_eq!(one_answer_failures(&six, user), 1);
    // Too short to hold a code: a failure like a wrong code.
    assert!(!ok(&pamtester(&services, "fwd6", user, &["12345"])));
    assert_eq!(one_answer_failures(&six, user), 2);
    // The code right, the password before it wrong: pam_unix refuses what
    // was handed on.
    assert!(!ok(&pamtester(&services, "fwd6", user, &[&format!("{pw}x{}", hotp(&secret6, 3))])));
    assert_no_password_reached_mfad(&proxy, &[&pw]);
}

#[test]
fn forward_pass_failmode_safe_never_lets_a_wrong_password_through() {
    let mfad = Mfad::start("default_level = \"always\"");
    let user = "mfae_lgsafe";
    ensure_user(user, &[]);
    let pw = password(user);
    let (secret, _) = enroll_hotp(&mfad, user, 6);
    let gone = mfad.dir.path().join("no-such.sock");
    let services = PamServices::new();
    services.add("safe", &forward_pass_stack(&gone, "failmode=safe"));
    services.add("secure", &forward_pass_stack(&gone, ""));
    // mfad out of reach: the module asks nothing; pam_unix asks for the
    // password and takes only the password itself.
    let out = pamtester(&services, "safe", user, &[&pw]);
    assert!(ok(&out), "{}{}", stdout(&out), stderr(&out));
    assert!(!stdout(&out).contains("verification code"), "the module asked nothing: {}", stdout(&out));
    assert!(!ok(&pamtester(&services, "safe", user, &[&format!("{pw}{}", hotp(&secret, 1))])));
    assert!(!ok(&pamtester(&services, "safe", user, &["wrong-password"])));
    assert!(!ok(&pamtester(&services, "secure", user, &[&pw])), "failmode=secure denies");
}

#[test]
fn a_code_prompt_with_no_password_in_the_stack_counts_only_codes() {
    // The module alone: mfad judges the answer's shape.
    let mfad = Mfad::start("default_level = \"always\"");
    let user = "mfae_lgshape";
    ensure_user(user, &[]);
    let (secret, _) = enroll_hotp(&mfad, user, 6);
    let services = PamServices::new();
    services.add("mfa-only", &[mfad.module_line("required", "")]);
    for _ in 0..3 {
        assert!(!ok(&pamtester(&services, "mfa-only", user, &["hunter2", "12345", "x"])));
    }
    assert_eq!(failures(&mfad, user), 0);
    assert!(!ok(&pamtester(&services, "mfa-only", user, &[&wrong(&hotp(&secret, 1)), "not a code", "no"])));
    assert_eq!(failures(&mfad, user), 1);
    assert!(ok(&pamtester(&services, "mfa-only", user, &[&hotp(&secret, 1)])));
}
