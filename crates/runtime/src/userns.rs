//! A user namespace per pod: container root is an unprivileged range of host ids, as under
//! Kubernetes' user namespaces for pods (KEP-127) or Docker's `userns-remap`.
//!
//! Each pod gets its own range of [`LocalConfig::user_ids_per_pod`](crate::LocalConfig) host
//! ids (65536 by default), recorded in its `pod.json` so a restarted provider uses the same one;
//! no two pods of a runtime hold overlapping ranges (see [`allocate`]). The runtime creates the
//! pod's user namespace itself, mapping ids `0..count` inside to `base..base + count` on the host
//! (`uid_map` and `gid_map` both `0 base count`), and creates the pod's network namespace from
//! inside it, so that namespace is *owned* by the pod's user namespace. Both are pinned by bind
//! mounts: the user namespace on `<pod dir>/userns`, the network namespace on
//! `/var/run/netns/tpod-<p>` (`ip netns attach`, so `ip netns` lists it as before). Every
//! container of the pod then *joins* the user namespace by path, and creates its own pid, mount,
//! uts and ipc namespaces in it; libcontainer enters the user namespace first and the network
//! namespace after, which only works because the pod's root has `CAP_SYS_ADMIN` over a network
//! namespace its user namespace owns (it also lets the container mount its own `/sys`). The
//! host's root still configures the network namespace (veth, addresses, routes): the initial
//! user namespace has every capability over the namespaces below it.
//!
//! The namespaces are created by `tpod-runtime-shim hold-ns` ([`hold_namespaces`]), a
//! single-threaded child that unshares both at once (a new user namespace's creator has every
//! capability in it, so the network namespace can be made in the same call) and waits while the
//! runtime writes its id maps and pins its namespaces, then exits.
//!
//! Files stay usable under the shift: images are unpacked with their owners moved into the
//! pod's range ([`tpod_image::unpack_shifted`]), volumes' directories belong to the pod's root
//! (see [`crate::volume`]), and everything else a container reads is readable by all. The
//! container's processes run as host ids of the range, with no privilege over the host's files,
//! so they cannot reach the rootfs and volumes through the provider's state directory if one of
//! its parents is closed to others (a `0700` home or temporary directory). The shim therefore
//! creates each container from a private mount namespace where the pod's directory is
//! bind-mounted on [`STAGE`] ([`stage_pod_dir`]), and the container's runtime spec names the
//! rootfs and the bind-mounted files by their paths there: only the pod's own directories,
//! which the runtime makes searchable by all (`0711`), are walked.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::RuntimeError;

/// Where the shim bind-mounts the pod's directory, in its private mount namespace, before it
/// creates a container (see the module docs). Only ever a mount point: the host's directory
/// stays empty.
pub const STAGE: &str = "/run/tpod-runtime/pod";

/// The file the pod's user namespace is pinned on, in the pod's directory.
const PIN: &str = "userns";

/// A pod's range of host ids: container ids `0..count` are host ids `base..base + count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdRange {
    pub base: u32,
    pub count: u32,
}

impl IdRange {
    /// The shift that unpacks images into this range.
    pub(crate) fn shift(self) -> Result<tpod_image::IdShift, RuntimeError> {
        tpod_image::IdShift::new(self.base, self.count).ok_or_else(|| RuntimeError::InvalidSpec {
            pod: String::new(),
            reason: format!("host ids {} + {} pass the largest valid id", self.base, self.count),
        })
    }

    /// The `uid_map` / `gid_map` line of the pod's user namespace.
    fn map_line(self) -> String {
        format!("0 {} {}\n", self.base, self.count)
    }
}

/// The lowest free range of `per_pod` ids from `first`, as `first + k * per_pod`, that no range
/// in `used` overlaps; `None` when the id space (up to `u32::MAX - 1`, the largest valid id) is
/// exhausted.
pub(crate) fn allocate(first: u32, per_pod: u32, used: &[IdRange]) -> Option<IdRange> {
    let (first, per_pod) = (u64::from(first), u64::from(per_pod));
    let overlaps = |base: u64| {
        used.iter().any(|r| base < u64::from(r.base) + u64::from(r.count) && u64::from(r.base) < base + per_pod)
    };
    (0u64..)
        .map(|k| first + k * per_pod)
        .take_while(|base| base + per_pod <= u64::from(u32::MAX))
        .find(|base| !overlaps(*base))
        .and_then(|base| Some(IdRange { base: u32::try_from(base).ok()?, count: u32::try_from(per_pod).ok()? }))
}

/// The bind-mounted file holding the user namespace of the pod at `pod_dir`.
pub(crate) fn pin_path(pod_dir: &Path) -> PathBuf {
    pod_dir.join(PIN)
}

/// Whether the pod at `pod_dir` has its user namespace pinned.
pub(crate) fn exists(pod_dir: &Path) -> Result<bool, RuntimeError> {
    crate::volume::is_mounted(&pin_path(pod_dir))
}

/// Creates the pod's user namespace (mapped to `ids`) and, owned by it, its network namespace,
/// pinning the first on `<pod_dir>/userns` and naming the second `netns` (`ip netns attach`).
/// Blocking. On error, what was made stays for [`remove`] and [`crate::net::teardown`].
pub(crate) fn create(shim: &Path, pod_dir: &Path, netns: &str, ids: IdRange) -> Result<(), RuntimeError> {
    let command = || format!("{} hold-ns", shim.display());
    let failed = |message: String| RuntimeError::Command { command: command(), message };
    let mut child = Command::new(shim)
        .arg("hold-ns")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    let result = configure(&mut child, pod_dir, netns, ids);
    // Closing its stdin lets it exit: the pins keep the namespaces.
    drop(child.stdin.take());
    if result.is_err() {
        let _ = child.kill();
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(|e| failed(e.to_string()))?;
    match result {
        Err(RuntimeError::Command { command, message }) if !stderr.trim().is_empty() => {
            Err(RuntimeError::Command { command, message: format!("{message}: {}", stderr.trim()) })
        }
        Err(e) => Err(e),
        Ok(()) if !status.success() => Err(failed(format!("{status}: {}", stderr.trim()))),
        Ok(()) => Ok(()),
    }
}

/// The runtime's side of `hold-ns`: waits for the child's namespaces, maps its ids, pins them.
fn configure(child: &mut std::process::Child, pod_dir: &Path, netns: &str, ids: IdRange) -> Result<(), RuntimeError> {
    let pid = child.id();
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        BufReader::new(stdout).read_line(&mut line).map_err(|e| RuntimeError::Command {
            command: "tpod-runtime-shim hold-ns".to_owned(),
            message: format!("reading its readiness: {e}"),
        })?;
    }
    if line.trim() != "ready" {
        return Err(RuntimeError::Command {
            command: "tpod-runtime-shim hold-ns".to_owned(),
            message: format!("it did not make its namespaces (said {:?})", line.trim()),
        });
    }
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    // Written by the host's root, so `setgroups` stays allowed in the pod (images' `su`, `sudo`
    // need it) and any range may be mapped; both maps are written once and for good.
    for map in ["uid_map", "gid_map"] {
        let path = proc_dir.join(map);
        fs::write(&path, ids.map_line()).map_err(RuntimeError::io("writing the pod's id map", &path))?;
    }
    let pin = pin_path(pod_dir);
    // An empty, read-only file as mount point: the bind mount of the namespace file covers it.
    fs::write(&pin, b"").map_err(RuntimeError::io("creating the user namespace pin", &pin))?;
    fs::set_permissions(&pin, fs::Permissions::from_mode(0o444))
        .map_err(RuntimeError::io("creating the user namespace pin", &pin))?;
    let source = proc_dir.join("ns/user");
    run("mount", &["--bind".as_ref(), source.as_os_str(), pin.as_os_str()])?;
    // Like `ip netns add`, but with this namespace: `/var/run/netns/<name>`, found by `ip -n`.
    run("ip", &["netns".as_ref(), "attach".as_ref(), netns.as_ref(), pid.to_string().as_ref()])?;
    Ok(())
}

/// Unpins the pod's user namespace (the kernel frees it once no container and no network
/// namespace uses it) and removes the pin file. Idempotent.
pub(crate) fn remove(pod_dir: &Path) -> Result<(), RuntimeError> {
    let pin = pin_path(pod_dir);
    // A namespace pinned twice (a crash between two attempts) is unpinned twice.
    while crate::volume::is_mounted(&pin)? {
        run("umount", &[pin.as_os_str()])?;
    }
    match fs::remove_file(&pin) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(RuntimeError::io("removing the user namespace pin", &pin)(e))
        }
        _ => Ok(()),
    }
}

/// Runs `program` with `args`; fails with its stderr.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<(), RuntimeError> {
    crate::volume::run(program, args).map(drop)
}

/// `tpod-runtime-shim hold-ns`: makes a user namespace and, owned by it, a network namespace,
/// says `ready` on stdout and waits for stdin to close (see [`create`]). Errors are text for the
/// shim's stderr.
#[doc(hidden)]
pub fn hold_namespaces() -> Result<(), String> {
    use nix::sched::{CloneFlags, unshare};
    // One call: the user namespace is made first, and its creator has every capability in it,
    // so the network namespace made next is owned by it.
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("unshare(CLONE_NEWUSER | CLONE_NEWNET): {e}"))?;
    let mut stdout = std::io::stdout();
    stdout.write_all(b"ready\n").and_then(|()| stdout.flush()).map_err(|e| format!("saying ready: {e}"))?;
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest).map_err(|e| format!("waiting for the runtime: {e}"))?;
    Ok(())
}

/// For `tpod-runtime-shim create`: moves this process into a private mount namespace (whose
/// mounts never reach the host's) in which `pod_dir` is bind-mounted, with everything mounted
/// under it, on [`STAGE`] (see the module docs). The container's mount namespace is a copy of
/// it, and loses the stage with the rest of the host's tree when it pivots into its rootfs.
#[doc(hidden)]
pub fn stage_pod_dir(pod_dir: &Path) -> Result<(), String> {
    use nix::mount::{MsFlags, mount};
    use nix::sched::{CloneFlags, unshare};
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_SLAVE, None::<&str>)
        .map_err(|e| format!("making the shim's mounts private: {e}"))?;
    mount(Some(pod_dir), STAGE, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
        .map_err(|e| format!("bind-mounting {} on {STAGE}: {e}", pod_dir.display()))?;
    Ok(())
}

/// Makes sure [`STAGE`] exists (an empty directory, reachable by all).
pub(crate) fn ensure_stage() -> Result<(), RuntimeError> {
    let stage = Path::new(STAGE);
    fs::create_dir_all(stage).map_err(RuntimeError::io("creating the container staging directory", stage))?;
    for dir in stage.ancestors().take_while(|d| d.starts_with("/run/tpod-runtime")) {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(RuntimeError::io("opening the container staging directory", dir))?;
    }
    Ok(())
}

/// `path`, under the pod directory `pod_dir`, as the shim's stage shows it.
pub(crate) fn staged(pod_dir: &Path, path: &Path) -> PathBuf {
    match path.strip_prefix(pod_dir) {
        Ok(rel) => Path::new(STAGE).join(rel),
        Err(_) => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn ranges_are_the_lowest_free_and_never_overlap() {
        let r = |base, count| IdRange { base, count };
        assert_eq!(allocate(1 << 20, 65536, &[]), Some(r(1 << 20, 65536)));
        let used = [r(1 << 20, 65536), r((1 << 20) + 2 * 65536, 65536)];
        assert_eq!(allocate(1 << 20, 65536, &used), Some(r((1 << 20) + 65536, 65536)));
        // A range of another size (an earlier configuration) is avoided too.
        assert_eq!(allocate(1 << 20, 65536, &[r((1 << 20) + 100, 10)]), Some(r((1 << 20) + 65536, 65536)));
        // The last range ends below u32::MAX, which is no id.
        let last = u32::MAX - 65536;
        assert_eq!(allocate(last, 65536, &[]), Some(r(last, 65536)));
        assert_eq!(allocate(last + 1, 65536, &[]), None);
        assert_eq!(allocate(last, 65536, &[r(last, 1)]), None);
    }

    #[test]
    fn staged_paths_are_under_the_stage() {
        let pod = Path::new("/data/pods/abc");
        assert_eq!(staged(pod, &pod.join("containers/web/hosts")), Path::new(STAGE).join("containers/web/hosts"));
        assert_eq!(staged(pod, Path::new("/elsewhere")), Path::new("/elsewhere"));
        assert_eq!(IdRange { base: 7, count: 3 }.map_line(), "0 7 3\n");
    }
}
