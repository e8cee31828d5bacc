//! The Trusted Pods market, as a publisher sees it: which providers offer what, at which price,
//! and which of them answer.
//!
//! - [`profile`]: the profile URI a provider sets in the Registry
//!   (`tpod-profile:1:<sha256>:<peer id>:<multiaddrs>`), signing a profile document and verifying
//!   a fetched one against the URI and the provider's address.

pub mod profile;

pub use profile::{ProfileError, ProfileUri, ProfileUriError};
