//! Store maintenance run from the command line (`mfad migrate-store`,
//! `mfad rekey`), with mfad's configuration and keys.

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use mfa_shared::bypass::BypassRule;

use crate::crypto::{KeyId, Vault};
use crate::keys::{self, KEY_ID, PEPPER};
use crate::store::{Change, SqliteStore, Store, UserRecord};

/// Accounts read from the source per page.
const PAGE: usize = 1000;

/// What `mfad migrate-store` may do beyond copying.
#[derive(Debug, Clone, Copy, Default)]
pub struct Migration {
    /// Overwrite accounts the destination has already.
    pub replace: bool,
    /// Copy accounts whose recovery codes the destination cannot check
    /// (hashed under another host's former key) without those codes.
    pub drop_recovery_codes: bool,
}

/// Copy the SQLite store at `from` into `store` (the fleet's): every account
/// in one transaction, and the runtime IP rules the destination lacks. The
/// two must be sealed with the same key; accounts the destination has
/// already are refused, all of them named, and nothing is copied, unless
/// `replace`. Recovery codes are hashed with the store's pepper: a host's
/// store rekeyed to the fleet's key keeps its own, so its codes can move
/// only by being dropped (the users then get new ones).
pub fn migrate_store(vault: &Vault, store: &dyn Store, from: &Path, how: Migration) -> Result<String> {
    let source = SqliteStore::open_existing(from).with_context(|| format!("cannot open {}", from.display()))?;
    let shown = from.display();
    // A store from before keys were recorded is sealed with this host's key.
    let first = vault.key_ids().into_iter().next().context("no key")?;
    let source_key = source.get_meta(KEY_ID)?.unwrap_or(first.0);
    let fleet_key = store.get_meta(KEY_ID)?.context("the destination store has no key recorded")?;
    if source_key != fleet_key {
        bail!(
            "{shown} is sealed with key {source_key}, the destination with key {fleet_key}: re-seal the host's store with the fleet's key first (mfad rekey --new-key FLEET-KEY, with this host's SQLite store configured)"
        );
    }
    let source_pepper = match source.get_meta(PEPPER)? {
        Some(sealed) => keys::open_pepper(vault, &sealed)?,
        None => vault.derived_pepper(&KeyId(source_key)).context("the source's key is not held")?.clone(),
    };
    let mut records = read_all(&source)?;
    let with_codes = records.iter().filter(|r| !r.recovery_hashes.is_empty()).count();
    let foreign_codes = &source_pepper != vault.pepper() && with_codes > 0;
    if foreign_codes && !how.drop_recovery_codes {
        bail!(
            "{with_codes} accounts of {shown} have recovery codes hashed under this host's former key, which the fleet cannot check; nothing was copied. To copy them without those codes (each user then makes new ones with mfactl recovery-codes): mfad migrate-store --from {shown} --drop-recovery-codes"
        );
    }
    if foreign_codes {
        records.iter_mut().for_each(|r| r.recovery_hashes.clear());
    }
    let names: Vec<String> = records.iter().map(|r| r.user.clone()).collect();
    let present: std::collections::HashSet<String> = read_all(store)?.into_iter().map(|r| r.user).collect();
    let taken: Vec<&str> = names.iter().filter(|n| present.contains(*n)).map(String::as_str).collect();
    if !taken.is_empty() && !how.replace {
        bail!(
            "the destination has {} of these accounts already ({}); nothing was copied. To overwrite them with {shown}'s: mfad migrate-store --from {shown} --replace",
            taken.len(),
            taken.join(", ")
        );
    }
    let mut by_name: std::collections::HashMap<String, UserRecord> =
        records.into_iter().map(|r| (r.user.clone(), r)).collect();
    store.update_users(&names, &mut |name, _| by_name.remove(name).map_or(Change::Keep, Change::Put))?;
    let rules = copy_ip_rules(&source, store)?;
    let dropped = if foreign_codes {
        format!("; the recovery codes of {with_codes} accounts were dropped")
    } else {
        String::new()
    };
    Ok(format!(
        "copied {} accounts ({} replaced) and {rules} IP rules from {shown}{dropped}; point this host's [store] at the fleet database and restart mfad",
        names.len(),
        taken.len()
    ))
}

/// The runtime IP rules of `source` that `store` lacks, added; how many.
fn copy_ip_rules(source: &dyn Store, store: &dyn Store) -> Result<usize> {
    let present = store.list_ip_rules()?;
    let same = |a: &BypassRule, b: &BypassRule| {
        a.network == b.network && a.bypass_2fa == b.bypass_2fa && a.expires_at == b.expires_at
    };
    let mut added = 0;
    for rule in source.list_ip_rules()? {
        if !present.iter().any(|p| same(p, &rule)) {
            store.add_ip_rule(rule.network, rule.bypass_2fa, rule.expires_at)?;
            added += 1;
        }
    }
    Ok(added)
}

fn read_all(store: &dyn Store) -> Result<Vec<UserRecord>> {
    let mut all = Vec::new();
    loop {
        let page = store.list_users(all.last().map(|r: &UserRecord| r.user.as_str()), PAGE)?;
        if page.is_empty() {
            return Ok(all);
        }
        all.extend(page);
    }
}

/// `mfad rekey --new-key FILE`.
pub fn rekey(vault: &mut Vault, store: &dyn Store, new_key: &Path) -> Result<String> {
    let new = vault.accept_key_file(new_key).with_context(|| format!("cannot use {}", new_key.display()))?;
    let done = keys::rekey(vault, store, &new)?;
    Ok(format!(
        "re-sealed {} of {} accounts; the store's records are sealed with key {new}. Once every host runs with it as its key_file, drop the old key from accepted_key_files",
        done.resealed, done.records
    ))
}
