//! `tpod-provider`: the provider daemon's entry point. Logic lives in the `tpod_provider` library.

use clap::Parser;

/// The Trusted Pods provider daemon.
#[derive(Parser)]
#[command(version, about)]
struct Args {}

fn main() -> anyhow::Result<()> {
    let Args {} = Args::parse();
    anyhow::bail!("the provider daemon is not built yet; this binary only fixes its name and CLI entry point")
}
