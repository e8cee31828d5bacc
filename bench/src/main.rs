//! `tpod-bench`: benchmarks that drive the real `tpod` and `tpod-provider` binaries on a private
//! devnet, the way a user does, and print their figures.
//!
//! - `transfer`: a large image of random, incompressible layers (1 GiB by default) delivered
//!   with `tpod upload`: encrypted into the publisher's cache, then uploaded over libp2p
//!   (`/tpod/blob/1`) to the provider, next to the same ciphertext copied right after over a raw
//!   loopback TCP connection between two threads (fsynced like the provider does): upload and raw
//!   TCP throughput and their ratio (target ≥ 60 %), encryption throughput, and the peak resident
//!   memory of the publisher's `tpod upload` and of the provider daemon (target < 100 MiB each).
//!   Each round uses a fresh image, since the provider keeps what it received.
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
//! - `market`: `tpod providers` listing and ranking N providers (10,000 by default) from the
//!   chain, cold and warm; then, on a devnet with three live providers, probing them (profiles
//!   and quotes) against listing only (see `market.rs`).
//!
//! - `wake`: cold start to first byte of the hello pod scaled to zero, p50 and p99 over N wakes,
//!   next to warm requests in the same run, and what a pod at zero keeps in memory (see
//!   `wake.rs`).
//! - `density`: N pods (1,000 by default) scaled to zero on one provider: the provider daemon's
//!   memory per pod (goal < 100 KiB), what the pods keep in the kernel, the deploy rate, and the
//!   time to wake one of them next to waking a pod alone; then everything removed (see
//!   `density.rs`).
//! - `ingress`: HTTP requests/s and p99 latency with `wrk` at 1, 16 and 64 connections, small
//!   and 1 MiB bodies, straight to a static backend, through the tpod ingress and through nginx,
//!   as ratios (see `ingress.rs`). Needs no devnet.
//! - `replicas`: requests/s of a CPU-bound handler through the ingress with one replica and with
//!   two, as a ratio (see `replicas.rs`).
//!
//! Every section runs unless `--only` names some (`--only transfer`, `--only deploy,metering`);
//! `metering` alone still deploys the pods it meters, untimed. Run with `bench/run` (builds in
//! release mode first).

mod density;
mod ingress;
mod market;
mod replicas;
mod wake;
mod zero;

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use sha2::{Digest as _, Sha256};

/// Trusted Pods benchmarks.
#[derive(Parser)]
struct Args {
    /// Run only these sections (comma-separated); all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// Size of the transfer benchmark's image, in MiB.
    #[arg(long, default_value_t = 1024)]
    transfer_mib: u64,
    /// Rounds of the transfer benchmark (upload, then raw TCP), each with a fresh image.
    #[arg(long, default_value_t = 2)]
    transfer_rounds: usize,
    /// Deploys timed for the latency figures.
    #[arg(long, default_value_t = 20)]
    deploys: usize,
    /// Pods running when the provider's memory is measured.
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Wakes of a pod at zero timed by the wake benchmark.
    #[arg(long, default_value_t = 50)]
    wakes: usize,
    /// Pods deployed and scaled to zero by the density benchmark (next to one woken alone).
    #[arg(long, default_value_t = 1000)]
    density_pods: usize,
    /// Publishers deploying at once in the density benchmark (after 20 deploys one at a time).
    #[arg(long, default_value_t = 8)]
    density_jobs: usize,
    /// Wakes timed by the density benchmark, of the pod alone and of different pods among the
    /// others.
    #[arg(long, default_value_t = 20)]
    density_wakes: usize,
    /// Seconds of each wrk measurement of the ingress benchmark (18 of them).
    #[arg(long, default_value_t = 5)]
    ingress_secs: u64,
    /// Seconds of each wrk measurement of the replicas benchmark (one per replica count).
    #[arg(long, default_value_t = 10)]
    replicas_secs: u64,
    /// Providers registered for the market benchmark.
    #[arg(long, default_value_t = 10_000)]
    market_providers: usize,
    /// Seconds of each CPU window of the metering figure (60 takes in one claim round).
    #[arg(long, default_value_t = 60)]
    cpu_window: u64,
    /// Internal: runs the command after `--`, then prints its peak resident memory and CPU time
    /// on the last line of standard error (how the transfer benchmark measures `tpod upload`).
    #[arg(long, hide = true, requires = "command")]
    peak_rss: bool,
    /// The command of `--peak-rss`.
    #[arg(last = true, hide = true)]
    command: Vec<OsString>,
}

/// A section of the benchmarks (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    Transfer,
    Deploy,
    Metering,
    Market,
    Wake,
    Density,
    Ingress,
    Replicas,
}

/// Provider configuration merged over the devnet's for the metered CPU windows (the devnet's
/// own billing settings, spelled out).
const METERED: &str = "[billing]\nsample_interval_secs = 1\nclaim_interval_secs = 60\n";
/// The same with metering and claims effectively off: an hour apart, the first sample is taken
/// at start, before the window.
const UNMETERED: &str = "[billing]\nsample_interval_secs = 3600\nclaim_interval_secs = 3600\n";
/// The bench's own bridge, on its own subnet (10.240.0.0/16), away from other devnets'.
const BRIDGE: &str = "tpbench0";
/// Time a (re)started provider gets to adopt its pods before a CPU window opens.
const SETTLE: Duration = Duration::from_secs(5);
/// The transfer benchmark's image layers: this size each, the last one what is left.
const LAYER_BYTES: u64 = 128 << 20;
/// Buffer of the transfer benchmark's file and socket copies.
const COPY_BUF: usize = 1 << 20;
/// How `--peak-rss` starts the line with its figures.
const RUSAGE_MARK: &str = "tpod-bench-rusage:";

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
            BRIDGE,
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

    /// `tpod --json upload <manifest>` with `cache` as the publisher's cache, under `--peak-rss`:
    /// its JSON and its resource usage.
    fn upload(&self, manifest: &Path, cache: &Path) -> anyhow::Result<(serde_json::Value, ChildUsage)> {
        let out = Command::new(std::env::current_exe()?)
            .args(["--peak-rss", "--"])
            .arg(self.bin.join("tpod"))
            .arg("--devnet-dir")
            .arg(self.dir.path())
            .args(["--json", "upload"])
            .arg(manifest)
            .env("TPOD_CACHE_DIR", cache)
            .output()
            .context("running tpod upload")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            bail!("tpod upload failed: {stderr}");
        }
        let figures =
            stderr.lines().rev().find_map(|l| l.strip_prefix(RUSAGE_MARK)).context("--peak-rss printed no figures")?;
        let figures: Vec<f64> = figures.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
        let [peak, user, system] = figures[..] else { bail!("malformed --peak-rss figures: {figures:?}") };
        let json = serde_json::from_slice(&out.stdout).context("tpod upload printed no JSON")?;
        Ok((json, ChildUsage { peak_rss_kib: peak as u64, cpu_seconds: user + system }))
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
        // The provider creates the bridge and leaves it; the bench's own goes once no pod is
        // attached to it.
        let ports = std::fs::read_dir(format!("/sys/class/net/{BRIDGE}/brif"));
        if ports.is_ok_and(|mut ports| ports.next().is_none()) {
            let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.peak_rss {
        return peak_rss(&args.command);
    }
    let run = |section| args.only.is_empty() || args.only.contains(&section);
    // First, while no devnet loads the machine; it needs no anvil either.
    if run(Section::Ingress) {
        ingress::run(args.ingress_secs)?;
    }
    if !args.only.is_empty() && args.only.iter().all(|s| *s == Section::Ingress) {
        return Ok(());
    }
    let bin = std::env::current_exe()?.parent().context("no binary directory")?.to_path_buf();
    let anvil = tpod_devnet::anvil::locate(None).context("anvil not found; run tools/bootstrap")?;
    if run(Section::Market) {
        market::run(&bin, &anvil, args.market_providers)?;
        let work = tempfile::tempdir()?;
        market::live(&bin, &anvil, &hello(work.path())?)?;
    }
    if run(Section::Wake) {
        let work = tempfile::tempdir()?;
        wake::run(&bin, &anvil, &hello(work.path())?, args.wakes)?;
    }
    if run(Section::Replicas) {
        let work = tempfile::tempdir()?;
        replicas::run(&bin, &anvil, &hello(work.path())?, args.replicas_secs)?;
    }
    if run(Section::Density) {
        let work = tempfile::tempdir()?;
        let opts = density::Options { pods: args.density_pods, jobs: args.density_jobs, wakes: args.density_wakes };
        density::run(&bin, &anvil, &hello(work.path())?, &opts)?;
    }
    if args
        .only
        .iter()
        .all(|s| matches!(s, Section::Market | Section::Wake | Section::Density | Section::Ingress | Section::Replicas))
        && !args.only.is_empty()
    {
        return Ok(());
    }
    let devnet = Devnet { dir: tempfile::tempdir()?, bin, anvil };
    let up = devnet.up(None)?;
    let provider_pid = up["provider"]["pid"].as_u64().context("no provider pid")? as u32;
    // First, while the provider holds nothing else and the machine is quiet.
    if run(Section::Transfer) {
        transfer(&devnet, &args, provider_pid)?;
    }
    if run(Section::Deploy) || run(Section::Metering) {
        let pods = deploy(&devnet, &args, provider_pid, run(Section::Deploy))?;
        if run(Section::Metering) {
            metering(&devnet, &args, provider_pid, pods)?;
        }
    }
    Ok(())
}

/// The `deploy` section when `timed`, else just the pods the `metering` section needs. Returns
/// how many pods run.
fn deploy(devnet: &Devnet, args: &Args, provider_pid: u32, timed: bool) -> anyhow::Result<usize> {
    let manifest = hello(devnet.dir.path())?;
    let manifest = manifest.to_str().context("manifest path")?;

    // The first deploy uploads the image; the timed ones find it on the provider.
    let first = devnet.tpod(&["deploy", manifest, "--name", "warmup"])?;
    wait_for_200(first["url"].as_str().context("no url")?)?;
    let idle_rss = rss_kib(provider_pid)?;

    let deploys = if timed { args.deploys } else { 0 };
    if timed {
        let mut times = Vec::with_capacity(deploys);
        let mut in_deploy = Duration::ZERO;
        for i in 0..deploys {
            let start = Instant::now();
            let out = devnet.tpod(&["deploy", manifest, "--name", &format!("d{i}")])?;
            in_deploy += start.elapsed();
            wait_for_200(out["url"].as_str().context("no url")?)?;
            times.push(start.elapsed());
        }
        if !times.is_empty() {
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
        }
    }

    let running = 1 + deploys;
    for i in running..args.pods {
        devnet.tpod(&["deploy", manifest, "--name", &format!("p{i}")])?;
    }
    let pods = running.max(args.pods);
    if timed && pods > 1 {
        let loaded_rss = rss_kib(provider_pid)?;
        println!("provider daemon resident memory:");
        println!(
            "  with 1 pod {:.1} MiB   with {pods} pods {:.1} MiB   ratio {:.2}   per extra pod {:.0} KiB",
            idle_rss as f64 / 1024.0,
            loaded_rss as f64 / 1024.0,
            loaded_rss as f64 / idle_rss as f64,
            (loaded_rss.saturating_sub(idle_rss)) as f64 / (pods - 1) as f64
        );
    }
    Ok(pods)
}

/// The `metering` section, with `pods` pods running.
fn metering(devnet: &Devnet, args: &Args, provider_pid: u32, pods: usize) -> anyhow::Result<()> {
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

/// What one round of the transfer benchmark measured.
struct Round {
    /// Ciphertext bytes of the image, and bytes `tpod upload` sent.
    encrypted: u64,
    uploaded: u64,
    /// Seconds `tpod upload` spent encrypting, and uploading.
    encrypt: f64,
    upload: f64,
    /// Bytes and seconds of the raw TCP copy.
    raw_bytes: u64,
    raw: f64,
    /// `tpod upload`: peak resident memory and CPU seconds (user + system), encryption included.
    publisher: ChildUsage,
    /// The provider: peak resident memory during the upload (since its start if the peak could
    /// not be reset), its resident memory before, and its CPU seconds over the command.
    provider_peak_kib: u64,
    provider_before_kib: u64,
    provider_cpu: f64,
}

/// The `transfer` section (see the module docs).
fn transfer(devnet: &Devnet, args: &Args, provider_pid: u32) -> anyhow::Result<()> {
    let bytes =
        args.transfer_mib.checked_mul(1 << 20).filter(|b| *b > 0).context("--transfer-mib must be 1 or more")?;
    let layers = bytes.div_ceil(LAYER_BYTES);
    let tck = clock_ticks()?;
    println!(
        "transfer: `tpod upload` of a {} MiB image ({layers} uncompressed layers of random bytes, up to {} MiB each): \
         encrypt into the publisher's cache, upload over libp2p /tpod/blob/1 to the devnet provider; then the same \
         ciphertext files over raw loopback TCP (thread to thread, fsync per file). {} round(s), a fresh image each \
         (the provider keeps what it received, so the same image again would send nothing):",
        args.transfer_mib,
        LAYER_BYTES >> 20,
        args.transfer_rounds
    );
    let mut rounds = Vec::with_capacity(args.transfer_rounds);
    for round in 0..args.transfer_rounds {
        let work = devnet.dir.path().join(format!("transfer-{round}"));
        let seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.as_nanos() as u64 ^ round as u64;
        let started = Instant::now();
        write_random_image(&work.join("image"), bytes, seed)?;
        let written = started.elapsed();
        let manifest = work.join("tpod.yaml");
        std::fs::write(&manifest, TRANSFER_MANIFEST)?;
        let cache = work.join("cache");

        let peak_reset = reset_peak_rss(provider_pid);
        let provider_before_kib = rss_kib(provider_pid)?;
        let cpu_before = cpu_ticks(provider_pid)?;
        let (out, publisher) = devnet.upload(&manifest, &cache)?;
        let provider_cpu = cpu_ticks(provider_pid)?.saturating_sub(cpu_before) as f64 / tck;
        let provider_peak_kib = status_kib(provider_pid, "VmHWM:")?;
        let field = |name: &str| out[name].as_f64().with_context(|| format!("no {name} in {out}"));
        let (raw_bytes, raw) = raw_tcp_copy(&cache.join("encrypted").join("blobs"), &work.join("raw"))?;
        let r = Round {
            encrypted: field("encrypted_bytes")? as u64,
            uploaded: field("uploaded_bytes")? as u64,
            encrypt: field("encrypt_seconds")?,
            upload: field("upload_seconds")?,
            raw_bytes,
            raw: secs(raw),
            publisher,
            provider_peak_kib,
            provider_before_kib,
            provider_cpu,
        };
        if r.uploaded != r.encrypted || r.raw_bytes != r.encrypted {
            bail!(
                "round {}: {} bytes encrypted, but {} uploaded and {} copied over raw TCP",
                round + 1,
                r.encrypted,
                r.uploaded,
                r.raw_bytes
            );
        }
        println!(
            "  round {}: upload {:.0} MiB in {:.2} s = {:.0} MiB/s   raw TCP {:.2} s = {:.0} MiB/s   ratio {:.0} %   \
             encrypt {:.2} s = {:.0} MiB/s   (image written in {:.2} s)",
            round + 1,
            mib(r.encrypted),
            r.upload,
            mib(r.uploaded) / r.upload,
            r.raw,
            mib(r.raw_bytes) / r.raw,
            100.0 * r.raw / r.upload,
            r.encrypt,
            mib(r.encrypted) / r.encrypt,
            secs(written)
        );
        println!(
            "           peak resident memory: publisher {:.1} MiB   provider {:.1} MiB{} (from {:.1} MiB before)   \
             CPU: publisher {:.1} s (encryption included)   provider {:.1} s",
            r.publisher.peak_rss_kib as f64 / 1024.0,
            r.provider_peak_kib as f64 / 1024.0,
            if peak_reset { "" } else { " (peak since its start: could not reset it)" },
            r.provider_before_kib as f64 / 1024.0,
            r.publisher.cpu_seconds,
            r.provider_cpu
        );
        // The provider keeps its copy; the bench's copies go, to spare the disk.
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
        rounds.push(r);
    }
    if rounds.is_empty() {
        return Ok(());
    }
    let sum = |f: fn(&Round) -> f64| rounds.iter().map(f).sum::<f64>();
    let upload_rate = sum(|r| mib(r.uploaded)) / sum(|r| r.upload);
    let raw_rate = sum(|r| mib(r.raw_bytes)) / sum(|r| r.raw);
    let encrypt_rate = sum(|r| mib(r.encrypted)) / sum(|r| r.encrypt);
    let peak = |f: fn(&Round) -> u64| rounds.iter().map(f).max().unwrap_or(0) as f64 / 1024.0;
    println!(
        "  over {} round(s): upload {upload_rate:.0} MiB/s   raw TCP {raw_rate:.0} MiB/s   ratio {:.0} % \
         (target ≥ 60 %)   encryption {encrypt_rate:.0} MiB/s",
        rounds.len(),
        100.0 * upload_rate / raw_rate
    );
    println!(
        "  peak resident memory: publisher (`tpod upload`) {:.1} MiB   provider daemon {:.1} MiB \
         (target < 100 MiB each)",
        peak(|r| r.publisher.peak_rss_kib),
        peak(|r| r.provider_peak_kib)
    );
    Ok(())
}

/// A manifest naming the transfer benchmark's image (uploaded, never run).
const TRANSFER_MANIFEST: &str = "name: transfer\ncontainers:\n  - name: data\n    image: ./image\n    \
                                 command: [\"/layer-0\"]\n    resources:\n      cpu: 10m\n      memory: 16Mi\n\
                                 replicas:\n  min: 1\n  max: 1\n";

/// Writes an OCI image layout of `bytes` random bytes to `dir`: uncompressed tar layers of up to
/// [`LAYER_BYTES`], each one file, streamed to disk while hashed, so that memory stays small
/// whatever the size. Every blob is fsynced, so that no writeback of it lingers into what is
/// timed next.
fn write_random_image(dir: &Path, bytes: u64, seed: u64) -> anyhow::Result<()> {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    let mut rng = SplitMix64(seed);
    let mut buf = vec![0u8; COPY_BUF];
    let mut layers = Vec::new();
    let mut left = bytes;
    while left > 0 {
        let size = left.min(LAYER_BYTES);
        left -= size;
        let mut header = tar::Header::new_ustar();
        header.set_path(format!("layer-{}", layers.len()))?;
        header.set_size(size);
        header.set_mode(0o755);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        let mut blob = BlobWriter::create(&blobs)?;
        blob.write_all(header.as_bytes())?;
        let mut remaining = size;
        while remaining > 0 {
            let n = remaining.min(buf.len() as u64) as usize;
            rng.fill(&mut buf[..n]);
            blob.write_all(&buf[..n])?;
            remaining -= n as u64;
        }
        // Padding to a 512-byte block, then the two zero blocks that end an archive.
        let padding = ((512 - size % 512) % 512) as usize;
        blob.write_all(&vec![0; padding + 1024])?;
        layers.push(blob.finish()?);
    }

    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let diff_ids: Vec<&str> = layers.iter().map(|(digest, _)| digest.as_str()).collect();
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/layer-0"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_size) = json_blob(&blobs, &config)?;
    let layer_descriptors: Vec<serde_json::Value> = layers
        .iter()
        .map(|(digest, size)| {
            serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size})
        })
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layer_descriptors,
    });
    let (manifest_digest, manifest_size) = json_blob(&blobs, &manifest)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": {"architecture": arch, "os": "linux"},
        }],
    });
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}

/// Writes a JSON document as a blob of the layout whose blob directory is `blobs`; returns its
/// digest and size.
fn json_blob(blobs: &Path, value: &serde_json::Value) -> anyhow::Result<(String, u64)> {
    let mut blob = BlobWriter::create(blobs)?;
    blob.write_all(&serde_json::to_vec(value)?)?;
    blob.finish()
}

/// A blob of an image layout being written: hashed as it goes, moved to its name at the end.
struct BlobWriter {
    file: File,
    hasher: Sha256,
    len: u64,
    dir: PathBuf,
    partial: PathBuf,
}

impl BlobWriter {
    fn create(dir: &Path) -> anyhow::Result<Self> {
        let partial = dir.join(".partial");
        let file = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
        Ok(Self { file, hasher: Sha256::new(), len: 0, dir: dir.to_owned(), partial })
    }

    fn write_all(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        self.file.write_all(bytes).with_context(|| format!("writing {}", self.partial.display()))
    }

    /// Syncs the blob and names it by its digest; returns the digest (`sha256:<hex>`) and size.
    fn finish(self) -> anyhow::Result<(String, u64)> {
        self.file.sync_all().with_context(|| format!("syncing {}", self.partial.display()))?;
        let hex = format!("{:x}", self.hasher.finalize());
        let path = self.dir.join(&hex);
        std::fs::rename(&self.partial, &path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok((format!("sha256:{hex}"), self.len))
    }
}

/// splitmix64: fast, and random enough that no compression or deduplication helps.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// Copies the files of `src` (not its hidden partials) over a loopback TCP connection, from this
/// thread reading them to a thread writing them into `dst`, each file fsynced once complete as the
/// provider does with a blob. Returns the bytes copied and the time from the first byte received
/// to the last fsync done.
fn raw_tcp_copy(src: &Path, dst: &Path) -> anyhow::Result<(u64, Duration)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let path = entry?.path();
        if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.')) {
            files.push(path);
        }
    }
    files.sort();
    std::fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    // Connected before the receiver starts (the kernel completes it from the backlog), so that a
    // failure here cannot leave the receiver waiting for a connection.
    let stream = TcpStream::connect(listener.local_addr()?).context("connecting over loopback")?;
    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| receive_files(&listener, dst));
        let sent = send_files(stream, &files);
        let received = receiver.join().map_err(|_| anyhow!("the raw TCP receiver panicked"))?;
        let (bytes, elapsed) = received.context("raw TCP receiver")?;
        let sent = sent.context("raw TCP sender")?;
        if sent != bytes {
            bail!("raw TCP: {sent} bytes sent, {bytes} received");
        }
        Ok((bytes, elapsed))
    })
}

/// Sends each file as its length (8 bytes, little-endian) and its content, then ends the stream.
fn send_files(mut stream: TcpStream, files: &[PathBuf]) -> anyhow::Result<u64> {
    let mut buf = vec![0u8; COPY_BUF];
    let mut total = 0;
    for path in files {
        let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata()?.len();
        stream.write_all(&len.to_le_bytes())?;
        let mut left = len;
        while left > 0 {
            let n = file.read(&mut buf[..left.min(COPY_BUF as u64) as usize])?;
            if n == 0 {
                bail!("{} shrank while being sent", path.display());
            }
            stream.write_all(&buf[..n])?;
            left -= n as u64;
        }
        total += len;
    }
    stream.shutdown(Shutdown::Write)?;
    Ok(total)
}

/// Receives what [`send_files`] sends into numbered files in `dst`.
fn receive_files(listener: &TcpListener, dst: &Path) -> anyhow::Result<(u64, Duration)> {
    let (mut stream, _) = listener.accept()?;
    let mut buf = vec![0u8; COPY_BUF];
    let mut started = None;
    let mut total = 0u64;
    for i in 0u64.. {
        let mut len = [0u8; 8];
        match stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        started.get_or_insert_with(Instant::now);
        let path = dst.join(i.to_string());
        let mut file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut left = u64::from_le_bytes(len);
        while left > 0 {
            let n = stream.read(&mut buf[..left.min(COPY_BUF as u64) as usize])?;
            if n == 0 {
                bail!("the connection ended inside {}", path.display());
            }
            file.write_all(&buf[..n])?;
            left -= n as u64;
            total += n as u64;
        }
        file.sync_all()?;
    }
    File::open(dst).and_then(|d| d.sync_all())?;
    Ok((total, started.map_or(Duration::ZERO, |s| s.elapsed())))
}

/// Peak resident memory and CPU time of a child process, from `--peak-rss`.
struct ChildUsage {
    peak_rss_kib: u64,
    cpu_seconds: f64,
}

/// `--peak-rss`: runs `command` and prints on standard error, last, the peak resident memory
/// (KiB) and user and system CPU seconds of it (and of whatever it waited for), from
/// `getrusage(RUSAGE_CHILDREN)`: exact, where polling /proc could miss a peak, and this
/// process's only child is the command.
fn peak_rss(command: &[OsString]) -> anyhow::Result<()> {
    use nix::sys::resource::{UsageWho, getrusage};
    let (program, rest) = command.split_first().context("--peak-rss needs a command after --")?;
    let status = Command::new(program).args(rest).status().with_context(|| format!("running {program:?}"))?;
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    eprintln!("{RUSAGE_MARK} {} {} {}", usage.max_rss(), seconds(usage.user_time()), seconds(usage.system_time()));
    if !status.success() {
        bail!("{program:?} failed ({status})");
    }
    Ok(())
}

/// Makes the kernel's record of a process's peak resident memory (VmHWM) start again from its
/// current resident memory; false if it could not.
fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
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

/// `tpod --devnet-dir dir --json args`, with its image cache in `dir/cache` (nothing left in
/// `~/.tpod`, no cache shared by publishers deploying at once): how long it took and what it
/// printed.
fn tpod_json(bin: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<(Duration, serde_json::Value)> {
    let started = Instant::now();
    let out = Command::new(bin.join("tpod"))
        .arg("--devnet-dir")
        .arg(dir)
        .arg("--json")
        .args(args)
        .env("TPOD_CACHE_DIR", dir.join("cache"))
        .output()
        .context("running tpod")?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        bail!("tpod {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((elapsed, serde_json::from_slice(&out.stdout).context("tpod printed no JSON")?))
}

/// Locks a mutex, poisoned or not (a panicking thread fails its own section anyway).
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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
    // One write: `write!` sends the pieces of its format separately, and small writes behind
    // Nagle's algorithm wait for the server's delayed ACK, which the latency figures would carry.
    stream.set_nodelay(true)?;
    stream.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    Ok(std::str::from_utf8(&head[9..12])?.parse()?)
}

/// Resident memory of a process, from /proc.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// A figure in KiB of /proc/<pid>/status, by its field name (with the colon).
fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field} for pid {pid}"))?;
    Ok(line.split_whitespace().nth(1).with_context(|| format!("malformed {field}"))?.parse()?)
}
