//! `tpod-provider`: the provider daemon's entry point. Logic lives in the `tpod_provider` library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// The Trusted Pods provider daemon: runs publishers' pods for payment.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The provider's configuration file (TOML).
    #[arg(long, short, env = "TPOD_PROVIDER_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Remove every pod (containers, network, files) and exit, instead of serving. For a
    /// provider being taken down for good; the daemon must not be running.
    #[arg(long)]
    purge: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Remove the provider from the Registry (its profile and every table it offers; the tables
    /// themselves stay) and exit. An account that is not listed is left alone (exit code 0).
    /// Stop the daemon first, or set `[chain] register = false`: a running daemon lists itself
    /// again within ten minutes.
    Deregister,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,libp2p=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    // Required, but declared optional so that it may follow a subcommand (`deregister --config`).
    // (clap does not allow a global argument to be required.)
    let Some(config) = args.config else {
        use clap::CommandFactory as _;
        Args::command().error(clap::error::ErrorKind::MissingRequiredArgument, "--config <CONFIG> is required").exit()
    };
    let settings = tpod_provider::config::Settings::load(&config)?;
    if let Some(Command::Deregister) = args.command {
        return deregister(&settings).await;
    }
    if args.purge {
        let removed = tpod_provider::daemon::purge(&settings).await.context("purging the provider's pods")?;
        println!("removed {removed} pods");
        return Ok(());
    }
    let daemon = tpod_provider::daemon::start(settings)
        .await
        .with_context(|| format!("starting the provider from {}", config.display()))?;
    println!("{}", serde_json::to_string(daemon.info())?);
    wait_for_stop().await?;
    // Pods keep running: a restarted provider re-adopts them.
    tracing::info!("stopping; pods keep running");
    Ok(())
}

async fn deregister(settings: &tpod_provider::config::Settings) -> anyhow::Result<()> {
    use tpod_provider::registration::Deregistered;
    let chain = &settings.config.chain;
    let account = tpod_provider::enclave::read_key(&chain.key_file).context("loading the provider account key")?;
    let address = account.address();
    if let Some(pid) = running_daemon(settings) {
        eprintln!(
            "warning: a tpod-provider (pid {pid}) serves from {}; unless it is stopped or has \
             [chain] register = false it lists itself again",
            settings.config.data_dir.display()
        );
    }
    let outcome = tpod_provider::registration::deregister(settings, account)
        .await
        .with_context(|| format!("removing provider {address} from the Registry {}", chain.registry))?;
    match outcome {
        Deregistered::NotRegistered => {
            println!("provider {address} is not listed in the Registry {}: nothing to do", chain.registry);
        }
        Deregistered::Removed { uri, tables } => {
            let tables: Vec<String> = tables.iter().map(ToString::to_string).collect();
            println!("removed provider {address} from the Registry {}", chain.registry);
            println!("  profile cleared (was {uri})");
            if tables.is_empty() {
                println!("  it offered no pricing table");
            } else {
                println!("  unsubscribed from pricing table(s) {}", tables.join(", "));
            }
        }
    }
    Ok(())
}

/// The pid in the data directory's `provider.json`, if that process still runs.
fn running_daemon(settings: &tpod_provider::config::Settings) -> Option<u32> {
    let path = tpod_provider::daemon::ProviderInfo::path(&settings.config.data_dir);
    let info: tpod_provider::daemon::ProviderInfo = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let running = std::path::Path::new(&format!("/proc/{}", info.pid)).exists() && info.pid != std::process::id();
    running.then_some(info.pid)
}

async fn wait_for_stop() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
