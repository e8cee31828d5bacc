//! Replicas end to end, through the real binaries: under load a pod with `replicas.max` > 1
//! scales up to its max, the ingress spreads requests over every replica, each running replica
//! is billed, and once idle it scales back down to one. Needs root, like the provider.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// Each replica makes an id of its own at start, and answers `/cgi-bin/slow` with it after half
/// a second, so that a few clients keep requests in flight.
const SERVER: &str = r#"
    command: ["/bin/busybox", "sh", "-c"]
    args:
      - |
        B=/bin/busybox
        $B mkdir -p /tmp/www/cgi-bin
        $B head -c 6 /dev/urandom | $B od -An -tx1 | $B tr -d ' \n' > /tmp/www/id
        $B cp /www/index.html /tmp/www/
        echo "replica $($B cat /tmp/www/id)"
        printf '#!/bin/busybox sh\n/bin/busybox sleep 0.5\necho Content-Type: text/plain\necho\n/bin/busybox cat /tmp/www/id\n' > /tmp/www/cgi-bin/slow
        $B chmod +x /tmp/www/cgi-bin/slow
        exec $B httpd -f -p 8080 -h /tmp/www
"#;

/// CPU reserved per replica, in millicores: enough for busybox to fork a CGI per request.
const CPU_MILLIS: f64 = 400.0;

fn cpu_reserved(net: &Devnet) -> u128 {
    net.ok(&["bill"])["usage"]["cpu_reserved"].as_str().unwrap().parse().unwrap()
}

/// Replicas billed, from the CPU reservation metered between two samples about `window` apart:
/// millicore-ns per ns over the per-replica reservation.
fn replicas_billed(net: &Devnet, window: Duration) -> f64 {
    // Starts and ends right as a sample lands, so the wall time matches the metered time.
    let at_change = || {
        let before = cpu_reserved(net);
        loop {
            let now = cpu_reserved(net);
            if now != before {
                return (Instant::now(), now);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (t0, u0) = at_change();
    std::thread::sleep(window);
    let (t1, u1) = at_change();
    (u1 - u0) as f64 / t1.duration_since(t0).as_nanos() as f64 / CPU_MILLIS
}

fn replicas_running(net: &Devnet) -> u64 {
    net.ok(&["status"])["replicas"].as_u64().unwrap()
}

/// The hello pod named `name`, serving with [`SERVER`], with `replicas`; returns its manifest.
fn replicated(dir: &std::path::Path, name: &str, replicas: &str) -> std::path::PathBuf {
    let manifest = hello(dir, "replicated\n");
    let yaml = std::fs::read_to_string(&manifest).unwrap();
    let (head, _) = yaml.split_once("    command:").unwrap();
    let (_, ports) = yaml.split_once("    ports:").unwrap();
    let yaml = format!("{head}{}    ports:{ports}", SERVER.trim_start_matches('\n'))
        .replace("replicas:\n  min: 1\n  max: 1\n", &format!("replicas: {replicas}\n"))
        .replace("name: hello\n", &format!("name: {name}\n"))
        .replace("cpu: 100m", "cpu: 400m");
    let manifest = dir.join(format!("{name}.yaml"));
    std::fs::write(&manifest, yaml).unwrap();
    manifest
}

/// Polls `tpod status name` until `done` holds for it; shows the provider's last log lines if
/// it never does.
fn wait_for(net: &Devnet, name: &str, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = net.ok(&["status", name]);
        if done(&status) {
            return status;
        }
        if Instant::now() >= deadline {
            let log = std::fs::read_to_string(net.provider_data().join("../provider.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!("{name} never {what}: {status}\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn load_scales_replicas_up_to_max_each_serves_and_is_billed_then_idle_scales_down() {
    let work = tempfile::tempdir().unwrap();
    let overrides = work.path().join("overrides.toml");
    std::fs::write(&overrides, "[scaling]\nmin_idle_timeout_secs = 1\n").unwrap();
    let net = Devnet::up_with(31, Some(overrides));
    let manifest = replicated(work.path(), "hello", "{min: 1, max: 3, idleTimeout: 4s, targetConcurrency: 2}");
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap()]);
    let url = deployed["url"].as_str().unwrap().to_owned();
    wait_for_body(&url, "replicated\n");
    assert_eq!(replicas_running(&net), 1);
    let one = replicas_billed(&net, Duration::from_secs(3));
    assert!((0.8..1.2).contains(&one), "one replica billed as {one}");

    // Twelve clients keep about twelve requests in flight: six replicas' worth at a target of
    // two, so the pod scales to its max of three.
    let slow = format!("{}/cgi-bin/slow", url.trim_end_matches('/'));
    let stop = AtomicBool::new(false);
    let answers = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..12 {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let answer = get(&slow);
                    answers.lock().unwrap().push((Instant::now(), answer));
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while replicas_running(&net) < 3 {
            assert!(Instant::now() < deadline, "never scaled to 3 replicas: {}", net.ok(&["status"]));
            std::thread::sleep(Duration::from_millis(250));
        }
        let full = Instant::now();
        let status = net.ok(&["status"]);
        let running: BTreeSet<u64> = status["containers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["state"] == "running")
            .map(|c| c["replica"].as_u64().unwrap())
            .collect();
        assert_eq!(running, BTreeSet::from([0, 1, 2]), "{status}");
        // Every running replica is billed.
        let three = replicas_billed(&net, Duration::from_secs(4));
        assert!((2.7..3.3).contains(&three), "three replicas billed as {three}");
        stop.store(true, Ordering::Relaxed);

        let answers = answers.lock().unwrap();
        // Not one request failed while replicas came up.
        let failed: Vec<_> = answers.iter().filter(|(_, (status, _))| *status != 200).collect();
        assert!(failed.is_empty(), "{} of {} requests failed: {:?}", failed.len(), answers.len(), &failed[..1]);
        // Each replica served: three distinct ids once all three ran.
        let ids: BTreeSet<&str> =
            answers.iter().filter(|(at, _)| *at > full).map(|(_, (_, body))| body.trim()).collect();
        assert_eq!(ids.len(), 3, "replicas that answered: {ids:?}");
    });

    // Idle for its timeout: back to one replica, the others' runtime state gone.
    let deadline = Instant::now() + Duration::from_secs(30);
    while replicas_running(&net) > 1 {
        assert!(Instant::now() < deadline, "never scaled back down: {}", net.ok(&["status"]));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(net.runtime_pods().len(), 1, "{:?}", net.runtime_pods());
    let after = replicas_billed(&net, Duration::from_secs(3));
    assert!((0.8..1.2).contains(&after), "one replica again billed as {after}");
    assert_eq!(get(&url), (200, "replicated\n".to_owned()));

    net.ok(&["delete"]);
    assert!(net.runtime_pods().is_empty(), "runtime state left: {:?}", net.runtime_pods());
}

#[test]
fn min_replicas_run_from_the_deploy_and_after_a_provider_restart_and_a_replicated_pod_scales_to_zero() {
    let work = tempfile::tempdir().unwrap();
    let overrides = work.path().join("overrides.toml");
    std::fs::write(&overrides, "[scaling]\nmin_idle_timeout_secs = 1\n").unwrap();
    let net = Devnet::up_with(32, Some(overrides));

    // Two replicas at least, from the deploy on; each has logs of its own.
    let floor = replicated(work.path(), "floor", "{min: 2, max: 3}");
    let url = net.ok(&["deploy", floor.to_str().unwrap()])["url"].as_str().unwrap().to_owned();
    wait_for(&net, "floor", "ran 2 replicas", |s| s["replicas"] == 2);
    let log_of = |replica: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = net.tpod(&["logs", "floor", "--replica", replica]);
            let log = text(&out);
            if out.status.success() && log.contains("replica ") {
                return log.trim().to_owned();
            }
            assert!(Instant::now() < deadline, "no log from replica {replica}: {log}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let (first, second) = (log_of("0"), log_of("1"));
    assert_ne!(first, second, "two replicas, one id");
    let refused = net.fails(&["logs", "floor", "--replica", "2"]);
    assert!(refused.contains("replica 2: the pod runs 2 replica(s) now"), "{refused}");
    // Sequential requests reach both (idle replicas take turns).
    let ids: BTreeSet<String> = (0..6).map(|_| get(&format!("{}/cgi-bin/slow", url.trim_end_matches('/'))).1).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");

    // A provider killed and restarted brings the pod back to its minimum.
    net.kill_provider();
    net.restart_provider();
    let status = wait_for(&net, "floor", "ran 2 replicas again", |s| s["replicas"] == 2 && s["state"] == "running");
    // The devnet's ingress port is picked anew at each start.
    assert_eq!(get(status["url"].as_str().unwrap()), (200, "replicated\n".to_owned()));
    assert_eq!(net.runtime_pods().len(), 2, "{:?}", net.runtime_pods());

    // min 0 with replicas scales to zero like a single pod, and a request wakes it.
    let sleepy = replicated(work.path(), "sleepy", "{min: 0, max: 2, idleTimeout: 2s}");
    let sleepy_url = net.ok(&["deploy", sleepy.to_str().unwrap()])["url"].as_str().unwrap().to_owned();
    wait_for(&net, "sleepy", "scaled to zero", |s| s["state"] == "scaled-to-zero" && s["replicas"] == 0);
    assert_eq!(get(&sleepy_url), (200, "replicated\n".to_owned()));
    assert_eq!(net.ok(&["status", "sleepy"])["replicas"], 1);

    net.ok(&["delete", "floor"]);
    net.ok(&["delete", "sleepy"]);
    assert!(net.runtime_pods().is_empty(), "runtime state left: {:?}", net.runtime_pods());
}
