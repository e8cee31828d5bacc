//! The HTTP reverse proxy: accepts HTTP/1.1 connections, picks the pod by host name and
//! forwards each request to the pod's backend address, streaming bodies both ways.
//!
//! Connections to pods are pooled (hyper-util's client): opening one per request made every
//! request pay a TCP handshake and left a TIME_WAIT socket behind, enough under load to exhaust
//! the local port range and make the pod unreachable. Idle pooled connections are few per pod
//! and short-lived ([`IngressConfig`]), so a pod that stops or moves leaves little behind.
//!
//! `Upgrade` requests (WebSocket...) are forwarded with their upgrade headers; when the pod
//! answers 101 both connections are handed over from HTTP and spliced byte for byte.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::activity::InFlight;
use crate::body::{CountingBody, CountingIo, Direction};
use crate::routes::{Route, Routes};
use crate::{IngressConfig, IngressError, host};

/// Body of every answer: either a pod's streamed response or a short error text.
type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// The pooled client to pods; request bodies are the clients' bodies, counted.
type PodClient = Client<HttpConnector, CountingBody<Incoming>>;

/// How long an upgraded connection stays spliced once one side has ended its direction: long
/// enough for the other side's last bytes (a WebSocket close frame) to get through, short enough
/// that a peer that never closes its socket cannot hold the connection, and keep its pod awake
/// and billed, forever.
const HALF_CLOSED_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// The client and routing state every connection shares.
struct Proxy {
    routes: Routes,
    client: PodClient,
    config: IngressConfig,
}

/// The HTTP ingress: serves in a background task from [`HttpIngress::bind`] until dropped.
///
/// Dropping it stops accepting connections at once; connections already open finish their
/// current request and then close (upgraded connections stay spliced until either side closes).
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
    /// background task until the ingress is dropped or shut down, with the default
    /// [`IngressConfig`].
    pub async fn bind(addr: SocketAddr, routes: Routes) -> Result<Self, IngressError> {
        Self::bind_with(addr, routes, IngressConfig::default()).await
    }

    /// Like [`HttpIngress::bind`], with `config`'s timeouts, limits and pool sizes.
    pub async fn bind_with(addr: SocketAddr, routes: Routes, config: IngressConfig) -> Result<Self, IngressError> {
        let listener = TcpListener::bind(addr).await.map_err(|source| IngressError::Bind { addr, source })?;
        let local_addr = listener.local_addr().map_err(IngressError::LocalAddr)?;
        let mut connector = HttpConnector::new();
        // Small proxied requests should not wait for Nagle's algorithm.
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_pod)
            // The proxy sets Host itself: the name the client asked for, not the pod's address.
            .set_host(false)
            .build(connector);
        let proxy = Arc::new(Proxy { routes, client, config });
        let (shutdown, shutdown_rx) = watch::channel(());
        let accept = tokio::spawn(accept_loop(listener, proxy, shutdown_rx));
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

async fn accept_loop(listener: TcpListener, proxy: Arc<Proxy>, shutdown: watch::Receiver<()>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "http ingress cannot accept");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        tokio::spawn(serve_connection(stream, peer, Arc::clone(&proxy), shutdown.clone()));
    }
}

async fn serve_connection(stream: TcpStream, peer: SocketAddr, proxy: Arc<Proxy>, mut shutdown: watch::Receiver<()>) {
    // Small proxied responses should not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let header_timeout = proxy.config.client_header_timeout;
    let service = service_fn(move |req: Request<Incoming>| {
        let proxy = Arc::clone(&proxy);
        let span = tracing::debug_span!("request", %peer, method = %req.method(), pod = tracing::field::Empty);
        async move { Ok::<_, Infallible>(handle(req, peer, &proxy).await) }.instrument(span)
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    // `with_upgrades` lets a 101 answer hand the client's connection over to the splice.
    let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
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

/// Answers one request: routes it by host name, wakes the pod if it sleeps, and forwards it,
/// or answers with an error.
async fn handle(req: Request<Incoming>, peer: SocketAddr, proxy: &Proxy) -> Response<ProxyBody> {
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
    let Some(route) = proxy.routes.route_for(&name) else {
        tracing::debug!(host = %host::for_display(&name), "no pod serves host");
        return text(StatusCode::NOT_FOUND, format!("no pod serves host \"{}\"\n", host::for_display(&name)));
    };
    tracing::Span::current().record("pod", route.pod_id.as_str());
    let pod = route.pod_id.as_str();
    // Counted before a wake, so requests held while the pod starts show as in flight (what
    // autoscaling looks at) and count against the limit.
    let limit = proxy.config.max_in_flight_per_pod;
    let Some(in_flight) = route.counters.enter(limit) else {
        tracing::debug!(limit, "pod at its in-flight limit");
        let mut response = text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("pod {pod} already has {limit} requests in flight, the most the ingress allows per pod\n"),
        );
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let (backend, in_flight) = match &route.asleep {
        None => (route.backend, in_flight.to(route.replica.as_ref())),
        Some(wake) => match wake.wake().await {
            Ok(ip) => {
                proxy.routes.woke(pod, wake, ip);
                (SocketAddr::new(ip, route.backend.port()), in_flight)
            }
            Err(reason) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("pod {pod} is asleep and could not be woken: {reason}\n"),
                );
            }
        },
    };
    forward(req, peer, &raw_host, &route, backend, in_flight, proxy).await
}

/// Forwards a routed request to its pod at `backend` and streams the answer back.
async fn forward(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    raw_host: &str,
    route: &Route,
    backend: SocketAddr,
    in_flight: InFlight,
    proxy: &Proxy,
) -> Response<ProxyBody> {
    let pod = route.pod_id.as_str();
    let upgrade = requested_upgrade(req.headers());
    // Taken before the request is passed on: the client's connection is handed over only if
    // the pod agrees (101).
    let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = upgrade {
        // Hop-by-hop, yet exactly what the pod must see to agree to the upgrade.
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol);
    }
    // `raw_host` came from a header value or a parsed authority, so it is a valid value; the
    // fallback only keeps the compiler honest.
    let host_value = HeaderValue::from_str(raw_host).unwrap_or_else(|_| HeaderValue::from_static(""));
    // The pod sees the name the client asked for, as the client spelled it, so virtual hosting
    // inside the pod keeps working; for absolute form that is the URI's authority (RFC 9112
    // section 3.2.2), which replaces whatever Host header came along.
    parts.headers.insert(header::HOST, host_value.clone());
    set_forwarded_headers(&mut parts.headers, peer, host_value);
    // The client pools by scheme and authority, i.e. per pod backend; it sends origin form
    // (`/path?query`), which every server understands.
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    parts.uri = match Uri::builder().scheme("http").authority(backend.to_string()).path_and_query(path).build() {
        Ok(uri) => uri,
        Err(error) => {
            tracing::debug!(%error, "cannot build the backend URI");
            return text(StatusCode::BAD_REQUEST, "invalid request target\n".into());
        }
    };
    parts.version = Version::HTTP_11;

    let body = CountingBody::new(body, route.counters.clone(), Direction::Ingress);
    let timeout = proxy.config.response_header_timeout;
    let sent = tokio::time::timeout(timeout, proxy.client.request(Request::from_parts(parts, body))).await;
    let mut response = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(error)) if error.is_connect() && timed_out(&error) => {
            tracing::debug!(%backend, %error, "pod backend connect timed out");
            return text(StatusCode::GATEWAY_TIMEOUT, format!("pod {pod} did not accept the connection in time\n"));
        }
        Ok(Err(error)) if error.is_connect() => {
            tracing::debug!(%backend, %error, "pod backend unreachable");
            return text(StatusCode::BAD_GATEWAY, format!("pod {pod} is not reachable\n"));
        }
        Ok(Err(error)) => {
            tracing::debug!(%backend, error = ?error, "pod backend gave no valid response");
            return text(StatusCode::BAD_GATEWAY, format!("pod {pod} gave no valid response\n"));
        }
        Err(_) => {
            tracing::debug!(%backend, ?timeout, "pod backend did not answer in time");
            return text(
                StatusCode::GATEWAY_TIMEOUT,
                format!("pod {pod} did not send its response headers within {} s\n", timeout.as_secs_f64()),
            );
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            // A switch the client never asked for cannot be passed on.
            return text(StatusCode::BAD_GATEWAY, format!("pod {pod} switched protocols unasked\n"));
        };
        let pod_upgrade = hyper::upgrade::on(&mut response);
        let (mut parts, _empty) = response.into_parts();
        let protocol = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        take_sleep_request(&mut parts.headers, route);
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = protocol {
            parts.headers.insert(header::UPGRADE, protocol);
        }
        tokio::spawn(splice(client_upgrade, pod_upgrade, route.clone(), in_flight).in_current_span());
        let empty = Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync();
        return Response::from_parts(parts, empty);
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    take_sleep_request(&mut parts.headers, route);
    let body = CountingBody::new(body, route.counters.clone(), Direction::Egress).holding(in_flight);
    Response::from_parts(parts, body.boxed_unsync())
}

/// The pod's own signal to be scaled to zero (a response header), acted on and never passed on to
/// the client. On a 101 it takes effect once the upgraded connection, in flight until then, ends.
fn take_sleep_request(headers: &mut HeaderMap, route: &Route) {
    if headers.remove(crate::SCALE_TO_ZERO_HEADER).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"now")) {
        route.counters.request_sleep(true);
    }
}

/// Copies bytes both ways between the client's and the pod's upgraded connections, counting them
/// as traffic and the connection as in flight, until both directions have ended, or one has and
/// [`HALF_CLOSED_GRACE`] has passed since.
async fn splice(client: OnUpgrade, pod: OnUpgrade, route: Route, _in_flight: InFlight) {
    use tokio::io::AsyncWriteExt as _;
    let (client, pod) = match tokio::try_join!(client, pod) {
        Ok(both) => both,
        Err(error) => {
            tracing::debug!(%error, "upgrade failed");
            return;
        }
    };
    let client = CountingIo::new(TokioIo::new(client), route.counters.clone(), Direction::Ingress);
    let pod = CountingIo::new(TokioIo::new(pod), route.counters, Direction::Egress);
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut pod_read, mut pod_write) = tokio::io::split(pod);
    // Each direction passes its end of stream on as a shutdown of the other side's writes.
    let to_pod = async {
        let copied = tokio::io::copy(&mut client_read, &mut pod_write).await;
        let _ = pod_write.shutdown().await;
        copied
    };
    let from_pod = async {
        let copied = tokio::io::copy(&mut pod_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
        copied
    };
    let (mut to_pod, mut from_pod) = (std::pin::pin!(to_pod), std::pin::pin!(from_pod));
    let (first, rest) = tokio::select! {
        _ = &mut to_pod => ("client", tokio::time::timeout(HALF_CLOSED_GRACE, &mut from_pod).await),
        _ = &mut from_pod => ("pod", tokio::time::timeout(HALF_CLOSED_GRACE, &mut to_pod).await),
    };
    match rest {
        Ok(_) => tracing::debug!(first, "upgraded connection closed"),
        Err(_) => tracing::debug!(first, "upgraded connection dropped: the other side kept it half open"),
    }
}

/// The `Upgrade` header's value if the request asks to switch protocols (`Connection: upgrade`
/// and an `Upgrade` header, RFC 9110 section 7.8).
fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asked = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if asked { headers.get(header::UPGRADE).cloned() } else { None }
}

/// Whether a connect error was the connect timeout rather than a refusal.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        source = e.source();
    }
    false
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

/// Headers through which proxies tell a server who the client is. The pod trusts what the
/// ingress puts there, so a client's own copies are dropped, never passed on or appended to:
/// the ingress is the pod's only hop from the internet.
const FORWARDING_HEADERS: [&str; 5] =
    ["forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"];

/// Tells the pod who the client is and what it asked for, from the connection itself, since
/// the pod only sees the ingress's connection.
fn set_forwarded_headers(headers: &mut HeaderMap, peer: SocketAddr, host: HeaderValue) {
    for name in FORWARDING_HEADERS {
        headers.remove(name);
    }
    let client: IpAddr = peer.ip().to_canonical();
    let client_text = client.to_string();
    // RFC 7239: an IPv6 node is bracketed and quoted; a host with a port (a colon) must be
    // quoted too, so it always is, with quotes and backslashes escaped.
    let node = if client.is_ipv6() { format!("\"[{client_text}]\"") } else { client_text.clone() };
    let host_text = host.to_str().unwrap_or("").replace('\\', "\\\\").replace('"', "\\\"");
    let forwarded = format!("for={node};proto=http;host=\"{host_text}\"");
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        headers.insert(header::FORWARDED, value);
    }
    if let Ok(value) = HeaderValue::from_str(&client_text) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), value.clone());
        headers.insert(HeaderName::from_static("x-real-ip"), value);
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
