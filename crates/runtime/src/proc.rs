//! Watching container processes by pid. A process we started is our child and `waitpid` gives
//! its exit code; one adopted after a provider restart is not, so it is watched through
//! `/proc`. A pid is only trusted together with its start time, so a recycled pid is never
//! mistaken for (or killed as) the container.

use std::fs;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// The process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22), if it
/// exists and is not a zombie.
pub(crate) fn start_ticks(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: parse after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state), so field 22 is fields[19].
    let state = *fields.first()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether the process `pid` that started at `ticks` still runs.
pub(crate) fn alive(pid: i32, ticks: u64) -> bool {
    start_ticks(pid) == Some(ticks)
}

/// Whether process `pid` is in the cgroup at `path` (as `/proc/<pid>/cgroup` shows it, in
/// any hierarchy).
pub(crate) fn in_cgroup(pid: i32, path: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .is_ok_and(|text| text.lines().any(|line| line.rsplit_once(':').is_some_and(|(_, p)| p == path)))
}

/// What a non-blocking look at a process found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    /// It still runs.
    Running,
    /// It is gone, with its exit code when it was our child (128 + signal if killed).
    Exited(Option<i32>),
}

/// Checks on `pid` without blocking, reaping it if it is our child and has exited.
pub(crate) fn probe(pid: i32, ticks: u64) -> Probe {
    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Probe::Exited(Some(code)),
        Ok(WaitStatus::Signaled(_, signal, _)) => Probe::Exited(Some(128 + signal as i32)),
        Ok(_) => Probe::Running,
        // Not our child (adopted): it is gone when /proc no longer shows it running.
        Err(_) if alive(pid, ticks) => Probe::Running,
        Err(_) => Probe::Exited(None),
    }
}

/// Kills `pid` (if it is still the process that started at `ticks`) with SIGKILL and waits up
/// to `timeout` for it to go, reaping it if it is our child.
pub(crate) fn kill_and_reap(pid: i32, ticks: u64, timeout: Duration) {
    if alive(pid, ticks) {
        match kill(Pid::from_raw(pid), Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => tracing::warn!(pid, error = %e, "could not kill container process"),
        }
    }
    let deadline = std::time::Instant::now() + timeout;
    while probe(pid, ticks) == Probe::Running && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}
