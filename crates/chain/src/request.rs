//! Publisher request authentication. Every request that reads or changes a pod is signed
//! (EIP-712) by the publisher key that owns the pod's payment channel, over the pod, the action,
//! a hash of the request body, a nonce and an expiry. The provider recovers the signer, compares
//! it with the channel's publisher, and refuses expired requests and replays with a
//! [`ReplayGuard`].

use std::collections::HashMap;

use alloy::primitives::{Address, B256, keccak256};
use alloy::signers::{Signature, SignerSync, local::PrivateKeySigner};
use alloy::sol_types::{Eip712Domain, SolStruct, eip712_domain};

alloy::sol! {
    /// A publisher's request about one pod.
    #[derive(Debug, PartialEq, Eq)]
    struct PodRequest {
        bytes32 podId;
        string action;
        bytes32 bodyHash;
        uint64 nonce;
        uint64 expiry;
    }
}

/// Why a request is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// The signature does not recover to an address.
    #[error("request signature is malformed: {0}")]
    BadSignature(String),
    /// Signed by someone other than the pod's publisher.
    #[error("request signed by {signer}, but pod {pod_id} belongs to publisher {publisher}")]
    WrongSigner {
        /// Who signed.
        signer: Address,
        /// Who owns the pod's channel.
        publisher: Address,
        /// The pod.
        pod_id: B256,
    },
    /// The expiry has passed.
    #[error("request expired at {expiry} (now {now})")]
    Expired {
        /// The request's expiry (unix seconds).
        expiry: u64,
        /// The provider's clock.
        now: u64,
    },
    /// The expiry is further ahead than the provider remembers nonces for.
    #[error("request expiry {expiry} is more than {window}s ahead of now ({now}); sign with a shorter expiry")]
    ExpiryTooFar {
        /// The request's expiry.
        expiry: u64,
        /// The provider's clock.
        now: u64,
        /// The longest accepted validity.
        window: u64,
    },
    /// The same (publisher, nonce) was seen before.
    #[error("request nonce {nonce} from {publisher} was already used (replay)")]
    Replayed {
        /// The publisher.
        publisher: Address,
        /// The nonce.
        nonce: u64,
    },
}

/// The EIP-712 domain of requests to providers on one network (bound to its chain and Payment
/// contract, so a request for one network is worthless on another).
pub fn request_domain(chain_id: u64, payment: Address) -> Eip712Domain {
    eip712_domain! {
        name: "TrustedPodsProvider",
        version: "1",
        chain_id: chain_id,
        verifying_contract: payment,
    }
}

impl PodRequest {
    /// A request for `action` on `pod_id`, committing to the encoded request `body`.
    pub fn new(pod_id: B256, action: &str, body: &[u8], nonce: u64, expiry: u64) -> Self {
        Self { podId: pod_id, action: action.to_owned(), bodyHash: keccak256(body), nonce, expiry }
    }

    /// Signs the request with the publisher's key.
    pub fn sign(&self, domain: &Eip712Domain, publisher: &PrivateKeySigner) -> Result<Signature, AuthError> {
        publisher.sign_hash_sync(&self.eip712_signing_hash(domain)).map_err(|e| AuthError::BadSignature(e.to_string()))
    }

    /// Checks that `signature` is `publisher`'s over this request and that `body` is what was
    /// signed. Expiry and replay are the [`ReplayGuard`]'s job.
    pub fn verify(
        &self,
        domain: &Eip712Domain,
        body: &[u8],
        signature: &Signature,
        publisher: Address,
    ) -> Result<(), AuthError> {
        let signed = if keccak256(body) == self.bodyHash { self.eip712_signing_hash(domain) } else { B256::ZERO };
        let signer =
            signature.recover_address_from_prehash(&signed).map_err(|e| AuthError::BadSignature(e.to_string()))?;
        if signer != publisher {
            return Err(AuthError::WrongSigner { signer, publisher, pod_id: self.podId });
        }
        Ok(())
    }
}

/// Remembers the nonces of unexpired requests. Requests must expire within `window` seconds, so
/// the memory is bounded by the request rate times the window.
#[derive(Debug)]
pub struct ReplayGuard {
    window: u64,
    seen: HashMap<(Address, u64), u64>,
}

impl ReplayGuard {
    /// A guard accepting expiries up to `window` seconds ahead.
    pub fn new(window: u64) -> Self {
        Self { window, seen: HashMap::new() }
    }

    /// Accepts the request once: refuses it if expired, valid for too long, or already seen.
    pub fn check(&mut self, publisher: Address, nonce: u64, expiry: u64, now: u64) -> Result<(), AuthError> {
        if expiry < now {
            return Err(AuthError::Expired { expiry, now });
        }
        if expiry - now > self.window {
            return Err(AuthError::ExpiryTooFar { expiry, now, window: self.window });
        }
        self.seen.retain(|_, until| *until >= now);
        if self.seen.insert((publisher, nonce), expiry).is_some() {
            return Err(AuthError::Replayed { publisher, nonce });
        }
        Ok(())
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> (Eip712Domain, PrivateKeySigner, PodRequest, Vec<u8>) {
        let body = b"provision: hello".to_vec();
        let req = PodRequest::new(B256::repeat_byte(7), "provision", &body, 1, 1_000);
        (request_domain(31337, Address::repeat_byte(1)), PrivateKeySigner::random(), req, body)
    }

    #[test]
    fn publisher_signature_verifies() -> Result<(), AuthError> {
        let (domain, publisher, req, body) = fixture();
        let sig = req.sign(&domain, &publisher)?;
        req.verify(&domain, &body, &sig, publisher.address())
    }

    #[test]
    fn foreign_key_tampered_body_other_field_or_network_are_refused() -> Result<(), AuthError> {
        let (domain, publisher, req, body) = fixture();
        let sig = req.sign(&domain, &publisher)?;
        let foreign = PrivateKeySigner::random();
        let foreign_sig = req.sign(&domain, &foreign)?;
        let refused = |r: Result<(), AuthError>| matches!(r, Err(AuthError::WrongSigner { .. }));
        assert!(refused(req.verify(&domain, &body, &foreign_sig, publisher.address())));
        assert!(refused(req.verify(&domain, b"provision: evil", &sig, publisher.address())));
        let other_action = PodRequest { action: "delete".into(), ..req.clone() };
        assert!(refused(other_action.verify(&domain, &body, &sig, publisher.address())));
        let other_nonce = PodRequest { nonce: 2, ..req.clone() };
        assert!(refused(other_nonce.verify(&domain, &body, &sig, publisher.address())));
        let other_net = request_domain(1, Address::repeat_byte(1));
        assert!(refused(req.verify(&other_net, &body, &sig, publisher.address())));
        Ok(())
    }

    #[test]
    fn replay_guard_refuses_replays_expired_and_far_expiries_and_forgets_old_nonces() {
        let who = Address::repeat_byte(9);
        let mut guard = ReplayGuard::new(300);
        assert_eq!(guard.check(who, 1, 1_100, 1_000), Ok(()));
        assert_eq!(guard.check(who, 1, 1_100, 1_001), Err(AuthError::Replayed { publisher: who, nonce: 1 }));
        assert_eq!(guard.check(Address::repeat_byte(8), 1, 1_100, 1_001), Ok(()));
        assert_eq!(guard.check(who, 2, 999, 1_000), Err(AuthError::Expired { expiry: 999, now: 1_000 }));
        assert!(matches!(guard.check(who, 3, 1_301, 1_000), Err(AuthError::ExpiryTooFar { .. })));
        // Once expired, a nonce can be forgotten: the request itself would be refused as expired.
        assert_eq!(guard.check(who, 4, 1_300, 1_200), Ok(()));
        assert_eq!(guard.len(), 1);
        assert_eq!(guard.check(who, 1, 1_250, 1_200), Ok(()));
    }
}
