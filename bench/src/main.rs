//! `tpod-bench`: benchmarks that drive the real `tpod` and `tpod-provider` binaries on a private
//! devnet, the way a user does, and print their figures.
//!
//! - `deploy`: deploy → first HTTP 200 through the ingress, with the image already on the
//!   provider and channel creation included (approve + create + provision), p50/p95 over N
//!   deploys. Then the provider daemon's resident memory with M small pods running, next to its
//!   memory with none (a ratio from one run, since these machines are noisy).
//! - `metering`: with those M pods running, the provider daemon's CPU time (utime + stime) as a
//!   share of one core over a window while it meters every pod each second and claims each
//!   minute, next to the same pods with metering and claims pushed out to an hour (the provider
//!   restarted with that configuration, re-adopting the pods), then metering on again, every
//!   window after a restart: the difference is the metering and billing overhead (target < 2 %
//!   of a core).
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
    /// Seconds of each CPU window of the metering figure (60 takes in one claim round).
    #[arg(long, default_value_t = 60)]
    cpu_window: u64,
}

/// Provider configuration merged over the devnet's for the metered CPU windows (the devnet's
/// own billing settings, spelled out).
const METERED: &str = "[billing]\nsample_interval_secs = 1\nclaim_interval_secs = 60\n";
/// The same with metering and claims effectively off: an hour apart, the first sample is taken
/// at start, before the window.
const UNMETERED: &str = "[billing]\nsample_interval_secs = 3600\nclaim_interval_secs = 3600\n";
/// Time a (re)started provider gets to adopt its pods before a CPU window opens.
const SETTLE: Duration = Duration::from_secs(5);

struct Devnet {
    dir: tempfile::TempDir,
    bin: PathBuf,
    anvil: PathBuf,
}

impl Devnet {
    /// `tpod dev up` on the bench's own bridge and subnet, optionally with a provider
    /// configuration file merged over the generated one. On a live chain it starts just the
    /// provider, if it is not running.
    fn up(&self, provider_config: Option<&Path>) -> anyhow::Result<serde_json::Value> {
        let mut args = vec![
            "dev",
            "up",
            "--port",
            "0",
            "--anvil",
            self.anvil.to_str().context("anvil path")?,
            "--ingress-port",
            "0",
            "--bridge",
            "tpbench0",
            "--subnet",
            "10.240.0.0/16",
        ];
        if let Some(file) = provider_config {
            args.extend(["--provider-config", file.to_str().context("config path")?]);
        }
        self.tpod(&args)
    }

    /// Stops the provider with SIGTERM (its pods keep running), starts it again with `config`
    /// merged over the devnet's, and waits for it to adopt its pods. Returns the new pid.
    fn restart_provider(&self, pid: u32, name: &str, config: &str) -> anyhow::Result<u32> {
        use nix::sys::signal::{Signal, kill};
        kill(nix::unistd::Pid::from_raw(i32::try_from(pid)?), Signal::SIGTERM).context("stopping the provider")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while tpod_devnet::anvil::is_live_process(pid, "tpod-provider") {
            if Instant::now() > deadline {
                bail!("the provider (pid {pid}) did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let file = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, config)?;
        let up = self.up(Some(&file))?;
        if up["provider_started"] != true {
            bail!("tpod dev up did not start the provider: {up}");
        }
        std::thread::sleep(SETTLE);
        Ok(up["provider"]["pid"].as_u64().context("no provider pid")? as u32)
    }

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
    let anvil = tpod_devnet::anvil::locate(None).context("anvil not found; run tools/bootstrap")?;
    let devnet = Devnet { dir: tempfile::tempdir()?, bin, anvil };
    let up = devnet.up(None)?;
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

    // Metering on, off, on again, each after a restart: a restarted provider watches the pods it
    // adopted through /proc rather than as its children, which costs CPU of its own, so every
    // window has the same kind. The two metered windows bracket the baseline, so drift in the
    // machine's load shows as a gap between them.
    let window = Duration::from_secs(args.cpu_window);
    let tck = clock_ticks()?;
    let pid = devnet.restart_provider(provider_pid, "metered", METERED)?;
    let metered = cpu_percent(pid, window, tck)?;
    let pid = devnet.restart_provider(pid, "unmetered", UNMETERED)?;
    let baseline = cpu_percent(pid, window, tck)?;
    let pid = devnet.restart_provider(pid, "metered", METERED)?;
    let metered_again = cpu_percent(pid, window, tck)?;
    let on = (metered + metered_again) / 2.0;
    let ratio = if baseline > 0.0 { format!("{:.2}", on / baseline) } else { "n/a".to_owned() };
    println!(
        "metering {pods} pods @1s: provider CPU {on:.2} % of a core (idle baseline {baseline:.2} %, overhead {:.2} %, \
         ratio {ratio}; target overhead < 2 %)",
        on - baseline
    );
    println!(
        "  {} s windows after a restart: metered {metered:.2} %   metering off {baseline:.2} %   \
         metered again {metered_again:.2} %   ({tck} clock ticks/s)",
        window.as_secs()
    );
    Ok(())
}

/// Clock ticks per second, the unit of /proc/<pid>/stat's CPU times.
fn clock_ticks() -> anyhow::Result<f64> {
    let tck = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.context("no _SC_CLK_TCK")?;
    Ok(tck as f64)
}

/// User plus system CPU time of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let (_, rest) = stat.rsplit_once(')').context("malformed /proc/<pid>/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> { Ok(fields.get(n - 3).context("short /proc/<pid>/stat")?.parse()?) };
    Ok(field(14)? + field(15)?)
}

/// The CPU a process uses over `window`, as a percentage of one core.
fn cpu_percent(pid: u32, window: Duration, tck: f64) -> anyhow::Result<f64> {
    let (start, before) = (Instant::now(), cpu_ticks(pid)?);
    std::thread::sleep(window);
    let used = cpu_ticks(pid)?.saturating_sub(before);
    Ok(100.0 * used as f64 / tck / secs(start.elapsed()))
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
