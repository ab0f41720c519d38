//! The file formats `mfactl user import` reads: JSON lines, pam_oath users
//! files and google-authenticator files. Pure functions of text; every
//! error names its line and field, never the value (it may be a misplaced
//! secret).

use mfa_shared::otp;
use mfa_shared::protocol::{
    Algorithm, ChallengeLevel, Code, ImportUser, MAX_USER_NAME_BYTES, OtpType, is_valid_user_name,
};
use serde::Deserialize;

/// A line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// Where: a file name (for google-authenticator) or empty.
    pub source: String,
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.source.is_empty() {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            write!(f, "{}:{}: {}", self.source, self.line, self.message)
        }
    }
}

/// What a file gave: users read, lines refused.
#[derive(Debug, Default)]
pub struct Parsed {
    pub users: Vec<ImportUser>,
    pub errors: Vec<LineError>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonLine {
    user: String,
    #[serde(rename = "type")]
    otp_type: OtpType,
    secret: String,
    #[serde(default)]
    counter: Option<u64>,
    #[serde(default)]
    level: Option<ChallengeLevel>,
    #[serde(default)]
    digits: Option<u32>,
    #[serde(default)]
    period: Option<u64>,
    #[serde(default)]
    algorithm: Option<Algorithm>,
}

/// `{"user": "...", "type": "totp|hotp", "secret": "BASE32", "counter": N, "level": "..."}`
/// per line; blank lines and `#` comments are skipped.
pub fn parse_json_lines(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let result = serde_json::from_str::<JsonLine>(line)
            .map_err(|e| json_error(line, &e))
            .and_then(|j| {
                let secret = decode_base32(&j.secret)?;
                Ok(ImportUser {
                    user: j.user,
                    otp_type: j.otp_type,
                    secret: Code::new(otp::base32_encode(&secret)),
                    counter: j.counter.unwrap_or(0),
                    level: j.level,
                    digits: j.digits,
                    period: j.period,
                    algorithm: j.algorithm,
                    recovery_codes: Vec::new(),
                })
            })
            .and_then(validate);
        push(&mut parsed, "", i + 1, result);
    }
    parsed
}

/// The message for a line serde refused, which never repeats a value from
/// it: serde's "invalid type: string \"...\"" or "unknown variant `...`"
/// would echo a secret typed in the wrong field. Only `missing field`,
/// `unknown field` and `duplicate field` (they name keys) and syntax errors
/// (they quote no text) are kept; for the rest the first field of a wrong
/// type or value is named.
fn json_error(line: &str, err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let message = err.to_string();
    let message = message.split(" at line").next().unwrap_or("malformed JSON");
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => format!("malformed JSON ({message})"),
        Category::Data
            if ["missing field", "unknown field", "duplicate field"].iter().any(|k| message.starts_with(k)) =>
        {
            message.to_string()
        }
        Category::Data => wrong_field(line),
    }
}

/// Which field of a JSON line has a wrong type or value, named with what it
/// should be (never with what it is).
fn wrong_field(line: &str) -> String {
    const GENERIC: &str = "a field has a wrong type or value (user and secret must be strings, type totp or hotp, \
                           counter, digits and period numbers, level always, adaptive or superuser, \
                           algorithm SHA1, SHA256 or SHA512)";
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str::<serde_json::Value>(line) else {
        return "each line must be one JSON object".into();
    };
    fn fits<T: serde::de::DeserializeOwned>(value: &serde_json::Value) -> bool {
        T::deserialize(value).is_ok()
    }
    /// A field's name, whether a value fits it, and what it must be.
    type Check = (&'static str, fn(&serde_json::Value) -> bool, &'static str);
    let checks: [Check; 8] = [
        ("user", fits::<String>, "a string"),
        ("type", fits::<OtpType>, "totp or hotp"),
        ("secret", fits::<String>, "a base32 string"),
        ("counter", fits::<Option<u64>>, "a non-negative whole number"),
        ("level", fits::<Option<ChallengeLevel>>, "always, adaptive or superuser"),
        ("digits", fits::<Option<u32>>, "a whole number (6, 7 or 8)"),
        ("period", fits::<Option<u64>>, "a whole number of seconds"),
        ("algorithm", fits::<Option<Algorithm>>, "SHA1, SHA256 or SHA512"),
    ];
    for (name, fits, what) in checks {
        if fields.get(name).is_some_and(|value| !fits(value)) {
            return format!("field `{name}` has a wrong type or value (it must be {what})");
        }
    }
    GENERIC.into()
}

/// pam_oath's users file: `TYPE USER PIN SECRET_HEX [COUNTER ...]` where
/// TYPE is `HOTP`, `HOTP/E/8` (digits) or `HOTP/T30[/6]` (TOTP, period).
pub fn parse_oath_users(text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let result = parse_oath_line(line).and_then(validate);
        push(&mut parsed, "", i + 1, result);
    }
    parsed
}

fn parse_oath_line(line: &str) -> Result<ImportUser, String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [kind, user, pin, secret, rest @ ..] = fields.as_slice() else {
        return Err("expected TYPE USER PIN SECRET [COUNTER]".into());
    };
    if *pin != "-" {
        return Err("PINs are not supported (use - in the PIN field)".into());
    }
    let mut parts = kind.split('/');
    if !parts.next().is_some_and(|p| p.eq_ignore_ascii_case("HOTP")) {
        // Not echoed: a line with its fields out of order would show a secret.
        return Err("unknown token type (expected HOTP, HOTP/E/DIGITS or HOTP/T30[/DIGITS])".into());
    }
    let (mut otp_type, mut period, mut digits) = (OtpType::Hotp, None, None);
    for part in parts {
        if let Some(p) = part.strip_prefix('T') {
            otp_type = OtpType::Totp;
            period = Some(p.parse::<u64>().map_err(|_| "bad time step in the type field".to_string())?);
        } else if part == "E" {
            // Event-based (HOTP), the default.
        } else {
            digits = Some(part.parse::<u32>().map_err(|_| "bad digits in the type field".to_string())?);
        }
    }
    let secret = data_encoding::HEXLOWER_PERMISSIVE
        .decode(secret.as_bytes())
        .map_err(|_| "the secret is not hexadecimal".to_string())?;
    let counter = match rest.first() {
        Some(c) => c.parse::<u64>().map_err(|_| "bad counter".to_string())?,
        None => 0,
    };
    Ok(ImportUser {
        user: (*user).to_string(),
        otp_type,
        secret: Code::new(otp::base32_encode(&secret)),
        counter: if otp_type == OtpType::Hotp { counter } else { 0 },
        level: None,
        digits,
        period,
        algorithm: None,
        recovery_codes: Vec::new(),
    })
}

/// One google-authenticator file: the base32 secret on the first line,
/// `" OPTION` lines (`HOTP_COUNTER N` makes it HOTP, `TOTP_AUTH` TOTP,
/// `STEP_SIZE N`), then 8-digit scratch codes, which become recovery codes.
/// The first bad line stops the file.
pub fn parse_google_authenticator(user: &str, source: &str, text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    match google_authenticator_user(user, text) {
        Ok(user) => push(&mut parsed, source, 1, validate(user)),
        Err((line, message)) => parsed.errors.push(LineError { source: source.into(), line, message }),
    }
    parsed
}

/// The account a google-authenticator file describes, or the number of its
/// first bad line and what is wrong with it.
fn google_authenticator_user(user: &str, text: &str) -> Result<ImportUser, (usize, String)> {
    let mut lines = text.lines().enumerate();
    let Some((_, first)) = lines.next() else {
        return Err((1, "empty file".into()));
    };
    let secret = decode_base32(first.trim()).map_err(|message| (1, message))?;
    let mut file = GoogleAuthenticatorFile { otp_type: OtpType::Totp, counter: 0, period: None, scratch: Vec::new() };
    for (i, line) in lines {
        file.read_line(line.trim()).map_err(|message| (i + 1, message))?;
    }
    Ok(ImportUser {
        user: user.to_string(),
        otp_type: file.otp_type,
        secret: Code::new(otp::base32_encode(&secret)),
        counter: file.counter,
        level: None,
        digits: None,
        period: file.period,
        algorithm: None,
        recovery_codes: file.scratch,
    })
}

/// What the lines after the secret of a google-authenticator file say.
struct GoogleAuthenticatorFile {
    otp_type: OtpType,
    counter: u64,
    period: Option<u64>,
    /// Scratch codes, imported as recovery codes.
    scratch: Vec<Code>,
}

impl GoogleAuthenticatorFile {
    /// Take in one (trimmed) line: an option, a scratch code or nothing.
    fn read_line(&mut self, line: &str) -> Result<(), String> {
        if let Some(option) = line.strip_prefix('"') {
            let words: Vec<&str> = option.split_whitespace().collect();
            match words.as_slice() {
                ["HOTP_COUNTER", n] => {
                    self.otp_type = OtpType::Hotp;
                    self.counter = n.parse().map_err(|_| "bad HOTP_COUNTER".to_string())?;
                }
                ["TOTP_AUTH"] => self.otp_type = OtpType::Totp,
                ["STEP_SIZE", n] => self.period = n.parse().ok(),
                _ => {} // RATE_LIMIT, WINDOW_SIZE, DISALLOW_REUSE: mfad's own rules apply.
            }
        } else if line.len() == 8 && line.bytes().all(|b| b.is_ascii_digit()) {
            self.scratch.push(Code::new(line));
        } else if !line.is_empty() {
            return Err("neither an option nor an 8-digit scratch code".to_string());
        }
        Ok(())
    }
}

fn decode_base32(text: &str) -> Result<Vec<u8>, String> {
    otp::base32_decode(text).map_err(|_| "the secret is not base32".to_string())
}

fn validate(user: ImportUser) -> Result<ImportUser, String> {
    // The daemon's rule, so that what mfactl reads mfad accepts (AD and SSSD
    // names may hold spaces).
    if !is_valid_user_name(&user.user) {
        // Not echoed: it may be a secret written in the wrong field.
        return Err(format!(
            "invalid user name (empty, longer than {MAX_USER_NAME_BYTES} bytes, starting with -, \
             or with control characters or /)"
        ));
    }
    if otp::base32_decode(user.secret.expose()).map_or(true, |s| s.len() < 10) {
        return Err("the secret is shorter than 80 bits".into());
    }
    if let Some(d) = user.digits.filter(|d| !(6..=8).contains(d)) {
        return Err(format!("digits must be 6, 7 or 8, not {d}"));
    }
    if user.period == Some(0) {
        return Err("period must be at least 1 second".into());
    }
    Ok(user)
}

fn push(parsed: &mut Parsed, source: &str, line: usize, result: Result<ImportUser, String>) {
    match result {
        Ok(user) => parsed.users.push(user),
        Err(message) => parsed.errors.push(LineError { source: source.into(), line, message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

    #[test]
    fn json_lines_with_errors_by_line() {
        let text = format!(
            "{{\"user\":\"a\",\"type\":\"hotp\",\"secret\":\"{SECRET}\",\"counter\":5}}\n\
             \n\
             {{\"user\":\"b\",\"type\":\"totp\",\"secret\":\"{SECRET}\",\"level\":\"always\"}}\n\
             {{\"user\":\"c\",\"type\":\"totp\"}}\n\
             not json\n\
             {{\"user\":\"d\",\"type\":\"totp\",\"secret\":\"!!\"}}\n"
        );
        let parsed = parse_json_lines(&text);
        assert_eq!(parsed.users.len(), 2);
        assert_eq!(parsed.users[0].counter, 5);
        assert_eq!(parsed.users[1].level, Some(ChallengeLevel::Always));
        let lines: Vec<usize> = parsed.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![4, 5, 6]);
        assert!(parsed.errors[0].message.contains("secret"), "{}", parsed.errors[0]);
        // No error message repeats a secret.
        assert!(parsed.errors.iter().all(|e| !e.message.contains(SECRET)));
    }

    #[test]
    fn json_errors_never_repeat_a_value() {
        let spaced = "JBSW Y3DP EHPK 3PXP";
        let lines = [
            // Type and secret swapped: serde would say "unknown variant `JBSW...`".
            (format!("{{\"user\":\"a\",\"type\":\"{SECRET}\",\"secret\":\"totp\"}}"), "field `type`"),
            (
                format!("{{\"user\":\"a\",\"type\":\"totp\",\"secret\":\"x\",\"counter\":\"{SECRET}\"}}"),
                "field `counter`",
            ),
            (format!("{{\"user\":\"a\",\"type\":\"totp\",\"secret\":\"x\",\"level\":\"{SECRET}\"}}"), "field `level`"),
            (
                format!("{{\"user\":\"a\",\"type\":\"totp\",\"secret\":\"x\",\"algorithm\":\"{SECRET}\"}}"),
                "field `algorithm`",
            ),
            (format!("{{\"user\":[\"{SECRET}\"],\"type\":\"totp\",\"secret\":\"x\"}}"), "field `user`"),
            (format!("{{\"user\":\"a\",\"type\":\"totp\",\"secret\":{{\"k\":\"{SECRET}\"}}}}"), "field `secret`"),
            (format!("[5, \"{SECRET}\"]"), "one JSON object"),
            (format!("{{\"user\":\"a\",\"type\":\"totp\",\"secret\":\"{SECRET}\",}}"), "malformed JSON"),
            // A secret with a tab where the name goes (spaces alone make a valid name).
            (
                format!("{{\"user\":\"{SECRET}\\t{spaced}\",\"type\":\"totp\",\"secret\":\"{SECRET}\"}}"),
                "invalid user name",
            ),
            (format!("{{\"user\":\"a\",\"type\":\"totp\",\"secret\":\"{SECRET}\",\"{SECRET}\":1}}"), "unknown field"),
            ("{\"user\":\"a\",\"type\":\"totp\"}".to_string(), "missing field `secret`"),
        ];
        for (line, expected) in &lines {
            let parsed = parse_json_lines(line);
            assert_eq!(parsed.errors.len(), 1, "{line}");
            let message = &parsed.errors[0].message;
            assert!(message.contains(expected), "{line}: {message}");
            if !expected.starts_with("unknown field") {
                assert!(!message.contains("JBSW") && !message.contains(spaced), "{line}: {message}");
            }
        }
        let parsed = parse_json_lines(&lines[0].0);
        assert_eq!(parsed.errors[0].message, "field `type` has a wrong type or value (it must be totp or hotp)");
        // pam_oath lines with their fields out of order do not echo either.
        let oath = parse_oath_users("3132333435363738393031323334353637383930 alice - HOTP\n");
        assert!(oath.errors[0].message.starts_with("unknown token type"), "{:?}", oath.errors);
        assert!(!oath.errors[0].message.contains("3132"), "{:?}", oath.errors);
    }

    #[test]
    fn user_names_follow_the_daemons_rule() {
        // An AD name with a space is a name mfad accepts, so import takes it.
        let line = |user: &str| format!("{{\"user\":\"{user}\",\"type\":\"totp\",\"secret\":\"{SECRET}\"}}\n");
        let parsed = parse_json_lines(&line("first last"));
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        assert_eq!(parsed.users[0].user, "first last");
        let ga = parse_google_authenticator("first last", "f", &format!("{SECRET}\n"));
        assert_eq!(ga.users[0].user, "first last", "{:?}", ga.errors);
        // A control character is refused, and the name is not repeated.
        for bad in ["first\\u0007last", "first\\nlast", "", "-first", "a/b"] {
            let parsed = parse_json_lines(&line(bad));
            assert!(parsed.users.is_empty(), "{bad}");
            let message = &parsed.errors[0].message;
            assert!(message.starts_with("invalid user name"), "{bad}: {message}");
            assert!(!message.contains("first") && !message.contains("a/b"), "{bad}: {message}");
        }
    }

    #[test]
    fn oath_users_file() {
        let text = "# comment\nHOTP alice - 3132333435363738393031323334353637383930 7\n\
                    HOTP/T30/8 bob - 3132333435363738393031323334353637383930\n\
                    HOTP carol 1234 3132333435363738393031323334353637383930\n\
                    HOTP dave -\n";
        let parsed = parse_oath_users(text);
        assert_eq!(parsed.users.len(), 2);
        assert_eq!(parsed.users[0].otp_type, OtpType::Hotp);
        assert_eq!(parsed.users[0].counter, 7);
        assert_eq!(parsed.users[0].secret.expose(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(parsed.users[1].otp_type, OtpType::Totp);
        assert_eq!(parsed.users[1].digits, Some(8));
        assert_eq!(parsed.users[1].period, Some(30));
        assert_eq!(parsed.errors.iter().map(|e| e.line).collect::<Vec<_>>(), vec![4, 5]);
    }

    #[test]
    fn google_authenticator_file() {
        let text = format!("{SECRET}\n\" RATE_LIMIT 3 30\n\" WINDOW_SIZE 17\n\" HOTP_COUNTER 4\n12345678\n87654321\n");
        let parsed = parse_google_authenticator("erin", "f", &text);
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
        let user = &parsed.users[0];
        assert_eq!(user.otp_type, OtpType::Hotp);
        assert_eq!(user.counter, 4);
        assert_eq!(user.recovery_codes.len(), 2);
        let totp = parse_google_authenticator("f", "g", &format!("{SECRET}\n\" TOTP_AUTH\n"));
        assert_eq!(totp.users[0].otp_type, OtpType::Totp);
        let bad = parse_google_authenticator("g", "h", &format!("{SECRET}\nhello\n"));
        assert_eq!(bad.errors[0].line, 2);
        assert!(bad.users.is_empty());
    }
}
