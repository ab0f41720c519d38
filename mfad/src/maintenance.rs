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

/// Copy the SQLite store at `from` into `store` (the fleet's): every account
/// in one transaction, and the runtime IP rules the destination lacks. The
/// two must be sealed with the same key (and so share the recovery-code
/// pepper); accounts the destination has already are refused, all of them
/// named, and nothing is copied, unless `replace`.
pub fn migrate_store(vault: &Vault, store: &dyn Store, from: &Path, replace: bool) -> Result<String> {
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
    // Recovery codes are hashed with the pepper: it must be the same.
    let source_pepper = match source.get_meta(PEPPER)? {
        Some(sealed) => keys::open_pepper(vault, &sealed)?,
        None => vault.derived_pepper(&KeyId(source_key)).context("the source's key is not held")?.clone(),
    };
    if &source_pepper != vault.pepper() {
        bail!("{shown} keeps its recovery codes under another key than the destination; they would not match there");
    }
    let records = read_all(&source)?;
    let names: Vec<String> = records.iter().map(|r| r.user.clone()).collect();
    let present: std::collections::HashSet<String> = read_all(store)?.into_iter().map(|r| r.user).collect();
    let taken: Vec<&str> = names.iter().filter(|n| present.contains(*n)).map(String::as_str).collect();
    if !taken.is_empty() && !replace {
        bail!(
            "the destination has {} of these accounts already ({}); nothing was copied. To overwrite them with {shown}'s: mfad migrate-store --from {shown} --replace",
            taken.len(),
            taken.join(", ")
        );
    }
    let mut by_name: std::collections::HashMap<String, UserRecord> =
        records.into_iter().map(|r| (r.user.clone(), r)).collect();
    store.update_users(&names, &mut |name, _| by_name.remove(name).map_or(Change::Keep, Change::Put))?;
    let rules_present = store.list_ip_rules()?;
    let same = |a: &BypassRule, b: &BypassRule| {
        a.network == b.network && a.bypass_2fa == b.bypass_2fa && a.expires_at == b.expires_at
    };
    let mut rules = 0;
    for rule in source.list_ip_rules()? {
        if !rules_present.iter().any(|p| same(p, &rule)) {
            store.add_ip_rule(rule.network, rule.bypass_2fa, rule.expires_at)?;
            rules += 1;
        }
    }
    Ok(format!(
        "copied {} accounts ({} replaced) and {rules} IP rules from {shown}; point this host's [store] at the fleet database and restart mfad",
        names.len(),
        taken.len()
    ))
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
