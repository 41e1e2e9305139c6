//! Unique file names for one-file-per-message destinations.
//!
//! The Maildir convention: `SECONDS.M<usec>P<pid>Q<counter>.HOST`. The pid
//! separates processes, the counter separates messages within one process,
//! and files are still created with `O_EXCL` so a collision is retried, never
//! an overwrite.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The host name with `/` and `:` escaped as Maildir requires.
pub fn maildir_host(host: &str) -> String {
    host.replace('/', "\\057").replace(':', "\\072")
}

/// A fresh unique base name.
pub fn unique_name(host: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        n,
        maildir_host(host)
    )
}
