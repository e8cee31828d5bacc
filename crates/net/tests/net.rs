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
    swarm::SwarmEvent,
    tcp, yamux,
};
use prost::Message;
use tpod_net::{
    Client, Handler, Multiaddr, NetConfig, NetError, PeerId, Provider, RequestError, RequestErrorKind, generate_keypair,
};
use tpod_wire::{
    limits::{MAX_BLOB_CHUNK_BYTES, MAX_LOG_CHUNK_BYTES},
    pb::{
        self, BlobRequest, BlobResponse, LogChunk, LogsRequest, ProvisionResponse, QuoteRequest, QuoteResponse,
        Resources, SignedRequest, blob_request::Op, blob_response, provision_response,
    },
};

/// Answers quotes with the requested cpu echoed as free capacity; records provision callers;
/// serves logs (see [`TestHandler::logs`]) and keeps blobs in memory.
#[derive(Clone, Default)]
struct TestHandler {
    quotes: Arc<AtomicUsize>,
    provision_peers: Arc<Mutex<Vec<PeerId>>>,
    hang: bool,
    log_requests: Arc<AtomicUsize>,
    /// Set by the follow-mode producer when it notices nobody reads its chunks any more.
    log_producer_stopped: Arc<AtomicBool>,
    blobs: Arc<Mutex<HashMap<String, MemBlob>>>,
    blob_puts: Arc<AtomicUsize>,
}

#[derive(Default)]
struct MemBlob {
    data: Vec<u8>,
    total_size: u64,
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

    /// Refuses a request whose signature starts with 0 ("wrong signer"); otherwise sends
    /// [`log_lines`], or, when following, numbered lines every 20 ms until nobody listens.
    async fn logs(&self, _peer: PeerId, request: SignedRequest) -> Result<BoxStream<'static, LogChunk>, pb::Error> {
        self.log_requests.fetch_add(1, Ordering::SeqCst);
        if request.signature[0] == 0 {
            return Err(pb::Error { code: 403, message: "wrong signer".into() });
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

    /// A blob store in memory, without digest checks (those are the provider's): puts must
    /// continue where the blob ends.
    async fn blob(&self, _peer: PeerId, request: BlobRequest) -> BlobResponse {
        if request.digest == FULL {
            let error = pb::Error { code: 507, message: "no space left for blobs".into() };
            return BlobResponse { version: 1, result: Some(blob_response::Result::Error(error)) };
        }
        let mut blobs = self.blobs.lock().unwrap();
        let blob = blobs.entry(request.digest).or_default();
        if let Some(Op::Put(put)) = request.op {
            self.blob_puts.fetch_add(1, Ordering::SeqCst);
            if put.offset != blob.data.len() as u64 {
                let message = format!("wrong offset {}, have {}", put.offset, blob.data.len());
                return BlobResponse {
                    version: 1,
                    result: Some(blob_response::Result::Error(pb::Error { code: 409, message })),
                };
            }
            blob.total_size = put.total_size;
            blob.data.extend_from_slice(&put.data);
        }
        let received = blob.data.len() as u64;
        let state = pb::BlobState { complete: received == blob.total_size && received > 0, received };
        BlobResponse { version: 1, result: Some(blob_response::Result::State(state)) }
    }
}

fn localhost() -> Multiaddr {
    "/ip4/127.0.0.1/tcp/0".parse().unwrap()
}

fn quote_request(cpu_millis: u64) -> QuoteRequest {
    QuoteRequest { version: 1, resources: Some(Resources { cpu_millis, ..Default::default() }) }
}

async fn provider(handler: TestHandler) -> Provider {
    Provider::listen(generate_keypair(), localhost(), handler).await.unwrap()
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

    // A 64-byte signature is not a valid SignedRequest: the provider's codec refuses it before
    // the handler runs, and the client sees the stream end without an answer.
    let request = SignedRequest { version: 1, payload: vec![], signature: vec![1; 64] };
    let error = client.provision(provider.peer_id(), provider.listen_addr().clone(), request).await.unwrap_err();
    let request_error = error.as_request().expect("a request error");
    assert_eq!(request_error.protocol, "/tpod/provision/1");
    assert!(matches!(request_error.kind, RequestErrorKind::Failed(_)), "{error}");
    assert!(handler.provision_peers.lock().unwrap().is_empty());
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

/// Frames no provider may answer: oversized, garbage, truncated, an overlong varint, plus
/// `wrong_version` (a well-formed message of the protocol with an unsupported version).
fn hostile_frames(wrong_version: Vec<u8>) -> Vec<Vec<u8>> {
    let mut oversized = Vec::new();
    prost::encoding::encode_varint(1 << 30, &mut oversized);
    oversized.extend_from_slice(&[0; 64]);
    let garbage = vec![5, 0xff, 0xff, 0xff, 0xff, 0xff];
    let truncated = vec![100, 1, 2, 3];
    let overlong_varint = vec![0xff; 11];
    vec![oversized, garbage, wrong_version, truncated, overlong_varint]
}

/// Sends each frame on a raw `protocol` stream and checks that the provider drops the stream
/// without answering: the raw peer sees an error or EOF.
async fn assert_refused(protocol: &'static str, provider: &Provider, frames: Vec<Vec<u8>>) {
    for bytes in frames {
        let send = send_raw(protocol, provider.peer_id(), provider.listen_addr().clone(), bytes.clone());
        let outcome = tokio::time::timeout(Duration::from_secs(10), send).await.expect("raw request should end");
        if let Ok(response) = outcome {
            assert!(response.is_empty(), "provider answered {bytes:?} on {protocol} with {response:?}");
        }
    }
}

#[tokio::test]
async fn garbage_and_oversized_frames_are_refused_and_provider_keeps_serving() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let (peer, addr) = (provider.peer_id(), provider.listen_addr().clone());

    let wrong_version = QuoteRequest { version: 2, resources: None }.encode_length_delimited_to_vec();
    assert_refused(tpod_wire::QUOTE_PROTOCOL, &provider, hostile_frames(wrong_version)).await;
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
    assert_eq!(error.refusal(), Some((403, "wrong signer")), "{error}");
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
    frames.push(bad_signature);
    assert_refused(tpod_wire::LOGS_PROTOCOL, &provider, frames).await;
    assert_eq!(handler.log_requests.load(Ordering::SeqCst), 0, "no invalid request may reach the handler");

    // It still serves well-formed requests.
    let client = Client::connect(generate_keypair()).unwrap();
    let stream = client.logs(provider.peer_id(), provider.listen_addr().clone(), logs_request(false, 1)).await.unwrap();
    assert_eq!(stream.count().await, 24);
}

#[tokio::test]
async fn garbage_on_the_blob_protocol_is_refused() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let wrong_version = BlobRequest { version: 2, digest: DIGEST.into(), op: Some(Op::Query(pb::Query {})) };
    let past_end = put(DIGEST, 10, vec![1; 10], 15);
    let mut frames = hostile_frames(wrong_version.encode_length_delimited_to_vec());
    frames.push(past_end.encode_length_delimited_to_vec());
    assert_refused(tpod_wire::BLOB_PROTOCOL, &provider, frames).await;
    assert!(handler.blobs.lock().unwrap().is_empty());
}

const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
/// A digest the test handler refuses, as a provider out of space would.
const FULL: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

fn put(digest: &str, offset: u64, data: Vec<u8>, total_size: u64) -> BlobRequest {
    BlobRequest { version: 1, digest: digest.into(), op: Some(Op::Put(pb::Put { offset, data, total_size })) }
}

/// A file of `len` bytes with a pattern that shows misplaced chunks.
fn blob_file(dir: &tempfile::TempDir, len: usize) -> (std::path::PathBuf, Vec<u8>) {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let path = dir.path().join("blob");
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

#[tokio::test]
async fn push_blob_uploads_once_in_chunks() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let client = Client::connect(generate_keypair()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = blob_file(&dir, 5 * MAX_BLOB_CHUNK_BYTES + 123);
    let (peer, addr) = (provider.peer_id(), provider.listen_addr().clone());

    let mut progress = Vec::new();
    client.push_blob(peer, addr.clone(), DIGEST, &path, |sent, total| progress.push((sent, total))).await.unwrap();
    assert_eq!(handler.blobs.lock().unwrap()[DIGEST].data, data);
    assert_eq!(handler.blob_puts.load(Ordering::SeqCst), 6);
    let total = data.len() as u64;
    assert_eq!(progress.first(), Some(&(0, total)));
    assert_eq!(progress.last(), Some(&(total, total)));
    assert!(progress.windows(2).all(|w| w[0].0 < w[1].0), "{progress:?}");

    // The provider has it: a second push only asks.
    client.push_blob(peer, addr, DIGEST, &path, |_, _| {}).await.unwrap();
    assert_eq!(handler.blob_puts.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn interrupted_blob_upload_resumes_where_the_provider_stopped() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let client = Client::connect(generate_keypair()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, data) = blob_file(&dir, 5 * MAX_BLOB_CHUNK_BYTES);
    let (peer, addr) = (provider.peer_id(), provider.listen_addr().clone());
    let total = data.len() as u64;

    // An earlier upload got two chunks across, then stopped.
    for i in 0..2 {
        let range = i * MAX_BLOB_CHUNK_BYTES..(i + 1) * MAX_BLOB_CHUNK_BYTES;
        let request = put(DIGEST, range.start as u64, data[range].to_vec(), total);
        let response = client.blob(peer, addr.clone(), request).await.unwrap();
        assert!(matches!(response.result, Some(blob_response::Result::State(pb::BlobState { complete: false, .. }))));
    }

    let mut progress = Vec::new();
    client.push_blob(peer, addr, DIGEST, &path, |sent, total| progress.push((sent, total))).await.unwrap();
    assert_eq!(progress.first(), Some(&(2 * MAX_BLOB_CHUNK_BYTES as u64, total)));
    assert_eq!(handler.blob_puts.load(Ordering::SeqCst), 5, "only the three missing chunks are sent");
    assert_eq!(handler.blobs.lock().unwrap()[DIGEST].data, data);
}

#[tokio::test]
async fn blob_refusal_is_reported_with_its_reason() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let client = Client::connect(generate_keypair()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = blob_file(&dir, 1000);
    let (peer, addr) = (provider.peer_id(), provider.listen_addr().clone());

    let error = client.push_blob(peer, addr, FULL, &path, |_, _| {}).await.unwrap_err();
    assert_eq!(error.refusal(), Some((507, "no space left for blobs")), "{error}");
    assert_eq!(error.as_request().unwrap().protocol, "/tpod/blob/1");

    let missing = client
        .push_blob(provider.peer_id(), provider.listen_addr().clone(), DIGEST, &dir.path().join("missing"), |_, _| {})
        .await
        .unwrap_err();
    assert!(matches!(missing, NetError::BlobFile { .. }), "{missing}");
}
