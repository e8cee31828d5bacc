//! End-to-end tests over real TCP on 127.0.0.1 with real noise and yamux.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    collections::HashMap,
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt, stream::BoxStream};
use libp2p::{
    StreamProtocol, SwarmBuilder, noise,
    request_response::{self, Codec, ProtocolSupport},
    swarm::{SwarmEvent, dial_opts::DialOpts},
    tcp, yamux,
};
use prost::Message;
use sha2::{Digest as _, Sha256};
use tpod_crypto::ContentId;
use tpod_net::{
    Client, Handler, Keypair, Multiaddr, NetConfig, NetError, PeerId, Progress, Provider, PushReport, RequestError,
    RequestErrorKind, generate_keypair,
};
use tpod_wire::{
    ErrorReply, Validate,
    codec::{BLOB_MAX_BYTES, MAX_MESSAGE_BYTES},
    codes,
    limits::{MAX_BLOB_CHUNK_BYTES, MAX_LOG_CHUNK_BYTES},
    pb::{
        self, BlobChunk, BlobOffer, BlobReply, BlobState, LogChunk, LogsRequest, ProfileRequest, ProfileResponse,
        ProvisionResponse, QuoteRequest, QuoteResponse, Resources, SignedProfile, SignedRequest, blob_reply,
        profile_response, provision_response,
    },
    read_message, write_message,
};

/// Answers quotes with the requested cpu echoed as free capacity; records provision callers;
/// serves `profile` once one is set (503 before); serves logs (see [`TestHandler::logs`]) and
/// keeps blobs in memory (see [`TestHandler::blob_chunk`]).
#[derive(Clone, Default)]
struct TestHandler {
    quotes: Arc<AtomicUsize>,
    provision_peers: Arc<Mutex<Vec<PeerId>>>,
    hang: bool,
    log_requests: Arc<AtomicUsize>,
    /// Set by the follow-mode producer when it notices nobody reads its chunks any more.
    log_producer_stopped: Arc<AtomicBool>,
    blobs: Arc<Mutex<HashMap<String, MemBlob>>>,
    /// Every offer answered: the CID and the bytes held then.
    blob_offers: Arc<Mutex<Vec<(String, u64)>>>,
    /// The offset of every chunk stored, in order.
    stored_chunks: Arc<Mutex<Vec<u64>>>,
    /// A chunk at this offset is refused once, with code 500, as a provider failing would.
    refuse_chunk_at: Arc<Mutex<Option<u64>>>,
    /// A chunk at this offset is never answered (once): `stalled` is notified instead, so that
    /// the test can cut the connection while the upload is under way.
    stall_chunk_at: Arc<Mutex<Option<u64>>>,
    stalled: Arc<tokio::sync::Notify>,
    profile: Arc<Mutex<Option<SignedProfile>>>,
    profile_requests: Arc<AtomicUsize>,
}

/// A blob held in memory, with the running hash of what was received.
#[derive(Default)]
struct MemBlob {
    data: Vec<u8>,
    hasher: Sha256,
    complete: bool,
}

fn blob_error(code: u32, message: impl Into<String>) -> pb::Error {
    pb::Error { code, message: message.into() }
}

/// The log lines a non-following stream sends: numbered lines, then one line larger than a
/// chunk, which the provider must split.
fn log_lines() -> Vec<Vec<u8>> {
    let mut lines: Vec<Vec<u8>> = (0..20).map(|i| format!("line {i}\n").into_bytes()).collect();
    lines.push(vec![b'x'; 3 * MAX_LOG_CHUNK_BYTES + 5]);
    lines
}

fn chunk(data: Vec<u8>) -> LogChunk {
    LogChunk { version: 1, container: "app".into(), data, ..Default::default() }
}

impl Handler for TestHandler {
    /// Answers with an error that echoes the nonce and the asking peer, so a test sees both
    /// crossed the wire.
    async fn attest(&self, peer: PeerId, request: pb::AttestRequest) -> pb::AttestResponse {
        let message = format!("no TEE here; nonce {} from {peer}", hex(&request.nonce));
        pb::AttestResponse {
            version: 1,
            result: Some(pb::attest_response::Result::Error(pb::Error { code: codes::UNAVAILABLE, message })),
        }
    }

    async fn quote(&self, _peer: PeerId, request: QuoteRequest) -> QuoteResponse {
        self.quotes.fetch_add(1, Ordering::SeqCst);
        if self.hang {
            std::future::pending::<()>().await;
        }
        QuoteResponse { version: 1, available: true, free: request.resources, chain_id: 31337, ..Default::default() }
    }

    async fn provision(&self, peer: PeerId, request: SignedRequest) -> ProvisionResponse {
        self.provision_peers.lock().unwrap().push(peer);
        let status = pb::PodStatus { state: format!("payload {} bytes", request.payload.len()), ..Default::default() };
        ProvisionResponse { version: 1, result: Some(provision_response::Result::Status(status)) }
    }

    async fn profile(&self, _peer: PeerId, _request: ProfileRequest) -> ProfileResponse {
        self.profile_requests.fetch_add(1, Ordering::SeqCst);
        match self.profile.lock().unwrap().clone() {
            Some(signed) => ProfileResponse { version: 1, result: Some(profile_response::Result::Profile(signed)) },
            None => ProfileResponse::refusal(pb::Error {
                code: codes::UNAVAILABLE,
                message: "this provider has not published a profile yet".into(),
            }),
        }
    }

    /// Refuses a request whose signature starts with 0 ("wrong signer"); otherwise sends
    /// [`log_lines`], or, when following, numbered lines every 20 ms until nobody listens.
    async fn logs(&self, _peer: PeerId, request: SignedRequest) -> Result<BoxStream<'static, LogChunk>, pb::Error> {
        self.log_requests.fetch_add(1, Ordering::SeqCst);
        if request.signature[0] == 0 {
            return Err(pb::Error { code: codes::UNAUTHORIZED, message: "wrong signer".into() });
        }
        let logs: LogsRequest =
            tpod_wire::decode(&request.payload).map_err(|e| pb::Error { code: 400, message: e.to_string() })?;
        if !logs.follow {
            return Ok(futures::stream::iter(log_lines().into_iter().map(chunk)).boxed());
        }
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let stopped = self.log_producer_stopped.clone();
        tokio::spawn(async move {
            for i in 0.. {
                if tx.send(chunk(format!("follow {i}\n").into_bytes())).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            stopped.store(true, Ordering::SeqCst);
        });
        Ok(futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) }).boxed())
    }

    /// Refuses the blob [`full_cid`] as a provider out of space would; otherwise says what it
    /// holds.
    async fn blob_offer(&self, _peer: PeerId, offer: BlobOffer) -> Result<BlobState, pb::Error> {
        if offer.cid == full_cid().to_string() {
            return Err(blob_error(507, "no space left for blobs"));
        }
        let blobs = self.blobs.lock().unwrap();
        let state = match blobs.get(&offer.cid) {
            Some(blob) => BlobState { complete: blob.complete, received: blob.data.len() as u64 },
            None => BlobState::default(),
        };
        self.blob_offers.lock().unwrap().push((offer.cid, state.received));
        Ok(state)
    }

    /// A blob store in memory with the provider's checks: chunks in order, each with the sha256
    /// of the blob up to its end, and the whole matching its CID (or it is dropped), plus the
    /// test hooks.
    async fn blob_chunk(
        &self,
        _peer: PeerId,
        cid: &str,
        total_size: u64,
        chunk: BlobChunk,
    ) -> Result<BlobState, pb::Error> {
        if self.stall_chunk_at.lock().unwrap().take_if(|at| *at == chunk.offset).is_some() {
            self.stalled.notify_one();
            std::future::pending::<()>().await;
        }
        if self.refuse_chunk_at.lock().unwrap().take_if(|at| *at == chunk.offset).is_some() {
            return Err(blob_error(500, "the disk is on fire"));
        }
        let mut blobs = self.blobs.lock().unwrap();
        let blob = blobs.entry(cid.to_owned()).or_default();
        if blob.complete {
            return Ok(BlobState { complete: true, received: blob.data.len() as u64 });
        }
        if chunk.offset != blob.data.len() as u64 {
            return Err(blob_error(409, format!("wrong offset {}, have {}", chunk.offset, blob.data.len())));
        }
        if blob.hasher.clone().chain_update(&chunk.data).finalize()[..] != chunk.prefix_sha256[..] {
            return Err(blob_error(422, format!("chunk at offset {} does not match its sha256", chunk.offset)));
        }
        blob.data.extend_from_slice(&chunk.data);
        blob.hasher.update(&chunk.data);
        self.stored_chunks.lock().unwrap().push(chunk.offset);
        let received = blob.data.len() as u64;
        if received == total_size {
            let actual = ContentId::from_sha256(blob.hasher.clone().finalize().into());
            if actual.to_string() != cid {
                blobs.remove(cid);
                return Err(blob_error(422, format!("content does not match its CID {cid}: got {actual}")));
            }
            blob.complete = true;
        }
        Ok(BlobState { complete: blob.complete, received })
    }
}

fn localhost() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

fn quote_request(cpu_millis: u64) -> QuoteRequest {
    QuoteRequest { version: 1, resources: Some(Resources { cpu_millis, ..Default::default() }), hostnames: Vec::new() }
}

async fn provider(handler: TestHandler) -> Provider {
    Provider::listen(generate_keypair(), localhost(), handler).await.unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn attest_round_trip() {
    let provider = provider(TestHandler::default()).await;
    let client = Client::connect(generate_keypair()).unwrap();
    let request = pb::AttestRequest { version: 1, nonce: vec![0xab; 32] };
    // The handler's error reply is the call's error, with its code and reason.
    let error = client.attest(provider.peer_id(), provider.listen_addr().clone(), request).await.unwrap_err();
    let expected = format!("no TEE here; nonce {} from {}", "ab".repeat(32), client.peer_id());
    assert_eq!(error.refusal(), Some((codes::UNAVAILABLE, expected.as_str())), "{error}");

    // A nonce of the wrong size never reaches the handler: the provider answers 400 naming it.
    let request = pb::AttestRequest { version: 1, nonce: vec![0xab; 31] };
    let error = client.attest(provider.peer_id(), provider.listen_addr().clone(), request).await.unwrap_err();
    let (code, message) = error.refusal().expect("an error reply");
    assert_eq!((code, message), (codes::BAD_REQUEST, "nonce: length 31, expected 32"), "{error}");
}

#[tokio::test]
async fn quote_round_trip() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let client = Client::connect(generate_keypair()).unwrap();

    let response = client.quote(provider.peer_id(), provider.listen_addr().clone(), quote_request(1500)).await.unwrap();
    assert!(response.available);
    assert_eq!(response.free.unwrap().cpu_millis, 1500);
    assert_eq!(response.chain_id, 31337);

    // A second request reuses the connection and still works.
    let response = client.quote(provider.peer_id(), provider.listen_addr().clone(), quote_request(7)).await.unwrap();
    assert_eq!(response.free.unwrap().cpu_millis, 7);
    assert_eq!(handler.quotes.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn provision_round_trip_sees_client_peer_id() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let client = Client::connect(generate_keypair()).unwrap();

    let request = SignedRequest { version: 1, payload: vec![7; 100], signature: vec![1; 65] };
    let response = client.provision(provider.peer_id(), provider.listen_addr().clone(), request).await.unwrap();
    match response.result {
        Some(provision_response::Result::Status(status)) => assert_eq!(status.state, "payload 100 bytes"),
        other => panic!("unexpected result {other:?}"),
    }
    assert_eq!(*handler.provision_peers.lock().unwrap(), vec![client.peer_id()]);
}

#[tokio::test]
async fn invalid_request_is_refused_by_the_provider() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let client = Client::connect(generate_keypair()).unwrap();

    // A 64-byte signature is not a valid SignedRequest: the provider refuses it before the
    // handler runs, with an error reply naming the field.
    let request = SignedRequest { version: 1, payload: vec![], signature: vec![1; 64] };
    let error = client.provision(provider.peer_id(), provider.listen_addr().clone(), request).await.unwrap_err();
    let request_error = error.as_request().expect("a request error");
    assert_eq!(request_error.protocol, "/tpod/provision/1");
    assert_eq!(error.refusal(), Some((codes::BAD_REQUEST, "signature: length 64, expected 65")), "{error}");
    // What a user reads says who refused, what and why, with the code.
    let shown = error.to_string();
    for part in ["/tpod/provision/1", "refused by the provider", "signature: length 64, expected 65", "code 400"] {
        assert!(shown.contains(part), "{shown:?} lacks {part:?}");
    }
    assert!(handler.provision_peers.lock().unwrap().is_empty());
}

#[tokio::test]
async fn quote_of_another_version_is_refused_with_the_version_spoken() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let client = Client::connect(generate_keypair()).unwrap();

    let request = QuoteRequest { version: 2, resources: None, hostnames: Vec::new() };
    let error = client.quote(provider.peer_id(), provider.listen_addr().clone(), request).await.unwrap_err();
    let (code, message) = error.refusal().expect("an error reply");
    assert_eq!(code, codes::UNSUPPORTED_VERSION, "{error}");
    assert_eq!(message, "unsupported message version 2 (supported: 1)");
    assert!(error.to_string().contains("code 505"), "{error}");
    assert_eq!(handler.quotes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn profile_round_trip() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let client = Client::connect(generate_keypair()).unwrap();
    let (peer, addr) = (provider.peer_id(), provider.listen_addr().clone());

    // None published yet: the handler's 503 reaches the caller as a refusal.
    let error = client.profile(peer, addr.clone(), ProfileRequest { version: 1 }).await.unwrap_err();
    assert_eq!(error.refusal(), Some((codes::UNAVAILABLE, "this provider has not published a profile yet")));
    assert_eq!(error.as_request().unwrap().protocol, "/tpod/profile/1");

    let profile = pb::ProviderProfile {
        version: 1,
        chain_id: 31337,
        peer_id: peer.to_string(),
        multiaddrs: vec![addr.to_string()],
        provider_binary_sha256: vec![7; 32],
        ..Default::default()
    };
    let signed = SignedProfile { profile: profile.encode_to_vec(), signature: vec![0x1b; 65] };
    *handler.profile.lock().unwrap() = Some(signed.clone());
    let response = client.profile(peer, addr.clone(), ProfileRequest { version: 1 }).await.unwrap();
    let Some(profile_response::Result::Profile(received)) = response.result else { panic!("{response:?}") };
    // The exact bytes the signature covers come through untouched.
    assert_eq!(received, signed);
    assert_eq!(tpod_wire::decode::<pb::ProviderProfile>(&received.profile).unwrap(), profile);

    // Another version never reaches the handler.
    let error = client.profile(peer, addr, ProfileRequest { version: 7 }).await.unwrap_err();
    assert_eq!(error.refusal().map(|(code, _)| code), Some(codes::UNSUPPORTED_VERSION), "{error}");
    assert_eq!(handler.profile_requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn wrong_peer_id_is_refused() {
    let provider = provider(TestHandler::default()).await;
    let client = Client::connect(generate_keypair()).unwrap();
    let impostor = generate_keypair().public().to_peer_id();

    let error = client.quote(impostor, provider.listen_addr().clone(), quote_request(1)).await.unwrap_err();
    match error.as_request() {
        Some(RequestError { peer, protocol, kind: RequestErrorKind::WrongPeer { obtained, address } }) => {
            assert_eq!(*peer, impostor);
            assert_eq!(*protocol, "/tpod/quote/1");
            assert_eq!(*obtained, provider.peer_id());
            // The dialed address, with the expected peer id appended by the swarm.
            assert!(address.to_string().starts_with(&provider.listen_addr().to_string()), "{address}");
        }
        _ => panic!("expected WrongPeer, got {error}"),
    }
    assert!(error.to_string().contains(&impostor.to_string()), "{error}");
}

#[tokio::test]
async fn unreachable_address_is_a_dial_error() {
    let client = Client::connect(generate_keypair()).unwrap();
    let peer = generate_keypair().public().to_peer_id();
    // Port 1 on localhost: connection refused.
    let error = client.quote(peer, "/ip4/127.0.0.1/tcp/1".parse().unwrap(), quote_request(1)).await.unwrap_err();
    let request_error = error.as_request().expect("a request error");
    assert_eq!(request_error.protocol, "/tpod/quote/1");
    assert!(matches!(request_error.kind, RequestErrorKind::Dial(_)), "{error}");
}

#[tokio::test]
async fn handler_that_never_answers_times_out() {
    let handler = TestHandler { hang: true, ..Default::default() };
    let provider = provider(handler.clone()).await;
    let config = NetConfig { request_timeout: Duration::from_millis(500), ..Default::default() };
    let client = Client::connect_with(generate_keypair(), config).unwrap();

    let started = std::time::Instant::now();
    let error = client.quote(provider.peer_id(), provider.listen_addr().clone(), quote_request(1)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    match error.as_request() {
        Some(RequestError { peer, protocol, kind: RequestErrorKind::Timeout(_) }) => {
            assert_eq!(*peer, provider.peer_id());
            assert_eq!(*protocol, "/tpod/quote/1");
        }
        _ => panic!("expected Timeout, got {error}"),
    }
    assert!(error.to_string().contains("/tpod/quote/1"), "{error}");
    assert_eq!(handler.quotes.load(Ordering::SeqCst), 1);
}

/// Writes arbitrary bytes on a stream and reads whatever comes back, to play a hostile peer.
#[derive(Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
    ) -> io::Result<Vec<u8>> {
        Err(io::ErrorKind::Unsupported.into())
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        io.take(1 << 20).read_to_end(&mut buf).await?;
        Ok(buf)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&req).await?;
        io.flush().await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Sends `bytes` on a raw `protocol` stream; returns the bytes read back, or the failure.
async fn send_raw(protocol: &'static str, peer: PeerId, addr: Multiaddr, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let behaviour = request_response::Behaviour::<RawCodec>::new(
        [(StreamProtocol::new(protocol), ProtocolSupport::Outbound)],
        request_response::Config::default().with_request_timeout(Duration::from_secs(5)),
    );
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| behaviour)
        .unwrap()
        .build();
    swarm.behaviour_mut().send_request_with_addresses(&peer, bytes, vec![addr]);
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::Behaviour(request_response::Event::Message {
                message: request_response::Message::Response { response, .. },
                ..
            }) => return Ok(response),
            SwarmEvent::Behaviour(request_response::Event::OutboundFailure { error, .. }) => {
                return Err(error.to_string());
            }
            _ => {}
        }
    }
}

/// Frames no handler may see, each with the code the provider must answer it with: oversized
/// (413, the body is not read), garbage (400), `wrong_version` (a well-formed message of the
/// protocol with an unsupported version: 505), ending inside the frame (400), an overlong varint
/// (400).
fn hostile_frames(wrong_version: Vec<u8>) -> Vec<(Vec<u8>, u32)> {
    let mut oversized = Vec::new();
    prost::encoding::encode_varint(1 << 30, &mut oversized);
    oversized.extend_from_slice(&[0; 64]);
    let garbage = vec![5, 0xff, 0xff, 0xff, 0xff, 0xff];
    let truncated = vec![100, 1, 2, 3];
    let overlong_varint = vec![0xff; 11];
    vec![
        (oversized, codes::TOO_LARGE),
        (garbage, codes::BAD_REQUEST),
        (wrong_version, codes::UNSUPPORTED_VERSION),
        (truncated, codes::BAD_REQUEST),
        (overlong_varint, codes::BAD_REQUEST),
    ]
}

/// Sends each frame on a raw `protocol` stream (then closes its side, as a requester does) and
/// checks that the provider answers with exactly one `R` carrying an error of the expected code
/// and a reason, then ends the stream. Returns the errors, for closer checks.
async fn assert_refused<R>(protocol: &'static str, provider: &Provider, frames: Vec<(Vec<u8>, u32)>) -> Vec<pb::Error>
where
    R: Message + Default + Validate + ErrorReply + std::fmt::Debug,
{
    let mut errors = Vec::new();
    for (bytes, code) in frames {
        let send = send_raw(protocol, provider.peer_id(), provider.listen_addr().clone(), bytes.clone());
        let outcome = tokio::time::timeout(Duration::from_secs(10), send).await.expect("raw request should end");
        let response = outcome.unwrap_or_else(|e| panic!("no answer to {bytes:?} on {protocol}: {e}"));
        let mut rest = &response[..];
        let reply: R = tpod_wire::read_message(&mut rest, MAX_MESSAGE_BYTES).await.unwrap();
        assert!(rest.is_empty(), "more than one reply to {bytes:?} on {protocol}: {response:?}");
        let error = reply.as_refusal().unwrap_or_else(|| panic!("not an error reply: {reply:?}")).clone();
        assert_eq!(error.code, code, "{bytes:?} on {protocol}: {}", error.message);
        assert!(!error.message.is_empty(), "{bytes:?} on {protocol}: an error reply needs a reason");
        errors.push(error);
    }
    errors
}

#[tokio::test]
async fn garbage_and_oversized_frames_are_refused_and_provider_keeps_serving() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let (peer, addr) = (provider.peer_id(), provider.listen_addr().clone());

    let wrong_version =
        QuoteRequest { version: 2, resources: None, hostnames: Vec::new() }.encode_length_delimited_to_vec();
    let errors =
        assert_refused::<QuoteResponse>(tpod_wire::QUOTE_PROTOCOL, &provider, hostile_frames(wrong_version)).await;
    assert_eq!(errors[0].message, "message of 1073741824 bytes exceeds the limit of 65536 bytes");
    assert_eq!(errors[2].message, "unsupported message version 2 (supported: 1)");
    assert_eq!(errors[3].message, "stream ended before the end of the message");
    assert_eq!(handler.quotes.load(Ordering::SeqCst), 0, "no invalid request may reach the handler");

    // And it still serves well-formed requests.
    let client = Client::connect(generate_keypair()).unwrap();
    let response = client.quote(peer, addr, quote_request(42)).await.unwrap();
    assert_eq!(response.free.unwrap().cpu_millis, 42);
    assert_eq!(handler.quotes.load(Ordering::SeqCst), 1);
}

#[test]
fn client_outside_a_runtime_is_an_error_not_a_panic() {
    let error = Client::connect(generate_keypair()).unwrap_err();
    assert!(matches!(error, NetError::Transport(_)), "{error}");
}

#[tokio::test]
async fn keypair_file_round_trip_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.key");

    let keypair = tpod_net::load_or_generate_keypair(&path).unwrap();
    let again = tpod_net::load_or_generate_keypair(&path).unwrap();
    assert_eq!(keypair.public().to_peer_id(), again.public().to_peer_id());

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    std::fs::write(&path, b"not a key").unwrap();
    let error = tpod_net::load_keypair(&path).unwrap_err();
    assert!(matches!(error, NetError::KeyDecode { .. }), "{error}");
    let missing = tpod_net::load_keypair(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(missing, NetError::KeyIo { .. }), "{missing}");
}

fn logs_request(follow: bool, signature_byte: u8) -> SignedRequest {
    let logs = LogsRequest {
        version: 1,
        pod_id: vec![1; 32],
        publisher: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8".into(),
        container: "app".into(),
        follow,
        ..Default::default()
    };
    SignedRequest { version: 1, payload: logs.encode_to_vec(), signature: vec![signature_byte; 65] }
}

#[tokio::test]
async fn logs_stream_all_chunks_in_order_then_end() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let client = Client::connect(generate_keypair()).unwrap();

    let stream = client.logs(provider.peer_id(), provider.listen_addr().clone(), logs_request(false, 1)).await.unwrap();
    let chunks: Vec<LogChunk> = stream.map(|c| c.unwrap()).collect().await;
    assert!(chunks.iter().all(|c| c.data.len() <= MAX_LOG_CHUNK_BYTES && c.container == "app"));
    // 20 lines, then the large line in 4 pieces.
    assert_eq!(chunks.len(), 24);
    let received: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
    assert_eq!(received, log_lines().concat());
    assert_eq!(chunks[0].data, b"line 0\n");

    // The connection is still good for other protocols.
    let response = client.quote(provider.peer_id(), provider.listen_addr().clone(), quote_request(3)).await.unwrap();
    assert_eq!(response.free.unwrap().cpu_millis, 3);
}

#[tokio::test]
async fn dropping_a_followed_log_stream_stops_the_producer() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let client = Client::connect(generate_keypair()).unwrap();

    let mut stream =
        Box::pin(client.logs(provider.peer_id(), provider.listen_addr().clone(), logs_request(true, 1)).await.unwrap());
    for i in 0..5 {
        let chunk = stream.next().await.unwrap().unwrap();
        assert_eq!(chunk.data, format!("follow {i}\n").into_bytes());
    }
    assert!(!handler.log_producer_stopped.load(Ordering::SeqCst));
    drop(stream);

    let started = std::time::Instant::now();
    while !handler.log_producer_stopped.load(Ordering::SeqCst) {
        assert!(started.elapsed() < Duration::from_secs(3), "the producer kept running after the client left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn provider_going_away_ends_a_followed_log_stream() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let client = Client::connect(generate_keypair()).unwrap();

    let mut stream =
        Box::pin(client.logs(provider.peer_id(), provider.listen_addr().clone(), logs_request(true, 1)).await.unwrap());
    stream.next().await.unwrap().unwrap();
    drop(provider);
    // The provider's connection tasks may outlive its swarm task by a little; the stream must
    // end (with an error, since no last chunk came) rather than hang.
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        let mut last = None;
        while let Some(item) = stream.next().await {
            last = Some(item);
        }
        last
    })
    .await
    .expect("the stream should end when the provider goes away");
    if let Some(last) = rest {
        assert!(last.is_err(), "a stream cut short must end with an error, got {last:?}");
    }
}

#[tokio::test]
async fn refused_logs_request_carries_the_reason() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let client = Client::connect(generate_keypair()).unwrap();

    let error = match client.logs(provider.peer_id(), provider.listen_addr().clone(), logs_request(false, 0)).await {
        Ok(_) => panic!("a request with the wrong signer must be refused"),
        Err(error) => error,
    };
    assert_eq!(error.refusal(), Some((codes::UNAUTHORIZED, "wrong signer")), "{error}");
    assert_eq!(error.as_request().unwrap().protocol, "/tpod/logs/1");
    assert!(error.to_string().contains("wrong signer"), "{error}");
}

#[tokio::test]
async fn garbage_on_the_logs_protocol_is_refused() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;

    let wrong_version = SignedRequest { version: 2, ..logs_request(false, 1) }.encode_length_delimited_to_vec();
    let bad_signature =
        SignedRequest { signature: vec![1; 64], ..logs_request(false, 1) }.encode_length_delimited_to_vec();
    let mut frames = hostile_frames(wrong_version);
    frames.push((bad_signature, codes::BAD_REQUEST));
    let errors = assert_refused::<LogChunk>(tpod_wire::LOGS_PROTOCOL, &provider, frames).await;
    assert_eq!(errors[5].message, "signature: length 64, expected 65");
    assert_eq!(handler.log_requests.load(Ordering::SeqCst), 0, "no invalid request may reach the handler");

    // It still serves well-formed requests.
    let client = Client::connect(generate_keypair()).unwrap();
    let stream = client.logs(provider.peer_id(), provider.listen_addr().clone(), logs_request(false, 1)).await.unwrap();
    assert_eq!(stream.count().await, 24);
}

/// A blob the test handler refuses, as a provider out of space would.
fn full_cid() -> ContentId {
    ContentId::of(b"full")
}

/// A file of `len` bytes with a pattern that shows misplaced chunks, and its CID.
fn blob_file(dir: &tempfile::TempDir, len: usize) -> (std::path::PathBuf, Vec<u8>, ContentId) {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let path = dir.path().join("blob");
    std::fs::write(&path, &data).unwrap();
    let cid = ContentId::of(&data);
    (path, data, cid)
}

const MIB: u64 = MAX_BLOB_CHUNK_BYTES as u64;

#[tokio::test]
async fn push_blob_streams_a_multi_mib_blob_once() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let client = Client::connect(generate_keypair()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, data, cid) = blob_file(&dir, 5 * MAX_BLOB_CHUNK_BYTES + 123);
    let (peer, addr) = (provider.peer_id(), provider.listen_addr().clone());
    let total = data.len() as u64;

    let mut progress: Vec<Progress> = Vec::new();
    let report = client.push_blob(peer, addr.clone(), &cid, &path, |p| progress.push(p)).await.unwrap();
    assert_eq!(report, PushReport { total, resumed_from: 0, sent: total, already_complete: false, reconnects: 0 });
    assert_eq!(handler.blobs.lock().unwrap()[&cid.to_string()].data, data);
    assert_eq!(*handler.stored_chunks.lock().unwrap(), (0..6).map(|i| i * MIB).collect::<Vec<_>>());
    assert_eq!((progress[0].held, progress[0].sent, progress[0].total), (0, 0, total));
    let last = progress.last().unwrap();
    assert_eq!((last.held, last.sent), (total, total));
    assert!(progress.windows(2).all(|w| w[0].held < w[1].held && w[0].elapsed <= w[1].elapsed), "{progress:?}");
    assert_eq!(
        client.blob_state(peer, addr.clone(), &cid, total).await.unwrap(),
        BlobState { complete: true, received: total }
    );

    // The provider has it: a second push (from a clone of the client, in a task of its own)
    // only offers.
    let clone = client.clone();
    drop(client);
    let (again, progress) = tokio::spawn(async move {
        let mut progress = Vec::new();
        let again = clone.push_blob(peer, addr, &cid, &path, |p| progress.push(p)).await.unwrap();
        (again, progress)
    })
    .await
    .unwrap();
    assert_eq!(again, PushReport { total, resumed_from: total, sent: 0, already_complete: true, reconnects: 0 });
    assert_eq!(progress.len(), 1);
    assert_eq!(progress[0].held, total);
    assert_eq!(handler.stored_chunks.lock().unwrap().len(), 6);
}

#[tokio::test]
async fn empty_blob_completes_with_one_empty_chunk() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let client = Client::connect(generate_keypair()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, _, cid) = blob_file(&dir, 0);

    let report =
        client.push_blob(provider.peer_id(), provider.listen_addr().clone(), &cid, &path, |_| {}).await.unwrap();
    assert_eq!((report.total, report.sent, report.already_complete), (0, 0, false));
    assert!(handler.blobs.lock().unwrap()[&cid.to_string()].complete);
    assert_eq!(*handler.stored_chunks.lock().unwrap(), [0]);
}

#[tokio::test]
async fn refused_push_resumes_without_resending_what_the_provider_holds() {
    let handler = TestHandler::default();
    *handler.refuse_chunk_at.lock().unwrap() = Some(2 * MIB);
    let provider = provider(handler.clone()).await;
    let client = Client::connect(generate_keypair()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, data, cid) = blob_file(&dir, 5 * MAX_BLOB_CHUNK_BYTES + 7);
    let (peer, addr) = (provider.peer_id(), provider.listen_addr().clone());
    let total = data.len() as u64;

    // The provider fails on the third chunk: a refusal, not retried.
    let error = client.push_blob(peer, addr.clone(), &cid, &path, |_| {}).await.unwrap_err();
    assert_eq!(error.refusal(), Some((500, "the disk is on fire")), "{error}");
    assert_eq!(error.as_request().unwrap().protocol, "/tpod/blob/1");
    assert_eq!(
        client.blob_state(peer, addr.clone(), &cid, total).await.unwrap(),
        BlobState { complete: false, received: 2 * MIB }
    );

    let mut progress: Vec<Progress> = Vec::new();
    let report = client.push_blob(peer, addr, &cid, &path, |p| progress.push(p)).await.unwrap();
    assert_eq!(
        report,
        PushReport { total, resumed_from: 2 * MIB, sent: total - 2 * MIB, already_complete: false, reconnects: 0 }
    );
    assert_eq!((progress[0].held, progress[0].sent), (2 * MIB, 0));
    assert_eq!(handler.blobs.lock().unwrap()[&cid.to_string()].data, data);
    // Every chunk was stored exactly once.
    assert_eq!(*handler.stored_chunks.lock().unwrap(), (0..6).map(|i| i * MIB).collect::<Vec<_>>());
}

/// Listens on `addr` with `keypair`, retrying while the port is still held by a provider that
/// was just dropped.
async fn provider_at(keypair: &Keypair, addr: &Multiaddr, handler: TestHandler) -> Provider {
    let started = std::time::Instant::now();
    loop {
        match Provider::listen(keypair.clone(), addr.clone(), handler.clone()).await {
            Ok(provider) => return provider,
            Err(error) if started.elapsed() < Duration::from_secs(5) => {
                eprintln!("listening again: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("cannot listen again on {addr}: {error}"),
        }
    }
}

#[tokio::test]
async fn cut_connection_mid_upload_reconnects_and_resumes() {
    let handler = TestHandler::default();
    *handler.stall_chunk_at.lock().unwrap() = Some(3 * MIB);
    let keypair = generate_keypair();
    let provider = Provider::listen(keypair.clone(), localhost(), handler.clone()).await.unwrap();
    let (peer, addr) = (provider.peer_id(), provider.listen_addr().clone());
    let client = Client::connect(generate_keypair()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, data, cid) = blob_file(&dir, 6 * MAX_BLOB_CHUNK_BYTES + 99);
    let total = data.len() as u64;

    let push = client.push_blob(peer, addr.clone(), &cid, &path, |_| {});
    let restart = async {
        // The provider stops answering at the fourth chunk; then it goes away and comes back on
        // the same address, with the same (in-memory) store.
        handler.stalled.notified().await;
        drop(provider);
        provider_at(&keypair, &addr, handler.clone()).await
    };
    let (report, _provider) = tokio::time::timeout(Duration::from_secs(60), async { tokio::join!(push, restart) })
        .await
        .expect("the push should finish");
    let report = report.unwrap();
    assert!(report.reconnects >= 1, "{report:?}");
    assert_eq!((report.total, report.resumed_from, report.already_complete), (total, 0, false));
    // What was in flight when the connection broke is sent again, nothing the provider held.
    assert!(report.sent >= total, "{report:?}");
    assert_eq!(handler.blobs.lock().unwrap()[&cid.to_string()].data, data);
    assert_eq!(*handler.stored_chunks.lock().unwrap(), (0..7).map(|i| i * MIB).collect::<Vec<_>>());
    let offers = handler.blob_offers.lock().unwrap().clone();
    assert_eq!(offers.first(), Some(&(cid.to_string(), 0)));
    assert_eq!(offers.last(), Some(&(cid.to_string(), 3 * MIB)), "{offers:?}");
}

#[tokio::test]
async fn content_not_matching_its_cid_is_refused_at_the_end() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let client = Client::connect(generate_keypair()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, data, actual) = blob_file(&dir, 2 * MAX_BLOB_CHUNK_BYTES + 5);
    let claimed = ContentId::of(b"something else");

    let error = client
        .push_blob(provider.peer_id(), provider.listen_addr().clone(), &claimed, &path, |_| {})
        .await
        .unwrap_err();
    let expected = format!("content does not match its CID {claimed}: got {actual}");
    assert_eq!(error.refusal(), Some((422, expected.as_str())), "{error}");
    assert!(error.to_string().contains("code 422"), "{error}");
    // Everything was sent once, then dropped by the provider.
    assert_eq!(handler.stored_chunks.lock().unwrap().len(), 3);
    assert!(handler.blobs.lock().unwrap().is_empty());
    let state =
        client.blob_state(provider.peer_id(), provider.listen_addr().clone(), &claimed, data.len() as u64).await;
    assert_eq!(state.unwrap(), BlobState { complete: false, received: 0 });
}

#[tokio::test]
async fn blob_refusal_is_reported_with_its_reason() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let client = Client::connect(generate_keypair()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = blob_file(&dir, 1000);
    let (peer, addr) = (provider.peer_id(), provider.listen_addr().clone());

    let error = client.push_blob(peer, addr.clone(), &full_cid(), &path, |_| {}).await.unwrap_err();
    assert_eq!(error.refusal(), Some((507, "no space left for blobs")), "{error}");
    assert_eq!(error.as_request().unwrap().protocol, "/tpod/blob/1");
    let error = client.blob_state(peer, addr.clone(), &full_cid(), 1000).await.unwrap_err();
    assert_eq!(error.refusal(), Some((507, "no space left for blobs")), "{error}");

    let missing = client.push_blob(peer, addr, &full_cid(), &dir.path().join("missing"), |_| {}).await.unwrap_err();
    assert!(matches!(missing, NetError::BlobFile { .. }), "{missing}");
}

#[tokio::test]
async fn push_to_an_unreachable_provider_fails_without_retrying() {
    let client = Client::connect(generate_keypair()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, _, cid) = blob_file(&dir, 10);
    let peer = generate_keypair().public().to_peer_id();
    let started = std::time::Instant::now();
    let error = client.push_blob(peer, "/ip4/127.0.0.1/tcp/1".parse().unwrap(), &cid, &path, |_| {}).await.unwrap_err();
    let request_error = error.as_request().expect("a request error");
    assert_eq!(request_error.protocol, "/tpod/blob/1");
    assert!(matches!(request_error.kind, RequestErrorKind::Dial(_)), "{error}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A bare libp2p host with raw streams, connected to `provider`, to play a publisher that does
/// not follow the protocol.
async fn raw_streams(provider: &Provider) -> (libp2p_stream::Control, tokio::task::JoinHandle<()>) {
    let mut swarm = SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let control = swarm.behaviour().new_control();
    swarm.dial(DialOpts::peer_id(provider.peer_id()).addresses(vec![provider.listen_addr().clone()]).build()).unwrap();
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::ConnectionEstablished { .. } => break,
            SwarmEvent::OutgoingConnectionError { error, .. } => panic!("cannot connect: {error}"),
            _ => {}
        }
    }
    let task = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (control, task)
}

async fn open_blob_stream(control: &mut libp2p_stream::Control, peer: PeerId) -> libp2p::Stream {
    control.open_stream(peer, StreamProtocol::new(tpod_wire::BLOB_PROTOCOL)).await.unwrap()
}

async fn read_reply(stream: &mut libp2p::Stream) -> blob_reply::Result {
    let reply: BlobReply = read_message(stream, BLOB_MAX_BYTES).await.unwrap();
    reply.result.unwrap()
}

/// The chunk of `blob` at `range`.
fn chunk_of(blob: &[u8], range: std::ops::Range<usize>) -> BlobChunk {
    let prefix_sha256 = Sha256::digest(&blob[..range.end]).to_vec();
    BlobChunk { version: 1, offset: range.start as u64, data: blob[range].to_vec().into(), prefix_sha256 }
}

#[tokio::test]
async fn tampered_chunk_is_refused_and_only_the_good_prefix_is_kept() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let (mut control, _task) = raw_streams(&provider).await;
    let data: Vec<u8> = (0..3 * MAX_BLOB_CHUNK_BYTES).map(|i| (i % 249) as u8).collect();
    let cid = ContentId::of(&data).to_string();
    let (first, second) = (0..MAX_BLOB_CHUNK_BYTES, MAX_BLOB_CHUNK_BYTES..2 * MAX_BLOB_CHUNK_BYTES);

    let mut stream = open_blob_stream(&mut control, provider.peer_id()).await;
    let offer = BlobOffer { version: 1, cid: cid.clone(), total_size: data.len() as u64 };
    write_message(&mut stream, &offer, BLOB_MAX_BYTES).await.unwrap();
    assert_eq!(read_reply(&mut stream).await, blob_reply::Result::State(BlobState { complete: false, received: 0 }));
    write_message(&mut stream, &chunk_of(&data, first.clone()), BLOB_MAX_BYTES).await.unwrap();
    // The second chunk is damaged in transit: its checksum no longer matches.
    let mut damaged = data[second.clone()].to_vec();
    damaged[1234] ^= 0x40;
    let tampered = BlobChunk { data: damaged.into(), ..chunk_of(&data, second) };
    write_message(&mut stream, &tampered, BLOB_MAX_BYTES).await.unwrap();
    match read_reply(&mut stream).await {
        blob_reply::Result::Error(error) => {
            assert_eq!(
                (error.code, error.message.as_str()),
                (422, "chunk at offset 1048576 does not match its sha256")
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The provider ended the stream, and holds the good chunk only.
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest).await;
    assert!(rest.is_empty());
    assert_eq!(handler.blobs.lock().unwrap()[&cid].data, data[first]);

    // A publisher that only asks closes after the first answer.
    let mut stream = open_blob_stream(&mut control, provider.peer_id()).await;
    write_message(&mut stream, &offer, BLOB_MAX_BYTES).await.unwrap();
    assert_eq!(read_reply(&mut stream).await, blob_reply::Result::State(BlobState { complete: false, received: MIB }));
    stream.close().await.unwrap();
}

#[tokio::test]
async fn blob_uploads_beyond_the_limit_are_refused_and_idle_ones_closed() {
    let handler = TestHandler::default();
    let config = NetConfig { request_timeout: Duration::from_secs(5), ..Default::default() };
    let provider = Provider::listen_with(generate_keypair(), localhost(), handler.clone(), config).await.unwrap();
    let (peer, addr) = (provider.peer_id(), provider.listen_addr().clone());
    let (mut control, _task) = raw_streams(&provider).await;
    let client = Client::connect(generate_keypair()).unwrap();
    let cid = ContentId::of(b"x");

    // One publisher offers four times and then stalls: a fifth upload of its own is refused.
    let offer = BlobOffer { version: 1, cid: cid.to_string(), total_size: 1 };
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut stream = open_blob_stream(&mut control, peer).await;
        write_message(&mut stream, &offer, BLOB_MAX_BYTES).await.unwrap();
        assert!(matches!(read_reply(&mut stream).await, blob_reply::Result::State(_)));
        stalled.push(stream);
    }
    let mut stream = open_blob_stream(&mut control, peer).await;
    write_message(&mut stream, &offer, BLOB_MAX_BYTES).await.unwrap();
    match read_reply(&mut stream).await {
        blob_reply::Result::Error(error) => {
            assert_eq!(error.code, codes::BUSY);
            assert!(error.message.contains("too many uploads from you"), "{}", error.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Three other publishers do the same, which takes all sixteen slots: a fifth is refused.
    let mut others = Vec::new();
    for _ in 0..3 {
        let (mut control, task) = raw_streams(&provider).await;
        for _ in 0..4 {
            let mut stream = open_blob_stream(&mut control, peer).await;
            write_message(&mut stream, &offer, BLOB_MAX_BYTES).await.unwrap();
            assert!(matches!(read_reply(&mut stream).await, blob_reply::Result::State(_)));
            stalled.push(stream);
        }
        others.push(task);
    }
    let error = client.blob_state(peer, addr.clone(), &cid, 1).await.unwrap_err();
    assert_eq!(error.refusal().map(|(code, _)| code), Some(codes::BUSY), "{error}");
    assert!(!error.to_string().contains("from you"), "{error}");

    // Past the idle timeout, the provider gave up on them and serves others again.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(client.blob_state(peer, addr, &cid, 1).await.unwrap(), BlobState { complete: false, received: 0 });
    for mut stream in stalled {
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        assert!(rest.is_empty());
    }
}

#[tokio::test]
async fn garbage_on_the_blob_protocol_is_refused() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let cid = ContentId::of(b"x").to_string();
    let wrong_version = BlobOffer { version: 2, cid: cid.clone(), total_size: 1 };
    let long_cid = BlobOffer { version: 1, cid: "b".repeat(1000), total_size: 1 };
    let mut frames = hostile_frames(wrong_version.encode_length_delimited_to_vec());
    frames.push((long_cid.encode_length_delimited_to_vec(), codes::TOO_LARGE));
    let errors = assert_refused::<BlobReply>(tpod_wire::BLOB_PROTOCOL, &provider, frames).await;
    assert_eq!(errors[5].message, "cid: length 1000 exceeds the maximum of 128");
    assert!(handler.blob_offers.lock().unwrap().is_empty(), "no invalid offer may reach the handler");

    // A malformed chunk after a good offer is answered with 400 and ends the stream.
    let (mut control, _task) = raw_streams(&provider).await;
    let mut stream = open_blob_stream(&mut control, provider.peer_id()).await;
    write_message(&mut stream, &BlobOffer { version: 1, cid: cid.clone(), total_size: 1 }, BLOB_MAX_BYTES)
        .await
        .unwrap();
    assert!(matches!(read_reply(&mut stream).await, blob_reply::Result::State(_)));
    let short_checksum = BlobChunk { prefix_sha256: vec![0; 31], ..chunk_of(b"x", 0..1) };
    write_message(&mut stream, &short_checksum, BLOB_MAX_BYTES).await.unwrap();
    match read_reply(&mut stream).await {
        blob_reply::Result::Error(error) => {
            assert_eq!(error.code, codes::BAD_REQUEST, "{}", error.message);
            assert_eq!(error.message, "invalid chunk: prefix_sha256: length 31, expected 32");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(handler.stored_chunks.lock().unwrap().is_empty());

    // An oversized chunk is answered 413 from its length prefix alone.
    let mut stream = open_blob_stream(&mut control, provider.peer_id()).await;
    write_message(&mut stream, &BlobOffer { version: 1, cid, total_size: 1 }, BLOB_MAX_BYTES).await.unwrap();
    assert!(matches!(read_reply(&mut stream).await, blob_reply::Result::State(_)));
    let mut prefix = Vec::new();
    prost::encoding::encode_varint(BLOB_MAX_BYTES as u64 + 1, &mut prefix);
    stream.write_all(&prefix).await.unwrap();
    stream.flush().await.unwrap();
    match read_reply(&mut stream).await {
        blob_reply::Result::Error(error) => assert_eq!(error.code, codes::TOO_LARGE, "{}", error.message),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(handler.stored_chunks.lock().unwrap().is_empty());
}

/// Prints the rate of a 256 MiB push to a provider that keeps it in memory. Run with
/// `cargo test --release -p tpod-net --test net -- --ignored --nocapture push_throughput`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark; run in release"]
async fn push_throughput() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let client = Client::connect(generate_keypair()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, _, cid) = blob_file(&dir, 256 * MAX_BLOB_CHUNK_BYTES);
    let started = std::time::Instant::now();
    let report =
        client.push_blob(provider.peer_id(), provider.listen_addr().clone(), &cid, &path, |_| {}).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.sent, 256 * MIB);
    eprintln!("256 MiB in {elapsed:?}: {:.0} MiB/s", 256.0 / elapsed.as_secs_f64());
}
