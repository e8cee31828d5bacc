//! The provider daemon: answers the libp2p protocols, runs pods on a runtime backend, exposes
//! them over an HTTP ingress by host name, and keeps its state in a transactional store.
//!
//! - [`config`]: the TOML configuration file.
//! - [`chaincheck`]: checking a chain the daemon started without, once it answers.
//! - [`daemon`]: start-up and the protocol handler.
//! - [`controller`]: admission (auth, payment, capacity) and the pod lifecycle.
//! - [`pod`]: the pod definition as accepted from the network.
//! - [`blobs`]: uploaded encrypted blobs, by CID.
//! - [`sealed`]: opening the image keys and secrets publishers seal to the enclave.
//! - [`enclave`]: the (simulated) enclave's signing and encryption keys.
//! - [`registration`]: listing in the Registry (pricing table, signed profile, subscription).
//! - [`store`]: the state store.

pub mod blobs;
pub mod chaincheck;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod enclave;
pub mod pod;
pub mod registration;
pub mod sealed;
pub mod store;
