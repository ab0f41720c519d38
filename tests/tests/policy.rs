//! Issue #4 acceptance: the policy engine through real PAM clients -
//! pamtester and `pam_client` under libpam-wrapper (with PAM_RHOST from
//! 127.0.0.x), real sudo and su - with real Unix users and groups.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::*;

/// A login service: the module, then `pam_permit`, so a login that needs no
/// code (the module's PAM_IGNORE) goes through with nothing on stdin.
const LOGIN: &str = "mfalogin";

fn login_services(mfad: &Mfad) -> PamServices {
    let services = PamServices::new();
    services.add(LOGIN, &[mfad.module_line("required", ""), "auth required pam_permit.so".into()]);
    services
}

/// What a PAM client run showed and how it ended.
struct Attempt {
    ok: bool,
    /// A code was asked for.
    asked: bool,
    said: String,
}

fn attempt(cmd: &mut Command, input: &str) -> Attempt {
    let out = run_with_input(cmd, input);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    Attempt { ok: out.status.success(), asked: said.contains("Verification code"), said }
}

/// pamtester on [`LOGIN`] from `rhost`, answering with `input`.
fn login(services: &PamServices, user: &str, rhost: &str, input: &str) -> Attempt {
    attempt(&mut services.pamtester(LOGIN, user, &[("rhost", rhost)]), input)
}

/// The login went through without a code being asked (stdin was empty, so
/// a prompt would have failed it).
fn assert_not_asked(a: &Attempt, what: &str) {
    assert!(a.ok && !a.asked, "{what}: no code should be asked:\n{}", a.said);
}

/// A code was asked; `ok` says whether the login went through.
fn assert_asked(a: &Attempt, ok: bool, what: &str) {
    assert!(a.asked, "{what}: a code should be asked:\n{}", a.said);
    assert_eq!(a.ok, ok, "{what}: login success should be {ok}:\n{}", a.said);
}

fn code(c: &str) -> String {
    format!("{c}\n")
}

/// A code that is not `right`.
fn wrong(right: &str) -> &'static str {
    if right == "000000" { "111111" } else { "000000" }
}

fn show(mfad: &Mfad, user: &str) -> serde_json::Value {
    mfad.json(&["user", "show", user])
}

/// Wait until at least `n` audit lines contain `needle`.
fn audit_count(mfad: &Mfad, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let count = mfad.audit_lines_until(needle).iter().filter(|l| l.contains(needle)).count();
        if count >= n {
            return;
        }
        assert!(Instant::now() < deadline, "only {count} audit lines with {needle:?}, expected {n}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn roles(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(group, policy)| format!("\n[[role]]\ngroup = \"{group}\"\npolicy = \"{policy}\"")).collect()
}

// ---- challenge levels (acceptance 2) -----------------------------------------

#[test]
fn level_always_asks_every_time() {
    let mfad = Mfad::start("max_tries = 1");
    let secret = mfad.enroll("mfae_always", "hotp");
    mfad.ok(&["user", "level", "mfae_always", "always"]);
    let services = login_services(&mfad);
    for counter in 1..=3 {
        let a = login(&services, "mfae_always", "127.0.0.5", &code(&hotp(&secret, counter)));
        assert_asked(&a, true, &format!("login {counter} from the same address"));
    }
    assert_asked(&login(&services, "mfae_always", "127.0.0.5", ""), false, "no answer");
    mfad.audit_lines_until(
        "user=mfae_always service=mfalogin rhost=127.0.0.5 outcome=challenge reason=\"level always\"",
    );
    mfad.audit_lines_until("rhost=127.0.0.5 outcome=success reason=\"challenge passed\"");
}

#[test]
fn adaptive_trusts_a_source_until_a_new_one_or_a_failure() {
    let mfad = Mfad::start("default_level = \"adaptive\"\nmax_tries = 1");
    let secret = mfad.enroll("mfae_adaptive", "hotp");
    let services = login_services(&mfad);
    let user = "mfae_adaptive";

    let a = login(&services, user, "127.0.0.5", &code(&hotp(&secret, 1)));
    assert_asked(&a, true, "first login from 127.0.0.5");
    assert_not_asked(&login(&services, user, "127.0.0.5", ""), "second login from 127.0.0.5");
    mfad.audit_lines_until(
        "user=mfae_adaptive service=mfalogin rhost=127.0.0.5 outcome=not_required reason=\"trusted source\"",
    );

    let a = login(&services, user, "127.0.0.6", &code(&hotp(&secret, 2)));
    assert_asked(&a, true, "first login from 127.0.0.6");
    mfad.audit_lines_until("rhost=127.0.0.6 outcome=challenge reason=\"adaptive: new or expired source\"");
    assert_not_asked(&login(&services, user, "127.0.0.6", ""), "second login from 127.0.0.6");

    // A wrong code from elsewhere: even the trusted sources are asked again.
    let a = login(&services, user, "127.0.0.7", &code(wrong(&hotp(&secret, 3))));
    assert_asked(&a, false, "wrong code from 127.0.0.7");
    mfad.audit_lines_until("rhost=127.0.0.7 outcome=failure reason=\"challenge failed; too many tries\"");
    let a = login(&services, user, "127.0.0.5", &code(&hotp(&secret, 3)));
    assert_asked(&a, true, "127.0.0.5 after a failed code");
    mfad.audit_lines_until("rhost=127.0.0.5 outcome=challenge reason=\"adaptive: failed code since last success\"");
    assert_not_asked(&login(&services, user, "127.0.0.5", ""), "127.0.0.5 after the success");
}

#[test]
fn adaptive_trust_lapses_after_the_trust_window() {
    let mfad = Mfad::start("default_level = \"adaptive\"\ntrust_window = \"2s\"\nmax_tries = 1");
    let secret = mfad.enroll("mfae_window", "hotp");
    let services = login_services(&mfad);
    assert_asked(&login(&services, "mfae_window", "127.0.0.5", &code(&hotp(&secret, 1))), true, "first login");
    assert_not_asked(&login(&services, "mfae_window", "127.0.0.5", ""), "within the window");
    std::thread::sleep(Duration::from_secs(3));
    assert_asked(&login(&services, "mfae_window", "127.0.0.5", &code(&hotp(&secret, 2))), true, "after the window");
}

#[test]
fn level_superuser_never_asks_at_login_only_for_elevation() {
    let mfad = Mfad::start("max_tries = 1");
    let user = "mfae_superlevel";
    let secret = mfad.enroll(user, "hotp");
    mfad.ok(&["user", "level", user, "superuser"]);
    mfad.ok(&["user", "authorize", user, "--code", &hotp(&secret, 1)]);
    let services = login_services(&mfad);
    for rhost in ["127.0.0.5", "127.0.0.6", "127.0.0.5"] {
        assert_not_asked(&login(&services, user, rhost, ""), rhost);
    }
    assert_not_asked(&attempt(&mut services.pamtester(LOGIN, user, &[]), ""), "local login");
    mfad.audit_lines_until("rhost=127.0.0.6 outcome=not_required reason=\"level superuser: no code at login\"");
    // An elevation service (sudo, here under libpam-wrapper) still asks.
    services.add("sudo", &[mfad.module_line("required", "")]);
    let a = attempt(
        &mut services.pamtester("sudo", "root", &[("rhost", "127.0.0.5"), ("ruser", user)]),
        &code(&hotp(&secret, 2)),
    );
    assert_asked(&a, true, "sudo");
    assert!(a.said.contains(&format!("Verification code for {user}")), "{}", a.said);
}

#[test]
fn a_locked_account_is_refused_even_a_right_code() {
    let mfad =
        Mfad::start("default_level = \"always\"\nmax_tries = 1\n[lockout]\nmax_failures = 2\nduration = \"15m\"");
    let secret = mfad.enroll("mfae_locked", "hotp");
    let services = login_services(&mfad);
    for _ in 0..2 {
        assert_asked(&login(&services, "mfae_locked", "127.0.0.5", &code(wrong(&hotp(&secret, 1)))), false, "wrong");
    }
    let a = login(&services, "mfae_locked", "127.0.0.5", &code(&hotp(&secret, 1)));
    assert!(!a.ok && !a.asked && a.said.contains("locked"), "{}", a.said);
    mfad.audit_lines_until(
        "user=mfae_locked service=mfalogin rhost=127.0.0.5 outcome=denied reason=\"account locked\"",
    );
    mfad.ok(&["user", "unlock", "mfae_locked"]);
    assert_asked(&login(&services, "mfae_locked", "127.0.0.5", &code(&hotp(&secret, 1))), true, "unlocked");
}

// ---- elevation (acceptance 3) -------------------------------------------------

#[test]
fn sudo_needs_enrollment_approval_and_a_code() {
    let user = "mfae_sudoer";
    ensure_user(user, &[]);
    let service = own_service_name("elev");
    let mfad = Mfad::start(&format!("max_tries = 1\n[elevation]\nservices = [\"{service}\"]"));
    let sudo = Sudo::new(&mfad, user, "elev");

    let out = sudo.run("123456\n");
    assert!(!out.status.success(), "not enrolled: {}", stderr(&out));
    assert!(stderr(&out).contains("mfactl setup"), "{}", stderr(&out));
    mfad.audit_lines_until(&format!(
        "user={user} service={service} rhost=- outcome=denied reason=\"elevation denied: not enrolled\""
    ));

    let secret = mfad.enroll(user, "hotp");
    let out = sudo.run(&code(&hotp(&secret, 1)));
    assert!(!out.status.success(), "not approved, right code: {}", stderr(&out));
    assert!(stderr(&out).contains("not approved"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("Verification code"), "no code is asked: {}", stderr(&out));
    mfad.audit_lines_until("reason=\"elevation denied: super-user approval not granted\"");
    assert_eq!(show(&mfad, user)["superuser_approved"], false);

    mfad.ok(&["user", "authorize", user, "--code", &hotp(&secret, 1)]);
    assert_eq!(show(&mfad, user)["superuser_approved"], true);
    let out = sudo.run(&code(&hotp(&secret, 2)));
    assert!(out.status.success(), "approved, right code: {}{}", stdout(&out), stderr(&out));
    // sudo authenticates the invoking user: PAM_USER and PAM_RUSER are both the sudoer.
    assert!(stderr(&out).contains("Verification code: "), "sudo -S relays the echo-off prompt: {}", stderr(&out));
    mfad.audit_lines_until(&format!(
        "user={user} service={service} rhost=- outcome=success reason=\"challenge passed\""
    ));
    let out = sudo.run(&code(wrong(&hotp(&secret, 3))));
    assert!(!out.status.success(), "approved, wrong code");

    mfad.ok(&["user", "revoke", user]);
    assert_eq!(show(&mfad, user)["superuser_approved"], false);
    let out = sudo.run(&code(&hotp(&secret, 3)));
    assert!(!out.status.success(), "revoked: {}", stderr(&out));
    assert!(stderr(&out).contains("not approved"), "{}", stderr(&out));

    // A new device drops the approval.
    mfad.ok(&["user", "authorize", user, "--code", &hotp(&secret, 3)]);
    let secret = mfad.enroll(user, "hotp");
    assert_eq!(show(&mfad, user)["superuser_approved"], false);
    assert!(!sudo.run(&code(&hotp(&secret, 1))).status.success(), "new device, not approved");
}

#[test]
fn su_asks_the_person_running_it_and_needs_approval() {
    let user = "mfae_su_elev";
    ensure_user(user, &[]);
    let mfad = Mfad::start("max_tries = 1");
    let secret = mfad.enroll(user, "hotp");
    let stack = mfad.su_stack();
    let out = su_with_stack(&stack, user, &code(&hotp(&secret, 1)));
    assert!(!out.status.success(), "not approved: {}{}", stdout(&out), stderr(&out));
    // PAM_USER is root; the person elevating (PAM_RUSER) is the one asked.
    mfad.audit_lines_until(&format!(
        "user={user} service=su rhost=- outcome=denied reason=\"elevation denied: super-user approval not granted\""
    ));

    mfad.ok(&["user", "authorize", user, "--code", &hotp(&secret, 1)]);
    let out = su_with_stack(&stack, user, &code(&hotp(&secret, 2)));
    assert!(out.status.success(), "approved: {}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("su-ok"));
    let out = su_with_stack(&stack, user, &code(wrong(&hotp(&secret, 3))));
    assert!(!out.status.success(), "wrong code");
    mfad.ok(&["user", "revoke", user]);
    let out = su_with_stack(&stack, user, &code(&hotp(&secret, 3)));
    assert!(!out.status.success(), "revoked");
    assert!(!stdout(&out).contains("su-ok"));
}

// ---- roles and inline enrollment (acceptance 4) ----------------------------------

/// Drive an inline enrollment through `pam_client --interactive` as a
/// person would: read the secret shown, compute the code with oathtool,
/// give a wrong one first, then the right one. Returns the secret.
fn enroll_inline(services: &PamServices, user: &str, barcode: bool, counter_based: bool) -> String {
    let mut conv = Interactive::start(services.pam_client(LOGIN, user, &[("rhost", "127.0.0.5")]));
    let q = conv.expect_prompt();
    assert!(q.echo, "a question is asked with echo on: {q:?}");
    assert_eq!(q.text, "Does your device support scanning a barcode? [y/n] ");
    assert!(q.shown.contains("must use two-factor authentication"), "{}", q.shown);
    conv.answer(if barcode { "y" } else { "n" });
    let q = conv.expect_prompt();
    assert!(q.echo);
    assert_eq!(q.text, "Time-based or counter-based? [t/c] ");
    conv.answer(if counter_based { "c" } else { "" });
    let q = conv.expect_prompt();
    assert!(!q.echo, "the code is asked with echo off: {q:?}");
    assert_eq!(q.text, "Enter the code from your device to complete setup: ");
    if barcode {
        assert!(q.shown.contains("Scan this QR code") && q.shown.contains('█'), "{}", q.shown);
        assert!(q.shown.contains("otpauth://"), "{}", q.shown);
    } else {
        assert!(q.shown.contains("Enter this key") && !q.shown.contains("otpauth://"), "{}", q.shown);
        let kind = if counter_based { "counter-based (HOTP)" } else { "time-based (TOTP)" };
        assert!(q.shown.contains(kind) && q.shown.contains("digits"), "{}", q.shown);
    }
    let secret = secret_from_setup_text(&q.shown);
    let right = if counter_based { hotp(&secret, 0) } else { totp_now(&secret) };
    conv.answer(wrong(&right));
    let q = conv.expect_prompt();
    assert!(q.shown.contains("wrong code"), "{}", q.shown);
    conv.answer(&right);
    let (ok, transcript) = conv.finish();
    assert!(ok, "the enrollment completes the login:\n{transcript}");
    assert!(transcript.contains("Two-factor authentication is enabled."), "{transcript}");
    assert!(transcript.contains("Recovery codes"), "{transcript}");
    secret
}

#[test]
fn force_and_require_members_enroll_inline() {
    ensure_user("mfae_forced", &["mfae_g_force"]);
    ensure_user("mfae_required", &["mfae_g_require"]);
    let mfad =
        Mfad::start(&format!("max_tries = 2{}", roles(&[("mfae_g_force", "force"), ("mfae_g_require", "require")])));
    let services = login_services(&mfad);

    enroll_inline(&services, "mfae_forced", true, false);
    let status = show(&mfad, "mfae_forced");
    assert_eq!(status["state"], "enabled", "{status}");
    assert_eq!(status["otp_type"], "totp");
    assert_eq!(status["recovery_codes_left"], 10);
    assert_eq!(status["role_policy"], "force");
    mfad.audit_lines_until("user=mfae_forced service=mfalogin rhost=127.0.0.5 outcome=enroll reason=\"enrollment offered (role policy force)\"");
    mfad.audit_lines_until("user=mfae_forced service=mfalogin rhost=127.0.0.5 outcome=success reason=\"enrollment completed (role policy force)\"");
    // Enrolled under force: the own (adaptive) level applies, and the source
    // of the set-up code is trusted.
    assert_not_asked(&login(&services, "mfae_forced", "127.0.0.5", ""), "force member after enrollment");

    let secret = enroll_inline(&services, "mfae_required", false, true);
    let status = show(&mfad, "mfae_required");
    assert_eq!(status["state"], "enabled", "{status}");
    assert_eq!(status["otp_type"], "hotp");
    mfad.audit_lines_until("user=mfae_required service=mfalogin rhost=127.0.0.5 outcome=success reason=\"enrollment completed (role policy require)\"");
    // Under require: a code at every login, even from the trusted source.
    let a = login(&services, "mfae_required", "127.0.0.5", &code(&hotp(&secret, 1)));
    assert_asked(&a, true, "require member after enrollment");
}

#[test]
fn force_without_set_up_is_no_login() {
    ensure_user("mfae_forced_no", &["mfae_g_force2"]);
    let mfad = Mfad::start(&format!("max_tries = 2{}", roles(&[("mfae_g_force2", "force")])));
    let services = login_services(&mfad);
    // Empty answers do not skip a mandatory set-up.
    let a = login(&services, "mfae_forced_no", "127.0.0.5", "\n\n\n");
    assert!(!a.ok, "{}", a.said);
    assert!(a.said.contains("Does your device support scanning a barcode?"), "{}", a.said);
    assert!(a.said.contains("must be set up"), "{}", a.said);
    assert_eq!(show(&mfad, "mfae_forced_no")["state"], "not_enrolled");
    mfad.audit_lines_until("user=mfae_forced_no service=mfalogin rhost=127.0.0.5 outcome=denied reason=\"enrollment not completed: no usable answer\"");
    // Wrong codes: no login, and the set-up stays pending.
    let out = run(services
        .pam_client(LOGIN, "mfae_forced_no", &[("rhost", "127.0.0.5")])
        .args(["--answer", "n", "--answer", "t", "--answer", "12345", "--answer", "99999x"]));
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("Set-up not completed"), "{}", stdout(&out));
    assert_eq!(show(&mfad, "mfae_forced_no")["state"], "pending");
    mfad.audit_lines_until("reason=\"enrollment failed: too many wrong codes; set-up stays pending\"");
}

#[test]
fn encourage_members_may_skip_and_are_offered_again() {
    ensure_user("mfae_encouraged", &["mfae_g_encourage"]);
    let mfad = Mfad::start(&roles(&[("mfae_g_encourage", "encourage")]));
    let services = login_services(&mfad);
    for round in 1..=2 {
        let a = login(&services, "mfae_encouraged", "127.0.0.5", "\n");
        assert!(a.ok, "round {round}: an empty answer skips and the login proceeds:\n{}", a.said);
        assert!(a.said.contains("Does your device support scanning a barcode?"), "round {round}: {}", a.said);
        assert!(a.said.contains("Press Enter"), "{}", a.said);
        assert!(!a.asked);
    }
    audit_count(
        &mfad,
        "user=mfae_encouraged service=mfalogin rhost=127.0.0.5 outcome=not_required reason=\"enrollment skipped\"",
        2,
    );
    audit_count(&mfad, "reason=\"enrollment offered (role policy encourage)\"", 2);
    let status = show(&mfad, "mfae_encouraged");
    assert_eq!(status["state"], "not_enrolled", "{status}");
    assert_eq!(status["role_policy"], "encourage");
}

#[test]
fn require_asks_a_member_whose_level_is_superuser() {
    ensure_user("mfae_req_super", &["mfae_g_require2", "mfae_g_encourage2"]);
    let mfad = Mfad::start(&format!(
        "max_tries = 1{}",
        roles(&[("mfae_g_encourage2", "encourage"), ("mfae_g_require2", "require")])
    ));
    let secret = mfad.enroll("mfae_req_super", "hotp");
    mfad.ok(&["user", "level", "mfae_req_super", "superuser"]);
    let services = login_services(&mfad);
    for (counter, rhost) in [(1, "127.0.0.5"), (2, "127.0.0.5")] {
        let a = login(&services, "mfae_req_super", rhost, &code(&hotp(&secret, counter)));
        assert_asked(&a, true, "require beats the superuser level");
    }
    mfad.audit_lines_until(
        "user=mfae_req_super service=mfalogin rhost=127.0.0.5 outcome=challenge reason=\"role policy require\"",
    );
    assert_eq!(show(&mfad, "mfae_req_super")["role_policy"], "require", "the strictest role wins");
}

// ---- IP bypass (acceptance 5) ---------------------------------------------------

#[test]
fn ip_bypass_switch_config_and_runtime_rules() {
    let user = "mfae_bypass";
    let config = |enabled: bool| {
        format!(
            "default_level = \"always\"\nmax_tries = 1\n[bypass]\nenabled = {enabled}\n\
             [[bypass.rule]]\ncidr = \"127.0.0.9\"\nbypass_2fa = true\n\
             [[bypass.rule]]\ncidr = \"127.0.0.12\"\nbypass_2fa = false"
        )
    };
    let mfad = Mfad::start(&config(false));
    let secret = mfad.enroll(user, "hotp");
    mfad.ok(&["user", "authorize", user, "--code", &hotp(&secret, 1)]);
    let services = login_services(&mfad);
    services.add("sudo", &[mfad.module_line("required", "")]);

    // Switch off: nothing is bypassed.
    assert_asked(&login(&services, user, "127.0.0.9", ""), false, "switch off");
    let rules = mfad.json(&["ip", "list"])["rules"].clone();
    assert_eq!(rules[0]["source"], "config");
    assert_eq!(rules[0]["in_force"], false, "{rules}");

    std::fs::write(&mfad.config_path, Mfad::config_text(mfad.dir.path(), &config(true))).unwrap();
    mfad.ok(&["reload"]);
    assert_not_asked(&login(&services, user, "127.0.0.9", ""), "rule for 127.0.0.9");
    mfad.audit_lines_until("user=mfae_bypass service=mfalogin rhost=127.0.0.9 outcome=not_required reason=\"ip bypass by rule 127.0.0.9/32 (config)\"");
    assert_not_asked(&login(&services, user, "::ffff:127.0.0.9", ""), "IPv4-mapped IPv6");
    assert_asked(&login(&services, user, "127.0.0.10", &code(&hotp(&secret, 2))), true, "no rule for 127.0.0.10");
    assert_asked(&login(&services, user, "127.0.0.12", &code(&hotp(&secret, 3))), true, "a rule without bypass_2fa");
    assert_asked(&login(&services, user, "localhost", &code(&hotp(&secret, 4))), true, "a host name never matches");
    // Never for elevation.
    let a = attempt(
        &mut services.pamtester("sudo", "root", &[("rhost", "127.0.0.9"), ("ruser", user)]),
        &code(&hotp(&secret, 5)),
    );
    assert_asked(&a, true, "sudo from a bypassed address");
    mfad.audit_lines_until("user=mfae_bypass service=sudo rhost=127.0.0.9 outcome=challenge reason=\"elevation\"");

    // A runtime rule lapses after its timeout.
    let added = mfad.json(&["ip", "add", "127.0.0.11", "--bypass-2fa", "--timeout", "2s"]);
    let id = added["id"].as_i64().unwrap();
    assert_not_asked(&login(&services, user, "127.0.0.11", ""), "runtime rule in force");
    mfad.audit_lines_until(&format!("reason=\"ip bypass by rule 127.0.0.11/32 (runtime #{id})\""));
    let rules = mfad.json(&["ip", "list"])["rules"].clone();
    let runtime = rules.as_array().unwrap().iter().find(|r| r["cidr"] == "127.0.0.11/32").unwrap().clone();
    assert_eq!(runtime["source"], "runtime");
    assert_eq!(runtime["in_force"], true);
    assert!(runtime["expires_at"].is_u64(), "{runtime}");
    let listed = mfad.ok(&["ip", "list"]);
    assert!(listed.contains("SOURCE") && listed.contains("EXPIRES") && listed.contains("IN FORCE"), "{listed}");
    std::thread::sleep(Duration::from_secs(3));
    assert_asked(&login(&services, user, "127.0.0.11", &code(&hotp(&secret, 6))), true, "runtime rule lapsed");
    let rules = mfad.json(&["ip", "list"])["rules"].clone();
    let runtime = rules.as_array().unwrap().iter().find(|r| r["cidr"] == "127.0.0.11/32").unwrap().clone();
    assert_eq!(runtime["in_force"], false, "{runtime}");
    mfad.ok(&["ip", "remove", &id.to_string()]);
}

// ---- recovery codes (acceptance 6) ------------------------------------------------

#[test]
fn a_recovery_code_logs_in_once_never_for_sudo() {
    let user = "mfae_recovery";
    ensure_user(user, &[]);
    let service = own_service_name("recov");
    let mfad =
        Mfad::start(&format!("default_level = \"always\"\nmax_tries = 1\n[elevation]\nservices = [\"{service}\"]"));
    let secret = mfad.json(&["user", "setup", user, "--type", "hotp"])["secret"].as_str().unwrap().to_string();
    let done = mfad.json(&["user", "setup", user, "--confirm", &hotp(&secret, 0)]);
    let codes: Vec<String> =
        done["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(codes.len(), 10);
    assert_eq!(show(&mfad, user)["recovery_codes_left"], 10);
    mfad.ok(&["user", "authorize", user, "--code", &hotp(&secret, 1)]);
    let services = login_services(&mfad);

    let a = login(&services, user, "127.0.0.5", &code(&codes[0]));
    assert_asked(&a, true, "a recovery code at login");
    assert!(a.said.contains("Recovery code accepted; 9 left"), "{}", a.said);
    mfad.audit_lines_until(&format!("user={user} service=mfalogin rhost=127.0.0.5 outcome=success reason=\"challenge passed: recovery code used, 9 left\""));
    assert_eq!(show(&mfad, user)["recovery_codes_left"], 9);
    assert_asked(&login(&services, user, "127.0.0.5", &code(&codes[0])), false, "the same recovery code again");

    let sudo = Sudo::new(&mfad, user, "recov");
    let out = sudo.run(&code(&codes[1]));
    assert!(!out.status.success(), "a recovery code for sudo: {}", stderr(&out));
    assert_eq!(show(&mfad, user)["recovery_codes_left"], 9, "a refused code is not used up");
    let out = sudo.run(&code(&hotp(&secret, 2)));
    assert!(out.status.success(), "sudo with a device code: {}", stderr(&out));

    assert_asked(&login(&services, user, "127.0.0.6", &code(&codes[1].to_uppercase())), true, "another recovery code");
    assert_eq!(show(&mfad, user)["recovery_codes_left"], 8);

    // A fresh set replaces the old one.
    let out = mfad.mfactl_as(user, &["--json", "recovery-codes", "--code", &hotp(&secret, 3)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(show(&mfad, user)["recovery_codes_left"], 10);
    assert_asked(&login(&services, user, "127.0.0.5", &code(&codes[2])), false, "an old recovery code");
}

/// The sudo fixture leaves nothing behind under /etc.
#[test]
fn sudo_fixture_cleans_up_after_itself() {
    let user = "mfae_sudo_fixture";
    ensure_user(user, &[]);
    let mfad = Mfad::start("");
    let paths: Vec<PathBuf> = {
        let sudo = Sudo::new(&mfad, user, "fixture");
        let paths =
            vec![PathBuf::from("/etc/sudoers.d").join(&sudo.service), PathBuf::from("/etc/pam.d").join(&sudo.service)];
        assert!(paths.iter().all(|p| p.exists()));
        paths
    };
    assert!(paths.iter().all(|p| !p.exists()), "{paths:?}");
}
