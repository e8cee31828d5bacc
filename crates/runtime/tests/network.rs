//! Network isolation of real pods (needs root and `nft`, as the provider does): probe pods made
//! of busybox try to reach another pod, the bridge gateway and the host's other addresses (IPv4
//! and IPv6, where test servers listen on 0.0.0.0 and [::]), and, with outbound internet on, a
//! stand-in for the internet and private ranges behind the host (in a network namespace of the
//! test's own; no packet leaves the machine). The host, standing in for the ingress, still
//! reaches the pods. A bridge or subnet that collides with the host's network is refused, and
//! every test checks that its bridges, namespaces and nftables tables are gone at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Env, random_hex};
use futures::StreamExt;
use tpod_runtime::{ContainerSpec, LocalRuntime, LogOptions, PodSpec, RestartPolicy, Runtime, RuntimeError};

/// What the host's test servers answer: a pod that reads it reached the host.
const HOST_MARKER: &str = "host-secret";
/// What the upstream namespace's server answers.
const UPSTREAM_MARKER: &str = "upstream-page";

/// Runs a command, panicking with its stderr on failure; returns stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(args: &[&str]) -> String {
    run("ip", args)
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn nft_tables() -> String {
    run("nft", &["list", "tables"])
}

impl Env {
    /// Bridge `tpn<hex>` on `subnet`, with outbound internet or not.
    fn new(subnet: (Ipv4Addr, u8), outbound: bool) -> Self {
        let mut env = Self::create("tpn", subnet);
        env.config.outbound_internet = outbound;
        env
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.config.subnet.0) + 1)
    }

    fn image(&self, page: &str) -> tpod_image::Image {
        self.image_with_page(page)
    }

    /// Asserts that nothing of the network is left: the bridge, its nftables tables, and the
    /// namespaces and veths of `pods`.
    fn assert_network_gone(&self, pods: &[String]) {
        let bridge = &self.config.bridge;
        assert!(!link_exists(bridge), "bridge {bridge} left behind");
        let tables = nft_tables();
        assert!(!tables.contains(&format!("tpod-{bridge}")), "nft tables of {bridge} left behind:\n{tables}");
        for id in pods {
            let prefix = &id[..12];
            assert!(!Path::new("/var/run/netns").join(format!("tpod-{prefix}")).exists(), "namespace of {id} left");
            assert!(!link_exists(&format!("tp{prefix}")), "veth of {id} left");
        }
    }
}

fn container(image: &tpod_image::Image, name: &str, command: &[&str]) -> ContainerSpec {
    ContainerSpec {
        name: name.to_owned(),
        image: image.clone(),
        command: Some(command.iter().map(|s| (*s).to_owned()).collect()),
        args: None,
        env: BTreeMap::new(),
        working_dir: None,
        cpu_millis: 500,
        memory_bytes: 64 << 20,
        pids_limit: 0,
        mounts: Vec::new(),
    }
}

fn httpd(image: &tpod_image::Image) -> ContainerSpec {
    container(image, "web", &["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"])
}

/// One connection a probe pod tries: `name`, host (IPv4, or IPv6 with its scope) and port, and
/// the text that shows it got through.
struct Target {
    name: String,
    host: String,
    port: u16,
    marker: String,
}

fn target(name: &str, host: impl ToString, port: u16, marker: &str) -> Target {
    Target { name: name.to_owned(), host: host.to_string(), port, marker: marker.to_owned() }
}

/// A container that tries every target once with busybox `nc` (2 s to connect, 5 s in all), printing
/// `PROBE <name> reached` or `PROBE <name> blocked`, then `PROBE done`, then sleeps.
fn probe(image: &tpod_image::Image, targets: &[Target]) -> ContainerSpec {
    let mut script = String::new();
    for t in targets {
        script.push_str(&format!(
            "if printf 'GET / HTTP/1.0\\r\\n\\r\\n' | /bin/busybox timeout 5 /bin/busybox nc -w 2 '{}' {} 2>/dev/null \
             | /bin/busybox grep -q '{}'; \
             then echo 'PROBE {} reached'; else echo 'PROBE {} blocked'; fi\n",
            t.host, t.port, t.marker, t.name, t.name
        ));
    }
    script.push_str("echo 'PROBE done'\nexec /bin/busybox sleep 100000\n");
    container(image, "probe", &["/bin/busybox", "sh", "-c", &script])
}

/// The probe's verdicts, by target name, once it has printed them all.
async fn probe_results(runtime: &LocalRuntime, id: &str) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut stream = runtime.logs(id, "probe", LogOptions { follow: false, tail_lines: 0 }).await.unwrap();
        let mut text = Vec::new();
        while let Some(chunk) = stream.next().await {
            text.extend(chunk.unwrap());
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        if text.contains("PROBE done") {
            return text
                .lines()
                .filter_map(|l| l.strip_prefix("PROBE "))
                .filter_map(|l| l.rsplit_once(' '))
                .map(|(name, verdict)| (name.to_owned(), verdict.to_owned()))
                .collect();
        }
        assert!(Instant::now() < deadline, "the probe did not finish; its log:\n{text}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn assert_verdicts(results: &BTreeMap<String, String>, expected: &[(&str, &str)]) {
    for (name, verdict) in expected {
        assert_eq!(results.get(*name).map(String::as_str), Some(*verdict), "{name}: all results {results:?}");
    }
}

/// GET / from ip:8080 as the ingress does, retrying while the server comes up.
fn http_get(ip: Ipv4Addr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&(ip, 8080).into(), Duration::from_secs(2))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        })();
        match attempt {
            Ok(response) if !response.is_empty() => return response,
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            other => panic!("GET {ip}:8080 failed: {other:?}"),
        }
    }
}

/// A host service that pods must not reach: answers [`HOST_MARKER`] to anything that connects
/// to `bind`, until dropped.
struct HostServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostServer {
    fn start(bind: SocketAddr) -> Self {
        let listener = TcpListener::bind(bind).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                        let mut request = [0u8; 512];
                        let _ = stream.read(&mut request);
                        let _ = stream.write_all(format!("HTTP/1.0 200 OK\r\n\r\n{HOST_MARKER}\n").as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { port, stop, thread: Some(thread) }
    }
}

impl Drop for HostServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The host's global IPv4 addresses outside the test's own interfaces (its LAN address).
fn host_ipv4_addresses() -> Vec<Ipv4Addr> {
    ip(&["-4", "-o", "addr", "show", "scope", "global"])
        .lines()
        .filter(|l| !l.split_whitespace().nth(1).is_some_and(|dev| dev.starts_with("tp")))
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect()
}

/// The host's global IPv6 addresses.
fn host_ipv6_addresses() -> Vec<String> {
    ip(&["-6", "-o", "addr", "show", "scope", "global"])
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet6").nth(1))
        .filter_map(|a| a.split('/').next().map(str::to_owned))
        .collect()
}

/// The EUI-64 link-local address the kernel gives an interface with MAC `mac` (what the bridge
/// would have if IPv6 were on it).
fn eui64_link_local(mac: &str) -> String {
    let b: Vec<u8> = mac.trim().split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    format!(
        "fe80::{:x}:{:x}:{:x}:{:x}",
        u16::from_be_bytes([b[0] ^ 2, b[1]]),
        u16::from_be_bytes([b[2], 0xff]),
        u16::from_be_bytes([0xfe, b[3]]),
        u16::from_be_bytes([b[4], b[5]])
    )
}

fn pod_id() -> String {
    random_hex(64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_only_themselves_and_the_ingress_reaches_them() {
    let env = Env::new((Ipv4Addr::new(10, 250, 0, 0), 24), false);
    let runtime = env.runtime();
    runtime.prepare_network().await.unwrap();
    let bridge = env.config.bridge.clone();
    let server4 = HostServer::start("0.0.0.0:0".parse().unwrap());
    let server6 = HostServer::start("[::]:0".parse().unwrap());

    // Pod B: another tenant's web page.
    let b = pod_id();
    let b_ip = runtime
        .start(PodSpec {
            restart_policy: RestartPolicy::Always,
            id: b.clone(),
            containers: vec![httpd(&env.image("pod-b-page"))],
            volumes: Vec::new(),
        })
        .await
        .unwrap()
        .ip;
    assert!(http_get(b_ip).contains("pod-b-page"), "the host reaches pod B");

    // Pod A: its own web page, and a probe of everything it must not reach.
    let a_image = env.image("pod-a-page");
    let mac = std::fs::read_to_string(Path::new("/sys/class/net").join(&bridge).join("address")).unwrap();
    let mut targets = vec![
        // The control: the probe gets through where it should (its own pod).
        target("own-localhost", "127.0.0.1", 8080, "pod-a-page"),
        target("other-pod", b_ip, 8080, "pod-b-page"),
        target("gateway", env.gateway(), server4.port, HOST_MARKER),
        target("gateway-link-local", format!("{}%eth0", eui64_link_local(&mac)), server6.port, HOST_MARKER),
    ];
    let host4 = host_ipv4_addresses();
    for (i, address) in host4.iter().enumerate() {
        targets.push(target(&format!("host-v4-{i}"), address, server4.port, HOST_MARKER));
    }
    let host6 = host_ipv6_addresses();
    for (i, address) in host6.iter().enumerate() {
        targets.push(target(&format!("host-v6-{i}"), address, server6.port, HOST_MARKER));
    }
    let a = pod_id();
    let a_ip = runtime
        .start(PodSpec {
            restart_policy: RestartPolicy::Always,
            id: a.clone(),
            containers: vec![httpd(&a_image), probe(&a_image, &targets)],
            volumes: Vec::new(),
        })
        .await
        .unwrap()
        .ip;
    let results = probe_results(&runtime, &a).await;
    let mut expected = vec![
        ("own-localhost", "reached"),
        ("other-pod", "blocked"),
        ("gateway", "blocked"),
        ("gateway-link-local", "blocked"),
    ];
    let names: Vec<String> = (0..host4.len())
        .map(|i| format!("host-v4-{i}"))
        .chain((0..host6.len()).map(|i| format!("host-v6-{i}")))
        .collect();
    expected.extend(names.iter().map(|n| (n.as_str(), "blocked")));
    assert_verdicts(&results, &expected);

    // The host (the ingress) still reaches both pods, and pod B still serves.
    assert!(http_get(a_ip).contains("pod-a-page"), "the host reaches pod A");
    assert!(http_get(b_ip).contains("pod-b-page"), "the host reaches pod B");

    // How: isolated bridge ports, no IPv6 on the pod, the bridge or the veths, and the rules.
    for id in [&a, &b] {
        let veth = format!("tp{}", &id[..12]);
        assert!(ip(&["-d", "link", "show", "dev", &veth]).contains("isolated on"), "{veth} is not isolated");
        assert_eq!(ip(&["-6", "addr", "show", "dev", &veth]).trim(), "", "{veth} has IPv6");
        let ns = format!("tpod-{}", &id[..12]);
        assert_eq!(ip(&["-n", &ns, "-6", "addr", "show", "dev", "eth0"]).trim(), "", "pod {id} has IPv6");
    }
    assert_eq!(ip(&["-6", "addr", "show", "dev", &bridge]).trim(), "", "the bridge has IPv6");
    // A port found without isolation (a pod of an earlier version, adopted) gets it back.
    let veth = format!("tp{}", &a[..12]);
    ip(&["link", "set", "dev", &veth, "type", "bridge_slave", "isolated", "off"]);
    runtime.prepare_network().await.unwrap();
    assert!(ip(&["-d", "link", "show", "dev", &veth]).contains("isolated on"), "{veth} is not isolated again");
    let rules = run("nft", &["list", "table", "inet", &format!("tpod-{bridge}")]);
    assert!(!rules.contains("masquerade"), "no outbound internet unless allowed:\n{rules}");

    // A provider taken down keeps the network while pods are on it, then removes it all.
    let refused = runtime.remove_network().await;
    assert!(matches!(refused, Err(RuntimeError::NetworkConflict { .. })), "{refused:?}");
    assert!(link_exists(&bridge));
    runtime.delete(&a).await.unwrap();
    runtime.delete(&b).await.unwrap();
    runtime.remove_network().await.unwrap();
    env.assert_network_gone(&[a, b]);
}

/// A network namespace standing in for what lies beyond the host: linked to it by a veth on
/// `203.0.113.0/30` (the host's side is a network it is attached to, like its LAN), holding
/// `198.51.100.7` (the internet), `10.253.0.7` (a private range) and `100.64.253.7` (CGNAT),
/// routed by the host through the veth. A busybox httpd answers [`UPSTREAM_MARKER`] on 8080.
struct Upstream {
    ns: String,
    veth: String,
    server: Child,
    _www: tempfile::TempDir,
}

const INTERNET: &str = "198.51.100.7";
const PRIVATE: &str = "10.253.0.7";
const CGNAT: &str = "100.64.253.7";
const UPSTREAM_LINK: &str = "203.0.113.2";

impl Upstream {
    fn start() -> Self {
        let suffix = random_hex(6);
        let (ns, veth) = (format!("tpnu{suffix}"), format!("tpnu{suffix}"));
        ip(&["netns", "add", &ns]);
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", "up0", "netns", &ns]);
        ip(&["addr", "add", "203.0.113.1/30", "dev", &veth]);
        ip(&["link", "set", &veth, "up"]);
        ip(&["-n", &ns, "addr", "add", "203.0.113.2/30", "dev", "up0"]);
        ip(&["-n", &ns, "link", "set", "up0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        for address in [INTERNET, PRIVATE, CGNAT] {
            ip(&["-n", &ns, "addr", "add", &format!("{address}/32"), "dev", "lo"]);
            ip(&["route", "add", &format!("{address}/32"), "via", UPSTREAM_LINK, "dev", &veth]);
        }
        ip(&["-n", &ns, "route", "add", "default", "via", "203.0.113.1"]);
        let www = tempfile::tempdir().unwrap();
        std::fs::write(www.path().join("index.html"), UPSTREAM_MARKER).unwrap();
        let server = Command::new("ip")
            .args(["netns", "exec", &ns, "/bin/busybox", "httpd", "-f", "-p", "8080", "-h"])
            .arg(www.path())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        // The routes are in place: nothing for these addresses can leave through the host's uplink.
        for address in [INTERNET, PRIVATE, CGNAT] {
            assert!(
                ip(&["route", "get", address]).contains(&format!("dev {veth}")),
                "{address} not routed to the test"
            );
        }
        Self { ns, veth, server, _www: www }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        // Deleting the namespace deletes the veth pair and with it the host's routes through it.
        let _ = Command::new("ip").args(["netns", "delete", &self.ns]).output();
        let deadline = Instant::now() + Duration::from_secs(2);
        while link_exists(&self.veth) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // The kernel may take longer to destroy the namespace; the veth (and its routes) go now.
        if link_exists(&self.veth) {
            let _ = Command::new("ip").args(["link", "delete", &self.veth]).output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_internet_reaches_the_internet_only() {
    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let upstream = Upstream::start();
    let env = Env::new((Ipv4Addr::new(10, 251, 0, 0), 24), true);
    let runtime = env.runtime();
    let server4 = HostServer::start("0.0.0.0:0".parse().unwrap());

    let b = pod_id();
    let b_ip = runtime
        .start(PodSpec {
            restart_policy: RestartPolicy::Always,
            id: b.clone(),
            containers: vec![httpd(&env.image("pod-b-page"))],
            volumes: Vec::new(),
        })
        .await
        .unwrap()
        .ip;
    let image = env.image("pod-a-page");
    let mut targets = vec![
        target("internet", INTERNET, 8080, UPSTREAM_MARKER),
        target("private-range", PRIVATE, 8080, UPSTREAM_MARKER),
        target("cgnat-range", CGNAT, 8080, UPSTREAM_MARKER),
        target("host-lan", UPSTREAM_LINK, 8080, UPSTREAM_MARKER),
        target("other-pod", b_ip, 8080, "pod-b-page"),
        target("gateway", env.gateway(), server4.port, HOST_MARKER),
    ];
    let host4 = host_ipv4_addresses();
    for (i, address) in host4.iter().enumerate() {
        targets.push(target(&format!("host-v4-{i}"), address, server4.port, HOST_MARKER));
    }
    let a = pod_id();
    let a_ip = runtime
        .start(PodSpec {
            restart_policy: RestartPolicy::Always,
            id: a.clone(),
            containers: vec![httpd(&image), probe(&image, &targets)],
            volumes: Vec::new(),
        })
        .await
        .unwrap()
        .ip;
    let results = probe_results(&runtime, &a).await;
    let names: Vec<String> = (0..host4.len()).map(|i| format!("host-v4-{i}")).collect();
    let mut expected = vec![
        ("internet", "reached"),
        ("private-range", "blocked"),
        ("cgnat-range", "blocked"),
        ("host-lan", "blocked"),
        ("other-pod", "blocked"),
        ("gateway", "blocked"),
    ];
    expected.extend(names.iter().map(|n| (n.as_str(), "blocked")));
    assert_verdicts(&results, &expected);
    assert!(http_get(a_ip).contains("pod-a-page"), "the host reaches pod A");

    runtime.delete(&a).await.unwrap();
    runtime.delete(&b).await.unwrap();
    runtime.remove_network().await.unwrap();
    env.assert_network_gone(&[a, b]);
    drop(upstream);
    std::fs::write("/proc/sys/net/ipv4/ip_forward", forwarding.trim()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_colliding_bridge_or_subnet_is_refused() {
    // Another interface routes 10.252.0.0/24 (a veth: not every kernel has dummy links).
    let dummy = format!("tpnd{}", random_hex(6));
    ip(&["link", "add", &dummy, "type", "veth", "peer", "name", &format!("tpne{}", &dummy[4..])]);
    ip(&["addr", "add", "10.252.0.1/24", "dev", &dummy]);
    ip(&["link", "set", &dummy, "up"]);
    // A bridge that already holds another subnet's address.
    let taken = format!("tpn{}", random_hex(8));
    ip(&["link", "add", &taken, "type", "bridge"]);
    ip(&["addr", "add", "10.252.9.1/24", "dev", &taken]);

    let overlapping = Env::new((Ipv4Addr::new(10, 252, 0, 0), 16), false);
    let error = overlapping.runtime().prepare_network().await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, RuntimeError::NetworkConflict { .. }), "{message}");
    assert!(
        message.contains("overlaps the route 10.252.0.0/24 on") && message.contains(&dummy),
        "names the route and the interface: {message}"
    );
    assert_eq!(
        tpod_runtime::check_subnet(&overlapping.config.bridge, overlapping.config.subnet).unwrap_err().to_string(),
        message
    );
    // Starting a pod is refused the same way, before anything is made.
    let image = overlapping.image("page");
    let id = pod_id();
    let started = overlapping
        .runtime()
        .start(PodSpec {
            restart_policy: RestartPolicy::Always,
            id: id.clone(),
            containers: vec![httpd(&image)],
            volumes: Vec::new(),
        })
        .await;
    assert!(matches!(started, Err(RuntimeError::NetworkConflict { .. })), "{started:?}");
    overlapping.assert_network_gone(&[id]);

    // A bridge name that is another kind of interface.
    let mut not_a_bridge = Env::new((Ipv4Addr::new(10, 249, 0, 0), 24), false);
    not_a_bridge.config.bridge = dummy.clone();
    let message = not_a_bridge.runtime().prepare_network().await.unwrap_err().to_string();
    assert!(message.contains("not a bridge"), "{message}");
    not_a_bridge.config.bridge = format!("tpn{}", random_hex(8));

    // A bridge holding another subnet.
    let mut other_subnet = Env::new((Ipv4Addr::new(10, 249, 0, 0), 24), false);
    other_subnet.config.bridge = taken.clone();
    let message = other_subnet.runtime().prepare_network().await.unwrap_err().to_string();
    assert!(message.contains("already holds 10.252.9.1/24 instead of 10.249.0.1/24"), "{message}");
    other_subnet.config.bridge = format!("tpn{}", random_hex(8));

    // The same subnet elsewhere is fine, and removing it leaves nothing.
    let fine = Env::new((Ipv4Addr::new(10, 249, 0, 0), 24), false);
    fine.runtime().prepare_network().await.unwrap();
    assert!(link_exists(&fine.config.bridge));
    assert!(nft_tables().contains(&format!("table inet tpod-{}", fine.config.bridge)));
    fine.runtime().remove_network().await.unwrap();
    fine.assert_network_gone(&[]);

    ip(&["link", "delete", &dummy]);
    ip(&["link", "delete", &taken]);
    assert!(!link_exists(&dummy) && !link_exists(&taken));
}
