//! Remote attestation from the publisher's side: `tpod verify` and the check `deploy` and
//! `update` make before they seal anything to a provider. The enclave keys they use come from
//! the verified evidence, never from the provider's word.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::Args;
use serde_json::json;
use tpod_attestation::{Attested, Outcome, Policy, Verification};
use tpod_net::Client;
use tpod_wire::pb;

use crate::pods::ProviderTarget;

/// What a publisher trusts.
#[derive(Debug, Clone, Args)]
pub struct AttestArgs {
    /// The attestation policy (TOML): the TEE kinds, provider builds and TCB levels you trust.
    /// Default: the devnet's policy for the devnet's provider, else ~/.tpod/policy.toml.
    #[arg(long, value_name = "FILE", env = "TPOD_POLICY", global = true)]
    pub policy: Option<PathBuf>,
    /// Accept a simulated TEE. Development only: it proves nothing about the machine. The
    /// devnet's own provider is accepted under the devnet's policy without this flag.
    #[arg(long, global = true)]
    pub allow_simulated_tee: bool,
}

/// The policy and options to verify `provider` with.
fn policy_for(args: &AttestArgs, provider: &ProviderTarget, devnet_dir: &Path) -> anyhow::Result<(Policy, bool)> {
    let devnet_provider = crate::devprovider::is_devnet_provider(devnet_dir, &provider.peer().to_string());
    let (path, devnet) = match &args.policy {
        Some(path) => (path.clone(), false),
        None if devnet_provider => (crate::devprovider::policy_path(devnet_dir), true),
        None => {
            let home = std::env::var_os("HOME").context("HOME is not set; pass --policy")?;
            (PathBuf::from(home).join(".tpod").join("policy.toml"), false)
        }
    };
    let policy = Policy::load(&path).with_context(|| {
        if devnet {
            "the devnet has no attestation policy; run `tpod dev up` again".to_owned()
        } else {
            format!("pass --policy FILE, or write {}", path.display())
        }
    })?;
    Ok((policy, args.allow_simulated_tee || devnet))
}

/// Asks `provider` for evidence bound to a fresh nonce and verifies every check.
pub(crate) async fn verify_provider(
    client: &Client,
    provider: &ProviderTarget,
    args: &AttestArgs,
    devnet_dir: &Path,
) -> anyhow::Result<Verification> {
    let (policy, allow_simulated) = policy_for(args, provider, devnet_dir)?;
    let nonce = alloy::primitives::B256::random();
    let request = pb::AttestRequest { version: tpod_wire::VERSION, nonce: nonce.to_vec() };
    let response = client
        .attest(provider.peer(), provider.addr(), request)
        .await
        .with_context(|| format!("cannot get attestation evidence from provider {}", provider.peer()))?;
    let mut evidence = match response.result {
        Some(pb::attest_response::Result::Evidence(evidence)) => evidence,
        Some(pb::attest_response::Result::Error(error)) => {
            anyhow::bail!("provider {} cannot attest itself: {}", provider.peer(), error.message)
        }
        None => anyhow::bail!("provider {} sent an empty attestation answer", provider.peer()),
    };
    tpod_attestation::pccs::use_policy_collateral(&mut evidence, &policy).await?;
    let options = tpod_attestation::Options { allow_simulated, at: SystemTime::now() };
    Ok(tpod_attestation::verify(&evidence, &nonce.0, &provider.peer(), &policy, &options))
}

/// Verifies `provider` and returns what is attested, or fails with the first failed check.
pub(crate) async fn attested(
    client: &Client,
    provider: &ProviderTarget,
    args: &AttestArgs,
    devnet_dir: &Path,
) -> anyhow::Result<Attested> {
    let verification = verify_provider(client, provider, args, devnet_dir).await?;
    verification
        .into_result()
        .with_context(|| format!("provider {} is not trusted; `tpod verify` shows every check", provider.peer()))
}

/// `tpod verify`: prints each check with pass or fail and the reason.
pub async fn verify_command(
    provider: Option<&str>,
    args: &AttestArgs,
    devnet_dir: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let provider = ProviderTarget::resolve(provider, devnet_dir)?;
    let client = Client::connect(tpod_net::generate_keypair()).context("cannot start the libp2p client")?;
    let verification = verify_provider(&client, &provider, args, devnet_dir).await?;
    let passed = verification.attested.is_some();
    if json {
        let checks: Vec<_> = verification
            .checks
            .iter()
            .map(|check| {
                let (outcome, detail) = match &check.outcome {
                    Outcome::Pass(detail) => ("pass", detail),
                    Outcome::Fail(reason) => ("fail", reason),
                    Outcome::Skipped(reason) => ("skipped", reason),
                };
                json!({ "check": check.name, "outcome": outcome, "detail": detail })
            })
            .collect();
        let attested = verification.attested.as_ref().map(|a| {
            json!({
                "tee": a.tee,
                "peer_id": a.binding.peer_id().to_string(),
                "enclave_signer": format!("0x{}", hex(&a.binding.enclave_signer)),
                "enclave_encryption_key": hex(&a.binding.enclave_encryption_key),
                "provider_binary": tpod_attestation::binding::digest_text(&a.binding.measurement.binary),
                "provider_config": tpod_attestation::binding::digest_text(&a.binding.measurement.config),
            })
        });
        say!(
            "{}",
            json!({ "provider": provider.peer().to_string(), "passed": passed, "checks": checks, "attested": attested })
        );
    } else {
        say!("provider {}", provider.peer());
        for check in &verification.checks {
            let (mark, detail) = match &check.outcome {
                Outcome::Pass(detail) => ("pass", detail),
                Outcome::Fail(reason) => ("FAIL", reason),
                Outcome::Skipped(reason) => ("skip", reason),
            };
            say!("  {mark}  {}: {detail}", check.name);
        }
        say!("{}", if passed { "trusted" } else { "NOT trusted" });
    }
    Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn hex(bytes: &[u8]) -> String {
    alloy::hex::encode(bytes)
}
