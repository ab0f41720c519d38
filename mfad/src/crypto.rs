//! Secrets at rest: XChaCha20-Poly1305 with a key file, each ciphertext bound
//! to its user name (associated data), so a sealed secret copied to another
//! user's record does not open.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key as Key_, XChaCha20Poly1305, XNonce};
use sha2::Digest;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use zeroize::Zeroizing;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const AAD_PREFIX: &[u8] = b"mfad-secret-v1:";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("key file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "key file {0} is a symbolic link, which mfad does not follow; replace the link with the key file itself (mode 0600, owned by the user mfad runs as)"
    )]
    Symlink(PathBuf),
    #[error(
        "key file {0} is not a regular file; move it aside and restore the key file from backup (or, only if no secret was ever stored with it, let mfad create a new one)"
    )]
    NotRegular(PathBuf),
    #[error("key file {path} is owned by uid {owner}, not by uid {euid} that mfad runs as; run: chown {euid} {path}")]
    Owner { path: PathBuf, owner: u32, euid: u32 },
    #[error("key file {0} is readable by group or others; run: chmod 600 {0}")]
    Permissions(PathBuf),
    #[error(
        "key file {path} is {size} bytes, not {KEY_LEN}: it is damaged or was never completely written. Restore it from backup; if no secret was ever stored with it (e.g. the first start was interrupted), delete it and mfad creates a new one"
    )]
    Malformed { path: PathBuf, size: u64 },
    #[error("the operating system gave no random bytes")]
    Random,
    #[error("a stored secret does not decrypt with this key file (wrong key, or the record was tampered with)")]
    Open,
    #[error("encryption failed")]
    Seal,
}

/// The public name of a key: the first 8 bytes of a hash of it, in hex.
/// Recorded in the store, so a host with another key is refused at start.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(pub String);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

struct Key {
    id: KeyId,
    cipher: XChaCha20Poly1305,
    /// The recovery-code pepper a store first sealed with this key uses.
    derived_pepper: crate::recovery::Pepper,
}

impl Key {
    fn new(key: &[u8; KEY_LEN]) -> Key {
        let digest = sha2::Sha256::new().chain_update(b"mfad key id v1\0").chain_update(key).finalize();
        Key {
            id: KeyId(data_encoding::HEXLOWER.encode(&digest[..8])),
            cipher: XChaCha20Poly1305::new(Key_::from_slice(key)),
            derived_pepper: crate::recovery::Pepper::derive(key),
        }
    }
}

/// The keys that seal and open secrets, and the key of recovery-code
/// hashes. Secrets are sealed with one key (the store's, see
/// [`crate::keys`]) and opened with any (during a key rotation records are
/// sealed with either). Its Debug shows nothing.
pub struct Vault {
    keys: Vec<Key>,
    /// Index in `keys` of the key that seals.
    sealing: AtomicUsize,
    /// The store's recovery-code pepper once read from it (see
    /// [`crate::keys::bind`]); until then the first key's.
    pepper: OnceLock<crate::recovery::Pepper>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Vault(<key>)")
    }
}

impl Vault {
    pub fn from_key(key: &[u8; KEY_LEN]) -> Self {
        let key = Key::new(key);
        Vault { keys: vec![key], sealing: AtomicUsize::new(0), pepper: OnceLock::new() }
    }

    /// The key of recovery-code hashes.
    pub fn pepper(&self) -> &crate::recovery::Pepper {
        self.pepper.get().unwrap_or(&self.keys[0].derived_pepper)
    }

    /// Use the store's pepper from now on (set once).
    pub fn set_pepper(&self, pepper: crate::recovery::Pepper) {
        let _ = self.pepper.set(pepper);
    }

    fn sealing(&self) -> &Key {
        &self.keys[self.sealing.load(Ordering::Relaxed).min(self.keys.len() - 1)]
    }

    /// The pepper a store first sealed with key `id` uses, if it is ours.
    pub fn derived_pepper(&self, id: &KeyId) -> Option<&crate::recovery::Pepper> {
        self.keys.iter().find(|k| k.id == *id).map(|k| &k.derived_pepper)
    }

    /// Open the key file, creating it (mode 0600, fresh random key) when it
    /// does not exist. The file is opened without following a symbolic link
    /// and the checks (a regular file of 32 bytes, owned by the effective
    /// uid, no access for group or others) are made on the opened file, so
    /// nothing can be swapped in between check and read.
    pub fn load_or_create(path: &Path) -> Result<Self, CryptoError> {
        match read_key(path) {
            Err(CryptoError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => create_key(path),
            other => other.map(|key| Vault::from_key(&key)),
        }
    }

    /// Add the key in `path` (which must exist, checked as the key file is)
    /// as one that opens secrets. Returns its id.
    pub fn accept_key_file(&mut self, path: &Path) -> Result<KeyId, CryptoError> {
        let key = Key::new(&*read_key(path)?);
        let id = key.id.clone();
        if !self.keys.iter().any(|k| k.id == id) {
            self.keys.push(key);
        }
        Ok(id)
    }

    /// The ids of the keys held, the key file's first.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(|k| k.id.clone()).collect()
    }

    pub fn sealing_key(&self) -> &KeyId {
        &self.sealing().id
    }

    /// Seal with key `id` from now on; false when it is not held.
    pub fn seal_with(&self, id: &KeyId) -> bool {
        match self.keys.iter().position(|k| k.id == *id) {
            Some(i) => {
                self.sealing.store(i, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// nonce || ciphertext, bound to `user`, with the sealing key.
    pub fn seal(&self, user: &str, secret: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.seal_using(&self.sealing().id, user, secret)
    }

    /// [`Vault::seal`] with key `id`.
    pub fn seal_using(&self, id: &KeyId, user: &str, secret: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let key = self.keys.iter().find(|k| k.id == *id).ok_or(CryptoError::Seal)?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::getrandom(&mut nonce).map_err(|_| CryptoError::Random)?;
        let aad = [AAD_PREFIX, user.as_bytes()].concat();
        let ciphertext = key
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: secret, aad: &aad })
            .map_err(|_| CryptoError::Seal)?;
        Ok([&nonce[..], &ciphertext].concat())
    }

    pub fn open(&self, user: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.open_with_id(user, sealed).map(|(secret, _)| secret)
    }

    /// The secret, and the id of the key that opened it.
    pub fn open_with_id(&self, user: &str, sealed: &[u8]) -> Result<(Zeroizing<Vec<u8>>, &KeyId), CryptoError> {
        if sealed.len() < NONCE_LEN {
            return Err(CryptoError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let aad = [AAD_PREFIX, user.as_bytes()].concat();
        // The sealing key first: it opens all but records left from a rotation.
        let order = std::iter::once(self.sealing()).chain(self.keys.iter());
        for key in order {
            if let Ok(secret) = key.cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad }) {
                return Ok((Zeroizing::new(secret), &key.id));
            }
        }
        Err(CryptoError::Open)
    }
}

/// The key in `path`, read through one descriptor opened with O_NOFOLLOW
/// (and O_NONBLOCK, so a FIFO cannot hang the start) and checked by fstat.
fn read_key(path: &Path) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let io_err = |source| CryptoError::Io { path: path.to_path_buf(), source };
    let mut file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path) {
        Ok(file) => file,
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => return Err(CryptoError::Symlink(path.to_path_buf())),
        Err(err) => return Err(io_err(err)),
    };
    let meta = file.metadata().map_err(io_err)?;
    check_key_metadata(path, &meta, nix::unistd::geteuid().as_raw())?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    file.read_exact(&mut key[..]).map_err(io_err)?;
    Ok(key)
}

/// Type, owner, mode and size of an opened key file.
fn check_key_metadata(path: &Path, meta: &fs::Metadata, euid: u32) -> Result<(), CryptoError> {
    if !meta.file_type().is_file() {
        return Err(CryptoError::NotRegular(path.to_path_buf()));
    }
    check_owner(path, meta.uid(), euid)?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(CryptoError::Permissions(path.to_path_buf()));
    }
    if meta.size() != KEY_LEN as u64 {
        return Err(CryptoError::Malformed { path: path.to_path_buf(), size: meta.size() });
    }
    Ok(())
}

/// The key file must belong to the user mfad runs as: another owner could
/// replace the key, or read it by changing its mode.
fn check_owner(path: &Path, owner: u32, euid: u32) -> Result<(), CryptoError> {
    if owner != euid {
        return Err(CryptoError::Owner { path: path.to_path_buf(), owner, euid });
    }
    Ok(())
}

/// Removes a temporary file when dropped (it is gone already on success).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Create the key file atomically: a fresh key is written to a temporary
/// file in the same directory (0600, fsynced), hard-linked to `path` (which
/// fails rather than replacing a file that appeared meanwhile), the
/// temporary name is removed and the directory fsynced. A crash leaves
/// either no key file or a complete one, never a short one.
fn create_key(path: &Path) -> Result<Vault, CryptoError> {
    let io_err = |source| CryptoError::Io { path: path.to_path_buf(), source };
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::getrandom(&mut key[..]).map_err(|_| CryptoError::Random)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name =
        path.file_name().ok_or_else(|| io_err(io::Error::new(io::ErrorKind::InvalidInput, "not a file name")))?;
    fs::create_dir_all(dir).map_err(io_err)?;
    let mut suffix = [0u8; 8];
    getrandom::getrandom(&mut suffix).map_err(|_| CryptoError::Random)?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".tmp-{}", data_encoding::HEXLOWER.encode(&suffix)));
    let temp = TempFile(dir.join(temp_name));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temp.0)
        .map_err(io_err)?;
    // 0600 whatever the umask.
    file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    file.write_all(&key[..]).and_then(|_| file.sync_all()).map_err(io_err)?;
    drop(file);
    match fs::hard_link(&temp.0, path) {
        Ok(()) => {}
        // Another mfad created it first: use that one.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            drop(temp);
            return read_key(path).map(|key| Vault::from_key(&key));
        }
        Err(err) => return Err(io_err(err)),
    }
    drop(temp);
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
    Ok(Vault::from_key(&key))
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

    #[test]
    fn symlinked_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.key");
        Vault::load_or_create(&real).unwrap();
        let link = dir.path().join("secret.key");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = Vault::load_or_create(&link).unwrap_err();
        assert!(matches!(err, CryptoError::Symlink(_)), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // A dangling link is not followed to create a key elsewhere.
        let target = dir.path().join("elsewhere.key");
        let dangling = dir.path().join("dangling.key");
        std::os::unix::fs::symlink(&target, &dangling).unwrap();
        let err = Vault::load_or_create(&dangling).unwrap_err();
        assert!(matches!(err, CryptoError::Symlink(_)), "{err}");
        assert!(!target.exists());
    }

    #[test]
    fn key_file_must_belong_to_the_effective_user() {
        let path = Path::new("/etc/mfad/secret.key");
        assert!(check_owner(path, 0, 0).is_ok());
        assert!(check_owner(path, 1000, 1000).is_ok());
        let err = check_owner(path, 1000, 0).unwrap_err();
        assert!(matches!(err, CryptoError::Owner { owner: 1000, euid: 0, .. }), "{err}");
        assert!(err.to_string().contains("run: chown 0 /etc/mfad/secret.key"), "{err}");
        // The check is made on the opened file's metadata.
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("secret.key");
        Vault::load_or_create(&key).unwrap();
        let meta = fs::File::open(&key).unwrap().metadata().unwrap();
        assert!(check_key_metadata(&key, &meta, meta.uid()).is_ok());
        let err = check_key_metadata(&key, &meta, meta.uid().wrapping_add(1)).unwrap_err();
        assert!(matches!(err, CryptoError::Owner { .. }), "{err}");
    }

    #[test]
    fn empty_or_short_key_file_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        for content in [&b""[..], &b"short"[..], &[0u8; KEY_LEN + 1][..]] {
            let _ = fs::remove_file(&path);
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .unwrap()
                .write_all(content)
                .unwrap();
            let err = Vault::load_or_create(&path).unwrap_err();
            assert!(matches!(err, CryptoError::Malformed { size, .. } if size == content.len() as u64), "{err}");
            let text = err.to_string();
            assert!(text.contains(&format!("{} bytes, not 32", content.len())), "{text}");
            assert!(text.contains("Restore it from backup") && text.contains("delete it"), "{text}");
            // Never replaced behind the admin's back.
            assert_eq!(fs::read(&path).unwrap(), content);
        }
    }

    #[test]
    fn a_directory_or_fifo_is_not_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("secret.key");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o700)).unwrap();
        let err = Vault::load_or_create(&sub).unwrap_err();
        assert!(matches!(err, CryptoError::NotRegular(_)), "{err}");
        let fifo = dir.path().join("fifo.key");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Opened without blocking, then refused.
        let err = Vault::load_or_create(&fifo).unwrap_err();
        assert!(matches!(err, CryptoError::NotRegular(_)), "{err}");
    }

    #[test]
    fn creation_is_atomic_and_never_replaces_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let first = Vault::load_or_create(&path).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret.key")], "no temporary file left");
        let sealed = first.seal("alice", b"x").unwrap();
        // As when another mfad created the file between our look and our
        // link: its key is used, not replaced.
        let second = create_key(&path).unwrap();
        assert_eq!(&second.open("alice", &sealed).unwrap()[..], b"x");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
