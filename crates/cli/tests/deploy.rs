//! End to end, as a user does it: `tpod dev up` (anvil, contracts, a provider with real
//! containers), then `tpod deploy | status | logs | update | delete` through the real binaries,
//! with HTTP through the provider's ingress.
//!
//! Each test runs its own devnet and provider, on its own bridge and subnet, so they can run in
//! parallel. They need root (namespaces, cgroups, veth), like the provider itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn netns_exists(pod_id: &str) -> bool {
    let hex = pod_id.trim_start_matches("0x");
    Path::new("/var/run/netns").join(format!("tpod-{}", &hex[..12])).exists()
}

fn cgroup_dirs(pod_id: &str) -> Vec<PathBuf> {
    let hex = pod_id.trim_start_matches("0x");
    let path = tpod_runtime::cgroups_path(hex, "web");
    ["memory", "cpu", "pids", "unified", ""]
        .iter()
        .map(|h| PathBuf::from(format!("/sys/fs/cgroup/{h}{path}")))
        .filter(|p| p.exists())
        .collect()
}

#[test]
fn deploy_serve_logs_update_delete() {
    let net = Devnet::up(1);
    let work = tempfile::tempdir().unwrap();
    let manifest = hello(work.path(), "hello from trusted pods\n");
    let manifest = manifest.to_str().unwrap();

    let deployed = net.ok(&["deploy", manifest]);
    let url = deployed["url"].as_str().unwrap().to_owned();
    let pod_id = deployed["pod_id"].as_str().unwrap().to_owned();
    assert!(url.contains(".pods.localhost:"), "{deployed}");
    wait_for_body(&url, "hello from trusted pods\n");
    assert!(netns_exists(&pod_id));
    assert!(!cgroup_dirs(&pod_id).is_empty(), "no cgroup for the pod");

    let status = net.ok(&["status"]);
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["containers"][0]["name"], "web");

    // busybox httpd -vv logs each request.
    let logs = net.tpod(&["logs"]);
    assert!(logs.status.success(), "{}", text(&logs));
    assert!(String::from_utf8_lossy(&logs.stdout).contains("url:/"), "{}", text(&logs));

    // Another publisher key may not read or change the pod.
    let foreign = work.path().join("foreign.key");
    std::fs::write(&foreign, format!("0x{}", "11".repeat(32))).unwrap();
    let foreign = foreign.to_str().unwrap();
    for args in [&["status"][..], &["logs"], &["delete"]] {
        let err = net.fails(&[&["--key-file", foreign], args].concat());
        assert!(err.contains("unauthorized") && err.contains("signed by"), "{args:?}: {err}");
    }
    let err = net.fails(&["--key-file", foreign, "update", manifest]);
    assert!(err.contains("unauthorized"), "{err}");

    // Update: the new version serves afterwards.
    let manifest = hello(work.path(), "version two\n");
    net.ok(&["update", manifest.to_str().unwrap()]);
    wait_for_body(&url, "version two\n");

    // Delete: the ingress forgets the host; no container, cgroup, netns or files are left.
    net.ok(&["delete"]);
    assert_eq!(get(&url).0, 404);
    assert!(!netns_exists(&pod_id), "netns left behind");
    assert!(cgroup_dirs(&pod_id).is_empty(), "cgroups left behind: {:?}", cgroup_dirs(&pod_id));
    assert!(net.runtime_pods().is_empty(), "runtime state left: {:?}", net.runtime_pods());
    assert!(net.fails(&["status"]).contains("no deployments"));
}

#[test]
fn provider_kill_9_and_restart_re_adopts_the_pod() {
    let net = Devnet::up(2);
    let work = tempfile::tempdir().unwrap();
    let manifest = hello(work.path(), "still here\n");
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap()]);
    wait_for_body(deployed["url"].as_str().unwrap(), "still here\n");

    net.kill_provider();
    // `dev up` on a live chain restarts just the provider, which re-adopts its pods.
    let up = net.dev_up();
    let up: serde_json::Value = serde_json::from_slice(&up.stdout).unwrap();
    assert_eq!(up["provider_started"], true, "{up}");
    let status = net.ok(&["status"]);
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["containers"][0]["restarts"], 0, "the container was restarted, not adopted: {status}");
    // The ingress port was picked afresh (port 0), so read the URL again.
    wait_for_body(status["url"].as_str().unwrap(), "still here\n");
}

#[test]
fn bad_deploys_are_refused_and_leave_nothing_behind() {
    let net = Devnet::up(3);
    let work = tempfile::tempdir().unwrap();
    let manifest = hello(work.path(), "x\n");
    let yaml = std::fs::read_to_string(&manifest).unwrap();
    let variant = |name: &str, text: String| {
        let path = work.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };

    // Manifest errors name file, line and field, before anything is spent.
    let bad = variant("unknown.yaml", yaml.replace("replicas:", "colour: blue\nreplicas:"));
    let err = net.fails(&["deploy", &bad]);
    assert!(err.contains("unknown.yaml:") && err.contains("colour"), "{err}");
    let bad = variant("malformed.yaml", yaml.replace("name: hello", "name: [hello"));
    assert!(net.fails(&["deploy", &bad]).contains("malformed.yaml:"));
    let bad = variant("noimage.yaml", yaml.replace("./image", "./missing-image"));
    let err = net.fails(&["deploy", &bad]);
    assert!(err.contains("containers[0].image") && err.contains("missing-image"), "{err}");

    // More than the provider has: refused with what is free.
    let bad = variant("huge.yaml", yaml.replace("cpu: 100m", "cpu: \"512\""));
    let err = net.fails(&["deploy", &bad]);
    assert!(err.contains("cannot take") && err.contains("free"), "{err}");

    // A channel below the provider's minimum: refused before paying, and the provider keeps nothing.
    let err = net.fails(&["deploy", manifest.to_str().unwrap(), "--amount", "1base"]);
    assert!(err.contains("nothing was paid") && err.contains("asks at least"), "{err}");
    assert!(net.runtime_pods().is_empty());

    // A host name another pod holds is refused, and the refused pod leaves nothing behind.
    let named = variant(
        "named.yaml",
        yaml.replace("        protocol: http", "        protocol: http\n        hostname: app.example.com"),
    );
    net.ok(&["deploy", &named, "--name", "first"]);
    let err = net.fails(&["deploy", &named, "--name", "second"]);
    assert!(err.contains("conflict") && err.contains("app.example.com"), "{err}");
    assert_eq!(net.runtime_pods().len(), 1, "{:?}", net.runtime_pods());

    // A TCP port is forwarded from a host port that status shows.
    let tcp = variant("tcp.yaml", yaml.replace("protocol: http", "protocol: tcp"));
    net.ok(&["deploy", &tcp, "--name", "tcp"]);
    let status = net.ok(&["status", "tcp"]);
    assert_eq!(status["tcp_ports"][0]["container_port"], 8080, "{status}");
    let host_port = status["tcp_ports"][0]["host_port"].as_u64().unwrap();
    wait_for_body(&format!("http://tcp.test:{host_port}"), "x\n");

    // A container that exits at once: deploy says it crash-loops, and fails, leaving the pod
    // deployed; status says so too, with its exit code.
    let crash = variant(
        "crash.yaml",
        yaml.replace(r#"command: ["/bin/busybox", "httpd"]"#, r#"command: ["/bin/busybox", "sh", "-c", "exit 3"]"#),
    );
    let said = net.fails(&["deploy", &crash, "--name", "crash"]);
    assert!(said.contains("crash is crash-looping: container web exited with code 3"), "{said}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = net.ok(&["status", "crash"]);
        let c = &status["containers"][0];
        if c["exit_code"] == 3 && c["restarts"].as_u64().unwrap_or(0) >= 1 {
            assert_eq!(status["state"], "crash-looping", "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "status never showed exit code 3: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_init_sample_deploys_as_is() {
    let net = Devnet::up(4);
    let work = tempfile::tempdir().unwrap();
    let manifest = work.path().join("tpod.yaml");
    net.ok(&["init", manifest.to_str().unwrap()]);
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap()]);
    wait_for_body(deployed["url"].as_str().unwrap(), "hello from trusted pods\n");
    // A follow-mode log stream shows the request while it is open.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_tpod"))
        .arg("--devnet-dir")
        .arg(net.dir.path())
        .args(["logs", "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    wait_for_body(deployed["url"].as_str().unwrap(), "hello from trusted pods\n");
    std::thread::sleep(Duration::from_millis(500));
    assert!(follow.try_wait().unwrap().is_none(), "logs -f ended by itself");
    follow.kill().unwrap();
    let out = follow.wait_with_output().unwrap();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(seen.matches("url:/").count() >= 2, "{seen}");
}

#[test]
fn a_filesystem_volume_keeps_its_data_across_an_update() {
    let net = Devnet::up(5);
    let work = tempfile::tempdir().unwrap();
    let manifest = hello(work.path(), "from the image\n");
    let yaml = std::fs::read_to_string(&manifest).unwrap();
    // The page lives on the volume: written once, served from there by every version.
    let with_volume = |marker: &str| {
        yaml.replace(
            r#"command: ["/bin/busybox", "httpd"]"#,
            &format!(
                r#"command: ["/bin/busybox", "sh", "-c", "[ -f /data/index.html ] || echo {marker} > /data/index.html; exec /bin/busybox httpd -f -p 8080 -h /data"]"#
            ),
        )
        .replace(r#"args: ["-f", "-vv", "-p", "8080", "-h", "/www"]"#, "args: []")
        .replace("    resources:", "    volumeMounts:\n      - name: data\n        mountPath: /data\n    resources:")
        .replace("replicas:", "volumes:\n  - name: data\n    filesystem:\n      size: 8Mi\nreplicas:")
    };
    std::fs::write(&manifest, with_volume("first")).unwrap();
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap()]);
    let url = deployed["url"].as_str().unwrap().to_owned();
    wait_for_body(&url, "first\n");

    std::fs::write(&manifest, with_volume("second")).unwrap();
    net.ok(&["update", manifest.to_str().unwrap()]);
    std::thread::sleep(Duration::from_millis(300));
    wait_for_body(&url, "first\n");
    net.ok(&["delete"]);
    assert!(net.runtime_pods().is_empty());
}
