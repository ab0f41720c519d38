//! Real sudo and su through PAM services of the tests' own, and files under /etc removed on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::*;

/// A file under /etc of the test's own, removed on drop.
pub struct EtcFile(pub PathBuf);

impl EtcFile {
    pub fn write(path: impl Into<PathBuf>, text: &str, mode: u32) -> EtcFile {
        let path = path.into();
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        EtcFile(path)
    }
}

impl Drop for EtcFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Real sudo for `user` through a PAM service of the test's own: a sudoers
/// drop-in (`Defaults:USER pam_service=SERVICE`, `USER ALL=(ALL) ALL`) and
/// `/etc/pam.d/SERVICE` with the module; both removed on drop.
pub struct Sudo {
    pub user: String,
    pub service: String,
    _files: Vec<EtcFile>,
}

/// The name of a PAM service of the test's own under /etc/pam.d,
/// `mfae-PID-TAG`: `tag` tells apart the services of tests running at once.
pub fn own_service_name(tag: &str) -> String {
    format!("mfae-{}-{tag}", std::process::id())
}

impl Sudo {
    /// The service is `own_service_name(tag)`, to be listed in `[elevation] services`.
    pub fn new(mfad: &Mfad, user: &str, tag: &str) -> Sudo {
        let service = own_service_name(tag);
        let pam = EtcFile::write(
            PathBuf::from("/etc/pam.d").join(&service),
            &service_file(&[mfad.module_line("required", "")]),
            0o644,
        );
        // Validate in a temp file first: a broken drop-in would break sudo
        // for everyone. The name has no dot, or sudo would skip it.
        let draft = mfad.dir.path().join(format!("sudoers-{tag}"));
        std::fs::write(&draft, format!("Defaults:{user} pam_service={service}\n{user} ALL=(ALL) ALL\n")).unwrap();
        let check = run(Command::new("visudo").arg("-cf").arg(&draft));
        assert!(check.status.success(), "visudo -cf: {}{}", stdout(&check), stderr(&check));
        let sudoers = EtcFile::write(
            PathBuf::from("/etc/sudoers.d").join(&service),
            &std::fs::read_to_string(&draft).unwrap(),
            0o440,
        );
        Sudo { user: user.to_string(), service, _files: vec![sudoers, pam] }
    }

    /// `sudo -S -k true` as the user, with `input` on stdin.
    pub fn run(&self, input: &str) -> Output {
        run_with_input(
            Command::new("setpriv")
                .args(["--reuid", &self.user, "--regid", &self.user, "--init-groups", "--"])
                .args(["sudo", "-S", "-k", "true"])
                .current_dir("/"),
            input,
        )
    }
}

/// `su -c 'echo su-ok' root` run by `user`, with `stack` as su's PAM stack
/// (bind-mounted over /etc/pam.d/su in a private mount namespace).
impl Mfad {
    /// A stack for su of the test's own: root passes, everyone else needs
    /// this daemon's verdict.
    pub fn su_stack(&self) -> PathBuf {
        let stack = self.dir.path().join("su-stack");
        let auth = ["auth sufficient pam_rootok.so".to_string(), self.module_line("required", "")];
        std::fs::write(&stack, service_file(&auth)).unwrap();
        stack
    }
}

pub fn su_with_stack(stack: &Path, user: &str, input: &str) -> Output {
    let script = format!(
        "mount --bind {} /etc/pam.d/su && exec setpriv --reuid={user} --regid={user} --init-groups su -c 'echo su-ok' root",
        stack.display()
    );
    run_with_input(
        Command::new("unshare").args(["--mount", "--propagation", "private", "sh", "-c", &script]).current_dir("/"),
        input,
    )
}

/// A Unix group of the test's own (`groupadd`), removed on drop.
pub struct TempGroup {
    pub name: String,
}

impl TempGroup {
    pub fn new(name: &str) -> TempGroup {
        let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
        // Left over from a run that was killed: start afresh.
        if run(Command::new("getent").args(["group", name])).status.success() {
            let _ = run(Command::new("groupdel").arg(name));
        }
        let out = run(Command::new("groupadd").arg(name));
        assert!(out.status.success(), "groupadd {name}: {}", stderr(&out));
        TempGroup { name: name.to_string() }
    }
}

impl Drop for TempGroup {
    fn drop(&mut self) {
        let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
        let _ = run(Command::new("groupdel").arg(&self.name));
    }
}

/// A Unix user of the test's own (`useradd`, no home, password
/// [`password`]), removed with `userdel` on drop. Drop it before the
/// groups it belongs to.
pub struct TempUser {
    pub name: String,
    pub uid: u32,
}

impl TempUser {
    /// A new user with its own uid, in `groups` (supplementary).
    pub fn new(name: &str, groups: &[&TempGroup]) -> TempUser {
        let mut args = vec!["-M".to_string(), "-s".into(), "/bin/sh".into()];
        if !groups.is_empty() {
            let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
            args.extend(["-G".to_string(), names.join(",")]);
        }
        Self::add(name, &args)
    }

    /// A second passwd entry for `of`'s uid (`useradd -o -u UID`), with
    /// `of`'s primary group and a password of its own.
    pub fn alias(name: &str, of: &TempUser) -> TempUser {
        let gid = stdout(&run(Command::new("id").args(["-g", &of.name]))).trim().to_string();
        let args = ["-M", "-N", "-s", "/bin/sh", "-o", "-u", &of.uid.to_string(), "-g", &gid].map(String::from);
        let alias = Self::add(name, &args);
        assert_eq!(alias.uid, of.uid);
        alias
    }

    fn add(name: &str, args: &[String]) -> TempUser {
        {
            let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
            if run(Command::new("getent").args(["passwd", name])).status.success() {
                let _ = run(Command::new("userdel").arg(name));
            }
            let out = run(Command::new("useradd").args(args).arg(name));
            assert!(out.status.success(), "useradd {args:?} {name}: {}", stderr(&out));
        }
        // From here on the guard removes the user, even if a step below fails.
        let mut user = TempUser { name: name.to_string(), uid: u32::MAX };
        let out = {
            let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
            run_with_input(&mut Command::new("chpasswd"), &format!("{name}:{}\n", password(name)))
        };
        assert!(out.status.success(), "chpasswd {name}: {}", stderr(&out));
        // getent by name: with two names for one uid, `id -u` might answer for either.
        let entry = stdout(&run(Command::new("getent").args(["passwd", name])));
        user.uid = entry.split(':').nth(2).and_then(|uid| uid.parse().ok()).expect("getent passwd: no uid");
        user
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _guard = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
        let out = run(Command::new("userdel").arg(&self.name));
        if !out.status.success() {
            eprintln!("userdel {}: {}", self.name, stderr(&out));
        }
    }
}
