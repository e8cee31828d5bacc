//! The devnet's local providers: `tpod dev up` writes each one's configuration (the devnet's
//! chain, its own provider account, a simulated enclave, its own ports, bridge, subnet, prices
//! and region) and starts `tpod-provider` detached; `tpod dev down` stops them, removes their
//! pods and the bridges they made.
//!
//! Provider 1 lives in `<devnet dir>/provider/` (where a one-provider devnet always kept it, so
//! `provider/data/provider.json` still names it), provider `i` in `provider-<i>/`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};
use tpod_devnet::{DevnetFile, MAX_PROVIDERS};

/// Linux's limit on interface names (IFNAMSIZ less the terminating NUL).
const MAX_IFNAME: usize = 15;

/// With more than one provider, the subnet is cut into this many equal parts, one per provider
/// (as many as [`MAX_PROVIDERS`]), so no provider's pods can reach into another's range.
const SUBNET_PARTS_BITS: u8 = 3;

/// How `tpod dev up` sets up the local providers.
#[derive(Debug, Clone, Default, Args)]
pub struct ProviderOptions {
    /// How many providers to run, 1 to 8 (default: 1, or as many as a running devnet has).
    /// Provider i (from 1) gets its own account (`provider`, then `provider-<i>`), files
    /// (`provider/`, then `provider-<i>/`), libp2p port, ingress port (--ingress-port + i - 1;
    /// with 0 each a free one), bridge (`<bridge>`, then `<bridge>-<i>`) and subnet (with more
    /// than one provider, the i-th eighth of --subnet), region `local-a`, `local-b`, ... and
    /// prices (i+1)/2 times the first one's: ×1, ×1.5, ×2, ...
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_PROVIDERS)))]
    pub providers: Option<u8>,
    /// Port of the (first) provider's HTTP ingress on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080, env = "TPOD_DEV_INGRESS_PORT")]
    pub ingress_port: u16,
    /// Linux bridge the (first) provider's pods are attached to; at most 15 characters with the
    /// `-<i>` of other providers.
    #[arg(long, default_value = "tpod0", env = "TPOD_DEV_BRIDGE")]
    pub bridge: String,
    /// IPv4 subnet of the providers' pods (split in eighths among several providers; at most a
    /// /25 then). `dev up` refuses a subnet that overlaps a route of another interface.
    #[arg(long, default_value = "10.89.0.0/16", env = "TPOD_DEV_SUBNET")]
    pub subnet: String,
    /// The provider binary (default: `tpod-provider` next to `tpod`).
    #[arg(long, value_name = "PATH", env = "TPOD_PROVIDER_BIN")]
    pub provider_bin: Option<PathBuf>,
    /// A TOML file merged over every provider's generated configuration, e.g. to change prices,
    /// terms or billing intervals: tables merge key by key, other values (arrays too, so
    /// `[[pricing]]` gives every provider the same prices) replace.
    #[arg(long, value_name = "FILE", env = "TPOD_DEV_PROVIDER_CONFIG")]
    pub provider_config: Option<PathBuf>,
}

/// What a provider publishes about itself (its `provider.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// One of the devnet's providers as configured on disk, and whether it runs.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    /// 1-based.
    pub index: u8,
    /// Its files.
    pub dir: PathBuf,
    /// The region it advertises.
    pub region: Option<String>,
    /// Its pods' bridge.
    pub bridge: Option<String>,
    /// Its pods' subnet.
    pub subnet: Option<String>,
    /// Whether its process is alive.
    pub running: bool,
    /// What it last published (its `provider.json`), if anything.
    #[serde(flatten)]
    pub info: Option<ProviderInfo>,
}

/// Provider `index`'s directory.
pub fn provider_dir_of(dir: &Path, index: u8) -> PathBuf {
    if index <= 1 { dir.join("provider") } else { dir.join(format!("provider-{index}")) }
}

/// Provider `index`'s data directory.
pub fn data_dir_of(dir: &Path, index: u8) -> PathBuf {
    provider_dir_of(dir, index).join("data")
}

/// The first provider's data directory.
pub fn data_dir(dir: &Path) -> PathBuf {
    data_dir_of(dir, 1)
}

fn config_path(dir: &Path, index: u8) -> PathBuf {
    provider_dir_of(dir, index).join("provider.toml")
}

/// Reads what provider `index` last published.
pub fn info_of(dir: &Path, index: u8) -> anyhow::Result<ProviderInfo> {
    let path = data_dir_of(dir, index).join("provider.json");
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not provider info", path.display()))
}

/// Reads the first provider's info.
pub fn info(dir: &Path) -> anyhow::Result<ProviderInfo> {
    info_of(dir, 1)
}

/// The first provider's info, if it is running.
pub fn running(dir: &Path) -> Option<ProviderInfo> {
    running_of(dir, 1)
}

fn running_of(dir: &Path, index: u8) -> Option<ProviderInfo> {
    info_of(dir, index).ok().filter(|i| is_provider(i.pid))
}

/// Every running devnet provider, in order (provider 1 first).
pub fn all_running(dir: &Path) -> Vec<ProviderInfo> {
    configured(dir).into_iter().filter_map(|index| running_of(dir, index)).collect()
}

/// What the devnet provider with `peer_id` last published, running or not: its current address
/// after a restart.
pub fn find(dir: &Path, peer_id: &str) -> Option<ProviderInfo> {
    configured(dir).into_iter().filter_map(|index| info_of(dir, index).ok()).find(|i| i.peer_id == peer_id)
}

/// Whether `peer_id` is one of the devnet's providers (so the devnet's policy applies to it).
pub fn is_devnet_provider(dir: &Path, peer_id: &str) -> bool {
    find(dir, peer_id).is_some()
}

/// The indices of the providers that have a configuration in `dir`, from earlier `dev up`s too.
fn configured(dir: &Path) -> Vec<u8> {
    (1..=MAX_PROVIDERS).filter(|&index| config_path(dir, index).exists()).collect()
}

/// The first `count` providers as they are on disk.
pub fn members(dir: &Path, count: u8) -> Vec<Member> {
    (1..=count)
        .map(|index| {
            let config = std::fs::read_to_string(config_path(dir, index))
                .ok()
                .and_then(|text| toml::from_str::<toml::Table>(&text).ok());
            let get = |table: &str, key: &str| config.as_ref()?.get(table)?.get(key)?.as_str().map(str::to_owned);
            let info = info_of(dir, index).ok();
            Member {
                index,
                dir: provider_dir_of(dir, index),
                region: get("profile", "region"),
                bridge: get("runtime", "bridge"),
                subnet: get("runtime", "subnet"),
                running: info.as_ref().is_some_and(|i| is_provider(i.pid)),
                info,
            }
        })
        .collect()
}

/// Whether `pid` is a live provider process.
pub fn is_provider(pid: u32) -> bool {
    tpod_devnet::anvil::is_live_process(pid, "tpod-provider")
}

fn provider_bin(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(bin) = explicit {
        return Ok(bin.to_owned());
    }
    let exe = std::env::current_exe().context("cannot find the tpod binary's directory")?;
    let bin = exe.with_file_name("tpod-provider");
    if !bin.exists() {
        bail!("{} not found; build the workspace (cargo build --workspace) or pass --provider-bin", bin.display());
    }
    Ok(bin)
}

/// How `dev up` sets up provider `index`. It follows from the options alone, so every `dev up`
/// gives a provider the same ports, bridge, subnet, prices and region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// 1-based.
    pub index: u8,
    /// Its ingress port on 127.0.0.1 (0: a free one).
    pub ingress_port: u16,
    /// Its pods' bridge.
    pub bridge: String,
    /// Its pods' subnet.
    pub subnet: (Ipv4Addr, u8),
    /// The region it advertises.
    pub region: String,
    /// Its prices in halves of the first provider's (2 for the first).
    pub price_halves: u64,
}

impl Slot {
    fn subnet_text(&self) -> String {
        format!("{}/{}", self.subnet.0, self.subnet.1)
    }
}

/// The setup of `count` providers under `opts`, or why it cannot be done.
pub fn plan(opts: &ProviderOptions, count: u8) -> anyhow::Result<Vec<Slot>> {
    if !(1..=MAX_PROVIDERS).contains(&count) {
        bail!("a devnet runs 1 to {MAX_PROVIDERS} providers, not {count}");
    }
    let (network, len) = parse_subnet(&opts.subnet)?;
    if count > 1 && len + SUBNET_PARTS_BITS > 28 {
        bail!(
            "--subnet {} is too small for {count} providers: each gets an eighth of it, and pods need at \
             least a /28; give a /25 or larger",
            opts.subnet
        );
    }
    (1..=count)
        .map(|index| {
            let i = index - 1;
            let bridge = if index == 1 { opts.bridge.clone() } else { format!("{}-{index}", opts.bridge) };
            if bridge.is_empty() || bridge.len() > MAX_IFNAME || bridge.contains(['/', ' ']) {
                bail!(
                    "bridge name {bridge:?} of provider {index} is not a Linux interface name (1 to \
                     {MAX_IFNAME} characters, no '/' or space); pick a shorter --bridge"
                );
            }
            let subnet = if count == 1 {
                (network, len)
            } else {
                let part_len = len + SUBNET_PARTS_BITS;
                let offset = u32::from(i) << (32 - u32::from(part_len));
                (Ipv4Addr::from(u32::from(network) + offset), part_len)
            };
            let ingress_port = match opts.ingress_port {
                0 => 0,
                base => base.checked_add(u16::from(i)).with_context(|| {
                    format!("--ingress-port {base} leaves no port for provider {index}; pick a lower one")
                })?,
            };
            Ok(Slot {
                index,
                ingress_port,
                bridge,
                subnet,
                region: format!("local-{}", char::from(b'a' + i)),
                price_halves: u64::from(index) + 1,
            })
        })
        .collect()
}

/// An IPv4 network `a.b.c.d/len` whose host bits are clear, with a length the provider accepts.
fn parse_subnet(text: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    let (network, len) = parse_cidr(text)
        .filter(|_| text.contains('/'))
        .with_context(|| format!("--subnet {text:?} is not an IPv4 subnet such as 10.89.0.0/16"))?;
    if !(8..=28).contains(&len) {
        bail!("--subnet {text}: the prefix length must be between /8 and /28");
    }
    let masked = Ipv4Addr::from(u32::from(network) & mask(len));
    if masked != network {
        bail!("--subnet {text} has host bits set; did you mean {masked}/{len}?");
    }
    Ok((network, len))
}

/// `a.b.c.d/len`, or `a.b.c.d` as a /32.
fn parse_cidr(text: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = text.split_once('/').unwrap_or((text, "32"));
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((ip.parse().ok()?, len))
}

fn mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let m = mask(a.1.min(b.1));
    u32::from(a.0) & m == u32::from(b.0) & m
}

/// Refuses a subnet that a route of another interface already covers: pods on it would be
/// unreachable, or would reach that network instead, without any error to say so (a leftover
/// bridge of an earlier setup is the usual cause).
fn check_routes(slot: &Slot) -> anyhow::Result<()> {
    // Without iproute2 the provider cannot make its bridge either, and says so itself.
    let Ok(out) = std::process::Command::new("ip").args(["-4", "route", "show"]).output() else {
        return Ok(());
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut words = line.split_whitespace();
        let Some(route) = words.next().and_then(parse_cidr) else { continue };
        let dev = words.skip_while(|w| *w != "dev").nth(1).unwrap_or("?");
        if dev != slot.bridge && overlaps(route, slot.subnet) {
            bail!(
                "the subnet {} of provider {} overlaps the route {}/{} on {dev}: pick another --subnet, or \
                 remove {dev} if it is a leftover bridge (`ip link del {dev}`)",
                slot.subnet_text(),
                slot.index,
                route.0,
                route.1,
            );
        }
    }
    Ok(())
}

/// Provider `slot`'s configuration as generated, before `--provider-config` is merged in.
fn config_text(devnet: &DevnetFile, slot: &Slot) -> String {
    let cpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Every provider is attested with the devnet's one simulated root, kept in provider 1's
    // directory, so one devnet policy accepts them all.
    let root_key =
        if slot.index == 1 { SIMULATED_ROOT_KEY.to_owned() } else { format!("../provider/{SIMULATED_ROOT_KEY}") };
    let price = |base: u64| (u128::from(base) * u128::from(slot.price_halves) / 2).to_string();
    format!(
        r#"# The devnet's provider {index}, written by `tpod dev up`.
data_dir = "data"
listen = "/ip4/127.0.0.1/tcp/0"

[chain]
rpc_url = "{rpc}"
payment = "{payment}"
registry = "{registry}"
key_file = "provider.key"
# Known in advance, so the provider starts (and serves) while anvil does not answer.
chain_id = {chain_id}
token = "{token}"

# What it lists in the Registry, where it registers itself at start.
[profile]
region = "{region}"
contact = "provider-{index}@devnet.localhost"

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

# Token base units per second: cpu per millicore, memory per MiB. Provider i charges (i+1)/2
# times the first provider's prices.
[[pricing]]
resource = "cpu"
reservation = "{cpu_reservation}"
usage = "{cpu_usage}"

[[pricing]]
resource = "memory"
reservation = "{memory_reservation}"
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

[scaling]
# Pods with replicas.min 0 may ask to be scaled to zero after as little as 5 s without a request.
min_idle_timeout_secs = 5

[attestation]
# No TEE on a development machine: the devnet's own root key signs the evidence, which
# publishers accept only with the devnet's policy or --allow-simulated-tee.
tee = "simulated"
simulated_root_key = "{root_key}"
"#,
        index = slot.index,
        region = slot.region,
        rpc = devnet.rpc_url,
        payment = devnet.contracts.payment,
        registry = devnet.contracts.registry,
        chain_id = devnet.chain_id,
        token = devnet.contracts.token,
        ingress_port = slot.ingress_port,
        cpu_reservation = price(1_000_000_000),
        cpu_usage = price(2_000_000_000),
        memory_reservation = price(100_000_000),
        bridge = slot.bridge,
        subnet = slot.subnet_text(),
    )
}

/// Starts each of the first `count` providers that is not running. Returns them with whether
/// each was started.
pub async fn ensure_all(
    dir: &Path,
    devnet: &DevnetFile,
    opts: &ProviderOptions,
    count: u8,
) -> anyhow::Result<Vec<(Member, bool)>> {
    let slots = plan(opts, count)?;
    let stopped: Vec<&Slot> = slots.iter().filter(|s| running_of(dir, s.index).is_none()).collect();
    if !stopped.is_empty() {
        // Everything is checked before anything starts.
        let bin = provider_bin(opts.provider_bin.as_deref())?;
        for slot in &stopped {
            check_routes(slot)?;
        }
        let first = provider_dir_of(dir, 1);
        std::fs::create_dir_all(&first).with_context(|| format!("cannot create {}", first.display()))?;
        write_policy(dir, &first, &bin)?;
        let mut starting = Vec::new();
        for slot in &stopped {
            let started = start(dir, devnet, opts, slot, &bin);
            match started {
                Ok(child) => starting.push((slot.index, child)),
                Err(e) => {
                    kill_all(starting);
                    return Err(e);
                }
            }
        }
        // They start side by side: registration on chain takes each a few blocks.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            starting.retain(|(index, child)| !info_of(dir, *index).is_ok_and(|info| info.pid == child.id()));
            if starting.is_empty() {
                break;
            }
            let mut failed = None;
            for (index, child) in &mut starting {
                if let Some(status) = child.try_wait().context("waiting for a provider")? {
                    failed = Some((*index, format!("exited ({status}) while starting")));
                    break;
                }
            }
            if failed.is_none() && tokio::time::Instant::now() > deadline {
                failed = Some((starting[0].0, "did not become ready within 60 s".to_owned()));
            }
            if let Some((index, what)) = failed {
                kill_all(starting);
                let log = provider_dir_of(dir, index).join("provider.log");
                bail!("provider {index} {what}:\n{}", tail(&log));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let was_stopped: Vec<u8> = stopped.iter().map(|s| s.index).collect();
    wait_listed(dir, devnet, &was_stopped).await?;
    Ok(members(dir, count)
        .into_iter()
        .map(|m| {
            let started = was_stopped.contains(&m.index);
            (m, started)
        })
        .collect())
}

/// Waits until each of the providers `indices` that registers (`[chain] register`, true unless
/// `--provider-config` turns it off) is listed in the Registry: a profile and a subscribed
/// pricing table. Providers register in the background once they serve; waiting here means the
/// market is complete when `dev up` returns.
async fn wait_listed(dir: &Path, devnet: &DevnetFile, indices: &[u8]) -> anyhow::Result<()> {
    let mut pending = Vec::new();
    for &index in indices {
        if !registers(dir, index) {
            continue;
        }
        let info = info_of(dir, index)?;
        let address: alloy::primitives::Address = info
            .provider_address
            .parse()
            .with_context(|| format!("provider {index} published a malformed address {:?}", info.provider_address))?;
        pending.push((index, address));
    }
    if pending.is_empty() {
        return Ok(());
    }
    let contracts = tpod_chain::ContractAddresses {
        payment: devnet.contracts.payment,
        registry: devnet.contracts.registry,
        token: devnet.contracts.token,
    };
    let chain =
        tpod_chain::Chain::connect(&devnet.rpc_url, alloy::signers::local::PrivateKeySigner::random(), contracts)
            .await
            .with_context(|| format!("cannot reach the devnet chain at {}", devnet.rpc_url))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut still = Vec::new();
        for (index, address) in pending {
            let profile = chain.profile_of(address).await.context("reading the Registry")?;
            let listed =
                profile.is_some() && !chain.subscriptions_of(address).await.context("reading the Registry")?.is_empty();
            if !listed {
                still.push((index, address));
            }
        }
        pending = still;
        let Some((index, _)) = pending.first() else { return Ok(()) };
        if tokio::time::Instant::now() > deadline {
            let log = provider_dir_of(dir, *index).join("provider.log");
            bail!("provider {index} did not list itself in the Registry within 60 s:\n{}", tail(&log));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether provider `index`'s configuration (merged overrides included) has it register.
fn registers(dir: &Path, index: u8) -> bool {
    std::fs::read_to_string(config_path(dir, index))
        .ok()
        .and_then(|text| toml::from_str::<toml::Table>(&text).ok())
        .and_then(|t| t.get("chain")?.get("register")?.as_bool())
        .unwrap_or(true)
}

fn kill_all(children: Vec<(u8, std::process::Child)>) {
    for (_, mut child) in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Writes provider `slot`'s key and configuration and starts it.
fn start(
    dir: &Path,
    devnet: &DevnetFile,
    opts: &ProviderOptions,
    slot: &Slot,
    bin: &Path,
) -> anyhow::Result<std::process::Child> {
    let pdir = provider_dir_of(dir, slot.index);
    std::fs::create_dir_all(&pdir).with_context(|| format!("cannot create {}", pdir.display()))?;
    let key_path = pdir.join("provider.key");
    // Rewritten every start: a new devnet has new accounts.
    let _ = std::fs::remove_file(&key_path);
    let key = devnet.account(&tpod_devnet::provider_account_name(slot.index))?.signer()?;
    write_private(&key_path, &format!("0x{}\n", alloy::hex::encode(key.to_bytes())))?;
    let config = config_text(devnet, slot);
    let config = match &opts.provider_config {
        Some(path) => merge_config(&config, path)?,
        None => config,
    };
    let config_file = config_path(dir, slot.index);
    std::fs::write(&config_file, config).with_context(|| format!("cannot write {}", config_file.display()))?;

    let _ = std::fs::remove_file(data_dir_of(dir, slot.index).join("provider.json"));
    let log_path = pdir.join("provider.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let log2 = log.try_clone().context("cannot share the provider log")?;
    use std::os::unix::process::CommandExt as _;
    std::process::Command::new(bin)
        .arg("--config")
        .arg(&config_file)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        // Its own process group: the provider outlives this command and its terminal.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))
}

/// The simulated TEE root's key file, in the first provider's directory.
const SIMULATED_ROOT_KEY: &str = "simulated-tee-root.key";

/// Where the devnet's attestation policy is.
pub fn policy_path(dir: &Path) -> PathBuf {
    dir.join("policy.toml")
}

/// Writes the devnet's attestation policy: its provider binary, its simulated TEE root (created
/// here, so the policy can pin it before the providers start).
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

/// Stops every provider configured in `dir`, side by side (their pods keep running until
/// [`purge_all`]).
pub async fn stop_all(dir: &Path) -> anyhow::Result<()> {
    let mut pids = Vec::new();
    for info in configured(dir).into_iter().filter_map(|index| running_of(dir, index)) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(info.pid).context("provider pid out of range")?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        pids.push((info.pid, pid));
    }
    for _ in 0..100 {
        pids.retain(|(raw, _)| is_provider(*raw));
        if pids.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (_, pid) in pids {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    }
    Ok(())
}

/// Removes every pod of every (stopped) provider configured in `dir`, their state, and the
/// bridges they made; with `keep` given, the directories of providers past it go too.
pub fn purge_all(dir: &Path, provider_bin_path: Option<&Path>, keep: Option<u8>) -> anyhow::Result<()> {
    for index in configured(dir) {
        purge(dir, index, provider_bin_path)?;
        if keep.is_some_and(|keep| index > keep) {
            let pdir = provider_dir_of(dir, index);
            std::fs::remove_dir_all(&pdir).with_context(|| format!("cannot remove {}", pdir.display()))?;
        }
    }
    Ok(())
}

fn purge(dir: &Path, index: u8, provider_bin_path: Option<&Path>) -> anyhow::Result<()> {
    let config = config_path(dir, index);
    let data = data_dir_of(dir, index);
    if running_of(dir, index).is_some() {
        bail!("provider {index} still runs; stop it first");
    }
    if data.exists() {
        let env_bin = std::env::var_os("TPOD_PROVIDER_BIN").map(PathBuf::from);
        let bin = provider_bin(provider_bin_path.or(env_bin.as_deref()))?;
        let out = std::process::Command::new(&bin)
            .arg("--config")
            .arg(&config)
            .arg("--purge")
            .output()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        if !out.status.success() {
            bail!("{} --purge of provider {index} failed: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
        }
        std::fs::remove_dir_all(&data).with_context(|| format!("cannot remove {}", data.display()))?;
    }
    // The purge also removed the provider's bridge and firewall tables.
    Ok(())
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn opts(subnet: &str, bridge: &str, ingress_port: u16) -> ProviderOptions {
        ProviderOptions { ingress_port, bridge: bridge.into(), subnet: subnet.into(), ..Default::default() }
    }

    #[test]
    fn one_provider_keeps_the_given_bridge_subnet_and_port() {
        let slots = plan(&opts("10.89.0.0/16", "tpod0", 8080), 1).unwrap();
        assert_eq!(slots.len(), 1);
        assert_eq!(
            (slots[0].bridge.as_str(), slots[0].subnet_text(), slots[0].ingress_port),
            ("tpod0", "10.89.0.0/16".into(), 8080)
        );
        assert_eq!((slots[0].region.as_str(), slots[0].price_halves), ("local-a", 2));
    }

    #[test]
    fn several_providers_get_distinct_eighths_bridges_ports_prices_and_regions() {
        let slots = plan(&opts("10.89.0.0/16", "tpod0", 8080), 3).unwrap();
        let got: Vec<_> = slots
            .iter()
            .map(|s| (s.bridge.clone(), s.subnet_text(), s.ingress_port, s.region.clone(), s.price_halves))
            .collect();
        assert_eq!(
            got,
            [
                ("tpod0".into(), "10.89.0.0/19".into(), 8080, "local-a".into(), 2),
                ("tpod0-2".into(), "10.89.32.0/19".into(), 8081, "local-b".into(), 3),
                ("tpod0-3".into(), "10.89.64.0/19".into(), 8082, "local-c".into(), 4),
            ]
        );
        let eight = plan(&opts("10.89.0.0/16", "tpod0", 0), 8).unwrap();
        for (i, a) in eight.iter().enumerate() {
            assert_eq!(a.ingress_port, 0);
            for b in &eight[i + 1..] {
                assert!(!overlaps(a.subnet, b.subnet), "{a:?} {b:?}");
            }
            assert!(overlaps(a.subnet, (Ipv4Addr::new(10, 89, 0, 0), 16)));
        }
        assert_eq!(eight[7].subnet_text(), "10.89.224.0/19");
    }

    #[test]
    fn bad_options_are_refused_with_the_reason() {
        let err = |o: ProviderOptions, n| plan(&o, n).unwrap_err().to_string();
        assert!(err(opts("10.89.0.0/16", "abcdefghijklmn", 0), 2).contains("shorter --bridge"));
        assert!(plan(&opts("10.89.0.0/16", "abcdefghijklm", 0), 2).is_ok());
        assert!(err(opts("10.89.1.0/16", "tpd", 0), 1).contains("did you mean 10.89.0.0/16"));
        assert!(err(opts("10.89.0.0/26", "tpd", 0), 2).contains("too small"));
        assert!(err(opts("10.89.0.0", "tpd", 0), 1).contains("not an IPv4 subnet"));
        assert!(err(opts("10.89.0.0/16", "tpd", 65535), 2).contains("no port for provider 2"));
        assert!(err(opts("10.89.0.0/16", "tpd", 0), 9).contains("1 to 8"));
    }

    #[test]
    fn generated_configs_differ_in_prices_region_and_network_only() {
        let devnet = DevnetFile {
            version: tpod_devnet::file::FORMAT_VERSION,
            chain_id: 31337,
            rpc_url: "http://127.0.0.1:8545".into(),
            anvil_pid: 1,
            contracts: tpod_chain::ContractAddresses {
                payment: alloy::primitives::Address::repeat_byte(1),
                registry: alloy::primitives::Address::repeat_byte(2),
                token: alloy::primitives::Address::repeat_byte(3),
            },
            accounts: Vec::new(),
        };
        let slots = plan(&opts("10.89.0.0/16", "tpod0", 8080), 2).unwrap();
        let tables: Vec<toml::Table> =
            slots.iter().map(|s| toml::from_str(&config_text(&devnet, s)).unwrap()).collect();
        let cpu = |t: &toml::Table| t["pricing"][0]["reservation"].as_str().unwrap().to_owned();
        assert_eq!((cpu(&tables[0]), cpu(&tables[1])), ("1000000000".into(), "1500000000".into()));
        assert_eq!(tables[1]["profile"]["region"].as_str(), Some("local-b"));
        assert_eq!(tables[1]["runtime"]["subnet"].as_str(), Some("10.89.32.0/19"));
        assert_eq!(tables[1]["ingress"]["http"].as_str(), Some("127.0.0.1:8081"));
        assert_eq!(tables[1]["attestation"]["simulated_root_key"].as_str(), Some("../provider/simulated-tee-root.key"));
        // The chain id and token let a provider start while anvil does not answer.
        assert_eq!(tables[1]["chain"]["chain_id"].as_integer(), Some(i64::try_from(devnet.chain_id).unwrap()));
        let token = tables[1]["chain"]["token"].as_str().unwrap().parse::<alloy::primitives::Address>().unwrap();
        assert_eq!(token, devnet.contracts.token);
    }

    #[test]
    fn overlap_is_by_the_shorter_prefix() {
        let net = |a: [u8; 4], l| (Ipv4Addr::from(a), l);
        assert!(overlaps(net([10, 89, 0, 0], 16), net([10, 89, 3, 7], 32)));
        assert!(!overlaps(net([10, 89, 0, 0], 19), net([10, 89, 32, 0], 19)));
        assert!(overlaps(net([0, 0, 0, 0], 0), net([10, 1, 0, 0], 16)));
        assert_eq!(parse_cidr("192.0.2.1"), Some((Ipv4Addr::new(192, 0, 2, 1), 32)));
        assert_eq!(parse_cidr("default"), None);
    }
}
