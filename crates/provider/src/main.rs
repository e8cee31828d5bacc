//! `tpod-provider`: the provider daemon's entry point. Logic lives in the `tpod_provider` library.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// The Trusted Pods provider daemon: runs publishers' pods for payment.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The provider's configuration file (TOML).
    #[arg(long, short, env = "TPOD_PROVIDER_CONFIG")]
    config: PathBuf,
    /// Remove every pod (containers, network, files) and exit, instead of serving. For a
    /// provider being taken down for good; the daemon must not be running.
    #[arg(long)]
    purge: bool,
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
    let settings = tpod_provider::config::Settings::load(&args.config)?;
    if args.purge {
        let removed = tpod_provider::daemon::purge(&settings).await.context("purging the provider's pods")?;
        println!("removed {removed} pods");
        return Ok(());
    }
    let daemon = tpod_provider::daemon::start(settings)
        .await
        .with_context(|| format!("starting the provider from {}", args.config.display()))?;
    println!("{}", serde_json::to_string(daemon.info())?);
    wait_for_stop().await?;
    // Pods keep running: a restarted provider re-adopts them.
    tracing::info!("stopping; pods keep running");
    Ok(())
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
