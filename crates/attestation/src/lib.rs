//! Remote attestation: TEE evidence (AMD SEV-SNP, Intel TDX, simulated for development) bound to
//! the provider's libp2p key, enclave signer and encryption key and software, and its
//! verification against a publisher policy.
//!
//! - [`binding`]: what the report data commits to;
//! - [`snp`], [`tdx`], [`simulated`]: each kind of evidence, produced and verified;
//! - [`attester`]: the provider's side, evidence for a nonce;
//! - [`policy`] and [`verify`]: the publisher's side, every check with its reason.

// TEMPORARY while snp and tdx are written: attester, policy and verify use their APIs.
// pub mod attester;
pub mod binding;
// pub mod policy;
pub mod simulated;
pub mod snp;
pub mod tdx;
// pub mod verify;
