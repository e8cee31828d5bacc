//! `tpod-bench`: benchmarks that drive the real `tpod` and `tpod-provider` binaries on a private
//! devnet, the way a user does, and print their figures.
//!
//! - `deploy`: deploy → first HTTP 200 through the ingress, with the image already on the
//!   provider and channel creation included (approve + create + provision), p50/p95 over N
//!   deploys. Then the provider daemon's resident memory with M small pods running, next to its
//!   memory with none (a ratio from one run, since these machines are noisy).
//!
//! Run with `bench/run` (builds in release mode first).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

/// Trusted Pods benchmarks.
#[derive(Parser)]
struct Args {
    /// Deploys timed for the latency figures.
    #[arg(long, default_value_t = 20)]
    deploys: usize,
    /// Pods running when the provider's memory is measured.
    #[arg(long, default_value_t = 100)]
    pods: usize,
}

struct Devnet {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Devnet {
    fn tpod(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let out = Command::new(self.bin.join("tpod"))
            .arg("--devnet-dir")
            .arg(self.dir.path())
            .arg("--json")
            .args(args)
            .env("TPOD_CACHE_DIR", self.dir.path().join("cache"))
            .output()
            .context("running tpod")?;
        if !out.status.success() {
            bail!("tpod {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        serde_json::from_slice(&out.stdout).with_context(|| format!("tpod {args:?} printed no JSON"))
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.tpod(&["dev", "down"]);
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = std::env::current_exe()?.parent().context("no binary directory")?.to_path_buf();
    let devnet = Devnet { dir: tempfile::tempdir()?, bin };
    let anvil = tpod_devnet::anvil::locate(None).context("anvil not found; run tools/bootstrap")?;
    let up = devnet.tpod(&[
        "dev",
        "up",
        "--port",
        "0",
        "--anvil",
        anvil.to_str().context("anvil path")?,
        "--ingress-port",
        "0",
        "--bridge",
        "tpbench0",
        "--subnet",
        "10.240.0.0/16",
    ])?;
    let provider_pid = up["provider"]["pid"].as_u64().context("no provider pid")? as u32;
    let manifest = hello(devnet.dir.path())?;
    let manifest = manifest.to_str().context("manifest path")?;

    // The first deploy uploads the image; the timed ones find it on the provider.
    let first = devnet.tpod(&["deploy", manifest, "--name", "warmup"])?;
    wait_for_200(first["url"].as_str().context("no url")?)?;
    let idle_rss = rss_kib(provider_pid)?;

    let mut times = Vec::with_capacity(args.deploys);
    let mut in_deploy = Duration::ZERO;
    for i in 0..args.deploys {
        let start = Instant::now();
        let out = devnet.tpod(&["deploy", manifest, "--name", &format!("d{i}")])?;
        in_deploy += start.elapsed();
        wait_for_200(out["url"].as_str().context("no url")?)?;
        times.push(start.elapsed());
    }
    let total: Duration = times.iter().sum();
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p).ceil() as usize).saturating_sub(1).min(times.len() - 1)];
    println!("deploy -> first HTTP 200 ({} deploys, image cached, channel creation included):", times.len());
    println!(
        "  p50 {:.3} s   p95 {:.3} s   min {:.3} s   max {:.3} s",
        secs(pct(0.5)),
        secs(pct(0.95)),
        secs(times[0]),
        secs(times[times.len() - 1])
    );
    println!(
        "  of which `tpod deploy` itself (quote, approve, create channel, provision): {:.0} %",
        100.0 * secs(in_deploy) / secs(total)
    );

    let running = 1 + args.deploys;
    for i in running..args.pods {
        devnet.tpod(&["deploy", manifest, "--name", &format!("p{i}")])?;
    }
    let pods = running.max(args.pods);
    let loaded_rss = rss_kib(provider_pid)?;
    println!("provider daemon resident memory:");
    println!(
        "  with 1 pod {:.1} MiB   with {pods} pods {:.1} MiB   ratio {:.2}   per extra pod {:.0} KiB",
        idle_rss as f64 / 1024.0,
        loaded_rss as f64 / 1024.0,
        loaded_rss as f64 / idle_rss as f64,
        (loaded_rss.saturating_sub(idle_rss)) as f64 / (pods - 1) as f64
    );
    Ok(())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A copy of examples/hello, small enough for a hundred to run at once.
fn hello(dir: &Path) -> anyhow::Result<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let work = dir.join("hello");
    std::fs::create_dir_all(&work)?;
    tpod_image::hello::build(
        &work.join("image"),
        Path::new("/bin/busybox"),
        &root.join("examples/hello/www/index.html"),
    )?;
    let yaml = std::fs::read_to_string(root.join("examples/hello/tpod.yaml"))?
        .replace("cpu: 100m", "cpu: 10m")
        .replace("memory: 64Mi", "memory: 16Mi");
    let path = work.join("tpod.yaml");
    std::fs::write(&path, yaml)?;
    Ok(path)
}

fn wait_for_200(url: &str) -> anyhow::Result<()> {
    let authority = url.trim_start_matches("http://").split('/').next().unwrap_or_default();
    let (host, port) = authority.rsplit_once(':').context("url without port")?;
    let port: u16 = port.parse()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if get_status(host, port).unwrap_or(0) == 200 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not answer 200 within 30 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn get_status(host: &str, port: u16) -> anyhow::Result<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    Ok(std::str::from_utf8(&head[9..12])?.parse()?)
}

/// Resident memory of a process, from /proc.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("malformed VmRSS")?.parse()?)
}
