//! The provider profile signature: EIP-712 over `ProviderProfile(bytes32 profileHash)` with
//! profileHash = sha256 of the encoded profile, in the Registry's domain. The provider's payment
//! account signs the exact bytes it publishes, so a publisher that fetched them from anyone can
//! check they are what the account that set the Registry entry vouches for.

use alloy::primitives::{Address, B256};
use alloy::signers::{Signature, SignerSync, local::PrivateKeySigner};
use alloy::sol_types::{Eip712Domain, SolStruct, eip712_domain};
use sha2::{Digest as _, Sha256};

use crate::error::ChainError;

alloy::sol! {
    /// What a provider signs about its profile document: the sha256 of its encoded bytes.
    #[derive(Debug, PartialEq, Eq)]
    struct ProviderProfile {
        bytes32 profileHash;
    }
}

/// The EIP-712 domain of profiles published in a Registry deployment.
pub fn registry_domain(chain_id: u64, registry: Address) -> Eip712Domain {
    eip712_domain! {
        name: "TrustedPodsRegistry",
        version: "1",
        chain_id: chain_id,
        verifying_contract: registry,
    }
}

/// The sha256 of the encoded profile: what the profile URI names and the signature covers.
pub fn profile_hash(profile: &[u8]) -> B256 {
    B256::from(<[u8; 32]>::from(Sha256::digest(profile)))
}

/// The 32-byte hash the provider's account signs for `profile`.
pub fn signing_hash(profile: &[u8], chain_id: u64, registry: Address) -> B256 {
    ProviderProfile { profileHash: profile_hash(profile) }.eip712_signing_hash(&registry_domain(chain_id, registry))
}

/// Signs the encoded `profile` with the provider's payment account; returns the 65-byte
/// signature (r, s, v).
pub fn sign(
    profile: &[u8],
    signer: &PrivateKeySigner,
    chain_id: u64,
    registry: Address,
) -> Result<[u8; 65], ChainError> {
    signer
        .sign_hash_sync(&signing_hash(profile, chain_id, registry))
        .map(|s| s.as_bytes())
        .map_err(|e| ChainError::Signing(e.to_string()))
}

/// The address whose key produced `signature` over the encoded `profile`. Any 65 bytes that
/// form a signature recover to some address: the caller compares it with the expected one.
pub fn recover(profile: &[u8], signature: &[u8], chain_id: u64, registry: Address) -> Result<Address, ChainError> {
    let signature = Signature::from_raw(signature)
        .map_err(|e| ChainError::Signing(format!("profile signature is malformed: {e}")))?;
    signature
        .recover_address_from_prehash(&signing_hash(profile, chain_id, registry))
        .map_err(|e| ChainError::Signing(format!("cannot recover the profile signer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_recover_round_trip_and_bind_bytes_chain_and_registry() -> Result<(), ChainError> {
        let provider = PrivateKeySigner::random();
        let registry = Address::repeat_byte(7);
        let profile = b"encoded profile".as_slice();
        let sig = sign(profile, &provider, 31337, registry)?;
        assert_eq!(recover(profile, &sig, 31337, registry)?, provider.address());
        // Other bytes, another chain or another Registry recover to someone else.
        assert_ne!(recover(b"encoded profilE", &sig, 31337, registry)?, provider.address());
        assert_ne!(recover(profile, &sig, 1, registry)?, provider.address());
        assert_ne!(recover(profile, &sig, 31337, Address::repeat_byte(8))?, provider.address());
        assert!(recover(profile, &sig[..64], 31337, registry).is_err());
        Ok(())
    }

    #[test]
    fn the_hash_is_sha256_of_the_bytes() {
        // sha256("abc"), FIPS 180-2 appendix B.1.
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(alloy::hex::encode(profile_hash(b"abc")), expected);
    }
}
