//! The sandbox around every container, tried from inside real containers (root needed, as the
//! provider): the seccomp profile refuses the keyring, namespaces, io_uring, bpf, perf, mounts
//! and ptrace (a static probe built here by `rustc` tries each call); capabilities leave no raw
//! or packet sockets; the pids limit stops forks while the container keeps running; an
//! operator's deny-list takes calls off the profile; volumes over `/proc`, `/sys` and `/dev`
//! are refused; a plain httpd with volumes still serves; and containers run in their pod's user
//! namespace, as unprivileged host ids that own their rootfs and volumes (a pod made before user
//! namespaces is moved into a range when adopted). Each test has its own state
//! root, bridge and subnet `10.251.<n>.0/24`, and checks that nothing of it is left.
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
    ContainerSpec, ContainerState, LocalRuntime, LogOptions, PodSpec, RestartPolicy, Runtime, RuntimeError, SecretFile,
    VolumeKind, VolumeMount, VolumeSpec, cgroups_path,
};

/// A test's private runtime; dropping it deletes its pods and bridge.
impl Env {
    /// Bridge `tps<hex>`, subnet `10.251.<third>.0/24`.
    fn new(third: u8) -> Self {
        Self::create("tps", (Ipv4Addr::new(10, 251, third, 0), 24))
    }

    /// busybox at `/bin/busybox`, the probe at `/bin/probe`, a page at `/www/index.html`.
    fn image(&self) -> tpod_image::Image {
        let probe = self.dir.path().join("probe");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe/probe.rs");
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
        let built = Command::new(rustc)
            .args(["--edition", "2024", "-C", "opt-level=1", "-C", "target-feature=+crt-static", "-C", "panic=abort"])
            .arg("-o")
            .arg(&probe)
            .arg(&source)
            .output()
            .unwrap();
        assert!(built.status.success(), "building the probe: {}", String::from_utf8_lossy(&built.stderr));
        let page = self.dir.path().join("index.html");
        std::fs::write(&page, "sandboxed\n").unwrap();
        let files = [
            tpod_image::RootfsFile { src: "/bin/busybox".into(), dest: "/bin/busybox".to_owned(), mode: 0o755 },
            tpod_image::RootfsFile { src: probe, dest: "/bin/probe".to_owned(), mode: 0o755 },
            tpod_image::RootfsFile { src: page, dest: "/www/index.html".to_owned(), mode: 0o644 },
        ];
        let config = tpod_image::ContainerConfig {
            entrypoint: vec!["/bin/busybox".to_owned()],
            cmd: Vec::new(),
            env: vec!["PATH=/bin".to_owned()],
            working_dir: Some("/".to_owned()),
            exposed_ports: Vec::new(),
        };
        let layout = self.dir.path().join(format!("image-{}", random_hex(6)));
        tpod_image::build_layout(&layout, &files, &config).unwrap();
        tpod_image::read_layout(&layout).unwrap()
    }
}

/// A container running `script` under busybox sh.
fn shell(image: &tpod_image::Image, name: &str, script: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.to_owned(),
        image: image.clone(),
        command: Some(vec!["/bin/busybox".to_owned(), "sh".to_owned(), "-c".to_owned(), script.to_owned()]),
        args: None,
        env: BTreeMap::new(),
        working_dir: None,
        cpu_millis: 500,
        memory_bytes: 64 << 20,
        pids_limit: 0,
        mounts: Vec::new(),
    }
}

fn pod(containers: Vec<ContainerSpec>, volumes: Vec<VolumeSpec>) -> PodSpec {
    PodSpec { restart_policy: RestartPolicy::Always, id: random_hex(64), containers, volumes }
}

async fn read_logs(runtime: &LocalRuntime, id: &str, container: &str) -> String {
    let mut stream = runtime.logs(id, container, LogOptions { follow: false, tail_lines: 0 }).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend(chunk.unwrap());
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The container's log once it holds `needle`.
async fn wait_log(runtime: &LocalRuntime, id: &str, container: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs = read_logs(runtime, id, container).await;
        if logs.contains(needle) {
            return logs;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in the log of {container}:\n{logs}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `key=value` lines of a log.
fn values(logs: &str) -> BTreeMap<String, String> {
    logs.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect()
}

/// Asserts that nothing of pod `id` is left on the host: cgroups, network namespace, mounts.
fn assert_gone(env: &Env, id: &str, containers: &[&str]) {
    for name in containers {
        let cgroup = cgroups_path(id, name);
        for hierarchy in ["pids", "memory", "cpu,cpuacct", "unified", ""] {
            let dir = Path::new("/sys/fs/cgroup").join(hierarchy).join(cgroup.trim_start_matches('/'));
            assert!(!dir.exists(), "{} is left", dir.display());
        }
    }
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&netns.stdout).contains(&id[..12]), "the network namespace is left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&env.config.root.display().to_string()), "mounts are left under the runtime root");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seccomp_and_capabilities_confine_a_container() {
    let env = Env::new(1);
    let runtime = env.runtime();
    let image = env.image();
    let script = "/bin/probe; grep -E '^(Seccomp|NoNewPrivs|CapEff|CapBnd):' /proc/self/status | tr ':' '='; \
                  /bin/busybox unshare -U true; echo busybox_unshare=$?; \
                  /bin/busybox mount -t tmpfs none /tmp; echo busybox_mount=$?; \
                  echo finished=yes; exec /bin/busybox sleep 1000";
    let spec = pod(vec![shell(&image, "probe", script)], Vec::new());
    let id = spec.id.clone();
    runtime.start(spec).await.unwrap();
    let logs = wait_log(&runtime, &id, "probe", "finished=yes").await;
    let got = values(&logs);
    let get = |key: &str| got.get(key).map(String::as_str).unwrap_or_else(|| panic!("no {key} in:\n{logs}"));
    for call in [
        "add_key",
        "keyctl",
        "request_key",
        "unshare_user",
        "unshare_net",
        "unshare_mount",
        "io_uring_setup",
        "bpf",
        "perf_event_open",
        "mount",
        "ptrace",
        "vsock",
    ] {
        assert_eq!(get(call), "errno1", "{call} is not refused with EPERM:\n{logs}");
    }
    // Allowed by seccomp, refused for want of CAP_NET_RAW.
    assert_eq!(get("raw_socket"), "errno1", "{logs}");
    assert_eq!(get("packet_socket"), "errno1", "{logs}");
    assert_eq!(get("clone3"), "errno38", "clone3 must say ENOSYS so libcs fall back to clone:\n{logs}");
    assert_eq!((get("tcp_socket"), get("getpid"), get("probe")), ("ok", "ok", "done"), "{logs}");
    assert_eq!(get("Seccomp"), "2", "{logs}");
    assert_eq!(get("NoNewPrivs"), "1", "{logs}");
    // CAP_KILL (5), CAP_NET_BIND_SERVICE (10), CAP_AUDIT_WRITE (29) and nothing else.
    assert_eq!(get("CapBnd"), "0000000020000420", "{logs}");
    assert_eq!(get("CapEff"), "0000000020000420", "{logs}");
    assert_ne!(get("busybox_unshare"), "0", "{logs}");
    assert_ne!(get("busybox_mount"), "0", "{logs}");
    // Forks (clone without namespace flags) still work: the shell ran all of the above.
    let status = runtime.status(&id).await.unwrap().unwrap();
    assert_eq!(status.containers[0].state, ContainerState::Running);

    runtime.delete(&id).await.unwrap();
    assert_gone(&env, &id, &["probe"]);
}

/// The pids cgroup directory of a container (cgroup v1 `pids` hierarchy, or v2's root).
fn pids_dir(id: &str, container: &str) -> PathBuf {
    let cgroup = cgroups_path(id, container);
    let v1 = Path::new("/sys/fs/cgroup/pids").join(cgroup.trim_start_matches('/'));
    if v1.exists() { v1 } else { Path::new("/sys/fs/cgroup").join(cgroup.trim_start_matches('/')) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forks_past_the_pids_limit_fail_and_the_container_keeps_running() {
    let mut env = Env::new(2);
    env.config.pids_limit = 24;
    let runtime = env.runtime();
    let image = env.image();
    // An inner shell starts 60 sleepers against a limit of 16 (busybox sh gives up at its first
    // failed fork); the outer shell then says it is still there, without forking.
    let script = "/bin/busybox sh -c 'i=0; while [ $i -lt 60 ]; do /bin/busybox sleep 1000 & i=$((i+1)); done'; \
                  echo survived=yes; exec /bin/busybox sleep 1000";
    let mut limited = shell(&image, "forker", script);
    limited.pids_limit = 16;
    // Asking for more than the provider's limit gets the provider's.
    let mut greedy = shell(&image, "greedy", "exec /bin/busybox sleep 1000");
    greedy.pids_limit = 1_000_000;
    let spec = pod(vec![limited, greedy], Vec::new());
    let id = spec.id.clone();
    runtime.start(spec).await.unwrap();
    let logs = wait_log(&runtime, &id, "forker", "survived=yes").await;
    assert!(logs.contains("can't fork") || logs.contains("Resource temporarily unavailable"), "{logs}");

    let dir = pids_dir(&id, "forker");
    assert_eq!(std::fs::read_to_string(dir.join("pids.max")).unwrap().trim(), "16");
    let current: u64 = std::fs::read_to_string(dir.join("pids.current")).unwrap().trim().parse().unwrap();
    assert!((2..=16).contains(&current), "pids.current = {current}");
    let greedy_max = std::fs::read_to_string(pids_dir(&id, "greedy").join("pids.max")).unwrap();
    assert_eq!(greedy_max.trim(), "24");
    let status = runtime.status(&id).await.unwrap().unwrap();
    let forker = &status.containers[0];
    assert_eq!((forker.state, forker.restarts), (ContainerState::Running, 0), "{status:?}");

    runtime.delete(&id).await.unwrap();
    assert_gone(&env, &id, &["forker", "greedy"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_deny_list_tightens_the_profile() {
    let mut env = Env::new(3);
    env.config.seccomp_deny = vec!["mkdirat".to_owned(), "mkdir".to_owned()];
    let runtime = env.runtime();
    let image = env.image();
    let script = "/bin/busybox mkdir /made; echo mkdir=$?; /bin/busybox touch /touched; echo touch=$?; \
                  echo finished=yes; exec /bin/busybox sleep 1000";
    let spec = pod(vec![shell(&image, "c", script)], Vec::new());
    let id = spec.id.clone();
    runtime.start(spec).await.unwrap();
    let logs = wait_log(&runtime, &id, "c", "finished=yes").await;
    let got = values(&logs);
    assert_eq!(got.get("mkdir").map(String::as_str), Some("1"), "{logs}");
    assert_eq!(got.get("touch").map(String::as_str), Some("0"), "{logs}");
    runtime.delete(&id).await.unwrap();
    assert_gone(&env, &id, &["c"]);

    let mut typo = env.config.clone();
    typo.seccomp_deny = vec!["mkdri".to_owned()];
    let error = LocalRuntime::new(typo).unwrap_err();
    assert!(error.to_string().contains("\"mkdri\""), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_over_proc_sys_and_dev_are_refused() {
    let env = Env::new(4);
    let runtime = env.runtime();
    let image = env.image();
    for path in ["/dev", "/proc/self", "//sys/", "/dev/./shm"] {
        let mut container = shell(&image, "c", "exec /bin/busybox sleep 1000");
        container.mounts = vec![VolumeMount { volume: "data".to_owned(), path: path.to_owned(), read_only: false }];
        let volume = VolumeSpec { name: "data".to_owned(), kind: VolumeKind::Filesystem { size_bytes: 4 << 20 } };
        let spec = pod(vec![container], vec![volume]);
        let id = spec.id.clone();
        match runtime.start(spec).await {
            Err(RuntimeError::InvalidSpec { reason, .. }) => {
                assert!(reason.contains("cannot be mounted at or under"), "{path}: {reason}")
            }
            other => panic!("{path}: {other:?}"),
        }
        assert!(!env.config.root.join("pods").join(&id).exists(), "{path}: the refused pod left state");
    }
}

fn http_get(ip: Ipv4Addr, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&(ip, 8080).into(), Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(stream, "GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        })();
        match attempt {
            Ok(response) if response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200") => {
                return response;
            }
            other if Instant::now() > deadline => panic!("GET {path} from {ip}: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_httpd_with_volumes_still_serves() {
    let env = Env::new(5);
    let runtime = env.runtime();
    let image = env.image();
    // Serves its rootfs page, a page it writes to its file system volume, and the secret.
    let script = "echo written > /data/page.html && /bin/busybox mkdir -p /www/data /www/secret && \
                  echo ok > /www/own.html && exec /bin/busybox httpd -f -p 8080 -h /";
    let mut web = shell(&image, "web", script);
    web.mounts = vec![
        VolumeMount { volume: "data".to_owned(), path: "/data".to_owned(), read_only: false },
        VolumeMount { volume: "creds".to_owned(), path: "/run/secrets".to_owned(), read_only: true },
    ];
    let volumes = vec![
        VolumeSpec { name: "data".to_owned(), kind: VolumeKind::Filesystem { size_bytes: 8 << 20 } },
        VolumeSpec {
            name: "creds".to_owned(),
            kind: VolumeKind::Secret {
                files: vec![SecretFile { name: "token".to_owned(), data: b"hunter2\n".to_vec().into() }],
            },
        },
    ];
    let spec = pod(vec![web], volumes);
    let id = spec.id.clone();
    let endpoint = runtime.start(spec).await.unwrap();
    assert!(http_get(endpoint.ip, "/www/index.html").ends_with("sandboxed\n"));
    assert!(http_get(endpoint.ip, "/www/own.html").ends_with("ok\n"));
    assert!(http_get(endpoint.ip, "/data/page.html").ends_with("written\n"));
    assert!(http_get(endpoint.ip, "/run/secrets/token").ends_with("hunter2\n"));
    runtime.delete(&id).await.unwrap();
    assert_gone(&env, &id, &["web"]);
}

/// A layer holding busybox (root's) and `/home/app` with a file, both owned by 1000:1001 and
/// readable by all (the container's root has no `CAP_DAC_OVERRIDE`).
fn owned_files_layer() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, ids: (u64, u64), mode: u32, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_uid(ids.0);
        header.set_gid(ids.1);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, name, data).unwrap();
    };
    add("bin/busybox", tar::EntryType::Regular, (0, 0), 0o755, &std::fs::read("/bin/busybox").unwrap());
    add("home/app/", tar::EntryType::Directory, (1000, 1001), 0o755, b"");
    add("home/app/owned", tar::EntryType::Regular, (1000, 1001), 0o600, b"mine\n");
    builder.into_inner().unwrap()
}

/// The host ids the container process `pid` runs under, from its `uid_map` and `gid_map` as
/// the host reads them: (first host id, count) of the single line each holds.
fn id_maps(pid: i32) -> [(u32, u32); 2] {
    ["uid_map", "gid_map"].map(|map| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{map}")).unwrap();
        let fields: Vec<u32> = text.split_whitespace().map(|f| f.parse().unwrap()).collect();
        assert_eq!((fields.len(), fields[0]), (3, 0), "{map}: {text}");
        (fields[1], fields[2])
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_run_as_the_pods_own_unprivileged_host_ids() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new(6);
    let runtime = env.runtime();
    let layout = env.dir.path().join("owned-image");
    let config = tpod_image::ContainerConfig {
        entrypoint: vec!["/bin/busybox".to_owned()],
        env: vec!["PATH=/bin".to_owned()],
        ..Default::default()
    };
    tpod_image::write_layout(&layout, &[owned_files_layer()], &config).unwrap();
    let image = tpod_image::read_layout(&layout).unwrap();
    let b = "/bin/busybox";
    let script = format!(
        "echo uid_map=$({b} cat /proc/self/uid_map | {b} tr -s ' ' | {b} sed 's/^ //'); \
         echo id=$({b} id -u):$({b} id -g); \
         echo made > /made-by-root; echo rootfs_write=$?; \
         echo root_owner=$({b} stat -c %u:%g /); \
         echo app_owner=$({b} stat -c %u:%g /home/app/owned); \
         echo busybox_owner=$({b} stat -c %u:%g /bin/busybox); \
         echo x > /data/f && {b} mkdir -p /data/d; echo data_write=$?; \
         echo x > /scratch/f; echo scratch_write=$?; \
         echo data_owner=$({b} stat -c %u:%g /data); \
         echo secret=$({b} cat /run/secrets/token); \
         echo secret_owner=$({b} stat -c %u:%g /run/secrets/token); \
         echo hosts=$({b} grep -c localhost /etc/hosts); \
         echo sys_net=$({b} ls /sys/class/net | {b} tr '\\n' ,); \
         echo finished=yes; exec {b} sleep 1000"
    );
    let mut probe = shell(&image, "ids", &script);
    probe.mounts = vec![
        VolumeMount { volume: "data".to_owned(), path: "/data".to_owned(), read_only: false },
        VolumeMount { volume: "scratch".to_owned(), path: "/scratch".to_owned(), read_only: false },
        VolumeMount { volume: "creds".to_owned(), path: "/run/secrets".to_owned(), read_only: true },
    ];
    let volumes = vec![
        VolumeSpec { name: "data".to_owned(), kind: VolumeKind::Filesystem { size_bytes: 8 << 20 } },
        VolumeSpec { name: "scratch".to_owned(), kind: VolumeKind::EmptyDir { size_bytes: 8 << 20 } },
        VolumeSpec {
            name: "creds".to_owned(),
            kind: VolumeKind::Secret {
                files: vec![SecretFile { name: "token".to_owned(), data: b"hunter2\n".to_vec().into() }],
            },
        },
    ];
    let spec = pod(vec![probe], volumes);
    let id = spec.id.clone();
    runtime.start(spec.clone()).await.unwrap();
    // A second pod, alive at the same time, gets a range of its own.
    let other = pod(vec![shell(&env.image(), "other", "exec /bin/busybox sleep 1000")], Vec::new());
    let other_id = other.id.clone();
    runtime.start(other).await.unwrap();

    let logs = wait_log(&runtime, &id, "ids", "finished=yes").await;
    let got = values(&logs);
    let get = |key: &str| got.get(key).map(String::as_str).unwrap_or_else(|| panic!("no {key} in:\n{logs}"));
    let pid = runtime.status(&id).await.unwrap().unwrap().containers[0].pid.unwrap();
    let [(base, count), gids] = id_maps(pid);
    assert!(base >= env.config.user_ids_first, "host base {base}");
    assert_eq!((count, gids), (65536, (base, 65536)));
    assert_eq!(get("uid_map"), format!("0 {base} 65536"), "{logs}");
    // Root inside, owning its rootfs and able to write to it.
    assert_eq!((get("id"), get("root_owner"), get("rootfs_write")), ("0:0", "0:0", "0"), "{logs}");
    assert_eq!(get("busybox_owner"), "0:0", "{logs}");
    // The image's other user keeps its file.
    assert_eq!(get("app_owner"), "1000:1001", "{logs}");
    // Volumes: writable by the container's root, secrets readable (and root's).
    assert_eq!((get("data_write"), get("scratch_write"), get("data_owner")), ("0", "0", "0:0"), "{logs}");
    assert_eq!((get("secret"), get("secret_owner")), ("hunter2", "0:0"), "{logs}");
    assert_eq!(get("hosts"), "2", "{logs}");
    // Its own /sys: the network namespace belongs to the pod's user namespace.
    assert_eq!(get("sys_net"), "eth0,lo,", "{logs}");

    // On the host: the files are the pod's host ids.
    let pod_dir = env.pod_dir(&id);
    let rootfs = pod_dir.join("containers/ids/mem/rootfs");
    let owner = |path: &Path| {
        let meta = std::fs::symlink_metadata(path).unwrap();
        (meta.uid(), meta.gid())
    };
    assert_eq!(owner(&rootfs.join("made-by-root")), (base, base));
    assert_eq!(owner(&rootfs.join("home/app/owned")), (base + 1000, base + 1001));
    assert_eq!(owner(&pod_dir.join("volumes/data/mnt/data/f")), (base, base));
    assert_eq!(owner(&pod_dir.join("volumes/data/mnt/data/d")), (base, base));

    let other_pid = runtime.status(&other_id).await.unwrap().unwrap().containers[0].pid.unwrap();
    let [(other_base, other_count), _] = id_maps(other_pid);
    assert!(other_base >= env.config.user_ids_first);
    assert!(other_base + other_count <= base || base + count <= other_base, "{base} and {other_base} overlap");

    runtime.delete(&other_id).await.unwrap();

    // A provider restart keeps the pod's range: resumed after a stop, its new processes run in
    // the same user namespace, and find their files as they left them.
    drop(runtime);
    let runtime = env.runtime();
    runtime.adopt(spec.clone()).await.unwrap();
    runtime.stop(&id).await.unwrap();
    runtime.adopt(spec).await.unwrap();
    let resumed = runtime.status(&id).await.unwrap().unwrap().containers[0].pid.unwrap();
    assert_ne!(resumed, pid);
    assert_eq!(id_maps(resumed)[0], (base, count));
    let deadline = Instant::now() + Duration::from_secs(20);
    let logs = loop {
        let logs = read_logs(&runtime, &id, "ids").await;
        if logs.matches("finished=yes").count() == 2 || Instant::now() > deadline {
            break logs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Its second run found what the first: same ids, owners and access (its rootfs file is there).
    let (first, second) = logs.split_at(logs.find("finished=yes").unwrap() + "finished=yes".len());
    assert_eq!(values(first), values(second), "{logs}");
    runtime.delete(&id).await.unwrap();
    assert_gone(&env, &id, &["ids"]);
    assert_gone(&env, &other_id, &["other"]);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(tpod_runtime::userns::STAGE), "the stage is mounted on the host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_from_before_user_namespaces_is_moved_into_a_range_when_adopted() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new(7);
    let runtime = env.runtime();
    let b = "/bin/busybox";
    let script = format!(
        "echo run >> /data/runs; echo data_write=$?; echo runs=$({b} wc -l < /data/runs); \
         echo runs_owner=$({b} stat -c %u:%g /data/runs); echo secret=$({b} cat /run/secrets/token); \
         echo uid_map=$({b} cat /proc/self/uid_map | {b} tr -s ' ' | {b} sed 's/^ //'); \
         echo finished=yes; exec {b} sleep 1000"
    );
    let mut app = shell(&env.image(), "app", &script);
    app.mounts = vec![
        VolumeMount { volume: "data".to_owned(), path: "/data".to_owned(), read_only: false },
        VolumeMount { volume: "creds".to_owned(), path: "/run/secrets".to_owned(), read_only: true },
    ];
    let volumes = vec![
        VolumeSpec { name: "data".to_owned(), kind: VolumeKind::Filesystem { size_bytes: 8 << 20 } },
        VolumeSpec {
            name: "creds".to_owned(),
            kind: VolumeKind::Secret {
                files: vec![SecretFile { name: "token".to_owned(), data: b"hunter2\n".to_vec().into() }],
            },
        },
    ];
    let spec = pod(vec![app], volumes);
    let id = spec.id.clone();
    runtime.start(spec.clone()).await.unwrap();
    wait_log(&runtime, &id, "app", "finished=yes").await;
    let pid = runtime.status(&id).await.unwrap().unwrap().containers[0].pid.unwrap();
    drop(runtime);

    // What an earlier version left: no ids in pod.json, no pinned user namespace, the volume's
    // files and the secret tmpfs owned by the host's root, a rootfs unpacked as root.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let pod_dir = env.pod_dir(&id);
    let record = pod_dir.join("pod.json");
    let mut json: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("ids");
    std::fs::write(&record, serde_json::to_vec(&json).unwrap()).unwrap();
    let pin = pod_dir.join("userns");
    assert!(Command::new("umount").arg(&pin).status().unwrap().success());
    let data = pod_dir.join("volumes/data/mnt/data");
    assert!(Command::new("chown").args(["-R", "0:0"]).arg(&data).status().unwrap().success());
    std::os::unix::fs::chown(pod_dir.join("volumes/creds/secret"), Some(0), Some(0)).unwrap();
    let marker = pod_dir.join("containers/app/mem/unpacked");
    let digest = std::fs::read_to_string(&marker).unwrap().split(' ').next().unwrap().to_owned();
    std::fs::write(&marker, digest).unwrap();

    let runtime = env.runtime();
    runtime.adopt(spec).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let logs = loop {
        let logs = read_logs(&runtime, &id, "app").await;
        if logs.matches("finished=yes").count() == 2 || Instant::now() > deadline {
            break logs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let second = &logs[logs.find("finished=yes").unwrap()..];
    let got = values(second);
    let get = |key: &str| got.get(key).map(String::as_str).unwrap_or_else(|| panic!("no {key} in:\n{logs}"));
    // Its volume's files are its root's again, and writable; its secret readable.
    assert_eq!((get("data_write"), get("runs"), get("runs_owner")), ("0", "2", "0:0"), "{logs}");
    assert_eq!(get("secret"), "hunter2", "{logs}");
    let base: u32 = get("uid_map").split(' ').nth(1).unwrap().parse().unwrap();
    assert!(base >= env.config.user_ids_first, "{logs}");
    assert_eq!(std::fs::metadata(data.join("runs")).unwrap().uid(), base);
    assert_eq!(std::fs::metadata(pod_dir.join("containers/app/mem/rootfs/bin/busybox")).unwrap().uid(), base);
    let pid = runtime.status(&id).await.unwrap().unwrap().containers[0].pid.unwrap();
    assert_eq!(id_maps(pid)[0], (base, 65536));

    runtime.delete(&id).await.unwrap();
    assert_gone(&env, &id, &["app"]);
}
