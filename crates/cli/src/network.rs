//! Networks: which chain a command talks to, and where its contracts are.
//!
//! A network is a chain id, an RPC URL and the Payment, Registry and token addresses. Named
//! networks live in `~/.tpod/networks.toml` (or `$TPOD_HOME/networks.toml`); `--network NAME`
//! (or `$TPOD_NETWORK`) picks one and `--rpc-url` overrides its URL. The devnet is the network
//! called `devnet`, read from the devnet file while it is up, so `tpod dev up` and `dev down`
//! add and remove it without touching the file. Without `--network` the devnet is used while it
//! is up, else the only configured network. [`resolve`] is what commands call; [`connect`]
//! checks that the RPC serves the network's chain before anything is sent.
//!
//! Each network keeps its deployment records in its own directory ([`Network::dir`]): the
//! devnet's directory for the devnet, `~/.tpod/networks/<name>/` for the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tpod_chain::{Chain, ContractAddresses};
use tpod_devnet::DevnetFile;

/// The name the devnet goes by.
pub const DEVNET: &str = "devnet";

/// Which network a command uses.
#[derive(Debug, Clone, Default, Args)]
pub struct NetworkArgs {
    /// The network (`tpod network list`; default: the devnet while it is up, else the only one
    /// configured).
    #[arg(long, env = "TPOD_NETWORK", global = true, value_name = "NAME")]
    pub network: Option<String>,
    /// The network's JSON-RPC URL, instead of the one configured.
    #[arg(long, env = "TPOD_RPC_URL", global = true, value_name = "URL")]
    pub rpc_url: Option<String>,
}

/// `tpod network` subcommands.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// List the networks: the devnet (while it is up) and the configured ones.
    List,
    /// Show a network (default: the one commands use now) and check it on its chain: chain id,
    /// contracts, token.
    Show {
        /// The network.
        name: Option<String>,
    },
    /// Add a network whose contracts are deployed: give --rpc-url, --payment and --registry;
    /// the chain id and the token are read from the chain.
    Add {
        /// Its name.
        name: String,
        /// The Payment contract.
        #[arg(long)]
        payment: Address,
        /// The Registry contract.
        #[arg(long)]
        registry: Address,
        /// The block the contracts were deployed in (event watchers start there).
        #[arg(long, value_name = "BLOCK")]
        deployed_at_block: Option<u64>,
        /// Replace a network of that name.
        #[arg(long)]
        force: bool,
    },
    /// Forget a network (its deployment records stay in ~/.tpod/networks/<name>/).
    Remove {
        /// The network.
        name: String,
    },
    /// Deploy Payment and Registry for an ERC-20 token on any chain (--rpc-url), from --account
    /// (or --key-file), and add the network.
    Deploy {
        /// The new network's name.
        name: String,
        /// The ERC-20 token channels are funded in.
        #[arg(long)]
        token: Address,
        /// Replace a network of that name.
        #[arg(long)]
        force: bool,
    },
}

/// One network's configuration as stored in `networks.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// The chain id the RPC must serve.
    pub chain_id: u64,
    /// The JSON-RPC URL.
    pub rpc_url: String,
    /// The Payment contract.
    pub payment: Address,
    /// The Registry contract.
    pub registry: Address,
    /// The token Payment's channels are funded in.
    pub token: Address,
    /// The block the contracts were deployed in, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_at_block: Option<u64>,
}

/// The whole `networks.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworksFile {
    /// Networks by name.
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkConfig>,
}

impl NetworksFile {
    /// Reads `path` (empty if it does not exist).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("{} is not a networks file", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes it atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let text = format!(
            "# Trusted Pods networks: `tpod network add | deploy | remove` keep this file.\n{}",
            toml::to_string(self).context("serializing the networks")?
        );
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("cannot write {}", path.display()))
    }

    fn names(&self) -> String {
        self.networks.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// A network as commands use it.
#[derive(Clone, Debug)]
pub struct Network {
    /// Its name (`devnet` for the devnet).
    pub name: String,
    /// The chain id its RPC must serve.
    pub chain_id: u64,
    /// The JSON-RPC URL (`--rpc-url` if given).
    pub rpc_url: String,
    /// Where its contracts are.
    pub contracts: ContractAddresses,
    /// The block its contracts were deployed in, if known.
    pub deployed_at_block: Option<u64>,
    /// Where its deployment records (`deployments.json`) live.
    pub dir: PathBuf,
    /// The devnet file, when this is the devnet.
    pub devnet: Option<DevnetFile>,
}

/// Trusted Pods' own directory: `$TPOD_HOME`, else `~/.tpod`.
pub fn tpod_home() -> PathBuf {
    if let Some(dir) = std::env::var_os("TPOD_HOME") {
        return PathBuf::from(dir);
    }
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from).join(".tpod")
}

/// The configured networks' file.
pub fn networks_path() -> PathBuf {
    tpod_home().join("networks.toml")
}

/// Where the records of configured network `name` live.
pub fn network_dir(name: &str) -> PathBuf {
    tpod_home().join("networks").join(name)
}

/// The network a command uses: `--network`/`$TPOD_NETWORK`, else the devnet in `devnet_dir`
/// while it is up, else the only configured network. `--rpc-url` replaces its URL.
pub fn resolve(args: &NetworkArgs, devnet_dir: &Path) -> anyhow::Result<Network> {
    let mut network = match args.network.as_deref() {
        Some(DEVNET) => devnet(devnet_dir)?.map_err(anyhow::Error::msg)?,
        Some(name) => configured(name)?,
        None => match devnet(devnet_dir)? {
            Ok(devnet) => devnet,
            Err(why_not) => {
                let file = NetworksFile::load(&networks_path())?;
                let mut names = file.networks.keys();
                match (names.next(), names.next()) {
                    (Some(only), None) => configured(only)?,
                    (None, _) => bail!(
                        "no network to use: {why_not}, and none is configured (`tpod network add` or `tpod network deploy`)"
                    ),
                    _ => bail!(
                        "several networks are configured ({}); pick one with --network NAME or $TPOD_NETWORK",
                        file.names()
                    ),
                }
            }
        },
    };
    if let Some(url) = &args.rpc_url {
        network.rpc_url.clone_from(url);
    }
    Ok(network)
}

/// The devnet in `dir` as a network if it is up, else why not.
fn devnet(dir: &Path) -> anyhow::Result<Result<Network, String>> {
    let Some(file) = DevnetFile::load(&tpod_devnet::file_path(dir))? else {
        return Ok(Err(format!("no devnet is up in {} (`tpod dev up`)", dir.display())));
    };
    if !tpod_devnet::anvil::is_running(file.anvil_pid) {
        return Ok(Err(format!(
            "the devnet in {} is down (anvil pid {} is not running; `tpod dev up` starts it again)",
            dir.display(),
            file.anvil_pid
        )));
    }
    Ok(Ok(Network {
        name: DEVNET.to_owned(),
        chain_id: file.chain_id,
        rpc_url: file.rpc_url.clone(),
        contracts: file.contracts,
        deployed_at_block: Some(0),
        dir: dir.to_owned(),
        devnet: Some(file),
    }))
}

/// The configured network `name`.
fn configured(name: &str) -> anyhow::Result<Network> {
    let path = networks_path();
    let file = NetworksFile::load(&path)?;
    let config = file.networks.get(name).with_context(|| {
        let known = if file.networks.is_empty() { "none".to_owned() } else { file.names() };
        format!("no network named {name:?} in {} (configured: {known}; the devnet is `devnet`)", path.display())
    })?;
    Ok(from_config(name, config))
}

fn from_config(name: &str, config: &NetworkConfig) -> Network {
    Network {
        name: name.to_owned(),
        chain_id: config.chain_id,
        rpc_url: config.rpc_url.clone(),
        contracts: ContractAddresses { payment: config.payment, registry: config.registry, token: config.token },
        deployed_at_block: config.deployed_at_block,
        dir: network_dir(name),
        devnet: None,
    }
}

/// Connects to `network` as `signer`: the RPC must serve the network's chain, and the contracts
/// must be there.
pub async fn connect(network: &Network, signer: PrivateKeySigner) -> anyhow::Result<Chain> {
    check_chain_id(network).await?;
    Chain::connect(&network.rpc_url, signer, network.contracts)
        .await
        .with_context(|| format!("connecting to network {} at {}", network.name, network.rpc_url))
}

/// Refuses an RPC that serves another chain than the network's.
pub async fn check_chain_id(network: &Network) -> anyhow::Result<()> {
    let (_, chain_id) = tpod_chain::client::connect_provider(&network.rpc_url, PrivateKeySigner::random())
        .await
        .with_context(|| format!("cannot reach network {} at {}", network.name, network.rpc_url))?;
    if chain_id != network.chain_id {
        bail!(
            "the RPC at {} serves chain {chain_id}, but network {} is chain {}; check --rpc-url or `tpod network show {}`",
            network.rpc_url,
            network.name,
            network.chain_id,
            network.name
        );
    }
    Ok(())
}

/// Runs a `tpod network` subcommand.
pub async fn run(
    command: NetworkCommand,
    args: &NetworkArgs,
    account: &crate::account::AccountArgs,
    key_file: Option<&Path>,
    devnet_dir: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let path = networks_path();
    match command {
        NetworkCommand::List => {
            let file = NetworksFile::load(&path)?;
            let current = resolve(&NetworkArgs { rpc_url: None, ..args.clone() }, devnet_dir).ok().map(|n| n.name);
            let mut rows = Vec::new();
            if let Ok(devnet) = devnet(devnet_dir)? {
                rows.push(devnet);
            }
            rows.extend(file.networks.iter().map(|(name, config)| from_config(name, config)));
            if json {
                let rows: Vec<_> = rows.iter().map(|n| describe(n, current.as_deref() == Some(&n.name))).collect();
                say!("{}", json!({ "networks": rows, "default": current, "file": path }));
            } else if rows.is_empty() {
                say!("no networks: `tpod dev up` starts the devnet; `tpod network add` or `deploy` adds one");
            } else {
                for n in &rows {
                    let mark = if current.as_deref() == Some(&n.name) { "*" } else { " " };
                    say!("{mark} {:<16} chain {:<10} {}", n.name, n.chain_id, n.rpc_url);
                }
            }
        }
        NetworkCommand::Show { name } => {
            let args = NetworkArgs { network: name.or(args.network.clone()), rpc_url: args.rpc_url.clone() };
            let network = resolve(&args, devnet_dir)?;
            let chain = connect(&network, PrivateKeySigner::random()).await?;
            let token = crate::units::Token::read(&chain).await?;
            if json {
                let mut shown = describe(&network, true);
                shown["token_symbol"] = json!(token.symbol);
                shown["token_decimals"] = json!(token.decimals);
                say!("{shown}");
            } else {
                say!("network {}: chain {}, RPC {}", network.name, network.chain_id, network.rpc_url);
                say!("  Payment   {}", network.contracts.payment);
                say!("  Registry  {}", network.contracts.registry);
                say!("  token     {} ({}, {} decimals)", network.contracts.token, token.symbol, token.decimals);
                if let Some(block) = network.deployed_at_block {
                    say!("  deployed at block {block}");
                }
                say!("  deployments recorded in {}", network.dir.display());
            }
        }
        NetworkCommand::Add { name, payment, registry, deployed_at_block, force } => {
            check_name(&name)?;
            let url = args.rpc_url.clone().context("give the network's --rpc-url")?;
            let mut file = NetworksFile::load(&path)?;
            refuse_existing(&file, &name, force)?;
            // The chain says which chain it is and which token Payment takes; nothing is trusted
            // from the command line that the chain can tell.
            let chain = Chain::connect_to_payment(&url, PrivateKeySigner::random(), payment, registry)
                .await
                .with_context(|| format!("checking the contracts at {url}"))?;
            let config = NetworkConfig {
                chain_id: chain.chain_id(),
                rpc_url: url,
                payment,
                registry,
                token: chain.contracts().token,
                deployed_at_block,
            };
            file.networks.insert(name.clone(), config.clone());
            file.save(&path)?;
            report_added("added", &name, &config, &path, json);
        }
        NetworkCommand::Remove { name } => {
            let mut file = NetworksFile::load(&path)?;
            if file.networks.remove(&name).is_none() {
                bail!("no network named {name:?} in {} (configured: {})", path.display(), file.names());
            }
            file.save(&path)?;
            let dir = network_dir(&name);
            if json {
                say!("{}", json!({ "removed": name, "records_kept_in": dir.exists().then_some(&dir) }));
            } else {
                say!("removed network {name}");
                if dir.exists() {
                    say!("  its deployment records stay in {}", dir.display());
                }
            }
        }
        NetworkCommand::Deploy { name, token, force } => {
            check_name(&name)?;
            let url = args.rpc_url.clone().context("give the chain's --rpc-url")?;
            let mut file = NetworksFile::load(&path)?;
            refuse_existing(&file, &name, force)?;
            let deployer = match (key_file, &account.account) {
                (None, None) => {
                    bail!("give the deployer with --account NAME|ADDRESS|PATH (or --key-file); it pays the gas")
                }
                _ => {
                    // Not the devnet: no default account.
                    let placeholder = Network {
                        name: name.clone(),
                        chain_id: 0,
                        rpc_url: url.clone(),
                        contracts: ContractAddresses { payment: Address::ZERO, registry: Address::ZERO, token },
                        deployed_at_block: None,
                        dir: network_dir(&name),
                        devnet: None,
                    };
                    crate::account::signer(account, key_file, &placeholder)?
                }
            };
            let (_, chain_id) = tpod_chain::client::connect_provider(&url, PrivateKeySigner::random())
                .await
                .with_context(|| format!("cannot reach {url}"))?;
            let deployed =
                tpod_devnet::deploy::deploy_for_token(&url, deployer.clone(), token).await.with_context(|| {
                    format!("deploying Payment and Registry from {} on chain {chain_id}", deployer.address())
                })?;
            let config = NetworkConfig {
                chain_id,
                rpc_url: url,
                payment: deployed.contracts.payment,
                registry: deployed.contracts.registry,
                token,
                deployed_at_block: Some(deployed.block),
            };
            file.networks.insert(name.clone(), config.clone());
            file.save(&path)?;
            report_added("deployed", &name, &config, &path, json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(n: &Network, default: bool) -> serde_json::Value {
    json!({
        "name": n.name, "chain_id": n.chain_id, "rpc_url": n.rpc_url, "payment": n.contracts.payment,
        "registry": n.contracts.registry, "token": n.contracts.token, "deployed_at_block": n.deployed_at_block,
        "dir": n.dir, "devnet": n.devnet.is_some(), "default": default,
    })
}

fn report_added(verb: &str, name: &str, c: &NetworkConfig, path: &Path, json: bool) {
    if json {
        say!(
            "{}",
            json!({
                "name": name, "chain_id": c.chain_id, "rpc_url": c.rpc_url, "payment": c.payment,
                "registry": c.registry, "token": c.token, "deployed_at_block": c.deployed_at_block,
            })
        );
    } else {
        say!("{verb} network {name}: chain {}, RPC {}", c.chain_id, c.rpc_url);
        say!("  Payment   {}", c.payment);
        say!("  Registry  {}", c.registry);
        say!("  token     {}", c.token);
        if let Some(block) = c.deployed_at_block {
            say!("  deployed at block {block}");
        }
        say!("recorded in {}; use it with --network {name}", path.display());
    }
}

fn check_name(name: &str) -> anyhow::Result<()> {
    if name == DEVNET {
        bail!("`devnet` is the local devnet's name (`tpod dev up`); choose another");
    }
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')) {
        bail!("network name {name:?}: use letters, digits, '-' and '_'");
    }
    Ok(())
}

fn refuse_existing(file: &NetworksFile, name: &str, force: bool) -> anyhow::Result<()> {
    if !force && file.networks.contains_key(name) {
        bail!("a network named {name} exists; `tpod network remove {name}` first, or pass --force");
    }
    Ok(())
}

/// The directory of deployment records for the network `args` select: the devnet's directory,
/// or `~/.tpod/networks/<name>/`.
pub fn records_dir(args: &NetworkArgs, devnet_dir: &Path) -> anyhow::Result<PathBuf> {
    Ok(resolve(args, devnet_dir)?.dir)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn networks_file_round_trips_and_refuses_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("networks.toml");
        assert_eq!(NetworksFile::load(&path).unwrap(), NetworksFile::default());
        let mut file = NetworksFile::default();
        file.networks.insert(
            "test".into(),
            NetworkConfig {
                chain_id: 5,
                rpc_url: "http://127.0.0.1:1".into(),
                payment: Address::repeat_byte(1),
                registry: Address::repeat_byte(2),
                token: Address::repeat_byte(3),
                deployed_at_block: Some(7),
            },
        );
        file.save(&path).unwrap();
        assert_eq!(NetworksFile::load(&path).unwrap(), file);
        std::fs::write(&path, "[networks.x]\nchain_id = 1\nrpc = \"u\"\n").unwrap();
        let err = format!("{:#}", NetworksFile::load(&path).unwrap_err());
        assert!(err.contains("not a networks file") && err.contains("rpc"), "{err}");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("devnet").unwrap_err().to_string().contains("choose another"));
        assert!(check_name("a/b").is_err());
        assert!(check_name("").is_err());
        check_name("sepolia-2").unwrap();
    }
}
