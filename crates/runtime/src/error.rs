//! The runtime's errors. Each names the pod, container, path or command that failed.

use std::io;
use std::path::{Path, PathBuf};

/// A runtime operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The pod spec breaks a rule (id format, container names, no command…).
    #[error("pod {pod}: invalid spec: {reason}")]
    InvalidSpec {
        /// The pod id as given.
        pod: String,
        /// What is wrong.
        reason: String,
    },
    /// `start` was called for a pod that already has state.
    #[error("pod {pod} already exists (adopt or delete it)")]
    AlreadyExists {
        /// The pod id.
        pod: String,
    },
    /// The pod is not run by this runtime.
    #[error("pod {pod} is not running here")]
    NoSuchPod {
        /// The pod id.
        pod: String,
    },
    /// The pod is stopped ([`crate::Runtime::stop`]): it must be resumed first.
    #[error("pod {pod} is stopped (adopt it to resume it)")]
    Stopped {
        /// The pod id.
        pod: String,
    },
    /// The pod has no container of that name.
    #[error("pod {pod} has no container {container}")]
    NoSuchContainer {
        /// The pod id.
        pod: String,
        /// The container name asked for.
        container: String,
    },
    /// Every address of the pod subnet is taken.
    #[error("pod {pod}: no free address left in subnet {subnet}")]
    SubnetFull {
        /// The pod id.
        pod: String,
        /// The subnet, as `a.b.c.d/len`.
        subnet: String,
    },
    /// A file system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done, e.g. "writing pod state".
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A pod state file could not be parsed.
    #[error("pod state {path} is corrupt: {source}")]
    State {
        /// The state file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// An external command (`ip`) failed.
    #[error("command `{command}` failed: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and stderr, or why it could not run.
        message: String,
    },
    /// The pod network cannot go where it is configured: the bridge name is another interface,
    /// the bridge holds another subnet, the subnet overlaps a route of another interface, or
    /// the bridge still has pods attached when it is to be removed.
    #[error("bridge {bridge}: {reason}")]
    NetworkConflict {
        /// The bridge.
        bridge: String,
        /// What collides, and what to do about it.
        reason: String,
    },
    /// The container's image could not be unpacked.
    #[error("pod {pod}, container {container}: unpacking image {image} into {rootfs}: {message}")]
    Unpack {
        /// The pod id.
        pod: String,
        /// The container name.
        container: String,
        /// The image's manifest digest.
        image: String,
        /// The rootfs being written.
        rootfs: PathBuf,
        /// Why: the image error, or how the unpacking process ended (it runs in the pod's
        /// memory cgroup, so an image too big for the pod's memory limit gets it killed).
        message: String,
    },
    /// libcontainer failed to create, start, kill or delete a container.
    #[error("pod {pod}, container {container}: {action} failed: {message}")]
    Container {
        /// The pod id.
        pod: String,
        /// The container name.
        container: String,
        /// What was being done, e.g. "create".
        action: &'static str,
        /// libcontainer's error (its type is not `Sync`, so only its text is kept).
        message: String,
    },
    /// A file system volume's encryption (fscrypt) could not be set up or is not as it must be.
    #[error("volume encryption, {path}: {message}")]
    Encryption {
        /// The mount point or directory.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A background task panicked or was cancelled.
    #[error("pod {pod}: {what} task failed: {message}")]
    Task {
        /// The pod id.
        pod: String,
        /// What the task was doing.
        what: &'static str,
        /// The join error.
        message: String,
    },
}

impl RuntimeError {
    /// A closure mapping an [`io::Error`] on `path` to [`RuntimeError::Io`].
    pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self + use<> {
        let path = path.to_path_buf();
        move |source| Self::Io { what, path, source }
    }
}
