//! The `replicas` section: throughput of a CPU-bound handler with one replica and with two, on
//! a devnet of its own. The pod is busybox httpd whose CGI burns CPU in a shell loop before it
//! answers; each replica may use one CPU. wrk loads it through the provider's ingress, which
//! spreads requests over the replicas by fewest in flight. `replicas: {min: n, max: n}` keeps the
//! count fixed, so the figure measures balancing, not the autoscaler's reaction time. On this
//! 2-core machine wrk, the ingress and the replicas share the cores: two replicas cannot double
//! the throughput, and the ratio shows how much of the second core they get.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const BRIDGE: &str = "tpbr0";
const SUBNET: &str = "10.244.0.0/16";
/// wrk connections: enough to keep both replicas busy.
const CONNECTIONS: u32 = 8;

/// A replica's program: a CGI that counts to 20,000 in the shell (tens of ms of CPU) per request.
const SERVER: &str = r#"
    command: ["/bin/busybox", "sh", "-c"]
    args:
      - |
        B=/bin/busybox
        $B mkdir -p /tmp/www/cgi-bin
        $B cp /www/index.html /tmp/www/
        printf '#!/bin/busybox sh\ni=0\nwhile [ $i -lt 20000 ]; do i=$((i+1)); done\necho Content-Type: text/plain\necho\necho $i\n' > /tmp/www/cgi-bin/burn
        $B chmod +x /tmp/www/cgi-bin/burn
        exec $B httpd -f -p 8080 -h /tmp/www
"#;

/// Runs the section, each wrk measurement lasting `secs` seconds.
pub fn run(bin: &Path, anvil: &Path, manifest: &Path, secs: u64) -> anyhow::Result<()> {
    let wrk = super::ingress::which("wrk").context("wrk not found: run tools/bootstrap (Debian package wrk)")?;
    let devnet = super::zero::ZeroDevnet::new(bin, anvil, manifest, BRIDGE, SUBNET)?;
    let tpod = |args: &[&str]| devnet.tpod(args);
    let hello = std::fs::read_to_string(manifest)?;
    let (head, _) = hello.split_once("    command:").context("hello manifest without command")?;
    let (_, ports) = hello.split_once("    ports:").context("hello manifest without ports")?;
    let base = format!("{head}{}    ports:{ports}", SERVER.trim_start_matches('\n'))
        .replace("cpu: 10m", "cpu: 1000m")
        .replace("memory: 16Mi", "memory: 64Mi");
    let result = devnet.up("").and_then(|_| {
        let mut rates = Vec::new();
        for replicas in [1u32, 2] {
            let name = format!("burn{replicas}");
            let yaml = base.replace("name: hello\n", &format!("name: {name}\n")).replace(
                "replicas:\n  min: 1\n  max: 1\n",
                &format!("replicas:\n  min: {replicas}\n  max: {replicas}\n"),
            );
            let path = devnet.dir.path().join(format!("{name}.yaml"));
            std::fs::write(&path, yaml)?;
            let deployed = tpod(&["deploy", path.to_str().context("manifest path")?])?;
            let url = deployed["url"].as_str().context("no url")?.to_owned();
            let deadline = Instant::now() + Duration::from_secs(30);
            while tpod(&["status", &name])?["replicas"] != replicas {
                if Instant::now() > deadline {
                    bail!("{name} did not run {replicas} replicas within 30 s");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            super::wait_for_200(&url)?;
            let authority = url.trim_start_matches("http://").split('/').next().unwrap_or_default();
            let (host, port) = authority.rsplit_once(':').context("url without port")?;
            let target = format!("http://127.0.0.1:{port}/cgi-bin/burn");
            // A short warm-up, then the measurement.
            super::ingress::wrk_host(&wrk, &target, host, CONNECTIONS, 1)?;
            let load = super::ingress::wrk_host(&wrk, &target, host, CONNECTIONS, secs)?;
            if load.errors > 0 {
                bail!("{name}: {} failed requests: {}", load.errors, load.error_text);
            }
            rates.push((replicas, load.rps, load.p99_ms));
            tpod(&["delete", &name])?;
        }
        println!(
            "replicas: a CPU-bound CGI (a 20,000-step shell loop, 1 CPU per replica) through the ingress, wrk \
             {CONNECTIONS} connections, {secs} s, on {} cores shared with wrk and the ingress:",
            std::thread::available_parallelism().map_or(0, usize::from)
        );
        for (replicas, rps, p99) in &rates {
            let p99 = p99.map_or_else(|| "?".to_owned(), |ms| format!("{ms:.0} ms"));
            println!("  {replicas} replica(s): {rps:>8.1} req/s, p99 {p99}");
        }
        if let [(_, one, _), (_, two, _)] = rates[..] {
            println!("  2 replicas vs 1: x{:.2}", two / one);
        }
        Ok(())
    });
    let down = devnet.down();
    result.and(down)
}
