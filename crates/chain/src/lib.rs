//! Chain bindings for Trusted Pods.
//!
//! - [`contracts`]: alloy bindings generated from the committed forge artifacts in `artifacts/`
//!   (a CI check keeps them equal to what `contracts/src` compiles to).
//! - [`claim`]: the EIP-712 claim message the enclave signs and the Payment contract verifies;
//!   the provider and the tests use the same helpers.
//! - [`client`]: typed calls for every contract function, with errors that say what is wrong
//!   (unreachable RPC, a chain without our contracts, missing funds or allowance, reverts by name).
//! - [`profile`]: the EIP-712 signature a provider's account puts on its profile document.
//! - [`request`]: EIP-712 authentication of publisher requests to providers, with replay
//!   protection.
//! - [`watcher`]: a polling event watcher with a cursor that survives RPC outages and restarts.

pub mod claim;
pub mod client;
pub mod contracts;
pub mod error;
pub mod profile;
pub mod request;
pub mod watcher;

pub use client::{Chain, ContractAddresses};
pub use error::ChainError;
