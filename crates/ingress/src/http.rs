//! The HTTP reverse proxy: accepts HTTP/1.1 connections, picks the pod by host name and
//! forwards each request to the pod's backend address over a fresh HTTP/1.1 connection,
//! streaming bodies both ways.
//!
//! One backend connection per request keeps the proxy simple and leaves no idle connections to
//! pods that may be stopped or moved at any time; pooling can come later if it shows up in
//! profiles.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::body::{CountingBody, Direction};
use crate::routes::{Route, Routes};
use crate::{BACKEND_CONNECT_TIMEOUT, HEADER_READ_TIMEOUT, IngressError, host};

/// Body of every answer: either a pod's streamed response or a short error text.
type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// The HTTP ingress: serves in a background task from [`HttpIngress::bind`] until dropped.
///
/// Dropping it stops accepting connections at once; connections already open finish their
/// current request and then close.
#[derive(Debug)]
pub struct HttpIngress {
    local_addr: SocketAddr,
    accept: JoinHandle<()>,
    /// Never sent on: dropping it (with the ingress) tells every open connection to shut down
    /// gracefully.
    _shutdown: watch::Sender<()>,
}

impl HttpIngress {
    /// Binds `addr` (port 0 picks a free port) and serves requests routed by `routes` in a
    /// background task until the ingress is dropped or shut down.
    pub async fn bind(addr: SocketAddr, routes: Routes) -> Result<Self, IngressError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| IngressError::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(IngressError::LocalAddr)?;
        let (shutdown, shutdown_rx) = watch::channel(());
        let accept = tokio::spawn(accept_loop(listener, routes, shutdown_rx));
        tracing::info!(%local_addr, "http ingress listening");
        Ok(Self { local_addr, accept, _shutdown: shutdown })
    }

    /// The address the ingress listens on (with the port picked when binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and returns once the listening socket is closed, so the port can be
    /// bound again right away. Open connections finish their current request, as on drop.
    pub async fn shutdown(mut self) {
        self.accept.abort();
        // The accept task never ends on its own, so this only reports the cancellation.
        let _ = (&mut self.accept).await;
        tracing::info!(local_addr = %self.local_addr, "http ingress stopped");
    }
}

impl Drop for HttpIngress {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, routes: Routes, shutdown: watch::Receiver<()>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "http ingress cannot accept");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        tokio::spawn(serve_connection(stream, peer, routes.clone(), shutdown.clone()));
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, routes: Routes, mut shutdown: watch::Receiver<()>) {
    // Small proxied responses should not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| {
        let routes = routes.clone();
        async move { Ok::<_, Infallible>(handle(req, peer, &routes).await) }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        // Only ever an error: the ingress was dropped.
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        // Clients hanging up or timing out is routine, not worth more than debug.
        tracing::debug!(%peer, %error, "http ingress connection ended with an error");
    }
}

/// Answers one request: routes it by host name and forwards it, or answers with an error.
async fn handle(req: Request<Incoming>, peer: SocketAddr, routes: &Routes) -> Response<ProxyBody> {
    // This is a reverse proxy for pods, not a forward proxy: tunnels would bypass routing.
    if req.method() == Method::CONNECT {
        return text(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported\n".into());
    }
    // In absolute form (`GET http://host/path`) the URI's authority wins over the Host header.
    let raw_host = match req.uri().authority() {
        Some(authority) => Some(authority.as_str().to_owned()),
        None => match req.headers().get(header::HOST).map(HeaderValue::to_str) {
            Some(Ok(value)) => Some(value.to_owned()),
            Some(Err(_)) => return text(StatusCode::BAD_REQUEST, "invalid Host header\n".into()),
            None => None,
        },
    };
    let Some(raw_host) = raw_host else {
        return text(StatusCode::BAD_REQUEST, "missing Host header\n".into());
    };
    let Some(name) = host::normalize(&raw_host) else {
        return text(StatusCode::BAD_REQUEST, "invalid Host header\n".into());
    };
    let Some(route) = routes.route_for(&name) else {
        tracing::debug!(host = %host::for_display(&name), "no pod serves host");
        return text(StatusCode::NOT_FOUND, format!("no pod serves host \"{}\"\n", host::for_display(&name)));
    };
    forward(req, peer, &raw_host, route).await
}

/// Forwards a routed request to its pod and streams the answer back.
async fn forward(req: Request<Incoming>, peer: SocketAddr, raw_host: &str, route: Route) -> Response<ProxyBody> {
    let pod = route.pod_id.as_str();
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // `raw_host` came from a header value or a parsed authority, so it is a valid value; the
    // fallback only keeps the compiler honest.
    let host_value = HeaderValue::from_str(raw_host).unwrap_or_else(|_| HeaderValue::from_static(""));
    // The pod sees the name the client asked for, as the client spelled it, so virtual hosting
    // inside the pod keeps working; for absolute form that is the URI's authority (RFC 9112
    // section 3.2.2), which replaces whatever Host header came along.
    parts.headers.insert(header::HOST, host_value.clone());
    add_forwarded_headers(&mut parts.headers, peer, host_value);
    // Backends get origin form (`/path?query`), which every server understands.
    parts.uri = parts.uri.path_and_query().map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
    parts.version = Version::HTTP_11;

    let stream = match tokio::time::timeout(BACKEND_CONNECT_TIMEOUT, TcpStream::connect(route.backend)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%pod, backend = %route.backend, %error, "pod backend unreachable");
            return text(StatusCode::BAD_GATEWAY, format!("pod {pod} is not reachable\n"));
        }
        Err(_) => {
            tracing::debug!(%pod, backend = %route.backend, "pod backend connect timed out");
            return text(StatusCode::GATEWAY_TIMEOUT, format!("pod {pod} did not accept the connection in time\n"));
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(handshake) => handshake,
        Err(error) => {
            tracing::debug!(%pod, %error, "pod backend handshake failed");
            return text(StatusCode::BAD_GATEWAY, format!("pod {pod} is not reachable\n"));
        }
    };
    let pod_for_conn = route.pod_id.clone();
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(pod = %pod_for_conn, %error, "pod backend connection ended with an error");
        }
    });

    let body = CountingBody::new(body, route.counters.clone(), Direction::Ingress);
    let response = match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%pod, %error, "pod backend gave no valid response");
            return text(StatusCode::BAD_GATEWAY, format!("pod {pod} gave no valid response\n"));
        }
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, CountingBody::new(body, route.counters, Direction::Egress).boxed_unsync())
}

/// Removes the headers that describe one connection rather than the message (RFC 9110
/// section 7.6.1): they must not leak from the client's connection to the pod's or back.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut remove: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    remove.extend(headers.keys().filter(|name| name.as_str().starts_with("proxy-")).cloned());
    remove.extend([
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ]);
    // A client listing `Connection: host` strips nothing that matters: the caller sets Host
    // after this.
    for name in remove {
        headers.remove(name);
    }
}

/// Tells the pod who the client is and what it asked for, since the pod only sees the
/// ingress's connection.
fn add_forwarded_headers(headers: &mut HeaderMap, peer: SocketAddr, host: HeaderValue) {
    let client = peer.ip().to_canonical().to_string();
    // Appended like other proxies do: earlier entries are whatever the client claimed, the last
    // one is what this ingress saw and is the one to trust.
    let earlier: Vec<&str> =
        headers.get_all("x-forwarded-for").iter().filter_map(|value| value.to_str().ok()).collect();
    let chain = if earlier.is_empty() { client } else { format!("{}, {client}", earlier.join(", ")) };
    if let Ok(value) = HeaderValue::from_str(&chain) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), value);
    }
    headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static("http"));
}

/// A short plain-text answer produced by the ingress itself.
fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
