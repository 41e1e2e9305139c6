//! The embedded catalog: SQLite in WAL mode with `synchronous=FULL`, so a
//! returned commit is on disk, and two contentless FTS5 tables (the
//! message bytes are already in the segments; the index only needs to
//! find rows). The reasons and the measurements behind FTS5 are in
//! docs/decisions.md.

use super::{
    Catalog, CatalogError, ChainRow, CommitBatch, DayCount, Facets, Found, Hit, MessageRow, Order,
    Page, Removed, SegmentUsage, Totals,
};
use crate::blobs::crypto::KeyId;
use crate::blobs::Location;
use crate::chain::{self, DeliveryRecord};
use mailkeep_query::{
    address_glob, AddressField, ClientMatch, Expr, Query, Term, Text, TextField, TimeField,
};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

/// 2 added `parties`; a version-1 catalog is upgraded when it is opened
/// for writing and read through a view of the records when it is not.
/// 3 added `refs`: the upgrade only creates the table and notes in
/// `meta` (`threads_pending`) the newest message whose links are not in
/// it yet; [`Sqlite::add_refs`] fills them in afterwards, in steps
/// (reading every message at opening would hold up a large store's start).
const SCHEMA_VERSION: &str = "3";

/// The `meta` key of the newest message id whose conversation links are
/// still to be read (see [`SCHEMA_VERSION`]); absent when none are.
pub const THREADS_PENDING: &str = "threads_pending";

/// Deliveries a page by capture time is looked for among first (see
/// `Sqlite::page_in_window`).
const WINDOW: i64 = 5000;

/// Pages that end further than this are not looked for in the window.
const WINDOW_PAGES: u64 = 500;

/// The most distinct ids `thread:` follows (see `Term::Thread`).
const THREAD_IDS: u32 = 1000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY,
    key_id TEXT NOT NULL,
    length INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    segment INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    record_len INTEGER NOT NULL,
    size INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    message_id TEXT,
    hdr_from TEXT NOT NULL,
    hdr_to TEXT NOT NULL,
    hdr_cc TEXT NOT NULL,
    subject TEXT NOT NULL,
    date INTEGER,
    attachments INTEGER NOT NULL,
    attachment_list TEXT NOT NULL,
    index_note TEXT
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    message INTEGER NOT NULL,
    content BLOB NOT NULL,
    dkey BLOB NOT NULL UNIQUE,
    received INTEGER NOT NULL,
    login TEXT,
    capture TEXT NOT NULL,
    record TEXT NOT NULL,
    prev BLOB NOT NULL,
    hash BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_received ON deliveries (received);
-- Covering for deliveries of these messages, newest first: a full-text
-- match yields message ids, and sorting its deliveries by time then needs
-- no table rows (measured: 62 ms -> 7 ms for a word in 23% of 100,000).
CREATE INDEX IF NOT EXISTS deliveries_message_received ON deliveries (message, received);
CREATE INDEX IF NOT EXISTS messages_attachments ON messages (attachments);
CREATE INDEX IF NOT EXISTS deliveries_login_received ON deliveries (login COLLATE NOCASE, received);
CREATE VIRTUAL TABLE IF NOT EXISTS message_text USING fts5 (
    hdr_from, hdr_to, hdr_cc, subject, body, attachments, message_id,
    content = '', contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2'
);
-- Who a delivery's envelope names, one row per envelope sender (role 0)
-- and recipient (role 1), as the record holds them: the access rule of the
-- web and IMAP readers (a user's own mail) and the address terms find
-- their deliveries here rather than in every record's JSON.
CREATE TABLE IF NOT EXISTS parties (
    address TEXT NOT NULL COLLATE NOCASE,
    role INTEGER NOT NULL,
    delivery INTEGER NOT NULL,
    PRIMARY KEY (address, role, delivery)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS parties_delivery ON parties (delivery);
CREATE VIRTUAL TABLE IF NOT EXISTS envelope_text USING fts5 (
    sender, recipients, login,
    content = '', contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2'
);
-- What links a message into a conversation: its own Message-ID and the
-- ids of its In-Reply-To and References, one row each (`thread:`).
CREATE TABLE IF NOT EXISTS refs (
    ref TEXT NOT NULL,
    message INTEGER NOT NULL,
    PRIMARY KEY (ref, message)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS refs_message ON refs (message);
";

/// Notes the messages from before `refs` as pending (see
/// [`THREADS_PENDING`]), when there are any.
const REFS_PENDING: &str = "\
    INSERT OR REPLACE INTO meta (key, value)
      SELECT 'threads_pending', max(id) FROM messages HAVING max(id) IS NOT NULL;";

/// One conversation link of a message.
const INSERT_REF: &str = "INSERT OR IGNORE INTO refs (ref, message) VALUES (?1, ?2)";

/// What a reader of a catalog from before `refs` sees instead: no links.
const NO_REFS: &str =
    "CREATE TEMP TABLE IF NOT EXISTS refs (ref TEXT NOT NULL, message INTEGER NOT NULL);";

/// The `parties` rows of every delivery, from the records (the upgrade
/// from version 1, and the view a version-1 catalog is read through).
const PARTIES_OF_RECORDS: &str = "\
    SELECT json_extract(record, '$.sender') AS address, 0 AS role, id AS delivery
      FROM deliveries WHERE message != 0 AND json_extract(record, '$.sender') IS NOT NULL
    UNION ALL
    SELECT r.value, 1, d.id FROM deliveries d, json_each(d.record, '$.recipients') r
      WHERE d.message != 0";

/// The SQLite catalog.
pub struct Sqlite {
    conn: Connection,
    store_id: String,
    kept: RefCell<Kept>,
    /// While a page is searched: the full-text matches it materialised
    /// (TEMP tables), dropped when it is done.
    scratch: RefCell<Option<Scratch>>,
    /// See [`WINDOW`].
    window: i64,
}

/// See [`Sqlite::scratch`].
#[derive(Default)]
struct Scratch {
    tables: Vec<String>,
    named: u64,
}

/// Id sets kept between searches on this connection, in TEMP tables: the
/// union of a user's scope (their login and addresses, looked up in the
/// indexes) is the same for every search they make, so it is built once
/// and then only extended by the deliveries added since. Ids only grow;
/// a removed delivery left in a set drops out of every query, which joins
/// the messages (a removed delivery has none).
#[derive(Default)]
struct Kept {
    sets: std::collections::HashMap<String, KeptSet>,
    tick: u64,
    named: u64,
}

struct KeptSet {
    table: String,
    /// Every delivery up to this id is in the table, or not in the set.
    covered: i64,
    used: u64,
    /// Ids in the table.
    rows: i64,
}

/// Sets kept per connection at most; the least recently used goes first.
const KEPT_SETS: usize = 32;

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sqlite({})", self.store_id)
    }
}

/// Facets being counted: the SQL pass over the matches and a page holding
/// every match add to the same tallies.
#[derive(Default)]
struct Tally {
    years: std::collections::BTreeMap<i32, u64>,
    domains: std::collections::HashMap<String, u64>,
    total: u64,
    with: u64,
    without: u64,
}

impl Tally {
    /// `n` matches of capture `year`, envelope sender `domain` (`None`
    /// and empty are left out), with an attachment or not.
    fn add(&mut self, year: Option<i32>, domain: Option<String>, attached: bool, n: u64) {
        self.total += n;
        if attached {
            self.with += n;
        } else {
            self.without += n;
        }
        if let Some(y) = year {
            *self.years.entry(y).or_default() += n;
        }
        if let Some(d) = domain.filter(|d| !d.is_empty()) {
            *self.domains.entry(d).or_default() += n;
        }
    }

    /// The matches counted and their facets: newest year first, the most
    /// frequent domains first, then by name, at most [`Facets::DOMAINS`].
    fn finish(self) -> (u64, Facets) {
        let mut domains: Vec<(String, u64)> = self.domains.into_iter().collect();
        domains.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        domains.truncate(Facets::DOMAINS);
        let facets = Facets {
            years: self.years.into_iter().rev().collect(),
            sender_domains: domains,
            with_attachment: self.with,
            without_attachment: self.without,
        };
        (self.total, facets)
    }
}

/// The [`Facets`] of `hits` (every match of a search), by the rules of
/// [`Sqlite::facets`]' SQL: the capture year in UTC, the envelope sender's
/// text after its first `@`, ASCII-lowercased (`<>` for the null sender,
/// none without an `@`), an attachment when the message lists one.
fn facets_of(hits: &[Hit]) -> Facets {
    let mut tally = Tally::default();
    for h in hits {
        let year = chrono::DateTime::from_timestamp_micros(h.record.received)
            .map(|t| chrono::Datelike::year(&t));
        let domain = match &h.record.sender {
            None => Some("<>".to_string()),
            Some(s) => s.split_once('@').map(|(_, d)| d.to_ascii_lowercase()),
        };
        let attached = serde_json::from_str::<Vec<serde_json::Value>>(&h.attachments)
            .map(|v| !v.is_empty())
            .unwrap_or(false);
        tally.add(year, domain, attached, 1);
    }
    tally.finish().1
}

impl Sqlite {
    /// [`Catalog::search_page`], its full-text matches materialised.
    fn search_page_in(&self, query: &Query, page: Page) -> Result<Found, CatalogError> {
        let mut args = Vec::new();
        let cond = where_clause(query, &mut args, Some(self))?;
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let order = match page.order {
            Order::NewestFirst => "d.received DESC, d.id DESC",
            Order::OldestFirst => "d.received ASC, d.id ASC",
            Order::LargestFirst => "m.size DESC, d.id DESC",
            Order::SmallestFirst => "m.size ASC, d.id ASC",
        };
        let mut page_args = args.clone();
        page_args.push(Value::Integer(clamp(page.limit)));
        page_args.push(Value::Integer(clamp(page.offset)));
        let ids = match self.page_in_window(&cond, &page_args, page, order)? {
            Some(ids) => ids,
            None => {
                let sql = format!(
                    "SELECT d.id FROM deliveries d JOIN messages m ON m.id = d.message \
                     WHERE {cond} ORDER BY {order} LIMIT ? OFFSET ?"
                );
                let mut stmt = self.conn.prepare_cached(&sql)?;
                let rows =
                    stmt.query_map(rusqlite::params_from_iter(page_args.iter()), |r| r.get(0))?;
                rows.collect::<Result<Vec<i64>, _>>()?
            }
        };
        let hits = self.hits_of(&ids)?;
        // A first page shorter than asked is every match: its count and
        // facets need no second pass over the matches.
        let n = ids.len() as u64;
        if page.offset == 0 && n < page.limit && n < page.count_up_to && hits.len() == ids.len() {
            let facets = page.facets.then(|| facets_of(&hits));
            return Ok(Found {
                hits,
                total: n,
                facets,
            });
        }
        let mut count_args = args;
        count_args.push(Value::Integer(clamp(page.count_up_to)));
        let (total, facets) = if page.facets {
            let (total, facets) = self.facets(&cond, &count_args)?;
            (total, Some(facets))
        } else {
            let sql = format!(
                "SELECT count(*) FROM (SELECT 1 FROM deliveries d JOIN messages m ON m.id = d.message \
                 WHERE {cond} LIMIT ?)"
            );
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let n: i64 =
                stmt.query_row(rusqlite::params_from_iter(count_args.iter()), |r| r.get(0))?;
            (u64::try_from(n).unwrap_or(0), None)
        };
        Ok(Found {
            hits,
            total,
            facets,
        })
    }

    /// The hits of these deliveries, in this order, in one statement (a
    /// delivery removed meanwhile is left out).
    fn hits_of(&self, ids: &[i64]) -> Result<Vec<Hit>, CatalogError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {HIT_COLUMNS}, d.id FROM deliveries d JOIN messages m ON m.id = d.message \
             WHERE d.id IN (SELECT value FROM json_each(?))"
        );
        let list = serde_json::to_string(ids).map_err(|e| CatalogError::Corrupt(e.to_string()))?;
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut found = std::collections::HashMap::with_capacity(ids.len());
        let mut rows = stmt.query([list])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(HIT_COLUMN_COUNT)?;
            let (text, mut hit) = Self::hit_from_row(row)?;
            hit.record = serde_json::from_str(&text)
                .map_err(|e| CatalogError::Corrupt(format!("delivery record: {e}")))?;
            found.insert(id, hit);
        }
        Ok(ids.iter().filter_map(|id| found.remove(id)).collect())
    }

    /// A page ordered by capture time, looked for first among the
    /// [`WINDOW`] newest (or oldest) deliveries, walked in that order with
    /// every condition tested on each: `Some` when the page is full there,
    /// which makes it exactly the page (every delivery outside the window
    /// comes after all of those in the order), `None` when it is not (the
    /// caller runs the planner's plan). SQLite knows nothing of the sizes
    /// of the TEMP sets a condition tests, and given a user's scope and a
    /// common word it drove the search from the word's matches and sorted
    /// them all (21 ms on the bench store); the walk finds the same page
    /// in about a millisecond, and costs about 2.5 ms when the window holds
    /// too few (docs/decisions.md).
    fn page_in_window(
        &self,
        cond: &str,
        page_args: &[Value],
        page: Page,
        order: &str,
    ) -> Result<Option<Vec<i64>>, CatalogError> {
        let (cmp, direction) = match page.order {
            Order::NewestFirst => (">=", "DESC"),
            Order::OldestFirst => ("<=", "ASC"),
            Order::LargestFirst | Order::SmallestFirst => return Ok(None),
        };
        if page.limit == 0 || page.offset.saturating_add(page.limit) > WINDOW_PAGES {
            return Ok(None);
        }
        // The capture time of the window's last delivery; none when the
        // store holds no more than the window (the plan is quick then).
        let bound: Option<i64> = self
            .conn
            .prepare_cached(&format!(
                "SELECT received FROM deliveries ORDER BY received {direction} LIMIT 1 OFFSET ?"
            ))?
            .query_row([self.window], |r| r.get(0))
            .optional()?;
        let Some(bound) = bound else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT d.id FROM deliveries d INDEXED BY deliveries_received \
             JOIN messages m ON m.id = d.message \
             WHERE d.received {cmp} ? AND ({cond}) ORDER BY {order} LIMIT ? OFFSET ?"
        );
        let mut args = Vec::with_capacity(page_args.len() + 1);
        args.push(Value::Integer(bound));
        args.extend_from_slice(page_args);
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
        let ids: Vec<i64> = rows.collect::<Result<_, _>>()?;
        Ok((ids.len() as u64 == page.limit).then_some(ids))
    }

    /// The rows `select` (with `arg`) gives, in a TEMP table for the rest
    /// of the page being searched; `None` outside one. A page runs two
    /// statements (the page, the count or facets) over the same condition:
    /// a full-text match materialised once is not evaluated twice (see
    /// docs/decisions.md, "Facets and snippets", for the timings).
    fn materialized(&self, select: &str, arg: Value) -> Result<Option<String>, CatalogError> {
        let mut scratch = self.scratch.borrow_mut();
        let Some(s) = scratch.as_mut() else {
            return Ok(None);
        };
        s.named += 1;
        let table = format!("found_{}", s.named);
        self.conn.execute_batch(&format!(
            "CREATE TEMP TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY); DELETE FROM temp.{table};"
        ))?;
        s.tables.push(table.clone());
        self.conn
            .prepare_cached(&format!("INSERT INTO temp.{table} (id) {select}"))?
            .execute([arg])?;
        Ok(Some(format!("temp.{table}")))
    }

    /// Empties what [`Sqlite::materialized`] filled for the page just
    /// searched. The tables stay (the next page reuses them by name):
    /// dropping a table changes the schema, after which SQLite prepares
    /// every cached statement of the connection again.
    fn end_scratch(&self) {
        if let Some(s) = self.scratch.borrow_mut().take() {
            for t in s.tables {
                if let Err(e) = self
                    .conn
                    .prepare_cached(&format!("DELETE FROM temp.{t}"))
                    .and_then(|mut st| st.execute([]))
                {
                    tracing::warn!("catalog: emptying temp.{t}: {e}");
                }
            }
        }
    }

    /// How many deliveries meet `cond` (its `args` ending with the count's
    /// limit) and their [`Facets`], in one pass over them.
    fn facets(&self, cond: &str, args: &[Value]) -> Result<(u64, Facets), CatalogError> {
        // The envelope sender's domain from the record (what `sender:`
        // reads), lowercased; `<>` for the null sender, NULL (left out)
        // for a sender without a domain.
        let sql = format!(
            "SELECT y, CASE WHEN s IS NULL THEN '<>' \
                            WHEN instr(s, '@') > 0 THEN lower(substr(s, instr(s, '@') + 1)) \
                       END AS dom, att, count(*) FROM (\
               SELECT CAST(strftime('%Y', d.received / 1000000, 'unixepoch') AS INTEGER) AS y, \
                      json_extract(d.record, '$.sender') AS s, \
                      m.attachments > 0 AS att \
               FROM deliveries d JOIN messages m ON m.id = d.message WHERE {cond} LIMIT ?) \
             GROUP BY y, dom, att"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
        let mut tally = Tally::default();
        while let Some(r) = rows.next()? {
            let n = u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0);
            tally.add(r.get(0)?, r.get(1)?, r.get(2)?, n);
        }
        Ok(tally.finish())
    }

    /// The condition "`d.id` is in the set `union` (with `args`) selects",
    /// the set kept in a TEMP table of this connection and extended by the
    /// deliveries added since it was last used. `union` must be index
    /// look-ups of values a delivery never changes (its login, envelope
    /// sender and recipients), so that a delivery once in or out stays so.
    fn kept_set(&self, union: &str, args: Vec<Value>) -> Result<String, CatalogError> {
        let key = format!("{union}\u{0}{args:?}");
        let mut kept = self.kept.borrow_mut();
        kept.tick += 1;
        let tick = kept.tick;
        let newest: i64 =
            self.conn
                .query_row("SELECT coalesce(max(id), 0) FROM deliveries", [], |r| {
                    r.get(0)
                })?;
        if !kept.sets.contains_key(&key) {
            if kept.sets.len() >= KEPT_SETS {
                let oldest = kept
                    .sets
                    .iter()
                    .min_by_key(|(_, s)| s.used)
                    .map(|(k, _)| k.clone());
                if let Some(s) = oldest.and_then(|k| kept.sets.remove(&k)) {
                    self.conn
                        .execute_batch(&format!("DROP TABLE IF EXISTS temp.{}", s.table))?;
                }
            }
            kept.named += 1;
            let table = format!("kept_{}", kept.named);
            self.conn.execute_batch(&format!(
                "CREATE TEMP TABLE {table} (id INTEGER PRIMARY KEY)"
            ))?;
            kept.sets.insert(
                key.clone(),
                KeptSet {
                    table,
                    covered: 0,
                    used: tick,
                    rows: 0,
                },
            );
        }
        let set = kept.sets.get_mut(&key).expect("inserted above");
        set.used = tick;
        if newest > set.covered {
            let mut fill = args;
            fill.push(Value::Integer(set.covered));
            fill.push(Value::Integer(newest));
            let sql = format!(
                "INSERT OR IGNORE INTO temp.{} (id) SELECT id FROM ({union}) WHERE id > ? AND id <= ?",
                set.table
            );
            let added = self
                .conn
                .execute(&sql, rusqlite::params_from_iter(fill.iter()))?;
            set.covered = newest;
            set.rows += added as i64;
        }
        // A set of more than one delivery in twenty is only tested (`+`
        // keeps the planner from walking it): the other terms' indexes, or
        // the walk by time, find the page sooner. A small one leads.
        Ok(if set.rows.saturating_mul(20) > newest {
            format!("+d.id IN temp.{}", set.table)
        } else {
            format!("d.id IN temp.{}", set.table)
        })
    }

    /// Opens (creating when `create`) the catalog file.
    pub fn open(path: &Path, create: bool) -> Result<Sqlite, CatalogError> {
        let flags = if create {
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(Duration::from_secs(60))?;
        register_functions(&conn)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is fsync'd to the WAL before it returns, which is
        // what "acknowledged only after its catalog row is durable" needs.
        conn.pragma_update(None, "synchronous", "FULL")?;
        // What is deleted (expired or erased mail, its search text) is
        // overwritten with zeros, not left in free pages.
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.pragma_update(None, "cache_size", -65536)?;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let setup = (|| -> Result<String, CatalogError> {
            conn.execute_batch(SCHEMA)?;
            let version: Option<String> = conn
                .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            match version.as_deref() {
                None => {
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                        [SCHEMA_VERSION],
                    )?;
                }
                Some(SCHEMA_VERSION) => {}
                Some("1") => {
                    conn.execute_batch(&format!(
                        "INSERT OR IGNORE INTO parties (address, role, delivery) {PARTIES_OF_RECORDS};
                         {REFS_PENDING}
                         UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema';"
                    ))?;
                }
                Some("2") => {
                    conn.execute_batch(&format!(
                        "{REFS_PENDING}
                         UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema';"
                    ))?;
                }
                Some(v) => {
                    return Err(CatalogError::Corrupt(format!(
                        "schema version {v} is not {SCHEMA_VERSION}; use a matching mailkeep"
                    )))
                }
            }
            let id: Option<String> = conn
                .query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(match id {
                Some(id) => id,
                None => {
                    let mut bytes = [0u8; 16];
                    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
                    let id = chain::hex(&bytes);
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('store_id', ?1)",
                        [&id],
                    )?;
                    id
                }
            })
        })();
        match setup {
            Ok(store_id) => {
                conn.execute_batch("COMMIT")?;
                Ok(Sqlite {
                    conn,
                    store_id,
                    kept: RefCell::default(),
                    scratch: RefCell::default(),
                    window: WINDOW,
                })
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Opens the catalog for reading only: no schema set-up, no journal
    /// mode change, nothing created. A reader that may not create the
    /// `-shm` file SQLite wants beside a WAL database (group read access,
    /// a read-only mount), on a store no writer has open (there is no
    /// `-wal` file, so every commit is in the database file), opens it as
    /// immutable instead.
    pub fn open_read_only(path: &Path) -> Result<Sqlite, CatalogError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let attempt = |conn: Connection| -> Result<Sqlite, CatalogError> {
            conn.busy_timeout(Duration::from_secs(60))?;
            register_functions(&conn)?;
            reader_cache(&conn)?;
            let meta = |key: &str| -> Result<Option<String>, CatalogError> {
                Ok(conn
                    .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                    .optional()?)
            };
            match meta("schema")?.as_deref() {
                Some(SCHEMA_VERSION) => {}
                Some("1") => {
                    // Not upgraded yet (nothing has opened it to write):
                    // the same rows, read from the records.
                    conn.execute_batch(&format!(
                        "CREATE TEMP VIEW parties AS {PARTIES_OF_RECORDS}; {NO_REFS}"
                    ))?;
                }
                Some("2") => conn.execute_batch(NO_REFS)?,
                Some(v) => {
                    return Err(CatalogError::Corrupt(format!(
                        "schema version {v} is not {SCHEMA_VERSION}; use a matching mailkeep"
                    )))
                }
                None => return Err(CatalogError::Corrupt("no schema version".into())),
            }
            let store_id =
                meta("store_id")?.ok_or_else(|| CatalogError::Corrupt("no store id".into()))?;
            Ok(Sqlite {
                conn,
                store_id,
                kept: RefCell::default(),
                scratch: RefCell::default(),
                window: WINDOW,
            })
        };
        let first = Connection::open_with_flags(path, flags)
            .map_err(CatalogError::from)
            .and_then(attempt);
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        match first {
            Err(CatalogError::Db(rusqlite::Error::SqliteFailure(f, _)))
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly
                ) && !Path::new(&wal).exists() =>
            {
                let uri = format!("file:{}?immutable=1", uri_path(path));
                let conn = Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)?;
                attempt(conn)
            }
            other => other,
        }
    }

    fn hit_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, Hit)> {
        let record: String = row.get(0)?;
        Ok((
            record,
            Hit {
                record: placeholder_record(),
                message_id: row.get(1)?,
                from: row.get(2)?,
                to: row.get(3)?,
                cc: row.get(4)?,
                subject: row.get(5)?,
                date: row.get(6)?,
                attachments: row.get(7)?,
                index_note: row.get(8)?,
            },
        ))
    }

    fn hits(&self, sql: &str, args: &[Value]) -> Result<Vec<Hit>, CatalogError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), Self::hit_from_row)?;
        let mut out = Vec::new();
        for row in rows {
            let (text, mut hit) = row?;
            hit.record = serde_json::from_str(&text)
                .map_err(|e| CatalogError::Corrupt(format!("delivery record: {e}")))?;
            out.push(hit);
        }
        Ok(out)
    }
}

/// A path as the path part of an SQLite `file:` URI.
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn placeholder_record() -> DeliveryRecord {
    DeliveryRecord {
        v: 0,
        id: 0,
        kind: String::new(),
        content: String::new(),
        size: 0,
        received: 0,
        capture: String::new(),
        sender: None,
        recipients: Vec::new(),
        login: None,
        login_method: None,
        queue_id: None,
        client_address: None,
        client_port: None,
        client_hostname: None,
        client_helo: None,
        tls: None,
        tags: Vec::new(),
        sender_params: Vec::new(),
    }
}

const HIT_COLUMNS: &str = "d.record, m.message_id, m.hdr_from, m.hdr_to, m.hdr_cc, m.subject, \
     m.date, m.attachment_list, m.index_note";

/// How many columns [`HIT_COLUMNS`] names.
const HIT_COLUMN_COUNT: usize = 9;

/// An FTS5 string literal: the text as one phrase, whatever it contains,
/// so user input can never be read as FTS5 syntax.
fn fts_phrase(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// Translates one text term into a condition on `d`/`m`. `IN (subquery)`
/// over row ids is never NULL, so its negation is exact.
fn text_condition(
    field: Option<TextField>,
    text: &Text,
    args: &mut Vec<Value>,
    keep: Option<&Sqlite>,
) -> Result<String, CatalogError> {
    let phrase = fts_phrase(text.as_str());
    let (columns, envelope) = match field {
        None => ("", None),
        Some(TextField::From) => ("{hdr_from} : ", Some("{sender} : ")),
        Some(TextField::To) => ("{hdr_to hdr_cc} : ", Some("{recipients} : ")),
        Some(TextField::Cc) => ("{hdr_cc} : ", None),
        Some(TextField::Subject) => ("{subject} : ", None),
        Some(TextField::Body) => ("{body} : ", None),
        Some(TextField::Attachment) => ("{attachments} : ", None),
        Some(TextField::MessageId) => ("{message_id} : ", None),
        Some(TextField::ToHeaders) => ("{hdr_to hdr_cc} : ", None),
    };
    // A match as a set of row ids: materialised for the page being
    // searched, else a subquery.
    let mut set = |table: &str, arg: String| -> Result<String, CatalogError> {
        let select = format!("SELECT rowid FROM {table} WHERE {table} MATCH ?");
        match keep.map(|c| c.materialized(&select, Value::Text(arg.clone()))) {
            Some(Err(e)) => Err(e),
            Some(Ok(Some(t))) => Ok(t),
            _ => {
                args.push(Value::Text(arg));
                Ok(format!("({select})"))
            }
        }
    };
    let mut cond = format!(
        "d.message IN {}",
        set("message_text", format!("{columns}{phrase}"))?
    );
    if let Some(env) = envelope {
        cond = format!(
            "({cond} OR d.id IN {})",
            set("envelope_text", format!("{env}{phrase}"))?
        );
    }
    Ok(cond)
}

/// A `*` glob as a `LIKE … ESCAPE '\'` pattern: `*` is `%`, and the
/// characters LIKE would treat specially are escaped. LIKE ignores ASCII
/// case only, which is the documented rule.
fn like_pattern(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 2);
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// The JSON path of a delivery-record field in `d.record`.
fn record(field: &str) -> String {
    format!("json_extract(d.record, '$.{field}')")
}

/// Whose envelope names an address as `parties` holds it.
#[derive(Clone, Copy)]
enum Role {
    Sender = 0,
    Recipient = 1,
}

/// An address term found through an index: a glob without `*` in
/// `parties` (an exact match, ASCII letters in either case, as LIKE
/// compares them), a glob with whole words through the envelope's
/// full-text index first; `exact` (the condition on the record itself,
/// built after the look-up's arguments) then decides. Only a glob with
/// neither reads every record. `exact_alone` says whether the `parties`
/// match is already the whole condition.
fn prefiltered(
    role: Role,
    glob: &str,
    exact_alone: bool,
    args: &mut Vec<Value>,
    exact: impl FnOnce(&mut Vec<Value>) -> String,
) -> String {
    if !glob.contains('*') {
        args.push(Value::Text(glob.to_owned()));
        let found = format!(
            "d.id IN (SELECT delivery FROM parties WHERE address = ? COLLATE NOCASE AND role = {})",
            role as i64
        );
        return if exact_alone {
            found
        } else {
            format!("({found} AND {})", exact(args))
        };
    }
    let column = match role {
        Role::Sender => "sender",
        Role::Recipient => "recipients",
    };
    match envelope_words(glob) {
        Some(words) => {
            args.push(Value::Text(format!("{{{column}}} : \"{words}\"")));
            let exact = exact(args);
            format!(
                "(d.id IN (SELECT rowid FROM envelope_text WHERE envelope_text MATCH ?) AND {exact})"
            )
        }
        None => exact(args),
    }
}

/// The longest run of whole words that every address a `*` glob matches
/// holds in order, as the envelope index splits it (ASCII letters and
/// digits; anything else separates), or `None` (a glob with other than
/// ASCII, whose words the tokenizer might split otherwise, or with no whole
/// word: `ali*`). A word a `*` touches may be longer in the address, so it
/// is left out.
fn envelope_words(glob: &str) -> Option<String> {
    if !glob.is_ascii() {
        return None;
    }
    let segments: Vec<&str> = glob.split('*').collect();
    let last = segments.len() - 1;
    let mut best: Vec<&str> = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let mut words: Vec<&str> = segment
            .split(|c: char| !c.is_ascii_alphanumeric())
            .collect();
        if i < last && segment.ends_with(|c: char| c.is_ascii_alphanumeric()) {
            words.pop();
        }
        if i > 0 && segment.starts_with(|c: char| c.is_ascii_alphanumeric()) && !words.is_empty() {
            words.remove(0);
        }
        words.retain(|w| !w.is_empty());
        if words.len() > best.len() {
            best = words;
        }
    }
    (!best.is_empty()).then(|| best.join(" "))
}

/// Whether any element of the record's array `field` is LIKE the next
/// argument: `EXISTS`, so an empty array is false, never NULL.
///
/// `LIMIT 1` in each `EXISTS` over `json_each`: SQLite 3.51 turns such an
/// `EXISTS` into a join, and a page walked by the time index then ignored
/// its `OFFSET` (the second page of `tag:audit` began with the first
/// page's second result; the query property test's offset pages found it).
/// A `LIMIT` keeps the subquery a subquery.
fn any_element_like(field: &str, glob: &str, args: &mut Vec<Value>) -> String {
    args.push(Value::Text(like_pattern(glob)));
    format!(
        "EXISTS (SELECT 1 FROM json_each(d.record, '$.{field}') e WHERE e.value LIKE ? ESCAPE '\\' LIMIT 1)"
    )
}

/// Micro-seconds since the epoch for `received`, clamped rather than
/// overflowing (every moment the parser accepts fits anyway).
fn micros(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp().saturating_mul(1_000_000)
}

/// A range condition on a column that is never NULL, or (`nullable`)
/// false when the column is NULL.
fn range_condition(
    column: &str,
    low: Option<i64>,
    high: Option<i64>,
    nullable: bool,
    args: &mut Vec<Value>,
) -> String {
    let mut parts = Vec::new();
    if nullable {
        parts.push(format!("{column} IS NOT NULL"));
    }
    if let Some(l) = low {
        args.push(Value::Integer(l));
        parts.push(format!("{column} >= ?"));
    }
    if let Some(h) = high {
        args.push(Value::Integer(h));
        parts.push(format!("{column} < ?"));
    }
    if parts.is_empty() {
        return "1".into();
    }
    format!("({})", parts.join(" AND "))
}

/// The SQL condition for one term over `deliveries d JOIN messages m`.
/// Every condition is two-valued (0 or 1, never NULL) for every row, so
/// `NOT` is the exact complement: a delivery without a login, a sender, a
/// queue id, a client or a Date header is matched by the negation.
fn term_condition(
    term: &Term,
    args: &mut Vec<Value>,
    keep: Option<&Sqlite>,
) -> Result<String, CatalogError> {
    Ok(match term {
        Term::Text { field, value } => text_condition(*field, value, args, keep)?,
        Term::Address { field, value } => {
            let glob = address_glob(value);
            match (field, glob) {
                (AddressField::Sender, None) => format!("({} IS NULL)", record("sender")),
                (_, None) => "0".into(),
                (AddressField::Sender, Some(g)) => {
                    prefiltered(Role::Sender, &g, true, args, |args| {
                        args.push(Value::Text(like_pattern(&g)));
                        format!("coalesce({} LIKE ? ESCAPE '\\', 0)", record("sender"))
                    })
                }
                (AddressField::Login, Some(g)) if !g.contains('*') => {
                    // The indexed column, compared as its index is collated.
                    args.push(Value::Text(g));
                    "(d.login IS NOT NULL AND d.login = ? COLLATE NOCASE)".into()
                }
                (AddressField::Login, Some(g)) => {
                    args.push(Value::Text(like_pattern(&g)));
                    "coalesce(d.login LIKE ? ESCAPE '\\', 0)".into()
                }
                (AddressField::Recipient, Some(g)) => {
                    prefiltered(Role::Recipient, &g, true, args, |args| {
                        any_element_like("recipients", &g, args)
                    })
                }
                (AddressField::Bcc, Some(g)) => {
                    prefiltered(Role::Recipient, &g, false, args, |args| {
                        // An envelope recipient the header To/Cc do not name, as
                        // `Name <addr>` or a bare `addr` in the indexed lists.
                        args.push(Value::Text(like_pattern(&g)));
                        "EXISTS (SELECT 1 FROM json_each(d.record, '$.recipients') e \
                     WHERE e.value LIKE ? ESCAPE '\\' \
                     AND instr(lower(', ' || m.hdr_to || ', ' || m.hdr_cc || ', '), '<' || lower(e.value) || '>') = 0 \
                     AND instr(lower(', ' || m.hdr_to || ', ' || m.hdr_cc || ', '), ', ' || lower(e.value) || ', ') = 0 LIMIT 1)"
                        .into()
                    })
                }
            }
        }
        Term::Queue(q) if q.contains('*') => {
            args.push(Value::Text(like_pattern(q)));
            format!("coalesce({} LIKE ? ESCAPE '\\', 0)", record("queue_id"))
        }
        Term::Queue(q) => {
            args.push(Value::Text(q.clone()));
            format!("coalesce({} = ? COLLATE NOCASE, 0)", record("queue_id"))
        }
        Term::Client(ClientMatch::Net { addr, prefix }) => {
            args.push(Value::Text(format!("{addr}/{prefix}")));
            format!("{IP_IN_FUNCTION}({}, ?)", record("client_address"))
        }
        Term::Client(ClientMatch::Host(h)) => {
            args.push(Value::Text(like_pattern(h)));
            format!(
                "coalesce({} LIKE ? ESCAPE '\\', 0)",
                record("client_hostname")
            )
        }
        Term::Capture(c) => {
            args.push(Value::Text(c.clone()));
            "d.capture = ?".into()
        }
        Term::Tag(t) => any_element_like("tags", t, args),
        Term::Size { cmp, bytes } => {
            args.push(Value::Integer(i64::try_from(*bytes).unwrap_or(i64::MAX)));
            format!("m.size {} ?", cmp.symbol())
        }
        Term::Time { field, range } => {
            let (low, high) = range.bounds();
            match field {
                TimeField::Received => {
                    range_condition("d.received", low.map(micros), high.map(micros), false, args)
                }
                TimeField::Date => range_condition(
                    "m.date",
                    low.map(|t| t.timestamp()),
                    high.map(|t| t.timestamp()),
                    true,
                    args,
                ),
            }
        }
        Term::HasAttachment => "m.attachments > 0".into(),
        Term::Thread(id) => {
            // The ids linked to this one, step by step (UNION: each once,
            // so the walk ends; LIMIT: at most THREAD_IDS of them), then
            // every message with one of them.
            args.push(Value::Text(id.clone()));
            format!(
                "m.id IN (WITH RECURSIVE linked(ref) AS (SELECT ? UNION \
                 SELECT b.ref FROM linked JOIN refs a ON a.ref = linked.ref \
                 JOIN refs b ON b.message = a.message LIMIT {THREAD_IDS}) \
                 SELECT r.message FROM refs r WHERE r.ref IN linked)"
            )
        }
        Term::Id(id) => {
            if let Some(hex) = id.strip_prefix("b3:") {
                if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(CatalogError::Query(format!("id:{id}: not a BLAKE3 prefix")));
                }
                args.push(Value::Text(format!("{}%", hex.to_ascii_uppercase())));
                "hex(d.content) LIKE ?".into()
            } else {
                let n: i64 = id
                    .parse()
                    .map_err(|_| CatalogError::Query(format!("id:{id}: not a delivery id")))?;
                args.push(Value::Integer(n));
                "d.id = ?".into()
            }
        }
    })
}

/// Builds the condition for an expression: its shape is the query's, and
/// its depth is bounded by the parser's nesting limit.
fn expr_condition(
    expr: &Expr,
    args: &mut Vec<Value>,
    keep: Option<&Sqlite>,
) -> Result<String, CatalogError> {
    Ok(match expr {
        Expr::Term(t) => term_condition(t, args, keep)?,
        Expr::Not(e) => format!("NOT ({})", expr_condition(e, args, keep)?),
        Expr::Or(items) if items.len() > 1 && items.iter().all(indexed) => {
            // Each branch looked up through its index, their union once:
            // tested row by row, an OR reads every delivery (a user's
            // scope on the web is such an OR).
            let mut own = Vec::new();
            let mut direct = true;
            let mut branches = Vec::with_capacity(items.len());
            for e in items {
                let (sql, d) = id_set(e, &mut own, keep)?;
                direct &= d;
                branches.push(sql);
            }
            let union = branches.join(" UNION ALL ");
            match keep {
                // Index look-ups alone: a set that only grows with new
                // deliveries, kept for the next search.
                Some(conn) if direct => conn.kept_set(&union, own)?,
                _ => {
                    args.extend(own);
                    format!("d.id IN ({union})")
                }
            }
        }
        Expr::And(items) | Expr::Or(items) => {
            let op = if matches!(expr, Expr::And(_)) {
                " AND "
            } else {
                " OR "
            };
            let parts = items
                .iter()
                .map(|e| expr_condition(e, args, keep))
                .collect::<Result<Vec<_>, _>>()?;
            if parts.is_empty() {
                return Ok(if matches!(expr, Expr::And(_)) {
                    "1"
                } else {
                    "0"
                }
                .into());
            }
            format!("({})", parts.join(op))
        }
    })
}

/// Whether a term's condition finds its deliveries through an index
/// (full text, the login column, the envelope's words) rather than by
/// testing every row.
fn indexed(expr: &Expr) -> bool {
    match expr {
        Expr::Term(Term::Text { .. }) => true,
        Expr::Term(Term::Address { field, value }) => match (field, address_glob(value)) {
            (AddressField::Login, Some(g)) => !g.contains('*'),
            (_, Some(g)) => !g.contains('*') || envelope_words(&g).is_some(),
            (_, None) => false,
        },
        _ => false,
    }
}

/// The ids of the deliveries an [`indexed`] term holds for, as a
/// `SELECT`: straight from the index that has them where one does (no
/// delivery row read), else the term's condition over the deliveries.
/// Removed deliveries may be among them (their rows are blanked, not
/// gone); the query they are part of joins the messages, which drops them.
fn id_set(
    expr: &Expr,
    args: &mut Vec<Value>,
    keep: Option<&Sqlite>,
) -> Result<(String, bool), CatalogError> {
    if let Expr::Term(Term::Address { field, value }) = expr {
        if let Some(g) = address_glob(value).filter(|g| !g.contains('*')) {
            let role = match field {
                AddressField::Login => {
                    args.push(Value::Text(g));
                    return Ok((
                        "SELECT id AS id FROM deliveries WHERE login = ? COLLATE NOCASE".into(),
                        true,
                    ));
                }
                AddressField::Sender => Some(Role::Sender),
                AddressField::Recipient => Some(Role::Recipient),
                AddressField::Bcc => None,
            };
            if let Some(role) = role {
                args.push(Value::Text(g));
                return Ok((
                    format!(
                        "SELECT delivery AS id FROM parties WHERE address = ? COLLATE NOCASE AND role = {}",
                        role as i64
                    ),
                    true,
                ));
            }
        }
    }
    Ok((
        format!(
            "SELECT d.id AS id FROM deliveries d JOIN messages m ON m.id = d.message WHERE {}",
            expr_condition(expr, args, keep)?
        ),
        false,
    ))
}

/// Builds the WHERE clause for a query.
/// `keep`: the connection whose kept sets a scope may come from (see
/// [`Kept`]); without it every set is built inside the statement.
fn where_clause(
    query: &Query,
    args: &mut Vec<Value>,
    keep: Option<&Sqlite>,
) -> Result<String, CatalogError> {
    match &query.expr {
        None => Ok("1".into()),
        Some(e) => expr_condition(e, args, keep),
    }
}

/// The SQL function `client:` networks use: whether the recorded client
/// address (any form the rules accept) lies in the network `addr/prefix`.
/// Always 0 or 1: an unknown or unreadable address is not in any network.
const IP_IN_FUNCTION: &str = "mailkeep_ip_in";

fn register_functions(conn: &Connection) -> Result<(), CatalogError> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        IP_IN_FUNCTION,
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let address: Option<String> = ctx.get(0)?;
            let net: String = ctx.get(1)?;
            let inside = (|| {
                let ip = mailkeep_query::client_ip(&address?)?;
                let (addr, prefix) = net.split_once('/')?;
                let m = ClientMatch::Net {
                    addr: addr.parse().ok()?,
                    prefix: prefix.parse().ok()?,
                };
                Some(m.contains(ip))
            })();
            Ok(i64::from(inside == Some(true)))
        },
    )?;
    Ok(())
}

fn location(segment: i64, offset: i64, len: i64) -> Result<Location, CatalogError> {
    Ok(Location {
        segment: u32::try_from(segment)
            .map_err(|_| CatalogError::Corrupt(format!("segment number {segment}")))?,
        offset: u64::try_from(offset)
            .map_err(|_| CatalogError::Corrupt(format!("record offset {offset}")))?,
        len: u64::try_from(len)
            .map_err(|_| CatalogError::Corrupt(format!("record length {len}")))?,
    })
}

/// The newest chain entry: (id, hash).
fn last_entry(conn: &Connection) -> Result<Option<(i64, Vec<u8>)>, CatalogError> {
    Ok(conn
        .query_row(
            "SELECT id, hash FROM deliveries ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// What the next chain entry follows: the newest entry's id and hash, or
/// 0 and the store's genesis.
fn chain_tip(conn: &Connection, store_id: &str) -> Result<(i64, [u8; 32]), CatalogError> {
    Ok(match last_entry(conn)? {
        Some((id, hash)) => (id, hash32(hash)?),
        None => (0, chain::genesis(store_id)),
    })
}

/// A reading connection's cache: the pages it reads often (the indexes a
/// search walks) kept in its own memory, and the file mapped rather than
/// copied in page by page. With SQLite's default 2 MB cache a search of a
/// 100,000-message catalog read most of its pages again from the kernel,
/// and the web's reader threads spent as long again waiting on a lock
/// taken while fetching pages (see docs/decisions.md).
fn reader_cache(conn: &Connection) -> Result<(), CatalogError> {
    conn.pragma_update(None, "cache_size", -65536)?;
    conn.pragma_update(None, "mmap_size", 1i64 << 30)?;
    Ok(())
}

fn hash32(v: Vec<u8>) -> Result<[u8; 32], CatalogError> {
    v.try_into()
        .map_err(|_| CatalogError::Corrupt("a stored hash is not 32 bytes".into()))
}

impl Catalog for Sqlite {
    fn store_id(&self) -> String {
        self.store_id.clone()
    }

    fn meta_get(&self, key: &str) -> Result<Option<String>, CatalogError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    fn meta_set(&mut self, key: &str, value: &str) -> Result<(), CatalogError> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    fn active_segment(&self, key: KeyId, max_len: u64) -> Result<(u32, u64), CatalogError> {
        let last: Option<(i64, String, i64)> = self
            .conn
            .query_row(
                "SELECT id, key_id, length FROM segments ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        Ok(match last {
            None => (1, 0),
            Some((id, k, len)) => {
                let id = u32::try_from(id)
                    .map_err(|_| CatalogError::Corrupt(format!("segment number {id}")))?;
                if k == key.to_hex() && (len as u64) < max_len {
                    (id, len as u64)
                } else {
                    (id + 1, 0)
                }
            }
        })
    }

    fn message(&self, hash: &[u8; 32]) -> Result<Option<MessageRow>, CatalogError> {
        let row: Option<(i64, i64, i64, i64, i64)> = self
            .conn
            .prepare_cached(
                "SELECT id, segment, offset, record_len, size FROM messages WHERE hash = ?1",
            )?
            .query_row([&hash[..]], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        row.map(|(id, seg, off, len, size)| {
            Ok(MessageRow {
                id,
                hash: *hash,
                location: location(seg, off, len)?,
                size: size as u64,
            })
        })
        .transpose()
    }

    fn delivery_by_key(&self, key: &[u8; 32]) -> Result<Option<i64>, CatalogError> {
        Ok(self
            .conn
            .prepare_cached("SELECT id FROM deliveries WHERE dkey = ?1")?
            .query_row([&key[..]], |r| r.get(0))
            .optional()?)
    }

    fn commit(&mut self, batch: CommitBatch) -> Result<Vec<i64>, CatalogError> {
        let store_id = self.store_id.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (id, key, len) in &batch.segments {
            tx.execute(
                "INSERT INTO segments (id, key_id, length) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET length = excluded.length",
                params![*id as i64, key.to_hex(), *len as i64],
            )?;
        }
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO messages (hash, segment, offset, record_len, size, key_id, message_id,
                     hdr_from, hdr_to, hdr_cc, subject, date, attachments, attachment_list, index_note)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?;
            let mut index = tx.prepare_cached(
                "INSERT INTO message_text (rowid, hdr_from, hdr_to, hdr_cc, subject, body, attachments, message_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut link = tx.prepare_cached(INSERT_REF)?;
            for m in &batch.messages {
                let f = &m.fields;
                let list: Vec<serde_json::Value> = f
                    .attachments
                    .iter()
                    .map(|a| {
                        serde_json::json!({"name": a.name, "type": a.content_type, "size": a.size})
                    })
                    .collect();
                let names: Vec<String> = f
                    .attachments
                    .iter()
                    .map(|a| format!("{} {}", a.name.as_deref().unwrap_or(""), a.content_type))
                    .collect();
                let note = match (&f.skipped, f.truncated) {
                    (Some(why), _) => Some(why.clone()),
                    (None, true) => Some("text truncated".to_string()),
                    (None, false) => None,
                };
                insert.execute(params![
                    &m.hash[..],
                    m.location.segment as i64,
                    m.location.offset as i64,
                    m.location.len as i64,
                    m.size as i64,
                    m.key.to_hex(),
                    f.message_id,
                    f.from,
                    f.to,
                    f.cc,
                    f.subject,
                    f.date,
                    f.attachments.len() as i64,
                    serde_json::Value::Array(list).to_string(),
                    note,
                ])?;
                let rowid = tx.last_insert_rowid();
                index.execute(params![
                    rowid,
                    f.from,
                    f.to,
                    f.cc,
                    f.subject,
                    f.text,
                    names.join("\n"),
                    f.message_id.as_deref().unwrap_or("")
                ])?;
                for id in f.message_id.iter().chain(&f.references) {
                    link.execute(params![id, rowid])?;
                }
            }
        }
        let mut ids = Vec::with_capacity(batch.deliveries.len());
        {
            let (mut last_id, mut prev) = chain_tip(&tx, &store_id)?;
            let mut message_id = tx.prepare_cached("SELECT id FROM messages WHERE hash = ?1")?;
            let mut insert = tx.prepare_cached(
                "INSERT INTO deliveries (id, message, content, dkey, received, login, capture, record, prev, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?;
            let mut index = tx.prepare_cached(
                "INSERT INTO envelope_text (rowid, sender, recipients, login) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut party = tx.prepare_cached(
                "INSERT OR IGNORE INTO parties (address, role, delivery) VALUES (?1, ?2, ?3)",
            )?;
            for d in batch.deliveries {
                let mut record = d.record;
                last_id += 1;
                record.id = last_id;
                let content = crate::parse_hex_hash(&record.content).ok_or_else(|| {
                    CatalogError::Corrupt(format!("content hash {:?}", record.content))
                })?;
                let message: i64 = message_id
                    .query_row([&content[..]], |r| r.get(0))
                    .optional()?
                    .ok_or_else(|| {
                        CatalogError::Corrupt(format!(
                            "delivery of unknown message {}",
                            record.content
                        ))
                    })?;
                let canonical = record.canonical();
                let hash = chain::link(&prev, &canonical);
                insert.execute(params![
                    last_id,
                    message,
                    &content[..],
                    &d.key[..],
                    record.received,
                    record.login,
                    record.capture,
                    canonical,
                    &prev[..],
                    &hash[..],
                ])?;
                index.execute(params![
                    last_id,
                    record.sender.as_deref().unwrap_or(""),
                    record.recipients.join("\n"),
                    record.login.as_deref().unwrap_or(""),
                ])?;
                if let Some(sender) = &record.sender {
                    party.execute(params![sender, 0, last_id])?;
                }
                for recipient in &record.recipients {
                    party.execute(params![recipient, 1, last_id])?;
                }
                prev = hash;
                ids.push(last_id);
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    fn search(&self, query: &Query, limit: Option<usize>) -> Result<Vec<Hit>, CatalogError> {
        // Two steps: the ids, sorted and cut with only indexed columns
        // touched; then the (large) records of those ids alone.
        let mut args = Vec::new();
        let cond = where_clause(query, &mut args, Some(self))?;
        let limit = limit.map(|l| l.min(i64::MAX as usize) as i64).unwrap_or(-1);
        args.push(Value::Integer(limit));
        let sql = format!(
            "SELECT d.id FROM deliveries d JOIN messages m ON m.id = d.message \
             WHERE {cond} ORDER BY d.received DESC, d.id DESC LIMIT ?"
        );
        let ids: Vec<i64> = {
            let mut stmt = self.conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(hit) = self.hit(id)? {
                out.push(hit);
            }
        }
        Ok(out)
    }

    fn set_page_window(&mut self, deliveries: i64) {
        self.window = deliveries.max(1);
    }

    fn search_page(&self, query: &Query, page: Page) -> Result<Found, CatalogError> {
        /// Ends the scratch however the search ends (a panic too).
        struct Ends<'a>(&'a Sqlite);
        impl Drop for Ends<'_> {
            fn drop(&mut self) {
                self.0.end_scratch();
            }
        }
        *self.scratch.borrow_mut() = Some(Scratch::default());
        let _ends = Ends(self);
        self.search_page_in(query, page)
    }

    fn hit(&self, id: i64) -> Result<Option<Hit>, CatalogError> {
        let sql = format!(
            "SELECT {HIT_COLUMNS} FROM deliveries d JOIN messages m ON m.id = d.message WHERE d.id = ?"
        );
        Ok(self.hits(&sql, &[Value::Integer(id)])?.pop())
    }

    fn chain(
        &self,
        f: &mut dyn FnMut(ChainRow) -> Result<(), CatalogError>,
    ) -> Result<(), CatalogError> {
        let mut stmt = self.conn.prepare(
            "SELECT d.id, d.record, d.prev, d.hash, d.content,
                    EXISTS (SELECT 1 FROM messages m WHERE m.id = d.message AND m.hash = d.content)
             FROM deliveries d ORDER BY d.id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            f(ChainRow {
                id: r.get(0)?,
                record: r.get(1)?,
                prev: r.get(2)?,
                hash: r.get(3)?,
                content: r.get(4)?,
                has_message: r.get(5)?,
            })?;
        }
        Ok(())
    }

    fn messages(
        &self,
        f: &mut dyn FnMut(MessageRow) -> Result<(), CatalogError>,
    ) -> Result<(), CatalogError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, hash, segment, offset, record_len, size FROM messages ORDER BY id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            f(MessageRow {
                id: r.get(0)?,
                hash: hash32(r.get(1)?)?,
                location: location(r.get(2)?, r.get(3)?, r.get(4)?)?,
                size: r.get::<_, i64>(5)? as u64,
            })?;
        }
        Ok(())
    }

    fn messages_down_from(
        &self,
        at_most: i64,
        limit: usize,
    ) -> Result<Vec<MessageRow>, CatalogError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, hash, segment, offset, record_len, size FROM messages
             WHERE id <= ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let mut rows = stmt.query(params![at_most, limit as i64])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(MessageRow {
                id: r.get(0)?,
                hash: hash32(r.get(1)?)?,
                location: location(r.get(2)?, r.get(3)?, r.get(4)?)?,
                size: r.get::<_, i64>(5)? as u64,
            });
        }
        Ok(out)
    }

    fn add_refs(
        &mut self,
        links: &[(i64, Vec<String>)],
        pending: Option<i64>,
    ) -> Result<(), CatalogError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            // A message removed since it was read gets no rows.
            let mut link = tx.prepare_cached(
                "INSERT OR IGNORE INTO refs (ref, message)
                 SELECT ?1, id FROM messages WHERE id = ?2",
            )?;
            for (message, ids) in links {
                for id in ids {
                    link.execute(params![id, message])?;
                }
            }
        }
        match pending {
            Some(id) => tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                params![THREADS_PENDING, id.to_string()],
            )?,
            None => tx.execute("DELETE FROM meta WHERE key = ?1", [THREADS_PENDING])?,
        };
        tx.commit()?;
        Ok(())
    }

    fn orphans(&self) -> Result<Vec<[u8; 32]>, CatalogError> {
        let mut stmt = self.conn.prepare(
            "SELECT m.hash FROM messages m
             WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message = m.id)
             ORDER BY m.id",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(hash32(row?)?);
        }
        Ok(out)
    }

    fn deliveries_of(&self, hash: &[u8; 32]) -> Result<Vec<i64>, CatalogError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id FROM deliveries WHERE content = ?1 AND message != 0 ORDER BY id",
        )?;
        let ids = stmt.query_map([&hash[..]], |r| r.get(0))?;
        Ok(ids.collect::<Result<Vec<i64>, _>>()?)
    }

    fn chain_hash(&self, id: i64) -> Result<Option<Vec<u8>>, CatalogError> {
        Ok(self
            .conn
            .query_row("SELECT hash FROM deliveries WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn head(&self) -> Result<Option<(i64, Vec<u8>)>, CatalogError> {
        last_entry(&self.conn)
    }

    fn totals(&self) -> Result<Totals, CatalogError> {
        let (messages, raw, stored): (i64, i64, i64) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(record_len), 0) FROM messages",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let (deliveries, delivered): (i64, i64) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(m.size), 0) FROM deliveries d JOIN messages m ON m.id = d.message",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let segments: i64 = self
            .conn
            .query_row("SELECT count(*) FROM segments", [], |r| r.get(0))?;
        let unlinked: i64 = self.conn.query_row(
            "SELECT count(*) FROM messages WHERE id <= \
             (SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1)",
            [THREADS_PENDING],
            |r| r.get(0),
        )?;
        Ok(Totals {
            messages: messages as u64,
            deliveries: deliveries as u64,
            delivered_bytes: delivered as u64,
            raw_bytes: raw as u64,
            stored_bytes: stored as u64,
            segments: segments as u64,
            unlinked: unlinked as u64,
        })
    }

    fn per_day(&self, since: i64) -> Result<Vec<DayCount>, CatalogError> {
        // The capture time's index gives the range; the join leaves out
        // removed deliveries, as everywhere.
        let mut stmt = self.conn.prepare_cached(
            "SELECT d.received / 86400000000 AS day, d.capture, count(*) \
             FROM deliveries d JOIN messages m ON m.id = d.message \
             WHERE d.received >= ? GROUP BY day, d.capture ORDER BY day, d.capture",
        )?;
        let rows = stmt.query_map([since], |r| {
            Ok(DayCount {
                day: r.get(0)?,
                capture: r.get(1)?,
                deliveries: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn segments(&self) -> Result<Vec<(u32, u64)>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, length FROM segments ORDER BY id")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, len) = row?;
            out.push((id as u32, len as u64));
        }
        Ok(out)
    }

    fn remove(&mut self, removals: &[(i64, String)], now: i64) -> Result<Removed, CatalogError> {
        let store_id = self.store_id.clone();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut out = Removed::default();
        let (mut last_id, mut prev) = chain_tip(&tx, &store_id)?;
        for (victim, reason) in removals {
            let row: Option<(i64, Vec<u8>, Vec<u8>)> = tx
                .query_row(
                    "SELECT message, content, hash FROM deliveries WHERE id = ?1 AND message != 0",
                    [victim],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((message, content, victim_hash)) = row else {
                continue;
            };
            last_id += 1;
            let tomb = chain::TombstoneRecord {
                v: 1,
                id: last_id,
                kind: "tombstone".into(),
                deleted: *victim,
                deleted_hash: chain::hex(&victim_hash),
                content: chain::hex(&content),
                reason: reason.clone(),
                time: now,
            };
            let canonical = tomb.canonical();
            let hash = chain::link(&prev, &canonical);
            let mut dkey = blake3::Hasher::new_derive_key("mailkeep 2026-12 tombstone key");
            dkey.update(&victim.to_le_bytes());
            tx.execute(
                "INSERT INTO deliveries (id, message, content, dkey, received, login, capture, record, prev, hash)
                 VALUES (?1, 0, ?2, ?3, ?4, NULL, 'tombstone', ?5, ?6, ?7)",
                params![
                    last_id,
                    &content[..],
                    &dkey.finalize().as_bytes()[..],
                    now,
                    canonical,
                    &prev[..],
                    &hash[..]
                ],
            )?;
            prev = hash;
            let marker = chain::DeletedMarker {
                v: 1,
                id: *victim,
                kind: "deleted".into(),
                tombstone: last_id,
            };
            tx.execute(
                "UPDATE deliveries SET message = 0, login = NULL, capture = 'deleted', record = ?2
                 WHERE id = ?1",
                params![
                    victim,
                    serde_json::to_string(&marker).expect("a plain struct always serialises")
                ],
            )?;
            tx.execute("DELETE FROM envelope_text WHERE rowid = ?1", [victim])?;
            tx.execute("DELETE FROM parties WHERE delivery = ?1", [victim])?;
            out.deliveries.push((*victim, last_id));
            let still: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM deliveries WHERE message = ?1)",
                [message],
                |r| r.get(0),
            )?;
            if !still {
                let loc: (i64, i64, i64) = tx.query_row(
                    "SELECT segment, offset, record_len FROM messages WHERE id = ?1",
                    [message],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                tx.execute("DELETE FROM message_text WHERE rowid = ?1", [message])?;
                tx.execute("DELETE FROM refs WHERE message = ?1", [message])?;
                tx.execute("DELETE FROM messages WHERE id = ?1", [message])?;
                out.messages.push(location(loc.0, loc.1, loc.2)?);
            }
        }
        tx.commit()?;
        Ok(out)
    }

    fn segment_usage(&self) -> Result<Vec<SegmentUsage>, CatalogError> {
        let mut stmt = self.conn.prepare(
            "SELECT s.id, s.key_id, s.length,
                    coalesce((SELECT sum(m.record_len) FROM messages m WHERE m.segment = s.id), 0)
             FROM segments s ORDER BY s.id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, key, length, live) = row?;
            out.push(SegmentUsage {
                id: u32::try_from(id)
                    .map_err(|_| CatalogError::Corrupt(format!("segment number {id}")))?,
                key,
                length: length as u64,
                live: live as u64,
            });
        }
        Ok(out)
    }

    fn live_records(&self, segment: u32) -> Result<Vec<(i64, Location)>, CatalogError> {
        let mut stmt = self.conn.prepare(
            "SELECT id, segment, offset, record_len FROM messages WHERE segment = ?1 ORDER BY offset",
        )?;
        let rows = stmt.query_map([segment as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, seg, off, len) = row?;
            out.push((id, location(seg, off, len)?));
        }
        Ok(out)
    }

    fn move_segment(
        &mut self,
        old: u32,
        new: u32,
        key_hex: &str,
        new_len: u64,
        moves: &[(i64, u64)],
    ) -> Result<(), CatalogError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute(
            "INSERT INTO segments (id, key_id, length) VALUES (?1, ?2, ?3)",
            params![new as i64, key_hex, new_len as i64],
        )?;
        {
            let mut update =
                tx.prepare_cached("UPDATE messages SET segment = ?2, offset = ?3 WHERE id = ?1")?;
            for (id, offset) in moves {
                update.execute(params![id, new as i64, *offset as i64])?;
            }
        }
        let left: i64 = tx.query_row(
            "SELECT count(*) FROM messages WHERE segment = ?1",
            [old as i64],
            |r| r.get(0),
        )?;
        if left != 0 {
            return Err(CatalogError::Corrupt(format!(
                "segment {old} still holds {left} records after compaction"
            )));
        }
        tx.execute("DELETE FROM segments WHERE id = ?1", [old as i64])?;
        tx.commit()?;
        Ok(())
    }

    fn purge(&mut self) -> Result<bool, CatalogError> {
        self.conn.execute_batch(
            "INSERT INTO message_text (message_text) VALUES ('optimize');
             INSERT INTO envelope_text (envelope_text) VALUES ('optimize');",
        )?;
        // A reader in another process can hold the log: try a few times.
        for attempt in 0..20 {
            let busy: i64 = self
                .conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
            if busy == 0 {
                return Ok(true);
            }
            std::thread::sleep(std::time::Duration::from_millis(50 * (attempt + 1)));
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::envelope_words;

    #[test]
    fn envelope_words_are_the_whole_words_every_match_holds() {
        let words = |g: &str| envelope_words(g);
        assert_eq!(
            words("alice@example.com").as_deref(),
            Some("alice example com")
        );
        assert_eq!(words("*@vendor.example").as_deref(), Some("vendor example"));
        assert_eq!(
            words("ALICE@Example.COM").as_deref(),
            Some("ALICE Example COM")
        );
        assert_eq!(
            words("first.last+tag@x.org").as_deref(),
            Some("first last tag x org")
        );
        // A word a `*` touches may go on in the address.
        assert_eq!(words("ali*"), None);
        assert_eq!(words("*ice@ex*"), None);
        assert_eq!(words("a*b@x.org").as_deref(), Some("x org"));
        assert_eq!(words("alice@*.example.com").as_deref(), Some("example com"));
        assert_eq!(words("*"), None);
        assert_eq!(words(""), None);
        // The tokenizer may split other than ASCII differently.
        assert_eq!(words("jörg@example.de"), None);
    }
}
