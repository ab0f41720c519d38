//! `mfactl user import --format oath`: `formats::parse_oath_users` (a
//! pam_oath users file) on any text. No panic; one account or one error per
//! line; accounts are valid, and only TOTP lines carry a period.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mfa_fuzz::assert_line_by_line;
use mfa_shared::protocol::OtpType;
use mfad::ctl::import::formats::parse_oath_users;

fuzz_target!(|text: &str| {
    let parsed = parse_oath_users(text);
    assert_line_by_line(text, &parsed);
    for user in &parsed.users {
        match user.otp_type {
            OtpType::Totp => assert_eq!(user.counter, 0, "a TOTP account with a counter"),
            OtpType::Hotp => assert!(user.period.is_none(), "an HOTP account with a period"),
        }
    }
});
