//! Pod networking with iproute2's `ip`: a host bridge, and per pod a network namespace joined to
//! it by a veth pair, isolated from every other pod and from the host by [`crate::firewall`].
//! `ip` is used rather than netlink from Rust because its behaviour is the reference everybody
//! debugs with, and these steps run once per pod start, not per packet.
//!
//! Layout for pod `<id>` with prefix `<p>` (its first 12 hex characters):
//! - bridge (e.g. `tpod0`) holding the subnet's first address, shared by all pods, with IPv6
//!   off (no link-local address for pods to reach); its nftables tables `tpod-<bridge>` are
//!   written before it gets its address, so no pod ever runs without them;
//! - network namespace `tpod-<p>` (`/var/run/netns/tpod-<p>`), owned by the pod's user
//!   namespace (see [`crate::userns`]), with `lo` up and `eth0` holding the pod address (IPv4
//!   only: no IPv6 address is generated), default route via the bridge address;
//! - host end of the veth `tp<p>` on the bridge, an isolated port (`isolated on`: the bridge
//!   forwards nothing between two isolated ports, so pods cannot reach each other even at
//!   layer 2), IPv6 off.
//!
//! Before the bridge is made or reused, [`check_subnet`] refuses a bridge name that is another
//! kind of interface, a bridge holding another address, and a subnet that overlaps a route of
//! another interface (pods there would silently lose their traffic to that network).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::RuntimeError;
use crate::firewall;

/// The names of one pod's network objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PodNet {
    /// Network namespace name.
    pub netns: String,
    /// Host end of the veth pair.
    pub host_veth: String,
}

impl PodNet {
    /// The names for pod `id` (at least 12 characters, checked by the caller).
    pub(crate) fn for_pod(id: &str) -> Self {
        let prefix = &id[..12];
        Self { netns: format!("tpod-{prefix}"), host_veth: format!("tp{prefix}") }
    }

    /// The bind-mounted namespace file that containers join.
    pub(crate) fn netns_path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.netns)
    }
}

/// The bridge and the subnet pods get addresses from.
#[derive(Clone, Debug)]
pub(crate) struct Subnet {
    pub network: Ipv4Addr,
    pub prefix_len: u8,
}

impl Subnet {
    /// The subnet's first usable address, which the bridge holds (the pods' gateway).
    pub(crate) fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// Addresses pods may get: after the gateway, up to (not including) the broadcast address.
    pub(crate) fn pod_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        let size = 1u64 << (32 - u32::from(self.prefix_len));
        let base = u64::from(u32::from(self.network));
        (2..size.saturating_sub(1)).filter_map(move |i| u32::try_from(base + i).ok().map(Ipv4Addr::from))
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// Runs `ip` with `args`; fails with its stderr.
fn ip(args: &[&str]) -> Result<String, RuntimeError> {
    let command = || format!("ip {}", args.join(" "));
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| RuntimeError::Command { command: command(), message: format!("cannot run ip: {e}") })?;
    if !output.status.success() {
        return Err(RuntimeError::Command {
            command: command(),
            message: format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Checks the bridge and subnet ([`check_subnet`]), writes the firewall, creates the bridge if
/// missing, gives it the gateway address and brings it up. Idempotent: run before each pod's
/// network is made, so the rules are back even if someone flushed them. Its cost does not grow
/// with the pods on the bridge; [`harden_ports`], which does, runs once at the runtime's start.
pub(crate) fn ensure_bridge(bridge: &str, subnet: &Subnet, outbound: bool) -> Result<(), RuntimeError> {
    check(bridge, subnet)?;
    let attached = attached_networks(bridge);
    firewall::apply(&firewall::Rules { bridge, subnet, outbound, attached: &attached })?;
    if !link_exists(bridge) {
        // Another runtime may create it at the same moment: only fail if it still is missing.
        if let Err(e) = ip(&["link", "add", bridge, "type", "bridge"])
            && !link_exists(bridge)
        {
            return Err(e);
        }
    }
    pin_address(bridge)?;
    // Before it is up, so it never gets an IPv6 link-local address.
    disable_ipv6(bridge)?;
    let address = format!("{}/{}", subnet.gateway(), subnet.prefix_len);
    // `replace` keeps this idempotent when the address is already there.
    ip(&["addr", "replace", &address, "dev", bridge])?;
    ip(&["link", "set", bridge, "up"])?;
    Ok(())
}

/// Fixes the bridge's MAC address to the one it has. Left to the kernel, a bridge takes the
/// lowest MAC of its ports and changes it whenever a pod's veth with a lower one joins; the pods
/// still send to the old address for a while, and the host's replies on connections already
/// open are lost until their neighbour entries expire (seconds of stalled requests on every
/// pod start).
fn pin_address(bridge: &str) -> Result<(), RuntimeError> {
    let sys = Path::new("/sys/class/net").join(bridge);
    // 3: NET_ADDR_SET, an address set from userspace, which the kernel keeps.
    if std::fs::read_to_string(sys.join("addr_assign_type")).is_ok_and(|t| t.trim() == "3") {
        return Ok(());
    }
    let path = sys.join("address");
    let address = std::fs::read_to_string(&path).map_err(RuntimeError::io("reading the bridge's address", &path))?;
    ip(&["link", "set", "dev", bridge, "address", address.trim()]).map(drop)
}

/// Makes every port of the bridge isolated, with IPv6 off, as [`setup`] makes new ones: pods
/// attached by an earlier provider version, and adopted since, get the same isolation. It visits
/// every port (with a thousand pods, a fifth of a second), so the runtime runs it once at start,
/// not for each pod.
pub(crate) fn harden_ports(bridge: &str) -> Result<(), RuntimeError> {
    let brif = Path::new("/sys/class/net").join(bridge).join("brif");
    let Ok(ports) = std::fs::read_dir(&brif) else { return Ok(()) };
    for port in ports.flatten() {
        let name = port.file_name().to_string_lossy().into_owned();
        let isolated = port.path().join("isolated");
        let result = match std::fs::read_to_string(&isolated) {
            Ok(v) if v.trim() != "1" => {
                std::fs::write(&isolated, "1").map_err(RuntimeError::io("isolating a bridge port", &isolated))
            }
            _ => Ok(()),
        }
        .and_then(|()| disable_ipv6(&name));
        // A pod deleted meanwhile takes its port with it: only a port still there must comply.
        if result.is_err() && link_exists(&name) {
            return result;
        }
    }
    Ok(())
}

/// Whether the pod's network namespace exists.
pub(crate) fn netns_exists(net: &PodNet) -> bool {
    net.netns_path().exists()
}

/// Creates the pod's namespace with `make_netns` (given its name: it must leave a namespace
/// `ip netns` knows by that name; see [`crate::userns::create`]) and its veth pair, and
/// configures addresses and routes. On error, whatever was created stays for [`teardown`] to
/// remove.
pub(crate) fn setup(
    net: &PodNet,
    bridge: &str,
    subnet: &Subnet,
    outbound: bool,
    ip_addr: Ipv4Addr,
    make_netns: impl FnOnce(&str) -> Result<(), RuntimeError>,
) -> Result<(), RuntimeError> {
    ensure_bridge(bridge, subnet, outbound)?;
    let ns = net.netns.as_str();
    make_netns(ns)?;
    // The peer is created directly inside the namespace under a temporary name (the host may
    // already have an eth0), then renamed there.
    let peer = format!("tq{}", &net.host_veth[2..]);
    ip(&["link", "add", &net.host_veth, "type", "veth", "peer", "name", &peer, "netns", ns])?;
    ip(&["link", "set", &net.host_veth, "master", bridge])?;
    // An isolated port only exchanges frames with the bridge itself (the host), never with
    // another isolated port: no pod reaches another at layer 2, whatever it sends.
    ip(&["link", "set", "dev", &net.host_veth, "type", "bridge_slave", "isolated", "on"])?;
    disable_ipv6(&net.host_veth)?;
    ip(&["link", "set", &net.host_veth, "up"])?;
    ip(&["-n", ns, "link", "set", &peer, "name", "eth0"])?;
    // No IPv6 address on the pod's side, not even link-local: pods speak IPv4 only.
    ip(&["-n", ns, "link", "set", "eth0", "addrgenmode", "none"])?;
    let address = format!("{ip_addr}/{}", subnet.prefix_len);
    ip(&["-n", ns, "addr", "add", &address, "dev", "eth0"])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    ip(&["-n", ns, "route", "add", "default", "via", &subnet.gateway().to_string()])?;
    // The address may have been another pod's moments ago (a replica removed and added back):
    // the host would go on sending to that pod's MAC until its neighbour entry expired, half a
    // minute of a pod that cannot be reached.
    ip(&["neigh", "flush", "to", &ip_addr.to_string(), "dev", bridge])?;
    Ok(())
}

/// Removes the pod's namespace and veth pair, whichever exist. Deleting the namespace also
/// destroys the veth end inside it, and with it the host end.
pub(crate) fn teardown(net: &PodNet) -> Result<(), RuntimeError> {
    if netns_exists(net) {
        ip(&["netns", "delete", &net.netns])?;
        // The kernel destroys the namespace, and with it the veth pair, asynchronously.
        let deadline = Instant::now() + Duration::from_secs(2);
        while link_exists(&net.host_veth) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    if link_exists(&net.host_veth)
        && let Err(e) = ip(&["link", "delete", &net.host_veth])
        && link_exists(&net.host_veth)
    {
        return Err(e);
    }
    Ok(())
}

/// Turns IPv6 off on the host's interface `name` (it then has no IPv6 address and takes no
/// IPv6 packet).
fn disable_ipv6(name: &str) -> Result<(), RuntimeError> {
    let path = Path::new("/proc/sys/net/ipv6/conf").join(name).join("disable_ipv6");
    // A kernel without IPv6 has nothing to turn off.
    if !Path::new("/proc/sys/net/ipv6").exists() {
        return Ok(());
    }
    std::fs::write(&path, "1").map_err(RuntimeError::io("turning off IPv6", &path))
}

/// Removes the bridge's firewall tables and the bridge itself (what a provider taken down for
/// good leaves): only once no pod is attached to it, since its rules protect those pods.
pub(crate) fn remove_bridge(bridge: &str) -> Result<(), RuntimeError> {
    let sys = Path::new("/sys/class/net").join(bridge);
    if sys.exists() {
        if !sys.join("bridge").exists() {
            // Not ours: a bridge name that is another interface was refused at start.
            return firewall::remove(bridge);
        }
        let ports: Vec<String> = std::fs::read_dir(sys.join("brif"))
            .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        if !ports.is_empty() {
            return Err(RuntimeError::NetworkConflict {
                bridge: bridge.to_owned(),
                reason: format!(
                    "still has ports ({}): pods of another runtime use it, so it and its firewall stay",
                    ports.join(", ")
                ),
            });
        }
        if let Err(e) = ip(&["link", "delete", bridge])
            && link_exists(bridge)
        {
            return Err(e);
        }
    }
    firewall::remove(bridge)
}

/// An IPv4 network `a.b.c.d/len` (a bare address is a /32).
fn parse_cidr(text: &str) -> Option<Network> {
    let (ip, len) = text.split_once('/').unwrap_or((text, "32"));
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    Some((ip.parse().ok()?, len))
}

fn mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn overlaps(a: Network, b: Network) -> bool {
    let m = mask(a.1.min(b.1));
    u32::from(a.0) & m == u32::from(b.0) & m
}

/// An IPv4 network as (address, prefix length).
type Network = (Ipv4Addr, u8);

/// The routes of the main IPv4 table as (destination, device); `default` is left out.
fn routes() -> Result<Vec<(Network, String)>, RuntimeError> {
    let out = ip(&["-4", "route", "show"])?;
    Ok(out
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let route = words.next().and_then(parse_cidr)?;
            let dev = words.skip_while(|w| *w != "dev").nth(1).unwrap_or("?").to_owned();
            Some((route, dev))
        })
        .collect())
}

/// Networks routed directly on interfaces other than `bridge` (the host's LANs), which pods
/// must not reach even with outbound internet on. Best effort: none if `ip` fails (the
/// private ranges are blocked anyway).
fn attached_networks(bridge: &str) -> Vec<Network> {
    let Ok(out) = ip(&["-4", "route", "show", "scope", "link"]) else { return Vec::new() };
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let route = words.next().and_then(parse_cidr)?;
            let dev = words.skip_while(|w| *w != "dev").nth(1)?;
            (dev != bridge).then_some(route)
        })
        .collect()
}

/// Refuses to put pods on `bridge` with `subnet` when that would collide with the host's
/// network: `bridge` is an interface but not a bridge, the bridge holds an IPv4 address other
/// than the subnet's gateway (another provider's, or a leftover of another configuration), or
/// a route of another interface overlaps the subnet (pods would be unreachable, or reach that
/// network instead, with no error to say so). The provider checks this at start; `tpod dev up`
/// before it writes a provider's configuration.
pub fn check_subnet(bridge: &str, subnet: (Ipv4Addr, u8)) -> Result<(), RuntimeError> {
    check(bridge, &Subnet { network: subnet.0, prefix_len: subnet.1 })
}

fn check(bridge: &str, subnet: &Subnet) -> Result<(), RuntimeError> {
    let conflict = |reason: String| RuntimeError::NetworkConflict { bridge: bridge.to_owned(), reason };
    if !firewall::valid_bridge_name(bridge) || bridge.len() > 15 {
        return Err(conflict(
            "is not a usable bridge name (1 to 15 characters of a-z, A-Z, 0-9, '-', '_' and '.', starting with a \
             letter)"
                .to_owned(),
        ));
    }
    let sys = Path::new("/sys/class/net").join(bridge);
    if sys.exists() {
        if !sys.join("bridge").exists() {
            return Err(conflict("is an existing interface that is not a bridge: pick another bridge name".to_owned()));
        }
        let ours = format!("{}/{}", subnet.gateway(), subnet.prefix_len);
        let out = ip(&["-4", "-o", "addr", "show", "dev", bridge])?;
        let others: Vec<&str> = out
            .lines()
            .filter_map(|line| line.split_whitespace().skip_while(|w| *w != "inet").nth(1))
            .filter(|address| *address != ours)
            .collect();
        if !others.is_empty() {
            return Err(conflict(format!(
                "already holds {} instead of {ours} (the gateway of subnet {subnet}): another provider's bridge, or \
                 a leftover of another configuration; pick another bridge, or remove it (`ip link del {bridge}`) \
                 if nothing uses it",
                others.join(", ")
            )));
        }
    }
    for (route, dev) in routes()? {
        if dev != bridge && overlaps(route, (subnet.network, subnet.prefix_len)) {
            return Err(conflict(format!(
                "subnet {subnet} overlaps the route {}/{} on {dev}: pick another subnet, or remove {dev} if it is a \
                 leftover bridge (`ip link del {dev}`)",
                route.0, route.1
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_networks() {
        let net = |s: &str| parse_cidr(s).unwrap_or((Ipv4Addr::UNSPECIFIED, 0));
        assert!(overlaps(net("10.89.0.0/16"), net("10.89.3.0/24")));
        assert!(overlaps(net("10.0.0.0/8"), net("10.89.0.0/16")));
        assert!(!overlaps(net("10.89.0.0/16"), net("10.90.0.0/16")));
        assert!(overlaps(net("10.89.0.7"), net("10.89.0.0/24")));
        assert_eq!(parse_cidr("default"), None);
        assert_eq!(parse_cidr("10.0.0.0/33"), None);
    }
}
