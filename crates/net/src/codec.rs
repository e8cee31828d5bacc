//! The request-response codec of the tpod protocols: `tpod-wire` framing, so that every message
//! read from the network is bounded by its protocol's size limit and validated before use.
//!
//! A request that fails those checks is not an I/O error here, which would make libp2p reset the
//! stream without a word: the provider reads it as `Err(pb::Error)` (code and reason, see
//! [`WireError::to_error`]) and answers it with the protocol's error reply. An oversized length
//! prefix is answered without reading the body.

use std::{io, marker::PhantomData};

use futures::io::{AsyncRead, AsyncWrite};
use libp2p::{StreamProtocol, request_response::Codec};
use prost::Message;
use tpod_wire::{Validate, WireError, codec::max_message_bytes, pb, read_message, write_message};

/// A [`Codec`] carrying `Req` requests and `Resp` responses as length-prefixed protobuf, with
/// the size limit of the negotiated protocol (see [`tpod_wire::codec::PROTOCOL_LIMITS`]).
///
/// Its request type is `Result<Req, pb::Error>`: a request read from the network is `Err` when it
/// was malformed, oversized or invalid, so that the provider can answer it; a requester sends
/// `Ok` (an `Err` is not a request, and writing one fails).
pub struct WireCodec<Req, Resp> {
    // `fn() -> ...` keeps the codec Send + Sync whatever the message types.
    _messages: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> Clone for WireCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<Req, Resp> Default for WireCodec<Req, Resp> {
    fn default() -> Self {
        Self { _messages: PhantomData }
    }
}

impl<Req, Resp> std::fmt::Debug for WireCodec<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WireCodec")
    }
}

/// The size limit of `protocol`; a protocol without one is a programming error, reported as an
/// I/O error since that is all the codec can return.
fn limit(protocol: &StreamProtocol) -> io::Result<usize> {
    max_message_bytes(protocol.as_ref()).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("no message size limit for protocol {protocol}"))
    })
}

fn to_io(error: WireError) -> io::Error {
    match error {
        WireError::Io(e) => e,
        WireError::Truncated => io::Error::new(io::ErrorKind::UnexpectedEof, error),
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<Req, Resp> Codec for WireCodec<Req, Resp>
where
    Req: Message + Default + Validate + Send + 'static,
    Resp: Message + Default + Validate + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Result<Req, pb::Error>;
    type Response = Resp;

    /// `Ok(Err(..))` for a request that is malformed, oversized or invalid, or ends early
    /// (the requester closed its side inside the message); `Err` only when the stream failed.
    async fn read_request<T>(&mut self, protocol: &StreamProtocol, io: &mut T) -> io::Result<Self::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_message(io, limit(protocol)?).await {
            Ok(request) => Ok(Ok(request)),
            Err(WireError::Io(error)) => Err(error),
            Err(error) => Ok(Err(error.to_error())),
        }
    }

    async fn read_response<T>(&mut self, protocol: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, limit(protocol)?).await.map_err(to_io)
    }

    async fn write_request<T>(&mut self, protocol: &StreamProtocol, io: &mut T, req: Self::Request) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let req = req.map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a refusal is not a request"))?;
        write_message(io, &req, limit(protocol)?).await.map_err(to_io)
    }

    async fn write_response<T>(&mut self, protocol: &StreamProtocol, io: &mut T, res: Resp) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, &res, limit(protocol)?).await.map_err(to_io)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use futures::io::Cursor;
    use tpod_wire::{
        codes,
        pb::{QuoteRequest, QuoteResponse},
    };

    use super::*;

    type Quote = WireCodec<QuoteRequest, QuoteResponse>;

    fn quote_protocol() -> StreamProtocol {
        StreamProtocol::new(tpod_wire::QUOTE_PROTOCOL)
    }

    async fn read_quote_request(bytes: Vec<u8>) -> Result<QuoteRequest, pb::Error> {
        Quote::default().read_request(&quote_protocol(), &mut Cursor::new(bytes)).await.expect("not an I/O error")
    }

    #[tokio::test]
    async fn request_round_trips() {
        let mut buf = Vec::new();
        let request = QuoteRequest { version: 1, resources: None, hostnames: Vec::new() };
        Quote::default().write_request(&quote_protocol(), &mut buf, Ok(request.clone())).await.unwrap();
        assert_eq!(read_quote_request(buf).await, Ok(request));
    }

    #[tokio::test]
    async fn a_refusal_cannot_be_sent_as_a_request() {
        let refusal = Err(pb::Error { code: codes::BAD_REQUEST, message: String::new() });
        let error = Quote::default().write_request(&quote_protocol(), &mut Vec::new(), refusal).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn oversized_prefix_is_refused_as_too_large_without_reading_the_body() {
        let mut frame = Vec::new();
        prost::encoding::encode_varint(tpod_wire::codec::QUOTE_MAX_BYTES as u64 + 1, &mut frame);
        let prefix_len = frame.len() as u64;
        frame.extend_from_slice(&[0; 100]);
        let mut cursor = Cursor::new(frame);
        let refusal = Quote::default().read_request(&quote_protocol(), &mut cursor).await.unwrap().unwrap_err();
        assert_eq!(refusal.code, codes::TOO_LARGE);
        assert!(refusal.message.contains("65537"), "{}", refusal.message);
        assert_eq!(cursor.position(), prefix_len, "the body must not be read");
    }

    #[tokio::test]
    async fn malformed_request_is_refused_as_bad_request() {
        // Field 1 as a length-delimited field of 0xff bytes: not a QuoteRequest.
        let refusal = read_quote_request(vec![3, 0x0a, 0xff, 0x01]).await.unwrap_err();
        assert_eq!(refusal.code, codes::BAD_REQUEST);
        assert!(refusal.message.starts_with("malformed message"), "{}", refusal.message);
    }

    #[tokio::test]
    async fn wrong_version_is_refused_as_unsupported() {
        let frame =
            QuoteRequest { version: 9, resources: None, hostnames: Vec::new() }.encode_length_delimited_to_vec();
        let refusal = read_quote_request(frame).await.unwrap_err();
        assert_eq!(refusal.code, codes::UNSUPPORTED_VERSION);
        assert!(refusal.message.contains("version 9"), "{}", refusal.message);
    }

    #[tokio::test]
    async fn invalid_response_is_invalid_data() {
        let frame = QuoteResponse { version: 9, ..Default::default() }.encode_length_delimited_to_vec();
        let error = Quote::default().read_response(&quote_protocol(), &mut Cursor::new(frame)).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn request_ending_inside_its_frame_is_refused() {
        let refusal = read_quote_request(vec![10, 1]).await.unwrap_err();
        assert_eq!(refusal.code, codes::BAD_REQUEST);
        // A response cut short is a failed stream on the requester's side.
        let error = Quote::default().read_response(&quote_protocol(), &mut Cursor::new(vec![10, 1])).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn protocol_without_limit_is_refused() {
        let protocol = StreamProtocol::new("/tpod/unknown/1");
        let error = Quote::default().read_request(&protocol, &mut Cursor::new(vec![0])).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
