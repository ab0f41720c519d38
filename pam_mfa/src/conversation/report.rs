//! What the person and the log are told when a conversation ends.

use mfa_shared::{ErrorKind, Outcome};

use super::{AuthError, Context, FAILED_PREFIX, Log, LogLevel, PamCode, Prompter, UNAVAILABLE_PREFIX, debug};

pub(super) fn report<P, L>(
    ctx: &Context,
    result: &Result<Outcome, AuthError>,
    code: PamCode,
    prompter: &mut P,
    log: &mut L,
) where
    P: Prompter + ?Sized,
    L: Log + ?Sized,
{
    let who = format!("user {:?} service {:?}", ctx.login.user, ctx.login.service);
    match result {
        Ok(outcome) => {
            debug(ctx, log, || format!("{who}: outcome {outcome:?}, returning {}", code.name()));
        }
        Err(err) if err.is_unavailable() => {
            if code == PamCode::Ignore {
                log.log(
                    LogLevel::Warning,
                    &format!(
                        "{who}: mfad is unavailable ({err}); failmode=safe lets this login proceed without a second factor"
                    ),
                );
            } else {
                prompter.error(&format!("{UNAVAILABLE_PREFIX}{err}"));
                log.log(
                    LogLevel::Error,
                    &format!(
                        "{who}: mfad is unavailable ({err}); denying (failmode={}), returning {}",
                        ctx.options.failmode.as_str(),
                        code.name()
                    ),
                );
            }
        }
        Err(AuthError::Daemon { kind, message }) => {
            prompter.error(&format!("{FAILED_PREFIX}{message}"));
            let level = match kind {
                ErrorKind::InvalidCode => LogLevel::Info,
                ErrorKind::Busy => LogLevel::Warning,
                _ => LogLevel::Error,
            };
            log.log(level, &format!("{who}: mfad refused ({kind:?}: {message}), returning {}", code.name()));
        }
        Err(AuthError::AfterPrompt(err)) => {
            prompter.error(&format!("{FAILED_PREFIX}{err}"));
            log.log(
                LogLevel::Error,
                &format!(
                    "{who}: mfad failed after prompting ({err}); denying whatever the failmode, returning {}",
                    code.name()
                ),
            );
        }
        Err(err @ AuthError::Conversation(_)) => {
            log.log(LogLevel::Info, &format!("{who}: {err}, returning {}", code.name()));
        }
        Err(err) => {
            prompter.error("Two-factor authentication failed.");
            log.log(LogLevel::Error, &format!("{who}: {err}, returning {}", code.name()));
        }
    }
}
