//! The publisher CLI `tpod`: command-line parsing, and one module per command group. Output is
//! for people by default and JSON with `--json`.

/// Prints a line to stdout. A closed pipe (`tpod ... | head`) ends output quietly instead of
/// panicking as `println!` would.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod account;
pub mod attest;
pub mod billing;
pub mod delivery;
pub mod deployments;
pub mod dev;
pub mod devprovider;
pub mod list;
pub mod network;
pub mod pick;
pub mod pods;
mod progress;
pub mod providers;
pub mod units;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Trusted Pods: deploy confidential pods to attested providers and pay them per second.
#[derive(Debug, Parser)]
#[command(name = "tpod", version, about)]
pub struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// The local devnet's directory (devnet file and anvil log).
    #[arg(long, global = true, env = "TPOD_DEVNET_DIR", value_name = "DIR")]
    pub devnet_dir: Option<PathBuf>,
    /// Which provider and publisher key pod commands use.
    #[command(flatten)]
    pub target: pods::Target,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented sample manifest that deploys as is.
    Init {
        /// Where to write it.
        #[arg(default_value = "tpod.yaml")]
        path: PathBuf,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Check a provider's attestation: that it runs the provider software your policy trusts in
    /// a genuine TEE, bound to the live connection. Prints each check and why it passed or failed.
    Verify {
        /// The provider, as `<peer-id>@<multiaddr>` (default: --provider, else the devnet's).
        provider: Option<String>,
    },
    /// Deploy a pod: verify the provider's attestation, upload its images, fund its payment
    /// channel, start it on the provider.
    Deploy(pods::DeployArgs),
    /// List the providers in the Registry, cheapest first for a manifest (or 1 CPU + 1 GiB), and
    /// probe the cheapest: verified profile, quote at their registered prices, latency.
    Providers(providers::ProvidersArgs),
    /// Encrypt a manifest's images and upload them to the provider, without deploying (a later
    /// deploy to that provider sends nothing again).
    Upload(delivery::UploadArgs),
    /// List every deployment and payment channel recorded on the network, with the funds each
    /// channel holds (a failed deploy's funded channel too).
    List,
    /// Show a deployment's state, URL and containers.
    Status {
        /// The deployment (default: the only one).
        name: Option<String>,
    },
    /// Print a container's logs.
    Logs(pods::LogsArgs),
    /// Replace a deployment's pod with a new version of its manifest.
    Update(pods::DeployArgs),
    /// Stop a deployment's pod and remove everything of it on the provider; the provider makes
    /// its final claim and the channel is closed, returning what is left.
    Delete {
        /// The deployment (default: the only one).
        name: Option<String>,
    },
    /// Show what a deployment used, what it cost, what was claimed and what is left.
    Bill {
        /// The deployment (default: the only one).
        name: Option<String>,
    },
    /// Add funds to a deployment's payment channel (resumes a pod paused for lack of funds).
    Topup {
        /// Amount in token units (12.5 or 12.5TPT), or base units with the suffix `base`
        /// (12500000000000000000base).
        amount: units::Amount,
        /// The deployment (default: the only one).
        name: Option<String>,
    },
    /// Ask to unlock a deployment's channel: the pod stops, the provider makes its final claim.
    Unlock {
        /// The deployment, or a channel id (0x...) as `tpod list` shows (default: the only one).
        name: Option<String>,
    },
    /// After the unlock delay (by the chain's clock), take back everything the provider has not
    /// claimed and close the channel.
    Withdraw {
        /// The deployment, or a channel id (0x...) as `tpod list` shows (default: the only one).
        name: Option<String>,
    },
    /// Agree to the new prices the provider proposes for a deployment.
    AcceptPricing {
        /// The deployment (default: the only one).
        name: Option<String>,
    },
    /// Manage networks: the chains and contracts commands use (`--network`).
    Network {
        /// What to do.
        #[command(subcommand)]
        command: network::NetworkCommand,
    },
    /// Manage accounts: keystore files (compatible with `cast wallet` and geth) in ~/.tpod/keystores.
    Account {
        /// What to do.
        #[command(subcommand)]
        command: account::AccountCommand,
    },
    /// Run a local development network (anvil, contracts, funded dev accounts, a provider).
    Dev {
        /// What to do with it.
        #[command(subcommand)]
        command: dev::DevCommand,
    },
}

/// Parses the command line, runs the command, and maps failures to a message and exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TPOD_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let devnet_dir = cli.devnet_dir.unwrap_or_else(tpod_devnet::default_dir);
    match cli.command {
        Command::Dev { command } => dev::run(command, &devnet_dir, cli.json).await,
        Command::Network { command } => {
            let key_file = cli.target.key_file.as_deref();
            network::run(command, &cli.target.network, &cli.target.account, key_file, &devnet_dir, cli.json).await
        }
        Command::Account { command } => {
            account::run(command, &cli.target.account, cli.target.key_file.as_deref(), cli.json)
        }
        Command::Init { path, force } => init(&path, force, cli.json),
        Command::Verify { provider } => {
            let provider = provider.or(cli.target.provider.clone());
            attest::verify_command(provider.as_deref(), &cli.target.attest, &devnet_dir, cli.json).await
        }
        Command::Deploy(args) => pods::deploy(&args, &cli.target, &devnet_dir, cli.json).await,
        Command::Providers(args) => providers::providers(&args, &cli.target, &devnet_dir, cli.json).await,
        Command::Upload(args) => delivery::upload_command(&args, &cli.target, &devnet_dir, cli.json).await,
        Command::List => list::list(&cli.target, &devnet_dir, cli.json).await,
        Command::Status { name } => pods::status(name.as_deref(), &cli.target, &devnet_dir, cli.json).await,
        Command::Logs(args) => pods::logs(&args, &cli.target, &devnet_dir, cli.json).await,
        Command::Update(args) => pods::update(&args, &cli.target, &devnet_dir, cli.json).await,
        Command::Delete { name } => pods::delete(name.as_deref(), &cli.target, &devnet_dir, cli.json).await,
        Command::Bill { name } => billing::bill(name.as_deref(), &cli.target, &devnet_dir, cli.json).await,
        Command::Topup { amount, name } => {
            billing::topup(amount, name.as_deref(), &cli.target, &devnet_dir, cli.json).await
        }
        Command::Unlock { name } => billing::unlock(name.as_deref(), &cli.target, &devnet_dir, cli.json).await,
        Command::Withdraw { name } => billing::withdraw(name.as_deref(), &cli.target, &devnet_dir, cli.json).await,
        Command::AcceptPricing { name } => {
            billing::accept_pricing(name.as_deref(), &cli.target, &devnet_dir, cli.json).await
        }
    }
}

/// `tpod init`: writes the sample manifest, never over an existing file unless asked.
fn init(path: &std::path::Path, force: bool, json: bool) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).with_context(|| {
        if path.exists() && !force {
            format!("{} already exists; pass --force to replace it", path.display())
        } else {
            format!("cannot write {}", path.display())
        }
    })?;
    file.write_all(tpod_manifest::SAMPLE.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    let image = sample_image(path)?;
    if json {
        say!("{}", serde_json::json!({ "manifest": path, "image": image }));
    } else {
        say!("wrote {}: a sample pod manifest (busybox httpd on port 8080)", path.display());
        if let Some(image) = image {
            say!("built its image in {} from this machine's busybox", image.display());
        }
        say!("deploy it with: tpod deploy {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Builds the sample's image (`./image`, busybox httpd serving `./www/index.html`) next to the
/// manifest, so the sample deploys as is; an existing `./image` is left alone, and a machine
/// without `/bin/busybox` gets the manifest only.
fn sample_image(manifest: &std::path::Path) -> anyhow::Result<Option<PathBuf>> {
    use anyhow::Context as _;
    let dir = manifest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let image = dir.join("image");
    let busybox = std::path::Path::new("/bin/busybox");
    if image.exists() || !busybox.exists() {
        return Ok(None);
    }
    let page = dir.join("www/index.html");
    if !page.exists() {
        std::fs::create_dir_all(dir.join("www"))
            .with_context(|| format!("cannot create {}", dir.join("www").display()))?;
        std::fs::write(&page, "hello from trusted pods\n")
            .with_context(|| format!("cannot write {}", page.display()))?;
    }
    tpod_image::hello::build(&image, busybox, &page)
        .with_context(|| format!("building the sample image in {}", image.display()))?;
    Ok(Some(image))
}

/// Where images converted from docker archives are kept: `$TPOD_CACHE_DIR`, else
/// `~/.tpod/cache/images`.
pub fn image_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TPOD_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".tpod/cache/images")
}
