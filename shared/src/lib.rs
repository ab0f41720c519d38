//! What mfad, mfactl and pam_mfa share: the wire protocol, its framing, a
//! blocking client, and (feature `config`) the configuration file types.

pub mod account;
pub mod bypass;
pub mod client;
#[cfg(feature = "config")]
pub mod config;
pub mod frame;
#[cfg(feature = "otp")]
pub mod otp;
pub mod protocol;
#[cfg(feature = "otp")]
pub mod qr;

pub use client::{Client, ClientError, DEFAULT_SOCKET};
pub use protocol::*;
