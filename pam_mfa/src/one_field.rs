//! Clients that answer one field only (IMAP/POP, FTP, VPN, RADIUS, web
//! applications calling PAM): every prompt gets the one password they have.
//!
//! - `forward_pass`: mfad answers a login that needs a code with
//!   [`AuthStep::CodeInAnswer`]; the module asks once (or takes PAM_AUTHTOK,
//!   see [`FirstPass`]) for the password followed by the code, splits the
//!   code off the end ([`split`]) and sends mfad only that. The password is
//!   handed on as PAM_AUTHTOK once mfad has verified the code; it never
//!   leaves the module. An answer that holds no code is sent as an empty
//!   one: a failure like a wrong code.
//! - Two prompts: an answer to a code prompt equal to the password the stack
//!   holds (PAM_AUTHTOK, compared in constant time) is never sent; mfad is
//!   told only that it was no code ([`Request::AuthNotACode`]) and counts
//!   nothing.
//!
//! [`AuthStep::CodeInAnswer`]: mfa_shared::AuthStep::CodeInAnswer

use std::fmt;

use mfa_shared::{Code, Request};
use zeroize::Zeroizing;

use crate::conversation::{AuthError, Context, ConversationError, Prompter};
use crate::options::FirstPass;

/// A recovery code as issued, `xxxxx-xxxxx`: its dash sits where an answer
/// ending in a code of 6 or more digits has a digit, so the two never mix.
const RECOVERY_FORM_LEN: usize = 11;
const RECOVERY_DASH_AT: usize = 5;

/// A password, or an answer that holds one: wiped from memory when
/// dropped, never shown by Debug.
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Equal to `other`, compared in constant time (for its length).
    pub fn same_as(&self, other: &[u8]) -> bool {
        let mine = self.as_bytes();
        let mut diff = u8::from(mine.len() != other.len());
        for i in 0..mine.len().max(other.len()) {
            let (a, b) = (mine.get(i).copied().unwrap_or(0), other.get(i).copied().unwrap_or(0));
            diff |= std::hint::black_box(a ^ b);
        }
        diff == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// PAM_AUTHTOK: as an earlier module left it, and what this module hands on
/// to the next one (set by the shim only after a verified code).
#[derive(Debug, Default)]
pub struct StackPassword {
    pub found: Option<Secret>,
    pub hand_on: Option<Secret>,
}

impl StackPassword {
    pub fn found(password: Option<Secret>) -> Self {
        StackPassword { found: password, hand_on: None }
    }
}

/// Split one answer into the code at its end and the password before it:
/// a recovery code in its issued form `xxxxx-xxxxx` (when `recovery`), else
/// the trailing `digits` digits. None when the answer ends in neither (too
/// short, or no digits at the end).
pub fn split(answer: &[u8], digits: u32, recovery: bool) -> Option<(Code, Secret)> {
    let at = answer.len().checked_sub(RECOVERY_FORM_LEN).filter(|&at| recovery && is_recovery_form(&answer[at..]));
    let at = match at {
        Some(at) => at,
        None => {
            let digits = usize::try_from(digits).ok().filter(|&d| d > 0)?;
            let at = answer.len().checked_sub(digits)?;
            answer[at..].iter().all(u8::is_ascii_digit).then_some(at)?
        }
    };
    // ASCII only from `at` on: a char boundary, and valid UTF-8.
    let code = String::from_utf8(answer[at..].to_vec()).ok()?;
    Some((Code::new(code), Secret::new(answer[..at].to_vec())))
}

fn is_recovery_form(tail: &[u8]) -> bool {
    tail.iter().enumerate().all(|(i, b)| if i == RECOVERY_DASH_AT { *b == b'-' } else { b.is_ascii_alphanumeric() })
}

/// forward_pass: get the one answer, keep the password for the next module
/// and return the request that carries only the code.
pub(crate) fn answer_in_one<P: Prompter + ?Sized>(
    ctx: &Context,
    session_id: String,
    digits: u32,
    recovery: bool,
    prompter: &mut P,
    stack: &mut StackPassword,
) -> Result<Request, AuthError> {
    let from_stack = match ctx.options.first_pass {
        FirstPass::Ask => None,
        FirstPass::Try | FirstPass::Use => stack.found.as_ref().map(|found| Secret::new(found.as_bytes().to_vec())),
    };
    let answer = match from_stack {
        Some(answer) => answer,
        None if ctx.options.first_pass == FirstPass::Use => {
            let why = "use_first_pass: no password from an earlier module";
            return Err(AuthError::Conversation(ConversationError(why.into())));
        }
        None => Secret::new(prompter.prompt_secret(&ctx.options.prompt).map_err(AuthError::Conversation)?.into_bytes()),
    };
    let code = match split(answer.as_bytes(), digits, recovery) {
        Some((code, password)) => {
            stack.hand_on = Some(password);
            code
        }
        None => Code::new(String::new()),
    };
    Ok(Request::AuthAnswer { session_id, answer: code })
}

/// Two prompts: the request for an answer to mfad's prompt. An answer to
/// a code prompt (echo off) that is the password the stack holds is not
/// sent.
pub(crate) fn answer_prompt(session_id: String, answer: String, echo: bool, stack: &StackPassword) -> Request {
    let answer = Code::new(answer);
    let is_password =
        !echo && stack.found.as_ref().is_some_and(|password| password.same_as(answer.expose().as_bytes()));
    if is_password { Request::AuthNotACode { session_id } } else { Request::AuthAnswer { session_id, answer } }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(answer: &str, digits: u32, recovery: bool) -> Option<(String, String)> {
        split(answer.as_bytes(), digits, recovery).map(|(code, password)| {
            (code.expose().to_string(), String::from_utf8(password.as_bytes().to_vec()).unwrap())
        })
    }

    fn both(code: &str, password: &str) -> Option<(String, String)> {
        Some((code.to_string(), password.to_string()))
    }

    #[test]
    fn the_code_is_the_trailing_digits_of_the_device() {
        assert_eq!(parts("hunter2123456", 6, true), both("123456", "hunter2"));
        assert_eq!(parts("pw2024123456", 6, true), both("123456", "pw2024"));
        assert_eq!(parts("pw2024", 6, true), None);
        assert_eq!(parts("s3cret 12345678", 8, false), both("12345678", "s3cret "));
        assert_eq!(parts("s3cret123456", 8, false), None, "an 8-digit device needs 8 digits");
        assert_eq!(parts("123456", 6, true), both("123456", ""));
        assert_eq!(parts("12345", 6, true), None, "too short to hold a code");
        assert_eq!(parts("", 6, true), None);
        assert_eq!(parts("pässwörd123456", 6, true), both("123456", "pässwörd"));
        assert_eq!(parts("anything", 0, true), None);
    }

    #[test]
    fn a_recovery_code_at_the_end_in_its_issued_form() {
        assert_eq!(parts("hunter2abcde-fghjk", 6, true), both("abcde-fghjk", "hunter2"));
        assert_eq!(parts("hunter2ABCDE-23456", 6, true), both("ABCDE-23456", "hunter2"));
        // Not where recovery codes are refused (elevation): the digits rule.
        assert_eq!(parts("hunter2abcde-fghjk", 6, false), None);
        // A password that looks like a recovery code, then a code: the code.
        assert_eq!(parts("abcde-fghjk123456", 6, true), both("123456", "abcde-fghjk"));
    }

    #[test]
    fn secrets_compare_whole_and_never_show() {
        let secret = Secret::new(b"hunter2".to_vec());
        assert!(secret.same_as(b"hunter2"));
        assert!(!secret.same_as(b"hunter"));
        assert!(!secret.same_as(b"hunter22"));
        assert!(!secret.same_as(b""));
        assert!(Secret::new(Vec::new()).same_as(b""));
        let shown = format!("{secret:?}");
        assert!(!format!("{shown} {:?}", StackPassword::found(Some(secret))).contains("hunter2"));
    }
}
