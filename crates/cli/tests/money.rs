//! Money safety, end to end through the real `tpod` and provider: whatever can be refused is
//! refused before anything is paid (no transaction from the publisher at all: same nonce, token
//! balance, allowance and Payment events), every funded channel stays recorded and recoverable,
//! a redeploy after a failure uses the channel it funded, and unlock, withdraw and delete decide
//! on the chain's clock.
//!
//! A deploy that fails after funding is made deterministic with the CLI's test hook
//! `TPOD_TEST_FAIL_AFTER_FUNDING`: the deploy stops right after the channel is funded and
//! recorded, as when the provider refuses the pod or the connection drops then.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider as _;
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use common::*;
use tpod_chain::Chain;

/// The devnet's chain, read as anyone.
struct OnChain {
    rt: tokio::runtime::Runtime,
    chain: Chain,
    publisher: Address,
}

/// What a refused deploy must leave exactly as it was.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    nonce: u64,
    balance: U256,
    allowance: U256,
    payment_events: usize,
}

impl OnChain {
    fn of(net: &Devnet) -> Self {
        let file = tpod_devnet::DevnetFile::load(&net.dir.path().join(tpod_devnet::DEVNET_FILE)).unwrap().unwrap();
        let publisher = file.account("publisher").unwrap().address;
        let rt = tokio::runtime::Runtime::new().unwrap();
        let chain = rt.block_on(Chain::connect(&file.rpc_url, PrivateKeySigner::random(), file.contracts)).unwrap();
        Self { rt, chain, publisher }
    }

    fn snapshot(&self) -> Snapshot {
        self.rt.block_on(async {
            let c = self.chain.contracts();
            let p = self.chain.provider();
            let allowance = tpod_chain::contracts::TestToken::new(c.token, p)
                .allowance(self.publisher, c.payment)
                .call()
                .await
                .unwrap();
            Snapshot {
                nonce: p.get_transaction_count(self.publisher).await.unwrap(),
                balance: self.chain.token_balance(c.token, self.publisher).await.unwrap(),
                allowance,
                payment_events: p.get_logs(&Filter::new().address(c.payment).from_block(0)).await.unwrap().len(),
            }
        })
    }

    fn balance(&self) -> U256 {
        self.snapshot().balance
    }

    fn channel(&self, id: &str) -> tpod_chain::client::ChannelState {
        self.rt.block_on(self.chain.channel(id.parse::<B256>().unwrap())).unwrap().expect("no such channel")
    }

    /// The chain's clock jumps `secs` ahead of this machine's, and a block is mined at it.
    fn advance(&self, secs: u64) {
        self.rt.block_on(async {
            let p = self.chain.provider();
            let _: serde_json::Value = p.raw_request("evm_increaseTime".into(), (secs,)).await.unwrap();
            let _: serde_json::Value = p.raw_request("evm_mine".into(), ()).await.unwrap();
        });
    }

    fn chain_time(&self) -> u64 {
        self.rt.block_on(async {
            let p = self.chain.provider();
            p.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest).await.unwrap().unwrap().header.timestamp
        })
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// `tpod --json deploy ...` with the test hook set: it must fail after funding.
fn deploy_failing_after_funding(net: &Devnet, args: &[&str]) -> String {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_tpod"))
        .arg("--devnet-dir")
        .arg(net.dir.path())
        .args([&["--json", "deploy"], args].concat())
        .env_remove("TPOD_DEVNET_DIR")
        .env("TPOD_CACHE_DIR", net.dir.path().join("cache"))
        .env("TPOD_TEST_FAIL_AFTER_FUNDING", "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the deploy should have stopped after funding: {}", text(&out));
    text(&out)
}

/// `tpod list --json`'s deployments.
fn listed(net: &Devnet) -> Vec<serde_json::Value> {
    net.ok(&["list"])["deployments"].as_array().unwrap().clone()
}

fn num(v: &serde_json::Value) -> U256 {
    v.as_str().unwrap_or_else(|| panic!("not a decimal string: {v}")).parse().unwrap()
}

fn variant(dir: &Path, name: &str, yaml: String) -> String {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn refusals_known_before_paying_cost_nothing() {
    let net = Devnet::up(20);
    let chain = OnChain::of(&net);
    let work = tempfile::tempdir().unwrap();
    let manifest = hello(work.path(), "x\n");
    let yaml = std::fs::read_to_string(&manifest).unwrap();
    let manifest = manifest.to_str().unwrap();
    let before = chain.snapshot();

    // Less than the provider's minimum funding (the quote carries it).
    let err = net.fails(&["deploy", manifest, "--amount", "1base"]);
    assert!(err.contains("asks at least") && err.contains("nothing was paid"), "{err}");
    assert_eq!(chain.snapshot(), before, "too-small --amount");

    // A GPU: the provider has none, and its quote says so.
    let gpu = variant(work.path(), "gpu.yaml", yaml.replace("memory: 64Mi", "memory: 64Mi\n      gpu: 1"));
    let err = net.fails(&["deploy", &gpu]);
    assert!(err.contains("GPU"), "{err}");
    assert_eq!(chain.snapshot(), before, "GPU request");

    // An env value over the wire limit (16 KiB).
    let big = "v".repeat(tpod_wire::limits::MAX_TEXT_BYTES + 1);
    let env = variant(
        work.path(),
        "env.yaml",
        yaml.replace("    resources:", &format!("    env:\n      BIG: \"{big}\"\n    resources:")),
    );
    let err = net.fails(&["deploy", &env]);
    assert!(err.contains("env") && err.contains(&tpod_wire::limits::MAX_TEXT_BYTES.to_string()), "{err}");
    assert_eq!(chain.snapshot(), before, "env over the wire limit");

    // An image the provider's unpack rules refuse (a `..` entry).
    let evil = work.path().join("evil");
    std::fs::create_dir_all(&evil).unwrap();
    tpod_image::write_layout(
        &evil.join("image"),
        &[raw_tar(&[("../escape", b"x", Kind::File)])],
        &tpod_image::ContainerConfig::default(),
    )
    .unwrap();
    std::fs::copy(work.path().join("tpod.yaml"), evil.join("tpod.yaml")).unwrap();
    let err = net.fails(&["deploy", evil.join("tpod.yaml").to_str().unwrap()]);
    assert!(err.contains("would be refused by the provider") && err.contains("`..`"), "{err}");
    assert_eq!(chain.snapshot(), before, "unsafe image");
    assert!(listed(&net).is_empty(), "a refused deploy left a record");

    // A host name another pod holds: the quote names it, before paying.
    let named = variant(
        work.path(),
        "named.yaml",
        yaml.replace("        protocol: http", "        protocol: http\n        hostname: app.example.com"),
    );
    net.ok(&["deploy", &named, "--name", "first"]);
    let before = chain.snapshot();
    let err = net.fails(&["deploy", &named, "--name", "second"]);
    assert!(err.contains("conflict") && err.contains("app.example.com") && err.contains("nothing was paid"), "{err}");
    assert_eq!(chain.snapshot(), before, "taken host name");
    let names: Vec<String> = listed(&net).iter().map(|d| d["name"].as_str().unwrap().to_owned()).collect();
    assert_eq!(names, ["first"]);
}

/// What a tar entry is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

/// A ustar archive whose names are written as given (absolute names and `..` get through, as
/// some image tools write them).
fn raw_tar(entries: &[(&str, &[u8], Kind)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data, kind) in entries {
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        let octal = |field: &mut [u8], value: u64| {
            let text = format!("{value:0width$o}", width = field.len() - 1);
            field[..text.len()].copy_from_slice(text.as_bytes());
        };
        octal(&mut header[100..108], 0o755);
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], data.len() as u64);
        octal(&mut header[136..148], 0);
        header[156] = if *kind == Kind::Dir { b'5' } else { b'0' };
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        let text = format!("{sum:06o}\0 ");
        header[148..156].copy_from_slice(text.as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

#[test]
fn a_redeploy_after_a_failure_uses_the_channel_it_funded() {
    let net = Devnet::up(21);
    let chain = OnChain::of(&net);
    let work = tempfile::tempdir().unwrap();
    let manifest = hello(work.path(), "second time lucky\n");
    let manifest = manifest.to_str().unwrap();
    let start = chain.balance();

    let err = deploy_failing_after_funding(&net, &[manifest, "--amount", "2"]);
    assert!(err.contains("stays funded and recorded"), "{err}");
    let list = listed(&net);
    assert_eq!(list.len(), 1, "{list:?}");
    let channel_id = list[0]["channel_id"].as_str().unwrap().to_owned();
    assert_eq!(list[0]["state"], "not deployed");
    let two = U256::from(2_000_000_000_000_000_000u128);
    assert_eq!(num(&list[0]["channel"]["unclaimed"]), two);
    assert_eq!(chain.balance(), start - two);
    // Text output: the channel, its funds in token units and how to recover them.
    let text_list = String::from_utf8(net.tpod(&["list"]).stdout).unwrap();
    assert!(text_list.contains(&channel_id) && text_list.contains("2 TPT left"), "{text_list}");
    assert!(text_list.contains(&format!("tpod withdraw {channel_id}")), "{text_list}");
    let before = chain.snapshot();

    // The same name again: the funded channel carries it; nothing more is paid.
    let deployed = net.ok(&["deploy", manifest, "--amount", "2"]);
    assert_eq!(deployed["channel_id"], channel_id.as_str(), "{deployed}");
    assert_eq!(deployed["paid"], "0", "{deployed}");
    wait_for_body(deployed["url"].as_str().unwrap(), "second time lucky\n");
    let after = chain.snapshot();
    assert_eq!((after.balance, after.payment_events), (before.balance, before.payment_events));
    let list = listed(&net);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["state"], "deployed");
    assert_eq!(list[0]["channel_id"], channel_id.as_str());
    let file = std::fs::read_to_string(net.dir.path().join("deployments.json")).unwrap();
    assert!(file.contains("\"version\": 2"), "{file}");
}

#[test]
fn a_channel_that_cannot_be_reused_stays_recorded_and_unlock_withdraw_delete_use_chain_time() {
    let net = Devnet::up(22);
    let chain = OnChain::of(&net);
    let work = tempfile::tempdir().unwrap();
    let manifest = hello(work.path(), "clock\n");
    let manifest = manifest.to_str().unwrap();
    let start = chain.balance();

    // A failed deploy with a spend cap; the next deploy asks for none, so it cannot use that
    // channel: both stay recorded under the name.
    deploy_failing_after_funding(&net, &[manifest, "--amount", "1", "--max-rate", "1000"]);
    let old = listed(&net)[0]["channel_id"].as_str().unwrap().to_owned();
    let deployed = net.ok(&["deploy", manifest, "--amount", "1"]);
    let new = deployed["channel_id"].as_str().unwrap().to_owned();
    assert_ne!(old, new);
    let list = listed(&net);
    let states: Vec<(String, String)> = list
        .iter()
        .map(|d| (d["channel_id"].as_str().unwrap().to_owned(), d["state"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(states, [(old.clone(), "not deployed".to_owned()), (new.clone(), "deployed".to_owned())]);
    // The name alone is ambiguous for the channel commands; the channel id is not.
    assert!(net.fails(&["withdraw", "hello"]).contains(&old));

    // Unlock the failed deploy's channel; then the chain's clock runs an hour ahead of ours.
    let unlocked = net.ok(&["unlock", &old]);
    let unlock_at = unlocked["unlock_at"].as_u64().unwrap();
    assert!(net.fails(&["withdraw", &old]).contains("of chain time"));
    chain.advance(3600);
    assert!(chain.chain_time() >= now_unix() + 3500 && unlock_at < chain.chain_time());
    assert!(unlock_at > now_unix(), "by the local clock the delay has not passed yet");
    let withdrawn = net.ok(&["withdraw", &old]);
    assert_eq!(num(&withdrawn["withdrawn"]), U256::from(1_000_000_000_000_000_000u128), "{withdrawn}");
    assert!(chain.channel(&old).closed, "withdraw closes the emptied channel");
    let list = listed(&net);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["channel_id"], new.as_str());

    // Delete: the provider releases the channel at chain time (an hour ahead of ours); the CLI
    // sees it released and closes it.
    chain.advance(10);
    let deleted = net.ok(&["delete"]);
    assert!(!deleted["refunded"].is_null(), "delete left the channel open: {deleted}");
    assert!(chain.channel(&new).closed);
    assert!(listed(&net).is_empty());
    // Everything came back except what the provider claimed for the seconds the pod ran.
    let spent = start - chain.balance();
    assert_eq!(spent, chain.channel(&new).claimed, "all but the claimed amount came back");
}

#[test]
fn an_image_with_absolute_layer_paths_deploys() {
    let net = Devnet::up(23);
    let work = tempfile::tempdir().unwrap();
    let manifest = hello(work.path(), "unused\n");
    // As umoci writes them: every name absolute, the root included.
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let layer = raw_tar(&[
        ("/", b"", Kind::Dir),
        ("/bin/", b"", Kind::Dir),
        ("/bin/busybox", &busybox, Kind::File),
        ("/www/", b"", Kind::Dir),
        ("/www/index.html", b"absolute\n", Kind::File),
    ]);
    let image: PathBuf = work.path().join("image");
    std::fs::remove_dir_all(&image).unwrap();
    tpod_image::write_layout(&image, &[layer], &tpod_image::ContainerConfig::default()).unwrap();
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap()]);
    wait_for_body(deployed["url"].as_str().unwrap(), "absolute\n");
}

#[test]
fn a_pod_that_fails_to_start_in_the_background_leaves_its_channel_for_the_redeploy() {
    let work = tempfile::tempdir().unwrap();
    // The provider answers at once: the failure comes while the CLI follows the deploy.
    let overrides = work.path().join("overrides.toml");
    std::fs::write(&overrides, "[runtime]\nprovision_wait_secs = 0\n").unwrap();
    let net = Devnet::up_with(16, Some(overrides));
    let chain = OnChain::of(&net);
    let manifest = hello(work.path(), "fixed\n");
    let yaml = std::fs::read_to_string(&manifest).unwrap();
    let broken = variant(work.path(), "broken.yaml", yaml.replace("[\"/bin/busybox\", \"httpd\"]", "[\"/bin/none\"]"));

    let err = net.fails(&["deploy", &broken, "--amount", "2"]);
    assert!(err.contains("the provider could not start the pod") && err.contains("stays funded"), "{err}");
    let list = listed(&net);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["state"], "not deployed");
    let channel_id = list[0]["channel_id"].as_str().unwrap().to_owned();
    assert!(net.runtime_pods().is_empty(), "runtime state left: {:?}", net.runtime_pods());
    let before = chain.snapshot();

    // Fixed, under the same name: the provider replaces its failed record, the channel pays.
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap(), "--amount", "2"]);
    assert_eq!((deployed["channel_id"].as_str(), deployed["paid"].as_str()), (Some(channel_id.as_str()), Some("0")));
    wait_for_body(deployed["url"].as_str().unwrap(), "fixed\n");
    let after = chain.snapshot();
    assert_eq!((after.balance, after.payment_events), (before.balance, before.payment_events));
    net.ok(&["delete"]);
    assert!(net.runtime_pods().is_empty(), "runtime state left: {:?}", net.runtime_pods());
}
