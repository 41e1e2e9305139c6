//! SMTP capture: the content-filter proxy (Postfix `content_filter`, also
//! behind amavisd, or `smtpd_proxy_filter`) and the final archive receiver
//! (the target of `always_bcc`, `recipient_bcc_maps` or a journaling
//! address). See [`session`] for the transaction semantics.
//!
//! Limits: connections (a permit before `accept()`), command and data
//! timeouts, command line length ([`session::MAX_LINE`]), message size,
//! recipients per message; clients outside `allowed_clients` get 554.

pub mod data;
pub mod dedup;
pub mod session;
pub mod tls;

use crate::listen::{Listener, Stream};
use crate::policy::{FailureCounters, FailurePolicy};
use dedup::Ledger;
use ipnet::IpNet;
use mailkeep_destinations::{Archiver, GroupCommitter};
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long shutdown waits for sessions to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The settings a session keeps for its whole life.
pub struct Snapshot {
    /// Rules and destinations.
    pub archiver: Arc<Archiver>,
    /// Our name in the greeting and EHLO.
    pub hostname: String,
    /// The next hop (`HOST:PORT`); `None`: receiver mode.
    pub relay: Option<String>,
    /// Clients allowed to connect; empty: loopback only.
    pub allowed_clients: Vec<IpNet>,
    /// Larger messages get 552.
    pub max_message_size: Option<u64>,
    /// More recipients get 452.
    pub max_recipients: usize,
    /// Spool directory and in-memory threshold.
    pub spool_dir: PathBuf,
    /// Messages up to this size stay in memory.
    pub spool_threshold: usize,
    /// Wait for a command (and for each relay reply).
    pub command_timeout: Duration,
    /// Wait for DATA bytes.
    pub data_timeout: Duration,
    /// Wait for the relay's answer to the final dot.
    pub data_done_timeout: Duration,
    /// What to do when archiving fails (proxy mode; a receiver always tempfails).
    pub on_failure: FailurePolicy,
    /// Messages already archived, by queue id and content.
    pub ledger: Ledger,
    /// STARTTLS, when a certificate is configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Snapshot {
    /// Whether a client address may connect.
    pub fn allows(&self, peer: &str) -> bool {
        let Ok(ip) = peer.parse::<IpAddr>() else {
            return false;
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if self.allowed_clients.is_empty() {
            return ip.is_loopback();
        }
        self.allowed_clients.iter().any(|n| n.contains(&ip))
    }
}

/// Everything the server needs besides its listener.
pub struct Service {
    /// The current settings; sessions take a snapshot when they start.
    pub settings: watch::Receiver<Arc<Snapshot>>,
    /// The shared archive writer.
    pub committer: GroupCommitter,
    /// Messages not archived, by policy.
    pub counters: Arc<FailureCounters>,
    /// Concurrent connections.
    pub max_connections: usize,
}

/// Serves SMTP clients on `listener` until `shutdown` completes.
pub async fn run(
    listener: Listener,
    service: Service,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let max = service.max_connections;
    let service = Arc::new(service);
    crate::listen::serve(
        listener,
        max,
        DRAIN_TIMEOUT,
        shutdown,
        move |stream, draining| {
            let snapshot = service.settings.borrow().clone();
            let committer = service.committer.clone();
            let counters = service.counters.clone();
            async move {
                let Stream::Tcp(tcp) = stream else {
                    tracing::warn!("the SMTP filter listens on TCP only");
                    return;
                };
                if let Err(e) = session::Session::new(snapshot, committer, counters, tcp)
                    .with_draining(draining)
                    .run()
                    .await
                {
                    tracing::warn!("SMTP session ended: {e}");
                }
            }
        },
    )
    .await
}
