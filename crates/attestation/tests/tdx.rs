//! Tests of TDX evidence verification against real quotes and collateral from dcap-qvl 0.7.1's
//! samples (see `data/tdx/README.md` for their provenance and the verification times used).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::ops::Range;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dcap_qvl::QuoteCollateralV3;
use tpod_attestation::tdx::{self, Measurement, TdxClaims, TdxError, TdxEvidence, TdxPolicy};

/// 2025-07-01T00:00:00Z: inside every validity window of the main sample's collateral (the
/// narrowest is the PCK CRL, 2025-06-19T10:00:35Z to 2025-07-19T10:00:35Z).
const T_MAIN: u64 = 1_751_328_000;
/// 2026-03-01T00:00:00Z, for the `tdx_quote_outdated` sample (window 2026-02-18T10:58:51Z to
/// 2026-03-20T10:41:15Z).
const T_OUTDATED: u64 = 1_772_323_200;
/// 2026-10-20T00:00:00Z, for the `tdx_quote_td15ex` sample (window 2026-10-08T00:28:26Z to
/// 2026-11-06T23:45:11Z).
const T_TD15EX: u64 = 1_792_454_400;

fn data(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/tdx/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn collateral_json(name: &str) -> QuoteCollateralV3 {
    serde_json::from_slice(&data(name)).unwrap()
}

/// Evidence from a sample: the quote without its padding, the collateral in canonical encoding.
fn evidence(quote: &str, collateral: &str) -> TdxEvidence {
    TdxEvidence {
        quote: tdx::trim_quote(&data(quote)).unwrap().to_vec(),
        collateral: tdx::encode_collateral(&collateral_json(collateral)).unwrap(),
    }
}

fn main_evidence() -> TdxEvidence {
    evidence("tdx_quote", "tdx_quote_collateral.json")
}

fn main_claims() -> TdxClaims {
    tdx::verify(&main_evidence(), at(T_MAIN)).unwrap()
}

#[test]
fn main_sample_verifies_and_claims_match_the_quote_bytes() {
    let ev = main_evidence();
    let q = &ev.quote;
    // TDX quote v4 layout (Intel TDX DCAP Quote Generation Library, quote format): a 48-byte
    // header (version u16 LE at 0, TEE type u32 LE at 4), then the 584-byte TD report at 48 with
    // TDATTRIBUTES at +120, MRTD at +136, RTMR0-3 at +328 and REPORTDATA at +520.
    assert_eq!(u16::from_le_bytes([q[0], q[1]]), 4);
    assert_eq!(u32::from_le_bytes(q[4..8].try_into().unwrap()), 0x81);
    let claims = tdx::verify(&ev, at(T_MAIN)).unwrap();
    assert_eq!(claims.report_data[..], q[568..632]);
    assert_eq!(claims.mr_td[..], q[184..232]);
    for (i, rtmr) in claims.rtmrs.iter().enumerate() {
        assert_eq!(rtmr[..], q[376 + 48 * i..424 + 48 * i], "RTMR{i}");
    }
    assert_eq!(claims.debug, q[168] != 0);
    assert!(!claims.debug);
    assert_eq!(claims.tcb_status, "UpToDate");
    assert!(claims.advisory_ids.is_empty());
    // Fixed values, so that a change in what the offsets above read is noticed too.
    assert!(hex::encode(claims.mr_td).starts_with("91eb2b44d141d4ece09f0c75c2c53d247a3c68ed"));
    assert!(hex::encode(claims.report_data).starts_with("9a9d48e7f6799642d3d1b34e1e5e1742"));
    tdx::check_policy(&claims, &TdxPolicy::default()).unwrap();
}

#[test]
fn td15ex_sample_verifies() {
    // Quote v5 with a TDX 1.5ex body (type 4) and a collateral carrying pck_certificate_chain.
    let ev = evidence("tdx_quote_td15ex", "tdx_quote_td15ex_collateral.json");
    let claims = tdx::verify(&ev, at(T_TD15EX)).unwrap();
    // v5: 48-byte header, 6-byte body descriptor, TD report; REPORTDATA at +520 of the report.
    assert_eq!(claims.report_data[..], ev.quote[54 + 520..54 + 584]);
    assert_eq!(claims.mr_td[..], ev.quote[54 + 136..54 + 184]);
    assert_eq!(claims.tcb_status, "UpToDate");
}

#[test]
fn padded_quote_is_refused_until_trimmed() {
    let raw = data("tdx_quote");
    // The sample carries 70 zero bytes after its signature data, which dcap-qvl ignores.
    let ev = TdxEvidence { quote: raw.clone(), collateral: main_evidence().collateral };
    let err = tdx::verify(&ev, at(T_MAIN)).unwrap_err();
    assert!(matches!(err, TdxError::Quote(_)), "{err}");
    assert!(err.to_string().contains("70 bytes follow the end"), "{err}");
    assert_eq!(tdx::trim_quote(&raw).unwrap().len(), raw.len() - 70);
    let mut dirty = raw;
    *dirty.last_mut().unwrap() = 1;
    let err = tdx::trim_quote(&dirty).unwrap_err();
    assert!(err.to_string().contains("non-zero byte"), "{err}");
}

#[test]
fn collateral_encoding_matches_an_independent_encoder() {
    // tdx_quote_collateral.bin was written by the Python script in data/tdx/README.md from the
    // JSON, following the format documented on encode_collateral.
    let json = collateral_json("tdx_quote_collateral.json");
    let encoded = tdx::encode_collateral(&json).unwrap();
    assert_eq!(encoded, data("tdx_quote_collateral.bin"));
    let decoded = tdx::decode_collateral(&encoded).unwrap();
    assert_eq!(tdx::encode_collateral(&decoded).unwrap(), encoded);
    // Byte fields come back unchanged; PEM chains come back canonical, which the samples are.
    assert_eq!(decoded, json);
    // Trailing bytes and an unknown format version are refused.
    let mut longer = encoded.clone();
    longer.push(0);
    assert!(tdx::decode_collateral(&longer).unwrap_err().to_string().contains("follow the last field"));
    let mut other_version = encoded;
    other_version[7] = 2;
    assert!(tdx::decode_collateral(&other_version).unwrap_err().to_string().contains("magic"));
}

// ---------------------------------------------------------------------------------------------
// Byte flips
// ---------------------------------------------------------------------------------------------

/// A region of the evidence and the stride at which its bytes are flipped in the CI tests.
struct Region {
    name: String,
    range: Range<usize>,
    stride: usize,
}

fn region(regions: &mut Vec<Region>, name: &str, start: usize, len: usize, stride: usize) {
    regions.push(Region { name: name.to_owned(), range: start..start + len, stride });
}

/// The regions of the main quote (v4, cert type 6 nesting type 5). Strides: every byte of the
/// header, the signatures, the QE authentication data and the certification data (PEM, length
/// and type fields, mostly refused before any signature check); every 4th byte of REPORTDATA
/// and the attestation key and every 8th of the rest of the TD report and of the QE report,
/// where each flip costs a full verification (about 25-50 ms in a debug build).
fn quote_regions(q: &[u8]) -> Vec<Region> {
    let u16_at = |o: usize| usize::from(u16::from_le_bytes([q[o], q[o + 1]]));
    let u32_at = |o: usize| u32::from_le_bytes(q[o..o + 4].try_into().unwrap()) as usize;
    let mut r = Vec::new();
    region(&mut r, "header", 0, 48, 1);
    region(&mut r, "TD report", 48, 520, 8);
    region(&mut r, "TD report: REPORTDATA", 568, 64, 4);
    region(&mut r, "signature data size", 632, 4, 1);
    region(&mut r, "quote signature", 636, 64, 1);
    region(&mut r, "attestation key", 700, 64, 4);
    region(&mut r, "certification data type and size", 764, 6, 1);
    region(&mut r, "QE report", 770, 384, 8);
    region(&mut r, "QE report signature", 1154, 64, 1);
    let auth = u16_at(1218);
    region(&mut r, "QE authentication data", 1218, 2 + auth, 1);
    let pck = 1220 + auth;
    region(&mut r, "PCK certification data type and size", pck, 6, 1);
    region(&mut r, "PCK certificate chain (PEM)", pck + 6, u32_at(pck + 2), 1);
    assert_eq!(r.last().unwrap().range.end, q.len(), "regions cover the whole quote");
    r
}

/// The regions of encoded collateral, read from the encoding (format on encode_collateral).
/// Strides: every byte of the magic, length, count and flag fields, of the signatures, of the
/// root CA CRL, of the PCK CRL issuer chain and of the root certificates (each refused before
/// or at the first signature check); every 4th byte of the signing certificates and of the QE
/// identity; every 8th of the TCB info JSON; every 16th of the PCK CRL body (its first 64 and
/// last 80 bytes, which hold its header, issuer and signature, every byte).
fn collateral_regions(c: &[u8], dense: bool) -> Vec<Region> {
    struct Walker<'a> {
        c: &'a [u8],
        pos: usize,
        dense: bool,
        regions: Vec<Region>,
    }
    impl Walker<'_> {
        fn bytes(&mut self, name: &str, stride: usize) {
            let pos = self.pos;
            let len = u32::from_be_bytes(self.c[pos..pos + 4].try_into().unwrap()) as usize;
            let r = &mut self.regions;
            region(r, &format!("length of {name}"), pos, 4, 1);
            if self.dense {
                region(r, name, pos + 4, len, 1);
            } else if name == "pck_crl" {
                region(r, "pck_crl head", pos + 4, 64, 1);
                region(r, "pck_crl body", pos + 4 + 64, len - 144, stride);
                region(r, "pck_crl tail", pos + 4 + len - 80, 80, 1);
            } else {
                region(r, name, pos + 4, len, stride);
            }
            self.pos += 4 + len;
        }
        fn chain(&mut self, name: &str, leaf_stride: usize) {
            let count = usize::from(self.c[self.pos]);
            region(&mut self.regions, &format!("count of {name}"), self.pos, 1, 1);
            self.pos += 1;
            for i in 0..count {
                // Root certificates are compared with the pinned root: cheap, every byte.
                let stride = if i + 1 == count { 1 } else { leaf_stride };
                self.bytes(&format!("{name}[{i}]"), stride);
            }
        }
    }
    let mut w = Walker { c, pos: 8, dense, regions: Vec::new() };
    region(&mut w.regions, "magic", 0, 8, 1);
    w.bytes("root_ca_crl", 1);
    w.bytes("pck_crl", 16);
    w.chain("pck_crl_issuer_chain", 1);
    w.chain("tcb_info_issuer_chain", 4);
    w.bytes("tcb_info", 8);
    w.bytes("tcb_info_signature", 1);
    w.chain("qe_identity_issuer_chain", 4);
    w.bytes("qe_identity", 4);
    w.bytes("qe_identity_signature", 1);
    region(&mut w.regions, "pck_certificate_chain flag", w.pos, 1, 1);
    assert_eq!(c[w.pos], 0);
    assert_eq!(w.pos + 1, c.len(), "regions cover the whole collateral");
    w.regions
}

/// Flips bit 0 of each selected byte (`dense`: every byte) of the quote or the collateral and
/// returns the positions at which verification still succeeded, with their region.
fn surviving_flips(
    in_quote: bool,
    dense: bool,
    masks: &[u8],
    select: impl Fn(&Region) -> bool,
) -> (usize, Vec<String>) {
    let ev = main_evidence();
    let target = if in_quote { &ev.quote } else { &ev.collateral };
    let regions = if in_quote { quote_regions(target) } else { collateral_regions(target, dense) };
    let mut tried = 0;
    let mut survivors = Vec::new();
    for region in regions.iter().filter(|r| select(r)) {
        let stride = if dense { 1 } else { region.stride };
        for pos in region.range.clone().step_by(stride) {
            for mask in masks {
                let mut flipped = ev.clone();
                let bytes = if in_quote { &mut flipped.quote } else { &mut flipped.collateral };
                bytes[pos] ^= mask;
                tried += 1;
                if tdx::verify(&flipped, at(T_MAIN)).is_ok() {
                    survivors.push(format!("{} at {pos} (mask {mask:#04x})", region.name));
                }
            }
        }
    }
    (tried, survivors)
}

/// The signed header and TD report (split from the rest so that both run in parallel).
#[test]
fn flipping_quote_header_and_report_bytes_fails() {
    let (tried, survivors) = surviving_flips(true, false, &[0x01], |r| r.range.start < 632);
    assert!(tried > 120, "{tried}");
    assert!(survivors.is_empty(), "verification still succeeds after flipping: {survivors:#?}");
}

/// Signatures, attestation key, QE report and authentication data, certification data headers.
#[test]
fn flipping_quote_signature_data_bytes_fails() {
    let (tried, survivors) = surviving_flips(true, false, &[0x01], |r| (632..1258).contains(&r.range.start));
    assert!(tried > 200, "{tried}");
    assert!(survivors.is_empty(), "verification still succeeds after flipping: {survivors:#?}");
}

/// Every byte of the PCK chain PEM: refused by the canonical-PEM check, the pinned root, the PCK
/// CRL issuer chain or, for the PCK leaf, dcap-qvl's chain verification (the slow part).
#[test]
fn flipping_quote_pck_chain_bytes_fails() {
    let (tried, survivors) = surviving_flips(true, false, &[0x01], |r| r.range.start >= 1258);
    assert!(tried > 3600, "{tried}");
    assert!(survivors.is_empty(), "verification still succeeds after flipping: {survivors:#?}");
}

#[test]
fn flipping_collateral_bytes_fails() {
    let (tried, survivors) = surviving_flips(false, false, &[0x01], |_| true);
    assert!(tried > 2500, "{tried}");
    assert!(survivors.is_empty(), "verification still succeeds after flipping: {survivors:#?}");
}

/// Every byte, two different bit flips each: about 30 000 verifications, too slow for CI in a
/// debug build. Run with `cargo test -p tpod-attestation --test tdx -- --ignored`.
#[test]
#[ignore = "exhaustive, several minutes in a debug build"]
fn flipping_every_byte_fails_exhaustive() {
    for in_quote in [true, false] {
        let (tried, survivors) = surviving_flips(in_quote, true, &[0x01, 0x80], |_| true);
        eprintln!("quote: {in_quote}, flips tried: {tried}");
        assert!(survivors.is_empty(), "verification still succeeds after flipping: {survivors:#?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Time, TEE type, chain shape
// ---------------------------------------------------------------------------------------------

#[test]
fn collateral_outside_its_validity_is_refused_naming_what_expired() {
    let ev = main_evidence();
    // At the PCK CRL's nextUpdate (2025-07-19T10:00:35Z), from which webpki deems a CRL expired;
    // TCB info and QE identity are valid until 10:16:03 and 10:32:27.
    let err = tdx::verify(&ev, at(1_752_919_235)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TdxError::NotValidAt { .. }), "{msg}");
    assert!(
        msg.contains(
            "PCK CRL (collateral pck_crl) expired, valid from 2025-06-19T10:00:35Z through 2025-07-19T10:00:34Z"
        ),
        "{msg}"
    );
    assert!(!msg.contains("TCB info"), "{msg}");
    // The second before (the time dcap-qvl's own tests use) still verifies.
    tdx::verify(&ev, at(1_752_919_234)).unwrap();
    // A year later the TCB info, the QE identity and both CRLs have expired.
    let msg = tdx::verify(&ev, at(1_783_000_000)).unwrap_err().to_string();
    for what in ["TCB info", "QE identity", "root CA CRL", "PCK CRL"] {
        assert!(msg.contains(&format!("{what} (collateral")), "{what}: {msg}");
    }
    // Before the TCB info was issued.
    let msg = tdx::verify(&ev, at(1_750_000_000)).unwrap_err().to_string();
    assert!(msg.contains("TCB info (collateral tcb_info) not yet valid"), "{msg}");
}

#[test]
fn sgx_quote_is_refused_as_not_tdx() {
    let ev = TdxEvidence {
        quote: data("sgx_quote"),
        collateral: tdx::encode_collateral(&collateral_json("sgx_quote_collateral.json")).unwrap(),
    };
    let err = tdx::verify(&ev, at(T_MAIN)).unwrap_err();
    assert!(matches!(err, TdxError::NotTdx { tee_type: 0, .. }), "{err}");
    assert!(err.to_string().contains("not a TDX quote"), "{err}");
    assert!(tdx::trim_quote(&ev.quote).is_err());
}

#[test]
fn chains_must_hold_exactly_the_certificates_verification_uses() {
    let json = collateral_json("tdx_quote_collateral.json");
    let quote = tdx::trim_quote(&data("tdx_quote")).unwrap().to_vec();
    let verify = |c: &QuoteCollateralV3| {
        let ev = TdxEvidence { quote: quote.clone(), collateral: tdx::encode_collateral(c).unwrap() };
        tdx::verify(&ev, at(T_MAIN)).unwrap_err().to_string()
    };
    let certs =
        |pem: &str| -> Vec<String> { pem.split_inclusive("-----END CERTIFICATE-----\n").map(str::to_owned).collect() };
    // dcap-qvl never reads the PCK CRL issuer chain: it must still be the quote's PCK CA + root.
    let mut c = json.clone();
    c.pck_crl_issuer_chain = c.tcb_info_issuer_chain.clone();
    assert!(verify(&c).contains("pck_crl_issuer_chain must be the PCK CA certificate"));
    // The root certificate of a chain is never used for path building: it must be the pinned one.
    let mut c = json.clone();
    c.tcb_info_issuer_chain = certs(&json.tcb_info_issuer_chain)[0].clone();
    assert!(verify(&c).contains("tcb_info_issuer_chain must be the signing certificate"));
    let mut c = json.clone();
    let tcb = certs(&json.tcb_info_issuer_chain);
    c.qe_identity_issuer_chain = format!("{}{}", tcb[0], tcb[0]);
    assert!(verify(&c).contains("qe_identity_issuer_chain must be the signing certificate"));
    // A PCK chain in the collateral must be the quote's.
    let mut c = json;
    c.pck_certificate_chain = Some(c.pck_crl_issuer_chain.clone());
    assert!(verify(&c).contains("pck_certificate_chain differs"));
}

#[test]
fn quote_structure_must_be_exact() {
    let quote = tdx::trim_quote(&data("tdx_quote")).unwrap().to_vec();
    let collateral = main_evidence().collateral;
    let verify = |q: Vec<u8>| {
        tdx::verify(&TdxEvidence { quote: q, collateral: collateral.clone() }, at(T_MAIN)).unwrap_err().to_string()
    };
    // dcap-qvl does not read the outer certification data type (6).
    let mut q = quote.clone();
    q[764] = 5;
    assert!(verify(q).contains("certification data type 5, expected 6"));
    // PEM that dcap-qvl would read the same: CR LF line ends (same length: drop the NUL).
    let mut q = quote.clone();
    let pem_start = 1258;
    let nl = pem_start + q[pem_start..].iter().position(|b| *b == b'\n').unwrap();
    q.insert(nl, b'\r');
    q.pop();
    assert!(verify(q).contains("not canonical PEM"));
}

// ---------------------------------------------------------------------------------------------
// Policy
// ---------------------------------------------------------------------------------------------

#[test]
fn tcb_status_must_be_listed() {
    // No TDX sample that verifies has another status than UpToDate (see outdated_sample_below_every_tcb_level),
    // so the claims of the main sample are given another status.
    let claims = TdxClaims {
        tcb_status: "OutOfDate".to_owned(),
        advisory_ids: vec!["INTEL-SA-01036".to_owned()],
        ..main_claims()
    };
    let msg = tdx::check_policy(&claims, &TdxPolicy::default()).unwrap_err().to_string();
    assert!(msg.contains("TCB status \"OutOfDate\" (advisories [\"INTEL-SA-01036\"])"), "{msg}");
    assert!(msg.contains("tcb_statuses [\"UpToDate\"]"), "{msg}");
    let policy =
        TdxPolicy { tcb_statuses: vec!["UpToDate".to_owned(), "OutOfDate".to_owned()], ..TdxPolicy::default() };
    tdx::check_policy(&claims, &policy).unwrap();
}

#[test]
fn outdated_sample_below_every_tcb_level_is_refused() {
    // The platform TCB of tdx_quote_outdated (from its PCK certificate) is below every level of
    // its TCB info: dcap-qvl verifies it only with its danger-allow-tcb-override feature.
    let err =
        tdx::verify(&evidence("tdx_quote_outdated", "tdx_quote_outdated_collateral.json"), at(T_OUTDATED)).unwrap_err();
    assert!(matches!(err, TdxError::Verification { part: "TCB info", .. }), "{err}");
    assert!(err.to_string().contains("No matching TCB level found"), "{err}");
}

#[test]
fn debug_td_is_refused_unless_allowed() {
    let claims = TdxClaims { debug: true, ..main_claims() };
    let err = tdx::check_policy(&claims, &TdxPolicy::default()).unwrap_err();
    assert!(err.to_string().contains("debug mode"), "{err}");
    assert!(err.to_string().contains("allow_debug is false"), "{err}");
    let policy = TdxPolicy { allow_debug: true, ..TdxPolicy::default() };
    tdx::check_policy(&claims, &policy).unwrap();
}

#[test]
fn mr_td_must_be_listed_when_the_list_is_not_empty() {
    let claims = main_claims();
    let other = Measurement([7; 48]);
    let policy = TdxPolicy { mr_td: vec![other], ..TdxPolicy::default() };
    let msg = tdx::check_policy(&claims, &policy).unwrap_err().to_string();
    assert!(msg.contains(&format!("mr_td {}", hex::encode(claims.mr_td))), "{msg}");
    assert!(msg.contains(&hex::encode([7; 48])), "{msg}");
    let policy = TdxPolicy { mr_td: vec![other, Measurement(claims.mr_td)], ..TdxPolicy::default() };
    tdx::check_policy(&claims, &policy).unwrap();
}

#[test]
fn each_rtmr_must_be_listed_when_its_list_is_not_empty() {
    let claims = main_claims();
    let other = Measurement([9; 48]);
    for i in 0..4 {
        let mut policy = TdxPolicy::default();
        let list = [&mut policy.rtmr0, &mut policy.rtmr1, &mut policy.rtmr2, &mut policy.rtmr3];
        *list.into_iter().nth(i).unwrap() = vec![other];
        let msg = tdx::check_policy(&claims, &policy).unwrap_err().to_string();
        assert!(msg.contains(&format!("rtmr{i} {}", hex::encode(claims.rtmrs[i]))), "{msg}");
        let list = [&mut policy.rtmr0, &mut policy.rtmr1, &mut policy.rtmr2, &mut policy.rtmr3];
        list.into_iter().nth(i).unwrap().push(Measurement(claims.rtmrs[i]));
        tdx::check_policy(&claims, &policy).unwrap();
    }
    // The registers are told apart: RTMR1's value does not pass as RTMR2.
    assert_ne!(claims.rtmrs[1], claims.rtmrs[2]);
    let policy = TdxPolicy { rtmr2: vec![Measurement(claims.rtmrs[1])], ..TdxPolicy::default() };
    assert!(tdx::check_policy(&claims, &policy).is_err());
}

#[test]
fn policy_serialization() {
    let policy: TdxPolicy = serde_json::from_str("{}").unwrap();
    assert_eq!(policy, TdxPolicy::default());
    let json = format!(r#"{{"tcb_statuses":["UpToDate"],"allow_debug":false,"mr_td":["{}"]}}"#, "ab".repeat(48));
    let policy: TdxPolicy = serde_json::from_str(&json).unwrap();
    assert_eq!(policy.mr_td, vec![Measurement([0xab; 48])]);
    assert_eq!(serde_json::to_string(&policy).unwrap(), json);
    assert!(serde_json::from_str::<TdxPolicy>(r#"{"mr_td":["abcd"]}"#).is_err());
    assert!(serde_json::from_str::<TdxPolicy>(r#"{"mrtd":[]}"#).is_err());
    let json =
        format!(r#"{{"tcb_statuses":["UpToDate"],"allow_debug":false,"mr_td":[],"rtmr3":["{}"]}}"#, "cd".repeat(48));
    let policy: TdxPolicy = serde_json::from_str(&json).unwrap();
    assert_eq!(policy.rtmr3, vec![Measurement([0xcd; 48])]);
    assert_eq!(serde_json::to_string(&policy).unwrap(), json);
}
