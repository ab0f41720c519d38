//! What the fuzz targets share: the invariants of a parsed import file.

use mfa_shared::otp;
use mfa_shared::protocol::{ImportUser, is_valid_user_name};
use mfad::ctl::import::formats::Parsed;

/// Every imported account is one mfad would accept: the checks of
/// `formats::validate`, restated from its rules rather than called.
pub fn assert_acceptable(user: &ImportUser) {
    assert!(is_valid_user_name(&user.user), "an invalid user name was accepted");
    let secret = otp::base32_decode(user.secret.expose());
    assert!(secret.is_ok_and(|s| s.len() >= 10), "a secret shorter than 80 bits was accepted");
    assert!(user.digits.is_none_or(|d| (6..=8).contains(&d)), "digits {:?} accepted", user.digits);
    assert_ne!(user.period, Some(0), "a period of 0 was accepted");
}

/// A line-by-line format (JSON lines, pam_oath): each line that is neither
/// blank nor a `#` comment gives exactly one account or one error, errors
/// come in line order and name a line of the text.
pub fn assert_line_by_line(text: &str, parsed: &Parsed) {
    let lines = text.lines().count();
    let counted = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).count();
    assert_eq!(parsed.users.len() + parsed.errors.len(), counted, "a line was lost or counted twice");
    for user in &parsed.users {
        assert_acceptable(user);
        assert!(user.recovery_codes.is_empty(), "recovery codes from a line format");
    }
    for pair in parsed.errors.windows(2) {
        assert!(pair[0].line < pair[1].line, "errors out of line order");
    }
    for error in &parsed.errors {
        assert!((1..=lines).contains(&error.line), "error on line {} of {lines}", error.line);
        assert!(error.source.is_empty());
    }
}
