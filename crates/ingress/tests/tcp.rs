//! End-to-end tests of TCP port forwarding over real sockets on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tpod_ingress::TcpForwards;

/// An echo server: writes back whatever each connection sends.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

async fn round_trip(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    let mut buf = vec![0; message.len()];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, message);
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

#[tokio::test]
async fn forwards_to_echo_server_until_removed() {
    let echo = echo_server().await;
    let forwards = TcpForwards::new(Ipv4Addr::LOCALHOST.into());
    let port = forwards.expose("pod-1", 0, echo).await.unwrap();
    assert_ne!(port, 0);
    assert_eq!(forwards.ports("pod-1"), vec![port]);
    assert!(forwards.ports("other").is_empty());

    let mut stream = TcpStream::connect(local(port)).await.unwrap();
    round_trip(&mut stream, b"hello").await;
    round_trip(&mut stream, &vec![7; 1 << 20]).await;

    forwards.remove("pod-1");
    assert!(forwards.ports("pod-1").is_empty());
    // The open connection is dropped: reading ends (EOF or reset) instead of hanging.
    let mut buf = [0; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // `remove` closes the listener asynchronously: new connections fail shortly after.
    let mut refused = false;
    for _ in 0..200 {
        if TcpStream::connect(local(port)).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "port {port} still accepts after remove");
}

#[tokio::test]
async fn remove_and_wait_frees_ports_at_once() {
    let echo = echo_server().await;
    let forwards = TcpForwards::new(Ipv4Addr::LOCALHOST.into());
    let first = forwards.expose("pod-1", 0, echo).await.unwrap();
    let second = forwards.expose("pod-1", 0, echo).await.unwrap();
    let mut ports = forwards.ports("pod-1");
    ports.sort_unstable();
    let mut expected = vec![first, second];
    expected.sort_unstable();
    assert_eq!(ports, expected);

    forwards.remove_and_wait("pod-1").await;
    assert!(TcpStream::connect(local(first)).await.is_err());
    assert!(TcpStream::connect(local(second)).await.is_err());
    // The same host port can be exposed again right away (e.g. for a restarted pod).
    assert_eq!(forwards.expose("pod-2", first, echo).await.unwrap(), first);
    let mut stream = TcpStream::connect(local(first)).await.unwrap();
    round_trip(&mut stream, b"again").await;
}

#[tokio::test]
async fn port_in_use_is_an_error() {
    let echo = echo_server().await;
    let forwards = TcpForwards::new(Ipv4Addr::LOCALHOST.into());
    let port = forwards.expose("pod-1", 0, echo).await.unwrap();
    let error = forwards.expose("pod-2", port, echo).await.unwrap_err();
    assert!(matches!(error, tpod_ingress::IngressError::Bind { .. }), "{error}");
    assert!(forwards.ports("pod-2").is_empty());
}

#[tokio::test]
async fn unreachable_backend_closes_the_connection() {
    let down = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let forwards = TcpForwards::new(Ipv4Addr::LOCALHOST.into());
    let port = forwards.expose("pod-1", 0, down).await.unwrap();
    let mut stream = TcpStream::connect(local(port)).await.unwrap();
    let mut buf = [0; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
