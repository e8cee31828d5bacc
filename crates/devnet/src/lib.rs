//! The local development network: a pinned anvil on loopback with the Trusted Pods contracts
//! deployed and dev accounts funded, described by a devnet file that later commands read.
//!
//! [`up`] is idempotent (a running devnet is left as it is), [`status`] checks what the file
//! claims against the live chain, [`down`] stops anvil and removes the file. Tests use
//! [`anvil::AnvilProcess`] and [`deploy`] directly for throwaway chains, and
//! [`registry::LocalRegistry`] for a private image registry on loopback.

pub mod anvil;
pub mod deploy;
pub mod error;
pub mod file;
pub mod registry;

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::U256;
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use tpod_chain::client::connect_provider;

pub use error::DevnetError;
pub use file::{DevAccount, DevnetFile};

/// The file name of the devnet file inside the devnet directory.
pub const DEVNET_FILE: &str = "devnet.json";
/// anvil's log inside the devnet directory.
pub const ANVIL_LOG: &str = "anvil.log";
/// The dev accounts `up` creates, in order; with more than one provider, the accounts of the
/// others ([`provider_account_name`]) follow.
pub const ACCOUNT_NAMES: [&str; 3] = ["deployer", "publisher", "provider"];
/// The most providers a devnet runs.
pub const MAX_PROVIDERS: u8 = 8;
/// Native currency each dev account gets, in whole ETH.
pub const DEV_NATIVE_FUNDS: u64 = 1_000;
/// Test tokens the publisher account gets, in whole TPT.
pub const DEV_TOKEN_FUNDS: u64 = 1_000_000;

/// `n` whole units of an 18-decimals currency, in base units.
pub fn whole(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18u64))
}

/// The default devnet directory: `$TPOD_DEVNET_DIR`, else `~/.tpod/devnet`.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TPOD_DEVNET_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".tpod").join("devnet")
}

/// The dev account of the devnet's provider `index` (1-based): `provider` for the first, so
/// everything written for a one-provider devnet keeps working, then `provider-2`, `provider-3`, ...
pub fn provider_account_name(index: u8) -> String {
    if index <= 1 { "provider".to_owned() } else { format!("provider-{index}") }
}

/// The devnet file's path in `dir`.
pub fn file_path(dir: &Path) -> PathBuf {
    dir.join(DEVNET_FILE)
}

/// What `up` is asked to do.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// Where the devnet file and anvil's log go.
    pub dir: PathBuf,
    /// The anvil binary, if not found on `PATH`.
    pub anvil: Option<PathBuf>,
    /// The loopback port for the RPC; 0 picks a free one.
    pub port: u16,
    /// The chain id.
    pub chain_id: u64,
    /// How many provider accounts to create and fund, 1 to [`MAX_PROVIDERS`] (values outside
    /// are clamped). A running devnet keeps the accounts it has.
    pub providers: u8,
}

/// What `up` did.
#[derive(Clone, Debug)]
pub enum UpOutcome {
    /// A devnet was already running; nothing was changed.
    AlreadyUp(DevnetFile),
    /// A new devnet was started.
    Started(DevnetFile),
}

/// Starts a devnet unless one is already up in `opts.dir`.
pub async fn up(opts: &UpOptions) -> Result<UpOutcome, DevnetError> {
    let path = file_path(&opts.dir);
    if let Some(existing) = DevnetFile::load(&path)? {
        if is_live(&existing).await {
            return Ok(UpOutcome::AlreadyUp(existing));
        }
        tracing::info!(path = %path.display(), "devnet file is stale (anvil gone); starting afresh");
        anvil::stop(existing.anvil_pid, Duration::from_secs(5)).await;
    }
    let bin = anvil::locate(opts.anvil.as_deref())?;
    let found = anvil::version(&bin)?;
    if found != anvil::pinned_version() {
        tracing::warn!(
            anvil = %bin.display(),
            found,
            pinned = anvil::pinned_version(),
            "this anvil is not the pinned version; run tools/bootstrap and put tools/bin first on PATH"
        );
    }
    std::fs::create_dir_all(&opts.dir).map_err(|e| DevnetError::io(&opts.dir, e))?;
    let mut node = anvil::AnvilProcess::spawn(&anvil::AnvilOptions {
        bin,
        port: opts.port,
        chain_id: opts.chain_id,
        state: None,
        log: opts.dir.join(ANVIL_LOG),
        detach: true,
    })
    .await?;
    // If anything below fails, `node` is dropped and kills anvil: no half-made devnet is left.
    let file = provision(&node, opts.chain_id, opts.providers).await?;
    file.save(&path)?;
    node.release();
    Ok(UpOutcome::Started(file))
}

/// Deploys the contracts on a fresh anvil and funds fresh dev accounts, `providers` of them for
/// providers. Providers get native funds only (gas for registration and claims): they are paid
/// in tokens by publishers.
async fn provision(node: &anvil::AnvilProcess, chain_id: u64, providers: u8) -> Result<DevnetFile, DevnetError> {
    let mut accounts: Vec<DevAccount> = ACCOUNT_NAMES.iter().map(|name| DevAccount::generate(name)).collect();
    for index in 2..=providers.clamp(1, MAX_PROVIDERS) {
        accounts.push(DevAccount::generate(&provider_account_name(index)));
    }
    for account in &accounts {
        deploy::set_native_balance(&node.url, account.address, whole(DEV_NATIVE_FUNDS)).await?;
    }
    let deployer = accounts[0].signer()?;
    let contracts = deploy::deploy_contracts(&node.url, deployer.clone()).await?;
    let publisher = accounts[1].address;
    deploy::mint_test_tokens(&node.url, deployer, contracts, publisher, whole(DEV_TOKEN_FUNDS)).await?;
    Ok(DevnetFile {
        version: file::FORMAT_VERSION,
        chain_id,
        rpc_url: node.url.clone(),
        anvil_pid: node.pid(),
        contracts,
        accounts,
    })
}

/// Whether the devnet the file describes answers on its RPC with its chain id.
async fn is_live(file: &DevnetFile) -> bool {
    if !anvil::is_running(file.anvil_pid) {
        return false;
    }
    match connect_provider(&file.rpc_url, PrivateKeySigner::random()).await {
        Ok((_, chain_id)) => chain_id == file.chain_id,
        Err(_) => false,
    }
}

/// A devnet's state as seen on the live chain.
#[derive(Clone, Debug)]
pub struct Status {
    /// What the devnet file says.
    pub file: DevnetFile,
    /// Whether the anvil process is alive.
    pub anvil_running: bool,
    /// The latest block, if the RPC answers.
    pub block: Option<u64>,
    /// Why the RPC did not answer, if it did not.
    pub rpc_error: Option<String>,
    /// Each contract with whether code is deployed at its address.
    pub contracts: Vec<(&'static str, alloy::primitives::Address, bool)>,
    /// Each account with its native and test-token balances.
    pub balances: Vec<(String, alloy::primitives::Address, U256, U256)>,
}

impl Status {
    /// Whether everything the file claims holds.
    pub fn healthy(&self) -> bool {
        self.anvil_running && self.block.is_some() && self.contracts.iter().all(|(_, _, ok)| *ok)
    }
}

/// Reports on the devnet in `dir`.
pub async fn status(dir: &Path) -> Result<Status, DevnetError> {
    let path = file_path(dir);
    let file = DevnetFile::load(&path)?.ok_or_else(|| DevnetError::NotUp { dir: dir.to_owned() })?;
    let mut status = Status {
        anvil_running: anvil::is_running(file.anvil_pid),
        block: None,
        rpc_error: None,
        contracts: Vec::new(),
        balances: Vec::new(),
        file,
    };
    let provider = match connect_provider(&status.file.rpc_url, PrivateKeySigner::random()).await {
        Ok((provider, _)) => provider,
        Err(e) => {
            status.rpc_error = Some(e.to_string());
            return Ok(status);
        }
    };
    let rpc = |e: alloy::transports::TransportError| {
        DevnetError::from(tpod_chain::ChainError::Rpc { call: "status", reason: e.to_string() })
    };
    status.block = Some(provider.get_block_number().await.map_err(rpc)?);
    let c = status.file.contracts;
    for (name, address) in [("Payment", c.payment), ("Registry", c.registry), ("TestToken", c.token)] {
        let code = provider.get_code_at(address).await.map_err(rpc)?;
        status.contracts.push((name, address, !code.is_empty()));
    }
    let token = tpod_chain::contracts::TestToken::new(c.token, &provider);
    for account in &status.file.accounts {
        let native = provider.get_balance(account.address).await.map_err(rpc)?;
        let tokens =
            token.balanceOf(account.address).call().await.map_err(|e| {
                DevnetError::from(tpod_chain::ChainError::Rpc { call: "balanceOf", reason: e.to_string() })
            })?;
        status.balances.push((account.name.clone(), account.address, native, tokens));
    }
    Ok(status)
}

/// Stops the devnet in `dir` and removes its file. Returns whether anvil was still running.
pub async fn down(dir: &Path) -> Result<bool, DevnetError> {
    let path = file_path(dir);
    let file = DevnetFile::load(&path)?.ok_or_else(|| DevnetError::NotUp { dir: dir.to_owned() })?;
    let was_running = anvil::stop(file.anvil_pid, Duration::from_secs(10)).await;
    std::fs::remove_file(&path).map_err(|e| DevnetError::io(&path, e))?;
    Ok(was_running)
}

/// A devnet for one test: anvil on a free port, contracts deployed, accounts funded; anvil is
/// killed and its directory removed when this is dropped.
#[derive(Debug)]
pub struct Throwaway {
    /// The running anvil.
    pub anvil: anvil::AnvilProcess,
    /// What a devnet file for it would say.
    pub file: DevnetFile,
    /// anvil's log directory.
    pub dir: tempfile::TempDir,
}

/// Starts a [`Throwaway`] devnet with the given anvil, or the one [`anvil::locate`] finds.
pub async fn throwaway(anvil_bin: Option<&Path>) -> Result<Throwaway, DevnetError> {
    let dir = tempfile::tempdir().map_err(|e| DevnetError::io(Path::new("temporary directory"), e))?;
    let node = anvil::AnvilProcess::spawn(&anvil::AnvilOptions {
        bin: anvil::locate(anvil_bin)?,
        port: 0,
        chain_id: 31337,
        state: None,
        log: dir.path().join(ANVIL_LOG),
        detach: false,
    })
    .await?;
    let file = provision(&node, 31337, 1).await?;
    Ok(Throwaway { anvil: node, file, dir })
}
