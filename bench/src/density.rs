//! The `density` section (issue 15): many pods scaled to zero on one provider. What each costs
//! the provider daemon, what it keeps in the kernel, how fast they deploy, and the time to wake
//! one of them next to waking a pod that is alone.
//!
//! On a devnet of its own (bridge `tpbd0`, 10.245.0.0/16) whose provider lets pods idle 1 s and
//! whose capacity is raised to hold them all (a pod at zero keeps its reservation), the hello pod
//! of the `wake` section (`replicas: {min: 0, idleTimeout: 1s}`) is deployed once and woken
//! `wakes` times alone; then N more are deployed: the first [`SERIAL_DEPLOYS`] one at a time,
//! the rest by several publishers at once (each its own account, key and records, so that their
//! chain transactions and deployment files do not race), stopping at the first failure. Once
//! `tpod status` says every pod is at zero, the provider's CPU over a minute and its memory
//! (/proc/<pid>/smaps_rollup) are measured again, as with the one pod, with what the pods keep
//! outside the provider (their memory cgroups, their rootfs tmpfs mounts, and the machine's
//! shared and unreclaimable kernel memory); then `wakes` different pods are woken, one at a
//! time. `tpod dev down` then removes everything (the provider purges every pod, and the
//! bridge), and `tools/leftovers` before and after shows that nothing of the section stays.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::zero::{self, ZeroDevnet, quantile_ms};

const BRIDGE: &str = "tpbd0";
const SUBNET: &str = "10.245.0.0/16";
/// The goal for the provider's memory per pod at zero, in KiB.
const GOAL_KIB_PER_POD: f64 = 100.0;
/// Deploys timed one at a time before the concurrent ones.
const SERIAL_DEPLOYS: usize = 20;
/// How long every pod may take to be seen at zero after the last deploy.
const ALL_AT_ZERO_TIMEOUT: Duration = Duration::from_secs(600);
/// How often `tpod status` asks about a pod while all are waited for.
const BULK_POLL: Duration = Duration::from_secs(1);
/// The provider's CPU is measured over this long with one pod at zero and with all: a claim
/// round of the devnet's provider (every pod's channel, each minute) falls in each window.
const CPU_WINDOW: Duration = Duration::from_secs(60);
/// How often progress is printed while pods deploy.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// The scaled hello pod's reservation, which the provider's capacity is raised to fit N times.
const POD_CPU_MILLIS: usize = 100;
const POD_MEMORY_MIB: usize = 64;

/// What the section is asked for.
pub struct Options {
    /// Pods deployed next to the one woken alone.
    pub pods: usize,
    /// Publishers deploying at once after the serial deploys.
    pub jobs: usize,
    /// Wakes timed, alone and among the pods.
    pub wakes: usize,
}

/// Runs the section.
pub fn run(bin: &Path, anvil: &Path, hello: &Path, opts: &Options) -> anyhow::Result<()> {
    if opts.jobs == 0 || opts.wakes == 0 {
        bail!("--density-jobs and --density-wakes must be 1 or more");
    }
    let before = leftovers()?;
    let devnet = ZeroDevnet::new(bin, anvil, hello, BRIDGE, SUBNET)?;
    // Capacity is only accounting (each pod's cgroup has its own limit), but it is checked at
    // every deploy, and a pod at zero keeps its reservation.
    let total = opts.pods + 1;
    let config = format!(
        "{}[capacity]\ncpu = \"{}m\"\nmemory = \"{}Mi\"\n",
        zero::SCALING,
        total * POD_CPU_MILLIS,
        total * POD_MEMORY_MIB
    );
    let mut ours = vec![BRIDGE.to_owned(), devnet.dir.path().display().to_string()];
    let result = devnet.up(&config).and_then(|up| measure(bin, &devnet, &up, opts, &mut ours));
    let started = Instant::now();
    let down = devnet.down();
    let down_time = started.elapsed();
    let after = leftovers()?;
    let new: Vec<&String> = after.difference(&before).collect();
    let (left, others): (Vec<&String>, Vec<&String>) =
        new.into_iter().partition(|line| ours.iter().any(|o| line.contains(o.as_str())));
    println!(
        "  cleanup: `tpod dev down` (provider stopped, every pod purged, bridge removed, anvil stopped) took {:.1} s; \
         tools/leftovers after: {}",
        down_time.as_secs_f64(),
        if left.is_empty() { "nothing of this section".to_owned() } else { format!("{} left: {left:?}", left.len()) }
    );
    if !others.is_empty() {
        println!("  (new meanwhile, not of this section: {others:?})");
    }
    let result = result.and(down);
    if !left.is_empty() {
        result?;
        bail!("the density section left {} things behind: {left:?}", left.len());
    }
    result
}

/// A pod the section deployed.
struct Pod {
    name: String,
    id: String,
    url: String,
    /// Which publisher owns it.
    publisher: usize,
}

/// A publisher of its own: an account (funded), its key file, and a directory that stands for
/// the devnet (links to its files) where its deployment records and image cache go.
struct Publisher {
    dir: PathBuf,
    key: PathBuf,
}

impl Publisher {
    fn tpod(&self, bin: &Path, args: &[&str]) -> anyhow::Result<(Duration, Value)> {
        let mut all = vec!["--key-file", self.key.to_str().context("key path")?];
        all.extend(args);
        super::tpod_json(bin, &self.dir, &all)
    }

    fn status(&self, bin: &Path) -> impl Fn(&[&str]) -> anyhow::Result<Value> {
        move |args: &[&str]| self.tpod(bin, args).map(|(_, json)| json)
    }
}

fn measure(bin: &Path, devnet: &ZeroDevnet, up: &Value, opts: &Options, ours: &mut Vec<String>) -> anyhow::Result<()> {
    let pid = up["provider"]["pid"].as_u64().context("no provider pid")? as u32;
    let manifest = devnet.manifest()?;
    let empty = Memory::read(pid, devnet.dir.path(), &[])?;
    let publishers = publishers(devnet, opts.jobs)?;

    // One pod, woken alone.
    let (_, solo) = publishers[0].tpod(bin, &["deploy", manifest, "--name", "solo"])?;
    let solo = Pod {
        name: "solo".to_owned(),
        id: solo["pod_id"].as_str().context("no pod id")?.to_owned(),
        url: solo["url"].as_str().context("no url")?.to_owned(),
        publisher: 0,
    };
    ours.push(prefix(&solo.id).to_owned());
    let mut alone = Vec::with_capacity(opts.wakes);
    for _ in 0..opts.wakes {
        alone.push(wake(bin, &publishers, &solo)?);
    }
    let at_zero = |pod: &Pod| {
        let deadline = Instant::now() + zero::AT_ZERO_TIMEOUT;
        zero::wait_at_zero(publishers[pod.publisher].status(bin), Some(&pod.name), deadline, zero::AT_ZERO_POLL)
    };
    at_zero(&solo)?;
    let tck = super::clock_ticks()?;
    let cpu_one = super::cpu_percent(pid, CPU_WINDOW, tck)?;
    let one = Memory::read(pid, devnet.dir.path(), std::slice::from_ref(&solo))?;

    // N more, one at a time and then several at once.
    super::reset_peak_rss(pid);
    let started = Instant::now();
    let serial = opts.pods.min(SERIAL_DEPLOYS);
    let mut deployed = Deployed::default();
    deploy(bin, &publishers[..1], manifest, 0..serial, pid, &mut deployed);
    let serial_time = started.elapsed();
    let serial_done = deployed.pods.len();
    if deployed.failure.is_none() {
        deploy(bin, &publishers, manifest, serial..opts.pods, pid, &mut deployed);
    }
    let deploy_time = started.elapsed();
    let peak_kib = super::status_kib(pid, "VmHWM:")?;
    let mut pods = deployed.pods;
    pods.sort_by_key(|p| p.name[1..].parse::<usize>().unwrap_or(usize::MAX));
    ours.extend(pods.iter().map(|p| prefix(&p.id).to_owned()));
    let mut problems = Vec::new();
    if let Some((i, e)) = deployed.failure {
        problems.push(format!("deploying stopped at pod {i} of {} ({} deployed): {e:#}", opts.pods, pods.len()));
    }

    // All at zero, by the provider's own word.
    let started = Instant::now();
    let (confirmed, late) = all_at_zero(bin, &publishers, &pods);
    let zero_time = started.elapsed();
    if let Some(e) = late {
        problems.push(format!(
            "{} of {} pods were not seen at zero within {} s of the last deploy: {e:#}",
            pods.len() - confirmed,
            pods.len(),
            ALL_AT_ZERO_TIMEOUT.as_secs()
        ));
    }
    let cpu_full = super::cpu_percent(pid, CPU_WINDOW, tck)?;
    let mut all = vec![solo];
    all.extend(pods);
    let full = Memory::read(pid, devnet.dir.path(), &all)?;

    // Wakes of different pods among them, one at a time.
    let mut among = Vec::with_capacity(opts.wakes);
    let n = all.len() - 1;
    if n > 0 {
        for k in 0..opts.wakes {
            let pod = &all[1 + k * n / opts.wakes % n];
            match wake(bin, &publishers, pod) {
                Ok(time) => among.push(time),
                Err(e) => problems.push(format!("waking {}: {e:#}", pod.name)),
            }
        }
    }

    report(&Report {
        opts,
        n,
        serial: (serial_done, serial_time),
        concurrent: (n - serial_done, deploy_time - serial_time),
        zero: (confirmed, zero_time),
        peak_kib,
        cpu: (cpu_one, cpu_full),
        memory: [empty, one, full],
        alone,
        among,
    });
    if !problems.is_empty() {
        for p in &problems {
            println!("  PROBLEM: {p}");
        }
        bail!("the density section did not reach {} pods at zero: {}", opts.pods, problems.join("; "));
    }
    Ok(())
}

/// The first 12 hex digits of a pod id: its cgroup, network namespace and veth are named by them.
fn prefix(id: &str) -> &str {
    let id = id.trim_start_matches("0x");
    id.get(..12).unwrap_or(id)
}

/// Waits until `pod` is at zero, then times the GET that wakes it.
fn wake(bin: &Path, publishers: &[Publisher], pod: &Pod) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + zero::AT_ZERO_TIMEOUT;
    zero::wait_at_zero(publishers[pod.publisher].status(bin), Some(&pod.name), deadline, zero::AT_ZERO_POLL)?;
    zero::first_byte(&pod.url)
}

/// `jobs` publishers of their own, each funded like the devnet's.
fn publishers(devnet: &ZeroDevnet, jobs: usize) -> anyhow::Result<Vec<Publisher>> {
    let main = devnet.dir.path();
    let file = tpod_devnet::DevnetFile::load(&tpod_devnet::file_path(main))?.context("no devnet file")?;
    let deployer = file.account("deployer")?.signer()?;
    // What `tpod dev up` wrote (the devnet file, the provider's directory, the policy), linked
    // into each publisher's directory; taken before any deploy writes records or a cache.
    let entries: Vec<PathBuf> = std::fs::read_dir(main)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    (0..jobs)
        .map(|k| {
            let dir = main.join(format!("publisher-{k}"));
            std::fs::create_dir(&dir)?;
            for entry in &entries {
                std::os::unix::fs::symlink(entry, dir.join(entry.file_name().context("entry name")?))?;
            }
            let account = tpod_devnet::DevAccount::generate("publisher");
            let key = dir.join("publisher.key");
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key)?
                .write_all(account.private_key.to_string().as_bytes())?;
            runtime.block_on(async {
                let funds = tpod_devnet::whole(tpod_devnet::DEV_NATIVE_FUNDS);
                tpod_devnet::deploy::set_native_balance(&file.rpc_url, account.address, funds).await?;
                let tokens = tpod_devnet::whole(tpod_devnet::DEV_TOKEN_FUNDS);
                tpod_devnet::deploy::mint_test_tokens(
                    &file.rpc_url,
                    deployer.clone(),
                    file.contracts,
                    account.address,
                    tokens,
                )
                .await
            })?;
            Ok(Publisher { dir, key })
        })
        .collect()
}

/// What deploys have made so far, and the first failure.
#[derive(Default)]
struct Deployed {
    pods: Vec<Pod>,
    failure: Option<(usize, anyhow::Error)>,
}

/// Deploys pods `range` (named `d<i>`), each publisher one at a time, all publishers at once;
/// stops at the first failure. Prints progress every [`PROGRESS_EVERY`].
fn deploy(
    bin: &Path,
    publishers: &[Publisher],
    manifest: &str,
    range: std::ops::Range<usize>,
    provider_pid: u32,
    deployed: &mut Deployed,
) {
    let next = AtomicUsize::new(range.start);
    let stop = AtomicBool::new(false);
    let done = Mutex::new(std::mem::take(&mut deployed.pods));
    let failure = Mutex::new(None);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let workers: Vec<_> = publishers
            .iter()
            .enumerate()
            .map(|(k, publisher)| {
                let (next, stop, done, failure) = (&next, &stop, &done, &failure);
                scope.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= range.end {
                            break;
                        }
                        let name = format!("d{i}");
                        let out = publisher.tpod(bin, &["deploy", manifest, "--name", &name]).and_then(|(_, out)| {
                            Ok(Pod {
                                id: out["pod_id"].as_str().context("no pod id")?.to_owned(),
                                url: out["url"].as_str().context("no url")?.to_owned(),
                                name,
                                publisher: k,
                            })
                        });
                        match out {
                            Ok(pod) => super::lock(done).push(pod),
                            Err(e) => {
                                stop.store(true, Ordering::Relaxed);
                                let mut failure = super::lock(failure);
                                if failure.as_ref().is_none_or(|(j, _)| i < *j) {
                                    *failure = Some((i, e));
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        let mut shown = Instant::now();
        while !workers.iter().all(|w| w.is_finished()) {
            std::thread::sleep(Duration::from_millis(200));
            if shown.elapsed() >= PROGRESS_EVERY {
                shown = Instant::now();
                let rss = super::rss_kib(provider_pid)
                    .map_or_else(|_| "?".to_owned(), |k| format!("{:.1}", k as f64 / 1024.0));
                eprintln!(
                    "density: {} pods deployed, {:.0} s into this batch, provider resident {rss} MiB",
                    super::lock(&done).len(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
    });
    deployed.pods = done.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    deployed.failure = failure.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
}

/// Waits until `tpod status` says every pod is at zero, each publisher asking about its own, at
/// most [`ALL_AT_ZERO_TIMEOUT`]; prints progress every [`PROGRESS_EVERY`]. Returns how many were
/// seen at zero, and the first that was not.
fn all_at_zero(bin: &Path, publishers: &[Publisher], pods: &[Pod]) -> (usize, Option<anyhow::Error>) {
    let deadline = Instant::now() + ALL_AT_ZERO_TIMEOUT;
    let confirmed = AtomicUsize::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let checks: Vec<_> = (0..publishers.len())
            .map(|k| {
                let confirmed = &confirmed;
                scope.spawn(move || {
                    for pod in pods.iter().filter(|p| p.publisher == k) {
                        zero::wait_at_zero(publishers[k].status(bin), Some(&pod.name), deadline, BULK_POLL)?;
                        confirmed.fetch_add(1, Ordering::Relaxed);
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        let mut shown = Instant::now();
        while !checks.iter().all(|c| c.is_finished()) {
            std::thread::sleep(Duration::from_millis(200));
            if shown.elapsed() >= PROGRESS_EVERY {
                shown = Instant::now();
                eprintln!(
                    "density: {} of {} pods seen at zero, {:.0} s after the last deploy",
                    confirmed.load(Ordering::Relaxed),
                    pods.len(),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        let failure = checks
            .into_iter()
            .filter_map(|c| c.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a status check panicked"))).err())
            .next();
        (confirmed.load(Ordering::Relaxed), failure)
    })
}

/// The provider's memory and what the section's pods keep outside it, at one moment.
struct Memory {
    /// The provider daemon's /proc/<pid>/smaps_rollup: Rss, Pss and Anonymous, KiB.
    rss: u64,
    pss: u64,
    anon: u64,
    /// Its threads and open files.
    threads: u64,
    fds: usize,
    /// The pods' memory cgroups, summed (bytes), and how many were readable.
    cgroups: u64,
    cgroups_read: usize,
    /// The tmpfs mounts under the devnet's directory (the pods' rootfs), bytes used, and how many.
    tmpfs: u64,
    tmpfs_mounts: usize,
    /// The machine's /proc/meminfo: Shmem, SUnreclaim and MemAvailable, KiB.
    shmem: u64,
    slab: u64,
    available: u64,
}

impl Memory {
    fn read(pid: u32, dir: &Path, pods: &[Pod]) -> anyhow::Result<Self> {
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
        let meminfo = std::fs::read_to_string("/proc/meminfo")?;
        let (tmpfs, tmpfs_mounts) = tmpfs_used(dir)?;
        let cgroups: Vec<u64> = pods.iter().filter_map(|p| zero::pod_memory(&p.id)).collect();
        Ok(Self {
            rss: kib_field(&rollup, "Rss:")?,
            pss: kib_field(&rollup, "Pss:")?,
            anon: kib_field(&rollup, "Anonymous:")?,
            threads: super::status_kib(pid, "Threads:")?,
            fds: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count(),
            cgroups: cgroups.iter().sum(),
            cgroups_read: cgroups.len(),
            tmpfs,
            tmpfs_mounts,
            shmem: kib_field(&meminfo, "Shmem:")?,
            slab: kib_field(&meminfo, "SUnreclaim:")?,
            available: kib_field(&meminfo, "MemAvailable:")?,
        })
    }
}

/// The number after `field` (a line's start, with its colon) in a /proc file of `name: N kB` lines.
fn kib_field(text: &str, field: &str) -> anyhow::Result<u64> {
    let line = text.lines().find(|l| l.starts_with(field)).with_context(|| format!("no {field}"))?;
    Ok(line.split_whitespace().nth(1).with_context(|| format!("malformed {field}"))?.parse()?)
}

/// Bytes used in the tmpfs mounts below `dir`, and how many there are.
fn tmpfs_used(dir: &Path) -> anyhow::Result<(u64, usize)> {
    let dir = dir.display().to_string();
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    let mut used = 0;
    let mut count = 0;
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [_, point, "tmpfs", ..] = fields[..]
            && point.starts_with(&dir)
        {
            let fs = nix::sys::statvfs::statvfs(point).with_context(|| format!("statvfs {point}"))?;
            used += (fs.blocks() - fs.blocks_free()) * fs.fragment_size();
            count += 1;
        }
    }
    Ok((used, count))
}

/// `tools/leftovers`: what pods and tests leave on the host, one thing a line.
fn leftovers() -> anyhow::Result<BTreeSet<String>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/leftovers");
    let out = std::process::Command::new(&script).output().with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed: {}", script.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect())
}

struct Report<'a> {
    opts: &'a Options,
    /// Pods deployed next to the one woken alone.
    n: usize,
    /// Pods deployed and the time, one at a time and then concurrently.
    serial: (usize, Duration),
    concurrent: (usize, Duration),
    /// How many pods were seen at zero, and when the last was (from the last deploy).
    zero: (usize, Duration),
    /// The provider's CPU, % of a core, with one pod at zero and with all.
    cpu: (f64, f64),
    /// The provider's peak resident memory while the pods deployed.
    peak_kib: u64,
    /// With no pod, with the one pod at zero, with all at zero.
    memory: [Memory; 3],
    /// Wakes: of the pod alone, and of pods among all the others.
    alone: Vec<Duration>,
    among: Vec<Duration>,
}

fn report(r: &Report) {
    let [empty, one, full] = &r.memory;
    let n = r.n.max(1) as f64;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let per = |before: u64, after: u64| (after as f64 - before as f64) / n;
    println!(
        "density: {} pods at zero on one provider (the hello pod, {POD_CPU_MILLIS}m CPU and {POD_MEMORY_MIB} MiB, \
         replicas {{min: 0, idleTimeout: 1s}}; capacity raised to fit {} of them), next to one alone:",
        r.n,
        r.n + 1
    );
    let rate = |(count, time): (usize, Duration)| count as f64 / time.as_secs_f64().max(1e-9);
    println!(
        "  deploys (`tpod deploy`, channel creation included): {} one at a time in {:.1} s ({:.2} s each, {:.2} \
         pods/s); {} with {} publishers at once in {:.1} s ({:.2} pods/s); {} pods seen at zero (`tpod status`) \
         {:.1} s after the last deploy",
        r.serial.0,
        r.serial.1.as_secs_f64(),
        r.serial.1.as_secs_f64() / r.serial.0.max(1) as f64,
        rate(r.serial),
        r.concurrent.0,
        r.opts.jobs,
        r.concurrent.1.as_secs_f64(),
        rate(r.concurrent),
        r.zero.0,
        r.zero.1.as_secs_f64()
    );
    println!(
        "  provider daemon (smaps_rollup), 1 pod at zero -> {} at zero: Rss {:.1} -> {:.1} MiB, Pss {:.1} -> {:.1} \
         MiB, anonymous {:.1} -> {:.1} MiB",
        r.n + 1,
        mib(one.rss),
        mib(full.rss),
        mib(one.pss),
        mib(full.pss),
        mib(one.anon),
        mib(full.anon)
    );
    let rss_per = per(one.rss, full.rss);
    println!(
        "    per pod: Rss {rss_per:.1} KiB, Pss {:.1} KiB, anonymous {:.1} KiB (goal < {GOAL_KIB_PER_POD} KiB: {})",
        per(one.pss, full.pss),
        per(one.anon, full.anon),
        if rss_per < GOAL_KIB_PER_POD { "met" } else { "NOT met" }
    );
    println!(
        "    with no pod: Rss {:.1} MiB, Pss {:.1} MiB; peak resident while deploying {:.1} MiB; threads {} -> {}, \
         open files {} -> {}",
        mib(empty.rss),
        mib(empty.pss),
        mib(r.peak_kib),
        one.threads,
        full.threads,
        one.fds,
        full.fds
    );
    println!(
        "    CPU over {} s (metering every pod each second, a claim round each minute): {:.2} % of a core with 1 pod \
         at zero, {:.2} % with {} at zero",
        CPU_WINDOW.as_secs(),
        r.cpu.0,
        r.cpu.1,
        r.n + 1
    );
    println!(
        "  kept by the pods at zero, outside the provider: their memory cgroups {:.1} MiB ({:.0} KiB per pod, {} \
         read), their rootfs tmpfs {:.1} MiB used ({:.0} KiB per pod, {} mounts)",
        full.cgroups as f64 / 1048576.0,
        full.cgroups as f64 / 1024.0 / full.cgroups_read.max(1) as f64,
        full.cgroups_read,
        full.tmpfs as f64 / 1048576.0,
        full.tmpfs as f64 / 1024.0 / full.tmpfs_mounts.max(1) as f64,
        full.tmpfs_mounts
    );
    println!(
        "    the whole machine, 1 -> {} pods (other processes move these too): Shmem +{:.0} KiB per pod, \
         unreclaimable slab +{:.0} KiB per pod, MemAvailable -{:.0} KiB per pod",
        r.n + 1,
        per(one.shmem, full.shmem),
        per(one.slab, full.slab),
        -per(one.available, full.available)
    );
    let mut alone = r.alone.clone();
    let mut among = r.among.clone();
    alone.sort();
    among.sort();
    print!(
        "  wake to first byte: the pod alone, {} wakes: p50 {:.1} ms, p99 {:.1} ms",
        alone.len(),
        quantile_ms(&alone, 0.5),
        quantile_ms(&alone, 0.99)
    );
    if among.is_empty() {
        println!();
    } else {
        println!(
            "; {} different pods among {}: p50 {:.1} ms, p99 {:.1} ms; ratio p50 {:.2}, p99 {:.2} (goal p50 <= {} ms)",
            among.len(),
            r.n + 1,
            quantile_ms(&among, 0.5),
            quantile_ms(&among, 0.99),
            quantile_ms(&among, 0.5) / quantile_ms(&alone, 0.5),
            quantile_ms(&among, 0.99) / quantile_ms(&alone, 0.99),
            crate::wake::GOAL_P50_MS
        );
    }
}
