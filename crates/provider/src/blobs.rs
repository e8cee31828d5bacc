//! Content-addressed blob storage for uploads over `/tpod/blob/1`: OCI image layers, configs and
//! manifests pushed by publishers in chunks, kept by sha256 digest.
//!
//! The directory is laid out like the `blobs/` directory of an OCI image layout, so an image can
//! be read from it directly:
//!
//! ```text
//! <dir>/sha256/<hex>    complete blobs, verified against their digest
//! <dir>/partial/<hex>   uploads in progress; their length is where an upload resumes
//! ```
//!
//! Digests come from the network, so they are parsed strictly ([`Digest::parse`]) before any path
//! is built from them. A blob becomes visible under `sha256/` only once its whole content hashes
//! to its digest, by an atomic rename. The methods do blocking file I/O (and hash whole blobs on
//! completion): call them from `tokio::task::spawn_blocking` in async code.

use std::{
    collections::HashMap,
    fmt,
    fs::{self, File, OpenOptions},
    io::{self, ErrorKind, Read, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use sha2::{Digest as _, Sha256};
use tpod_wire::pb;

/// Largest blob accepted by default: 4 GiB.
pub const DEFAULT_MAX_BLOB_BYTES: u64 = 4 << 30;
/// Default cap on the bytes of all blobs, complete and partial: 64 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 64 << 30;

/// A blob digest: `sha256:` and 64 lowercase hex digits, the only form accepted, so that its hex
/// part is safe to use as a file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex digits>`; anything else (other algorithms, uppercase,
    /// wrong length, path characters) is refused.
    pub fn parse(digest: &str) -> Result<Self, BlobError> {
        let bad = || BlobError::BadDigest(digest.chars().take(100).collect());
        let hex = digest.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad());
        }
        Ok(Self { hex: hex.to_owned() })
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

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
    /// The digest is not `sha256:` and 64 lowercase hex digits.
    #[error("invalid digest {0:?}: expected sha256: and 64 lowercase hex digits")]
    BadDigest(String),
    /// A put does not continue the upload where the store's copy ends.
    #[error("{digest}: put at offset {offset}, but {received} bytes are held; resume from there")]
    WrongOffset {
        /// The blob.
        digest: Digest,
        /// Offset of the put.
        offset: u64,
        /// Bytes held.
        received: u64,
    },
    /// A put declares another total size than the upload in progress.
    #[error("{digest}: total size {got} differs from the {expected} bytes declared earlier")]
    SizeChanged {
        /// The blob.
        digest: Digest,
        /// Size declared first.
        expected: u64,
        /// Size declared now.
        got: u64,
    },
    /// A put's data reaches past the declared total size.
    #[error("{digest}: {len} bytes at offset {offset} reach past the total size {total_size}")]
    PastEnd {
        /// The blob.
        digest: Digest,
        /// Offset of the put.
        offset: u64,
        /// Bytes in the put.
        len: u64,
        /// Declared size.
        total_size: u64,
    },
    /// The blob is larger than the store accepts.
    #[error("{digest}: {size} bytes exceeds the maximum blob size of {max} bytes")]
    TooLarge {
        /// The blob.
        digest: Digest,
        /// Declared size.
        size: u64,
        /// Maximum.
        max: u64,
    },
    /// Storing the blob would exceed the store's quota.
    #[error("{digest}: storing {size} bytes would exceed the quota of {quota} bytes ({used} in use)")]
    QuotaExceeded {
        /// The blob.
        digest: Digest,
        /// Declared size.
        size: u64,
        /// Bytes in use or reserved by other blobs.
        used: u64,
        /// Quota.
        quota: u64,
    },
    /// The complete content does not hash to the digest; the partial upload was deleted.
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the blob was uploaded as.
        expected: Digest,
        /// The digest of what was received.
        actual: String,
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
        match self {
            Self::BadDigest(_) => 400,
            Self::WrongOffset { .. } | Self::SizeChanged { .. } | Self::PastEnd { .. } => 409,
            Self::TooLarge { .. } => 413,
            Self::DigestMismatch { .. } => 422,
            Self::QuotaExceeded { .. } => 507,
            Self::Io { .. } => 500,
        }
    }
}

impl From<&BlobError> for pb::Error {
    fn from(error: &BlobError) -> Self {
        Self { code: error.code(), message: error.to_string() }
    }
}

/// Bytes counted against the quota: complete blobs plus, per partial upload, its declared size
/// (or its length on disk, for partials found at start whose declared size is not known yet).
#[derive(Debug, Default)]
struct Usage {
    complete: u64,
    partial: HashMap<String, u64>,
}

impl Usage {
    fn total(&self) -> u64 {
        self.partial.values().fold(self.complete, |sum, n| sum.saturating_add(*n))
    }
}

/// A directory of content-addressed blobs; see the module documentation. Clones share the
/// quota accounting and locks, so one can be moved into a blocking task.
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
    /// One lock per digest being written, so puts of one blob run one at a time while puts of
    /// different blobs proceed in parallel.
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// Locks a mutex, ignoring poisoning: the data guarded here stays consistent on panic (at worst
/// a usage figure is stale), and refusing every later upload would be worse.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl BlobStore {
    /// Opens (creating it if needed) the store in `dir`, with the default limits.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, BlobError> {
        Self::open_with(dir, DEFAULT_MAX_BLOB_BYTES, DEFAULT_QUOTA_BYTES)
    }

    /// Opens the store with explicit limits: the largest blob, and the bytes of all blobs.
    pub fn open_with(dir: impl Into<PathBuf>, max_blob_bytes: u64, quota_bytes: u64) -> Result<Self, BlobError> {
        let dir = dir.into();
        let mut usage = Usage::default();
        for sub in ["sha256", "partial"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(io_error(&path))?;
            for entry in fs::read_dir(&path).map_err(io_error(&path))? {
                let entry = entry.map_err(io_error(&path))?;
                let len = entry.metadata().map_err(io_error(&entry.path()))?.len();
                if sub == "sha256" {
                    usage.complete = usage.complete.saturating_add(len);
                } else {
                    usage.partial.insert(entry.file_name().to_string_lossy().into_owned(), len);
                }
            }
        }
        tracing::debug!(dir = %dir.display(), used = usage.total(), "blob store opened");
        let shared = Arc::new(Shared { usage: Mutex::new(usage), locks: Mutex::default() });
        Ok(Self { dir, max_blob_bytes, quota_bytes, shared })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the store holds of `digest`.
    pub fn state(&self, digest: &Digest) -> Result<BlobState, BlobError> {
        if let Some(len) = file_len(&self.complete_path(digest))? {
            return Ok(BlobState { complete: true, received: len });
        }
        let received = file_len(&self.partial_path(digest))?.unwrap_or(0);
        Ok(BlobState { complete: false, received })
    }

    /// The file of a complete blob, if the store has it.
    pub fn path(&self, digest: &Digest) -> Option<PathBuf> {
        let path = self.complete_path(digest);
        path.is_file().then_some(path)
    }

    /// Appends `data` at `offset` to the blob `digest` of `total_size` bytes; see the module
    /// documentation. A put to a complete blob changes nothing and reports it complete, so a
    /// repeated last put is harmless.
    pub fn put(&self, digest: &Digest, offset: u64, data: &[u8], total_size: u64) -> Result<BlobState, BlobError> {
        let entry = lock(&self.shared.locks).entry(digest.hex.clone()).or_default().clone();
        let result = {
            let _guard = lock(&entry);
            self.put_locked(digest, offset, data, total_size)
        };
        // Forget the lock when no other put holds or waits for it (the map and `entry` are the
        // only references left).
        let mut locks = lock(&self.shared.locks);
        if Arc::strong_count(&entry) == 2 {
            locks.remove(&digest.hex);
        }
        result
    }

    fn put_locked(&self, digest: &Digest, offset: u64, data: &[u8], total_size: u64) -> Result<BlobState, BlobError> {
        let state = self.state(digest)?;
        if state.complete {
            return Ok(state);
        }
        let len = data.len() as u64;
        if total_size > self.max_blob_bytes {
            return Err(BlobError::TooLarge { digest: digest.clone(), size: total_size, max: self.max_blob_bytes });
        }
        if offset.checked_add(len).is_none_or(|end| end > total_size) {
            return Err(BlobError::PastEnd { digest: digest.clone(), offset, len, total_size });
        }
        if offset != state.received {
            return Err(BlobError::WrongOffset { digest: digest.clone(), offset, received: state.received });
        }
        self.reserve(digest, state.received, total_size)?;

        let partial = self.partial_path(digest);
        let mut file = OpenOptions::new().create(true).append(true).open(&partial).map_err(io_error(&partial))?;
        file.write_all(data).map_err(io_error(&partial))?;
        let received = offset + len;
        if received < total_size {
            return Ok(BlobState { complete: false, received });
        }
        file.sync_all().map_err(io_error(&partial))?;
        drop(file);
        self.complete(digest, &partial, total_size)
    }

    /// Counts `total_size` against the quota for this upload, refusing if it does not fit.
    fn reserve(&self, digest: &Digest, received: u64, total_size: u64) -> Result<(), BlobError> {
        let mut usage = lock(&self.shared.usage);
        match usage.partial.get(&digest.hex).copied() {
            // After a restart only the length on disk is known: the first put fixes the size.
            Some(expected) if expected != total_size && !(received > 0 && expected == received) => {
                return Err(BlobError::SizeChanged { digest: digest.clone(), expected, got: total_size });
            }
            _ => {}
        }
        let others = usage.total() - usage.partial.get(&digest.hex).copied().unwrap_or(0);
        if others.saturating_add(total_size) > self.quota_bytes {
            return Err(BlobError::QuotaExceeded {
                digest: digest.clone(),
                size: total_size,
                used: others,
                quota: self.quota_bytes,
            });
        }
        usage.partial.insert(digest.hex.clone(), total_size);
        Ok(())
    }

    /// Verifies a fully received partial and moves it into place, or deletes it on mismatch.
    fn complete(&self, digest: &Digest, partial: &Path, size: u64) -> Result<BlobState, BlobError> {
        let actual = sha256_file(partial)?;
        let mut usage = lock(&self.shared.usage);
        usage.partial.remove(&digest.hex);
        if actual != digest.hex {
            fs::remove_file(partial).map_err(io_error(partial))?;
            tracing::warn!(%digest, actual, "uploaded blob does not match its digest, discarded");
            return Err(BlobError::DigestMismatch { expected: digest.clone(), actual: format!("sha256:{actual}") });
        }
        let target = self.complete_path(digest);
        fs::rename(partial, &target).map_err(io_error(&target))?;
        // Make the rename durable too.
        if let Some(parent) = target.parent() {
            File::open(parent).and_then(|d| d.sync_all()).map_err(io_error(parent))?;
        }
        usage.complete = usage.complete.saturating_add(size);
        tracing::debug!(%digest, size, "blob complete");
        Ok(BlobState { complete: true, received: size })
    }

    fn complete_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("sha256").join(&digest.hex)
    }

    fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("partial").join(&digest.hex)
    }
}

/// Answers a `/tpod/blob/1` request from `store`: parses the digest, runs the query or put on a
/// blocking thread (a put may hash a whole blob), and turns failures into wire errors.
pub async fn answer(store: &BlobStore, request: pb::BlobRequest) -> pb::BlobResponse {
    use pb::{blob_request::Op, blob_response::Result as Outcome};
    let store = store.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let digest = Digest::parse(&request.digest)?;
        match request.op {
            Some(Op::Put(put)) => store.put(&digest, put.offset, &put.data, put.total_size),
            // A request without an operation is answered like a query: it changes nothing.
            Some(Op::Query(_)) | None => store.state(&digest),
        }
    })
    .await;
    let result = match outcome {
        Ok(Ok(state)) => Outcome::State(state.into()),
        Ok(Err(error)) => {
            tracing::debug!(%error, "blob request refused");
            Outcome::Error((&error).into())
        }
        Err(error) => {
            tracing::error!(%error, "blob task failed");
            Outcome::Error(pb::Error { code: 500, message: "internal error".into() })
        }
    };
    pb::BlobResponse { version: tpod_wire::VERSION, result: Some(result) }
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

/// Hex sha256 of a file, read in 1 MiB pieces so a multi-gigabyte blob never sits in memory.
fn sha256_file(path: &Path) -> Result<String, BlobError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(source) => return Err(BlobError::Io { path: path.to_owned(), source }),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn digest_of(data: &[u8]) -> Digest {
        let hex: String = Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect();
        Digest::parse(&format!("sha256:{hex}")).unwrap()
    }

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn digests_are_parsed_strictly() {
        let good = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(Digest::parse(good).unwrap().to_string(), good);
        for bad in [
            "",
            "sha256:",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
            "sha256:../../../../../../../../../../../../../../../../../../etc/passwd",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85/",
            " sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            let error = Digest::parse(bad).unwrap_err();
            assert!(matches!(error, BlobError::BadDigest(_)), "{bad:?}: {error}");
            assert_eq!(error.code(), 400);
        }
    }

    #[test]
    fn put_in_chunks_completes_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = blob(10_000);
        let digest = digest_of(&data);
        assert_eq!(store.state(&digest).unwrap(), BlobState { complete: false, received: 0 });
        assert_eq!(store.path(&digest), None);

        let state = store.put(&digest, 0, &data[..4000], 10_000).unwrap();
        assert_eq!(state, BlobState { complete: false, received: 4000 });
        assert_eq!(store.state(&digest).unwrap(), state);
        assert!(dir.path().join("partial").join(digest.hex()).is_file());

        let state = store.put(&digest, 4000, &data[4000..], 10_000).unwrap();
        assert_eq!(state, BlobState { complete: true, received: 10_000 });
        let path = store.path(&digest).unwrap();
        assert_eq!(path, dir.path().join("sha256").join(digest.hex()));
        assert_eq!(fs::read(path).unwrap(), data);
        assert!(!dir.path().join("partial").join(digest.hex()).exists());

        // Repeating a put of a complete blob is harmless.
        assert_eq!(store.put(&digest, 4000, &data[4000..], 10_000).unwrap(), state);
        // And an empty blob completes in one empty put.
        let empty = digest_of(&[]);
        assert_eq!(store.put(&empty, 0, &[], 0).unwrap(), BlobState { complete: true, received: 0 });
    }

    #[test]
    fn upload_resumes_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let data = blob(3000);
        let digest = digest_of(&data);
        {
            let store = BlobStore::open(dir.path()).unwrap();
            store.put(&digest, 0, &data[..1000], 3000).unwrap();
        }
        let store = BlobStore::open(dir.path()).unwrap();
        let state = store.state(&digest).unwrap();
        assert_eq!(state, BlobState { complete: false, received: 1000 });
        store.put(&digest, state.received, &data[1000..2000], 3000).unwrap();
        assert!(store.put(&digest, 2000, &data[2000..], 3000).unwrap().complete);
        assert_eq!(fs::read(store.path(&digest).unwrap()).unwrap(), data);
    }

    #[test]
    fn wrong_offset_and_inconsistent_sizes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = blob(3000);
        let digest = digest_of(&data);
        store.put(&digest, 0, &data[..1000], 3000).unwrap();

        for offset in [0, 999, 1001, 2000] {
            let error = store.put(&digest, offset, &data[1000..1010], 3000).unwrap_err();
            assert!(matches!(error, BlobError::WrongOffset { received: 1000, .. }), "{error}");
            assert_eq!(error.code(), 409);
        }
        let error = store.put(&digest, 1000, &data[1000..2000], 5000).unwrap_err();
        assert!(matches!(error, BlobError::SizeChanged { expected: 3000, got: 5000, .. }), "{error}");
        let error = store.put(&digest, 1000, &data[1000..], 2500).unwrap_err();
        assert!(matches!(error, BlobError::PastEnd { .. }), "{error}");
        // Nothing refused was written.
        assert_eq!(store.state(&digest).unwrap().received, 1000);
    }

    #[test]
    fn digest_mismatch_removes_the_partial() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = blob(2000);
        let claimed = digest_of(b"something else");
        store.put(&claimed, 0, &data[..1000], 2000).unwrap();
        let error = store.put(&claimed, 1000, &data[1000..], 2000).unwrap_err();
        match &error {
            BlobError::DigestMismatch { expected, actual } => {
                assert_eq!(expected, &claimed);
                assert_eq!(actual, &digest_of(&data).to_string());
            }
            other => panic!("expected a digest mismatch, got {other}"),
        }
        assert_eq!(error.code(), 422);
        assert!(error.to_string().contains(claimed.hex()), "{error}");
        assert!(!dir.path().join("partial").join(claimed.hex()).exists());
        assert_eq!(store.state(&claimed).unwrap(), BlobState { complete: false, received: 0 });
        assert_eq!(store.path(&claimed), None);
        // The quota reservation was released: the whole quota is usable again.
        assert_eq!(lock(&store.shared.usage).total(), 0);
    }

    #[test]
    fn size_and_quota_limits() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open_with(dir.path(), 1000, 1500).unwrap();
        let big = digest_of(&blob(1001));
        let error = store.put(&big, 0, &[], 1001).unwrap_err();
        assert!(matches!(error, BlobError::TooLarge { size: 1001, max: 1000, .. }), "{error}");
        assert_eq!(error.code(), 413);

        let first = blob(1000);
        assert!(store.put(&digest_of(&first), 0, &first, 1000).unwrap().complete);
        // 1000 of 1500 used: a 600-byte blob does not fit, even before its first byte arrives.
        let second = blob(600);
        let error = store.put(&digest_of(&second), 0, &second[..100], 600).unwrap_err();
        assert!(matches!(error, BlobError::QuotaExceeded { used: 1000, quota: 1500, .. }), "{error}");
        assert_eq!(error.code(), 507);
        let third = blob(500);
        assert!(store.put(&digest_of(&third), 0, &third, 500).unwrap().complete);

        // Usage survives reopening.
        let store = BlobStore::open_with(dir.path(), 1000, 1500).unwrap();
        let one = blob(1);
        assert!(matches!(store.put(&digest_of(&one), 0, &one, 1), Err(BlobError::QuotaExceeded { .. })));
    }

    #[test]
    fn concurrent_puts_of_one_blob_serialize() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::open(dir.path()).unwrap());
        let data = Arc::new(blob(64 * 1024));
        let digest = digest_of(&data);
        // Eight writers race to put the same first chunk: exactly one may succeed.
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (store, data, digest) = (store.clone(), data.clone(), digest.clone());
                std::thread::spawn(move || store.put(&digest, 0, &data[..32 * 1024], 64 * 1024).is_ok())
            })
            .collect();
        let successes = handles.into_iter().map(|h| h.join().unwrap()).filter(|ok| *ok).count();
        assert_eq!(successes, 1);
        assert!(store.put(&digest, 32 * 1024, &data[32 * 1024..], 64 * 1024).unwrap().complete);
        assert!(lock(&store.shared.locks).is_empty());
    }

    #[tokio::test]
    async fn answers_wire_requests() {
        use pb::{blob_request::Op, blob_response::Result as Outcome};
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = blob(100);
        let digest = digest_of(&data).to_string();
        let request = |digest: &str, op| pb::BlobRequest { version: 1, digest: digest.into(), op: Some(op) };
        let put = |offset: u64, data: &[u8]| Op::Put(pb::Put { offset, data: data.to_vec(), total_size: 100 });

        let response = answer(&store, request(&digest, put(0, &data[..40]))).await;
        assert_eq!(response.result, Some(Outcome::State(pb::BlobState { complete: false, received: 40 })));
        let response = answer(&store, request(&digest, Op::Query(pb::Query {}))).await;
        assert_eq!(response.result, Some(Outcome::State(pb::BlobState { complete: false, received: 40 })));
        match answer(&store, request(&digest, put(0, &data[..40]))).await.result {
            Some(Outcome::Error(error)) => assert_eq!(error.code, 409, "{}", error.message),
            other => panic!("expected a refusal, got {other:?}"),
        }
        let response = answer(&store, request(&digest, put(40, &data[40..]))).await;
        assert_eq!(response.result, Some(Outcome::State(pb::BlobState { complete: true, received: 100 })));

        match answer(&store, request("sha256:../../etc/passwd", Op::Query(pb::Query {}))).await.result {
            Some(Outcome::Error(error)) => assert_eq!(error.code, 400, "{}", error.message),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
