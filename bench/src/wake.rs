//! The `wake` section: cold start to first byte of a pod scaled to zero, next to warm requests in
//! the same run. On a devnet of its own whose provider lets pods idle for a second, the hello pod
//! (`replicas: {min: 0, idleTimeout: 1s}`) is deployed; warm latency is a fresh connection's GET
//! answered while it runs, cold latency the same GET once `tpod status` says it is at zero, which
//! the ingress holds while the provider resumes the pod. Also what a pod at zero keeps: its pod
//! cgroup's memory (the unpacked image in its tmpfs), which makes the wake a process start.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::zero::{self, ZeroDevnet, quantile_ms};

const BRIDGE: &str = "tpbw0";
const SUBNET: &str = "10.242.0.0/16";
/// The goal for the cold start's median.
pub const GOAL_P50_MS: f64 = 150.0;

/// Runs the section with `wakes` cold starts.
pub fn run(bin: &Path, anvil: &Path, manifest: &Path, wakes: usize) -> anyhow::Result<()> {
    let devnet = ZeroDevnet::new(bin, anvil, manifest, BRIDGE, SUBNET)?;
    let tpod = |args: &[&str]| devnet.tpod(args);
    let result = devnet.up(zero::SCALING).and_then(|_| {
        let deployed = tpod(&["deploy", devnet.manifest()?])?;
        let url = deployed["url"].as_str().context("no url")?.to_owned();
        let pod = deployed["pod_id"].as_str().context("no pod id")?.to_owned();
        super::wait_for_200(&url)?;
        let (mut warm, mut cold) = (Vec::with_capacity(wakes), Vec::with_capacity(wakes));
        let mut kept = None;
        for _ in 0..wakes {
            warm.push(zero::first_byte(&url)?);
            zero::wait_at_zero(tpod, None, Instant::now() + zero::AT_ZERO_TIMEOUT, zero::AT_ZERO_POLL)?;
            kept = kept.or_else(|| zero::pod_memory(&pod));
            cold.push(zero::first_byte(&url)?);
        }
        report(&mut warm, &mut cold, kept);
        Ok(())
    });
    let down = devnet.down();
    result.and(down)
}

fn report(warm: &mut [Duration], cold: &mut [Duration], kept: Option<u64>) {
    warm.sort();
    cold.sort();
    println!("cold start to first byte ({} wakes of the hello pod at zero), next to warm requests:", cold.len());
    println!("  warm  p50 {:.1} ms   p99 {:.1} ms", quantile_ms(warm, 0.5), quantile_ms(warm, 0.99));
    println!(
        "  cold  p50 {:.1} ms   p99 {:.1} ms   (goal p50 <= {GOAL_P50_MS} ms)   cold/warm p50 {:.0}x",
        quantile_ms(cold, 0.5),
        quantile_ms(cold, 0.99),
        quantile_ms(cold, 0.5) / quantile_ms(warm, 0.5).max(0.001)
    );
    if let Some(bytes) = kept {
        println!(
            "  a pod at zero keeps {:.1} MiB in memory (its unpacked image, in its tmpfs)",
            bytes as f64 / 1048576.0
        );
    }
}
