//! A static probe for `tests/isolation.rs`, run inside a tenant's pod: each argument
//! `name=host:port` is a TCP connection to try (2 s), printed `NET <name> reached` or
//! `NET <name> blocked (<error>)`; an IPv6 link-local host may name its interface
//! (`[fe80::1%eth0]:80`), looked up in `/sys/class/net`. Then it forks `/bin/busybox sleep` until the pids limit
//! refuses (`PIDS <count>`), and prints `NET done`. Built by the test with `rustc` alone (no
//! crate dependencies, static), so it runs in a busybox image with no C library.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn main() {
    for arg in std::env::args().skip(1) {
        let Some((name, target)) = arg.split_once('=') else { continue };
        let target = with_scope_index(target);
        let addrs: Vec<SocketAddr> = target.to_socket_addrs().map(Iterator::collect).unwrap_or_default();
        let verdict = match addrs.first() {
            None => "blocked (no address)".to_owned(),
            Some(addr) => match TcpStream::connect_timeout(addr, Duration::from_secs(2)) {
                Ok(_) => "reached".to_owned(),
                Err(e) => format!("blocked ({e})"),
            },
        };
        println!("NET {name} {verdict}");
    }
    // As many processes as the pids limit lets this container have, then all of them go.
    let mut children: Vec<Child> = Vec::new();
    while children.len() < 4096 {
        match Command::new("/bin/busybox").args(["sleep", "600"]).stdout(Stdio::null()).spawn() {
            Ok(child) => children.push(child),
            Err(_) => break,
        }
    }
    println!("PIDS {}", children.len());
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    println!("NET done");
}

/// `[addr%name]:port` with the interface's index for its name (what `SocketAddrV6` parses).
fn with_scope_index(target: &str) -> String {
    let Some((head, rest)) = target.split_once('%') else { return target.to_owned() };
    let Some((name, tail)) = rest.split_once(']') else { return target.to_owned() };
    let index = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex")).unwrap_or_default();
    format!("{head}%{}]{tail}", index.trim())
}
