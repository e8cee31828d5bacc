//! Deploying from a private registry end to end, through the real binaries: the hello image is
//! pushed to a local `docker-registry` with htpasswd auth; a deploy without credentials is refused
//! before anything is paid for, one with `--registry-auth-file` serves the page without the
//! password showing in its output, and docker's `config.json` works too.
//!
//! Needs `/usr/bin/docker-registry` and `htpasswd` (Debian packages `docker-registry` and
//! `apache2-utils`, installed by `tools/bootstrap`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;
use tpod_devnet::registry::LocalRegistry;

const USER: &str = "publisher";
const PASSWORD: &str = "registry-password-5e0c7a91";
const PAGE: &str = "hello from a private registry\n";

/// Standard base64 with padding, as docker's `auths.<registry>.auth` holds `user:password`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `tpod --json args` with `envs`: its JSON output, and its whole output as text.
fn ok_env(net: &Devnet, args: &[&str], envs: &[(&str, &Path)]) -> (serde_json::Value, String) {
    let out = net.tpod_env(&[&["--json"], args].concat(), envs);
    assert!(out.status.success(), "tpod {args:?} failed: {}", text(&out));
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out)));
    (json, text(&out))
}

#[test]
fn a_private_registry_image_deploys_only_with_credentials() {
    assert_eq!(base64(b"alice:s3cret"), "YWxpY2U6czNjcmV0");
    assert_eq!(base64(b"ab"), "YWI=");

    let registry = LocalRegistry::start(USER, PASSWORD).unwrap_or_else(|e| panic!("{e}"));
    let work = tempfile::tempdir().unwrap();
    let manifest = hello(work.path(), PAGE);
    let layout = work.path().join("image");
    let digest = tpod_image::read_layout(&layout).unwrap().manifest_digest;
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(registry.push_layout(&layout, &digest, "hello:1"))
        .unwrap_or_else(|e| panic!("{e}\nregistry log:\n{}", registry.log()));
    // The layout is gone: the image can only come from the registry.
    std::fs::remove_dir_all(&layout).unwrap();
    let yaml = std::fs::read_to_string(&manifest).unwrap();
    assert!(yaml.contains("image: ./image"), "{yaml}");
    let reference = registry.reference("hello:1");
    std::fs::write(&manifest, yaml.replace("image: ./image", &format!("image: {reference}"))).unwrap();
    let manifest = manifest.to_str().unwrap();

    // Neither this machine's docker config nor any other: an empty HOME and DOCKER_CONFIG.
    let docker = tempfile::tempdir().unwrap();
    let envs = [("HOME", docker.path()), ("DOCKER_CONFIG", docker.path())];

    let net = Devnet::up(13);
    let out = net.tpod_env(&["deploy", manifest], &envs);
    assert!(!out.status.success(), "deploy without credentials should have failed: {}", text(&out));
    let refused = text(&out);
    assert!(refused.contains(&format!("authentication required for {}", registry.addr())), "{refused}");
    assert!(refused.contains(&reference), "{refused}");
    // Refused before anything was paid for or sent.
    assert!(net.fails(&["status"]).contains("no deployments"));
    assert!(net.runtime_pods().is_empty(), "{:?}", net.runtime_pods());

    // A wrong password is refused as such, and not echoed.
    let wrong = work.path().join("wrong-auth");
    std::fs::write(&wrong, format!("{USER}:not-the-password\n")).unwrap();
    let out = net.tpod_env(&["deploy", manifest, "--registry-auth-file", wrong.to_str().unwrap()], &envs);
    assert!(!out.status.success(), "deploy with a wrong password should have failed: {}", text(&out));
    let refused = text(&out);
    assert!(refused.contains(&format!("authentication failed for {}", registry.addr())), "{refused}");
    assert!(!refused.contains("not-the-password"), "{refused}");
    assert!(net.runtime_pods().is_empty(), "{:?}", net.runtime_pods());

    // With the credentials in a file: deployed and serving, and the password is not shown.
    let auth = work.path().join("registry-auth");
    std::fs::write(&auth, format!("{USER}:{PASSWORD}\n")).unwrap();
    let (deployed, output) = ok_env(&net, &["deploy", manifest, "--registry-auth-file", auth.to_str().unwrap()], &envs);
    assert!(!output.contains(PASSWORD), "the password shows in the output: {output}");
    wait_for_body(deployed["url"].as_str().unwrap(), PAGE);

    // With the credentials in docker's config.json: a second pod from the same image.
    let config =
        serde_json::json!({"auths": {registry.addr(): {"auth": base64(format!("{USER}:{PASSWORD}").as_bytes())}}});
    std::fs::write(docker.path().join("config.json"), serde_json::to_vec(&config).unwrap()).unwrap();
    let (second, output) = ok_env(&net, &["deploy", manifest, "--name", "second"], &envs);
    assert!(!output.contains(PASSWORD), "the password shows in the output: {output}");
    wait_for_body(second["url"].as_str().unwrap(), PAGE);

    net.ok(&["delete", "hello"]);
    net.ok(&["delete", "second"]);
    assert!(net.runtime_pods().is_empty(), "{:?}", net.runtime_pods());
}
