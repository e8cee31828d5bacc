//! Confidential delivery end to end, through the real binaries: a pod with a secret volume and an
//! image holding a marker deploys, serves both, and neither marker is anywhere on the provider's
//! disk in clear; a second deploy of the same image re-uses the encrypted blobs the provider holds;
//! `delete` wipes the in-memory rootfs and secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;

const IMAGE_MARKER: &str = "image-marker-3b8d6f0e41";
const SECRET_MARKER: &str = "secret-marker-c27a95e1d8";

/// The hello example serving a page with [`IMAGE_MARKER`] and, under /keys, a secret volume
/// holding `token` with [`SECRET_MARKER`].
fn hello_with_secret(dir: &Path) -> PathBuf {
    let manifest = hello(dir, &format!("hello {IMAGE_MARKER}\n"));
    std::fs::write(dir.join("token"), format!("{SECRET_MARKER}\n")).unwrap();
    let yaml = std::fs::read_to_string(&manifest).unwrap();
    let yaml = yaml.replace(
        "    resources:\n",
        "    volumeMounts:\n      - name: keys\n        mountPath: /www/keys\n    resources:\n",
    );
    let yaml = yaml.replace("replicas:\n", "volumes:\n  - name: keys\n    secret:\n      file: ./token\nreplicas:\n");
    std::fs::write(&manifest, yaml).unwrap();
    manifest
}

/// Files under `root` holding `needle`, not crossing into other file systems: the in-memory
/// rootfs and secret volumes are tmpfs mounts (memory), not the provider's disk.
fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let device = std::fs::metadata(root).unwrap().dev();
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else { continue };
            if meta.dev() != device {
                continue;
            }
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file()
                && std::fs::read(entry.path()).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Mount points under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(dir))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_secret_and_an_encrypted_image_reach_the_pod_and_nothing_is_on_disk_in_clear() {
    let net = Devnet::up(11);
    let work = tempfile::tempdir().unwrap();
    let manifest = hello_with_secret(work.path());
    let manifest = manifest.to_str().unwrap();

    let deployed = net.ok(&["deploy", manifest]);
    let url = deployed["url"].as_str().unwrap().to_owned();
    assert!(deployed["uploaded_bytes"].as_u64().unwrap() > 0, "{deployed}");
    wait_for_body(&url, &format!("hello {IMAGE_MARKER}\n"));
    let (code, secret) = get(&format!("{}/keys/token", url.trim_end_matches('/')));
    assert_eq!((code, secret.as_str()), (200, format!("{SECRET_MARKER}\n").as_str()));

    let data = net.provider_data();
    for marker in [IMAGE_MARKER, SECRET_MARKER] {
        let found = files_containing(&data, marker.as_bytes());
        assert!(found.is_empty(), "{marker} in clear on the provider's disk: {found:?}");
    }
    // Upload once, deploy anywhere: the second deploy of the same image sends no blob again.
    let again = net.ok(&["deploy", manifest, "--name", "again"]);
    assert_eq!(again["uploaded_bytes"], 0, "{again}");

    let pods = data.join("pods");
    assert!(!mounts_under(&pods).is_empty(), "the rootfs and secret should be tmpfs mounts");
    net.ok(&["delete", "hello"]);
    net.ok(&["delete", "again"]);
    let left = mounts_under(&pods);
    assert!(left.is_empty(), "mounts left after delete: {left:?}");
}
