//! `tpod network`: contracts deployed on a chain that is not the devnet, networks added, listed,
//! shown and removed, the devnet as the default only while it is up, and an RPC serving another
//! chain refused by name. Driven through the real `tpod` in a private TPOD_HOME, against anvils
//! started here (not `tpod dev up`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::anvil_at as anvil;

const ENVS: &[(&str, &str)] = &[("TPOD_PASSWORD", "deployer's password")];

fn ok(home: &Path, args: &[&str]) -> serde_json::Value {
    common::ok_at(home, args, ENVS)
}

fn fails(home: &Path, args: &[&str]) -> String {
    common::fails_at(home, args, ENVS)
}

#[test]
fn contracts_deploy_on_any_chain_and_the_network_is_recorded() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let chain = anvil(home, 4242, &rt);
    let other_chain = anvil(home, 31337, &rt);

    // An ERC-20 already on the chain, deployed by someone else.
    let minter = tpod_devnet::DevAccount::generate("minter");
    rt.block_on(tpod_devnet::deploy::set_native_balance(&chain.url, minter.address, tpod_devnet::whole(10))).unwrap();
    let token = rt.block_on(tpod_devnet::deploy::deploy_test_token(&chain.url, minter.signer().unwrap())).unwrap();

    // The deployer is a keystore account with gas money.
    let deployer = ok(home, &["account", "new", "deployer"]);
    let deployer_address: alloy::primitives::Address = deployer["address"].as_str().unwrap().parse().unwrap();

    // Without an account, or without gas, nothing is deployed and nothing recorded.
    let err = fails(home, &["--rpc-url", &chain.url, "network", "deploy", "second", "--token", &token.to_string()]);
    assert!(err.contains("--account"), "{err}");
    let err = fails(
        home,
        &[
            "--rpc-url",
            &chain.url,
            "--account",
            "deployer",
            "network",
            "deploy",
            "second",
            "--token",
            &token.to_string(),
        ],
    );
    assert!(err.contains("deploying Payment and Registry"), "{err}");
    assert!(!home.join(".tpod/networks.toml").exists());

    rt.block_on(tpod_devnet::deploy::set_native_balance(&chain.url, deployer_address, tpod_devnet::whole(10))).unwrap();
    // A token address without code is refused before anything is sent.
    let err = fails(
        home,
        &[
            "--rpc-url",
            &chain.url,
            "--account",
            "deployer",
            "network",
            "deploy",
            "second",
            "--token",
            "0x00000000000000000000000000000000000000aa",
        ],
    );
    assert!(err.contains("no") && err.contains("token"), "{err}");

    let deployed = ok(
        home,
        &[
            "--rpc-url",
            &chain.url,
            "--account",
            "deployer",
            "network",
            "deploy",
            "second",
            "--token",
            &token.to_string(),
        ],
    );
    assert_eq!(deployed["chain_id"], 4242);
    assert_eq!(deployed["token"].as_str().unwrap().to_lowercase(), token.to_string().to_lowercase());
    assert!(deployed["deployed_at_block"].as_u64().unwrap() >= 1, "{deployed}");
    let payment = deployed["payment"].as_str().unwrap().to_owned();
    let registry = deployed["registry"].as_str().unwrap().to_owned();
    let config = std::fs::read_to_string(home.join(".tpod/networks.toml")).unwrap();
    assert!(config.contains("[networks.second]") && config.contains(&payment), "{config}");

    // The only network is the default: shown with its token as the chain reports it.
    let shown = ok(home, &["network", "show"]);
    assert_eq!(shown["name"], "second");
    assert_eq!(shown["chain_id"], 4242);
    assert_eq!(shown["token_symbol"], "TPT");
    assert_eq!(shown["token_decimals"], 18);
    assert_eq!(PathBuf::from(shown["dir"].as_str().unwrap()), home.join(".tpod/networks/second"));

    // An RPC that serves another chain is named as such.
    let err = fails(home, &["--network", "second", "--rpc-url", &other_chain.url, "network", "show"]);
    assert!(err.contains("serves chain 31337, but network second is chain 4242"), "{err}");

    // Adding the same contracts reads the chain id and token from the chain.
    let added =
        ok(home, &["--rpc-url", &chain.url, "network", "add", "copy", "--payment", &payment, "--registry", &registry]);
    assert_eq!(added["chain_id"], 4242);
    assert_eq!(added["token"].as_str().unwrap().to_lowercase(), token.to_string().to_lowercase());
    let err = fails(
        home,
        &["--rpc-url", &chain.url, "network", "add", "copy", "--payment", &payment, "--registry", &registry],
    );
    assert!(err.contains("exists"), "{err}");
    let err = fails(
        home,
        &["--rpc-url", &chain.url, "network", "add", "wrong", "--payment", &registry, "--registry", &registry],
    );
    assert!(err.contains("checking the contracts"), "{err}");
    let err = fails(
        home,
        &["--rpc-url", &chain.url, "network", "add", "devnet", "--payment", &payment, "--registry", &registry],
    );
    assert!(err.contains("choose another"), "{err}");

    // Two networks and no devnet: no default until one is picked.
    let listed = ok(home, &["network", "list"]);
    let names: Vec<&str> = listed["networks"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["copy", "second"]);
    assert!(listed["default"].is_null(), "{listed}");
    let err = fails(home, &["network", "show"]);
    assert!(err.contains("several networks") && err.contains("copy, second"), "{err}");
    assert_eq!(ok(home, &["--network", "copy", "network", "show"])["name"], "copy");
    let err = fails(home, &["--network", "nope", "network", "show"]);
    assert!(err.contains("no network named \"nope\"") && err.contains("copy, second"), "{err}");

    ok(home, &["network", "remove", "copy"]);
    assert_eq!(ok(home, &["network", "list"])["default"], "second");
}

#[test]
fn the_devnet_is_the_default_only_while_it_is_up() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let devnet = rt.block_on(tpod_devnet::throwaway(None)).unwrap();
    let devnet_dir = home.join("devnet");
    std::fs::create_dir_all(&devnet_dir).unwrap();
    devnet.file.save(&tpod_devnet::file_path(&devnet_dir)).unwrap();
    let c = devnet.file.contracts;
    ok(
        home,
        &[
            "--rpc-url",
            &devnet.file.rpc_url,
            "network",
            "add",
            "elsewhere",
            "--payment",
            &c.payment.to_string(),
            "--registry",
            &c.registry.to_string(),
        ],
    );

    let listed = ok(home, &["network", "list"]);
    assert_eq!(listed["default"], "devnet");
    let devnet_row = listed["networks"].as_array().unwrap().iter().find(|n| n["name"] == "devnet").unwrap().clone();
    assert_eq!(PathBuf::from(devnet_row["dir"].as_str().unwrap()), devnet_dir);
    let shown = ok(home, &["network", "show"]);
    assert_eq!(shown["name"], "devnet");
    assert_eq!(shown["token_symbol"], "TPT");

    // Amounts are checked before anything else.
    let err = fails(home, &["topup", "1.2.3"]);
    assert!(err.contains("is not an amount"), "{err}");

    // Once its anvil is gone, the devnet is no network: the configured one is the default.
    let tpod_devnet::Throwaway { anvil, .. } = devnet;
    rt.block_on(anvil.stop());
    let listed = ok(home, &["network", "list"]);
    assert_eq!(listed["default"], "elsewhere", "{listed}");
    let err = fails(home, &["--network", "devnet", "network", "show"]);
    assert!(err.contains("is down") && err.contains("tpod dev up"), "{err}");
}

#[test]
fn amounts_in_token_units_and_a_spend_cap_reach_the_channel() {
    let net = common::Devnet::up(17);
    let dir = tempfile::tempdir().unwrap();
    let manifest = common::hello(dir.path(), "units\n");
    let manifest = manifest.to_str().unwrap();

    // A cap below one base unit per second, or another token's symbol, is refused before
    // anything is paid or recorded.
    let err = net.fails(&["deploy", manifest, "--amount", "12.5TPT", "--max-rate", "3599base"]);
    assert!(err.contains("less than one base unit per second"), "{err}");
    let err = net.fails(&["deploy", manifest, "--amount", "12.5ETH"]);
    assert!(err.contains("this network's token is TPT"), "{err}");
    let err = net.fails(&["bill"]);
    assert!(err.contains("no deployments"), "{err}");

    let out = net.tpod(&["deploy", manifest, "--amount", "12.5", "--max-rate", "36TPT"]);
    assert!(out.status.success(), "{}", common::text(&out));
    assert!(common::text(&out).contains("funded with 12.5 TPT"), "{}", common::text(&out));
    let bill = net.ok(&["bill"]);
    assert_eq!(bill["deposited"], "12500000000000000000");
    // 36 TPT per hour is 0.01 TPT per second.
    assert_eq!(bill["max_rate_per_second"], "10000000000000000");

    net.ok(&["topup", "0.5"]);
    assert_eq!(net.ok(&["bill"])["deposited"], "13000000000000000000");
    let shown = common::text(&net.tpod(&["bill"]));
    assert!(shown.contains("deposited   13 TPT"), "{shown}");
    assert!(shown.contains("spend cap   36 TPT/h"), "{shown}");
    assert!(shown.contains("TPT/h per CPU reserved"), "{shown}");
    net.ok(&["delete"]);
}
