//! The Trusted Pods market, as a publisher sees it: which providers offer what, at which price,
//! and which of them answer.
//!
//! - [`profile`]: the profile URI a provider sets in the Registry
//!   (`tpod-profile:1:<sha256>:<peer id>:<multiaddrs>`), signing a profile document and verifying
//!   a fetched one against the URI and the provider's address.
//! - [`index`]: the market rebuilt from the Registry's events, read in chunks and cached between
//!   runs, safe against reorganisations of the last blocks.
//! - [`rank`]: what a pod reserves, what that costs per hour under each table (billing's own
//!   arithmetic), and the candidates (provider, table) cheapest first, filtered.
//! - [`probe`]: the cheapest candidates asked in parallel for their signed profile and a quote;
//!   each ok, or skipped with the reason.
//!
//! Picking a provider (what `tpod providers` shows and `deploy` can use):
//!
//! ```ignore
//! let (state, _) = Scanner::new(provider, chain_id, registry).cache_file(cache).sync().await?;
//! let reservation = Reservation::of_manifest(&manifest);
//! let found = candidates(&state, token, &reservation, &Filters::default());
//! let probed = probe(&client, &Network { chain_id, registry, payment }, &found, &reservation,
//!     &ProbeOptions::default()).await;
//! let best = probed.iter().find(|p| p.status == Status::Ok);
//! ```

pub mod index;
pub mod probe;
pub mod profile;
pub mod rank;

use std::path::PathBuf;

pub use index::{MarketState, ProviderEntry, Scanner, SyncReport};
pub use probe::{Network, ProbeOptions, Probed, Status, probe};
pub use profile::{ProfileError, ProfileUri, ProfileUriError};
pub use rank::{Candidate, Filters, Reservation, candidates};

/// What can go wrong reading the market.
#[derive(Debug, thiserror::Error)]
pub enum MarketError {
    /// The chain's RPC failed or answered something unusable.
    #[error("{call} failed: {reason}")]
    Rpc {
        /// What was being asked.
        call: &'static str,
        /// The node's or transport's message.
        reason: String,
    },
    /// The cache file could not be written.
    #[error("market cache {path}: {reason}")]
    Cache {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}
