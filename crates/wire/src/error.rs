//! Errors of reading, decoding and validating wire messages.

/// Why a message could not be read, decoded or accepted.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The length prefix (or an encoded message to send) exceeds the protocol's limit.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Length claimed by the prefix, or of the message to send.
        len: u64,
        /// Limit in force.
        limit: usize,
    },
    /// The stream ended before a whole message (prefix and body) was read.
    #[error("stream ended before the end of the message")]
    Truncated,
    /// The bytes are not a valid encoding of the expected message.
    #[error("malformed message: {0}")]
    Decode(String),
    /// The message's `version` is not one this crate speaks.
    #[error("unsupported message version {got} (supported: {supported})")]
    UnsupportedVersion {
        /// Version carried by the message.
        got: u32,
        /// Version this crate speaks.
        supported: u32,
    },
    /// A repeated field has too many entries, or a string/bytes field too many bytes.
    #[error("{field}: length {len} exceeds the maximum of {max}")]
    Limit {
        /// Path of the field, e.g. `pod.containers[2].env`.
        field: String,
        /// Actual length.
        len: usize,
        /// Maximum allowed.
        max: usize,
    },
    /// A fixed-size field (id, signature, address) has the wrong length.
    #[error("{field}: length {len}, expected {expected}")]
    WrongLength {
        /// Path of the field.
        field: String,
        /// Actual length.
        len: usize,
        /// Required length.
        expected: usize,
    },
    /// Fields contradict each other, e.g. a blob chunk reaching past the blob's declared size.
    #[error("{field}: {reason}")]
    Inconsistent {
        /// Path of the field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A field the message cannot do without is absent.
    #[error("{field}: missing")]
    Missing {
        /// Path of the field.
        field: String,
    },
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
