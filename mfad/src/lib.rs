//! mfad: the daemon that holds the OTP secrets and decides, per login,
//! whether a code is needed; and mfactl, its command-line client.
//!
//! The binaries are shims: the daemon's logic is in [`service`] (request
//! handlers), [`policy`] (the decision), [`store`] and [`server`]; mfactl's
//! is in [`ctl`].

pub mod audit;
pub mod ceiling;
pub mod clock;
pub mod crypto;
pub mod ctl;
pub mod daemon_main;
pub mod doctor;
pub mod enrollment;
pub mod keys;
pub mod lockout;
pub mod maintenance;
pub mod metrics;
pub mod nss;
pub mod policy;
pub mod recovery;
pub mod server;
pub mod service;
pub mod store;
pub mod timefmt;
