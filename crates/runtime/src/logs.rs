//! Container logs: what a container writes to stdout and stderr, kept under a cap it cannot get
//! around and encrypted at rest.
//!
//! **Capture.** A container's stdout and stderr are one pipe: the FIFO `logs/<name>.fifo` in
//! the pod directory, which the shim opens read-write for the container. Read-write, so the pipe
//! always has a reader while the container lives: it never gets `SIGPIPE`, even while the
//! provider is down. The runtime's [`pump`] reads the pipe and appends what comes to the log
//! files. A pipe has no length: `fallocate`, `ftruncate` and `lseek` on it fail, so all a
//! container can do to its log is write to it, and what it writes reaches the disk only through
//! the cap below. While the provider is down nobody drains the pipe: once its buffer is full
//! (64 KiB; a container may raise it to `fs.pipe-max-size`, 1 MiB by default, not more without
//! `CAP_SYS_RESOURCE`) the container's writes block. That is the cap while the provider is down.
//! A restarted provider opens the FIFO again when it adopts the pod and drains it. This needs no
//! extra process: the FIFO is a name on disk, its contents live in kernel memory (what a
//! container wrote and then exited with, while no provider held the pipe, is freed with it).
//!
//! **Storage and cap.** A log is two files, `logs/<name>.log` (current) and `<name>.log.1`
//! (previous), each [`MAGIC`] then records. When a record would take the current file past half
//! the cap, the current file becomes the previous one (replacing it) and a new one starts: the
//! two hold at most the cap, headers included, and always the newest output. A file without the
//! magic (a plain-text log of an earlier version) is removed when found.
//!
//! **Encryption.** A record is `len (u32 LE) | pos (u64 LE) | flags (u8) | nonce (24 bytes) |
//! ciphertext and tag (len bytes)`, sealed with XChaCha20-Poly1305 under a key derived from the
//! runtime's [`VolumeKey`] for this pod and container (HKDF, like the volumes' fscrypt keys:
//! nothing is stored, the same key comes back after a restart, and it is exactly as secret as
//! the enclave key it is derived from), a random nonce, and the header, pod id and container
//! name as associated data, so a record cannot be altered or moved to another position or
//! container unnoticed (dropped, though: the operator can always delete files). `pos` is the
//! absolute position of the record's first byte (bytes ever logged), which readers follow by;
//! `flags` says whether the record starts and ends a line, so a reader of a rotated log starts
//! at a whole line and a writer after a restart knows where lines stand.
//!
//! The in-memory index of the records is a cache of the files, checked against each file's
//! inode and length at every access, so readers and the writer always agree with the disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use futures::StreamExt;
use tokio::sync::watch;

use crate::fscrypt::VolumeKey;
use crate::{LogOptions, LogStream, RuntimeError};

/// How often followers look for new bytes.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The largest chunk a follower yields at once.
const FOLLOW_CHUNK: u64 = 64 << 10;

/// What every log file starts with.
pub(crate) const MAGIC: &[u8; 8] = b"TPODLOG1";

/// `len`, `pos`, `flags`, nonce.
const HEADER: usize = 4 + 8 + 1 + 24;

/// Poly1305's tag.
const TAG: usize = 16;

/// The most plaintext in one record.
const MAX_RECORD: usize = 64 << 10;

/// After a read from the pipe, how long the pump lets more output gather, so a chatty container
/// makes a few large records rather than one per `write` (the pipe buffers meanwhile).
const BATCH: Duration = Duration::from_millis(20);

/// `flags`: the record's first byte starts a line.
const STARTS_LINE: u8 = 1;
/// `flags`: the record's last byte is a newline.
const ENDS_LINE: u8 = 2;

/// One record of a file, as indexed.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// Absolute position of its first plaintext byte.
    pos: u64,
    /// Plaintext length.
    len: u64,
    /// Where the record starts in its file.
    offset: u64,
    flags: u8,
}

impl Entry {
    fn end(&self) -> u64 {
        self.pos + self.len
    }
}

/// The index of one file: valid while the file has this inode and at least this length.
#[derive(Debug, Default)]
struct Segment {
    ino: u64,
    /// The length indexed: magic plus whole records (a partial record at the end, from a crash
    /// mid-write, is not indexed and is cut by the next append).
    size: u64,
    entries: Vec<Entry>,
}

#[derive(Debug, Default)]
struct State {
    previous: Segment,
    current: Segment,
    /// The largest end position seen: never goes back, even if the files are removed.
    end: u64,
}

/// One container's log (see the module docs).
pub(crate) struct LogFile {
    /// The current file; the previous one is this with `.1` appended.
    path: PathBuf,
    previous: PathBuf,
    cipher: XChaCha20Poly1305,
    /// Pod id, NUL, container name: the associated data after each record's header.
    context: Vec<u8>,
    /// The most bytes the two files hold.
    cap: u64,
    state: Mutex<State>,
}

impl std::fmt::Debug for LogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFile").field("path", &self.path).field("cap", &self.cap).finish_non_exhaustive()
    }
}

/// Files of the log at `path` (current, previous), for removal with the container.
pub(crate) fn files(path: &Path) -> [PathBuf; 2] {
    [path.to_path_buf(), previous_of(path)]
}

fn previous_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, what.to_owned())
}

/// A file of the log, opened, with its inode and length.
struct Opened {
    file: File,
    ino: u64,
    len: u64,
}

fn open(path: &Path) -> Result<Option<Opened>, RuntimeError> {
    match File::open(path) {
        Ok(file) => {
            let meta = file.metadata().map_err(RuntimeError::io("reading container log", path))?;
            Ok(Some(Opened { file, ino: meta.ino(), len: meta.len() }))
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RuntimeError::io("opening container log", path)(e)),
    }
}

/// Brings `segment` up to date with `opened` (the file at `path`); removes a file that is not a
/// log of this format.
fn refresh(path: &Path, segment: &mut Segment, opened: Option<&Opened>) -> Result<(), RuntimeError> {
    let Some(opened) = opened else {
        *segment = Segment::default();
        return Ok(());
    };
    if opened.ino != segment.ino || opened.len < segment.size || segment.size == 0 {
        *segment = Segment { ino: opened.ino, size: 0, entries: Vec::new() };
    }
    if segment.size == 0 {
        if opened.len < MAGIC.len() as u64 {
            // Empty, or a crash before the magic was whole: nothing in it yet.
            return Ok(());
        }
        let mut magic = [0u8; 8];
        opened.file.read_exact_at(&mut magic, 0).map_err(RuntimeError::io("reading container log", path))?;
        if &magic != MAGIC {
            tracing::warn!(path = %path.display(), "removing a container log of an earlier format (plain text)");
            fs::remove_file(path).map_err(RuntimeError::io("removing old container log", path))?;
            *segment = Segment::default();
            return Ok(());
        }
        segment.size = MAGIC.len() as u64;
    }
    let mut header = [0u8; HEADER];
    while segment.size + HEADER as u64 <= opened.len {
        opened
            .file
            .read_exact_at(&mut header, segment.size)
            .map_err(RuntimeError::io("reading container log", path))?;
        let (len, pos, flags) = parse_header(&header);
        let sealed = u64::from(len);
        if !(TAG as u64..=(MAX_RECORD + TAG) as u64).contains(&sealed) {
            // Not a record we wrote: index nothing from here (an append cuts it off).
            tracing::warn!(path = %path.display(), offset = segment.size, "corrupt container log record");
            break;
        }
        if segment.size + HEADER as u64 + sealed > opened.len {
            break;
        }
        segment.entries.push(Entry { pos, len: sealed - TAG as u64, offset: segment.size, flags });
        segment.size += HEADER as u64 + sealed;
    }
    Ok(())
}

fn parse_header(header: &[u8; HEADER]) -> (u32, u64, u8) {
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[..4]);
    let mut pos = [0u8; 8];
    pos.copy_from_slice(&header[4..12]);
    (u32::from_le_bytes(len), u64::from_le_bytes(pos), header[12])
}

impl LogFile {
    /// The log at `path` of container `container` of pod `pod`, sealed under a key derived
    /// from `key`, holding at most `cap` bytes on disk.
    pub(crate) fn new(path: PathBuf, pod: &str, container: &str, key: &VolumeKey, cap: u64) -> Self {
        let log_key = key.log_key(pod, container);
        let raw: &[u8; 32] = &log_key;
        let cipher = XChaCha20Poly1305::new(raw.into());
        let mut context = pod.as_bytes().to_vec();
        context.push(0);
        context.extend_from_slice(container.as_bytes());
        Self { previous: previous_of(&path), path, cipher, context, cap, state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update leaves the index consistent with some state of the files.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens both files and refreshes the index; returns them (previous, current).
    fn sync(&self, state: &mut State) -> Result<(Option<Opened>, Option<Opened>), RuntimeError> {
        let previous = open(&self.previous)?;
        let current = open(&self.path)?;
        refresh(&self.previous, &mut state.previous, previous.as_ref())?;
        refresh(&self.path, &mut state.current, current.as_ref())?;
        let last = state.current.entries.last().or(state.previous.entries.last());
        state.end = state.end.max(last.map_or(0, Entry::end));
        Ok((previous, current))
    }

    /// The associated data of a record with this header.
    fn aad(&self, header: &[u8]) -> Vec<u8> {
        let mut aad = header[..13].to_vec();
        aad.extend_from_slice(&self.context);
        aad
    }

    /// The most plaintext in one record, so that one record always fits half the cap.
    fn record_max(&self) -> usize {
        let half = self.cap / 2;
        let room = half.saturating_sub((MAGIC.len() + HEADER + TAG) as u64);
        usize::try_from(room).unwrap_or(MAX_RECORD).clamp(1, MAX_RECORD)
    }

    /// Appends `bytes` as records, rotating the files to hold the cap. Blocking.
    pub(crate) fn append(&self, bytes: &[u8]) -> Result<(), RuntimeError> {
        let io = |what| RuntimeError::io(what, &self.path);
        let mut state = self.lock();
        let (_, current) = self.sync(&mut state)?;
        let mut current = current;
        let last = state.current.entries.last().or(state.previous.entries.last());
        let mut starts_line = last.is_none_or(|e| e.flags & ENDS_LINE != 0);
        for chunk in bytes.chunks(self.record_max()) {
            let record_len = (HEADER + chunk.len() + TAG) as u64;
            if state.current.size > MAGIC.len() as u64 && state.current.size + record_len > self.cap / 2 {
                fs::rename(&self.path, &self.previous).map_err(io("rotating container log"))?;
                state.previous = std::mem::take(&mut state.current);
                current = None;
            }
            let file = match current.take() {
                Some(opened) if state.current.size >= MAGIC.len() as u64 => {
                    let file = OpenOptions::new().write(true).open(&self.path).map_err(io("opening container log"))?;
                    if opened.len > state.current.size {
                        // A partial record from a crash mid-write, or garbage: cut it.
                        file.set_len(state.current.size).map_err(io("truncating container log"))?;
                    }
                    file
                }
                _ => {
                    let file = OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(&self.path)
                        .map_err(io("creating container log"))?;
                    file.write_all_at(MAGIC, 0).map_err(io("writing container log"))?;
                    let ino = file.metadata().map_err(io("reading container log"))?.ino();
                    state.current = Segment { ino, size: MAGIC.len() as u64, entries: Vec::new() };
                    file
                }
            };
            let ends_line = chunk.last() == Some(&b'\n');
            let flags = (u8::from(starts_line) * STARTS_LINE) | (u8::from(ends_line) * ENDS_LINE);
            let pos = state.end;
            let mut record = Vec::with_capacity(HEADER + chunk.len() + TAG);
            // A chunk is at most MAX_RECORD (64 KiB), so its sealed length fits a u32.
            record.extend_from_slice(&u32::try_from(chunk.len() + TAG).unwrap_or(u32::MAX).to_le_bytes());
            record.extend_from_slice(&pos.to_le_bytes());
            record.push(flags);
            let mut nonce = [0u8; 24];
            getrandom::fill(&mut nonce).map_err(|e| io("drawing a log nonce")(io::Error::other(e.to_string())))?;
            record.extend_from_slice(&nonce);
            let aad = self.aad(&record);
            record.extend_from_slice(chunk);
            let tag = self
                .cipher
                .encrypt_inout_detached(&XNonce::from(nonce), &aad, (&mut record[HEADER..]).into())
                .map_err(|_| io("sealing a log record")(corrupt("record too long")))?;
            record.extend_from_slice(tag.as_slice());
            file.write_all_at(&record, state.current.size).map_err(io("writing container log"))?;
            let len = chunk.len() as u64;
            let offset = state.current.size;
            state.current.entries.push(Entry { pos, len, offset, flags });
            state.current.size += record_len;
            state.end = pos + len;
            starts_line = ends_line;
            // The file stays valid for the next chunk: reopen it by path (cheap) after rotation.
            current = Some(Opened { len: state.current.size, ino: state.current.ino, file });
        }
        Ok(())
    }

    /// The plaintext of `entry` from `file`.
    fn open_record(&self, file: &File, path: &Path, entry: &Entry) -> Result<Vec<u8>, RuntimeError> {
        let io = |what| RuntimeError::io(what, path);
        let sealed = usize::try_from(entry.len).unwrap_or(MAX_RECORD) + TAG;
        let mut record = vec![0u8; HEADER + sealed];
        file.read_exact_at(&mut record, entry.offset).map_err(io("reading container log"))?;
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&record[13..HEADER]);
        let aad = self.aad(&record);
        let (body, tag) = record[HEADER..].split_at_mut(sealed - TAG);
        let tag: &[u8] = tag;
        let tag = tag.try_into().map_err(|_| io("reading container log")(corrupt("short tag")))?;
        self.cipher
            .decrypt_inout_detached(&XNonce::from(nonce), &aad, body.into(), tag)
            .map_err(|_| io("opening container log record")(corrupt("a record does not authenticate")))?;
        record.truncate(HEADER + sealed - TAG);
        record.drain(..HEADER);
        Ok(record)
    }

    /// Every indexed record, oldest first, with the file it is in.
    fn records<'a>(
        &'a self,
        state: &'a State,
        files: &'a (Option<Opened>, Option<Opened>),
    ) -> impl DoubleEndedIterator<Item = (&'a File, &'a Path, &'a Entry)> + 'a {
        let previous = files.0.as_ref().map(|o| &o.file);
        let current = files.1.as_ref().map(|o| &o.file);
        let older =
            previous.into_iter().flat_map(move |f| state.previous.entries.iter().map(move |e| (f, &*self.previous, e)));
        let newer =
            current.into_iter().flat_map(move |f| state.current.entries.iter().map(move |e| (f, &*self.path, e)));
        older.chain(newer)
    }

    /// Reads from absolute position `pos` up to `max` bytes; returns the bytes and the absolute
    /// position after them (moved forward if what was at `pos` has been rotated away).
    fn read_from(&self, pos: u64, max: u64) -> Result<(Vec<u8>, u64), RuntimeError> {
        let mut state = self.lock();
        let files = self.sync(&mut state)?;
        let mut out = Vec::new();
        let mut at = pos;
        for (file, path, entry) in self.records(&state, &files) {
            if entry.end() <= at {
                continue;
            }
            at = at.max(entry.pos);
            let plain = self.open_record(file, path, entry)?;
            let skip = usize::try_from(at - entry.pos).unwrap_or(usize::MAX).min(plain.len());
            let room = usize::try_from(max).unwrap_or(usize::MAX).saturating_sub(out.len());
            let take = (plain.len() - skip).min(room);
            out.extend_from_slice(&plain[skip..skip + take]);
            at += take as u64;
            if out.len() as u64 >= max {
                break;
            }
        }
        Ok((out, at.max(pos)))
    }

    /// The last `lines` lines (all if 0) and the absolute position after them. What was kept
    /// starts at a whole line: a line whose start was rotated away is left out.
    fn tail(&self, lines: u64) -> Result<(Vec<u8>, u64), RuntimeError> {
        let mut state = self.lock();
        let files = self.sync(&mut state)?;
        let end = state.end;
        // Newest first, until there are enough lines.
        let mut chunks = Vec::new();
        let mut newlines = 0u64;
        let mut first_flags = STARTS_LINE;
        for (file, path, entry) in self.records(&state, &files).rev() {
            let plain = self.open_record(file, path, entry)?;
            newlines += plain.iter().filter(|&&b| b == b'\n').count() as u64;
            first_flags = entry.flags;
            chunks.push(plain);
            if lines > 0 && newlines > lines {
                break;
            }
        }
        chunks.reverse();
        let mut bytes = chunks.concat();
        if first_flags & STARTS_LINE == 0 {
            let cut = bytes.iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| i + 1);
            bytes.drain(..cut);
        }
        Ok((last_lines(bytes, lines), end))
    }

    /// The current file's path.
    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Makes the FIFO a container's stdout and stderr go to (mode 0600), unless there is one. A
/// regular file there (not ours) is replaced.
pub(crate) fn ensure_fifo(path: &Path) -> Result<(), RuntimeError> {
    use std::os::unix::fs::FileTypeExt;
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_fifo() => return Ok(()),
        Ok(_) => fs::remove_file(path).map_err(RuntimeError::io("replacing log pipe", path))?,
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(RuntimeError::io("looking at log pipe", path)(e)),
    }
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR)
        .map_err(|e| RuntimeError::io("creating log pipe", path)(io::Error::from(e)))
}

/// Opens the container's pipe at `fifo` (made if missing) for [`pump`]: read-write, so it never
/// sees end-of-file between container restarts, and so the pipe keeps what a container wrote
/// before it exited (a pipe nobody holds open drops its buffer). Needs a tokio runtime.
pub(crate) fn open_pipe(fifo: &Path) -> Result<tokio::net::unix::pipe::Receiver, RuntimeError> {
    ensure_fifo(fifo)?;
    tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(fifo)
        .map_err(RuntimeError::io("opening log pipe", fifo))
}

/// Drains a container's pipe, opened by [`open_pipe`], into `log` until `stop` turns true.
pub(crate) async fn pump(
    pod: String,
    log: Arc<LogFile>,
    receiver: tokio::net::unix::pipe::Receiver,
    mut stop: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; MAX_RECORD];
    loop {
        tokio::select! {
            ready = receiver.readable() => if let Err(e) = ready {
                tracing::error!(pod, error = %e, "container output pipe failed");
                return;
            },
            _ = stop.wait_for(|&s| s) => return,
        }
        let mut filled = 0;
        while filled < buffer.len() {
            match receiver.try_read(&mut buffer[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!(pod, error = %e, "reading container output");
                    return;
                }
            }
        }
        if filled == 0 {
            continue;
        }
        let bytes = buffer[..filled].to_vec();
        let writer = log.clone();
        match tokio::task::spawn_blocking(move || writer.append(&bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(pod, error = %e, "cannot write container log"),
            Err(_) => return,
        }
        if filled < buffer.len() {
            tokio::select! {
                () = tokio::time::sleep(BATCH) => {}
                _ = stop.wait_for(|&s| s) => return,
            }
        }
    }
}

/// The last `lines` lines of `bytes` (all if 0); a final line without newline counts.
pub(crate) fn last_lines(mut bytes: Vec<u8>, lines: u64) -> Vec<u8> {
    if lines == 0 {
        return bytes;
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let mut seen = 0;
    let start = body
        .iter()
        .rposition(|&b| {
            if b == b'\n' {
                seen += 1;
            }
            seen == lines
        })
        .map_or(0, |i| i + 1);
    bytes.drain(..start);
    bytes
}

/// A stream of the log: its tail, then, when following, new bytes until `stop` turns true or
/// its sender goes away.
pub(crate) fn stream(log: Arc<LogFile>, options: LogOptions, stop: watch::Receiver<bool>) -> LogStream {
    enum Phase {
        Tail,
        Follow(u64),
        Done,
    }
    futures::stream::unfold((Phase::Tail, log, stop), move |(phase, log, mut stop)| async move {
        match phase {
            Phase::Done => None,
            Phase::Tail => {
                let reader = log.clone();
                let read = tokio::task::spawn_blocking(move || reader.tail(options.tail_lines)).await;
                match flatten(read) {
                    Ok((bytes, end)) => {
                        let next = if options.follow { Phase::Follow(end) } else { Phase::Done };
                        Some((Ok(bytes), (next, log, stop)))
                    }
                    Err(e) => Some((Err(e), (Phase::Done, log, stop))),
                }
            }
            Phase::Follow(pos) => loop {
                if *stop.borrow() {
                    return None;
                }
                let reader = log.clone();
                match flatten(tokio::task::spawn_blocking(move || reader.read_from(pos, FOLLOW_CHUNK)).await) {
                    Ok((bytes, end)) if !bytes.is_empty() => {
                        return Some((Ok(bytes), (Phase::Follow(end), log, stop)));
                    }
                    Ok(_) => {}
                    Err(e) => return Some((Err(e), (Phase::Done, log, stop))),
                }
                tokio::select! {
                    () = tokio::time::sleep(FOLLOW_POLL) => {}
                    changed = stop.changed() => if changed.is_err() { return None },
                }
            },
        }
    })
    .filter(|item| std::future::ready(!matches!(item, Ok(bytes) if bytes.is_empty())))
    .boxed()
}

fn flatten<T>(joined: Result<Result<T, RuntimeError>, tokio::task::JoinError>) -> Result<T, RuntimeError> {
    joined
        .unwrap_or_else(|e| Err(RuntimeError::Task { pod: String::new(), what: "log reading", message: e.to_string() }))
}

/// Reads a whole log file's bytes (tests look for plaintext in it).
#[cfg(test)]
fn raw(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn last_lines_counts_from_the_end() {
        assert_eq!(last_lines(b"a\nb\nc\n".to_vec(), 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc".to_vec(), 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\nc\n".to_vec(), 0), b"a\nb\nc\n");
        assert_eq!(last_lines(b"a\nb\n".to_vec(), 5), b"a\nb\n");
        assert_eq!(last_lines(Vec::new(), 3), b"");
    }

    fn log(dir: &Path, key: &VolumeKey, cap: u64) -> LogFile {
        LogFile::new(dir.join("c.log"), "pod", "c", key, cap)
    }

    fn disk_bytes(log: &LogFile) -> u64 {
        files(log.path()).iter().map(|p| fs::metadata(p).map_or(0, |m| m.len())).sum()
    }

    #[test]
    fn records_are_sealed_capped_and_read_back_by_position() {
        let dir = tempfile::tempdir().unwrap();
        let key = VolumeKey::random();
        let cap = 16 << 10;
        let writer = log(dir.path(), &key, cap);
        let mut written = Vec::new();
        for i in 0..2000 {
            let line = format!("line {i} secret-marker\n");
            writer.append(line.as_bytes()).unwrap();
            written.extend_from_slice(line.as_bytes());
            assert!(disk_bytes(&writer) <= cap, "{} bytes on disk", disk_bytes(&writer));
        }
        for path in files(writer.path()) {
            let raw = raw(&path);
            assert!(raw.starts_with(MAGIC));
            assert!(!raw.windows(13).any(|w| w == b"secret-marker"), "plaintext in {}", path.display());
        }
        // Another instance (a restarted provider) reads the same thing from disk.
        let reader = log(dir.path(), &key, cap);
        let (all, end) = reader.tail(0).unwrap();
        assert_eq!(end, written.len() as u64);
        assert!(written.ends_with(&all) && all.starts_with(b"line "), "{}", String::from_utf8_lossy(&all[..40]));
        assert!(all.len() as u64 > cap / 4);
        assert_eq!(reader.tail(2).unwrap().0, b"line 1998 secret-marker\nline 1999 secret-marker\n");
        // By position: what is still kept, moved forward past what was rotated away.
        let (bytes, next) = reader.read_from(0, 30).unwrap();
        let next = usize::try_from(next).unwrap();
        assert_eq!(bytes.len(), 30);
        assert!(next - 30 >= written.len() - all.len() - 64, "read from a rotated-away position");
        assert_eq!(&bytes[..], &written[next - 30..next]);
        let (bytes, next) = reader.read_from(end - 10, 100).unwrap();
        assert_eq!((&bytes[..], next), (&written[written.len() - 10..], end));
        // It appends after a restart at the right position, and a line split across appends
        // keeps its flags.
        reader.append(b"partial").unwrap();
        reader.append(b" line\n").unwrap();
        assert_eq!(writer.tail(1).unwrap().0, b"partial line\n");
        // Under another key (another enclave), records do not open.
        let stranger = log(dir.path(), &VolumeKey::random(), cap);
        assert!(stranger.tail(0).is_err());
    }

    #[test]
    fn a_tampered_record_fails_and_a_plain_text_log_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let key = VolumeKey::random();
        let writer = log(dir.path(), &key, 1 << 20);
        writer.append(b"hello\n").unwrap();
        let path = writer.path().to_path_buf();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(log(dir.path(), &key, 1 << 20).tail(0).is_err());

        fs::write(&path, b"an old plain text log\n").unwrap();
        let fresh = log(dir.path(), &key, 1 << 20);
        assert_eq!(fresh.tail(0).unwrap().0, b"");
        assert!(!path.exists());
        // A crash mid-record leaves a partial record: it is not read, and the next append cuts it.
        fresh.append(b"one\n").unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut file, &[9, 0, 0]).unwrap();
        let again = log(dir.path(), &key, 1 << 20);
        assert_eq!(again.tail(0).unwrap().0, b"one\n");
        again.append(b"two\n").unwrap();
        assert_eq!(log(dir.path(), &key, 1 << 20).tail(0).unwrap().0, b"one\ntwo\n");
    }
}
