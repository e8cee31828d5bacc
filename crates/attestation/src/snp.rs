//! AMD SEV-SNP evidence: generating it inside a confidential VM and verifying it anywhere.
//!
//! Evidence is the 1184-byte attestation report the AMD Secure Processor signs with the chip's
//! VCEK, together with the VCEK certificate and the AMD CA chain (ASK, ARK) that certify it. The
//! certificates travel with the evidence so a verifier needs no network access: trust comes
//! only from AMD's root keys (ARKs) pinned in this binary through the `sev` crate.
//!
//! Verification is deliberately strict. The `sev` crate parses and checks the signatures; on
//! top of that this module rejects anything a signature does not cover or that the `sev` crate
//! accepts loosely — reserved report bytes, unused bytes of the signature's `r` and `s`, the
//! unsigned outer `signatureAlgorithm` of each certificate, non-canonical DER — so that any
//! single-byte change to the evidence is detected, never silently ignored.

use std::fmt;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sev::Generation;
use sev::certs::snp::{Certificate, Verifiable, builtin};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;

/// Size of an SNP attestation report (SEV-SNP ABI, table "ATTESTATION_REPORT structure").
pub const REPORT_LEN: usize = 1184;

/// Bytes 0x000..0x2A0 of the report are what the VCEK signs.
const SIGNED_LEN: usize = 0x2A0;
const SIG_R: usize = 0x2A0;
const SIG_S: usize = 0x2E8;
const SIG_RESERVED: usize = 0x330;
/// `r` and `s` are little-endian in 72-byte fields; P-384 scalars use only the low 48 bytes.
const SCALAR_LEN: usize = 48;
const SCALAR_FIELD_LEN: usize = 72;

const OFF_VERSION: usize = 0x00;
const OFF_POLICY: usize = 0x08;
const OFF_VMPL: usize = 0x30;
const OFF_SIG_ALGO: usize = 0x34;
const OFF_CURRENT_TCB: usize = 0x38;
const OFF_KEY_INFO: usize = 0x48;
const OFF_REPORT_DATA: usize = 0x50;
const OFF_MEASUREMENT: usize = 0x90;
const OFF_REPORTED_TCB: usize = 0x180;
const OFF_CPUID_FAM: usize = 0x188;
const OFF_CPUID_MOD: usize = 0x189;
const OFF_CHIP_ID: usize = 0x1A0;
const OFF_COMMITTED_TCB: usize = 0x1E0;
const OFF_LAUNCH_TCB: usize = 0x1F0;

/// SIGNATURE_ALGO value for ECDSA P-384 with SHA-384, the only algorithm SNP defines.
const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;
/// Report versions whose layout the `sev` crate (and this module) knows.
const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = 2..=5;
/// GUEST POLICY bit 19: the hypervisor may debug (read and write) the guest's memory.
const POLICY_DEBUG_BIT: u64 = 1 << 19;

/// SEV-SNP evidence: the attestation report and the certificates that verify it, all carried
/// with the evidence so verification needs no network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpEvidence {
    /// The raw 1184-byte attestation report as the firmware returned it.
    pub report: Vec<u8>,
    /// The VCEK certificate (DER) whose key signed the report.
    pub vcek: Vec<u8>,
    /// The ASK certificate (DER) that signed the VCEK certificate.
    pub ask: Vec<u8>,
    /// The ARK certificate (DER), AMD's root; must be one of the roots pinned in this binary.
    pub ark: Vec<u8>,
}

/// The security version numbers of the platform's firmware components (a TCB version).
///
/// Compared field by field, never as a whole: a higher SNP firmware does not make up for an
/// older microcode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpTcb {
    /// SVN of the AMD Secure Processor bootloader.
    pub bootloader: u8,
    /// SVN of the AMD Secure Processor operating system.
    pub tee: u8,
    /// SVN of the SNP firmware.
    pub snp: u8,
    /// Lowest microcode patch level of all the cores.
    pub microcode: u8,
}

impl SnpTcb {
    /// The fields in a fixed order, so comparisons and error messages name each one.
    fn fields(&self) -> [(&'static str, u8); 4] {
        [("bootloader", self.bootloader), ("tee", self.tee), ("snp", self.snp), ("microcode", self.microcode)]
    }
}

impl fmt::Display for SnpTcb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bootloader={} tee={} snp={} microcode={}", self.bootloader, self.tee, self.snp, self.microcode)
    }
}

/// What a publisher's policy requires of SNP evidence beyond a valid signature chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnpPolicy {
    /// Each reported TCB field must be at least the corresponding field here.
    pub minimum_tcb: SnpTcb,
    /// Whether a guest whose launch policy lets the hypervisor debug it is acceptable. A
    /// debuggable guest has no confidentiality, so this is for development only.
    pub allow_debug: bool,
    /// Launch measurements allowed (48 bytes each; hex strings in TOML/JSON); empty = any.
    #[serde(with = "measurement_list")]
    pub measurements: Vec<[u8; 48]>,
    /// The highest VMPL a report may be requested from (default 0, the most privileged level,
    /// which is what the provider asks for; a higher one means less privileged code under a
    /// paravisor asked).
    pub max_vmpl: u32,
    /// Minimum SVN of the firmware's FMC (Turin and later only; earlier parts have no FMC and
    /// pass).
    pub minimum_fmc: u8,
}

/// The AMD EPYC generation whose pinned root key (ARK) certified the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnpProduct {
    /// 3rd generation EPYC.
    Milan,
    /// 4th generation EPYC.
    Genoa,
    /// 5th generation EPYC.
    Turin,
}

impl SnpProduct {
    fn name(self) -> &'static str {
        match self {
            SnpProduct::Milan => "Milan",
            SnpProduct::Genoa => "Genoa",
            SnpProduct::Turin => "Turin",
        }
    }

    /// Turin moved the TCB fields within the 8-byte TCB_VERSION (and added FMC).
    fn turin_tcb_layout(self) -> bool {
        matches!(self, SnpProduct::Turin)
    }
}

impl fmt::Display for SnpProduct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a verified report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpClaims {
    /// The 64 bytes the guest asked to be bound into the report (REPORT_DATA).
    pub report_data: [u8; 64],
    /// The launch measurement of the guest (MEASUREMENT).
    pub measurement: [u8; 48],
    /// The TCB the VCEK was derived from (REPORTED_TCB); matches the VCEK certificate.
    pub reported_tcb: SnpTcb,
    /// Which pinned AMD root signed the chain.
    pub product: SnpProduct,
    /// Whether the guest's launch policy allows the hypervisor to debug it.
    pub debug_allowed: bool,
    /// The chip's identifier (CHIP_ID); all zero if the guest masked it.
    pub chip_id: [u8; 64],
    /// The VMPL the report was requested from.
    pub vmpl: u32,
    /// SVN of the FMC in the reported TCB (Turin and later; `None` before).
    pub fmc: Option<u8>,
}

/// Which certificate of the evidence an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    /// AMD Root Key certificate.
    Ark,
    /// AMD SEV Signing Key certificate.
    Ask,
    /// Versioned Chip Endorsement Key certificate.
    Vcek,
}

impl fmt::Display for CertRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertRole::Ark => "ARK",
            CertRole::Ask => "ASK",
            CertRole::Vcek => "VCEK",
        })
    }
}

/// Why SNP evidence could not be generated, or why it or its claims were rejected.
#[derive(Debug, thiserror::Error)]
pub enum SnpError {
    /// This machine cannot produce SNP evidence; callers may fall back to another TEE.
    #[error("SEV-SNP attestation is unavailable: {0}")]
    Unavailable(String),
    /// The guest device exists but the report request failed.
    #[error("SEV-SNP report request via /dev/sev-guest failed: {0}")]
    Firmware(String),
    /// The host did not supply a certificate the evidence needs.
    #[error("the host supplied no {0} certificate with the extended report (none in its certificate table)")]
    MissingCertificate(CertRole),
    /// A certificate is not a well-formed, canonical DER X.509 certificate of the expected shape.
    #[error("{cert} certificate is malformed: {problem}")]
    Certificate {
        /// The certificate.
        cert: CertRole,
        /// What is wrong, and where.
        problem: String,
    },
    /// The ARK is not byte-for-byte one of AMD's roots pinned in this binary.
    #[error("ARK certificate is not one of AMD's pinned SEV-SNP root certificates (Milan, Genoa, Turin)")]
    UntrustedArk,
    /// The verification time is before the certificate's notBefore.
    #[error("{cert} certificate is not valid before {not_before} (notBefore); verification time is {at}")]
    CertificateNotYetValid {
        /// The certificate.
        cert: CertRole,
        /// Its notBefore, RFC 3339.
        not_before: String,
        /// The verification time, RFC 3339.
        at: String,
    },
    /// The verification time is after the certificate's notAfter.
    #[error("{cert} certificate expired at {not_after} (notAfter); verification time is {at}")]
    CertificateExpired {
        /// The certificate.
        cert: CertRole,
        /// Its notAfter, RFC 3339.
        not_after: String,
        /// The verification time, RFC 3339.
        at: String,
    },
    /// The verification time cannot be compared with certificate times.
    #[error("verification time is before 1970-01-01T00:00:00Z")]
    InvalidTime,
    /// A certificate's signature does not verify with its issuer's key.
    #[error("{cert} certificate's signature does not verify with the {signer} public key: {problem}")]
    CertificateSignature {
        /// The signed certificate.
        cert: CertRole,
        /// The certificate whose key should have signed it.
        signer: CertRole,
        /// The underlying failure.
        problem: String,
    },
    /// The attestation report is malformed or carries values this module does not accept.
    #[error("attestation report field {field} at offset {offset:#05x}: {problem}")]
    Report {
        /// The report field, as the SEV-SNP ABI names it.
        field: &'static str,
        /// Byte offset of the offending byte (or of the field) in the report.
        offset: usize,
        /// What is wrong.
        problem: String,
    },
    /// The report's signature (offset 0x2a0) does not verify with the VCEK over bytes 0x000..0x2a0.
    #[error("attestation report signature (offset 0x2a0) does not verify with the VCEK public key: {0}")]
    ReportSignature(String),
    /// An AMD extension of the VCEK certificate is missing, malformed or inconsistent.
    #[error("VCEK certificate extension {extension}: {problem}")]
    VcekExtension {
        /// The extension's name and OID.
        extension: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The report's REPORTED_TCB does not match the TCB the VCEK was issued for.
    #[error(
        "REPORTED_TCB {field} is {report} in the attestation report (offset {offset:#05x}) but {vcek} in the VCEK certificate"
    )]
    TcbMismatch {
        /// The TCB field.
        field: &'static str,
        /// Byte offset of the field in the report.
        offset: usize,
        /// The value in the report.
        report: u8,
        /// The value in the VCEK certificate.
        vcek: u8,
    },
    /// The report's CHIP_ID is not the chip the VCEK was issued to.
    #[error("CHIP_ID (report offset 0x1a0) is {report} but the VCEK certificate's hwID is {vcek}")]
    ChipIdMismatch {
        /// CHIP_ID from the report, hex.
        report: String,
        /// hwID from the VCEK, hex.
        vcek: String,
    },
    /// A reported TCB field is below the policy's minimum.
    #[error("reported TCB {field} is {reported}, below the policy minimum {minimum}")]
    TcbBelowMinimum {
        /// The TCB field.
        field: &'static str,
        /// The value in the report.
        reported: u8,
        /// The policy's minimum.
        minimum: u8,
    },
    /// The report was requested from a less privileged VMPL than the policy allows.
    #[error("report requested from VMPL {vmpl}, above the policy's max_vmpl {max}")]
    VmplNotAllowed {
        /// The report's VMPL.
        vmpl: u32,
        /// The policy's highest VMPL.
        max: u32,
    },
    /// The guest is debuggable and the policy does not allow that.
    #[error("guest policy allows debugging (report POLICY bit 19) but the publisher policy forbids debuggable guests")]
    DebugNotAllowed,
    /// The launch measurement is not one the policy lists.
    #[error("launch measurement {measurement} is not one of the {allowed} measurements the policy allows")]
    MeasurementNotAllowed {
        /// The report's measurement, hex.
        measurement: String,
        /// How many measurements the policy lists.
        allowed: usize,
    },
}

/// Verifies the evidence's signatures at time `at` and returns what the report says.
///
/// Checks, in an order that rejects cheap-to-detect problems first:
/// - the ARK is byte-for-byte one of AMD's roots pinned in the `sev` crate (which fixes the
///   product), and each certificate is canonical DER with its outer `signatureAlgorithm` equal
///   to the signed one and no unused bits in its signature;
/// - every certificate is valid at `at` (notBefore ≤ `at` ≤ notAfter);
/// - the report is well-formed: supported version, ECDSA P-384/SHA-384, VCEK-signed, reserved
///   bytes and the unused bytes of `r`/`s` zero, CPU generation consistent with the ARK;
/// - the report's REPORTED_TCB equals the VCEK's TCB extensions, its CHIP_ID the VCEK's hwID;
/// - the VCEK signs the report, the ASK signs the VCEK, the ARK signs the ASK and itself.
pub fn verify(evidence: &SnpEvidence, at: SystemTime) -> Result<SnpClaims, SnpError> {
    let product = pinned_product(&evidence.ark)?;
    let ark = Cert::parse(CertRole::Ark, &evidence.ark)?;
    let ask = Cert::parse(CertRole::Ask, &evidence.ask)?;
    let vcek = Cert::parse(CertRole::Vcek, &evidence.vcek)?;

    let at = UnixTime::from_system_time(at)?;
    for cert in [&ark, &ask, &vcek] {
        cert.check_validity(at)?;
    }

    let report = parse_report(&evidence.report, product)?;
    check_vcek_binding(&evidence.report, &report, &vcek, product)?;

    // The report signature first: it is the one check every altered report byte reaches, and
    // the cheapest of the signature checks.
    (&vcek.sev, &report).verify().map_err(|e| SnpError::ReportSignature(e.to_string()))?;
    verify_signed_by(&vcek, &ask)?;
    verify_signed_by(&ask, &ark)?;
    verify_signed_by(&ark, &ark)?;

    let mut report_data = [0u8; 64];
    report_data.copy_from_slice(&evidence.report[OFF_REPORT_DATA..OFF_REPORT_DATA + 64]);
    let mut measurement = [0u8; 48];
    measurement.copy_from_slice(&evidence.report[OFF_MEASUREMENT..OFF_MEASUREMENT + 48]);
    let mut chip_id = [0u8; 64];
    chip_id.copy_from_slice(&evidence.report[OFF_CHIP_ID..OFF_CHIP_ID + 64]);
    let reported = tcb_at(&evidence.report, OFF_REPORTED_TCB, product);
    let vmpl = &evidence.report[OFF_VMPL..OFF_VMPL + 4];
    Ok(SnpClaims {
        report_data,
        measurement,
        reported_tcb: reported.tcb,
        product,
        debug_allowed: read_u64(&evidence.report, OFF_POLICY) & POLICY_DEBUG_BIT != 0,
        chip_id,
        vmpl: u32::from_le_bytes([vmpl[0], vmpl[1], vmpl[2], vmpl[3]]),
        fmc: reported.fmc,
    })
}

/// Checks verified claims against a policy: each reported TCB field (and, on Turin, the FMC) at
/// least the minimum, the VMPL at most the maximum, no debuggable guest unless allowed, and the measurement listed when the list is non-empty.
pub fn check_policy(claims: &SnpClaims, policy: &SnpPolicy) -> Result<(), SnpError> {
    for ((field, reported), (_, minimum)) in claims.reported_tcb.fields().into_iter().zip(policy.minimum_tcb.fields()) {
        if reported < minimum {
            return Err(SnpError::TcbBelowMinimum { field, reported, minimum });
        }
    }
    if let Some(fmc) = claims.fmc
        && fmc < policy.minimum_fmc
    {
        return Err(SnpError::TcbBelowMinimum { field: "fmc", reported: fmc, minimum: policy.minimum_fmc });
    }
    if claims.vmpl > policy.max_vmpl {
        return Err(SnpError::VmplNotAllowed { vmpl: claims.vmpl, max: policy.max_vmpl });
    }
    if claims.debug_allowed && !policy.allow_debug {
        return Err(SnpError::DebugNotAllowed);
    }
    if !policy.measurements.is_empty() && !policy.measurements.contains(&claims.measurement) {
        return Err(SnpError::MeasurementNotAllowed {
            measurement: to_hex(&claims.measurement),
            allowed: policy.measurements.len(),
        });
    }
    Ok(())
}

/// Asks the SNP firmware (`/dev/sev-guest`) for an extended report whose REPORT_DATA is
/// `report_data`, with the certificate table (VCEK, ASK, ARK) the host supplies.
///
/// Returns [`SnpError::Unavailable`] only when `/dev/sev-guest` does not exist, so callers can
/// fall back; a device that exists but fails is an error, not a reason to downgrade.
#[cfg(target_os = "linux")]
pub fn generate(report_data: [u8; 64]) -> Result<SnpEvidence, SnpError> {
    use sev::firmware::guest::Firmware;
    use sev::firmware::host::CertType;

    let mut firmware = match Firmware::open() {
        Ok(firmware) => firmware,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SnpError::Unavailable(
                "/dev/sev-guest does not exist: not an SEV-SNP guest, or the sev-guest driver is not loaded".into(),
            ));
        }
        Err(e) => return Err(SnpError::Firmware(format!("cannot open /dev/sev-guest: {e}"))),
    };
    // VMPL 0: the report then vouches for the most privileged level of the guest.
    let (report, table) = firmware
        .get_ext_report(None, Some(report_data), Some(0))
        .map_err(|e| SnpError::Firmware(format!("SNP_GET_EXT_REPORT: {e}")))?;
    let table = table.ok_or(SnpError::MissingCertificate(CertRole::Vcek))?;

    let (mut vcek, mut ask, mut ark) = (None, None, None);
    for entry in table {
        let (slot, role) = match entry.cert_type {
            CertType::VCEK => (&mut vcek, CertRole::Vcek),
            CertType::ASK => (&mut ask, CertRole::Ask),
            CertType::ARK => (&mut ark, CertRole::Ark),
            CertType::VLEK => {
                return Err(SnpError::Firmware(
                    "the host supplied a VLEK; only VCEK-signed reports are supported".into(),
                ));
            }
            _ => continue,
        };
        if slot.replace(entry.data).is_some() {
            return Err(SnpError::Firmware(format!("the host's certificate table lists more than one {role}")));
        }
    }
    Ok(SnpEvidence {
        report,
        vcek: vcek.ok_or(SnpError::MissingCertificate(CertRole::Vcek))?,
        ask: ask.ok_or(SnpError::MissingCertificate(CertRole::Ask))?,
        ark: ark.ok_or(SnpError::MissingCertificate(CertRole::Ark))?,
    })
}

/// SEV-SNP guests exist only on Linux here; elsewhere there is nothing to ask.
#[cfg(not(target_os = "linux"))]
pub fn generate(_report_data: [u8; 64]) -> Result<SnpEvidence, SnpError> {
    Err(SnpError::Unavailable("SEV-SNP guest support requires Linux (/dev/sev-guest)".into()))
}

// ---------------------------------------------------------------------------------------------
// Root pinning

/// AMD's ARKs as DER, parsed once from the PEM the `sev` crate embeds.
fn pinned_roots() -> &'static [(SnpProduct, Vec<u8>)] {
    static ROOTS: OnceLock<Vec<(SnpProduct, Vec<u8>)>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        [
            (SnpProduct::Milan, builtin::milan::ark()),
            (SnpProduct::Genoa, builtin::genoa::ark()),
            (SnpProduct::Turin, builtin::turin::ark()),
        ]
        .into_iter()
        // A root the crate cannot parse is left out: the failure mode is to trust less.
        .filter_map(|(product, cert)| Some((product, cert.ok()?.to_der().ok()?)))
        .collect()
    })
}

/// Exact DER comparison: no other encoding or key of "the same" root is accepted.
fn pinned_product(ark_der: &[u8]) -> Result<SnpProduct, SnpError> {
    pinned_roots().iter().find(|(_, der)| der.as_slice() == ark_der).map(|(p, _)| *p).ok_or(SnpError::UntrustedArk)
}

// ---------------------------------------------------------------------------------------------
// Certificates

/// A certificate parsed by the `sev` crate, plus the fields it does not expose, read from the
/// same (canonical) DER.
struct Cert<'a> {
    role: CertRole,
    sev: Certificate,
    not_before: UnixTime,
    not_after: UnixTime,
    extensions: Vec<Extension<'a>>,
}

/// An extension as (OID content bytes, extnValue content bytes).
type Extension<'a> = (&'a [u8], &'a [u8]);

impl<'a> Cert<'a> {
    fn parse(role: CertRole, der: &'a [u8]) -> Result<Self, SnpError> {
        let malformed = |problem: String| SnpError::Certificate { cert: role, problem };
        let sev = Certificate::from_der(der).map_err(|e| malformed(format!("not a DER X.509 certificate: {e}")))?;
        // The `sev` crate checks the signature over its re-encoding of the TBS, not over these
        // bytes; only if re-encoding reproduces the input does the signature cover all of it.
        let reencoded = sev.to_der().map_err(|e| malformed(format!("cannot be re-encoded: {e}")))?;
        if reencoded != der {
            let at = reencoded.iter().zip(der).position(|(a, b)| a != b).unwrap_or(reencoded.len().min(der.len()));
            return Err(malformed(format!("not canonical DER: re-encoding differs at byte {at}")));
        }

        let mut input = der;
        let cert = next_tlv(&mut input, TAG_SEQUENCE, "Certificate").map_err(&malformed)?;
        ensure_empty(input, "Certificate").map_err(&malformed)?;
        let mut body = cert.content;
        let tbs = next_tlv(&mut body, TAG_SEQUENCE, "tbsCertificate").map_err(&malformed)?;
        let outer_alg = next_tlv(&mut body, TAG_SEQUENCE, "signatureAlgorithm").map_err(&malformed)?;
        let signature = next_tlv(&mut body, TAG_BIT_STRING, "signatureValue").map_err(&malformed)?;
        ensure_empty(body, "Certificate").map_err(&malformed)?;
        // The RSA signature is over whole bytes; the `sev` crate ignores this byte.
        if signature.content.first() != Some(&0) {
            let offset = der.len() - signature.content.len();
            return Err(malformed(format!("signatureValue BIT STRING (byte {offset}) has unused bits")));
        }

        let mut fields = tbs.content;
        if fields.first() == Some(&TAG_VERSION) {
            next_tlv(&mut fields, TAG_VERSION, "version").map_err(&malformed)?;
        }
        next_tlv(&mut fields, TAG_INTEGER, "serialNumber").map_err(&malformed)?;
        let inner_alg = next_tlv(&mut fields, TAG_SEQUENCE, "signature").map_err(&malformed)?;
        // The outer algorithm is not signed and the `sev` crate only looks at its OID; RFC 5280
        // requires it to equal the signed one, which also pins the PSS parameters.
        if outer_alg.raw != inner_alg.raw {
            return Err(malformed("signatureAlgorithm differs from the signed tbsCertificate.signature".into()));
        }
        next_tlv(&mut fields, TAG_SEQUENCE, "issuer").map_err(&malformed)?;
        let validity = next_tlv(&mut fields, TAG_SEQUENCE, "validity").map_err(&malformed)?;
        next_tlv(&mut fields, TAG_SEQUENCE, "subject").map_err(&malformed)?;
        next_tlv(&mut fields, TAG_SEQUENCE, "subjectPublicKeyInfo").map_err(&malformed)?;
        let mut extensions = Vec::new();
        while !fields.is_empty() {
            let tag = fields.first().copied().unwrap_or_default();
            let field = next_tlv(&mut fields, tag, "tbsCertificate field").map_err(&malformed)?;
            if tag == TAG_EXTENSIONS {
                extensions = parse_extensions(field.content).map_err(&malformed)?;
            }
        }

        let mut times = validity.content;
        let not_before = parse_time(&mut times, "notBefore").map_err(&malformed)?;
        let not_after = parse_time(&mut times, "notAfter").map_err(&malformed)?;
        ensure_empty(times, "validity").map_err(&malformed)?;

        Ok(Cert { role, sev, not_before, not_after, extensions })
    }

    fn check_validity(&self, at: UnixTime) -> Result<(), SnpError> {
        if at < self.not_before {
            return Err(SnpError::CertificateNotYetValid {
                cert: self.role,
                not_before: self.not_before.to_string(),
                at: at.to_string(),
            });
        }
        if at > self.not_after {
            return Err(SnpError::CertificateExpired {
                cert: self.role,
                not_after: self.not_after.to_string(),
                at: at.to_string(),
            });
        }
        Ok(())
    }

    /// The content of the extension's OCTET STRING; duplicates are an error (RFC 5280).
    fn extension(&self, oid: &[u8]) -> Result<Option<&'a [u8]>, String> {
        let mut found = self.extensions.iter().filter(|(o, _)| *o == oid).map(|(_, v)| *v);
        let first = found.next();
        if found.next().is_some() {
            return Err("appears more than once".into());
        }
        Ok(first)
    }
}

fn verify_signed_by(cert: &Cert<'_>, signer: &Cert<'_>) -> Result<(), SnpError> {
    (&signer.sev, &cert.sev).verify().map_err(|e| SnpError::CertificateSignature {
        cert: cert.role,
        signer: signer.role,
        problem: e.to_string(),
    })
}

fn parse_extensions(content: &[u8]) -> Result<Vec<Extension<'_>>, String> {
    let mut outer = content;
    let list = next_tlv(&mut outer, TAG_SEQUENCE, "extensions")?;
    ensure_empty(outer, "extensions")?;
    let mut items = list.content;
    let mut extensions = Vec::new();
    while !items.is_empty() {
        let ext = next_tlv(&mut items, TAG_SEQUENCE, "Extension")?;
        let mut parts = ext.content;
        let oid = next_tlv(&mut parts, TAG_OID, "extnID")?;
        if parts.first() == Some(&TAG_BOOLEAN) {
            next_tlv(&mut parts, TAG_BOOLEAN, "critical")?;
        }
        let value = next_tlv(&mut parts, TAG_OCTET_STRING, "extnValue")?;
        ensure_empty(parts, "Extension")?;
        extensions.push((oid.content, value.content));
    }
    Ok(extensions)
}

// ---------------------------------------------------------------------------------------------
// The VCEK's AMD extensions (VCEK certificate and KDS interface specification, AMD 57230)

/// DER content of OID 1.3.6.1.4.1.3704.1 (AMD SEV); the extensions below hang off it.
const AMD_OID_PREFIX: [u8; 8] = [0x2B, 0x06, 0x01, 0x04, 0x01, 0x9C, 0x78, 0x01];

const fn amd_oid<const N: usize, const M: usize>(suffix: [u8; N]) -> [u8; M] {
    let mut oid = [0u8; M];
    let mut i = 0;
    while i < AMD_OID_PREFIX.len() {
        oid[i] = AMD_OID_PREFIX[i];
        i += 1;
    }
    let mut j = 0;
    while j < N {
        oid[i + j] = suffix[j];
        j += 1;
    }
    oid
}

const OID_PRODUCT_NAME: [u8; 9] = amd_oid([0x02]);
const OID_HW_ID: [u8; 9] = amd_oid([0x04]);
const OID_BL_SPL: [u8; 10] = amd_oid([0x03, 0x01]);
const OID_TEE_SPL: [u8; 10] = amd_oid([0x03, 0x02]);
const OID_SNP_SPL: [u8; 10] = amd_oid([0x03, 0x03]);
const OID_UCODE_SPL: [u8; 10] = amd_oid([0x03, 0x08]);
const OID_FMC_SPL: [u8; 10] = amd_oid([0x03, 0x09]);

/// Ties the report to the VCEK: the VCEK is derived from the chip's secret and the TCB, so the
/// certificate's TCB and hwID must be the report's, and its product the ARK's.
fn check_vcek_binding(
    raw: &[u8],
    report: &AttestationReport,
    vcek: &Cert<'_>,
    product: SnpProduct,
) -> Result<(), SnpError> {
    let ext_error = |extension: &'static str, problem: String| SnpError::VcekExtension { extension, problem };

    let name_ext = "productName (1.3.6.1.4.1.3704.1.2)";
    let name = vcek
        .extension(&OID_PRODUCT_NAME)
        .map_err(|p| ext_error(name_ext, p))?
        .ok_or_else(|| ext_error(name_ext, "missing".into()))?;
    let name = ia5_string(name).map_err(|p| ext_error(name_ext, p))?;
    let expected = product.name();
    if !(name == expected || name.strip_prefix(expected).is_some_and(|rest| rest.starts_with('-'))) {
        return Err(ext_error(name_ext, format!("is {name:?} but the ARK is AMD's {expected} root")));
    }

    let reported = tcb_at(raw, OFF_REPORTED_TCB, product);
    let mut expected_fields = vec![
        ("bootloader", "blSPL (1.3.6.1.4.1.3704.1.3.1)", &OID_BL_SPL[..], reported.tcb.bootloader),
        ("tee", "teeSPL (1.3.6.1.4.1.3704.1.3.2)", &OID_TEE_SPL[..], reported.tcb.tee),
        ("snp", "snpSPL (1.3.6.1.4.1.3704.1.3.3)", &OID_SNP_SPL[..], reported.tcb.snp),
        ("microcode", "ucodeSPL (1.3.6.1.4.1.3704.1.3.8)", &OID_UCODE_SPL[..], reported.tcb.microcode),
    ];
    if let Some(fmc) = reported.fmc {
        expected_fields.push(("fmc", "fmcSPL (1.3.6.1.4.1.3704.1.3.9)", &OID_FMC_SPL[..], fmc));
    }
    for (field, extension, oid, in_report) in expected_fields {
        let value = vcek
            .extension(oid)
            .map_err(|p| ext_error(extension, p))?
            .ok_or_else(|| ext_error(extension, "missing".into()))?;
        let in_vcek = small_integer(value).map_err(|p| ext_error(extension, p))?;
        if in_vcek != in_report {
            return Err(SnpError::TcbMismatch {
                field,
                offset: OFF_REPORTED_TCB + reported.offset_of(field),
                report: in_report,
                vcek: in_vcek,
            });
        }
    }
    // `sev` decodes the TCB with a layout it guesses from the report itself; make sure that
    // guess agrees with the layout the pinned root implies.
    let parsed = report.reported_tcb;
    if (parsed.bootloader, parsed.tee, parsed.snp, parsed.microcode)
        != (reported.tcb.bootloader, reported.tcb.tee, reported.tcb.snp, reported.tcb.microcode)
    {
        return Err(SnpError::Report {
            field: "REPORTED_TCB",
            offset: OFF_REPORTED_TCB,
            problem: format!("decodes differently under the {product} layout"),
        });
    }

    let hw_ext = "hwID (1.3.6.1.4.1.3704.1.4)";
    let hw_id = vcek
        .extension(&OID_HW_ID)
        .map_err(|p| ext_error(hw_ext, p))?
        .ok_or_else(|| ext_error(hw_ext, "missing".into()))?;
    let chip_id = &raw[OFF_CHIP_ID..OFF_CHIP_ID + 64];
    // A guest may mask CHIP_ID (all zero); then there is nothing to compare.
    if chip_id.iter().any(|&b| b != 0) {
        let hw_len = if product.turin_tcb_layout() { 8 } else { 64 };
        let hw_id = raw_or_wrapped_octets(hw_id, hw_len)
            .ok_or_else(|| ext_error(hw_ext, format!("is not {hw_len} bytes (raw or as an OCTET STRING)")))?;
        if hw_id != &chip_id[..hw_len] || chip_id[hw_len..].iter().any(|&b| b != 0) {
            return Err(SnpError::ChipIdMismatch { report: to_hex(chip_id), vcek: to_hex(hw_id) });
        }
    }
    Ok(())
}

/// AMD's KDS issues hwID as the raw bytes; other issuers wrap them in an OCTET STRING.
fn raw_or_wrapped_octets(value: &[u8], len: usize) -> Option<&[u8]> {
    if value.len() == len {
        return Some(value);
    }
    let mut input = value;
    let inner = next_tlv(&mut input, TAG_OCTET_STRING, "hwID").ok()?;
    (input.is_empty() && inner.content.len() == len).then_some(inner.content)
}

/// A DER INTEGER in 0..=255, minimally encoded (SPL extensions).
fn small_integer(value: &[u8]) -> Result<u8, String> {
    let mut input = value;
    let int = next_tlv(&mut input, TAG_INTEGER, "INTEGER")?;
    ensure_empty(input, "INTEGER")?;
    match *int.content {
        [v] if v < 0x80 => Ok(v),
        [0, v] if v >= 0x80 => Ok(v),
        _ => Err(format!("is not a DER INTEGER in 0..=255 (content {})", to_hex(int.content))),
    }
}

fn ia5_string(value: &[u8]) -> Result<&str, String> {
    let mut input = value;
    let s = next_tlv(&mut input, TAG_IA5_STRING, "IA5String")?;
    ensure_empty(input, "IA5String")?;
    std::str::from_utf8(s.content).ok().filter(|s| s.is_ascii()).ok_or_else(|| "is not an ASCII IA5String".to_string())
}

// ---------------------------------------------------------------------------------------------
// The report

/// Checks the report's layout and every byte the signature does not protect or `sev` ignores.
fn parse_report(raw: &[u8], product: SnpProduct) -> Result<AttestationReport, SnpError> {
    let bad = |field: &'static str, offset: usize, problem: String| SnpError::Report { field, offset, problem };
    if raw.len() != REPORT_LEN {
        return Err(bad("(whole report)", 0, format!("is {} bytes, expected {REPORT_LEN}", raw.len())));
    }

    let version = read_u32(raw, OFF_VERSION);
    if !SUPPORTED_VERSIONS.contains(&version) {
        return Err(bad("VERSION", OFF_VERSION, format!("is {version}; supported versions are 2 to 5")));
    }
    let sig_algo = read_u32(raw, OFF_SIG_ALGO);
    if sig_algo != SIG_ALGO_ECDSA_P384_SHA384 {
        return Err(bad(
            "SIGNATURE_ALGO",
            OFF_SIG_ALGO,
            format!("is {sig_algo}, expected 1 (ECDSA P-384 with SHA-384)"),
        ));
    }
    // Bits 4:2 select the signing key: 0 = VCEK. A VLEK-signed report would need another chain.
    let key_info = read_u32(raw, OFF_KEY_INFO);
    if (key_info >> 2) & 0b111 != 0 {
        return Err(bad(
            "KEY_INFO.SIGNING_KEY",
            OFF_KEY_INFO,
            format!("is {}, expected 0 (VCEK)", (key_info >> 2) & 7),
        ));
    }
    if key_info >> 5 != 0 {
        return Err(bad("KEY_INFO", OFF_KEY_INFO, format!("has reserved bits 31:5 set ({key_info:#x})")));
    }

    for (field, range) in reserved_ranges(version, product) {
        if let Some(i) = raw[range.clone()].iter().position(|&b| b != 0) {
            return Err(bad(field, range.start + i, "must be zero".into()));
        }
    }
    check_generation(raw, version, product)?;

    let report = AttestationReport::from_bytes(raw)
        .map_err(|e| bad("(whole report)", 0, format!("rejected by the SNP report parser: {e}")))?;
    // The `sev` crate verifies the signature over its own re-encoding of the report, and its
    // decoder skips some bytes; only if the re-encoding is the input is the signature about
    // these exact bytes.
    let reencoded = report.to_bytes().map_err(|e| bad("(whole report)", 0, format!("cannot be re-encoded: {e}")))?;
    if let Some(i) = reencoded.iter().zip(raw).position(|(a, b)| a != b) {
        return Err(bad(field_name(i), i, "does not survive decoding and re-encoding".into()));
    }
    Ok(report)
}

/// Byte ranges the SEV-SNP ABI reserves (must be zero) for this report version and product.
fn reserved_ranges(version: u32, product: SnpProduct) -> Vec<(&'static str, std::ops::Range<usize>)> {
    let mut ranges = vec![("reserved (after KEY_INFO)", 0x4C..0x50)];
    ranges.push(if version >= 3 {
        ("reserved (after CPUID_STEP)", 0x18B..0x1A0)
    } else {
        ("reserved (after REPORTED_TCB)", 0x188..0x1A0)
    });
    ranges.push(("reserved (after CURRENT_VERSION)", 0x1EB..0x1EC));
    ranges.push(("reserved (after COMMITTED_VERSION)", 0x1EF..0x1F0));
    ranges.push(if version >= 5 {
        ("reserved (after CURRENT_MIT_VECTOR)", 0x208..SIGNED_LEN)
    } else {
        ("reserved (after LAUNCH_TCB)", 0x1F8..SIGNED_LEN)
    });
    let tcb_reserved = if product.turin_tcb_layout() { 4..7 } else { 2..6 };
    for (field, offset) in [
        ("CURRENT_TCB (reserved bytes)", OFF_CURRENT_TCB),
        ("REPORTED_TCB (reserved bytes)", OFF_REPORTED_TCB),
        ("COMMITTED_TCB (reserved bytes)", OFF_COMMITTED_TCB),
        ("LAUNCH_TCB (reserved bytes)", OFF_LAUNCH_TCB),
    ] {
        ranges.push((field, offset + tcb_reserved.start..offset + tcb_reserved.end));
    }
    // The verifier reads only the low 48 bytes of r and s; anything above would be ignored.
    ranges.push(("SIGNATURE.R (bytes above the 48-byte scalar)", SIG_R + SCALAR_LEN..SIG_R + SCALAR_FIELD_LEN));
    ranges.push(("SIGNATURE.S (bytes above the 48-byte scalar)", SIG_S + SCALAR_LEN..SIG_S + SCALAR_FIELD_LEN));
    ranges.push(("SIGNATURE (reserved tail)", SIG_RESERVED..REPORT_LEN));
    ranges
}

/// The report's CPU generation must be the one whose root signed the chain: it decides the
/// TCB layout, and a report claiming another generation is inconsistent evidence.
fn check_generation(raw: &[u8], version: u32, product: SnpProduct) -> Result<(), SnpError> {
    let bad = |field, offset, problem| SnpError::Report { field, offset, problem };
    if version >= 3 {
        let (family, model) = (raw[OFF_CPUID_FAM], raw[OFF_CPUID_MOD]);
        let generation = Generation::identify_cpu(family, model).map_err(|e| {
            bad("CPUID_FAM_ID/CPUID_MOD_ID", OFF_CPUID_FAM, format!("family {family:#x} model {model:#x}: {e}"))
        })?;
        let matches = matches!(
            (generation, product),
            (Generation::Milan, SnpProduct::Milan)
                | (Generation::Genoa, SnpProduct::Genoa)
                | (Generation::Turin, SnpProduct::Turin)
        );
        if !matches {
            return Err(bad(
                "CPUID_FAM_ID/CPUID_MOD_ID",
                OFF_CPUID_FAM,
                format!(
                    "family {family:#x} model {model:#x} is not a {product} CPU, but the ARK is the {product} root"
                ),
            ));
        }
    } else {
        // Version 2 has no CPUID fields; the `sev` crate tells Turin by its 8-byte CHIP_ID.
        let chip_id = &raw[OFF_CHIP_ID..OFF_CHIP_ID + 64];
        let turin_like = chip_id[8..].iter().all(|&b| b == 0) && chip_id.iter().any(|&b| b != 0);
        if turin_like != product.turin_tcb_layout() {
            return Err(bad(
                "CHIP_ID",
                OFF_CHIP_ID,
                format!("its shape does not match a {product} chip (version 2 report, ARK is the {product} root)"),
            ));
        }
    }
    Ok(())
}

/// A TCB_VERSION read with the product's layout.
struct ReportTcb {
    tcb: SnpTcb,
    fmc: Option<u8>,
    turin: bool,
}

impl ReportTcb {
    fn offset_of(&self, field: &str) -> usize {
        match (field, self.turin) {
            ("fmc", _) => 0,
            ("bootloader", false) => 0,
            ("bootloader", true) => 1,
            ("tee", false) => 1,
            ("tee", true) => 2,
            ("snp", false) => 6,
            ("snp", true) => 3,
            _ => 7,
        }
    }
}

fn tcb_at(raw: &[u8], offset: usize, product: SnpProduct) -> ReportTcb {
    let b = &raw[offset..offset + 8];
    if product.turin_tcb_layout() {
        ReportTcb {
            tcb: SnpTcb { bootloader: b[1], tee: b[2], snp: b[3], microcode: b[7] },
            fmc: Some(b[0]),
            turin: true,
        }
    } else {
        ReportTcb { tcb: SnpTcb { bootloader: b[0], tee: b[1], snp: b[6], microcode: b[7] }, fmc: None, turin: false }
    }
}

/// The ABI name of the field containing byte `offset`, for error messages.
fn field_name(offset: usize) -> &'static str {
    const FIELDS: &[(usize, &str)] = &[
        (0x00, "VERSION"),
        (0x04, "GUEST_SVN"),
        (0x08, "POLICY"),
        (0x10, "FAMILY_ID"),
        (0x20, "IMAGE_ID"),
        (0x30, "VMPL"),
        (0x34, "SIGNATURE_ALGO"),
        (0x38, "CURRENT_TCB"),
        (0x40, "PLATFORM_INFO"),
        (0x48, "KEY_INFO"),
        (0x4C, "reserved"),
        (0x50, "REPORT_DATA"),
        (0x90, "MEASUREMENT"),
        (0xC0, "HOST_DATA"),
        (0xE0, "ID_KEY_DIGEST"),
        (0x110, "AUTHOR_KEY_DIGEST"),
        (0x140, "REPORT_ID"),
        (0x160, "REPORT_ID_MA"),
        (0x180, "REPORTED_TCB"),
        (0x188, "CPUID / reserved"),
        (0x1A0, "CHIP_ID"),
        (0x1E0, "COMMITTED_TCB"),
        (0x1E8, "CURRENT_VERSION"),
        (0x1EC, "COMMITTED_VERSION"),
        (0x1F0, "LAUNCH_TCB"),
        (0x1F8, "LAUNCH_MIT_VECTOR / reserved"),
        (0x2A0, "SIGNATURE.R"),
        (0x2E8, "SIGNATURE.S"),
        (0x330, "SIGNATURE (reserved tail)"),
    ];
    FIELDS.iter().rev().find(|(start, _)| *start <= offset).map_or("(unknown)", |(_, name)| name)
}

fn read_u32(raw: &[u8], offset: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&raw[offset..offset + 4]);
    u32::from_le_bytes(b)
}

fn read_u64(raw: &[u8], offset: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&raw[offset..offset + 8]);
    u64::from_le_bytes(b)
}

// ---------------------------------------------------------------------------------------------
// Minimal DER reading. x509-cert is not reachable through `sev`'s public API, and only a few
// fields are needed (validity, extensions, the raw algorithm identifiers); the input has
// already been accepted by x509-cert and proven canonical, so this only has to locate fields
// without panicking.

const TAG_BOOLEAN: u8 = 0x01;
const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_IA5_STRING: u8 = 0x16;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_VERSION: u8 = 0xA0;
const TAG_EXTENSIONS: u8 = 0xA3;

struct Tlv<'a> {
    /// The whole element: tag, length and content.
    raw: &'a [u8],
    content: &'a [u8],
}

/// Reads one element with tag `tag` from the front of `input`.
fn next_tlv<'a>(input: &mut &'a [u8], tag: u8, what: &str) -> Result<Tlv<'a>, String> {
    let buf: &'a [u8] = input;
    let truncated = || format!("{what} is truncated");
    let (&found, rest) = buf.split_first().ok_or_else(truncated)?;
    if found != tag {
        return Err(format!("expected {what} (tag {tag:#04x}), found tag {found:#04x}"));
    }
    let (&first, rest) = rest.split_first().ok_or_else(truncated)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return Err(format!("{what} has an unsupported length encoding"));
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        if rest[0] == 0 || len < 0x80 {
            return Err(format!("{what} has a non-minimal length"));
        }
        (len, 2 + n)
    };
    let total = header + len;
    if buf.len() < total {
        return Err(truncated());
    }
    *input = &buf[total..];
    Ok(Tlv { raw: &buf[..total], content: &buf[header..total] })
}

fn ensure_empty(rest: &[u8], what: &str) -> Result<(), String> {
    if rest.is_empty() { Ok(()) } else { Err(format!("{} unexpected bytes after {what}", rest.len())) }
}

/// A point in time, in whole seconds plus nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct UnixTime {
    secs: i64,
    nanos: u32,
}

impl UnixTime {
    fn from_system_time(at: SystemTime) -> Result<Self, SnpError> {
        let since = at.duration_since(UNIX_EPOCH).map_err(|_| SnpError::InvalidTime)?;
        let secs = i64::try_from(since.as_secs()).map_err(|_| SnpError::InvalidTime)?;
        Ok(UnixTime { secs, nanos: since.subsec_nanos() })
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.secs.div_euclid(86_400);
        let rem = self.secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(f, "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
    }
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), as RFC 5280 restricts them.
fn parse_time(input: &mut &[u8], what: &str) -> Result<UnixTime, String> {
    let tag = input.first().copied().unwrap_or_default();
    let tlv = match tag {
        TAG_UTC_TIME | TAG_GENERALIZED_TIME => next_tlv(input, tag, what)?,
        _ => return Err(format!("{what} is not a UTCTime or GeneralizedTime")),
    };
    let text = tlv.content;
    let bad = || format!("{what} is not a valid RFC 5280 time ({})", String::from_utf8_lossy(text));
    let (year_digits, expected_len) = if tag == TAG_UTC_TIME { (2, 13) } else { (4, 15) };
    if text.len() != expected_len || text.last() != Some(&b'Z') {
        return Err(bad());
    }
    let digits = &text[..expected_len - 1];
    if !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| digits[range].iter().fold(0i64, |acc, &d| acc * 10 + i64::from(d - b'0'));
    let mut year = num(0..year_digits);
    if tag == TAG_UTC_TIME {
        year += if year >= 50 { 1900 } else { 2000 };
    }
    let o = year_digits;
    let (month, day, hour, minute, second) =
        (num(o..o + 2), num(o + 2..o + 4), num(o + 4..o + 6), num(o + 6..o + 8), num(o + 8..o + 10));
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(bad());
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    Ok(UnixTime { secs, nanos: 0 })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

// ---------------------------------------------------------------------------------------------
// Hex

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [DIGITS[usize::from(b >> 4)] as char, DIGITS[usize::from(b & 0xF)] as char]).collect()
}

fn from_hex_48(text: &str) -> Option<[u8; 48]> {
    let bytes = text.as_bytes();
    if bytes.len() != 96 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok());
    let mut out = [0u8; 48];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// Measurements as hex strings in policy files: what `snpguest` and AMD tools print.
mod measurement_list {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(list: &[[u8; 48]], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(list.iter().map(|m| super::to_hex(m)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<[u8; 48]>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|text| {
                super::from_hex_48(text)
                    .ok_or_else(|| D::Error::custom(format!("measurement {text:?} is not 96 hex digits (48 bytes)")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn calendar_round_trip() {
        for (y, m, d, days) in [(1970, 1, 1, 0), (2000, 2, 29, 11_016), (2024, 1, 1, 19_723), (2045, 10, 22, 27_688)] {
            assert_eq!(days_from_civil(y, m, d), days);
            assert_eq!(civil_from_days(days), (y, m, d));
        }
    }

    #[test]
    fn times_parse_strictly() {
        let utc = |s: &str| {
            let mut der = vec![TAG_UTC_TIME, s.len() as u8];
            der.extend_from_slice(s.as_bytes());
            let mut input = der.as_slice();
            parse_time(&mut input, "t")
        };
        assert_eq!(utc("230403192343Z").map(|t| t.to_string()), Ok("2023-04-03T19:23:43Z".into()));
        assert_eq!(utc("491231235959Z").map(|t| t.to_string()), Ok("2049-12-31T23:59:59Z".into()));
        assert_eq!(utc("500101000000Z").map(|t| t.to_string()), Ok("1950-01-01T00:00:00Z".into()));
        for bad in
            ["230230000000Z", "231301000000Z", "230403192343", "2304031923430Z", "23040319234aZ", "230403246000Z"]
        {
            assert!(utc(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn amd_oids_encode_as_in_vcek() {
        assert_eq!(OID_BL_SPL, [0x2B, 0x06, 0x01, 0x04, 0x01, 0x9C, 0x78, 0x01, 0x03, 0x01]);
        assert_eq!(OID_HW_ID, [0x2B, 0x06, 0x01, 0x04, 0x01, 0x9C, 0x78, 0x01, 0x04]);
    }

    #[test]
    fn small_integers() {
        assert_eq!(small_integer(&[0x02, 0x01, 0x73]), Ok(0x73));
        assert_eq!(small_integer(&[0x02, 0x02, 0x00, 0xD1]), Ok(0xD1));
        assert!(small_integer(&[0x02, 0x02, 0x00, 0x10]).is_err());
        assert!(small_integer(&[0x02, 0x01, 0x80]).is_err());
        assert!(small_integer(&[0x02, 0x01, 0x01, 0x00]).is_err());
    }

    #[test]
    fn hex_measurements() {
        let m = [0xABu8; 48];
        assert_eq!(from_hex_48(&to_hex(&m)), Some(m));
        assert_eq!(from_hex_48(&to_hex(&m).to_uppercase()), Some(m));
        assert_eq!(from_hex_48("ab"), None);
        assert_eq!(from_hex_48(&"zz".repeat(48)), None);
    }
}
