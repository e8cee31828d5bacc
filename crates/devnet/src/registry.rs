//! A private OCI registry on loopback for tests and demos: Debian's `docker-registry`
//! (distribution 2.8) with htpasswd (bcrypt) authentication, on a free port, filled with
//! oci-client's push API from image layouts.
//!
//! Needs `/usr/bin/docker-registry` and `htpasswd` (Debian packages `docker-registry` and
//! `apache2-utils`, installed by `tools/bootstrap`).

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::Reference;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use tpod_image::Digest;

use crate::error::DevnetError;

/// Where Debian installs the registry.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
/// The media type of an OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The media type of an OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// How long the registry may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A local `docker-registry` on loopback with htpasswd auth, for tests and demos; killed on drop
/// (and its storage removed).
#[derive(Debug)]
pub struct LocalRegistry {
    child: Option<Child>,
    /// `127.0.0.1:<port>`.
    addr: String,
    username: String,
    password: String,
    dir: tempfile::TempDir,
}

impl LocalRegistry {
    /// Starts a registry on a free loopback port accepting only `username` and `password`, and
    /// waits until it listens.
    pub fn start(username: &str, password: &str) -> Result<Self, DevnetError> {
        let dir = tempfile::tempdir().map_err(|e| DevnetError::io(Path::new("temporary directory"), e))?;
        let htpasswd_path = dir.path().join("htpasswd");
        fs::write(&htpasswd_path, htpasswd(username, password)?).map_err(|e| DevnetError::io(&htpasswd_path, e))?;

        // A free port: bound, read, released (the registry binds it a moment later).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| DevnetError::io(Path::new("127.0.0.1:0"), e))?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let root = dir.path().display();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {root}/storage\n\
             http:\n  addr: {addr}\n  secret: local-registry-secret\n\
             auth:\n  htpasswd:\n    realm: tpod\n    path: {root}/htpasswd\n"
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).map_err(|e| DevnetError::io(&config_path, e))?;
        let log_path = dir.path().join("registry.log");
        let log = fs::File::create(&log_path).map_err(|e| DevnetError::io(&log_path, e))?;
        let log_err = log.try_clone().map_err(|e| DevnetError::io(&log_path, e))?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    DevnetError::RegistryToolMissing { tool: REGISTRY_BIN.into(), package: "docker-registry" }
                }
                _ => DevnetError::RegistryFailed {
                    reason: format!("cannot run {REGISTRY_BIN}: {e}"),
                    log: log_path.clone(),
                },
            })?;
        let mut registry =
            Self { child: Some(child), addr, username: username.to_owned(), password: password.to_owned(), dir };
        registry.wait_listening()?;
        Ok(registry)
    }

    fn wait_listening(&mut self) -> Result<(), DevnetError> {
        let started = Instant::now();
        while TcpStream::connect(&self.addr).is_err() {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(self.failed(format!("it exited with {status}")));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(self.failed(format!(
                    "it did not listen on {} within {}s",
                    self.addr,
                    START_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn failed(&self, reason: String) -> DevnetError {
        DevnetError::RegistryFailed { reason, log: self.log_path() }
    }

    /// Its address, `127.0.0.1:<port>`: the registry part of image references.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The image reference `<addr>/<rest>`, e.g. `127.0.0.1:5000/hello:1` for `hello:1`.
    pub fn reference(&self, rest: &str) -> String {
        format!("{}/{rest}", self.addr)
    }

    /// The registry's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// What the registry has logged so far (empty if the log cannot be read).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops the registry now (to test what happens when it is gone); its storage stays until
    /// this is dropped.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A plain-HTTP client for this registry, authenticated to push to `reference`.
    async fn client(&self, reference: &Reference) -> Result<oci_client::Client, DevnetError> {
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(vec![self.addr.clone()]),
            ..ClientConfig::default()
        });
        let auth = RegistryAuth::Basic(self.username.clone(), self.password.clone());
        client
            .auth(reference, &auth, oci_client::RegistryOperation::Push)
            .await
            .map_err(|e| push_failed(reference, format!("authentication: {e}")))?;
        Ok(client)
    }

    fn parse_reference(&self, repo_tag: &str) -> Result<Reference, DevnetError> {
        let reference = self.reference(repo_tag);
        reference.parse().map_err(|e| DevnetError::RegistryPush {
            reference: reference.clone(),
            reason: format!("not an image reference: {e}"),
        })
    }

    /// Pushes the blobs of the image layout at `layout` that the manifest `manifest_digest`
    /// names, then that manifest byte for byte (so its digest stays the layout's), as `repo:tag`.
    pub async fn push_layout(
        &self,
        layout: &Path,
        manifest_digest: &Digest,
        repo_tag: &str,
    ) -> Result<(), DevnetError> {
        let path = manifest_digest.blob_path(layout);
        let manifest = fs::read(&path).map_err(|e| DevnetError::io(&path, e))?;
        self.push_blobs(layout, &manifest, repo_tag).await?;
        self.push_manifest(manifest, OCI_MANIFEST, repo_tag).await?;
        Ok(())
    }

    /// Pushes the config and layer blobs that `manifest` (an image manifest's JSON) names, read
    /// from the image layout at `layout`, to the repository of `repo:tag`.
    pub async fn push_blobs(&self, layout: &Path, manifest: &[u8], repo_tag: &str) -> Result<(), DevnetError> {
        let reference = self.parse_reference(repo_tag)?;
        let manifest: serde_json::Value = serde_json::from_slice(manifest)
            .map_err(|e| push_failed(&reference, format!("the manifest is not JSON: {e}")))?;
        let layers = manifest["layers"]
            .as_array()
            .ok_or_else(|| push_failed(&reference, "the manifest has no `layers` array".into()))?;
        let client = self.client(&reference).await?;
        for blob in std::iter::once(&manifest["config"]).chain(layers) {
            let digest = blob["digest"]
                .as_str()
                .ok_or_else(|| push_failed(&reference, format!("a blob without a digest in the manifest: {blob}")))?;
            let digest = Digest::parse(digest).map_err(|e| push_failed(&reference, e.to_string()))?;
            let path = digest.blob_path(layout);
            let bytes = fs::read(&path).map_err(|e| DevnetError::io(&path, e))?;
            client
                .push_blob(&reference, bytes, digest.as_str())
                .await
                .map_err(|e| push_failed(&reference, format!("blob {digest}: {e}")))?;
        }
        Ok(())
    }

    /// Pushes a manifest or index of media type `media_type` as `repo:tag`; returns its digest.
    /// The blobs it names must be pushed first.
    pub async fn push_manifest(&self, bytes: Vec<u8>, media_type: &str, repo_tag: &str) -> Result<Digest, DevnetError> {
        let reference = self.parse_reference(repo_tag)?;
        let digest = Digest::of(&bytes);
        let content_type =
            media_type.try_into().map_err(|e| push_failed(&reference, format!("media type {media_type:?}: {e}")))?;
        self.client(&reference)
            .await?
            .push_manifest_raw(&reference, bytes, content_type)
            .await
            .map_err(|e| push_failed(&reference, format!("manifest: {e}")))?;
        Ok(digest)
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        self.kill();
    }
}

fn push_failed(reference: &Reference, reason: String) -> DevnetError {
    DevnetError::RegistryPush { reference: reference.whole(), reason }
}

/// An htpasswd line (bcrypt) for `username` and `password`, made by `htpasswd`; the password
/// goes through its stdin, not its command line.
fn htpasswd(username: &str, password: &str) -> Result<Vec<u8>, DevnetError> {
    let missing = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => {
            DevnetError::RegistryToolMissing { tool: "htpasswd".into(), package: "apache2-utils" }
        }
        _ => DevnetError::io(Path::new("htpasswd"), e),
    };
    let mut child = Command::new("htpasswd")
        .args(["-nBi", username])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(missing)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(password.as_bytes()).map_err(|e| DevnetError::io(Path::new("htpasswd"), e))?;
    }
    let out = child.wait_with_output().map_err(|e| DevnetError::io(Path::new("htpasswd"), e))?;
    if !out.status.success() {
        return Err(DevnetError::RegistryHtpasswd {
            reason: format!("it exited with {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(out.stdout)
}
