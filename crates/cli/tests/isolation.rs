//! The isolation suite, through the real binaries as tenants use them: a devnet provider runs a
//! victim tenant (an httpd with a secret volume, deployed with `tpod deploy`) next to a hostile
//! one whose image the test builds (busybox, a system-call probe and a network probe, both
//! static). The hostile pod tries every crossing and prints what it got; the test asserts that
//! each one fails:
//! - the victim pod's address and port; the host's addresses (the bridge gateway, its LAN
//!   address, IPv6) on the provider's own ports (ingress, libp2p) and on a host service bound to
//!   all addresses;
//! - forking past its pids limit;
//! - writing past its emptyDir's size;
//! - the keyring (so no pod reads another's key), user-namespace creation, io_uring, raw and
//!   packet sockets, mount;
//! - leaving its env marker or a log line in clear anywhere on the provider's disk.
//!
//! Meanwhile the victim serves through the ingress with its secret. The runtime's own suites
//! (`crates/runtime/tests/{sandbox,network,limits}.rs`) cover the same ground without a
//! provider, plus memory held through tmpfs and restarts. Needs root, like the provider.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const N: u8 = 12;

/// The hostile tenant's image: busybox, `/bin/probe` (system calls) and `/bin/netprobe`.
fn hostile_image(dir: &Path) {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    build_static(&here.join("../runtime/tests/probe/probe.rs"), &dir.join("probe"));
    build_static(&here.join("tests/probe/netprobe.rs"), &dir.join("netprobe"));
    let file = |src: PathBuf, dest: &str| tpod_image::RootfsFile { src, dest: dest.to_owned(), mode: 0o755 };
    let files = [
        file("/bin/busybox".into(), "/bin/busybox"),
        file(dir.join("probe"), "/bin/probe"),
        file(dir.join("netprobe"), "/bin/netprobe"),
    ];
    let config = tpod_image::ContainerConfig {
        entrypoint: vec!["/bin/busybox".to_owned()],
        cmd: Vec::new(),
        env: vec!["PATH=/bin".to_owned()],
        working_dir: Some("/".to_owned()),
        exposed_ports: Vec::new(),
    };
    tpod_image::build_layout(&dir.join("image"), &files, &config).unwrap();
}

/// The first IPv4 address of `device`.
fn ipv4_of(device: &str) -> String {
    let out = Command::new("ip").args(["-4", "-o", "addr", "show", "dev", device]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let cidr = text.split_whitespace().skip_while(|w| *w != "inet").nth(1).unwrap_or_else(|| panic!("{text}"));
    cidr.split('/').next().unwrap().to_owned()
}

/// The host's global IPv4 addresses on interfaces other than pod bridges (its LAN address).
fn lan_ipv4() -> Vec<String> {
    let out = Command::new("ip").args(["-4", "-o", "addr", "show", "scope", "global"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|dev| !dev.starts_with("tp")))
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .map(|cidr| cidr.split('/').next().unwrap().to_owned())
        .collect()
}

/// The host's IPv6 addresses outside loopback and pod bridges, each with whether it is
/// link-local.
fn host_ipv6() -> Vec<(String, bool)> {
    let out = Command::new("ip").args(["-6", "-o", "addr", "show"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|dev| dev != "lo" && !dev.starts_with("tp")))
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "inet6")?;
            let address = words.get(at + 1)?.split('/').next()?.to_owned();
            Some((address, words.contains(&"link")))
        })
        .collect()
}

/// The port at the end of `host:port` or of a `/tcp/<port>` multiaddr.
fn port_of(address: &str) -> u16 {
    let tail = address.rsplit(['/', ':']).next().unwrap();
    tail.parse().unwrap_or_else(|_| panic!("no port in {address}"))
}

/// Files on the disk under `root` (not crossing into tmpfs or loop mounts) whose bytes hold
/// `needle`.
fn disk_files_holding(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let device = std::fs::metadata(root).unwrap().dev();
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.dev() != device {
                continue;
            }
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file()
                && std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            {
                found.push(path);
            }
        }
    }
    found
}

/// `tpod logs <name>` until it holds `end`.
fn logs_until(net: &Devnet, name: &str, end: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = net.tpod(&["logs", name]);
        let logs = String::from_utf8_lossy(&out.stdout).into_owned();
        if logs.contains(end) {
            return logs;
        }
        assert!(Instant::now() < deadline, "no {end:?} in the logs of {name}:\n{}", text(&out));
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_hostile_tenant_reaches_nothing_and_leaves_nothing_in_clear() {
    let net = Devnet::up(N);
    let work = tempfile::tempdir().unwrap();

    // The victim: the hello pod with a secret, served through the ingress.
    let victim = work.path().join("victim");
    let manifest = hello(&victim, "victim page\n");
    std::fs::write(victim.join("token"), "victim-secret-token\n").unwrap();
    let yaml = std::fs::read_to_string(&manifest).unwrap().replace(
        "replicas:\n",
        "    volumeMounts:\n      - name: keys\n        mountPath: /www/keys\n        readOnly: true\nvolumes:\n  - name: \
         keys\n    secret:\n      file: ./token\nreplicas:\n",
    );
    std::fs::write(&manifest, yaml).unwrap();
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap(), "--name", "victim"]);
    let url = deployed["url"].as_str().unwrap().to_owned();
    let victim_id = deployed["pod_id"].as_str().unwrap().trim_start_matches("0x").to_owned();
    wait_for_body(&url, "victim page\n");
    wait_for_body(&format!("{}/keys/token", url.trim_end_matches('/')), "victim-secret-token\n");
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(net.provider_data().join("pods").join(&victim_id).join("pod.json")).unwrap(),
    )
    .unwrap();
    let victim_ip = record["ip"].as_str().unwrap().to_owned();

    // What the hostile pod aims at.
    let info = net.provider_info(1);
    let ingress = port_of(info["ingress"].as_str().unwrap());
    let p2p = port_of(info["multiaddr"].as_str().unwrap());
    let host_v4 = TcpListener::bind("0.0.0.0:0").unwrap();
    let host_v6 = TcpListener::bind("[::]:0").unwrap();
    let (v4_port, v6_port) = (host_v4.local_addr().unwrap().port(), host_v6.local_addr().unwrap().port());
    let gateway = ipv4_of(&format!("tpe{N}"));
    let mut targets = vec![
        "self=127.0.0.1:9090".to_owned(),
        format!("victim={victim_ip}:8080"),
        format!("gateway_ingress={gateway}:{ingress}"),
        format!("gateway_p2p={gateway}:{p2p}"),
        format!("gateway_service={gateway}:{v4_port}"),
    ];
    for (i, (address, link_local)) in host_ipv6().iter().enumerate() {
        let host = if *link_local { format!("{address}%eth0") } else { address.clone() };
        targets.push(format!("v6_{i}_service=[{host}]:{v6_port}"));
        targets.push(format!("v6_{i}_ingress=[{host}]:{ingress}"));
    }
    for (i, lan) in lan_ipv4().iter().enumerate() {
        targets.push(format!("lan{i}_ingress={lan}:{ingress}"));
        targets.push(format!("lan{i}_p2p={lan}:{p2p}"));
        targets.push(format!("lan{i}_service={lan}:{v4_port}"));
    }

    // The hostile tenant.
    let hostile = work.path().join("hostile");
    std::fs::create_dir_all(&hostile).unwrap();
    hostile_image(&hostile);
    let env_marker = format!("env-marker-{}", random_hex());
    let log_marker = format!("log-marker-{}", random_hex());
    let script = format!(
        "echo '{log_marker}'; /bin/busybox httpd -p 9090 -h /; /bin/probe; /bin/netprobe {}; \
         if /bin/busybox dd if=/dev/zero of=/scratch/fill bs=1M count=64 2>&1 | /bin/busybox grep -q 'No space'; \
         then echo 'EMPTYDIR full'; else echo 'EMPTYDIR unbounded'; fi; echo 'ISOLATION done'; \
         exec /bin/busybox sleep 100000",
        targets.join(" ")
    );
    let manifest = hostile.join("tpod.yaml");
    std::fs::write(
        &manifest,
        format!(
            "name: hostile\ncontainers:\n  - name: probe\n    image: ./image\n    command: [\"/bin/busybox\", \"sh\", \
             \"-c\"]\n    args: [{script:?}]\n    env:\n      MARKER: {env_marker}\n    resources:\n      cpu: 100m\n      \
             memory: 64Mi\n      pids: 40\n    volumeMounts:\n      - name: scratch\n        mountPath: /scratch\nvolumes:\n  \
             - name: scratch\n    emptyDir:\n      size: 16Mi\n"
        ),
    )
    .unwrap();
    net.ok(&["deploy", manifest.to_str().unwrap()]);
    let logs = logs_until(&net, "hostile", "ISOLATION done");
    let values: BTreeMap<&str, &str> = logs.lines().filter_map(|l| l.split_once('=')).collect();
    let verdicts: BTreeMap<&str, &str> =
        logs.lines().filter_map(|l| l.strip_prefix("NET ")).filter_map(|l| l.split_once(' ')).collect();

    // The probe works: its own pod answers.
    assert_eq!(verdicts.get("self"), Some(&"reached"), "{logs}");
    for name in verdicts.keys().filter(|n| **n != "self" && **n != "done") {
        assert!(verdicts[name].starts_with("blocked"), "{name} was reached:\n{logs}");
        // Blocked by the network, not by a target the probe could not even parse.
        assert!(!verdicts[name].contains("no address"), "{name}: {}", verdicts[name]);
    }
    assert!(verdicts.contains_key("victim") && verdicts.contains_key("gateway_p2p"), "{logs}");
    for call in
        ["add_key", "keyctl", "request_key", "unshare_user", "io_uring_setup", "mount", "raw_socket", "packet_socket"]
    {
        let got = values.get(call).copied().unwrap_or("missing");
        assert!(got.starts_with("errno"), "{call}: {got}\n{logs}");
    }
    assert_eq!(values.get("tcp_socket"), Some(&"ok"), "{logs}");
    let forked: u32 = logs.lines().find_map(|l| l.strip_prefix("PIDS ")).unwrap().trim().parse().unwrap();
    assert!((10..40).contains(&forked), "{forked} processes forked under a pids limit of 40:\n{logs}");
    assert!(logs.contains("EMPTYDIR full"), "{logs}");

    // Nothing the tenant sent or printed is on the provider's disk in clear.
    let data = net.provider_data();
    for marker in [&env_marker, &log_marker] {
        let found = disk_files_holding(&data, marker.as_bytes());
        assert!(found.is_empty(), "{marker} is in clear in {found:?}");
    }

    // The victim still serves, and both tenants go without a trace.
    wait_for_body(&url, "victim page\n");
    net.ok(&["delete", "hostile"]);
    net.ok(&["delete", "victim"]);
    assert!(net.runtime_pods().is_empty(), "runtime state left: {:?}", net.runtime_pods());
}

/// 16 random hex digits.
fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes)).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
