//! Finding and exporting archived mail: the search query language and the
//! export formats.

#![forbid(unsafe_code)]

pub mod parse;

pub use parse::{parse, Query, QueryError, Term, Text, TextField, MAX_QUERY_BYTES, MAX_TERMS};
