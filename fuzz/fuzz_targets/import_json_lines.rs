//! `mfactl user import` (JSON lines): `formats::parse_json_lines` on any
//! text. No panic; one account or one error per line; accounts are valid;
//! an error never repeats the line's secret.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mfa_fuzz::assert_line_by_line;
use mfad::ctl::import::formats::parse_json_lines;

fuzz_target!(|text: &str| {
    let parsed = parse_json_lines(text);
    assert_line_by_line(text, &parsed);
    let lines: Vec<&str> = text.lines().collect();
    for error in &parsed.errors {
        let line = lines[error.line - 1];
        // Error messages may name keys (unknown, missing or duplicate
        // field), never values.
        if ["unknown field", "missing field", "duplicate field"].iter().any(|k| error.message.starts_with(k)) {
            continue;
        }
        if let Some(secret) = secret_of(line) {
            assert!(!error.message.contains(&secret), "line {}: the secret is repeated in the error", error.line);
        }
    }
});

/// The `secret` of a JSON line, when it looks like base32 and is long
/// enough that finding it in a message cannot be chance.
fn secret_of(line: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Secret {
        secret: String,
    }
    let Secret { secret } = serde_json::from_str(line.trim()).ok()?;
    let base32 = secret.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b) || b == b'=');
    (secret.len() >= 12 && base32).then_some(secret)
}
