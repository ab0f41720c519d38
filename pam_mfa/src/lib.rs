//! pam_mfa: placeholder until the module lands.
