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

pub mod dev;

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
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a local development network (anvil, contracts, funded dev accounts).
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
    }
}
