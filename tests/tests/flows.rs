//! The seed's self-service flows (SPEC 3-5) end to end: changing a device
//! needs the current one, disabling needs a code (or an administrator), a
//! user sets their own level, and `enabled = false` asks nobody.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use e2e::*;

fn json_as(mfad: &Mfad, user: &str, args: &[&str]) -> (bool, serde_json::Value) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = mfad.mfactl_as(user, &all);
    (out.status.success(), serde_json::from_str(&stdout(&out)).unwrap_or(serde_json::Value::Null))
}

#[test]
fn changing_a_device_needs_a_code_from_the_current_one() {
    ensure_user("mfae_chg", &[]);
    let mfad = Mfad::start("");
    let old = mfad.enroll("mfae_chg", "hotp");

    let (ok, err) = json_as(&mfad, "mfae_chg", &["setup", "--type", "hotp"]);
    assert!(!ok, "a new device without the current code: {err}");
    assert_eq!(err["error"]["kind"], "permission_denied");

    let wrong = if hotp(&old, 1) == "000000" { "111111" } else { "000000" };
    let (ok, _) = json_as(&mfad, "mfae_chg", &["setup", "--type", "hotp", "--code", wrong]);
    assert!(!ok, "a wrong current code");

    let (ok, setup) = json_as(&mfad, "mfae_chg", &["setup", "--type", "hotp", "--code", &hotp(&old, 1)]);
    assert!(ok, "{setup}");
    let new = setup["secret"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    // Until confirmed, the old device still works and the new one is pending.
    let shown = mfad.json(&["user", "show", "mfae_chg"]);
    assert_eq!(shown["state"], "enabled");
    assert_eq!(shown["pending"], true);
    mfad.ok(&["verify", "--user", "mfae_chg", "--code", &hotp(&old, 2)]);

    let out = mfad.mfactl_as("mfae_chg", &["setup", "--confirm", &hotp(&new, 0)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !mfad.mfactl(&["verify", "--user", "mfae_chg", "--code", &hotp(&old, 3)]).status.success(),
        "old device retired"
    );
    mfad.ok(&["verify", "--user", "mfae_chg", "--code", &hotp(&new, 1)]);
    assert_eq!(mfad.ok(&["user", "verify", "mfae_chg"]).trim(), hotp(&new, 0));
}

#[test]
fn disabling_needs_a_code_or_an_administrator() {
    ensure_user("mfae_dis", &[]);
    let mfad = Mfad::start("");
    let secret = mfad.enroll("mfae_dis", "hotp");
    let out = mfad.mfactl_as("mfae_dis", &["disable", "--code", "12345"]);
    assert!(!out.status.success(), "a malformed code");
    assert!(stderr(&out).contains("6 digits"), "{}", stderr(&out));
    let out = mfad.mfactl_as("mfae_dis", &["disable", "--code", &hotp(&secret, 1)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mfad.json(&["user", "show", "mfae_dis"])["state"], "not_enrolled");

    mfad.enroll("mfae_dis", "totp");
    mfad.ok(&["user", "disable", "mfae_dis"]);
    assert_eq!(mfad.json(&["user", "show", "mfae_dis"])["state"], "not_enrolled");
    mfad.audit_lines_until("device disabled by root");
}

#[test]
fn a_user_sets_their_own_level_and_it_rules_their_logins() {
    ensure_user("mfae_lvl", &[]);
    let mfad = Mfad::start("default_level = \"always\"");
    let secret = mfad.enroll("mfae_lvl", "hotp");
    let services = PamServices::new();
    services.add("lvl", &[mfad.module_line("required", ""), "auth required pam_permit.so".into()]);
    let login =
        |input: &str| run_with_input(&mut services.pamtester("lvl", "mfae_lvl", &[("rhost", "127.0.0.20")]), input);
    let out = login("");
    assert!(!out.status.success(), "level always: a code is asked");

    // Lowering the level needs the device: a session alone must not drop 2FA.
    let out = mfad.mfactl_as("mfae_lvl", &["level", "superuser"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("needs a current code"), "{}", stderr(&out));
    let out = mfad.mfactl_as("mfae_lvl", &["level", "superuser", "--code", "-"]);
    assert!(!out.status.success(), "no code on stdin");
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args(["--reuid", "mfae_lvl", "--regid", "mfae_lvl", "--init-groups", "--"])
        .arg(mfad.dir.path().join("mfactl"))
        .arg("--socket")
        .arg(&mfad.socket)
        .args(["level", "superuser", "--code", "-"]);
    let out = run_with_input(&mut cmd, &format!("{}\n", hotp(&secret, 1)));
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, status) = json_as(&mfad, "mfae_lvl", &["status"]);
    assert_eq!(status["level"], "superuser");
    assert_eq!(status["level_is_default"], false);
    assert!(login("").status.success(), "level superuser: no code at login");

    mfad.ok(&["user", "level", "mfae_lvl", "always"]);
    assert!(!login("").status.success());
    assert!(login(&format!("{}\n", hotp(&secret, 2))).status.success());
    // Raising it needs nothing.
    let out = mfad.mfactl_as("mfae_lvl", &["level", "always"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn mfa_disabled_asks_nobody() {
    let mfad = Mfad::start("");
    let secret = mfad.enroll("off_user", "hotp");
    let text = std::fs::read_to_string(&mfad.config_path).unwrap();
    std::fs::write(&mfad.config_path, text.replacen("enabled = true", "enabled = false", 1)).unwrap();
    mfad.ok(&["reload"]);
    let services = PamServices::new();
    services.add("off", &[mfad.module_line("required", ""), "auth required pam_permit.so".into()]);
    services.add("offonly", &[mfad.module_line("sufficient", ""), "auth required pam_deny.so".into()]);
    let out = run_with_input(&mut services.pamtester("off", "off_user", &[]), "");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    // Ignored, not succeeded: a `sufficient` line cannot skip the rest.
    assert!(!run_with_input(&mut services.pamtester("offonly", "off_user", &[]), "").status.success());
    mfad.audit_lines_until("reason=\"mfa disabled\"");
    // The device is kept and works again once enabled.
    assert_eq!(mfad.ok(&["user", "verify", "off_user"]).trim(), hotp(&secret, 0));
}
