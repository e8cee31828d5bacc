//! The payment claim an enclave signs: EIP-712 over (chain id, Payment contract, channel,
//! cumulative amount, usage digest). [`Payment.claim`](crate::contracts::Payment) accepts a claim
//! only with a signature by the channel's enclave signer.

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::signers::{Signature, SignerSync, local::PrivateKeySigner};
use alloy::sol_types::{Eip712Domain, SolStruct, SolValue, eip712_domain};

use crate::error::ChainError;

alloy::sol! {
    /// A provider's claim on a channel: the total it has earned so far on that channel.
    #[derive(Debug, PartialEq, Eq)]
    struct Claim {
        bytes32 channel;
        uint256 cumulativeAmount;
        bytes32 usageDigest;
    }
}

/// The EIP-712 domain of a Payment contract deployment.
pub fn payment_domain(chain_id: u64, payment: Address) -> Eip712Domain {
    eip712_domain! {
        name: "TrustedPodsPayment",
        version: "1",
        chain_id: chain_id,
        verifying_contract: payment,
    }
}

/// The channel id the Payment contract derives from (publisher, provider, pod id).
pub fn channel_id(publisher: Address, provider: Address, pod_id: B256) -> B256 {
    keccak256((publisher, provider, pod_id).abi_encode())
}

impl Claim {
    /// A claim of `cumulative_amount` in total on `channel`, backed by the usage report whose
    /// digest is `usage_digest`.
    pub fn new(channel: B256, cumulative_amount: U256, usage_digest: B256) -> Self {
        Self { channel, cumulativeAmount: cumulative_amount, usageDigest: usage_digest }
    }

    /// The 32-byte hash the enclave signs.
    pub fn digest(&self, domain: &Eip712Domain) -> B256 {
        self.eip712_signing_hash(domain)
    }

    /// Signs the claim with the enclave's key.
    pub fn sign(&self, domain: &Eip712Domain, enclave: &PrivateKeySigner) -> Result<Signature, ChainError> {
        enclave.sign_hash_sync(&self.digest(domain)).map_err(|e| ChainError::Signing(e.to_string()))
    }

    /// The address that produced `signature` over this claim.
    pub fn recover_signer(&self, domain: &Eip712Domain, signature: &Signature) -> Result<Address, ChainError> {
        signature
            .recover_address_from_prehash(&self.digest(domain))
            .map_err(|e| ChainError::Signing(format!("cannot recover claim signer: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_recover_round_trip_and_bind_every_field() -> Result<(), ChainError> {
        let enclave = PrivateKeySigner::random();
        let domain = payment_domain(31337, Address::repeat_byte(7));
        let claim = Claim::new(B256::repeat_byte(1), U256::from(1000), B256::repeat_byte(2));
        let sig = claim.sign(&domain, &enclave)?;
        assert_eq!(claim.recover_signer(&domain, &sig)?, enclave.address());

        // Changing any signed field yields a different signer, so the contract would refuse it.
        let others = [
            (Claim::new(B256::repeat_byte(9), U256::from(1000), B256::repeat_byte(2)), domain.clone()),
            (Claim::new(B256::repeat_byte(1), U256::from(1001), B256::repeat_byte(2)), domain.clone()),
            (Claim::new(B256::repeat_byte(1), U256::from(1000), B256::repeat_byte(3)), domain.clone()),
            (claim.clone(), payment_domain(1, Address::repeat_byte(7))),
            (claim.clone(), payment_domain(31337, Address::repeat_byte(8))),
        ];
        for (other, other_domain) in others {
            assert_ne!(other.recover_signer(&other_domain, &sig)?, enclave.address());
        }
        Ok(())
    }

    #[test]
    fn channel_id_depends_on_every_part() {
        let (a, b, p) = (Address::repeat_byte(1), Address::repeat_byte(2), B256::repeat_byte(3));
        let id = channel_id(a, b, p);
        assert_ne!(id, channel_id(b, a, p));
        assert_ne!(id, channel_id(a, b, B256::repeat_byte(4)));
    }
}
