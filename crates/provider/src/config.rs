//! The provider's one configuration file (TOML): where it keeps its state, where it listens,
//! which chain it is paid on, what it offers and at what price.
//!
//! Quantities are written like a manifest's (`cpu = "2"`, `memory = "4Gi"`) and token amounts as
//! decimal strings (they do not fit TOML integers). Errors name the file, line and column.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use alloy::primitives::{Address, U256};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;
use tpod_billing::{PriceTable, PricingError};
use tpod_manifest::quantity;

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read provider config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending value (0 when unknown).
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration file, as written.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the provider keeps its store, blobs, pods and keys; relative to the config file.
    pub data_dir: PathBuf,
    /// The libp2p multiaddr to listen on, e.g. `/ip4/0.0.0.0/tcp/4001`.
    pub listen: String,
    /// The chain the provider is paid on.
    pub chain: ChainConfig,
    /// The HTTP ingress and host ports.
    pub ingress: IngressConfig,
    /// What the provider offers in total.
    pub capacity: CapacityConfig,
    /// The terms a channel must meet before a pod is run.
    pub terms: TermsConfig,
    /// Prices per resource, in token base units per unit-second.
    #[serde(default)]
    pub pricing: Vec<PriceConfig>,
    /// The local container runtime.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Metering, claims and the funds watcher.
    #[serde(default)]
    pub billing: BillingConfig,
    /// Scaling pods to zero and waking them.
    #[serde(default)]
    pub scaling: ScalingConfig,
    /// The TEE the provider runs in, which attests it to publishers.
    #[serde(default)]
    pub attestation: AttestationConfig,
    /// What the provider says about itself in its Registry profile.
    #[serde(default)]
    pub profile: ProfileConfig,
}

/// The operator's part of the provider's Registry profile; the rest (keys, capacity, terms,
/// prices, TEE) comes from the other sections.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// Where the machine is, a free-form label such as `eu-west`; required to register.
    pub region: Option<String>,
    /// How to reach the operator (e-mail, URL).
    pub contact: Option<String>,
    /// The libp2p multiaddrs publishers reach the provider at (without `/p2p`), when they differ
    /// from `listen` (a wildcard or private address, a port forwarded elsewhere). Default: the
    /// address `listen` is bound to.
    #[serde(default)]
    pub public_addrs: Vec<String>,
    /// The CPU model named in the pricing table the provider registers, e.g. `AMD EPYC 9654`;
    /// default: none (any CPU model).
    pub cpu_model: Option<String>,
}

/// Which TEE produces the provider's attestation evidence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TeeSetting {
    /// The TEE hardware found (SEV-SNP, then TDX); the daemon refuses to start without one.
    #[default]
    Auto,
    /// AMD SEV-SNP through `/dev/sev-guest`.
    Snp,
    /// Intel TDX through configfs-tsm.
    Tdx,
    /// No TEE, for development: a root key signs the evidence, and publishers refuse it unless
    /// told otherwise.
    Simulated,
}

/// How the provider attests itself.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationConfig {
    /// `auto`, `snp`, `tdx` or `simulated`.
    #[serde(default)]
    pub tee: TeeSetting,
    /// With `simulated`: the development root key (hex ed25519 secret), created if missing;
    /// relative to the config file.
    pub simulated_root_key: Option<PathBuf>,
    /// With TDX: the collateral of this platform's quotes, as `tpod-attestation` encodes it;
    /// relative to the config file. The operator keeps it fresh.
    pub tdx_collateral: Option<PathBuf>,
    /// With TDX, instead of `tdx_collateral`: a PCCS (or Intel's PCS,
    /// `https://api.trustedservices.intel.com`) the provider fetches its collateral from, at start
    /// and hourly.
    pub tdx_pccs_url: Option<String>,
}

/// How pods are metered and how the provider gets paid.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    /// Seconds between usage samples (the metering resolution).
    pub sample_interval_secs: u64,
    /// Seconds between periodic claims of each pod's earnings.
    pub claim_interval_secs: u64,
    /// Least amount (token base units, decimal) worth a periodic claim; final claims (delete,
    /// unlock, pause) ignore it.
    pub min_claim: String,
    /// Seconds a pod keeps running once its funds will not cover the next claim interval
    /// (plus this grace period), before it is paused.
    pub grace_secs: u64,
    /// Seconds a paused pod's volumes are kept before the pod is removed.
    pub retention_secs: u64,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            sample_interval_secs: 1,
            claim_interval_secs: 300,
            min_claim: "0".into(),
            grace_secs: 60,
            retention_secs: 7 * 24 * 3600,
        }
    }
}

/// How pods that may scale to zero (`replicas.min: 0`) are stopped when idle and woken, and how
/// pods with replicas (`replicas.max` > 1) scale between their `min` and `max`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScalingConfig {
    /// Seconds without a request after which such a pod is scaled to zero, when its manifest
    /// names no `idleTimeout`. Default 300.
    pub idle_timeout_secs: u64,
    /// The shortest idle timeout a manifest may ask for; a shorter one is raised to it. Default
    /// 30 (the devnet's provider allows 5).
    pub min_idle_timeout_secs: u64,
    /// How long a wake may take, from the first request to the container's port answering,
    /// before the waiting requests get 503. Default 30.
    pub wake_timeout_secs: u64,
    /// Requests in flight per replica above which another replica starts, when the manifest
    /// names no `targetConcurrency`. Default 10.
    pub target_concurrency: u32,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        Self { idle_timeout_secs: 300, min_idle_timeout_secs: 30, wake_timeout_secs: 30, target_concurrency: 10 }
    }
}

impl ScalingConfig {
    /// The idle timeout of a pod whose manifest asks for `asked` seconds (0: the default).
    pub fn idle_timeout_secs(&self, asked: u64) -> u64 {
        let asked = if asked == 0 { self.idle_timeout_secs } else { asked };
        asked.max(self.min_idle_timeout_secs)
    }

    /// The target concurrency of a pod whose manifest asks for `asked` (0: the default).
    pub fn target_concurrency(&self, asked: u32) -> u32 {
        if asked == 0 { self.target_concurrency } else { asked }
    }
}

/// Chain access.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// JSON-RPC URL.
    pub rpc_url: String,
    /// The Payment contract.
    pub payment: Address,
    /// The Registry contract.
    pub registry: Address,
    /// File holding the provider account's private key (hex); relative to the config file.
    pub key_file: PathBuf,
    /// Whether the provider lists itself in the Registry (pricing table, profile, subscription)
    /// and keeps that entry matching this file. `false` runs it unlisted, reachable only by
    /// publishers who know its address.
    #[serde(default = "default_true")]
    pub register: bool,
    /// The chain id the provider is paid on. Set both this and `token` and the daemon starts
    /// without the chain (its RPC may be down): it checks them against the chain once it
    /// answers, and lists itself in the Registry only if they match.
    #[serde(default)]
    pub chain_id: Option<u64>,
    /// The Payment contract's token (see `chain_id`).
    #[serde(default)]
    pub token: Option<Address>,
}

impl ChainConfig {
    /// The chain id and contracts, when the configuration names them all (`chain_id` and
    /// `token` set): the daemon can then start without the chain.
    pub fn known(&self) -> Option<(u64, tpod_chain::client::ContractAddresses)> {
        let (chain_id, token) = (self.chain_id?, self.token?);
        Some((
            chain_id,
            tpod_chain::client::ContractAddresses { payment: self.payment, registry: self.registry, token },
        ))
    }
}

fn default_true() -> bool {
    true
}

/// The ingress.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressConfig {
    /// Address the HTTP reverse proxy listens on.
    pub http: SocketAddr,
    /// Pods are served at `<pod-id>.<domain>`.
    pub domain: String,
    /// Address TCP host ports are bound on.
    pub tcp_bind: IpAddr,
    /// The URL scheme and port publishers reach the ingress on, when it differs from `http`
    /// (e.g. behind a load balancer): `http://{host}:8080`. `{host}` is replaced.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Seconds a pod may take to send its response headers before the client gets 504
    /// (1 to 3600). Default 60.
    #[serde(default = "default_response_timeout_secs")]
    pub response_timeout_secs: u64,
    /// Requests (HTTP, including open WebSockets) a pod's route may have in flight, and
    /// connections a pod's TCP ports may have open, before more get 503 (HTTP) or are closed
    /// (TCP); at least 1. Default 1024.
    #[serde(default = "default_max_in_flight_per_pod")]
    pub max_in_flight_per_pod: u64,
}

fn default_response_timeout_secs() -> u64 {
    tpod_ingress::RESPONSE_HEADER_TIMEOUT.as_secs()
}

fn default_max_in_flight_per_pod() -> u64 {
    tpod_ingress::MAX_IN_FLIGHT_PER_POD
}

impl IngressConfig {
    /// The ingress's settings: these, with the ingress's defaults for the rest.
    pub fn proxy(&self) -> tpod_ingress::IngressConfig {
        tpod_ingress::IngressConfig {
            response_header_timeout: std::time::Duration::from_secs(self.response_timeout_secs),
            max_in_flight_per_pod: self.max_in_flight_per_pod,
            ..tpod_ingress::IngressConfig::default()
        }
    }
}

/// Total capacity offered to pods.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityConfig {
    /// CPU, e.g. `"2"` or `"1500m"`.
    pub cpu: String,
    /// Memory, e.g. `"4Gi"`.
    pub memory: String,
    /// Disk for volumes and root filesystems, e.g. `"20Gi"`.
    pub storage: String,
}

/// Terms required of a pod's payment channel.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TermsConfig {
    /// Least amount (token base units, decimal) the channel must hold unclaimed.
    pub min_funding: String,
    /// Least unlock delay, in seconds, so a final claim always fits before a withdrawal.
    pub min_unlock_delay_secs: u32,
}

/// One resource's price.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// `cpu`, `memory`, `storage`, …
    pub resource: String,
    /// Per unit reserved, per second (decimal).
    pub reservation: String,
    /// Per unit used, per second (decimal).
    pub usage: String,
}

/// Local runtime settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// The Linux bridge pods are attached to.
    pub bridge: String,
    /// The pods' IPv4 subnet, e.g. `10.89.0.0/16`; the bridge takes its first address.
    pub subnet: String,
    /// Largest log kept per container, e.g. `"8Mi"`.
    pub log_cap: String,
    /// Largest root file system per container, e.g. `"2Gi"`: the image unpacked plus what the
    /// container writes, held in memory (a tmpfs), never on disk.
    #[serde(default = "default_rootfs_size")]
    pub rootfs_size: String,
    /// The size of an emptyDir volume whose manifest names none, e.g. `"1Gi"`: reserved against
    /// `capacity.storage` and billed as storage like a filesystem volume.
    #[serde(default = "default_empty_dir_size")]
    pub empty_dir_size: String,
    /// Whether pods may open connections to the internet, masqueraded behind the host's
    /// address. Even then they reach no private range (RFC 1918, 100.64/10, link-local,
    /// loopback), none of the host's networks or addresses and no other pod. Default `false`:
    /// pods only answer what comes through the ingress.
    #[serde(default)]
    pub outbound_internet: bool,
    /// The most processes and threads a container may have (its `pids.max`); a manifest may ask
    /// for fewer (`resources.pids`), never more. Default 1024.
    #[serde(default = "default_pids_limit")]
    pub pids_limit: u64,
    /// System calls taken off the default seccomp allow-list for every container, e.g.
    /// `["mkdirat"]`: they fail with EPERM. Names the allow-list does not know are refused at
    /// start. Default: none.
    #[serde(default)]
    pub seccomp_deny: Vec<String>,
    /// How long a provision request waits for its pod to run before it answers "provisioning"
    /// (the publisher then follows the unpack and start through status requests), in seconds,
    /// at most 20 (well within a publisher's request timeout). Default 5: small pods are
    /// answered with their final state; 0 always answers at once.
    #[serde(default = "default_provision_wait_secs")]
    pub provision_wait_secs: u64,
}

fn default_provision_wait_secs() -> u64 {
    5
}

fn default_pids_limit() -> u64 {
    1024
}

fn default_rootfs_size() -> String {
    "2Gi".into()
}

fn default_empty_dir_size() -> String {
    "1Gi".into()
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            bridge: "tpod0".into(),
            subnet: "10.89.0.0/16".into(),
            log_cap: "8Mi".into(),
            rootfs_size: default_rootfs_size(),
            empty_dir_size: default_empty_dir_size(),
            outbound_internet: false,
            pids_limit: default_pids_limit(),
            provision_wait_secs: default_provision_wait_secs(),
            seccomp_deny: Vec::new(),
        }
    }
}

/// The configuration with every quantity parsed and every path made absolute.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The file it came from.
    pub file: PathBuf,
    /// The raw configuration (paths absolute).
    pub config: Config,
    /// CPU capacity in millicores.
    pub cpu_millis: u64,
    /// Memory capacity in bytes.
    pub memory_bytes: u64,
    /// Storage capacity in bytes.
    pub storage_bytes: u64,
    /// Least unclaimed channel balance.
    pub min_funding: U256,
    /// Prices offered to new pods, and proposed to running ones whose terms differ.
    pub pricing: PriceTable,
    /// Least amount worth a periodic claim.
    pub min_claim: U256,
    /// Pods' subnet.
    pub subnet: (std::net::Ipv4Addr, u8),
    /// Per-container log cap in bytes.
    pub log_cap_bytes: u64,
    /// Per-container root file system size in bytes.
    pub rootfs_bytes: u64,
    /// Size of an emptyDir volume that names none, in bytes.
    pub empty_dir_bytes: u64,
    /// sha256 of the configuration file as read: part of the provider's attested measurement.
    pub config_sha256: [u8; 32],
    /// The TEE kind as pricing tables and profiles name it (`sev-snp`, `tdx`, `simulated`); empty
    /// with `tee = "auto"` until the daemon has found its TEE ([`tee_type`]).
    pub tee_type: String,
    /// The CPU model the pricing table names ([`ProfileConfig::cpu_model`]; empty: any).
    pub cpu_model: String,
}

/// The name pricing tables and profiles give a TEE kind.
pub fn tee_type(kind: tpod_attestation::TeeKind) -> &'static str {
    match kind {
        tpod_attestation::TeeKind::Snp => "sev-snp",
        tpod_attestation::TeeKind::Tdx => "tdx",
        tpod_attestation::TeeKind::Simulated => "simulated",
    }
}

/// Longest TEE type, CPU model and resource name the Registry takes (`MAX_FIELD_LENGTH`).
const MAX_REGISTRY_FIELD_BYTES: usize = 128;

impl Settings {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Checks `text`, read from `path` (for messages and relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid_at = |offset: Option<usize>, message: String| {
            let (line, column) = offset.map_or((0, 0), |o| line_column(text, o));
            ConfigError::Invalid { path: path.to_owned(), line, column, message }
        };
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let message = e.message().trim_end().to_owned();
            invalid_at(e.span().map(|s| s.start), message)
        })?;
        // Values are checked after decoding, so their position is found by key name.
        let at = |key: &str, message: String| {
            invalid_at(find_key(text, key).or_else(|| find_inline_key(text, key)), format!("{key}: {message}"))
        };

        let base = path.parent().unwrap_or(Path::new("."));
        config.data_dir = base.join(&config.data_dir);
        config.chain.key_file = base.join(&config.chain.key_file);
        let attestation = &mut config.attestation;
        attestation.simulated_root_key = attestation.simulated_root_key.as_ref().map(|p| base.join(p));
        attestation.tdx_collateral = attestation.tdx_collateral.as_ref().map(|p| base.join(p));
        if attestation.tee == TeeSetting::Simulated && attestation.simulated_root_key.is_none() {
            return Err(at("tee", "\"simulated\" needs simulated_root_key, the development root's key file".into()));
        }
        match (&attestation.tdx_collateral, &attestation.tdx_pccs_url) {
            (Some(_), Some(_)) => {
                return Err(at("tdx_pccs_url", "set tdx_collateral or tdx_pccs_url, not both".into()));
            }
            (None, None) if attestation.tee == TeeSetting::Tdx => {
                return Err(at(
                    "tee",
                    "\"tdx\" needs tdx_pccs_url (a PCCS to fetch collateral from) or tdx_collateral (a file of it)"
                        .into(),
                ));
            }
            (_, Some(url)) if !(url.starts_with("https://") || url.starts_with("http://")) => {
                return Err(at("tdx_pccs_url", format!("{url:?} is not an http(s) URL")));
            }
            _ => {}
        }

        match (config.chain.chain_id, config.chain.token) {
            (Some(0), _) => return Err(at("chain_id", "must not be 0".into())),
            (Some(_), None) => {
                return Err(at(
                    "chain_id",
                    "set token too (both start the daemon without the chain), or neither".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(at(
                    "token",
                    "set chain_id too (both start the daemon without the chain), or neither".into(),
                ));
            }
            _ => {}
        }
        let cpu_millis = quantity::parse_cpu_millis(&config.capacity.cpu).map_err(|e| at("cpu", e.to_string()))?;
        let memory_bytes = quantity::parse_bytes(&config.capacity.memory).map_err(|e| at("memory", e.to_string()))?;
        let storage_bytes =
            quantity::parse_bytes(&config.capacity.storage).map_err(|e| at("storage", e.to_string()))?;
        let min_funding = parse_amount(&config.terms.min_funding).map_err(|m| at("min_funding", m))?;
        let pricing = PriceTable::from_rows(
            config.pricing.iter().map(|p| (p.resource.as_str(), p.reservation.as_str(), p.usage.as_str())),
        )
        .map_err(|e| {
            let resource = match &e {
                PricingError::UnknownResource(r) | PricingError::Duplicate(r) => Some(r.as_str()),
                PricingError::InvalidPrice { resource, .. } | PricingError::NotMetered { resource, .. } => {
                    Some(resource.as_str())
                }
                PricingError::Overflow => None,
            };
            let offset = resource.and_then(|r| text.find(&format!("\"{r}\""))).or_else(|| text.find("[[pricing]]"));
            invalid_at(offset, format!("pricing: {e}"))
        })?;
        let b = &config.billing;
        let min_claim = parse_amount(&b.min_claim).map_err(|m| at("min_claim", m))?;
        for (key, value) in
            [("sample_interval_secs", b.sample_interval_secs), ("claim_interval_secs", b.claim_interval_secs)]
        {
            if value == 0 {
                return Err(at(key, "must be at least 1".into()));
            }
        }
        let subnet = parse_subnet(&config.runtime.subnet).map_err(|m| at("subnet", m))?;
        let log_cap_bytes = quantity::parse_bytes(&config.runtime.log_cap).map_err(|e| at("log_cap", e.to_string()))?;
        let rootfs_bytes =
            quantity::parse_bytes(&config.runtime.rootfs_size).map_err(|e| at("rootfs_size", e.to_string()))?;
        if rootfs_bytes < 1 << 20 {
            return Err(at("rootfs_size", "must be at least 1Mi".into()));
        }
        let empty_dir_bytes =
            quantity::parse_bytes(&config.runtime.empty_dir_size).map_err(|e| at("empty_dir_size", e.to_string()))?;
        if !(tpod_runtime::MIN_FILESYSTEM_BYTES..=tpod_runtime::MAX_FILESYSTEM_BYTES).contains(&empty_dir_bytes) {
            return Err(at("empty_dir_size", "must be between 1Mi and 1Ti".into()));
        }
        if config.runtime.pids_limit == 0 {
            return Err(at("pids_limit", "must be at least 1".into()));
        }
        if config.runtime.provision_wait_secs > 20 {
            return Err(at("provision_wait_secs", "must be at most 20".into()));
        }
        let scaling = &config.scaling;
        if scaling.min_idle_timeout_secs == 0 {
            return Err(at("min_idle_timeout_secs", "must be at least 1".into()));
        }
        if scaling.idle_timeout_secs < scaling.min_idle_timeout_secs {
            return Err(at("idle_timeout_secs", "must be at least min_idle_timeout_secs".into()));
        }
        if !(1..=600).contains(&scaling.wake_timeout_secs) {
            return Err(at("wake_timeout_secs", "must be from 1 to 600".into()));
        }
        if !(1..=10_000).contains(&scaling.target_concurrency) {
            return Err(at("target_concurrency", "must be from 1 to 10000".into()));
        }
        tpod_runtime::sandbox::check_deny_list(&config.runtime.seccomp_deny)
            .map_err(|e| at("seccomp_deny", e.to_string()))?;
        if config.ingress.domain.is_empty() || config.ingress.domain.starts_with('.') {
            return Err(at("domain", "must be a DNS name such as pods.example.com".into()));
        }
        config.ingress.domain = config.ingress.domain.to_ascii_lowercase();
        if !(1..=3600).contains(&config.ingress.response_timeout_secs) {
            return Err(at("response_timeout_secs", "must be between 1 and 3600".into()));
        }
        if config.ingress.max_in_flight_per_pod == 0 {
            return Err(at("max_in_flight_per_pod", "must be at least 1".into()));
        }
        check_listing(&config, &at, &invalid_at, text)?;
        let tee_type = match config.attestation.tee {
            TeeSetting::Auto => String::new(),
            TeeSetting::Snp => tee_type(tpod_attestation::TeeKind::Snp).to_owned(),
            TeeSetting::Tdx => tee_type(tpod_attestation::TeeKind::Tdx).to_owned(),
            TeeSetting::Simulated => tee_type(tpod_attestation::TeeKind::Simulated).to_owned(),
        };
        let cpu_model = config.profile.cpu_model.clone().unwrap_or_default();
        Ok(Self {
            file: path.to_owned(),
            config,
            cpu_millis,
            memory_bytes,
            storage_bytes,
            min_funding,
            pricing,
            min_claim,
            subnet,
            log_cap_bytes,
            rootfs_bytes,
            empty_dir_bytes,
            config_sha256: sha2::Sha256::digest(text.as_bytes()).into(),
            tee_type,
            cpu_model,
        })
    }

    /// The wire form of `table` as this provider offers it: in the Payment contract's `token`,
    /// with the TEE type and CPU model of the pricing table it registers, so a publisher can
    /// compare a quote with the Registry entry field by field.
    pub fn table_proto(&self, table: &PriceTable, token: &str) -> tpod_wire::pb::PricingTable {
        tpod_wire::pb::PricingTable { cpu_model: self.cpu_model.clone(), ..table.to_proto(token, &self.tee_type) }
    }
}

/// Checks the `[profile]` section and what listing in the Registry needs.
fn check_listing(
    config: &Config,
    at: &impl Fn(&str, String) -> ConfigError,
    invalid_at: &impl Fn(Option<usize>, String) -> ConfigError,
    text: &str,
) -> Result<(), ConfigError> {
    use tpod_wire::limits::{MAX_PROFILE_ADDRS, MAX_STRING_BYTES};
    let profile = &config.profile;
    let listen: tpod_net::Multiaddr =
        config.listen.parse().map_err(|e| at("listen", format!("{:?} is not a multiaddr: {e}", config.listen)))?;
    for (key, value, max) in [
        ("region", &profile.region, MAX_STRING_BYTES),
        ("contact", &profile.contact, MAX_STRING_BYTES),
        ("cpu_model", &profile.cpu_model, MAX_REGISTRY_FIELD_BYTES),
    ] {
        match value {
            Some(v) if v.trim().is_empty() => return Err(at(key, "must not be empty (leave it out instead)".into())),
            Some(v) if v.len() > max => return Err(at(key, format!("is {} bytes, more than {max}", v.len()))),
            _ => {}
        }
    }
    if profile.public_addrs.len() > MAX_PROFILE_ADDRS {
        return Err(at("public_addrs", format!("lists {}, at most {MAX_PROFILE_ADDRS}", profile.public_addrs.len())));
    }
    for addr in &profile.public_addrs {
        let parsed: tpod_net::Multiaddr =
            addr.parse().map_err(|e| at("public_addrs", format!("{addr:?} is not a multiaddr: {e}")))?;
        if addr.contains(',') || addr.len() > MAX_STRING_BYTES {
            return Err(at("public_addrs", format!("{addr:?} holds a comma or is too long for a profile")));
        }
        if format!("{parsed}/").contains("/p2p/") {
            return Err(at("public_addrs", format!("{addr:?}: leave out /p2p, the profile names the peer id")));
        }
    }
    if !config.chain.register {
        return Ok(());
    }
    if profile.region.is_none() {
        // Point at the section that is missing the key, or at what turns registration on.
        let offset = text.find("[profile]").or_else(|| find_key(text, "register")).or_else(|| text.find("[chain]"));
        return Err(invalid_at(
            offset,
            "region: a provider that lists itself in the Registry ([chain] register, true by default) needs              [profile] region, a label such as \"eu-west\"; or set [chain] register = false to run unlisted"
                .into(),
        ));
    }
    let listen = listen.to_string();
    let wildcard = ["/ip4/0.0.0.0/", "/ip6/::/"].iter().any(|w| format!("{listen}/").starts_with(w));
    if wildcard && profile.public_addrs.is_empty() {
        return Err(at(
            "listen",
            format!(
                "{} listens on every interface, which is no address publishers can dial: list the ones they \
                 reach the provider at in [profile] public_addrs",
                listen
            ),
        ));
    }
    Ok(())
}

fn parse_amount(text: &str) -> Result<U256, String> {
    text.parse::<U256>().map_err(|_| format!("{text:?} is not a decimal amount of token base units"))
}

fn parse_subnet(text: &str) -> Result<(std::net::Ipv4Addr, u8), String> {
    let bad = || format!("{text:?} is not an IPv4 subnet such as 10.89.0.0/16");
    let (ip, len) = text.split_once('/').ok_or_else(bad)?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if !(8..=28).contains(&len) {
        return Err(format!("prefix length /{len} must be between /8 and /28"));
    }
    Ok((ip, len))
}

/// The 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The offset of the first line that assigns `key`, for messages about a value.
fn find_key(text: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(offset + (line.len() - trimmed.len()));
        }
        offset += line.len();
    }
    None
}

/// The offset of `key` assigned inside an inline table (`profile = { region = "" }`).
fn find_inline_key(text: &str, key: &str) -> Option<usize> {
    text.match_indices(key).map(|(i, _)| i).find(|&i| {
        let before = text[..i].trim_end_matches([' ', '\t']).chars().next_back();
        matches!(before, Some('{' | ',')) && text[i + key.len()..].trim_start().starts_with('=')
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    // The profile sits on the first line so that the line numbers below stay those of the rest.
    const SAMPLE: &str = r#"profile = { region = "eu-west" }
data_dir = "data"
listen = "/ip4/127.0.0.1/tcp/0"

[chain]
rpc_url = "http://127.0.0.1:8545"
payment = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
registry = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
key_file = "provider.key"

[ingress]
http = "127.0.0.1:8080"
domain = "Pods.Localhost"
tcp_bind = "127.0.0.1"

[capacity]
cpu = "2"
memory = "4Gi"
storage = "10Gi"

[terms]
min_funding = "1000"
min_unlock_delay_secs = 60

[[pricing]]
resource = "cpu"
reservation = "10"
usage = "20"
"#;

    #[test]
    fn sample_parses_with_paths_relative_to_the_file() {
        let s = Settings::parse(SAMPLE, Path::new("/etc/tpod/provider.toml")).unwrap();
        assert_eq!(s.config.data_dir, Path::new("/etc/tpod/data"));
        assert_eq!(s.config.chain.key_file, Path::new("/etc/tpod/provider.key"));
        assert_eq!(s.cpu_millis, 2000);
        assert_eq!(s.memory_bytes, 4 << 30);
        assert_eq!(s.min_funding, U256::from(1000));
        assert_eq!(s.pricing.cpu, tpod_billing::Price { reservation: U256::from(10), usage: U256::from(20) });
        assert_eq!(s.pricing.memory, tpod_billing::Price::default());
        assert_eq!(s.config.billing.claim_interval_secs, 300);
        assert_eq!(s.config.ingress.domain, "pods.localhost");
        assert_eq!(s.subnet, ("10.89.0.0".parse().unwrap(), 16));
    }

    #[test]
    fn unknown_field_names_line_and_column() {
        let text = SAMPLE.replace("cpu = \"2\"", "cpu = \"2\"\ngpus = 4");
        let err = Settings::parse(&text, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:18:1: unknown field `gpus`"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key_and_line() {
        let text = SAMPLE.replace("memory = \"4Gi\"", "memory = \"lots\"");
        let err = Settings::parse(&text, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:18:1: memory: "), "{err}");
        let text = SAMPLE.replace("min_funding = \"1000\"", "min_funding = \"-1\"");
        let err = Settings::parse(&text, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.contains("p.toml:22:1: min_funding: \"-1\" is not a decimal amount"), "{err}");
        let text = SAMPLE.replace("resource = \"cpu\"", "resource = \"gpu\"");
        let err = Settings::parse(&text, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:26:12: pricing: unknown resource \"gpu\""), "{err}");
        let text = format!("{SAMPLE}\n[billing]\nclaim_interval_secs = 0\n");
        let err = Settings::parse(&text, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:31:1: claim_interval_secs: must be at least 1"), "{err}");
        let text = format!("{SAMPLE}\n[attestation]\ntee = \"tdx\"\n");
        let err = Settings::parse(&text, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:31:1: tee: \"tdx\" needs tdx_pccs_url"), "{err}");
        let text = format!("{SAMPLE}\n[attestation]\ntee = \"tdx\"\ntdx_pccs_url = \"pccs.local:8081\"\n");
        let err = Settings::parse(&text, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:32:1: tdx_pccs_url: \"pccs.local:8081\" is not an http(s) URL"), "{err}");
        let text = format!("{SAMPLE}\n[attestation]\ntdx_collateral = \"c.bin\"\ntdx_pccs_url = \"https://pccs\"\n");
        let err = Settings::parse(&text, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:32:1: tdx_pccs_url: set tdx_collateral or tdx_pccs_url, not both"), "{err}");
        let text = format!("{SAMPLE}\n[attestation]\ntee = \"tdx\"\ntdx_pccs_url = \"https://pccs.local:8081\"\n");
        assert!(Settings::parse(&text, Path::new("p.toml")).is_ok());
        let text = SAMPLE.replace("payment = \"0x5F", "payment = \"0xZZ");
        let err = Settings::parse(&text, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:7:"), "{err}");
    }

    #[test]
    fn sandbox_settings_are_checked_with_their_line() {
        let s = Settings::parse(SAMPLE, Path::new("p.toml")).unwrap();
        assert_eq!((s.config.runtime.pids_limit, s.config.runtime.seccomp_deny.len()), (1024, 0));
        let text = format!(
            "{SAMPLE}\n[runtime]\nbridge = \"tpod0\"\nsubnet = \"10.89.0.0/16\"\nlog_cap = \"8Mi\"\npids_limit = 64\nseccomp_deny = [\"mkdirat\"]\n"
        );
        let s = Settings::parse(&text, Path::new("p.toml")).unwrap();
        assert_eq!(
            (s.config.runtime.pids_limit, s.config.runtime.seccomp_deny.as_slice()),
            (64, &["mkdirat".to_owned()][..])
        );
        let err = Settings::parse(&text.replace("pids_limit = 64", "pids_limit = 0"), Path::new("p.toml")).unwrap_err();
        assert!(err.to_string().contains(": pids_limit: must be at least 1"), "{err}");
        let err = Settings::parse(&text.replace("\"mkdirat\"", "\"mkdirz\""), Path::new("p.toml")).unwrap_err();
        assert!(err.to_string().contains(": seccomp_deny: seccomp: unknown system call \"mkdirz\""), "{err}");
        assert_eq!(s.config.runtime.provision_wait_secs, 5);
        let s = Settings::parse(&format!("{text}provision_wait_secs = 0\n"), Path::new("p.toml")).unwrap();
        assert_eq!(s.config.runtime.provision_wait_secs, 0);
        let err = Settings::parse(&format!("{text}provision_wait_secs = 21\n"), Path::new("p.toml")).unwrap_err();
        assert!(err.to_string().contains(": provision_wait_secs: must be at most 20"), "{err}");
    }

    #[test]
    fn ingress_limits_have_defaults_and_are_checked_with_their_line() {
        let s = Settings::parse(SAMPLE, Path::new("p.toml")).unwrap();
        let proxy = s.config.ingress.proxy();
        assert_eq!(proxy.response_header_timeout, std::time::Duration::from_secs(60));
        assert_eq!(proxy.max_in_flight_per_pod, 1024);
        let text = SAMPLE.replace(
            "tcp_bind = \"127.0.0.1\"",
            "tcp_bind = \"127.0.0.1\"\nresponse_timeout_secs = 5\nmax_in_flight_per_pod = 8",
        );
        let s = Settings::parse(&text, Path::new("p.toml")).unwrap();
        let proxy = s.config.ingress.proxy();
        assert_eq!((proxy.response_header_timeout.as_secs(), proxy.max_in_flight_per_pod), (5, 8));
        let err = Settings::parse(&text.replace("= 5", "= 0"), Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:15:1: response_timeout_secs: must be between 1 and 3600"), "{err}");
        let err = Settings::parse(&text.replace("= 8", "= 0"), Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:16:1: max_in_flight_per_pod: must be at least 1"), "{err}");
    }

    #[test]
    fn chain_id_and_token_come_together() {
        let s = Settings::parse(SAMPLE, Path::new("p.toml")).unwrap();
        assert_eq!(s.config.chain.known(), None);
        let token = "token = \"0x00000000000000000000000000000000000000aa\"";
        let both = SAMPLE
            .replace("key_file = \"provider.key\"", &format!("key_file = \"provider.key\"\nchain_id = 31337\n{token}"));
        let s = Settings::parse(&both, Path::new("p.toml")).unwrap();
        let (id, contracts) = s.config.chain.known().unwrap();
        assert_eq!((id, contracts.token), (31337, "0x00000000000000000000000000000000000000aa".parse().unwrap()));
        assert_eq!((contracts.payment, contracts.registry), (s.config.chain.payment, s.config.chain.registry));
        let only_id = SAMPLE.replace("key_file = \"provider.key\"", "key_file = \"provider.key\"\nchain_id = 31337");
        let err = Settings::parse(&only_id, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:10:1: chain_id: set token too"), "{err}");
        let only_token =
            SAMPLE.replace("key_file = \"provider.key\"", &format!("key_file = \"provider.key\"\n{token}"));
        let err = Settings::parse(&only_token, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:10:1: token: set chain_id too"), "{err}");
        let zero = both.replace("chain_id = 31337", "chain_id = 0");
        let err = Settings::parse(&zero, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:10:1: chain_id: must not be 0"), "{err}");
    }

    #[test]
    fn listing_needs_a_region_and_a_dialable_address() {
        let unlisted = SAMPLE.replace("profile = { region = \"eu-west\" }", "");
        let err = Settings::parse(&unlisted, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:5:1: region: a provider that lists itself"), "{err}");
        let with_section = format!("{unlisted}\n[profile]\ncontact = \"ops@example.com\"\n");
        let err = Settings::parse(&with_section, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:30:1: region: "), "{err}");
        let off = unlisted.replace("key_file = \"provider.key\"", "key_file = \"provider.key\"\nregister = false");
        let s = Settings::parse(&off, Path::new("p.toml")).unwrap();
        assert!(!s.config.chain.register);

        let wildcard = SAMPLE.replace("/ip4/127.0.0.1/tcp/0", "/ip4/0.0.0.0/tcp/4001");
        let err = Settings::parse(&wildcard, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.starts_with("p.toml:3:1: listen: /ip4/0.0.0.0/tcp/4001 listens on every interface"), "{err}");
        let published = wildcard.replace(
            "profile = { region = \"eu-west\" }",
            "profile = { region = \"eu-west\", public_addrs = [\"/dns4/p.example.com/tcp/4001\"] }",
        );
        let s = Settings::parse(&published, Path::new("p.toml")).unwrap();
        assert_eq!(s.config.profile.public_addrs, ["/dns4/p.example.com/tcp/4001"]);
        assert!(s.config.chain.register);
    }

    #[test]
    fn profile_values_are_checked() {
        let with = |profile: &str| SAMPLE.replace("profile = { region = \"eu-west\" }", profile);
        let cases = [
            ("profile = { region = \"\" }", "p.toml:1:13: region: must not be empty"),
            (
                "profile = { region = \"r\", public_addrs = [\"nowhere\"] }",
                "public_addrs: \"nowhere\" is not a multiaddr",
            ),
            (
                "profile = { region = \"r\", public_addrs = [\"/ip4/1.2.3.4/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA\"] }",
                "leave out /p2p",
            ),
            ("profile = { region = \"r\", gpus = 1 }", "p.toml:1:27: unknown field `gpus`"),
        ];
        for (profile, expected) in cases {
            let err = Settings::parse(&with(profile), Path::new("p.toml")).unwrap_err().to_string();
            assert!(err.contains(expected), "{profile}: {err}");
        }
        let long = with(&format!("profile = {{ region = \"r\", cpu_model = \"{}\" }}", "x".repeat(129)));
        let err = Settings::parse(&long, Path::new("p.toml")).unwrap_err().to_string();
        assert!(err.contains("cpu_model: is 129 bytes, more than 128"), "{err}");
    }

    #[test]
    fn offered_table_names_the_tee_and_cpu_model() {
        let text = format!("{SAMPLE}\n[attestation]\ntee = \"snp\"\n").replace(
            "profile = { region = \"eu-west\" }",
            "profile = { region = \"eu\", cpu_model = \"AMD EPYC 9654\" }",
        );
        let s = Settings::parse(&text, Path::new("p.toml")).unwrap();
        let table = s.table_proto(&s.pricing, "0xabc");
        assert_eq!(
            (table.tee_type.as_str(), table.cpu_model.as_str(), table.token.as_str()),
            ("sev-snp", "AMD EPYC 9654", "0xabc")
        );
        assert_eq!(table.prices.len(), 5);
        assert_eq!(tpod_billing::PriceTable::from_proto(&table).unwrap(), s.pricing);
        let auto = Settings::parse(SAMPLE, Path::new("p.toml")).unwrap();
        assert_eq!((auto.tee_type.as_str(), auto.cpu_model.as_str()), ("", ""));
    }
}
