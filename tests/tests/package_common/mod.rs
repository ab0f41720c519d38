//! The .deb under test, shared by `package.rs` and `package_docs.rs`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use e2e::*;

pub const PACKAGE: &str = "libpam-mfa";

/// The source tree.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The package: $MFA_DEB when set (tests/run.sh builds it once, before the
/// tests), else built now by packaging/build-deb.sh. Its build tools are
/// installed first when missing.
pub fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        ensure(&["dpkg-dev", "scdoc", "lintian", "man-db", "pamtester", "libpam-wrapper", "oathtool"]);
        if let Some(path) = std::env::var_os("MFA_DEB") {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "MFA_DEB={} is not a file", path.display());
            return path;
        }
        let out = run(Command::new("bash").arg(root().join("packaging/build-deb.sh")));
        assert!(out.status.success(), "build-deb.sh: {}{}", stdout(&out), stderr(&out));
        let said = stdout(&out);
        let last = said.lines().last().unwrap_or_default().trim().to_string();
        assert!(last.ends_with(".deb") && Path::new(&last).is_file(), "build-deb.sh's last line: {last:?}");
        PathBuf::from(last)
    })
}

/// Debian packages through tests/ensure-packages.sh (as tests/run.sh).
pub fn ensure(packages: &[&str]) {
    let script = format!(". {}/tests/ensure-packages.sh && ensure_packages \"$@\"", root().display());
    let out = run(Command::new("bash").arg("-c").arg(script).arg("ensure").args(packages));
    assert!(out.status.success(), "ensure_packages {packages:?}: {}{}", stdout(&out), stderr(&out));
}

/// The regular files in the package, as absolute paths (`dpkg-deb -c`).
pub fn deb_files(deb: &Path) -> Vec<String> {
    let out = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    assert!(out.status.success(), "dpkg-deb -c: {}", stderr(&out));
    stdout(&out)
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_string())
        .collect()
}

/// The package unpacked into a temp dir (nothing installed).
pub fn unpacked() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("mfa-deb-").tempdir().unwrap();
    let out = run(Command::new("dpkg-deb").arg("-x").arg(deb()).arg(dir.path()));
    assert!(out.status.success(), "dpkg-deb -x: {}", stderr(&out));
    dir
}
