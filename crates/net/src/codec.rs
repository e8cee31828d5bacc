//! The request-response codec of the tpod protocols: `tpod-wire` framing, so that every message
//! read from the network is bounded by its protocol's size limit and validated before use.

use std::{io, marker::PhantomData};

use futures::io::{AsyncRead, AsyncWrite};
use libp2p::{StreamProtocol, request_response::Codec};
use prost::Message;
use tpod_wire::{Validate, WireError, codec::max_message_bytes, read_message, write_message};

/// A [`Codec`] carrying `Req` requests and `Resp` responses as length-prefixed protobuf, with
/// the size limit of the negotiated protocol (see [`tpod_wire::codec::PROTOCOL_LIMITS`]).
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
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, protocol: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, limit(protocol)?).await.map_err(to_io)
    }

    async fn read_response<T>(&mut self, protocol: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io, limit(protocol)?).await.map_err(to_io)
    }

    async fn write_request<T>(&mut self, protocol: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
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
    use tpod_wire::pb::{QuoteRequest, QuoteResponse};

    use super::*;

    type Quote = WireCodec<QuoteRequest, QuoteResponse>;

    fn quote_protocol() -> StreamProtocol {
        StreamProtocol::new(tpod_wire::QUOTE_PROTOCOL)
    }

    #[tokio::test]
    async fn request_round_trips() {
        let mut buf = Vec::new();
        let request = QuoteRequest { version: 1, resources: None };
        Quote::default().write_request(&quote_protocol(), &mut buf, request).await.unwrap();
        let read = Quote::default().read_request(&quote_protocol(), &mut Cursor::new(buf)).await.unwrap();
        assert_eq!(read, request);
    }

    #[tokio::test]
    async fn oversized_prefix_is_invalid_data() {
        let mut frame = Vec::new();
        prost::encoding::encode_varint(tpod_wire::codec::QUOTE_MAX_BYTES as u64 + 1, &mut frame);
        let error = Quote::default().read_request(&quote_protocol(), &mut Cursor::new(frame)).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn invalid_version_is_invalid_data() {
        let frame = QuoteResponse { version: 9, ..Default::default() }.encode_length_delimited_to_vec();
        let error = Quote::default().read_response(&quote_protocol(), &mut Cursor::new(frame)).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn truncated_frame_is_unexpected_eof() {
        let error = Quote::default().read_request(&quote_protocol(), &mut Cursor::new(vec![10, 1])).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn protocol_without_limit_is_refused() {
        let protocol = StreamProtocol::new("/tpod/unknown/1");
        let error = Quote::default().read_request(&protocol, &mut Cursor::new(vec![0])).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
