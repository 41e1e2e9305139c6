//! The search query language: [`parse()`] turns the text a user types into a
//! [`Query`], an expression tree of [`Term`]s ([`ast`]); the store turns it
//! into SQL.

#![forbid(unsafe_code)]

pub mod ast;
pub mod parse;

pub use ast::{
    address_glob, client_ip, AddressField, ClientMatch, Comparison, Expr, Moment, Precision, Query,
    Term, Text, TextField, TimeField, TimeRange,
};
pub use parse::{
    parse, QueryError, KNOWN_KEYS, MAX_DEPTH, MAX_QUERY_BYTES, MAX_TERMS, MAX_TREE_DEPTH,
};
