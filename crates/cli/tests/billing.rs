//! End to end billing, as a publisher sees it: real anvil, contracts, provider and containers,
//! driven through `tpod`. Each test merges its own prices and intervals into the dev provider's
//! configuration and runs on its own bridge and subnet.
//!
//! Expected amounts are recomputed here from the reported usage with the documented units
//! (cpu reserved in millicore-ns at a price per millicore-second, cpu used in ns at a price per
//! millicore-second of CPU time), independently of the billing crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

/// A busybox pod with one 1-core container running `script`.
fn burner(dir: &Path, script: &str) -> PathBuf {
    hello(dir, "unused\n");
    let manifest = dir.join("burner.yaml");
    let yaml = format!(
        r#"name: burner
containers:
  - name: burn
    image: ./image
    command: ["/bin/busybox", "sh", "-c"]
    args: [{script:?}]
    resources:
      cpu: 1000m
      memory: 64Mi
replicas:
  min: 1
  max: 1
"#
    );
    std::fs::write(&manifest, yaml).unwrap();
    manifest
}

/// Burns one core for `secs` seconds, then sleeps.
fn burn_for(secs: u64) -> String {
    format!(
        "end=$(( $(/bin/busybox date +%s) + {secs} )); while [ $(/bin/busybox date +%s) -lt $end ]; do :; done; exec /bin/busybox sleep 100000"
    )
}

fn overrides(dir: &Path, name: &str, toml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, toml).unwrap();
    path
}

fn num(v: &serde_json::Value) -> u128 {
    match v {
        serde_json::Value::String(s) => s.parse().unwrap_or_else(|_| panic!("not a number: {v}")),
        other => panic!("not a decimal string: {other}"),
    }
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Polls `tpod bill --json` until `done` holds.
fn bill_until(net: &Devnet, what: &str, secs: u64, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let bill = net.ok(&["bill"]);
        if done(&bill) {
            return bill;
        }
        assert!(Instant::now() < deadline, "waited {secs} s for {what}; last bill: {bill}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The cost of cpu usage at a reservation price and a usage price per millicore-second.
fn cpu_cost(usage: &serde_json::Value, reservation: u128, used: u128) -> u128 {
    (num(&usage["cpu_reserved"]) * reservation + num(&usage["cpu_used"]) * used * 1000) / 1_000_000_000
}

/// The container's own CPU counter (ns), read from its cgroup.
fn cgroup_cpu_ns(pod_id: &str, container: &str) -> u128 {
    let path = tpod_runtime::cgroups_path(pod_id.trim_start_matches("0x"), container);
    for root in ["cpuacct", "cpu,cpuacct"] {
        if let Ok(text) = std::fs::read_to_string(format!("/sys/fs/cgroup/{root}{path}/cpuacct.usage")) {
            return text.trim().parse().unwrap();
        }
    }
    panic!("no cpuacct cgroup for {path}")
}

const RESERVE: u128 = 50_000_000_000;
const USE: u128 = 50_000_000_000;

/// Provider settings under which a 1-core pod funded with the minimum runs out in seconds:
/// cpu at [`RESERVE`] reserved and `used` per millicore-second, claims every 4 s, 2 s of grace.
fn short_funds(dir: &Path, terms: &str, billing: &str, used: u128) -> PathBuf {
    let toml = format!(
        r#"[terms]
min_funding = "1000000000000000"
{terms}

[billing]
claim_interval_secs = 4
grace_secs = 2
{billing}

[[pricing]]
resource = "cpu"
reservation = "{RESERVE}"
usage = "{used}"
"#
    );
    overrides(dir, "provider.toml", &toml)
}

/// A pod whose funds last some 20 s is paused; what was claimed is exactly the metered usage at
/// the agreed prices. A top-up resumes it and billing goes on from the same totals. An unlock
/// gets the provider's final claim inside the delay, and the withdrawal returns the rest, to
/// the base unit: the channel holds nothing afterwards.
#[test]
fn funds_run_out_pause_top_up_resume_unlock_withdraw() {
    let work = tempfile::tempdir().unwrap();
    let config = short_funds(work.path(), "min_unlock_delay_secs = 8", "", USE);
    let net = Devnet::up_with(6, Some(config));
    let manifest = burner(work.path(), "while :; do :; done");
    let amount: u128 = 1_500_000_000_000_000;
    net.ok(&["deploy", manifest.to_str().unwrap(), "--amount", &format!("{amount}base")]);

    // Paused for lack of funds, with the amount that resumes it.
    let paused = bill_until(&net, "the pause and its final claim", 120, |b| {
        b["state"].as_str().unwrap().starts_with("paused") && b["claimed"] == b["metered"]
    });
    let state = paused["state"].as_str().unwrap();
    assert!(state.contains("out of funds, top up"), "{paused}");
    let expected = cpu_cost(&paused["usage"], RESERVE, USE);
    let claimed = num(&paused["claimed"]);
    assert!(expected.abs_diff(claimed) <= 1, "claimed {claimed}, usage at the prices makes {expected}: {paused}");
    assert!(claimed < amount, "the pod was paused before it overdrew its funds: {paused}");
    assert_eq!(paused["last_claim"]["check"].as_str().unwrap().split(':').next(), Some("verified"), "{paused}");
    // Paused: nothing more is metered (cpu and memory are not reserved, storage is free).
    std::thread::sleep(Duration::from_secs(2));
    let still = net.ok(&["bill"]);
    assert_eq!(still["metered"], paused["metered"], "{still}");

    // Top up what the status asks for: the pod runs again and billing continues.
    let top_up = num(&paused["top_up"]);
    assert!(top_up > 0, "{paused}");
    net.ok(&["topup", &format!("{top_up}base")]);
    let resumed = bill_until(&net, "the resume", 30, |b| b["state"] == "running");
    let resumed = bill_until(&net, "billing after the resume", 30, |b| {
        num(&b["metered"]) > num(&resumed["metered"])
            && num(&b["usage"]["cpu_used"]) > num(&paused["usage"]["cpu_used"])
    });
    for counter in ["cpu_reserved", "cpu_used"] {
        assert!(num(&resumed["usage"][counter]) >= num(&paused["usage"][counter]), "{counter}: {resumed}");
    }
    assert_eq!(num(&resumed["deposited"]), amount + top_up);

    // Unlock: the provider stops the pod and claims everything before the delay ends.
    let unlock = net.ok(&["unlock"]);
    let unlock_at = unlock["unlock_at"].as_u64().unwrap();
    let settled = bill_until(&net, "the final claim after the unlock", 30, |b| {
        b["state"].as_str().unwrap().starts_with("paused") && b["claimed"] == b["metered"]
    });
    assert!(now_unix() < unlock_at, "final claim only seen after the unlock delay: {settled}");
    assert!(settled["state"].as_str().unwrap().contains("unlock"), "{settled}");
    let claimed = num(&settled["claimed"]);
    let expected = cpu_cost(&settled["usage"], RESERVE, USE);
    assert!(expected.abs_diff(claimed) <= 1, "claimed {claimed}, usage at the prices makes {expected}");

    // Before the delay the withdrawal is refused with the time left; after it, it returns the rest.
    let err = net.fails(&["withdraw"]);
    assert!(err.contains("unlock delay") && err.contains("ends in"), "{err}");
    while now_unix() <= unlock_at {
        std::thread::sleep(Duration::from_millis(250));
    }
    let withdrawn = net.ok(&["withdraw"]);
    assert_eq!(num(&withdrawn["withdrawn"]), amount + top_up - claimed, "{withdrawn}");
    // Nothing is left in it: the channel is closed (no claim can follow) and no longer recorded.
    assert_eq!(withdrawn["closed"], true, "{withdrawn}");
    let list = net.ok(&["list"]);
    assert!(list["deployments"].as_array().unwrap().is_empty(), "{list}");
}

/// The provider is killed in the middle of billing a pod that burns a core, and restarted: the
/// metered CPU matches the cgroup's own counter (nothing used while it was down is lost), and the
/// final claim is exactly the metered amount (nothing claimed twice or skipped).
#[test]
fn kill_9_mid_billing_loses_nothing_and_claims_nothing_twice() {
    let work = tempfile::tempdir().unwrap();
    let config = overrides(
        work.path(),
        "provider.toml",
        r#"[billing]
claim_interval_secs = 2

[[pricing]]
resource = "cpu"
reservation = "1000"
usage = "3000"
"#,
    );
    let net = Devnet::up_with(7, Some(config));
    const BURN: u64 = 10;
    let manifest = burner(work.path(), &burn_for(BURN));
    let started = Instant::now();
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap()]);
    let pod_id = deployed["pod_id"].as_str().unwrap().to_owned();
    let deposited = num(&deployed["amount"]);
    bill_until(&net, "a first periodic claim", 30, |b| num(&b["claimed"]) > 0);

    net.kill_provider();
    std::thread::sleep(Duration::from_secs(3));
    net.restart_provider();

    // Once the burn is over the counter stands still; metering catches up with it. On a busy
    // machine the deploy, and so the burn, may start late: wait for the counter to stop.
    while started.elapsed() < Duration::from_secs(BURN + 2) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut counter = cgroup_cpu_ns(&pod_id, "burn");
    for _ in 0..60 {
        std::thread::sleep(Duration::from_millis(500));
        let now = cgroup_cpu_ns(&pod_id, "burn");
        if now == counter {
            break;
        }
        counter = now;
    }
    let bill = bill_until(&net, "metering to catch up with the cgroup", 20, |b| {
        num(&b["usage"]["cpu_used"]) * 100 >= counter * 98
    });
    let metered_cpu = num(&bill["usage"]["cpu_used"]);
    assert!(metered_cpu.abs_diff(counter) * 100 <= counter * 2, "metered {metered_cpu} ns, cgroup {counter} ns");
    assert!(counter >= 3_000_000_000, "the pod hardly burned: {counter} ns");
    eprintln!(
        "burned for {BURN} s: cgroup {:.3} CPU-s, metered {:.3} CPU-s",
        counter as f64 / 1e9,
        metered_cpu as f64 / 1e9
    );

    let deleted = net.ok(&["delete"]);
    let claimed = num(&deleted["claimed"]);
    assert_eq!(claimed, num(&deleted["metered"]), "{deleted}");
    assert_eq!(claimed, cpu_cost(&deleted["usage"], 1000, 3000), "{deleted}");
    assert_eq!(num(&deleted["refunded"]) + claimed, deposited, "{deleted}");
}

/// Forwards TCP connections to `upstream` while up; when down, cuts every open connection and
/// refuses new ones. Stands in for a chain RPC outage.
struct Outage {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Outage {
    fn proxy(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (up2, open2) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                open2.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Self { port, up, open }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            for s in self.open.lock().unwrap().drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

/// The provider's chain RPC is down for 60 s: no pod is paused or stopped, and claims resume
/// when it is back.
#[test]
fn a_chain_outage_pauses_nothing_and_claims_resume() {
    let work = tempfile::tempdir().unwrap();
    let mut net = Devnet::up(8);
    let devnet: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.dir.path().join("devnet.json")).unwrap()).unwrap();
    let rpc = devnet["rpc_url"].as_str().unwrap().trim_start_matches("http://").trim_end_matches('/').to_owned();
    let outage = Outage::proxy(rpc);
    // Prices high enough that the grace period would matter, were the provider to guess.
    let config = overrides(
        work.path(),
        "provider.toml",
        &format!(
            r#"[chain]
rpc_url = "http://127.0.0.1:{}"

[billing]
claim_interval_secs = 2
grace_secs = 1
"#,
            outage.port
        ),
    );
    net.kill_provider();
    net.set_overrides(config);
    net.restart_provider();

    let manifest = hello(work.path(), "up\n");
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap()]);
    wait_for_body(deployed["url"].as_str().unwrap(), "up\n");
    let before = bill_until(&net, "a first claim", 30, |b| num(&b["claimed"]) > 0);

    outage.set_up(false);
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(60) {
        let status = net.ok(&["status"]);
        assert_eq!(status["state"], "running", "paused during the outage: {status}");
        std::thread::sleep(Duration::from_secs(5));
    }
    let during = net.ok(&["bill"]);
    assert_eq!(during["claimed"], before["claimed"], "claimed while the RPC was down? {during}");
    outage.set_up(true);

    let after = bill_until(&net, "claims to resume", 60, |b| num(&b["claimed"]) > num(&during["metered"]));
    assert_eq!(after["state"], "running", "{after}");
}

/// The provider proposes new prices; they apply only once the publisher agrees, and usage before
/// the switch stays billed at the old prices.
#[test]
fn a_pricing_change_applies_only_after_the_publisher_agrees() {
    const OLD: u128 = 1_000_000_000;
    const NEW: u128 = 7_000_000_000;
    let work = tempfile::tempdir().unwrap();
    let prices = |cpu: u128| format!("[[pricing]]\nresource = \"cpu\"\nreservation = \"{cpu}\"\nusage = \"0\"\n");
    let mut net = Devnet::up_with(9, Some(overrides(work.path(), "old.toml", &prices(OLD))));
    let manifest = hello(work.path(), "priced\n");
    net.ok(&["deploy", manifest.to_str().unwrap()]);
    std::thread::sleep(Duration::from_secs(2));

    net.kill_provider();
    net.set_overrides(overrides(work.path(), "new.toml", &prices(NEW)));
    net.restart_provider();
    std::thread::sleep(Duration::from_secs(2));

    // Proposed, not applied: everything so far is at the old price.
    let bill = net.ok(&["bill"]);
    let proposed = &bill["proposed_pricing"];
    assert!(proposed.to_string().contains(&NEW.to_string()), "{bill}");
    assert_eq!(num(&bill["metered"]), num(&bill["usage"]["cpu_reserved"]) * OLD / 1_000_000_000, "{bill}");

    let switch = net.ok(&["accept-pricing"]);
    let at_switch = num(&switch["usage"]["cpu_reserved"]);
    assert_eq!(num(&switch["metered"]), at_switch * OLD / 1_000_000_000, "{switch}");
    assert_eq!(net.ok(&["bill"])["proposed_pricing"], serde_json::Value::Null);
    let again = net.fails(&["accept-pricing"]);
    assert!(again.contains("proposes no new prices"), "{again}");
    std::thread::sleep(Duration::from_secs(3));

    let deleted = net.ok(&["delete"]);
    let total = num(&deleted["usage"]["cpu_reserved"]);
    let expected = (at_switch * OLD + (total - at_switch) * NEW) / 1_000_000_000;
    assert_eq!(num(&deleted["metered"]), expected, "{deleted}");
    assert_eq!(num(&deleted["claimed"]), expected, "{deleted}");
    assert_ne!(expected, total * NEW / 1_000_000_000, "the test cannot tell the prices apart");
}

/// A pod paused for lack of funds keeps its volumes only for the retention period; then the
/// provider removes it, makes its final claim and releases the channel, so the publisher
/// withdraws the rest at once.
#[test]
fn a_paused_pod_is_removed_after_its_retention() {
    let work = tempfile::tempdir().unwrap();
    let config = short_funds(work.path(), "", "retention_secs = 4", 0);
    let net = Devnet::up_with(10, Some(config));
    let manifest = burner(work.path(), "exec /bin/busybox sleep 100000");
    let amount: u128 = 1_000_000_000_000_000;
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap(), "--amount", &format!("{amount}base")]);
    let paused = bill_until(&net, "the pause", 90, |b| b["state"].as_str().unwrap().starts_with("paused"));
    assert!(!net.runtime_pods().is_empty(), "a paused pod keeps its runtime state: {paused}");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = net.tpod(&["status"]);
        if !out.status.success() && text(&out).contains("no pod") {
            break;
        }
        assert!(Instant::now() < deadline, "the paused pod was never removed: {}", text(&out));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(net.runtime_pods().is_empty(), "runtime state left: {:?}", net.runtime_pods());
    // Released by the provider: no unlock delay to wait for.
    let withdrawn = net.ok(&["withdraw"]);
    let claimed = amount - num(&withdrawn["withdrawn"]);
    assert_eq!(claimed, cpu_cost(&paused["usage"], RESERVE, 0), "{withdrawn} after {paused} (pod {deployed})");
}
