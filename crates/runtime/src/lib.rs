//! The provider's container runtime: runs a pod's containers and reports on them, behind the
//! [`Runtime`] trait so the provider's controller does not know which backend it drives.
//!
//! [`LocalRuntime`] is the embedded backend: OCI containers run by youki's `libcontainer`
//! (through the small single-threaded `tpod-runtime-shim` binary of this crate), each with its
//! own pid, mount, uts and ipc namespaces and its own cgroup, all containers of a pod sharing one
//! user namespace and one network namespace wired to a host bridge (like a Kubernetes pod with
//! user namespaces), firewalled so that a pod reaches no other pod and no host address, and is
//! reached only from the host (the ingress). A pod's user namespace maps its containers' ids
//! onto a range of unprivileged host ids of its own ([`LocalConfig::user_ids_first`],
//! [`LocalConfig::user_ids_per_pod`]): container root is no host root, and owns its rootfs and
//! volumes (see the `userns` module). Containers are supervised and, as the pod's
//! [`RestartPolicy`] says, restarted with exponential backoff or left ended for good
//! ([`ContainerState::Succeeded`], [`ContainerState::Failed`]: a job); their output goes
//! through a pipe to size-capped, encrypted log files ([`crate::logs`]). Pod volumes (scratch
//! space or a file system, each a size-limited encrypted ext4 file system on a loop device, or a
//! read-only set of secret files in memory) are bind-mounted into the
//! containers that name them. A pod's containers can be replaced in place ([`Runtime::update`]),
//! keeping its address and volumes. Everything a pod has lives under one directory per pod, so a
//! provider killed with `kill -9` can re-attach to the pods that kept running ([`Runtime::adopt`]).
//!
//! What a publisher sends is never written in clear to the provider's disk by this crate: each
//! container's image is unpacked into a tmpfs of its own (at most [`LocalConfig::rootfs_bytes`]:
//! a container writing more into its rootfs gets `ENOSPC`), and [`VolumeKind::Secret`] files
//! live in a tmpfs too. Both are mounted `noswap` where the kernel supports it (Linux 6.4+), so
//! they do not reach a swap device either. They stay mounted while the pod exists (container
//! restarts, [`Runtime::stop`], provider restarts) and are unmounted when it is deleted, which
//! frees their memory; after a host reboot they are rebuilt from the spec.
//!
//! For per-second billing, [`Runtime::usage`] reads what a pod consumed from its containers'
//! cgroups (CPU time over the pod's whole life, memory in use now). The CPU time of containers
//! whose cgroup goes (a restart, an update, a stop) is kept in the pod's state on disk, so the
//! total never decreases, even across provider restarts. [`Runtime::stop`] pauses a pod (for
//! non-payment): its containers go, its address, volumes, logs and that total stay until it
//! is resumed ([`Runtime::adopt`]) or deleted.

mod cgroup;
mod error;
mod firewall;
mod fscrypt;
mod local;
mod logs;
mod net;
mod proc;
pub mod sandbox;
mod spec;
mod unpack;
#[doc(hidden)]
pub mod userns;
mod volume;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;

use futures::stream::BoxStream;

pub use error::RuntimeError;
pub use fscrypt::VolumeKey;
pub use local::{LocalConfig, LocalRuntime, cgroups_path};
pub use net::check_subnet;
pub use unpack::run_unpack_job;
pub use volume::{MAX_FILESYSTEM_BYTES, MAX_SECRET_BYTES, MAX_SECRET_FILES, MIN_FILESYSTEM_BYTES};

/// A pod to run: the containers, already verified, that share one network namespace.
#[derive(Clone, Debug)]
pub struct PodSpec {
    /// The pod id: 64 lowercase hex characters. Host-side names (network namespace, veth,
    /// cgroups) are derived from its first 12 characters.
    pub id: String,
    /// The containers, started in this order.
    pub containers: Vec<ContainerSpec>,
    /// The pod's volumes, which its containers mount by name (empty if none).
    pub volumes: Vec<VolumeSpec>,
    /// Whether its containers are started again when they end.
    pub restart_policy: RestartPolicy,
}

/// When a pod's containers are started again after they end: Kubernetes' pod-level
/// `restartPolicy`. A restart waits out the runtime's backoff
/// ([`LocalConfig::restart_backoff`]). A container that is not restarted has ended for good:
/// [`ContainerState::Succeeded`] or [`ContainerState::Failed`], with its exit code, its
/// processes, cgroup and rootfs gone (its CPU time kept in [`PodUsage::cpu_ns`]), its log kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RestartPolicy {
    /// Always, whatever the exit code: a service. The default.
    #[default]
    Always,
    /// After a non-zero exit code, a kill by a signal, a failed start or an exit whose code is
    /// lost (a container that ended while no runtime watched it, found by [`Runtime::adopt`]);
    /// exit code 0 ends it, [`ContainerState::Succeeded`]: a job retried until it succeeds.
    OnFailure,
    /// Never: whatever ends it, the container stays ended, [`ContainerState::Succeeded`] after
    /// exit code 0 and [`ContainerState::Failed`] otherwise: a job run once.
    Never,
}

impl RestartPolicy {
    /// Whether a container that ended with `exit_code` is started again (`None`: the code is
    /// not known, or its process could not be started).
    pub fn restarts(self, exit_code: Option<i32>) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != Some(0),
            RestartPolicy::Never => false,
        }
    }
}

/// A volume of a pod: storage shared by its containers that outlives their processes. It lives
/// as long as the pod (container restarts, adoption and [`Runtime::update`] keep it) and is
/// removed with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeSpec {
    /// The volume's name, unique in the pod: a DNS label (1 to 63 characters of `a-z`, `0-9`
    /// and `-`, starting and ending with a letter or digit).
    pub name: String,
    /// What storage backs it.
    pub kind: VolumeKind,
}

/// What storage backs a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeKind {
    /// Scratch space, empty when the pod starts (Kubernetes `emptyDir`), holding at most
    /// `size_bytes`: like [`VolumeKind::Filesystem`] (its own encrypted ext4 file system on
    /// the host's disk, writes past its size fail with `ENOSPC`, same size bounds), kept as
    /// long as the pod. On disk rather than in memory, so it does not count against the
    /// pod's memory limit.
    EmptyDir {
        /// The file system's size in bytes.
        size_bytes: u64,
    },
    /// A file system of its own holding at most `size_bytes` (including ext4's own metadata:
    /// a few percent less is usable); writing more fails with `ENOSPC`. Between
    /// [`MIN_FILESYSTEM_BYTES`] (1 MiB) and [`MAX_FILESYSTEM_BYTES`] (1 TiB). The host's disk is
    /// only used as data is written.
    Filesystem {
        /// The file system's size in bytes.
        size_bytes: u64,
    },
    /// Files given in the spec (keys, tokens, certificates), held only in memory: a tmpfs of
    /// their size, never written to the host's disk, always mounted read-only into containers
    /// (whatever [`VolumeMount::read_only`] says), each file readable by all (mode `0444`) in a
    /// directory only root may enter (`0700`). 1 to [`MAX_SECRET_FILES`] files of at most
    /// [`MAX_SECRET_BYTES`] (1 MiB) in all. After a host reboot it is made again from the spec;
    /// an [`Runtime::update`] with other files replaces it.
    Secret {
        /// The files, at the volume's top level.
        files: Vec<SecretFile>,
    },
}

/// One file of a [`VolumeKind::Secret`] volume. Its contents are wiped from this process's
/// memory when dropped, and never printed: `Debug` shows only the name and size.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// The file name: 1 to 255 bytes, no `/` or NUL, not `.` or `..`, unique in the volume.
    pub name: String,
    /// The contents.
    pub data: zeroize::Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretFile").field("name", &self.name).field("bytes", &self.data.len()).finish()
    }
}

/// Where a container sees one of its pod's volumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeMount {
    /// The [`VolumeSpec::name`] of a volume of the pod.
    pub volume: String,
    /// The absolute path in the container (created if missing; no `..`, not `/`).
    pub path: String,
    /// Mounted read-only: the container cannot write to the volume through it. A
    /// [`VolumeKind::Secret`] volume is mounted read-only even when this is false.
    pub read_only: bool,
}

/// One container of a pod. Its command, args and environment may be the publisher's secrets
/// (the provider opens them from what was sealed to the enclave): `Debug` shows only their sizes
/// and the environment's names, and the runtime writes them only into the container's tmpfs.
#[derive(Clone)]
pub struct ContainerSpec {
    /// The container's name, unique in the pod: 1 to 63 characters of `a-z`, `0-9` and `-`.
    pub name: String,
    /// The image, already read and verified; its layers are unpacked into the container's rootfs
    /// (a tmpfs, once per pod: container restarts keep what it wrote there).
    pub image: tpod_image::Image,
    /// Replaces the image's `Entrypoint` when set (Kubernetes `command`).
    pub command: Option<Vec<String>>,
    /// Replaces the image's `Cmd` when set (Kubernetes `args`).
    pub args: Option<Vec<String>>,
    /// Environment variables, set on top of the image config's `Env`.
    pub env: BTreeMap<String, String>,
    /// The working directory; else the image's `WorkingDir`, else `/`.
    pub working_dir: Option<String>,
    /// CPU limit in thousandths of a CPU (cgroup quota per 100 ms period); 0 = no limit.
    pub cpu_millis: u64,
    /// Memory limit in bytes; 0 = no limit.
    pub memory_bytes: u64,
    /// The most processes and threads the container may have at once (its cgroup's
    /// `pids.max`); 0 or anything above [`LocalConfig::pids_limit`] means that limit. Past it,
    /// `fork` and `clone` fail with `EAGAIN` and the container keeps running.
    pub pids_limit: u64,
    /// The pod's volumes this container sees, and where (empty if none).
    pub mounts: Vec<VolumeMount>,
}

impl std::fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerSpec")
            .field("name", &self.name)
            .field("image", &self.image.manifest_digest.to_string())
            .field("command", &self.command.as_ref().map(Vec::len))
            .field("args", &self.args.as_ref().map(Vec::len))
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("working_dir", &self.working_dir)
            .field("cpu_millis", &self.cpu_millis)
            .field("memory_bytes", &self.memory_bytes)
            .field("pids_limit", &self.pids_limit)
            .field("mounts", &self.mounts)
            .finish()
    }
}

/// Where a running pod can be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodEndpoint {
    /// The pod's address on the provider bridge; the ingress proxies to `ip:containerPort`.
    pub ip: Ipv4Addr,
}

/// What a container is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerState {
    /// Being created (rootfs, spec, process).
    Starting,
    /// Its process runs.
    Running,
    /// It exited (or could not be started) and waits out its restart backoff.
    Restarting,
    /// Stopped by the runtime: the pod is being deleted or is stopped ([`Runtime::stop`]), or
    /// an [`Runtime::update`] failed. [`Runtime::adopt`] (resuming the pod) starts it again.
    Exited,
    /// Ended for good with exit code 0, as its pod's [`RestartPolicy`] (`OnFailure` or `Never`)
    /// says: never started again (not by adoption or resuming either), until an
    /// [`Runtime::update`] replaces the containers.
    Succeeded,
    /// Ended for good under [`RestartPolicy::Never`] with a non-zero exit code, killed by a
    /// signal, not startable, or with its exit code lost
    /// ([`ContainerStatus::last_exit_code`] `None`); never started again, like
    /// [`ContainerState::Succeeded`].
    Failed,
}

impl ContainerState {
    /// Whether the container has ended for good ([`ContainerState::Succeeded`] or
    /// [`ContainerState::Failed`]).
    pub fn is_ended(self) -> bool {
        matches!(self, ContainerState::Succeeded | ContainerState::Failed)
    }
}

/// One container's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerStatus {
    /// The container's name.
    pub name: String,
    /// What it is doing.
    pub state: ContainerState,
    /// How many times it exited or failed to start and was (or will be) restarted.
    pub restarts: u32,
    /// The exit code of its last exit (128 + signal number if killed by a signal), if known:
    /// a process adopted after a provider restart is not our child and its code is lost. For
    /// an ended container ([`ContainerState::is_ended`]), the code it ended with.
    pub last_exit_code: Option<i32>,
    /// When its current process started (Unix seconds), while it runs.
    pub running_since_unix: Option<u64>,
    /// The host pid of its current process, while it runs.
    pub pid: Option<i32>,
}

/// A pod's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodStatus {
    /// Its containers, in spec order.
    pub containers: Vec<ContainerStatus>,
}

/// What [`Runtime::logs`] returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// After the kept lines, stream new output until the pod is deleted or the stream dropped.
    pub follow: bool,
    /// How many of the last lines to return first; 0 = all that are kept.
    pub tail_lines: u64,
}

/// What a pod has consumed, read from its containers' cgroups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodUsage {
    /// CPU time in nanoseconds used by all the pod's containers over the pod's whole life in
    /// this runtime. Monotonic: it never decreases, across container restarts, in-place updates,
    /// stop, and provider restarts (adopt).
    pub cpu_ns: u64,
    /// Memory in use now, in bytes, summed over the running containers (0 when none run). The
    /// unpacked images in the containers' rootfs tmpfs, and what exited containers left there,
    /// are not in it: they are charged to the pod's cgroup (and count against its memory
    /// limit, the sum of its containers'), not to a container's.
    pub memory_bytes: u64,
}

/// How far [`Runtime::prepare`] has come with one container's image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpackProgress {
    /// The container whose image is being unpacked.
    pub container: String,
    /// Bytes of its (encrypted) layers read so far.
    pub done_bytes: u64,
    /// Bytes of its layers in all.
    pub total_bytes: u64,
}

/// Told how far [`Runtime::prepare`] has come, a few times a second while an image unpacks.
pub type Progress = Arc<dyn Fn(UnpackProgress) + Send + Sync>;

/// A stream of log bytes.
pub type LogStream = BoxStream<'static, Result<Vec<u8>, RuntimeError>>;

/// A backend that runs pods.
pub trait Runtime: Send + Sync + 'static {
    /// Makes everything the pod needs except its processes: its address, network, volumes and
    /// every container's rootfs, unpacked from its image (the slow part of a big image;
    /// `progress` hears how far each image has come). Nothing of the pod runs yet, so nothing is
    /// metered; a [`Runtime::start`] of the same pod then only launches its containers. On any
    /// error, everything created so far is removed. A prepared pod is in [`Runtime::list`],
    /// [`Runtime::delete`] removes it, and [`Runtime::status`] knows it only once started.
    /// Fails with [`RuntimeError::AlreadyExists`] if the pod has state already.
    fn prepare(&self, spec: PodSpec, progress: Progress) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Creates and starts the pod, or starts the one [`Runtime::prepare`] made. On any error,
    /// everything created so far is removed (no partial pods).
    fn start(&self, spec: PodSpec) -> impl Future<Output = Result<PodEndpoint, RuntimeError>> + Send;

    /// After a provider restart (even `kill -9`): re-attaches to the pod's containers that still
    /// run and restarts the others, as the pod's [`RestartPolicy`] says: a container that had
    /// ended for good stays ended, and one whose process ended while no runtime watched it (its
    /// exit code is lost) is restarted unless the policy is `Never`, under which it ends as
    /// [`ContainerState::Failed`] with no exit code; same endpoint as before. If nothing of the pod exists any
    /// more, starts it afresh. Also resumes a pod paused by [`Runtime::stop`] (in this process
    /// or before a provider restart): its containers start again, with the same address and
    /// their volumes' data. A pod this runtime already runs is left as it is.
    fn adopt(&self, spec: PodSpec) -> impl Future<Output = Result<PodEndpoint, RuntimeError>> + Send;

    /// Replaces the pod's containers with `spec`'s, in place: stops the old containers, keeps
    /// the pod's network namespace and IP and its volumes whose name and kind are unchanged (a
    /// [`VolumeKind::Filesystem`] volume keeps its data; one whose size changed or that is no
    /// longer listed is removed; a [`VolumeKind::Secret`] volume whose files changed is made
    /// again with the new ones), unpacks the new images (every container gets a fresh rootfs:
    /// the old rootfs tmpfs are unmounted; logs of containers that keep their name are appended
    /// to), starts the new containers.
    /// Fails with [`RuntimeError::NoSuchPod`] if this runtime does not run the pod (start or
    /// adopt it first). On error the pod is left with no running containers (their status is
    /// [`ContainerState::Exited`]) but its network namespace and volumes intact, so the caller
    /// can call `update` again with the previous spec. A stopped pod ([`Runtime::stop`]) is not
    /// updated: [`RuntimeError::Stopped`] (resume it with `adopt` first).
    fn update(&self, spec: PodSpec) -> impl Future<Output = Result<PodEndpoint, RuntimeError>> + Send;

    /// Stops and removes everything of the pod: processes, containers' state, cgroups, network
    /// namespace, veth, rootfs (its tmpfs unmounted: its memory is freed), logs, volumes
    /// (unmounted, with their loop devices; a secret volume's tmpfs freed too). Idempotent
    /// (an unknown pod is Ok). A stopped pod is deleted the same way.
    fn delete(&self, pod_id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Pauses the pod (for non-payment): kills its containers and removes their state and
    /// cgroups (their CPU time is kept in [`PodUsage::cpu_ns`]), but keeps its network namespace
    /// and address, its volumes with their data, its containers' rootfs (still in memory, as the
    /// containers left them), its logs and its state on disk, marked stopped.
    /// Then [`Runtime::status`] shows every container [`ContainerState::Exited`] (but those
    /// that had ended for good, which keep [`ContainerState::Succeeded`] or
    /// [`ContainerState::Failed`] and are not started again by a resume),
    /// [`Runtime::usage`] gives the CPU time so far and no memory, [`Runtime::list`] still lists
    /// it, and a provider restart leaves it stopped (a new runtime knows it as stopped without
    /// being asked). [`Runtime::adopt`] resumes it, [`Runtime::delete`] removes it. Works on a
    /// pod left on disk by an earlier runtime too. Idempotent; [`RuntimeError::NoSuchPod`] if
    /// the runtime has no state for the pod.
    fn stop(&self, pod_id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The pod's status, or `None` if this runtime does not run it (a stopped pod is known,
    /// even after a provider restart).
    fn status(&self, pod_id: &str) -> impl Future<Output = Result<Option<PodStatus>, RuntimeError>> + Send;

    /// What the pod has consumed: [`PodUsage`], or `None` if the runtime has no state for the
    /// pod. Cheap (a few small cgroup file reads per container, no processes, no scans), meant
    /// to be called every second for every pod. A pod left on disk by an earlier runtime and
    /// not adopted yet is read from its state file, a little less cheaply.
    fn usage(&self, pod_id: &str) -> impl Future<Output = Result<Option<PodUsage>, RuntimeError>> + Send;

    /// Log bytes of one container (stdout and stderr interleaved): the last `tail_lines` lines,
    /// then, if `follow`, new bytes as they come until the pod is deleted or the stream dropped.
    fn logs(
        &self,
        pod_id: &str,
        container: &str,
        options: LogOptions,
    ) -> impl Future<Output = Result<LogStream, RuntimeError>> + Send;

    /// Pod ids the backend has state for (used to clean up orphans after a crash).
    fn list(&self) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send;
}

/// An error with all its sources, `: `-separated (libcontainer's top-level messages are terse).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
