//! Restart policies and jobs end to end, through the real binaries: a job that ends is
//! followed by `tpod deploy` to its end, shown with its exit codes by `tpod status`, and no
//! longer billed (its final claim made, its channel released); a failed job, or a pod that
//! keeps crashing, makes `deploy` fail and say why.
//!
//! Each test runs its own devnet and provider (root, like the other end-to-end suites).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// A pod of one busybox container `job` running `script` under `policy`, with the hello image
/// (built in `dir`).
fn job(dir: &Path, name: &str, policy: &str, script: &str) -> PathBuf {
    hello(dir, "unused\n");
    let manifest = dir.join(format!("{name}.yaml"));
    let yaml = format!(
        "name: {name}\nrestartPolicy: {policy}\ncontainers:\n  - name: job\n    image: ./image\n    \
         command: [\"/bin/busybox\", \"sh\", \"-c\", {script:?}]\n    resources: {{cpu: 100m, memory: 32Mi}}\n"
    );
    std::fs::write(&manifest, yaml).unwrap();
    manifest
}

/// `tpod bill --json` of `name` once the provider has made its final claim and released the
/// channel (the billing loop notices a finished pod within a sample interval).
fn settled_bill(net: &Devnet, name: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bill = net.ok(&["bill", name]);
        if !bill["unlock_at"].is_null() && bill["claimed"] == bill["metered"] {
            return bill;
        }
        assert!(Instant::now() < deadline, "the finished pod was not settled: {bill}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_job_that_succeeds_is_followed_to_its_end_and_billing_stops() {
    let net = Devnet::up(24);
    let work = tempfile::tempdir().unwrap();
    let manifest = job(work.path(), "once", "Never", "echo job done; /bin/busybox sleep 1; exit 0");

    let deployed = net.ok(&["deploy", manifest.to_str().unwrap()]);
    assert_eq!(deployed["finished"], true, "{deployed}");
    assert_eq!(deployed["state"], "succeeded", "{deployed}");
    assert_eq!(deployed["exit_codes"]["job"], 0, "{deployed}");
    assert_eq!(deployed["restart_policy"], "Never", "{deployed}");

    let status = net.ok(&["status", "once"]);
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["containers"][0]["state"], "succeeded", "{status}");
    assert_eq!(status["containers"][0]["exit_code"], 0, "{status}");
    assert_eq!(status["containers"][0]["restarts"], 0, "{status}");

    // Billing stopped: the final claim covers all that was metered, the channel is released, and
    // nothing accrues afterwards (not even storage).
    let bill = settled_bill(&net, "once");
    std::thread::sleep(Duration::from_secs(4));
    let later = net.ok(&["bill", "once"]);
    assert_eq!(later["usage"], bill["usage"], "usage still grows: {bill} then {later}");
    assert_eq!(later["metered"], bill["metered"], "{bill} then {later}");
    assert_eq!(later["rate_per_second"], "0", "{later}");
    assert_ne!(bill["claimed"], "0", "{bill}");

    // The output stays readable, in clear, until the pod is deleted.
    let logs = net.tpod(&["logs", "once"]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("job done"), "{}", text(&logs));
    // Human output says it finished.
    let human = net.tpod(&["status", "once"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("once: succeeded"), "{}", text(&human));

    let deleted = net.ok(&["delete", "once"]);
    assert!(deleted["refunded"].is_string(), "the released channel was not closed: {deleted}");
    assert!(net.runtime_pods().is_empty(), "runtime state left: {:?}", net.runtime_pods());
}

#[test]
fn a_failed_job_or_a_crash_loop_fails_the_deploy() {
    let net = Devnet::up(25);
    let work = tempfile::tempdir().unwrap();

    // Never: ends failed with its exit code; deploy exits non-zero and says so.
    let manifest = job(work.path(), "fails", "Never", "echo about to fail; exit 3");
    let out = net.tpod(&["deploy", manifest.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("finished: failed") && said.contains("exit code 3"), "{said}");
    let status = net.ok(&["status", "fails"]);
    assert_eq!(status["state"], "failed: container job exited with code 3", "{status}");
    assert_eq!(
        (&status["containers"][0]["state"], &status["containers"][0]["exit_code"]),
        (&"failed".into(), &3.into())
    );
    settled_bill(&net, "fails");
    net.ok(&["delete", "fails"]);

    // OnFailure: restarted while it fails; deploy gives up following it after a few restarts.
    let manifest = job(work.path(), "retries", "OnFailure", "exit 3");
    let out = net.tpod(&["--json", "deploy", manifest.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    let deployed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(deployed["crash_looping"], true, "{deployed}");
    assert_eq!(deployed["finished"], false, "{deployed}");
    assert_eq!(deployed["exit_codes"]["job"], 3, "{deployed}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("crash-looping"), "{}", text(&out));
    let status = net.ok(&["status", "retries"]);
    assert!(status["containers"][0]["restarts"].as_u64().unwrap() > 0, "{status}");
    assert_ne!(status["containers"][0]["state"], "failed", "OnFailure ended a failure: {status}");
    net.ok(&["delete", "retries"]);

    // Always: a service that exits 1 again and again is crash-looping at the end of the deploy;
    // it stays deployed (and billed), and deploy says so.
    let manifest = job(work.path(), "service", "Always", "echo crashing; exit 1");
    let out = net.tpod(&["deploy", manifest.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("service is crash-looping") && said.contains("exited with code 1"), "{said}");
    assert!(said.contains("tpod logs service") && said.contains("stays deployed and billed"), "{said}");
    let status = net.ok(&["status", "service"]);
    assert!(["crash-looping", "running"].contains(&status["state"].as_str().unwrap()), "{status}");
    net.ok(&["delete", "service"]);
    assert!(net.runtime_pods().is_empty(), "runtime state left: {:?}", net.runtime_pods());
}
