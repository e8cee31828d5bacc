//! The pod firewall: nftables rules that keep each pod to itself. A pod reaches its own
//! containers (they share its network namespace) and nothing else: no other pod, no address of
//! the host (IPv4 or IPv6, on any interface, so no provider port either), and — unless the
//! provider allows outbound internet — nothing beyond the host. The only way in is the public
//! ingress, which runs on the host and connects *to* pods; its replies come back as
//! established connections.
//!
//! One bridge gets two tables of its own, named `tpod-<bridge>`:
//! - `inet tpod-<bridge>`:
//!   - `input`: from the bridge, only packets of connections the host opened (established or
//!     related) reach the host; every other packet a pod sends to any host address (the
//!     gateway, the host's other interfaces, 127.0.0.1 routed back, IPv6 link-local or global)
//!     is dropped;
//!   - `forward`: nothing is routed into or out of the bridge (that also stops pod-to-pod
//!     traffic routed through the host, and the host's LAN reaching pods directly), except, with
//!     outbound internet on, new IPv4 connections from the pod subnet to an address that is not
//!     in `blocked` and not the host's, and the rest of those connections (only a connection
//!     this chain accepted when new is ever established through it);
//!   - `postrouting` (outbound internet only): pods' connections leave masqueraded behind the
//!     host's address.
//!   - `blocked`: RFC 1918, 100.64/10 (CGNAT), 169.254/16 (link-local, cloud metadata),
//!     127/8, 0/8, 192.0.0/24, 198.18/15, multicast and reserved, the pod subnet, and every
//!     network the host is directly attached to when the rules are written (its LAN).
//! - `bridge tpod-<bridge>`: frames bridged from one pod's veth to another's are dropped. The
//!   kernel's bridge port isolation (`isolated on`, set on each pod's veth by [`crate::net`])
//!   already stops them; this is a second lock, visible in `nft list ruleset`.
//!
//! IPv6: pods get none (their `eth0` generates no address, see [`crate::net`]) and the host
//! disables IPv6 on the bridge and the pods' veths, so there is no link-local address to reach;
//! the `inet` rules above drop IPv6 from the bridge all the same.
//!
//! Why the `nft` binary with a text ruleset: a ruleset file is applied by `nft -f` as one
//! netlink transaction, so a table is replaced atomically (the `add table` + `delete table` +
//! `table { … }` idiom): no moment without rules, no half-applied state on error. The text is
//! what an operator reads with `nft list table inet tpod-<bridge>`, so what this module writes is
//! what gets debugged. The `nftables` crate drives the same binary through its JSON schema,
//! which adds a dependency and a less readable format for no extra guarantee; the netlink-level
//! crates (libnftnl bindings) need a C library and describe rules as raw expressions. `nft`
//! comes from Debian's `nftables` package, which `tools/bootstrap` installs.
//!
//! Both tables use a priority just before the standard `filter` one, and only ever drop or
//! accept their own bridge's traffic, so they coexist with the host's own firewall (a drop
//! elsewhere still drops). With outbound internet on, the host must forward IPv4
//! (`net.ipv4.ip_forward = 1`): [`apply`] turns it on, as Docker does.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::RuntimeError;
use crate::net::Subnet;

/// Destinations a pod never reaches, even with outbound internet on.
const BLOCKED: &[&str] = &[
    "0.0.0.0/8",      // "this network"
    "10.0.0.0/8",     // RFC 1918
    "100.64.0.0/10",  // RFC 6598 shared address space (CGNAT)
    "127.0.0.0/8",    // loopback
    "169.254.0.0/16", // link-local, cloud metadata services
    "172.16.0.0/12",  // RFC 1918
    "192.0.0.0/24",   // IETF protocol assignments
    "192.168.0.0/16", // RFC 1918
    "198.18.0.0/15",  // benchmarking
    "224.0.0.0/3",    // multicast, reserved and broadcast
];

/// What the rules of one bridge depend on.
#[derive(Clone, Debug)]
pub(crate) struct Rules<'a> {
    /// The pods' bridge.
    pub bridge: &'a str,
    /// The pods' subnet.
    pub subnet: &'a Subnet,
    /// Whether pods may open connections to the internet (masqueraded).
    pub outbound: bool,
    /// Networks the host is directly attached to (other than the bridge's), blocked too.
    pub attached: &'a [(Ipv4Addr, u8)],
}

/// The name of both tables of `bridge`.
pub(crate) fn table_name(bridge: &str) -> String {
    format!("tpod-{bridge}")
}

/// Whether `bridge` can be written into a ruleset as it is: `nft` 1.0 takes no quoted table
/// names, so the name must be one of its plain words.
pub(crate) fn valid_bridge_name(bridge: &str) -> bool {
    !bridge.is_empty()
        && bridge.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && bridge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

impl Rules<'_> {
    /// The whole ruleset, replacing both tables of the bridge in one transaction.
    pub(crate) fn text(&self) -> String {
        let table = table_name(self.bridge);
        let br = self.bridge;
        let subnet = self.subnet.to_string();
        let mut blocked: Vec<String> = BLOCKED.iter().map(|s| (*s).to_owned()).collect();
        blocked.push(subnet.clone());
        blocked.extend(self.attached.iter().map(|(ip, len)| format!("{ip}/{len}")));
        let blocked = blocked.join(", ");
        let mut text = format!(
            "add table inet {table}\n\
             delete table inet {table}\n\
             table inet {table} {{\n\
             \tset blocked {{\n\
             \t\ttype ipv4_addr; flags interval; auto-merge;\n\
             \t\telements = {{ {blocked} }}\n\
             \t}}\n\
             \tchain input {{\n\
             \t\ttype filter hook input priority filter - 5; policy accept;\n\
             \t\tiifname \"{br}\" ct state established,related accept\n\
             \t\tiifname \"{br}\" counter drop comment \"pods reach no host address\"\n\
             \t}}\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter - 5; policy accept;\n"
        );
        if self.outbound {
            text.push_str(&format!(
                "\t\toifname \"{br}\" iifname != \"{br}\" ct state established,related accept\n\
                 \t\tiifname \"{br}\" oifname != \"{br}\" ct state established,related accept\n\
                 \t\tiifname \"{br}\" oifname != \"{br}\" ip saddr {subnet} ip daddr != @blocked \
                 fib daddr type unicast ct state new accept comment \"outbound internet\"\n"
            ));
        }
        text.push_str(&format!(
            "\t\tiifname \"{br}\" counter drop comment \"pods reach nothing beyond the host\"\n\
             \t\toifname \"{br}\" counter drop comment \"only the ingress reaches pods\"\n\
             \t}}\n"
        ));
        if self.outbound {
            text.push_str(&format!(
                "\tchain postrouting {{\n\
                 \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
                 \t\tip saddr {subnet} oifname != \"{br}\" masquerade\n\
                 \t}}\n"
            ));
        }
        text.push_str(&format!(
            "}}\n\
             add table bridge {table}\n\
             delete table bridge {table}\n\
             table bridge {table} {{\n\
             \tchain forward {{\n\
             \t\ttype filter hook forward priority filter - 5; policy accept;\n\
             \t\tiifname \"tp*\" oifname \"tp*\" counter drop comment \"pods reach no other pod\"\n\
             \t}}\n\
             }}\n"
        ));
        text
    }
}

/// Writes (or rewrites) the bridge's tables atomically, and turns IPv4 forwarding on if
/// outbound internet is allowed.
pub(crate) fn apply(rules: &Rules<'_>) -> Result<(), RuntimeError> {
    nft(&rules.text(), &format!("nft -f - (tables {})", table_name(rules.bridge)))?;
    if rules.outbound {
        let path = "/proc/sys/net/ipv4/ip_forward";
        if std::fs::read_to_string(path).map(|v| v.trim() != "1").unwrap_or(true) {
            std::fs::write(path, "1").map_err(RuntimeError::io("turning on IPv4 forwarding", path.as_ref()))?;
            tracing::info!("IPv4 forwarding turned on for the pods' outbound internet");
        }
    }
    Ok(())
}

/// Removes both tables of `bridge`, if they exist.
pub(crate) fn remove(bridge: &str) -> Result<(), RuntimeError> {
    let table = table_name(bridge);
    // `add` first makes `delete` succeed whether or not the table existed, in one transaction.
    let text = format!(
        "add table inet {table}\ndelete table inet {table}\nadd table bridge {table}\ndelete table bridge {table}\n"
    );
    nft(&text, &format!("nft -f - (removing tables {table})"))
}

/// Runs `nft -f -` with `ruleset` on its standard input.
fn nft(ruleset: &str, command: &str) -> Result<(), RuntimeError> {
    let failed = |message: String| RuntimeError::Command { command: command.to_owned(), message };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            failed(format!("cannot run nft: {e} (install nftables: the pod firewall needs it; tools/bootstrap does)"))
        })?;
    let written = child.stdin.take().map(|mut stdin| stdin.write_all(ruleset.as_bytes()));
    let output = child.wait_with_output().map_err(|e| failed(format!("cannot wait for nft: {e}")))?;
    if let Some(Err(e)) = written {
        return Err(failed(format!("cannot write the ruleset to nft: {e}")));
    }
    if !output.status.success() {
        return Err(failed(format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet() -> Subnet {
        Subnet { network: Ipv4Addr::new(10, 89, 0, 0), prefix_len: 16 }
    }

    #[test]
    fn without_outbound_nothing_is_forwarded_or_masqueraded() {
        let s = subnet();
        let text = Rules { bridge: "tpod0", subnet: &s, outbound: false, attached: &[] }.text();
        assert!(text.contains("table inet tpod-tpod0 {"));
        assert!(text.contains("iifname \"tpod0\" counter drop comment \"pods reach no host address\""));
        assert!(!text.contains("accept comment \"outbound internet\""));
        assert!(!text.contains("masquerade"));
        assert!(text.contains("table bridge tpod-tpod0 {"));
    }

    #[test]
    fn outbound_skips_blocked_ranges_the_subnet_and_attached_networks() {
        let s = subnet();
        let attached = [(Ipv4Addr::new(192, 0, 2, 0), 24)];
        let text = Rules { bridge: "tpod0-2", subnet: &s, outbound: true, attached: &attached }.text();
        assert!(text.contains("ip daddr != @blocked"));
        assert!(text.contains("masquerade"));
        for range in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"] {
            assert!(text.contains(range), "{range} not blocked");
        }
        assert!(text.contains("10.89.0.0/16, 192.0.2.0/24"));
    }

    #[test]
    fn bridge_names_must_be_plain_nft_words() {
        assert!(valid_bridge_name("tpod0-2"));
        assert!(valid_bridge_name("br_pods.1"));
        assert!(!valid_bridge_name("0bridge"));
        assert!(!valid_bridge_name("a\"b"));
        assert!(!valid_bridge_name("a b"));
        assert!(!valid_bridge_name(""));
    }
}
