//! `mfactl user import`: read the enrollments another tool left behind, send
//! them to mfad in batches, and report what was imported, what mfad refused
//! and which lines were malformed. Malformed lines are found here, before
//! anything is sent; [`formats`] reads each file format.

pub mod formats;

use std::io::Write;
use std::path::{Path, PathBuf};

use mfa_shared::{ImportRefusal, ImportUser, Request, Response};
use serde_json::{Value, json};

use formats::{Parsed, parse_google_authenticator, parse_json_lines, parse_oath_users};

use super::cli::ImportFormat;
use super::error::CtlError;
use super::request::DaemonAddress;

/// Accounts sent to mfad per request, well under the frame limit.
const IMPORT_BATCH: usize = 2000;

/// Read and parse what the command line names: `--google-authenticator` (a
/// file or a directory of them), else FILE in `format`.
pub fn read_sources(
    file: Option<&Path>,
    format: ImportFormat,
    google_authenticator: Option<&Path>,
) -> Result<Parsed, CtlError> {
    if let Some(path) = google_authenticator {
        return read_google_authenticator(path);
    }
    let Some(path) = file else {
        return Err(CtlError::Input("give a FILE or --google-authenticator".into()));
    };
    let text = read_text(path)?;
    Ok(match format {
        ImportFormat::Json => parse_json_lines(&text),
        ImportFormat::Oath => parse_oath_users(&text),
    })
}

/// Every google-authenticator file under `path`, parsed and put together.
fn read_google_authenticator(path: &Path) -> Result<Parsed, CtlError> {
    let files = google_authenticator_files(path)
        .map_err(|e| CtlError::Input(format!("cannot read {}: {e}", path.display())))?;
    let mut all = Parsed::default();
    for (user, file) in files {
        let one = parse_google_authenticator(&user, &file.display().to_string(), &read_text(&file)?);
        all.users.extend(one.users);
        all.errors.extend(one.errors);
    }
    Ok(all)
}

fn read_text(path: &Path) -> Result<String, CtlError> {
    std::fs::read_to_string(path).map_err(|e| CtlError::Input(format!("cannot read {}: {e}", path.display())))
}

/// The google-authenticator files under `path`, with their users: a file
/// itself (user = its owner for `.google_authenticator`, else its name), or
/// a directory of home directories (`DIR/USER/.google_authenticator`) or of
/// per-user files (`DIR/USER`, as with the module's `secret=` option).
pub fn google_authenticator_files(path: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let user = if name == ".google_authenticator" {
            crate::nss::user_name(meta.uid()).unwrap_or_else(|| meta.uid().to_string())
        } else {
            name
        };
        return Ok(vec![(user, path.to_path_buf())]);
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let inner = entry.path().join(".google_authenticator");
        if inner.is_file() {
            found.push((name, inner));
        } else if entry.path().is_file() && !name.starts_with('.') {
            found.push((name, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Send the accounts of `parsed` to mfad and report the outcome. Malformed
/// lines stop the import before anything is sent, unless `keep_going`.
pub fn send_and_report(
    daemon: &DaemonAddress,
    parsed: Parsed,
    keep_going: bool,
    replace: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let malformed: Vec<Value> =
        parsed.errors.iter().map(|e| json!({"source": e.source, "line": e.line, "message": e.message})).collect();
    if !json {
        for error in &parsed.errors {
            writeln!(out, "malformed: {error}")?;
        }
    }
    if !parsed.errors.is_empty() && !keep_going {
        if json {
            writeln!(out, "{}", json!({"imported": 0, "refused": [], "malformed": malformed}))?;
        }
        return Err(CtlError::Input(format!(
            "{} malformed line(s); nothing imported (fix them, or import the rest with --keep-going)",
            parsed.errors.len()
        )));
    }
    let (imported, refused) = send_in_batches(daemon, &parsed.users, replace)?;
    if json {
        writeln!(out, "{}", json!({"imported": imported, "refused": refused, "malformed": malformed}))?;
    } else {
        for r in &refused {
            writeln!(out, "refused: {}: {}", r.user, r.reason)?;
        }
        writeln!(
            out,
            "Imported {imported} account(s); {} refused, {} malformed line(s) skipped.",
            refused.len(),
            parsed.errors.len()
        )?;
    }
    out.flush()?;
    Ok(())
}

/// Import `users`, [`IMPORT_BATCH`] per request: how many mfad imported, and
/// the accounts it refused with its reasons.
fn send_in_batches(
    daemon: &DaemonAddress,
    users: &[ImportUser],
    replace: bool,
) -> Result<(u64, Vec<ImportRefusal>), CtlError> {
    let (mut imported, mut refused) = (0u64, Vec::new());
    for batch in users.chunks(IMPORT_BATCH) {
        let request = Request::ImportUsers { users: batch.to_vec(), replace };
        match daemon.call(request)? {
            Response::Imported { imported: n, refused: r } => {
                imported += n;
                refused.extend(r);
            }
            other => return Err(CtlError::Unexpected(other.kind())),
        }
    }
    Ok((imported, refused))
}
