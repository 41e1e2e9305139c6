//! The integration test binary: every test here runs the real `mailkeep`
//! executable, and reads what it wrote with independent readers (Python's
//! `mailbox` and `email` modules, a real Postfix).

mod smtp;
mod util;

mod admin;
mod audit;
mod check_config;
mod commands;
mod filter;
mod filter_tls;
mod flood;
mod forward;
mod isolation;
mod milter;
mod pipe;
mod postfix;
mod postfix_filter;
mod postfix_milter;
mod postfix_pipe;
mod readme;
mod retention;
mod search;
mod store;
mod store_crash;
mod web;
