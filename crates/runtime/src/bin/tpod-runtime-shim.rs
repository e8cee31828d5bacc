//! Creates and starts one container with libcontainer, prints its pid and exits.
//!
//! `tpod-runtime-shim create <state root> <container id> <bundle> <log file>`
//!
//! [`tpod_runtime::LocalRuntime`] runs this rather than calling libcontainer in-process because
//! libcontainer forks with a raw `clone3`: in a multi-threaded program (the provider, with its
//! tokio threads) the child can inherit a lock another thread held (allocator, `tracing`, std's
//! environment lock) and hang forever before it execs. This process has one thread. It also
//! `chdir`s freely (libcontainer does, around its notify socket) without disturbing the provider.
//!
//! The container's stdout and stderr are the log file, opened `O_APPEND`; its init process is
//! re-parented to the provider (a child subreaper) when this process exits, so the provider can
//! collect its exit code.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [command, root, id, bundle, log] = args.as_slice() else {
        eprintln!("usage: tpod-runtime-shim create <state root> <container id> <bundle> <log file>");
        return ExitCode::from(2);
    };
    if command != "create" {
        eprintln!("tpod-runtime-shim: unknown command {command:?}");
        return ExitCode::from(2);
    }
    match create(PathBuf::from(root), id, PathBuf::from(bundle), PathBuf::from(log)) {
        Ok(pid) => {
            println!("{pid}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn create(root: PathBuf, id: &str, bundle: PathBuf, log: PathBuf) -> Result<i32, String> {
    let stdout = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(&log)
        .map_err(|e| format!("opening log {}: {e}", log.display()))?;
    let stderr = stdout.try_clone().map_err(|e| format!("opening log {}: {e}", log.display()))?;
    let stdin = File::open("/dev/null").map_err(|e| format!("opening /dev/null: {e}"))?;
    let mut container = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_root_path(root)
        .map_err(|e| format!("create: {}", tpod_runtime::error_chain(&e)))?
        .with_stdin(stdin)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .as_init(bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| format!("create: {}", tpod_runtime::error_chain(&e)))?;
    container.start().map_err(|e| format!("start: {}", tpod_runtime::error_chain(&e)))?;
    container.pid().map(|pid| pid.as_raw()).ok_or_else(|| "start: libcontainer reported no pid".to_owned())
}
