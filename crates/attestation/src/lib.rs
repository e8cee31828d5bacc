//! Remote attestation: TEE evidence (AMD SEV-SNP, Intel TDX, simulated for development) bound to
//! the provider's libp2p key, enclave signer and encryption key and software, and its
//! verification against a publisher policy.
//!
//! - [`binding`]: what the report data commits to;
//! - [`snp`], [`tdx`], [`simulated`]: each kind of evidence, produced and verified;
//! - [`attester`]: the provider's side, evidence for a nonce;
//! - [`pccs`]: TDX collateral from a PCCS, for provider and publisher;
//! - [`policy`] and [`verify`]: the publisher's side, every check with its reason.

pub mod attester;
pub mod binding;
pub mod pccs;
pub mod policy;
pub mod simulated;
pub mod snp;
pub mod tdx;
pub mod verify;

pub use attester::{AttestError, Attester, Tee};
pub use binding::{Binding, Measurement};
pub use policy::{Digest, Policy, PolicyError, TeeKind};
pub use simulated::SimulatedRoot;
pub use verify::{Attested, Check, Options, Outcome, Refused, Verification, verify};
