//! Shape checks of decoded messages: the protobuf decoder bounds a message only by its total
//! size, so a few megabytes could still hold thousands of containers or env entries. After
//! decoding, [`Validate`] checks the version and caps repeated fields and string lengths, naming
//! the offending field so a publisher sees what to fix. Semantics (prices, image refs, replica
//! ranges) are checked by the provider, not here.

use crate::pb::{
    self, Container, Pod, PodStatus, PricingTable, ProvisionRequest, ProvisionResponse, QuoteRequest, QuoteResponse,
    SignedRequest,
};
use crate::{VERSION, WireError};

/// Caps on repeated fields and field lengths of decoded messages.
pub mod limits {
    /// Containers per pod.
    pub const MAX_CONTAINERS: usize = 16;
    /// Volumes per pod.
    pub const MAX_VOLUMES: usize = 16;
    /// Environment entries per container.
    pub const MAX_ENV: usize = 64;
    /// Ports per container.
    pub const MAX_PORTS: usize = 32;
    /// Volume mounts per container.
    pub const MAX_VOLUME_MOUNTS: usize = 16;
    /// Entries of a container's `command`, and separately of its `args`.
    pub const MAX_ARGS: usize = 64;
    /// Prices in a pricing table.
    pub const MAX_PRICES: usize = 16;
    /// Container statuses in a pod status.
    pub const MAX_CONTAINER_STATUSES: usize = MAX_CONTAINERS;
    /// Bytes of a short string field: names, image references, paths, addresses, states.
    pub const MAX_STRING_BYTES: usize = 1024;
    /// Bytes of a free-text field: env values, error messages, unavailability reasons.
    pub const MAX_TEXT_BYTES: usize = 16 * 1024;
    /// Bytes of a pod id.
    pub const POD_ID_BYTES: usize = 32;
    /// Bytes of an EIP-712 signature (r, s, v).
    pub const SIGNATURE_BYTES: usize = 65;
    /// Bytes of an Ethereum address.
    pub const ADDRESS_BYTES: usize = 20;
    /// Bytes of log data in one log chunk; a provider splits longer output.
    pub const MAX_LOG_CHUNK_BYTES: usize = 64 * 1024;
    /// Bytes of blob data in one put.
    pub const MAX_BLOB_CHUNK_BYTES: usize = 1024 * 1024;
    /// Bytes of a digest or CID string. A sha256 digest takes 71 (`sha256:` and 64 hex digits), a
    /// CIDv1 in base32 59. The exact format is checked by the provider, not here.
    pub const MAX_DIGEST_BYTES: usize = 128;
    /// Bytes of an X25519 public key, and of an HPKE encapsulated key.
    pub const X25519_KEY_BYTES: usize = 32;
    /// Bytes of a blob key.
    pub const BLOB_KEY_BYTES: usize = 32;
    /// Bytes of a sha256.
    pub const SHA256_BYTES: usize = 32;
    /// Layers of an image.
    pub const MAX_LAYERS: usize = 128;
    /// Bytes of a sealed image's ciphertext (its `ImageKeys`).
    pub const MAX_SEALED_IMAGE_BYTES: usize = 64 * 1024;
    /// Bytes of a container's encoded `ProcessSpec` (its command, args and env); the sealed
    /// ciphertext adds a 16-byte tag. Its fields keep their own limits ([`MAX_ARGS`] entries of
    /// [`MAX_TEXT_BYTES`] in `command` and in `args`, [`MAX_ENV`] entries of a
    /// [`MAX_STRING_BYTES`] name and a [`MAX_TEXT_BYTES`] value), which alone would allow about
    /// 3.2 MiB; this caps the whole at what sealing takes in one message (1 MiB, like a secret
    /// volume). The provision frame (4 MiB) still caps all of a pod's containers together.
    pub const MAX_PROCESS_BYTES: usize = 1024 * 1024;
    /// Bytes of the files of one secret volume, encoded; the sealed ciphertext adds a 16-byte tag.
    pub const MAX_SECRET_BYTES: usize = 1024 * 1024;
    /// Files in one secret volume.
    pub const MAX_SECRET_FILES: usize = 64;
    /// Bytes of a secret file's name.
    pub const MAX_FILE_NAME_BYTES: usize = 255;
    /// Bytes of an attestation nonce.
    pub const NONCE_BYTES: usize = 32;
    /// Bytes of a protobuf-encoded libp2p public key (an RSA key is the largest kind).
    pub const MAX_LIBP2P_KEY_BYTES: usize = 1024;
    /// Bytes of a TEE report (an SEV-SNP report is 1184), and of one certificate of its chain.
    pub const MAX_TEE_REPORT_BYTES: usize = 16 * 1024;
    /// Bytes of the collateral of a TDX quote.
    pub const MAX_COLLATERAL_BYTES: usize = 192 * 1024;
    /// Bytes of TEE report data.
    pub const REPORT_DATA_BYTES: usize = 64;
    /// Bytes of an ed25519 public key.
    pub const ED25519_KEY_BYTES: usize = 32;
    /// Bytes of an ed25519 signature.
    pub const ED25519_SIGNATURE_BYTES: usize = 64;
    /// Bytes of an encoded provider profile.
    pub const MAX_PROFILE_BYTES: usize = 8 * 1024;
    /// Multiaddrs in a provider profile.
    pub const MAX_PROFILE_ADDRS: usize = 8;
    /// Pricing table ids in a provider profile.
    pub const MAX_PROFILE_TABLES: usize = 16;
}

/// The provider profile format this crate reads and writes (`ProviderProfile.version`).
pub const PROFILE_FORMAT_VERSION: u32 = 1;

use limits::*;

/// Checks a decoded message against the version this crate speaks and the [`limits`].
pub trait Validate {
    /// Returns the first violation found, naming the field path.
    fn validate(&self) -> Result<(), WireError>;
}

fn version(got: u32) -> Result<(), WireError> {
    if got == VERSION { Ok(()) } else { Err(WireError::UnsupportedVersion { got, supported: VERSION }) }
}

/// `field` is built only on failure, so valid messages cost no allocation.
fn max_len(field: impl FnOnce() -> String, len: usize, max: usize) -> Result<(), WireError> {
    if len <= max { Ok(()) } else { Err(WireError::Limit { field: field(), len, max }) }
}

fn string(path: &str, name: &str, value: &str, max: usize) -> Result<(), WireError> {
    max_len(|| join(path, name), value.len(), max)
}

fn exact_len(field: &str, len: usize, expected: usize) -> Result<(), WireError> {
    if len == expected { Ok(()) } else { Err(WireError::WrongLength { field: field.to_owned(), len, expected }) }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_owned() } else { format!("{path}.{name}") }
}

impl Validate for QuoteRequest {
    fn validate(&self) -> Result<(), WireError> {
        version(self.version)?;
        hostnames("hostnames", &self.hostnames)
    }
}

/// A list of host names: at most one per port of every container.
fn hostnames(name: &str, hosts: &[String]) -> Result<(), WireError> {
    max_len(|| name.to_owned(), hosts.len(), MAX_CONTAINERS * MAX_PORTS)?;
    for (i, host) in hosts.iter().enumerate() {
        string("", &format!("{name}[{i}]"), host, MAX_STRING_BYTES)?;
    }
    Ok(())
}

impl Validate for QuoteResponse {
    fn validate(&self) -> Result<(), WireError> {
        version(self.version)?;
        string("", "reason", &self.reason, MAX_TEXT_BYTES)?;
        string("", "payment_contract", &self.payment_contract, MAX_STRING_BYTES)?;
        string("", "min_funding", &self.min_funding, MAX_STRING_BYTES)?;
        string("", "provider_address", &self.provider_address, MAX_STRING_BYTES)?;
        string("", "domain", &self.domain, MAX_STRING_BYTES)?;
        hostnames("taken_hostnames", &self.taken_hostnames)?;
        // Empty when the provider is not available.
        if !self.token.is_empty() {
            exact_len("token", self.token.len(), ADDRESS_BYTES)?;
        }
        if let Some(pricing) = &self.pricing {
            pricing_table(pricing)?;
        }
        match &self.error {
            Some(error) => string("error", "message", &error.message, MAX_TEXT_BYTES),
            None => Ok(()),
        }
    }
}

fn pricing_table(table: &PricingTable) -> Result<(), WireError> {
    max_len(|| "pricing.prices".into(), table.prices.len(), MAX_PRICES)?;
    for (i, price) in table.prices.iter().enumerate() {
        let path = format!("pricing.prices[{i}]");
        string(&path, "resource", &price.resource, MAX_STRING_BYTES)?;
        string(&path, "reservation", &price.reservation, MAX_STRING_BYTES)?;
        string(&path, "usage", &price.usage, MAX_STRING_BYTES)?;
    }
    string("pricing", "token", &table.token, MAX_STRING_BYTES)?;
    string("pricing", "tee_type", &table.tee_type, MAX_STRING_BYTES)?;
    string("pricing", "cpu_model", &table.cpu_model, MAX_STRING_BYTES)
}

impl Validate for SignedRequest {
    fn validate(&self) -> Result<(), WireError> {
        version(self.version)?;
        // The payload is bounded by the frame limit and validated when decoded on its own.
        exact_len("signature", self.signature.len(), SIGNATURE_BYTES)
    }
}

impl Validate for ProvisionRequest {
    fn validate(&self) -> Result<(), WireError> {
        use pb::provision_request::Action;
        version(self.version)?;
        exact_len("pod_id", self.pod_id.len(), POD_ID_BYTES)?;
        string("", "publisher", &self.publisher, MAX_STRING_BYTES)?;
        match &self.action {
            Some(Action::Provision(pb::Provision { pod: Some(p), pricing })) => {
                pod("provision.pod", p)?;
                pricing.as_ref().map_or(Ok(()), pricing_table)
            }
            Some(Action::Update(pb::Update { pod: Some(p) })) => pod("update.pod", p),
            Some(Action::AcceptPricing(pb::AcceptPricing { pricing: Some(t) })) => pricing_table(t),
            _ => Ok(()),
        }
    }
}

fn pod(path: &str, pod: &Pod) -> Result<(), WireError> {
    string(path, "name", &pod.name, MAX_STRING_BYTES)?;
    max_len(|| join(path, "containers"), pod.containers.len(), MAX_CONTAINERS)?;
    for (i, c) in pod.containers.iter().enumerate() {
        container(&format!("{path}.containers[{i}]"), c)?;
    }
    max_len(|| join(path, "volumes"), pod.volumes.len(), MAX_VOLUMES)?;
    for (i, volume) in pod.volumes.iter().enumerate() {
        let path = format!("{path}.volumes[{i}]");
        string(&path, "name", &volume.name, MAX_STRING_BYTES)?;
        if let Some(pb::volume::Kind::Secret(secret)) = &volume.kind {
            sealed(&join(&path, "secret.sealed"), secret.sealed.as_ref(), MAX_SECRET_BYTES + 16)?;
        }
    }
    if !pod.sealed_by.is_empty() {
        exact_len(&join(path, "sealed_by"), pod.sealed_by.len(), X25519_KEY_BYTES)?;
    }
    // An open enum decodes any number: one this version does not know must not pass as `Always`.
    if pb::pod::RestartPolicy::try_from(pod.restart_policy).is_err() {
        return Err(WireError::Inconsistent {
            field: join(path, "restart_policy"),
            reason: format!("unknown restart policy {}", pod.restart_policy),
        });
    }
    Ok(())
}

/// An HPKE ciphertext: a 32-byte encapsulated key and at most `max` bytes. Absent is accepted
/// here (the provider says what is missing).
fn sealed(path: &str, sealed: Option<&pb::Sealed>, max: usize) -> Result<(), WireError> {
    let Some(sealed) = sealed else { return Ok(()) };
    exact_len(&join(path, "enc"), sealed.enc.len(), X25519_KEY_BYTES)?;
    max_len(|| join(path, "ciphertext"), sealed.ciphertext.len(), max)
}

impl Validate for pb::ImageKeys {
    fn validate(&self) -> Result<(), WireError> {
        string("image", "manifest_digest", &self.manifest_digest, MAX_DIGEST_BYTES)?;
        if let Some(config) = &self.config {
            encrypted_blob("image.config", config)?;
        }
        max_len(|| "image.layers".into(), self.layers.len(), MAX_LAYERS)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let path = format!("image.layers[{i}]");
            string(&path, "diff_id", &layer.diff_id, MAX_DIGEST_BYTES)?;
            if let Some(blob) = &layer.blob {
                encrypted_blob(&join(&path, "blob"), blob)?;
            }
        }
        Ok(())
    }
}

fn encrypted_blob(path: &str, blob: &pb::EncryptedBlob) -> Result<(), WireError> {
    string(path, "cid", &blob.cid, MAX_DIGEST_BYTES)?;
    string(path, "digest", &blob.digest, MAX_DIGEST_BYTES)?;
    exact_len(&join(path, "key"), blob.key.len(), BLOB_KEY_BYTES)
}

impl Validate for pb::SecretFiles {
    fn validate(&self) -> Result<(), WireError> {
        max_len(|| "files".into(), self.files.len(), MAX_SECRET_FILES)?;
        for (i, file) in self.files.iter().enumerate() {
            string(&format!("files[{i}]"), "name", &file.name, MAX_FILE_NAME_BYTES)?;
        }
        Ok(())
    }
}

fn container(path: &str, c: &Container) -> Result<(), WireError> {
    string(path, "name", &c.name, MAX_STRING_BYTES)?;
    string(path, "image", &c.image, MAX_STRING_BYTES)?;
    sealed(&join(path, "sealed_image"), c.sealed_image.as_ref(), MAX_SEALED_IMAGE_BYTES)?;
    sealed(&join(path, "sealed_process"), c.sealed_process.as_ref(), MAX_PROCESS_BYTES + 16)?;
    string(path, "working_dir", &c.working_dir, MAX_STRING_BYTES)?;
    // No longer used (the provider refuses them set), but bounded like any field.
    process_fields(path, &c.command, &c.args, &c.env)?;
    max_len(|| join(path, "ports"), c.ports.len(), MAX_PORTS)?;
    for (i, port) in c.ports.iter().enumerate() {
        string(path, &format!("ports[{i}].hostname"), &port.hostname, MAX_STRING_BYTES)?;
    }
    max_len(|| join(path, "volume_mounts"), c.volume_mounts.len(), MAX_VOLUME_MOUNTS)?;
    for (i, mount) in c.volume_mounts.iter().enumerate() {
        string(path, &format!("volume_mounts[{i}].name"), &mount.name, MAX_STRING_BYTES)?;
        string(path, &format!("volume_mounts[{i}].mount_path"), &mount.mount_path, MAX_STRING_BYTES)?;
    }
    Ok(())
}

/// A process's `command`, `args` and `env` within their limits. Values are not named in errors:
/// they may be secrets.
fn process_fields(
    path: &str,
    command: &[String],
    args: &[String],
    env: &std::collections::BTreeMap<String, String>,
) -> Result<(), WireError> {
    for (name, list) in [("command", command), ("args", args)] {
        max_len(|| join(path, name), list.len(), MAX_ARGS)?;
        for (i, arg) in list.iter().enumerate() {
            string(path, &format!("{name}[{i}]"), arg, MAX_TEXT_BYTES)?;
        }
    }
    max_len(|| join(path, "env"), env.len(), MAX_ENV)?;
    for (key, value) in env {
        string(path, "env key", key, MAX_STRING_BYTES)?;
        max_len(|| format!("{}[{key}]", join(path, "env")), value.len(), MAX_TEXT_BYTES)?;
    }
    Ok(())
}

impl Validate for pb::ProcessSpec {
    /// Checked by the publisher before sealing and by the provider after opening: the ciphertext
    /// on the wire shows only its size.
    fn validate(&self) -> Result<(), WireError> {
        use prost::Message as _;
        process_fields("", &self.command, &self.args, &self.env)?;
        max_len(|| "process".into(), self.encoded_len(), MAX_PROCESS_BYTES)
    }
}

impl Validate for ProvisionResponse {
    fn validate(&self) -> Result<(), WireError> {
        use pb::provision_response::Result as Outcome;
        version(self.version)?;
        match &self.result {
            Some(Outcome::Status(status)) => pod_status(status),
            Some(Outcome::Error(error)) => string("error", "message", &error.message, MAX_TEXT_BYTES),
            None => Ok(()),
        }
    }
}

fn pod_status(status: &PodStatus) -> Result<(), WireError> {
    string("status", "state", &status.state, MAX_STRING_BYTES)?;
    string("status", "url", &status.url, MAX_STRING_BYTES)?;
    max_len(|| "status.containers".into(), status.containers.len(), MAX_CONTAINER_STATUSES)?;
    max_len(|| "status.tcp_ports".into(), status.tcp_ports.len(), MAX_PORTS)?;
    for (i, c) in status.containers.iter().enumerate() {
        let path = format!("status.containers[{i}]");
        string(&path, "name", &c.name, MAX_STRING_BYTES)?;
        string(&path, "state", &c.state, MAX_STRING_BYTES)?;
    }
    if let Some(p) = &status.progress {
        string("status.progress", "phase", &p.phase, MAX_STRING_BYTES)?;
        string("status.progress", "container", &p.container, MAX_STRING_BYTES)?;
    }
    if let Some(w) = &status.last_wake {
        string("status.last_wake", "error", &w.error, MAX_TEXT_BYTES)?;
    }
    status.billing.as_ref().map_or(Ok(()), billing)
}

fn billing(b: &pb::Billing) -> Result<(), WireError> {
    for (name, value) in [("amount", &b.amount), ("claimed", &b.claimed), ("rate_per_second", &b.rate_per_second)] {
        string("status.billing", name, value, MAX_STRING_BYTES)?;
    }
    string("status.billing", "top_up", &b.top_up, MAX_STRING_BYTES)?;
    if let Some(u) = &b.usage {
        usage("status.billing.usage", u)?;
    }
    for t in [&b.pricing, &b.proposed_pricing].into_iter().flatten() {
        pricing_table(t)?;
    }
    if let Some(claim) = &b.last_claim {
        let path = "status.billing.last_claim";
        string(path, "cumulative_amount", &claim.cumulative_amount, MAX_STRING_BYTES)?;
        max_len(|| join(path, "signature"), claim.signature.len(), SIGNATURE_BYTES)?;
        if let Some(r) = &claim.report {
            for (name, bytes) in [("channel", &r.channel), ("pod_id", &r.pod_id), ("terms", &r.terms)] {
                max_len(|| format!("{path}.report.{name}"), bytes.len(), POD_ID_BYTES)?;
            }
            string(path, "report.amount", &r.amount, MAX_STRING_BYTES)?;
            if let Some(u) = &r.usage {
                usage(&format!("{path}.report.usage"), u)?;
            }
        }
    }
    Ok(())
}

fn usage(path: &str, u: &pb::Usage) -> Result<(), WireError> {
    let fields = [
        ("cpu_reserved", &u.cpu_reserved),
        ("cpu_used", &u.cpu_used),
        ("memory_reserved", &u.memory_reserved),
        ("memory_used", &u.memory_used),
        ("storage_reserved", &u.storage_reserved),
        ("ingress", &u.ingress),
        ("egress", &u.egress),
    ];
    for (name, value) in fields {
        string(path, name, value, MAX_STRING_BYTES)?;
    }
    Ok(())
}

impl Validate for pb::LogsRequest {
    fn validate(&self) -> Result<(), WireError> {
        version(self.version)?;
        exact_len("pod_id", self.pod_id.len(), POD_ID_BYTES)?;
        string("", "publisher", &self.publisher, MAX_STRING_BYTES)?;
        string("", "container", &self.container, MAX_STRING_BYTES)
    }
}

impl Validate for pb::LogChunk {
    fn validate(&self) -> Result<(), WireError> {
        version(self.version)?;
        string("", "container", &self.container, MAX_STRING_BYTES)?;
        max_len(|| "data".into(), self.data.len(), MAX_LOG_CHUNK_BYTES)?;
        match &self.error {
            Some(error) => string("error", "message", &error.message, MAX_TEXT_BYTES),
            None => Ok(()),
        }
    }
}

impl Validate for pb::BlobOffer {
    fn validate(&self) -> Result<(), WireError> {
        version(self.version)?;
        string("", "cid", &self.cid, MAX_DIGEST_BYTES)
    }
}

impl Validate for pb::BlobChunk {
    fn validate(&self) -> Result<(), WireError> {
        version(self.version)?;
        max_len(|| "data".into(), self.data.len(), MAX_BLOB_CHUNK_BYTES)?;
        exact_len("prefix_sha256", self.prefix_sha256.len(), SHA256_BYTES)?;
        if self.offset.checked_add(self.data.len() as u64).is_none() {
            return Err(WireError::Inconsistent { field: "offset".into(), reason: "offset + length overflows".into() });
        }
        Ok(())
    }
}

impl Validate for pb::BlobReply {
    fn validate(&self) -> Result<(), WireError> {
        use pb::blob_reply::Result as Outcome;
        version(self.version)?;
        match &self.result {
            Some(Outcome::Error(error)) => string("error", "message", &error.message, MAX_TEXT_BYTES),
            Some(Outcome::State(_)) | None => Ok(()),
        }
    }
}

impl Validate for pb::AttestRequest {
    fn validate(&self) -> Result<(), WireError> {
        version(self.version)?;
        exact_len("nonce", self.nonce.len(), NONCE_BYTES)
    }
}

impl Validate for pb::AttestResponse {
    fn validate(&self) -> Result<(), WireError> {
        use pb::{attest_response::Result as Outcome, evidence::Tee};
        version(self.version)?;
        let evidence = match &self.result {
            Some(Outcome::Evidence(evidence)) => evidence,
            Some(Outcome::Error(error)) => return string("error", "message", &error.message, MAX_TEXT_BYTES),
            None => return Err(WireError::Missing { field: "result".into() }),
        };
        let binding =
            evidence.binding.as_ref().ok_or_else(|| WireError::Missing { field: "evidence.binding".into() })?;
        max_len(|| "evidence.binding.libp2p_public_key".into(), binding.libp2p_public_key.len(), MAX_LIBP2P_KEY_BYTES)?;
        exact_len("evidence.binding.enclave_signer", binding.enclave_signer.len(), ADDRESS_BYTES)?;
        exact_len("evidence.binding.enclave_encryption_key", binding.enclave_encryption_key.len(), X25519_KEY_BYTES)?;
        exact_len("evidence.binding.provider_binary_sha256", binding.provider_binary_sha256.len(), SHA256_BYTES)?;
        exact_len("evidence.binding.provider_config_sha256", binding.provider_config_sha256.len(), SHA256_BYTES)?;
        let report =
            |name: &str, bytes: &[u8]| max_len(|| format!("evidence.{name}"), bytes.len(), MAX_TEE_REPORT_BYTES);
        match &evidence.tee {
            Some(Tee::Snp(snp)) => {
                report("snp.report", &snp.report)?;
                report("snp.vcek", &snp.vcek)?;
                report("snp.ask", &snp.ask)?;
                report("snp.ark", &snp.ark)
            }
            Some(Tee::Tdx(tdx)) => {
                report("tdx.quote", &tdx.quote)?;
                max_len(|| "evidence.tdx.collateral".into(), tdx.collateral.len(), MAX_COLLATERAL_BYTES)
            }
            Some(Tee::Simulated(simulated)) => {
                exact_len("evidence.simulated.report_data", simulated.report_data.len(), REPORT_DATA_BYTES)?;
                exact_len("evidence.simulated.root_public_key", simulated.root_public_key.len(), ED25519_KEY_BYTES)?;
                exact_len("evidence.simulated.signature", simulated.signature.len(), ED25519_SIGNATURE_BYTES)
            }
            None => Err(WireError::Missing { field: "evidence.tee".into() }),
        }
    }
}

impl Validate for pb::ProfileRequest {
    fn validate(&self) -> Result<(), WireError> {
        version(self.version)
    }
}

impl Validate for pb::ProfileResponse {
    fn validate(&self) -> Result<(), WireError> {
        use pb::profile_response::Result as Outcome;
        version(self.version)?;
        match &self.result {
            Some(Outcome::Profile(signed)) => {
                max_len(|| "profile.profile".into(), signed.profile.len(), MAX_PROFILE_BYTES)?;
                exact_len("profile.signature", signed.signature.len(), SIGNATURE_BYTES)
            }
            Some(Outcome::Error(error)) => string("error", "message", &error.message, MAX_TEXT_BYTES),
            None => Err(WireError::Missing { field: "result".into() }),
        }
    }
}

impl Validate for pb::ProviderProfile {
    fn validate(&self) -> Result<(), WireError> {
        if self.version != PROFILE_FORMAT_VERSION {
            return Err(WireError::UnsupportedVersion { got: self.version, supported: PROFILE_FORMAT_VERSION });
        }
        for (name, value) in [
            ("registry", &self.registry),
            ("payment_address", &self.payment_address),
            ("peer_id", &self.peer_id),
            ("region", &self.region),
            ("contact", &self.contact),
            ("tee", &self.tee),
            ("min_funding", &self.min_funding),
            ("domain", &self.domain),
        ] {
            string("", name, value, MAX_STRING_BYTES)?;
        }
        max_len(|| "multiaddrs".into(), self.multiaddrs.len(), MAX_PROFILE_ADDRS)?;
        for (i, addr) in self.multiaddrs.iter().enumerate() {
            max_len(|| format!("multiaddrs[{i}]"), addr.len(), MAX_STRING_BYTES)?;
        }
        max_len(|| "pricing_tables".into(), self.pricing_tables.len(), MAX_PROFILE_TABLES)?;
        exact_len("provider_binary_sha256", self.provider_binary_sha256.len(), SHA256_BYTES)
    }
}
