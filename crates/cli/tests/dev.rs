//! `tpod dev up | status | down`, driven through the real binary as a user would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn anvil() -> PathBuf {
    tpod_devnet::anvil::locate(None)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/bin/anvil"))
}

fn tpod(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tpod"))
        .arg("--devnet-dir")
        .arg(dir)
        .args(args)
        .env_remove("TPOD_DEVNET_DIR")
        // The provider `dev up` starts: a free ingress port, a bridge of these tests' own.
        .env("TPOD_DEV_INGRESS_PORT", "0")
        .env("TPOD_DEV_BRIDGE", "tpd0")
        .env("TPOD_DEV_SUBNET", "10.219.0.0/16")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)))
}

fn pid_alive(pid: u64) -> bool {
    tpod_devnet::anvil::is_running(pid as u32)
}

#[test]
fn up_status_down_lifecycle_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let anvil = anvil();
    let anvil = anvil.to_str().unwrap();

    let up = tpod(dir.path(), &["--json", "dev", "up", "--port", "0", "--anvil", anvil]);
    assert!(up.status.success(), "{}", text(&up));
    let up = json(&up);
    assert_eq!(up["already_up"], false);
    let pid = up["devnet"]["anvil_pid"].as_u64().unwrap();
    assert!(pid_alive(pid));
    // The devnet's provider runs too.
    assert_eq!(up["provider_started"], true);
    let provider_pid = up["provider"]["pid"].as_u64().unwrap() as u32;
    assert!(tpod::devprovider::is_provider(provider_pid));
    let file = std::fs::read(dir.path().join("devnet.json")).unwrap();

    // A second `up` changes nothing and says so.
    let again = tpod(dir.path(), &["dev", "up", "--port", "0", "--anvil", anvil]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("already up"), "{}", text(&again));
    assert_eq!(std::fs::read(dir.path().join("devnet.json")).unwrap(), file);

    let status = tpod(dir.path(), &["--json", "dev", "status"]);
    assert!(status.status.success(), "{}", text(&status));
    let status = json(&status);
    assert_eq!(status["healthy"], true);
    assert!(status["contracts"].as_array().unwrap().iter().all(|c| c["deployed"] == true));
    let publisher = status["balances"].as_array().unwrap().iter().find(|b| b["name"] == "publisher").unwrap();
    assert_eq!(publisher["tokens"], tpod_devnet::whole(tpod_devnet::DEV_TOKEN_FUNDS).to_string());
    // Keys never appear in command output.
    assert!(!String::from_utf8_lossy(&file).is_empty());
    let keys: serde_json::Value = serde_json::from_slice(&file).unwrap();
    let key = keys["accounts"][1]["private_key"].as_str().unwrap().trim_start_matches("0x").to_owned();
    assert!(!status.to_string().contains(&key));

    let down = tpod(dir.path(), &["dev", "down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(!pid_alive(pid), "anvil {pid} still running after dev down");
    assert!(!tpod::devprovider::is_provider(provider_pid), "provider still running after dev down");
    assert!(!dir.path().join("devnet.json").exists());

    let after = tpod(dir.path(), &["dev", "status"]);
    assert!(!after.status.success());
    assert!(text(&after).contains("tpod dev up"), "{}", text(&after));
}

#[test]
fn stale_devnet_is_reported_unhealthy_and_replaced_by_up() {
    let dir = tempfile::tempdir().unwrap();
    let anvil = anvil();
    let anvil = anvil.to_str().unwrap();
    let up = json(&tpod(dir.path(), &["--json", "dev", "up", "--port", "0", "--anvil", anvil]));
    let pid = up["devnet"]["anvil_pid"].as_u64().unwrap();
    Command::new("kill").arg("-9").arg(pid.to_string()).status().unwrap();
    while pid_alive(pid) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let status = tpod(dir.path(), &["dev", "status"]);
    assert!(!status.status.success());
    assert!(text(&status).contains("NOT running"), "{}", text(&status));

    let again = json(&tpod(dir.path(), &["--json", "dev", "up", "--port", "0", "--anvil", anvil]));
    assert_eq!(again["already_up"], false);
    let new_pid = again["devnet"]["anvil_pid"].as_u64().unwrap();
    assert!(pid_alive(new_pid));
    assert!(tpod(dir.path(), &["dev", "down"]).status.success());
}

#[test]
fn missing_anvil_says_to_run_the_bootstrap_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tpod"))
        .args(["--devnet-dir", dir.path().to_str().unwrap(), "dev", "up", "--port", "0"])
        .env("PATH", "/nonexistent")
        .env_remove("TPOD_ANVIL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("tools/bootstrap"), "{}", text(&out));
    assert!(!dir.path().join("devnet.json").exists());
}

#[test]
fn malformed_devnet_file_is_named_with_line_and_remedy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devnet.json");
    std::fs::write(&path, "{\n  \"version\": 1,\n  \"chain_id\": 31337,\n  \"rpc_url\": 5\n}\n").unwrap();
    for args in [&["dev", "status"][..], &["dev", "down"], &["dev", "up", "--port", "0"]] {
        let out = tpod(dir.path(), args);
        assert!(!out.status.success(), "{args:?}");
        let msg = text(&out);
        assert!(msg.contains(path.to_str().unwrap()) && msg.contains("line 4"), "{args:?}: {msg}");
        assert!(msg.contains("Delete it"), "{args:?}: {msg}");
    }
}

#[test]
fn the_bootstrapped_anvil_is_the_pinned_version() {
    let found = tpod_devnet::anvil::version(&anvil()).unwrap();
    assert_eq!(found, tpod_devnet::anvil::pinned_version());
}
