//! End to end on a devnet (simulated TEE), through the real `tpod` and `tpod-provider`:
//! `tpod verify` shows every check, a policy decides what passes, deploy verifies before it
//! seals or pays anything, and the channel it opens pays only the attested enclave.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use common::{Devnet, hello, text};
use tpod_chain::{Chain, claim::Claim};

/// The checks of a `tpod --json verify` answer: (name, outcome, detail).
fn checks(verdict: &serde_json::Value) -> Vec<(String, String, String)> {
    verdict["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let field = |k: &str| c[k].as_str().unwrap().to_owned();
            (field("check"), field("outcome"), field("detail"))
        })
        .collect()
}

fn failing_verify(net: &Devnet, args: &[&str]) -> serde_json::Value {
    let out = net.tpod(&[&["--json", "verify"], args].concat());
    assert!(!out.status.success(), "verify should have failed: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out)))
}

#[test]
fn verify_deploy_and_only_the_attested_enclave_is_paid() {
    let net = Devnet::up(14);
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(net.provider_data().join("provider.json")).unwrap()).unwrap();
    let enclave_signer: Address = info["enclave_signer"].as_str().unwrap().parse().unwrap();

    // Under the devnet's own policy its provider passes every check.
    let verdict = net.ok(&["verify"]);
    assert_eq!(verdict["passed"], true, "{verdict}");
    let names: Vec<_> = checks(&verdict).into_iter().map(|(name, outcome, _)| (name, outcome)).collect();
    let expected = [
        "TEE kind",
        "evidence signature",
        "TCB and TEE policy",
        "nonce and keys bound",
        "peer id",
        "provider software",
    ];
    assert_eq!(names, expected.map(|n| (n.to_owned(), "pass".to_owned())));
    assert_eq!(verdict["attested"]["tee"], "simulated");
    assert_eq!(verdict["attested"]["peer_id"], info["peer_id"]);
    assert_eq!(verdict["attested"]["enclave_signer"].as_str().unwrap().parse::<Address>().unwrap(), enclave_signer);

    // The same policy named explicitly is a publisher's own: a simulated TEE needs the flag.
    let policy = net.dir.path().join("policy.toml");
    let verdict = failing_verify(&net, &["--policy", policy.to_str().unwrap()]);
    let failed: Vec<_> = checks(&verdict).into_iter().filter(|(_, outcome, _)| outcome == "fail").collect();
    assert_eq!(failed.len(), 1, "{verdict}");
    assert_eq!(failed[0].0, "TEE kind");
    assert!(failed[0].2.contains("--allow-simulated-tee"), "{}", failed[0].2);
    let verdict = net.ok(&["verify", "--policy", policy.to_str().unwrap(), "--allow-simulated-tee"]);
    assert_eq!(verdict["passed"], true, "{verdict}");

    // A policy that trusts another provider build refuses this one, and deploy then sends
    // nothing and pays nothing.
    let work = tempfile::tempdir().unwrap();
    let other = work.path().join("other-build.toml");
    let text_of_policy = std::fs::read_to_string(&policy).unwrap();
    let binary = text_of_policy.lines().find(|l| l.starts_with("provider_binaries")).unwrap().to_owned();
    let other_binary = format!("provider_binaries = [\"sha256:{}\"]", "ab".repeat(32));
    std::fs::write(&other, text_of_policy.replace(&binary, &other_binary)).unwrap();
    let other = other.to_str().unwrap();
    let verdict = failing_verify(&net, &["--policy", other, "--allow-simulated-tee"]);
    let failed: Vec<_> = checks(&verdict).into_iter().filter(|(_, outcome, _)| outcome == "fail").collect();
    assert_eq!(failed.iter().map(|f| f.0.as_str()).collect::<Vec<_>>(), ["provider software"], "{verdict}");
    let manifest = hello(work.path(), "attested hello");
    let refused = net.fails(&["deploy", manifest.to_str().unwrap(), "--policy", other, "--allow-simulated-tee"]);
    assert!(refused.contains("is not trusted") && refused.contains("provider software"), "{refused}");
    assert!(net.runtime_pods().is_empty());
    assert!(!net.provider_data().join("blobs/blobs").read_dir().is_ok_and(|mut d| d.next().is_some()));

    // Deployed under the devnet's policy, the channel names the attested enclave signer...
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap()]);
    let pod_id: B256 = deployed["pod_id"].as_str().unwrap().parse().unwrap();
    let channel_id: B256 = deployed["channel_id"].as_str().unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let devnet = tpod_devnet::DevnetFile::load(&tpod_devnet::file_path(net.dir.path())).unwrap().unwrap();
        let provider = devnet.account("provider").unwrap().signer().unwrap();
        let publisher = devnet.account("publisher").unwrap().address;
        let c = &devnet.contracts;
        let chain = Chain::connect_to_payment(&devnet.rpc_url, provider.clone(), c.payment, c.registry).await.unwrap();
        let channel = chain.channel(channel_id).await.unwrap().unwrap();
        assert_eq!(channel.enclave_signer, enclave_signer);

        // ...and the Payment contract refuses a claim signed by any other key, even the
        // provider's own account key, while the attested enclave's signature is paid.
        let claim = Claim::new(channel_id, U256::from(1), B256::repeat_byte(7));
        let domain = chain.claim_domain();
        for other in [PrivateKeySigner::random(), provider.clone()] {
            let signature = claim.sign(&domain, &other).unwrap();
            let error = chain.claim(publisher, provider.address(), pod_id, &claim, &signature).await.unwrap_err();
            let reverted = matches!(&error, tpod_chain::ChainError::Reverted { call: "claim", reason }
                if reason.contains("InvalidSignature")
                    && reason.to_lowercase().contains(&format!("expected: {enclave_signer:#x}")));
            assert!(reverted, "{error}");
        }
        let enclave_key = std::fs::read_to_string(net.provider_data().join("enclave.key")).unwrap();
        let enclave: PrivateKeySigner = enclave_key.trim().parse().unwrap();
        assert_eq!(enclave.address(), enclave_signer);
        let signature = claim.sign(&domain, &enclave).unwrap();
        chain.claim(publisher, provider.address(), pod_id, &claim, &signature).await.unwrap();
    });
}
