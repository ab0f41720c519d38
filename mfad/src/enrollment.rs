//! What a person setting up a device is asked and shown: the same words in
//! `mfactl setup` and in an inline enrollment at login.

use mfa_shared::protocol::{Code, OtpType, SetupInfo};
use mfa_shared::qr::{self, Background};

pub const BARCODE_QUESTION: &str = "Does your device support scanning a barcode? [y/n] ";
pub const TYPE_QUESTION: &str = "Time-based or counter-based? [t/c] ";
pub const SETUP_CODE_PROMPT: &str = "Enter the code from your device to complete setup: ";
pub const YES_NO_HINT: &str = "Please answer y or n.";
pub const TYPE_HINT: &str = "Please answer t (time-based, recommended) or c (counter-based).";

/// "Does your device support scanning a barcode?"
pub fn yes_no(answer: &str) -> Option<bool> {
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Some(true),
        "n" | "no" => Some(false),
        _ => None,
    }
}

/// "Time-based or counter-based?"; time-based (the recommended type) when
/// the answer is empty.
pub fn time_or_counter(answer: &str) -> Option<OtpType> {
    match answer.trim().to_ascii_lowercase().as_str() {
        "" | "t" | "time" | "time-based" | "totp" => Some(OtpType::Totp),
        "c" | "counter" | "counter-based" | "hotp" => Some(OtpType::Hotp),
        _ => None,
    }
}

/// The secret and parameters to type into an app by hand.
pub fn format_manual_entry(info: &SetupInfo) -> String {
    let mut text = String::from("Enter this key in your authenticator app:\n\n");
    text.push_str(&format!("    {}\n\n", mfa_shared::otp::group_secret(&info.secret)));
    let kind = match info.otp_type {
        OtpType::Totp => "time-based (TOTP)",
        OtpType::Hotp => "counter-based (HOTP)",
    };
    let mut rows = vec![
        ("account", info.user.clone()),
        ("type", kind.to_owned()),
        ("algorithm", info.algorithm.to_string()),
        ("digits", info.digits.to_string()),
    ];
    match info.otp_type {
        OtpType::Totp => rows.push(("period", format!("{} seconds", info.period))),
        OtpType::Hotp => rows.push(("starting counter", info.counter.to_string())),
    }
    text.push_str(&format_fields(&rows, "  "));
    text
}

/// How a QR code is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrStyle {
    /// Plain text for a terminal with this background (inside a login
    /// conversation, where escape sequences are shown literally).
    Plain(Background),
    /// Black on white set with ANSI colours, whatever the terminal's theme
    /// (mfactl writing to a terminal).
    BlackOnWhite,
}

/// The QR code and the URI, or the manual entry when no QR code fits.
pub fn format_barcode(info: &SetupInfo, style: QrStyle) -> String {
    let drawn = match style {
        QrStyle::Plain(background) => qr::render_terminal(&info.uri, background),
        QrStyle::BlackOnWhite => qr::render_black_on_white(&info.uri),
    };
    match drawn {
        Ok(qr) => format!(
            "Scan this QR code with your authenticator app:\n\n{qr}\nOr open this URI on the device:\n{}\n",
            info.uri
        ),
        Err(e) => format!("(no QR code: {e})\n{}", format_manual_entry(info)),
    }
}

/// "key: value" lines with the values aligned.
pub fn format_fields(rows: &[(&str, String)], indent: &str) -> String {
    let width = rows.iter().map(|(k, _)| k.chars().count() + 1).max().unwrap_or(0);
    let mut text = String::new();
    for (key, value) in rows {
        text.push_str(&format!("{indent}{:<width$} {value}\n", format!("{key}:")));
    }
    text
}

pub fn format_recovery_codes(codes: &[Code]) -> String {
    if codes.is_empty() {
        return String::new();
    }
    let mut text = String::from(
        "\nRecovery codes: each works once in place of a code at login. They are shown\n\
         only this once: store them somewhere safe, away from your device.\n\n",
    );
    for code in codes {
        text.push_str(&format!("    {}\n", code.expose()));
    }
    text
}
