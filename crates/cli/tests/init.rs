//! `tpod init` writes a sample manifest that parses, and never clobbers a file by accident.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn tpod(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tpod")).args(args).output().unwrap()
}

#[test]
fn init_writes_a_manifest_that_parses_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pod.yaml");
    let p = path.to_str().unwrap();

    let out = tpod(&["init", p]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let manifest = tpod_manifest::load(&path).unwrap();
    assert_eq!(manifest.name, "hello");
    // Its image is built next to it, so it deploys as is.
    let image = manifest.containers[0].image.local_path(dir.path()).unwrap();
    assert!(tpod_image::read_layout(&image).is_ok());

    std::fs::write(&path, "mine").unwrap();
    let again = tpod(&["init", p]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine");

    assert!(tpod(&["init", p, "--force"]).status.success());
    assert!(tpod_manifest::load(&path).is_ok());
}
