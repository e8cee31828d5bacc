//! The `ingress` section: HTTP throughput and latency of the provider's ingress against going to
//! the backend directly and against Debian's nginx as a reverse proxy, side by side in one run.
//!
//! The backend is a small static hyper server on its own multi-thread runtime in this process,
//! answering a fixed small body and a fixed 1 MiB body on two paths: a pod server that costs
//! next to nothing, so the figures show the proxy's own cost (busybox httpd forks per request
//! and would hide it). The tpod ingress ([`HttpIngress`], as the provider runs it, with one
//! route to the backend) runs in process on a runtime of its own; nginx runs as a child in the
//! foreground with a generated configuration (upstream keep-alive, responses buffered in
//! memory), and its column is skipped if `nginx` is not installed. `wrk` loads each of the three
//! at 1, 16 and 64 connections for each body, and the section prints requests/s and wrk's p99
//! latency per column, the ratios ingress/direct (goal ≥ 90 %) and ingress/nginx (goal ≥ 1),
//! and every non-2xx response and socket error, which must be none. wrk, the proxies and the
//! backend share the machine's cores, so a proxy also competes with the load for CPU.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tpod_ingress::{HttpIngress, Routes};

/// The host name the ingress routes to the backend; every column gets it, so only the proxying
/// differs.
const HOST: &str = "bench.pods.localhost";
/// The small body: a typical short API answer.
const SMALL: &[u8] = b"hello from the tpod-bench backend\n";
const LARGE_BYTES: usize = 1 << 20;
/// wrk's connection counts: one client, a moderate and a high concurrency.
const CONNECTIONS: [u32; 3] = [1, 16, 64];
/// The goal relative to going direct.
const GOAL_OF_DIRECT: f64 = 0.9;
/// A request slower than this counts as a wrk timeout error.
const WRK_TIMEOUT: &str = "5s";

/// Runs the section, each wrk measurement lasting `secs` seconds.
pub fn run(secs: u64) -> anyhow::Result<()> {
    let wrk = which("wrk").context("wrk not found: run tools/bootstrap (Debian package wrk)")?;
    // Each server on its own runtime, as the pod and the provider are separate processes: the
    // ingress cannot lean on the backend's idle workers, nor the other way round.
    let backend_rt = runtime("bench-backend")?;
    let backend = backend_rt.block_on(serve_backend())?;
    let ingress_rt = runtime("bench-ingress")?;
    let routes = Routes::default();
    routes.set("bench", vec![HOST.to_owned()], backend);
    let ingress = ingress_rt.block_on(HttpIngress::bind((Ipv4Addr::LOCALHOST, 0).into(), routes))?;
    let nginx = match which("nginx") {
        Some(bin) => Some(Nginx::start(&bin, backend)?),
        None => {
            println!("ingress: nginx not found (Debian package nginx): the nginx column is skipped");
            None
        }
    };

    let mut targets = vec![("direct", backend), ("ingress", ingress.local_addr())];
    if let Some(nginx) = &nginx {
        targets.push(("nginx", nginx.addr));
    }
    println!(
        "ingress: wrk {secs} s per cell (--latency, Host: {HOST}) against a static hyper backend on loopback \
         ({} B and 1 MiB bodies): direct, through the tpod ingress (in process), and through nginx {} \
         (upstream keep-alive); wrk, proxies and backend share this machine's {} cores:",
        SMALL.len(),
        nginx.as_ref().map_or("(skipped)", |n| n.version.as_str()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    // The first requests open the proxies' pooled connections to the backend and warm caches;
    // that is not the steady state being measured.
    for (_, addr) in &targets {
        wrk_run(&wrk, &format!("http://{addr}/small"), 64, 1)?;
    }

    let mut header = format!("  {:<6} {:>5}", "body", "conns");
    for (name, _) in &targets {
        write!(header, " {:>16} {:>9}", format!("{name} req/s"), "p99")?;
    }
    header.push_str("  ingress/direct");
    if nginx.is_some() {
        header.push_str("  ingress/nginx");
    }
    println!("{header}");
    let (mut rows, mut of_direct_met, mut of_nginx_met) = (0, 0, 0);
    let mut errors = Vec::new();
    for (body, path) in [("small", "/small"), ("1 MiB", "/large")] {
        for conns in CONNECTIONS {
            let mut line = format!("  {body:<6} {conns:>5}");
            let mut loads = Vec::with_capacity(targets.len());
            for (name, addr) in &targets {
                let load = wrk_run(&wrk, &format!("http://{addr}{path}"), conns, secs)?;
                let p99 = load.p99_ms.map_or("n/a".to_owned(), |ms| format!("{ms:.2} ms"));
                write!(line, " {:>16.0} {p99:>9}", load.rps)?;
                if load.errors > 0 {
                    errors.push(format!("{name}, {body}, {conns} connections: {}", load.error_text));
                }
                loads.push(load.rps);
            }
            let of_direct = loads[1] / loads[0];
            write!(line, "  {:>13.0} %", 100.0 * of_direct)?;
            rows += 1;
            of_direct_met += usize::from(of_direct >= GOAL_OF_DIRECT);
            if let Some(&nginx_rps) = loads.get(2) {
                let of_nginx = loads[1] / nginx_rps;
                write!(line, "  {of_nginx:>13.2}")?;
                of_nginx_met += usize::from(of_nginx >= 1.0);
            }
            println!("{line}");
        }
    }
    print!("  goals: ingress ≥ {:.0} % of direct in {of_direct_met} of {rows} cells", 100.0 * GOAL_OF_DIRECT);
    if nginx.is_some() {
        print!("; ingress ≥ nginx in {of_nginx_met} of {rows} cells");
    }
    println!();
    drop(nginx);
    drop(ingress);
    if errors.is_empty() {
        println!("  non-2xx responses and socket errors: none");
        Ok(())
    } else {
        for e in &errors {
            println!("  ERRORS {e}");
        }
        bail!("the ingress benchmark saw non-2xx responses or socket errors (must be none)")
    }
}

fn runtime(name: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().thread_name(name).enable_all().build()?)
}

/// Starts the static backend on the current runtime: `/small` and `/large` answer their fixed
/// bodies, anything else 404. Returns its address.
async fn serve_backend() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    // `Bytes` clones share one buffer: serving a body copies nothing until the socket write.
    let small = Bytes::from_static(SMALL);
    let large = Bytes::from(vec![b'x'; LARGE_BYTES]);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of descriptors, say: wait instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Small answers should not wait for Nagle's algorithm, as in the ingress.
            let _ = stream.set_nodelay(true);
            let (small, large) = (small.clone(), large.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let body = match request.uri().path() {
                        "/small" => Some(small.clone()),
                        "/large" => Some(large.clone()),
                        _ => None,
                    };
                    async move {
                        Ok::<_, Infallible>(match body {
                            Some(body) => Response::new(Full::new(body)),
                            None => {
                                let mut response = Response::new(Full::new(Bytes::new()));
                                *response.status_mut() = StatusCode::NOT_FOUND;
                                response
                            }
                        })
                    }
                });
                // A client going away mid-response is not the backend's concern here.
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Ok(addr)
}

/// What one wrk run measured.
pub(crate) struct Load {
    pub(crate) rps: f64,
    pub(crate) p99_ms: Option<f64>,
    /// Non-2xx/3xx responses plus socket errors (connect, read, write, timeout).
    pub(crate) errors: u64,
    /// wrk's own lines about them.
    pub(crate) error_text: String,
}

/// `wrk` against `url` with `conns` connections for `secs` seconds.
fn wrk_run(wrk: &Path, url: &str, conns: u32, secs: u64) -> anyhow::Result<Load> {
    wrk_host(wrk, url, HOST, conns, secs)
}

/// [`wrk_run`] with `host` as the Host header.
pub(crate) fn wrk_host(wrk: &Path, url: &str, host: &str, conns: u32, secs: u64) -> anyhow::Result<Load> {
    // wrk needs a thread per connection at most; more threads than cores only add switching.
    let threads = conns.min(2);
    let out = Command::new(wrk)
        .args(["-t", &threads.to_string(), "-c", &conns.to_string(), "-d", &format!("{secs}s")])
        .args(["--timeout", WRK_TIMEOUT, "--latency", "-H", &format!("Host: {host}"), url])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk {url} failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&text).with_context(|| format!("unexpected wrk output for {url}:\n{text}"))
}

fn parse_wrk(text: &str) -> anyhow::Result<Load> {
    let mut load = Load { rps: f64::NAN, p99_ms: None, errors: 0, error_text: String::new() };
    for line in text.lines().map(str::trim) {
        if let Some(rps) = line.strip_prefix("Requests/sec:") {
            load.rps = rps.trim().parse()?;
        } else if let Some(p99) = line.strip_prefix("99%") {
            load.p99_ms = Some(millis(p99.trim())?);
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            load.errors += n.trim().parse::<u64>()?;
            load.error_text.push_str(line);
        } else if let Some(counts) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for count in counts.split(',') {
                load.errors += count.split_whitespace().nth(1).context("socket error count")?.parse::<u64>()?;
            }
            if !load.error_text.is_empty() {
                load.error_text.push_str("; ");
            }
            load.error_text.push_str(line);
        }
    }
    if load.rps.is_nan() {
        bail!("no Requests/sec");
    }
    Ok(load)
}

/// A wrk duration such as `812.00us`, `1.23ms` or `2.01s`, in milliseconds.
fn millis(text: &str) -> anyhow::Result<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).context("no unit")?;
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse()?;
    Ok(match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        _ => bail!("unknown unit {unit}"),
    })
}

/// `name` in PATH, or in the sbin directories a non-root PATH lacks (where Debian puts nginx).
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|file| file.is_file())
}

/// nginx in the foreground as a reverse proxy to the backend, stopped on drop.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    version: String,
    /// Configuration, pid file, logs and temp paths; removed after nginx stops.
    _dir: tempfile::TempDir,
}

impl Nginx {
    fn start(bin: &Path, backend: SocketAddr) -> anyhow::Result<Self> {
        let version = Command::new(bin).arg("-v").output().context("running nginx -v")?;
        // nginx -v writes "nginx version: nginx/1.22.1" to standard error.
        let version = String::from_utf8_lossy(&version.stderr).trim().trim_start_matches("nginx version: ").to_owned();
        let dir = tempfile::tempdir()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
        let d = dir.path().to_str().context("temp dir path")?;
        // As root, workers would run as `nobody`, which cannot enter the private temp dir.
        let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?) == 0;
        let user = if root { "user root;\n" } else { "" };
        // What a careful operator would write: a worker per core, access log off, keep-alive to
        // the upstream, no per-connection request cap (wrk reuses its connections throughout,
        // as hyper's and the ingress's do), and proxy buffers holding a whole 1 MiB response so
        // nginx never spills it to a temp file on disk.
        let config = format!(
            "daemon off;
{user}worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream backend {{
        server {backend};
        keepalive 64;
        keepalive_requests 1000000;
    }}
    server {{
        listen {addr};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
            proxy_buffer_size 64k;
            proxy_buffers 16 64k;
            proxy_busy_buffers_size 512k;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"
        );
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, config)?;
        let log = dir.path().join("error.log");
        // -e: errors before the configuration is read go here too, not to /var/log/nginx.
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&file)
            .arg("-e")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?;
        let mut nginx = Self { child, addr, version, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = nginx.child.try_wait()? {
                bail!("nginx exited ({status}): {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            if Instant::now() > deadline {
                bail!(
                    "nginx did not listen on {addr} within 10 s: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        // SIGTERM lets the master stop its workers; SIGKILL would leave them holding the port.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free right now, for nginx to listen on (nginx cannot report a port it
/// picked itself).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() -> anyhow::Result<()> {
        let text = "Running 5s test @ http://127.0.0.1:1/small
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   310.12us  100.00us   5.01ms   90.00%
    Req/Sec    25.10k     1.00k   27.00k    70.00%
  Latency Distribution
     50%  290.00us
     75%  330.00us
     90%  400.00us
     99%    1.25ms
  250000 requests in 5.00s, 30.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  50000.50
Transfer/sec:      6.00MB
";
        let load = parse_wrk(text)?;
        assert_eq!(load.rps, 50000.5);
        assert_eq!(load.p99_ms, Some(1.25));
        assert_eq!(load.errors, 7);
        assert_eq!(millis("812.00us")?, 0.812);
        assert_eq!(millis("2.00s")?, 2000.0);
        Ok(())
    }
}
