//! The publisher's attestation policy: which TEEs, which provider software and which TCB levels
//! it trusts. A TOML file; see [`Policy`] for its keys.

use std::{collections::BTreeSet, path::Path};

use serde::{Deserialize, Serialize};

use crate::{snp::SnpPolicy, tdx::TdxPolicy};

/// A kind of TEE evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeeKind {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
    /// No TEE: a development root signs (see [`crate::simulated`]).
    Simulated,
}

impl std::fmt::Display for TeeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Snp => "AMD SEV-SNP",
            Self::Tdx => "Intel TDX",
            Self::Simulated => "simulated TEE",
        })
    }
}

/// What a publisher accepts, e.g.
///
/// ```toml
/// tee = ["snp", "tdx"]
/// provider_binaries = ["sha256:…"]
/// [snp]
/// minimum_tcb = { bootloader = 3, tee = 0, snp = 8, microcode = 115 }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// TEE kinds accepted. `simulated` is accepted only when the publisher also says
    /// `--allow-simulated-tee`.
    pub tee: BTreeSet<TeeKind>,
    /// sha256 digests (`sha256:<hex>`) of the `tpod-provider` builds trusted; at least one.
    pub provider_binaries: BTreeSet<Digest>,
    /// sha256 digests of the provider configurations trusted; empty: any configuration.
    #[serde(default)]
    pub provider_configs: BTreeSet<Digest>,
    /// Requirements on SEV-SNP evidence.
    #[serde(default)]
    pub snp: SnpPolicy,
    /// Requirements on TDX evidence.
    #[serde(default)]
    pub tdx: TdxPolicy,
    /// The simulated TEE's root.
    #[serde(default)]
    pub simulated: Option<SimulatedPolicy>,
}

/// Which development root a simulated TEE must be signed by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedPolicy {
    /// The root's ed25519 public key, hex.
    pub root: String,
}

/// A sha256 digest, written `sha256:<64 hex digits>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(pub [u8; 32]);

impl TryFrom<String> for Digest {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let hex_digits = text.strip_prefix("sha256:").ok_or_else(|| format!("{text:?} does not start with sha256:"))?;
        let mut digest = [0; 32];
        hex::decode_to_slice(hex_digits, &mut digest)
            .map_err(|_| format!("{text:?} is not sha256: followed by 64 hex digits"))?;
        Ok(Self(digest))
    }
}

impl From<Digest> for String {
    fn from(digest: Digest) -> Self {
        crate::binding::digest_text(&digest.0)
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::binding::digest_text(&self.0))
    }
}

/// Why a policy file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("attestation policy {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid policy; the message gives line, column and key.
    #[error("attestation policy {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong, and where.
        message: String,
    },
}

impl Policy {
    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PolicyError::Io { path: path.display().to_string(), source })?;
        Self::parse(&text).map_err(|message| PolicyError::Invalid { path: path.display().to_string(), message })
    }

    /// Parses and checks a policy; the error says where it is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let policy: Self = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        if policy.tee.is_empty() {
            return Err("`tee` lists no TEE kind: nothing could pass".into());
        }
        if policy.provider_binaries.is_empty() {
            return Err("`provider_binaries` is empty: list the sha256 of each tpod-provider build you trust".into());
        }
        if policy.tee.contains(&TeeKind::Simulated) && policy.simulated.is_none() {
            return Err("`tee` accepts simulated, but no [simulated] root is pinned".into());
        }
        if let Some(url) = &policy.tdx.pccs_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(format!("[tdx] pccs_url: {url:?} is not an http(s) URL"));
        }
        Ok(policy)
    }

    /// The policy as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const BINARY: &str = "sha256:0101010101010101010101010101010101010101010101010101010101010101";

    #[test]
    fn parses_and_round_trips() {
        let text =
            format!("tee = [\"simulated\", \"snp\"]\nprovider_binaries = [\"{BINARY}\"]\n[simulated]\nroot = \"ab\"\n");
        let policy = Policy::parse(&text).unwrap();
        assert_eq!(policy.tee, BTreeSet::from([TeeKind::Snp, TeeKind::Simulated]));
        assert_eq!(policy.provider_binaries, BTreeSet::from([Digest([1; 32])]));
        assert!(policy.provider_configs.is_empty());
        assert_eq!(Policy::parse(&policy.to_toml()).unwrap(), policy);
    }

    #[test]
    fn errors_say_where() {
        let error = Policy::parse(&format!("tee = [\"sgx\"]\nprovider_binaries = [\"{BINARY}\"]\n")).unwrap_err();
        assert!(error.contains("line 1, column"), "{error}");
        assert!(error.contains("sgx"), "{error}");
        let error = Policy::parse("tee = [\"snp\"]\nprovider_binaries = [\"sha256:zz\"]\n").unwrap_err();
        assert!(error.contains("line 2") && error.contains("64 hex digits"), "{error}");
        let error =
            Policy::parse(&format!("tee = [\"snp\"]\nprovider_binaries = [\"{BINARY}\"]\ncolour = 1\n")).unwrap_err();
        assert!(error.contains("colour"), "{error}");
        let error = Policy::parse("tee = [\"snp\"]\nprovider_binaries = []\n").unwrap_err();
        assert!(error.contains("provider_binaries"), "{error}");
        let error = Policy::parse(&format!("tee = [\"simulated\"]\nprovider_binaries = [\"{BINARY}\"]\n")).unwrap_err();
        assert!(error.contains("[simulated]"), "{error}");
        let error = Policy::parse(&format!(
            "tee = [\"tdx\"]\nprovider_binaries = [\"{BINARY}\"]\n[tdx]\npccs_url = \"pccs.local\"\n"
        ))
        .unwrap_err();
        assert!(error.contains("pccs_url") && error.contains("pccs.local"), "{error}");
    }
}
