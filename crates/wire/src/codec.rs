//! Length-delimited framing of protobuf messages on byte streams (libp2p substreams implement
//! `futures::io::AsyncRead`/`AsyncWrite`), with decoding bounded before anything is allocated.
//!
//! A frame is an unsigned LEB128 varint length followed by that many bytes of protobuf. The
//! reader refuses a length above the caller's limit as soon as the prefix is read, so a peer
//! cannot make us allocate more than the limit, then decodes and [`Validate`]s the message.
//! Timeouts are the caller's concern: a slow peer can hold a read open but not grow memory.

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use prost::{Message, bytes::Bytes};

use crate::{
    ATTEST_PROTOCOL, BLOB_PROTOCOL, LOGS_PROTOCOL, PROFILE_PROTOCOL, PROVISION_PROTOCOL, QUOTE_PROTOCOL, Validate,
    WireError, limits,
};

/// Largest message of the quote protocol: a request or a pricing table.
pub const QUOTE_MAX_BYTES: usize = 64 * 1024;
/// Largest message of the provision protocol: a pod definition, which may carry sealed secrets.
pub const PROVISION_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Largest message of the logs protocol: a request or one chunk of log output (whose data is
/// capped lower, at [`limits::MAX_LOG_CHUNK_BYTES`], by validation).
pub const LOGS_MAX_BYTES: usize = 1024 * 1024;
/// Largest message of the blob protocol: one chunk of [`limits::MAX_BLOB_CHUNK_BYTES`] plus room
/// for its offset, checksum and framing.
pub const BLOB_MAX_BYTES: usize = limits::MAX_BLOB_CHUNK_BYTES + 4 * 1024;
/// Largest message of the attestation protocol: evidence, whose TDX collateral (TCB info, QE
/// identity, CRLs, certificate chains) is the bulk.
pub const ATTEST_MAX_BYTES: usize = 256 * 1024;
/// Largest message of the profile protocol: a signed profile, which is a few hundred bytes.
pub const PROFILE_MAX_BYTES: usize = 16 * 1024;
/// Largest message of any protocol in this crate.
pub const MAX_MESSAGE_BYTES: usize = PROVISION_MAX_BYTES;

/// Per-protocol message size limits, by libp2p protocol id.
pub const PROTOCOL_LIMITS: &[(&str, usize)] = &[
    (QUOTE_PROTOCOL, QUOTE_MAX_BYTES),
    (PROVISION_PROTOCOL, PROVISION_MAX_BYTES),
    (LOGS_PROTOCOL, LOGS_MAX_BYTES),
    (BLOB_PROTOCOL, BLOB_MAX_BYTES),
    (ATTEST_PROTOCOL, ATTEST_MAX_BYTES),
    (PROFILE_PROTOCOL, PROFILE_MAX_BYTES),
];

/// The message size limit of a protocol id, if it is one of the protobuf protocols.
pub fn max_message_bytes(protocol: &str) -> Option<usize> {
    PROTOCOL_LIMITS.iter().find(|(id, _)| *id == protocol).map(|(_, limit)| *limit)
}

/// A varint of a `u64` takes at most 10 bytes; more is malformed.
const MAX_VARINT_BYTES: usize = 10;

/// Decodes and validates one message from a complete buffer (e.g. a `SignedRequest` payload).
pub fn decode<M: Message + Default + Validate>(bytes: &[u8]) -> Result<M, WireError> {
    let message = M::decode(bytes).map_err(|e| WireError::Decode(e.to_string()))?;
    message.validate()?;
    Ok(message)
}

/// Reads one length-prefixed message of at most `limit` bytes, then decodes and validates it.
///
/// A prefix above `limit` is refused ([`WireError::TooLarge`]) before the body is read or any
/// buffer allocated; a stream ending early gives [`WireError::Truncated`].
pub async fn read_message<M, R>(stream: &mut R, limit: usize) -> Result<M, WireError>
where
    M: Message + Default + Validate,
    R: AsyncRead + Unpin,
{
    let len = read_length(stream, limit).await?;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.map_err(eof_is_truncated)?;
    // Decoding from `Bytes` lets `bytes` fields (a blob chunk's data) share the frame's buffer
    // rather than copy out of it.
    let message = M::decode(Bytes::from(body)).map_err(|e| WireError::Decode(e.to_string()))?;
    message.validate()?;
    Ok(message)
}

/// Writes one length-prefixed message and flushes. Refuses ([`WireError::TooLarge`]) a message
/// over `limit`, since the peer would refuse it anyway.
pub async fn write_message<M, W>(stream: &mut W, message: &M, limit: usize) -> Result<(), WireError>
where
    M: Message,
    W: AsyncWrite + Unpin,
{
    let len = message.encoded_len();
    if len > limit {
        return Err(WireError::TooLarge { len: len as u64, limit });
    }
    let frame = message.encode_length_delimited_to_vec();
    stream.write_all(&frame).await?;
    stream.flush().await?;
    Ok(())
}

/// Reads the varint length prefix byte by byte (nothing past the prefix is consumed) and checks
/// it against `limit`.
async fn read_length<R: AsyncRead + Unpin>(stream: &mut R, limit: usize) -> Result<usize, WireError> {
    let mut value: u64 = 0;
    for i in 0..MAX_VARINT_BYTES {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.map_err(eof_is_truncated)?;
        let bits = u64::from(byte[0] & 0x7f);
        let shift = 7 * i as u32;
        // The tenth byte may only carry the top bit of a u64.
        if i == MAX_VARINT_BYTES - 1 && bits > 1 {
            return Err(WireError::Decode("length prefix overflows u64".into()));
        }
        value |= bits << shift;
        if byte[0] & 0x80 == 0 {
            return match usize::try_from(value) {
                Ok(len) if len <= limit => Ok(len),
                _ => Err(WireError::TooLarge { len: value, limit }),
            };
        }
    }
    Err(WireError::Decode("length prefix longer than 10 bytes".into()))
}

fn eof_is_truncated(error: std::io::Error) -> WireError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof { WireError::Truncated } else { WireError::Io(error) }
}
