//! The proxy under load and at its edges, over real sockets on 127.0.0.1: keep-alive pooling to
//! the pod, WebSocket pass-through, the response header timeout and the per-pod limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::get;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tpod_ingress::{HttpIngress, IngressConfig, Routes};

/// A keep-alive backend answering every request with `ok` after `delay`; returns its address
/// and the number of connections it accepted.
async fn counting_backend(delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::Relaxed);
            let service = service_fn(move |_req: Request<Incoming>| async move {
                tokio::time::sleep(delay).await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_keep_alive_load_reuses_pod_connections_without_a_502() {
    const CLIENTS: usize = 16;
    const DURATION: Duration = Duration::from_secs(10);
    let (backend, accepted) = counting_backend(Duration::ZERO).await;
    let routes = Routes::default();
    routes.set("pod-load", vec!["load.pods.localhost".into()], backend);
    let proxy = HttpIngress::bind("127.0.0.1:0".parse().unwrap(), routes.clone()).await.unwrap();
    let addr = proxy.local_addr();

    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(tokio::spawn(async move {
            // One keep-alive connection per client, like wrk.
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(conn);
            let mut answers = 0u64;
            while started.elapsed() < DURATION {
                sender.ready().await.unwrap();
                let req = Request::get("/").header("host", "load.pods.localhost").body(Empty::<Bytes>::new()).unwrap();
                let response = sender.send_request(req).await.unwrap();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]), "answer {answers}");
                answers += 1;
            }
            answers
        }));
    }
    let mut total = 0;
    for client in clients {
        total += client.await.unwrap();
    }
    let connections = accepted.load(Ordering::Relaxed);
    eprintln!("{total} answers, all 200, over {connections} connections to the pod");
    assert!(total > 1000, "only {total} answers");
    // A connection per request would be `total`; the pool holds about one per concurrent
    // request, with a little slack for connections opened while one was being returned.
    assert!(connections <= 2 * CLIENTS, "{connections} connections to the pod for {total} requests");
    assert_eq!(routes.activity("pod-load").unwrap().in_flight, 0);
}

#[tokio::test]
async fn slow_pod_gets_504_after_the_response_header_timeout() {
    // A pod that reads requests and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0; 1024];
            let _ = stream.read(&mut buf).await;
            held.push(stream);
        }
    });
    let routes = Routes::default();
    routes.set("pod-mute", vec!["mute.pods.localhost".into()], backend);
    let config = IngressConfig { response_header_timeout: Duration::from_millis(300), ..IngressConfig::default() };
    let proxy = HttpIngress::bind_with("127.0.0.1:0".parse().unwrap(), routes.clone(), config).await.unwrap();
    let started = Instant::now();
    let (status, body) = get(proxy.local_addr(), "mute.pods.localhost").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body, "pod pod-mute did not send its response headers within 0.3 s\n");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(routes.activity("pod-mute").unwrap().in_flight, 0);
}

#[tokio::test]
async fn requests_beyond_the_per_pod_limit_get_503() {
    let (backend, _) = counting_backend(Duration::from_millis(800)).await;
    let routes = Routes::default();
    routes.set("pod-busy", vec!["busy.pods.localhost".into()], backend);
    let config = IngressConfig { max_in_flight_per_pod: 2, ..IngressConfig::default() };
    let proxy = HttpIngress::bind_with("127.0.0.1:0".parse().unwrap(), routes.clone(), config).await.unwrap();
    let addr = proxy.local_addr();
    let before = routes.activity("pod-busy").unwrap();

    let slow: Vec<_> = (0..2).map(|_| tokio::spawn(get(addr, "busy.pods.localhost"))).collect();
    while routes.activity("pod-busy").unwrap().in_flight < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, body) = get(addr, "busy.pods.localhost").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body, "pod pod-busy already has 2 requests in flight, the most the ingress allows per pod\n");
    for request in slow {
        assert_eq!(request.await.unwrap(), (StatusCode::OK, "ok".to_owned()));
    }
    let after = routes.activity("pod-busy").unwrap();
    assert_eq!(after.in_flight, 0);
    assert!(after.last_active > before.last_active);
    // Below the limit again.
    assert_eq!(get(addr, "busy.pods.localhost").await.0, StatusCode::OK);
}

/// A WebSocket echo server: answers the upgrade with 101, then echoes each (small, masked)
/// frame back unmasked until a close frame.
async fn websocket_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = service_fn(|mut req: Request<Incoming>| async move {
                assert_eq!(req.headers()["upgrade"], "websocket");
                assert!(req.headers()["connection"].to_str().unwrap().eq_ignore_ascii_case("upgrade"));
                assert_eq!(req.headers()["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
                let upgrade = hyper::upgrade::on(&mut req);
                tokio::spawn(async move {
                    let mut io = TokioIo::new(upgrade.await.unwrap());
                    loop {
                        let mut head = [0; 2];
                        io.read_exact(&mut head).await.unwrap();
                        let (opcode, len) = (head[0] & 0x0f, usize::from(head[1] & 0x7f));
                        let mut mask = [0; 4];
                        io.read_exact(&mut mask).await.unwrap();
                        let mut payload = vec![0; len];
                        io.read_exact(&mut payload).await.unwrap();
                        for (i, byte) in payload.iter_mut().enumerate() {
                            *byte ^= mask[i % 4];
                        }
                        io.write_all(&[0x80 | opcode, len as u8]).await.unwrap();
                        io.write_all(&payload).await.unwrap();
                        if opcode == 8 {
                            return;
                        }
                    }
                });
                let response = Response::builder()
                    .status(StatusCode::SWITCHING_PROTOCOLS)
                    .header("upgrade", "websocket")
                    .header("connection", "Upgrade")
                    .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                Ok::<_, Infallible>(response)
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades());
        }
    });
    addr
}

/// A masked client frame (RFC 6455 section 5.2) with a short payload.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

#[tokio::test]
async fn websocket_echo_through_the_ingress() {
    let backend = websocket_echo().await;
    let routes = Routes::default();
    routes.set("pod-ws", vec!["ws.pods.localhost".into()], backend);
    let proxy = HttpIngress::bind("127.0.0.1:0".parse().unwrap(), routes.clone()).await.unwrap();

    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    client
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: ws.pods.localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0; 1];
        client.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101 switching protocols\r\n"), "{head}");
    assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(head.contains("\r\nsec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"), "{head}");

    for message in [&b"hello"[..], b"through the ingress"] {
        client.write_all(&frame(1, message)).await.unwrap();
        let mut answer = vec![0; 2 + message.len()];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer[..2], &[0x81, message.len() as u8]);
        assert_eq!(&answer[2..], message);
    }
    // The open WebSocket counts as in flight, and its bytes as traffic as they pass.
    assert_eq!(routes.activity("pod-ws").unwrap().in_flight, 1);
    let traffic = routes.traffic("pod-ws").unwrap();
    assert!(traffic.ingress_bytes >= 2 * 6 + 5 + 19, "{traffic:?}");
    assert!(traffic.egress_bytes >= 2 * 2 + 5 + 19, "{traffic:?}");

    client.write_all(&frame(8, b"")).await.unwrap();
    let mut close = [0; 2];
    client.read_exact(&mut close).await.unwrap();
    assert_eq!(close, [0x88, 0]);
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    // The pod closed its side. A client that keeps its own open (half-closed) holds the
    // connection, and the pod awake, only for a grace period of seconds.
    let closed = Instant::now();
    while routes.activity("pod-ws").unwrap().in_flight != 0 {
        assert!(closed.elapsed() < Duration::from_secs(8), "a half-closed WebSocket is still counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed.elapsed() >= Duration::from_secs(4), "dropped {:?} after the pod closed", closed.elapsed());
    drop(client);
}

/// A backend on `ip:port` that answers with its own address, after a second for `/slow`.
async fn named_backend(ip: [u8; 4], port: u16) -> SocketAddr {
    let listener = TcpListener::bind(SocketAddr::from((ip, port))).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = service_fn(move |req: Request<Incoming>| async move {
                if req.uri().path() == "/slow" {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(addr.ip().to_string()))))
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_to_the_replica_with_the_fewest_in_flight() {
    let first = named_backend([127, 0, 0, 1], 0).await;
    let second = named_backend([127, 0, 0, 2], first.port()).await;
    let routes = Routes::default();
    routes.set("pod-replicas", vec!["replicas.pods.localhost".into()], first);
    assert!(routes.set_replicas("pod-replicas", &[first.ip(), second.ip()]));
    let proxy = HttpIngress::bind("127.0.0.1:0".parse().unwrap(), routes.clone()).await.unwrap();
    let addr = proxy.local_addr();

    // Idle replicas take requests in turn.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (status, body) = get(addr, "replicas.pods.localhost").await;
        assert_eq!(status, StatusCode::OK);
        seen.push(body);
    }
    assert!(seen.contains(&"127.0.0.1".to_owned()) && seen.contains(&"127.0.0.2".to_owned()), "{seen:?}");

    // While one replica holds a slow request, every other request goes to the other one.
    let slow = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nHost: replicas.pods.localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer.lines().last().unwrap_or_default().to_owned()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut during = Vec::new();
    for _ in 0..6 {
        during.push(get(addr, "replicas.pods.localhost").await.1);
    }
    let busy = slow.await.unwrap();
    assert!(during.iter().all(|ip| *ip != busy), "{busy} held a slow request, yet served some of {during:?}");
    assert_eq!(routes.replicas("pod-replicas"), vec![first.ip(), second.ip()]);
}
