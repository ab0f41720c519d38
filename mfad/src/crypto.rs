//! Secrets at rest: XChaCha20-Poly1305 with a key file, each ciphertext bound
//! to its user name (associated data), so a sealed secret copied to another
//! user's record does not open.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const AAD_PREFIX: &[u8] = b"mfad-secret-v1:";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("key file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("key file {0} is readable by group or others; run: chmod 600 {0}")]
    Permissions(PathBuf),
    #[error("key file {0} is not a regular file of {KEY_LEN} bytes")]
    Malformed(PathBuf),
    #[error("the operating system gave no random bytes")]
    Random,
    #[error("a stored secret does not decrypt with this key file (wrong key, or the record was tampered with)")]
    Open,
    #[error("encryption failed")]
    Seal,
}

/// The key that seals and opens secrets. Its Debug shows nothing.
pub struct Vault {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(<key>)")
    }
}

impl Vault {
    pub fn from_key(key: &[u8; KEY_LEN]) -> Self {
        Vault { cipher: XChaCha20Poly1305::new(Key::from_slice(key)) }
    }

    /// Open the key file, creating it (mode 0600, fresh random key) when it
    /// does not exist; refuse one that group or others can read.
    pub fn load_or_create(path: &Path) -> Result<Self, CryptoError> {
        let io_err = |source| CryptoError::Io { path: path.to_path_buf(), source };
        match fs::symlink_metadata(path) {
            Ok(meta) => {
                if !meta.is_file() || meta.size() != KEY_LEN as u64 {
                    return Err(CryptoError::Malformed(path.to_path_buf()));
                }
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(CryptoError::Permissions(path.to_path_buf()));
                }
                let mut key = Zeroizing::new([0u8; KEY_LEN]);
                fs::File::open(path).and_then(|mut f| f.read_exact(&mut key[..])).map_err(io_err)?;
                Ok(Vault::from_key(&key))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                let mut key = Zeroizing::new([0u8; KEY_LEN]);
                getrandom::getrandom(&mut key[..]).map_err(|_| CryptoError::Random)?;
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(io_err)?;
                }
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io_err)?;
                file.write_all(&key[..]).and_then(|_| file.sync_all()).map_err(io_err)?;
                Ok(Vault::from_key(&key))
            }
            Err(err) => Err(io_err(err)),
        }
    }

    /// nonce || ciphertext, bound to `user`.
    pub fn seal(&self, user: &str, secret: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|_| CryptoError::Random)?;
        let aad = [AAD_PREFIX, user.as_bytes()].concat();
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: secret, aad: &aad })
            .map_err(|_| CryptoError::Seal)?;
        Ok([&nonce[..], &ciphertext].concat())
    }

    pub fn open(&self, user: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let aad = [AAD_PREFIX, user.as_bytes()].concat();
        self.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad })
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_bound_to_user() {
        let vault = Vault::from_key(&[7u8; 32]);
        let sealed = vault.seal("alice", b"secret bytes").unwrap();
        assert_eq!(&vault.open("alice", &sealed).unwrap()[..], b"secret bytes");
        assert!(vault.open("bob", &sealed).is_err());
        let other = Vault::from_key(&[8u8; 32]);
        assert!(other.open("alice", &sealed).is_err());
    }

    #[test]
    fn key_file_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret.key");
        let first = Vault::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = first.seal("alice", b"x").unwrap();
        let second = Vault::load_or_create(&path).unwrap();
        assert_eq!(&second.open("alice", &sealed).unwrap()[..], b"x");
    }

    #[test]
    fn readable_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        Vault::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = Vault::load_or_create(&path).unwrap_err();
        assert!(matches!(err, CryptoError::Permissions(_)), "{err}");
        assert!(err.to_string().contains("chmod 600"));
    }
}
