//! Images delivered encrypted. Nothing of an image leaves the publisher's machine in clear: each
//! blob an image needs (its config and every layer) is encrypted with a fresh key of its own
//! (`tpod_crypto::stream`) and named by the CID of the ciphertext, and only the keys, sealed to
//! the provider's enclave, say what the blobs hold.
//!
//! - Publisher: [`encrypt_image`] encrypts an image's blobs into a cache directory, keyed by the
//!   plaintext digest, so the same blob is encrypted once and its ciphertext re-used for every
//!   provider it is deployed to (upload once, deploy anywhere: only the key is sealed again):
//!   ```text
//!   <cache>/blobs/<cid>           ciphertexts
//!   <cache>/keys/<digest hex>     {"cid": ..., "key": ...} of a plaintext blob, owner-only
//!   ```
//! - Provider: [`open_encrypted`] turns the blobs it holds and the keys it was sent into an
//!   [`Image`] whose config is decrypted and verified in memory and whose layers are decrypted
//!   while [`crate::unpack`] streams them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};
use tpod_crypto::{BlobKey, ContentId};

use crate::read::{Blob, HashingReader, check_blob};
use crate::{Digest, Image, ImageError, Layer};

/// A blob encrypted on the publisher's machine.
#[derive(Clone, Debug)]
pub struct EncryptedBlob {
    /// The CID of the ciphertext.
    pub cid: ContentId,
    /// The key it was encrypted with.
    pub key: BlobKey,
    /// The digest of the plaintext.
    pub digest: Digest,
    /// The size of the plaintext.
    pub size: u64,
    /// The ciphertext file.
    pub path: PathBuf,
    /// The size of the ciphertext.
    pub ciphertext_size: u64,
}

/// A layer encrypted on the publisher's machine.
#[derive(Clone, Debug)]
pub struct EncryptedLayer {
    /// The layer blob.
    pub blob: EncryptedBlob,
    /// Whether the plaintext is gzip-compressed.
    pub gzip: bool,
    /// The digest of the uncompressed tar.
    pub diff_id: Digest,
}

/// An image whose blobs are encrypted, ready to upload.
#[derive(Clone, Debug)]
pub struct EncryptedImage {
    /// The digest of the image's manifest.
    pub manifest_digest: Digest,
    /// The config blob.
    pub config: EncryptedBlob,
    /// The layers, lowest first.
    pub layers: Vec<EncryptedLayer>,
}

impl EncryptedImage {
    /// Every blob: layers first, then the config.
    pub fn blobs(&self) -> impl Iterator<Item = &EncryptedBlob> {
        self.layers.iter().map(|l| &l.blob).chain([&self.config])
    }

    /// What the enclave needs to unpack the image (blob keys, CIDs, digests): the plaintext that
    /// is sealed to it. Holds the keys: wipe its encoding after use.
    pub fn keys(&self) -> tpod_wire::pb::ImageKeys {
        use tpod_wire::pb;
        let blob = |b: &EncryptedBlob| pb::EncryptedBlob {
            cid: b.cid.to_string(),
            key: b.key.as_bytes().to_vec(),
            digest: b.digest.to_string(),
            size: b.size,
        };
        pb::ImageKeys {
            manifest_digest: self.manifest_digest.to_string(),
            config: Some(blob(&self.config)),
            layers: self
                .layers
                .iter()
                .map(|l| pb::EncryptedLayer { blob: Some(blob(&l.blob)), gzip: l.gzip, diff_id: l.diff_id.to_string() })
                .collect(),
        }
    }
}

/// What the cache keeps about an encrypted blob.
#[derive(Serialize, Deserialize)]
struct CacheEntry {
    cid: String,
    key: String,
}

/// Encrypts `image`'s config and layers into `cache` (see the module docs), re-using what an
/// earlier call encrypted. Each plaintext is checked against its digest while it is encrypted.
pub fn encrypt_image(image: &Image, cache: &Path) -> Result<EncryptedImage, ImageError> {
    encrypt_image_with(image, cache, &mut |_| {})
}

/// [`encrypt_image`], telling `progress` each time more plaintext bytes are done (found in the
/// cache or encrypted): the amounts add up to the sizes of the image's blobs.
pub fn encrypt_image_with(
    image: &Image,
    cache: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<EncryptedImage, ImageError> {
    let mut layers = Vec::with_capacity(image.layers.len());
    for layer in &image.layers {
        layers.push(EncryptedLayer {
            blob: encrypt_blob(&layer.blob, cache, progress)?,
            gzip: layer.gzip,
            diff_id: layer.diff_id.clone(),
        });
    }
    Ok(EncryptedImage {
        manifest_digest: image.manifest_digest.clone(),
        config: encrypt_blob(&image.config_blob, cache, progress)?,
        layers,
    })
}

/// Tells `progress` how many bytes each read returned.
struct Reporting<'a, R> {
    inner: R,
    progress: &'a mut dyn FnMut(u64),
}

impl<R: io::Read> io::Read for Reporting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

fn encrypt_blob(blob: &Blob, cache: &Path, progress: &mut dyn FnMut(u64)) -> Result<EncryptedBlob, ImageError> {
    let blobs = cache.join("blobs");
    let keys = cache.join("keys");
    for dir in [&blobs, &keys] {
        fs::create_dir_all(dir).map_err(ImageError::io(dir))?;
    }
    let entry_path = keys.join(blob.digest.hex());
    let ciphertext_size = tpod_crypto::ciphertext_len(blob.size);
    if let Some((cid, key)) = cached(&entry_path)? {
        let path = blobs.join(cid.to_string());
        // A ciphertext of the wrong length is damaged: encrypt again. Its content is checked
        // against the CID by the provider, which refuses a damaged one.
        if fs::metadata(&path).is_ok_and(|m| m.len() == ciphertext_size) {
            progress(blob.size);
            return Ok(EncryptedBlob { cid, key, digest: blob.digest.clone(), size: blob.size, path, ciphertext_size });
        }
    }

    let key = BlobKey::generate();
    let partial = blobs.join(format!(".partial-{}", blob.digest.hex()));
    let mut out = File::create(&partial).map_err(ImageError::io(&partial))?;
    let mut plain = HashingReader::new(Reporting { inner: blob.open()?, progress });
    let (cid, written) = tpod_crypto::encrypt(&key, &mut plain, io::BufWriter::new(&mut out))
        .map_err(|e| ImageError::io(&partial)(io::Error::other(e)))?;
    let (size, digest) = plain.finish().map_err(ImageError::io(&blob.path))?;
    if let Err(error) = check_blob(&blob.digest, blob.size, size, digest) {
        let _ = fs::remove_file(&partial);
        return Err(error);
    }
    out.sync_all().map_err(ImageError::io(&partial))?;
    let path = blobs.join(cid.to_string());
    fs::rename(&partial, &path).map_err(ImageError::io(&path))?;

    let entry = CacheEntry { cid: cid.to_string(), key: hex(key.as_bytes()) };
    let json = serde_json::to_vec(&entry)
        .map_err(|source| ImageError::Json { what: entry_path.display().to_string(), source })?;
    let tmp = keys.join(format!(".tmp-{}", blob.digest.hex()));
    let _ = fs::remove_file(&tmp);
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(ImageError::io(&tmp))?;
    file.write_all(&json).and_then(|()| file.sync_all()).map_err(ImageError::io(&tmp))?;
    fs::rename(&tmp, &entry_path).map_err(ImageError::io(&entry_path))?;
    tracing::debug!(digest = %blob.digest, %cid, "blob encrypted");
    Ok(EncryptedBlob { cid, key, digest: blob.digest.clone(), size: blob.size, path, ciphertext_size: written })
}

/// The cache entry at `path`, if there is a usable one.
fn cached(path: &Path) -> Result<Option<(ContentId, BlobKey)>, ImageError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImageError::io(path)(e)),
    };
    let entry: CacheEntry = serde_json::from_slice(&bytes)
        .map_err(|source| ImageError::Json { what: path.display().to_string(), source })?;
    let cid = ContentId::parse(&entry.cid).map_err(|e| invalid(path, e.to_string()))?;
    let key = unhex(&entry.key)
        .and_then(|bytes| BlobKey::from_bytes(&bytes).ok())
        .ok_or_else(|| invalid(path, "the key is not 64 hex digits"))?;
    Ok(Some((cid, key)))
}

fn invalid(path: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::Invalid { what: path.display().to_string(), reason: reason.into() }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// On a provider: the image whose config and layers are the encrypted `config` and `layers`
/// (each [`Blob`] with its file and key), named `manifest_digest` by its publisher. The config is
/// decrypted, checked against its digest and parsed, and its `rootfs.diff_ids` must be the
/// layers' diff ids; the layers are checked while they are unpacked.
pub fn open_encrypted(manifest_digest: Digest, config_blob: Blob, layers: Vec<Layer>) -> Result<Image, ImageError> {
    let bytes = config_blob.read_json()?;
    let what = format!("config {}", config_blob.digest);
    let config: ImageConfiguration =
        serde_json::from_slice(&bytes).map_err(|source| ImageError::Json { what: what.clone(), source })?;
    let diff_ids = config.rootfs().diff_ids();
    let sent: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    if diff_ids.len() != sent.len() || diff_ids.iter().zip(&sent).any(|(a, b)| a != b) {
        return Err(ImageError::Invalid {
            what,
            reason: format!("its rootfs.diff_ids {diff_ids:?} are not the layers sent ({sent:?})"),
        });
    }
    Ok(Image { manifest_digest, config, config_blob, layers })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::{ContainerConfig, read_layout, unpack, write_layout};

    fn tar_with(name: &str, content: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, content).unwrap();
        builder.into_inner().unwrap()
    }

    fn layout(dir: &Path, marker: &[u8]) -> Image {
        let config = ContainerConfig { cmd: vec!["/bin/true".into()], ..Default::default() };
        write_layout(dir, &[tar_with("etc/marker", marker), tar_with("etc/other", b"x")], &config).unwrap();
        read_layout(dir).unwrap()
    }

    /// What the provider is given for an encrypted image.
    fn on_provider(encrypted: &EncryptedImage) -> (Blob, Vec<Layer>) {
        let blob = |b: &EncryptedBlob| Blob {
            digest: b.digest.clone(),
            size: b.size,
            path: b.path.clone(),
            key: Some(b.key.clone()),
        };
        let layers =
            encrypted.layers.iter().map(|l| Layer { blob: blob(&l.blob), gzip: l.gzip, diff_id: l.diff_id.clone() });
        (blob(&encrypted.config), layers.collect())
    }

    #[test]
    fn encrypted_blobs_hide_the_plaintext_and_unpack_to_the_same_rootfs() {
        let tmp = tempfile::tempdir().unwrap();
        let marker = b"MARKER-7f3e9a1c-in-the-layer";
        let image = layout(&tmp.path().join("layout"), marker);
        let cache = tmp.path().join("cache");
        let encrypted = encrypt_image(&image, &cache).unwrap();
        assert_eq!(encrypted.layers.len(), 2);
        for blob in encrypted.blobs() {
            let bytes = fs::read(&blob.path).unwrap();
            assert_eq!(ContentId::of(&bytes), blob.cid);
            assert_eq!(bytes.len() as u64, blob.ciphertext_size);
            assert!(!bytes.windows(marker.len()).any(|w| w == marker));
        }

        let (config, layers) = on_provider(&encrypted);
        let opened = open_encrypted(image.manifest_digest.clone(), config, layers).unwrap();
        assert_eq!(opened.config.rootfs().diff_ids(), image.config.rootfs().diff_ids());
        let rootfs = tmp.path().join("rootfs");
        unpack(&opened, &rootfs).unwrap();
        assert_eq!(fs::read(rootfs.join("etc/marker")).unwrap(), marker);
    }

    #[test]
    fn the_cache_reuses_ciphertexts_and_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let image = layout(&tmp.path().join("layout"), b"m");
        let cache = tmp.path().join("cache");
        let first = encrypt_image(&image, &cache).unwrap();
        let second = encrypt_image(&image, &cache).unwrap();
        for (a, b) in first.blobs().zip(second.blobs()) {
            assert_eq!(a.cid, b.cid);
            assert_eq!(a.key.as_bytes(), b.key.as_bytes());
        }
        let entry = cache.join("keys").join(image.layers[0].blob.digest.hex());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(entry).unwrap().permissions().mode() & 0o777, 0o600);
        // A damaged (truncated) ciphertext is encrypted afresh.
        let damaged = &first.layers[0].blob;
        File::options().write(true).open(&damaged.path).unwrap().set_len(3).unwrap();
        let third = encrypt_image(&image, &cache).unwrap();
        let redone = &third.layers[0].blob;
        assert_eq!(fs::read(&redone.path).unwrap().len() as u64, redone.ciphertext_size);
    }

    #[test]
    fn wrong_keys_tampering_and_mismatched_configs_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let image = layout(&tmp.path().join("layout"), b"m");
        let encrypted = encrypt_image(&image, &tmp.path().join("cache")).unwrap();
        let digest = image.manifest_digest.clone();

        // A config key that is not the one it was encrypted with.
        let (mut config, layers) = on_provider(&encrypted);
        config.key = Some(BlobKey::generate());
        let err = open_encrypted(digest.clone(), config, layers).unwrap_err().to_string();
        assert!(err.contains("authentication"), "{err}");

        // A flipped byte in a layer's ciphertext: refused before anything is written.
        let (config, layers) = on_provider(&encrypted);
        let opened = open_encrypted(digest.clone(), config, layers).unwrap();
        let path = &encrypted.layers[1].blob.path;
        let mut bytes = fs::read(path).unwrap();
        bytes[20] ^= 1;
        fs::write(path, bytes).unwrap();
        let rootfs = tmp.path().join("rootfs");
        let err = unpack(&opened, &rootfs).unwrap_err().to_string();
        assert!(err.contains("authentication"), "{err}");
        assert!(!rootfs.join("etc/other").exists());

        // Layers other than the config's diff ids.
        let (config, mut layers) = on_provider(&encrypted);
        layers.swap(0, 1);
        let err = open_encrypted(digest, config, layers).unwrap_err().to_string();
        assert!(err.contains("rootfs.diff_ids"), "{err}");
    }
}
