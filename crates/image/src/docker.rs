//! Importing a `docker save` tarball (a "docker archive") as an OCI image layout, so an image
//! built with docker can be deployed without going through a registry.
//!
//! A docker archive holds `manifest.json` — `[{"Config": path, "RepoTags": […], "Layers":
//! [path, …]}]` — and the files it names. Docker before 25 writes `<image id>.json` and
//! `<layer id>/layer.tar`, storing a layer repeated in the archive as a symlink (or hard link)
//! to its first copy; later versions write `blobs/sha256/<hex>` (plus their own `index.json`,
//! ignored here: `manifest.json` is what both formats share). Layers are plain tars or gzip,
//! told apart by their first bytes.
//!
//! The tarball is hostile input like any image: `manifest.json` and the config are bounded to
//! [`MAX_JSON_BYTES`], paths in `manifest.json` may not be absolute or contain `..`, links may
//! not point outside the archive, a path listed twice in the tar is refused (which copy would
//! count is ambiguous), `blobs/sha256/<hex>` files must hash to their name, and every layer must
//! hash, uncompressed, to the config's `rootfs.diff_ids` entry for it. Layers are streamed to
//! disk while they are hashed, never held in memory.
//!
//! Tar entries can only be read in order and `manifest.json` may come after the layers, so the
//! tarball is read twice: first for `manifest.json` and the links (hashing the whole file, which
//! names the cache entry), then for the config and the layers. The second read is hashed too, so
//! a tarball changed in between is refused rather than cached under the wrong name.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::str::FromStr;

use flate2::read::GzDecoder;
use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifestBuilder, MediaType, Os, PlatformBuilder};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tar::EntryType;

use crate::build::{canonical_json, host_arch, spec_error};
use crate::cache::{TempDir, sync_dir, write_index, write_synced};
use crate::read::HashingReader;
use crate::{Digest, Image, ImageError, MAX_JSON_BYTES, read_layout};

const MANIFEST: &str = "manifest.json";
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Links followed from one `manifest.json` path before giving up (a loop, or a hostile chain).
const MAX_LINK_HOPS: usize = 16;

/// Imports the docker archive `tarball` (as written by `docker save`) into
/// `cache_dir/<sha256 hex of the tarball>/` as an OCI image layout and returns
/// [`read_layout`] of it.
///
/// - If that directory already holds a readable layout, it is returned without importing again;
///   one that does not read is replaced.
/// - Only the first image listed in `manifest.json` is imported; further ones (an archive of
///   `docker save a b`) are ignored. `RepoTags` are ignored too: the image is named by its digest.
/// - The config is kept byte for byte as the config blob and each layer as it is stored (plain
///   tar or gzip); the manifest is new. Its digest is therefore the same for the same image
///   whichever docker version saved it, as long as the layers are stored the same way.
/// - The image must be for linux on this machine's architecture, as [`read_layout`] requires.
/// - The layout is written to a temporary directory in `cache_dir` and renamed into place, so
///   an interrupted or refused import leaves no layout behind (a crash may leave a `.import-…`
///   directory, never a half-written `<hex>` one).
pub fn import_docker_archive(tarball: &Path, cache_dir: &Path) -> Result<Image, ImageError> {
    let archive = Archive { path: tarball };
    let scan = archive.scan()?;
    let target = cache_dir.join(scan.digest.hex());
    if let Ok(image) = read_layout(&target) {
        return Ok(image);
    }
    fs::create_dir_all(cache_dir).map_err(ImageError::io(cache_dir))?;
    let mut tmp = TempDir::new(cache_dir, "import", scan.digest.hex())?;
    archive.convert(&scan, &tmp.path)?;
    // The caller's read must succeed before anything is published under the cache name.
    read_layout(&tmp.path)?;
    tmp.publish(&target)?;
    read_layout(&target)
}

/// One image of `manifest.json`; other keys (`RepoTags`, `LayerSources`, …) are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveImage {
    config: String,
    layers: Vec<String>,
}

/// What the first read of the tarball found.
struct Scan {
    /// The sha256 of the whole tarball.
    digest: Digest,
    /// The first image of `manifest.json`.
    image: ArchiveImage,
    /// Symlinks and hard links: archive path → the archive path it points to, `None` if it
    /// points outside the archive.
    links: HashMap<String, Option<String>>,
}

/// A layer copied into the layout's blob store.
struct StoredLayer {
    digest: Digest,
    size: u64,
    gzip: bool,
    /// The sha256 of the uncompressed tar.
    diff_id: Digest,
}

struct Archive<'a> {
    path: &'a Path,
}

impl Archive<'_> {
    fn fail(&self, reason: impl Into<String>) -> ImageError {
        ImageError::DockerArchive { archive: self.path.to_path_buf(), reason: reason.into() }
    }

    fn tar_error(&self) -> impl Fn(io::Error) -> ImageError + '_ {
        |e| self.fail(format!("malformed tar: {e}"))
    }

    fn open(&self) -> Result<tar::Archive<HashingReader<BufReader<File>>>, ImageError> {
        let file = File::open(self.path).map_err(ImageError::io(self.path))?;
        Ok(tar::Archive::new(HashingReader::new(BufReader::new(file))))
    }

    /// First read: `manifest.json`, the links, and the digest of the whole tarball.
    fn scan(&self) -> Result<Scan, ImageError> {
        let mut tar = self.open()?;
        let mut manifest = None;
        let mut links = HashMap::new();
        // Links are kept in memory until the second read; bound them like a JSON document.
        let mut link_bytes = 0u64;
        for entry in tar.entries().map_err(self.tar_error())? {
            let mut entry = entry.map_err(self.tar_error())?;
            // A name that is not a plain relative path can never be one `manifest.json` may
            // list, so it is skipped: nothing is written under archive names.
            let Some(name) = archive_path(&entry.path_bytes()) else { continue };
            let kind = entry.header().entry_type();
            if matches!(kind, EntryType::Symlink | EntryType::Link) {
                let target =
                    entry.link_name_bytes().and_then(|target| link_target(&name, &target, kind == EntryType::Symlink));
                link_bytes += (name.len() + target.as_ref().map_or(0, String::len) + 64) as u64;
                if link_bytes > MAX_JSON_BYTES {
                    return Err(self.fail(format!("more links than fit in {MAX_JSON_BYTES} bytes")));
                }
                if links.insert(name.clone(), target).is_some() {
                    return Err(self.fail(format!("{name} appears twice")));
                }
            } else if name == MANIFEST {
                if !is_file(kind) {
                    return Err(self.fail("manifest.json is not a regular file"));
                }
                if manifest.is_some() {
                    return Err(self.fail("manifest.json appears twice"));
                }
                manifest = Some(self.read_json(&mut entry, MANIFEST)?);
            }
        }
        let (_, digest) = tar.into_inner().finish().map_err(ImageError::io(self.path))?;

        let manifest = manifest.ok_or_else(|| self.fail("no manifest.json: not a docker archive"))?;
        let images: Vec<ArchiveImage> = serde_json::from_slice(&manifest)
            .map_err(|source| ImageError::Json { what: self.what(MANIFEST), source })?;
        let image = images.into_iter().next().ok_or_else(|| self.fail("manifest.json lists no image"))?;
        Ok(Scan { digest, image, links })
    }

    /// Second read: copies the config and layers into the layout at `dir` and writes the
    /// manifest, index and `oci-layout` for them.
    fn convert(&self, scan: &Scan, dir: &Path) -> Result<(), ImageError> {
        let config_src = self.resolve(scan, "config", &scan.image.config)?;
        let layer_srcs =
            scan.image.layers.iter().map(|layer| self.resolve(scan, "layer", layer)).collect::<Result<Vec<_>, _>>()?;
        if layer_srcs.contains(&config_src) {
            return Err(self.fail(format!("manifest.json lists {} as both config and layer", scan.image.config)));
        }
        let wanted: HashSet<&str> = layer_srcs.iter().map(String::as_str).collect();
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(ImageError::io(&blobs))?;

        let mut tar = self.open()?;
        let mut config = None;
        let mut stored: HashMap<String, StoredLayer> = HashMap::new();
        for entry in tar.entries().map_err(self.tar_error())? {
            let mut entry = entry.map_err(self.tar_error())?;
            let Some(name) = archive_path(&entry.path_bytes()) else { continue };
            let kind = entry.header().entry_type();
            if matches!(kind, EntryType::Symlink | EntryType::Link) {
                continue;
            }
            // Extracting the tar would let the later entry win; refuse rather than guess.
            if scan.links.contains_key(&name) {
                return Err(self.fail(format!("{name} is both a link and a file")));
            }
            let is_config = name == config_src;
            if !is_config && !wanted.contains(name.as_str()) {
                continue;
            }
            if !is_file(kind) {
                return Err(self.fail(format!("{name} is not a regular file")));
            }
            if (is_config && config.is_some()) || stored.contains_key(&name) {
                return Err(self.fail(format!("{name} appears twice")));
            }
            if is_config {
                let bytes = self.read_json(&mut entry, &format!("config {name}"))?;
                self.check_content_address(&name, &Digest::of(&bytes))?;
                config = Some(bytes);
            } else {
                let layer = self.store_layer(&mut entry, &name, dir, stored.len())?;
                stored.insert(name, layer);
            }
        }
        let (_, digest) = tar.into_inner().finish().map_err(ImageError::io(self.path))?;
        if digest != scan.digest {
            return Err(self.fail("the file changed while it was being imported"));
        }

        let missing = |kind: &str, listed: &str, src: &str| {
            let via = if listed == src { String::new() } else { format!(" (a link to {src})") };
            self.fail(format!("manifest.json lists {kind} {listed}{via} which is not in the archive"))
        };
        let config_bytes = config.ok_or_else(|| missing("config", &scan.image.config, &config_src))?;
        let layers = scan
            .image
            .layers
            .iter()
            .zip(&layer_srcs)
            .map(|(listed, src)| {
                stored.get(src).map(|layer| (listed, layer)).ok_or_else(|| missing("layer", listed, src))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|source| ImageError::Json { what: self.what(&format!("config {}", scan.image.config)), source })?;
        let arch = host_arch();
        if *config.os() != Os::Linux || *config.architecture() != arch {
            return Err(self.fail(format!(
                "the image is for {}/{}, this machine runs linux/{arch}",
                config.os(),
                config.architecture()
            )));
        }
        let diff_ids = config.rootfs().diff_ids();
        if diff_ids.len() != layers.len() {
            return Err(self.fail(format!("the config has {} diff ids for {} layers", diff_ids.len(), layers.len())));
        }
        for (i, ((listed, layer), diff_id)) in layers.iter().zip(diff_ids).enumerate() {
            let expected = Digest::parse(diff_id)
                .map_err(|_| self.fail(format!("config rootfs.diff_ids[{i}] {diff_id:?} is not a sha256 digest")))?;
            if expected != layer.diff_id {
                return Err(self.fail(format!(
                    "layer {listed} (layer {i}): its uncompressed content hashes to {}, the config's diff id is \
                     {expected}",
                    layer.diff_id
                )));
            }
        }

        let config_digest = Digest::of(&config_bytes);
        write_synced(&config_digest.blob_path(dir), &config_bytes)?;
        let layer_descriptors = layers
            .iter()
            .map(|(_, layer)| {
                let media_type = if layer.gzip { MediaType::ImageLayerGzip } else { MediaType::ImageLayer };
                descriptor(media_type, layer.size, &layer.digest)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(descriptor(MediaType::ImageConfig, config_bytes.len() as u64, &config_digest)?)
            .layers(layer_descriptors)
            .build()
            .map_err(spec_error)?;
        let manifest_json = canonical_json(&manifest)?;
        let manifest_digest = Digest::of(&manifest_json);
        write_synced(&manifest_digest.blob_path(dir), &manifest_json)?;

        let mut platform = PlatformBuilder::default().architecture(arch).os(Os::Linux);
        if let Some(variant) = config.variant() {
            platform = platform.variant(variant.clone());
        }
        let mut manifest_descriptor =
            descriptor(MediaType::ImageManifest, manifest_json.len() as u64, &manifest_digest)?;
        manifest_descriptor.set_platform(Some(platform.build().map_err(spec_error)?));
        write_index(dir, manifest_descriptor)?;
        sync_dir(&blobs)?;
        sync_dir(dir)
    }

    /// Follows links from the `manifest.json` path `listed` to the archive path holding it.
    fn resolve(&self, scan: &Scan, kind: &str, listed: &str) -> Result<String, ImageError> {
        let mut path = normalize(listed).ok_or_else(|| {
            self.fail(format!("manifest.json lists {kind} {listed:?}, which escapes the archive (absolute or `..`)"))
        })?;
        for _ in 0..MAX_LINK_HOPS {
            match scan.links.get(&path) {
                None => return Ok(path),
                Some(Some(target)) => path = target.clone(),
                Some(None) => return Err(self.fail(format!("{kind} {listed}: {path} links outside the archive"))),
            }
        }
        Err(self.fail(format!("{kind} {listed}: more than {MAX_LINK_HOPS} links to follow")))
    }

    /// Streams one layer into `dir/blobs/sha256/<digest>`, hashing it as stored and uncompressed.
    fn store_layer(&self, entry: &mut impl Read, name: &str, dir: &Path, n: usize) -> Result<StoredLayer, ImageError> {
        let layer_error = |e: io::Error| self.fail(format!("layer {name}: {e}"));
        let mut magic = [0u8; 4];
        let got = read_prefix(entry, &mut magic).map_err(layer_error)?;
        let prefix = &magic[..got];
        if prefix == ZSTD_MAGIC {
            return Err(self.fail(format!("layer {name} is zstd-compressed, which is not supported")));
        }
        let gzip = prefix.starts_with(&GZIP_MAGIC);

        // The temporary directory is ours alone, so a plain create cannot collide.
        let spool_path = dir.join("blobs").join("sha256").join(format!(".layer-{n}"));
        let file = File::create(&spool_path).map_err(ImageError::io(&spool_path))?;
        let mut spool = Spool::new(prefix.chain(entry), BufWriter::new(file));
        let diff_id = if gzip {
            // Decoded as `unpack` decodes it (the first gzip member), so the diff id checked
            // here is the one checked there; bytes after the member are still stored below.
            let plain = HashingReader::new(GzDecoder::new(&mut spool));
            Some(plain.finish().map_err(|e| self.fail(format!("layer {name}: gzip: {e}")))?.1)
        } else {
            None
        };
        let (size, digest, file) = spool.finish().map_err(layer_error)?;
        file.sync_all().map_err(ImageError::io(&spool_path))?;
        self.check_content_address(name, &digest)?;
        let blob = digest.blob_path(dir);
        // Two layer files with the same content land on the same blob: same bytes, no harm.
        fs::rename(&spool_path, &blob).map_err(ImageError::io(&blob))?;
        let diff_id = diff_id.unwrap_or_else(|| digest.clone());
        Ok(StoredLayer { digest, size, gzip, diff_id })
    }

    /// A `blobs/sha256/<hex>` file is named by its content; one that is not is corrupt.
    fn check_content_address(&self, name: &str, actual: &Digest) -> Result<(), ImageError> {
        match name.strip_prefix("blobs/sha256/") {
            Some(hex) if hex != actual.hex() => {
                Err(self.fail(format!("{name} does not hash to its name: its content is {actual}")))
            }
            _ => Ok(()),
        }
    }

    fn what(&self, document: &str) -> String {
        format!("docker archive {}: {document}", self.path.display())
    }

    /// Reads a JSON document entry of at most [`MAX_JSON_BYTES`].
    fn read_json(&self, entry: &mut impl Read, document: &str) -> Result<Vec<u8>, ImageError> {
        let too_large = || ImageError::TooLarge { what: self.what(document), limit: MAX_JSON_BYTES };
        let mut bytes = Vec::new();
        // One byte past the limit is enough to know it is too large.
        entry.take(MAX_JSON_BYTES + 1).read_to_end(&mut bytes).map_err(self.tar_error())?;
        if bytes.len() as u64 > MAX_JSON_BYTES {
            return Err(too_large());
        }
        Ok(bytes)
    }
}

fn is_file(kind: EntryType) -> bool {
    matches!(kind, EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse)
}

/// A tar entry name as a plain relative path (`./a//b` → `a/b`); `None` if it is absolute, has
/// a `..` component, is empty or is not UTF-8, since `manifest.json` cannot name such a file.
fn archive_path(raw: &[u8]) -> Option<String> {
    normalize(std::str::from_utf8(raw).ok()?)
}

/// `path` without `.` and empty components; `None` if absolute, with `..`, or empty.
fn normalize(path: &str) -> Option<String> {
    if path.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part => parts.push(part),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The archive path a link entry `name` points to: a symlink's target is relative to the
/// link's directory (legacy archives write `../<id>/layer.tar`), a hard link's to the archive
/// root. `None` if it is absolute or climbs out of the archive.
fn link_target(name: &str, target: &[u8], symlink: bool) -> Option<String> {
    let target = std::str::from_utf8(target).ok()?;
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    if symlink {
        parts.extend(name.split('/'));
        parts.pop();
    }
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Fills `buf` as far as the reader allows; fewer bytes only at the end of the stream.
fn read_prefix(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn descriptor(media_type: MediaType, size: u64, digest: &Digest) -> Result<Descriptor, ImageError> {
    let digest = oci_spec::image::Digest::from_str(digest.as_str()).map_err(spec_error)?;
    Ok(Descriptor::new(media_type, size, digest))
}

/// Writes a file and flushes it to disk, so the rename that publishes the layout never
/// publishes files a crash could still truncate.
/// A reader that copies what passes through it to a file while hashing and counting it.
struct Spool<R> {
    inner: R,
    out: BufWriter<File>,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> Spool<R> {
    fn new(inner: R, out: BufWriter<File>) -> Self {
        Self { inner, out, hasher: Sha256::new(), size: 0 }
    }

    /// Copies whatever is left, then returns the byte count, the digest and the flushed file.
    fn finish(mut self) -> io::Result<(u64, Digest, File)> {
        io::copy(&mut self, &mut io::sink())?;
        let file = self.out.into_inner().map_err(io::IntoInnerError::into_error)?;
        Ok((self.size, Digest::from_hasher(self.hasher), file))
    }
}

impl<R: Read> Read for Spool<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.out.write_all(&buf[..n])?;
        self.size += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_and_escapes_refused() {
        assert_eq!(normalize("./a//b/").as_deref(), Some("a/b"));
        assert_eq!(normalize("manifest.json").as_deref(), Some("manifest.json"));
        for bad in ["", ".", "/etc/passwd", "../x", "a/../b", "a/.."] {
            assert_eq!(normalize(bad), None, "{bad}");
        }
    }

    #[test]
    fn links_resolve_inside_the_archive_only() {
        assert_eq!(link_target("b/layer.tar", b"../a/layer.tar", true).as_deref(), Some("a/layer.tar"));
        assert_eq!(link_target("b/layer.tar", b"a/layer.tar", false).as_deref(), Some("a/layer.tar"));
        assert_eq!(link_target("b/layer.tar", b"../../etc/passwd", true), None);
        assert_eq!(link_target("b/layer.tar", b"/etc/passwd", true), None);
        assert_eq!(link_target("layer.tar", b"../x", true), None);
    }
}
