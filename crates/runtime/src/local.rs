//! [`LocalRuntime`]: pods as OCI containers on this machine, created by youki's `libcontainer`
//! in the `tpod-runtime-shim` process (libcontainer's fork is not safe in a multi-threaded
//! program), supervised, stopped and removed from here; networked by [`crate::net`], logged by
//! [`crate::logs`].
//!
//! All state lives under `<root>/pods/<pod id>/`:
//! - `pod.json`: the pod's address, its range of host ids (see [`crate::userns`]) and, per
//!   container, its current pid (with its start time),
//!   restarts, last exit code and whether it has ended for good (see "Restart policy" below)
//!   — what a new runtime needs to adopt the pod after a crash —,
//!   whether the pod is stopped ([`Runtime::stop`]), and the CPU time of its containers whose
//!   cgroups were removed (see "Usage" below);
//! - `userns`: the pod's user namespace, pinned by a bind mount (its network namespace is
//!   pinned in `/var/run/netns`, see [`crate::net`]);
//! - `state/`: libcontainer's state directories, one per container. libcontainer keeps there
//!   only the container's id, status, pid, bundle path, creation time and cgroup path
//!   (`state.json`, `youki_config.json`): nothing of the process it runs;
//! - `containers/<name>/mem/`: a tmpfs of [`LocalConfig::rootfs_bytes`], the container's OCI
//!   bundle: the runtime spec `config.json` (it holds the container's command, args and
//!   environment, which the provider opened from what the publisher sealed, so it never touches
//!   the disk), the `hosts` file, the rootfs (`rootfs/`) and the `unpacked` marker (see "Rootfs"
//!   below). `containers/<name>/` itself holds nothing but that mount point;
//! - `logs/<name>.fifo`: the pipe that is the container's stdout and stderr; `logs/<name>.log`
//!   and `.log.1`: what came through it, capped and encrypted (see [`crate::logs`]);
//! - `volumes/<name>/`: the pod's volumes (see [`crate::volume`]), a file system volume
//!   loop-mounted on its `mnt/` and a secret volume's tmpfs on its `secret/` while the pod exists
//!   (even while the provider is down).
//!
//! Rootfs: a container's image is unpacked into its own tmpfs, never onto the disk, once per
//! pod: restarts of the container and [`Runtime::stop`] keep the tmpfs and what the container
//! wrote in it, like a disk rootfs; a new runtime adopting the pod reuses a tmpfs still mounted.
//! The marker lives in the tmpfs too and holds the image's manifest digest, so an interrupted
//! unpack, a rootfs of another image (an update that failed before the provider restarted) and
//! a host reboot (the tmpfs gone, `mem/` an empty directory) all show as "not unpacked": the
//! tmpfs is then unmounted if there is one, a fresh one mounted and the image unpacked from the
//! spec. An update (every container gets a fresh rootfs) and a delete unmount the tmpfs, which
//! frees its memory: that is the wipe. The runtime spec is written into the tmpfs afresh at each
//! launch, after the rootfs is found or made. Bundles of an earlier layout (`rootfs/`, `unpacked`,
//! `config.json` and `hosts` on the disk) are removed when their container is next launched; an
//! old `config.json` also when its running container is adopted. tmpfs pages are charged to the
//! memory cgroup of the process that first touches them, and stay charged to its ancestors when
//! that cgroup goes: the image is unpacked by a process in the pod's cgroup, and the containers'
//! cgroups are under it, so the rootfs counts against the pod's memory limit for as long as it
//! exists, across container restarts (see [`crate::cgroup`]).
//!
//! Each container has a supervising task that polls its process, records its exit and restarts
//! it after an exponential backoff, if the pod's [`RestartPolicy`] says so.
//!
//! Restart policy: a container the policy does not restart has ended for good. Its end (the
//! `ended` mark and its exit code) is written to `pod.json` first, so a provider killed at any
//! point after never starts it again; then its cgroup goes the way a restarting container's
//! does (CPU time retired, see "Usage"), and its rootfs tmpfs is unmounted, freeing the memory
//! it held, since nothing will run in it again. Its log stays. Adoption keeps it ended, and so do
//! [`Runtime::stop`] and resuming; an [`Runtime::update`] gives the pod new containers. Dropping a [`LocalRuntime`] only stops the supervising tasks:
//! the containers keep running, to be adopted by the next runtime. A new runtime knows the
//! stopped pods at once (for status, usage and logs) and starts nothing.
//!
//! Usage: a pod's CPU time is `retired_cpu_ns` (in `pod.json`) plus the counters of its live
//! containers' cgroups ([`crate::cgroup`]). Before a container's cgroup is removed (a restart, an
//! update, a stop, a delete, a dead container found by adoption), its last processes are killed
//! and its final counter is written to `pod.json` as pending (`retiring_cpu_ns`, by container);
//! once the cgroup is gone, the pending value moves into `retired_cpu_ns`. A pending value whose
//! cgroup still exists (the removal failed, or the provider died before it) is dropped, since
//! the cgroup still counts it; one whose cgroup is gone is moved (the provider died after the
//! removal). So a provider killed at any point neither loses nor counts twice a container's CPU
//! time. While a removal is under way, a pending value stands for its cgroup.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libcontainer::container::Container;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cgroup;
use crate::fscrypt::VolumeKey;
use crate::logs::LogFile;
use crate::net::{self, PodNet, Subnet};
use crate::proc::{self, Probe};
use crate::spec::{self, Bind, SpecInput};
use crate::userns::{self, IdRange};
use crate::{
    ContainerSpec, ContainerState, ContainerStatus, LogOptions, LogStream, PodEndpoint, PodSpec, PodStatus, PodUsage,
    Progress, RestartPolicy, Runtime, RuntimeError, UnpackProgress, VolumeKind, VolumeSpec,
};
use crate::{unpack, volume};

/// How often a supervisor looks at its container's process.
const EXIT_POLL: Duration = Duration::from_millis(100);

/// How long deleting a pod waits for a killed process to go.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of a [`LocalRuntime`].
#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// Where all pod state lives (`<root>/pods/<pod id>/…`).
    pub root: PathBuf,
    /// The host bridge pods are attached to; created if missing.
    pub bridge: String,
    /// The subnet pods get addresses from, as (network address, prefix length); the bridge takes
    /// its first address.
    pub subnet: (Ipv4Addr, u8),
    /// Whether pods may open connections to the internet, masqueraded behind the host's
    /// address. Even then they reach no private range, no host address and no other pod (see
    /// [`crate::firewall`]). Off by default: pods are reached through the ingress only.
    pub outbound_internet: bool,
    /// The most bytes a container's log keeps on disk (its two files, encrypted records
    /// included); past it, the older half goes (see [`crate::logs`]).
    pub log_cap_bytes: u64,
    /// The restart backoff: (first delay, largest delay); it doubles after each restart.
    pub restart_backoff: (Duration, Duration),
    /// A container that ran this long before exiting restarts after the first delay again.
    pub backoff_reset_after: Duration,
    /// The `tpod-runtime-shim` executable, which creates containers in a single-threaded
    /// process (see its docs).
    pub shim: PathBuf,
    /// The size of each container's rootfs tmpfs, in bytes: the unpacked image plus whatever
    /// the container writes outside its volumes. Writing past it fails with `ENOSPC` (the host's
    /// disk is never used). Memory is only used as the rootfs fills, and counts against the
    /// pod's memory limit (the unpacked image too: an image bigger than the pod's memory does not
    /// start). At least 1 MiB; 2 GiB by default.
    pub rootfs_bytes: u64,
    /// The secret file system volumes' encryption keys are derived from: volumes made under one
    /// key are readable (after a restart or reboot) only under the same key.
    pub volume_key: VolumeKey,
    /// The most processes and threads a container may have at once (its cgroup's `pids.max`);
    /// a container's spec may ask for fewer ([`crate::ContainerSpec::pids_limit`]), never more.
    /// At least 1; 1024 by default.
    pub pids_limit: u64,
    /// System calls taken off the default seccomp allow-list, so they fail with `EPERM` in
    /// every container (see [`crate::sandbox`]); names it does not know are refused by
    /// [`LocalRuntime::new`]. Empty by default.
    pub seccomp_deny: Vec<String>,
    /// The first host id of the pods' id ranges (see [`crate::userns`]): pod `k` gets
    /// `user_ids_first + k * user_ids_per_pod` onwards, as its containers' uids and gids 0
    /// onwards. At least 65536 (the ids below are the host's own users). 2^30 by default: far
    /// above system and login users and the usual `/etc/subuid` ranges (100000 plus 65536 per
    /// user), and, for the first 16384 pods, below 2^31, where tools that take ids for signed
    /// 32-bit numbers go wrong. Runtimes sharing a host must be given disjoint ranges, as they
    /// are given disjoint subnets.
    pub user_ids_first: u32,
    /// How many host ids each pod gets: its containers' uids and gids `0..user_ids_per_pod`.
    /// At least 65536 (as under Kubernetes), so the ids images use, up to `nobody` (65534),
    /// exist in every pod. 65536 by default.
    pub user_ids_per_pod: u32,
}

/// The smallest [`LocalConfig::user_ids_first`] and [`LocalConfig::user_ids_per_pod`] accepted.
const MIN_USER_IDS: u32 = 65536;

/// The smallest [`LocalConfig::rootfs_bytes`] accepted (a tmpfs `size=0` would be unlimited).
const MIN_ROOTFS_BYTES: u64 = 1 << 20;

impl LocalConfig {
    /// The defaults, with state under `root`: bridge `tpod0`, subnet 10.89.0.0/16, no outbound
    /// internet, 8 MiB of log
    /// per container, restart backoff 1 s doubling up to 30 s, reset after 60 s of running, the
    /// shim next to the running executable (where cargo builds it), and a 2 GiB rootfs tmpfs per
    /// container; file system volumes encrypted under `volume_key`; 65536 host ids per pod from
    /// 2^30.
    pub fn new(root: impl Into<PathBuf>, volume_key: VolumeKey) -> Self {
        Self {
            root: root.into(),
            bridge: "tpod0".to_owned(),
            subnet: (Ipv4Addr::new(10, 89, 0, 0), 16),
            outbound_internet: false,
            log_cap_bytes: 8 << 20,
            restart_backoff: (Duration::from_secs(1), Duration::from_secs(30)),
            backoff_reset_after: Duration::from_secs(60),
            shim: default_shim(),
            rootfs_bytes: 2 << 30,
            volume_key,
            pids_limit: 1024,
            seccomp_deny: Vec::new(),
            user_ids_first: 1 << 30,
            user_ids_per_pod: 65536,
        }
    }
}

/// `tpod-runtime-shim` in the running executable's directory, or in its parent when that is
/// cargo's `deps` directory (test binaries).
fn default_shim() -> PathBuf {
    const NAME: &str = "tpod-runtime-shim";
    let Ok(exe) = std::env::current_exe() else { return PathBuf::from(NAME) };
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let beside = dir.join(NAME);
    match dir.parent() {
        Some(parent) if !beside.exists() && dir.ends_with("deps") => parent.join(NAME),
        _ => beside,
    }
}

/// The local runtime. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct LocalRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: LocalConfig,
    subnet: Subnet,
    pods: Mutex<HashMap<String, Arc<Pod>>>,
    /// One lock per pod id, so start, adopt and delete of one pod do not interleave.
    pod_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Held while choosing an address and writing it to `pod.json`, so two pods never get one.
    allocation: tokio::sync::Mutex<()>,
    /// The last CPU time [`Runtime::usage`] reported per pod: it never reports less (a reading
    /// racing a container's removal could otherwise dip for a moment).
    reported_cpu_ns: Mutex<HashMap<String, u64>>,
}

/// What `pod.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PodRecord {
    id: String,
    ip: Ipv4Addr,
    containers: Vec<ContainerRecord>,
    /// Paused by [`Runtime::stop`]: no container runs, none is started until adoption.
    #[serde(default)]
    stopped: bool,
    /// Made by [`Runtime::prepare`] and not started yet: [`Runtime::start`] may take it over.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    prepared: bool,
    /// CPU time of the pod's containers whose cgroups were removed, in nanoseconds.
    #[serde(default)]
    retired_cpu_ns: u64,
    /// Final CPU counters of cgroups being removed, by container name (see the module docs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    retiring_cpu_ns: BTreeMap<String, u64>,
    /// The pod's host ids (see [`crate::userns`]); none in a record of an earlier version (its
    /// pod gets a range, and new namespaces, when adopted).
    #[serde(default)]
    ids: Option<IdRange>,
}

impl PodRecord {
    fn new(id: &str, ip: Ipv4Addr, ids: Option<IdRange>, containers: Vec<ContainerRecord>) -> Self {
        Self {
            id: id.to_owned(),
            ip,
            containers,
            stopped: false,
            prepared: false,
            retired_cpu_ns: 0,
            retiring_cpu_ns: BTreeMap::new(),
            ids,
        }
    }

    /// A record carrying `old`'s address, ids and CPU accounting (and nothing else of it).
    fn following(old: &PodRecord, containers: Vec<ContainerRecord>) -> Self {
        Self {
            retired_cpu_ns: old.retired_cpu_ns,
            retiring_cpu_ns: old.retiring_cpu_ns.clone(),
            ..Self::new(&old.id, old.ip, old.ids, containers)
        }
    }

    /// Settles the pending counters of a record read from disk: moved into the retired total if
    /// their cgroup is gone, dropped if it still exists (and counts them itself).
    fn settle(&mut self) {
        for (name, cpu_ns) in std::mem::take(&mut self.retiring_cpu_ns) {
            if !cgroup::exists(&cgroups_path(&self.id, &name)) {
                self.retired_cpu_ns = self.retired_cpu_ns.saturating_add(cpu_ns);
            }
        }
    }

    /// The pod's CPU time and memory now: retired CPU time plus every container's cgroup
    /// counters (a pending counter standing for a cgroup being removed). Memory counts only
    /// containers with a running process. Reads a few small cgroup files per container.
    fn usage(&self) -> PodUsage {
        let mut usage = PodUsage { cpu_ns: self.retired_cpu_ns, memory_bytes: 0 };
        let names = self.containers.iter().map(|c| c.name.as_str());
        let pending_only = self.retiring_cpu_ns.keys().map(String::as_str).filter(|n| !self.has_container(n));
        for name in names.chain(pending_only) {
            let path = cgroups_path(&self.id, name);
            let live = cgroup::cpu_ns(&path).unwrap_or(0);
            let pending = self.retiring_cpu_ns.get(name).copied().unwrap_or(0);
            usage.cpu_ns = usage.cpu_ns.saturating_add(live.max(pending));
        }
        for c in self.containers.iter().filter(|c| c.pid.is_some()) {
            let memory = cgroup::memory_bytes(&cgroups_path(&self.id, &c.name)).unwrap_or(0);
            usage.memory_bytes = usage.memory_bytes.saturating_add(memory);
        }
        usage
    }

    fn has_container(&self, name: &str) -> bool {
        self.containers.iter().any(|c| c.name == name)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ContainerRecord {
    name: String,
    /// The current process, while there is one.
    pid: Option<i32>,
    /// Its start time in clock ticks since boot: a pid is only trusted together with it.
    start_ticks: Option<u64>,
    running_since_unix: Option<u64>,
    restarts: u32,
    last_exit_code: Option<i32>,
    /// Ended for good under the pod's restart policy, with `last_exit_code`: never started
    /// again (see the module docs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    ended: bool,
    #[serde(skip, default = "starting")]
    state: ContainerState,
}

fn starting() -> ContainerState {
    ContainerState::Starting
}

impl ContainerRecord {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            pid: None,
            start_ticks: None,
            running_since_unix: None,
            restarts: 0,
            last_exit_code: None,
            ended: false,
            state: ContainerState::Starting,
        }
    }

    /// The state of a container with no process: its end if it ended for good, else `otherwise`.
    fn idle_state(&self, otherwise: ContainerState) -> ContainerState {
        match (self.ended, self.last_exit_code) {
            (true, Some(0)) => ContainerState::Succeeded,
            (true, _) => ContainerState::Failed,
            (false, _) => otherwise,
        }
    }

    /// The running process as (pid, start ticks), if any.
    fn process(&self) -> Option<(i32, u64)> {
        Some((self.pid?, self.start_ticks.unwrap_or(0)))
    }
}

/// The directory of one pod.
#[derive(Clone, Debug)]
struct PodDir(PathBuf);

impl PodDir {
    fn record(&self) -> PathBuf {
        self.0.join("pod.json")
    }
    fn state(&self) -> PathBuf {
        self.0.join("state")
    }
    fn log(&self, container: &str) -> PathBuf {
        self.0.join("logs").join(format!("{container}.log"))
    }
    /// The pipe the container's stdout and stderr are (see [`crate::logs`]).
    fn log_fifo(&self, container: &str) -> PathBuf {
        self.0.join("logs").join(format!("{container}.fifo"))
    }
    /// The container's directory on the disk: only the mount point of its bundle.
    fn container(&self, container: &str) -> PathBuf {
        self.0.join("containers").join(container)
    }
    /// The container's OCI bundle: its tmpfs mount point (see the module docs).
    fn bundle(&self, container: &str) -> PathBuf {
        self.container(container).join("mem")
    }
}

/// A pod this runtime runs.
#[derive(Debug)]
struct Pod {
    id: String,
    dir: PodDir,
    net: PodNet,
    ip: Ipv4Addr,
    subnet: Subnet,
    specs: Vec<ContainerSpec>,
    volumes: Vec<VolumeSpec>,
    restart_policy: RestartPolicy,
    /// Held while creating or mounting volumes: supervisors relaunching two containers that
    /// share a volume must not both mount it.
    volume_lock: Mutex<()>,
    shim: PathBuf,
    /// The size of each container's rootfs tmpfs.
    rootfs_bytes: u64,
    volume_key: VolumeKey,
    /// The runtime's default pids limit and seccomp deny-list.
    sandbox: crate::sandbox::Settings,
    record: Mutex<PodRecord>,
    logs: BTreeMap<String, Arc<LogFile>>,
    /// Turns true when the pod's tasks must stop (the pod is deleted or the runtime dropped).
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data: every update is a plain
    // field assignment.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The cgroup path of a container, relative to each cgroup v1 hierarchy (e.g. under
/// `/sys/fs/cgroup/memory`) or to the v2 root: `/tpod/<first 12 hex of the pod id>/<name>`,
/// under the pod's cgroup, which holds the pod's memory limit (see [`crate::cgroup`]).
/// Metering reads usage there.
pub fn cgroups_path(pod_id: &str, container: &str) -> String {
    format!("{}/{container}", cgroup::pod_path(pod_id))
}

/// The spec of a pod known only from its record, with no containers to run: one that is
/// stopped, or deleted.
fn spec_of_record(id: &str) -> PodSpec {
    PodSpec { id: id.to_owned(), containers: Vec::new(), volumes: Vec::new(), restart_policy: RestartPolicy::Always }
}

fn is_pod_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn validate(spec: &PodSpec) -> Result<(), RuntimeError> {
    let invalid = |reason: String| RuntimeError::InvalidSpec { pod: spec.id.clone(), reason };
    if !is_pod_id(&spec.id) {
        return Err(invalid("the pod id must be 64 lowercase hex characters".to_owned()));
    }
    if spec.containers.is_empty() {
        return Err(invalid("a pod needs at least one container".to_owned()));
    }
    let mut names = BTreeSet::new();
    for container in &spec.containers {
        let name = &container.name;
        let valid = !name.is_empty()
            && name.len() <= 63
            && !name.starts_with('-')
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(invalid(format!(
                "container name {name:?} must be 1 to 63 characters of a-z, 0-9 and '-', not starting with '-'"
            )));
        }
        if !names.insert(name.as_str()) {
            return Err(invalid(format!("container name {name} is used twice")));
        }
        spec::process_args(&spec.id, container)?;
        crate::sandbox::check_mounts(container).map_err(invalid)?;
    }
    volume::validate(spec)
}

impl LocalRuntime {
    /// A runtime keeping its state under `config.root` (created if missing). Nothing is started
    /// or adopted until asked.
    pub fn new(config: LocalConfig) -> Result<Self, RuntimeError> {
        let invalid = |reason: String| RuntimeError::InvalidSpec { pod: String::new(), reason };
        let (network, prefix_len) = config.subnet;
        if !(8..=30).contains(&prefix_len) || u32::from(network) & (u32::MAX >> prefix_len) != 0 {
            return Err(invalid(format!("runtime config: {network}/{prefix_len} is not a usable subnet")));
        }
        if config.bridge.is_empty() || config.bridge.len() > 15 {
            return Err(invalid(format!("runtime config: bridge name {:?} must be 1 to 15 characters", config.bridge)));
        }
        if config.rootfs_bytes < MIN_ROOTFS_BYTES {
            return Err(invalid(format!(
                "runtime config: rootfs_bytes {} is less than {MIN_ROOTFS_BYTES} (1 MiB)",
                config.rootfs_bytes
            )));
        }
        if config.pids_limit == 0 {
            return Err(invalid("runtime config: pids_limit must be at least 1".to_owned()));
        }
        if config.user_ids_first < MIN_USER_IDS || config.user_ids_per_pod < MIN_USER_IDS {
            return Err(invalid(format!(
                "runtime config: user_ids_first ({}) and user_ids_per_pod ({}) must be at least {MIN_USER_IDS}",
                config.user_ids_first, config.user_ids_per_pod
            )));
        }
        if userns::allocate(config.user_ids_first, config.user_ids_per_pod, &[]).is_none() {
            return Err(invalid(format!(
                "runtime config: no range of {} host ids from {} fits below the largest id",
                config.user_ids_per_pod, config.user_ids_first
            )));
        }
        crate::sandbox::check_deny_list(&config.seccomp_deny)
            .map_err(|e| invalid(format!("runtime config: seccomp_deny: {e}")))?;
        if !config.shim.is_file() {
            return Err(invalid(format!(
                "runtime config: the container shim {} does not exist (build it: cargo build -p tpod-runtime)",
                config.shim.display()
            )));
        }
        // Containers are started by the shim, which exits at once: as a subreaper this process
        // inherits their init processes, so it can wait for them and learn their exit codes.
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| RuntimeError::Command {
            command: "prctl(PR_SET_CHILD_SUBREAPER)".to_owned(),
            message: e.to_string(),
        })?;
        let pods = config.root.join("pods");
        fs::create_dir_all(&pods).map_err(RuntimeError::io("creating runtime state directory", &pods))?;
        userns::ensure_stage()?;
        let inner = Inner {
            subnet: Subnet { network, prefix_len },
            config,
            pods: Mutex::new(HashMap::new()),
            pod_locks: Mutex::new(HashMap::new()),
            allocation: tokio::sync::Mutex::new(()),
            reported_cpu_ns: Mutex::new(HashMap::new()),
        };
        inner.load_stopped(&pods)?;
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The runtime's settings.
    pub fn config(&self) -> &LocalConfig {
        &self.inner.config
    }

    /// Sets up the pods' network before any pod runs: refuses a bridge or subnet that collides
    /// with the host's ([`RuntimeError::NetworkConflict`], see [`crate::check_subnet`]), writes
    /// the firewall and brings the bridge up. Starting a pod does the same; a provider calls
    /// this at start so a collision stops it there, with the reason. Also isolates bridge ports
    /// found without it (pods of an earlier version), which starting a pod does not redo.
    pub async fn prepare_network(&self) -> Result<(), RuntimeError> {
        let (bridge, subnet, outbound) =
            (self.inner.config.bridge.clone(), self.inner.subnet.clone(), self.inner.config.outbound_internet);
        blocking("", "network setup", move || {
            net::ensure_bridge(&bridge, &subnet, outbound)?;
            net::harden_ports(&bridge)
        })
        .await
    }

    /// Removes the bridge, its firewall tables and, once no runtime of the host has pods, the
    /// pods' parent cgroup: for a provider taken down for good (after its pods are deleted).
    /// Fails, leaving everything, while pods are still attached to the bridge.
    pub async fn remove_network(&self) -> Result<(), RuntimeError> {
        let bridge = self.inner.config.bridge.clone();
        blocking("", "network removal", move || {
            net::remove_bridge(&bridge)?;
            // The pods' shared parent cgroup goes with the last runtime of the host.
            crate::cgroup::remove_parent_if_empty();
            Ok(())
        })
        .await
    }
}

impl Drop for LocalRuntime {
    /// Stops supervising, leaving every container running for the next runtime to adopt.
    fn drop(&mut self) {
        for pod in lock(&self.inner.pods).values() {
            pod.stop.send_replace(true);
        }
    }
}

impl Inner {
    /// Knows the stopped pods under `pods` (status, usage, logs), starting nothing.
    fn load_stopped(&self, pods: &Path) -> Result<(), RuntimeError> {
        let entries = fs::read_dir(pods).map_err(RuntimeError::io("listing pods", pods))?;
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().into_owned();
            if !is_pod_id(&id) {
                continue;
            }
            let Ok(record) = load_record(&self.pod_dir(&id).record()) else { continue };
            if record.id == id && record.stopped {
                let pod = self.stopped_pod(record);
                lock(&self.pods).insert(id, pod);
            }
        }
        Ok(())
    }

    /// A pod known only from its record (no spec), marked stopped with every container exited.
    fn stopped_pod(&self, mut record: PodRecord) -> Arc<Pod> {
        record.stopped = true;
        for c in &mut record.containers {
            c.pid = None;
            c.start_ticks = None;
            c.running_since_unix = None;
            c.state = c.idle_state(ContainerState::Exited);
        }
        let spec = spec_of_record(&record.id);
        let pod = self.new_pod(spec, record);
        // No tasks will run for it.
        pod.stop.send_replace(true);
        pod
    }

    /// Never less than what was reported before for the pod.
    fn report(&self, id: &str, mut usage: PodUsage) -> PodUsage {
        let mut reported = lock(&self.reported_cpu_ns);
        let last = reported.entry(id.to_owned()).or_insert(0);
        usage.cpu_ns = usage.cpu_ns.max(*last);
        *last = usage.cpu_ns;
        usage
    }

    fn pod_dir(&self, id: &str) -> PodDir {
        PodDir(self.config.root.join("pods").join(id))
    }

    fn pod_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.pod_locks).entry(id.to_owned()).or_default().clone()
    }

    fn running(&self, id: &str) -> Option<Arc<Pod>> {
        lock(&self.pods).get(id).cloned()
    }

    fn new_pod(&self, spec: PodSpec, record: PodRecord) -> Arc<Pod> {
        let dir = self.pod_dir(&spec.id);
        // From the record: a stopped pod known from disk has no spec but keeps its logs.
        let (key, cap) = (&self.config.volume_key, self.config.log_cap_bytes);
        let logs = record
            .containers
            .iter()
            .map(|c| (c.name.clone(), Arc::new(LogFile::new(dir.log(&c.name), &spec.id, &c.name, key, cap))))
            .collect();
        Arc::new(Pod {
            net: PodNet::for_pod(&spec.id),
            ip: record.ip,
            subnet: self.subnet.clone(),
            id: spec.id,
            dir,
            specs: spec.containers,
            volumes: spec.volumes,
            restart_policy: spec.restart_policy,
            volume_lock: Mutex::new(()),
            shim: self.config.shim.clone(),
            rootfs_bytes: self.config.rootfs_bytes,
            volume_key: self.config.volume_key.clone(),
            sandbox: crate::sandbox::Settings::of(&self.config),
            record: Mutex::new(record),
            logs,
            stop: watch::Sender::new(false),
            tasks: Mutex::new(Vec::new()),
        })
    }

    /// Picks a free address and writes the pod's first `pod.json`, creating its directory.
    async fn create_record(&self, spec: &PodSpec, prepared: bool) -> Result<PodRecord, RuntimeError> {
        let _allocating = self.allocation.lock().await;
        let pods_dir = self.config.root.join("pods");
        let mut used = BTreeSet::new();
        let mut used_ids = Vec::new();
        let entries = fs::read_dir(&pods_dir).map_err(RuntimeError::io("listing pods", &pods_dir))?;
        for entry in entries.flatten() {
            let other = entry.file_name().to_string_lossy().into_owned();
            if other != spec.id && other.get(..12) == spec.id.get(..12) {
                return Err(RuntimeError::InvalidSpec {
                    pod: spec.id.clone(),
                    reason: format!("its first 12 characters, which name its network, are those of pod {other}"),
                });
            }
            if let Ok(record) = read_record(&entry.path().join("pod.json")) {
                used.insert(record.ip);
                used_ids.extend(record.ids);
            }
        }
        used.extend(lock(&self.pods).values().map(|p| p.ip));
        used_ids.extend(lock(&self.pods).values().filter_map(|p| lock(&p.record).ids));
        let ip = self
            .subnet
            .pod_addresses()
            .find(|ip| !used.contains(ip))
            .ok_or_else(|| RuntimeError::SubnetFull { pod: spec.id.clone(), subnet: self.subnet.to_string() })?;
        let ids = self.allocate_ids(&spec.id, &used_ids)?;
        let record = PodRecord {
            prepared,
            ..PodRecord::new(
                &spec.id,
                ip,
                Some(ids),
                spec.containers.iter().map(|c| ContainerRecord::new(&c.name)).collect(),
            )
        };
        let dir = self.pod_dir(&spec.id);
        for sub in [dir.state(), dir.0.join("logs"), dir.0.join("containers")] {
            fs::create_dir_all(&sub).map_err(RuntimeError::io("creating pod directory", &sub))?;
        }
        write_record(&dir.record(), &record)?;
        Ok(record)
    }

    /// A free range of host ids for pod `pod`, given the ranges pods hold (`used`).
    fn allocate_ids(&self, pod: &str, used: &[IdRange]) -> Result<IdRange, RuntimeError> {
        let (first, per_pod) = (self.config.user_ids_first, self.config.user_ids_per_pod);
        userns::allocate(first, per_pod, used).ok_or_else(|| RuntimeError::InvalidSpec {
            pod: pod.to_owned(),
            reason: format!("no free range of {per_pod} host ids left from {first}"),
        })
    }

    /// Gives a pod recorded by an earlier version, which has no range of host ids, one, and
    /// saves it in its record. Holds the allocation lock, as [`Inner::create_record`] does.
    async fn record_ids(&self, record: &mut PodRecord) -> Result<(), RuntimeError> {
        if record.ids.is_some() {
            return Ok(());
        }
        let _allocating = self.allocation.lock().await;
        let pods_dir = self.config.root.join("pods");
        let mut used = Vec::new();
        let entries = fs::read_dir(&pods_dir).map_err(RuntimeError::io("listing pods", &pods_dir))?;
        for entry in entries.flatten() {
            if let Ok(other) = read_record(&entry.path().join("pod.json"))
                && other.id != record.id
            {
                used.extend(other.ids);
            }
        }
        used.extend(lock(&self.pods).values().filter(|p| p.id != record.id).filter_map(|p| lock(&p.record).ids));
        record.ids = Some(self.allocate_ids(&record.id, &used)?);
        write_record(&self.pod_dir(&record.id).record(), record)
    }

    /// Starts a pod that has no state yet. On error, removes whatever was created.
    async fn start_fresh(&self, spec: PodSpec) -> Result<PodEndpoint, RuntimeError> {
        let record = self.create_record(&spec, false).await?;
        self.launch(self.new_pod(spec, record)).await
    }

    /// Prepares a pod that has no state yet (see [`Runtime::prepare`]). On error, removes
    /// whatever was created.
    async fn prepare_fresh(&self, spec: PodSpec, progress: Progress) -> Result<(), RuntimeError> {
        let record = self.create_record(&spec, true).await?;
        let pod = self.new_pod(spec, record);
        let mut result = self.set_up(&pod).await;
        for index in 0..pod.specs.len() {
            if result.is_err() {
                break;
            }
            let (p, progress) = (pod.clone(), progress.clone());
            result = blocking(&pod.id, "image unpack", move || {
                let name = p.specs[index].name.clone();
                let report = move |done_bytes, total_bytes| {
                    progress(UnpackProgress { container: name.clone(), done_bytes, total_bytes });
                };
                p.ensure_rootfs(index, &report)
            })
            .await;
        }
        if let Err(e) = result {
            tracing::warn!(pod = %pod.id, error = %e, "pod could not be prepared; removing it");
            if let Err(cleanup) = teardown(&pod).await {
                tracing::error!(pod = %pod.id, error = %cleanup, "could not remove the pod that failed to prepare");
            }
            return Err(e);
        }
        tracing::info!(pod = %pod.id, ip = %pod.ip, "pod prepared");
        Ok(())
    }

    /// Launches a pod whose record is written (fresh or prepared). On error, removes everything
    /// of it.
    async fn launch(&self, pod: Arc<Pod>) -> Result<PodEndpoint, RuntimeError> {
        match self.bring_up(&pod, false).await {
            Ok(()) => {
                lock(&self.pods).insert(pod.id.clone(), pod.clone());
                tracing::info!(pod = %pod.id, ip = %pod.ip, "pod started");
                Ok(PodEndpoint { ip: pod.ip })
            }
            Err(e) => {
                tracing::warn!(pod = %pod.id, error = %e, "pod failed to start; removing it");
                if let Err(cleanup) = teardown(&pod).await {
                    tracing::error!(pod = %pod.id, error = %cleanup, "could not remove the pod that failed to start");
                }
                Err(e)
            }
        }
    }

    /// Wires the network (if missing) and launches every container that does not run, then
    /// starts the pod's tasks. With `adopting`, a container that fails to launch is left to its
    /// supervisor to retry; otherwise the failure is returned.
    async fn bring_up(&self, pod: &Arc<Pod>, adopting: bool) -> Result<(), RuntimeError> {
        self.set_up(pod).await?;
        // Each log pipe is held open before its container starts: a container that writes and
        // exits at once (a short job) would otherwise take its output with it.
        let mut pipes = Vec::with_capacity(pod.specs.len());
        for c in &pod.specs {
            let fifo = pod.dir.log_fifo(&c.name);
            match crate::logs::open_pipe(&fifo) {
                Ok(receiver) => pipes.push((c.name.clone(), receiver)),
                Err(e) => {
                    tracing::error!(pod = %pod.id, container = %c.name, error = %e, "cannot read a container's output")
                }
            }
        }
        for index in 0..pod.specs.len() {
            let current = pod.container(index);
            if current.ended || current.process().is_some() {
                continue;
            }
            let p = pod.clone();
            match blocking(&pod.id, "container launch", move || p.relaunch(index)).await {
                Ok((pid, ticks)) => pod.set_running(index, pid, ticks)?,
                Err(e) if adopting => {
                    tracing::warn!(pod = %pod.id, container = %pod.specs[index].name, error = %e,
                        "container failed to start; its supervisor retries");
                    pod.set_failed(index, None)?;
                }
                Err(e) => return Err(e),
            }
        }

        let mut tasks = lock(&pod.tasks);
        for index in (0..pod.specs.len()).filter(|&i| !pod.container(i).ended) {
            tasks.push(tokio::spawn(supervise(pod.clone(), self.config.clone(), index)));
        }
        for (name, receiver) in pipes {
            let log = pod.logs[&name].clone();
            tasks.push(tokio::spawn(crate::logs::pump(pod.id.clone(), log, receiver, pod.stop.subscribe())));
        }
        Ok(())
    }

    /// Wires the network (if missing), the pod's cgroup and its volumes.
    async fn set_up(&self, pod: &Arc<Pod>) -> Result<(), RuntimeError> {
        let bridge = self.config.bridge.clone();
        let outbound = self.config.outbound_internet;
        let p = pod.clone();
        blocking(&pod.id, "network setup", move || {
            if namespaces_exist(&p.net, &p.dir.0)? {
                net::ensure_bridge(&bridge, &p.subnet, outbound)
            } else {
                // Leftovers of half-made namespaces (a crash during setup) would block setup,
                // and a network namespace without the pod's user namespace (made by an earlier
                // version) is of no use to containers that join that user namespace.
                net::teardown(&p.net)?;
                userns::remove(&p.dir.0)?;
                let ids = p.ids()?;
                net::setup(&p.net, &bridge, &p.subnet, outbound, p.ip, |name| {
                    userns::create(&p.shim, &p.dir.0, name, ids)
                })
            }
        })
        .await?;
        let p = pod.clone();
        // Before anything is unpacked or launched: the pod's memory limit holds its rootfs too.
        blocking(&pod.id, "pod cgroup setup", move || cgroup::ensure_pod(&p.id, p.memory_limit())).await?;
        let p = pod.clone();
        blocking(&pod.id, "volume setup", move || p.ensure_volumes(p.volumes.iter())).await
    }
}

/// Runs blocking work off the async threads.
async fn blocking<T: Send + 'static>(
    pod: &str,
    what: &'static str,
    work: impl FnOnce() -> Result<T, RuntimeError> + Send + 'static,
) -> Result<T, RuntimeError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(RuntimeError::Task { pod: pod.to_owned(), what, message: e.to_string() }))
}

/// Whether the pod's namespaces are there: its network namespace and the user namespace that
/// owns it, pinned in its directory (see [`crate::userns`]).
fn namespaces_exist(net: &PodNet, pod_dir: &Path) -> Result<bool, RuntimeError> {
    Ok(net::netns_exists(net) && userns::exists(pod_dir)?)
}

/// Makes `dir` searchable but not listable by others (`0711`): the pod's root, a host id of its
/// own, walks it to reach its rootfs and volumes (see [`crate::userns`]).
/// Writes `bytes` to a new file `path` that only its owner (root) can read, from the start: the
/// runtime spec, which only the shim reads.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // The spec of the last launch is removed first, and its mode with it: its room in the tmpfs
    // is then free again for the new one (the same spec, the same size), even when the
    // container filled the rest before it exited.
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?.write_all(bytes)
}

/// Removes `file` of an earlier layout from container `name`'s directory on the disk, if there.
fn remove_legacy_file(dir: &PodDir, name: &str, file: &str) -> Result<(), RuntimeError> {
    let path = dir.container(name).join(file);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(RuntimeError::io("removing a file of an earlier bundle layout", &path)(e))
        }
        _ => Ok(()),
    }
}

fn searchable(dir: &Path) -> Result<(), RuntimeError> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o711))
        .map_err(RuntimeError::io("opening a directory to the pod's ids", dir))
}

fn read_record(path: &Path) -> Result<PodRecord, RuntimeError> {
    let bytes = fs::read(path).map_err(RuntimeError::io("reading pod state", path))?;
    serde_json::from_slice(&bytes).map_err(|source| RuntimeError::State { path: path.to_path_buf(), source })
}

/// Reads `pod.json` to act on it, with its pending CPU counters settled.
fn load_record(path: &Path) -> Result<PodRecord, RuntimeError> {
    let mut record = read_record(path)?;
    record.settle();
    Ok(record)
}

/// Writes `pod.json` atomically (temporary file, then rename), so a crash never leaves half.
fn write_record(path: &Path, record: &PodRecord) -> Result<(), RuntimeError> {
    let json =
        serde_json::to_vec_pretty(record).map_err(|source| RuntimeError::State { path: path.to_path_buf(), source })?;
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, json).map_err(RuntimeError::io("writing pod state", &tmp))?;
    fs::rename(&tmp, path).map_err(RuntimeError::io("writing pod state", path))
}

impl Pod {
    /// The pod's range of host ids (every pod brought up has one: see [`Inner::record_ids`]).
    fn ids(&self) -> Result<IdRange, RuntimeError> {
        lock(&self.record).ids.ok_or_else(|| RuntimeError::InvalidSpec {
            pod: self.id.clone(),
            reason: "the pod has no range of host ids".to_owned(),
        })
    }

    /// The pod cgroup's memory limit: the sum of its containers' (none if one has none).
    fn memory_limit(&self) -> Option<u64> {
        self.specs
            .iter()
            .map(|c| (c.memory_bytes > 0).then_some(c.memory_bytes))
            .try_fold(0u64, |sum, l| Some(sum.saturating_add(l?)))
    }

    /// Creates (or re-mounts) `volumes`. Blocking.
    fn ensure_volumes<'a>(&self, volumes: impl Iterator<Item = &'a VolumeSpec>) -> Result<(), RuntimeError> {
        let ids = self.ids()?;
        let _volumes = lock(&self.volume_lock);
        for v in volumes {
            volume::ensure(&self.id, &self.dir.0, v, &self.volume_key, ids)?;
        }
        Ok(())
    }

    /// Container `index`'s mounts as host paths, after making sure its volumes are there (a
    /// file system volume unmounted behind our back must not become a plain directory of
    /// unlimited size). Secret volumes are always read-only.
    fn binds(&self, index: usize) -> Result<Vec<Bind>, RuntimeError> {
        let container = &self.specs[index];
        let mut binds = Vec::with_capacity(container.mounts.len());
        let mut used = Vec::new();
        for mount in &container.mounts {
            // Validation guarantees the volume is listed.
            let Some(v) = self.volumes.iter().find(|v| v.name == mount.volume) else {
                return Err(RuntimeError::InvalidSpec {
                    pod: self.id.clone(),
                    reason: format!("container {}: no volume {}", container.name, mount.volume),
                });
            };
            used.push(v);
            binds.push(Bind {
                source: volume::source(&self.dir.0, v),
                destination: PathBuf::from(&mount.path),
                read_only: mount.read_only || matches!(v.kind, VolumeKind::Secret { .. }),
            });
        }
        self.ensure_volumes(used.into_iter())?;
        Ok(binds)
    }

    fn container(&self, index: usize) -> ContainerRecord {
        lock(&self.record).containers[index].clone()
    }

    /// Changes one container's record and saves `pod.json`.
    fn update(&self, index: usize, change: impl FnOnce(&mut ContainerRecord)) -> Result<(), RuntimeError> {
        let mut record = lock(&self.record);
        change(&mut record.containers[index]);
        write_record(&self.dir.record(), &record)
    }

    fn set_running(&self, index: usize, pid: i32, ticks: u64) -> Result<(), RuntimeError> {
        self.update(index, |c| {
            c.pid = Some(pid);
            c.start_ticks = Some(ticks);
            c.running_since_unix = Some(now_unix());
            c.state = ContainerState::Running;
        })
    }

    /// Records an exit (or a failed launch, `exit_code` None) that will be followed by a restart.
    fn set_failed(&self, index: usize, exit_code: Option<i32>) -> Result<(), RuntimeError> {
        self.update(index, |c| {
            c.pid = None;
            c.start_ticks = None;
            c.running_since_unix = None;
            c.restarts = c.restarts.saturating_add(1);
            c.last_exit_code = exit_code;
            c.state = ContainerState::Restarting;
        })
    }

    /// Records that container `index` ended for good with `exit_code`, as the pod's restart
    /// policy says: it is never started again.
    fn set_ended(&self, index: usize, exit_code: Option<i32>) -> Result<(), RuntimeError> {
        self.update(index, |c| {
            c.pid = None;
            c.start_ticks = None;
            c.running_since_unix = None;
            c.last_exit_code = exit_code;
            c.ended = true;
            c.state = c.idle_state(ContainerState::Failed);
        })
    }

    /// Removes what an ended container held: what is left in its cgroup, its libcontainer
    /// state and cgroup (its CPU time retired), and its rootfs tmpfs, whose memory counts
    /// against the pod until it is unmounted. Its log stays. Blocking.
    fn retire(&self, name: &str) -> Result<(), RuntimeError> {
        self.remove_container_state(name)?;
        volume::remove_tree(&self.id, &self.dir.container(name), "removing an ended container's rootfs")
    }

    fn is_stopped(&self) -> bool {
        lock(&self.record).stopped
    }

    /// Removes libcontainer's state of a container whose process is gone (and its cgroup),
    /// first killing what is left in its cgroup and retiring its CPU counter (see the module
    /// docs).
    fn remove_container_state(&self, name: &str) -> Result<(), RuntimeError> {
        let dir = self.dir.state().join(name);
        if !dir.exists() {
            return Ok(());
        }
        let cgroup = cgroups_path(&self.id, name);
        cgroup::kill_all(&cgroup, KILL_TIMEOUT);
        if let Some(cpu_ns) = cgroup::cpu_ns(&cgroup) {
            let mut record = lock(&self.record);
            record.retiring_cpu_ns.insert(name.to_owned(), cpu_ns);
            if let Err(e) = write_record(&self.dir.record(), &record) {
                tracing::warn!(pod = %self.id, container = name, error = %e, "cannot record a retiring CPU counter");
            }
        }
        let result = self.delete_container_state(name, &dir);
        let mut record = lock(&self.record);
        if let Some(cpu_ns) = record.retiring_cpu_ns.remove(name) {
            // Only a removed cgroup is retired: one left behind (a failed delete) still counts
            // it, and a container created next in the same place counts on from it.
            if !cgroup::exists(&cgroup) {
                record.retired_cpu_ns = record.retired_cpu_ns.saturating_add(cpu_ns);
            }
            if let Err(e) = write_record(&self.dir.record(), &record) {
                tracing::warn!(pod = %self.id, container = name, error = %e, "cannot record a retired CPU counter");
            }
        }
        result
    }

    /// libcontainer's delete of a container's state directory `dir`, which removes its cgroup.
    fn delete_container_state(&self, name: &str, dir: &Path) -> Result<(), RuntimeError> {
        let message = match Container::load(dir.to_path_buf()) {
            Ok(mut container) => match container.delete(true) {
                Ok(()) => return Ok(()),
                Err(e) => crate::error_chain(&e),
            },
            Err(e) => crate::error_chain(&e),
        };
        // Without a readable state there is no cgroup to find; at least make room for a new one.
        tracing::warn!(pod = %self.id, container = name, error = %message, "libcontainer delete failed");
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(RuntimeError::io("removing container state", dir))?;
        }
        Err(RuntimeError::Container { pod: self.id.clone(), container: name.to_owned(), action: "delete", message })
    }

    /// Creates and starts container `index` afresh (after removing any old state of it);
    /// returns its pid and start ticks. Blocking.
    fn relaunch(&self, index: usize) -> Result<(i32, u64), RuntimeError> {
        let container = &self.specs[index];
        let name = container.name.as_str();
        if let Err(e) = self.remove_container_state(name) {
            tracing::warn!(pod = %self.id, container = name, error = %e, "stale container state");
        }
        let bundle = self.dir.bundle(name);
        self.ensure_rootfs(index, &|_, _| {})?;
        let pod_dir = &self.dir.0;
        // The pod's root walks these to its rootfs and hosts file (see `crate::userns`); nobody
        // may list them. (The bundle, the tmpfs, is 0755: it is only ever reached through them.)
        for dir in [pod_dir, &pod_dir.join("containers"), &self.dir.container(name)] {
            searchable(dir)?;
        }

        let hostname = format!("pod-{}", &self.id[..12]);
        let hosts = bundle.join("hosts");
        fs::write(&hosts, spec::hosts_file(&hostname, self.ip))
            .and_then(|()| fs::set_permissions(&hosts, fs::Permissions::from_mode(0o644)))
            .map_err(RuntimeError::io("writing hosts file", &hosts))?;
        let netns = self.net.netns_path();
        let cgroups = cgroups_path(&self.id, name);
        // What the container's processes open, by the paths the shim's stage gives them (see
        // `crate::userns`).
        let mut binds = self.binds(index)?;
        for bind in &mut binds {
            bind.source = userns::staged(pod_dir, &bind.source);
        }
        let runtime_spec = spec::runtime_spec(&SpecInput {
            pod: &self.id,
            container,
            hostname: &hostname,
            netns: &netns,
            userns: &userns::pin_path(pod_dir),
            rootfs: &userns::staged(pod_dir, &bundle.join(spec::ROOTFS)),
            hosts_file: &userns::staged(pod_dir, &hosts),
            cgroups_path: &cgroups,
            binds: &binds,
            pids_limit: self.sandbox.pids_limit(container),
            seccomp: &self.sandbox.seccomp()?,
        })?;
        let config = bundle.join("config.json");
        // It holds the container's command, args and environment: in the tmpfs only (which
        // `ensure_rootfs` just found or mounted; checked again, as a disk must never get it),
        // and wiped from this process's memory once written.
        if !volume::is_tmpfs(&bundle)? {
            return Err(RuntimeError::Container {
                pod: self.id.clone(),
                container: name.to_owned(),
                action: "create",
                message: format!("its bundle {} is not a tmpfs", bundle.display()),
            });
        }
        let json = zeroize::Zeroizing::new(
            serde_json::to_vec_pretty(&runtime_spec)
                .map_err(|source| RuntimeError::State { path: config.clone(), source })?,
        );
        write_private(&config, &json).map_err(RuntimeError::io("writing runtime spec", &config))?;

        let fifo = self.dir.log_fifo(name);
        crate::logs::ensure_fifo(&fifo)?;
        let state = self.dir.state();
        let shim = &self.shim;
        let output = Command::new(shim)
            .arg("create")
            .args([state.as_os_str(), name.as_ref(), bundle.as_os_str(), fifo.as_os_str(), pod_dir.as_os_str()])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| RuntimeError::Command {
                command: format!("{} create", shim.display()),
                message: e.to_string(),
            })?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let pid = match stdout.trim().parse::<i32>() {
            Ok(pid) if output.status.success() => pid,
            _ => {
                let stderr = String::from_utf8_lossy(&output.stderr);
                let error = RuntimeError::Container {
                    pod: self.id.clone(),
                    container: name.to_owned(),
                    action: if stderr.starts_with("start:") { "start" } else { "create" },
                    message: format!("{} ({})", stderr.trim(), output.status),
                };
                // A container created but not started waits in libcontainer's init: remove it.
                if let Err(e) = self.remove_container_state(name) {
                    tracing::warn!(pod = %self.id, container = name, error = %e, "cannot remove failed container");
                }
                return Err(error);
            }
        };
        // A process that already exited has no start time; the supervisor reaps it by pid.
        let ticks = proc::start_ticks(pid).unwrap_or(0);
        tracing::info!(pod = %self.id, container = name, pid, "container started");
        Ok((pid, ticks))
    }

    /// Makes sure container `index`'s rootfs is unpacked from its image in its tmpfs (see the
    /// module docs): kept if the tmpfs holds a whole unpack of this image, else made afresh in
    /// a new tmpfs. No process of the container may run. `progress` hears how many bytes of
    /// the image's layers were read, of how many. Blocking.
    fn ensure_rootfs(&self, index: usize, progress: &dyn Fn(u64, u64)) -> Result<(), RuntimeError> {
        let container = &self.specs[index];
        let name = container.name.as_str();
        // Earlier layouts kept the rootfs, and the runtime spec and hosts file, on the disk: they
        // go once their container is gone.
        let legacy = self.dir.container(name).join("rootfs");
        if legacy.exists() {
            volume::remove_tree(&self.id, &legacy, "removing on-disk rootfs")?;
        }
        for file in ["unpacked", "config.json", "hosts"] {
            remove_legacy_file(&self.dir, name, file)?;
        }

        let mem = self.dir.bundle(name);
        let rootfs = mem.join(spec::ROOTFS);
        let unpacked = mem.join("unpacked");
        let digest = container.image.manifest_digest.to_string();
        let ids = self.ids()?;
        // Owners are the pod's host ids: a rootfs unpacked for other ids (by an earlier version,
        // owned by the host's root) is unpacked again.
        let marker = format!("{digest} {}", ids.base);
        // A marker is only trusted in a tmpfs (there is never one in the bare directory).
        let current = volume::is_tmpfs(&mem)? && fs::read_to_string(&unpacked).is_ok_and(|d| d == marker);
        if current {
            return Ok(());
        }
        // A stale or partial rootfs goes with its tmpfs (its memory is freed), and the image is
        // unpacked into a new one.
        volume::remove_tree(&self.id, &mem, "removing stale rootfs")?;
        volume::mount_tmpfs(&self.id, &mem, &format!("size={},mode=0755", self.rootfs_bytes))?;
        // tmpfs pages are charged to the memory cgroup of the process that first touches them:
        // a process in the pod cgroup unpacks, so the image counts against the pod's limit
        // (see `crate::cgroup`), as does what the container writes later, across restarts.
        let procs = cgroup::unpack_procs(&self.id)?;
        let unpacked_image = unpack::unpack_in_cgroup(
            &self.shim,
            &self.id,
            name,
            &container.image,
            &rootfs,
            ids.shift()?,
            unpack::PodCgroup { procs: &procs, memory_limit: self.memory_limit() },
            progress,
        );
        if let Err(e) = cgroup::remove_unpack_leaf(&self.id) {
            tracing::warn!(pod = %self.id, error = %e, "cannot remove the unpack cgroup");
        }
        unpacked_image?;
        fs::write(&unpacked, &marker).map_err(RuntimeError::io("writing unpack marker", &unpacked))?;
        tracing::info!(pod = %self.id, container = name, image = %digest, "image unpacked into the rootfs tmpfs");
        Ok(())
    }

    fn status(&self) -> PodStatus {
        let record = lock(&self.record);
        PodStatus {
            containers: record
                .containers
                .iter()
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    state: c.state,
                    restarts: c.restarts,
                    last_exit_code: c.last_exit_code,
                    running_since_unix: c.running_since_unix,
                    pid: c.pid,
                })
                .collect(),
        }
    }
}

/// Waits until `stop` turns true (or its sender goes).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|&s| s).await;
}

/// Keeps container `index` running: waits for its process to end, records the exit, and
/// relaunches it after the backoff, until the pod's tasks are stopped, or until its pod's
/// restart policy does not restart it: then it ends it for good and returns.
async fn supervise(pod: Arc<Pod>, config: LocalConfig, index: usize) {
    let name = pod.specs[index].name.clone();
    let mut stop = pod.stop.subscribe();
    let (initial, max) = config.restart_backoff;
    let mut backoff = initial;
    loop {
        let current = pod.container(index);
        if current.ended {
            return;
        }
        let exit_code = if let Some((pid, ticks)) = current.process() {
            let exit_code = loop {
                if *stop.borrow() {
                    return;
                }
                if let Probe::Exited(code) = proc::probe(pid, ticks) {
                    break code;
                }
                tokio::select! {
                    () = tokio::time::sleep(EXIT_POLL) => {}
                    () = stopped(&mut stop) => return,
                }
            };
            let ran = now_unix().saturating_sub(current.running_since_unix.unwrap_or(0));
            if Duration::from_secs(ran) >= config.backoff_reset_after {
                backoff = initial;
            }
            if pod.restart_policy.restarts(exit_code) {
                tracing::info!(pod = %pod.id, container = %name, pid, ?exit_code, ?backoff, "container exited; restarting");
                if let Err(e) = pod.set_failed(index, exit_code) {
                    tracing::error!(pod = %pod.id, container = %name, error = %e, "cannot record container exit");
                }
            }
            exit_code
        } else {
            // No process: its launch failed (recorded with no exit code).
            current.last_exit_code
        };
        if !pod.restart_policy.restarts(exit_code) {
            end(&pod, index, exit_code).await;
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stopped(&mut stop) => return,
        }
        if *stop.borrow() {
            return;
        }
        backoff = (backoff * 2).min(max);
        let p = pod.clone();
        match blocking(&pod.id, "container launch", move || p.relaunch(index)).await {
            Ok((pid, ticks)) => {
                if let Err(e) = pod.set_running(index, pid, ticks) {
                    tracing::error!(pod = %pod.id, container = %name, error = %e, "cannot record container start");
                }
            }
            Err(e) => {
                tracing::warn!(pod = %pod.id, container = %name, error = %e, "container failed to restart");
                if let Err(e) = pod.set_failed(index, None) {
                    tracing::error!(pod = %pod.id, container = %name, error = %e, "cannot record container failure");
                }
            }
        }
    }
}

/// Ends container `index` for good (its pod's restart policy does not restart it): records
/// the end first, so that nothing starts it again whatever happens next, then removes what it
/// held. A failed removal is left to the pod's deletion.
async fn end(pod: &Arc<Pod>, index: usize, exit_code: Option<i32>) {
    let name = pod.specs[index].name.clone();
    tracing::info!(pod = %pod.id, container = %name, ?exit_code, policy = ?pod.restart_policy, "container ended for good");
    if let Err(e) = pod.set_ended(index, exit_code) {
        tracing::error!(pod = %pod.id, container = %name, error = %e, "cannot record the container's end");
    }
    let p = pod.clone();
    if let Err(e) = blocking(&pod.id, "ended container removal", move || p.retire(&name)).await {
        tracing::warn!(pod = %pod.id, container = %pod.specs[index].name, error = %e, "cannot remove an ended container");
    }
}

/// Stops the pod's tasks (supervisors, log pumps) and waits for them.
async fn stop_tasks(pod: &Pod) {
    pod.stop.send_replace(true);
    let tasks: Vec<_> = lock(&pod.tasks).drain(..).collect();
    for task in tasks {
        // Supervisors return promptly once stopped (at most one launch in flight finishes first).
        let _ = task.await;
    }
}

/// Stops the pod's tasks, then removes everything of it: processes, libcontainer state and
/// cgroups, volumes, network, directory. Keeps going past errors and returns the first.
async fn teardown(pod: &Arc<Pod>) -> Result<(), RuntimeError> {
    stop_tasks(pod).await;
    let p = pod.clone();
    blocking(&pod.id, "pod removal", move || remove_everything(&p)).await
}

/// Stops the pod's tasks and containers and removes the containers' libcontainer state,
/// keeping the network, volumes and everything else; records the containers as exited. What
/// a failed update leaves.
async fn stop_containers(pod: &Arc<Pod>) -> Result<(), RuntimeError> {
    stop_tasks(pod).await;
    let p = pod.clone();
    let result = blocking(&pod.id, "container removal", move || remove_containers(&p)).await;
    let mut record = lock(&pod.record);
    for c in &mut record.containers {
        c.pid = None;
        c.start_ticks = None;
        c.running_since_unix = None;
        // One that ended for good keeps its end: resuming does not start it.
        c.state = c.idle_state(ContainerState::Exited);
    }
    write_record(&pod.dir.record(), &record).and(result)
}

/// Collects the first error of a sequence of steps that all run, logging each.
struct FirstError<'a> {
    pod: &'a str,
    error: Option<RuntimeError>,
}

impl FirstError<'_> {
    fn note(&mut self, result: Result<(), RuntimeError>) {
        if let Err(e) = result {
            tracing::warn!(pod = %self.pod, error = %e, "pod removal step failed");
            self.error.get_or_insert(e);
        }
    }

    fn result(self) -> Result<(), RuntimeError> {
        self.error.map_or(Ok(()), Err)
    }
}

fn remove_everything(pod: &Pod) -> Result<(), RuntimeError> {
    let mut errors = FirstError { pod: &pod.id, error: None };
    errors.note(remove_containers(pod));
    // After the containers: a file system volume unmounts only once no container uses it.
    errors.note(volume::remove_all(&pod.id, &pod.dir.0));
    errors.note(net::teardown(&pod.net));
    // Usually unpinned with the other mounts in the pod's directory, above.
    errors.note(userns::remove(&pod.dir.0));
    // Once its tmpfs are unmounted, nothing is charged to the pod cgroup any more.
    errors.note(cgroup::remove_pod(&pod.id));
    // Refuses to recurse into anything still mounted there.
    errors.note(volume::remove_tree(&pod.id, &pod.dir.0, "removing pod directory"));
    errors.result()
}

/// Kills the pod's processes and removes the libcontainer state (and cgroups) of every
/// container it has state for. Keeps going past errors and returns the first.
fn remove_containers(pod: &Pod) -> Result<(), RuntimeError> {
    let mut errors = FirstError { pod: &pod.id, error: None };
    let processes: Vec<(i32, u64)> = lock(&pod.record).containers.iter().filter_map(ContainerRecord::process).collect();
    for (pid, ticks) in processes {
        proc::kill_and_reap(pid, ticks, KILL_TIMEOUT);
    }
    // Every container libcontainer knows of, including any a crash left out of pod.json.
    let state = pod.dir.state();
    if let Ok(entries) = fs::read_dir(&state) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // pod.json may not know this process (a crash between start and save): kill it by
            // libcontainer's pid, but only if that pid is still in the container's cgroup.
            if let Ok(container) = Container::load(entry.path())
                && let Some(pid) = container.pid().map(|p| p.as_raw())
                && proc::in_cgroup(pid, &cgroups_path(&pod.id, &name))
                && let Some(ticks) = proc::start_ticks(pid)
            {
                proc::kill_and_reap(pid, ticks, KILL_TIMEOUT);
            }
            errors.note(pod.remove_container_state(&name));
        }
    }
    errors.result()
}

impl Runtime for LocalRuntime {
    async fn prepare(&self, spec: PodSpec, progress: Progress) -> Result<(), RuntimeError> {
        validate(&spec)?;
        let pod_lock = self.inner.pod_lock(&spec.id);
        let _guard = pod_lock.lock().await;
        if self.inner.running(&spec.id).is_some() || self.inner.pod_dir(&spec.id).0.exists() {
            return Err(RuntimeError::AlreadyExists { pod: spec.id });
        }
        self.inner.prepare_fresh(spec, progress).await
    }

    async fn start(&self, spec: PodSpec) -> Result<PodEndpoint, RuntimeError> {
        validate(&spec)?;
        let pod_lock = self.inner.pod_lock(&spec.id);
        let _guard = pod_lock.lock().await;
        if self.inner.running(&spec.id).is_some() {
            return Err(RuntimeError::AlreadyExists { pod: spec.id });
        }
        let dir = self.inner.pod_dir(&spec.id);
        if !dir.0.exists() {
            return self.inner.start_fresh(spec).await;
        }
        // Only a pod that `prepare` made and nobody started is taken over.
        match load_record(&dir.record()) {
            Ok(record) if record.prepared && record.id == spec.id => {
                let record = PodRecord { prepared: false, ..record };
                write_record(&dir.record(), &record)?;
                self.inner.launch(self.inner.new_pod(spec, record)).await
            }
            _ => Err(RuntimeError::AlreadyExists { pod: spec.id }),
        }
    }

    async fn adopt(&self, spec: PodSpec) -> Result<PodEndpoint, RuntimeError> {
        validate(&spec)?;
        let pod_lock = self.inner.pod_lock(&spec.id);
        let _guard = pod_lock.lock().await;
        if let Some(pod) = self.inner.running(&spec.id) {
            if !pod.is_stopped() {
                return Ok(PodEndpoint { ip: pod.ip });
            }
            // Resuming a stopped pod: it is adopted from its state on disk like any other.
            lock(&self.inner.pods).remove(&spec.id);
        }
        let dir = self.inner.pod_dir(&spec.id);
        let mut old = match load_record(&dir.record()) {
            Ok(record) if record.id == spec.id => record,
            result => {
                if let Err(e) = result {
                    tracing::info!(pod = %spec.id, error = %e, "nothing to adopt; starting the pod afresh");
                }
                if dir.0.exists() {
                    // Leftovers without a usable record: clear them so the fresh start is clean.
                    let leftover = self
                        .inner
                        .new_pod(spec.clone(), PodRecord::new(&spec.id, Ipv4Addr::UNSPECIFIED, None, Vec::new()));
                    teardown(&leftover).await?;
                }
                return self.inner.start_fresh(spec).await;
            }
        };

        // A pod of an earlier version has no range of host ids yet: it gets one, and new
        // namespaces (its containers, outside them, are restarted).
        let had_ids = old.ids.is_some();
        self.inner.record_ids(&mut old).await?;
        // Keep the recorded state of the containers still in the spec, dropping processes that
        // are gone (or whose pid now belongs to another process).
        let netns_alive = had_ids && namespaces_exist(&PodNet::for_pod(&spec.id), &dir.0)?;
        // A volume to remove or replace is in use by the running containers: restart them all
        // (a spec differing from what runs is not expected here, but must not leak volumes).
        let volumes_changed = volume::stale(&dir.0, &spec.volumes);
        let mut containers = Vec::with_capacity(spec.containers.len());
        let mut to_kill = Vec::new();
        // Containers whose process ended while no runtime watched them, and that the restart
        // policy does not restart: they end now, with their exit code lost.
        let mut ended_unwatched = Vec::new();
        for c in &spec.containers {
            let mut record = old
                .containers
                .iter()
                .find(|r| r.name == c.name)
                .cloned()
                .unwrap_or_else(|| ContainerRecord::new(&c.name));
            match record.process() {
                _ if record.ended => record.state = record.idle_state(ContainerState::Failed),
                Some((pid, ticks)) if !proc::alive(pid, ticks) && !spec.restart_policy.restarts(None) => {
                    record.pid = None;
                    record.start_ticks = None;
                    record.running_since_unix = None;
                    record.last_exit_code = None;
                    record.ended = true;
                    record.state = ContainerState::Failed;
                    ended_unwatched.push(c.name.clone());
                    tracing::info!(pod = %spec.id, container = %c.name, "container ended while the runtime was away");
                }
                // A container outside the pod's network namespace (it was removed) is unreachable.
                // One outside its cgroup under the pod's (started by an earlier version) would
                // escape the pod's memory limit: it is restarted.
                Some((pid, ticks))
                    if proc::alive(pid, ticks)
                        && netns_alive
                        && !volumes_changed
                        && proc::in_cgroup(pid, &cgroups_path(&spec.id, &c.name)) =>
                {
                    record.state = ContainerState::Running;
                }
                process => {
                    to_kill.extend(process);
                    record.pid = None;
                    record.start_ticks = None;
                    record.running_since_unix = None;
                    record.state = ContainerState::Starting;
                }
            }
            containers.push(record);
        }
        let removed: Vec<ContainerRecord> =
            old.containers.iter().filter(|r| !spec.containers.iter().any(|c| c.name == r.name)).cloned().collect();
        to_kill.extend(removed.iter().filter_map(ContainerRecord::process));
        if volumes_changed {
            tracing::info!(pod = %spec.id, "volumes differ from the spec's: restarting the containers");
        }
        // Resuming a stopped pod clears its mark; its CPU accounting carries on.
        let record = PodRecord::following(&old, containers);
        write_record(&dir.record(), &record)?;
        let pod = self.inner.new_pod(spec, record);
        let p = pod.clone();
        blocking(&pod.id, "adoption cleanup", move || {
            for (pid, ticks) in to_kill {
                proc::kill_and_reap(pid, ticks, KILL_TIMEOUT);
            }
            for r in &removed {
                p.remove_container_state(&r.name)?;
                volume::remove_tree(&p.id, &p.dir.container(&r.name), "removing container bundle")?;
            }
            for name in &ended_unwatched {
                p.retire(name)?;
            }
            // A running container of an earlier layout has its runtime spec, environment and
            // all, on the disk; libcontainer needs it no more.
            for c in &p.specs {
                remove_legacy_file(&p.dir, &c.name, "config.json")?;
            }
            volume::prune(&p.id, &p.dir.0, &p.volumes)
        })
        .await?;
        self.inner.bring_up(&pod, true).await?;
        lock(&self.inner.pods).insert(pod.id.clone(), pod.clone());
        tracing::info!(pod = %pod.id, ip = %pod.ip, "pod adopted");
        Ok(PodEndpoint { ip: pod.ip })
    }

    async fn update(&self, spec: PodSpec) -> Result<PodEndpoint, RuntimeError> {
        validate(&spec)?;
        let pod_lock = self.inner.pod_lock(&spec.id);
        let _guard = pod_lock.lock().await;
        let old = self.inner.running(&spec.id).ok_or_else(|| RuntimeError::NoSuchPod { pod: spec.id.clone() })?;
        if old.is_stopped() {
            return Err(RuntimeError::Stopped { pod: spec.id });
        }

        // Clear out the old containers, then the volumes the new spec drops or changes (only
        // now is nothing using them).
        stop_containers(&old).await?;
        let o = old.clone();
        let keep_volumes = spec.volumes.clone();
        let new_names: BTreeSet<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
        blocking(&old.id, "pod update", move || {
            // Every container gets a fresh rootfs from its (possibly new) image: the old rootfs
            // tmpfs are unmounted, which frees their memory.
            for c in &o.specs {
                volume::remove_tree(&o.id, &o.dir.container(&c.name), "removing container bundle")?;
            }
            // A container that keeps its name keeps its log; the others' logs go.
            for c in o.specs.iter().filter(|c| !new_names.contains(&c.name)) {
                let [current, previous] = crate::logs::files(&o.dir.log(&c.name));
                for file in [current, previous, o.dir.log_fifo(&c.name)] {
                    if file.exists() {
                        fs::remove_file(&file).map_err(RuntimeError::io("removing container log", &file))?;
                    }
                }
            }
            volume::prune(&o.id, &o.dir.0, &keep_volumes)
        })
        .await?;

        let record = PodRecord::following(
            &lock(&old.record),
            spec.containers.iter().map(|c| ContainerRecord::new(&c.name)).collect(),
        );
        write_record(&self.inner.pod_dir(&spec.id).record(), &record)?;
        let pod = self.inner.new_pod(spec, record);
        // From here the new spec is the pod's, even if it fails to start: status, logs, delete
        // and the next update see it.
        lock(&self.inner.pods).insert(pod.id.clone(), pod.clone());
        match self.inner.bring_up(&pod, false).await {
            Ok(()) => {
                tracing::info!(pod = %pod.id, ip = %pod.ip, "pod updated");
                Ok(PodEndpoint { ip: pod.ip })
            }
            Err(e) => {
                tracing::warn!(pod = %pod.id, error = %e, "pod update failed; stopping its containers");
                if let Err(cleanup) = stop_containers(&pod).await {
                    tracing::error!(pod = %pod.id, error = %cleanup, "could not stop the containers of the failed update");
                }
                Err(e)
            }
        }
    }

    async fn delete(&self, pod_id: &str) -> Result<(), RuntimeError> {
        if !is_pod_id(pod_id) {
            // No such pod can exist; never let an id reach a path.
            return Ok(());
        }
        let pod_lock = self.inner.pod_lock(pod_id);
        let _guard = pod_lock.lock().await;
        let running = lock(&self.inner.pods).remove(pod_id);
        let pod = match running {
            Some(pod) => pod,
            None => {
                let dir = self.inner.pod_dir(pod_id);
                let net = PodNet::for_pod(pod_id);
                if !dir.0.exists() && !net::netns_exists(&net) {
                    return Ok(());
                }
                // State left by an earlier runtime: remove what pod.json and the disk show.
                let record = load_record(&dir.record())
                    .unwrap_or_else(|_| PodRecord::new(pod_id, Ipv4Addr::UNSPECIFIED, None, Vec::new()));
                self.inner.new_pod(spec_of_record(pod_id), record)
            }
        };
        let result = teardown(&pod).await;
        lock(&self.inner.pod_locks).remove(pod_id);
        lock(&self.inner.reported_cpu_ns).remove(pod_id);
        tracing::info!(pod = %pod_id, ok = result.is_ok(), "pod deleted");
        result
    }

    async fn stop(&self, pod_id: &str) -> Result<(), RuntimeError> {
        let unknown = || RuntimeError::NoSuchPod { pod: pod_id.to_owned() };
        if !is_pod_id(pod_id) {
            return Err(unknown());
        }
        let pod_lock = self.inner.pod_lock(pod_id);
        let _guard = pod_lock.lock().await;
        let pod = match self.inner.running(pod_id) {
            Some(pod) => pod,
            None => {
                // Left by an earlier runtime and not adopted: stop what runs of it.
                let dir = self.inner.pod_dir(pod_id);
                if !dir.record().exists() {
                    return Err(unknown());
                }
                let record = load_record(&dir.record())?;
                if record.id != pod_id {
                    return Err(unknown());
                }
                let pod = self.inner.new_pod(spec_of_record(pod_id), record);
                lock(&self.inner.pods).insert(pod_id.to_owned(), pod.clone());
                pod
            }
        };
        // Marked first: a provider killed while stopping leaves the pod stopped, not resumed.
        {
            let mut record = lock(&pod.record);
            record.stopped = true;
            write_record(&pod.dir.record(), &record)?;
        }
        // Also when already stopped: clears whatever a stop cut short left running.
        let result = stop_containers(&pod).await;
        tracing::info!(pod = %pod_id, ok = result.is_ok(), "pod stopped");
        result
    }

    async fn status(&self, pod_id: &str) -> Result<Option<PodStatus>, RuntimeError> {
        Ok(self.inner.running(pod_id).map(|pod| pod.status()))
    }

    async fn usage(&self, pod_id: &str) -> Result<Option<PodUsage>, RuntimeError> {
        let usage = match self.inner.running(pod_id) {
            // Under the record lock, so no container's counter moves to or from the retired
            // total while it is read.
            Some(pod) => lock(&pod.record).usage(),
            None => {
                if !is_pod_id(pod_id) {
                    return Ok(None);
                }
                let path = self.inner.pod_dir(pod_id).record();
                match load_record(&path) {
                    Ok(record) if record.id == pod_id => record.usage(),
                    Ok(_) => return Ok(None),
                    Err(_) if !path.exists() => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(Some(self.inner.report(pod_id, usage)))
    }

    async fn logs(&self, pod_id: &str, container: &str, options: LogOptions) -> Result<LogStream, RuntimeError> {
        let pod = self.inner.running(pod_id).ok_or_else(|| RuntimeError::NoSuchPod { pod: pod_id.to_owned() })?;
        let log = pod
            .logs
            .get(container)
            .cloned()
            .ok_or_else(|| RuntimeError::NoSuchContainer { pod: pod_id.to_owned(), container: container.to_owned() })?;
        Ok(crate::logs::stream(log, options, pod.stop.subscribe()))
    }

    async fn list(&self) -> Result<Vec<String>, RuntimeError> {
        let pods_dir = self.inner.config.root.join("pods");
        let mut ids: BTreeSet<String> = lock(&self.inner.pods).keys().cloned().collect();
        let entries = fs::read_dir(&pods_dir).map_err(RuntimeError::io("listing pods", &pods_dir))?;
        for entry in entries {
            let entry = entry.map_err(RuntimeError::io("listing pods", &pods_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_pod_id(&name) {
                ids.insert(name);
            }
        }
        Ok(ids.into_iter().collect())
    }
}
