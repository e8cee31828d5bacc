//! Pod volumes: storage that outlives a container's process and is shared by the pod's
//! containers, bind-mounted into them at the paths their [`crate::VolumeMount`]s name.
//!
//! Layout under the pod directory, per volume `<name>`:
//! - [`VolumeKind::EmptyDir`]: `volumes/<name>/dir/`, a plain directory on the host's disk;
//! - [`VolumeKind::Filesystem`]: `volumes/<name>/disk.img`, a sparse file of exactly
//!   `size_bytes` formatted ext4, loop-mounted on `volumes/<name>/mnt/`, so a pod can never
//!   store more than its size (writes past it fail with `ENOSPC`).
//!
//! What is on disk is the truth: a volume's kind and size are read back from the directory
//! (which of `dir/` or `disk.img` exists, and the image's length), so adoption and update need
//! no separate record, and a crash half-way through creating an image leaves only a
//! `disk.img.tmp` that is discarded. Mounts are looked up in `/proc/self/mountinfo`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{PodSpec, RuntimeError, VolumeKind, VolumeSpec};

/// The largest [`VolumeKind::Filesystem`] accepted: 1 TiB.
pub const MAX_FILESYSTEM_BYTES: u64 = 1 << 40;

/// The smallest [`VolumeKind::Filesystem`] accepted: below this ext4 has no room for its own
/// metadata (mkfs fails), so the error is given up front instead.
pub const MIN_FILESYSTEM_BYTES: u64 = 1 << 20;

/// How long a busy unmount is retried (a killed container's mount namespace is released by the
/// kernel slightly after its process is reaped).
const UNMOUNT_RETRY: Duration = Duration::from_secs(3);

/// How long to wait for the kernel to release an auto-clearing loop device after an unmount.
const LOOP_RELEASE: Duration = Duration::from_secs(2);

/// Whether `name` is a DNS label (RFC 1123): 1 to 63 of `a-z`, `0-9`, `-`, starting and
/// ending with a letter or digit. Volume names become path components, so this also keeps
/// them from naming anything outside the pod's `volumes/`.
pub(crate) fn is_dns_label(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| alnum(b) || b == b'-')
        && name.bytes().next().is_some_and(alnum)
        && name.bytes().last().is_some_and(alnum)
}

/// Checks the pod's volumes and every container's mounts against them.
pub(crate) fn validate(spec: &PodSpec) -> Result<(), RuntimeError> {
    let invalid = |reason: String| RuntimeError::InvalidSpec { pod: spec.id.clone(), reason };
    let mut names = std::collections::BTreeSet::new();
    for volume in &spec.volumes {
        let name = &volume.name;
        if !is_dns_label(name) {
            return Err(invalid(format!(
                "volume name {name:?} must be 1 to 63 characters of a-z, 0-9 and '-', starting and ending with a \
                 letter or digit"
            )));
        }
        if !names.insert(name.as_str()) {
            return Err(invalid(format!("volume {name} is listed twice")));
        }
        if let VolumeKind::Filesystem { size_bytes } = volume.kind
            && !(MIN_FILESYSTEM_BYTES..=MAX_FILESYSTEM_BYTES).contains(&size_bytes)
        {
            return Err(invalid(format!(
                "volume {name}: size {size_bytes} bytes is outside {MIN_FILESYSTEM_BYTES} (1 MiB) to \
                 {MAX_FILESYSTEM_BYTES} (1 TiB)"
            )));
        }
    }
    for container in &spec.containers {
        let mut paths = std::collections::BTreeSet::new();
        for mount in &container.mounts {
            let what = format!("container {}, mount of volume {:?} at {:?}", container.name, mount.volume, mount.path);
            if !names.contains(mount.volume.as_str()) {
                return Err(invalid(format!("{what}: the pod lists no such volume")));
            }
            let path = Path::new(&mount.path);
            // `..` could lead outside the rootfs and `/` would hide it; NUL cannot go in a path.
            let clean = path.is_absolute()
                && path.parent().is_some()
                && !mount.path.contains('\0')
                && path.components().all(|c| !matches!(c, std::path::Component::ParentDir));
            if !clean {
                return Err(invalid(format!("{what}: the path must be absolute, not `/` and without `..`")));
            }
            if !paths.insert(path.components().collect::<PathBuf>()) {
                return Err(invalid(format!("{what}: the container mounts something else at that path")));
            }
        }
    }
    Ok(())
}

/// The `volumes/` directory of the pod at `pod_dir`.
fn volumes_dir(pod_dir: &Path) -> PathBuf {
    pod_dir.join("volumes")
}

/// The host path bind-mounted into containers for volume `volume`.
pub(crate) fn source(pod_dir: &Path, volume: &VolumeSpec) -> PathBuf {
    let dir = volumes_dir(pod_dir).join(&volume.name);
    match volume.kind {
        VolumeKind::EmptyDir => dir.join("dir"),
        VolumeKind::Filesystem { .. } => dir.join("mnt"),
    }
}

/// The kind of the volume stored in `dir` (`volumes/<name>`), if it is complete.
fn kind_on_disk(dir: &Path) -> Option<VolumeKind> {
    if let Ok(meta) = fs::metadata(dir.join("disk.img")) {
        return Some(VolumeKind::Filesystem { size_bytes: meta.len() });
    }
    dir.join("dir").is_dir().then_some(VolumeKind::EmptyDir)
}

/// Runs `program` with `args`; fails with its stderr.
fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<String, RuntimeError> {
    let command = || {
        let mut text = program.to_owned();
        for arg in args {
            text.push(' ');
            text.push_str(&arg.to_string_lossy());
        }
        text
    };
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| RuntimeError::Command { command: command(), message: format!("cannot run {program}: {e}") })?;
    if !output.status.success() {
        return Err(RuntimeError::Command {
            command: command(),
            message: format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Undoes the octal escapes (`\040` for a space…) of a `/proc/self/mountinfo` path.
fn unescape(field: &str) -> PathBuf {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// Every mount point of this process's mount namespace, in mount order.
fn mount_points() -> Result<Vec<PathBuf>, RuntimeError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(path).map_err(RuntimeError::io("reading mount table", path))?;
    // Field 5 is the mount point.
    Ok(text.lines().filter_map(|line| line.split(' ').nth(4)).map(unescape).collect())
}

/// `path` with symlinks resolved (mountinfo shows resolved paths), or as given if it is gone.
fn resolved(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Whether something is mounted on `path`.
pub(crate) fn is_mounted(path: &Path) -> Result<bool, RuntimeError> {
    let path = resolved(path);
    Ok(mount_points()?.contains(&path))
}

/// Mount points at or below `dir`, deepest (latest) first.
fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, RuntimeError> {
    let dir = resolved(dir);
    let mut found: Vec<PathBuf> = mount_points()?.into_iter().filter(|m| m.starts_with(&dir)).collect();
    found.reverse();
    found.dedup();
    Ok(found)
}

/// Unmounts `path`, retrying while it is busy, and as a last resort detaching it lazily.
fn unmount(pod: &str, path: &Path) -> Result<(), RuntimeError> {
    let deadline = Instant::now() + UNMOUNT_RETRY;
    loop {
        match run("umount", &[path.as_os_str()]) {
            Ok(_) => return Ok(()),
            Err(_) if !is_mounted(path)? => return Ok(()),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                // Something outside the pod still uses it: detach it so the pod can go; the
                // kernel frees the filesystem (and its loop device) when that user lets go.
                tracing::warn!(pod, path = %path.display(), error = %e, "volume busy; detaching it lazily");
                run("umount", &["-l".as_ref(), path.as_os_str()])?;
                return Ok(());
            }
        }
    }
}

/// Detaches any loop device still backed by `image` (the one `mount -o loop` made clears
/// itself on unmount, but the kernel does so asynchronously, and a crash may leave one).
fn release_loop_devices(image: &Path) -> Result<(), RuntimeError> {
    if !image.exists() {
        return Ok(());
    }
    let deadline = Instant::now() + LOOP_RELEASE;
    loop {
        let listed = run("losetup", &["-j".as_ref(), image.as_os_str()])?;
        let devices: Vec<&str> = listed.lines().filter_map(|l| l.split(':').next()).collect();
        if devices.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            for device in devices {
                run("losetup", &["-d".as_ref(), device.as_ref()])?;
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unmounts and removes one volume directory (`volumes/<name>`). No container may use it.
fn remove_volume(pod: &str, dir: &Path) -> Result<(), RuntimeError> {
    for mount in mounts_under(dir)? {
        unmount(pod, &mount)?;
    }
    release_loop_devices(&dir.join("disk.img"))?;
    // Never recurse into a file system that is still mounted: that would empty the volume
    // rather than remove it, and then fail anyway.
    if let Some(mount) = mounts_under(dir)?.first() {
        return Err(RuntimeError::Command {
            command: format!("umount {}", mount.display()),
            message: "still mounted".to_owned(),
        });
    }
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(RuntimeError::io("removing volume", dir))?;
    }
    tracing::info!(pod, volume = %dir.display(), "volume removed");
    Ok(())
}

/// Removes the pod's volumes that `keep` does not list with the same kind (and size), and
/// anything else in `volumes/`. No container of the pod may run.
pub(crate) fn prune(pod: &str, pod_dir: &Path, keep: &[VolumeSpec]) -> Result<(), RuntimeError> {
    let root = volumes_dir(pod_dir);
    let Ok(entries) = fs::read_dir(&root) else { return Ok(()) };
    for entry in entries {
        let entry = entry.map_err(RuntimeError::io("listing volumes", &root))?;
        let dir = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let kept = keep.iter().any(|v| v.name == name && kind_on_disk(&dir) == Some(v.kind.clone()));
        if !kept {
            remove_volume(pod, &dir)?;
        }
    }
    Ok(())
}

/// Whether [`prune`] would remove anything for `keep`.
pub(crate) fn stale(pod_dir: &Path, keep: &[VolumeSpec]) -> bool {
    let Ok(entries) = fs::read_dir(volumes_dir(pod_dir)) else { return false };
    entries.flatten().any(|entry| {
        let name = entry.file_name().to_string_lossy().into_owned();
        !keep.iter().any(|v| v.name == name && kind_on_disk(&entry.path()) == Some(v.kind.clone()))
    })
}

/// Makes `volume` ready to be bind-mounted: creates it if missing (formatting a file system
/// volume) and mounts a file system volume that is not mounted (after a reboot, or a crash
/// between formatting and mounting). Idempotent; callers serialise calls per pod.
pub(crate) fn ensure(pod: &str, pod_dir: &Path, volume: &VolumeSpec) -> Result<(), RuntimeError> {
    let dir = volumes_dir(pod_dir).join(&volume.name);
    match volume.kind {
        VolumeKind::EmptyDir => {
            let data = dir.join("dir");
            fs::create_dir_all(&data).map_err(RuntimeError::io("creating emptyDir volume", &data))?;
        }
        VolumeKind::Filesystem { size_bytes } => {
            let image = dir.join("disk.img");
            let mount_point = dir.join("mnt");
            fs::create_dir_all(&mount_point).map_err(RuntimeError::io("creating volume mount point", &mount_point))?;
            if !image.exists() {
                // Formatted under a temporary name, so `disk.img` always is a whole file system.
                let tmp = dir.join("disk.img.tmp");
                let file = File::create(&tmp).map_err(RuntimeError::io("creating volume image", &tmp))?;
                // Sparse: the host's disk is only used as the pod writes.
                file.set_len(size_bytes).map_err(RuntimeError::io("sizing volume image", &tmp))?;
                drop(file);
                // No blocks reserved for root (the pod gets all of its size); lazy init keeps
                // the image sparse (a 1 TiB one takes about 16 MiB of disk, not a gigabyte).
                run(
                    "mkfs.ext4",
                    &[
                        "-q".as_ref(),
                        "-F".as_ref(),
                        "-m".as_ref(),
                        "0".as_ref(),
                        "-E".as_ref(),
                        "lazy_itable_init=1,lazy_journal_init=1,nodiscard".as_ref(),
                        tmp.as_os_str(),
                    ],
                )?;
                fs::rename(&tmp, &image).map_err(RuntimeError::io("naming volume image", &image))?;
                tracing::info!(pod, volume = %volume.name, size_bytes, "file system volume created");
            }
            if !is_mounted(&mount_point)? {
                // nodev, nosuid: the image's contents are the pod's to write; they must not
                // give it devices or privileges.
                run(
                    "mount",
                    &[
                        "-t".as_ref(),
                        "ext4".as_ref(),
                        "-o".as_ref(),
                        "loop,nodev,nosuid".as_ref(),
                        image.as_os_str(),
                        mount_point.as_os_str(),
                    ],
                )?;
                tracing::info!(pod, volume = %volume.name, "file system volume mounted");
            }
        }
    }
    Ok(())
}

/// Unmounts and removes every volume of the pod at `pod_dir`, and anything else mounted in it.
/// No container of the pod may run.
pub(crate) fn remove_all(pod: &str, pod_dir: &Path) -> Result<(), RuntimeError> {
    prune(pod, pod_dir, &[])?;
    for mount in mounts_under(pod_dir)? {
        unmount(pod, &mount)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn dns_labels() {
        for good in ["a", "data", "my-vol-1", "0", &"x".repeat(63)] {
            assert!(is_dns_label(good), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", "..", "a/b", &"x".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape(r"/a\040b/c\134d"), PathBuf::from(r"/a b/c\d"));
        assert_eq!(unescape(r"/plain\0"), PathBuf::from(r"/plain\0"));
    }
}
