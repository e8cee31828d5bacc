//! Provider profiles: the URI a provider sets in the Registry, and the signed document it names.
//!
//! The Registry holds at most 1024 bytes per provider, so it holds a pointer:
//!
//! ```text
//! tpod-profile:1:<64 lowercase hex sha256>:<peer id>:<multiaddr>[,<multiaddr>...]
//! ```
//!
//! the sha256 of the encoded `ProviderProfile`, and where to fetch it over `/tpod/profile/1`. The
//! document itself (a [`pb::SignedProfile`]) carries the exact encoded bytes and an EIP-712
//! signature by the provider's payment account ([`tpod_chain::profile`]). A publisher trusts
//! neither the network nor the peer that served it: [`verify`] checks the bytes against the
//! URI's digest, the document against the chain and the Registry entry it came from, and the
//! signature against the address that set the entry.

use std::fmt;
use std::str::FromStr;

use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use prost::Message as _;
use tpod_net::{Multiaddr, PeerId};
use tpod_wire::{Validate as _, WireError, pb};

/// The scheme and format version every profile URI starts with.
const PREFIX: &str = "tpod-profile:1:";
/// The longest URI the Registry accepts (its `MAX_PROFILE_LENGTH`).
pub const MAX_URI_BYTES: usize = 1024;

/// Where a provider's profile document is and what it must hash to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileUri {
    /// sha256 of the encoded `ProviderProfile`.
    pub sha256: [u8; 32],
    /// The libp2p peer serving it (the provider itself).
    pub peer: PeerId,
    /// Addresses to reach that peer at, without `/p2p`; at least one.
    pub addrs: Vec<Multiaddr>,
}

/// Why a Registry entry is not a profile URI this version reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileUriError {
    /// Longer than the Registry allows.
    #[error("profile URI is {0} bytes, more than the Registry's {MAX_URI_BYTES}")]
    TooLong(usize),
    /// Not a `tpod-profile:` URI at all.
    #[error("profile URI does not start with \"tpod-profile:\"")]
    NotTpodProfile,
    /// A `tpod-profile:` URI of a format version this version does not read.
    #[error("profile URI has format version {0:?}; this version reads 1")]
    UnsupportedVersion(String),
    /// Fewer than the five `:`-separated parts.
    #[error("profile URI lacks its {0} part (tpod-profile:1:<sha256>:<peer id>:<multiaddrs>)")]
    Missing(&'static str),
    /// The digest is not 64 lowercase hex digits.
    #[error("profile URI digest {0:?} is not 64 lowercase hex digits")]
    BadDigest(String),
    /// The peer id does not parse.
    #[error("profile URI peer id {peer:?} is malformed: {reason}")]
    BadPeer {
        /// The text.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A multiaddr does not parse.
    #[error("profile URI address {addr:?} is not a multiaddr: {reason}")]
    BadAddr {
        /// The text.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A multiaddr holds the list separator.
    #[error("address {0} holds a comma, which separates addresses in a profile URI")]
    CommaInAddr(String),
}

impl fmt::Display for ProfileUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}:{}:", alloy::hex::encode(self.sha256), self.peer)?;
        for (i, addr) in self.addrs.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{addr}")?;
        }
        Ok(())
    }
}

impl FromStr for ProfileUri {
    type Err = ProfileUriError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() > MAX_URI_BYTES {
            return Err(ProfileUriError::TooLong(text.len()));
        }
        let rest = text.strip_prefix("tpod-profile:").ok_or(ProfileUriError::NotTpodProfile)?;
        let (version, rest) = rest.split_once(':').ok_or(ProfileUriError::Missing("sha256"))?;
        if version != "1" {
            return Err(ProfileUriError::UnsupportedVersion(version.to_owned()));
        }
        let (digest, rest) = rest.split_once(':').ok_or(ProfileUriError::Missing("peer id"))?;
        // The address list may itself hold colons (IPv6), so it is everything after the peer id.
        let (peer, addrs) = rest.split_once(':').ok_or(ProfileUriError::Missing("multiaddrs"))?;
        let lower_hex = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let mut sha256 = [0u8; 32];
        if !lower_hex || alloy::hex::decode_to_slice(digest, &mut sha256).is_err() {
            return Err(ProfileUriError::BadDigest(digest.to_owned()));
        }
        let peer = peer
            .parse::<PeerId>()
            .map_err(|e| ProfileUriError::BadPeer { peer: peer.to_owned(), reason: e.to_string() })?;
        if addrs.is_empty() {
            return Err(ProfileUriError::Missing("multiaddrs"));
        }
        let addrs = addrs
            .split(',')
            .map(|a| a.parse().map_err(|e| ProfileUriError::BadAddr { addr: a.to_owned(), reason: format!("{e}") }))
            .collect::<Result<_, _>>()?;
        Ok(Self { sha256, peer, addrs })
    }
}

/// Why a profile cannot be signed or was refused. A refused provider is listed as skipped with
/// this as the reason, so each says what is wrong with the provider's document.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The Registry entry is not a profile URI this version reads.
    #[error("its profile URI is unusable: {0}")]
    Uri(#[from] ProfileUriError),
    /// The fetched bytes are not what the Registry entry names.
    #[error("its profile's sha256 is {got}, not the {expected} its Registry entry names")]
    DigestMismatch {
        /// From the URI.
        expected: String,
        /// Of the bytes received.
        got: String,
    },
    /// The bytes are not a protobuf `ProviderProfile`.
    #[error("its profile does not decode: {0}")]
    Decode(String),
    /// The profile breaks the format's limits or has another format version.
    #[error("its profile is invalid: {0}")]
    Invalid(#[from] WireError),
    /// A field does not parse.
    #[error("its profile's {field} {value:?} is malformed: {reason}")]
    Malformed {
        /// The field.
        field: &'static str,
        /// Its text.
        value: String,
        /// Why.
        reason: String,
    },
    /// Published for another chain.
    #[error("its profile is for chain {profile}, not this network's chain {expected}")]
    WrongChain {
        /// In the profile.
        profile: u64,
        /// This network's.
        expected: u64,
    },
    /// Published for another Registry.
    #[error("its profile is for Registry {profile}, not this network's {expected}")]
    WrongRegistry {
        /// In the profile.
        profile: Address,
        /// This network's.
        expected: Address,
    },
    /// Names another payment address than the account that set the Registry entry.
    #[error("its profile names payment address {profile}, but the Registry entry belongs to {provider}")]
    WrongPaymentAddress {
        /// In the profile.
        profile: Address,
        /// The Registry entry's owner.
        provider: Address,
    },
    /// Names another peer than the URI it was fetched through.
    #[error("its profile names peer {profile}, but its Registry entry names peer {uri}")]
    WrongPeer {
        /// In the profile.
        profile: String,
        /// In the URI.
        uri: String,
    },
    /// The signature is not 65 bytes or recovers to no address.
    #[error("its profile signature is malformed: {0}")]
    BadSignature(String),
    /// Signed by another key than the provider's account.
    #[error("its profile is signed by {signer}, not by the provider's account {provider}")]
    WrongSigner {
        /// Who signed.
        signer: Address,
        /// The Registry entry's owner.
        provider: Address,
    },
    /// Signing failed (only when making a profile).
    #[error("cannot sign the profile: {0}")]
    Signing(String),
}

/// Signs `profile` with the provider's payment account for a Registry deployment, and builds
/// the URI to set in that Registry. The profile is encoded once; those exact bytes are what is
/// hashed, signed and served.
///
/// Refuses what a publisher's [`verify`] would refuse about the document itself (limits, format
/// version, a chain, Registry or payment address other than the signer's), and a URI longer
/// than the Registry takes.
pub fn sign(
    profile: pb::ProviderProfile,
    signer: &PrivateKeySigner,
    chain_id: u64,
    registry: Address,
) -> Result<(pb::SignedProfile, ProfileUri), ProfileError> {
    check_fields(&profile, signer.address(), chain_id, registry)?;
    let peer = parse_peer(&profile.peer_id)?;
    let addrs = profile
        .multiaddrs
        .iter()
        .map(|a| {
            if a.contains(',') {
                return Err(ProfileUriError::CommaInAddr(a.clone()).into());
            }
            a.parse::<Multiaddr>().map_err(|e| malformed("multiaddrs", a, e))
        })
        .collect::<Result<Vec<_>, ProfileError>>()?;
    if addrs.is_empty() {
        return Err(ProfileUriError::Missing("multiaddrs").into());
    }
    let bytes = profile.encode_to_vec();
    let signature = tpod_chain::profile::sign(&bytes, signer, chain_id, registry)
        .map_err(|e| ProfileError::Signing(e.to_string()))?;
    let uri = ProfileUri { sha256: tpod_chain::profile::profile_hash(&bytes).0, peer, addrs };
    let length = uri.to_string().len();
    if length > MAX_URI_BYTES {
        return Err(ProfileUriError::TooLong(length).into());
    }
    Ok((pb::SignedProfile { profile: bytes, signature: signature.to_vec() }, uri))
}

/// Checks a fetched profile document against the Registry entry `uri` that `provider` set on
/// chain `chain_id` in `registry`, and returns the profile.
///
/// In order: the bytes hash to the URI's digest, decode, pass the format's limits and version,
/// are for this chain and Registry, name `provider` as payment address and the URI's peer, and
/// are signed by `provider`.
pub fn verify(
    signed: &pb::SignedProfile,
    uri: &ProfileUri,
    provider: Address,
    chain_id: u64,
    registry: Address,
) -> Result<pb::ProviderProfile, ProfileError> {
    let got = tpod_chain::profile::profile_hash(&signed.profile);
    if got.0 != uri.sha256 {
        return Err(ProfileError::DigestMismatch {
            expected: alloy::hex::encode(uri.sha256),
            got: alloy::hex::encode(got),
        });
    }
    let profile =
        pb::ProviderProfile::decode(signed.profile.as_slice()).map_err(|e| ProfileError::Decode(e.to_string()))?;
    check_fields(&profile, provider, chain_id, registry)?;
    if parse_peer(&profile.peer_id)? != uri.peer {
        return Err(ProfileError::WrongPeer { profile: profile.peer_id, uri: uri.peer.to_string() });
    }
    if signed.signature.len() != tpod_wire::limits::SIGNATURE_BYTES {
        return Err(ProfileError::BadSignature(format!("{} bytes, not 65", signed.signature.len())));
    }
    let signer = tpod_chain::profile::recover(&signed.profile, &signed.signature, chain_id, registry)
        .map_err(|e| ProfileError::BadSignature(e.to_string()))?;
    if signer != provider {
        return Err(ProfileError::WrongSigner { signer, provider });
    }
    Ok(profile)
}

/// The checks of the document's own fields that signing and verifying share.
fn check_fields(
    profile: &pb::ProviderProfile,
    provider: Address,
    chain_id: u64,
    registry: Address,
) -> Result<(), ProfileError> {
    // Limits and the format version (a reader refuses versions it does not know).
    profile.validate()?;
    if profile.chain_id != chain_id {
        return Err(ProfileError::WrongChain { profile: profile.chain_id, expected: chain_id });
    }
    let named: Address = profile.registry.parse().map_err(|e| malformed("registry", &profile.registry, e))?;
    if named != registry {
        return Err(ProfileError::WrongRegistry { profile: named, expected: registry });
    }
    let payee: Address =
        profile.payment_address.parse().map_err(|e| malformed("payment_address", &profile.payment_address, e))?;
    if payee != provider {
        return Err(ProfileError::WrongPaymentAddress { profile: payee, provider });
    }
    if !profile.min_funding.is_empty() {
        profile.min_funding.parse::<U256>().map_err(|e| malformed("min_funding", &profile.min_funding, e))?;
    }
    Ok(())
}

fn parse_peer(text: &str) -> Result<PeerId, ProfileError> {
    text.parse().map_err(|e| malformed("peer_id", text, e))
}

fn malformed(field: &'static str, value: &str, reason: impl fmt::Display) -> ProfileError {
    ProfileError::Malformed { field, value: value.to_owned(), reason: reason.to_string() }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use tpod_wire::PROFILE_FORMAT_VERSION;

    const CHAIN: u64 = 31337;

    fn registry() -> Address {
        Address::repeat_byte(0x42)
    }

    fn peer() -> PeerId {
        tpod_net::generate_keypair().public().to_peer_id()
    }

    fn profile(account: Address, peer: PeerId) -> pb::ProviderProfile {
        pb::ProviderProfile {
            version: PROFILE_FORMAT_VERSION,
            chain_id: CHAIN,
            registry: registry().to_string(),
            payment_address: account.to_string(),
            peer_id: peer.to_string(),
            multiaddrs: vec!["/ip4/127.0.0.1/tcp/4001".into(), "/ip6/::1/tcp/4001".into()],
            region: "eu-west".into(),
            tee: "simulated".into(),
            min_funding: "1000".into(),
            pricing_tables: vec![1, 2],
            provider_binary_sha256: vec![7; 32],
            issued_at_unix: 1_700_000_000,
            ..Default::default()
        }
    }

    fn signed() -> (PrivateKeySigner, pb::ProviderProfile, pb::SignedProfile, ProfileUri) {
        let key = PrivateKeySigner::random();
        let p = profile(key.address(), peer());
        let (signed, uri) = sign(p.clone(), &key, CHAIN, registry()).unwrap();
        (key, p, signed, uri)
    }

    /// Re-signs a changed profile with `key`, keeping the URI pointing at the new bytes, so only
    /// the change is wrong.
    fn resigned(key: &PrivateKeySigner, p: &pb::ProviderProfile, uri: &ProfileUri) -> (pb::SignedProfile, ProfileUri) {
        let bytes = p.encode_to_vec();
        let sig = tpod_chain::profile::sign(&bytes, key, CHAIN, registry()).unwrap();
        let uri = ProfileUri { sha256: tpod_chain::profile::profile_hash(&bytes).0, ..uri.clone() };
        (pb::SignedProfile { profile: bytes, signature: sig.to_vec() }, uri)
    }

    #[test]
    fn uri_round_trips_with_ipv6_and_several_addresses() {
        let (_, _, _, uri) = signed();
        let text = uri.to_string();
        assert!(text.starts_with("tpod-profile:1:"), "{text}");
        assert!(text.ends_with(":/ip4/127.0.0.1/tcp/4001,/ip6/::1/tcp/4001"), "{text}");
        assert_eq!(text.parse::<ProfileUri>().unwrap(), uri);
    }

    #[test]
    fn uri_parse_errors_say_what_is_wrong() {
        let (_, _, _, uri) = signed();
        let hex = alloy::hex::encode(uri.sha256);
        let p = uri.peer;
        let cases = [
            ("ipfs://bafy".to_owned(), "does not start with"),
            ("tpod-profile:2:x".to_owned(), "format version \"2\""),
            ("tpod-profile:1".to_owned(), "lacks its sha256"),
            (format!("tpod-profile:1:{hex}"), "lacks its peer id"),
            (format!("tpod-profile:1:{hex}:{p}"), "lacks its multiaddrs"),
            (format!("tpod-profile:1:{hex}:{p}:"), "lacks its multiaddrs"),
            (format!("tpod-profile:1:{}:{p}:/ip4/1.2.3.4/tcp/1", hex.to_uppercase()), "lowercase hex"),
            (format!("tpod-profile:1:{}:{p}:/ip4/1.2.3.4/tcp/1", &hex[2..]), "lowercase hex"),
            (format!("tpod-profile:1:{hex}:12D3Koo:/ip4/1.2.3.4/tcp/1"), "peer id \"12D3Koo\""),
            (format!("tpod-profile:1:{hex}:{p}:/ip4/1.2.3.4/tcp/1,nowhere"), "\"nowhere\" is not a multiaddr"),
            (format!("tpod-profile:1:{hex}:{p}:{}", "/ip4/1.2.3.4/tcp/1,".repeat(60)), "more than the Registry's 1024"),
        ];
        for (text, expected) in cases {
            let err = text.parse::<ProfileUri>().unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn a_signed_profile_verifies_against_its_uri_and_account() {
        let (key, p, signed, uri) = signed();
        assert_eq!(verify(&signed, &uri, key.address(), CHAIN, registry()).unwrap(), p);
    }

    #[test]
    fn sign_refuses_what_verify_would_and_uris_over_the_registry_limit() {
        let key = PrivateKeySigner::random();
        let p = profile(key.address(), peer());
        let other = PrivateKeySigner::random();
        assert!(matches!(sign(p.clone(), &other, CHAIN, registry()), Err(ProfileError::WrongPaymentAddress { .. })));
        assert!(matches!(sign(p.clone(), &key, 1, registry()), Err(ProfileError::WrongChain { .. })));
        let none = pb::ProviderProfile { multiaddrs: vec![], ..p.clone() };
        assert!(matches!(sign(none, &key, CHAIN, registry()), Err(ProfileError::Uri(ProfileUriError::Missing(_)))));
        let long = pb::ProviderProfile { multiaddrs: vec![format!("/dns/{}.example/tcp/1", "a".repeat(200)); 6], ..p };
        let err = sign(long, &key, CHAIN, registry()).unwrap_err();
        assert!(matches!(err, ProfileError::Uri(ProfileUriError::TooLong(_))), "{err}");
    }

    #[test]
    fn verify_refuses_each_problem_with_its_reason() {
        let (key, p, signed, uri) = signed();
        let me = key.address();
        let check = |signed: &pb::SignedProfile, uri: &ProfileUri, expected: &str| {
            let err = verify(signed, uri, me, CHAIN, registry()).unwrap_err().to_string();
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        };

        // Bytes other than the URI names.
        let mut tampered = signed.clone();
        tampered.profile.push(0);
        check(&tampered, &uri, "not the");

        // Not a profile at all, under a URI that names these bytes.
        let (mut junk, _) = resigned(&key, &p, &uri);
        junk.profile = vec![0xff; 8];
        let junk_uri = ProfileUri { sha256: tpod_chain::profile::profile_hash(&junk.profile).0, ..uri.clone() };
        check(&junk, &junk_uri, "does not decode");

        let cases: [(pb::ProviderProfile, &str); 8] = [
            (pb::ProviderProfile { version: 2, ..p.clone() }, "invalid"),
            (pb::ProviderProfile { provider_binary_sha256: vec![1; 3], ..p.clone() }, "invalid"),
            (pb::ProviderProfile { chain_id: 1, ..p.clone() }, "for chain 1"),
            (pb::ProviderProfile { registry: Address::repeat_byte(1).to_string(), ..p.clone() }, "for Registry"),
            (pb::ProviderProfile { registry: "0x12".into(), ..p.clone() }, "registry \"0x12\" is malformed"),
            (
                pb::ProviderProfile { payment_address: Address::repeat_byte(9).to_string(), ..p.clone() },
                "names payment address",
            ),
            (pb::ProviderProfile { peer_id: peer().to_string(), ..p.clone() }, "names peer"),
            (pb::ProviderProfile { min_funding: "lots".into(), ..p.clone() }, "min_funding"),
        ];
        for (changed, expected) in cases {
            let (s, u) = resigned(&key, &changed, &uri);
            check(&s, &u, expected);
        }

        // Signed by someone else, or for another Registry domain.
        let mut forged = signed.clone();
        let intruder = PrivateKeySigner::random();
        forged.signature = tpod_chain::profile::sign(&signed.profile, &intruder, CHAIN, registry()).unwrap().to_vec();
        check(&forged, &uri, &format!("signed by {}", intruder.address()));
        let mut elsewhere = signed.clone();
        elsewhere.signature =
            tpod_chain::profile::sign(&signed.profile, &key, CHAIN, Address::repeat_byte(1)).unwrap().to_vec();
        check(&elsewhere, &uri, "not by the provider's account");
        let mut short = signed;
        short.signature.truncate(64);
        check(&short, &uri, "64 bytes, not 65");
    }
}
