//! Finding, starting and stopping anvil.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::DevnetError;

/// The anvil version the project pins, read from `tools/versions.env` at build time so the pin
/// stays in one place.
pub fn pinned_version() -> &'static str {
    include_str!("../../../tools/versions.env")
        .lines()
        .find_map(|l| l.strip_prefix("ANVIL_VERSION="))
        .map(str::trim)
        .unwrap_or("unknown")
}

/// The version `bin --version` reports (e.g. `1.7.1`).
pub fn version(bin: &Path) -> Result<String, DevnetError> {
    let out = Command::new(bin).arg("--version").stdin(Stdio::null()).output().map_err(|e| {
        DevnetError::AnvilFailed { reason: format!("cannot run {} --version: {e}", bin.display()), log: bin.to_owned() }
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "anvil Version: 1.7.1" on the first line.
    Ok(text.lines().next().and_then(|l| l.rsplit(' ').next()).unwrap_or_default().to_owned())
}

/// How long anvil may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Finds the anvil binary: `explicit` if given, else `$TPOD_ANVIL`, else `anvil` on `PATH`.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, DevnetError> {
    let mut searched = Vec::new();
    let candidates = explicit
        .map(Path::to_path_buf)
        .into_iter()
        .chain(std::env::var_os("TPOD_ANVIL").map(PathBuf::from))
        .collect::<Vec<_>>();
    if let Some(first) = candidates.first() {
        if first.is_file() {
            return Ok(first.clone());
        }
        return Err(DevnetError::AnvilMissing { searched: format!("{} does not exist", first.display()) });
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let bin = dir.join("anvil");
        if bin.is_file() {
            return Ok(bin);
        }
        searched.push(dir.display().to_string());
    }
    Err(DevnetError::AnvilMissing { searched: format!("not on PATH: {}", searched.join(":")) })
}

/// How to start anvil.
#[derive(Clone, Debug)]
pub struct AnvilOptions {
    /// The binary.
    pub bin: PathBuf,
    /// Loopback port; 0 picks a free one.
    pub port: u16,
    /// Chain id.
    pub chain_id: u64,
    /// A state file to load at start and dump at exit (`anvil --state`).
    pub state: Option<PathBuf>,
    /// Where anvil's output goes.
    pub log: PathBuf,
    /// Whether anvil should outlive this process (its own process group, not killed on drop).
    pub detach: bool,
}

/// A running anvil. Killed on drop unless [`release`](Self::release)d.
#[derive(Debug)]
pub struct AnvilProcess {
    child: Option<Child>,
    pid: u32,
    /// Its JSON-RPC URL.
    pub url: String,
    /// The port it listens on.
    pub port: u16,
}

impl AnvilProcess {
    /// Starts anvil on 127.0.0.1 and waits until it listens.
    pub async fn spawn(opts: &AnvilOptions) -> Result<Self, DevnetError> {
        let log = std::fs::File::create(&opts.log).map_err(|e| DevnetError::io(&opts.log, e))?;
        let log_err = log.try_clone().map_err(|e| DevnetError::io(&opts.log, e))?;
        let mut cmd = Command::new(&opts.bin);
        cmd.args(["--host", "127.0.0.1", "--port", &opts.port.to_string()])
            .args(["--chain-id", &opts.chain_id.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some(state) = &opts.state {
            cmd.arg("--state").arg(state);
        }
        if opts.detach {
            // Its own process group: a Ctrl-C in the terminal that ran `tpod dev up` leaves it be.
            cmd.process_group(0);
        }
        let child = cmd.spawn().map_err(|e| DevnetError::AnvilFailed {
            reason: format!("cannot run {}: {e}", opts.bin.display()),
            log: opts.log.clone(),
        })?;
        let pid = child.id();
        let mut node = Self { child: Some(child), pid, url: String::new(), port: 0 };
        let started = Instant::now();
        loop {
            if let Some(port) = listening_port(&opts.log) {
                node.port = port;
                node.url = format!("http://127.0.0.1:{port}");
                return Ok(node);
            }
            if let Some(child) = node.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(DevnetError::AnvilFailed {
                    reason: format!("it exited with {status}"),
                    log: opts.log.clone(),
                });
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(DevnetError::AnvilFailed {
                    reason: format!("it did not listen within {}s", START_TIMEOUT.as_secs()),
                    log: opts.log.clone(),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Lets anvil run on after this handle is dropped.
    pub fn release(&mut self) {
        self.child = None;
    }

    /// Stops anvil gracefully (it dumps its `--state` file on the way out) and waits for it.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for AnvilProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The port in anvil's "Listening on 127.0.0.1:PORT" line, once it has printed it.
fn listening_port(log: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.starts_with("Listening on "))?;
    line.rsplit(':').next()?.trim().parse().ok()
}

/// Whether `pid` is a live anvil process (not just any process that reused the pid).
pub fn is_running(pid: u32) -> bool {
    is_live_process(pid, "anvil")
}

/// Whether `pid` is a live process whose program file is called `name` (not just any process
/// that reused the pid).
pub fn is_live_process(pid: u32, name: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let named = Path::new(std::str::from_utf8(argv0).unwrap_or_default()).file_name() == Some(name.as_ref());
    // A zombie still has /proc/<pid> but an empty cmdline; it is not running.
    named && kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// Stops the anvil with `pid` (SIGTERM, then SIGKILL after `grace`). Returns whether it was running.
pub async fn stop(pid: u32, grace: Duration) -> bool {
    if !is_running(pid) {
        return false;
    }
    let target = Pid::from_raw(pid as i32);
    let _ = kill(target, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_running(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = kill(target, Signal::SIGKILL);
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn pinned_version_comes_from_versions_env() {
        let v = super::pinned_version();
        assert!(v.split('.').count() == 3 && v.split('.').all(|p| p.parse::<u32>().is_ok()), "{v}");
    }
}
