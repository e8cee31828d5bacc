//! What the `wake`, `density` and `replicas` sections share: a devnet of their own whose
//! provider lets pods idle for a second, the hello pod made to scale to zero, waiting until a pod
//! is at zero, and the GET whose first byte they time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Provider configuration the sections merge over the devnet's: pods may ask to idle only 1 s.
pub const SCALING: &str = "[scaling]\nmin_idle_timeout_secs = 1\n";

/// How long a pod may take to reach zero after its last request, when nothing else is waited for.
pub const AT_ZERO_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `tpod status` asks while one waits for one pod.
pub const AT_ZERO_POLL: Duration = Duration::from_millis(100);

/// A devnet of its own in a temporary directory, on its own bridge and subnet, for pods that
/// scale to zero. Nothing runs until [`ZeroDevnet::up`]; [`ZeroDevnet::down`] stops it and
/// removes its pods (the provider's purge) and its bridge.
pub struct ZeroDevnet {
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    anvil: PathBuf,
    bridge: &'static str,
    subnet: &'static str,
    /// The hello pod with `replicas: {min: 0, idleTimeout: 1s}`.
    pub manifest: PathBuf,
}

impl ZeroDevnet {
    /// Prepares the devnet's directory and the scaled hello pod from `hello` (see
    /// [`super::hello`]).
    pub fn new(
        bin: &Path,
        anvil: &Path,
        hello: &Path,
        bridge: &'static str,
        subnet: &'static str,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let manifest = dir.path().join("tpod.yaml");
        // The hello pod as the example has it (100m): the deploy section's 10m quota (1 ms of
        // CPU per 100 ms period) would throttle the program's start and its answers by up to
        // 100 ms.
        let yaml = std::fs::read_to_string(hello)?
            .replace("cpu: 10m", "cpu: 100m")
            .replace("memory: 16Mi", "memory: 64Mi")
            .replace("replicas:\n  min: 1\n  max: 1\n", "replicas:\n  min: 0\n  max: 1\n  idleTimeout: 1s\n");
        std::fs::write(&manifest, yaml)?;
        let image = hello.parent().context("manifest directory")?.join("image");
        std::os::unix::fs::symlink(&image, dir.path().join("image"))?;
        Ok(Self { dir, bin: bin.to_owned(), anvil: anvil.to_owned(), bridge, subnet, manifest })
    }

    /// `tpod dev up` with `config` merged over the provider's configuration; its JSON.
    pub fn up(&self, config: &str) -> anyhow::Result<serde_json::Value> {
        let file = self.dir.path().join("provider-extra.toml");
        std::fs::write(&file, config)?;
        self.tpod(&[
            "dev",
            "up",
            "--port",
            "0",
            "--anvil",
            self.anvil.to_str().context("anvil path")?,
            "--ingress-port",
            "0",
            "--bridge",
            self.bridge,
            "--subnet",
            self.subnet,
            "--provider-config",
            file.to_str().context("config path")?,
        ])
    }

    /// `tpod dev down`: the provider stops, its pods and bridge go, anvil stops.
    pub fn down(&self) -> anyhow::Result<()> {
        self.tpod(&["dev", "down"]).map(drop)
    }

    /// `tpod --devnet-dir <its dir> --json args`.
    pub fn tpod(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        super::tpod_json(&self.bin, self.dir.path(), args).map(|(_, json)| json)
    }

    pub fn manifest(&self) -> anyhow::Result<&str> {
        self.manifest.to_str().context("manifest path")
    }
}

/// Waits until `tpod status [name]` says the pod is at zero, asking every `poll`, until
/// `deadline`.
pub fn wait_at_zero(
    tpod: impl Fn(&[&str]) -> anyhow::Result<serde_json::Value>,
    name: Option<&str>,
    deadline: Instant,
    poll: Duration,
) -> anyhow::Result<()> {
    let mut args = vec!["status"];
    args.extend(name);
    let started = Instant::now();
    loop {
        let state = tpod(&args)?["state"].clone();
        if state == "scaled-to-zero" {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} was not at zero after {:.0} s more (state {state})",
                name.unwrap_or("the pod"),
                started.elapsed().as_secs_f64()
            );
        }
        std::thread::sleep(poll);
    }
}

/// GET / on a fresh connection: the time to the status line.
pub fn first_byte(url: &str) -> anyhow::Result<Duration> {
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
pub fn pod_memory(pod: &str) -> Option<u64> {
    let prefix = pod.trim_start_matches("0x").get(..12)?;
    ["/sys/fs/cgroup/memory/tpod/{}/memory.usage_in_bytes", "/sys/fs/cgroup/unified/tpod/{}/memory.current"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p.replace("{}", prefix)).ok())
        .and_then(|v| v.trim().parse().ok())
}

/// The `p` quantile (0 to 1) of `sorted` (not empty), in milliseconds.
pub fn quantile_ms(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).saturating_sub(1).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}
