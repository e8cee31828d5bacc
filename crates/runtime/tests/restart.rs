//! Restart policies with real containers (needs root, like the other runtime suites): under
//! `Never` a container that ends stays ended, succeeded or failed with its exit code; under
//! `OnFailure` only a failure is restarted; under `Always` even a success is. An ended container
//! leaves no process, cgroup or rootfs mount, keeps its log, and stays ended across a provider
//! restart (adoption), a stop and a resume.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Env, random_hex};
use futures::StreamExt;
use tpod_runtime::{
    ContainerSpec, ContainerState, LocalRuntime, LogOptions, PodSpec, PodStatus, RestartPolicy, Runtime, cgroups_path,
};

/// Subnets `10.246.<third>.0/24`, which no other suite uses.
fn env(third: u8) -> Env {
    Env::create("tpr", (Ipv4Addr::new(10, 246, third, 0), 24))
}

/// A busybox container running `script` with `sh -c`. The hello image has `/bin/busybox` and no
/// applet links, so scripts use shell builtins only.
fn sh(image: &tpod_image::Image, name: &str, script: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.to_owned(),
        image: image.clone(),
        command: Some(vec!["/bin/busybox".into(), "sh".into(), "-c".into(), script.into()]),
        args: None,
        env: BTreeMap::new(),
        working_dir: None,
        cpu_millis: 500,
        memory_bytes: 64 << 20,
        pids_limit: 0,
        mounts: Vec::new(),
    }
}

fn pod(id: &str, restart_policy: RestartPolicy, containers: Vec<ContainerSpec>) -> PodSpec {
    PodSpec { id: id.to_owned(), containers, volumes: Vec::new(), restart_policy }
}

async fn status(runtime: &LocalRuntime, id: &str) -> PodStatus {
    runtime.status(id).await.unwrap().expect("pod status")
}

async fn wait_status(runtime: &LocalRuntime, id: &str, what: &str, check: impl Fn(&PodStatus) -> bool) -> PodStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let current = status(runtime, id).await;
        if check(&current) {
            return current;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {current:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn read_logs(runtime: &LocalRuntime, id: &str, container: &str) -> String {
    let mut stream = runtime.logs(id, container, LogOptions { follow: false, tail_lines: 0 }).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend(chunk.unwrap());
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup directories (v1 controllers, or the v2 root) of a container.
fn cgroup_dirs(id: &str, container: &str) -> Vec<PathBuf> {
    let rel = cgroups_path(id, container);
    let rel = rel.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(rel)];
    }
    ["memory", "cpu", "pids"].iter().map(|c| root.join(c).join(rel)).collect()
}

fn mounted(path: &Path) -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_string_lossy();
    mountinfo.lines().any(|line| line.split(' ').nth(4) == Some(&*path))
}

/// What an ended container leaves: no process, no cgroup, no rootfs tmpfs.
fn assert_retired(env: &Env, id: &str, status: &PodStatus, name: &str) {
    let c = status.containers.iter().find(|c| c.name == name).unwrap();
    assert!(c.state.is_ended() && c.pid.is_none() && c.running_since_unix.is_none(), "{c:?}");
    for dir in cgroup_dirs(id, name) {
        assert!(!dir.exists(), "cgroup {} left", dir.display());
    }
    let rootfs = env.pod_dir(id).join("containers").join(name).join("mem");
    assert!(!mounted(&rootfs), "rootfs tmpfs of {name} still mounted");
}

fn kill(pid: i32) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ends_containers_with_their_exit_codes_and_keeps_them_ended() {
    let env = env(1);
    let image = env.image_with_page("job");
    let id = random_hex(64);
    let spec = pod(
        &id,
        RestartPolicy::Never,
        vec![
            sh(&image, "ok", "echo all done; exit 0"),
            sh(&image, "bad", "echo went wrong; exit 3"),
            sh(&image, "long", "exec /bin/busybox sleep 1000"),
        ],
    );
    let first = env.runtime();
    first.start(spec.clone()).await.unwrap();
    let ended =
        wait_status(&first, &id, "ok and bad ended", |s| s.containers[..2].iter().all(|c| c.state.is_ended())).await;
    let [ok, bad, long] = &ended.containers[..] else { panic!("{ended:?}") };
    assert_eq!((ok.state, ok.last_exit_code, ok.restarts), (ContainerState::Succeeded, Some(0), 0), "{ok:?}");
    assert_eq!((bad.state, bad.last_exit_code, bad.restarts), (ContainerState::Failed, Some(3), 0), "{bad:?}");
    assert_eq!(long.state, ContainerState::Running, "{long:?}");
    for name in ["ok", "bad"] {
        assert_retired(&env, &id, &ended, name);
    }
    // Their logs stay readable.
    assert!(read_logs(&first, &id, "ok").await.contains("all done"));
    assert!(read_logs(&first, &id, "bad").await.contains("went wrong"));
    // Not restarted later either (the test backoff is 200 ms).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = status(&first, &id).await;
    assert_eq!(later.containers[..2], ended.containers[..2]);
    // The end is on disk, for a new runtime.
    let record = std::fs::read_to_string(env.pod_dir(&id).join("pod.json")).unwrap();
    assert_eq!(record.matches("\"ended\": true").count(), 2, "{record}");

    // The provider goes away; meanwhile the last container dies, its exit code lost.
    let long_pid = long.pid.unwrap();
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    kill(long_pid);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = env.runtime();
    second.adopt(spec.clone()).await.unwrap();
    let adopted = status(&second, &id).await;
    assert_eq!(adopted.containers[..2], ended.containers[..2], "adoption restarted an ended container");
    let long = &adopted.containers[2];
    assert_eq!((long.state, long.last_exit_code, long.pid), (ContainerState::Failed, None, None), "{long:?}");
    assert_retired(&env, &id, &adopted, "long");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(status(&second, &id).await.containers.iter().all(|c| c.state.is_ended() && c.pid.is_none()));
    let usage = second.usage(&id).await.unwrap().unwrap();
    assert_eq!(usage.memory_bytes, 0, "nothing runs: {usage:?}");
    assert!(usage.cpu_ns > 0, "the CPU time of the ended containers is kept: {usage:?}");

    // A stop (a pause) and a resume keep them ended, and so does a third runtime.
    second.stop(&id).await.unwrap();
    assert_eq!(status(&second, &id).await.containers, adopted.containers);
    drop(second);
    let third = env.runtime();
    assert_eq!(status(&third, &id).await.containers, adopted.containers, "a new runtime knows the stopped pod");
    assert!(read_logs(&third, &id, "bad").await.contains("went wrong"));
    third.adopt(spec).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(status(&third, &id).await.containers, adopted.containers, "resuming restarted an ended container");
    assert!(third.usage(&id).await.unwrap().unwrap().cpu_ns >= usage.cpu_ns);
    third.delete(&id).await.unwrap();
    assert!(!env.pod_dir(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_failure_restarts_failures_until_success() {
    let env = env(2);
    let image = env.image_with_page("job");
    let id = random_hex(64);
    // The rootfs outlives restarts: the count is kept there. Fails twice, then succeeds.
    let retry = "n=0; [ -f /count ] && read n < /count; n=$((n+1)); echo $n > /count; echo run $n; \
                 [ $n -ge 3 ] && exit 0; exit 3";
    let runtime = env.runtime();
    runtime
        .start(pod(
            &id,
            RestartPolicy::OnFailure,
            vec![
                sh(&image, "retry", retry),
                sh(&image, "once", "exit 0"),
                sh(&image, "killed", "exec /bin/busybox sleep 1000"),
            ],
        ))
        .await
        .unwrap();
    let done = wait_status(&runtime, &id, "retry succeeded", |s| s.containers[0].state.is_ended()).await;
    let retry = &done.containers[0];
    assert_eq!((retry.state, retry.last_exit_code, retry.restarts), (ContainerState::Succeeded, Some(0), 2));
    let once = &done.containers[1];
    assert_eq!((once.state, once.last_exit_code, once.restarts), (ContainerState::Succeeded, Some(0), 0));
    let logs = read_logs(&runtime, &id, "retry").await;
    assert!(logs.contains("run 1") && logs.contains("run 3"), "{logs}");
    assert_retired(&env, &id, &done, "retry");
    assert_retired(&env, &id, &done, "once");
    // A kill is a failure: restarted.
    kill(done.containers[2].pid.expect("killed runs"));
    let killed = wait_status(&runtime, &id, "killed restarted", |s| {
        s.containers[2].restarts >= 1 && s.containers[2].state == ContainerState::Running
    })
    .await
    .containers[2]
        .clone();
    assert_eq!(killed.last_exit_code, Some(128 + 9), "{killed:?}");
    assert!(!killed.state.is_ended(), "{killed:?}");
    runtime.delete(&id).await.unwrap();
    assert!(!env.pod_dir(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_restarts_a_success_too() {
    let env = env(3);
    let image = env.image_with_page("service");
    let id = random_hex(64);
    let runtime = env.runtime();
    runtime.start(pod(&id, RestartPolicy::Always, vec![sh(&image, "quick", "exit 0")])).await.unwrap();
    let again = wait_status(&runtime, &id, "restarts", |s| s.containers[0].restarts >= 2).await;
    let quick = &again.containers[0];
    assert_eq!(quick.last_exit_code, Some(0));
    assert!(!quick.state.is_ended(), "{quick:?}");
    runtime.delete(&id).await.unwrap();
    assert!(!env.pod_dir(&id).exists());
}
