//! Content-addressed storage of the encrypted blobs publishers upload over `/tpod/blob/1`: image
//! layers and configs, encrypted on the publisher's machine, kept by CID (CIDv1, raw codec,
//! sha2-256 of the ciphertext; see `tpod_crypto::ContentId`).
//!
//! ```text
//! <dir>/blobs/<cid>     complete blobs, verified against their CID
//! <dir>/partial/<cid>   uploads in progress; their length is where an upload resumes
//! ```
//!
//! CIDs come from the network, so they are parsed strictly ([`ContentId::parse`]) before any path
//! is built from them; their text is `[a-z2-7]` only. An upload arrives in chunks
//! ([`BlobStore::write_chunk`]), each with the sha256 of the blob up to its end, checked before a
//! byte of it is written, so a damaged chunk is refused alone and the partial file only ever holds
//! chunks that arrived intact, in order. A blob becomes visible under `blobs/` only once its whole content
//! hashes to its CID, by an atomic rename; on a mismatch the partial is deleted.
//!
//! The store keeps the sha256 state of each partial in memory: one running hash checks every chunk
//! and, at the end, the whole blob, so each byte is hashed once and completing a large blob does
//! not read it again. A partial found after a restart is hashed from its file when its upload goes
//! on. The methods do blocking file I/O: call them from
//! `tokio::task::spawn_blocking` in async code, as [`offer`] and [`chunk`] (the daemon's protocol
//! handler) do.

use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::{self, ErrorKind, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use sha2::{Digest as _, Sha256};
use tpod_crypto::{CidError, ContentId};
use tpod_wire::pb;

/// Largest blob accepted by default: 4 GiB.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 4 << 30;
/// Default cap on the bytes of all blobs, complete and partial: 64 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 64 << 30;

/// What the store holds of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobState {
    /// The blob is complete and verified.
    pub complete: bool,
    /// Contiguous bytes held: the blob's size when complete, else where an upload resumes.
    pub received: u64,
}

impl From<BlobState> for pb::BlobState {
    fn from(state: BlobState) -> Self {
        Self { complete: state.complete, received: state.received }
    }
}

/// Why a blob operation failed. [`BlobError::code`] gives the wire error code.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The CID is not the base32 text of a CIDv1 `raw` sha2-256 id.
    #[error(transparent)]
    BadCid(#[from] CidError),
    /// A chunk does not continue the upload where the store's copy ends.
    #[error("{cid}: chunk at offset {offset}, but {received} bytes are held; resume from there")]
    WrongOffset {
        /// The blob.
        cid: ContentId,
        /// Offset of the chunk.
        offset: u64,
        /// Bytes held.
        received: u64,
    },
    /// An upload declares another total size than the upload in progress.
    #[error("{cid}: total size {got} differs from the {expected} bytes declared earlier")]
    SizeChanged {
        /// The blob.
        cid: ContentId,
        /// Size declared first.
        expected: u64,
        /// Size declared now.
        got: u64,
    },
    /// The store holds more of the blob than the declared size, or holds it complete with
    /// another size.
    #[error("{cid}: {held} bytes are held, which does not fit a total size of {total_size}")]
    SizeConflict {
        /// The blob.
        cid: ContentId,
        /// Bytes held.
        held: u64,
        /// Declared size.
        total_size: u64,
    },
    /// A chunk's data reaches past the declared total size.
    #[error("{cid}: {len} bytes at offset {offset} reach past the total size {total_size}")]
    PastEnd {
        /// The blob.
        cid: ContentId,
        /// Offset of the chunk.
        offset: u64,
        /// Bytes in the chunk.
        len: u64,
        /// Declared size.
        total_size: u64,
    },
    /// The blob is larger than the store accepts.
    #[error("{cid}: {size} bytes exceeds the maximum blob size of {max} bytes")]
    TooLarge {
        /// The blob.
        cid: ContentId,
        /// Declared size.
        size: u64,
        /// Maximum.
        max: u64,
    },
    /// Storing the blob would exceed the store's quota.
    #[error("{cid}: storing {size} bytes would exceed the quota of {quota} bytes ({used} in use)")]
    QuotaExceeded {
        /// The blob.
        cid: ContentId,
        /// Declared size.
        size: u64,
        /// Bytes in use or reserved by other blobs.
        used: u64,
        /// Quota.
        quota: u64,
    },
    /// The blob up to the end of a chunk does not hash to the sha256 sent with the chunk: the chunk
    /// is damaged (the bytes before it were checked already). Nothing of it was written.
    #[error("chunk at offset {offset} does not match its sha256")]
    ChunkMismatch {
        /// Offset of the chunk.
        offset: u64,
    },
    /// The complete content does not hash to the CID; the partial upload was deleted.
    #[error("content does not match its CID {expected}: got {actual}")]
    CidMismatch {
        /// The CID the blob was uploaded as.
        expected: ContentId,
        /// The CID of what was received.
        actual: ContentId,
    },
    /// A file operation failed.
    #[error("blob store {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

impl BlobError {
    /// HTTP-like code for the wire `Error` (see `blob.proto`).
    pub fn code(&self) -> u32 {
        use tpod_wire::codes;
        match self {
            Self::BadCid(_) => codes::BAD_REQUEST,
            Self::WrongOffset { .. } | Self::SizeChanged { .. } | Self::SizeConflict { .. } | Self::PastEnd { .. } => {
                codes::CONFLICT
            }
            Self::TooLarge { .. } => codes::TOO_LARGE,
            Self::ChunkMismatch { .. } | Self::CidMismatch { .. } => codes::UNPROCESSABLE,
            Self::QuotaExceeded { .. } => codes::INSUFFICIENT_STORAGE,
            Self::Io { .. } => codes::INTERNAL,
        }
    }
}

impl From<&BlobError> for pb::Error {
    fn from(error: &BlobError) -> Self {
        // File paths are the provider's business.
        let message = match error {
            BlobError::Io { .. } => "the provider could not store the blob".to_owned(),
            other => other.to_string(),
        };
        Self { code: error.code(), message }
    }
}

/// Bytes counted against the quota: complete blobs (and stray files) plus, per partial upload,
/// its declared size (or its length on disk, for partials found at start whose declared size is
/// not known yet).
#[derive(Debug, Default)]
struct Usage {
    complete: u64,
    partial: HashMap<ContentId, u64>,
}

impl Usage {
    fn total(&self) -> u64 {
        self.partial.values().fold(self.complete, |sum, n| sum.saturating_add(*n))
    }
}

/// The sha256 state of a partial upload's first `len` bytes.
#[derive(Debug, Clone)]
struct Running {
    len: u64,
    hasher: Sha256,
}

/// A directory of content-addressed blobs; see the module documentation. Clones share the
/// quota accounting, running hashes and locks, so one can be moved into a blocking task.
#[derive(Debug, Clone)]
pub struct BlobStore {
    dir: PathBuf,
    max_blob_bytes: u64,
    quota_bytes: u64,
    shared: Arc<Shared>,
}

/// State shared between clones of a store.
#[derive(Debug, Default)]
struct Shared {
    usage: Mutex<Usage>,
    /// One lock per blob being written, so chunks of one blob are stored one at a time while
    /// chunks of different blobs proceed in parallel.
    locks: Mutex<HashMap<ContentId, Arc<Mutex<()>>>>,
    /// Running hashes of partial uploads, updated under the blob's lock.
    running: Mutex<HashMap<ContentId, Running>>,
}

/// Locks a mutex, ignoring poisoning: the data guarded here stays consistent on panic (at worst
/// a usage figure is stale, or a running hash is dropped and the file hashed instead), and
/// refusing every later upload would be worse.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

const COMPLETE_DIR: &str = "blobs";
const PARTIAL_DIR: &str = "partial";

impl BlobStore {
    /// Opens (creating it if needed) the store in `dir`, with the default limits.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, BlobError> {
        Self::open_with(dir, DEFAULT_MAX_BLOB_BYTES, DEFAULT_QUOTA_BYTES)
    }

    /// Opens the store with explicit limits: the largest blob, and the bytes of all blobs.
    pub fn open_with(dir: impl Into<PathBuf>, max_blob_bytes: u64, quota_bytes: u64) -> Result<Self, BlobError> {
        let dir = dir.into();
        let mut usage = Usage::default();
        for sub in [COMPLETE_DIR, PARTIAL_DIR] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(io_error(&path))?;
            for entry in fs::read_dir(&path).map_err(io_error(&path))? {
                let entry = entry.map_err(io_error(&path))?;
                let len = entry.metadata().map_err(io_error(&entry.path()))?.len();
                let cid = entry.file_name().to_str().and_then(|name| ContentId::parse(name).ok());
                match cid {
                    Some(cid) if sub == PARTIAL_DIR => {
                        usage.partial.insert(cid, len);
                    }
                    Some(_) => usage.complete = usage.complete.saturating_add(len),
                    // Not ours to delete, but it takes space all the same.
                    None => {
                        tracing::warn!(path = %entry.path().display(), "blob store: file not named by a CID");
                        usage.complete = usage.complete.saturating_add(len);
                    }
                }
            }
        }
        tracing::debug!(dir = %dir.display(), used = usage.total(), "blob store opened");
        let shared = Arc::new(Shared { usage: Mutex::new(usage), ..Default::default() });
        Ok(Self { dir, max_blob_bytes, quota_bytes, shared })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the store holds of `cid`.
    pub fn state(&self, cid: &ContentId) -> Result<BlobState, BlobError> {
        if let Some(len) = file_len(&self.complete_path(cid))? {
            return Ok(BlobState { complete: true, received: len });
        }
        let received = file_len(&self.partial_path(cid))?.unwrap_or(0);
        Ok(BlobState { complete: false, received })
    }

    /// The file of a complete (verified) blob, if the store has it.
    pub fn path(&self, cid: &ContentId) -> Option<PathBuf> {
        let path = self.complete_path(cid);
        path.is_file().then_some(path)
    }

    /// Answers an offer of `cid` of `total_size` bytes: what the store holds, after checking
    /// that an upload of that size could be stored (size limit, quota, a size declared earlier).
    /// Reserves nothing: the first chunk does.
    pub fn offer(&self, cid: &ContentId, total_size: u64) -> Result<BlobState, BlobError> {
        let state = self.state(cid)?;
        if state.complete {
            if state.received != total_size {
                return Err(BlobError::SizeConflict { cid: *cid, held: state.received, total_size });
            }
            return Ok(state);
        }
        if state.received > total_size {
            return Err(BlobError::SizeConflict { cid: *cid, held: state.received, total_size });
        }
        self.check_limits(cid, state.received, total_size, &lock(&self.shared.usage))?;
        Ok(state)
    }

    /// Stores the chunk `data` at `offset` of the blob `cid` of `total_size` bytes, after checking
    /// that the blob's first `offset + data.len()` bytes hash to `prefix_sha256`; see the module
    /// documentation. When the chunk ends the blob, the whole blob is verified against its CID
    /// and moved into place. A chunk for a complete blob changes nothing and reports it complete,
    /// so a repeated last chunk is harmless.
    pub fn write_chunk(
        &self,
        cid: &ContentId,
        offset: u64,
        data: &[u8],
        prefix_sha256: &[u8],
        total_size: u64,
    ) -> Result<BlobState, BlobError> {
        self.locked(cid, || self.write_locked(cid, offset, data, prefix_sha256, total_size))
    }

    /// Runs `f` under the lock of blob `cid`.
    fn locked<T>(&self, cid: &ContentId, f: impl FnOnce() -> T) -> T {
        let entry = lock(&self.shared.locks).entry(*cid).or_default().clone();
        let result = {
            let _guard = lock(&entry);
            f()
        };
        // Forget the lock when no other writer holds or waits for it (the map and `entry` are
        // the only references left).
        let mut locks = lock(&self.shared.locks);
        if Arc::strong_count(&entry) == 2 {
            locks.remove(cid);
        }
        result
    }

    fn write_locked(
        &self,
        cid: &ContentId,
        offset: u64,
        data: &[u8],
        prefix_sha256: &[u8],
        total_size: u64,
    ) -> Result<BlobState, BlobError> {
        let state = self.state(cid)?;
        if state.complete {
            return Ok(state);
        }
        let len = data.len() as u64;
        if total_size > self.max_blob_bytes {
            return Err(BlobError::TooLarge { cid: *cid, size: total_size, max: self.max_blob_bytes });
        }
        if offset.checked_add(len).is_none_or(|end| end > total_size) {
            return Err(BlobError::PastEnd { cid: *cid, offset, len, total_size });
        }
        if offset != state.received {
            return Err(BlobError::WrongOffset { cid: *cid, offset, received: state.received });
        }
        let partial = self.partial_path(cid);
        // The running hash of the partial; after a restart it is rebuilt from the file once.
        let running = lock(&self.shared.running).remove(cid).filter(|running| running.len == offset);
        let (before, rebuilt) = match running {
            Some(running) => (running.hasher, false),
            None if offset == 0 => (Sha256::new(), false),
            None => (hash_file(&partial)?, true),
        };
        let after = before.clone().chain_update(data);
        if after.clone().finalize()[..] != *prefix_sha256 {
            if rebuilt {
                // The partial comes from before a restart: either it or the chunk is damaged, and
                // only the publisher's copy can be trusted. Start the upload over.
                fs::remove_file(&partial).map_err(io_error(&partial))?;
                lock(&self.shared.usage).partial.remove(cid);
                tracing::warn!(%cid, offset, "a partial upload does not continue into its next chunk, discarded");
            } else {
                lock(&self.shared.running).insert(*cid, Running { len: offset, hasher: before });
            }
            return Err(BlobError::ChunkMismatch { offset });
        }
        self.reserve(cid, state.received, total_size)?;

        let mut file = OpenOptions::new().create(true).append(true).open(&partial).map_err(io_error(&partial))?;
        if let Err(source) = file.write_all(data) {
            // Keep the partial a prefix of whole, verified chunks.
            let _ = file.set_len(offset);
            return Err(BlobError::Io { path: partial, source });
        }
        let received = offset + len;
        if received < total_size {
            lock(&self.shared.running).insert(*cid, Running { len: received, hasher: after });
            return Ok(BlobState { complete: false, received });
        }
        file.sync_all().map_err(io_error(&partial))?;
        drop(file);
        self.complete(cid, &partial, total_size, after)
    }

    /// Deletes the partial uploads no chunk has reached for `max_idle`: a publisher that gave up
    /// must not hold quota forever. Returns the CIDs removed. An upload that comes back later
    /// starts over.
    pub fn sweep_partials(&self, max_idle: Duration) -> Result<Vec<ContentId>, BlobError> {
        let dir = self.dir.join(PARTIAL_DIR);
        let now = SystemTime::now();
        let mut removed = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let Some(cid) = entry.file_name().to_str().and_then(|name| ContentId::parse(name).ok()) else { continue };
            // Under the blob's lock, so a chunk cannot land between the age check and the removal.
            let swept = self.locked(&cid, || {
                let path = entry.path();
                let modified = match fs::metadata(&path).and_then(|m| m.modified()) {
                    Ok(modified) => modified,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
                    Err(source) => return Err(BlobError::Io { path, source }),
                };
                if now.duration_since(modified).is_ok_and(|idle| idle >= max_idle) {
                    fs::remove_file(&path).map_err(io_error(&path))?;
                    lock(&self.shared.usage).partial.remove(&cid);
                    lock(&self.shared.running).remove(&cid);
                    return Ok(true);
                }
                Ok(false)
            })?;
            if swept {
                tracing::info!(%cid, "abandoned partial upload removed");
                removed.push(cid);
            }
        }
        Ok(removed)
    }

    /// Refuses a blob over the size limit, one declared with another size than before, or one
    /// that would not fit in the quota next to the others.
    fn check_limits(&self, cid: &ContentId, received: u64, total_size: u64, usage: &Usage) -> Result<(), BlobError> {
        if total_size > self.max_blob_bytes {
            return Err(BlobError::TooLarge { cid: *cid, size: total_size, max: self.max_blob_bytes });
        }
        match usage.partial.get(cid).copied() {
            // After a restart only the length on disk is known: the first chunk fixes the size.
            Some(expected) if expected != total_size && !(received > 0 && expected == received) => {
                return Err(BlobError::SizeChanged { cid: *cid, expected, got: total_size });
            }
            _ => {}
        }
        let others = usage.total() - usage.partial.get(cid).copied().unwrap_or(0);
        if others.saturating_add(total_size) > self.quota_bytes {
            return Err(BlobError::QuotaExceeded {
                cid: *cid,
                size: total_size,
                used: others,
                quota: self.quota_bytes,
            });
        }
        Ok(())
    }

    /// Counts `total_size` against the quota for this upload, refusing if it does not fit.
    fn reserve(&self, cid: &ContentId, received: u64, total_size: u64) -> Result<(), BlobError> {
        let mut usage = lock(&self.shared.usage);
        self.check_limits(cid, received, total_size, &usage)?;
        usage.partial.insert(*cid, total_size);
        Ok(())
    }

    /// Verifies a fully received partial by its running hash and moves it into place, or deletes
    /// it on mismatch.
    fn complete(&self, cid: &ContentId, partial: &Path, size: u64, hasher: Sha256) -> Result<BlobState, BlobError> {
        let actual = ContentId::from_sha256(hasher.finalize().into());
        let mut usage = lock(&self.shared.usage);
        usage.partial.remove(cid);
        if actual != *cid {
            fs::remove_file(partial).map_err(io_error(partial))?;
            tracing::warn!(%cid, %actual, "uploaded blob does not match its CID, discarded");
            return Err(BlobError::CidMismatch { expected: *cid, actual });
        }
        let target = self.complete_path(cid);
        fs::rename(partial, &target).map_err(io_error(&target))?;
        // Make the rename durable too.
        if let Some(parent) = target.parent() {
            File::open(parent).and_then(|d| d.sync_all()).map_err(io_error(parent))?;
        }
        usage.complete = usage.complete.saturating_add(size);
        tracing::debug!(%cid, size, "blob complete");
        Ok(BlobState { complete: true, received: size })
    }

    fn complete_path(&self, cid: &ContentId) -> PathBuf {
        self.dir.join(COMPLETE_DIR).join(cid.to_string())
    }

    fn partial_path(&self, cid: &ContentId) -> PathBuf {
        self.dir.join(PARTIAL_DIR).join(cid.to_string())
    }
}

/// How long a partial upload may go without a chunk before it is removed: a day, long enough for
/// a publisher to come back after a dropped connection or a night without network.
pub const PARTIAL_MAX_IDLE: Duration = Duration::from_secs(24 * 3600);

/// Removes abandoned partial uploads (see [`BlobStore::sweep_partials`]) now and then every
/// `every`, for as long as the task runs.
pub async fn sweep_partials_forever(store: BlobStore, max_idle: Duration, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.sweep_partials(max_idle)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(%e, "cannot sweep abandoned partial uploads"),
            Err(e) => tracing::warn!(%e, "the partial-upload sweep failed"),
        }
    }
}

/// Answers a `/tpod/blob/1` offer from `store` (the daemon's `Handler::blob_offer`): parses the
/// CID and runs [`BlobStore::offer`] on a blocking thread.
pub async fn offer(store: &BlobStore, offer: pb::BlobOffer) -> Result<pb::BlobState, pb::Error> {
    let store = store.clone();
    run_blocking(move || store.offer(&ContentId::parse(&offer.cid)?, offer.total_size)).await
}

/// Stores one chunk of an accepted upload (the daemon's `Handler::blob_chunk`): runs
/// [`BlobStore::write_chunk`] on a blocking thread (it may hash a whole blob).
pub async fn chunk(
    store: &BlobStore,
    cid: &str,
    total_size: u64,
    chunk: pb::BlobChunk,
) -> Result<pb::BlobState, pb::Error> {
    let store = store.clone();
    let cid = ContentId::parse(cid).map_err(|e| pb::Error::from(&BlobError::from(e)))?;
    run_blocking(move || store.write_chunk(&cid, chunk.offset, &chunk.data, &chunk.prefix_sha256, total_size)).await
}

async fn run_blocking(
    work: impl FnOnce() -> Result<BlobState, BlobError> + Send + 'static,
) -> Result<pb::BlobState, pb::Error> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(state)) => Ok(state.into()),
        Ok(Err(error)) => {
            if error.code() == tpod_wire::codes::INTERNAL {
                tracing::error!(%error, "blob store failed");
            } else {
                tracing::debug!(%error, "blob upload refused");
            }
            Err((&error).into())
        }
        Err(error) => {
            tracing::error!(%error, "blob task failed");
            Err(pb::Error { code: tpod_wire::codes::INTERNAL, message: "internal error".into() })
        }
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> BlobError + '_ {
    move |source| BlobError::Io { path: path.to_owned(), source }
}

/// The length of a file, or None if it does not exist.
fn file_len(path: &Path) -> Result<Option<u64>, BlobError> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(meta.len())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BlobError::Io { path: path.to_owned(), source }),
    }
}

/// The sha256 state of a file's content, read piece by piece so a multi-gigabyte blob never sits
/// in memory.
fn hash_file(path: &Path) -> Result<Sha256, BlobError> {
    let mut hasher = Sha256::new();
    File::open(path).and_then(|mut file| io::copy(&mut file, &mut hasher)).map_err(io_error(path))?;
    Ok(hasher)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn sha256(data: &[u8]) -> Vec<u8> {
        Sha256::digest(data).to_vec()
    }

    /// Writes the chunk at `range` of `blob`, offered as `cid` of `total` bytes, with the
    /// checksum of `blob` up to its end.
    fn put(
        store: &BlobStore,
        cid: &ContentId,
        blob: &[u8],
        range: std::ops::Range<usize>,
        total: u64,
    ) -> Result<BlobState, BlobError> {
        store.write_chunk(cid, range.start as u64, &blob[range.clone()], &sha256(&blob[..range.end]), total)
    }

    fn partial(dir: &tempfile::TempDir, cid: &ContentId) -> PathBuf {
        dir.path().join("partial").join(cid.to_string())
    }

    #[test]
    fn chunks_complete_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        assert_eq!(store.dir(), dir.path());
        let data = blob(10_000);
        let cid = ContentId::of(&data);
        assert_eq!(store.state(&cid).unwrap(), BlobState { complete: false, received: 0 });
        assert_eq!(store.offer(&cid, 10_000).unwrap(), BlobState { complete: false, received: 0 });
        assert_eq!(store.path(&cid), None);

        let state = put(&store, &cid, &data, 0..4000, 10_000).unwrap();
        assert_eq!(state, BlobState { complete: false, received: 4000 });
        assert_eq!(store.state(&cid).unwrap(), state);
        assert_eq!(store.offer(&cid, 10_000).unwrap(), state);
        assert!(partial(&dir, &cid).is_file());
        // The running hash follows the partial.
        assert_eq!(lock(&store.shared.running)[&cid].len, 4000);

        let state = put(&store, &cid, &data, 4000..data.len(), 10_000).unwrap();
        assert_eq!(state, BlobState { complete: true, received: 10_000 });
        let path = store.path(&cid).unwrap();
        assert_eq!(path, dir.path().join("blobs").join(cid.to_string()));
        assert_eq!(fs::read(path).unwrap(), data);
        assert!(!partial(&dir, &cid).exists());
        assert!(lock(&store.shared.running).is_empty());
        assert_eq!(store.offer(&cid, 10_000).unwrap(), state);

        // Repeating a chunk of a complete blob is harmless.
        assert_eq!(put(&store, &cid, &data, 4000..data.len(), 10_000).unwrap(), state);
        // And an empty blob completes in one empty chunk.
        let empty = ContentId::of(&[]);
        assert_eq!(put(&store, &empty, &[], 0..0, 0).unwrap(), BlobState { complete: true, received: 0 });
    }

    #[test]
    fn abandoned_partials_are_swept_and_give_their_quota_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open_with(dir.path(), 10_000, 10_000).unwrap();
        let (old, fresh) = (blob(6000), blob(3000));
        let (old_cid, fresh_cid) = (ContentId::of(&old), ContentId::of(&fresh));
        put(&store, &old_cid, &old, 0..1000, 6000).unwrap();
        put(&store, &fresh_cid, &fresh, 0..1000, 3000).unwrap();
        let day_ago = SystemTime::now() - Duration::from_secs(24 * 3600);
        File::options().write(true).open(partial(&dir, &old_cid)).unwrap().set_modified(day_ago).unwrap();
        // The old upload's 6000 declared bytes hold the quota: a 5000-byte blob does not fit.
        let other = blob(5000);
        let other_cid = ContentId::of(&other);
        assert!(matches!(store.offer(&other_cid, 5000), Err(BlobError::QuotaExceeded { .. })));

        assert_eq!(store.sweep_partials(Duration::from_secs(3600)).unwrap(), vec![old_cid]);
        assert!(!partial(&dir, &old_cid).exists());
        assert!(!lock(&store.shared.running).contains_key(&old_cid));
        assert_eq!(store.state(&fresh_cid).unwrap().received, 1000);
        assert!(lock(&store.shared.locks).is_empty());
        // Its quota is free again, and the upload that comes back starts over.
        assert!(put(&store, &other_cid, &other, 0..5000, 5000).unwrap().complete);
        assert_eq!(store.state(&old_cid).unwrap(), BlobState { complete: false, received: 0 });
        assert!(matches!(put(&store, &old_cid, &old, 1000..2000, 6000), Err(BlobError::WrongOffset { .. })));
        // A fresh partial is kept, however often the sweep runs.
        assert!(store.sweep_partials(Duration::from_secs(3600)).unwrap().is_empty());
        assert!(put(&store, &fresh_cid, &fresh, 1000..3000, 3000).unwrap().complete);
    }

    #[test]
    fn upload_resumes_after_reopening_and_is_verified_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = blob(3000);
        let cid = ContentId::of(&data);
        {
            let store = BlobStore::open(dir.path()).unwrap();
            put(&store, &cid, &data, 0..1000, 3000).unwrap();
        }
        let store = BlobStore::open(dir.path()).unwrap();
        let state = store.offer(&cid, 3000).unwrap();
        assert_eq!(state, BlobState { complete: false, received: 1000 });
        // No running hash after a restart: the first chunk rebuilds it from the file.
        assert!(lock(&store.shared.running).is_empty());
        put(&store, &cid, &data, 1000..2000, 3000).unwrap();
        assert_eq!(lock(&store.shared.running)[&cid].len, 2000);
        assert!(put(&store, &cid, &data, 2000..data.len(), 3000).unwrap().complete);
        assert_eq!(fs::read(store.path(&cid).unwrap()).unwrap(), data);

        // A partial damaged on disk while the provider was down does not continue into the next
        // chunk: it is discarded, and the upload starts over.
        let other = blob(2000);
        let other_cid = ContentId::of(&other);
        put(&store, &other_cid, &other, 0..1000, 2000).unwrap();
        drop(store);
        fs::write(partial(&dir, &other_cid), vec![0; 1000]).unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let error = put(&store, &other_cid, &other, 1000..other.len(), 2000).unwrap_err();
        assert!(matches!(error, BlobError::ChunkMismatch { offset: 1000 }), "{error}");
        assert!(!partial(&dir, &other_cid).exists());
        assert_eq!(store.offer(&other_cid, 2000).unwrap(), BlobState { complete: false, received: 0 });
        put(&store, &other_cid, &other, 0..1000, 2000).unwrap();
        assert!(put(&store, &other_cid, &other, 1000..other.len(), 2000).unwrap().complete);
    }

    #[test]
    fn wrong_offset_and_inconsistent_sizes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = blob(3000);
        let cid = ContentId::of(&data);
        put(&store, &cid, &data, 0..1000, 3000).unwrap();

        for offset in [0, 999, 1001, 2000] {
            let error = store.write_chunk(&cid, offset, &data[1000..1010], &sha256(&data[..1010]), 3000).unwrap_err();
            assert!(matches!(error, BlobError::WrongOffset { received: 1000, .. }), "{error}");
            assert_eq!(error.code(), 409);
        }
        let error = put(&store, &cid, &data, 1000..2000, 5000).unwrap_err();
        assert!(matches!(error, BlobError::SizeChanged { expected: 3000, got: 5000, .. }), "{error}");
        // The offer already says so.
        let error = store.offer(&cid, 5000).unwrap_err();
        assert!(matches!(error, BlobError::SizeChanged { expected: 3000, got: 5000, .. }), "{error}");
        let error = store.offer(&cid, 500).unwrap_err();
        assert!(matches!(error, BlobError::SizeConflict { held: 1000, total_size: 500, .. }), "{error}");
        assert_eq!(error.code(), 409);
        let error = put(&store, &cid, &data, 1000..data.len(), 2500).unwrap_err();
        assert!(matches!(error, BlobError::PastEnd { .. }), "{error}");
        // Nothing refused was written.
        assert_eq!(store.state(&cid).unwrap().received, 1000);
        // And the upload still completes.
        assert!(put(&store, &cid, &data, 1000..data.len(), 3000).unwrap().complete);
    }

    #[test]
    fn a_damaged_chunk_is_refused_and_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = blob(3000);
        let cid = ContentId::of(&data);
        put(&store, &cid, &data, 0..1000, 3000).unwrap();

        let mut damaged = data.clone();
        damaged[1500] ^= 1;
        // Damaged in transit: the data changed, not the checksum sent with it.
        let error = store.write_chunk(&cid, 1000, &damaged[1000..2000], &sha256(&data[..2000]), 3000).unwrap_err();
        assert!(matches!(error, BlobError::ChunkMismatch { offset: 1000 }), "{error}");
        assert_eq!(error.code(), 422);
        assert_eq!(error.to_string(), "chunk at offset 1000 does not match its sha256");
        // The right bytes with the checksum of other bytes are refused as well.
        let error = store.write_chunk(&cid, 1000, &data[1000..2000], &sha256(&damaged[..2000]), 3000).unwrap_err();
        assert!(matches!(error, BlobError::ChunkMismatch { offset: 1000 }), "{error}");
        assert_eq!(fs::read(partial(&dir, &cid)).unwrap(), data[..1000]);

        // The upload goes on from the good prefix, with the running hash intact.
        put(&store, &cid, &data, 1000..2000, 3000).unwrap();
        assert!(put(&store, &cid, &data, 2000..3000, 3000).unwrap().complete);
    }

    #[tokio::test]
    async fn answers_wire_offers_and_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = blob(100);
        let cid = ContentId::of(&data).to_string();
        let offer_of = |cid: &str| pb::BlobOffer { version: 1, cid: cid.into(), total_size: 100 };
        let chunk_at = |offset: usize, end: usize| pb::BlobChunk {
            version: 1,
            offset: offset as u64,
            data: data[offset..end].to_vec().into(),
            prefix_sha256: sha256(&data[..end]),
        };

        assert_eq!(offer(&store, offer_of(&cid)).await, Ok(pb::BlobState { complete: false, received: 0 }));
        assert_eq!(
            chunk(&store, &cid, 100, chunk_at(0, 40)).await,
            Ok(pb::BlobState { complete: false, received: 40 })
        );
        assert_eq!(offer(&store, offer_of(&cid)).await, Ok(pb::BlobState { complete: false, received: 40 }));
        let error = chunk(&store, &cid, 100, chunk_at(0, 40)).await.unwrap_err();
        assert_eq!(error.code, 409, "{}", error.message);
        let error = chunk(&store, &cid, 100, pb::BlobChunk { prefix_sha256: vec![0; 32], ..chunk_at(40, 100) })
            .await
            .unwrap_err();
        assert_eq!((error.code, error.message.as_str()), (422, "chunk at offset 40 does not match its sha256"));
        assert_eq!(
            chunk(&store, &cid, 100, chunk_at(40, 100)).await,
            Ok(pb::BlobState { complete: true, received: 100 })
        );

        for bad in ["sha256:../../etc/passwd", "b../../../../../../../../../../../../../../../../../etc/pas"] {
            let error = offer(&store, offer_of(bad)).await.unwrap_err();
            assert_eq!(error.code, 400, "{}", error.message);
            let error = chunk(&store, bad, 100, chunk_at(0, 40)).await.unwrap_err();
            assert_eq!(error.code, 400, "{}", error.message);
        }
    }

    /// The daemon's glue, minus the controller: a provider whose blob protocol is this store.
    struct StoreHandler(BlobStore);

    impl tpod_net::Handler for StoreHandler {
        async fn attest(&self, _: tpod_net::PeerId, _: pb::AttestRequest) -> pb::AttestResponse {
            pb::AttestResponse::default()
        }

        async fn quote(&self, _: tpod_net::PeerId, _: pb::QuoteRequest) -> pb::QuoteResponse {
            pb::QuoteResponse::default()
        }

        async fn provision(&self, _: tpod_net::PeerId, _: pb::SignedRequest) -> pb::ProvisionResponse {
            pb::ProvisionResponse::default()
        }

        async fn logs(
            &self,
            _: tpod_net::PeerId,
            _: pb::SignedRequest,
        ) -> Result<futures::stream::BoxStream<'static, pb::LogChunk>, pb::Error> {
            Err(pb::Error { code: 404, message: "no logs here".into() })
        }

        async fn blob_offer(&self, _: tpod_net::PeerId, request: pb::BlobOffer) -> Result<pb::BlobState, pb::Error> {
            offer(&self.0, request).await
        }

        async fn blob_chunk(
            &self,
            _: tpod_net::PeerId,
            cid: &str,
            total_size: u64,
            request: pb::BlobChunk,
        ) -> Result<pb::BlobState, pb::Error> {
            chunk(&self.0, cid, total_size, request).await
        }
    }

    /// Pushes a file over real libp2p (TCP, noise, yamux on 127.0.0.1) into the store: it arrives
    /// whole and verified, a second push sends nothing, and a file whose content is not its CID
    /// is refused at the end with nothing kept. Set `TPOD_BLOB_PUSH_MIB` to push a larger file
    /// and print the rate.
    #[tokio::test]
    async fn push_over_libp2p_into_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path().join("store")).unwrap();
        let provider = tpod_net::Provider::listen(
            tpod_net::generate_keypair(),
            "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
            StoreHandler(store.clone()),
        )
        .await
        .unwrap();
        let client = tpod_net::Client::connect(tpod_net::generate_keypair()).unwrap();
        let (peer, addr) = (provider.peer_id(), provider.listen_addr().clone());

        let mib: usize = std::env::var("TPOD_BLOB_PUSH_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
        let len = mib * (1 << 20) + 12_345;
        let data = blob(len);
        let cid = ContentId::of(&data);
        let path = dir.path().join("blob");
        fs::write(&path, &data).unwrap();

        let started = std::time::Instant::now();
        let report = client.push_blob(peer, addr.clone(), &cid, &path, |_| {}).await.unwrap();
        let elapsed = started.elapsed();
        eprintln!(
            "pushed {len} bytes in {elapsed:?}: {:.1} MiB/s",
            len as f64 / (1 << 20) as f64 / elapsed.as_secs_f64()
        );
        assert_eq!((report.sent, report.resumed_from, report.already_complete), (len as u64, 0, false));
        assert_eq!(fs::read(store.path(&cid).unwrap()).unwrap(), data);

        let again = client.push_blob(peer, addr.clone(), &cid, &path, |_| {}).await.unwrap();
        assert_eq!((again.sent, again.already_complete), (0, true));

        // A file that is not what its CID says: refused once all of it arrived, nothing kept.
        let liar = ContentId::of(b"not this");
        let error = client.push_blob(peer, addr.clone(), &liar, &path, |_| {}).await.unwrap_err();
        let (code, message) = error.refusal().unwrap();
        assert_eq!(code, 422, "{error}");
        assert!(message.contains(&format!("content does not match its CID {liar}: got {cid}")), "{error}");
        assert_eq!(store.state(&liar).unwrap(), BlobState { complete: false, received: 0 });
        assert!(!dir.path().join("store/partial").join(liar.to_string()).exists());
        assert_eq!(lock(&store.shared.usage).total(), len as u64);
    }
}
