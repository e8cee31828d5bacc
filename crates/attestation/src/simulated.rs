//! The simulated TEE, for development and tests on machines without TEE hardware: report data
//! signed by a development root key (ed25519) that stands in for the hardware vendor's chain.
//!
//! It proves nothing about the machine: whoever holds the root key can sign anything. That is
//! why a publisher accepts it only when told to (`--allow-simulated-tee`) and only from the root
//! its policy pins, and why the root key belongs to the devnet that created it.

use std::{io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use libp2p_identity::ed25519;
use tpod_wire::pb;
use zeroize::Zeroizing;

/// Domain separation of the signed bytes.
const DOMAIN: &[u8] = b"tpod-simulated-tee-v1\0";

/// Why simulated evidence was refused or a root key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SimulatedError {
    /// The evidence names another root than the one the policy pins.
    #[error("signed by root {got}, but the policy pins root {pinned}")]
    OtherRoot {
        /// Hex public key of the evidence's root.
        got: String,
        /// Hex public key the policy pins.
        pinned: String,
    },
    /// The signature does not verify with the root.
    #[error("the signature does not verify with the root key")]
    BadSignature,
    /// The evidence is malformed (wrong lengths, not a key).
    #[error("malformed simulated evidence: {0}")]
    Malformed(String),
    /// The root key file could not be read or written.
    #[error("simulated TEE root key {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// A development root key: it signs the report data of a simulated TEE.
#[derive(Clone)]
pub struct SimulatedRoot {
    keypair: ed25519::Keypair,
}

impl std::fmt::Debug for SimulatedRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedRoot").field("public", &self.public_hex()).finish_non_exhaustive()
    }
}

impl SimulatedRoot {
    /// A fresh root.
    pub fn generate() -> Self {
        Self { keypair: ed25519::Keypair::generate() }
    }

    /// The root key in `path` (32 bytes of secret key in hex), generated and written (mode 0600)
    /// if the file does not exist.
    pub fn load_or_generate(path: &Path) -> Result<Self, SimulatedError> {
        let error = |reason: String| SimulatedError::KeyFile { path: path.display().to_string(), reason };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let mut bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| error("is not hex".into()))?);
                let secret = ed25519::SecretKey::try_from_bytes(&mut *bytes)
                    .map_err(|_| error("does not hold a 32-byte ed25519 secret key".into()))?;
                Ok(Self { keypair: secret.into() })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let root = Self::generate();
                let secret = Zeroizing::new(hex::encode(root.keypair.secret().as_ref()));
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| error(e.to_string()))?;
                writeln!(file, "{}", *secret).and_then(|()| file.sync_all()).map_err(|e| error(e.to_string()))?;
                Ok(root)
            }
            Err(e) => Err(error(e.to_string())),
        }
    }

    /// The public key, in hex: what a policy pins.
    pub fn public_hex(&self) -> String {
        hex::encode(self.keypair.public().to_bytes())
    }

    /// Evidence of a simulated TEE for `report_data`.
    pub fn sign(&self, report_data: &[u8; 64]) -> pb::SimulatedEvidence {
        pb::SimulatedEvidence {
            report_data: report_data.to_vec(),
            root_public_key: self.keypair.public().to_bytes().to_vec(),
            signature: self.keypair.sign(&signed_bytes(report_data)),
        }
    }
}

fn signed_bytes(report_data: &[u8; 64]) -> Vec<u8> {
    [DOMAIN, report_data].concat()
}

/// Verifies simulated evidence against the pinned root (hex public key) and returns its report
/// data.
pub fn verify(evidence: &pb::SimulatedEvidence, pinned_root: &str) -> Result<[u8; 64], SimulatedError> {
    let got = hex::encode(&evidence.root_public_key);
    if !got.eq_ignore_ascii_case(pinned_root.trim()) {
        return Err(SimulatedError::OtherRoot { got, pinned: pinned_root.trim().to_owned() });
    }
    let root = ed25519::PublicKey::try_from_bytes(&evidence.root_public_key)
        .map_err(|e| SimulatedError::Malformed(format!("root_public_key: {e}")))?;
    let report_data: [u8; 64] = evidence
        .report_data
        .as_slice()
        .try_into()
        .map_err(|_| SimulatedError::Malformed(format!("report_data has {} bytes", evidence.report_data.len())))?;
    if !root.verify(&signed_bytes(&report_data), &evidence.signature) {
        return Err(SimulatedError::BadSignature);
    }
    Ok(report_data)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn signs_and_verifies_with_the_pinned_root_only() {
        let root = SimulatedRoot::generate();
        let evidence = root.sign(&[9; 64]);
        assert_eq!(verify(&evidence, &root.public_hex()).unwrap(), [9; 64]);

        let other = SimulatedRoot::generate();
        let error = verify(&evidence, &other.public_hex()).unwrap_err();
        assert!(matches!(error, SimulatedError::OtherRoot { .. }), "{error}");
        // A root that signs and names itself is still not the pinned one.
        let error = verify(&other.sign(&[9; 64]), &root.public_hex()).unwrap_err();
        assert!(matches!(error, SimulatedError::OtherRoot { .. }), "{error}");
    }

    #[test]
    fn any_flipped_byte_fails() {
        let root = SimulatedRoot::generate();
        let evidence = root.sign(&[9; 64]);
        for i in 0..64 {
            let mut bad = evidence.clone();
            bad.report_data[i] ^= 1;
            assert!(matches!(verify(&bad, &root.public_hex()), Err(SimulatedError::BadSignature)), "report_data[{i}]");
        }
        for i in 0..64 {
            let mut bad = evidence.clone();
            bad.signature[i] ^= 1;
            assert!(verify(&bad, &root.public_hex()).is_err(), "signature[{i}]");
        }
        for i in 0..32 {
            let mut bad = evidence.clone();
            bad.root_public_key[i] ^= 1;
            assert!(verify(&bad, &root.public_hex()).is_err(), "root_public_key[{i}]");
        }
    }

    #[test]
    fn the_root_key_file_is_created_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let first = SimulatedRoot::load_or_generate(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let again = SimulatedRoot::load_or_generate(&path).unwrap();
        assert_eq!(first.public_hex(), again.public_hex());
        std::fs::write(&path, "zz").unwrap();
        let error = SimulatedRoot::load_or_generate(&path).unwrap_err();
        assert!(error.to_string().ends_with("root.key: is not hex"), "{error}");
    }
}
