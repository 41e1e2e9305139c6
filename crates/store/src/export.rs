//! Exports: deliveries streamed out of the store with the digests and the
//! envelope a reader needs to check them without mailkeep, and a manifest
//! naming the chain head at export time. `mailkeep export` (zip, a
//! directory of `.eml`) and the web's "export these results" (zip) both
//! write through here, so both give the same manifest.

use crate::catalog::Hit;
use crate::{Store, StoreError};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Seek, Write};

/// An export that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A stored message could not be read back: the export stops rather
    /// than leave it out.
    #[error("delivery {id}: {source}")]
    Damaged {
        /// The delivery.
        id: i64,
        /// The cause.
        #[source]
        source: StoreError,
    },
    /// The store failed otherwise.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the export failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The zip could not be written.
    #[error(transparent)]
    Zip(#[from] zip::result::ZipError),
}

/// Passes a message through to `out` while taking its size and digests
/// for the manifest.
pub struct Digesting<W: Write> {
    /// Where the bytes go.
    pub out: W,
    blake3: blake3::Hasher,
    sha256: Sha256,
    size: u64,
}

impl<W: Write> Digesting<W> {
    /// Digests what is written to `out`.
    pub fn new(out: W) -> Digesting<W> {
        Digesting {
            out,
            blake3: blake3::Hasher::new(),
            sha256: Sha256::new(),
            size: 0,
        }
    }

    /// The manifest's entry for what was written, stored as `file`, with
    /// the `envelope` this reader may see.
    pub fn entry(&self, hit: &Hit, file: &str, envelope: Value) -> Value {
        json!({
            "id": hit.record.id,
            "file": file,
            "size": self.size,
            "blake3": self.blake3.finalize().to_hex().to_string(),
            "sha256": format!("{:x}", self.sha256.clone().finalize()),
            "message_id": hit.message_id,
            "subject": hit.subject,
            "envelope": envelope,
        })
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.blake3.update(&buf[..n]);
        self.sha256.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A delivery's original bytes streamed into `out` (bounded memory).
pub fn stream_into<W: Write>(
    store: &Store,
    hit: &Hit,
    out: W,
) -> Result<Digesting<W>, ExportError> {
    let mut d = Digesting::new(out);
    match store.write_raw(&hit.record.content, &mut d) {
        Ok(_) => Ok(d),
        Err(e @ StoreError::Record { .. }) => Err(ExportError::Damaged {
            id: hit.record.id,
            source: e,
        }),
        Err(e) => Err(e.into()),
    }
}

/// The manifest: the store, the query, the time and chain head, and one
/// entry per message.
pub fn manifest(store: &Store, query: &str, entries: Vec<Value>) -> Result<String, ExportError> {
    let cp = store.checkpoint()?;
    let m = json!({
        "mailkeep_export": 1,
        "store": cp.store,
        "query": query,
        "exported": cp.time,
        "chain_head": {"entry": cp.entry, "hash": cp.head},
        "messages": entries,
    });
    Ok(serde_json::to_string_pretty(&m).unwrap_or_default() + "\n")
}

/// A zip of `messages/ID.eml` (deflated, zip64 when large) and
/// `manifest.json`, written into `out`.
pub struct ZipExport<W: Write + Seek> {
    zip: zip::ZipWriter<W>,
    opts: zip::write::SimpleFileOptions,
    entries: Vec<Value>,
}

impl<W: Write + Seek> ZipExport<W> {
    /// An empty export into `out`.
    pub fn new(out: W) -> ZipExport<W> {
        ZipExport {
            zip: zip::ZipWriter::new(out),
            opts: zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .large_file(true),
            entries: Vec::new(),
        }
    }

    /// Adds `hit`'s message; `envelope` is what the manifest says of its
    /// envelope (the whole record, or what this reader may see of it).
    pub fn add(&mut self, store: &Store, hit: &Hit, envelope: Value) -> Result<(), ExportError> {
        let name = format!("messages/{}.eml", hit.record.id);
        self.zip.start_file(name.as_str(), self.opts)?;
        let d = stream_into(store, hit, &mut self.zip)?;
        let entry = d.entry(hit, &name, envelope);
        self.entries.push(entry);
        Ok(())
    }

    /// Writes the manifest and the zip's directory; gives `out` back.
    pub fn finish(mut self, store: &Store, query: &str) -> Result<W, ExportError> {
        let m = manifest(store, query, self.entries)?;
        self.zip.start_file("manifest.json", self.opts)?;
        self.zip.write_all(m.as_bytes())?;
        Ok(self.zip.finish()?)
    }
}
