//! The catalog: which messages exist, where their bytes lie, every delivery
//! with its envelope and chain hash, and the full-text index.
//!
//! [`Catalog`] is the seam a shared database (PostgreSQL) will implement
//! for sites that outgrow one machine; [`sqlite::Sqlite`] is the embedded
//! one. A commit is one transaction: the segment lengths, the new
//! messages with their index entries, and the new deliveries with their
//! chain links become visible together or not at all.

pub mod sqlite;

use crate::blobs::crypto::KeyId;
use crate::blobs::Location;
use crate::chain::DeliveryRecord;
use mailkeep_index::Extracted;
use mailkeep_query::Query;

/// A catalog failure.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The database reported an error.
    #[error("catalog: {0}")]
    Db(#[from] rusqlite::Error),
    /// The catalog holds something it should not.
    #[error("catalog: {0}")]
    Corrupt(String),
    /// The query cannot be run.
    #[error("query: {0}")]
    Query(String),
}

/// A message the batch adds (its bytes are already durable in a segment).
#[derive(Debug)]
pub struct NewMessage {
    /// BLAKE3 of the bytes.
    pub hash: [u8; 32],
    /// Where its record lies.
    pub location: Location,
    /// Raw size.
    pub size: u64,
    /// Key the record is sealed with.
    pub key: KeyId,
    /// What search sees.
    pub fields: Extracted,
}

/// A delivery the batch adds.
#[derive(Debug)]
pub struct NewDelivery {
    /// Identity of this delivery, for idempotence (retries, re-imports).
    pub key: [u8; 32],
    /// The record; `id` is assigned by the commit.
    pub record: DeliveryRecord,
}

/// One atomic commit.
#[derive(Debug, Default)]
pub struct CommitBatch {
    /// Segments written: (number, key, new committed length).
    pub segments: Vec<(u32, KeyId, u64)>,
    /// New messages.
    pub messages: Vec<NewMessage>,
    /// New deliveries.
    pub deliveries: Vec<NewDelivery>,
}

/// Where a message's bytes are.
#[derive(Debug, Clone)]
pub struct MessageRow {
    /// Catalog row id.
    pub id: i64,
    /// BLAKE3.
    pub hash: [u8; 32],
    /// Record location.
    pub location: Location,
    /// Raw size.
    pub size: u64,
}

/// One search result or `show` subject: a delivery and its message's fields.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The chained delivery record.
    pub record: DeliveryRecord,
    /// Header `Message-ID`.
    pub message_id: Option<String>,
    /// Header From.
    pub from: String,
    /// Header To.
    pub to: String,
    /// Header Cc.
    pub cc: String,
    /// Subject.
    pub subject: String,
    /// Header Date, Unix seconds.
    pub date: Option<i64>,
    /// Attachment names/types as JSON.
    pub attachments: String,
    /// Why text extraction was limited, if it was.
    pub index_note: Option<String>,
}

/// One chain entry as stored.
#[derive(Debug, Clone)]
pub struct ChainRow {
    /// Row id.
    pub id: i64,
    /// Stored canonical record.
    pub record: String,
    /// Stored previous hash.
    pub prev: Vec<u8>,
    /// Stored hash.
    pub hash: Vec<u8>,
    /// Stored content hash column.
    pub content: Vec<u8>,
    /// Whether the content exists in the messages table.
    pub has_message: bool,
}

/// What [`Catalog::remove`] did.
#[derive(Debug, Clone, Default)]
pub struct Removed {
    /// (delivery id, tombstone id).
    pub deliveries: Vec<(i64, i64)>,
    /// Messages deleted (no delivery left), with their locations.
    pub messages: Vec<crate::blobs::Location>,
}

/// How much of a segment is still in use.
#[derive(Debug, Clone)]
pub struct SegmentUsage {
    /// Segment number.
    pub id: u32,
    /// Key id, hex.
    pub key: String,
    /// Committed length.
    pub length: u64,
    /// Bytes of records still referred to.
    pub live: u64,
}

/// Totals for `mailkeep stats`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Totals {
    /// Distinct messages stored.
    pub messages: u64,
    /// Deliveries recorded.
    pub deliveries: u64,
    /// Sum of message sizes over deliveries (what plain copies would take).
    pub delivered_bytes: u64,
    /// Sum of distinct message sizes.
    pub raw_bytes: u64,
    /// Sum of record sizes in segments.
    pub stored_bytes: u64,
    /// Segments.
    pub segments: u64,
    /// Messages stored before the catalog kept conversation links whose
    /// links are not read yet (see `Store::link_older_messages`).
    pub unlinked: u64,
}

/// Deliveries of one capture path on one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayCount {
    /// The UTC day, in days since 1970-01-01.
    pub day: i64,
    /// milter, filter, pipe or import.
    pub capture: String,
    /// Deliveries captured (removed ones not counted).
    pub deliveries: u64,
}

/// How a page of results is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Newest capture first (what `search` does).
    #[default]
    NewestFirst,
    /// Oldest capture first.
    OldestFirst,
    /// Largest message first.
    LargestFirst,
    /// Smallest message first.
    SmallestFirst,
}

/// One page of a search: where it starts, how long it is, how it is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Results skipped.
    pub offset: u64,
    /// Results returned at most.
    pub limit: u64,
    /// The order.
    pub order: Order,
    /// Matches counted at most: the count says "at least this many" when
    /// it reaches it (`u64::MAX`: every match counted). Counting a broad
    /// query's tens of thousands of matches costs as much as finding the
    /// page; a reader rarely needs more than "over a thousand".
    pub count_up_to: u64,
    /// Whether to take [`Facets`] of the matches counted.
    pub facets: bool,
}

/// What the matches of a search have in common, for narrowing it: taken
/// from the matches counted (all of them when the count is exact, else
/// the first `count_up_to` the catalog came upon, in no given order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facets {
    /// Matches per capture year (UTC), newest year first.
    pub years: Vec<(i32, u64)>,
    /// Matches per envelope sender domain (lowercased), most first, then by
    /// name; at most [`Facets::DOMAINS`]. The null sender is `<>`; a sender
    /// without a domain is left out.
    pub sender_domains: Vec<(String, u64)>,
    /// Matches with at least one attachment.
    pub with_attachment: u64,
    /// Matches without one.
    pub without_attachment: u64,
}

impl Facets {
    /// Sender domains listed at most.
    pub const DOMAINS: usize = 10;
}

/// One page of a search: the hits, how many match (counted up to
/// `count_up_to`), and the facets when asked for.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// The page's hits.
    pub hits: Vec<Hit>,
    /// Matches counted.
    pub total: u64,
    /// The facets of the matches counted.
    pub facets: Option<Facets>,
}

/// The catalog seam.
pub trait Catalog: Send {
    /// This store's random id (names the chain's genesis).
    fn store_id(&self) -> String;
    /// A value of the `meta` table.
    fn meta_get(&self, key: &str) -> Result<Option<String>, CatalogError>;
    /// Sets a value of the `meta` table (durably).
    fn meta_set(&mut self, key: &str, value: &str) -> Result<(), CatalogError>;
    /// The segment to append to for `key`, and its committed length; a new
    /// segment number when the last one is full or uses another key.
    fn active_segment(&self, key: KeyId, max_len: u64) -> Result<(u32, u64), CatalogError>;
    /// The message with these bytes, if stored.
    fn message(&self, hash: &[u8; 32]) -> Result<Option<MessageRow>, CatalogError>;
    /// The delivery with this identity, if recorded.
    fn delivery_by_key(&self, key: &[u8; 32]) -> Result<Option<i64>, CatalogError>;
    /// Commits a batch atomically; returns the new delivery ids in order.
    fn commit(&mut self, batch: CommitBatch) -> Result<Vec<i64>, CatalogError>;
    /// Deliveries matching a query, newest first.
    fn search(&self, query: &Query, limit: Option<usize>) -> Result<Vec<Hit>, CatalogError>;
    /// One page of the deliveries matching a query, and how many match,
    /// counted up to `page.count_up_to`.
    fn search_page(&self, query: &Query, page: Page) -> Result<Found, CatalogError>;
    /// How many of the newest (or oldest) deliveries a page by capture
    /// time is first looked for among (tests set a small one, so that
    /// their small stores go through both ways of finding a page).
    fn set_page_window(&mut self, _deliveries: i64) {}
    /// One delivery.
    fn hit(&self, id: i64) -> Result<Option<Hit>, CatalogError>;
    /// Calls `f` for each chain entry in order.
    fn chain(
        &self,
        f: &mut dyn FnMut(ChainRow) -> Result<(), CatalogError>,
    ) -> Result<(), CatalogError>;
    /// Calls `f` for each message row in order.
    fn messages(
        &self,
        f: &mut dyn FnMut(MessageRow) -> Result<(), CatalogError>,
    ) -> Result<(), CatalogError>;
    /// Up to `limit` messages with an id of at most `at_most`, the
    /// highest id first.
    fn messages_down_from(
        &self,
        at_most: i64,
        limit: usize,
    ) -> Result<Vec<MessageRow>, CatalogError>;
    /// Adds the conversation links of messages stored before they were
    /// kept (`(message id, its Message-ID and references)`; a message
    /// removed since is passed over) and notes, in the same transaction,
    /// the newest message still to be read (`None`: none is).
    fn add_refs(
        &mut self,
        links: &[(i64, Vec<String>)],
        pending: Option<i64>,
    ) -> Result<(), CatalogError>;
    /// Messages no delivery points at: deliveries were removed (the newest
    /// ones, if the chain itself is intact).
    fn orphans(&self) -> Result<Vec<[u8; 32]>, CatalogError>;
    /// The deliveries of the message with these bytes, in id order.
    fn deliveries_of(&self, hash: &[u8; 32]) -> Result<Vec<i64>, CatalogError>;
    /// The chain entry `id`'s stored hash.
    fn chain_hash(&self, id: i64) -> Result<Option<Vec<u8>>, CatalogError>;
    /// The last chain entry: (id, hash).
    fn head(&self) -> Result<Option<(i64, Vec<u8>)>, CatalogError>;
    /// Totals.
    fn totals(&self) -> Result<Totals, CatalogError>;
    /// Deliveries captured per UTC day and capture path at or after `since`
    /// (microseconds since the epoch), oldest day first.
    fn per_day(&self, since: i64) -> Result<Vec<DayCount>, CatalogError>;
    /// Committed segment lengths.
    fn segments(&self) -> Result<Vec<(u32, u64)>, CatalogError>;
    /// Removes deliveries (see [`crate::chain::TombstoneRecord`]): for each
    /// `(delivery id, reason)`, a tombstone entry is appended to the chain,
    /// the delivery's record is replaced by a marker, its search rows are
    /// deleted, and a message no live delivery refers to any more is
    /// deleted with its search rows; all in one transaction. Returns the
    /// deliveries removed (a removed or unknown id is passed over) and the
    /// messages deleted.
    fn remove(&mut self, removals: &[(i64, String)], now: i64) -> Result<Removed, CatalogError>;
    /// Per segment: (id, key id hex, committed length, bytes of live records).
    fn segment_usage(&self) -> Result<Vec<SegmentUsage>, CatalogError>;
    /// The live records of a segment: (message id, location), by offset.
    fn live_records(
        &self,
        segment: u32,
    ) -> Result<Vec<(i64, crate::blobs::Location)>, CatalogError>;
    /// Points the messages at their copies in `new` (committed with
    /// `new_len` bytes) and drops segment `old`, in one transaction.
    fn move_segment(
        &mut self,
        old: u32,
        new: u32,
        key_hex: &str,
        new_len: u64,
        moves: &[(i64, u64)],
    ) -> Result<(), CatalogError>;
    /// Rewrites the full-text indexes without what was deleted and
    /// truncates the write-ahead log, so removed text is in no file.
    /// Returns whether the write-ahead log could be emptied.
    fn purge(&mut self) -> Result<bool, CatalogError>;
}
