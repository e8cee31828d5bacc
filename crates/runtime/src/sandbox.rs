//! The sandbox every container runs in on top of its namespaces and cgroup: the default seccomp
//! profile, written into the container's runtime spec (`linux.seccomp`) and installed by
//! `tpod-runtime-shim` right before the container's first `execve`.
//!
//! The profile is an allow-list in the spirit of Docker's and containerd's defaults (moby's
//! `default.json` for a container without `CAP_SYS_ADMIN`): every system call not in
//! [`ALLOWED`] fails with `EPERM`. So, among others, these fail with `EPERM`:
//! - the kernel keyring: `keyctl`, `add_key`, `request_key` (keys are not namespaced);
//! - namespaces: `unshare`, `clone` with any `CLONE_NEW*` flag (user, mount, network, pid,
//!   ipc, uts, cgroup, time), `setns`; `clone3` fails with `ENOSYS` instead, since its flags sit
//!   behind a pointer a filter cannot read, and C libraries fall back to `clone` on `ENOSYS`;
//! - `io_uring_setup`, `io_uring_enter`, `io_uring_register`; `bpf`; `perf_event_open`;
//!   `userfaultfd`;
//! - mounts: `mount`, `umount2`, `pivot_root`, `chroot`, `move_mount`, `open_tree`, `fsopen`,
//!   `fsconfig`, `fsmount`, `fspick`, `mount_setattr`;
//! - `kexec_load`, `kexec_file_load`, `init_module`, `finit_module`, `delete_module`, `reboot`,
//!   `swapon`, `swapoff`, `acct`, `quotactl`, `syslog`, `iopl`, `ioperm`, `settimeofday`,
//!   `clock_settime`, `sethostname`, `setdomainname`, `open_by_handle_at`, `fanotify_init`,
//!   `lookup_dcookie`, `vhangup`;
//! - cross-process inspection: `ptrace`, `process_vm_readv`, `process_vm_writev`, `kcmp`,
//!   `pidfd_getfd`; NUMA placement: `mbind`, `set_mempolicy`, `migrate_pages`, `move_pages`.
//!
//! `socket` is allowed for every family but `AF_VSOCK` (the host's hypervisor channel);
//! `personality` only for the values Docker allows (`PER_LINUX`, `PER_LINUX32`, `UNAME26` and
//! the query `0xffffffff`). Raw and packet sockets are not a seccomp matter: they need
//! `CAP_NET_RAW`, which containers do not have (their capabilities are `CAP_AUDIT_WRITE`,
//! `CAP_KILL` and `CAP_NET_BIND_SERVICE`, the OCI default, with `noNewPrivileges`). The filter
//! only accepts the host's native architecture: 32-bit (`int 0x80`) system calls kill the
//! process, and x32 ones are not on the list.
//!
//! An operator tightens the profile with [`crate::LocalConfig::seccomp_deny`]: system call
//! names taken off the allow-list (they then fail with `EPERM` too); names this module does not
//! know are refused when the runtime is made, so a typo never passes silently.
//!
//! Why the shim installs it rather than libcontainer: libcontainer's own seccomp support links
//! the C libseccomp; this one is compiled to BPF in pure Rust by `seccompiler` (rust-vmm's, which
//! Firecracker and Cloud Hypervisor use) and loaded by a libcontainer executor at the latest
//! moment, after the container's mounts, capabilities and working directory are set.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Component, Path};

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator,
    LinuxSyscallBuilder,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

use crate::{ContainerSpec, RuntimeError};

/// Why a seccomp profile could not be built or compiled.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// An operator's deny-list names a system call this module does not know.
    #[error("seccomp: unknown system call {0:?} (names are the kernel's, like `ptrace` or `keyctl`)")]
    UnknownSyscall(String),
    /// The profile uses something the compiler does not translate.
    #[error("seccomp: {0}")]
    Unsupported(String),
    /// seccompiler refused the filter.
    #[error("seccomp: compiling the filter: {0}")]
    Compile(#[from] seccompiler::BackendError),
    /// The OCI types refused a value.
    #[error("seccomp: building the profile: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
}

/// What a pod's containers are sandboxed with, from the runtime's [`crate::LocalConfig`].
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// The provider's pids limit per container.
    pids_limit: u64,
    /// System calls the operator takes off the allow-list.
    seccomp_deny: Vec<String>,
}

impl Settings {
    pub(crate) fn of(config: &crate::LocalConfig) -> Self {
        Self { pids_limit: config.pids_limit, seccomp_deny: config.seccomp_deny.clone() }
    }

    /// The pids limit of `container`: what it asks for, if that is lower than the provider's.
    pub(crate) fn pids_limit(&self, container: &ContainerSpec) -> u64 {
        match container.pids_limit {
            0 => self.pids_limit,
            asked => asked.min(self.pids_limit),
        }
    }

    /// The seccomp profile of every container.
    pub(crate) fn seccomp(&self) -> Result<LinuxSeccomp, RuntimeError> {
        profile(&self.seccomp_deny).map_err(|e| RuntimeError::InvalidSpec { pod: String::new(), reason: e.to_string() })
    }
}

/// Container paths no volume may be mounted at or under (as the manifest refuses them too):
/// the runtime mounts the kernel's file systems there, and a volume over `/dev` would have
/// device nodes made in a directory of the host's disk.
pub const RESERVED_MOUNT_PATHS: [&str; 3] = ["proc", "sys", "dev"];

/// Refuses a container whose volume mounts are at or under `/proc`, `/sys` or `/dev`
/// (components compared, so `//dev/` and `/proc/./x` are caught, `/devices` is not).
pub(crate) fn check_mounts(container: &ContainerSpec) -> Result<(), String> {
    for mount in &container.mounts {
        let first = Path::new(&mount.path).components().find_map(|c| match c {
            Component::Normal(name) => Some(name),
            _ => None,
        });
        if let Some(reserved) = RESERVED_MOUNT_PATHS.iter().find(|r| first == Some(OsStr::new(r))) {
            return Err(format!(
                "container {}, mount of volume {:?} at {:?}: volumes cannot be mounted at or under /{reserved}",
                container.name, mount.volume, mount.path
            ));
        }
    }
    Ok(())
}

/// `(name, number)` for each listed system call that exists on the target architecture.
macro_rules! table {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), libc::$name)),*]
    };
}

/// The system calls allowed without conditions (Docker's default list, less the ones named in
/// the module docs). The architecture-specific ones are in [`ALLOWED_LEGACY`].
#[rustfmt::skip]
const ALLOWED: &[(&str, libc::c_long)] = table![
    SYS_accept, SYS_accept4, SYS_adjtimex, SYS_bind, SYS_brk, SYS_capget, SYS_capset, SYS_chdir,
    SYS_clock_adjtime, SYS_clock_getres, SYS_clock_gettime, SYS_clock_nanosleep, SYS_close, SYS_close_range,
    SYS_connect, SYS_copy_file_range, SYS_dup, SYS_dup3, SYS_epoll_create1, SYS_epoll_ctl, SYS_epoll_pwait,
    SYS_epoll_pwait2, SYS_eventfd2, SYS_execve, SYS_execveat, SYS_exit, SYS_exit_group, SYS_faccessat,
    SYS_faccessat2, SYS_fadvise64, SYS_fallocate, SYS_fanotify_mark, SYS_fchdir, SYS_fchmod, SYS_fchmodat,
    SYS_fchmodat2, SYS_fchown, SYS_fchownat, SYS_fcntl, SYS_fdatasync, SYS_fgetxattr, SYS_flistxattr, SYS_flock,
    SYS_fremovexattr, SYS_fsetxattr, SYS_fstat, SYS_fstatfs, SYS_fsync, SYS_ftruncate, SYS_futex,
    SYS_futex_waitv, SYS_getcpu, SYS_getcwd, SYS_getdents64, SYS_getegid, SYS_geteuid, SYS_getgid,
    SYS_getgroups, SYS_getitimer, SYS_getpeername, SYS_getpgid, SYS_getpid, SYS_getppid, SYS_getpriority,
    SYS_getrandom, SYS_getresgid, SYS_getresuid, SYS_getrlimit, SYS_get_robust_list, SYS_getrusage, SYS_getsid,
    SYS_getsockname, SYS_getsockopt, SYS_gettid, SYS_gettimeofday, SYS_getuid, SYS_getxattr,
    SYS_inotify_add_watch, SYS_inotify_init1, SYS_inotify_rm_watch, SYS_io_cancel, SYS_ioctl, SYS_io_destroy,
    SYS_io_getevents, SYS_ioprio_get, SYS_ioprio_set, SYS_io_setup, SYS_io_submit, SYS_kill,
    SYS_landlock_add_rule, SYS_landlock_create_ruleset, SYS_landlock_restrict_self, SYS_lgetxattr, SYS_linkat,
    SYS_listen, SYS_listxattr, SYS_llistxattr, SYS_lremovexattr, SYS_lseek, SYS_lsetxattr, SYS_madvise,
    SYS_membarrier, SYS_memfd_create, SYS_mincore, SYS_mkdirat, SYS_mknodat, SYS_mlock, SYS_mlock2,
    SYS_mlockall, SYS_mmap, SYS_mprotect, SYS_mq_getsetattr, SYS_mq_notify, SYS_mq_open, SYS_mq_timedreceive,
    SYS_mq_timedsend, SYS_mq_unlink, SYS_mremap, SYS_msgctl, SYS_msgget, SYS_msgrcv, SYS_msgsnd, SYS_msync,
    SYS_munlock, SYS_munlockall, SYS_munmap, SYS_name_to_handle_at, SYS_nanosleep, SYS_openat, SYS_openat2,
    SYS_pidfd_open, SYS_pidfd_send_signal, SYS_pipe2, SYS_pkey_alloc, SYS_pkey_free, SYS_pkey_mprotect,
    SYS_ppoll, SYS_prctl, SYS_pread64, SYS_preadv, SYS_preadv2, SYS_prlimit64, SYS_process_mrelease,
    SYS_pselect6, SYS_pwrite64, SYS_pwritev, SYS_pwritev2, SYS_read, SYS_readahead, SYS_readlinkat, SYS_readv,
    SYS_recvfrom, SYS_recvmmsg, SYS_recvmsg, SYS_remap_file_pages, SYS_removexattr, SYS_renameat,
    SYS_renameat2, SYS_restart_syscall, SYS_rseq, SYS_rt_sigaction, SYS_rt_sigpending, SYS_rt_sigprocmask,
    SYS_rt_sigqueueinfo, SYS_rt_sigreturn, SYS_rt_sigsuspend, SYS_rt_sigtimedwait, SYS_rt_tgsigqueueinfo,
    SYS_sched_getaffinity, SYS_sched_getattr, SYS_sched_getparam, SYS_sched_get_priority_max,
    SYS_sched_get_priority_min, SYS_sched_getscheduler, SYS_sched_rr_get_interval, SYS_sched_setaffinity,
    SYS_sched_setattr, SYS_sched_setparam, SYS_sched_setscheduler, SYS_sched_yield, SYS_seccomp, SYS_semctl,
    SYS_semget, SYS_semop, SYS_semtimedop, SYS_sendfile, SYS_sendmmsg, SYS_sendmsg, SYS_sendto,
    SYS_setfsgid, SYS_setfsuid, SYS_setgid, SYS_setgroups, SYS_setitimer, SYS_setpgid, SYS_setpriority,
    SYS_setregid, SYS_setresgid, SYS_setresuid, SYS_setreuid, SYS_setrlimit, SYS_set_robust_list, SYS_setsid,
    SYS_setsockopt, SYS_set_tid_address, SYS_setuid, SYS_setxattr, SYS_shmat, SYS_shmctl, SYS_shmdt,
    SYS_shmget, SYS_shutdown, SYS_sigaltstack, SYS_signalfd4, SYS_socketpair, SYS_splice, SYS_statfs,
    SYS_statx, SYS_symlinkat, SYS_sync, SYS_sync_file_range, SYS_syncfs, SYS_sysinfo, SYS_tee, SYS_tgkill,
    SYS_timer_create, SYS_timer_delete, SYS_timer_getoverrun, SYS_timer_gettime, SYS_timer_settime,
    SYS_timerfd_create, SYS_timerfd_gettime, SYS_timerfd_settime, SYS_times, SYS_tkill, SYS_truncate,
    SYS_umask, SYS_uname, SYS_unlinkat, SYS_utimensat, SYS_vmsplice, SYS_wait4, SYS_waitid, SYS_write,
    SYS_writev,
];

/// The older system calls only some architectures have (x86_64 keeps them; aarch64 never had
/// them).
#[cfg(target_arch = "x86_64")]
#[rustfmt::skip]
const ALLOWED_LEGACY: &[(&str, libc::c_long)] = table![
    SYS_access, SYS_alarm, SYS_arch_prctl, SYS_chmod, SYS_chown, SYS_creat, SYS_dup2, SYS_epoll_create,
    SYS_epoll_wait, SYS_eventfd, SYS_fork, SYS_futimesat, SYS_getdents, SYS_getpgrp, SYS_inotify_init,
    SYS_lchown, SYS_link, SYS_lstat, SYS_mkdir, SYS_mknod, SYS_newfstatat, SYS_open, SYS_pause, SYS_pipe,
    SYS_poll, SYS_readlink, SYS_rename, SYS_rmdir, SYS_select, SYS_signalfd, SYS_stat, SYS_symlink, SYS_time,
    SYS_unlink, SYS_utime, SYS_utimes, SYS_vfork, SYS_set_thread_area, SYS_get_thread_area,
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_LEGACY: &[(&str, libc::c_long)] = table![SYS_newfstatat];

/// Allowed only when their arguments pass the checks in [`profile`]; named here so an operator
/// can deny them too.
const CONDITIONAL: &[(&str, libc::c_long)] = table![SYS_clone, SYS_clone3, SYS_unshare, SYS_socket, SYS_personality];

/// The namespace flags of `clone` and `unshare` (`CLONE_NEWTIME` only means that for
/// `unshare`: in `clone` that bit is part of the exit signal, which never reaches it).
const CLONE_NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;
const CLONE_NEWTIME: u64 = 0x80;

/// The `personality` values allowed: `PER_LINUX`, `PER_LINUX32`, `UNAME26`, both, and the query.
const PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// `AF_VSOCK`: the only socket family refused.
const AF_VSOCK: u64 = libc::AF_VSOCK as u64;

/// Every system call number this module knows, by name (without the `SYS_` prefix).
// `c_long` is `i64` on the 64-bit targets this runs on, but not everywhere.
#[allow(clippy::useless_conversion)]
fn known() -> BTreeMap<&'static str, i64> {
    ALLOWED
        .iter()
        .chain(ALLOWED_LEGACY)
        .chain(CONDITIONAL)
        .chain(DENIED_NAMED)
        .map(|(name, number)| (name.trim_start_matches("SYS_"), i64::from(*number)))
        .collect()
}

/// System calls the profile refuses by not listing them, named so an operator's deny-list
/// naming them is accepted (it changes nothing) and so the compiler knows their numbers.
#[rustfmt::skip]
const DENIED_NAMED: &[(&str, libc::c_long)] = table![
    SYS_keyctl, SYS_add_key, SYS_request_key, SYS_setns, SYS_io_uring_setup, SYS_io_uring_enter,
    SYS_io_uring_register, SYS_bpf, SYS_perf_event_open, SYS_userfaultfd, SYS_mount, SYS_umount2,
    SYS_pivot_root, SYS_chroot, SYS_move_mount, SYS_open_tree, SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_fspick,
    SYS_mount_setattr, SYS_kexec_load, SYS_kexec_file_load, SYS_init_module, SYS_finit_module,
    SYS_delete_module, SYS_reboot, SYS_swapon, SYS_swapoff, SYS_acct, SYS_quotactl, SYS_syslog,
    SYS_settimeofday, SYS_clock_settime, SYS_sethostname, SYS_setdomainname, SYS_open_by_handle_at,
    SYS_fanotify_init, SYS_lookup_dcookie, SYS_vhangup, SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev,
    SYS_kcmp, SYS_pidfd_getfd, SYS_mbind, SYS_set_mempolicy, SYS_migrate_pages, SYS_move_pages,
];

/// Checks an operator's deny-list: every name must be a system call this module knows.
pub fn check_deny_list(deny: &[String]) -> Result<(), SandboxError> {
    let known = known();
    match deny.iter().find(|name| !known.contains_key(name.as_str())) {
        Some(unknown) => Err(SandboxError::UnknownSyscall(unknown.clone())),
        None => Ok(()),
    }
}

/// The default profile, less the system calls in `deny`, as an OCI `linux.seccomp`.
pub(crate) fn profile(deny: &[String]) -> Result<LinuxSeccomp, SandboxError> {
    check_deny_list(deny)?;
    let denied = |name: &str| deny.iter().any(|d| d == name);
    let name = |entry: &(&str, libc::c_long)| entry.0.trim_start_matches("SYS_").to_owned();
    let allowed: Vec<String> = ALLOWED.iter().chain(ALLOWED_LEGACY).map(name).filter(|n| !denied(n)).collect();
    let arg = |index: usize, op: LinuxSeccompOperator, value: u64, value_two: u64| {
        LinuxSeccompArgBuilder::default().index(index).op(op).value(value).value_two(value_two).build()
    };
    let allow = |names: &[&str], args| {
        LinuxSyscallBuilder::default()
            .names(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .action(LinuxSeccompAction::ScmpActAllow)
            .args(args)
            .build()
    };
    let mut syscalls =
        vec![LinuxSyscallBuilder::default().names(allowed).action(LinuxSeccompAction::ScmpActAllow).build()?];
    if !denied("clone") {
        let no_namespaces = arg(0, LinuxSeccompOperator::ScmpCmpMaskedEq, CLONE_NAMESPACES, 0)?;
        syscalls.push(allow(&["clone"], vec![no_namespaces])?);
    }
    if !denied("unshare") {
        let no_namespaces = arg(0, LinuxSeccompOperator::ScmpCmpMaskedEq, CLONE_NAMESPACES | CLONE_NEWTIME, 0)?;
        syscalls.push(allow(&["unshare"], vec![no_namespaces])?);
    }
    if !denied("socket") {
        syscalls.push(allow(&["socket"], vec![arg(0, LinuxSeccompOperator::ScmpCmpNe, AF_VSOCK, 0)?])?);
    }
    if !denied("personality") {
        for value in PERSONALITIES {
            syscalls.push(allow(&["personality"], vec![arg(0, LinuxSeccompOperator::ScmpCmpEq, value, 0)?])?);
        }
    }
    // ENOSYS, not EPERM: C libraries then fall back to `clone`, which the filter can inspect.
    syscalls.push(
        LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_owned()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::ENOSYS as u32)
            .build()?,
    );
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(libc::EPERM as u32)
        .architectures(vec![native_arch()])
        .syscalls(syscalls)
        .build()?)
}

fn native_arch() -> Arch {
    if cfg!(target_arch = "aarch64") { Arch::ScmpArchAarch64 } else { Arch::ScmpArchX86_64 }
}

/// Compiles a profile of the shape [`profile`] makes into the BPF programs to install, in
/// order: the allow-list (its default action for everything else), then one program per errno
/// that named system calls return instead. The kernel runs every installed program and, among
/// equally strong results, keeps the one of the program installed last, so `clone3` gets its
/// own errno although the allow-list refuses it too. Names unknown on this architecture are
/// skipped (as libseccomp does); actions other than allow and errno, and argument comparisons
/// other than `==`, `!=` and masked `==`, are refused.
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<BpfProgram>, SandboxError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)?;
    let errno_of = |action: LinuxSeccompAction, errno: Option<u32>| match action {
        LinuxSeccompAction::ScmpActErrno => Ok(errno.unwrap_or(libc::EPERM as u32)),
        other => Err(SandboxError::Unsupported(format!("action {other:?} (only allow and errno are supported)"))),
    };
    let default = errno_of(profile.default_action(), profile.default_errno_ret())?;
    let known = known();
    let mut allowed: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    // Syscalls allowed unconditionally: any conditional rule for them is moot.
    let mut unconditional = std::collections::BTreeSet::new();
    let mut errnos: BTreeMap<u32, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
    for entry in profile.syscalls().iter().flatten() {
        let rule = match entry.args().as_deref() {
            None | Some([]) => None,
            Some(args) => Some(SeccompRule::new(args.iter().map(condition).collect::<Result<_, _>>()?)?),
        };
        let rules = match entry.action() {
            LinuxSeccompAction::ScmpActAllow => &mut allowed,
            action => errnos.entry(errno_of(action, entry.errno_ret())?).or_default(),
        };
        for name in entry.names() {
            let Some(&number) = known.get(name.as_str()) else { continue };
            match &rule {
                None => {
                    unconditional.insert(number);
                    rules.insert(number, Vec::new());
                }
                Some(rule) if !unconditional.contains(&number) => rules.entry(number).or_default().push(rule.clone()),
                Some(_) => {}
            }
        }
    }
    let mut programs = vec![BpfProgram::try_from(SeccompFilter::new(
        allowed,
        SeccompAction::Errno(default),
        SeccompAction::Allow,
        arch,
    )?)?];
    for (errno, rules) in errnos {
        programs.push(BpfProgram::try_from(SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno),
            arch,
        )?)?);
    }
    Ok(programs)
}

/// One OCI argument comparison as a seccompiler condition (64-bit: the filter compares the
/// whole register, so a 32-bit argument's sign extension cannot sneak past).
fn condition(arg: &oci_spec::runtime::LinuxSeccompArg) -> Result<SeccompCondition, SandboxError> {
    let index =
        u8::try_from(arg.index()).map_err(|_| SandboxError::Unsupported(format!("argument {}", arg.index())))?;
    let (op, value) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
        LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
        LinuxSeccompOperator::ScmpCmpMaskedEq => (SeccompCmpOp::MaskedEq(arg.value()), arg.value_two().unwrap_or(0)),
        other => return Err(SandboxError::Unsupported(format!("argument comparison {other:?}"))),
    };
    Ok(SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn names(profile: &LinuxSeccomp, action: LinuxSeccompAction) -> Vec<String> {
        profile.syscalls().iter().flatten().filter(|s| s.action() == action).flat_map(|s| s.names().clone()).collect()
    }

    #[test]
    fn the_issue_list_is_never_allowed() {
        let profile = profile(&[]).unwrap();
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(profile.default_errno_ret(), Some(libc::EPERM as u32));
        let allowed = names(&profile, LinuxSeccompAction::ScmpActAllow);
        for denied in [
            "keyctl",
            "add_key",
            "request_key",
            "setns",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "bpf",
            "perf_event_open",
            "mount",
            "umount2",
            "pivot_root",
            "move_mount",
            "open_tree",
            "fsopen",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "ptrace",
            "clone3",
        ] {
            assert!(!allowed.iter().any(|n| n == denied), "{denied} is allowed");
            assert!(known().contains_key(denied), "{denied} has no number");
        }
        for needed in ["read", "execve", "clone", "socket", "openat", "futex", "wait4", "exit_group"] {
            assert!(allowed.iter().any(|n| n == needed), "{needed} is not allowed");
        }
        // clone and unshare only without namespace flags.
        for conditional in ["clone", "unshare"] {
            let entry = profile.syscalls().iter().flatten().find(|s| s.names() == &[conditional.to_owned()]).unwrap();
            let arg = &entry.args().as_ref().unwrap()[0];
            assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
            assert_ne!(arg.value() & libc::CLONE_NEWUSER as u64, 0);
            assert_eq!(arg.value_two(), Some(0));
        }
        assert_eq!(names(&profile, LinuxSeccompAction::ScmpActErrno), ["clone3"]);
    }

    #[test]
    fn an_operator_deny_list_takes_names_off_and_refuses_unknown_ones() {
        let deny = vec!["ptrace".to_owned(), "socket".to_owned(), "fsync".to_owned()];
        let profile = profile(&deny).unwrap();
        let allowed = names(&profile, LinuxSeccompAction::ScmpActAllow);
        assert!(!allowed.iter().any(|n| n == "fsync" || n == "socket"));
        assert!(allowed.iter().any(|n| n == "fdatasync"));
        let error = super::profile(&["fsynk".to_owned()]).unwrap_err();
        assert!(error.to_string().contains("\"fsynk\""), "{error}");
    }

    #[test]
    fn the_profile_compiles_to_an_allow_list_and_an_enosys_program() {
        let programs = compile(&profile(&[]).unwrap()).unwrap();
        assert_eq!(programs.len(), 2);
        // A few hundred instructions: well under the kernel's 4096 per program.
        assert!(programs[0].len() > 200 && programs[0].len() < 4096, "{}", programs[0].len());
        let unsupported =
            LinuxSeccompBuilder::default().default_action(LinuxSeccompAction::ScmpActKillProcess).build().unwrap();
        assert!(matches!(compile(&unsupported), Err(SandboxError::Unsupported(_))));
    }
}
