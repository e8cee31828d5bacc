#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use redb::ReadableTableMetadata;

use super::*;

fn pod(n: u8) -> PodRecord {
    PodRecord {
        pod_id: [n; 32],
        publisher: format!("0x{}", "ab".repeat(20)),
        channel_id: [n.wrapping_add(100); 32],
        manifest_json: r#"{"containers":[]}"#.to_owned(),
        state: PodState::Paused {
            reason: "channel empty".to_owned(),
            since_unix: 1_700_000_050,
            rate_per_second: "12".to_owned(),
        },
        created_at_unix: 1_700_000_000,
        updated_at_unix: 1_700_000_100,
        hostnames: Vec::new(),
        tcp_ports: Vec::new(),
    }
}

/// A usage record with `cpu` ns used and `memory` byte-ns reserved, at `cpu_price` per
/// millicore-second used, sampled at `at` ms.
fn usage(n: u8, cpu: u128, memory: u128, cpu_price: &str, at: u64) -> UsageRecord {
    let table = tpod_billing::PriceTable::from_rows([("cpu", "0", cpu_price)]).unwrap();
    let mut ledger = tpod_billing::Ledger::new(table, 0);
    ledger.record(&tpod_billing::Usage { cpu_used: cpu, memory_reserved: memory, ..Default::default() }).unwrap();
    UsageRecord { pod_id: [n; 32], ledger, cpu_counter_ns: 0, sampled_at_ms: at }
}

fn claim(n: u8, amount: &str, digest: u8) -> ClaimRecord {
    let ledger = tpod_billing::Ledger::new(tpod_billing::PriceTable::default(), 0);
    ClaimRecord {
        pod_id: [n; 32],
        report: tpod_billing::UsageReport::of(&ledger, [n; 32].into(), [n; 32].into(), 0),
        cumulative_amount: amount.to_owned(),
        usage_digest: [digest; 32],
        signature: vec![1, 2, 3],
        tx_hash: None,
        confirmed: false,
    }
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("state.redb")).unwrap();
    (dir, store)
}

#[test]
fn round_trips() {
    let (_dir, store) = open();
    assert_eq!(store.get_pod(&[1; 32]).unwrap(), None);
    let mut failed = pod(2);
    failed.state = PodState::Failed { reason: "image pull".to_owned() };
    store.put_pod(&pod(1)).unwrap();
    store.put_pod(&failed).unwrap();
    assert_eq!(store.get_pod(&[1; 32]).unwrap(), Some(pod(1)));
    assert_eq!(store.list_pods().unwrap(), vec![pod(1), failed]);

    let u = usage(1, 10, 5, "1000", 5);
    store.record_usage(&u).unwrap();
    assert_eq!(store.get_usage(&[1; 32]).unwrap(), Some(u));

    assert_eq!(store.latest_claim(&[1; 32]).unwrap(), None);
    store.record_claim(&claim(1, "500", 1)).unwrap();
    store.record_claim(&claim(1, "900", 2)).unwrap();
    assert_eq!(store.latest_claim(&[1; 32]).unwrap(), Some(claim(1, "900", 2)));
    // Same digest: progress on the same claim updates it in place.
    let mut submitted = claim(1, "900", 2);
    submitted.tx_hash = Some([9; 32]);
    submitted.confirmed = true;
    store.record_claim(&submitted).unwrap();
    assert_eq!(store.latest_claim(&[1; 32]).unwrap(), Some(submitted));
    let err = store.record_claim(&claim(1, "10", 3)).unwrap_err();
    assert!(matches!(err, StoreError::ClaimRegressed { .. }), "{err}");
}

#[test]
fn usage_and_claims_need_their_pod_and_valid_amounts() {
    let (_dir, store) = open();
    assert!(matches!(store.record_usage(&usage(1, 1, 1, "1", 1)), Err(StoreError::UnknownPod { .. })));
    assert!(matches!(store.record_claim(&claim(1, "1", 1)), Err(StoreError::UnknownPod { .. })));
    store.put_pod(&pod(1)).unwrap();
    assert!(matches!(store.record_claim(&claim(1, "0x10", 1)), Err(StoreError::InvalidAmount { .. })));
}

#[test]
fn delete_removes_everything_of_the_pod() {
    let (_dir, store) = open();
    let mut one = pod(1);
    one.hostnames = vec!["a.example".to_owned()];
    store.put_pod(&one).unwrap();
    store.put_pod(&pod(2)).unwrap();
    for n in [1, 2] {
        store.record_usage(&usage(n, 1, 1, "1", 1)).unwrap();
        store.record_claim(&claim(n, "1", 1)).unwrap();
        store.record_claim(&claim(n, "2", 2)).unwrap();
    }
    assert!(store.delete_pod(&[1; 32]).unwrap());
    assert!(!store.delete_pod(&[1; 32]).unwrap());

    assert_eq!(store.get_pod(&[1; 32]).unwrap(), None);
    assert_eq!(store.get_usage(&[1; 32]).unwrap(), None);
    assert_eq!(store.latest_claim(&[1; 32]).unwrap(), None);
    assert_eq!(store.hostname_holder("a.example").unwrap(), None);
    // The other pod is untouched.
    assert_eq!(store.list_pods().unwrap(), vec![pod(2)]);
    assert!(store.get_usage(&[2; 32]).unwrap().is_some());
    assert_eq!(store.latest_claim(&[2; 32]).unwrap(), Some(claim(2, "2", 2)));
}

#[test]
fn hostnames_are_unique_across_pods() {
    let (_dir, store) = open();
    store.put_pod(&pod(1)).unwrap();
    store.put_pod(&pod(2)).unwrap();
    store.claim_hostname(&[1; 32], "app.example").unwrap();
    store.claim_hostname(&[1; 32], "app.example").unwrap(); // idempotent for the holder
    assert_eq!(store.get_pod(&[1; 32]).unwrap().unwrap().hostnames, vec!["app.example"]);

    let err = store.claim_hostname(&[2; 32], "APP.example").unwrap_err();
    match &err {
        StoreError::HostnameTaken { host, holder, .. } => {
            assert_eq!(host, "APP.example");
            assert_eq!(holder, &[1; 32]);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains(&to_hex(&[1; 32])), "{err}");

    // put_pod claims the record's hostnames too, all or nothing.
    let mut two = pod(2);
    two.hostnames = vec!["free.example".to_owned(), "app.example".to_owned()];
    assert!(matches!(store.put_pod(&two), Err(StoreError::HostnameTaken { .. })));
    assert_eq!(store.hostname_holder("free.example").unwrap(), None);
    assert_eq!(store.get_pod(&[2; 32]).unwrap(), Some(pod(2)));

    store.release_hostnames(&[1; 32]).unwrap();
    assert!(store.get_pod(&[1; 32]).unwrap().unwrap().hostnames.is_empty());
    store.claim_hostname(&[2; 32], "app.example").unwrap();
    assert_eq!(store.hostname_holder("app.example").unwrap(), Some([2; 32]));

    // Dropping a hostname from the record releases it.
    let mut two = store.get_pod(&[2; 32]).unwrap().unwrap();
    two.hostnames.clear();
    store.put_pod(&two).unwrap();
    assert_eq!(store.hostname_holder("app.example").unwrap(), None);
    assert!(matches!(store.claim_hostname(&[3; 32], "x.example"), Err(StoreError::UnknownPod { .. })));
}

#[test]
fn usage_never_goes_backwards() {
    let (_dir, store) = open();
    store.put_pod(&pod(1)).unwrap();
    store.record_usage(&usage(1, 10, 5, "1000", 50)).unwrap();
    // Less CPU, less memory, a lower cost (same usage at a lower price), an earlier sample.
    for bad in [
        usage(1, 9, 5, "1000", 50),
        usage(1, 10, 4, "1000", 50),
        usage(1, 10, 5, "999", 50),
        usage(1, 10, 5, "1000", 49),
    ] {
        let err = store.record_usage(&bad).unwrap_err();
        assert!(matches!(err, StoreError::UsageRegressed { .. }), "{err}");
    }
    assert_eq!(store.get_usage(&[1; 32]).unwrap(), Some(usage(1, 10, 5, "1000", 50)));

    // Equal is fine, as is growth.
    store.record_usage(&usage(1, 10, 5, "1000", 50)).unwrap();
    store.record_usage(&usage(1, 11, 6, "1000", 60)).unwrap();
    assert_eq!(store.get_usage(&[1; 32]).unwrap(), Some(usage(1, 11, 6, "1000", 60)));

    // A batch is all or nothing.
    store.put_pod(&pod(2)).unwrap();
    let err = store.record_usages(&[usage(2, 1, 1, "1", 1), usage(1, 1, 1, "1", 70)]).unwrap_err();
    assert!(matches!(err, StoreError::UsageRegressed { .. }), "{err}");
    assert_eq!(store.get_usage(&[2; 32]).unwrap(), None);
    store.record_usages(&[usage(2, 1, 1, "1", 1), usage(1, 12, 6, "1000", 70)]).unwrap();
    assert_eq!(store.get_usage(&[2; 32]).unwrap(), Some(usage(2, 1, 1, "1", 1)));
}

#[test]
fn nonces_are_fresh_once_and_pruned_after_expiry() {
    let (_dir, store) = open();
    let alice = "0xAbCd000000000000000000000000000000000001";
    assert!(store.remember_nonce(alice, 7, 100, 10).unwrap());
    assert!(!store.remember_nonce(alice, 7, 100, 20).unwrap(), "replay");
    assert!(!store.remember_nonce(&alice.to_lowercase(), 7, 100, 20).unwrap(), "replay, other case");
    assert!(store.remember_nonce("0xother", 7, 100, 20).unwrap(), "nonces are per publisher");
    assert!(!store.remember_nonce(alice, 8, 30, 30).unwrap(), "already expired");

    // At the expiry the old entry is pruned, so the nonce is fresh again (the request carrying it
    // would be refused as expired by its own expiry anyway).
    assert!(store.remember_nonce(alice, 7, 200, 100).unwrap());
    let txn = store.db.begin_read().unwrap();
    let nonces = txn.open_table(NONCES).unwrap();
    let left: Vec<_> = nonces
        .iter()
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.value().0.to_owned(), k.value().1, v.value())
        })
        .collect();
    assert_eq!(left, vec![(alice.to_lowercase(), 7, 200)]);
    assert_eq!(txn.open_table(NONCES_BY_EXPIRY).unwrap().len().unwrap(), 1);
}

#[test]
fn state_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let store = Store::open(&path).unwrap();
        let mut one = pod(1);
        one.hostnames = vec!["a.example".to_owned()];
        store.put_pod(&one).unwrap();
        store.record_usage(&usage(1, 5, 5, "5", 5)).unwrap();
        store.record_claim(&claim(1, "5", 1)).unwrap();
        assert!(store.remember_nonce("0xp", 1, 100, 0).unwrap());
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.get_pod(&[1; 32]).unwrap().unwrap().hostnames, vec!["a.example"]);
    assert_eq!(store.hostname_holder("a.example").unwrap(), Some([1; 32]));
    assert_eq!(store.get_usage(&[1; 32]).unwrap(), Some(usage(1, 5, 5, "5", 5)));
    assert_eq!(store.latest_claim(&[1; 32]).unwrap(), Some(claim(1, "5", 1)));
    assert!(!store.remember_nonce("0xp", 1, 100, 1).unwrap(), "replay guard survives restart");
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let store = Store::open(&path).unwrap();
        let txn = store.db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION + 1).unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::UnknownSchemaVersion { found, .. } if found == SCHEMA_VERSION + 1), "{err}");
    assert!(err.to_string().contains("state.redb"), "{err}");
}

#[test]
fn schema_1_is_upgraded_keeping_pods_and_dropping_its_unused_usage_tables() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let store = Store::open(&path).unwrap();
        store.put_pod(&pod(1)).unwrap();
        let txn = store.db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert(SCHEMA_VERSION_KEY, 1).unwrap();
        txn.open_table(USAGE).unwrap().insert(&[1; 32], br#"{"cumulative":{}}"#.as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.get_pod(&[1; 32]).unwrap(), Some(pod(1)));
    assert_eq!(store.get_usage(&[1; 32]).unwrap(), None);
    let txn = store.db.begin_read().unwrap();
    assert_eq!(txn.open_table(META).unwrap().get(SCHEMA_VERSION_KEY).unwrap().unwrap().value(), SCHEMA_VERSION);
}

#[test]
fn corrupt_record_names_table_and_key() {
    let (_dir, store) = open();
    {
        let txn = store.db.begin_write().unwrap();
        txn.open_table(PODS).unwrap().insert(&[5; 32], b"not json".as_slice()).unwrap();
        txn.commit().unwrap();
    }
    let err = store.get_pod(&[5; 32]).unwrap_err();
    match &err {
        StoreError::Corrupt { table, key, .. } => {
            assert_eq!(*table, "pods");
            assert_eq!(key, &to_hex(&[5; 32]));
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn open_failure_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join("state.redb");
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(err.to_string().contains("missing-dir"), "{err}");
}

const CRASH_ENV: &str = "TPOD_STORE_CRASH_CHILD_PATH";
const CRASH_RECORDS: u8 = 20;

/// Child half of [`committed_state_survives_abort`]: does nothing unless re-executed by it.
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CRASH_ENV) else { return };
    let store = Store::open(path).unwrap();
    for n in 0..CRASH_RECORDS {
        store.put_pod(&pod(n)).unwrap();
        store.record_usage(&usage(n, u128::from(n), 1, "1", 1)).unwrap();
    }
    println!("committed {CRASH_RECORDS}");
    // No clean shutdown: no destructor runs, nothing is flushed beyond what commit did.
    std::process::abort();
}

#[test]
fn committed_state_survives_abort() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "store::tests::crash_child", "--nocapture", "--test-threads=1"])
        .env(CRASH_ENV, &path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "child should have aborted: {stdout}");
    assert!(stdout.contains(&format!("committed {CRASH_RECORDS}")), "child did not commit: {stdout}");

    let store = Store::open(&path).unwrap();
    let pods = store.list_pods().unwrap();
    assert_eq!(pods.len(), usize::from(CRASH_RECORDS));
    for n in 0..CRASH_RECORDS {
        assert_eq!(store.get_pod(&[n; 32]).unwrap(), Some(pod(n)));
        assert_eq!(store.get_usage(&[n; 32]).unwrap(), Some(usage(n, u128::from(n), 1, "1", 1)));
    }
}
