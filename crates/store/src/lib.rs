//! The native archive store.

#![forbid(unsafe_code)]
