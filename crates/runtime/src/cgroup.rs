//! The pod's cgroups: reading a container's usage counters for [`crate::Runtime::usage`], and
//! the per-pod parent cgroup that holds the pod's memory limit.
//!
//! Pod cgroup: a container's cgroup ([`crate::cgroups_path`], `/tpod/<pod>/<container>`) sits
//! under one cgroup per pod ([`pod_path`], `/tpod/<pod>`) whose memory limit is the sum of its
//! containers' limits. It exists for what outlives a container's process: tmpfs pages (the
//! in-memory rootfs) stay charged to the memory cgroup of the process that first touched them,
//! and when that cgroup is removed (every container restart removes the container's cgroup)
//! they stay counted in its ancestors. Without a pod cgroup they landed in the shared `/tpod`,
//! which has no limit: a container could write its rootfs full, exit, and do it again in a
//! fresh cgroup. Under the pod cgroup they keep counting against the pod's limit for as long
//! as the pages exist (until the tmpfs is unmounted). The image is unpacked by a process in a
//! leaf of the pod cgroup ([`unpack_procs`]) so the unpacked rootfs is charged to the pod too.
//! The pod cgroup is removed (in every hierarchy) when the pod is deleted, after its tmpfs are
//! unmounted; [`crate::Runtime::stop`] keeps it with the rootfs.
//!
//! libcontainer puts a container in the cgroup at [`crate::cgroups_path`]: under every v1
//! controller on a legacy or hybrid host (`/sys/fs/cgroup` a tmpfs of v1 hierarchies, the v2 one
//! if any only at `unified/`), or under the v2 root on a unified host (`/sys/fs/cgroup` itself a
//! `cgroup2` mount). The layout is detected the same way, once per process, from
//! `/proc/self/mountinfo`; after that a reading is one or two small sysfs file reads.
//!
//! CPU: `cpuacct.usage` (v1, nanoseconds) or `usage_usec` of `cpu.stat` (v2, microseconds).
//! Memory: `memory.usage_in_bytes` (v1) or `memory.current` (v2), page cache included.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use crate::{RuntimeError, proc};

/// Where the controllers that meter a container are mounted.
#[derive(Debug)]
enum Layout {
    /// cgroup v1: the `cpuacct` and `memory` hierarchies' mount points, and every v1
    /// hierarchy's (libcontainer makes the pod's directory in each).
    V1 { cpuacct: Option<PathBuf>, memory: Option<PathBuf>, all: Vec<PathBuf> },
    /// cgroup v2: the unified hierarchy's mount point.
    V2 { root: PathBuf },
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

fn layout() -> &'static Layout {
    static LAYOUT: OnceLock<Layout> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let layout = detect(&mountinfo);
        tracing::debug!(?layout, "cgroup layout");
        layout
    })
}

/// The layout `mountinfo` describes: v2 when the cgroup root is itself a `cgroup2` mount (as
/// libcgroups decides), else the v1 hierarchies that hold `cpuacct` and `memory`.
fn detect(mountinfo: &str) -> Layout {
    let mut cpuacct = None;
    let mut memory = None;
    let mut all = Vec::new();
    for line in mountinfo.lines() {
        // `<id> <parent> <dev> <root> <mount point> <options> [optional…] - <type> <source> <super options>`
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let Some(mount_point) = left.split(' ').nth(4) else { continue };
        let mut right = right.split(' ');
        let (Some(fs_type), Some(_source), Some(options)) = (right.next(), right.next(), right.next()) else {
            continue;
        };
        match fs_type {
            "cgroup2" if mount_point == CGROUP_ROOT => return Layout::V2 { root: PathBuf::from(mount_point) },
            "cgroup" => {
                let has = |controller: &str| options.split(',').any(|o| o == controller);
                if has("cpuacct") && cpuacct.is_none() {
                    cpuacct = Some(PathBuf::from(mount_point));
                }
                if has("memory") && memory.is_none() {
                    memory = Some(PathBuf::from(mount_point));
                }
                all.push(PathBuf::from(mount_point));
            }
            _ => {}
        }
    }
    Layout::V1 { cpuacct, memory, all }
}

fn join(base: &Path, cgroup: &str) -> PathBuf {
    base.join(cgroup.trim_start_matches('/'))
}

/// The directory whose CPU counter meters `cgroup` (a [`crate::cgroups_path`]).
fn cpu_dir(cgroup: &str) -> Option<PathBuf> {
    match layout() {
        Layout::V1 { cpuacct, .. } => cpuacct.as_deref().map(|m| join(m, cgroup)),
        Layout::V2 { root } => Some(join(root, cgroup)),
    }
}

/// Whether the cgroup exists (the one holding its CPU counter).
pub(crate) fn exists(cgroup: &str) -> bool {
    cpu_dir(cgroup).is_some_and(|d| d.is_dir())
}

/// The CPU time used in the cgroup so far, in nanoseconds; `None` if it does not exist.
pub(crate) fn cpu_ns(cgroup: &str) -> Option<u64> {
    match layout() {
        Layout::V1 { cpuacct, .. } => {
            let path = join(cpuacct.as_deref()?, cgroup).join("cpuacct.usage");
            fs::read_to_string(path).ok()?.trim().parse().ok()
        }
        Layout::V2 { root } => {
            let stat = fs::read_to_string(join(root, cgroup).join("cpu.stat")).ok()?;
            parse_usage_usec(&stat).map(|us| us.saturating_mul(1000))
        }
    }
}

fn parse_usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat.lines().find_map(|line| line.strip_prefix("usage_usec ")).and_then(|v| v.trim().parse().ok())
}

/// The memory charged to the cgroup now, in bytes; `None` if it does not exist.
pub(crate) fn memory_bytes(cgroup: &str) -> Option<u64> {
    let path = match layout() {
        Layout::V1 { memory, .. } => join(memory.as_deref()?, cgroup).join("memory.usage_in_bytes"),
        Layout::V2 { root } => join(root, cgroup).join("memory.current"),
    };
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The cgroup path of a pod, parent of its containers' cgroups: `/tpod/<first 12 hex of the
/// pod id>`.
pub(crate) fn pod_path(pod_id: &str) -> String {
    let prefix = pod_id.get(..12).unwrap_or(pod_id);
    format!("/tpod/{prefix}")
}

/// The leaf of the pod cgroup that unpacking processes join. Its name cannot be a container's
/// (container names have no `_`); cgroup v2 allows processes only in leaves.
const UNPACK_LEAF: &str = "_unpack";

/// How long removing a cgroup is retried while it is busy (its last process being reaped).
const RMDIR_RETRY: Duration = Duration::from_secs(3);

/// The directory of the memory controller for `cgroup`, if the host has one.
fn memory_dir(cgroup: &str) -> Option<PathBuf> {
    match layout() {
        Layout::V1 { memory, .. } => memory.as_deref().map(|m| join(m, cgroup)),
        Layout::V2 { root } => Some(join(root, cgroup)),
    }
}

fn write(path: &Path, value: &str) -> Result<(), RuntimeError> {
    fs::write(path, value).map_err(RuntimeError::io("writing cgroup file", path))
}

/// Creates the pod cgroup (if missing) and sets its memory limit to `memory_limit` bytes
/// (`None`: no limit of its own). Called before anything of the pod is unpacked or launched, and
/// again with the new sum on an update (after the old rootfs are freed: a limit below what is
/// charged is refused by the kernel with `EBUSY`).
pub(crate) fn ensure_pod(pod_id: &str, memory_limit: Option<u64>) -> Result<(), RuntimeError> {
    let cgroup = pod_path(pod_id);
    let Some(dir) = memory_dir(&cgroup) else {
        return Err(RuntimeError::Command {
            command: format!("mkdir {cgroup}"),
            message: "the host has no memory cgroup controller: pod memory limits cannot be enforced".to_owned(),
        });
    };
    fs::create_dir_all(&dir).map_err(RuntimeError::io("creating pod cgroup", &dir))?;
    let limit = memory_limit.map_or_else(|| "max".to_owned(), |l| l.to_string());
    match layout() {
        // v1 takes -1 for "no limit".
        Layout::V1 { .. } => {
            write(&dir.join("memory.limit_in_bytes"), if memory_limit.is_some() { &limit } else { "-1" })
        }
        Layout::V2 { root } => {
            // The memory controller must be enabled down to the pod and in it, for its
            // children (libcontainer enables what a container's own cgroup needs, later).
            let mut at = root.clone();
            for part in ["tpod", cgroup.trim_start_matches("/tpod/")] {
                write(&at.join("cgroup.subtree_control"), "+memory")?;
                at = at.join(part);
            }
            write(&dir.join("cgroup.subtree_control"), "+memory")?;
            write(&dir.join("memory.max"), &limit)?;
            // Never swap a pod's memory out (its tmpfs are noswap too); absent without swap.
            if let Err(e) = write(&dir.join("memory.swap.max"), "0") {
                tracing::debug!(error = %e, "no swap limit for the pod cgroup");
            }
            Ok(())
        }
    }
}

/// Creates the pod cgroup's unpack leaf and returns its `cgroup.procs`, which an unpacking
/// process writes its pid to before it touches the rootfs. The pod cgroup must exist.
pub(crate) fn unpack_procs(pod_id: &str) -> Result<PathBuf, RuntimeError> {
    let leaf = format!("{}/{UNPACK_LEAF}", pod_path(pod_id));
    let Some(dir) = memory_dir(&leaf) else {
        return Err(RuntimeError::Command {
            command: format!("mkdir {leaf}"),
            message: "the host has no memory cgroup controller".to_owned(),
        });
    };
    fs::create_dir_all(&dir).map_err(RuntimeError::io("creating unpack cgroup", &dir))?;
    Ok(dir.join("cgroup.procs"))
}

/// Removes the unpack leaf once its process is gone; what it charged stays with the pod.
pub(crate) fn remove_unpack_leaf(pod_id: &str) -> Result<(), RuntimeError> {
    let Some(dir) = memory_dir(&format!("{}/{UNPACK_LEAF}", pod_path(pod_id))) else { return Ok(()) };
    remove_dir(&dir)
}

/// Removes an empty cgroup directory (missing is fine), retrying while it is busy.
fn remove_dir(dir: &Path) -> Result<(), RuntimeError> {
    let deadline = Instant::now() + RMDIR_RETRY;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(RuntimeError::io("removing cgroup", dir)(e)),
        }
    }
}

/// Every directory the pod cgroup has (one per v1 hierarchy holding it, or the v2 one).
pub(crate) fn pod_dirs(pod_id: &str) -> Vec<PathBuf> {
    let cgroup = pod_path(pod_id);
    let bases: Vec<&Path> = match layout() {
        Layout::V1 { all, .. } => all.iter().map(PathBuf::as_path).collect(),
        Layout::V2 { root } => vec![root.as_path()],
    };
    bases.into_iter().map(|base| join(base, &cgroup)).filter(|d| d.is_dir()).collect()
}

/// Removes the pod cgroup in every hierarchy, child cgroups first (containers' cgroups are
/// libcontainer's to remove; any left by a crash go too). Its processes must be gone and its
/// tmpfs unmounted. Keeps going past errors and returns the first.
pub(crate) fn remove_pod(pod_id: &str) -> Result<(), RuntimeError> {
    let mut first = None;
    for dir in pod_dirs(pod_id) {
        let mut children: Vec<PathBuf> = fs::read_dir(&dir)
            .map(|entries| {
                entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()).collect()
            })
            .unwrap_or_default();
        children.push(dir);
        for d in children {
            if let Err(e) = remove_dir(&d) {
                tracing::warn!(cgroup = %d.display(), error = %e, "cannot remove pod cgroup");
                first.get_or_insert(e);
            }
        }
    }
    first.map_or(Ok(()), Err)
}

/// Removes the `/tpod` parent of all pod cgroups in every hierarchy where it is empty. For a
/// runtime taken down for good: while another runtime on the host has pods it stays (busy).
pub(crate) fn remove_parent_if_empty() {
    let bases: Vec<&Path> = match layout() {
        Layout::V1 { all, .. } => all.iter().map(PathBuf::as_path).collect(),
        Layout::V2 { root } => vec![root.as_path()],
    };
    for base in bases {
        let _ = fs::remove_dir(join(base, "/tpod"));
    }
}

/// Kills every process left in the cgroup and waits (up to `timeout`) until none runs, so
/// its CPU counter is final. Processes that are ours are reaped; zombies no longer count.
pub(crate) fn kill_all(cgroup: &str, timeout: Duration) {
    let Some(procs) = cpu_dir(cgroup).map(|d| d.join("cgroup.procs")) else { return };
    let deadline = Instant::now() + timeout;
    loop {
        let Ok(text) = fs::read_to_string(&procs) else { return };
        let live: Vec<i32> = text
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .filter(|&pid| proc::start_ticks(pid).is_some())
            .collect();
        if live.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            tracing::warn!(cgroup, ?live, "processes of a removed container did not go");
            return;
        }
        for &pid in &live {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_hybrid_split_v1_controllers() {
        let mountinfo = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                         32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                         33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n\
                         35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:5 - cgroup cgroup rw,memory\n\
                         41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        match detect(mountinfo) {
            Layout::V1 { cpuacct, memory, all } => {
                assert_eq!(all.len(), 3);
                assert_eq!(cpuacct.as_deref(), Some(Path::new("/sys/fs/cgroup/cpuacct")));
                assert_eq!(memory.as_deref(), Some(Path::new("/sys/fs/cgroup/memory")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn detects_joint_cpu_cpuacct_and_unified() {
        let v1 = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        assert!(
            matches!(detect(v1), Layout::V1 { cpuacct: Some(p), memory: None, .. } if p == Path::new("/sys/fs/cgroup/cpu,cpuacct"))
        );
        let v2 = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert!(matches!(detect(v2), Layout::V2 { root } if root == Path::new("/sys/fs/cgroup")));
    }

    #[test]
    fn parses_cpu_stat() {
        let stat = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\n";
        assert_eq!(parse_usage_usec(stat), Some(1_234_567));
        assert_eq!(parse_usage_usec("nr_periods 0\n"), None);
    }
}
