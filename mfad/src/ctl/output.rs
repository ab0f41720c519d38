//! What mfactl prints on success: with `--json` one document per command
//! (the response's payload), else text and tables for people.

use std::io::Write;

use mfa_shared::bypass::RuleOrigin;
use mfa_shared::{Code, EnrollmentState, ListedRule, Response, UserStatus};
use serde_json::{Value, json};

use super::error::CtlError;
use crate::enrollment::{format_fields, format_recovery_codes};

/// The JSON document for a successful response: its payload, without the
/// protocol's tag.
pub fn response_json(response: &Response) -> Result<Value, CtlError> {
    let to_value = |v: Result<Value, serde_json::Error>| v.map_err(|_| CtlError::Unexpected("unencodable"));
    Ok(match response {
        Response::Ok { message } => json!({ "ok": true, "message": message }),
        Response::Status(status) => to_value(serde_json::to_value(status))?,
        Response::SetupStarted { setup } => to_value(serde_json::to_value(setup))?,
        Response::SetupCompleted { recovery_codes } | Response::RecoveryCodes { recovery_codes } => {
            json!({ "recovery_codes": recovery_codes })
        }
        Response::Users { users, .. } => json!({ "users": users }),
        Response::CheckValue { user, value } => json!({ "user": user, "value": value }),
        Response::IpRuleAdded { id } => json!({ "id": id }),
        Response::IpRules { rules } => json!({ "rules": rules }),
        other => return Err(CtlError::Unexpected(other.kind())),
    })
}

pub fn print_response(response: Response, json: bool, done: &str, out: &mut dyn Write) -> Result<(), CtlError> {
    if json {
        let value = response_json(&response)?;
        writeln!(out, "{value}")?;
        out.flush()?;
        return Ok(());
    }
    match response {
        Response::Ok { message } => {
            let text = message.filter(|m| !m.trim().is_empty()).unwrap_or_else(|| done.to_owned());
            if !text.is_empty() {
                writeln!(out, "{text}")?;
            }
        }
        Response::Status(status) => write!(out, "{}", format_status(&status))?,
        Response::SetupCompleted { recovery_codes } => write_enabled(&recovery_codes, out)?,
        Response::RecoveryCodes { recovery_codes } => write!(out, "{}", format_recovery_codes(&recovery_codes))?,
        Response::Users { users, .. } => write!(out, "{}", format_users(&users))?,
        Response::CheckValue { value, .. } => writeln!(out, "{value}")?,
        Response::IpRuleAdded { id } => writeln!(out, "IP rule {id} added.")?,
        Response::IpRules { rules } => write!(out, "{}", format_rules(&rules))?,
        other => return Err(CtlError::Unexpected(other.kind())),
    }
    out.flush()?;
    Ok(())
}

/// A set-up completed: the news and the recovery codes, shown this once.
pub fn write_enabled(recovery_codes: &[Code], out: &mut dyn Write) -> Result<(), CtlError> {
    writeln!(out, "Two-factor authentication is enabled.")?;
    write!(out, "{}", format_recovery_codes(recovery_codes))?;
    Ok(())
}

/// Unix seconds as "YYYY-MM-DD HH:MM:SS UTC".
pub fn format_time(secs: u64) -> String {
    format!("{} UTC", crate::timefmt::utc(secs))
}

fn state_text(status: &UserStatus) -> String {
    if status.pending && status.state == EnrollmentState::Enabled {
        "enabled (a new device is pending confirmation)".to_owned()
    } else {
        status.state.as_str().to_owned()
    }
}

fn level_text(status: &UserStatus) -> String {
    if status.level_is_default { format!("{} (default)", status.level) } else { status.level.to_string() }
}

/// `status` / `user show`.
pub fn format_status(status: &UserStatus) -> String {
    let last_success = match (status.last_success, &status.last_source) {
        (Some(time), Some(source)) => format!("{} from {source}", format_time(time)),
        (Some(time), None) => format_time(time),
        (None, _) => "never".to_owned(),
    };
    let rows = [
        ("user", status.user.clone()),
        ("state", state_text(status)),
        ("type", status.otp_type.map_or_else(|| "-".to_owned(), |t| t.to_string())),
        ("level", level_text(status)),
        ("super-user approval", if status.superuser_approved { "granted" } else { "not granted" }.to_owned()),
        ("failures", status.failures.to_string()),
        ("locked until", status.locked_until.map_or_else(|| "not locked".to_owned(), format_time)),
        ("one-answer services", one_answer_text(status)),
        ("last success", last_success),
        ("recovery codes left", status.recovery_codes_left.to_string()),
        ("role policy", status.role_policy.clone().unwrap_or_else(|| "none".to_owned())),
    ];
    format_fields(&rows, "")
}

/// Columns padded to their widest cell, two spaces apart.
pub fn format_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(&format!("{cell:<width$}"));
        }
        text.truncate(text.trim_end().len());
        text.push('\n');
        text
    };
    let mut text = line(headers.to_vec());
    for row in rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

/// `user list`.
pub fn format_users(users: &[UserStatus]) -> String {
    if users.is_empty() {
        return "No accounts.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.user.clone(),
                if u.pending && u.state == EnrollmentState::Enabled {
                    "enabled+pending".to_owned()
                } else {
                    u.state.as_str().to_owned()
                },
                u.otp_type.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                level_text(u),
                if u.superuser_approved { "granted" } else { "-" }.to_owned(),
                u.failures.to_string(),
                u.locked_until.map_or_else(|| "-".to_owned(), format_time),
                u.last_success.map_or_else(|| "never".to_owned(), format_time),
                u.last_source.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    format_table(
        &["USER", "STATE", "TYPE", "LEVEL", "SUPER-USER", "FAILURES", "LOCKED UNTIL", "LAST SUCCESS", "FROM"],
        &rows,
    )
}

/// `ip list`.
pub fn format_rules(rules: &[ListedRule]) -> String {
    if rules.is_empty() {
        return "No IP rules.\n".to_owned();
    }
    let rows: Vec<Vec<String>> = rules
        .iter()
        .map(|ListedRule { rule, in_force }| {
            let (id, source) = match rule.origin {
                RuleOrigin::Config => ("-".to_owned(), "config"),
                RuleOrigin::Runtime { id } => (id.to_string(), "runtime"),
            };
            vec![
                id,
                rule.network.to_string(),
                if rule.bypass_2fa { "yes" } else { "no" }.to_owned(),
                source.to_owned(),
                rule.expires_at.map_or_else(|| "never".to_owned(), format_time),
                if *in_force { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    format_table(&["ID", "CIDR", "BYPASS", "SOURCE", "EXPIRES", "IN FORCE"], &rows)
}

/// The one-answer services' own count (`forward_pass`), and their lock
/// when there is one.
fn one_answer_text(status: &UserStatus) -> String {
    match status.one_answer_locked_until {
        Some(until) => format!("{} failures, locked until {}", status.one_answer_failures, format_time(until)),
        None => format!("{} failures", status.one_answer_failures),
    }
}
