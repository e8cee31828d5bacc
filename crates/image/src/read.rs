//! Reading an image layout: `index.json` → manifest → config, each blob checked against its
//! descriptor's digest and size before it is parsed. Layers are only described here; their
//! content is verified while [`crate::unpack`] streams them.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Os};
use sha2::{Digest as _, Sha256};
use tpod_crypto::{BlobKey, DecryptingReader};

use crate::build::host_arch;
use crate::{Digest, ImageError};

/// The largest `index.json`, manifest or config accepted, in bytes.
pub const MAX_JSON_BYTES: u64 = 4 << 20;

/// Docker's name for a gzip layer, which some tools still put in OCI manifests.
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// An image, its manifest and config verified, its layers described. Read from an OCI image
/// layout ([`read_layout`], [`read_image`]) or, on a provider, from encrypted blobs
/// ([`crate::open_encrypted`]).
#[derive(Clone, Debug)]
pub struct Image {
    /// The digest of the manifest, which identifies the image.
    pub manifest_digest: Digest,
    /// The config (entrypoint, cmd, env, …).
    pub config: ImageConfiguration,
    /// The config as stored.
    pub config_blob: Blob,
    /// The layers, lowest first.
    pub layers: Vec<Layer>,
}

/// A blob as stored: where it is, and what its content must be.
#[derive(Clone, Debug)]
pub struct Blob {
    /// The digest of the content (of the plaintext, when the blob is encrypted).
    pub digest: Digest,
    /// The size of the content (of the plaintext, when encrypted).
    pub size: u64,
    /// The file holding the blob.
    pub path: PathBuf,
    /// When the file is encrypted (see `tpod_crypto::stream`): its key.
    pub key: Option<BlobKey>,
}

impl Blob {
    /// A reader of the blob's content, decrypting if needed, that yields at most one byte more
    /// than [`Blob::size`] (enough to notice a blob that grew). The content is not verified here.
    pub(crate) fn open(&self) -> Result<Box<dyn Read + Send>, ImageError> {
        let file = File::open(&self.path).map_err(ImageError::io(&self.path))?;
        Ok(match &self.key {
            Some(key) => Box::new(DecryptingReader::new(key, io::BufReader::new(file)).take(self.size + 1)),
            None => {
                let size = file.metadata().map_err(ImageError::io(&self.path))?.len();
                if size != self.size {
                    return Err(ImageError::SizeMismatch {
                        digest: self.digest.clone(),
                        expected: self.size,
                        actual: size,
                    });
                }
                Box::new(file.take(self.size + 1))
            }
        })
    }

    /// Reads a JSON blob whole, refusing it unless it fits [`MAX_JSON_BYTES`] and its size and
    /// digest match.
    pub(crate) fn read_json(&self) -> Result<Vec<u8>, ImageError> {
        if self.size > MAX_JSON_BYTES {
            return Err(ImageError::TooLarge { what: format!("blob {}", self.digest), limit: MAX_JSON_BYTES });
        }
        let mut bytes = Vec::new();
        self.open()?.read_to_end(&mut bytes).map_err(ImageError::io(&self.path))?;
        check_blob(&self.digest, self.size, bytes.len() as u64, Digest::of(&bytes))?;
        Ok(bytes)
    }
}

/// One layer of an [`Image`], not yet verified.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The layer blob (compressed or not).
    pub blob: Blob,
    /// Whether the blob is gzip-compressed.
    pub gzip: bool,
    /// The digest of the uncompressed tar, from the config's `rootfs.diff_ids`.
    pub diff_id: Digest,
}

/// Reads the image layout at `dir`: the first manifest of `index.json` for linux on this
/// machine's architecture (or with no platform), its config, and its layer list.
pub fn read_layout(dir: &Path) -> Result<Image, ImageError> {
    let layout = read_bounded(&dir.join("oci-layout"), "oci-layout")?;
    let layout: serde_json::Value = parse_json(&layout, "oci-layout")?;
    if layout.get("imageLayoutVersion").and_then(|v| v.as_str()).is_none() {
        return Err(invalid("oci-layout", "no imageLayoutVersion"));
    }
    let index: ImageIndex = parse_json(&read_bounded(&dir.join("index.json"), "index.json")?, "index.json")?;
    let arch = host_arch();
    // Nested indexes are skipped, not followed: the builders we accept write one level.
    let manifest_descriptor = index
        .manifests()
        .iter()
        .find(|d| {
            *d.media_type() == MediaType::ImageManifest
                && d.platform().as_ref().is_none_or(|p| *p.os() == Os::Linux && *p.architecture() == arch)
        })
        .ok_or_else(|| invalid("index.json", format!("no image manifest for linux/{arch}")))?;

    let manifest = layout_blob(dir, manifest_descriptor)?;
    let bytes = manifest.read_json()?;
    image_from_manifest(dir, manifest.digest, &bytes)
}

/// Parses a verified manifest, then reads and verifies its config.
fn image_from_manifest(dir: &Path, manifest_digest: Digest, bytes: &[u8]) -> Result<Image, ImageError> {
    let what = format!("manifest {manifest_digest}");
    let manifest: ImageManifest = parse_json(bytes, &what)?;
    if manifest.schema_version() != 2 {
        return Err(invalid(&what, format!("schemaVersion {} is not 2", manifest.schema_version())));
    }
    if *manifest.config().media_type() != MediaType::ImageConfig {
        return Err(invalid(
            &what,
            format!("config media type {} is not an image config", manifest.config().media_type()),
        ));
    }
    let config_blob = layout_blob(dir, manifest.config())?;
    let bytes = config_blob.read_json()?;
    let config_what = format!("config {}", config_blob.digest);
    let config: ImageConfiguration = parse_json(&bytes, &config_what)?;

    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(invalid(
            &config_what,
            format!("{} diff ids for {} layers", diff_ids.len(), manifest.layers().len()),
        ));
    }
    let layers = manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(d, diff_id)| {
            let blob = layout_blob(dir, d)?;
            let gzip = match d.media_type() {
                MediaType::ImageLayer => false,
                MediaType::ImageLayerGzip => true,
                MediaType::Other(t) if t == DOCKER_LAYER_GZIP => true,
                other => {
                    return Err(invalid(&format!("layer {}", blob.digest), format!("unsupported media type {other}")));
                }
            };
            Ok(Layer { blob, gzip, diff_id: Digest::parse(diff_id)? })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Image { manifest_digest, config, config_blob, layers })
}

/// The blob of the layout at `dir` that `descriptor` names.
fn layout_blob(dir: &Path, descriptor: &Descriptor) -> Result<Blob, ImageError> {
    let digest = descriptor_digest(descriptor)?;
    Ok(Blob { path: digest.blob_path(dir), digest, size: descriptor.size(), key: None })
}

fn invalid(what: &str, reason: impl Into<String>) -> ImageError {
    ImageError::Invalid { what: what.to_owned(), reason: reason.into() }
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::Json { what: what.to_owned(), source })
}

fn descriptor_digest(descriptor: &Descriptor) -> Result<Digest, ImageError> {
    Digest::parse(descriptor.digest().as_ref())
}

/// Reads a file of at most [`MAX_JSON_BYTES`] without reading more than one byte past it.
fn read_bounded(path: &Path, what: &str) -> Result<Vec<u8>, ImageError> {
    let file = File::open(path).map_err(ImageError::io(path))?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON_BYTES + 1).read_to_end(&mut bytes).map_err(ImageError::io(path))?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(ImageError::TooLarge { what: what.to_owned(), limit: MAX_JSON_BYTES });
    }
    Ok(bytes)
}

/// Compares what was read with what the descriptor promised.
pub(crate) fn check_blob(digest: &Digest, expected_size: u64, size: u64, actual: Digest) -> Result<(), ImageError> {
    if size != expected_size {
        return Err(ImageError::SizeMismatch { digest: digest.clone(), expected: expected_size, actual: size });
    }
    if actual != *digest {
        return Err(ImageError::DigestMismatch { digest: digest.clone(), actual });
    }
    Ok(())
}

/// A reader that hashes and counts what passes through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self { inner, hasher: Sha256::new(), count: 0 }
    }

    /// Reads whatever is left, then returns the byte count and digest of everything read.
    pub(crate) fn finish(mut self) -> io::Result<(u64, Digest)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.count, Digest::from_hasher(self.hasher)))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}
