//! Evidence comes from the network: whatever bytes arrive, decoding and verification must refuse
//! them without panicking. Property tests feed arbitrary bytes, and real samples with arbitrary
//! parts swapped in or cut short, through every decoder and verifier of the crate.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use tpod_attestation::snp::{self, SnpEvidence};
use tpod_attestation::tdx::{self, TdxEvidence};
use tpod_attestation::{Digest, Options, Policy, TeeKind};
use tpod_wire::pb;

const SNP_REPORT: &[u8] = include_bytes!("data/snp/report_milan.bin");
const SNP_VCEK: &[u8] = include_bytes!("data/snp/vcek_milan.der");
const SNP_ASK: &[u8] = include_bytes!("data/snp/ask_milan.der");
const SNP_ARK: &[u8] = include_bytes!("data/snp/ark_milan.der");
/// 2024-01-01T00:00:00Z, when the SNP sample verifies.
const SNP_AT: u64 = 1_704_067_200;
const TDX_QUOTE: &[u8] = include_bytes!("data/tdx/tdx_quote");
const TDX_COLLATERAL: &[u8] = include_bytes!("data/tdx/tdx_quote_collateral.bin");
/// 2025-07-01T00:00:00Z, when the main TDX sample verifies.
const TDX_AT: u64 = 1_751_328_000;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn tdx_quote() -> Vec<u8> {
    tdx::trim_quote(TDX_QUOTE).unwrap().to_vec()
}

fn policy() -> Policy {
    Policy {
        tee: [TeeKind::Snp, TeeKind::Tdx, TeeKind::Simulated].into(),
        provider_binaries: [Digest([1; 32])].into(),
        provider_configs: Default::default(),
        snp: Default::default(),
        tdx: Default::default(),
        simulated: Some(tpod_attestation::policy::SimulatedPolicy { root: "00".repeat(32) }),
    }
}

/// Whether `evidence` passes every check for some peer, nonce and a policy accepting every TEE.
fn passes(evidence: &pb::Evidence) -> bool {
    let peer = libp2p_identity::Keypair::generate_ed25519().public().to_peer_id();
    let options = Options { allow_simulated: true, at: SystemTime::now() };
    tpod_attestation::verify(evidence, &[0; 32], &peer, &policy(), &options).attested.is_some()
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn fixed(len: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), len..=len)
}

fn evidence() -> impl Strategy<Value = pb::Evidence> {
    let key = libp2p_identity::Keypair::generate_ed25519().public().encode_protobuf();
    let binding =
        (fixed(20), fixed(32), fixed(32), fixed(32)).prop_map(move |(signer, enc, binary, config)| pb::Binding {
            libp2p_public_key: key.clone(),
            enclave_signer: signer,
            enclave_encryption_key: enc,
            provider_binary_sha256: binary,
            provider_config_sha256: config,
        });
    let tee = prop_oneof![
        (bytes(2048), bytes(1500), bytes(1500), bytes(1500)).prop_map(|(report, vcek, ask, ark)| {
            pb::evidence::Tee::Snp(pb::SnpEvidence { report, vcek, ask, ark })
        }),
        (bytes(6000), bytes(4000))
            .prop_map(|(quote, collateral)| { pb::evidence::Tee::Tdx(pb::TdxEvidence { quote, collateral }) }),
        (fixed(64), fixed(32), fixed(64)).prop_map(|(report_data, root_public_key, signature)| {
            pb::evidence::Tee::Simulated(pb::SimulatedEvidence { report_data, root_public_key, signature })
        }),
    ];
    (binding, tee).prop_map(|(binding, tee)| pb::Evidence { binding: Some(binding), tee: Some(tee) })
}

#[test]
fn the_samples_pass_unchanged() {
    // So that every refusal below is the change's doing.
    let snp = SnpEvidence {
        report: SNP_REPORT.to_vec(),
        vcek: SNP_VCEK.to_vec(),
        ask: SNP_ASK.to_vec(),
        ark: SNP_ARK.to_vec(),
    };
    snp::verify(&snp, at(SNP_AT)).unwrap();
    tdx::verify(&TdxEvidence { quote: tdx_quote(), collateral: TDX_COLLATERAL.to_vec() }, at(TDX_AT)).unwrap();
}

#[test]
fn every_cut_of_the_collateral_is_refused() {
    for len in 0..TDX_COLLATERAL.len() {
        assert!(tdx::decode_collateral(&TDX_COLLATERAL[..len]).is_err(), "cut at {len} decoded");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Arbitrary bytes as an attestation answer: the wire decoder refuses them or yields
    /// evidence that every check refuses.
    #[test]
    fn arbitrary_answers_never_pass(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        if let Ok(response) = tpod_wire::codec::decode::<pb::AttestResponse>(&bytes)
            && let Some(pb::attest_response::Result::Evidence(evidence)) = response.result
        {
            prop_assert!(!passes(&evidence));
        }
    }

    /// Well-formed evidence of each kind with arbitrary contents (right-sized binding fields, so
    /// that it gets past the wire's validation and into the checks): never passes.
    #[test]
    fn arbitrary_evidence_never_passes(evidence in evidence()) {
        let bytes = prost::Message::encode_to_vec(&pb::AttestResponse {
            version: tpod_wire::VERSION,
            result: Some(pb::attest_response::Result::Evidence(evidence)),
        });
        if let Ok(pb::AttestResponse { result: Some(pb::attest_response::Result::Evidence(evidence)), .. }) =
            tpod_wire::codec::decode::<pb::AttestResponse>(&bytes)
        {
            prop_assert!(!passes(&evidence));
        }
    }

    #[test]
    fn arbitrary_collateral_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = tdx::decode_collateral(&bytes);
        let evidence = TdxEvidence { quote: tdx_quote(), collateral: bytes };
        prop_assert!(tdx::verify(&evidence, at(TDX_AT)).is_err());
    }

    #[test]
    fn arbitrary_quotes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
        let evidence = TdxEvidence { quote: bytes, collateral: TDX_COLLATERAL.to_vec() };
        prop_assert!(tdx::verify(&evidence, at(TDX_AT)).is_err());
    }

    /// The real quote cut anywhere, or with arbitrary bytes appended.
    #[test]
    fn cut_or_extended_quotes_are_refused(cut in 0usize..4936, tail in proptest::collection::vec(any::<u8>(), 1..64)) {
        let quote = tdx_quote();
        let cut = cut.min(quote.len() - 1);
        let short = TdxEvidence { quote: quote[..cut].to_vec(), collateral: TDX_COLLATERAL.to_vec() };
        prop_assert!(tdx::verify(&short, at(TDX_AT)).is_err());
        let long = TdxEvidence { quote: [quote, tail].concat(), collateral: TDX_COLLATERAL.to_vec() };
        prop_assert!(tdx::verify(&long, at(TDX_AT)).is_err());
    }

    #[test]
    fn arbitrary_snp_reports_are_refused(report in proptest::collection::vec(any::<u8>(), 1184..=1184)) {
        let evidence = SnpEvidence { report, vcek: SNP_VCEK.to_vec(), ask: SNP_ASK.to_vec(), ark: SNP_ARK.to_vec() };
        prop_assert!(snp::verify(&evidence, at(SNP_AT)).is_err());
    }

    /// Each certificate replaced with arbitrary bytes, or the report cut short.
    #[test]
    fn arbitrary_snp_certificates_are_refused(
        which in 0usize..4,
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut evidence =
            SnpEvidence { report: SNP_REPORT.to_vec(), vcek: SNP_VCEK.to_vec(), ask: SNP_ASK.to_vec(), ark: SNP_ARK.to_vec() };
        let cut = bytes.len().min(SNP_REPORT.len() - 1);
        match which {
            0 => evidence.vcek = bytes,
            1 => evidence.ask = bytes,
            2 => evidence.ark = bytes,
            _ => evidence.report.truncate(cut),
        }
        prop_assert!(snp::verify(&evidence, at(SNP_AT)).is_err());
    }
}
