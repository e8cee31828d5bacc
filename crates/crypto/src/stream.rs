//! Encryption of large blobs (image layers) in authenticated segments, so that neither side ever
//! holds a whole blob in memory and a reader never sees a byte that has not been authenticated.
//!
//! This is the STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár: "Online
//! authenticated-encryption and its nonce-reuse misuse-resistance") over ChaCha20Poly1305, as
//! RustCrypto's `aead-stream` implements it with a 32-bit big-endian segment counter and a
//! "last segment" flag in the nonce.
//!
//! Format: the plaintext is cut into segments of [`SEGMENT_BYTES`]; each is encrypted to itself
//! plus a [`TAG_BYTES`] tag. The last segment is the first one shorter than [`SEGMENT_BYTES`]
//! (possibly empty, always present) and is sealed with the "last" flag. So a full segment is never
//! the last one: a blob whose length is a multiple of [`SEGMENT_BYTES`] (the empty blob too) ends
//! in an empty last segment of just a tag. Reordering segments breaks the counter, dropping the
//! end leaves no segment with the last flag, and anything appended after it breaks the last
//! segment or follows it; all are detected.

use std::fmt;
use std::io::{self, Read, Write};

use aead_stream::{DecryptorBE32, EncryptorBE32, KeyInit as _};
use chacha20poly1305::ChaCha20Poly1305;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::ContentId;

/// Bytes of plaintext in every segment but the last.
pub const SEGMENT_BYTES: usize = 64 * 1024;
/// Bytes of authentication tag after each segment's ciphertext.
pub const TAG_BYTES: usize = 16;
/// Bytes of a full ciphertext segment.
const CIPHERTEXT_SEGMENT_BYTES: usize = SEGMENT_BYTES + TAG_BYTES;

/// The nonce prefix, before STREAM's counter and flag. All zeros: every [`BlobKey`] is fresh and
/// encrypts exactly one blob, so (key, nonce) pairs never repeat without a distinct prefix.
const NONCE_PREFIX: [u8; 7] = [0; 7];

/// A fresh 32-byte key for one blob (zeroized on drop; `Debug` redacted).
#[derive(Clone)]
pub struct BlobKey(Zeroizing<[u8; 32]>);

impl BlobKey {
    /// A new key from the operating system's randomness.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator fails.
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0; 32]);
        if let Err(error) = getrandom::fill(key.as_mut_slice()) {
            // Nothing sensible can go on without randomness; hpke makes the same choice.
            panic!("the operating system's random number generator failed: {error}");
        }
        Self(key)
    }

    /// The key of 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StreamError> {
        let key: [u8; 32] = bytes.try_into().map_err(|_| StreamError::KeyLength(bytes.len()))?;
        Ok(Self(Zeroizing::new(key)))
    }

    /// The 32 bytes of the key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        let key: &[u8; 32] = &self.0;
        ChaCha20Poly1305::new(key.into())
    }
}

impl fmt::Debug for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlobKey(<redacted>)")
    }
}

/// Why encrypting or decrypting a blob failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// A key was not 32 bytes.
    #[error("a blob key is 32 bytes, got {0}")]
    KeyLength(usize),
    /// A segment did not authenticate: the key is wrong, or the ciphertext was modified,
    /// reordered, cut inside a segment or extended.
    #[error("segment {segment} (ciphertext offset {offset}) failed authentication: wrong key or modified data")]
    Authentication {
        /// Index of the segment, from 0.
        segment: u64,
        /// Where the segment starts in the ciphertext.
        offset: u64,
    },
    /// The ciphertext ended where a segment should start: its end was cut off at a segment
    /// boundary.
    #[error("ciphertext truncated: it ends at offset {offset}, where segment {segment} should start")]
    Truncated {
        /// Index of the missing segment.
        segment: u64,
        /// The length of the ciphertext.
        offset: u64,
    },
    /// The blob has more segments than STREAM's 32-bit counter can number (256 TiB).
    #[error("blob too large: more than 2^32 - 1 segments of {SEGMENT_BYTES} bytes")]
    TooLarge,
    /// Reading the plaintext or writing the ciphertext failed.
    #[error("i/o error while encrypting: {0}")]
    Io(#[from] io::Error),
}

impl StreamError {
    /// The same error again, for a reader that keeps failing once it has failed. `None` for
    /// i/o errors, which a reader passes on without failing for good.
    fn repeat(&self) -> Option<Self> {
        Some(match *self {
            Self::KeyLength(len) => Self::KeyLength(len),
            Self::Authentication { segment, offset } => Self::Authentication { segment, offset },
            Self::Truncated { segment, offset } => Self::Truncated { segment, offset },
            Self::TooLarge => Self::TooLarge,
            Self::Io(_) => return None,
        })
    }
}

/// Size of the ciphertext of `plaintext_len` bytes.
pub fn ciphertext_len(plaintext_len: u64) -> u64 {
    // Every full segment, then the last (short or empty) one.
    let segments = plaintext_len / SEGMENT_BYTES as u64 + 1;
    plaintext_len + segments * TAG_BYTES as u64
}

/// Where segment `index` starts in the ciphertext.
fn segment_offset(index: u64) -> u64 {
    index * CIPHERTEXT_SEGMENT_BYTES as u64
}

/// Reads into `buf[*filled..]` until it is full or `reader` is at its end, retrying interrupted
/// reads. `filled` counts the bytes read so far, also when a read fails: a caller may try again
/// and go on where it stopped. Afterwards `*filled < buf.len()` means end of input.
fn fill(reader: &mut impl Read, buf: &mut [u8], filled: &mut usize) -> io::Result<()> {
    while *filled < buf.len() {
        match reader.read(&mut buf[*filled..]) {
            Ok(0) => break,
            Ok(n) => *filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Encrypts all of `reader` into `writer` with `key`, holding one segment in memory at a time.
/// Returns the ciphertext's [`ContentId`] (the sha256 of the bytes written, computed on the fly)
/// and its length.
pub fn encrypt(key: &BlobKey, mut reader: impl Read, mut writer: impl Write) -> Result<(ContentId, u64), StreamError> {
    let mut encryptor = EncryptorBE32::from_aead(key.cipher(), &NONCE_PREFIX.into());
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    // Plaintext is read into this buffer and encrypted in place; room for the tag from the start
    // so it never grows.
    let mut buffer = Zeroizing::new(Vec::with_capacity(CIPHERTEXT_SEGMENT_BYTES));
    let mut write = |buffer: &[u8]| -> io::Result<()> {
        writer.write_all(buffer)?;
        hasher.update(buffer);
        written += buffer.len() as u64;
        Ok(())
    };
    loop {
        buffer.resize(SEGMENT_BYTES, 0);
        let mut len = 0;
        fill(&mut reader, &mut buffer, &mut len)?;
        buffer.truncate(len);
        if len < SEGMENT_BYTES {
            break;
        }
        // Encryption itself cannot fail; the counter running out is the only error.
        encryptor.encrypt_next_in_place(&[], &mut *buffer).map_err(|_| StreamError::TooLarge)?;
        write(&buffer)?;
    }
    encryptor.encrypt_last_in_place(&[], &mut *buffer).map_err(|_| StreamError::TooLarge)?;
    write(&buffer)?;
    writer.flush()?;
    Ok((ContentId::from_sha256(hasher.finalize().into()), written))
}

/// Reads the plaintext of a ciphertext that it reads from an inner reader.
///
/// Every segment is authenticated before any of its bytes are returned. A segment that fails, a
/// truncated or an extended ciphertext, is an [`io::Error`] of kind
/// [`InvalidData`](io::ErrorKind::InvalidData) whose message names the segment and its offset,
/// and whose inner error ([`io::Error::get_ref`]) is a [`StreamError`]; every read after that
/// fails the same way. Errors of the inner reader are passed on as they are, and reading may go
/// on after them.
///
/// Reaching the end (a read returning 0) means the whole blob was read and authenticated.
pub struct DecryptingReader<R> {
    inner: R,
    /// `None` once the last segment has been decrypted.
    decryptor: Option<DecryptorBE32<ChaCha20Poly1305>>,
    /// One ciphertext segment while it is being read, then its plaintext.
    buffer: Zeroizing<Vec<u8>>,
    /// Ciphertext bytes of the current segment read so far (while `!decrypted`).
    filled: usize,
    /// Whether `buffer` holds plaintext, to be returned from `position` on.
    decrypted: bool,
    position: usize,
    /// Index of the segment in `buffer`.
    segment: u64,
    failed: Option<StreamError>,
}

impl<R: Read> DecryptingReader<R> {
    /// A reader of the plaintext that `key` decrypts from `inner`.
    pub fn new(key: &BlobKey, inner: R) -> Self {
        Self {
            inner,
            decryptor: Some(DecryptorBE32::from_aead(key.cipher(), &NONCE_PREFIX.into())),
            buffer: Zeroizing::new(vec![0; CIPHERTEXT_SEGMENT_BYTES]),
            filled: 0,
            decrypted: false,
            position: 0,
            segment: 0,
            failed: None,
        }
    }

    /// Reads and decrypts the next segment into `buffer`, which then holds its plaintext.
    /// Returns `false`, reading nothing, once the last segment has been decrypted.
    fn next_segment(&mut self) -> io::Result<bool> {
        if self.decryptor.is_none() {
            return Ok(false);
        }
        // Start a new segment, unless an i/o error interrupted reading the current one.
        if self.decrypted {
            self.decrypted = false;
            self.segment += 1;
            self.filled = 0;
            self.buffer.resize(CIPHERTEXT_SEGMENT_BYTES, 0);
        }
        fill(&mut self.inner, &mut self.buffer, &mut self.filled)?;
        let segment = self.segment;
        let offset = segment_offset(segment);
        if self.filled == 0 {
            return Err(self.fail(StreamError::Truncated { segment, offset }));
        }
        self.buffer.truncate(self.filled);
        // Only a full ciphertext segment can be followed by more: a shorter one was ended by the
        // end of input, so it must be the last. Taking the decryptor for it means nothing after
        // it is ever decrypted.
        let result = match self.decryptor.take() {
            Some(mut decryptor) if self.filled == CIPHERTEXT_SEGMENT_BYTES => {
                let result = decryptor.decrypt_next_in_place(&[], &mut *self.buffer);
                self.decryptor = Some(decryptor);
                result
            }
            Some(decryptor) => decryptor.decrypt_last_in_place(&[], &mut *self.buffer),
            None => return Ok(false),
        };
        if result.is_err() {
            // Shorter than a tag fails here too. So would a segment past STREAM's 2^32 - 1
            // counter, 256 TiB in, which no real ciphertext reaches.
            return Err(self.fail(StreamError::Authentication { segment, offset }));
        }
        self.decrypted = true;
        self.position = 0;
        Ok(true)
    }

    fn fail(&mut self, error: StreamError) -> io::Error {
        self.decryptor = None;
        self.buffer.clear();
        self.failed = error.repeat();
        io::Error::new(io::ErrorKind::InvalidData, error)
    }
}

impl<R: Read> Read for DecryptingReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Some(error) = self.failed.as_ref().and_then(StreamError::repeat) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, error));
        }
        if out.is_empty() {
            return Ok(0);
        }
        // Only the last segment can be empty, so one new segment is enough to have bytes or be
        // done.
        if (!self.decrypted || self.position == self.buffer.len()) && !self.next_segment()? {
            return Ok(0);
        }
        let available = &self.buffer[self.position..];
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.position += n;
        Ok(n)
    }
}

impl<R> fmt::Debug for DecryptingReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptingReader")
            .field("segment", &self.segment)
            .field("done", &self.decryptor.is_none())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use proptest::prelude::*;

    use super::*;

    const SEG: usize = SEGMENT_BYTES;
    const CSEG: usize = CIPHERTEXT_SEGMENT_BYTES;

    /// A reader that returns at most a few bytes at a time, cycling through `steps`, and reports
    /// an interruption now and then, as slow pipes and sockets do.
    struct Trickle<'a> {
        data: &'a [u8],
        steps: Vec<usize>,
        calls: usize,
    }

    impl<'a> Trickle<'a> {
        fn new(data: &'a [u8], steps: &[usize]) -> Self {
            Self { data, steps: steps.to_vec(), calls: 0 }
        }
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(11) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let step = self.steps[self.calls % self.steps.len()];
            let n = step.min(out.len()).min(self.data.len());
            out[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn encrypt_vec(key: &BlobKey, plaintext: &[u8]) -> Vec<u8> {
        let mut ciphertext = Vec::new();
        let (id, len) = encrypt(key, plaintext, &mut ciphertext).unwrap();
        assert_eq!(len, ciphertext.len() as u64);
        assert_eq!(id, ContentId::of(&ciphertext));
        ciphertext
    }

    /// Reads everything from a decrypting reader through a small buffer.
    fn decrypt(key: &BlobKey, ciphertext: &[u8], steps: &[usize]) -> io::Result<Vec<u8>> {
        let mut reader = DecryptingReader::new(key, Trickle::new(ciphertext, steps));
        let mut plaintext = Vec::new();
        let mut chunk = [0; 1000];
        loop {
            match reader.read(&mut chunk)? {
                0 => return Ok(plaintext),
                n => plaintext.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The failure of decrypting `ciphertext`, checked to be the InvalidData io::Error carrying
    /// a StreamError, and to be returned again by the next read.
    fn failure(key: &BlobKey, ciphertext: &[u8]) -> String {
        let mut reader = DecryptingReader::new(key, ciphertext);
        let error = io::copy(&mut reader, &mut io::sink()).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let inner = error.get_ref().unwrap().downcast_ref::<StreamError>().unwrap();
        assert_eq!(inner.to_string(), error.to_string());
        let again = reader.read(&mut [0; 10]).unwrap_err();
        assert_eq!(again.to_string(), error.to_string());
        error.to_string()
    }

    fn auth_failure(segment: usize) -> String {
        format!(
            "segment {segment} (ciphertext offset {}) failed authentication: wrong key or modified data",
            segment * CSEG
        )
    }

    #[test]
    fn round_trip_at_segment_boundaries_with_short_reads() {
        let key = BlobKey::generate();
        for len in [0, 1, SEG - 1, SEG, SEG + 1, 3 * SEG + 5] {
            let plaintext = data(len);
            let mut ciphertext = Vec::new();
            // Short reads on the encrypting side too.
            let (id, written) = encrypt(&key, Trickle::new(&plaintext, &[1, 7, 3]), &mut ciphertext).unwrap();
            assert_eq!(written, ciphertext_len(len as u64), "length {len}");
            assert_eq!(ciphertext.len() as u64, written);
            assert_eq!(id, ContentId::of(&ciphertext));
            assert_eq!(decrypt(&key, &ciphertext, &[1, 2, 3, 4, 5, 6, 7]).unwrap(), plaintext, "length {len}");
        }
    }

    #[test]
    fn ciphertext_layout() {
        assert_eq!(ciphertext_len(0), 16);
        assert_eq!(ciphertext_len(1), 17);
        assert_eq!(ciphertext_len(SEG as u64 - 1), SEG as u64 + 15);
        // A full segment is never the last one: an empty last segment follows it.
        assert_eq!(ciphertext_len(SEG as u64), SEG as u64 + 32);
        assert_eq!(ciphertext_len(3 * SEG as u64 + 5), 3 * SEG as u64 + 5 + 4 * 16);
        assert_eq!(ciphertext_len(1 << 40), (1 << 40) + ((1 << 40) / SEG as u64 + 1) * 16);
        assert_eq!(encrypt_vec(&BlobKey::generate(), b"").len(), TAG_BYTES);
    }

    #[test]
    fn same_key_and_plaintext_give_the_same_ciphertext() {
        // Deterministic given the key, which is why a key must never encrypt two blobs.
        let key = BlobKey::from_bytes(&[5; 32]).unwrap();
        assert_eq!(encrypt_vec(&key, b"layer"), encrypt_vec(&key, b"layer"));
        assert_ne!(encrypt_vec(&key, b"layer"), encrypt_vec(&BlobKey::generate(), b"layer"));
    }

    #[test]
    fn a_flipped_byte_names_its_segment() {
        let key = BlobKey::generate();
        let plaintext = data(3 * SEG + 5);
        let ciphertext = encrypt_vec(&key, &plaintext);
        for segment in 0..4 {
            for at in [0, 1000, CSEG - 1] {
                let index = (segment * CSEG + at).min(ciphertext.len() - 1);
                let mut modified = ciphertext.clone();
                modified[index] ^= 0x20;
                assert_eq!(failure(&key, &modified), auth_failure(segment), "byte {index}");
            }
        }
    }

    #[test]
    fn no_plaintext_of_a_bad_segment_is_returned() {
        let key = BlobKey::generate();
        let plaintext = data(2 * SEG + 10);
        let mut ciphertext = encrypt_vec(&key, &plaintext);
        ciphertext[CSEG + 5] ^= 1;
        let mut reader = DecryptingReader::new(&key, &ciphertext[..]);
        let mut out = Vec::new();
        let error = reader.read_to_end(&mut out).unwrap_err();
        assert_eq!(error.to_string(), auth_failure(1));
        // Exactly the first segment came out, and it is right.
        assert_eq!(out, plaintext[..SEG]);
    }

    #[test]
    fn truncation_is_detected() {
        let key = BlobKey::generate();
        let ciphertext = encrypt_vec(&key, &data(3 * SEG + 5));
        // Dropping the last segment leaves a ciphertext that ends where it should start.
        assert_eq!(
            failure(&key, &ciphertext[..3 * CSEG]),
            format!("ciphertext truncated: it ends at offset {}, where segment 3 should start", 3 * CSEG)
        );
        // Dropping it and more: a full segment cannot pass as the last one.
        assert_eq!(
            failure(&key, &ciphertext[..CSEG]),
            format!("ciphertext truncated: it ends at offset {CSEG}, where segment 1 should start")
        );
        // Cut inside a segment, or to less than a tag.
        assert_eq!(failure(&key, &ciphertext[..CSEG + 100]), auth_failure(1));
        assert_eq!(failure(&key, &ciphertext[..CSEG + 3]), auth_failure(1));
        assert_eq!(failure(&key, &ciphertext[..ciphertext.len() - 1]), auth_failure(3));
        assert_eq!(failure(&key, &[]), "ciphertext truncated: it ends at offset 0, where segment 0 should start");

        // An empty blob whose one (empty, last) segment is dropped.
        let empty = encrypt_vec(&key, b"");
        assert_eq!(
            failure(&key, &empty[..0]),
            "ciphertext truncated: it ends at offset 0, where segment 0 should start"
        );
        // A blob of one full segment whose empty last segment is dropped.
        let full = encrypt_vec(&key, &data(SEG));
        assert_eq!(full.len(), CSEG + TAG_BYTES);
        assert!(failure(&key, &full[..CSEG]).starts_with("ciphertext truncated"));
    }

    #[test]
    fn extension_is_detected() {
        let key = BlobKey::generate();
        let plaintext = data(2 * SEG + 5);
        let ciphertext = encrypt_vec(&key, &plaintext);
        // A whole segment appended after the last, a copy of the first.
        let mut extended = ciphertext.clone();
        extended.extend_from_slice(&ciphertext[..CSEG]);
        assert_eq!(failure(&key, &extended), auth_failure(2));
        // A single byte.
        let mut extended = ciphertext.clone();
        extended.push(0);
        assert_eq!(failure(&key, &extended), auth_failure(2));
        // Another blob's ciphertext under the same key appended: its first (full) segment would
        // need the counter at 0.
        let mut extended = encrypt_vec(&key, &data(SEG));
        extended.extend_from_slice(&encrypt_vec(&key, b"more"));
        assert_eq!(failure(&key, &extended), auth_failure(1));
    }

    #[test]
    fn reordering_is_detected() {
        let key = BlobKey::generate();
        let ciphertext = encrypt_vec(&key, &data(3 * SEG + 5));
        let mut swapped = ciphertext.clone();
        swapped[..CSEG].copy_from_slice(&ciphertext[CSEG..2 * CSEG]);
        swapped[CSEG..2 * CSEG].copy_from_slice(&ciphertext[..CSEG]);
        assert_eq!(failure(&key, &swapped), auth_failure(0));
        let mut swapped = ciphertext.clone();
        swapped[CSEG..2 * CSEG].copy_from_slice(&ciphertext[2 * CSEG..3 * CSEG]);
        swapped[2 * CSEG..3 * CSEG].copy_from_slice(&ciphertext[CSEG..2 * CSEG]);
        assert_eq!(failure(&key, &swapped), auth_failure(1));
    }

    #[test]
    fn wrong_key_fails_at_segment_zero() {
        let key = BlobKey::generate();
        for len in [0, 10, 2 * SEG] {
            let ciphertext = encrypt_vec(&key, &data(len));
            assert_eq!(failure(&BlobKey::generate(), &ciphertext), auth_failure(0), "length {len}");
        }
    }

    #[test]
    fn inner_errors_pass_through_and_reading_resumes() {
        /// Fails every other read with a timeout.
        struct Flaky<'a>(&'a [u8], bool);
        impl Read for Flaky<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                self.1 = !self.1;
                if self.1 {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                let n = out.len().min(self.0.len()).min(5000);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let key = BlobKey::generate();
        let plaintext = data(2 * SEG + 77);
        let ciphertext = encrypt_vec(&key, &plaintext);
        let mut reader = DecryptingReader::new(&key, Flaky(&ciphertext, false));
        let (mut out, mut timeouts) = (Vec::new(), 0);
        let mut chunk = [0; 4096];
        loop {
            match reader.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(error) if error.kind() == io::ErrorKind::TimedOut => timeouts += 1,
                Err(error) => panic!("{error}"),
            }
        }
        assert_eq!(out, plaintext);
        assert!(timeouts > 10);
    }

    #[test]
    fn encrypt_reports_io_errors() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let error = encrypt(&BlobKey::generate(), &b"x"[..], Broken).unwrap_err();
        assert!(matches!(error, StreamError::Io(_)), "{error}");
        assert!(error.to_string().contains("disk full"), "{error}");
    }

    #[test]
    fn keys() {
        assert_eq!(BlobKey::from_bytes(&[1; 31]).unwrap_err().to_string(), "a blob key is 32 bytes, got 31");
        let key = BlobKey::from_bytes(&[0xaa; 32]).unwrap();
        assert_eq!(key.as_bytes(), &[0xaa; 32]);
        assert_eq!(format!("{key:?}"), "BlobKey(<redacted>)");
        assert_ne!(BlobKey::generate().as_bytes(), BlobKey::generate().as_bytes());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn round_trip_of_random_data_and_read_patterns(
            plaintext in proptest::collection::vec(any::<u8>(), 0..3 * SEG + 100),
            encrypt_steps in proptest::collection::vec(1..20_000usize, 1..5),
            decrypt_steps in proptest::collection::vec(1..20_000usize, 1..5),
            key in any::<[u8; 32]>(),
        ) {
            let key = BlobKey::from_bytes(&key).unwrap();
            let mut ciphertext = Vec::new();
            let (id, len) = encrypt(&key, Trickle::new(&plaintext, &encrypt_steps), &mut ciphertext).unwrap();
            prop_assert_eq!(len, ciphertext_len(plaintext.len() as u64));
            prop_assert_eq!(id, ContentId::of(&ciphertext));
            prop_assert_eq!(decrypt(&key, &ciphertext, &decrypt_steps).unwrap(), plaintext);
        }

        #[test]
        fn arbitrary_ciphertext_fails_cleanly(
            ciphertext in proptest::collection::vec(any::<u8>(), 0..CSEG + 40),
        ) {
            let key = BlobKey::from_bytes(&[7; 32]).unwrap();
            let error = decrypt(&key, &ciphertext, &[4096]).unwrap_err();
            prop_assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        }
    }
}
