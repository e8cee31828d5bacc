//! Producing evidence as a provider: a report from the TEE the provider runs in, whose report
//! data binds the publisher's nonce and the provider's [`Binding`].

use tpod_wire::pb::{self, evidence::Tee as WireTee};

use crate::{
    binding::Binding, binding::report_data, pccs::TdxCollateral, policy::TeeKind, simulated::SimulatedRoot, snp, tdx,
};

/// Where evidence comes from.
#[derive(Debug, Clone)]
pub enum Tee {
    /// AMD SEV-SNP, through `/dev/sev-guest`.
    Snp,
    /// Intel TDX, through configfs-tsm; the collateral is sent with every quote.
    Tdx {
        /// This platform's collateral (fixed, or kept fresh from a PCCS).
        collateral: TdxCollateral,
    },
    /// No TEE: a development root signs.
    Simulated(Box<SimulatedRoot>),
}

impl Tee {
    /// Its kind.
    pub fn kind(&self) -> TeeKind {
        match self {
            Self::Snp => TeeKind::Snp,
            Self::Tdx { .. } => TeeKind::Tdx,
            Self::Simulated(_) => TeeKind::Simulated,
        }
    }
}

/// The TEE hardware interface this machine offers, if any.
pub fn detect() -> Option<TeeKind> {
    if std::path::Path::new("/dev/sev-guest").exists() {
        Some(TeeKind::Snp)
    } else if std::path::Path::new("/sys/kernel/config/tsm/report").is_dir() {
        Some(TeeKind::Tdx)
    } else {
        None
    }
}

/// Why no evidence could be produced.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The SEV-SNP firmware failed.
    #[error("SEV-SNP: {0}")]
    Snp(#[from] snp::SnpError),
    /// The TDX interface failed.
    #[error("TDX: {0}")]
    Tdx(#[from] tdx::TdxError),
}

/// A provider's source of evidence.
#[derive(Debug, Clone)]
pub struct Attester {
    tee: Tee,
    binding: Binding,
}

impl Attester {
    /// Evidence from `tee`, binding `binding`.
    pub fn new(tee: Tee, binding: Binding) -> Self {
        Self { tee, binding }
    }

    /// What the evidence binds.
    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    /// The kind of TEE.
    pub fn kind(&self) -> TeeKind {
        self.tee.kind()
    }

    /// Fresh evidence for the publisher's `nonce`.
    pub fn attest(&self, nonce: &[u8; 32]) -> Result<pb::Evidence, AttestError> {
        let data = report_data(nonce, &self.binding);
        let tee = match &self.tee {
            Tee::Snp => {
                let evidence = snp::generate(data)?;
                WireTee::Snp(pb::SnpEvidence {
                    report: evidence.report,
                    vcek: evidence.vcek,
                    ask: evidence.ask,
                    ark: evidence.ark,
                })
            }
            Tee::Tdx { collateral } => {
                WireTee::Tdx(pb::TdxEvidence { quote: tdx::generate(data)?, collateral: collateral.current()? })
            }
            Tee::Simulated(root) => WireTee::Simulated(root.sign(&data)),
        };
        Ok(pb::Evidence { binding: Some(self.binding.to_wire()), tee: Some(tee) })
    }
}
