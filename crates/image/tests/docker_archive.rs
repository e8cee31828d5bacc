//! Importing `docker save` tarballs, in both the legacy and the `blobs/sha256/` form, and
//! refusing broken or hostile ones without leaving anything in the cache.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tpod_image::{Digest, ImageError, MAX_JSON_BYTES, import_docker_archive, read_layout, unpack};

const BUSYBOX: &str = "/bin/busybox";

fn hello_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello")
}

/// The hello image's config (as written by the builder) and its layer, uncompressed and gzip.
struct Hello {
    config: Vec<u8>,
    plain: Vec<u8>,
    gzip: Vec<u8>,
}

fn hello(tmp: &Path) -> Hello {
    let dir = tmp.join("hello-layout");
    tpod_image::hello::build(&dir, Path::new(BUSYBOX), &hello_dir().join("www/index.html")).unwrap();
    let image = read_layout(&dir).unwrap();
    let gzip = fs::read(&image.layers[0].blob.path).unwrap();
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(gzip.as_slice()).read_to_end(&mut plain).unwrap();
    Hello { config: fs::read(&image.config_blob.path).unwrap(), plain, gzip }
}

enum Entry<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
}

/// A tar with names written raw into the header, so `..` and absolute names get through.
fn write_tar(path: &Path, entries: &[Entry<'_>]) {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let (name, data, kind, link): (&str, &[u8], _, &str) = match entry {
            Entry::File(name, data) => (name, data, tar::EntryType::Regular, ""),
            Entry::Symlink(name, target) => (name, b"", tar::EntryType::Symlink, target),
        };
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_mtime(0);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    fs::write(path, builder.into_inner().unwrap()).unwrap();
}

fn manifest_json(config: &str, layers: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!([{ "Config": config, "RepoTags": ["hello:latest"], "Layers": layers }])).unwrap()
}

/// A docker < 25 archive: `<id>.json`, `<id>/layer.tar` with its side files, `manifest.json`
/// first.
fn legacy_archive(path: &Path, config: &[u8], layer: &[u8]) {
    let config_name = format!("{}.json", Digest::of(config).hex());
    let id = Digest::of(b"layer id").hex().to_owned();
    let layer_name = format!("{id}/layer.tar");
    let manifest = manifest_json(&config_name, &[&layer_name]);
    write_tar(
        path,
        &[
            Entry::File("manifest.json", &manifest),
            Entry::File(&format!("{id}/VERSION"), b"1.0"),
            Entry::File(&format!("{id}/json"), b"{}"),
            Entry::File(&layer_name, layer),
            Entry::File(&config_name, config),
            Entry::File("repositories", br#"{"hello":{"latest":"x"}}"#),
        ],
    );
}

/// A docker 25+ archive: everything under `blobs/sha256/`, `manifest.json` last.
fn blobs_archive(path: &Path, config: &[u8], layer: &[u8]) {
    let config_name = format!("blobs/sha256/{}", Digest::of(config).hex());
    let layer_name = format!("blobs/sha256/{}", Digest::of(layer).hex());
    let manifest = manifest_json(&config_name, &[&layer_name]);
    write_tar(
        path,
        &[
            Entry::File(&layer_name, layer),
            Entry::File(&config_name, config),
            Entry::File("index.json", b"{}"),
            Entry::File("manifest.json", &manifest),
            Entry::File("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        ],
    );
}

fn assert_unpacks_to_hello(image: &tpod_image::Image, rootfs: &Path) {
    unpack(image, rootfs).unwrap();
    assert!(fs::read(rootfs.join("bin/busybox")).unwrap() == fs::read(BUSYBOX).unwrap(), "busybox differs");
    assert_eq!(fs::read(rootfs.join("www/index.html")).unwrap(), fs::read(hello_dir().join("www/index.html")).unwrap());
}

fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

#[test]
fn legacy_and_blobs_archives_with_plain_and_gzip_layers_import_and_unpack() {
    let tmp = tempfile::tempdir().unwrap();
    let hello = hello(tmp.path());
    let mut digests = Vec::new();
    for (name, write) in [("legacy", legacy_archive as fn(&Path, &[u8], &[u8])), ("blobs", blobs_archive)] {
        for (gzip, layer) in [(false, &hello.plain), (true, &hello.gzip)] {
            let case = tmp.path().join(format!("{name}-{gzip}"));
            fs::create_dir(&case).unwrap();
            let tarball = case.join("image.tar");
            write(&tarball, &hello.config, layer);
            let cache = case.join("cache");
            let image = import_docker_archive(&tarball, &cache).unwrap();

            let hex = Digest::of(&fs::read(&tarball).unwrap()).hex().to_owned();
            assert!(image.config_blob.path.starts_with(cache.join(&hex)), "{name} {gzip}");
            assert_eq!(entries(&cache), [hex], "only the layout is left in the cache");
            assert_eq!(image.layers.len(), 1);
            assert_eq!(image.layers[0].gzip, gzip);
            assert_eq!(image.layers[0].blob.digest, Digest::of(layer));
            // The docker config is kept byte for byte.
            assert_eq!(fs::read(&image.config_blob.path).unwrap(), hello.config);
            let entrypoint = image.config.config().as_ref().unwrap().entrypoint().clone();
            assert_eq!(entrypoint.as_deref(), Some(&["/bin/busybox".to_owned(), "httpd".to_owned()][..]));

            assert_unpacks_to_hello(&image, &case.join("rootfs"));
            digests.push((gzip, image.manifest_digest));
        }
    }
    // The manifest depends on the image only, not on the docker version that saved it.
    assert_eq!(digests[0], digests[2]);
    assert_eq!(digests[1], digests[3]);
    assert_ne!(digests[0].1, digests[1].1);
}

#[test]
fn a_repeated_legacy_layer_stored_as_a_symlink_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let hello = hello(tmp.path());
    // The same layer twice, as docker saves an image whose two layers are identical.
    let mut config: Value = serde_json::from_slice(&hello.config).unwrap();
    let diff_id = Digest::of(&hello.plain).to_string();
    config["rootfs"]["diff_ids"] = json!([diff_id, diff_id]);
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = manifest_json("config.json", &["one/layer.tar", "./two/layer.tar"]);
    let tarball = tmp.path().join("image.tar");
    write_tar(
        &tarball,
        &[
            Entry::File("config.json", &config),
            Entry::Symlink("two/layer.tar", "../one/layer.tar"),
            Entry::File("one/layer.tar", &hello.plain),
            Entry::File("manifest.json", &manifest),
        ],
    );
    let image = import_docker_archive(&tarball, &tmp.path().join("cache")).unwrap();
    assert_eq!(image.layers.len(), 2);
    assert_eq!(image.layers[0].blob.digest, image.layers[1].blob.digest);
    assert_unpacks_to_hello(&image, &tmp.path().join("rootfs"));
}

#[test]
fn importing_twice_reuses_the_cache_and_a_broken_entry_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let hello = hello(tmp.path());
    let tarball = tmp.path().join("image.tar");
    blobs_archive(&tarball, &hello.config, &hello.gzip);
    let cache = tmp.path().join("cache");
    let first = import_docker_archive(&tarball, &cache).unwrap();
    let [dir] = entries(&cache).try_into().unwrap();
    let dir = cache.join(dir);
    let marker = dir.join("marker");
    fs::write(&marker, b"").unwrap();

    let second = import_docker_archive(&tarball, &cache).unwrap();
    assert!(second.config_blob.path.starts_with(&dir));
    assert_eq!(second.manifest_digest, first.manifest_digest);
    assert!(marker.exists(), "the cached layout was imported again");
    assert_eq!(entries(&cache).len(), 1);

    // A cached layout that no longer reads is imported again.
    fs::write(dir.join("index.json"), b"not json").unwrap();
    let third = import_docker_archive(&tarball, &cache).unwrap();
    assert!(third.config_blob.path.starts_with(&dir));
    assert_eq!(third.manifest_digest, first.manifest_digest);
    assert!(!marker.exists());
    assert_eq!(entries(&cache).len(), 1);
    assert_unpacks_to_hello(&third, &tmp.path().join("rootfs"));
}

#[test]
fn only_the_first_image_of_a_multi_image_archive_is_imported() {
    let tmp = tempfile::tempdir().unwrap();
    let hello = hello(tmp.path());
    let manifest = serde_json::to_vec(&json!([
        { "Config": "config.json", "RepoTags": null, "Layers": ["layer.tar"] },
        { "Config": "other.json", "Layers": ["missing.tar"] },
    ]))
    .unwrap();
    let tarball = tmp.path().join("image.tar");
    write_tar(
        &tarball,
        &[
            Entry::File("manifest.json", &manifest),
            Entry::File("config.json", &hello.config),
            Entry::File("layer.tar", &hello.plain),
        ],
    );
    let image = import_docker_archive(&tarball, &tmp.path().join("cache")).unwrap();
    assert_unpacks_to_hello(&image, &tmp.path().join("rootfs"));
}

/// Imports `entries` as a tarball into an empty cache, expecting a refusal that leaves the
/// cache empty; returns the error message.
fn refused(entries_: &[Entry<'_>]) -> (ImageError, String) {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = tmp.path().join("image.tar");
    write_tar(&tarball, entries_);
    let cache = tmp.path().join("cache");
    fs::create_dir(&cache).unwrap();
    let err = import_docker_archive(&tarball, &cache).unwrap_err();
    assert_eq!(entries(&cache), Vec::<String>::new(), "{err}");
    let message = err.to_string();
    assert!(message.contains(tarball.to_str().unwrap()), "{message}");
    (err, message)
}

#[test]
fn a_layer_not_matching_its_diff_id_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let hello = hello(tmp.path());
    let mut config: Value = serde_json::from_slice(&hello.config).unwrap();
    config["rootfs"]["diff_ids"] = json!([Digest::of(b"another layer").to_string()]);
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = manifest_json("config.json", &["abc/layer.tar"]);
    let (err, message) = refused(&[
        Entry::File("manifest.json", &manifest),
        Entry::File("config.json", &config),
        Entry::File("abc/layer.tar", &hello.gzip),
    ]);
    assert!(matches!(err, ImageError::DockerArchive { .. }), "{message}");
    assert!(message.contains("layer abc/layer.tar"), "{message}");
    assert!(message.contains(&Digest::of(&hello.plain).to_string()), "{message}");
    assert!(message.contains(&Digest::of(b"another layer").to_string()), "{message}");
}

#[test]
fn a_missing_layer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let hello = hello(tmp.path());
    let manifest = manifest_json("config.json", &["abc/layer.tar"]);
    let (_, message) = refused(&[
        Entry::File("manifest.json", &manifest),
        Entry::File("config.json", &hello.config),
        Entry::File("abd/layer.tar", &hello.plain),
    ]);
    assert!(message.contains("manifest.json lists layer abc/layer.tar which is not in the archive"), "{message}");
}

#[test]
fn escaping_paths_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let hello = hello(tmp.path());
    for layer in ["../abc/layer.tar", "abc/../../layer.tar", "/abc/layer.tar"] {
        let manifest = manifest_json("config.json", &[layer]);
        let (_, message) = refused(&[
            Entry::File("manifest.json", &manifest),
            Entry::File("config.json", &hello.config),
            Entry::File(layer, &hello.plain),
        ]);
        assert!(message.contains(&format!("{layer:?}, which escapes the archive")), "{message}");
    }
    // A link out of the archive is refused as well.
    let manifest = manifest_json("config.json", &["abc/layer.tar"]);
    let (_, message) = refused(&[
        Entry::File("manifest.json", &manifest),
        Entry::File("config.json", &hello.config),
        Entry::Symlink("abc/layer.tar", "../../etc/passwd"),
    ]);
    assert!(message.contains("links outside the archive"), "{message}");
}

#[test]
fn an_oversized_manifest_is_refused() {
    let manifest = vec![b' '; (MAX_JSON_BYTES + 1) as usize];
    let (err, message) = refused(&[Entry::File("manifest.json", &manifest)]);
    assert!(matches!(err, ImageError::TooLarge { .. }), "{message}");
    assert!(message.contains("manifest.json"), "{message}");
}

#[test]
fn a_blob_not_matching_its_name_and_a_foreign_platform_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let hello = hello(tmp.path());
    let layer_name = format!("blobs/sha256/{}", Digest::of(b"something else").hex());
    let manifest = manifest_json("config.json", &[&layer_name]);
    let (_, message) = refused(&[
        Entry::File("manifest.json", &manifest),
        Entry::File("config.json", &hello.config),
        Entry::File(&layer_name, &hello.plain),
    ]);
    assert!(message.contains("does not hash to its name"), "{message}");

    let mut config: Value = serde_json::from_slice(&hello.config).unwrap();
    let foreign = if cfg!(target_arch = "s390x") { "arm64" } else { "s390x" };
    config["architecture"] = json!(foreign);
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = manifest_json("config.json", &["layer.tar"]);
    let (_, message) = refused(&[
        Entry::File("manifest.json", &manifest),
        Entry::File("config.json", &config),
        Entry::File("layer.tar", &hello.plain),
    ]);
    assert!(message.contains(&format!("the image is for linux/{foreign}")), "{message}");
}

#[test]
fn a_tarball_without_manifest_is_refused() {
    let (_, message) = refused(&[Entry::File("oci-layout", b"{}")]);
    assert!(message.contains("no manifest.json"), "{message}");
}
