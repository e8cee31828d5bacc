//! TDX collateral fetched from a PCCS: a local HTTP server speaking the PCCS v4 API serves the
//! main sample's collateral (see `data/tdx/README.md`), and what is fetched must verify the sample
//! quote and equal the sample byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dcap_qvl::QuoteCollateralV3;
use tpod_attestation::pccs::{self, TdxCollateral};
use tpod_attestation::tdx::{self, TdxError, TdxEvidence};
use tpod_attestation::{Digest, Policy, TeeKind};
use tpod_wire::pb;

/// 2025-07-01T00:00:00Z, inside the main sample's validity windows.
const T_MAIN: u64 = 1_751_328_000;

fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/tdx/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn sample() -> QuoteCollateralV3 {
    serde_json::from_slice(&data("tdx_quote_collateral.json")).unwrap()
}

/// What a PCCS yields for the sample quote: the sample collateral plus the quote's PCK chain,
/// which the PCCS client always attaches (for quotes that do not embed it, it fetches it). The
/// quote embeds the chain as canonical PEM, the form `decode_collateral` gives it back in.
fn expected() -> Vec<u8> {
    let quote = quote();
    let start = quote.windows(27).position(|w| w == b"-----BEGIN CERTIFICATE-----").unwrap();
    let end = quote.windows(25).rposition(|w| w == b"-----END CERTIFICATE-----").unwrap() + 26;
    let mut collateral = sample();
    collateral.pck_certificate_chain = Some(String::from_utf8(quote[start..end].to_vec()).unwrap());
    tdx::encode_collateral(&collateral).unwrap()
}

fn quote() -> Vec<u8> {
    tdx::trim_quote(&data("tdx_quote")).unwrap().to_vec()
}

/// Percent-encodes everything but unreserved characters, as PCCS does for its issuer-chain
/// headers.
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A PCCS serving `collateral` (every path but those in `missing`) on loopback; returns its URL
/// and the request targets it received.
fn pccs(collateral: QuoteCollateralV3, missing: &'static [&'static str]) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut request = Vec::new();
            let mut byte = [0u8; 1];
            while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
                request.push(byte[0]);
            }
            let request = String::from_utf8(request).unwrap();
            let target = request.split(' ').nth(1).unwrap().to_owned();
            log.lock().unwrap().push(target.clone());
            let path = target.split('?').next().unwrap();
            let c = &collateral;
            let (header, body): (Option<(&str, &str)>, Vec<u8>) = match path {
                _ if missing.contains(&path) => {
                    let _ =
                        stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    continue;
                }
                "/sgx/certification/v4/pckcrl" => {
                    (Some(("SGX-PCK-CRL-Issuer-Chain", &c.pck_crl_issuer_chain)), c.pck_crl.clone())
                }
                "/tdx/certification/v4/tcb" => (
                    Some(("TCB-Info-Issuer-Chain", &c.tcb_info_issuer_chain)),
                    format!(r#"{{"tcbInfo":{},"signature":"{}"}}"#, c.tcb_info, hex::encode(&c.tcb_info_signature))
                        .into_bytes(),
                ),
                "/tdx/certification/v4/qe/identity" => (
                    Some(("SGX-Enclave-Identity-Issuer-Chain", &c.qe_identity_issuer_chain)),
                    format!(
                        r#"{{"enclaveIdentity":{},"signature":"{}"}}"#,
                        c.qe_identity,
                        hex::encode(&c.qe_identity_signature)
                    )
                    .into_bytes(),
                ),
                // PCCS answers the root CA CRL in hex.
                "/sgx/certification/v4/rootcacrl" => (None, hex::encode(&c.root_ca_crl).into_bytes()),
                _ => {
                    let _ =
                        stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    continue;
                }
            };
            let header = header.map(|(name, chain)| format!("{name}: {}\r\n", percent(chain))).unwrap_or_default();
            let head =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n{header}\r\n", body.len());
            let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
        }
    });
    (url, seen)
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[tokio::test]
async fn collateral_from_a_pccs_verifies_the_quote() {
    let (url, seen) = pccs(sample(), &[]);
    let fetched = pccs::fetch_collateral(&url, &quote()).await.unwrap();
    // The very bytes of the sample: nothing reordered, re-encoded or lost on the way.
    assert_eq!(fetched, expected());
    let claims = tdx::verify(&TdxEvidence { quote: quote(), collateral: fetched }, at(T_MAIN)).unwrap();
    assert_eq!(claims.tcb_status, "UpToDate");
    // The TCB info asked for is the one of the platform's FMSPC, read from the quote's PCK
    // certificate.
    let tcb_info: serde_json::Value = serde_json::from_str(&sample().tcb_info).unwrap();
    let fmspc = tcb_info["fmspc"].as_str().unwrap().to_uppercase();
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|t| t.starts_with("/tdx/certification/v4/tcb?") && t.contains(&format!("fmspc={fmspc}"))),
        "{seen:?}"
    );
    let paths: BTreeSet<&str> = seen.iter().map(|t| t.split('?').next().unwrap()).collect();
    assert_eq!(
        paths,
        BTreeSet::from([
            "/sgx/certification/v4/pckcrl",
            "/sgx/certification/v4/rootcacrl",
            "/tdx/certification/v4/qe/identity",
            "/tdx/certification/v4/tcb",
        ])
    );
}

#[tokio::test]
async fn a_pccs_without_the_collateral_is_a_clear_error() {
    let (url, _) = pccs(sample(), &["/tdx/certification/v4/tcb"]);
    let error = pccs::fetch_collateral(&url, &quote()).await.unwrap_err();
    assert!(matches!(&error, TdxError::Pccs { url: u, .. } if *u == url), "{error:?}");
    assert!(error.to_string().contains("404"), "{error}");
    // Nobody listening at all.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let error = pccs::fetch_collateral(&format!("http://{closed}"), &quote()).await.unwrap_err();
    assert!(matches!(error, TdxError::Pccs { .. }), "{error:?}");
}

#[tokio::test]
async fn oversized_answers_are_cut_off() {
    let mut huge = sample();
    huge.pck_crl = vec![0x30; 300 << 10];
    let (url, _) = pccs(huge, &[]);
    let error = pccs::fetch_collateral(&url, &quote()).await.unwrap_err();
    assert!(matches!(error, TdxError::Pccs { .. }), "{error:?}");
    assert!(error.to_string().contains("larger than 196608 bytes"), "{error}");
}

#[tokio::test]
async fn collateral_served_with_a_bad_signature_is_fetched_but_refused() {
    let mut tampered = sample();
    tampered.tcb_info_signature[5] ^= 1;
    let (url, _) = pccs(tampered, &[]);
    let fetched = pccs::fetch_collateral(&url, &quote()).await.unwrap();
    let error = tdx::verify(&TdxEvidence { quote: quote(), collateral: fetched }, at(T_MAIN)).unwrap_err();
    assert!(matches!(error, TdxError::Verification { .. }), "{error:?}");
}

fn policy(pccs_url: Option<String>) -> Policy {
    let mut policy = Policy {
        tee: [TeeKind::Tdx].into(),
        provider_binaries: [Digest([1; 32])].into(),
        provider_configs: Default::default(),
        snp: Default::default(),
        tdx: Default::default(),
        simulated: None,
    };
    policy.tdx.pccs_url = pccs_url;
    policy
}

#[tokio::test]
async fn a_policy_pccs_replaces_the_collateral_the_provider_sent() {
    let (url, seen) = pccs(sample(), &[]);
    let evidence = || pb::Evidence {
        binding: None,
        tee: Some(pb::evidence::Tee::Tdx(pb::TdxEvidence { quote: quote(), collateral: b"stale".to_vec() })),
    };
    // Without a PCCS in the policy, what the provider sent is what gets verified.
    let mut kept = evidence();
    pccs::use_policy_collateral(&mut kept, &policy(None)).await.unwrap();
    assert_eq!(kept, evidence());
    assert!(seen.lock().unwrap().is_empty());

    let mut replaced = evidence();
    pccs::use_policy_collateral(&mut replaced, &policy(Some(url))).await.unwrap();
    let Some(pb::evidence::Tee::Tdx(tdx)) = replaced.tee else { panic!("not TDX") };
    assert_eq!(tdx.collateral, expected());
    assert_eq!(tdx.quote, quote());

    // Other evidence is left alone.
    let simulated = pb::Evidence { binding: None, tee: Some(pb::evidence::Tee::Simulated(Default::default())) };
    let mut same = simulated.clone();
    pccs::use_policy_collateral(&mut same, &policy(Some("http://127.0.0.1:9".into()))).await.unwrap();
    assert_eq!(same, simulated);
}

#[tokio::test]
async fn a_provider_keeps_its_collateral_from_the_pccs() {
    let collateral = TdxCollateral::pending("http://pccs.test");
    let error = collateral.current().unwrap_err();
    assert!(error.to_string().contains("not fetched from http://pccs.test yet"), "{error}");

    // A PCCS that fails: the error is what the attester reports.
    let (down, _) = pccs(sample(), &["/sgx/certification/v4/pckcrl"]);
    let failing = tokio::spawn(pccs::keep_fresh(down.clone(), collateral.clone(), || Ok(quote())));
    let error = wait_for(|| collateral.current().err().filter(|e| e.to_string().contains(&down))).await;
    assert!(error.to_string().contains("404"), "{error}");
    failing.abort();

    let (url, _) = pccs(sample(), &[]);
    let task = tokio::spawn(pccs::keep_fresh(url, collateral.clone(), || Ok(quote())));
    let fetched = wait_for(|| collateral.current().ok()).await;
    assert_eq!(fetched, expected());
    task.abort();
}

async fn wait_for<T>(mut probe: impl FnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(value) = probe() {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out")
}
