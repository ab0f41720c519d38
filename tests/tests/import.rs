//! Issue #5: `mfactl user import` for JSON lines, pam_oath users files and
//! google-authenticator files; malformed lines; a 100,000-user import.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::fmt::Write as _;

use e2e::*;

const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"; // "12345678901234567890"
const SECRET_HEX: &str = "3132333435363738393031323334353637383930";

fn verifies(mfad: &Mfad, user: &str, code: &str) -> bool {
    mfad.mfactl(&["verify", "--user", user, "--code", code]).status.success()
}

#[test]
fn json_lines_import_refuses_malformed_lines_unless_keep_going() {
    let mfad = Mfad::start("");
    let file = mfad.dir.path().join("users.jsonl");
    std::fs::write(
        &file,
        format!(
            "{{\"user\":\"ja\",\"type\":\"hotp\",\"secret\":\"{SECRET}\",\"counter\":3}}\n\
             {{\"user\":\"jb\",\"type\":\"totp\",\"secret\":\"{SECRET}\",\"level\":\"always\"}}\n\
             {{\"user\":\"jc\",\"type\":\"hotp\"}}\n\
             garbage\n"
        ),
    )
    .unwrap();
    let out = mfad.mfactl(&["user", "import", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let said = stdout(&out);
    assert!(said.contains("line 3") && said.contains("line 4"), "{said}");
    assert!(!said.contains(SECRET) && !stderr(&out).contains(SECRET), "no secret in messages");
    assert!(mfad.json(&["user", "list"])["users"].as_array().unwrap().is_empty(), "nothing imported");

    let report = mfad.json(&["user", "import", file.to_str().unwrap(), "--keep-going"]);
    assert_eq!(report["imported"], 2);
    assert_eq!(report["malformed"].as_array().unwrap().len(), 2);
    // HOTP continues at the imported counter: 3 works, earlier ones do not.
    assert!(!verifies(&mfad, "ja", &hotp(SECRET, 2)));
    assert!(verifies(&mfad, "ja", &hotp(SECRET, 3)));
    assert!(verifies(&mfad, "jb", &totp_now(SECRET)));
    assert_eq!(mfad.json(&["user", "show", "jb"])["level"], "always");
    // Importing again refuses the enrolled accounts unless --replace.
    let again = mfad.json(&["user", "import", file.to_str().unwrap(), "--keep-going"]);
    assert_eq!(again["imported"], 0);
    assert_eq!(again["refused"].as_array().unwrap().len(), 2);
    let replaced = mfad.json(&["user", "import", file.to_str().unwrap(), "--keep-going", "--replace"]);
    assert_eq!(replaced["imported"], 2);
}

#[test]
fn pam_oath_users_file_import() {
    let mfad = Mfad::start("");
    let file = mfad.dir.path().join("users.oath");
    std::fs::write(
        &file,
        format!("# pam_oath\nHOTP oa - {SECRET_HEX} 5\nHOTP/T30 ob - {SECRET_HEX}\nHOTP oc 1234 {SECRET_HEX}\n"),
    )
    .unwrap();
    let out = mfad.mfactl(&["user", "import", "--format", "oath", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("line 4"), "{}", stdout(&out));
    let report = mfad.json(&["user", "import", "--format", "oath", "--keep-going", file.to_str().unwrap()]);
    assert_eq!(report["imported"], 2);
    // pam_oath stores the last used counter's successor like we do.
    assert!(verifies(&mfad, "oa", &hotp(SECRET, 5)));
    assert!(verifies(&mfad, "ob", &totp_now(SECRET)));
    assert_eq!(mfad.ok(&["user", "verify", "oa"]).trim(), hotp(SECRET, 0));
}

#[test]
fn google_authenticator_files_import_with_scratch_codes() {
    let mfad = Mfad::start("default_level = \"always\"");
    let dir = mfad.dir.path().join("ga");
    std::fs::create_dir_all(dir.join("gb")).unwrap();
    std::fs::write(
        dir.join("ga_user"),
        format!("{SECRET}\n\" RATE_LIMIT 3 30\n\" HOTP_COUNTER 7\n11112222\n33334444\n"),
    )
    .unwrap();
    std::fs::write(dir.join("gb/.google_authenticator"), format!("{SECRET}\n\" TOTP_AUTH\n\" WINDOW_SIZE 3\n"))
        .unwrap();
    std::fs::write(dir.join("gc"), "not base32 !!\n").unwrap();
    let out = mfad.mfactl(&["user", "import", "--google-authenticator", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("gc:1"), "{}", stdout(&out));
    let report = mfad.json(&["user", "import", "--keep-going", "--google-authenticator", dir.to_str().unwrap()]);
    assert_eq!(report["imported"], 2, "{report}");
    assert_eq!(mfad.json(&["user", "show", "ga_user"])["recovery_codes_left"], 2);
    assert_eq!(mfad.json(&["user", "show", "gb"])["otp_type"], "totp");
    assert!(verifies(&mfad, "ga_user", &hotp(SECRET, 7)));
    // A scratch code logs in once, as a recovery code, through PAM.
    let services = PamServices::new();
    services.add("gatest", &[mfad.module_line("required", "")]);
    let login = |code: &str| run_with_input(&mut services.pamtester("gatest", "ga_user", &[]), &format!("{code}\n"));
    assert!(login("11112222").status.success());
    assert!(!login("11112222").status.success());
    assert_eq!(mfad.json(&["user", "show", "ga_user"])["recovery_codes_left"], 1);
}

#[test]
fn a_hundred_thousand_users_import() {
    let mfad = Mfad::start("");
    let file = mfad.dir.path().join("many.jsonl");
    let mut text = String::with_capacity(100_000 * 90);
    for i in 0..100_000 {
        writeln!(text, "{{\"user\":\"u{i:06}\",\"type\":\"hotp\",\"secret\":\"{SECRET}\"}}").unwrap();
    }
    std::fs::write(&file, text).unwrap();
    let report = mfad.json(&["user", "import", file.to_str().unwrap()]);
    assert_eq!(report["imported"], 100_000);
    assert!(verifies(&mfad, "u099999", &hotp(SECRET, 0)));
    assert!(verifies(&mfad, "u000000", &hotp(SECRET, 0)));
    assert_eq!(mfad.json(&["user", "show", "u050000"])["state"], "enabled");
}
