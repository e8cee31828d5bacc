//! Scale to zero at the ingress: sleeping routes and TCP forwards wake their pod once for every
//! request or connection that arrives meanwhile, and activity tells the provider how busy a pod
//! is.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::get;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tpod_ingress::{HttpIngress, Routes, TcpForwards, Wake, WakeFuture, Waker};

/// A waker built from a closure.
struct FnWaker<F>(F);

impl<F: Fn(&str) -> WakeFuture + Send + Sync + 'static> Waker for FnWaker<F> {
    fn wake(&self, pod_id: &str) -> WakeFuture {
        (self.0)(pod_id)
    }
}

/// A loopback port nothing listens on (yet): where the woken pod will be.
async fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
}

/// Starts an HTTP backend on `port` answering `woken <pod>`.
async fn start_http_pod(port: u16, pod: String) {
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let text = format!("woken {pod}");
            let service = service_fn(move |_req: Request<Incoming>| {
                let text = text.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text)))) }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_requests_during_one_slow_wake_are_all_served() {
    let port = free_port().await;
    let routes = Routes::default();
    routes.set("pod-z", vec!["z.pods.localhost".into()], SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    // The pod takes a second to start, and only then listens (once: a second wake finds it
    // still there).
    let listening = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let waker = FnWaker(move |pod: &str| -> WakeFuture {
        let (pod, listening) = (pod.to_owned(), Arc::clone(&listening));
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if !listening.swap(true, std::sync::atomic::Ordering::SeqCst) {
                start_http_pod(port, pod).await;
            }
            Ok(IpAddr::V4(Ipv4Addr::LOCALHOST))
        })
    });
    let wake = Wake::new("pod-z", Arc::new(waker));
    assert!(routes.set_asleep("pod-z", wake.clone()));
    assert!(routes.is_asleep("pod-z"));
    assert!(!routes.set_asleep("no-such-pod", wake.clone()));
    let proxy = HttpIngress::bind("127.0.0.1:0".parse().unwrap(), routes.clone()).await.unwrap();
    let addr = proxy.local_addr();

    let started = Instant::now();
    let requests: Vec<_> = (0..20).map(|_| tokio::spawn(get(addr, "z.pods.localhost"))).collect();
    // Held requests count as in flight: what an autoscaler sees while the pod starts.
    while routes.activity("pod-z").unwrap().in_flight < 20 {
        assert!(started.elapsed() < Duration::from_millis(900), "requests not held: {:?}", routes.activity("pod-z"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for request in requests {
        assert_eq!(request.await.unwrap(), (StatusCode::OK, "woken pod-z".to_owned()));
    }
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(wake.runs(), 1, "the waker ran more than once");
    assert!(!routes.is_asleep("pod-z"));
    assert_eq!(routes.activity("pod-z").unwrap().in_flight, 0);
    // Awake now: served directly, no further wake.
    assert_eq!(get(addr, "z.pods.localhost").await, (StatusCode::OK, "woken pod-z".to_owned()));
    assert_eq!(wake.runs(), 1);

    // Asleep again with the same wake: the next request wakes it anew.
    assert!(routes.set_asleep("pod-z", wake.clone()));
    assert_eq!(get(addr, "z.pods.localhost").await, (StatusCode::OK, "woken pod-z".to_owned()));
    assert_eq!(wake.runs(), 2);
}

#[tokio::test]
async fn a_failing_wake_answers_503_with_its_reason_and_the_next_request_retries() {
    let routes = Routes::default();
    routes.set("pod-f", vec!["f.pods.localhost".into()], SocketAddr::from((Ipv4Addr::LOCALHOST, 9)));
    let waker = FnWaker(|_pod: &str| -> WakeFuture {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Err("no memory left on the provider".to_owned())
        })
    });
    let wake = Wake::new("pod-f", Arc::new(waker));
    routes.set_asleep("pod-f", wake.clone());
    let proxy = HttpIngress::bind("127.0.0.1:0".parse().unwrap(), routes.clone()).await.unwrap();
    let addr = proxy.local_addr();

    let requests: Vec<_> = (0..5).map(|_| tokio::spawn(get(addr, "f.pods.localhost"))).collect();
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "pod pod-f is asleep and could not be woken: no memory left on the provider\n");
    }
    assert_eq!(wake.runs(), 1);
    assert!(routes.is_asleep("pod-f"));
    assert_eq!(get(addr, "f.pods.localhost").await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(wake.runs(), 2);
    assert_eq!(routes.activity("pod-f").unwrap().in_flight, 0);

    // A wake that takes too long is given up with a reason too.
    let hang = FnWaker(|_pod: &str| -> WakeFuture { Box::pin(std::future::pending()) });
    routes.set_asleep("pod-f", Wake::with_timeout("pod-f", Arc::new(hang), Duration::from_millis(100)));
    let (status, body) = get(addr, "f.pods.localhost").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "pod pod-f is asleep and could not be woken: the pod did not wake within 0.1 s\n");
}

#[tokio::test]
async fn a_tcp_connection_wakes_the_pod_and_is_forwarded() {
    let port = free_port().await;
    let forwards = TcpForwards::new(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let host_port = forwards.expose("pod-t", 0, SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await.unwrap();
    // The woken pod is an echo server.
    let waker = FnWaker(move |_pod: &str| -> WakeFuture {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let listener = TcpListener::bind(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
            tokio::spawn(async move {
                loop {
                    let (mut stream, _) = listener.accept().await.unwrap();
                    tokio::spawn(async move {
                        let (mut read, mut write) = stream.split();
                        let _ = tokio::io::copy(&mut read, &mut write).await;
                    });
                }
            });
            Ok(IpAddr::V4(Ipv4Addr::LOCALHOST))
        })
    });
    let wake = Wake::new("pod-t", Arc::new(waker));
    assert!(forwards.set_asleep("pod-t", wake.clone()));
    assert!(forwards.is_asleep("pod-t"));
    let idle_since = forwards.activity("pod-t").unwrap().last_active;

    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(TcpStream::connect(("127.0.0.1", host_port)).await.unwrap());
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let message = format!("hello {i}");
        client.write_all(message.as_bytes()).await.unwrap();
        let mut buf = vec![0; message.len()];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(buf, message.as_bytes());
    }
    assert_eq!(wake.runs(), 1);
    assert!(!forwards.is_asleep("pod-t"));
    let activity = forwards.activity("pod-t").unwrap();
    assert_eq!(activity.in_flight, 3);
    assert!(activity.last_active > idle_since);
    drop(clients);
    let deadline = Instant::now() + Duration::from_secs(5);
    while forwards.activity("pod-t").unwrap().in_flight != 0 {
        assert!(Instant::now() < deadline, "closed connections still counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(forwards.activity("no-such-pod"), None);
}
