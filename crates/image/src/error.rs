//! The one error type of this crate; every variant names the file, blob or layer entry at fault.

use std::io;
use std::path::PathBuf;

use crate::Digest;

/// Why an image could not be built, read or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A JSON document (index, manifest or config) did not parse, or could not be written.
    #[error("{what}: invalid JSON: {source}")]
    Json {
        /// Which document, e.g. `index.json` or `manifest sha256:…`.
        what: String,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// A string that should be a digest is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid digest {0:?}: expected sha256: followed by 64 lowercase hex digits")]
    InvalidDigest(String),
    /// A blob's content does not hash to the digest its descriptor names.
    #[error("blob {digest}: digest mismatch: the content hashes to {actual}")]
    DigestMismatch {
        /// The digest the descriptor names.
        digest: Digest,
        /// What the content actually hashes to.
        actual: Digest,
    },
    /// A blob's size differs from the size its descriptor names.
    #[error("blob {digest}: size mismatch: the descriptor says {expected} bytes, the blob has {actual}")]
    SizeMismatch {
        /// The blob.
        digest: Digest,
        /// The size the descriptor names.
        expected: u64,
        /// The size of the content.
        actual: u64,
    },
    /// An uncompressed layer does not hash to the config's `rootfs.diff_ids` entry for it.
    #[error("layer {layer}: uncompressed content hashes to {actual}, the config says {expected}")]
    DiffIdMismatch {
        /// The layer blob.
        layer: Digest,
        /// The config's diff id.
        expected: String,
        /// What the uncompressed content hashes to.
        actual: Digest,
    },
    /// A JSON document is larger than [`crate::MAX_JSON_BYTES`].
    #[error("{what}: larger than the {limit}-byte limit")]
    TooLarge {
        /// Which document.
        what: String,
        /// The limit, in bytes.
        limit: u64,
    },
    /// The layout, manifest or config is structurally wrong (missing manifest, wrong media
    /// type, layer count differing from the diff ids, …).
    #[error("{what}: {reason}")]
    Invalid {
        /// Which document or blob.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A layer entry is refused: absolute path, `..`, a path through a symlink, an unsupported
    /// entry type, ….
    #[error("layer {layer}: entry {path:?}: {reason}")]
    UnsafeEntry {
        /// The layer blob.
        layer: Digest,
        /// The entry's path as written in the tar archive.
        path: String,
        /// Why it is refused.
        reason: String,
    },
    /// A layer's tar stream is malformed.
    #[error("layer {layer}: {source}")]
    Layer {
        /// The layer blob.
        layer: Digest,
        /// The underlying error.
        source: io::Error,
    },
    /// A `docker save` tarball is refused: `manifest.json` missing or listing a file that is not
    /// in the archive or escapes it, a layer not matching the config's diff ids, ….
    #[error("docker archive {archive}: {reason}")]
    DockerArchive {
        /// The tarball.
        archive: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Something given to the builder is unusable (bad destination path, …).
    #[error("build: {0}")]
    Build(String),
    /// The registry refused an anonymous pull: it wants credentials.
    #[error("authentication required for {registry}")]
    RegistryAuthRequired {
        /// The registry, e.g. `registry.example.com` or `127.0.0.1:5000`.
        registry: String,
    },
    /// The registry refused the credentials given.
    #[error("authentication failed for {registry}: wrong username or password")]
    RegistryAuthFailed {
        /// The registry.
        registry: String,
    },
    /// The registry has no such repository, tag or digest.
    #[error("image {reference} not found in {registry}")]
    ImageNotFound {
        /// The image reference as given.
        reference: String,
        /// The registry.
        registry: String,
    },
    /// The registry could not be connected to (refused, DNS, TLS, timeout, …).
    #[error("cannot reach registry {registry}: {message}")]
    RegistryUnreachable {
        /// The registry.
        registry: String,
        /// What went wrong, with its causes.
        message: String,
    },
    /// Any other failure talking to a registry, or a registry answer that is refused (bad
    /// reference, unsupported media type, no manifest for this platform, blob too large, …).
    #[error("registry {registry}: {message}")]
    Registry {
        /// The registry.
        registry: String,
        /// What is wrong.
        message: String,
    },
    /// A docker config file (`~/.docker/config.json`) does not parse, or names credentials this
    /// crate cannot use (a credential helper, an identity token).
    #[error("docker config {path}: {reason}")]
    DockerConfig {
        /// The config file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
