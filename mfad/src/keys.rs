//! Which key a store's records are sealed with, and moving them to another.
//!
//! The store records the id of its key ([`KEY_ID`]); a host whose key files
//! do not include it is refused at start, rather than failing at every
//! login. The recovery-code pepper is kept in the store too ([`PEPPER`]),
//! sealed with the store's key, so that re-sealing (`mfad rekey`) keeps
//! every recovery code valid. During a rekey [`REKEY_TO`] names the new
//! key: hosts that hold it seal with it, and a rekey cut short is resumed
//! by running it again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use mfa_shared::bypass::BypassRule;

use crate::crypto::{CryptoError, KeyId, Vault};
use crate::recovery::Pepper;
use crate::store::{Change, Store, StoreError, UserRecord};

pub const KEY_ID: &str = "key_id";
pub const REKEY_TO: &str = "rekey_to";
pub const PEPPER: &str = "pepper";

/// The associated data the pepper is sealed under: no account has this name.
const PEPPER_NAME: &str = "\0recovery-code pepper";

/// Records re-sealed per store transaction by [`rekey`].
const REKEY_PAGE: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the store's records are sealed with key {store}, and this host's key files hold {ours}: copy the fleet's key file here (the same file on every host)"
    )]
    WrongKey { store: KeyId, ours: String },
    #[error("the store's recovery-code key does not open with this host's key files ({0})")]
    Pepper(CryptoError),
    #[error("the store's recovery-code key is damaged")]
    PepperDamaged,
    #[error("a rekey to key {0} is in progress; finish it first: mfad rekey --new-key FILE-OF-KEY-{0}")]
    OtherRekey(KeyId),
    #[error("the store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Crypto(#[from] CryptoError),
}

fn ids(vault: &Vault) -> String {
    vault.key_ids().iter().map(|id| id.0.clone()).collect::<Vec<_>>().join(", ")
}

/// Match `vault` to `store` at start: the store takes the vault's first key
/// if it has none yet (a new store, or one from before keys were recorded);
/// the vault seals with the rekey's target if it holds it, else with the
/// store's key, and is refused when it holds neither. Then the pepper.
pub fn bind(vault: &Vault, store: &dyn Store) -> Result<(), KeyError> {
    let first = vault.key_ids().into_iter().next().ok_or(KeyError::PepperDamaged)?;
    let store_key = KeyId(store.init_meta(KEY_ID, &first.0)?);
    match sealing_key(vault, store)? {
        Some(id) => {
            vault.seal_with(&id);
        }
        None => return Err(KeyError::WrongKey { store: store_key, ours: ids(vault) }),
    }
    let pepper = match store.get_meta(PEPPER)? {
        Some(sealed) => sealed,
        None => {
            // The pepper recovery codes were hashed with so far.
            let derived = vault
                .derived_pepper(&store_key)
                .ok_or_else(|| KeyError::WrongKey { store: store_key.clone(), ours: ids(vault) })?
                .clone();
            store.init_meta(PEPPER, &seal_pepper(vault, &derived)?)?
        }
    };
    let pepper = open_pepper(vault, &pepper)?;
    vault.set_pepper(pepper);
    Ok(())
}

/// The key to seal with now: the target of a rekey in progress if held,
/// else the store's key if held. Read at every enrollment, so that hosts
/// started before a rekey seal with the new key once it has begun.
pub fn sealing_key(vault: &Vault, store: &dyn Store) -> Result<Option<KeyId>, StoreError> {
    let held = vault.key_ids();
    for name in [REKEY_TO, KEY_ID] {
        if let Some(id) = store.get_meta(name)?.map(KeyId).filter(|id| held.contains(id)) {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

fn seal_pepper(vault: &Vault, pepper: &Pepper) -> Result<String, CryptoError> {
    Ok(data_encoding::HEXLOWER.encode(&vault.seal(PEPPER_NAME, pepper.as_bytes())?))
}

/// The pepper sealed (hex) in a store.
pub fn open_pepper(vault: &Vault, sealed_hex: &str) -> Result<Pepper, KeyError> {
    let sealed = data_encoding::HEXLOWER.decode(sealed_hex.as_bytes()).map_err(|_| KeyError::PepperDamaged)?;
    let bytes = vault.open(PEPPER_NAME, &sealed).map_err(KeyError::Pepper)?;
    Pepper::from_bytes(&bytes).ok_or(KeyError::PepperDamaged)
}

/// What a rekey did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rekeyed {
    /// Records whose secrets were re-sealed (others were already).
    pub resealed: u64,
    pub records: u64,
}

/// Re-seal every secret in `store` with key `new` (held by `vault`, which
/// was bound to the store), then record it as the store's key. Each record
/// is re-sealed in its own transaction, so a rekey cut short loses nothing
/// and is finished by running it again; hosts running meanwhile open
/// records sealed with either key.
pub fn rekey(vault: &Vault, store: &dyn Store, new: &KeyId) -> Result<Rekeyed, KeyError> {
    if let Some(other) = store.get_meta(REKEY_TO)?.map(KeyId).filter(|target| target != new) {
        return Err(KeyError::OtherRekey(other));
    }
    if !vault.seal_with(new) {
        return Err(KeyError::WrongKey { store: new.clone(), ours: ids(vault) });
    }
    store.set_meta(REKEY_TO, Some(&new.0))?;
    store.set_meta(PEPPER, Some(&seal_pepper(vault, vault.pepper())?))?;
    let mut done = Rekeyed::default();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_users(after.as_deref(), REKEY_PAGE)?;
        let Some(last) = page.last() else { break };
        after = Some(last.user.clone());
        for record in &page {
            let mut failure = None;
            let mut resealed = false;
            store.update_user(&record.user, &mut |current| {
                // Called again on a record changed meanwhile: only the last
                // call's failure counts.
                failure = None;
                let Some(current) = current else { return Change::Keep };
                let mut next = current.clone();
                let user = current.user.clone();
                let mut changed = false;
                for device in [next.device.as_mut(), next.pending.as_mut()].into_iter().flatten() {
                    match reseal(vault, &user, &device.sealed_secret, new) {
                        Ok(Some(sealed)) => {
                            device.sealed_secret = sealed;
                            changed = true;
                        }
                        Ok(None) => {}
                        Err(err) => failure = Some(err),
                    }
                }
                resealed = changed;
                if changed && failure.is_none() { Change::Put(next) } else { Change::Keep }
            })?;
            if let Some(err) = failure {
                return Err(KeyError::Crypto(err));
            }
            done.records += 1;
            done.resealed += u64::from(resealed);
        }
    }
    store.set_meta(KEY_ID, Some(&new.0))?;
    store.set_meta(REKEY_TO, None)?;
    Ok(done)
}

/// The secret sealed with `new`, or None when it is already.
fn reseal(vault: &Vault, user: &str, sealed: &[u8], new: &KeyId) -> Result<Option<Vec<u8>>, CryptoError> {
    let (secret, id) = vault.open_with_id(user, sealed)?;
    if id == new {
        return Ok(None);
    }
    vault.seal(user, &secret).map(Some)
}

/// A store whose keys are checked ([`bind`]) before it is used: at start
/// when it answers, else at the first request once it does (a host that
/// starts while the fleet's database is down serves what needs no store,
/// answers the rest `unavailable`, and checks its key when the database is
/// back). A host with the wrong key is then refused every request.
pub struct Keyed {
    store: Arc<dyn Store>,
    vault: Arc<Vault>,
    bound: AtomicBool,
    /// Why this host may not use the store, once known.
    refused: Mutex<Option<String>>,
}

impl Keyed {
    pub fn new(store: Arc<dyn Store>, vault: Arc<Vault>) -> Keyed {
        Keyed { store, vault, bound: AtomicBool::new(false), refused: Mutex::new(None) }
    }

    /// Check the keys now (at start).
    pub fn bind_now(&self) -> Result<(), KeyError> {
        bind(&self.vault, &*self.store)?;
        self.bound.store(true, Ordering::Release);
        Ok(())
    }

    fn ready(&self) -> Result<&dyn Store, StoreError> {
        if self.bound.load(Ordering::Acquire) {
            return Ok(&*self.store);
        }
        let mut refused = self.refused.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(why) = refused.as_ref() {
            return Err(StoreError::WrongKey(why.clone()));
        }
        if self.bound.load(Ordering::Acquire) {
            return Ok(&*self.store);
        }
        match self.bind_now() {
            Ok(()) => Ok(&*self.store),
            Err(KeyError::Store(err)) => Err(err),
            Err(err) => {
                let why = format!("this host may not use the store: {err}");
                *refused = Some(why.clone());
                Err(StoreError::WrongKey(why))
            }
        }
    }
}

impl Store for Keyed {
    fn get_user(&self, user: &str) -> Result<Option<UserRecord>, StoreError> {
        self.ready()?.get_user(user)
    }

    fn update_user(
        &self,
        user: &str,
        change: &mut (dyn FnMut(Option<&UserRecord>) -> Change + Send),
    ) -> Result<(), StoreError> {
        self.ready()?.update_user(user, change)
    }

    fn update_users(
        &self,
        users: &[String],
        change: &mut (dyn FnMut(&str, Option<&UserRecord>) -> Change + Send),
    ) -> Result<(), StoreError> {
        self.ready()?.update_users(users, change)
    }

    fn list_users(&self, after: Option<&str>, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        self.ready()?.list_users(after, limit)
    }

    fn add_ip_rule(&self, network: IpNet, bypass_2fa: bool, expires_at: Option<u64>) -> Result<i64, StoreError> {
        self.ready()?.add_ip_rule(network, bypass_2fa, expires_at)
    }

    fn list_ip_rules(&self) -> Result<Vec<BypassRule>, StoreError> {
        self.ready()?.list_ip_rules()
    }

    fn remove_ip_rule(&self, id: i64) -> Result<bool, StoreError> {
        self.ready()?.remove_ip_rule(id)
    }

    fn get_meta(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.ready()?.get_meta(name)
    }

    fn set_meta(&self, name: &str, value: Option<&str>) -> Result<(), StoreError> {
        self.ready()?.set_meta(name, value)
    }

    fn init_meta(&self, name: &str, value: &str) -> Result<String, StoreError> {
        self.ready()?.init_meta(name, value)
    }
}
