//! The [`Prompter`] over the application's PAM conversation function.

use pam::constants::{PAM_ERROR_MSG, PAM_PROMPT_ECHO_OFF, PAM_PROMPT_ECHO_ON, PAM_TEXT_INFO, PamMessageStyle};
use pam::conv::Conv;

use crate::conversation::{ConversationError, Prompter};

pub struct PamPrompter<'a> {
    /// None when the application registered no conversation: a login that
    /// needs no code still works, one that needs a prompt gets PAM_CONV_ERR.
    conv: Option<Conv<'a>>,
}

impl<'a> PamPrompter<'a> {
    pub fn new(conv: Option<Conv<'a>>) -> Self {
        PamPrompter { conv }
    }

    fn send(&self, style: PamMessageStyle, text: &str) -> Result<Option<String>, ConversationError> {
        let conv = self
            .conv
            .as_ref()
            .ok_or_else(|| ConversationError("the application has no conversation function".into()))?;
        // Text comes from the daemon; an embedded NUL must not make the
        // message unshowable.
        let text: String = text.chars().filter(|c| *c != '\0').collect();
        match conv.send(style, &text) {
            Ok(Some(answer)) => answer
                .as_str()
                .map(|s| Some(s.to_owned()))
                .map_err(|_| ConversationError("the answer is not valid UTF-8".into())),
            Ok(None) => Ok(None),
            Err(code) => Err(ConversationError(format!("the application's conversation failed ({code:?})"))),
        }
    }

    fn ask(&self, style: PamMessageStyle, text: &str) -> Result<String, ConversationError> {
        self.send(style, text)?.ok_or_else(|| ConversationError("the application returned no answer".into()))
    }
}

impl Prompter for PamPrompter<'_> {
    fn prompt_secret(&mut self, text: &str) -> Result<String, ConversationError> {
        self.ask(PAM_PROMPT_ECHO_OFF, text)
    }

    fn prompt_visible(&mut self, text: &str) -> Result<String, ConversationError> {
        self.ask(PAM_PROMPT_ECHO_ON, text)
    }

    fn info(&mut self, text: &str) {
        // A message that cannot be shown does not decide anything.
        let _ = self.send(PAM_TEXT_INFO, text);
    }

    fn error(&mut self, text: &str) {
        let _ = self.send(PAM_ERROR_MSG, text);
    }
}
