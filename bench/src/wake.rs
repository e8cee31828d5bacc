//! The `wake` section: cold start to first byte of a pod scaled to zero, next to warm requests in
//! the same run. On a devnet of its own whose provider lets pods idle for a second, the hello pod
//! (`replicas: {min: 0, idleTimeout: 1s}`) is deployed; warm latency is a fresh connection's GET
//! answered while it runs, cold latency the same GET once `tpod status` says it is at zero, which
//! the ingress holds while the provider resumes the pod. Also what a pod at zero keeps: its pod
//! cgroup's memory (the unpacked image in its tmpfs), which makes the wake a process start.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const BRIDGE: &str = "tpbw0";
/// The goal for the cold start's median.
const GOAL_P50_MS: f64 = 150.0;

/// Runs the section with `wakes` cold starts.
pub fn run(bin: &Path, anvil: &Path, manifest: &Path, wakes: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let tpod = |args: &[&str]| super::tpod_json(bin, dir.path(), args).map(|(_, json)| json);
    let config = dir.path().join("scaling.toml");
    std::fs::write(&config, "[scaling]\nmin_idle_timeout_secs = 1\n")?;
    let scaled = dir.path().join("tpod.yaml");
    // The hello pod as the example has it (100m): the other sections' 10m quota (1 ms of CPU
    // per 100 ms period) would throttle the program's start and its answers by up to 100 ms.
    let yaml = std::fs::read_to_string(manifest)?
        .replace("cpu: 10m", "cpu: 100m")
        .replace("memory: 16Mi", "memory: 64Mi")
        .replace("replicas:\n  min: 1\n  max: 1\n", "replicas:\n  min: 0\n  max: 1\n  idleTimeout: 1s\n");
    std::fs::write(&scaled, yaml)?;
    let image = manifest.parent().context("manifest directory")?.join("image");
    std::os::unix::fs::symlink(&image, dir.path().join("image"))?;
    let anvil = anvil.to_str().context("anvil path")?;
    let config = config.to_str().context("config path")?;
    let up = [
        "dev",
        "up",
        "--port",
        "0",
        "--anvil",
        anvil,
        "--ingress-port",
        "0",
        "--bridge",
        BRIDGE,
        "--subnet",
        "10.242.0.0/16",
        "--provider-config",
        config,
    ];
    let result = tpod(&up).and_then(|_| {
        let deployed = tpod(&["deploy", scaled.to_str().context("manifest path")?])?;
        let url = deployed["url"].as_str().context("no url")?.to_owned();
        let pod = deployed["pod_id"].as_str().context("no pod id")?.trim_start_matches("0x").to_owned();
        super::wait_for_200(&url)?;
        let (mut warm, mut cold) = (Vec::with_capacity(wakes), Vec::with_capacity(wakes));
        let mut kept = None;
        for _ in 0..wakes {
            warm.push(first_byte(&url)?);
            let deadline = Instant::now() + Duration::from_secs(30);
            while tpod(&["status"])?["state"] != "scaled-to-zero" {
                if Instant::now() > deadline {
                    bail!("the pod did not scale to zero within 30 s");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            kept = kept.or_else(|| pod_memory(&pod));
            cold.push(first_byte(&url)?);
        }
        report(&mut warm, &mut cold, kept);
        Ok(())
    });
    let down = tpod(&["dev", "down"]);
    result.and(down.map(drop))
}

/// GET / on a fresh connection: the time to the status line.
fn first_byte(url: &str) -> anyhow::Result<Duration> {
    let authority = url.trim_start_matches("http://").split('/').next().unwrap_or_default();
    let (host, port) = authority.rsplit_once(':').context("url without port")?;
    let started = Instant::now();
    let status = super::get_status(host, port.parse()?)?;
    let elapsed = started.elapsed();
    if status != 200 {
        bail!("{url} answered {status}");
    }
    Ok(elapsed)
}

/// The memory charged to the pod's cgroup now (cgroup v1 or v2), if readable.
fn pod_memory(pod: &str) -> Option<u64> {
    let prefix = pod.get(..12)?;
    ["/sys/fs/cgroup/memory/tpod/{}/memory.usage_in_bytes", "/sys/fs/cgroup/unified/tpod/{}/memory.current"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p.replace("{}", prefix)).ok())
        .and_then(|v| v.trim().parse().ok())
}

fn report(warm: &mut [Duration], cold: &mut [Duration], kept: Option<u64>) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let pct = |v: &[Duration], p: f64| {
        let i = ((v.len() as f64 * p).ceil() as usize).saturating_sub(1).min(v.len() - 1);
        ms(v[i])
    };
    warm.sort();
    cold.sort();
    println!("cold start to first byte ({} wakes of the hello pod at zero), next to warm requests:", cold.len());
    println!("  warm  p50 {:.1} ms   p99 {:.1} ms", pct(warm, 0.5), pct(warm, 0.99));
    println!(
        "  cold  p50 {:.1} ms   p99 {:.1} ms   (goal p50 <= {GOAL_P50_MS} ms)   cold/warm p50 {:.0}x",
        pct(cold, 0.5),
        pct(cold, 0.99),
        pct(cold, 0.5) / pct(warm, 0.5).max(0.001)
    );
    if let Some(bytes) = kept {
        println!(
            "  a pod at zero keeps {:.1} MiB in memory (its unpacked image, in its tmpfs)",
            bytes as f64 / 1048576.0
        );
    }
}
