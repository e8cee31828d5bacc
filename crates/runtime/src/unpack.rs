//! Unpacking a container's image from a process in the pod's memory cgroup, so the in-memory
//! rootfs counts against the pod's memory limit (see [`crate::cgroup`]): tmpfs pages are
//! charged to the cgroup of the process that first writes them, and the provider, which used to
//! unpack in its own process, would carry every pod's image in its own cgroup.
//!
//! The provider describes the job (rootfs, layer blobs and their keys) as JSON on the stdin of
//! `tpod-runtime-shim unpack` (never on its command line, which other users can read), which
//! writes its pid to the pod cgroup's unpack leaf, then runs [`tpod_image::unpack_shifted`] (the
//! files' owners moved into the pod's host ids, see [`crate::userns`]). An image
//! whose unpacked size does not fit the pod's memory limit gets the unpacker OOM-killed; the
//! error says so.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::RuntimeError;

/// What the shim needs to unpack one image.
#[derive(Serialize, Deserialize)]
struct Job {
    /// The `cgroup.procs` the unpacker joins first.
    cgroup_procs: PathBuf,
    /// Where to unpack (in the container's tmpfs).
    rootfs: PathBuf,
    /// The pod's host ids, which the image's owners are moved into (see [`crate::userns`]), as
    /// (first host id, count).
    ids: (u32, u32),
    manifest_digest: String,
    layers: Vec<LayerJob>,
}

#[derive(Serialize, Deserialize)]
struct LayerJob {
    path: PathBuf,
    digest: String,
    size: u64,
    /// The blob's decryption key, when it is encrypted.
    key: Option<Vec<u8>>,
    gzip: bool,
    diff_id: String,
}

/// How often the unpacker's progress is read while it runs.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// The pod cgroup an unpack runs in.
pub(crate) struct PodCgroup<'a> {
    /// Its unpack leaf's `cgroup.procs`.
    pub procs: &'a Path,
    /// Its memory limit, for the error when the unpacker is OOM-killed.
    pub memory_limit: Option<u64>,
}

/// Unpacks `image` into `rootfs`, its owners moved into `ids`, from `shim unpack`, a process
/// that joins `cgroup` before it writes anything. While it runs, `progress` is told how many
/// bytes of the layer files it has read, of how many. Blocking.
#[allow(clippy::too_many_arguments)] // One call site; each argument is a different fact.
pub(crate) fn unpack_in_cgroup(
    shim: &Path,
    pod: &str,
    container: &str,
    image: &tpod_image::Image,
    rootfs: &Path,
    ids: tpod_image::IdShift,
    cgroup: PodCgroup<'_>,
    progress: &dyn Fn(u64, u64),
) -> Result<(), RuntimeError> {
    let PodCgroup { procs, memory_limit } = cgroup;
    let digest = image.manifest_digest.to_string();
    let failed = |message: String| RuntimeError::Unpack {
        pod: pod.to_owned(),
        container: container.to_owned(),
        image: digest.clone(),
        rootfs: rootfs.to_path_buf(),
        message,
    };
    let job = Job {
        cgroup_procs: procs.to_path_buf(),
        rootfs: rootfs.to_path_buf(),
        ids: (ids.host_base(), ids.count()),
        manifest_digest: digest.clone(),
        layers: image
            .layers
            .iter()
            .map(|l| LayerJob {
                path: l.blob.path.clone(),
                digest: l.blob.digest.to_string(),
                size: l.blob.size,
                key: l.blob.key.as_ref().map(|k| k.as_bytes().to_vec()),
                gzip: l.gzip,
                diff_id: l.diff_id.to_string(),
            })
            .collect(),
    };
    // What the unpacker reads: the layer files on disk (ciphertext when encrypted).
    let total: u64 = job.layers.iter().map(|l| std::fs::metadata(&l.path).map_or(l.size, |m| m.len())).sum();
    let json = Zeroizing::new(serde_json::to_vec(&job).map_err(|e| failed(format!("describing the job: {e}")))?);
    for layer in job.layers {
        if let Some(key) = layer.key {
            drop(Zeroizing::new(key));
        }
    }
    let command = || format!("{} unpack", shim.display());
    let mut child = Command::new(shim)
        .arg("unpack")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RuntimeError::Command { command: command(), message: e.to_string() })?;
    // A closed stdin (the shim died early) shows in its status below.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&json);
    }
    // Drained on its own thread, so a chatty unpacker never blocks on a full pipe.
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            text
        })
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {
                // The bytes the unpacker has read so far: the layer files, streamed once, plus
                // the small job description.
                if let Some(read) = read_bytes(child.id()) {
                    progress(read.min(total), total);
                }
                std::thread::sleep(PROGRESS_INTERVAL);
            }
            Err(e) => return Err(RuntimeError::Command { command: command(), message: e.to_string() }),
        }
    };
    progress(total, total);
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&stderr).trim().to_owned();
    if std::os::unix::process::ExitStatusExt::signal(&status) == Some(9) {
        let limit =
            memory_limit.map_or_else(|| "its memory limit".to_owned(), |l| format!("its memory limit of {l} bytes"));
        return Err(failed(format!(
            "the unpacking process was killed: the unpacked image (kept in memory) does not fit the pod's \
             memory, {limit}"
        )));
    }
    Err(failed(if stderr.is_empty() { status.to_string() } else { stderr }))
}

/// The bytes process `pid` has read (`rchar` in `/proc/<pid>/io`).
fn read_bytes(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines().find_map(|l| l.strip_prefix("rchar:")).and_then(|v| v.trim().parse().ok())
}

/// The shim's side: reads a job from `input`, joins its cgroup, unpacks. Errors are text for
/// the shim's stderr.
#[doc(hidden)]
pub fn run_unpack_job(input: &[u8]) -> Result<(), String> {
    let job: Job = serde_json::from_slice(input).map_err(|e| format!("reading the unpack job: {e}"))?;
    // First, before any rootfs page is touched.
    std::fs::write(&job.cgroup_procs, std::process::id().to_string())
        .map_err(|e| format!("joining the pod cgroup {}: {e}", job.cgroup_procs.display()))?;
    let digest = |s: &str| tpod_image::Digest::parse(s).map_err(|e| e.to_string());
    let mut layers = Vec::with_capacity(job.layers.len());
    for l in job.layers {
        let key = match l.key {
            Some(bytes) => {
                let bytes = Zeroizing::new(bytes);
                Some(tpod_crypto::BlobKey::from_bytes(&bytes).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        layers.push(tpod_image::Layer {
            blob: tpod_image::Blob { digest: digest(&l.digest)?, size: l.size, path: l.path, key },
            gzip: l.gzip,
            diff_id: digest(&l.diff_id)?,
        });
    }
    let manifest_digest = digest(&job.manifest_digest)?;
    // Unpacking reads only the layers.
    let image = tpod_image::Image {
        config_blob: tpod_image::Blob { digest: manifest_digest.clone(), size: 0, path: PathBuf::new(), key: None },
        manifest_digest,
        config: tpod_image::oci_spec::image::ImageConfiguration::default(),
        layers,
    };
    let (base, count) = job.ids;
    let ids = tpod_image::IdShift::new(base, count).ok_or_else(|| format!("invalid host ids {base} + {count}"))?;
    // Each file owned as the image says, in the pod's ids: the container's root owns the
    // rootfs and can write to it, and an image's other users keep their files.
    tpod_image::unpack_shifted(&image, &job.rootfs, ids).map(drop).map_err(|e| crate::error_chain(&e))
}
