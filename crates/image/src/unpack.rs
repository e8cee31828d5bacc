//! Applying an image's layers to a root filesystem directory, treating the layers as hostile.
//!
//! Rules, checked for every entry:
//! - paths must be relative and have no `..` component;
//! - no parent directory of an entry may be a symlink, whoever made it: this is stricter than a
//!   kernel overlay (which would follow links inside the rootfs) but needs no `openat` tricks,
//!   and layers written by image builders record real paths, so they do not need it;
//! - an existing entry at the destination is removed, never written through, and files are
//!   created with `O_EXCL`, so a symlink left in place cannot redirect a write;
//! - hard links must point at a regular file inside the rootfs;
//! - device nodes and FIFOs are skipped (an unprivileged unpacker cannot make them, and a pod
//!   gets its devices from the runtime), and reported in [`UnpackReport`];
//! - OCI whiteouts: `.wh.<name>` deletes `<name>` from lower layers, `.wh..wh..opq` empties its
//!   directory of lower-layer content.
//!
//! Each layer blob is hashed once before anything is written (so a tampered blob is refused
//! before touching the rootfs) and again while it streams, together with its uncompressed
//! `diff_id`, so a blob changed in between is still caught. On any error the rootfs is partly
//! written and must be discarded. Ownership and extended attributes are not kept; modes are.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use tar::EntryType;

use crate::read::{HashingReader, Layer, check_blob};
use crate::{Image, ImageError};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";

/// What [`unpack`] did not reproduce.
#[derive(Clone, Debug, Default)]
pub struct UnpackReport {
    /// Device nodes and FIFOs that were skipped, as paths inside the rootfs.
    pub skipped_devices: Vec<PathBuf>,
}

/// Applies `image`'s layers, lowest first, to `rootfs` (created if missing).
pub fn unpack(image: &Image, rootfs: &Path) -> Result<UnpackReport, ImageError> {
    fs::create_dir_all(rootfs).map_err(ImageError::io(rootfs))?;
    let mut state = State { rootfs, report: UnpackReport::default(), dir_modes: Vec::new() };
    for layer in &image.layers {
        let blob = &layer.blob;
        // First pass: refuse a tampered blob before writing anything from it.
        let (size, digest) = HashingReader::new(blob.open()?).finish().map_err(layer_error(layer))?;
        check_blob(&blob.digest, blob.size, size, digest)?;
        apply_layer(&mut state, layer)?;
    }
    // Directory modes last, deepest first, so a read-only directory did not block its children.
    // A directory listed twice takes its last mode.
    let mut seen = HashSet::new();
    let mut modes: Vec<(PathBuf, u32)> =
        state.dir_modes.into_iter().rev().filter(|(rel, _)| seen.insert(rel.clone())).collect();
    modes.sort_by(|a, b| b.0.cmp(&a.0));
    for (rel, mode) in modes {
        let (Ok(parent), Some(name)) = (resolve_parent(rootfs, &rel, false), rel.file_name()) else { continue };
        let path = parent.join(name);
        // Skip anything a later layer replaced or removed; never chmod through a symlink.
        if fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_dir()) {
            fs::set_permissions(&path, Permissions::from_mode(mode)).map_err(ImageError::io(&path))?;
        }
    }
    Ok(state.report)
}

struct State<'a> {
    rootfs: &'a Path,
    report: UnpackReport,
    /// Directory entries and their modes, in the order seen.
    dir_modes: Vec<(PathBuf, u32)>,
}

fn layer_error(layer: &Layer) -> impl Fn(io::Error) -> ImageError + Copy + '_ {
    |source| ImageError::Layer { layer: layer.blob.digest.clone(), source }
}

fn apply_layer(state: &mut State<'_>, layer: &Layer) -> Result<(), ImageError> {
    let layer_error = layer_error(layer);
    let blob = &layer.blob;
    let mut stored = HashingReader::new(blob.open()?);
    let (_, diff_id) = if layer.gzip {
        let mut plain = HashingReader::new(GzDecoder::new(&mut stored));
        extract(state, layer, &mut plain)?;
        plain.finish().map_err(layer_error)?
    } else {
        let mut plain = HashingReader::new(&mut stored);
        extract(state, layer, &mut plain)?;
        plain.finish().map_err(layer_error)?
    };
    let (size, digest) = stored.finish().map_err(layer_error)?;
    check_blob(&blob.digest, blob.size, size, digest)?;
    if diff_id != layer.diff_id {
        return Err(ImageError::DiffIdMismatch {
            layer: blob.digest.clone(),
            expected: layer.diff_id.to_string(),
            actual: diff_id,
        });
    }
    Ok(())
}

fn extract(state: &mut State<'_>, layer: &Layer, reader: impl Read) -> Result<(), ImageError> {
    let layer_error = layer_error(layer);
    let mut archive = tar::Archive::new(reader);
    // Paths this layer has made: an opaque whiteout only hides what lower layers made.
    let mut created: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries().map_err(layer_error)? {
        let mut entry = entry.map_err(layer_error)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |reason: &str| ImageError::UnsafeEntry {
            layer: layer.blob.digest.clone(),
            path: raw.clone(),
            reason: reason.to_owned(),
        };
        let Some(rel) = relative_path(&entry.path_bytes()).map_err(&refuse)? else {
            // The root itself ("./"): its mode and owner are the runtime's business.
            continue;
        };
        let Some(name) = rel.file_name().map(OsStr::to_os_string) else { continue };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let parent = resolve_parent(state.rootfs, &rel, true).map_err(|r| refuse(&r))?;

        if name.as_bytes() == OPAQUE_WHITEOUT.as_bytes() {
            for child in fs::read_dir(&parent).map_err(ImageError::io(&parent))? {
                let child = child.map_err(ImageError::io(&parent))?;
                if !created.contains(&parent_rel.join(child.file_name())) {
                    remove(&child.path())?;
                }
            }
            continue;
        }
        if let Some(target) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if target.is_empty() || target == b"." || target == b".." {
                return Err(refuse("whiteout of `.` or `..`"));
            }
            remove(&parent.join(OsStr::from_bytes(target)))?;
            continue;
        }

        let dest = parent.join(&name);
        let mode = entry.header().mode().map_err(layer_error)? & 0o7777;
        match entry.header().entry_type() {
            EntryType::Directory => {
                match fs::symlink_metadata(&dest) {
                    Ok(meta) if meta.is_dir() => {}
                    _ => {
                        remove(&dest)?;
                        fs::create_dir(&dest).map_err(ImageError::io(&dest))?;
                    }
                }
                state.dir_modes.push((rel.clone(), mode));
            }
            EntryType::Regular | EntryType::Continuous => {
                remove(&dest)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&dest)
                    .map_err(ImageError::io(&dest))?;
                io::copy(&mut entry, &mut file).map_err(layer_error)?;
                // Through the open file: no path lookup that a symlink could redirect.
                file.set_permissions(Permissions::from_mode(mode)).map_err(ImageError::io(&dest))?;
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| refuse("symlink without a target"))?;
                remove(&dest)?;
                // The target is stored as-is: links are never followed while unpacking.
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &dest).map_err(ImageError::io(&dest))?;
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().ok_or_else(|| refuse("hard link without a target"))?;
                let target_rel = relative_path(&target)
                    .map_err(|r| refuse(&format!("hard link target: {r}")))?
                    .ok_or_else(|| refuse("hard link to the root"))?;
                let target_parent = resolve_parent(state.rootfs, &target_rel, false)
                    .map_err(|r| refuse(&format!("hard link target: {r}")))?;
                let source = target_parent.join(target_rel.file_name().unwrap_or_default());
                match fs::symlink_metadata(&source) {
                    Ok(meta) if meta.is_file() => {}
                    _ => return Err(refuse("hard link target is not a regular file in the rootfs")),
                }
                remove(&dest)?;
                fs::hard_link(&source, &dest).map_err(ImageError::io(&dest))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                state.report.skipped_devices.push(rel.clone());
                continue;
            }
            other => return Err(refuse(&format!("unsupported entry type {other:?}"))),
        }
        created.insert(rel);
    }
    Ok(())
}

/// A tar path as a relative path of normal components; `None` for the root itself.
fn relative_path(raw: &[u8]) -> Result<Option<PathBuf>, &'static str> {
    let mut path = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::Normal(c) => path.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err("`..` component"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    Ok((!path.as_os_str().is_empty()).then_some(path))
}

/// The directory in `rootfs` holding `rel`, checked to go through real directories only, and
/// created (0755) where missing if `create`.
fn resolve_parent(rootfs: &Path, rel: &Path, create: bool) -> Result<PathBuf, String> {
    let mut dir = rootfs.to_path_buf();
    let Some(parent) = rel.parent() else { return Ok(dir) };
    for component in parent.components() {
        dir.push(component);
        match fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(format!("path goes through the symlink {:?}", strip(rootfs, &dir)));
            }
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(format!("{:?} is not a directory", strip(rootfs, &dir))),
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                fs::create_dir(&dir).map_err(|e| format!("{:?}: {e}", strip(rootfs, &dir)))?;
            }
            Err(e) => return Err(format!("{:?}: {e}", strip(rootfs, &dir))),
        }
    }
    Ok(dir)
}

fn strip<'a>(rootfs: &Path, path: &'a Path) -> &'a Path {
    path.strip_prefix(rootfs).unwrap_or(path)
}

/// Removes whatever is at `path` (without following a symlink there); nothing there is fine.
fn remove(path: &Path) -> Result<(), ImageError> {
    let result = match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(ImageError::io(path))
}
