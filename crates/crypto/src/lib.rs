//! Cryptography for confidential delivery: streaming encryption of image layers, CIDs of
//! ciphertext, and sealing keys and secrets to an attested enclave (HPKE, authenticated to the
//! publisher). Filled in by the confidential-delivery issue.
