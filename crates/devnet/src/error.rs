//! Errors of devnet management, each naming the file or tool concerned and what to do.

use std::path::{Path, PathBuf};

/// What can go wrong bringing a devnet up, reading it, or taking it down.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// No anvil binary was found.
    #[error(
        "anvil not found ({searched}). Run `tools/bootstrap` in the Trusted Pods checkout (it installs \
         the pinned anvil into tools/bin) and put tools/bin on PATH, or pass --anvil <path>"
    )]
    AnvilMissing {
        /// Where it was looked for.
        searched: String,
    },
    /// anvil started but exited or never listened.
    #[error("anvil did not start: {reason}; see its log at {log}")]
    AnvilFailed {
        /// What happened.
        reason: String,
        /// anvil's log file.
        log: PathBuf,
    },
    /// There is no devnet file.
    #[error("no devnet is up in {dir}: run `tpod dev up`")]
    NotUp {
        /// The devnet directory.
        dir: PathBuf,
    },
    /// The devnet file does not parse.
    #[error(
        "devnet file {path} is malformed at line {line}, column {column}: {reason}. Delete it and \
         run `tpod dev up` to make a new devnet"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong.
        reason: String,
    },
    /// The devnet file names an account it does not have.
    #[error("devnet file {path} has no account named '{name}'")]
    NoSuchAccount {
        /// The file.
        path: PathBuf,
        /// The account name asked for.
        name: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A tool the local registry needs is not installed.
    #[error("{tool} not found: install the Debian package {package} (`tools/bootstrap` does)")]
    RegistryToolMissing {
        /// The binary.
        tool: String,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// `htpasswd` could not make the registry's password file.
    #[error("htpasswd failed: {reason}")]
    RegistryHtpasswd {
        /// What happened.
        reason: String,
    },
    /// The local registry started but exited or never listened.
    #[error("docker-registry did not start: {reason}; see its log at {log}")]
    RegistryFailed {
        /// What happened.
        reason: String,
        /// The registry's log file.
        log: PathBuf,
    },
    /// Pushing to the local registry failed.
    #[error("cannot push {reference}: {reason}")]
    RegistryPush {
        /// The image reference pushed to.
        reference: String,
        /// What went wrong.
        reason: String,
    },
    /// Talking to the chain failed.
    #[error(transparent)]
    Chain(Box<tpod_chain::ChainError>),
}

impl From<tpod_chain::ChainError> for DevnetError {
    fn from(e: tpod_chain::ChainError) -> Self {
        Self::Chain(Box::new(e))
    }
}

impl DevnetError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }
}
