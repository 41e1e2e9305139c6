//! One MTA connection: the milter callbacks, turned into an [`Envelope`]
//! and one archive request at end of message.
//!
//! State per connection: what is known of the SMTP client and the macros
//! (kept across messages), and at most one message in progress (dropped on
//! ABORT, at end of message, on QUIT/QUIT_NC, and when a new CONNECT
//! arrives on a reused channel), so nothing leaks from one message into the
//! next.
//!
//! Protocol choices, made in [`Session::option_negotiation`]:
//! - the version answered is the MTA's, at most 6 (a Postfix configured
//!   with `milter_protocol = 2` refuses a milter that answers 6);
//! - SETSYMLIST (0x100, not named by miltr-common) asks for the macros
//!   mailkeep needs at each stage, so no `milter_*_macros` edits are needed;
//! - SMFIP_HDR_LEADSPC keeps header values byte for byte;
//! - ADDHDRS only when `add_header = true`; every other stage is kept;
//! - "no reply" for connect, HELO, RCPT, headers, end of headers and body,
//!   whose answers `noreply::NoReply` drops: the MTA streams those
//!   commands instead of waiting for each answer. A failure while
//!   receiving (spool error, `max_message_size`) is therefore answered at
//!   end of message, by the failure policy.

use super::message::{ConnectionFacts, MessageBuilder};
use super::Snapshot;
use crate::policy::{FailureCounters, FailurePolicy};
use async_trait::async_trait;
use bytes::BytesMut;
use mailkeep_destinations::GroupCommitter;
use miltr_common::actions::{Action, Continue, Tempfail};
use miltr_common::commands::{Body, Connect, Header, Helo, Macro, Mail, Recipient};
use miltr_common::encoding::Writable;
use miltr_common::modifications::headers::AddHeader;
use miltr_common::modifications::ModificationResponse;
use miltr_common::optneg::{Capability, MacroStage, OptNeg, Protocol};
use miltr_server::{Error, Milter};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The SETSYMLIST action bit, which miltr-common 0.1.3 does not name.
const SMFIF_SETSYMLIST: u32 = 0x100;

/// The highest milter protocol version spoken.
const MAX_VERSION: u32 = 6;

/// Macros requested per stage (names as libmilter writes them).
const CONNECT_MACROS: &[&str] = &[
    "{client_addr}",
    "{client_name}",
    "{client_port}",
    "{daemon_name}",
    "j",
];
const HELO_MACROS: &[&str] = &["{tls_version}", "{cipher}", "{cert_subject}"];
const MAIL_MACROS: &[&str] = &["{auth_authen}", "{auth_type}", "{auth_author}", "i"];
const EOH_MACROS: &[&str] = &["i"];
const EOM_MACROS: &[&str] = &["i"];

/// A message in progress.
struct InProgress {
    builder: MessageBuilder,
    /// Over `max_message_size`: not archived; the policy decides at end of
    /// message, and the rest of the message is not spooled.
    oversize: bool,
    /// The spool failed: not archived; the policy decides at end of message.
    failure: Option<String>,
}

/// One MTA connection's milter.
pub struct Session {
    snapshot: Arc<Snapshot>,
    committer: GroupCommitter,
    counters: Arc<FailureCounters>,
    draining: Arc<AtomicBool>,
    in_message: Arc<AtomicBool>,
    facts: ConnectionFacts,
    message: Option<InProgress>,
    leadspc: bool,
    add_header: bool,
}

impl Session {
    /// A session using the rules and settings of `snapshot` for its whole life.
    pub fn new(
        snapshot: Arc<Snapshot>,
        committer: GroupCommitter,
        counters: Arc<FailureCounters>,
        draining: Arc<AtomicBool>,
        in_message: Arc<AtomicBool>,
    ) -> Session {
        Session {
            snapshot,
            committer,
            counters,
            draining,
            in_message,
            facts: ConnectionFacts::default(),
            message: None,
            leadspc: false,
            add_header: false,
        }
    }

    fn queue_id(&self) -> String {
        self.facts.macro_value("i").unwrap_or_else(|| "-".into())
    }

    fn end_message(&mut self) {
        self.message = None;
        self.facts.forget_message_macros();
        self.in_message.store(false, Ordering::Release);
    }

    fn policy(&self) -> FailurePolicy {
        self.snapshot.on_failure
    }

    /// The answer for a message that could not be archived, by policy.
    fn failed(&self, what: &str) -> ModificationResponse {
        let policy = self.policy();
        self.counters.record(policy);
        match policy {
            FailurePolicy::Tempfail => {
                tracing::error!(queue_id = %self.queue_id(), policy = policy.as_str(),
                    "not archived, asking the MTA to retry: {what}");
                ModificationResponse::builder().build(Tempfail)
            }
            FailurePolicy::Accept => {
                tracing::error!(queue_id = %self.queue_id(), policy = policy.as_str(),
                    "not archived, accepted anyway (counted): {what}");
                ModificationResponse::empty_continue()
            }
        }
    }
}

/// Raw header name and value: miltr-common only offers lossy UTF-8 views,
/// but its wire encoding is `name NUL value NUL`, byte for byte.
fn raw_header(h: &Header) -> (Vec<u8>, Vec<u8>) {
    let mut buf = BytesMut::with_capacity(h.len());
    h.write(&mut buf);
    let bytes = buf.as_ref();
    let name_end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    let name = bytes[..name_end].to_vec();
    let rest = bytes.get(name_end + 1..).unwrap_or_default();
    let value = rest.strip_suffix(&[0]).unwrap_or(rest).to_vec();
    (name, value)
}

fn args(v: Vec<std::borrow::Cow<'_, str>>) -> Vec<String> {
    v.into_iter()
        .filter(|a| !a.is_empty())
        .map(|a| a.into_owned())
        .collect()
}

#[async_trait]
impl Milter for Session {
    type Error = io::Error;

    async fn option_negotiation(&mut self, theirs: OptNeg) -> Result<OptNeg, Error<Self::Error>> {
        let mut wanted_caps = SMFIF_SETSYMLIST;
        if self.snapshot.add_header {
            wanted_caps |= Capability::SMFIF_ADDHDRS.bits();
        }
        let capabilities = Capability::from_bits_retain(wanted_caps) & theirs.capabilities;
        // "No reply" for the stages that always continue: the MTA streams
        // them (see `noreply`); failures there are answered at end of message.
        let protocol = (Protocol::NO_UNKNOWN
            | Protocol::NO_DATA
            | Protocol::SMFIP_HDR_LEADSPC
            | super::noreply::wanted())
            & theirs.protocol;
        self.leadspc = protocol.contains(Protocol::SMFIP_HDR_LEADSPC);
        self.add_header = capabilities.contains(Capability::SMFIF_ADDHDRS);
        let mut ours = OptNeg {
            version: theirs.version.min(MAX_VERSION),
            capabilities,
            protocol,
            ..OptNeg::default()
        };
        if theirs.capabilities.bits() & SMFIF_SETSYMLIST != 0 {
            let stages = &mut ours.macro_stages;
            stages.with_stage(MacroStage::Connect, CONNECT_MACROS);
            stages.with_stage(MacroStage::Helo, HELO_MACROS);
            stages.with_stage(MacroStage::MailFrom, MAIL_MACROS);
            stages.with_stage(MacroStage::EndOfHeaders, EOH_MACROS);
            stages.with_stage(MacroStage::EndOfBody, EOM_MACROS);
        }
        tracing::debug!(version = ours.version, leadspc = self.leadspc, "negotiated");
        Ok(ours)
    }

    async fn macro_(&mut self, m: Macro) -> Result<(), Self::Error> {
        let pairs: Vec<(String, String)> = m
            .macros()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect();
        self.facts
            .set_macros(m.code, pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        Ok(())
    }

    async fn connect(&mut self, c: Connect) -> Result<Action, Self::Error> {
        // A CONNECT on a reused channel (after QUIT_NC) starts afresh, but
        // keeps the macros that came with this CONNECT.
        let macros = std::mem::take(&mut self.facts);
        self.end_message();
        self.facts = ConnectionFacts::default();
        self.facts.copy_stage_from(&macros, b'C');
        let hostname = c.hostname().into_owned();
        let address = c.address().into_owned();
        // Postfix and Sendmail send `[address]` when the client has no
        // verified name: that is no name at all.
        self.facts.client.hostname =
            Some(hostname).filter(|h| !(h.is_empty() || (h.starts_with('[') && h.ends_with(']'))));
        self.facts.client.address = Some(address).filter(|a| !a.is_empty());
        self.facts.client.port = c.port.filter(|p| *p != 0);
        Ok(Continue.into())
    }

    async fn helo(&mut self, h: Helo) -> Result<Action, Self::Error> {
        self.facts.client.helo = Some(h.helo().into_owned()).filter(|h| !h.is_empty());
        Ok(Continue.into())
    }

    async fn mail(&mut self, m: Mail) -> Result<Action, Self::Error> {
        // A new MAIL without ABORT in between still starts a new message.
        self.message = None;
        if self.draining.load(Ordering::Acquire) {
            tracing::info!("shutting down: asking the MTA to retry this message later");
            return Ok(Tempfail.into());
        }
        let mut a = vec![m.sender().into_owned()];
        a.extend(args(m.esmtp_args()));
        let s = &self.snapshot;
        self.message = Some(InProgress {
            builder: MessageBuilder::new(&a, &s.spool_dir, s.spool_threshold, s.max_message_size),
            oversize: false,
            failure: None,
        });
        self.in_message.store(true, Ordering::Release);
        Ok(Continue.into())
    }

    async fn rcpt(&mut self, r: Recipient) -> Result<Action, Self::Error> {
        if let Some(m) = &mut self.message {
            let mut a = vec![r.recipient().into_owned()];
            a.extend(args(r.esmtp_args()));
            m.builder.recipient(&a);
        }
        Ok(Continue.into())
    }

    async fn header(&mut self, h: Header) -> Result<Action, Self::Error> {
        let (name, value) = raw_header(&h);
        let leadspc = self.leadspc;
        let outcome = match &mut self.message {
            Some(m) if !m.oversize && m.failure.is_none() => {
                m.builder.header(&name, &value, leadspc)
            }
            _ => Ok(()),
        };
        Ok(self.after_write(outcome))
    }

    async fn end_of_header(&mut self) -> Result<Action, Self::Error> {
        let outcome = match &mut self.message {
            Some(m) if !m.oversize && m.failure.is_none() => m.builder.end_of_headers(),
            _ => Ok(()),
        };
        Ok(self.after_write(outcome))
    }

    async fn body(&mut self, b: Body) -> Result<Action, Self::Error> {
        let outcome = match &mut self.message {
            Some(m) if !m.oversize && m.failure.is_none() => m.builder.body(b.as_bytes()),
            _ => Ok(()),
        };
        Ok(self.after_write(outcome))
    }

    async fn end_of_body(&mut self) -> Result<ModificationResponse, Self::Error> {
        let Some(m) = self.message.take() else {
            self.end_message();
            return Ok(ModificationResponse::empty_continue());
        };
        let response = if m.oversize {
            self.failed("larger than max_message_size")
        } else if let Some(why) = &m.failure {
            self.failed(why)
        } else {
            match m.builder.finish(&self.facts) {
                Err(e) => self.failed(&format!("spooling the message: {e}")),
                Ok(env) => {
                    let queue_id = self.queue_id();
                    let id = if self.add_header {
                        let msg = env.message.clone();
                        tokio::task::spawn_blocking(move || crate::archive_id(&msg))
                            .await
                            .ok()
                            .flatten()
                    } else {
                        None
                    };
                    match crate::archive_durably(
                        &self.committer,
                        self.snapshot.archiver.clone(),
                        env,
                    )
                    .await
                    {
                        Ok(report) => {
                            crate::log_report(Some(&queue_id), &report);
                            let mut b = ModificationResponse::builder();
                            if let Some(id) = id {
                                // With SMFIP_HDR_LEADSPC the MTA takes the value
                                // as given, leading space included.
                                let value = if self.leadspc { format!(" {id}") } else { id };
                                b.push(AddHeader::new(b"X-Mailkeep-Archived", value.as_bytes()));
                            }
                            b.contin()
                        }
                        Err(e) => self.failed(&crate::error_chain(&e)),
                    }
                }
            }
        };
        self.end_message();
        Ok(response)
    }

    async fn abort(&mut self) -> Result<(), Self::Error> {
        self.end_message();
        Ok(())
    }

    async fn quit(&mut self) -> Result<(), Self::Error> {
        self.end_message();
        Ok(())
    }

    async fn quit_nc(&mut self) -> Result<(), Self::Error> {
        self.end_message();
        self.facts.reset();
        Ok(())
    }
}

impl Session {
    /// Records a spool write failure; it is answered at end of message
    /// (header and body stages have no reply under "no reply").
    fn after_write(&mut self, outcome: io::Result<()>) -> Action {
        if let Err(e) = outcome {
            if let Some(m) = &mut self.message {
                if e.kind() == io::ErrorKind::FileTooLarge {
                    m.oversize = true;
                } else if m.failure.is_none() {
                    m.failure = Some(format!("spooling the message: {e}"));
                }
            }
        }
        Continue.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_header_keeps_bytes() {
        let h = Header::new(b"Subject", b" caf\xe9 \r\n\tnext");
        assert_eq!(
            raw_header(&h),
            (b"Subject".to_vec(), b" caf\xe9 \r\n\tnext".to_vec())
        );
        let h = Header::new(b"X-Empty", b"");
        assert_eq!(raw_header(&h), (b"X-Empty".to_vec(), Vec::new()));
    }
}
