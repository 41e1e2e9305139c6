//! What the fuzz targets share: reading structured fields off the input, a
//! scratch directory in tmpfs, the SMTP wire normalisation, and a native
//! store with one rule archiving everything into it.

use mailkeep_destinations::{ArchiveOptions, Archiver};
use mailkeep_rules::{OneOrMany, RawRule, RuleSet};
use mailkeep_store::catalog::Hit;
use mailkeep_store::{Store, StoreConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Reads fields off the front of the fuzz input; past its end every read
/// gives zeros and empty values.
pub struct Cursor<'a>(pub &'a [u8]);

impl<'a> Cursor<'a> {
    /// One byte.
    pub fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    /// A length byte, then that many bytes (fewer at the end).
    pub fn bytes(&mut self) -> &'a [u8] {
        let n = usize::from(self.byte()).min(self.0.len());
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        s
    }

    /// [`Cursor::bytes`] as lossy UTF-8.
    pub fn string(&mut self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }

    /// A flag byte, then a string when it is odd.
    pub fn opt(&mut self) -> Option<String> {
        (self.byte() % 2 == 1).then(|| self.string())
    }

    /// [`Cursor::bytes`] mapped onto `alphabet`.
    pub fn word(&mut self, alphabet: &[u8]) -> String {
        self.bytes()
            .iter()
            .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
            .collect()
    }
}

/// Logs what mailkeep logs to standard error when `MAILKEEP_FUZZ_LOG` is
/// set (replaying one input); silent otherwise, as fuzzing wants.
pub fn log_if_asked() {
    if std::env::var_os("MAILKEEP_FUZZ_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .try_init();
    }
}

/// A fresh directory for this process, in `/dev/shm` when there is one
/// (files written on every run should not wear a disk).
pub fn scratch_dir(name: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("mailkeep-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// What SMTP DATA carries of `x`: every bare LF made CRLF (CR LF is kept)
/// and, if `x` does not end with LF, a CRLF appended.
pub fn crlf_normalised(x: &[u8]) -> Vec<u8> {
    let mut want = Vec::with_capacity(x.len() * 2 + 2);
    for (i, &b) in x.iter().enumerate() {
        if b == b'\n' && (i == 0 || x[i - 1] != b'\r') {
            want.push(b'\r');
        }
        want.push(b);
    }
    if !x.is_empty() && !x.ends_with(b"\n") {
        want.extend_from_slice(b"\r\n");
    }
    want
}

/// A store in `dir/store` and an archiver whose one rule keeps every
/// message there (the embedded default's `archive = ["store"]`).
pub fn store_archiver(dir: &Path) -> (Arc<Store>, Archiver) {
    let store = Arc::new(Store::open(StoreConfig::new(dir.join("store"))).unwrap());
    let rule = RawRule {
        archive: OneOrMany::Many(vec!["store".into()]),
        ..RawRule::default()
    };
    let mut archiver = Archiver::new(
        RuleSet::compile(vec![rule], true).unwrap(),
        ArchiveOptions::default(),
    );
    archiver.set_store(Some(store.clone()));
    (store, archiver)
}

/// Follows the deliveries a store gains, by id (ids are consecutive), so
/// a run does not count the whole catalog after every input.
pub struct NewDeliveries {
    next: i64,
}

impl NewDeliveries {
    /// Starts after the store's current last delivery.
    pub fn new(store: &Store) -> NewDeliveries {
        NewDeliveries {
            next: store.totals().unwrap().deliveries as i64 + 1,
        }
    }

    /// The deliveries stored since the last call, oldest first.
    pub fn take(&mut self, store: &Store) -> Vec<Hit> {
        let mut v = Vec::new();
        while let Ok(hit) = store.get(self.next) {
            v.push(hit);
            self.next += 1;
        }
        v
    }
}
