//! Creates and starts one container with libcontainer, prints its pid and exits.
//!
//! `tpod-runtime-shim create <state root> <container id> <bundle> <log file> <pod dir>`
//!
//! It first moves into a private mount namespace where `<pod dir>` is bind-mounted on the stage
//! the runtime spec's paths name (see `tpod_runtime::userns`): the container's processes, which
//! run as the pod's unprivileged host ids, then reach the rootfs and bind-mounted files without
//! walking the provider's state directory.
//!
//! Also `tpod-runtime-shim unpack` (see `tpod_runtime::run_unpack_job`) and
//! `tpod-runtime-shim hold-ns`, which makes a pod's user and network namespaces (see
//! `tpod_runtime::userns`): both need a single-threaded process.
//!
//! [`tpod_runtime::LocalRuntime`] runs this rather than calling libcontainer in-process because
//! libcontainer forks with a raw `clone3`: in a multi-threaded program (the provider, with its
//! tokio threads) the child can inherit a lock another thread held (allocator, `tracing`, std's
//! environment lock) and hang forever before it execs. This process has one thread. It also
//! `chdir`s freely (libcontainer does, around its notify socket) without disturbing the provider.
//!
//! The container is sandboxed by the seccomp profile its runtime spec carries (`linux.seccomp`,
//! see [`tpod_runtime::sandbox`]): compiled to BPF here, before anything starts, and installed
//! by [`Sandboxed`], the executor libcontainer runs in the container's init process, right
//! before it `execve`s the container's program: after libcontainer's own mounts, capability
//! drop and `chdir`, which the profile would refuse.
//!
//! The container's stdout and stderr are the log pipe (a FIFO), opened read-write; its init process is
//! re-parented to the provider (a child subreaper) when this process exits, so the provider can
//! collect its exit code.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::process::ExitCode;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::Spec;
use seccompiler::BpfProgram;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("unpack") => return unpack(),
        Some("hold-ns") => return report(tpod_runtime::userns::hold_namespaces()),
        _ => {}
    }
    let [command, root, id, bundle, log, pod_dir] = args.as_slice() else {
        eprintln!("usage: tpod-runtime-shim create <state root> <container id> <bundle> <log file> <pod dir>");
        return ExitCode::from(2);
    };
    if command != "create" {
        eprintln!("tpod-runtime-shim: unknown command {command:?}");
        return ExitCode::from(2);
    }
    if let Err(message) = tpod_runtime::userns::stage_pod_dir(std::path::Path::new(pod_dir)) {
        eprintln!("create: {message}");
        return ExitCode::FAILURE;
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

/// Exit status and stderr for a subcommand's result.
fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// `tpod-runtime-shim unpack`: unpacks the image its stdin describes from the pod's memory
/// cgroup (see `tpod_runtime::run_unpack_job`).
fn unpack() -> ExitCode {
    let mut job = zeroize::Zeroizing::new(Vec::new());
    if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut job) {
        eprintln!("reading the unpack job: {e}");
        return ExitCode::FAILURE;
    }
    report(tpod_runtime::run_unpack_job(&job))
}

fn create(root: PathBuf, id: &str, bundle: PathBuf, log: PathBuf) -> Result<i32, String> {
    // The log is a FIFO the runtime reads (see tpod_runtime's logs module). Read-write, so it
    // always has a reader while the container lives: no SIGPIPE while the provider is down, and
    // opening it never blocks.
    let stdout = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&log)
        .map_err(|e| format!("opening log {}: {e}", log.display()))?;
    let stderr = stdout.try_clone().map_err(|e| format!("opening log {}: {e}", log.display()))?;
    let stdin = File::open("/dev/null").map_err(|e| format!("opening /dev/null: {e}"))?;
    let config = bundle.join("config.json");
    let spec = Spec::load(&config).map_err(|e| format!("create: reading {}: {e}", config.display()))?;
    let filters = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => tpod_runtime::sandbox::compile(profile).map_err(|e| format!("create: {e}"))?,
        None => Vec::new(),
    };
    let mut container = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_root_path(root)
        .map_err(|e| format!("create: {}", tpod_runtime::error_chain(&e)))?
        .with_executor(Sandboxed { filters })
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

/// libcontainer's default executor with the seccomp filters installed first: it runs in the
/// container's init process once everything else is set up, so the filters bind the container's
/// program from its first instruction and nothing of libcontainer's setup.
#[derive(Clone)]
struct Sandboxed {
    /// Installed in order (see [`tpod_runtime::sandbox::compile`]).
    filters: Vec<BpfProgram>,
}

impl Executor for Sandboxed {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        for filter in &self.filters {
            // Also sets no_new_privs, which the spec asks for anyway.
            seccompiler::apply_filter(filter)
                .map_err(|e| ExecutorError::Other(format!("installing the seccomp filter: {e}")))?;
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}
