//! Lockout (SPEC 5): wrong codes are counted per account; at `max_failures`
//! the account is locked for `duration`, or until an administrator unlocks
//! it; while it is locked even a right code is refused; a success resets
//! the count. Every place that checks a code goes through these functions.

use mfa_shared::config::LockoutConfig;

use crate::store::UserRecord;

/// The end of the lock in force at `now`, if any.
pub fn locked_until(record: &UserRecord, now: u64) -> Option<u64> {
    record.locked_until.filter(|&until| until > now)
}

/// Before a code check: `Err(until)` while a lock is in force; a lock that
/// has lapsed is forgotten and the count starts afresh.
pub fn admit(record: &mut UserRecord, now: u64) -> Result<(), u64> {
    if let Some(until) = locked_until(record, now) {
        return Err(until);
    }
    if record.locked_until.take().is_some() {
        record.failures = 0;
    }
    Ok(())
}

/// Count a wrong code; true when it locked the account.
pub fn count_failure(record: &mut UserRecord, lockout: &LockoutConfig, now: u64) -> bool {
    record.failures = record.failures.saturating_add(1);
    record.failed_since_success = true;
    let locked = record.failures >= lockout.max_failures;
    if locked {
        record.locked_until = Some(now.saturating_add(lockout.duration.as_secs()));
    }
    locked
}

/// An administrator's unlock: no lock, no count.
pub fn unlock(record: &mut UserRecord) {
    record.failures = 0;
    record.locked_until = None;
}

/// What the person sees while locked.
pub fn message(until: u64) -> String {
    format!(
        "Too many wrong codes: two-factor authentication is locked until {} UTC (an administrator can unlock it).",
        crate::timefmt::utc(until)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_at_max_failures_and_lapses() {
        let lockout = LockoutConfig::default();
        let mut record = UserRecord::new("alice");
        for n in 1..lockout.max_failures {
            assert!(!count_failure(&mut record, &lockout, 100), "failure {n}");
            assert_eq!(admit(&mut record, 100), Ok(()));
        }
        assert!(count_failure(&mut record, &lockout, 100));
        let until = 100 + lockout.duration.as_secs();
        assert_eq!(locked_until(&record, 100), Some(until));
        assert_eq!(admit(&mut record, until - 1), Err(until));
        // Lapsed: admitted, counting afresh.
        assert_eq!(admit(&mut record, until), Ok(()));
        assert_eq!((record.failures, record.locked_until), (0, None));
        count_failure(&mut record, &lockout, until);
        unlock(&mut record);
        assert_eq!((record.failures, record.locked_until), (0, None));
    }
}
