//! Capture front-ends: the ways a message and its envelope reach mailkeep.
//!
//! Each front-end builds one [`mailkeep_envelope::Envelope`] and calls
//! [`mailkeep_destinations::Archiver::archive`]; only after that returns Ok
//! does it tell the mail server "yes". Today: [`pipe`] (Postfix `pipe(8)`
//! content filter and `mailbox_command` wrapper), with [`reinject`] for
//! handing the message back to the MTA.

#![forbid(unsafe_code)]

pub mod filter;
pub mod listen;
pub mod milter;
pub mod pipe;
pub mod policy;
pub mod reinject;

/// An error and its causes on one line, joined with `: `.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
