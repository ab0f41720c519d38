//! What an account is made of, as the protocol carries it: its name, its
//! device's parameters, its challenge level and enrollment state, and the
//! codes a person types.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest PAM item (service, rhost, tty) accepted: these reach terminals
/// and logs.
pub const MAX_FIELD_BYTES: usize = 256;

/// Whether a PAM item may be taken: no control characters (they would
/// reach an administrator's terminal raw), at most [`MAX_FIELD_BYTES`].
pub fn is_valid_field(value: &str) -> bool {
    value.len() <= MAX_FIELD_BYTES && !value.chars().any(hides_text)
}

/// Control characters, and the invisible ones that reorder or hide text in
/// a terminal or a log (bidirectional overrides, zero-width characters).
fn hides_text(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// Longest account name accepted anywhere (NSS allows far less in practice).
pub const MAX_USER_NAME_BYTES: usize = 256;

/// Whether `user` can be an account name. Names are what NSS says they are
/// (AD/SSSD names may hold spaces, `@`, `\\` or `+`); refused are only names
/// no account can have: empty, over-long, with control characters or a
/// slash, or shaped like an option. mfad and mfactl's import both use it.
pub fn is_valid_user_name(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= MAX_USER_NAME_BYTES
        && !user.starts_with('-')
        && !user.chars().any(|c| hides_text(c) || c == '/')
}

/// OTP type of a device.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum OtpType {
    /// Time-based (RFC 6238), the recommended type.
    Totp,
    /// Counter-based (RFC 4226).
    Hotp,
}

impl OtpType {
    pub fn as_str(self) -> &'static str {
        match self {
            OtpType::Totp => "totp",
            OtpType::Hotp => "hotp",
        }
    }
}

impl fmt::Display for OtpType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// HMAC algorithm of a device.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "UPPERCASE")]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The name used in otpauth URIs and by oathtool.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How often a code is asked (the seed's "security level").
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum ChallengeLevel {
    /// Only for super-user functions (elevation services). Least security.
    Superuser,
    /// When the system deems it appropriate (trusted sources skip the code).
    Adaptive,
    /// At every login. Maximum security.
    Always,
}

impl ChallengeLevel {
    /// Order of strictness: superuser < adaptive < always.
    pub fn strictness(self) -> u8 {
        match self {
            ChallengeLevel::Superuser => 0,
            ChallengeLevel::Adaptive => 1,
            ChallengeLevel::Always => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChallengeLevel::Superuser => "superuser",
            ChallengeLevel::Adaptive => "adaptive",
            ChallengeLevel::Always => "always",
        }
    }
}

impl fmt::Display for ChallengeLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Enrollment state of an account.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EnrollmentState {
    NotEnrolled,
    /// Set-up started, not confirmed with a code yet.
    Pending,
    Enabled,
}

impl EnrollmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            EnrollmentState::NotEnrolled => "not enrolled",
            EnrollmentState::Pending => "pending",
            EnrollmentState::Enabled => "enabled",
        }
    }
}

/// A one-time code or recovery code typed by a person.
///
/// Its `Debug` never shows the value, so a code cannot reach a log through
/// a `{:?}` of a request.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Code(pub String);

impl Code {
    pub fn new(value: impl Into<String>) -> Self {
        Code(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Typed codes (and recovery codes shown once) are wiped from memory when
/// dropped.
impl Drop for Code {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Code(<redacted>)")
    }
}
