//! `mfad --check-config` and every (re)load: `Config::parse` on any text.
//! No panic; an error names a line of the text; a config that parses is
//! within the bounds `validate` promises and parses again to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mfa_shared::config::Config;

fuzz_target!(|text: &str| {
    match Config::parse(text) {
        Ok(config) => {
            assert!((6..=8).contains(&config.digits));
            assert!((1..=3600).contains(&config.period));
            assert!(config.totp_skew <= 10);
            assert!((1..=1000).contains(&config.hotp_window));
            assert!((1..=10).contains(&config.max_tries));
            assert!(config.max_connections >= 1);
            assert!(config.request_timeout.as_secs() >= 1);
            assert!(config.lockout.max_failures >= 1 && config.lockout.duration.as_secs() >= 1);
            assert!(!config.admin_group.is_empty());
            assert!(config.roles.iter().all(|role| !role.group.is_empty()));
            let again = Config::parse(text);
            assert_eq!(again.as_ref(), Ok(&config), "the same text parsed twice differs");
        }
        Err(err) => {
            // The message is what --check-config prints.
            let _ = err.to_string();
            let lines = text.matches('\n').count() + 1;
            assert!(err.line.is_none_or(|line| (1..=lines).contains(&line)), "error on line {:?} of {lines}", err.line);
        }
    }
});
