//! The PAM module, libpam-wrapper and directories of PAM service files of the tests' own.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use crate::*;

/// The PAM module as cargo built it.
pub fn pam_module() -> PathBuf {
    bin("libpam_mfa.so")
}

/// libpam-wrapper, which lets a client read PAM stacks from a directory of
/// the test's own instead of /etc/pam.d.
pub fn pam_wrapper_lib() -> PathBuf {
    let out = run(Command::new("dpkg").args(["-L", "libpam-wrapper"]));
    let path = stdout(&out)
        .lines()
        .find(|l| l.ends_with("/libpam_wrapper.so"))
        .map(PathBuf::from)
        .expect("libpam-wrapper is not installed");
    assert!(path.exists());
    path
}

/// A directory of PAM service files, used through libpam-wrapper.
pub struct PamServices {
    pub dir: tempfile::TempDir,
}

impl PamServices {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("pam-e2e-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        PamServices { dir }
    }

    /// Write service `name` with `auth` lines; account and session permit.
    pub fn add(&self, name: &str, auth_lines: &[String]) {
        let mut text = auth_lines.join("\n");
        text.push_str("\naccount required pam_permit.so\nsession required pam_permit.so\n");
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    /// A pamtester command for `service`/`user` under libpam-wrapper.
    pub fn pamtester(&self, service: &str, user: &str, items: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new("pamtester");
        cmd.env("PAM_WRAPPER", "1")
            .env("PAM_WRAPPER_SERVICE_DIR", self.dir.path())
            .env("LD_PRELOAD", pam_wrapper_lib());
        for (k, v) in items {
            cmd.arg("-I").arg(format!("{k}={v}"));
        }
        cmd.args([service, user, "authenticate"]);
        cmd
    }
}

impl Default for PamServices {
    fn default() -> Self {
        Self::new()
    }
}
