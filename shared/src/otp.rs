//! One-time passwords: HOTP (RFC 4226), TOTP (RFC 6238), their verification
//! windows with replay protection, base32 secrets and the otpauth URI.
//!
//! Time is always a parameter (`now`, unix seconds): nothing here reads the clock.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::protocol::{Algorithm, OtpType};

/// Length of a generated secret: 160 bits, as RFC 4226 recommends.
pub const SECRET_LEN: usize = 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum OtpError {
    #[error("the secret is not valid base32")]
    BadSecret,
    #[error("the code must be {digits} digits")]
    BadFormat { digits: u32 },
    #[error("the operating system could not supply random bytes")]
    Random,
}

/// How a device computes its codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtpParams {
    pub otp_type: OtpType,
    pub algorithm: Algorithm,
    pub digits: u32,
    /// TOTP period in seconds (unused for HOTP).
    pub period: u64,
}

impl Default for OtpParams {
    /// The spec's defaults: TOTP, SHA1, 6 digits, 30 s.
    fn default() -> Self {
        OtpParams { otp_type: OtpType::Totp, algorithm: Algorithm::Sha1, digits: 6, period: 30 }
    }
}

/// HMAC keyed once with a secret: each counter's value then costs a copy
/// of the keyed state and two compressions, not the key's two more.
enum KeyedMac {
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<sha2::Sha256>),
    Sha512(Hmac<sha2::Sha512>),
}

impl KeyedMac {
    /// HMAC accepts keys of any length, so this is never None in practice;
    /// None would make every value "", which matches no code.
    fn new(secret: &[u8], algorithm: Algorithm) -> Option<KeyedMac> {
        Some(match algorithm {
            Algorithm::Sha1 => KeyedMac::Sha1(<Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret).ok()?),
            Algorithm::Sha256 => KeyedMac::Sha256(<Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret).ok()?),
            Algorithm::Sha512 => KeyedMac::Sha512(<Hmac<sha2::Sha512> as KeyInit>::new_from_slice(secret).ok()?),
        })
    }

    /// RFC 4226 HOTP value of `counter`, zero-padded to `digits`; "" (which
    /// matches no code) should a digest ever be too short to truncate.
    fn hotp(&self, counter: u64, digits: u32) -> String {
        let msg = counter.to_be_bytes();
        let truncated = match self {
            KeyedMac::Sha1(mac) => truncate(&mac_of(mac, &msg)),
            KeyedMac::Sha256(mac) => truncate(&mac_of(mac, &msg)),
            KeyedMac::Sha512(mac) => truncate(&mac_of(mac, &msg)),
        };
        let Some(bin) = truncated else {
            return String::new();
        };
        // Past 19 digits 10^digits overflows; the 31-bit value is then simply padded.
        let value = match 10u64.checked_pow(digits) {
            Some(m) => bin % m,
            None => bin,
        };
        format!("{value:0width$}", width = digits as usize)
    }
}

fn mac_of<M: Mac + Clone>(keyed: &M, msg: &[u8]) -> hmac::digest::Output<M> {
    let mut mac = keyed.clone();
    mac.update(msg);
    mac.finalize().into_bytes()
}

/// Dynamic truncation (RFC 4226 5.3): the low nibble of the last byte picks
/// 4 bytes, read as a 31-bit number.
fn truncate(digest: &[u8]) -> Option<u64> {
    let offset = usize::from(digest.last()? & 0x0f);
    match digest.get(offset..offset + 4)? {
        &[a, b, c, d] => Some(u64::from(u32::from_be_bytes([a & 0x7f, b, c, d]))),
        _ => None,
    }
}

/// RFC 4226 HOTP value of `counter`, zero-padded to `digits`.
pub fn hotp(secret: &[u8], counter: u64, algorithm: Algorithm, digits: u32) -> String {
    KeyedMac::new(secret, algorithm).map_or_else(String::new, |mac| mac.hotp(counter, digits))
}

/// The TOTP time step of `now`. A zero period (invalid) yields step 0 rather than a crash.
pub fn totp_step(now: u64, period: u64) -> u64 {
    now.checked_div(period).unwrap_or(0)
}

/// RFC 6238 TOTP value at `now`.
pub fn totp(secret: &[u8], now: u64, params: &OtpParams) -> String {
    hotp(secret, totp_step(now, params.period), params.algorithm, params.digits)
}

/// Strips all whitespace from a typed code; what remains must be exactly `digits` ASCII digits.
pub fn normalize_code(input: &str, digits: u32) -> Result<String, OtpError> {
    let code: String = input.chars().filter(|c| !c.is_whitespace()).collect();
    if code.len() == digits as usize && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(code)
    } else {
        Err(OtpError::BadFormat { digits })
    }
}

/// Which of several matching candidates (a code that repeats within the
/// window, about once in 10^digits / window) is accepted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pick {
    /// HOTP: the first, as RFC 4226 resynchronisation does; jumping to a
    /// later repeat would refuse the device's genuine next codes.
    First,
    /// TOTP: the last, so the same code cannot be accepted again at the
    /// later step.
    Last,
}

/// Checks `code` against every counter in `candidates` (ascending), each in
/// constant time and without early exit, and returns the match `pick`
/// chooses: the first for HOTP, the last for TOTP.
fn scan(
    secret: &[u8],
    params: &OtpParams,
    code: &str,
    candidates: impl Iterator<Item = u64>,
    pick: Pick,
) -> Option<u64> {
    let code = normalize_code(code, params.digits).ok()?;
    let mac = KeyedMac::new(secret, params.algorithm)?;
    let mut found = Choice::from(0);
    let mut best = 0u64;
    for counter in candidates {
        let ok = code.as_bytes().ct_eq(mac.hotp(counter, params.digits).as_bytes());
        // Candidates ascend; every one is computed, whichever is picked.
        let take = match pick {
            Pick::First => ok & !found,
            Pick::Last => ok,
        };
        best = u64::conditional_select(&best, &counter, take);
        found |= ok;
    }
    bool::from(found).then_some(best)
}

/// TOTP: accept a step in [step(now)-skew, step(now)+skew] that is strictly greater than `last_step` (replay protection); returns the accepted step. Check every candidate step (no early exit) comparing in constant time.
pub fn verify_totp(
    secret: &[u8],
    params: &OtpParams,
    code: &str,
    now: u64,
    skew: u32,
    last_step: Option<u64>,
) -> Option<u64> {
    let step = totp_step(now, params.period);
    let lo = step.saturating_sub(u64::from(skew));
    let lo = match last_step {
        // Steps at or before the last accepted one are not candidates at all.
        Some(last) => lo.max(last.checked_add(1)?),
        None => lo,
    };
    let hi = step.saturating_add(u64::from(skew));
    scan(secret, params, code, lo..=hi, Pick::Last)
}

/// HOTP: accept a counter in [next_counter, next_counter + window) ; returns the accepted counter (caller stores counter+1 as next).
pub fn verify_hotp(secret: &[u8], params: &OtpParams, code: &str, next_counter: u64, window: u32) -> Option<u64> {
    let end = next_counter.saturating_add(u64::from(window));
    scan(secret, params, code, next_counter..end, Pick::First)
}

/// The "check key value": the HOTP value at counter 0, as Google
/// Authenticator shows it, so admin and user can confirm they hold the same key.
pub fn check_value(secret: &[u8], params: &OtpParams) -> String {
    hotp(secret, 0, params.algorithm, params.digits)
}

/// A fresh 160-bit secret from the operating system.
pub fn generate_secret() -> Result<Vec<u8>, OtpError> {
    let mut secret = vec![0u8; SECRET_LEN];
    getrandom::getrandom(&mut secret).map_err(|_| OtpError::Random)?;
    Ok(secret)
}

/// RFC 4648 base32, upper case, without padding (what authenticator apps expect).
pub fn base32_encode(bytes: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(bytes)
}

/// Decodes base32 as users type it: any case, spaces, optional `=` padding.
pub fn base32_decode(text: &str) -> Result<Vec<u8>, OtpError> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
    let clean = clean.trim_end_matches('=');
    if clean.is_empty() {
        return Err(OtpError::BadSecret);
    }
    data_encoding::BASE32_NOPAD.decode(clean.as_bytes()).map_err(|_| OtpError::BadSecret)
}

/// "ABCD EFGH IJKL ..." for typing a secret by hand.
pub fn group_secret(b32: &str) -> String {
    let chars: Vec<char> = b32.chars().filter(|c| !c.is_whitespace()).collect();
    chars.chunks(4).map(|g| g.iter().collect::<String>()).collect::<Vec<_>>().join(" ")
}

/// Percent-encodes everything except RFC 3986 unreserved characters, so ':'
/// (the label separator), '@', '&' and spaces can never break the URI.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=ISSUER&algorithm=SHA1&digits=6&period=30 ; for hotp: otpauth://hotp/...&counter=N (no period). Issuer and account percent-encoded (RFC 3986 unreserved chars kept; ':' in issuer/account is encoded).
pub fn otpauth_uri(issuer: &str, account: &str, secret_b32: &str, params: &OtpParams, counter: u64) -> String {
    // Apps expect the secret unpadded and without the grouping spaces.
    let secret: String = secret_b32.chars().filter(|c| !c.is_whitespace() && *c != '=').collect();
    let issuer = percent_encode(issuer);
    let mut uri = format!(
        "otpauth://{}/{issuer}:{}?secret={secret}&issuer={issuer}&algorithm={}&digits={}",
        params.otp_type.as_str(),
        percent_encode(account),
        params.algorithm.as_str(),
        params.digits,
    );
    match params.otp_type {
        OtpType::Totp => uri.push_str(&format!("&period={}", params.period)),
        OtpType::Hotp => uri.push_str(&format!("&counter={counter}")),
    }
    uri
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const RFC_SEED: &[u8] = b"12345678901234567890";

    fn params(algorithm: Algorithm, digits: u32, period: u64) -> OtpParams {
        OtpParams { otp_type: OtpType::Totp, algorithm, digits, period }
    }

    fn hotp_params(algorithm: Algorithm, digits: u32) -> OtpParams {
        OtpParams { otp_type: OtpType::Hotp, algorithm, digits, period: 30 }
    }

    fn random_u64() -> u64 {
        let mut b = [0u8; 8];
        getrandom::getrandom(&mut b).unwrap();
        u64::from_le_bytes(b)
    }

    /// Runs oathtool; fails the test (never skips) when it is missing or errs.
    fn oathtool(args: &[String]) -> Vec<String> {
        let out =
            Command::new("oathtool").args(args).output().expect("oathtool must be installed (apt package oathtool)");
        assert!(out.status.success(), "oathtool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect()
    }

    #[test]
    fn rfc4226_appendix_d() {
        let expected =
            ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"];
        for (counter, want) in expected.iter().enumerate() {
            assert_eq!(hotp(RFC_SEED, counter as u64, Algorithm::Sha1, 6), *want, "counter {counter}");
        }
    }

    #[test]
    fn rfc6238_appendix_b() {
        let seed32 = b"12345678901234567890123456789012";
        let seed64 = b"1234567890123456789012345678901234567890123456789012345678901234";
        let table: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (t, sha1, sha256, sha512) in table {
            assert_eq!(totp(RFC_SEED, t, &params(Algorithm::Sha1, 8, 30)), sha1, "SHA1 at {t}");
            assert_eq!(totp(seed32, t, &params(Algorithm::Sha256, 8, 30)), sha256, "SHA256 at {t}");
            assert_eq!(totp(seed64, t, &params(Algorithm::Sha512, 8, 30)), sha512, "SHA512 at {t}");
        }
    }

    #[test]
    fn oathtool_example_date() {
        // 2026-01-01 00:00:00 UTC
        let secret = generate_secret().unwrap();
        let b32 = base32_encode(&secret);
        let got = oathtool(&[
            "-b".into(),
            "--totp=SHA256".into(),
            "--digits=8".into(),
            "--time-step-size=60s".into(),
            "--now".into(),
            "2026-01-01 00:00:00 UTC".into(),
            b32,
        ]);
        assert_eq!(got, [totp(&secret, 1_767_225_600, &params(Algorithm::Sha256, 8, 60))]);
    }

    #[test]
    fn matches_oathtool() {
        let algorithms = [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512];
        let lengths = [10, 16, 20, 32, 64];
        for i in 0..30 {
            let mut secret = vec![0u8; lengths[i % lengths.len()]];
            getrandom::getrandom(&mut secret).unwrap();
            let b32 = base32_encode(&secret);
            for algorithm in algorithms {
                for digits in [6, 7, 8] {
                    for period in [30, 60] {
                        // Random time up to 2^33 s (past 2038); -w 2 also checks the next two steps.
                        let now = random_u64() % (1 << 33);
                        let p = params(algorithm, digits, period);
                        let got = oathtool(&[
                            "-b".into(),
                            format!("--totp={}", algorithm.as_str()),
                            format!("--digits={digits}"),
                            format!("--time-step-size={period}s"),
                            format!("--now=@{now}"),
                            "-w".into(),
                            "2".into(),
                            b32.clone(),
                        ]);
                        let want: Vec<String> = (0..3).map(|k| totp(&secret, now + k * period, &p)).collect();
                        assert_eq!(got, want, "{b32} {algorithm} {digits} {period} @{now}");
                    }
                }
                // oathtool's --hotp is SHA1 only; for SHA256/512, TOTP with a 1 s step at
                // time N is exactly HOTP at counter N, so that checks `hotp` too.
                let counter = random_u64() % (1 << 40);
                let digits = 6 + (i as u32 % 3);
                let args = match algorithm {
                    Algorithm::Sha1 => vec![
                        "-b".into(),
                        "--hotp".into(),
                        format!("--counter={counter}"),
                        format!("--digits={digits}"),
                        b32.clone(),
                    ],
                    _ => vec![
                        "-b".into(),
                        format!("--totp={}", algorithm.as_str()),
                        format!("--digits={digits}"),
                        "--time-step-size=1s".into(),
                        format!("--now=@{counter}"),
                        b32.clone(),
                    ],
                };
                assert_eq!(
                    oathtool(&args),
                    [hotp(&secret, counter, algorithm, digits)],
                    "hotp {b32} {algorithm} {digits} c={counter}"
                );
            }
        }
    }

    #[test]
    fn totp_window_and_replay() {
        let p = params(Algorithm::Sha1, 6, 30);
        let now = 1_700_000_015; // step 56_666_667
        let step = totp_step(now, 30);
        assert_eq!(step, 56_666_667);
        let at = |s: u64| hotp(RFC_SEED, s, Algorithm::Sha1, 6);
        // Inside ±1.
        for s in [step - 1, step, step + 1] {
            assert_eq!(verify_totp(RFC_SEED, &p, &at(s), now, 1, None), Some(s));
        }
        // Outside ±1, inside ±2.
        for s in [step - 2, step + 2] {
            assert_eq!(verify_totp(RFC_SEED, &p, &at(s), now, 1, None), None);
            assert_eq!(verify_totp(RFC_SEED, &p, &at(s), now, 2, None), Some(s));
        }
        // Skew 0: only the current step.
        assert_eq!(verify_totp(RFC_SEED, &p, &at(step), now, 0, None), Some(step));
        assert_eq!(verify_totp(RFC_SEED, &p, &at(step + 1), now, 0, None), None);
        // Replay: a step <= last_step is refused, a later one accepted.
        assert_eq!(verify_totp(RFC_SEED, &p, &at(step), now, 1, Some(step)), None);
        assert_eq!(verify_totp(RFC_SEED, &p, &at(step - 1), now, 1, Some(step)), None);
        assert_eq!(verify_totp(RFC_SEED, &p, &at(step), now, 1, Some(step + 1)), None);
        assert_eq!(verify_totp(RFC_SEED, &p, &at(step + 1), now, 1, Some(step)), Some(step + 1));
        assert_eq!(verify_totp(RFC_SEED, &p, &at(step), now, 1, Some(step - 1)), Some(step));
        assert_eq!(verify_totp(RFC_SEED, &p, &at(step), now, 1, Some(u64::MAX)), None);
        // Spaces are ignored; a malformed or wrong code is just refused.
        let spaced = format!(" {} {} ", &at(step)[..3], &at(step)[3..]);
        assert_eq!(verify_totp(RFC_SEED, &p, &spaced, now, 1, None), Some(step));
        assert_eq!(verify_totp(RFC_SEED, &p, "12345", now, 1, None), None);
        assert_eq!(verify_totp(RFC_SEED, &p, "abcdef", now, 1, None), None);
        // Near time 0 the window does not underflow.
        assert_eq!(verify_totp(RFC_SEED, &p, &at(0), 5, 3, None), Some(0));
    }

    #[test]
    fn hotp_window() {
        let p = hotp_params(Algorithm::Sha1, 6);
        let at = |c: u64| hotp(RFC_SEED, c, Algorithm::Sha1, 6);
        assert_eq!(verify_hotp(RFC_SEED, &p, &at(5), 5, 10), Some(5));
        assert_eq!(verify_hotp(RFC_SEED, &p, &at(14), 5, 10), Some(14)); // last in window
        assert_eq!(verify_hotp(RFC_SEED, &p, &at(15), 5, 10), None); // just past it
        assert_eq!(verify_hotp(RFC_SEED, &p, &at(4), 5, 10), None); // before next: replay
        assert_eq!(verify_hotp(RFC_SEED, &p, &at(0), 5, 10), None);
        assert_eq!(verify_hotp(RFC_SEED, &p, &at(5), 5, 0), None); // empty window
        assert_eq!(verify_hotp(RFC_SEED, &p, &at(u64::MAX - 1), u64::MAX - 1, 10), Some(u64::MAX - 1));
    }

    #[test]
    fn normalize() {
        assert_eq!(normalize_code("123456", 6), Ok("123456".into()));
        assert_eq!(normalize_code(" 123 456\t\n", 6), Ok("123456".into()));
        assert_eq!(normalize_code("1234 5678", 8), Ok("12345678".into()));
        let bad = Err(OtpError::BadFormat { digits: 6 });
        for input in ["12345", "1234567", "12345a", "abcdef", "", "12-456", "١٢٣٤٥٦", "+12345"] {
            assert_eq!(normalize_code(input, 6), bad, "{input:?}");
        }
        assert_eq!(OtpError::BadFormat { digits: 6 }.to_string(), "the code must be 6 digits");
    }

    #[test]
    fn check_value_is_counter_zero() {
        assert_eq!(check_value(RFC_SEED, &params(Algorithm::Sha1, 6, 30)), "755224");
    }

    #[test]
    fn secrets_and_base32() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        for len in 0..=40 {
            let mut bytes = vec![0u8; len];
            getrandom::getrandom(&mut bytes).unwrap();
            let text = base32_encode(&bytes);
            assert!(!text.contains('='));
            assert_eq!(text, text.to_ascii_uppercase());
            if len > 0 {
                assert_eq!(base32_decode(&text).unwrap(), bytes);
                assert_eq!(base32_decode(&text.to_ascii_lowercase()).unwrap(), bytes);
                assert_eq!(base32_decode(&group_secret(&text)).unwrap(), bytes);
                assert_eq!(base32_decode(&data_encoding::BASE32.encode(&bytes)).unwrap(), bytes);
            }
        }
        assert_eq!(base32_encode(b"Hello!\xde\xad\xbe\xef"), "JBSWY3DPEHPK3PXP");
        assert_eq!(base32_decode("jbsw y3dp ehpk 3pxp").unwrap(), b"Hello!\xde\xad\xbe\xef");
        assert_eq!(base32_decode("MZXW6==="), Ok(b"foo".to_vec()));
        for bad in ["", "   ", "====", "JBSWY3DP1", "JBSW!3DP", "A"] {
            assert_eq!(base32_decode(bad), Err(OtpError::BadSecret), "{bad:?}");
        }
    }

    #[test]
    fn grouping() {
        assert_eq!(group_secret("JBSWY3DPEHPK3PXP"), "JBSW Y3DP EHPK 3PXP");
        assert_eq!(group_secret("ABCDEF"), "ABCD EF");
        assert_eq!(group_secret(""), "");
    }

    #[test]
    fn uri() {
        let p = OtpParams::default();
        assert_eq!(
            otpauth_uri("ACME Corp", "alice@host", "JBSWY3DPEHPK3PXP", &p, 0),
            "otpauth://totp/ACME%20Corp:alice%40host?secret=JBSWY3DPEHPK3PXP\
             &issuer=ACME%20Corp&algorithm=SHA1&digits=6&period=30"
        );
        let p = OtpParams { otp_type: OtpType::Totp, algorithm: Algorithm::Sha512, digits: 8, period: 60 };
        assert_eq!(
            otpauth_uri("host1", "bob", "JBSW Y3DP EHPK 3PXP", &p, 7),
            "otpauth://totp/host1:bob?secret=JBSWY3DPEHPK3PXP&issuer=host1&algorithm=SHA512&digits=8&period=60"
        );
        let p = hotp_params(Algorithm::Sha256, 6);
        assert_eq!(
            otpauth_uri("a:b&c", "x:y/z~", "MZXW6", &p, 3),
            "otpauth://hotp/a%3Ab%26c:x%3Ay%2Fz~?secret=MZXW6&issuer=a%3Ab%26c&algorithm=SHA256&digits=6&counter=3"
        );
        // UTF-8 is encoded byte by byte.
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[test]
    fn hotp_takes_the_first_of_a_repeated_code() {
        // With the RFC 4226 key, counters 2386 and 2394 both show 709847.
        let key = b"12345678901234567890";
        let params = OtpParams { otp_type: OtpType::Hotp, ..OtpParams::default() };
        assert_eq!(hotp(key, 2386, Algorithm::Sha1, 6), "709847");
        assert_eq!(hotp(key, 2394, Algorithm::Sha1, 6), "709847");
        assert_eq!(verify_hotp(key, &params, "709847", 2386, 10), Some(2386));
        // So the device's genuine next code still works.
        let next = hotp(key, 2387, Algorithm::Sha1, 6);
        assert_eq!(verify_hotp(key, &params, &next, 2387, 10), Some(2387));
    }
}
