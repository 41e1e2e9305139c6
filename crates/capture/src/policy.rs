//! What a capture path does when a message cannot be archived: the one
//! failure policy, named in the configuration as `on_failure`.
//!
//! - `tempfail` (the default): the MTA is told to try again later (4xx /
//!   SMFIR_TEMPFAIL / EX_TEMPFAIL). Nothing is lost; mail waits in the
//!   MTA's queue until the archive is writable again.
//! - `accept`: mail flows on unarchived. Every such message is logged with
//!   its queue id at error level and counted in [`FailureCounters`], so the
//!   loss is visible and measurable.

use serde::Deserialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// The configured reaction to an archiving failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    /// Ask the MTA to retry later.
    #[default]
    Tempfail,
    /// Let the message through unarchived, log and count it.
    Accept,
}

impl FailurePolicy {
    /// The name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::Tempfail => "tempfail",
            FailurePolicy::Accept => "accept",
        }
    }
}

/// Process-wide counters of messages that were not archived.
#[derive(Debug, Default)]
pub struct FailureCounters {
    tempfailed: AtomicU64,
    accepted_unarchived: AtomicU64,
}

impl FailureCounters {
    /// Records one failure handled by `policy`.
    pub fn record(&self, policy: FailurePolicy) {
        match policy {
            FailurePolicy::Tempfail => self.tempfailed.fetch_add(1, Ordering::Relaxed),
            FailurePolicy::Accept => self.accepted_unarchived.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Messages the MTA was asked to retry.
    pub fn tempfailed(&self) -> u64 {
        self.tempfailed.load(Ordering::Relaxed)
    }

    /// Messages let through without an archived copy.
    pub fn accepted_unarchived(&self) -> u64 {
        self.accepted_unarchived.load(Ordering::Relaxed)
    }
}
