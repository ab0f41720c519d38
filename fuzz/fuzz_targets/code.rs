//! What a person types, before it meets a secret: `otp::normalize_code`
//! (6 to 8 digits), the recovery-code normaliser and lookup, and
//! `bypass::parse_network` (an IP rule given to `mfactl ip add` or in the
//! config). No panic, and:
//! - a normalised code is exactly the asked number of ASCII digits, and is
//!   refused only when the input without whitespace is not;
//! - a normalised recovery code has no whitespace, dash or ASCII capital and
//!   normalises to itself; the lookup matches exactly the inputs that
//!   normalise to the stored code (an unkeyed hash of an earlier store);
//! - a parsed network is truncated to its prefix, never IPv4-mapped IPv6,
//!   and its text parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mfa_shared::bypass::parse_network;
use mfa_shared::otp::normalize_code;
use mfad::recovery;

/// The recovery code `abcde-fghjk` hashed with one PBKDF2 iteration (real
/// hashes use 1,000; one keeps the target fast and walks the same code).
const STORED: &str =
    "pbkdf2-sha256$1$000102030405060708090a0b0c0d0e0f$869ce328307f44e5ea12438f106c39753bdc39c33ef4eef90f4b9df941ea3350";
const STORED_CODE: &str = "abcdefghjk";

fuzz_target!(|text: &str| {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    for digits in 6..=8 {
        match normalize_code(text, digits) {
            Ok(code) => {
                assert_eq!(code.len(), digits as usize);
                assert!(code.bytes().all(|b| b.is_ascii_digit()), "a normalised code with a non-digit");
                assert_eq!(code, compact);
            }
            Err(_) => assert!(
                compact.len() != digits as usize || !compact.bytes().all(|b| b.is_ascii_digit()),
                "{digits} digits refused"
            ),
        }
    }

    let normal = recovery::normalize(text);
    assert!(!normal.chars().any(|c| c.is_whitespace() || c == '-' || c.is_ascii_uppercase()), "not normalised");
    assert_eq!(recovery::normalize(&normal), normal, "normalising twice changes the code");
    assert!(!normal.chars().any(char::is_control), "control characters kept");
    let found = recovery::find(&[STORED.to_string()], text, &recovery::Pepper::derive(&[7; 32]));
    assert_eq!(found.is_some(), normal == STORED_CODE, "the lookup disagrees with the normaliser");

    if let Ok(network) = parse_network(text) {
        assert_eq!(network, network.trunc(), "a network with host bits");
        if let ipnet::IpNet::V6(v6) = network {
            assert!(v6.addr().to_ipv4_mapped().is_none(), "IPv4-mapped IPv6 kept as IPv6");
        }
        assert_eq!(parse_network(&network.to_string()), Ok(network), "the network's text reads differently");
    }
});
