//! `tpod account`: keystores interchangeable with foundry's `cast wallet` both ways, passwords
//! from a file or the environment, and a wrong password that changes nothing. Driven through the
//! real `tpod` and the pinned `cast` (tools/bootstrap), in a private TPOD_HOME.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn cast() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/bin/cast")
}

use common::{ok_at as ok, text, tpod_at as tpod};

/// `cast wallet address` of a keystore unlocked with `password`.
fn cast_address(keystore: &Path, password: &str) -> String {
    let out = Command::new(cast())
        .args(["wallet", "address", "--keystore"])
        .arg(keystore)
        .args(["--password", password])
        .output()
        .unwrap();
    assert!(out.status.success(), "cast wallet address: {}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn a_keystore_made_by_cast_is_used_by_tpod() {
    let home = tempfile::tempdir().unwrap();
    let keystores = home.path().join(".tpod/keystores");
    std::fs::create_dir_all(&keystores).unwrap();
    let out = Command::new(cast())
        .args(["wallet", "new"])
        .arg(&keystores)
        .arg("from-cast")
        .env("CAST_PASSWORD", "correct horse")
        .output()
        .unwrap();
    assert!(out.status.success(), "cast wallet new: {}", text(&out));
    let file = keystores.join("from-cast");
    let address = cast_address(&file, "correct horse");

    // By path, with the password from a file (first line only).
    let password_file = home.path().join("password");
    std::fs::write(&password_file, "correct horse\nsecond line is not the password\n").unwrap();
    let shown = ok(
        home.path(),
        &["--account", file.to_str().unwrap(), "--password-file", password_file.to_str().unwrap(), "account", "show"],
        &[],
    );
    assert_eq!(shown["address"].as_str().unwrap().to_lowercase(), address.to_lowercase());

    // By name in ~/.tpod/keystores, with the password from the environment.
    let shown = ok(home.path(), &["--account", "from-cast", "account", "show"], &[("TPOD_PASSWORD", "correct horse")]);
    assert_eq!(shown["address"].as_str().unwrap().to_lowercase(), address.to_lowercase());

    // Listed, though cast does not record the address in the file.
    let listed = ok(home.path(), &["account", "list"], &[]);
    let row = listed["accounts"].as_array().unwrap().iter().find(|a| a["name"] == "from-cast").unwrap().clone();
    assert!(row["address"].is_null(), "{row}");
}

#[test]
fn a_keystore_made_by_tpod_is_used_by_cast() {
    let home = tempfile::tempdir().unwrap();
    let created = ok(home.path(), &["account", "new", "alice"], &[("TPOD_PASSWORD", "s3cret pass")]);
    let path = PathBuf::from(created["path"].as_str().unwrap());
    assert_eq!(path, home.path().join(".tpod/keystores/alice"));
    let address = created["address"].as_str().unwrap().to_owned();
    assert_eq!(cast_address(&path, "s3cret pass").to_lowercase(), address.to_lowercase());
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // A v3 scrypt keystore with geth's address field; no key or password in clear.
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(file["version"], 3);
    assert_eq!(file["crypto"]["kdf"], "scrypt");
    assert_eq!(format!("0x{}", file["address"].as_str().unwrap()), address.to_lowercase());
    assert!(!String::from_utf8_lossy(&std::fs::read(&path).unwrap()).contains("s3cret"));

    // Listed with its address, and found by it.
    let listed = ok(home.path(), &["account", "list"], &[]);
    assert_eq!(listed["accounts"][0]["name"], "alice");
    assert_eq!(listed["accounts"][0]["address"], address.as_str());
    let shown = ok(home.path(), &["--account", &address, "account", "show"], &[("TPOD_PASSWORD", "s3cret pass")]);
    assert_eq!(shown["address"], address.as_str());

    // A second account of the same name is refused and the first is left alone.
    let before = std::fs::read(&path).unwrap();
    let again = tpod(home.path(), &["account", "new", "alice"], &[("TPOD_PASSWORD", "other")]);
    assert!(!again.status.success() && text(&again).contains("exists"), "{}", text(&again));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn an_imported_key_keeps_its_address_and_the_key_stays_out_of_output() {
    let home = tempfile::tempdir().unwrap();
    let account = tpod_devnet::DevAccount::generate("x");
    let key_file = home.path().join("key.hex");
    std::fs::write(&key_file, format!("{}\n", account.private_key)).unwrap();
    let out = tpod(
        home.path(),
        &["--json", "account", "import", "imported", "--private-key-file", key_file.to_str().unwrap()],
        &[("TPOD_PASSWORD", "pw for import")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let key_hex = account.private_key.to_string();
    assert!(!text(&out).contains(key_hex.trim_start_matches("0x")));
    let imported: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // JSON output has addresses as serde writes them: lower-case hex.
    let lower = account.address.to_string().to_lowercase();
    assert_eq!(imported["address"], lower.as_str());
    let path = home.path().join(".tpod/keystores/imported");
    assert!(!String::from_utf8_lossy(&std::fs::read(&path).unwrap()).contains(key_hex.trim_start_matches("0x")));
    assert_eq!(cast_address(&path, "pw for import").to_lowercase(), account.address.to_string().to_lowercase());
    // The hex key file works as it is too.
    let shown = ok(home.path(), &["--key-file", key_file.to_str().unwrap(), "account", "show"], &[]);
    assert_eq!(shown["address"], lower.as_str());
}

#[test]
fn a_wrong_password_is_named_and_changes_nothing() {
    let home = tempfile::tempdir().unwrap();
    ok(home.path(), &["account", "new", "bob"], &[("TPOD_PASSWORD", "right")]);
    let path = home.path().join(".tpod/keystores/bob");
    let before = std::fs::read(&path).unwrap();
    let out = tpod(home.path(), &["--account", "bob", "account", "show"], &[("TPOD_PASSWORD", "wrong")]);
    assert!(!out.status.success());
    assert!(text(&out).contains(&format!("wrong password for keystore {}", path.display())), "{}", text(&out));
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // Unknown names list the known ones.
    let out = tpod(home.path(), &["--account", "carol", "account", "show"], &[("TPOD_PASSWORD", "right")]);
    assert!(!out.status.success() && text(&out).contains("known: bob"), "{}", text(&out));
}
