//! Verifying evidence as a publisher: each check on its own, with why it passed or failed, so
//! `tpod verify` can show them all and `tpod deploy` can refuse on the first failure with its
//! reason. What passes is an [`Attested`] provider: the enclave keys to use come from there and
//! nowhere else.

use std::time::SystemTime;

use libp2p_identity::PeerId;
use tpod_wire::pb::{self, evidence::Tee};

use crate::{
    binding::{Binding, digest_text, report_data},
    policy::{Digest, Policy, TeeKind},
    simulated, snp, tdx,
};

/// How to verify, besides the policy.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Accept simulated evidence (development only), if the policy also does.
    pub allow_simulated: bool,
    /// The time certificates and collateral must be valid at: now, except for test vectors.
    pub at: SystemTime,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Passed; what was found.
    Pass(String),
    /// Failed; why.
    Fail(String),
    /// Not run, because a check it needs failed.
    Skipped(String),
}

/// One named check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What is checked.
    pub name: &'static str,
    /// How it went.
    pub outcome: Outcome,
}

/// A provider whose evidence passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    /// Its TEE.
    pub tee: TeeKind,
    /// Its libp2p key, enclave keys and software, as the TEE vouches for them.
    pub binding: Binding,
}

/// Every check of one piece of evidence, and the attested provider if all passed.
#[derive(Debug, Clone)]
pub struct Verification {
    /// The checks, in order.
    pub checks: Vec<Check>,
    /// Set when every check passed.
    pub attested: Option<Attested>,
}

/// Evidence that failed a check.
#[derive(Debug, Clone, thiserror::Error)]
#[error("attestation failed: {name}: {reason}")]
pub struct Refused {
    /// The first check that failed.
    pub name: &'static str,
    /// Why.
    pub reason: String,
}

impl Verification {
    /// The attested provider, or the first failed check.
    pub fn into_result(self) -> Result<Attested, Refused> {
        if let Some(attested) = self.attested {
            return Ok(attested);
        }
        let failed = self.checks.into_iter().find_map(|check| match check.outcome {
            Outcome::Fail(reason) => Some(Refused { name: check.name, reason }),
            _ => None,
        });
        Err(failed.unwrap_or(Refused { name: "evidence", reason: "not verified".into() }))
    }
}

/// Names of the checks, in the order they are reported.
pub mod checks {
    /// The kind of TEE is one the policy (and the publisher's flags) accept.
    pub const TEE_KIND: &str = "TEE kind";
    /// The report is signed through a chain that ends at the vendor's pinned root.
    pub const SIGNATURE: &str = "evidence signature";
    /// TCB level, debug mode and launch measurement meet the policy.
    pub const TEE_POLICY: &str = "TCB and TEE policy";
    /// The report data commits to this nonce and to the bound keys and software.
    pub const BINDING: &str = "nonce and keys bound";
    /// The bound libp2p key is the connected peer's.
    pub const PEER: &str = "peer id";
    /// The provider binary and configuration are trusted by the policy.
    pub const SOFTWARE: &str = "provider software";
}

/// What a verified TEE signature vouches for.
struct Signed {
    report_data: [u8; 64],
    policy: Result<String, String>,
}

/// Verifies `evidence` received in answer to `nonce` from the connected `peer`.
pub fn verify(
    evidence: &pb::Evidence,
    nonce: &[u8; 32],
    peer: &PeerId,
    policy: &Policy,
    options: &Options,
) -> Verification {
    let mut checks = Vec::with_capacity(6);
    let mut check = |name, outcome| checks.push(Check { name, outcome });

    let kind = match &evidence.tee {
        Some(Tee::Snp(_)) => Some(TeeKind::Snp),
        Some(Tee::Tdx(_)) => Some(TeeKind::Tdx),
        Some(Tee::Simulated(_)) => Some(TeeKind::Simulated),
        None => None,
    };
    let kind_ok = match kind {
        None => Err("the evidence holds no TEE report".to_owned()),
        Some(kind) if !policy.tee.contains(&kind) => Err(format!("{kind} is not among the TEEs the policy accepts")),
        Some(TeeKind::Simulated) if !options.allow_simulated => Err(
            "a simulated TEE proves nothing about the machine; accept it only for development, with --allow-simulated-tee"
                .into(),
        ),
        Some(kind) => Ok(kind.to_string()),
    };
    check(checks::TEE_KIND, outcome(kind_ok.clone()));

    let signed = match &evidence.tee {
        Some(Tee::Snp(wire)) => {
            let evidence = snp::SnpEvidence {
                report: wire.report.clone(),
                vcek: wire.vcek.clone(),
                ask: wire.ask.clone(),
                ark: wire.ark.clone(),
            };
            snp::verify(&evidence, options.at).map_err(|e| e.to_string()).map(|claims| {
                let detail = format!("AMD {:?} report, chain to AMD's pinned root", claims.product);
                let policy = snp::check_policy(&claims, &policy.snp)
                    .map(|()| {
                        format!(
                            "reported TCB {:?}, measurement {}",
                            claims.reported_tcb,
                            hex::encode(claims.measurement)
                        )
                    })
                    .map_err(|e| e.to_string());
                (detail, Signed { report_data: claims.report_data, policy })
            })
        }
        Some(Tee::Tdx(wire)) => {
            let evidence = tdx::TdxEvidence { quote: wire.quote.clone(), collateral: wire.collateral.clone() };
            tdx::verify(&evidence, options.at).map_err(|e| e.to_string()).map(|claims| {
                let detail = "TDX quote, chain to Intel's pinned root, with the collateral carried".to_owned();
                let policy = tdx::check_policy(&claims, &policy.tdx)
                    .map(|()| format!("TCB status {}, MRTD {}", claims.tcb_status, hex::encode(claims.mr_td)))
                    .map_err(|e| e.to_string());
                (detail, Signed { report_data: claims.report_data, policy })
            })
        }
        Some(Tee::Simulated(wire)) => match &policy.simulated {
            None => Err("the policy pins no simulated TEE root".to_owned()),
            Some(pinned) => simulated::verify(wire, &pinned.root).map_err(|e| e.to_string()).map(|report_data| {
                let detail = format!("signed by the pinned development root {}", pinned.root);
                let policy = Ok("nothing to check: no hardware".to_owned());
                (detail, Signed { report_data, policy })
            }),
        },
        None => Err("no TEE report".to_owned()),
    };
    let signed = match signed {
        Ok((detail, signed)) => {
            check(checks::SIGNATURE, Outcome::Pass(detail));
            Some(signed)
        }
        Err(reason) => {
            check(checks::SIGNATURE, Outcome::Fail(reason));
            None
        }
    };
    let unsigned = || Outcome::Skipped("the evidence's signature did not verify".into());
    check(checks::TEE_POLICY, signed.as_ref().map_or_else(unsigned, |s| outcome(s.policy.clone())));

    let binding = evidence
        .binding
        .as_ref()
        .ok_or_else(|| "the evidence binds no keys".to_owned())
        .and_then(|wire| Binding::from_wire(wire).map_err(|e| e.to_string()));
    let bound = match (&signed, &binding) {
        (None, _) => unsigned(),
        (_, Err(reason)) => Outcome::Fail(reason.clone()),
        (Some(signed), Ok(binding)) if signed.report_data == report_data(nonce, binding) => Outcome::Pass(format!(
            "report data commits to this session's nonce, enclave signer 0x{}, encryption key {}",
            hex::encode(binding.enclave_signer),
            hex::encode(binding.enclave_encryption_key)
        )),
        (Some(_), Ok(_)) => Outcome::Fail(
            "the report data does not commit to this session's nonce and the keys sent with it: \
             replayed or altered evidence"
                .into(),
        ),
    };
    check(checks::BINDING, bound.clone());

    let peer_ok = match &binding {
        Err(reason) => Outcome::Fail(reason.clone()),
        Ok(binding) if binding.peer_id() == *peer => {
            Outcome::Pass(format!("the connection is to the attested key {peer}"))
        }
        Ok(binding) => Outcome::Fail(format!(
            "the evidence is bound to peer {}, but the connection is to {peer}",
            binding.peer_id()
        )),
    };
    check(checks::PEER, peer_ok.clone());

    let software = match &binding {
        Err(reason) => Err(reason.clone()),
        Ok(binding) => {
            let (binary, config) = (Digest(binding.measurement.binary), Digest(binding.measurement.config));
            if !policy.provider_binaries.contains(&binary) {
                Err(format!("provider binary {binary} is not among the policy's provider_binaries"))
            } else if !policy.provider_configs.is_empty() && !policy.provider_configs.contains(&config) {
                Err(format!("provider configuration {config} is not among the policy's provider_configs"))
            } else {
                Ok(format!("binary {}, configuration {}", digest_text(&binary.0), digest_text(&config.0)))
            }
        }
    };
    check(checks::SOFTWARE, outcome(software.clone()));

    let passed = checks.iter().all(|c| matches!(c.outcome, Outcome::Pass(_)));
    let attested = match (passed, kind, binding) {
        (true, Some(tee), Ok(binding)) => Some(Attested { tee, binding }),
        _ => None,
    };
    Verification { checks, attested }
}

fn outcome(result: Result<String, String>) -> Outcome {
    match result {
        Ok(detail) => Outcome::Pass(detail),
        Err(reason) => Outcome::Fail(reason),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use libp2p_identity::Keypair;

    use super::*;
    use crate::{Attester, Measurement, SimulatedRoot, Tee, policy::SimulatedPolicy};

    struct Setup {
        keypair: Keypair,
        attester: Attester,
        policy: Policy,
    }

    fn setup() -> Setup {
        let keypair = Keypair::generate_ed25519();
        let root = SimulatedRoot::generate();
        let binding = Binding {
            libp2p_public_key: keypair.public(),
            enclave_signer: [0x11; 20],
            enclave_encryption_key: [0x22; 32],
            measurement: Measurement::of(b"tpod-provider build", b"config"),
        };
        let policy = Policy {
            tee: [TeeKind::Simulated].into(),
            provider_binaries: [Digest(binding.measurement.binary)].into(),
            provider_configs: Default::default(),
            snp: Default::default(),
            tdx: Default::default(),
            simulated: Some(SimulatedPolicy { root: root.public_hex() }),
        };
        let attester = Attester::new(Tee::Simulated(Box::new(root.clone())), binding);
        Setup { keypair, attester, policy }
    }

    const ALLOW: Options = Options { allow_simulated: true, at: SystemTime::UNIX_EPOCH };

    fn failed(verification: &Verification) -> Vec<(&'static str, String)> {
        verification
            .checks
            .iter()
            .filter_map(|c| match &c.outcome {
                Outcome::Fail(reason) => Some((c.name, reason.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn fresh_evidence_from_the_connected_peer_passes_every_check() {
        let s = setup();
        let nonce = [5; 32];
        let evidence = s.attester.attest(&nonce).unwrap();
        let verification = verify(&evidence, &nonce, &s.keypair.public().to_peer_id(), &s.policy, &ALLOW);
        let names: Vec<_> = verification.checks.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [checks::TEE_KIND, checks::SIGNATURE, checks::TEE_POLICY, checks::BINDING, checks::PEER, checks::SOFTWARE]
        );
        assert_eq!(failed(&verification), []);
        let attested = verification.into_result().unwrap();
        assert_eq!(attested.tee, TeeKind::Simulated);
        assert_eq!(attested.binding, *s.attester.binding());
    }

    #[test]
    fn a_replayed_nonce_is_refused() {
        let s = setup();
        let evidence = s.attester.attest(&[5; 32]).unwrap();
        let verification = verify(&evidence, &[6; 32], &s.keypair.public().to_peer_id(), &s.policy, &ALLOW);
        let refused = failed(&verification);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].0, checks::BINDING);
        assert!(refused[0].1.contains("replayed or altered"), "{}", refused[0].1);
        let refused = verification.into_result().unwrap_err();
        assert_eq!(refused.name, checks::BINDING);
    }

    #[test]
    fn evidence_of_another_peer_is_refused() {
        let s = setup();
        let nonce = [5; 32];
        let evidence = s.attester.attest(&nonce).unwrap();
        let other = Keypair::generate_ed25519().public().to_peer_id();
        let refused = failed(&verify(&evidence, &nonce, &other, &s.policy, &ALLOW));
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].0, checks::PEER);
        assert!(refused[0].1.contains(&other.to_string()), "{}", refused[0].1);

        // Swapping in the other peer's key breaks the report data instead.
        let mut swapped = evidence.clone();
        if let Some(binding) = &mut swapped.binding {
            binding.libp2p_public_key = Keypair::generate_ed25519().public().encode_protobuf();
        }
        let peer = s.keypair.public().to_peer_id();
        let names: Vec<_> = failed_names(&verify(&swapped, &nonce, &peer, &s.policy, &ALLOW));
        assert_eq!(names, [checks::BINDING, checks::PEER]);
    }

    fn failed_names(verification: &Verification) -> Vec<&'static str> {
        failed(verification).into_iter().map(|(name, _)| name).collect()
    }

    #[test]
    fn altered_keys_are_refused() {
        let s = setup();
        let nonce = [5; 32];
        let peer = s.keypair.public().to_peer_id();
        for field in ["enclave_signer", "enclave_encryption_key", "provider_config_sha256"] {
            let mut evidence = s.attester.attest(&nonce).unwrap();
            let binding = evidence.binding.as_mut().unwrap();
            let bytes = match field {
                "enclave_signer" => &mut binding.enclave_signer,
                "enclave_encryption_key" => &mut binding.enclave_encryption_key,
                _ => &mut binding.provider_config_sha256,
            };
            bytes[0] ^= 1;
            assert_eq!(
                failed_names(&verify(&evidence, &nonce, &peer, &s.policy, &ALLOW)),
                [checks::BINDING],
                "{field}"
            );
        }
    }

    #[test]
    fn a_measurement_not_in_the_policy_is_refused() {
        let mut s = setup();
        let nonce = [5; 32];
        let evidence = s.attester.attest(&nonce).unwrap();
        let peer = s.keypair.public().to_peer_id();
        s.policy.provider_binaries = [Digest([9; 32])].into();
        let refused = failed(&verify(&evidence, &nonce, &peer, &s.policy, &ALLOW));
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].0, checks::SOFTWARE);
        assert!(refused[0].1.contains("not among the policy's provider_binaries"), "{}", refused[0].1);

        // A pinned configuration must match too.
        s.policy.provider_binaries = [Digest(s.attester.binding().measurement.binary)].into();
        s.policy.provider_configs = [Digest([9; 32])].into();
        let refused = failed(&verify(&evidence, &nonce, &peer, &s.policy, &ALLOW));
        assert!(refused[0].1.contains("provider_configs"), "{refused:?}");
    }

    #[test]
    fn simulated_evidence_needs_the_flag_the_policy_and_the_pinned_root() {
        let mut s = setup();
        let nonce = [5; 32];
        let evidence = s.attester.attest(&nonce).unwrap();
        let peer = s.keypair.public().to_peer_id();
        let strict = Options { allow_simulated: false, ..ALLOW };
        let refused = failed(&verify(&evidence, &nonce, &peer, &s.policy, &strict));
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].0, checks::TEE_KIND);
        assert!(refused[0].1.contains("--allow-simulated-tee"), "{}", refused[0].1);

        s.policy.tee = [TeeKind::Snp].into();
        assert_eq!(failed_names(&verify(&evidence, &nonce, &peer, &s.policy, &ALLOW)), [checks::TEE_KIND]);

        s.policy.tee = [TeeKind::Simulated].into();
        s.policy.simulated = Some(SimulatedPolicy { root: SimulatedRoot::generate().public_hex() });
        let verification = verify(&evidence, &nonce, &peer, &s.policy, &ALLOW);
        assert_eq!(failed_names(&verification), [checks::SIGNATURE]);
        // Checks that need a verified report are skipped, not passed.
        let skipped: Vec<_> =
            verification.checks.iter().filter(|c| matches!(c.outcome, Outcome::Skipped(_))).map(|c| c.name).collect();
        assert_eq!(skipped, [checks::TEE_POLICY, checks::BINDING]);
        assert!(verification.into_result().is_err());
    }
}
