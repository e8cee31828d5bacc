//! The devnet's local provider: `tpod dev up` writes its configuration (the devnet's chain and
//! provider account, a simulated enclave) and starts `tpod-provider` detached; `tpod dev down`
//! stops it and removes its pods. Its files live in `<devnet dir>/provider/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use tpod_devnet::DevnetFile;

/// How `tpod dev up` sets up the local provider.
#[derive(Debug, Clone, Args)]
pub struct ProviderOptions {
    /// Port of the provider's HTTP ingress on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080, env = "TPOD_DEV_INGRESS_PORT")]
    pub ingress_port: u16,
    /// Linux bridge the provider's pods are attached to.
    #[arg(long, default_value = "tpod0", env = "TPOD_DEV_BRIDGE")]
    pub bridge: String,
    /// IPv4 subnet of the provider's pods.
    #[arg(long, default_value = "10.89.0.0/16", env = "TPOD_DEV_SUBNET")]
    pub subnet: String,
    /// The provider binary (default: `tpod-provider` next to `tpod`).
    #[arg(long, value_name = "PATH", env = "TPOD_PROVIDER_BIN")]
    pub provider_bin: Option<PathBuf>,
    /// A TOML file merged over the generated provider configuration, e.g. to change prices,
    /// terms or billing intervals: tables merge key by key, other values (arrays too) replace.
    #[arg(long, value_name = "FILE", env = "TPOD_DEV_PROVIDER_CONFIG")]
    pub provider_config: Option<PathBuf>,
}

/// What the provider publishes about itself (its `provider.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// libp2p peer id.
    pub peer_id: String,
    /// libp2p address.
    pub multiaddr: String,
    /// HTTP ingress address.
    pub ingress: String,
    /// Ingress domain.
    pub domain: String,
    /// Payment address.
    pub provider_address: String,
    /// Enclave signer.
    pub enclave_signer: String,
    /// Process id.
    pub pid: u32,
}

fn provider_dir(dir: &Path) -> PathBuf {
    dir.join("provider")
}

/// The provider's data directory.
pub fn data_dir(dir: &Path) -> PathBuf {
    provider_dir(dir).join("data")
}

fn config_path(dir: &Path) -> PathBuf {
    provider_dir(dir).join("provider.toml")
}

/// Reads the running provider's info.
pub fn info(dir: &Path) -> anyhow::Result<ProviderInfo> {
    let path = crate::dev::provider_info_path(dir);
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not provider info", path.display()))
}

/// The provider's info, if it is running.
pub fn running(dir: &Path) -> Option<ProviderInfo> {
    info(dir).ok().filter(|i| is_provider(i.pid))
}

/// Whether `pid` is a live provider process.
pub fn is_provider(pid: u32) -> bool {
    tpod_devnet::anvil::is_live_process(pid, "tpod-provider")
}

fn provider_bin(opts: &ProviderOptions) -> anyhow::Result<PathBuf> {
    if let Some(bin) = &opts.provider_bin {
        return Ok(bin.clone());
    }
    let exe = std::env::current_exe().context("cannot find the tpod binary's directory")?;
    let bin = exe.with_file_name("tpod-provider");
    if !bin.exists() {
        bail!("{} not found; build the workspace (cargo build --workspace) or pass --provider-bin", bin.display());
    }
    Ok(bin)
}

/// Starts the provider unless it runs; returns whether it was started.
pub async fn ensure_running(dir: &Path, devnet: &DevnetFile, opts: &ProviderOptions) -> anyhow::Result<bool> {
    if running(dir).is_some() {
        return Ok(false);
    }
    let bin = provider_bin(opts)?;
    let pdir = provider_dir(dir);
    std::fs::create_dir_all(&pdir).with_context(|| format!("cannot create {}", pdir.display()))?;
    let key_path = pdir.join("provider.key");
    // Rewritten every start: a new devnet has new accounts.
    let _ = std::fs::remove_file(&key_path);
    let key = devnet.account("provider")?.signer()?;
    write_private(&key_path, &format!("0x{}\n", alloy::hex::encode(key.to_bytes())))?;
    let cpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let config = format!(
        r#"# The devnet's provider, written by `tpod dev up`.
data_dir = "data"
listen = "/ip4/127.0.0.1/tcp/0"

[chain]
rpc_url = "{rpc}"
payment = "{payment}"
registry = "{registry}"
key_file = "provider.key"

[ingress]
http = "127.0.0.1:{ingress_port}"
domain = "pods.localhost"
tcp_bind = "127.0.0.1"

[capacity]
cpu = "{cpu}"
memory = "8Gi"
storage = "20Gi"

[terms]
# 0.01 TPT, and a minute to make a final claim after an unlock request.
min_funding = "10000000000000000"
min_unlock_delay_secs = 60

# Token base units per second: cpu per millicore, memory per MiB.
[[pricing]]
resource = "cpu"
reservation = "1000000000"
usage = "2000000000"

[[pricing]]
resource = "memory"
reservation = "100000000"
usage = "0"

[runtime]
bridge = "{bridge}"
subnet = "{subnet}"
log_cap = "8Mi"

[billing]
# Meter every second; claim every minute, or on delete, unlock and pause.
sample_interval_secs = 1
claim_interval_secs = 60
grace_secs = 60

[attestation]
# No TEE on a development machine: the devnet's own root key signs the evidence, which
# publishers accept only with the devnet's policy or --allow-simulated-tee.
tee = "simulated"
simulated_root_key = "{root_key}"
"#,
        rpc = devnet.rpc_url,
        payment = devnet.contracts.payment,
        registry = devnet.contracts.registry,
        ingress_port = opts.ingress_port,
        bridge = opts.bridge,
        subnet = opts.subnet,
        root_key = SIMULATED_ROOT_KEY,
    );
    let config = match &opts.provider_config {
        Some(path) => merge_config(&config, path)?,
        None => config,
    };
    let config_file = config_path(dir);
    std::fs::write(&config_file, config).with_context(|| format!("cannot write {}", config_file.display()))?;
    write_policy(dir, &pdir, &bin)?;

    let info_path = crate::dev::provider_info_path(dir);
    let _ = std::fs::remove_file(&info_path);
    let log_path = pdir.join("provider.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let log2 = log.try_clone().context("cannot share the provider log")?;
    use std::os::unix::process::CommandExt as _;
    let mut child = std::process::Command::new(&bin)
        .arg("--config")
        .arg(&config_file)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        // Its own process group: the provider outlives this command and its terminal.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(info) = info(dir)
            && info.pid == child.id()
        {
            return Ok(true);
        }
        if let Some(status) = child.try_wait().context("waiting for the provider")? {
            bail!("the provider exited ({status}) while starting:\n{}", tail(&log_path));
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            bail!("the provider did not become ready within 60 s:\n{}", tail(&log_path));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The simulated TEE root's key file, in the provider's directory.
const SIMULATED_ROOT_KEY: &str = "simulated-tee-root.key";

/// Where the devnet's attestation policy is.
pub fn policy_path(dir: &Path) -> PathBuf {
    dir.join("policy.toml")
}

/// Writes the devnet's attestation policy: its provider binary, its simulated TEE root (created
/// here, so the policy can pin it before the provider starts).
fn write_policy(dir: &Path, pdir: &Path, bin: &Path) -> anyhow::Result<()> {
    use tpod_attestation::{Digest, Policy, SimulatedRoot, TeeKind, binding::sha256_file, policy::SimulatedPolicy};
    let root = SimulatedRoot::load_or_generate(&pdir.join(SIMULATED_ROOT_KEY))?;
    let binary = sha256_file(bin).with_context(|| format!("cannot read {}", bin.display()))?;
    let policy = Policy {
        tee: [TeeKind::Simulated].into(),
        provider_binaries: [Digest(binary)].into(),
        provider_configs: Default::default(),
        snp: Default::default(),
        tdx: Default::default(),
        simulated: Some(SimulatedPolicy { root: root.public_hex() }),
    };
    let text = format!(
        "# The devnet's attestation policy, written by `tpod dev up`: its provider build and its\n\
         # simulated TEE root. A simulated TEE proves nothing about a machine; never trust it elsewhere.\n{}",
        policy.to_toml()
    );
    let path = policy_path(dir);
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Stops the provider (its pods keep running until [`purge`]).
pub async fn stop(dir: &Path) -> anyhow::Result<()> {
    let Some(info) = running(dir) else { return Ok(()) };
    let pid = nix::unistd::Pid::from_raw(i32::try_from(info.pid).context("provider pid out of range")?);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    for _ in 0..100 {
        if !is_provider(info.pid) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    Ok(())
}

/// Removes every pod of a stopped provider, and its state.
pub fn purge(dir: &Path) -> anyhow::Result<()> {
    let config = config_path(dir);
    if !config.exists() || !data_dir(dir).exists() {
        return Ok(());
    }
    if running(dir).is_some() {
        bail!("the provider still runs; stop it first");
    }
    let bin = provider_bin(&ProviderOptions {
        ingress_port: 0,
        bridge: String::new(),
        subnet: String::new(),
        provider_bin: std::env::var_os("TPOD_PROVIDER_BIN").map(PathBuf::from),
        provider_config: None,
    })?;
    let out = std::process::Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .arg("--purge")
        .output()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if !out.status.success() {
        bail!("{} --purge failed: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    }
    std::fs::remove_dir_all(data_dir(dir)).with_context(|| format!("cannot remove {}", data_dir(dir).display()))
}

/// `base` with the TOML file at `overrides` merged over it.
fn merge_config(base: &str, overrides: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(overrides).with_context(|| format!("cannot read {}", overrides.display()))?;
    let over: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", overrides.display()))?;
    let mut merged: toml::Table = toml::from_str(base).context("the generated provider config is not valid TOML")?;
    merge(&mut merged, over);
    let text = toml::to_string(&merged).context("cannot write the merged provider config")?;
    Ok(format!("# The devnet's provider, written by `tpod dev up`, with {} merged in.\n{text}", overrides.display()))
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// The last lines of a log, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
