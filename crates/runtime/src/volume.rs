//! Pod volumes: storage that outlives a container's process and is shared by the pod's
//! containers, bind-mounted into them at the paths their [`crate::VolumeMount`]s name. Also the
//! tmpfs helpers the containers' in-memory rootfs use (see [`crate::local`]).
//!
//! Layout under the pod directory, per volume `<name>`:
//! - [`VolumeKind::Filesystem`]: `volumes/<name>/disk.img`, a sparse file of exactly
//!   `size_bytes` formatted ext4, loop-mounted on `volumes/<name>/mnt/`, so a pod can never
//!   store more than its size (writes past it fail with `ENOSPC`). Containers see
//!   `mnt/data/`, encrypted with fscrypt under a key derived for this pod and volume (see
//!   [`crate::fscrypt`]), so the image holds only ciphertext of what the pod writes;
//! - [`VolumeKind::EmptyDir`]: the same, in `volumes/<name>/scratch.img` (the name tells the
//!   kinds apart). Scratch space is on the disk rather than a tmpfs on purpose: a tmpfs would
//!   count against the pod's memory limit, so a 64 MiB pod could never fill a 1 GiB emptyDir;
//!   on disk it is limited by its own size, reserved and billed as storage like a file system
//!   volume, and encrypted like one, so the operator no longer sees it in clear. An emptyDir
//!   left by an earlier version (a plain `dir/`, unlimited) is no volume of any kind: it is
//!   pruned and made again, empty, with a size;
//! - [`VolumeKind::Secret`]: a tmpfs mounted on `volumes/<name>/secret/` (mode `0700`, owned by
//!   the pod's root, sized to its files: their total rounded up to 4 KiB pages plus a page per
//!   file), holding the files (mode `0444`, owned by the pod's root too). Nothing of it is on the disk: the directory under the
//!   mount point stays empty, and the files are written only once the tmpfs is checked to be
//!   mounted there. It is always bind-mounted read-only.
//!
//! What is on disk (or mounted) is the truth: a volume's kind and size are read back from the
//! directory (which of `dir/`, `disk.img` or a tmpfs on `secret/` exists, the image's length, the
//! secret files themselves), so adoption and update need no separate record, and a crash
//! half-way through creating an image leaves only a `disk.img.tmp` that is discarded. A
//! `secret/` with no tmpfs on it (after a host reboot) is no volume: it is removed and made again
//! from the spec; one whose files differ from the spec's (an update, or a crash while writing
//! them) likewise. Mounts are looked up in `/proc/self/mountinfo`.
//!
//! Owners: containers run in the pod's user namespace (see [`crate::userns`]), their root being
//! the pod's first host id. So a file system volume's `data/` belongs to that id (the
//! container's root can write to it, and hands out what it makes there), and the directories
//! on the way (`volumes/`, `volumes/<name>/`, the file system's root `mnt/`) are searchable by
//! all (`0711`). A file system volume made before pods had user namespaces (its `data/` owned
//! by the host's root) has its files' owners moved into the pod's ids once, when next mounted,
//! as the image's are (see [`tpod_image::IdShift`]).
//!
//! The tmpfs are mounted `noswap` where the kernel allows it (Linux 6.4+; older kernels refuse
//! the option and get a warning), so their contents never reach a swap device.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::fscrypt::{self, VolumeKey};
use crate::userns::IdRange;
use crate::{PodSpec, RuntimeError, SecretFile, VolumeKind, VolumeSpec};

/// The largest [`VolumeKind::Filesystem`] accepted: 1 TiB.
pub const MAX_FILESYSTEM_BYTES: u64 = 1 << 40;

/// The smallest [`VolumeKind::Filesystem`] accepted: below this ext4 has no room for its own
/// metadata (mkfs fails), so the error is given up front instead.
pub const MIN_FILESYSTEM_BYTES: u64 = 1 << 20;

/// The most files a [`VolumeKind::Secret`] volume holds.
pub const MAX_SECRET_FILES: usize = 64;

/// The most bytes a [`VolumeKind::Secret`] volume holds: the sum of its files' sizes (1 MiB).
pub const MAX_SECRET_BYTES: u64 = 1 << 20;

/// The longest secret file name, in bytes (the usual `NAME_MAX`).
const MAX_SECRET_NAME: usize = 255;

/// The page size tmpfs sizes are counted in (4 KiB on the hosts we run on).
const PAGE: u64 = 4096;

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
        match &volume.kind {
            VolumeKind::EmptyDir { size_bytes } | VolumeKind::Filesystem { size_bytes } => {
                if !(MIN_FILESYSTEM_BYTES..=MAX_FILESYSTEM_BYTES).contains(size_bytes) {
                    return Err(invalid(format!(
                        "volume {name}: size {size_bytes} bytes is outside {MIN_FILESYSTEM_BYTES} (1 MiB) to \
                         {MAX_FILESYSTEM_BYTES} (1 TiB)"
                    )));
                }
            }
            VolumeKind::Secret { files } => {
                check_secret(files).map_err(|reason| invalid(format!("secret volume {name}: {reason}")))?;
            }
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

/// Checks a secret volume's files: how many, their names, their total size. The reason never
/// includes contents.
fn check_secret(files: &[SecretFile]) -> Result<(), String> {
    if files.is_empty() || files.len() > MAX_SECRET_FILES {
        return Err(format!("it has {} files; a secret volume holds 1 to {MAX_SECRET_FILES}", files.len()));
    }
    let mut names = BTreeSet::new();
    for file in files {
        let name = &file.name;
        let plain = !name.is_empty()
            && name.len() <= MAX_SECRET_NAME
            && name != "."
            && name != ".."
            && !name.contains('/')
            && !name.contains('\0');
        if !plain {
            return Err(format!(
                "file name {name:?} must be a plain file name: 1 to {MAX_SECRET_NAME} bytes, no '/' or NUL, not \
                 '.' or '..'"
            ));
        }
        if !names.insert(name.as_str()) {
            return Err(format!("file {name:?} is listed twice"));
        }
    }
    let total = secret_bytes(files);
    if total > MAX_SECRET_BYTES {
        return Err(format!("its files hold {total} bytes, more than {MAX_SECRET_BYTES} (1 MiB)"));
    }
    Ok(())
}

/// The total size of a secret volume's files.
fn secret_bytes(files: &[SecretFile]) -> u64 {
    files.iter().map(|f| u64::try_from(f.data.len()).unwrap_or(u64::MAX)).fold(0, u64::saturating_add)
}

/// The size of the tmpfs holding `files`: their total rounded up to pages, plus a page per
/// file (each file's last page is partly empty), at least one page.
fn secret_tmpfs_bytes(files: &[SecretFile]) -> u64 {
    let count = u64::try_from(files.len()).unwrap_or(u64::MAX);
    secret_bytes(files).div_ceil(PAGE).saturating_add(count).max(1).saturating_mul(PAGE)
}

/// The `volumes/` directory of the pod at `pod_dir`.
fn volumes_dir(pod_dir: &Path) -> PathBuf {
    pod_dir.join("volumes")
}

/// The encrypted directory of a file system volume, at the top of its file system.
const ENCRYPTED_DIR: &str = "data";

/// The host path bind-mounted into containers for volume `volume`.
pub(crate) fn source(pod_dir: &Path, volume: &VolumeSpec) -> PathBuf {
    let dir = volumes_dir(pod_dir).join(&volume.name);
    match volume.kind {
        VolumeKind::EmptyDir { .. } | VolumeKind::Filesystem { .. } => dir.join("mnt").join(ENCRYPTED_DIR),
        VolumeKind::Secret { .. } => dir.join("secret"),
    }
}

/// The kind of the volume stored in `dir` (`volumes/<name>`), if it is complete. A secret
/// volume is read back from its tmpfs (files sorted by name); a `secret/` directory without
/// one (after a reboot) is no volume.
fn kind_on_disk(dir: &Path) -> Option<VolumeKind> {
    if let Ok(meta) = fs::metadata(dir.join(FILESYSTEM_IMAGE)) {
        return Some(VolumeKind::Filesystem { size_bytes: meta.len() });
    }
    if let Ok(meta) = fs::metadata(dir.join(SCRATCH_IMAGE)) {
        return Some(VolumeKind::EmptyDir { size_bytes: meta.len() });
    }
    let secret = dir.join("secret");
    if secret.is_dir() {
        return read_secret(&secret);
    }
    None
}

/// The image file of a [`VolumeKind::Filesystem`] volume.
const FILESYSTEM_IMAGE: &str = "disk.img";

/// The image file of a [`VolumeKind::EmptyDir`] volume.
const SCRATCH_IMAGE: &str = "scratch.img";

/// The files of the secret tmpfs mounted on `mount_point`, or `None` if no tmpfs is mounted
/// there or it holds anything but regular files with UTF-8 names.
fn read_secret(mount_point: &Path) -> Option<VolumeKind> {
    if !is_tmpfs(mount_point).ok()? {
        return None;
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(mount_point).ok()? {
        let entry = entry.ok()?;
        if !entry.file_type().ok()?.is_file() {
            return None;
        }
        let name = entry.file_name().into_string().ok()?;
        let data = Zeroizing::new(fs::read(entry.path()).ok()?);
        files.push(SecretFile { name, data });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Some(VolumeKind::Secret { files })
}

/// Whether the volume in `dir` is `wanted`, as [`kind_on_disk`] reads it (secret files compared
/// whatever their order in the spec).
fn holds(dir: &Path, wanted: &VolumeKind) -> bool {
    match (kind_on_disk(dir), wanted) {
        (Some(VolumeKind::Secret { files: found }), VolumeKind::Secret { files }) => {
            found.len() == files.len() && files.iter().all(|f| found.contains(f))
        }
        (found, wanted) => found.as_ref() == Some(wanted),
    }
}

/// Runs `program` with `args`; fails with its stderr.
pub(crate) fn run(program: &str, args: &[&std::ffi::OsStr]) -> Result<String, RuntimeError> {
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

/// Every mount of this process's mount namespace as (mount point, file system type), in mount
/// order.
fn mount_table() -> Result<Vec<(PathBuf, String)>, RuntimeError> {
    let path = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(path).map_err(RuntimeError::io("reading mount table", path))?;
    Ok(text.lines().filter_map(parse_mountinfo_line).collect())
}

/// The mount point (field 5) and file system type (the field after the `-` separator) of a
/// `/proc/self/mountinfo` line.
fn parse_mountinfo_line(line: &str) -> Option<(PathBuf, String)> {
    let mut fields = line.split(' ');
    let mount_point = fields.nth(4)?;
    let fs_type = fields.skip_while(|f| *f != "-").nth(1)?;
    Some((unescape(mount_point), fs_type.to_owned()))
}

/// Every mount point of this process's mount namespace, in mount order.
fn mount_points() -> Result<Vec<PathBuf>, RuntimeError> {
    Ok(mount_table()?.into_iter().map(|(point, _)| point).collect())
}

/// Whether the topmost mount on `path` is a tmpfs.
pub(crate) fn is_tmpfs(path: &Path) -> Result<bool, RuntimeError> {
    let path = resolved(path);
    let top = mount_table()?.into_iter().rev().find(|(point, _)| *point == path);
    Ok(top.is_some_and(|(_, fs_type)| fs_type == "tmpfs"))
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
                tracing::warn!(pod, path = %path.display(), error = %e, "mount busy; detaching it lazily");
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

/// Unmounts everything mounted at or below `dir`, deepest first.
fn unmount_all(pod: &str, dir: &Path) -> Result<(), RuntimeError> {
    for mount in mounts_under(dir)? {
        unmount(pod, &mount)?;
    }
    Ok(())
}

/// Removes `dir` and everything in it, which must have nothing mounted any more.
fn remove_unmounted(dir: &Path, what: &'static str) -> Result<(), RuntimeError> {
    // Never recurse into a file system that is still mounted: that would empty it rather than
    // remove it (a volume's data…), and then fail anyway.
    if let Some(mount) = mounts_under(dir)?.first() {
        return Err(RuntimeError::Command {
            command: format!("umount {}", mount.display()),
            message: "still mounted".to_owned(),
        });
    }
    if dir.exists() {
        fs::remove_dir_all(dir).map_err(RuntimeError::io(what, dir))?;
    }
    Ok(())
}

/// Unmounts everything at or below `dir` (retrying while busy; a tmpfs's memory is freed once
/// its last user lets go) and removes `dir`. Nothing may run from it.
pub(crate) fn remove_tree(pod: &str, dir: &Path, what: &'static str) -> Result<(), RuntimeError> {
    unmount_all(pod, dir)?;
    remove_unmounted(dir, what)
}

/// Unmounts and removes one volume directory (`volumes/<name>`). No container may use it.
fn remove_volume(pod: &str, dir: &Path) -> Result<(), RuntimeError> {
    unmount_all(pod, dir)?;
    release_loop_devices(&dir.join(FILESYSTEM_IMAGE))?;
    release_loop_devices(&dir.join(SCRATCH_IMAGE))?;
    remove_unmounted(dir, "removing volume")?;
    tracing::info!(pod, volume = %dir.display(), "volume removed");
    Ok(())
}

/// Set once the kernel refused tmpfs's `noswap` option (before Linux 6.4), so it is not tried
/// again.
static NO_NOSWAP: AtomicBool = AtomicBool::new(false);

/// Mounts a fresh tmpfs with `options` (e.g. `size=…,mode=0755`) on `path`, created if missing,
/// adding `noswap` when the kernel supports it. Fails unless a tmpfs is then mounted there, so
/// callers may write to it knowing nothing reaches the disk. Whatever the directory held
/// (nothing, unless written behind our back) is removed first rather than hidden.
pub(crate) fn mount_tmpfs(pod: &str, path: &Path, options: &str) -> Result<(), RuntimeError> {
    if path.exists() && !is_mounted(path)? {
        remove_tree(pod, path, "clearing tmpfs mount point")?;
    }
    fs::create_dir_all(path).map_err(RuntimeError::io("creating tmpfs mount point", path))?;
    let mount = |options: &str| {
        run(
            "mount",
            &["-t".as_ref(), "tmpfs".as_ref(), "-o".as_ref(), options.as_ref(), "tpod".as_ref(), path.as_os_str()],
        )
    };
    // nodev, nosuid: nothing in a pod's tmpfs may give it devices or privileges it was not given.
    let noswap = format!("{options},nodev,nosuid,noswap");
    let mounted = if NO_NOSWAP.load(Ordering::Relaxed) { Err(None) } else { mount(&noswap).map_err(Some) };
    if let Err(refused) = mounted {
        mount(&format!("{options},nodev,nosuid"))?;
        if let Some(error) = refused {
            NO_NOSWAP.store(true, Ordering::Relaxed);
            tracing::warn!(pod, error = %error, "the kernel refuses tmpfs noswap: pod memory may be swapped out");
        }
    }
    if !is_tmpfs(path)? {
        return Err(RuntimeError::Command {
            command: format!("mount -t tmpfs tpod {}", path.display()),
            message: "no tmpfs is mounted there afterwards".to_owned(),
        });
    }
    Ok(())
}

/// Makes the secret volume `name` on `mount_point`: a fresh tmpfs holding `files`. Its
/// previous tmpfs, if any, must be unmounted first (the caller checked there is none).
fn create_secret(
    pod: &str,
    name: &str,
    mount_point: &Path,
    files: &[SecretFile],
    ids: IdRange,
) -> Result<(), RuntimeError> {
    let size = secret_tmpfs_bytes(files);
    // Only the pod's root (and the host's) may enter it; containers see it read-only.
    let root = ids.base;
    mount_tmpfs(pod, mount_point, &format!("size={size},mode=0700,uid={root},gid={root},noexec"))?;
    for file in files {
        // Validation made the names plain file names: each lands in the tmpfs itself.
        let path = mount_point.join(&file.name);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)
            .and_then(|mut out| {
                out.write_all(&file.data)?;
                std::os::unix::fs::fchown(&out, Some(root), Some(root))
            })
            .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(0o444)));
        if let Err(e) = written {
            // No half-written secret stays mounted.
            if let Err(cleanup) = remove_tree(pod, mount_point, "removing partial secret volume") {
                tracing::warn!(pod, volume = name, error = %cleanup, "cannot remove a partial secret volume");
            }
            return Err(RuntimeError::io("writing secret file", &path)(e));
        }
    }
    // Names and sizes only: contents are never logged.
    tracing::info!(pod, volume = name, files = files.len(), bytes = secret_bytes(files), "secret volume created");
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
        let kept = keep.iter().any(|v| v.name == name && holds(&dir, &v.kind));
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
        !keep.iter().any(|v| v.name == name && holds(&entry.path(), &v.kind))
    })
}

/// Makes `volume` ready to be bind-mounted: creates it if missing (formatting a file system
/// volume, writing a secret volume's files into a new tmpfs) and mounts a file system volume
/// that is not mounted (after a reboot, or a crash between formatting and mounting). A secret
/// volume whose tmpfs is mounted is kept as it is ([`prune`] removes one whose files differ from
/// the spec's). Idempotent; callers serialise calls per pod.
pub(crate) fn ensure(
    pod: &str,
    pod_dir: &Path,
    volume: &VolumeSpec,
    key: &VolumeKey,
    ids: IdRange,
) -> Result<(), RuntimeError> {
    let dir = volumes_dir(pod_dir).join(&volume.name);
    fs::create_dir_all(&dir).map_err(RuntimeError::io("creating volume directory", &dir))?;
    // The pod's root walks these to the volume (see the module docs).
    searchable(&volumes_dir(pod_dir))?;
    searchable(&dir)?;
    match &volume.kind {
        &VolumeKind::EmptyDir { size_bytes } => {
            ensure_image(pod, &dir, &volume.name, SCRATCH_IMAGE, size_bytes, key, ids)
        }
        &VolumeKind::Filesystem { size_bytes } => {
            ensure_image(pod, &dir, &volume.name, FILESYSTEM_IMAGE, size_bytes, key, ids)
        }
        VolumeKind::Secret { files } => {
            let mount_point = dir.join("secret");
            // One made before pods had user namespaces belongs to the host's root, and the
            // pod's could not enter it: made again, like one lost with a reboot.
            let owned = fs::metadata(&mount_point).is_ok_and(|meta| meta.uid() == ids.base);
            if !is_tmpfs(&mount_point)? || !owned {
                // New, or its tmpfs went with a reboot: the files come from the spec again.
                // Anything else mounted there is taken down first, never written through.
                unmount_all(pod, &mount_point)?;
                create_secret(pod, &volume.name, &mount_point, files, ids)?;
            }
            Ok(())
        }
    }
}

/// Makes `dir` searchable but not listable by others (`0711`).
fn searchable(dir: &Path) -> Result<(), RuntimeError> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o711))
        .map_err(RuntimeError::io("opening a volume directory to the pod's ids", dir))
}

/// Gives the pod's root the directory `data` a container sees of a file system volume, unless
/// it already belongs to one of the pod's ids (a container may give it to another of its
/// users). One owned by the host's root is new, or was made before pods had user namespaces:
/// everything in it has its owners moved into the pod's ids first (once: then `data` is the
/// pod's), as an image's owners are when unpacked, so what the pod wrote stays its own.
fn own_data(data: &Path, ids: IdRange) -> Result<(), RuntimeError> {
    let meta = fs::symlink_metadata(data).map_err(RuntimeError::io("reading the volume directory", data))?;
    let pods = |id: u32| id.checked_sub(ids.base).is_some_and(|inside| inside < ids.count);
    if pods(meta.uid()) && pods(meta.gid()) {
        return Ok(());
    }
    let shift = ids.shift()?;
    if meta.uid() == 0 {
        shift_owners(data, shift)?;
    }
    std::os::unix::fs::lchown(data, Some(ids.base), Some(ids.base))
        .map_err(RuntimeError::io("giving the volume directory to the pod's root", data))
}

/// Moves the owners of everything below `dir` into `shift`'s range, never following a symlink.
fn shift_owners(dir: &Path, shift: tpod_image::IdShift) -> Result<(), RuntimeError> {
    let entries = fs::read_dir(dir).map_err(RuntimeError::io("listing a volume directory", dir))?;
    for entry in entries {
        let entry = entry.map_err(RuntimeError::io("listing a volume directory", dir))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(RuntimeError::io("reading a volume file", &path))?;
        let (uid, gid) = (shift.host_id(meta.uid().into()), shift.host_id(meta.gid().into()));
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid))
            .map_err(RuntimeError::io("moving a volume file into the pod's ids", &path))?;
        if meta.is_dir() {
            shift_owners(&path, shift)?;
        }
    }
    Ok(())
}

/// Creates the ext4 image `file` of `size_bytes` in the volume directory `dir` if missing,
/// loop-mounts it on `mnt/` if not mounted, and makes sure `mnt/data` is encrypted under the
/// volume's key.
fn ensure_image(
    pod: &str,
    dir: &Path,
    name: &str,
    file: &str,
    size_bytes: u64,
    key: &VolumeKey,
    ids: IdRange,
) -> Result<(), RuntimeError> {
    let image = dir.join(file);
    let mount_point = dir.join("mnt");
    fs::create_dir_all(&mount_point).map_err(RuntimeError::io("creating volume mount point", &mount_point))?;
    if !image.exists() {
        // Formatted under a temporary name, so the image always is a whole file system.
        let tmp = dir.join(format!("{file}.tmp"));
        let out = File::create(&tmp).map_err(RuntimeError::io("creating volume image", &tmp))?;
        // Sparse: the host's disk is only used as the pod writes.
        out.set_len(size_bytes).map_err(RuntimeError::io("sizing volume image", &tmp))?;
        drop(out);
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
                "-O".as_ref(),
                "encrypt".as_ref(),
                tmp.as_os_str(),
            ],
        )?;
        fs::rename(&tmp, &image).map_err(RuntimeError::io("naming volume image", &image))?;
        tracing::info!(pod, volume = name, size_bytes, "file system volume created");
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
        tracing::info!(pod, volume = name, "file system volume mounted");
    }
    // The key goes to the kernel at every mount (it lives in the mounted file system's
    // keyring); adding it again is harmless.
    let identifier = fscrypt::add_volume_key(key, pod, name, &mount_point)?;
    let data = mount_point.join(ENCRYPTED_DIR);
    match fs::create_dir(&data) {
        Ok(()) => fscrypt::encrypt_dir(&data, identifier)?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(RuntimeError::io("creating the volume directory", &data)(e)),
    }
    // Whatever made the directory, it must be encrypted under this volume's key, or the pod
    // would write in clear.
    fscrypt::check_dir(&data, identifier)?;
    searchable(&mount_point)?;
    own_data(&data, ids)
}

/// Unmounts and removes every volume of the pod at `pod_dir`, and anything else mounted in it
/// (the containers' rootfs tmpfs). No container of the pod may run.
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

    fn file(name: &str, data: &[u8]) -> SecretFile {
        SecretFile { name: name.to_owned(), data: data.to_vec().into() }
    }

    #[test]
    fn secret_files_are_checked() {
        check_secret(&[file("token", b"t"), file(&"n".repeat(255), b""), file(".env", b"x")]).unwrap();
        let full: Vec<SecretFile> = (0..MAX_SECRET_FILES).map(|i| file(&format!("f{i}"), &[0; 16384])).collect();
        check_secret(&full).unwrap();
        let cases: [(Vec<SecretFile>, &str); 10] = [
            (Vec::new(), "has 0 files"),
            ((0..=MAX_SECRET_FILES).map(|i| file(&format!("f{i}"), b"")).collect(), "has 65 files"),
            (vec![file("", b"secret!")], "\"\""),
            (vec![file(".", b"secret!")], "\".\""),
            (vec![file("..", b"secret!")], "\"..\""),
            (vec![file("a/b", b"secret!")], "\"a/b\""),
            (vec![file("a\0b", b"secret!")], "plain file name"),
            (vec![file(&"n".repeat(256), b"secret!")], "plain file name"),
            (vec![file("t", b"secret!"), file("t", b"secret!")], "\"t\" is listed twice"),
            (vec![file("a", &[0; 1 << 20]), file("b", b"secret!")], "1048583 bytes"),
        ];
        for (files, needle) in cases {
            let reason = check_secret(&files).unwrap_err();
            assert!(reason.contains(needle) && !reason.contains("secret!"), "{needle}: {reason}");
        }
    }

    #[test]
    fn secret_debug_shows_no_contents() {
        let text = format!("{:?}", VolumeKind::Secret { files: vec![file("token", b"hunter2")] });
        assert_eq!(text, "Secret { files: [SecretFile { name: \"token\", bytes: 7 }] }");
    }

    #[test]
    fn secret_tmpfs_fits_its_files() {
        assert_eq!(secret_tmpfs_bytes(&[file("empty", b"")]), PAGE);
        assert_eq!(secret_tmpfs_bytes(&[file("a", b"x"), file("b", b"y")]), 3 * PAGE);
        assert_eq!(secret_tmpfs_bytes(&[file("a", &[0; 4096]), file("b", &[0; 4097])]), 5 * PAGE);
        let full: Vec<SecretFile> = (0..64).map(|i| file(&format!("f{i}"), &[0; 16384])).collect();
        assert_eq!(secret_tmpfs_bytes(&full), (256 + 64) * PAGE);
    }

    #[test]
    fn mountinfo_lines_give_mount_point_and_type() {
        let line =
            "613 29 0:95 / /tmp/a\\040b/mem rw,nosuid,nodev,relatime shared:301 - tmpfs tpod rw,size=16384k,mode=755";
        assert_eq!(parse_mountinfo_line(line), Some((PathBuf::from("/tmp/a b/mem"), "tmpfs".to_owned())));
        let no_optional = "36 35 98:0 /mnt1 /mnt2 rw,noatime - ext3 /dev/root rw,errors=continue";
        assert_eq!(parse_mountinfo_line(no_optional), Some((PathBuf::from("/mnt2"), "ext3".to_owned())));
        assert_eq!(parse_mountinfo_line("garbage"), None);
    }

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape(r"/a\040b/c\134d"), PathBuf::from(r"/a b/c\d"));
        assert_eq!(unescape(r"/plain\0"), PathBuf::from(r"/plain\0"));
    }
}
