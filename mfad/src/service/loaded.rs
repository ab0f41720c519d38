//! The configuration in force: loaded at start, replaced by a reload, and
//! read once per request as a [`Snapshot`] so that a reload in the middle of
//! a request cannot mix two configs.

use std::collections::HashMap;
use std::sync::Arc;

use mfa_shared::bypass::BypassRule;
use mfa_shared::config::{BypassRuleEntry, Config};
use mfa_shared::protocol::{ErrorKind, Response};

use super::{Daemon, Peer, Reply, refuse};
use crate::audit::Severity;

/// What one request is answered from.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub config: Arc<Config>,
    /// The config file's bypass rules, with their expiry resolved.
    pub config_rules: Arc<[BypassRule]>,
    /// Unix time when the request arrived.
    pub now: u64,
}

/// The config in force, with when each config bypass rule was first loaded:
/// a rule's `timeout` counts from then, across reloads (a config management
/// tool rewriting the file must not keep renewing it).
#[derive(Debug)]
pub(super) struct Loaded {
    config: Arc<Config>,
    config_rules: Arc<[BypassRule]>,
    /// Entry (as [`entry_key`]) -> when it first appeared.
    first_seen: HashMap<String, u64>,
}

impl Loaded {
    pub(super) fn new(config: Config, previous: Option<&Loaded>, now: u64) -> Loaded {
        let first_seen: HashMap<String, u64> = config
            .bypass
            .rules
            .iter()
            .map(|entry| {
                let key = entry_key(entry);
                let since = previous.and_then(|p| p.first_seen.get(&key).copied()).unwrap_or(now);
                (key, since)
            })
            .collect();
        let config_rules = config
            .bypass
            .rules
            .iter()
            .map(|entry| entry.rule(first_seen.get(&entry_key(entry)).copied().unwrap_or(now)))
            .collect();
        Loaded { config: Arc::new(config), config_rules, first_seen }
    }
}

fn entry_key(entry: &BypassRuleEntry) -> String {
    format!("{} {} {:?}", entry.cidr, entry.bypass_2fa, entry.timeout.map(|t| t.as_secs()))
}

impl Daemon {
    fn loaded(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.loaded.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The config in force (for the server's limits).
    pub fn config(&self) -> Arc<Config> {
        self.loaded().config.clone()
    }

    /// Config and time for one request.
    pub fn snapshot(&self) -> Snapshot {
        let loaded = self.loaded();
        Snapshot { config: loaded.config.clone(), config_rules: loaded.config_rules.clone(), now: self.clock.now() }
    }

    /// Re-read the config file. A bad file is refused and the old config
    /// kept; either way the outcome is logged.
    pub fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.config_path else {
            return Err("no config file to reload".into());
        };
        let result = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|text| Config::parse(&text).map_err(|e| format!("{}: {e}", path.display())));
        let config = match result {
            Ok(config) => config,
            Err(err) => {
                self.audit.event(Severity::Warning, &format!("config reload refused, keeping the old config: {err}"));
                return Err(err);
            }
        };
        let old = self.config();
        if old.socket != config.socket || old.store != config.store {
            self.audit.event(
                Severity::Warning,
                "config reloaded; changes to socket and [store] take effect at the next restart",
            );
        } else {
            self.audit.event(Severity::Info, "config reloaded");
        }
        let mut loaded = self.loaded.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = Loaded::new(config, Some(&loaded), self.clock.now());
        *loaded = next;
        Ok(())
    }

    pub(super) fn reload_request(&self, at: &Snapshot, peer: &Peer) -> Reply {
        self.require_admin(at, peer)?;
        self.reload().map_err(|e| refuse(ErrorKind::Conflict, format!("config not reloaded: {e}")))?;
        Ok(Response::Ok { message: Some("config reloaded".into()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_rule_timeout_counts_from_its_first_load_across_reloads() {
        let text =
            "[bypass]\nenabled = true\n[[bypass.rule]]\ncidr = \"10.0.0.0/8\"\nbypass_2fa = true\ntimeout = \"1h\"\n";
        let first = Loaded::new(Config::parse(text).unwrap(), None, 1000);
        assert_eq!(first.config_rules[0].expires_at, Some(1000 + 3600));
        let reloaded = Loaded::new(Config::parse(text).unwrap(), Some(&first), 5000);
        assert_eq!(reloaded.config_rules[0].expires_at, Some(1000 + 3600));
        let changed = text.replace("1h", "2h");
        let renewed = Loaded::new(Config::parse(&changed).unwrap(), Some(&reloaded), 5000);
        assert_eq!(renewed.config_rules[0].expires_at, Some(5000 + 7200), "a changed rule is a new rule");
    }
}
