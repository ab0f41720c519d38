//! pam_mfa: the PAM module of the two-factor system.
//!
//! It holds no secret and makes no decision beyond its failmode: it sends the
//! PAM items to mfad and relays the conversation mfad runs. This file is the
//! FFI shim; the logic is in [`conversation`], tested without libpam.
//!
//! ```text
//! auth required pam_mfa.so [socket=PATH] [failmode=secure|safe] [elevation=SVC1,SVC2]
//!                          [timeout=SECONDS] [debug]
//!                          [forward_pass [prompt=TEXT] [try_first_pass|use_first_pass]]
//! ```
//!
//! The failmode applies only when mfad cannot be reached (or its socket is
//! not served by root); once mfad has prompted, any failure denies the login.
//! `elevation=` adds services to the built-in elevation list
//! ([`mfa_shared::DEFAULT_ELEVATION_SERVICES`], mfad's default list: sudo,
//! sudo-i, su, su-l, pkexec, polkit-1, doas) that stay closed in `failmode=safe`. See
//! [`options`] for every option.

pub mod conversation;
pub mod one_field;
pub mod options;
mod pam_prompter;
mod syslog;

use std::ffi::CStr;

use libc::{c_int, c_void};
use zeroize::Zeroizing;

use pam::constants::{PAM_SILENT, PamFlag, PamResultCode};
use pam::conv::Conv;
use pam::items::{AuthTok, RHost, RUser, Service, Tty};
use pam::module::{PamHandle, PamHooks};

pub use conversation::{
    AuthError, Context, ConversationError, Log, LogLevel, Login, PamCode, Prompter, Transport, authenticate,
    authenticate_with, converse, pam_code,
};
pub use one_field::{Secret, StackPassword};
pub use options::{FailMode, Options};

use crate::pam_prompter::PamPrompter;
use crate::syslog::Syslog;

pub struct PamMfa;
pam::pam_hooks!(PamMfa);

impl PamHooks for PamMfa {
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        // Borrowed, not copied, when valid UTF-8 (always, in practice).
        let args: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        let (options, warnings) = Options::parse(&args);

        // pam_get_user first (it may prompt); the other items borrow the handle.
        let user = match pamh.get_user(None) {
            Ok(user) => user,
            Err(code) => {
                let service = item::<Service>(pamh).unwrap_or_default();
                Syslog::new(&service).log(LogLevel::Error, &format!("cannot get the user name: {code:?}"));
                return code;
            }
        };
        let Some(service) = item::<Service>(pamh) else {
            let mut log = Syslog::new("?");
            log_warnings(&mut log, &warnings);
            log.log(LogLevel::Error, "the application set no PAM service name");
            return PamResultCode::PAM_SERVICE_ERR;
        };
        let login =
            Login { service, user, ruser: item::<RUser>(pamh), rhost: item::<RHost>(pamh), tty: item::<Tty>(pamh) };
        let ctx = Context { options, login, silent: flags & PAM_SILENT != 0 };
        let mut log = Syslog::new(&ctx.login.service);
        log_warnings(&mut log, &warnings);

        // A copy, wiped when dropped: the conversation borrows the handle.
        let found = pamh.get_item::<AuthTok>().ok().flatten().map(|tok| Secret::new(tok.as_bytes().to_vec()));
        let mut stack = StackPassword::found(found);
        let code = {
            let conv = pamh.get_item::<Conv>().ok().flatten();
            let mut prompter = PamPrompter::new(conv);
            authenticate(&ctx, &mut stack, &mut prompter, &mut log)
        };
        // forward_pass: the password before the verified code, for the next
        // module, exactly as typed.
        if let (PamCode::Success, Some(password)) = (code, stack.hand_on.take())
            && let Err(rc) = set_authtok(pamh, &password)
        {
            log.log(LogLevel::Error, &format!("cannot set PAM_AUTHTOK for the next module (error {rc})"));
            return PamResultCode::PAM_AUTH_ERR;
        }
        to_pam(code)
    }

    /// There are no credentials to set; the default PAM_IGNORE would make
    /// sshd accept the login and then drop the session.
    fn sm_setcred(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_SUCCESS
    }

    /// An `auth` module only: on an `account` line it has no say.
    fn acct_mgmt(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_IGNORE
    }

    /// Not a `password` module: never changes or blocks a password change.
    fn sm_chauthtok(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_IGNORE
    }

    fn sm_open_session(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_IGNORE
    }

    fn sm_close_session(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_IGNORE
    }
}

unsafe extern "C" {
    /// libpam's, which pam-bindings wraps only for items it can construct
    /// (its AuthTok cannot be made from our own bytes).
    fn pam_set_item(pamh: *mut PamHandle, item_type: c_int, item: *const c_void) -> c_int;
}

/// Linux-PAM's item number of PAM_AUTHTOK (`_pam_types.h`).
const PAM_AUTHTOK: c_int = 6;

/// Set PAM_AUTHTOK; libpam keeps its own copy (and wipes the one it
/// replaces), ours is wiped here. Err with libpam's code.
fn set_authtok(pamh: &mut PamHandle, password: &Secret) -> Result<(), c_int> {
    let bytes = password.as_bytes();
    if bytes.contains(&0) {
        return Err(PamResultCode::PAM_BUF_ERR as c_int);
    }
    let mut c_string = Zeroizing::new(Vec::with_capacity(bytes.len() + 1));
    c_string.extend_from_slice(bytes);
    c_string.push(0);
    // SAFETY: a valid handle from libpam, and a NUL-terminated string that
    // outlives the call (libpam copies it).
    let rc = unsafe { pam_set_item(pamh, PAM_AUTHTOK, c_string.as_ptr().cast()) };
    if rc == 0 { Ok(()) } else { Err(rc) }
}

/// One line for each module argument that was ignored.
fn log_warnings(log: &mut Syslog<'_>, warnings: &[String]) {
    for warning in warnings {
        log.log(LogLevel::Warning, warning);
    }
}

/// A string item, owned, with an empty one read as unset.
fn item<'a, T>(pamh: &'a PamHandle) -> Option<String>
where
    T: pam::items::Item<'a> + std::ops::Deref<Target = &'a CStr>,
{
    let value = pamh.get_item::<T>().ok().flatten()?;
    conversation::non_empty(Some(value.to_string_lossy().into_owned()))
}

fn to_pam(code: PamCode) -> PamResultCode {
    match code {
        PamCode::Success => PamResultCode::PAM_SUCCESS,
        PamCode::Ignore => PamResultCode::PAM_IGNORE,
        PamCode::AuthErr => PamResultCode::PAM_AUTH_ERR,
        PamCode::MaxTries => PamResultCode::PAM_MAXTRIES,
        PamCode::PermDenied => PamResultCode::PAM_PERM_DENIED,
        PamCode::AuthInfoUnavail => PamResultCode::PAM_AUTHINFO_UNAVAIL,
        PamCode::ConvErr => PamResultCode::PAM_CONV_ERR,
        PamCode::ServiceErr => PamResultCode::PAM_SERVICE_ERR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_onto_the_linux_pam_values() {
        for code in [
            PamCode::Success,
            PamCode::Ignore,
            PamCode::AuthErr,
            PamCode::MaxTries,
            PamCode::PermDenied,
            PamCode::AuthInfoUnavail,
            PamCode::ConvErr,
            PamCode::ServiceErr,
        ] {
            assert_eq!(to_pam(code) as i32, code.as_raw(), "{}", code.name());
        }
    }
}
