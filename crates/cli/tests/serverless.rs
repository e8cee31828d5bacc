//! Scale to zero, end to end through the real binaries: a pod with `replicas.min: 0` is stopped
//! once idle (no process or container cgroup left, nothing but storage billed, exactly), and the
//! next HTTP request or TCP connection wakes it; every request that arrives during the wake is
//! served; a wake that fails answers 503 with the reason, which `tpod status` shows too. Needs
//! root, like the provider.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// A devnet whose provider lets pods idle for as little as a second and wakes within `wake`.
fn devnet(n: u8, dir: &Path, wake_secs: u64) -> Devnet {
    let overrides = dir.join("overrides.toml");
    std::fs::write(
        &overrides,
        format!("[scaling]\nmin_idle_timeout_secs = 1\nidle_timeout_secs = 60\nwake_timeout_secs = {wake_secs}\n"),
    )
    .unwrap();
    Devnet::up_with(n, Some(overrides))
}

/// The container cgroups of `container` in pod `pod_id` that exist.
fn container_cgroups(pod_id: &str, container: &str) -> Vec<PathBuf> {
    let path = tpod_runtime::cgroups_path(pod_id.trim_start_matches("0x"), container);
    ["memory", "cpu", "pids", "unified", ""]
        .iter()
        .map(|h| PathBuf::from(format!("/sys/fs/cgroup/{h}{path}")))
        .filter(|p| p.exists())
        .collect()
}

/// Polls `tpod status` until its state is `state`.
fn wait_for_state(net: &Devnet, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = net.ok(&["status"]);
        if status["state"] == state {
            return status;
        }
        assert!(Instant::now() < deadline, "never {state}: {status}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The bill's usage counter `name` (decimal, base units).
fn usage(net: &Devnet, name: &str) -> u128 {
    net.ok(&["bill"])["usage"][name].as_str().unwrap().parse().unwrap()
}

/// One GET `url` (a fresh connection): (status, body).
fn fetch(url: &str) -> (u16, String) {
    get(url)
}

#[test]
fn an_idle_pod_scales_to_zero_and_the_next_request_or_connection_wakes_it() {
    let work = tempfile::tempdir().unwrap();
    let net = devnet(26, work.path(), 20);
    let manifest = hello(work.path(), "awake\n");
    // A second container serves the same page on a TCP port.
    let yaml = std::fs::read_to_string(&manifest).unwrap().replace(
        "replicas:\n  min: 1\n  max: 1\n",
        "  - name: raw\n    image: ./image\n    command: [\"/bin/busybox\", \"httpd\"]\n    args: [\"-f\", \"-p\", \
         \"9090\", \"-h\", \"/www\"]\n    ports:\n      - containerPort: 9090\n        protocol: tcp\n    resources:\n      \
         cpu: 50m\n      memory: 32Mi\nreplicas:\n  min: 0\n  max: 1\n  idleTimeout: 3s\n",
    );
    std::fs::write(&manifest, yaml).unwrap();
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap()]);
    let url = deployed["url"].as_str().unwrap().to_owned();
    let pod_id = deployed["pod_id"].as_str().unwrap().to_owned();
    wait_for_body(&url, "awake\n");

    // Idle for 3 s: at zero, with no process and no container cgroup.
    let status = wait_for_state(&net, "scaled-to-zero");
    assert!(status["containers"].as_array().unwrap().iter().all(|c| c["state"] == "exited"), "{status}");
    for container in ["web", "raw"] {
        let left = container_cgroups(&pod_id, container);
        assert!(left.is_empty(), "cgroups of {container} left at zero: {left:?}");
    }
    // Nothing but storage (none here) is billed at zero: not one base unit more.
    let (cpu, memory, metered) =
        (usage(&net, "cpu_reserved"), usage(&net, "memory_reserved"), net.ok(&["bill"])["metered"].clone());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!((usage(&net, "cpu_reserved"), usage(&net, "memory_reserved")), (cpu, memory));
    assert_eq!(net.ok(&["bill"])["metered"], metered);

    // 20 requests at once wake it; every one is served.
    let woken = Instant::now();
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20).map(|_| s.spawn(|| fetch(&url))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for answer in &answers {
        assert_eq!(answer, &(200, "awake\n".to_owned()), "all answers: {answers:?}");
    }
    let took = woken.elapsed();
    let status = net.ok(&["status"]);
    assert_eq!(status["state"], "running", "{status}");
    let wake = &status["last_wake"];
    assert!(wake["error"].is_null(), "{status}");
    let millis = wake["millis"].as_u64().unwrap();
    assert!(millis > 0 && u128::from(millis) <= took.as_millis(), "wake took {millis} ms of {took:?}");
    // Running again is billed again, from the next sample on.
    let deadline = Instant::now() + Duration::from_secs(10);
    while usage(&net, "cpu_reserved") <= cpu {
        assert!(Instant::now() < deadline, "running again is not billed");
        std::thread::sleep(Duration::from_millis(200));
    }

    // At zero once more, then a TCP connection wakes it.
    wait_for_state(&net, "scaled-to-zero");
    let host_port = status["tcp_ports"][0]["host_port"].as_u64().unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", u16::try_from(host_port).unwrap())).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.") && response.ends_with("awake\n"), "{response}");
    assert_eq!(net.ok(&["status"])["state"], "running");

    net.ok(&["delete"]);
    assert!(net.runtime_pods().is_empty(), "runtime state left: {:?}", net.runtime_pods());
}

#[test]
fn a_failing_wake_answers_503_with_the_reason() {
    let work = tempfile::tempdir().unwrap();
    let net = devnet(27, work.path(), 2);
    let manifest = hello(work.path(), "first life\n");
    // Serves once; woken, it finds its mark in its rootfs (kept at zero) and never listens.
    let yaml = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace(
            "command: [\"/bin/busybox\", \"httpd\"]\n    args: [\"-f\", \"-vv\", \"-p\", \"8080\", \"-h\", \"/www\"]",
            "command: [\"/bin/busybox\", \"sh\", \"-c\"]\n    args: [\"if [ -e /woken ]; then exec /bin/busybox sleep \
             1000; fi; /bin/busybox touch /woken; exec /bin/busybox httpd -f -p 8080 -h /www\"]",
        )
        // Long enough for the first answer on a loaded machine (deploy watches the pod 3 s).
        .replace("replicas:\n  min: 1\n  max: 1\n", "replicas:\n  min: 0\n  max: 1\n  idleTimeout: 20s\n");
    std::fs::write(&manifest, yaml).unwrap();
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap()]);
    let url = deployed["url"].as_str().unwrap().to_owned();
    wait_for_body(&url, "first life\n");
    wait_for_state(&net, "scaled-to-zero");

    let (code, body) = fetch(&url);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("port 8080 did not answer within 2s"), "{body}");
    let status = wait_for_state(&net, "scaled-to-zero");
    let error = status["last_wake"]["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("did not answer"), "{status}");
    let text = String::from_utf8_lossy(&net.tpod(&["status"]).stdout).into_owned();
    assert!(text.contains("FAILED") && text.contains("did not answer"), "{text}");

    net.ok(&["delete"]);
    assert!(net.runtime_pods().is_empty(), "runtime state left: {:?}", net.runtime_pods());
}

#[test]
fn a_pod_can_ask_to_be_scaled_to_zero_at_once() {
    let work = tempfile::tempdir().unwrap();
    let net = devnet(28, work.path(), 20);
    // busybox httpd serves a CGI script whose response asks for sleep.
    let dir = work.path();
    std::fs::write(dir.join("index.html"), "up\n").unwrap();
    std::fs::write(
        dir.join("sleep"),
        "#!/bin/busybox sh\nprintf 'X-Tpod-Scale-To-Zero: now\\r\\nContent-Type: text/plain\\r\\n\\r\\nbye\\n'\n",
    )
    .unwrap();
    let file = |src: PathBuf, dest: &str, mode| tpod_image::RootfsFile { src, dest: dest.to_owned(), mode };
    let files = [
        file("/bin/busybox".into(), "/bin/busybox", 0o755),
        file(dir.join("index.html"), "/www/index.html", 0o644),
        file(dir.join("sleep"), "/www/cgi-bin/sleep", 0o755),
    ];
    let config = tpod_image::ContainerConfig {
        entrypoint: vec!["/bin/busybox".to_owned()],
        cmd: Vec::new(),
        env: vec!["PATH=/bin".to_owned()],
        working_dir: Some("/".to_owned()),
        exposed_ports: Vec::new(),
    };
    tpod_image::build_layout(&dir.join("image"), &files, &config).unwrap();
    let manifest = dir.join("tpod.yaml");
    std::fs::write(
        &manifest,
        "name: asks\ncontainers:\n  - name: web\n    image: ./image\n    command: [\"/bin/busybox\", \"httpd\"]\n    \
         args: [\"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n    ports:\n      - containerPort: 8080\n        protocol: \
         http\n    resources:\n      cpu: 100m\n      memory: 32Mi\nreplicas:\n  min: 0\n  max: 1\n  idleTimeout: 10m\n",
    )
    .unwrap();
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap()]);
    let url = deployed["url"].as_str().unwrap().to_owned();
    wait_for_body(&url, "up\n");

    // The header is the pod's signal to the provider, not something the client sees.
    let rest = url.strip_prefix("http://").unwrap();
    let (host, port) = rest.trim_end_matches('/').rsplit_once(':').unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /cgi-bin/sleep HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200") && response.contains("bye\n"), "{response}");
    assert!(!response.to_ascii_lowercase().contains("x-tpod-scale-to-zero"), "{response}");
    // Down within a few sample intervals, though its idle timeout is 10 minutes.
    wait_for_state(&net, "scaled-to-zero");
    assert_eq!(fetch(&url), (200, "up\n".to_owned()));

    net.ok(&["delete"]);
    assert!(net.runtime_pods().is_empty(), "runtime state left: {:?}", net.runtime_pods());
}
