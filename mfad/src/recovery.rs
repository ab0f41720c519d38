//! Recovery codes: ten single-use codes issued at enrollment, kept only as
//! salted SHA-256 hashes (each code is ten symbols out of 31, about 49.5
//! random bits, so a hash is not worth brute-forcing); accepted in place of a
//! code at login, never for elevation.

use mfa_shared::protocol::Code;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub const COUNT: usize = 10;
/// Unambiguous lower-case letters and digits (no 0/o, 1/l/i): 31 symbols.
const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
const CODE_LEN: usize = 10;

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

fn random_salt() -> Result<[u8; 16], RandomError> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|_| RandomError)?;
    Ok(salt)
}

/// Typed codes ignore case, spaces and dashes.
fn normalize(typed: &str) -> String {
    typed.chars().filter(|c| !c.is_whitespace() && *c != '-').flat_map(char::to_lowercase).collect()
}

fn hash(code: &str, salt: &[u8; 16]) -> String {
    let digest = Sha256::new().chain_update(salt).chain_update(normalize(code).as_bytes()).finalize();
    format!("{}${}", data_encoding::HEXLOWER.encode(salt), data_encoding::HEXLOWER.encode(&digest))
}

/// If `typed` matches a stored hash, remove that hash (single use) and
/// return how many are left.
pub fn consume(hashes: &mut Vec<String>, typed: &str) -> Option<usize> {
    let typed = normalize(typed);
    if typed.is_empty() {
        return None;
    }
    let mut found = None;
    for (i, stored) in hashes.iter().enumerate() {
        let Some((salt_hex, _)) = stored.split_once('$') else { continue };
        let Ok(salt) = data_encoding::HEXLOWER.decode(salt_hex.as_bytes()) else { continue };
        let Ok(salt) = <[u8; 16]>::try_from(salt) else { continue };
        // Compare every entry, so timing does not tell which one matched.
        if bool::from(hash(&typed, &salt).as_bytes().ct_eq(stored.as_bytes())) && found.is_none() {
            found = Some(i);
        }
    }
    let i = found?;
    hashes.remove(i);
    Some(hashes.len())
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
}
