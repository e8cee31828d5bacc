//! Pod networking with iproute2's `ip`: a host bridge, and per pod a network namespace joined to
//! it by a veth pair. `ip` is used rather than netlink from Rust because its behaviour is the
//! reference everybody debugs with, and these steps run once per pod start, not per packet.
//!
//! Layout for pod `<id>` with prefix `<p>` (its first 12 hex characters):
//! - bridge (e.g. `tpod0`) holding the subnet's first address, shared by all pods;
//! - network namespace `tpod-<p>` (`/var/run/netns/tpod-<p>`), with `lo` up and `eth0` holding
//!   the pod address, default route via the bridge address;
//! - host end of the veth `tp<p>` on the bridge.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::RuntimeError;

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

/// Creates the bridge if missing, gives it the gateway address and brings it up.
pub(crate) fn ensure_bridge(bridge: &str, subnet: &Subnet) -> Result<(), RuntimeError> {
    if !link_exists(bridge) {
        // Another runtime may create it at the same moment: only fail if it still is missing.
        if let Err(e) = ip(&["link", "add", bridge, "type", "bridge"])
            && !link_exists(bridge)
        {
            return Err(e);
        }
    }
    let address = format!("{}/{}", subnet.gateway(), subnet.prefix_len);
    // `replace` keeps this idempotent when the address is already there.
    ip(&["addr", "replace", &address, "dev", bridge])?;
    ip(&["link", "set", bridge, "up"])?;
    Ok(())
}

/// Whether the pod's network namespace exists.
pub(crate) fn netns_exists(net: &PodNet) -> bool {
    net.netns_path().exists()
}

/// Creates the pod's namespace and veth pair and configures addresses and routes. On error,
/// whatever was created stays for [`teardown`] to remove.
pub(crate) fn setup(net: &PodNet, bridge: &str, subnet: &Subnet, ip_addr: Ipv4Addr) -> Result<(), RuntimeError> {
    ensure_bridge(bridge, subnet)?;
    let ns = net.netns.as_str();
    ip(&["netns", "add", ns])?;
    // The peer is created directly inside the namespace under a temporary name (the host may
    // already have an eth0), then renamed there.
    let peer = format!("tq{}", &net.host_veth[2..]);
    ip(&["link", "add", &net.host_veth, "type", "veth", "peer", "name", &peer, "netns", ns])?;
    ip(&["link", "set", &net.host_veth, "master", bridge])?;
    ip(&["link", "set", &net.host_veth, "up"])?;
    ip(&["-n", ns, "link", "set", &peer, "name", "eth0"])?;
    let address = format!("{ip_addr}/{}", subnet.prefix_len);
    ip(&["-n", ns, "addr", "add", &address, "dev", "eth0"])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    ip(&["-n", ns, "route", "add", "default", "via", &subnet.gateway().to_string()])?;
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
