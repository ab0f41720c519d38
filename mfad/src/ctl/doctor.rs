//! `mfactl doctor`: runs the checks of [`crate::doctor`] and prints their
//! findings, one line each (or one JSON document), with an exit status that
//! says whether anything is wrong.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::error::{self, CtlError, EXIT_DOCTOR_ERRORS, EXIT_DOCTOR_WARNINGS, EXIT_OK};
use crate::doctor::{Finding, Machine, Severity, run_all, worst};

/// Run every check on the machine under `root` (default `/`); `socket` is
/// mfad's when given on the command line or in the environment.
pub fn run(
    root: Option<PathBuf>,
    socket: Option<PathBuf>,
    timeout: Duration,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let machine = Machine { root: root.unwrap_or_else(|| PathBuf::from("/")), socket, timeout };
    let findings = run_all(&machine);
    match print(&findings, json, out) {
        Ok(()) => exit_status(&findings),
        Err(e) => error::report(&e, json, out, err),
    }
}

/// 0 when nothing is wrong, else the worst finding's status.
pub fn exit_status(findings: &[Finding]) -> u8 {
    match worst(findings) {
        Severity::Ok => EXIT_OK,
        Severity::Warning => EXIT_DOCTOR_WARNINGS,
        Severity::Error => EXIT_DOCTOR_ERRORS,
    }
}

fn count(findings: &[Finding], severity: Severity) -> usize {
    findings.iter().filter(|f| f.severity == severity).count()
}

/// One line per finding (`SEVERITY CHECK MESSAGE`) and a count, or with
/// `--json` `{"findings": [{"check", "severity", "message"}], "errors", "warnings"}`.
fn print(findings: &[Finding], json: bool, out: &mut dyn Write) -> Result<(), CtlError> {
    let (errors, warnings) = (count(findings, Severity::Error), count(findings, Severity::Warning));
    if json {
        let doc = json!({ "findings": findings, "errors": errors, "warnings": warnings });
        writeln!(out, "{doc}")?;
    } else {
        for finding in findings {
            writeln!(out, "{:<7}  {:<16}  {}", finding.severity.as_str(), finding.check, finding.message)?;
        }
        writeln!(out, "{errors} error(s), {warnings} warning(s)")?;
    }
    out.flush()?;
    Ok(())
}
