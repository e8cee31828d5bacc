//! The enclave's signing key, which signs usage reports for payment claims and is named as the
//! enclave signer of every channel that pays this provider.
//!
//! Without TEE hardware this is a *simulated* enclave: the key is a file only the provider user
//! can read. Attestation (its own issue) will bind the key to a TEE report; until then a
//! publisher trusts the provider's word for it, as the devnet does.

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
    let io = |source| KeyError::Io { path: path.to_owned(), source };
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
    writeln!(file, "0x{}", alloy::hex::encode(key.to_bytes())).map_err(io)?;
    file.sync_all().map_err(io)
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
    }
}
