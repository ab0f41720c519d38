//! Recovery codes: ten single-use codes issued at enrollment, kept only as
//! PBKDF2-HMAC-SHA256 hashes with a per-code salt (each code is ten symbols
//! out of 31, about 49.5 random bits; the iterations make a stolen
//! database's hashes slow to brute-force); accepted in place of a code at
//! login, never for elevation.
//!
//! Stored form: `keyed-pbkdf2-sha256$ITERATIONS$SALT_HEX$MAC_HEX`, where the
//! MAC is HMAC-SHA256, keyed with a [`Pepper`] derived from the key file, of
//! the PBKDF2 digest: a copy of the database alone cannot check a guess, not
//! even of an imported 8-digit scratch code. Hashes of the older unkeyed
//! form (`pbkdf2-sha256$ITERATIONS$SALT_HEX$HASH_HEX`) still match, and are
//! rewritten in the keyed form ([`upgrade`]) whenever their account's codes
//! are checked.

use hmac::{Hmac, Mac};
use mfa_shared::protocol::Code;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

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
const SCHEME: &str = "keyed-pbkdf2-sha256";
/// The unkeyed form written before the keyed one.
const UNKEYED_SCHEME: &str = "pbkdf2-sha256";
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
#[error("the operating system gave no random bytes")]
pub struct RandomError;

/// The key of recovery-code hashes. Its Debug shows nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Pepper(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Pepper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pepper(<key>)")
    }
}

impl Pepper {
    /// Derived from the key file's key, apart from its use for sealing.
    pub fn derive(key: &[u8]) -> Pepper {
        let digest = Sha256::new().chain_update(b"mfad recovery-code pepper v1\0").chain_update(key).finalize();
        Pepper(Zeroizing::new(digest.into()))
    }

    /// The pepper as stored (sealed) in the store.
    pub fn from_bytes(bytes: &[u8]) -> Option<Pepper> {
        let bytes: [u8; 32] = bytes.try_into().ok()?;
        Some(Pepper(Zeroizing::new(bytes)))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_slice()
    }

    fn mac(&self, digest: &[u8]) -> Vec<u8> {
        match <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_slice()) {
            Ok(mac) => mac.chain_update(digest).finalize().into_bytes().to_vec(),
            // HMAC takes a key of any length: this cannot happen.
            Err(_) => Vec::new(),
        }
    }
}

/// Fresh codes (to show once) and their hashes (to store).
pub fn generate(pepper: &Pepper) -> Result<(Vec<Code>, Vec<String>), RandomError> {
    let mut codes = Vec::with_capacity(COUNT);
    let mut hashes = Vec::with_capacity(COUNT);
    for _ in 0..COUNT {
        let chars = random_chars()?;
        let code = format!("{}-{}", &chars[..CODE_LEN / 2], &chars[CODE_LEN / 2..]);
        hashes.push(hash(&code, &random_salt()?, pepper));
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
pub fn hash_existing(code: &Code, pepper: &Pepper) -> Result<String, RandomError> {
    Ok(hash(code.expose(), &random_salt()?, pepper))
}

fn random_salt() -> Result<[u8; SALT_LEN], RandomError> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::getrandom(&mut salt).map_err(|_| RandomError)?;
    Ok(salt)
}

/// Typed codes ignore case, spaces and dashes; control characters (which
/// no code holds, and NULs that HMAC's key padding would not tell apart)
/// are dropped too. Public for the fuzz target.
pub fn normalize(typed: &str) -> String {
    typed.chars().filter(|c| !c.is_whitespace() && !c.is_control() && *c != '-').flat_map(char::to_lowercase).collect()
}

/// Whether `typed` could be a recovery code: ten of our symbols (dashes,
/// spaces and case aside), or eight digits (an imported
/// google-authenticator scratch code). At a login's code prompt anything
/// else is no code at all and is not checked (see `Shape` in the service).
pub fn is_shaped(typed: &str) -> bool {
    let typed = normalize(typed);
    let ours = typed.len() == CODE_LEN && typed.bytes().all(|b| ALPHABET.contains(&b));
    let scratch = typed.len() == 8 && typed.bytes().all(|b| b.is_ascii_digit());
    ours || scratch
}

/// PBKDF2-HMAC-SHA256 (RFC 8018 section 5.2) for a 32-byte key, from the
/// RustCrypto `pbkdf2` crate.
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; HASH_LEN] {
    pbkdf2::pbkdf2_hmac_array::<Sha256, HASH_LEN>(password, salt, iterations)
}

fn hash(code: &str, salt: &[u8; SALT_LEN], pepper: &Pepper) -> String {
    let digest = pbkdf2_sha256(normalize(code).as_bytes(), salt, ITERATIONS);
    format!(
        "{SCHEME}${ITERATIONS}${}${}",
        data_encoding::HEXLOWER.encode(salt),
        data_encoding::HEXLOWER.encode(&pepper.mac(&digest))
    )
}

/// A stored entry, read: its scheme, iterations, salt and digest (or MAC).
struct Entry<'a> {
    scheme: &'a str,
    iterations: u32,
    salt: Vec<u8>,
    digest: Vec<u8>,
}

/// None for an entry that cannot be read, or that asks for too many
/// iterations (a damaged or hostile record must not make a login spin).
fn parse(stored: &str) -> Option<Entry<'_>> {
    let hex = |text: &str| data_encoding::HEXLOWER.decode(text.as_bytes()).ok();
    let [scheme, iterations, salt, digest] = stored.split('$').collect::<Vec<_>>()[..] else { return None };
    let iterations = iterations.parse::<u32>().ok().filter(|n| (1..=MAX_ITERATIONS).contains(n))?;
    Some(Entry { scheme, iterations, salt: hex(salt)?, digest: hex(digest)? })
}

/// Whether the normalized `typed` code is the one `stored` hashes; false
/// for an entry that cannot be read.
fn matches(stored: &str, typed: &str, pepper: &Pepper) -> bool {
    let Some(entry) = parse(stored) else { return false };
    let digest = pbkdf2_sha256(typed.as_bytes(), &entry.salt, entry.iterations);
    let computed = match entry.scheme {
        SCHEME => pepper.mac(&digest),
        UNKEYED_SCHEME => digest.to_vec(),
        _ => return false,
    };
    bool::from(computed.ct_eq(&entry.digest))
}

/// Rewrite entries of the unkeyed form in the keyed one (the same codes
/// keep working); true when anything changed.
pub fn upgrade(hashes: &mut [String], pepper: &Pepper) -> bool {
    let mut changed = false;
    // Every code check comes here: only an entry of the unkeyed form is
    // decoded, the others are told by their scheme.
    for stored in hashes.iter_mut().filter(|stored| stored.split('$').next() == Some(UNKEYED_SCHEME)) {
        let Some(entry) = parse(stored).filter(|e| e.scheme == UNKEYED_SCHEME) else { continue };
        *stored = format!(
            "{SCHEME}${}${}${}",
            entry.iterations,
            data_encoding::HEXLOWER.encode(&entry.salt),
            data_encoding::HEXLOWER.encode(&pepper.mac(&entry.digest))
        );
        changed = true;
    }
    changed
}

/// The stored hash that `typed` matches, if any. This is the slow part
/// (PBKDF2 for every entry), so callers run it outside any lock and then
/// [`remove`] the hash it names.
pub fn find(hashes: &[String], typed: &str, pepper: &Pepper) -> Option<String> {
    let typed = normalize(typed);
    if typed.is_empty() {
        return None;
    }
    let mut found = None;
    for stored in hashes {
        // Compare every entry, so timing does not tell which one matched.
        if matches(stored, &typed, pepper) && found.is_none() {
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
    let matched = find(hashes, typed, &tests::pepper())?;
    remove(hashes, &matched)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn pepper() -> Pepper {
        Pepper::derive(&[7u8; 32])
    }

    /// The unkeyed form of the code, as hashes were stored before.
    fn unkeyed(code: &str, salt: &[u8; SALT_LEN], iterations: u32) -> String {
        let digest = pbkdf2_sha256(normalize(code).as_bytes(), salt, iterations);
        format!(
            "{UNKEYED_SCHEME}${iterations}${}${}",
            data_encoding::HEXLOWER.encode(salt),
            data_encoding::HEXLOWER.encode(&digest)
        )
    }

    #[test]
    fn each_code_works_once() {
        let (codes, mut hashes) = generate(&pepper()).unwrap();
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
        let (codes, _) = generate(&pepper()).unwrap();
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
    fn unkeyed_hashes_of_earlier_stores_match_and_are_upgraded() {
        // Computed by the hand-written PBKDF2 this module had before it used
        // the pbkdf2 crate (and by Python's hashlib.pbkdf2_hmac): stores hold
        // hashes in this form, so any change to it must fail here.
        let salt: [u8; SALT_LEN] = *b"0123456789abcdef";
        let stored = "pbkdf2-sha256$1000$30313233343536373839616263646566$\
                      1d82aaed6e7b55b9079ee4a8525ede51f0f19f3067d9930e34da98690f8d408b";
        assert_eq!(unkeyed("ABCDE-fghjk", &salt, ITERATIONS), stored);
        let pepper = pepper();
        assert!(matches(stored, &normalize("abcde fghjk"), &pepper));
        let mut hashes = vec![stored.to_string()];
        assert!(upgrade(&mut hashes, &pepper));
        assert!(hashes[0].starts_with("keyed-pbkdf2-sha256$1000$30313233"), "{}", hashes[0]);
        assert_eq!(hashes[0], hash("ABCDE-fghjk", &salt, &pepper), "upgraded = hashed keyed from the start");
        assert!(!upgrade(&mut hashes, &pepper), "once");
        assert_eq!(find(&hashes, "abcde-fghjk", &pepper).as_deref(), Some(hashes[0].as_str()));
    }

    #[test]
    fn without_the_key_a_hash_checks_nothing() {
        let stored = hash("12345678", &[1; SALT_LEN], &pepper());
        assert!(matches(&stored, "12345678", &pepper()));
        let other = Pepper::derive(&[8u8; 32]);
        assert!(!matches(&stored, "12345678", &other), "the database alone cannot confirm a guess");
    }

    #[test]
    fn hashes_are_salted_pbkdf2() {
        let code = Code::new("12345678");
        let (a, b) = (hash_existing(&code, &pepper()).unwrap(), hash_existing(&code, &pepper()).unwrap());
        assert_ne!(a, b, "a fresh salt per code");
        let parts: Vec<&str> = a.split('$').collect();
        assert_eq!(parts.len(), 4, "{a}");
        assert_eq!(parts[0], "keyed-pbkdf2-sha256");
        assert_eq!(parts[1], ITERATIONS.to_string());
        assert_eq!(parts[2].len(), 2 * SALT_LEN);
        assert_eq!(parts[3].len(), 2 * HASH_LEN);
        let salt = data_encoding::HEXLOWER.decode(parts[2].as_bytes()).unwrap();
        let digest = pbkdf2_sha256(b"12345678", &salt, ITERATIONS);
        assert_eq!(parts[3], data_encoding::HEXLOWER.encode(&pepper().mac(&digest)));
        let mut hashes = vec![a, b];
        assert_eq!(consume(&mut hashes, "1234 5678"), Some(1));
    }

    #[test]
    fn stored_iterations_are_honoured_and_bounded() {
        let salt = [7u8; SALT_LEN];
        let with = |n: u32| {
            let digest = pbkdf2_sha256(b"abcdefghjk", &salt, n);
            format!(
                "{UNKEYED_SCHEME}${n}${}${}",
                data_encoding::HEXLOWER.encode(&salt),
                data_encoding::HEXLOWER.encode(&digest)
            )
        };
        assert!(matches(&with(3), "abcdefghjk", &pepper()));
        assert!(!matches(&with(3), "abcdefghjm", &pepper()));
        let zero = with(1).replacen("$1$", "$0$", 1);
        assert!(!matches(&zero, "abcdefghjk", &pepper()));
        assert!(matches(&with(ITERATIONS), "abcdefghjk", &pepper()));
        let huge = with(1).replacen("$1$", &format!("${}$", u32::MAX), 1);
        assert!(!matches(&huge, "abcdefghjk", &pepper()), "refused without computing");
        assert!(!matches("pbkdf2-sha256$x$00$00", "abcdefghjk", &pepper()));
        assert!(!matches("", "abcdefghjk", &pepper()));
    }
}
