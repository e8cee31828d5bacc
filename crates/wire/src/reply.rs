//! Error replies: every response message of every protocol can carry a `tpod.v1.Error` instead
//! of its answer, so that a refused request always gets a code and a reason rather than a reset
//! stream. [`ErrorReply`] builds and reads that variant generically; [`WireError::to_error`]
//! turns a request that failed to decode or validate into the error to answer it with.

use crate::{VERSION, WireError, codes, limits::MAX_TEXT_BYTES, pb};

/// A response message with an error variant.
pub trait ErrorReply: Sized {
    /// The response that refuses a request with `error` (and, for a streamed protocol, ends
    /// the stream).
    fn refusal(error: pb::Error) -> Self;
    /// The error this response carries, if it is a refusal.
    fn as_refusal(&self) -> Option<&pb::Error>;
}

impl ErrorReply for pb::QuoteResponse {
    fn refusal(error: pb::Error) -> Self {
        // `reason` too, for a reader that predates `error`: it sees an unavailable provider
        // and why.
        Self {
            version: VERSION,
            available: false,
            reason: error.message.clone(),
            error: Some(error),
            ..Default::default()
        }
    }

    fn as_refusal(&self) -> Option<&pb::Error> {
        self.error.as_ref()
    }
}

impl ErrorReply for pb::AttestResponse {
    fn refusal(error: pb::Error) -> Self {
        Self { version: VERSION, result: Some(pb::attest_response::Result::Error(error)) }
    }

    fn as_refusal(&self) -> Option<&pb::Error> {
        match &self.result {
            Some(pb::attest_response::Result::Error(error)) => Some(error),
            _ => None,
        }
    }
}

impl ErrorReply for pb::ProvisionResponse {
    fn refusal(error: pb::Error) -> Self {
        Self { version: VERSION, result: Some(pb::provision_response::Result::Error(error)) }
    }

    fn as_refusal(&self) -> Option<&pb::Error> {
        match &self.result {
            Some(pb::provision_response::Result::Error(error)) => Some(error),
            _ => None,
        }
    }
}

impl ErrorReply for pb::ProfileResponse {
    fn refusal(error: pb::Error) -> Self {
        Self { version: VERSION, result: Some(pb::profile_response::Result::Error(error)) }
    }

    fn as_refusal(&self) -> Option<&pb::Error> {
        match &self.result {
            Some(pb::profile_response::Result::Error(error)) => Some(error),
            _ => None,
        }
    }
}

impl ErrorReply for pb::BlobReply {
    fn refusal(error: pb::Error) -> Self {
        Self { version: VERSION, result: Some(pb::blob_reply::Result::Error(error)) }
    }

    fn as_refusal(&self) -> Option<&pb::Error> {
        match &self.result {
            Some(pb::blob_reply::Result::Error(error)) => Some(error),
            _ => None,
        }
    }
}

impl ErrorReply for pb::LogChunk {
    fn refusal(error: pb::Error) -> Self {
        Self { version: VERSION, end: true, error: Some(error), ..Default::default() }
    }

    fn as_refusal(&self) -> Option<&pb::Error> {
        self.error.as_ref()
    }
}

impl WireError {
    /// The error code answering a request that failed this way (see [`codes`]).
    pub fn code(&self) -> u32 {
        match self {
            Self::TooLarge { .. } | Self::Limit { .. } => codes::TOO_LARGE,
            Self::UnsupportedVersion { .. } => codes::UNSUPPORTED_VERSION,
            Self::Truncated
            | Self::Decode(_)
            | Self::WrongLength { .. }
            | Self::Inconsistent { .. }
            | Self::Missing { .. } => codes::BAD_REQUEST,
            // Nobody is left to answer when the stream itself failed; for completeness.
            Self::Io(_) => codes::INTERNAL,
        }
    }

    /// The error reply for a request that failed this way: the code and this error's message,
    /// which names the offending field.
    pub fn to_error(&self) -> pb::Error {
        pb::Error { code: self.code(), message: bounded_text(self.to_string()) }
    }
}

/// `text` cut to [`MAX_TEXT_BYTES`] (on a character boundary), so that the reply validates.
pub fn bounded_text(mut text: String) -> String {
    if text.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Validate;

    fn error() -> pb::Error {
        pb::Error { code: codes::BUSY, message: "try later".into() }
    }

    /// Every refusal validates, and reads back as the same error.
    fn check<R: ErrorReply + Validate>() {
        let reply = R::refusal(error());
        reply.validate().unwrap();
        assert_eq!(reply.as_refusal(), Some(&error()));
    }

    #[test]
    fn refusals_validate_and_read_back() {
        check::<pb::QuoteResponse>();
        check::<pb::AttestResponse>();
        check::<pb::ProvisionResponse>();
        check::<pb::ProfileResponse>();
        check::<pb::BlobReply>();
        check::<pb::LogChunk>();
        assert!(pb::LogChunk::refusal(error()).end, "a refused log stream ends");
        assert_eq!(pb::QuoteResponse::refusal(error()).reason, "try later");
        assert_eq!(pb::QuoteResponse::default().as_refusal(), None);
    }

    #[test]
    fn wire_errors_map_to_codes() {
        let too_large = WireError::TooLarge { len: 10, limit: 5 };
        assert_eq!(too_large.code(), codes::TOO_LARGE);
        let limit = WireError::Limit { field: "pod.containers".into(), len: 17, max: 16 };
        let error = limit.to_error();
        assert_eq!(error.code, codes::TOO_LARGE);
        assert!(error.message.contains("pod.containers"), "{}", error.message);
        assert_eq!(WireError::UnsupportedVersion { got: 2, supported: 1 }.code(), codes::UNSUPPORTED_VERSION);
        assert_eq!(WireError::Missing { field: "result".into() }.code(), codes::BAD_REQUEST);
        assert_eq!(WireError::Truncated.code(), codes::BAD_REQUEST);
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_TEXT_BYTES);
        let cut = bounded_text(text);
        assert!(cut.len() <= MAX_TEXT_BYTES && cut.len() >= MAX_TEXT_BYTES - 1);
        assert!(cut.chars().all(|c| c == 'é'));
        let error = WireError::Decode("x".repeat(2 * MAX_TEXT_BYTES)).to_error();
        assert!(error.message.len() <= MAX_TEXT_BYTES);
    }
}
