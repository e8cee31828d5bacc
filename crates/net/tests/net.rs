//! End-to-end tests over real TCP on 127.0.0.1 with real noise and yamux.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
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
use tpod_wire::pb::{
    self, ProvisionResponse, QuoteRequest, QuoteResponse, Resources, SignedRequest, provision_response,
};

/// Answers quotes with the requested cpu echoed as free capacity; records provision callers.
#[derive(Clone, Default)]
struct TestHandler {
    quotes: Arc<AtomicUsize>,
    provision_peers: Arc<Mutex<Vec<PeerId>>>,
    hang: bool,
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

/// Sends `bytes` on a raw `/tpod/quote/1` stream; returns the bytes read back, or the failure.
async fn send_raw(peer: PeerId, addr: Multiaddr, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    let behaviour = request_response::Behaviour::<RawCodec>::new(
        [(StreamProtocol::new(tpod_wire::QUOTE_PROTOCOL), ProtocolSupport::Outbound)],
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

#[tokio::test]
async fn garbage_and_oversized_frames_are_refused_and_provider_keeps_serving() {
    let handler = TestHandler::default();
    let provider = provider(handler.clone()).await;
    let (peer, addr) = (provider.peer_id(), provider.listen_addr().clone());

    let mut oversized = Vec::new();
    prost::encoding::encode_varint(1 << 30, &mut oversized);
    oversized.extend_from_slice(&[0; 64]);
    let garbage = vec![5, 0xff, 0xff, 0xff, 0xff, 0xff];
    let wrong_version = QuoteRequest { version: 2, resources: None }.encode_length_delimited_to_vec();
    let truncated = vec![100, 1, 2, 3];
    let overlong_varint = vec![0xff; 11];

    for bytes in [oversized, garbage, wrong_version, truncated, overlong_varint] {
        // The provider drops the stream without answering: the raw peer sees an error or EOF.
        let outcome = tokio::time::timeout(Duration::from_secs(10), send_raw(peer, addr.clone(), bytes.clone()))
            .await
            .expect("raw request should end");
        if let Ok(response) = outcome {
            assert!(response.is_empty(), "provider answered {bytes:?} with {response:?}");
        }
    }
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
