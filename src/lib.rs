//! Portcullis: identity-aware, audited access to AWS databases through a proxy that logs in
//! upstream with AWS IAM. One crate, one binary; `main.rs` only parses and dispatches.
#![forbid(unsafe_code)]

pub mod authz;
pub mod aws;
pub mod cli;
pub mod client;
pub mod commands;
pub mod crd;
pub mod doctor;
pub mod operator;
pub mod pki;
pub mod proxy;
pub mod runtime;
pub mod telemetry;
