//! Pulling from a real registry: Debian's `docker-registry` (distribution 2.8), started by each
//! test on a free loopback port with htpasswd (bcrypt) authentication by
//! `tpod_devnet::registry::LocalRegistry`, and filled from an image layout written by
//! `write_layout`.
//!
//! Needs `/usr/bin/docker-registry` and `htpasswd` (Debian packages `docker-registry` and
//! `apache2-utils`, installed by `tools/bootstrap`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;

use tpod_devnet::registry::{LocalRegistry, OCI_INDEX, OCI_MANIFEST};
use tpod_image::{ContainerConfig, Digest, ImageError, RegistryAuth, docker_config_auth, pull_image, write_layout};

const USER: &str = "tpod";
const PASSWORD: &str = "correct horse";

/// A registry accepting [`USER`] and [`PASSWORD`], or a panic naming what is missing.
fn start_registry() -> LocalRegistry {
    LocalRegistry::start(USER, PASSWORD).unwrap_or_else(|e| panic!("{e}"))
}

/// An OCI index naming `manifest` (of `size` bytes) for each of `architectures`, linux.
fn index(manifest: &Digest, size: usize, architectures: &[&str]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = architectures
        .iter()
        .map(|arch| {
            serde_json::json!({
                "mediaType": OCI_MANIFEST,
                "digest": manifest.as_str(),
                "size": size,
                "platform": {"os": "linux", "architecture": arch},
            })
        })
        .collect();
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    serde_json::to_vec(&index).unwrap()
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// A small image: one layer with a directory and a file. Returns its manifest digest.
fn small_image(layout: &Path) -> Digest {
    let mut tar = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    tar.append_data(&mut dir, "www", std::io::empty()).unwrap();
    let body = b"hello from the registry\n";
    let mut file = tar::Header::new_gnu();
    file.set_mode(0o644);
    file.set_size(body.len() as u64);
    tar.append_data(&mut file, "www/index.html", &body[..]).unwrap();
    let layer = tar.into_inner().unwrap();
    let config = ContainerConfig { entrypoint: vec!["/bin/httpd".into()], ..ContainerConfig::default() };
    write_layout(layout, &[layer], &config).unwrap()
}

/// The layer digests named by the manifest `digest` of the layout at `layout`.
fn layer_digests(layout: &Path, digest: &Digest) -> Vec<String> {
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(digest.blob_path(layout)).unwrap()).unwrap();
    manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_owned()).collect()
}

fn right() -> RegistryAuth {
    RegistryAuth { username: USER.into(), password: PASSWORD.into() }
}

/// Entries of the cache directory that are not hidden temporaries.
fn cache_entries(cache: &Path) -> Vec<String> {
    match fs::read_dir(cache) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn pull_without_or_with_wrong_credentials_is_refused_clearly() {
    let registry = start_registry();
    let layout = tempfile::tempdir().unwrap();
    let digest = small_image(layout.path());
    registry.push_layout(layout.path(), &digest, "hello:1").await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let reference = registry.reference("hello:1");

    let anonymous = pull_image(&reference, None, cache.path()).await.unwrap_err();
    assert!(matches!(anonymous, ImageError::RegistryAuthRequired { .. }), "{anonymous:?}");
    assert_eq!(anonymous.to_string(), format!("authentication required for {}", registry.addr()));

    let wrong = RegistryAuth { username: USER.into(), password: "wrong".into() };
    let refused = pull_image(&reference, Some(&wrong), cache.path()).await.unwrap_err();
    assert_eq!(
        refused.to_string(),
        format!("authentication failed for {}: wrong username or password", registry.addr())
    );
    let unknown_user = RegistryAuth { username: "nobody".into(), password: PASSWORD.into() };
    let refused = pull_image(&reference, Some(&unknown_user), cache.path()).await.unwrap_err();
    assert!(matches!(refused, ImageError::RegistryAuthFailed { .. }), "{refused:?}");

    // A refused pull leaves nothing in the cache, not even a temporary directory.
    assert_eq!(cache_entries(cache.path()), Vec::<String>::new());
}

#[tokio::test]
async fn pull_with_credentials_writes_the_pushed_image_and_reuses_the_cache() {
    let mut registry = start_registry();
    let layout = tempfile::tempdir().unwrap();
    let digest = small_image(layout.path());
    registry.push_layout(layout.path(), &digest, "hello:1").await.unwrap();
    let manifest_size = fs::read(digest.blob_path(layout.path())).unwrap().len();
    let index = index(&digest, manifest_size, &["s390x", host_arch()]);
    let index_digest = registry.push_manifest(index, OCI_INDEX, "hello:multi").await.unwrap();
    let cache = tempfile::tempdir().unwrap();

    let image = pull_image(&registry.reference("hello:1"), Some(&right()), cache.path()).await.unwrap();
    assert_eq!(image.manifest_digest, digest);
    let pushed_layers = layer_digests(layout.path(), &digest);
    let pulled_layers: Vec<String> = image.layers.iter().map(|l| l.blob.digest.to_string()).collect();
    assert_eq!(pulled_layers, pushed_layers);
    for layer in &image.layers {
        // Stored under the cache directory named after the manifest, byte for byte as pushed.
        assert!(layer.blob.path.starts_with(cache.path().join(digest.hex())), "{}", layer.blob.path.display());
        assert_eq!(fs::read(&layer.blob.path).unwrap(), fs::read(layer.blob.digest.blob_path(layout.path())).unwrap());
    }
    assert_eq!(image.config.config().as_ref().unwrap().entrypoint().as_deref(), Some(&["/bin/httpd".to_owned()][..]));

    // Through the index: the same manifest, from the same cache directory.
    let via_index = pull_image(&registry.reference("hello:multi"), Some(&right()), cache.path()).await.unwrap();
    assert_eq!(via_index.manifest_digest, digest);
    assert_eq!(cache_entries(cache.path()).len(), 2, "{:?}", cache_entries(cache.path())); // layout + index alias

    // Missing repositories and tags are named as such.
    let missing = pull_image(&registry.reference("hello:2"), Some(&right()), cache.path()).await.unwrap_err();
    assert_eq!(
        missing.to_string(),
        format!("image {} not found in {}", registry.reference("hello:2"), registry.addr())
    );
    let missing = pull_image(&registry.reference("nothere:1"), Some(&right()), cache.path()).await.unwrap_err();
    assert!(matches!(missing, ImageError::ImageNotFound { .. }), "{missing:?}");

    // With the registry gone, a pull by digest (of the manifest, or of the index) is served by
    // the cache, without credentials; a pull by tag has to ask the registry and says it cannot.
    registry.kill();
    let by_digest = format!("{}/hello@{digest}", registry.addr());
    let cached = pull_image(&by_digest, None, cache.path()).await.unwrap();
    assert_eq!(cached.manifest_digest, digest);
    assert_eq!(cached.layers.len(), image.layers.len());
    let by_index = format!("{}/hello@{index_digest}", registry.addr());
    assert_eq!(pull_image(&by_index, None, cache.path()).await.unwrap().manifest_digest, digest);
    let unreachable = pull_image(&registry.reference("hello:1"), Some(&right()), cache.path()).await.unwrap_err();
    assert!(matches!(unreachable, ImageError::RegistryUnreachable { .. }), "{unreachable:?}");
    let text = unreachable.to_string();
    assert!(text.starts_with(&format!("cannot reach registry {}: ", registry.addr())), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}

#[test]
fn docker_config_auth_reads_auths_and_names_credential_helpers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    // "YWxpY2U6czNjcmV0" is base64 of "alice:s3cret".
    let config = serde_json::json!({
        "auths": {
            "https://registry.example.com/v1/": {"auth": "YWxpY2U6czNjcmV0"},
            "127.0.0.1:5000": {"username": "bob", "password": "pw:with:colons"},
            "https://index.docker.io/v1/": {"auth": "YWxpY2U6czNjcmV0"},
            "stored.example.com": {},
        },
        "credsStore": "desktop",
        "credHelpers": {"gcr.io": "gcloud"},
    });
    fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    let lookup = |registry: &str| docker_config_auth(registry, Some(&path));

    let alice = lookup("registry.example.com").unwrap().unwrap();
    assert_eq!((alice.username.as_str(), alice.password.as_str()), ("alice", "s3cret"));
    let bob = lookup("127.0.0.1:5000").unwrap().unwrap();
    assert_eq!((bob.username.as_str(), bob.password.as_str()), ("bob", "pw:with:colons"));
    assert_eq!(lookup("docker.io").unwrap().unwrap().username, "alice");
    // No entry, even with a credsStore: anonymous.
    assert!(lookup("other.example.com").unwrap().is_none());

    let helper = lookup("gcr.io").unwrap_err().to_string();
    assert!(helper.contains("docker-credential-gcloud") && helper.contains("not supported"), "{helper}");
    assert!(helper.contains(&path.display().to_string()), "{helper}");
    let store = lookup("stored.example.com").unwrap_err().to_string();
    assert!(store.contains("docker-credential-desktop") && store.contains("not supported"), "{store}");

    // Debug never shows the password.
    assert!(!format!("{alice:?}").contains("s3cret"));

    fs::write(&path, b"{not json").unwrap();
    let invalid = lookup("registry.example.com").unwrap_err().to_string();
    assert!(invalid.contains("invalid JSON"), "{invalid}");
    assert!(docker_config_auth("registry.example.com", Some(&dir.path().join("missing.json"))).is_err());
}

#[tokio::test]
async fn docker_manifests_are_rewritten_and_unusable_images_refused() {
    let registry = start_registry();
    let layout = tempfile::tempdir().unwrap();
    let digest = small_image(layout.path());
    let oci: serde_json::Value = serde_json::from_slice(&fs::read(digest.blob_path(layout.path())).unwrap()).unwrap();
    let cache = tempfile::tempdir().unwrap();

    // A docker schema 2 manifest naming the same blobs: stored as an OCI manifest, in the cache
    // directory named after the registry's digest.
    let mut docker = oci.clone();
    docker["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json".into();
    docker["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json".into();
    for layer in docker["layers"].as_array_mut().unwrap() {
        layer["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar.gzip".into();
    }
    let docker = serde_json::to_vec(&docker).unwrap();
    registry.push_blobs(layout.path(), &docker, "docker:1").await.unwrap();
    let docker_digest = registry
        .push_manifest(docker, "application/vnd.docker.distribution.manifest.v2+json", "docker:1")
        .await
        .unwrap();
    let image = pull_image(&registry.reference("docker:1"), Some(&right()), cache.path()).await.unwrap();
    assert_ne!(image.manifest_digest, docker_digest);
    let layers: Vec<String> = image.layers.iter().map(|l| l.blob.digest.to_string()).collect();
    assert_eq!(layers, layer_digests(layout.path(), &digest));
    assert!(image.layers.iter().all(|l| l.gzip));
    let stored = cache.path().join(docker_digest.hex());
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(image.manifest_digest.blob_path(&stored)).unwrap()).unwrap();
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
    assert_eq!(manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");

    // zstd layers are refused by media type, before anything is downloaded.
    let mut zstd = oci.clone();
    zstd["layers"][0]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+zstd".into();
    let zstd = serde_json::to_vec(&zstd).unwrap();
    registry.push_blobs(layout.path(), &zstd, "zstd:1").await.unwrap();
    registry.push_manifest(zstd, OCI_MANIFEST, "zstd:1").await.unwrap();
    let refused = pull_image(&registry.reference("zstd:1"), Some(&right()), cache.path()).await.unwrap_err();
    let text = refused.to_string();
    assert!(text.contains("tar+zstd") && text.contains("only tar and tar+gzip layers are supported"), "{text}");

    // An index without this machine's platform says which platforms it has.
    registry.push_layout(layout.path(), &digest, "other:1").await.unwrap();
    let size = fs::read(digest.blob_path(layout.path())).unwrap().len();
    registry.push_manifest(index(&digest, size, &["s390x"]), OCI_INDEX, "other:multi").await.unwrap();
    let refused = pull_image(&registry.reference("other:multi"), Some(&right()), cache.path()).await.unwrap_err();
    let text = refused.to_string();
    assert!(text.contains(&format!("has no image for linux/{} (it has: linux/s390x)", host_arch())), "{text}");

    // Only the docker image made it into the cache.
    assert_eq!(cache_entries(cache.path()), vec![docker_digest.hex().to_owned()]);
}
