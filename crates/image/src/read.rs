//! Reading an image layout: `index.json` → manifest → config, each blob checked against its
//! descriptor's digest and size before it is parsed. Layers are only described here; their
//! content is verified while [`crate::unpack`] streams them.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Os};
use sha2::{Digest as _, Sha256};

use crate::build::host_arch;
use crate::{Digest, ImageError};

/// The largest `index.json`, manifest or config accepted, in bytes.
pub const MAX_JSON_BYTES: u64 = 4 << 20;

/// Docker's name for a gzip layer, which some tools still put in OCI manifests.
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// An image read from a layout, its manifest and config verified.
#[derive(Clone, Debug)]
pub struct Image {
    /// The layout directory.
    pub dir: PathBuf,
    /// The digest of the manifest, which identifies the image.
    pub manifest_digest: Digest,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The config (entrypoint, cmd, env, …).
    pub config: ImageConfiguration,
    /// The layers, lowest first.
    pub layers: Vec<Layer>,
}

/// One layer of an [`Image`], not yet verified.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The digest of the blob as stored (compressed or not).
    pub digest: Digest,
    /// The size of the blob as stored.
    pub size: u64,
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

    let (manifest_digest, bytes) = read_json_blob(dir, manifest_descriptor)?;
    image_from_manifest(dir, manifest_digest, &bytes)
}

/// Reads the image whose manifest is the blob `manifest_digest` in the blob store at `dir`
/// (laid out like an image layout: `dir/blobs/sha256/<hex>`; no `index.json` needed). This is
/// how a provider opens an image whose blobs were uploaded to it one by one.
pub fn read_image(dir: &Path, manifest_digest: &Digest) -> Result<Image, ImageError> {
    let what = format!("blob {manifest_digest}");
    let bytes = read_bounded(&manifest_digest.blob_path(dir), &what)?;
    let actual = Digest::of(&bytes);
    check_blob(manifest_digest, bytes.len() as u64, bytes.len() as u64, actual)?;
    image_from_manifest(dir, manifest_digest.clone(), &bytes)
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
    let (config_digest, bytes) = read_json_blob(dir, manifest.config())?;
    let config_what = format!("config {config_digest}");
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
            let digest = descriptor_digest(d)?;
            let gzip = match d.media_type() {
                MediaType::ImageLayer => false,
                MediaType::ImageLayerGzip => true,
                MediaType::Other(t) if t == DOCKER_LAYER_GZIP => true,
                other => return Err(invalid(&format!("layer {digest}"), format!("unsupported media type {other}"))),
            };
            Ok(Layer { digest, size: d.size(), gzip, diff_id: Digest::parse(diff_id)? })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Image { dir: dir.to_path_buf(), manifest_digest, manifest, config, layers })
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

/// Reads a JSON blob named by `descriptor`, refusing it unless its size and digest match.
fn read_json_blob(dir: &Path, descriptor: &Descriptor) -> Result<(Digest, Vec<u8>), ImageError> {
    let digest = descriptor_digest(descriptor)?;
    if descriptor.size() > MAX_JSON_BYTES {
        return Err(ImageError::TooLarge { what: format!("blob {digest}"), limit: MAX_JSON_BYTES });
    }
    let bytes = read_bounded(&digest.blob_path(dir), &format!("blob {digest}"))?;
    check_blob(&digest, descriptor.size(), bytes.len() as u64, Digest::of(&bytes))?;
    Ok((digest, bytes))
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
