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

#[test]
fn load_scales_replicas_up_to_max_each_serves_and_is_billed_then_idle_scales_down() {
    let work = tempfile::tempdir().unwrap();
    let overrides = work.path().join("overrides.toml");
    std::fs::write(&overrides, "[scaling]\nmin_idle_timeout_secs = 1\n").unwrap();
    let net = Devnet::up_with(31, Some(overrides));
    let manifest = hello(work.path(), "replicated\n");
    let yaml = std::fs::read_to_string(&manifest).unwrap();
    let (head, _) = yaml.split_once("    command:").unwrap();
    let (_, ports) = yaml.split_once("    ports:").unwrap();
    let yaml = format!("{head}{}    ports:{ports}", SERVER.trim_start_matches('\n')).replace(
        "replicas:\n  min: 1\n  max: 1\n",
        "replicas:\n  min: 1\n  max: 3\n  idleTimeout: 4s\n  targetConcurrency: 2\n",
    );
    let yaml = yaml.replace("cpu: 100m", "cpu: 400m");
    std::fs::write(&manifest, yaml).unwrap();
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap()]);
    let url = deployed["url"].as_str().unwrap().to_owned();
    wait_for_body(&url, "replicated\n");
    assert_eq!(replicas_running(&net), 1);
    let one = replicas_billed(&net, Duration::from_secs(3));
    assert!((0.8..1.2).contains(&one), "one replica billed as {one}");

    // Twelve clients keep about twelve requests in flight: six replicas' worth at a target of
    // two, so the pod scales to its max of three.
    let slow = format!("{}cgi-bin/slow", url.trim_end_matches('/').to_owned() + "/");
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
