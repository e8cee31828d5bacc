//! Cryptography for confidential delivery:
//!
//! - [`seal`](mod@seal): sealing small secrets (image keys, pod secrets) to an attested
//!   enclave's X25519 key with HPKE (RFC 9180) in auth mode, so the enclave also knows who
//!   sealed them.
//! - [`stream`](mod@stream): encrypting image layers and other large blobs in authenticated
//!   64 KiB segments (STREAM over ChaCha20Poly1305), in bounded memory, with a reader that
//!   returns only authenticated plaintext.
//! - [`ContentId`]: the CIDv1 (raw, sha2-256) of a blob's ciphertext, under which it is stored
//!   and fetched.

mod cid;
pub mod seal;
pub mod stream;

pub use cid::{CidError, ContentId};
pub use seal::{MAX_SEALED_PLAINTEXT, PublicKey, Purpose, SealError, Sealed, SecretKey, open, seal, sealing_aad};
pub use stream::{BlobKey, DecryptingReader, SEGMENT_BYTES, StreamError, TAG_BYTES, ciphertext_len, encrypt};
