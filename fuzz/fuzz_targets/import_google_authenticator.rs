//! `mfactl user import --google-authenticator`: `formats::
//! parse_google_authenticator` on any file. The input is the file, or
//! `USER NUL FILE` to vary the account name too. No panic; a file gives
//! exactly one account or one error, on a line of the file; the account is
//! valid and its recovery codes are the 8-digit scratch codes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mfa_fuzz::assert_acceptable;
use mfad::ctl::import::formats::parse_google_authenticator;

const SOURCE: &str = "/home/alice/.google_authenticator";

fuzz_target!(|input: &str| {
    let (user, text) = input.split_once('\0').unwrap_or(("alice", input));
    let parsed = parse_google_authenticator(user, SOURCE, text);
    assert_eq!(parsed.users.len() + parsed.errors.len(), 1, "a file gives one account or one error");
    for account in &parsed.users {
        assert_acceptable(account);
        assert_eq!(account.user, user);
        assert!(account.digits.is_none() && account.algorithm.is_none());
        let scratch = account.recovery_codes.iter().map(|c| c.expose());
        assert!(scratch.clone().all(|c| c.len() == 8 && c.bytes().all(|b| b.is_ascii_digit())));
        assert!(scratch.count() < text.lines().count().max(1), "more scratch codes than lines after the secret");
    }
    for error in &parsed.errors {
        assert_eq!(error.source, SOURCE);
        assert!((1..=text.lines().count().max(1)).contains(&error.line), "error on line {}", error.line);
    }
});
