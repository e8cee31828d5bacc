//! A big image deploys, end to end through the real binaries: 512 MiB that nothing compresses
//! is encrypted, uploaded and unpacked while the CLI shows each phase (plain lines, as there is
//! no terminal), the pod serves, and it is billed from the moment its container runs, not while
//! its image was being unpacked. Needs root, like the provider.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The size of the image's big file in MiB: 512, or `$TPOD_TEST_BIG_IMAGE_MIB` (to try 1 GiB).
fn big_mib() -> u64 {
    std::env::var("TPOD_TEST_BIG_IMAGE_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
}

/// `len` pseudo-random bytes (xorshift): incompressible, fast to make.
fn write_random(path: &Path, len: u64) {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..len / block.len() as u64 {
        for chunk in block.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        out.write_all(&block).unwrap();
    }
    out.flush().unwrap();
}

/// An image with busybox, a page and [`big_mib`] MiB of random bytes at `/data/big.bin`, its
/// layer stored uncompressed; and a manifest serving the page with room for the image in memory.
fn big_pod(dir: &Path) -> std::path::PathBuf {
    let big = dir.join("big.bin");
    write_random(&big, big_mib() << 20);
    let page = dir.join("index.html");
    std::fs::write(&page, "big\n").unwrap();
    let files = [
        tpod_image::RootfsFile { src: "/bin/busybox".into(), dest: "/bin/busybox".to_owned(), mode: 0o755 },
        tpod_image::RootfsFile { src: page, dest: "/www/index.html".to_owned(), mode: 0o644 },
        tpod_image::RootfsFile { src: big.clone(), dest: "/data/big.bin".to_owned(), mode: 0o644 },
    ];
    let config = tpod_image::ContainerConfig {
        entrypoint: vec!["/bin/busybox".to_owned()],
        cmd: Vec::new(),
        env: vec!["PATH=/bin".to_owned()],
        working_dir: Some("/".to_owned()),
        exposed_ports: Vec::new(),
    };
    let layer = tpod_image::layer_tar(&files).unwrap();
    tpod_image::write_layout_uncompressed(&dir.join("image"), &[layer], &config).unwrap();
    std::fs::remove_file(&big).unwrap();
    let manifest = dir.join("tpod.yaml");
    std::fs::write(
        &manifest,
        format!(
            r#"name: big
containers:
  - name: web
    image: ./image
    command: ["/bin/busybox", "httpd"]
    args: ["-f", "-p", "8080", "-h", "/www"]
    ports:
      - containerPort: 8080
        protocol: http
    resources:
      cpu: 100m
      memory: {}Mi
"#,
            big_mib() * 2
        ),
    )
    .unwrap();
    manifest
}

#[test]
fn a_512_mib_image_deploys_and_is_billed_from_when_it_runs() {
    let mib = big_mib();
    let work = tempfile::tempdir().unwrap();
    // The provider answers at once, so the CLI follows the unpack however fast it is.
    let overrides = work.path().join("overrides.toml");
    std::fs::write(&overrides, "[runtime]\nprovision_wait_secs = 0\n").unwrap();
    let net = Devnet::up_with(19, Some(overrides));
    let begun = Instant::now();
    let manifest = big_pod(work.path());
    eprintln!("image built in {:.1} s", begun.elapsed().as_secs_f64());

    // Not JSON and not a terminal: the phases come as plain lines on standard error.
    let mut deploy = Command::new(env!("CARGO_BIN_EXE_tpod"))
        .arg("--devnet-dir")
        .arg(net.dir.path())
        .arg("deploy")
        .arg(&manifest)
        .env_remove("TPOD_DEVNET_DIR")
        .env("TPOD_CACHE_DIR", net.dir.path().join("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = deploy.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stderr).lines().map_while(Result::ok).map(|l| (Instant::now(), l)).collect::<Vec<_>>()
    });
    let out = deploy.wait_with_output().unwrap();
    let deployed = Instant::now();
    let lines = lines.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let log: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    for (at, line) in &lines {
        eprintln!("{:7.1} s  {line}", at.duration_since(begun).as_secs_f64());
    }
    assert!(out.status.success(), "deploy failed:\n{stdout}\n{}", log.join("\n"));
    for phase in ["encrypting web: done", "uploading web"] {
        assert!(log.iter().any(|l| l.starts_with(phase)), "no {phase:?} line:\n{}", log.join("\n"));
    }
    let half = format!("encrypting web: 50% of {}", mib / 10);
    assert!(log.iter().any(|l| l.starts_with(&half)), "{}", log.join("\n"));
    // The provider answered "provisioning" and the CLI followed the unpack to its end.
    let unpacked = lines
        .iter()
        .find(|(_, l)| l == "unpacking web: done")
        .map(|(at, _)| *at)
        .unwrap_or_else(|| panic!("the unpack was not followed:\n{}", log.join("\n")));

    let url = stdout.lines().find_map(|l| l.trim().strip_prefix("url")).unwrap().trim().to_owned();
    wait_for_body(&url, "big\n");
    let status = net.ok(&["status"]);
    assert_eq!(status["state"], "running", "{status}");

    std::thread::sleep(Duration::from_secs(3));
    let asked = Instant::now();
    let bill = net.ok(&["bill"]);
    let reserved: u128 = bill["usage"]["cpu_reserved"].as_str().unwrap().parse().unwrap();
    // 100 millicores reserved: millicore-ns / 100 = ns billed.
    #[allow(clippy::cast_precision_loss)]
    let billed = reserved as f64 / 100.0 / 1e9;
    let since_unpacked = asked.duration_since(unpacked).as_secs_f64();
    let since_deployed = asked.duration_since(deployed).as_secs_f64();
    // Not while unpacking (the container starts after that), and every second since it runs
    // (samples come every second).
    assert!(billed <= since_unpacked + 1.5, "billed {billed:.1} s, but it was unpacked {since_unpacked:.1} s ago");
    assert!(billed >= since_deployed - 2.5, "billed {billed:.1} s, but it runs for {since_deployed:.1} s");

    net.ok(&["delete"]);
    assert!(net.runtime_pods().is_empty(), "runtime state left: {:?}", net.runtime_pods());
}
