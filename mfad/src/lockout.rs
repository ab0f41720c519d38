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

/// The end of the one-answer services' lock in force at `now`, if any.
pub fn one_answer_locked_until(record: &UserRecord, now: u64) -> Option<u64> {
    record.one_answer_locked_until.filter(|&until| until > now)
}

/// Which count a wrong code goes to: the account's, shared by every code
/// check, or that of the one-answer services (`forward_pass`), whose codes
/// are checked before the password: anyone who knows a user name can fail
/// those, so they lock only the one-answer services. Guessing through them
/// stays bounded by their own lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Account,
    OneAnswer,
}

/// Before a code check: `Err(until)` while a lock is in force (the
/// account's always applies; the one-answer lock to its own count); a lock
/// that has lapsed is forgotten and its count starts afresh.
pub fn admit(record: &mut UserRecord, count: Count, now: u64) -> Result<(), u64> {
    admit_one(&mut record.failures, &mut record.locked_until, now)?;
    match count {
        Count::Account => Ok(()),
        Count::OneAnswer => admit_one(&mut record.one_answer_failures, &mut record.one_answer_locked_until, now),
    }
}

fn admit_one(failures: &mut u32, locked_until: &mut Option<u64>, now: u64) -> Result<(), u64> {
    if let Some(until) = locked_until.filter(|&until| until > now) {
        return Err(until);
    }
    if locked_until.take().is_some() {
        *failures = 0;
    }
    Ok(())
}

/// Count a wrong code; true when it locked (the account, or the one-answer
/// services).
pub fn count_failure(record: &mut UserRecord, count: Count, lockout: &LockoutConfig, now: u64) -> bool {
    let (failures, locked_until) = match count {
        Count::Account => {
            // The adaptive level asks everywhere after a wrong code; not
            // after one that anyone could send.
            record.failed_since_success = true;
            (&mut record.failures, &mut record.locked_until)
        }
        Count::OneAnswer => (&mut record.one_answer_failures, &mut record.one_answer_locked_until),
    };
    *failures = failures.saturating_add(1);
    let locked = *failures >= lockout.max_failures;
    if locked {
        *locked_until = Some(now.saturating_add(lockout.duration.as_secs()));
    }
    locked
}

/// A code was accepted: both counts start afresh (whoever has the device
/// may end a lock that has not yet happened, never one in force).
pub fn reset(record: &mut UserRecord) {
    record.failures = 0;
    record.one_answer_failures = 0;
}

/// An administrator's unlock: no lock, no count.
pub fn unlock(record: &mut UserRecord) {
    record.failures = 0;
    record.locked_until = None;
    record.one_answer_failures = 0;
    record.one_answer_locked_until = None;
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
            assert!(!count_failure(&mut record, Count::Account, &lockout, 100), "failure {n}");
            assert_eq!(admit(&mut record, Count::Account, 100), Ok(()));
        }
        assert!(count_failure(&mut record, Count::Account, &lockout, 100));
        let until = 100 + lockout.duration.as_secs();
        assert_eq!(locked_until(&record, 100), Some(until));
        assert_eq!(admit(&mut record, Count::Account, until - 1), Err(until));
        // The account's lock holds for the one-answer services too.
        assert_eq!(admit(&mut record, Count::OneAnswer, until - 1), Err(until));
        // Lapsed: admitted, counting afresh.
        assert_eq!(admit(&mut record, Count::Account, until), Ok(()));
        assert_eq!((record.failures, record.locked_until), (0, None));
        count_failure(&mut record, Count::Account, &lockout, until);
        unlock(&mut record);
        assert_eq!((record.failures, record.locked_until), (0, None));
    }

    #[test]
    fn one_answer_failures_lock_only_the_one_answer_services() {
        let lockout = LockoutConfig::default();
        let mut record = UserRecord::new("alice");
        for _ in 1..lockout.max_failures {
            assert!(!count_failure(&mut record, Count::OneAnswer, &lockout, 100));
        }
        assert!(count_failure(&mut record, Count::OneAnswer, &lockout, 100));
        let until = 100 + lockout.duration.as_secs();
        assert_eq!(admit(&mut record, Count::OneAnswer, 101), Err(until));
        assert_eq!(admit(&mut record, Count::Account, 101), Ok(()));
        assert_eq!((record.failures, record.failed_since_success, locked_until(&record, 101)), (0, false, None));
        assert_eq!(one_answer_locked_until(&record, 101), Some(until));
        assert_eq!(admit(&mut record, Count::OneAnswer, until), Ok(()));
        assert_eq!((record.one_answer_failures, record.one_answer_locked_until), (0, None));
        count_failure(&mut record, Count::OneAnswer, &lockout, until);
        unlock(&mut record);
        assert_eq!((record.one_answer_failures, record.one_answer_locked_until), (0, None));
    }
}
