//! Cryptography for confidential delivery: streaming encryption of image layers, CIDs of
//! ciphertext, and sealing keys and secrets to an attested enclave (HPKE, authenticated to the
//! publisher).

mod cid;

pub use cid::{CidError, ContentId};
