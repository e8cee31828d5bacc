//! SEV-SNP verification against a real Milan report and its real AMD certificate chain (see
//! `tests/data/snp/README.md` for where each file comes from).
//!
//! Expected values are read from the raw report at the SEV-SNP ABI's fixed offsets (or written
//! out as literals), never through the module under test, so the checks are not circular.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tpod_attestation::snp::{
    CertRole, SnpClaims, SnpError, SnpEvidence, SnpPolicy, SnpProduct, SnpTcb, check_policy, verify,
};

const REPORT: &[u8] = include_bytes!("data/snp/report_milan.bin");
const VCEK: &[u8] = include_bytes!("data/snp/vcek_milan.der");
const ASK: &[u8] = include_bytes!("data/snp/ask_milan.der");
const ARK: &[u8] = include_bytes!("data/snp/ark_milan.der");
const SELF_MADE_ARK: &[u8] = include_bytes!("data/snp/self_made_ark.der");

/// 2024-01-01T00:00:00Z: inside the VCEK (2023-04-03T19:23:43Z .. 2030-04-03T19:23:43Z) and the
/// ASK/ARK (2020-10-22 .. 2045-10-22) validity windows, and after the VCEK was issued for the
/// report's TCB.
const VERIFY_AT: u64 = 1_704_067_200;
const VCEK_NOT_BEFORE: u64 = 1_680_549_823; // 2023-04-03T19:23:43Z
const VCEK_NOT_AFTER: u64 = 1_901_474_623; // 2030-04-03T19:23:43Z

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn evidence() -> SnpEvidence {
    SnpEvidence { report: REPORT.to_vec(), vcek: VCEK.to_vec(), ask: ASK.to_vec(), ark: ARK.to_vec() }
}

fn claims() -> SnpClaims {
    verify(&evidence(), at(VERIFY_AT)).expect("the real Milan sample verifies")
}

fn hex48(s: &str) -> [u8; 48] {
    hex::decode(s).expect("hex").try_into().expect("48 bytes")
}

#[test]
fn real_milan_sample_verifies_and_claims_match_the_raw_report() {
    let claims = claims();
    assert_eq!(claims.product, SnpProduct::Milan);
    assert_eq!(claims.product.to_string(), "Milan");

    // SEV-SNP ABI offsets: REPORT_DATA 0x50 (64), MEASUREMENT 0x90 (48), REPORTED_TCB 0x180
    // (8: bootloader, tee, 4 reserved, snp, microcode on Milan), CHIP_ID 0x1A0 (64), POLICY 0x08.
    assert_eq!(claims.report_data[..], REPORT[0x50..0x90]);
    assert_eq!(claims.measurement[..], REPORT[0x90..0xC0]);
    assert_eq!(claims.chip_id[..], REPORT[0x1A0..0x1E0]);
    let tcb = &REPORT[0x180..0x188];
    assert_eq!(claims.reported_tcb, SnpTcb { bootloader: tcb[0], tee: tcb[1], snp: tcb[6], microcode: tcb[7] });
    let policy = u64::from_le_bytes(REPORT[0x08..0x10].try_into().expect("8 bytes"));
    assert_eq!(claims.debug_allowed, policy & (1 << 19) != 0);
    assert_eq!(claims.vmpl, u32::from_le_bytes(REPORT[0x30..0x34].try_into().expect("4 bytes")));
    assert_eq!(claims.vmpl, 0);
    // Milan has no FMC.
    assert_eq!(claims.fmc, None);

    // The same values written out (from `openssl asn1parse` of the VCEK and a hex dump of the
    // report), so a wrong offset above cannot go unnoticed.
    assert_eq!(claims.reported_tcb, SnpTcb { bootloader: 3, tee: 0, snp: 8, microcode: 115 });
    assert_eq!(
        claims.measurement,
        hex48("7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f")
    );
    assert_eq!(
        hex::encode(claims.report_data),
        "d447b55d197491bfe15cf298f9de9986b7a7c4be2468b4f6e2d53b71d7c645810b0f2cdfca0040433be063fc1a8293f0\
         f3f8dae7b79fecb3d1cd82bd6a93ebfd"
    );
    assert!(!claims.debug_allowed);
    // CHIP_ID is the VCEK's hwID extension (1.3.6.1.4.1.3704.1.4), found in the DER directly.
    assert!(VCEK.windows(64).any(|w| w == claims.chip_id), "CHIP_ID appears in the VCEK");
}

#[test]
fn sev_crate_agrees_the_sample_is_valid() {
    // Independent cross-check of the sample itself with the sev crate's own chain verification.
    use sev::certs::snp::{Certificate, Chain, Verifiable, ca};
    use sev::firmware::guest::AttestationReport;
    use sev::parser::ByteParser;
    let chain = Chain {
        ca: ca::Chain { ark: Certificate::from_der(ARK).expect("ark"), ask: Certificate::from_der(ASK).expect("ask") },
        vek: Certificate::from_der(VCEK).expect("vcek"),
    };
    let report = AttestationReport::from_bytes(REPORT).expect("report");
    (&chain, &report).verify().expect("sev verifies the sample");
}

/// Flips (XOR `mask`) each of `positions` of one part of the evidence and returns the positions
/// where `verify` still succeeded.
fn undetected_flips(
    mask: u8,
    field: fn(&mut SnpEvidence) -> &mut Vec<u8>,
    positions: impl IntoIterator<Item = usize>,
) -> Vec<usize> {
    let mut evidence = evidence();
    let mut undetected = Vec::new();
    for i in positions {
        field(&mut evidence)[i] ^= mask;
        if verify(&evidence, at(VERIFY_AT)).is_ok() {
            undetected.push(i);
        }
        field(&mut evidence)[i] ^= mask;
    }
    undetected
}

/// Positions of every tag and length byte of every DER element, at any depth.
fn der_header_positions(der: &[u8]) -> Vec<usize> {
    fn walk(der: &[u8], base: usize, out: &mut Vec<usize>) {
        let mut i = 0;
        while i + 1 < der.len() {
            let (tag, first) = (der[i], der[i + 1]);
            let (len, header) = if first < 0x80 {
                (usize::from(first), 2)
            } else {
                let n = usize::from(first & 0x7F);
                (der[i + 2..i + 2 + n].iter().fold(0, |acc, &b| acc << 8 | usize::from(b)), 2 + n)
            };
            out.extend(base + i..base + i + header);
            if tag & 0x20 != 0 {
                walk(&der[i + header..i + header + len], base + i + header, out);
            }
            i += header + len;
        }
    }
    let mut out = Vec::new();
    walk(der, 0, &mut out);
    out
}

/// The byte positions of a certificate the sampled flip tests cover: every DER tag and length
/// byte, everything after the tbsCertificate up to the first byte of the signature value (the
/// unsigned outer signatureAlgorithm, the BIT STRING header and its unused-bits byte), the
/// first 16 bytes of the tbsCertificate (header, version, serial), every byte in `extra`, and
/// every `stride`-th of the remaining bytes.
fn sampled_positions(der: &[u8], stride: usize, extra: std::ops::Range<usize>) -> Vec<usize> {
    let headers = der_header_positions(der);
    // Certificate ::= SEQUENCE (4-byte header) { tbsCertificate (4-byte header), ... }
    let tbs_end = 4 + 4 + usize::from(u16::from_be_bytes([der[6], der[7]]));
    let signature_value_start = der.len() - 512;
    (0..der.len())
        .filter(|&i| {
            headers.contains(&i)
                || (tbs_end..signature_value_start).contains(&i)
                || i < 16
                || extra.contains(&i)
                || i.is_multiple_of(stride)
        })
        .collect()
}

// Each test is one object, so the harness spreads them over the cores. With dependencies built
// without optimisation one RSA-4096 or P-384 verification takes ~12 ms, so flipping every byte
// of the certificates (both masks) takes over two minutes of CPU; the certificates are sampled
// here and `exhaustive_byte_flips` (ignored by default) covers every byte.

#[test]
fn every_report_byte_flip_fails() {
    assert_eq!(undetected_flips(0x01, |e| &mut e.report, 0..REPORT.len()), Vec::<usize>::new());
}

#[test]
fn report_flips_of_all_bits_fail() {
    // The unsigned part (signature and its reserved tail) in full, the signed part sampled.
    let positions = (0..REPORT.len()).filter(|&i| i >= 0x2A0 || i.is_multiple_of(8));
    assert_eq!(undetected_flips(0xFF, |e| &mut e.report, positions), Vec::<usize>::new());
}

#[test]
fn vcek_byte_flips_fail() {
    // The AMD extensions (offsets 489..771) in full: they bind the VCEK to the report.
    let positions = sampled_positions(VCEK, 8, 489..771);
    assert_eq!(undetected_flips(0x01, |e| &mut e.vcek, positions), Vec::<usize>::new());
}

#[test]
fn ask_byte_flips_fail() {
    let positions = sampled_positions(ASK, 8, 0..0);
    assert_eq!(undetected_flips(0x01, |e| &mut e.ask, positions), Vec::<usize>::new());
}

#[test]
fn every_ark_byte_flip_fails() {
    // Cheap: the pinned-root comparison rejects each one before any signature is checked.
    assert_eq!(undetected_flips(0x01, |e| &mut e.ark, 0..ARK.len()), Vec::<usize>::new());
    assert_eq!(undetected_flips(0xFF, |e| &mut e.ark, 0..ARK.len()), Vec::<usize>::new());
}

/// Every byte of every part, with two masks. Run with `cargo test --test snp -- --ignored`
/// (about two minutes on two cores in debug mode).
#[test]
#[ignore = "slow in debug mode: ~7000 signature verifications"]
fn exhaustive_byte_flips() {
    for mask in [0x01, 0xFF] {
        assert_eq!(undetected_flips(mask, |e| &mut e.report, 0..REPORT.len()), Vec::<usize>::new());
        assert_eq!(undetected_flips(mask, |e| &mut e.vcek, 0..VCEK.len()), Vec::<usize>::new());
        assert_eq!(undetected_flips(mask, |e| &mut e.ask, 0..ASK.len()), Vec::<usize>::new());
        assert_eq!(undetected_flips(mask, |e| &mut e.ark, 0..ARK.len()), Vec::<usize>::new());
    }
}

#[test]
fn specific_strictness_checks_name_field_and_offset() {
    // Unused high bytes of the signature's r (0x2A0 + 48): the P-384 check never reads them.
    let mut e = evidence();
    e.report[0x2A0 + 48] = 1;
    let err = verify(&e, at(VERIFY_AT)).expect_err("r padding");
    assert!(matches!(err, SnpError::Report { offset: 0x2D0, .. }), "{err}");
    assert!(err.to_string().contains("SIGNATURE.R"), "{err}");

    // Reserved tail of the signature area: not covered by the signature at all.
    let mut e = evidence();
    e.report[0x4A0 - 1] = 1;
    let err = verify(&e, at(VERIFY_AT)).expect_err("tail");
    assert!(matches!(err, SnpError::Report { offset: 0x49F, .. }), "{err}");

    // Reserved bytes inside REPORTED_TCB (Milan layout: bytes 2..6).
    let mut e = evidence();
    e.report[0x180 + 3] = 1;
    let err = verify(&e, at(VERIFY_AT)).expect_err("tcb reserved");
    assert!(matches!(err, SnpError::Report { offset: 0x183, .. }), "{err}");

    // The signature algorithm field.
    let mut e = evidence();
    e.report[0x34] = 2;
    let err = verify(&e, at(VERIFY_AT)).expect_err("sig algo");
    assert!(err.to_string().contains("SIGNATURE_ALGO"), "{err}");

    // Version 1 is not supported.
    let mut e = evidence();
    e.report[0] = 1;
    let err = verify(&e, at(VERIFY_AT)).expect_err("version");
    assert!(err.to_string().contains("VERSION"), "{err}");

    // A measurement change is caught by the signature.
    let mut e = evidence();
    e.report[0x90] ^= 1;
    assert!(matches!(verify(&e, at(VERIFY_AT)), Err(SnpError::ReportSignature(_))));

    // REPORTED_TCB's microcode byte is signed too, but the VCEK mismatch is named first.
    let mut e = evidence();
    e.report[0x187] ^= 1;
    let err = verify(&e, at(VERIFY_AT)).expect_err("tcb");
    assert!(matches!(err, SnpError::TcbMismatch { field: "microcode", report: 114, vcek: 115, .. }), "{err}");

    // The unsigned outer signatureAlgorithm of the VCEK (RSASSA-PSS parameters: salt length at
    // the end of the algorithm identifier) must equal the signed one.
    let outer_alg = VCEK.len() - 517 - 72; // Certificate = tbs | sigAlg (72 bytes) | BIT STRING (517)
    let salt = outer_alg + 0x42;
    assert_eq!(VCEK[salt], 0x30, "salt length 48 at {salt}");
    let mut e = evidence();
    e.vcek[salt] = 0x20;
    let err = verify(&e, at(VERIFY_AT)).expect_err("outer alg");
    assert!(matches!(err, SnpError::Certificate { cert: CertRole::Vcek, .. }), "{err}");
    assert!(err.to_string().contains("signatureAlgorithm"), "{err}");

    // The unused-bits byte of the VCEK's signature BIT STRING.
    let mut e = evidence();
    let unused_bits = VCEK.len() - 513;
    assert_eq!(VCEK[unused_bits], 0);
    e.vcek[unused_bits] = 1;
    let err = verify(&e, at(VERIFY_AT)).expect_err("unused bits");
    assert!(err.to_string().contains("unused bits"), "{err}");
}

#[test]
fn vcek_validity_window() {
    let e = evidence();
    verify(&e, at(VCEK_NOT_BEFORE)).expect("valid at notBefore");
    verify(&e, at(VCEK_NOT_AFTER)).expect("valid at notAfter");

    let err = verify(&e, at(VCEK_NOT_BEFORE - 1)).expect_err("before notBefore");
    assert!(matches!(err, SnpError::CertificateNotYetValid { cert: CertRole::Vcek, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("VCEK") && msg.contains("2023-04-03T19:23:43Z"), "{msg}");

    let err = verify(&e, at(VCEK_NOT_AFTER + 1)).expect_err("after notAfter");
    assert!(matches!(err, SnpError::CertificateExpired { cert: CertRole::Vcek, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("VCEK") && msg.contains("2030-04-03T19:23:43Z"), "{msg}");

    // Half a second past notAfter is already past it.
    let err = verify(&e, at(VCEK_NOT_AFTER) + Duration::from_millis(500)).expect_err("just after");
    assert!(matches!(err, SnpError::CertificateExpired { cert: CertRole::Vcek, .. }), "{err}");

    // Before the ARK and ASK existed, the ARK is the first one named.
    let err = verify(&e, at(1_600_000_000)).expect_err("2020");
    assert!(matches!(err, SnpError::CertificateNotYetValid { cert: CertRole::Ark, .. }), "{err}");
}

#[test]
fn genoa_ark_in_place_of_milans_fails() {
    let genoa = sev::certs::snp::builtin::genoa::ark().expect("builtin").to_der().expect("der");
    let e = SnpEvidence { ark: genoa, ..evidence() };
    let err = verify(&e, at(VERIFY_AT)).expect_err("genoa ark");
    // It is a pinned root, so the chain is judged as Genoa's, and the Milan VCEK does not fit it.
    assert!(matches!(err, SnpError::VcekExtension { .. }), "{err}");
    assert!(err.to_string().contains("Milan-B0"), "{err}");
}

#[test]
fn self_made_ark_fails() {
    use sev::certs::snp::{Certificate, Verifiable};
    // The self-made root is a well-formed, validly self-signed RSA-PSS root with AMD's subject.
    let fake = Certificate::from_der(SELF_MADE_ARK).expect("parses");
    (&fake, &fake).verify().expect("self-signed");

    let e = SnpEvidence { ark: SELF_MADE_ARK.to_vec(), ..evidence() };
    let err = verify(&e, at(VERIFY_AT)).expect_err("self-made ark");
    assert!(matches!(err, SnpError::UntrustedArk), "{err}");
    assert!(err.to_string().contains("ARK"), "{err}");
}

#[test]
fn certificates_in_the_wrong_roles_fail() {
    let swapped = SnpEvidence { vcek: ASK.to_vec(), ask: VCEK.to_vec(), ..evidence() };
    assert!(verify(&swapped, at(VERIFY_AT)).is_err());
    let ark_as_ask = SnpEvidence { ask: ARK.to_vec(), ..evidence() };
    assert!(verify(&ark_as_ask, at(VERIFY_AT)).is_err());
    let truncated = SnpEvidence { report: REPORT[..1183].to_vec(), ..evidence() };
    assert!(matches!(verify(&truncated, at(VERIFY_AT)), Err(SnpError::Report { .. })));
    let mut trailing = evidence();
    trailing.vcek.push(0);
    assert!(matches!(verify(&trailing, at(VERIFY_AT)), Err(SnpError::Certificate { cert: CertRole::Vcek, .. })));
}

#[test]
fn policy_minimum_tcb() {
    let claims = claims();
    check_policy(&claims, &SnpPolicy::default()).expect("empty policy");
    let exact =
        SnpPolicy { minimum_tcb: SnpTcb { bootloader: 3, tee: 0, snp: 8, microcode: 115 }, ..Default::default() };
    check_policy(&claims, &exact).expect("minimum equal to reported");

    let cases = [
        ("bootloader", SnpTcb { bootloader: 4, tee: 0, snp: 0, microcode: 0 }, 3, 4),
        ("tee", SnpTcb { bootloader: 0, tee: 1, snp: 0, microcode: 0 }, 0, 1),
        ("snp", SnpTcb { bootloader: 0, tee: 0, snp: 9, microcode: 0 }, 8, 9),
        // Higher fields elsewhere do not compensate.
        ("microcode", SnpTcb { bootloader: 0, tee: 0, snp: 0, microcode: 116 }, 115, 116),
    ];
    for (name, minimum_tcb, reported_value, minimum_value) in cases {
        let err = check_policy(&claims, &SnpPolicy { minimum_tcb, ..Default::default() }).expect_err(name);
        match &err {
            SnpError::TcbBelowMinimum { field, reported, minimum } => {
                assert_eq!((*field, *reported, *minimum), (name, reported_value, minimum_value));
            }
            other => panic!("{name}: unexpected {other}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(name) && msg.contains(&reported_value.to_string()), "{msg}");
        assert!(msg.contains(&minimum_value.to_string()), "{msg}");
    }
}

#[test]
fn policy_debug() {
    let mut claims = claims();
    claims.debug_allowed = true;
    let err = check_policy(&claims, &SnpPolicy::default()).expect_err("debug forbidden by default");
    assert!(matches!(err, SnpError::DebugNotAllowed), "{err}");
    assert!(err.to_string().contains("debug"), "{err}");
    check_policy(&claims, &SnpPolicy { allow_debug: true, ..Default::default() }).expect("debug allowed");
}

#[test]
fn policy_vmpl_and_fmc() {
    let mut claims = claims();
    claims.vmpl = 2;
    let err = check_policy(&claims, &SnpPolicy::default()).expect_err("VMPL 0 only by default");
    assert!(matches!(err, SnpError::VmplNotAllowed { vmpl: 2, max: 0 }), "{err}");
    assert!(err.to_string().contains("VMPL 2"), "{err}");
    check_policy(&claims, &SnpPolicy { max_vmpl: 2, ..Default::default() }).expect("VMPL 2 allowed");

    let claims = self::claims();
    // A part without an FMC is not held to an FMC minimum.
    check_policy(&claims, &SnpPolicy { minimum_fmc: 3, ..Default::default() }).expect("Milan has no FMC");
    let turin = SnpClaims { fmc: Some(2), ..claims };
    let err = check_policy(&turin, &SnpPolicy { minimum_fmc: 3, ..Default::default() }).expect_err("FMC too low");
    assert!(matches!(err, SnpError::TcbBelowMinimum { field: "fmc", reported: 2, minimum: 3 }), "{err}");
    check_policy(&turin, &SnpPolicy { minimum_fmc: 2, ..Default::default() }).expect("FMC at the minimum");
}

#[test]
fn policy_measurements() {
    let claims = claims();
    let other = [0x11u8; 48];
    let listed = SnpPolicy { measurements: vec![other, claims.measurement], ..Default::default() };
    check_policy(&claims, &listed).expect("listed");
    let unlisted = SnpPolicy { measurements: vec![other], ..Default::default() };
    let err = check_policy(&claims, &unlisted).expect_err("unlisted");
    assert!(matches!(err, SnpError::MeasurementNotAllowed { allowed: 1, .. }), "{err}");
    assert!(err.to_string().contains(&hex::encode(claims.measurement)), "{err}");
}

#[test]
fn policy_serde_uses_hex_measurements() {
    let json = r#"{
        "minimum_tcb": { "bootloader": 3, "tee": 0, "snp": 8, "microcode": 115 },
        "allow_debug": false,
        "measurements": ["7A1E5C266C0108DBC9BB94FA926951320940915D0AAFB42464BD88B579EA158D3E1A0DC39B2C60BD95B9C480CD81841F"]
    }"#;
    let policy: SnpPolicy = serde_json::from_str(json).expect("policy");
    check_policy(&claims(), &policy).expect("sample satisfies it");
    let back = serde_json::to_value(&policy).expect("serialize");
    assert_eq!(
        back["measurements"][0],
        "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f"
    );
    assert_eq!(serde_json::from_value::<SnpPolicy>(back).expect("round trip"), policy);

    assert_eq!(serde_json::from_str::<SnpPolicy>("{}").expect("all defaults"), SnpPolicy::default());
    let err = serde_json::from_str::<SnpPolicy>(r#"{"measurements": ["abcd"]}"#).expect_err("short");
    assert!(err.to_string().contains("96 hex digits"), "{err}");
    assert!(serde_json::from_str::<SnpPolicy>(r#"{"allow_debugg": true}"#).is_err(), "typo rejected");
}

#[test]
fn generate_without_sev_guest_device_is_unavailable() {
    if std::path::Path::new("/dev/sev-guest").exists() {
        return; // On real SNP hardware this test has nothing to say.
    }
    let err = tpod_attestation::snp::generate([0u8; 64]).expect_err("no device");
    assert!(matches!(err, SnpError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("/dev/sev-guest"), "{err}");
}
