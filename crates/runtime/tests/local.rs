//! Real containers through [`LocalRuntime`] (needs root, as the provider does): HTTP through
//! the pod network, cgroup limits, restarts, adoption by a new runtime, complete deletion, the
//! log cap, clean failure, pod volumes (shared, size-limited, read-only, kept across restarts,
//! updates and adoption), in-place updates, usage metering (CPU time that never decreases, memory)
//! and stopping a pod for non-payment. Each test has its own state root, bridge and subnet, so
//! they run in parallel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Env, random_hex};
use futures::StreamExt;
use tpod_runtime::{
    ContainerSpec, ContainerState, LocalRuntime, LogOptions, PodSpec, PodStatus, PodUsage, RestartPolicy, Runtime,
    RuntimeError, SecretFile, VolumeKey, VolumeKind, VolumeMount, VolumeSpec, cgroups_path,
};

const PAGE: &str = "<h1>hello from a trusted pod</h1>\n";

impl Env {
    /// Bridge `tpt<hex>`, subnet `10.<net>.0.0/24`.
    fn new(net: u8) -> Self {
        Self::with_subnet(net, 0)
    }

    /// Subnet `10.<net>.<third>.0/24`.
    fn with_subnet(net: u8, third: u8) -> Self {
        Self::create("tpt", (Ipv4Addr::new(10, net, third, 0), 24))
    }

    fn hello_image(&self) -> tpod_image::Image {
        self.image_with_page(PAGE)
    }
}

fn container(image: &tpod_image::Image, name: &str, command: Option<&[&str]>, args: Option<&[&str]>) -> ContainerSpec {
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
    ContainerSpec {
        name: name.to_owned(),
        image: image.clone(),
        command: command.map(strings),
        args: args.map(strings),
        env: BTreeMap::new(),
        working_dir: None,
        cpu_millis: 500,
        memory_bytes: 64 << 20,
        pids_limit: 0,
        mounts: Vec::new(),
    }
}

/// The hello server with `-v`, as examples/hello/tpod.yaml runs it.
fn httpd(image: &tpod_image::Image) -> ContainerSpec {
    container(image, "web", Some(&["/bin/busybox", "httpd"]), Some(&["-f", "-v", "-p", "8080", "-h", "/www"]))
}

fn busybox(image: &tpod_image::Image, name: &str, script: &str) -> ContainerSpec {
    container(image, name, Some(&["/bin/busybox", "sh", "-c", script]), None)
}

/// GET / from ip:8080 over HTTP/1.0, retrying while the server comes up.
fn http_get(ip: Ipv4Addr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&(ip, 8080).into(), Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        })();
        match attempt {
            Ok(response) if !response.is_empty() => return response,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            other => panic!("GET http://{ip}:8080/ failed: {other:?}"),
        }
    }
}

async fn status(runtime: &LocalRuntime, id: &str) -> PodStatus {
    runtime.status(id).await.unwrap().expect("pod status")
}

/// Waits until `check` holds for the pod's status.
async fn wait_status(runtime: &LocalRuntime, id: &str, what: &str, check: impl Fn(&PodStatus) -> bool) -> PodStatus {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let current = status(runtime, id).await;
        if check(&current) {
            return current;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {current:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn read_logs(runtime: &LocalRuntime, id: &str, container: &str, tail_lines: u64) -> String {
    let mut stream = runtime.logs(id, container, LogOptions { follow: false, tail_lines }).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend(chunk.unwrap());
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup directories (v1 controllers, or the v2 root) that hold a container.
fn cgroup_dirs(id: &str, container: &str) -> Vec<PathBuf> {
    let rel = cgroups_path(id, container);
    let rel = rel.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(rel)];
    }
    ["memory", "cpu", "pids", "devices", "freezer", "blkio", "cpuset", "cpuacct"]
        .iter()
        .map(|c| root.join(c).join(rel))
        .filter(|p| p.parent().is_some_and(|parent| parent.parent().is_some_and(Path::exists)))
        .collect()
}

fn netns_exists(id: &str) -> bool {
    Path::new("/var/run/netns").join(format!("tpod-{}", &id[..12])).exists()
}

fn veth_exists(id: &str) -> bool {
    Path::new("/sys/class/net").join(format!("tp{}", &id[..12])).exists()
}

fn process_exists(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Checks that nothing of pod `id` is left anywhere.
fn assert_gone(env: &Env, id: &str, containers: &[&str], pids: &[i32]) {
    assert!(!env.pod_dir(id).exists(), "pod directory left");
    assert!(!netns_exists(id), "network namespace left");
    assert!(!veth_exists(id), "veth left");
    let ip_links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&ip_links.stdout).contains(&format!("tp{}", &id[..12])), "veth in ip link");
    let netns_list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&netns_list.stdout).contains(&id[..12]), "netns in ip netns list");
    for name in containers {
        for dir in cgroup_dirs(id, name) {
            assert!(!dir.exists(), "cgroup {} left", dir.display());
        }
    }
    for &pid in pids {
        assert!(!process_exists(pid), "process {pid} left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_pod_serves_http_and_logs_requests() {
    let env = Env::new(231);
    let runtime = env.runtime();
    let id = random_hex(64);
    let image = env.hello_image();
    let endpoint = runtime
        .start(PodSpec {
            restart_policy: RestartPolicy::Always,
            id: id.clone(),
            volumes: Vec::new(),
            containers: vec![httpd(&image)],
        })
        .await
        .unwrap();
    assert_eq!(endpoint.ip, Ipv4Addr::new(10, 231, 0, 2), "first pod address after the bridge's");

    let mut follow = runtime.logs(&id, "web", LogOptions { follow: true, tail_lines: 0 }).await.unwrap();
    let response = tokio::task::spawn_blocking(move || http_get(endpoint.ip)).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with(PAGE), "{response}");

    // busybox httpd -v logs each response (`<client>: response:200`); the follower sees it arrive.
    let mut followed = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !followed.contains("response:200") {
        let chunk = tokio::time::timeout_at(deadline.into(), follow.next()).await.expect("request in followed logs");
        followed.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
    }
    assert!(read_logs(&runtime, &id, "web", 1).await.contains("response:200"));

    let pod = status(&runtime, &id).await;
    assert_eq!(pod.containers.len(), 1);
    let web = &pod.containers[0];
    assert_eq!((web.name.as_str(), web.state, web.restarts), ("web", ContainerState::Running, 0));
    assert!(web.running_since_unix.is_some() && web.pid.is_some());

    // A second start of the same pod is refused; the unknown pod has no status or logs.
    let again = runtime
        .start(PodSpec {
            restart_policy: RestartPolicy::Always,
            id: id.clone(),
            volumes: Vec::new(),
            containers: vec![httpd(&image)],
        })
        .await;
    assert!(matches!(again, Err(RuntimeError::AlreadyExists { .. })), "{again:?}");
    assert!(runtime.status(&random_hex(64)).await.unwrap().is_none());
    assert!(matches!(
        runtime.logs(&id, "nope", LogOptions::default()).await,
        Err(RuntimeError::NoSuchContainer { .. })
    ));
    assert_eq!(runtime.list().await.unwrap(), vec![id.clone()]);

    runtime.delete(&id).await.unwrap();
    // The follower ends with the pod.
    let end = tokio::time::timeout(Duration::from_secs(5), async { while follow.next().await.is_some() {} }).await;
    assert!(end.is_ok(), "log follower did not end after delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgroup_has_the_spec_limits() {
    let env = Env::new(232);
    let runtime = env.runtime();
    let id = random_hex(64);
    let image = env.hello_image();
    let mut spec = busybox(&image, "limited", "exec /bin/busybox sleep 1000");
    spec.cpu_millis = 250;
    spec.memory_bytes = 48 << 20;
    runtime
        .start(PodSpec {
            restart_policy: RestartPolicy::Always,
            id: id.clone(),
            volumes: Vec::new(),
            containers: vec![spec],
        })
        .await
        .unwrap();

    let root = Path::new("/sys/fs/cgroup");
    let rel = cgroups_path(&id, "limited");
    let rel = rel.trim_start_matches('/');
    let read = |path: PathBuf| std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if root.join("cgroup.controllers").exists() {
        assert_eq!(read(root.join(rel).join("memory.max")).trim(), (48u64 << 20).to_string());
        assert_eq!(read(root.join(rel).join("cpu.max")).trim(), "25000 100000");
    } else {
        assert_eq!(read(root.join("memory").join(rel).join("memory.limit_in_bytes")).trim(), (48u64 << 20).to_string());
        assert_eq!(read(root.join("cpu").join(rel).join("cpu.cfs_quota_us")).trim(), "25000");
        assert_eq!(read(root.join("cpu").join(rel).join("cpu.cfs_period_us")).trim(), "100000");
        // The container's process is in that cgroup.
        let pid = status(&runtime, &id).await.containers[0].pid.unwrap();
        let procs = read(root.join("memory").join(rel).join("cgroup.procs"));
        assert!(procs.lines().any(|l| l == pid.to_string()), "pid {pid} not in {procs}");
    }
    runtime.delete(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_container_restarts_with_backoff() {
    let env = Env::new(233);
    let runtime = env.runtime();
    let id = random_hex(64);
    let image = env.hello_image();
    let started = Instant::now();
    runtime
        .start(PodSpec {
            restart_policy: RestartPolicy::Always,
            id: id.clone(),
            volumes: Vec::new(),
            containers: vec![busybox(&image, "crash", "echo bye; exit 3")],
        })
        .await
        .unwrap();

    let first = wait_status(&runtime, &id, "first exit", |s| s.containers[0].restarts >= 1).await;
    let crash = &first.containers[0];
    assert_eq!(crash.last_exit_code, Some(3));
    assert_eq!(crash.state, ContainerState::Restarting, "{crash:?}");

    // Backoff 200 ms, 400 ms, 800 ms, 800 ms…: a few restarts in 3 s, not dozens.
    wait_status(&runtime, &id, "third exit", |s| s.containers[0].restarts >= 3).await;
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(started.elapsed())).await;
    let later = status(&runtime, &id).await.containers[0].clone();
    assert!((3..=7).contains(&later.restarts), "{later:?} after {:?}", started.elapsed());
    assert_eq!(later.last_exit_code, Some(3));
    // Each run appended to the same log.
    assert!(read_logs(&runtime, &id, "crash", 0).await.matches("bye").count() >= 3);
    runtime.delete(&id).await.unwrap();
    assert_gone(&env, &id, &["crash"], &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_runtime_adopts_running_containers_and_restarts_dead_ones() {
    let env = Env::new(234);
    let id = random_hex(64);
    let image = env.hello_image();
    let spec = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        volumes: Vec::new(),
        containers: vec![httpd(&image), busybox(&image, "side", "exec sleep 1000")],
    };
    let first = env.runtime();
    let endpoint = first.start(spec.clone()).await.unwrap();
    let before = status(&first, &id).await;
    let web_pid = before.containers[0].pid.unwrap();
    let side_pid = before.containers[1].pid.unwrap();
    // The provider goes away without deleting anything (as if killed).
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(process_exists(web_pid) && process_exists(side_pid), "dropping the runtime killed containers");
    // While it is away, one container dies.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(side_pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let second = env.runtime();
    assert_eq!(second.list().await.unwrap(), vec![id.clone()]);
    assert!(second.status(&id).await.unwrap().is_none(), "not adopted yet");
    let adopted = second.adopt(spec.clone()).await.unwrap();
    assert_eq!(adopted, endpoint);
    let after =
        wait_status(&second, &id, "both running", |s| s.containers.iter().all(|c| c.state == ContainerState::Running))
            .await;
    assert_eq!(after.containers[0].pid, Some(web_pid), "the running server was restarted");
    assert_ne!(after.containers[1].pid, Some(side_pid));
    let response = tokio::task::spawn_blocking(move || http_get(adopted.ip)).await.unwrap();
    assert!(response.ends_with(PAGE), "{response}");

    // Adopting again is a no-op.
    assert_eq!(second.adopt(spec).await.unwrap(), endpoint);
    let new_side = after.containers[1].pid.unwrap();
    second.delete(&id).await.unwrap();
    assert_gone(&env, &id, &["web", "side"], &[web_pid, new_side]);

    // Adopting a pod of which nothing exists starts it afresh.
    let fresh = random_hex(64);
    second
        .adopt(PodSpec {
            restart_policy: RestartPolicy::Always,
            id: fresh.clone(),
            volumes: Vec::new(),
            containers: vec![busybox(&image, "idle", "exec sleep 1000")],
        })
        .await
        .unwrap();
    wait_status(&second, &fresh, "fresh pod running", |s| s.containers[0].state == ContainerState::Running).await;
    second.delete(&fresh).await.unwrap();
    assert_gone(&env, &fresh, &["idle"], &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_everything_and_is_idempotent() {
    let env = Env::new(235);
    let runtime = env.runtime();
    let id = random_hex(64);
    let image = env.hello_image();
    let spec = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        volumes: Vec::new(),
        containers: vec![httpd(&image), busybox(&image, "worker", "while true; do echo tick; sleep 1; done")],
    };
    let endpoint = runtime.start(spec).await.unwrap();
    let pids: Vec<i32> = status(&runtime, &id).await.containers.iter().map(|c| c.pid.unwrap()).collect();
    // A neighbour pod, started by another runtime on the same root, gets the next address
    // (allocation reads every pod.json) and is untouched by the deletion below.
    let neighbour = random_hex(64);
    let other_runtime = env.runtime();
    let other = other_runtime
        .start(PodSpec {
            restart_policy: RestartPolicy::Always,
            id: neighbour.clone(),
            volumes: Vec::new(),
            containers: vec![busybox(&image, "idle", "exec sleep 1000")],
        })
        .await
        .unwrap();
    assert_eq!((endpoint.ip, other.ip), (Ipv4Addr::new(10, 235, 0, 2), Ipv4Addr::new(10, 235, 0, 3)));
    assert!(env.pod_dir(&id).join("containers/web/mem/rootfs/bin/busybox").exists());
    assert!(env.pod_dir(&id).join("logs/worker.log").exists());
    assert!(netns_exists(&id) && veth_exists(&id));
    for name in ["web", "worker"] {
        let dirs = cgroup_dirs(&id, name);
        assert!(!dirs.is_empty() && dirs.iter().all(|d| d.exists()), "{dirs:?}");
    }

    runtime.delete(&id).await.unwrap();
    assert_gone(&env, &id, &["web", "worker"], &pids);
    assert!(runtime.status(&id).await.unwrap().is_none());
    assert_eq!(runtime.list().await.unwrap(), vec![neighbour.clone()]);
    assert_eq!(status(&other_runtime, &neighbour).await.containers[0].state, ContainerState::Running);
    assert!(netns_exists(&neighbour) && veth_exists(&neighbour));
    other_runtime.delete(&neighbour).await.unwrap();
    assert_gone(&env, &neighbour, &["idle"], &[]);
    assert!(runtime.list().await.unwrap().is_empty());
    runtime.delete(&id).await.unwrap();
    runtime.delete("../not-a-pod").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_file_stays_under_the_cap() {
    let mut env = Env::new(236);
    let cap = 64 << 10;
    env.config.log_cap_bytes = cap;
    let runtime = env.runtime();
    let id = random_hex(64);
    let image = env.hello_image();
    // About 100 bytes per line, throttled so the 100 ms cap check can keep up.
    let script = "i=0; while true; do echo \"line $i $(printf '%080d' 0)\"; i=$((i+1)); \
                  [ $((i % 50)) = 0 ] && usleep 20000; done";
    runtime
        .start(PodSpec {
            restart_policy: RestartPolicy::Always,
            id: id.clone(),
            volumes: Vec::new(),
            containers: vec![busybox(&image, "chatty", script)],
        })
        .await
        .unwrap();
    let log = env.pod_dir(&id).join("logs/chatty.log");

    let mut largest = 0;
    let mut total_lines = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        largest = largest.max(std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = read_logs(&runtime, &id, "chatty", 0).await;
    if let Some(last) = text.lines().last() {
        total_lines = last.split(' ').nth(1).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    }
    eprintln!("log cap {cap}: largest file seen {largest} bytes; {total_lines} lines written");
    // It wrote far more than the cap, yet the file stayed near it, and what is kept is the newest
    // output starting at a whole line.
    assert!(total_lines * 90 > 4 * cap, "only {total_lines} lines written");
    assert!(largest <= cap * 3 / 2, "log reached {largest} bytes with a cap of {cap}");
    assert!(text.starts_with("line "), "{}", &text[..80.min(text.len())]);
    assert_eq!(read_logs(&runtime, &id, "chatty", 3).await.lines().count(), 3);
    runtime.delete(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_start_leaves_nothing() {
    let env = Env::new(237);
    let runtime = env.runtime();
    let image = env.hello_image();

    // A command missing from the image: the second container fails after the first started.
    let id = random_hex(64);
    let spec = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        volumes: Vec::new(),
        containers: vec![httpd(&image), container(&image, "broken", Some(&["/bin/nope"]), None)],
    };
    let error = runtime.start(spec).await.unwrap_err();
    assert!(matches!(&error, RuntimeError::Container { container, .. } if container == "broken"), "{error}");
    assert!(error.to_string().contains(&id), "{error}");
    assert_gone(&env, &id, &["web", "broken"], &[]);
    assert!(runtime.status(&id).await.unwrap().is_none());

    // A layer blob changed after the image was read: unpacking refuses it.
    let tampered = env.hello_image();
    let layer = tampered.layers[0].blob.path.clone();
    let mut bytes = std::fs::read(&layer).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&layer, bytes).unwrap();
    let id2 = random_hex(64);
    let error = runtime
        .start(PodSpec {
            restart_policy: RestartPolicy::Always,
            id: id2.clone(),
            volumes: Vec::new(),
            containers: vec![httpd(&tampered)],
        })
        .await
        .unwrap_err();
    assert!(matches!(error, RuntimeError::Unpack { .. }), "{error}");
    assert_gone(&env, &id2, &["web"], &[]);

    // Invalid specs are refused before anything is made.
    let bad = runtime
        .start(PodSpec {
            restart_policy: RestartPolicy::Always,
            id: "XYZ".to_owned(),
            volumes: Vec::new(),
            containers: vec![httpd(&image)],
        })
        .await;
    assert!(matches!(bad, Err(RuntimeError::InvalidSpec { .. })), "{bad:?}");
    let twice = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: random_hex(64),
        volumes: Vec::new(),
        containers: vec![httpd(&image), httpd(&image)],
    };
    assert!(matches!(runtime.start(twice).await, Err(RuntimeError::InvalidSpec { .. })));
    assert!(runtime.list().await.unwrap().is_empty());
}

fn empty_dir(name: &str) -> VolumeSpec {
    VolumeSpec { name: name.to_owned(), kind: VolumeKind::EmptyDir { size_bytes: 16 << 20 } }
}

fn filesystem(name: &str, size_bytes: u64) -> VolumeSpec {
    VolumeSpec { name: name.to_owned(), kind: VolumeKind::Filesystem { size_bytes } }
}

fn secret(name: &str, files: &[(&str, &[u8])]) -> VolumeSpec {
    let files =
        files.iter().map(|(name, data)| SecretFile { name: (*name).to_owned(), data: data.to_vec().into() }).collect();
    VolumeSpec { name: name.to_owned(), kind: VolumeKind::Secret { files } }
}

/// `count` one-byte secret files `f0`, `f1`…
fn many_files(count: usize) -> Vec<SecretFile> {
    (0..count).map(|i| SecretFile { name: format!("f{i}"), data: vec![b'x'].into() }).collect()
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount { volume: volume.to_owned(), path: path.to_owned(), read_only }
}

fn with_mounts(mut spec: ContainerSpec, mounts: Vec<VolumeMount>) -> ContainerSpec {
    spec.mounts = mounts;
    spec
}

/// Mount points of this process at or below `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_owned)
        .collect()
}

/// Mount points of the pod's volumes.
fn volume_mounts(env: &Env, id: &str) -> Vec<String> {
    mounts_under(&env.pod_dir(id).join("volumes"))
}

/// Mount points of the pod's containers' rootfs tmpfs.
fn rootfs_mounts(env: &Env, id: &str) -> Vec<String> {
    mounts_under(&env.pod_dir(id).join("containers"))
}

/// The `/proc/self/mountinfo` line of the topmost mount on `path`.
fn mount_line(path: &Path) -> Option<String> {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let path = path.to_string_lossy().into_owned();
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table.lines().rev().find(|l| l.split(' ').nth(4) == Some(path.as_str())).map(str::to_owned)
}

/// The file system type of a mountinfo line (the field after the ` - ` separator).
fn mountinfo_fs_type(line: &str) -> Option<String> {
    line.split(' ').skip_while(|f| *f != "-").nth(1).map(str::to_owned)
}

/// The file system type of the topmost mount on `path`, if something is mounted there.
fn fs_type(path: &Path) -> Option<String> {
    mount_line(path).as_deref().and_then(mountinfo_fs_type)
}

/// Unmounts everything under the pod directory, as a host reboot would leave it (the
/// containers must be dead).
async fn simulate_reboot_unmounts(env: &Env, id: &str) {
    for mount in mounts_under(&env.pod_dir(id)).into_iter().rev() {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !Command::new("umount").arg(&mount).status().unwrap().success() {
            assert!(Instant::now() < deadline, "cannot unmount {mount}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(mounts_under(&env.pod_dir(id)).is_empty());
}

/// `losetup -a` lines of loop devices backed by files under `dir`.
fn loop_devices_under(dir: &Path) -> Vec<String> {
    let out = Command::new("losetup").arg("-a").output().unwrap();
    let dir = dir.to_string_lossy().into_owned();
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains(&dir)).map(str::to_owned).collect()
}

/// Checks that nothing of pod `id`, volumes included, is left.
fn assert_volumes_gone(env: &Env, id: &str) {
    let dir = env.pod_dir(id);
    assert!(mounts_under(&dir).is_empty(), "mounts left: {:?}", mounts_under(&dir));
    assert!(loop_devices_under(&dir).is_empty(), "loop devices left: {:?}", loop_devices_under(&dir));
    assert!(!dir.exists(), "pod directory left");
}

/// Waits until the container's log holds `needle`.
async fn wait_log(runtime: &LocalRuntime, id: &str, container: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = read_logs(runtime, id, container, 0).await;
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {needle:?} in {container}'s log: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_are_shared_limited_read_only_and_kept() {
    let env = Env::with_subnet(231, 1);
    let runtime = env.runtime();
    let id = random_hex(64);
    let image = env.hello_image();
    let writer = with_mounts(
        busybox(&image, "writer", "echo hello-from-writer > /shared/msg; exec sleep 1000"),
        vec![mount("shared", "/shared", false)],
    );
    // Waits for the writer's file, tries to write through its read-only mount, then counts its
    // runs on the file system volume and overfills it.
    let script = "while [ ! -f /in/msg ]; do usleep 50000; done; echo \"read $(cat /in/msg)\"; \
                  if echo x > /in/mine; then echo ro-write-succeeded; else echo ro-write-refused; fi; \
                  echo run >> /data/runs; echo \"runs=$(wc -l < /data/runs)\"; \
                  dd if=/dev/zero of=/data/big bs=1M count=16 2>&1; echo dd-exit=$?; rm -f /data/big; \
                  exec sleep 1000";
    let reader = with_mounts(
        busybox(&image, "reader", script),
        vec![mount("shared", "/in", true), mount("data", "/var/lib/data", false), mount("data", "/data", false)],
    );
    let spec = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        containers: vec![writer, reader],
        volumes: vec![empty_dir("shared"), filesystem("data", 8 << 20)],
    };
    let endpoint = runtime.start(spec.clone()).await.unwrap();
    let log = wait_log(&runtime, &id, "reader", "dd-exit=").await;
    assert!(log.contains("read hello-from-writer"), "{log}");
    assert!(log.contains("ro-write-refused") && log.contains("Read-only file system"), "{log}");
    assert!(log.contains("runs=1"), "{log}");
    assert!(log.contains("No space left on device") && !log.contains("dd-exit=0"), "{log}");
    // The emptyDir has a size too: like the file system volume, an ext4 image on a loop device.
    assert_eq!(volume_mounts(&env, &id).len(), 2, "each volume is mounted once on the host");
    assert_eq!(rootfs_mounts(&env, &id).len(), 2, "one rootfs tmpfs per container");
    assert_eq!(loop_devices_under(&env.pod_dir(&id)).len(), 2);

    // The container restarts; the volume keeps its data.
    let pid = status(&runtime, &id).await.containers[1].pid.unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_log(&runtime, &id, "reader", "runs=2").await;

    // An update with another command keeps the file system volume and drops the emptyDir.
    let check = with_mounts(
        busybox(&image, "check", "echo \"updated runs=$(wc -l < /d/runs)\"; exec sleep 1000"),
        vec![mount("data", "/d", false)],
    );
    let updated = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        containers: vec![check],
        volumes: vec![filesystem("data", 8 << 20)],
    };
    assert_eq!(runtime.update(updated).await.unwrap(), endpoint);
    wait_log(&runtime, &id, "check", "updated runs=2").await;
    assert!(!env.pod_dir(&id).join("volumes/shared").exists(), "the dropped emptyDir is still there");
    assert!(!env.pod_dir(&id).join("containers/writer").exists() && !env.pod_dir(&id).join("logs/writer.log").exists());
    let names: Vec<String> = status(&runtime, &id).await.containers.into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["check"]);

    runtime.delete(&id).await.unwrap();
    assert_volumes_gone(&env, &id);
    assert_gone(&env, &id, &["writer", "reader", "check"], &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_replaces_containers_in_place() {
    let env = Env::with_subnet(232, 1);
    let runtime = env.runtime();
    let id = random_hex(64);
    let image = env.hello_image();
    let first = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        containers: vec![with_mounts(httpd(&image), vec![mount("cache", "/cache", false)])],
        volumes: vec![empty_dir("cache"), filesystem("old", 4 << 20)],
    };
    let endpoint = runtime.start(first.clone()).await.unwrap();
    let response = tokio::task::spawn_blocking(move || http_get(endpoint.ip)).await.unwrap();
    assert!(response.ends_with(PAGE), "{response}");
    let old_pid = status(&runtime, &id).await.containers[0].pid.unwrap();

    // The new server serves another page from a new volume; both old volumes go.
    let script = "echo updated-page > /site/index.html && exec /bin/busybox httpd -f -p 8080 -h /site";
    let second = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        containers: vec![with_mounts(busybox(&image, "web", script), vec![mount("site", "/site", false)])],
        volumes: vec![empty_dir("site")],
    };
    assert_eq!(runtime.update(second).await.unwrap(), endpoint, "the address changed");
    assert!(!process_exists(old_pid), "the old server still runs");
    let response = tokio::task::spawn_blocking(move || http_get(endpoint.ip)).await.unwrap();
    assert!(response.ends_with("updated-page\n"), "{response}");
    let volumes = env.pod_dir(&id).join("volumes");
    assert!(!volumes.join("cache").exists() && !volumes.join("old").exists() && volumes.join("site").exists());
    // Only the new emptyDir's file system is mounted, on its own loop device.
    assert!(volume_mounts(&env, &id).len() == 1 && loop_devices_under(&env.pod_dir(&id)).len() == 1);
    assert_eq!(rootfs_mounts(&env, &id).len(), 1, "the old server's rootfs tmpfs was not unmounted");

    // A failing update leaves no container running but the network and volumes in place; an
    // update back to the first spec recovers the pod.
    let broken = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        containers: vec![container(&image, "broken", Some(&["/bin/nope"]), None)],
        volumes: vec![empty_dir("site"), filesystem("keep", 4 << 20)],
    };
    let error = runtime.update(broken).await.unwrap_err();
    assert!(matches!(&error, RuntimeError::Container { container, .. } if container == "broken"), "{error}");
    let after = status(&runtime, &id).await;
    assert!(after.containers.iter().all(|c| c.state == ContainerState::Exited && c.pid.is_none()), "{after:?}");
    assert!(netns_exists(&id) && veth_exists(&id));
    assert!(env.pod_dir(&id).join("volumes/keep/disk.img").exists());
    assert_eq!(volume_mounts(&env, &id).len(), 2, "the emptyDir and the file system volume");
    assert_eq!(rootfs_mounts(&env, &id).len(), 1, "the broken container's rootfs tmpfs only");
    assert_eq!(runtime.update(first).await.unwrap(), endpoint);
    let response = tokio::task::spawn_blocking(move || http_get(endpoint.ip)).await.unwrap();
    assert!(response.ends_with(PAGE), "{response}");
    assert!(volume_mounts(&env, &id).len() == 2 && env.pod_dir(&id).join("volumes/old/disk.img").exists());
    assert_eq!(rootfs_mounts(&env, &id).len(), 1, "the failed update's rootfs tmpfs was not unmounted");
    assert!(!env.pod_dir(&id).join("volumes/keep").exists());

    // Updating a pod this runtime does not run is refused.
    let unknown = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: random_hex(64),
        containers: vec![httpd(&image)],
        volumes: Vec::new(),
    };
    assert!(matches!(runtime.update(unknown).await, Err(RuntimeError::NoSuchPod { .. })));

    runtime.delete(&id).await.unwrap();
    assert_volumes_gone(&env, &id);
    assert_gone(&env, &id, &["web", "broken"], &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_reuses_and_remounts_the_filesystem_volume() {
    let env = Env::with_subnet(233, 1);
    let id = random_hex(64);
    let image = env.hello_image();
    let script = "echo \"saw $(cat /data/f 2>/dev/null || echo nothing)\"; echo kept > /data/f; exec sleep 1000";
    let spec = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        containers: vec![with_mounts(busybox(&image, "app", script), vec![mount("data", "/data", false)])],
        volumes: vec![filesystem("data", 4 << 20)],
    };
    let first = env.runtime();
    let endpoint = first.start(spec.clone()).await.unwrap();
    wait_log(&first, &id, "app", "saw nothing").await;
    let pid = status(&first, &id).await.containers[0].pid.unwrap();
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A provider restart: the running container and the mounted volume are adopted as they are.
    let second = env.runtime();
    assert_eq!(second.adopt(spec.clone()).await.unwrap(), endpoint);
    assert_eq!(status(&second, &id).await.containers[0].pid, Some(pid));
    assert_eq!(volume_mounts(&env, &id).len(), 1, "the volume was mounted again on top");
    assert_eq!(rootfs_mounts(&env, &id).len(), 1, "the rootfs tmpfs was mounted again on top");
    assert_eq!(loop_devices_under(&env.pod_dir(&id)).len(), 1);
    drop(second);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // As after a reboot: the container is gone, the volume unmounted and the rootfs tmpfs
    // gone. Adoption mounts the same image again, unpacks the rootfs again, and the restarted
    // container finds its data.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    simulate_reboot_unmounts(&env, &id).await;
    let mem = env.pod_dir(&id).join("containers/app/mem");
    assert!(mem.is_dir() && std::fs::read_dir(&mem).unwrap().next().is_none(), "the rootfs was on the disk");
    let third = env.runtime();
    assert_eq!(third.adopt(spec).await.unwrap(), endpoint);
    wait_log(&third, &id, "app", "saw kept").await;
    assert_eq!(volume_mounts(&env, &id).len(), 1);
    assert_eq!(fs_type(&mem).as_deref(), Some("tmpfs"));
    assert!(mem.join("rootfs/bin/busybox").exists() && mem.join("unpacked").exists());

    third.delete(&id).await.unwrap();
    assert_volumes_gone(&env, &id);
    assert_gone(&env, &id, &["app"], &[pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filesystem_volumes_hold_only_ciphertext_and_open_under_their_key_only() {
    const MARKER: &str = "VOLUME-PLAINTEXT-MARKER-5f1c";
    let mut env = Env::with_subnet(235, 1);
    let id = random_hex(64);
    let image = env.hello_image();
    let script = format!(
        "if [ -f /data/{MARKER} ]; then echo \"found $(head -c 28 /data/{MARKER})\"; \
         else for i in $(seq 200); do echo {MARKER}; done > /data/{MARKER}; sync; echo written; fi; exec sleep 1000"
    );
    let spec = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        containers: vec![with_mounts(busybox(&image, "app", &script), vec![mount("data", "/data", false)])],
        volumes: vec![filesystem("data", 4 << 20)],
    };
    let runtime = env.runtime();
    runtime.start(spec.clone()).await.unwrap();
    wait_log(&runtime, &id, "app", "written").await;
    let pid = status(&runtime, &id).await.containers[0].pid.unwrap();
    let volume = env.pod_dir(&id).join("volumes/data");
    // The pod's file, name and contents, is not on the host's disk in clear.
    let disk = || {
        Command::new("sync").status().unwrap();
        std::fs::read(volume.join("disk.img")).unwrap()
    };
    let image_bytes = disk();
    assert!(!image_bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()), "marker in clear on disk");
    drop(runtime);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // After a reboot, the same key opens it again.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    simulate_reboot_unmounts(&env, &id).await;
    let runtime = env.runtime();
    runtime.adopt(spec.clone()).await.unwrap();
    wait_log(&runtime, &id, "app", &format!("found {MARKER}")).await;
    let pid = status(&runtime, &id).await.containers[0].pid.unwrap();
    drop(runtime);
    tokio::time::sleep(Duration::from_millis(300)).await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    simulate_reboot_unmounts(&env, &id).await;

    // Under another key the volume does not open, and the pod does not start on it.
    let key = env.config.volume_key.clone();
    env.config.volume_key = VolumeKey::random();
    let error = env.runtime().adopt(spec.clone()).await.unwrap_err().to_string();
    assert!(error.contains("volume encryption") && error.contains("another key"), "{error}");
    simulate_reboot_unmounts(&env, &id).await;

    // Nor when the encrypted directory was swapped for a plain one behind its back.
    env.config.volume_key = key;
    let mnt = volume.join("mnt");
    assert!(
        Command::new("mount").args(["-o", "loop"]).arg(volume.join("disk.img")).arg(&mnt).status().unwrap().success()
    );
    std::fs::remove_dir_all(mnt.join("data")).unwrap();
    std::fs::create_dir(mnt.join("data")).unwrap();
    simulate_reboot_unmounts(&env, &id).await;
    let error = env.runtime().adopt(spec.clone()).await.unwrap_err().to_string();
    assert!(error.contains("volume encryption") && error.contains("not encrypted"), "{error}");

    let runtime = env.runtime();
    runtime.delete(&id).await.unwrap();
    assert_volumes_gone(&env, &id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_volumes_are_refused_and_failed_starts_leave_no_mounts() {
    let env = Env::with_subnet(234, 1);
    let runtime = env.runtime();
    let image = env.hello_image();

    // A container that cannot start after its pod's file system volume was mounted.
    let id = random_hex(64);
    let spec = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        containers: vec![with_mounts(
            container(&image, "broken", Some(&["/bin/nope"]), None),
            vec![mount("data", "/data", false)],
        )],
        volumes: vec![filesystem("data", 4 << 20), empty_dir("tmp")],
    };
    let error = runtime.start(spec).await.unwrap_err();
    assert!(matches!(&error, RuntimeError::Container { .. }), "{error}");
    assert_volumes_gone(&env, &id);
    assert_gone(&env, &id, &["broken"], &[]);

    let invalid = |volumes: Vec<VolumeSpec>, mounts: Vec<VolumeMount>| PodSpec {
        restart_policy: RestartPolicy::Always,
        id: random_hex(64),
        containers: vec![with_mounts(httpd(&image), mounts)],
        volumes,
    };
    let cases = [
        (invalid(vec![empty_dir("a")], vec![mount("b", "/b", false)]), "\"b\""),
        (invalid(vec![empty_dir("a")], vec![mount("a", "relative", false)]), "absolute"),
        (invalid(vec![empty_dir("a")], vec![mount("a", "/x/../etc", false)]), "absolute"),
        (invalid(vec![empty_dir("a")], vec![mount("a", "/", false)]), "absolute"),
        (invalid(vec![empty_dir("a")], vec![mount("a", "/x", false), mount("a", "/x/", true)]), "/x"),
        (invalid(vec![empty_dir("a"), filesystem("a", 4 << 20)], vec![]), "volume a is listed twice"),
        (invalid(vec![filesystem("tiny", 0)], vec![]), "volume tiny"),
        (invalid(vec![filesystem("huge", (1 << 40) + 1)], vec![]), "volume huge"),
        (invalid(vec![empty_dir("Not_A_Label")], vec![]), "Not_A_Label"),
        (invalid(vec![empty_dir("../up")], vec![]), "../up"),
        (invalid(vec![secret("s", &[])], vec![]), "has 0 files"),
        (invalid(vec![secret("s", &[("a/b", b"do-not-print")])], vec![]), "\"a/b\""),
        (invalid(vec![secret("s", &[("..", b"do-not-print")])], vec![]), "plain file name"),
        (invalid(vec![secret("s", &[(".", b"do-not-print")])], vec![]), "plain file name"),
        (invalid(vec![secret("s", &[("", b"do-not-print")])], vec![]), "plain file name"),
        (invalid(vec![secret("s", &[("a\0b", b"do-not-print")])], vec![]), "plain file name"),
        (invalid(vec![secret("s", &[(&"n".repeat(256), b"do-not-print")])], vec![]), "plain file name"),
        (invalid(vec![secret("s", &[("t", b"do-not-print"), ("t", b"x")])], vec![]), "\"t\" is listed twice"),
        (invalid(vec![secret("s", &[("big", &vec![b'x'; (1 << 20) + 1])])], vec![]), "more than 1048576"),
        (
            invalid(vec![secret("s", &[("a", &vec![b'x'; 1 << 19]), ("b", &vec![b'x'; (1 << 19) + 1])])], vec![]),
            "1048577",
        ),
        (
            invalid(
                vec![VolumeSpec { name: "s".to_owned(), kind: VolumeKind::Secret { files: many_files(65) } }],
                vec![],
            ),
            "65 files",
        ),
    ];
    for (spec, needle) in cases {
        let pod = spec.id.clone();
        let error = runtime.start(spec).await.unwrap_err();
        assert!(matches!(&error, RuntimeError::InvalidSpec { .. }), "{error}");
        let text = error.to_string();
        assert!(text.contains(&pod) && text.contains(needle), "{needle}: {text}");
        assert!(!text.contains("do-not-print") && !format!("{error:?}").contains("do-not-print"), "{text}");
    }
    // The largest secret volume accepted: 64 files, 1 MiB in all; a name of 255 bytes.
    let mut files = many_files(64);
    files[0].data = vec![b'x'; (1 << 20) - 63].into();
    files[1].name = "n".repeat(255);
    let id = random_hex(64);
    let largest = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        containers: vec![with_mounts(
            busybox(&image, "count", "echo \"files=$(ls /s | wc -l) bytes=$(cat /s/* | wc -c)\"; exec sleep 1000"),
            vec![mount("s", "/s", true)],
        )],
        volumes: vec![VolumeSpec { name: "s".to_owned(), kind: VolumeKind::Secret { files } }],
    };
    runtime.start(largest).await.unwrap();
    wait_log(&runtime, &id, "count", "files=64 bytes=1048576").await;
    runtime.delete(&id).await.unwrap();
    assert_volumes_gone(&env, &id);
    assert!(runtime.list().await.unwrap().is_empty());
}

/// A test environment for the usage and stop tests: subnet `10.<net>.<third>.0/24`, bridge
/// `tpu<random>`.
fn usage_env(net: u8, third: u8) -> Env {
    let mut env = Env::with_subnet(net, third);
    env.config.bridge = format!("tpu{}", random_hex(8));
    env
}

/// The container's CPU counter in nanoseconds, read straight from its cgroup.
fn direct_cpu_ns(id: &str, container: &str) -> Option<u64> {
    let rel = cgroups_path(id, container);
    let rel = rel.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        let stat = std::fs::read_to_string(root.join(rel).join("cpu.stat")).ok()?;
        let usec: u64 = stat.lines().find_map(|l| l.strip_prefix("usage_usec "))?.trim().parse().ok()?;
        return Some(usec * 1000);
    }
    ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"]
        .iter()
        .find_map(|c| std::fs::read_to_string(root.join(c).join(rel).join("cpuacct.usage")).ok())
        .and_then(|t| t.trim().parse().ok())
}

async fn usage(runtime: &LocalRuntime, id: &str) -> PodUsage {
    runtime.usage(id).await.unwrap().expect("pod usage")
}

/// Burns CPU for about a second (by the clock in /proc/uptime, read without forking), then
/// exits 1.
const BURN_THEN_CRASH: &str = "read u _ < /proc/uptime; end=$(( ${u%.*}${u#*.} + 100 )); \
                               while :; do read u _ < /proc/uptime; [ ${u%.*}${u#*.} -ge $end ] && exit 1; done";

fn burner(image: &tpod_image::Image, name: &str, script: &str) -> ContainerSpec {
    let mut spec = busybox(image, name, script);
    spec.cpu_millis = 1000;
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reads_the_cgroups_cpu_and_memory() {
    let env = usage_env(238, 0);
    let runtime = env.runtime();
    let id = random_hex(64);
    let image = env.hello_image();
    let spec = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        volumes: Vec::new(),
        containers: vec![burner(&image, "burn", "while :; do :; done")],
    };
    runtime.start(spec).await.unwrap();
    let first = usage(&runtime, &id).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let before = direct_cpu_ns(&id, "burn").unwrap();
    let now = usage(&runtime, &id).await;
    let after = direct_cpu_ns(&id, "burn").unwrap();
    eprintln!("usage {first:?} -> {now:?}; cgroup {before}..{after}");
    // Other tests burn CPU too: at least a third of the time.
    assert!(now.cpu_ns > first.cpu_ns + 1_000_000_000, "{first:?} -> {now:?}");
    assert!(now.cpu_ns >= before * 98 / 100 && now.cpu_ns <= after * 102 / 100, "{now:?} vs {before}..{after}");
    assert!(now.memory_bytes > 0, "{now:?}");
    // Limited to one CPU.
    assert!(now.cpu_ns < 4_000_000_000, "{now:?}");

    assert!(runtime.usage(&random_hex(64)).await.unwrap().is_none());
    assert!(runtime.usage("../nope").await.unwrap().is_none());
    runtime.delete(&id).await.unwrap();
    assert!(runtime.usage(&id).await.unwrap().is_none());
    assert_gone(&env, &id, &["burn"], &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_never_decreases_across_crash_restarts() {
    let env = usage_env(238, 1);
    let runtime = env.runtime();
    let id = random_hex(64);
    let image = env.hello_image();
    let spec = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        volumes: Vec::new(),
        containers: vec![burner(&image, "crash", BURN_THEN_CRASH)],
    };
    runtime.start(spec).await.unwrap();

    // Follows each run's counter straight from its cgroup: a run's last reading is a lower
    // bound of its CPU time.
    let mut last = 0;
    let mut finished_runs = 0u64;
    let mut current_run = 0u64;
    let mut samples = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while status(&runtime, &id).await.containers[0].restarts < 3 {
        assert!(Instant::now() < deadline, "no third restart: {:?}", status(&runtime, &id).await);
        let now = usage(&runtime, &id).await;
        assert!(now.cpu_ns >= last, "cpu_ns went down: {last} -> {}", now.cpu_ns);
        last = now.cpu_ns;
        if let Some(direct) = direct_cpu_ns(&id, "crash") {
            if direct < current_run {
                finished_runs += current_run;
            }
            current_run = direct;
        }
        samples += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Wait for the third restart's new cgroup to be counted too.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let end = usage(&runtime, &id).await;
    let live = direct_cpu_ns(&id, "crash").unwrap_or(0);
    if live < current_run {
        finished_runs += current_run;
    }
    eprintln!("{samples} samples; end {end:?}; finished runs >= {finished_runs} ns, live {live} ns");
    assert!(end.cpu_ns >= last);
    assert!(end.cpu_ns >= finished_runs + live, "{end:?} < {finished_runs} + {live}");
    // Three runs of about a second of wall time each; a loaded machine (other tests, builds)
    // gives them much less CPU, so only a floor well below that is asserted.
    assert!(end.cpu_ns >= 300_000_000, "{end:?}");
    let retired = retired_cpu_ns(&env, &id);
    assert!(retired >= finished_runs && retired <= end.cpu_ns, "retired {retired}, {end:?}");

    // An in-place update retires the old container's counter too.
    let updated = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        volumes: Vec::new(),
        containers: vec![burner(&image, "other", "exec sleep 1000")],
    };
    runtime.update(updated).await.unwrap();
    let after_update = usage(&runtime, &id).await;
    assert!(after_update.cpu_ns >= end.cpu_ns, "{end:?} -> {after_update:?} across the update");
    assert!(retired_cpu_ns(&env, &id) >= end.cpu_ns, "the old container's CPU time was not retired");
    runtime.delete(&id).await.unwrap();
    assert_gone(&env, &id, &["crash", "other"], &[]);
}

/// The retired CPU time recorded in the pod's state file.
fn retired_cpu_ns(env: &Env, id: &str) -> u64 {
    let text = std::fs::read_to_string(env.pod_dir(id).join("pod.json")).unwrap();
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    record["retired_cpu_ns"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_never_decreases_across_a_provider_restart() {
    let env = usage_env(239, 0);
    let id = random_hex(64);
    let image = env.hello_image();
    let spec = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        volumes: Vec::new(),
        containers: vec![burner(&image, "steady", "while :; do :; done"), burner(&image, "crash", BURN_THEN_CRASH)],
    };
    let first = env.runtime();
    first.start(spec.clone()).await.unwrap();
    wait_status(&first, &id, "a crash restart", |s| {
        s.containers[1].restarts >= 1 && s.containers[1].state == ContainerState::Running
    })
    .await;
    let before = usage(&first, &id).await;
    assert!(retired_cpu_ns(&env, &id) > 0, "nothing retired to disk after a restart");
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A new runtime (no memory of what the first one reported) reads the retired total back.
    let second = env.runtime();
    let unadopted = usage(&second, &id).await;
    assert!(unadopted.cpu_ns >= before.cpu_ns, "{before:?} -> {unadopted:?} before adoption");
    second.adopt(spec.clone()).await.unwrap();
    let mut last = usage(&second, &id).await;
    assert!(last.cpu_ns >= unadopted.cpu_ns, "{unadopted:?} -> {last:?} after adoption");
    let restarts = status(&second, &id).await.containers[1].restarts;
    let deadline = Instant::now() + Duration::from_secs(15);
    while status(&second, &id).await.containers[1].restarts < restarts + 2 {
        assert!(Instant::now() < deadline, "no restarts after adoption");
        let now = usage(&second, &id).await;
        assert!(now.cpu_ns >= last.cpu_ns, "{last:?} -> {now:?}");
        last = now;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end = usage(&second, &id).await;
    // Two more crash runs of a second of wall time, and the steady burner: well above this
    // floor even on a loaded machine.
    assert!(end.cpu_ns > before.cpu_ns + 300_000_000, "{before:?} -> {end:?}");
    second.delete(&id).await.unwrap();
    assert_gone(&env, &id, &["steady", "crash"], &[]);
}

/// Whether the pod's containers have no cgroup left.
fn cgroups_gone(id: &str, containers: &[&str]) -> bool {
    containers.iter().all(|c| cgroup_dirs(id, c).iter().all(|d| !d.exists()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_pauses_a_pod_until_adopt_resumes_it() {
    let env = usage_env(239, 1);
    let id = random_hex(64);
    let image = env.hello_image();
    let script = "echo \"saw fs=$(cat /fs/f 2>/dev/null) ed=$(cat /ed/f 2>/dev/null)\"; \
                  echo kept > /fs/f; echo kept > /ed/f; echo written; \
                  i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 1000";
    let app = with_mounts(busybox(&image, "app", script), vec![mount("fs", "/fs", false), mount("ed", "/ed", false)]);
    let spec = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        containers: vec![httpd(&image), app],
        volumes: vec![filesystem("fs", 4 << 20), empty_dir("ed")],
    };
    let names = ["web", "app"];
    let first = env.runtime();
    let endpoint = first.start(spec.clone()).await.unwrap();
    wait_log(&first, &id, "app", "written").await;
    let running = usage(&first, &id).await;
    assert!(running.cpu_ns > 0 && running.memory_bytes > 0, "{running:?}");
    let pids: Vec<i32> = status(&first, &id).await.containers.iter().map(|c| c.pid.unwrap()).collect();

    // Stopped: no process, no cgroup, every container exited; the network, volumes and logs
    // stay, and usage freezes.
    first.stop(&id).await.unwrap();
    let check_stopped = async |runtime: &LocalRuntime, pids: &[i32]| -> PodUsage {
        for &pid in pids {
            assert!(!process_exists(pid), "process {pid} survived the stop");
        }
        assert!(cgroups_gone(&id, &names), "cgroups left after stop");
        let stopped = status(runtime, &id).await;
        assert!(stopped.containers.iter().all(|c| c.state == ContainerState::Exited && c.pid.is_none()), "{stopped:?}");
        assert!(netns_exists(&id) && veth_exists(&id), "the network went");
        assert_eq!(volume_mounts(&env, &id).len(), 2, "the file system volume or the emptyDir went");
        assert_eq!(rootfs_mounts(&env, &id).len(), 2, "the rootfs tmpfs went");
        assert_eq!(runtime.list().await.unwrap(), vec![id.clone()]);
        let frozen = usage(runtime, &id).await;
        assert_eq!(frozen.memory_bytes, 0, "{frozen:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(usage(runtime, &id).await, frozen, "usage moved while stopped");
        assert!(read_logs(runtime, &id, "app", 0).await.contains("written"), "the log went");
        frozen
    };
    let frozen = check_stopped(&first, &pids).await;
    assert!(frozen.cpu_ns >= running.cpu_ns, "{running:?} -> {frozen:?}");
    assert!(retired_cpu_ns(&env, &id) == frozen.cpu_ns, "the stopped pod's CPU time is not on disk");
    // Idempotent; an update is refused; an unknown pod cannot be stopped.
    first.stop(&id).await.unwrap();
    assert_eq!(usage(&first, &id).await, frozen);
    assert!(matches!(first.update(spec.clone()).await, Err(RuntimeError::Stopped { .. })));
    assert!(matches!(first.stop(&random_hex(64)).await, Err(RuntimeError::NoSuchPod { .. })));
    assert!(matches!(first.stop("../x").await, Err(RuntimeError::NoSuchPod { .. })));

    // Resumed in the same process: same address, the volumes' data is there, it serves.
    assert_eq!(first.adopt(spec.clone()).await.unwrap(), endpoint);
    wait_log(&first, &id, "app", "saw fs=kept ed=kept").await;
    let response = tokio::task::spawn_blocking(move || http_get(endpoint.ip)).await.unwrap();
    assert!(response.ends_with(PAGE), "{response}");
    assert!(usage(&first, &id).await.cpu_ns >= frozen.cpu_ns);
    let pids: Vec<i32> = status(&first, &id).await.containers.iter().map(|c| c.pid.unwrap()).collect();

    // Stopped again, then the provider restarts: the new runtime knows the pod as stopped and
    // does not start it.
    first.stop(&id).await.unwrap();
    let frozen = check_stopped(&first, &pids).await;
    drop(first);
    let second = env.runtime();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(check_stopped(&second, &[]).await, frozen, "usage changed across the restart");
    assert_eq!(second.list().await.unwrap(), vec![id.clone()]);

    // Resumed after the restart.
    assert_eq!(second.adopt(spec.clone()).await.unwrap(), endpoint);
    let log = wait_log(&second, &id, "app", "written\nsaw fs=kept ed=kept\nwritten\nsaw fs=kept").await;
    assert!(log.starts_with("saw fs= ed=\n"), "{log}");
    let response = tokio::task::spawn_blocking(move || http_get(endpoint.ip)).await.unwrap();
    assert!(response.ends_with(PAGE), "{response}");
    let resumed = usage(&second, &id).await;
    assert!(resumed.cpu_ns >= frozen.cpu_ns && resumed.memory_bytes > 0, "{frozen:?} -> {resumed:?}");
    let pids: Vec<i32> = status(&second, &id).await.containers.iter().map(|c| c.pid.unwrap()).collect();

    // Delete after stop leaves nothing.
    second.stop(&id).await.unwrap();
    second.delete(&id).await.unwrap();
    assert!(second.status(&id).await.unwrap().is_none() && second.usage(&id).await.unwrap().is_none());
    assert!(second.list().await.unwrap().is_empty());
    assert_volumes_gone(&env, &id);
    assert_gone(&env, &id, &names, &pids);
    assert!(matches!(second.stop(&id).await, Err(RuntimeError::NoSuchPod { .. })));
}

/// Regular files under `root`, not crossing into other file systems (the tmpfs mounted under
/// it), whose contents hold `needle`; also how many files were read.
fn files_holding(root: &Path, needle: &[u8]) -> (Vec<PathBuf>, usize) {
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::symlink_metadata(root).unwrap().dev();
    let (mut found, mut read) = (Vec::new(), 0);
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.dev() != device {
                continue;
            }
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() {
                let Ok(bytes) = std::fs::read(&path) else { continue };
                read += 1;
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path);
                }
            }
        }
    }
    (found, read)
}

/// File names under `root` on its own file system.
fn names_on_disk(root: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::symlink_metadata(root).unwrap().dev();
    let mut names = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else { continue };
            if meta.dev() == device {
                names.push(entry.file_name().to_string_lossy().into_owned());
                if meta.is_dir() {
                    pending.push(entry.path());
                }
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rootfs_and_secrets_live_in_memory_only() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = Env::with_subnet(243, 0);
    env.config.rootfs_bytes = 16 << 20;
    let runtime = env.runtime();
    let id = random_hex(64);
    let image_marker = format!("image-marker-{}", random_hex(24));
    let secret_marker = format!("secret-marker-{}", random_hex(24));
    let token = format!("token-{}", random_hex(24));
    let image = env.image_with_page(&format!("<p>{image_marker}</p>\n"));
    // The token is printed (so it is in the log: proof the walk below reads the logs); the
    // hidden file, and the image's page, only have their sizes printed.
    let script = "echo \"token=$(cat /run/secrets/token)\"; echo \"hidden=$(wc -c < /run/secrets/hidden)\"; \
                  echo \"page=$(wc -c < /www/index.html)\"; \
                  if echo x > /run/secrets/token; then echo secret-write-succeeded; else echo secret-write-refused; fi; \
                  if touch /run/secrets/new; then echo secret-create-succeeded; else echo secret-create-refused; fi; \
                  dd if=/dev/zero of=/fill bs=1M count=32 2>&1; echo dd-exit=$?; rm -f /fill; echo done; \
                  exec sleep 1000";
    // Asked read-write: a secret volume is mounted read-only anyway.
    let app = with_mounts(busybox(&image, "app", script), vec![mount("secrets", "/run/secrets", false)]);
    let hidden = format!("{secret_marker}\n");
    let spec = PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        containers: vec![app],
        volumes: vec![secret("secrets", &[("token", token.as_bytes()), ("hidden", hidden.as_bytes())])],
    };
    runtime.start(spec).await.unwrap();
    let log = wait_log(&runtime, &id, "app", "done").await;
    assert!(log.contains(&format!("token={token}\n")), "{log}");
    assert!(log.contains(&format!("hidden={}\n", hidden.len())), "{log}");
    assert!(log.contains(&format!("page={}\n", image_marker.len() + 8)), "{log}");
    assert!(log.contains("secret-write-refused") && log.contains("secret-create-refused"), "{log}");
    assert!(log.contains("Read-only file system"), "{log}");
    // The rootfs tmpfs is 16 MiB: writing 32 MiB into it fails, the disk is not filled.
    assert!(log.contains("No space left on device") && !log.contains("dd-exit=0"), "{log}");

    // The rootfs: a 16 MiB tmpfs on the host, and what the container has as `/`.
    let pod_dir = env.pod_dir(&id);
    let mem = pod_dir.join("containers/app/mem");
    let line = mount_line(&mem).expect("the rootfs tmpfs is mounted");
    assert_eq!(mountinfo_fs_type(&line).as_deref(), Some("tmpfs"), "{line}");
    assert!(line.contains("size=16384k") && line.contains("mode=755"), "{line}");
    let pid = status(&runtime, &id).await.containers[0].pid.unwrap();
    let inside = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = inside.lines().find(|l| l.split(' ').nth(4) == Some("/")).expect("the container's / mount");
    assert_eq!(mountinfo_fs_type(root).as_deref(), Some("tmpfs"), "{root}");

    // The secret volume: a root-only tmpfs holding the files read-only.
    let secret_dir = pod_dir.join("volumes/secrets/secret");
    let line = mount_line(&secret_dir).expect("the secret tmpfs is mounted");
    assert_eq!(mountinfo_fs_type(&line).as_deref(), Some("tmpfs"), "{line}");
    assert!(line.contains("mode=700") && line.contains("size=12k"), "{line}");
    eprintln!("secret tmpfs: {line}");
    assert_eq!(std::fs::metadata(&secret_dir).unwrap().permissions().mode() & 0o7777, 0o700);
    for (name, data) in [("token", token.as_bytes()), ("hidden", hidden.as_bytes())] {
        let file = secret_dir.join(name);
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777, 0o444, "{name}");
        assert_eq!(std::fs::read(&file).unwrap(), data, "{name}");
    }
    // The rootfs tmpfs, the secret tmpfs, and the pin of the pod's user namespace.
    assert_eq!(mounts_under(&pod_dir).len(), 3, "{:?}", mounts_under(&pod_dir));
    assert!(mounts_under(&pod_dir).iter().any(|m| m.ends_with("/userns")), "{:?}", mounts_under(&pod_dir));

    // Nothing of the image or the secret is on the disk under the runtime's root.
    let root = &env.config.root;
    // The container printed the token: its log holds it, encrypted only.
    let (found, read) = files_holding(root, token.as_bytes());
    assert!(found.is_empty(), "the token is on the disk in clear in {found:?}");
    assert!(pod_dir.join("logs/app.log").is_file());
    assert!(read >= 3, "only {read} files read");
    for needle in [&image_marker, &secret_marker] {
        let (found, _) = files_holding(root, needle.as_bytes());
        assert!(found.is_empty(), "{needle} is on the disk in {found:?}");
    }
    let names = names_on_disk(root);
    assert!(names.iter().any(|n| n == "pod.json"), "{names:?}");
    for name in ["busybox", "index.html", "rootfs", "unpacked", "hidden"] {
        assert!(!names.iter().any(|n| n == name), "{name} is on the disk: {names:?}");
    }

    // Deleting the pod unmounts both tmpfs (their memory is freed).
    runtime.delete(&id).await.unwrap();
    assert!(mount_line(&mem).is_none() && mount_line(&secret_dir).is_none());
    assert_volumes_gone(&env, &id);
    assert_gone(&env, &id, &["app"], &[pid]);
}

/// What tells one mount on `path` from another: its mount id (first mountinfo field; the
/// kernel reuses freed ones) and the change time of a file made when it was filled (a fresh
/// tmpfs has a new one, to the nanosecond): a rootfs tmpfs's `unpacked` marker (its root changes
/// with each launch's runtime spec), else the root of a secret volume's, which does not change
/// once filled.
fn mount_id(path: &Path) -> (String, i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let line = mount_line(path).unwrap_or_else(|| panic!("nothing mounted on {}", path.display()));
    let marker = path.join("unpacked");
    let meta = std::fs::metadata(if marker.exists() { &marker } else { path }).unwrap();
    (line.split(' ').next().unwrap().to_owned(), meta.ctime(), meta.ctime_nsec())
}

/// Waits until `needle` occurs at least `count` times in the container's log.
async fn wait_log_count(runtime: &LocalRuntime, id: &str, container: &str, needle: &str, count: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = read_logs(runtime, id, container, 0).await;
        if text.matches(needle).count() >= count {
            return text;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {count} {needle:?} in {container}'s log: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_rootfs_and_secrets_survive_restarts_stop_adoption_and_reboots() {
    let env = Env::with_subnet(243, 1);
    let id = random_hex(64);
    let image = env.hello_image();
    // Reports whether it finds what an earlier run wrote into its rootfs, then reads the secret
    // every 200 ms.
    let script = "echo \"saw $(cat /kept 2>/dev/null || echo nothing)\"; echo kept > /kept; \
                  while :; do echo \"token=$(cat /run/secrets/token)\"; usleep 200000; done";
    let spec = |token: &[u8]| PodSpec {
        restart_policy: RestartPolicy::Always,
        id: id.clone(),
        containers: vec![with_mounts(busybox(&image, "app", script), vec![mount("secrets", "/run/secrets", true)])],
        volumes: vec![secret("secrets", &[("token", token), ("other", b"unchanged")])],
    };
    let v1 = spec(b"one");
    let pod_dir = env.pod_dir(&id);
    let mem = pod_dir.join("containers/app/mem");
    let secret_dir = pod_dir.join("volumes/secrets/secret");

    let first = env.runtime();
    let endpoint = first.start(v1.clone()).await.unwrap();
    wait_log(&first, &id, "app", "saw nothing\ntoken=one\n").await;
    let (mem_id, secret_id) = (mount_id(&mem), mount_id(&secret_dir));

    // A container restart keeps its rootfs tmpfs and what it wrote there.
    let pid = status(&first, &id).await.containers[0].pid.unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_log(&first, &id, "app", "saw kept\ntoken=one\n").await;
    assert_eq!((mount_id(&mem), mount_id(&secret_dir)), (mem_id.clone(), secret_id.clone()));
    let pid = wait_status(&first, &id, "restarted", |s| s.containers[0].pid.is_some()).await.containers[0].pid.unwrap();

    // A provider restart: the new runtime adopts the running container with its tmpfs as they
    // are (nothing remounted), and the container keeps reading its secret.
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = env.runtime();
    assert_eq!(second.adopt(v1.clone()).await.unwrap(), endpoint);
    assert_eq!(status(&second, &id).await.containers[0].pid, Some(pid), "the container was restarted");
    assert_eq!((mount_id(&mem), mount_id(&secret_dir)), (mem_id.clone(), secret_id.clone()), "remounted");
    let reads = read_logs(&second, &id, "app", 0).await.matches("token=one").count();
    wait_log_count(&second, &id, "app", "token=one", reads + 3).await;
    assert_eq!(mounts_under(&pod_dir).len(), 3);

    // Stop keeps both tmpfs; resuming finds the rootfs as the container left it.
    second.stop(&id).await.unwrap();
    assert_eq!((mount_id(&mem), mount_id(&secret_dir)), (mem_id.clone(), secret_id.clone()), "stop unmounted");
    assert_eq!(second.adopt(v1.clone()).await.unwrap(), endpoint);
    wait_log_count(&second, &id, "app", "saw kept", 2).await;
    assert_eq!((mount_id(&mem), mount_id(&secret_dir)), (mem_id.clone(), secret_id.clone()));

    // An update with another token makes the secret volume again, and a fresh rootfs: the old
    // tmpfs are unmounted.
    let v2 = spec(b"two");
    assert_eq!(second.update(v2.clone()).await.unwrap(), endpoint);
    let log = wait_log(&second, &id, "app", "token=two").await;
    assert_eq!(log.matches("saw nothing").count(), 2, "{log}");
    assert_ne!(mount_id(&mem), mem_id, "the rootfs tmpfs was kept across the update");
    assert_ne!(mount_id(&secret_dir), secret_id, "the secret tmpfs was kept across the update");
    assert_eq!(std::fs::read(secret_dir.join("token")).unwrap(), b"two");
    assert_eq!(mounts_under(&pod_dir).len(), 3, "{:?}", mounts_under(&pod_dir));
    let pid = status(&second, &id).await.containers[0].pid.unwrap();

    // As after a host reboot: the container is gone and so are both tmpfs, leaving empty
    // directories. Adoption unpacks the image and writes the secret again, from the spec.
    drop(second);
    tokio::time::sleep(Duration::from_millis(300)).await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    simulate_reboot_unmounts(&env, &id).await;
    for dir in [&mem, &secret_dir] {
        assert!(std::fs::read_dir(dir).unwrap().next().is_none(), "{} is not empty on the disk", dir.display());
    }
    let third = env.runtime();
    assert_eq!(third.adopt(v2.clone()).await.unwrap(), endpoint);
    let log = wait_log_count(&third, &id, "app", "saw nothing", 3).await;
    wait_log_count(&third, &id, "app", "token=two", log.matches("token=two").count() + 2).await;
    assert_eq!(fs_type(&mem).as_deref(), Some("tmpfs"));
    assert_eq!(fs_type(&secret_dir).as_deref(), Some("tmpfs"));
    assert_eq!(std::fs::read(secret_dir.join("other")).unwrap(), b"unchanged");
    let pid = status(&third, &id).await.containers[0].pid.unwrap();

    third.delete(&id).await.unwrap();
    assert_volumes_gone(&env, &id);
    assert_gone(&env, &id, &["app"], &[pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_containers_process_and_output_are_never_on_the_disk() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::with_subnet(243, 2);
    let id = random_hex(64);
    let image = env.hello_image();
    let env_marker = format!("env-marker-{}", random_hex(24));
    let arg_marker = format!("arg-marker-{}", random_hex(24));
    let log_marker = format!("log-marker-{}", random_hex(24));
    // The env marker comes from the environment, the arg marker from an argument: the line
    // proves the container got both.
    let line = format!("{log_marker} {env_marker} {arg_marker}");
    let script = format!("echo \"{log_marker} $SECRET_ENV $1\"; exec sleep 1000");
    let mut app = container(&image, "app", Some(&["/bin/busybox", "sh", "-c"]), None);
    app.args = Some(vec![script, "sh".to_owned(), arg_marker.clone()]);
    app.env.insert("SECRET_ENV".to_owned(), env_marker.clone());
    let spec =
        PodSpec { restart_policy: RestartPolicy::Always, id: id.clone(), volumes: Vec::new(), containers: vec![app] };
    let pod_dir = env.pod_dir(&id);
    let bundle = pod_dir.join("containers/app/mem");
    let root = env.config.root.clone();
    let assert_not_on_disk = |when: &str| {
        for needle in [&env_marker, &arg_marker, &log_marker] {
            let (found, read) = files_holding(&root, needle.as_bytes());
            assert!(found.is_empty(), "{when}: {needle} is on the disk in {found:?}");
            assert!(read >= 3, "{when}: only {read} files read");
        }
        let names = names_on_disk(&root);
        for name in ["config.json", "hosts", "rootfs"] {
            assert!(!names.iter().any(|n| n == name), "{when}: {name} is on the disk: {names:?}");
        }
        // What the walk skipped holds them: the spec, in the container's tmpfs.
        let config = std::fs::read_to_string(bundle.join("config.json")).unwrap();
        assert!(config.contains(&env_marker) && config.contains(&arg_marker), "{when}: {config}");
        let mode = std::fs::metadata(bundle.join("config.json")).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o600, "{when}");
        assert_eq!(fs_type(&bundle).as_deref(), Some("tmpfs"), "{when}");
        assert!(bundle.join("hosts").is_file(), "{when}");
    };

    let first = env.runtime();
    let endpoint = first.start(spec.clone()).await.unwrap();
    let log = wait_log(&first, &id, "app", &line).await;
    assert_eq!(log.matches(&line).count(), 1, "{log}");
    assert!(pod_dir.join("logs/app.log").is_file());
    assert_not_on_disk("started");

    // A provider restart: the new runtime adopts the running container. A spec an earlier
    // version left on the disk goes then.
    let pid = status(&first, &id).await.containers[0].pid.unwrap();
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let legacy = pod_dir.join("containers/app/config.json");
    std::fs::write(&legacy, format!("{{\"env\":[\"SECRET_ENV={env_marker}\"]}}")).unwrap();
    let second = env.runtime();
    assert_eq!(second.adopt(spec.clone()).await.unwrap(), endpoint);
    assert_eq!(status(&second, &id).await.containers[0].pid, Some(pid), "the container was restarted");
    assert!(!legacy.exists(), "the spec of an earlier layout is still on the disk");

    // It still runs, and is relaunched from its spec in memory once it dies.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait_log_count(&second, &id, "app", &line, 2).await;
    let running = wait_status(&second, &id, "relaunched", |s| {
        s.containers[0].state == ContainerState::Running && s.containers[0].pid.is_some_and(|p| p != pid)
    })
    .await;
    assert_not_on_disk("relaunched after adoption");

    let pid = running.containers[0].pid.unwrap();
    second.delete(&id).await.unwrap();
    assert!(mount_line(&bundle).is_none(), "the bundle tmpfs is still mounted");
    assert_gone(&env, &id, &["app"], &[pid]);
}
