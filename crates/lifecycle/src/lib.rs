//! The archive's lifecycle, beside the store: what happens to archived mail
//! after it is written and who looked at it.
//!
//! - [`audit`]: the audit log, one hash-chained line per access, written
//!   before the access is answered, so there are no unaudited reads.
//! - [`retention`]: how long each delivery is kept, by policies tried in
//!   order, from its recorded receive time.
//! - [`hold`]: legal holds, named queries whose deliveries are kept while
//!   they stand; entries of the audit log, so its chain covers them.
//!
//! Expiry and provable deletion are to join it here.

#![forbid(unsafe_code)]

pub mod audit;
pub mod hold;
pub mod retention;

pub use audit::{Actor, AuditError, AuditLog, AuditReport, Entry};
