//! One record of a segment: a fixed header, then the payload.
//!
//! ```text
//! magic "MKB1" | flags u8 | 3 zero bytes | raw length u64 LE | payload length u32 LE
//! | key id [8] | BLAKE3 of the raw message [32] | nonce [24] | payload
//! ```
//! The payload is the zstd-compressed message, then, when flag
//! [`ENCRYPTED`] is set, XChaCha20-Poly1305 sealed with the header up to the
//! nonce as additional data: a record cannot be moved under another hash
//! or length without failing authentication. Compress-then-encrypt, since
//! ciphertext does not compress.
//!
//! A message too large to hold in memory is written by [`RecordWriter`],
//! streaming: the zstd frame is the same, and when encrypted the payload is
//! a sequence of chunks (flag [`CHUNKED`]) of [`CHUNK`] compressed bytes
//! each, every one sealed on its own (the STREAM construction of Hoang,
//! Reyhanitabar, Rogaway and Vizár): the nonce is the header's random nonce
//! with the chunk's index and a last-chunk flag folded into its final five
//! bytes, and the additional data is the header without the payload length
//! (not known until the end) and the nonce. Chunks cannot be reordered,
//! dropped, repeated or cut off without failing authentication.

use super::crypto::{Key, KeyId, Keyring, KEY_ID_LEN, NONCE_LEN};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;

/// Record magic.
pub const MAGIC: &[u8; 4] = b"MKB1";
/// Header length in bytes.
pub const HEADER_LEN: usize = 4 + 1 + 3 + 8 + 4 + KEY_ID_LEN + 32 + NONCE_LEN;
/// Flag: the payload is zstd.
pub const ZSTD: u8 = 1;
/// Flag: the payload is sealed.
pub const ENCRYPTED: u8 = 2;
/// Flag (with [`ENCRYPTED`]): the payload is sealed in chunks.
pub const CHUNKED: u8 = 4;
/// Compressed bytes per sealed chunk of a [`CHUNKED`] record.
pub const CHUNK: usize = 1 << 20;
/// Bytes the AEAD adds to what it seals.
const TAG_LEN: usize = 16;
const AAD_LEN: usize = HEADER_LEN - NONCE_LEN;
/// The additional data of each chunk: the header without the payload
/// length (bytes 16..20) and the nonce.
const CHUNK_AAD_LEN: usize = AAD_LEN - 4;

fn chunk_aad(header: &[u8]) -> [u8; CHUNK_AAD_LEN] {
    let mut aad = [0u8; CHUNK_AAD_LEN];
    aad[..16].copy_from_slice(&header[..16]);
    aad[16..].copy_from_slice(&header[20..AAD_LEN]);
    aad
}

/// The nonce of chunk `index`: the record's nonce with the index and the
/// last-chunk flag folded into its final five bytes.
fn chunk_nonce(base: &[u8; NONCE_LEN], index: u32, last: bool) -> [u8; NONCE_LEN] {
    let mut nonce = *base;
    for (b, x) in nonce[NONCE_LEN - 5..NONCE_LEN - 1]
        .iter_mut()
        .zip(index.to_be_bytes())
    {
        *b ^= x;
    }
    nonce[NONCE_LEN - 1] ^= u8::from(last);
    nonce
}

/// Why a record could not be read back.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// Not a record (wrong magic, short, inconsistent lengths).
    #[error("not a valid record: {0}")]
    Malformed(&'static str),
    /// The record names a different message than the catalog.
    #[error("record holds {found}, catalog expects {expected}")]
    WrongHash {
        /// The hash the catalog expects.
        expected: String,
        /// The hash in the record header.
        found: String,
    },
    /// The key is not configured.
    #[error("record is encrypted with key {0}, which is not configured")]
    MissingKey(String),
    /// Authentication failed: the bytes were altered.
    #[error("record fails authentication (altered or wrong key)")]
    Authentication,
    /// zstd rejected the payload.
    #[error("payload does not decompress: {0}")]
    Decompress(String),
    /// The bytes decompress but hash to something else: they were altered.
    #[error("content hash mismatch: expected {expected}, got {actual}")]
    Content {
        /// Expected hash.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
}

/// Builds a record for `raw` whose BLAKE3 is `hash`.
pub fn encode(raw: &[u8], hash: &blake3::Hash, level: i32, key: Option<&Key>) -> Vec<u8> {
    // Compression of a bounded in-memory buffer only fails on allocation.
    let compressed = zstd::bulk::compress(raw, level).expect("zstd compression of a buffer");
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(MAGIC);
    header[4] = ZSTD | if key.is_some() { ENCRYPTED } else { 0 };
    header[8..16].copy_from_slice(&(raw.len() as u64).to_le_bytes());
    header[20..28].copy_from_slice(&key.map(|k| k.id()).unwrap_or(KeyId::NONE).0);
    header[28..60].copy_from_slice(hash.as_bytes());
    // The payload length is part of the additional data, so it is set
    // before sealing: XChaCha20-Poly1305 adds a 16-byte tag.
    let payload_len = compressed.len() + if key.is_some() { 16 } else { 0 };
    header[16..20].copy_from_slice(&(payload_len as u32).to_le_bytes());
    let payload = match key {
        Some(k) => {
            let (nonce, sealed) = k.seal(&compressed, &header[..AAD_LEN]);
            header[60..].copy_from_slice(&nonce);
            sealed
        }
        None => compressed,
    };
    debug_assert_eq!(payload.len(), payload_len);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&payload);
    out
}

/// The fields of a record header.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// Flags.
    pub flags: u8,
    /// Message length.
    pub raw_len: u64,
    /// Payload length.
    pub payload_len: u32,
    /// Key id (zero when not encrypted).
    pub key: KeyId,
    /// BLAKE3 of the message.
    pub hash: [u8; 32],
}

/// Parses a header.
pub fn header(bytes: &[u8]) -> Result<Header, RecordError> {
    if bytes.len() < HEADER_LEN {
        return Err(RecordError::Malformed("shorter than a header"));
    }
    if &bytes[..4] != MAGIC {
        return Err(RecordError::Malformed("bad magic"));
    }
    if bytes[5..8] != [0, 0, 0] {
        return Err(RecordError::Malformed("reserved bytes set"));
    }
    let flags = bytes[4];
    if flags & !(ZSTD | ENCRYPTED | CHUNKED) != 0
        || flags & ZSTD == 0
        || (flags & CHUNKED != 0 && flags & ENCRYPTED == 0)
    {
        return Err(RecordError::Malformed("unknown flags"));
    }
    let encrypted = flags & ENCRYPTED != 0;
    if !encrypted
        && bytes[20..28]
            .iter()
            .chain(&bytes[60..HEADER_LEN])
            .any(|b| *b != 0)
    {
        return Err(RecordError::Malformed(
            "key id or nonce on an unencrypted record",
        ));
    }
    let mut raw_len = [0u8; 8];
    raw_len.copy_from_slice(&bytes[8..16]);
    let mut payload_len = [0u8; 4];
    payload_len.copy_from_slice(&bytes[16..20]);
    let mut key = [0u8; KEY_ID_LEN];
    key.copy_from_slice(&bytes[20..28]);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&bytes[28..60]);
    Ok(Header {
        flags,
        raw_len: u64::from_le_bytes(raw_len),
        payload_len: u32::from_le_bytes(payload_len),
        key: KeyId(key),
        hash,
    })
}

/// Reads a whole record back, checking every layer; returns the message.
pub fn decode(
    record: &[u8],
    expected: &blake3::Hash,
    keys: &Keyring,
) -> Result<Vec<u8>, RecordError> {
    let h = header(record)?;
    if record.len() != HEADER_LEN + h.payload_len as usize {
        return Err(RecordError::Malformed("length does not match header"));
    }
    if &h.hash != expected.as_bytes() {
        return Err(RecordError::WrongHash {
            expected: expected.to_hex().to_string(),
            found: blake3::Hash::from_bytes(h.hash).to_hex().to_string(),
        });
    }
    let payload = &record[HEADER_LEN..];
    let opened;
    let compressed: &[u8] = if h.flags & ENCRYPTED != 0 {
        let key = keys
            .get(h.key)
            .ok_or_else(|| RecordError::MissingKey(h.key.to_hex()))?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&record[AAD_LEN..HEADER_LEN]);
        opened = if h.flags & CHUNKED != 0 {
            open_chunks(key, &nonce, &chunk_aad(record), payload)?
        } else {
            key.open(&nonce, payload, &record[..AAD_LEN])
                .ok_or(RecordError::Authentication)?
        };
        &opened
    } else {
        payload
    };
    // Streamed with a cap one past the recorded length: a forged length
    // cannot make us allocate more than the payload really expands to.
    let mut raw = Vec::with_capacity(h.raw_len.min(16 << 20) as usize);
    decompressing(compressed, |decoder| {
        decoder
            .take(h.raw_len.saturating_add(1))
            .read_to_end(&mut raw)
    })?
    .map_err(|e| RecordError::Decompress(e.to_string()))?;
    let actual = blake3::hash(&raw);
    if &actual != expected || raw.len() as u64 != h.raw_len {
        return Err(RecordError::Content {
            expected: expected.to_hex().to_string(),
            actual: actual.to_hex().to_string(),
        });
    }
    Ok(raw)
}

/// [`decode`] as a stream: the record is read from `record` and the
/// message written to `out` as it is decompressed (and, when sealed in
/// chunks, opened a chunk at a time), so a message of any size is read back
/// in bounded memory. Every layer is checked as in [`decode`]; the content
/// hash and length can only be checked at the end, so on
/// [`RecordError::Content`] (or a failed chunk) `out` has already received
/// bytes that are not the archived message, and the caller must say so.
/// A record sealed whole (not chunked) was small when it was written, and
/// is opened in memory.
pub fn decode_to(
    mut record: impl Read,
    record_len: u64,
    expected: &blake3::Hash,
    keys: &Keyring,
    out: &mut impl Write,
) -> Result<u64, StreamError> {
    let mut head = [0u8; HEADER_LEN];
    record.read_exact(&mut head).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => StreamError::Record(RecordError::Malformed("short record")),
        _ => StreamError::Read(e),
    })?;
    let h = header(&head)?;
    // The length the catalog gives must be the header's: nothing is read,
    // let alone allocated, on the word of a header that does not fit.
    if record_len != HEADER_LEN as u64 + u64::from(h.payload_len) {
        return Err(RecordError::Malformed("length does not match header").into());
    }
    if &h.hash != expected.as_bytes() {
        return Err(RecordError::WrongHash {
            expected: expected.to_hex().to_string(),
            found: blake3::Hash::from_bytes(h.hash).to_hex().to_string(),
        }
        .into());
    }
    // The payload must be exactly the record's rest: counted as it is
    // read, and nothing may follow it.
    let consumed = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let read_failed = std::rc::Rc::new(std::cell::Cell::new(false));
    let payload = Counting {
        inner: (&mut record).take(u64::from(h.payload_len)),
        n: consumed.clone(),
        failed: read_failed.clone(),
    };
    let compressed: Box<dyn Read + '_> = if h.flags & ENCRYPTED != 0 {
        let key = keys
            .get(h.key)
            .ok_or_else(|| RecordError::MissingKey(h.key.to_hex()))?
            .clone();
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&head[AAD_LEN..HEADER_LEN]);
        if h.flags & CHUNKED != 0 {
            Box::new(ChunkOpener {
                inner: payload,
                key,
                nonce,
                aad: chunk_aad(&head),
                left: u64::from(h.payload_len),
                index: 0,
                plain: Vec::new(),
                at: 0,
            })
        } else {
            let mut sealed = Vec::with_capacity(h.payload_len as usize);
            let mut payload = payload;
            payload
                .read_to_end(&mut sealed)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => StreamError::Record(RecordError::Malformed(
                        "the segment ends inside the record",
                    )),
                    _ => StreamError::Read(e),
                })?;
            let opened = key
                .open(&nonce, &sealed, &head[..AAD_LEN])
                .ok_or(RecordError::Authentication)?;
            Box::new(io::Cursor::new(opened))
        }
    } else {
        Box::new(payload)
    };
    let mut hashing = HashingWriter {
        out,
        hasher: blake3::Hasher::new(),
        written: 0,
        failed: false,
    };
    // One past the recorded length: a forged length cannot make us write
    // more than that.
    let copied = decompressing(compressed, |decoder| {
        io::copy(&mut decoder.take(h.raw_len.saturating_add(1)), &mut hashing)
    })?;
    if let Err(e) = copied {
        // Sorted by where it came from: writing out, reading the segment
        // (an I/O error, not damage), or the record itself.
        return Err(if hashing.failed {
            StreamError::Write(e)
        } else if read_failed.get() {
            StreamError::Read(e)
        } else {
            match e.get_ref().and_then(|i| i.downcast_ref::<RecordError>()) {
                Some(r) => StreamError::Record(r.clone()),
                None => StreamError::Record(RecordError::Decompress(e.to_string())),
            }
        });
    }
    let mut rest = [0u8; 1];
    let more = record.read(&mut rest).map_err(StreamError::Read)?;
    if consumed.get() != u64::from(h.payload_len) || more != 0 {
        return Err(RecordError::Malformed("length does not match header").into());
    }
    let actual = hashing.hasher.finalize();
    if &actual != expected || hashing.written != h.raw_len {
        return Err(RecordError::Content {
            expected: expected.to_hex().to_string(),
            actual: actual.to_hex().to_string(),
        }
        .into());
    }
    Ok(hashing.written)
}

thread_local! {
    /// A decompression context per thread, reset before each use. Made
    /// afresh for every record (with `Decoder::new`'s 128 KiB input buffer,
    /// over glibc's mmap threshold), it cost a search page about 5% of its
    /// time in allocation, `munmap` and the TLB flushes after it.
    static DCTX: std::cell::RefCell<Option<zstd::zstd_safe::DCtx<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` on a zstd decoder of `input`, with this thread's context
/// (a fresh one if it is in use further up the stack).
fn decompressing<R: Read, T>(
    input: R,
    f: impl FnOnce(&mut dyn Read) -> T,
) -> Result<T, RecordError> {
    let reader = io::BufReader::with_capacity(32 * 1024, input);
    let failed = |code| RecordError::Decompress(zstd::zstd_safe::get_error_name(code).to_string());
    DCTX.with(|cell| match cell.try_borrow_mut() {
        Ok(mut slot) => {
            let ctx = slot.get_or_insert_with(zstd::zstd_safe::DCtx::create);
            // A read stopped early (a prefix) leaves a frame half done.
            ctx.reset(zstd::zstd_safe::ResetDirective::SessionOnly)
                .map_err(failed)?;
            let mut decoder = zstd::stream::read::Decoder::with_context(reader, ctx);
            Ok(f(&mut decoder))
        }
        Err(_) => {
            let mut decoder = zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(|e| RecordError::Decompress(e.to_string()))?;
            Ok(f(&mut decoder))
        }
    })
}

/// Why [`decode_to`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The record is not what it should be.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The record could not be read.
    #[error("reading the record: {0}")]
    Read(io::Error),
    /// The message could not be written out.
    #[error("writing the message: {0}")]
    Write(io::Error),
}

/// Counts the bytes read through it, and notes an I/O error of the
/// reader below (the segment file); a segment that ends inside the record
/// is damage, not an I/O error.
struct Counting<R: Read> {
    inner: R,
    n: std::rc::Rc<std::cell::Cell<u64>>,
    failed: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.n.set(self.n.get() + n as u64);
                Ok(n)
            }
            Err(e) => {
                if !matches!(
                    e.kind(),
                    io::ErrorKind::UnexpectedEof | io::ErrorKind::Interrupted
                ) {
                    self.failed.set(true);
                }
                Err(e)
            }
        }
    }
}

struct HashingWriter<'w, W: Write> {
    out: &'w mut W,
    hasher: blake3::Hasher,
    written: u64,
    /// The error came from `out`, not from reading the record.
    failed: bool,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.failed = true;
            }
        })?;
        if n == 0 && !buf.is_empty() {
            self.failed = true;
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// The chunks of a [`CHUNKED`] payload opened one at a time, in order.
struct ChunkOpener<R: Read> {
    inner: R,
    key: Key,
    nonce: [u8; NONCE_LEN],
    aad: [u8; CHUNK_AAD_LEN],
    /// Sealed payload bytes not yet read.
    left: u64,
    index: u32,
    plain: Vec<u8>,
    at: usize,
}

impl<R: Read> Read for ChunkOpener<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.plain.len() {
            if self.left == 0 {
                return Ok(0);
            }
            let len = ((CHUNK + TAG_LEN) as u64).min(self.left) as usize;
            if len < TAG_LEN {
                return Err(io::Error::other(RecordError::Malformed(
                    "chunk shorter than a tag",
                )));
            }
            let mut sealed = vec![0u8; len];
            self.inner.read_exact(&mut sealed)?;
            self.left -= len as u64;
            let last = self.left == 0;
            self.plain = self
                .key
                .open(
                    &chunk_nonce(&self.nonce, self.index, last),
                    &sealed,
                    &self.aad,
                )
                .ok_or_else(|| io::Error::other(RecordError::Authentication))?;
            self.at = 0;
            self.index = self
                .index
                .checked_add(1)
                .ok_or_else(|| io::Error::other(RecordError::Malformed("too many chunks")))?;
        }
        let n = buf.len().min(self.plain.len() - self.at);
        buf[..n].copy_from_slice(&self.plain[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Opens every chunk of a [`CHUNKED`] payload, in order.
fn open_chunks(
    key: &Key,
    base: &[u8; NONCE_LEN],
    aad: &[u8],
    payload: &[u8],
) -> Result<Vec<u8>, RecordError> {
    if payload.len() < TAG_LEN {
        return Err(RecordError::Malformed("chunked payload shorter than a tag"));
    }
    let mut out = Vec::with_capacity(payload.len().min(16 << 20));
    let mut at = 0;
    let mut index = 0u32;
    while at < payload.len() {
        let len = (CHUNK + TAG_LEN).min(payload.len() - at);
        if len < TAG_LEN {
            return Err(RecordError::Malformed("chunk shorter than a tag"));
        }
        let last = at + len == payload.len();
        let plain = key
            .open(&chunk_nonce(base, index, last), &payload[at..at + len], aad)
            .ok_or(RecordError::Authentication)?;
        out.extend_from_slice(&plain);
        at += len;
        index = index
            .checked_add(1)
            .ok_or(RecordError::Malformed("too many chunks"))?;
    }
    Ok(out)
}

/// The payload side of a [`RecordWriter`]: compressed bytes in, the
/// record's payload (sealed in chunks when encrypting) out to the file.
struct PayloadSink {
    out: BufWriter<File>,
    seal: Option<Sealer>,
    /// Payload bytes written so far.
    written: u64,
}

struct Sealer {
    key: Key,
    nonce: [u8; NONCE_LEN],
    aad: [u8; CHUNK_AAD_LEN],
    pending: Vec<u8>,
    index: u32,
}

impl PayloadSink {
    fn seal_chunk(&mut self, last: bool) -> io::Result<()> {
        let Some(s) = self.seal.as_mut() else {
            return Ok(());
        };
        let take = s.pending.len().min(CHUNK);
        let sealed = s.key.seal_with(
            &chunk_nonce(&s.nonce, s.index, last),
            &s.pending[..take],
            &s.aad,
        );
        s.pending.drain(..take);
        s.index = s
            .index
            .checked_add(1)
            .ok_or_else(|| io::Error::other("message too large for one record"))?;
        self.out.write_all(&sealed)?;
        self.written += sealed.len() as u64;
        Ok(())
    }
}

impl Write for PayloadSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.seal.as_mut() {
            None => {
                self.out.write_all(buf)?;
                self.written += buf.len() as u64;
            }
            Some(s) => {
                s.pending.extend_from_slice(buf);
                // A chunk is sealed only once more follows it, so the one
                // that ends the payload is always sealed as the last.
                while self.seal.as_ref().is_some_and(|s| s.pending.len() > CHUNK) {
                    self.seal_chunk(false)?;
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Writes one record to a file, streaming: the message goes in through
/// [`Write`], compressed (and sealed) on the way, so memory stays at a few
/// chunks whatever the message size. The caller knows the message's
/// length and hash beforehand (a first pass over the spool file).
pub struct RecordWriter {
    header: [u8; HEADER_LEN],
    raw_len: u64,
    fed: u64,
    zstd: zstd::stream::write::Encoder<'static, PayloadSink>,
}

impl RecordWriter {
    /// A record of a message of `raw_len` bytes hashing to `hash`, written
    /// from the start of `file`.
    pub fn new(
        file: File,
        raw_len: u64,
        hash: &blake3::Hash,
        level: i32,
        key: Option<&Key>,
    ) -> io::Result<RecordWriter> {
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(MAGIC);
        header[4] = ZSTD
            | if key.is_some() {
                ENCRYPTED | CHUNKED
            } else {
                0
            };
        header[8..16].copy_from_slice(&raw_len.to_le_bytes());
        header[20..28].copy_from_slice(&key.map(|k| k.id()).unwrap_or(KeyId::NONE).0);
        header[28..60].copy_from_slice(hash.as_bytes());
        let seal = key.map(|k| {
            let nonce = Key::fresh_nonce();
            header[60..].copy_from_slice(&nonce);
            Sealer {
                key: k.clone(),
                nonce,
                aad: chunk_aad(&header),
                pending: Vec::with_capacity(CHUNK + 64 * 1024),
                index: 0,
            }
        });
        let mut out = BufWriter::with_capacity(256 * 1024, file);
        // The header is written again, complete, by `finish`.
        out.write_all(&[0u8; HEADER_LEN])?;
        let sink = PayloadSink {
            out,
            seal,
            written: 0,
        };
        let mut zstd = zstd::stream::write::Encoder::new(sink, level)?;
        zstd.set_pledged_src_size(Some(raw_len))?;
        zstd.include_contentsize(true)?;
        Ok(RecordWriter {
            header,
            raw_len,
            fed: 0,
            zstd,
        })
    }

    /// Completes the record; returns the file and the record's length.
    pub fn finish(self) -> io::Result<(File, u64)> {
        if self.fed != self.raw_len {
            return Err(io::Error::other(format!(
                "the message changed while being archived: {} bytes, expected {}",
                self.fed, self.raw_len
            )));
        }
        let mut header = self.header;
        let mut sink = self.zstd.finish()?;
        if sink.seal.is_some() {
            sink.seal_chunk(true)?;
        }
        let payload_len = u32::try_from(sink.written)
            .map_err(|_| io::Error::other("message too large for one record (4 GiB compressed)"))?;
        header[16..20].copy_from_slice(&payload_len.to_le_bytes());
        let file = sink.out.into_inner().map_err(|e| e.into_error())?;
        file.write_all_at(&header, 0)?;
        Ok((file, HEADER_LEN as u64 + u64::from(payload_len)))
    }
}

impl Write for RecordWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.zstd.write(buf)?;
        self.fed += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.zstd.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_plain_and_encrypted() {
        let raw = b"Subject: x\n\nhello hello hello hello\n".repeat(50);
        let hash = blake3::hash(&raw);
        let key = Key::from_bytes(&[1; 32]);
        let ring = Keyring::new(Some(key.clone()), vec![]);
        for k in [None, Some(&key)] {
            let rec = encode(&raw, &hash, 3, k);
            assert!(rec.len() < raw.len() / 3, "compressed");
            assert_eq!(decode(&rec, &hash, &ring).unwrap(), raw);
            // Every single flipped byte is caught.
            for i in (0..rec.len()).step_by(7) {
                let mut bad = rec.clone();
                bad[i] ^= 0x40;
                assert!(
                    decode(&bad, &hash, &ring).is_err(),
                    "byte {i} flip undetected"
                );
            }
            assert!(decode(&rec[..rec.len() - 1], &hash, &ring).is_err());
        }
        let rec = encode(&raw, &hash, 3, Some(&key));
        assert_eq!(
            decode(&rec, &hash, &Keyring::default()),
            Err(RecordError::MissingKey(key.id().to_hex()))
        );
    }

    fn written(raw: &[u8], key: Option<&Key>) -> Vec<u8> {
        let hash = blake3::hash(raw);
        let file = tempfile::tempfile().unwrap();
        let mut w = RecordWriter::new(file, raw.len() as u64, &hash, 3, key).unwrap();
        for part in raw.chunks(100_000) {
            w.write_all(part).unwrap();
        }
        let (file, len) = w.finish().unwrap();
        let mut rec = vec![0u8; len as usize];
        file.read_exact_at(&mut rec, 0).unwrap();
        assert_eq!(file.metadata().unwrap().len(), len);
        rec
    }

    /// Incompressible bytes, so a record spans several chunks.
    fn noise(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 32);
        let mut h = blake3::Hasher::new();
        h.update(b"noise");
        let mut reader = h.finalize_xof();
        out.resize(len, 0);
        reader.fill(&mut out);
        out
    }

    #[test]
    fn streamed_records_read_back_plain_encrypted_and_at_chunk_edges() {
        let key = Key::from_bytes(&[3; 32]);
        let ring = Keyring::new(Some(key.clone()), vec![]);
        // Empty, small, and payloads ending just before, at and after a
        // chunk boundary (zstd adds a few bytes to incompressible input).
        for len in [0, 1, 5000, CHUNK - 40, CHUNK, CHUNK + 7, 3 * CHUNK + 11] {
            let raw = noise(len);
            let hash = blake3::hash(&raw);
            for k in [None, Some(&key)] {
                let rec = written(&raw, k);
                assert_eq!(decode(&rec, &hash, &ring).unwrap(), raw, "len {len}");
            }
        }
        // Compressible input gives the same frame as the in-memory encoder.
        let text = b"Subject: x\n\nhello hello hello\n".repeat(10_000);
        let rec = written(&text, None);
        assert_eq!(decode(&rec, &blake3::hash(&text), &ring).unwrap(), text);
        assert!(rec.len() < text.len() / 20);
    }

    fn read_streaming(rec: &[u8], hash: &blake3::Hash, ring: &Keyring) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        decode_to(rec, rec.len() as u64, hash, ring, &mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// The streaming reader gives what `decode` gives, for every kind of
    /// record, and refuses every altered one `decode` refuses.
    #[test]
    fn the_streaming_reader_agrees_with_decode() {
        let key = Key::from_bytes(&[5; 32]);
        let ring = Keyring::new(Some(key.clone()), vec![]);
        let mut records = Vec::new();
        for len in [0, 1, 5000, CHUNK + 7, 2 * CHUNK + 100] {
            let raw = noise(len);
            for k in [None, Some(&key)] {
                records.push((written(&raw, k), raw.clone()));
            }
        }
        let text = b"Subject: x\n\nhello hello\n".repeat(500);
        for k in [None, Some(&key)] {
            records.push((encode(&text, &blake3::hash(&text), 3, k), text.clone()));
        }
        for (rec, raw) in &records {
            let hash = blake3::hash(raw);
            assert_eq!(read_streaming(rec, &hash, &ring).as_deref(), Ok(&raw[..]));
            for at in (0..rec.len()).step_by((rec.len() / 12).max(1)) {
                let mut bad = rec.clone();
                bad[at] ^= 0x10;
                if decode(&bad, &hash, &ring).is_err() {
                    assert!(
                        read_streaming(&bad, &hash, &ring).is_err(),
                        "flip at {at} of {}",
                        rec.len()
                    );
                }
            }
            assert!(read_streaming(&rec[..rec.len() - 1], &hash, &ring).is_err());
            assert!(read_streaming(rec, &blake3::hash(b"other"), &ring).is_err());
        }
    }

    #[test]
    fn streamed_chunks_cannot_be_altered_reordered_or_cut() {
        let key = Key::from_bytes(&[4; 32]);
        let ring = Keyring::new(Some(key.clone()), vec![]);
        let raw = noise(2 * CHUNK + 100);
        let hash = blake3::hash(&raw);
        let rec = written(&raw, Some(&key));
        assert_eq!(decode(&rec, &hash, &ring).unwrap(), raw);
        let full = CHUNK + TAG_LEN;
        let set_len = |r: &mut Vec<u8>| {
            let n = (r.len() - HEADER_LEN) as u32;
            r[16..20].copy_from_slice(&n.to_le_bytes());
        };
        // A flipped byte in each chunk and in the header.
        for at in [
            4,
            9,
            30,
            HEADER_LEN + 1,
            HEADER_LEN + full + 5,
            rec.len() - 1,
        ] {
            let mut bad = rec.clone();
            bad[at] ^= 1;
            assert!(decode(&bad, &hash, &ring).is_err(), "flip at {at}");
        }
        // The first two chunks swapped.
        let mut swapped = rec[..HEADER_LEN].to_vec();
        swapped.extend_from_slice(&rec[HEADER_LEN + full..HEADER_LEN + 2 * full]);
        swapped.extend_from_slice(&rec[HEADER_LEN..HEADER_LEN + full]);
        swapped.extend_from_slice(&rec[HEADER_LEN + 2 * full..]);
        assert_eq!(
            decode(&swapped, &hash, &ring),
            Err(RecordError::Authentication)
        );
        // Cut after a whole chunk, with the length fixed up to match.
        let mut cut = rec[..HEADER_LEN + full].to_vec();
        set_len(&mut cut);
        assert_eq!(decode(&cut, &hash, &ring), Err(RecordError::Authentication));
        // The last chunk dropped, the length fixed up.
        let mut dropped = rec[..HEADER_LEN + 2 * full].to_vec();
        set_len(&mut dropped);
        assert_eq!(
            decode(&dropped, &hash, &ring),
            Err(RecordError::Authentication)
        );
        // Unchunked decoding of a chunked record, and the reverse: the
        // flag is authenticated.
        let mut unflagged = rec.clone();
        unflagged[4] &= !CHUNKED;
        assert!(decode(&unflagged, &hash, &ring).is_err());
    }

    #[test]
    fn a_writer_fed_other_than_announced_fails() {
        let raw = noise(1000);
        let hash = blake3::hash(&raw);
        let file = tempfile::tempfile().unwrap();
        let mut w = RecordWriter::new(file, 2000, &hash, 3, None).unwrap();
        w.write_all(&raw).unwrap();
        assert!(w.finish().is_err());
    }
}
