//! The devnet file: what a running devnet is (RPC, chain id, contract addresses, dev keys), read
//! by every later command by default. It holds private keys of throwaway dev accounts, so it is
//! written with mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};
use tpod_chain::ContractAddresses;

use crate::error::DevnetError;

/// The format version written into new files. Version 1 files of a devnet with several
/// providers differ only in having more entries in `accounts`, which older tooling reads too.
pub const FORMAT_VERSION: u32 = 1;

/// A running devnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevnetFile {
    /// Format version of this file.
    pub version: u32,
    /// The chain id anvil runs with.
    pub chain_id: u64,
    /// anvil's JSON-RPC URL.
    pub rpc_url: String,
    /// anvil's process id.
    pub anvil_pid: u32,
    /// Where the contracts are.
    pub contracts: ContractAddresses,
    /// Funded dev accounts.
    pub accounts: Vec<DevAccount>,
}

/// A funded dev account. Its key is throwaway and only ever used on the devnet.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevAccount {
    /// Role name: `deployer`, `publisher`, `provider`, then `provider-2`, `provider-3`, ... on a
    /// devnet with more than one provider.
    pub name: String,
    /// The account's address.
    pub address: Address,
    /// Its private key.
    pub private_key: B256,
}

impl std::fmt::Debug for DevAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs, even dev keys.
        f.debug_struct("DevAccount").field("name", &self.name).field("address", &self.address).finish()
    }
}

impl DevAccount {
    /// A fresh random account.
    pub fn generate(name: &str) -> Self {
        let signer = PrivateKeySigner::random();
        Self { name: name.to_owned(), address: signer.address(), private_key: signer.to_bytes() }
    }

    /// The account's signer.
    pub fn signer(&self) -> Result<PrivateKeySigner, DevnetError> {
        PrivateKeySigner::from_bytes(&self.private_key)
            .map_err(|e| DevnetError::from(tpod_chain::ChainError::Signing(format!("dev account {}: {e}", self.name))))
    }
}

impl DevnetFile {
    /// Reads the devnet file at `path`; `None` if there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, DevnetError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(DevnetError::io(path, e)),
        };
        let file: Self = serde_json::from_str(&text).map_err(|e| DevnetError::Malformed {
            path: path.to_owned(),
            line: e.line(),
            column: e.column(),
            reason: e.to_string(),
        })?;
        if file.version != FORMAT_VERSION {
            return Err(DevnetError::Malformed {
                path: path.to_owned(),
                line: 1,
                column: 1,
                reason: format!("version {} is not the supported version {FORMAT_VERSION}", file.version),
            });
        }
        Ok(Some(file))
    }

    /// Writes the file atomically (temporary file, then rename), readable by the owner only.
    pub fn save(&self, path: &Path) -> Result<(), DevnetError> {
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| DevnetError::io(path, e.into()))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| DevnetError::io(&tmp, e))?;
        f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| DevnetError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| DevnetError::io(path, e))
    }

    /// The dev account called `name`.
    pub fn account(&self, name: &str) -> Result<&DevAccount, DevnetError> {
        self.accounts.iter().find(|a| a.name == name).ok_or_else(|| DevnetError::NoSuchAccount {
            path: std::path::PathBuf::from(crate::DEVNET_FILE),
            name: name.to_owned(),
        })
    }

    /// The provider accounts in order: `provider`, `provider-2`, ... up to the first missing one.
    pub fn provider_accounts(&self) -> Vec<&DevAccount> {
        (1..=crate::MAX_PROVIDERS).map_while(|index| self.account(&crate::provider_account_name(index)).ok()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DevnetFile {
        DevnetFile {
            version: FORMAT_VERSION,
            chain_id: 31337,
            rpc_url: "http://127.0.0.1:8545".into(),
            anvil_pid: 42,
            contracts: ContractAddresses {
                payment: Address::repeat_byte(1),
                registry: Address::repeat_byte(2),
                token: Address::repeat_byte(3),
            },
            accounts: vec![DevAccount::generate("publisher")],
        }
    }

    #[test]
    fn save_then_load_round_trips_with_private_mode() -> Result<(), DevnetError> {
        let dir = tempfile::tempdir().map_err(|e| DevnetError::io(Path::new("tmp"), e))?;
        let path = dir.path().join("devnet.json");
        let file = sample();
        file.save(&path)?;
        assert_eq!(DevnetFile::load(&path)?, Some(file));
        let mode = std::fs::metadata(&path).map_err(|e| DevnetError::io(&path, e))?.permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        Ok(())
    }

    #[test]
    fn malformed_file_names_path_line_and_column() -> Result<(), DevnetError> {
        let dir = tempfile::tempdir().map_err(|e| DevnetError::io(Path::new("tmp"), e))?;
        let path = dir.path().join("devnet.json");
        std::fs::write(&path, "{\n  \"version\": 1,\n  \"chain_id\": \"not a number\"\n}")
            .map_err(|e| DevnetError::io(&path, e))?;
        let err = DevnetFile::load(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("tpod dev up"), "{err}");
        Ok(())
    }

    #[test]
    fn provider_accounts_come_in_order_with_the_first_named_provider() {
        let mut file = sample();
        assert!(file.provider_accounts().is_empty());
        for name in ["provider-3", "provider", "provider-2", "provider-5"] {
            file.accounts.push(DevAccount::generate(name));
        }
        let names: Vec<&str> = file.provider_accounts().iter().map(|a| a.name.as_str()).collect();
        // provider-5 without a provider-4 is not one of them.
        assert_eq!(names, ["provider", "provider-2", "provider-3"]);
    }

    #[test]
    fn debug_output_hides_keys() {
        let account = DevAccount::generate("publisher");
        let shown = format!("{account:?}");
        assert!(!shown.contains(&account.private_key.to_string()[2..]));
    }
}
