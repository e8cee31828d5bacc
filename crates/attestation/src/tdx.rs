//! Intel TDX evidence: producing a DCAP quote inside a TD and verifying it offline.
//!
//! A TD proves what it runs with a DCAP quote: a TD report (measurements MRTD and RTMR0-3, and 64
//! bytes of REPORTDATA chosen by the TD) signed by an attestation key, which Intel's quoting
//! enclave certifies with its PCK certificate. Verifying it needs *collateral* from Intel (TCB
//! info, QE identity, CRLs and their issuer chains). [`TdxEvidence`] carries the collateral next to
//! the quote so that a verifier needs no network and every verifier reaches the same verdict for
//! the same evidence and time.
//!
//! Verification is done by `dcap-qvl` against Intel's SGX root CA, pinned here. On top of it,
//! [`verify`] makes the evidence *non-malleable*: `dcap-qvl` ignores some bytes (padding after the
//! quote, the type of the outer certification data, PEM line breaks and base64 padding bits, the
//! root certificate carried in each chain, the whole PCK CRL issuer chain), so an attacker could
//! change them without changing the verdict. Evidence is hashed and compared by other parts of
//! Trusted Pods, so [`verify`] accepts exactly one byte string per meaning and rejects any other.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use dcap_qvl::QuoteCollateralV3;
use dcap_qvl::configs::RustCryptoConfig;
use dcap_qvl::verify::QuoteVerifier;
use der::Decode as _;

/// TDX evidence: a DCAP quote and the collateral that verifies it, carried with the evidence so
/// verification needs no network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxEvidence {
    /// The DCAP quote (version 4 or 5, TEE type TDX) exactly as [`trim_quote`] leaves it: no
    /// padding after the signature data.
    pub quote: Vec<u8>,
    /// The collateral in the encoding of [`encode_collateral`].
    pub collateral: Vec<u8>,
}

/// What a verified quote says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxClaims {
    /// REPORTDATA: the 64 bytes the TD chose when it asked for the quote (binds keys to it).
    pub report_data: [u8; 64],
    /// MRTD: measurement of the initial TD contents (firmware).
    pub mr_td: [u8; 48],
    /// RTMR0-3: runtime measurement registers (firmware configuration, kernel, command line, ...).
    pub rtmrs: [[u8; 48]; 4],
    /// TCB status of the platform and quoting enclave, as Intel names it (e.g. `UpToDate`,
    /// `OutOfDate`, `SWHardeningNeeded`).
    pub tcb_status: String,
    /// Intel security advisories (`INTEL-SA-*`) that apply to this TCB.
    pub advisory_ids: Vec<String>,
    /// Whether any TD-under-debug bit of TDATTRIBUTES is set (debug mode or profiling): the host
    /// can then read the TD's state, so nothing it says is confidential.
    pub debug: bool,
}

/// A 48-byte TDX measurement written as 96 hex digits in policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Measurement(pub [u8; 48]);

impl std::fmt::Display for Measurement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::str::FromStr for Measurement {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bytes = hex::decode(s).map_err(|_| format!("measurement {s:?} is not hex"))?;
        let bytes: [u8; 48] =
            bytes.try_into().map_err(|b: Vec<u8>| format!("measurement {s:?} has {} bytes, expected 48", b.len()))?;
        Ok(Self(bytes))
    }
}

impl serde::Serialize for Measurement {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Measurement {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a publisher's policy requires of TDX evidence beyond a valid quote.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TdxPolicy {
    /// TCB statuses accepted (default `["UpToDate"]`).
    pub tcb_statuses: Vec<String>,
    /// Whether a TD in debug mode is accepted (default false: its memory is open to the host).
    pub allow_debug: bool,
    /// MRTD values allowed (hex, 48 bytes); empty = any.
    pub mr_td: Vec<Measurement>,
    /// RTMR0 values allowed (firmware configuration); empty = any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rtmr0: Vec<Measurement>,
    /// RTMR1 values allowed (kernel); empty = any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rtmr1: Vec<Measurement>,
    /// RTMR2 values allowed (kernel command line, initrd); empty = any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rtmr2: Vec<Measurement>,
    /// RTMR3 values allowed (what the guest extends at run time); empty = any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rtmr3: Vec<Measurement>,
    /// A PCCS (or Intel's PCS) to fetch collateral from, instead of using what the provider
    /// sends with its quote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pccs_url: Option<String>,
}

impl Default for TdxPolicy {
    fn default() -> Self {
        Self {
            tcb_statuses: vec!["UpToDate".to_owned()],
            allow_debug: false,
            mr_td: Vec::new(),
            rtmr0: Vec::new(),
            rtmr1: Vec::new(),
            rtmr2: Vec::new(),
            rtmr3: Vec::new(),
            pccs_url: None,
        }
    }
}

/// Why TDX evidence could not be produced or was refused.
#[derive(Debug, thiserror::Error)]
pub enum TdxError {
    /// This machine cannot produce TDX quotes.
    #[error("TDX quote generation unavailable: {0}")]
    Unavailable(String),
    /// The configfs-tsm interface exists but the exchange with it failed.
    #[error("TDX quote generation through configfs-tsm failed: {what} ({path}): {source}")]
    Configfs {
        /// The step of the protocol that failed.
        what: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The error from the kernel.
        source: io::Error,
    },
    /// The quote is a DCAP quote for another TEE (SGX enclave quote).
    #[error("not a TDX quote: TEE type {tee_type:#x} ({kind}), expected 0x81 (TDX)")]
    NotTdx {
        /// The TEE type field of the quote header.
        tee_type: u32,
        /// What that TEE type is.
        kind: &'static str,
    },
    /// The quote bytes are malformed or not in canonical form; names the part of the quote.
    #[error("malformed TDX quote: {0}")]
    Quote(String),
    /// The collateral bytes are malformed or not canonical; names the collateral field.
    #[error("malformed TDX collateral: {0}")]
    Collateral(String),
    /// A certificate chain (in the quote or the collateral) does not have the required shape.
    #[error("TDX certificate chain refused: {0}")]
    Chain(String),
    /// Some collateral or certificate is not valid at the verification time.
    #[error("TDX collateral not valid at {at}: {items}")]
    NotValidAt {
        /// The verification time (RFC 3339).
        at: String,
        /// Each item outside its validity window, with that window.
        items: String,
    },
    /// The verification time is not representable (before 1970).
    #[error("TDX verification time is before the Unix epoch")]
    Time,
    /// `dcap-qvl` refused the quote; `part` says which part of the evidence failed.
    #[error("TDX quote verification failed ({part}): {detail}")]
    Verification {
        /// The part of the evidence that failed (quote, QE report, PCK chain, TCB info, ...).
        part: &'static str,
        /// The full error from `dcap-qvl`.
        detail: String,
    },
    /// The verified claims do not satisfy the policy; names the field and the values.
    #[error("TDX policy not satisfied: {0}")]
    Policy(String),
    /// Collateral could not be fetched from a PCCS.
    #[error("cannot fetch TDX collateral from PCCS {url}: {reason}")]
    Pccs {
        /// The PCCS.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The provider has no collateral to send with its quote.
    #[error("no TDX collateral: {0}")]
    NoCollateral(String),
}

// ---------------------------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------------------------

/// Verifies the quote against the collateral at time `at` (collateral and certificates must be
/// valid then; this is why the time is explicit) with `dcap-qvl` against Intel's pinned SGX root
/// CA, and returns the claims. A quote that is not TDX (e.g. an SGX quote) is refused with
/// [`TdxError::NotTdx`].
///
/// Debug TDs are verified (their `debug` claim is set) so that [`check_policy`] decides; a TD
/// with reserved attribute bits, migration enabled or service TDs bound is refused here.
pub fn verify(evidence: &TdxEvidence, at: SystemTime) -> Result<TdxClaims, TdxError> {
    let layout = parse_quote(&evidence.quote)?;
    let collateral = CollateralParts::decode(&evidence.collateral)?;
    check_chains(&layout, &collateral)?;
    let now = at.duration_since(UNIX_EPOCH).map_err(|_| TdxError::Time)?.as_secs();
    check_validity(&layout, &collateral, now)?;

    let report = QuoteVerifier::<RustCryptoConfig>::new_with_config(INTEL_SGX_ROOT_CA_DER.to_vec())
        .allow_debug(true)
        .verify(&evidence.quote, &collateral.to_dcap(), now)
        .map_err(|e| {
            let detail = format!("{e:#}");
            TdxError::Verification { part: classify(&detail), detail }
        })?;
    let td = report.report.as_td10().ok_or_else(|| TdxError::Quote("verified quote has no TD report".to_owned()))?;
    Ok(TdxClaims {
        report_data: td.report_data,
        mr_td: td.mr_td,
        rtmrs: [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3],
        tcb_status: report.status,
        advisory_ids: report.advisory_ids,
        debug: td.td_attributes[0] != 0,
    })
}

/// Checks verified claims against a policy: TCB status in the accepted list, debug, MRTD and each
/// RTMR in its list when the list is not empty. The error names the field and the values.
pub fn check_policy(claims: &TdxClaims, policy: &TdxPolicy) -> Result<(), TdxError> {
    if !policy.tcb_statuses.contains(&claims.tcb_status) {
        return Err(TdxError::Policy(format!(
            "TCB status {:?} (advisories {:?}) is not in tcb_statuses {:?}",
            claims.tcb_status, claims.advisory_ids, policy.tcb_statuses
        )));
    }
    if claims.debug && !policy.allow_debug {
        return Err(TdxError::Policy(
            "the TD runs in debug mode (TD-under-debug bits of TDATTRIBUTES set) and allow_debug is false".to_owned(),
        ));
    }
    let registers = [
        ("mr_td", &claims.mr_td, &policy.mr_td),
        ("rtmr0", &claims.rtmrs[0], &policy.rtmr0),
        ("rtmr1", &claims.rtmrs[1], &policy.rtmr1),
        ("rtmr2", &claims.rtmrs[2], &policy.rtmr2),
        ("rtmr3", &claims.rtmrs[3], &policy.rtmr3),
    ];
    for (name, value, allowed) in registers {
        if !allowed.is_empty() && !allowed.contains(&Measurement(*value)) {
            let allowed: Vec<String> = allowed.iter().map(Measurement::to_string).collect();
            return Err(TdxError::Policy(format!(
                "{name} {} is not in the allowed list {allowed:?}",
                hex::encode(value)
            )));
        }
    }
    Ok(())
}

/// Names the part of the evidence a `dcap-qvl` error is about, from its message: `dcap-qvl`
/// reports errors as text only, and the messages below are the ones its verification steps use.
fn classify(detail: &str) -> &'static str {
    const PARTS: &[(&[&str], &str)] = &[
        (&["CRL"], "CRL"),
        (&["TCB Info", "TCBInfo", "TcbInfo", "tcb_info", "TDX module", "Fmspc", "TCB level"], "TCB info"),
        (
            &[
                "QE Identity",
                "QeIdentity",
                "qe_identity",
                "QE MRSIGNER",
                "QE ISVPRODID",
                "QE MISCSELECT",
                "QE ATTRIBUTES",
                "QE report validation",
                "QE TCB",
            ],
            "QE identity",
        ),
        (&["qe_report", "QE report"], "QE report"),
        (&["PCK", "certificate chain"], "PCK chain"),
        (&["ISV enclave report signature"], "quote signature"),
        (
            &["Debug mode", "profiling", "TD attributes", "migration", "SERVTD", "SEPT_VE", "service TD"],
            "TD attributes",
        ),
        (&["Revoked"], "TCB status"),
    ];
    PARTS.iter().find(|(needles, _)| needles.iter().any(|n| detail.contains(n))).map_or("quote", |(_, part)| part)
}

// ---------------------------------------------------------------------------------------------
// Quote layout (Intel TDX DCAP Quote Generation Library API, "Quote Format" appendix)
// ---------------------------------------------------------------------------------------------

const HEADER_LEN: usize = 48;
const TEE_TYPE_SGX: u32 = 0;
const TEE_TYPE_TDX: u32 = 0x81;
/// Certification data type 6: QE report certification data (nests type 5 in quote v4/v5).
const CERT_TYPE_QE_REPORT: u16 = 6;
/// Certification data type 5: PCK certificate chain (PEM).
const CERT_TYPE_PCK_CHAIN: u16 = 5;

/// The parts of a TDX quote that `dcap-qvl` does not itself pin down.
struct QuoteLayout {
    /// The PCK certificate chain carried in the quote, leaf first.
    pck_chain: Vec<Vec<u8>>,
}

/// Bounds-checked little-endian reader over the quote bytes; `what` names the field in errors.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize, what: &str) -> Result<&'a [u8], TdxError> {
        let end = self.pos.checked_add(len).filter(|end| *end <= self.bytes.len());
        let Some(end) = end else {
            return Err(TdxError::Quote(format!(
                "{what} ({len} bytes at offset {}) runs past the end of the quote ({} bytes)",
                self.pos,
                self.bytes.len()
            )));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u16(&mut self, what: &str) -> Result<u16, TdxError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32, TdxError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A u32 length followed by that many bytes, which must be exactly what remains of `self`.
    fn rest_with_len32(&mut self, what: &str) -> Result<&'a [u8], TdxError> {
        let len = self.u32(&format!("size of {what}"))? as usize;
        let remaining = self.bytes.len() - self.pos;
        if len != remaining {
            return Err(TdxError::Quote(format!("{what} is declared as {len} bytes but {remaining} bytes follow")));
        }
        self.take(len, what)
    }
}

/// Length of the quote's structure (header, report and signature data) and the offset where its
/// TD report ends, or an error naming the part of the quote that is malformed.
fn quote_structure(quote: &[u8]) -> Result<(usize, usize), TdxError> {
    let mut r = Reader { bytes: quote, pos: 0 };
    let version = r.u16("header version")?;
    let _key_type = r.u16("header attestation key type")?;
    let tee_type = r.u32("header TEE type")?;
    match tee_type {
        TEE_TYPE_TDX => {}
        TEE_TYPE_SGX => return Err(TdxError::NotTdx { tee_type, kind: "SGX enclave" }),
        _ => return Err(TdxError::NotTdx { tee_type, kind: "unknown TEE" }),
    }
    r.take(HEADER_LEN - 8, "header")?;
    let report_len = match version {
        4 => 584,
        5 => {
            let body_type = r.u16("v5 body type")?;
            let body_size = r.u32("v5 body size")? as usize;
            let expected = match body_type {
                2 => 584,
                3 => 648,
                4 => 885,
                _ => {
                    return Err(TdxError::Quote(format!(
                        "quote v5 body type {body_type} is not a TD report (2, 3 or 4)"
                    )));
                }
            };
            if body_size != expected {
                return Err(TdxError::Quote(format!(
                    "quote v5 body size {body_size} does not match body type {body_type} ({expected})"
                )));
            }
            expected
        }
        _ => {
            return Err(TdxError::Quote(format!("header version {version}, expected 4 or 5 for TDX")));
        }
    };
    r.take(report_len, "TD report")?;
    let report_end = r.pos;
    let sig_len = r.u32("size of the signature data")? as usize;
    r.take(sig_len, "signature data")?;
    Ok((r.pos, report_end))
}

/// Strips the zero padding that some quote generators append after a quote's signature data
/// (e.g. a fixed-size buffer), giving the canonical quote [`verify`] accepts. Non-zero bytes
/// after the quote are refused: they are not padding.
pub fn trim_quote(raw: &[u8]) -> Result<&[u8], TdxError> {
    let (len, _) = quote_structure(raw)?;
    let (quote, padding) = raw.split_at(len);
    if let Some(pos) = padding.iter().position(|b| *b != 0) {
        return Err(TdxError::Quote(format!(
            "non-zero byte at offset {} after the end of the quote ({len} bytes)",
            len + pos
        )));
    }
    Ok(quote)
}

/// Parses the quote strictly: every length field must match what follows, nothing may follow
/// the signature data, the certification data must be type 6 nesting type 5, and the PCK chain
/// must be canonical PEM. `dcap-qvl` tolerates deviations from each of these, which would let the
/// same quote be written as several byte strings.
fn parse_quote(quote: &[u8]) -> Result<QuoteLayout, TdxError> {
    let (len, report_end) = quote_structure(quote)?;
    if len != quote.len() {
        return Err(TdxError::Quote(format!(
            "{} bytes follow the end of the quote's signature data at offset {len} (use trim_quote to remove padding)",
            quote.len() - len
        )));
    }
    let mut r = Reader { bytes: quote, pos: report_end };
    let sig_data = r.rest_with_len32("signature data")?;

    let mut r = Reader { bytes: sig_data, pos: 0 };
    r.take(64, "quote signature")?;
    r.take(64, "attestation key")?;
    let cert_type = r.u16("certification data type")?;
    if cert_type != CERT_TYPE_QE_REPORT {
        return Err(TdxError::Quote(format!(
            "certification data type {cert_type}, expected {CERT_TYPE_QE_REPORT} (QE report certification data)"
        )));
    }
    let qe_cert_data = r.rest_with_len32("QE report certification data")?;

    let mut r = Reader { bytes: qe_cert_data, pos: 0 };
    r.take(384, "QE report")?;
    r.take(64, "QE report signature")?;
    let auth_len = r.u16("size of QE authentication data")? as usize;
    r.take(auth_len, "QE authentication data")?;
    let inner_type = r.u16("PCK certification data type")?;
    if inner_type != CERT_TYPE_PCK_CHAIN {
        return Err(TdxError::Quote(format!(
            "PCK certification data type {inner_type}, expected {CERT_TYPE_PCK_CHAIN} (PCK certificate chain); \
             quotes without the PCK chain are not supported"
        )));
    }
    let pem = r.rest_with_len32("PCK certificate chain")?;
    // Intel's quoting enclave writes the chain as a C string; the terminator is optional so
    // that quotes from other generators verify, but nothing else may follow the PEM.
    let pem = pem.strip_suffix(b"\0").unwrap_or(pem);
    let pck_chain = pem_decode(pem).map_err(|e| TdxError::Quote(format!("PCK certificate chain: {e}")))?;
    if pem_encode(&pck_chain).as_bytes() != pem {
        return Err(TdxError::Quote(
            "PCK certificate chain is not canonical PEM (64-character base64 lines, LF line ends, \
             zero padding bits, nothing between certificates)"
                .to_owned(),
        ));
    }
    Ok(QuoteLayout { pck_chain })
}

// ---------------------------------------------------------------------------------------------
// Collateral encoding
// ---------------------------------------------------------------------------------------------

/// Magic and format version at the start of encoded collateral, so that other bytes are refused
/// before any parsing.
const COLLATERAL_MAGIC: &[u8; 8] = b"TPTDXC\x00\x01";
/// More certificates than Intel's chains ever have (leaf, intermediate, root) plus slack.
const MAX_CHAIN_LEN: usize = 4;

/// Collateral with the certificate chains as DER certificates, the form in which it is encoded.
struct CollateralParts {
    root_ca_crl: Vec<u8>,
    pck_crl: Vec<u8>,
    pck_crl_issuer_chain: Vec<Vec<u8>>,
    tcb_info_issuer_chain: Vec<Vec<u8>>,
    tcb_info: String,
    tcb_info_signature: Vec<u8>,
    qe_identity_issuer_chain: Vec<Vec<u8>>,
    qe_identity: String,
    qe_identity_signature: Vec<u8>,
    pck_certificate_chain: Option<Vec<Vec<u8>>>,
}

impl CollateralParts {
    fn from_dcap(c: &QuoteCollateralV3) -> Result<Self, TdxError> {
        let chain = |field: &str, pem: &str| {
            let certs = pem_decode(pem.as_bytes()).map_err(|e| TdxError::Collateral(format!("{field}: {e}")))?;
            check_chain_len(field, &certs)?;
            Ok::<_, TdxError>(certs)
        };
        Ok(Self {
            root_ca_crl: c.root_ca_crl.clone(),
            pck_crl: c.pck_crl.clone(),
            pck_crl_issuer_chain: chain("pck_crl_issuer_chain", &c.pck_crl_issuer_chain)?,
            tcb_info_issuer_chain: chain("tcb_info_issuer_chain", &c.tcb_info_issuer_chain)?,
            tcb_info: c.tcb_info.clone(),
            tcb_info_signature: c.tcb_info_signature.clone(),
            qe_identity_issuer_chain: chain("qe_identity_issuer_chain", &c.qe_identity_issuer_chain)?,
            qe_identity: c.qe_identity.clone(),
            qe_identity_signature: c.qe_identity_signature.clone(),
            pck_certificate_chain: c
                .pck_certificate_chain
                .as_deref()
                .map(|pem| chain("pck_certificate_chain", pem.trim_end_matches('\0')))
                .transpose()?,
        })
    }

    fn to_dcap(&self) -> QuoteCollateralV3 {
        QuoteCollateralV3 {
            pck_crl_issuer_chain: pem_encode(&self.pck_crl_issuer_chain),
            root_ca_crl: self.root_ca_crl.clone(),
            pck_crl: self.pck_crl.clone(),
            tcb_info_issuer_chain: pem_encode(&self.tcb_info_issuer_chain),
            tcb_info: self.tcb_info.clone(),
            tcb_info_signature: self.tcb_info_signature.clone(),
            qe_identity_issuer_chain: pem_encode(&self.qe_identity_issuer_chain),
            qe_identity: self.qe_identity.clone(),
            qe_identity_signature: self.qe_identity_signature.clone(),
            pck_certificate_chain: self.pck_certificate_chain.as_deref().map(pem_encode),
        }
    }

    fn encode(&self) -> Result<Vec<u8>, TdxError> {
        fn bytes(out: &mut Vec<u8>, field: &str, data: &[u8]) -> Result<(), TdxError> {
            let len =
                u32::try_from(data.len()).map_err(|_| TdxError::Collateral(format!("{field} is larger than 4 GiB")))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(data);
            Ok(())
        }
        fn chain(out: &mut Vec<u8>, field: &str, certs: &[Vec<u8>]) -> Result<(), TdxError> {
            check_chain_len(field, certs)?;
            out.push(certs.len() as u8);
            certs.iter().try_for_each(|cert| bytes(out, field, cert))
        }
        let mut out = COLLATERAL_MAGIC.to_vec();
        bytes(&mut out, "root_ca_crl", &self.root_ca_crl)?;
        bytes(&mut out, "pck_crl", &self.pck_crl)?;
        chain(&mut out, "pck_crl_issuer_chain", &self.pck_crl_issuer_chain)?;
        chain(&mut out, "tcb_info_issuer_chain", &self.tcb_info_issuer_chain)?;
        bytes(&mut out, "tcb_info", self.tcb_info.as_bytes())?;
        bytes(&mut out, "tcb_info_signature", &self.tcb_info_signature)?;
        chain(&mut out, "qe_identity_issuer_chain", &self.qe_identity_issuer_chain)?;
        bytes(&mut out, "qe_identity", self.qe_identity.as_bytes())?;
        bytes(&mut out, "qe_identity_signature", &self.qe_identity_signature)?;
        match &self.pck_certificate_chain {
            None => out.push(0),
            Some(certs) => {
                out.push(1);
                chain(&mut out, "pck_certificate_chain", certs)?;
            }
        }
        Ok(out)
    }

    fn decode(input: &[u8]) -> Result<Self, TdxError> {
        struct In<'a>(&'a [u8]);
        impl In<'_> {
            fn take(&mut self, field: &str, len: usize) -> Result<Vec<u8>, TdxError> {
                let (head, rest) = self.0.split_at_checked(len).ok_or_else(|| {
                    TdxError::Collateral(format!("{field}: {len} bytes declared but only {} remain", self.0.len()))
                })?;
                self.0 = rest;
                Ok(head.to_vec())
            }
            fn u8(&mut self, field: &str) -> Result<u8, TdxError> {
                Ok(self.take(field, 1)?[0])
            }
            fn bytes(&mut self, field: &str) -> Result<Vec<u8>, TdxError> {
                let len = self.take(&format!("length of {field}"), 4)?;
                let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
                self.take(field, len as usize)
            }
            fn string(&mut self, field: &str) -> Result<String, TdxError> {
                String::from_utf8(self.bytes(field)?).map_err(|_| TdxError::Collateral(format!("{field} is not UTF-8")))
            }
            fn chain(&mut self, field: &str) -> Result<Vec<Vec<u8>>, TdxError> {
                let count = self.u8(&format!("certificate count of {field}"))? as usize;
                if !(1..=MAX_CHAIN_LEN).contains(&count) {
                    return Err(TdxError::Collateral(format!(
                        "{field} has {count} certificates, expected 1 to {MAX_CHAIN_LEN}"
                    )));
                }
                let certs = (0..count).map(|i| self.bytes(&format!("{field}[{i}]"))).collect::<Result<Vec<_>, _>>()?;
                check_chain_len(field, &certs)?;
                Ok(certs)
            }
        }

        let mut r = In(input);
        if r.take("magic", COLLATERAL_MAGIC.len())? != COLLATERAL_MAGIC {
            return Err(TdxError::Collateral(
                "does not start with the TDX collateral magic and format version 1".to_owned(),
            ));
        }
        let parts = Self {
            root_ca_crl: r.bytes("root_ca_crl")?,
            pck_crl: r.bytes("pck_crl")?,
            pck_crl_issuer_chain: r.chain("pck_crl_issuer_chain")?,
            tcb_info_issuer_chain: r.chain("tcb_info_issuer_chain")?,
            tcb_info: r.string("tcb_info")?,
            tcb_info_signature: r.bytes("tcb_info_signature")?,
            qe_identity_issuer_chain: r.chain("qe_identity_issuer_chain")?,
            qe_identity: r.string("qe_identity")?,
            qe_identity_signature: r.bytes("qe_identity_signature")?,
            pck_certificate_chain: match r.u8("pck_certificate_chain presence flag")? {
                0 => None,
                1 => Some(r.chain("pck_certificate_chain")?),
                flag => {
                    return Err(TdxError::Collateral(format!(
                        "pck_certificate_chain presence flag is {flag}, expected 0 or 1"
                    )));
                }
            },
        };
        if !r.0.is_empty() {
            return Err(TdxError::Collateral(format!("{} bytes follow the last field", r.0.len())));
        }
        Ok(parts)
    }
}

fn check_chain_len(field: &str, certs: &[Vec<u8>]) -> Result<(), TdxError> {
    if !(1..=MAX_CHAIN_LEN).contains(&certs.len()) {
        return Err(TdxError::Collateral(format!(
            "{field} has {} certificates, expected 1 to {MAX_CHAIN_LEN}",
            certs.len()
        )));
    }
    if certs.iter().any(Vec::is_empty) {
        return Err(TdxError::Collateral(format!("{field} has an empty certificate")));
    }
    Ok(())
}

/// Encodes collateral (as fetched from a PCCS or Intel PCS) for [`TdxEvidence::collateral`].
///
/// The encoding is binary and length-prefixed, so that it is canonical and every byte counts:
/// JSON would leave whitespace, key order, escapes and hex letter case free, and PEM leaves line
/// breaks and base64 padding bits free, none of which any signature covers. After an 8-byte
/// magic (`TPTDXC\0\x01`, the last byte being the format version), the fields of
/// [`QuoteCollateralV3`] follow in this order: `root_ca_crl`, `pck_crl` (DER),
/// `pck_crl_issuer_chain`, `tcb_info_issuer_chain`, `tcb_info` (the signed JSON text, byte for
/// byte), `tcb_info_signature`, `qe_identity_issuer_chain`, `qe_identity`,
/// `qe_identity_signature`, then a byte 0 or 1 saying whether `pck_certificate_chain` follows.
/// A byte string is a u32 big-endian length and the bytes; a certificate chain is a one-byte count
/// (1 to 4) and each certificate as a DER byte string. The decoder refuses anything else,
/// including trailing bytes, so each collateral has exactly one encoding.
///
/// Fails when a certificate chain is not PEM certificates or has no or too many certificates.
pub fn encode_collateral(collateral: &QuoteCollateralV3) -> Result<Vec<u8>, TdxError> {
    CollateralParts::from_dcap(collateral)?.encode()
}

/// Decodes collateral encoded by [`encode_collateral`]. Certificate chains come back as
/// canonical PEM (64-character lines, LF line ends), which may differ in layout from the PEM
/// given to [`encode_collateral`] but holds the same certificates.
pub fn decode_collateral(encoded: &[u8]) -> Result<QuoteCollateralV3, TdxError> {
    Ok(CollateralParts::decode(encoded)?.to_dcap())
}

// ---------------------------------------------------------------------------------------------
// Certificate chain shape
// ---------------------------------------------------------------------------------------------

/// Requires every certificate carried in the evidence to be one that verification depends on.
/// `dcap-qvl` builds paths to its trust anchor and never looks at a root certificate carried in a
/// chain, nor at the PCK CRL issuer chain, so these must be pinned down here.
fn check_chains(quote: &QuoteLayout, c: &CollateralParts) -> Result<(), TdxError> {
    let root = &INTEL_SGX_ROOT_CA_DER[..];
    let [_pck_leaf, pck_ca, pck_root] = &quote.pck_chain[..] else {
        return Err(TdxError::Chain(format!(
            "the PCK chain in the quote has {} certificates, expected 3 (PCK certificate, PCK CA, Intel SGX root CA)",
            quote.pck_chain.len()
        )));
    };
    if pck_root != root {
        return Err(TdxError::Chain(
            "the last certificate of the PCK chain in the quote is not Intel's SGX root CA".to_owned(),
        ));
    }
    for (field, chain) in
        [("tcb_info_issuer_chain", &c.tcb_info_issuer_chain), ("qe_identity_issuer_chain", &c.qe_identity_issuer_chain)]
    {
        match &chain[..] {
            [_signer, chain_root] if chain_root == root => {}
            _ => {
                return Err(TdxError::Chain(format!(
                    "collateral {field} must be the signing certificate followed by Intel's SGX root CA \
                     ({} certificates given)",
                    chain.len()
                )));
            }
        }
    }
    if c.pck_crl_issuer_chain.len() != 2 || &c.pck_crl_issuer_chain[0] != pck_ca || c.pck_crl_issuer_chain[1] != root {
        return Err(TdxError::Chain(
            "collateral pck_crl_issuer_chain must be the PCK CA certificate of the quote followed by \
             Intel's SGX root CA"
                .to_owned(),
        ));
    }
    if let Some(chain) = &c.pck_certificate_chain
        && chain != &quote.pck_chain
    {
        return Err(TdxError::Chain(
            "collateral pck_certificate_chain differs from the PCK chain in the quote".to_owned(),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Validity windows
// ---------------------------------------------------------------------------------------------

/// Checks every dated item of the evidence against `now` and names all that are not valid, so
/// that an expired evidence says which collateral to refresh. `dcap-qvl` checks the same dates
/// but its errors do not say which certificate or CRL failed.
fn check_validity(quote: &QuoteLayout, c: &CollateralParts, now: u64) -> Result<(), TdxError> {
    let mut windows: Vec<(String, u64, Option<u64>)> = Vec::new();
    for (what, field, json) in [("TCB info", "tcb_info", &c.tcb_info), ("QE identity", "qe_identity", &c.qe_identity)] {
        let (issue, next) = json_dates(json)
            .ok_or_else(|| TdxError::Collateral(format!("{field}: no readable issueDate and nextUpdate")))?;
        windows.push((format!("{what} (collateral {field})"), issue, Some(next)));
    }
    for (what, field, crl) in [("root CA CRL", "root_ca_crl", &c.root_ca_crl), ("PCK CRL", "pck_crl", &c.pck_crl)] {
        let (this, next) = crl_dates(crl)
            .ok_or_else(|| TdxError::Collateral(format!("{field}: not a DER CRL with readable update times")))?;
        // webpki treats a CRL as expired from its nextUpdate second on (certificates and JSON
        // collateral only after theirs), so its last valid second is one earlier.
        windows.push((format!("{what} (collateral {field})"), this, next.map(|n| n.saturating_sub(1))));
    }
    let certs = [
        ("TCB info signing certificate (collateral tcb_info_issuer_chain[0])", c.tcb_info_issuer_chain.first()),
        (
            "QE identity signing certificate (collateral qe_identity_issuer_chain[0])",
            c.qe_identity_issuer_chain.first(),
        ),
        ("PCK certificate (quote)", quote.pck_chain.first()),
        ("PCK CA certificate (quote)", quote.pck_chain.get(1)),
        ("Intel SGX root CA", Some(&INTEL_SGX_ROOT_CA_DER.to_vec())),
    ];
    for (what, cert) in certs {
        let Some(cert) = cert else { continue };
        let (not_before, not_after) = cert_validity(cert)
            .ok_or_else(|| TdxError::Chain(format!("{what}: not a DER certificate with a readable validity")))?;
        windows.push((what.to_owned(), not_before, Some(not_after)));
    }

    let mut items = String::new();
    for (what, from, until) in windows {
        if now < from || until.is_some_and(|until| now > until) {
            let state = if now < from { "not yet valid" } else { "expired" };
            let until = until.map_or_else(|| "(no end)".to_owned(), format_time);
            if !items.is_empty() {
                items.push_str("; ");
            }
            let _ = write!(items, "{what} {state}, valid from {} through {until}", format_time(from));
        }
    }
    if items.is_empty() { Ok(()) } else { Err(TdxError::NotValidAt { at: format_time(now), items }) }
}

fn json_dates(json: &str) -> Option<(u64, u64)> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let issue = parse_rfc3339(value.get("issueDate")?.as_str()?)?;
    let next = parse_rfc3339(value.get("nextUpdate")?.as_str()?)?;
    Some((issue, next))
}

/// Parses the RFC 3339 timestamps of Intel's collateral JSON, as seconds since the epoch.
fn parse_rfc3339(text: &str) -> Option<u64> {
    let time = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    u64::try_from(time.timestamp()).ok()
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn format_time(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0))
        .map_or_else(|| format!("{secs} s after the epoch"), |time| time.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

// ---------------------------------------------------------------------------------------------
// Dates of certificates and CRLs
// ---------------------------------------------------------------------------------------------

/// notBefore and notAfter of a DER certificate.
fn cert_validity(der: &[u8]) -> Option<(u64, u64)> {
    let cert = x509_cert::Certificate::from_der(der).ok()?;
    let validity = cert.tbs_certificate().validity();
    Some((validity.not_before.to_unix_duration().as_secs(), validity.not_after.to_unix_duration().as_secs()))
}

/// thisUpdate and nextUpdate (optional in X.509, always present in Intel's CRLs) of a DER CRL.
fn crl_dates(der: &[u8]) -> Option<(u64, Option<u64>)> {
    let crl = x509_cert::crl::CertificateList::<x509_cert::certificate::Rfc5280>::from_der(der).ok()?;
    let tbs = &crl.tbs_cert_list;
    Some((tbs.this_update.to_unix_duration().as_secs(), tbs.next_update.map(|t| t.to_unix_duration().as_secs())))
}

// ---------------------------------------------------------------------------------------------
// PEM
// ---------------------------------------------------------------------------------------------

const PEM_TAG: &str = "CERTIFICATE";

/// The one PEM layout this module produces and accepts in quotes: 64-character base64 lines with
/// padding, LF line ends, one certificate right after the other, a final LF.
fn pem_encode(certs: &[Vec<u8>]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    certs.iter().map(|der| pem::encode_config(&pem::Pem::new(PEM_TAG, der.as_slice()), config)).collect()
}

/// Reads PEM certificates leniently (any line layout, CR LF, text between blocks): callers that
/// need canonical PEM compare the result re-encoded with [`pem_encode`].
fn pem_decode(text: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let blocks = pem::parse_many(text).map_err(|e| e.to_string())?;
    if blocks.is_empty() {
        return Err("no certificate".to_owned());
    }
    blocks
        .into_iter()
        .map(|block| match block.tag() {
            PEM_TAG => Ok(block.into_contents()),
            tag => Err(format!("a {tag:?} PEM block where a certificate belongs")),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------------

/// Where the kernel exposes configfs-tsm reports (Linux 6.7+, `CONFIG_TSM_REPORTS`).
const TSM_REPORT_DIR: &str = "/sys/kernel/config/tsm/report";

/// Generates a quote whose REPORTDATA is `report_data` through the kernel's configfs-tsm
/// interface (`/sys/kernel/config/tsm/report`: mkdir a fresh entry, write `inblob`, read
/// `outblob`, rmdir), returning [`TdxError::Unavailable`] when the interface is absent or its
/// provider is not `tdx_guest`. The quote is returned as [`trim_quote`] leaves it.
///
/// The collateral is not fetched here: it comes from Intel's PCS or a PCCS, which the caller
/// reaches (a TD has no privileged path to it) and passes through [`encode_collateral`].
pub fn generate(report_data: [u8; 64]) -> Result<Vec<u8>, TdxError> {
    generate_with(&StdFs, Path::new(TSM_REPORT_DIR), report_data)
}

/// The file operations of the configfs-tsm protocol: a trait so that tests can imitate the
/// kernel, which creates the attribute files on mkdir and produces the quote on read.
trait TsmFs {
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
}

struct StdFs;

impl TsmFs for StdFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }
    fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        std::fs::write(path, data)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }
}

fn generate_with(fs: &impl TsmFs, base: &Path, report_data: [u8; 64]) -> Result<Vec<u8>, TdxError> {
    if !base.is_dir() {
        return Err(TdxError::Unavailable(format!(
            "{} does not exist: this is not a TDX guest, or its kernel lacks configfs-tsm \
             (Linux 6.7+, CONFIG_TSM_REPORTS) or configfs is not mounted",
            base.display()
        )));
    }
    // A fresh entry per quote: entries are shared by every process, and another writer to the
    // same entry would change the REPORTDATA under us.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let entry = base.join(format!("tpod-{}-{nanos}-{count}", std::process::id()));
    fs.create_dir(&entry).map_err(|source| TdxError::Configfs {
        what: "creating the report entry",
        path: entry.clone(),
        source,
    })?;
    let quote = exchange(fs, &entry, report_data);
    // configfs removes an entry with its attribute files on rmdir; remove it even on failure so
    // entries do not pile up.
    let removed = fs.remove_dir(&entry).map_err(|source| TdxError::Configfs {
        what: "removing the report entry",
        path: entry.clone(),
        source,
    });
    let quote = quote?;
    removed?;
    Ok(quote)
}

fn exchange(fs: &impl TsmFs, entry: &Path, report_data: [u8; 64]) -> Result<Vec<u8>, TdxError> {
    let read = |name: &str, what: &'static str| {
        let path = entry.join(name);
        fs.read(&path).map_err(|source| TdxError::Configfs { what, path, source })
    };
    let provider = read("provider", "reading the provider")?;
    if provider.trim_ascii() != b"tdx_guest" {
        return Err(TdxError::Unavailable(format!(
            "the configfs-tsm provider is {:?}, not tdx_guest: this is not a TDX guest",
            String::from_utf8_lossy(provider.trim_ascii())
        )));
    }
    let inblob = entry.join("inblob");
    fs.write(&inblob, &report_data).map_err(|source| TdxError::Configfs {
        what: "writing the report data to inblob",
        path: inblob,
        source,
    })?;
    let generation = read("generation", "reading the generation")?;
    let outblob = read("outblob", "reading the quote from outblob")?;
    // The kernel bumps the generation on every write to the entry: a change means someone else
    // wrote to it and the quote may not carry our REPORTDATA.
    if read("generation", "reading the generation")? != generation {
        return Err(TdxError::Unavailable(
            "the configfs-tsm entry was written by another process while the quote was read".to_owned(),
        ));
    }
    let quote = trim_quote(&outblob)?;
    let parsed =
        dcap_qvl::quote::Quote::parse(quote).map_err(|e| TdxError::Quote(format!("quote from configfs-tsm: {e:#}")))?;
    let td = parsed
        .report
        .as_td10()
        .ok_or_else(|| TdxError::Quote("quote from configfs-tsm has no TD report".to_owned()))?;
    if td.report_data != report_data {
        return Err(TdxError::Quote(
            "quote from configfs-tsm carries another REPORTDATA than the one written".to_owned(),
        ));
    }
    Ok(quote.to_vec())
}

// ---------------------------------------------------------------------------------------------
// Trust anchor
// ---------------------------------------------------------------------------------------------

/// Intel SGX Root CA (DER), the anchor of every DCAP chain; a copy of the one `dcap-qvl` 0.7.1
/// bundles (`src/TrustedRootCA.der`, SHA-256
/// 44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3), held here because the
/// chains carried in evidence must end with exactly this certificate and `dcap-qvl` does not
/// export it.
const INTEL_SGX_ROOT_CA_DER: [u8; 659] = [
    0x30, 0x82, 0x02, 0x8f, 0x30, 0x82, 0x02, 0x34, 0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x14, 0x22, 0x65, 0x0c, 0xd6,
    0x5a, 0x9d, 0x34, 0x89, 0xf3, 0x83, 0xb4, 0x95, 0x52, 0xbf, 0x50, 0x1b, 0x39, 0x27, 0x06, 0xac, 0x30, 0x0a, 0x06,
    0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02, 0x30, 0x68, 0x31, 0x1a, 0x30, 0x18, 0x06, 0x03, 0x55, 0x04,
    0x03, 0x0c, 0x11, 0x49, 0x6e, 0x74, 0x65, 0x6c, 0x20, 0x53, 0x47, 0x58, 0x20, 0x52, 0x6f, 0x6f, 0x74, 0x20, 0x43,
    0x41, 0x31, 0x1a, 0x30, 0x18, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x11, 0x49, 0x6e, 0x74, 0x65, 0x6c, 0x20, 0x43,
    0x6f, 0x72, 0x70, 0x6f, 0x72, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x31, 0x14, 0x30, 0x12, 0x06, 0x03, 0x55, 0x04, 0x07,
    0x0c, 0x0b, 0x53, 0x61, 0x6e, 0x74, 0x61, 0x20, 0x43, 0x6c, 0x61, 0x72, 0x61, 0x31, 0x0b, 0x30, 0x09, 0x06, 0x03,
    0x55, 0x04, 0x08, 0x0c, 0x02, 0x43, 0x41, 0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, 0x55,
    0x53, 0x30, 0x1e, 0x17, 0x0d, 0x31, 0x38, 0x30, 0x35, 0x32, 0x31, 0x31, 0x30, 0x34, 0x35, 0x31, 0x30, 0x5a, 0x17,
    0x0d, 0x34, 0x39, 0x31, 0x32, 0x33, 0x31, 0x32, 0x33, 0x35, 0x39, 0x35, 0x39, 0x5a, 0x30, 0x68, 0x31, 0x1a, 0x30,
    0x18, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x11, 0x49, 0x6e, 0x74, 0x65, 0x6c, 0x20, 0x53, 0x47, 0x58, 0x20, 0x52,
    0x6f, 0x6f, 0x74, 0x20, 0x43, 0x41, 0x31, 0x1a, 0x30, 0x18, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x11, 0x49, 0x6e,
    0x74, 0x65, 0x6c, 0x20, 0x43, 0x6f, 0x72, 0x70, 0x6f, 0x72, 0x61, 0x74, 0x69, 0x6f, 0x6e, 0x31, 0x14, 0x30, 0x12,
    0x06, 0x03, 0x55, 0x04, 0x07, 0x0c, 0x0b, 0x53, 0x61, 0x6e, 0x74, 0x61, 0x20, 0x43, 0x6c, 0x61, 0x72, 0x61, 0x31,
    0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x08, 0x0c, 0x02, 0x43, 0x41, 0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55,
    0x04, 0x06, 0x13, 0x02, 0x55, 0x53, 0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04, 0x0b, 0xa9, 0xc4, 0xc0, 0xc0,
    0xc8, 0x61, 0x93, 0xa3, 0xfe, 0x23, 0xd6, 0xb0, 0x2c, 0xda, 0x10, 0xa8, 0xbb, 0xd4, 0xe8, 0x8e, 0x48, 0xb4, 0x45,
    0x85, 0x61, 0xa3, 0x6e, 0x70, 0x55, 0x25, 0xf5, 0x67, 0x91, 0x8e, 0x2e, 0xdc, 0x88, 0xe4, 0x0d, 0x86, 0x0b, 0xd0,
    0xcc, 0x4e, 0xe2, 0x6a, 0xac, 0xc9, 0x88, 0xe5, 0x05, 0xa9, 0x53, 0x55, 0x8c, 0x45, 0x3f, 0x6b, 0x09, 0x04, 0xae,
    0x73, 0x94, 0xa3, 0x81, 0xbb, 0x30, 0x81, 0xb8, 0x30, 0x1f, 0x06, 0x03, 0x55, 0x1d, 0x23, 0x04, 0x18, 0x30, 0x16,
    0x80, 0x14, 0x22, 0x65, 0x0c, 0xd6, 0x5a, 0x9d, 0x34, 0x89, 0xf3, 0x83, 0xb4, 0x95, 0x52, 0xbf, 0x50, 0x1b, 0x39,
    0x27, 0x06, 0xac, 0x30, 0x52, 0x06, 0x03, 0x55, 0x1d, 0x1f, 0x04, 0x4b, 0x30, 0x49, 0x30, 0x47, 0xa0, 0x45, 0xa0,
    0x43, 0x86, 0x41, 0x68, 0x74, 0x74, 0x70, 0x73, 0x3a, 0x2f, 0x2f, 0x63, 0x65, 0x72, 0x74, 0x69, 0x66, 0x69, 0x63,
    0x61, 0x74, 0x65, 0x73, 0x2e, 0x74, 0x72, 0x75, 0x73, 0x74, 0x65, 0x64, 0x73, 0x65, 0x72, 0x76, 0x69, 0x63, 0x65,
    0x73, 0x2e, 0x69, 0x6e, 0x74, 0x65, 0x6c, 0x2e, 0x63, 0x6f, 0x6d, 0x2f, 0x49, 0x6e, 0x74, 0x65, 0x6c, 0x53, 0x47,
    0x58, 0x52, 0x6f, 0x6f, 0x74, 0x43, 0x41, 0x2e, 0x64, 0x65, 0x72, 0x30, 0x1d, 0x06, 0x03, 0x55, 0x1d, 0x0e, 0x04,
    0x16, 0x04, 0x14, 0x22, 0x65, 0x0c, 0xd6, 0x5a, 0x9d, 0x34, 0x89, 0xf3, 0x83, 0xb4, 0x95, 0x52, 0xbf, 0x50, 0x1b,
    0x39, 0x27, 0x06, 0xac, 0x30, 0x0e, 0x06, 0x03, 0x55, 0x1d, 0x0f, 0x01, 0x01, 0xff, 0x04, 0x04, 0x03, 0x02, 0x01,
    0x06, 0x30, 0x12, 0x06, 0x03, 0x55, 0x1d, 0x13, 0x01, 0x01, 0xff, 0x04, 0x08, 0x30, 0x06, 0x01, 0x01, 0xff, 0x02,
    0x01, 0x01, 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02, 0x03, 0x49, 0x00, 0x30, 0x46,
    0x02, 0x21, 0x00, 0xe5, 0xbf, 0xe5, 0x09, 0x11, 0xf9, 0x2f, 0x42, 0x89, 0x20, 0xdc, 0x36, 0x8a, 0x30, 0x2e, 0xe3,
    0xd1, 0x2e, 0xc5, 0x86, 0x7f, 0xf6, 0x22, 0xec, 0x64, 0x97, 0xf7, 0x80, 0x60, 0xc1, 0x3c, 0x20, 0x02, 0x21, 0x00,
    0xe0, 0x9d, 0x25, 0xac, 0x7a, 0x0c, 0xb3, 0xe5, 0xe8, 0xe6, 0x8f, 0xec, 0x5f, 0xa3, 0xbd, 0x41, 0x6c, 0x47, 0x44,
    0x0b, 0xd9, 0x50, 0x63, 0x9d, 0x45, 0x0e, 0xdc, 0xbe, 0xa4, 0x57, 0x6a, 0xa2,
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::cell::RefCell;

    use super::*;

    /// The main sample quote of `tests/data/tdx` (with its 70 bytes of zero padding).
    const SAMPLE_QUOTE: &[u8] = include_bytes!("../tests/data/tdx/tdx_quote");

    fn sample_report_data() -> [u8; 64] {
        SAMPLE_QUOTE[568..632].try_into().unwrap()
    }

    #[test]
    fn pinned_root_is_the_one_dcap_qvl_bundles() {
        use sha2::Digest as _;
        assert_eq!(INTEL_SGX_ROOT_CA_DER[..], include_bytes!("../tests/data/tdx/TrustedRootCA.der")[..]);
        assert_eq!(
            hex::encode(sha2::Sha256::digest(INTEL_SGX_ROOT_CA_DER)),
            "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
        );
    }

    #[test]
    fn pem_round_trips_and_is_canonical() {
        let certs = vec![vec![1u8; 100], vec![2u8; 48]];
        let pem = pem_encode(&certs);
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\nAQEB"), "{pem}");
        assert!(pem.contains("-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\n"), "{pem}");
        assert!(pem.lines().all(|line| line.len() <= 64), "{pem}");
        assert_eq!(pem_decode(pem.as_bytes()).unwrap(), certs);
        assert_eq!(pem_decode(pem.replace('\n', "\r\n").as_bytes()).unwrap(), certs);
        assert!(pem_decode(b"junk").is_err());
        assert!(pem_decode(pem.replace("CERTIFICATE", "PRIVATE KEY").as_bytes()).is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_rfc3339("2025-07-19T10:00:35Z"), Some(1_752_919_235));
        assert_eq!(parse_rfc3339("2025-07-19T10:00:35.250Z"), Some(1_752_919_235));
        assert_eq!(parse_rfc3339("2025-07-19T11:00:35+01:00"), Some(1_752_919_235));
        assert_eq!(parse_rfc3339("2025-13-19T10:00:35Z"), None);
        assert_eq!(format_time(1_752_919_235), "2025-07-19T10:00:35Z");
        assert_eq!(format_time(951_782_400), "2000-02-29T00:00:00Z");
    }

    /// Imitates the kernel's configfs-tsm report directory on a real temporary directory: mkdir
    /// creates the attribute files, writing `inblob` bumps `generation` and produces `outblob`,
    /// rmdir removes the attribute files with the entry.
    struct FakeTsm {
        provider: &'static str,
        quote: Vec<u8>,
        /// Imitates another process writing to the entry while the quote is read.
        racing_writer: bool,
        inblobs: RefCell<Vec<Vec<u8>>>,
    }

    impl FakeTsm {
        fn new(quote: &[u8]) -> Self {
            Self { provider: "tdx_guest\n", quote: quote.to_vec(), racing_writer: false, inblobs: RefCell::default() }
        }
    }

    impl TsmFs for FakeTsm {
        fn create_dir(&self, path: &Path) -> io::Result<()> {
            std::fs::create_dir(path)?;
            std::fs::write(path.join("provider"), self.provider)?;
            std::fs::write(path.join("generation"), "0\n")
        }
        fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
            assert_eq!(path.file_name().unwrap(), "inblob", "only inblob is written");
            self.inblobs.borrow_mut().push(data.to_vec());
            let entry = path.parent().unwrap();
            std::fs::write(path, data)?;
            std::fs::write(entry.join("generation"), "1\n")?;
            std::fs::write(entry.join("outblob"), &self.quote)
        }
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            let data = std::fs::read(path)?;
            if self.racing_writer && path.file_name().unwrap() == "outblob" {
                std::fs::write(path.with_file_name("generation"), "2\n")?;
            }
            Ok(data)
        }
        fn remove_dir(&self, path: &Path) -> io::Result<()> {
            for name in ["provider", "generation", "inblob", "outblob"] {
                let _ = std::fs::remove_file(path.join(name));
            }
            std::fs::remove_dir(path)
        }
    }

    fn temp_base(name: &str) -> PathBuf {
        let base = std::env::temp_dir().join(format!("tpod-tdx-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        base
    }

    fn entries(base: &Path) -> usize {
        std::fs::read_dir(base).unwrap().count()
    }

    #[test]
    fn configfs_tsm_protocol() {
        let base = temp_base("ok");
        let fake = FakeTsm::new(SAMPLE_QUOTE);
        let quote = generate_with(&fake, &base, sample_report_data()).unwrap();
        // The padding of the sample is stripped; the entry is gone; inblob got the report data.
        assert_eq!(quote, SAMPLE_QUOTE[..SAMPLE_QUOTE.len() - 70]);
        assert_eq!(entries(&base), 0);
        assert_eq!(*fake.inblobs.borrow(), vec![sample_report_data().to_vec()]);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn configfs_tsm_failures() {
        let missing = std::env::temp_dir().join("tpod-tdx-no-such-dir/report");
        let err = generate_with(&FakeTsm::new(SAMPLE_QUOTE), &missing, [0; 64]).unwrap_err();
        assert!(matches!(err, TdxError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains("configfs-tsm"), "{err}");

        let base = temp_base("fail");
        let fake = FakeTsm { provider: "sev_guest\n", ..FakeTsm::new(SAMPLE_QUOTE) };
        let err = generate_with(&fake, &base, sample_report_data()).unwrap_err();
        assert!(err.to_string().contains("\"sev_guest\", not tdx_guest"), "{err}");
        assert!(fake.inblobs.borrow().is_empty());
        assert_eq!(entries(&base), 0);

        let fake = FakeTsm { racing_writer: true, ..FakeTsm::new(SAMPLE_QUOTE) };
        let err = generate_with(&fake, &base, sample_report_data()).unwrap_err();
        assert!(err.to_string().contains("written by another process"), "{err}");
        assert_eq!(entries(&base), 0);

        let err = generate_with(&FakeTsm::new(SAMPLE_QUOTE), &base, [0; 64]).unwrap_err();
        assert!(err.to_string().contains("another REPORTDATA"), "{err}");
        assert_eq!(entries(&base), 0);

        let err = generate_with(&FakeTsm::new(&SAMPLE_QUOTE[..1000]), &base, [0; 64]).unwrap_err();
        assert!(err.to_string().contains("runs past the end of the quote"), "{err}");
        assert_eq!(entries(&base), 0);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
