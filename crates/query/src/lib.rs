//! Finding and exporting archived mail: the search query language and the
//! export formats.

#![forbid(unsafe_code)]
