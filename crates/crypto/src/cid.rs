//! Content ids of encrypted blobs: CIDv1 with the `raw` codec and a sha2-256 multihash of the
//! blob's bytes (its ciphertext), printed in the usual base32 form (`bafkrei…`). That is the id
//! IPFS gives a raw block of those bytes, so a blob could be pinned publicly without revealing
//! anything, and anyone holding the bytes can check them against it.
//!
//! Ids come from the network and become file names, so [`ContentId::parse`] accepts exactly one
//! form: the lowercase base32 text of a CIDv1 `raw` sha2-256 id, which is made of `a-z` and
//! `2-7` only.

use std::fmt;
use std::str::FromStr;

use cid::Cid;
use sha2::{Digest as _, Sha256};

/// Multicodec of a raw block.
const RAW: u64 = 0x55;
/// Multihash code of sha2-256.
const SHA2_256: u64 = 0x12;
/// Length of the base32 text: "b" and 58 characters for the 36 bytes of version, codec and
/// multihash.
const TEXT_LEN: usize = 59;

/// A CIDv1 (`raw`, sha2-256) content id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentId {
    sha256: [u8; 32],
}

/// Why a string is not a content id this project accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid content id {text:?}: {reason}")]
pub struct CidError {
    /// The text, cut to 100 characters.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl ContentId {
    /// The id of a blob whose sha256 is `sha256`.
    pub fn from_sha256(sha256: [u8; 32]) -> Self {
        Self { sha256 }
    }

    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_sha256(Sha256::digest(bytes).into())
    }

    /// The sha256 of the blob.
    pub fn sha256(&self) -> &[u8; 32] {
        &self.sha256
    }

    /// Parses the base32 text of a CIDv1 `raw` sha2-256 id.
    pub fn parse(text: &str) -> Result<Self, CidError> {
        let error = |reason| CidError { text: text.chars().take(100).collect(), reason };
        if text.len() != TEXT_LEN || !text.starts_with('b') {
            return Err(error("expected a CIDv1 in base32 (59 characters starting with \"b\")"));
        }
        if !text.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)) {
            return Err(error("base32 text must be lowercase a-z and 2-7"));
        }
        let cid = Cid::from_str(text).map_err(|_| error("not a CID"))?;
        if cid.version() != cid::Version::V1 {
            return Err(error("not a CIDv1"));
        }
        if cid.codec() != RAW {
            return Err(error("codec is not raw (0x55)"));
        }
        if cid.hash().code() != SHA2_256 {
            return Err(error("hash is not sha2-256"));
        }
        let sha256 = cid.hash().digest().try_into().map_err(|_| error("sha2-256 digest is not 32 bytes"))?;
        let id = Self { sha256 };
        // One text per id: refuse anything that does not print back the same.
        if id.to_string() != text {
            return Err(error("not in canonical form"));
        }
        Ok(id)
    }

    fn cid(&self) -> Cid {
        // A 32-byte digest always fits the 64-byte multihash.
        let hash = cid::multihash::Multihash::<64>::wrap(SHA2_256, &self.sha256).unwrap_or_default();
        Cid::new_v1(RAW, hash)
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // CIDv1 prints as lowercase base32 by default.
        write!(f, "{}", self.cid())
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({self})")
    }
}

impl FromStr for ContentId {
    type Err = CidError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn matches_the_ipfs_id_of_a_raw_block() {
        // `ipfs block put --cid-codec raw` of "hello world" (no newline) gives this id.
        let id = ContentId::of(b"hello world");
        assert_eq!(id.to_string(), "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e");
        assert_eq!(ContentId::parse(&id.to_string()).unwrap(), id);
    }

    #[test]
    fn only_the_canonical_raw_sha256_form_is_accepted() {
        let good = ContentId::of(b"x").to_string();
        assert!(ContentId::parse(&good).is_ok());
        let dag_pb = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
        let v0 = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
        let upper = good.to_uppercase();
        let mut bad_char = good.clone();
        bad_char.replace_range(10..11, "1");
        for (text, reason) in [
            ("", "base32"),
            (v0, "base32"),
            (dag_pb, "raw"),
            (upper.as_str(), "base32"),
            (bad_char.as_str(), "lowercase"),
            ("b../../../../../../../../../../../../../../../../../etc/pas", "lowercase"),
            (&good[..58], "base32"),
        ] {
            let error = ContentId::parse(text).unwrap_err();
            assert!(error.to_string().contains(reason), "{text:?}: {error}");
        }
    }
}
