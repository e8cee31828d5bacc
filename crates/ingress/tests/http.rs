//! End-to-end tests of the HTTP ingress over real sockets on 127.0.0.1: tiny hyper backends
//! behind the proxy, a hyper client (or raw HTTP/1.1 bytes) in front of it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tpod_ingress::{HttpIngress, Routes};

/// A backend answering `/echo` by streaming the request body back, and anything else with a
/// line describing what it received (its name, the URI and the headers the proxy controls).
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = service_fn(move |req: Request<Incoming>| async move {
                if req.uri().path() == "/echo" {
                    return Ok::<_, Infallible>(Response::new(req.into_body().boxed()));
                }
                let header = |name: &str| {
                    let values: Vec<&str> = req.headers().get_all(name).iter().map(|v| v.to_str().unwrap()).collect();
                    if values.is_empty() { "-".to_owned() } else { values.join("|") }
                };
                let text = format!(
                    "{name} {} host={} xff={} xfh={} xfp={} fwd={} xri={} secret={} connection={}",
                    req.uri(),
                    header("host"),
                    header("x-forwarded-for"),
                    header("x-forwarded-host"),
                    header("x-forwarded-proto"),
                    header("forwarded"),
                    header("x-real-ip"),
                    header("x-secret"),
                    header("connection"),
                );
                let mut response = Response::new(full(text));
                // Hop-by-hop headers from the pod must not reach the client.
                response.headers_mut().insert("keep-alive", "timeout=5".parse().unwrap());
                Ok(response)
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    addr
}

fn full(text: impl Into<Bytes>) -> BoxBody<Bytes, hyper::Error> {
    Full::new(text.into()).map_err(|never| match never {}).boxed()
}

/// Sends one request through the proxy with a hyper client connection.
async fn send(proxy: SocketAddr, req: Request<Full<Bytes>>) -> (StatusCode, hyper::HeaderMap, Bytes) {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(req).await.unwrap();
    let (parts, body) = response.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

async fn get(proxy: SocketAddr, host: &str, path: &str) -> (StatusCode, String) {
    let req = Request::get(path).header("host", host).body(Full::default()).unwrap();
    let (status, _, body) = send(proxy, req).await;
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Writes raw bytes (a whole request with `Connection: close`) and reads the whole answer.
async fn raw(proxy: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

async fn ingress(routes: &Routes) -> HttpIngress {
    HttpIngress::bind("127.0.0.1:0".parse().unwrap(), routes.clone()).await.unwrap()
}

#[tokio::test]
async fn routes_each_host_to_its_own_backend() {
    let (a, b) = (backend("alpha").await, backend("beta").await);
    let routes = Routes::default();
    routes.set("pod-a", vec!["a.pods.localhost".into(), "app.example.com".into()], a);
    routes.set("pod-b", vec!["b.pods.localhost".into()], b);
    let proxy = ingress(&routes).await;
    let addr = proxy.local_addr();

    let (status, body) = get(addr, "a.pods.localhost", "/x?y=1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("alpha /x?y=1 host=a.pods.localhost "), "{body}");
    assert!(body.contains("xff=127.0.0.1 "), "{body}");
    assert!(body.contains("xfh=a.pods.localhost "), "{body}");
    assert!(body.contains("xfp=http "), "{body}");

    let (status, body) = get(addr, "b.pods.localhost", "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("beta / "), "{body}");

    // Port, capitals and the fully qualified spelling all find the route; the pod sees the
    // Host the client sent.
    let (_, body) = get(addr, "APP.Example.com.:8080", "/").await;
    assert!(body.starts_with("alpha / host=APP.Example.com.:8080 "), "{body}");
    assert!(body.contains("xfh=APP.Example.com.:8080 "), "{body}");
}

#[tokio::test]
async fn strips_hop_by_hop_and_replaces_spoofed_forwarding_headers() {
    let a = backend("alpha").await;
    let routes = Routes::default();
    routes.set("pod-a", vec!["a.pods.localhost".into()], a);
    let proxy = ingress(&routes).await;

    let req = Request::get("/")
        .header("host", "a.pods.localhost")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "token")
        .header("proxy-authorization", "Basic eA==")
        .header("x-forwarded-for", "203.0.113.9")
        .header("X-Forwarded-For", "198.51.100.1")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "bank.example")
        .header("forwarded", "for=203.0.113.9;proto=https")
        .header("x-real-ip", "203.0.113.9")
        .body(Full::default())
        .unwrap();
    let (status, headers, body) = send(proxy.local_addr(), req).await;
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("secret=- "), "{body}");
    // Every forwarding header comes from the connection; the client's copies are gone.
    assert!(body.contains("xff=127.0.0.1 "), "{body}");
    assert!(body.contains("xfp=http "), "{body}");
    assert!(body.contains("xfh=a.pods.localhost "), "{body}");
    assert!(body.contains("fwd=for=127.0.0.1;proto=http;host=\"a.pods.localhost\" "), "{body}");
    assert!(body.contains("xri=127.0.0.1 "), "{body}");
    assert!(!body.contains("203.0.113.9") && !body.contains("198.51.100.1"), "{body}");
    assert!(!body.contains("https") && !body.contains("bank.example"), "{body}");
    assert!(!body.contains("x-secret"), "{body}");
    assert!(headers.get("keep-alive").is_none(), "{headers:?}");
}

#[tokio::test]
async fn absolute_form_uses_the_uri_authority() {
    let a = backend("alpha").await;
    let routes = Routes::default();
    routes.set("pod-a", vec!["a.pods.localhost".into()], a);
    let proxy = ingress(&routes).await;
    let answer = raw(
        proxy.local_addr(),
        "GET http://A.pods.localhost/abs?q HTTP/1.1\r\nHost: elsewhere\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.contains("alpha /abs?q host=A.pods.localhost "), "{answer}");
}

#[tokio::test]
async fn unknown_missing_and_removed_hosts() {
    let a = backend("alpha").await;
    let routes = Routes::default();
    routes.set("pod-a", vec!["a.pods.localhost".into()], a);
    let proxy = ingress(&routes).await;
    let addr = proxy.local_addr();

    let (status, body) = get(addr, "Nobody.Example:80", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, "no pod serves host \"nobody.example\"\n");

    // The echoed host is capped, so a huge header does not make a huge answer.
    let long = format!("{}.example", "a".repeat(4000));
    let (status, body) = get(addr, &long, "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.len() < 300, "{}", body.len());

    let answer = raw(addr, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert!(answer.ends_with("missing Host header\n"), "{answer}");

    let answer = raw(addr, "GET / HTTP/1.0\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.0 400 Bad Request\r\n"), "{answer}");

    let answer =
        raw(addr, "CONNECT a.pods.localhost:443 HTTP/1.1\r\nHost: a.pods.localhost:443\r\nConnection: close\r\n\r\n")
            .await;
    assert!(answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{answer}");

    let answer = raw(addr, "GET / HTTP/1.1\r\nHost: a:b:c\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");

    assert_eq!(get(addr, "a.pods.localhost", "/").await.0, StatusCode::OK);
    routes.remove("pod-a");
    let (status, body) = get(addr, "a.pods.localhost", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, "no pod serves host \"a.pods.localhost\"\n");
}

#[tokio::test]
async fn set_replacing_hosts_removes_the_old_ones() {
    let (a, b) = (backend("alpha").await, backend("beta").await);
    let routes = Routes::default();
    routes.set("pod", vec!["old.example".into(), "kept.example".into()], a);
    let proxy = ingress(&routes).await;
    let addr = proxy.local_addr();
    assert!(get(addr, "old.example", "/").await.1.starts_with("alpha "));

    routes.set("pod", vec!["kept.example".into(), "new.example".into()], b);
    assert_eq!(get(addr, "old.example", "/").await.0, StatusCode::NOT_FOUND);
    assert!(get(addr, "kept.example", "/").await.1.starts_with("beta "));
    assert!(get(addr, "new.example", "/").await.1.starts_with("beta "));
    assert_eq!(routes.lookup("new.example"), Some(("pod".to_owned(), b)));
    assert_eq!(routes.lookup("old.example"), None);
}

#[tokio::test]
async fn backend_down_is_502_naming_the_pod() {
    // A port that was just free: nothing listens there any more.
    let down = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let routes = Routes::default();
    routes.set("pod-down", vec!["down.pods.localhost".into()], down);
    let proxy = ingress(&routes).await;
    let (status, body) = get(proxy.local_addr(), "down.pods.localhost", "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(body.contains("pod-down"), "{body}");
    assert!(!body.contains("127.0.0.1"), "{body}");
}

#[tokio::test]
async fn large_body_streams_both_ways_and_is_counted() {
    const SIZE: usize = 8 << 20;
    let a = backend("alpha").await;
    let routes = Routes::default();
    routes.set("pod-a", vec!["a.pods.localhost".into()], a);
    let proxy = ingress(&routes).await;
    assert_eq!(routes.traffic("pod-a").unwrap().ingress_bytes, 0);

    let payload: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let req = Request::post("/echo")
        .header("host", "a.pods.localhost")
        .body(Full::new(Bytes::from(payload.clone())))
        .unwrap();
    let (status, _, body) = send(proxy.local_addr(), req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), SIZE);
    assert!(body == payload, "echoed body differs");

    let traffic = routes.traffic("pod-a").unwrap();
    assert!(traffic.ingress_bytes >= SIZE as u64, "{traffic:?}");
    assert!(traffic.egress_bytes >= SIZE as u64, "{traffic:?}");
    // A small GET adds a little egress and no ingress.
    get(proxy.local_addr(), "a.pods.localhost", "/").await;
    let after = routes.traffic("pod-a").unwrap();
    assert_eq!(after.ingress_bytes, traffic.ingress_bytes);
    assert!(after.egress_bytes > traffic.egress_bytes);
    assert_eq!(routes.traffic("never-routed"), None);

    // Taking the counters bills each byte once: the next take sees only newer traffic.
    assert_eq!(routes.take_traffic("pod-a"), after);
    assert_eq!(routes.take_traffic("pod-a"), tpod_ingress::Traffic::default());
    get(proxy.local_addr(), "a.pods.localhost", "/").await;
    let again = routes.take_traffic("pod-a");
    assert_eq!(again.egress_bytes, after.egress_bytes - traffic.egress_bytes);
    assert_eq!(routes.take_traffic("never-routed"), tpod_ingress::Traffic::default());
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let routes = Routes::default();
    let proxy = ingress(&routes).await;
    let addr = proxy.local_addr();
    assert_eq!(get(addr, "x.example", "/").await.0, StatusCode::NOT_FOUND);
    proxy.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
    // The port is free again at once.
    let again = HttpIngress::bind(addr, routes).await.unwrap();
    assert_eq!(again.local_addr(), addr);
}

#[tokio::test]
async fn response_streams_before_the_backend_finishes() {
    // A backend that sends its headers and a first chunk, then holds the response open until
    // told to finish: the client must see the first chunk while the body is still open.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let (finish, finished) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0; 1];
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        stream.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n").await.unwrap();
        finished.await.unwrap();
        stream.write_all(b"4\r\nlast\r\n0\r\n\r\n").await.unwrap();
    });
    let routes = Routes::default();
    routes.set("pod-s", vec!["s.pods.localhost".into()], backend);
    let proxy = ingress(&routes).await;

    let mut client = TcpStream::connect(proxy.local_addr()).await.unwrap();
    client.write_all(b"GET / HTTP/1.1\r\nHost: s.pods.localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut seen = Vec::new();
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&seen).contains("first") {
            let mut buf = [0; 1024];
            let n = client.read(&mut buf).await.unwrap();
            assert_ne!(n, 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(first.is_ok(), "first chunk not streamed: {}", String::from_utf8_lossy(&seen));
    finish.send(()).unwrap();
    client.read_to_end(&mut seen).await.unwrap();
    let answer = String::from_utf8_lossy(&seen);
    assert!(answer.contains("last"), "{answer}");
    assert!(routes.traffic("pod-s").unwrap().egress_bytes >= 9);
}

#[tokio::test]
async fn backend_connect_timeout_is_504() {
    // A listener that never accepts, with its accept queue filled: Linux then drops further
    // SYNs, so connecting hangs until the proxy's connect timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let backend = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        match tokio::time::timeout(std::time::Duration::from_millis(200), TcpStream::connect(backend)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }
    let routes = Routes::default();
    routes.set("pod-slow", vec!["slow.pods.localhost".into()], backend);
    let proxy = ingress(&routes).await;
    let started = std::time::Instant::now();
    let (status, body) = get(proxy.local_addr(), "slow.pods.localhost", "/").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body.contains("pod-slow"), "{body}");
    assert!(started.elapsed() >= tpod_ingress::BACKEND_CONNECT_TIMEOUT);
    drop((listener, fillers));
}
