//! The enclave's keys: the signing key, which signs usage reports for payment claims and is named
//! as the enclave signer of every channel that pays this provider, and the encryption key
//! (X25519), to which publishers seal image keys and secrets.
//!
//! Without TEE hardware this is a *simulated* enclave: the keys are files only the provider user
//! can read. Attestation (its own issue) will bind them to a TEE report; until then a publisher
//! trusts the provider's word for them, as the devnet does.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use alloy::signers::local::PrivateKeySigner;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not hold a hex private key.
    #[error("key file {path} does not hold a hex secp256k1 private key")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

/// Reads a hex private key (with or without `0x`, surrounding whitespace ignored).
pub fn read_key(path: &Path) -> Result<PrivateKeySigner, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.to_owned(), source })?;
    text.trim().parse::<PrivateKeySigner>().map_err(|_| KeyError::Malformed { path: path.to_owned() })
}

/// Writes `key` as hex to a new file readable by its owner only.
pub fn write_key(path: &Path, key: &PrivateKeySigner) -> Result<(), KeyError> {
    write_secret(path, key.to_bytes().as_slice())
}

fn write_secret(path: &Path, secret: &[u8]) -> Result<(), KeyError> {
    let io = |source| KeyError::Io { path: path.to_owned(), source };
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
    writeln!(file, "0x{}", alloy::hex::encode(secret)).map_err(io)?;
    file.sync_all().map_err(io)
}

/// The enclave encryption key at `path` (hex, like the signing key), generated on first use.
pub fn load_or_generate_sealing(path: &Path) -> Result<tpod_crypto::SecretKey, KeyError> {
    if path.exists() {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.to_owned(), source })?;
        let bytes = zeroize::Zeroizing::new(
            alloy::hex::decode(text.trim()).map_err(|_| KeyError::Malformed { path: path.to_owned() })?,
        );
        return tpod_crypto::SecretKey::from_bytes(&bytes).map_err(|_| KeyError::Malformed { path: path.to_owned() });
    }
    let key = tpod_crypto::SecretKey::generate();
    write_secret(path, key.to_bytes().as_slice())?;
    tracing::info!(public = %key.public(), "generated a new simulated enclave encryption key");
    Ok(key)
}

/// The enclave key at `path`, generated on first use.
pub fn load_or_generate(path: &Path) -> Result<PrivateKeySigner, KeyError> {
    if path.exists() {
        return read_key(path);
    }
    let key = PrivateKeySigner::random();
    write_key(path, &key)?;
    tracing::info!(address = %key.address(), "generated a new simulated enclave key");
    Ok(key)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn generated_once_then_reloaded_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("enclave.key");
        let first = load_or_generate(&path).unwrap();
        assert_eq!(load_or_generate(&path).unwrap().address(), first.address());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(read_key(&path), Err(KeyError::Malformed { .. })));

        let sealing = dir.path().join("enclave-seal.key");
        let first = load_or_generate_sealing(&sealing).unwrap();
        assert_eq!(load_or_generate_sealing(&sealing).unwrap().public(), first.public());
        assert_eq!(std::fs::metadata(&sealing).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&sealing, "0x1234").unwrap();
        assert!(matches!(load_or_generate_sealing(&sealing), Err(KeyError::Malformed { .. })));
    }
}
