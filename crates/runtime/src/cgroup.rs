//! Reading a container's usage counters from its cgroup, for [`crate::Runtime::usage`].
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

use crate::proc;

/// Where the controllers that meter a container are mounted.
#[derive(Debug)]
enum Layout {
    /// cgroup v1: the `cpuacct` and `memory` hierarchies' mount points.
    V1 { cpuacct: Option<PathBuf>, memory: Option<PathBuf> },
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
            }
            _ => {}
        }
    }
    Layout::V1 { cpuacct, memory }
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
            Layout::V1 { cpuacct, memory } => {
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
            matches!(detect(v1), Layout::V1 { cpuacct: Some(p), memory: None } if p == Path::new("/sys/fs/cgroup/cpu,cpuacct"))
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
