//! The Trusted Pods wire protocol between publisher and provider: libp2p protocol ids and the
//! protobuf messages they carry (`proto/`), with decoders bounded in size. Messages land here
//! with the deploy issue; the protocol names are fixed now so every crate agrees on them.

/// Protocol id for quotes: capacity and pricing offered for a resource request.
pub const QUOTE_PROTOCOL: &str = "/tpod/quote/1";
/// Protocol id for provisioning: provision, update, delete and status of a pod.
pub const PROVISION_PROTOCOL: &str = "/tpod/provision/1";
/// Protocol id for streamed pod logs.
pub const LOGS_PROTOCOL: &str = "/tpod/logs/1";
/// Protocol id for remote attestation: a nonce in, evidence out.
pub const ATTEST_PROTOCOL: &str = "/tpod/attest/1";
/// Protocol id for content-addressed encrypted blob transfer.
pub const BLOB_PROTOCOL: &str = "/tpod/blob/1";
