//! Container log files: one per container, written directly by the container (its stdout and
//! stderr are the file, opened `O_APPEND` by the shim that creates it), so a container keeps logging while the provider is
//! down. The runtime caps each file by copy-truncating it to its newest half when it grows past
//! the cap: with `O_APPEND` the container's next write lands at the new end, never in a hole.
//!
//! Followers read by absolute position (bytes ever written); each truncation adds what it cut to
//! a counter, so a follower finds its place again in the shortened file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;

use crate::{LogOptions, LogStream, RuntimeError};

/// How often followers look for new bytes.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The largest chunk a follower yields at once.
const FOLLOW_CHUNK: u64 = 64 << 10;

/// One container's log file and what the cap has cut from it.
#[derive(Debug)]
pub(crate) struct LogFile {
    path: PathBuf,
    /// Held while truncating and while reading, so a reader sees either side of a truncation.
    lock: Mutex<()>,
    /// Bytes cut from the front of the file since this runtime started.
    dropped: AtomicU64,
}

impl LogFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path, lock: Mutex::new(()), dropped: AtomicU64::new(0) }
    }

    /// Cuts the file to roughly its newest `cap / 2` bytes, starting at a line, if it is longer
    /// than `cap`. Bytes the container writes between the read and the truncation are lost.
    pub(crate) fn enforce_cap(&self, cap: u64) -> Result<(), RuntimeError> {
        let io = |what| RuntimeError::io(what, &self.path);
        let len = match std::fs::metadata(&self.path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("reading size of container log")(e)),
        };
        if len <= cap {
            return Ok(());
        }
        let _guard = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut file =
            OpenOptions::new().read(true).append(true).open(&self.path).map_err(io("opening container log"))?;
        let len = file.metadata().map_err(io("reading size of container log"))?.len();
        let keep = cap / 2;
        file.seek(SeekFrom::Start(len.saturating_sub(keep))).map_err(io("reading container log"))?;
        let mut tail = Vec::with_capacity(usize::try_from(keep).unwrap_or(0));
        (&mut file).take(keep).read_to_end(&mut tail).map_err(io("reading container log"))?;
        // Start at a line boundary when there is one, so the first kept line is whole.
        if let Some(newline) = tail.iter().position(|&b| b == b'\n')
            && newline + 1 < tail.len()
        {
            tail.drain(..=newline);
        }
        file.set_len(0).map_err(io("truncating container log"))?;
        file.write_all(&tail).map_err(io("writing container log"))?;
        let cut = len.saturating_sub(tail.len() as u64);
        self.dropped.fetch_add(cut, Ordering::SeqCst);
        tracing::debug!(path = %self.path.display(), cut, kept = tail.len(), "capped container log");
        Ok(())
    }

    /// Reads from absolute position `pos` up to `max` bytes; returns the bytes and the absolute
    /// position after them (moved forward if what was at `pos` has been cut).
    fn read_from(&self, pos: u64, max: u64) -> Result<(Vec<u8>, u64), RuntimeError> {
        let _guard = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let dropped = self.dropped.load(Ordering::SeqCst);
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), pos)),
            Err(e) => return Err(RuntimeError::io("opening container log", &self.path)(e)),
        };
        let offset = pos.saturating_sub(dropped);
        file.seek(SeekFrom::Start(offset)).map_err(RuntimeError::io("reading container log", &self.path))?;
        let mut bytes = Vec::new();
        file.take(max).read_to_end(&mut bytes).map_err(RuntimeError::io("reading container log", &self.path))?;
        let end = dropped + offset + bytes.len() as u64;
        Ok((bytes, end))
    }

    /// The last `lines` lines (all if 0) and the absolute position after them.
    fn tail(&self, lines: u64) -> Result<(Vec<u8>, u64), RuntimeError> {
        let (bytes, end) = self.read_from(0, u64::MAX)?;
        Ok((last_lines(bytes, lines), end))
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
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

#[cfg(test)]
mod tests {
    use super::last_lines;

    #[test]
    fn last_lines_counts_from_the_end() {
        assert_eq!(last_lines(b"a\nb\nc\n".to_vec(), 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc".to_vec(), 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\nc\n".to_vec(), 0), b"a\nb\nc\n");
        assert_eq!(last_lines(b"a\nb\n".to_vec(), 5), b"a\nb\n");
        assert_eq!(last_lines(Vec::new(), 3), b"");
    }
}
