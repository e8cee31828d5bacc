//! The error codes of `tpod.v1.Error`, defined once for every protocol and every side.
//!
//! They borrow the meaning of the HTTP status codes of the same number, so that a developer
//! reading a refusal knows at a glance whose fault it is: 4xx the request (fix it, or ask again
//! later for 409 and 429), 5xx the provider. `docs/PROTOCOL.md` lists them with when each is
//! used; a unit test keeps that table and [`ALL`] equal.

/// The request is malformed: not protobuf, a fixed-size field of the wrong length, a required
/// field missing, fields contradicting each other, a stream ending inside the message, or
/// content the provider cannot accept (a bad pod definition, a bad CID).
pub const BAD_REQUEST: u32 = 400;
/// The signature does not recover to a key allowed to act, or the request expired or was
/// replayed (its nonce was used).
pub const UNAUTHORIZED: u32 = 401;
/// The payment channel does not meet the provider's terms (missing, underfunded, unlocking,
/// wrong enclave signer).
pub const PAYMENT_REQUIRED: u32 = 402;
/// No such pod on this provider (or, from a provider that serves none, no profile).
pub const NOT_FOUND: u32 = 404;
/// The request contradicts the provider's state: the pod exists, a host name is taken, a blob
/// chunk is not at the offset the provider expects. Asking again after re-reading the state
/// may succeed.
pub const CONFLICT: u32 = 409;
/// Too large: the length prefix exceeds the protocol's limit (the body is not read), a field
/// exceeds its limit, or a blob exceeds what the provider takes.
pub const TOO_LARGE: u32 = 413;
/// The content does not match its checksum or its CID.
pub const UNPROCESSABLE: u32 = 422;
/// Too many streams of this kind are open (from this peer or in all): try again later.
pub const BUSY: u32 = 429;
/// The provider failed while handling a well-formed request.
pub const INTERNAL: u32 = 500;
/// The provider cannot do this now, e.g. it has not published a profile yet.
pub const UNAVAILABLE: u32 = 503;
/// The provider's own handling of the request did not finish in time.
pub const TIMEOUT: u32 = 504;
/// The message's `version` is not one the provider speaks; the reply carries the version it
/// does speak.
pub const UNSUPPORTED_VERSION: u32 = 505;
/// Not enough capacity: free CPU, memory or storage for a pod, or space for blobs.
pub const INSUFFICIENT_STORAGE: u32 = 507;

/// Every code above, with its constant's name, in increasing order.
pub const ALL: &[(u32, &str)] = &[
    (BAD_REQUEST, "BAD_REQUEST"),
    (UNAUTHORIZED, "UNAUTHORIZED"),
    (PAYMENT_REQUIRED, "PAYMENT_REQUIRED"),
    (NOT_FOUND, "NOT_FOUND"),
    (CONFLICT, "CONFLICT"),
    (TOO_LARGE, "TOO_LARGE"),
    (UNPROCESSABLE, "UNPROCESSABLE"),
    (BUSY, "BUSY"),
    (INTERNAL, "INTERNAL"),
    (UNAVAILABLE, "UNAVAILABLE"),
    (TIMEOUT, "TIMEOUT"),
    (UNSUPPORTED_VERSION, "UNSUPPORTED_VERSION"),
    (INSUFFICIENT_STORAGE, "INSUFFICIENT_STORAGE"),
];

/// The constant's name of `code`, if it is one of [`ALL`].
pub fn name(code: u32) -> Option<&'static str> {
    ALL.iter().find(|(c, _)| *c == code).map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_increasing_and_named() {
        assert!(ALL.windows(2).all(|w| w[0].0 < w[1].0), "ALL must be sorted without duplicates");
        assert_eq!(name(TOO_LARGE), Some("TOO_LARGE"));
        assert_eq!(name(418), None);
    }
}
