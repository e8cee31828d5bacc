//! The typed, validated manifest. Values of these types only come out of [`crate::parse`], so
//! every invariant in the field docs holds; they serialize (camelCase) for JSON output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// A pod: containers that are deployed together to one provider, with their volumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The pod name: a DNS label.
    pub name: String,
    /// 1 to [`crate::MAX_CONTAINERS`] containers with unique names.
    pub containers: Vec<Container>,
    /// Volumes with unique names, mountable by the containers.
    pub volumes: Vec<Volume>,
    /// How many instances of the pod to run.
    pub replicas: Replicas,
    /// Whether the pod's containers are started again when they end (Kubernetes
    /// `restartPolicy`, pod-level); [`RestartPolicy::Always`] when the manifest names none.
    pub restart_policy: RestartPolicy,
}

/// When a pod's containers are started again after they end, as in Kubernetes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum RestartPolicy {
    /// Always, whatever the exit code (with backoff): a service. The default.
    #[default]
    Always,
    /// Only after a non-zero exit code or a kill (with backoff); a container that exits 0 has
    /// succeeded and stays ended: a job that retries until it succeeds.
    OnFailure,
    /// Never: a container that ends stays ended, succeeded (exit code 0) or failed: a job run once.
    Never,
}

impl RestartPolicy {
    /// The name the manifest uses: `Always`, `OnFailure` or `Never`.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "Always",
            RestartPolicy::OnFailure => "OnFailure",
            RestartPolicy::Never => "Never",
        }
    }
}

/// One container of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    /// A DNS label, unique within the pod.
    pub name: String,
    /// Where the image comes from.
    pub image: Image,
    /// Overrides the image's entrypoint when present.
    pub command: Option<Vec<String>>,
    /// Overrides the image's arguments when present.
    pub args: Option<Vec<String>>,
    /// Environment variables; names match `[A-Za-z_][A-Za-z0-9_]*`.
    pub env: BTreeMap<String, String>,
    /// An absolute path inside the container.
    pub working_dir: Option<String>,
    /// Exposed ports; port numbers and hostnames are unique within the pod.
    pub ports: Vec<Port>,
    /// What the container needs.
    pub resources: Resources,
    /// Volumes mounted into the container; each names a volume of the pod.
    pub volume_mounts: Vec<VolumeMount>,
}

/// A container image reference, as written in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// The reference exactly as written.
    pub reference: String,
    /// Whether it is a local path or a registry reference.
    pub kind: ImageKind,
}

impl Image {
    /// For a local image, its path resolved against the manifest's directory; `None` for registry images.
    pub fn local_path(&self, manifest_dir: &Path) -> Option<PathBuf> {
        match self.kind {
            ImageKind::LocalPath => Some(manifest_dir.join(&self.reference)),
            ImageKind::Registry => None,
        }
    }
}

/// Where an image comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ImageKind {
    /// An OCI image layout directory or docker-archive tarball; the reference starts with `./`,
    /// `../` or `/` and is relative to the manifest's directory. Its existence is not checked here.
    LocalPath,
    /// A registry reference such as `registry.example.com/app:1.0`.
    Registry,
}

/// An exposed container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// 1 to 65535.
    pub container_port: u16,
    /// How the port is exposed.
    pub protocol: Protocol,
    /// For HTTP ports, the DNS name the port is served under.
    pub hostname: Option<String>,
}

/// How a port is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Protocol {
    /// HTTP, routable by hostname (the default).
    Http,
    /// Raw TCP.
    Tcp,
}

/// What a container needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU in thousandths of a core; greater than zero.
    pub cpu_millis: u64,
    /// Memory in bytes; greater than zero.
    pub memory_bytes: u64,
    /// Number of GPUs (0 when not asked for).
    pub gpu: u32,
    /// The most processes (and threads) the container may have at once, 1 to
    /// [`crate::MAX_PIDS`]; `None` takes the provider's default. A provider never allows more
    /// than its own default, so this can only lower it.
    pub pids: Option<u32>,
}

/// A volume mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    /// The name of one of the pod's volumes.
    pub name: String,
    /// An absolute path inside the container, unique within the container, neither at nor under
    /// `/proc`, `/sys` or `/dev` (the kernel's and the runtime's own file systems).
    pub mount_path: String,
    /// Whether the container may only read the volume.
    pub read_only: bool,
}

/// A named volume of the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    /// A DNS label, unique within the pod.
    pub name: String,
    /// What backs the volume.
    pub source: VolumeSource,
}

/// What backs a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum VolumeSource {
    /// Scratch space that lives as long as the pod, on the provider's disk (not in memory).
    #[serde(rename_all = "camelCase")]
    EmptyDir {
        /// Its size in bytes (`emptyDir: {size: 1Gi}`), greater than zero; `None` takes the
        /// provider's default. Writes past it fail with "no space"; it is reserved and billed as
        /// storage.
        size_bytes: Option<u64>,
    },
    /// Persistent storage of a given size.
    #[serde(rename_all = "camelCase")]
    Filesystem {
        /// Size in bytes; greater than zero.
        size_bytes: u64,
    },
    /// A secret read from a local file by the publisher and delivered encrypted.
    Secret {
        /// The secret file, relative to the manifest's directory. Its existence is not checked here.
        file: PathBuf,
    },
}

/// How many instances of the pod to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Replicas {
    /// At least this many; at most `max`. 0 lets the provider scale the pod to zero when it
    /// receives no request for `idle_timeout_secs`, and start it again on the next one.
    pub min: u32,
    /// At most this many: 1 to [`crate::MAX_REPLICAS`].
    pub max: u32,
    /// `idleTimeout`: how long the pod may receive no request before it is scaled down, in
    /// seconds (1 to [`crate::MAX_IDLE_TIMEOUT_SECS`]); `None`: the provider's default. A provider
    /// may hold it to a minimum of its own.
    pub idle_timeout_secs: Option<u64>,
    /// `targetConcurrency`: requests in flight per replica above which another one is started;
    /// `None`: the provider's default.
    pub target_concurrency: Option<u32>,
}

impl Default for Replicas {
    fn default() -> Self {
        Replicas { min: 1, max: 1, idle_timeout_secs: None, target_concurrency: None }
    }
}
