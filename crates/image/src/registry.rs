//! Pulling images from a registry (the OCI distribution API) into an image layout in a cache
//! directory, so a pod can name `image: registry.example.com/app:1.0`.
//!
//! # Sources
//!
//! [`pull_image`] takes a reference such as `registry.example.com/app:1.0`,
//! `docker.io/library/busybox:1.36` or `127.0.0.1:5000/hello@sha256:…`. Registries on a loopback
//! address (`127.0.0.1`, `localhost`, `::1`) are spoken to over plain HTTP, every other one over
//! HTTPS. An image index (multi-platform image) is resolved to its manifest for linux on this
//! machine's architecture.
//!
//! # Credentials
//!
//! Looked up in this order:
//!
//! 1. an explicit [`RegistryAuth`] given to [`pull_image`] (the CLI reads it from a file named by
//!    a flag, or from stdin — never from the command line, where other users could see it);
//! 2. else the docker config file, `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`
//!    ([`docker_config_auth`]): its `auths.<registry>` entry, either `auth` (base64 of
//!    `user:pass`) or `username` and `password`. Credential helpers (`credsStore`,
//!    `credHelpers`) and identity tokens are not supported: if the config sends this registry's
//!    credentials to one, the pull fails saying so rather than silently going anonymous;
//! 3. else anonymous.
//!
//! Credentials are never logged, and [`RegistryAuth`]'s `Debug` redacts the password.
//!
//! # What is checked
//!
//! The registry is not trusted more than any other image source. Manifests and configs are
//! bounded to [`MAX_JSON_BYTES`], layers to [`MAX_LAYER_BYTES`] (both checked against the
//! descriptor before downloading, and against the bytes as they arrive); every blob is hashed as
//! it streams to disk and refused unless it matches its descriptor's digest and size. Layers must
//! be tar, tar+gzip (OCI) or tar.gzip (docker); zstd and foreign layers are refused before
//! anything is downloaded. The image config must be for linux on this machine's architecture.
//!
//! # Cache
//!
//! Each image is written to `cache_dir/<hex of the registry's manifest digest>/` as an OCI image
//! layout, first in a temporary directory that is renamed into place once [`read_layout`]
//! accepts it, so a crash never leaves a half-written layout under that name. A later pull of
//! the same manifest reuses it without downloading blobs; a pull by digest
//! (`…@sha256:…`, of the manifest or of an index) that is in the cache does not contact the
//! registry at all. A pull by tag always asks the registry what the tag points to.
//!
//! An OCI manifest is stored byte for byte, so [`Image::manifest_digest`] is the registry's
//! digest. A docker (schema 2) manifest is rewritten as an OCI manifest naming the same config
//! and layer blobs, so its [`Image::manifest_digest`] differs from the registry's (the cache
//! directory keeps the registry's name).

use std::fmt;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt as _;
use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth as OciAuth;
use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageManifest, ImageManifestBuilder, MediaType, Os, PlatformBuilder,
};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tracing::{debug, info};

use crate::build::{canonical_json, host_arch, spec_error};
use crate::cache::{TempDir, write_index, write_synced};
use crate::{Digest, Image, ImageError, MAX_JSON_BYTES, read_layout};

/// The largest layer blob accepted, as stored (compressed or not), in bytes.
pub const MAX_LAYER_BYTES: u64 = 4 << 30;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Credentials for one registry (never printed: `Debug` redacts the password).
///
/// Where they come from, in this order: an explicit `RegistryAuth` (the CLI fills it from a flag
/// naming a file, or from stdin — never from argv), else the docker config file
/// ([`docker_config_auth`]), else anonymous.
#[derive(Clone)]
pub struct RegistryAuth {
    /// The user name.
    pub username: String,
    /// The password or access token.
    pub password: String,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// Reads the credentials for `registry` (e.g. `registry.example.com`, `127.0.0.1:5000`,
/// `docker.io`) from a docker config file: `config_path`, or if `None`
/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
///
/// Returns `Ok(None)` when the file (at the default location) does not exist or has no entry for
/// the registry. An `auths` key matches with or without a scheme and path
/// (`https://registry.example.com/v1/`), and `docker.io`, `index.docker.io` and
/// `registry-1.docker.io` are one registry. The entry's `auth` (base64 of `user:pass`) or its
/// `username` and `password` are used.
///
/// Credential helpers are not supported: if `credHelpers` names one for this registry, or
/// `credsStore` is set and the registry's `auths` entry holds no credentials (which is how docker
/// records a login stored in the helper), this fails, naming the helper.
pub fn docker_config_auth(registry: &str, config_path: Option<&Path>) -> Result<Option<RegistryAuth>, ImageError> {
    let path = match config_path {
        Some(path) => path.to_path_buf(),
        None => match default_docker_config() {
            Some(path) if path.exists() => path,
            _ => return Ok(None),
        },
    };
    let bytes = fs::read(&path).map_err(ImageError::io(&path))?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(ImageError::TooLarge { what: format!("docker config {}", path.display()), limit: MAX_JSON_BYTES });
    }
    let fail = |reason: String| ImageError::DockerConfig { path: path.clone(), reason };
    let config: DockerConfigFile = serde_json::from_slice(&bytes).map_err(|e| fail(format!("invalid JSON: {e}")))?;
    let wanted = canonical_registry(registry);

    if let Some((_, helper)) = config.cred_helpers.iter().find(|(key, _)| canonical_registry(config_key(key)) == wanted)
    {
        return Err(fail(format!(
            "credHelpers sends {registry}'s credentials to docker-credential-{helper}, and credential helpers \
             are not supported: give the credentials explicitly"
        )));
    }
    // An exact key first, then any key naming the same registry.
    let entry = config.auths.get(registry).or_else(|| {
        config.auths.iter().find(|(key, _)| canonical_registry(config_key(key)) == wanted).map(|(_, entry)| entry)
    });
    let Some(entry) = entry else {
        return Ok(None);
    };
    if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(auth.trim()))
            .map_err(|_| fail(format!("auths entry for {registry}: `auth` is not base64")))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| fail(format!("auths entry for {registry}: `auth` is not UTF-8 \"user:password\"")))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| fail(format!("auths entry for {registry}: `auth` is not \"user:password\"")))?;
        return Ok(Some(RegistryAuth { username: username.to_owned(), password: password.to_owned() }));
    }
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Some(RegistryAuth { username: username.clone(), password: password.clone() }));
    }
    if entry.identity_token.is_some() {
        return Err(fail(format!(
            "auths entry for {registry} holds an identity token, which is not supported: give a username and \
             password explicitly"
        )));
    }
    if let Some(store) = &config.creds_store {
        return Err(fail(format!(
            "{registry}'s credentials are kept by the credential store docker-credential-{store} (credsStore), \
             and credential helpers are not supported: give the credentials explicitly"
        )));
    }
    Ok(None)
}

/// The parts of `config.json` read here; everything else (`HttpHeaders`, `proxies`, …) is
/// ignored.
#[derive(serde::Deserialize)]
struct DockerConfigFile {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, DockerAuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(serde::Deserialize)]
struct DockerAuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
}

fn default_docker_config() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".docker").join("config.json"))
}

/// `https://registry.example.com/v1/` → `registry.example.com`.
fn config_key(key: &str) -> &str {
    let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

/// Docker Hub goes by several names.
fn canonical_registry(registry: &str) -> &str {
    match registry {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        other => other,
    }
}

/// Pulls `reference` (e.g. `127.0.0.1:5000/hello:1`, `docker.io/library/busybox:1.36`, or with
/// `@sha256:…`) for linux on this machine's architecture into an image layout under
/// `cache_dir`, and returns [`read_layout`] of it.
///
/// - Registries on a loopback address (`127.0.0.1`, `localhost`, `::1`) are spoken to over plain
///   HTTP, all others over HTTPS.
/// - `auth` `None` means: the docker config's credentials for the registry if it has some
///   ([`docker_config_auth`]), else anonymous.
/// - An image index is resolved to its manifest for linux on this machine's architecture.
/// - Manifests and configs are bounded to [`MAX_JSON_BYTES`], layers to [`MAX_LAYER_BYTES`];
///   each blob streams to disk, hashed as it comes, and is refused unless it matches its
///   descriptor's digest and size. Layers must be tar or tar+gzip (OCI or docker media types).
/// - The layout goes to `cache_dir/<hex of the registry's manifest digest>/`, written to a
///   temporary directory and renamed into place. A later pull of the same manifest downloads no
///   blobs; a pull by a digest (of the manifest or of an index) already in the cache does not
///   contact the registry at all.
/// - An OCI manifest is kept byte for byte, so the [`Image::manifest_digest`] is the registry's;
///   a docker schema 2 manifest is rewritten as an OCI one naming the same blobs.
pub async fn pull_image(reference: &str, auth: Option<&RegistryAuth>, cache_dir: &Path) -> Result<Image, ImageError> {
    let parsed = Reference::from_str(reference)
        .map_err(|e| ImageError::Invalid { what: format!("image reference {reference:?}"), reason: e.to_string() })?;
    let registry = parsed.registry().to_owned();

    // A digest already in the cache needs no registry (nor credentials).
    if let Some(digest) = parsed.digest() {
        let digest = Digest::parse(digest)?;
        if let Some(image) = cached(cache_dir, &digest) {
            info!(reference, "image found in the cache");
            return Ok(image);
        }
    }

    let from_config;
    let auth = match auth {
        Some(auth) => Some(auth),
        None => {
            from_config = docker_config_auth(&registry, None)?;
            if from_config.is_some() {
                debug!(registry, "using credentials from the docker config");
            }
            from_config.as_ref()
        }
    };
    let auth = auth.map_or(OciAuth::Anonymous, |a| OciAuth::Basic(a.username.clone(), a.password.clone()));
    Puller::new(reference, parsed, auth).pull(cache_dir).await
}

/// One pull: the client and what errors need to name.
struct Puller<'a> {
    /// The reference as given.
    given: &'a str,
    reference: Reference,
    /// The registry as written in the reference (`docker.io` for Docker Hub).
    registry: String,
    auth: OciAuth,
    client: oci_client::Client,
}

/// A manifest as fetched: its bytes and digest.
struct Fetched {
    digest: Digest,
    bytes: Vec<u8>,
}

impl<'a> Puller<'a> {
    fn new(given: &'a str, reference: Reference, auth: OciAuth) -> Self {
        let endpoint = reference.resolve_registry().to_owned();
        let protocol =
            if is_loopback(&endpoint) { ClientProtocol::HttpsExcept(vec![endpoint]) } else { ClientProtocol::Https };
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(120)),
            ..ClientConfig::default()
        };
        let registry = reference.registry().to_owned();
        Self { given, reference, registry, auth, client: oci_client::Client::new(config) }
    }

    async fn pull(&self, cache_dir: &Path) -> Result<Image, ImageError> {
        info!(reference = self.given, "pulling image");
        // Asks `/v2/` how to authenticate (and fetches a token if the registry uses them), so an
        // unreachable registry or refused credentials are reported before anything else.
        self.client
            .auth(&self.reference, &self.auth, oci_client::RegistryOperation::Pull)
            .await
            .map_err(|e| self.error(e, Fetching::Manifest))?;

        let top = self.fetch_manifest(&self.reference).await?;
        let (index_digest, manifest) = if is_index(&top)? {
            let entry = self.select_platform(&top)?;
            let manifest = self.fetch_manifest(&self.reference.clone_with_digest(entry.to_string())).await?;
            if manifest.digest != entry {
                return Err(self.fail(format!("manifest {entry} hashes to {}", manifest.digest)));
            }
            (Some(top.digest), manifest)
        } else {
            (None, top)
        };

        let target = cache_dir.join(manifest.digest.hex());
        let image = match cached(cache_dir, &manifest.digest) {
            Some(image) => {
                info!(reference = self.given, dir = %target.display(), "image found in the cache");
                image
            }
            None => {
                fs::create_dir_all(cache_dir).map_err(ImageError::io(cache_dir))?;
                let mut tmp = TempDir::new(cache_dir, "pull", manifest.digest.hex())?;
                self.write_layout(&manifest, &tmp.path).await?;
                // What is published under the cache name must read.
                read_layout(&tmp.path)?;
                tmp.publish(&target)?;
                info!(reference = self.given, dir = %target.display(), "image pulled");
                read_layout(&target)?
            }
        };
        if let Some(index_digest) = index_digest {
            write_alias(cache_dir, &index_digest, &manifest.digest)?;
        }
        Ok(image)
    }

    /// Fetches a manifest or index, bounded and checked against the reference's digest.
    async fn fetch_manifest(&self, reference: &Reference) -> Result<Fetched, ImageError> {
        let accepted = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST];
        // oci-client reads the whole response before returning it; the limit is applied after.
        let (bytes, _) = self
            .client
            .pull_manifest_raw(reference, &self.auth, &accepted)
            .await
            .map_err(|e| self.error(e, Fetching::Manifest))?;
        let what = format!("manifest of {}", self.given);
        if bytes.len() as u64 > MAX_JSON_BYTES {
            return Err(ImageError::TooLarge { what, limit: MAX_JSON_BYTES });
        }
        let digest = Digest::of(&bytes);
        if let Some(expected) = reference.digest()
            && expected != digest.as_str()
        {
            return Err(ImageError::DigestMismatch { digest: Digest::parse(expected)?, actual: digest });
        }
        debug!(reference = self.given, %digest, "fetched manifest");
        Ok(Fetched { digest, bytes: bytes.to_vec() })
    }

    /// The digest of the index entry for linux on this machine's architecture.
    fn select_platform(&self, index: &Fetched) -> Result<Digest, ImageError> {
        let index: ImageIndex = parse_json(&index.bytes, &format!("image index {}", index.digest))?;
        let arch = host_arch();
        let mut available = Vec::new();
        for entry in index.manifests() {
            let Some(platform) = entry.platform() else { continue };
            if *platform.os() == Os::Linux && *platform.architecture() == arch {
                return Digest::parse(entry.digest().as_ref());
            }
            // Attestation manifests are listed as unknown/unknown.
            if platform.os().to_string() != "unknown" {
                available.push(format!("{}/{}", platform.os(), platform.architecture()));
            }
        }
        Err(self.fail(format!(
            "{} has no image for linux/{arch} (it has: {})",
            self.given,
            if available.is_empty() { "none".to_owned() } else { available.join(", ") }
        )))
    }

    /// Downloads the config and layers of `manifest` and writes an image layout to `dir`.
    async fn write_layout(&self, manifest: &Fetched, dir: &Path) -> Result<(), ImageError> {
        let what = format!("manifest {}", manifest.digest);
        let parsed: ImageManifest = parse_json(&manifest.bytes, &what)?;
        if parsed.schema_version() != 2 {
            return Err(self.fail(format!("{what}: schemaVersion {} is not supported", parsed.schema_version())));
        }
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(ImageError::io(&blobs))?;

        // The config: bounded, kept in memory to check the platform, stored byte for byte.
        let config_descriptor = parsed.config();
        let config_digest = Digest::parse(config_descriptor.digest().as_ref())?;
        let config_media_type = config_descriptor.media_type().to_string();
        if config_media_type != OCI_CONFIG && config_media_type != DOCKER_CONFIG {
            return Err(self.fail(format!("{what}: config media type {config_media_type} is not an image config")));
        }
        if config_descriptor.size() > MAX_JSON_BYTES {
            return Err(ImageError::TooLarge { what: format!("config {config_digest}"), limit: MAX_JSON_BYTES });
        }
        let mut config_bytes = Vec::new();
        self.download(&config_digest, config_descriptor.size(), &mut config_bytes).await?;
        let config: ImageConfiguration = parse_json(&config_bytes, &format!("config {config_digest}"))?;
        let arch = host_arch();
        if *config.os() != Os::Linux || *config.architecture() != arch {
            return Err(self.fail(format!(
                "{} is an image for {}/{}, not linux/{arch}",
                self.given,
                config.os(),
                config.architecture()
            )));
        }
        write_synced(&config_digest.blob_path(dir), &config_bytes)?;

        // Layers: media types checked before anything is downloaded.
        let mut rewrite = parsed.media_type().as_ref().is_some_and(|t| t.to_string() != OCI_MANIFEST)
            || config_media_type != OCI_CONFIG;
        let mut layers = Vec::with_capacity(parsed.layers().len());
        for layer in parsed.layers() {
            let digest = Digest::parse(layer.digest().as_ref())?;
            let media_type = match layer.media_type().to_string().as_str() {
                OCI_LAYER => MediaType::ImageLayer,
                OCI_LAYER_GZIP => MediaType::ImageLayerGzip,
                DOCKER_LAYER => {
                    rewrite = true;
                    MediaType::ImageLayer
                }
                DOCKER_LAYER_GZIP => MediaType::Other(DOCKER_LAYER_GZIP.to_owned()),
                other => {
                    return Err(self.fail(format!(
                        "layer {digest} has media type {other}; only tar and tar+gzip layers are supported"
                    )));
                }
            };
            if layer.size() > MAX_LAYER_BYTES {
                return Err(ImageError::TooLarge { what: format!("layer {digest}"), limit: MAX_LAYER_BYTES });
            }
            layers.push((digest, layer.size(), media_type));
        }
        for (digest, size, _) in &layers {
            let path = digest.blob_path(dir);
            if path.exists() {
                continue; // the same layer twice in one image
            }
            debug!(reference = self.given, layer = %digest, size, "downloading layer");
            let file = tokio::fs::File::create(&path).await.map_err(ImageError::io(&path))?;
            let mut out = tokio::io::BufWriter::new(file);
            self.download(digest, *size, &mut out).await?;
            out.flush().await.map_err(ImageError::io(&path))?;
            out.into_inner().sync_all().await.map_err(ImageError::io(&path))?;
        }

        // The manifest: byte for byte if OCI, else an OCI one naming the same blobs.
        let manifest_bytes = if rewrite {
            let config_descriptor = descriptor(MediaType::ImageConfig, config_descriptor.size(), &config_digest)?;
            let layer_descriptors = layers
                .into_iter()
                .map(|(digest, size, media_type)| {
                    let media_type = match media_type {
                        MediaType::Other(t) if t == DOCKER_LAYER_GZIP => MediaType::ImageLayerGzip,
                        other => other,
                    };
                    descriptor(media_type, size, &digest)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let manifest = ImageManifestBuilder::default()
                .schema_version(2u32)
                .media_type(MediaType::ImageManifest)
                .config(config_descriptor)
                .layers(layer_descriptors)
                .build()
                .map_err(spec_error)?;
            debug!(reference = self.given, "rewriting the docker manifest as an OCI manifest");
            canonical_json(&manifest)?
        } else {
            manifest.bytes.clone()
        };
        let manifest_digest = Digest::of(&manifest_bytes);
        write_synced(&manifest_digest.blob_path(dir), &manifest_bytes)?;

        let mut manifest_descriptor =
            descriptor(MediaType::ImageManifest, manifest_bytes.len() as u64, &manifest_digest)?;
        manifest_descriptor.set_platform(Some(
            PlatformBuilder::default().architecture(arch).os(Os::Linux).build().map_err(spec_error)?,
        ));
        write_index(dir, manifest_descriptor)
    }

    /// Streams the blob `digest` into `out`, refusing it unless it is exactly `size` bytes that
    /// hash to `digest`; stops reading as soon as it is longer.
    async fn download(
        &self,
        digest: &Digest,
        size: u64,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<(), ImageError> {
        let mut stream = self
            .client
            .pull_blob_stream(&self.reference, digest.as_str())
            .await
            .map_err(|e| self.error(e, Fetching::Blob(digest)))?;
        if let Some(length) = stream.content_length
            && length != size
        {
            return Err(ImageError::SizeMismatch { digest: digest.clone(), expected: size, actual: length });
        }
        let mut hasher = Sha256::new();
        let mut count = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                // oci-client checks the digest too, and fails the stream's end on a mismatch:
                // report that as one, with what was actually received.
                Err(e) => {
                    let actual = Digest::from_hasher(hasher);
                    if count == size && actual != *digest {
                        return Err(ImageError::DigestMismatch { digest: digest.clone(), actual });
                    }
                    return Err(self.fail(format!("downloading blob {digest}: {}", chain(&e))));
                }
            };
            count += chunk.len() as u64;
            if count > size {
                return Err(ImageError::SizeMismatch { digest: digest.clone(), expected: size, actual: count });
            }
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(|e| self.fail(format!("writing blob {digest}: {e}")))?;
        }
        if count != size {
            return Err(ImageError::SizeMismatch { digest: digest.clone(), expected: size, actual: count });
        }
        let actual = Digest::from_hasher(hasher);
        if actual != *digest {
            return Err(ImageError::DigestMismatch { digest: digest.clone(), actual });
        }
        Ok(())
    }

    fn fail(&self, message: String) -> ImageError {
        ImageError::Registry { registry: self.registry.clone(), message }
    }

    /// Turns an oci-client error into one that says what went wrong in this pull.
    fn error(&self, error: OciDistributionError, fetching: Fetching<'_>) -> ImageError {
        let registry = self.registry.clone();
        let auth = || {
            if self.auth != OciAuth::Anonymous {
                ImageError::RegistryAuthFailed { registry: registry.clone() }
            } else {
                ImageError::RegistryAuthRequired { registry: registry.clone() }
            }
        };
        let not_found = || match fetching {
            Fetching::Manifest => {
                ImageError::ImageNotFound { reference: self.given.to_owned(), registry: registry.clone() }
            }
            Fetching::Blob(digest) => {
                self.fail(format!("blob {digest} of {} is missing from the registry", self.given))
            }
        };
        match error {
            OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => auth(),
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes.iter().any(|c| matches!(c, OciErrorCode::Unauthorized)) {
                    auth()
                } else if codes.iter().any(|c| {
                    matches!(c, OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::BlobUnknown)
                }) {
                    not_found()
                } else {
                    let messages: Vec<String> =
                        envelope.errors.iter().map(|e| format!("{:?}: {}", e.code, e.message)).collect();
                    self.fail(format!("pulling {}: {}", self.given, messages.join("; ")))
                }
            }
            OciDistributionError::ServerError { code: 401, .. } => auth(),
            OciDistributionError::ServerError { code: 404, .. } => not_found(),
            OciDistributionError::ServerError { code, message, .. } => {
                let mut message = message.trim().to_owned();
                if message.len() > 200 {
                    let mut end = 200;
                    while !message.is_char_boundary(end) {
                        end -= 1;
                    }
                    message.truncate(end);
                    message.push('…');
                }
                self.fail(format!("pulling {}: HTTP {code}: {message}", self.given))
            }
            OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
                ImageError::RegistryUnreachable { registry, message: chain(&e) }
            }
            other => self.fail(format!("pulling {}: {}", self.given, chain(&other))),
        }
    }
}

#[derive(Clone, Copy)]
enum Fetching<'a> {
    Manifest,
    Blob(&'a Digest),
}

/// An error and its causes, `: `-separated (reqwest puts "connection refused" in a source).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

/// Whether `endpoint` (`host` or `host:port`) is on this machine, so plain HTTP is acceptable.
fn is_loopback(endpoint: &str) -> bool {
    let host = if let Some(rest) = endpoint.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host)
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether a fetched manifest is an index (multi-platform), from its media type or its shape.
fn is_index(manifest: &Fetched) -> Result<bool, ImageError> {
    let value: serde_json::Value = parse_json(&manifest.bytes, &format!("manifest {}", manifest.digest))?;
    Ok(match value.get("mediaType").and_then(|t| t.as_str()) {
        Some(t) => t == OCI_INDEX || t == DOCKER_MANIFEST_LIST,
        None => value.get("manifests").is_some(),
    })
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ImageError> {
    serde_json::from_slice(bytes).map_err(|source| ImageError::Json { what: what.to_owned(), source })
}

fn descriptor(media_type: MediaType, size: u64, digest: &Digest) -> Result<Descriptor, ImageError> {
    let oci_digest = oci_spec::image::Digest::from_str(digest.as_str()).map_err(spec_error)?;
    Ok(Descriptor::new(media_type, size, oci_digest))
}

/// The complete layout for `digest` in the cache: the directory named after it, or, for an
/// index, the one its alias file names.
fn cached(cache_dir: &Path, digest: &Digest) -> Option<Image> {
    let complete = |dir: &Path| {
        let image = read_layout(dir).ok()?;
        image
            .layers
            .iter()
            .all(|l| fs::metadata(&l.blob.path).is_ok_and(|m| m.is_file() && m.len() == l.blob.size))
            .then_some(image)
    };
    if let Some(image) = complete(&cache_dir.join(digest.hex())) {
        return Some(image);
    }
    let alias = fs::read_to_string(alias_path(cache_dir, digest)).ok()?;
    complete(&cache_dir.join(Digest::parse(alias.trim()).ok()?.hex()))
}

/// `cache_dir/<index hex>.linux-<arch>`: which manifest of the index this machine uses.
fn alias_path(cache_dir: &Path, index: &Digest) -> PathBuf {
    cache_dir.join(format!("{}.linux-{}", index.hex(), host_arch()))
}

fn write_alias(cache_dir: &Path, index: &Digest, manifest: &Digest) -> Result<(), ImageError> {
    let path = alias_path(cache_dir, index);
    let tmp = cache_dir.join(format!(".alias-{}-{}", index.hex(), std::process::id()));
    write_synced(&tmp, manifest.as_str().as_bytes())?;
    fs::rename(&tmp, &path).map_err(ImageError::io(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_recognised() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com"));
        assert!(!is_loopback("10.0.0.1:5000"));
        assert!(!is_loopback("localhost.example.com:5000"));
    }

    #[test]
    fn docker_hub_names_and_config_keys_match() {
        assert_eq!(canonical_registry(config_key("https://index.docker.io/v1/")), "docker.io");
        assert_eq!(config_key("http://127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(config_key("registry.example.com"), "registry.example.com");
    }

    #[test]
    fn debug_redacts_the_password() {
        let auth = RegistryAuth { username: "user".into(), password: "hunter2".into() };
        let printed = format!("{auth:?}");
        assert!(printed.contains("user") && !printed.contains("hunter2"), "{printed}");
    }
}
