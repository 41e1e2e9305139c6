//! The native archive store: every message stored once, every delivery
//! recorded, all of it searchable and provable.
//!
//! - [`blobs`]: message bytes, content-addressed by BLAKE3, zstd-compressed,
//!   optionally encrypted, packed into append-only segment files.
//! - [`catalog`]: one row per message and one per delivery (envelope,
//!   login, capture path, time), plus the full-text index.
//! - [`chain`]: the hash chain over deliveries that makes tampering visible.
//! - [`verify`]: re-reads everything and checks the chain; checkpoints.
//! - [`owner`]: who owns the files the store creates, and with which modes.
//!
//! Durability order for a commit: the records are written and fdatasync'd
//! into their segment first, then one SQLite transaction (fsync'd WAL)
//! makes the messages, deliveries and the segment's new committed length
//! visible. A crash between the two leaves bytes past the committed length,
//! which the next writer cuts off; a crash before either leaves nothing.
//! Only after the transaction returns is a delivery reported stored.
//! Writers in several processes (`mailkeep pipe` runs one per message)
//! take an exclusive `flock` on `lock` around each commit.

#![forbid(unsafe_code)]

pub mod blobs;
pub mod catalog;
pub mod chain;
pub mod export;
pub mod owner;
pub mod verify;

use blobs::crypto::{Key, KeyError, Keyring};
use blobs::record::{self, RecordError};
use blobs::{BlobBackend, Location, Part, SegmentDir, SEGMENT_MAGIC};
use catalog::sqlite::Sqlite;
use catalog::{Catalog, CatalogError, CommitBatch, Hit, NewDelivery, NewMessage, Totals};
use chain::DeliveryRecord;
use mailkeep_envelope::{CapturePath, Envelope};
use mailkeep_query::Query;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use mailkeep_index::Limits as IndexLimits;

/// Segments are closed at this size; the next record starts a new one.
pub const DEFAULT_SEGMENT_SIZE: u64 = 256 << 20;
/// zstd level: 3 is zstd's default, and the measured sweet spot here
/// (docs/decisions.md).
pub const DEFAULT_COMPRESSION_LEVEL: i32 = 3;

/// What preparing a message too large for the index to read whole holds
/// in memory: its header section and the compressor's and sealer's
/// buffers.
const STREAM_MEMORY: u64 = 4 << 20;

/// Settings of a store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The directory holding `catalog.sqlite`, `segments/` and `lock`.
    pub path: PathBuf,
    /// Key for new records (64 hex digits); none means not encrypted.
    pub encryption_key_file: Option<PathBuf>,
    /// Earlier keys, still needed to read older records.
    pub old_key_files: Vec<PathBuf>,
    /// ed25519 seed (64 hex digits) that signs checkpoints.
    pub signing_key_file: Option<PathBuf>,
    /// zstd level.
    pub compression_level: i32,
    /// Segment size limit.
    pub segment_size: u64,
    /// Text extraction limits.
    pub index: IndexLimits,
    /// Group (gid) given read access to everything in the store.
    pub group: Option<u32>,
}

impl StoreConfig {
    /// Defaults for a store at `path`.
    pub fn new(path: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            path: path.into(),
            encryption_key_file: None,
            old_key_files: Vec::new(),
            signing_key_file: None,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            segment_size: DEFAULT_SEGMENT_SIZE,
            index: IndexLimits::default(),
            group: None,
        }
    }
}

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The catalog failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A key could not be loaded.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A stored record could not be read back.
    #[error("message {hash}: {source}")]
    Record {
        /// The message.
        hash: String,
        /// The cause.
        #[source]
        source: RecordError,
    },
    /// No such delivery.
    #[error("no delivery with id {0}")]
    NotFound(i64),
    /// The store was changed under us in a way a writer cannot continue.
    #[error("{0}")]
    Inconsistent(String),
    /// A write to a store opened read-only.
    #[error("the store is open read-only")]
    ReadOnly,
}

impl StoreError {
    /// True when the operating system refused access (a permission or
    /// read-only file system problem, not damage to the store).
    pub fn is_permission_denied(&self) -> bool {
        let mut e: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(err) = e {
            if let Some(io) = err.downcast_ref::<io::Error>() {
                if matches!(
                    io.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
                ) {
                    return true;
                }
            }
            if let Some(rusqlite::Error::SqliteFailure(f, _)) =
                err.downcast_ref::<rusqlite::Error>()
            {
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::PermissionDenied
                        | rusqlite::ErrorCode::ReadOnly
                        | rusqlite::ErrorCode::CannotOpen
                ) {
                    return true;
                }
            }
            e = err.source();
        }
        false
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let what = what.into();
    move |source| {
        // "Permission denied" alone does not say as whom.
        let what = if source.kind() == io::ErrorKind::PermissionDenied {
            format!("{what} (as {})", owner::current_user())
        } else {
            what
        };
        StoreError::Io { what, source }
    }
}

/// fsync a directory, so entries created in it survive a crash.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces the file at `path` with `bytes` atomically: written beside it
/// (`.NAME.new`) with `mode` and, where allowed, `owner` (uid, gid),
/// fsynced, renamed over it, the directory fsynced; a crash leaves the old
/// file or the new one, a failure nothing beside it.
pub fn replace_file(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.new",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = (|| {
        if let Some((uid, gid)) = owner {
            // Not allowed (another user's file, and this is not root):
            // the new file is this user's.
            let _ = std::os::unix::fs::fchown(&f, Some(uid), Some(gid));
        }
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    fsync_dir(dir)
}

/// Parses 64 hex digits.
pub fn parse_hex_hash(text: &str) -> Option<[u8; 32]> {
    blobs::crypto::parse_hex32(text)
}

/// One delivery ready to commit: everything CPU-heavy (hashing, text
/// extraction, compression, encryption) done, nothing written.
#[derive(Debug)]
pub struct Prepared {
    key: [u8; 32],
    hash: blake3::Hash,
    size: u64,
    record: DeliveryRecord,
    /// The encoded record and search fields; `None` when the bytes were
    /// already stored when this was prepared.
    body: Option<Body>,
}

/// A new message's record (in memory, or staged in an unnamed file for a
/// spooled message) and search fields.
#[derive(Debug)]
struct Body {
    record: Part,
    fields: mailkeep_index::Extracted,
}

impl Prepared {
    /// BLAKE3 of the message.
    pub fn hash(&self) -> &blake3::Hash {
        &self.hash
    }

    /// Bytes this adds to a segment (0 when already stored).
    pub fn weight(&self) -> usize {
        self.body
            .as_ref()
            .map(|b| b.record.len() as usize + b.fields.text.len())
            .unwrap_or(0)
    }

    /// Bytes this holds in memory until its commit: a staged record is on
    /// disk, and only its search fields count.
    pub fn memory(&self) -> usize {
        match &self.body {
            Some(Body {
                record: Part::Bytes(b),
                fields,
            }) => b.len() + fields.text.len(),
            Some(Body { fields, .. }) => fields.text.len(),
            None => 0,
        }
    }
}

/// What a commit did with one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Delivery id.
    pub id: i64,
    /// BLAKE3 of the message, hex.
    pub hash: String,
    /// The same delivery was already recorded (a retry or re-import).
    pub duplicate: bool,
    /// The message bytes were new to the store.
    pub new_message: bool,
}

/// One removal: the delivery id and why.
pub type Removal = (i64, String);

/// The `meta` key of [`Store::audit_anchor`].
const AUDIT_ANCHOR: &str = "audit_anchor";

/// Records are copied by compaction in writes of about this many bytes.
const COMPACT_CHUNK: u64 = 32 << 20;
/// Deliveries removed per catalog transaction.
const REMOVE_CHUNK: usize = 500;
/// Pause between a removal's transactions (and compaction's segments), so
/// a writer waiting for the lock gets it.
const LOCK_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// What [`Store::remove`] did.
#[derive(Debug, Clone, Default)]
pub struct RemoveReport {
    /// (delivery id, tombstone id) for each delivery removed.
    pub deliveries: Vec<(i64, i64)>,
    /// Messages deleted (their last delivery was removed).
    pub messages: u64,
    /// The compaction that followed.
    pub compacted: CompactReport,
    /// `go_on` stopped it before the end.
    pub stopped: bool,
    /// The catalog's write-ahead log could be emptied (a reader holding it
    /// open prevents that; removed text may then stay in it until the
    /// next checkpoint).
    pub wal_truncated: bool,
}

/// What [`Store::compact`] did.
#[derive(Debug, Clone, Default)]
pub struct CompactReport {
    /// Segments rewritten without their dead records.
    pub segments_rewritten: u64,
    /// Segment files of an interrupted compaction deleted.
    pub orphans_removed: u64,
    /// Bytes given back.
    pub freed: u64,
}

/// How much of a message [`Store::link_older_messages`] reads: its header
/// section, in all but hostile mail.
pub const LINK_PREFIX: usize = 64 * 1024;

/// What one step of [`Store::link_older_messages`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStep {
    /// Messages read.
    pub read: usize,
    /// Of those, messages that could not be read (no links added).
    pub unreadable: usize,
    /// The newest message still to be read, if any.
    pub pending: Option<i64>,
}

/// The store.
pub struct Store {
    config: StoreConfig,
    keys: Keyring,
    blobs: Box<dyn BlobBackend>,
    /// The writer's connection.
    catalog: Mutex<Box<dyn Catalog>>,
    /// A second connection for lookups and queries, so they never wait
    /// behind a commit's fsyncs (WAL readers see the last commit).
    reader: Mutex<Box<dyn Catalog>>,
    /// The writers' lock; `None` when opened read-only.
    lock: Option<File>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.config.path.display())
    }
}

/// The identity of a delivery: the same capture seen twice (a retry after
/// a temporary failure, a re-import) gets the same key and is stored once.
/// With a queue id the MTA names the transaction; without one, the capture
/// time does, except for imports, whose guessed envelope is all there is.
pub fn delivery_key(content: &blake3::Hash, r: &DeliveryRecord) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("mailkeep 2026-11 delivery key");
    let mut field = |s: &[u8]| {
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s);
    };
    field(content.as_bytes());
    field(r.capture.as_bytes());
    field(r.queue_id.as_deref().unwrap_or("").as_bytes());
    field(r.sender.as_deref().unwrap_or("<>").as_bytes());
    let mut rcpts = r.recipients.clone();
    rcpts.sort();
    for rcpt in &rcpts {
        field(rcpt.as_bytes());
    }
    if r.queue_id.is_none() && r.capture != CapturePath::Import.as_str() {
        // Seconds: the precision of the Received date in mailkeep's own
        // envelope headers, so an import of a copy matches the capture.
        field(&(r.received.div_euclid(1_000_000)).to_le_bytes());
    }
    *h.finalize().as_bytes()
}

/// The envelope a record describes, around the message bytes: the inverse
/// of [`record_of`], for exports that carry the envelope.
pub fn envelope_of(r: &DeliveryRecord, message: mailkeep_envelope::RawMessage) -> Envelope {
    let capture = CapturePath::parse(&r.capture).unwrap_or(CapturePath::Import);
    let mut env = Envelope::new(capture, message);
    env.received = chrono::DateTime::from_timestamp_micros(r.received).unwrap_or_default();
    env.sender = r.sender.clone();
    env.recipients = r.recipients.clone();
    env.login = r.login.clone();
    env.login_method = r.login_method.clone();
    env.queue_id = r.queue_id.clone();
    env.client = mailkeep_envelope::Client {
        address: r.client_address.clone(),
        port: r.client_port,
        hostname: r.client_hostname.clone(),
        helo: r.client_helo.clone(),
    };
    env.tls = r.tls.clone();
    env.tags = r.tags.clone();
    env.sender_params = r.sender_params.clone();
    env
}

/// The chained record of an envelope (id assigned at commit).
pub fn record_of(env: &Envelope, content: &blake3::Hash, size: u64) -> DeliveryRecord {
    DeliveryRecord {
        v: 1,
        id: 0,
        kind: "delivery".into(),
        content: content.to_hex().to_string(),
        size,
        received: env.received.timestamp_micros(),
        capture: env.capture.as_str().to_string(),
        sender: env.sender.clone(),
        recipients: env.recipients.clone(),
        login: env.login.clone().filter(|l| !l.is_empty()),
        login_method: env.login_method.clone().filter(|l| !l.is_empty()),
        queue_id: env.queue_id.clone().filter(|q| !q.is_empty()),
        client_address: env.client.address.clone(),
        client_port: env.client.port,
        client_hostname: env.client.hostname.clone(),
        client_helo: env.client.helo.clone(),
        tls: env.tls.clone().filter(|t| !t.is_empty()),
        tags: env.tags.clone(),
        sender_params: env.sender_params.clone(),
    }
}

impl Store {
    /// Opens the store at `config.path` for writing, creating it when
    /// missing (see [`owner`] for who owns what it creates).
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        owner::create_store_dir(&config.path, config.group)
            .map_err(io_err(format!("creating {}", config.path.display())))?;
        Self::open_writer(config)
    }

    /// Opens (creating what is missing) the store for writing.
    fn open_writer(config: StoreConfig) -> Result<Store, StoreError> {
        let catalog_path = config.path.join("catalog.sqlite");
        let keys = Self::keyring(&config)?;
        let own = owner::Ownership::for_store(&config.path, config.group).map_err(io_err(
            format!("opening the store at {}", config.path.display()),
        ))?;
        if config.group.is_some() {
            own.apply_path(&config.path)
                .map_err(io_err("giving the store its group"))?;
        }
        let lock_path = config.path.join("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .mode(own.file_mode())
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(format!("opening {}", lock_path.display())))?;
        own.apply(&lock, false)
            .map_err(io_err(format!("owner of {}", lock_path.display())))?;
        let blobs = SegmentDir::open(&config.path.join("segments"), own)
            .map_err(io_err("opening the segments directory"))?;
        {
            // SQLite creates its file (and the -wal and -shm files after
            // it) with the database file's mode (and, run as root, owner);
            // make that right first.
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(own.file_mode())
                .open(&catalog_path)
            {
                Ok(f) => own
                    .apply(&f, false)
                    .map_err(io_err(format!("owner of {}", catalog_path.display())))?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(format!("creating {}", catalog_path.display()))(e)),
            }
        }
        if config.group.is_some() {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = catalog_path.clone().into_os_string();
                p.push(suffix);
                own.apply_path(Path::new(&p))
                    .map_err(io_err("giving the catalog its group"))?;
            }
        }
        let catalog = Sqlite::open(&catalog_path, true)?;
        let reader = Sqlite::open(&catalog_path, false)?;
        fsync_dir(&config.path).map_err(io_err(format!("syncing {}", config.path.display())))?;
        Ok(Store {
            keys,
            blobs: Box::new(blobs),
            catalog: Mutex::new(Box::new(catalog)),
            reader: Mutex::new(Box::new(reader)),
            lock: Some(lock),
            config,
        })
    }

    /// Opens an existing store for reading only: nothing in it is created,
    /// locked or changed, so it works on a read-only mount, a backup copy
    /// or with group read access alone.
    pub fn open_read_only(config: StoreConfig) -> Result<Store, StoreError> {
        let catalog_path = Self::existing_catalog(&config)?;
        let keys = Self::keyring(&config)?;
        let blobs = SegmentDir::existing(&config.path.join("segments"));
        let catalog = Sqlite::open_read_only(&catalog_path)?;
        let reader = Sqlite::open_read_only(&catalog_path)?;
        Ok(Store {
            keys,
            blobs: Box::new(blobs),
            catalog: Mutex::new(Box::new(catalog)),
            reader: Mutex::new(Box::new(reader)),
            lock: None,
            config,
        })
    }

    /// The catalog of an existing store; "no store here" and "not allowed
    /// to look" are told apart.
    fn existing_catalog(config: &StoreConfig) -> Result<PathBuf, StoreError> {
        let catalog_path = config.path.join("catalog.sqlite");
        if let Err(e) = std::fs::metadata(&catalog_path) {
            let source = if e.kind() == io::ErrorKind::NotFound {
                io::Error::new(io::ErrorKind::NotFound, "no catalog.sqlite there")
            } else {
                e
            };
            return Err(io_err(format!(
                "opening the store at {}",
                config.path.display()
            ))(source));
        }
        Ok(catalog_path)
    }

    fn keyring(config: &StoreConfig) -> Result<Keyring, StoreError> {
        let current = config
            .encryption_key_file
            .as_deref()
            .map(Key::load)
            .transpose()?;
        let old = config
            .old_key_files
            .iter()
            .map(|p| Key::load(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Keyring::new(current, old))
    }

    /// The settings in use.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    fn catalog(&self) -> std::sync::MutexGuard<'_, Box<dyn Catalog>> {
        self.catalog.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Box<dyn Catalog>> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Does the CPU work for one delivery of `env` (no locks held except a
    /// short catalog lookup, so several threads can prepare at once). A
    /// message held in memory is encoded in memory; a spooled one is
    /// compressed into a staged, unnamed record file beside the segments,
    /// so its record is never held (its bytes only up to the index's
    /// `max_input`, for text extraction).
    pub fn prepare(&self, env: &Envelope) -> Result<Prepared, StoreError> {
        match env.message.as_bytes() {
            Some(bytes) => self.prepare_bytes(env, bytes),
            None => self.prepare_streamed(env),
        }
    }

    /// About how many bytes of memory [`Store::prepare`] takes for `env`
    /// at its peak, for a caller that bounds the memory of several
    /// preparations at once: a message in memory is encoded in memory; a
    /// spooled one is read whole and parsed (decoded parts beside it) only
    /// up to the index's `max_input`, and otherwise streamed in chunks.
    pub fn preparation_memory(&self, env: &Envelope) -> u64 {
        let len = env.message.len();
        if env.message.as_bytes().is_some() {
            len
        } else if len <= self.config.index.max_input as u64 {
            2 * len
        } else {
            STREAM_MEMORY
        }
    }

    /// [`Store::prepare`] for a message in memory (`bytes` are its bytes).
    fn prepare_bytes(&self, env: &Envelope, bytes: &[u8]) -> Result<Prepared, StoreError> {
        let hash = env.message.hash().map_err(io_err("reading the message"))?;
        let size = bytes.len() as u64;
        let record = record_of(env, &hash, size);
        let key = delivery_key(&hash, &record);
        let known = self.reader().message(hash.as_bytes())?.is_some();
        let body = if known {
            None
        } else {
            let fields = mailkeep_index::extract(bytes, &self.config.index);
            let encoded = record::encode(
                bytes,
                &hash,
                self.config.compression_level,
                self.keys.current(),
            );
            Some(Body {
                record: Part::Bytes(encoded),
                fields,
            })
        };
        Ok(Prepared {
            key,
            hash,
            size,
            record,
            body,
        })
    }

    /// [`Store::prepare`] for a spooled message, whose hash the spool
    /// computed as it arrived. One the index reads whole (up to
    /// `max_input`) is read from the spool file once; a larger one is
    /// streamed through the compressor, never held.
    fn prepare_streamed(&self, env: &Envelope) -> Result<Prepared, StoreError> {
        let size = env.message.len();
        let read = io_err("reading the message");
        let whole = if size <= self.config.index.max_input as u64 {
            Some(env.message.to_vec().map_err(read)?)
        } else {
            None
        };
        let hash = match (&whole, env.message.known_hash()) {
            (_, Some(hash)) => hash,
            (Some(bytes), None) => blake3::hash(bytes),
            (None, None) => env.message.hash().map_err(io_err("reading the message"))?,
        };
        let record = record_of(env, &hash, size);
        let key = delivery_key(&hash, &record);
        if self.reader().message(hash.as_bytes())?.is_some() {
            return Ok(Prepared {
                key,
                hash,
                size,
                record,
                body: None,
            });
        }
        let fields = match &whole {
            Some(bytes) => mailkeep_index::extract(bytes, &self.config.index),
            None => {
                let head = env.message.head().map_err(io_err("reading the message"))?;
                mailkeep_index::extract_headers_only(&head, size, &self.config.index)
            }
        };
        let staged = tempfile::tempfile_in(self.staging_dir())
            .map_err(io_err("staging a record beside the segments"))?;
        let mut writer = record::RecordWriter::new(
            staged,
            size,
            &hash,
            self.config.compression_level,
            self.keys.current(),
        )
        .map_err(io_err("staging a record"))?;
        match &whole {
            Some(bytes) => io::Write::write_all(&mut writer, bytes),
            None => io::copy(&mut env.message.reader(), &mut writer).map(drop),
        }
        .map_err(io_err("compressing the message"))?;
        // The writer checks that it got the `size` bytes the hash is of
        // (a spool file that changed in between fails here).
        let (file, len) = writer.finish().map_err(io_err("staging a record"))?;
        Ok(Prepared {
            key,
            hash,
            size,
            record,
            body: Some(Body {
                record: Part::File { file, len },
                fields,
            }),
        })
    }

    /// Where streamed records are staged until their commit: beside the
    /// segments, so the copy into a segment stays on one file system.
    fn staging_dir(&self) -> PathBuf {
        self.config.path.join("segments")
    }

    /// Makes a batch durable: one segment append and fsync, one catalog
    /// transaction. All or nothing: on error nothing of the batch is
    /// recorded.
    pub fn commit(&self, items: Vec<Prepared>) -> Result<Vec<Stored>, StoreError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let lock = self.lock.as_ref().ok_or(StoreError::ReadOnly)?;
        let _flock = FileLock::exclusive(lock).map_err(io_err("locking the store"))?;
        let mut catalog = self.catalog();
        let key_id = self
            .keys
            .current()
            .map(|k| k.id())
            .unwrap_or(blobs::crypto::KeyId::NONE);
        let (segment, at) = catalog.active_segment(key_id, self.config.segment_size)?;
        // Offsets are `at + appended`: a new segment starts with the file
        // magic at offset 0.
        let mut parts: Vec<Part> = Vec::new();
        let mut appended = 0u64;
        if at == 0 {
            parts.push(Part::Bytes(SEGMENT_MAGIC.to_vec()));
            appended = SEGMENT_MAGIC.len() as u64;
        }
        let mut batch = CommitBatch::default();
        let mut results: Vec<Option<Stored>> = vec![None; items.len()];
        // Keys and hashes first seen in this batch.
        let mut batch_keys: HashMap<[u8; 32], usize> = HashMap::new();
        let mut batch_hashes: HashMap<[u8; 32], ()> = HashMap::new();
        let mut order = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let hash_hex = item.hash.to_hex().to_string();
            if let Some(id) = catalog.delivery_by_key(&item.key)? {
                results[i] = Some(Stored {
                    id,
                    hash: hash_hex,
                    duplicate: true,
                    new_message: false,
                });
                continue;
            }
            if let Some(&first) = batch_keys.get(&item.key) {
                order.push((i, Some(first)));
                continue;
            }
            batch_keys.insert(item.key, i);
            let hash = *item.hash.as_bytes();
            let stored_before =
                batch_hashes.contains_key(&hash) || catalog.message(&hash)?.is_some();
            let new_message = !stored_before;
            if new_message {
                let Some(Body { record, fields }) = item.body else {
                    return Err(StoreError::Inconsistent(format!(
                        "message {hash_hex} disappeared from the catalog while being archived; retry"
                    )));
                };
                let offset = at + appended;
                let len = record.len();
                appended += len;
                match (record, parts.last_mut()) {
                    (Part::Bytes(bytes), Some(Part::Bytes(b))) => b.extend_from_slice(&bytes),
                    (record, _) => parts.push(record),
                }
                batch.messages.push(NewMessage {
                    hash,
                    location: Location {
                        segment,
                        offset,
                        len,
                    },
                    size: item.size,
                    key: key_id,
                    fields,
                });
                batch_hashes.insert(hash, ());
            }
            batch.deliveries.push(NewDelivery {
                key: item.key,
                record: item.record,
            });
            results[i] = Some(Stored {
                id: 0,
                hash: hash_hex,
                duplicate: false,
                new_message,
            });
            order.push((i, None));
        }
        if !batch.messages.is_empty() {
            self.blobs
                .put(segment, at, &parts)
                .map_err(io_err(format!("writing segment {segment}")))?;
            batch.segments.push((segment, key_id, at + appended));
        }
        let ids = if batch.deliveries.is_empty() {
            Vec::new()
        } else {
            catalog.commit(batch)?
        };
        let mut ids = ids.into_iter();
        for (i, first) in order {
            match first {
                None => {
                    if let (Some(r), Some(id)) = (results[i].as_mut(), ids.next()) {
                        r.id = id;
                    }
                }
                Some(first) => {
                    let mut r = results[first].clone().ok_or_else(|| {
                        StoreError::Inconsistent("duplicate without its first".into())
                    })?;
                    r.duplicate = true;
                    r.new_message = false;
                    results[i] = Some(r);
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.ok_or_else(|| StoreError::Inconsistent("a delivery got no result".into())))
            .collect()
    }

    /// Prepares and commits one envelope.
    pub fn put(&self, env: &Envelope) -> Result<Stored, StoreError> {
        let p = self.prepare(env)?;
        self.commit(vec![p])?
            .pop()
            .ok_or_else(|| StoreError::Inconsistent("empty commit result".into()))
    }

    /// Deliveries matching a query, newest first.
    pub fn search(&self, query: &Query, limit: Option<usize>) -> Result<Vec<Hit>, StoreError> {
        Ok(self.reader().search(query, limit)?)
    }

    /// One page of the deliveries matching a query, how many match in
    /// all (counted up to `page.count_up_to`), and their facets if asked.
    pub fn search_page(
        &self,
        query: &Query,
        page: catalog::Page,
    ) -> Result<catalog::Found, StoreError> {
        Ok(self.reader().search_page(query, page)?)
    }

    /// See [`catalog::Catalog::set_page_window`] (for tests).
    #[doc(hidden)]
    pub fn set_page_window(&self, deliveries: i64) {
        self.reader().set_page_window(deliveries);
    }

    /// One delivery.
    pub fn get(&self, id: i64) -> Result<Hit, StoreError> {
        self.reader().hit(id)?.ok_or(StoreError::NotFound(id))
    }

    /// The exact original bytes of a message, checked against its hash.
    pub fn raw_by_hash(&self, hash_hex: &str) -> Result<Vec<u8>, StoreError> {
        let hash = parse_hex_hash(hash_hex)
            .ok_or_else(|| StoreError::Inconsistent(format!("bad content hash {hash_hex:?}")))?;
        let row = self.reader().message(&hash)?.ok_or_else(|| {
            StoreError::Inconsistent(format!("message {hash_hex} is not in the catalog"))
        })?;
        self.read_record(&row.hash, row.location)
    }

    /// The first `max` bytes of a message (all of it when shorter), read
    /// and checked no further than that: for a glance at a message (a
    /// result's snippet) whatever its size.
    pub fn raw_prefix(&self, hash_hex: &str, max: usize) -> Result<Vec<u8>, StoreError> {
        struct Prefix {
            buf: Vec<u8>,
            max: usize,
        }
        impl io::Write for Prefix {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                let room = self.max - self.buf.len();
                if room == 0 {
                    // Stops the read: nothing more is wanted.
                    return Err(io::Error::other("prefix complete"));
                }
                let n = room.min(b.len());
                self.buf.extend_from_slice(&b[..n]);
                Ok(n)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut p = Prefix {
            buf: Vec::with_capacity(max.min(64 * 1024)),
            max,
        };
        match self.write_raw(hash_hex, &mut p) {
            Ok(_) => Ok(p.buf),
            // Only bytes already checked are ever written out, so a full
            // prefix is what the message begins with.
            Err(StoreError::Io { .. }) if p.buf.len() == max => Ok(p.buf),
            Err(e) => Err(e),
        }
    }

    /// Writes a message's exact bytes to `out` as they are read back, in
    /// bounded memory whatever its size (see [`record::decode_to`]). On an
    /// error after bytes were written, what `out` got is not the archived
    /// message: the error says so, and the caller must not present it as
    /// the message.
    pub fn write_raw(&self, hash_hex: &str, out: &mut impl io::Write) -> Result<u64, StoreError> {
        let hash = parse_hex_hash(hash_hex)
            .ok_or_else(|| StoreError::Inconsistent(format!("bad content hash {hash_hex:?}")))?;
        let row = self.reader().message(&hash)?.ok_or_else(|| {
            StoreError::Inconsistent(format!("message {hash_hex} is not in the catalog"))
        })?;
        let loc = row.location;
        let at = || {
            format!(
                "message {hash_hex} at segment {} offset {}",
                loc.segment, loc.offset
            )
        };
        let stream = self
            .blobs
            .stream(loc)
            .map_err(io_err(format!("reading {}", at())))?;
        record::decode_to(
            stream,
            loc.len,
            &blake3::Hash::from_bytes(hash),
            &self.keys,
            out,
        )
        .map_err(|e| match e {
            record::StreamError::Record(source) => StoreError::Record {
                hash: hash_hex.to_string(),
                source,
            },
            record::StreamError::Read(e) => io_err(format!("reading {}", at()))(e),
            record::StreamError::Write(e) => io_err("writing the message out".to_string())(e),
        })
    }

    fn read_record(&self, hash: &[u8; 32], loc: Location) -> Result<Vec<u8>, StoreError> {
        let hash = blake3::Hash::from_bytes(*hash);
        let bytes = self.blobs.get(loc).map_err(io_err(format!(
            "reading message {} at segment {} offset {}",
            hash.to_hex(),
            loc.segment,
            loc.offset
        )))?;
        record::decode(&bytes, &hash, &self.keys).map_err(|source| StoreError::Record {
            hash: hash.to_hex().to_string(),
            source,
        })
    }

    /// Removes deliveries for good: each `(delivery id, reason)` gets a
    /// tombstone in the chain and loses its envelope and search rows; a
    /// message no delivery refers to any more is deleted from the catalog
    /// and then, by [`Store::compact`] (which this runs), from the
    /// segments, so its bytes are in no file of the store. Deliveries
    /// already removed are passed over.
    pub fn remove(&self, removals: &[(i64, String)]) -> Result<RemoveReport, StoreError> {
        self.remove_while(removals, &mut |_| true)
    }

    /// [`Store::remove`] that asks `go_on` before each transaction, with
    /// the removals it is about to make (so the caller can record them
    /// first), and stops when it says no (a legal hold was placed
    /// meanwhile): what was removed by then is reported, tombstones and
    /// all, and compacted.
    pub fn remove_while(
        &self,
        removals: &[(i64, String)],
        go_on: &mut dyn FnMut(&[Removal]) -> bool,
    ) -> Result<RemoveReport, StoreError> {
        let lock = self.lock.as_ref().ok_or(StoreError::ReadOnly)?;
        let mut removed = catalog::Removed::default();
        let mut stopped = false;
        // In transactions of a few hundred, each under the writers' lock on
        // its own, so commits (the daemon, an import) go on in between.
        for chunk in removals.chunks(REMOVE_CHUNK) {
            if !go_on(chunk) {
                stopped = true;
                break;
            }
            let _flock = FileLock::exclusive(lock).map_err(io_err("locking the store"))?;
            let now = chrono::Utc::now().timestamp_micros();
            let r = self.catalog().remove(chunk, now)?;
            removed.deliveries.extend(r.deliveries);
            removed.messages.extend(r.messages);
            drop(_flock);
            // `flock` is not fair: without a pause, a writer waiting for it
            // would wait for the whole removal.
            std::thread::sleep(LOCK_PAUSE);
        }
        if removed.deliveries.is_empty() {
            // Nothing removed: no index to rewrite (a full rewrite holds the
            // writers' lock a while on a large store).
            return Ok(RemoveReport {
                stopped,
                compacted: self.compact()?,
                ..RemoveReport::default()
            });
        }
        let purged = {
            let _flock = FileLock::exclusive(lock).map_err(io_err("locking the store"))?;
            self.catalog().purge()?
        };
        let compacted = self.compact()?;
        Ok(RemoveReport {
            deliveries: removed.deliveries,
            messages: removed.messages.len() as u64,
            compacted,
            stopped,
            wal_truncated: purged,
        })
    }

    /// Rewrites every segment that holds records no message refers to: the
    /// live records are copied into a new segment, the catalog points at
    /// the copies in one transaction, and only then is the old segment
    /// deleted. A crash before the transaction leaves the new segment's
    /// bytes past any committed length (cut off by the next writer); a
    /// crash after it leaves the old file, which the next compaction
    /// deletes first. Returns the bytes given back.
    pub fn compact(&self) -> Result<CompactReport, StoreError> {
        let lock = self.lock.as_ref().ok_or(StoreError::ReadOnly)?;
        let mut report = CompactReport::default();
        {
            let _flock = FileLock::exclusive(lock).map_err(io_err("locking the store"))?;
            let usage = self.catalog().segment_usage()?;
            let highest = usage.iter().map(|u| u.id).max().unwrap_or(0);
            // A segment file the catalog no longer names, below the newest
            // it does, was dropped by a compaction that stopped before
            // deleting it.
            for seg in self.blobs.list().map_err(io_err("listing the segments"))? {
                if seg < highest && !usage.iter().any(|u| u.id == seg) {
                    report.freed += self.blobs.len(seg).unwrap_or(0);
                    self.blobs
                        .remove(seg)
                        .map_err(io_err(format!("deleting segment {seg}")))?;
                    report.orphans_removed += 1;
                }
            }
        }
        // One segment at a time, each under the writers' lock on its own,
        // so commits go on between them.
        loop {
            let _flock = FileLock::exclusive(lock).map_err(io_err("locking the store"))?;
            let mut catalog = self.catalog();
            let usage = catalog.segment_usage()?;
            let next = usage.iter().map(|u| u.id).max().unwrap_or(0) + 1;
            let Some(u) = usage
                .into_iter()
                .find(|u| u.live + (SEGMENT_MAGIC.len() as u64) < u.length)
            else {
                break;
            };
            let records = catalog.live_records(u.id)?;
            let mut at = 0u64;
            let mut moves = Vec::with_capacity(records.len());
            let mut parts = vec![Part::Bytes(SEGMENT_MAGIC.to_vec())];
            let mut pending = SEGMENT_MAGIC.len() as u64;
            let mut offset = pending;
            for (id, loc) in records {
                let reading =
                    |e: io::Error| io_err(format!("reading segment {} for compaction", u.id))(e);
                // A large record goes through a staged file, not memory.
                let part = if loc.len > COMPACT_CHUNK {
                    let mut staged = tempfile::tempfile_in(self.staging_dir())
                        .map_err(io_err("staging a record for compaction"))?;
                    let mut from = self.blobs.stream(loc).map_err(reading)?;
                    let copied = io::copy(&mut from, &mut staged).map_err(reading)?;
                    if copied != loc.len {
                        return Err(reading(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("{copied} of {} bytes", loc.len),
                        )));
                    }
                    Part::File {
                        file: staged,
                        len: loc.len,
                    }
                } else {
                    Part::Bytes(self.blobs.get(loc).map_err(reading)?)
                };
                moves.push((id, offset));
                offset += part.len();
                pending += part.len();
                parts.push(part);
                if pending >= COMPACT_CHUNK {
                    self.blobs
                        .put(next, at, &parts)
                        .map_err(io_err(format!("writing segment {next}")))?;
                    at = offset;
                    parts.clear();
                    pending = 0;
                }
            }
            if !parts.is_empty() {
                self.blobs
                    .put(next, at, &parts)
                    .map_err(io_err(format!("writing segment {next}")))?;
            }
            catalog.move_segment(u.id, next, &u.key, offset, &moves)?;
            self.blobs
                .remove(u.id)
                .map_err(io_err(format!("deleting segment {}", u.id)))?;
            report.segments_rewritten += 1;
            report.freed += u.length.saturating_sub(offset);
            drop(catalog);
            drop(_flock);
            std::thread::sleep(LOCK_PAUSE);
        }
        Ok(report)
    }

    /// The audit log entry the store last recorded as the log's head
    /// (seq, hash hex): the log that holds the legal holds and the locked
    /// retention must still hold that entry unchanged.
    pub fn audit_anchor(&self) -> Result<Option<(u64, String)>, StoreError> {
        let value = self.reader().meta_get(AUDIT_ANCHOR)?;
        Ok(value.and_then(|v| {
            let (seq, hash) = v.split_once(' ')?;
            Some((seq.parse().ok()?, hash.to_string()))
        }))
    }

    /// Records the audit log's head (after a hold, a removal or a retention
    /// change was recorded in it). Never moves it back: two writers that
    /// read the head one after the other may record it in the other order,
    /// and the later entry must stay covered.
    pub fn set_audit_anchor(&self, seq: u64, hash: &str) -> Result<(), StoreError> {
        let lock = self.lock.as_ref().ok_or(StoreError::ReadOnly)?;
        let _flock = FileLock::exclusive(lock).map_err(io_err("locking the store"))?;
        if let Some((current, _)) = self.audit_anchor()? {
            if current >= seq {
                return Ok(());
            }
        }
        self.catalog()
            .meta_set(AUDIT_ANCHOR, &format!("{seq} {hash}"))?;
        Ok(())
    }

    /// The newest message stored before conversations were kept whose
    /// links are still to be read (`None`: every message's are in).
    pub fn threads_pending(&self) -> Result<Option<i64>, StoreError> {
        let value = self.reader().meta_get(catalog::sqlite::THREADS_PENDING)?;
        Ok(value.and_then(|v| v.parse().ok()))
    }

    /// Reads the conversation links (Message-ID, In-Reply-To, References)
    /// of up to `max` messages stored before the catalog kept them, newest
    /// first, from the first [`LINK_PREFIX`] bytes of each, and adds them
    /// in one transaction under the writers' lock. A message that cannot
    /// be read (its key is gone) gets no links and is counted. Call until
    /// it says nothing is pending; `thread:` finds older messages as they
    /// are done.
    pub fn link_older_messages(&self, max: usize) -> Result<LinkStep, StoreError> {
        let lock = self.lock.as_ref().ok_or(StoreError::ReadOnly)?;
        let Some(pending) = self.threads_pending()? else {
            return Ok(LinkStep::default());
        };
        let rows = self.reader().messages_down_from(pending, max.max(1))?;
        let mut step = LinkStep::default();
        let mut links = Vec::with_capacity(rows.len());
        for row in &rows {
            match self.raw_prefix(&chain::hex(&row.hash), LINK_PREFIX) {
                Ok(head) => {
                    let (own, references) = mailkeep_index::conversation_ids(&head);
                    links.push((row.id, own.into_iter().chain(references).collect()));
                }
                Err(_) => step.unreadable += 1,
            }
            step.read += 1;
        }
        step.pending = match rows.last() {
            Some(last) if rows.len() >= max.max(1) && last.id > 1 => Some(last.id - 1),
            _ => None,
        };
        let _flock = FileLock::exclusive(lock).map_err(io_err("locking the store"))?;
        self.catalog().add_refs(&links, step.pending)?;
        Ok(step)
    }

    /// Totals for `mailkeep stats`.
    pub fn totals(&self) -> Result<Totals, StoreError> {
        Ok(self.reader().totals()?)
    }

    /// Deliveries per UTC day and capture path captured at or after
    /// `since` (the dashboard's chart).
    pub fn per_day(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<catalog::DayCount>, StoreError> {
        Ok(self.reader().per_day(since.timestamp_micros())?)
    }

    /// This store's id.
    pub fn id(&self) -> String {
        self.reader().store_id()
    }
}

/// An exclusive `flock` held until dropped.
struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    fn exclusive(f: &'a File) -> io::Result<FileLock<'a>> {
        rustix::fs::flock(f, rustix::fs::FlockOperation::LockExclusive)?;
        Ok(FileLock(f))
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(self.0, rustix::fs::FlockOperation::Unlock);
    }
}
