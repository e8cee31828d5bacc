//! Remote attestation: TEE evidence (AMD SEV-SNP, Intel TDX, simulated for development) bound to
//! the provider's libp2p key, enclave signer and encryption key, and its verification against a
//! publisher policy.

pub mod snp;
pub mod tdx;
