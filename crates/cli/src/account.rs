//! `tpod account new | import | list`, and the account a command signs with.
//!
//! Accounts are Ethereum keystore v3 files (scrypt, AES-128-CTR) in `~/.tpod/keystores/`, read
//! and written by alloy's keystore support, so `cast wallet` and geth use them as they are and
//! tpod uses theirs. Files tpod writes also carry the `address` field geth writes, so `list`
//! shows addresses without a password. The password comes from `--password-file`, else
//! `$TPOD_PASSWORD`, else a prompt on the terminal; never from the command line. A raw hex key
//! file (`--key-file`) still works, for the devnet's throwaway accounts.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use alloy::primitives::Address;
use alloy::signers::local::{LocalSignerError, PrivateKeySigner};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use zeroize::Zeroizing;

use crate::network::Network;

/// The environment variable a keystore password may come from.
pub const PASSWORD_ENV: &str = "TPOD_PASSWORD";

/// Which account signs, and where its password comes from.
#[derive(Debug, Clone, Default, Args)]
pub struct AccountArgs {
    /// The account that signs: a keystore name in ~/.tpod/keystores (`tpod account list`), its
    /// address, or the path of a keystore file (default on the devnet: its publisher).
    #[arg(long, env = "TPOD_ACCOUNT", global = true, value_name = "NAME|ADDRESS|PATH")]
    pub account: Option<String>,
    /// A file whose first line is the keystore's password (else $TPOD_PASSWORD, else a prompt).
    #[arg(long, env = "TPOD_PASSWORD_FILE", global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// `tpod account` subcommands.
#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account: a new random key in a keystore file protected by a password.
    New {
        /// Its name (default: its address).
        name: Option<String>,
    },
    /// Import a private key into a keystore file protected by a password.
    Import {
        /// The account's name.
        name: String,
        /// A file holding the private key in hex (never give a key on the command line).
        #[arg(long, value_name = "FILE")]
        private_key_file: PathBuf,
    },
    /// List the keystores in ~/.tpod/keystores with their addresses.
    List,
    /// Unlock --account (or read --key-file) and show its address: checks the password.
    Show,
}

/// Where keystores live: `~/.tpod/keystores` (or `$TPOD_HOME/keystores`).
pub fn keystores_dir() -> PathBuf {
    crate::network::tpod_home().join("keystores")
}

/// Runs a `tpod account` subcommand.
pub fn run(
    command: AccountCommand,
    args: &AccountArgs,
    key_file: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        AccountCommand::New { name } => {
            let signer = PrivateKeySigner::random();
            let name = name.unwrap_or_else(|| signer.address().to_string());
            let path = create(&name, &signer, args)?;
            report_created("created", &name, signer.address(), &path, json);
        }
        AccountCommand::Import { name, private_key_file } => {
            let signer = read_key_file(&private_key_file)?;
            let path = create(&name, &signer, args)?;
            report_created("imported", &name, signer.address(), &path, json);
        }
        AccountCommand::Show => {
            let (signer, source) = match (key_file, &args.account) {
                (Some(_), Some(_)) => bail!("give --account or --key-file, not both"),
                (Some(path), None) => (read_key_file(path)?, path.to_owned()),
                (None, Some(spec)) => {
                    let path = find_keystore(spec)?;
                    (unlock(&path, args)?, path)
                }
                (None, None) => bail!("give the account to show with --account NAME|ADDRESS|PATH or --key-file"),
            };
            if json {
                say!("{}", json!({ "address": signer.address(), "path": source }));
            } else {
                say!("{} (from {})", signer.address(), source.display());
            }
        }
        AccountCommand::List => {
            let accounts = list(&keystores_dir())?;
            if json {
                let rows: Vec<_> = accounts
                    .iter()
                    .map(|(name, address, path)| json!({ "name": name, "address": address, "path": path }))
                    .collect();
                say!("{}", json!({ "keystores": keystores_dir(), "accounts": rows }));
            } else if accounts.is_empty() {
                say!("no accounts in {}; create one with `tpod account new`", keystores_dir().display());
            } else {
                for (name, address, _) in &accounts {
                    let address = address.map_or_else(|| "(address not recorded)".to_owned(), |a| a.to_string());
                    say!("{name:<24} {address}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report_created(verb: &str, name: &str, address: Address, path: &Path, json: bool) {
    if json {
        say!("{}", json!({ "name": name, "address": address, "path": path }));
    } else {
        say!("{verb} account {name}: {address}");
        say!("  keystore {} (use it with --account {name})", path.display());
    }
}

/// The key a command signs with: `--key-file` (hex), else `--account` (a keystore), else the
/// devnet's publisher when the network is the devnet.
pub fn signer(args: &AccountArgs, key_file: Option<&Path>, network: &Network) -> anyhow::Result<PrivateKeySigner> {
    match (key_file, &args.account) {
        (Some(_), Some(_)) => bail!("give --account or --key-file, not both"),
        (Some(path), None) => read_key_file(path),
        (None, Some(spec)) => unlock(&find_keystore(spec)?, args),
        (None, None) => match &network.devnet {
            Some(devnet) => Ok(devnet.account("publisher")?.signer()?),
            None => bail!(
                "no account for network {}: give --account NAME|ADDRESS|PATH (`tpod account list`, `tpod account new`) or --key-file",
                network.name
            ),
        },
    }
}

/// Reads a hex private key (with or without `0x`) from `path`.
pub fn read_key_file(path: &Path) -> anyhow::Result<PrivateKeySigner> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("cannot read key file {}", path.display()))?,
    );
    text.trim()
        .parse::<PrivateKeySigner>()
        .map_err(|_| anyhow::anyhow!("key file {} does not hold a hex private key", path.display()))
}

/// The keystore file `spec` names: a path (anything with a `/`, or an existing file that is not
/// a keystore's name), a name in the keystores directory, or an address recorded in one.
pub fn find_keystore(spec: &str) -> anyhow::Result<PathBuf> {
    let dir = keystores_dir();
    if spec.contains('/') {
        let path = PathBuf::from(spec);
        if !path.is_file() {
            bail!("keystore file {spec} does not exist");
        }
        return Ok(path);
    }
    if let Ok(address) = spec.parse::<Address>() {
        return list(&dir)?.into_iter().find(|(_, a, _)| *a == Some(address)).map(|(_, _, path)| path).with_context(
            || format!("no keystore in {} records address {address} (`tpod account list`)", dir.display()),
        );
    }
    for candidate in [dir.join(spec), dir.join(format!("{spec}.json"))] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    if Path::new(spec).is_file() {
        return Ok(PathBuf::from(spec));
    }
    let known: Vec<String> = list(&dir)?.into_iter().map(|(name, _, _)| name).collect();
    bail!(
        "no account named {spec:?} in {}; known: {}",
        dir.display(),
        if known.is_empty() { "none (`tpod account new`)".to_owned() } else { known.join(", ") }
    )
}

/// Decrypts the keystore at `path` with the password from `args`, the environment or a prompt.
pub fn unlock(path: &Path, args: &AccountArgs) -> anyhow::Result<PrivateKeySigner> {
    let password = password(args, &format!("password for keystore {}: ", path.display()), false)?;
    PrivateKeySigner::decrypt_keystore(path, password.as_bytes()).map_err(|e| match e {
        LocalSignerError::EthKeystoreError(k) if k.to_string() == "Mac Mismatch" => {
            anyhow::anyhow!("wrong password for keystore {}", path.display())
        }
        other => anyhow::anyhow!("cannot read keystore {}: {other}", path.display()),
    })
}

/// The password: the first line of `--password-file`, else `$TPOD_PASSWORD`, else asked on the
/// terminal (twice when `confirm`, for a new keystore).
fn password(args: &AccountArgs, prompt: &str, confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    if let Some(path) = &args.password_file {
        let text = Zeroizing::new(
            std::fs::read_to_string(path).with_context(|| format!("cannot read password file {}", path.display()))?,
        );
        return Ok(Zeroizing::new(text.lines().next().unwrap_or_default().to_owned()));
    }
    if let Some(value) = std::env::var_os(PASSWORD_ENV) {
        let value = value.into_string().map_err(|_| anyhow::anyhow!("${PASSWORD_ENV} is not UTF-8"))?;
        return Ok(Zeroizing::new(value));
    }
    let ask = |prompt: &str| {
        rpassword::prompt_password(prompt).map(Zeroizing::new).with_context(|| {
            format!("cannot ask for a password (no terminal?): give --password-file FILE or set ${PASSWORD_ENV}")
        })
    };
    let first = ask(prompt)?;
    if confirm && *ask("again: ")? != *first {
        bail!("the passwords differ");
    }
    Ok(first)
}

/// Writes `signer`'s key as keystore `name` (mode 0600), refusing to replace one.
fn create(name: &str, signer: &PrivateKeySigner, args: &AccountArgs) -> anyhow::Result<PathBuf> {
    if name.is_empty()
        || name.starts_with('.')
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!("account name {name:?}: use letters, digits, '-', '_' and '.', not starting with '.'");
    }
    let dir = keystores_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(name);
    if path.exists() {
        bail!("account {name} exists ({}); choose another name", path.display());
    }
    let password = password(args, &format!("password for the new keystore {name}: "), true)?;
    if password.is_empty() {
        bail!("an empty password protects nothing; choose one");
    }
    // alloy writes the file; it goes to a private directory first, so the keystore appears
    // complete, with its address and mode 0600, or not at all.
    let staging = dir.join(format!(".new-{name}-{}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&staging)
        .with_context(|| format!("cannot create {}", staging.display()))?;
    let written = (|| -> anyhow::Result<()> {
        let key = Zeroizing::new(signer.to_bytes().0);
        PrivateKeySigner::encrypt_keystore(
            &staging,
            &mut rand_core::OsRng,
            key.as_slice(),
            password.as_bytes(),
            Some("key"),
        )
        .context("encrypting the key")?;
        let mut keystore: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&std::fs::read(staging.join("key"))?)?;
        // geth's field, lower-case hex without 0x.
        keystore.insert("address".into(), json!(alloy::hex::encode(signer.address())));
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        file.write_all(&serde_json::to_vec(&keystore)?)?;
        file.sync_all()?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&staging);
    written.with_context(|| format!("cannot write keystore {}", path.display()))?;
    Ok(path)
}

/// The keystores in `dir`: name, address when the file records one, path; sorted by name.
fn list(dir: &Path) -> anyhow::Result<Vec<(String, Option<Address>, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        let address = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|v| v.get("address").and_then(|a| a.as_str()).map(str::to_owned))
            .and_then(|a| format!("0x{}", a.trim_start_matches("0x")).parse::<Address>().ok());
        found.push((name, address, path));
    }
    found.sort();
    Ok(found)
}
