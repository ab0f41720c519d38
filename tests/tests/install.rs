//! Issue #3 acceptance 7: the install command puts pam_mfa.so where a bare
//! `auth required pam_mfa.so` finds it, and the unit passes systemd's lint.
//! This installs into the machine (as CI does on its own machine); it never
//! edits /etc/pam.d or enables anything.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::disallowed_methods)]

use std::path::Path;
use std::process::Command;

use e2e::*;

#[test]
fn installed_module_is_found_by_name_and_unit_verifies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = run(Command::new("sh").arg(root.join("packaging/install.sh")).arg("--from").arg(bin_dir()));
    assert!(out.status.success(), "install.sh: {}{}", stdout(&out), stderr(&out));
    let said = stdout(&out);
    let module = said
        .lines()
        .map(str::trim)
        .find(|l| l.ends_with("/pam_mfa.so"))
        .unwrap_or_else(|| panic!("install.sh did not say where the module went: {said}"));
    assert!(Path::new(module).exists(), "{module}");

    let mfad = Mfad::start("default_level = \"always\"\nmax_tries = 1");
    let secret = mfad.enroll("inst_user", "hotp");
    let services = PamServices::new();
    // By name only: libpam looks in its module directory.
    services.add("byname", &[format!("auth required pam_mfa.so socket={}", mfad.socket.display())]);
    let out = run_with_input(&mut services.pamtester("byname", "inst_user", &[]), &format!("{}\n", hotp(&secret, 1)));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let out = run_with_input(&mut services.pamtester("byname", "inst_user", &[]), "000000\n");
    assert!(!out.status.success());

    let unit = said
        .lines()
        .map(str::trim)
        .find(|l| l.ends_with("/mfad.service"))
        .unwrap_or_else(|| panic!("install.sh did not say where the unit went: {said}"));
    let out = run(Command::new("systemd-analyze").args(["verify", unit]));
    assert!(out.status.success(), "systemd-analyze verify {unit}: {}{}", stdout(&out), stderr(&out));
    // The shipped default config is valid and leaves MFA off.
    let out = run(Command::new(bin("mfad")).args(["--check-config", "--config"]).arg(root.join("packaging/mfad.toml")));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(root.join("packaging/mfad.toml")).unwrap();
    assert!(text.lines().any(|l| l.trim() == "enabled = false"));
}
