//! What evidence binds: the publisher's nonce and the provider's live identity (libp2p key,
//! enclave keys, provider software), hashed into the 64 bytes of report data a TEE report
//! carries. See `attest.proto` for the exact layout; [`report_data`] is its only implementation.

use libp2p_identity::{PeerId, PublicKey};
use sha2::{Digest, Sha512};
use tpod_wire::pb;

/// Domain separation: report data of no other protocol hashes the same bytes.
const DOMAIN: &[u8] = b"tpod-attestation-v1\0";

/// The provider identity a TEE report vouches for, decoded from [`pb::Binding`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The provider's libp2p public key.
    pub libp2p_public_key: PublicKey,
    /// Address of the enclave's signing key (usage reports, payment claims).
    pub enclave_signer: [u8; 20],
    /// The enclave's X25519 public key (image keys and secrets are sealed to it).
    pub enclave_encryption_key: [u8; 32],
    /// The provider's software: its binary and configuration.
    pub measurement: Measurement,
}

/// The provider software: sha256 of the `tpod-provider` binary and of its configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Measurement {
    /// sha256 of the binary.
    pub binary: [u8; 32],
    /// sha256 of the configuration file as read.
    pub config: [u8; 32],
}

impl Measurement {
    /// Measures a binary and a configuration file from their bytes.
    pub fn of(binary: &[u8], config: &[u8]) -> Self {
        Self { binary: sha2::Sha256::digest(binary).into(), config: sha2::Sha256::digest(config).into() }
    }
}

/// sha256 of a file's content (a provider binary), read piece by piece.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hasher.finalize().into())
}

/// A fixed-size field of the binding.
fn fixed<const N: usize>(field: &'static str, bytes: &[u8]) -> Result<[u8; N], BindingError> {
    bytes.try_into().map_err(|_| BindingError { field, reason: format!("has {} bytes", bytes.len()) })
}

/// `sha256:<hex>`, the form digests take in policies and output.
pub fn digest_text(digest: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(digest))
}

/// A binding field that is malformed.
#[derive(Debug, thiserror::Error)]
#[error("evidence binding: {field} {reason}")]
pub struct BindingError {
    /// The field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl Binding {
    /// The peer id of the bound libp2p key.
    pub fn peer_id(&self) -> PeerId {
        self.libp2p_public_key.to_peer_id()
    }

    /// Decodes the wire form; fixed sizes are already checked by the wire validation, the key is
    /// parsed here.
    pub fn from_wire(wire: &pb::Binding) -> Result<Self, BindingError> {
        let libp2p_public_key = PublicKey::try_decode_protobuf(&wire.libp2p_public_key)
            .map_err(|e| BindingError { field: "libp2p_public_key", reason: format!("is not a libp2p key: {e}") })?;
        Ok(Self {
            libp2p_public_key,
            enclave_signer: fixed("enclave_signer", &wire.enclave_signer)?,
            enclave_encryption_key: fixed("enclave_encryption_key", &wire.enclave_encryption_key)?,
            measurement: Measurement {
                binary: fixed("provider_binary_sha256", &wire.provider_binary_sha256)?,
                config: fixed("provider_config_sha256", &wire.provider_config_sha256)?,
            },
        })
    }

    /// The wire form.
    pub fn to_wire(&self) -> pb::Binding {
        pb::Binding {
            libp2p_public_key: self.libp2p_public_key.encode_protobuf(),
            enclave_signer: self.enclave_signer.to_vec(),
            enclave_encryption_key: self.enclave_encryption_key.to_vec(),
            provider_binary_sha256: self.measurement.binary.to_vec(),
            provider_config_sha256: self.measurement.config.to_vec(),
        }
    }
}

/// The report data that binds `nonce` and `binding`.
pub fn report_data(nonce: &[u8; 32], binding: &Binding) -> [u8; 64] {
    let key = binding.libp2p_public_key.encode_protobuf();
    // The wire validation caps the key far below u16::MAX; a longer one cannot be bound.
    let key_len = u16::try_from(key.len()).unwrap_or(u16::MAX);
    Sha512::new()
        .chain_update(DOMAIN)
        .chain_update(nonce)
        .chain_update(key_len.to_be_bytes())
        .chain_update(&key)
        .chain_update(binding.enclave_signer)
        .chain_update(binding.enclave_encryption_key)
        .chain_update(binding.measurement.binary)
        .chain_update(binding.measurement.config)
        .finalize()
        .into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use libp2p_identity::Keypair;

    use super::*;

    fn binding() -> Binding {
        Binding {
            libp2p_public_key: Keypair::generate_ed25519().public(),
            enclave_signer: [1; 20],
            enclave_encryption_key: [2; 32],
            measurement: Measurement::of(b"binary", b"config"),
        }
    }

    #[test]
    fn every_bound_field_changes_the_report_data() {
        let (nonce, binding) = ([7; 32], binding());
        let data = report_data(&nonce, &binding);
        assert_ne!(report_data(&[8; 32], &binding), data);
        let changed = [
            Binding { libp2p_public_key: Keypair::generate_ed25519().public(), ..binding.clone() },
            Binding { enclave_signer: [3; 20], ..binding.clone() },
            Binding { enclave_encryption_key: [3; 32], ..binding.clone() },
            Binding { measurement: Measurement::of(b"other binary", b"config"), ..binding.clone() },
            Binding { measurement: Measurement::of(b"binary", b"other config"), ..binding.clone() },
        ];
        for other in changed {
            assert_ne!(report_data(&nonce, &other), data, "{other:?}");
        }
    }

    #[test]
    fn report_data_follows_the_documented_layout() {
        let (nonce, binding) = ([7; 32], binding());
        let key = binding.libp2p_public_key.encode_protobuf();
        let mut bytes = b"tpod-attestation-v1\0".to_vec();
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&(key.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&key);
        bytes.extend_from_slice(&[1; 20]);
        bytes.extend_from_slice(&[2; 32]);
        bytes.extend_from_slice(&sha2::Sha256::digest(b"binary"));
        bytes.extend_from_slice(&sha2::Sha256::digest(b"config"));
        assert_eq!(report_data(&nonce, &binding)[..], Sha512::digest(&bytes)[..]);
    }

    #[test]
    fn wire_form_round_trips_and_bad_keys_are_named() {
        let binding = binding();
        assert_eq!(Binding::from_wire(&binding.to_wire()).unwrap(), binding);
        let wire = pb::Binding { libp2p_public_key: vec![1, 2, 3], ..binding.to_wire() };
        let error = Binding::from_wire(&wire).unwrap_err();
        assert_eq!(error.field, "libp2p_public_key");
        let wire = pb::Binding { enclave_signer: vec![0; 19], ..binding.to_wire() };
        assert_eq!(Binding::from_wire(&wire).unwrap_err().to_string(), "evidence binding: enclave_signer has 19 bytes");
    }
}
