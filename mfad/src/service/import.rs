//! Bulk import (`mfactl user import`): records made from another tool's
//! secrets, written in one durable batch; accounts that already have a
//! device are refused unless replacing was asked for.

use std::collections::HashMap;

use mfa_shared::config::Config;
use mfa_shared::otp;
use mfa_shared::protocol::{ImportRefusal, ImportUser, OtpType, Response, is_valid_user_name};

use super::{Daemon, Peer, Reply, Snapshot};
use crate::crypto::KeyId;
use crate::recovery;
use crate::store::{Change, Device, UserRecord};

impl Daemon {
    pub(super) fn import_users(&self, at: &Snapshot, peer: &Peer, users: Vec<ImportUser>, replace: bool) -> Reply {
        self.require_admin(at, peer)?;
        let key = self.sealing_key()?;
        let mut refused = Vec::new();
        let mut records: HashMap<String, UserRecord> = HashMap::with_capacity(users.len());
        for mut import in users {
            // Under the account's canonical name, as a login will look it up.
            match self.resolve(&import.user) {
                Ok(identity) => import.user = identity.account,
                Err(err) => {
                    refused.push(ImportRefusal {
                        user: import.user.clone(),
                        reason: format!("account lookup failed: {err}"),
                    });
                    continue;
                }
            }
            match self.imported_record(&at.config, &import, &key, at.now) {
                Ok(record) => {
                    records.insert(import.user.clone(), record);
                }
                Err(reason) => refused.push(ImportRefusal { user: import.user.clone(), reason }),
            }
        }
        let names: Vec<String> = records.keys().cloned().collect();
        let mut imported = 0u64;
        let written = self.store.update_users(&names, &mut |user, current| {
            let Some(new) = records.get(user) else { return Change::Keep };
            match current {
                Some(existing) if existing.is_enrolled() && !replace => {
                    let reason = "already has a device (use --replace)".into();
                    refused.push(ImportRefusal { user: user.to_string(), reason });
                    Change::Keep
                }
                _ => {
                    imported += 1;
                    Change::Put(merge_import(user, current, new))
                }
            }
        });
        self.written(written)?;
        self.admin_event(peer, "-", &format!("imported {imported} accounts, refused {}", refused.len()));
        Ok(Response::Imported { imported, refused })
    }

    /// The record an import creates: the secret sealed, defaults filled in.
    fn imported_record(
        &self,
        config: &Config,
        import: &ImportUser,
        key: &KeyId,
        now: u64,
    ) -> Result<UserRecord, String> {
        if !is_valid_user_name(&import.user) {
            return Err("invalid user name".into());
        }
        let secret = zeroize::Zeroizing::new(
            otp::base32_decode(import.secret.expose()).map_err(|_| "the secret is not base32".to_string())?,
        );
        if secret.len() < 10 {
            return Err("the secret is shorter than 80 bits".into());
        }
        let digits = import.digits.unwrap_or(config.digits);
        let period = import.period.unwrap_or(config.period);
        if !(6..=8).contains(&digits) || !(1..=3600).contains(&period) {
            return Err("digits must be 6-8 and period 1-3600 seconds".into());
        }
        let sealed = self.seal(key, &import.user, &secret).map_err(|refusal| refusal.message)?;
        let recovery_hashes = import
            .recovery_codes
            .iter()
            .map(|code| recovery::hash_existing(code, self.vault.pepper()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let mut record = UserRecord::new(&import.user);
        record.device = Some(Device {
            otp_type: import.otp_type,
            algorithm: import.algorithm.unwrap_or(config.algorithm),
            digits,
            period,
            sealed_secret: sealed,
            next_counter: import.counter,
            // Codes of earlier steps may have been used with the old tool.
            last_step: match import.otp_type {
                OtpType::Totp => otp::totp_step(now, period).checked_sub(1),
                OtpType::Hotp => None,
            },
            created_at: now,
        });
        record.level = import.level;
        record.recovery_hashes = recovery_hashes;
        Ok(record)
    }
}

/// An account's record after import: the imported device and recovery
/// codes; a set-up in progress and any approval are dropped; the level is
/// the imported one, else the account's own.
fn merge_import(user: &str, current: Option<&UserRecord>, new: &UserRecord) -> UserRecord {
    let mut record = current.cloned().unwrap_or_else(|| UserRecord::new(user));
    record.device = new.device.clone();
    record.pending = None;
    record.approved = false;
    record.recovery_hashes = new.recovery_hashes.clone();
    record.level = new.level.or(record.level);
    record
}
