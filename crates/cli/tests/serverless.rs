//! Scale to zero, end to end through the real binaries: a pod with `replicas.min: 0` is stopped
//! once idle (no process or container cgroup left, nothing but storage billed, exactly), and the
//! next HTTP request or TCP connection wakes it; every request that arrives during the wake is
//! served; a wake that fails answers 503 with the reason, which `tpod status` shows too.
//! WebSocket connections pass through the ingress to a pod (tests/probe/wsecho.rs, an echo
//! server), wake it at zero, and keep it awake while they are open. Needs root, like the
//! provider.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{ClientRequestBuilder, Message, WebSocket};

/// A devnet whose provider lets pods idle for as little as a second and wakes within `wake`.
fn devnet(n: u8, dir: &Path, wake_secs: u64) -> Devnet {
    let overrides = dir.join("overrides.toml");
    std::fs::write(
        &overrides,
        format!("[scaling]\nmin_idle_timeout_secs = 1\nidle_timeout_secs = 60\nwake_timeout_secs = {wake_secs}\n"),
    )
    .unwrap();
    Devnet::up_with(n, Some(overrides))
}

/// The container cgroups of `container` in pod `pod_id` that exist.
fn container_cgroups(pod_id: &str, container: &str) -> Vec<PathBuf> {
    let path = tpod_runtime::cgroups_path(pod_id.trim_start_matches("0x"), container);
    ["memory", "cpu", "pids", "unified", ""]
        .iter()
        .map(|h| PathBuf::from(format!("/sys/fs/cgroup/{h}{path}")))
        .filter(|p| p.exists())
        .collect()
}

/// Polls `tpod status` until its state is `state`.
fn wait_for_state(net: &Devnet, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = net.ok(&["status"]);
        if status["state"] == state {
            return status;
        }
        assert!(Instant::now() < deadline, "never {state}: {status}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The bill's usage counter `name` (decimal, base units).
fn usage(net: &Devnet, name: &str) -> u128 {
    net.ok(&["bill"])["usage"][name].as_str().unwrap().parse().unwrap()
}

/// One GET `url` (a fresh connection): (status, body).
fn fetch(url: &str) -> (u16, String) {
    get(url)
}

#[test]
fn an_idle_pod_scales_to_zero_and_the_next_request_or_connection_wakes_it() {
    let work = tempfile::tempdir().unwrap();
    let net = devnet(26, work.path(), 20);
    let manifest = hello(work.path(), "awake\n");
    // A second container serves the same page on a TCP port.
    let yaml = std::fs::read_to_string(&manifest).unwrap().replace(
        "replicas:\n  min: 1\n  max: 1\n",
        "  - name: raw\n    image: ./image\n    command: [\"/bin/busybox\", \"httpd\"]\n    args: [\"-f\", \"-p\", \
         \"9090\", \"-h\", \"/www\"]\n    ports:\n      - containerPort: 9090\n        protocol: tcp\n    resources:\n      \
         cpu: 50m\n      memory: 32Mi\nreplicas:\n  min: 0\n  max: 1\n  idleTimeout: 3s\n",
    );
    std::fs::write(&manifest, yaml).unwrap();
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap()]);
    let url = deployed["url"].as_str().unwrap().to_owned();
    let pod_id = deployed["pod_id"].as_str().unwrap().to_owned();
    wait_for_body(&url, "awake\n");

    // Idle for 3 s: at zero, with no process and no container cgroup.
    let status = wait_for_state(&net, "scaled-to-zero");
    assert!(status["containers"].as_array().unwrap().iter().all(|c| c["state"] == "exited"), "{status}");
    for container in ["web", "raw"] {
        let left = container_cgroups(&pod_id, container);
        assert!(left.is_empty(), "cgroups of {container} left at zero: {left:?}");
    }
    // Nothing but storage (none here) is billed at zero: not one base unit more.
    let (cpu, memory, metered) =
        (usage(&net, "cpu_reserved"), usage(&net, "memory_reserved"), net.ok(&["bill"])["metered"].clone());
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!((usage(&net, "cpu_reserved"), usage(&net, "memory_reserved")), (cpu, memory));
    assert_eq!(net.ok(&["bill"])["metered"], metered);

    // 20 requests at once wake it; every one is served.
    let woken = Instant::now();
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..20).map(|_| s.spawn(|| fetch(&url))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for answer in &answers {
        assert_eq!(answer, &(200, "awake\n".to_owned()), "all answers: {answers:?}");
    }
    let took = woken.elapsed();
    let status = net.ok(&["status"]);
    assert_eq!(status["state"], "running", "{status}");
    let wake = &status["last_wake"];
    assert!(wake["error"].is_null(), "{status}");
    let millis = wake["millis"].as_u64().unwrap();
    assert!(millis > 0 && u128::from(millis) <= took.as_millis(), "wake took {millis} ms of {took:?}");
    // Running again is billed again, from the next sample on.
    let deadline = Instant::now() + Duration::from_secs(10);
    while usage(&net, "cpu_reserved") <= cpu {
        assert!(Instant::now() < deadline, "running again is not billed");
        std::thread::sleep(Duration::from_millis(200));
    }

    // At zero once more, then a TCP connection wakes it.
    wait_for_state(&net, "scaled-to-zero");
    let host_port = status["tcp_ports"][0]["host_port"].as_u64().unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", u16::try_from(host_port).unwrap())).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.") && response.ends_with("awake\n"), "{response}");
    assert_eq!(net.ok(&["status"])["state"], "running");

    net.ok(&["delete"]);
    assert!(net.runtime_pods().is_empty(), "runtime state left: {:?}", net.runtime_pods());
}

#[test]
fn a_failing_wake_answers_503_with_the_reason() {
    let work = tempfile::tempdir().unwrap();
    let net = devnet(27, work.path(), 2);
    let manifest = hello(work.path(), "first life\n");
    // Serves once; woken, it finds its mark in its rootfs (kept at zero) and never listens.
    let yaml = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace(
            "command: [\"/bin/busybox\", \"httpd\"]\n    args: [\"-f\", \"-vv\", \"-p\", \"8080\", \"-h\", \"/www\"]",
            "command: [\"/bin/busybox\", \"sh\", \"-c\"]\n    args: [\"if [ -e /woken ]; then exec /bin/busybox sleep \
             1000; fi; /bin/busybox touch /woken; exec /bin/busybox httpd -f -p 8080 -h /www\"]",
        )
        // Long enough for the first answer on a loaded machine (deploy watches the pod 3 s).
        .replace("replicas:\n  min: 1\n  max: 1\n", "replicas:\n  min: 0\n  max: 1\n  idleTimeout: 20s\n");
    std::fs::write(&manifest, yaml).unwrap();
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap()]);
    let url = deployed["url"].as_str().unwrap().to_owned();
    wait_for_body(&url, "first life\n");
    wait_for_state(&net, "scaled-to-zero");

    let (code, body) = fetch(&url);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("port 8080 did not answer within 2s"), "{body}");
    let status = wait_for_state(&net, "scaled-to-zero");
    let error = status["last_wake"]["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains("did not answer"), "{status}");
    let text = String::from_utf8_lossy(&net.tpod(&["status"]).stdout).into_owned();
    assert!(text.contains("FAILED") && text.contains("did not answer"), "{text}");

    net.ok(&["delete"]);
    assert!(net.runtime_pods().is_empty(), "runtime state left: {:?}", net.runtime_pods());
}

#[test]
fn a_pod_can_ask_to_be_scaled_to_zero_at_once() {
    let work = tempfile::tempdir().unwrap();
    let net = devnet(28, work.path(), 20);
    // busybox httpd serves a CGI script whose response asks for sleep.
    let dir = work.path();
    std::fs::write(dir.join("index.html"), "up\n").unwrap();
    std::fs::write(
        dir.join("sleep"),
        "#!/bin/busybox sh\nprintf 'X-Tpod-Scale-To-Zero: now\\r\\nContent-Type: text/plain\\r\\n\\r\\nbye\\n'\n",
    )
    .unwrap();
    let file = |src: PathBuf, dest: &str, mode| tpod_image::RootfsFile { src, dest: dest.to_owned(), mode };
    let files = [
        file("/bin/busybox".into(), "/bin/busybox", 0o755),
        file(dir.join("index.html"), "/www/index.html", 0o644),
        file(dir.join("sleep"), "/www/cgi-bin/sleep", 0o755),
    ];
    let config = tpod_image::ContainerConfig {
        entrypoint: vec!["/bin/busybox".to_owned()],
        cmd: Vec::new(),
        env: vec!["PATH=/bin".to_owned()],
        working_dir: Some("/".to_owned()),
        exposed_ports: Vec::new(),
    };
    tpod_image::build_layout(&dir.join("image"), &files, &config).unwrap();
    let manifest = dir.join("tpod.yaml");
    std::fs::write(
        &manifest,
        "name: asks\ncontainers:\n  - name: web\n    image: ./image\n    command: [\"/bin/busybox\", \"httpd\"]\n    \
         args: [\"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n    ports:\n      - containerPort: 8080\n        protocol: \
         http\n    resources:\n      cpu: 100m\n      memory: 32Mi\nreplicas:\n  min: 0\n  max: 1\n  idleTimeout: 10m\n",
    )
    .unwrap();
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap()]);
    let url = deployed["url"].as_str().unwrap().to_owned();
    wait_for_body(&url, "up\n");

    // The header is the pod's signal to the provider, not something the client sees.
    let rest = url.strip_prefix("http://").unwrap();
    let (host, port) = rest.trim_end_matches('/').rsplit_once(':').unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET /cgi-bin/sleep HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200") && response.contains("bye\n"), "{response}");
    assert!(!response.to_ascii_lowercase().contains("x-tpod-scale-to-zero"), "{response}");
    // Down within a few sample intervals, though its idle timeout is 10 minutes.
    wait_for_state(&net, "scaled-to-zero");
    assert_eq!(fetch(&url), (200, "up\n".to_owned()));

    net.ok(&["delete"]);
    assert!(net.runtime_pods().is_empty(), "runtime state left: {:?}", net.runtime_pods());
}

/// Deploys the WebSocket echo pod (tests/probe/wsecho.rs, static, alone in its image) with
/// `replicas` (the manifest's `replicas:` block) and waits until it answers; its URL.
fn deploy_wsecho(net: &Devnet, dir: &Path, replicas: &str) -> String {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    build_static(&here.join("tests/probe/wsecho.rs"), &dir.join("wsecho"));
    let files = [tpod_image::RootfsFile { src: dir.join("wsecho"), dest: "/bin/wsecho".to_owned(), mode: 0o755 }];
    let config = tpod_image::ContainerConfig {
        entrypoint: vec!["/bin/wsecho".to_owned()],
        cmd: Vec::new(),
        env: Vec::new(),
        working_dir: Some("/".to_owned()),
        exposed_ports: Vec::new(),
    };
    tpod_image::build_layout(&dir.join("image"), &files, &config).unwrap();
    let manifest = dir.join("tpod.yaml");
    std::fs::write(
        &manifest,
        format!(
            "name: wsecho\ncontainers:\n  - name: echo\n    image: ./image\n    command: [\"/bin/wsecho\"]\n    args: \
             [\"8080\"]\n    ports:\n      - containerPort: 8080\n        protocol: http\n    resources:\n      cpu: \
             100m\n      memory: 64Mi\n{replicas}"
        ),
    )
    .unwrap();
    let deployed = net.ok(&["deploy", manifest.to_str().unwrap()]);
    let url = deployed["url"].as_str().unwrap().to_owned();
    wait_for_body(&url, "ws-echo\n");
    url
}

/// The pod's host name and the ingress port in `url`, as `host:port`.
fn authority(url: &str) -> &str {
    url.strip_prefix("http://").unwrap().trim_end_matches('/')
}

/// A WebSocket to `path` on `url`'s pod through the ingress (a TCP connection to 127.0.0.1 at
/// `url`'s port, the pod's name in `Host`), offering the subprotocols `echo.v1` and `chat`;
/// reads time out after 30 s, so a wake has time.
fn ws_connect(url: &str, path: &str) -> (WebSocket<TcpStream>, tungstenite::handshake::client::Response) {
    let authority = authority(url);
    let port: u16 = authority.rsplit_once(':').unwrap().1.parse().unwrap();
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the ingress");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let uri = format!("ws://{authority}{path}").parse().unwrap();
    let request = ClientRequestBuilder::new(uri).with_sub_protocol("echo.v1").with_sub_protocol("chat");
    tungstenite::client(request, stream).unwrap_or_else(|e| panic!("WebSocket handshake on {authority}{path}: {e}"))
}

/// The header `name` of a handshake response, as text.
fn header<'a>(response: &'a tungstenite::handshake::client::Response, name: &str) -> &'a str {
    response.headers().get(name).map_or("<missing>", |v| v.to_str().unwrap())
}

/// Sends `message` and reads the echo, which must equal it; its payload length.
fn echo(ws: &mut WebSocket<TcpStream>, message: Message) -> usize {
    let len = message.len();
    ws.send(message.clone()).unwrap_or_else(|e| panic!("sending a {len}-byte message: {e}"));
    let got = ws.read().unwrap_or_else(|e| panic!("reading the echo of a {len}-byte message: {e}"));
    assert!(got == message, "the echo of {} is {}", describe(&message), describe(&got));
    len
}

/// Closes `ws` with 1000 "bye": the pod's close must come back with the same code and reason,
/// then the pod ends the connection, and the client lets go of it (as RFC 6455 section 7.1.1 has
/// it: the server closes TCP first). The close payload's length.
fn close(mut ws: WebSocket<TcpStream>) -> usize {
    ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })).expect("send the close");
    match ws.read() {
        Ok(Message::Close(Some(frame))) => {
            assert_eq!((frame.code, frame.reason.as_str()), (CloseCode::Normal, "bye"), "the pod's close")
        }
        other => panic!("expected the pod's close, got {:?}", other.map(|m| describe(&m))),
    }
    match ws.read() {
        Err(tungstenite::Error::ConnectionClosed) => {}
        other => {
            panic!("the connection should have ended after the close handshake: {:?}", other.map(|m| describe(&m)))
        }
    }
    2 + "bye".len()
}

/// A message's kind, length and first bytes (all of it may be hundreds of KiB).
fn describe(message: &Message) -> String {
    let bytes = match message {
        Message::Text(text) => text.as_bytes(),
        Message::Binary(bytes) | Message::Ping(bytes) | Message::Pong(bytes) => bytes,
        Message::Close(_) | Message::Frame(_) => &[],
    };
    let kind = format!("{message:?}").split('(').next().unwrap_or_default().to_owned();
    format!("{kind} of {} bytes starting {:?}", message.len(), String::from_utf8_lossy(&bytes[..bytes.len().min(40)]))
}

/// `len` bytes that are not all alike (so a shifted or reordered copy would differ).
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ (i >> 8) as u8).collect()
}

/// The bill's traffic counters `(ingress, egress)`, once the ingress counted at least `at_least`
/// more bytes each way than `since`.
fn traffic_past(net: &Devnet, since: (u128, u128), at_least: u128) -> (u128, u128) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = (usage(net, "ingress"), usage(net, "egress"));
        if now.0 - since.0 >= at_least && now.1 - since.1 >= at_least {
            return now;
        }
        assert!(Instant::now() < deadline, "traffic {since:?} -> {now:?}: not {at_least} bytes more each way");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn websocket_messages_echo_through_the_ingress() {
    let work = tempfile::tempdir().unwrap();
    let net = devnet(29, work.path(), 20);
    let url = deploy_wsecho(&net, work.path(), "replicas:\n  min: 1\n  max: 1\n");
    let before = (usage(&net, "ingress"), usage(&net, "egress"));

    // The pod sees the path and query, the host name as the client sent it and who the client
    // is; the client sees the pod's answer, its accept value (tungstenite checks it against the
    // key) and its choice of subprotocol.
    let (mut ws, response) = ws_connect(&url, "/chat?room=1");
    assert_eq!(response.status(), 101);
    assert_eq!(header(&response, "x-echo-target"), "/chat?room=1");
    assert_eq!(header(&response, "x-echo-host"), authority(&url));
    assert_eq!(header(&response, "x-echo-forwarded-for"), "127.0.0.1");
    assert_eq!(header(&response, "sec-websocket-protocol"), "echo.v1");
    // A second connection to the same pod at the same time.
    let (mut other, _) = ws_connect(&url, "/other");

    let mut payload = 0;
    for message in [
        Message::text("hello"),
        Message::binary(vec![0u8, 255, 1, 254, 0x88, 0x81]),
        Message::text(""),
        Message::text("héllo wörld ✓ 🦀"),
        // Past 125 and past 64 KiB: the 2- and 8-byte length forms, and more than one read or
        // write of the ingress's copy.
        Message::binary(pattern(300)),
        Message::binary(pattern(200 * 1024 + 7)),
        Message::text("x".repeat(70_000)),
    ] {
        payload += echo(&mut ws, message);
        payload += echo(&mut other, Message::text(format!("other {payload}")));
    }
    // Several in flight at once come back in order.
    for i in 0..5 {
        ws.send(Message::text(format!("queued {i}"))).unwrap();
    }
    for i in 0..5 {
        let expected = format!("queued {i}");
        payload += expected.len();
        assert_eq!(ws.read().unwrap(), Message::text(expected));
    }
    // A ping gets the pod's pong.
    ws.send(Message::Ping(b"are you there".to_vec().into())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"are you there".to_vec().into()));
    payload += "are you there".len();

    // The close handshake goes through; the other connection is untouched by it.
    payload += close(ws);
    payload += echo(&mut other, Message::binary(pattern(70_000)));
    payload += close(other);

    // Upgraded bytes count as the pod's traffic, each way: the payloads plus frame headers
    // (at most 14 bytes a frame) and the few bytes of the plain requests before.
    let payload = payload as u128;
    let after = traffic_past(&net, before, payload);
    let slack = 4096;
    assert!(after.0 - before.0 <= payload + slack && after.1 - before.1 <= payload + slack, "{before:?} -> {after:?}");

    // Plain requests still go through.
    assert_eq!(fetch(&url), (200, "ws-echo\n".to_owned()));
    net.ok(&["delete"]);
    assert!(net.runtime_pods().is_empty(), "runtime state left: {:?}", net.runtime_pods());
}

#[test]
fn a_websocket_wakes_a_pod_at_zero_and_keeps_it_awake_while_open() {
    let work = tempfile::tempdir().unwrap();
    let net = devnet(30, work.path(), 20);
    // Long enough not to expire between deploy's watch and the first request.
    let url = deploy_wsecho(&net, work.path(), "replicas:\n  min: 0\n  max: 1\n  idleTimeout: 6s\n");

    // The pod asks to go to zero at once.
    assert_eq!(fetch(&format!("{}/sleep", url.trim_end_matches('/'))), (200, "bye\n".to_owned()));
    let status = wait_for_state(&net, "scaled-to-zero");
    assert!(status["containers"].as_array().unwrap().iter().all(|c| c["state"] == "exited"), "{status}");
    assert!(status["last_wake"].is_null(), "woken before any WebSocket: {status}");

    // Three WebSockets at once wake it: every handshake completes, each connection echoes.
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let woken = Instant::now();
    let url = url.as_str();
    let mut sockets: Vec<WebSocket<TcpStream>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3).map(|i| s.spawn(move || ws_connect(url, &format!("/wake/{i}")))).collect();
        handles.into_iter().map(|h| h.join().unwrap().0).collect()
    });
    let took = woken.elapsed();
    for (i, ws) in sockets.iter_mut().enumerate() {
        echo(ws, Message::text(format!("woken {i}")));
        echo(ws, Message::binary(pattern(100 * 1024 + i)));
    }
    let status = net.ok(&["status"]);
    assert_eq!(status["state"], "running", "{status}");
    let wake = &status["last_wake"];
    assert!(wake["error"].is_null(), "{status}");
    let millis = wake["millis"].as_u64().unwrap();
    assert!(millis > 0 && u128::from(millis) <= took.as_millis(), "wake took {millis} ms of {took:?}: {status}");
    assert!(wake["at"].as_u64().unwrap() >= since, "{status}");

    // One WebSocket left open, silent, keeps the pod awake past its idle timeout (6 s); the
    // provider samples every second.
    let mut ws = sockets.pop().unwrap();
    for other in sockets {
        close(other);
    }
    let quiet = Instant::now();
    while quiet.elapsed() < Duration::from_secs(9) {
        let status = net.ok(&["status"]);
        assert_eq!(status["state"], "running", "scaled down with a WebSocket open: {status}");
        std::thread::sleep(Duration::from_millis(500));
    }
    echo(&mut ws, Message::text("still here"));
    assert_eq!(net.ok(&["status"])["last_wake"], *wake, "woken again with a WebSocket open");
    close(ws);

    // Once it is closed the pod is idle: at zero again after its timeout, not before.
    let closed = Instant::now();
    wait_for_state(&net, "scaled-to-zero");
    assert!(closed.elapsed() >= Duration::from_secs(5), "at zero {:?} after the last close", closed.elapsed());

    net.ok(&["delete"]);
    assert!(net.runtime_pods().is_empty(), "runtime state left: {:?}", net.runtime_pods());
}
