//! Writing into the image cache so that readers only ever see whole entries: a layout is written
//! into a temporary directory, synced, then renamed into place; files are synced as written.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use oci_spec::image::{Descriptor, ImageIndexBuilder, MediaType};

use crate::build::{canonical_json, spec_error};
use crate::{ImageError, read_layout};

/// Writes the `oci-layout` file and an `index.json` naming the one `manifest` of the layout at
/// `dir`, synced. `index.json` goes last: a layout without one is never mistaken for whole.
pub(crate) fn write_index(dir: &Path, manifest: Descriptor) -> Result<(), ImageError> {
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest])
        .build()
        .map_err(spec_error)?;
    write_synced(&dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    write_synced(&dir.join("index.json"), &canonical_json(&index)?)
}

/// Writes `bytes` to a new file at `path` and syncs it.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let mut file = File::create(path).map_err(ImageError::io(path))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(ImageError::io(path))
}

/// Syncs a directory, making the entries created or renamed in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(ImageError::io(dir))
}

/// A directory in the cache being written; removed when dropped unless published.
pub(crate) struct TempDir {
    /// Where it is.
    pub(crate) path: PathBuf,
    published: bool,
}

impl TempDir {
    /// A new directory in `cache_dir`, named after `kind` (e.g. `import`) and the entry's `hex`.
    pub(crate) fn new(cache_dir: &Path, kind: &str, hex: &str) -> Result<Self, ImageError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // The process id keeps concurrent importers apart, the counter threads of one process;
        // a leftover of a crashed process with the same id is stepped over.
        let mut attempt = 0;
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = cache_dir.join(format!(".{kind}-{}-{}-{n}", &hex[..16], std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Self { path, published: false }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
                Err(e) => return Err(ImageError::Io { path, source: e }),
            }
        }
    }

    /// Renames the directory to `target`. If `target` is there already it is either another
    /// import or pull of the same image that finished first (kept) or a layout that does not
    /// read (replaced).
    pub(crate) fn publish(&mut self, target: &Path) -> Result<(), ImageError> {
        if fs::rename(&self.path, target).is_err() {
            if read_layout(target).is_ok() {
                return Ok(());
            }
            match fs::symlink_metadata(target) {
                Ok(meta) if meta.is_dir() => fs::remove_dir_all(target),
                Ok(_) => fs::remove_file(target),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            }
            .map_err(ImageError::io(target))?;
            fs::rename(&self.path, target).map_err(ImageError::io(target))?;
        }
        self.published = true;
        target.parent().map_or(Ok(()), sync_dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.published {
            // Best effort: a leftover is only wasted space, never mistaken for a layout.
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}
