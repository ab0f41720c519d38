//! The PAM module, libpam-wrapper and directories of PAM service files of the tests' own.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use crate::*;

/// The PAM module as cargo built it, from a directory every user can read.
pub fn pam_module() -> PathBuf {
    for_every_user("libpam_mfa.so")
}

/// A copy of the built file `name` in a directory every user may read: the
/// checkout (and so cargo's target directory) may be private to root, and
/// clients run as test users load the module and run `pam_client`. One
/// directory per test process, removed when it exits.
pub fn for_every_user(name: &str) -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    extern "C" fn remove_dir() {
        if let Some(dir) = DIR.get() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("e2e-bin-").tempdir().unwrap().keep();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        // SAFETY: registers a plain `extern "C" fn` that never unwinds.
        unsafe { libc::atexit(remove_dir) };
        dir
    });
    let copy = dir.join(name);
    static COPYING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = COPYING.lock().unwrap_or_else(|p| p.into_inner());
    if !copy.exists() {
        // Copied under another name, then renamed: never seen half written.
        let partial = dir.join(format!(".{name}.partial"));
        std::fs::copy(bin(name), &partial).unwrap();
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&partial, &copy).unwrap();
    }
    copy
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

/// A PAM service file: `auth_lines`, then pam_permit for account and session.
pub fn service_file(auth_lines: &[String]) -> String {
    format!("{}\naccount required pam_permit.so\nsession required pam_permit.so\n", auth_lines.join("\n"))
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
        std::fs::write(self.dir.path().join(name), service_file(auth_lines)).unwrap();
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
