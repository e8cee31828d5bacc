//! Applying an image's layers to a root filesystem directory, treating the layers as hostile.
//!
//! Rules, checked for every entry:
//! - paths have no `..` component; a leading `/` or `./` is harmless and dropped (`/etc/x` is
//!   `etc/x` in the rootfs: umoci and some Debian tools write absolute names), the same for hard
//!   link targets;
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
//! Symlink targets are stored as they are and never followed while unpacking; inside the
//! container they resolve against its own root, so an absolute target does not escape.
//!
//! [`check_layers`] applies the same rules to an image without writing anything (an in-memory tree
//! stands for the rootfs), so a publisher learns before paying that a provider would refuse it.
//!
//! Each layer blob is hashed once before anything is written (so a tampered blob is refused
//! before touching the rootfs) and again while it streams, together with its uncompressed
//! `diff_id`, so a blob changed in between is still caught. On any error the rootfs is partly
//! written and must be discarded. Extended attributes are not kept; modes are. Owners are kept
//! only by [`unpack_shifted`], moved into a range of host ids (for a container in a user
//! namespace); [`unpack`] leaves everything owned by the unpacking process.

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

/// Checks that [`unpack`] would apply `image`'s layers, without writing anything: the same rules
/// against an in-memory tree. Blob digests are not checked again (reading the image did).
pub fn check_layers(image: &Image) -> Result<UnpackReport, ImageError> {
    let mut state = State { tree: Memory::default(), report: UnpackReport::default(), dir_modes: Vec::new() };
    for layer in &image.layers {
        let stored = layer.blob.open()?;
        if layer.gzip {
            extract(&mut state, layer, GzDecoder::new(stored))?;
        } else {
            extract(&mut state, layer, stored)?;
        }
    }
    Ok(state.report)
}

/// Where [`unpack_shifted`] moves the image's owners: image id `i` (a uid or a gid) becomes host
/// id `host_base + i`, for the `count` ids a container's user namespace maps (`0 host_base
/// count` in its `uid_map` and `gid_map`), so each file has, inside the container, the owner
/// the image gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdShift {
    host_base: u32,
    count: u32,
}

impl IdShift {
    /// The id the kernel shows for an unmapped owner (`overflowuid`, "nobody"): an image id
    /// outside the range becomes this one, as an id-mapped mount would show it.
    pub const OVERFLOW_ID: u32 = 65534;

    /// The shift to `count` host ids from `host_base`; `None` if `count` is 0 or the range
    /// passes the largest valid id (`u32::MAX` is `-1`, "no id").
    pub fn new(host_base: u32, count: u32) -> Option<Self> {
        let last = host_base.checked_add(count.checked_sub(1)?)?;
        (last < u32::MAX).then_some(Self { host_base, count })
    }

    /// The first host id: what the container's root is on the host.
    pub fn host_base(&self) -> u32 {
        self.host_base
    }

    /// How many ids are mapped.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The host id for image id `id`: shifted if in range, else the shifted overflow id (or the
    /// range's last id, for a range too small to hold it).
    pub fn host_id(&self, id: u64) -> u32 {
        let inside = match u32::try_from(id) {
            Ok(id) if id < self.count => id,
            _ => Self::OVERFLOW_ID.min(self.count - 1),
        };
        self.host_base + inside
    }
}

/// Applies `image`'s layers, lowest first, to `rootfs` (created if missing). Everything is
/// owned by the calling process.
pub fn unpack(image: &Image, rootfs: &Path) -> Result<UnpackReport, ImageError> {
    unpack_into(image, rootfs, None)
}

/// Like [`unpack`], but every entry gets the owner (uid and gid) its layer gives it, moved by
/// `ids` (see [`IdShift`]); the rootfs itself, and parent directories a layer does not list, are
/// owned by the shifted root (`ids.host_base()`). Each file is chowned as it is created, before
/// its mode is set (a chown clears setuid and setgid bits), so no walk over the tree is needed.
/// Changing owners needs `CAP_CHOWN`.
pub fn unpack_shifted(image: &Image, rootfs: &Path, ids: IdShift) -> Result<UnpackReport, ImageError> {
    unpack_into(image, rootfs, Some(ids))
}

fn unpack_into(image: &Image, rootfs: &Path, ids: Option<IdShift>) -> Result<UnpackReport, ImageError> {
    fs::create_dir_all(rootfs).map_err(ImageError::io(rootfs))?;
    if let Some(ids) = ids {
        let root = ids.host_id(0);
        std::os::unix::fs::lchown(rootfs, Some(root), Some(root)).map_err(ImageError::io(rootfs))?;
    }
    let mut state = State { tree: Disk { rootfs, ids }, report: UnpackReport::default(), dir_modes: Vec::new() };
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
        let (Ok(parent), Some(name)) = (resolve_parent(rootfs, &rel, None), rel.file_name()) else { continue };
        let path = parent.join(name);
        // Skip anything a later layer replaced or removed; never chmod through a symlink.
        if fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_dir()) {
            fs::set_permissions(&path, Permissions::from_mode(mode)).map_err(ImageError::io(&path))?;
        }
    }
    Ok(state.report)
}

struct State<T> {
    tree: T,
    report: UnpackReport,
    /// Directory entries and their modes, in the order seen.
    dir_modes: Vec<(PathBuf, u32)>,
}

fn layer_error(layer: &Layer) -> impl Fn(io::Error) -> ImageError + Copy + '_ {
    |source| ImageError::Layer { layer: layer.blob.digest.clone(), source }
}

fn apply_layer(state: &mut State<Disk<'_>>, layer: &Layer) -> Result<(), ImageError> {
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

/// What is at a path of the tree being built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

/// The rootfs being built: on disk for [`unpack`], in memory for [`check_layers`]. Paths are relative
/// to the rootfs and made of normal components only.
trait Tree {
    /// Checks that the parents of `rel` are real directories (no symlink, no file), creating
    /// missing ones (0755) if `create`.
    fn parents(&mut self, rel: &Path, create: bool) -> Result<(), String>;
    /// What is at `rel`, not following a symlink there.
    fn kind(&self, rel: &Path) -> Option<Kind>;
    /// The entries of directory `rel`, as relative paths.
    fn children(&self, rel: &Path) -> Result<Vec<PathBuf>, ImageError>;
    /// Removes whatever is at `rel` (a directory with its content); nothing there is fine.
    fn remove(&mut self, rel: &Path) -> Result<(), ImageError>;
    fn create_dir(&mut self, rel: &Path) -> Result<(), ImageError>;
    /// Creates a new file (never through an existing entry) from `data`, owned by `owner` (image
    /// uid and gid) where owners are kept.
    fn create_file(
        &mut self,
        rel: &Path,
        data: &mut dyn Read,
        mode: u32,
        owner: Owner,
        layer: &Layer,
    ) -> Result<(), ImageError>;
    fn symlink(&mut self, rel: &Path, target: &[u8]) -> Result<(), ImageError>;
    /// Gives the directory or symlink at `rel` the owner `owner` (image uid and gid), where owners
    /// are kept; never follows a symlink.
    fn set_owner(&mut self, rel: &Path, owner: Owner) -> Result<(), ImageError>;
    fn hard_link(&mut self, rel: &Path, source: &Path) -> Result<(), ImageError>;
}

/// An entry's owner as its layer gives it: (uid, gid) in the image.
type Owner = (u64, u64);

/// The rootfs on disk.
struct Disk<'a> {
    rootfs: &'a Path,
    /// Where owners go, if they are kept.
    ids: Option<IdShift>,
}

impl Disk<'_> {
    /// The host (uid, gid) for `owner`, if owners are kept.
    fn host_owner(&self, owner: Owner) -> Option<(u32, u32)> {
        self.ids.map(|ids| (ids.host_id(owner.0), ids.host_id(owner.1)))
    }
}

impl Tree for Disk<'_> {
    fn parents(&mut self, rel: &Path, create: bool) -> Result<(), String> {
        let made_dirs_owner = self.host_owner((0, 0));
        let create = create.then_some(made_dirs_owner);
        resolve_parent(self.rootfs, rel, create).map(|_| ())
    }

    fn kind(&self, rel: &Path) -> Option<Kind> {
        let meta = fs::symlink_metadata(self.rootfs.join(rel)).ok()?;
        Some(if meta.file_type().is_symlink() {
            Kind::Symlink
        } else if meta.is_dir() {
            Kind::Dir
        } else if meta.is_file() {
            Kind::File
        } else {
            Kind::Other
        })
    }

    fn children(&self, rel: &Path) -> Result<Vec<PathBuf>, ImageError> {
        let dir = self.rootfs.join(rel);
        fs::read_dir(&dir)
            .map_err(ImageError::io(&dir))?
            .map(|child| child.map(|c| rel.join(c.file_name())).map_err(ImageError::io(&dir)))
            .collect()
    }

    fn remove(&mut self, rel: &Path) -> Result<(), ImageError> {
        remove(&self.rootfs.join(rel))
    }

    fn create_dir(&mut self, rel: &Path) -> Result<(), ImageError> {
        let dest = self.rootfs.join(rel);
        fs::create_dir(&dest).map_err(ImageError::io(&dest))
    }

    fn create_file(
        &mut self,
        rel: &Path,
        data: &mut dyn Read,
        mode: u32,
        owner: Owner,
        layer: &Layer,
    ) -> Result<(), ImageError> {
        let dest = self.rootfs.join(rel);
        let mut file =
            OpenOptions::new().write(true).create_new(true).mode(0o600).open(&dest).map_err(ImageError::io(&dest))?;
        io::copy(data, &mut file).map_err(layer_error(layer))?;
        // Through the open file: no path lookup that a symlink could redirect. The owner before
        // the mode: a chown clears the setuid and setgid bits.
        if let Some((uid, gid)) = self.host_owner(owner) {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(ImageError::io(&dest))?;
        }
        file.set_permissions(Permissions::from_mode(mode)).map_err(ImageError::io(&dest))
    }

    fn symlink(&mut self, rel: &Path, target: &[u8]) -> Result<(), ImageError> {
        let dest = self.rootfs.join(rel);
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &dest).map_err(ImageError::io(&dest))
    }

    fn set_owner(&mut self, rel: &Path, owner: Owner) -> Result<(), ImageError> {
        let Some((uid, gid)) = self.host_owner(owner) else { return Ok(()) };
        let dest = self.rootfs.join(rel);
        std::os::unix::fs::lchown(&dest, Some(uid), Some(gid)).map_err(ImageError::io(&dest))
    }

    fn hard_link(&mut self, rel: &Path, source: &Path) -> Result<(), ImageError> {
        let dest = self.rootfs.join(rel);
        fs::hard_link(self.rootfs.join(source), &dest).map_err(ImageError::io(&dest))
    }
}

/// A rootfs of names only, for [`check_layers`].
#[derive(Default)]
struct Memory {
    entries: std::collections::BTreeMap<PathBuf, Kind>,
}

impl Tree for Memory {
    fn parents(&mut self, rel: &Path, create: bool) -> Result<(), String> {
        let mut dir = PathBuf::new();
        let Some(parent) = rel.parent() else { return Ok(()) };
        for component in parent.components() {
            dir.push(component);
            match self.entries.get(&dir) {
                Some(Kind::Symlink) => return Err(format!("path goes through the symlink {dir:?}")),
                Some(Kind::Dir) => {}
                Some(_) => return Err(format!("{dir:?} is not a directory")),
                None if create => {
                    self.entries.insert(dir.clone(), Kind::Dir);
                }
                None => return Err(format!("{dir:?}: {}", io::Error::from(io::ErrorKind::NotFound))),
            }
        }
        Ok(())
    }

    fn kind(&self, rel: &Path) -> Option<Kind> {
        self.entries.get(rel).copied()
    }

    fn children(&self, rel: &Path) -> Result<Vec<PathBuf>, ImageError> {
        Ok(self.entries.keys().filter(|p| p.parent() == Some(rel)).cloned().collect())
    }

    fn remove(&mut self, rel: &Path) -> Result<(), ImageError> {
        self.entries.retain(|p, _| !p.starts_with(rel));
        Ok(())
    }

    fn create_dir(&mut self, rel: &Path) -> Result<(), ImageError> {
        self.entries.insert(rel.to_path_buf(), Kind::Dir);
        Ok(())
    }

    fn create_file(&mut self, rel: &Path, _: &mut dyn Read, _: u32, _: Owner, _: &Layer) -> Result<(), ImageError> {
        // The tar reader skips the unread data.
        self.entries.insert(rel.to_path_buf(), Kind::File);
        Ok(())
    }

    fn symlink(&mut self, rel: &Path, _: &[u8]) -> Result<(), ImageError> {
        self.entries.insert(rel.to_path_buf(), Kind::Symlink);
        Ok(())
    }

    fn set_owner(&mut self, _: &Path, _: Owner) -> Result<(), ImageError> {
        Ok(())
    }

    fn hard_link(&mut self, rel: &Path, _: &Path) -> Result<(), ImageError> {
        self.entries.insert(rel.to_path_buf(), Kind::File);
        Ok(())
    }
}

fn extract<T: Tree>(state: &mut State<T>, layer: &Layer, reader: impl Read) -> Result<(), ImageError> {
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
        if entry.header().entry_type() == EntryType::XGlobalHeader {
            // A pax global header (git archive writes one) describes the archive, not a file.
            continue;
        }
        let Some(rel) = relative_path(&entry.path_bytes()).map_err(&refuse)? else {
            // The root itself ("./" or "/"): its mode and owner are the runtime's business.
            continue;
        };
        let Some(name) = rel.file_name().map(OsStr::to_os_string) else { continue };
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        state.tree.parents(&rel, true).map_err(|r| refuse(&r))?;

        if name.as_bytes() == OPAQUE_WHITEOUT.as_bytes() {
            for child in state.tree.children(&parent_rel)? {
                if !created.contains(&child) {
                    state.tree.remove(&child)?;
                }
            }
            continue;
        }
        if let Some(target) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if target.is_empty() || target == b"." || target == b".." {
                return Err(refuse("whiteout of `.` or `..`"));
            }
            state.tree.remove(&parent_rel.join(OsStr::from_bytes(target)))?;
            continue;
        }

        let mode = entry.header().mode().map_err(layer_error)? & 0o7777;
        let owner = owner(&mut entry).map_err(layer_error)?;
        match entry.header().entry_type() {
            EntryType::Directory => {
                if state.tree.kind(&rel) != Some(Kind::Dir) {
                    state.tree.remove(&rel)?;
                    state.tree.create_dir(&rel)?;
                }
                // A directory listed again (by a later layer) takes its last owner, as its mode.
                state.tree.set_owner(&rel, owner)?;
                state.dir_modes.push((rel.clone(), mode));
            }
            EntryType::Regular | EntryType::Continuous => {
                state.tree.remove(&rel)?;
                state.tree.create_file(&rel, &mut entry, mode, owner, layer)?;
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().ok_or_else(|| refuse("symlink without a target"))?;
                state.tree.remove(&rel)?;
                // The target is stored as-is: links are never followed while unpacking.
                state.tree.symlink(&rel, &target)?;
                state.tree.set_owner(&rel, owner)?;
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().ok_or_else(|| refuse("hard link without a target"))?;
                let target_rel = relative_path(&target)
                    .map_err(|r| refuse(&format!("hard link target: {r}")))?
                    .ok_or_else(|| refuse("hard link to the root"))?;
                state.tree.parents(&target_rel, false).map_err(|r| refuse(&format!("hard link target: {r}")))?;
                if state.tree.kind(&target_rel) != Some(Kind::File) {
                    return Err(refuse("hard link target is not a regular file in the rootfs"));
                }
                state.tree.remove(&rel)?;
                state.tree.hard_link(&rel, &target_rel)?;
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

/// The entry's (uid, gid): its PAX `uid` and `gid` records where it has them (ids too large
/// for the header's fields), else the header's; a field that is no number (some writers leave
/// it blank) is root's, 0.
fn owner<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Owner> {
    let mut owner = (entry.header().uid().unwrap_or(0), entry.header().gid().unwrap_or(0));
    if let Some(extensions) = entry.pax_extensions()? {
        for extension in extensions {
            let extension = extension?;
            let value = || extension.value().ok().and_then(|v| v.parse::<u64>().ok());
            match extension.key() {
                Ok("uid") => owner.0 = value().unwrap_or(owner.0),
                Ok("gid") => owner.1 = value().unwrap_or(owner.1),
                _ => {}
            }
        }
    }
    Ok(owner)
}

/// A tar path as a relative path of normal components; `None` for the root itself.
fn relative_path(raw: &[u8]) -> Result<Option<PathBuf>, &'static str> {
    let mut path = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::Normal(c) => path.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err("`..` component"),
            // `/etc/x` names `etc/x` in the rootfs, as `./etc/x` does.
            Component::RootDir => {}
            Component::Prefix(_) => return Err("absolute path"),
        }
    }
    Ok((!path.as_os_str().is_empty()).then_some(path))
}

/// The directory in `rootfs` holding `rel`, checked to go through real directories only, and
/// created (0755) where missing if `create` is given: `Some(Some((uid, gid)))` chowns what it
/// creates, `Some(None)` leaves it to the calling process.
fn resolve_parent(rootfs: &Path, rel: &Path, create: Option<Option<(u32, u32)>>) -> Result<PathBuf, String> {
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
            Err(e) if e.kind() == io::ErrorKind::NotFound && create.is_some() => {
                fs::create_dir(&dir).map_err(|e| format!("{:?}: {e}", strip(rootfs, &dir)))?;
                if let Some(Some((uid, gid))) = create {
                    std::os::unix::fs::lchown(&dir, Some(uid), Some(gid))
                        .map_err(|e| format!("{:?}: {e}", strip(rootfs, &dir)))?;
                }
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
